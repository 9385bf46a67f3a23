// What a task is to the trainer and the programs: the data, the model, the loss, the evaluation
// and what it writes. One Task subclass per HRNet task (tasks/pose.h is the first); the trainer
// (tasks/trainer.h) owns everything else: the epoch loop, the optimizer and schedules from the
// config, exact resume, checkpoints, metrics, progress, the best-model rule.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <cstring>
#include <type_traits>

#include "data/dataset.h"
#include "engine/dist.h"
#include "engine/tensor.h"
#include "models/config.h"
#include "models/hrnet.h"

namespace hr::tasks {

// What every experiment config says about training and the engine, whatever the task: the
// official TRAIN.* / WORKERS / OUTPUT_DIR / PRINT_FREQ / AUTO_RESUME keys and the engine's own
// ENGINE.* section (official files have none: its defaults then apply).
struct TrainSettings {
  // TRAIN.*
  std::string optimizer = "adam";  // adam | sgd
  double lr = 1e-3, lr_factor = 0.1, momentum = 0.9, wd = 1e-4;
  bool nesterov = false;
  std::vector<int64_t> lr_step;
  int64_t begin_epoch = 0, end_epoch = 140;
  // The batch of one step: TRAIN.BATCH_SIZE_PER_GPU x the number of GPUS, the batch the official
  // recipe means (its DataParallel/distributed runs average the gradient over all of it; our one
  // device takes the whole batch, so batch norm sees it all, as the official SyncBN runs do).
  int64_t batch = 32;
  int64_t batch_per_gpu = 32, gpus = 1;  // TRAIN.BATCH_SIZE_PER_GPU, len(GPUS)
  // ENGINE.ACCUMULATE_STEPS: the batch as that many micro-batches with their gradients summed
  // (one device standing in for several when the whole batch does not fit; TrainStep)
  int accumulate = 1;
  // Data-parallel jobs (engine/dist.h; the batch above is the whole job's, split over the ranks):
  // ENGINE.SYNC_BN (synchronised batch norm; the family's official choice by default: seg True,
  // det MODEL.SYNCBN, pose and cls False), ENGINE.DIST_TIMEOUT (seconds any collective may wait),
  // ENGINE.DIST_EVAL_TIMEOUT (seconds the other ranks wait while rank 0 evaluates).
  bool sync_bn = false;
  double dist_timeout = 600, dist_eval_timeout = 14400;
  bool shuffle = true;
  int workers = 0;     // WORKERS
  std::string output_dir;  // OUTPUT_DIR
  int64_t print_freq = 100;
  bool auto_resume = false;
  // ENGINE.*
  std::string device = "cpu";      // cpu | cuda
  // fp32 | bf16 (CUDA: autocast; CPU: fp32 tensors, bf16 products in the convolutions, on
  // processors with AVX512_BF16: cpu::set_cpu_precision) | fp16 (CUDA) | auto (bf16 where the
  // device multiplies bf16 natively: every GPU the CUDA build targets, processors with
  // AVX512_BF16 and the avx512 kernels; fp32 elsewhere). effective_precision() resolves it.
  std::string precision = "fp32";
  uint64_t seed = 0;
  bool skip_corrupt = true;
  int64_t eval_every = 1;  // evaluate every N epochs (and after the last)
  int threads = 0;         // 0: all cores
  bool graph = true;       // training step and evaluation through compiled static graphs
  // multistep (TRAIN.LR_STEP: the official pose and cls schedule) | poly (the official seg
  // schedule, the default for seg files) | cosine | warmup_multistep (maskrcnn-benchmark's
  // WarmupMultiStepLR, the det files' schedule: lr_step in iterations)
  std::string lr_schedule = "multistep";
  // The det files' SOLVER.* (maskrcnn-benchmark): a run of max_iter steps (> 0: end_epoch is
  // then the epochs that take, the last one cut short), biases (every parameter whose name holds
  // "bias") at lr * bias_lr_factor with weight decay wd_bias, and the warm-up of
  // WarmupMultiStepLR (constant: warmup_factor; linear: from warmup_factor to 1).
  int64_t max_iter = 0;
  double bias_lr_factor = 1, wd_bias = -1;  // wd_bias < 0: wd
  double warmup_factor = 1.0 / 3;
  int64_t warmup_iters = 0;
  std::string warmup_method = "linear";

