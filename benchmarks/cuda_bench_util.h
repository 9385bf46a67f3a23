// Shared pieces of the CUDA benchmarks: raw device buffers (plain cudaMalloc, outside the
// engine's allocator), f16/bf16 -> float on the host, and a timer that flushes L2 before every
// rep and reports the median of CUDA-event times.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/check.h"

namespace hr::bench {

// Flags shared by the CUDA kernel benchmarks: --batch N --dtype bf16|f16 --reps R --csv FILE,
// and --filter TEXT where the benchmark takes it (with_filter).
struct Args {
  int batch = 32;
  cuda::DT dt = cuda::DT::bf16;
  int reps = 20;
  std::string csv, filter;
};

inline Args parse_args(int argc, char** argv, const std::string& prog, bool with_filter) {
  Args a;
  const std::string usage = std::string("--batch N --dtype bf16|f16 --reps R --csv FILE") +
                            (with_filter ? " --filter TEXT" : "");
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(prog + ": " + k + " needs a value");
      return argv[++i];
    };
    if (k == "--batch") a.batch = std::atoi(val().c_str());
    else if (k == "--reps") a.reps = std::max(3, std::atoi(val().c_str()));
    else if (k == "--csv") a.csv = val();
    else if (k == "--filter" && with_filter) a.filter = val();
    else if (k == "--dtype") {
      const std::string d = val();
      if (d == "bf16") a.dt = cuda::DT::bf16;
      else if (d == "f16") a.dt = cuda::DT::f16;
      else throw Error(prog + ": --dtype must be bf16 or f16, got " + d);
    } else {
      throw Error(prog + ": unknown argument " + k + " (use " + usage + ")");
    }
  }
  if (a.batch < 1) throw Error(prog + ": --batch must be >= 1");
  return a;
}

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
