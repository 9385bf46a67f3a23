// CPU kernels other than conv2d: each forward is compared with naive double-precision loops
// written here, each backward with the same and with central finite differences of
// sum(forward(x) * r) in double; optimizers against a double re-implementation of the torch.optim
// formulas; dtype conversions against exhaustive / nearest-value references.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "engine/error.h"
#include "kernels/cpu/cpu_kernels.h"
#include "test_util.h"

using hr::test::randn;
using hr::test::uniform;
using std::vector;
namespace cpu = hr::cpu;
namespace kern = hr::kern;

namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();

vector<float> to_float(const vector<double>& v) { return vector<float>(v.begin(), v.end()); }

double dot(const vector<float>& a, const vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * double(b[i]);
  return s;
}

// Central differences of loss() with respect to x at up to `samples` coordinates (spread over
// x, skipping those `skip` rejects), compared with the analytic gradient at the same coordinates.
void check_fd(const char* what, vector<float>& x, const vector<float>& analytic,
              const std::function<double()>& loss, float h, double atol, double rtol,
              size_t samples = 40, const std::function<bool(size_t)>& skip = nullptr) {
  REQUIRE(x.size() == analytic.size());
  vector<float> fd, an;
  const size_t stride = std::max<size_t>(1, x.size() / samples);
  for (size_t i = (x.size() > samples ? stride / 2 : 0); i < x.size(); i += stride) {
    if (skip && skip(i)) continue;
    const float xi = x[i];
    const float xp = xi + h, xm = xi - h;
    x[i] = xp;
    const double lp = loss();
    x[i] = xm;
    const double lm = loss();
    x[i] = xi;
    fd.push_back(float((lp - lm) / (double(xp) - double(xm))));
    an.push_back(analytic[i]);
  }
  INFO(what);
  REQUIRE(fd.size() >= std::min<size_t>(samples, x.size()) / 2);
  REQUIRE_CLOSE(an, fd, atol, rtol);
}

// ---------------------------------------------------------------- batch norm references
struct BnRef {
  vector<double> y, mean, invstd, rm, rv;
};

BnRef bn_train_ref(int64_t N, int64_t C, int64_t HW, const vector<float>& x,
                   const vector<float>& g, const vector<float>& b, double eps, double mom,
                   const vector<float>& rm, const vector<float>& rv) {
  BnRef r;
  r.y.resize(x.size());
  const double n = double(N * HW);
  for (int64_t c = 0; c < C; ++c) {
    double s = 0;
    for (int64_t k = 0; k < N; ++k)
      for (int64_t i = 0; i < HW; ++i) s += x[(k * C + c) * HW + i];
    const double mean = s / n;
    double v = 0;
    for (int64_t k = 0; k < N; ++k)
      for (int64_t i = 0; i < HW; ++i) {
        const double d = x[(k * C + c) * HW + i] - mean;
        v += d * d;
      }
    v /= n;
    const double is = 1.0 / std::sqrt(v + eps);
    for (int64_t k = 0; k < N; ++k)
      for (int64_t i = 0; i < HW; ++i) {
        const int64_t j = (k * C + c) * HW + i;
        r.y[j] = (x[j] - mean) * is * g[c] + b[c];
      }
    r.mean.push_back(mean);
    r.invstd.push_back(is);
    r.rm.push_back((1 - mom) * rm[c] + mom * mean);
    r.rv.push_back((1 - mom) * rv[c] + mom * v * n / (n - 1));
  }
  return r;
}

// dx, dgamma, dbeta of training-mode batch norm from x, dy and the saved statistics.
void bn_train_bwd_ref(int64_t N, int64_t C, int64_t HW, const vector<float>& x,
                      const vector<float>& dy, const vector<float>& g, const vector<float>& mean,
                      const vector<float>& invstd, vector<double>& dx, vector<double>& dg,
                      vector<double>& db) {
  dx.assign(x.size(), 0);
  dg.assign(C, 0);
  db.assign(C, 0);
  const double n = double(N * HW);
  for (int64_t c = 0; c < C; ++c) {
    double sdy = 0, sdyxh = 0;
    for (int64_t k = 0; k < N; ++k)
      for (int64_t i = 0; i < HW; ++i) {
        const int64_t j = (k * C + c) * HW + i;
        sdy += dy[j];
        sdyxh += dy[j] * (x[j] - double(mean[c])) * invstd[c];
      }
    dg[c] = sdyxh;
    db[c] = sdy;
    for (int64_t k = 0; k < N; ++k)
      for (int64_t i = 0; i < HW; ++i) {
        const int64_t j = (k * C + c) * HW + i;
        const double xh = (x[j] - double(mean[c])) * invstd[c];
        dx[j] = double(invstd[c]) * g[c] / n * (n * dy[j] - sdy - xh * sdyxh);
      }
  }
}

struct BnCase {
  int64_t N, C, HW;
};

}  // namespace

TEST_CASE("batchnorm train forward/backward vs double reference", "[cpu][batchnorm]") {
  for (BnCase t : {BnCase{2, 3, 5}, BnCase{3, 4, 63}, BnCase{1, 2, 2}, BnCase{4, 16, 97},
                   BnCase{5, 1, 1}}) {
    CAPTURE(t.N, t.C, t.HW);
    const size_t n = size_t(t.N * t.C * t.HW);
    auto x = randn(n, 1, 2.f, 0.5f), dy = randn(n, 2);
    auto g = uniform(t.C, 3, 0.5f, 1.5f), b = randn(t.C, 4);
    auto rm = randn(t.C, 5), rv = uniform(t.C, 6, 0.5f, 2.f);
    const float eps = 1e-5f, mom = 0.1f;
    BnRef ref = bn_train_ref(t.N, t.C, t.HW, x, g, b, eps, mom, rm, rv);

    vector<float> y(n, kNaN), sm(t.C, kNaN), si(t.C, kNaN), rm2 = rm, rv2 = rv;
    cpu::batchnorm_train_forward(t.N, t.C, t.HW, x.data(), g.data(), b.data(), eps, mom,
                                 rm2.data(), rv2.data(), y.data(), sm.data(), si.data());
    REQUIRE_CLOSE(y, to_float(ref.y), 1e-5, 1e-5);
    REQUIRE_CLOSE(sm, to_float(ref.mean), 1e-6, 1e-6);
    REQUIRE_CLOSE(si, to_float(ref.invstd), 1e-6, 1e-6);
    REQUIRE_CLOSE(rm2, to_float(ref.rm), 1e-6, 1e-6);
    REQUIRE_CLOSE(rv2, to_float(ref.rv), 1e-6, 1e-6);

    // Running statistics may be absent.
    vector<float> y2(n, kNaN);
    cpu::batchnorm_train_forward(t.N, t.C, t.HW, x.data(), g.data(), b.data(), eps, mom, nullptr,
                                 nullptr, y2.data(), sm.data(), si.data());
    REQUIRE_CLOSE(y2, y, 0, 0);

    vector<double> dxr, dgr, dbr;
    bn_train_bwd_ref(t.N, t.C, t.HW, x, dy, g, sm, si, dxr, dgr, dbr);
    vector<float> dx(n, kNaN), dg(t.C, kNaN), db(t.C, kNaN);
    cpu::batchnorm_train_backward(t.N, t.C, t.HW, x.data(), dy.data(), g.data(), sm.data(),
                                  si.data(), dx.data(), dg.data(), db.data());
    REQUIRE_CLOSE(dx, to_float(dxr), 1e-5, 1e-4);
    REQUIRE_CLOSE(dg, to_float(dgr), 1e-5, 1e-5);
    REQUIRE_CLOSE(db, to_float(dbr), 1e-5, 1e-5);

    // Each output is optional.
    vector<float> dx2(n, kNaN), dg2(t.C, kNaN);
    cpu::batchnorm_train_backward(t.N, t.C, t.HW, x.data(), dy.data(), g.data(), sm.data(),
                                  si.data(), dx2.data(), nullptr, nullptr);
    REQUIRE_CLOSE(dx2, dx, 0, 0);
    cpu::batchnorm_train_backward(t.N, t.C, t.HW, x.data(), dy.data(), g.data(), sm.data(),
                                  si.data(), nullptr, dg2.data(), nullptr);
    REQUIRE_CLOSE(dg2, dg, 0, 0);
  }
}

