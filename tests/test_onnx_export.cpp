// ONNX export (tasks/export.h, engine/export/onnx.h): every head's model read back from its bytes
// passes the ONNX checker, has opset 17, a dynamic batch dimension, the model's parameters by
// their key names, and batch norm folded into the convolutions (the folded values checked); ops
// with no translation, a reshape that moves the batch and training-mode batch norm are refused
// with their names; hrnet-export's bad inputs give one line, a non-zero exit and no file. The
// runtimes' numbers (ONNX Runtime, OpenVINO against the engine): tests/onnx/check_onnx_runtimes.py.
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <set>

#include "app_runner.h"
#include "engine/checkpoint.h"
#include "engine/export/onnx.h"
#include "engine/graph/graph.h"
#include "engine/ops.h"
#include "models/hrnet.h"
#include "small_specs.h"
#include "tasks/export.h"
#include "test_util.h"

using namespace hr;
using namespace hr::models;
using hr::test::contains;
using hr::test::error_of;

namespace {

onnx::ModelProto parse(const OnnxModel& m) {
  onnx::ModelProto p;
  REQUIRE(p.ParseFromString(m.serialize()));
  return p;
}

std::map<std::string, int> op_counts(const onnx::ModelProto& p) {
  std::map<std::string, int> n;
  for (const auto& node : p.graph().node()) ++n[node.op_type()];
  return n;
}

// "batch,3,64,64"
std::string dims(const onnx::ValueInfoProto& v) {
  std::string s;
  for (const auto& d : v.type().tensor_type().shape().dim())
    s += (s.empty() ? "" : ",") +
         (d.has_dim_param() ? d.dim_param() : std::to_string(d.dim_value()));
  return s;
}

std::vector<std::string> names(const google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>& vs) {
  std::vector<std::string> r;
  for (const auto& v : vs) r.push_back(v.name());
  return r;
}

const onnx::TensorProto& initializer(const onnx::ModelProto& p, const std::string& name) {
  for (const auto& t : p.graph().initializer())
    if (t.name() == name) return t;
  FAIL("no initializer " << name);
  throw 0;
}

std::vector<float> floats(const onnx::TensorProto& t) {
  REQUIRE(t.data_type() == onnx::TensorProto::FLOAT);
  std::vector<float> v(t.raw_data().size() / sizeof(float));
  std::memcpy(v.data(), t.raw_data().data(), t.raw_data().size());
  return v;
}

// The checks every exported model passes: the checker, opset 17 (IR 8), the input with its
// dynamic batch, every initializer's size matching its dims.
void check_common(const onnx::ModelProto& p, int64_t h, int64_t w) {
  CHECK_NOTHROW(onnx::checker::check_model(p));
  CHECK(p.ir_version() == 8);
  REQUIRE(p.opset_import_size() == 1);
  CHECK(p.opset_import(0).domain().empty());
  CHECK(p.opset_import(0).version() == 17);
  REQUIRE(p.graph().input_size() == 1);
  CHECK(p.graph().input(0).name() == "input");
  CHECK(dims(p.graph().input(0)) == str_cat("batch,3,", h, ",", w));
  for (const auto& t : p.graph().initializer()) {
    int64_t n = 1;
    for (int64_t d : t.dims()) n *= d;
    const int64_t bytes = t.data_type() == onnx::TensorProto::INT64 ? 8 : 4;
    CHECK(static_cast<int64_t>(t.raw_data().size()) == n * bytes);
  }
}

// Batch norms that are not the identity: random affine parameters and running statistics.
void random_batch_norms(HRNet& model, uint64_t seed) {
  NoGradGuard g;
  uint64_t s = seed;
  for (auto& [key, t] : model.state_dict()) {
    auto ends = [&](const std::string& e) {
      return key.size() > e.size() && key.compare(key.size() - e.size(), e.size(), e) == 0;
    };
    const size_t n = static_cast<size_t>(t.numel());
    Tensor v;
    if (ends(".running_mean"))
      v = Tensor::from_vector(test::uniform(n, ++s, -0.5f, 0.5f), t.shape());
    if (ends(".running_var")) v = Tensor::from_vector(test::uniform(n, ++s, 0.5f, 2.f), t.shape());
    if (t.dim() == 1 && t.dtype() == DType::f32 && !ends(".running_mean") && !ends(".running_var"))
      v = Tensor::from_vector(test::uniform(n, ++s, 0.5f, 1.5f), t.shape());
    if (v.defined()) Tensor(t).copy_(v);
  }
}

ModelSpec small_ocr_spec() {
  ModelSpec s = test::small_spec(Head::Seg, true);
  s.name = "small_ocr";
  s.align_corners = true;
  s.ocr = true;
  s.ocr_mid_channels = 12;
  s.ocr_key_channels = 6;
  s.num_outputs = 2;
  return s;
}

tasks::ExportOptions size(int64_t h, int64_t w) {
  tasks::ExportOptions o;
  o.height = h;
  o.width = w;
  return o;
}

}  // namespace

