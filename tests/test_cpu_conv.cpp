// CPU convolution kernels (kernels/cpu/conv2d.cpp) against naive double-precision loops:
// forward (+bias), backward-data, backward-weight (+bias grad) over kernel sizes, strides,
// paddings, odd sizes and the tiling / image-batching / threading paths; plus a finite-difference
// check of the three kernels on one small shape and the shape validation.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/cpu/cpu_kernels.h"
#include "test_util.h"

using hr::kern::ConvShape;

namespace {

struct Case {
  int64_t N, C, H, W, K, R, S, sh, sw, ph, pw;
  bool bias;
};

std::string name(const Case& c) {
  return hr::str_cat("N", c.N, " C", c.C, " ", c.H, "x", c.W, " K", c.K, " ", c.R, "x", c.S, " s",
                     c.sh, "x", c.sw, " p", c.ph, "x", c.pw, c.bias ? " bias" : "");
}

// Naive double-precision loops for shape s (x [N,C,H,W], w [K,C,R,S], y [N,K,P,Q]).
struct Ref {
  const ConvShape& s;
  // Input position under filter tap (r, t) of output (p, q); false when it is padding.
  bool tap(int64_t p, int64_t q, int64_t r, int64_t t, int64_t& ih, int64_t& iw) const {
    ih = p * s.stride_h - s.pad_h + r;
    iw = q * s.stride_w - s.pad_w + t;
    return ih >= 0 && ih < s.H && iw >= 0 && iw < s.W;
  }
  size_t xi(int64_t n, int64_t c, int64_t h, int64_t w) const {
    return static_cast<size_t>(((n * s.C + c) * s.H + h) * s.W + w);
  }
  size_t yi(int64_t n, int64_t k, int64_t p, int64_t q) const {
    return static_cast<size_t>(((n * s.K + k) * s.P + p) * s.Q + q);
  }
  size_t wi(int64_t k, int64_t c, int64_t r, int64_t t) const {
    return static_cast<size_t>(((k * s.C + c) * s.R + r) * s.S + t);
  }

  std::vector<float> forward(const std::vector<float>& x, const std::vector<float>& w,
                             const float* b) const {
    std::vector<float> y(static_cast<size_t>(s.N * s.K * s.P * s.Q));
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t k = 0; k < s.K; ++k)
        for (int64_t p = 0; p < s.P; ++p)
          for (int64_t q = 0; q < s.Q; ++q) {
            double acc = b ? b[k] : 0.0;
            for (int64_t c = 0; c < s.C; ++c)
              for (int64_t r = 0; r < s.R; ++r)
                for (int64_t t = 0; t < s.S; ++t) {
                  int64_t ih, iw;
                  if (tap(p, q, r, t, ih, iw))
                    acc += double(x[xi(n, c, ih, iw)]) * double(w[wi(k, c, r, t)]);
                }
            y[yi(n, k, p, q)] = static_cast<float>(acc);
          }
    return y;
  }

  std::vector<float> backward_data(const std::vector<float>& dy,
                                   const std::vector<float>& w) const {
    std::vector<double> dx(static_cast<size_t>(s.N * s.C * s.H * s.W), 0.0);
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t k = 0; k < s.K; ++k)
        for (int64_t p = 0; p < s.P; ++p)
          for (int64_t q = 0; q < s.Q; ++q)
            for (int64_t c = 0; c < s.C; ++c)
              for (int64_t r = 0; r < s.R; ++r)
                for (int64_t t = 0; t < s.S; ++t) {
                  int64_t ih, iw;
                  if (tap(p, q, r, t, ih, iw))
                    dx[xi(n, c, ih, iw)] += double(dy[yi(n, k, p, q)]) * double(w[wi(k, c, r, t)]);
                }
    return std::vector<float>(dx.begin(), dx.end());
  }

  void backward_weight(const std::vector<float>& x, const std::vector<float>& dy,
                       std::vector<float>& dw, std::vector<float>& db) const {
    std::vector<double> gw(static_cast<size_t>(s.K * s.C * s.R * s.S), 0.0), gb(s.K, 0.0);
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t k = 0; k < s.K; ++k)
        for (int64_t p = 0; p < s.P; ++p)
          for (int64_t q = 0; q < s.Q; ++q) {
            const double g = dy[yi(n, k, p, q)];
            gb[k] += g;
            for (int64_t c = 0; c < s.C; ++c)
              for (int64_t r = 0; r < s.R; ++r)
                for (int64_t t = 0; t < s.S; ++t) {
                  int64_t ih, iw;
                  if (tap(p, q, r, t, ih, iw))
                    gw[wi(k, c, r, t)] += g * double(x[xi(n, c, ih, iw)]);
                }
          }
    dw.assign(gw.begin(), gw.end());
    db.assign(gb.begin(), gb.end());
  }
};

