// CPU channel dropout (Dropout2d): the mask from the counter-based generator of
// kernels/dropout_hash.h, and the per-channel scaling that applies it (forward and backward).
#include <cstdint>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/dropout_hash.h"

namespace hr::cpu {

void dropout2d_mask(int64_t* state, int64_t N, int64_t C, float p, float scale, float* mask) {
  const uint64_t seed = static_cast<uint64_t>(state[0]), step = static_cast<uint64_t>(state[1]);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      mask[n * C + c] = kern::dropout_keep(seed, step, uint64_t(n), uint64_t(c), p, scale);
  state[1] += 1;
}

void channel_scale(int64_t N, int64_t C, int64_t HW, const float* x, const float* s, float* y) {
#pragma omp parallel for schedule(static) if (N * C * HW > (1 << 15))
  for (int64_t nc = 0; nc < N * C; ++nc) {
    const float k = s[nc];
    const float* xp = x + nc * HW;
    float* yp = y + nc * HW;
    for (int64_t i = 0; i < HW; ++i) yp[i] = xp[i] * k;
  }
}

}  // namespace hr::cpu
