// bf16 GEMMs with fp32 accumulation (kernels/cpu/gemm_bf16.h): VDPBF16PS adds the two products of
// a pair of bf16 lanes to one fp32 lane, so operands are laid out in pairs along the summed
// dimension. Conversions round to nearest even with VCVTNE2PS2BF16 (which, as VDPBF16PS, treats
// denormal inputs as zero).
//  * gemm_bf16_nt (the weight gradient): both operands bf16 with the summed dimension contiguous;
//    blocks of 4 x 6 outputs, each a vector of 16 fp32 partial sums over 32 summed elements a
//    step, reduced at the end (reduce4: the same order for every output).
//  * gemm_bf16_nn (the data gradient, Winograd's products): A packed in blocks of 8 rows, pairs
//    of one summed index as 32-bit words; B packed per panel of 48 columns, the pairs of two
//    consecutive rows interleaved (word j of a row pair = (B[2i][j], B[2i+1][j])); blocks of
//    8 x 48 outputs in 24 accumulators, one broadcast word of A against three vectors of B.
// Compiled only in the AVX-512 build (namespace hr::cpu::avx512) with -mavx512bf16: its own
// file-local helpers, no std containers (kernels/cpu/isa.h).
#include "kernels/cpu/gemm_bf16.h"

#include "kernels/cpu/avx512_util.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>

namespace hr::cpu::avx512 {
namespace {

constexpr int kMR = 8;      // rows of A per packed block (gemm_bf16_nn)
constexpr int kPanel = 48;  // columns of B per packed panel

inline __mmask32 lanes32(int64_t n) {
  return n >= 32 ? __mmask32(0xFFFFFFFFu) : n <= 0 ? __mmask32(0) : __mmask32((1u << n) - 1);
}

// 32 floats (n valid from p, zeros past them) as 32 bf16 in order.
inline __m512i bf16x32(const float* p, int64_t n) {
  const __m512 lo = _mm512_maskz_loadu_ps(lanes16(n), p);
  const __m512 hi = _mm512_maskz_loadu_ps(lanes16(n - 16), p + 16);
  return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo));
}

// Words (a[j], b[j]) for j < 16, from 16 floats of a and of b (na, nb valid; zeros past them).
inline __m512i bf16_pairs(const float* a, int64_t na, const float* b, int64_t nb) {
  const __m512i interleave = _mm512_setr_epi32(
      0x00100000, 0x00110001, 0x00120002, 0x00130003, 0x00140004, 0x00150005, 0x00160006,
      0x00170007, 0x00180008, 0x00190009, 0x001A000A, 0x001B000B, 0x001C000C, 0x001D000D,
      0x001E000E, 0x001F000F);  // 16-bit indices 0, 16, 1, 17, ...
  const __m512 va = _mm512_maskz_loadu_ps(lanes16(na), a);
  const __m512 vb = nb > 0 ? _mm512_maskz_loadu_ps(lanes16(nb), b) : _mm512_setzero_ps();
  const __m512i v = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(vb, va));
  return _mm512_permutexvar_epi16(interleave, v);
}

inline __m512bh as_bh(__m512i v) { return reinterpret_cast<__m512bh>(v); }

// C[MB x NB] (+)= A[MB rows] . B[NB rows] over L summed elements.
template <int MB, int NB>
void dot_block(int64_t L, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb,
               float* C, int64_t ldc, bool accumulate) {
  __m512 s[kDotM][kDotN];
#pragma GCC unroll 4
  for (int i = 0; i < kDotM; ++i)
#pragma GCC unroll 6
    for (int j = 0; j < kDotN; ++j) s[i][j] = _mm512_setzero_ps();
  for (int64_t l = 0; l < L; l += 32) {
    const __mmask32 m = lanes32(L - l);
    __m512i a[MB];
#pragma GCC unroll 4
    for (int i = 0; i < MB; ++i) a[i] = _mm512_maskz_loadu_epi16(m, A + i * lda + l);
#pragma GCC unroll 6
    for (int j = 0; j < NB; ++j) {
      const __m512i b = _mm512_maskz_loadu_epi16(m, B + j * ldb + l);
#pragma GCC unroll 4
      for (int i = 0; i < MB; ++i) s[i][j] = _mm512_dpbf16_ps(s[i][j], as_bh(a[i]), as_bh(b));
    }
  }
  // (unrolled, as every loop over s: the accumulators stay in registers)
#pragma GCC unroll 4
  for (int i = 0; i < MB; ++i) store_dot_row<NB>(s[i], C + i * ldc, accumulate);
}

