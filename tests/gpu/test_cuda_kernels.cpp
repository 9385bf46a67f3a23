// Every CUDA kernel of kernels/cuda/cuda_kernels.h and fused.h against the CPU kernels of
// kernels/cpu/cpu_kernels.h (NCHW <-> NHWC converted on the host), on seeded random inputs at
// HRNet shapes and odd ones (C = 3, 17, 33; odd H, W), in f32, f16 and bf16. The CPU sees the
// inputs already rounded to the dtype, so only the arithmetic is compared. Every output is
// poisoned with NaN before the call (an element left unwritten fails) and followed by a guard
// band that must come back untouched (a stray write past the end fails). Fused kernels are
// also compared with their unfused fallbacks. Convolutions go through the dispatcher with
// HR_CONV_BACKEND=cudnn, then once in automatic mode.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "engine/error.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/fused.h"
#include "gpu/cuda_test_util.h"
#include "test_util.h"

namespace cu = hr::cuda;
namespace cpu = hr::cpu;
using cu::DT;
using hr::kern::ConvShape;
using hr::kern::PoolShape;
using hr::kern::ResampleShape;
using hr::test::randn;
using hr::test::uniform;
using Catch::Matchers::Contains;
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

const DT kAllDt[] = {DT::f32, DT::f16, DT::bf16};

cu::Stream st() { return cu::default_stream(); }


// ---- device buffers with a guard band ----
constexpr size_t kGuard = 256;
constexpr unsigned char kGuardByte = 0x5A;

class Buf {
 public:
  Buf(size_t n, DT dt) : n_(n), dt_(dt), bytes_(n * esize(dt)) {
    p_ = cu::alloc(bytes_ + kGuard, st());
    poison();
  }
  static Buf from(const Vec& v, DT dt) {
    Buf b(v.size(), dt);
    b.set(v);
    return b;
  }
  Buf(Buf&& o) noexcept : p_(o.p_), n_(o.n_), dt_(o.dt_), bytes_(o.bytes_) { o.p_ = nullptr; }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() {
    if (p_) cu::free(p_, st());
  }

  void* p() const { return p_; }
  float* f() const { return static_cast<float*>(p_); }
  size_t n() const { return n_; }

  void set(const Vec& v) {
    REQUIRE(v.size() == n_);
    std::vector<unsigned char> h = encode(v, dt_);
    h.resize(bytes_ + kGuard, kGuardByte);
    cu::memcpy_h2d(p_, h.data(), h.size(), st());
  }
  // NaN in every element, the guard pattern after them.
  void poison() {
    std::vector<unsigned char> h(bytes_ + kGuard, kGuardByte);
    for (size_t i = 0; i < n_; ++i) {
      if (dt_ == DT::f32) {
        const uint32_t nan = 0x7FC00000u;
        std::memcpy(&h[4 * i], &nan, 4);
      } else {
        const uint16_t nan = dt_ == DT::f16 ? 0x7E00 : 0x7FC0;
        std::memcpy(&h[2 * i], &nan, 2);
      }
    }
    cu::memcpy_h2d(p_, h.data(), h.size(), st());
  }
  std::vector<unsigned char> raw() const {
    std::vector<unsigned char> h(bytes_ + kGuard);
    cu::memcpy_d2h(h.data(), p_, h.size(), st());
    size_t bad = 0;
    for (size_t i = bytes_; i < h.size(); ++i) bad += h[i] != kGuardByte;
    INFO("bytes written past the end of a " << n_ << "-element " << dt_name(dt_) << " output");
    REQUIRE(bad == 0);
    return h;
  }
  Vec get() const {
    const auto h = raw();
    return decode(h.data(), n_, dt_);
  }

 private:
  void* p_ = nullptr;
  size_t n_;
  DT dt_;
  size_t bytes_;
};

Buf F(const Vec& v) { return Buf::from(v, DT::f32); }

// int64 labels on the device
class Labels {
 public:
  explicit Labels(const std::vector<int64_t>& v) : n_(v.size()) {
    p_ = cu::alloc(n_ * 8, st());
    cu::memcpy_h2d(p_, v.data(), n_ * 8, st());
  }
  ~Labels() { cu::free(p_, st()); }
  const int64_t* p() const { return static_cast<const int64_t*>(p_); }

 private:
  void* p_;
  size_t n_;
};


struct Tol {
  double atol, rtol;
};
// f32 as given; the 16-bit dtypes are dominated by the output rounding (bf16: 2^-9 relative).
Tol tol(DT dt, Tol f32 = {1e-5, 1e-5}, Tol half = {1e-2, 1e-2}) { return dt == DT::f32 ? f32 : half; }

#define CHECK_CLOSE_T(got, ref, t) REQUIRE_CLOSE(got, ref, (t).atol, (t).rtol)

struct Shape4 {
  int64_t N, C, H, W;
};

}  // namespace

// ------------------------------------------------------------------------------------------
TEST_CASE("cuda element-wise ops vs cpu (aligned, misaligned, tails)", "[gpu][kernels]") {
  for (DT dt : kAllDt) {
    for (int64_t n : {1, 7, 4099, 100003}) {
      for (int shift : {0, 1}) {
        INFO(dt_name(dt) << " n=" << n << " misaligned by " << shift << " element(s)");
        const size_t es = esize(dt);
        const Vec a = quant(randn(size_t(n), 10 + n), dt);
        const Vec b = quant(randn(size_t(n), 20 + n), dt);
        // Inputs and outputs start `shift` elements into their buffers; element 0 of the
        // output buffer must stay NaN.
        auto with_shift = [&](const Vec& v) {
          Vec w(v.size() + shift, NAN);  // the skipped leading element is never read or written
          std::copy(v.begin(), v.end(), w.begin() + shift);
          return Buf::from(w, dt);
        };
        auto at = [&](const Buf& buf) { return static_cast<char*>(buf.p()) + shift * es; };
        auto result = [&](const Buf& out) {
          Vec v = out.get();
          if (shift) REQUIRE(std::isnan(v[0]));
          return Vec(v.begin() + shift, v.end());
        };
        const Tol t = tol(dt, {1e-6, 1e-6}, {1e-6, 4e-3});
        Buf da = with_shift(a), db = with_shift(b);
        Buf out(size_t(n + shift), dt);
        Vec ref = Vec(size_t(n));

        cu::relu_forward(dt, n, at(da), at(out), st());
        cpu::relu_forward(n, a.data(), ref.data());
        CHECK_CLOSE_T(result(out), ref, t);

        out.poison();
        cu::relu_backward(dt, n, at(da), at(db), at(out), st());
        cpu::relu_backward(n, a.data(), b.data(), ref.data());
        CHECK_CLOSE_T(result(out), ref, t);

        out.poison();
        cu::add(dt, n, at(da), at(db), at(out), st());
        cpu::add(n, a.data(), b.data(), ref.data());
        CHECK_CLOSE_T(result(out), ref, t);

        out.poison();
        cu::scale(dt, n, -0.37f, at(da), at(out), st());
        cpu::scale(n, -0.37f, a.data(), ref.data());
        CHECK_CLOSE_T(result(out), ref, t);

        out.poison();
        cu::fill(dt, n, 1.25f, at(out), st());
        cpu::fill(n, 1.25f, ref.data());
        CHECK_CLOSE_T(result(out), ref, t);

        Buf y = with_shift(b);  // y = 0.5 * a + y, in place
        cu::axpy(dt, n, 0.5f, at(da), at(y), st());
        ref = b;
        cpu::axpy(n, 0.5f, a.data(), ref.data());
        CHECK_CLOSE_T(result(y), ref, t);

        // relu in place (x == y) is allowed
        Buf inplace = with_shift(a);
        cu::relu_forward(dt, n, at(inplace), at(inplace), st());
        cpu::relu_forward(n, a.data(), ref.data());
        CHECK_CLOSE_T(result(inplace), ref, t);
      }
    }
  }
}

