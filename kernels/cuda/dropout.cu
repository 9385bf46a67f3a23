// CUDA channel dropout (Dropout2d): the mask drawn by one block from the device-side state
// {seed, step} (kernels/dropout_hash.h, the CPU's generator), which the same block then advances,
// so a captured graph draws a fresh mask at each replay; and the per-channel scaling that
// applies a mask (forward and backward) to NHWC or [N, C, HW] tensors.
#include "kernels/cuda/check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/dropout_hash.h"

namespace hr::cuda {
namespace {

constexpr int kThreads = 256;

// One block: every thread reads the state, the block draws N*C values, then thread 0 advances
// the step once every read is done.
__global__ void dropout_mask_kernel(int64_t* state, int64_t N, int64_t C, float p, float scale,
                                    float* mask) {
  const uint64_t seed = static_cast<uint64_t>(state[0]), step = static_cast<uint64_t>(state[1]);
  for (int64_t i = threadIdx.x; i < N * C; i += kThreads)
    mask[i] = kern::dropout_keep(seed, step, uint64_t(i / C), uint64_t(i % C), p, scale);
  __syncthreads();
  if (threadIdx.x == 0) state[1] = static_cast<int64_t>(step + 1);
}

template <class T, bool kChannelsLast>
__global__ void channel_scale_kernel(int64_t total, int64_t C, int64_t HW, const T* x,
                                     const float* s, T* y) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = kChannelsLast ? (i / (HW * C)) * C + i % C : i / HW;
    y[i] = detail::from_f<T>(detail::to_f(x[i]) * s[k]);
  }
}

}  // namespace

void dropout2d_mask(int64_t* state, int64_t N, int64_t C, float p, float scale, float* mask,
                    Stream st) {
  dropout_mask_kernel<<<1, kThreads, 0, detail::stream_of(st)>>>(state, N, C, p, scale, mask);
  HR_CUDA_LAUNCH_CHECK();
}

void channel_scale(DT dt, int64_t N, int64_t C, int64_t HW, bool channels_last, const void* x,
                   const float* s, void* y, Stream st) {
  const int64_t total = N * C * HW;
  if (total <= 0) return;
  const unsigned blocks = unsigned(detail::wave_blocks(total, kThreads));
  cudaStream_t cs = detail::stream_of(st);
  HR_DISPATCH_DT(dt, T, {
    const T* px = static_cast<const T*>(x);
    T* py = static_cast<T*>(y);
    if (channels_last)
      channel_scale_kernel<T, true><<<blocks, kThreads, 0, cs>>>(total, C, HW, px, s, py);
    else
      channel_scale_kernel<T, false><<<blocks, kThreads, 0, cs>>>(total, C, HW, px, s, py);
  });
  HR_CUDA_LAUNCH_CHECK();
}

}  // namespace hr::cuda
