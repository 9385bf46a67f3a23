// Implicit-GEMM convolution on tensor cores (mma.sync m16n8k16, ldmatrix, 4-stage cp.async
// pipeline), NHWC activations, KRSC weights, f16/bf16 in, fp32 accumulation.
//
// One kernel template serves every pass; only the operand gathers and the epilogue differ:
//   Fwd        y[m = npq][n = k]   = sum_{red = rsc} x(gather)[m][red] * w[n][red]
//   Dgrad      dx[m = nhw][n = c]  = sum_{red = (tap, k)} dy(gather)[m][red] * w[k][tap][c]
//              (blockIdx.z = output phase (h mod sh, w mod sw); the phase's taps only)
//   Wgrad      dw[m = k][n = rsc]  = sum_{red = npq} dy[red][m] * x(gather)[red][n]
//   UpNearest  Fwd with R = S = 1 whose epilogue adds the tile, nearest-upsampled, into out.
// Split-K (Fwd, Dgrad, Wgrad): blockIdx.z also carries a split of the reduction. Each split of
// an output tile writes its fp32 partial tile to scratch; the last split to arrive (per-tile
// arrival counter) sums all partials in split order (deterministic), then runs the epilogue.
// At the start, one block per tile row / column prefetches its operand ranges into L2, so that
// the k loop does not pay one DRAM latency per (STAGES - 1) tiles.
// Shared-memory tiles are [rows][BK + 8] when the reduction index is contiguous in global
// memory (A of Fwd/Dgrad, B of Fwd) and [BK][cols + 8] otherwise (A of Wgrad, B of
// Dgrad/Wgrad), read with ldmatrix / ldmatrix.trans; the 8-element pad keeps the eight
// 16-byte rows of each ldmatrix in distinct banks. Design notes: docs/kernels.md.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <vector>

#include "engine/error.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/conv_igemm.h"

