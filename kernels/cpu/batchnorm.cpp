// CPU batch norm over [N, C, HW] (channel c of sample n at x[(n*C + c)*HW + i]): training and
// inference forward and backward, plain and fused with a residual add and a ReLU
// (batchnorm_act_*). Statistics are accumulated in double, two-pass; the training passes take
// blocks of up to 8 channels per OpenMP iteration, each pass sample by sample over the block's
// contiguous rows. Every sum runs in an order fixed by the shape alone (block_reduce), and the
// plain and the fused kernels share the per-element expressions, so a fused kernel returns the
// same bits as the unfused sequence it replaces, for any thread count.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "engine/error.h"
#include "kernels/cpu/cpu_kernels.h"

namespace hr::cpu {
namespace {

// ---- per-element expressions shared by the plain and the fused kernels ----
// The same as relu_forward and relu_backward in elementwise.cpp: NaN passes the forward
// (x < 0 ? 0 : x) and the backward mask is y <= 0.
inline float relu_value(float v) { return v < 0.f ? 0.f : v; }
inline float relu_grad(float y, float dy) { return y <= 0.f ? 0.f : dy; }

// Four floats and four doubles (GCC/Clang vector extensions): the reductions below spell out
// their lanes, so their order is the source's, whether or not the compiler vectorises.
typedef float F4 __attribute__((vector_size(16)));
typedef double D4 __attribute__((vector_size(32)));
inline F4 load4(const float* p) {
  F4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store4(float* p, F4 v) { std::memcpy(p, &v, sizeof v); }
// v as doubles: exact, so any form gives the same bits; this one GCC compiles to one vcvtps2pd.
// (An out-parameter: returning a 32-byte vector draws GCC's -Wpsabi note in builds without AVX.)
inline void widen(F4 v, D4* out) { *out = D4{v[0], v[1], v[2], v[3]}; }

// Sources of the gradient g that reaches the batch norm, read by flat index j: one value (at)
// or four (at4).
struct PlainGrad {  // g = dy
  const float* dy;
  float at(int64_t j) const { return dy[j]; }
  F4 at4(int64_t j) const { return load4(dy + j); }
};
struct ReluGrad {  // g = relu_backward(y, dy)
  const float* y;
  const float* dy;
  float at(int64_t j) const { return relu_grad(y[j], dy[j]); }
  F4 at4(int64_t j) const {
    const F4 zero = {};
    return load4(y + j) <= zero ? zero : load4(dy + j);  // relu_grad, lane by lane
  }
};
template <class G>
struct StoreGrad {  // g from G, also written to out (the residual's gradient)
  G g;
  float* out;
  float at(int64_t j) const {
    const float v = g.at(j);
    out[j] = v;
    return v;
  }
  F4 at4(int64_t j) const {
    const F4 v = g.at4(j);
    store4(out + j, v);
    return v;
  }
};

// ---- fixed-order reductions ----
// Channel c: out[k] = sum over the channel's N rows of HW values of term k (k < K). Each row's
// first HW rounded down to 16 elements go to 16 lanes (element i to lane i % 16, as four
// four-lane accumulators acc[k][0..3]): add4(j, acc, q) adds the terms of elements j..j+3 to
// acc[.][q]. The rest of each row goes, in order, to scalar sums: add1(j, rest). Lanes are
// combined in a fixed tree and the scalar sums added last. So the order depends only on
// (N, HW): not on vectorisation, not on the thread count, not on how the terms were computed.
// The functors are taken by value: as locals, stores through a StoreGrad cannot alias them.
constexpr int64_t kLanes = 16;

//
// Channels are reduced in blocks [c0, c0 + B) (B <= kMaxBlock): sample n's rows of the block's
// channels are contiguous, so the passes stream B*HW values at a time instead of HW (a map of
// 24x20 is 30 cache lines, too short a run for the prefetchers). Each channel's sums keep the
// order above: add4(b, j, acc, q) and add1(b, j, rest) add element j of the block's channel b;
// out[b * K + k] is channel c0 + b's term k.
constexpr int64_t kMaxBlock = 8;

template <int K, class Add4, class Add1>
void block_reduce(int64_t N, int64_t C, int64_t HW, int64_t c0, int64_t B, Add4 add4, Add1 add1,
                  double* out) {
  D4 acc[kMaxBlock][K][4] = {};
  double rest[kMaxBlock][K] = {};
  const int64_t body = HW - HW % kLanes;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = (n * C + c0 + b) * HW;
      for (int64_t i = 0; i < body; i += kLanes)
        for (int q = 0; q < 4; ++q) add4(b, row + i + 4 * q, acc[b], q);
      for (int64_t i = body; i < HW; ++i) add1(b, row + i, rest[b]);
    }
  for (int64_t b = 0; b < B; ++b)
    for (int k = 0; k < K; ++k) {
      const D4 s = (acc[b][k][0] + acc[b][k][1]) + (acc[b][k][2] + acc[b][k][3]);
      out[b * K + k] = ((s[0] + s[1]) + (s[2] + s[3])) + rest[b][k];
    }
}

// Channels per block: up to kMaxBlock, but at least two blocks a thread when C allows.
int64_t channel_block(int64_t C) {
  return std::clamp<int64_t>(C / (2 * std::max(1, omp_get_max_threads())), 1, kMaxBlock);
}

// Channels c0..c0+B-1: sum of x.
void block_sum(int64_t N, int64_t C, int64_t HW, int64_t c0, int64_t B, const float* x,
               double* out) {
  block_reduce<1>(
      N, C, HW, c0, B,
      [x](int64_t, int64_t j, D4(*acc)[4], int q) {
        D4 v;
        widen(load4(x + j), &v);
        acc[0][q] += v;
      },
      [x](int64_t, int64_t j, double* rest) { rest[0] += x[j]; }, out);
}
double channel_sum(int64_t N, int64_t C, int64_t HW, int64_t c, const float* x) {
  double s;
  block_sum(N, C, HW, c, 1, x, &s);
  return s;
}

// Channels c0..c0+B-1: sum of (x - mean[b])^2.
void block_sq_dev(int64_t N, int64_t C, int64_t HW, int64_t c0, int64_t B, const float* x,
                  const double* mean, double* out) {
  block_reduce<1>(
      N, C, HW, c0, B,
      [x, mean](int64_t b, int64_t j, D4(*acc)[4], int q) {
        D4 d;
        widen(load4(x + j), &d);
        d -= mean[b];
        acc[0][q] += d * d;
      },
      [x, mean](int64_t b, int64_t j, double* rest) {
        const double d = x[j] - mean[b];
        rest[0] += d * d;
      },
      out);
}
double channel_sq_dev(int64_t N, int64_t C, int64_t HW, int64_t c, const float* x, double mean) {
  double s;
  block_sq_dev(N, C, HW, c, 1, x, &mean, &s);
  return s;
}

// Channels c0..c0+B-1: out[2b] = sum(g), out[2b + 1] = sum(g * (x - mean[b])), g read from
// `grad` (which may also store it).
template <class G>
void block_grad_sums(int64_t N, int64_t C, int64_t HW, int64_t c0, int64_t B, const float* x,
                     const G& grad, const double* mean, double* out) {
  block_reduce<2>(
      N, C, HW, c0, B,
      [x, grad, mean](int64_t b, int64_t j, D4(*acc)[4], int q) {
        D4 g, v;
        widen(grad.at4(j), &g);
        widen(load4(x + j), &v);
        acc[0][q] += g;
        acc[1][q] += g * (v - mean[b]);
      },
      [x, grad, mean](int64_t b, int64_t j, double* rest) {
        const double g = grad.at(j);
        rest[0] += g;
        rest[1] += g * (x[j] - mean[b]);
      },
      out);
}
template <class G>
void channel_grad_sums(int64_t N, int64_t C, int64_t HW, int64_t c, const float* x, const G& grad,
                       double mean, double* sum_g, double* sum_g_xc) {
  double s[2];
  block_grad_sums(N, C, HW, c, 1, x, grad, &mean, s);
  *sum_g = s[0];
  *sum_g_xc = s[1];
}

// ---- element-wise passes over one channel ----
// y = act((x - shift) * mul + add + residual). The shift is split into two floats (hi + lo) so a
// mean far from zero keeps its full double precision: x - hi is exact when x is near hi.
// Channels c0..c0+B-1 (shift, mul, add per channel), sample by sample.
template <bool kResidual, bool kRelu>
void block_apply(int64_t N, int64_t C, int64_t HW, int64_t c0, int64_t B, const float* x,
                 const float* residual, const double* shift, const float* mul, const float* add,
                 float* y) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t b = 0; b < B; ++b) {
      const float hi = float(shift[b]), lo = float(shift[b] - double(hi));
      const float m = mul[b], a = add[b];
      const int64_t row = (n * C + c0 + b) * HW;
      const float* xr = x + row;
      const float* rr = kResidual ? residual + row : nullptr;
      float* yr = y + row;
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i) {
        float v = ((xr[i] - hi) - lo) * m + a;
        if constexpr (kResidual) v = v + rr[i];
        if constexpr (kRelu) v = relu_value(v);
        yr[i] = v;
      }
    }
}

