// Engine ops on CUDA against the same ops on the CPU, through the front-ends: channels-last
// layout handling, autograd, dtypes (f32 tight, bf16/f16 loose), Module::to and an optimizer
// step on the device.
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>

#include "engine/nn.h"
#include "engine/optim.h"
#include "test_util.h"

using namespace hr;

namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

struct Tol {
  double atol, rtol;
};
Tol tol_for(DType dt) {
  return dt == DType::f32 ? Tol{1e-4, 1e-4} : Tol{3e-2, 3e-2};
}

// Runs f on CPU (f32) and on CUDA (dtype dt) with the same inputs and the same upstream gradient,
// and compares the output and every input gradient.
void compare_devices(const std::string& name, const Fn& f, const std::vector<Tensor>& host_inputs,
                     DType dt, std::vector<bool> float_input = {}) {
  if (float_input.empty()) float_input.assign(host_inputs.size(), true);
  std::vector<Tensor> ci, gi;
  for (size_t i = 0; i < host_inputs.size(); ++i) {
    Tensor h = host_inputs[i];
    // the reference sees the values the device sees (rounded to dt)
    if (float_input[i] && dt != DType::f32) h = h.to(dt).to(DType::f32);
    Tensor c = h.detach().clone();
    Tensor g = float_input[i] ? h.to(Device::cuda()).to(dt) : h.to(Device::cuda());
    if (float_input[i]) {
      c.set_requires_grad(true);
      g.set_requires_grad(true);
    }
    ci.push_back(c);
    gi.push_back(g);
  }
  Tensor yc = f(ci), yg = f(gi);
  REQUIRE(yg.device().is_cuda());
  REQUIRE(yg.shape() == yc.shape());
  Tol t = tol_for(dt);
  REQUIRE_CLOSE(yg.to_vector(), yc.to_vector(), t.atol, t.rtol);
  std::vector<float> r = test::randn(static_cast<size_t>(yc.numel()), 4242);
  Tensor seed_c = Tensor::from_vector(r, yc.shape());
  yc.backward(seed_c);
  yg.backward(seed_c.to(Device::cuda()).to(yg.dtype()));
  for (size_t i = 0; i < ci.size(); ++i) {
    if (!float_input[i]) continue;
    INFO(name << " gradient of input " << i << " (" << dtype_name(dt) << ")");
    REQUIRE(gi[i].grad().defined());
    REQUIRE_CLOSE(gi[i].grad().to_vector(), ci[i].grad().to_vector(), t.atol * 3, t.rtol * 3);
  }
}

Tensor rnd(const Shape& s, uint64_t seed, float sd = 1.f) { return Tensor::randn(s, seed, sd); }

}  // namespace

TEST_CASE("CUDA ops match the CPU through the front-ends", "[gpu][cublas]") {
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    INFO("dtype " << dtype_name(dt));
    compare_devices("conv3x3", [](const std::vector<Tensor>& in) {
      return ops::conv2d(in[0], in[1], in[2], {1, 1}, {1, 1});
    }, {rnd({2, 16, 12, 10}, 1), rnd({32, 16, 3, 3}, 2, 0.1f), rnd({32}, 3)}, dt, {true, true, false});
    compare_devices("conv3x3 s2", [](const std::vector<Tensor>& in) {
      return ops::conv2d(in[0], in[1], Tensor(), {2, 2}, {1, 1});
    }, {rnd({2, 32, 13, 11}, 4), rnd({64, 32, 3, 3}, 5, 0.1f)}, dt);
    compare_devices("relu(add)", [](const std::vector<Tensor>& in) {
      return ops::relu(ops::add(in[0], in[1]));
    }, {rnd({2, 8, 5, 7}, 6), rnd({2, 8, 5, 7}, 7)}, dt);
    compare_devices("upsample nearest x2", [](const std::vector<Tensor>& in) {
      return ops::upsample_nearest_scale(in[0], 2.0);
    }, {rnd({2, 8, 6, 5}, 8)}, dt);
    for (bool ac : {false, true})
      compare_devices("upsample bilinear", [ac](const std::vector<Tensor>& in) {
        return ops::upsample_bilinear(in[0], {13, 9}, ac);
      }, {rnd({2, 8, 6, 5}, 9)}, dt);
    compare_devices("concat", [](const std::vector<Tensor>& in) {
      return ops::concat({in[0], in[1]}, 1);
    }, {rnd({2, 8, 4, 3}, 10), rnd({2, 16, 4, 3}, 11)}, dt);
    compare_devices("avg_pool", [](const std::vector<Tensor>& in) {
      return ops::avg_pool2d(in[0], {3, 3}, {2, 2}, {1, 1});
    }, {rnd({2, 8, 9, 7}, 12)}, dt);
    compare_devices("global_avg_pool + linear", [](const std::vector<Tensor>& in) {
      return ops::linear(ops::global_avg_pool(in[0]), in[1], in[2]);
    }, {rnd({2, 16, 5, 5}, 13), rnd({10, 16}, 14), rnd({10}, 15)}, dt, {true, true, false});
    compare_devices("heatmap_loss", [](const std::vector<Tensor>& in) {
      return ops::heatmap_loss(in[0], in[1], in[2]);
    }, {rnd({2, 17, 8, 6}, 16), rnd({2, 17, 8, 6}, 17), Tensor::ones({2, 17})}, dt, {true, false, false});
  }
}

TEST_CASE("CUDA batch norm (train and eval) matches the CPU, running stats included", "[gpu]") {
  for (DType dt : {DType::f32, DType::bf16}) {
    for (bool training : {true, false}) {
      Tensor rm_c = rnd({8}, 20, 0.2f), rv_c = Tensor::full({8}, 1.5f);
      Tensor rm_g = rm_c.to(Device::cuda()), rv_g = rv_c.to(Device::cuda());
      int call = 0;
      compare_devices("batch_norm", [&](const std::vector<Tensor>& in) {
        bool gpu = in[0].device().is_cuda();
        ++call;
        return ops::batch_norm(in[0], in[1], in[2], gpu ? rm_g : rm_c, gpu ? rv_g : rv_c, training);
      }, {rnd({4, 8, 6, 5}, 21, 2.f), rnd({8}, 22), rnd({8}, 23)}, dt, {true, false, false});
      REQUIRE_CLOSE(rm_g.to_vector(), rm_c.to_vector(), 1e-4, 1e-3);
      REQUIRE_CLOSE(rv_g.to_vector(), rv_c.to_vector(), 1e-4, 1e-3);
    }
  }
}

TEST_CASE("cross entropy on CUDA matches the CPU", "[gpu]") {
  std::vector<int64_t> lab(2 * 4 * 3);
  for (size_t i = 0; i < lab.size(); ++i) lab[i] = (i % 7 == 3) ? 255 : static_cast<int64_t>(i % 5);
  Tensor labels = Tensor::from_vector_i64(lab, {2, 4, 3});
  compare_devices("cross_entropy", [&](const std::vector<Tensor>& in) {
    return ops::cross_entropy(in[0], in[1], 255);
  }, {rnd({2, 5, 4, 3}, 30), labels}, DType::f32, {true, false});
}

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
