// HRNetV2 + OCR (seg_hrnet_ocr): the official configs (parameter counts, key names, outputs),
// forward and every gradient against PyTorch (tests/data/model_ocr.safetensors from
// tools/gen_ocr_reference.py, whose OCR classes are checked against the official module code),
// eagerly and through the static graph (training step; inference with batch norm folded), the
// Dropout2d mask (the engine's generator reproduced in the reference; a fresh mask every step,
// the same sequence eagerly and in a graph), initialisation, a plain seg checkpoint loaded into
// the OCR model, and config errors.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "engine/autograd.h"
#include "engine/checkpoint.h"
#include "engine/graph.h"
#include "engine/ops.h"
#include "models/config.h"
#include "models/hrnet.h"
#include "ref_data.h"
#include "small_specs.h"
#include "tensor_checks.h"
#include "test_util.h"

using namespace hr;
using namespace hr::models;

namespace {

using test::contains;
using test::error_of;
using test::require_parity;
using test::state_map;

const std::string kData = HR_TEST_DATA_DIR;
const char* const kOcrConfig =
    "/model_configs/seg_hrnet_ocr_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml";

// tools/gen_ocr_reference.py small_ocr(): the tiny seg backbone, OCR mid 12, key 6, 5 classes
ModelSpec small_ocr_spec(double dropout) {
  ModelSpec s = test::small_spec(Head::Seg, true);
  s.name = "small_ocr";
  s.align_corners = true;
  s.ocr = true;
  s.ocr_mid_channels = 12;
  s.ocr_key_channels = 6;
  s.ocr_dropout = dropout;
  s.num_outputs = 2;
  return s;
}

using Reference = test::RefData;
const char* const kReference = "model_ocr.safetensors";

// sum(y * u) as a scalar, written with bmm ([1,1,n] x [1,n,1]) so that it records into graphs:
// the gradient reaching y is exactly u.
Tensor dot(const Tensor& y, const Tensor& u) {
  const int64_t n = y.numel();
  return ops::bmm(ops::reshape(y, {1, 1, n}), ops::reshape(u, {1, n, 1}));
}
Tensor upstream_loss(const std::vector<Tensor>& ys, const Reference& ref) {
  Tensor l = ops::add(dot(ys[0], ref["upstream.0"]), dot(ys[1], ref["upstream.1"]));
  return ops::reshape(l, {});
}

double largest_gradient(const HRNet& model, const Reference& ref) {
  double m = 0;
  for (auto& [k, p] : model.named_parameters())
    for (float v : ref["grad." + k].to_vector()) m = std::max(m, double(std::fabs(v)));
  return m;
}

}  // namespace

