// CPU 2-D convolution (fp32, NCHW, weights [K,C,R,S]): forward, backward-data, backward-weight.
//
// Every pass is a sequence of Eigen GEMMs over "tiles" of output positions: a block of output
// rows of one image, or several whole images when P*Q is small. Two ways to build the GEMM
// operand that holds the input:
//  * row-shift (stride 1, Q == W, maps with P*Q >= kRowShiftMinPQ): for each (c, s), the tile's
//    input rows shifted by s columns with zero edges. Tap row r is a strided view of that
//    buffer, so y[K, L] = sum_r w_r[K, C*S] * X_r[C*S, L] with w permuted to [K, R, C, S]:
//    R times less copying than im2col. A 1x1 stride-1 unpadded conv uses the image itself.
//  * im2col otherwise: col[C*R*S, L], built from a zero-padded copy of the tile's input rows
//    whose columns are split into stride_w phases, so that every tap is a contiguous copy.
// On AVX-512 builds, convolutions whose output rows are as wide as the input rows (HRNet's 3x3
// pad 1 and 1x1; strided ones through a copy split into stride phases) run a direct kernel
// instead for the forward pass and the stride-1 data gradient (forward_direct below): no
// operand copies at stride 1 and no GEMM, the output accumulated in registers and written once.
// On AVX-512 builds too, 3x3 stride-1 pad-1 convolutions with >= 16 channels in and out run
// Winograd in the forward pass and the data gradient (forward_winograd: F(4x4, 3x3) on maps with
// enough tiles, F(2x2, 3x3) elsewhere), and F(3x3, 2x2) for the weight gradient
// (backward_weight_winograd, its products by gemm_nt_accumulate; F(3x3, 4x4) on the maps
// F(4x4, 3x3) serves); HR_CPU_WINOGRAD=0 turns it
// off, =2x2 keeps to F(2x2, 3x3), =forward keeps it to the forward pass. Inference graphs
// transform the weights once (conv2d_prepack_weights, conv2d_forward_prepacked) instead of on
// every call.
// Passes:
//   forward          y = w * X (+ bias), then the epilogue (+ residual, ReLU) on the tile
//   backward-data    row-shift maps: the forward pass of dy with flipped, transposed weights;
//                    otherwise dcol = w^T * dy per tile, then col2im
//   backward-weight  dw += dy * X^T into one accumulator per thread, summed at the end
// Threading: tiles go to OpenMP threads (dynamic schedule), each running a single-threaded
// GEMM on thread_local scratch. With too few tiles for the threads (one small image), tiles
// run in turn with Eigen-threaded GEMMs and the copies around them split over the threads.
// Compiled once per instruction set (kernels/cpu/isa.h): no std containers or shared helpers
// here, only this file's own types; the arguments are checked by kernels/cpu/dispatch.cpp.
#include <omp.h>

#if defined(__AVX512F__)
#include <immintrin.h>

#include "kernels/cpu/avx512_util.h"
#endif

#include <sys/mman.h>

#include <Eigen/Core>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string_view>
#include <type_traits>

#include "kernels/cpu/isa.h"

#if defined(__AVX512F__) && defined(HR_CPU_BF16)
#include "kernels/cpu/gemm_bf16.h"
#define HR_BF16_KERNELS 1
#else
#define HR_BF16_KERNELS 0
#endif

namespace hr::cpu::HR_ISA_NS {
namespace {

using kern::ConvShape;
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapC = Eigen::Map<const RowMat, Eigen::Unaligned, Eigen::OuterStride<>>;
using MapM = Eigen::Map<RowMat, Eigen::Unaligned, Eigen::OuterStride<>>;

// Scratch budget per tile (operand + output block); the shortest row tile (GEMM width); the
// width up to which small maps batch images into one GEMM (wider amortises the packing of w,
// narrower leaves more tiles to balance the threads); the smallest map for the row-shift operand
// (below it, im2col with batched images packs w less often).
constexpr int64_t kTileBytes = 384 * 1024;
constexpr int64_t kMinTileCols = 192;
constexpr int64_t kBatchCols = 96;
constexpr int64_t kRowShiftMinPQ = 128;
// The shortest row tile of the weight gradient in bf16 (gemm_bf16_nt's per-tile reduction)
constexpr int64_t kBf16WeightGradMinCols = 1024;

// A buffer that grows (new elements zero, old ones kept, as std::vector::resize) and is kept
// between calls (no page faults in the steady state). This file's own type, not std::vector:
// its code is then local to this build (kernels/cpu/isa.h).
// From 1 MB on 2 MB boundaries, offered to the kernel as transparent huge pages (as tensors'
// storage, engine/tensor.cpp): the Winograd passes write their transforms in rows megabytes
// apart.
template <class T>
struct Buf {
  static_assert(std::is_trivial_v<T>);
  T* p = nullptr;
  int64_t n = 0;
  Buf() = default;
  Buf(Buf&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr, o.n = 0; }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() { std::free(p); }
  T* data() { return p; }
  T& operator[](int64_t i) { return p[i]; }
};
constexpr size_t kBufHugePage = size_t(2) << 20;
template <class T>
T* grow(Buf<T>& v, int64_t n) {
  if (v.n < n) {
    const size_t bytes = static_cast<size_t>(n) * sizeof(T);
    const bool huge = bytes >= kBufHugePage / 2;
    const size_t align = huge ? kBufHugePage : 64, rounded = (bytes + align - 1) / align * align;
    T* q = static_cast<T*>(std::aligned_alloc(align, rounded));
    if (!q) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    if (huge) ::madvise(q, rounded, MADV_HUGEPAGE);  // advice only
#endif
    const size_t kept = static_cast<size_t>(v.n) * sizeof(T);
    if (kept) std::memcpy(q, v.p, kept);
    std::memset(reinterpret_cast<char*>(q) + kept, 0, bytes - kept);
    std::free(v.p);
    v.p = q;
    v.n = n;
  }
  return v.p;
}

void fill(float* y, int64_t n, float v) {
  for (int64_t i = 0; i < n; ++i) y[i] = v;
}

// The epilogue over a [K, L] output block (row stride ld) whose residual rows are at the same
// offsets of res (row stride res_ld): out += res, then ReLU.
void epilogue_rows(float* out, int64_t ld, const float* res, int64_t res_ld, int64_t K, int64_t L,
                   bool relu) {
  for (int64_t k = 0; k < K; ++k) {
    float* __restrict o = out + k * ld;
    if (res) {
      const float* __restrict r = res + k * res_ld;
      for (int64_t i = 0; i < L; ++i) o[i] += r[i];
    }
    if (relu)
      for (int64_t i = 0; i < L; ++i) o[i] = o[i] > 0.f ? o[i] : 0.f;
  }
}

struct Scratch {
  Buf<float> a, b, c;
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

int num_threads() { return omp_in_parallel() ? 1 : omp_get_max_threads(); }

// Whether this call's products run in bf16 (cpu_precision bf16: kernels/cpu/gemm_bf16.h).
bool use_bf16() {
#if HR_BF16_KERNELS
  return bf16_products();
#else
  return false;
#endif
}

#if HR_BF16_KERNELS
// gemm_bf16_nn's left operand from A [M, K] (transposed: from A^T [K, M]), row stride ld, in
// this thread's buffer until its next call: packed once per convolution, read by every tile.
const uint32_t* bf16_packed_weights(int64_t M, int64_t K, const float* A, int64_t ld,
                                    bool transposed) {
  thread_local Buf<uint32_t> buf;
  uint32_t* p = grow(buf, bf16_packed_a_words(M, K));
  bf16_pack_a(M, K, A, ld, transposed, p);
  return p;
}
#endif

// In bf16, the forward pass (and the stride-1 data gradient) of strided and 1x1 convolutions
// with enough products per output run the im2col GEMM (1x1: the image itself) in bf16 instead
// of the direct kernel in fp32: the quick start's stem (64 channels, 3x3 stride 2, 96x80,
// batch 8) ran 5.3 ms against 7.4, a 1x1 from 128 to 32 channels on 48x40 0.41 against 0.66.
// Other 3x3 stride-1 shapes keep the direct kernel (im2col copies each input 9 times).
constexpr int64_t kBf16MinProducts = 64;
[[maybe_unused]] bool bf16_gemm_ok(const ConvShape& s) {
  return use_bf16() && s.C * s.R * s.S >= kBf16MinProducts &&
         (s.stride_h > 1 || s.stride_w > 1 ||
          (s.R == 1 && s.S == 1 && s.pad_h == 0 && s.pad_w == 0));
}

// Per-thread weight-gradient accumulators, kept between calls.
Buf<float>& weight_accumulators() {
  thread_local Buf<float> acc;
  return acc;
}

// ---- tiling ----

// Output rows [p0, p1) of images [n0, n0 + nb); nb > 1 only with whole images.
struct Tile {
  int64_t n0, nb, p0, p1;
};

struct Plan {
  Buf<Tile> tiles;
  int64_t ntiles = 0;
  int64_t tiles_per_image = 1;  // consecutive tiles that cover the same images
  bool threaded_gemm = false;   // tiles run in turn, each GEMM (and its copies) threaded
};

// row_bytes: scratch per output row; halo_bytes: fixed scratch per tile; batch: small maps may
// put several images in one tile; whole_images: a thread must own every tile of an image
// (col2im writes overlap between row tiles); min_cols: the shortest row tile.
Plan make_plan(const ConvShape& s, int nthreads, int64_t row_bytes, int64_t halo_bytes, bool batch,
               bool whole_images, int64_t min_cols = kMinTileCols) {
  Plan plan;
  const int64_t PQ = s.P * s.Q;
  int64_t rows = std::max<int64_t>(1, (kTileBytes - halo_bytes) / std::max<int64_t>(row_bytes, 1));
  rows = std::clamp<int64_t>(std::max(rows, (min_cols + s.Q - 1) / s.Q), 1, s.P);
  const int64_t nrt = (s.P + rows - 1) / rows;  // equal row tiles
  rows = (s.P + nrt - 1) / nrt;
  int64_t nb = 1;
  if (nrt == 1 && batch && PQ < kBatchCols)
    nb = std::clamp<int64_t>((kBatchCols + PQ - 1) / PQ, 1, (s.N + nthreads - 1) / nthreads);
  grow(plan.tiles, ((s.N + nb - 1) / nb) * ((s.P + rows - 1) / rows));
  for (int64_t n = 0; n < s.N; n += nb)
    for (int64_t p = 0; p < s.P; p += rows)
      plan.tiles[plan.ntiles++] = {n, std::min(nb, s.N - n), p, std::min(p + rows, s.P)};
  plan.tiles_per_image = nrt;
  const int64_t units = whole_images ? plan.ntiles / nrt : plan.ntiles;
  // Too few tiles to keep every thread busy: one threaded GEMM at a time instead.
  plan.threaded_gemm = nthreads > 1 && units < 2 * nthreads && units % nthreads != 0;
  return plan;
}

// Runs fn(tile, thread id, parallel) over the plan: tiles spread over the threads (whole
// images together when the plan asks), or in turn with parallel = true. With `fixed` each
// thread takes a fixed, contiguous share of the tiles: results that threads accumulate
// (weight gradients) are then the same from run to run, not dependent on timing.
template <class Fn>
void run_tiles(Plan& plan, int nthreads, bool whole_images, Fn&& fn, bool fixed = false) {
  const int64_t nt = plan.ntiles;
  if (nthreads <= 1 || plan.threaded_gemm) {
    for (int64_t i = 0; i < nt; ++i) fn(plan.tiles[i], 0, nthreads > 1);
    return;
  }
  const int64_t g = whole_images ? plan.tiles_per_image : 1;
  if (fixed) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t i = 0; i < nt / g; ++i)
      for (int64_t j = 0; j < g; ++j) fn(plan.tiles[i * g + j], omp_get_thread_num(), false);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
  for (int64_t i = 0; i < nt / g; ++i)
    for (int64_t j = 0; j < g; ++j) fn(plan.tiles[i * g + j], omp_get_thread_num(), false);
}

// Runs fn(c0, c1) over channel blocks of [0, C), in parallel when asked.
template <class Fn>
void over_channels(int64_t C, bool parallel, Fn&& fn) {
  if (!parallel) {
    fn(int64_t{0}, C);
    return;
  }
#pragma omp parallel
  {
    const int64_t id = omp_get_thread_num(), n = omp_get_num_threads();
    fn(C * id / n, C * (id + 1) / n);
  }
}

// ---- weight layouts ----

// Weight re-layouts for the row-shift path. kS > 0 fixes S at compile time (the common 3 and 1),
// which makes the per-(k, c, r) copies a few moves instead of a loop.

// w [K,C,R,S] -> out [K,R,C,S]
template <int kS>
void permute_kcrs_to_krcs_impl(const ConvShape& s, const float* w, float* out, bool parallel) {
  const int64_t C = s.C, R = s.R, S = kS > 0 ? kS : s.S;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t k = 0; k < s.K; ++k)
    for (int64_t r = 0; r < R; ++r) {
      const float* src = w + (k * C * R + r) * S;
      float* dst = out + (k * R + r) * C * S;
      for (int64_t c = 0; c < C; ++c, src += R * S, dst += S)
        for (int64_t q = 0; q < S; ++q) dst[q] = src[q];
    }
}

void permute_kcrs_to_krcs(const ConvShape& s, const float* w, float* out, bool parallel) {
  if (s.S == 3)
    permute_kcrs_to_krcs_impl<3>(s, w, out, parallel);
  else if (s.S == 1)
    permute_kcrs_to_krcs_impl<1>(s, w, out, parallel);
  else
    permute_kcrs_to_krcs_impl<0>(s, w, out, parallel);
}

// Weights of the transposed convolution (backward-data at stride 1) in the row-shift layout:
// for w [K,C,R,S], out[c, r, k, s] = w[k, c, R-1-r, S-1-s]. Blocked over (c, k) so that both
// sides stay in cache.
template <int kS>
void flip_transpose_impl(const ConvShape& s, const float* w, float* out, bool parallel) {
  const int64_t K = s.K, C = s.C, R = s.R, S = kS > 0 ? kS : s.S;
  constexpr int64_t B = 16;
  const int64_t cblocks = (C + B - 1) / B;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t cb = 0; cb < cblocks; ++cb)
    for (int64_t k0 = 0; k0 < K; k0 += B) {
      const int64_t c1 = std::min(C, cb * B + B), k1 = std::min(K, k0 + B);
      for (int64_t c = cb * B; c < c1; ++c)
        for (int64_t r = 0; r < R; ++r) {
          const float* src = w + ((k0 * C + c) * R + (R - 1 - r)) * S + S - 1;
          float* dst = out + ((c * R + r) * K + k0) * S;
          for (int64_t k = k0; k < k1; ++k, src += C * R * S, dst += S)
            for (int64_t q = 0; q < S; ++q) dst[q] = src[-q];
        }
    }
}

void flip_transpose(const ConvShape& s, const float* w, float* out, bool parallel) {
  if (s.S == 3)
    flip_transpose_impl<3>(s, w, out, parallel);
  else if (s.S == 1)
    flip_transpose_impl<1>(s, w, out, parallel);
  else
    flip_transpose_impl<0>(s, w, out, parallel);
}

// ---- row-shift operand (stride 1, Q == W) ----

bool rowshift_ok(const ConvShape& s) {
  return s.stride_h == 1 && s.stride_w == 1 && s.Q == s.W && s.pad_w < s.W &&
         s.P * s.Q >= kRowShiftMinPQ;
}

// Input rows ih = p0 - pad_h + i, i in [0, p1 - p0 + R - 1), of image x [C,H,W], shifted by
// ks - pad_w columns, for every (c, ks): out[(c*S + ks)*ps + i*W + q]. Returns the operand
// (x itself when no copy is needed) and its plane stride ps.
const float* rowshift_planes(const ConvShape& s, const float* x, int64_t p0, int64_t p1,
                             Buf<float>& buf, int64_t& ps) {
  const int64_t W = s.W, nr = p1 - p0 + s.R - 1, ih0 = p0 - s.pad_h;
  if (s.S == 1 && ih0 >= 0 && ih0 + nr <= s.H) {
    ps = s.H * W;
    return x + ih0 * W;
  }
  ps = nr * W;
  float* out = grow(buf, s.C * s.S * ps);
  const int64_t ia = std::clamp<int64_t>(-ih0, 0, nr), ib = std::clamp<int64_t>(s.H - ih0, 0, nr);
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t ks = 0; ks < s.S; ++ks) {
      float* dst = out + (c * s.S + ks) * ps;
      const int64_t off = ks - s.pad_w;
      std::memset(dst, 0, sizeof(float) * ia * W);
      std::memset(dst + ib * W, 0, sizeof(float) * (nr - ib) * W);
      if (ib <= ia) continue;
      float* d = dst + ia * W;
      const float* src = x + (c * s.H + ih0 + ia) * W;
      const int64_t n = (ib - ia) * W;
      // One contiguous copy; the columns that wrapped into the neighbouring row become 0.
      if (off < 0) {
        std::memcpy(d - off, src, sizeof(float) * (n + off));
        for (int64_t i = 0; i < ib - ia; ++i)
          for (int64_t q = 0; q < -off; ++q) d[i * W + q] = 0.f;
      } else {
        std::memcpy(d, src + off, sizeof(float) * (n - off));
        for (int64_t i = 0; i < ib - ia; ++i)
          for (int64_t q = W - off; q < W; ++q) d[i * W + q] = 0.f;
      }
    }
  return out;
}

