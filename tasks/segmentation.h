// Semantic segmentation as HRNet-Semantic-Segmentation trains and tests it: the official .lst
// files (Cityscapes layout), gen_sample's random scale + crop + flip, the cross-entropy with the
// official class weights or OHEM on logits upsampled to the label size (each output of the model
// weighted by LOSS.BALANCE_WEIGHTS: the OCR head's auxiliary and final outputs), mIoU from a
// confusion matrix with per-class IoU and pixel accuracy, and inference as the official
// multi_scale_inference (scales, flip, sliding windows). SegTask is the task the trainer and the
// programs run (tasks/task.h).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/segmentation.h"
#include "tasks/task.h"

namespace hr::tasks {

struct SegSettings {
  std::string dataset = "cityscapes";  // DATASET.DATASET
  std::string root, train_set, test_set;
  int64_t num_classes = 19;     // DATASET.NUM_CLASSES
  int64_t ignore_label = -1;    // TRAIN.IGNORE_LABEL (the official default; Cityscapes sets 255)
  bool align_corners = true;    // MODEL.ALIGN_CORNERS
  int64_t num_outputs = 1;      // MODEL.NUM_OUTPUTS (OCR: 2, auxiliary first)
  int64_t output_index = -1;    // TEST.OUTPUT_INDEX: the output inference uses
  data::SegOptions train_data;  // TRAIN.* crop, scale, flip
  // TEST.*
  int test_h = 1024, test_w = 2048;  // TEST.IMAGE_SIZE [W, H]: the sliding window
  int test_base_size = 2048;
  bool flip_test = false, multi_scale_test = false;
  std::vector<double> scale_list{1.0};
  int64_t test_num_samples = 0;  // TEST.NUM_SAMPLES (0: all)
  // LOSS.*
  bool ohem = false;
  double ohem_thres = 0.9;
  int64_t ohem_keep = 100000;
  std::vector<double> balance_weights{1.0};
  std::vector<float> class_weights;  // the dataset's official weights (Cityscapes), else none

  static SegSettings from_config(const models::Config& cfg);
  data::SegOptions val_data() const;  // no augmentation, label mapping as training
};

// The confusion matrix of the official get_confusion_matrix: rows ground truth, columns
// prediction, pixels labelled ignore left out.
class ConfusionMatrix {
 public:
  explicit ConfusionMatrix(int64_t classes);
  // label and pred [n]; a label outside [0, classes) other than `ignore` is an error.
  void add(const int64_t* label, const int64_t* pred, int64_t n, int64_t ignore);
  void add(const ConfusionMatrix& o);
  // A data-parallel job's evaluation: every rank's counts summed (every rank then holds them).
  void sum_over_ranks();
  int64_t classes() const { return c_; }
  double at(int64_t label, int64_t pred) const { return m_[static_cast<size_t>(label * c_ + pred)]; }
  // tp / max(1, gt + pred - tp) per class (0 for a class absent from both, as the official);
  // its mean over all classes is the official mIoU.
  std::vector<double> iou() const;
  double mean_iou() const;
  double pixel_accuracy() const;  // sum of the diagonal / all counted pixels
  double mean_accuracy() const;   // mean over classes present in the ground truth of tp / gt

 private:
  int64_t c_;
  std::vector<double> m_;
};

// The official multi_scale_inference on one image: for each scale the image is resized (long
// side base_size * scale, bilinear), run whole or by sliding windows of the crop size (overlapping
// scores averaged), optionally with its mirror image, scores exp(logits) upsampled to the image
// size and summed over scales. Two window rules, as the official datasets have them:
// cityscapes (stride = crop, windows shifted back to end at the border, whole image for
// scale <= 1) and the base dataset's (stride 2/3 of the crop, border windows padded with the
// normalised black, whole image padded to the crop when it fits in one).
struct SegInferOptions {
  std::vector<double> scales{1.0};
  bool flip = false;
  int base_size = 2048;
  int crop_h = 1024, crop_w = 2048;
  bool align_corners = false;
  bool cityscapes_windows = true;
  int64_t classes = 19;
};
// logits of the model for x [1,3,h,w] (host f32): a new host tensor [1,C,h',w'] (the caller
// writes into it).
using SegForward = std::function<Tensor(const Tensor& x)>;
// image [1,3,H,W] f32 on the host (normalised) -> scores [1,C,H,W] on the host.
Tensor seg_inference(const SegForward& forward, const Tensor& image, const SegInferOptions& o);
SegInferOptions infer_options(const SegSettings& s, bool test_augmentation);
// Per-pixel argmax over classes of scores [1,C,H,W] (first maximum wins, as numpy's argmax).
std::vector<int64_t> seg_argmax(const Tensor& scores);

struct SegEval {
  ConfusionMatrix cm{1};
  int64_t images = 0;
  int skipped = 0;
  double seconds = 0;
  // a few predictions kept for the picture: image index and predicted train ids
  std::vector<std::pair<size_t, std::vector<int64_t>>> shown;
};

class SegTask : public Task {
 public:
  explicit SegTask(models::Config cfg);
  const char* name() const override { return "segmentation"; }
  const data::Dataset& train_data() override;
  std::string describe_data() override;
  Tensor loss(const std::vector<Tensor>& outputs,
              const std::map<std::string, Tensor>& targets) const override;
  EvalSummary evaluate(models::HRNet& model, const RunOptions& run) override;
  bool splits_evaluation() const override { return true; }
  // results/seg_<split>.json (mIoU, pixel accuracy, per-class IoU, the confusion matrix) and
  // predictions.png (image | ground truth | prediction for a few validation images).
  void save_outputs(const std::string& dir) override;
  const SegSettings& seg() const { return seg_; }
  const data::SegmentationDataset& val_data();

 private:
  SegSettings seg_;
  std::unique_ptr<data::SegmentationDataset> train_, val_;
  SegEval last_;
  mutable Tensor weights_cpu_, weights_cuda_;
};

}  // namespace hr::tasks