TEST_CASE("official OCR configs: params, key names, outputs", "[ocr][models]") {
  Config cfg = Config::load(kData + kOcrConfig);
  ModelSpec spec = spec_from_config(cfg);
  CHECK(spec.head == Head::Seg);
  CHECK(spec.ocr);
  CHECK(spec.num_outputs == 2);
  CHECK(spec.ocr_mid_channels == 512);
  CHECK(spec.ocr_key_channels == 256);
  CHECK(spec.ocr_dropout == 0.05);
  CHECK(spec.align_corners);  // the file leaves MODEL.ALIGN_CORNERS at the default, True
  CHECK(spec.num_classes == 19);
  HRNet model(spec);
  // PyTorch's count for the official module code (tools/gen_ocr_reference.py --count)
  CHECK(model.num_parameters() == 70372678);
  ModelStats st = model.stats({1, 3, 1024, 2048});
  CHECK(st.params == 70372678);
  REQUIRE(st.outputs.size() == 2);
  CHECK(st.outputs[0] == Shape{1, 19, 256, 512});
  CHECK(st.outputs[1] == Shape{1, 19, 256, 512});
  // the attention's products: gather 512x19 per pixel, similarity and context 256x19 each
  CHECK(st.bmm_macs == 256.0 * 512 * (512.0 * 19 + 2 * 256.0 * 19));
  auto m = state_map(model);
  const std::vector<std::pair<std::string, Shape>> keys = {
      {"conv3x3_ocr.0.weight", {512, 720, 3, 3}},
      {"conv3x3_ocr.0.bias", {512}},
      {"conv3x3_ocr.1.running_var", {512}},
      {"ocr_distri_head.object_context_block.f_pixel.0.weight", {256, 512, 1, 1}},
      {"ocr_distri_head.object_context_block.f_pixel.1.0.weight", {256}},
      {"ocr_distri_head.object_context_block.f_pixel.2.weight", {256, 256, 1, 1}},
      {"ocr_distri_head.object_context_block.f_pixel.3.0.num_batches_tracked", {}},
      {"ocr_distri_head.object_context_block.f_object.3.0.bias", {256}},
      {"ocr_distri_head.object_context_block.f_down.0.weight", {256, 512, 1, 1}},
      {"ocr_distri_head.object_context_block.f_down.1.0.running_mean", {256}},
      {"ocr_distri_head.object_context_block.f_up.0.weight", {512, 256, 1, 1}},
      {"ocr_distri_head.object_context_block.f_up.1.0.weight", {512}},
      {"ocr_distri_head.conv_bn_dropout.0.weight", {512, 1024, 1, 1}},
      {"ocr_distri_head.conv_bn_dropout.1.0.bias", {512}},
      {"cls_head.weight", {19, 512, 1, 1}},
      {"cls_head.bias", {19}},
      {"aux_head.0.weight", {720, 720, 1, 1}},
      {"aux_head.0.bias", {720}},
      {"aux_head.1.running_mean", {720}},
      {"aux_head.3.weight", {19, 720, 1, 1}},
      {"aux_head.3.bias", {19}},
  };
  for (const auto& [k, shape] : keys) {
    INFO(k);
    REQUIRE(m.count(k));
    CHECK(m.at(k).shape() == shape);
  }
  for (const auto& [k, t] : m) CHECK_FALSE(contains(k, "last_layer"));
  CHECK_FALSE(m.count("ocr_distri_head.object_context_block.f_pixel.0.bias"));
  CHECK_FALSE(m.count("ocr_distri_head.conv_bn_dropout.0.bias"));
  // the head's order in the state dict: after stage4, conv3x3_ocr ... cls_head, aux_head last
  const NamedTensors sd = model.state_dict();
  CHECK(sd.back().first == "aux_head.3.bias");
  auto pos = [&](const std::string& k) {
    return std::find_if(sd.begin(), sd.end(), [&](const auto& e) { return e.first == k; }) -
           sd.begin();
  };
  REQUIRE(m.count("stage4.2.fuse_layers.3.2.0.1.num_batches_tracked"));
  CHECK(pos("conv3x3_ocr.0.weight") > pos("stage4.2.fuse_layers.3.2.0.1.num_batches_tracked"));
  CHECK(pos("cls_head.bias") < pos("aux_head.0.weight"));

  // Pascal-Context's 59 classes (the official pascal_ctx OCR file): 70,422,038 in PyTorch
  std::string text = test::slurp(kData + kOcrConfig);
  const size_t p = text.find("NUM_CLASSES: 19");
  REQUIRE(p != std::string::npos);
  text.replace(p, 15, "NUM_CLASSES: 59");
  CHECK(HRNet(spec_from_config(Config::from_yaml(text, "ocr59.yaml"))).num_parameters() ==
        70422038);
}

