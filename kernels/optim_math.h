// The optimizers' per-element updates (torch.optim SGD; Adam and decoupled AdamW) and the
// per-step scalars they use, shared by the CPU (kernels/cpu/optim.cpp) and CUDA
// (kernels/cuda/optim.cu) kernels so that both devices evaluate the same expressions.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/host_device.h"

namespace hr::kern {

// SGD without momentum: p -= lr * (g + wd * p).
HR_HOST_DEVICE void sgd_update(float& p, float g, float lr, float wd) { p = p - lr * (g + wd * p); }

// SGD with momentum: g += wd * p; buf = momentum * buf + keep * g (buf = g on the first step,
// keep = 1 - dampening); p -= lr * (nesterov ? g + momentum * buf : buf).
HR_HOST_DEVICE void sgd_momentum_update(float& p, float g, float& buf, float lr, float wd,
                                        float momentum, float keep, bool nesterov,
                                        bool first_step) {
  const float gi = g + wd * p;
  const float b = first_step ? gi : momentum * buf + keep * gi;
  buf = b;
  p = p - lr * (nesterov ? gi + momentum * b : b);
}

// Adam's bias corrections for step t (1-based): bc1 = 1 - beta1^t, bc2 = 1 - beta2^t, in double
// from the float betas the kernels use (the host's side of every Adam step, CPU and CUDA).
inline void adam_bias_corrections(float beta1, float beta2, int64_t step, double* bc1,
                                  double* bc2) {
  *bc1 = 1.0 - std::pow(double(beta1), double(step));
  *bc2 = 1.0 - std::pow(double(beta2), double(step));
}

// Adam's scalars for one step from the bias corrections, weight decay as an L2 term of the
// gradient (Adam) or a decay of the weight (AdamW).
struct AdamScalars {
  float beta1, beta2, one_b1, one_b2, eps;
  float step_size;  // lr / bc1
  float bc2_sqrt;   // sqrt(bc2)
  float decay;      // AdamW: 1 - lr * wd; Adam: 1
  float l2;         // Adam: wd; AdamW: 0
};
HR_HOST_DEVICE AdamScalars adam_scalars(float lr, float wd, float beta1, float beta2, float eps,
                                        bool decoupled, double bc1, double bc2) {
  AdamScalars s;
  s.beta1 = beta1;
  s.beta2 = beta2;
  s.one_b1 = 1.f - beta1;
  s.one_b2 = 1.f - beta2;
  s.eps = eps;
  s.step_size = float(double(lr) / bc1);
  s.bc2_sqrt = float(sqrt(bc2));
  s.decay = decoupled ? float(1.0 - double(lr) * double(wd)) : 1.f;
  s.l2 = decoupled ? 0.f : wd;
  return s;
}

// m = beta1 m + (1 - beta1) g, v = beta2 v + (1 - beta2) g^2 (g with the L2 term);
// p = p * decay - step_size * m / (sqrt(v) / sqrt(bc2) + eps).
HR_HOST_DEVICE void adam_update(float& p, float g, float& m, float& v, const AdamScalars& s) {
  const float pi = p * s.decay;
  const float gi = g + s.l2 * pi;
  const float mi = s.beta1 * m + s.one_b1 * gi;
  const float vi = s.beta2 * v + s.one_b2 * gi * gi;
  m = mi;
  v = vi;
  p = pi - s.step_size * mi / (sqrtf(vi) / s.bc2_sqrt + s.eps);
}

}  // namespace hr::kern