// Runs the three kernels on seeded random data and compares with the reference loops.
void check_case(const Case& c, uint64_t seed) {
  INFO(name(c));
  const ConvShape s = ConvShape::make(c.N, c.C, c.H, c.W, c.K, c.R, c.S, c.sh, c.sw, c.ph, c.pw);
  const Ref ref{s};
  const size_t nx = s.N * s.C * s.H * s.W, nw = s.K * s.C * s.R * s.S, ny = s.N * s.K * s.P * s.Q;
  const auto x = hr::test::randn(nx, seed);
  const auto w = hr::test::randn(nw, seed + 1, 1.f / std::sqrt(float(s.C * s.R * s.S)));
  const auto b = hr::test::randn(s.K, seed + 2);
  const auto dy = hr::test::randn(ny, seed + 3);
  const float* bp = c.bias ? b.data() : nullptr;

  // Outputs start as garbage: the kernels must overwrite them.
  std::vector<float> y(ny, 1e3f), dx(nx, -1e3f), dw(nw, 7.f), db(s.K, 7.f);
  hr::cpu::conv2d_forward(s, x.data(), w.data(), bp, y.data());
  REQUIRE_CLOSE(y, ref.forward(x, w, bp), 1e-4, 1e-4);

  hr::cpu::conv2d_backward_data(s, dy.data(), w.data(), dx.data());
  REQUIRE_CLOSE(dx, ref.backward_data(dy, w), 1e-4, 1e-4);

  std::vector<float> rdw, rdb;
  ref.backward_weight(x, dy, rdw, rdb);
  hr::cpu::conv2d_backward_weight(s, x.data(), dy.data(), dw.data(), c.bias ? db.data() : nullptr);
  // dw sums N*P*Q products of unit-variance values.
  const double atol = 2e-5 * std::sqrt(double(s.N * s.P * s.Q));
  REQUIRE_CLOSE(dw, rdw, atol, 1e-4);
  if (c.bias) {
    REQUIRE_CLOSE(db, rdb, atol, 1e-4);
  } else {
    REQUIRE(db == std::vector<float>(s.K, 7.f));  // nullptr dbias: untouched
  }
}

// Runs fn with the OpenMP thread count set to n, restoring it afterwards.
template <class Fn>
void with_threads(int n, Fn&& fn) {
  const int old = omp_get_max_threads();
  omp_set_num_threads(n);
  try {
    fn();
  } catch (...) {
    omp_set_num_threads(old);
    throw;
  }
  omp_set_num_threads(old);
}

