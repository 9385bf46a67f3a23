// CUDA optimizer steps on fp32 master weights (torch.optim SGD and Adam/AdamW, formulas as in
// kernels/cpu/optim.cpp) and the fp16 loss-scaling helper unscale_and_check (fused.h).
// Element-wise grid-stride kernels; bias corrections are computed on the host in double. The
// *_dev variants read the step-dependent scalars (lr, bias corrections, first step) from
// device memory when they run, so that captured graphs replay with the current values.
#include <cmath>

#include "kernels/cuda/check.h"
#include "kernels/cuda/fused.h"

namespace hr::cuda {
namespace {

constexpr int kThreads = 256;

// p, grad, buf [n]
__device__ __forceinline__ void sgd_update(int64_t n, float* __restrict__ p,
                                           const float* __restrict__ grad,
                                           float* __restrict__ buf, float lr, float momentum,
                                           float keep, float wd, bool nesterov, bool first_step) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float pi = p[i];
    const float g = grad[i] + wd * pi;
    if (momentum == 0.f) {
      p[i] = pi - lr * g;
      continue;
    }
    const float b = first_step ? g : momentum * buf[i] + keep * g;
    buf[i] = b;
    p[i] = pi - lr * (nesterov ? g + momentum * b : b);
  }
}

__global__ void __launch_bounds__(kThreads)
    sgd_kernel(int64_t n, float* __restrict__ p, const float* __restrict__ grad,
               float* __restrict__ buf, float lr, float momentum, float keep, float wd,
               bool nesterov, bool first_step) {
  sgd_update(n, p, grad, buf, lr, momentum, keep, wd, nesterov, first_step);
}

// hyper = {lr, first step (1) or not (0)}
__global__ void __launch_bounds__(kThreads)
    sgd_dev_kernel(int64_t n, float* __restrict__ p, const float* __restrict__ grad,
                   float* __restrict__ buf, const float* __restrict__ hyper, float momentum,
                   float keep, float wd, bool nesterov) {
  sgd_update(n, p, grad, buf, hyper[0], momentum, keep, wd, nesterov, hyper[1] != 0.f);
}

// p, grad, m, v [n]
__device__ __forceinline__ void adam_update(int64_t n, float* __restrict__ p,
                                            const float* __restrict__ grad,
                                            float* __restrict__ m, float* __restrict__ v,
                                            float beta1, float beta2, float one_b1, float one_b2,
                                            float eps, float step_size, float bc2_sqrt,
                                            float decay, float l2) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float pi = p[i] * decay;
    const float g = grad[i] + l2 * pi;
    const float mi = beta1 * m[i] + one_b1 * g;
    const float vi = beta2 * v[i] + one_b2 * g * g;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
  }
}

__global__ void __launch_bounds__(kThreads)
    adam_kernel(int64_t n, float* __restrict__ p, const float* __restrict__ grad,
                float* __restrict__ m, float* __restrict__ v, float beta1, float beta2,
                float one_b1, float one_b2, float eps, float step_size, float bc2_sqrt,
                float decay, float l2) {
  adam_update(n, p, grad, m, v, beta1, beta2, one_b1, one_b2, eps, step_size, bc2_sqrt, decay,
              l2);
}

// hyper = {lr, 1 - beta1^t, 1 - beta2^t}; the per-step scalars as adam_step derives them.
__global__ void __launch_bounds__(kThreads)
    adam_dev_kernel(int64_t n, float* __restrict__ p, const float* __restrict__ grad,
                    float* __restrict__ m, float* __restrict__ v,
                    const float* __restrict__ hyper, float beta1, float beta2, float eps,
                    float wd, bool decoupled) {
  const float lr = hyper[0];
  const float step_size = float(double(lr) / double(hyper[1]));
  const float bc2_sqrt = float(sqrt(double(hyper[2])));
  const float decay = decoupled ? float(1.0 - double(lr) * double(wd)) : 1.f;
  const float l2 = decoupled ? 0.f : wd;
  adam_update(n, p, grad, m, v, beta1, beta2, 1.f - beta1, 1.f - beta2, eps, step_size, bc2_sqrt,
              decay, l2);
}

// g [n] *= inv_scale; *found = 1 when some g was inf or NaN (every writer stores 1).
__global__ void __launch_bounds__(kThreads)
    unscale_kernel(int64_t n, float* g, float inv_scale, bool vec, int* found) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  bool bad = false;
  int64_t done = 0;
  if (vec) {
    float4* g4 = reinterpret_cast<float4*>(g);
    for (int64_t i = tid; i < n / 4; i += stride) {
      float4 v = g4[i];
      bad |= !isfinite(v.x) || !isfinite(v.y) || !isfinite(v.z) || !isfinite(v.w);
      v.x *= inv_scale;
      v.y *= inv_scale;
      v.z *= inv_scale;
      v.w *= inv_scale;
      g4[i] = v;
    }
    done = n / 4 * 4;
  }
  for (int64_t i = done + tid; i < n; i += stride) {
    const float v = g[i];
    bad |= !isfinite(v);
    g[i] = v * inv_scale;
  }
  if (bad) *found = 1;
}

}  // namespace

