// Modules, state dicts (PyTorch names and order, strict loading errors), optimizers' exact
// resume, and a small network that learns.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>

#include "engine/checkpoint.h"
#include "engine/nn.h"
#include "engine/optim.h"
#include "test_util.h"

using namespace hr;

namespace {
// conv-bn-relu block with a residual, named as in torchvision/HRNet.
struct Block : Module {
  std::shared_ptr<Conv2d> conv1;
  std::shared_ptr<BatchNorm2d> bn1;
  Block(int64_t c) {
    conv1 = register_module("conv1", std::make_shared<Conv2d>(c, c, 3, 1, 1, false));
    bn1 = register_module("bn1", std::make_shared<BatchNorm2d>(c));
  }
  Tensor forward(const Tensor& x) override {
    return ops::relu(ops::add((*bn1)((*conv1)(x)), x));
  }
};

struct Net : Module {
  std::shared_ptr<Conv2d> stem;
  std::shared_ptr<Sequential> layer1;
  std::shared_ptr<Conv2d> head;
  Net() {
    stem = register_module("stem", std::make_shared<Conv2d>(1, 4, 3, 1, 1));
    layer1 = register_module("layer1", std::make_shared<Sequential>());
    layer1->add(std::make_shared<Block>(4)).add(std::make_shared<Block>(4));
    head = register_module("head", std::make_shared<Conv2d>(4, 1, 1));
  }
  Tensor forward(const Tensor& x) override { return (*head)((*layer1)(ops::relu((*stem)(x)))); }
};
}  // namespace

TEST_CASE("state_dict uses PyTorch names and order", "[nn]") {
  Net net;
  std::vector<std::string> keys;
  for (auto& [k, t] : net.state_dict()) keys.push_back(k);
  std::vector<std::string> want = {
      "stem.weight", "stem.bias",
      "layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias",
      "layer1.0.bn1.running_mean", "layer1.0.bn1.running_var", "layer1.0.bn1.num_batches_tracked",
      "layer1.1.conv1.weight", "layer1.1.bn1.weight", "layer1.1.bn1.bias",
      "layer1.1.bn1.running_mean", "layer1.1.bn1.running_var", "layer1.1.bn1.num_batches_tracked",
      "head.weight", "head.bias"};
  REQUIRE(keys == want);
  REQUIRE(net.named_parameters().size() == 10);
  REQUIRE(net.num_parameters() == 4 * 9 + 4 + 2 * (4 * 4 * 9 + 8) + 4 + 1);
}

TEST_CASE("load_state_dict copies values and names every bad key", "[nn]") {
  manual_seed(1);
  Net a;
  manual_seed(2);
  Net b;
  NamedTensors sd;
  for (auto& [k, t] : a.state_dict()) sd.emplace_back("module." + k, t.clone());
  b.load_state_dict(sd);
  auto sa = a.state_dict(), sb = b.state_dict();
  for (size_t i = 0; i < sa.size(); ++i) {
    if (sa[i].second.dtype() != DType::f32) continue;
    REQUIRE(sa[i].second.to_vector() == sb[i].second.to_vector());
  }
  // missing + unexpected + mis-shaped, all named
  NamedTensors bad;
  for (auto& [k, t] : a.state_dict())
    if (k != "head.bias" && k != "stem.weight") bad.emplace_back(k, t);
  bad.emplace_back("stem.weight", Tensor::zeros({4, 1, 5, 5}));
  bad.emplace_back("extra.weight", Tensor::zeros({1}));
  try {
    b.load_state_dict(bad);
    FAIL("no error");
  } catch (const Error& e) {
    std::string m = e.what();
    CHECK(m.find("missing: head.bias") != std::string::npos);
    CHECK(m.find("unexpected: extra.weight") != std::string::npos);
    CHECK(m.find("mis-shaped: stem.weight has shape [4, 1, 5, 5], expected [4, 1, 3, 3]") !=
          std::string::npos);
  }
  // num_batches_tracked may be absent
  NamedTensors nonbt;
  for (auto& [k, t] : a.state_dict())
    if (k.find("num_batches_tracked") == std::string::npos) nonbt.emplace_back(k, t);
  REQUIRE_NOTHROW(b.load_state_dict(nonbt));
}

TEST_CASE("batch norm running statistics and num_batches_tracked update in training only", "[nn]") {
  BatchNorm2d bn(2);
  Tensor x = Tensor::randn({4, 2, 3, 3}, 5, 2.f);
  bn.train();
  bn(x);
  bn(x);
  REQUIRE(bn.num_batches_tracked.to_vector_i64()[0] == 2);
  // running_mean after two steps from 0 with momentum 0.1: mean * (1 - 0.9^2)
  std::vector<float> xv = x.to_vector();
  for (int c = 0; c < 2; ++c) {
    double s = 0;
    int n = 0;
    for (int b = 0; b < 4; ++b)
      for (int i = 0; i < 9; ++i, ++n) s += xv[(b * 2 + c) * 9 + i];
    double mean = s / n;
    REQUIRE(bn.running_mean.to_vector()[c] == Approx(mean * (1 - 0.81)).epsilon(1e-5));
  }
  std::vector<float> before = bn.running_mean.to_vector();
  bn.eval();
  bn(x);
  REQUIRE(bn.running_mean.to_vector() == before);
  REQUIRE(bn.num_batches_tracked.to_vector_i64()[0] == 2);
}