TEST_CASE("ONNX pose: checker, opset 17, dynamic batch, keys, batch norm folded", "[onnx]") {
  HRNet model(test::small_spec(Head::Pose, false), 3);
  random_batch_norms(model, 11);
  model.train();  // exported in eval mode, the mode restored
  const OnnxModel m = tasks::build_onnx(model, nullptr, size(64, 64));
  CHECK(model.is_training());
  const onnx::ModelProto p = parse(m);
  check_common(p, 64, 64);
  REQUIRE(p.graph().output_size() == 1);
  CHECK(p.graph().output(0).name() == "heatmaps");
  CHECK(dims(p.graph().output(0)) == "batch,17,16,16");

  // every convolution once, every batch norm folded into the convolution before it
  std::set<std::string> convs;  // module prefixes
  int64_t bns = 0;
  for (const auto& [key, t] : model.state_dict()) {
    if (t.dim() == 4) convs.insert(key.substr(0, key.size() - 7));  // ".weight"
    if (key.size() > 13 && key.compare(key.size() - 13, 13, ".running_mean") == 0) ++bns;
  }
  const auto ops = op_counts(p);
  CHECK(ops.count("BatchNormalization") == 0);
  CHECK(ops.at("Conv") == static_cast<int>(convs.size()));
  CHECK(m.stats().folded == bns);
  CHECK(m.stats().nodes == p.graph().node_size());
  CHECK(m.stats().initializers == p.graph().initializer_size());

  // initializers: each convolution's weight and bias by its key (a folded convolution's bias is
  // "<module>.bias"), nothing of the batch norms; the rest are ONNX constants ("onnx::...")
  std::set<std::string> keys, expected;
  for (const auto& t : p.graph().initializer())
    if (t.name().rfind("onnx::", 0) != 0) keys.insert(t.name());
  for (const auto& c : convs) expected.insert({c + ".weight", c + ".bias"});
  CHECK(keys == expected);

  // the folded values: w * gamma / sqrt(var + eps), beta - mean * gamma / sqrt(var + eps)
  std::map<std::string, std::vector<float>> sd;
  for (const auto& [key, t] : model.state_dict()) sd[key] = t.to_vector();
  const auto w = floats(initializer(p, "conv1.weight")), b = floats(initializer(p, "conv1.bias"));
  const auto &w0 = sd["conv1.weight"], &gamma = sd["bn1.weight"], &beta = sd["bn1.bias"],
             &mean = sd["bn1.running_mean"], &var = sd["bn1.running_var"];
  REQUIRE(w.size() == w0.size());
  REQUIRE(b.size() == gamma.size());
  const size_t K = gamma.size(), inner = w0.size() / K;
  double worst = 0;
  for (size_t k = 0; k < K; ++k) {
    const double s = gamma[k] / std::sqrt(double(var[k]) + 1e-5);
    for (size_t i = 0; i < inner; ++i)
      worst = std::max(worst, std::fabs(w[k * inner + i] - w0[k * inner + i] * s) /
                                  std::max(1e-6, std::fabs(w0[k * inner + i] * s)));
    worst = std::max(worst, std::fabs(b[k] - (beta[k] - mean[k] * s)) /
                                std::max(1e-3, std::fabs(beta[k] - mean[k] * s)));
  }
  CHECK(worst < 1e-5);
  // the final layer keeps its own weight and bias
  CHECK(floats(initializer(p, "final_layer.weight")) == sd["final_layer.weight"]);
  CHECK(floats(initializer(p, "final_layer.bias")) == sd["final_layer.bias"]);
  // nearest fuse upsampling as Resize with scales
  CHECK(ops.at("Resize") > 0);
}

