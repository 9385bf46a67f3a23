// hrnet-train: top-down pose training as the official tools/train.py runs it, from the official
// experiment YAML plus yacs-style KEY VALUE overrides.
//
//   hrnet-train                              the quick start: generates the built-in synthetic
//                                            data once (cached), trains a small HRNet on the CPU,
//                                            evaluates it and saves the checkpoint and a picture
//   hrnet-train --cfg FILE [KEY VALUE ...]   e.g. TRAIN.END_EPOCH 1 DATASET.ROOT data/coco
//
// Output (OUTPUT_DIR/DATASET/MODEL.NAME/<cfg name>/, or --out DIR): checkpoint.safetensors
// (every epoch, atomic; resumed by --resume or AUTO_RESUME), model_best.safetensors (best AP),
// final_state.safetensors, metrics.jsonl (one JSON object per line), results/, predictions.png,
// config.yaml (the merged config). Errors print one line and exit non-zero.
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "apps/app_common.h"
#include "data/synth.h"
#include "engine/checkpoint.h"
#include "engine/file_util.h"
#include "engine/progress.h"
#include "kernels/cuda/cuda_kernels.h"
#include "quickstart_config.h"
#include "tasks/pose.h"

using namespace hr;
using apps::UsageError;
namespace fs = std::filesystem;

namespace {

const char* kUsage =
    "usage: hrnet-train [--cfg FILE] [--out DIR] [--resume | --no-resume] [--device cpu|cuda]\n"
    "                   [KEY VALUE ...]\n"
    "  With no --cfg: the quick start (built-in synthetic data, small model, CPU).\n"
    "  KEY VALUE pairs override config keys, as the official tools' opts do\n"
    "  (e.g. TRAIN.END_EPOCH 1 DATASET.ROOT data/coco ENGINE.DEVICE cuda).\n"
    "  HRNET_SYNTH_DIR sets where the quick start caches its data\n"
    "  (default: $XDG_CACHE_HOME/hrnet or ~/.cache/hrnet).\n";

struct Args {
  std::string cfg, out, device;
  int resume = -1;  // -1: AUTO_RESUME decides
  std::vector<std::string> overrides;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(k + " needs a value");
      return argv[++i];
    };
    if (k == "--cfg")
      a.cfg = value();
    else if (k == "--out")
      a.out = value();
    else if (k == "--device")
      a.device = value();
    else if (k == "--resume")
      a.resume = 1;
    else if (k == "--no-resume")
      a.resume = 0;
    else if (k == "-h" || k == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (k.rfind("--", 0) == 0) {
      throw UsageError("unknown option " + k);
    } else {
      a.overrides.push_back(k);
    }
  }
  if (a.overrides.size() % 2)
    throw UsageError("overrides come as KEY VALUE pairs; " + a.overrides.back() + " has no value");
  return a;
}

// The quick start's data: generated once into the cache, reused when complete.
std::string quickstart_data() {
  std::string base;
  if (const char* d = std::getenv("HRNET_SYNTH_DIR"); d && *d) {
    base = d;
  } else {
    const char* xdg = std::getenv("XDG_CACHE_HOME");
    const char* home = std::getenv("HOME");
    base = (xdg && *xdg) ? std::string(xdg) + "/hrnet"
                         : std::string(home && *home ? home : ".") + "/.cache/hrnet";
  }
  data::SynthOptions o;
  o.train_images = kQuickstartTrainImages;
  o.val_images = kQuickstartValImages;
  o.seed = 1;
  const std::string dir = base + "/synth-coco-v1-" + std::to_string(o.train_images) + "-" +
                          std::to_string(o.val_images) + "-s" + std::to_string(o.seed);
  const bool complete = fs::exists(dir + "/annotations/person_keypoints_train2017.json") &&
                        fs::exists(dir + "/annotations/person_keypoints_val2017.json");
  if (complete) {
    std::fprintf(stderr, "hrnet-train: synthetic data in %s (cached)\n", dir.c_str());
  } else {
    std::fprintf(stderr, "hrnet-train: generating the synthetic dataset into %s\n", dir.c_str());
    data::generate_synthetic_coco(dir, o, true);
  }
  return dir;
}

// Appends one JSON object per line and flushes: a run's metrics can be plotted while it runs.
class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path) : f_(std::fopen(path.c_str(), "a")) {
    HR_CHECK(f_, "cannot open ", path, " for writing");
  }
  ~MetricsLog() { std::fclose(f_); }
  void write(const std::string& json) {
    std::fprintf(f_, "%s\n", json.c_str());
    std::fflush(f_);
  }

 private:
  FILE* f_;
};

