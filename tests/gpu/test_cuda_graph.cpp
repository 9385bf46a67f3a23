// CUDA graphs (kernels/cuda/runtime.cpp: begin_capture, end_capture, launch_graph,
// destroy_graph, is_capturing) and what capturing a whole training step needs from the backend:
//  - a step on two streams (fork and join through events) captured once and replayed with new
//    input contents gives the eager results;
//  - the caching allocator: blocks freed during a capture, and blocks a capture allocated and
//    its owner freed later, are handed out again only after destroy_graph; a request that would
//    need cudaMalloc while capturing throws the warm-up error; refused and illegal calls make
//    end_capture throw and leave the streams usable;
//  - convolutions (our implicit GEMM with split-K, cuDNN) and the cooperative batch-norm
//    kernels replay, the latter also on two streams at once (eager and captured); a
//    convolution not yet timed throws the warm-up error while capturing;
//  - the device-result losses (*_dev) equal the synchronous ones and the CPU reference;
//  - adam_step_dev / sgd_step_dev equal adam_step / sgd_step and the CPU reference over 5 steps,
//    eagerly and as a graph replayed with the hyper-parameters updated before each launch.
//  - the multi-tensor steps (sgd_multi_step / adam_multi_step) over 150 tensors equal the CPU's,
//    eagerly and replayed.
// Inputs are seeded random (never zeros); outputs are poisoned with NaN before each run.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/error.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/conv_igemm.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/fused.h"
#include "gpu/cuda_test_util.h"
#include "test_util.h"

namespace cu = hr::cuda;
namespace cpu = hr::cpu;
using Catch::Matchers::Contains;
using cu::DT;
using hr::kern::ConvShape;
using hr::test::randn;
using hr::test::uniform;
using hr::test::decode;
using hr::test::dt_name;
using hr::test::encode;
using hr::test::esize;
using hr::test::quant;
using hr::test::to_nchw;
using hr::test::to_nhwc;
using hr::test::EnvGuard;
using hr::test::Vec;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();



// A device buffer of n elements of dt, from the caching allocator, freed on its stream.
class Buf {
 public:
  Buf(size_t n, DT dt, cu::Stream s) : n_(n), dt_(dt), s_(s), p_(cu::alloc(n * esize(dt), s)) {}
  ~Buf() {
    try {
      cu::free(p_, s_);
    } catch (...) {
    }
  }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;

  void* p() const { return p_; }
  float* f() const { return static_cast<float*>(p_); }
  size_t n() const { return n_; }

  void set(const Vec& v) const {
    REQUIRE(v.size() == n_);
    const auto b = encode(v, dt_);
    cu::memcpy_h2d(p_, b.data(), b.size(), s_);
  }
  // every element NaN (all-ones bits in each dtype)
  void poison() const {
    const std::vector<unsigned char> b(n_ * esize(dt_), 0xFF);
    cu::memcpy_h2d(p_, b.data(), b.size(), s_);
  }
  Vec get() const {
    std::vector<unsigned char> b(n_ * esize(dt_));
    cu::memcpy_d2h(b.data(), p_, b.size(), s_);
    return decode(b.data(), n_, dt_);
  }

 private:
  size_t n_;
  DT dt_;
  cu::Stream s_;
  void* p_;
};

// int64 labels on the device
class Labels {
 public:
  Labels(const std::vector<int64_t>& v, cu::Stream s) : n_(v.size()), s_(s) {
    p_ = cu::alloc(n_ * 8, s_);
    set(v);
  }
  ~Labels() {
    try {
      cu::free(p_, s_);
    } catch (...) {
    }
  }
  Labels(const Labels&) = delete;
  Labels& operator=(const Labels&) = delete;
  void set(const std::vector<int64_t>& v) const {
    REQUIRE(v.size() == n_);
    cu::memcpy_h2d(p_, v.data(), n_ * 8, s_);
  }
  const int64_t* p() const { return static_cast<const int64_t*>(p_); }

 private:
  size_t n_;
  cu::Stream s_;
  void* p_;
};

float download1(const float* p, cu::Stream s) {
  float v = 0.f;
  cu::memcpy_d2h(&v, p, sizeof(float), s);
  return v;
}


bool all_nan(const Vec& v) {
  for (float x : v)
    if (!std::isnan(x)) return false;
  return true;
}


// Allocates `bytes` on s, keeping every block it gets, until `want` comes back (or about two
// seconds pass); then frees them all. A block given back by destroy_graph becomes usable once
// the event recorded for it has completed.
bool comes_back(size_t bytes, cu::Stream s, void* want) {
  std::vector<void*> got;
  bool found = false;
  for (int i = 0; i < 400 && !found; ++i) {
    void* p = cu::alloc(bytes, s);
    got.push_back(p);
    found = p == want;
    if (!found && i >= 16) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (void* p : got) cu::free(p, s);
  return found;
}

}  // namespace