int64_t rowshift_row_bytes(const ConvShape& s) { return 4 * (s.C * s.S * s.W + s.K * s.Q); }
int64_t rowshift_halo_bytes(const ConvShape& s) { return 4 * s.C * s.S * (s.R - 1) * s.W; }

// y = conv(x, w) + bias (+ epilogue) with w_krcs [K,R,C,S]. x [N,C,H,W], y [N,K,P,Q]
void forward_rowshift(const ConvShape& s, const float* x, const float* w_krcs, const float* bias,
                      float* y, const kern::ConvEpilogue& ep) {
  const int nthreads = num_threads();
  const int64_t K = s.K, CS = s.C * s.S, PQ = s.P * s.Q, CHW = s.C * s.H * s.W;
  Plan plan =
      make_plan(s, nthreads, rowshift_row_bytes(s), rowshift_halo_bytes(s), false, false);
  run_tiles(plan, nthreads, false, [&](const Tile& t, int, bool) {
    const int64_t L = (t.p1 - t.p0) * s.Q;
    int64_t ps = 0;
    const float* xs = rowshift_planes(s, x + t.n0 * CHW, t.p0, t.p1, scratch().a, ps);
    float* out = y + t.n0 * K * PQ + t.p0 * s.Q;
    MapM om(out, K, L, Eigen::OuterStride<>(PQ));
    if (bias)
      for (int64_t k = 0; k < K; ++k) fill(out + k * PQ, L, bias[k]);
    for (int64_t r = 0; r < s.R; ++r) {
      const MapC wr(w_krcs + r * CS, K, CS, Eigen::OuterStride<>(s.R * CS));
      const MapC xr(xs + r * s.W, CS, L, Eigen::OuterStride<>(ps));
      if (r == 0 && !bias)
        om.noalias() = wr * xr;
      else
        om.noalias() += wr * xr;
    }
    if (ep.any())
      epilogue_rows(out, PQ, ep.residual ? ep.residual + (out - y) : nullptr, PQ, K, L, ep.relu);
  });
}

// ---- im2col operand ----
// The input rows a tile needs are copied into a zero-padded buffer whose columns are split
// into stride_w phases: buf[((c*nr + i)*sw + phase)*wpad + ml + j] = x[c, ih0 + i, j*sw + phase]
// (0 outside the image). Tap (r, ks) of output row p is then Q contiguous floats of it, so
// im2col and col2im are branch-free copies and adds.

struct PadGeom {
  int64_t ih0, nr;   // buffer rows: input rows [ih0, ih0 + nr)
  int64_t ml, wpad;  // left margin and row length of one phase
  int64_t per_channel(const ConvShape& s) const { return nr * s.stride_w * wpad; }
  // Offset of tap (r, ks) of output row p within a channel.
  int64_t tap(const ConvShape& s, int64_t p, int64_t r, int64_t ks) const {
    const int64_t sw = s.stride_w, off = ks - s.pad_w;
    const int64_t phase = ((off % sw) + sw) % sw, base = (off - phase) / sw;
    return ((p * s.stride_h - s.pad_h + r - ih0) * sw + phase) * wpad + ml + base;
  }
};

PadGeom pad_geom(const ConvShape& s, int64_t p0, int64_t p1) {
  const int64_t sw = s.stride_w, hi = s.S - 1 - s.pad_w;
  PadGeom g;
  g.ih0 = p0 * s.stride_h - s.pad_h;
  g.nr = (p1 - 1 - p0) * s.stride_h + s.R;
  g.ml = (s.pad_w + sw - 1) / sw;
  const int64_t base_max = hi >= 0 ? hi / sw : -((-hi + sw - 1) / sw);
  g.wpad = g.ml + std::max(s.Q + base_max, (s.W + sw - 1) / sw);
  return g;
}

// d0[j] = src[2j] for j < (W + 1) / 2 and d1[j] = src[2j + 1] for j < W / 2: a row of W values
// split into its even and odd columns (the stride-2 phase buffers).
inline void split_even_odd(const float* __restrict src, int64_t W, float* __restrict d0,
                           float* __restrict d1) {
  int64_t j = 0;
#if defined(__AVX512F__)
  for (; 2 * j + 32 <= W; j += 16) {
    __m512 even, odd;
    deinterleave(_mm512_loadu_ps(src + 2 * j), _mm512_loadu_ps(src + 2 * j + 16), even, odd);
    _mm512_storeu_ps(d0 + j, even);
    _mm512_storeu_ps(d1 + j, odd);
  }
#endif
  for (; 2 * j + 1 < W; ++j) {
    d0[j] = src[2 * j];
    d1[j] = src[2 * j + 1];
  }
  if (2 * j < W) d0[j] = src[2 * j];
}

// Fills channels [c0, c1) of the padded phase buffer from image x [C,H,W].
void pad_split(const ConvShape& s, const PadGeom& g, const float* x, int64_t c0, int64_t c1,
               float* buf) {
  const int64_t sw = s.stride_w, W = s.W, wpad = g.wpad, ml = g.ml;
  for (int64_t c = c0; c < c1; ++c)
    for (int64_t i = 0; i < g.nr; ++i) {
      float* dst = buf + (c * g.nr + i) * sw * wpad;
      const int64_t ih = g.ih0 + i;
      if (ih < 0 || ih >= s.H) {
        std::memset(dst, 0, sizeof(float) * sw * wpad);
        continue;
      }
      const float* src = x + (c * s.H + ih) * W;
      if (sw == 2) split_even_odd(src, W, dst + ml, dst + wpad + ml);
      for (int64_t ph = 0; ph < sw; ++ph) {
        float* d = dst + ph * wpad;
        const int64_t cnt = ph < W ? (W - ph + sw - 1) / sw : 0;
        for (int64_t j = 0; j < ml; ++j) d[j] = 0.f;
        if (sw == 1) {
          std::memcpy(d + ml, src, sizeof(float) * W);
        } else if (sw > 2) {
          for (int64_t j = 0; j < cnt; ++j) d[ml + j] = src[j * sw + ph];
        }
        for (int64_t j = ml + cnt; j < wpad; ++j) d[j] = 0.f;
      }
    }
}

// dx [C,H,W] += the image part of channels [c0, c1) of a padded phase buffer.
void unpad_merge_add(const ConvShape& s, const PadGeom& g, const float* buf, int64_t c0, int64_t c1,
                     float* dx) {
  const int64_t sw = s.stride_w, W = s.W, wpad = g.wpad, ml = g.ml;
  for (int64_t c = c0; c < c1; ++c)
    for (int64_t i = std::max<int64_t>(0, -g.ih0); i < std::min(g.nr, s.H - g.ih0); ++i) {
      const float* src = buf + (c * g.nr + i) * sw * wpad + ml;
      float* d = dx + (c * s.H + g.ih0 + i) * W;
      if (sw == 1) {
        for (int64_t j = 0; j < W; ++j) d[j] += src[j];
      } else if (sw == 2) {
        for (int64_t j = 0; j < W / 2; ++j) {
          d[2 * j] += src[j];
          d[2 * j + 1] += src[wpad + j];
        }
        if (W % 2) d[W - 1] += src[W / 2];
      } else {
        for (int64_t j = 0; j < W; ++j) d[j] += src[(j % sw) * wpad + j / sw];
      }
    }
}

// Short rows are copied inline; memcpy's call overhead dominates below ~32 floats.
inline void copy_row(float* __restrict dst, const float* __restrict src, int64_t n) {
  if (n >= 32) {
    std::memcpy(dst, src, sizeof(float) * n);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
  }
}

// col[(c*R + r)*S + ks, (p-p0)*Q + q] (row stride ld) for output rows [p0, p1), channels
// [c0, c1).
void im2col(const ConvShape& s, const PadGeom& g, const float* buf, int64_t p0, int64_t p1,
            int64_t c0, int64_t c1, float* col, int64_t ld) {
  const int64_t Q = s.Q, cstride = g.per_channel(s);
  const int64_t step = s.stride_h * s.stride_w * g.wpad;  // next output row
  for (int64_t r = 0; r < s.R; ++r)
    for (int64_t ks = 0; ks < s.S; ++ks) {
      const int64_t off = g.tap(s, p0, r, ks);
      for (int64_t c = c0; c < c1; ++c) {
        float* dst = col + ((c * s.R + r) * s.S + ks) * ld;
        const float* src = buf + c * cstride + off;
        if (Q >= 4 && Q <= 8) {
          // Fixed 8-float copies that overshoot into the next row (written right after; with
          // Q >= 4 never past the last row); the last row is exact. The pad buffer has slack
          // for the reads.
          for (int64_t p = p0; p < p1 - 1; ++p, dst += Q, src += step) std::memcpy(dst, src, 32);
          copy_row(dst, src, Q);
        } else if (Q > 8 && Q <= 16) {
          for (int64_t p = p0; p < p1 - 1; ++p, dst += Q, src += step) std::memcpy(dst, src, 64);
          copy_row(dst, src, Q);
        } else {
          for (int64_t p = p0; p < p1; ++p, dst += Q, src += step) copy_row(dst, src, Q);
        }
      }
    }
}

// Inverse of im2col for channels [c0, c1): buf += dcol (buf is a padded phase buffer).
void col2im(const ConvShape& s, const PadGeom& g, const float* dcol, int64_t ld, int64_t p0,
            int64_t p1, int64_t c0, int64_t c1, float* buf) {
  const int64_t Q = s.Q, cstride = g.per_channel(s);
  const int64_t step = s.stride_h * s.stride_w * g.wpad;
  for (int64_t r = 0; r < s.R; ++r)
    for (int64_t ks = 0; ks < s.S; ++ks) {
      const int64_t off = g.tap(s, p0, r, ks);
      for (int64_t c = c0; c < c1; ++c) {
        const float* src = dcol + ((c * s.R + r) * s.S + ks) * ld;
        float* dst = buf + c * cstride + off;
        for (int64_t p = p0; p < p1; ++p, src += Q, dst += step) {
          float* __restrict d = dst;
          for (int64_t q = 0; q < Q; ++q) d[q] += src[q];
        }
      }
    }
}

// Column operand [C*R*S, L] (row stride L) of tile t for images [n0, n0+nb) of x.
// parallel: split the work over images or channels.
const float* tile_columns(const ConvShape& s, const float* x, const Tile& t, bool parallel) {
  const int64_t PQ = s.P * s.Q, CHW = s.C * s.H * s.W, CRS = s.C * s.R * s.S;
  const int64_t L = t.nb * (t.p1 - t.p0) * s.Q;
  float* col = grow(scratch().a, CRS * L);
  const PadGeom g = pad_geom(s, t.p0, t.p1);
  const int64_t gsize = s.C * g.per_channel(s) + 16;  // slack for im2col's fixed-size reads
  if (parallel && t.nb > 1) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < t.nb; ++i) {
      float* buf = grow(scratch().c, gsize);
      pad_split(s, g, x + (t.n0 + i) * CHW, 0, s.C, buf);
      im2col(s, g, buf, t.p0, t.p1, 0, s.C, col + i * PQ, L);
    }
    return col;
  }
  float* buf = grow(scratch().c, gsize);
  for (int64_t i = 0; i < t.nb; ++i)
    over_channels(s.C, parallel, [&](int64_t c0, int64_t c1) {
      pad_split(s, g, x + (t.n0 + i) * CHW, c0, c1, buf);
      im2col(s, g, buf, t.p0, t.p1, c0, c1, col + i * PQ, L);
    });
  return col;
}

// dy rows of tile t as a [K, L] matrix: in place for one image, else gathered into scratch.
const float* tile_dy(const ConvShape& s, const float* dy, const Tile& t, bool parallel,
                     int64_t& ld) {
  const int64_t K = s.K, PQ = s.P * s.Q, L = t.nb * (t.p1 - t.p0) * s.Q;
  if (t.nb == 1) {
    ld = PQ;
    return dy + t.n0 * K * PQ + t.p0 * s.Q;
  }
  float* g = grow(scratch().b, K * L);
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t k = 0; k < K; ++k)
    for (int64_t i = 0; i < t.nb; ++i)
      std::memcpy(g + k * L + i * PQ, dy + ((t.n0 + i) * K + k) * PQ, sizeof(float) * PQ);
  ld = L;
  return g;
}

int64_t im2col_row_bytes(const ConvShape& s) {
  return 4 * ((s.C * s.R * s.S + s.K) * s.Q + s.C * s.stride_h * (s.W + 2 * s.pad_w + s.stride_w));
}

// y = conv(x, w) + bias (+ epilogue) via im2col. x [N,C,H,W], w [K,C,R,S], y [N,K,P,Q]
void forward_im2col(const ConvShape& s, const float* x, const float* w, const float* bias,
                    float* y, const kern::ConvEpilogue& ep) {
  const int nthreads = num_threads();
  const int64_t PQ = s.P * s.Q, CRS = s.C * s.R * s.S, K = s.K, CHW = s.C * s.H * s.W;
  const bool identity =
      s.R == 1 && s.S == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
  Plan plan = identity ? make_plan(s, nthreads, 4 * K * s.Q, 0, false, false)
                             : make_plan(s, nthreads, im2col_row_bytes(s), 0, true, false);
  const MapC wm(w, K, CRS, Eigen::OuterStride<>(CRS));
#if HR_BF16_KERNELS
  const bool bf16 = use_bf16();
  const uint32_t* wp = bf16 ? bf16_packed_weights(K, CRS, w, CRS, false) : nullptr;
#endif
  run_tiles(plan, nthreads, false, [&](const Tile& t, int, bool par) {
    const int64_t L = t.nb * (t.p1 - t.p0) * s.Q;
    const float* col = identity ? x + t.n0 * CHW + t.p0 * s.Q : tile_columns(s, x, t, par);
    const int64_t col_ld = identity ? PQ : L;
    // Output block: straight into y for one image, else a [K, nb*PQ] buffer then scattered.
    float* out = t.nb == 1 ? y + t.n0 * K * PQ + t.p0 * s.Q : grow(scratch().b, K * L);
    const int64_t out_ld = t.nb == 1 ? PQ : L;
    if (bias)
      for (int64_t k = 0; k < K; ++k) fill(out + k * out_ld, L, bias[k]);
#if HR_BF16_KERNELS
    if (bf16) {
      gemm_bf16_nn(K, L, CRS, wp, col, col_ld, out, out_ld, bias != nullptr, par);
    } else
#endif
    {
      const MapC cm(col, CRS, L, Eigen::OuterStride<>(col_ld));
      MapM om(out, K, L, Eigen::OuterStride<>(out_ld));
      if (bias)
        om.noalias() += wm * cm;
      else
        om.noalias() = wm * cm;
    }
    if (t.nb > 1) {
#pragma omp parallel for schedule(static) if (par)
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < t.nb; ++i) {
          const int64_t at = ((t.n0 + i) * K + k) * PQ;
          std::memcpy(y + at, out + k * L + i * PQ, sizeof(float) * PQ);
          if (ep.any())
            epilogue_rows(y + at, PQ, ep.residual ? ep.residual + at : nullptr, PQ, 1, PQ, ep.relu);
        }
    } else if (ep.any()) {
      epilogue_rows(out, PQ, ep.residual ? ep.residual + (out - y) : nullptr, PQ, K, L, ep.relu);
    }
  });
}

