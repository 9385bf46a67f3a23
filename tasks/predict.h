// Inference on whole images with any head, as hrnet-infer and the Python package run it: the
// experiment's test transform and test-time settings, the compiled inference graph (one per input
// shape, kept across calls) or the eager forward, and each head's official decoding.
//
//   tasks::Predictor p(model, &cfg, run);       // cfg: the experiment file (null: a built-in model)
//   auto people = p.keypoints(img, {{x, y, w, h, 1.f}});   // pose
//   auto labels = p.segment(img);                           // seg: one class per pixel
//   auto top5 = p.classify(data::EncodedImage::read(path), 5);  // cls
//   auto objects = p.detect(img);                           // det
#pragma once
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "data/coco_eval.h"
#include "data/image.h"
#include "data/seg_classes.h"
#include "engine/graph.h"
#include "tasks/classification.h"
#include "tasks/detection.h"
#include "tasks/pose.h"
#include "tasks/segmentation.h"
#include "tasks/task.h"

namespace hr::tasks {

// One person of a pose prediction, in image pixels.
struct PersonKeypoints {
  std::array<float, 4> bbox{};  // x, y, w, h: the box the person was cropped from
  float box_score = 1;
  // the official rescoring: the mean of the joint maxima above 0.2 (0 when none) x box_score
  float score = 0;
  std::array<float, 3 * data::kNumJoints> keypoints{};  // x, y, heatmap maximum per joint
};

class Predictor {
 public:
  // `model` is put in eval mode and moved to run.device; it must outlive the predictor. `cfg`
  // (may be null: a built-in model, with its MODEL.IMAGE_SIZE and the default test settings)
  // gives the test transform: pose crops and flip test, seg's TEST.* (multi-scale and flip when
  // run.test_augmentation), cls's validation resize, det's INPUT.*_TEST and post-processing (det
  // needs it).
  Predictor(models::HRNet& model, const models::Config* cfg, const RunOptions& run);
  ~Predictor();
  Predictor(const Predictor&) = delete;
  Predictor& operator=(const Predictor&) = delete;

  models::HRNet& model() { return model_; }
  // What each output index means: pose: the COCO keypoint names; cls: the class folders of the
  // config's training set when it has them, else "0", "1", ...; seg: the dataset's class names;
  // det: the category names by contiguous label (0: background).
  const std::vector<std::string>& class_names() const { return names_; }
  // seg: the dataset's names and colours (a label map's palette).
  data::SegClassTable seg_classes() const;
  const RunOptions& run() const { return run_; }

  // Every head output (HRNet::forward_all) for x [N,3,H,W] f32 on any device: tensors of their
  // own (not the graph's buffers) on run.device.
  std::vector<Tensor> forward(const Tensor& x);

  // pose: the people in `boxes` (x, y, w, h, box score; coordinates finite, within +-1e6
  // pixels), each cropped as the official test does, with the flip test and the official
  // decoding; no box: the whole image is one person's box. One result per box, in order.
  std::vector<PersonKeypoints> keypoints(const data::Image& img,
                                         std::vector<std::array<float, 5>> boxes);
  // cls: the k most probable classes (index, softmax probability), most probable first, of the
  // validation transform (Resize(size / 0.875) + CenterCrop).
  TopK classify(const data::EncodedImage& img, int k = 5);
  // seg: the class of every pixel (row-major, img.height x img.width) by the official test's
  // inference (tasks::seg_inference: resize to TEST.BASE_SIZE, sliding window, scales, flip).
  std::vector<int64_t> segment(const data::Image& img);
  // det: the objects (COCO [x, y, w, h] in image pixels, score, contiguous label), as the official
  // test's FCOS post-processing gives them.
  std::vector<DetBox> detect(const data::Image& img);

 private:
  // The outputs for x: the graph's buffers (valid until the next call) or eager tensors; the
  // predictions copy what they read to the host at once.
  std::vector<Tensor> outputs(const Tensor& x);

  models::HRNet& model_;
  RunOptions run_;
  std::unique_ptr<graph::InferenceRunner> graph_;
  std::vector<std::string> names_;
  std::string seg_dataset_ = "cityscapes";
  // pose
  data::PoseDatasetOptions pose_data_;
  EvalOptions pose_eval_;
  // seg
  bool seg_from_cfg_ = false;
  SegInferOptions seg_;
  // det
  std::unique_ptr<DetSettings> det_;
  std::unique_ptr<Detector> detector_;
};

// The largest box coordinate hrnet-infer and the Python package take (pixels).
constexpr float kMaxBoxCoord = 1e6f;

}  // namespace hr::tasks