const std::vector<Case> kCases = {
    //  N  C   H   W   K  R  S sh sw ph pw bias
    {3, 5, 7, 9, 4, 3, 3, 1, 1, 1, 1, true},      // 3x3 s1 p1, odd sizes
    {3, 4, 7, 9, 6, 3, 3, 2, 2, 1, 1, false},     // 3x3 s2 p1, 7x9
    {1, 3, 13, 11, 5, 3, 3, 2, 2, 1, 1, true},    // 3x3 s2 p1, 13x11, N = 1
    {3, 6, 7, 9, 5, 1, 1, 1, 1, 0, 0, true},      // 1x1 s1 (no im2col)
    {2, 4, 9, 7, 3, 1, 1, 2, 2, 0, 0, false},     // 1x1 s2
    {2, 3, 11, 10, 4, 5, 5, 1, 1, 2, 2, true},    // 5x5 p2
    {3, 4, 8, 7, 5, 3, 3, 1, 1, 0, 0, false},     // 3x3 p0
    {2, 3, 6, 8, 4, 1, 3, 1, 1, 0, 1, true},      // 1x3 p(0,1)
    {2, 3, 9, 8, 4, 3, 1, 2, 1, 1, 0, false},     // 3x1, stride (2,1), pad (1,0)
    {3, 1, 9, 9, 4, 3, 3, 1, 1, 1, 1, true},      // C = 1
    {2, 5, 9, 7, 1, 3, 3, 2, 2, 1, 1, true},      // K = 1, strided
    {1, 1, 5, 5, 1, 3, 3, 1, 1, 1, 1, false},     // C = K = N = 1
    {2, 3, 8, 8, 2, 4, 4, 2, 2, 1, 1, true},      // even kernel, stride 2
    {2, 2, 6, 6, 3, 3, 3, 3, 3, 2, 2, false},     // stride 3, pad 2
    {1, 2, 4, 5, 3, 3, 3, 1, 1, 3, 2, true},      // pad > R-1: col2im backward-data at stride 1
    {2, 32, 40, 24, 8, 3, 3, 1, 1, 1, 1, true},   // several row tiles per image
    {2, 32, 80, 48, 8, 3, 3, 2, 2, 1, 1, false},  // row tiles with overlapping col2im
    {6, 16, 8, 6, 12, 3, 3, 1, 1, 1, 1, true},    // several images per GEMM
    {5, 8, 9, 7, 6, 3, 3, 2, 2, 1, 1, false},     // several images per GEMM, strided col2im
    {3, 24, 6, 5, 7, 1, 1, 1, 1, 0, 0, true},     // 1x1 small map (backward passes batch images)
    // Maps with P*Q >= 128 take the row-shift operand (stride 1, Q == W).
    {2, 8, 16, 12, 5, 1, 1, 1, 1, 0, 0, true},   // 1x1 reading the image in place
    {2, 4, 16, 10, 3, 3, 1, 1, 1, 1, 0, false},  // 3x1: vertical padding only
    {1, 3, 12, 16, 4, 1, 3, 1, 1, 0, 1, true},   // 1x3: horizontal shifts only
    {1, 3, 12, 11, 2, 5, 5, 1, 1, 2, 2, false},  // 5x5 p2, odd width
    {1, 8, 12, 12, 6, 3, 3, 1, 1, 1, 1, true},   // one tile: threaded GEMM
    {5, 3, 14, 14, 4, 3, 3, 2, 2, 1, 1, true},   // 3 tiles of 2+2+1 images: threaded GEMMs
    // The direct kernel (AVX-512 builds: stride 1, Q == W): tiles of 3 vectors of 16 outputs,
    // blocks of 8 output channels, masked tails of both.
    {2, 7, 7, 7, 17, 3, 3, 1, 1, 1, 1, true},    // 49 outputs: tiles of 3 + 1 vectors; K 8+8+1
    {1, 40, 8, 6, 24, 3, 3, 1, 1, 1, 1, false},  // one tile: channel blocks split over threads
    {2, 9, 5, 40, 10, 1, 1, 1, 1, 0, 0, true},   // 1x1, 200 outputs (12.5 vectors)
    {3, 5, 4, 20, 9, 7, 7, 1, 1, 3, 3, true},    // 7x7: 49 taps, the runtime tap count
    {2, 3, 9, 1, 4, 3, 3, 1, 1, 1, 1, false},    // W = 1: every row one lane
    // >= 128 input channels: the loop order with channels outside
    {1, 130, 6, 5, 10, 3, 3, 1, 1, 1, 1, true},   // 3x3, 30 outputs, K 8+2
    {2, 128, 9, 7, 9, 3, 3, 2, 2, 1, 1, false},   // strided, through phase images
    {2, 128, 4, 9, 17, 1, 1, 1, 1, 0, 0, true},   // 1x1
    // Winograd F(2x2, 3x3) (AVX-512 builds: 3x3 stride 1 pad 1, >= 16 channels in and out,
    // >= 64 tiles of 2x2 outputs and, but for the weight gradient, one for every 64 weights):
    // blocks of 48 tiles, chunks of 64 output channels, output channels padded to 8.
    {4, 16, 9, 7, 20, 3, 3, 1, 1, 1, 1, true},     // odd height and width: half tiles; K 16+4
    {3, 24, 20, 18, 70, 3, 3, 1, 1, 1, 1, false},  // 270 tiles: blocks across rows and images,
                                                   // a last block of 30; K chunks 64 + 8
    {17, 16, 3, 3, 16, 3, 3, 1, 1, 1, 1, true},    // 4 tiles an image, 3 of them half outside
    {8, 24, 6, 5, 130, 3, 3, 1, 1, 1, 1, true},    // 2 blocks: chunks split over threads; the
                                                   // weight gradient split by output channel
    {8, 160, 6, 5, 130, 3, 3, 1, 1, 1, 1, false},  // the weight gradient only (C x K too large)
    // Winograd F(4x4, 3x3) in the forward pass and the data gradient (>= 32 tiles of 4x4
    // outputs an image, one for every 64 weights, and no more products than 0.7 of F(2x2)'s):
    // chunks of 32 output channels, blocks of 48, 32 or 16 tiles by the thread count.
    {2, 16, 13, 70, 20, 3, 3, 1, 1, 1, 1, true},   // 18 tiles a row (two vectors of row planes),
                                                   // partial last tile row and column; K 16+4
    {3, 24, 23, 21, 70, 3, 3, 1, 1, 1, 1, false},  // 36 tiles an image, blocks across images,
                                                   // 3 of 4 and 1 of 4 rows/columns in the last
                                                   // tiles; K chunks 32 + 32 + 8
    // Stride 2 by phases in F(4x4, 2x2), the forward pass and the data gradient (AVX-512
    // builds: 3x3 stride 2 pad 1, 32-128 channels in, >= 64 out, >= 512 tiles of 4x4 outputs):
    // 64x65 outputs, 17 tiles a row (two vectors of row planes and of dx columns), the last
    // tile column a quarter inside; odd H: dx's last tile row 7 of 8 inside; K chunks 32 + 32 +
    // 8, the data gradient's 4C 4 x 32.
    {2, 32, 127, 130, 72, 3, 3, 2, 2, 1, 1, true},
};

}  // namespace