// Backward-data by dcol = w^T dy per tile, col2im into a padded phase buffer, merged into dx.
// A thread owns all tiles of its images.
void backward_data_col2im(const ConvShape& s, const float* dy, const float* w, float* dx) {
  const int nthreads = num_threads();
  const int64_t K = s.K, C = s.C, CRS = C * s.R * s.S, PQ = s.P * s.Q, CHW = C * s.H * s.W;
  Plan plan = make_plan(s, nthreads, im2col_row_bytes(s), 0, true, true);
  const MapC wm(w, K, CRS, Eigen::OuterStride<>(CRS));
#if HR_BF16_KERNELS
  const bool bf16 = use_bf16();
  const uint32_t* wt = bf16 ? bf16_packed_weights(CRS, K, w, CRS, true) : nullptr;  // w^T
#endif
  run_tiles(plan, nthreads, true, [&](const Tile& t, int, bool par) {
    const int64_t L = t.nb * (t.p1 - t.p0) * s.Q;
    int64_t g_ld = 0;
    const float* g = tile_dy(s, dy, t, par, g_ld);
    float* dcol = grow(scratch().a, CRS * L);
#if HR_BF16_KERNELS
    if (bf16)
      gemm_bf16_nn(CRS, L, K, wt, g, g_ld, dcol, L, false, par);
    else
#endif
    {
      MapM dm(dcol, CRS, L, Eigen::OuterStride<>(L));
      dm.noalias() = wm.transpose() * MapC(g, K, L, Eigen::OuterStride<>(g_ld));
    }
    const PadGeom pg = pad_geom(s, t.p0, t.p1);
    const int64_t cstride = pg.per_channel(s);
    auto image = [&](int64_t i, int64_t c0, int64_t c1, float* buf) {
      float* img = dx + (t.n0 + i) * CHW;
      if (t.p0 == 0) std::memset(img + c0 * s.H * s.W, 0, sizeof(float) * (c1 - c0) * s.H * s.W);
      std::memset(buf + c0 * cstride, 0, sizeof(float) * (c1 - c0) * cstride);
      col2im(s, pg, dcol + i * PQ, L, t.p0, t.p1, c0, c1, buf);
      unpad_merge_add(s, pg, buf, c0, c1, img);
    };
    if (par && t.nb > 1) {
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < t.nb; ++i) image(i, 0, C, grow(scratch().c, C * cstride));
    } else {
      float* buf = grow(scratch().c, C * cstride);
      for (int64_t i = 0; i < t.nb; ++i)
        over_channels(C, par, [&](int64_t c0, int64_t c1) { image(i, c0, c1, buf); });
    }
  });
}

// ---- direct convolution (AVX-512 builds) ----
// With stride 1 and output rows as wide as the input rows, output position l = p*W + q reads,
// for tap (r, t), the input at l + (r - pad_h)*W + (t - pad_w) of the flattened channel: a
// shifted contiguous run, so 16 outputs take one (masked) vector load per tap and channel,
// straight from x. The masks drop the lanes whose tap falls on padding (rows above or below
// the map, columns that wrapped into the neighbouring row) and the lanes past the map; masked
// loads do not touch the memory of dropped lanes. Strided convolutions read a copy of the
// input split into its stride phases (phase (a, b) = rows a, a+sh, ..., columns b, b+sw, ...),
// each phase image with rows Q long: a tap is then a shifted run of one phase image the same
// way (direct_ok: no tap reaches right of its output column there).
// A block of kMR output channels x NR vectors (NR <= kNR) accumulates in registers over taps
// and input channels, gets bias and the epilogue there and is stored once. Every output is
// summed by one thread in a fixed order: the results do not depend on the thread count.
#if defined(__AVX512F__)
constexpr int kMR = 8, kNR = 3, kLanes = 16, kMaxTaps = 49;
// From this many input channels, the loop order with channels outside (direct_block): at W32's
// shapes, batch 8, 2 threads, taps outside ran 288/328 GFLOP/s at 32/64 channels against 263/297,
// channels outside 307 against 288 at 128 and the same at 256, and helped batch 1 a little.
constexpr int64_t kCOuterMinChannels = 128;

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

bool direct_ok(const ConvShape& s) {
  if (s.R * s.S > kMaxTaps) return false;
  if (s.stride_h == 1 && s.stride_w == 1) return s.Q == s.W;
  // strided: every tap's column offset in its phase image <= 0 (the rightmost tap's)
  return floor_div(s.S - 1 - s.pad_w, s.stride_w) <= 0;
}

// x [N,C,H,W] -> out [N,C,sh,sw,Hr,Q]: out[n,c,a,b,i,j] = x[n,c,i*sh+a,j*sw+b] (0 outside x)
void phase_split(const ConvShape& s, const float* x, int64_t Hr, float* out, bool parallel) {
  const int64_t sh = s.stride_h, sw = s.stride_w, Q = s.Q, H = s.H, W = s.W;
  const bool pairs = sw == 2 && (W + 1) / 2 <= Q;  // both column phases of a row at once
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t nc = 0; nc < s.N * s.C; ++nc) {
    const float* src = x + nc * H * W;
    float* dst = out + nc * sh * sw * Hr * Q;
    for (int64_t a = 0; a < sh; ++a)
      for (int64_t i = 0; i < Hr; ++i) {
        const int64_t ih = i * sh + a;
        const auto plane = [&](int64_t b) { return dst + ((a * sw + b) * Hr + i) * Q; };
        if (ih >= H) {
          for (int64_t b = 0; b < sw; ++b) fill(plane(b), Q, 0.f);
          continue;
        }
        if (pairs) split_even_odd(src + ih * W, W, plane(0), plane(1));
        for (int64_t b = 0; b < sw; ++b) {
          float* d = plane(b);
          const float* row = src + ih * W + b;
          const int64_t n = std::clamp<int64_t>((W - b + sw - 1) / sw, 0, Q);
          if (!pairs)
            for (int64_t j = 0; j < n; ++j) d[j] = row[j * sw];
          fill(d + n, Q - n, 0.f);
        }
      }
  }
}

struct DirectArgs {
  const float* x;              // the operand of image n, channel 0, plus l0
  const float* w;              // row k0 of w as [K, C*R*S]
  const float* bias;           // bias + k0, or null
  const float* res;            // residual at y's offsets, or null
  float* y;                    // y + (n*K + k0)*PQ + l0
  int64_t C, HW, CRS, PQ;      // HW: the operand's channel stride
  int taps;
  const int64_t* off;          // [taps] input offset of each tap
  const __mmask16* mask;       // [taps][kNR] lanes that read the image
  const __mmask16* store;      // [kNR] lanes inside the map
  bool relu;
};

// x + off floats, without pointer arithmetic outside the array (only masked lanes land there)
inline const float* shifted(const float* x, int64_t off) {
  const intptr_t bytes = static_cast<intptr_t>(off) * static_cast<intptr_t>(sizeof(float));
  return reinterpret_cast<const float*>(reinterpret_cast<intptr_t>(x) + bytes);
}

// MR output channels x NR vectors; kTaps > 0 fixes the tap count at compile time (9, 1).
// Two loop orders. Taps outside (kCOuter false): a tap's masks stay in mask registers, taps
// whose vectors all lie inside the image (most of an interior tile's) load without masks, and
// each step is NR loads and MR broadcasts from MR weight pointers; the weights of the block are
// read once per tap, a few floats of each cache line at a time. Channels outside: a channel's
// weights (taps contiguous) and its input rows are used up at once, the masks are reloaded per
// tap. The first suits few input channels, the second many (kCOuterMinChannels).
template <int MR, int NR, int kTaps, bool kCOuter>
void direct_block(const DirectArgs& a) {
  const int taps = kTaps > 0 ? kTaps : a.taps;
  const int64_t C = a.C, HW = a.HW, CRS = a.CRS;
  __m512 acc[MR][NR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 3
    for (int j = 0; j < NR; ++j) acc[m][j] = _mm512_setzero_ps();
  // one step: NR input vectors of tap t at xp times the MR weights at wp[m * CRS]
  auto step = [&](const float* xp, const float* wp, const __mmask16* mk, auto masked) {
    __m512 b[NR];
#pragma GCC unroll 3
    for (int j = 0; j < NR; ++j)
      if constexpr (decltype(masked)::value)
        b[j] = _mm512_maskz_loadu_ps(mk[j], xp + j * kLanes);
      else
        b[j] = _mm512_loadu_ps(xp + j * kLanes);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m512 wv = _mm512_set1_ps(wp[m * CRS]);
#pragma GCC unroll 3
      for (int j = 0; j < NR; ++j) acc[m][j] = _mm512_fmadd_ps(wv, b[j], acc[m][j]);
    }
  };
  if constexpr (kCOuter) {
    const float* xc = a.x;
    const float* wc = a.w;
    for (int64_t c = 0; c < C; ++c, xc += HW, wc += taps)
#pragma GCC unroll 9
      for (int t = 0; t < taps; ++t)
        step(shifted(xc, a.off[t]), wc + t, a.mask + t * kNR, std::true_type{});
  } else {
    auto channels = [&](const float* xp, const float* wp, const __mmask16* mk, auto masked) {
#pragma GCC unroll 2
      for (int64_t c = 0; c < C; ++c, xp += HW, wp += taps) step(xp, wp, mk, masked);
    };
    for (int t = 0; t < taps; ++t) {
      __mmask16 mk[NR];
      unsigned all = 0xFFFFu;
#pragma GCC unroll 3
      for (int j = 0; j < NR; ++j) all &= mk[j] = a.mask[t * kNR + j];
      const float* xp = shifted(a.x, a.off[t]);
      if (all == 0xFFFFu)
        channels(xp, a.w + t, mk, std::false_type{});
      else
        channels(xp, a.w + t, mk, std::true_type{});
    }
  }
  const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
    const __m512 bv = a.bias ? _mm512_set1_ps(a.bias[m]) : zero;
#pragma GCC unroll 3
    for (int j = 0; j < NR; ++j) {
      const int64_t at = m * a.PQ + j * kLanes;
      __m512 v = _mm512_add_ps(acc[m][j], bv);
      if (a.res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(a.store[j], a.res + at));
      if (a.relu) v = _mm512_max_ps(v, zero);
      _mm512_mask_storeu_ps(a.y + at, a.store[j], v);
    }
  }
}

using DirectFn = void (*)(const DirectArgs&);

template <int MR, int kTaps, bool kCOuter>
DirectFn direct_fn_nr(int nr) {
  return nr == 1   ? &direct_block<MR, 1, kTaps, kCOuter>
         : nr == 2 ? &direct_block<MR, 2, kTaps, kCOuter>
                   : &direct_block<MR, 3, kTaps, kCOuter>;
}

template <int kTaps, bool kCOuter>
DirectFn direct_fn(int mr, int nr) {
  switch (mr) {
    case 1: return direct_fn_nr<1, kTaps, kCOuter>(nr);
    case 2: return direct_fn_nr<2, kTaps, kCOuter>(nr);
    case 3: return direct_fn_nr<3, kTaps, kCOuter>(nr);
    case 4: return direct_fn_nr<4, kTaps, kCOuter>(nr);
    case 5: return direct_fn_nr<5, kTaps, kCOuter>(nr);
    case 6: return direct_fn_nr<6, kTaps, kCOuter>(nr);
    case 7: return direct_fn_nr<7, kTaps, kCOuter>(nr);
    default: return direct_fn_nr<8, kTaps, kCOuter>(nr);
  }
}

template <bool kCOuter>
DirectFn direct_fn_taps(int taps, int mr, int nr) {
  return taps == 9   ? direct_fn<9, kCOuter>(mr, nr)
         : taps == 1 ? direct_fn<1, kCOuter>(mr, nr)
                     : direct_fn<0, kCOuter>(mr, nr);
}

// What the direct kernels read, for shape s: the operand (x, or its phase images), each tap's
// offset in it, and the lane masks of every vector of 16 outputs (the same in every image).
struct DirectOperand {
  const float* x = nullptr;
  int64_t cstride = 0;                  // the operand's channel stride
  int64_t vecs = 0, tiles = 0;          // vectors of 16 outputs per image, tiles of kNR vectors
  int taps = 0;
  int64_t off[kMaxTaps] = {};
  const __mmask16* masks = nullptr;     // [tile][tap][kNR]: lanes whose tap reads the image
  const __mmask16* stores = nullptr;    // [tile][kNR]: lanes inside the map
};

DirectOperand direct_operand(const ConvShape& s, const float* x) {
  DirectOperand d;
  const int64_t PQ = s.P * s.Q, sh = s.stride_h, sw = s.stride_w;
  const bool strided = sh > 1 || sw > 1;
  d.taps = static_cast<int>(s.R * s.S);
  // x itself, or its phase images (rows Hr, each Q long)
  const int64_t Hr = (s.H + sh - 1) / sh, plane = Hr * s.Q;
  d.cstride = strided ? sh * sw * plane : s.H * s.W;
  d.x = x;
  if (strided) {
    thread_local Buf<float> phases;
    float* xs = grow(phases, s.N * s.C * d.cstride);
    phase_split(s, x, Hr, xs, num_threads() > 1);
    d.x = xs;
  }
  for (int64_t r = 0; r < s.R; ++r)
    for (int64_t t = 0; t < s.S; ++t) {
      const int64_t dr = floor_div(r - s.pad_h, sh), dc = floor_div(t - s.pad_w, sw);
      const int64_t a = r - s.pad_h - dr * sh, b = t - s.pad_w - dc * sw;
      d.off[r * s.S + t] = strided ? (a * sw + b) * plane + dr * s.Q + dc : dr * s.W + dc;
    }
  d.vecs = (PQ + kLanes - 1) / kLanes;
  d.tiles = (d.vecs + kNR - 1) / kNR;
  thread_local Buf<__mmask16> mask_buf, store_buf;
  __mmask16* masks = grow(mask_buf, d.tiles * d.taps * kNR);
  __mmask16* stores = grow(store_buf, d.tiles * kNR);
  for (int64_t v = 0; v < d.vecs; ++v) {
    unsigned sm = 0, rows[kMaxTaps] = {}, cols[kMaxTaps] = {};
    for (int i = 0; i < kLanes; ++i) {
      const int64_t l = v * kLanes + i;
      if (l >= PQ) break;
      sm |= 1u << i;
      const int64_t p = l / s.Q, q = l % s.Q;
      for (int64_t r = 0; r < s.R; ++r) {
        const int64_t ih = p * sh + r - s.pad_h;
        if (ih >= 0 && ih < s.H) rows[r] |= 1u << i;
      }
      for (int64_t t = 0; t < s.S; ++t) {
        const int64_t iw = q * sw + t - s.pad_w;
        if (iw >= 0 && iw < s.W) cols[t] |= 1u << i;
      }
    }
    const int64_t tile = v / kNR, j = v % kNR;
    stores[tile * kNR + j] = static_cast<__mmask16>(sm);
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t t = 0; t < s.S; ++t)
        masks[(tile * d.taps + r * s.S + t) * kNR + j] = static_cast<__mmask16>(rows[r] & cols[t]);
  }
  d.masks = masks;
  d.stores = stores;
  return d;
}

// y = conv(x, w) + bias (+ epilogue); x [N,C,H,W], w [K,C,R,S], y [N,K,P,Q], direct_ok(s).
// Work units: (image, tile of kNR vectors, group of channel blocks); groups split the output
// channels only when images x tiles are too few for the threads.
void forward_direct(const ConvShape& s, const float* x, const float* w, const float* bias,
                    float* y, const kern::ConvEpilogue& ep) {
  const int64_t PQ = s.P * s.Q, K = s.K;
  const DirectOperand d = direct_operand(s, x);
  const int taps = d.taps;
  const int64_t HW = d.cstride, vecs = d.vecs, tiles = d.tiles;
  x = d.x;
  const int64_t* off = d.off;
  const int64_t kblocks = (K + kMR - 1) / kMR;
  const int nthreads = num_threads();
  const int64_t spatial = s.N * tiles;
  const int64_t groups =
      nthreads > 1 ? std::clamp<int64_t>((4 * nthreads + spatial - 1) / spatial, 1, kblocks) : 1;
  const bool c_outer = s.C >= kCOuterMinChannels;
  DirectFn fns[kMR][kNR];
  for (int mr = 1; mr <= kMR; ++mr)
    for (int nr = 1; nr <= kNR; ++nr)
      fns[mr - 1][nr - 1] = c_outer ? direct_fn_taps<true>(taps, mr, nr)
                                    : direct_fn_taps<false>(taps, mr, nr);
  const __mmask16* masks = d.masks;
  const __mmask16* stores = d.stores;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
  for (int64_t u = 0; u < spatial * groups; ++u) {
    const int64_t g = u % groups, n = u / groups / tiles, tile = u / groups % tiles;
    const int64_t v0 = tile * kNR, l0 = v0 * kLanes;
    const int nr = static_cast<int>(std::min<int64_t>(kNR, vecs - v0));
    const __mmask16* mask = masks + tile * taps * kNR;
    const __mmask16* store = stores + tile * kNR;
    DirectArgs a{};
    a.x = x + n * s.C * HW + l0;
    a.C = s.C, a.HW = HW, a.CRS = s.C * taps, a.PQ = PQ, a.taps = taps;
    a.off = off, a.mask = mask, a.store = store, a.relu = ep.relu;
    for (int64_t kb = g * kblocks / groups; kb < (g + 1) * kblocks / groups; ++kb) {
      const int64_t k0 = kb * kMR;
      const int mr = static_cast<int>(std::min<int64_t>(kMR, K - k0));
      const int64_t at = (n * K + k0) * PQ + l0;
      a.w = w + k0 * a.CRS;
      a.bias = bias ? bias + k0 : nullptr;
      a.res = ep.residual ? ep.residual + at : nullptr;
      a.y = y + at;
      fns[mr - 1][nr - 1](a);
    }
  }
}