// ------------------------------------------------------------------------------------------
TEST_CASE("graph: a captured two-stream step replays like eager execution", "[gpu][graph]") {
  const cu::Stream s0 = cu::create_stream();
  const cu::Stream s1 = cu::create_stream();
  const cu::Event fork = cu::create_event();
  const cu::Event join = cu::create_event();
  {
    const int64_t n = (int64_t(1) << 16) + 37;  // element-wise work, with a tail
    const int64_t M = 64, I = 96, O = 40;       // a linear layer on the side stream
    const int64_t N = 2, J = 17, HW = 48;       // heatmap loss over the first N*HW*J of y
    // Inputs, parameters and outputs live outside the capture, as in the executor's arena.
    Buf x(size_t(n), DT::f32, s0), w(size_t(n), DT::f32, s0), side(size_t(n), DT::f32, s0),
        y(size_t(n), DT::f32, s0);
    Buf lx(size_t(M * I), DT::f32, s0), lw(size_t(O * I), DT::f32, s0), lb(size_t(O), DT::f32, s0),
        ly(size_t(M * O), DT::f32, s0);
    Buf hw(size_t(N * J), DT::f32, s0), loss(1, DT::f32, s0);
    const Vec wv = randn(size_t(n), 10), lwv = randn(size_t(O * I), 11, 0.2f),
              lbv = randn(size_t(O), 12), hwv = uniform(size_t(N * J), 13, 0.2f, 1.f);
    w.set(wv);
    lw.set(lwv);
    lb.set(lbv);
    hw.set(hwv);

    // y = relu(1.5 x) + 2 w + (-0.5 (x + w)); ly = lx lw^T + lb; loss = heatmap(y, w, hw).
    auto step = [&] {
      void* t0 = cu::alloc(size_t(n) * 4, s0);  // scratch from the caching allocator
      cu::scale(DT::f32, n, 1.5f, x.p(), t0, s0);
      cu::relu_forward(DT::f32, n, t0, t0, s0);
      cu::record_event(fork, s0);
      cu::wait_event(s1, fork);
      void* t1 = cu::alloc(size_t(n) * 4, s1);
      cu::add(DT::f32, n, x.p(), w.p(), t1, s1);
      cu::scale(DT::f32, n, -0.5f, t1, side.p(), s1);
      cu::free(t1, s1);
      cu::linear_forward(DT::f32, M, I, O, lx.p(), lw.p(), lb.f(), ly.p(), s1);
      cu::axpy(DT::f32, n, 2.f, w.p(), t0, s0);  // concurrently with the side stream
      cu::record_event(join, s1);
      cu::wait_event(s0, join);
      cu::add(DT::f32, n, t0, side.p(), y.p(), s0);
      cu::free(t0, s0);
      cu::heatmap_loss_forward_dev(DT::f32, N, J, HW, y.p(), w.p(), hw.f(), loss.f(), s0);
    };
    auto poison_outputs = [&] {
      side.poison();
      y.poison();
      ly.poison();
      loss.poison();
    };

    // Warm-up: one eager step (cuBLAS handle and workspace, scratch blocks in the cache).
    x.set(randn(size_t(n), 20));
    lx.set(randn(size_t(M * I), 21));
    step();
    cu::synchronize(s1);
    cu::synchronize(s0);

    poison_outputs();
    REQUIRE_FALSE(cu::is_capturing(s0));
    cu::begin_capture(s0);
    REQUIRE(cu::is_capturing(s0));
    REQUIRE_FALSE(cu::is_capturing(s1));
    step();
    REQUIRE(cu::is_capturing(s1));  // joined the capture at the fork
    const cu::GraphExec g = cu::end_capture(s0);
    REQUIRE(g != nullptr);
    REQUIRE_FALSE(cu::is_capturing(s0));
    REQUIRE_FALSE(cu::is_capturing(s1));
    // Captured, not run.
    REQUIRE(all_nan(y.get()));
    REQUIRE(all_nan(ly.get()));
    REQUIRE(std::isnan(download1(loss.f(), s0)));

    for (int rep = 0; rep < 3; ++rep) {
      INFO("replay " << rep);
      const Vec xv = randn(size_t(n), 100 + uint64_t(rep), 2.f);
      const Vec lxv = randn(size_t(M * I), 200 + uint64_t(rep));
      // eager reference
      x.set(xv);
      lx.set(lxv);
      step();
      cu::synchronize(s1);
      cu::synchronize(s0);
      const Vec y_eager = y.get(), ly_eager = ly.get();
      const float loss_eager = download1(loss.f(), s0);
      // the graph, on the same inputs copied into the captured buffers
      poison_outputs();
      x.set(xv);
      lx.set(lxv);
      cu::launch_graph(g, s0);
      cu::synchronize(s0);
      REQUIRE_CLOSE(y.get(), y_eager, 1e-6, 1e-6);
      REQUIRE_CLOSE(ly.get(), ly_eager, 1e-5, 1e-5);
      const float loss_graph = download1(loss.f(), s0);
      REQUIRE(std::fabs(loss_graph - loss_eager) <= 1e-6f * std::fabs(loss_eager));

      // The eager results themselves against the host.
      Vec y_ref(xv.size());
      for (size_t i = 0; i < y_ref.size(); ++i)
        y_ref[i] = std::max(1.5f * xv[i], 0.f) + 2.f * wv[i] - 0.5f * (xv[i] + wv[i]);
      REQUIRE_CLOSE(y_eager, y_ref, 1e-5, 1e-5);
      Vec ly_ref(size_t(M * O));
      for (int64_t m = 0; m < M; ++m)
        for (int64_t o = 0; o < O; ++o) {
          double acc = lbv[size_t(o)];
          for (int64_t i = 0; i < I; ++i)
            acc += double(lxv[size_t(m * I + i)]) * double(lwv[size_t(o * I + i)]);
          ly_ref[size_t(m * O + o)] = float(acc);
        }
      REQUIRE_CLOSE(ly_eager, ly_ref, 1e-4, 1e-4);
      double sum = 0;  // NHWC heatmaps: joint j = e % J, image e / (HW*J)
      for (int64_t e = 0; e < N * HW * J; ++e) {
        const double wt = hwv[size_t((e / (HW * J)) * J + e % J)];
        const double d = wt * y_ref[size_t(e)] - wt * wv[size_t(e)];
        sum += d * d;
      }
      const double loss_ref = 0.5 * sum / double(N * HW * J);
      REQUIRE(std::fabs(loss_eager - loss_ref) <= 1e-5 * loss_ref);
    }
    cu::destroy_graph(g);
    cu::synchronize(s0);
  }
  cu::destroy_event(fork);
  cu::destroy_event(join);
  cu::destroy_stream(s1);
  cu::destroy_stream(s0);
}

// ------------------------------------------------------------------------------------------
TEST_CASE("graph: memory freed during a capture is kept for the graph until destroy_graph",
          "[gpu][graph][alloc]") {
  const cu::Stream s = cu::create_stream();
  const cu::Stream s2 = cu::create_stream();
  const cu::Event fork = cu::create_event();
  const cu::Event join = cu::create_event();
  // Size classes (512 KiB apart at these sizes) that nothing else in this program uses.
  const size_t kA = (size_t(5) << 20) + 3 * 4096 + 12;  // scratch freed during the capture
  const size_t kB = (size_t(6) << 20) + 5 * 4096 + 20;  // allocated by the capture, freed later
  const size_t kC = (size_t(7) << 20) + 7 * 4096 + 28;  // freed on s, then needed on s2
  {
    Buf out(5, DT::f32, s);
    // Warm-up: one cached block of each class.
    void* wa = cu::alloc(kA, s);
    void* wb = cu::alloc(kB, s);
    void* wc = cu::alloc(kC, s);
    cu::free(wa, s);
    cu::free(wb, s);
    cu::free(wc, s);
    cu::synchronize(s);
    const size_t reserved = cu::reserved_bytes();

    cu::begin_capture(s);
    void* a = cu::alloc(kA, s);
    REQUIRE(a == wa);  // an idle cached block serves the capture
    cu::fill(DT::f32, int64_t(kA / 4), 1.f, a, s);
    cu::memcpy_d2d(out.f() + 0, static_cast<float*>(a) + kA / 4 - 1, 4, s);
    cu::free(a, s);
    void* a2 = cu::alloc(kA, s);
    REQUIRE(a2 == a);  // later work on the same stream reuses it (stream order)
    cu::fill(DT::f32, int64_t(kA / 4), 2.f, a2, s);
    cu::memcpy_d2d(out.f() + 1, a2, 4, s);
    cu::free(a2, s);
    void* b = cu::alloc(kB, s);
    REQUIRE(b == wb);
    cu::fill(DT::f32, int64_t(kB / 4), 3.f, b, s);
    cu::memcpy_d2d(out.f() + 2, static_cast<float*>(b) + kB / 8, 4, s);
    void* c = cu::alloc(kC, s);
    REQUIRE(c == wc);
    cu::fill(DT::f32, int64_t(kC / 4), 4.f, c, s);
    cu::memcpy_d2d(out.f() + 3, c, 4, s);
    cu::free(c, s);
    cu::record_event(fork, s);
    cu::wait_event(s2, fork);
    void* c2 = cu::alloc(kC, s2);
    REQUIRE(c2 == c);  // freed on s earlier in the capture: s2 waits for that point
    cu::fill(DT::f32, int64_t(kC / 4), 5.f, c2, s2);
    cu::memcpy_d2d(out.f() + 4, static_cast<float*>(c2) + kC / 4 - 1, 4, s2);
    cu::free(c2, s2);
    cu::record_event(join, s2);
    cu::wait_event(s, join);
    const cu::GraphExec g = cu::end_capture(s);
    REQUIRE(cu::reserved_bytes() == reserved);  // no cudaMalloc while capturing

    // The graph's blocks are not handed out while it exists, on any stream.
    cu::free(b, s);  // allocated by the capture: kept for the graph too
    std::vector<void*> held;
    for (int i = 0; i < 3; ++i) {
      held.push_back(cu::alloc(kA, s));
      held.push_back(cu::alloc(kA, s2));
      held.push_back(cu::alloc(kB, s));
      held.push_back(cu::alloc(kC, s));
      held.push_back(cu::alloc(kC, s2));
    }
    for (void* p : held) {
      REQUIRE(p != a);
      REQUIRE(p != b);
      REQUIRE(p != c);
    }
    for (void* p : held) cu::free(p, s);
    held.clear();

    for (int rep = 0; rep < 2; ++rep) {
      INFO("launch " << rep);
      out.poison();
      cu::launch_graph(g, s);
      // Eager work that takes blocks of the same classes while the graph runs.
      void* e1 = cu::alloc(kA, s2);
      void* e2 = cu::alloc(kC, s2);
      REQUIRE(e1 != a);
      REQUIRE(e2 != c);
      cu::fill(DT::f32, int64_t(kA / 4), -1.f, e1, s2);
      cu::fill(DT::f32, int64_t(kC / 4), -1.f, e2, s2);
      cu::free(e1, s2);
      cu::free(e2, s2);
      cu::synchronize(s2);
      cu::synchronize(s);
      REQUIRE(out.get() == Vec{1.f, 2.f, 3.f, 4.f, 5.f});
    }

    cu::destroy_graph(g);
    // Given back, ordered after the last launch: each block comes back to a request.
    REQUIRE(comes_back(kA, s, a));
    REQUIRE(comes_back(kB, s, b));
    REQUIRE(comes_back(kC, s2, c));
    cu::synchronize(s2);
    cu::synchronize(s);
  }
  cu::destroy_event(fork);
  cu::destroy_event(join);
  cu::destroy_stream(s2);
  cu::destroy_stream(s);
}

