// hrnet-export: an HRNet model as an ONNX file (opset 17) for ONNX Runtime, OpenVINO, TensorRT:
// its inference graph with batch norm folded into the convolutions and a dynamic batch dimension
// (tasks/export.h; docs/EXPORT.md).
//
//   hrnet-export (--config FILE | --model NAME) --weights CKPT --out MODEL.onnx
//     [--input-size HxW] [--det-decode] [--ocr-aux] [--opset 17] [--set KEY VALUE]...
//
// The model is checked (ONNX checker, strict shape inference) before it is written, atomically:
// errors print one line and exit non-zero, leaving no file.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "apps/app_common.h"
#include "models/config.h"
#include "models/hrnet.h"
#include "tasks/export.h"

using namespace hr;
using hr::apps::UsageError;

namespace {

const char* kUsage =
    "usage: hrnet-export (--config FILE | --model NAME) [--set KEY VALUE]... --weights CKPT\n"
    "         --out MODEL.onnx [--input-size HxW] [--det-decode] [--ocr-aux] [--opset 17]\n"
    "  --input-size: the input's height and width (default: the config's image size)\n"
    "  --det-decode: det models: FCOS post-processing in the model, output 'detections' [K, 7]\n"
    "                (image, x1, y1, x2, y2, score, label) instead of the raw pyramid outputs\n"
    "  --ocr-aux:    seg models with OCR: the auxiliary logits as a second output\n"
    "NAME: HEAD_VARIANT with HEAD in pose, seg, det, cls and VARIANT in w18_small_v1,\n"
    "      w18_small_v2, w18, w30, w32, w40, w44, w48, w64 (e.g. pose_w32)\n";

struct Args {
  std::string config, model, weights, out, input_size;
  std::vector<std::string> overrides;
  tasks::ExportOptions opt;
};

int64_t positive(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const long long n = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end || n <= 0) throw UsageError(flag + " must be a positive integer, got " + v);
  return n;
}

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
    else if (k == "--out")
      a.out = value(i);
    else if (k == "--input-size")
      a.input_size = value(i);
    else if (k == "--det-decode")
      a.opt.det_decode = true;
    else if (k == "--ocr-aux")
      a.opt.ocr_aux = true;
    else if (k == "--opset")
      a.opt.opset = positive(k, value(i));
    else if (k == "--set") {
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
  if (a.weights.empty()) throw UsageError("--weights CKPT is required");
  if (a.out.empty()) throw UsageError("--out MODEL.onnx is required");
  if (a.opt.opset != 17)
    throw UsageError("--opset: only 17 is supported, got " + std::to_string(a.opt.opset));
  if (!a.input_size.empty()) {
    const size_t x = a.input_size.find('x');
    if (x == std::string::npos)
      throw UsageError("--input-size must be HxW (e.g. 256x192), got " + a.input_size);
    a.opt.height = positive("--input-size", a.input_size.substr(0, x));
    a.opt.width = positive("--input-size", a.input_size.substr(x + 1));
  }
  a.opt.path = a.out;
  return a;
}

// Fails before any work when the output cannot be written where it is asked for.
void check_output(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec))
    throw Error(str_cat("cannot write ", path, ": it is a directory"));
  fs::path dir = fs::path(path).parent_path();
  if (dir.empty()) dir = ".";
  if (!fs::is_directory(dir, ec))
    throw Error(str_cat("cannot write ", path, ": no directory ", dir.string()));
  if (::access(dir.c_str(), W_OK) != 0)
    throw Error(str_cat("cannot write ", path, ": directory ", dir.string(), " is not writable"));
}

}  // namespace

int main(int argc, char** argv) {
  return apps::app_main("hrnet-export", " (--help for usage)\n", [&] {
    const Args a = parse(argc, argv);
    check_output(a.out);
    std::shared_ptr<models::HRNet> model;
    models::Config cfg;
    if (!a.config.empty()) {
      cfg = models::Config::load(a.config);
      cfg.merge_from_list(a.overrides);
      model = models::make_hrnet(cfg);
    } else {
      model = std::make_shared<models::HRNet>(models::builtin_spec(a.model));
    }
    models::load_hrnet_checkpoint(*model, a.weights);
    const tasks::ExportSummary s =
        tasks::export_onnx(*model, a.config.empty() ? nullptr : &cfg, a.opt);
    char size[32];
    std::snprintf(size, sizeof size, "%.1f MiB", static_cast<double>(s.bytes) / 1048576.0);
    std::printf(
        "wrote %s (%s): opset %lld, %lld nodes, %lld initializers (%.1f MiB), %lld batch "
        "norms folded into convolutions\n",
        s.path.c_str(), size, static_cast<long long>(a.opt.opset),
        static_cast<long long>(s.stats.nodes), static_cast<long long>(s.stats.initializers),
        static_cast<double>(s.stats.initializer_bytes) / 1048576.0,
        static_cast<long long>(s.stats.folded));
    for (const auto& i : s.stats.inputs) std::printf("input   %s\n", i.str().c_str());
    for (const auto& o : s.stats.outputs) std::printf("output  %s\n", o.str().c_str());
    return 0;
  });
}