// Weights of the transposed convolution (backward-data at stride 1) for the direct kernel:
// out[c, k, r, t] = w[k, c, R-1-r, S-1-t].
void flip_transpose_kcrs(const ConvShape& s, const float* w, float* out, bool parallel) {
  const int64_t K = s.K, C = s.C, RS = s.R * s.S;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < K; ++k) {
      const float* src = w + (k * C + c) * RS;
      float* dst = out + (c * K + k) * RS;
      for (int64_t i = 0; i < RS; ++i) dst[i] = src[RS - 1 - i];
    }
}

// ---- Winograd F(2x2, 3x3): stride-1, pad-1 3x3 convolutions ----
// Each 2x2 output tile is A^T [sum_c U_c (.) V_c] A with V_c = B^T d_c B (d_c: the tile's 4x4
// input patch of channel c) and U_c = G g_c G^T (g_c: the 3x3 filter): 16 products per
// (tile, channel, output channel) where the direct kernel does 36, 2.25x fewer multiply-adds.
// For a block of kWinoTB consecutive tiles (tile t = (n*TH + ty)*TW + tx, blocks may span tile
// rows and images): the input transform of every channel into V[16][C][kWinoTB], then per
// chunk of kWinoKC output channels, 16 GEMMs M[xi] = U[xi]^T V[xi] (register blocks of kMR
// output channels x 1-3 vectors of 16 tiles) and the output transform of M, with bias, residual
// and ReLU, straight into y. Each output is summed by one thread in an order fixed by the shape.
// Off with HR_CPU_WINOGRAD=0 (the direct kernel then runs these shapes).
constexpr int64_t kWinoTB = kNR * kLanes, kWinoKC = 64;
// From this many input and output channels and this many tiles (below, the transforms cost
// more than they save); the forward and data-gradient passes besides need a tile for every
// kWinoWeightsPerTile weights (C x K), as they transform the weights on every call (16 x C x K
// floats written and read back): at W32's 256 channels on an 8x6 map, batch 8 (96 tiles), the
// direct kernel ran 2.12 ms against 2.45, with the weight transform a third of the time; in the
// batch-1 inference graph, 128 channels on 16x12 (48 tiles) 16.7 ms against 22.2.
constexpr int64_t kWinoMinChannels = 16, kWinoMinTiles = 64, kWinoWeightsPerTile = 64;
// The weight gradient splits the output channels over the threads below this many tiles per
// thread (backward_weight_winograd).
constexpr int64_t kWinoSplitTiles = 256;

// Stores the lanes m of v at p: unmasked when m has every lane (masked stores are slower on
// some processors, even with a full mask).
inline void store_lanes(float* p, __mmask16 m, __m512 v) {
  if (m == 0xFFFF)
    _mm512_storeu_ps(p, v);
  else
    _mm512_mask_storeu_ps(p, m, v);
}

// HR_CPU_WINOGRAD: unset or 1 (or "4x4"), every pass: F(4x4, 3x3) where it pays in the forward
// pass and the data gradient, F(3x3, 4x4) where it pays in the weight gradient, F(2x2, 3x3) and
// F(3x3, 2x2) elsewhere; "2x2", every pass, F(2x2) only; "forward", the forward pass only (the
// gradients on the direct kernel and GEMMs: for comparing training runs); 0, none.
// F(3x3, 4x4)'s weight gradient is 1.2-1.8x faster than F(3x3, 2x2)'s, with a 5x larger rounding
// error (rms 1.6-2.3e-6 of the result's rms, against 3.6-5.0e-7): still three orders of
// magnitude below what bf16 products leave (2^-9 a product), with which the quick start trains
// as well (AP 0.698-0.704 over four seeds, against 0.698-0.713 for fp32 over three).
int winograd_mode() {  // 0 none, 1 forward only, 2 F(2x2) only, 3 the default
  static const int mode = [] {
    const char* e = std::getenv("HR_CPU_WINOGRAD");
    if (!e) return 3;
    const std::string_view v(e);
    return v == "0" ? 0 : v == "forward" ? 1 : v == "2x2" ? 2 : 3;
  }();
  return mode;
}
bool winograd_enabled() { return winograd_mode() > 0; }
bool winograd_backward_enabled() { return winograd_mode() > 1; }
bool winograd4_enabled() { return winograd_mode() != 0 && winograd_mode() != 2; }
bool winograd4_weight_grad_enabled() { return winograd_mode() == 3; }

// Tiles of kT x kT outputs (F(kT x kT, 3x3)) over the batch.
int64_t winograd_tiles(const ConvShape& s, int kT = 2) {
  return s.N * ((s.P + kT - 1) / kT) * ((s.Q + kT - 1) / kT);
}

// The weight gradient's condition (backward_weight_winograd).
bool winograd_weight_grad_ok(const ConvShape& s) {
  return s.R == 3 && s.S == 3 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 1 &&
         s.pad_w == 1 && s.C >= kWinoMinChannels && s.K >= kWinoMinChannels &&
         winograd_tiles(s) >= kWinoMinTiles && winograd_enabled();
}

// The forward pass's (forward_winograd; the data gradient's through its transposed shape).
bool winograd_ok(const ConvShape& s) {
  return winograd_weight_grad_ok(s) && winograd_tiles(s) * kWinoWeightsPerTile >= s.C * s.K;
}

// Tiles [t0, t0 + cnt) by image: fn(n, a, b, j0) for the image's tiles a..b-1 (numbered in
// the image, TT of them), j0 the first one's column in the block.
template <class Fn>
void image_segments(int64_t TT, int64_t t0, int64_t cnt, Fn&& fn) {
  for (int64_t t = t0, end = t0 + cnt; t < end;) {
    const int64_t n = t / TT, a = t % TT, b = std::min(TT, a + (end - t));
    fn(n, a, b, t - t0);
    t += b - a;
  }
}

// Tiles [t0, t0 + cnt) as runs within one tile row: fn(n, ty, tx0, tx1, j0) with j0 the run's
// first column in the block.
template <class Fn>
void tile_runs(int64_t TH, int64_t TW, int64_t t0, int64_t cnt, Fn&& fn) {
  for (int64_t t = t0, end = t0 + cnt; t < end;) {
    const int64_t row = t / TW, tx0 = t % TW, tx1 = std::min(TW, tx0 + (end - t));
    fn(row / TH, row % TH, tx0, tx1, t - t0);
    t += tx1 - tx0;
  }
}

// Overloads by tile size (kT x kT outputs) of the row planes and the 1-D transforms
// (winograd_row_planes, winograd_bt, winograd_at, winograd_g, winograd_a, winograd_gt); WinoS2
// picks F(4x4, 2x2)'s transforms (the stride-2 convolutions' phases, below).
template <int kT>
struct WinoTile {};
struct WinoS2 {};

// One Winograd algorithm F(kT x kT, r x r): tiles of kT x kT outputs, each from the kP x kP
// patch that starts kOff rows and columns before the tile's first output (kP = kT + r - 1);
// Tag picks its transforms. Its row planes are those of period kT (WinoTile<kT>); on a stride-2
// input's phases, of period 2kT (winograd_input's kStride).
template <int kT_, int kP_, int kOff_, class Tag_>
struct WinoAlg {
  static constexpr int kT = kT_, kP = kP_, kOff = kOff_;
  using Tag = Tag_;
};
using WinoF2 = WinoAlg<2, 4, -1, WinoTile<2>>;  // F(2x2, 3x3), pad 1
using WinoF4 = WinoAlg<4, 6, -1, WinoTile<4>>;  // F(4x4, 3x3), pad 1
using WinoF42 = WinoAlg<4, 5, 0, WinoS2>;       // F(4x4, 2x2), no padding
using WinoS2F42 = WinoAlg<4, 5, -1, WinoS2>;    // F(4x4, 2x2) on a stride-2 input's phases
template <int kT>
using WinoF = std::conditional_t<kT == 2, WinoF2, WinoF4>;

// The planes of one input row (winograd_input): p[s][q] = xr[2q + s - 1] for q < TW (0 outside
// the row's W values), s = 0..3 at p + s * pstride (offset -1 only).
void winograd_row_planes(WinoTile<2>, const float* xr, int64_t W, int64_t TW, float* p,
                         int64_t pstride, int /*off = -1*/) {
  const __m512i even = even_index(), odd = odd_index();
  __m512 prev = _mm512_setzero_ps();  // the odd values of the previous 16 columns
  for (int64_t q0 = 0; q0 < TW; q0 += kLanes) {
    const __mmask16 mq = lanes16(TW - q0);
    const int64_t i0 = 2 * q0;  // x[i0 .. i0 + 31], and the same 2 further on
    const __m512 a = _mm512_maskz_loadu_ps(lanes16(W - i0), shifted(xr, i0));
    const __m512 b = _mm512_maskz_loadu_ps(lanes16(W - i0 - kLanes), shifted(xr, i0 + kLanes));
    const __m512 a2 = _mm512_maskz_loadu_ps(lanes16(W - i0 - 2), shifted(xr, i0 + 2));
    const __m512 b2 =
        _mm512_maskz_loadu_ps(lanes16(W - i0 - 2 - kLanes), shifted(xr, i0 + 2 + kLanes));
    const __m512 ev = _mm512_permutex2var_ps(a, even, b);   // x[2q]
    const __m512 od = _mm512_permutex2var_ps(a, odd, b);    // x[2q + 1]
    const __m512 ev2 = _mm512_permutex2var_ps(a2, even, b2);  // x[2q + 2]
    // x[2q - 1]: the odd values one column back
    const __m512 od1 = _mm512_castsi512_ps(
        _mm512_alignr_epi32(_mm512_castps_si512(od), _mm512_castps_si512(prev), 15));
    prev = od;
    store_lanes(p + q0, mq, od1);
    store_lanes(p + pstride + q0, mq, ev);
    store_lanes(p + 2 * pstride + q0, mq, od);
    store_lanes(p + 3 * pstride + q0, mq, ev2);
  }
}

// M[kk][.] = sum_c U[c][kk] V[c][.] for kk < kMR, NR vectors of 16 columns (one xi).
template <int NR>
void winograd_gemm_block(const float* U, int64_t Kp, const float* V, int64_t ld, int64_t C,
                         float* M) {
  __m512 acc[kMR][NR];
#pragma GCC unroll 8
  for (int m = 0; m < kMR; ++m)
#pragma GCC unroll 3
    for (int j = 0; j < NR; ++j) acc[m][j] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (int64_t c = 0; c < C; ++c, U += Kp, V += ld) {
    __m512 b[NR];
#pragma GCC unroll 3
    for (int j = 0; j < NR; ++j) b[j] = _mm512_loadu_ps(V + j * kLanes);
#pragma GCC unroll 8
    for (int m = 0; m < kMR; ++m) {
      const __m512 wv = _mm512_set1_ps(U[m]);
#pragma GCC unroll 3
      for (int j = 0; j < NR; ++j) acc[m][j] = _mm512_fmadd_ps(wv, b[j], acc[m][j]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < kMR; ++m)
#pragma GCC unroll 3
    for (int j = 0; j < NR; ++j) _mm512_storeu_ps(M + m * ld + j * kLanes, acc[m][j]);
}

// Y = T X T^T for a kIn x kIn block X of vectors (16 tiles' values in each) and the 1-D
// transform f (kIn values -> kOut: f(in, out)): load(r, c) gives X[r][c], store(i, e, v) takes
// Y[i][e]. The weight, input and output transforms of forward_winograd_t.
template <int kIn, int kOut, class Load, class F, class Store>
inline void transform_2d(Load&& load, F&& f, Store&& store) {
  __m512 u[kIn][kOut];  // u[c][i] = (T X)[i][c]
#pragma GCC unroll 6
  for (int c = 0; c < kIn; ++c) {
    __m512 d[kIn];
#pragma GCC unroll 6
    for (int r = 0; r < kIn; ++r) d[r] = load(r, c);
    f(d, u[c]);
  }
#pragma GCC unroll 6
  for (int i = 0; i < kOut; ++i) {
    __m512 d[kIn], o[kOut];
#pragma GCC unroll 6
    for (int c = 0; c < kIn; ++c) d[c] = u[c][i];
    f(d, o);
#pragma GCC unroll 6
    for (int e = 0; e < kOut; ++e) store(i, e, o[e]);
  }
}

// ---- Winograd F(4x4, 3x3): 36 products per 4x4 outputs (F(2x2, 3x3): 16 per 2x2), so 1.78x
// fewer multiply-adds and 1.78x less transformed input per output, for more arithmetic in the
// transforms and a larger rounding error (points 0, +-1, +-2, inf; unit-variance data at 32 and
// 64 channels: rms error 1.3-1.7e-6 of the output's rms, largest 2.6e-5, against 2-3e-7 for
// F(2x2) and 3-4e-7 for the direct kernel): Y = A^T [(G g G^T) (.) (B^T d B)] A with
//   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0;
//          0 4 0 -5 0 1],
//   G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1],
//   A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1].

// F(4x4, 3x3) in place of F(2x2, 3x3) for a convolution that winograd_ok admits: from this many
// tiles of 4x4 outputs and one for every kWinoWeightsPerTile weights (its transformed weights,
// 36 x C x K floats, are read by every block of tiles: at W32's 128 channels on 16x12, batch 8,
// F(4x4) ran 1.45 ms against 1.23), and when its products (36 per tile, the padding of a map to
// a multiple of 4 included) are at most kWino4Products of F(2x2)'s (16 per tile): on maps like
// 8x6 or 6x5 the padding eats the gain. Its input transform is vectorised over the tiles of one
// image: below kWino4MinImageTiles an image (24x20: 30) leaves lanes idle and F(2x2) ran faster
// (8 x 32 x 24x20: 0.35 ms against 0.29; 8 x 64 x 12x10: 0.61 against 0.32).
constexpr int64_t kWino4MinTiles = 32, kWino4MinImageTiles = 32;
constexpr double kWino4Products = 0.7;
// The conditions on the map (all but the weights' bound).
bool winograd4_shape_ok(const ConvShape& s) {
  const int64_t t4 = winograd_tiles(s, 4);
  return t4 >= kWino4MinTiles && t4 / s.N >= kWino4MinImageTiles &&
         36.0 * double(t4) <= kWino4Products * 16.0 * double(winograd_tiles(s));
}
bool winograd4_ok(const ConvShape& s) {
  return winograd4_enabled() && winograd4_shape_ok(s) &&
         winograd_tiles(s, 4) * kWinoWeightsPerTile >= s.C * s.K;
}

// The weight gradient's (backward_weight_winograd): as winograd4_ok
// but for the weights' bound (no weight transform there), in the passes winograd_weight_grad_ok
// admits.
bool winograd4_weight_grad_ok(const ConvShape& s) {
  return winograd4_weight_grad_enabled() && winograd4_shape_ok(s);
}

// a[v] = xr[i0 + 16v .. i0 + 16v + 15] for v < NV, 0 outside the row's W values.
template <int NV>
inline void load_row_span(const float* xr, int64_t W, int64_t i0, __m512* a) {
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    const int64_t o = i0 + v * kLanes;
    const __mmask16 m = lanes16(W - o) & static_cast<__mmask16>(~lanes16(-o));
    a[v] = _mm512_maskz_loadu_ps(m, shifted(xr, o));
  }
}

// The planes of one input row (winograd_input<WinoF4>, <WinoF42>): p[s][q] = xr[4q + s + off]
// for q < TW (0 outside the row's W values), s = 0..5 at p + s * pstride; off is -1 or 0.
void winograd_row_planes(WinoTile<4>, const float* xr, int64_t W, int64_t TW, float* p,
                         int64_t pstride, int off) {
  const __m512i even = even_index(), odd = odd_index();
  const auto at = [&](int64_t i) { return i >= 0 && i < W ? xr[i] : 0.f; };
  for (int64_t q0 = 0; q0 < TW; q0 += kLanes) {
    const __mmask16 mq = lanes16(TW - q0);
    const int64_t i0 = 4 * q0 + off;  // z[j] = x[i0 + j], j = 0..63
    __m512 a[4];
    load_row_span<4>(xr, W, i0, a);
    const __m512 e_lo = _mm512_permutex2var_ps(a[0], even, a[1]);  // z[2j], j < 16
    const __m512 o_lo = _mm512_permutex2var_ps(a[0], odd, a[1]);   // z[2j + 1]
    const __m512 e_hi = _mm512_permutex2var_ps(a[2], even, a[3]);  // z[32 + 2j]
    const __m512 o_hi = _mm512_permutex2var_ps(a[2], odd, a[3]);
    const __m512 ph0 = _mm512_permutex2var_ps(e_lo, even, e_hi);  // z[4q]
    const __m512 ph2 = _mm512_permutex2var_ps(e_lo, odd, e_hi);   // z[4q + 2]
    const __m512 ph1 = _mm512_permutex2var_ps(o_lo, even, o_hi);  // z[4q + 1]
    const __m512 ph3 = _mm512_permutex2var_ps(o_lo, odd, o_hi);   // z[4q + 3]
    // z[4q + 4], z[4q + 5]: phases 0 and 1 one tile on, the last lane from the next 64 values
    const __m512 ph4 = _mm512_castsi512_ps(_mm512_alignr_epi32(
        _mm512_castps_si512(_mm512_set1_ps(at(i0 + 64))), _mm512_castps_si512(ph0), 1));
    const __m512 ph5 = _mm512_castsi512_ps(_mm512_alignr_epi32(
        _mm512_castps_si512(_mm512_set1_ps(at(i0 + 65))), _mm512_castps_si512(ph1), 1));
    store_lanes(p + q0, mq, ph0);
    store_lanes(p + pstride + q0, mq, ph1);
    store_lanes(p + 2 * pstride + q0, mq, ph2);
    store_lanes(p + 3 * pstride + q0, mq, ph3);
    store_lanes(p + 4 * pstride + q0, mq, ph4);
    store_lanes(p + 5 * pstride + q0, mq, ph5);
  }
}

// (B^T d) for the six values d[0..5] of a column (or row) of 16 patches.
inline void winograd_bt(WinoTile<4>, const __m512* d, __m512* o) {
  const __m512 c2 = _mm512_set1_ps(2.f), c4 = _mm512_set1_ps(4.f), c5 = _mm512_set1_ps(5.f);
  const __m512 t1 = _mm512_add_ps(d[1], d[2]), t2 = _mm512_add_ps(d[3], d[4]);
  const __m512 t3 = _mm512_sub_ps(d[1], d[2]), t4 = _mm512_sub_ps(d[4], d[3]);
  const __m512 t5 = _mm512_sub_ps(d[3], d[1]), t6 = _mm512_sub_ps(d[4], d[2]);
  o[0] = _mm512_fmadd_ps(c4, d[0], _mm512_fnmadd_ps(c5, d[2], d[4]));
  o[1] = _mm512_fnmadd_ps(c4, t1, t2);
  o[2] = _mm512_fmadd_ps(c4, t3, t4);
  o[3] = _mm512_fmadd_ps(c2, t5, t6);
  o[4] = _mm512_fnmadd_ps(c2, t5, t6);
  o[5] = _mm512_fmadd_ps(c4, d[1], _mm512_fnmadd_ps(c5, d[3], d[5]));
}

// (A^T m) for six values m[0..5]: four outputs.
inline void winograd_at(WinoTile<4>, const __m512* m, __m512* y) {
  const __m512 c2 = _mm512_set1_ps(2.f), c4 = _mm512_set1_ps(4.f), c8 = _mm512_set1_ps(8.f);
  const __m512 a = _mm512_add_ps(m[1], m[2]), b = _mm512_sub_ps(m[1], m[2]);
  const __m512 c = _mm512_add_ps(m[3], m[4]), d = _mm512_sub_ps(m[3], m[4]);
  y[0] = _mm512_add_ps(_mm512_add_ps(m[0], a), c);
  y[1] = _mm512_fmadd_ps(c2, d, b);
  y[2] = _mm512_fmadd_ps(c4, c, a);
  y[3] = _mm512_add_ps(_mm512_fmadd_ps(c8, d, b), m[5]);
}

// (G g) of F(2x2, 3x3) and F(4x4, 3x3) for three values g of a column (or row) of 16 kernels:
// G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1] and the 6x3 G above.
inline void winograd_g(WinoTile<2>, const __m512* g, __m512* o) {
  const __m512 g0 = g[0], g1 = g[1], g2 = g[2];
  const __m512 half = _mm512_set1_ps(0.5f), s02 = _mm512_add_ps(g0, g2);
  o[0] = g0;
  o[1] = _mm512_mul_ps(half, _mm512_add_ps(s02, g1));
  o[2] = _mm512_mul_ps(half, _mm512_sub_ps(s02, g1));
  o[3] = g2;
}
inline void winograd_g(WinoTile<4>, const __m512* g, __m512* o) {
  const __m512 g0 = g[0], g1 = g[1], g2 = g[2];
  const __m512 s02 = _mm512_add_ps(g0, g2);
  const __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.f / 24.f), g0,
                                   _mm512_mul_ps(_mm512_set1_ps(1.f / 6.f), g2));
  const __m512 q = _mm512_mul_ps(_mm512_set1_ps(1.f / 12.f), g1);
  const __m512 m6 = _mm512_set1_ps(-1.f / 6.f);
  o[0] = _mm512_mul_ps(_mm512_set1_ps(0.25f), g0);
  o[1] = _mm512_mul_ps(m6, _mm512_add_ps(s02, g1));
  o[2] = _mm512_mul_ps(m6, _mm512_sub_ps(s02, g1));
  o[3] = _mm512_add_ps(p, q);
  o[4] = _mm512_sub_ps(p, q);
  o[5] = g2;
}

