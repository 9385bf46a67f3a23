// Autograd through every op: finite-difference checks for each differentiable input, gradient
// accumulation across shared uses, no-grad mode, and argument errors naming the op and shapes.
#include <catch2/catch.hpp>

#include "engine/ops.h"
#include "gradcheck.h"

using namespace hr;
using hr::test::gradcheck;

namespace {
Tensor rnd(const Shape& s, uint64_t seed, float stddev = 1.f) { return Tensor::randn(s, seed, stddev); }
// Values bounded away from zero so that ReLU kinks are not crossed by the finite difference.
Tensor away_from_zero(const Shape& s, uint64_t seed) {
  std::vector<float> v = hr::test::uniform(static_cast<size_t>(shape_numel(s)), seed, 0.1f, 1.f);
  std::vector<float> sign = hr::test::randn(v.size(), seed + 1);
  for (size_t i = 0; i < v.size(); ++i) v[i] *= sign[i] < 0 ? -1.f : 1.f;
  return Tensor::from_vector(v, s);
}
}  // namespace

TEST_CASE("conv2d gradients (x, w, bias)", "[autograd]") {
  struct Case { Shape x, w; std::array<int64_t, 2> stride, pad; };
  for (const Case& c : {Case{{2, 3, 5, 6}, {4, 3, 3, 3}, {1, 1}, {1, 1}},
                        Case{{1, 2, 7, 5}, {3, 2, 3, 3}, {2, 2}, {1, 1}},
                        Case{{2, 4, 4, 4}, {2, 4, 1, 1}, {1, 1}, {0, 0}},
                        Case{{1, 2, 6, 5}, {2, 2, 1, 3}, {2, 1}, {0, 1}}}) {
    gradcheck("conv2d", [&](const std::vector<Tensor>& in) {
      return ops::conv2d(in[0], in[1], in[2], c.stride, c.pad);
    }, {rnd(c.x, 1), rnd(c.w, 2, 0.5f), rnd({c.w[0]}, 3)});
  }
}

TEST_CASE("batch_norm gradients, training and inference", "[autograd]") {
  for (bool training : {true, false}) {
    Tensor rm = rnd({3}, 10, 0.3f), rv = Tensor::from_vector({0.5f, 1.5f, 2.f}, {3});
    gradcheck(training ? "batch_norm train" : "batch_norm eval",
              [&](const std::vector<Tensor>& in) {
                Tensor y = ops::batch_norm(in[0], in[1], in[2], rm, rv, training);
                return ops::mul(y, 1.f);
              },
              {rnd({2, 3, 3, 4}, 11, 2.f), rnd({3}, 12), rnd({3}, 13)}, {}, 1e-2f, 3e-3, 2e-2);
  }
  // [N, C] input (the classifier's BatchNorm1d case shares the op)
  Tensor rm = Tensor::zeros({4}), rv = Tensor::ones({4});
  gradcheck("batch_norm 2d", [&](const std::vector<Tensor>& in) {
    return ops::batch_norm(in[0], in[1], in[2], rm, rv, true);
  }, {rnd({5, 4}, 14), rnd({4}, 15), rnd({4}, 16)}, {}, 1e-2f, 3e-3, 2e-2);
}

TEST_CASE("element-wise gradients", "[autograd]") {
  gradcheck("relu", [](const std::vector<Tensor>& in) { return ops::relu(in[0]); },
            {away_from_zero({2, 3, 4, 5}, 20)}, {}, 1e-3f);
  gradcheck("add", [](const std::vector<Tensor>& in) { return ops::add(in[0], in[1]); },
            {rnd({2, 3, 4}, 21), rnd({2, 3, 4}, 22)});
  gradcheck("mul", [](const std::vector<Tensor>& in) { return ops::mul(in[0], -2.5f); },
            {rnd({7}, 23)});
}

TEST_CASE("resampling gradients", "[autograd]") {
  Tensor x = rnd({2, 3, 5, 7}, 30);
  gradcheck("nearest x2", [](const std::vector<Tensor>& in) {
    return ops::upsample_nearest_scale(in[0], 2.0);
  }, {x});
  gradcheck("nearest to 12x9", [](const std::vector<Tensor>& in) {
    return ops::upsample_nearest(in[0], {12, 9});
  }, {x});
  for (bool ac : {true, false}) {
    gradcheck("bilinear up", [ac](const std::vector<Tensor>& in) {
      return ops::upsample_bilinear(in[0], {11, 13}, ac);
    }, {x});
    gradcheck("bilinear down", [ac](const std::vector<Tensor>& in) {
      return ops::upsample_bilinear(in[0], {3, 4}, ac);
    }, {x});
    gradcheck("bilinear x1.5", [ac](const std::vector<Tensor>& in) {
      return ops::upsample_bilinear_scale(in[0], 1.5, ac);
    }, {x});
  }
}

TEST_CASE("concat, pooling, linear, reshape gradients", "[autograd]") {
  gradcheck("concat dim1", [](const std::vector<Tensor>& in) {
    return ops::concat({in[0], in[1], in[2]}, 1);
  }, {rnd({2, 1, 3, 2}, 40), rnd({2, 3, 3, 2}, 41), rnd({2, 2, 3, 2}, 42)});
  gradcheck("concat dim0", [](const std::vector<Tensor>& in) {
    return ops::concat({in[0], in[1]}, 0);
  }, {rnd({1, 3}, 43), rnd({2, 3}, 44)});
  for (bool cip : {true, false})
    gradcheck("avg_pool2d k3 s2 p1", [cip](const std::vector<Tensor>& in) {
      return ops::avg_pool2d(in[0], {3, 3}, {2, 2}, {1, 1}, cip);
    }, {rnd({2, 2, 7, 6}, 45)});
  gradcheck("global_avg_pool", [](const std::vector<Tensor>& in) {
    return ops::global_avg_pool(in[0]);
  }, {rnd({2, 3, 4, 5}, 46)});
  gradcheck("linear", [](const std::vector<Tensor>& in) {
    return ops::linear(in[0], in[1], in[2]);
  }, {rnd({3, 5}, 47), rnd({4, 5}, 48), rnd({4}, 49)});
  gradcheck("reshape", [](const std::vector<Tensor>& in) {
    return ops::mul(ops::reshape(in[0], {6, 4}), 3.f);
  }, {rnd({2, 3, 4}, 50)});
}

