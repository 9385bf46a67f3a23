// Image classification as HRNet-Image-Classification trains and validates it: ImageNet folders
// (DATASET.ROOT/TRAIN_SET and TEST_SET, or list files), RandomResizedCrop + flip for training,
// Resize(size/0.875) + CenterCrop for validation, cross-entropy (label smoothing as an option),
// top-1 / top-5 accuracy (top-1 is the best-model score), and ClsTask, the task the trainer and
// the programs run (tasks/task.h).
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "data/classification.h"
#include "tasks/task.h"

namespace hr::tasks {

struct ClsSettings {
  std::string root, train_set = "train", test_set = "val";  // DATASET.*
  std::string train_list, test_list;  // DATASET.TRAIN_LIST / TEST_LIST: list files instead
  int size = 224;                     // MODEL.IMAGE_SIZE[0]
  int64_t test_batch = 32;            // TEST.BATCH_SIZE_PER_GPU
  float label_smoothing = 0.f;        // ENGINE.LABEL_SMOOTHING
  bool fast_decode = true;            // ENGINE.FAST_DECODE (training only)
  double crop_scale_min = 0.08;       // ENGINE.CROP_SCALE_MIN (RandomResizedCrop, official 0.08)
  bool skip_corrupt = true;           // ENGINE.SKIP_CORRUPT
  int64_t max_val_images = 0;         // ENGINE.MAX_VAL_IMAGES (0: all)

  static ClsSettings from_config(const models::Config& cfg);
  data::ImageSet train_images() const;
  data::ImageSet val_images() const;
};

// One image's classes: (class index, probability) by decreasing probability, at most k.
using TopK = std::vector<std::pair<int64_t, float>>;
TopK top_classes(const float* logits, int64_t classes, int k);

struct ClsEval {
  double top1 = 0, top5 = 0, loss = 0;  // fractions; mean cross-entropy
  int64_t images = 0;
  int skipped = 0;
  double seconds = 0;
  std::vector<double> per_class;  // accuracy per class (NaN for a class with no image)
  std::vector<TopK> predictions;  // per evaluated image, in dataset order (skipped: empty)
};
// The model (eval mode, no grad) on every image of `val` with the evaluation transform.
ClsEval evaluate_classifier(models::HRNet& model, const data::ClassificationDataset& val,
                            int64_t batch, const RunOptions& run);

class ClsTask : public Task {
 public:
  explicit ClsTask(models::Config cfg);
  const char* name() const override { return "classification"; }
  const data::Dataset& train_data() override;
  std::string describe_data() override;
  Tensor loss(const std::vector<Tensor>& outputs,
              const std::map<std::string, Tensor>& targets) const override;
  EvalSummary evaluate(models::HRNet& model, const RunOptions& run) override;
  bool splits_evaluation() const override { return true; }
  // results/predictions_<TEST_SET>.json (top-5 per image, per-class accuracy) and
  // predictions.png (validation images framed green when right, red when wrong).
  void save_outputs(const std::string& dir) override;
  const ClsSettings& cls() const { return cls_; }
  const data::ClassificationDataset& val_data();

 private:
  ClsSettings cls_;
  std::unique_ptr<data::ClassificationDataset> train_, val_;
  ClsEval last_;
};

}  // namespace hr::tasks
