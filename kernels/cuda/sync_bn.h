// Synchronised batch norm on CUDA (SyncBatchNorm of a data-parallel job): the training batch
// norm of kernels/cuda/fused.h cut into phases around the all-reduce of its per-channel sums
// (double, summed over the ranks by NCCL in engine/ops/batch_norm.cpp; with one rank nothing
// is exchanged). x, y, dy, dx, residual, dresidual: [M, C] rows (NHWC) of dt; gamma, beta,
// statistics: f32 [C]. Sums are deterministic (fixed-order partial sums, no atomics).
// The same arithmetic as cpu::batchnorm_act_train_forward_sync / _backward_sync: two-pass
// statistics (the sums, then the squared deviations from the global mean), dgamma and dbeta
// this rank's own, dx from the reduced sums.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/cuda/cuda_kernels.h"

namespace hr::cuda {

// Bytes of device workspace the phases below need for C channels (one buffer for all).
size_t syncbn_workspace_bytes(int64_t M, int64_t C);
// Forward, phase 1: sums[0..C) = per-channel sum of x, sums[C] = M (double, in the workspace).
// Returns the pointer to sums (C + 1 doubles), to be all-reduced.
double* syncbn_forward_sums(DT dt, int64_t M, int64_t C, const void* x, void* workspace, Stream s);
// Forward, phase 2: sq[0..C) = per-channel sum of (x - mean)^2 with mean = sums[c] / sums[C] (the
// reduced sums). Returns sq (C doubles), to be all-reduced.
double* syncbn_forward_sq(DT dt, int64_t M, int64_t C, const void* x, void* workspace, Stream s);
// Forward, phase 3: from the reduced sums and sq: save_mean, save_invstd, the running statistics
// updated (momentum, unbiased variance), y = act(BN(x) + residual).
void syncbn_forward_apply(DT dt, int64_t M, int64_t C, const void* x, const float* gamma,
                          const float* beta, float eps, float momentum, float* running_mean,
                          float* running_var, const void* residual, bool relu, void* y,
                          float* save_mean, float* save_invstd, void* workspace, Stream s);
// Backward, phase 1: g = relu ? (y > 0 ? dy : 0) : dy (written to dresidual when given); this
// rank's dgamma = sum(g * xhat), dbeta = sum(g) (each may be nullptr); returns the sums
// [sum g (C), sum g * (x - mean) (C), M] (2C + 1 doubles), to be all-reduced.
double* syncbn_backward_sums(DT dt, int64_t M, int64_t C, const void* x, const void* y,
                             const void* dy, const float* save_mean, const float* save_invstd,
                             bool relu, void* dresidual, float* dgamma, float* dbeta,
                             void* workspace, Stream s);
// Backward, phase 2: dx = gamma * invstd * (g - sum_g / n - (x - mean) * invstd^2 * sum_gxc / n)
// with the reduced sums.
void syncbn_backward_dx(DT dt, int64_t M, int64_t C, const void* x, const void* y, const void* dy,
                        const float* gamma, const float* save_mean, const float* save_invstd,
                        bool relu, void* dx, void* workspace, Stream s);

}  // namespace hr::cuda
