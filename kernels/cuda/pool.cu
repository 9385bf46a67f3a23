// CUDA average pooling on NHWC maps (PyTorch AvgPool2d, ceil_mode = false, windows and
// divisors exactly as kernels/cpu/pool.cpp) and global average pooling, forward and backward.
// One thread per (pixel, channel vector); backward gathers over the windows that contain an
// input pixel (deterministic, no atomics).
#include <algorithm>

#include "kernels/cuda/check.h"

namespace hr::cuda {
namespace {

using detail::load_f;
using detail::store_f;
using kern::PoolShape;

constexpr int kThreads = 256;

struct Window {
  int64_t h0, h1, w0, w1;
  float divisor;
};

__device__ __forceinline__ Window window(const PoolShape& s, int64_t oh, int64_t ow) {
  int64_t h0 = oh * s.stride_h - s.pad_h, w0 = ow * s.stride_w - s.pad_w;
  int64_t h1 = min(h0 + s.kh, s.H + s.pad_h), w1 = min(w0 + s.kw, s.W + s.pad_w);
  const int64_t padded = (h1 - h0) * (w1 - w0);
  h0 = max(h0, int64_t(0));
  w0 = max(w0, int64_t(0));
  h1 = min(h1, s.H);
  w1 = min(w1, s.W);
  const int64_t inside = (h1 - h0) * (w1 - w0);
  return {h0, h1, w0, w1, float(s.count_include_pad ? padded : inside)};
}

// x [N,H,W,C] -> y [N,OH,OW,C]
template <class T, int V>
__global__ void
    avgpool_forward_kernel(PoolShape s, const T* __restrict__ x, T* __restrict__ y) {
  const int64_t cv = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (cv * V >= s.C) return;
  const int64_t rows = s.N * s.OH * s.OW;
  const int64_t step = int64_t(gridDim.y) * blockDim.y;
  for (int64_t p = int64_t(blockIdx.y) * blockDim.y + threadIdx.y; p < rows; p += step) {
    const int64_t ow = p % s.OW, oh = (p / s.OW) % s.OH, n = p / (s.OW * s.OH);
    const Window win = window(s, oh, ow);
    const T* xn = x + n * s.H * s.W * s.C + cv * V;
    float sum[V] = {};
    for (int64_t h = win.h0; h < win.h1; ++h)
      for (int64_t w = win.w0; w < win.w1; ++w) {
        float v[V];
        load_f<T, V>(xn + (h * s.W + w) * s.C, v);
#pragma unroll
        for (int i = 0; i < V; ++i) sum[i] += v[i];
      }
    const bool any = win.h0 < win.h1 && win.w0 < win.w1;  // all-padding windows average to 0
#pragma unroll
    for (int i = 0; i < V; ++i) sum[i] = any ? sum[i] / win.divisor : 0.f;
    store_f<T, V>(y + p * s.C + cv * V, sum);
  }
}

// dy [N,OH,OW,C] -> dx [N,H,W,C]
template <class T, int V>
__global__ void
    avgpool_backward_kernel(PoolShape s, const T* __restrict__ dy, T* __restrict__ dx) {
  const int64_t cv = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (cv * V >= s.C) return;
  const int64_t rows = s.N * s.H * s.W;
  const int64_t step = int64_t(gridDim.y) * blockDim.y;
  for (int64_t p = int64_t(blockIdx.y) * blockDim.y + threadIdx.y; p < rows; p += step) {
    const int64_t w = p % s.W, h = (p / s.W) % s.H, n = p / (s.W * s.H);
    // Windows [o*stride - pad, o*stride - pad + k) containing h (resp. w).
    const int64_t nh = h + s.pad_h - s.kh + 1, nw = w + s.pad_w - s.kw + 1;
    const int64_t oh0 = nh <= 0 ? 0 : (nh + s.stride_h - 1) / s.stride_h;
    const int64_t ow0 = nw <= 0 ? 0 : (nw + s.stride_w - 1) / s.stride_w;
    const int64_t oh1 = min((h + s.pad_h) / s.stride_h + 1, s.OH);
    const int64_t ow1 = min((w + s.pad_w) / s.stride_w + 1, s.OW);
    const T* dyn = dy + n * s.OH * s.OW * s.C + cv * V;
    float acc[V] = {};
    for (int64_t oh = oh0; oh < oh1; ++oh)
      for (int64_t ow = ow0; ow < ow1; ++ow) {
        const float div = window(s, oh, ow).divisor;
        float g[V];
        load_f<T, V>(dyn + (oh * s.OW + ow) * s.C, g);
#pragma unroll
        for (int i = 0; i < V; ++i) acc[i] += g[i] / div;
      }
    store_f<T, V>(dx + p * s.C + cv * V, acc);
  }
}

// dy [N,C] -> dx [N,HW,C]
template <class T, int V>
__global__ void
    global_avgpool_backward_kernel(int64_t N, int64_t C, int64_t HW, const T* __restrict__ dy,
                                   T* __restrict__ dx) {
  const int64_t cv = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (cv * V >= C) return;
  const float fhw = float(HW);
  const int64_t step = int64_t(gridDim.y) * blockDim.y;
  for (int64_t p = int64_t(blockIdx.y) * blockDim.y + threadIdx.y; p < N * HW; p += step) {
    float g[V];
    load_f<T, V>(dy + (p / HW) * C + cv * V, g);
#pragma unroll
    for (int i = 0; i < V; ++i) g[i] = g[i] / fhw;
    store_f<T, V>(dx + p * C + cv * V, g);
  }
}

dim3 rows_grid(int64_t rows, const detail::RowTiling& t) {
  const int64_t gy = std::min<int64_t>(
      {(rows + t.ty - 1) / t.ty, 65535, std::max<int64_t>(1, detail::sm_count() * 8 / t.col_tiles)});
  return dim3(unsigned(t.col_tiles), unsigned(std::max<int64_t>(gy, 1)));
}

}  // namespace

// x [N,H,W,C] -> y [N,OH,OW,C]
void avgpool2d_forward(DT dt, const PoolShape& s, const void* x, void* y, Stream st) {
  const int64_t rows = s.N * s.OH * s.OW;
  if (rows <= 0 || s.C <= 0) return;
  const cudaStream_t cs = detail::stream_of(st);
  HR_DISPATCH_DT(dt, T, {
    const detail::RowTiling t = detail::row_tiling(s.C, detail::vec_width(s.C, sizeof(T), {x, y}), kThreads);
    detail::dispatch_vec<T>(t.V, [&](auto v) {
      avgpool_forward_kernel<T, decltype(v)::value><<<rows_grid(rows, t), dim3(t.tx, t.ty), 0, cs>>>(
          s, static_cast<const T*>(x), static_cast<T*>(y));
    });
  });
  HR_CUDA_LAUNCH_CHECK();
}

// dy [N,OH,OW,C] -> dx [N,H,W,C]
void avgpool2d_backward(DT dt, const PoolShape& s, const void* dy, void* dx, Stream st) {
  const int64_t rows = s.N * s.H * s.W;
  if (rows <= 0 || s.C <= 0) return;
  const cudaStream_t cs = detail::stream_of(st);
  HR_DISPATCH_DT(dt, T, {
    const detail::RowTiling t = detail::row_tiling(s.C, detail::vec_width(s.C, sizeof(T), {dy, dx}), kThreads);
    detail::dispatch_vec<T>(t.V, [&](auto v) {
      avgpool_backward_kernel<T, decltype(v)::value><<<rows_grid(rows, t), dim3(t.tx, t.ty), 0, cs>>>(
          s, static_cast<const T*>(dy), static_cast<T*>(dx));
    });
  });
  HR_CUDA_LAUNCH_CHECK();
}

// x [N,HW,C] -> y [N,C]
void global_avgpool_forward(DT dt, int64_t N, int64_t C, int64_t HW, const void* x, void* y,
                            Stream st) {
  if (N <= 0 || C <= 0) return;
  detail::column_sum(dt, N, HW, C, x, HW > 0 ? float(1.0 / double(HW)) : 0.f, false, y, st);
}

// dy [N,C] -> dx [N,HW,C]
void global_avgpool_backward(DT dt, int64_t N, int64_t C, int64_t HW, const void* dy, void* dx,
                             Stream st) {
  if (N <= 0 || C <= 0 || HW <= 0) return;
  const cudaStream_t cs = detail::stream_of(st);
  HR_DISPATCH_DT(dt, T, {
    const detail::RowTiling t = detail::row_tiling(C, detail::vec_width(C, sizeof(T), {dy, dx}), kThreads);
    detail::dispatch_vec<T>(t.V, [&](auto v) {
      global_avgpool_backward_kernel<T, decltype(v)::value>
          <<<rows_grid(N * HW, t), dim3(t.tx, t.ty), 0, cs>>>(N, C, HW, static_cast<const T*>(dy),
                                                             static_cast<T*>(dx));
    });
  });
  HR_CUDA_LAUNCH_CHECK();
}

}  // namespace hr::cuda
