// Top-down pose estimation as the official HRNet tools do it: the experiment's pose settings, the
// datasets it names, evaluation (crops of GT or detected boxes, flip test, decoding, rescoring,
// OKS-NMS, COCO keypoint AP), a picture of predictions, and PoseTask, the task the trainer and
// the programs run (tasks/task.h). Research code can call any piece directly.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/coco.h"
#include "data/coco_eval.h"
#include "data/pose.h"
#include "tasks/task.h"

namespace hr::tasks {

// The pose-specific settings of an experiment, from the official config keys.
struct PoseSettings {
  std::string root;                 // DATASET.ROOT
  std::string train_set, test_set;  // DATASET.TRAIN_SET / TEST_SET
  data::TargetParams target;        // MODEL.IMAGE_SIZE / HEATMAP_SIZE / SIGMA
  data::AugmentParams aug;          // DATASET.* augmentation
  int64_t test_batch = 32;          // TEST.BATCH_SIZE_PER_GPU
  bool flip_test = true, post_process = true, shift_heatmap = true, use_gt_bbox = true;
  std::string bbox_file;
  float image_thre = 0.0f, in_vis_thre = 0.2f, oks_thre = 0.9f;
  std::string model_file;      // TEST.MODEL_FILE
  bool skip_corrupt = true;    // ENGINE.SKIP_CORRUPT
  int64_t max_val_images = 0;  // ENGINE.MAX_VAL_IMAGES (0: all)

  static PoseSettings from_config(const models::Config& cfg);
  std::string annotation_file(const std::string& set) const;  // ROOT/annotations/person_keypoints_SET.json
  std::string image_dir(const std::string& set) const;        // ROOT/images/SET
};

// The datasets an experiment names. Throws naming the file when annotations or images are absent.
struct PoseData {
  data::CocoKeypoints coco;
  std::vector<data::PoseRecord> records;
  std::string image_dir;
};
PoseData load_train_data(const PoseSettings& s);
// GT boxes (TEST.USE_GT_BBOX) or the detection file (TEST.COCO_BBOX_FILE, IMAGE_THRE).
PoseData load_eval_data(const PoseSettings& s);
data::PoseDatasetOptions train_dataset_options(const PoseSettings& s);
data::PoseDatasetOptions eval_dataset_options(const PoseSettings& s);

struct EvalOptions {
  bool flip_test = true, shift_heatmap = true;
  float in_vis_thre = 0.2f, oks_thre = 0.9f;
  int64_t batch = 32;
  RunOptions run;
};
EvalOptions eval_options(const PoseSettings& s, const RunOptions& run);

// Host heatmaps [n,J,h,w] (f32) of crops [n,3,H,W] on the host.
using HeatmapForward = std::function<Tensor(const Tensor& x)>;
// One batch of crops (`input` made from `recs` with data::make_sample, in order): the heatmaps,
// with the flip test when o.flip_test, decoded into one prediction per record, in image pixels.
std::vector<data::PersonPrediction> predict_crops(const HeatmapForward& heatmaps,
                                                  const Tensor& input,
                                                  const std::vector<const data::PoseRecord*>& recs,
                                                  const data::TargetParams& tp,
                                                  const EvalOptions& o);
// Runs the model (eval mode, no grad) over every record: one prediction per person, in image
// pixels, with the heatmap maxima as joint scores.
std::vector<data::PersonPrediction> predict(models::HRNet& model, const data::PoseDataset& ds,
                                            const EvalOptions& o, int* skipped = nullptr);

struct EvalResult {
  data::KeypointMetrics metrics;
  std::vector<data::KeypointResult> results;  // after rescoring and OKS-NMS
  int64_t people = 0;
  int skipped = 0;
  double seconds = 0;
};
EvalResult evaluate(models::HRNet& model, const PoseData& val, const data::PoseDatasetOptions& dopt,
                    const EvalOptions& o);

// A picture of predictions: up to `max_images` images of `coco` with the results' skeletons
// drawn (score threshold `thr`), tiled into one PNG/JPEG (atomic write).
void save_prediction_grid(const data::CocoKeypoints& coco, const std::string& image_dir,
                          const std::vector<data::KeypointResult>& results, const std::string& path,
                          int max_images = 12, float thr = 0.2f);

// The pose task: COCO-layout keypoint data, JointsMSELoss with target weights, COCO keypoint AP
// (the best-model score); it writes results/keypoints_<TEST_SET>_results.json and
// predictions.png.
class PoseTask : public Task {
 public:
  explicit PoseTask(models::Config cfg);
  const char* name() const override { return "pose"; }
  const PoseSettings& pose() const { return pose_; }
  const data::Dataset& train_data() override;
  std::string describe_data() override;
  Tensor loss(const std::vector<Tensor>& outputs,
              const std::map<std::string, Tensor>& targets) const override;
  EvalSummary evaluate(models::HRNet& model, const RunOptions& run) override;
  bool splits_evaluation() const override { return true; }
  void save_outputs(const std::string& dir) override;
  // COCO keypoint results JSON against TEST_SET's annotations.
  std::string score_results(const std::string& path) override;
  const PoseData& val_data();
  const EvalResult& last_eval() const { return last_; }

 private:
  PoseSettings pose_;
  std::unique_ptr<PoseData> train_, val_;
  std::unique_ptr<data::PoseDataset> train_ds_;
  EvalResult last_;
};

}  // namespace hr::tasks