TEST_CASE("OCR config errors name the file and the field", "[ocr][config]") {
  const std::string text = test::slurp(kData + kOcrConfig);
  auto spec_error = [](const std::string& t) {
    return error_of([&] { spec_from_config(Config::from_yaml(t, "bad_ocr.yaml")); });
  };
  std::string e = spec_error([&] {
    std::string t = text;
    t.replace(t.find("NUM_OUTPUTS: 2"), 14, "NUM_OUTPUTS: 1");
    return t;
  }());
  CHECK(contains(e, "bad_ocr.yaml"));
  CHECK(contains(e, "MODEL.NUM_OUTPUTS"));
  e = spec_error([&] {
    std::string t = text;
    t.replace(t.find("  NUM_OUTPUTS: 2"), 16, "  NUM_OUTPUTS: 2\n  OCR:\n    KEY_CHANNELS: 0");
    return t;
  }());
  CHECK(contains(e, "MODEL.OCR.KEY_CHANNELS"));
  // a plain seg file with two outputs: seg_hrnet gives one
  const std::string seg = test::slurp(
      kData + "/model_configs/seg_hrnet_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml");
  std::string t = seg;
  t.replace(t.find("  NAME: seg_hrnet"), 17, "  NAME: seg_hrnet\n  NUM_OUTPUTS: 2");
  CHECK(contains(spec_error(t), "MODEL.NUM_OUTPUTS"));
  CHECK_FALSE(spec_from_config(Config::from_yaml(seg, "seg.yaml")).ocr);
}

TEST_CASE("OCR head matches PyTorch: forward, every gradient, the input's gradient",
          "[ocr][parity]") {
  Reference ref(kReference);
  HRNet model(small_ocr_spec(0.0), 77);
  std::string keys;
  for (auto& [k, t] : model.state_dict()) keys += (keys.empty() ? "" : "\n") + k;
  CHECK(keys == ref.meta("keys"));
  CHECK(std::to_string(model.num_parameters()) == ref.meta("params"));
  model.load_state_dict(ref.state());
  const Tensor& x0 = ref["input"];
  {
    model.eval();
    NoGradGuard g;
    auto outs = model.forward_all(x0);
    REQUIRE(outs.size() == 2);
    for (size_t i = 0; i < 2; ++i)
      require_parity(outs[i], ref["out_eval." + std::to_string(i)],
                    "eval output " + std::to_string(i));
    require_parity(model.forward(x0), ref["out_eval.1"], "forward(): the OCR output");
  }
  model.train();
  Tensor x = x0.clone();
  x.set_requires_grad(true);
  auto outs = model.forward_all(x);
  for (size_t i = 0; i < 2; ++i)
    require_parity(outs[i], ref["out_train." + std::to_string(i)],
                  "train output " + std::to_string(i));
  upstream_loss(outs, ref).backward();
  const double largest = largest_gradient(model, ref);
  for (auto& [k, p] : model.named_parameters())
    require_parity(p.grad(), ref["grad." + k], "grad " + k, largest);
  require_parity(x.grad(), ref["grad_input"], "grad input");
  for (auto& [k, b] : model.named_buffers()) {
    if (b.dtype() == DType::i64)
      CHECK(b.to_vector_i64() == ref["after." + k].to_vector_i64());
    else
      require_parity(b, ref["after." + k], "buffer " + k);
  }
}