namespace hr::cuda::igemm {
namespace {

constexpr int BK = 32;     // reduction elements per pipeline stage
constexpr int SPAD = 8;    // smem row padding (elements)
constexpr int STAGES = 4;  // cp.async pipeline depth

enum class Mode : int { Fwd = 0, Dgrad = 1, Wgrad = 2, UpNearest = 3 };

struct Params {
  int N, C, H, W, K, R, S, sh, sw, ph, pw, P, Q;
  int gm, gn, gk;    // GEMM sizes (Dgrad: per phase, recomputed in the kernel)
  int splits;        // reduction splits per phase in the grid: blockIdx.z = phase * splits + split
  int kt_per_split;  // reduction tiles per split (a phase uses ceil(its tiles / this) splits)
  const void* a;     // Fwd/UpNearest: x; Dgrad: dy; Wgrad: dy
  const void* b;     // Fwd/UpNearest/Dgrad: w; Wgrad: x
  void* out;         // y / dx / dw / UpNearest: the high-resolution sum
  float* ws;         // split-K partials [tile][split][BM*BN] (fragment order); unused if splits 1
  int* counters;     // split-K arrivals per tile, 0 between launches (the last arrival resets);
                     // nullptr with splits > 1 (Wgrad only): partials [split][gm][gn], reduced
                     // by wgrad_reduce_kernel
  const float* scale;
  const float* shift;
  const void* residual;
  int relu;
  int out_f32;
  int up;            // UpNearest factor
};

// ---------------------------------------------------------------- PTX wrappers
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16-byte async copy; src_bytes 0 writes zeros (padding, out-of-range rows, tails).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// Asynchronous prefetch of [p, p + bytes) into L2 (bytes a multiple of 16, p 16-byte aligned),
// one bulk prefetch per 4 KiB.
__device__ __forceinline__ void prefetch_l2(const void* p, uint32_t bytes) {
  const char* c = static_cast<const char*>(p);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  for (uint32_t o = 0; o < bytes; o += 4096) {
    const uint32_t n = bytes - o < 4096 ? bytes - o : 4096;
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(c + o), "r"(n) : "memory");
  }
#else
  for (uint32_t o = 0; o < bytes; o += 128) asm volatile("prefetch.global.L2 [%0];\n" ::"l"(c + o));
#endif
}
// The block's threads prefetch [p, p + bytes) in pieces of at most 4 KiB.
__device__ __forceinline__ void prefetch_range(const void* p, int64_t bytes, int tid,
                                               int nthreads) {
  constexpr int64_t PIECE = 4096;
  const char* c = static_cast<const char*>(p);
  for (int64_t o = int64_t(tid) * PIECE; o < bytes; o += int64_t(nthreads) * PIECE)
    prefetch_l2(c + o, static_cast<uint32_t>(bytes - o < PIECE ? bytes - o : PIECE));
}
__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
template <class T>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4],
                                         const uint32_t b0, const uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                        const uint32_t b0, const uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__half>(float (&d)[4], const uint32_t (&a)[4],
                                                 const uint32_t b0, const uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ---------------------------------------------------------------- element conversions
template <class T>
struct Cvt;
template <>
struct Cvt<__nv_bfloat16> {
  using T2 = __nv_bfloat162;
  static __device__ __forceinline__ T2 pack(float a, float b) { return __floats2bfloat162_rn(a, b); }
  static __device__ __forceinline__ float2 unpack(T2 v) { return __bfloat1622float2(v); }
  static __device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 from_f(float v) { return __float2bfloat16_rn(v); }
};
template <>
struct Cvt<__half> {
  using T2 = __half2;
  static __device__ __forceinline__ T2 pack(float a, float b) { return __floats2half2_rn(a, b); }
  static __device__ __forceinline__ float2 unpack(T2 v) { return __half22float2(v); }
  static __device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half from_f(float v) { return __float2half_rn(v); }
};

template <int BM, int BN, Mode MODE>
struct Layout {
  static constexpr bool A_KM = MODE == Mode::Wgrad;
  static constexpr bool B_KN = MODE == Mode::Dgrad || MODE == Mode::Wgrad;
  static constexpr int A_LD = A_KM ? BM + SPAD : BK + SPAD;
  static constexpr int B_LD = B_KN ? BN + SPAD : BK + SPAD;
  static constexpr int A_STAGE = A_KM ? BK * A_LD : BM * A_LD;  // elements
  static constexpr int B_STAGE = B_KN ? BK * B_LD : BN * B_LD;
  static constexpr int PIPE_BYTES = STAGES * (A_STAGE + B_STAGE) * 2;
  static constexpr int EPI_LD = BN + 4;  // fp32 staging tile of UpNearest
  static constexpr int EPI_BYTES = MODE == Mode::UpNearest ? BM * EPI_LD * 4 : 0;
  static constexpr int SMEM_BYTES = PIPE_BYTES > EPI_BYTES ? PIPE_BYTES : EPI_BYTES;
};

// ---------------------------------------------------------------- the kernel
template <class T, int BM, int BN, int WM, int WN, Mode MODE>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32)
    igemm_kernel(const Params p) {
  constexpr int WARPS_N = BN / WN;
  constexpr int THREADS = (BM / WM) * WARPS_N * 32;
  constexpr int MI = WM / 16, NI = WN / 8;
  static_assert(WM % 16 == 0 && WN % 16 == 0, "warp tile");
  using L = Layout<BM, BN, MODE>;
  constexpr bool A_KM = L::A_KM, B_KN = L::B_KN;
  constexpr int A_LD = L::A_LD, B_LD = L::B_LD;

  // A tile: chunks of 8 contiguous elements; MK: BM rows x 4 chunks, KM: BK rows x BM/8 chunks.
  constexpr int A_CPR = A_KM ? BM / 8 : BK / 8;  // chunks per smem row
  constexpr int A_ITERS = BM * BK / 8 / THREADS;
  constexpr int A_RSTEP = THREADS / A_CPR;  // rows between a thread's successive chunks
  constexpr int B_CPR = B_KN ? BN / 8 : BK / 8;
  constexpr int B_ITERS = BN * BK / 8 / THREADS;
  constexpr int B_RSTEP = THREADS / B_CPR;
  static_assert(A_ITERS >= 1 && A_ITERS * THREADS == BM * BK / 8 && THREADS % A_CPR == 0, "A");
  static_assert(B_ITERS >= 1 && B_ITERS * THREADS == BN * BK / 8 && THREADS % B_CPR == 0, "B");

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sA = reinterpret_cast<T*>(smem_raw);
  T* sB = sA + STAGES * L::A_STAGE;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm0 = (warp / WARPS_N) * WM, wn0 = (warp % WARPS_N) * WN;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  const T* __restrict__ gA = static_cast<const T*>(p.a);
  const T* __restrict__ gB = static_cast<const T*>(p.b);

  // ---- problem of this block
  int gm = p.gm, gk = p.gk;
  // Dgrad phase: output rows h = pa + i*sh take taps r = r0 + ri*sh (ri < nr) and read
  // dy row p = i + th - ri; likewise along w.
  const int phase = static_cast<int>(blockIdx.z) / p.splits;
  const int split = static_cast<int>(blockIdx.z) - phase * p.splits;
  int pa = 0, pb = 0, r0 = 0, s0 = 0, nr = p.R, ns = p.S, Hph = p.H, Wph = p.W, th = 0, tw = 0;
  if constexpr (MODE == Mode::Dgrad) {
    pa = phase / p.sw;
    pb = phase % p.sw;
    r0 = (pa + p.ph) % p.sh;
    s0 = (pb + p.pw) % p.sw;
    nr = r0 < p.R ? (p.R - r0 + p.sh - 1) / p.sh : 0;
    ns = s0 < p.S ? (p.S - s0 + p.sw - 1) / p.sw : 0;
    Hph = pa < p.H ? (p.H - pa + p.sh - 1) / p.sh : 0;
    Wph = pb < p.W ? (p.W - pb + p.sw - 1) / p.sw : 0;
    th = (pa + p.ph - r0) / p.sh;
    tw = (pb + p.pw - s0) / p.sw;
    gm = p.N * Hph * Wph;
    gk = nr * ns * p.K;
    if (m0 >= gm) return;  // whole block, before any barrier
  }
  const int ktiles_all = (gk + BK - 1) / BK;
  // Splits this tile uses (a phase with fewer reduction tiles uses fewer); the rest leave.
  const int nsplit = max(1, (ktiles_all + p.kt_per_split - 1) / p.kt_per_split);
  if (split >= nsplit) return;  // whole block, before any barrier
  const int kt_begin = split * p.kt_per_split;
  const int kt_end = min(kt_begin + p.kt_per_split, ktiles_all);
  const int nkt = max(kt_end - kt_begin, 0);

  // ---- L2 prefetch of this block's operand ranges: the shared operand by the blocks of
  // tile column 0 (or row 0), so each range is requested about once.
  if (nkt > 0) {
    const int k_lo = kt_begin * BK, k_hi = min(kt_end * BK, gk);
    if constexpr (MODE == Mode::Fwd || MODE == Mode::UpNearest) {
      if (blockIdx.x == 0) {  // w rows n0.. : reduction range [k_lo, k_hi) of each
        const int rows = min(BN, p.gn - n0);
        for (int r = tid; r < rows; r += THREADS)
          prefetch_l2(gB + static_cast<int64_t>(n0 + r) * gk + k_lo,
                      static_cast<uint32_t>(k_hi - k_lo) * 2);
      }
      if (blockIdx.y == 0 && split == 0) {  // x pixels read by output rows m0 .. m0+BM-1
        const int mlast = min(m0 + BM, gm) - 1;
        const int i0 = m0 / (p.P * p.Q), i1 = mlast / (p.P * p.Q);
        const int h0 = max(0, (m0 - i0 * p.P * p.Q) / p.Q * p.sh - p.ph);
        const int h1 = min(p.H, (mlast - i1 * p.P * p.Q) / p.Q * p.sh - p.ph + p.R);
        const int64_t lo = (static_cast<int64_t>(i0) * p.H + h0) * p.W;
        const int64_t hi = (static_cast<int64_t>(i1) * p.H + h1) * p.W;
        if (hi > lo) prefetch_range(gA + lo * p.C, (hi - lo) * p.C * 2, tid, THREADS);
      }
    } else if constexpr (MODE == Mode::Dgrad) {
      if (blockIdx.x == 0) {  // w[kk][r][s][n0 ..] for each reduction index (tap, kk)
        const int bytes = min(BN, p.gn - n0) * 2;
        for (int red = k_lo + tid; red < k_hi; red += THREADS) {
          const int tap = red / p.K, kk = red - tap * p.K;
          const int ri = tap / ns, si = tap - ri * ns;
          prefetch_l2(gB + ((kk * p.R + r0 + ri * p.sh) * p.S + s0 + si * p.sw) * p.C + n0,
                      static_cast<uint32_t>(bytes));
        }
      }
      if (blockIdx.y == 0 && split == 0) {  // dy pixels read by output rows m0 .. m0+BM-1
        const int mlast = min(m0 + BM, gm) - 1;
        const int i0 = m0 / (Hph * Wph), i1 = mlast / (Hph * Wph);
        const int y0 = max(0, (m0 - i0 * Hph * Wph) / Wph + th - (nr - 1));
        const int y1 = min(p.P, (mlast - i1 * Hph * Wph) / Wph + th + 1);
        const int64_t lo = (static_cast<int64_t>(i0) * p.P + y0) * p.Q;
        const int64_t hi = (static_cast<int64_t>(i1) * p.P + y1) * p.Q;
        if (hi > lo) prefetch_range(gA + lo * p.K, (hi - lo) * p.K * 2, tid, THREADS);
      }
    } else {  // Wgrad: dy rows [k_lo, k_hi) (all K), x pixels feeding them
      if (blockIdx.x == 0 && blockIdx.y == 0) {
        prefetch_range(gA + static_cast<int64_t>(k_lo) * p.K,
                       static_cast<int64_t>(k_hi - k_lo) * p.K * 2, tid, THREADS);
        const int i0 = k_lo / (p.P * p.Q), i1 = (k_hi - 1) / (p.P * p.Q);
        const int h0 = max(0, (k_lo - i0 * p.P * p.Q) / p.Q * p.sh - p.ph);
        const int h1 = min(p.H, (k_hi - 1 - i1 * p.P * p.Q) / p.Q * p.sh - p.ph + p.R);
        const int64_t lo = (static_cast<int64_t>(i0) * p.H + h0) * p.W;
        const int64_t hi = (static_cast<int64_t>(i1) * p.H + h1) * p.W;
        if (hi > lo) prefetch_range(gB + lo * p.C, (hi - lo) * p.C * 2, tid, THREADS);
      }
    }
  }

  // ---- per-thread gather state
  constexpr int NEG = -(1 << 28);
  // MK A (Fwd/UpNearest/Dgrad): rows are output pixels.
  int a_base[A_KM ? 1 : A_ITERS], a_y[A_KM ? 1 : A_ITERS], a_x[A_KM ? 1 : A_ITERS];
  if constexpr (!A_KM) {
#pragma unroll
    for (int i = 0; i < A_ITERS; ++i) {
      const int m = m0 + tid / A_CPR + i * A_RSTEP;
      a_base[i] = 0;
      a_y[i] = NEG;
      a_x[i] = NEG;
      if (m < gm) {
        if constexpr (MODE == Mode::Dgrad) {
          const int img = m / (Hph * Wph), rem = m - img * (Hph * Wph);
          const int ii = rem / Wph, jj = rem - ii * Wph;
          a_base[i] = img * p.P * p.Q * p.K;
          a_y[i] = ii + th;
          a_x[i] = jj + tw;
        } else {
          const int img = m / (p.P * p.Q), rem = m - img * (p.P * p.Q);
          const int pp = rem / p.Q, qq = rem - pp * p.Q;
          a_base[i] = img * p.H * p.W * p.C;
          a_y[i] = pp * p.sh - p.ph;
          a_x[i] = qq * p.sw - p.pw;
        }
      }
    }
  }
  // Wgrad B columns are (r, s, c) triples, fixed per thread.
  int wb_r = 0, wb_s = 0, wb_c = 0;
  bool wb_valid = false;
  if constexpr (MODE == Mode::Wgrad) {
    const int n = n0 + (tid % B_CPR) * 8;
    wb_valid = n < p.gn;
    if (wb_valid) {
      const int rs = n / p.C;
      wb_c = n - rs * p.C;
      wb_r = rs / p.S;
      wb_s = rs - wb_r * p.S;
    }
  }

  // Dgrad B rows are reduction indices (tap (ri, si), kk), advanced by BK per loaded tile.
  constexpr int DB = MODE == Mode::Dgrad ? B_ITERS : 1;
  int db_kk[DB], db_ri[DB], db_si[DB];
  if constexpr (MODE == Mode::Dgrad) {
#pragma unroll
    for (int i = 0; i < DB; ++i) {
      const int red = kt_begin * BK + tid / B_CPR + i * B_RSTEP;
      const int tap = red / p.K;
      db_kk[i] = red - tap * p.K;
      db_ri[i] = tap / max(ns, 1);
      db_si[i] = tap - db_ri[i] * ns;
    }
  }

  // Called for kt = kt_begin, kt_begin + 1, ... in order (the Dgrad B state relies on it).
  auto load_tile = [&](int stage, int kt) {
    T* a_st = sA + stage * L::A_STAGE;
    T* b_st = sB + stage * L::B_STAGE;
    // ---- A
    if constexpr (!A_KM) {
      const int kc = tid % A_CPR;
      const int k = kt * BK + kc * 8;
      const bool kv = k < gk;
      int dr = 0, ds = 0, dc = 0;  // Fwd: (r, s, c) of k;  Dgrad: (ri, si, kk) of k
      if (kv) {
        if constexpr (MODE == Mode::Dgrad) {
          const int tap = k / p.K;
          dc = k - tap * p.K;
          dr = tap / ns;
          ds = tap - dr * ns;
        } else {
          const int rs = k / p.C;
          dc = k - rs * p.C;
          dr = rs / p.S;
          ds = rs - dr * p.S;
        }
      }
#pragma unroll
      for (int i = 0; i < A_ITERS; ++i) {
        const int row = tid / A_CPR + i * A_RSTEP;
        const T* src = gA;
        bool v;
        if constexpr (MODE == Mode::Dgrad) {
          const int pp = a_y[i] - dr, qq = a_x[i] - ds;
          v = kv && static_cast<unsigned>(pp) < static_cast<unsigned>(p.P) &&
              static_cast<unsigned>(qq) < static_cast<unsigned>(p.Q);
          if (v) src = gA + a_base[i] + (pp * p.Q + qq) * p.K + dc;
        } else {
          const int hh = a_y[i] + dr, ww = a_x[i] + ds;
          v = kv && static_cast<unsigned>(hh) < static_cast<unsigned>(p.H) &&
              static_cast<unsigned>(ww) < static_cast<unsigned>(p.W);
          if (v) src = gA + a_base[i] + (hh * p.W + ww) * p.C + dc;
        }
        cp_async16(smem_u32(a_st + row * A_LD + kc * 8), src, v);
      }
    } else {  // Wgrad: A[red = npq][m = k] = dy[npq][k]
      const int mc = tid % A_CPR;
      const int m = m0 + mc * 8;
#pragma unroll
      for (int i = 0; i < A_ITERS; ++i) {
        const int row = tid / A_CPR + i * A_RSTEP;
        const int red = kt * BK + row;
        const bool v = m < gm && red < gk;
        const T* src = v ? gA + static_cast<int64_t>(red) * p.K + m : gA;
        cp_async16(smem_u32(a_st + row * A_LD + mc * 8), src, v);
      }
    }
    // ---- B
    if constexpr (!B_KN) {  // Fwd: B[n = k][red = rsc] = w[k][rsc]
      const int kc = tid % B_CPR;
      const int k = kt * BK + kc * 8;
#pragma unroll
      for (int i = 0; i < B_ITERS; ++i) {
        const int row = tid / B_CPR + i * B_RSTEP;
        const int n = n0 + row;
        const bool v = n < p.gn && k < gk;
        const T* src = v ? gB + n * gk + k : gB;
        cp_async16(smem_u32(b_st + row * B_LD + kc * 8), src, v);
      }
    } else if constexpr (MODE == Mode::Dgrad) {  // B[red = (tap, kk)][n = c] = w[kk][r][s][c]
      const int cc = tid % B_CPR;
      const int n = n0 + cc * 8;
#pragma unroll
      for (int i = 0; i < B_ITERS; ++i) {
        const int row = tid / B_CPR + i * B_RSTEP;
        const bool v = n < p.gn && db_ri[i] < nr;  // red < gk
        const T* src = gB;
        if (v)
          src = gB + ((db_kk[i] * p.R + r0 + db_ri[i] * p.sh) * p.S + s0 + db_si[i] * p.sw) *
                         p.C + n;
        cp_async16(smem_u32(b_st + row * B_LD + cc * 8), src, v);
        db_kk[i] += BK;
        while (db_kk[i] >= p.K) {
          db_kk[i] -= p.K;
          if (++db_si[i] == ns) {
            db_si[i] = 0;
            ++db_ri[i];
          }
        }
      }
    } else {  // Wgrad: B[red = npq][n = rsc] = x[img][p*sh - ph + r][q*sw - pw + s][c]
      const int cc = tid % B_CPR;
#pragma unroll
      for (int i = 0; i < B_ITERS; ++i) {
        const int row = tid / B_CPR + i * B_RSTEP;
        const int red = kt * BK + row;
        bool v = wb_valid && red < gk;
        const T* src = gB;
        if (v) {
          const int img = red / (p.P * p.Q), rem = red - img * (p.P * p.Q);
          const int pp = rem / p.Q, qq = rem - pp * p.Q;
          const int hh = pp * p.sh - p.ph + wb_r, ww = qq * p.sw - p.pw + wb_s;
          v = static_cast<unsigned>(hh) < static_cast<unsigned>(p.H) &&
              static_cast<unsigned>(ww) < static_cast<unsigned>(p.W);
          if (v) src = gB + ((img * p.H + hh) * p.W + ww) * p.C + wb_c;
        }
        cp_async16(smem_u32(b_st + row * B_LD + cc * 8), src, v);
      }
    }
  };

  float acc[MI][NI][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

  // ---- pipeline: STAGES-1 tiles in flight while one is multiplied. One commit group per
  // tile slot (empty groups past the end keep the wait count uniform).
#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st) {
    if (st < nkt) load_tile(st, kt_begin + st);
    cp_async_commit();
  }
  for (int it = 0; it < nkt; ++it) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();  // tile `it` visible to all; all warps are done with tile it-1's stage
    {
      const int nxt = it + STAGES - 1;
      if (nxt < nkt) load_tile(nxt % STAGES, kt_begin + nxt);
      cp_async_commit();
    }
    const T* a_st = sA + (it % STAGES) * L::A_STAGE;
    const T* b_st = sB + (it % STAGES) * L::B_STAGE;
#pragma unroll
    for (int ks = 0; ks < BK / 16; ++ks) {
      uint32_t af[MI][4];
      uint32_t bf[NI][2];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
        if constexpr (A_KM) {
          const int k = ks * 16 + (lane & 7) + ((lane >> 4) << 3);
          const int m = wm0 + mi * 16 + (((lane >> 3) & 1) << 3);
          ldsm_x4_trans(smem_u32(a_st + k * A_LD + m), af[mi]);
        } else {
          const int m = wm0 + mi * 16 + (lane & 15);
          const int k = ks * 16 + ((lane >> 4) << 3);
          ldsm_x4(smem_u32(a_st + m * A_LD + k), af[mi]);
        }
      }
#pragma unroll
      for (int nj = 0; nj < NI / 2; ++nj) {
        uint32_t r[4];
        if constexpr (B_KN) {
          const int k = ks * 16 + (((lane >> 3) & 1) << 3) + (lane & 7);
          const int n = wn0 + nj * 16 + ((lane >> 4) << 3);
          ldsm_x4_trans(smem_u32(b_st + k * B_LD + n), r);
        } else {
          const int n = wn0 + nj * 16 + ((lane >> 4) << 3) + (lane & 7);
          const int k = ks * 16 + (((lane >> 3) & 1) << 3);
          ldsm_x4(smem_u32(b_st + n * B_LD + k), r);
        }
        bf[2 * nj][0] = r[0];
        bf[2 * nj][1] = r[1];
        bf[2 * nj + 1][0] = r[2];
        bf[2 * nj + 1][1] = r[3];
      }
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) mma16816<T>(acc[mi][ni], af[mi], bf[ni][0], bf[ni][1]);
    }
  }
  cp_async_wait<0>();

  // ---- split-K fixup: publish this split's partial tile; the last split to arrive sums all
  // of them in split order (the same order whichever block is last) and runs the epilogue.
  // (split and split count recomputed from blockIdx / p: not kept live across the k loop)
  const int nsplit_ = MODE == Mode::UpNearest || !p.counters
                          ? 1
                          : max(1, ((gk + BK - 1) / BK + p.kt_per_split - 1) / p.kt_per_split);
  if (nsplit_ > 1) {
    const int z = static_cast<int>(blockIdx.z);
    const int split_ = z % p.splits;
    constexpr int TILE4 =
        BM * BN / 4; // float4 per partial tile = THREADS * MI * NI
    const int tile_id = (z / p.splits * static_cast<int>(gridDim.y) +
                         static_cast<int>(blockIdx.y)) *
                            static_cast<int>(gridDim.x) +
                        static_cast<int>(blockIdx.x);
    float4 *part = reinterpret_cast<float4 *>(p.ws) +
                   static_cast<int64_t>(tile_id) * p.splits * TILE4;
    float4 *mine = part + static_cast<int64_t>(split_) * TILE4;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
        __stcg(mine + (mi * NI + ni) * THREADS + tid,
               make_float4(acc[mi][ni][0], acc[mi][ni][1], acc[mi][ni][2],
                           acc[mi][ni][3]));
    __threadfence();
    __syncthreads();
    __shared__ int s_last;
    if (tid == 0) {
      const int prev = atomicAdd(p.counters + tile_id, 1);
      s_last = prev == nsplit_ - 1;
      if (s_last)
        p.counters[tile_id] = 0; // ready for the next launch on this stream
    }
    __syncthreads();
    if (!s_last)
      return;
    __threadfence();
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni) {
        float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
        for (int zz = 0; zz < nsplit_; ++zz) {
          const float4 v =
              zz == split_ ? make_float4(acc[mi][ni][0], acc[mi][ni][1],
                                         acc[mi][ni][2], acc[mi][ni][3])
                           : __ldcg(part + static_cast<int64_t>(zz) * TILE4 +
                                    (mi * NI + ni) * THREADS + tid);
          sum.x += v.x;
          sum.y += v.y;
          sum.z += v.z;
          sum.w += v.w;
        }
        acc[mi][ni][0] = sum.x;
        acc[mi][ni][1] = sum.y;
        acc[mi][ni][2] = sum.z;
        acc[mi][ni][3] = sum.w;
      }
  }

  // ---- epilogue. Fragment element e of acc[mi][ni]: row g (+8 for e >= 2), cols 2t, 2t+1.
  const int g = lane >> 2, t4 = lane & 3;
  using CV = Cvt<T>;
  using T2 = typename CV::T2;

  if constexpr (MODE == Mode::UpNearest) {
    // Stage the affine-transformed tile in smem (fp32), then add each low-resolution pixel's
    // channel vector into its f x f high-resolution block with 16-byte accesses.
    __syncthreads();  // all warps are done reading the pipeline buffers
    float* sC = reinterpret_cast<float*>(smem_raw);
    constexpr int EPI_LD = L::EPI_LD;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const int row = wm0 + mi * 16 + g + hh * 8;
          const int col = wn0 + ni * 8 + 2 * t4;
          const int n = n0 + col;
          float v0 = acc[mi][ni][2 * hh], v1 = acc[mi][ni][2 * hh + 1];
          if (n < p.gn) {
            if (p.scale) { v0 *= p.scale[n]; v1 *= p.scale[n + 1]; }
            if (p.shift) { v0 += p.shift[n]; v1 += p.shift[n + 1]; }
          }
          sC[row * EPI_LD + col] = v0;
          sC[row * EPI_LD + col + 1] = v1;
        }
    __syncthreads();
    const int f = p.up, ff = f * f;
    const int Ho = p.P * f, Wo = p.Q * f;
    constexpr int NCH = BN / 8;
    const int items = BM * ff * NCH;
    T* out = static_cast<T*>(p.out);
    for (int it = tid; it < items; it += THREADS) {
      const int ch = it % NCH;
      const int rest = it / NCH;
      const int d = rest % ff;
      const int row = rest / ff;
      const int m = m0 + row;
      const int n = n0 + ch * 8;
      if (m >= gm || n >= p.gn) continue;
      const int img = m / (p.P * p.Q), rem = m - img * (p.P * p.Q);
      const int pp = rem / p.Q, qq = rem - pp * p.Q;
      const int oh = pp * f + d / f, ow = qq * f + d % f;
      T* dst = out + (static_cast<int64_t>(img * Ho + oh) * Wo + ow) * p.gn + n;
      uint4 raw = *reinterpret_cast<const uint4*>(dst);
      T2* h2 = reinterpret_cast<T2*>(&raw);
      const float* src = sC + row * EPI_LD + ch * 8;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 o = CV::unpack(h2[e]);
        h2[e] = CV::pack(o.x + src[2 * e], o.y + src[2 * e + 1]);
      }
      *reinterpret_cast<uint4*>(dst) = raw;
    }
  } else {
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int m = m0 + wm0 + mi * 16 + g + hh * 8;
        if (m >= gm) continue;
        int64_t row_off;  // element offset of output row m
        if constexpr (MODE == Mode::Dgrad) {
          const int img = m / (Hph * Wph), rem = m - img * (Hph * Wph);
          const int ii = rem / Wph, jj = rem - ii * Wph;
          const int hh_ = pa + ii * p.sh, ww_ = pb + jj * p.sw;
          row_off = (static_cast<int64_t>(img * p.H + hh_) * p.W + ww_) * p.gn;
        } else {
          row_off = static_cast<int64_t>(m) * p.gn;
        }
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
          const int n = n0 + wn0 + ni * 8 + 2 * t4;
          if (n >= p.gn) continue;
          float v0 = acc[mi][ni][2 * hh], v1 = acc[mi][ni][2 * hh + 1];
          const int64_t o = row_off + n;
          if constexpr (MODE == Mode::Wgrad) {
            if (p.splits > 1 && !p.counters)  // > 16 splits: partials [split][gm][gn]
              *reinterpret_cast<float2*>(p.ws + static_cast<int64_t>(blockIdx.z) * gm * p.gn + o) =
                  make_float2(v0, v1);
            else
              *reinterpret_cast<T2*>(static_cast<T*>(p.out) + o) = CV::pack(v0, v1);
          } else if constexpr (MODE == Mode::Fwd) {
            if (p.scale) { v0 *= p.scale[n]; v1 *= p.scale[n + 1]; }
            if (p.shift) { v0 += p.shift[n]; v1 += p.shift[n + 1]; }
            if (p.out_f32) {
              float2* y2 = reinterpret_cast<float2*>(static_cast<float*>(p.out) + o);
              if (p.residual) {
                const float2 r = *reinterpret_cast<const float2*>(
                    static_cast<const float*>(p.residual) + o);
                v0 += r.x;
                v1 += r.y;
              }
              if (p.relu) { v0 = fmaxf(v0, 0.f); v1 = fmaxf(v1, 0.f); }
              *y2 = make_float2(v0, v1);
            } else {
              if (p.residual) {
                const float2 r =
                    CV::unpack(*reinterpret_cast<const T2*>(static_cast<const T*>(p.residual) + o));
                v0 += r.x;
                v1 += r.y;
              }
              if (p.relu) { v0 = fmaxf(v0, 0.f); v1 = fmaxf(v1, 0.f); }
              *reinterpret_cast<T2*>(static_cast<T*>(p.out) + o) = CV::pack(v0, v1);
            }
          } else {  // Dgrad
            *reinterpret_cast<T2*>(static_cast<T*>(p.out) + o) = CV::pack(v0, v1);
          }
        }
      }
  }
}