// ------------------------------------------------------------------------------------------
TEST_CASE(
    "graph: refused and illegal calls while capturing make end_capture throw; the streams "
    "stay usable",
    "[gpu][graph][alloc][provokes-errors]") {
  const cu::Stream s = cu::create_stream();
  const cu::Stream s2 = cu::create_stream();
  const cu::Event fork = cu::create_event();
  {
    Buf buf(1024, DT::f32, s), buf2(1024, DT::f32, s2);
    const Vec init = randn(1024, 30);
    buf.set(init);

    SECTION("an allocation the cache cannot serve throws the warm-up error") {
      const size_t kNew = (size_t(13) << 20) + 12345;  // a size class never used before
      cu::begin_capture(s);
      cu::fill(DT::f32, 1024, 1.f, buf.p(), s);  // captured, never run
      REQUIRE_THROWS_WITH(cu::alloc(kNew, s),
                          Contains("cuda::alloc: a new allocation of " + std::to_string(kNew) +
                                   " bytes during graph capture; run the step once before "
                                   "capturing"));
      REQUIRE(cu::is_capturing(s));  // the capture itself is still intact
      REQUIRE_THROWS_WITH(cu::end_capture(s), Contains("end_capture") &&
                                                  Contains("run the step once before capturing"));
      REQUIRE_FALSE(cu::is_capturing(s));
      REQUIRE(buf.get() == init);
      cu::fill(DT::f32, 1024, 3.f, buf.p(), s);
      REQUIRE(buf.get() == Vec(1024, 3.f));

      // After one eager allocation of that size (the warm-up), the capture succeeds.
      void* warm = cu::alloc(kNew, s);
      cu::free(warm, s);
      cu::begin_capture(s);
      void* p = cu::alloc(kNew, s);
      REQUIRE(p == warm);
      cu::fill(DT::f32, int64_t(kNew / 4), 2.f, p, s);
      cu::memcpy_d2d(buf.p(), p, 4096, s);
      cu::free(p, s);
      const cu::GraphExec g = cu::end_capture(s);
      REQUIRE(buf.get() == Vec(1024, 3.f));
      cu::launch_graph(g, s);
      REQUIRE(buf.get() == Vec(1024, 2.f));
      cu::destroy_graph(g);
    }

    SECTION("synchronous calls are refused before they reach CUDA") {
      cu::begin_capture(s);
      cu::fill(DT::f32, 1024, 1.f, buf.p(), s);
      REQUIRE_THROWS_WITH(cu::synchronize(s),
                          Contains("cuda::synchronize") && Contains("captured into a CUDA graph"));
      Vec h(1024);
      REQUIRE_THROWS_WITH(cu::memcpy_d2h(h.data(), buf.p(), 4096, s), Contains("cuda::memcpy_d2h"));
      REQUIRE_THROWS_WITH(cu::memcpy_h2d(buf.p(), h.data(), 4096, s), Contains("cuda::memcpy_h2d"));
      REQUIRE(cu::is_capturing(s));
      // The first refusal is the reason given.
      REQUIRE_THROWS_WITH(cu::end_capture(s),
                          Contains("end_capture") && Contains("cuda::synchronize"));
      REQUIRE_FALSE(cu::is_capturing(s));
      REQUIRE(buf.get() == init);
    }

    SECTION("a fork not joined back fails the capture; both streams are usable") {
      cu::begin_capture(s);
      cu::fill(DT::f32, 1024, 1.f, buf.p(), s);
      cu::record_event(fork, s);
      cu::wait_event(s2, fork);
      cu::fill(DT::f32, 1024, 9.f, buf2.p(), s2);  // never joined back to s
      REQUIRE(cu::is_capturing(s2));
      REQUIRE_THROWS_WITH(cu::end_capture(s), Contains("end_capture") &&
                                                  Contains("kernels/cuda/runtime.cpp:") &&
                                                  Contains("cudaStreamEndCapture") &&
                                                  Contains("cudaErrorStreamCaptureUnjoined"));
      REQUIRE_FALSE(cu::is_capturing(s));
      REQUIRE_FALSE(cu::is_capturing(s2));
      REQUIRE(buf.get() == init);
      cu::fill(DT::f32, 1024, 4.f, buf.p(), s);
      cu::fill(DT::f32, 1024, 5.f, buf2.p(), s2);
      REQUIRE(buf.get() == Vec(1024, 4.f));
      REQUIRE(buf2.get() == Vec(1024, 5.f));
    }

    SECTION("misuse of the capture API is reported") {
      REQUIRE_THROWS_WITH(cu::end_capture(s), Contains("no capture is in progress"));
      cu::begin_capture(s);
      REQUIRE_THROWS_WITH(cu::begin_capture(s2), Contains("already in progress"));
      REQUIRE_THROWS_WITH(cu::end_capture(s2), Contains("not the stream the capture began on"));
      REQUIRE_THROWS_WITH(cu::empty_cache(), Contains("not while a graph capture"));
      cu::fill(DT::f32, 1024, 6.f, buf.p(), s);
      const cu::GraphExec g = cu::end_capture(s);
      REQUIRE_THROWS_WITH(cu::launch_graph(static_cast<cu::GraphExec>(buf2.p()), s),
                          Contains("not a graph returned by end_capture"));
      cu::launch_graph(g, s);
      REQUIRE(buf.get() == Vec(1024, 6.f));
      cu::destroy_graph(g);
      REQUIRE_THROWS_WITH(cu::launch_graph(g, s), Contains("not a graph returned by end_capture"));
      cu::destroy_graph(nullptr);
    }
    cu::synchronize(s2);
    cu::synchronize(s);
  }
  cu::destroy_event(fork);
  cu::destroy_stream(s2);
  cu::destroy_stream(s);
}

