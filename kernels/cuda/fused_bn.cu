// CUDA batch norm over NHWC rows x [M, C], with the optional residual add and ReLU fused in
// (fused.h), plus batchnorm_infer_backward, built from the same reduction and apply kernels.
// batchnorm.cu expresses the other unfused entry points through these.
//
// Training forward and backward run as ONE cooperative kernel (grid = one full wave of
// co-resident blocks, each block a column tile x a contiguous range of rows):
//   pass 1  read the block's rows once: per-thread Welford (forward; values shifted by row 0
//           so large means lose no precision) or sums of g and g*(x - mean) (backward, g the
//           ReLU-masked dy, written to dresidual here); the rows are kept on chip, the first
//           ones in registers, the next ones in shared memory (forward: loaded with cp.async,
//           all in flight at once), the rest re-read later; the
//           block merges its threads (fixed tree) into one partial per channel;
//   sync    grid-wide; then one warp per channel merges the partials in double in a fixed order
//           (deterministic, no atomics) and writes the statistics and the apply constants;
//   sync    grid-wide; pass 2 applies y = act((x - mean_hi) * scale + bias + residual) or
//           dx = k * (g - mean(g) - (x - mean) * proj): rows not kept on chip first, in the
//           reverse of the order pass 1 read them (still in L2), then shared memory, registers.
// So x is read from memory once when the tensor fits on chip (registers + shared memory of the
// wave, about 40 MB on an H100), and the two grid syncs replace two kernel launches.
// Multi-kernel path, 3 launches each way:
//   stats / bwd_reduce  per-split partials; final  one warp per channel; apply  rows reversed.
// Which path a training pass takes (pick_path): the single kernel on a full wave, the single
// kernel on a quarter of the wave (fewer blocks to synchronise and partials to merge: small
// maps), or the multi-kernel path, whichever ran the call shape fastest on its first call
// (timed into scratch outputs; HR_BN_VERBOSE=1 prints the times, HR_BN_TUNE=0 keeps the full
// wave); always the multi-kernel path with HR_BN_COOPERATIVE=0 or where no cooperative launch
// is possible.
// Inference forward is one apply kernel. Threads keep fixed columns: loads are 16-byte vectors
// along C when C and the pointers allow, a warp covers consecutive rows.
#include <cooperative_groups.h>
#include <cuda_pipeline.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "kernels/cuda/check.h"
#include "kernels/cuda/fused.h"

namespace hr::cuda {
namespace {

using detail::load_f;
using detail::RowTiling;
using detail::store_f;
using detail::to_f;

constexpr int kThreads = 256;

// Rows a thread loads before it computes, so narrow vectors (C = 18: V = 2) still keep enough
// bytes in flight: V = 1, 2 -> 4 rows, V = 4 -> 2, V = 8 -> 1.
template <int V>
constexpr int rows_per_iter() { return V >= 8 ? 1 : V == 4 ? 2 : 4; }

struct ReducePlan {
  RowTiling t;
  int64_t splits = 1, rps = 1;  // row splits and rows per split
};

ReducePlan reduce_plan(int64_t M, int64_t C, int V) {
  ReducePlan p;
  p.t = detail::row_tiling(C, V, kThreads);
  const int64_t target = int64_t(detail::sm_count()) * (2048 / kThreads);
  int64_t splits = std::max<int64_t>(1, target / p.t.col_tiles);
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, M / (int64_t(p.t.ty) * 8)));
  splits = std::min<int64_t>(splits, 65535);
  p.rps = (M + splits - 1) / splits;
  p.splits = (M + p.rps - 1) / p.rps;
  return p;
}

dim3 apply_grid(int64_t M, const RowTiling& t) {
  const int64_t target = int64_t(detail::sm_count()) * (2048 / kThreads);
  int64_t gy = std::max<int64_t>(1, target / t.col_tiles);
  gy = std::min<int64_t>(gy, (M + t.ty - 1) / t.ty);
  gy = std::min<int64_t>(gy, 65535);
  return dim3(unsigned(t.col_tiles), unsigned(std::max<int64_t>(gy, 1)));
}

__device__ __forceinline__ void chan_merge(double& n, double& mean, double& m2, double nb,
                                           double mb, double m2b) {
  if (nb == 0) return;
  const double nn = n + nb, d = mb - mean;
  mean += d * (nb / nn);
  m2 += m2b + d * d * (n * nb / nn);
  n = nn;
}

// chan_merge with a reciprocal instead of a double division (fewer registers: the single
// kernels merge while they hold rows in registers).
__device__ __forceinline__ void chan_merge_rcp(double& n, double& mean, double& m2, double nb,
                                               double mb, double m2b) {
  if (nb == 0) return;
  const double nn = n + nb, d = mb - mean, w = nb * __drcp_rn(nn);
  mean += d * w;
  m2 += m2b + d * d * (n * w);
  n = nn;
}

// Partial statistics of rows [split*rps, ...) for tx*V channels: part_mean / part_m2
// [splits, C] hold the mean of (x - x[row 0]) and the sum of squared deviations.
template <class T, int V>
__global__ void __launch_bounds__(kThreads, 4)
    bn_stats_kernel(int64_t M, int64_t C, int64_t rps, const T* x, float* __restrict__ part_mean,
                    float* __restrict__ part_m2) {
  __shared__ float s_mean[kThreads * V], s_m2[kThreads * V], s_n[kThreads];
  const int tx = blockDim.x, ty = blockDim.y, xi = threadIdx.x, yi = threadIdx.y;
  const int64_t cv = int64_t(blockIdx.x) * tx + xi;
  const bool active = cv * V < C;
  const int64_t r0 = int64_t(blockIdx.y) * rps, r1 = r0 + rps < M ? r0 + rps : M;
  float mean[V] = {}, m2[V] = {}, shift[V] = {};
  float n = 0.f;
  if (active) {
    constexpr int U = rows_per_iter<V>();
    const T* xc = x + cv * V;
    load_f<T, V>(xc, shift);
    for (int64_t r = r0 + yi; r < r1; r += int64_t(ty) * U) {
      float v[U][V];
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (r + u * ty < r1) load_f<T, V>(xc + (r + u * ty) * C, v[u]);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (r + u * ty >= r1) break;
        n += 1.f;
        const float inv = __frcp_rn(n);
#pragma unroll
        for (int i = 0; i < V; ++i) {
          const float s = v[u][i] - shift[i];
          const float d = s - mean[i];
          mean[i] = fmaf(d, inv, mean[i]);
          m2[i] = fmaf(d, s - mean[i], m2[i]);
        }
      }
    }
  }
  const int W = tx * V;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    s_mean[yi * W + xi * V + i] = mean[i];
    s_m2[yi * W + xi * V + i] = m2[i];
  }
  s_n[yi * tx + xi] = n;
  for (int len = ty; len > 1;) {
    const int half = (len + 1) >> 1;
    __syncthreads();
    if (yi < len - half) {
      const float na = s_n[yi * tx + xi], nb = s_n[(yi + half) * tx + xi];
      if (nb > 0.f) {
        const float nn = na + nb, wb = nb / nn, wab = na * (nb / nn);
#pragma unroll
        for (int i = 0; i < V; ++i) {
          const int a = yi * W + xi * V + i, b = (yi + half) * W + xi * V + i;
          const float d = s_mean[b] - s_mean[a];
          s_mean[a] = fmaf(d, wb, s_mean[a]);
          s_m2[a] += s_m2[b] + d * d * wab;
        }
        s_n[yi * tx + xi] = nn;
      }
    }
    len = half;
  }
  __syncthreads();
  if (yi == 0 && active) {
#pragma unroll
    for (int i = 0; i < V; ++i) {
      part_mean[blockIdx.y * C + cv * V + i] = s_mean[xi * V + i];
      part_m2[blockIdx.y * C + cv * V + i] = s_m2[xi * V + i];
    }
  }
}

