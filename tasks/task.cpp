// The settings every task shares, the Task base, and the family dispatch.
#include "tasks/task.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include <omp.h>

#include "data/synth.h"
#include "data/synth_cls.h"
#include "data/synth_det.h"
#include "data/synth_seg.h"
#include "engine/optim.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"

#include "tasks/classification.h"
#include "tasks/detection.h"
#include "tasks/pose.h"
#include "tasks/segmentation.h"

namespace hr::tasks {

namespace fs = std::filesystem;
using models::Config;

TrainSettings TrainSettings::from_config(const Config& cfg) {
  TrainSettings s;
  const std::string src = cfg.source();
  s.optimizer = cfg.get_str("TRAIN.OPTIMIZER", s.optimizer);
  HR_CHECK(s.optimizer == "adam" || s.optimizer == "sgd", "[config] ", src,
           ": TRAIN.OPTIMIZER must be adam or sgd, got ", s.optimizer);
  // numbers in range, each error naming the key and the file
  auto number = [&](const char* key, double fallback, bool zero_ok) {
    const double v = cfg.get_float(key, fallback);
    HR_CHECK(std::isfinite(v) && (zero_ok ? v >= 0 : v > 0), "[config] ", src, ": ", key,
             zero_ok ? " must be a number >= 0, got " : " must be a number > 0, got ", v);
    return v;
  };
  auto integer = [&](const char* key, int64_t fallback, int64_t lo, int64_t hi) {
    const int64_t v = cfg.get_int(key, fallback);
    HR_CHECK(v >= lo && v <= hi, "[config] ", src, ": ", key, " must be ",
             hi == INT64_MAX ? str_cat(">= ", lo) : str_cat("in [", lo, ", ", hi, "]"), ", got ", v);
    return v;
  };
  s.lr = number("TRAIN.LR", s.lr, false);
  s.lr_factor = number("TRAIN.LR_FACTOR", s.lr_factor, false);
  s.momentum = number("TRAIN.MOMENTUM", s.momentum, true);
  s.wd = number("TRAIN.WD", s.wd, true);
  s.nesterov = cfg.get_bool("TRAIN.NESTEROV", s.nesterov);
  if (cfg.has("TRAIN.LR_STEP")) s.lr_step = cfg.get_int_list("TRAIN.LR_STEP");
  s.begin_epoch = cfg.get_int("TRAIN.BEGIN_EPOCH", s.begin_epoch);
  s.end_epoch = cfg.get_int("TRAIN.END_EPOCH", s.end_epoch);
  HR_CHECK(s.end_epoch > s.begin_epoch && s.begin_epoch >= 0, "[config] ", src,
           ": TRAIN.END_EPOCH must be greater than TRAIN.BEGIN_EPOCH >= 0");
  s.batch_per_gpu = cfg.get_int("TRAIN.BATCH_SIZE_PER_GPU", s.batch_per_gpu);
  HR_CHECK(s.batch_per_gpu > 0, "[config] ", src, ": TRAIN.BATCH_SIZE_PER_GPU must be positive");
  if (const models::CfgNode* g = cfg.find("GPUS")) {
    if (g->kind == models::CfgNode::Kind::List) s.gpus = std::max<int64_t>(1, int64_t(g->items.size()));
  }
  s.batch = s.batch_per_gpu * s.gpus;
  s.shuffle = cfg.get_bool("TRAIN.SHUFFLE", s.shuffle);
  s.workers = static_cast<int>(integer("WORKERS", s.workers, 0, 4096));
  s.output_dir = cfg.get_str("OUTPUT_DIR", s.output_dir);
  s.print_freq = integer("PRINT_FREQ", s.print_freq, 1, INT64_MAX);
  // AUTO_RESUME in the pose files, TRAIN.RESUME in the classification ones
  s.auto_resume = cfg.get_bool("AUTO_RESUME", cfg.get_bool("TRAIN.RESUME", s.auto_resume));
  s.device = cfg.get_str("ENGINE.DEVICE", s.device);
  HR_CHECK(s.device == "cpu" || s.device == "cuda", "[config] ", src,
           ": ENGINE.DEVICE must be cpu or cuda, got ", s.device);
  s.precision = cfg.get_str("ENGINE.PRECISION", s.precision);
  HR_CHECK(s.precision == "fp32" || s.precision == "bf16" || s.precision == "fp16" ||
               s.precision == "auto",
           "[config] ", src, ": ENGINE.PRECISION must be fp32, bf16, fp16 or auto, got ",
           s.precision);
  s.seed = static_cast<uint64_t>(cfg.get_int("ENGINE.SEED", 0));
  s.skip_corrupt = cfg.get_bool("ENGINE.SKIP_CORRUPT", s.skip_corrupt);
  s.eval_every = integer("ENGINE.EVAL_EVERY", s.eval_every, 1, INT64_MAX);
  s.threads = static_cast<int>(integer("ENGINE.THREADS", s.threads, 0, 4096));
  s.graph = cfg.get_bool("ENGINE.GRAPH", s.graph);
  const std::string family = cfg.get_str("MODEL.NAME", "");
  const bool seg = family.rfind("seg_", 0) == 0, det = family == "fcos_hrnet";
  if (det) {
    // maskrcnn-benchmark's SOLVER: SGD with momentum, the bias group, WarmupMultiStepLR, all in
    // iterations; IMS_PER_BATCH is the whole batch (every GPU's images)
    s.optimizer = "sgd";
    s.lr = number("SOLVER.BASE_LR", s.lr, false);
    s.momentum = number("SOLVER.MOMENTUM", s.momentum, true);
    s.wd = number("SOLVER.WEIGHT_DECAY", s.wd, true);
    s.nesterov = false;
    s.bias_lr_factor = number("SOLVER.BIAS_LR_FACTOR", 1, false);
    s.wd_bias = number("SOLVER.WEIGHT_DECAY_BIAS", 0, true);
    s.lr_factor = number("SOLVER.GAMMA", 0.1, false);
    s.lr_step = cfg.get_int_list("SOLVER.STEPS");
    for (size_t i = 0; i < s.lr_step.size(); ++i)
      HR_CHECK(s.lr_step[i] >= 0 && (i == 0 || s.lr_step[i] >= s.lr_step[i - 1]), "[config] ", src,
               ": SOLVER.STEPS should be a list of increasing integers, got ",
               cfg.at("SOLVER.STEPS").str());
    s.max_iter = integer("SOLVER.MAX_ITER", 0, 1, INT64_MAX);
    s.warmup_factor = number("SOLVER.WARMUP_FACTOR", s.warmup_factor, true);
    s.warmup_iters = integer("SOLVER.WARMUP_ITERS", 0, 0, INT64_MAX);
    s.warmup_method = cfg.get_str("SOLVER.WARMUP_METHOD");
    HR_CHECK(s.warmup_method == "constant" || s.warmup_method == "linear", "[config] ", src,
             ": SOLVER.WARMUP_METHOD must be constant or linear, got '", s.warmup_method, "'");
    s.batch_per_gpu = s.batch = integer("SOLVER.IMS_PER_BATCH", 16, 1, INT64_MAX);
    s.gpus = 1;
    s.begin_epoch = 0;
    s.end_epoch = 1;  // set from max_iter once the epoch's length is known (the trainer)
    s.workers = static_cast<int>(integer("DATALOADER.NUM_WORKERS", s.workers, 0, 4096));
  }
  // the batch is known for every family now (det: SOLVER.IMS_PER_BATCH)
  s.accumulate = static_cast<int>(cfg.get_int("ENGINE.ACCUMULATE_STEPS", 1));
  HR_CHECK(s.accumulate >= 1 && s.accumulate <= s.batch, "[config] ", src,
           ": ENGINE.ACCUMULATE_STEPS must be in 1..", s.batch, " (the batch), got ", s.accumulate);
  const models::CfgNode* sync = cfg.find("ENGINE.SYNC_BN");
  if (!sync || sync->kind == models::CfgNode::Kind::Null)
    s.sync_bn = seg || (det && cfg.get_bool("MODEL.SYNCBN", false));
  else
    s.sync_bn = cfg.get_bool("ENGINE.SYNC_BN");
  s.dist_timeout = number("ENGINE.DIST_TIMEOUT", s.dist_timeout, false);
  s.dist_eval_timeout = number("ENGINE.DIST_EVAL_TIMEOUT", s.dist_eval_timeout, false);
  s.lr_schedule = cfg.get_str("ENGINE.LR_SCHEDULE", "");
  if (s.lr_schedule.empty()) s.lr_schedule = det ? "warmup_multistep" : seg ? "poly" : "multistep";
  HR_CHECK(s.lr_schedule == "multistep" || s.lr_schedule == "cosine" || s.lr_schedule == "poly" ||
               s.lr_schedule == "warmup_multistep",
           "[config] ", src,
           ": ENGINE.LR_SCHEDULE must be multistep, poly, cosine or warmup_multistep, got '",
           s.lr_schedule, "'");
  return s;
}

double TrainSettings::lr_at(int64_t t, int64_t iters_per_epoch) const {
  if (lr_schedule == "poly")
    return PolyLR(end_epoch * iters_per_epoch, 0.9).lr(std::max<int64_t>(t - 1, 0), lr);
  if (lr_schedule == "cosine")  // torch CosineAnnealingLR stepped every iteration, LR to 0
    return CosineLR((end_epoch - begin_epoch) * iters_per_epoch).lr(t - begin_epoch * iters_per_epoch, lr);
  if (lr_schedule == "warmup_multistep") {  // WarmupMultiStepLR.get_lr at last_epoch t + 1
    const int64_t e = t + 1;
    double f = 1;
    if (e < warmup_iters)
      f = warmup_method == "constant"
              ? warmup_factor
              : warmup_factor * (1 - double(e) / double(warmup_iters)) + double(e) / double(warmup_iters);
    return MultiStepLR(lr_step, lr_factor).lr(e, lr) * f;
  }
  return MultiStepLR(lr_step, lr_factor).lr(t / iters_per_epoch, lr);
}

Device TrainSettings::engine_device() const {
  return device == "cuda" ? Device::cuda() : Device::cpu();
}

std::string TrainSettings::effective_precision() const {
  if (precision != "auto") return precision;
  if (device == "cuda") return "bf16";  // the CUDA build targets sm_80 and later
  return cpu::cpu_bf16_supported() ? "bf16" : "fp32";
}

void TrainSettings::apply_process_settings() const {
  if (threads > 0) omp_set_num_threads(threads);
  if (device != "cpu") return;
  const std::string precision = effective_precision();
  HR_CHECK(precision != "fp16", "ENGINE.PRECISION fp16 is for CUDA; the CPU runs fp32 or bf16 "
           "(bf16 products with fp32 sums)");
  HR_CHECK(precision != "bf16" || cpu::cpu_bf16_supported(),
           "ENGINE.PRECISION bf16 on the CPU needs a processor with AVX512_BF16 and the avx512 "
           "kernels (in use: ", cpu::cpu_isa(), "; available: ", cpu::cpu_isas_supported(), ")");
  cpu::set_cpu_precision(precision);
}

DType TrainSettings::autocast() const {
  if (device != "cuda") return DType::f32;
  const std::string precision = effective_precision();
  return precision == "bf16" ? DType::bf16 : precision == "fp16" ? DType::f16 : DType::f32;
}

RunOptions run_options(const TrainSettings& s) {
  RunOptions r;
  r.device = s.engine_device();
  r.autocast = s.autocast();
  r.graph = s.graph;
  r.workers = std::max(1, s.workers);
  return r;
}

std::pair<size_t, size_t> shard_range(size_t n, const RunOptions& run) {
  const size_t k = static_cast<size_t>(std::max(run.shard_count, 1)),
               r = static_cast<size_t>(std::max(run.shard_rank, 0));
  return {n * r / k, n * (r + 1) / k};
}

int64_t sum_shards(int64_t count, const RunOptions& run) {
  if (run.shard_count <= 1) return count;
  double v = double(count);  // exact below 2^53
  dist::all_reduce_sum(&v, 1, "the evaluation's counts");
  return static_cast<int64_t>(v);
}

// ---------------------------------------------------------------------------------------------
Task::Task(Config cfg) : cfg_(std::move(cfg)), settings_(TrainSettings::from_config(cfg_)) {}

std::shared_ptr<models::HRNet> Task::make_model(uint64_t seed) const {
  auto model = models::make_hrnet(cfg_, seed);
  const auto hw = models::config_input_hw(cfg_);
  if (hw[0] > 0 && hw[1] > 0) model->check_input({1, 3, hw[0], hw[1]});
  return model;
}

std::string Task::score_results(const std::string& path) {
  throw Error(str_cat(name(), ": no results file to score (", path, ")"));
}

std::string Task::load_pretrained(models::HRNet& model) const {
  const std::string path = cfg_.get_str("MODEL.PRETRAINED", "");
  if (path.empty() || !cfg_.get_bool("MODEL.INIT_WEIGHTS", true)) return "";
  HR_CHECK(fs::exists(path), "MODEL.PRETRAINED ", path,
           " does not exist (download it, or set MODEL.PRETRAINED '')");
  const auto rep = models::load_pretrained_layers(model, path, model.spec().pretrained_layers);
  return str_cat("initialised from ", path, ": ", rep.summary());
}

// ---------------------------------------------------------------------------------------------
Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  Config cfg = Config::load(path);
  cfg.merge_from_list(overrides);
  return cfg;
}

