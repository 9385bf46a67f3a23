// Host-side helpers shared by the gpu tests: dtype encoding of float vectors as the device
// stores them (f32, f16, bf16), rounding to a dtype, and NCHW <-> NHWC reordering.
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"

namespace hr::test {

using Vec = std::vector<float>;

inline const char* dt_name(cuda::DT dt) {
  return dt == cuda::DT::f32 ? "f32" : dt == cuda::DT::f16 ? "f16" : "bf16";
}
inline size_t esize(cuda::DT dt) { return dt == cuda::DT::f32 ? 4 : 2; }

// v as the bytes the device holds in dt
inline std::vector<unsigned char> encode(const Vec& v, cuda::DT dt) {
  std::vector<unsigned char> out(v.size() * esize(dt));
  if (v.empty()) return out;
  if (dt == cuda::DT::f32) {
    std::memcpy(out.data(), v.data(), out.size());
    return out;
  }
  std::vector<uint16_t> h(v.size());
  if (dt == cuda::DT::f16)
    cpu::f32_to_f16(int64_t(v.size()), v.data(), h.data());
  else
    cpu::f32_to_bf16(int64_t(v.size()), v.data(), h.data());
  std::memcpy(out.data(), h.data(), out.size());
  return out;
}

inline Vec decode(const unsigned char* bytes, size_t n, cuda::DT dt) {
  Vec v(n);
  if (n == 0) return v;
  if (dt == cuda::DT::f32) {
    std::memcpy(v.data(), bytes, n * 4);
    return v;
  }
  std::vector<uint16_t> h(n);
  std::memcpy(h.data(), bytes, n * 2);
  if (dt == cuda::DT::f16)
    cpu::f16_to_f32(int64_t(n), h.data(), v.data());
  else
    cpu::bf16_to_f32(int64_t(n), h.data(), v.data());
  return v;
}

// v rounded to dt (what the device stores)
inline Vec quant(const Vec& v, cuda::DT dt) {
  if (dt == cuda::DT::f32) return v;
  const auto b = encode(v, dt);
  return decode(b.data(), v.size(), dt);
}

// [N, C, HW] -> [N, HW, C]
inline Vec to_nhwc(const Vec& x, int64_t N, int64_t C, int64_t HW) {
  Vec y(x.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) y[(n * HW + i) * C + c] = x[(n * C + c) * HW + i];
  return y;
}
// [N, HW, C] -> [N, C, HW]
inline Vec to_nchw(const Vec& x, int64_t N, int64_t C, int64_t HW) {
  Vec y(x.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) y[(n * C + c) * HW + i] = x[(n * HW + i) * C + c];
  return y;
}

}  // namespace hr::test