void block_apply(int64_t N, int64_t C, int64_t HW, int64_t c0, int64_t B, const float* x,
                 const float* residual, bool relu, const double* shift, const float* mul,
                 const float* add, float* y) {
  if (residual) {
    if (relu)
      block_apply<true, true>(N, C, HW, c0, B, x, residual, shift, mul, add, y);
    else
      block_apply<true, false>(N, C, HW, c0, B, x, residual, shift, mul, add, y);
  } else {
    if (relu)
      block_apply<false, true>(N, C, HW, c0, B, x, residual, shift, mul, add, y);
    else
      block_apply<false, false>(N, C, HW, c0, B, x, residual, shift, mul, add, y);
  }
}
void channel_apply(int64_t N, int64_t C, int64_t HW, int64_t c, const float* x,
                   const float* residual, bool relu, double shift, float mul, float add, float* y) {
  block_apply(N, C, HW, c, 1, x, residual, relu, &shift, &mul, &add, y);
}

// Training dx = k * (g - mean_g - (x - m) * proj) on channels c0..c0+B-1 (p[b] = {k, mean_g,
// m, proj}), sample by sample.
template <class G>
void block_train_dx(int64_t N, int64_t C, int64_t HW, int64_t c0, int64_t B, const float* x,
                    const G& grad, const float (*p)[4], float* dx) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t b = 0; b < B; ++b) {
      const float k = p[b][0], mean_g = p[b][1], m = p[b][2], proj = p[b][3];
      const int64_t row = (n * C + c0 + b) * HW;
      const float* xr = x + row;
      float* dr = dx + row;
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i)
        dr[i] = k * (grad.at(row + i) - mean_g - (xr[i] - m) * proj);
    }
}
template <class G>
void channel_train_dx(int64_t N, int64_t C, int64_t HW, int64_t c, const float* x, const G& grad,
                      float k, float mean_g, float m, float proj, float* dx) {
  const float p[1][4] = {{k, mean_g, m, proj}};
  block_train_dx(N, C, HW, c, 1, x, grad, p, dx);
}

