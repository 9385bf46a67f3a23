// Implicit-GEMM convolution on tensor cores (mma.sync m16n8k16, ldmatrix, 4-stage cp.async
// pipeline), NHWC activations, KRSC weights, f16/bf16 in, fp32 accumulation.
//
// One kernel template serves every pass; only the operand gathers and the epilogue differ:
//   Fwd        y[m = npq][n = k]   = sum_{red = rsc} x(gather)[m][red] * w[n][red]
//   Dgrad      dx[m = nhw][n = c]  = sum_{red = (tap, k)} dy(gather)[m][red] * w[k][tap][c]
//              (blockIdx.z = output phase (h mod sh, w mod sw); the phase's taps only)
//   Wgrad      dw[m = k][n = rsc]  = sum_{red = npq} dy[red][m] * x(gather)[red][n]
//              (blockIdx.z = split of the reduction, fp32 partials, then a reduce kernel)
//   UpNearest  Fwd with R = S = 1 whose epilogue adds the tile, nearest-upsampled, into out.
// Shared-memory tiles are [rows][BK + 8] when the reduction index is contiguous in global
// memory (A of Fwd/Dgrad, B of Fwd) and [BK][cols + 8] otherwise (A of Wgrad, B of
// Dgrad/Wgrad), read with ldmatrix / ldmatrix.trans; the 8-element pad keeps the eight
// 16-byte rows of each ldmatrix in distinct banks. Design notes: docs/kernels.md.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

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
  int kt_per_split;  // Wgrad: reduction tiles per blockIdx.z
  const void* a;     // Fwd/UpNearest: x; Dgrad: dy; Wgrad: dy
  const void* b;     // Fwd/UpNearest/Dgrad: w; Wgrad: x
  void* out;         // y / dx / dw / UpNearest: the high-resolution sum
  float* ws;         // Wgrad partials [splits][gm][gn] (nullptr: one split, write dw directly)
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
  int pa = 0, pb = 0, r0 = 0, s0 = 0, nr = p.R, ns = p.S, Hph = p.H, Wph = p.W, th = 0, tw = 0;
  if constexpr (MODE == Mode::Dgrad) {
    pa = blockIdx.z / p.sw;
    pb = blockIdx.z % p.sw;
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
  int kt_begin = 0, kt_end = ktiles_all;
  if constexpr (MODE == Mode::Wgrad) {
    kt_begin = blockIdx.z * p.kt_per_split;
    kt_end = min(kt_begin + p.kt_per_split, ktiles_all);
  }
  const int nkt = max(kt_end - kt_begin, 0);

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
        const int red = kt * BK + row;
        const bool v = n < p.gn && red < gk;
        const T* src = gB;
        if (v) {
          const int tap = red / p.K, kk = red - tap * p.K;
          const int ri = tap / ns, si = tap - ri * ns;
          const int r = r0 + ri * p.sh, s = s0 + si * p.sw;
          src = gB + ((kk * p.R + r) * p.S + s) * p.C + n;
        }
        cp_async16(smem_u32(b_st + row * B_LD + cc * 8), src, v);
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
            if (p.ws) {
              float2* w2 = reinterpret_cast<float2*>(
                  p.ws + static_cast<int64_t>(blockIdx.z) * gm * p.gn + o);
              *w2 = make_float2(v0, v1);
            } else {
              *reinterpret_cast<T2*>(static_cast<T*>(p.out) + o) = CV::pack(v0, v1);
            }
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

// dw[i] = sum_z ws[z][i], converted to T.
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

// ---------------------------------------------------------------- host side
int num_sms() { return detail::sm_count(); }

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

template <class T, int BM, int BN, int WM, int WN, Mode MODE>
void launch(const Params& p, dim3 grid, cudaStream_t st) {
  constexpr int THREADS = (BM / WM) * (BN / WN) * 32;
  constexpr int SMEM = Layout<BM, BN, MODE>::SMEM_BYTES;
  auto* kern = igemm_kernel<T, BM, BN, WM, WN, MODE>;
  static const bool attr_set = [kern] {
    CUDA_CHECK(
        cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM));
    return true;
  }();
  (void)attr_set;
  kern<<<grid, THREADS, SMEM, st>>>(p);
  HR_CUDA_LAUNCH_CHECK();
}

struct Tile {
  int bm, bn;
};

// Output-channel tile: the one that pads gn least (ties: the wider one reads A fewer times);
// 64-row tiles when 128-row tiles would not fill the SMs.
Tile pick_tile(int gm, int gn) {
  int bn = 128;
  int best = (gn + 127) / 128 * 128;
  for (int c : {64, 32}) {
    const int padded = (gn + c - 1) / c * c;
    if (padded < best) { best = padded; bn = c; }
  }
  const int64_t blocks128 = static_cast<int64_t>((gm + 127) / 128) * ((gn + bn - 1) / bn);
  const int bm = blocks128 >= num_sms() ? 128 : 64;
  return {bm, bn};
}

