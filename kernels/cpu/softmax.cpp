// CPU softmax over one dimension of a tensor viewed as [outer, L, inner] (element (o, j, i) at
// (o*L + j)*inner + i): max-subtracted exponentials, their sum in double. One row (inner = 1) or
// one strided column per OpenMP iteration; the result does not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cpu/cpu_kernels.h"

namespace hr::cpu {

void softmax_forward(int64_t outer, int64_t L, int64_t inner, const float* x, float* y) {
  const int64_t lines = outer * inner;
#pragma omp parallel for schedule(static) if (lines * L > (1 << 14))
  for (int64_t r = 0; r < lines; ++r) {
    const int64_t o = r / inner, i = r % inner;
    const float* xr = x + o * L * inner + i;
    float* yr = y + o * L * inner + i;
    float m = -INFINITY;
    for (int64_t j = 0; j < L; ++j) m = std::max(m, xr[j * inner]);
    double s = 0;
    for (int64_t j = 0; j < L; ++j) {
      const float e = std::exp(xr[j * inner] - m);
      yr[j * inner] = e;
      s += e;
    }
    const float inv = static_cast<float>(1.0 / s);
    for (int64_t j = 0; j < L; ++j) yr[j * inner] *= inv;
  }
}

// dx = y * (dy - sum_j dy_j y_j)
void softmax_backward(int64_t outer, int64_t L, int64_t inner, const float* y, const float* dy,
                      float* dx) {
  const int64_t lines = outer * inner;
#pragma omp parallel for schedule(static) if (lines * L > (1 << 14))
  for (int64_t r = 0; r < lines; ++r) {
    const int64_t off = (r / inner) * L * inner + r % inner;
    double s = 0;
    for (int64_t j = 0; j < L; ++j) s += double(dy[off + j * inner]) * y[off + j * inner];
    const float sf = static_cast<float>(s);
    for (int64_t j = 0; j < L; ++j) {
      const int64_t k = off + j * inner;
      dx[k] = y[k] * (dy[k] - sf);
    }
  }
}

}  // namespace hr::cpu