using DotFn = void (*)(int64_t, const uint16_t*, int64_t, const uint16_t*, int64_t, float*,
                       int64_t, bool);
template <int MB>
DotFn dot_fn_nb(int nb) {
  switch (nb) {
    case 1: return dot_block<MB, 1>;
    case 2: return dot_block<MB, 2>;
    case 3: return dot_block<MB, 3>;
    case 4: return dot_block<MB, 4>;
    case 5: return dot_block<MB, 5>;
    default: return dot_block<MB, 6>;
  }
}
DotFn dot_fn(int mb, int nb) {
  switch (mb) {
    case 1: return dot_fn_nb<1>(nb);
    case 2: return dot_fn_nb<2>(nb);
    case 3: return dot_fn_nb<3>(nb);
    default: return dot_fn_nb<4>(nb);
  }
}

// C[8 rows (mrows stored) x 16 NV columns (ncols stored)] (+)= A block . B panel, K2 pairs.
template <int NV>
void nn_block(int64_t K2, const uint32_t* Ap, const uint32_t* Bp, float* C, int64_t ldc,
              int mrows, int64_t ncols, bool accumulate) {
  __m512 acc[kMR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < kMR; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (int64_t i = 0; i < K2; ++i, Ap += kMR, Bp += kPanel) {
    __m512i b[NV];
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_si512(Bp + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < kMR; ++r) {
      const __m512i a = _mm512_set1_epi32(static_cast<int>(Ap[r]));
#pragma GCC unroll 3
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], as_bh(a), as_bh(b[v]));
    }
  }
  for (int r = 0; r < mrows; ++r)
    for (int v = 0; v < NV; ++v) {
      const __mmask16 m = lanes16(ncols - 16 * v);
      float* c = C + r * ldc + 16 * v;
      const __m512 out = accumulate ? _mm512_add_ps(_mm512_maskz_loadu_ps(m, c), acc[r][v])
                                    : acc[r][v];
      _mm512_mask_storeu_ps(c, m, out);
    }
}

inline int64_t pairs(int64_t K) { return (K + 1) / 2; }

// A thread's panel buffer, kept between calls (freed with the thread).
struct PanelScratch {
  uint32_t* p = nullptr;
  int64_t n = 0;
  PanelScratch() = default;
  PanelScratch(const PanelScratch&) = delete;
  PanelScratch& operator=(const PanelScratch&) = delete;
  ~PanelScratch() { delete[] p; }
  uint32_t* get(int64_t need) {
    if (n < need) {
      delete[] p;
      p = new uint32_t[static_cast<size_t>(need)];
      n = need;
    }
    return p;
  }
};

}  // namespace

void bf16_convert(int64_t rows, int64_t cols, const float* src, int64_t lds, uint16_t* dst,
                  int64_t ldd, bool parallel) {
#pragma omp parallel for schedule(static) if (parallel && rows > 1)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; j += 32)
      _mm512_mask_storeu_epi16(dst + r * ldd + j, lanes32(cols - j),
                               bf16x32(src + r * lds + j, cols - j));
}

void gemm_bf16_nt(int64_t M, int64_t N, int64_t L, const uint16_t* A, int64_t lda,
                  const uint16_t* B, int64_t ldb, float* C, int64_t ldc, bool accumulate,
                  bool parallel) {
  const int64_t mblocks = (M + kDotM - 1) / kDotM, nblocks = (N + kDotN - 1) / kDotN;
#pragma omp parallel for schedule(static) if (parallel && mblocks * nblocks > 1)
  for (int64_t u = 0; u < mblocks * nblocks; ++u) {
    // B's rows outer (each read once), A's inner (from cache)
    const int64_t m0 = u % mblocks * kDotM, n0 = u / mblocks * kDotN;
    const int mb = static_cast<int>(std::min<int64_t>(kDotM, M - m0));
    const int nb = static_cast<int>(std::min<int64_t>(kDotN, N - n0));
    dot_fn(mb, nb)(L, A + m0 * lda, lda, B + n0 * ldb, ldb, C + m0 * ldc + n0, ldc, accumulate);
  }
}

int64_t bf16_packed_a_words(int64_t M, int64_t K) {
  return (M + kMR - 1) / kMR * kMR * pairs(K);
}