// Inference dx = k * g on channel c; dx may be nullptr (then grad is only evaluated, for a
// StoreGrad that writes the residual's gradient).
template <class G>
void channel_infer_dx(int64_t N, int64_t C, int64_t HW, int64_t c, const G& grad, float k,
                      float* dx) {
  for (int64_t n = 0; n < N; ++n) {
    const int64_t row = (n * C + c) * HW;
    if (dx) {
      float* dr = dx + row;
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i) dr[i] = k * grad.at(row + i);
    } else {
#pragma omp simd
      for (int64_t i = 0; i < HW; ++i) grad.at(row + i);
    }
  }
}

bool parallel_channels(int64_t N, int64_t C, int64_t HW) { return C > 1 && N * C * HW >= 4096; }

// ---- the kernels, shared by the plain and the fused entry points ----
void train_forward(const char* op, int64_t N, int64_t C, int64_t HW, const float* x,
                   const float* gamma, const float* beta, float eps, float momentum,
                   float* running_mean, float* running_var, const float* residual, bool relu,
                   float* y, float* save_mean, float* save_invstd) {
  const int64_t count = N * HW;
  HR_CHECK(count > 1, op, ": expected more than 1 value per channel when training, got N=", N,
           " HW=", HW, " (C=", C, ")");
  const int64_t CB = channel_block(C), blocks = (C + CB - 1) / CB;
#pragma omp parallel for schedule(dynamic, 1) if (parallel_channels(N, C, HW))
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * CB, B = std::min(CB, C - c0);
    double mean[kMaxBlock], sq[kMaxBlock];
    float mul[kMaxBlock], add[kMaxBlock];
    block_sum(N, C, HW, c0, B, x, mean);
    for (int64_t b = 0; b < B; ++b) mean[b] /= double(count);
    block_sq_dev(N, C, HW, c0, B, x, mean, sq);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t c = c0 + b;
      const double var = sq[b] / double(count);
      const double invstd = 1.0 / std::sqrt(var + double(eps));
      if (running_mean)
        running_mean[c] = float((1.0 - momentum) * running_mean[c] + double(momentum) * mean[b]);
      if (running_var) {
        const double unbiased = var * double(count) / double(count - 1);
        running_var[c] = float((1.0 - momentum) * running_var[c] + double(momentum) * unbiased);
      }
      if (save_mean) save_mean[c] = float(mean[b]);
      if (save_invstd) save_invstd[c] = float(invstd);
      mul[b] = float(invstd * gamma[c]);
      add[b] = beta[c];
    }
    block_apply(N, C, HW, c0, B, x, residual, relu, mean, mul, add, y);
  }
}

