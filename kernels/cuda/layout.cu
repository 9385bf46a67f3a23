// CUDA layout transposes NCHW <-> NHWC (also [K,C,R,S] <-> [K,R,S,C] weights): a batched
// matrix transpose through 32x32 shared-memory tiles, both global reads and writes coalesced.
// Works on raw 2- or 4-byte elements, so it is dtype-agnostic.
#include <algorithm>

#include "kernels/cuda/check.h"

namespace hr::cuda {
namespace {

// in [B, R, Cc] -> out [B, Cc, R]; blockIdx.x enumerates 32x32 tiles, blockIdx.y batches.
template <class E>
__global__ void transpose_kernel(int64_t B, int64_t R, int64_t Cc, int64_t tiles_c,
                                 const E* __restrict__ in, E* __restrict__ out) {
  __shared__ E tile[32][33];
  const int64_t r0 = int64_t(blockIdx.x) / tiles_c * 32;
  const int64_t c0 = int64_t(blockIdx.x) % tiles_c * 32;
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    const E* ib = in + b * R * Cc;
    E* ob = out + b * R * Cc;
    for (int j = ty; j < 32; j += 8) {
      const int64_t r = r0 + j, c = c0 + tx;
      if (r < R && c < Cc) tile[j][tx] = ib[r * Cc + c];
    }
    __syncthreads();
    for (int j = ty; j < 32; j += 8) {
      const int64_t c = c0 + j, r = r0 + tx;
      if (c < Cc && r < R) ob[c * R + r] = tile[tx][j];
    }
    __syncthreads();
  }
}

void transpose(DT dt, int64_t B, int64_t R, int64_t Cc, const void* x, void* y, Stream st) {
  if (B <= 0 || R <= 0 || Cc <= 0) return;
  const int64_t tiles_r = (R + 31) / 32, tiles_c = (Cc + 31) / 32;
  HR_CHECK(tiles_r * tiles_c < (int64_t(1) << 31), "cuda transpose: ", R, " x ", Cc,
           " is too large");
  const dim3 grid(unsigned(tiles_r * tiles_c), unsigned(std::min<int64_t>(B, 65535))),
      block(32, 8);
  const cudaStream_t cs = detail::stream_of(st);
  if (dt == DT::f32)
    transpose_kernel<uint32_t><<<grid, block, 0, cs>>>(B, R, Cc, tiles_c,
                                                       static_cast<const uint32_t*>(x),
                                                       static_cast<uint32_t*>(y));
  else
    transpose_kernel<uint16_t><<<grid, block, 0, cs>>>(B, R, Cc, tiles_c,
                                                       static_cast<const uint16_t*>(x),
                                                       static_cast<uint16_t*>(y));
  HR_CUDA_LAUNCH_CHECK();
}

}  // namespace

// x [N,C,HW] -> y [N,HW,C]
void nchw_to_nhwc(DT dt, int64_t N, int64_t C, int64_t HW, const void* x, void* y, Stream s) {
  transpose(dt, N, C, HW, x, y, s);
}

// x [N,HW,C] -> y [N,C,HW]
void nhwc_to_nchw(DT dt, int64_t N, int64_t C, int64_t HW, const void* x, void* y, Stream s) {
  transpose(dt, N, HW, C, x, y, s);
}

}  // namespace hr::cuda
