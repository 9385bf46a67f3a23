// CPU element-wise kernels: relu forward/backward, add, axpy, scale, fill (fp32, OpenMP).
#include <cstdint>

#include "kernels/cpu/cpu_kernels.h"

namespace hr::cpu {
namespace {
// Below this many elements a loop runs on one thread.
constexpr int64_t kParallelMin = int64_t(1) << 15;
}  // namespace

// x [n] -> y [n]
void relu_forward(int64_t n, const float* x, float* y) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] < 0.f ? 0.f : x[i];  // NaN propagates, as torch.relu
}

// y, dy [n] -> dx [n]
void relu_backward(int64_t n, const float* y, const float* dy, float* dx) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) dx[i] = y[i] <= 0.f ? 0.f : dy[i];
}

// a, b [n] -> y [n]
void add(int64_t n, const float* a, const float* b, float* y) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

// x [n], y [n] in place
void axpy(int64_t n, float alpha, const float* x, float* y) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// x [n] -> y [n]
void scale(int64_t n, float alpha, const float* x, float* y) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = alpha * x[i];
}

// y [n]
void fill(int64_t n, float value, float* y) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = value;
}

}  // namespace hr::cpu