// ------------------------------------------------------------------------------------------
namespace {

struct ConvData {
  Vec x, w, dy;  // NCHW / KCRS / NKPQ, rounded to dt
};

struct ConvOut {
  Vec y, dx, dw;  // NCHW / NCHW / KCRS
};

// The three passes of s on the device buffers (NHWC / KRSC), without bias.
void conv_passes(const ConvShape& s, DT dt, const Buf& x, const Buf& w, const Buf& dy, const Buf& y,
                 const Buf& dx, const Buf& dw, cu::Stream st) {
  cu::conv2d_forward(s, dt, x.p(), w.p(), nullptr, y.p(), st);
  cu::conv2d_backward_data(s, dt, dy.p(), w.p(), dx.p(), st);
  cu::conv2d_backward_weight(s, dt, x.p(), dy.p(), dw.p(), nullptr, st);
}

ConvOut conv_get(const ConvShape& s, const Buf& y, const Buf& dx, const Buf& dw) {
  return {to_nchw(y.get(), s.N, s.K, s.P * s.Q), to_nchw(dx.get(), s.N, s.C, s.H * s.W),
          to_nchw(dw.get(), s.K, s.C, s.R * s.S)};
}

ConvOut conv_cpu(const ConvShape& s, const ConvData& d) {
  ConvOut r{Vec(d.dy.size()), Vec(d.x.size()), Vec(d.w.size())};
  cpu::conv2d_forward(s, d.x.data(), d.w.data(), nullptr, r.y.data());
  cpu::conv2d_backward_data(s, d.dy.data(), d.w.data(), r.dx.data());
  cpu::conv2d_backward_weight(s, d.x.data(), d.dy.data(), r.dw.data(), nullptr);
  return r;
}

// Captures the three passes of s once (after an eager warm-up), then replays them 3 times on
// new x and dy, comparing each replay with eager execution and with the CPU.
void check_conv_replays(const ConvShape& s, DT dt, uint64_t seed, cu::Stream st) {
  INFO(dt_name(dt) << " conv N=" << s.N << " C=" << s.C << " " << s.H << "x" << s.W << " K=" << s.K
                   << " " << s.R << "x" << s.S << " stride " << s.stride_h);
  const int64_t HW = s.H * s.W, PQ = s.P * s.Q, RS = s.R * s.S;
  Buf x(size_t(s.N * s.C * HW), dt, st), w(size_t(s.K * s.C * RS), dt, st),
      dy(size_t(s.N * s.K * PQ), dt, st);
  Buf y(dy.n(), dt, st), dx(x.n(), dt, st), dw(w.n(), dt, st);
  const Vec wv = quant(randn(w.n(), seed, 0.1f), dt);
  w.set(to_nhwc(wv, s.K, s.C, RS));  // KCRS -> KRSC
  auto inputs = [&](uint64_t sd) {
    ConvData d{quant(randn(x.n(), sd), dt), wv, quant(randn(dy.n(), sd + 1), dt)};
    x.set(to_nhwc(d.x, s.N, s.C, HW));
    dy.set(to_nhwc(d.dy, s.N, s.K, PQ));
    return d;
  };
  auto poison = [&] {
    y.poison();
    dx.poison();
    dw.poison();
  };
  inputs(seed + 10);
  conv_passes(s, dt, x, w, dy, y, dx, dw, st);  // warm-up: chooses the algorithms
  cu::synchronize(st);
  poison();
  cu::begin_capture(st);
  conv_passes(s, dt, x, w, dy, y, dx, dw, st);
  const cu::GraphExec g = cu::end_capture(st);
  REQUIRE(all_nan(y.get()));
  const double sq = std::sqrt(double(s.N * PQ));
  const double atol = dt == DT::f32 ? 2e-4 : 5e-2, rtol = dt == DT::f32 ? 1e-4 : 2e-2;
  const double wtol = dt == DT::f32 ? 2e-5 * sq : 2e-3 * sq;
  for (int rep = 0; rep < 3; ++rep) {
    INFO("replay " << rep);
    const ConvData d = inputs(seed + 100 + 10 * uint64_t(rep));
    conv_passes(s, dt, x, w, dy, y, dx, dw, st);
    const ConvOut eager = conv_get(s, y, dx, dw);
    poison();
    cu::launch_graph(g, st);
    const ConvOut graph = conv_get(s, y, dx, dw);
    const ConvOut ref = conv_cpu(s, d);
    REQUIRE_CLOSE(graph.y, eager.y, 1e-5, 1e-5);
    REQUIRE_CLOSE(graph.dx, eager.dx, 1e-5, 1e-5);
    REQUIRE_CLOSE(graph.dw, eager.dw, 1e-5 * sq, 1e-5);
    REQUIRE_CLOSE(graph.y, ref.y, atol, rtol);
    REQUIRE_CLOSE(graph.dx, ref.dx, atol, rtol);
    REQUIRE_CLOSE(graph.dw, ref.dw, wtol, rtol);
  }
  cu::destroy_graph(g);
}

}  // namespace

TEST_CASE("graph: convolutions replay (implicit GEMM with split-K, cuDNN)", "[gpu][graph][conv]") {
  const cu::Stream st = cu::create_stream();
  SECTION("implicit GEMM, a shape whose plan splits K") {
    EnvGuard env("HR_CONV_BACKEND", "igemm");
    namespace ig = cu::igemm;
    const ConvShape candidates[] = {
        ConvShape::make(4, 32, 32, 32, 32, 3, 3, 1, 1, 1, 1),
        ConvShape::make(1, 256, 8, 8, 256, 3, 3, 1, 1, 1, 1),
        ConvShape::make(2, 128, 16, 16, 64, 3, 3, 2, 2, 1, 1),
        ConvShape::make(8, 64, 16, 16, 64, 3, 3, 1, 1, 1, 1),
        ConvShape::make(2, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1),
    };
    // In-kernel split-K (2..16 splits, arrival counters) in at least one pass.
    auto in_kernel = [](int splits) { return splits > 1 && splits <= 16; };
    int found = 0;
    for (const ConvShape& s : candidates) {
      if (found == 2) break;
      const bool split = in_kernel(ig::planned_splits(s, DT::f16, ig::Pass::fwd)) ||
                         in_kernel(ig::planned_splits(s, DT::f16, ig::Pass::dgrad)) ||
                         in_kernel(ig::planned_splits(s, DT::f16, ig::Pass::wgrad));
      if (!split) continue;
      check_conv_replays(s, found == 0 ? DT::f16 : DT::bf16, 5000 + 100 * uint64_t(found), st);
      ++found;
    }
    REQUIRE(found >= 1);
  }
  SECTION("automatic choice: timed and cuDNN-searched eagerly, replayed from the graph") {
    EnvGuard env("HR_CONV_BACKEND", "auto");
    check_conv_replays(ConvShape::make(2, 24, 12, 10, 40, 3, 3, 1, 1, 1, 1), DT::f32, 6000, st);
    check_conv_replays(ConvShape::make(2, 32, 9, 11, 48, 3, 3, 2, 2, 1, 1), DT::f16, 6100, st);
    check_conv_replays(ConvShape::make(2, 48, 7, 7, 16, 1, 1, 1, 1, 0, 0), DT::bf16, 6200, st);
  }
  cu::synchronize(st);
  cu::destroy_stream(st);
}

TEST_CASE(
    "graph: a convolution whose algorithm is not chosen yet throws the warm-up error "
    "while capturing",
    "[gpu][graph][conv][provokes-errors]") {
  const cu::Stream st = cu::create_stream();
  struct Case {
    const char* backend;
    DT dt;
    ConvShape s;
  };
  // auto + f16: the igemm / cuDNN timing; cudnn forced + f32: cuDNN's algorithm search.
  const Case cases[] = {
      {"auto", DT::f16, ConvShape::make(1, 40, 10, 6, 56, 3, 3, 1, 1, 1, 1)},
      {"cudnn", DT::f32, ConvShape::make(1, 20, 9, 5, 28, 3, 3, 1, 1, 1, 1)},
  };
  for (const Case& c : cases) {
    EnvGuard env("HR_CONV_BACKEND", c.backend);
    const ConvShape& s = c.s;
    INFO(c.backend << " " << dt_name(c.dt));
    Buf x(size_t(s.N * s.C * s.H * s.W), c.dt, st), w(size_t(s.K * s.C * s.R * s.S), c.dt, st);
    Buf y(size_t(s.N * s.K * s.P * s.Q), c.dt, st);
    x.set(randn(x.n(), 7000));
    w.set(randn(w.n(), 7001, 0.1f));
    cu::begin_capture(st);
    REQUIRE_THROWS_WITH(cu::conv2d_forward(s, c.dt, x.p(), w.p(), nullptr, y.p(), st),
                        Contains("conv2d_forward") &&
                            Contains("first seen during CUDA graph capture") &&
                            Contains("run the step once before capturing"));
    REQUIRE_THROWS_WITH(cu::end_capture(st), Contains("first seen during CUDA graph capture"));
    REQUIRE_FALSE(cu::is_capturing(st));
    // Warmed up eagerly, the same call captures and replays.
    cu::conv2d_forward(s, c.dt, x.p(), w.p(), nullptr, y.p(), st);
    const Vec eager = y.get();
    REQUIRE_FALSE(all_nan(eager));
    y.poison();
    cu::begin_capture(st);
    cu::conv2d_forward(s, c.dt, x.p(), w.p(), nullptr, y.p(), st);
    const cu::GraphExec g = cu::end_capture(st);
    cu::launch_graph(g, st);
    REQUIRE_CLOSE(y.get(), eager, 1e-5, 1e-5);
    cu::destroy_graph(g);
  }
  cu::synchronize(st);
  cu::destroy_stream(st);
}

