// GPU tests of our tensor-core convolutions (kernels/cuda/conv_igemm.h) and the fused
// upsample + 1x1 conv of HRNet's fuse layers (kernels/cuda/fuse_upsample.h).
// References: hr::cpu::conv2d_* (NCHW fp32, inputs transposed on the host) at HRNet shapes
// (W32 / W48 widths, the four resolutions of a 256x192 input, batch 2), and naive
// double-precision NHWC loops written here for odd shapes. Inputs are rounded to f16/bf16 first
// so the references see the values the GPU sees; outputs are poisoned with NaN before each call.
// Tags: [quick] marks the small cases; [sanitize] the subset tools/gpu_check.sh runs under
// compute-sanitizer (memcheck, racecheck).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/conv_igemm.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/fuse_upsample.h"
#include "test_util.h"

namespace {

using hr::cuda::DT;
using hr::kern::ConvShape;
using hr::kern::ResampleShape;

const char* dt_name(DT dt) { return dt == DT::bf16 ? "bf16" : "f16"; }

// Round to dt in place; returns the 16-bit codes.
std::vector<uint16_t> round_to(DT dt, std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  const int64_t n = static_cast<int64_t>(v.size());
  if (dt == DT::bf16) {
    hr::cpu::f32_to_bf16(n, v.data(), h.data());
    hr::cpu::bf16_to_f32(n, h.data(), v.data());
  } else {
    hr::cpu::f32_to_f16(n, v.data(), h.data());
    hr::cpu::f16_to_f32(n, h.data(), v.data());
  }
  return h;
}
std::vector<float> to_f32(DT dt, const std::vector<uint16_t>& h) {
  std::vector<float> v(h.size());
  if (dt == DT::bf16)
    hr::cpu::bf16_to_f32(static_cast<int64_t>(h.size()), h.data(), v.data());
  else
    hr::cpu::f16_to_f32(static_cast<int64_t>(h.size()), h.data(), v.data());
  return v;
}

// Device buffer on the engine's stream.
struct Dev {
  void* p = nullptr;
  size_t bytes = 0;
  explicit Dev(size_t b) : bytes(b) { p = hr::cuda::alloc(b, hr::cuda::default_stream()); }
  ~Dev() { hr::cuda::free(p, hr::cuda::default_stream()); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(p); }
};
template <class T>
void up(Dev& d, const std::vector<T>& h) {
  REQUIRE(h.size() * sizeof(T) == d.bytes);
  hr::cuda::memcpy_h2d(d.p, h.data(), d.bytes, hr::cuda::default_stream());
}
void poison(Dev& d) {  // 0xFFFF is NaN in both f16 and bf16 (and 0xFFFFFFFF in fp32)
  std::vector<uint16_t> nan(d.bytes / 2, 0xFFFF);
  hr::cuda::memcpy_h2d(d.p, nan.data(), d.bytes, hr::cuda::default_stream());
}
std::vector<uint16_t> down16(const Dev& d) {
  hr::cuda::synchronize(hr::cuda::default_stream());
  std::vector<uint16_t> h(d.bytes / 2);
  hr::cuda::memcpy_d2h(h.data(), d.p, d.bytes, hr::cuda::default_stream());
  return h;
}
std::vector<float> down32(const Dev& d) {
  hr::cuda::synchronize(hr::cuda::default_stream());
  std::vector<float> h(d.bytes / 4);
  hr::cuda::memcpy_d2h(h.data(), d.p, d.bytes, hr::cuda::default_stream());
  return h;
}

// [A, B, HW] <-> [A, HW, B] (NCHW <-> NHWC, and KCRS <-> KRSC)
std::vector<float> nchw_to_nhwc(const std::vector<float>& x, int64_t A, int64_t B, int64_t HW) {
  std::vector<float> y(x.size());
  for (int64_t a = 0; a < A; ++a)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < HW; ++i) y[(a * HW + i) * B + b] = x[(a * B + b) * HW + i];
  return y;
}
std::vector<float> nhwc_to_nchw(const std::vector<float>& x, int64_t A, int64_t B, int64_t HW) {
  std::vector<float> y(x.size());
  for (int64_t a = 0; a < A; ++a)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < HW; ++i) y[(a * B + b) * HW + i] = x[(a * HW + i) * B + b];
  return y;
}

double rms(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += double(x) * x;
  return std::sqrt(s / std::max<size_t>(1, v.size()));
}

// Per-element tolerance for dt outputs of an fp32-accumulated sum: the output rounding
// (half an ulp: 2^-8 relative for bf16, 2^-11 for f16, with margin) plus an absolute floor for
// values that cancel to near zero.
struct Tol {
  double atol, rtol;
};
Tol tol_for(DT dt, const std::vector<float>& ref) {
  const double r = rms(ref);
  return dt == DT::bf16 ? Tol{4e-3 * r + 1e-6, 8e-3} : Tol{1e-3 * r + 1e-6, 2e-3};
}

