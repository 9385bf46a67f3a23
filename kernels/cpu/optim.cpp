// CPU optimizer steps with torch.optim semantics (SGD with momentum/dampening/nesterov/weight
// decay; Adam and decoupled AdamW) on a model's fp32 parameter tensors; OpenMP element-wise, the
// per-element updates those of kernels/optim_math.h (shared with the CUDA kernels).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/optim_math.h"

namespace hr::cpu {
namespace {
constexpr int64_t kParallelMin = int64_t(1) << 15, kChunk = int64_t(1) << 14;

// fn(span, i0, i1) over chunks of kChunk floats of every span, in one parallel loop; then the
// chunk's 16-bit copy, for the spans that have one.
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
    const int64_t i1 = std::min(sp.n, i0 + kChunk);
    fn(sp, i0, i1);
    if (sp.copy) {  // the chunk's 16-bit copy, while its updated values are in cache
      if (sp.copy_f16)
        f32_to_f16(i1 - i0, sp.p + i0, sp.copy + i0);
      else
        f32_to_bf16(i1 - i0, sp.p + i0, sp.copy + i0);
    }
  }
}
}  // namespace

void sgd_step(const OptimSpan* spans, int64_t count, float momentum, float dampening,
              bool nesterov) {
  const float keep = 1.f - dampening;
  over_chunks(spans, count, [&](const OptimSpan& s, int64_t i0, int64_t i1) {
    float* __restrict p = s.p;
    const float* __restrict grad = s.grad;
    const float lr = s.lr, wd = s.weight_decay;
    if (momentum == 0.f) {
#pragma omp simd
      for (int64_t i = i0; i < i1; ++i) kern::sgd_update(p[i], grad[i], lr, wd);
      return;
    }
    float* __restrict buf = s.buf0;
    const bool first_step = s.first_step;
#pragma omp simd
    for (int64_t i = i0; i < i1; ++i)
      kern::sgd_momentum_update(p[i], grad[i], buf[i], lr, wd, momentum, keep, nesterov,
                                first_step);
  });
}

void adam_step(const OptimSpan* spans, int64_t count, float beta1, float beta2, float eps,
               bool decoupled, int64_t step) {
  double bc1, bc2;
  kern::adam_bias_corrections(beta1, beta2, step, &bc1, &bc2);
  over_chunks(spans, count, [&](const OptimSpan& s, int64_t i0, int64_t i1) {
    const kern::AdamScalars a =
        kern::adam_scalars(s.lr, s.weight_decay, beta1, beta2, eps, decoupled, bc1, bc2);
    float* __restrict p = s.p;
    const float* __restrict grad = s.grad;
    float* __restrict m = s.buf0;
    float* __restrict v = s.buf1;
#pragma omp simd
    for (int64_t i = i0; i < i1; ++i) kern::adam_update(p[i], grad[i], m[i], v[i], a);
  });
}

}  // namespace hr::cpu