// One warp per channel: merge the splits, write the statistics and the apply constants
// mean_hi + mean_lo (the double mean as two floats) and scale = gamma * invstd.
template <class T>
__global__ void bn_stats_final_kernel(int64_t M, int64_t C, int64_t splits, int64_t rps, const T* x,
                                      const float* part_mean, const float* part_m2,
                                      const float* gamma, float eps, float momentum,
                                      float* running_mean, float* running_var, float* save_mean,
                                      float* save_invstd, float* mean_hi, float* mean_lo,
                                      float* scale) {
  const int lane = threadIdx.x & 31;
  const int64_t c = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (c >= C) return;
  double n = 0, mean = 0, m2 = 0;
  for (int64_t j = lane; j < splits; j += 32) {
    const int64_t rows = M - j * rps < rps ? M - j * rps : rps;
    chan_merge(n, mean, m2, double(rows), part_mean[j * C + c], part_m2[j * C + c]);
  }
  for (int off = 16; off > 0; off >>= 1) {
    const double nb = __shfl_down_sync(0xffffffffu, n, off);
    const double mb = __shfl_down_sync(0xffffffffu, mean, off);
    const double m2b = __shfl_down_sync(0xffffffffu, m2, off);
    if (lane + off < 32) chan_merge(n, mean, m2, nb, mb, m2b);
  }
  if (lane != 0) return;
  const double mu = double(to_f(x[c])) + mean;
  const double var = m2 / double(M);
  const double invstd = 1.0 / sqrt(var + double(eps));
  const double mom = momentum;
  if (running_mean) running_mean[c] = float((1.0 - mom) * running_mean[c] + mom * mu);
  if (running_var)
    running_var[c] = float((1.0 - mom) * running_var[c] + mom * (m2 / double(M - 1)));
  if (save_mean) save_mean[c] = float(mu);
  if (save_invstd) save_invstd[c] = float(invstd);
  const float hi = float(mu);
  mean_hi[c] = hi;
  mean_lo[c] = float(mu - double(hi));
  scale[c] = float(invstd * (gamma ? double(gamma[c]) : 1.0));
}

struct ApplyArgs {
  int64_t M = 0, C = 0;
  const float* mean_hi = nullptr;  // nullptr: 0
  const float* mean_lo = nullptr;  // nullptr: 0
  const float* scale = nullptr;    // nullptr: gamma / sqrt(var + eps)
  const float* gamma = nullptr;    // nullptr: 1
  const float* var = nullptr;
  float eps = 0.f;
  const float* beta = nullptr;     // nullptr: 0
  bool relu = false;
};

// y = act((x - mean_hi) * scale + (beta - mean_lo * scale) + residual); x, residual, y [M, C]
template <class T, int V>
__global__ void __launch_bounds__(kThreads, 4)
    bn_apply_kernel(ApplyArgs a, const T* x, const T* residual, T* y) {
  const int64_t cv = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (cv * V >= a.C) return;
  float hi[V], sc[V], b[V];
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int64_t c = cv * V + i;
    hi[i] = a.mean_hi ? a.mean_hi[c] : 0.f;
    const double g = a.gamma ? double(a.gamma[c]) : 1.0;
    sc[i] = a.scale ? a.scale[c] : float(g * (1.0 / sqrt(double(a.var[c]) + double(a.eps))));
    const float lo = a.mean_lo ? a.mean_lo[c] : 0.f;
    b[i] = (a.beta ? a.beta[c] : 0.f) - lo * sc[i];
  }
  constexpr int U = rows_per_iter<V>();
  const int64_t step = int64_t(gridDim.y) * blockDim.y;
  for (int64_t i = int64_t(blockIdx.y) * blockDim.y + threadIdx.y; i < a.M; i += step * U) {
    float v[U][V], r[U][V];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t row = a.M - 1 - (i + u * step);  // rows in reverse: see the file comment
      if (row < 0) continue;
      load_f<T, V>(x + row * a.C + cv * V, v[u]);
      if (residual) load_f<T, V>(residual + row * a.C + cv * V, r[u]);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t row = a.M - 1 - (i + u * step);
      if (row < 0) break;
#pragma unroll
      for (int k = 0; k < V; ++k) {
        float o = fmaf(v[u][k] - hi[k], sc[k], b[k]);
        if (residual) o += r[u][k];
        if (a.relu) o = o < 0.f ? 0.f : o;
        v[u][k] = o;
      }
      store_f<T, V>(y + row * a.C + cv * V, v[u]);
    }
  }
}

struct ReduceArgs {
  int64_t M = 0, C = 0, rps = 1;
  const float* mean = nullptr;
  const float* invstd = nullptr;  // nullptr: 1 / sqrt(var + eps)
  const float* var = nullptr;
  float eps = 0.f;
  const float* gamma = nullptr;   // nullptr: 1
  bool relu = false;
};

// Per split and channel: part[split][0][c] = sum g, part[split][1][c] = sum g * (x - mean),
// g = relu ? (y > 0 ? dy : 0) : dy, also written to dres when non-null. x, y, dy, dres [M, C]
template <class T, int V>
__global__ void __launch_bounds__(kThreads, 4)
    bn_bwd_reduce_kernel(ReduceArgs a, const T* x, const T* y, const T* dy, T* dres,
                         float* __restrict__ part) {
  __shared__ float s1[kThreads * V], s2[kThreads * V];
  const int tx = blockDim.x, ty = blockDim.y, xi = threadIdx.x, yi = threadIdx.y;
  const int64_t cv = int64_t(blockIdx.x) * tx + xi;
  const bool active = cv * V < a.C;
  const int64_t r0 = int64_t(blockIdx.y) * a.rps, r1 = r0 + a.rps < a.M ? r0 + a.rps : a.M;
  float acc1[V] = {}, acc2[V] = {};
  if (active) {
    float m[V];
#pragma unroll
    for (int i = 0; i < V; ++i) m[i] = a.mean[cv * V + i];
    constexpr int U = rows_per_iter<V>();
    for (int64_t r = r0 + yi; r < r1; r += int64_t(ty) * U) {
      float xv[U][V], g[U][V], yv[U][V];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (r + u * ty >= r1) continue;
        const int64_t off = (r + u * ty) * a.C + cv * V;
        load_f<T, V>(x + off, xv[u]);
        load_f<T, V>(dy + off, g[u]);
        if (a.relu) load_f<T, V>(y + off, yv[u]);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (r + u * ty >= r1) break;
#pragma unroll
        for (int i = 0; i < V; ++i) {
          if (a.relu && yv[u][i] <= 0.f) g[u][i] = 0.f;
          acc1[i] += g[u][i];
          acc2[i] = fmaf(g[u][i], xv[u][i] - m[i], acc2[i]);
        }
        if (dres) store_f<T, V>(dres + (r + u * ty) * a.C + cv * V, g[u]);
      }
    }
  }
  const int W = tx * V;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    s1[yi * W + xi * V + i] = acc1[i];
    s2[yi * W + xi * V + i] = acc2[i];
  }
  detail::block_sum_rows<V>(s1, W, ty, xi, yi);
  detail::block_sum_rows<V>(s2, W, ty, xi, yi);
  if (yi == 0 && active) {
    float* p = part + int64_t(blockIdx.y) * 2 * a.C + cv * V;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      p[i] = s1[xi * V + i];
      p[a.C + i] = s2[xi * V + i];
    }
  }
}