// ---- naive double-precision NHWC references
std::vector<float> naive_fwd(const ConvShape& s, const std::vector<float>& x,
                             const std::vector<float>& w) {
  std::vector<float> y(s.N * s.P * s.Q * s.K);
  std::vector<double> acc(s.K);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t p = 0; p < s.P; ++p)
      for (int64_t q = 0; q < s.Q; ++q) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t r = 0; r < s.R; ++r)
          for (int64_t t = 0; t < s.S; ++t) {
            const int64_t h = p * s.stride_h - s.pad_h + r, ww = q * s.stride_w - s.pad_w + t;
            if (h < 0 || h >= s.H || ww < 0 || ww >= s.W) continue;
            const float* xp = &x[((n * s.H + h) * s.W + ww) * s.C];
            for (int64_t k = 0; k < s.K; ++k) {
              const float* wp = &w[((k * s.R + r) * s.S + t) * s.C];
              double a = 0;
              for (int64_t c = 0; c < s.C; ++c) a += double(xp[c]) * wp[c];
              acc[k] += a;
            }
          }
        for (int64_t k = 0; k < s.K; ++k) y[((n * s.P + p) * s.Q + q) * s.K + k] = float(acc[k]);
      }
  return y;
}
std::vector<float> naive_dgrad(const ConvShape& s, const std::vector<float>& dy,
                               const std::vector<float>& w) {
  std::vector<double> dx(s.N * s.H * s.W * s.C, 0.0);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t p = 0; p < s.P; ++p)
      for (int64_t q = 0; q < s.Q; ++q)
        for (int64_t r = 0; r < s.R; ++r)
          for (int64_t t = 0; t < s.S; ++t) {
            const int64_t h = p * s.stride_h - s.pad_h + r, ww = q * s.stride_w - s.pad_w + t;
            if (h < 0 || h >= s.H || ww < 0 || ww >= s.W) continue;
            double* xp = &dx[((n * s.H + h) * s.W + ww) * s.C];
            for (int64_t k = 0; k < s.K; ++k) {
              const double g = dy[((n * s.P + p) * s.Q + q) * s.K + k];
              const float* wp = &w[((k * s.R + r) * s.S + t) * s.C];
              for (int64_t c = 0; c < s.C; ++c) xp[c] += g * wp[c];
            }
          }
  return std::vector<float>(dx.begin(), dx.end());
}
std::vector<float> naive_wgrad(const ConvShape& s, const std::vector<float>& x,
                               const std::vector<float>& dy) {
  std::vector<double> dw(s.K * s.R * s.S * s.C, 0.0);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t p = 0; p < s.P; ++p)
      for (int64_t q = 0; q < s.Q; ++q)
        for (int64_t r = 0; r < s.R; ++r)
          for (int64_t t = 0; t < s.S; ++t) {
            const int64_t h = p * s.stride_h - s.pad_h + r, ww = q * s.stride_w - s.pad_w + t;
            if (h < 0 || h >= s.H || ww < 0 || ww >= s.W) continue;
            const float* xp = &x[((n * s.H + h) * s.W + ww) * s.C];
            for (int64_t k = 0; k < s.K; ++k) {
              const double g = dy[((n * s.P + p) * s.Q + q) * s.K + k];
              double* wp = &dw[((k * s.R + r) * s.S + t) * s.C];
              for (int64_t c = 0; c < s.C; ++c) wp[c] += g * xp[c];
            }
          }
  return std::vector<float>(dw.begin(), dw.end());
}

// ---- hr::cpu references on NHWC data (transposed to NCHW and back)
std::vector<float> cpu_fwd(const ConvShape& s, const std::vector<float>& x,
                           const std::vector<float>& w, const float* bias) {
  const auto xc = nhwc_to_nchw(x, s.N, s.C, s.H * s.W);
  const auto wc = nhwc_to_nchw(w, s.K, s.C, s.R * s.S);
  std::vector<float> y(s.N * s.K * s.P * s.Q);
  hr::cpu::conv2d_forward(s, xc.data(), wc.data(), bias, y.data());
  return nchw_to_nhwc(y, s.N, s.K, s.P * s.Q);
}
std::vector<float> cpu_dgrad(const ConvShape& s, const std::vector<float>& dy,
                             const std::vector<float>& w) {
  const auto dyc = nhwc_to_nchw(dy, s.N, s.K, s.P * s.Q);
  const auto wc = nhwc_to_nchw(w, s.K, s.C, s.R * s.S);
  std::vector<float> dx(s.N * s.C * s.H * s.W);
  hr::cpu::conv2d_backward_data(s, dyc.data(), wc.data(), dx.data());
  return nchw_to_nhwc(dx, s.N, s.C, s.H * s.W);
}
std::vector<float> cpu_wgrad(const ConvShape& s, const std::vector<float>& x,
                             const std::vector<float>& dy, std::vector<float>* dbias) {
  const auto xc = nhwc_to_nchw(x, s.N, s.C, s.H * s.W);
  const auto dyc = nhwc_to_nchw(dy, s.N, s.K, s.P * s.Q);
  std::vector<float> dw(s.K * s.C * s.R * s.S);
  if (dbias) dbias->assign(s.K, 0.f);
  hr::cpu::conv2d_backward_weight(s, xc.data(), dyc.data(), dw.data(),
                                  dbias ? dbias->data() : nullptr);
  return nchw_to_nhwc(dw, s.K, s.C, s.R * s.S);
}