TEST_CASE("cuda convert vs cpu round-to-nearest-even, special values", "[gpu][kernels]") {
  Vec v = randn(4000, 3, 100.f);
  const Vec special = {0.f,     -0.f,   INFINITY, -INFINITY, 65504.f, 65519.f, 65520.f,
                       -70000.f, 1e-7f, 6e-8f,    2.9e-8f,   1e-40f,  3.4e38f, -3.3e38f,
                       1.00390625f, 1.01171875f, 0.333333343f};
  v.insert(v.begin() + 5, special.begin(), special.end());
  v.push_back(NAN);
  const int64_t n = int64_t(v.size());
  for (DT from : kAllDt) {
    for (DT to : kAllDt) {
      INFO(dt_name(from) << " -> " << dt_name(to));
      const Vec src = quant(v, from);
      Buf in = Buf::from(src, from);
      Buf out(size_t(n), to);
      cu::convert(n, from, in.p(), to, out.p(), st());
      const auto got = out.raw();
      const auto want = encode(src, to);  // the CPU conversion of the same values
      size_t bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        if (std::isnan(src[size_t(i)])) {
          bad += !std::isnan(decode(&got[size_t(i) * esize(to)], 1, to)[0]);
          continue;
        }
        bad += std::memcmp(&got[size_t(i) * esize(to)], &want[size_t(i) * esize(to)], esize(to)) != 0;
      }
      REQUIRE(bad == 0);
    }
  }
}

TEST_CASE("cuda layout transposes NCHW <-> NHWC", "[gpu][kernels]") {
  const Shape4 shapes[] = {{2, 3, 5, 7}, {2, 17, 31, 33}, {1, 64, 64, 48}, {3, 33, 1, 1}, {1, 1, 9, 1}};
  for (DT dt : {DT::f32, DT::f16}) {
    for (const Shape4& s : shapes) {
      INFO(dt_name(dt) << " N=" << s.N << " C=" << s.C << " HW=" << s.H * s.W);
      const int64_t HW = s.H * s.W;
      const Vec x = quant(randn(size_t(s.N * s.C * HW), 7), dt);
      Buf dx = Buf::from(x, dt), dy(x.size(), dt), dz(x.size(), dt);
      cu::nchw_to_nhwc(dt, s.N, s.C, HW, dx.p(), dy.p(), st());
      REQUIRE(dy.get() == to_nhwc(x, s.N, s.C, HW));
      cu::nhwc_to_nchw(dt, s.N, s.C, HW, dy.p(), dz.p(), st());
      REQUIRE(dz.get() == x);
    }
  }
}

// ------------------------------------------------------------------------------------------
namespace {

struct BnCase {
  Shape4 s;
  float mean;  // added to every x: large means must not lose precision
};

const BnCase kBnCases[] = {
    {{2, 3, 5, 7}, 0.f},    {{2, 17, 9, 11}, 0.f},  {{3, 33, 13, 5}, 0.f},
    {{2, 18, 16, 12}, 0.f}, {{8, 32, 64, 48}, 0.f}, {{2, 256, 8, 6}, 0.f},
    {{2, 17, 9, 11}, 1000.f}, {{4, 64, 16, 12}, -300.f}};

struct BnData {
  int64_t N, C, HW, M;
  Vec x, gamma, beta, rm, rv, dy;  // x, dy in NCHW
};

BnData bn_data(const BnCase& bc, DT dt, uint64_t seed) {
  BnData d;
  d.N = bc.s.N;
  d.C = bc.s.C;
  d.HW = bc.s.H * bc.s.W;
  d.M = d.N * d.HW;
  const size_t n = size_t(d.N * d.C * d.HW);
  d.x = randn(n, seed, 1.5f, bc.mean);
  for (size_t i = 0; i < n; ++i) d.x[i] += 0.2f * float((i / size_t(d.HW)) % size_t(d.C));
  d.x = quant(d.x, dt);
  d.dy = quant(randn(n, seed + 1), dt);
  d.gamma = uniform(size_t(d.C), seed + 2, 0.5f, 1.5f);
  d.beta = randn(size_t(d.C), seed + 3, 0.3f);
  d.rm = randn(size_t(d.C), seed + 4, 0.1f);
  d.rv = uniform(size_t(d.C), seed + 5, 0.5f, 1.5f);
  return d;
}

constexpr float kEps = 1e-5f, kMomentum = 0.1f;

// Paths of the training kernels (fused.h batchnorm_test_config): the single kernel with rows
// kept on chip as fits, with 1 row per thread in registers and 1 in shared memory (the rest
// read again), with nothing kept, on a quarter of the wave, the multi-kernel path, and the
// path timed fastest for the shape (the default; its first call times the others into scratch
// outputs, which must leave the caller's outputs and running statistics as one call does).
struct BnPath {
  int reg, smem, path;
  const char* name;
};
const BnPath kBnPaths[] = {{-1, -1, 0, "single kernel"},
                           {1, 1, 0, "single kernel, 1 row in registers, 1 in smem"},
                           {0, 0, 0, "single kernel, nothing kept on chip"},
                           {-1, -1, 1, "single kernel, quarter wave"},
                           {-1, -1, 2, "multi-kernel"},
                           {-1, -1, -1, "tuned per shape"}};

// Sets a path for its scope.
class UseBnPath {
 public:
  explicit UseBnPath(const BnPath& p) { cu::batchnorm_test_config(p.reg, p.smem, p.path); }
  ~UseBnPath() { cu::batchnorm_test_config(-1, -1, -1); }
};

}  // namespace

TEST_CASE("cuda batchnorm train forward: output, batch and running statistics", "[gpu][kernels][bn]") {
  for (DT dt : kAllDt) {
    for (const BnCase& bc : kBnCases) {
      const BnData d = bn_data(bc, dt, 100);
      INFO(dt_name(dt) << " N=" << d.N << " C=" << d.C << " HW=" << d.HW << " mean " << bc.mean);
      Vec y_ref(d.x.size()), sm_ref(size_t(d.C)), si_ref(size_t(d.C));
      Vec rm_ref = d.rm, rv_ref = d.rv;
      cpu::batchnorm_train_forward(d.N, d.C, d.HW, d.x.data(), d.gamma.data(), d.beta.data(), kEps,
                                   kMomentum, rm_ref.data(), rv_ref.data(), y_ref.data(),
                                   sm_ref.data(), si_ref.data());
      Buf x = Buf::from(to_nhwc(d.x, d.N, d.C, d.HW), dt);
      Buf g = F(d.gamma), b = F(d.beta);
      for (const BnPath& path : kBnPaths) {
        INFO(path.name);
        const UseBnPath use(path);
        Buf y(d.x.size(), dt), rm = F(d.rm), rv = F(d.rv);
        Buf sm(size_t(d.C), DT::f32), si(size_t(d.C), DT::f32);
        cu::batchnorm_train_forward(dt, d.M, d.C, x.p(), g.f(), b.f(), kEps, kMomentum, rm.f(),
                                    rv.f(), y.p(), sm.f(), si.f(), st());
        CHECK_CLOSE_T(to_nchw(y.get(), d.N, d.C, d.HW), y_ref, tol(dt));
        REQUIRE_CLOSE(sm.get(), sm_ref, 1e-5, 1e-6);
        REQUIRE_CLOSE(si.get(), si_ref, 1e-6, 1e-5);
        REQUIRE_CLOSE(rm.get(), rm_ref, 1e-5, 1e-6);
        REQUIRE_CLOSE(rv.get(), rv_ref, 1e-6, 1e-5);
      }
    }
  }
}