// One warp per channel: dbeta = sum g, dgamma = invstd * sum g*(x - mean), and, when coef is
// non-null, coef[0..3][c] = gamma*invstd, mean(g), invstd^2 * mean(g*(x - mean)).
__global__ void bn_bwd_final_kernel(int64_t M, int64_t C, int64_t splits, const float* part,
                                    const float* gamma, const float* invstd, const float* var,
                                    float eps, float* dgamma, float* dbeta, float* coef) {
  const int lane = threadIdx.x & 31;
  const int64_t c = int64_t(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (c >= C) return;
  double s1 = 0, s2 = 0;
  for (int64_t j = lane; j < splits; j += 32) {
    s1 += part[j * 2 * C + c];
    s2 += part[j * 2 * C + C + c];
  }
  for (int off = 16; off > 0; off >>= 1) {
    s1 += __shfl_down_sync(0xffffffffu, s1, off);
    s2 += __shfl_down_sync(0xffffffffu, s2, off);
  }
  if (lane != 0) return;
  const double inv = invstd ? double(invstd[c]) : 1.0 / sqrt(double(var[c]) + double(eps));
  if (dgamma) dgamma[c] = float(s2 * inv);
  if (dbeta) dbeta[c] = float(s1);
  if (coef) {
    coef[c] = float((gamma ? double(gamma[c]) : 1.0) * inv);
    coef[C + c] = float(s1 / double(M));
    coef[2 * C + c] = float(s2 / double(M) * inv * inv);
  }
}

// dx = k * (g - mean_g - (x - mean) * proj), g read from g_src and masked by y_mask > 0 when
// y_mask is non-null. x, g_src, y_mask, dx [M, C]
template <class T, int V>
__global__ void __launch_bounds__(kThreads, 3)
    bn_bwd_apply_kernel(int64_t M, int64_t C, const float* __restrict__ mean,
                        const float* __restrict__ coef, const T* x, const T* g_src,
                        const T* y_mask, T* dx) {
  const int64_t cv = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (cv * V >= C) return;
  float m[V], k[V], mg[V], proj[V];
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int64_t c = cv * V + i;
    m[i] = mean[c];
    k[i] = coef[c];
    mg[i] = coef[C + c];
    proj[i] = coef[2 * C + c];
  }
  constexpr int U = rows_per_iter<V>();
  const int64_t step = int64_t(gridDim.y) * blockDim.y;
  for (int64_t i = int64_t(blockIdx.y) * blockDim.y + threadIdx.y; i < M; i += step * U) {
    float xv[U][V], g[U][V], yv[U][V];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t row = M - 1 - (i + u * step);
      if (row < 0) continue;
      load_f<T, V>(x + row * C + cv * V, xv[u]);
      load_f<T, V>(g_src + row * C + cv * V, g[u]);
      if (y_mask) load_f<T, V>(y_mask + row * C + cv * V, yv[u]);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t row = M - 1 - (i + u * step);
      if (row < 0) break;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        const float gj = (y_mask && yv[u][j] <= 0.f) ? 0.f : g[u][j];
        g[u][j] = k[j] * (gj - mg[j] - (xv[u][j] - m[j]) * proj[j]);
      }
      store_f<T, V>(dx + row * C + cv * V, g[u]);
    }
  }
}

// The backward reduction + final pass shared by the training and inference backward.
template <class T>
void bwd_reduce(const ReducePlan& p, ReduceArgs a, const T* x, const T* y, const T* dy, T* dres,
                float* part, float* dgamma, float* dbeta, float* coef, cudaStream_t cs) {
  a.rps = p.rps;
  const dim3 grid(unsigned(p.t.col_tiles), unsigned(p.splits)), block(p.t.tx, p.t.ty);
  detail::dispatch_vec<T>(p.t.V, [&](auto v) {
    bn_bwd_reduce_kernel<T, decltype(v)::value><<<grid, block, 0, cs>>>(a, x, y, dy, dres, part);
  });
  HR_CUDA_LAUNCH_CHECK();
  bn_bwd_final_kernel<<<unsigned((a.C + 7) / 8), 256, 0, cs>>>(
      a.M, a.C, p.splits, part, a.gamma, a.invstd, a.var, a.eps, dgamma, dbeta, coef);
  HR_CUDA_LAUNCH_CHECK();
}


// ---------------------------------------------------------------------------------------------
// Single-kernel training paths.

namespace cg = cooperative_groups;
using detail::Pack;

// The paths of the training passes. The single cooperative kernel on a full wave has a fixed
// cost (two grid-wide syncs over a few hundred blocks, the merge of as many partials per
// channel: 14-20 us a call on the H100, run 3) that dominates at HRNet's low-resolution
// branches, where the data is a few MB; a quarter of the wave, or the three launches of the
// multi-kernel path, may cost less there. Which is fastest is measured per call shape (pick_path).
enum Path : int { kTuned = -1, kCoop = 0, kCoopQuarter = 1, kMulti = 2, kPaths = 3 };
const char* const kPathName[kPaths] = {"single kernel", "single kernel, quarter wave",
                                       "multi-kernel"};

// Test hook (fused.h): caps on the rows per thread kept in registers / shared memory, and the
// path (kTuned: chosen per shape).
std::atomic<int> g_cap_reg{-1}, g_cap_smem{-1}, g_path{kTuned};

// HR_BN_COOPERATIVE=0 (read once): the multi-kernel path everywhere, no cooperative launch. A
// lever for the GPU window (tools/window/run.sh sets it when a cooperative test hangs) and for
// devices or drivers that cannot run cooperative grids side by side on several streams.
bool cooperative_allowed() {
  static const bool on = !detail::env_starts_with("HR_BN_COOPERATIVE", '0');
  return on;
}

// Bytes rounded up so that what follows in one scratch allocation stays 256-byte aligned.
size_t scratch_round(size_t bytes) { return (bytes + 255) / 256 * 256; }

// A training pass of one call shape: what its path choice is cached by.
struct PassKey {
  int dev;
  DT dt;
  int vec, pass;  // pass: forward (0) / backward (1), plus flag bits
  int64_t M, C;
  bool operator<(const PassKey& o) const {
    return std::tie(dev, dt, vec, pass, M, C) < std::tie(o.dev, o.dt, o.vec, o.pass, o.M, o.C);
  }
};

// Maps up to this size are tuned (pick_path); larger ones take the full wave, which is the
// fastest there (the fixed cost is small beside their bandwidth time) and whose scratch outputs
// for timing would be large.
constexpr int64_t kTuneMaxBytes = int64_t(64) << 20;

// The path a training pass takes:
//  - the test hook's, when set; the multi-kernel path when cooperative launches are off
//    (HR_BN_COOPERATIVE=0); the full-wave single kernel when HR_BN_TUNE=0 or the map is over
//    kTuneMaxBytes;
//  - otherwise the fastest for this call shape, measured on its first call: time_path(p) runs
//    the call on path p into scratch outputs (nothing the caller sees changes, the running
//    statistics included) and returns its time in ms (INFINITY when p cannot run the call).
//    Timed eagerly (launch costs included, which a replayed CUDA graph hides: the choice may
//    lean away from the three-launch path). The choice is kept for the process, one per key
//    even when threads tune at once (HR_BN_VERBOSE=1 prints each). A first call inside a CUDA
//    graph capture cannot be timed: it takes the full-wave kernel, unremembered.
template <class TimePath>
int pick_path(const PassKey& key, int64_t map_bytes, Stream st, TimePath&& time_path) {
  if (g_path.load() != kTuned) return g_path.load();
  if (!cooperative_allowed()) return kMulti;
  static const bool tune = !detail::env_starts_with("HR_BN_TUNE", '0');
  if (!tune || map_bytes > kTuneMaxBytes) return kCoop;
  static std::mutex mu;
  static std::map<PassKey, int> chosen;
  std::lock_guard<std::mutex> lock(mu);  // held while timing: one choice per key
  if (auto it = chosen.find(key); it != chosen.end()) return it->second;
  if (is_capturing(st)) return kCoop;
  float ms[kPaths];
  for (int p = 0; p < kPaths; ++p) ms[p] = time_path(p);
  int best = kMulti;  // the multi-kernel path runs every call: its time is finite
  for (int p = 0; p < kPaths; ++p)
    if (ms[p] < ms[best]) best = p;
  static const bool verbose = detail::env_starts_with("HR_BN_VERBOSE", '1');
  if (verbose)
    std::fprintf(stderr, "[bn] %s %s M=%lld C=%lld vec %d flags %d: %.1f / %.1f / %.1f us -> %s\n",
                 key.pass & 1 ? "backward" : "forward", detail::dt_name(key.dt),
                 static_cast<long long>(key.M), static_cast<long long>(key.C), key.vec,
                 key.pass >> 1, 1e3 * ms[0], 1e3 * ms[1], 1e3 * ms[2], kPathName[best]);
  chosen.emplace(key, best);
  return best;
}