  static TrainSettings from_config(const models::Config& cfg);
  // The learning rate of global step t (0-based; iters steps per epoch) under lr_schedule.
  // poly: the official seg trainer sets base * (1 - t/T)^0.9 after step t with
  // T = END_EPOCH * iters, so step t runs with the value set after step t-1.
  // warmup_multistep: maskrcnn-benchmark's trainer steps the scheduler before each iteration,
  // so step t runs with WarmupMultiStepLR's value at last_epoch = t + 1.
  double lr_at(int64_t t, int64_t iters_per_epoch) const;
  Device engine_device() const;
  DType autocast() const;  // f32 when off
  std::string effective_precision() const;  // fp32, bf16 or fp16: `precision` with auto resolved
  // The process-wide engine settings of a run: the OpenMP threads (ENGINE.THREADS) and, on the
  // CPU, the convolutions' products (ENGINE.PRECISION; an error where bf16 is not supported or
  // fp16 is asked for).
  void apply_process_settings() const;
};

// How evaluation and inference run (from TrainSettings, or set by a program).
struct RunOptions {
  Device device = Device::cpu();
  DType autocast = DType::f32;
  bool graph = true;  // the compiled inference graph, else the eager forward
  int workers = 1;
  bool progress = true;
  // The test-time augmentation of the config (seg: TEST.FLIP_TEST, MULTI_SCALE), as the official
  // test tools use it; the official trainers' validation leaves it out (hrnet-eval sets it).
  bool test_augmentation = false;
  // A data-parallel job's evaluation (Task::splits_evaluation): this rank runs part shard_rank
  // of shard_count of the validation split, and the parts are gathered (every rank then holds
  // the whole result).
  int shard_rank = 0, shard_count = 1;
  // The evaluation stops between batches when a stop was requested (Ctrl-C: request_stop,
  // tasks/trainer.h), throwing EvalStopped; the trainer sets it in a one-process run.
  bool stoppable = false;
};
RunOptions run_options(const TrainSettings& s);

// What an evaluation with RunOptions::stoppable throws at a stop request.
struct EvalStopped : Error {
  using Error::Error;
};
// The evaluations' stop point (between batches): throws EvalStopped when run.stoppable and a stop
// was requested.
void stop_point(const RunOptions& run);

// This rank's contiguous part [begin, end) of n items (the parts in rank order, sizes as even as
// they come).
std::pair<size_t, size_t> shard_range(size_t n, const RunOptions& run);
// A count summed over the ranks that split an evaluation (a collective of the job's ranks; one
// part: `count`).
int64_t sum_shards(int64_t count, const RunOptions& run);
// Every rank's items, concatenated in rank order (a collective of the job's ranks; one part:
// `mine`). T is trivially copyable.
template <class T>
std::vector<T> gather_shards(const std::vector<T>& mine, const RunOptions& run) {
  static_assert(std::is_trivially_copyable<T>::value, "gather_shards: T must be trivially copyable");
  if (run.shard_count <= 1) return mine;
  const std::string bytes(reinterpret_cast<const char*>(mine.data()), mine.size() * sizeof(T));
  std::vector<T> all;
  for (const std::string& part : dist::all_gather(bytes, "the evaluation's gather")) {
    const size_t k = part.size() / sizeof(T);
    const size_t at = all.size();
    all.resize(at + k);
    std::memcpy(static_cast<void*>(all.data() + at), part.data(), k * sizeof(T));
  }
  return all;
}

// One evaluation: the best-model rule's score (higher is better), every metric for the log, and
// a table to print.
struct EvalSummary {
  std::string score_name;  // "AP", "mIoU", "top1"
  double score = 0;
  std::vector<std::pair<std::string, double>> metrics;
  std::string table;
  int64_t count = 0;  // evaluated samples (people, images)
  int skipped = 0;    // unreadable samples left out
  double seconds = 0;
};

class Task {
 public:
  virtual ~Task() = default;
  virtual const char* name() const = 0;  // "pose"
  const models::Config& config() const { return cfg_; }
  const TrainSettings& settings() const { return settings_; }