void infer_forward(int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma,
                   const float* beta, const float* running_mean, const float* running_var,
                   float eps, const float* residual, bool relu, float* y) {
#pragma omp parallel for schedule(static) if (parallel_channels(N, C, HW))
  for (int64_t c = 0; c < C; ++c) {
    const double invstd = 1.0 / std::sqrt(double(running_var[c]) + double(eps));
    channel_apply(N, C, HW, c, x, residual, relu, running_mean[c], float(invstd * gamma[c]),
                  beta[c], y);
  }
}

// g from `grad`. With dresidual, the reduction pass (the first to read dy) writes g there and
// the dx pass reads it back; without, the dx pass computes g again.
template <class G>
void train_backward(int64_t N, int64_t C, int64_t HW, const float* x, const G& grad,
                    const float* gamma, const float* save_mean, const float* save_invstd, float* dx,
                    float* dresidual, float* dgamma, float* dbeta) {
  if (!dx && !dresidual && !dgamma && !dbeta) return;
  const double count = double(N * HW);
  const int64_t CB = channel_block(C), blocks = (C + CB - 1) / CB;
#pragma omp parallel for schedule(dynamic, 1) if (parallel_channels(N, C, HW))
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * CB, B = std::min(CB, C - c0);
    double mean[kMaxBlock], sums[2 * kMaxBlock];
    for (int64_t b = 0; b < B; ++b) mean[b] = save_mean[c0 + b];
    if (dresidual)
      block_grad_sums(N, C, HW, c0, B, x, StoreGrad<G>{grad, dresidual}, mean, sums);
    else
      block_grad_sums(N, C, HW, c0, B, x, grad, mean, sums);
    float p[kMaxBlock][4];
    for (int64_t b = 0; b < B; ++b) {
      const int64_t c = c0 + b;
      const double invstd = save_invstd[c], sum_g = sums[2 * b], sum_g_xc = sums[2 * b + 1];
      if (dgamma) dgamma[c] = float(sum_g_xc * invstd);
      if (dbeta) dbeta[c] = float(sum_g);
      // dx = gamma*invstd * (g - mean(g) - (x - mean) * invstd^2 * mean(g * (x - mean)))
      p[b][0] = float(gamma[c] * invstd);
      p[b][1] = float(sum_g / count);
      p[b][2] = float(mean[b]);
      p[b][3] = float(sum_g_xc / count * invstd * invstd);
    }
    if (!dx) continue;
    if (dresidual)
      block_train_dx(N, C, HW, c0, B, x, PlainGrad{dresidual}, p, dx);
    else
      block_train_dx(N, C, HW, c0, B, x, grad, p, dx);
  }
}