std::string shape_name(const ConvShape& s) {
  return hr::str_cat("N", s.N, " C", s.C, " ", s.H, "x", s.W, " K", s.K, " ", s.R, "x", s.S,
                     " s", s.stride_h, " p", s.pad_h);
}

// Runs forward (with bias), backward-data and backward-weight (with dbias) of shape s in dt
// and compares each with the reference (naive double loops, or hr::cpu when use_cpu).
void check_conv(const ConvShape& s, DT dt, bool use_cpu, uint64_t seed) {
  INFO(shape_name(s) << " " << dt_name(dt) << (use_cpu ? " vs hr::cpu" : " vs naive double"));
  REQUIRE(hr::cuda::igemm::supported(s, dt));
  const int64_t nx = s.N * s.H * s.W * s.C, nw = s.K * s.R * s.S * s.C, ny = s.N * s.P * s.Q * s.K;
  auto x = hr::test::randn(nx, seed);
  auto w = hr::test::randn(nw, seed + 1, 1.f / std::sqrt(float(s.C * s.R * s.S)));
  auto dy = hr::test::randn(ny, seed + 2);
  auto bias = hr::test::randn(s.K, seed + 3, 0.5f);
  const auto xh = round_to(dt, x), wh = round_to(dt, w), dyh = round_to(dt, dy);

  Dev dx_(nx * 2), dw_(nw * 2), dy_(ny * 2), db_(s.K * 4), out_y(ny * 2), out_dx(nx * 2),
      out_dw(nw * 2), out_db(s.K * 4);
  up(dx_, xh);
  up(dw_, wh);
  up(dy_, dyh);
  up(db_, bias);
  const auto st = hr::cuda::default_stream();

  {
    poison(out_y);
    REQUIRE(hr::cuda::igemm::forward(s, dt, dx_.p, dw_.p, db_.as<float>(), out_y.p, st));
    const auto got = to_f32(dt, down16(out_y));
    std::vector<float> ref;
    if (use_cpu) {
      ref = cpu_fwd(s, x, w, bias.data());
    } else {
      ref = naive_fwd(s, x, w);
      for (int64_t i = 0; i < ny; ++i) ref[i] += bias[i % s.K];
    }
    const Tol t = tol_for(dt, ref);
    REQUIRE_CLOSE(got, ref, t.atol, t.rtol);
  }
  {
    poison(out_dx);
    REQUIRE(hr::cuda::igemm::backward_data(s, dt, dy_.p, dw_.p, out_dx.p, st));
    const auto got = to_f32(dt, down16(out_dx));
    const auto ref = use_cpu ? cpu_dgrad(s, dy, w) : naive_dgrad(s, dy, w);
    const Tol t = tol_for(dt, ref);
    REQUIRE_CLOSE(got, ref, t.atol, t.rtol);
  }
  {
    poison(out_dw);
    poison(out_db);
    REQUIRE(hr::cuda::igemm::backward_weight(s, dt, dx_.p, dy_.p, out_dw.p, out_db.as<float>(),
                                             st));
    const auto got = to_f32(dt, down16(out_dw));
    std::vector<float> ref_db;
    const auto ref = use_cpu ? cpu_wgrad(s, x, dy, &ref_db) : naive_wgrad(s, x, dy);
    if (!use_cpu) {
      ref_db.assign(s.K, 0.f);
      for (int64_t k = 0; k < s.K; ++k) {
        double a = 0;
        for (int64_t i = 0; i < s.N * s.P * s.Q; ++i) a += dy[i * s.K + k];
        ref_db[k] = float(a);
      }
    }
    const Tol t = tol_for(dt, ref);
    REQUIRE_CLOSE(got, ref, t.atol, t.rtol);
    const auto got_db = down32(out_db);
    REQUIRE_CLOSE(got_db, ref_db, 1e-4 * rms(ref_db) + 1e-4, 1e-4);
  }
}

struct Cfg {
  int64_t R, stride, pad;
};

}  // namespace

TEST_CASE("igemm: unsupported shapes and dtypes return false", "[gpu][igemm][quick][sanitize]") {
  const auto st = hr::cuda::default_stream();
  const ConvShape ok = ConvShape::make(1, 16, 8, 8, 16, 3, 3, 1, 1, 1, 1);
  CHECK(hr::cuda::igemm::supported(ok, DT::bf16));
  CHECK(hr::cuda::igemm::supported(ok, DT::f16));
  CHECK_FALSE(hr::cuda::igemm::supported(ok, DT::f32));
  CHECK_FALSE(hr::cuda::igemm::supported(ConvShape::make(1, 18, 8, 8, 16, 3, 3, 1, 1, 1, 1),
                                         DT::bf16));  // HRNet-W18 width
  CHECK_FALSE(hr::cuda::igemm::supported(ConvShape::make(1, 16, 8, 8, 36, 3, 3, 1, 1, 1, 1),
                                         DT::bf16));
  CHECK_FALSE(hr::cuda::igemm::supported(ConvShape::make(1, 16, 8, 8, 16, 5, 5, 1, 1, 2, 2),
                                         DT::bf16));
  CHECK_FALSE(hr::cuda::igemm::supported(ConvShape::make(1, 16, 8, 8, 16, 3, 3, 3, 3, 1, 1),
                                         DT::bf16));
  // A call that is not supported must not touch the output.
  const ConvShape bad = ConvShape::make(1, 18, 4, 4, 8, 3, 3, 1, 1, 1, 1);
  Dev x(1 * 4 * 4 * 18 * 2), w(8 * 9 * 18 * 2), y(1 * 4 * 4 * 8 * 2);
  poison(y);
  CHECK_FALSE(hr::cuda::igemm::forward(bad, DT::bf16, x.p, w.p, nullptr, y.p, st));
  for (uint16_t v : down16(y)) REQUIRE(v == 0xFFFF);
}

