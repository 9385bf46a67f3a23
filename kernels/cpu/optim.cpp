// CPU optimizer steps with torch.optim semantics (SGD with momentum/dampening/nesterov/weight
// decay; Adam and decoupled AdamW) on one fp32 parameter tensor; OpenMP element-wise.
#include <cmath>
#include <cstdint>

#include "kernels/cpu/cpu_kernels.h"

namespace hr::cpu {
namespace {
constexpr int64_t kParallelMin = int64_t(1) << 15;
}  // namespace

// p, grad, momentum_buf [n]
void sgd_step(int64_t n, float* p, const float* grad, float* momentum_buf, float lr,
              float momentum, float dampening, float weight_decay, bool nesterov, bool first_step) {
  if (momentum == 0.f) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) p[i] -= lr * (grad[i] + weight_decay * p[i]);
    return;
  }
  const float keep = 1.f - dampening;
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] + weight_decay * p[i];
    const float buf = first_step ? g : momentum * momentum_buf[i] + keep * g;
    momentum_buf[i] = buf;
    p[i] -= lr * (nesterov ? g + momentum * buf : buf);
  }
}

// p, grad, exp_avg, exp_avg_sq [n]; step >= 1
void adam_step(int64_t n, float* p, const float* grad, float* exp_avg, float* exp_avg_sq, float lr,
               float beta1, float beta2, float eps, float weight_decay, bool decoupled,
               int64_t step) {
  const double bc1 = 1.0 - std::pow(double(beta1), double(step));
  const double bc2 = 1.0 - std::pow(double(beta2), double(step));
  const float step_size = float(double(lr) / bc1);
  const float bc2_sqrt = float(std::sqrt(bc2));
  const float decay = decoupled ? float(1.0 - double(lr) * double(weight_decay)) : 1.f;
  const float l2 = decoupled ? 0.f : weight_decay;
  const float one_b1 = 1.f - beta1, one_b2 = 1.f - beta2;
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float pi = p[i] * decay;
    const float g = grad[i] + l2 * pi;
    const float m = beta1 * exp_avg[i] + one_b1 * g;
    const float v = beta2 * exp_avg_sq[i] + one_b2 * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    p[i] = pi - step_size * m / (std::sqrt(v) / bc2_sqrt + eps);
  }
}

}  // namespace hr::cpu