TEST_CASE("ONNX every head: outputs, shapes, the ops they use", "[onnx]") {
  SECTION("seg (HRNetV2)") {
    HRNet model(test::small_spec(Head::Seg, false), 1);
    const onnx::ModelProto p = parse(tasks::build_onnx(model, nullptr, size(64, 96)));
    check_common(p, 64, 96);
    CHECK(names(p.graph().output()) == std::vector<std::string>{"logits"});
    CHECK(dims(p.graph().output(0)) == "batch,5,16,24");
    CHECK(op_counts(p).count("BatchNormalization") == 0);
    CHECK(op_counts(p).at("Resize") > 0);
  }
  SECTION("seg with OCR: the final logits, the auxiliary ones on demand") {
    HRNet model(small_ocr_spec(), 1);
    onnx::ModelProto p = parse(tasks::build_onnx(model, nullptr, size(64, 64)));
    check_common(p, 64, 64);
    CHECK(names(p.graph().output()) == std::vector<std::string>{"logits"});
    CHECK(op_counts(p).at("MatMul") == 3);
    CHECK(op_counts(p).at("Softmax") == 2);
    tasks::ExportOptions o = size(64, 64);
    o.ocr_aux = true;
    p = parse(tasks::build_onnx(model, nullptr, o));
    CHECK(names(p.graph().output()) == std::vector<std::string>{"logits", "aux_logits"});
    CHECK(dims(p.graph().output(1)) == "batch,5,16,16");
  }
  SECTION("cls") {
    HRNet model(test::small_spec(Head::Cls, false), 1);
    const onnx::ModelProto p = parse(tasks::build_onnx(model, nullptr, size(64, 64)));
    check_common(p, 64, 64);
    CHECK(names(p.graph().output()) == std::vector<std::string>{"logits"});
    CHECK(dims(p.graph().output(0)) == "batch,10");
    CHECK(op_counts(p).at("Gemm") == 1);
    CHECK(op_counts(p).at("GlobalAveragePool") == 1);
  }
  SECTION("det: the raw pyramid, and the decoding") {
    HRNet model(test::small_spec(Head::Det, false), 1);
    onnx::ModelProto p = parse(tasks::build_onnx(model, nullptr, size(64, 96)));
    check_common(p, 64, 96);
    std::vector<std::string> want;
    for (const char* k : {"cls_logits", "bbox_reg", "centerness"})
      for (int l = 0; l < 3; ++l) want.push_back(str_cat(k, ".", l));
    CHECK(names(p.graph().output()) == want);
    CHECK(dims(p.graph().output(0)) == "batch,3,8,12");  // stride 8, 3 classes
    CHECK(dims(p.graph().output(5)) == "batch,4,2,3");
    CHECK(dims(p.graph().output(8)) == "batch,1,2,3");
    const auto ops = op_counts(p);
    CHECK(ops.count("BatchNormalization") == 0);
    CHECK(ops.at("InstanceNormalization") == 2 * 3);  // GroupNorm, 2 towers x 3 levels
    CHECK(ops.at("AveragePool") == 2);
    CHECK(ops.at("Exp") == 3);

    tasks::ExportOptions o = size(64, 96);
    o.det_decode = true;
    p = parse(tasks::build_onnx(model, nullptr, o));
    check_common(p, 64, 96);
    CHECK(names(p.graph().output()) == std::vector<std::string>{"detections"});
    CHECK(dims(p.graph().output(0)) == "detections,7");
    const auto dops = op_counts(p);
    CHECK(dops.at("NonMaxSuppression") == 1);
    CHECK(dops.at("TopK") == 3 + 1);  // per level, and the detections per image
    CHECK(dops.at("Compress") == 1);
    bool meta = false;
    for (const auto& kv : p.metadata_props()) meta = meta || kv.key() == "hrnet.det.postprocess";
    CHECK(meta);
  }
  SECTION("options that do not fit the head") {
    HRNet pose(test::small_spec(Head::Pose, true), 1);
    tasks::ExportOptions o = size(64, 64);
    o.det_decode = true;
    CHECK(contains(error_of([&] { tasks::build_onnx(pose, nullptr, o); }), "det (HRNet-FCOS)"));
    o = size(64, 64);
    o.ocr_aux = true;
    CHECK(contains(error_of([&] { tasks::build_onnx(pose, nullptr, o); }), "OCR only"));
    CHECK(contains(error_of([&] { tasks::build_onnx(pose, nullptr, size(60, 64)); }),
                   "not a multiple of 32"));
    o = size(64, 64);
    o.opset = 18;
    CHECK(contains(error_of([&] { tasks::build_onnx(pose, nullptr, o); }), "opset 18"));
  }
}

