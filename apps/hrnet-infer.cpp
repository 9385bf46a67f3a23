// hrnet-infer: model summary (parameters, multiply-adds, GFLOPs, output shapes, activation
// memory) and tensor-in / tensor-out inference for an HRNet built from an official YAML
// experiment file or a built-in name.
//
//   hrnet-infer --config FILE --summary [--input-size HxW] [--batch N]
//   hrnet-infer --config FILE --weights CKPT --input-tensor IN --output-tensor OUT [--device D]
//   (--model pose_w32 | seg_w48 | det_w18 | cls_w18_small_v1 ... instead of --config;
//    --set KEY VALUE overrides a config key, yacs-style, any number of times)
//
// IN is a .safetensors file holding a float32 [N,3,H,W] tensor named "input"; OUT receives the
// head's raw output as float32 "output" (the det head's pyramid levels as "output.0" ...),
// written atomically. Errors print one line and exit non-zero, leaving no output file.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/checkpoint.h"
#include "models/config.h"
#include "models/hrnet.h"

using namespace hr;
using namespace hr::models;

namespace {

const char* kUsage =
    "usage: hrnet-infer (--config FILE | --model NAME) [--set KEY VALUE]...\n"
    "         --summary [--input-size HxW] [--batch N]\n"
    "       hrnet-infer (--config FILE | --model NAME) --weights CKPT\n"
    "         --input-tensor IN.safetensors --output-tensor OUT.safetensors [--device cpu|cuda]\n"
    "NAME: HEAD_VARIANT with HEAD in pose, seg, det, cls and VARIANT in w18_small_v1,\n"
    "      w18_small_v2, w18, w30, w32, w40, w44, w48, w64 (e.g. pose_w32)\n";

struct Args {
  std::string config, model, weights, input, output, device = "cpu", input_size;
  std::vector<std::string> overrides;
  bool summary = false;
  int64_t batch = 1;
};

struct UsageError : Error {
  using Error::Error;
};

Args parse(int argc, char** argv) {
  Args a;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) throw UsageError(std::string(argv[i]) + " needs a value");
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--config")
      a.config = value(i);
    else if (k == "--model")
      a.model = value(i);
    else if (k == "--weights")
      a.weights = value(i);
    else if (k == "--input-tensor")
      a.input = value(i);
    else if (k == "--output-tensor")
      a.output = value(i);
    else if (k == "--device")
      a.device = value(i);
    else if (k == "--input-size")
      a.input_size = value(i);
    else if (k == "--summary")
      a.summary = true;
    else if (k == "--batch") {
      const std::string v = value(i);
      char* end = nullptr;
      a.batch = std::strtoll(v.c_str(), &end, 10);
      if (*end || a.batch <= 0) throw UsageError("--batch must be a positive integer, got " + v);
    } else if (k == "--set") {
      a.overrides.push_back(value(i));
      a.overrides.push_back(value(i));
    } else if (k == "-h" || k == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else {
      throw UsageError("unknown argument " + k);
    }
  }
  if (a.config.empty() == a.model.empty())
    throw UsageError("give exactly one of --config, --model");
  if (!a.model.empty() && !a.overrides.empty())
    throw UsageError("--set applies to --config files only");
  if (!a.summary && (a.weights.empty() || a.input.empty() || a.output.empty()))
    throw UsageError(
        "inference needs --weights, --input-tensor and --output-tensor (or --summary)");
  if (a.device != "cpu" && a.device.rfind("cuda", 0) != 0)
    throw UsageError("--device must be cpu or cuda[:N], got " + a.device);
  return a;
}

std::string grouped(double v) {
  std::string s = std::to_string(static_cast<long long>(v + 0.5)), r;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) r += ',';
    r += s[i];
  }
  return r;
}

std::array<int64_t, 2> parse_hw(const std::string& s) {
  const size_t x = s.find('x');
  char* e1 = nullptr;
  char* e2 = nullptr;
  const std::string h = s.substr(0, x), w = x == std::string::npos ? "" : s.substr(x + 1);
  const long long hv = std::strtoll(h.c_str(), &e1, 10), wv = std::strtoll(w.c_str(), &e2, 10);
  if (x == std::string::npos || h.empty() || w.empty() || *e1 || *e2 || hv <= 0 || wv <= 0)
    throw UsageError("--input-size must be HxW (e.g. 256x192), got " + s);
  return {hv, wv};
}

