// The trainer every task plugs into (tasks/task.h): the epoch loop over a DataLoader of the
// task's dataset; the optimizer and the learning-rate schedule the config names; the training
// step eager or as a compiled static graph (replayed as one CUDA graph on a GPU); evaluation
// every ENGINE.EVAL_EVERY epochs with the best-model rule; resumable checkpoints every epoch
// (exact resume); metrics as JSON lines; a progress bar with rate and ETA.
//
// Output directory: checkpoint.safetensors (every epoch, atomic; --resume or AUTO_RESUME),
// model_best.safetensors (best score), final_state.safetensors, metrics.jsonl, config.yaml (the
// merged config), and what the task writes (results/, a picture of predictions).
#pragma once
#include <map>
#include <memory>
#include <string>

#include "engine/graph.h"
#include "engine/optim.h"
#include "tasks/task.h"

namespace hr::tasks {

// The optimizer the config names (TRAIN.OPTIMIZER adam | sgd, as the official tools build them:
// the official Adam takes no weight decay).
std::unique_ptr<Optimizer> make_optimizer(const TrainSettings& s, std::vector<Tensor> params);

// What a resumable training checkpoint carries besides weights and optimizer state.
struct TrainState {
  int64_t epoch = 0;         // epochs completed: training resumes at this epoch
  double best_score = -1;    // best validation score so far (-1: none yet)
  int64_t global_step = 0;
};
// Writes PATH atomically as safetensors: "model.<key>" weights and buffers, "optimizer.<slot>"
// state, and the TrainState, the seed and the config text as metadata.
void save_training_checkpoint(const std::string& path, const models::HRNet& model,
                              const Optimizer& opt, const TrainState& st, uint64_t seed,
                              const std::string& config_text);
// Restores weights, optimizer state and TrainState (strict: every key must be there and fit).
// Throws naming the file if it is not such a checkpoint or was made with another seed.
TrainState load_training_checkpoint(const std::string& path, models::HRNet& model, Optimizer& opt,
                                    uint64_t seed);

// One optimisation step on a batch: the model's forward on the "input" field, the task's loss
// against the other fields, backward, the optimizer's step; returns the loss. Eager, or (graph)
// through a static graph compiled on first use for each batch shape (fused batch norm, planned
// memory, the branches on their own streams on CUDA), the optimizer reading the gradients from
// the graph's buffers; on CUDA the optimizer is made capturable and, after one eager step per
// batch shape, each step replays as one CUDA graph. The two agree up to float rounding.
class TrainStep {
 public:
  TrainStep(const Task& task, models::HRNet& model, Optimizer& opt, Device dev, DType autocast,
            bool graph);
  ~TrainStep();
  float operator()(const data::Batch& batch);
  // The graph of the last batch shape (nullptr before the first step or when eager).
  const graph::Executable* executable() const { return last_; }

 private:
  const Task& task_;
  models::HRNet& model_;
  Optimizer& opt_;
  Device dev_;
  DType autocast_;
  bool graph_;
  std::map<Shape, std::unique_ptr<graph::Executable>> graphs_;
  graph::Executable* last_ = nullptr;
};

class Trainer {
 public:
  // resume: 1 resumes from out_dir/checkpoint.safetensors (an error when there is none), 0 never,
  // -1 as AUTO_RESUME says.
  Trainer(Task& task, std::string out_dir, int resume = -1);
  // Trains from the config's TRAIN.BEGIN_EPOCH (or the checkpoint) to TRAIN.END_EPOCH; returns
  // the last evaluation.
  EvalSummary run();

 private:
  Task& task_;
  std::string out_;
  int resume_;
};

}  // namespace hr::tasks