template <class G>
void infer_backward(int64_t N, int64_t C, int64_t HW, const float* x, const G& grad,
                    const float* gamma, const float* running_mean, const float* running_var,
                    float eps, float* dx, float* dresidual, float* dgamma, float* dbeta) {
  if (!dx && !dresidual && !dgamma && !dbeta) return;
#pragma omp parallel for schedule(dynamic, 1) if (parallel_channels(N, C, HW))
  for (int64_t c = 0; c < C; ++c) {
    const double invstd = 1.0 / std::sqrt(double(running_var[c]) + double(eps));
    bool stored = false;  // g of this channel is in dresidual
    if (dgamma || dbeta) {
      double sum_g, sum_g_xc;
      if (dresidual)
        channel_grad_sums(N, C, HW, c, x, StoreGrad<G>{grad, dresidual}, running_mean[c], &sum_g,
                          &sum_g_xc);
      else
        channel_grad_sums(N, C, HW, c, x, grad, running_mean[c], &sum_g, &sum_g_xc);
      stored = dresidual != nullptr;
      if (dgamma) dgamma[c] = float(sum_g_xc * invstd);
      if (dbeta) dbeta[c] = float(sum_g);
    }
    const float k = float(gamma[c] * invstd);
    if (stored) {
      if (dx) channel_infer_dx(N, C, HW, c, PlainGrad{dresidual}, k, dx);
    } else if (dresidual) {
      channel_infer_dx(N, C, HW, c, StoreGrad<G>{grad, dresidual}, k, dx);
    } else if (dx) {
      channel_infer_dx(N, C, HW, c, grad, k, dx);
    }
  }
}

// Synchronised batch norm: the per-channel sums of train_forward / train_backward in passes over
// all channels, each pass's sums (and the value count) summed over the ranks by all_reduce
// between them. With an all_reduce that changes nothing the results are train_forward's and
// train_backward's bits: the same sums, divided by the same count (the forward:
// batchnorm_act_train_forward_sync below).

// dgamma and dbeta stay this rank's own (the data-parallel gradient average sums them); dx uses
// the sums over the ranks, as the statistics it differentiates were.
template <class G>
void sync_train_backward(int64_t N, int64_t C, int64_t HW, const float* x, const G& grad,
                         const float* gamma, const float* save_mean, const float* save_invstd,
                         float* dx, float* dresidual, float* dgamma, float* dbeta,
                         const SumReducer& all_reduce) {
  std::vector<double> sums(2 * static_cast<size_t>(C) + 1);
#pragma omp parallel for schedule(dynamic, 1) if (parallel_channels(N, C, HW))
  for (int64_t c = 0; c < C; ++c) {
    double* s = &sums[2 * static_cast<size_t>(c)];
    if (dresidual)
      channel_grad_sums(N, C, HW, c, x, StoreGrad<G>{grad, dresidual}, save_mean[c], s, s + 1);
    else
      channel_grad_sums(N, C, HW, c, x, grad, save_mean[c], s, s + 1);
    if (dgamma) dgamma[c] = float(s[1] * save_invstd[c]);
    if (dbeta) dbeta[c] = float(s[0]);
  }
  sums[2 * static_cast<size_t>(C)] = double(N * HW);
  all_reduce(sums.data(), 2 * C + 1);  // every rank takes part, whatever it needs
  if (!dx) return;
  const double count = sums[2 * static_cast<size_t>(C)];
#pragma omp parallel for schedule(dynamic, 1) if (parallel_channels(N, C, HW))
  for (int64_t c = 0; c < C; ++c) {
    const double invstd = save_invstd[c];
    const double sum_g = sums[2 * static_cast<size_t>(c)], sum_g_xc = sums[2 * static_cast<size_t>(c) + 1];
    const float k = float(gamma[c] * invstd);
    const float mean_g = float(sum_g / count);
    const float proj = float(sum_g_xc / count * invstd * invstd);
    const float m = save_mean[c];
    if (dresidual)
      channel_train_dx(N, C, HW, c, x, PlainGrad{dresidual}, k, mean_g, m, proj, dx);
    else
      channel_train_dx(N, C, HW, c, x, grad, k, mean_g, m, proj, dx);
  }
}

}  // namespace