TEST_CASE("batchnorm train statistics keep precision under a large offset", "[cpu][batchnorm]") {
  const int64_t N = 4, C = 3, HW = 257;
  const size_t n = size_t(N * C * HW);
  auto x = randn(n, 11, 1.f, 10000.f);  // mean 1e4, std 1: E[x^2] - E[x]^2 in float is useless
  vector<float> g = {1.f, 0.7f, 1.3f}, b = {0.f, 0.2f, -0.1f}, rm(C, 0.f), rv(C, 1.f);
  BnRef ref = bn_train_ref(N, C, HW, x, g, b, 1e-5, 0.1, rm, rv);
  vector<float> y(n), sm(C), si(C);
  cpu::batchnorm_train_forward(N, C, HW, x.data(), g.data(), b.data(), 1e-5f, 0.1f, rm.data(),
                               rv.data(), y.data(), sm.data(), si.data());
  REQUIRE_CLOSE(si, to_float(ref.invstd), 0, 1e-6);
  REQUIRE_CLOSE(sm, to_float(ref.mean), 0, 1e-7);
  REQUIRE_CLOSE(rv, to_float(ref.rv), 0, 1e-6);
  REQUIRE_CLOSE(y, to_float(ref.y), 2e-5, 1e-5);
}

TEST_CASE("batchnorm train forward rejects one value per channel", "[cpu][batchnorm]") {
  vector<float> x = {1.f, 2.f}, g = {1.f, 1.f}, b = {0.f, 0.f}, y(2), sm(2), si(2);
  REQUIRE_THROWS_WITH(cpu::batchnorm_train_forward(1, 2, 1, x.data(), g.data(), b.data(), 1e-5f,
                                                   0.1f, nullptr, nullptr, y.data(), sm.data(),
                                                   si.data()),
                      Catch::Contains("batchnorm_train_forward"));
}

TEST_CASE("batchnorm train backward vs finite differences", "[cpu][batchnorm][grad]") {
  const int64_t N = 2, C = 3, HW = 7;
  const size_t n = size_t(N * C * HW);
  auto x = randn(n, 21, 1.5f, 0.3f), r = randn(n, 22);
  auto g = uniform(C, 23, 0.5f, 1.5f), b = randn(C, 24);
  vector<float> y(n), sm(C), si(C);
  auto loss = [&]() {
    cpu::batchnorm_train_forward(N, C, HW, x.data(), g.data(), b.data(), 1e-5f, 0.1f, nullptr,
                                 nullptr, y.data(), sm.data(), si.data());
    return dot(y, r);
  };
  loss();
  vector<float> dx(n), dg(C), db(C);
  cpu::batchnorm_train_backward(N, C, HW, x.data(), r.data(), g.data(), sm.data(), si.data(),
                                dx.data(), dg.data(), db.data());
  check_fd("bn train dx", x, dx, loss, 1e-2f, 2e-4, 1e-2, 42);
  check_fd("bn train dgamma", g, dg, loss, 1e-2f, 2e-4, 1e-2);
  check_fd("bn train dbeta", b, db, loss, 1e-2f, 2e-4, 1e-2);
}

TEST_CASE("batchnorm inference forward/backward", "[cpu][batchnorm][grad]") {
  for (BnCase t : {BnCase{2, 3, 7}, BnCase{3, 16, 90}, BnCase{1, 1, 1}}) {
    CAPTURE(t.N, t.C, t.HW);
    const size_t n = size_t(t.N * t.C * t.HW);
    auto x = randn(n, 31, 1.5f, 0.2f), dy = randn(n, 32);
    auto g = uniform(t.C, 33, 0.5f, 1.5f), b = randn(t.C, 34);
    auto rm = randn(t.C, 35), rv = uniform(t.C, 36, 0.3f, 2.f);
    const float eps = 1e-3f;
    vector<double> yr(n), dxr(n), dgr(t.C, 0), dbr(t.C, 0);
    for (int64_t k = 0; k < t.N; ++k)
      for (int64_t c = 0; c < t.C; ++c)
        for (int64_t i = 0; i < t.HW; ++i) {
          const int64_t j = (k * t.C + c) * t.HW + i;
          const double is = 1.0 / std::sqrt(double(rv[c]) + eps);
          const double xh = (x[j] - double(rm[c])) * is;
          yr[j] = xh * g[c] + b[c];
          dxr[j] = double(dy[j]) * g[c] * is;
          dgr[c] += dy[j] * xh;
          dbr[c] += dy[j];
        }
    vector<float> y(n, kNaN), dx(n, kNaN), dg(t.C, kNaN), db(t.C, kNaN);
    cpu::batchnorm_infer_forward(t.N, t.C, t.HW, x.data(), g.data(), b.data(), rm.data(),
                                 rv.data(), eps, y.data());
    REQUIRE_CLOSE(y, to_float(yr), 1e-6, 1e-5);
    cpu::batchnorm_infer_backward(t.N, t.C, t.HW, x.data(), dy.data(), g.data(), rm.data(),
                                  rv.data(), eps, dx.data(), dg.data(), db.data());
    REQUIRE_CLOSE(dx, to_float(dxr), 1e-6, 1e-5);
    REQUIRE_CLOSE(dg, to_float(dgr), 1e-5, 1e-5);
    REQUIRE_CLOSE(db, to_float(dbr), 1e-5, 1e-5);
    vector<float> dg2(t.C, kNaN);
    cpu::batchnorm_infer_backward(t.N, t.C, t.HW, x.data(), dy.data(), g.data(), rm.data(),
                                  rv.data(), eps, nullptr, dg2.data(), nullptr);
    REQUIRE_CLOSE(dg2, dg, 0, 0);

    if (t.C == 3) {
      auto loss = [&]() {
        cpu::batchnorm_infer_forward(t.N, t.C, t.HW, x.data(), g.data(), b.data(), rm.data(),
                                     rv.data(), eps, y.data());
        return dot(y, dy);
      };
      check_fd("bn infer dx", x, dx, loss, 1e-2f, 1e-4, 1e-3);
      check_fd("bn infer dgamma", g, dg, loss, 1e-2f, 1e-4, 1e-3);
      check_fd("bn infer dbeta", b, db, loss, 1e-2f, 1e-4, 1e-3);
    }
  }
}