// ------------------------------------------------------------------------------------------
TEST_CASE("graph: training batch norm (cooperative kernels) replays like eager execution",
          "[gpu][graph][bn]") {
  const cu::Stream st = cu::create_stream();
  for (DT dt : {DT::f32, DT::bf16}) {
    for (int64_t M : {int64_t(4096), int64_t(2 * 96 * 72)}) {
      const int64_t C = 64;
      INFO(dt_name(dt) << " M=" << M << " C=" << C);
      Buf x(size_t(M * C), dt, st), dy(size_t(M * C), dt, st), y(size_t(M * C), dt, st),
          dx(size_t(M * C), dt, st);
      Buf gamma(size_t(C), DT::f32, st), beta(size_t(C), DT::f32, st),
          rmean(size_t(C), DT::f32, st), rvar(size_t(C), DT::f32, st),
          smean(size_t(C), DT::f32, st), sinv(size_t(C), DT::f32, st),
          dgamma(size_t(C), DT::f32, st), dbeta(size_t(C), DT::f32, st);
      gamma.set(uniform(size_t(C), 8000, 0.5f, 1.5f));
      beta.set(randn(size_t(C), 8001));
      const Vec rm0 = randn(size_t(C), 8002, 0.1f), rv0 = uniform(size_t(C), 8003, 0.5f, 2.f);
      auto run = [&] {
        cu::batchnorm_train_forward(dt, M, C, x.p(), gamma.f(), beta.f(), 1e-5f, 0.1f, rmean.f(),
                                    rvar.f(), y.p(), smean.f(), sinv.f(), st);
        cu::batchnorm_train_backward(dt, M, C, x.p(), dy.p(), gamma.f(), smean.f(), sinv.f(),
                                     dx.p(), dgamma.f(), dbeta.f(), st);
      };
      auto outputs = [&] {
        return std::vector<Vec>{y.get(),    smean.get(), sinv.get(),   rmean.get(),
                                rvar.get(), dx.get(),    dgamma.get(), dbeta.get()};
      };
      auto poison = [&] {
        for (const Buf* b : {&y, &smean, &sinv, &dx, &dgamma, &dbeta}) b->poison();
      };
      x.set(randn(x.n(), 8010, 2.f, 0.5f));
      dy.set(randn(dy.n(), 8011));
      rmean.set(rm0);
      rvar.set(rv0);
      run();  // warm-up
      cu::synchronize(st);
      poison();
      cu::begin_capture(st);
      run();
      const cu::GraphExec g = cu::end_capture(st);
      REQUIRE(all_nan(y.get()));
      for (int rep = 0; rep < 3; ++rep) {
        INFO("replay " << rep);
        x.set(randn(x.n(), 8100 + uint64_t(rep), 1.f + float(rep), 0.3f * float(rep)));
        dy.set(randn(dy.n(), 8200 + uint64_t(rep)));
        rmean.set(rm0);
        rvar.set(rv0);
        run();
        const std::vector<Vec> eager = outputs();
        poison();
        rmean.set(rm0);
        rvar.set(rv0);
        cu::launch_graph(g, st);
        const std::vector<Vec> graph = outputs();
        const char* names[] = {"y",           "save_mean", "save_invstd", "running_mean",
                               "running_var", "dx",        "dgamma",      "dbeta"};
        for (size_t i = 0; i < eager.size(); ++i) {
          INFO(names[i]);
          REQUIRE_CLOSE(graph[i], eager[i], 1e-5, 1e-5);
        }
        // The batch statistics changed with the inputs (replays do not reuse stale results).
        const Vec mean_now = eager[1];
        double mean_avg = 0;
        for (float v : mean_now) mean_avg += v;
        REQUIRE(std::fabs(mean_avg / double(C) - 0.3 * rep) < 0.1);
      }
      cu::destroy_graph(g);
    }
  }
  cu::synchronize(st);
  cu::destroy_stream(st);
}

// Two cooperative batch-norm launches (each a full wave of co-resident blocks with grid-wide
// syncs) on two streams at once, as HRNet's branch streams run them: eagerly and captured as
// one graph (fork and join through events). cudaLaunchCooperativeKernel guarantees that the
// blocks of one launch are co-resident; the graph keeps the launches cooperative (kernel node
// attribute cudaLaunchAttributeCooperative). A deadlock here would show as a hang (the window
// time-boxes the test); the results must equal the same launches one after the other.
TEST_CASE("graph: cooperative batch norm on two streams at once, eager and captured",
          "[gpu][graph][bn]") {
  const cu::Stream s0 = cu::create_stream(), s1 = cu::create_stream();
  const cu::Event fork = cu::create_event(), join = cu::create_event();
  struct Problem {
    int64_t M, C;
    std::unique_ptr<Buf> x, dy, y, dx, gamma, beta, rmean, rvar, smean, sinv, dgamma, dbeta;
    Problem(int64_t m, int64_t c, DT dt, cu::Stream s, uint64_t seed) : M(m), C(c) {
      const size_t n = size_t(M * C), k = size_t(C);
      for (auto* b : {&x, &dy, &y, &dx}) b->reset(new Buf(n, dt, s));
      for (auto* b : {&gamma, &beta, &rmean, &rvar, &smean, &sinv, &dgamma, &dbeta})
        b->reset(new Buf(k, DT::f32, s));
      x->set(randn(n, seed, 1.5f, 0.2f));
      dy->set(randn(n, seed + 1));
      gamma->set(uniform(k, seed + 2, 0.5f, 1.5f));
      beta->set(randn(k, seed + 3));
      rmean->set(Vec(k, 0.f));
      rvar->set(Vec(k, 1.f));
    }
    void run(DT dt, cu::Stream st) const {
      cu::batchnorm_train_forward(dt, M, C, x->p(), gamma->f(), beta->f(), 1e-5f, 0.1f,
                                  rmean->f(), rvar->f(), y->p(), smean->f(), sinv->f(), st);
      cu::batchnorm_train_backward(dt, M, C, x->p(), dy->p(), gamma->f(), smean->f(), sinv->f(),
                                   dx->p(), dgamma->f(), dbeta->f(), st);
    }
    // the outputs that do not depend on how often the running statistics were updated
    std::vector<Vec> outputs() const {
      return {y->get(), smean->get(), sinv->get(), dx->get(), dgamma->get(), dbeta->get()};
    }
    void poison() const {
      for (const auto* b : {&y, &smean, &sinv, &dx, &dgamma, &dbeta}) (*b)->poison();
    }
  };
  // the single-kernel paths, forced (the per-shape choice might take the three-launch path for
  // these maps, and then nothing cooperative would run side by side)
  struct UsePath {
    explicit UsePath(int path) { cu::batchnorm_test_config(-1, -1, path); }
    ~UsePath() { cu::batchnorm_test_config(-1, -1, -1); }
  };
  for (const int path : {0, 1}) {
    for (DT dt : {DT::f32, DT::bf16}) {
      INFO(dt_name(dt) << (path == 0 ? ", full wave" : ", quarter wave"));
      const UsePath use(path);
      const Problem a(2 * 96 * 72, 64, dt, s0, 9100), b(4 * 48 * 36, 128, dt, s0, 9200);
      cu::synchronize(s0);
      a.run(dt, s0);  // one after the other: the reference (and the warm-up of both shapes)
      b.run(dt, s0);
      const std::vector<Vec> ref_a = a.outputs(), ref_b = b.outputs();
      auto concurrent = [&] {
        cu::record_event(fork, s0);
        cu::wait_event(s1, fork);
        a.run(dt, s0);
        b.run(dt, s1);
        cu::record_event(join, s1);
        cu::wait_event(s0, join);
      };
      auto check = [&](const char* what) {
        INFO(what);
        const std::vector<Vec> ga = a.outputs(), gb = b.outputs();
        for (size_t i = 0; i < ga.size(); ++i) {
          INFO("output " << i);
          REQUIRE_CLOSE(ga[i], ref_a[i], 1e-6, 1e-6);
          REQUIRE_CLOSE(gb[i], ref_b[i], 1e-6, 1e-6);
        }
      };
      a.poison();
      b.poison();
      for (int rep = 0; rep < 20; ++rep) concurrent();
      cu::synchronize(s0);
      check("eager, two streams");
      cu::begin_capture(s0);
      concurrent();
      const cu::GraphExec g = cu::end_capture(s0);
      a.poison();
      b.poison();
      for (int rep = 0; rep < 20; ++rep) cu::launch_graph(g, s0);
      cu::synchronize(s0);
      check("captured fork/join, replayed");
      cu::destroy_graph(g);
    }
  }
  cu::synchronize(s0);
  cu::synchronize(s1);
  cu::destroy_event(fork);
  cu::destroy_event(join);
  cu::destroy_stream(s1);
  cu::destroy_stream(s0);
}