template <class T, Mode MODE>
void launch_mn(const Params& p, Tile t, int grid_z, cudaStream_t st) {
  const dim3 grid((p.gm + t.bm - 1) / t.bm, (p.gn + t.bn - 1) / t.bn, grid_z);
  if (t.bm == 128 && t.bn == 128) return launch<T, 128, 128, 64, 32, MODE>(p, grid, st);
  if (t.bm == 128 && t.bn == 64) return launch<T, 128, 64, 64, 32, MODE>(p, grid, st);
  if (t.bm == 128 && t.bn == 32) return launch<T, 128, 32, 32, 32, MODE>(p, grid, st);
  if (t.bm == 64 && t.bn == 128) return launch<T, 64, 128, 64, 32, MODE>(p, grid, st);
  if (t.bm == 64 && t.bn == 64) return launch<T, 64, 64, 32, 32, MODE>(p, grid, st);
  if (t.bm == 64 && t.bn == 32) return launch<T, 64, 32, 32, 16, MODE>(p, grid, st);
  throw Error(str_cat("igemm: no kernel for tile ", t.bm, "x", t.bn));
}

template <class T>
void launch_wgrad(const Params& p, int bm, int splits, cudaStream_t st) {
  const dim3 grid((p.gm + bm - 1) / bm, (p.gn + 127) / 128, splits);
  if (bm == 128) return launch<T, 128, 128, 64, 32, Mode::Wgrad>(p, grid, st);
  if (bm == 64) return launch<T, 64, 128, 64, 32, Mode::Wgrad>(p, grid, st);
  return launch<T, 32, 128, 32, 32, Mode::Wgrad>(p, grid, st);
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
  p.kt_per_split = 1;
  return p;
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
  const cudaStream_t cs = detail::stream_of(st);
  const Tile t = pick_tile(p.gm, p.gn);
  if (dt == DT::bf16)
    launch_mn<__nv_bfloat16, Mode::Fwd>(p, t, 1, cs);
  else
    launch_mn<__half, Mode::Fwd>(p, t, 1, cs);
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
  // Phase (0, 0) has the most rows; the kernel recomputes gm / gk per phase.
  const int64_t hph0 = (s.H + s.stride_h - 1) / s.stride_h;
  const int64_t wph0 = (s.W + s.stride_w - 1) / s.stride_w;
  p.gm = static_cast<int>(s.N * hph0 * wph0);
  p.gn = p.C;
  p.gk = 0;
  p.a = dy;
  p.b = w;
  p.out = dx;
  const cudaStream_t cs = detail::stream_of(st);
  const Tile t = pick_tile(static_cast<int>(s.N * s.H * s.W), p.gn);
  const int phases = p.sh * p.sw;
  if (dt == DT::bf16)
    launch_mn<__nv_bfloat16, Mode::Dgrad>(p, t, phases, cs);
  else
    launch_mn<__half, Mode::Dgrad>(p, t, phases, cs);
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
  const cudaStream_t cs = detail::stream_of(st);

  // Output-channel tile that pads K least; split the reduction so the grid covers ~2 waves.
  int bm = 128;
  {
    int best = (p.gm + 127) / 128 * 128;
    for (int c : {64, 32}) {
      const int padded = (p.gm + c - 1) / c * c;
      if (padded < best) { best = padded; bm = c; }
    }
  }
  const int64_t tiles = static_cast<int64_t>((p.gm + bm - 1) / bm) * ((p.gn + 127) / 128);
  const int ktiles = (p.gk + BK - 1) / BK;
  const int64_t ws_cap = std::max<int64_t>(1, (int64_t{64} << 20) / (int64_t{4} * p.gm * p.gn));
  int64_t splits = (2 * num_sms() + tiles - 1) / tiles;
  splits = std::min<int64_t>({splits, std::max(1, ktiles / 8), 128, ws_cap});
  splits = std::max<int64_t>(splits, 1);
  const int kps = static_cast<int>((ktiles + splits - 1) / splits);
  splits = (ktiles + kps - 1) / kps;
  p.kt_per_split = kps;

  float* ws = nullptr;
  const int64_t n_out = static_cast<int64_t>(p.gm) * p.gn;
  if (splits > 1) {
    ws = static_cast<float*>(hr::cuda::alloc(sizeof(float) * splits * n_out, st));
    p.ws = ws;
  }
  if (dt == DT::bf16)
    launch_wgrad<__nv_bfloat16>(p, bm, static_cast<int>(splits), cs);
  else
    launch_wgrad<__half>(p, bm, static_cast<int>(splits), cs);
  if (ws) {
    const int blocks = static_cast<int>(std::min<int64_t>((n_out + 255) / 256, 4 * num_sms()));
    if (dt == DT::bf16)
      wgrad_reduce_kernel<__nv_bfloat16><<<blocks, 256, 0, cs>>>(
          ws, static_cast<int>(splits), n_out, static_cast<__nv_bfloat16*>(dw));
    else
      wgrad_reduce_kernel<__half><<<blocks, 256, 0, cs>>>(ws, static_cast<int>(splits), n_out,
                                                          static_cast<__half*>(dw));
    HR_CUDA_LAUNCH_CHECK();
    hr::cuda::free(ws, st);
  }
  if (dbias) detail::column_sum(dt, 1, s.N * s.P * s.Q, s.K, dy, 1.f, true, dbias, st);
  return true;
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
  const cudaStream_t cs = detail::stream_of(st);
  const Tile t = pick_tile(p.gm, p.gn);
  if (dt == DT::bf16)
    launch_mn<__nv_bfloat16, Mode::UpNearest>(p, t, 1, cs);
  else
    launch_mn<__half, Mode::UpNearest>(p, t, 1, cs);
  return true;
}

}  // namespace hr::cuda::igemm
