// Fused CUDA kernels for HRNet's hot pattern BN -> (+ residual) -> ReLU over NHWC rows
// (x viewed as [M = N*H*W, C]), and the fp16 loss-scaling check. Like cuda_kernels.h this
// header needs no CUDA headers; a CPU-only build links throwing stubs. Storage dtype `dt`,
// fp32 arithmetic, fp32 statistics and parameters; every output is overwritten.
#pragma once
#include <cstdint>

#include "kernels/cuda/cuda_kernels.h"

namespace hr::cuda {

// y = act(BN_train(x) + residual), act = ReLU when relu, else identity; residual may be nullptr.
// Statistics, running stats and save_mean/save_invstd exactly as batchnorm_train_forward.
// Unfused fallback: batchnorm_train_forward; add(y, residual); relu_forward.
// x, residual, y [M,C]; gamma, beta, running_mean, running_var, save_mean, save_invstd [C]
void batchnorm_act_train_forward(DT dt, int64_t M, int64_t C, const void* x, const float* gamma,
                                 const float* beta, float eps, float momentum,
                                 float* running_mean, float* running_var, const void* residual,
                                 bool relu, void* y, float* save_mean, float* save_invstd,
                                 Stream st);

// Backward of batchnorm_act_train_forward. The ReLU mask comes from the forward output y
// (y may be nullptr when !relu); g = relu ? (y > 0 ? dy : 0) : dy; dresidual = g (skipped
// when nullptr); dx, dgamma, dbeta are batchnorm_train_backward of g (each may be nullptr).
// Unfused fallback: relu_backward(y, dy) -> g; copy g to dresidual; batchnorm_train_backward.
// x, y, dy, dx, dresidual [M,C]; gamma, save_mean, save_invstd, dgamma, dbeta [C]
void batchnorm_act_train_backward(DT dt, int64_t M, int64_t C, const void* x, const void* y,
                                  const void* dy, const float* gamma, const float* save_mean,
                                  const float* save_invstd, bool relu, void* dx, void* dresidual,
                                  float* dgamma, float* dbeta, Stream st);

// y = act(BN_infer(x) + residual) with running statistics; residual may be nullptr.
// Unfused fallback: batchnorm_infer_forward; add(y, residual); relu_forward.
// x, residual, y [M,C]; gamma, beta, running_mean, running_var [C]
void batchnorm_act_infer_forward(DT dt, int64_t M, int64_t C, const void* x, const float* gamma,
                                 const float* beta, const float* running_mean,
                                 const float* running_var, float eps, const void* residual,
                                 bool relu, void* y, Stream st);

// Test hook for the training paths of batchnorm_act_train_forward / _backward: at most
// reg_rows / smem_rows rows per thread stay in registers / shared memory between the
// single kernel's statistics and apply passes (-1: as many as fit; the others are read again
// from memory); path: 0 the single cooperative kernel on a full wave of blocks, 1 on a quarter
// of it, 2 the three-launch path, -1 the fastest per call shape (timed on its first call: the
// default). Process-wide; (-1, -1, -1) restores the default.
void batchnorm_test_config(int reg_rows, int smem_rows, int path);

// Mixed-precision loss scaling: grads *= inv_scale in place; returns true when any gradient
// (before scaling) is inf or NaN. Synchronous (waits for st).
// grads [n] fp32
bool unscale_and_check(int64_t n, float* grads, float inv_scale, Stream st);

}  // namespace hr::cuda
