// Pitched device-to-device copies (channel slabs of NHWC concatenation).
#include "kernels/cuda/check.h"

namespace hr::cuda {

void memcpy_2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width_bytes,
               size_t rows, Stream s) {
  if (width_bytes == 0 || rows == 0) return;
  CUDA_CHECK(cudaMemcpy2DAsync(dst, dpitch, src, spitch, width_bytes, rows,
                               cudaMemcpyDeviceToDevice, detail::stream_of(s)));
}

}  // namespace hr::cuda
