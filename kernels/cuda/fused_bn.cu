// CUDA batch norm over NHWC rows x [M, C], with the optional residual add and ReLU fused in
// (fused.h), plus batchnorm_infer_backward, built from the same reduction and apply kernels.
// batchnorm.cu expresses the other unfused entry points through these.
//
// Training forward = 3 launches:
//   stats   grid (column tiles, row splits): per thread Welford over its rows, on values
//           shifted by row 0 (so large means lose no precision), fp32; merged across the block
//           (Chan) into one partial (mean, M2) per split and channel;
//   final   one warp per channel merges the splits in double, in a fixed order (deterministic,
//           no atomics), writes save_mean/save_invstd/running stats and the per-channel
//           constants of the next pass;
//   apply   y = act((x - mean_hi) * scale + (beta - mean_lo * scale) + residual), rows visited
//           in reverse so the rows the stats pass read last are still in L2.
// Training backward = reduce (sum g and g*(x - mean), g the ReLU-masked dy, also written to
// dresidual), final (dgamma, dbeta, dx constants), apply (dx, again rows reversed).
// Threads keep fixed columns: loads are 16-byte vectors along C when C and the pointers allow,
// a warp covers consecutive rows, grids fill one wave of 2048 threads per SM.
#include <algorithm>
#include <cmath>

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

}  // namespace

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
    const ReducePlan p = reduce_plan(M, C, V);
    detail::Workspace ws(sizeof(float) * (2 * p.splits * C + 3 * C), st);
    float* part_mean = ws.as<float>();
    float* part_m2 = part_mean + p.splits * C;
    float* hi = part_m2 + p.splits * C;
    float* lo = hi + C;
    float* scale = lo + C;
    const T* xt = static_cast<const T*>(x);
    const dim3 block(p.t.tx, p.t.ty);
    detail::dispatch_vec<T>(V, [&](auto v) {
      bn_stats_kernel<T, decltype(v)::value>
          <<<dim3(unsigned(p.t.col_tiles), unsigned(p.splits)), block, 0, cs>>>(
              M, C, p.rps, xt, part_mean, part_m2);
    });
    HR_CUDA_LAUNCH_CHECK();
    bn_stats_final_kernel<T><<<unsigned((C + 7) / 8), 256, 0, cs>>>(
        M, C, p.splits, p.rps, xt, part_mean, part_m2, gamma, eps, momentum, running_mean,
        running_var, save_mean, save_invstd, hi, lo, scale);
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
      bn_apply_kernel<T, decltype(v)::value><<<apply_grid(M, p.t), block, 0, cs>>>(
          a, xt, static_cast<const T*>(residual), static_cast<T*>(y));
    });
    HR_CUDA_LAUNCH_CHECK();
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
    const T* xt = static_cast<const T*>(x);
    const T* yt = static_cast<const T*>(y);
    const T* dyt = static_cast<const T*>(dy);
    T* dres = static_cast<T*>(dresidual);
    bwd_reduce<T>(p, a, xt, yt, dyt, dres, part, dgamma, dbeta, dx ? coef : nullptr, cs);
    if (dx) {
      // g is already in dresidual when that was requested: read it instead of dy and y.
      const T* g_src = dres ? dres : dyt;
      const T* y_mask = (relu && !dres) ? yt : nullptr;
      detail::dispatch_vec<T>(V, [&](auto v) {
        bn_bwd_apply_kernel<T, decltype(v)::value>
            <<<apply_grid(M, p.t), dim3(p.t.tx, p.t.ty), 0, cs>>>(M, C, save_mean, coef, xt,
                                                                   g_src, y_mask,
                                                                   static_cast<T*>(dx));
      });
      HR_CUDA_LAUNCH_CHECK();
    }
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
