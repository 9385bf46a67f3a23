// Synchronised batch norm on CUDA (kernels/cuda/sync_bn.h). Per-channel sums: blocks of 32
// channels x 8 row groups, each block over a fixed slice of rows writes its partial sums, and a
// second kernel adds the partials in slice order: deterministic for a given shape.
#include <algorithm>

#include "kernels/cuda/check.h"
#include "kernels/cuda/fused.h"
#include "kernels/cuda/sync_bn.h"

namespace hr::cuda {

namespace {

constexpr int kCols = 32, kRows = 8;
constexpr int64_t kMaxSlices = 64;

// The row slices of the partial sums: at least 256 rows each, at most kMaxSlices.
int64_t slices_for(int64_t M) {
  return std::max<int64_t>(1, std::min<int64_t>(kMaxSlices, (M + 255) / 256));
}

// Workspace layout (doubles): sums [C+1] | sq [C] | grad sums [2C+1] | partials
// [slices * 2C] (shared by the passes) | var as float [C] (after the doubles).
struct Layout {
  int64_t C, slices;
  double* base;
  double* sums() const { return base; }
  double* sq() const { return base + C + 1; }
  double* grad() const { return base + 2 * C + 1; }
  double* part() const { return base + 4 * C + 2; }
  float* var() const { return reinterpret_cast<float*>(part() + slices * 2 * C); }
  static size_t bytes(int64_t M, int64_t C) {
    return size_t(4 * C + 2 + slices_for(M) * 2 * C) * sizeof(double) + size_t(C) * sizeof(float);
  }
};

// The terms summed per channel: kX: x; kSq: (x - mean)^2; kGrad: g and g * (x - mean) (two
// outputs per channel, g also stored to dres when given).
enum Mode { kX, kSq, kGrad };

template <class T, int mode>
__global__ void partial_sums_kernel(int64_t M, int64_t C, int64_t rows_per_slice, const T* x,
                                    const T* y, const T* dy, const double* sums, const float* mean_f,
                                    bool relu, T* dres, double* part) {
  const int64_t c = int64_t(blockIdx.x) * kCols + threadIdx.x;
  const int64_t slice = blockIdx.y;
  const int64_t r0 = slice * rows_per_slice;
  const int64_t r1 = r0 + rows_per_slice < M ? r0 + rows_per_slice : M;
  double a = 0, b = 0;
  if (c < C) {
    const double mean = mode == kSq ? sums[c] / sums[C] : mode == kGrad ? double(mean_f[c]) : 0.0;
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRows) {
      const int64_t i = r * C + c;
      const double v = detail::to_f(x[i]);
      if (mode == kX) {
        a += v;
      } else if (mode == kSq) {
        a += (v - mean) * (v - mean);
      } else {
        float g = detail::to_f(dy[i]);
        if (relu && detail::to_f(y[i]) <= 0.f) g = 0.f;
        if (dres) dres[i] = detail::from_f<T>(g);
        a += g;
        b += double(g) * (v - mean);
      }
    }
  }
  __shared__ double sa[kRows][kCols], sb[kRows][kCols];
  sa[threadIdx.y][threadIdx.x] = a;
  sb[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    double ta = 0, tb = 0;
    for (int k = 0; k < kRows; ++k) {
      ta += sa[k][threadIdx.x];
      tb += sb[k][threadIdx.x];
    }
    part[slice * 2 * C + c] = ta;
    if (mode == kGrad) part[slice * 2 * C + C + c] = tb;
  }
}

// out[c] (and out[C + c] for two terms) = sum over slices in order; out[width * C] = M.
__global__ void finish_sums_kernel(int64_t M, int64_t C, int64_t slices, int width,
                                   const double* part, double* out, bool count) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j < width * C) {
    double s = 0;
    for (int64_t k = 0; k < slices; ++k) s += part[k * 2 * C + j];
    out[j] = s;
  }
  if (count && j == 0) out[width * C] = double(M);
}

// The statistics from the reduced sums (as cpu::sync_train_forward).
__global__ void forward_stats_kernel(int64_t C, const double* sums, const double* sq, float eps,
                                     float momentum, float* running_mean, float* running_var,
                                     float* save_mean, float* save_invstd, float* var_out) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const double n = sums[C];
  const double mean = sums[c] / n, var = sq[c] / n;
  const double invstd = 1.0 / sqrt(var + double(eps));
  if (running_mean) running_mean[c] = float((1.0 - momentum) * running_mean[c] + double(momentum) * mean);
  if (running_var) {
    const double unbiased = var * n / (n - 1);
    running_var[c] = float((1.0 - momentum) * running_var[c] + double(momentum) * unbiased);
  }
  save_mean[c] = float(mean);
  save_invstd[c] = float(invstd);
  var_out[c] = float(var);
}

// This rank's dgamma and dbeta, from its own sums (before they are reduced).
__global__ void local_param_grads_kernel(int64_t C, const double* grad, const float* save_invstd,
                                         float* dgamma, float* dbeta) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  if (dgamma) dgamma[c] = float(grad[C + c] * double(save_invstd[c]));
  if (dbeta) dbeta[c] = float(grad[c]);
}