TEST_CASE("igemm: odd shapes vs naive double loops", "[gpu][igemm][quick]") {
  // N = 3, odd H and W, C = 8 and 520 (more than 512: several reduction tiles per tap and
  // several output tiles), K not a multiple of the tile width.
  const Cfg cfgs[] = {{3, 1, 1}, {3, 2, 1}, {1, 1, 0}, {1, 2, 0}, {3, 1, 0}, {3, 2, 0}};
  const int64_t CK[][2] = {{8, 8}, {8, 24}, {520, 16}, {16, 520}};
  uint64_t seed = 100;
  for (DT dt : {DT::bf16, DT::f16})
    for (const auto& ck : CK)
      for (const Cfg& c : cfgs) {
        const int64_t H = ck[0] > 64 || ck[1] > 64 ? 7 : 13, W = ck[0] > 64 || ck[1] > 64 ? 5 : 11;
        const ConvShape s = ConvShape::make(3, ck[0], H, W, ck[1], c.R, c.R, c.stride, c.stride,
                                            c.pad, c.pad);
        check_conv(s, dt, false, seed += 10);
      }
}

TEST_CASE("igemm: tiny images (P or Q = 1, phases without rows)",
          "[gpu][igemm][quick][sanitize]") {
  uint64_t seed = 500;
  for (DT dt : {DT::bf16, DT::f16}) {
    check_conv(ConvShape::make(2, 16, 1, 1, 8, 3, 3, 1, 1, 1, 1), dt, false, seed += 10);
    check_conv(ConvShape::make(2, 16, 1, 3, 8, 3, 3, 2, 2, 1, 1), dt, false, seed += 10);
    check_conv(ConvShape::make(1, 8, 2, 2, 16, 3, 3, 2, 2, 1, 1), dt, false, seed += 10);
    check_conv(ConvShape::make(1, 8, 3, 3, 16, 1, 1, 2, 2, 0, 0), dt, false, seed += 10);
  }
}

TEST_CASE("igemm: pipeline wrap-around, every pass (sanitizer case)",
          "[gpu][igemm][quick][sanitize]") {
  // More reduction tiles than pipeline stages in every pass (fwd 12, dgrad 7,
  // wgrad 10), so the stage buffers are reused; small enough for racecheck.
  uint64_t seed = 800;
  for (DT dt : {DT::bf16, DT::f16}) {
    check_conv(ConvShape::make(3, 40, 9, 11, 24, 3, 3, 1, 1, 1, 1), dt, false, seed += 10);
    check_conv(ConvShape::make(3, 40, 9, 11, 24, 3, 3, 2, 2, 1, 1), dt, false, seed += 10);
  }
}

TEST_CASE("igemm: HRNet W32 / W48 shapes at 256x192, batch 2, vs hr::cpu", "[gpu][igemm]") {
  const int64_t res[4][2] = {{64, 48}, {32, 24}, {16, 12}, {8, 6}};
  const int64_t widths[2][4] = {{32, 64, 128, 256}, {48, 96, 192, 384}};
  uint64_t seed = 1000;
  for (const auto& wd : widths)
    for (DT dt : {DT::bf16, DT::f16}) {
      for (int b = 0; b < 4; ++b) {
        // branch 3x3 s1 conv
        check_conv(ConvShape::make(2, wd[b], res[b][0], res[b][1], wd[b], 3, 3, 1, 1, 1, 1), dt,
                   true, seed += 10);
        // stride-2 3x3 conv to the next branch
        if (b < 3)
          check_conv(ConvShape::make(2, wd[b], res[b][0], res[b][1], wd[b + 1], 3, 3, 2, 2, 1, 1),
                     dt, true, seed += 10);
        // 1x1 fuse conv of branch b towards branch b-1 (at branch b's resolution)
        if (b > 0)
          check_conv(ConvShape::make(2, wd[b], res[b][0], res[b][1], wd[b - 1], 1, 1, 1, 1, 0, 0),
                     dt, true, seed += 10);
      }
    }
}