// Backward-weight with more splits than the in-kernel fixup serves well:
// dw[i] = sum_z ws[z][i] in split order, converted to T.
template <class T>
__global__ void wgrad_reduce_kernel(const float* __restrict__ ws, int splits, int64_t n,
                                    T* __restrict__ dw) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float s = 0.f;
    for (int z = 0; z < splits; ++z) s += ws[z * n + i];
    dw[i] = Cvt<T>::from_f(s);
  }
}

// ---------------------------------------------------------------- tile / split planning
// Host-only arithmetic (no CUDA calls): a cost model in SM cycles, see docs/kernels.md.
struct Plan {
  int bm = 0, bn = 0, splits = 1, kps = 1 << 30;
  double cost = 0;
};

// mma.sync FLOP per cycle per SM for a WM x WN warp tile: the tensor rate (2048), or the
// shared-memory rate where ldmatrix traffic (128 B/clk) limits: per k16 step a warp reads
// (WM + WN) * 32 bytes for 2 * WM * WN * 16 FLOP.
constexpr double detail_rate(int wm, int wn) {
  return 128.0 * wm * wn / (wm + wn) < 2048.0 ? 128.0 * wm * wn / (wm + wn) : 2048.0;
}

// GEMM N tile: the one of {128, 64, 32} that pads gn least (ties: the wider).
int pick_bn(int gn) {
  int bn = 128;
  int best = (gn + 127) / 128 * 128;
  for (int c : {64, 32}) {
    const int padded = (gn + c - 1) / c * c;
    if (padded < best) {
      best = padded;
      bn = c;
    }
  }
  return bn;
}