TEST_CASE("ONNX export refuses what it cannot translate, naming the op", "[onnx]") {
  SECTION("an op with no translation") {
    graph::Graph g;
    g.output(ops::sum_all(ops::relu(g.input("x", {2, 4, 3, 3}))), "y");
    CHECK(contains(error_of([&] { export_onnx_graph(g, OnnxGraphOptions()); }),
                   "sum_all has no ONNX export"));
  }
  SECTION("a reshape that moves the batch") {
    graph::Graph g;
    g.output(ops::reshape(g.input("x", {2, 4, 3, 3}), {8, 9}), "y");
    CHECK(contains(error_of([&] { export_onnx_graph(g, OnnxGraphOptions()); }),
                   "does not keep the batch"));
  }
  SECTION("batch norm in training mode") {
    BatchNorm2d bn(4);
    graph::Graph g;
    g.output(bn(g.input("x", {2, 4, 3, 3})), "y");
    CHECK(contains(error_of([&] { export_onnx_graph(g, OnnxGraphOptions()); }),
                   "training mode has no ONNX export"));
  }
  SECTION("a graph is exported once") {
    graph::Graph g;
    g.output(ops::relu(g.input("x", {2, 4, 3, 3})), "y");
    const onnx::ModelProto p = parse(export_onnx_graph(g, OnnxGraphOptions()));
    CHECK(dims(p.graph().output(0)) == "batch,4,3,3");
    CHECK(contains(error_of([&] { export_onnx_graph(g, OnnxGraphOptions()); }), "already"));
  }
}

#ifdef HR_EXPORT_EXE
TEST_CASE("hrnet-export: a model file, or one line, a non-zero exit and no file", "[onnx][apps]") {
  test::TempDir t;
  auto run = [&](const std::string& args) {
    return test::run_program(HR_EXPORT_EXE, args, t / "cmd");
  };
  const std::string cfg = t / "pose.yaml", weights = t / "pose.safetensors";
  std::ofstream(cfg) << test::tiny_pose_config(t.path.string());
  save_safetensors(weights, make_hrnet(Config::load(cfg))->state_dict());

  const std::string out = t / "pose.onnx";
  test::Run ok = run("--config " + cfg + " --weights " + weights + " --out " + out);
  INFO(ok.err);
  REQUIRE(ok.code == 0);
  CHECK(contains(ok.out, "nodes"));
  CHECK(contains(ok.out, "initializers"));
  CHECK(contains(ok.out, "batch norms folded"));
  CHECK(contains(ok.out, "input   input f32[batch, 3, 96, 64]"));
  CHECK(contains(ok.out, "output  heatmaps f32[batch, 17, 24, 16]"));
  CHECK_NOTHROW(onnx::checker::check_model(out));

  const std::string seg_cfg = t / "seg.yaml", seg_w = t / "seg.safetensors";
  std::ofstream(seg_cfg) << test::tiny_seg_config(t.path.string());
  save_safetensors(seg_w, make_hrnet(Config::load(seg_cfg))->state_dict());
  const std::string other = t / "other.yaml";
  std::ofstream(other) << "MODEL:\n  NAME: resnet50\n";

  const std::string bad = t / "bad.onnx";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--config " + cfg + " --weights " + (t / "missing.safetensors") + " --out " + bad,
       "missing.safetensors"},
      {"--model pose_w99 --weights " + weights + " --out " + bad, "w99"},
      {"--config " + other + " --weights " + weights + " --out " + bad, "resnet50"},
      {"--config " + cfg + " --weights " + seg_w + " --out " + bad, "seg.safetensors"},
      {"--config " + cfg + " --weights " + weights + " --out " + (t / "no_dir/x.onnx"),
       "no directory"},
      {"--config " + cfg + " --weights " + weights + " --out " + t.path.string(), "a directory"},
      {"--config " + cfg + " --weights " + weights + " --out " + bad + " --det-decode", "det"},
      {"--config " + cfg + " --weights " + weights + " --out " + bad + " --input-size 90x64",
       "multiple of 32"},
      {"--config " + cfg + " --weights " + weights, "--out"},
      {"--config " + cfg + " --weights " + weights + " --out " + bad + " --opset 13", "17"},
  };
  for (const auto& [args, why] : cases) {
    test::Run r = run(args);
    INFO(args << "\n" << r.err);
    CHECK(r.code != 0);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(contains(r.err, "hrnet-export: "));
    CHECK(contains(r.err, why));
  }
  // nothing but what the test wrote: no model, no temp file
  std::set<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(t.path))
    files.insert(e.path().filename().string());
  CHECK(files == std::set<std::string>{"pose.yaml", "pose.safetensors", "pose.onnx", "seg.yaml",
                                       "seg.safetensors", "other.yaml"});
}
#endif
