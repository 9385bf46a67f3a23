// Batch-norm kernels (kernels/cuda/fused_bn.cu) against device-to-device copy bandwidth at HRNet
// shapes. Effective GB/s counts the bytes a kernel must move at minimum (forward: read x (+
// residual), write y; backward: read x, dy (+ y for the ReLU mask), write dx (+ dresidual));
// the copy moves 2 * bytes(x).
// Each pass and the copy are timed the same two ways, as device time only: a spin kernel
// holds the stream while the host queues the reps, so host launch overhead is hidden (it is
// reported separately as "enqueue", the host time per call):
//   hot  the same buffers every rep (a tensor of a few MB stays in the 50 MB L2);
//   hbm  the reps rotate over buffer sets of 200 MB or more in all, so every rep reads its
//        inputs from HBM (nothing of them is left in L2 from earlier reps).
// The training passes are timed on each of their paths (forced with the test hook
// batchnorm_test_config): "full" the single cooperative kernel on a full wave of blocks,
// "quarter" on a quarter of it, "multi" the three-launch path; '*' marks the fastest in hbm
// mode, which is what the per-shape choice of the kernels (pick_path) should find.
// Run: bench_cuda_bn   (one line per shape, dtype, pass and path)
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/fused.h"

namespace cu = hr::cuda;

// Spins until `ns` of global time have passed.
__global__ void spin_kernel(unsigned long long ns) {
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < ns);
}

struct Timing {
  double us = 0;          // device time per call
  double enqueue_us = 0;  // host time per call
};

// f(rep) for reps calls, queued behind a spin kernel; device time from events.
template <class F>
static Timing time_reps(F&& f, int reps, cudaStream_t s) {
  for (int i = 0; i < 3; ++i) f(i);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  spin_kernel<<<1, 1, 0, s>>>(4000000ull);  // 4 ms: longer than queueing the reps
  cudaEventRecord(a, s);
  const auto h0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) f(i);
  const auto h1 = std::chrono::steady_clock::now();
  cudaEventRecord(b, s);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  Timing t;
  t.us = 1e3 * ms / reps;
  t.enqueue_us = std::chrono::duration<double, std::micro>(h1 - h0).count() / reps;
  return t;
}

struct Set {
  void *x, *r, *y, *dy, *dx, *dr;
};

