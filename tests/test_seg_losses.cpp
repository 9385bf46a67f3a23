// The segmentation losses of HRNet-Semantic-Segmentation (lib/core/criterion.py) beyond the op
// table and the PyTorch cases: argument errors, the edge cases the engine defines (nothing
// counted, nothing selected), ties, and identities between cross_entropy with class weights and
// ohem_cross_entropy. Values and gradients are compared per element.
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "engine/ops.h"
#include "engine/tensor.h"
#include "kernels/cuda/cuda_kernels.h"
#include "test_util.h"

using namespace hr;

namespace {

Tensor leaf(const Shape& s, uint64_t seed, float stddev = 2.f) {
  Tensor t = Tensor::from_vector(test::randn(static_cast<size_t>(shape_numel(s)), seed, stddev), s);
  t.set_requires_grad(true);
  return t;
}

Tensor labels_of(const std::vector<int64_t>& v, const Shape& s) {
  return Tensor::from_vector_i64(v, s);
}

// Labels [N, H, W] in [0, C) with every fourth pixel `ignore`.
Tensor some_labels(const Shape& s, int64_t C, int64_t ignore, uint64_t seed) {
  std::vector<int64_t> v(static_cast<size_t>(shape_numel(s)));
  uint64_t x = seed;
  for (size_t i = 0; i < v.size(); ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    v[i] = i % 4 == 1 ? ignore : static_cast<int64_t>((x >> 33) % static_cast<uint64_t>(C));
  }
  return labels_of(v, s);
}

void require_close(const Tensor& got, const Tensor& want, double atol, double rtol,
                   const std::string& what) {
  REQUIRE(got.shape() == want.shape());
  const test::CompareResult r = test::compare(got.to_vector(), want.to_vector(), atol, rtol, what);
  INFO(r.report);
  REQUIRE(r.ok);
}

}  // namespace

TEST_CASE("cross_entropy and ohem_cross_entropy: class-weight errors name the op and the shapes",
          "[errors][seg_loss]") {
  Tensor x = Tensor::zeros({2, 5, 3, 3});
  Tensor l = some_labels({2, 3, 3}, 5, 255, 1);
  REQUIRE_THROWS_WITH(ops::cross_entropy(x, l, 255, 0.f, Tensor::ones({4})),
                      Catch::Contains("cross_entropy: class weight [4]") &&
                          Catch::Contains("[2, 5, 3, 3]") && Catch::Contains("expected [5]"));
  REQUIRE_THROWS_WITH(ops::cross_entropy(x, l, 255, 0.f, Tensor::ones({5, 1})),
                      Catch::Contains("cross_entropy") && Catch::Contains("[5, 1]"));
  REQUIRE_THROWS_WITH(
      ops::cross_entropy(x, l, 255, 0.f, Tensor::from_vector_i64({1, 1, 1, 1, 1}, {5})),
      Catch::Contains("cross_entropy: class weight must be f32, got i64"));
  REQUIRE_THROWS_WITH(ops::ohem_cross_entropy(x, l, 255, 0.7f, 10, Tensor::ones({19})),
                      Catch::Contains("ohem_cross_entropy: class weight [19]") &&
                          Catch::Contains("[2, 5, 3, 3]"));
  REQUIRE_THROWS_WITH(ops::ohem_cross_entropy(x, Tensor::zeros({2, 3, 3}), 255, 0.7f, 10),
                      Catch::Contains("ohem_cross_entropy") && Catch::Contains("i64"));
  REQUIRE_THROWS_WITH(ops::ohem_cross_entropy(x, some_labels({2, 3, 4}, 5, 255, 1), 255),
                      Catch::Contains("ohem_cross_entropy") && Catch::Contains("[2, 3, 4]") &&
                          Catch::Contains("[2, 3, 3]"));
  REQUIRE_THROWS_WITH(ops::ohem_cross_entropy(x, l, 255, NAN, 10),
                      Catch::Contains("ohem_cross_entropy") && Catch::Contains("not finite"));
  // a label that is neither a class nor the ignore index
  std::vector<int64_t> bv(18, 2);
  bv[7] = 9;
  Tensor bad = labels_of(bv, {2, 3, 3});
  REQUIRE_THROWS_WITH(ops::ohem_cross_entropy(x, bad, 255), Catch::Contains("label 9"));
  REQUIRE_THROWS_WITH(ops::cross_entropy(x, bad, 255, 0.f, Tensor::ones({5})),
                      Catch::Contains("label 9"));
  if (cuda::available()) {
    Tensor xc = x.to(Device::cuda()), lc = l.to(Device::cuda());
    REQUIRE_THROWS_WITH(ops::cross_entropy(xc, lc, 255, 0.f, Tensor::ones({5})),
                        Catch::Contains("cross_entropy: class weight on cpu"));
    REQUIRE_THROWS_WITH(ops::ohem_cross_entropy(xc, lc, 255, 0.7f, 1, Tensor::ones({5})),
                        Catch::Contains("ohem_cross_entropy: class weight on cpu"));
  }
}