// U[xi][c][k] = (G g G^T)[xi] of F(kT x kT, 3x3) for g = w[k, c] (3x3); k padded to Kp with
// zeros. 16 output channels at a time, one per lane, all input channels of one such group in
// turn: the group's 16 weight rows stay in the first-level TLB and cache.
template <int kT>
void winograd_weights(const ConvShape& s, const float* w, int64_t Kp, float* U, bool parallel) {
  constexpr int kP = kT + 2;
  const int64_t C = s.C, K = s.K;
  const __m512i kstep = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
      _mm512_set1_epi32(static_cast<int>(C * 9)));
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t kb = 0; kb < Kp; kb += kLanes)
    for (int64_t c = 0; c < C; ++c) {
      const __mmask16 mk = lanes16(K - kb), ms = lanes16(Kp - kb);
      const float* g = w + (kb * C + c) * 9;
      __m512 gv[9];
#pragma GCC unroll 9
      for (int i = 0; i < 9; ++i)
        gv[i] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mk, kstep, g + i, 4);
      transform_2d<3, kP>(
          [&](int r, int j) { return gv[3 * r + j]; },
          [](const __m512* in, __m512* out) { winograd_g(WinoTile<kT>{}, in, out); },
          [&](int r, int e, __m512 v) {
            store_lanes(U + ((kP * r + e) * C + c) * Kp + kb, ms, v);
          });
    }
}

// (B^T d) and (A^T m) of F(2x2, 3x3) for four values of a column (or row) of 16 patches:
// B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], A^T = [1 1 1 0; 0 1 -1 -1].
inline void winograd_bt(WinoTile<2>, const __m512* d, __m512* o) {
  o[0] = _mm512_sub_ps(d[0], d[2]);
  o[1] = _mm512_add_ps(d[1], d[2]);
  o[2] = _mm512_sub_ps(d[2], d[1]);
  o[3] = _mm512_sub_ps(d[1], d[3]);
}
inline void winograd_at(WinoTile<2>, const __m512* m, __m512* y) {
  y[0] = _mm512_add_ps(_mm512_add_ps(m[0], m[1]), m[2]);
  y[1] = _mm512_sub_ps(_mm512_sub_ps(m[1], m[2]), m[3]);
}

// ---- Winograd F(4x4, 2x2) (points 0, 1, -1, 2, inf): the 3x3 stride-2 pad-1 convolutions by
// phases (forward_winograd_s2 and the passes below it). 25 products per 4x4 outputs of a 2x2
// filter (16 x 4 by the direct loops); rms rounding error 1.0e-6 of the output's rms at 64
// channels in float (tools/winograd_f42.py derives them and measures it):
//   B^T = [2 -1 -2 1 0; 0 -2 -1 1 0; 0 2 -3 1 0; 0 -1 0 1 0; 0 2 -1 -2 1],
//   G = [1/2 0; -1/2 -1/2; -1/6 1/6; 1/6 1/3; 0 1],
//   A^T = [1 1 1 1 0; 0 1 -1 2 0; 0 1 1 4 0; 0 1 -1 8 1].
inline void winograd_bt(WinoS2, const __m512* d, __m512* o) {
  const __m512 c2 = _mm512_set1_ps(2.f);
  const __m512 t31 = _mm512_sub_ps(d[3], d[1]), t32 = _mm512_sub_ps(d[3], d[2]);
  o[0] = _mm512_fmadd_ps(c2, _mm512_sub_ps(d[0], d[2]), t31);
  o[1] = _mm512_fnmadd_ps(c2, d[1], t32);
  o[2] = _mm512_fmadd_ps(c2, _mm512_sub_ps(d[1], d[2]), t32);
  o[3] = t31;
  o[4] = _mm512_fnmadd_ps(c2, t31, _mm512_sub_ps(d[4], d[2]));
}
inline void winograd_at(WinoS2, const __m512* m, __m512* y) {
  const __m512 p = _mm512_add_ps(m[1], m[2]), q = _mm512_sub_ps(m[1], m[2]);
  y[0] = _mm512_add_ps(_mm512_add_ps(m[0], p), m[3]);
  y[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.f), m[3], q);
  y[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.f), m[3], p);
  y[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.f), m[3], q), m[4]);
}
inline void winograd_g(WinoS2, const __m512* g, __m512* o) {
  const __m512 sixth = _mm512_set1_ps(1.f / 6.f);
  o[0] = _mm512_mul_ps(_mm512_set1_ps(0.5f), g[0]);
  o[1] = _mm512_mul_ps(_mm512_set1_ps(-0.5f), _mm512_add_ps(g[0], g[1]));
  o[2] = _mm512_mul_ps(sixth, _mm512_sub_ps(g[1], g[0]));
  o[3] = _mm512_fmadd_ps(sixth, g[0], _mm512_mul_ps(_mm512_set1_ps(1.f / 3.f), g[1]));
  o[4] = g[1];
}
// A Winograd pass's operand map (C channels of H x W; its tiles' patches read it) and tile grid
// (TH x TW tiles an image).
struct WinoGrid {
  int64_t C, H, W, TH, TW;
};
// The grid of a convolution's forward pass: the input, tiles of kT x kT outputs.
WinoGrid wino_grid(const ConvShape& s, int kT) {
  return {s.C, s.H, s.W, (s.P + kT - 1) / kT, (s.Q + kT - 1) / kT};
}

// V[xi][c][j] = (B^T d B)[xi] of tile t0 + j, channel c, for the block's cnt tiles (algorithm A:
// xi < kP^2); columns cnt..ld-1 are left as they are. The kP x kP patch d of tile (ty, tx) is
// x[kT*ty + kOff ..][kT*tx + kOff ..] (0 outside the map). Per image and channel, the rows the
// block's tiles read are first copied into (kT + 2) x kT planes
// pl[s][par][i][q] = x[kT(ty0 + i) + par + kOff][kT*q + s + kOff] (TW columns; the row planes of
// winograd_row_planes): patch element (r, s) of the image's tile
// t = ty*TW + tx is then pl[s][r % kT][t - ty0*TW + (r / kT)*TW], contiguous in t across tile
// rows, so the transform is one vector loop over the image's tiles.
// kStride 2: the stride-2 convolutions' phases (forward_winograd_s2), V[xi][4c + 2p + q][j] the
// transform of phase (p, q) of channel c, whose patch element (i, j) is x's element
// (2i + p, 2j + q) of the tile's 10 x 10 (planes of period 2kT = 8).
template <class A, int kStride = 1>
void winograd_input(const WinoGrid& g, const float* x, int64_t t0, int64_t cnt, int64_t ld,
                    float* V) {
  constexpr int kT = A::kT, kP = A::kP, kOff = A::kOff;
  constexpr int kPer = kT * kStride, kExt = kP * kStride, kPhases = kStride * kStride;
  static_assert(kExt - kPer <= kPer, "a patch reaches one tile row beyond its own");
  const int64_t C = g.C, H = g.H, W = g.W, TW = g.TW;
  const int64_t TT = g.TH * TW, xstride = kPhases * C * ld;  // V from one xi to the next
  thread_local Buf<float> planes_buf;
  image_segments(TT, t0, cnt, [&](int64_t n, int64_t a, int64_t b, int64_t j0) {
    const int64_t ty0 = a / TW, rows = (b - 1) / TW - ty0 + 2, plane = rows * TW;
    // planes [s][par][rows][TW] (kPer + 2 of them as the row planes write them), plus a vector
    // of slack for the last loads
    float* pl = grow(planes_buf, (kPer + 2) * kPer * plane + kLanes);
    const int64_t m = b - a, first = a - ty0 * TW;
    int64_t off[kExt][kExt];  // the tile's input element (r, s)
    for (int r = 0; r < kExt; ++r)
      for (int sc = 0; sc < kExt; ++sc)
        off[r][sc] = (sc * kPer + r % kPer) * plane + (r / kPer) * TW + first;
    // the input rows of the block's tiles, clamped to the map: of the last row of planes, the
    // block reads the first kExt - kPer parities only
    const int64_t h0 = std::max<int64_t>(kPer * ty0 + kOff, 0);
    const int64_t h1 = std::min<int64_t>(kPer * (ty0 + rows - 1) + kExt - kPer + kOff, H);
    for (int64_t c = 0; c < C; ++c) {
      const float* xc = x + (n * C + c) * H * W;
      if (c + 2 < C) {  // the rows two channels on, ahead of their use
        const char* next = reinterpret_cast<const char*>(xc + 2 * H * W + h0 * W);
        for (int64_t o = 0; o < (h1 - h0) * W * 4; o += 64) _mm_prefetch(next + o, _MM_HINT_T0);
      }
      for (int64_t i = 0; i < rows; ++i)
        for (int par = 0; par < (i + 1 < rows ? kPer : kExt - kPer); ++par) {
          float* p = pl + par * plane + i * TW;
          const int64_t ih = kPer * (ty0 + i) + par + kOff;
          if (ih < 0 || ih >= H)
            for (int sc = 0; sc < kPer + 2; ++sc) fill(p + sc * kPer * plane, TW, 0.f);
          else
            winograd_row_planes(WinoTile<kPer>{}, xc + ih * W, W, TW, p, kPer * plane, kOff);
        }
      for (int ph = 0; ph < kPhases; ++ph) {
        const int pr = ph / kStride, pc = ph % kStride;
        float* vc = V + (kPhases * c + ph) * ld + j0;
        for (int64_t j = 0; j < m; j += kLanes) {
          const __mmask16 mj = lanes16(m - j);
          transform_2d<kP, kP>(
              [&](int r, int sc) {
                return _mm512_loadu_ps(pl + off[kStride * r + pr][kStride * sc + pc] + j);
              },
              [](const __m512* in, __m512* out) { winograd_bt(typename A::Tag{}, in, out); },
              [&](int i, int e, __m512 v) {
                store_lanes(vc + (kP * i + e) * xstride + j, mj, v);
              });
        }
      }
    }
  });
}

