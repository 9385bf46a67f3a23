// Top-down pose estimation as the official HRNet tools do it, as a library: the experiment's
// settings read from its config, the datasets it names, one training epoch, and evaluation
// (crops of GT or detected boxes, flip test, decoding, rescoring, OKS-NMS, COCO keypoint AP).
// hrnet-train, hrnet-eval and hrnet-infer are thin programs over this; research code can call
// it directly.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/coco.h"
#include "data/coco_eval.h"
#include "data/loader.h"
#include "engine/optim.h"
#include "models/config.h"
#include "models/hrnet.h"

namespace hr::tasks {

// Settings of a pose experiment, from the official config keys (and the engine's own ENGINE.*
// section, which official files do not have and so keep at their defaults).
struct PoseSettings {
  std::string root;                 // DATASET.ROOT
  std::string train_set, test_set;  // DATASET.TRAIN_SET / TEST_SET
  data::TargetParams target;        // MODEL.IMAGE_SIZE / HEATMAP_SIZE / SIGMA
  data::AugmentParams aug;          // DATASET.* augmentation
  int64_t train_batch = 32, test_batch = 32;
  int workers = 0;
  // training
  std::string optimizer = "adam";
  double lr = 1e-3, lr_factor = 0.1, momentum = 0.9, wd = 1e-4;
  bool nesterov = false;
  std::vector<int64_t> lr_step;
  int64_t begin_epoch = 0, end_epoch = 140;
  bool shuffle = true;
  // test
  bool flip_test = true, post_process = true, shift_heatmap = true, use_gt_bbox = true;
  std::string bbox_file;
  float image_thre = 0.0f, in_vis_thre = 0.2f, oks_thre = 0.9f;
  std::string model_file;  // TEST.MODEL_FILE
  std::string pretrained;  // MODEL.PRETRAINED (used when MODEL.INIT_WEIGHTS)
  bool init_weights = true;
  std::string output_dir;  // OUTPUT_DIR
  // the engine's own ENGINE.* section (models/config.cpp)
  std::string device = "cpu";      // cpu | cuda
  std::string precision = "fp32";  // fp32 | bf16 | fp16 (CUDA)
  uint64_t seed = 0;
  bool skip_corrupt = true;
  int64_t eval_every = 1;      // evaluate every N epochs (and after the last)
  int64_t max_val_images = 0;  // 0: all
  int threads = 0;             // 0: all cores
  bool graph = true;           // training step and evaluation through compiled static graphs
  std::string lr_schedule = "multistep";  // multistep (TRAIN.LR_STEP, official) | cosine

  static PoseSettings from_config(const models::Config& cfg);
  std::string annotation_file(
      const std::string& set) const;  // ROOT/annotations/person_keypoints_SET.json
  std::string image_dir(const std::string& set) const;  // ROOT/images/SET
  Device engine_device() const;
  DType autocast() const;  // f32 when off
};

// Where the official tools put an experiment's outputs:
// OUTPUT_DIR/DATASET.DATASET/MODEL.NAME/<config file name without extension> ("output" when
// OUTPUT_DIR is empty).
std::string experiment_output_dir(const models::Config& cfg, const std::string& cfg_path);
// Creates DIR and DIR/results; throws naming DIR when it cannot (before any work is done).
void make_output_dir(const std::string& dir);

// Loads an experiment file (pose defaults, which include the ENGINE.* section), then applies
// yacs-style KEY VALUE overrides.
models::Config load_pose_config(const std::string& path, const std::vector<std::string>& overrides);

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

// One optimisation step on a batch: forward (autocast as set), JointsMSELoss with target
// weights, backward, optimizer step. Returns the loss.
float train_step(models::HRNet& model, Optimizer& opt, const data::Batch& batch, Device dev,
                 DType autocast);

// The same step through a static graph (engine/graph.h), compiled on first use for each batch
// shape: fused batch norm, planned memory, the branches on their own streams on CUDA. The
// optimizer reads the gradients from the graph's buffers. On CUDA the optimizer is made
// capturable and, after one eager step per batch shape, each step replays as one CUDA graph. Equal to train_step up to float
// rounding (gradient sums in another order); what hrnet-train uses unless ENGINE.GRAPH is off.
class GraphTrainStep {
 public:
  GraphTrainStep(models::HRNet& model, Optimizer& opt, Device dev, DType autocast);
  ~GraphTrainStep();
  float operator()(const data::Batch& batch);
  // The graph of the last batch shape (nullptr before the first step).
  const graph::Executable* executable() const { return last_; }

 private:
  models::HRNet& model_;
  Optimizer& opt_;
  Device dev_;
  DType autocast_;
  std::map<Shape, std::unique_ptr<graph::Executable>> graphs_;
  graph::Executable* last_ = nullptr;
};

// What a resumable training checkpoint carries besides weights and optimizer state.
struct TrainState {
  int64_t epoch = 0;    // epochs completed: training resumes at this epoch
  double best_ap = -1;  // best validation AP so far (-1: none yet)
  int64_t global_step = 0;
};
// Writes OUT atomically as safetensors: "model.<key>" weights and buffers, "optimizer.<slot>"
// state, and the TrainState, the seed and the config text as metadata.
void save_training_checkpoint(const std::string& path, const models::HRNet& model,
                              const Optimizer& opt, const TrainState& st, uint64_t seed,
                              const std::string& config_text);
// Restores weights, optimizer state and TrainState (strict: every key must be there and fit).
// Throws naming the file if it is not such a checkpoint or was made with another seed.
TrainState load_training_checkpoint(const std::string& path, models::HRNet& model, Optimizer& opt,
                                    uint64_t seed);

struct EvalOptions {
  bool flip_test = true, shift_heatmap = true;
  float in_vis_thre = 0.2f, oks_thre = 0.9f;
  int64_t batch = 32;
  int workers = 0;
  Device device = Device::cpu();
  DType autocast = DType::f32;
  bool graph = true;  // the compiled inference graph (ENGINE.GRAPH), else the eager forward
  bool progress = true;
};
EvalOptions eval_options(const PoseSettings& s);

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

}  // namespace hr::tasks
