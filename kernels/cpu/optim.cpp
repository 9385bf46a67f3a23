// CPU optimizer steps with torch.optim semantics (SGD with momentum/dampening/nesterov/weight
// decay; Adam and decoupled AdamW) on a model's fp32 parameter tensors; OpenMP element-wise.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"

namespace hr::cpu {
namespace {
constexpr int64_t kParallelMin = int64_t(1) << 15, kChunk = int64_t(1) << 14;

// fn(span, i0, i1) over chunks of kChunk floats of every span, in one parallel loop.
template <class Fn>
void over_chunks(const OptimSpan* spans, int64_t count, Fn&& fn) {
  std::vector<std::pair<int64_t, int64_t>> chunks;  // (span, first element)
  int64_t total = 0;
  for (int64_t s = 0; s < count; ++s) {
    for (int64_t i = 0; i < spans[s].n; i += kChunk) chunks.emplace_back(s, i);
    total += spans[s].n;
  }
  const int64_t nc = static_cast<int64_t>(chunks.size());
#pragma omp parallel for schedule(static) if (total >= kParallelMin)
  for (int64_t c = 0; c < nc; ++c) {
    const OptimSpan& sp = spans[chunks[c].first];
    const int64_t i0 = chunks[c].second;
    fn(sp, i0, std::min(sp.n, i0 + kChunk));
  }
}
}  // namespace

void sgd_step(const OptimSpan* spans, int64_t count, float momentum, float dampening,
              bool nesterov) {
  const float keep = 1.f - dampening;
  over_chunks(spans, count, [&](const OptimSpan& s, int64_t i0, int64_t i1) {
    float* __restrict p = s.p;
    const float* __restrict grad = s.grad;
    const float lr = s.lr, weight_decay = s.weight_decay;
    if (momentum == 0.f) {
#pragma omp simd
      for (int64_t i = i0; i < i1; ++i) p[i] -= lr * (grad[i] + weight_decay * p[i]);
      return;
    }
    float* __restrict momentum_buf = s.buf0;
    const bool first_step = s.first_step;
#pragma omp simd
    for (int64_t i = i0; i < i1; ++i) {
      const float g = grad[i] + weight_decay * p[i];
      const float buf = first_step ? g : momentum * momentum_buf[i] + keep * g;
      momentum_buf[i] = buf;
      p[i] -= lr * (nesterov ? g + momentum * buf : buf);
    }
  });
}

void adam_step(const OptimSpan* spans, int64_t count, float beta1, float beta2, float eps,
               bool decoupled, int64_t step) {
  const double bc1 = 1.0 - std::pow(double(beta1), double(step));
  const double bc2 = 1.0 - std::pow(double(beta2), double(step));
  const float bc2_sqrt = float(std::sqrt(bc2));
  const float one_b1 = 1.f - beta1, one_b2 = 1.f - beta2;
  over_chunks(spans, count, [&](const OptimSpan& s, int64_t i0, int64_t i1) {
    const float step_size = float(double(s.lr) / bc1);
    const float decay = decoupled ? float(1.0 - double(s.lr) * double(s.weight_decay)) : 1.f;
    const float l2 = decoupled ? 0.f : s.weight_decay;
    float* __restrict p = s.p;
    const float* __restrict grad = s.grad;
    float* __restrict exp_avg = s.buf0;
    float* __restrict exp_avg_sq = s.buf1;
#pragma omp simd
    for (int64_t i = i0; i < i1; ++i) {
      const float pi = p[i] * decay;
      const float g = grad[i] + l2 * pi;
      const float m = beta1 * exp_avg[i] + one_b1 * g;
      const float v = beta2 * exp_avg_sq[i] + one_b2 * g * g;
      exp_avg[i] = m;
      exp_avg_sq[i] = v;
      p[i] = pi - step_size * m / (std::sqrt(v) / bc2_sqrt + eps);
    }
  });
}

}  // namespace hr::cpu