TEST_CASE("conv2d CPU kernels match naive double loops", "[cpu][conv]") {
  for (size_t i = 0; i < kCases.size(); ++i) check_case(kCases[i], 100 + 10 * i);
}

// The forward pass's epilogue: y = relu(conv + bias + residual), each part optional, on the
// direct kernel, Winograd's output transform, the row-shift GEMMs (HR_CPU_ISA=avx2 runs) and
// im2col with batched images.
TEST_CASE("conv2d CPU forward applies the residual / ReLU epilogue", "[cpu][conv]") {
  const std::vector<Case> picks = {kCases[0],  kCases[15], kCases[17], kCases[18],
                                   kCases[21], kCases[26], kCases[27], kCases[31], kCases[32],
                                   kCases[34], kCases[35], kCases[36], kCases[39],
                                   kCases[40], kCases[41]};
  for (size_t i = 0; i < picks.size(); ++i) {
    const Case& c = picks[i];
    const ConvShape s = ConvShape::make(c.N, c.C, c.H, c.W, c.K, c.R, c.S, c.sh, c.sw, c.ph, c.pw);
    const size_t nx = s.N * s.C * s.H * s.W, nw = s.K * s.C * s.R * s.S, ny = s.N * s.K * s.P * s.Q;
    const auto x = hr::test::randn(nx, 500 + i);
    const auto w = hr::test::randn(nw, 600 + i, 1.f / std::sqrt(float(s.C * s.R * s.S)));
    const auto b = hr::test::randn(s.K, 700 + i);
    const auto res = hr::test::randn(ny, 800 + i);
    const std::vector<float> conv = Ref{s}.forward(x, w, c.bias ? b.data() : nullptr);
    for (int mode = 1; mode < 4; ++mode) {
      const bool add = mode & 1, relu = mode & 2;
      INFO(name(c) << (add ? " +residual" : "") << (relu ? " relu" : ""));
      std::vector<float> want(ny);
      int negative = 0;
      for (size_t k = 0; k < ny; ++k) {
        const float v = conv[k] + (add ? res[k] : 0.f);
        negative += v < 0;
        want[k] = relu ? std::max(v, 0.f) : v;
      }
      REQUIRE(negative > 0);  // the ReLU has something to do
      hr::kern::ConvEpilogue ep;
      ep.residual = add ? res.data() : nullptr;
      ep.relu = relu;
      std::vector<float> y(ny, 1e3f);
      hr::cpu::conv2d_forward(s, x.data(), w.data(), c.bias ? b.data() : nullptr, y.data(), ep);
      REQUIRE_CLOSE(y, want, 1e-4, 1e-4);
    }
  }
}