TEST_CASE("class weights of ones give the unweighted cross-entropy", "[seg_loss]") {
  for (float smoothing : {0.f, 0.2f}) {
    Tensor a = leaf({2, 6, 3, 4}, 3), b = leaf({2, 6, 3, 4}, 3);
    Tensor l = some_labels({2, 3, 4}, 6, 255, 5);
    Tensor ya = ops::cross_entropy(a, l, 255, smoothing);
    Tensor yb = ops::cross_entropy(b, l, 255, smoothing, Tensor::ones({6}));
    require_close(yb, ya, 1e-6, 1e-6, "loss");
    ya.backward();
    yb.backward();
    require_close(b.grad(), a.grad(), 1e-7, 1e-5, "dlogits");
  }
}

TEST_CASE("a class weight scales its pixels: loss and gradient against a hand computation",
          "[seg_loss]") {
  // logits [3, 2] (three pixels, two classes), labels {0, 1, 1}, weights {2, 0.5}
  Tensor x = Tensor::from_vector({0.f, 1.f, 2.f, -1.f, 0.5f, 0.5f}, {3, 2});
  x.set_requires_grad(true);
  const double w[2] = {2.0, 0.5};
  const int64_t y[3] = {0, 1, 1};
  Tensor loss = ops::cross_entropy(x, labels_of({0, 1, 1}, {3}), 255, 0.f,
                                   Tensor::from_vector({2.f, 0.5f}, {2}));
  const std::vector<float> xv = x.to_vector();
  double num = 0, den = 0;
  std::vector<float> grad(6);
  for (int i = 0; i < 3; ++i) {
    const double e0 = std::exp(double(xv[2 * i])), e1 = std::exp(double(xv[2 * i + 1]));
    const double p[2] = {e0 / (e0 + e1), e1 / (e0 + e1)};
    num += w[y[i]] * -std::log(p[y[i]]);
    den += w[y[i]];
  }
  for (int i = 0; i < 3; ++i) {
    const double e0 = std::exp(double(xv[2 * i])), e1 = std::exp(double(xv[2 * i + 1]));
    const double p[2] = {e0 / (e0 + e1), e1 / (e0 + e1)};
    for (int c = 0; c < 2; ++c) grad[2 * i + c] = float(w[y[i]] * (p[c] - (c == y[i])) / den);
  }
  REQUIRE(loss.to_vector()[0] == Approx(num / den).epsilon(1e-6));
  loss.backward();
  require_close(x.grad(), Tensor::from_vector(grad, {3, 2}), 1e-7, 1e-5, "dlogits");
}

TEST_CASE("nothing counted: the losses are 0 with a zero gradient", "[seg_loss]") {
  Tensor l = labels_of(std::vector<int64_t>(12, 255), {2, 2, 3});
  for (int which = 0; which < 3; ++which) {
    Tensor x = leaf({2, 4, 2, 3}, 11);
    Tensor y = which == 0   ? ops::cross_entropy(x, l, 255, 0.f, Tensor::ones({4}))
               : which == 1 ? ops::ohem_cross_entropy(x, l, 255, 0.7f, 5)
                            : ops::ohem_cross_entropy(x, l, 255, 0.7f, 5, Tensor::ones({4}));
    REQUIRE(y.to_vector()[0] == 0.f);
    y.backward();
    for (float g : x.grad().to_vector()) REQUIRE(g == 0.f);
  }
  // class weights that are 0 on every label present
  Tensor x = leaf({4, 3}, 12);
  Tensor y = ops::cross_entropy(x, labels_of({0, 0, 255, 0}, {4}), 255, 0.f,
                                Tensor::from_vector({0.f, 1.f, 1.f}, {3}));
  REQUIRE(y.to_vector()[0] == 0.f);
}