TEST_CASE("OCR head through static graphs: the training step and folded inference",
          "[ocr][parity][graph]") {
  Reference ref(kReference);
  HRNet model(small_ocr_spec(0.0), 77);
  model.load_state_dict(ref.state());
  const Tensor& x0 = ref["input"];

  // training step: every parameter and the input as parameters of the graph, by handle
  model.train();
  Tensor x = x0.clone();
  x.set_requires_grad(true);
  graph::Graph g;
  graph::GraphIR& ir = g.ir();
  std::vector<Tensor> ys = model.forward_all(ir.symbolic(ir.param(x, "input")));
  g.output(ys[0], "aux");
  g.output(ys[1], "out");
  graph::CompileOptions co;
  co.loss = upstream_loss(ys, ref);
  g.output(co.loss, "loss");
  graph::Executable step(std::move(g), co);
  step.run();
  require_parity(step.output("aux"), ref["out_train.0"], "graph train output 0");
  require_parity(step.output("out"), ref["out_train.1"], "graph train output 1");
  const double largest = largest_gradient(model, ref);
  for (auto& [k, p] : model.named_parameters())
    require_parity(step.grad(p), ref["grad." + k], "graph grad " + k, largest);
  require_parity(step.grad(x), ref["grad_input"], "graph grad input");
  for (auto& [k, b] : model.named_buffers())
    if (b.dtype() != DType::i64) require_parity(b, ref["after." + k], "graph buffer " + k);
  step.run_interleaved(3);  // any stream order: the same gradients
  require_parity(step.grad(x), ref["grad_input"], "interleaved graph grad input");

  // inference: batch norm folded into the convolutions before it (conv3x3_ocr's biased conv
  // included), the attention's bmm and softmax as they are
  model.load_state_dict(ref.state());
  model.eval();
  graph::InferenceRunner infer([&model](const Tensor& in) { return model.forward_all(in); },
                               Device::cpu());
  auto outs = infer(x0);
  REQUIRE(outs.size() == 2);
  require_parity(outs[0], ref["out_eval.0"], "inference graph output 0");
  require_parity(outs[1], ref["out_eval.1"], "inference graph output 1");
  CHECK(infer.last()->stats().folded > 0);
  const GraphPlans plans = plan_graphs(model, x0.shape());
  CHECK(plans.has_training);
  CHECK(plans.training.arena_bytes > 0);
}

TEST_CASE("OCR Dropout2d: the reference's mask, a fresh one every step, eager and graph alike",
          "[ocr][dropout]") {
  Reference ref(kReference);
  const uint64_t seed = std::stoull(ref.meta("dropout_seed"));
  HRNet model(small_ocr_spec(0.05), 5);
  model.load_state_dict(ref.state());
  const Tensor& x = ref["input"];
  model.train();
  model.seed_dropout(seed);
  REQUIRE(model.dropout_state().to_vector_i64() == std::vector<int64_t>{int64_t(seed), 0});
  std::vector<Tensor> eager;
  {
    NoGradGuard g;
    eager.push_back(model.forward_all(x)[1]);
    eager.push_back(model.forward_all(x)[1]);
  }
  require_parity(eager[0], ref["out_drop.1"], "dropout output at step 0");
  CHECK(model.dropout_state().to_vector_i64()[1] == 2);
  CHECK(eager[0].to_vector() != eager[1].to_vector());  // a fresh mask

  // the same sequence from a compiled training-mode graph; the state advances per run
  model.load_state_dict(ref.state());
  model.seed_dropout(seed);
  graph::Graph g;
  std::vector<Tensor> ys = model.forward_all(g.input("x", x.shape()));
  g.output(ys[1], "out");
  graph::Executable exe(std::move(g));
  exe.set_input("x", x);
  for (int step = 0; step < 2; ++step) {
    exe.run();
    require_parity(exe.output("out"), eager[size_t(step)],
                  "graph dropout step " + std::to_string(step));
  }
  CHECK(model.dropout_state().to_vector_i64()[1] == 2);

  // a training step with the dropout on: the graph's gradients are the eager ones (the backward
  // applies the forward's mask)
  model.load_state_dict(ref.state());
  model.seed_dropout(seed);
  model.zero_grad();
  upstream_loss(model.forward_all(x), ref).backward();
  std::map<std::string, Tensor> eager_grads;
  for (auto& [k, p] : model.named_parameters()) eager_grads[k] = p.grad().clone();
  model.load_state_dict(ref.state());
  model.seed_dropout(seed);
  graph::Graph gt;
  graph::CompileOptions co;
  co.loss = upstream_loss(model.forward_all(gt.input("x", x.shape())), ref);
  gt.output(co.loss, "loss");
  graph::Executable train_step(std::move(gt), co);
  train_step.set_input("x", x);
  train_step.run();
  const double largest = largest_gradient(model, ref);
  for (auto& [k, p] : model.named_parameters())
    require_parity(train_step.grad(p), eager_grads.at(k), "dropout graph grad " + k, largest);
  CHECK(model.dropout_state().to_vector_i64()[1] == 1);

  // eval: no dropout, no state change
  model.eval();
  {
    NoGradGuard g2;
    model.forward_all(x);
  }
  CHECK(model.dropout_state().to_vector_i64()[1] == 1);
  // init_weights resets the generator
  model.init_weights(9);
  CHECK(model.dropout_state().to_vector_i64() == std::vector<int64_t>{9, 0});
}