std::unique_ptr<Task> make_task(const Config& cfg) {
  const std::string family = cfg.get_str("MODEL.NAME", "");
  if (family.rfind("cls_", 0) == 0) return std::make_unique<ClsTask>(cfg);
  if (family.rfind("seg_", 0) == 0) return std::make_unique<SegTask>(cfg);
  if (family == "fcos_hrnet") return std::make_unique<DetTask>(cfg);
  return std::make_unique<PoseTask>(cfg);
}

namespace {

std::string synthetic_cache_dir() {
  if (const char* d = std::getenv("HRNET_SYNTH_DIR"); d && *d) return d;
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  return (xdg && *xdg) ? std::string(xdg) + "/hrnet"
                       : std::string(home && *home ? home : ".") + "/.cache/hrnet";
}

}  // namespace

std::string prepare_synthetic_data(Config& cfg) {
  if (!cfg.get_bool("ENGINE.SYNTHETIC", false) || !cfg.get_str("DATASET.ROOT", "").empty())
    return "";
  const std::string base = synthetic_cache_dir();
  const std::string family = cfg.get_str("MODEL.NAME", "");
  const bool cls = family.rfind("cls_", 0) == 0, seg = family.rfind("seg_", 0) == 0;
  std::string dir;
  bool complete;
  if (family == "fcos_hrnet") {
    data::SynthDetOptions o;
    dir = str_cat(base, "/synth-det-v1-", o.train_images, "-", o.val_images, "-", o.width, "x",
                  o.height, "-s", o.seed);
    complete = fs::exists(dir + "/annotations/instances_train2017.json") &&
               fs::exists(dir + "/annotations/instances_val2017.json");
    if (!complete) {
      std::fprintf(stderr, "hrnet-train: generating the synthetic detection set into %s\n",
                   dir.c_str());
      data::generate_synthetic_detection(dir, o, true);
    }
  } else if (seg) {
    data::SynthSegOptions o;
    dir = str_cat(base, "/synth-cityscapes-v1-", o.train_images, "-", o.val_images, "-", o.width,
                  "x", o.height, "-s", o.seed);
    complete = fs::exists(dir + "/list/cityscapes/val.lst");  // written last
    if (!complete) {
      std::fprintf(stderr, "hrnet-train: generating the synthetic street scenes into %s\n",
                   dir.c_str());
      data::generate_synthetic_cityscapes(dir, o, true);
    }
  } else if (cls) {
    data::SynthClsOptions o;
    dir = str_cat(base, "/synth-cls-v1-", o.train_per_class, "-", o.val_per_class, "-s", o.seed);
    complete = fs::exists(dir + "/classes.txt");
    if (!complete) {
      std::fprintf(stderr, "hrnet-train: generating the synthetic classification set into %s\n",
                   dir.c_str());
      data::generate_synthetic_classification(dir, o, true);
    }
  } else {
    data::SynthOptions o;
    o.train_images = 1500;
    o.val_images = 200;
    o.seed = 1;
    dir = str_cat(base, "/synth-coco-v1-", o.train_images, "-", o.val_images, "-s", o.seed);
    complete = fs::exists(dir + "/annotations/person_keypoints_train2017.json") &&
               fs::exists(dir + "/annotations/person_keypoints_val2017.json");
    if (!complete) {
      std::fprintf(stderr, "hrnet-train: generating the synthetic dataset into %s\n", dir.c_str());
      data::generate_synthetic_coco(dir, o, true);
    }
  }
  if (complete) std::fprintf(stderr, "hrnet-train: synthetic data in %s (cached)\n", dir.c_str());
  cfg.set("DATASET.ROOT", dir);
  return dir;
}

