// Object detection as HRNet-FCOS trains and tests it (a maskrcnn-benchmark fork): the datasets
// its configs name (DATASETS.TRAIN / TEST, found under DATASET.ROOT in paths_catalog.py's
// layout), the official transforms and FCOS targets (data/detection.h), the FCOS loss
// (models::fcos_loss), inference as FCOSPostProcessor (data::fcos_postprocess) with the boxes
// mapped back to the original image as coco_eval.py prepare_for_coco_detection does, and COCO
// box AP (data::evaluate_boxes). DetTask is the task the trainer and the programs run.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "data/boxes.h"
#include "data/detection.h"
#include "tasks/task.h"

namespace hr::graph {
class InferenceRunner;
}

namespace hr::tasks {

// A dataset name of paths_catalog.py (coco_2017_train, coco_2014_minival, ...) as the folders
// under DATASET.ROOT (the COCO folder itself: ROOT/train2017, ROOT/annotations/...).
struct DetSplit {
  std::string name, image_dir, annotation_file;
};
// Throws naming the config and the known names when `name` is not one of them.
DetSplit det_split(const std::string& root, const std::string& name, const std::string& source);

struct DetSettings {
  std::string root;                     // DATASET.ROOT
  std::vector<DetSplit> train, test;    // DATASETS.TRAIN, DATASETS.TEST
  data::DetTransformOptions train_transform, test_transform;  // INPUT.*, SIZE_DIVISIBILITY
  // The fixed input of every training batch ([H, W], ENGINE.DET_CANVAS [W, H]; by default the
  // largest image the training resize can make in either orientation, square, padded to the
  // size divisibility).
  int canvas_h = 0, canvas_w = 0;
  std::vector<std::array<double, 2>> target_assign;  // MODEL.FCOS.TARGET_ASSIGN, per level
  float gamma = 2.f, alpha = 0.25f;                  // MODEL.FCOS.LOSS_GAMMA / LOSS_ALPHA
  data::FcosPostprocessOptions postprocess;          // MODEL.FCOS.INFERENCE_TH ..., TEST.*
  bool skip_corrupt = true;

  static DetSettings from_config(const models::Config& cfg);
  // The FCOS levels of an input of h x w for the config's model.
  std::vector<data::FcosLevel> levels(const models::ModelSpec& spec, int64_t h, int64_t w) const;
};

// One detection in an image's own pixels: COCO's [x, y, w, h] (coco_eval.py
// prepare_for_coco_detection: the box of the resized image resized back, then xywh with +1).
struct DetBox {
  std::array<float, 4> xywh{};
  float score = 0;
  int64_t label = 0;  // contiguous, 1 .. NUM_CLASSES - 1
};

// HRNet-FCOS inference on whole images, as the official test runs it: the test transform
// (MIN_SIZE_TEST / MAX_SIZE_TEST, padding to the size divisibility), the model in eval mode (the
// compiled inference graph per input shape when run.graph, else eager; on run.device),
// FCOSPostProcessor, the boxes mapped back to the image.
class Detector {
 public:
  Detector(models::HRNet& model, const DetSettings& settings, const RunOptions& run);
  ~Detector();
  std::vector<DetBox> operator()(const data::Image& rgb);

 private:
  models::HRNet& model_;
  const DetSettings& det_;
  RunOptions run_;
  std::unique_ptr<graph::InferenceRunner> graph_;
};

class DetTask : public Task {
 public:
  explicit DetTask(models::Config cfg);
  const char* name() const override { return "detection"; }
  // MODEL.WEIGHT, as maskrcnn-benchmark initialises from it: an ImageNet classifier's
  // checkpoint gives the backbone, an HRNet-FCOS checkpoint every layer.
  std::string load_pretrained(models::HRNet& model) const override;
  const data::Dataset& train_data() override;
  std::string describe_data() override;
  Tensor loss(const std::vector<Tensor>& outputs,
              const std::map<std::string, Tensor>& targets) const override;
  // Box AP on DATASETS.TEST[0] (the 12 COCOeval numbers; score AP).
  EvalSummary evaluate(models::HRNet& model, const RunOptions& run) override;
  bool splits_evaluation() const override { return true; }
  // results/bbox_<test set>_results.json (COCO results) and results/bbox_<test set>.txt (the
  // summary).
  void save_outputs(const std::string& dir) override;
  // A COCO box results file scored against DATASETS.TEST[0]'s annotations.
  std::string score_results(const std::string& path) override;

  const DetSettings& det() const { return det_; }
  // The categories of the test annotations (contiguous label -> COCO id and name).
  const data::CocoInstances& test_annotations();

 private:
  DetSettings det_;
  std::unique_ptr<data::DetDataset> train_;
  std::unique_ptr<data::CocoInstances> test_gt_;
  std::vector<data::BoxResult> last_results_;
  std::string last_table_;
};

// The category of each contiguous label (index 0: the background, unused): the categories of
// DATASETS.TEST[0]'s annotation file in the file's order when the file is there (how the
// official COCODataset numbers them: pycocotools' getCatIds()), else "class <k>" with id k.
std::vector<data::CocoCategory> det_label_categories(const DetSettings& s, int64_t num_classes);

// FCOS inference on one prepared image (data::det_test_input): the model's outputs -> the
// detections of the resized image, as FCOSPostProcessor.
std::vector<data::Detection> detect(const std::vector<Tensor>& outputs,
                                    const models::ModelSpec& spec, int64_t image_h,
                                    int64_t image_w, const data::FcosPostprocessOptions& o);

}  // namespace hr::tasks