constexpr int kMaxSplits = 16;
constexpr int64_t kMaxScratchFloats = int64_t{16} << 20;  // 64 MiB of fp32 partials

// Model constants (SM clock cycles; bytes per cycle per SM).
constexpr double kFill = 1500;      // first tile: a DRAM round trip under load
constexpr double kIterLat = 300;    // per k-tile latency not hidden by a lone block
constexpr double kL2Bytes = 32;     // L2 -> SM operand bandwidth per SM with all SMs loading
constexpr double kFixLat = 1000;    // fence + counter atomic + first partial read
constexpr double kFixBytes = 64;    // partial-tile read bandwidth of the one summing block

// Best split count for a BM x BN tile: blocks = tiles x splits, waves of sms * occ blocks;
// per block: fill + k-tiles x max(tensor, latency, L2 bandwidth) + the split-K fixup.
Plan plan_splits(const int nph, const int64_t* gm, const int* kt, int gn, int bm, int bn,
                 double rate, int occ, int sms, bool allow_split) {
  int ktmax = 0;
  for (int i = 0; i < nph; ++i) ktmax = std::max(ktmax, kt[i]);
  const int64_t nt = (gn + bn - 1) / bn;
  int64_t tiles_grid = 0;  // tiles in the grid (Dgrad: the largest phase's rows, every phase)
  for (int i = 0; i < nph; ++i) tiles_grid = std::max<int64_t>(tiles_grid, (gm[i] + bm - 1) / bm);
  tiles_grid *= nt * nph;
  const double F = double(bm) * bn * 32 * 2 / rate;
  const double bytes = double(bm + bn) * 32 * 2;
  Plan best;
  best.cost = 1e300;
  const int smax = allow_split ? std::min(kMaxSplits, std::max(ktmax, 1)) : 1;
  for (int sp = 1; sp <= smax; ++sp) {
    const int kps = sp == 1 ? (1 << 30) : (ktmax + sp - 1) / sp;
    if (sp > 1 && (ktmax + kps - 1) / kps != sp) continue;  // same as a smaller count
    if (sp > 1 && tiles_grid * sp * bm * bn > kMaxScratchFloats) break;
    int64_t blocks = 0;
    for (int i = 0; i < nph; ++i) {
      const int64_t t = (gm[i] + bm - 1) / bm * nt;
      blocks += t * (sp == 1 ? 1 : std::max(1, (kt[i] + kps - 1) / kps));
    }
    const int64_t slots = int64_t(sms) * occ;
    const double waves = double((blocks + slots - 1) / slots);
    const double c = double(std::min<int64_t>(occ, (blocks + sms - 1) / sms));
    const double t_it = std::max({c * F, F + kIterLat, c * bytes / kL2Bytes});
    const double kt_block = sp == 1 ? ktmax : std::min(kps, ktmax);
    double t_block = kFill + kt_block * t_it;
    if (sp > 1)
      t_block += kFixLat + (sp - 1) * bm * bn * 4.0 / kFixBytes +
                 c * bm * bn * 4.0 / kL2Bytes;
    const double cost = waves * t_block;
    if (cost < best.cost) {
      best.bm = bm;
      best.bn = bn;
      best.splits = sp;
      best.kps = kps;
      best.cost = cost;
    }
  }
  return best;
}