// Prepacked weights (inference graphs): the Winograd shapes of AVX-512 builds from 32 tiles of
// 2x2 outputs, F(2x2) or F(4x4) (also where the per-call transform's bounds leave the weights to
// the direct kernel: kCases[38], and kCases[32] with 40 tiles); none elsewhere, on the baseline
// build or with Winograd off.
TEST_CASE("conv2d CPU forward on prepacked weights", "[cpu][conv]") {
  const char* env = std::getenv("HR_CPU_WINOGRAD");
  const bool winograd =
      std::string(hr::cpu::cpu_isa()) == "avx512" && !(env && std::string(env) == "0");
  int f2 = 0, f4 = 0;
  for (size_t i = 0; i < kCases.size(); ++i) {
    const Case& c = kCases[i];
    INFO(name(c));
    const ConvShape s = ConvShape::make(c.N, c.C, c.H, c.W, c.K, c.R, c.S, c.sh, c.sw, c.ph, c.pw);
    const int64_t n = hr::cpu::conv2d_prepacked_size(s);
    const int64_t per = s.C * ((s.K + 7) / 8 * 8);  // C x K padded to 8
    const bool wino_shape = c.R == 3 && c.S == 3 && c.sh == 1 && c.sw == 1 && c.ph == 1 &&
                            c.pw == 1 && c.C >= 16 && c.K >= 16 &&
                            c.N * ((c.H + 1) / 2) * ((c.W + 1) / 2) >= 32;
    CHECK((n > 0) == (winograd && wino_shape));
    if (n == 0) continue;
    REQUIRE((n == 16 * per || n == 36 * per));
    (n == 16 * per ? f2 : f4) += 1;
    const size_t nx = s.N * s.C * s.H * s.W, nw = s.K * s.C * s.R * s.S, ny = s.N * s.K * s.P * s.Q;
    const auto x = hr::test::randn(nx, 1500 + i);
    const auto w = hr::test::randn(nw, 1600 + i, 1.f / std::sqrt(float(s.C * s.R * s.S)));
    const auto b = hr::test::randn(s.K, 1700 + i);
    const auto res = hr::test::randn(ny, 1800 + i);
    std::vector<float> packed(static_cast<size_t>(n), 5.f);
    hr::cpu::conv2d_prepack_weights(s, w.data(), packed.data());
    const std::vector<float> conv = Ref{s}.forward(x, w, c.bias ? b.data() : nullptr);
    std::vector<float> want(ny);
    for (size_t k = 0; k < ny; ++k) want[k] = std::max(conv[k] + res[k], 0.f);
    hr::kern::ConvEpilogue ep;
    ep.residual = res.data();
    ep.relu = true;
    std::vector<float> y(ny, 1e3f);
    hr::cpu::conv2d_forward_prepacked(s, x.data(), packed.data(), c.bias ? b.data() : nullptr,
                                      y.data(), ep);
    REQUIRE_CLOSE(y, want, 1e-4, 1e-4);
  }
  if (winograd) {
    CHECK(f2 >= 4);
    if (std::string(env ? env : "") == "2x2")
      CHECK(f4 == 0);
    else
      CHECK(f4 >= 2);
  } else {
    const ConvShape s = ConvShape::make(2, 16, 16, 16, 16, 3, 3, 1, 1, 1, 1);
    std::vector<float> w(16 * 16 * 9, 1.f), packed(16);
    CHECK_THROWS_WITH(hr::cpu::conv2d_prepack_weights(s, w.data(), packed.data()),
                      Catch::Contains("no prepacked kernel"));
  }
}

TEST_CASE("conv2d CPU kernels give the same values with 1 and 3 threads", "[cpu][conv]") {
  const std::vector<Case> picks = {kCases[0],  kCases[2],  kCases[15], kCases[16], kCases[17],
                                   kCases[18], kCases[24], kCases[25], kCases[26], kCases[27],
                                   kCases[34], kCases[35], kCases[37], kCases[39],
                                   kCases[40]};
  for (int threads : {1, 3})
    with_threads(threads, [&] {
      INFO("threads " << threads);
      for (size_t i = 0; i < picks.size(); ++i) check_case(picks[i], 900 + 10 * i);
    });
}