// Rows of one stream a thread keeps in registers: 24 registers of data at 16 or 8 bytes per
// row (16 for bf16, whose conversions need more), fewer for narrower rows; more would spill
// at 128 registers. The backward keeps two streams (x and g), half as many rows each.
template <class T, int V>
constexpr int reg_rows() {
  return sizeof(T) * V < 8 ? 16
         : std::is_same<T, __nv_bfloat16>::value ? 16 * 4 / int(sizeof(T) * V)
                                                 : 24 * 4 / int(sizeof(T) * V);
}
// Rows each thread has in flight in the loops that stream rows.
template <int V>
constexpr int stream_rows() { return V >= 4 ? 2 : 4; }

template <class T, int V>
__device__ __forceinline__ Pack<T, V> ld_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, V>*>(p);
}
template <class T, int V>
__device__ __forceinline__ void unpack(const Pack<T, V>& pk, float (&out)[V]) {
#pragma unroll
  for (int i = 0; i < V; ++i) out[i] = to_f(pk.v[i]);
}

// Block-level state shared by both directions: which rows and columns this thread owns.
struct OneArgs {
  int64_t M = 0, C = 0, rps = 1;  // rows per block (row split)
  double inv_m = 0, inv_m1 = 0;   // 1 / M, 1 / (M - 1)
  int col_tiles = 1;
  int keep_reg = 0, keep_smem = 0;  // rows per thread kept on chip
};

struct OneThread {
  int tid, nth;
  int64_t split, cv, r0, nr;  // nr: rows of this thread, row j = r0 + yi + j * ty
  int nreg, nsm;
  bool active;
};

template <int R, int V>
__device__ __forceinline__ OneThread one_thread(const OneArgs& a) {
  OneThread t;
  const int tx = blockDim.x, ty = blockDim.y;
  t.tid = threadIdx.y * tx + threadIdx.x;
  t.nth = tx * ty;
  t.split = blockIdx.x / a.col_tiles;
  t.cv = int64_t(blockIdx.x % a.col_tiles) * tx + threadIdx.x;
  t.active = t.cv * V < a.C;
  const int64_t r0 = t.split * a.rps, r1 = r0 + a.rps < a.M ? r0 + a.rps : a.M;
  t.r0 = r0 + threadIdx.y;
  t.nr = t.active && t.r0 < r1 ? (r1 - t.r0 + ty - 1) / ty : 0;
  const int64_t kr = R < a.keep_reg ? R : a.keep_reg;
  t.nreg = int(kr < t.nr ? kr : t.nr);
  const int64_t ks = t.nr - t.nreg;
  t.nsm = int(a.keep_smem < ks ? a.keep_smem : ks);
  return t;
}

struct FwdOneArgs : OneArgs {
  const float* gamma = nullptr;  // nullptr: 1
  const float* beta = nullptr;   // nullptr: 0
  float eps = 0.f, momentum = 0.f;
  float *running_mean = nullptr, *running_var = nullptr, *save_mean = nullptr,
        *save_invstd = nullptr;
  float *part_mean = nullptr, *part_m2 = nullptr;  // [splits, C]
  float* cst = nullptr;                            // [3, C]: mean_hi, scale, bias
  bool relu = false;
};

// y = act(BN_train(x) + res). x, res, y [M, C]; dynamic shared memory: keep_smem rows of
// Pack<T, V> per thread, laid out [row][thread].
template <class T, int V, int R>
__global__ void __launch_bounds__(kThreads, 2)
    bn_fwd_one_kernel(FwdOneArgs a, const T* x, const T* res, T* y) {
  using P = Pack<T, V>;
  extern __shared__ float4 dyn_smem[];
  P* cache = reinterpret_cast<P*>(dyn_smem);
  __shared__ float s_mean[kThreads * V], s_m2[kThreads * V], s_n[kThreads];
  const OneThread t = one_thread<R, V>(a);
  const int tx = blockDim.x, ty = blockDim.y, xi = threadIdx.x, yi = threadIdx.y;
  const int64_t C = a.C, stride = int64_t(ty) * C, col = t.cv * V;
  const T* xt = x + t.r0 * C + col;  // row j of this thread: xt + j * stride
  constexpr int U = stream_rows<V>();

  // ---- pass 1: statistics, rows kept on chip ----
  float shift[V], mean[V], m2[V];
  float n = 0.f;
#pragma unroll
  for (int i = 0; i < V; ++i) shift[i] = mean[i] = m2[i] = 0.f;
  if (t.active) load_f<T, V>(x + col, shift);
  auto add = [&](const P& pk) {
    float v[V];
    unpack<T, V>(pk, v);
    n += 1.f;
    const float inv = __frcp_rn(n);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const float s = v[i] - shift[i];
      const float d = s - mean[i];
      mean[i] = fmaf(d, inv, mean[i]);
      m2[i] = fmaf(d, s - mean[i], m2[i]);
    }
  };
  const int ks = t.nreg + t.nsm;
  // Shared-memory rows: all in flight at once, copied without passing through registers.
  constexpr bool kAsync = sizeof(P) >= 4;
  if constexpr (kAsync) {
    for (int j = t.nreg; j < ks; ++j)
      __pipeline_memcpy_async(&cache[(j - t.nreg) * t.nth + t.tid], xt + j * stride, sizeof(P));
    __pipeline_commit();
  }
  P reg[R];
#pragma unroll
  for (int j = 0; j < R; ++j)
    if (j < t.nreg) reg[j] = ld_pack<T, V>(xt + j * stride);