// ---------------------------------------------------------------- element-wise
TEST_CASE("element-wise kernels", "[cpu][elementwise][grad]") {
  for (int64_t n : {int64_t(1), int64_t(13), int64_t(1000), int64_t(70001)}) {
    CAPTURE(n);
    auto a = randn(n, 41), b = randn(n, 42), dy = randn(n, 43);
    vector<float> y(n, kNaN), ref(n);

    cpu::relu_forward(n, a.data(), y.data());
    for (int64_t i = 0; i < n; ++i) ref[i] = a[i] > 0 ? a[i] : 0.f;
    REQUIRE_CLOSE(y, ref, 0, 0);
    vector<float> dx(n, kNaN);
    cpu::relu_backward(n, y.data(), dy.data(), dx.data());
    for (int64_t i = 0; i < n; ++i) ref[i] = a[i] > 0 ? dy[i] : 0.f;
    REQUIRE_CLOSE(dx, ref, 0, 0);

    cpu::add(n, a.data(), b.data(), y.data());
    for (int64_t i = 0; i < n; ++i) ref[i] = float(double(a[i]) + b[i]);
    REQUIRE_CLOSE(y, ref, 0, 0);

    y = b;
    cpu::axpy(n, -0.75f, a.data(), y.data());
    for (int64_t i = 0; i < n; ++i) ref[i] = float(double(b[i]) - 0.75 * a[i]);
    REQUIRE_CLOSE(y, ref, 1e-6, 1e-6);

    cpu::scale(n, 3.25f, a.data(), y.data());
    for (int64_t i = 0; i < n; ++i) ref[i] = float(3.25 * a[i]);
    REQUIRE_CLOSE(y, ref, 0, 0);

    cpu::fill(n, -2.5f, y.data());
    REQUIRE_CLOSE(y, vector<float>(n, -2.5f), 0, 0);

    if (n == 1000) {
      auto loss = [&]() {
        vector<float> yy(n);
        cpu::relu_forward(n, a.data(), yy.data());
        return dot(yy, dy);
      };
      // Skip coordinates within h of the kink.
      check_fd("relu dx", a, dx, loss, 1e-2f, 1e-5, 1e-4, 60,
               [&](size_t i) { return std::fabs(a[i]) < 2e-2f; });
    }
  }
  vector<float> special = {kNaN, -0.f, 0.f, -INFINITY, INFINITY}, y(5);
  cpu::relu_forward(5, special.data(), y.data());
  REQUIRE(std::isnan(y[0]));  // as torch.relu
  REQUIRE(y[3] == 0.f);
  REQUIRE(y[4] == INFINITY);
}

// ---------------------------------------------------------------- resampling
namespace {

// ResampleShape as the engine fills it (PyTorch area_pixel_compute_scale): scale_factor sf > 0
// means "given", in which case the output size is floor(in * sf).
kern::ResampleShape resample_shape(int64_t N, int64_t C, int64_t H, int64_t W, int64_t OH,
                                   int64_t OW, bool align, double sf_h = 0, double sf_w = 0) {
  kern::ResampleShape s;
  s.N = N, s.C = C, s.H = H, s.W = W;
  s.OH = sf_h > 0 ? int64_t(std::floor(H * sf_h)) : OH;
  s.OW = sf_w > 0 ? int64_t(std::floor(W * sf_w)) : OW;
  s.align_corners = align;
  auto scale = [&](int64_t in, int64_t out, double sf) {
    if (align) return out > 1 ? float(in - 1) / float(out - 1) : 0.f;
    return sf > 0 ? float(1.0 / sf) : float(in) / float(out);
  };
  s.scale_h = scale(H, s.OH, sf_h);
  s.scale_w = scale(W, s.OW, sf_w);
  return s;
}

// PyTorch's 1-D source index for mode='nearest' (the product is rounded to float).
int64_t ref_nearest(int64_t o, int64_t in, float scale) {
  const float src = float(o) * scale;
  return std::min<int64_t>(int64_t(std::floor(src)), in - 1);
}

// PyTorch's 1-D bilinear taps: equal sizes copy; otherwise the source coordinate of the float
// scale, taken exactly.
void ref_linear(int64_t o, int64_t in, int64_t out, float scale, bool align, int64_t& i0,
                int64_t& i1, double& l0, double& l1) {
  if (out == in) {
    i0 = i1 = o;
    l0 = 1, l1 = 0;
    return;
  }
  double src = align ? double(scale) * o : double(scale) * (o + 0.5) - 0.5;
  if (src < 0) src = 0;
  i0 = int64_t(src);
  i1 = i0 < in - 1 ? i0 + 1 : i0;
  l1 = src - double(i0);
  l0 = 1 - l1;
}

void resample_ref(const kern::ResampleShape& s, bool bilinear, const vector<float>& x,
                  const vector<float>& dy, vector<double>& y, vector<double>& dx) {
  y.assign(size_t(s.N * s.C * s.OH * s.OW), 0);
  dx.assign(size_t(s.N * s.C * s.H * s.W), 0);
  for (int64_t p = 0; p < s.N * s.C; ++p)
    for (int64_t oh = 0; oh < s.OH; ++oh)
      for (int64_t ow = 0; ow < s.OW; ++ow) {
        const int64_t o = (p * s.OH + oh) * s.OW + ow;
        if (!bilinear) {
          const int64_t j = (p * s.H + ref_nearest(oh, s.H, s.scale_h)) * s.W +
                            ref_nearest(ow, s.W, s.scale_w);
          y[o] = x[j];
          dx[j] += dy[o];
          continue;
        }
        int64_t h0, h1, w0, w1;
        double a0, a1, b0, b1;
        ref_linear(oh, s.H, s.OH, s.scale_h, s.align_corners, h0, h1, a0, a1);
        ref_linear(ow, s.W, s.OW, s.scale_w, s.align_corners, w0, w1, b0, b1);
        const int64_t hs[2] = {h0, h1}, ws[2] = {w0, w1};
        const double as[2] = {a0, a1}, bs[2] = {b0, b1};
        for (int u = 0; u < 2; ++u)
          for (int v = 0; v < 2; ++v) {
            const int64_t j = (p * s.H + hs[u]) * s.W + ws[v];
            y[o] += as[u] * bs[v] * x[j];
            dx[j] += as[u] * bs[v] * dy[o];
          }
      }
}

struct ResampleCase {
  int64_t N, C, H, W, OH, OW;
  double sf_h, sf_w;
};

}  // namespace