// ------------------------------------------------------------------------------------------
TEST_CASE("losses with the result on the device equal the synchronous ones and the CPU",
          "[gpu][graph][loss]") {
  const cu::Stream st = cu::default_stream();
  const int64_t ignore = 255;
  SECTION("heatmap loss") {
    for (DT dt : {DT::f32, DT::f16, DT::bf16}) {
      for (int64_t HW : {int64_t(48), int64_t(64 * 48)}) {
        const int64_t N = 2, J = 17;
        INFO("heatmap " << dt_name(dt) << " HW=" << HW);
        const Vec pred = quant(uniform(size_t(N * J * HW), 9000, -0.1f, 1.f), dt);
        const Vec gt = quant(uniform(size_t(N * J * HW), 9001, 0.f, 1.f), dt);
        const Vec weight = uniform(size_t(N * J), 9002, 0.1f, 1.f);
        const float dloss = 37.25f;
        const float ref =
            cpu::heatmap_loss_forward(N, J, HW, pred.data(), gt.data(), weight.data());
        Vec dref(pred.size());
        cpu::heatmap_loss_backward(N, J, HW, pred.data(), gt.data(), weight.data(), dloss,
                                   dref.data());
        Buf bp(pred.size(), dt, st), bg(gt.size(), dt, st), bw(weight.size(), DT::f32, st);
        Buf loss(1, DT::f32, st), dl(1, DT::f32, st), d_dev(pred.size(), dt, st),
            d_sync(pred.size(), dt, st);
        bp.set(to_nhwc(pred, N, J, HW));
        bg.set(to_nhwc(gt, N, J, HW));
        bw.set(weight);
        dl.set({dloss});
        loss.poison();
        d_dev.poison();
        d_sync.poison();
        cu::heatmap_loss_forward_dev(dt, N, J, HW, bp.p(), bg.p(), bw.f(), loss.f(), st);
        const float got = download1(loss.f(), st);
        const float sync = cu::heatmap_loss_forward(dt, N, J, HW, bp.p(), bg.p(), bw.f(), st);
        REQUIRE(got == sync);
        REQUIRE(std::fabs(got - ref) <= 1e-6 * std::fabs(ref) + 1e-9);
        cu::heatmap_loss_backward_dev(dt, N, J, HW, bp.p(), bg.p(), bw.f(), dl.f(), d_dev.p(), st);
        cu::heatmap_loss_backward(dt, N, J, HW, bp.p(), bg.p(), bw.f(), dloss, d_sync.p(), st);
        const Vec dd = d_dev.get();
        REQUIRE_CLOSE(dd, d_sync.get(), 0.0, 0.0);
        const double atol = dt == DT::f32 ? 1e-7 : 1e-4, rtol = dt == DT::f32 ? 1e-5 : 1e-2;
        REQUIRE_CLOSE(to_nchw(dd, N, J, HW), dref, atol * dloss, rtol);
      }
    }
  }

  SECTION("softmax cross-entropy, ignore_index included") {
    for (DT dt : {DT::f32, DT::f16, DT::bf16}) {
      for (int64_t C : {int64_t(3), int64_t(19)}) {
        for (int64_t HW : {int64_t(37), int64_t(512)}) {
          const int64_t N = 2;
          INFO("softmax_ce " << dt_name(dt) << " C=" << C << " HW=" << HW);
          const Vec logits = quant(randn(size_t(N * C * HW), 9100 + uint64_t(C), 2.f), dt);
          std::vector<int64_t> labels(size_t(N * HW));
          const Vec u = uniform(labels.size(), 9101 + uint64_t(HW), 0.f, 1.f);
          for (size_t i = 0; i < labels.size(); ++i)
            labels[i] = u[i] < 0.15f ? ignore : int64_t(u[i] * 1e4f) % C;
          const float dloss = 3.5f;
          const float ref = cpu::softmax_ce_forward(N, C, HW, logits.data(), labels.data(), ignore);
          Vec dref(logits.size());
          cpu::softmax_ce_backward(N, C, HW, logits.data(), labels.data(), ignore, dloss,
                                   dref.data());
          Buf bl(logits.size(), dt, st), loss(1, DT::f32, st), dl(1, DT::f32, st),
              d_dev(logits.size(), dt, st), d_sync(logits.size(), dt, st);
          Labels lab(labels, st);
          bl.set(to_nhwc(logits, N, C, HW));
          dl.set({dloss});
          loss.poison();
          d_dev.poison();
          d_sync.poison();
          cu::softmax_ce_forward_dev(dt, N, C, HW, bl.p(), lab.p(), ignore, loss.f(), st);
          const float got = download1(loss.f(), st);
          const float sync = cu::softmax_ce_forward(dt, N, C, HW, bl.p(), lab.p(), ignore, st);
          REQUIRE(got == sync);
          REQUIRE(std::fabs(got - ref) <= 1e-5 * std::fabs(ref) + 1e-7);
          cu::softmax_ce_backward_dev(dt, N, C, HW, bl.p(), lab.p(), ignore, dl.f(), d_dev.p(), st);
          cu::softmax_ce_backward(dt, N, C, HW, bl.p(), lab.p(), ignore, dloss, d_sync.p(), st);
          const Vec dd = d_dev.get();
          REQUIRE_CLOSE(dd, d_sync.get(), 0.0, 0.0);
          const double atol = dt == DT::f32 ? 1e-6 : 2e-3, rtol = dt == DT::f32 ? 1e-4 : 1e-2;
          REQUIRE_CLOSE(to_nchw(dd, N, C, HW), dref, atol * dloss, rtol);
        }
      }
    }
  }

  SECTION("softmax_ce: every pixel ignored gives 0; an invalid label gives NaN") {
    const int64_t N = 1, C = 5, HW = 9;
    Buf bl(size_t(N * C * HW), DT::f32, st), loss(1, DT::f32, st), dl(1, DT::f32, st),
        d(size_t(N * C * HW), DT::f32, st);
    bl.set(randn(bl.n(), 9200));
    dl.set({1.f});
    Labels lab(std::vector<int64_t>(size_t(N * HW), ignore), st);
    loss.poison();
    d.poison();
    cu::softmax_ce_forward_dev(DT::f32, N, C, HW, bl.p(), lab.p(), ignore, loss.f(), st);
    REQUIRE(download1(loss.f(), st) == 0.f);
    cu::softmax_ce_backward_dev(DT::f32, N, C, HW, bl.p(), lab.p(), ignore, dl.f(), d.p(), st);
    REQUIRE(d.get() == Vec(d.n(), 0.f));
    std::vector<int64_t> bad(size_t(N * HW), 2);
    bad[4] = 7;
    lab.set(bad);
    cu::softmax_ce_forward_dev(DT::f32, N, C, HW, bl.p(), lab.p(), ignore, loss.f(), st);
    REQUIRE(std::isnan(download1(loss.f(), st)));
    REQUIRE_THROWS_WITH(cu::softmax_ce_forward(DT::f32, N, C, HW, bl.p(), lab.p(), ignore, st),
                        Contains("softmax_ce_forward: label 7 at [n=0, pixel 4]"));
  }

  SECTION("captured: forwards and backwards replay with new inputs and a new dloss") {
    const cu::Stream s = cu::create_stream();
    {
      const DT dt = DT::bf16;
      const int64_t N = 2, J = 17, HW = 96, C = 19;
      Buf bp(size_t(N * J * HW), dt, s), bg(size_t(N * J * HW), dt, s),
          bw(size_t(N * J), DT::f32, s), bl(size_t(N * C * HW), dt, s);
      Labels lab(std::vector<int64_t>(size_t(N * HW), 0), s);
      Buf hl(1, DT::f32, s), cl(1, DT::f32, s), dl(1, DT::f32, s), dpred(bp.n(), dt, s),
          dlogits(bl.n(), dt, s);
      auto step = [&] {
        cu::heatmap_loss_forward_dev(dt, N, J, HW, bp.p(), bg.p(), bw.f(), hl.f(), s);
        cu::heatmap_loss_backward_dev(dt, N, J, HW, bp.p(), bg.p(), bw.f(), dl.f(), dpred.p(), s);
        cu::softmax_ce_forward_dev(dt, N, C, HW, bl.p(), lab.p(), ignore, cl.f(), s);
        cu::softmax_ce_backward_dev(dt, N, C, HW, bl.p(), lab.p(), ignore, dl.f(), dlogits.p(), s);
      };
      auto inputs = [&](uint64_t seed) {
        bp.set(uniform(bp.n(), seed, -0.1f, 1.f));
        bg.set(uniform(bg.n(), seed + 1, 0.f, 1.f));
        bw.set(uniform(bw.n(), seed + 2, 0.1f, 1.f));
        bl.set(randn(bl.n(), seed + 3, 2.f));
        std::vector<int64_t> labels(size_t(N * HW));
        const Vec u = uniform(labels.size(), seed + 4, 0.f, 1.f);
        for (size_t i = 0; i < labels.size(); ++i)
          labels[i] = u[i] < 0.2f ? ignore : int64_t(u[i] * 1e4f) % C;
        lab.set(labels);
        dl.set({0.5f + float(seed % 7)});
        return 0.5f + float(seed % 7);
      };
      inputs(9300);
      step();  // warm-up
      cu::synchronize(s);
      cu::begin_capture(s);
      step();
      const cu::GraphExec g = cu::end_capture(s);
      for (int rep = 0; rep < 3; ++rep) {
        INFO("replay " << rep);
        const float dloss = inputs(9400 + 10 * uint64_t(rep));
        for (const Buf* b : {&hl, &cl, &dpred, &dlogits}) b->poison();
        cu::launch_graph(g, s);
        const float h_sync = cu::heatmap_loss_forward(dt, N, J, HW, bp.p(), bg.p(), bw.f(), s);
        const float c_sync = cu::softmax_ce_forward(dt, N, C, HW, bl.p(), lab.p(), ignore, s);
        REQUIRE(download1(hl.f(), s) == h_sync);
        REQUIRE(download1(cl.f(), s) == c_sync);
        Buf ref(bp.n(), dt, s), ref2(bl.n(), dt, s);
        cu::heatmap_loss_backward(dt, N, J, HW, bp.p(), bg.p(), bw.f(), dloss, ref.p(), s);
        cu::softmax_ce_backward(dt, N, C, HW, bl.p(), lab.p(), ignore, dloss, ref2.p(), s);
        REQUIRE_CLOSE(dpred.get(), ref.get(), 0.0, 0.0);
        REQUIRE_CLOSE(dlogits.get(), ref2.get(), 0.0, 0.0);
      }
      cu::destroy_graph(g);
      cu::synchronize(s);
    }
    cu::destroy_stream(s);
  }
}