// ---------------------------------------------------------------- host side
int num_sms() { return detail::sm_count(); }

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// One kernel instantiation: its launch configuration, pointer and occupancy (cached).
template <class T, int BM_, int BN_, int WM, int WN, Mode MODE>
struct Kern {
  static constexpr int BM = BM_, BN = BN_;
  static constexpr int THREADS = (BM / WM) * (BN / WN) * 32;
  static constexpr int SMEM = Layout<BM, BN, MODE>::SMEM_BYTES;
  static constexpr double RATE = detail_rate(WM, WN);
  static void (*ptr())(Params) {
    static void (*const k)(Params) = [] {
      void (*kp)(Params) = igemm_kernel<T, BM, BN, WM, WN, MODE>;
      CUDA_CHECK(cudaFuncSetAttribute(kp, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM));
      return kp;
    }();
    return k;
  }
  static int occupancy() {
    static const int o = [] {
      int n = 0;
      CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, ptr(), THREADS, SMEM));
      return std::max(n, 1);
    }();
    return o;
  }
  static void launch(const Params& p, dim3 grid, cudaStream_t st) {
    ptr()<<<grid, THREADS, SMEM, st>>>(p);
    HR_CUDA_LAUNCH_CHECK();
  }
};

// Calls f(Kern<...>{}) for the (bm, bn) tile of the forward / backward-data kernels.
template <class T, Mode MODE, class F>
void with_mn_tile(int bm, int bn, F&& f) {
  if (bm == 128 && bn == 128) return f(Kern<T, 128, 128, 64, 32, MODE>{});
  if (bm == 128 && bn == 64) return f(Kern<T, 128, 64, 64, 32, MODE>{});
  if (bm == 128 && bn == 32) return f(Kern<T, 128, 32, 32, 32, MODE>{});
  if (bm == 64 && bn == 128) return f(Kern<T, 64, 128, 64, 32, MODE>{});
  if (bm == 64 && bn == 64) return f(Kern<T, 64, 64, 32, 32, MODE>{});
  if (bm == 64 && bn == 32) return f(Kern<T, 64, 32, 32, 16, MODE>{});
  throw Error(str_cat("igemm: no kernel for tile ", bm, "x", bn));
}
// Backward-weight tiles: M (= K) tile bm, N (= R*S*C) tile 128.
template <class T, class F>
void with_wgrad_tile(int bm, F&& f) {
  if (bm == 128) return f(Kern<T, 128, 128, 64, 32, Mode::Wgrad>{});
  if (bm == 64) return f(Kern<T, 64, 128, 64, 32, Mode::Wgrad>{});
  if (bm == 32) return f(Kern<T, 32, 128, 32, 32, Mode::Wgrad>{});
  throw Error(str_cat("igemm: no backward-weight kernel for tile ", bm, "x128"));
}