TEST_CASE("dropout2d: rate, scale, determinism, the gradient is the mask", "[ocr][dropout]") {
  const float p = 0.05f, scale = 1.f / (1.f - p);
  Tensor st = ops::dropout_state(42);
  Tensor x = Tensor::ones({64, 512, 1, 2});
  auto [y, mask] = ops::dropout2d(x, st, p);
  CHECK(st.to_vector_i64() == std::vector<int64_t>{42, 1});
  auto m = mask.to_vector(), yv = y.to_vector();
  int64_t dropped = 0;
  for (size_t i = 0; i < m.size(); ++i) {
    REQUIRE((m[i] == 0.f || m[i] == scale));
    dropped += m[i] == 0.f;
    CHECK(yv[2 * i] == m[i]);
    CHECK(yv[2 * i + 1] == m[i]);
  }
  // 32768 channels at p = 0.05: 1638.4 expected, sd 39.5
  CHECK(std::abs(double(dropped) - 1638.4) < 5 * 39.5);
  auto [y2, mask2] = ops::dropout2d(x, st, p);
  CHECK(mask2.to_vector() != m);  // the next step draws anew
  Tensor again = ops::dropout_state(42);
  CHECK(ops::dropout2d(x, again, p)[1].to_vector() == m);  // same seed and step: same mask
  Tensor other = ops::dropout_state(43);
  CHECK(ops::dropout2d(x, other, p)[1].to_vector() != m);

  // the backward multiplies by the mask drawn in the forward
  Tensor xr = Tensor::randn({2, 8, 3, 3}, 7);
  xr.set_requires_grad(true);
  Tensor s3 = ops::dropout_state(1);
  auto [yr, mr] = ops::dropout2d(xr, s3, 0.5f);
  Tensor u = Tensor::randn({2, 8, 3, 3}, 8);
  ops::reshape(ops::bmm(ops::reshape(yr, {1, 1, 144}), ops::reshape(u, {1, 144, 1})), {})
      .backward();
  auto gx = xr.grad().to_vector(), uv = u.to_vector(), mv = mr.to_vector();
  for (size_t i = 0; i < gx.size(); ++i) CHECK(gx[i] == uv[i] * mv[i / 9]);
  CHECK(std::count(mv.begin(), mv.end(), 0.f) > 0);

  CHECK(contains(error_of([&] { ops::dropout2d(x, Tensor::zeros({2}), p); }), "i64 [2]"));
  CHECK(contains(error_of([&] { ops::dropout2d(x, st, 1.5f); }), "dropout2d: p"));
  CHECK(contains(error_of([&] { ops::dropout2d(Tensor::ones({4}), st, p); }), "[N,C,...]"));
}

TEST_CASE("bmm and softmax errors name the op and the shapes", "[ocr]") {
  std::string e = error_of(
      [] { ops::bmm(Tensor::ones({2, 3, 4}), Tensor::ones({2, 5, 6}), false, false); });
  CHECK(contains(e, "bmm: a [2, 3, 4] and b [2, 5, 6] do not multiply"));
  e = error_of([] { ops::bmm(Tensor::ones({3, 4}), Tensor::ones({4, 5})); });
  CHECK(contains(e, "bmm"));
  CHECK(contains(e, "[3, 4]"));
  e = error_of([] { ops::softmax(Tensor::ones({2, 3}), 2); });
  CHECK(contains(e, "softmax: dim 2 is out of range for a 2-D tensor"));
}