template <class T>
__global__ void dx_kernel(int64_t M, int64_t C, const T* x, const T* y, const T* dy,
                          const float* gamma, const float* save_mean, const float* save_invstd,
                          bool relu, const double* grad, T* dx) {
  const int64_t n = M * C;
  const double count = grad[2 * C];
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i % C;
    const double invstd = save_invstd[c];
    const float k = float(gamma[c] * invstd);
    const float mean_g = float(grad[c] / count);
    const float proj = float(grad[C + c] / count * invstd * invstd);
    float g = detail::to_f(dy[i]);
    if (relu && detail::to_f(y[i]) <= 0.f) g = 0.f;
    dx[i] = detail::from_f<T>(k * (g - mean_g - (detail::to_f(x[i]) - save_mean[c]) * proj));
  }
}

template <int mode>
void partial_sums(DT dt, int64_t M, int64_t C, const void* x, const void* y, const void* dy,
                  const double* sums, const float* mean_f, bool relu, void* dres, const Layout& L,
                  double* out, cudaStream_t cs) {
  const int64_t rows = (M + L.slices - 1) / L.slices;
  const dim3 grid(unsigned((C + kCols - 1) / kCols), unsigned(L.slices)), block(kCols, kRows);
  HR_DISPATCH_DT(dt, T, {
    partial_sums_kernel<T, mode><<<grid, block, 0, cs>>>(
        M, C, rows, static_cast<const T*>(x), static_cast<const T*>(y), static_cast<const T*>(dy),
        sums, mean_f, relu, static_cast<T*>(dres), L.part());
  });
  HR_CUDA_LAUNCH_CHECK();
  const int width = mode == kGrad ? 2 : 1;
  finish_sums_kernel<<<unsigned((width * C + 255) / 256), 256, 0, cs>>>(
      M, C, L.slices, width, L.part(), out, mode != kSq);
  HR_CUDA_LAUNCH_CHECK();
}

Layout layout(int64_t M, int64_t C, void* ws) {
  return Layout{C, slices_for(M), static_cast<double*>(ws)};
}

}  // namespace

size_t syncbn_workspace_bytes(int64_t M, int64_t C) { return Layout::bytes(M, C); }

double* syncbn_forward_sums(DT dt, int64_t M, int64_t C, const void* x, void* ws, Stream s) {
  const Layout L = layout(M, C, ws);
  partial_sums<kX>(dt, M, C, x, nullptr, nullptr, nullptr, nullptr, false, nullptr, L, L.sums(),
                   detail::stream_of(s));
  return L.sums();
}

double* syncbn_forward_sq(DT dt, int64_t M, int64_t C, const void* x, void* ws, Stream s) {
  const Layout L = layout(M, C, ws);
  partial_sums<kSq>(dt, M, C, x, nullptr, nullptr, L.sums(), nullptr, false, nullptr, L, L.sq(),
                    detail::stream_of(s));
  return L.sq();
}

void syncbn_forward_apply(DT dt, int64_t M, int64_t C, const void* x, const float* gamma,
                          const float* beta, float eps, float momentum, float* running_mean,
                          float* running_var, const void* residual, bool relu, void* y,
                          float* save_mean, float* save_invstd, void* ws, Stream s) {
  const Layout L = layout(M, C, ws);
  const cudaStream_t cs = detail::stream_of(s);
  forward_stats_kernel<<<unsigned((C + 255) / 256), 256, 0, cs>>>(
      C, L.sums(), L.sq(), eps, momentum, running_mean, running_var, save_mean, save_invstd,
      L.var());
  HR_CUDA_LAUNCH_CHECK();
  // y from the global statistics: the inference kernel with (mean, biased variance)
  batchnorm_act_infer_forward(dt, M, C, x, gamma, beta, save_mean, L.var(), eps, residual, relu, y,
                              s);
}

double* syncbn_backward_sums(DT dt, int64_t M, int64_t C, const void* x, const void* y,
                             const void* dy, const float* save_mean, const float* save_invstd,
                             bool relu, void* dresidual, float* dgamma, float* dbeta, void* ws,
                             Stream s) {
  const Layout L = layout(M, C, ws);
  const cudaStream_t cs = detail::stream_of(s);
  partial_sums<kGrad>(dt, M, C, x, y, dy, nullptr, save_mean, relu, dresidual, L, L.grad(), cs);
  local_param_grads_kernel<<<unsigned((C + 255) / 256), 256, 0, cs>>>(C, L.grad(), save_invstd,
                                                                       dgamma, dbeta);
  HR_CUDA_LAUNCH_CHECK();
  return L.grad();
}

void syncbn_backward_dx(DT dt, int64_t M, int64_t C, const void* x, const void* y, const void* dy,
                        const float* gamma, const float* save_mean, const float* save_invstd,
                        bool relu, void* dx, void* ws, Stream s) {
  if (!dx || M * C == 0) return;
  const Layout L = layout(M, C, ws);
  const int64_t blocks = detail::wave_blocks(M * C, 256);
  HR_DISPATCH_DT(dt, T, {
    dx_kernel<T><<<unsigned(blocks), 256, 0, detail::stream_of(s)>>>(
        M, C, static_cast<const T*>(x), static_cast<const T*>(y), static_cast<const T*>(dy), gamma,
        save_mean, save_invstd, relu, L.grad(), static_cast<T*>(dx));
  });
  HR_CUDA_LAUNCH_CHECK();
}

}  // namespace hr::cuda
