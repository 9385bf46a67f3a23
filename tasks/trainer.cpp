// The trainer: the epoch loop every task shares.
#include "tasks/trainer.h"

#include <omp.h>
#include <signal.h>
#include <strings.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <thread>

#include "data/loader.h"
#include "engine/checkpoint.h"
#include "engine/file_util.h"
#include "engine/ops.h"
#include "engine/progress.h"
#include "engine/stream.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"

namespace hr::tasks {

namespace fs = std::filesystem;

std::unique_ptr<Optimizer> make_optimizer(const TrainSettings& s, const NamedTensors& named) {
  std::vector<Tensor> params;
  for (const auto& [k, p] : named) params.push_back(p);
  if (s.optimizer == "adam") {
    AdamOptions o;
    o.lr = s.lr;
    return std::make_unique<Adam>(std::move(params), o);
  }
  SGDOptions o;
  o.lr = s.lr;
  o.momentum = s.momentum;
  o.weight_decay = s.wd;
  o.nesterov = s.nesterov;
  const double wd_bias = s.wd_bias < 0 ? s.wd : s.wd_bias;
  if (s.bias_lr_factor != 1 || wd_bias != s.wd) {  // maskrcnn-benchmark: "bias" in the name
    o.group2_lr_factor = s.bias_lr_factor;
    o.group2_weight_decay = wd_bias;
    for (const auto& [k, p] : named) o.group2.push_back(k.find("bias") != std::string::npos);
  }
  return std::make_unique<SGD>(std::move(params), o);
}

// ---------------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------------
namespace {
// A double as text that reads back to the same bits (the best score decides model_best after a
// resume as it would have without one).
std::string exact(double v) {
  char b[40];
  std::snprintf(b, sizeof b, "%.17g", v);
  return b;
}
}  // namespace

void save_training_checkpoint(const std::string& path, const models::HRNet& model,
                              const Optimizer& opt, const TrainState& st, uint64_t seed,
                              const std::string& config_text) {
  NamedTensors all;
  for (auto& [k, t] : model.state_dict()) all.emplace_back("model." + k, t);
  for (auto& [k, t] : opt.state_dict()) all.emplace_back("optimizer." + k, t);
  // the OCR head's dropout generator {seed, step}: no buffer of the model (PyTorch's has none)
  if (const Tensor d = model.dropout_state(); d.defined()) all.emplace_back("rng.dropout", d.to(Device::cpu()));
  save_safetensors(path, all,
                   {{"format", models::kTrainingCheckpointFormat},
                    {"model", model.spec().name},
                    {"epoch", std::to_string(st.epoch)},
                    {"best_score", exact(st.best_score)},
                    {"global_step", std::to_string(st.global_step)},
                    {"iter", std::to_string(st.iter)},
                    {"epoch_loss_sum", exact(st.epoch_loss_sum)},
                    {"epoch_loss_samples", std::to_string(st.epoch_loss_samples)},
                    {"epoch_samples", std::to_string(st.epoch_samples)},
                    {"epoch_skipped", std::to_string(st.epoch_skipped)},
                    {"ranks", std::to_string(st.ranks)},
                    {"seed", std::to_string(seed)},
                    {"config", config_text}});
}

TrainState load_training_checkpoint(const std::string& path, models::HRNet& model, Optimizer& opt,
                                    uint64_t seed) {
  std::map<std::string, std::string> meta;
  NamedTensors all = load_checkpoint(path, &meta);
  auto get = [&](const char* key) -> const std::string& {
    auto it = meta.find(key);
    HR_CHECK(it != meta.end(), "[resume] ", path, ": not an hrnet-train checkpoint (no '", key,
             "' in its metadata)");
    return it->second;
  };
  HR_CHECK(get("format") == models::kTrainingCheckpointFormat, "[resume] ", path,
           ": unknown checkpoint format ", get("format"));
  HR_CHECK(get("seed") == std::to_string(seed), "[resume] ", path, ": made with ENGINE.SEED ",
           get("seed"), ", this run has ", seed, " (the sample order would differ)");
  NamedTensors weights, state;
  for (auto& [k, t] : all) {
    if (k.compare(0, 6, "model.") == 0)
      weights.emplace_back(k.substr(6), t);
    else if (k.compare(0, 10, "optimizer.") == 0)
      state.emplace_back(k.substr(10), t);
    else if (k == "rng.dropout" && model.dropout_state().defined()) {
      NoGradGuard g;
      Tensor d = model.dropout_state();
      HR_CHECK(t.shape() == d.shape() && t.dtype() == d.dtype(), "[resume] ", path,
               ": rng.dropout does not fit the model's dropout state");
      d.copy_(t);
    } else
      throw Error(str_cat("[resume] ", path, ": unexpected entry ", k));
  }
  try {
    model.load_state_dict(weights);
    opt.load_state_dict(state);
    opt.refresh_weight_copies();  // the 16-bit copies graphs read, if any were made already
  } catch (const Error& e) {
    throw Error(str_cat("[resume] ", path, ": ", e.what()));
  }
  TrainState st;
  try {
    st.epoch = std::stoll(get("epoch"));
    // checkpoints of the pose-only trainer named the score best_ap
    st.best_score = std::stod(meta.count("best_score") ? get("best_score") : get("best_ap"));
    st.global_step = std::stoll(get("global_step"));
    // the position within the epoch (checkpoints of a run stopped mid-epoch; none before)
    auto opt_int = [&](const char* key) -> int64_t {
      return meta.count(key) ? std::stoll(meta.at(key)) : 0;
    };
    st.iter = opt_int("iter");
    st.epoch_loss_samples = opt_int("epoch_loss_samples");
    st.epoch_samples = opt_int("epoch_samples");
    st.epoch_skipped = opt_int("epoch_skipped");
    st.ranks = std::max<int64_t>(1, opt_int("ranks"));
    st.epoch_loss_sum = meta.count("epoch_loss_sum") ? std::stod(meta.at("epoch_loss_sum")) : 0.0;
    HR_CHECK(st.epoch >= 0 && st.iter >= 0 && st.global_step >= 0, "[resume] ", path,
             ": corrupt metadata (negative epoch, iteration or step)");
  } catch (const std::logic_error&) {
    throw Error(str_cat("[resume] ", path, ": corrupt metadata"));
  }
  return st;
}

// ---------------------------------------------------------------------------------------------
// The training step
// ---------------------------------------------------------------------------------------------
TrainStep::TrainStep(const Task& task, models::HRNet& model, Optimizer& opt, Device dev,
                     DType autocast, bool graph, int accumulate)
    : task_(task),
      model_(model),
      opt_(opt),
      dev_(dev),
      autocast_(autocast),
      graph_(graph),
      accumulate_(accumulate) {
  HR_CHECK(accumulate_ >= 1, "train step: accumulate must be at least 1, got ", accumulate_);
  // CUDA: after one eager step per batch shape, the whole step (forward, backward, optimizer)
  // replays as one CUDA graph
  if (graph_ && dev_.is_cuda()) opt_.set_capturable(true);
}

TrainStep::~TrainStep() = default;

void TrainStep::set_data_parallel(bool sync_bn, bool always) {
  HR_CHECK(graphs_.empty() && !host_losses_.steps, "train step: set_data_parallel after a step");
  sync_bn_ = sync_bn;
  if (!dist::distributed() && !always) return;
  const std::vector<Tensor> params = model_.parameters();
  for (size_t k = 0; k < params.size(); ++k) param_index_[params[k].impl()] = k;
  reducer_ = std::make_unique<dist::GradientReducer>(params, 16 << 20, always);
}

bool TrainStep::graph_reduces() const {
  return reducer_ && dev_.is_cuda() && accumulate_ == 1;
}

void TrainStep::reduce_gradients() {
  if (reducer_) reducer_->finish();
}

void TrainStep::add_host_loss(float loss, int64_t samples) {
  host_losses_.last = loss;
  host_losses_.sum += double(loss) * double(samples);
  host_losses_.samples += samples;
  ++host_losses_.steps;
}

// The graph's loss output (fp32) into the device's running sum, on the current stream: eagerly
// after an uncaptured run, or inside the capture (the graph then adds every replay's loss).
void TrainStep::add_device_loss(const graph::Executable& e, int64_t samples) {
  cuda::loss_accumulate(e.output("loss").data<float>(), double(samples),
                        static_cast<double*>(device_sum_.raw_data()), current_stream());
}

TrainStep::Losses TrainStep::take_losses() {
  Losses out = host_losses_;
  host_losses_ = Losses();
  if (device_counts_.steps > 0) {
    double sum[2];  // waits for the steps
    cuda::memcpy_d2h(sum, device_sum_.raw_data(), sizeof sum, current_stream());
    cuda::memset_zero(device_sum_.raw_data(), sizeof sum, current_stream());
    out.last = float(sum[1]);
    out.sum += sum[0];
    out.samples += device_counts_.samples;
    out.steps += device_counts_.steps;
    device_counts_ = Losses();
  }
  return out;
}

float TrainStep::operator()(const data::Batch& batch) {
  step(batch);
  return take_losses().last;
}

Tensor TrainStep::model_input(const data::Batch& batch, const Tensor& x,
                              const std::map<std::string, Tensor>& targets) {
  if (x.dtype() != DType::u8) return x;
  HR_CHECK(batch.input_lut.defined(), "train step: a raw (u8) input without its table");
  if (!input_lut_.defined()) {
    input_lut_host_ = batch.input_lut;
    input_lut_ = batch.input_lut.to(dev_);
  }
  HR_CHECK(batch.input_lut.impl() == input_lut_host_.impl() ||
               batch.input_lut.to_vector() == input_lut_host_.to_vector(),
           "train step: the batches' input tables differ (the compiled graphs read the first)");
  const auto size = targets.find(data::kInputSizeField);
  return ops::normalize_u8(x, input_lut_, size == targets.end() ? Tensor() : size->second);
}

// The compiled training graph for the batch's shape (compiled on first use).
graph::Executable& TrainStep::executable_for(const data::Batch& batch) {
  const Tensor& input = batch.input();
  auto& exe = graphs_[input.shape()];
  if (!exe) {
    graph::Graph g(graph::GraphOptions{dev_});
    std::map<std::string, Tensor> targets;
    for (size_t f = 1; f < batch.fields.size(); ++f) {
      const Tensor& t = batch.fields[f].second;
      targets[batch.fields[f].first] = g.input(batch.fields[f].first, t.shape(), t.dtype());
    }
    Tensor loss;
    {
      AutocastGuard ac(autocast_);
      SyncBatchNormGuard sb(sync_bn_);
      const Tensor x = g.input(batch.fields[0].first, input.shape(), input.dtype());
      loss = task_.loss(model_.forward_all(model_input(batch, x, targets)), targets);
    }
    // fp32, as the device's running sum reads it
    g.output(loss.dtype() == DType::f32 ? loss : ops::cast(loss, DType::f32), "loss");
    graph::CompileOptions co;
    co.loss = loss;
    // synchronised batch norm over NCCL: every collective of the communicator on one stream, in
    // the same order on every rank (kernels of one communicator on concurrent streams could run
    // in different orders on different GPUs and deadlock)
    co.streams = !(sync_bn_ && dev_.is_cuda() && dist::distributed());
    // CUDA: the gradients averaged inside the graph, each as soon as the backward completes it,
    // on a stream of their own (captured with the step); the CPU feeds its reducer's thread
    co.reduce_gradients = graph_reduces();
    // under autocast the graphs read the 16-bit weights the optimizer's step writes (one copy
    // for every graph of the model) instead of casting each weight on every run
    co.weight_copy = [this](const Tensor& p, DType dt) { return opt_.weight_copy(p, dt); };
    exe = std::make_unique<graph::Executable>(std::move(g), co);
    // copies made for an earlier graph: from the weights as they are now, whatever changed them
    opt_.refresh_weight_copies();
    if (reducer_)  // each gradient into its bucket as the backward completes it
      exe->set_gradient_ready([this](const Tensor& p, const Tensor& grad) {
        auto it = param_index_.find(p.impl());
        if (it != param_index_.end()) reducer_->ready(it->second, grad);
      });
  }
  return *exe;
}

namespace {

// Rows [begin, end) of every field of a host batch.
data::Batch slice_batch(const data::Batch& b, int64_t begin, int64_t end) {
  data::Batch r;
  for (const auto& [name, t] : b.fields) {
    Shape s = t.shape();
    const int64_t row = t.numel() / s[0] * static_cast<int64_t>(dtype_size(t.dtype()));
    s[0] = end - begin;
    Tensor part = Tensor::empty(s, t.dtype());
    std::memcpy(part.raw_data(), static_cast<const char*>(t.raw_data()) + begin * row,
                static_cast<size_t>((end - begin) * row));
    r.fields.emplace_back(name, part);
  }
  r.indices.assign(b.indices.begin() + begin, b.indices.begin() + end);
  r.input_lut = b.input_lut;
  return r;
}

}  // namespace

void TrainStep::step_accumulated(const data::Batch& batch) {
  const int64_t N = batch.size(), k = std::min<int64_t>(accumulate_, N);
  std::vector<data::Batch> parts;
  for (int64_t i = 0; i < k; ++i) parts.push_back(slice_batch(batch, i * N / k, (i + 1) * N / k));
  double loss_sum = 0;
  if (!graph_) {
    opt_.zero_grad();
    for (const data::Batch& part : parts) {
      std::map<std::string, Tensor> targets;
      for (size_t f = 1; f < part.fields.size(); ++f)
        targets[part.fields[f].first] = part.fields[f].second.to(dev_);
      AutocastGuard ac(autocast_);
      SyncBatchNormGuard sb(sync_bn_);
      const Tensor x = model_input(part, part.input().to(dev_), targets);
      Tensor loss = task_.loss(model_.forward_all(x), targets);
      ops::mul(loss, float(double(part.size()) / double(N))).backward();
      loss_sum += double(loss.item()) * double(part.size());
    }
    reduce_gradients();
    opt_.step();
    add_host_loss(float(loss_sum / double(N)), N);
    return;
  }
  // each part through the graph of its shape, uncaptured; the gradients summed into our own
  // tensors, which the optimizer then reads
  const std::vector<Tensor> params = model_.parameters();
  std::vector<Tensor> sum(params.size());
  for (const data::Batch& part : parts) {
    graph::Executable& e = executable_for(part);
    for (const auto& [name, t] : part.fields) e.set_input(name, t);
    // the micro-batches' gradients are summed here first: reduced once, after the last
    e.set_gradient_ready(nullptr);
    e.run();
    NoGradGuard g;
    const float w = float(double(part.size()) / double(N));
    for (size_t j = 0; j < params.size(); ++j) {
      const Tensor d = ops::mul(e.grad(params[j]), w);
      sum[j] = sum[j].defined() ? ops::add(sum[j], d) : d;
    }
    loss_sum += double(e.output("loss").item()) * double(part.size());
  }
  for (size_t j = 0; j < params.size(); ++j) {
    Tensor p = params[j];
    p.set_grad(sum[j]);
  }
  last_ = nullptr;  // an unaccumulated step binds the graph's gradients again
  reduce_gradients();
  opt_.step();
  add_host_loss(float(loss_sum / double(N)), N);
}

void TrainStep::step(const data::Batch& batch) {
  HR_CHECK(batch.size() > 0, "train step: empty batch");
  HR_CHECK(model_.is_training(), "train step: the model is in eval mode");
  if (accumulate_ > 1 && batch.size() > 1) return step_accumulated(batch);
  const Tensor& input = batch.input();
  if (!graph_) {
    std::map<std::string, Tensor> targets;
    for (size_t f = 1; f < batch.fields.size(); ++f)
      targets[batch.fields[f].first] = batch.fields[f].second.to(dev_);
    AutocastGuard ac(autocast_);
    SyncBatchNormGuard sb(sync_bn_);
    opt_.zero_grad();
    const Tensor x = model_input(batch, input.to(dev_), targets);
    Tensor loss = task_.loss(model_.forward_all(x), targets);
    loss.backward();
    reduce_gradients();
    opt_.step();
    add_host_loss(loss.item(), batch.size());
    return;
  }
  graph::Executable& e = executable_for(batch);
  if (last_ != &e) {
    // the optimizer reads the gradients where this graph writes them
    for (Tensor p : model_.parameters()) p.set_grad(e.grad(p));
    last_ = &e;
  }
  // CUDA: asynchronous uploads from pinned staging buffers, on the stream the graph runs on
  for (const auto& [name, t] : batch.fields) e.set_input(name, t);
  if (!dev_.is_cuda()) {
    e.run();  // the gradient buckets are reduced as the backward pass completes them
    reduce_gradients();
    opt_.step();
    add_host_loss(e.output("loss").item(), batch.size());
    return;
  }
  if (!device_sum_.defined()) device_sum_ = Tensor::zeros({2}, DType::i64, dev_);  // 2 doubles
  const int64_t n = batch.size();
  // a data-parallel job: the graph averaged the gradients itself (graph_reduces), or NCCL after it
  // on the step's stream (a batch of one sample under ENGINE.ACCUMULATE_STEPS)
  const bool after = !graph_reduces();
  if (!e.captured()) {
    e.run();
    if (after) reduce_gradients();
    opt_.step();
    add_device_loss(e, n);
    // the same step, captured once; each later step replays it
    e.capture(
        [this, &e, n, after] {
          add_device_loss(e, n);
          if (after) reduce_gradients();
          opt_.enqueue_step();
        },
        [this] { opt_.prepare_step(); });
  } else {
    e.run();  // prepare_step on the host, then the graph: forward, backward, loss sum, optimizer
  }
  device_counts_.samples += n;
  ++device_counts_.steps;
}

// ---------------------------------------------------------------------------------------------
// Stopping
// ---------------------------------------------------------------------------------------------
namespace {

std::atomic<int> g_stop{0};
static_assert(std::atomic<int>::is_always_lock_free, "the stop flag is set in a signal handler");
const char* g_program = "hrnet";

// Async-signal-safe: atomics, write(2) and _exit only.
void append_cstr(char* buf, size_t& n, size_t cap, const char* s) {
  while (*s && n + 1 < cap) buf[n++] = *s++;
}

extern "C" void on_stop_signal(int sig) {
  int none = 0;
  if (g_stop.compare_exchange_strong(none, sig)) return;  // the first: stop at the next step
  char msg[160];
  size_t n = 0;
  append_cstr(msg, n, sizeof msg, "\n");
  append_cstr(msg, n, sizeof msg, g_program);
  append_cstr(msg, n, sizeof msg, sig == SIGINT ? ": SIGINT" : sig == SIGTERM ? ": SIGTERM" : ": signal");
  append_cstr(msg, n, sizeof msg, " while stopping: exiting at once\n");
  [[maybe_unused]] const ssize_t w = ::write(2, msg, n);
  ::_exit(128 + sig);
}

const char* signal_name(int sig) {
  return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : sig ? "a signal" : "request";
}

}  // namespace

void request_stop(int signal) {
  int none = 0;
  g_stop.compare_exchange_strong(none, signal ? signal : -1);
}
int stop_requested() { return g_stop.load(); }

void stop_point(const RunOptions& run) {
  if (run.stoppable && stop_requested())
    throw EvalStopped(str_cat("evaluation stopped by ", signal_name(stop_requested())));
}
void clear_stop() { g_stop.store(0); }

void install_stop_handlers(const char* program) {
  g_program = program;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

// ---------------------------------------------------------------------------------------------
// The loop
// ---------------------------------------------------------------------------------------------
namespace {

std::string num(double v) {
  if (!std::isfinite(v)) return "null";
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

std::string json_metrics(const EvalSummary& e) {
  std::string s;
  for (const auto& [k, v] : e.metrics) s += str_cat(",\"", k, "\":", num(v));
  return s;
}

// What metrics.jsonl already holds of the run a resumed run continues (the lines since the last
// start of a fresh run): the lines a resumed run would repeat are marked "resumed":true.
struct LoggedRun {
  int64_t max_step = -1;              // train lines
  std::set<int64_t> epochs, evals;    // epoch and eval lines
};

LoggedRun scan_metrics(const std::string& path) {
  LoggedRun r;
  std::ifstream f(path);
  auto field = [](const std::string& line, const char* key, int64_t& v) {
    const std::string k = str_cat("\"", key, "\":");
    const size_t at = line.find(k);
    if (at == std::string::npos) return false;
    char* end = nullptr;
    const long long x = std::strtoll(line.c_str() + at + k.size(), &end, 10);
    if (end == line.c_str() + at + k.size()) return false;
    v = x;
    return true;
  };
  for (std::string line; std::getline(f, line);) {
    int64_t v = 0;
    if (line.find("\"type\":\"start\"") != std::string::npos) {
      if (line.find("\"resumed\":true") == std::string::npos) r = LoggedRun();
    } else if (line.find("\"type\":\"train\"") != std::string::npos) {
      if (field(line, "step", v)) r.max_step = std::max(r.max_step, v);
    } else if (line.find("\"type\":\"epoch\"") != std::string::npos) {
      if (field(line, "epoch", v)) r.epochs.insert(v);
    } else if (line.find("\"type\":\"eval\"") != std::string::npos) {
      if (field(line, "epoch", v)) r.evals.insert(v);
    }
  }
  return r;
}

}  // namespace

Trainer::Trainer(Task& task, std::string out_dir, int resume)
    : task_(task), out_(std::move(out_dir)), resume_(resume) {}

EvalSummary Trainer::run() {
  const TrainSettings& s = task_.settings();
  const models::Config& cfg = task_.config();
  s.apply_process_settings();
  const Device dev = s.engine_device();
  HR_CHECK(dev.is_cpu() || cuda::available(), "ENGINE.DEVICE is cuda but no CUDA device is usable");
  // A data-parallel job (engine/dist.h): rank 0 alone writes (output directory, lock, config,
  // metrics, checkpoints, evaluation outputs); every rank trains on its part of each batch.
  const dist::World& world = dist::world();
  const bool lead = world.rank == 0;
  dist::set_timeout(s.dist_timeout);
  HR_CHECK(s.batch % world.size == 0, "the batch of ", s.batch, " (TRAIN.BATCH_SIZE_PER_GPU x "
           "GPUS, or SOLVER.IMS_PER_BATCH) cannot be split evenly over ", world.size, " ranks");
  const int64_t rank_batch = s.batch / world.size;
  HR_CHECK(s.accumulate <= rank_batch, "ENGINE.ACCUMULATE_STEPS ", s.accumulate, " is more than "
           "the ", rank_batch, " samples of each rank's part of the batch");

  // Nothing is written before the run is known to go ahead: a --resume with nothing to resume
  // is refused before the directory is made; the lock is taken before anything in it is read
  // or changed; config.yaml and metrics.jsonl are written once the checkpoint has loaded.
  const std::string ckpt = out_ + "/checkpoint.safetensors";
  const bool resume = resume_ == 1 || (resume_ == -1 && s.auto_resume);
  if (resume_ == 1 && !fs::exists(ckpt)) throw Error(str_cat("--resume: no checkpoint at ", ckpt));
  DirLock lock;
  if (lead) {
    make_output_dir(out_);  // an unwritable place fails before any work
    try {
      lock = DirLock::acquire(out_, "train.lock");
    } catch (const DirLock::Busy& e) {
      throw Error(str_cat("output directory ", e.what(),
                          ": wait for that run to end or train into another directory"));
    }
    for (const std::string& f : remove_stale_temp_files(out_, 2))
      std::fprintf(stderr, "hrnet-train: removed the temp file of an interrupted write: %s\n",
                   f.c_str());
  }
  // every rank resumes (or not) as rank 0 does, from the same file: the output directory is on a
  // file system the ranks share
  int64_t resuming = lead && resume && fs::exists(ckpt);
  dist::all_reduce_max(&resuming, 1, "agreeing on the checkpoint to resume from");
  HR_CHECK(!resuming || fs::exists(ckpt), "rank ", world.rank, " cannot see ", ckpt, ", from which "
           "rank 0 resumes: the output directory must be on a file system every rank shares");

  const data::Dataset& train = task_.train_data();
  // the other ranks' stderr repeats rank 0's lines: they report only what is theirs
  std::FILE* info = lead ? stderr : nullptr;
  auto say = [&](const std::string& line) {
    if (info) std::fprintf(info, "hrnet-train: %s\n", line.c_str());
  };
  say(task_.describe_data());
  if (world.size > 1)
    say(str_cat("data-parallel over ", world.size, " ranks (", world.launcher, "): batch ", s.batch,
                " per step = ", rank_batch, " per rank x ", world.size, " ranks (the batch the "
                "recipe means, ", s.batch_per_gpu, " per GPU x ", s.gpus, " GPUS, whatever the "
                "number of ranks)", s.accumulate > 1 ? str_cat(", each rank's part as ", s.accumulate,
                " micro-batches (ENGINE.ACCUMULATE_STEPS)") : std::string(),
                "; batch norm ", s.sync_bn ? "synchronised over the ranks (ENGINE.SYNC_BN)"
                                           : "per rank (ENGINE.SYNC_BN False)"));
  else if (s.gpus > 1 || s.accumulate > 1)
    std::fprintf(stderr, "hrnet-train: batch %lld per step (%lld per GPU x %lld GPUS, as the "
                 "official recipe means it, on one device)%s\n", static_cast<long long>(s.batch),
                 static_cast<long long>(s.batch_per_gpu), static_cast<long long>(s.gpus),
                 s.accumulate > 1 ? str_cat(", as ", s.accumulate, " micro-batches with their "
                                            "gradients summed (ENGINE.ACCUMULATE_STEPS)").c_str()
                                  : "");
  if (dev.is_cpu() && lead)
    std::fprintf(stderr, "hrnet-train: CPU, %d threads%s, kernels %s, %s products\n",
                 omp_get_max_threads(), world.size > 1 ? " per rank" : "", cpu::cpu_isa(),
                 cpu::cpu_precision());
  // OMP_WAIT_POLICY=PASSIVE (every wait a sleep) suits processes that share the cores; one run
  // alone on them paid 25% for it (the quick start: 10:24 against 8:16; docs/PERFORMANCE.md)
  if (const char* w = std::getenv("OMP_WAIT_POLICY");
      dev.is_cpu() && lead && w && strcasecmp(w, "passive") == 0)
    std::fprintf(stderr, "hrnet-train: OMP_WAIT_POLICY=PASSIVE: the CPU threads sleep at every "
                 "wait; unset it where this run has the cores to itself (faster)\n");

  // Model and optimizer
  auto model = task_.make_model(s.seed);
  const std::string pre = task_.load_pretrained(*model);
  if (!pre.empty()) say(pre);
  model->to(dev);
  std::unique_ptr<Optimizer> opt = make_optimizer(s, model->named_parameters());

  data::LoaderOptions lo;
  lo.batch_size = static_cast<int>(s.batch);
  lo.shuffle = s.shuffle;
  lo.drop_last = true;
  lo.workers = std::max(1, std::min<int>(s.workers > 0 ? s.workers : 1,
                                         static_cast<int>(std::thread::hardware_concurrency())));
  lo.seed = s.seed;
  // CUDA: the input uploaded as the crop's bytes and normalised on the device (a quarter of the
  // bytes of the normalised fp32 input; every task's dataset has a raw input).
  // HR_RAW_INPUT=0|1 decides instead (the same results either way).
  const char* raw_env = std::getenv("HR_RAW_INPUT");
  lo.raw_input = raw_env && *raw_env ? raw_env[0] == '1' : dev.is_cuda();
  lo.shard_rank = world.rank;
  lo.shard_count = world.size;
  data::DataLoader loader(train, lo);
  if (lo.raw_input && train.input_lut())
    say("the input goes to the device as its bytes (u8), normalised there");
  HR_CHECK(loader.batches_per_epoch() > 0, "the training split has ", train.size(),
           " samples, fewer than one batch of ", s.batch);
  const int64_t iters_per_epoch = loader.batches_per_epoch();
  // a run of SOLVER.MAX_ITER steps (det): the epochs that take, the last one cut short
  const int64_t end_epoch =
      s.max_iter > 0 ? (s.max_iter + iters_per_epoch - 1) / iters_per_epoch : s.end_epoch;

  TrainState st;
  st.epoch = s.begin_epoch;
  st.ranks = world.size;
  bool resumed = false;
  if (resuming) {
    st = load_training_checkpoint(ckpt, *model, *opt, s.seed);
    HR_CHECK(st.iter <= iters_per_epoch, "[resume] ", ckpt, ": stopped at iteration ", st.iter,
             " of epoch ", st.epoch + 1, ", but an epoch of this run has ", iters_per_epoch,
             " iterations (another batch size or training set?)");
    resumed = true;
    if (st.ranks != world.size)
      say(str_cat("the checkpoint was written by a job of ", st.ranks, " rank",
                  st.ranks == 1 ? "" : "s", ", this one has ", world.size, ": the batch stays ",
                  s.batch, " per step (", rank_batch, " per rank), so training goes on at the same "
                  "iteration with the same samples"));
    st.ranks = world.size;
    if (!lead) {
    } else if (st.iter > 0)
      std::fprintf(stderr, "hrnet-train: resumed from %s in epoch %lld at iteration %lld of %lld "
                   "(best score %.4f)\n", ckpt.c_str(), static_cast<long long>(st.epoch + 1),
                   static_cast<long long>(st.iter), static_cast<long long>(iters_per_epoch),
                   st.best_score);
    else
      std::fprintf(stderr, "hrnet-train: resumed from %s at epoch %lld (best score %.4f)\n",
                   ckpt.c_str(), static_cast<long long>(st.epoch), st.best_score);
  }
  // every rank starts from rank 0's weights and buffers (the same seed makes the same ones; this
  // makes sure of it)
  if (world.size > 1) {
    NoGradGuard no_grad;
    for (auto& [k, t] : model->state_dict()) {
      // through a dense host copy (the model may be on a GPU, 4-D tensors channels-last)
      Tensor h = Tensor::empty(t.shape(), t.dtype());
      h.copy_(t);
      dist::broadcast(h.raw_data(), h.numel() * static_cast<int64_t>(dtype_size(h.dtype())), 0,
                      "the broadcast of rank 0's weights");
      Tensor dst = t;
      dst.copy_(h);
    }
  }
  // the run goes ahead: the merged config, then the metrics
  const std::string cfg_text = cfg.dump();
  if (lead)
    write_file_atomic(out_ + "/config.yaml", cfg_text.data(), cfg_text.size(),
                      "cannot write " + out_ + "/config.yaml");
  RunOptions run = run_options(s);
  run.workers = lo.workers;
  // a data-parallel job: every rank evaluates its part when the task splits its evaluation,
  // else rank 0 evaluates alone
  const bool split_eval = world.size > 1 && task_.splits_evaluation();
  if (split_eval) {
    run.shard_rank = world.rank;
    run.shard_count = world.size;
  }
  run.progress = lead;
  // Ctrl-C during an evaluation stops it between batches (one process: the ranks of a job would
  // have to agree on the batch)
  run.stoppable = world.size == 1;

  const std::string log_path = out_ + "/metrics.jsonl";
  const LoggedRun logged = resumed && lead ? scan_metrics(log_path) : LoggedRun();
  std::optional<LineLog> metrics;  // rank 0's
  if (lead) metrics.emplace(log_path);
  struct {
    std::optional<LineLog>& log;
    void append(const std::string& line) { if (log) log->append(line); }
    void sync() { if (log) log->sync(); }
    void close() { if (log) log->close(); }
  } log{metrics};
  if (metrics && metrics->cut_bytes())
    std::fprintf(stderr, "hrnet-train: %s ended in a cut line (%zu bytes, from an interrupted "
                 "write): removed\n", log_path.c_str(), metrics->cut_bytes());
  log.append(str_cat("{\"type\":\"start\",\"epoch\":", st.epoch, ",\"iter\":", st.iter,
                     ",\"step\":", st.global_step, ",\"resumed\":", resumed ? "true" : "false",
                     ",\"pid\":", long(::getpid()), "}"));
  // lines of a resumed run that the log already has (a run killed mid-epoch resumes from the
  // epoch's start): marked, never silent
  auto mark = [](bool repeated) { return repeated ? ",\"resumed\":true" : ""; };
  if (logged.max_step > st.global_step)
    std::fprintf(stderr, "hrnet-train: the metrics of steps %lld to %lld are logged again, marked "
                 "\"resumed\":true\n", static_cast<long long>(st.global_step + 1),
                 static_cast<long long>(logged.max_step));

  EvalSummary last_eval;
  bool evaluated = false;
  ProgressBar total_clock("", 0, "img", nullptr);
  TrainStep step(task_, *model, *opt, dev, s.autocast(), s.graph, s.accumulate);
  step.set_data_parallel(s.sync_bn);
  // A stop asked of any rank (its signal) stops every rank at the same step boundary.
  auto stop_agreed = [&]() -> bool {
    if (world.size <= 1) return stop_requested() != 0;
    int64_t f[2] = {stop_requested() != 0, std::max(stop_requested(), 0)};
    dist::all_reduce_max(f, 2, "agreeing whether to stop");
    if (f[0] && !stop_requested()) request_stop(static_cast<int>(f[1]));
    return f[0] != 0;
  };
  // Stops where the run is: a checkpoint of that position when there is one to write, then
  // Interrupted (hrnet-train says where it stopped and exits non-zero).
  auto stop_here = [&](bool save, const std::string& where) {
    const int sig = stop_requested();
    if (save && lead) save_training_checkpoint(ckpt, *model, *opt, st, s.seed, cfg_text);
    dist::barrier("waiting for rank 0's checkpoint");
    log.append(str_cat("{\"type\":\"stop\",\"epoch\":", st.epoch, ",\"iter\":", st.iter,
                       ",\"step\":", st.global_step, ",\"signal\":\"", signal_name(sig), "\"}"));
    log.close();
    const bool has_ckpt = fs::exists(ckpt);
    throw Interrupted(str_cat("stopped by ", signal_name(sig), " ", where,
                              has_ckpt ? str_cat("; checkpoint ", ckpt) : std::string("; nothing to resume from")),
                      sig, has_ckpt);
  };
  if (stop_agreed()) stop_here(false, "before training");

  // the schedule of ENGINE.LR_SCHEDULE (TrainSettings::lr_at), set before every step
  for (int64_t epoch = st.epoch; epoch < end_epoch; ++epoch) {
    // a run stopped mid-epoch continues at the iteration it reached, with the epoch's sums
    const int64_t first_iter = st.iter;
    double lr = s.lr_at(epoch * iters_per_epoch, iters_per_epoch);
    opt->set_lr(lr);
    model->train();
    loader.start_epoch(epoch, first_iter);
    ProgressBar bar(str_cat("epoch ", epoch + 1, "/", end_epoch),
                    (iters_per_epoch - first_iter) * s.batch, "img", info);
    // The losses are read (on CUDA: the one wait for the GPU) every PRINT_FREQ iterations and at
    // the end of the epoch; a non-finite loss in any step since the last read stops training.
    double loss_sum = st.epoch_loss_sum;  // of the steps read so far
    float loss = NAN;                     // the last step read
    // loss_seen: the job's samples in the steps read so far (read_losses sums the ranks')
    int64_t loss_seen = st.epoch_loss_samples, iter = first_iter,
            skipped = st.epoch_skipped;
    auto read_losses = [&](int64_t last_iter) {
      TrainStep::Losses l = step.take_losses();
      if (world.size > 1) {  // the job's: every rank reads at the same iterations
        double v[4] = {l.sum, double(l.samples), double(l.last), double(l.steps)};
        dist::all_reduce_sum(v, 4, "the losses' all-reduce");
        l.sum = v[0];
        l.samples = static_cast<int64_t>(v[1]);
        l.last = float(v[2] / world.size);
        l.steps = static_cast<int64_t>(v[3]) / world.size;
      }
      if (l.steps == 0) return;
      HR_CHECK(std::isfinite(l.last) && std::isfinite(l.sum), "training diverged at epoch ", epoch,
               ", by iteration ", last_iter, ": loss ", l.last, ", mean of the last ", l.steps,
               " iterations ", l.sum / double(l.samples));
      loss = l.last;
      loss_sum += l.sum;
      loss_seen += l.samples;
    };
    // the job's skipped samples, at a step boundary where every rank is
    int64_t skipped_here = 0;  // this rank's skipped samples not yet added to `skipped`
    auto sync_counts = [&] {
      double v = double(skipped_here);
      dist::all_reduce_sum(&v, 1, "the skipped samples' all-reduce");
      skipped += static_cast<int64_t>(v);
      skipped_here = 0;
    };
    // Stops inside this epoch: a checkpoint of the position reached (the iteration, the epoch's
    // sums so far) for the resumed run to continue from.
    auto stop_in_epoch = [&](const std::string& where) {
      st.epoch = epoch;
      st.iter = iter;
      st.epoch_loss_sum = loss_sum;
      st.epoch_loss_samples = st.epoch_samples = loss_seen;
      st.epoch_skipped = skipped;
      stop_here(true, where);
    };
    data::Batch b;
    while ((s.max_iter <= 0 || st.global_step < s.max_iter) && loader.next(b)) {
      skipped_here += b.skipped;
      for (const auto& e : b.errors) std::fprintf(stderr, "hrnet-train: skipped: %s\n", e.c_str());
      if (b.size() > 0) {
        if (s.lr_schedule != "multistep") {
          lr = s.lr_at(epoch * iters_per_epoch + iter, iters_per_epoch);
          opt->set_lr(lr);
        }
        step.step(b);
        ++st.global_step;
        const bool print = iter % s.print_freq == 0;
        if (print) read_losses(iter);
        bar.update((b.size() + b.skipped) * world.size,
                   str_cat("loss ", num(loss_seen ? loss_sum / loss_seen : NAN), " lr ", num(lr)));
        if (print)
          log.append(str_cat("{\"type\":\"train\",\"epoch\":", epoch, ",\"iter\":", iter,
                             ",\"step\":", st.global_step, ",\"loss\":", num(loss),
                             ",\"avg_loss\":", num(loss_sum / loss_seen), ",\"lr\":", num(lr),
                             ",\"img_per_s\":", num(bar.rate()),
                             ",\"time_s\":", num(total_clock.elapsed_s()),
                             mark(st.global_step <= logged.max_step), "}"));
      }
      ++iter;
      if (stop_agreed()) {
        // the step boundary: the position reached and the epoch's sums so far
        read_losses(iter - 1);
        sync_counts();
        bar.finish();
        stop_in_epoch(str_cat("in epoch ", epoch + 1, " of ", end_epoch, " at iteration ", iter,
                              " of ", iters_per_epoch, " (step ", st.global_step, ")"));
      }
    }
    read_losses(iter - 1);
    sync_counts();
    bar.finish();
    st.epoch = epoch + 1;
    st.iter = 0;
    st.epoch_loss_sum = 0;
    st.epoch_loss_samples = st.epoch_samples = st.epoch_skipped = 0;
    log.append(str_cat("{\"type\":\"epoch\",\"epoch\":", epoch,
                       ",\"loss\":", num(loss_seen ? loss_sum / loss_seen : NAN),
                       ",\"samples\":", loss_seen,
                       ",\"skipped\":", skipped, ",\"seconds\":", num(bar.elapsed_s()),
                       ",\"img_per_s\":", num(bar.rate()), ",\"lr\":", num(lr),
                       mark(logged.epochs.count(epoch) > 0), "}"));
    log.sync();
    if (skipped && lead)
      std::fprintf(stderr, "hrnet-train: %lld corrupt samples skipped in epoch %lld\n",
                   static_cast<long long>(skipped), static_cast<long long>(epoch + 1));

    const bool last = epoch + 1 == end_epoch;
    const bool eval_now = last || (epoch + 1 - s.begin_epoch) % s.eval_every == 0;
    // A stop during this evaluation abandons it: the run stops with a checkpoint of the epoch's
    // steps done, and the resumed run logs the epoch again (marked "resumed") and evaluates it.
    auto evaluate = [&]() -> EvalSummary {
      try {
        return task_.evaluate(*model, run);
      } catch (const EvalStopped&) {
        stop_in_epoch(str_cat("during the evaluation of epoch ", epoch + 1, " of ", end_epoch,
                              " (step ", st.global_step, ")"));
        throw;  // stop_in_epoch throws Interrupted
      }
    };
    if (eval_now && !lead && split_eval) {
      evaluate();  // this rank's part; rank 0 reports
      evaluated = true;
    } else if (eval_now && lead) {
      last_eval = evaluate();
      evaluated = true;
      std::string line;
      for (size_t k = 0; k < std::min<size_t>(3, last_eval.metrics.size()); ++k)
        line += str_cat(k ? ", " : "", last_eval.metrics[k].first, " ",
                        num(last_eval.metrics[k].second));
      std::fprintf(stderr, "hrnet-train: epoch %lld: val %s %.4f (%s), %lld samples, %.1f s\n",
                   static_cast<long long>(epoch + 1), last_eval.score_name.c_str(), last_eval.score,
                   line.c_str(), static_cast<long long>(last_eval.count), last_eval.seconds);
      log.append(str_cat("{\"type\":\"eval\",\"epoch\":", epoch, json_metrics(last_eval),
                         ",\"samples\":", last_eval.count, ",\"skipped\":", last_eval.skipped,
                         ",\"seconds\":", num(last_eval.seconds),
                         mark(logged.evals.count(epoch) > 0), "}"));
      if (last_eval.score > st.best_score) {
        st.best_score = last_eval.score;
        save_safetensors(out_ + "/model_best.safetensors", model->state_dict(),
                         {{"model", model->spec().name},
                          {"epoch", std::to_string(epoch + 1)},
                          {last_eval.score_name, num(last_eval.score)}});
      }
    }
    if (lead) save_training_checkpoint(ckpt, *model, *opt, st, s.seed, cfg_text);
    if (eval_now && !split_eval) {
      // rank 0 evaluated alone and wrote the checkpoint: the others wait for it here, bounded by
      // ENGINE.DIST_EVAL_TIMEOUT (a dead rank 0 ends the job through the launcher)
      dist::set_timeout(std::max(s.dist_timeout, s.dist_eval_timeout));
      dist::barrier("waiting for rank 0's evaluation");
      dist::set_timeout(s.dist_timeout);
    }
    if (stop_agreed())  // the last epoch too: its final outputs are then the resumed run's
      stop_here(false, str_cat("after epoch ", epoch + 1, " of ", end_epoch, " (step ",
                               st.global_step, ")"));
  }

  if (!lead) {  // rank 0 writes the outputs and reports
    if (!evaluated && split_eval) task_.evaluate(*model, run);
    return last_eval;
  }
  save_safetensors(out_ + "/final_state.safetensors", model->state_dict(),
                   {{"model", model->spec().name}, {"epoch", std::to_string(st.epoch)}});
  if (!evaluated) {  // a run resumed after its last epoch
    try {
      last_eval = task_.evaluate(*model, run);
    } catch (const EvalStopped&) {
      stop_here(false, "during the final evaluation");
    }
  }
  task_.save_outputs(out_);
  log.close();
  std::printf("%s", last_eval.table.c_str());
  std::printf("hrnet-train: done in %s; %s %.4f (best %.4f); output in %s\n",
              ProgressBar::format_duration(total_clock.elapsed_s()).c_str(),
              last_eval.score_name.c_str(), last_eval.score, st.best_score, out_.c_str());
  return last_eval;
}

}  // namespace hr::tasks
