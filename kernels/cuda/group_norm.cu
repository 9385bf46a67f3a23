// CUDA group norm (v1): rows of [M = N*HW, C] (NHWC, or [N, C] with HW = 1); group g of sample n
// is channels [g*C/G, (g+1)*C/G) of rows [n*HW, (n+1)*HW). One block per (n, g) computes the
// statistics (two passes, fp32 per thread, double across the block, so the result is fixed by
// the launch shape alone) and applies them; the parameter gradients take one block per 32
// channels, the threads of a column summing rows in a fixed order. Correctness first: the
// one-block-per-group layout is the obvious thing to tile once a benchmark shows it matters.
#include "kernels/cuda/check.h"
#include "kernels/cuda/cuda_kernels.h"

namespace hr::cuda {
namespace {

constexpr int kThreads = 256;

struct GroupIndex {
  int64_t HW, C, Cg;
  int64_t n, g;
  // the e-th element of group (n, g): row p = e / Cg, channel g*Cg + e % Cg
  __device__ int64_t at(int64_t e) const { return (n * HW + e / Cg) * C + g * Cg + e % Cg; }
  __device__ int64_t channel(int64_t e) const { return g * Cg + e % Cg; }
};

template <class T>
__global__ void gn_forward_kernel(int64_t HW, int64_t C, int64_t G, const T* x, const float* gamma,
                                  const float* beta, float eps, T* y, float* mean, float* rstd) {
  const GroupIndex ix{HW, C, C / G, blockIdx.x / G, blockIdx.x % G};
  const int64_t M = ix.Cg * HW;
  float s = 0;
  for (int64_t e = threadIdx.x; e < M; e += kThreads) s += detail::to_f(x[ix.at(e)]);
  const double mu = detail::block_sum<kThreads>(s) / double(M);
  float v = 0;
  for (int64_t e = threadIdx.x; e < M; e += kThreads) {
    const float d = detail::to_f(x[ix.at(e)]) - float(mu);
    v += d * d;
  }
  const double r = 1.0 / sqrt(detail::block_sum<kThreads>(v) / double(M) + double(eps));
  if (threadIdx.x == 0) {
    mean[blockIdx.x] = float(mu);
    rstd[blockIdx.x] = float(r);
  }
  for (int64_t e = threadIdx.x; e < M; e += kThreads) {
    const int64_t c = ix.channel(e), j = ix.at(e);
    const float a = float(r * gamma[c]);
    const float b = float(beta[c] - mu * r * gamma[c]);
    y[j] = detail::from_f<T>(detail::to_f(x[j]) * a + b);
  }
}

// dx = r * (h - mean(h) - xhat * mean(h * xhat)), h = dy * gamma, over the group
template <class T>
__global__ void gn_backward_data_kernel(int64_t HW, int64_t C, int64_t G, const T* x, const T* dy,
                                        const float* gamma, const float* mean, const float* rstd,
                                        T* dx) {
  const GroupIndex ix{HW, C, C / G, blockIdx.x / G, blockIdx.x % G};
  const int64_t M = ix.Cg * HW;
  const float mu = mean[blockIdx.x], r = rstd[blockIdx.x];
  float sh_h = 0, sh_hx = 0;
  for (int64_t e = threadIdx.x; e < M; e += kThreads) {
    const int64_t j = ix.at(e);
    const float h = detail::to_f(dy[j]) * gamma[ix.channel(e)];
    sh_h += h;
    sh_hx += h * (detail::to_f(x[j]) - mu) * r;
  }
  const float mh = float(detail::block_sum<kThreads>(sh_h) / double(M));
  const float mhx = float(detail::block_sum<kThreads>(sh_hx) / double(M));
  for (int64_t e = threadIdx.x; e < M; e += kThreads) {
    const int64_t j = ix.at(e);
    const float h = detail::to_f(dy[j]) * gamma[ix.channel(e)];
    dx[j] = detail::from_f<T>(r * (h - mh - (detail::to_f(x[j]) - mu) * r * mhx));
  }
}

// dgamma[c] = sum dy * xhat, dbeta[c] = sum dy over every row; block (32, 16): a column of 16
// threads per channel, rows strided by 16, then a fixed-order sum over the column.
template <class T>
__global__ void gn_backward_params_kernel(int64_t M, int64_t HW, int64_t C, int64_t G, const T* x,
                                          const T* dy, const float* mean, const float* rstd,
                                          float* dgamma, float* dbeta) {
  __shared__ double sg[16][33], sb[16][33];
  const int64_t c = int64_t(blockIdx.x) * 32 + threadIdx.x;
  double ag = 0, ab = 0;
  if (c < C) {
    const int64_t g = c / (C / G);
    for (int64_t row = threadIdx.y; row < M; row += 16) {
      const int64_t ng = (row / HW) * G + g;
      const float d = detail::to_f(dy[row * C + c]);
      ag += d * (detail::to_f(x[row * C + c]) - mean[ng]) * rstd[ng];
      ab += d;
    }
  }
  sg[threadIdx.y][threadIdx.x] = ag;
  sb[threadIdx.y][threadIdx.x] = ab;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    double tg = 0, tb = 0;
    for (int k = 0; k < 16; ++k) {
      tg += sg[k][threadIdx.x];
      tb += sb[k][threadIdx.x];
    }
    if (dgamma) dgamma[c] = float(tg);
    if (dbeta) dbeta[c] = float(tb);
  }
}

}  // namespace

void group_norm_forward(DT dt, int64_t N, int64_t HW, int64_t C, int64_t G, const void* x,
                        const float* gamma, const float* beta, float eps, void* y, float* mean,
                        float* rstd, Stream st) {
  if (N * G <= 0) return;
  HR_DISPATCH_DT(dt, T, {
    gn_forward_kernel<T><<<unsigned(N * G), kThreads, 0, detail::stream_of(st)>>>(
        HW, C, G, static_cast<const T*>(x), gamma, beta, eps, static_cast<T*>(y), mean, rstd);
  });
  HR_CUDA_LAUNCH_CHECK();
}

void group_norm_backward(DT dt, int64_t N, int64_t HW, int64_t C, int64_t G, const void* x,
                         const void* dy, const float* gamma, const float* mean, const float* rstd,
                         void* dx, float* dgamma, float* dbeta, Stream st) {
  if (N * G <= 0) return;
  HR_DISPATCH_DT(dt, T, {
    if (dx)
      gn_backward_data_kernel<T><<<unsigned(N * G), kThreads, 0, detail::stream_of(st)>>>(
          HW, C, G, static_cast<const T*>(x), static_cast<const T*>(dy), gamma, mean, rstd,
          static_cast<T*>(dx));
    if (dgamma || dbeta)
      gn_backward_params_kernel<T><<<unsigned((C + 31) / 32), dim3(32, 16), 0,
                                     detail::stream_of(st)>>>(
          N * HW, HW, C, G, static_cast<const T*>(x), static_cast<const T*>(dy), mean, rstd,
          dgamma, dbeta);
  });
  HR_CUDA_LAUNCH_CHECK();
}

}  // namespace hr::cuda