// ------------------------------------------------------------------------------------------
namespace {

constexpr int kSteps = 5;
const float kLr[kSteps] = {1e-2f, 3e-3f, 2e-2f, 5e-4f, 8e-3f};  // a schedule, not a constant

// Eager adam_step, eager adam_step_dev and a captured adam_step_dev replayed, step by step,
// against the CPU.
void check_adam(bool decoupled, cu::Stream s) {
  const int64_t n = 1003;
  const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = decoupled ? 0.05f : 1e-4f;
  INFO("adam decoupled " << decoupled);
  const Vec p0 = randn(size_t(n), 9500);
  Vec p = p0, m(size_t(n), 0.f), v(size_t(n), 0.f);                                     // CPU
  Buf ep(size_t(n), DT::f32, s), em(size_t(n), DT::f32, s), ev(size_t(n), DT::f32, s);  // sync
  Buf dp(size_t(n), DT::f32, s), dm(size_t(n), DT::f32, s), dv(size_t(n), DT::f32, s);  // dev
  Buf gp(size_t(n), DT::f32, s), gm(size_t(n), DT::f32, s), gv(size_t(n), DT::f32, s);  // graph
  Buf grad(size_t(n), DT::f32, s), hyper_dev(3, DT::f32, s), hyper_graph(3, DT::f32, s);
  for (const Buf* b : {&ep, &dp, &gp}) b->set(p0);
  for (const Buf* b : {&em, &ev, &dm, &dv, &gm, &gv}) b->set(Vec(size_t(n), 0.f));
  hyper_graph.set({kNaN, kNaN, kNaN});  // set before each launch
  cu::begin_capture(s);
  cu::adam_step_dev(n, gp.f(), grad.f(), gm.f(), gv.f(), hyper_graph.f(), b1, b2, eps, wd,
                    decoupled, s);
  const cu::GraphExec g = cu::end_capture(s);
  for (int64_t t = 1; t <= kSteps; ++t) {
    INFO("step " << t);
    const float lr = kLr[t - 1];
    const Vec gv_host = randn(size_t(n), 9500 + uint64_t(t));
    grad.set(gv_host);
    const Vec hyper = {lr, float(1.0 - std::pow(double(b1), double(t))),
                       float(1.0 - std::pow(double(b2), double(t)))};
    const cpu::OptimSpan sp{n, p.data(), gv_host.data(), m.data(), v.data(), lr, wd, false};
    cpu::adam_step(&sp, 1, b1, b2, eps, decoupled, t);
    cu::adam_step(n, ep.f(), grad.f(), em.f(), ev.f(), lr, b1, b2, eps, wd, decoupled, t, s);
    hyper_dev.set(hyper);
    cu::adam_step_dev(n, dp.f(), grad.f(), dm.f(), dv.f(), hyper_dev.f(), b1, b2, eps, wd,
                      decoupled, s);
    hyper_graph.set(hyper);
    cu::launch_graph(g, s);
    const Vec e_p = ep.get(), e_m = em.get(), e_v = ev.get();
    for (int which = 0; which < 2; ++which) {
      INFO((which == 0 ? "adam_step_dev" : "adam_step_dev in a graph"));
      const Buf& bp = which == 0 ? dp : gp;
      const Buf& bm = which == 0 ? dm : gm;
      const Buf& bv = which == 0 ? dv : gv;
      const Vec got_p = bp.get(), got_m = bm.get(), got_v = bv.get();
      REQUIRE_CLOSE(got_p, e_p, 1e-7, 1e-6);
      REQUIRE_CLOSE(got_m, e_m, 1e-8, 1e-6);
      REQUIRE_CLOSE(got_v, e_v, 1e-10, 1e-6);
      REQUIRE_CLOSE(got_p, p, 1e-6, 1e-6);
      REQUIRE_CLOSE(got_m, m, 1e-7, 1e-6);
      REQUIRE_CLOSE(got_v, v, 1e-8, 1e-6);
    }
  }
  cu::destroy_graph(g);
}

struct SgdCfg {
  float momentum, dampening, wd;
  bool nesterov;
};

void check_sgd(const SgdCfg& c, cu::Stream s) {
  const int64_t n = 1003;
  INFO("sgd momentum " << c.momentum << " dampening " << c.dampening << " nesterov " << c.nesterov);
  const bool mom = c.momentum != 0.f;
  const Vec p0 = randn(size_t(n), 9600);
  Vec p = p0, buf(size_t(n), 0.f);                           // CPU
  Buf ep(size_t(n), DT::f32, s), eb(size_t(n), DT::f32, s);  // sgd_step
  Buf dp(size_t(n), DT::f32, s), db(size_t(n), DT::f32, s);  // sgd_step_dev
  Buf gp(size_t(n), DT::f32, s), gb(size_t(n), DT::f32, s);  // sgd_step_dev in a graph
  Buf grad(size_t(n), DT::f32, s), hyper_dev(2, DT::f32, s), hyper_graph(2, DT::f32, s);
  for (const Buf* b : {&ep, &dp, &gp}) b->set(p0);
  for (const Buf* b : {&eb, &db, &gb}) b->poison();  // the first step must not read it
  hyper_graph.set({kNaN, kNaN});
  cu::begin_capture(s);
  cu::sgd_step_dev(n, gp.f(), grad.f(), mom ? gb.f() : nullptr, hyper_graph.f(), c.momentum,
                   c.dampening, c.wd, c.nesterov, s);
  const cu::GraphExec g = cu::end_capture(s);
  for (int t = 1; t <= kSteps; ++t) {
    INFO("step " << t);
    const float lr = 5.f * kLr[t - 1];
    const bool first = t == 1;
    const Vec g_host = randn(size_t(n), 9600 + uint64_t(t));
    grad.set(g_host);
    const Vec hyper = {lr, first ? 1.f : 0.f};
    const cpu::OptimSpan sp{n, p.data(), g_host.data(), mom ? buf.data() : nullptr,
                            nullptr, lr, c.wd, first};
    cpu::sgd_step(&sp, 1, c.momentum, c.dampening, c.nesterov);
    cu::sgd_step(n, ep.f(), grad.f(), mom ? eb.f() : nullptr, lr, c.momentum, c.dampening, c.wd,
                 c.nesterov, first, s);
    hyper_dev.set(hyper);
    cu::sgd_step_dev(n, dp.f(), grad.f(), mom ? db.f() : nullptr, hyper_dev.f(), c.momentum,
                     c.dampening, c.wd, c.nesterov, s);
    hyper_graph.set(hyper);
    cu::launch_graph(g, s);
    const Vec e_p = ep.get();
    for (int which = 0; which < 2; ++which) {
      INFO((which == 0 ? "sgd_step_dev" : "sgd_step_dev in a graph"));
      const Buf& bp = which == 0 ? dp : gp;
      const Buf& bb = which == 0 ? db : gb;
      const Vec got_p = bp.get();
      REQUIRE_CLOSE(got_p, e_p, 1e-6, 1e-6);
      REQUIRE_CLOSE(got_p, p, 1e-6, 1e-6);
      if (mom) {
        const Vec got_b = bb.get();
        REQUIRE_CLOSE(got_b, eb.get(), 1e-6, 1e-6);
        REQUIRE_CLOSE(got_b, buf, 1e-6, 1e-6);
      }
    }
  }
  cu::destroy_graph(g);
}

}  // namespace