TEST_CASE("cuda batchnorm inference forward", "[gpu][kernels][bn]") {
  for (DT dt : kAllDt) {
    for (const BnCase& bc : kBnCases) {
      const BnData d = bn_data(bc, dt, 200);
      INFO(dt_name(dt) << " N=" << d.N << " C=" << d.C << " HW=" << d.HW);
      Vec rm = d.rm;
      for (float& m : rm) m += bc.mean;
      Vec y_ref(d.x.size());
      cpu::batchnorm_infer_forward(d.N, d.C, d.HW, d.x.data(), d.gamma.data(), d.beta.data(),
                                   rm.data(), d.rv.data(), kEps, y_ref.data());
      Buf x = Buf::from(to_nhwc(d.x, d.N, d.C, d.HW), dt), y(d.x.size(), dt);
      Buf g = F(d.gamma), b = F(d.beta), m = F(rm), v = F(d.rv);
      cu::batchnorm_infer_forward(dt, d.M, d.C, x.p(), g.f(), b.f(), m.f(), v.f(), kEps, y.p(), st());
      CHECK_CLOSE_T(to_nchw(y.get(), d.N, d.C, d.HW), y_ref, tol(dt));
    }
  }
}

TEST_CASE("cuda batchnorm train and inference backward", "[gpu][kernels][bn]") {
  for (DT dt : kAllDt) {
    for (const BnCase& bc : kBnCases) {
      const BnData d = bn_data(bc, dt, 300);
      INFO(dt_name(dt) << " N=" << d.N << " C=" << d.C << " HW=" << d.HW);
      Vec y_tmp(d.x.size()), sm(size_t(d.C)), si(size_t(d.C));
      cpu::batchnorm_train_forward(d.N, d.C, d.HW, d.x.data(), d.gamma.data(), d.beta.data(), kEps,
                                   kMomentum, nullptr, nullptr, y_tmp.data(), sm.data(), si.data());
      Vec dx_ref(d.x.size()), dg_ref(size_t(d.C)), db_ref(size_t(d.C));
      cpu::batchnorm_train_backward(d.N, d.C, d.HW, d.x.data(), d.dy.data(), d.gamma.data(),
                                    sm.data(), si.data(), dx_ref.data(), dg_ref.data(),
                                    db_ref.data());
      Buf x = Buf::from(to_nhwc(d.x, d.N, d.C, d.HW), dt);
      Buf dy = Buf::from(to_nhwc(d.dy, d.N, d.C, d.HW), dt), dx(d.x.size(), dt);
      Buf g = F(d.gamma), bsm = F(sm), bsi = F(si);
      Buf dg(size_t(d.C), DT::f32), db(size_t(d.C), DT::f32);
      const double sq = std::sqrt(double(d.M));
      for (const BnPath& path : kBnPaths) {
        INFO("train backward, " << path.name);
        const UseBnPath use(path);
        dx.poison();
        dg.poison();
        db.poison();
        cu::batchnorm_train_backward(dt, d.M, d.C, x.p(), dy.p(), g.f(), bsm.f(), bsi.f(), dx.p(),
                                     dg.f(), db.f(), st());
        CHECK_CLOSE_T(to_nchw(dx.get(), d.N, d.C, d.HW), dx_ref, tol(dt, {2e-5, 1e-4}));
        REQUIRE_CLOSE(dg.get(), dg_ref, 1e-5 * sq, 1e-5);
        REQUIRE_CLOSE(db.get(), db_ref, 1e-5 * sq, 1e-5);
        // dgamma/dbeta only
        dg.poison();
        db.poison();
        cu::batchnorm_train_backward(dt, d.M, d.C, x.p(), dy.p(), g.f(), bsm.f(), bsi.f(), nullptr,
                                     dg.f(), db.f(), st());
        REQUIRE_CLOSE(dg.get(), dg_ref, 1e-5 * sq, 1e-5);
        REQUIRE_CLOSE(db.get(), db_ref, 1e-5 * sq, 1e-5);
      }

      Vec rm = d.rm;
      for (float& m : rm) m += bc.mean;
      cpu::batchnorm_infer_backward(d.N, d.C, d.HW, d.x.data(), d.dy.data(), d.gamma.data(),
                                    rm.data(), d.rv.data(), kEps, dx_ref.data(), dg_ref.data(),
                                    db_ref.data());
      Buf brm = F(rm), brv = F(d.rv);
      dx.poison();
      dg.poison();
      db.poison();
      cu::batchnorm_infer_backward(dt, d.M, d.C, x.p(), dy.p(), g.f(), brm.f(), brv.f(), kEps,
                                   dx.p(), dg.f(), db.f(), st());
      {
        INFO("inference backward");
        CHECK_CLOSE_T(to_nchw(dx.get(), d.N, d.C, d.HW), dx_ref, tol(dt));
        // sum dy * (x - running_mean): x carries the large mean too
        const double xm = 1.0 + std::fabs(bc.mean) * 1e-2;
        REQUIRE_CLOSE(dg.get(), dg_ref, 1e-5 * sq * xm, 1e-5);
        REQUIRE_CLOSE(db.get(), db_ref, 1e-5 * sq, 1e-5);
      }
    }
  }
}

// The single-kernel paths' instantiations for different vector widths share a function type:
// each must still get its own occupancy, shared-memory budget and dynamic shared-memory opt-in
// (a large map after a narrow one plans rows in shared memory beyond 48 KB).
TEST_CASE("cuda batchnorm training: a large map after a narrow one (per-kernel launch setup)",
          "[gpu][kernels][bn]") {
  const BnCase seq[] = {{{2, 18, 4, 8}, 0.f}, {{32, 64, 128, 96}, 0.f}, {{2, 36, 4, 8}, 0.f},
                        {{8, 36, 128, 96}, 0.f}};
  for (DT dt : {DT::f32, DT::bf16}) {
    for (const BnCase& bc : seq) {
      const BnData d = bn_data(bc, dt, 350);
      INFO(dt_name(dt) << " N=" << d.N << " C=" << d.C << " HW=" << d.HW);
      Vec y_ref(d.x.size()), sm_ref(size_t(d.C)), si_ref(size_t(d.C));
      cpu::batchnorm_train_forward(d.N, d.C, d.HW, d.x.data(), d.gamma.data(), d.beta.data(), kEps,
                                   kMomentum, nullptr, nullptr, y_ref.data(), sm_ref.data(),
                                   si_ref.data());
      Vec dx_ref(d.x.size()), dg_ref(size_t(d.C)), db_ref(size_t(d.C));
      cpu::batchnorm_train_backward(d.N, d.C, d.HW, d.x.data(), d.dy.data(), d.gamma.data(),
                                    sm_ref.data(), si_ref.data(), dx_ref.data(), dg_ref.data(),
                                    db_ref.data());
      Buf x = Buf::from(to_nhwc(d.x, d.N, d.C, d.HW), dt), y(d.x.size(), dt);
      Buf dy = Buf::from(to_nhwc(d.dy, d.N, d.C, d.HW), dt), dx(d.x.size(), dt);
      Buf g = F(d.gamma), b = F(d.beta), sm(size_t(d.C), DT::f32), si(size_t(d.C), DT::f32);
      Buf dg(size_t(d.C), DT::f32), db(size_t(d.C), DT::f32);
      cu::batchnorm_train_forward(dt, d.M, d.C, x.p(), g.f(), b.f(), kEps, kMomentum, nullptr,
                                  nullptr, y.p(), sm.f(), si.f(), st());
      CHECK_CLOSE_T(to_nchw(y.get(), d.N, d.C, d.HW), y_ref, tol(dt));
      REQUIRE_CLOSE(sm.get(), sm_ref, 1e-5, 1e-6);
      REQUIRE_CLOSE(si.get(), si_ref, 1e-6, 1e-5);
      // the backward from the CPU's statistics, as the backward test
      Buf bsm = F(sm_ref), bsi = F(si_ref);
      cu::batchnorm_train_backward(dt, d.M, d.C, x.p(), dy.p(), g.f(), bsm.f(), bsi.f(), dx.p(),
                                   dg.f(), db.f(), st());
      const double sq = std::sqrt(double(d.M));
      CHECK_CLOSE_T(to_nchw(dx.get(), d.N, d.C, d.HW), dx_ref, tol(dt, {2e-5, 1e-4}));
      REQUIRE_CLOSE(dg.get(), dg_ref, 1e-5 * sq, 1e-5);
      REQUIRE_CLOSE(db.get(), db_ref, 1e-5 * sq, 1e-5);
    }
  }
}