// Split-K arrival counters, one array per (device, stream). Each launch leaves them at zero
// (the last arrival of a tile resets its counter), so launches on one stream can share them;
// launches on different streams use different arrays.
int* tile_counters(Stream st, int64_t n) {
  struct Entry {
    int device;
    cudaStream_t stream;
    int* p;
    int64_t cap;
  };
  static std::mutex mu;
  static std::vector<Entry>* entries = new std::vector<Entry>;
  const cudaStream_t cs = detail::stream_of(st);
  const int device = detail::current_device();
  std::lock_guard<std::mutex> lock(mu);
  for (Entry& e : *entries) {
    if (e.device != device || e.stream != cs) continue;
    if (e.cap >= n) return e.p;
    hr::cuda::free(e.p, st);  // stream-ordered: earlier launches on st finish first
    e.cap = std::max<int64_t>(n, 2 * e.cap);
    e.p = static_cast<int*>(hr::cuda::alloc(sizeof(int) * e.cap, st));
    hr::cuda::memset_zero(e.p, sizeof(int) * e.cap, st);
    return e.p;
  }
  const int64_t cap = std::max<int64_t>(n, 4096);
  int* p = static_cast<int*>(hr::cuda::alloc(sizeof(int) * cap, st));
  hr::cuda::memset_zero(p, sizeof(int) * cap, st);
  entries->push_back({device, cs, p, cap});
  return p;
}

Params base_params(const kern::ConvShape& s) {
  Params p{};
  p.N = static_cast<int>(s.N);
  p.C = static_cast<int>(s.C);
  p.H = static_cast<int>(s.H);
  p.W = static_cast<int>(s.W);
  p.K = static_cast<int>(s.K);
  p.R = static_cast<int>(s.R);
  p.S = static_cast<int>(s.S);
  p.sh = static_cast<int>(s.stride_h);
  p.sw = static_cast<int>(s.stride_w);
  p.ph = static_cast<int>(s.pad_h);
  p.pw = static_cast<int>(s.pad_w);
  p.P = static_cast<int>(s.P);
  p.Q = static_cast<int>(s.Q);
  p.splits = 1;
  p.kt_per_split = 1 << 30;
  return p;
}

