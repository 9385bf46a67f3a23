// CPU fp32 <-> bf16 / fp16 conversion in integer arithmetic (no F16C needed): round to nearest
// even, NaN stays NaN (quieted, sign and top payload bits kept), fp16 subnormals, values past
// the largest finite number round to infinity. And bytes through a table to planar floats.
#include <cstdint>
#include <cstring>

#include "kernels/cpu/cpu_kernels.h"

namespace hr::cpu {
namespace {

constexpr int64_t kParallelMin = int64_t(1) << 16;

inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t to_bf16(float f) {
  const uint32_t u = bits_of(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((u >> 16) | 0x0040u);
  return uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

inline uint16_t to_f16(float f) {
  const uint32_t u = bits_of(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return uint16_t(sign | 0x7E00u | ((a >> 13) & 0x3FFu));  // NaN
  if (a >= 0x477FF000u) return uint16_t(sign | 0x7C00u);  // >= 65520 rounds to inf
  if (a >= 0x38800000u) {                                 // normal: rebias 127 -> 15, round
    return uint16_t(sign | ((a - 0x38000000u + 0xFFFu + ((a >> 13) & 1u)) >> 13));
  }
  // Subnormal half (units of 2^-24): round the 24-bit significand shifted right by 126 - e.
  const uint32_t e = a >> 23;
  const uint32_t shift = 126u - e;
  if (shift > 24u) return uint16_t(sign);
  const uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
  const uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
  return uint16_t(sign | (q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u)));
}

inline float from_f16(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  if (e == 0x1F) return float_of(sign | 0x7F800000u | (m << 13));
  if (e == 0) {
    const float v = float(m) * 5.9604644775390625e-8f;  // m * 2^-24, exact
    return float_of(sign | bits_of(v));
  }
  return float_of(sign | ((e + 112u) << 23) | (m << 13));
}

}  // namespace

// x [n] -> y [n]
void f32_to_bf16(int64_t n, const float* x, uint16_t* y) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = to_bf16(x[i]);
}

void bf16_to_f32(int64_t n, const uint16_t* x, float* y) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = float_of(uint32_t(x[i]) << 16);
}

void f32_to_f16(int64_t n, const float* x, uint16_t* y) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = to_f16(x[i]);
}

void f16_to_f32(int64_t n, const uint16_t* x, float* y) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = from_f16(x[i]);
}

void lut_u8_planar(int64_t N, int64_t H, int64_t W, int64_t C, const uint8_t* x,
                   const float* lut, const int64_t* size, float* y) {
  const int64_t HW = H * W;
  // threads over the samples only: one image (the loaders' worker threads call it per sample)
  // starts no OpenMP team
#pragma omp parallel for schedule(static) if (N > 1 && N * HW * C >= kParallelMin)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const uint8_t* xs = x + n * HW * C + c;
      const float* t = lut + c * 256;
      float* yc = y + (n * C + c) * HW;
      if (!size) {
        for (int64_t p = 0; p < HW; ++p) yc[p] = t[xs[p * C]];
        continue;
      }
      const int64_t vh = size[2 * n], vw = size[2 * n + 1];
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) {
          const int64_t p = h * W + w;
          yc[p] = h < vh && w < vw ? t[xs[p * C]] : 0.f;
        }
    }
}

}  // namespace hr::cpu