TEST_CASE("fused BN + residual + ReLU vs the unfused kernels", "[gpu][kernels][bn][fused]") {
  struct Opt {
    bool residual, relu;
  };
  const Opt opts[] = {{true, true}, {false, true}, {true, false}};
  const BnCase cases[] = {kBnCases[0], kBnCases[1], kBnCases[3], kBnCases[4], kBnCases[6]};
  for (const BnPath& path : kBnPaths) {
    // fused and unfused calls are different shapes to the tuner, which may time different
    // paths fastest for them (other summation orders): compared on each forced path only
    if (path.path < 0) continue;
    for (DT dt : kAllDt) {
      for (const BnCase& bc : cases) {
        for (const Opt& o : opts) {
          const UseBnPath use(path);
          const BnData d = bn_data(bc, dt, 400);
          INFO(path.name << ": " << dt_name(dt) << " N=" << d.N << " C=" << d.C << " HW=" << d.HW
                         << " residual=" << o.residual << " relu=" << o.relu);
          const size_t n = d.x.size();
          const int64_t M = d.M, C = d.C;
          const Vec res = quant(randn(n, 401), dt);
          Buf x = Buf::from(d.x, dt), r = Buf::from(res, dt), dy = Buf::from(d.dy, dt);
          Buf g = F(d.gamma), b = F(d.beta);
          // fused
          Buf rm_f = F(d.rm), rv_f = F(d.rv), y_f(n, dt), sm_f(size_t(C), DT::f32), si_f(size_t(C), DT::f32);
          cu::batchnorm_act_train_forward(dt, M, C, x.p(), g.f(), b.f(), kEps, kMomentum, rm_f.f(),
                                          rv_f.f(), o.residual ? r.p() : nullptr, o.relu, y_f.p(),
                                          sm_f.f(), si_f.f(), st());
          // unfused: batchnorm_train_forward; add; relu_forward
          Buf rm_u = F(d.rm), rv_u = F(d.rv), y_u(n, dt), sm_u(size_t(C), DT::f32), si_u(size_t(C), DT::f32);
          cu::batchnorm_train_forward(dt, M, C, x.p(), g.f(), b.f(), kEps, kMomentum, rm_u.f(), rv_u.f(),
                                      y_u.p(), sm_u.f(), si_u.f(), st());
          if (o.residual) cu::add(dt, int64_t(n), y_u.p(), r.p(), y_u.p(), st());
          if (o.relu) cu::relu_forward(dt, int64_t(n), y_u.p(), y_u.p(), st());
          const Tol t = tol(dt, {2e-5, 1e-5}, {3e-2, 2e-2});
          CHECK_CLOSE_T(y_f.get(), y_u.get(), t);
          REQUIRE_CLOSE(sm_f.get(), sm_u.get(), 0, 0);
          REQUIRE_CLOSE(si_f.get(), si_u.get(), 0, 0);
          REQUIRE_CLOSE(rm_f.get(), rm_u.get(), 0, 0);
          REQUIRE_CLOSE(rv_f.get(), rv_u.get(), 0, 0);

          // backward: fused (with and without dresidual, with and without dx) vs
          // relu_backward -> g; batchnorm_train_backward(g)
          Buf gmask(n, dt), dx_u(n, dt), dg_u(size_t(C), DT::f32), db_u(size_t(C), DT::f32);
          const void* gsrc = dy.p();
          if (o.relu) {
            cu::relu_backward(dt, int64_t(n), y_f.p(), dy.p(), gmask.p(), st());
            gsrc = gmask.p();
          }
          cu::batchnorm_train_backward(dt, M, C, x.p(), gsrc, g.f(), sm_f.f(), si_f.f(), dx_u.p(),
                                       dg_u.f(), db_u.f(), st());
          const Vec g_ref = o.relu ? gmask.get() : d.dy;
          for (int variant = 0; variant < 3; ++variant) {
            INFO("backward variant " << variant << " (0: dx+dres, 1: dx only, 2: dres only)");
            Buf dx_f(n, dt), dres_f(n, dt), dg_f(size_t(C), DT::f32), db_f(size_t(C), DT::f32);
            void* dxp = variant == 2 ? nullptr : dx_f.p();
            void* dresp = variant == 1 ? nullptr : dres_f.p();
            cu::batchnorm_act_train_backward(dt, M, C, x.p(), o.relu ? y_f.p() : nullptr, dy.p(), g.f(),
                                             sm_f.f(), si_f.f(), o.relu, dxp, dresp, dg_f.f(),
                                             db_f.f(), st());
            if (dxp) CHECK_CLOSE_T(dx_f.get(), dx_u.get(), tol(dt, {1e-5, 1e-5}, {1e-2, 1e-2}));
            if (dresp) REQUIRE_CLOSE(dres_f.get(), g_ref, 0, 0);
            REQUIRE_CLOSE(dg_f.get(), dg_u.get(), 1e-6, 1e-6);
            REQUIRE_CLOSE(db_f.get(), db_u.get(), 1e-6, 1e-6);
          }

          // inference
          Buf yi_f(n, dt), yi_u(n, dt);
          cu::batchnorm_act_infer_forward(dt, M, C, x.p(), g.f(), b.f(), rm_f.f(), rv_f.f(), kEps,
                                          o.residual ? r.p() : nullptr, o.relu, yi_f.p(), st());
          cu::batchnorm_infer_forward(dt, M, C, x.p(), g.f(), b.f(), rm_f.f(), rv_f.f(), kEps, yi_u.p(), st());
          if (o.residual) cu::add(dt, int64_t(n), yi_u.p(), r.p(), yi_u.p(), st());
          if (o.relu) cu::relu_forward(dt, int64_t(n), yi_u.p(), yi_u.p(), st());
          CHECK_CLOSE_T(yi_f.get(), yi_u.get(), tol(dt, {1e-4, 1e-5}, {3e-2, 2e-2}));
        }
      }
    }
  }
}

// The first call of a call shape times each path into scratch outputs before it runs: what the
// caller sees (outputs, saved and running statistics, gradients) is one call's, equal to the
// forced multi-kernel path's up to summation order. Shapes no other case uses, so that this is
// their first call; bf16 with a residual and ReLU, and f32 plain.
TEST_CASE("cuda batchnorm: the first call of a shape is timed without touching the outputs",
          "[gpu][kernels][bn]") {
  struct Case {
    DT dt;
    BnCase bc;
    bool fused;
  };
  const Case cases[] = {{DT::bf16, {{3, 40, 7, 5}, 0.f}, true},
                        {DT::f32, {{5, 24, 11, 3}, 0.f}, false}};
  for (const Case& c : cases) {
    const DT dt = c.dt;
    const BnData d = bn_data(c.bc, dt, 450);
    INFO(dt_name(dt) << " N=" << d.N << " C=" << d.C << " HW=" << d.HW << " fused " << c.fused);
    const size_t n = d.x.size();
    const int64_t M = d.M, C = d.C;
    Buf x = Buf::from(d.x, dt), r = Buf::from(quant(randn(n, 451), dt), dt);
    Buf dy = Buf::from(d.dy, dt), g = F(d.gamma), b = F(d.beta);
    struct Result {
      Vec y, sm, si, rm, rv, dx, dres, dg, db;
    };
    // the forward on `path`; then the backward on `path` from the forward outputs `from` (the
    // same inputs for both paths: a ReLU mask cannot differ)
    auto forward = [&](int path) {
      const UseBnPath use({-1, -1, path, ""});
      Buf rm = F(d.rm), rv = F(d.rv), y(n, dt), sm(size_t(C), DT::f32), si(size_t(C), DT::f32);
      cu::batchnorm_act_train_forward(dt, M, C, x.p(), g.f(), b.f(), kEps, kMomentum, rm.f(),
                                      rv.f(), c.fused ? r.p() : nullptr, c.fused, y.p(), sm.f(),
                                      si.f(), st());
      return Result{y.get(), sm.get(), si.get(), rm.get(), rv.get(), {}, {}, {}, {}};
    };
    auto backward = [&](int path, Result& res, const Result& from) {
      const UseBnPath use({-1, -1, path, ""});
      Buf y = Buf::from(from.y, dt), sm = F(from.sm), si = F(from.si);
      Buf dx(n, dt), dres(n, dt), dg(size_t(C), DT::f32), db(size_t(C), DT::f32);
      cu::batchnorm_act_train_backward(dt, M, C, x.p(), c.fused ? y.p() : nullptr, dy.p(), g.f(),
                                       sm.f(), si.f(), c.fused, dx.p(),
                                       c.fused ? dres.p() : nullptr, dg.f(), db.f(), st());
      res.dx = dx.get();
      if (c.fused) res.dres = dres.get();
      res.dg = dg.get();
      res.db = db.get();
    };
    Result tuned = forward(-1), multi = forward(2);
    backward(-1, tuned, multi);
    backward(2, multi, multi);
    const Tol t = tol(dt, {2e-5, 1e-5}, {3e-2, 2e-2});
    CHECK_CLOSE_T(tuned.y, multi.y, t);
    REQUIRE_CLOSE(tuned.sm, multi.sm, 1e-6, 1e-6);
    REQUIRE_CLOSE(tuned.si, multi.si, 1e-6, 1e-5);
    // one momentum update of the running statistics, not one per timed run
    REQUIRE_CLOSE(tuned.rm, multi.rm, 1e-6, 1e-6);
    REQUIRE_CLOSE(tuned.rv, multi.rv, 1e-6, 1e-5);
    CHECK_CLOSE_T(tuned.dx, multi.dx, tol(dt, {1e-5, 1e-4}, {2e-2, 2e-2}));
    if (c.fused) REQUIRE(tuned.dres == multi.dres);  // the masked dy, exactly
    const double sq = std::sqrt(double(M));
    REQUIRE_CLOSE(tuned.dg, multi.dg, 1e-5 * sq, 1e-5);
    REQUIRE_CLOSE(tuned.db, multi.db, 1e-5 * sq, 1e-5);
  }
}

