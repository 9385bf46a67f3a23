// Inference on whole images with any head (tasks/predict.h).
#include "tasks/predict.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

#include "data/classification.h"
#include "data/pose.h"
#include "data/segmentation.h"
#include "engine/autograd.h"

namespace hr::tasks {

using models::Head;

Predictor::Predictor(models::HRNet& model, const models::Config* cfg, const RunOptions& run)
    : model_(model), run_(run) {
  model_.eval();
  if (run_.device != Device::cpu()) model_.to(run_.device);
  const models::ModelSpec& sp = model_.spec();
  switch (sp.head) {
    case Head::Pose:
      if (cfg) {
        const PoseSettings s = PoseSettings::from_config(*cfg);
        pose_data_ = eval_dataset_options(s);
        pose_eval_ = eval_options(s, run_);
      } else {
        pose_data_.aug.enabled = false;
        pose_data_.target.image_w = static_cast<int>(sp.image_size[0]);
        pose_data_.target.image_h = static_cast<int>(sp.image_size[1]);
        pose_data_.target.heatmap_w = static_cast<int>(sp.heatmap_size[0]);
        pose_data_.target.heatmap_h = static_cast<int>(sp.heatmap_size[1]);
        pose_eval_.run = run_;
      }
      HR_CHECK(pose_data_.target.image_w > 0 && pose_data_.target.image_h > 0 &&
                   pose_data_.target.heatmap_w > 0,
               "the model gives no MODEL.IMAGE_SIZE / HEATMAP_SIZE");
      model_.check_input({1, 3, pose_data_.target.image_h, pose_data_.target.image_w});
      names_ = data::coco_keypoint_names();
      break;
    case Head::Seg:
      if (cfg) {
        const SegSettings s = SegSettings::from_config(*cfg);
        seg_ = infer_options(s, run_.test_augmentation);
        seg_dataset_ = s.dataset;
        seg_from_cfg_ = true;
        HR_CHECK(seg_.classes == sp.num_classes, "the config has ", seg_.classes,
                 " classes, the model ", sp.num_classes);
      }
      names_ = seg_classes().names;
      break;
    case Head::Det:
      HR_CHECK(cfg, "a det model needs its config (the test transform and post-processing)");
      det_ = std::make_unique<DetSettings>(DetSettings::from_config(*cfg));
      detector_ = std::make_unique<Detector>(model_, *det_, run_);
      for (const data::CocoCategory& c : det_label_categories(*det_, sp.num_classes))
        names_.push_back(c.name);
      break;
    case Head::Cls:
      if (cfg) {
        const ClsSettings s = ClsSettings::from_config(*cfg);
        std::error_code ec;
        if (s.train_list.empty() && std::filesystem::is_directory(s.root + "/" + s.train_set, ec))
          names_ = data::scan_image_folder(s.root + "/" + s.train_set).classes;
      }
      if (static_cast<int64_t>(names_.size()) != sp.num_classes) {
        names_.clear();
        for (int64_t k = 0; k < sp.num_classes; ++k) names_.push_back(std::to_string(k));
      }
      break;
    default:
      break;
  }
  if (run_.graph)
    graph_ = std::make_unique<graph::InferenceRunner>(
        [this](const Tensor& x) { return model_.forward_all(x); }, run_.device, run_.autocast);
}

Predictor::~Predictor() = default;

data::SegClassTable Predictor::seg_classes() const {
  return data::seg_class_table(seg_dataset_, model_.spec().num_classes);
}

std::vector<Tensor> Predictor::outputs(const Tensor& x) {
  model_.check_input(x.shape());
  InferenceMode no_grad;
  if (graph_) return (*graph_)(x);
  AutocastGuard ac(run_.autocast);
  return model_.forward_all(x.to(run_.device));
}

std::vector<Tensor> Predictor::forward(const Tensor& x) {
  std::vector<Tensor> ys = outputs(x);
  if (graph_)
    for (Tensor& y : ys) y = y.clone();  // the graph's buffers are reused by the next call
  return ys;
}

namespace {

Tensor to_host_f32(const Tensor& y) {
  Tensor h = Tensor::empty(y.shape());
  h.copy_(y);
  return h;
}

void check_head(const models::HRNet& m, Head want, const char* what) {
  HR_CHECK(m.spec().head == want, what, " takes a ", models::head_name(want), " model; ",
           m.spec().name, " has the ", models::head_name(m.spec().head), " head");
}

}  // namespace

std::vector<PersonKeypoints> Predictor::keypoints(const data::Image& img,
                                                  std::vector<std::array<float, 5>> boxes) {
  check_head(model_, Head::Pose, "keypoints");
  HR_CHECK(img.channels == 3 && !img.empty(), "keypoints: the image must be RGB, got ", img.width,
           "x", img.height, "x", img.channels);
  for (size_t k = 0; k < boxes.size(); ++k)
    for (float v : boxes[k])
      HR_CHECK(std::isfinite(v) && std::fabs(v) <= kMaxBoxCoord, "keypoints: box ", k, " [",
               boxes[k][0], ", ", boxes[k][1], ", ", boxes[k][2], ", ", boxes[k][3], ", ",
               boxes[k][4], "]: values must be finite and within +-", kMaxBoxCoord);
  if (boxes.empty()) boxes.push_back({0, 0, float(img.width), float(img.height), 1.f});
  const data::TargetParams& tp = pose_data_.target;
  const float aspect = float(tp.image_w) / float(tp.image_h);
  std::vector<data::PoseRecord> recs(boxes.size());
  for (size_t k = 0; k < boxes.size(); ++k) {
    recs[k].score = boxes[k][4];
    data::box_to_center_scale({boxes[k][0], boxes[k][1], boxes[k][2], boxes[k][3]}, aspect,
                              recs[k].center, recs[k].scale);
  }
  const HeatmapForward heatmaps = [this](const Tensor& x) { return to_host_f32(outputs(x)[0]); };
  std::vector<PersonKeypoints> out;
  const size_t batch = static_cast<size_t>(std::max<int64_t>(1, pose_eval_.batch));
  const int64_t plane = 3 * int64_t(tp.image_h) * tp.image_w;
  std::mt19937_64 rng(0);  // unused: no augmentation
  for (size_t b0 = 0; b0 < recs.size(); b0 += batch) {
    const size_t n = std::min(batch, recs.size() - b0);
    Tensor x = Tensor::empty({int64_t(n), 3, tp.image_h, tp.image_w});
    std::vector<const data::PoseRecord*> rp;
    for (size_t i = 0; i < n; ++i) {
      data::make_sample(img, recs[b0 + i], pose_data_.aug, tp, rng,
                        x.data<float>() + int64_t(i) * plane, nullptr, nullptr, nullptr);
      rp.push_back(&recs[b0 + i]);
    }
    const auto preds = predict_crops(heatmaps, x, rp, tp, pose_eval_);
    for (size_t i = 0; i < n; ++i) {
      const auto& b = boxes[b0 + i];
      PersonKeypoints p;
      p.bbox = {b[0], b[1], b[2], b[3]};
      p.box_score = b[4];
      p.keypoints = preds[i].keypoints;
      // the official rescoring (data::rescore_and_nms's score, before its NMS)
      float sum = 0;
      int m = 0;
      for (int j = 0; j < data::kNumJoints; ++j)
        if (p.keypoints[3 * j + 2] > 0.2f) sum += p.keypoints[3 * j + 2], ++m;
      p.score = (m ? sum / m : 0.f) * p.box_score;
      out.push_back(p);
    }
  }
  return out;
}

TopK Predictor::classify(const data::EncodedImage& img, int k) {
  check_head(model_, Head::Cls, "classify");
  data::ClassificationOptions o;
  o.size = static_cast<int>(model_.spec().image_size[0]);
  o.train = false;
  HR_CHECK(o.size > 0, "the model gives no MODEL.IMAGE_SIZE");
  const int64_t C = model_.spec().num_classes;
  HR_CHECK(k >= 1, "classify: k must be at least 1, got ", k);
  Tensor x = Tensor::empty({1, 3, o.size, o.size});
  std::mt19937_64 rng(0);
  data::make_classification_sample(img, o, rng, x.data<float>());
  const std::vector<float> logits = to_host_f32(outputs(x)[0]).to_vector();
  return top_classes(logits.data(), C, static_cast<int>(std::min<int64_t>(k, C)));
}

std::vector<int64_t> Predictor::segment(const data::Image& img) {
  check_head(model_, Head::Seg, "segment");
  HR_CHECK(img.channels == 3 && !img.empty(), "segment: the image must be RGB, got ", img.width,
           "x", img.height, "x", img.channels);
  SegInferOptions o = seg_;
  if (!seg_from_cfg_) {  // a built-in model: the whole image at its size
    o.base_size = std::max(img.width, img.height);
    o.crop_h = img.height;
    o.crop_w = img.width;
    o.align_corners = model_.spec().align_corners;
    o.classes = model_.spec().num_classes;
  }
  const SegForward fwd = [this](const Tensor& x) {
    return to_host_f32(outputs(x).back());  // the last output (OCR: the final one)
  };
  Tensor x = Tensor::empty({1, 3, img.height, img.width});
  const data::SegOptions norm;  // the official ImageNet mean and std, as the seg datasets use
  data::normalize_seg_input(img, norm.mean, norm.std, x.data<float>());
  return seg_argmax(seg_inference(fwd, x, o));
}

std::vector<DetBox> Predictor::detect(const data::Image& img) {
  check_head(model_, Head::Det, "detect");
  HR_CHECK(img.channels == 3 && !img.empty(), "detect: the image must be RGB, got ", img.width,
           "x", img.height, "x", img.channels);
  return (*detector_)(img);
}

}  // namespace hr::tasks