// p, grad, momentum_buf [n]
void sgd_step(int64_t n, float* p, const float* grad, float* momentum_buf, float lr,
              float momentum, float dampening, float weight_decay, bool nesterov, bool first_step,
              Stream st) {
  if (n <= 0) return;
  HR_CHECK(momentum == 0.f || momentum_buf, "sgd_step: momentum ", momentum,
           " needs a momentum buffer");
  sgd_kernel<<<unsigned(detail::wave_blocks(n, kThreads)), kThreads, 0, detail::stream_of(st)>>>(
      n, p, grad, momentum_buf, lr, momentum, 1.f - dampening, weight_decay, nesterov, first_step);
  HR_CUDA_LAUNCH_CHECK();
}

// p, grad, exp_avg, exp_avg_sq [n]; step >= 1
void adam_step(int64_t n, float* p, const float* grad, float* exp_avg, float* exp_avg_sq, float lr,
               float beta1, float beta2, float eps, float weight_decay, bool decoupled,
               int64_t step, Stream st) {
  if (n <= 0) return;
  HR_CHECK(step >= 1, "adam_step: step must be >= 1, got ", step);
  const double bc1 = 1.0 - std::pow(double(beta1), double(step));
  const double bc2 = 1.0 - std::pow(double(beta2), double(step));
  const float step_size = float(double(lr) / bc1);
  const float bc2_sqrt = float(std::sqrt(bc2));
  const float decay = decoupled ? float(1.0 - double(lr) * double(weight_decay)) : 1.f;
  const float l2 = decoupled ? 0.f : weight_decay;
  adam_kernel<<<unsigned(detail::wave_blocks(n, kThreads)), kThreads, 0, detail::stream_of(st)>>>(
      n, p, grad, exp_avg, exp_avg_sq, beta1, beta2, 1.f - beta1, 1.f - beta2, eps, step_size,
      bc2_sqrt, decay, l2);
  HR_CUDA_LAUNCH_CHECK();
}

// p, grad, momentum_buf [n]; hyper [2] on the device
void sgd_step_dev(int64_t n, float* p, const float* grad, float* momentum_buf, const float* hyper,
                  float momentum, float dampening, float weight_decay, bool nesterov, Stream st) {
  if (n <= 0) return;
  HR_CHECK(momentum == 0.f || momentum_buf, "sgd_step_dev: momentum ", momentum,
           " needs a momentum buffer");
  HR_CHECK(hyper, "sgd_step_dev: hyper (lr, first step) must be a device pointer");
  sgd_dev_kernel<<<unsigned(detail::wave_blocks(n, kThreads)), kThreads, 0,
                   detail::stream_of(st)>>>(n, p, grad, momentum_buf, hyper, momentum,
                                            1.f - dampening, weight_decay, nesterov);
  HR_CUDA_LAUNCH_CHECK();
}

// p, grad, exp_avg, exp_avg_sq [n]; hyper [3] on the device
void adam_step_dev(int64_t n, float* p, const float* grad, float* exp_avg, float* exp_avg_sq,
                   const float* hyper, float beta1, float beta2, float eps, float weight_decay,
                   bool decoupled, Stream st) {
  if (n <= 0) return;
  HR_CHECK(hyper, "adam_step_dev: hyper (lr, bias corrections) must be a device pointer");
  adam_dev_kernel<<<unsigned(detail::wave_blocks(n, kThreads)), kThreads, 0,
                    detail::stream_of(st)>>>(n, p, grad, exp_avg, exp_avg_sq, hyper, beta1, beta2,
                                             eps, weight_decay, decoupled);
  HR_CUDA_LAUNCH_CHECK();
}

// grads [n]
bool unscale_and_check(int64_t n, float* grads, float inv_scale, Stream st) {
  if (n <= 0) return false;
  const cudaStream_t cs = detail::stream_of(st);
  detail::Workspace flag(sizeof(int), st);
  CUDA_CHECK(cudaMemsetAsync(flag.get(), 0, sizeof(int), cs));
  const bool vec = detail::aligned(16, {grads});
  unscale_kernel<<<unsigned(detail::wave_blocks(vec ? (n + 3) / 4 : n, kThreads)), kThreads, 0, cs>>>(
      n, grads, inv_scale, vec, flag.as<int>());
  HR_CUDA_LAUNCH_CHECK();
  int found = 0;
  memcpy_d2h(&found, flag.get(), sizeof(int), st);
  return found != 0;
}

}  // namespace hr::cuda
