// CUDA nearest / bilinear resampling of NHWC maps, forward and backward, with PyTorch's index
// arithmetic in float (the same as kernels/cpu/resample.cpp; multiplications are rounded
// separately, never fused, so source indices agree exactly).
// Forward: one thread per (output pixel, channel vector). Backward gathers instead of
// scattering (deterministic, no atomics): the output indices that read input index i form a
// contiguous range, found by binary search since the source index is monotone in the output.
#include <algorithm>

#include "kernels/cuda/check.h"

namespace hr::cuda {
namespace {

using detail::load_f;
using detail::store_f;
using kern::ResampleShape;

constexpr int kThreads = 256;

// PyTorch's rule and the CPU's (kernels/cpu/resample.cpp): min(floor(o * scale), in - 1) for
// every size (a given scale factor need not be in / out even where out is in or 2 in).
__device__ __forceinline__ int64_t nearest_src(int64_t o, int64_t in, float scale) {
  const int64_t s = static_cast<int64_t>(floorf(__fmul_rn(static_cast<float>(o), scale)));
  return s < in - 1 ? s : in - 1;
}

struct Tap {
  int64_t i0, i1;
  float l0, l1;
};

__device__ __forceinline__ Tap linear_tap(int64_t o, int64_t in, int64_t out, float scale,
                                          bool align_corners) {
  if (out == in) return {o, o, 1.f, 0.f};
  const float fo = static_cast<float>(o);
  const float src = align_corners
                        ? __fmul_rn(scale, fo)
                        : fmaxf(__fsub_rn(__fmul_rn(scale, __fadd_rn(fo, 0.5f)), 0.5f), 0.f);
  Tap t;
  t.i0 = static_cast<int64_t>(src);
  t.i1 = t.i0 + (t.i0 < in - 1 ? 1 : 0);
  t.l1 = fminf(fmaxf(src - static_cast<float>(t.i0), 0.f), 1.f);
  t.l0 = 1.f - t.l1;
  return t;
}

// First o in [0, out) whose source index is >= target (out when none).
template <bool kBilinear>
__device__ __forceinline__ int64_t first_src_at_least(int64_t target, int64_t in, int64_t out,
                                                      float scale, bool align_corners) {
  int64_t lo = 0, hi = out;
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    const int64_t s = kBilinear ? linear_tap(mid, in, out, scale, align_corners).i0
                                : nearest_src(mid, in, scale);
    if (s < target)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// Weight of output index o on input index i along one axis.
__device__ __forceinline__ float linear_weight(const Tap& t, int64_t i) {
  return (t.i0 == i ? t.l0 : 0.f) + (t.i1 == i ? t.l1 : 0.f);
}

// x [N,H,W,C] -> y [N,OH,OW,C]; rows of the launch are output pixels. With `add` ([N,OH,OW,C]
// or nullptr): y = add + the resampled x, one rounding (the unfused add's bits).
template <class T, int V, bool kBilinear>
__global__ void __launch_bounds__(kThreads)
    resample_forward_kernel(ResampleShape s, const T* __restrict__ x, const T* __restrict__ add,
                            T* __restrict__ y) {
  const int64_t cv = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (cv * V >= s.C) return;
  const int64_t rows = s.N * s.OH * s.OW;
  const int64_t step = int64_t(gridDim.y) * blockDim.y;
  for (int64_t p = int64_t(blockIdx.y) * blockDim.y + threadIdx.y; p < rows; p += step) {
    const int64_t ow = p % s.OW, oh = (p / s.OW) % s.OH, n = p / (s.OW * s.OH);
    const T* xn = x + n * s.H * s.W * s.C + cv * V;
    float out[V];
    if constexpr (!kBilinear) {
      const int64_t h = nearest_src(oh, s.H, s.scale_h);
      const int64_t w = nearest_src(ow, s.W, s.scale_w);
      load_f<T, V>(xn + (h * s.W + w) * s.C, out);
    } else {
      const Tap th = linear_tap(oh, s.H, s.OH, s.scale_h, s.align_corners);
      const Tap tw = linear_tap(ow, s.W, s.OW, s.scale_w, s.align_corners);
      float a[V], b[V], c[V], d[V];
      load_f<T, V>(xn + (th.i0 * s.W + tw.i0) * s.C, a);
      load_f<T, V>(xn + (th.i0 * s.W + tw.i1) * s.C, b);
      load_f<T, V>(xn + (th.i1 * s.W + tw.i0) * s.C, c);
      load_f<T, V>(xn + (th.i1 * s.W + tw.i1) * s.C, d);
#pragma unroll
      for (int i = 0; i < V; ++i)
        out[i] = th.l0 * (tw.l0 * a[i] + tw.l1 * b[i]) + th.l1 * (tw.l0 * c[i] + tw.l1 * d[i]);
    }
    if (add) {
      float r[V];
      load_f<T, V>(add + p * s.C + cv * V, r);
#pragma unroll
      for (int i = 0; i < V; ++i) out[i] = __fadd_rn(r[i], out[i]);
    }
    store_f<T, V>(y + p * s.C + cv * V, out);
  }
}

// dy [N,OH,OW,C] -> dx [N,H,W,C]; rows of the launch are input pixels.
template <class T, int V, bool kBilinear>
__global__ void __launch_bounds__(kThreads)
    resample_backward_kernel(ResampleShape s, const T* __restrict__ dy, T* __restrict__ dx) {
  const int64_t cv = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (cv * V >= s.C) return;
  const int64_t rows = s.N * s.H * s.W;
  const int64_t step = int64_t(gridDim.y) * blockDim.y;
  for (int64_t p = int64_t(blockIdx.y) * blockDim.y + threadIdx.y; p < rows; p += step) {
    const int64_t w = p % s.W, h = (p / s.W) % s.H, n = p / (s.W * s.H);
    const T* dyn = dy + n * s.OH * s.OW * s.C + cv * V;
    // Output indices whose source index lies in [h - 1, h] (bilinear) or is h (nearest).
    const int64_t lo_h = kBilinear ? h - 1 : h, lo_w = kBilinear ? w - 1 : w;
    const int64_t oh0 = first_src_at_least<kBilinear>(lo_h, s.H, s.OH, s.scale_h, s.align_corners);
    const int64_t oh1 = first_src_at_least<kBilinear>(h + 1, s.H, s.OH, s.scale_h, s.align_corners);
    const int64_t ow0 = first_src_at_least<kBilinear>(lo_w, s.W, s.OW, s.scale_w, s.align_corners);
    const int64_t ow1 = first_src_at_least<kBilinear>(w + 1, s.W, s.OW, s.scale_w, s.align_corners);
    float acc[V] = {};
    for (int64_t oh = oh0; oh < oh1; ++oh) {
      float wh = 1.f;
      if constexpr (kBilinear) wh = linear_weight(linear_tap(oh, s.H, s.OH, s.scale_h, s.align_corners), h);
      for (int64_t ow = ow0; ow < ow1; ++ow) {
        float ww = 1.f;
        if constexpr (kBilinear) ww = linear_weight(linear_tap(ow, s.W, s.OW, s.scale_w, s.align_corners), w);
        float g[V];
        load_f<T, V>(dyn + (oh * s.OW + ow) * s.C, g);
#pragma unroll
        for (int i = 0; i < V; ++i) acc[i] = fmaf(wh * ww, g[i], acc[i]);
      }
    }
    store_f<T, V>(dx + p * s.C + cv * V, acc);
  }
}

template <bool kBilinear, bool kBackward>
void launch(DT dt, const ResampleShape& s, const void* in, void* out, Stream st,
            const void* add = nullptr) {
  const int64_t rows = kBackward ? s.N * s.H * s.W : s.N * s.OH * s.OW;
  if (rows <= 0 || s.C <= 0) return;
  if (kBackward && s.OH * s.OW == 0) {
    memset_zero(out, size_t(rows * s.C) * detail::dt_size(dt), st);
    return;
  }
  const cudaStream_t cs = detail::stream_of(st);
  HR_DISPATCH_DT(dt, T, {
    const detail::RowTiling t =
        detail::row_tiling(s.C, detail::vec_width(s.C, sizeof(T), {in, out, add}), kThreads);
    const int64_t gy = std::min<int64_t>({(rows + t.ty - 1) / t.ty, 65535,
                                          std::max<int64_t>(1, detail::sm_count() * 8 / t.col_tiles)});
    const dim3 grid(unsigned(t.col_tiles), unsigned(gy)), block(t.tx, t.ty);
    detail::dispatch_vec<T>(t.V, [&](auto v) {
      constexpr int V = decltype(v)::value;
      if constexpr (kBackward)
        resample_backward_kernel<T, V, kBilinear><<<grid, block, 0, cs>>>(
            s, static_cast<const T*>(in), static_cast<T*>(out));
      else
        resample_forward_kernel<T, V, kBilinear><<<grid, block, 0, cs>>>(
            s, static_cast<const T*>(in), static_cast<const T*>(add), static_cast<T*>(out));
    });
  });
  HR_CUDA_LAUNCH_CHECK();
}

}  // namespace

// x [N,H,W,C], add [N,OH,OW,C] or nullptr -> y [N,OH,OW,C]
void upsample_nearest_forward(DT dt, const ResampleShape& s, const void* x, void* y, Stream st,
                              const void* add) {
  launch<false, false>(dt, s, x, y, st, add);
}
// dy [N,OH,OW,C] -> dx [N,H,W,C]
void upsample_nearest_backward(DT dt, const ResampleShape& s, const void* dy, void* dx, Stream st) {
  launch<false, true>(dt, s, dy, dx, st);
}
void upsample_bilinear_forward(DT dt, const ResampleShape& s, const void* x, void* y, Stream st) {
  launch<true, false>(dt, s, x, y, st);
}
void upsample_bilinear_backward(DT dt, const ResampleShape& s, const void* dy, void* dx, Stream st) {
  launch<true, true>(dt, s, dy, dx, st);
}

}  // namespace hr::cuda