TEST_CASE("conv2d CPU kernels agree with finite differences", "[cpu][conv]") {
  // Hundreds of tiny calls: one thread keeps it fast on a loaded machine.
  with_threads(1, [] {
    const ConvShape s = ConvShape::make(2, 3, 5, 6, 4, 3, 3, 2, 2, 1, 1);
    const size_t nx = s.N * s.C * s.H * s.W, nw = s.K * s.C * s.R * s.S, ny = s.N * s.K * s.P * s.Q;
    auto x = hr::test::randn(nx, 7);
    auto w = hr::test::randn(nw, 8, 0.3f);
    auto b = hr::test::randn(s.K, 9);
    const auto rr = hr::test::randn(ny, 10);  // loss = sum(y * r), so dL/dy = r
    auto loss = [&] {
      std::vector<float> y(ny);
      hr::cpu::conv2d_forward(s, x.data(), w.data(), b.data(), y.data());
      double l = 0;
      for (size_t i = 0; i < ny; ++i) l += double(y[i]) * double(rr[i]);
      return l;
    };
    const float eps = 0.05f;  // the loss is linear in x, w and b: only rounding limits eps
    auto numeric = [&](std::vector<float>& v) {
      std::vector<float> g(v.size());
      for (size_t i = 0; i < v.size(); ++i) {
        const float keep = v[i];
        v[i] = keep + eps;
        const double lp = loss();
        v[i] = keep - eps;
        const double lm = loss();
        v[i] = keep;
        g[i] = static_cast<float>((lp - lm) / (2.0 * double(eps)));
      }
      return g;
    };
    std::vector<float> dx(nx), dw(nw), db(s.K);
    hr::cpu::conv2d_backward_data(s, rr.data(), w.data(), dx.data());
    hr::cpu::conv2d_backward_weight(s, x.data(), rr.data(), dw.data(), db.data());
    REQUIRE_CLOSE(dx, numeric(x), 2e-3, 1e-3);
    REQUIRE_CLOSE(dw, numeric(w), 2e-3, 1e-3);
    REQUIRE_CLOSE(db, numeric(b), 2e-3, 1e-3);
  });
}

TEST_CASE("conv2d CPU kernels reject inconsistent shapes", "[cpu][conv]") {
  ConvShape s = ConvShape::make(1, 2, 5, 5, 3, 3, 3, 1, 1, 1, 1);
  std::vector<float> x(50, 1.f), w(54, 1.f), y(75, 0.f);
  s.P = 4;  // should be 5
  REQUIRE_THROWS_AS(hr::cpu::conv2d_forward(s, x.data(), w.data(), nullptr, y.data()), hr::Error);
  REQUIRE_THROWS_WITH(hr::cpu::conv2d_backward_data(s, y.data(), w.data(), x.data()),
                      Catch::Contains("conv2d_backward_data"));
  s = ConvShape::make(1, 2, 2, 2, 3, 3, 3, 1, 1, 0, 0);  // kernel larger than the padded input
  REQUIRE_THROWS_AS(hr::cpu::conv2d_backward_weight(s, x.data(), y.data(), w.data(), nullptr),
                    hr::Error);
}

// bf16 products (cpu_precision bf16, processors with AVX512_BF16): every pass of every case
// against the double loops, element by element, within the bound of rounding both operands of
// each product to bf16 (unit roundoff 2^-8 each): |error| <= 2^-7 * sum |terms| (computed by the
// same loops on |x|, |w|, |dy|), times kWinoBf16 where the pass may run Winograd (its operands
// are the transformed values; F(2x2) only in bf16 mode, within the bound itself on these cases,
// where F(4x4) ran 4.4 times over it). The GEMM passes (the weight gradient, the strided data
// gradient outside Winograd) round exactly x, w and dy, so there the result must also match the
// loops on the rounded operands to fp32 accumulation error, and differ from the fp32 kernels'
// (the mode is on). (Winograd's weight gradient stays fp32.)
namespace {

float bf16_round(float v) {  // nearest even, as VCVTNE2PS2BF16 (finite, normal values here)
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  std::memcpy(&v, &u, 4);
  return v;
}
std::vector<float> rounded(std::vector<float> v) {
  for (float& e : v) e = bf16_round(e);
  return v;
}
std::vector<float> magnitudes(std::vector<float> v) {
  for (float& e : v) e = std::fabs(e);
  return v;
}

// got vs want per element: |got - want| <= k * bound + 1e-6.
void require_within(const std::vector<float>& got, const std::vector<float>& want,
                    const std::vector<float>& bound, double k, const char* what) {
  REQUIRE(got.size() == want.size());
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double r = std::fabs(double(got[i]) - want[i]) / (k * bound[i] + 1e-6);
    if (!(r <= worst)) worst = r, at = i;
  }
  INFO(what << ": worst element " << at << " got " << got[at] << " want " << want[at]
            << " bound " << k * bound[at] + 1e-6);
  REQUIRE(worst <= 1.0);
}