#pragma unroll
  for (int j = 0; j < R; ++j)
    if (j < t.nreg) add(reg[j]);
  if constexpr (kAsync) {
    __pipeline_wait_prior(0);  // each thread reads back only its own copies
    for (int j = t.nreg; j < ks; ++j) add(cache[(j - t.nreg) * t.nth + t.tid]);
  }
  for (int j = t.nreg; !kAsync && j < ks; j += U) {
    P p[U];
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (j + u < ks) p[u] = ld_pack<T, V>(xt + (j + u) * stride);
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (j + u < ks) {
        add(p[u]);
        cache[(j + u - t.nreg) * t.nth + t.tid] = p[u];
      }
  }
  for (int64_t j = ks; j < t.nr; j += U) {
    P p[U];
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (j + u < t.nr) p[u] = ld_pack<T, V>(xt + (j + u) * stride);
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (j + u < t.nr) add(p[u]);
  }

  // Chan merge over the block's rows of threads (fixed tree).
  const int W = tx * V;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    s_mean[yi * W + xi * V + i] = mean[i];
    s_m2[yi * W + xi * V + i] = m2[i];
  }
  s_n[yi * tx + xi] = n;
  for (int len = ty; len > 1;) {
    const int half = (len + 1) >> 1;
    __syncthreads();
    if (yi < len - half) {
      const float na = s_n[yi * tx + xi], nb = s_n[(yi + half) * tx + xi];
      if (nb > 0.f) {
        const float nn = na + nb, wb = nb / nn, wab = na * (nb / nn);
#pragma unroll
        for (int i = 0; i < V; ++i) {
          const int ia = yi * W + xi * V + i, ib = (yi + half) * W + xi * V + i;
          const float d = s_mean[ib] - s_mean[ia];
          s_mean[ia] = fmaf(d, wb, s_mean[ia]);
          s_m2[ia] += s_m2[ib] + d * d * wab;
        }
        s_n[yi * tx + xi] = nn;
      }
    }
    len = half;
  }
  __syncthreads();
  if (yi == 0 && t.active) {
#pragma unroll
    for (int i = 0; i < V; ++i) {
      a.part_mean[t.split * C + col + i] = s_mean[xi * V + i];
      a.part_m2[t.split * C + col + i] = s_m2[xi * V + i];
    }
  }
  cg::this_grid().sync();

  // ---- one warp per channel: merge the splits (fixed order), write stats and constants ----
  {
    const int lane = t.tid & 31, warp = t.tid >> 5, nwarps = t.nth >> 5;
    const int64_t splits = gridDim.x / a.col_tiles;
    if (warp < nwarps) {
      for (int64_t c = int64_t(blockIdx.x) * nwarps + warp; c < C;
           c += int64_t(gridDim.x) * nwarps) {
        double nn = 0, mu = 0, mm = 0;
        for (int64_t j = lane; j < splits; j += 32) {
          const int64_t rows = a.M - j * a.rps < a.rps ? a.M - j * a.rps : a.rps;
          chan_merge_rcp(nn, mu, mm, double(rows), a.part_mean[j * C + c], a.part_m2[j * C + c]);
        }
        for (int off = 16; off > 0; off >>= 1) {
          const double nb = __shfl_down_sync(0xffffffffu, nn, off);
          const double mb = __shfl_down_sync(0xffffffffu, mu, off);
          const double m2b = __shfl_down_sync(0xffffffffu, mm, off);
          if (lane + off < 32) chan_merge_rcp(nn, mu, mm, nb, mb, m2b);
        }
        if (lane == 0) {
          const double m = double(to_f(x[c])) + mu;
          const double invstd = rsqrt(mm * a.inv_m + double(a.eps));
          const double mom = a.momentum;
          if (a.running_mean)
            a.running_mean[c] = float((1.0 - mom) * a.running_mean[c] + mom * m);
          if (a.running_var)
            a.running_var[c] = float((1.0 - mom) * a.running_var[c] + mom * (mm * a.inv_m1));
          if (a.save_mean) a.save_mean[c] = float(m);
          if (a.save_invstd) a.save_invstd[c] = float(invstd);
          const float hi = float(m), lo = float(m - double(hi));
          const float sc = float(invstd * (a.gamma ? double(a.gamma[c]) : 1.0));
          a.cst[c] = hi;
          a.cst[C + c] = sc;
          a.cst[2 * C + c] = (a.beta ? a.beta[c] : 0.f) - lo * sc;
        }
      }
    }
  }
  cg::this_grid().sync();

  // ---- pass 2: apply ----
  if (!t.active) return;
  float hi[V], sc[V], bi[V];
#pragma unroll
  for (int i = 0; i < V; ++i) {
    hi[i] = a.cst[col + i];
    sc[i] = a.cst[C + col + i];
    bi[i] = a.cst[2 * C + col + i];
  }
  const T* rt = res ? res + t.r0 * C + col : nullptr;
  T* yt = y + t.r0 * C + col;
  auto out = [&](float (&v)[V], const float (&r)[V], int64_t j) {
#pragma unroll
    for (int i = 0; i < V; ++i) {
      float o = fmaf(v[i] - hi[i], sc[i], bi[i]);
      if (rt) o += r[i];
      if (a.relu) o = o < 0.f ? 0.f : o;
      v[i] = o;
    }
    store_f<T, V>(yt + j * stride, v);
  };
  // rows not kept, in reverse
  for (int64_t j = t.nr - 1; j >= ks; j -= U) {
    float v[U][V], r[U][V];
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (j - u >= ks) {
        load_f<T, V>(xt + (j - u) * stride, v[u]);
        if (rt) load_f<T, V>(rt + (j - u) * stride, r[u]);
      }
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (j - u >= ks) out(v[u], r[u], j - u);
  }
  // shared memory rows
  for (int j = ks - 1; j >= t.nreg; j -= U) {
    float v[U][V], r[U][V];
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (j - u >= t.nreg) {
        unpack<T, V>(cache[(j - u - t.nreg) * t.nth + t.tid], v[u]);
        if (rt) load_f<T, V>(rt + (j - u) * stride, r[u]);
      }
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (j - u >= t.nreg) out(v[u], r[u], j - u);
  }
  // register rows, residual loads 4 rows at a time
#pragma unroll
  for (int j0 = 0; j0 < R; j0 += 4) {
    float r[4][V];
#pragma unroll
    for (int u = 0; u < 4; ++u)
      if (j0 + u < R && j0 + u < t.nreg && rt) load_f<T, V>(rt + (j0 + u) * stride, r[u]);
#pragma unroll
    for (int u = 0; u < 4; ++u)
      if (j0 + u < R && j0 + u < t.nreg) {
        float v[V];
        unpack<T, V>(reg[j0 + u], v);
        out(v, r[u], j0 + u);
      }
  }
}

struct BwdOneArgs : OneArgs {
  const float* mean = nullptr;
  const float* invstd = nullptr;
  const float* gamma = nullptr;  // nullptr: 1
  float *dgamma = nullptr, *dbeta = nullptr;
  float* part = nullptr;  // [splits, 2, C]
  float* coef = nullptr;  // [3, C]: gamma * invstd, mean(g), invstd^2 * mean(g * (x - mean))
  bool relu = false;
};

// Backward of bn_fwd_one_kernel. g = relu ? (y > 0 ? dy : 0) : dy; dres = g (when non-null);
// dgamma, dbeta (each may be null); dx (when non-null). x, y, dy, dres, dx [M, C]; dynamic
// shared memory: keep_smem rows of (x, g) per thread, laid out [row][x | g][thread].
template <class T, int V, int R>
__global__ void __launch_bounds__(kThreads, 2)
    bn_bwd_one_kernel(BwdOneArgs a, const T* x, const T* y, const T* dy, T* dres, T* dx) {
  using P = Pack<T, V>;
  extern __shared__ float4 dyn_smem[];
  P* cache = reinterpret_cast<P*>(dyn_smem);
  __shared__ float s1[kThreads * V], s2[kThreads * V];
  const OneThread t = one_thread<R, V>(a);
  const int tx = blockDim.x, ty = blockDim.y, xi = threadIdx.x, yi = threadIdx.y;
  const int64_t C = a.C, stride = int64_t(ty) * C, col = t.cv * V;
  const int64_t base = t.r0 * C + col;
  constexpr int U = stream_rows<V>();

  // ---- pass 1: sums ----
  float m[V], acc1[V], acc2[V];
#pragma unroll
  for (int i = 0; i < V; ++i) {
    m[i] = t.active ? a.mean[col + i] : 0.f;
    acc1[i] = acc2[i] = 0.f;
  }
  // g of row j (dy masked by y), accumulated and written to dres.
  auto take = [&](const P& xp, P& gp, const P& yp, int64_t j) {
    if (a.relu) {
#pragma unroll
      for (int i = 0; i < V; ++i)
        if (!(to_f(yp.v[i]) > 0.f)) gp.v[i] = detail::from_f<T>(0.f);
    }
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const float g = to_f(gp.v[i]);
      acc1[i] += g;
      acc2[i] = fmaf(g, to_f(xp.v[i]) - m[i], acc2[i]);
    }
    if (dres) *reinterpret_cast<P*>(dres + base + j * stride) = gp;
  };
  P xr[R], gr[R];