// y[n, k, kT*ty + a, kT*tx + b] = (A^T m A)[a][b] (+ bias, residual, ReLU) for k in [k0, k1) and
// the block's tiles, m[xi] = M[xi][k - k0][j] (algorithm A): computed for the whole block into
// Y[a][b][j], then stored by tile row, the kT columns of each tile interleaved.
template <class A>
void winograd_output(const ConvShape& s, const float* M, int64_t kc, int64_t ld, int64_t k0,
                     int64_t k1, int64_t t0, int64_t cnt, const float* bias,
                     const kern::ConvEpilogue& ep, float* y) {
  constexpr int kT = A::kT, kP = A::kP;
  const int64_t K = s.K, P = s.P, Q = s.Q, TH = (P + kT - 1) / kT, TW = (Q + kT - 1) / kT;
  thread_local Buf<float> out_buf;
  float* out = grow(out_buf, kT * kT * kWinoTB + kLanes);  // Y[a][b][j], slack for the last loads
  const int64_t xs = kc * ld;  // M from one xi to the next
  const __m512i lo = interleave_lo_index(), hi = interleave_hi_index();
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t k = k0; k < k1; ++k) {
    const float* mk = M + (k - k0) * ld;
    const __m512 bv = _mm512_set1_ps(bias ? bias[k] : 0.f);
    for (int64_t j = 0; j < cnt; j += kLanes) {
      transform_2d<kP, kT>(
          [&](int r, int e) { return _mm512_loadu_ps(mk + (kP * r + e) * xs + j); },
          [](const __m512* in, __m512* o) { winograd_at(typename A::Tag{}, in, o); },
          [&](int a, int b, __m512 v) {
            _mm512_storeu_ps(out + (kT * a + b) * kWinoTB + j, _mm512_add_ps(v, bv));
          });
    }
    tile_runs(TH, TW, t0, cnt, [&](int64_t n, int64_t ty, int64_t tx0, int64_t tx1, int64_t j0) {
      const int64_t cols = std::min(kT * (tx1 - tx0), Q - kT * tx0);  // output columns of the run
      for (int a = 0; a < kT; ++a) {
        const int64_t oh = kT * ty + a;
        if (oh >= P) break;
        const int64_t at = ((n * K + k) * P + oh) * Q + kT * tx0;
        float* yr = y + at;
        const float* rr = ep.residual ? ep.residual + at : nullptr;
        const float* ya = out + (kT * a) * kWinoTB + j0;  // column b at ya + b * kWinoTB
        for (int64_t j = 0; kT * j < cols; j += kLanes) {
          __m512 v[kT], e[kT];  // e: the kT columns of 16 tiles, interleaved
#pragma GCC unroll 4
          for (int b = 0; b < kT; ++b) v[b] = _mm512_loadu_ps(ya + b * kWinoTB + j);
          if constexpr (kT == 2) {
            e[0] = _mm512_permutex2var_ps(v[0], lo, v[1]);
            e[1] = _mm512_permutex2var_ps(v[0], hi, v[1]);
          } else {
            const __m512 a_lo = _mm512_permutex2var_ps(v[0], lo, v[2]);
            const __m512 a_hi = _mm512_permutex2var_ps(v[0], hi, v[2]);
            const __m512 b_lo = _mm512_permutex2var_ps(v[1], lo, v[3]);
            const __m512 b_hi = _mm512_permutex2var_ps(v[1], hi, v[3]);
            e[0] = _mm512_permutex2var_ps(a_lo, lo, b_lo);
            e[1] = _mm512_permutex2var_ps(a_lo, hi, b_lo);
            e[2] = _mm512_permutex2var_ps(a_hi, lo, b_hi);
            e[3] = _mm512_permutex2var_ps(a_hi, hi, b_hi);
          }
#pragma GCC unroll 4
          for (int h = 0; h < kT; ++h) {
            const int64_t c0 = kT * j + h * kLanes;
            const __mmask16 mc = lanes16(cols - c0);
            if (!mc) break;
            if (rr) e[h] = _mm512_add_ps(e[h], _mm512_maskz_loadu_ps(mc, rr + c0));
            if (ep.relu) e[h] = _mm512_max_ps(e[h], zero);
            store_lanes(yr + c0, mc, e[h]);
          }
        }
      }
    });
  }
}

// forward_winograd_t's work units: blocks of tb tiles (48, 32 or 16), each split into `groups`
// groups of output-channel chunks (a unit transforms its block's input, then runs its group's
// GEMMs and output transforms). Chosen by simulating OpenMP's static partition of the units
// over the threads and taking the least loaded busiest thread: a unit costs its block's tile
// columns times its output channels (narrower blocks' GEMMs counted slower) plus its input
// transform (as kWinoTransformK output channels). Small maps need it (W32 at batch 1: 48 tiles
// for 2 threads, best as one block with two groups; F(4x4) on 4 x 32 x 24x20: 120 tiles, best as
// 4 blocks of 32). Any blocking gives the same bits: each output is summed over the channels in
// order, in one unit.
struct WinoBlocking {
  int64_t tb, groups;
};
constexpr double kWinoTransformK = 3.0;
WinoBlocking winograd_blocking(int64_t T, int64_t chunks, int64_t KC, int nthreads) {
  WinoBlocking best{kWinoTB, 1};
  if (nthreads <= 1) return best;
  double best_cost = 1e300;
  for (int64_t nr = kNR; nr >= 1; --nr) {
    const int64_t tb = nr * kLanes, blocks = (T + tb - 1) / tb;
    for (int64_t groups = 1; groups <= std::min<int64_t>(chunks, 4 * nthreads); ++groups) {
      const int64_t units = blocks * groups, q = units / nthreads, r = units % nthreads;
      double worst = 0;
      for (int64_t t = 0, u = 0; t < nthreads; ++t) {  // libgomp's static partition
        double load = 0;
        for (int64_t end = u + q + (t < r); u < end; ++u) {
          const int64_t b = u / groups, g = u % groups;
          const int64_t cnt = std::min(tb, T - b * tb), vecs = (cnt + kLanes - 1) / kLanes;
          const int64_t nch = (g + 1) * chunks / groups - g * chunks / groups;
          const double eff = vecs == 3 ? 1.0 : vecs == 2 ? 1.08 : 1.3;
          load += double(vecs * kLanes) * eff * double(nch * KC) + kWinoTransformK * double(cnt);
        }
        worst = std::max(worst, load);
      }
      if (worst < best_cost) best_cost = worst, best = {tb, groups};
    }
  }
  return best;
}

// Output channels padded to kMR: the transformed weights' Kp.
int64_t padded_k(const ConvShape& s) { return (s.K + kMR - 1) / kMR * kMR; }

// The products of a Winograd pass (algorithm A) over T tiles: per block of tiles,
// input(t0, cnt, ld, V) writes the block's V [kP^2][C][ld], then per chunk of output channels
// M[xi] = U[xi]^T V[xi] (U: the transformed weights [kP^2][C][Kp], K output channels padded to
// Kp) and output(M, kc, ld, k0, k1, t0, cnt) takes M [kP^2][kc][ld] for channels [k0, k1).
// bf16: the products in bf16 (forward_winograd_t's F(2x2) only).
template <class A, class In, class Out>
void winograd_products(int64_t C, int64_t K, int64_t Kp, int64_t T, const float* U,
                       [[maybe_unused]] bool bf16, In&& input, Out&& output) {
  constexpr int kX = A::kP * A::kP;  // transformed elements per tile
  // output channels per chunk: the chunk's products (kX x KC x kWinoTB floats) in L2
  constexpr int64_t KC = A::kT == 2 ? kWinoKC : kWinoKC / 2;
  const int nthreads = num_threads();
  const int64_t chunks = (Kp + KC - 1) / KC;
  const WinoBlocking bl = winograd_blocking(T, chunks, KC, nthreads);
  const int64_t tb = bl.tb, groups = bl.groups, blocks = (T + tb - 1) / tb;
#if HR_BF16_KERNELS
  // bf16: U[xi]^T packed (rows = output channels) for every block; V[xi] packed per block
  const int64_t uw = bf16 ? bf16_packed_a_words(Kp, C) : 0, vw = bf16 ? bf16_panel_words(C) : 0;
  thread_local Buf<uint32_t> ub_buf;
  uint32_t* Ub = bf16 ? grow(ub_buf, kX * uw) : nullptr;
  if (bf16) {
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (int xi = 0; xi < kX; ++xi)
      bf16_pack_a(Kp, C, U + xi * C * Kp, Kp, /*transposed=*/true, Ub + xi * uw);
  }
#endif
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
  for (int64_t u = 0; u < blocks * groups; ++u) {
    const int64_t b = u / groups, g = u % groups;
    const int64_t t0 = b * tb, cnt = std::min(tb, T - t0);
    const int nr = static_cast<int>((cnt + kLanes - 1) / kLanes);
    thread_local Buf<float> v_buf, m_buf;
    float* V = grow(v_buf, kX * C * tb);
    float* M = grow(m_buf, kX * KC * tb);
    input(t0, cnt, tb, V);
    // columns past the block's tiles up to nr vectors: zero (their outputs are not stored)
    if (cnt < nr * kLanes)
      for (int64_t r = 0; r < kX * C; ++r) fill(V + r * tb + cnt, nr * kLanes - cnt, 0.f);
#if HR_BF16_KERNELS
    thread_local Buf<uint32_t> vb_buf;
    uint32_t* Vb = bf16 ? grow(vb_buf, kX * vw) : nullptr;
    if (bf16)
      for (int xi = 0; xi < kX; ++xi) bf16_pack_b_panel(C, cnt, V + xi * C * tb, tb, Vb + xi * vw);
#endif
    for (int64_t ch = g * chunks / groups; ch < (g + 1) * chunks / groups; ++ch) {
      const int64_t k0 = ch * KC, kc = std::min(KC, Kp - k0);
#if HR_BF16_KERNELS
      if (bf16) {
        for (int xi = 0; xi < kX; ++xi)
          gemm_bf16_panel(kc, nr * kLanes, C, Ub + xi * uw + bf16_packed_a_offset(k0, C),
                          Vb + xi * vw, M + xi * kc * tb, tb, false);
        output(M, kc, tb, k0, std::min(K, k0 + kc), t0, cnt);
        continue;
      }
#endif
      for (int xi = 0; xi < kX; ++xi)
        for (int64_t kk = 0; kk < kc; kk += kMR) {
          const float* Ub = U + xi * C * Kp + k0 + kk;
          const float* Vb = V + xi * C * tb;
          float* Mb = M + (xi * kc + kk) * tb;
          if (nr == 3)
            winograd_gemm_block<3>(Ub, Kp, Vb, tb, C, Mb);
          else if (nr == 2)
            winograd_gemm_block<2>(Ub, Kp, Vb, tb, C, Mb);
          else
            winograd_gemm_block<1>(Ub, Kp, Vb, tb, C, Mb);
        }
      output(M, kc, tb, k0, std::min(K, k0 + kc), t0, cnt);
    }
  }
}

// The forward pass of F(kT x kT, 3x3) with the transformed weights U [(kT + 2)^2][C][Kp]
// (winograd_weights<kT>).
template <int kT>
void forward_winograd_t(const ConvShape& s, const float* x, const float* U, const float* bias,
                        float* y, const kern::ConvEpilogue& ep) {
  using A = WinoF<kT>;
  // bf16 products in F(2x2) only: F(4x4)'s transforms amplify the operands' rounding (4.4x the
  // bound of rounding x and w, at 16 channels, where F(2x2) stays within it), and F(4x4) in fp32
  // ran faster than F(2x2) in bf16 where it applies (16 channels on 48x40, batch 8: 0.25 ms
  // against 0.34); F(2x2) in bf16 against fp32: 0.24 / 0.26 ms at 32 channels on 24x20, 0.26 /
  // 0.30 at 64 on 12x10
  const bool bf16 = kT == 2 && use_bf16();
  const WinoGrid g = wino_grid(s, kT);
  winograd_products<A>(
      s.C, s.K, padded_k(s), winograd_tiles(s, kT), U, bf16,
      [&](int64_t t0, int64_t cnt, int64_t ld, float* V) {
        winograd_input<A>(g, x, t0, cnt, ld, V);
      },
      [&](const float* M, int64_t kc, int64_t ld, int64_t k0, int64_t k1, int64_t t0,
          int64_t cnt) { winograd_output<A>(s, M, kc, ld, k0, k1, t0, cnt, bias, ep, y); });
}

// The weights transformed on every call.
void forward_winograd(const ConvShape& s, const float* x, const float* w, const float* bias,
                      float* y, const kern::ConvEpilogue& ep) {
  const bool f4 = winograd4_ok(s), parallel = num_threads() > 1;
  thread_local Buf<float> u_buf;
  float* U = grow(u_buf, (f4 ? 36 : 16) * s.C * padded_k(s));
  if (f4) {
    winograd_weights<4>(s, w, padded_k(s), U, parallel);
    forward_winograd_t<4>(s, x, U, bias, y, ep);
  } else {
    winograd_weights<2>(s, w, padded_k(s), U, parallel);
    forward_winograd_t<2>(s, x, U, bias, y, ep);
  }
}

// Prepacked weights (inference graphs: transformed once): F(2x2) without the per-call
// transform's bound on the weights (W32's 256 channels on 8x6, batch 8: 1.52 ms against the
// direct kernel's 2.12) and from kWinoPrepackedMinTiles tiles; F(4x4) where forward_winograd
// takes it (its blocks each read all 36 x C x K transformed weights: batch 1, 64 channels on
// 32x24 ran 0.21 ms against F(2x2)'s 0.18 with the weight transform); 0: neither applies.
constexpr int64_t kWinoPrepackedMinTiles = 32;
int prepacked_kind(const ConvShape& s) {
  if (s.R != 3 || s.S != 3 || s.stride_h != 1 || s.stride_w != 1 || s.pad_h != 1 ||
      s.pad_w != 1 || s.C < kWinoMinChannels || s.K < kWinoMinChannels || !winograd_enabled() ||
      winograd_tiles(s) < kWinoPrepackedMinTiles)
    return 0;
  return winograd4_ok(s) ? 4 : 2;
}
// ---- Winograd F(3x3, kT x kT) for the weight gradient of the same convolutions ----
// dw[k, c] = sum over kT x kT output tiles of the correlation of the tile's (kT + 2)^2 input
// patch d with its kT x kT gradient h: the 3x3 output of F(3x3, kT x kT), whose matrices are
// F(kT x kT, 3x3)'s with the roles swapped: dw = G^T [sum_tiles (A h A^T) (.) (B^T d B)] G, with
// the forward pass's B and G, and A (kT + 2 x kT) the transpose of its A^T. The sum over tiles
// is (kT + 2)^2 GEMMs M[xi][K, C] += H[xi] V[xi]^T per block of tiles (Eigen), each thread over
// a fixed, contiguous share of the blocks into its own M; the shares are summed and transformed
// at the end. F(3x3, 4x4) (HR_CPU_WINOGRAD=4x4) where the forward pass would take F(4x4, 3x3)
// but for the weights' bound (winograd4_weight_grad_ok).

// (A h) for kT values h of a column (or row) of 16 tiles' gradients; A = [1 0; 1 1; 1 -1; 0 -1]
// and [1 0 0 0; 1 1 1 1; 1 -1 1 -1; 1 2 4 8; 1 -2 4 -8; 0 0 0 1].
inline void winograd_a(WinoTile<2>, const __m512* h, __m512* o) {
  const __m512 zero = _mm512_setzero_ps();
  o[0] = h[0];
  o[1] = _mm512_add_ps(h[0], h[1]);
  o[2] = _mm512_sub_ps(h[0], h[1]);
  o[3] = _mm512_sub_ps(zero, h[1]);
}
inline void winograd_a(WinoTile<4>, const __m512* h, __m512* o) {
  const __m512 c2 = _mm512_set1_ps(2.f), c4 = _mm512_set1_ps(4.f), c8 = _mm512_set1_ps(8.f);
  const __m512 e = _mm512_add_ps(h[0], h[2]), od = _mm512_add_ps(h[1], h[3]);
  const __m512 e4 = _mm512_fmadd_ps(c4, h[2], h[0]);
  const __m512 o8 = _mm512_fmadd_ps(c2, h[1], _mm512_mul_ps(c8, h[3]));
  o[0] = h[0];
  o[1] = _mm512_add_ps(e, od);
  o[2] = _mm512_sub_ps(e, od);
  o[3] = _mm512_add_ps(e4, o8);
  o[4] = _mm512_sub_ps(e4, o8);
  o[5] = h[3];
}

// (G^T m) for kT + 2 values m: three outputs; G^T = [1 .5 .5 0; 0 .5 -.5 0; 0 .5 .5 1] and the
// transpose of F(4x4, 3x3)'s G.
inline void winograd_gt(WinoTile<2>, const __m512* m, __m512* o) {
  const __m512 half = _mm512_set1_ps(0.5f), p = _mm512_add_ps(m[1], m[2]);
  o[0] = _mm512_fmadd_ps(half, p, m[0]);
  o[1] = _mm512_mul_ps(half, _mm512_sub_ps(m[1], m[2]));
  o[2] = _mm512_fmadd_ps(half, p, m[3]);
}
inline void winograd_gt(WinoTile<4>, const __m512* m, __m512* o) {
  const __m512 p12 = _mm512_add_ps(m[1], m[2]), d12 = _mm512_sub_ps(m[1], m[2]);
  const __m512 p34 = _mm512_add_ps(m[3], m[4]), d34 = _mm512_sub_ps(m[3], m[4]);
  const __m512 m6 = _mm512_set1_ps(-1.f / 6.f);
  o[0] = _mm512_fmadd_ps(_mm512_set1_ps(0.25f), m[0],
                         _mm512_fmadd_ps(m6, p12, _mm512_mul_ps(_mm512_set1_ps(1.f / 24.f), p34)));
  o[1] = _mm512_fmadd_ps(m6, d12, _mm512_mul_ps(_mm512_set1_ps(1.f / 12.f), d34));
  o[2] = _mm512_add_ps(_mm512_fmadd_ps(m6, p12, _mm512_mul_ps(_mm512_set1_ps(1.f / 6.f), p34)),
                       m[5]);
}