// ------------------------------------------------------------------------------------------
namespace {

float source_scale(int64_t in, int64_t out, bool align_corners, double scale_factor) {
  if (align_corners) return out > 1 ? float(double(in - 1) / double(out - 1)) : 0.f;
  return scale_factor > 0 ? float(1.0 / scale_factor) : float(double(in) / double(out));
}

struct RsCase {
  int64_t H, W, OH, OW;
  double factor;  // scale_factor given (> 0) or sizes given (0)
};

}  // namespace

TEST_CASE("cuda upsample nearest (+ addend) and bilinear, forward and backward",
          "[gpu][kernels][resample]") {
  const RsCase cases[] = {{16, 12, 32, 24, 2.0}, {8, 6, 32, 24, 4.0},  {4, 3, 32, 24, 8.0},
                          {7, 9, 30, 17, 0.0},   {13, 11, 5, 4, 0.0},  {5, 5, 5, 5, 0.0},
                          {6, 5, 1, 3, 0.0},     {9, 7, 18, 14, 0.0},
                          // scale factors whose output is the input's size or twice it, the
                          // source index still floor(o / factor): 2.1 -> 10x12, 1.1 -> 5x7
                          {5, 6, 10, 12, 2.1},   {5, 7, 5, 7, 1.1}};
  for (DT dt : kAllDt) {
    for (int64_t C : {3, 17, 32, 33}) {
      for (const RsCase& rc : cases) {
        for (int mode = 0; mode < 3; ++mode) {  // nearest, bilinear, bilinear align_corners
          const bool bilinear = mode > 0, ac = mode == 2;
          ResampleShape s;
          s.N = 2;
          s.C = C;
          s.H = rc.H;
          s.W = rc.W;
          s.OH = rc.OH;
          s.OW = rc.OW;
          s.align_corners = ac;
          s.scale_h = source_scale(rc.H, rc.OH, ac, ac ? 0 : rc.factor);
          s.scale_w = source_scale(rc.W, rc.OW, ac, ac ? 0 : rc.factor);
          INFO(dt_name(dt) << " C=" << C << " " << rc.H << "x" << rc.W << " -> " << rc.OH << "x"
                           << rc.OW << (bilinear ? " bilinear" : " nearest")
                           << (ac ? " align_corners" : ""));
          const int64_t HW = s.H * s.W, OHW = s.OH * s.OW;
          const Vec x = quant(randn(size_t(s.N * C * HW), 500 + C), dt);
          const Vec dy = quant(randn(size_t(s.N * C * OHW), 600 + C), dt);
          Vec y_ref(dy.size()), dx_ref(x.size());
          if (bilinear) {
            cpu::upsample_bilinear_forward(s, x.data(), y_ref.data());
            cpu::upsample_bilinear_backward(s, dy.data(), dx_ref.data());
          } else {
            cpu::upsample_nearest_forward(s, x.data(), y_ref.data());
            cpu::upsample_nearest_backward(s, dy.data(), dx_ref.data());
          }
          Buf bx = Buf::from(to_nhwc(x, s.N, C, HW), dt), by(dy.size(), dt);
          Buf bdy = Buf::from(to_nhwc(dy, s.N, C, OHW), dt), bdx(x.size(), dt);
          if (bilinear) {
            cu::upsample_bilinear_forward(dt, s, bx.p(), by.p(), st());
            cu::upsample_bilinear_backward(dt, s, bdy.p(), bdx.p(), st());
          } else {
            cu::upsample_nearest_forward(dt, s, bx.p(), by.p(), st());
            cu::upsample_nearest_backward(dt, s, bdy.p(), bdx.p(), st());
          }
          CHECK_CLOSE_T(to_nchw(by.get(), s.N, C, OHW), y_ref, tol(dt));
          CHECK_CLOSE_T(to_nchw(bdx.get(), s.N, C, HW), dx_ref, tol(dt, {1e-5, 1e-5}, {2e-2, 1e-2}));
          if (!bilinear) {  // with an addend: upsample_nearest_add (graph pass fuse_upsample_add)
            const Vec r = quant(randn(dy.size(), 700 + C), dt);
            Vec ya_ref(dy.size());
            cpu::upsample_nearest_forward(s, x.data(), ya_ref.data(), r.data());
            Buf br = Buf::from(to_nhwc(r, s.N, C, OHW), dt), bya(dy.size(), dt);
            cu::upsample_nearest_forward(dt, s, bx.p(), bya.p(), st(), br.p());
            CHECK_CLOSE_T(to_nchw(bya.get(), s.N, C, OHW), ya_ref, tol(dt));
          }
        }
      }
    }
  }
}