#pragma unroll
  for (int j0 = 0; j0 < R; j0 += 4) {
    P yp[4];
#pragma unroll
    for (int u = 0; u < 4; ++u)
      if (j0 + u < R && j0 + u < t.nreg) {
        xr[j0 + u] = ld_pack<T, V>(x + base + (j0 + u) * stride);
        gr[j0 + u] = ld_pack<T, V>(dy + base + (j0 + u) * stride);
        if (a.relu) yp[u] = ld_pack<T, V>(y + base + (j0 + u) * stride);
      }
#pragma unroll
    for (int u = 0; u < 4; ++u)
      if (j0 + u < R && j0 + u < t.nreg) take(xr[j0 + u], gr[j0 + u], yp[u], j0 + u);
  }
  const int ks = t.nreg + t.nsm;
  for (int64_t j = t.nreg; j < t.nr; j += U) {
    P xp[U], gp[U], yp[U];
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (j + u < t.nr) {
        xp[u] = ld_pack<T, V>(x + base + (j + u) * stride);
        gp[u] = ld_pack<T, V>(dy + base + (j + u) * stride);
        if (a.relu) yp[u] = ld_pack<T, V>(y + base + (j + u) * stride);
      }
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (j + u < t.nr) {
        take(xp[u], gp[u], yp[u], j + u);
        if (j + u < ks) {
          const int64_t s = (j + u - t.nreg) * 2 * t.nth + t.tid;
          cache[s] = xp[u];
          cache[s + t.nth] = gp[u];
        }
      }
  }
  const int W = tx * V;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    s1[yi * W + xi * V + i] = acc1[i];
    s2[yi * W + xi * V + i] = acc2[i];
  }
  detail::block_sum_rows<V>(s1, W, ty, xi, yi);
  detail::block_sum_rows<V>(s2, W, ty, xi, yi);
  if (yi == 0 && t.active) {
    float* p = a.part + t.split * 2 * C + col;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      p[i] = s1[xi * V + i];
      p[C + i] = s2[xi * V + i];
    }
  }
  cg::this_grid().sync();

  // ---- one warp per channel: fixed-order sums, dgamma, dbeta, dx constants ----
  {
    const int lane = t.tid & 31, warp = t.tid >> 5, nwarps = t.nth >> 5;
    const int64_t splits = gridDim.x / a.col_tiles;
    if (warp < nwarps) {
      for (int64_t c = int64_t(blockIdx.x) * nwarps + warp; c < C;
           c += int64_t(gridDim.x) * nwarps) {
        double d1 = 0, d2 = 0;
        for (int64_t j = lane; j < splits; j += 32) {
          d1 += a.part[j * 2 * C + c];
          d2 += a.part[j * 2 * C + C + c];
        }
        for (int off = 16; off > 0; off >>= 1) {
          d1 += __shfl_down_sync(0xffffffffu, d1, off);
          d2 += __shfl_down_sync(0xffffffffu, d2, off);
        }
        if (lane == 0) {
          const double inv = a.invstd[c];
          if (a.dgamma) a.dgamma[c] = float(d2 * inv);
          if (a.dbeta) a.dbeta[c] = float(d1);
          if (dx) {
            a.coef[c] = float((a.gamma ? double(a.gamma[c]) : 1.0) * inv);
            a.coef[C + c] = float(d1 * a.inv_m);
            a.coef[2 * C + c] = float(d2 * a.inv_m * inv * inv);
          }
        }
      }
    }
  }
  if (!dx) return;
  cg::this_grid().sync();

  // ---- pass 2: dx ----
  if (!t.active) return;
  float k[V], mg[V], proj[V];
#pragma unroll
  for (int i = 0; i < V; ++i) {
    k[i] = a.coef[col + i];
    mg[i] = a.coef[C + col + i];
    proj[i] = a.coef[2 * C + col + i];
  }
  auto out = [&](const P& xp, const P& gp, int64_t j) {
    float o[V];
#pragma unroll
    for (int i = 0; i < V; ++i)
      o[i] = k[i] * (to_f(gp.v[i]) - mg[i] - (to_f(xp.v[i]) - m[i]) * proj[i]);
    store_f<T, V>(dx + base + j * stride, o);
  };
  // rows not kept, in reverse: g from dres when it was written, else dy masked by y
  for (int64_t j = t.nr - 1; j >= ks; j -= U) {
    P xp[U], gp[U], yp[U];
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (j - u >= ks) {
        const int64_t off = base + (j - u) * stride;
        xp[u] = ld_pack<T, V>(x + off);
        gp[u] = ld_pack<T, V>(dres ? dres + off : dy + off);
        if (a.relu && !dres) yp[u] = ld_pack<T, V>(y + off);
      }
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (j - u >= ks) {
        if (a.relu && !dres) {
#pragma unroll
          for (int i = 0; i < V; ++i)
            if (!(to_f(yp[u].v[i]) > 0.f)) gp[u].v[i] = detail::from_f<T>(0.f);
        }
        out(xp[u], gp[u], j - u);
      }
  }
  for (int j = ks - 1; j >= t.nreg; --j) {
    const int64_t s = (j - t.nreg) * 2 * t.nth + t.tid;
    out(cache[s], cache[s + t.nth], j);
  }
#pragma unroll
  for (int j = 0; j < R; ++j)
    if (j < t.nreg) out(xr[j], gr[j], j);
}

// Per kernel instantiation and device: co-resident blocks per SM and the dynamic shared
// memory a block may use without lowering that (and that opt-in set on the kernel).
struct OneInfo {
  bool ok = false;
  int blocks_per_sm = 0;
  size_t smem_budget = 0;
};

// Cached by (device, kernel): instantiations that differ only in their template values (the
// vector width V, the rows in registers R) share a function type but not their static shared
// memory, occupancy or dynamic shared memory opt-in.
template <class K>
OneInfo one_info(K* kernel) {
  static std::mutex mu;
  static std::map<std::pair<int, const void*>, OneInfo> cache;
  const int dev = detail::current_device();
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(dev, reinterpret_cast<const void*>(kernel));
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  OneInfo info;
  int coop = 0, smem_sm = 0, reserved = 0, optin = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&reserved, cudaDevAttrReservedSharedMemoryPerBlock, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  cudaFuncAttributes fa;
  CUDA_CHECK(cudaFuncGetAttributes(&fa, kernel));
  int occ = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kernel, kThreads, 0));
  if (coop && occ > 0) {
    int64_t budget = int64_t(smem_sm) / occ - reserved - int64_t(fa.sharedSizeBytes);
    budget = std::min<int64_t>(budget, int64_t(optin) - int64_t(fa.sharedSizeBytes));
    budget = std::max<int64_t>(budget, 0) / 1024 * 1024;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(budget)));
    for (; budget > 0; budget -= 1024) {
      int o = 0;
      CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&o, kernel, kThreads,
                                                               size_t(budget)));
      if (o >= occ) break;
    }
    info.ok = true;
    info.blocks_per_sm = occ;
    info.smem_budget = size_t(std::max<int64_t>(budget, 0));
  }
  cache[key] = info;
  return info;
}

// Grid of the single-kernel path (kCoop: a full wave of blocks; kCoopQuarter: a quarter of
// it): `streams` row streams kept per row (1 forward, 2 backward), R rows of them in
// registers. splits == 0: the path cannot run the call (or is kMulti).
struct OnePlan {
  RowTiling t;
  int64_t splits = 0;
  size_t smem = 0;
};

