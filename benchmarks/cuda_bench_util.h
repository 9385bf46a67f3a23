// Shared pieces of the CUDA benchmarks: raw device buffers (plain cudaMalloc, outside the
// engine's allocator), f16/bf16 -> float on the host, and a timer that flushes L2 before every
// rep and reports the median of CUDA-event times.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/cuda/check.h"

namespace hr::bench {

struct Buf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit Buf(size_t b) : bytes(b) { CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(b, 16))); }
  ~Buf() { cudaFree(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
};

inline float to_float(uint16_t v, cuda::DT dt) {
  if (dt == cuda::DT::bf16) {
    const uint32_t bits = uint32_t(v) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  const uint32_t s = (v >> 15) & 1, e = (v >> 10) & 31, m = v & 1023;
  float f;
  if (e == 0) f = std::ldexp(float(m), -24);
  else if (e == 31) f = m ? NAN : INFINITY;
  else f = std::ldexp(float(m | 1024), int(e) - 25);
  return s ? -f : f;
}

struct Timer {
  cudaStream_t st;
  Buf flush;
  cudaEvent_t e0, e1;
  explicit Timer(cudaStream_t s) : st(s), flush(l2_flush_bytes()) {
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
  }
  ~Timer() {
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
  }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  // Four times the L2 size, at least 256 MiB: writing it evicts everything a rep left in L2.
  static size_t l2_flush_bytes() {
    int dev = 0, l2 = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
    return std::max<size_t>(size_t(l2) * 4, size_t(256) << 20);
  }
  // Median microseconds of fn() over reps (after 3 warm-up calls), L2 flushed before each rep.
  template <class F>
  double median_us(F&& fn, int reps) {
    for (int i = 0; i < 3; ++i) fn();
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
      CUDA_CHECK(cudaMemsetAsync(flush.p, i & 0xFF, flush.bytes, st));
      CUDA_CHECK(cudaEventRecord(e0, st));
      fn();
      CUDA_CHECK(cudaEventRecord(e1, st));
      CUDA_CHECK(cudaEventSynchronize(e1));
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
      t.push_back(ms * 1e3);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

}  // namespace hr::bench
