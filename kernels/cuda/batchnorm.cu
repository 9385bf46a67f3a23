// Unfused CUDA batch-norm entry points of cuda_kernels.h. Each is the fused kernel of
// fused_bn.cu with no residual and no activation (batchnorm_infer_backward lives there too, as
// it is built from the same kernels); the fused-vs-unfused test still compares the two paths
// through the residual / ReLU logic.
#include "kernels/cuda/check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/fused.h"

namespace hr::cuda {

namespace {

// One block per output channel k: the scale in double as cpu::fold_batch_norm, then w[k, :].
template <class T>
__global__ void fold_bn_kernel(int64_t inner, const T* w, const float* b, const float* gamma,
                               const float* beta, const float* mean, const float* var, float eps,
                               T* w_out, float* b_out) {
  const int64_t k = blockIdx.x;
  const float s = float(1.0 / sqrt(double(var[k]) + double(eps)) * gamma[k]);
  for (int64_t i = threadIdx.x; i < inner; i += blockDim.x)
    w_out[k * inner + i] = detail::from_f<T>(detail::to_f(w[k * inner + i]) * s);
  if (threadIdx.x == 0) b_out[k] = ((b ? b[k] : 0.f) - mean[k]) * s + beta[k];
}

}  // namespace

void fold_batch_norm(DT dt, int64_t K, int64_t inner, const void* w, const float* b,
                     const float* gamma, const float* beta, const float* running_mean,
                     const float* running_var, float eps, void* w_out, float* b_out, Stream st) {
  if (K <= 0) return;
  HR_DISPATCH_DT(dt, T, {
    fold_bn_kernel<T><<<unsigned(K), 128, 0, detail::stream_of(st)>>>(
        inner, static_cast<const T*>(w), b, gamma, beta, running_mean, running_var, eps,
        static_cast<T*>(w_out), b_out);
  });
  HR_CUDA_LAUNCH_CHECK();
}

// x, y [M,C]; gamma, beta, running stats, save_mean, save_invstd [C]
void batchnorm_train_forward(DT dt, int64_t M, int64_t C, const void* x, const float* gamma,
                             const float* beta, float eps, float momentum, float* running_mean,
                             float* running_var, void* y, float* save_mean, float* save_invstd,
                             Stream st) {
  batchnorm_act_train_forward(dt, M, C, x, gamma, beta, eps, momentum, running_mean, running_var,
                              nullptr, false, y, save_mean, save_invstd, st);
}

// x, y [M,C]
void batchnorm_infer_forward(DT dt, int64_t M, int64_t C, const void* x, const float* gamma,
                             const float* beta, const float* running_mean,
                             const float* running_var, float eps, void* y, Stream st) {
  batchnorm_act_infer_forward(dt, M, C, x, gamma, beta, running_mean, running_var, eps, nullptr,
                              false, y, st);
}

// x, dy, dx [M,C]; dgamma, dbeta [C]
void batchnorm_train_backward(DT dt, int64_t M, int64_t C, const void* x, const void* dy,
                              const float* gamma, const float* save_mean, const float* save_invstd,
                              void* dx, float* dgamma, float* dbeta, Stream st) {
  batchnorm_act_train_backward(dt, M, C, x, nullptr, dy, gamma, save_mean, save_invstd, false, dx,
                               nullptr, dgamma, dbeta, st);
}

}  // namespace hr::cuda