TEST_CASE("loss gradients", "[autograd]") {
  Tensor target = rnd({2, 3, 4, 5}, 60);
  Tensor weight = Tensor::from_vector({1, 0, 1, 1, 1, 0}, {2, 3, 1});
  gradcheck("heatmap_loss", [&](const std::vector<Tensor>& in) {
    return ops::heatmap_loss(in[0], target, weight);
  }, {rnd({2, 3, 4, 5}, 61)});
  Tensor labels = Tensor::from_vector_i64({0, 2, 255, 1, 3, 3, 255, 0, 1, 2, 2, 0}, {2, 2, 3});
  gradcheck("cross_entropy", [&](const std::vector<Tensor>& in) {
    return ops::cross_entropy(in[0], labels, 255);
  }, {rnd({2, 4, 2, 3}, 62)});
}

TEST_CASE("gradients accumulate over shared uses", "[autograd]") {
  // y = relu(x) + x + x*2: dy/dx = [x > 0] + 3
  Tensor x = away_from_zero({3, 4}, 70);
  x.set_requires_grad(true);
  Tensor y = ops::add(ops::add(ops::relu(x), x), ops::mul(x, 2.f));
  y.backward(Tensor::ones({3, 4}));
  std::vector<float> xv = x.to_vector(), g = x.grad().to_vector();
  for (size_t i = 0; i < xv.size(); ++i) REQUIRE(g[i] == (xv[i] > 0 ? 4.f : 3.f));
  // A second backward adds to the existing gradient.
  Tensor z = ops::mul(x, 1.f);
  z.backward(Tensor::ones({3, 4}));
  std::vector<float> g2 = x.grad().to_vector();
  for (size_t i = 0; i < g.size(); ++i) REQUIRE(g2[i] == g[i] + 1.f);
}

TEST_CASE("a diamond graph delivers both branches before the shared node runs", "[autograd]") {
  // h = conv(x); y = relu(h) + upsample(avgpool(h)) -- h's node must receive both gradients
  Tensor x = Tensor::randn({1, 2, 4, 4}, 80);
  Tensor w = Tensor::randn({2, 2, 3, 3}, 81, 0.5f);
  w.set_requires_grad(true);
  auto f = [&](const Tensor& wt) {
    Tensor h = ops::conv2d(x, wt, Tensor(), {1, 1}, {1, 1});
    Tensor p = ops::upsample_nearest_scale(ops::avg_pool2d(h, {2, 2}, {2, 2}), 2.0);
    return ops::sum_all(ops::add(ops::mul(h, 3.f), p));
  };
  f(w).backward();
  gradcheck("diamond", [&](const std::vector<Tensor>& in) { return f(in[0]); },
            {Tensor::randn({2, 2, 3, 3}, 81, 0.5f)});
}

TEST_CASE("no-grad mode records nothing", "[autograd]") {
  Tensor x = Tensor::randn({2, 3}, 90);
  x.set_requires_grad(true);
  {
    InferenceMode guard;
    Tensor y = ops::relu(x);
    REQUIRE_FALSE(y.requires_grad());
    REQUIRE(y.grad_fn() == nullptr);
  }
  Tensor y = ops::relu(x);
  REQUIRE(y.requires_grad());
  REQUIRE(y.grad_fn() != nullptr);
}

TEST_CASE("op argument errors name the op and the shapes", "[errors]") {
  Tensor x = Tensor::randn({1, 3, 8, 8}, 1), w = Tensor::randn({4, 2, 3, 3}, 2);
  REQUIRE_THROWS_WITH(ops::conv2d(x, w), Catch::Contains("conv2d") && Catch::Contains("[1, 3, 8, 8]") &&
                                             Catch::Contains("[4, 2, 3, 3]"));
  REQUIRE_THROWS_WITH(ops::add(Tensor::zeros({2, 3}), Tensor::zeros({3, 2})),
                      Catch::Contains("add") && Catch::Contains("[2, 3]") && Catch::Contains("[3, 2]"));
  REQUIRE_THROWS_WITH(ops::linear(Tensor::zeros({2, 3}), Tensor::zeros({4, 5})),
                      Catch::Contains("linear") && Catch::Contains("[4, 5]"));
  REQUIRE_THROWS_WITH(ops::batch_norm(x, Tensor::ones({4}), Tensor::zeros({3}), Tensor(), Tensor(), true),
                      Catch::Contains("batch_norm") && Catch::Contains("[4]"));
  REQUIRE_THROWS_WITH(ops::conv2d(Tensor::zeros({1, 3, 2, 2}), Tensor::zeros({1, 3, 5, 5})),
                      Catch::Contains("conv2d") && Catch::Contains("smaller"));
  REQUIRE_THROWS_WITH(ops::conv2d(x.to(DType::bf16), Tensor::randn({4, 3, 3, 3}, 3).to(DType::bf16)),
                      Catch::Contains("conv2d") && Catch::Contains("bf16"));
  REQUIRE_THROWS_WITH(ops::cross_entropy(Tensor::zeros({2, 3}), Tensor::zeros({2})),
                      Catch::Contains("cross_entropy") && Catch::Contains("i64"));
}