void batchnorm_act_train_forward_sync(int64_t N, int64_t C, int64_t HW, const float* x,
                                      const float* gamma, const float* beta, float eps,
                                      float momentum, float* running_mean, float* running_var,
                                      const float* residual, bool relu, float* y,
                                      float* save_mean, float* save_invstd,
                                      const SumReducer& all_reduce) {
  std::vector<double> sums(static_cast<size_t>(C) + 1);
#pragma omp parallel for schedule(dynamic, 1) if (parallel_channels(N, C, HW))
  for (int64_t c = 0; c < C; ++c) sums[static_cast<size_t>(c)] = channel_sum(N, C, HW, c, x);
  sums[static_cast<size_t>(C)] = double(N * HW);
  all_reduce(sums.data(), C + 1);
  const double count = sums[static_cast<size_t>(C)];
  HR_CHECK(count > 1, "batch_norm (synchronised): expected more than 1 value per channel over "
           "the ranks when training, got ", count);
  std::vector<double> sq(static_cast<size_t>(C));
#pragma omp parallel for schedule(dynamic, 1) if (parallel_channels(N, C, HW))
  for (int64_t c = 0; c < C; ++c)
    sq[static_cast<size_t>(c)] = channel_sq_dev(N, C, HW, c, x, sums[static_cast<size_t>(c)] / count);
  all_reduce(sq.data(), C);
#pragma omp parallel for schedule(dynamic, 1) if (parallel_channels(N, C, HW))
  for (int64_t c = 0; c < C; ++c) {
    const double mean = sums[static_cast<size_t>(c)] / count;
    const double var = sq[static_cast<size_t>(c)] / count;
    const double invstd = 1.0 / std::sqrt(var + double(eps));
    if (running_mean)
      running_mean[c] = float((1.0 - momentum) * running_mean[c] + double(momentum) * mean);
    if (running_var) {
      const double unbiased = var * count / (count - 1);
      running_var[c] = float((1.0 - momentum) * running_var[c] + double(momentum) * unbiased);
    }
    if (save_mean) save_mean[c] = float(mean);
    if (save_invstd) save_invstd[c] = float(invstd);
    channel_apply(N, C, HW, c, x, residual, relu, mean, float(invstd * gamma[c]), beta[c], y);
  }
}

void batchnorm_act_train_backward_sync(int64_t N, int64_t C, int64_t HW, const float* x,
                                       const float* y, const float* dy, const float* gamma,
                                       const float* save_mean, const float* save_invstd, bool relu,
                                       float* dx, float* dresidual, float* dgamma, float* dbeta,
                                       const SumReducer& all_reduce) {
  HR_CHECK(!relu || y, "batchnorm_act_train_backward_sync: relu needs the forward output y");
  if (relu)
    sync_train_backward(N, C, HW, x, ReluGrad{y, dy}, gamma, save_mean, save_invstd, dx, dresidual,
                        dgamma, dbeta, all_reduce);
  else
    sync_train_backward(N, C, HW, x, PlainGrad{dy}, gamma, save_mean, save_invstd, dx, dresidual,
                        dgamma, dbeta, all_reduce);
}

// x [N,C,HW], gamma/beta [C] -> y [N,C,HW], save_mean/save_invstd [C];
// running_mean/running_var [C] updated in place (either may be nullptr).
void batchnorm_train_forward(int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma,
                             const float* beta, float eps, float momentum, float* running_mean,
                             float* running_var, float* y, float* save_mean, float* save_invstd) {
  train_forward("batchnorm_train_forward", N, C, HW, x, gamma, beta, eps, momentum, running_mean,
                running_var, nullptr, false, y, save_mean, save_invstd);
}

// x [N,C,HW], gamma/beta/running_mean/running_var [C] -> y [N,C,HW]
void batchnorm_infer_forward(int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma,
                             const float* beta, const float* running_mean, const float* running_var,
                             float eps, float* y) {
  infer_forward(N, C, HW, x, gamma, beta, running_mean, running_var, eps, nullptr, false, y);
}

// x, dy [N,C,HW], gamma/save_mean/save_invstd [C] -> dx [N,C,HW], dgamma/dbeta [C]
void batchnorm_train_backward(int64_t N, int64_t C, int64_t HW, const float* x, const float* dy,
                              const float* gamma, const float* save_mean, const float* save_invstd,
                              float* dx, float* dgamma, float* dbeta) {
  train_backward(N, C, HW, x, PlainGrad{dy}, gamma, save_mean, save_invstd, dx, nullptr, dgamma,
                 dbeta);
}