// Launches one implicit GEMM: plan -> scratch and counters when split -> kernel.
template <class K>
void run_planned(Params p, const Plan& pl, int phases, Stream st) {
  const cudaStream_t cs = detail::stream_of(st);
  const dim3 grid((p.gm + K::BM - 1) / K::BM, (p.gn + K::BN - 1) / K::BN, phases * pl.splits);
  p.splits = pl.splits;
  p.kt_per_split = pl.kps;
  float* ws = nullptr;
  if (pl.splits > 1) {
    const int64_t tiles = int64_t(grid.x) * grid.y * phases;
    const int64_t part_floats = tiles * pl.splits * K::BM * K::BN;
    // Partials, then room for one arrival counter per tile. Eager launches use the stream's
    // counter array; a launch captured into a CUDA graph zeroes and uses its own, so that
    // replays never share counters with other work (the graph's forked streams run outside
    // their own stream order).
    ws = static_cast<float*>(
        hr::cuda::alloc(sizeof(float) * part_floats + sizeof(int) * tiles, st));
    p.ws = ws;
    if (hr::cuda::is_capturing(st)) {
      p.counters = reinterpret_cast<int*>(ws + part_floats);
      CUDA_CHECK(cudaMemsetAsync(p.counters, 0, sizeof(int) * tiles, cs));
    } else {
      p.counters = tile_counters(st, tiles);
    }
  }
  K::launch(p, grid, cs);
  if (ws) hr::cuda::free(ws, st);
}

// Per-phase GEMM rows and reduction tiles (forward / backward-weight: one phase).
struct PhaseDims {
  int n = 0;
  int64_t gm[4] = {0, 0, 0, 0};
  int kt[4] = {0, 0, 0, 0};
};

PhaseDims fwd_dims(const kern::ConvShape& s) {
  PhaseDims ph;
  ph.n = 1;
  ph.gm[0] = s.N * s.P * s.Q;
  ph.kt[0] = static_cast<int>((s.R * s.S * s.C + BK - 1) / BK);
  return ph;
}
// Per phase (a, b): rows N * ceil((H - a) / sh) * ceil((W - b) / sw), taps
// ceil((R - r0) / sh) * ceil((S - s0) / sw) with r0 = (a + pad) mod sh (as in the kernel).
PhaseDims dgrad_dims(const kern::ConvShape& s) {
  PhaseDims ph;
  ph.n = static_cast<int>(s.stride_h * s.stride_w);
  for (int z = 0; z < ph.n; ++z) {
    const int64_t a = z / s.stride_w, b = z % s.stride_w;
    const int64_t r0 = (a + s.pad_h) % s.stride_h, s0 = (b + s.pad_w) % s.stride_w;
    const int64_t nr = r0 < s.R ? (s.R - r0 + s.stride_h - 1) / s.stride_h : 0;
    const int64_t ns = s0 < s.S ? (s.S - s0 + s.stride_w - 1) / s.stride_w : 0;
    const int64_t hph = a < s.H ? (s.H - a + s.stride_h - 1) / s.stride_h : 0;
    const int64_t wph = b < s.W ? (s.W - b + s.stride_w - 1) / s.stride_w : 0;
    ph.gm[z] = s.N * hph * wph;
    ph.kt[z] = static_cast<int>((nr * ns * s.K + BK - 1) / BK);
  }
  return ph;
}
PhaseDims wgrad_dims(const kern::ConvShape& s) {
  PhaseDims ph;
  ph.n = 1;
  ph.gm[0] = s.K;
  ph.kt[0] = static_cast<int>((s.N * s.P * s.Q + BK - 1) / BK);
  return ph;
}
// Backward-weight M (= K) tile: the one of {128, 64, 32} that pads K least.
int wgrad_bm(int gm) {
  int bm = 128;
  int best = (gm + 127) / 128 * 128;
  for (int c : {64, 32}) {
    const int padded = (gm + c - 1) / c * c;
    if (padded < best) {
      best = padded;
      bm = c;
    }
  }
  return bm;
}
// v1's backward-weight split count: about two waves of blocks, >= 8 reduction tiles per
// split, <= 128 splits, <= 64 MiB of partials. When that exceeds kMaxSplits, v1's scheme is
// kept (partials [split][K][RSC] and a reduce kernel over the whole GPU): one block summing
// more than 16 partial tiles would be the tail of the kernel.
int64_t wgrad_v1_splits(int gm, int gn, int bm, int ktiles) {
  const int64_t tiles = static_cast<int64_t>((gm + bm - 1) / bm) * ((gn + 127) / 128);
  int64_t sp = (2 * num_sms() + tiles - 1) / tiles;
  sp = std::min<int64_t>({sp, std::max(1, ktiles / 8), 128,
                          std::max<int64_t>(1, kMaxScratchFloats / (int64_t{gm} * gn))});
  sp = std::max<int64_t>(sp, 1);
  const int64_t kps = (ktiles + sp - 1) / sp;
  return (ktiles + kps - 1) / kps;
}

template <class T, Mode MODE>
Plan plan_mn(const PhaseDims& ph, int gn, bool allow_split) {
  const int bn = pick_bn(gn);
  Plan best;
  best.cost = 1e300;
  for (int bm : {128, 64})
    with_mn_tile<T, MODE>(bm, bn, [&](auto k) {
      using Kt = decltype(k);
      const Plan pl = plan_splits(ph.n, ph.gm, ph.kt, gn, Kt::BM, Kt::BN, Kt::RATE,
                                  Kt::occupancy(), num_sms(), allow_split);
      if (pl.cost < best.cost) best = pl;
    });
  return best;
}

constexpr int64_t kMaxElems = (int64_t{1} << 31) - 1;

}  // namespace

bool supported(const kern::ConvShape& s, DT dt) {
  if (dt != DT::f16 && dt != DT::bf16) return false;
  if (s.N < 1 || s.C < 8 || s.K < 8 || s.C % 8 != 0 || s.K % 8 != 0) return false;
  if (s.R != s.S || (s.R != 1 && s.R != 3)) return false;
  if (s.stride_h != s.stride_w || (s.stride_h != 1 && s.stride_h != 2)) return false;
  if (s.pad_h != s.pad_w || s.pad_h < 0 || s.pad_h > s.R / 2) return false;
  if (s.H < 1 || s.W < 1 || s.P < 1 || s.Q < 1) return false;
  if (s.P != (s.H + 2 * s.pad_h - s.R) / s.stride_h + 1) return false;
  if (s.Q != (s.W + 2 * s.pad_w - s.S) / s.stride_w + 1) return false;
  if (s.N * s.H * s.W * s.C > kMaxElems || s.N * s.P * s.Q * s.K > kMaxElems) return false;
  if (s.K * s.R * s.S * s.C > kMaxElems) return false;
  return true;
}

bool forward_fused(const kern::ConvShape& s, DT dt, const void* x, const void* w,
                   const Epilogue& ep, void* y, Stream st) {
  if (!supported(s, dt) || !aligned16(x) || !aligned16(w) || !aligned16(y)) return false;
  Params p = base_params(s);
  p.gm = static_cast<int>(s.N * s.P * s.Q);
  p.gn = p.K;
  p.gk = static_cast<int>(s.R * s.S * s.C);
  p.a = x;
  p.b = w;
  p.out = y;
  p.scale = ep.scale;
  p.shift = ep.shift;
  p.residual = ep.residual;
  p.relu = ep.relu ? 1 : 0;
  p.out_f32 = ep.out_f32 ? 1 : 0;
  const PhaseDims ph = fwd_dims(s);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const Plan pl = plan_mn<T, Mode::Fwd>(ph, p.gn, true);
    with_mn_tile<T, Mode::Fwd>(
        pl.bm, pl.bn, [&](auto k) { run_planned<decltype(k)>(p, pl, 1, st); });
  };
  if (dt == DT::bf16)
    run(__nv_bfloat16{});
  else
    run(__half{});
  return true;
}