// H[xi][k - k0][j] = (A h A^T)[xi] for k in [k0, k1) and tile t0 + j, h = dy[n, k, kT*ty ..,
// kT*tx ..] (kT x kT, 0 outside the map); dy's rows split into column phases as in
// winograd_input (planes s = 1..kT of its row planes at offset -1 are the tile's kT columns);
// algorithm A's A (kP x kT).
template <class A>
void winograd_dy(const ConvShape& s, const float* dy, int64_t k0, int64_t k1, int64_t t0,
                 int64_t cnt, int64_t ld, float* H) {
  constexpr int kT = A::kT, kP = A::kP;
  const int64_t K = s.K, P = s.P, Q = s.Q, TH = (P + kT - 1) / kT, TW = (Q + kT - 1) / kT;
  const int64_t TT = TH * TW, xstride = (k1 - k0) * ld;  // H from one xi to the next
  thread_local Buf<float> planes_buf;
  image_segments(TT, t0, cnt, [&](int64_t n, int64_t a, int64_t b, int64_t j0) {
    const int64_t ty0 = a / TW, rows = (b - 1) / TW - ty0 + 1, plane = rows * TW;
    // planes [s][row phase][rows][TW] as the row planes are written, plus slack for the last
    // loads
    float* pl = grow(planes_buf, (kT + 2) * kT * plane + kLanes);
    const int64_t m = b - a, first = a - ty0 * TW;
    for (int64_t k = k0; k < k1; ++k) {
      const float* gk = dy + (n * K + k) * P * Q;
      for (int64_t i = 0; i < rows; ++i)
        for (int par = 0; par < kT; ++par) {
          float* p = pl + par * plane + i * TW;
          const int64_t oh = kT * (ty0 + i) + par;
          if (oh >= P)
            for (int sc = 1; sc <= kT; ++sc) fill(p + sc * kT * plane, TW, 0.f);
          else
            winograd_row_planes(WinoTile<kT>{}, gk + oh * Q, Q, TW, p, kT * plane, -1);
        }
      float* hk = H + (k - k0) * ld + j0;
      for (int64_t j = 0; j < m; j += kLanes) {
        const __mmask16 mj = lanes16(m - j);
        transform_2d<kT, kP>(
            [&](int r, int c) {
              return _mm512_loadu_ps(pl + ((1 + c) * kT + r) * plane + first + j);
            },
            [](const __m512* in, __m512* out) { winograd_a(typename A::Tag{}, in, out); },
            [&](int i, int e, __m512 v) { store_lanes(hk + (kP * i + e) * xstride + j, mj, v); });
      }
    }
  });
}

// C[M, N] += A[M, L] B[N, L]^T in fp32, the summed dimension contiguous in both operands (rows
// lda / ldb apart): the Winograd weight gradient's products, a few output channels x input
// channels summed over a block's tiles, where a general GEMM spends a third of its time packing
// operands that are already laid out for this. Blocks of kDotM x kDotN outputs, each a vector of
// 16 partial sums (element l to lane l % 16), reduced at the end (store_dot_row): every output
// is summed in an order that depends on L alone.
// Below kNtMinCols summed elements, the reductions cost more than the packing saved (128
// channels on 6x5, 72 tiles a block: 0.58 ms against Eigen's 0.47), and Eigen's GEMM runs them.
constexpr int64_t kNtMinCols = 256;
template <int MB, int NB>
void nt_block(int64_t L, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
              int64_t ldc) {
  __m512 acc[kDotM][kDotN];
#pragma GCC unroll 4
  for (int i = 0; i < kDotM; ++i)
#pragma GCC unroll 6
    for (int j = 0; j < kDotN; ++j) acc[i][j] = _mm512_setzero_ps();
  auto step = [&](int64_t l, __mmask16 m) {
    __m512 a[MB];
#pragma GCC unroll 4
    for (int i = 0; i < MB; ++i) a[i] = _mm512_maskz_loadu_ps(m, A + i * lda + l);
#pragma GCC unroll 6
    for (int j = 0; j < NB; ++j) {
      const __m512 b = _mm512_maskz_loadu_ps(m, B + j * ldb + l);
#pragma GCC unroll 4
      for (int i = 0; i < MB; ++i) acc[i][j] = _mm512_fmadd_ps(a[i], b, acc[i][j]);
    }
  };
  int64_t l = 0;
  for (; l + kLanes <= L; l += kLanes) step(l, __mmask16(0xFFFF));
  if (l < L) step(l, lanes16(L - l));
  // (unrolled, as every loop over acc: the accumulators stay in registers)
#pragma GCC unroll 4
  for (int i = 0; i < MB; ++i) store_dot_row<NB>(acc[i], C + i * ldc, true);
}

using NtFn = void (*)(int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t);
template <int MB>
NtFn nt_fn_nb(int nb) {
  switch (nb) {
    case 1: return nt_block<MB, 1>;
    case 2: return nt_block<MB, 2>;
    case 3: return nt_block<MB, 3>;
    case 4: return nt_block<MB, 4>;
    case 5: return nt_block<MB, 5>;
    default: return nt_block<MB, 6>;
  }
}
NtFn nt_fn(int mb, int nb) {
  switch (mb) {
    case 1: return nt_fn_nb<1>(nb);
    case 2: return nt_fn_nb<2>(nb);
    case 3: return nt_fn_nb<3>(nb);
    default: return nt_fn_nb<4>(nb);
  }
}

void gemm_nt_accumulate(int64_t M, int64_t N, int64_t L, const float* A, int64_t lda,
                        const float* B, int64_t ldb, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; i += kDotM) {
    const int mb = static_cast<int>(std::min<int64_t>(kDotM, M - i));
    for (int64_t j = 0; j < N; j += kDotN) {
      const int nb = static_cast<int>(std::min<int64_t>(kDotN, N - j));
      nt_fn(mb, nb)(L, A + i * lda, lda, B + j * ldb, ldb, C + i * ldc + j, ldc);
    }
  }
}

// dw = conv2d's weight gradient for winograd_weight_grad_ok(s) (dw [K, C, 3, 3], overwritten).
// Work units: (share of the tiles, group of output channels). Many tiles: the threads take
// shares of them, each into its own M. Few (small maps, where K x C is large): every thread
// takes all tiles and a group of output channels (each transforms the whole input), so no M is
// summed.
template <int kT>
void backward_weight_winograd_t(const ConvShape& s, const float* x, const float* dy, float* dw) {
  using A = WinoF<kT>;
  constexpr int kP = A::kP, kX = kP * kP;
  const int64_t C = s.C, K = s.K, KC = K * C;
  const WinoGrid grid = wino_grid(s, kT);
  const int64_t T = winograd_tiles(s, kT);
  const int threads = num_threads();
  const bool ksplit = threads > 1 && T < kWinoSplitTiles * threads && K >= kMR * threads;
  const int groups = ksplit ? threads : 1;
  // tiles per block: the block's transforms (kX x (C + K) x tb floats) in about 1 MB, as many
  // blocks for every share (16 channels on 48x40 at F(3x3, 4x4): 6 blocks of 160 tiles instead
  // of 4 of 224 and one of 64, 0.34 ms against 0.37-0.42), or, split by output channels, all of
  // them in one block up to 512
  int64_t tb = ksplit ? std::min<int64_t>((T + kLanes - 1) / kLanes * kLanes, 512)
                      : std::clamp<int64_t>(262144 / kX / (C + K) / kLanes * kLanes, kLanes, 512);
  int64_t blocks = (T + tb - 1) / tb;
  if (!ksplit && threads > 1 && blocks > 1) {  // as many tiles for every share
    blocks = (blocks + threads - 1) / threads * threads;
    tb = ((T + blocks - 1) / blocks + kLanes - 1) / kLanes * kLanes;
    blocks = (T + tb - 1) / tb;
  }
  const int shares = ksplit ? 1 : static_cast<int>(std::min<int64_t>(threads, blocks));
  const int units = shares * groups;
  float* acc = grow(weight_accumulators(), shares * kX * KC);
  // one unit per iteration (not per thread id: a smaller team than asked still runs them all)
#pragma omp parallel for schedule(static, 1) num_threads(units) if (units > 1)
  for (int u = 0; u < units; ++u) {
    const int share = u / groups, g = u % groups;
    const int64_t k0 = g * K / groups, k1 = (g + 1) * K / groups, kn = k1 - k0;
    float* M = acc + share * kX * KC;  // [xi][K][C]; this unit's rows k0..k1
    for (int xi = 0; xi < kX; ++xi) fill(M + xi * KC + k0 * C, kn * C, 0.f);
    thread_local Buf<float> v_buf, h_buf;
    float* V = grow(v_buf, kX * C * tb + kLanes);
    float* H = grow(h_buf, kX * kn * tb + kLanes);
    for (int64_t b = share * blocks / shares; b < (share + 1) * blocks / shares; ++b) {
      const int64_t t0 = b * tb, cnt = std::min(tb, T - t0);
      winograd_input<A>(grid, x, t0, cnt, tb, V);
      winograd_dy<A>(s, dy, k0, k1, t0, cnt, tb, H);
      for (int xi = 0; xi < kX; ++xi) {
        float* mx = M + xi * KC + k0 * C;
        const float* hx = H + xi * kn * tb;
        const float* vx = V + xi * C * tb;
        if (cnt >= kNtMinCols) {
          gemm_nt_accumulate(kn, C, cnt, hx, tb, vx, tb, mx, C);
        } else {
          MapM m(mx, kn, C, Eigen::OuterStride<>(C));
          m.noalias() += MapC(hx, kn, cnt, Eigen::OuterStride<>(tb)) *
                         MapC(vx, C, cnt, Eigen::OuterStride<>(tb)).transpose();
        }
      }
    }
  }
  // dw[k, c] = G^T (sum of the shares) G; 16 (k, c) pairs at a time, one per lane
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t kc0 = 0; kc0 < KC; kc0 += kLanes) {
    const __mmask16 mk = lanes16(KC - kc0);
    __m512 m[kX];
    for (int xi = 0; xi < kX; ++xi) {
      m[xi] = _mm512_maskz_loadu_ps(mk, acc + xi * KC + kc0);
      for (int i = 1; i < shares; ++i)
        m[xi] = _mm512_add_ps(m[xi], _mm512_maskz_loadu_ps(mk, acc + (i * kX + xi) * KC + kc0));
    }
    alignas(64) float d[9][kLanes];
    transform_2d<kP, 3>(
        [&](int r, int c) { return m[kP * r + c]; },
        [](const __m512* in, __m512* out) { winograd_gt(typename A::Tag{}, in, out); },
        [&](int i, int e, __m512 v) { _mm512_store_ps(d[3 * i + e], v); });
    const int64_t n = std::min<int64_t>(kLanes, KC - kc0);
    for (int64_t l = 0; l < n; ++l)
      for (int e = 0; e < 9; ++e) dw[(kc0 + l) * 9 + e] = d[e][l];
  }
}

void backward_weight_winograd(const ConvShape& s, const float* x, const float* dy, float* dw) {
  if (winograd4_weight_grad_ok(s))
    backward_weight_winograd_t<4>(s, x, dy, dw);
  else
    backward_weight_winograd_t<2>(s, x, dy, dw);
}

// ---- The 3x3 stride-2 pad-1 convolutions by phases, in Winograd F(4x4, 2x2) ----
// Output (oh, ow) reads x[2oh + r - 1][2ow + s - 1]: split the input into its four phases
// Z_pq[u][v] = x[2u + p - 1][2v + q - 1] and the filter into g_pq[a][b] = w[2a + p][2b + q]
// (2x2, 0 where 2a + p or 2b + q is 3), and y = sum over the phases of the stride-1 2x2
// correlations of Z_pq with g_pq: one F(4x4, 2x2) convolution of 4C channels, 25 products per
// 4x4 outputs and channel of it, 100 per channel of x against the direct loops' 144 (1.44x
// fewer). A tile of 4x4 outputs reads x[8ty - 1 .. 8ty + 8][8tx - 1 .. 8tx + 8]: its input
// transform splits rows into planes of period 8 (winograd_row_planes<8>), phase (p, q)'s patch
// element (i, j) at row 2i + p, column 2j + q of them.
// The data gradient is the same sum read backwards: dx[2u + e][2v + f] (e, f the row and column
// parity) = sum over k and the taps of dy[u + a][v + b] h_ef[a][b], with h_e's taps (r of w) for
// a = 0, 1: (1, none) for even rows, (2, 0) for odd: an F(4x4, 2x2) convolution of dy's K
// channels into 4C phase channels (patches at offset 0), each tile's 4 phases making an 8x8
// block of dx.
// The transforms cost more here than in the stride-1 passes (4 x 25 transformed inputs per 4x4
// outputs and channel, through planes of period 8), so this pays on large maps with moderate
// channel counts only: the stems' 64 -> 64 (interleaved in one process, batch 8, 2 threads:
// 96x80 forward 6.7 ms against the direct kernel's 8.4, data gradient 6.4 against col2im's 8.9;
// 128x96 9.7 / 9.3 against 12.2 / 12.9). From kWinoS2MinTiles tiles of 4x4 outputs, 32..128
// input channels and 64 output channels: 128 -> 32 on 48x40 (240 tiles) ran 2.9 / 2.5 ms against
// 1.9 / 2.7, 256 -> 64 on 64x48 (384) 11.6 / 14.9 against 11.0 / 13.5, 64 -> 128 on 32x24 (96)
// 2.0 / 2.4 against 1.1 / 1.4. The weight gradient stays on im2col and GEMMs: with the forward
// pass's input transform and F(2x2, 4x4) it took 9-12 ms against 8.9 for the stem (its products,
// 64 x 256 outputs per element summed over the tiles, ran slower than Eigen's packed GEMM at
// these sizes). fp32 only (ENGINE.PRECISION bf16 keeps the bf16 GEMMs), in HR_CPU_WINOGRAD's
// default mode.
constexpr int64_t kWinoS2MinTiles = 512, kWinoS2MinChannels = 32, kWinoS2MaxChannels = 128,
                  kWinoS2MinK = 64;
bool winograd_s2_ok(const ConvShape& s) {
  return s.R == 3 && s.S == 3 && s.stride_h == 2 && s.stride_w == 2 && s.pad_h == 1 &&
         s.pad_w == 1 && s.C >= kWinoS2MinChannels && s.C <= kWinoS2MaxChannels &&
         s.K >= kWinoS2MinK && winograd_tiles(s, 4) >= kWinoS2MinTiles &&
         winograd4_weight_grad_enabled() && !use_bf16();
}

// The planes of one input row at period 8 (winograd_input<WinoS2F42, 2>): p[s][q] = xr[8q + s -
// 1] for q < TW (0 outside the row's W values), s = 0..9 at p + s * pstride (planes 8 and 9 are 0
// and 1 one column on; offset -1 only).
void winograd_row_planes(WinoTile<8>, const float* xr, int64_t W, int64_t TW, float* p,
                         int64_t pstride, int /*off = -1*/) {
  const auto at = [&](int64_t i) { return i >= 0 && i < W ? xr[i] : 0.f; };
  for (int64_t q0 = 0; q0 < TW; q0 += kLanes) {
    const __mmask16 mq = lanes16(TW - q0);
    const int64_t i0 = 8 * q0 - 1;  // z[j] = x[i0 + j], j = 0..127
    __m512 a[8];
    load_row_span<8>(xr, W, i0, a);
    __m512 e1[4], o1[4];  // z[32u + 2j], z[32u + 2j + 1]
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u) deinterleave(a[2 * u], a[2 * u + 1], e1[u], o1[u]);
    __m512 f[2][4];  // f[w][s] = z[64w + 4j + s]
#pragma GCC unroll 2
    for (int w = 0; w < 2; ++w) {
      deinterleave(e1[2 * w], e1[2 * w + 1], f[w][0], f[w][2]);
      deinterleave(o1[2 * w], o1[2 * w + 1], f[w][1], f[w][3]);
    }
    __m512 ph[10];  // ph[s] = z[8q + s]
#pragma GCC unroll 4
    for (int sc = 0; sc < 4; ++sc) deinterleave(f[0][sc], f[1][sc], ph[sc], ph[sc + 4]);
    ph[8] = _mm512_castsi512_ps(_mm512_alignr_epi32(
        _mm512_castps_si512(_mm512_set1_ps(at(i0 + 128))), _mm512_castps_si512(ph[0]), 1));
    ph[9] = _mm512_castsi512_ps(_mm512_alignr_epi32(
        _mm512_castps_si512(_mm512_set1_ps(at(i0 + 129))), _mm512_castps_si512(ph[1]), 1));
#pragma GCC unroll 10
    for (int sc = 0; sc < 10; ++sc) store_lanes(p + sc * pstride + q0, mq, ph[sc]);
  }
}