TEST_CASE("optimizer state round-trips for an exact resume", "[optim]") {
  for (int kind = 0; kind < 3; ++kind) {
    auto make = [&](std::vector<Tensor> p) -> std::unique_ptr<Optimizer> {
      if (kind == 0) {
        SGDOptions o;
        o.lr = 0.1;
        o.momentum = 0.9;
        o.nesterov = true;
        o.weight_decay = 1e-4;
        return std::make_unique<SGD>(p, o);
      }
      if (kind == 1) return std::make_unique<Adam>(p, AdamOptions{});
      return make_adamw(p, 1e-2);
    };
    auto run = [&](Tensor& p, Optimizer& opt, int from, int to) {
      for (int s = from; s < to; ++s) {
        p.set_grad(Tensor::randn(p.shape(), 100 + s));
        opt.step();
      }
    };
    Tensor p1 = Tensor::randn({5}, 1), p2;
    p1.set_requires_grad(true);
    auto o1 = make({p1});
    run(p1, *o1, 0, 3);
    p2 = p1.detach().clone();
    p2.set_requires_grad(true);
    NamedTensors st;
    for (auto& [k, t] : o1->state_dict()) st.emplace_back(k, t.clone());
    auto o2 = make({p2});
    o2->load_state_dict(st);
    run(p1, *o1, 3, 6);
    run(p2, *o2, 3, 6);
    INFO("optimizer kind " << kind);
    REQUIRE(p1.to_vector() == p2.to_vector());
    REQUIRE(o2->steps() == 6);
  }
}

TEST_CASE("a small residual network learns a regression task", "[nn]") {
  manual_seed(3);
  Net net;
  Adam opt(net.parameters(), AdamOptions{3e-3});
  // target: a fixed smooth function of the input image
  Tensor x = Tensor::randn({4, 1, 8, 8}, 9);
  std::vector<float> xv = x.to_vector(), tv(xv.size());
  for (size_t i = 0; i < xv.size(); ++i) tv[i] = std::tanh(2 * xv[i]);
  Tensor target = Tensor::from_vector(tv, x.shape());
  Tensor w = Tensor::ones({4, 1});
  float first = 0, last = 0;
  for (int it = 0; it < 150; ++it) {
    opt.zero_grad();
    Tensor loss = ops::heatmap_loss(net(x), target, w);
    loss.backward();
    opt.step();
    if (it == 0) first = loss.item();
    last = loss.item();
  }
  INFO("loss " << first << " -> " << last);
  REQUIRE(last < 0.1f * first);
}

TEST_CASE("checkpoints: module state round-trips through safetensors; .pth loads by name", "[checkpoint]") {
  manual_seed(11);
  Net a;
  const std::string path = "test_nn_roundtrip.safetensors";
  save_safetensors(path, a.state_dict(), {{"epoch", "3"}});
  std::map<std::string, std::string> meta;
  NamedTensors loaded = load_checkpoint(path, &meta);
  REQUIRE(meta.at("epoch") == "3");
  auto sd = a.state_dict();
  REQUIRE(loaded.size() == sd.size());
  std::map<std::string, Tensor> by_name(loaded.begin(), loaded.end());  // safetensors orders by dtype
  for (auto& [k, t] : sd) {
    INFO(k);
    REQUIRE(by_name.count(k));
    REQUIRE(by_name[k].dtype() == t.dtype());
    REQUIRE(by_name[k].shape() == t.shape());
    if (t.dtype() == DType::f32) REQUIRE(by_name[k].to_vector() == t.to_vector());
    else REQUIRE(by_name[k].to_vector_i64() == t.to_vector_i64());
  }
  manual_seed(12);
  Net b;
  b.load_state_dict(loaded);
  REQUIRE(b.state_dict()[0].second.to_vector() == sd[0].second.to_vector());
  std::remove(path.c_str());

  // torch.save zip written by PyTorch (tools/make_checkpoint_fixtures.py): values by formula
  NamedTensors pth = load_checkpoint(std::string(HR_TEST_DATA_DIR) + "/ckpt_state.pth");
  Tensor fc;
  for (auto& [k, t] : pth)
    if (k == "fc.weight") fc = t;
  REQUIRE(fc.defined());
  REQUIRE(fc.shape() == Shape{3, 5});
  std::vector<float> v = fc.to_vector();
  for (size_t i = 0; i < v.size(); ++i) REQUIRE(v[i] == 0.5f * i - 3.f);
  // the pre-1.6 pickle format is named as such
  REQUIRE_THROWS_WITH(load_checkpoint(std::string(HR_TEST_DATA_DIR) + "/ckpt_legacy.pth"),
                      Catch::Contains("ckpt_legacy.pth") && Catch::Contains("legacy"));
  REQUIRE_THROWS_WITH(load_checkpoint("/nonexistent/x.safetensors"), Catch::Contains("/nonexistent/x.safetensors"));
}

TEST_CASE("optimizer state with bad keys is one clear error", "[optim]") {
  Tensor p = Tensor::randn({5}, 1);
  p.set_requires_grad(true);
  SGDOptions o;
  o.momentum = 0.9;
  SGD opt({p}, o);
  const Tensor z = Tensor::zeros({5});
  for (const char* key : {"x.momentum_buffer", ".momentum_buffer", "99999999999999999999.momentum_buffer",
                          "0x.momentum_buffer", "nodot"}) {
    INFO(key);
    REQUIRE_THROWS_WITH(opt.load_state_dict({{key, z}}), Catch::Contains("optimizer state: bad key"));
  }
  REQUIRE_THROWS_WITH(opt.load_state_dict({{"step", Tensor::zeros({0})}}),
                      Catch::Contains("'step' must be one i64"));
}