TEST_CASE("igemm: split-K paths are taken, repeatable bit for bit, on two streams",
          "[gpu][igemm][quick][sanitize]") {
  using hr::cuda::igemm::Pass;
  using hr::cuda::igemm::planned_splits;
  // Small-image, wide-channel shapes where the planner splits the reduction (in-kernel fixup),
  // a stride-2 one (backward-data phases with 1, 2, 2 and 4 taps split differently), and a long
  // backward-weight reduction that takes the partials + reduce-kernel path (> 16 splits).
  std::vector<ConvShape> shapes = {
      ConvShape::make(2, 256, 8, 6, 256, 3, 3, 1, 1, 1, 1),
      ConvShape::make(3, 136, 7, 5, 264, 3, 3, 2, 2, 1, 1),
      ConvShape::make(2, 16, 64, 48, 16, 3, 3, 1, 1, 1, 1),
      // 1x1 stride 2: backward-data phases without taps (zeros) next to a split phase
      ConvShape::make(3, 16, 7, 5, 520, 1, 1, 2, 2, 0, 0),
  };
  CHECK(planned_splits(shapes[0], DT::bf16, Pass::fwd) > 1);
  CHECK(planned_splits(shapes[0], DT::bf16, Pass::dgrad) > 1);
  // The in-kernel backward-weight split (2..16 splits): the first candidate the planner splits
  // that way on this device is added to the shapes under test.
  bool wgrad_split = false;
  for (const ConvShape& c : {ConvShape::make(8, 256, 8, 6, 256, 3, 3, 1, 1, 1, 1),
                             ConvShape::make(4, 128, 16, 12, 128, 3, 3, 1, 1, 1, 1),
                             ConvShape::make(8, 64, 32, 24, 64, 3, 3, 1, 1, 1, 1),
                             ConvShape::make(32, 256, 8, 6, 256, 3, 3, 1, 1, 1, 1),
                             ConvShape::make(16, 128, 16, 12, 256, 3, 3, 2, 2, 1, 1)}) {
    const int n = planned_splits(c, DT::bf16, Pass::wgrad);
    if (n >= 2 && n <= 16) {
      shapes.push_back(c);
      wgrad_split = true;
      break;
    }
  }
  CHECK(wgrad_split);
  CHECK(planned_splits(shapes[1], DT::f16, Pass::fwd) > 1);
  CHECK(planned_splits(shapes[1], DT::f16, Pass::dgrad) > 1);
  CHECK(planned_splits(shapes[2], DT::bf16, Pass::wgrad) > 16);
  CHECK(planned_splits(shapes[3], DT::bf16, Pass::dgrad) > 1);
  CHECK(planned_splits(ConvShape::make(1, 18, 8, 8, 16, 3, 3, 1, 1, 1, 1), DT::bf16, Pass::fwd) == 0);
  uint64_t seed = 3000;
  const auto st1 = hr::cuda::default_stream();
  const auto st2 = hr::cuda::create_stream();
  for (const ConvShape& s : shapes)
    for (DT dt : {DT::bf16, DT::f16}) {
      check_conv(s, dt, false, seed += 10);  // values vs naive double loops
      INFO(shape_name(s) << " " << dt_name(dt) << " repeat");
      const int64_t nx = s.N * s.H * s.W * s.C, nw = s.K * s.R * s.S * s.C,
                    ny = s.N * s.P * s.Q * s.K;
      auto x = hr::test::randn(nx, seed + 5);
      auto w = hr::test::randn(nw, seed + 6, 1.f / std::sqrt(float(s.C * s.R * s.S)));
      auto dy = hr::test::randn(ny, seed + 7);
      Dev dx_(nx * 2), dw_(nw * 2), dy_(ny * 2), o1(std::max({nx, nw, ny}) * 2),
          o2(std::max({nx, nw, ny}) * 2);
      up(dx_, round_to(dt, x));
      up(dw_, round_to(dt, w));
      up(dy_, round_to(dt, dy));
      for (int pass = 0; pass < 3; ++pass) {
        // Three calls: two back to back on one stream (arrival counters must be reset by the
        // first), one on another stream (its own counters); all three bit-identical.
        std::vector<uint16_t> got[3];
        for (int rep = 0; rep < 3; ++rep) {
          const auto stream = rep == 2 ? st2 : st1;
          Dev& o = rep == 1 ? o2 : o1;
          poison(o);
          bool ok = false;
          if (pass == 0) ok = hr::cuda::igemm::forward(s, dt, dx_.p, dw_.p, nullptr, o.p, stream);
          if (pass == 1) ok = hr::cuda::igemm::backward_data(s, dt, dy_.p, dw_.p, o.p, stream);
          if (pass == 2)
            ok = hr::cuda::igemm::backward_weight(s, dt, dx_.p, dy_.p, o.p, nullptr, stream);
          REQUIRE(ok);
          hr::cuda::synchronize(stream);
          got[rep] = down16(o);
        }
        INFO("pass " << pass);
        REQUIRE(got[0] == got[1]);
        REQUIRE(got[0] == got[2]);
      }
    }
  hr::cuda::synchronize(st2);
  hr::cuda::destroy_stream(st2);
}