TEST_CASE("cuda avgpool2d and global average pooling", "[gpu][kernels][pool]") {
  struct PCase {
    int64_t kh, kw, sh, sw, ph, pw;
    bool cip;
  };
  const PCase cases[] = {{3, 3, 2, 2, 1, 1, true}, {3, 3, 2, 2, 1, 1, false}, {2, 2, 2, 2, 0, 0, true},
                         {3, 3, 1, 1, 1, 1, false}, {3, 2, 2, 1, 1, 0, true}};
  for (DT dt : kAllDt) {
    for (int64_t C : {3, 17, 32}) {
      for (const PCase& pc : cases) {
        PoolShape s;
        s.N = 2;
        s.C = C;
        s.H = 13;
        s.W = 11;
        s.kh = pc.kh;
        s.kw = pc.kw;
        s.stride_h = pc.sh;
        s.stride_w = pc.sw;
        s.pad_h = pc.ph;
        s.pad_w = pc.pw;
        s.count_include_pad = pc.cip;
        s.OH = (s.H + 2 * s.pad_h - s.kh) / s.stride_h + 1;
        s.OW = (s.W + 2 * s.pad_w - s.kw) / s.stride_w + 1;
        INFO(dt_name(dt) << " C=" << C << " k" << pc.kh << "x" << pc.kw << " s" << pc.sh << "x"
                         << pc.sw << " p" << pc.ph << "x" << pc.pw << " cip=" << pc.cip);
        const int64_t HW = s.H * s.W, OHW = s.OH * s.OW;
        const Vec x = quant(randn(size_t(s.N * C * HW), 700), dt);
        const Vec dy = quant(randn(size_t(s.N * C * OHW), 701), dt);
        Vec y_ref(dy.size()), dx_ref(x.size());
        cpu::avgpool2d_forward(s, x.data(), y_ref.data());
        cpu::avgpool2d_backward(s, dy.data(), dx_ref.data());
        Buf bx = Buf::from(to_nhwc(x, s.N, C, HW), dt), by(dy.size(), dt);
        Buf bdy = Buf::from(to_nhwc(dy, s.N, C, OHW), dt), bdx(x.size(), dt);
        cu::avgpool2d_forward(dt, s, bx.p(), by.p(), st());
        cu::avgpool2d_backward(dt, s, bdy.p(), bdx.p(), st());
        CHECK_CLOSE_T(to_nchw(by.get(), s.N, C, OHW), y_ref, tol(dt));
        CHECK_CLOSE_T(to_nchw(bdx.get(), s.N, C, HW), dx_ref, tol(dt));
      }
    }
    for (int64_t C : {17, 2048}) {
      for (int64_t HW : {1, 49, 300}) {
        INFO(dt_name(dt) << " global avgpool C=" << C << " HW=" << HW);
        const int64_t N = 2;
        const Vec x = quant(randn(size_t(N * C * HW), 800), dt);
        const Vec dy = quant(randn(size_t(N * C), 801), dt);
        Vec y_ref(size_t(N * C)), dx_ref(x.size());
        cpu::global_avgpool_forward(N, C, HW, x.data(), y_ref.data());
        cpu::global_avgpool_backward(N, C, HW, dy.data(), dx_ref.data());
        Buf bx = Buf::from(to_nhwc(x, N, C, HW), dt), by(y_ref.size(), dt);
        Buf bdy = Buf::from(dy, dt), bdx(x.size(), dt);
        cu::global_avgpool_forward(dt, N, C, HW, bx.p(), by.p(), st());
        cu::global_avgpool_backward(dt, N, C, HW, bdy.p(), bdx.p(), st());
        CHECK_CLOSE_T(by.get(), y_ref, tol(dt));
        CHECK_CLOSE_T(to_nchw(bdx.get(), N, C, HW), dx_ref, tol(dt));
      }
    }
  }
}

TEST_CASE("cuda linear forward and backward (cuBLAS)", "[gpu][kernels][linear][cublas]") {
  struct LCase {
    int64_t M, I, O;
    bool bias;
  };
  const LCase cases[] = {{5, 33, 17, true}, {3, 17, 3, false}, {4, 2048, 1000, true}};
  for (DT dt : kAllDt) {
    for (const LCase& lc : cases) {
      INFO(dt_name(dt) << " M=" << lc.M << " I=" << lc.I << " O=" << lc.O << " bias=" << lc.bias);
      const Vec x = quant(randn(size_t(lc.M * lc.I), 900), dt);
      const Vec w = quant(randn(size_t(lc.O * lc.I), 901, 1.f / std::sqrt(float(lc.I))), dt);
      const Vec bias = randn(size_t(lc.O), 902);
      const Vec dy = quant(randn(size_t(lc.M * lc.O), 903), dt);
      Vec y_ref(size_t(lc.M * lc.O)), dx_ref(x.size()), dw_ref(w.size()), db_ref(size_t(lc.O));
      cpu::linear_forward(lc.M, lc.I, lc.O, x.data(), w.data(), lc.bias ? bias.data() : nullptr,
                          y_ref.data());
      cpu::linear_backward(lc.M, lc.I, lc.O, x.data(), w.data(), dy.data(), dx_ref.data(),
                           dw_ref.data(), db_ref.data());
      Buf bx = Buf::from(x, dt), bw = Buf::from(w, dt), bb = F(bias), bdy = Buf::from(dy, dt);
      Buf by(y_ref.size(), dt), bdx(x.size(), dt), bdw(w.size(), dt), bdb(size_t(lc.O), DT::f32);
      cu::linear_forward(dt, lc.M, lc.I, lc.O, bx.p(), bw.p(), lc.bias ? bb.f() : nullptr, by.p(), st());
      cu::linear_backward(dt, lc.M, lc.I, lc.O, bx.p(), bw.p(), bdy.p(), bdx.p(), bdw.p(), bdb.f(), st());
      const Tol t = tol(dt, {1e-4, 1e-4}, {2e-2, 1e-2});
      CHECK_CLOSE_T(by.get(), y_ref, t);
      CHECK_CLOSE_T(bdx.get(), dx_ref, t);
      CHECK_CLOSE_T(bdw.get(), dw_ref, t);
      REQUIRE_CLOSE(bdb.get(), db_ref, 1e-5, 1e-5);
    }
  }
}

// ------------------------------------------------------------------------------------------
TEST_CASE("cuda heatmap loss (NHWC heatmaps) forward and backward", "[gpu][kernels][loss]") {
  for (DT dt : kAllDt) {
    for (int64_t HW : {48, 64 * 48}) {
      const int64_t N = 2, J = 17;
      INFO(dt_name(dt) << " HW=" << HW);
      const Vec pred = quant(uniform(size_t(N * J * HW), 1000, -0.1f, 1.f), dt);
      const Vec gt = quant(uniform(size_t(N * J * HW), 1001, 0.f, 1.f), dt);
      Vec weight = uniform(size_t(N * J), 1002, 0.f, 1.f);
      weight[3] = 0.f;
      const float dloss = 1000.f;
      const float ref = cpu::heatmap_loss_forward(N, J, HW, pred.data(), gt.data(), weight.data());
      Vec dref(pred.size());
      cpu::heatmap_loss_backward(N, J, HW, pred.data(), gt.data(), weight.data(), dloss, dref.data());
      Buf bp = Buf::from(to_nhwc(pred, N, J, HW), dt), bg = Buf::from(to_nhwc(gt, N, J, HW), dt);
      Buf bw = F(weight), bd(pred.size(), dt);
      const float got = cu::heatmap_loss_forward(dt, N, J, HW, bp.p(), bg.p(), bw.f(), st());
      REQUIRE(std::fabs(got - ref) <= 1e-6 * std::fabs(ref) + 1e-9);
      cu::heatmap_loss_backward(dt, N, J, HW, bp.p(), bg.p(), bw.f(), dloss, bd.p(), st());
      CHECK_CLOSE_T(to_nchw(bd.get(), N, J, HW), dref, tol(dt, {1e-7, 1e-5}, {1e-4, 1e-2}));
    }
  }
}

TEST_CASE("cuda softmax cross-entropy (NHWC logits, ignore label)", "[gpu][kernels][loss]") {
  const int64_t ignore = 255;
  for (DT dt : kAllDt) {
    for (int64_t C : {3, 19, 171}) {
      for (int64_t HW : {37, 512}) {
        const int64_t N = 2;
        INFO(dt_name(dt) << " C=" << C << " HW=" << HW);
        const Vec logits = quant(randn(size_t(N * C * HW), 1100 + C, 2.f), dt);
        std::vector<int64_t> labels(size_t(N * HW));
        const Vec u = uniform(labels.size(), 1101, 0.f, 1.f);
        for (size_t i = 0; i < labels.size(); ++i)
          labels[i] = u[i] < 0.1f ? ignore : int64_t(u[i] * 1e4f) % C;
        const float dloss = 40.f;
        const float ref = cpu::softmax_ce_forward(N, C, HW, logits.data(), labels.data(), ignore);
        Vec dref(logits.size());
        cpu::softmax_ce_backward(N, C, HW, logits.data(), labels.data(), ignore, dloss, dref.data());
        Buf bl = Buf::from(to_nhwc(logits, N, C, HW), dt), bd(logits.size(), dt);
        Labels lab(labels);
        const float got = cu::softmax_ce_forward(dt, N, C, HW, bl.p(), lab.p(), ignore, st());
        REQUIRE(std::fabs(got - ref) <= 1e-5 * std::fabs(ref) + 1e-7);
        cu::softmax_ce_backward(dt, N, C, HW, bl.p(), lab.p(), ignore, dloss, bd.p(), st());
        CHECK_CLOSE_T(to_nchw(bd.get(), N, C, HW), dref, tol(dt, {1e-6, 1e-4}, {2e-3, 1e-2}));
      }
    }
  }
}

