// ONNX export of an HRNet model: what each head's model reads and writes (tasks/export.h).
#include "tasks/export.h"

#include <array>

#include "data/boxes.h"
#include "engine/graph/graph.h"
#include "tasks/detection.h"

#ifndef HR_VERSION
#define HR_VERSION ""
#endif

namespace hr::tasks {

namespace {

using models::Head;

std::array<int64_t, 2> input_hw(const models::HRNet& model, const models::Config* cfg,
                                const ExportOptions& o) {
  const models::ModelSpec& s = model.spec();
  if (o.height > 0 || o.width > 0) {
    HR_CHECK(o.height > 0 && o.width > 0,
             "ONNX export: the input size needs a height and a "
             "width, got ",
             o.height, "x", o.width);
    return {o.height, o.width};
  }
  const std::array<int64_t, 2> hw = cfg ? models::config_input_hw(*cfg)
                                        : std::array<int64_t, 2>{s.image_size[1], s.image_size[0]};
  HR_CHECK(hw[0] > 0 && hw[1] > 0, "ONNX export: ", s.name,
           " gives no input size (its config has no image size): give one (HxW)");
  return hw;
}

// The model's mode for the export (eval), restored afterwards.
class EvalScope {
 public:
  explicit EvalScope(models::HRNet& m) : m_(m), was_(m.is_training()) { m_.eval(); }
  ~EvalScope() { m_.train(was_); }
  EvalScope(const EvalScope&) = delete;
  EvalScope& operator=(const EvalScope&) = delete;

 private:
  models::HRNet& m_;
  bool was_;
};

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

}  // namespace

OnnxModel build_onnx(models::HRNet& model, const models::Config* cfg, const ExportOptions& o) {
  const models::ModelSpec& spec = model.spec();
  HR_CHECK(!o.det_decode || spec.head == Head::Det,
           "ONNX export: the detection decoding applies "
           "to det (HRNet-FCOS) models; ",
           spec.name, " has the ", models::head_name(spec.head), " head");
  HR_CHECK(!o.ocr_aux || spec.ocr,
           "ONNX export: the auxiliary logits exist in seg models with "
           "OCR only; ",
           spec.name, " has none");
  const std::array<int64_t, 2> hw = input_hw(model, cfg, o);
  data::FcosPostprocessOptions post;
  post.num_classes = spec.num_classes + 1;
  if (o.det_decode && cfg) post = DetSettings::from_config(*cfg).postprocess;
  HR_CHECK(post.num_classes == spec.num_classes + 1, "ONNX export: MODEL.FCOS.NUM_CLASSES ",
           post.num_classes, " does not fit the model's ", spec.num_classes, " classes");

  Device device = Device::cpu();
  for (const auto& [key, t] : model.named_parameters()) {
    device = t.device();
    break;
  }
  EvalScope eval(model);
  graph::Graph g(graph::GraphOptions{device});
  // dim 0 is the model's dynamic batch: any batch records the same graph
  const std::vector<Tensor> ys = model.forward_all(g.input("input", {2, 3, hw[0], hw[1]}));

  std::vector<std::string> outs;
  auto output = [&](const Tensor& y, const std::string& name) {
    g.output(y, name);
    outs.push_back(name);
  };
  int64_t levels = 0;
  switch (spec.head) {
    case Head::Pose:
      output(ys[0], "heatmaps");
      break;
    case Head::Cls:
      output(ys[0], "logits");
      break;
    case Head::Seg:
      output(ys.back(), "logits");  // OCR: [aux, out], the official TEST.OUTPUT_INDEX -1
      if (o.ocr_aux) output(ys[0], "aux_logits");
      break;
    case Head::Det: {
      levels = static_cast<int64_t>(ys.size() / 3);
      const char* kinds[3] = {"cls_logits", "bbox_reg", "centerness"};
      for (int k = 0; k < 3; ++k)
        for (int64_t l = 0; l < levels; ++l) output(ys[k * levels + l], str_cat(kinds[k], ".", l));
      break;
    }
  }

  OnnxGraphOptions go;
  go.opset = o.opset;
  go.graph_name = spec.name;
  go.producer_version = HR_VERSION;
  go.outputs = outs;
  go.doc = str_cat("HRNet ", spec.name, " (", models::head_name(spec.head),
                   " head), exported by "
                   "hrnet-export: batch norm folded into the convolutions; input f32 [batch, 3, ",
                   hw[0], ", ", hw[1], "]");
  for (const auto& [key, t] : model.state_dict()) go.names[t.impl()] = key;
  go.metadata = {{"hrnet.model", spec.name},
                 {"hrnet.head", models::head_name(spec.head)},
                 {"hrnet.input_size", str_cat(hw[0], "x", hw[1])}};
  if (spec.head == Head::Det) {
    std::vector<int64_t> strides;
    for (int64_t l = 0; l < levels; ++l) strides.push_back(spec.det_stride(l));
    go.metadata.push_back({"hrnet.det.strides", join(strides)});
    go.metadata.push_back({"hrnet.det.num_classes", std::to_string(spec.num_classes)});
  }
  if (o.det_decode) {
    go.metadata.push_back({"hrnet.det.postprocess",
                           str_cat("pre_nms_thresh ", post.pre_nms_thresh, ", pre_nms_top_n ",
                                   post.pre_nms_top_n, ", nms_thresh ", post.nms_thresh,
                                   ", detections_per_img ", post.detections_per_img)});
    go.finish = [&](OnnxEmitter& e, const std::vector<OnnxValueInfo>& raw) {
      std::vector<data::FcosLevel> lv;
      std::vector<std::string> cls, reg, ctr;
      for (int64_t l = 0; l < levels; ++l) {
        data::FcosLevel f;
        f.stride = spec.det_stride(l);
        f.h = raw[l].dims[2];
        f.w = raw[l].dims[3];
        lv.push_back(f);
        cls.push_back(raw[l].name);
        reg.push_back(raw[levels + l].name);
        ctr.push_back(raw[2 * levels + l].name);
      }
      OnnxValueInfo d;
      d.name = e.claim("detections");
      d.dtype = DType::f32;
      d.dims = {-1, 7};
      d.dim_params = {"detections", ""};
      data::fcos_postprocess_onnx(e, lv, cls, reg, ctr, hw[0], hw[1], post, d.name);
      return std::vector<OnnxValueInfo>{d};
    };
  }
  return export_onnx_graph(g, go);
}

ExportSummary export_onnx(models::HRNet& model, const models::Config* cfg, const ExportOptions& o) {
  HR_CHECK(!o.path.empty(), "ONNX export: no output path");
  OnnxModel m = build_onnx(model, cfg, o);
  ExportSummary s;
  s.path = o.path;
  s.bytes = m.save(o.path);
  s.stats = m.stats();
  return s;
}

}  // namespace hr::tasks
