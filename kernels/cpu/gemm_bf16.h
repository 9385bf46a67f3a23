// bf16 products with fp32 accumulation (AVX-512 BF16's VDPBF16PS: two bf16 products added to an
// fp32 lane per instruction, twice the multiply-adds of an fp32 FMA), for the AVX-512 build of
// the GEMM-bound kernels (kernels/cpu/conv2d.cpp) in bf16 mode (cpu_precision() == "bf16", as
// oneDNN's fpmath mode bf16: tensors stay fp32, the operands of the products are rounded to
// bf16, nearest even, and the sums are fp32). Compiled only in that build, with -mavx512bf16
// (engine/CMakeLists.txt), and reached only where the processor has AVX512_BF16
// (set_cpu_precision refuses otherwise). Every output is summed by one thread in an order fixed
// by the shapes: the same bits for any thread count.
#pragma once
#include <cstdint>

namespace hr::cpu::avx512 {

// dst[r][0..cols) = bf16(src[r][0..cols)) for r < rows (row strides in elements).
void bf16_convert(int64_t rows, int64_t cols, const float* src, int64_t lds, uint16_t* dst,
                  int64_t ldd, bool parallel);

// C[M, N] = (or +=, accumulate) A[M, L] B[N, L]^T: both operands bf16 with the summed dimension
// contiguous (rows at any element offset). The weight gradient's form.
void gemm_bf16_nt(int64_t M, int64_t N, int64_t L, const uint16_t* A, int64_t lda,
                  const uint16_t* B, int64_t ldb, float* C, int64_t ldc, bool accumulate,
                  bool parallel);

// The left operand of gemm_bf16_nn packed: rows in blocks of 8 (zero rows past M), within a
// block the pairs (A[m][2i], A[m][2i+1]) of its 8 rows for i = 0, 1, ... (zero past K).
int64_t bf16_packed_a_words(int64_t M, int64_t K);  // 32-bit words
// From A[M, K] row-major (lda), or, transposed, from A^T[K, M] (lda its row stride).
void bf16_pack_a(int64_t M, int64_t K, const float* A, int64_t lda, bool transposed,
                 uint32_t* Ap);
// The offset of row m0 (a multiple of 8) in a packed operand of K columns.
int64_t bf16_packed_a_offset(int64_t m0, int64_t K);

// The right operand packed per panel of 48 columns: [pairs of rows][48] words, word j of pair i
// = (B[2i][j], B[2i + 1][j]); zeros past ncols and past K.
int64_t bf16_panel_words(int64_t K);
void bf16_pack_b_panel(int64_t K, int64_t ncols, const float* B, int64_t ldb, uint32_t* Bp);
// C[M, ncols <= 48] = (or +=) A[M, K] B[K, ncols], both packed.
void gemm_bf16_panel(int64_t M, int64_t ncols, int64_t K, const uint32_t* Ap, const uint32_t* Bp,
                     float* C, int64_t ldc, bool accumulate);

// C[M, N] = (or +=) A[M, K] B[K, N], A packed (bf16_pack_a), B fp32 row-major (ldb).
void gemm_bf16_nn(int64_t M, int64_t N, int64_t K, const uint32_t* Ap, const float* B,
                  int64_t ldb, float* C, int64_t ldc, bool accumulate, bool parallel);

}  // namespace hr::cpu::avx512
