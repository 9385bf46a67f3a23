// Modules and tensors on CUDA against the CPU: a module moved with Module::to training with an
// optimizer, device copies in every dtype and layout, and bf16 autocast with fp32 master weights.
// Each op's values and gradients on CUDA (every dtype, eager and graph) are in the op table,
// test_backend_ops.cpp.
#include <catch2/catch.hpp>

#include <cmath>

#include "engine/nn.h"
#include "engine/optim.h"
#include "test_util.h"

using namespace hr;

namespace {

Tensor rnd(const Shape& s, uint64_t seed, float sd = 1.f) { return Tensor::randn(s, seed, sd); }

}  // namespace

TEST_CASE("a module moved to CUDA trains like the CPU copy", "[gpu]") {
  manual_seed(5);
  auto make = [] {
    auto s = std::make_shared<Sequential>();
    s->add(std::make_shared<Conv2d>(3, 8, 3, 1, 1, false))
        .add(std::make_shared<BatchNorm2d>(8))
        .add(std::make_shared<ReLU>())
        .add(std::make_shared<Conv2d>(8, 4, 1, 1, 0, true));
    return s;
  };
  auto a = make();
  auto b = make();
  b->load_state_dict(a->state_dict());
  b->to(Device::cuda());
  SGDOptions o;
  o.lr = 0.05;
  o.momentum = 0.9;
  SGD oa(a->parameters(), o), ob(b->parameters(), o);
  Tensor x = rnd({2, 3, 8, 8}, 40), t = rnd({2, 4, 8, 8}, 41), w = Tensor::ones({2, 4});
  Tensor xg = x.to(Device::cuda()), tg = t.to(Device::cuda()), wg = w.to(Device::cuda());
  for (int it = 0; it < 3; ++it) {
    oa.zero_grad();
    ob.zero_grad();
    Tensor la = ops::heatmap_loss((*a)(x), t, w), lb = ops::heatmap_loss((*b)(xg), tg, wg);
    REQUIRE(lb.item() == Approx(la.item()).epsilon(1e-4));
    la.backward();
    lb.backward();
    oa.step();
    ob.step();
  }
  auto sa = a->state_dict(), sb = b->state_dict();
  for (size_t i = 0; i < sa.size(); ++i) {
    INFO(sa[i].first);
    if (sa[i].second.dtype() != DType::f32) continue;
    REQUIRE_CLOSE(sb[i].second.to_vector(), sa[i].second.to_vector(), 1e-4, 1e-3);
  }
}

TEST_CASE("device copies round-trip every dtype and layout", "[gpu]") {
  Tensor x = rnd({2, 5, 3, 4}, 50);
  for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
    Tensor h = x.to(dt);
    Tensor g = h.to(Device::cuda());
    Tensor cl = g.contiguous(MemoryFormat::ChannelsLast);
    REQUIRE(cl.is_contiguous(MemoryFormat::ChannelsLast));
    REQUIRE(cl.to_vector() == h.to_vector());
    REQUIRE(cl.contiguous().to_vector() == h.to_vector());
    REQUIRE(g.to(DType::f32).to_vector() == h.to_vector());
  }
}

TEST_CASE("autocast: bf16 compute with fp32 master weights and fp32 gradients", "[gpu]") {
  manual_seed(9);
  auto make = [] {
    auto s = std::make_shared<Sequential>();
    s->add(std::make_shared<Conv2d>(8, 16, 3, 1, 1, false))
        .add(std::make_shared<BatchNorm2d>(16))
        .add(std::make_shared<ReLU>())
        .add(std::make_shared<Conv2d>(16, 4, 1, 1, 0, true));
    return s;
  };
  auto a = make();
  auto b = make();
  b->load_state_dict(a->state_dict());
  b->to(Device::cuda());
  Tensor x = rnd({2, 8, 12, 10}, 60), t = rnd({2, 4, 12, 10}, 61), w = Tensor::ones({2, 4});
  Tensor la = ops::heatmap_loss((*a)(x), t, w);
  la.backward();
  Tensor lb;
  {
    AutocastGuard ac(DType::bf16);
    Tensor y = (*b)(x.to(Device::cuda()));
    REQUIRE(y.dtype() == DType::bf16);
    lb = ops::heatmap_loss(y, t.to(Device::cuda()), w.to(Device::cuda()));
  }
  lb.backward();
  REQUIRE(lb.item() == Approx(la.item()).epsilon(3e-2));
  auto ga = a->gradients(), gb = b->gradients();
  for (auto& [name, g] : ga) {
    INFO(name);
    REQUIRE(gb[name].defined());
    REQUIRE(gb[name].dtype() == DType::f32);
    REQUIRE(gb[name].device().is_cuda());
    // bf16 operands and bf16 intermediate gradients: the weight gradient is a long sum with
    // cancellation (BN makes its input gradient zero-mean), so single elements may be off by a
    // few percent of the largest; the tensor as a whole must be within bf16 accuracy
    // (relative L2 error <= 2e-2), and no element grossly off.
    std::vector<float> gc = g.to_vector(), gg = gb[name].to_vector();
    double scale = 0, num = 0, den = 0;
    for (size_t i = 0; i < gc.size(); ++i) {
      scale = std::max(scale, double(std::fabs(gc[i])));
      num += (double(gg[i]) - gc[i]) * (double(gg[i]) - gc[i]);
      den += double(gc[i]) * gc[i];
    }
    const double rel_l2 = std::sqrt(num / std::max(den, 1e-30));
    INFO("relative L2 error " << rel_l2);
    REQUIRE(rel_l2 <= 2e-2);
    REQUIRE_CLOSE(gg, gc, 1e-1 * scale, 1e-1);
  }
}