int main() {
  if (!cu::available()) {
    std::printf("no CUDA device\n");
    return 0;
  }
  struct Shape {
    int64_t N, C, H, W;
  };
  // W32 pose at 256x192, batch 32: branch 0 (C=32 at 64x48), layer1 (C=256 at 64x48),
  // branch 1..3; W18 branch 0 (C=18); then batch 128 (the whole-model table's): branches 0..3.
  const Shape shapes[] = {{32, 32, 64, 48},  {32, 256, 64, 48}, {32, 64, 32, 24},
                          {32, 128, 16, 12}, {32, 256, 8, 6},   {32, 18, 64, 48},
                          {128, 32, 64, 48}, {128, 64, 32, 24}, {128, 128, 16, 12},
                          {128, 256, 8, 6}};
  const cu::Stream st = cu::default_stream();
  const cudaStream_t cs = static_cast<cudaStream_t>(st);
  const int reps = 30;
  std::printf("%-4s %-24s %-44s | %9s %7s %6s | %9s %7s %6s | %8s\n", "dt", "shape", "pass",
              "hot us", "GB/s", "%copy", "hbm us", "GB/s", "%copy", "enqueue");
  for (cu::DT dt : {cu::DT::bf16, cu::DT::f32}) {
    const size_t es = dt == cu::DT::f32 ? 4 : 2;
    for (const Shape& s : shapes) {
      const int64_t M = s.N * s.H * s.W, C = s.C;
      const size_t bytes = size_t(M * C) * es;
      const size_t set_bytes = 6 * bytes;
      const int nsets = int(std::max<size_t>(1, (size_t(200) << 20) / set_bytes + 1));
      std::vector<Set> sets(nsets);
      for (Set& b : sets) {
        for (void** q : {&b.x, &b.r, &b.y, &b.dy, &b.dx, &b.dr}) *q = cu::alloc(bytes, st);
        cu::fill(dt, M * C, 0.5f, b.x, st);
        cu::fill(dt, M * C, 0.25f, b.r, st);
        cu::fill(dt, M * C, 1.f, b.dy, st);
        cu::fill(dt, M * C, 0.75f, b.y, st);
      }
      float* p = static_cast<float*>(cu::alloc(sizeof(float) * 8 * C, st));
      cu::fill(cu::DT::f32, 8 * C, 1.f, p, st);
      float *gamma = p, *beta = p + C, *rm = p + 2 * C, *rv = p + 3 * C, *sm = p + 4 * C,
            *si = p + 5 * C, *dg = p + 6 * C, *db = p + 7 * C;
      // both modes of one pass; g(set) runs it on a buffer set
      auto both = [&](auto&& g) {
        const Timing hot = time_reps([&](int) { g(sets[0]); }, reps, cs);
        const Timing hbm = time_reps([&](int i) { g(sets[size_t(i) % sets.size()]); }, reps, cs);
        return std::make_pair(hot, hbm);
      };
      const auto copy = both([&](const Set& b) { cu::memcpy_d2d(b.y, b.x, bytes, st); });
      const double copy_hot = 2.0 * bytes / copy.first.us / 1e3;
      const double copy_hbm = 2.0 * bytes / copy.second.us / 1e3;
      char shape[64];
      std::snprintf(shape, sizeof shape, "N=%lld C=%lld %lldx%lld", (long long)s.N,
                    (long long)C, (long long)s.H, (long long)s.W);
      const char* dts = dt == cu::DT::f32 ? "f32" : "bf16";
      std::printf("%-4s %-24s %-44s | %9.1f %7.0f %6s | %9.1f %7.0f %6s | %6.1fus\n", dts, shape,
                  "copy (reference)", copy.first.us, copy_hot, "", copy.second.us, copy_hbm, "",
                  copy.second.enqueue_us);
      auto print = [&](const std::string& what, double moved, const std::pair<Timing, Timing>& t) {
        const double hot = moved / t.first.us / 1e3, hbm = moved / t.second.us / 1e3;
        std::printf("%-4s %-24s %-44s | %9.1f %7.0f %5.1f%% | %9.1f %7.0f %5.1f%% | %6.1fus\n",
                    dts, shape, what.c_str(), t.first.us, hot, 100.0 * hot / copy_hot,
                    t.second.us, hbm, 100.0 * hbm / copy_hbm, t.second.enqueue_us);
      };
      // a training pass on each path (the fastest in hbm mode marked), then the path back to
      // the per-shape choice
      auto report = [&](const char* what, double moved, auto&& g) {
        const char* names[3] = {"full", "quarter", "multi"};
        std::pair<Timing, Timing> t[3];
        int best = 0;
        for (int p = 0; p < 3; ++p) {
          cu::batchnorm_test_config(-1, -1, p);
          t[p] = both(g);
          if (t[p].second.us < t[best].second.us) best = p;
        }
        cu::batchnorm_test_config(-1, -1, -1);
        for (int p = 0; p < 3; ++p)
          print(std::string(what) + " [" + names[p] + "]" + (p == best ? " *" : ""), moved, t[p]);
      };
      report("bn train forward", 2.0 * bytes, [&](const Set& b) {
        cu::batchnorm_train_forward(dt, M, C, b.x, gamma, beta, 1e-5f, 0.1f, rm, rv, b.y, sm, si,
                                    st);
      });
      report("bn+residual+relu train forward", 3.0 * bytes, [&](const Set& b) {
        cu::batchnorm_act_train_forward(dt, M, C, b.x, gamma, beta, 1e-5f, 0.1f, rm, rv, b.r, true,
                                        b.y, sm, si, st);
      });
      report("bn train backward", 3.0 * bytes, [&](const Set& b) {
        cu::batchnorm_train_backward(dt, M, C, b.x, b.dy, gamma, sm, si, b.dx, dg, db, st);
      });
      report("bn+relu backward (+dresidual)", 5.0 * bytes, [&](const Set& b) {
        cu::batchnorm_act_train_backward(dt, M, C, b.x, b.y, b.dy, gamma, sm, si, true, b.dx, b.dr,
                                         dg, db, st);
      });
      print("bn+residual+relu infer forward", 3.0 * bytes, both([&](const Set& b) {
        cu::batchnorm_act_infer_forward(dt, M, C, b.x, gamma, beta, rm, rv, 1e-5f, b.r, true, b.y,
                                        st);
      }));
      cu::synchronize(st);
      for (Set& b : sets)
        for (void* q : {b.x, b.r, b.y, b.dy, b.dx, b.dr}) cu::free(q, st);
      cu::free(p, st);
      cu::empty_cache();
    }
  }
  cu::synchronize(st);
  return 0;
}