TEST_CASE("cuda softmax cross-entropy with every pixel ignored: loss 0, gradients 0",
          "[gpu][kernels][loss]") {
  const int64_t ignore = 255;
  {
    const int64_t N = 1, C = 5, HW = 9;
    const std::vector<int64_t> labels(size_t(N * HW), ignore);
    Labels lab(labels);
    Buf bl = Buf::from(randn(size_t(N * C * HW), 1200), DT::f32), bd(size_t(N * C * HW), DT::f32);
    REQUIRE(cu::softmax_ce_forward(DT::f32, N, C, HW, bl.p(), lab.p(), ignore, st()) == 0.f);
    cu::softmax_ce_backward(DT::f32, N, C, HW, bl.p(), lab.p(), ignore, 1.f, bd.p(), st());
    REQUIRE(bd.get() == Vec(size_t(N * C * HW), 0.f));
  }
}

TEST_CASE("cuda softmax cross-entropy: a label outside [0, C) throws, naming it",
          "[gpu][kernels][loss]") {
  const int64_t ignore = 255;
  {
    const int64_t N = 2, C = 19, HW = 10;
    std::vector<int64_t> labels(size_t(N * HW), 1);
    labels[13] = 19;
    Labels lab(labels);
    Buf bl = Buf::from(randn(size_t(N * C * HW), 1201), DT::f32);
    REQUIRE_THROWS_WITH(cu::softmax_ce_forward(DT::f32, N, C, HW, bl.p(), lab.p(), ignore, st()),
                        Contains("softmax_ce_forward: label 19 at [n=1, pixel 3]"));
  }
}

TEST_CASE("cuda loss_accumulate: the host's double sum of loss x weight, and the last loss",
          "[gpu][kernels][loss]") {
  // acc = {sum, last} as two doubles; losses with many significant bits, weights not powers of 2
  const std::vector<float> losses = {0.123456789f, 3.14159274f, 1e-7f, 12345.678f, 0.5f};
  const std::vector<double> weights = {32, 7, 3, 128, 1};
  Buf loss(1, DT::f32);
  void* acc = cu::alloc(2 * sizeof(double), st());
  cu::memset_zero(acc, 2 * sizeof(double), st());
  double ref = 0;
  for (size_t i = 0; i < losses.size(); ++i) {
    loss.set({losses[i]});
    cu::loss_accumulate(loss.f(), weights[i], static_cast<double*>(acc), st());
    // no fused multiply-add on the host either: the product rounded, then the sum
    volatile double prod = double(losses[i]) * weights[i];
    ref = ref + prod;
    double got[2];
    cu::memcpy_d2h(got, acc, sizeof got, st());
    INFO("step " << i);
    REQUIRE(got[0] == ref);
    REQUIRE(got[1] == double(losses[i]));
  }
  // a NaN loss makes the sum NaN (the trainer's divergence check reads it)
  loss.set({std::nanf("")});
  cu::loss_accumulate(loss.f(), 2.0, static_cast<double*>(acc), st());
  double got[2];
  cu::memcpy_d2h(got, acc, sizeof got, st());
  CHECK(std::isnan(got[0]));
  CHECK(std::isnan(got[1]));
  cu::free(acc, st());
}

TEST_CASE("cuda SGD and Adam steps vs cpu", "[gpu][kernels][optim]") {
  const int64_t n = 1003;
  struct SgdCfg {
    float momentum, dampening, wd;
    bool nesterov;
  };
  for (const SgdCfg& c : {SgdCfg{0.f, 0.f, 1e-4f, false}, SgdCfg{0.9f, 0.1f, 1e-4f, false},
                          SgdCfg{0.9f, 0.f, 5e-4f, true}}) {
    INFO("sgd momentum " << c.momentum << " dampening " << c.dampening << " nesterov " << c.nesterov);
    Vec p = randn(size_t(n), 1300), buf(size_t(n), 0.f);
    Buf bp = F(p), bbuf = F(buf);
    for (int step = 0; step < 3; ++step) {
      const Vec g = randn(size_t(n), 1301 + step);
      Buf bg = F(g);
      const cpu::OptimSpan sp{n, p.data(), g.data(), c.momentum != 0.f ? buf.data() : nullptr,
                              nullptr, 0.05f, c.wd, step == 0};
      cpu::sgd_step(&sp, 1, c.momentum, c.dampening, c.nesterov);
      cu::sgd_step(n, bp.f(), bg.f(), c.momentum != 0.f ? bbuf.f() : nullptr, 0.05f, c.momentum,
                   c.dampening, c.wd, c.nesterov, step == 0, st());
    }
    REQUIRE_CLOSE(bp.get(), p, 1e-6, 1e-6);
    if (c.momentum != 0.f) REQUIRE_CLOSE(bbuf.get(), buf, 1e-6, 1e-6);
  }
  for (bool decoupled : {false, true}) {
    INFO("adam decoupled " << decoupled);
    Vec p = randn(size_t(n), 1400), m(size_t(n), 0.f), v(size_t(n), 0.f);
    Buf bp = F(p), bm = F(m), bv = F(v);
    const float wd = decoupled ? 0.05f : 1e-4f;
    for (int64_t step = 1; step <= 4; ++step) {
      const Vec g = randn(size_t(n), 1401 + uint64_t(step));
      Buf bg = F(g);
      const cpu::OptimSpan sp{n, p.data(), g.data(), m.data(), v.data(), 1e-3f, wd, false};
      cpu::adam_step(&sp, 1, 0.9f, 0.999f, 1e-8f, decoupled, step);
      cu::adam_step(n, bp.f(), bg.f(), bm.f(), bv.f(), 1e-3f, 0.9f, 0.999f, 1e-8f, wd, decoupled,
                    step, st());
    }
    REQUIRE_CLOSE(bp.get(), p, 1e-6, 1e-6);
    REQUIRE_CLOSE(bm.get(), m, 1e-7, 1e-6);
    REQUIRE_CLOSE(bv.get(), v, 1e-8, 1e-6);
  }
}

TEST_CASE("cuda multi-tensor SGD and Adam write the 16-bit weight copies as convert() casts",
          "[gpu][kernels][optim]") {
  // three tensors across chunk boundaries (4096 elements a block): a bf16 copy, none, an f16 copy
  const int64_t ns[3] = {4096 * 2 + 7, 1003, 4096 + 1};
  const DT cdt[3] = {DT::bf16, DT::f32, DT::f16};  // f32: no copy
  for (const std::string kind : {"sgd", "adam"}) {
    INFO(kind);
    std::vector<Buf> p, g, b0, b1, copy;
    for (int k = 0; k < 3; ++k) {
      const size_t n = size_t(ns[k]);
      p.push_back(F(randn(n, 1600 + uint64_t(k))));
      g.push_back(F(randn(n, 1610 + uint64_t(k))));
      b0.push_back(F(Vec(n, 0.f)));
      b1.push_back(F(Vec(n, 0.f)));
      copy.emplace_back(n, cdt[k] == DT::f32 ? DT::bf16 : cdt[k]);  // NaN-poisoned
    }
    const std::vector<unsigned char> untouched = copy[1].raw();
    for (int step = 1; step <= 2; ++step) {
      std::vector<cu::OptimTensor> ts;
      for (int k = 0; k < 3; ++k) {
        cu::OptimTensor t{ns[k], p[size_t(k)].f(), g[size_t(k)].f(), b0[size_t(k)].f(),
                          kind == "adam" ? b1[size_t(k)].f() : nullptr, 1e-3f, 0, step == 1};
        if (kind == "adam") t.first_step = -1;
        if (cdt[k] != DT::f32) {
          t.copy = copy[size_t(k)].p();
          t.copy_dt = cdt[k];
        }
        ts.push_back(t);
      }
      if (kind == "sgd") {
        cu::OptimHyper h;
        h.v[0] = 0.05;
        cu::sgd_multi_step(ts.data(), 3, h, 0.9f, 0.f, false, st());
      } else {
        cu::adam_multi_step(ts.data(), 3, cu::adam_hyper(1e-3f, 0.9f, 0.999f, step), 0.9f,
                            0.999f, 1e-8f, false, st());
      }
    }
    for (int k : {0, 2}) {
      INFO("tensor " << k);
      Buf ref(size_t(ns[k]), cdt[k]);
      cu::convert(ns[k], DT::f32, p[size_t(k)].p(), cdt[k], ref.p(), st());
      CHECK(copy[size_t(k)].raw() == ref.raw());  // bit for bit
    }
    CHECK(copy[1].raw() == untouched);
  }
}

