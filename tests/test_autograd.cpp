// The autograd engine: gradient accumulation across shared uses and repeated backward calls, a
// diamond graph, no-grad mode, and argument errors naming the op and shapes. Each op's own
// gradients (finite differences, every backend) are in the op table, test_backend_ops.cpp.
#include <catch2/catch.hpp>

#include "engine/ops.h"
#include "gradcheck.h"

using namespace hr;
using hr::test::gradcheck;

namespace {
// Values bounded away from zero so that ReLU kinks are not crossed by the finite difference.
Tensor away_from_zero(const Shape& s, uint64_t seed) {
  std::vector<float> v = hr::test::uniform(static_cast<size_t>(shape_numel(s)), seed, 0.1f, 1.f);
  std::vector<float> sign = hr::test::randn(v.size(), seed + 1);
  for (size_t i = 0; i < v.size(); ++i) v[i] *= sign[i] < 0 ? -1.f : 1.f;
  return Tensor::from_vector(v, s);
}
}  // namespace

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