TEST_CASE("upsample nearest/bilinear vs double reference and finite differences",
          "[cpu][resample][grad]") {
  const ResampleCase cases[] = {
      {2, 3, 5, 7, 13, 9, 0, 0},     // odd, non-integer up
      {1, 2, 8, 6, 16, 12, 0, 0},    // x2
      {1, 2, 3, 5, 12, 20, 0, 0},    // x4
      {2, 2, 8, 10, 4, 5, 0, 0},     // x0.5
      {1, 3, 4, 6, 6, 9, 0, 0},      // x1.5
      {1, 2, 7, 9, 3, 4, 0, 0},      // non-integer down
      {2, 2, 5, 7, 1, 1, 0, 0},      // output size 1
      {1, 2, 1, 1, 4, 3, 0, 0},      // input size 1
      {1, 2, 5, 7, 5, 7, 0, 0},      // identity
      {1, 2, 3, 5, 0, 0, 1.2, 2.1},  // scale_factor given: 3 -> 3, 5 -> 10
      {1, 1, 6, 4, 0, 0, 0.7, 1.6},  // scale_factor given, non-integer
      {2, 8, 32, 24, 64, 48, 0, 0},  // large enough for the threaded path
      {1, 1, 3, 300, 5, 1000, 0, 0}, // long axis: the source coordinate needs more than float
  };
  for (const auto& t : cases) {
    for (int mode = 0; mode < 3; ++mode) {  // nearest, bilinear, bilinear align_corners
      const bool bilinear = mode > 0, align = mode == 2;
      auto s = resample_shape(t.N, t.C, t.H, t.W, t.OH, t.OW, align, t.sf_h, t.sf_w);
      CAPTURE(mode, s.N, s.C, s.H, s.W, s.OH, s.OW, s.scale_h, s.scale_w);
      const size_t nx = size_t(s.N * s.C * s.H * s.W), ny = size_t(s.N * s.C * s.OH * s.OW);
      auto x = randn(nx, 51), dy = randn(ny, 52);
      vector<double> yr, dxr;
      resample_ref(s, bilinear, x, dy, yr, dxr);
      vector<float> y(ny, kNaN), dx(nx, kNaN);
      auto fwd = [bilinear](const kern::ResampleShape& sh, const float* in, float* out) {
        if (bilinear)
          cpu::upsample_bilinear_forward(sh, in, out);
        else
          cpu::upsample_nearest_forward(sh, in, out);
      };
      auto bwd = bilinear ? cpu::upsample_bilinear_backward : cpu::upsample_nearest_backward;
      fwd(s, x.data(), y.data());
      bwd(s, dy.data(), dx.data());
      REQUIRE_CLOSE(y, to_float(yr), 1e-6, 2e-6);
      REQUIRE_CLOSE(dx, to_float(dxr), 1e-5, 1e-5);
      if (!bilinear) {  // y = r + up(x) in the same pass: every element the float sum r + y
        const auto r = randn(ny, 53);
        vector<float> ya(ny, kNaN);
        cpu::upsample_nearest_forward(s, x.data(), ya.data(), r.data());
        for (size_t i = 0; i < ny; ++i) REQUIRE(ya[i] == r[i] + y[i]);
      }
      auto loss = [&]() {
        fwd(s, x.data(), y.data());
        return dot(y, dy);
      };
      check_fd("upsample dx", x, dx, loss, 5e-2f, 1e-4, 1e-4, 30);
    }
  }
}

TEST_CASE("upsample indices equal PyTorch 1.13", "[cpu][resample]") {
  // F.interpolate(torch.arange(in).view(1,1,1,in).repeat(2,3,1,1), ...) along W, printed by
  // PyTorch 1.13: the output is the source index (nearest) or the interpolated source position
  // (bilinear). With a scale_factor, nearest follows floor(o * float(1/sf)) even where the sizes
  // are equal or doubled (PyTorch's backward and its C == 1 forward copy / halve there instead).
  struct Golden {
    int64_t in, out;
    double sf;
    int mode;  // 0 nearest, 1 bilinear, 2 bilinear align_corners
    vector<float> y;
  };
  const Golden golden[] = {
      {5, 13, 0, 0, {0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4}},
      {7, 9, 0, 0, {0, 0, 1, 2, 3, 3, 4, 5, 6}},
      {3, 0, 1.2, 0, {0, 0, 1}},
      {5, 0, 2.1, 0, {0, 0, 0, 1, 1, 2, 2, 3, 3, 4}},
      {8, 4, 0, 0, {0, 2, 4, 6}},
      {4, 6, 0, 0, {0, 0, 1, 2, 2, 3}},
      {6, 4, 0, 0, {0, 1, 3, 4}},
      {7, 3, 0, 0, {0, 2, 4}},
      {5, 13, 0, 1, {0, 0.0769230872f, 0.461538494f, 0.846153855f, 1.23076928f, 1.61538458f, 2,
                     2.38461542f, 2.76923084f, 3.15384626f, 3.53846169f, 3.92307711f, 4}},
      {5, 13, 0, 2, {0, 0.333333343f, 0.666666687f, 1, 1.33333337f, 1.66666675f, 2, 2.33333349f,
                     2.66666675f, 3, 3.33333349f, 3.66666675f, 4}},
      {7, 9, 0, 1, {0, 0.666666687f, 1.44444442f, 2.22222233f, 3, 3.77777791f, 4.55555534f,
                    5.33333349f, 6}},
      {8, 4, 0, 1, {0.5f, 2.5f, 4.5f, 6.5f}},
      {8, 4, 0, 2, {0, 2.33333325f, 4.66666651f, 6.99999952f}},
      {4, 6, 0, 1, {0, 0.5f, 1.16666675f, 1.83333337f, 2.5f, 3}},
      {3, 0, 1.2, 1, {0, 1, 2}},
      {5, 1, 0, 1, {2}},
      {5, 1, 0, 2, {0}},
      {1, 4, 0, 1, {0, 0, 0, 0}},
      {1, 4, 0, 2, {0, 0, 0, 0}},
      {7, 3, 0, 1, {0.666666627f, 2.99999976f, 5.33333302f}},
      {6, 0, 0.7, 1, {0.214285731f, 1.64285719f, 3.07142878f, 4.5f}},
  };
  for (const auto& g : golden) {
    CAPTURE(g.in, g.out, g.sf, g.mode);
    auto s = resample_shape(1, 1, 1, g.in, 1, g.out, g.mode == 2, 0, g.sf);
    REQUIRE(s.OW == int64_t(g.y.size()));
    vector<float> x(g.in), y(s.OW, kNaN);
    for (int64_t i = 0; i < g.in; ++i) x[i] = float(i);
    if (g.mode == 0)
      cpu::upsample_nearest_forward(s, x.data(), y.data());
    else
      cpu::upsample_bilinear_forward(s, x.data(), y.data());
    REQUIRE_CLOSE(y, g.y, 1e-6, 1e-6);
  }
}

// ---------------------------------------------------------------- pooling
namespace {

kern::PoolShape pool_shape(int64_t N, int64_t C, int64_t H, int64_t W, int64_t k, int64_t st,
                           int64_t pad, bool include_pad) {
  kern::PoolShape s;
  s.N = N, s.C = C, s.H = H, s.W = W;
  s.kh = s.kw = k;
  s.stride_h = s.stride_w = st;
  s.pad_h = s.pad_w = pad;
  s.OH = (H + 2 * pad - k) / st + 1;
  s.OW = (W + 2 * pad - k) / st + 1;
  s.count_include_pad = include_pad;
  return s;
}

}  // namespace

