// Inline AVX-512 helpers shared by the files compiled for AVX-512 (kernels/cpu/conv2d.cpp's
// AVX-512 build and kernels/cpu/gemm_bf16.cpp). Internal linkage (an unnamed namespace): each
// object keeps its own copies, as kernels/cpu/isa.h asks of code built per instruction set.
#pragma once
#if !defined(__AVX512F__)
#error "kernels/cpu/avx512_util.h is for files compiled for AVX-512"
#endif
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/isa.h"  // HR_ISA_NS

namespace hr::cpu::HR_ISA_NS {
namespace {

// Lanes [0, n) of a vector of 16 (n <= 0: none, n >= 16: all).
inline __mmask16 lanes16(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// Permutations of two vectors' 32 floats z (z[0..15] = a, z[16..31] = b), for
// _mm512_permutex2var_ps: the even and the odd ones (z[2j], z[2j + 1]), and a interleaved with b
// (lo: a[0], b[0], .., a[7], b[7]; hi: a[8], b[8], .., a[15], b[15]).
inline __m512i even_index() {
  return _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
}
inline __m512i odd_index() {
  return _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}
inline __m512i interleave_lo_index() {
  return _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
}
inline __m512i interleave_hi_index() {
  return _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
}
// even / odd = the even / odd of z; lo / hi = a and b interleaved (the inverse).
inline void deinterleave(__m512 a, __m512 b, __m512& even, __m512& odd) {
  even = _mm512_permutex2var_ps(a, even_index(), b);
  odd = _mm512_permutex2var_ps(a, odd_index(), b);
}
inline void interleave(__m512 a, __m512 b, __m512& lo, __m512& hi) {
  lo = _mm512_permutex2var_ps(a, interleave_lo_index(), b);
  hi = _mm512_permutex2var_ps(a, interleave_hi_index(), b);
}

// The sums of the 16 lanes of a, b, c, d as [sa, sb, sc, sd]: pairs within 128-bit lanes, then
// the four 128-bit lanes. Each sum's order depends only on its own vector.
inline __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  const __m512 s = _mm512_add_ps(
      _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))),
      _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(ab), _mm512_castps_pd(cd))));
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps(s, 1));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// The dot-product kernels' output block (gemm_bf16_nt, gemm_nt_accumulate in conv2d.cpp): up to
// kDotM x kDotN outputs, each a vector of 16 partial sums over the summed elements.
constexpr int kDotM = 4, kDotN = 6;

// One row of such a block: its NB (<= kDotN) outputs' sums (reduce4: the same order for every
// output) added to c[0..NB), or stored there.
template <int NB>
inline void store_dot_row(const __m512 (&s)[kDotN], float* c, bool accumulate) {
  alignas(16) float r[8];
  _mm_store_ps(r, reduce4(s[0], s[1], s[2], s[3]));
  _mm_store_ps(r + 4, reduce4(s[4], s[5], s[5], s[5]));
  for (int j = 0; j < NB; ++j) c[j] = accumulate ? c[j] + r[j] : r[j];
}

}  // namespace
}  // namespace hr::cpu::HR_ISA_NS