TEST_CASE("ohem_cross_entropy: with every pixel kept it is the mean of w[y] * -log p_y",
          "[seg_loss]") {
  // thresh 2 > every probability: threshold = max(p_(k), 2) = 2, all counted pixels kept
  const Shape s{2, 5, 3, 4};
  Tensor l = some_labels({2, 3, 4}, 5, 255, 21);
  int64_t counted = 0;
  for (int64_t v : l.to_vector_i64()) counted += v != 255;
  Tensor w = Tensor::from_vector({0.5f, 1.f, 1.5f, 2.f, 0.75f}, {5});
  double wsum = 0;
  const std::vector<float> wv = w.to_vector();
  for (int64_t v : l.to_vector_i64())
    if (v != 255) wsum += wv[static_cast<size_t>(v)];
  for (bool weighted : {false, true}) {
    Tensor a = leaf(s, 22), b = leaf(s, 22);
    Tensor ya = ops::ohem_cross_entropy(a, l, 255, 2.f, 1, weighted ? w : Tensor());
    // the weighted mean of cross_entropy divides by sum w[y]; OHEM's plain mean by the count
    Tensor yb = ops::mul(ops::cross_entropy(b, l, 255, 0.f, weighted ? w : Tensor()),
                         weighted ? float(wsum / double(counted)) : 1.f);
    require_close(ya, yb, 1e-6, 1e-5, "loss");
    ya.backward();
    yb.backward();
    require_close(a.grad(), b.grad(), 1e-7, 1e-5, "dlogits");
  }
}

TEST_CASE("ohem_cross_entropy keeps exactly the pixels below the threshold", "[seg_loss]") {
  // logits [5, 2] and labels 0: p_0 = sigmoid(x0 - x1) = 0.1, 0.3, 0.5, 0.7, 0.9 (pixel order
  // shuffled); min_kept 2 -> min_value = 0.5; thresh 0.4 -> threshold 0.5: pixels 0.1, 0.3 kept
  const double ps[5] = {0.7, 0.1, 0.9, 0.5, 0.3};
  std::vector<float> xv;
  for (double p : ps) {
    xv.push_back(float(std::log(p / (1 - p))));
    xv.push_back(0.f);
  }
  Tensor l = labels_of({0, 0, 0, 0, 0}, {5});
  auto run = [&](float thresh, int64_t min_kept) {
    Tensor x = Tensor::from_vector(xv, {5, 2});
    x.set_requires_grad(true);
    Tensor y = ops::ohem_cross_entropy(x, l, 255, thresh, min_kept);
    y.backward();
    std::vector<int> kept;
    const std::vector<float> g = x.grad().to_vector();
    for (int i = 0; i < 5; ++i) kept.push_back(g[2 * i] != 0.f);
    return std::make_pair(double(y.to_vector()[0]), kept);
  };
  auto mean_nll = [&](std::vector<double> p) {
    double s = 0;
    for (double v : p) s += -std::log(v);
    return s / double(p.size());
  };
  auto [l1, k1] = run(0.4f, 2);  // threshold = min_value 0.5
  CHECK(k1 == std::vector<int>{0, 1, 0, 0, 1});
  CHECK(l1 == Approx(mean_nll({0.1, 0.3})).epsilon(1e-5));
  auto [l2, k2] = run(0.8f, 2);  // threshold = thresh 0.8
  CHECK(k2 == std::vector<int>{1, 1, 0, 1, 1});
  CHECK(l2 == Approx(mean_nll({0.7, 0.1, 0.5, 0.3})).epsilon(1e-5));
  auto [l3, k3] = run(0.2f, 100);  // min_kept above the count: min_value = the largest, 0.9
  CHECK(k3 == std::vector<int>{1, 1, 0, 1, 1});
  auto [l4, k4] = run(0.05f, 0);  // min_kept raised to 1: min_value = 0.3, only 0.1 kept
  CHECK(k4 == std::vector<int>{0, 1, 0, 0, 0});
  CHECK(l4 == Approx(mean_nll({0.1})).epsilon(1e-5));
}

TEST_CASE("ohem_cross_entropy: ties at the threshold keep nothing, below it keep all",
          "[seg_loss]") {
  // zero logits: every probability 1/4; min_kept 2 -> min_value 1/4
  Tensor l = some_labels({1, 2, 3}, 4, 255, 31);
  Tensor x = Tensor::zeros({1, 4, 2, 3});
  x.set_requires_grad(true);
  Tensor y = ops::ohem_cross_entropy(x, l, 255, 0.1f, 2);  // threshold 1/4: nothing below
  REQUIRE(y.to_vector()[0] == 0.f);
  y.backward();
  for (float g : x.grad().to_vector()) REQUIRE(g == 0.f);
  Tensor x2 = Tensor::zeros({1, 4, 2, 3});
  Tensor y2 = ops::ohem_cross_entropy(x2, l, 255, 0.3f, 2);  // threshold 0.3: all kept
  REQUIRE(y2.to_vector()[0] == Approx(std::log(4.0)).epsilon(1e-6));
}