  // The model the config describes, with the official initialisation drawn from `seed`, checked
  // against the config's input size (an error says why it cannot take it).
  virtual std::shared_ptr<models::HRNet> make_model(uint64_t seed) const;
  // MODEL.PRETRAINED when the config asks for it (MODEL.INIT_WEIGHTS), by the official
  // PRETRAINED_LAYERS rule; returns a one-line report, empty when nothing was loaded.
  virtual std::string load_pretrained(models::HRNet& model) const;

  // The training split (loaded on first use; errors name the files) and a line describing it.
  virtual const data::Dataset& train_data() = 0;
  virtual std::string describe_data() = 0;
  // The training loss of the model's outputs against a batch's other fields, by name: eager
  // tensors, or inputs of a graph being recorded (the same code records the training graph).
  virtual Tensor loss(const std::vector<Tensor>& outputs,
                      const std::map<std::string, Tensor>& targets) const = 0;

  // Evaluates the model (eval mode) on the validation split.
  virtual EvalSummary evaluate(models::HRNet& model, const RunOptions& run) = 0;
  // Whether evaluate() runs its part of a data-parallel job's validation split (RunOptions'
  // shard) and gathers the rest (every rank calls it); otherwise rank 0 evaluates alone.
  virtual bool splits_evaluation() const { return false; }
  // Writes what the last evaluation produced (results files, a picture) under `dir`.
  virtual void save_outputs(const std::string& dir) = 0;
  // Scores a results file the task writes (hrnet-eval --results); returns the metrics table.
  // The default says the task has no such file.
  virtual std::string score_results(const std::string& path);

 protected:
  explicit Task(models::Config cfg);
  models::Config cfg_;
  TrainSettings settings_;
};

// The experiment file (and yacs-style KEY VALUE overrides) of any family.
models::Config load_config(const std::string& path, const std::vector<std::string>& overrides);
// The task of the config's family (MODEL.NAME: pose_*, seg_*, cls_*; fcos_hrnet, which the det
// files get by default); an error names the family when it has no task yet.
std::unique_ptr<Task> make_task(const models::Config& cfg);

// ENGINE.SYNTHETIC with an empty DATASET.ROOT: the family's built-in synthetic dataset (pose: hrnet-synth's COCO layout;
// classification: the shapes in ImageNet folders; seg: street scenes in the Cityscapes layout;
// det: five object categories in the COCO instances layout), generated once into the cache
// ($HRNET_SYNTH_DIR, else $XDG_CACHE_HOME/hrnet or ~/.cache/hrnet) and reused when complete;
// DATASET.ROOT is set to it. Returns the root, "" when the config does not ask for it.
std::string prepare_synthetic_data(models::Config& cfg);

// What hrnet-eval runs: the model of the task's config with `weights` (empty: TEST.MODEL_FILE,
// else MODEL.WEIGHT, else OUT/final_state.safetensors) on ENGINE.DEVICE, evaluated with the
// official test tools' test-time augmentation; what it produced written under `out`.
EvalSummary evaluate_experiment(Task& task, std::string weights, const std::string& out);

// Where the official tools put an experiment's outputs:
// OUTPUT_DIR/DATASET.DATASET/MODEL.NAME/<config file name without extension> ("output" when
// OUTPUT_DIR is empty).
std::string experiment_output_dir(const models::Config& cfg, const std::string& cfg_path);
// Creates DIR and DIR/results; throws naming DIR when it cannot (before any work is done).
void make_output_dir(const std::string& dir);

}  // namespace hr::tasks