// x, dy [N,C,HW], gamma/running_mean/running_var [C] -> dx [N,C,HW], dgamma/dbeta [C]
void batchnorm_infer_backward(int64_t N, int64_t C, int64_t HW, const float* x, const float* dy,
                              const float* gamma, const float* running_mean,
                              const float* running_var, float eps, float* dx, float* dgamma,
                              float* dbeta) {
  infer_backward(N, C, HW, x, PlainGrad{dy}, gamma, running_mean, running_var, eps, dx, nullptr,
                 dgamma, dbeta);
}

// x, residual (or nullptr) [N,C,HW], gamma/beta [C] -> y [N,C,HW], save_mean/save_invstd [C]
void batchnorm_act_train_forward(int64_t N, int64_t C, int64_t HW, const float* x,
                                 const float* gamma, const float* beta, float eps, float momentum,
                                 float* running_mean, float* running_var, const float* residual,
                                 bool relu, float* y, float* save_mean, float* save_invstd) {
  train_forward("batchnorm_act_train_forward", N, C, HW, x, gamma, beta, eps, momentum,
                running_mean, running_var, residual, relu, y, save_mean, save_invstd);
}

// x, y, dy [N,C,HW], gamma/save_mean/save_invstd [C] -> dx, dresidual [N,C,HW], dgamma/dbeta [C]
void batchnorm_act_train_backward(int64_t N, int64_t C, int64_t HW, const float* x, const float* y,
                                  const float* dy, const float* gamma, const float* save_mean,
                                  const float* save_invstd, bool relu, float* dx, float* dresidual,
                                  float* dgamma, float* dbeta) {
  HR_CHECK(!relu || y, "batchnorm_act_train_backward: relu needs the forward output y");
  if (relu)
    train_backward(N, C, HW, x, ReluGrad{y, dy}, gamma, save_mean, save_invstd, dx, dresidual,
                   dgamma, dbeta);
  else
    train_backward(N, C, HW, x, PlainGrad{dy}, gamma, save_mean, save_invstd, dx, dresidual, dgamma,
                   dbeta);
}

// x, residual (or nullptr) [N,C,HW], gamma/beta/running_mean/running_var [C] -> y [N,C,HW]
void batchnorm_act_infer_forward(int64_t N, int64_t C, int64_t HW, const float* x,
                                 const float* gamma, const float* beta, const float* running_mean,
                                 const float* running_var, float eps, const float* residual,
                                 bool relu, float* y) {
  infer_forward(N, C, HW, x, gamma, beta, running_mean, running_var, eps, residual, relu, y);
}

// x, y, dy [N,C,HW], gamma/running_mean/running_var [C] -> dx, dresidual [N,C,HW], dgamma/dbeta
void batchnorm_act_infer_backward(int64_t N, int64_t C, int64_t HW, const float* x, const float* y,
                                  const float* dy, const float* gamma, const float* running_mean,
                                  const float* running_var, float eps, bool relu, float* dx,
                                  float* dresidual, float* dgamma, float* dbeta) {
  HR_CHECK(!relu || y, "batchnorm_act_infer_backward: relu needs the forward output y");
  if (relu)
    infer_backward(N, C, HW, x, ReluGrad{y, dy}, gamma, running_mean, running_var, eps, dx,
                   dresidual, dgamma, dbeta);
  else
    infer_backward(N, C, HW, x, PlainGrad{dy}, gamma, running_mean, running_var, eps, dx, dresidual,
                   dgamma, dbeta);
}

void fold_batch_norm(int64_t K, int64_t inner, const float* w, const float* b, const float* gamma,
                     const float* beta, const float* running_mean, const float* running_var,
                     float eps, float* w_out, float* b_out) {
#pragma omp parallel for schedule(static) if (K * inner > (1 << 16))
  for (int64_t k = 0; k < K; ++k) {
    // the scale as infer_forward computes it, so a folded convolution matches conv + BN
    const float s = float(1.0 / std::sqrt(double(running_var[k]) + double(eps)) * gamma[k]);
    for (int64_t i = 0; i < inner; ++i) w_out[k * inner + i] = w[k * inner + i] * s;
    b_out[k] = ((b ? b[k] : 0.f) - running_mean[k]) * s + beta[k];
  }
}

}  // namespace hr::cpu