TEST_CASE("igemm: forward_fused epilogue (scale, shift, residual, relu, fp32 out)",
          "[gpu][igemm][quick][sanitize]") {
  const auto st = hr::cuda::default_stream();
  const ConvShape s = ConvShape::make(3, 24, 9, 7, 40, 3, 3, 1, 1, 1, 1);
  const int64_t nx = s.N * s.H * s.W * s.C, nw = s.K * s.R * s.S * s.C, ny = s.N * s.P * s.Q * s.K;
  uint64_t seed = 7000;
  for (DT dt : {DT::bf16, DT::f16})
    for (int variant = 0; variant < 4; ++variant) {
      // 0: scale+shift+relu, 1: +residual, 2: residual aliasing y, 3: fp32 out + residual
      INFO(dt_name(dt) << " variant " << variant);
      auto x = hr::test::randn(nx, seed += 10);
      auto w = hr::test::randn(nw, seed + 1, 1.f / std::sqrt(float(s.C * 9)));
      auto res = hr::test::randn(ny, seed + 2);
      const auto scale = hr::test::uniform(s.K, seed + 3, 0.5f, 1.5f);
      const auto shift = hr::test::randn(s.K, seed + 4, 0.3f);
      const auto xh = round_to(dt, x), wh = round_to(dt, w);
      const bool f32 = variant == 3;
      std::vector<uint16_t> resh;
      if (!f32) resh = round_to(dt, res);
      Dev dx(nx * 2), dw(nw * 2), dres(ny * (f32 ? 4 : 2)), dsc(s.K * 4), dsh(s.K * 4),
          dyo(ny * (f32 ? 4 : 2));
      up(dx, xh);
      up(dw, wh);
      up(dsc, scale);
      up(dsh, shift);
      if (f32) up(dres, res); else up(dres, resh);
      if (variant == 2) up(dyo, resh); else poison(dyo);
      hr::cuda::igemm::Epilogue ep;
      ep.scale = dsc.as<float>();
      ep.shift = dsh.as<float>();
      ep.residual = variant == 0 ? nullptr : variant == 2 ? dyo.p : dres.p;
      ep.relu = true;
      ep.out_f32 = f32;
      REQUIRE(hr::cuda::igemm::forward_fused(s, dt, dx.p, dw.p, ep, dyo.p, st));
      const auto got = f32 ? down32(dyo) : to_f32(dt, down16(dyo));
      auto ref = naive_fwd(s, x, w);
      for (int64_t i = 0; i < ny; ++i) {
        float v = ref[i] * scale[i % s.K] + shift[i % s.K] + (variant == 0 ? 0.f : res[i]);
        ref[i] = v > 0.f ? v : 0.f;
      }
      const Tol t = f32 ? Tol{1e-4, 1e-4} : tol_for(dt, ref);
      REQUIRE_CLOSE(got, ref, t.atol, t.rtol);
    }
}

// ---------------------------------------------------------------- fused upsample + 1x1 conv
namespace {

struct UpCase {
  hr::cuda::UpMode mode;
  int64_t N, Cin, H, W, Cout, OH, OW;
  bool align_corners;
};

ResampleShape resample_shape(const UpCase& u) {
  ResampleShape r;
  r.N = u.N;
  r.C = u.Cout;
  r.H = u.H;
  r.W = u.W;
  r.OH = u.OH;
  r.OW = u.OW;
  r.align_corners = u.align_corners;
  if (u.mode == hr::cuda::UpMode::bilinear && u.align_corners) {
    r.scale_h = u.OH > 1 ? float(u.H - 1) / float(u.OH - 1) : 0.f;
    r.scale_w = u.OW > 1 ? float(u.W - 1) / float(u.OW - 1) : 0.f;
  } else {
    r.scale_h = float(u.H) / float(u.OH);
    r.scale_w = float(u.W) / float(u.OW);
  }
  return r;
}

// CPU chain: conv1x1 -> affine (folded BN) -> upsample, all NCHW fp32, returned NHWC.
std::vector<float> cpu_up_branch(const UpCase& u, const ResampleShape& r,
                                 const std::vector<float>& x, const std::vector<float>& w,
                                 const std::vector<float>& scale,
                                 const std::vector<float>& shift) {
  const ConvShape s = ConvShape::make(u.N, u.Cin, u.H, u.W, u.Cout, 1, 1, 1, 1, 0, 0);
  const auto xc = nhwc_to_nchw(x, u.N, u.Cin, u.H * u.W);
  std::vector<float> t(u.N * u.Cout * u.H * u.W), up_(u.N * u.Cout * u.OH * u.OW);
  hr::cpu::conv2d_forward(s, xc.data(), w.data(), nullptr, t.data());  // w [Cout, Cin] = KCRS
  for (int64_t n = 0; n < u.N; ++n)
    for (int64_t c = 0; c < u.Cout; ++c)
      for (int64_t i = 0; i < u.H * u.W; ++i) {
        float& v = t[(n * u.Cout + c) * u.H * u.W + i];
        v = v * scale[c] + shift[c];
      }
  if (u.mode == hr::cuda::UpMode::nearest)
    hr::cpu::upsample_nearest_forward(r, t.data(), up_.data());
  else
    hr::cpu::upsample_bilinear_forward(r, t.data(), up_.data());
  return nchw_to_nhwc(up_, u.N, u.Cout, u.OH * u.OW);
}

const UpCase kUpCases[] = {
    // HRNet-W32 at 256x192, batch 2: branch j -> branch i (nearest x2^(j-i))
    {hr::cuda::UpMode::nearest, 2, 64, 32, 24, 32, 64, 48, false},
    {hr::cuda::UpMode::nearest, 2, 128, 16, 12, 32, 64, 48, false},
    {hr::cuda::UpMode::nearest, 2, 256, 8, 6, 32, 64, 48, false},
    {hr::cuda::UpMode::nearest, 2, 256, 8, 6, 128, 16, 12, false},
    // W48
    {hr::cuda::UpMode::nearest, 2, 96, 32, 24, 48, 64, 48, false},
    {hr::cuda::UpMode::nearest, 2, 384, 8, 6, 96, 32, 24, false},
    // odd low-resolution sizes, N = 3, channel counts off the tile widths
    {hr::cuda::UpMode::nearest, 3, 24, 5, 7, 40, 10, 14, false},
    {hr::cuda::UpMode::nearest, 3, 520, 3, 5, 8, 24, 40, false},
    // seg: bilinear to an exact size, both corner conventions, odd sizes
    {hr::cuda::UpMode::bilinear, 2, 64, 32, 24, 32, 64, 48, false},
    {hr::cuda::UpMode::bilinear, 2, 128, 16, 12, 32, 64, 48, true},
    {hr::cuda::UpMode::bilinear, 3, 24, 7, 5, 16, 27, 19, false},
    {hr::cuda::UpMode::bilinear, 3, 24, 7, 5, 16, 27, 19, true},
    {hr::cuda::UpMode::bilinear, 1, 16, 4, 4, 8, 4, 4, false},
};

}  // namespace