std::string num(double v) {
  if (!std::isfinite(v)) return "null";
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

std::string metrics_json(const data::KeypointMetrics& m) {
  static const char* keys[10] = {"AP", "AP50", "AP75", "APm", "APl",
                                 "AR", "AR50", "AR75", "ARm", "ARl"};
  std::string s;
  for (int i = 0; i < 10; ++i) s += str_cat(",\"", keys[i], "\":", num(m.stats[i]));
  return s;
}

int run(const Args& a) {
  const bool quickstart = a.cfg.empty();
  std::vector<std::string> overrides = a.overrides;
  models::Config cfg;
  std::string cfg_path = a.cfg;
  if (quickstart) {
    cfg = models::Config::pose_defaults();
    cfg.merge_yaml(kQuickstartConfig, "configs/quickstart_synth.yaml (built in)");
    cfg_path = "quickstart_synth.yaml";
    overrides.insert(overrides.begin(), {"DATASET.ROOT", quickstart_data()});
    cfg.merge_from_list(overrides);
  } else {
    cfg = tasks::load_pose_config(a.cfg, overrides);
  }
  if (!a.device.empty()) cfg.set("ENGINE.DEVICE", a.device);
  const tasks::PoseSettings s = tasks::PoseSettings::from_config(cfg);
  if (s.threads > 0) omp_set_num_threads(s.threads);
  const Device dev = s.engine_device();
  HR_CHECK(dev.is_cpu() || cuda::available(), "ENGINE.DEVICE is cuda but no CUDA device is usable");

  // Output directory first: an unwritable place fails before any work.
  const std::string out = a.out.empty() ? tasks::experiment_output_dir(cfg, cfg_path) : a.out;
  tasks::make_output_dir(out);
  const std::string cfg_text = cfg.dump();
  write_file_atomic(out + "/config.yaml", cfg_text.data(), cfg_text.size(),
                    "cannot write " + out + "/config.yaml");

  // Data
  tasks::PoseData train = tasks::load_train_data(s);
  tasks::PoseData val = tasks::load_eval_data(s);
  std::fprintf(
      stderr, "hrnet-train: %zu training people in %zu images, %zu val people in %zu images\n",
      train.records.size(), train.coco.images.size(), val.records.size(), val.coco.images.size());

  // Model and optimizer
  auto model = models::make_hrnet(cfg, s.seed);
  model->check_input({1, 3, s.target.image_h, s.target.image_w});
  if (s.init_weights && !s.pretrained.empty()) {
    HR_CHECK(fs::exists(s.pretrained), "MODEL.PRETRAINED ", s.pretrained,
             " does not exist (download it, or set MODEL.PRETRAINED '')");
    auto rep =
        models::load_pretrained_layers(*model, s.pretrained, model->spec().pretrained_layers);
    std::fprintf(stderr, "hrnet-train: initialised from %s: %s\n", s.pretrained.c_str(),
                 rep.summary().c_str());
  }
  model->to(dev);
  std::unique_ptr<Optimizer> opt;
  if (s.optimizer == "adam") {
    AdamOptions o;
    o.lr = s.lr;  // the official Adam takes no weight decay
    opt = std::make_unique<Adam>(model->parameters(), o);
  } else {
    SGDOptions o;
    o.lr = s.lr;
    o.momentum = s.momentum;
    o.weight_decay = s.wd;
    o.nesterov = s.nesterov;
    opt = std::make_unique<SGD>(model->parameters(), o);
  }
  MultiStepLR schedule(s.lr_step, s.lr_factor);

  tasks::TrainState st;
  st.epoch = s.begin_epoch;
  const std::string ckpt = out + "/checkpoint.safetensors";
  const bool resume = a.resume == 1 || (a.resume == -1 && cfg.get_bool("AUTO_RESUME"));
  if (resume) {
    if (fs::exists(ckpt)) {
      st = tasks::load_training_checkpoint(ckpt, *model, *opt, s.seed);
      std::fprintf(stderr, "hrnet-train: resumed from %s at epoch %lld (best AP %.4f)\n",
                   ckpt.c_str(), static_cast<long long>(st.epoch), st.best_ap);
    } else if (a.resume == 1) {
      throw Error(str_cat("--resume: no checkpoint at ", ckpt));
    }
  }

  data::PoseDataset train_ds(train.records, tasks::train_dataset_options(s));
  data::LoaderOptions lo;
  lo.batch_size = static_cast<int>(s.train_batch);
  lo.shuffle = s.shuffle;
  lo.drop_last = true;
  lo.workers = std::max(1, std::min<int>(s.workers > 0 ? s.workers : 1,
                                         static_cast<int>(std::thread::hardware_concurrency())));
  lo.seed = s.seed;
  data::DataLoader loader(train_ds, lo);
  HR_CHECK(loader.batches_per_epoch() > 0, "the training split has ", train_ds.size(),
           " people, fewer than one batch of ", s.train_batch);
  tasks::EvalOptions eo = tasks::eval_options(s);
  eo.workers = lo.workers;

  MetricsLog log(out + "/metrics.jsonl");
  const int64_t print_freq = std::max<int64_t>(1, cfg.get_int("PRINT_FREQ"));
  tasks::EvalResult last_eval;
  bool evaluated = false;
  ProgressBar total_clock("", 0, "img", nullptr);
  std::unique_ptr<tasks::GraphTrainStep> graph_step;
  // ENGINE.LR_SCHEDULE cosine: torch CosineAnnealingLR stepped every iteration, from LR to 0 at
  // END_EPOCH, in place of the official steps
  std::unique_ptr<CosineLR> cosine;
  if (s.lr_schedule == "cosine")
    cosine = std::make_unique<CosineLR>((s.end_epoch - s.begin_epoch) * loader.batches_per_epoch());
  if (s.graph) graph_step = std::make_unique<tasks::GraphTrainStep>(*model, *opt, dev, s.autocast());
  for (int64_t epoch = st.epoch; epoch < s.end_epoch; ++epoch) {
    double lr = schedule.lr(epoch, s.lr);
    opt->set_lr(lr);
    model->train();
    loader.start_epoch(epoch);
    ProgressBar bar(str_cat("epoch ", epoch + 1, "/", s.end_epoch),
                    loader.batches_per_epoch() * s.train_batch, "img");
    double loss_sum = 0;
    int64_t seen = 0, iter = 0, skipped = 0;
    data::Batch b;
    while (loader.next(b)) {
      skipped += b.skipped;
      for (const auto& e : b.errors) std::fprintf(stderr, "hrnet-train: skipped: %s\n", e.c_str());
      if (b.size() == 0) continue;
      if (cosine) {
        lr = cosine->lr((epoch - s.begin_epoch) * loader.batches_per_epoch() + iter, s.lr);
        opt->set_lr(lr);
      }
      const float loss = graph_step ? (*graph_step)(b)
                                    : tasks::train_step(*model, *opt, b, dev, s.autocast());
      HR_CHECK(std::isfinite(loss), "training diverged at epoch ", epoch, " iteration ", iter,
               ": loss ", loss);
      loss_sum += double(loss) * b.size();
      seen += b.size();
      ++st.global_step;
      bar.update(b.size() + b.skipped, str_cat("loss ", num(loss_sum / seen), " lr ", num(lr)));
      if (iter % print_freq == 0)
        log.write(str_cat("{\"type\":\"train\",\"epoch\":", epoch, ",\"iter\":", iter,
                          ",\"step\":", st.global_step, ",\"loss\":", num(loss),
                          ",\"avg_loss\":", num(loss_sum / seen), ",\"lr\":", num(lr),
                          ",\"img_per_s\":", num(bar.rate()),
                          ",\"time_s\":", num(total_clock.elapsed_s()), "}"));
      ++iter;
    }
    bar.finish();
    st.epoch = epoch + 1;
    log.write(str_cat("{\"type\":\"epoch\",\"epoch\":", epoch,
                      ",\"loss\":", num(seen ? loss_sum / seen : NAN), ",\"images\":", seen,
                      ",\"skipped\":", skipped, ",\"seconds\":", num(bar.elapsed_s()),
                      ",\"img_per_s\":", num(bar.rate()), ",\"lr\":", num(lr), "}"));
    if (skipped)
      std::fprintf(stderr, "hrnet-train: %lld corrupt samples skipped in epoch %lld\n",
                   static_cast<long long>(skipped), static_cast<long long>(epoch + 1));

    const bool last = epoch + 1 == s.end_epoch;
    if (last || (epoch + 1 - s.begin_epoch) % s.eval_every == 0) {
      last_eval = tasks::evaluate(*model, val, tasks::eval_dataset_options(s), eo);
      evaluated = true;
      const double ap = last_eval.metrics.ap();
      std::fprintf(
          stderr,
          "hrnet-train: epoch %lld: val AP %.4f (AP50 %.4f, AR %.4f), %lld people, %.1f s\n",
          static_cast<long long>(epoch + 1), ap, last_eval.metrics.stats[1],
          last_eval.metrics.stats[5], static_cast<long long>(last_eval.people), last_eval.seconds);
      log.write(str_cat("{\"type\":\"eval\",\"epoch\":", epoch, metrics_json(last_eval.metrics),
                        ",\"people\":", last_eval.people, ",\"skipped\":", last_eval.skipped,
                        ",\"seconds\":", num(last_eval.seconds), "}"));
      if (ap > st.best_ap) {
        st.best_ap = ap;
        save_safetensors(
            out + "/model_best.safetensors", model->state_dict(),
            {{"model", model->spec().name}, {"epoch", std::to_string(epoch + 1)}, {"AP", num(ap)}});
      }
    }
    tasks::save_training_checkpoint(ckpt, *model, *opt, st, s.seed, cfg_text);
  }

  save_safetensors(out + "/final_state.safetensors", model->state_dict(),
                   {{"model", model->spec().name}, {"epoch", std::to_string(st.epoch)}});
  if (!evaluated) last_eval = tasks::evaluate(*model, val, tasks::eval_dataset_options(s), eo);
  data::save_keypoint_results(last_eval.results,
                              out + "/results/keypoints_" + s.test_set + "_results.json");
  tasks::save_prediction_grid(val.coco, val.image_dir, last_eval.results, out + "/predictions.png");
  std::printf("%s", last_eval.metrics.table().c_str());
  std::printf("hrnet-train: done in %s; AP %.4f (best %.4f); output in %s\n",
              ProgressBar::format_duration(total_clock.elapsed_s()).c_str(), last_eval.metrics.ap(),
              st.best_ap, out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return apps::app_main("hrnet-train", std::string("\n") + kUsage,
                        [&] { return run(parse(argc, argv)); });
}