void summary(const HRNet& model, const Args& a, std::array<int64_t, 2> hw) {
  const ModelSpec& s = model.spec();
  if (!a.input_size.empty()) hw = parse_hw(a.input_size);
  if (hw[0] <= 0 || hw[1] <= 0)
    throw UsageError("the config gives no input size: use --input-size HxW");
  const Shape in = {a.batch, 3, hw[0], hw[1]};
  const ModelStats st = model.stats(in);
  std::printf("model        %s (%s head, %s fuse upsampling%s)\n", s.name.c_str(),
              head_name(s.head), s.fuse == FuseUpsample::Nearest ? "nearest" : "bilinear",
              s.fuse == FuseUpsample::Bilinear
                  ? (s.align_corners ? ", align_corners true" : ", align_corners false")
                  : "");
  std::printf("input        %s\n", shape_str(in).c_str());
  std::printf("parameters   %s\n", grouped(double(st.params)).c_str());
  std::printf("layers       %lld conv, %lld batch-norm, %lld linear\n", (long long)st.conv_layers,
              (long long)st.bn_layers, (long long)st.linear_layers);
  std::printf(
      "mult-adds    %s (conv %s + linear %s; batch-norm, ReLU, additions, resampling "
      "and pooling are not counted)\n",
      grouped(st.macs()).c_str(), grouped(st.conv_macs).c_str(), grouped(st.linear_macs).c_str());
  std::printf("GFLOPs       %.2f (mult-adds / 2^30, as the HRNet papers report)\n", st.gflops());
  for (size_t i = 0; i < st.outputs.size(); ++i)
    std::printf("output%-6s %s\n", st.outputs.size() > 1 ? ("." + std::to_string(i)).c_str() : "",
                shape_str(st.outputs[i]).c_str());
  std::printf(
      "activations  %.1f MiB: sum of every op's fp32 output in an inference forward, an "
      "upper bound on activation memory until the static-graph planner lands\n",
      st.activation_bytes / 1048576.0);
}

Device parse_device(const std::string& d) {
  if (d == "cpu") return Device::cpu();
  if (d == "cuda") return Device::cuda(0);
  const std::string idx = d.substr(5);
  char* end = nullptr;
  const long v = std::strtol(idx.c_str(), &end, 10);
  if (d.size() <= 5 || d[4] != ':' || *end || v < 0)
    throw UsageError("--device must be cpu or cuda[:N], got " + d);
  return Device::cuda(static_cast<int>(v));
}

void infer(HRNet& model, const Args& a) {
  const Device dev = parse_device(a.device);
  NamedTensors in = load_checkpoint(a.input);
  Tensor x;
  for (auto& [k, t] : in)
    if (k == "input") x = t;
  HR_CHECK(x.defined(), a.input, ": no tensor named 'input' (", in.size(), " tensors in the file)");
  HR_CHECK(x.dtype() == DType::f32, a.input, ": 'input' must be float32, got ",
           dtype_name(x.dtype()));
  model.check_input(x.shape());
  load_hrnet_checkpoint(model, a.weights);
  model.eval();
  if (dev != Device::cpu()) model.to(dev);
  std::vector<Tensor> outs;
  {
    InferenceMode guard;
    outs = model.forward_all(dev == Device::cpu() ? x : x.to(dev));
  }
  NamedTensors named;
  for (size_t i = 0; i < outs.size(); ++i) {
    Tensor y = outs[i].to(Device::cpu());
    if (y.dtype() != DType::f32) y = y.to(DType::f32);
    named.emplace_back(outs.size() == 1 ? "output" : "output." + std::to_string(i), y);
  }
  save_safetensors(a.output, named,
                   {{"model", model.spec().name}, {"head", head_name(model.spec().head)}});
}

std::string one_line(std::string m) {
  for (auto& c : m)
    if (c == '\n') c = ';';
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse(argc, argv);
    std::shared_ptr<HRNet> model;
    std::array<int64_t, 2> hw{0, 0};
    if (!a.config.empty()) {
      Config cfg = Config::load(a.config);
      cfg.merge_from_list(a.overrides);
      model = make_hrnet(cfg);
      hw = config_input_hw(cfg);
    } else {
      ModelSpec spec = builtin_spec(a.model);
      model = std::make_shared<HRNet>(spec);
      hw = {spec.image_size[1], spec.image_size[0]};
    }
    if (a.summary)
      summary(*model, a, hw);
    else
      infer(*model, a);
    return 0;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "hrnet-infer: %s (--help for usage)\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hrnet-infer: %s\n", one_line(e.what()).c_str());
    return 1;
  }
}