// U[xi][row][col] = (G g G^T)[xi] of F(4x4, 2x2) for the 2x2 filters g[a][b] = tap(row, col, a,
// b) (rows x cols of them; columns cols..colsp-1 zero): 16 columns at a time, one per lane.
template <class Tap>
void winograd_weights_s2(int64_t rows, int64_t cols, int64_t colsp, Tap&& tap, float* U,
                         bool parallel) {
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t cb = 0; cb < colsp; cb += kLanes)
    for (int64_t row = 0; row < rows; ++row) {
      alignas(64) float gs[4][kLanes];
      for (int64_t l = 0; l < kLanes; ++l)
        for (int ab = 0; ab < 4; ++ab)
          gs[ab][l] = cb + l < cols ? tap(row, cb + l, ab >> 1, ab & 1) : 0.f;
      const __mmask16 ms = lanes16(colsp - cb);
      transform_2d<2, 5>(
          [&](int r, int j) { return _mm512_load_ps(gs[2 * r + j]); },
          [](const __m512* in, __m512* out) { winograd_g(WinoS2{}, in, out); },
          [&](int r, int e, __m512 v) {
            store_lanes(U + ((5 * r + e) * rows + row) * colsp + cb, ms, v);
          });
    }
}

// dx[n, c, 8ty + 2a + e, 8tx + 2b + f] = (A^T m A)[a][b] of phase 2e + f for the channels
// 4c + ph in [k0, k1) (multiples of 4) of M [25][kc][ld] and the block's tiles (grid g: dx's C
// channels of H x W, tiles of 8x8): each channel's four phases computed into Y[ph][a][b][j], then
// stored by rows of dx, the 8 columns of each tile interleaved.
void winograd_output_s2_dx(const WinoGrid& g, const float* M, int64_t kc, int64_t ld, int64_t k0,
                           int64_t k1, int64_t t0, int64_t cnt, float* dx) {
  const int64_t C = g.C, H = g.H, W = g.W;
  thread_local Buf<float> out_buf;
  float* out = grow(out_buf, 64 * kWinoTB + kLanes);
  const int64_t xs = kc * ld;  // M from one xi to the next
  for (int64_t c4 = k0; c4 < k1; c4 += 4) {
    const int64_t c = c4 / 4;
    for (int ph = 0; ph < 4; ++ph) {
      const float* mk = M + (c4 + ph - k0) * ld;
      for (int64_t j = 0; j < cnt; j += kLanes)
        transform_2d<5, 4>(
            [&](int r, int e) { return _mm512_loadu_ps(mk + (5 * r + e) * xs + j); },
            [](const __m512* in, __m512* o) { winograd_at(WinoS2{}, in, o); },
            [&](int a, int b, __m512 v) {
              _mm512_storeu_ps(out + ((ph * 4 + a) * 4 + b) * kWinoTB + j, v);
            });
    }
    tile_runs(g.TH, g.TW, t0, cnt, [&](int64_t n, int64_t ty, int64_t tx0, int64_t tx1,
                                       int64_t j0) {
      const int64_t cols = std::min(8 * (tx1 - tx0), W - 8 * tx0);  // dx columns of the run
      for (int r = 0; r < 8; ++r) {
        const int64_t row = 8 * ty + r;
        if (row >= H) break;
        const int e = r & 1, a = r >> 1;
        float* dr = dx + ((n * C + c) * H + row) * W + 8 * tx0;
        for (int64_t j = 0; 8 * j < cols; j += kLanes) {
          __m512 v[8];  // v[2b + f]: column 2b + f of 16 tiles
#pragma GCC unroll 8
          for (int sc = 0; sc < 8; ++sc)
            v[sc] = _mm512_loadu_ps(out + (((2 * e + (sc & 1)) * 4 + a) * 4 + (sc >> 1)) * kWinoTB +
                                    j0 + j);
          __m512 f[2][4], e1[4], o1[4], z[8];
#pragma GCC unroll 4
          for (int sc = 0; sc < 4; ++sc) interleave(v[sc], v[sc + 4], f[0][sc], f[1][sc]);
#pragma GCC unroll 2
          for (int w = 0; w < 2; ++w) {
            interleave(f[w][0], f[w][2], e1[2 * w], e1[2 * w + 1]);
            interleave(f[w][1], f[w][3], o1[2 * w], o1[2 * w + 1]);
          }
#pragma GCC unroll 4
          for (int u = 0; u < 4; ++u) interleave(e1[u], o1[u], z[2 * u], z[2 * u + 1]);
#pragma GCC unroll 8
          for (int vv = 0; vv < 8; ++vv) {
            const int64_t c0 = 8 * j + vv * kLanes;
            const __mmask16 mc = lanes16(cols - c0);
            if (!mc) break;
            store_lanes(dr + c0, mc, z[vv]);
          }
        }
      }
    });
  }
}

void forward_winograd_s2(const ConvShape& s, const float* x, const float* w, const float* bias,
                         float* y, const kern::ConvEpilogue& ep) {
  const int64_t C = s.C, C4 = 4 * C, Kp = padded_k(s);
  thread_local Buf<float> u_buf;
  float* U = grow(u_buf, 25 * C4 * Kp);
  winograd_weights_s2(
      C4, s.K, Kp,
      [&](int64_t row, int64_t k, int a, int b) {
        const int r = 2 * a + (row & 2 ? 1 : 0), t = 2 * b + (row & 1);
        return r < 3 && t < 3 ? w[((k * C + row / 4) * 3 + r) * 3 + t] : 0.f;
      },
      U, num_threads() > 1);
  const WinoGrid g = wino_grid(s, 4);
  winograd_products<WinoS2F42>(
      C4, s.K, Kp, winograd_tiles(s, 4), U, false,
      [&](int64_t t0, int64_t cnt, int64_t ld, float* V) {
        winograd_input<WinoS2F42, 2>(g, x, t0, cnt, ld, V);
      },
      [&](const float* M, int64_t kc, int64_t ld, int64_t k0, int64_t k1, int64_t t0,
          int64_t cnt) { winograd_output<WinoS2F42>(s, M, kc, ld, k0, k1, t0, cnt, bias, ep, y); });
}

void backward_data_winograd_s2(const ConvShape& s, const float* dy, const float* w, float* dx) {
  const int64_t C = s.C, C4 = 4 * C, K = s.K, Cp = (C4 + kMR - 1) / kMR * kMR;
  thread_local Buf<float> u_buf;
  float* U = grow(u_buf, 25 * K * Cp);
  // phase 2e + f of channel c: taps (1, none) of w's rows for an even dx row, (2, 0) for odd
  winograd_weights_s2(
      K, C4, Cp,
      [&](int64_t k, int64_t col, int a, int b) {
        const int e = col & 2 ? 1 : 0, f = col & 1;
        if ((!e && a) || (!f && b)) return 0.f;
        const int r = e ? 2 - 2 * a : 1, t = f ? 2 - 2 * b : 1;
        return w[((k * C + col / 4) * 3 + r) * 3 + t];
      },
      U, num_threads() > 1);
  const WinoGrid gin{K, s.P, s.Q, (s.H + 7) / 8, (s.W + 7) / 8};
  const WinoGrid gout{C, s.H, s.W, gin.TH, gin.TW};
  winograd_products<WinoF42>(
      K, C4, Cp, s.N * gin.TH * gin.TW, U, false,
      [&](int64_t t0, int64_t cnt, int64_t ld, float* V) {
        winograd_input<WinoF42>(gin, dy, t0, cnt, ld, V);
      },
      [&](const float* M, int64_t kc, int64_t ld, int64_t k0, int64_t k1, int64_t t0,
          int64_t cnt) { winograd_output_s2_dx(gout, M, kc, ld, k0, k1, t0, cnt, dx); });
}

#endif  // __AVX512F__

}  // namespace

int64_t conv2d_prepacked_size(const ConvShape& s) {
#if defined(__AVX512F__)
  if (const int kind = prepacked_kind(s)) return (kind + 2) * (kind + 2) * s.C * padded_k(s);
#endif
  (void)s;
  return 0;
}

void conv2d_prepack_weights(const ConvShape& s, const float* w, float* packed) {
#if defined(__AVX512F__)
  const int kind = prepacked_kind(s);
  const bool parallel = num_threads() > 1;
  if (kind == 4) return winograd_weights<4>(s, w, padded_k(s), packed, parallel);
  if (kind == 2) return winograd_weights<2>(s, w, padded_k(s), packed, parallel);
#endif
  (void)s, (void)w, (void)packed;
  isa_internal_error("conv2d_prepack_weights: no prepacked kernel for this shape");
}

void conv2d_forward_prepacked(const ConvShape& s, const float* x, const float* packed,
                              const float* bias, float* y, const kern::ConvEpilogue& ep) {
  if (s.N == 0) return;
#if defined(__AVX512F__)
  const int kind = prepacked_kind(s);
  if (kind == 4) return forward_winograd_t<4>(s, x, packed, bias, y, ep);
  if (kind == 2) return forward_winograd_t<2>(s, x, packed, bias, y, ep);
#endif
  (void)x, (void)packed, (void)bias, (void)y, (void)ep;
  isa_internal_error("conv2d_forward_prepacked: no prepacked kernel for this shape");
}

void conv2d_forward(const ConvShape& s, const float* x, const float* w, const float* bias,
                    float* y, const kern::ConvEpilogue& ep) {
  if (s.N == 0) return;
#if defined(__AVX512F__)
  if (winograd_s2_ok(s)) {
    forward_winograd_s2(s, x, w, bias, y, ep);
    return;
  }
  if (winograd_ok(s)) {
    forward_winograd(s, x, w, bias, y, ep);
    return;
  }
  if (bf16_gemm_ok(s)) {
    forward_im2col(s, x, w, bias, y, ep);
    return;
  }
  if (direct_ok(s)) {
    forward_direct(s, x, w, bias, y, ep);
    return;
  }
#endif
  if (rowshift_ok(s)) {
    thread_local Buf<float> wk;
    permute_kcrs_to_krcs(s, w, grow(wk, s.K * s.C * s.R * s.S), num_threads() > 1);
    forward_rowshift(s, x, wk.data(), bias, y, ep);
  } else {
    forward_im2col(s, x, w, bias, y, ep);
  }
}

void conv2d_backward_data(const ConvShape& s, const float* dy, const float* w, float* dx) {
  if (s.N == 0) return;
#if defined(__AVX512F__)
  if (winograd_s2_ok(s)) {
    backward_data_winograd_s2(s, dy, w, dx);
    return;
  }
#endif
  const int64_t K = s.K, C = s.C, R = s.R, S = s.S;
  // Stride 1 with a row-shift-friendly map: dx = conv(dy, w') with w'[c,k,r,s] =
  // w[k,c,R-1-r,S-1-s] and padding R-1-pad. Otherwise dcol = w^T dy and col2im.
  if (s.stride_h == 1 && s.stride_w == 1 && s.pad_h <= R - 1 && s.pad_w <= S - 1) {
    const ConvShape t =
        ConvShape::make(s.N, K, s.P, s.Q, C, R, S, 1, 1, R - 1 - s.pad_h, S - 1 - s.pad_w);
    bool direct = false;
#if defined(__AVX512F__)
    direct = direct_ok(t);
#endif
    if (direct || rowshift_ok(t)) {
      if (t.P != s.H || t.Q != s.W) isa_internal_error("conv2d_backward_data: internal shape mismatch");
      thread_local Buf<float> wt;
      float* wbuf = grow(wt, K * C * R * S);
      const bool parallel = num_threads() > 1;
#if defined(__AVX512F__)
      if (direct) {
        flip_transpose_kcrs(s, w, wbuf, parallel);
        if (winograd_ok(t) && winograd_backward_enabled())
          forward_winograd(t, dy, wbuf, nullptr, dx, {});
        else if (bf16_gemm_ok(t))
          forward_im2col(t, dy, wbuf, nullptr, dx, {});
        else
          forward_direct(t, dy, wbuf, nullptr, dx, {});
        return;
      }
#endif
      flip_transpose(s, w, wbuf, parallel);
      forward_rowshift(t, dy, wbuf, nullptr, dx, {});
      return;
    }
  }
  backward_data_col2im(s, dy, w, dx);
}

void conv2d_backward_weight(const ConvShape& s, const float* x, const float* dy, float* dw,
                            float* dbias) {
  const int64_t K = s.K, C = s.C, R = s.R, S = s.S, CRS = C * R * S, CS = C * S;
  const int64_t PQ = s.P * s.Q, CHW = C * s.H * s.W;
  const int nthreads = num_threads();
  if (dbias) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t k = 0; k < K; ++k) {
      double acc = 0;
      for (int64_t n = 0; n < s.N; ++n) {
        const float* g = dy + (n * K + k) * PQ;
        float part = 0.f;
        for (int64_t i = 0; i < PQ; ++i) part += g[i];
        acc += part;
      }
      dbias[k] = static_cast<float>(acc);
    }
  }
  if (s.N == 0) {
    fill(dw, K * CRS, 0.f);
    return;
  }
#if defined(__AVX512F__)
  if (winograd_weight_grad_ok(s) && winograd_backward_enabled()) {
    backward_weight_winograd(s, x, dy, dw);
    return;
  }
#endif
  const bool rs = rowshift_ok(s);
  [[maybe_unused]] const bool bf16 = use_bf16();
  // bf16: longer tiles (gemm_bf16_nt reduces each output's partial sums once per tile)
  const int64_t min_cols = bf16 ? kBf16WeightGradMinCols : kMinTileCols;
  Plan plan = rs ? make_plan(s, nthreads, rowshift_row_bytes(s), rowshift_halo_bytes(s), false,
                             false, min_cols)
                 : make_plan(s, nthreads, im2col_row_bytes(s), 0, true, false, min_cols);
  const int nacc = plan.threaded_gemm ? 1 : nthreads;
  // Accumulators [K, R, C, S] on the row-shift path, [K, C, R, S] on the im2col path.
  float* acc = grow(weight_accumulators(), nacc * K * CRS);
  Buf<char> used;
  grow(used, nacc);
  run_tiles(plan, nthreads, false, [&](const Tile& t, int tid, bool par) {
    float* a = acc + tid * K * CRS;
    const int64_t L = t.nb * (t.p1 - t.p0) * s.Q;
    int64_t g_ld = 0;
    const float* g = tile_dy(s, dy, t, par, g_ld);
    const bool first = !used[tid];
    used[tid] = 1;
    // The operand: R views of the row-shift planes (CS rows each, view r from column r*W, row
    // stride ld), or one view of the im2col columns (CRS rows). Accumulator columns: view r's
    // at r*rows.
    int64_t ld = L, rows = CRS, views = 1, shift = 0;
    const float* op;
    if (rs) {
      op = rowshift_planes(s, x + t.n0 * CHW, t.p0, t.p1, scratch().a, ld);
      rows = CS, views = R, shift = s.W;
    } else {
      op = tile_columns(s, x, t, par);
    }
#if HR_BF16_KERNELS
    if (bf16) {  // dy and the operand rows in bf16, then a = dy x^T (summed over L)
      thread_local Buf<uint16_t> g_buf, x_buf;
      uint16_t* g16 = grow(g_buf, K * L);
      uint16_t* x16 = grow(x_buf, rows * ld);
      bf16_convert(K, L, g, g_ld, g16, L, par);
      bf16_convert(rows, ld, op, ld, x16, ld, par);
      for (int64_t v = 0; v < views; ++v)
        gemm_bf16_nt(K, rows, L, g16, L, x16 + v * shift, ld, a + v * rows, CRS, !first, par);
      return;
    }
#endif
    const MapC gm(g, K, L, Eigen::OuterStride<>(g_ld));
    for (int64_t v = 0; v < views; ++v) {
      MapM av(a + v * rows, K, rows, Eigen::OuterStride<>(CRS));
      const MapC xv(op + v * shift, rows, L, Eigen::OuterStride<>(ld));
      if (first)
        av.noalias() = gm * xv.transpose();
      else
        av.noalias() += gm * xv.transpose();
    }
  }, /*fixed=*/true);
  // dw = sum of the used accumulators, back in [K, C, R, S].
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t q = 0; q < S; ++q) {
          const int64_t src = rs ? ((k * R + r) * C + c) * S + q : ((k * C + c) * R + r) * S + q;
          float v = 0.f;
          for (int i = 0; i < nacc; ++i)
            if (used[i]) v += acc[i * K * CRS + src];
          dw[((k * C + c) * R + r) * S + q] = v;
        }
}

}  // namespace hr::cpu::HR_ISA_NS