TEST_CASE("fuse_up_conv1x1_accumulate vs conv1x1 + BN + upsample + add",
          "[gpu][fuse][quick][sanitize]") {
  const auto st = hr::cuda::default_stream();
  uint64_t seed = 9000;
  for (DT dt : {DT::bf16, DT::f16})
    for (const UpCase& u : kUpCases) {
      const ResampleShape r = resample_shape(u);
      INFO(dt_name(dt) << (u.mode == hr::cuda::UpMode::nearest ? " nearest" : " bilinear")
                       << " N" << u.N << " Cin" << u.Cin << " " << u.H << "x" << u.W << " -> "
                       << u.OH << "x" << u.OW << " Cout" << u.Cout << " ac" << u.align_corners);
      const int64_t nx = u.N * u.H * u.W * u.Cin, nw = u.Cout * u.Cin,
                    no = u.N * u.OH * u.OW * u.Cout;
      auto x = hr::test::randn(nx, seed += 10);
      auto w = hr::test::randn(nw, seed + 1, 1.f / std::sqrt(float(u.Cin)));
      auto out0 = hr::test::randn(no, seed + 2);
      auto gamma = hr::test::uniform(u.Cout, seed + 3, 0.5f, 1.5f);
      auto beta = hr::test::randn(u.Cout, seed + 4, 0.2f);
      auto mean = hr::test::randn(u.Cout, seed + 5, 0.2f);
      auto var = hr::test::uniform(u.Cout, seed + 6, 0.5f, 2.f);
      const float eps = 1e-5f;
      std::vector<float> scale(u.Cout), shift(u.Cout);
      for (int64_t c = 0; c < u.Cout; ++c) {
        scale[c] = gamma[c] / std::sqrt(var[c] + eps);
        shift[c] = beta[c] - mean[c] * scale[c];
      }
      const auto xh = round_to(dt, x), wh = round_to(dt, w), oh = round_to(dt, out0);
      Dev dx(nx * 2), dw(nw * 2), dout(no * 2), dsc(u.Cout * 4), dsh(u.Cout * 4);
      up(dx, xh);
      up(dw, wh);
      up(dout, oh);
      // scale/shift folded on the device from the BN parameters
      {
        Dev dg(u.Cout * 4), db(u.Cout * 4), dm(u.Cout * 4), dv(u.Cout * 4);
        up(dg, gamma);
        up(db, beta);
        up(dm, mean);
        up(dv, var);
        poison(dsc);
        poison(dsh);
        hr::cuda::fold_batchnorm(u.Cout, dg.as<float>(), db.as<float>(), dm.as<float>(),
                                 dv.as<float>(), eps, dsc.as<float>(), dsh.as<float>(), st);
        REQUIRE_CLOSE(down32(dsc), scale, 1e-6, 1e-5);
        REQUIRE_CLOSE(down32(dsh), shift, 1e-6, 1e-5);
      }
      REQUIRE(hr::cuda::fuse_up_conv1x1_accumulate(u.mode, dt, r, u.Cin, dx.p, dw.p,
                                                   dsc.as<float>(), dsh.as<float>(), dout.p, st));
      const auto got = to_f32(dt, down16(dout));
      auto ref = cpu_up_branch(u, r, x, w, scale, shift);
      std::vector<float> branch = ref;
      for (int64_t i = 0; i < no; ++i) ref[i] += out0[i];
      // out rounding plus the branch's own (the unfused path rounds the conv, BN and upsample
      // outputs to dt as well)
      const Tol t = tol_for(dt, ref);
      REQUIRE_CLOSE(got, ref, t.atol + (dt == DT::bf16 ? 8e-3 : 2e-3) * rms(branch), t.rtol);
    }
}