int64_t bf16_packed_a_offset(int64_t m0, int64_t K) { return m0 / kMR * kMR * pairs(K); }

void bf16_pack_a(int64_t M, int64_t K, const float* A, int64_t lda, bool transposed,
                 uint32_t* Ap) {
  const int64_t K2 = pairs(K), Mp = (M + kMR - 1) / kMR * kMR;
  if (transposed) {
    // rows 2i and 2i + 1 of A^T give the words of 16 consecutive m: two blocks' 8 each
    for (int64_t i = 0; i < K2; ++i) {
      const float* r0 = A + 2 * i * lda;
      const int64_t nb = 2 * i + 1 < K ? M : 0;
      for (int64_t m = 0; m < Mp; m += 16) {
        alignas(64) uint32_t w[16];
        _mm512_store_si512(w, bf16_pairs(r0 + m, M - m, r0 + lda + m, nb - m));
        for (int64_t h = 0; h < 2 && m + 8 * h < Mp; ++h)
          std::memcpy(Ap + ((m / kMR + h) * K2 + i) * kMR, w + 8 * h, kMR * sizeof(uint32_t));
      }
    }
    return;
  }
  // row m converted in order gives its words i = 0, 1, ...: scattered kMR apart
  const __m512i stride = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
      _mm512_set1_epi32(kMR));
  for (int64_t m = 0; m < Mp; ++m) {
    uint32_t* base = Ap + (m / kMR * K2) * kMR + m % kMR;
    for (int64_t i = 0; i < K2; i += 16) {
      const __m512i w = m < M ? bf16x32(A + m * lda + 2 * i, K - 2 * i) : _mm512_setzero_si512();
      _mm512_mask_i32scatter_epi32(base + i * kMR, lanes16(K2 - i), stride, w, 4);
    }
  }
}

// B[K, ncols <= 48] row-major -> one panel [K2][48] (zero columns past ncols, zero row past K).
void bf16_pack_b_panel(int64_t K, int64_t ncols, const float* B, int64_t ldb, uint32_t* Bp) {
  const int64_t K2 = pairs(K);
  for (int64_t i = 0; i < K2; ++i) {
    const float* r0 = B + 2 * i * ldb;
    const bool odd_row = 2 * i + 1 < K;
    for (int v = 0; v < kPanel / 16; ++v)
      _mm512_storeu_si512(Bp + i * kPanel + 16 * v,
                          bf16_pairs(r0 + 16 * v, ncols - 16 * v, r0 + ldb + 16 * v,
                                     odd_row ? ncols - 16 * v : 0));
  }
}

int64_t bf16_panel_words(int64_t K) { return pairs(K) * kPanel; }

void gemm_bf16_panel(int64_t M, int64_t ncols, int64_t K, const uint32_t* Ap, const uint32_t* Bp,
                     float* C, int64_t ldc, bool accumulate) {
  const int64_t K2 = pairs(K);
  const int nv = static_cast<int>((ncols + 15) / 16);
  for (int64_t m0 = 0; m0 < M; m0 += kMR) {
    const uint32_t* a = Ap + m0 * K2;
    const int rows = static_cast<int>(std::min<int64_t>(kMR, M - m0));
    float* c = C + m0 * ldc;
    if (nv >= 3)
      nn_block<3>(K2, a, Bp, c, ldc, rows, ncols, accumulate);
    else if (nv == 2)
      nn_block<2>(K2, a, Bp, c, ldc, rows, ncols, accumulate);
    else
      nn_block<1>(K2, a, Bp, c, ldc, rows, ncols, accumulate);
  }
}

void gemm_bf16_nn(int64_t M, int64_t N, int64_t K, const uint32_t* Ap, const float* B,
                  int64_t ldb, float* C, int64_t ldc, bool accumulate, bool parallel) {
  const int64_t panels = (N + kPanel - 1) / kPanel;
#pragma omp parallel for schedule(static) if (parallel && panels > 1)
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t n0 = p * kPanel, nc = std::min<int64_t>(kPanel, N - n0);
    thread_local PanelScratch scratch;
    uint32_t* Bp = scratch.get(bf16_panel_words(K));
    bf16_pack_b_panel(K, nc, B + n0, ldb, Bp);
    gemm_bf16_panel(M, nc, K, Ap, Bp, C + n0, ldc, accumulate);
  }
}

}  // namespace hr::cpu::avx512
