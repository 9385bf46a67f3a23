// hrnet-infer: model summary (parameters, multiply-adds, GFLOPs, output shapes, activation
// memory) and tensor-in / tensor-out inference for an HRNet built from an official YAML
// experiment file or a built-in name.
//
//   hrnet-infer --config FILE --summary [--input-size HxW] [--batch N]
//   hrnet-infer --config FILE --weights CKPT --input-tensor IN --output-tensor OUT [--device D]
//   (inference runs as a compiled graph: batch norm folded into convolutions, fused batch norm +
//    add + ReLU, one planned arena; --eager runs the ops one by one instead)
//   (--model pose_w32 | seg_w48 | det_w18 | cls_w18_small_v1 ... instead of --config;
//    --set KEY VALUE overrides a config key, yacs-style, any number of times)
//
//   hrnet-infer (--config FILE | --model NAME) --weights CKPT --image IMG
//     [--box X,Y,W,H]... [--boxes DETS.json [--box-thre T]] [--json OUT.json] [--overlay OUT.png]
//   (pose head) keypoints of the people in the boxes (the whole image when none is given),
//   with flip test and the official decoding, as JSON, and the image with skeletons drawn;
//   (cls head) the top-5 classes with their probabilities (the validation transform), named
//   from --classes FILE (one name a line) or the config's class folders, and --json OUT.json;
//   (seg head) the label map, coloured with the dataset's palette (Cityscapes' for its 19
//   classes), with --label-map OUT.png, the image blended with it with --overlay OUT.png, and the
//   share of each class with --json OUT.json; inference as the official test (the config's
//   TEST.BASE_SIZE, IMAGE_SIZE windows, FLIP_TEST, MULTI_SCALE/SCALE_LIST).
//   (det head, an HRNet-FCOS config) the objects found, score >= --box-thre (default 0.5), as
//   JSON (COCO [x,y,w,h], score, category) and the image with their boxes drawn; inference as
//   the official test (MIN_SIZE_TEST / MAX_SIZE_TEST, FCOS post-processing).
//   (pose head) --detector DET.yaml --detector-weights CKPT: the people are found by that
//   detector (its "person" detections with score >= --box-thre), then their keypoints.
//
// IN is a .safetensors file holding a float32 [N,3,H,W] tensor named "input"; OUT receives the
// head's raw output as float32 "output" (the det head's pyramid levels as "output.0" ...),
// written atomically. Errors print one line and exit non-zero, leaving no output file.
#include <omp.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "apps/app_common.h"
#include "data/draw.h"
#include "data/image.h"
#include "engine/autograd.h"
#include "engine/checkpoint.h"
#include "engine/file_util.h"
#include "kernels/cpu/cpu_kernels.h"
#include "tasks/classification.h"
#include "tasks/detection.h"
#include "tasks/pose.h"
#include "tasks/predict.h"
#include "tasks/segmentation.h"
#include "data/seg_classes.h"
#include "models/config.h"
#include "models/hrnet.h"

using namespace hr;
using namespace hr::models;
using hr::apps::UsageError;

