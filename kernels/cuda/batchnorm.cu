// Unfused CUDA batch-norm entry points of cuda_kernels.h. Each is the fused kernel of
// fused_bn.cu with no residual and no activation (batchnorm_infer_backward lives there too, as
// it is built from the same kernels); the fused-vs-unfused test still compares the two paths
// through the residual / ReLU logic.
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/fused.h"

namespace hr::cuda {

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
