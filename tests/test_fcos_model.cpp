// HRNet-FCOS (HRNetV2p + FCOS) against the official modules (tests/data/model_fcos.safetensors
// from tools/gen_fcos_reference.py, which runs the authors' HRFPN, FCOSHead and
// FCOSLossComputation themselves): an official checkpoint's keys loaded through their prefixes,
// the head's outputs in eval and training mode (norm_eval: batch norm frozen while training),
// the dense targets of data::fcos_targets, the loss and every gradient, eagerly and through the
// static training graph; the official configs' model descriptions; initialisation.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <map>
#include <string>

#include "data/boxes.h"
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

const std::string kOfficial = std::string(HR_TEST_DATA_DIR) + "/model_configs";

// state(): the official keys (module.backbone.body..., module.rpn.head...)
using Reference = test::RefData;
const char* const kReference = "model_fcos.safetensors";

// tools/gen_fcos_reference.py: the tiny det backbone, HRFPN 32 channels at strides 8..128,
// two tower convs, 3 classes, norm_eval
ModelSpec small_fcos_spec() {
  ModelSpec s = test::small_spec(Head::Det, true);
  s.name = "small_fcos";
  s.det_channels = 32;
  s.det_levels = 5;
  s.det_conv_stride = 2;
  s.fcos_num_convs = 2;
  s.num_classes = 3;
  s.norm_eval = true;
  return s;
}

// The gradients' relative L2 bound: float32 against the float64 reference, through the focal
// loss's sum over every class at every location and the frozen batch norm (the largest seen:
// 1.2e-4, a fuse layer's BN weight)
constexpr double kGradL2 = 3e-4;

const std::vector<std::array<double, 2>> kRanges = {
    {-1, 16}, {16, 32}, {32, 48}, {48, 64}, {64, 100000000}};

std::vector<data::FcosLevel> levels_of(const std::vector<Tensor>& ys, const ModelSpec& s) {
  std::vector<data::FcosLevel> lv;
  for (int64_t l = 0; l < s.det_levels; ++l)
    lv.push_back({s.det_stride(l), ys[l].size(2), ys[l].size(3), kRanges[l][0], kRanges[l][1]});
  return lv;
}

double largest_gradient(const HRNet& model, const Reference& ref) {
  double m = 0;
  for (auto& [k, p] : model.named_parameters())
    for (float v : ref["grad." + k].to_vector()) m = std::max(m, double(std::fabs(v)));
  return m;
}

std::string joined_keys(const NamedTensors& sd, bool strip) {
  std::string keys;
  for (auto& [k, t] : sd) {
    const std::string key =
        strip ? strip_key_prefixes(k, {"module.", "backbone.body.", "backbone.fpn."}) : k;
    keys += (keys.empty() ? "" : "\n") + key;
  }
  return keys;
}

}  // namespace

TEST_CASE("FCOS: official checkpoint keys, outputs, targets, loss and every gradient",
          "[fcos][parity]") {
  Reference ref(kReference);
  HRNet model(small_fcos_spec(), 3);
  // the official state dict's names and order, less the GeneralizedRCNN prefixes
  CHECK(joined_keys(model.state_dict(), false) == joined_keys(ref.state(), true));
  CHECK(std::to_string(model.num_parameters()) == ref.meta("params"));

  // loaded from a file as the official checkpoint names it
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("hr_test_fcos_" + std::to_string(::getpid()) + ".safetensors"))
                               .string();
  save_safetensors(path, ref.state());
  load_hrnet_checkpoint(model, path);

  const Tensor& x = ref["input"];
  const size_t n_out = 3 * 5;
  {
    model.eval();
    NoGradGuard g;
    auto outs = model.forward_all(x);
    REQUIRE(outs.size() == n_out);
    for (size_t i = 0; i < outs.size(); ++i)
      require_parity(outs[i], ref["out_eval." + std::to_string(i)],
                     "eval output " + std::to_string(i));
  }
  model.train();
  model.zero_grad();
  std::vector<Tensor> ys = model.forward_all(x);
  for (size_t i = 0; i < ys.size(); ++i)
    require_parity(ys[i], ref["out_train." + std::to_string(i)],
                   "train output " + std::to_string(i));

  // the dense targets of each image, level-major, as the official prepare_targets
  const std::vector<data::FcosLevel> lv = levels_of(ys, model.spec());
  const int64_t P = data::fcos_num_locations(lv), N = x.size(0);
  REQUIRE(P == fcos_num_locations(ys));
  std::vector<int64_t> labels(N * P);
  std::vector<float> reg(N * 4 * P), ctr(N * P);
  for (int64_t n = 0; n < N; ++n) {
    const std::vector<float> b = ref["boxes." + std::to_string(n)].to_vector();
    std::vector<data::Box> boxes;
    for (size_t i = 0; i < b.size(); i += 4) boxes.push_back({b[i], b[i + 1], b[i + 2], b[i + 3]});
    data::fcos_targets(lv, boxes, ref["box_labels." + std::to_string(n)].to_vector_i64(),
                       labels.data() + n * P, reg.data() + n * 4 * P, ctr.data() + n * P);
  }
  CHECK(labels == ref["labels"].to_vector_i64());
  CHECK(reg == ref["reg_targets"].to_vector());
  REQUIRE_CLOSE(ctr, ref["centerness"].to_vector(), 1e-6, 1e-6);
  int64_t positives = 0;
  for (int64_t v : labels) positives += v > 0;
  CHECK(positives > 10);  // every term of the loss is exercised

  // the loss and every gradient, from those targets
  const Tensor lab = Tensor::from_vector_i64(labels, {N, P});
  const Tensor rt = Tensor::from_vector(reg, {N, 4, P}), ct = Tensor::from_vector(ctr, {N, P});
  const Tensor pos = ref["positive"];
  Tensor loss = fcos_loss(ys, lab, rt, ct, pos);
  require_parity(loss, ref["loss"], "loss");
  loss.backward();
  const double largest = largest_gradient(model, ref);
  size_t checked = 0;
  for (auto& [k, p] : model.named_parameters()) {
    require_parity(p.grad(), ref["grad." + k], "grad " + k, largest, kGradL2);
    ++checked;
  }
  CHECK(checked == model.named_parameters().size());
  // norm_eval: the training forward left the running statistics as they were
  for (auto& [k, b] : model.named_buffers())
    if (b.dtype() != DType::i64)
      CHECK(b.to_vector() == ref["state.module.backbone.body." + k].to_vector());

  // the same step through the static graph (add_training_loss: the targets as graph inputs)
  load_hrnet_checkpoint(model, path);
  model.train();
  graph::Graph g;
  graph::GraphIR& ir = g.ir();
  std::vector<Tensor> gys = model.forward_all(ir.symbolic(ir.param(x.clone(), "input")));
  graph::CompileOptions co;
  co.loss = add_training_loss(g, model, gys);
  g.output(co.loss, "loss");
  graph::Executable step(std::move(g), co);
  step.set_input("labels", lab);
  step.set_input("reg_targets", rt);
  step.set_input("centerness", ct);
  step.set_input("positive", pos);
  step.run();
  require_parity(step.output("loss"), ref["loss"], "graph loss");
  for (auto& [k, p] : model.named_parameters())
    require_parity(step.grad(p), ref["grad." + k], "graph grad " + k, largest, kGradL2);
  std::filesystem::remove(path);
}