std::string experiment_output_dir(const Config& cfg, const std::string& cfg_path) {
  std::string out = cfg.get_str("OUTPUT_DIR", "");
  if (out.empty()) out = "output";
  return (fs::path(out) / cfg.get_str("DATASET.DATASET", "") / cfg.get_str("MODEL.NAME", "") /
          fs::path(cfg_path).stem())
      .string();
}

void make_output_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(fs::path(dir) / "results", ec);
  HR_CHECK(!ec && fs::is_directory(dir), "cannot create output directory ", dir, ": ",
           ec.message());
}

EvalSummary evaluate_experiment(Task& task, std::string weights, const std::string& out) {
  const TrainSettings& s = task.settings();
  s.apply_process_settings();
  const Device dev = s.engine_device();
  HR_CHECK(dev.is_cpu() || cuda::available(), "ENGINE.DEVICE is cuda but no CUDA device is usable");
  const models::Config& cfg = task.config();
  if (weights.empty()) weights = cfg.get_str("TEST.MODEL_FILE", "");
  if (weights.empty()) weights = cfg.get_str("MODEL.WEIGHT", "");  // det (maskrcnn-benchmark)
  if (weights.empty()) weights = out + "/final_state.safetensors";
  HR_CHECK(std::filesystem::exists(weights), "weights ", weights,
           " do not exist (give --weights or TEST.MODEL_FILE)");
  make_output_dir(out);
  auto model = task.make_model(s.seed);
  models::load_hrnet_checkpoint(*model, weights);
  model->to(dev);
  RunOptions run = run_options(s);
  run.test_augmentation = true;  // the official test tools' flip / multi-scale (seg)
  EvalSummary r = task.evaluate(*model, run);
  task.save_outputs(out);
  return r;
}

}  // namespace hr::tasks