struct PrecisionGuard {
  explicit PrecisionGuard(const char* p) { hr::cpu::set_cpu_precision(p); }
  ~PrecisionGuard() { hr::cpu::set_cpu_precision("fp32"); }
};

}  // namespace

TEST_CASE("conv2d CPU kernels with bf16 products", "[cpu][conv]") {
  if (!hr::cpu::cpu_bf16_supported()) {
    CHECK_THROWS_WITH(hr::cpu::set_cpu_precision("bf16"), Catch::Contains("AVX512_BF16"));
    WARN("bf16 products not checked: no AVX512_BF16 here (or the avx2 kernels are in use)");
    return;
  }
  constexpr double kUnit = 1.0 / 128, kWinoBf16 = 2.0;
  for (int threads : {1, 2})
    with_threads(threads, [&] {
      for (size_t i = 0; i < kCases.size(); ++i) {
        const Case& c = kCases[i];
        INFO(name(c) << ", threads " << threads);
        const ConvShape s =
            ConvShape::make(c.N, c.C, c.H, c.W, c.K, c.R, c.S, c.sh, c.sw, c.ph, c.pw);
        const Ref ref{s};
        const size_t nx = s.N * s.C * s.H * s.W, nw = s.K * s.C * s.R * s.S,
                     ny = s.N * s.K * s.P * s.Q;
        const auto x = hr::test::randn(nx, 3000 + i);
        const auto w = hr::test::randn(nw, 3100 + i, 1.f / std::sqrt(float(s.C * s.R * s.S)));
        const auto dy = hr::test::randn(ny, 3200 + i);
        const bool wino = c.R == 3 && c.S == 3 && c.sh == 1 && c.sw == 1 && c.ph == 1 &&
                          c.pw == 1 && c.C >= 16 && c.K >= 16;
        const double kw = wino ? kWinoBf16 : 1.0;
        std::vector<float> y(ny, 1e3f), dx(nx, -1e3f), dw(nw, 7.f), dw32(nw, 7.f), dx32(nx);
        hr::cpu::conv2d_backward_weight(s, x.data(), dy.data(), dw32.data(), nullptr);
        hr::cpu::conv2d_backward_data(s, dy.data(), w.data(), dx32.data());
        {
          PrecisionGuard bf16("bf16");
          hr::cpu::conv2d_forward(s, x.data(), w.data(), nullptr, y.data());
          hr::cpu::conv2d_backward_data(s, dy.data(), w.data(), dx.data());
          hr::cpu::conv2d_backward_weight(s, x.data(), dy.data(), dw.data(), nullptr);
        }
        const auto ax = magnitudes(x), aw = magnitudes(w), ady = magnitudes(dy);
        require_within(y, ref.forward(x, w, nullptr), ref.forward(ax, aw, nullptr), kw * kUnit,
                       "forward");
        require_within(dx, ref.backward_data(dy, w), ref.backward_data(ady, aw), kw * kUnit,
                       "backward data");
        std::vector<float> rdw, rdb, adw, adb, bdw, bdb;
        ref.backward_weight(x, dy, rdw, rdb);
        ref.backward_weight(ax, ady, adw, adb);
        require_within(dw, rdw, adw, kw * kUnit, "backward weight");
        if (!wino) {  // the GEMMs: exactly the rounded operands, summed in fp32
          CHECK(dw != dw32);
          ref.backward_weight(rounded(x), rounded(dy), bdw, bdb);
          require_within(dw, bdw, adw, 1e-5, "backward weight, rounded operands");
          if (c.sh > 1 || c.sw > 1) {
            CHECK(dx != dx32);
            require_within(dx, ref.backward_data(rounded(dy), rounded(w)),
                           ref.backward_data(ady, aw), 1e-5, "backward data, rounded operands");
          }
        }
      }
    });
}
