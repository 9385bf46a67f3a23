// Batch-norm kernels (kernels/cuda/fused_bn.cu) against device-to-device copy bandwidth at HRNet
// shapes. Effective GB/s counts the bytes a kernel must move at minimum (forward: read x (+
// residual), write y; backward: read x, dy (+ y for the ReLU mask), write dx (+ dresidual));
// the copy moves 2 * bytes(x). Timed with CUDA events over 20 runs after 3 warm-ups.
// Run: bench_batchnorm   (prints one line per shape, dtype and pass)
#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/fused.h"

namespace cu = hr::cuda;

template <class F>
static float time_ms(F&& f, cudaStream_t s) {
  for (int i = 0; i < 3; ++i) f();
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  cudaEventRecord(a, s);
  for (int i = 0; i < 20; ++i) f();
  cudaEventRecord(b, s);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / 20;
}

int main() {
  if (!cu::available()) {
    std::printf("no CUDA device\n");
    return 0;
  }
  struct Shape {
    int64_t N, C, H, W;
  };
  // W32 pose at 256x192, batch 32: branch 0 (C=32 at 64x48), layer1 (C=256 at 64x48),
  // branch 1..3; W18 branch 0 (C=18).
  const Shape shapes[] = {{32, 32, 64, 48}, {32, 256, 64, 48}, {32, 64, 32, 24},
                          {32, 128, 16, 12}, {32, 256, 8, 6}, {32, 18, 64, 48}};
  const cu::Stream st = cu::default_stream();
  const cudaStream_t cs = static_cast<cudaStream_t>(st);
  for (cu::DT dt : {cu::DT::f16, cu::DT::f32}) {
    const size_t es = dt == cu::DT::f32 ? 4 : 2;
    for (const Shape& s : shapes) {
      const int64_t M = s.N * s.H * s.W, C = s.C;
      const size_t bytes = size_t(M * C) * es;
      void* x = cu::alloc(bytes, st);
      void* r = cu::alloc(bytes, st);
      void* y = cu::alloc(bytes, st);
      void* dy = cu::alloc(bytes, st);
      void* dx = cu::alloc(bytes, st);
      void* dr = cu::alloc(bytes, st);
      float* p = static_cast<float*>(cu::alloc(sizeof(float) * 8 * C, st));
      cu::fill(dt, M * C, 0.5f, x, st);
      cu::fill(dt, M * C, 0.25f, r, st);
      cu::fill(dt, M * C, 1.f, dy, st);
      cu::fill(cu::DT::f32, 8 * C, 1.f, p, st);
      float *gamma = p, *beta = p + C, *rm = p + 2 * C, *rv = p + 3 * C, *sm = p + 4 * C,
            *si = p + 5 * C, *dg = p + 6 * C, *db = p + 7 * C;
      const double copy_ms = time_ms([&] { cu::memcpy_d2d(y, x, bytes, st); }, cs);
      const double copy_gbs = 2.0 * bytes / copy_ms / 1e6;
      auto report = [&](const char* what, double ms, double moved) {
        const double gbs = moved / ms / 1e6;
        std::printf("%-4s N=%-3lld C=%-4lld %3lldx%-3lld %-34s %8.1f us %7.0f GB/s  %5.1f%% of copy (%.0f GB/s)\n",
                    dt == cu::DT::f32 ? "f32" : "f16", (long long)s.N, (long long)C,
                    (long long)s.H, (long long)s.W, what, ms * 1e3, gbs, 100.0 * gbs / copy_gbs,
                    copy_gbs);
      };
      report("bn train forward", time_ms([&] {
        cu::batchnorm_train_forward(dt, M, C, x, gamma, beta, 1e-5f, 0.1f, rm, rv, y, sm, si, st);
      }, cs), 2.0 * bytes);
      report("bn+residual+relu train forward", time_ms([&] {
        cu::batchnorm_act_train_forward(dt, M, C, x, gamma, beta, 1e-5f, 0.1f, rm, rv, r, true, y,
                                        sm, si, st);
      }, cs), 3.0 * bytes);
      report("bn train backward", time_ms([&] {
        cu::batchnorm_train_backward(dt, M, C, x, dy, gamma, sm, si, dx, dg, db, st);
      }, cs), 3.0 * bytes);
      report("bn+relu backward (+dresidual)", time_ms([&] {
        cu::batchnorm_act_train_backward(dt, M, C, x, y, dy, gamma, sm, si, true, dx, dr, dg, db, st);
      }, cs), 5.0 * bytes);
      report("bn+residual+relu infer forward", time_ms([&] {
        cu::batchnorm_act_infer_forward(dt, M, C, x, gamma, beta, rm, rv, 1e-5f, r, true, y, st);
      }, cs), 3.0 * bytes);
      for (void* q : {x, r, y, dy, dx, dr, static_cast<void*>(p)}) cu::free(q, st);
    }
  }
  cu::synchronize(st);
  return 0;
}
