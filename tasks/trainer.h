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
// against the other fields, backward, the optimizer's step. Eager, or (graph) through a static
// graph compiled on first use for each batch shape (fused batch norm, planned memory, the
// branches on their own streams on CUDA), the optimizer reading the gradients from the graph's
// buffers; on CUDA the optimizer is made capturable and, after one eager step per batch shape,
// each step replays as one CUDA graph. The two agree up to float rounding.
// The losses are kept until take_losses() reads them: on CUDA with the graph as a running sum on
// the device, added to by the graph itself, so that steps are queued without the host waiting
// for the GPU (the batch is uploaded asynchronously from pinned memory, Executable::set_input);
// otherwise on the host (exact: the same double sum).
class TrainStep {
 public:
  TrainStep(const Task& task, models::HRNet& model, Optimizer& opt, Device dev, DType autocast,
            bool graph);
  ~TrainStep();
  // One step; on CUDA with the graph it may still be running on return.
  void step(const data::Batch& batch);
  struct Losses {
    float last = 0;       // the loss of the last step
    double sum = 0;       // the sum over the steps of loss x batch size (double)
    int64_t samples = 0;  // the sum of their batch sizes
    int64_t steps = 0;    // how many (0: none, the other fields are 0)
  };
  // The losses of the steps since the last call, and resets them. On CUDA with the graph this
  // waits for those steps (one synchronisation), so call it every few steps, not every step.
  Losses take_losses();
  // step(), then that step's loss (take_losses(): synchronises every step).
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
  Losses host_losses_;    // the steps not yet taken whose losses the host read (CPU, eager)
  Tensor device_sum_;     // CUDA graph: loss_accumulate's {sum, last} (raw storage for two
                          // doubles); declared before graphs_, so it outlives them
  Losses device_counts_;  // the steps added to device_sum_ since it was last taken (counts)
  std::map<Shape, std::unique_ptr<graph::Executable>> graphs_;
  graph::Executable* last_ = nullptr;
  void add_host_loss(float loss, int64_t samples);
  void add_device_loss(const graph::Executable& e, int64_t samples);  // enqueues, capturable
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
