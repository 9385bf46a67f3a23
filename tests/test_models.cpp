// HRNet models: official configs (param counts, key names, GFLOPs, output shapes), built-in
// variants, forward / loss / every gradient against PyTorch on small configs
// (tests/data/model_*.safetensors from tools/gen_model_reference.py), checkpoint loading
// (strict errors, prefixes, PRETRAINED_LAYERS), config errors and input-size checks.
// Optional: HRNET_W32_REF_DIR=DIR (from `gen_model_reference.py --w32-dir DIR`) runs a full
// W32 pose checkpoint through the .pth loader and compares the forward.
#include <omp.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "engine/autograd.h"
#include "engine/checkpoint.h"
#include "engine/ops.h"
#include "models/config.h"
#include "models/hrnet.h"
#include "ref_data.h"
#include "small_specs.h"
#include "tensor_checks.h"
#include "test_util.h"

using namespace hr;
using namespace hr::models;
using hr::test::small_spec;

namespace {

using test::contains;
using test::error_of;
using test::replace_once;
using test::state_map;

const std::string kData = HR_TEST_DATA_DIR;
const std::string kConfigs = kData + "/model_configs/";

std::string cfg_path(const std::string& name) { return kConfigs + name; }

std::string tmp_path(const std::string& name) {
  const char* d = std::getenv("TMPDIR");
  return std::string(d ? d : "/tmp") + "/hr_test_models_" + name;
}

using Reference = test::RefData;  // model_<name>.safetensors: tensors, metadata, state()

// Per tensor: relative L2 error ||got - ref|| / ||ref|| <= 1e-4, and per element
// |got - ref| <= 1e-3 max|ref| + 1e-4 |ref|. fp32 PyTorch itself is at ~1e-5 of max|ref| on
// single gradient elements of these nets (BN batch statistics over few pixels amplify rounding),
// so the per-element bound is looser than the L2 one. A reference that is zero up to rounding
// (a conv bias followed by training-mode BN has an exactly zero gradient) is compared with an
// absolute bound relative to `case_scale`, the case's largest gradient.
std::map<std::string, double> g_l2_err, g_elem_err;

void require_close(const Tensor& got, const Tensor& ref, const std::string& what,
                   const std::string& bucket, double case_scale = 0) {
  INFO(what);
  REQUIRE(got.defined());
  REQUIRE(got.shape() == ref.shape());
  auto g = got.to_vector(), r = ref.to_vector();
  double scale = 0, err = 0, d2 = 0, r2 = 0;
  for (size_t i = 0; i < r.size(); ++i) {
    const double d = double(g[i]) - r[i];
    scale = std::max(scale, double(std::fabs(r[i])));
    err = std::max(err, std::fabs(d));
    d2 += d * d;
    r2 += double(r[i]) * r[i];
  }
  if (case_scale > 0 && scale < 1e-6 * case_scale) {
    g_elem_err["zero gradients (abs / largest gradient)"] =
        std::max(g_elem_err["zero gradients (abs / largest gradient)"], err / case_scale);
    REQUIRE_CLOSE(g, r, 1e-6 * case_scale, 0.0);
    return;
  }
  const double l2 = std::sqrt(d2 / std::max(r2, 1e-300));
  g_l2_err[bucket] = std::max(g_l2_err[bucket], l2);
  g_elem_err[bucket] = std::max(g_elem_err[bucket], err / std::max(scale, 1e-300));
  INFO("relative L2 error " << l2);
  CHECK(l2 <= 1e-4);
  REQUIRE_CLOSE(g, r, 1e-3 * scale + 1e-30, 1e-4);
}

void print_errors() {
  std::printf("PyTorch parity (fp32 CPU vs float64 reference):\n");
  for (auto& [k, v] : g_l2_err)
    std::printf("  %-18s max relative L2 error %.3g, max element error / max|ref| %.3g\n",
                k.c_str(), v, g_elem_err[k]);
  for (auto& [k, v] : g_elem_err)
    if (!g_l2_err.count(k)) std::printf("  %s %.3g\n", k.c_str(), v);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Official configs
// ---------------------------------------------------------------------------------------------
TEST_CASE("official pose configs: params, key names, GFLOPs, output shapes", "[models]") {
  struct Row {
    const char* file;
    int64_t params;
    double macs;
    const char* gflops;
    Shape out;
  };
  const Row rows[] = {
      {"w32_256x192_adam_lr1e-3.yaml", 28536113, 7645003776.0, "7.1", {1, 17, 64, 48}},
      {"w32_384x288_adam_lr1e-3.yaml", 28536113, 17201258496.0, "16.0", {1, 17, 96, 72}},
      {"w48_256x192_adam_lr1e-3.yaml", 63595745, 15691825152.0, "14.6", {1, 17, 64, 48}},
      {"w48_384x288_adam_lr1e-3.yaml", 63595745, 35306606592.0, "32.9", {1, 17, 96, 72}},
  };
  std::map<std::string, std::shared_ptr<HRNet>> built;  // one model per width
  for (const auto& row : rows) {
    INFO(row.file);
    Config cfg = Config::load(cfg_path(row.file));
    ModelSpec spec = spec_from_config(cfg);
    CHECK(spec.head == Head::Pose);
    CHECK(spec.pretrained_layers.size() == 11);
    auto& model = built[std::to_string(spec.stages[0].num_channels[0])];
    if (!model) model = std::make_shared<HRNet>(spec);
    auto hw = config_input_hw(cfg);
    ModelStats st = model->stats({1, 3, hw[0], hw[1]});
    CHECK(st.params == row.params);
    CHECK(model->num_parameters() == row.params);
    CHECK(st.conv_macs == row.macs);
    CHECK(st.linear_macs == 0);
    char g[32];
    std::snprintf(g, sizeof g, "%.1f", st.gflops());
    CHECK(std::string(g) == row.gflops);
    REQUIRE(st.outputs.size() == 1);
    CHECK(st.outputs[0] == row.out);
    CHECK(st.conv_layers == 293);
    CHECK(st.bn_layers == 292);
    CHECK(spec.heatmap_size[0] * 4 == spec.image_size[0]);
  }

  auto& w32 = *built["32"];
  auto sd = w32.state_dict();
  CHECK(sd.size() == 1754);
  size_t without_counter = 0;
  for (auto& [k, t] : sd) without_counter += !contains(k, "num_batches_tracked");
  CHECK(without_counter == 1462);
  auto m = state_map(w32);
  const std::vector<std::pair<std::string, Shape>> keys = {
      {"conv1.weight", {64, 3, 3, 3}},
      {"bn2.num_batches_tracked", {}},
      {"layer1.0.downsample.0.weight", {256, 64, 1, 1}},
      {"layer1.3.conv3.weight", {256, 64, 1, 1}},
      {"transition1.0.0.weight", {32, 256, 3, 3}},
      {"transition1.1.0.0.weight", {64, 256, 3, 3}},
      {"transition2.2.0.0.weight", {128, 64, 3, 3}},
      {"transition3.3.0.1.running_var", {256}},
      {"stage2.0.branches.1.3.conv2.weight", {64, 64, 3, 3}},
      {"stage2.0.fuse_layers.0.1.0.weight", {32, 64, 1, 1}},
      {"stage2.0.fuse_layers.1.0.0.0.weight", {64, 32, 3, 3}},
      {"stage3.3.fuse_layers.2.0.0.0.weight", {32, 32, 3, 3}},
      {"stage3.3.fuse_layers.2.0.1.0.weight", {128, 32, 3, 3}},
      {"stage4.1.fuse_layers.3.0.2.1.bias", {256}},
      {"stage4.2.fuse_layers.0.3.0.weight", {32, 256, 1, 1}},
      {"final_layer.weight", {17, 32, 1, 1}},
      {"final_layer.bias", {17}},
  };
  for (auto& [k, shape] : keys) {
    INFO(k);
    REQUIRE(m.count(k));
    CHECK(m[k].shape() == shape);
  }
  // The last module builds output 0 only; no transition for the unchanged branches.
  for (auto& [k, t] : sd) {
    INFO(k);
    CHECK_FALSE(k.rfind("stage4.2.fuse_layers.1", 0) == 0);
    CHECK_FALSE(k.rfind("transition2.0", 0) == 0);
    CHECK_FALSE(k.rfind("transition3.1", 0) == 0);
  }
  CHECK(m.count("stage4.1.fuse_layers.3.2.0.0.weight"));  // earlier modules keep all outputs
}

TEST_CASE("official seg and cls configs: params, keys, GFLOPs, shapes", "[models]") {
  Config seg_cfg =
      Config::load(cfg_path("seg_hrnet_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml"));
  ModelSpec seg = spec_from_config(seg_cfg);
  CHECK(seg.head == Head::Seg);
  CHECK(seg.fuse == FuseUpsample::Bilinear);
  CHECK_FALSE(seg.align_corners);  // the Cityscapes configs set False (repository default True)
  CHECK(seg.num_classes == 19);
  {
    HRNet model(seg);
    ModelStats st = model.stats({1, 3, 1024, 2048});
    CHECK(st.params == 65859379);
    char g[32];
    std::snprintf(g, sizeof g, "%.1f", st.gflops());
    CHECK(std::string(g) == "696.2");
    CHECK(st.outputs[0] == Shape{1, 19, 256, 512});
    auto m = state_map(model);
    CHECK(m.at("last_layer.0.weight").shape() == Shape{720, 720, 1, 1});
    CHECK(m.at("last_layer.0.bias").shape() == Shape{720});
    CHECK(m.at("last_layer.1.running_mean").shape() == Shape{720});
    CHECK(m.at("last_layer.3.weight").shape() == Shape{19, 720, 1, 1});
    CHECK(m.count("stage4.2.fuse_layers.3.0.2.0.weight"));  // seg keeps every output
    // any input size: bilinear fuse layers
    CHECK(model.stats({2, 3, 100, 75}).outputs[0] == Shape{2, 19, 25, 19});
  }

  struct Row {
    const char* file;
    const char* millions;  // parameters and GFLOPs at 224x224 as the cls repository reports
    const char* gflops;
  };
  const Row rows[] = {
      {"cls_hrnet_w18_small_v1_sgd_lr5e-2_wd1e-4_bs32_x100.yaml", "13.2", "1.49"},
      {"cls_hrnet_w18_small_v2_sgd_lr5e-2_wd1e-4_bs32_x100.yaml", "15.6", "2.42"},
      {"cls_hrnet_w18_sgd_lr5e-2_wd1e-4_bs32_x100.yaml", "21.3", "3.99"},
      {"cls_hrnet_w32_sgd_lr5e-2_wd1e-4_bs32_x100.yaml", "41.2", "8.31"},
      {"cls_hrnet_w48_sgd_lr5e-2_wd1e-4_bs32_x100.yaml", "77.5", "16.1"},
  };
  for (const auto& row : rows) {
    INFO(row.file);
    ModelSpec spec = spec_from_config(Config::load(cfg_path(row.file)));
    CHECK(spec.head == Head::Cls);
    HRNet model(spec);
    ModelStats st = model.stats({1, 3, 224, 224});
    char p[32];
    std::snprintf(p, sizeof p, "%.1f", st.params / 1e6);
    CHECK(std::string(p) == row.millions);
    const std::string want_g = row.gflops;
    const int decimals = static_cast<int>(want_g.size() - want_g.find('.') - 1);
    std::snprintf(p, sizeof p, "%.*f", decimals, st.gflops());
    CHECK(std::string(p) == want_g);
    CHECK(st.outputs[0] == Shape{1, 1000});
    CHECK(st.linear_macs == 2048.0 * 1000.0);
    auto m = state_map(model);
    CHECK(m.at("incre_modules.3.0.downsample.0.weight").shape() ==
          Shape{1024, spec.stages[2].num_channels[3], 1, 1});
    CHECK(m.at("downsamp_modules.2.0.weight").shape() == Shape{1024, 512, 3, 3});
    CHECK(m.at("downsamp_modules.2.0.bias").shape() == Shape{1024});
    CHECK(m.at("final_layer.0.weight").shape() == Shape{2048, 1024, 1, 1});
    CHECK(m.at("classifier.weight").shape() == Shape{1000, 2048});
  }
}

TEST_CASE("built-in variants are the official configs' rows", "[models]") {
  auto same_backbone = [](const ModelSpec& a, const ModelSpec& b) {
    if (a.stem_channels != b.stem_channels || a.stage1.block != b.stage1.block ||
        a.stage1.num_blocks != b.stage1.num_blocks ||
        a.stage1.num_channels != b.stage1.num_channels)
      return false;
    for (int s = 0; s < 3; ++s) {
      const auto &x = a.stages[s], &y = b.stages[s];
      if (x.num_modules != y.num_modules || x.block != y.block || x.num_blocks != y.num_blocks ||
          x.num_channels != y.num_channels)
        return false;
    }
    return a.head == b.head && a.fuse == b.fuse && a.num_classes == b.num_classes;
  };
  for (const char* v :
       {"w18_small_v1", "w18_small_v2", "w18", "w30", "w32", "w40", "w44", "w48", "w64"}) {
    INFO(v);
    ModelSpec file = spec_from_config(Config::load(
        cfg_path(std::string("cls_hrnet_") + v + "_sgd_lr5e-2_wd1e-4_bs32_x100.yaml")));
    CHECK(same_backbone(builtin_spec(v, Head::Cls), file));
    CHECK(same_backbone(builtin_spec(std::string("cls_") + v), file));
  }
  for (const char* f : {"w32_256x192_adam_lr1e-3.yaml", "w48_384x288_adam_lr1e-3.yaml"}) {
    ModelSpec file = spec_from_config(Config::load(cfg_path(f)));
    ModelSpec b = builtin_spec(std::string(f).substr(0, 3) + ":pose");
    CHECK(same_backbone(b, file));
    CHECK(b.num_joints == file.num_joints);
    CHECK(b.pretrained_layers == file.pretrained_layers);
  }
  ModelSpec seg = builtin_spec("seg_w48");
  ModelSpec seg_file = spec_from_config(
      Config::load(cfg_path("seg_hrnet_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml")));
  CHECK(same_backbone(seg, seg_file));
  CHECK(seg.align_corners == seg_file.align_corners);

  CHECK(contains(error_of([] { builtin_spec("w33", Head::Pose); }), "w18_small_v1"));
  CHECK(contains(error_of([] { builtin_spec("w32:keypoints"); }), "keypoints"));
  CHECK(contains(error_of([] { builtin_spec("resnet50"); }), "resnet50"));
}

TEST_CASE("every head's output shape, analytic and computed", "[models]") {
  // w18_small_v1 is the smallest official backbone; a real forward checks the analytic shapes.
  manual_seed(3);
  for (Head h : {Head::Pose, Head::Seg, Head::Det, Head::Cls}) {
    INFO(head_name(h));
    HRNet model(builtin_spec("w18_small_v1", h), 5);
    model.eval();
    const Shape in = {2, 3, 64, 96};
    ModelStats st = model.stats(in);
    std::vector<Shape> want;
    switch (h) {
      case Head::Pose:
        want = {{2, 17, 16, 24}};
        break;
      case Head::Seg:
        want = {{2, 19, 16, 24}};
        break;
      case Head::Det: {  // FCOS: class logits, box distances, centerness at strides 8..128
        const std::vector<std::array<int64_t, 2>> hw = {{8, 12}, {4, 6}, {2, 3}, {1, 2}, {1, 1}};
        for (int64_t c : {80, 4, 1})
          for (const auto& [h, w] : hw) want.push_back({2, c, h, w});
        break;
      }
      case Head::Cls:
        want = {{2, 1000}};
        break;
    }
    CHECK(st.outputs == want);
    NoGradGuard g;
    auto outs = model.forward_all(Tensor::randn(in, 9));
    REQUIRE(outs.size() == want.size());
    for (size_t i = 0; i < outs.size(); ++i) {
      CHECK(outs[i].shape() == want[i]);
      auto v = outs[i].to_vector();
      CHECK(std::all_of(v.begin(), v.end(), [](float f) { return std::isfinite(f); }));
    }
    CHECK(model.forward(Tensor::randn(in, 10)).shape() == want[0]);
    if (h == Head::Det) {
      const auto sizes = det_level_sizes(model.spec(), in[2], in[3]);
      REQUIRE(sizes.size() == 5);
      for (size_t l = 0; l < sizes.size(); ++l)
        CHECK((Shape{2, 80, sizes[l][0], sizes[l][1]}) == want[l]);
    }
    auto backbone = model.forward_backbone(Tensor::randn(in, 11));
    CHECK(backbone.size() == (h == Head::Pose ? 1u : 4u));
    CHECK(backbone[0].shape() == Shape{2, 16, 16, 24});
  }
}

// ---------------------------------------------------------------------------------------------
// PyTorch parity
// ---------------------------------------------------------------------------------------------
namespace {

Tensor loss_of(Head head, const std::vector<Tensor>& outs, const Reference& ref) {
  switch (head) {
    case Head::Pose:
      return ops::heatmap_loss(outs[0], ref["target"], ref["target_weight"]);
    case Head::Seg: {
      const Tensor& x = ref["input"];
      Tensor up = ops::upsample_bilinear(outs[0], {x.size(2), x.size(3)}, false);
      return ops::cross_entropy(up, ref["labels"], 255);
    }
    case Head::Cls:
      return ops::cross_entropy(outs[0], ref["labels"], 255);
    case Head::Det:  // tests/test_fcos_model.cpp
      break;
  }
  return {};
}

void parity(const std::string& name, Head head, bool tiny) {
  INFO("case " << name);
  Reference ref("model_" + name + ".safetensors");
  HRNet model(small_spec(head, tiny), 77);

  // names, order and count as PyTorch's state_dict
  std::string keys;
  for (auto& [k, t] : model.state_dict()) keys += (keys.empty() ? "" : "\n") + k;
  CHECK(keys == ref.meta("keys"));
  CHECK(std::to_string(model.num_parameters()) == ref.meta("params"));
  model.load_state_dict(ref.state());

  const Tensor& x = ref["input"];
  {
    model.eval();
    NoGradGuard g;
    auto outs = model.forward_all(x);
    for (size_t i = 0; i < outs.size(); ++i)
      require_close(outs[i], ref["out_eval." + std::to_string(i)],
                    name + " eval output " + std::to_string(i), "forward eval");
  }
  model.train();
  model.zero_grad();
  auto outs = model.forward_all(x);
  for (size_t i = 0; i < outs.size(); ++i)
    require_close(outs[i], ref["out_train." + std::to_string(i)],
                  name + " train output " + std::to_string(i), "forward train");
  Tensor loss = loss_of(head, outs, ref);
  require_close(loss, ref["loss"], name + " loss", "loss");
  loss.backward();
  double largest = 0;
  for (auto& [k, p] : model.named_parameters())
    for (float v : ref["grad." + k].to_vector()) largest = std::max(largest, double(std::fabs(v)));
  size_t n = 0;
  for (auto& [k, p] : model.named_parameters()) {
    require_close(p.grad(), ref["grad." + k], name + " grad " + k, "gradients", largest);
    ++n;
  }
  CHECK(n == model.named_parameters().size());
  for (auto& [k, b] : model.named_buffers()) {
    if (b.dtype() == DType::i64) {
      CHECK(b.to_vector_i64() == ref["after." + k].to_vector_i64());
    } else {
      require_close(b, ref["after." + k], name + " buffer " + k, "running stats");
    }
  }
}

}  // namespace

TEST_CASE("pose head matches PyTorch: forward, loss, every gradient", "[models][parity]") {
  parity("pose", Head::Pose, false);
}
TEST_CASE("seg head (bilinear fuse, align_corners false) matches PyTorch", "[models][parity]") {
  parity("seg", Head::Seg, true);
}
TEST_CASE("cls head matches PyTorch", "[models][parity]") {
  parity("cls", Head::Cls, true);
  print_errors();
}

// ---------------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------------
TEST_CASE("strict checkpoint loading: .pth, prefixes, absent counters, named errors",
          "[models][checkpoint]") {
  // torch.save file whose keys carry the seg repository's "model." prefix
  Reference seg_ref("model_seg.safetensors");
  HRNet seg(small_spec(Head::Seg, true), 1);
  load_hrnet_checkpoint(seg, kData + "/model_seg.pth");
  seg.eval();
  {
    NoGradGuard g;
    require_close(seg.forward(seg_ref["input"]), seg_ref["out_eval.0"], "seg from .pth",
                  "forward eval");
  }
  CHECK(state_map(seg).at("bn1.num_batches_tracked").to_vector_i64() ==
        seg_ref["state.bn1.num_batches_tracked"].to_vector_i64());

  // "module." prefix (DataParallel) and no num_batches_tracked
  Reference ref("model_pose.safetensors");
  HRNet other(small_spec(Head::Pose, false), 2);
  NamedTensors prefixed;
  for (auto& [k, t] : ref.state())
    if (!contains(k, "num_batches_tracked")) prefixed.emplace_back("module." + k, t);
  const std::string p1 = tmp_path("prefixed.safetensors");
  save_safetensors(p1, prefixed);
  load_hrnet_checkpoint(other, p1);
  CHECK(state_map(other).at("stage3.1.fuse_layers.2.1.0.0.weight").to_vector() ==
        ref["state.stage3.1.fuse_layers.2.1.0.0.weight"].to_vector());

  // missing, unexpected and mis-shaped keys are all named, with the file
  NamedTensors bad;
  for (auto& [k, t] : ref.state())
    if (k != "stage2.0.fuse_layers.1.0.0.1.running_var" && k != "final_layer.weight")
      bad.emplace_back(k, t);
  bad.emplace_back("final_layer.weight", Tensor::zeros({17, 4, 3, 3}));
  bad.emplace_back("stage4.0.fuse_layers.1.0.0.0.weight", Tensor::zeros({8, 4, 3, 3}));
  const std::string p2 = tmp_path("bad.safetensors");
  save_safetensors(p2, bad);
  HRNet third(small_spec(Head::Pose, false), 3);
  const auto before = state_map(third).at("conv1.weight").to_vector();
  std::string e = error_of([&] { load_hrnet_checkpoint(third, p2); });
  INFO(e);
  CHECK(contains(e, p2));
  CHECK(contains(e, "missing: stage2.0.fuse_layers.1.0.0.1.running_var"));
  CHECK(contains(e, "unexpected: stage4.0.fuse_layers.1.0.0.0.weight"));
  CHECK(contains(e, "mis-shaped: final_layer.weight"));
  CHECK(state_map(third).at("conv1.weight").to_vector() == before);  // nothing copied

  // a checkpoint of another head
  e = error_of([&] { load_hrnet_checkpoint(third, kData + "/model_seg.pth"); });
  CHECK(contains(e, "missing: final_layer.weight"));
  CHECK(contains(e, "unexpected: model.last_layer.0.weight"));
  CHECK(contains(error_of([&] { load_hrnet_checkpoint(seg, tmp_path("does_not_exist")); }),
                 "does_not_exist"));
  std::remove(p1.c_str());
  std::remove(p2.c_str());
}

TEST_CASE("PRETRAINED_LAYERS: pose initialised from a cls checkpoint", "[models][checkpoint]") {
  ModelSpec cls_spec = small_spec(Head::Pose, false);
  cls_spec.head = Head::Cls;
  cls_spec.cls_head_channels = {2, 2, 4, 4};
  cls_spec.cls_features = 16;
  cls_spec.num_classes = 10;
  HRNet cls(cls_spec, 11);
  const std::string path = tmp_path("cls.safetensors");
  save_safetensors(path, cls.state_dict());

  HRNet pose(small_spec(Head::Pose, false), 12);
  const auto final_before = state_map(pose).at("final_layer.weight").to_vector();
  const std::vector<std::string> layers = builtin_spec("w32", Head::Pose).pretrained_layers;
  PretrainedReport rep = load_pretrained_layers(pose, path, layers);
  INFO(rep.summary());
  auto pm = state_map(pose);
  auto cm = state_map(cls);
  size_t backbone = 0;
  for (auto& [k, t] : pose.state_dict()) backbone += k.rfind("final_layer", 0) != 0;
  CHECK(rep.loaded.size() == backbone);
  CHECK(rep.missing.empty());
  for (const auto& k : rep.unexpected) CHECK(k.rfind("stage4.0.fuse_layers.", 0) == 0);
  CHECK(rep.unexpected.size() == (3 + 4 + 6) * 6);  // 13 conv+BN pairs of outputs 1..3
  for (const auto& k : rep.skipped) {
    const std::string first = k.substr(0, k.find('.'));
    CHECK((first == "incre_modules" || first == "downsamp_modules" || first == "final_layer" ||
           first == "classifier"));
  }
  CHECK(pm.at("stage4.0.branches.3.0.conv2.weight").to_vector() ==
        cm.at("stage4.0.branches.3.0.conv2.weight").to_vector());
  CHECK(pm.at("transition3.3.0.1.running_mean").to_vector() ==
        cm.at("transition3.3.0.1.running_mean").to_vector());
  CHECK(pm.at("final_layer.weight").to_vector() == final_before);

  // mis-shaped keys: an error naming them, nothing loaded
  ModelSpec wide = cls_spec;
  wide.stages[2].num_channels[3] = 24;
  HRNet cls_wide(wide, 13);
  save_safetensors(path, cls_wide.state_dict());
  HRNet pose2(small_spec(Head::Pose, false), 14);
  const auto w_before = state_map(pose2).at("conv1.weight").to_vector();
  std::string e = error_of([&] { load_pretrained_layers(pose2, path, layers); });
  CHECK(contains(e, path));
  CHECK(contains(e, "mis-shaped: transition3.3.0.0.weight"));
  CHECK(state_map(pose2).at("conv1.weight").to_vector() == w_before);
  std::remove(path.c_str());
}

// ---------------------------------------------------------------------------------------------
// Initialisation, inputs, configs
// ---------------------------------------------------------------------------------------------
TEST_CASE("official initialisation, seeded", "[models]") {
  auto stats_of = [](const Tensor& t) {
    auto v = t.to_vector();
    double s = 0, s2 = 0;
    for (float x : v) s += x, s2 += double(x) * x;
    const double mean = s / v.size();
    return std::make_pair(mean, std::sqrt(s2 / v.size() - mean * mean));
  };
  HRNet a(builtin_spec("w18_small_v1", Head::Pose), 42),
      b(builtin_spec("w18_small_v1", Head::Pose), 42),
      c(builtin_spec("w18_small_v1", Head::Pose), 43);
  auto ma = state_map(a), mb = state_map(b), mc = state_map(c);
  CHECK(ma.at("stage4.0.branches.3.1.conv1.weight").to_vector() ==
        mb.at("stage4.0.branches.3.1.conv1.weight").to_vector());
  CHECK(ma.at("stage4.0.branches.3.1.conv1.weight").to_vector() !=
        mc.at("stage4.0.branches.3.1.conv1.weight").to_vector());
  auto [mean, sd] = stats_of(ma.at("stage4.0.branches.3.1.conv1.weight"));  // 147,456 values
  CHECK(std::fabs(mean) < 2e-5);
  CHECK(sd == Approx(0.001).epsilon(0.02));
  auto all_equal = [](const Tensor& t, float want) {
    auto v = t.to_vector();
    return std::all_of(v.begin(), v.end(), [&](float f) { return f == want; });
  };
  CHECK(all_equal(ma.at("final_layer.bias"), 0.f));
  CHECK(all_equal(ma.at("bn1.weight"), 1.f));
  CHECK(all_equal(ma.at("stage2.0.fuse_layers.0.1.1.bias"), 0.f));
  CHECK(all_equal(ma.at("stage2.0.fuse_layers.0.1.1.running_var"), 1.f));

  HRNet cls(builtin_spec("w18_small_v1", Head::Cls), 1);
  auto mcls = state_map(cls);
  // kaiming normal, fan_out = 128 * 9
  auto [cm, csd] = stats_of(mcls.at("stage4.0.branches.3.1.conv1.weight"));
  CHECK(csd == Approx(std::sqrt(2.0 / (128 * 9))).epsilon(0.02));
  auto bias =
      mcls.at("downsamp_modules.0.0.bias").to_vector();  // PyTorch default U(+-1/sqrt(fan_in))
  const float bound = 1.f / std::sqrt(128.f * 9.f);
  CHECK(std::all_of(bias.begin(), bias.end(), [&](float v) { return std::fabs(v) <= bound; }));
  CHECK(std::any_of(bias.begin(), bias.end(), [](float v) { return v != 0.f; }));
  // same seed, same weights, whatever the thread count (chunked generators)
  const int threads = omp_get_max_threads();
  omp_set_num_threads(threads == 1 ? 2 : 1);
  HRNet again(builtin_spec("w18_small_v1", Head::Cls), 1);
  omp_set_num_threads(threads);
  CHECK(state_map(again).at("stage4.0.branches.3.1.conv1.weight").to_vector() ==
        mcls.at("stage4.0.branches.3.1.conv1.weight").to_vector());
}

TEST_CASE("input sizes a variant cannot take are rejected before any work", "[models]") {
  HRNet pose(small_spec(Head::Pose, false), 1);
  std::string e = error_of([&] { pose.check_input({1, 3, 250, 192}); });
  CHECK(contains(e, "height 250"));
  CHECK(contains(e, "multiple of 32"));
  e = error_of([&] { pose.forward(Tensor::randn({1, 3, 256, 200}, 1)); });
  CHECK(contains(e, "width 200"));
  CHECK(contains(error_of([&] {
                   pose.forward(Tensor::randn({1, 1, 64, 64}, 1));
                 }),
                 "3 input channels"));
  CHECK(contains(error_of([&] { pose.forward(Tensor::randn({3, 64, 64}, 1)); }), "[N,3,H,W]"));
  CHECK(contains(error_of([&] { pose.stats({1, 3, 96, 100}); }), "width 100"));
  CHECK_NOTHROW(pose.check_input({1, 3, 32, 64}));

  HRNet seg(small_spec(Head::Seg, true), 1);
  CHECK_NOTHROW(seg.check_input({1, 3, 61, 77}));  // bilinear fuse: any size
  ModelSpec five = small_spec(Head::Det, true);
  five.det_levels = 5;
  HRNet det(five, 1);
  CHECK(contains(error_of([&] { det.check_input({1, 3, 32, 64}); }), "smaller than 64"));
  HRNet cls(small_spec(Head::Cls, true), 1);
  CHECK(contains(error_of([&] { cls.check_input({1, 3, 48, 64}); }), "height 48"));
}

TEST_CASE("config reader: yacs semantics and overrides", "[models][config]") {
  Config c = Config::load(cfg_path("w32_256x192_adam_lr1e-3.yaml"));
  CHECK(c.get_int("TRAIN.END_EPOCH") == 210);
  CHECK(c.get_float("TRAIN.LR") == 0.001);
  CHECK(c.get_int_list("TRAIN.LR_STEP") == std::vector<int64_t>{170, 200});
  CHECK(c.get_int_list("GPUS") == std::vector<int64_t>{0, 1, 2, 3});  // "(0,1,2,3)" literal
  CHECK(c.get_str("DATASET.DATA_FORMAT") == "jpg");
  CHECK(c.get_str("DATASET.ROOT") == "data/coco/");
  CHECK(c.get_bool("TEST.FLIP_TEST"));
  CHECK(c.get_bool("MODEL.TAG_PER_JOINT"));  // from the defaults, not in the file
  CHECK(c.get_bool("LOSS.USE_OHKM") == false);
  CHECK(c.get_float("DATASET.SCALE_FACTOR") == 0.35);
  CHECK(c.get_int_list("MODEL.IMAGE_SIZE") == std::vector<int64_t>{192, 256});

  c.set("TRAIN.END_EPOCH", "1");
  CHECK(c.get_int("TRAIN.END_EPOCH") == 1);
  c.set("TRAIN.LR", "1");  // int for a float is accepted
  CHECK(c.get_float("TRAIN.LR") == 1.0);
  c.set("TRAIN.LR_STEP", "[5, 8]");
  CHECK(c.get_int_list("TRAIN.LR_STEP") == std::vector<int64_t>{5, 8});
  c.set("TRAIN.SHUFFLE", "False");
  CHECK_FALSE(c.get_bool("TRAIN.SHUFFLE"));
  c.set("MODEL.EXTRA.STAGE2.NUM_MODULES", "2");  // written by the file: may be set
  CHECK(c.get_int("MODEL.EXTRA.STAGE2.NUM_MODULES") == 2);
  c.merge_from_list({"OUTPUT_DIR", "out/x", "TEST.MODEL_FILE", "'a.pth'"});
  CHECK(c.get_str("OUTPUT_DIR") == "out/x");
  CHECK(c.get_str("TEST.MODEL_FILE") == "a.pth");
  CHECK(contains(error_of([&] { c.set("TRAIN.FOO", "1"); }), "TRAIN.FOO"));
  CHECK(contains(error_of([&] { c.set("MODEL.EXTRA.NEW_KEY", "1"); }), "MODEL.EXTRA.NEW_KEY"));
  CHECK(contains(error_of([&] { c.set("TRAIN.END_EPOCH", "abc"); }), "type mismatch"));
  CHECK(contains(error_of([&] { c.set("TRAIN.END_EPOCH", "1.5"); }), "TRAIN.END_EPOCH"));
  CHECK(contains(error_of([&] { c.set("TRAIN", "1"); }), "section"));
  CHECK(contains(error_of([&] { c.merge_from_list({"TRAIN.LR"}); }), "pairs"));

  // the dump reads back to the same values
  Config again = Config::from_yaml(c.dump(), "dump.yaml");
  CHECK(again.get_int("TRAIN.END_EPOCH") == 1);
  CHECK(again.get_str("TEST.MODEL_FILE") == "a.pth");
  CHECK(again.get_int_list("GPUS") == std::vector<int64_t>{0, 1, 2, 3});
  CHECK(again.dump() == c.dump());

  // seg / cls files are kept as written; NUM_RANCHES (sic) and WITH_HEAD are ignored
  Config cls = Config::load(cfg_path("cls_hrnet_w18_small_v1_sgd_lr5e-2_wd1e-4_bs32_x100.yaml"));
  CHECK(cls.get_int("MODEL.EXTRA.STAGE1.NUM_RANCHES") == 1);
  CHECK(cls.get_bool("MODEL.EXTRA.WITH_HEAD"));
  // MODEL.NAME seg_hrnet_ocr selects the OCR head (tests/test_ocr.cpp)
  const std::string ocr = "seg_hrnet_ocr_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml";
  CHECK(spec_from_config(Config::load(cfg_path(ocr))).ocr);
}

TEST_CASE("bad configs name the file and the field", "[models][config]") {
  const std::string pose = test::slurp(cfg_path("w32_256x192_adam_lr1e-3.yaml"));
  auto spec_error = [](const std::string& text) {
    return error_of([&] { spec_from_config(Config::from_yaml(text, "bad.yaml")); });
  };
  // NUM_BRANCHES 3 with 2 NUM_CHANNELS
  std::string e = spec_error(
      replace_once(pose, "      - 32\n      - 64\n      - 128\n", "      - 32\n      - 64\n"));
  INFO(e);
  CHECK(contains(e, "bad.yaml"));
  CHECK(contains(e, "MODEL.EXTRA.STAGE3.NUM_CHANNELS has 2 entries but NUM_BRANCHES is 3"));
  e = spec_error(replace_once(pose, "      NUM_BLOCKS:\n      - 4\n      - 4\n      NUM_CHANNELS",
                              "      NUM_BLOCKS:\n      - 4\n      NUM_CHANNELS"));
  CHECK(contains(e, "MODEL.EXTRA.STAGE2.NUM_BLOCKS has 1 entries but NUM_BRANCHES is 2"));
  e = spec_error(replace_once(pose, "      FUSE_METHOD: SUM\n", ""));
  CHECK(contains(e, "bad.yaml: missing required key MODEL.EXTRA.STAGE2.FUSE_METHOD"));
  e = spec_error(replace_once(pose, "    FINAL_CONV_KERNEL: 1\n", ""));
  CHECK(contains(e, "missing required key MODEL.EXTRA.FINAL_CONV_KERNEL"));
  e = spec_error(replace_once(pose, "BLOCK: BASIC", "BLOCK: BASICC"));
  CHECK(contains(e, "MODEL.EXTRA.STAGE2.BLOCK must be BASIC or BOTTLENECK, got 'BASICC'"));
  e = spec_error(replace_once(pose, "NUM_MODULES: 4", "NUM_MODULES: four"));
  CHECK(contains(e, "MODEL.EXTRA.STAGE3.NUM_MODULES must be an integer"));
  e = spec_error(replace_once(pose, "NUM_MODULES: 4", "NUM_MODULES: 0"));
  CHECK(contains(e, "MODEL.EXTRA.STAGE3.NUM_MODULES must be positive"));
  e = spec_error(replace_once(pose, "NUM_JOINTS: 17", "NUM_JOINTS: 0"));
  CHECK(contains(e, "NUM_JOINTS must be positive"));
  e = spec_error(replace_once(pose, "    FINAL_CONV_KERNEL: 1\n", "    FINAL_CONV_KERNEL: 5\n"));
  CHECK(contains(e, "FINAL_CONV_KERNEL must be 1 or 3"));
  e = spec_error(replace_once(pose, "NAME: pose_hrnet", "NAME: pose_resnet"));
  CHECK(contains(e, "pose_resnet"));
  // yacs: keys outside MODEL.EXTRA must be in the defaults; values keep their type
  e = spec_error(replace_once(pose, "  SHUFFLE: true\n", "  SHUFLE: true\n"));
  CHECK(contains(e, "bad.yaml: unknown key TRAIN.SHUFLE"));
  e = spec_error(replace_once(pose, "END_EPOCH: 210", "END_EPOCH: many"));
  CHECK(contains(e, "type mismatch for TRAIN.END_EPOCH"));
  e = spec_error(replace_once(pose, "  END_EPOCH: 210\n", "  END_EPOCH: [210\n"));
  CHECK(contains(e, "bad.yaml: YAML error at line"));
  // unknown keys under MODEL.EXTRA are tolerated, as the official code ignores them
  CHECK(spec_error(replace_once(pose, "    FINAL_CONV_KERNEL: 1\n",
                                "    FINAL_CONV_KERNEL: 1\n    UNUSED_KEY: 3\n")) == "");
  // seg: missing STAGE4 is named
  const std::string seg =
      test::slurp(cfg_path("seg_hrnet_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml"));
  e = spec_error(replace_once(seg, "STAGE4:", "STAGE5:"));
  CHECK(contains(e, "missing required key MODEL.EXTRA.STAGE4.NUM_MODULES"));
  e = spec_error(replace_once(seg, "ALIGN_CORNERS: False", "ALIGN_CORNERS: maybe"));
  CHECK(contains(e, "MODEL.ALIGN_CORNERS must be a boolean"));
  CHECK(
      contains(error_of([] { Config::load(cfg_path("no_such_file.yaml")); }), "no_such_file.yaml"));
}

// ---------------------------------------------------------------------------------------------
// Optional: a full-size W32 checkpoint through the .pth reader
// ---------------------------------------------------------------------------------------------
TEST_CASE("W32 pose checkpoint (HRNET_W32_REF_DIR)", "[models][slow]") {
  const char* dir = std::getenv("HRNET_W32_REF_DIR");
  if (!dir) {
    WARN("HRNET_W32_REF_DIR not set: skipped (tools/gen_model_reference.py --w32-dir DIR)");
    return;
  }
  const std::string d = dir;
  auto raw = load_checkpoint(d + "/model_pose_w32.pth");
  CHECK(raw.size() == 1754);
  HRNet model(spec_from_config(Config::load(cfg_path("w32_256x192_adam_lr1e-3.yaml"))));
  load_hrnet_checkpoint(model, d + "/model_pose_w32.pth");
  std::map<std::string, std::string> meta;
  std::map<std::string, Tensor> io;
  for (auto& [k, t] : load_checkpoint(d + "/model_pose_w32.safetensors", &meta)) io[k] = t;
  model.eval();
  NoGradGuard g;
  require_close(model.forward(io.at("input")), io.at("out_eval.0"), "W32 eval output", "W32 eval");
  print_errors();
}