TEST_CASE("OCR initialisation: PyTorch's defaults in the head, N(0, 0.001) in the backbone",
          "[ocr][models]") {
  HRNet model(small_ocr_spec(0.05), 3);
  auto m = state_map(model);
  auto within = [](const Tensor& t, double bound) {
    auto v = t.to_vector();
    return std::all_of(v.begin(), v.end(), [&](float f) { return std::fabs(f) <= bound; }) &&
           std::any_of(v.begin(), v.end(), [&](float f) { return std::fabs(f) > bound / 4; });
  };
  // kaiming uniform a = sqrt(5) and the default bias: U(+-1/sqrt(fan_in))
  CHECK(within(m.at("conv3x3_ocr.0.weight"), 1 / std::sqrt(20.0 * 9)));
  CHECK(within(m.at("conv3x3_ocr.0.bias"), 1 / std::sqrt(20.0 * 9)));
  CHECK(within(m.at("aux_head.0.weight"), 1 / std::sqrt(20.0)));
  CHECK(within(m.at("aux_head.3.bias"), 1 / std::sqrt(20.0)));
  CHECK(within(m.at("cls_head.weight"), 1 / std::sqrt(12.0)));
  CHECK(within(m.at("ocr_distri_head.conv_bn_dropout.0.weight"), 1 / std::sqrt(24.0)));
  CHECK(within(m.at("ocr_distri_head.object_context_block.f_up.0.weight"), 1 / std::sqrt(6.0)));
  // the backbone: N(0, 0.001)
  auto v = m.at("stage4.0.branches.3.0.conv1.weight").to_vector();
  CHECK(std::all_of(v.begin(), v.end(), [](float f) { return std::fabs(f) < 0.006f; }));
  auto ones = m.at("ocr_distri_head.conv_bn_dropout.1.0.weight").to_vector();
  CHECK(std::all_of(ones.begin(), ones.end(), [](float f) { return f == 1.f; }));
}

TEST_CASE("a plain seg checkpoint initialises an OCR model: last_layer -> aux_head",
          "[ocr][checkpoint]") {
  // tests/data/model_seg.pth: the tiny seg model of gen_model_reference.py, keys "model.*"
  HRNet ocr(small_ocr_spec(0.05), 1);
  const NamedTensors ckpt = load_checkpoint(kData + "/model_seg.pth");
  PretrainedReport rep = load_pretrained_layers(ocr, kData + "/model_seg.pth", {"*"});
  CHECK(rep.unexpected.empty());
  CHECK(rep.skipped.empty());
  CHECK(rep.loaded.size() == ckpt.size());
  // the OCR head's own modules are what the checkpoint lacks
  for (const std::string& k : rep.missing) {
    INFO(k);
    CHECK((k.rfind("conv3x3_ocr.", 0) == 0 || k.rfind("ocr_distri_head.", 0) == 0 ||
           k.rfind("cls_head.", 0) == 0));
  }
  CHECK(std::count(rep.missing.begin(), rep.missing.end(), "cls_head.weight") == 1);
  auto m = state_map(ocr);
  for (const auto& [k, t] : ckpt) {
    if (k == "model.last_layer.0.weight")
      CHECK(m.at("aux_head.0.weight").to_vector() == t.to_vector());
    if (k == "model.last_layer.3.bias") CHECK(m.at("aux_head.3.bias").to_vector() == t.to_vector());
    if (k == "model.stage4.0.fuse_layers.0.1.0.weight")
      CHECK(m.at("stage4.0.fuse_layers.0.1.0.weight").to_vector() == t.to_vector());
  }
  // a plain seg model keeps last_layer
  HRNet seg(test::small_spec(Head::Seg, true), 1);
  PretrainedReport plain = load_pretrained_layers(seg, kData + "/model_seg.pth", {"*"});
  CHECK(plain.missing.empty());
  CHECK(plain.unexpected.empty());
}