OnePlan one_plan(const OneInfo& info, int64_t M, int64_t C, int V, size_t elem, int R, int streams,
                 bool keep, int path, OneArgs* a) {
  OnePlan p;
  if (!info.ok || path == kMulti || !cooperative_allowed()) return p;
  p.t = detail::row_tiling(C, V, kThreads);
  const int64_t wave =
      int64_t(info.blocks_per_sm) * detail::sm_count() / (path == kCoopQuarter ? 4 : 1);
  int64_t splits = std::min<int64_t>(wave / p.t.col_tiles, (M + p.t.ty - 1) / p.t.ty);
  if (splits < 1) return p;
  const int64_t rps = (M + splits - 1) / splits;
  p.splits = (M + rps - 1) / rps;
  const int64_t rows = (rps + p.t.ty - 1) / p.t.ty;  // per thread
  const int nth = p.t.tx * p.t.ty;
  const size_t row_bytes = elem * size_t(V) * size_t(streams) * size_t(nth);
  int64_t kr = keep ? std::min<int64_t>(R, rows) : 0;
  if (g_cap_reg.load() >= 0) kr = std::min<int64_t>(kr, g_cap_reg.load());
  int64_t ks = keep ? std::min<int64_t>(int64_t(info.smem_budget / row_bytes), rows - kr) : 0;
  if (g_cap_smem.load() >= 0) ks = std::min<int64_t>(ks, g_cap_smem.load());
  a->M = M;
  a->C = C;
  a->inv_m = 1.0 / double(M);
  a->inv_m1 = M > 1 ? 1.0 / double(M - 1) : 0.0;
  a->rps = rps;
  a->col_tiles = p.t.col_tiles;
  a->keep_reg = int(kr);
  a->keep_smem = int(ks);
  p.smem = size_t(ks) * row_bytes;
  return p;
}

template <class K, class... Args>
void launch_coop(K* kernel, const OnePlan& p, cudaStream_t cs, Args... args) {
  void* argv[] = {static_cast<void*>(&args)...};
  CUDA_CHECK(cudaLaunchCooperativeKernel(
      reinterpret_cast<const void*>(kernel), dim3(unsigned(p.splits * p.t.col_tiles)),
      dim3(unsigned(p.t.tx), unsigned(p.t.ty)), argv, p.smem, cs));
  HR_CUDA_LAUNCH_CHECK();
}

}  // namespace

void batchnorm_test_config(int reg_rows, int smem_rows, int path) {
  HR_CHECK(path >= kTuned && path < kPaths, "batchnorm_test_config: path ", path,
           " is not -1 (tuned), 0, 1 or 2");
  g_cap_reg.store(reg_rows);
  g_cap_smem.store(smem_rows);
  g_path.store(path);
}

void batchnorm_act_train_forward(DT dt, int64_t M, int64_t C, const void* x, const float* gamma,
                                 const float* beta, float eps, float momentum,
                                 float* running_mean, float* running_var, const void* residual,
                                 bool relu, void* y, float* save_mean, float* save_invstd,
                                 Stream st) {
  if (C <= 0) return;
  HR_CHECK(M > 1, "batchnorm_train_forward: expected more than 1 value per channel when "
           "training, got M=", M, " rows (C=", C, ")");
  const cudaStream_t cs = detail::stream_of(st);
  HR_DISPATCH_DT(dt, T, {
    const int V = detail::vec_width(C, sizeof(T), {x, residual, y});
    const T* xt = static_cast<const T*>(x);
    const T* rt = static_cast<const T*>(residual);
    // The statistics' outputs of one call: the caller's, or scratch when timing a path.
    struct Out {
      T* y;
      float *running_mean, *running_var, *save_mean, *save_invstd;
    };
    // The call on `path` into `o`; false when the path cannot run it.
    auto launch = [&](int path, const Out& o) {
      bool done = false;
      if (path != kMulti)
        detail::dispatch_vec<T>(V, [&](auto v) {
          constexpr int VV = decltype(v)::value, R = reg_rows<T, VV>();
          auto* kernel = &bn_fwd_one_kernel<T, VV, R>;
          FwdOneArgs a;
          const OnePlan p =
              one_plan(one_info(kernel), M, C, VV, sizeof(T), R, 1, true, path, &a);
          if (p.splits == 0) return;
          detail::Workspace ws(sizeof(float) * (2 * p.splits * C + 3 * C), st);
          a.gamma = gamma;
          a.beta = beta;
          a.eps = eps;
          a.momentum = momentum;
          a.running_mean = o.running_mean;
          a.running_var = o.running_var;
          a.save_mean = o.save_mean;
          a.save_invstd = o.save_invstd;
          a.part_mean = ws.as<float>();
          a.part_m2 = a.part_mean + p.splits * C;
          a.cst = a.part_m2 + p.splits * C;
          a.relu = relu;
          launch_coop(kernel, p, cs, a, xt, rt, o.y);
          done = true;
        });
      if (done || path != kMulti) return done;
      const ReducePlan p = reduce_plan(M, C, V);
      detail::Workspace ws(sizeof(float) * (2 * p.splits * C + 3 * C), st);
      float* part_mean = ws.as<float>();
      float* part_m2 = part_mean + p.splits * C;
      float* hi = part_m2 + p.splits * C;
      float* lo = hi + C;
      float* scale = lo + C;
      const dim3 block(p.t.tx, p.t.ty);
      detail::dispatch_vec<T>(V, [&](auto v) {
        bn_stats_kernel<T, decltype(v)::value>
            <<<dim3(unsigned(p.t.col_tiles), unsigned(p.splits)), block, 0, cs>>>(
                M, C, p.rps, xt, part_mean, part_m2);
      });
      HR_CUDA_LAUNCH_CHECK();
      bn_stats_final_kernel<T><<<unsigned((C + 7) / 8), 256, 0, cs>>>(
          M, C, p.splits, p.rps, xt, part_mean, part_m2, gamma, eps, momentum, o.running_mean,
          o.running_var, o.save_mean, o.save_invstd, hi, lo, scale);
      HR_CUDA_LAUNCH_CHECK();
      ApplyArgs a;
      a.M = M;
      a.C = C;
      a.mean_hi = hi;
      a.mean_lo = lo;
      a.scale = scale;
      a.beta = beta;
      a.relu = relu;
      detail::dispatch_vec<T>(V, [&](auto v) {
        bn_apply_kernel<T, decltype(v)::value><<<apply_grid(M, p.t), block, 0, cs>>>(a, xt, rt,
                                                                                   o.y);
      });
      HR_CUDA_LAUNCH_CHECK();
      return true;
    };
    const Out out{static_cast<T*>(y), running_mean, running_var, save_mean, save_invstd};
    const PassKey key{detail::current_device(), dt, V, 0 | (relu ? 2 : 0) | (rt ? 4 : 0), M, C};
    const int path = pick_path(key, M * C * int64_t(sizeof(T)), st, [&](int p) {
      const size_t ybytes = scratch_round(sizeof(T) * size_t(M * C));
      detail::Workspace scratch(ybytes + sizeof(float) * 4 * size_t(C), st);
      float* f = reinterpret_cast<float*>(scratch.as<char>() + ybytes);
      CUDA_CHECK(cudaMemsetAsync(f, 0, sizeof(float) * 4 * size_t(C), cs));
      const Out o{scratch.as<T>(), f, f + C, f + 2 * C, f + 3 * C};
      return detail::time_ms([&] { return launch(p, o); }, cs);
    });
    if (!launch(path, out)) launch(kMulti, out);
  });
}