TEST_CASE(
    "adam_step_dev / sgd_step_dev equal adam_step / sgd_step and the CPU, also replayed "
    "from a graph with the hyper-parameters updated",
    "[gpu][graph][optim]") {
  const cu::Stream s = cu::create_stream();
  for (bool decoupled : {false, true}) check_adam(decoupled, s);
  for (const SgdCfg& c : {SgdCfg{0.f, 0.f, 1e-4f, false}, SgdCfg{0.9f, 0.1f, 1e-4f, false},
                          SgdCfg{0.9f, 0.f, 5e-4f, true}})
    check_sgd(c, s);
  cu::synchronize(s);
  cu::destroy_stream(s);
}

// The multi-tensor kernels over many tensors: batches of 64 per launch, tensors of one element to
// several blocks' chunks, two SGD groups, per-tensor first steps (eager) or the group's flag
// (graph), each tensor at its own offset of shared buffers.
TEST_CASE(
    "sgd_multi_step / adam_multi_step: 150 tensors of 1 to 20000 elements step as the CPU, "
    "eager and replayed from a graph",
    "[gpu][graph][optim]") {
  const cu::Stream s = cu::create_stream();
  constexpr int T = 150;
  const int64_t pattern[] = {1, 7, 4095, 4096, 4097, 20000, 33, 300};
  std::vector<int64_t> off(T + 1, 0);
  for (int t = 0; t < T; ++t) off[t + 1] = off[t] + pattern[t % 8];
  const size_t total = size_t(off[T]);
  auto group = [](int t) { return t % 3 == 0 ? 1 : 0; };
  const float momentum = 0.9f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
  const float wd[2] = {5e-4f, 0.f}, lr_factor[2] = {1.f, 2.f};
  for (bool adam : {false, true}) {
    INFO((adam ? "adam" : "sgd, nesterov"));
    const Vec p0 = randn(total, 9700);
    Vec p = p0, m(total, 0.f), v(total, 0.f);                         // CPU
    Buf ep(total, DT::f32, s), em(total, DT::f32, s), ev(total, DT::f32, s);  // eager
    Buf gp(total, DT::f32, s), gm(total, DT::f32, s), gv(total, DT::f32, s);  // graph
    Buf grad(total, DT::f32, s), hyper(4, DT::f32, s);
    for (const Buf* b : {&ep, &gp}) b->set(p0);
    for (const Buf* b : {&em, &ev, &gm, &gv}) {
      if (adam) b->set(Vec(total, 0.f));
      else b->poison();  // SGD's first step must not read its buffer
    }
    // first: 1 / 0 per tensor (eager), or -1 for the group's flag in the hyper-parameters
    auto tensors = [&](const Buf& bp, const Buf& bm, const Buf& bv, int first) {
      std::vector<cu::OptimTensor> ts;
      for (int t = 0; t < T; ++t)
        ts.push_back({pattern[t % 8], bp.f() + off[t], grad.f() + off[t], bm.f() + off[t],
                      adam ? bv.f() + off[t] : nullptr, adam ? wd[0] : wd[group(t)],
                      adam ? 0 : group(t), adam ? -1 : first});
      return ts;
    };
    hyper.set({kNaN, kNaN, kNaN, kNaN});  // set before each launch
    cu::OptimHyper hd;
    hd.dev = hyper.f();
    const std::vector<cu::OptimTensor> gts = tensors(gp, gm, gv, -1);
    cu::begin_capture(s);
    if (adam) cu::adam_multi_step(gts.data(), T, hd, b1, b2, eps, false, s);
    else cu::sgd_multi_step(gts.data(), T, hd, momentum, 0.f, true, s);
    const cu::GraphExec g = cu::end_capture(s);
    for (int step = 1; step <= 3; ++step) {
      INFO("step " << step);
      const float lr = kLr[step - 1];
      const Vec g_host = randn(total, 9700 + uint64_t(step));
      grad.set(g_host);
      std::vector<cpu::OptimSpan> spans;
      for (int t = 0; t < T; ++t)
        spans.push_back({pattern[t % 8], p.data() + off[t], g_host.data() + off[t],
                         m.data() + off[t], adam ? v.data() + off[t] : nullptr,
                         adam ? lr : lr * lr_factor[group(t)], adam ? wd[0] : wd[group(t)],
                         step == 1});
      const std::vector<cu::OptimTensor> ets = tensors(ep, em, ev, step == 1 ? 1 : 0);
      if (adam) {
        cpu::adam_step(spans.data(), T, b1, b2, eps, false, step);
        cu::adam_multi_step(ets.data(), T, cu::adam_hyper(lr, b1, b2, step), b1, b2, eps, false,
                            s);
        hyper.set({lr, float(1.0 - std::pow(double(b1), double(step))),
                   float(1.0 - std::pow(double(b2), double(step))), 0.f});
      } else {
        cpu::sgd_step(spans.data(), T, momentum, 0.f, true);
        cu::OptimHyper h;
        h.v[0] = lr;
        h.v[2] = lr * lr_factor[1];
        cu::sgd_multi_step(ets.data(), T, h, momentum, 0.f, true, s);
        const float first = step == 1 ? 1.f : 0.f;
        hyper.set({lr, first, lr * lr_factor[1], first});
      }
      cu::launch_graph(g, s);
      for (int which = 0; which < 2; ++which) {
        INFO((which == 0 ? "eager" : "graph"));
        const Buf& bp = which == 0 ? ep : gp;
        const Buf& bm = which == 0 ? em : gm;
        const Buf& bv = which == 0 ? ev : gv;
        REQUIRE_CLOSE(bp.get(), p, 1e-6, 1e-6);
        REQUIRE_CLOSE(bm.get(), m, 1e-7, 1e-6);
        if (adam) REQUIRE_CLOSE(bv.get(), v, 1e-8, 1e-6);
      }
    }
    cu::destroy_graph(g);
  }
  cu::synchronize(s);
  cu::destroy_stream(s);
}
