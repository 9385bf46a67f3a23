// CUDA softmax over dimension j of a tensor viewed in memory as [outer, L, inner] (element
// (o, j, i) at (o*L + j)*inner + i), fp32 arithmetic in any storage dtype. Three launch shapes:
// contiguous rows (inner = 1) of up to 1024 values take one warp each, longer rows one block each
// (OCR's gather: softmax over H*W), and strided lines (inner > 1) one thread each, the threads of
// a warp on neighbouring i so that loads coalesce. Max, then the sum of exponentials, then the
// write: each line is read three times and written once; the backward is y * (dy - sum(dy y)).
#include "kernels/cuda/check.h"
#include "kernels/cuda/cuda_kernels.h"

namespace hr::cuda {
namespace {

using detail::from_f;
using detail::to_f;

constexpr int kWarpRows = 8;      // rows per block of the warp kernel (256 threads)
constexpr int kBlockThreads = 256;
constexpr int64_t kLongRow = 1024;

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// Block-wide reduction of a 256-thread block (every thread gets the result).
template <bool kMax>
__device__ float block_reduce(float v, float* sh) {
  v = kMax ? warp_max(v) : warp_sum(v);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();  // sh may still be read by a previous call
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  v = lane < kBlockThreads / 32 ? sh[lane] : (kMax ? -INFINITY : 0.f);
  return kMax ? warp_max(v) : warp_sum(v);
}

// How the threads of a line combine their partial results: a warp, a block, or none (one thread).
template <int kKind>
struct Reduce;
template <>
struct Reduce<0> {
  __device__ static float max(float v, float*) { return warp_max(v); }
  __device__ static float sum(float v, float*) { return warp_sum(v); }
};
template <>
struct Reduce<1> {
  __device__ static float max(float v, float* sh) { return block_reduce<true>(v, sh); }
  __device__ static float sum(float v, float* sh) { return block_reduce<false>(v, sh); }
};
template <>
struct Reduce<2> {
  __device__ static float max(float v, float*) { return v; }
  __device__ static float sum(float v, float*) { return v; }
};

// kind 0: a warp per contiguous row; 1: a block per contiguous row; 2: a thread per strided line.
// a: x (forward) or y (backward); b: dy (backward).
template <class T, int kKind, bool kBackward>
__global__ void softmax_kernel(int64_t outer, int64_t L, int64_t inner, const T* a, const T* b,
                               T* out) {
  using R = Reduce<kKind>;
  __shared__ float sh[kBlockThreads / 32];
  int64_t line;
  int lane, width;
  if (kKind == 0) {
    line = int64_t(blockIdx.x) * kWarpRows + (threadIdx.x >> 5);
    lane = threadIdx.x & 31;
    width = 32;
    if (line >= outer) return;  // whole warps leave together
  } else if (kKind == 1) {
    line = blockIdx.x;
    lane = threadIdx.x;
    width = kBlockThreads;
  } else {
    line = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    lane = 0;
    width = 1;
    if (line >= outer * inner) return;
  }
  const int64_t off = kKind == 2 ? (line / inner) * L * inner + line % inner : line * L;
  const int64_t stride = kKind == 2 ? inner : 1;
  a += off;
  out += off;
  if (kBackward) {
    b += off;
    float s = 0;
    for (int64_t j = lane; j < L; j += width) s += to_f(b[j * stride]) * to_f(a[j * stride]);
    s = R::sum(s, sh);
    for (int64_t j = lane; j < L; j += width)
      out[j * stride] = from_f<T>(to_f(a[j * stride]) * (to_f(b[j * stride]) - s));
    return;
  }
  float m = -INFINITY;
  for (int64_t j = lane; j < L; j += width) m = fmaxf(m, to_f(a[j * stride]));
  m = R::max(m, sh);
  float s = 0;
  for (int64_t j = lane; j < L; j += width) s += expf(to_f(a[j * stride]) - m);
  const float inv = 1.f / R::sum(s, sh);
  for (int64_t j = lane; j < L; j += width)
    out[j * stride] = from_f<T>(expf(to_f(a[j * stride]) - m) * inv);
}

template <bool kBackward>
void launch(DT dt, int64_t outer, int64_t L, int64_t inner, const void* a, const void* b,
            void* out, Stream st) {
  if (outer <= 0 || L <= 0 || inner <= 0) return;
  cudaStream_t s = detail::stream_of(st);
  HR_DISPATCH_DT(dt, T, {
    const T* pa = static_cast<const T*>(a);
    const T* pb = static_cast<const T*>(b);
    T* po = static_cast<T*>(out);
    if (inner > 1) {
      const int64_t lines = outer * inner;
      softmax_kernel<T, 2, kBackward><<<unsigned((lines + 255) / 256), 256, 0, s>>>(
          outer, L, inner, pa, pb, po);
    } else if (L <= kLongRow) {
      softmax_kernel<T, 0, kBackward><<<unsigned((outer + kWarpRows - 1) / kWarpRows),
                                        32 * kWarpRows, 0, s>>>(outer, L, 1, pa, pb, po);
    } else {
      softmax_kernel<T, 1, kBackward><<<unsigned(outer), kBlockThreads, 0, s>>>(outer, L, 1, pa,
                                                                                 pb, po);
    }
  });
  HR_CUDA_LAUNCH_CHECK();
}

}  // namespace

void softmax_forward(DT dt, int64_t outer, int64_t L, int64_t inner, const void* x, void* y,
                     Stream st) {
  launch<false>(dt, outer, L, inner, x, nullptr, y, st);
}

void softmax_backward(DT dt, int64_t outer, int64_t L, int64_t inner, const void* y,
                      const void* dy, void* dx, Stream st) {
  launch<true>(dt, outer, L, inner, y, dy, dx, st);
}

}  // namespace hr::cuda