void batchnorm_act_infer_forward(DT dt, int64_t M, int64_t C, const void* x, const float* gamma,
                                 const float* beta, const float* running_mean,
                                 const float* running_var, float eps, const void* residual,
                                 bool relu, void* y, Stream st) {
  if (M <= 0 || C <= 0) return;
  const cudaStream_t cs = detail::stream_of(st);
  HR_DISPATCH_DT(dt, T, {
    const int V = detail::vec_width(C, sizeof(T), {x, residual, y});
    const RowTiling t = detail::row_tiling(C, V, kThreads);
    ApplyArgs a;
    a.M = M;
    a.C = C;
    a.mean_hi = running_mean;
    a.gamma = gamma;
    a.var = running_var;
    a.eps = eps;
    a.beta = beta;
    a.relu = relu;
    detail::dispatch_vec<T>(V, [&](auto v) {
      bn_apply_kernel<T, decltype(v)::value><<<apply_grid(M, t), dim3(t.tx, t.ty), 0, cs>>>(
          a, static_cast<const T*>(x), static_cast<const T*>(residual), static_cast<T*>(y));
    });
    HR_CUDA_LAUNCH_CHECK();
  });
}

void batchnorm_act_train_backward(DT dt, int64_t M, int64_t C, const void* x, const void* y,
                                  const void* dy, const float* gamma, const float* save_mean,
                                  const float* save_invstd, bool relu, void* dx, void* dresidual,
                                  float* dgamma, float* dbeta, Stream st) {
  if (M <= 0 || C <= 0) return;
  HR_CHECK(!relu || y, "batchnorm_act_train_backward: relu needs the forward output y");
  const cudaStream_t cs = detail::stream_of(st);
  HR_DISPATCH_DT(dt, T, {
    const int V = detail::vec_width(C, sizeof(T), {x, relu ? y : nullptr, dy, dx, dresidual});
    const T* xt = static_cast<const T*>(x);
    const T* yt = static_cast<const T*>(y);
    const T* dyt = static_cast<const T*>(dy);
    // The outputs of one call: the caller's, or scratch when timing a path (null where the
    // caller's are).
    struct Out {
      T *dx, *dres;
      float *dgamma, *dbeta;
    };
    // bf16 with 8-wide vectors would spill in the single kernel: 8-byte vectors there.
    const int V1 = std::is_same<T, __nv_bfloat16>::value && V == 8 ? 4 : V;
    // The call on `path` into `o`; false when the path cannot run it.
    auto launch = [&](int path, const Out& o) {
      bool done = false;
      if (path != kMulti)
        detail::dispatch_vec<T>(V1, [&](auto v) {
          constexpr int VV = decltype(v)::value, R = reg_rows<T, VV>() / 2;
          if constexpr (std::is_same<T, __nv_bfloat16>::value && VV == 8) {
            return;  // never chosen (V1)
          } else {
            auto* kernel = &bn_bwd_one_kernel<T, VV, R>;
            BwdOneArgs a;
            const OnePlan p =
                one_plan(one_info(kernel), M, C, VV, sizeof(T), R, 2, o.dx != nullptr, path, &a);
            if (p.splits == 0) return;
            detail::Workspace ws(sizeof(float) * (2 * p.splits * C + 3 * C), st);
            a.mean = save_mean;
            a.invstd = save_invstd;
            a.gamma = gamma;
            a.dgamma = o.dgamma;
            a.dbeta = o.dbeta;
            a.part = ws.as<float>();
            a.coef = a.part + 2 * p.splits * C;
            a.relu = relu;
            launch_coop(kernel, p, cs, a, xt, relu ? yt : nullptr, dyt, o.dres, o.dx);
            done = true;
          }
        });
      if (done || path != kMulti) return done;
      const ReducePlan p = reduce_plan(M, C, V);
      detail::Workspace ws(sizeof(float) * (2 * p.splits * C + 3 * C), st);
      float* part = ws.as<float>();
      float* coef = part + 2 * p.splits * C;
      ReduceArgs a;
      a.M = M;
      a.C = C;
      a.mean = save_mean;
      a.invstd = save_invstd;
      a.gamma = gamma;
      a.relu = relu;
      bwd_reduce<T>(p, a, xt, yt, dyt, o.dres, part, o.dgamma, o.dbeta, o.dx ? coef : nullptr,
                    cs);
      if (o.dx) {
        // g is already in dresidual when that was requested: read it instead of dy and y.
        const T* g_src = o.dres ? o.dres : dyt;
        const T* y_mask = (relu && !o.dres) ? yt : nullptr;
        detail::dispatch_vec<T>(V, [&](auto v) {
          bn_bwd_apply_kernel<T, decltype(v)::value>
              <<<apply_grid(M, p.t), dim3(p.t.tx, p.t.ty), 0, cs>>>(M, C, save_mean, coef, xt,
                                                                     g_src, y_mask, o.dx);
        });
        HR_CUDA_LAUNCH_CHECK();
      }
      return true;
    };
    const Out out{static_cast<T*>(dx), static_cast<T*>(dresidual), dgamma, dbeta};
    const PassKey key{detail::current_device(), dt, V,
                      1 | (relu ? 2 : 0) | (dx ? 4 : 0) | (dresidual ? 8 : 0) |
                          (dgamma ? 16 : 0) | (dbeta ? 32 : 0),
                      M, C};
    const int path = pick_path(key, M * C * int64_t(sizeof(T)), st, [&](int p) {
      const size_t map = scratch_round(sizeof(T) * size_t(M * C));
      detail::Workspace scratch(2 * map + sizeof(float) * 2 * size_t(C), st);
      char* base = scratch.as<char>();
      float* f = reinterpret_cast<float*>(base + 2 * map);
      const Out o{dx ? reinterpret_cast<T*>(base) : nullptr,
                  dresidual ? reinterpret_cast<T*>(base + map) : nullptr, dgamma ? f : nullptr,
                  dbeta ? f + C : nullptr};
      return detail::time_ms([&] { return launch(p, o); }, cs);
    });
    if (!launch(path, out)) launch(kMulti, out);
  });
}

void batchnorm_infer_backward(DT dt, int64_t M, int64_t C, const void* x, const void* dy,
                              const float* gamma, const float* running_mean,
                              const float* running_var, float eps, void* dx, float* dgamma,
                              float* dbeta, Stream st) {
  if (M <= 0 || C <= 0) return;
  const cudaStream_t cs = detail::stream_of(st);
  HR_DISPATCH_DT(dt, T, {
    // The sums first: dx may overwrite dy.
    if (dgamma || dbeta) {
      const ReducePlan p = reduce_plan(M, C, detail::vec_width(C, sizeof(T), {x, dy}));
      detail::Workspace ws(sizeof(float) * 2 * p.splits * C, st);
      ReduceArgs a;
      a.M = M;
      a.C = C;
      a.mean = running_mean;
      a.var = running_var;
      a.eps = eps;
      a.gamma = gamma;
      bwd_reduce<T>(p, a, static_cast<const T*>(x), nullptr, static_cast<const T*>(dy), nullptr,
                    ws.as<float>(), dgamma, dbeta, nullptr, cs);
    }
    if (dx) {
      // dx = dy * gamma / sqrt(running_var + eps): the apply kernel with mean 0 and beta 0.
      const int V = detail::vec_width(C, sizeof(T), {dy, dx});
      const RowTiling t = detail::row_tiling(C, V, kThreads);
      ApplyArgs a;
      a.M = M;
      a.C = C;
      a.gamma = gamma;
      a.var = running_var;
      a.eps = eps;
      detail::dispatch_vec<T>(V, [&](auto v) {
        bn_apply_kernel<T, decltype(v)::value><<<apply_grid(M, t), dim3(t.tx, t.ty), 0, cs>>>(
            a, static_cast<const T*>(dy), nullptr, static_cast<T*>(dx));
      });
      HR_CUDA_LAUNCH_CHECK();
    }
  });
}

}  // namespace hr::cuda