TEST_CASE("avgpool2d vs double reference and finite differences", "[cpu][pool][grad]") {
  struct Case {
    int64_t N, C, H, W, k, st, pad;
  };
  const Case cases[] = {{2, 3, 7, 9, 3, 2, 1}, {1, 2, 8, 8, 2, 2, 0}, {1, 3, 5, 6, 3, 1, 1},
                        {2, 2, 9, 7, 4, 3, 2}, {1, 1, 1, 1, 1, 1, 0}, {2, 8, 33, 31, 3, 2, 1}};
  for (const auto& t : cases)
    for (bool include_pad : {true, false}) {
      auto s = pool_shape(t.N, t.C, t.H, t.W, t.k, t.st, t.pad, include_pad);
      CAPTURE(t.N, t.C, t.H, t.W, t.k, t.st, t.pad, include_pad);
      const size_t nx = size_t(s.N * s.C * s.H * s.W), ny = size_t(s.N * s.C * s.OH * s.OW);
      auto x = randn(nx, 61), dy = randn(ny, 62);
      vector<double> yr(ny, 0), dxr(nx, 0);
      for (int64_t p = 0; p < s.N * s.C; ++p)
        for (int64_t oh = 0; oh < s.OH; ++oh)
          for (int64_t ow = 0; ow < s.OW; ++ow) {
            double sum = 0;
            int64_t inside = 0, padded = 0;
            for (int64_t i = 0; i < s.kh; ++i)
              for (int64_t j = 0; j < s.kw; ++j) {
                const int64_t h = oh * s.stride_h - s.pad_h + i, w = ow * s.stride_w - s.pad_w + j;
                if (h < s.H + s.pad_h && w < s.W + s.pad_w) ++padded;
                if (h >= 0 && h < s.H && w >= 0 && w < s.W) {
                  ++inside;
                  sum += x[(p * s.H + h) * s.W + w];
                }
              }
            const double div = include_pad ? padded : inside;
            const int64_t o = (p * s.OH + oh) * s.OW + ow;
            yr[o] = sum / div;
            for (int64_t i = 0; i < s.kh; ++i)
              for (int64_t j = 0; j < s.kw; ++j) {
                const int64_t h = oh * s.stride_h - s.pad_h + i, w = ow * s.stride_w - s.pad_w + j;
                if (h >= 0 && h < s.H && w >= 0 && w < s.W)
                  dxr[(p * s.H + h) * s.W + w] += dy[o] / div;
              }
          }
      vector<float> y(ny, kNaN), dx(nx, kNaN);
      cpu::avgpool2d_forward(s, x.data(), y.data());
      cpu::avgpool2d_backward(s, dy.data(), dx.data());
      REQUIRE_CLOSE(y, to_float(yr), 1e-6, 1e-5);
      REQUIRE_CLOSE(dx, to_float(dxr), 1e-6, 1e-5);
      auto loss = [&]() {
        cpu::avgpool2d_forward(s, x.data(), y.data());
        return dot(y, dy);
      };
      check_fd("avgpool dx", x, dx, loss, 5e-2f, 1e-4, 1e-4, 30);
    }
}

TEST_CASE("global avgpool vs double reference and finite differences", "[cpu][pool][grad]") {
  for (BnCase t : {BnCase{2, 3, 7}, BnCase{1, 1, 1}, BnCase{4, 64, 49}}) {
    CAPTURE(t.N, t.C, t.HW);
    const size_t nx = size_t(t.N * t.C * t.HW), ny = size_t(t.N * t.C);
    auto x = randn(nx, 71), dy = randn(ny, 72);
    vector<double> yr(ny, 0), dxr(nx);
    for (size_t p = 0; p < ny; ++p) {
      for (int64_t i = 0; i < t.HW; ++i) yr[p] += x[p * t.HW + i];
      yr[p] /= double(t.HW);
      for (int64_t i = 0; i < t.HW; ++i) dxr[p * t.HW + i] = dy[p] / double(t.HW);
    }
    vector<float> y(ny, kNaN), dx(nx, kNaN);
    cpu::global_avgpool_forward(t.N, t.C, t.HW, x.data(), y.data());
    cpu::global_avgpool_backward(t.N, t.C, t.HW, dy.data(), dx.data());
    REQUIRE_CLOSE(y, to_float(yr), 1e-6, 1e-6);
    REQUIRE_CLOSE(dx, to_float(dxr), 1e-7, 1e-6);
    auto loss = [&]() {
      cpu::global_avgpool_forward(t.N, t.C, t.HW, x.data(), y.data());
      return dot(y, dy);
    };
    check_fd("global avgpool dx", x, dx, loss, 5e-2f, 1e-5, 1e-4, 30);
  }
}

// ---------------------------------------------------------------- linear
TEST_CASE("linear vs double reference and finite differences", "[cpu][linear][grad]") {
  struct Case {
    int64_t M, I, O;
  };
  for (Case t : {Case{1, 1, 1}, Case{3, 5, 7}, Case{8, 37, 11}, Case{32, 300, 129}}) {
    CAPTURE(t.M, t.I, t.O);
    auto x = randn(t.M * t.I, 81), w = randn(t.O * t.I, 82, 0.2f), bias = randn(t.O, 83),
         dy = randn(t.M * t.O, 84);
    vector<double> yr(t.M * t.O), dxr(t.M * t.I, 0), dwr(t.O * t.I, 0), dbr(t.O, 0);
    for (int64_t m = 0; m < t.M; ++m)
      for (int64_t o = 0; o < t.O; ++o) {
        double s = bias[o];
        for (int64_t i = 0; i < t.I; ++i) {
          s += double(x[m * t.I + i]) * w[o * t.I + i];
          dxr[m * t.I + i] += double(dy[m * t.O + o]) * w[o * t.I + i];
          dwr[o * t.I + i] += double(dy[m * t.O + o]) * x[m * t.I + i];
        }
        yr[m * t.O + o] = s;
        dbr[o] += dy[m * t.O + o];
      }
    vector<float> y(t.M * t.O, kNaN), dx(t.M * t.I, kNaN), dw(t.O * t.I, kNaN), db(t.O, kNaN);
    cpu::linear_forward(t.M, t.I, t.O, x.data(), w.data(), bias.data(), y.data());
    REQUIRE_CLOSE(y, to_float(yr), 1e-5, 1e-5);
    vector<float> y0(t.M * t.O, kNaN), y0r(t.M * t.O);
    cpu::linear_forward(t.M, t.I, t.O, x.data(), w.data(), nullptr, y0.data());
    for (size_t i = 0; i < y0r.size(); ++i) y0r[i] = float(yr[i] - bias[i % t.O]);
    REQUIRE_CLOSE(y0, y0r, 1e-5, 1e-5);
    cpu::linear_backward(t.M, t.I, t.O, x.data(), w.data(), dy.data(), dx.data(), dw.data(),
                         db.data());
    REQUIRE_CLOSE(dx, to_float(dxr), 1e-5, 1e-5);
    REQUIRE_CLOSE(dw, to_float(dwr), 1e-5, 1e-5);
    REQUIRE_CLOSE(db, to_float(dbr), 1e-5, 1e-5);
    vector<float> dw2(t.O * t.I, kNaN);
    cpu::linear_backward(t.M, t.I, t.O, x.data(), w.data(), dy.data(), nullptr, dw2.data(),
                         nullptr);
    REQUIRE_CLOSE(dw2, dw, 0, 0);
    if (t.M * t.I * t.O < 1000) {
      auto loss = [&]() {
        cpu::linear_forward(t.M, t.I, t.O, x.data(), w.data(), bias.data(), y.data());
        return dot(y, dy);
      };
      check_fd("linear dx", x, dx, loss, 5e-2f, 1e-4, 1e-4);
      check_fd("linear dw", w, dw, loss, 5e-2f, 1e-4, 1e-4);
      check_fd("linear dbias", bias, db, loss, 5e-2f, 1e-4, 1e-4);
    }
  }
}