namespace {

const char* kUsage =
    "usage: hrnet-infer (--config FILE | --model NAME) [--set KEY VALUE]...\n"
    "         --summary [--input-size HxW] [--batch N]\n"
    "       hrnet-infer (--config FILE | --model NAME) --weights CKPT\n"
    "         --input-tensor IN.safetensors --output-tensor OUT.safetensors [--device cpu|cuda]\n"
    "       hrnet-infer (--config FILE | --model NAME) --weights CKPT --image IMG\n"
    "         [--box X,Y,W,H]... [--boxes DETS.json [--box-thre T]] [--json OUT.json]\n"
    "         [--overlay OUT.png] [--device cpu|cuda]   (pose models)\n"
    "       hrnet-infer (--config FILE | --model NAME) --weights CKPT --image IMG\n"
    "         [--classes NAMES.txt] [--json OUT.json] [--device cpu|cuda]   (cls models)\n"
    "       hrnet-infer (--config FILE | --model NAME) --weights CKPT --image IMG\n"
    "         [--label-map OUT.png] [--overlay OUT.png] [--json OUT.json] [--device cpu|cuda]\n"
    "         (seg models)\n"
    "  --eager: run the ops one by one instead of the compiled inference graph\n"
    "NAME: HEAD_VARIANT with HEAD in pose, seg, det, cls and VARIANT in w18_small_v1,\n"
    "      w18_small_v2, w18, w30, w32, w40, w44, w48, w64 (e.g. pose_w32)\n";

struct Args {
  std::string config, model, weights, input, output, device = "cpu", input_size;
  std::string image, boxes_file, json_out, overlay_out, classes, label_map;
  std::string detector, detector_weights;  // pose: find the people with this det config
  std::vector<std::array<float, 4>> boxes;
  float box_thre = 0.5f;
  std::vector<std::string> overrides;
  bool summary = false, eager = false;
  int64_t batch = 1;
};


// Boxes are pixels of an image: coordinates beyond tasks::kMaxBoxCoord, or not finite, are refused
// (they made the overlay's line drawing overflow, and NaN reached the JSON as an invalid token).
using tasks::kMaxBoxCoord;

std::string box_problem(const std::array<float, 4>& b) {
  for (float v : b)
    if (!std::isfinite(v)) return "coordinates must be finite numbers";
  for (float v : b)
    if (std::fabs(v) > kMaxBoxCoord)
      return str_cat("coordinates must be within +-", kMaxBoxCoord, " pixels");
  if (!(b[2] > 0 && b[3] > 0)) return "needs a positive width and height";
  return "";
}

// The images hrnet-infer writes: PNG or JPEG by extension, checked before any work.
void check_image_path(const std::string& flag, const std::string& path) {
  if (path.empty()) return;
  std::string ext = std::filesystem::path(path).extension().string();
  for (auto& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (ext != ".png" && ext != ".jpg" && ext != ".jpeg")
    throw UsageError(flag + " must name a .png, .jpg or .jpeg file, got " + path);
}

// A number for the JSON output: JSON has no NaN or infinity, so those are written as null.
std::string jnum(double v) { return std::isfinite(v) ? str_cat(v) : "null"; }

// Writes the outputs of a run, each atomically, all or none: when one fails, those already
// written are removed, so no partial set is left (images first: they are the likelier to fail).
void write_outputs(const std::vector<std::pair<std::string, std::function<void()>>>& outs) {
  std::vector<std::string> done;
  try {
    for (const auto& [path, write] : outs) {
      if (path.empty()) continue;
      write();
      done.push_back(path);
    }
  } catch (...) {
    for (const auto& p : done) std::remove(p.c_str());
    throw;
  }
}

void write_text(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size(), "cannot write " + path);
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
    else if (k == "--input-tensor")
      a.input = value(i);
    else if (k == "--output-tensor")
      a.output = value(i);
    else if (k == "--device")
      a.device = value(i);
    else if (k == "--input-size")
      a.input_size = value(i);
    else if (k == "--image")
      a.image = value(i);
    else if (k == "--boxes")
      a.boxes_file = value(i);
    else if (k == "--json")
      a.json_out = value(i);
    else if (k == "--overlay")
      a.overlay_out = value(i);
    else if (k == "--classes")
      a.classes = value(i);
    else if (k == "--label-map")
      a.label_map = value(i);
    else if (k == "--detector")
      a.detector = value(i);
    else if (k == "--detector-weights")
      a.detector_weights = value(i);
    else if (k == "--box-thre") {
      const std::string v = value(i);
      char* end = nullptr;
      a.box_thre = std::strtof(v.c_str(), &end);
      if (*end || v.empty() || !std::isfinite(a.box_thre))
        throw UsageError("--box-thre must be a finite number, got " + v);
    } else if (k == "--box") {
      const std::string v = value(i);
      std::array<float, 4> b{};
      const char* p = v.c_str();
      for (int j = 0; j < 4; ++j) {
        char* end = nullptr;
        b[j] = std::strtof(p, &end);
        if (end == p || (j < 3 && *end != ',') || (j == 3 && *end))
          throw UsageError("--box must be X,Y,W,H, got " + v);
        p = end + 1;
      }
      const std::string why = box_problem(b);
      if (!why.empty()) throw UsageError("--box " + v + ": " + why);
      a.boxes.push_back(b);
    } else if (k == "--summary")
      a.summary = true;
    else if (k == "--eager")
      a.eager = true;
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
  if (a.detector.empty() != a.detector_weights.empty())
    throw UsageError("--detector and --detector-weights go together");
  if (!a.detector.empty() && (a.image.empty() || !a.boxes.empty() || !a.boxes_file.empty()))
    throw UsageError("--detector finds the people of an --image: it replaces --box and --boxes");
  if (!a.image.empty()) {
    if (a.weights.empty()) throw UsageError("--image needs --weights");
    if (!a.input.empty() || !a.output.empty() || a.summary)
      throw UsageError("--image does not combine with --input-tensor/--output-tensor/--summary");
  } else if (!a.boxes.empty() || !a.boxes_file.empty() || !a.json_out.empty() ||
             !a.overlay_out.empty() || !a.classes.empty() || !a.label_map.empty()) {
    throw UsageError("--box, --boxes, --classes, --label-map, --json and --overlay go with --image");
  } else if (!a.summary && (a.weights.empty() || a.input.empty() || a.output.empty())) {
    throw UsageError(
        "inference needs --weights, --input-tensor and --output-tensor, or --image (or --summary)");
  }
  if (a.device != "cpu" && a.device.rfind("cuda", 0) != 0)
    throw UsageError("--device must be cpu or cuda[:N], got " + a.device);
  check_image_path("--overlay", a.overlay_out);
  check_image_path("--label-map", a.label_map);
  if (!a.json_out.empty() && (a.json_out == a.overlay_out || a.json_out == a.label_map))
    throw UsageError("--json and the image outputs must be different files");
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

void summary(HRNet& model, const Args& a, std::array<int64_t, 2> hw) {
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
      "mult-adds    %s (conv %s + linear %s + bmm %s; batch-norm, ReLU, additions, resampling "
      "and pooling are not counted)\n",
      grouped(st.macs()).c_str(), grouped(st.conv_macs).c_str(), grouped(st.linear_macs).c_str(),
      grouped(st.bmm_macs).c_str());
  std::printf("GFLOPs       %.2f (mult-adds / 2^30, as the HRNet papers report)\n", st.gflops());
  for (size_t i = 0; i < st.outputs.size(); ++i)
    std::printf("output%-6s %s\n", st.outputs.size() > 1 ? ("." + std::to_string(i)).c_str() : "",
                shape_str(st.outputs[i]).c_str());
  std::printf(
      "activations  %.1f MiB planned (one arena, buffers reused once dead; %.1f MiB alive at "
      "most at once; %.1f MiB with no reuse), fp32 inference forward\n",
      st.planned_activation_bytes / 1048576.0, st.peak_live_bytes / 1048576.0,
      st.activation_bytes / 1048576.0);
  const GraphPlans gp = plan_graphs(model, in);
  auto line = [](const char* what, const graph::PlanStats& p) {
    char folded[64] = "";
    if (p.constant_bytes)
      std::snprintf(folded, sizeof folded, "; %.1f MiB of it folded and prepacked weights",
                    p.constant_bytes / 1048576.0);
    std::printf("%-12s %.1f MiB fp32 arena (%.1f MiB with no reuse%s), %lld nodes, %lld fused, "
                "%lld folded, %lld prepacked, %lld streams, %lld events\n",
                what, p.arena_bytes / 1048576.0, p.total_bytes / 1048576.0, folded,
                (long long)p.nodes, (long long)p.fused, (long long)p.folded,
                (long long)p.prepacked, (long long)p.streams, (long long)p.events);
  };
  line("graph infer", gp.inference);
  if (gp.has_training) line("graph train", gp.training);
  std::printf("CPU          %d threads, kernels %s, %s products (this processor: %s%s; "
              "HR_CPU_ISA, HR_CPU_PRECISION choose)\n",
              omp_get_max_threads(), cpu::cpu_isa(), cpu::cpu_precision(),
              cpu::cpu_isas_supported().c_str(), cpu::cpu_bf16_supported() ? ", bf16" : "");
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
  const auto t0 = std::chrono::steady_clock::now();
  if (a.eager) {
    InferenceMode guard;
    outs = model.forward_all(dev == Device::cpu() ? x : x.to(dev));
  } else {
    graph::InferenceRunner run([&model](const Tensor& in) { return model.forward_all(in); }, dev);
    outs = run(x);
    for (Tensor& y : outs) y = y.clone();  // the graph's buffers go with it
  }
  std::fprintf(stderr, "hrnet-infer: %s forward of %s in %.1f ms\n",
               a.eager ? "eager" : "graph", shape_str(x.shape()).c_str(),
               1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  NamedTensors named;
  for (size_t i = 0; i < outs.size(); ++i) {
    Tensor y = outs[i].to(Device::cpu());
    if (y.dtype() != DType::f32) y = y.to(DType::f32);
    named.emplace_back(outs.size() == 1 ? "output" : "output." + std::to_string(i), y);
  }
  save_safetensors(a.output, named,
                   {{"model", model.spec().name}, {"head", head_name(model.spec().head)}});
}

// The detections of an HRNet-FCOS model with score >= --box-thre (of category `only` when given),
// highest score first; `categories` receives each label's category.
struct FoundObject : tasks::DetBox {
  data::CocoCategory category;
};
std::vector<FoundObject> find_objects(HRNet& model, const Config& cfg, const std::string& weights,
                                      const data::Image& img, const Args& a,
                                      const std::string& only = "") {
  const tasks::DetSettings s = tasks::DetSettings::from_config(cfg);
  const auto categories = tasks::det_label_categories(s, model.spec().num_classes);
  load_hrnet_checkpoint(model, weights);
  tasks::RunOptions run;
  run.device = parse_device(a.device);
  run.graph = !a.eager;
  tasks::Predictor predictor(model, &cfg, run);
  std::vector<FoundObject> found;
  for (const tasks::DetBox& d : predictor.detect(img)) {
    const data::CocoCategory& c = categories.at(static_cast<size_t>(d.label));
    if (!(d.score >= a.box_thre) || (!only.empty() && c.name != only)) continue;
    found.push_back({d, c});
  }
  std::stable_sort(found.begin(), found.end(),
                   [](const FoundObject& x, const FoundObject& y) { return x.score > y.score; });
  return found;
}
std::vector<FoundObject> find_objects(const std::string& det_cfg, const std::string& weights,
                                      const data::Image& img, const Args& a,
                                      const std::string& only) {
  const Config cfg = Config::load(det_cfg);
  HR_CHECK(cfg.get_str("MODEL.NAME", "") == "fcos_hrnet", "--detector ", det_cfg,
           " is not a detection (HRNet-FCOS) config");
  HRNet model(spec_from_config(cfg));
  return find_objects(model, cfg, weights, img, a, only);
}

// The objects in an image (det head): JSON and/or the image with their boxes.
void detect_image(HRNet& model, const Args& a, const Config* cfg) {
  if (a.json_out.empty() && a.overlay_out.empty())
    throw UsageError("--image with a det model needs --json OUT.json and/or --overlay OUT.png");
  if (!a.boxes.empty() || !a.boxes_file.empty() || !a.classes.empty() || !a.label_map.empty())
    throw UsageError("--box, --boxes, --classes and --label-map do not go with det models");
  if (!cfg) throw UsageError("--image with a det model needs its --config (the test transform)");
  const data::Image img = data::read_image(a.image);
  const std::vector<FoundObject> found = find_objects(model, *cfg, a.weights, img, a);
  data::Image overlay = img;
  std::string json = str_cat("{\"image\": ", json_quote(a.image), ", \"width\": ", img.width,
                             ", \"height\": ", img.height, ", \"detections\": [");
  const float line = std::max(2.f, img.width / 250.f);
  const data::SegClassTable palette = data::seg_class_table("cityscapes", 19);  // box colours
  for (size_t k = 0; k < found.size(); ++k) {
    const FoundObject& d = found[k];
    json += str_cat(k ? ",\n  " : "\n  ", "{\"bbox\": [", jnum(d.xywh[0]), ", ",
                    jnum(d.xywh[1]), ", ", jnum(d.xywh[2]), ", ", jnum(d.xywh[3]),
                    "], \"score\": ", jnum(d.score), ", \"category_id\": ", d.category.id,
                    ", \"name\": ", json_quote(d.category.name), "}");
    const float x0 = d.xywh[0], y0 = d.xywh[1], x1 = x0 + d.xywh[2], y1 = y0 + d.xywh[3];
    const auto& c = palette.colours[static_cast<size_t>(d.label) % palette.colours.size()];
    for (const auto& [ax, ay, bx, by] : std::vector<std::array<float, 4>>{
             {x0, y0, x1, y0}, {x1, y0, x1, y1}, {x1, y1, x0, y1}, {x0, y1, x0, y0}})
      data::draw_line(overlay, ax, ay, bx, by, line, c);
  }
  json += "\n ]}\n";
  write_outputs({{a.overlay_out, [&] { data::write_image(overlay, a.overlay_out); }},
                 {a.json_out, [&] { write_text(a.json_out, json); }}});
  for (const FoundObject& d : found)
    std::printf("%-14s %.3f  [%.1f, %.1f, %.1f, %.1f]\n", d.category.name.c_str(), d.score,
                d.xywh[0], d.xywh[1], d.xywh[2], d.xywh[3]);
  std::fprintf(stderr, "hrnet-infer: %zu objects with score >= %g in %s\n", found.size(),
               a.box_thre, a.image.c_str());
}

// Keypoints of the people in an image: crops of the given boxes (the whole image when none),
// the model with flip test, the official decoding; JSON and/or an overlay picture.
void infer_image(HRNet& model, const Args& a, const Config* cfg) {
  HR_CHECK(model.spec().head == Head::Pose, "--image takes pose, seg, det and cls models, ", model.spec().name,
           " has the ", head_name(model.spec().head), " head");
  if (a.json_out.empty() && a.overlay_out.empty())
    throw UsageError("--image with a pose model needs --json OUT.json and/or --overlay OUT.png");
  if (!a.classes.empty()) throw UsageError("--classes goes with classification models");
  if (!a.label_map.empty()) throw UsageError("--label-map goes with segmentation models");
  tasks::RunOptions run;
  run.device = parse_device(a.device);
  run.graph = !a.eager;
  run.progress = false;
  const data::Image img = data::read_image(a.image);  // fails early, naming the file
  load_hrnet_checkpoint(model, a.weights);
  tasks::Predictor predictor(model, cfg, run);

  std::vector<std::array<float, 5>> boxes;  // x, y, w, h, score
  for (const auto& b : a.boxes) boxes.push_back({b[0], b[1], b[2], b[3], 1.f});
  if (!a.boxes_file.empty()) {
    const auto dets = data::load_detections(a.boxes_file);
    for (size_t k = 0; k < dets.size(); ++k) {
      const auto& d = dets[k];
      if (!(d.score >= a.box_thre)) continue;
      const std::array<float, 4> b = {float(d.bbox[0]), float(d.bbox[1]), float(d.bbox[2]),
                                      float(d.bbox[3])};
      // zero-sized detections are kept (they crop nothing), as the official test does
      for (float v : b)
        if (!std::isfinite(v) || std::fabs(v) > kMaxBoxCoord)
          throw Error(str_cat(a.boxes_file, ": detection ", k, ": bbox [", d.bbox[0], ", ",
                              d.bbox[1], ", ", d.bbox[2], ", ", d.bbox[3],
                              "]: coordinates must be finite and within +-", kMaxBoxCoord,
                              " pixels"));
      boxes.push_back({b[0], b[1], b[2], b[3], float(d.score)});
    }
  }
  if (!a.detector.empty()) {
    for (const auto& d : find_objects(a.detector, a.detector_weights, img, a, "person"))
      boxes.push_back({d.xywh[0], d.xywh[1], d.xywh[2], d.xywh[3], d.score});
    std::fprintf(stderr, "hrnet-infer: %zu %s found by %s\n", boxes.size(),
                 boxes.size() == 1 ? "person" : "people", a.detector.c_str());
    if (boxes.empty()) {  // nobody: an empty result, not the whole image
      write_outputs({{a.overlay_out, [&] { data::write_image(img, a.overlay_out); }},
                     {a.json_out, [&] {
                        write_text(a.json_out, str_cat("{\"image\": ", json_quote(a.image),
                                                       ", \"people\": []}\n"));
                      }}});
      return;
    }
  }
  const std::vector<tasks::PersonKeypoints> preds = predictor.keypoints(img, boxes);

  data::Image overlay = img;
  std::string json = "{\"image\": " + json_quote(a.image) + ", \"width\": " + std::to_string(img.width) +
                     ", \"height\": " + std::to_string(img.height) + ", \"keypoint_names\": [";
  const auto& names = data::coco_keypoint_names();
  for (size_t j = 0; j < names.size(); ++j) json += (j ? ", \"" : "\"") + names[j] + "\"";
  json += "],\n \"people\": [";
  for (size_t p = 0; p < preds.size(); ++p) {
    const tasks::PersonKeypoints& q = preds[p];
    json += str_cat(p ? ",\n  " : "\n  ", "{\"bbox\": [", jnum(q.bbox[0]), ", ",
                    jnum(q.bbox[1]), ", ", jnum(q.bbox[2]), ", ", jnum(q.bbox[3]),
                    "], \"box_score\": ", jnum(q.box_score), ", \"score\": ", jnum(q.score),
                    ", \"keypoints\": [");
    for (int k = 0; k < 3 * data::kNumJoints; ++k)
      json += str_cat(k ? ", " : "", jnum(preds[p].keypoints[k]));
    json += "]}";
    data::draw_skeleton(overlay, preds[p].keypoints.data(), data::kNumJoints, 0.2f,
                        std::max(2.f, img.width / 200.f));
  }
  json += "\n ]}\n";
  write_outputs({{a.overlay_out, [&] { data::write_image(overlay, a.overlay_out); }},
                 {a.json_out, [&] { write_text(a.json_out, json); }}});
  std::fprintf(stderr, "hrnet-infer: %zu %s in %s\n", preds.size(),
               preds.size() == 1 ? "person" : "people", a.image.c_str());
}

// The top-5 classes of an image: the validation transform (Resize(size/0.875) + CenterCrop), the
// model, softmax.
void classify_image(HRNet& model, const Args& a, const Config* cfg) {
  HR_CHECK(a.overlay_out.empty() && a.boxes.empty() && a.boxes_file.empty() && a.label_map.empty(),
           "--overlay, --box and --boxes go with pose and seg models, --label-map with seg models");
  std::vector<std::string> names;
  if (!a.classes.empty()) {
    std::ifstream f(a.classes);
    HR_CHECK(f, "cannot open the class list ", a.classes);
    for (std::string line; std::getline(f, line);)
      if (!line.empty()) names.push_back(line);
  }
  const int64_t C = model.spec().num_classes;
  HR_CHECK(names.empty() || static_cast<int64_t>(names.size()) == C, "the class list has ",
           names.size(), " names, the model ", C, " classes");
  load_hrnet_checkpoint(model, a.weights);
  tasks::RunOptions run;
  run.device = parse_device(a.device);
  run.graph = !a.eager;
  tasks::Predictor predictor(model, cfg, run);
  if (names.empty()) names = predictor.class_names();
  const tasks::TopK top = predictor.classify(data::EncodedImage::read(a.image), 5);
  std::string json = "{\"image\": " + json_quote(a.image) + ", \"top5\": [";
  for (size_t k = 0; k < top.size(); ++k) {
    const std::string& name = names[static_cast<size_t>(top[k].first)];
    std::printf("%zu  %-24s %.4f\n", k + 1, name.c_str(), top[k].second);
    json += str_cat(k ? ", " : "", "{\"class\": ", top[k].first, ", \"name\": ", json_quote(name),
                    ", \"probability\": ", jnum(top[k].second), "}");
  }
  json += "]}\n";
  if (!a.json_out.empty()) write_text(a.json_out, json);
}

// The label map of an image: the official test's inference (tasks::seg_inference), argmax; a
// coloured label map, an overlay and the share of each class.
void segment_image(HRNet& model, const Args& a, const Config* cfg) {
  HR_CHECK(a.boxes.empty() && a.boxes_file.empty() && a.classes.empty(),
           "--box, --boxes and --classes do not go with seg models");
  if (a.json_out.empty() && a.overlay_out.empty() && a.label_map.empty())
    throw UsageError("--image with a seg model needs --label-map, --overlay and/or --json");
  const data::Image img = data::read_image(a.image);  // fails early, naming the file
  const int64_t C = model.spec().num_classes;
  load_hrnet_checkpoint(model, a.weights);
  tasks::RunOptions run;
  run.device = parse_device(a.device);
  run.graph = !a.eager;
  run.test_augmentation = true;
  tasks::Predictor predictor(model, cfg, run);
  const std::vector<int64_t> pred = predictor.segment(img);

  const data::SegClassTable classes = predictor.seg_classes();
  data::Image colour(img.width, img.height), overlay = img;
  std::vector<int64_t> count(static_cast<size_t>(C), 0);
  for (size_t p = 0; p < pred.size(); ++p) {
    const auto& c = classes.colours[static_cast<size_t>(pred[p])];
    ++count[static_cast<size_t>(pred[p])];
    for (int k = 0; k < 3; ++k) {
      colour.pixels[p * 3 + k] = c[k];
      overlay.pixels[p * 3 + k] = static_cast<uint8_t>((img.pixels[p * 3 + k] + c[k] + 1) / 2);
    }
  }
  std::string json = str_cat("{\"image\": ", json_quote(a.image), ", \"width\": ", img.width,
                             ", \"height\": ", img.height, ", \"classes\": [");
  bool first = true;
  for (int64_t k = 0; k < C; ++k) {
    if (!count[static_cast<size_t>(k)]) continue;
    const double share = double(count[static_cast<size_t>(k)]) / double(pred.size());
    std::printf("%-16s %6.2f%%\n", classes.names[static_cast<size_t>(k)].c_str(), 100 * share);
    json += str_cat(first ? "" : ", ", "{\"class\": ", k, ", \"name\": ",
                    json_quote(classes.names[static_cast<size_t>(k)]), ", \"share\": ", jnum(share), "}");
    first = false;
  }
  json += "]}\n";
  write_outputs({{a.label_map, [&] { data::write_image(colour, a.label_map); }},
                 {a.overlay_out, [&] { data::write_image(overlay, a.overlay_out); }},
                 {a.json_out, [&] { write_text(a.json_out, json); }}});
}

}  // namespace

int main(int argc, char** argv) {
  return apps::app_main("hrnet-infer", " (--help for usage)\n", [&] {
    const Args a = parse(argc, argv);
    std::shared_ptr<HRNet> model;
    std::array<int64_t, 2> hw{0, 0};
    Config cfg;
    if (!a.config.empty()) {
      cfg = Config::load(a.config);
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
    else if (!a.image.empty() && model->spec().head == Head::Cls)
      classify_image(*model, a, a.config.empty() ? nullptr : &cfg);
    else if (!a.image.empty() && model->spec().head == Head::Seg)
      segment_image(*model, a, a.config.empty() ? nullptr : &cfg);
    else if (!a.image.empty() && model->spec().head == Head::Det)
      detect_image(*model, a, a.config.empty() ? nullptr : &cfg);
    else if (!a.image.empty())
      infer_image(*model, a, a.config.empty() ? nullptr : &cfg);
    else
      infer(*model, a);
    return 0;
  });
}