TEST_CASE("unscale_and_check scales and detects inf/nan", "[gpu][kernels][fused]") {
  for (int64_t n : {1, 1001, 65536 + 3}) {
    INFO("n=" << n);
    const Vec g = randn(size_t(n), 1500, 1024.f);
    Vec ref(g.size());
    for (size_t i = 0; i < g.size(); ++i) ref[i] = g[i] * (1.f / 1024.f);
    Buf b = F(g);
    REQUIRE_FALSE(cu::unscale_and_check(n, b.f(), 1.f / 1024.f, st()));
    REQUIRE(b.get() == ref);
    for (float bad : {INFINITY, -INFINITY, NAN}) {
      Vec h = g;
      h[size_t(n) / 2] = bad;
      Buf bb = F(h);
      REQUIRE(cu::unscale_and_check(n, bb.f(), 0.5f, st()));
    }
  }
}

// ------------------------------------------------------------------------------------------
namespace {

struct ConvCase {
  int64_t N, C, H, W, K, R, stride, pad;
  bool bias;
};

// Runs forward, backward-data and backward-weight of s through the dispatcher and compares
// each with the CPU.
void check_conv(const ConvCase& cc, DT dt, uint64_t seed) {
  const ConvShape s = ConvShape::make(cc.N, cc.C, cc.H, cc.W, cc.K, cc.R, cc.R, cc.stride,
                                      cc.stride, cc.pad, cc.pad);
  INFO(dt_name(dt) << " conv N=" << s.N << " C=" << s.C << " " << s.H << "x" << s.W << " K=" << s.K
                   << " " << s.R << "x" << s.S << " stride " << s.stride_h << " pad " << s.pad_h
                   << " bias " << cc.bias);
  const int64_t HW = s.H * s.W, PQ = s.P * s.Q, RS = s.R * s.S;
  const Vec x = quant(randn(size_t(s.N * s.C * HW), seed), dt);                  // NCHW
  const Vec w = quant(randn(size_t(s.K * s.C * RS), seed + 1, 0.1f), dt);        // KCRS
  const Vec bias = randn(size_t(s.K), seed + 2);
  const Vec dy = quant(randn(size_t(s.N * s.K * PQ), seed + 3), dt);             // NKPQ
  Vec y_ref(dy.size()), dx_ref(x.size()), dw_ref(w.size()), db_ref(size_t(s.K));
  hr::cpu::conv2d_forward(s, x.data(), w.data(), cc.bias ? bias.data() : nullptr, y_ref.data());
  hr::cpu::conv2d_backward_data(s, dy.data(), w.data(), dx_ref.data());
  hr::cpu::conv2d_backward_weight(s, x.data(), dy.data(), dw_ref.data(), db_ref.data());

  Buf bx = Buf::from(to_nhwc(x, s.N, s.C, HW), dt);
  Buf bw = Buf::from(to_nhwc(w, s.K, s.C, RS), dt);  // KCRS -> KRSC
  Buf bdy = Buf::from(to_nhwc(dy, s.N, s.K, PQ), dt);
  Buf bb = F(bias);
  Buf by(dy.size(), dt), bdx(x.size(), dt), bdw(w.size(), dt), bdb(size_t(s.K), DT::f32);
  cu::conv2d_forward(s, dt, bx.p(), bw.p(), cc.bias ? bb.f() : nullptr, by.p(), st());
  cu::conv2d_backward_data(s, dt, bdy.p(), bw.p(), bdx.p(), st());
  cu::conv2d_backward_weight(s, dt, bx.p(), bdy.p(), bdw.p(), cc.bias ? bdb.f() : nullptr, st());
  const Tol t = tol(dt, {2e-4, 1e-4}, {5e-2, 2e-2});
  {
    INFO("forward");
    CHECK_CLOSE_T(to_nchw(by.get(), s.N, s.K, PQ), y_ref, t);
  }
  {
    INFO("backward data");
    CHECK_CLOSE_T(to_nchw(bdx.get(), s.N, s.C, HW), dx_ref, t);
  }
  {
    INFO("backward weight");
    const double sq = std::sqrt(double(s.N * PQ));
    CHECK_CLOSE_T(to_nchw(bdw.get(), s.K, s.C, RS), dw_ref, tol(dt, {2e-5 * sq, 1e-4}, {2e-3 * sq, 2e-2}));
    if (cc.bias) REQUIRE_CLOSE(bdb.get(), db_ref, 1e-5 * sq, 1e-5);
  }
}

const ConvCase kConvCases[] = {
    {2, 3, 32, 24, 16, 3, 2, 1, false},   // stem: 3 channels, stride 2
    {2, 32, 16, 12, 32, 3, 1, 1, false},  // BasicBlock 3x3
    {2, 17, 9, 7, 33, 3, 2, 1, true},     // odd everything
    {2, 64, 8, 6, 256, 1, 1, 0, true},    // Bottleneck expansion 1x1 with bias
    {1, 33, 7, 5, 17, 1, 1, 0, true},     // final-layer-like 1x1, odd
    {2, 36, 13, 11, 72, 3, 2, 1, false},  // W18 transition, odd input
};


}  // namespace

TEST_CASE("cuda conv2d through the dispatcher, cuDNN forced", "[gpu][kernels][conv]") {
  EnvGuard env("HR_CONV_BACKEND", "cudnn");
  uint64_t seed = 2000;
  for (DT dt : kAllDt)
    for (const ConvCase& cc : kConvCases) check_conv(cc, dt, seed += 10);
  // with the graph API on, cuDNN 9 serves plain convolutions through it (the legacy API only
  // what it declines): at least the f32 ones here (shapes may have been chosen by an earlier
  // case of this process, so the count is the process's)
  if (cu::conv_cudnn_graph_enabled()) CHECK(cu::conv_cudnn_graph_plans() >= 6);
}

TEST_CASE("cuda conv2d through the dispatcher, automatic choice (timed once, then cached)",
          "[gpu][kernels][conv]") {
  EnvGuard env("HR_CONV_BACKEND", "auto");
  for (DT dt : {DT::f16, DT::bf16})
    for (int rep = 0; rep < 2; ++rep) {
      INFO("call " << rep);
      check_conv(kConvCases[1], dt, 3000);
      check_conv(kConvCases[3], dt, 3010);
    }
}

TEST_CASE("cuda conv2d dispatcher rejects an unknown HR_CONV_BACKEND", "[gpu][kernels][conv]") {
  EnvGuard env("HR_CONV_BACKEND", "fastest");
  const ConvShape s = ConvShape::make(1, 8, 4, 4, 8, 1, 1, 1, 1, 0, 0);
  Buf x(size_t(1 * 8 * 16), DT::f32), w(64, DT::f32), y(size_t(1 * 8 * 16), DT::f32);
  REQUIRE_THROWS_WITH(cu::conv2d_forward(s, DT::f32, x.p(), w.p(), nullptr, y.p(), st()),
                      Contains("HR_CONV_BACKEND=fastest"));
}