// ---------------------------------------------------------------- losses
TEST_CASE("heatmap loss vs double reference and finite differences", "[cpu][loss][grad]") {
  struct Case {
    int64_t N, J, HW;
  };
  for (Case t : {Case{2, 3, 20}, Case{1, 1, 1}, Case{4, 17, 48 * 64}}) {
    CAPTURE(t.N, t.J, t.HW);
    const size_t n = size_t(t.N * t.J * t.HW);
    auto pred = randn(n, 91), gt = uniform(n, 92, 0.f, 1.f);
    auto w = uniform(t.N * t.J, 93, 0.f, 2.f);
    if (w.size() > 2) w[1] = 0.f;  // an invisible joint
    const float dloss = 1.7f;
    double ref = 0;
    vector<double> dref(n);
    const double denom = double(t.N * t.HW) * double(t.J);
    for (int64_t r = 0; r < t.N * t.J; ++r)
      for (int64_t i = 0; i < t.HW; ++i) {
        const size_t j = size_t(r * t.HW + i);
        const double d = double(w[r]) * pred[j] - double(w[r]) * gt[j];
        ref += 0.5 * d * d / denom;
        dref[j] = dloss * d * w[r] / denom;
      }
    const float got = cpu::heatmap_loss_forward(t.N, t.J, t.HW, pred.data(), gt.data(), w.data());
    REQUIRE_CLOSE(vector<float>{got}, vector<float>{float(ref)}, 0, 1e-6);
    vector<float> dp(n, kNaN);
    cpu::heatmap_loss_backward(t.N, t.J, t.HW, pred.data(), gt.data(), w.data(), dloss,
                               dp.data());
    REQUIRE_CLOSE(dp, to_float(dref), 1e-9, 1e-5);
    if (n > 1000) continue;  // the fp32 loss value is too coarse for differences of tiny gradients
    auto loss = [&]() {
      return double(dloss) *
             cpu::heatmap_loss_forward(t.N, t.J, t.HW, pred.data(), gt.data(), w.data());
    };
    check_fd("heatmap loss dpred", pred, dp, loss, 5e-2f, 1e-6, 1e-3);
  }
}

namespace {

// Mean softmax cross-entropy over the counted pixels and its gradient, in double.
double ce_ref(int64_t N, int64_t C, int64_t HW, const vector<float>& x,
              const vector<int64_t>& lab, int64_t ignore, double dloss, vector<double>& dx) {
  dx.assign(x.size(), 0);
  double total = 0;
  int64_t counted = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < HW; ++i)
      if (lab[n * HW + i] != ignore) ++counted;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < HW; ++i) {
      const int64_t l = lab[n * HW + i];
      if (l == ignore) continue;
      double mx = -INFINITY;
      for (int64_t c = 0; c < C; ++c) mx = std::max(mx, double(x[(n * C + c) * HW + i]));
      double se = 0;
      for (int64_t c = 0; c < C; ++c) se += std::exp(x[(n * C + c) * HW + i] - mx);
      const double lse = mx + std::log(se);
      total -= x[(n * C + l) * HW + i] - lse;
      for (int64_t c = 0; c < C; ++c) {
        const double p = std::exp(x[(n * C + c) * HW + i] - lse);
        dx[(n * C + c) * HW + i] = dloss / double(counted) * (p - (c == l ? 1 : 0));
      }
    }
  return counted ? total / double(counted) : 0;
}

}  // namespace

TEST_CASE("softmax cross-entropy vs double reference and finite differences",
          "[cpu][loss][grad]") {
  struct Case {
    int64_t N, C, HW;
  };
  const int64_t ignore = 255;
  for (Case t : {Case{2, 5, 13}, Case{1, 1, 1}, Case{1, 3, 1}, Case{3, 19, 700}}) {
    CAPTURE(t.N, t.C, t.HW);
    const size_t n = size_t(t.N * t.C * t.HW);
    auto x = randn(n, 101, 3.f);
    x[0] += 80.f;  // a large logit and, below, a sample of very negative ones: exp() of the
                   // unshifted logits would overflow / underflow in fp32
    if (t.N > 1)
      for (int64_t j = t.C * t.HW; j < 2 * t.C * t.HW; ++j) x[j] -= 150.f;
    vector<int64_t> lab(t.N * t.HW);
    std::mt19937 rng(102);
    for (auto& l : lab) l = rng() % 5 == 0 ? ignore : int64_t(rng() % t.C);
    if (lab.size() > 1) lab[0] = 0, lab[1] = ignore;
    const float dloss = 0.8f;
    vector<double> dref;
    const double ref = ce_ref(t.N, t.C, t.HW, x, lab, ignore, dloss, dref);
    const float got = cpu::softmax_ce_forward(t.N, t.C, t.HW, x.data(), lab.data(), ignore);
    REQUIRE_CLOSE(vector<float>{got}, vector<float>{float(ref)}, 1e-6, 1e-5);
    vector<float> dx(n, kNaN);
    cpu::softmax_ce_backward(t.N, t.C, t.HW, x.data(), lab.data(), ignore, dloss, dx.data());
    REQUIRE_CLOSE(dx, to_float(dref), 1e-7, 1e-5);
    if (n > 1000) continue;  // the fp32 loss value is too coarse for differences of tiny gradients
    auto loss = [&]() {
      return double(dloss) * cpu::softmax_ce_forward(t.N, t.C, t.HW, x.data(), lab.data(), ignore);
    };
    check_fd("softmax ce dlogits", x, dx, loss, 2e-2f, 2e-5, 5e-3, 40);
  }
}

TEST_CASE("softmax cross-entropy: all ignored, bad labels", "[cpu][loss]") {
  const int64_t N = 2, C = 3, HW = 4;
  auto x = randn(N * C * HW, 111);
  vector<int64_t> lab(N * HW, -1);
  REQUIRE(cpu::softmax_ce_forward(N, C, HW, x.data(), lab.data(), -1) == 0.f);
  vector<float> dx(x.size(), kNaN);
  cpu::softmax_ce_backward(N, C, HW, x.data(), lab.data(), -1, 1.f, dx.data());
  REQUIRE_CLOSE(dx, vector<float>(x.size(), 0.f), 0, 0);

  lab = {0, 1, 2, 0, 1, 2, 3, 0};  // label 3 at n=1, pixel 2
  REQUIRE_THROWS_AS(cpu::softmax_ce_forward(N, C, HW, x.data(), lab.data(), -1), hr::Error);
  REQUIRE_THROWS_WITH(cpu::softmax_ce_forward(N, C, HW, x.data(), lab.data(), -1),
                      Catch::Contains("softmax_ce_forward") && Catch::Contains("label 3") &&
                          Catch::Contains("n=1, pixel 2"));
  REQUIRE_THROWS_WITH(cpu::softmax_ce_backward(N, C, HW, x.data(), lab.data(), -1, 1.f, dx.data()),
                      Catch::Contains("softmax_ce_backward") && Catch::Contains("label 3"));
  lab[6] = -2;  // negative, not the ignore index
  REQUIRE_THROWS_WITH(cpu::softmax_ce_forward(N, C, HW, x.data(), lab.data(), -1),
                      Catch::Contains("label -2"));
}