bool forward(const kern::ConvShape& s, DT dt, const void* x, const void* w, const float* bias,
             void* y, Stream st) {
  Epilogue ep;
  ep.shift = bias;
  return forward_fused(s, dt, x, w, ep, y, st);
}

bool backward_data(const kern::ConvShape& s, DT dt, const void* dy, const void* w, void* dx,
                   Stream st) {
  if (!supported(s, dt) || !aligned16(dy) || !aligned16(w) || !aligned16(dx)) return false;
  Params p = base_params(s);
  // Per phase (a, b): rows N * ceil((H - a) / sh) * ceil((W - b) / sw), taps
  // ceil((R - r0) / sh) * ceil((S - s0) / sw) with r0 = (a + pad) mod sh (as in the kernel).
  // The grid is sized by phase (0, 0), which has the most rows.
  const PhaseDims ph = dgrad_dims(s);
  p.gm = static_cast<int>(ph.gm[0]);
  p.gn = p.C;
  p.gk = 0;
  p.a = dy;
  p.b = w;
  p.out = dx;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const Plan pl = plan_mn<T, Mode::Dgrad>(ph, p.gn, true);
    with_mn_tile<T, Mode::Dgrad>(pl.bm, pl.bn,
                                 [&](auto k) { run_planned<decltype(k)>(p, pl, ph.n, st); });
  };
  if (dt == DT::bf16)
    run(__nv_bfloat16{});
  else
    run(__half{});
  return true;
}

bool backward_weight(const kern::ConvShape& s, DT dt, const void* x, const void* dy, void* dw,
                     float* dbias, Stream st) {
  if (!supported(s, dt) || !aligned16(x) || !aligned16(dy) || !aligned16(dw)) return false;
  Params p = base_params(s);
  p.gm = p.K;
  p.gn = static_cast<int>(s.R * s.S * s.C);
  p.gk = static_cast<int>(s.N * s.P * s.Q);
  p.a = dy;
  p.b = x;
  p.out = dw;
  const int bm = wgrad_bm(p.gm);
  const PhaseDims ph = wgrad_dims(s);
  const int ktiles = ph.kt[0];
  const int64_t v1_splits = wgrad_v1_splits(p.gm, p.gn, bm, ktiles);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    with_wgrad_tile<T>(bm, [&](auto k) {
      using Kt = decltype(k);
      if (v1_splits <= kMaxSplits) {
        const Plan pl = plan_splits(ph.n, ph.gm, ph.kt, p.gn, Kt::BM, Kt::BN, Kt::RATE,
                                    Kt::occupancy(), num_sms(), true);
        run_planned<Kt>(p, pl, 1, st);
        return;
      }
      const int kps = static_cast<int>((ktiles + v1_splits - 1) / v1_splits);
      const int splits = static_cast<int>(v1_splits);
      const int64_t n_out = static_cast<int64_t>(p.gm) * p.gn;
      const cudaStream_t cs = detail::stream_of(st);
      float* ws = static_cast<float*>(hr::cuda::alloc(sizeof(float) * splits * n_out, st));
      Params q = p;
      q.splits = splits;
      q.kt_per_split = kps;
      q.ws = ws;
      q.counters = nullptr;
      Kt::launch(q, dim3((p.gm + Kt::BM - 1) / Kt::BM, (p.gn + Kt::BN - 1) / Kt::BN, splits), cs);
      const int blocks = static_cast<int>(std::min<int64_t>((n_out + 255) / 256, 4 * num_sms()));
      wgrad_reduce_kernel<T><<<blocks, 256, 0, cs>>>(ws, splits, n_out, static_cast<T*>(dw));
      HR_CUDA_LAUNCH_CHECK();
      hr::cuda::free(ws, st);
    });
  };
  if (dt == DT::bf16)
    run(__nv_bfloat16{});
  else
    run(__half{});
  if (dbias) detail::column_sum(dt, 1, s.N * s.P * s.Q, s.K, dy, 1.f, true, dbias, st);
  return true;
}

int planned_splits(const kern::ConvShape& s, DT dt, Pass pass) {
  if (!supported(s, dt)) return 0;
  int out = 1;
  auto query = [&](auto tag) {
    using T = decltype(tag);
    if (pass == Pass::fwd) {
      out = plan_mn<T, Mode::Fwd>(fwd_dims(s), static_cast<int>(s.K), true).splits;
    } else if (pass == Pass::dgrad) {
      out = plan_mn<T, Mode::Dgrad>(dgrad_dims(s), static_cast<int>(s.C), true).splits;
    } else {
      const PhaseDims ph = wgrad_dims(s);
      const int gm = static_cast<int>(s.K), gn = static_cast<int>(s.R * s.S * s.C);
      const int bm = wgrad_bm(gm);
      const int64_t v1 = wgrad_v1_splits(gm, gn, bm, ph.kt[0]);
      if (v1 > kMaxSplits) {
        out = static_cast<int>(v1);
        return;
      }
      with_wgrad_tile<T>(bm, [&](auto k) {
        using Kt = decltype(k);
        out = plan_splits(ph.n, ph.gm, ph.kt, gn, Kt::BM, Kt::BN, Kt::RATE, Kt::occupancy(),
                          num_sms(), true)
                  .splits;
      });
    }
  };
  if (dt == DT::bf16)
    query(__nv_bfloat16{});
  else
    query(__half{});
  return out;
}

bool conv1x1_upsample_nearest_add(DT dt, int64_t N, int64_t C, int64_t H, int64_t W, int64_t K,
                                  int f, const void* x, const void* w, const float* scale,
                                  const float* shift, void* out, Stream st) {
  const kern::ConvShape s = kern::ConvShape::make(N, C, H, W, K, 1, 1, 1, 1, 0, 0);
  if (!supported(s, dt) || f < 1 || (f & (f - 1)) != 0) return false;
  if (N * H * f * W * f * K > kMaxElems) return false;
  if (!aligned16(x) || !aligned16(w) || !aligned16(out)) return false;
  Params p = base_params(s);
  p.gm = static_cast<int>(N * H * W);
  p.gn = p.K;
  p.gk = p.C;
  p.a = x;
  p.b = w;
  p.out = out;
  p.scale = scale;
  p.shift = shift;
  p.up = f;
  const PhaseDims ph = fwd_dims(s);
  // No split-K here: the epilogue adds into out (a read-modify-write per element).
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const Plan pl = plan_mn<T, Mode::UpNearest>(ph, p.gn, false);
    with_mn_tile<T, Mode::UpNearest>(pl.bm, pl.bn,
                                     [&](auto k) { run_planned<decltype(k)>(p, pl, 1, st); });
  };
  if (dt == DT::bf16)
    run(__nv_bfloat16{});
  else
    run(__half{});
  return true;
}

}  // namespace hr::cuda::igemm