TEST_CASE("fuse_up_backward vs the CPU upsample adjoint", "[gpu][fuse][quick]") {
  const auto st = hr::cuda::default_stream();
  uint64_t seed = 12000;
  for (DT dt : {DT::bf16, DT::f16})
    for (const UpCase& u : kUpCases)
      for (bool with_scale : {true, false}) {
        const ResampleShape r = resample_shape(u);
        INFO(dt_name(dt) << (u.mode == hr::cuda::UpMode::nearest ? " nearest" : " bilinear")
                         << " " << u.H << "x" << u.W << " -> " << u.OH << "x" << u.OW << " C"
                         << u.Cout << " ac" << u.align_corners << " scale " << with_scale);
        const int64_t no = u.N * u.OH * u.OW * u.Cout, nl = u.N * u.H * u.W * u.Cout;
        auto g = hr::test::randn(no, seed += 10);
        const auto scale = hr::test::uniform(u.Cout, seed + 1, 0.5f, 1.5f);
        const auto gh = round_to(dt, g);
        Dev dg(no * 2), dl(nl * 2), dsc(u.Cout * 4), dsum(u.Cout * 4);
        up(dg, gh);
        up(dsc, scale);
        poison(dl);
        poison(dsum);
        REQUIRE(hr::cuda::fuse_up_backward(u.mode, dt, r, dg.p,
                                           with_scale ? dsc.as<float>() : nullptr, dl.p,
                                           dsum.as<float>(), st));
        const auto got = to_f32(dt, down16(dl));
        const auto gc = nhwc_to_nchw(g, u.N, u.Cout, u.OH * u.OW);
        std::vector<float> lc(nl);
        if (u.mode == hr::cuda::UpMode::nearest)
          hr::cpu::upsample_nearest_backward(r, gc.data(), lc.data());
        else
          hr::cpu::upsample_bilinear_backward(r, gc.data(), lc.data());
        auto ref = nchw_to_nhwc(lc, u.N, u.Cout, u.H * u.W);
        if (with_scale)
          for (int64_t i = 0; i < nl; ++i) ref[i] *= scale[i % u.Cout];
        const Tol t = tol_for(dt, ref);
        REQUIRE_CLOSE(got, ref, t.atol, t.rtol);
        std::vector<float> ref_sum(u.Cout);
        for (int64_t c = 0; c < u.Cout; ++c) {
          double a = 0;
          for (int64_t i = 0; i < u.N * u.OH * u.OW; ++i) a += g[i * u.Cout + c];
          ref_sum[c] = float(a);
        }
        REQUIRE_CLOSE(down32(dsum), ref_sum, 1e-4 * rms(ref_sum) + 1e-4, 1e-4);
      }
}

TEST_CASE("fused upsample path vs the unfused GPU fallback", "[gpu][fuse]") {
  const auto st = hr::cuda::default_stream();
  uint64_t seed = 15000;
  for (DT dt : {DT::bf16, DT::f16})
    for (const UpCase& u : kUpCases) {
      const ResampleShape r = resample_shape(u);
      INFO(dt_name(dt) << (u.mode == hr::cuda::UpMode::nearest ? " nearest" : " bilinear")
                       << " " << u.H << "x" << u.W << " -> " << u.OH << "x" << u.OW);
      const int64_t nx = u.N * u.H * u.W * u.Cin, nw = u.Cout * u.Cin,
                    no = u.N * u.OH * u.OW * u.Cout;
      auto x = hr::test::randn(nx, seed += 10);
      auto w = hr::test::randn(nw, seed + 1, 1.f / std::sqrt(float(u.Cin)));
      auto out0 = hr::test::randn(no, seed + 2);
      auto gamma = hr::test::uniform(u.Cout, seed + 3, 0.5f, 1.5f);
      auto beta = hr::test::randn(u.Cout, seed + 4, 0.2f);
      auto mean = hr::test::randn(u.Cout, seed + 5, 0.2f);
      auto var = hr::test::uniform(u.Cout, seed + 6, 0.5f, 2.f);
      const auto xh = round_to(dt, x), wh = round_to(dt, w), oh = round_to(dt, out0);
      Dev dx(nx * 2), dw(nw * 2), d_fused(no * 2), d_unfused(no * 2), dg(u.Cout * 4),
          db(u.Cout * 4), dm(u.Cout * 4), dv(u.Cout * 4), dsc(u.Cout * 4), dsh(u.Cout * 4);
      up(dx, xh);
      up(dw, wh);
      up(d_fused, oh);
      up(d_unfused, oh);
      up(dg, gamma);
      up(db, beta);
      up(dm, mean);
      up(dv, var);
      hr::cuda::fold_batchnorm(u.Cout, dg.as<float>(), db.as<float>(), dm.as<float>(),
                               dv.as<float>(), 1e-5f, dsc.as<float>(), dsh.as<float>(), st);
      REQUIRE(hr::cuda::fuse_up_conv1x1_accumulate(u.mode, dt, r, u.Cin, dx.p, dw.p,
                                                   dsc.as<float>(), dsh.as<float>(), d_fused.p,
                                                   st));
      hr::cuda::fuse_up_conv1x1_accumulate_unfused(u.mode, dt, r, u.Cin, dx.p, dw.p,
                                                   dg.as<float>(), db.as<float>(), dm.as<float>(),
                                                   dv.as<float>(), 1e-5f, d_unfused.p, st);
      const auto a = to_f32(dt, down16(d_fused)), b = to_f32(dt, down16(d_unfused));
      // both round the final sum; the unfused path also rounds conv, BN and upsample outputs
      const double rt = dt == DT::bf16 ? 2e-2 : 4e-3;
      REQUIRE_CLOSE(a, b, rt * rms(b), rt);
    }
}