// ---------------------------------------------------------------- optimizers
// A step takes several tensors at once (cpu::OptimSpan): 40,000 floats as three tensors of 20,000
// (two chunks), 7 and 19,993, each with its own learning rate and weight decay (scales below).
namespace {
const int64_t kSpanEnd[] = {20000, 20007, 40000};
const double kSpanLr[] = {1.0, 0.5, 2.0}, kSpanWd[] = {1.0, 3.0, 0.0};
int span_of(int64_t i) { return i < kSpanEnd[0] ? 0 : i < kSpanEnd[1] ? 1 : 2; }

// The 16-bit copies a step wrote: span 0's in bf16, span 2's in f16, each bit for bit the
// conversion of the updated p (the casts a graph would run); span 1 has none (left as it was).
void check_copies(const vector<float>& p, const vector<uint16_t>& copy) {
  const int64_t n = int64_t(p.size());
  vector<uint16_t> bf(n), hf(n);
  cpu::f32_to_bf16(n, p.data(), bf.data());
  cpu::f32_to_f16(n, p.data(), hf.data());
  int64_t wrong = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int k = span_of(i);
    wrong += copy[i] != (k == 0 ? bf[i] : k == 2 ? hf[i] : uint16_t(0x7fc0));
  }
  CHECK(wrong == 0);
}
}  // namespace

TEST_CASE("sgd_step matches torch.optim.SGD over several steps", "[cpu][optim]") {
  struct Cfg {
    double lr, momentum, dampening, wd;
    bool nesterov;
  };
  const Cfg cfgs[] = {{0.1, 0, 0, 0, false},     {0.05, 0, 0, 1e-2, false},
                      {0.01, 0.9, 0, 5e-4, false}, {0.01, 0.9, 0.3, 1e-3, false},
                      {0.02, 0.8, 0, 1e-2, true},  {0.5, 0.9, 0, 0, true}};
  const int64_t n = 40000;  // above the threaded threshold
  for (const auto& c : cfgs) {
    CAPTURE(c.lr, c.momentum, c.dampening, c.wd, c.nesterov);
    auto p = randn(n, 121);
    vector<float> buf(n, kNaN);
    vector<uint16_t> copy(n, 0x7fc0);  // spans 0 and 2: bf16 and f16 copies of p
    vector<double> pr(p.begin(), p.end()), br(n, 0);
    for (int step = 0; step < 5; ++step) {
      auto g = randn(n, 130 + step);
      vector<cpu::OptimSpan> spans;
      for (int k = 0; k < 3; ++k) {
        const int64_t i0 = k ? kSpanEnd[k - 1] : 0;
        spans.push_back({kSpanEnd[k] - i0, p.data() + i0, g.data() + i0,
                         c.momentum != 0 ? buf.data() + i0 : nullptr, nullptr,
                         float(c.lr * kSpanLr[k]), float(c.wd * kSpanWd[k]), step == 0});
        if (k != 1) spans.back().copy = copy.data() + i0;
        spans.back().copy_f16 = k == 2;
      }
      cpu::sgd_step(spans.data(), 3, float(c.momentum), float(c.dampening), c.nesterov);
      check_copies(p, copy);
      const double mom = float(c.momentum), damp = float(c.dampening);
      for (int64_t i = 0; i < n; ++i) {
        const int k = span_of(i);
        double d = g[i] + double(float(c.wd * kSpanWd[k])) * pr[i];
        if (mom != 0) {
          br[i] = step == 0 ? d : mom * br[i] + (1 - damp) * d;
          d = c.nesterov ? d + mom * br[i] : br[i];
        }
        pr[i] -= double(float(c.lr * kSpanLr[k])) * d;
      }
      REQUIRE_CLOSE(p, to_float(pr), 1e-6, 1e-5);
      if (mom != 0) REQUIRE_CLOSE(buf, to_float(br), 1e-6, 1e-5);
    }
  }
}

TEST_CASE("adam_step matches torch.optim.Adam / AdamW over several steps", "[cpu][optim]") {
  struct Cfg {
    double lr, b1, b2, eps, wd;
    bool decoupled;
  };
  const Cfg cfgs[] = {{1e-3, 0.9, 0.999, 1e-8, 0, false},
                      {1e-2, 0.9, 0.999, 1e-8, 1e-2, false},
                      {1e-2, 0.8, 0.99, 1e-6, 5e-2, true},
                      {3e-3, 0.5, 0.9, 1e-3, 0, true}};
  const int64_t n = 40000;
  for (const auto& c : cfgs) {
    CAPTURE(c.lr, c.b1, c.b2, c.eps, c.wd, c.decoupled);
    auto p = randn(n, 141);
    vector<float> m(n, 0.f), v(n, 0.f);
    vector<double> pr(p.begin(), p.end()), mr(n, 0), vr(n, 0);
    const double b1 = float(c.b1), b2 = float(c.b2), eps = float(c.eps);
    vector<uint16_t> copy(n, 0x7fc0);  // spans 0 and 2: bf16 and f16 copies of p
    for (int64_t step = 1; step <= 6; ++step) {
      auto g = randn(n, 150 + step, step == 3 ? 1e-3f : 1.f);  // one step of tiny gradients
      vector<cpu::OptimSpan> spans;
      for (int k = 0; k < 3; ++k) {
        const int64_t i0 = k ? kSpanEnd[k - 1] : 0;
        spans.push_back({kSpanEnd[k] - i0, p.data() + i0, g.data() + i0, m.data() + i0,
                         v.data() + i0, float(c.lr * kSpanLr[k]), float(c.wd * kSpanWd[k]),
                         false});
        if (k != 1) spans.back().copy = copy.data() + i0;
        spans.back().copy_f16 = k == 2;
      }
      cpu::adam_step(spans.data(), 3, float(c.b1), float(c.b2), float(c.eps), c.decoupled, step);
      check_copies(p, copy);
      const double bc1 = 1 - std::pow(b1, double(step)), bc2 = 1 - std::pow(b2, double(step));
      for (int64_t i = 0; i < n; ++i) {
        const int k = span_of(i);
        const double lr = float(c.lr * kSpanLr[k]), wd = float(c.wd * kSpanWd[k]);
        double gi = g[i];
        if (c.decoupled)
          pr[i] *= 1 - lr * wd;
        else
          gi += wd * pr[i];
        mr[i] = b1 * mr[i] + (1 - b1) * gi;
        vr[i] = b2 * vr[i] + (1 - b2) * gi * gi;
        pr[i] -= lr / bc1 * mr[i] / (std::sqrt(vr[i]) / std::sqrt(bc2) + eps);
      }
      CAPTURE(step);
      REQUIRE_CLOSE(p, to_float(pr), 1e-6, 1e-5);
      REQUIRE_CLOSE(m, to_float(mr), 1e-7, 1e-5);
      REQUIRE_CLOSE(v, to_float(vr), 1e-9, 1e-5);
    }
  }
}

