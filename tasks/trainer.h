// The trainer every task plugs into (tasks/task.h): the epoch loop over a DataLoader of the
// task's dataset; the optimizer and the learning-rate schedule the config names; the training
// step eager or as a compiled static graph (replayed as one CUDA graph on a GPU); evaluation
// every ENGINE.EVAL_EVERY epochs with the best-model rule; resumable checkpoints every epoch
// and where a run is stopped (exact resume, mid-epoch included); metrics as JSON lines; a
// progress bar with rate and ETA.
//
// Output directory: checkpoint.safetensors (every epoch, atomic; --resume or AUTO_RESUME),
// model_best.safetensors (best score), final_state.safetensors, metrics.jsonl, config.yaml (the
// merged config), train.lock (held while a run trains there: a second run is refused), and what
// the task writes (results/, a picture of predictions). A run starts by removing the temp files
// of atomic writes whose writer is gone (engine/file_util.h), and writes nothing until the
// run is known to go ahead (a refused --resume leaves the directory as it was).
#pragma once
#include <map>
#include <memory>
#include <string>

#include "engine/dist.h"
#include "engine/graph.h"
#include "engine/optim.h"
#include "tasks/task.h"

namespace hr::tasks {

// The optimizer the config names (TRAIN.OPTIMIZER adam | sgd, as the official tools build them:
// the official Adam takes no weight decay; det's SGD with maskrcnn-benchmark's bias group: the
// parameters whose name holds "bias" at lr * bias_lr_factor and weight decay wd_bias).
std::unique_ptr<Optimizer> make_optimizer(const TrainSettings& s, const NamedTensors& params);

// What a resumable training checkpoint carries besides weights and optimizer state.
struct TrainState {
  int64_t epoch = 0;         // epochs completed: training resumes at this epoch
  double best_score = -1;    // best validation score so far (-1: none yet)
  int64_t global_step = 0;
  // A run stopped mid-epoch (request_stop): the iterations of `epoch` done (0: at its start;
  // the epoch's iteration count: its steps are done, its epoch line, evaluation and checkpoint
  // not yet), and the epoch's sums so far, so that its epoch line is the uninterrupted run's.
  int64_t iter = 0;
  double epoch_loss_sum = 0;  // sum of loss x batch size over the steps done
  int64_t epoch_loss_samples = 0, epoch_samples = 0, epoch_skipped = 0;
  int64_t ranks = 1;  // the processes of the job that wrote it (data-parallel; 1 before)
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
// otherwise on the host (exact: the same double sum). A raw input (u8 bytes and a table:
// data::LoaderOptions::raw_input, the trainer's choice on CUDA) is normalised on the device.
class TrainStep {
 public:
  // accumulate > 1: each batch runs as that many micro-batches (split along the batch, sizes as
  // even as they come), their gradients summed weighted by size (the gradient of the whole
  // batch's mean loss when the loss is a mean over samples), then one optimizer step: a batch
  // larger than one device holds. Batch norm then sees each micro-batch alone (as unsynchronised
  // per-GPU batch norm would) and updates its running statistics once per micro-batch. On CUDA
  // such steps run uncaptured.
  TrainStep(const Task& task, models::HRNet& model, Optimizer& opt, Device dev, DType autocast,
            bool graph, int accumulate = 1);
  ~TrainStep();
  // A data-parallel job (engine/dist.h, more than one rank): each rank's batch is its part of the
  // job's batch; the gradients are averaged over the ranks before the optimizer's step (CPU: in
  // buckets, each reduced while the rest of the backward pass runs), so every rank takes the same
  // step (CUDA: NCCL, inside the captured step). sync_bn: training batch norms take their
  // statistics over all ranks (SyncBatchNorm; CPU). always: reduce even with one rank (tests of
  // the reduction path). Call before the first step.
  void set_data_parallel(bool sync_bn, bool always = false);
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
  int accumulate_;
  bool sync_bn_ = false;
  std::unique_ptr<dist::GradientReducer> reducer_;  // data-parallel jobs
  std::map<const void*, size_t> param_index_;      // parameter -> its index in the reducer
  void reduce_gradients();  // finishes the reducer (no-op alone)
  // CUDA graphs of a data-parallel job average their gradients inside (all_reduce_mean nodes on a
  // stream of their own), unless the batch runs as micro-batches (then once, after the last)
  bool graph_reduces() const;
  void step_accumulated(const data::Batch& batch);
  graph::Executable& executable_for(const data::Batch& batch);
  // The model's input from the batch's input x (on dev_, or a graph's value for it): a raw input
  // (u8, a loader with raw_input) normalised on the device with the batch's table (ops::
  // normalize_u8; the table's device copy kept here: graphs read it by handle; a sized raw
  // input's valid sizes are the target data::kInputSizeField), else x itself. One table per
  // TrainStep (its batches come from one loader): another one is an error.
  Tensor model_input(const data::Batch& batch, const Tensor& x,
                     const std::map<std::string, Tensor>& targets);
  Tensor input_lut_host_, input_lut_;  // the table, and its copy on dev_
  Losses host_losses_;    // the steps not yet taken whose losses the host read (CPU, eager)
  Tensor device_sum_;     // CUDA graph: loss_accumulate's {sum, last} (raw storage for two
                          // doubles); declared before graphs_, so it outlives them
  Losses device_counts_;  // the steps added to device_sum_ since it was last taken (counts)
  std::map<Shape, std::unique_ptr<graph::Executable>> graphs_;
  graph::Executable* last_ = nullptr;
  void add_host_loss(float loss, int64_t samples);
  void add_device_loss(const graph::Executable& e, int64_t samples);  // enqueues, capturable
};

// Stopping a run (Ctrl-C): request_stop() asks every running Trainer::run() to stop at the next
// step boundary; it then writes a checkpoint of the position reached (mid-epoch: the epoch and
// the iteration within it; the resumed run continues from that iteration with the same samples,
// augmentation and weights as an uninterrupted run) and throws Interrupted. Async-signal-safe.
// The request stays until clear_stop().
void request_stop(int signal);
int stop_requested();  // the signal passed to request_stop, 0 when none
void clear_stop();
// SIGINT and SIGTERM: the first calls request_stop(signal); a second ends the process at once
// (exit status 128 + signal) with "<program>: <signal> while stopping: exiting at once".
// `program` must outlive the handlers (a string literal).
void install_stop_handlers(const char* program);

// What run() throws when a stop was requested: the run stopped at a step boundary (before
// training: nothing done). what() says where and whether a checkpoint was written.
struct Interrupted : Error {
  Interrupted(const std::string& what, int signal, bool checkpoint)
      : Error(what), signal(signal), checkpoint(checkpoint) {}
  int signal;       // as request_stop was given it
  bool checkpoint;  // a checkpoint to resume from is in the output directory
};

class Trainer {
 public:
  // resume: 1 resumes from out_dir/checkpoint.safetensors (an error when there is none), 0 never,
  // -1 as AUTO_RESUME says.
  Trainer(Task& task, std::string out_dir, int resume = -1);
  // Trains from the config's TRAIN.BEGIN_EPOCH (or the checkpoint) to TRAIN.END_EPOCH; returns
  // the last evaluation. Throws Interrupted when a stop was requested (request_stop), Error
  // naming the directory when another process trains in it, and Error naming the file when a
  // write fails (metrics.jsonl included: never a cut line).
  EvalSummary run();

 private:
  Task& task_;
  std::string out_;
  int resume_;
};

}  // namespace hr::tasks