TEST_CASE("FCOS: the official configs' models and initialisation", "[fcos]") {
  const std::string dir = kOfficial + "/";
  struct Want {
    const char* file;
    int64_t levels, stride0, width;
  };
  for (const Want& w : {Want{"fcos_hrnet_w18_5l_2x.yaml", 5, 8, 18},
                        Want{"fcos_hrnet_w32_5l_2x.yaml", 5, 8, 32},
                        Want{"fcos_hrnet_w32_6l_2x.yaml", 6, 4, 32},
                        Want{"fcos_hrnet_w40_6l_3x.yaml", 6, 4, 40}}) {
    INFO(w.file);
    const Config cfg = Config::load(dir + w.file);
    const ModelSpec s = spec_from_config(cfg);
    CHECK(s.head == Head::Det);
    CHECK(s.det_levels == w.levels);
    CHECK(s.det_stride(0) == w.stride0);
    CHECK(s.det_stride(w.levels - 1) == 128);
    CHECK(s.stages[2].num_channels == std::vector<int64_t>{w.width, 2 * w.width, 4 * w.width,
                                                           8 * w.width});
    CHECK(s.num_classes == 80);
    CHECK(s.norm_eval);
    CHECK(cfg.get_float("MODEL.FCOS.INFERENCE_TH") == 0.05);  // maskrcnn-benchmark's default
  }
  // W32 5 levels: the README's 37.3M parameters
  HRNet w32(spec_from_config(Config::load(dir + "fcos_hrnet_w32_5l_2x.yaml")), 1);
  CHECK(std::llabs(w32.num_parameters() - 37300000) < 100000);

  // FCOSHead's initialisation: towers N(0, 0.01) with bias 0, the classifier's prior bias,
  // GroupNorm 1 / 0, scales 1
  const auto sd = test::state_map(w32);
  const float prior = static_cast<float>(-std::log((1 - 0.01) / 0.01));
  for (float v : sd.at("rpn.head.cls_logits.bias").to_vector()) CHECK(v == prior);
  for (float v : sd.at("rpn.head.bbox_pred.bias").to_vector()) CHECK(v == 0.f);
  for (float v : sd.at("rpn.head.cls_tower.1.weight").to_vector()) CHECK(v == 1.f);
  CHECK(sd.at("rpn.head.scales.4.scale").to_vector() == std::vector<float>{1.f});
  double s2 = 0;
  const std::vector<float> tw = sd.at("rpn.head.bbox_tower.3.weight").to_vector();
  for (float v : tw) s2 += double(v) * v;
  CHECK(std::sqrt(s2 / tw.size()) == Approx(0.01).epsilon(0.02));

  // errors name the file and the key
  Config bad = Config::load(dir + "fcos_hrnet_w32_5l_2x.yaml");
  bad.set("MODEL.FCOS.FPN_STRIDES", "[4, 8, 16, 32, 64]");
  CHECK(contains(error_of([&] { spec_from_config(bad); }), "FPN_STRIDES[0] is 4"));
  Config body = Config::load(dir + "fcos_hrnet_w32_5l_2x.yaml");
  body.set("MODEL.BACKBONE.CONV_BODY", "'R-50-FPN'");
  CHECK(contains(error_of([&] { spec_from_config(body); }), "CONV_BODY"));
}