// ---------------------------------------------------------------- dtype conversion
namespace {

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The value of an fp16 bit pattern, from the format's definition.
double f16_value(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const double sign = (h & 0x8000) ? -1 : 1;
  if (e == 31) return m ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
  if (e == 0) return sign * std::ldexp(m, -24);
  return sign * std::ldexp(1024 + m, e - 25);
}

// Nearest fp16 (ties to even mantissa; at or past 65520 -> inf) by search over all finite
// non-negative halves, which are increasing in their bit patterns.
uint16_t f16_ref(float f, const vector<double>& pos) {
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  const double a = std::fabs(double(f));
  if (a >= 65520.0) return sign | 0x7C00;
  const auto it = std::lower_bound(pos.begin(), pos.end(), a);
  const size_t hi = size_t(it - pos.begin());
  if (hi == pos.size()) return uint16_t(sign | (hi - 1));  // in (65504, 65520)
  if (pos[hi] == a) return uint16_t(sign | hi);
  const size_t lo = hi - 1;
  const double dlo = a - pos[lo], dhi = pos[hi] - a;
  const size_t pick = dlo < dhi ? lo : dhi < dlo ? hi : (lo % 2 == 0 ? lo : hi);
  return uint16_t(sign | pick);
}

// Nearest bf16: the two bf16 neighbours of |f| by truncation, compared in double.
uint16_t bf16_ref(float f) {
  const uint32_t u = bits(f);
  const uint32_t lo = u & 0xFFFF0000u, hi = lo + 0x10000u;
  const double a = std::fabs(double(f));
  const double dlo = a - std::fabs(double(from_bits(lo)));
  const double dhi = ((hi & 0x7FFFFFFFu) >= 0x7F800000u ? std::ldexp(1.0, 128)
                                                       : std::fabs(double(from_bits(hi)))) -
                     a;
  const bool up = dhi < dlo || (dhi == dlo && ((lo >> 16) & 1u));
  return uint16_t((up ? hi : lo) >> 16);
}

bool f16_is_nan(uint16_t h) { return (h & 0x7C00) == 0x7C00 && (h & 0x3FF); }
bool bf16_is_nan(uint16_t h) { return (h & 0x7F80) == 0x7F80 && (h & 0x7F); }

}  // namespace

TEST_CASE("fp16 conversion: exhaustive round trip and nearest-even rounding", "[cpu][convert]") {
  // Every half -> float is exact and comes back unchanged (NaN stays NaN).
  vector<uint16_t> all(65536), back(65536);
  for (int i = 0; i < 65536; ++i) all[i] = uint16_t(i);
  vector<float> f(65536);
  cpu::f16_to_f32(65536, all.data(), f.data());
  cpu::f32_to_f16(65536, f.data(), back.data());
  for (int i = 0; i < 65536; ++i) {
    const uint16_t h = uint16_t(i);
    const double v = f16_value(h);
    if (std::isnan(v)) {
      INFO("half " << i);
      REQUIRE(std::isnan(f[i]));
      REQUIRE(f16_is_nan(back[i]));
      continue;
    }
    if (double(f[i]) != v || back[i] != h || std::signbit(f[i]) != bool(h & 0x8000)) {
      INFO("half " << i << " -> " << f[i] << " (expected " << v << ") -> " << back[i]);
      REQUIRE(false);
    }
  }

  // float -> half against the nearest-value search: special values, every tie between adjacent
  // halves and its float neighbours, and a strided sweep over all float bit patterns.
  vector<double> pos(0x7C00);
  for (int i = 0; i < 0x7C00; ++i) pos[i] = f16_value(uint16_t(i));
  vector<float> in = {0.f,        -0.f,          INFINITY,     -INFINITY,   65504.f,  -65504.f,
                      65519.996f, 65520.f,       65536.f,      1e30f,       1.f,      -1.f,
                      0.1f,       6.1035156e-5f, 5.9604645e-8f, 2.9802322e-8f, 2.9802326e-8f,
                      1e-30f,     from_bits(1),  from_bits(0x80000001u)};
  for (int i = 0; i + 1 < 0x7C00; ++i) {
    const float mid = float((pos[i] + pos[i + 1]) / 2);  // exact in float
    in.push_back(mid);
    in.push_back(std::nextafter(mid, 0.f));
    in.push_back(std::nextafter(mid, INFINITY));
    in.push_back(-mid);
  }
  for (uint64_t u = 0; u < (uint64_t(1) << 32); u += 1021) {
    const float v = from_bits(uint32_t(u));
    if (!std::isnan(v)) in.push_back(v);
  }
  vector<uint16_t> got(in.size());
  cpu::f32_to_f16(int64_t(in.size()), in.data(), got.data());
  size_t bad = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const uint16_t want = f16_ref(in[i], pos);
    if (got[i] != want && bad++ < 5) UNSCOPED_INFO(in[i] << ": got " << got[i] << " want " << want);
  }
  CAPTURE(in.size());
  REQUIRE(bad == 0);

  const vector<float> nans = {kNaN, -kNaN, from_bits(0x7F800001u), from_bits(0xFFC12345u)};
  vector<uint16_t> hn(nans.size());
  cpu::f32_to_f16(int64_t(nans.size()), nans.data(), hn.data());
  for (size_t i = 0; i < nans.size(); ++i) {
    REQUIRE(f16_is_nan(hn[i]));
    REQUIRE(bool(hn[i] & 0x8000) == std::signbit(nans[i]));
  }
}

TEST_CASE("bf16 conversion: exhaustive round trip and nearest-even rounding", "[cpu][convert]") {
  vector<uint16_t> all(65536), back(65536);
  for (int i = 0; i < 65536; ++i) all[i] = uint16_t(i);
  vector<float> f(65536);
  cpu::bf16_to_f32(65536, all.data(), f.data());
  cpu::f32_to_bf16(65536, f.data(), back.data());
  for (int i = 0; i < 65536; ++i) {
    const uint16_t h = uint16_t(i);
    INFO("bf16 " << i);
    REQUIRE(bits(f[i]) == uint32_t(h) << 16);
    if (bf16_is_nan(h))
      REQUIRE(bf16_is_nan(back[i]));
    else
      REQUIRE(back[i] == h);
  }

  vector<float> in = {0.f, -0.f, INFINITY, -INFINITY, 3.3895314e38f, -3.3895314e38f,
                      std::numeric_limits<float>::max(), 1.f, 1.00390625f, 1.01171875f,
                      from_bits(1), from_bits(0x00008000u), from_bits(0x00018000u)};
  for (uint32_t hb = 0; hb < 0x7F80u; hb += 7) {  // ties and their neighbours
    const uint32_t tie = (hb << 16) | 0x8000u;
    for (uint32_t u : {tie, tie - 1, tie + 1, tie | 0x80000000u}) in.push_back(from_bits(u));
  }
  for (uint64_t u = 0; u < (uint64_t(1) << 32); u += 1021) {
    const float v = from_bits(uint32_t(u));
    if (!std::isnan(v)) in.push_back(v);
  }
  vector<uint16_t> got(in.size());
  cpu::f32_to_bf16(int64_t(in.size()), in.data(), got.data());
  size_t bad = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const uint16_t want = std::isinf(in[i]) ? uint16_t(bits(in[i]) >> 16) : bf16_ref(in[i]);
    if (got[i] != want && bad++ < 5) UNSCOPED_INFO(in[i] << ": got " << got[i] << " want " << want);
  }
  CAPTURE(in.size());
  REQUIRE(bad == 0);

  const vector<float> nans = {kNaN, -kNaN, from_bits(0x7F800001u), from_bits(0xFFFFFFFFu)};
  vector<uint16_t> bn(nans.size());
  cpu::f32_to_bf16(int64_t(nans.size()), nans.data(), bn.data());
  for (size_t i = 0; i < nans.size(); ++i) {
    REQUIRE(bf16_is_nan(bn[i]));
    REQUIRE(bool(bn[i] & 0x8000) == std::signbit(nans[i]));
  }
}
