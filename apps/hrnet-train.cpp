// hrnet-train: training as the official tools/train.py runs it, from the official experiment
// YAML plus yacs-style KEY VALUE overrides: the config's family picks the task (tasks/task.h),
// the trainer (tasks/trainer.h) runs it.
//
//   hrnet-train                              the quick start: generates the built-in synthetic
//                                            data once (cached), trains a small HRNet on the CPU,
//                                            evaluates it and saves the checkpoint and a picture
//   hrnet-train --cfg FILE [KEY VALUE ...]   e.g. TRAIN.END_EPOCH 1 DATASET.ROOT data/coco
//
// Output (OUTPUT_DIR/DATASET/MODEL.NAME/<cfg name>/, or --out DIR): checkpoint.safetensors
// (every epoch, atomic; resumed by --resume or AUTO_RESUME), model_best.safetensors (best score,
// AP for pose),
// final_state.safetensors, metrics.jsonl (one JSON object per line), results/, predictions.png,
// config.yaml (the merged config), train.lock (a second run on the same directory is refused).
// Errors print one line and exit non-zero.
//
// Ctrl-C (SIGINT) or SIGTERM: the run stops at the next step boundary, writes a checkpoint of
// where it stopped (mid-epoch included), prints one line saying where and how to resume, and
// exits with 128 + the signal (130 for Ctrl-C); --resume then continues as if never stopped. A
// second signal exits at once.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "apps/app_common.h"
#include "quickstart_config.h"
#include "tasks/trainer.h"

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
    "  HRNET_SYNTH_DIR sets where built-in synthetic data is cached (ENGINE.SYNTHETIC)\n"
    "  (default: $XDG_CACHE_HOME/hrnet or ~/.cache/hrnet).\n";

struct Args {
  std::string cfg, out, device;
  int resume = -1;  // -1: AUTO_RESUME decides
  std::vector<std::string> overrides;
  std::vector<std::string> argv;  // as given, for the resume hint
};

// The command line that resumes this run: the same arguments, --resume instead of --no-resume.
std::string resume_command(const Args& a) {
  auto quote = [](const std::string& w) {
    if (!w.empty() && w.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                          "0123456789_-+=./,:@%") == std::string::npos)
      return w;
    std::string q = "'";
    for (char c : w) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
  };
  std::string cmd;
  bool has_resume = false;
  for (size_t i = 0; i < a.argv.size(); ++i) {
    if (a.argv[i] == "--no-resume") continue;
    has_resume |= i > 0 && a.argv[i] == "--resume";
    cmd += (i ? " " : "") + quote(a.argv[i]);
  }
  if (!has_resume) cmd += " --resume";
  // a data-parallel job: started again the way it was (any number of ranks resumes it)
  const dist::World& w = dist::world();
  if (w.size > 1)
    cmd = (w.launcher == "mpirun" ? str_cat("mpirun -np ", w.size, " ")
                                  : str_cat("(", w.launcher, ", ", w.size, " processes) ")) + cmd;
  return cmd;
}

Args parse(int argc, char** argv) {
  Args a;
  a.argv.assign(argv, argv + argc);
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

int run(const Args& a) {
  dist::init();  // a data-parallel job when a launcher started this process as one of several
  const bool quickstart = a.cfg.empty();
  std::vector<std::string> overrides = a.overrides;
  models::Config cfg;
  std::string cfg_path = a.cfg;
  if (quickstart) {
    cfg = models::Config::pose_defaults();
    cfg.merge_yaml(kQuickstartConfig, "configs/quickstart_synth.yaml (built in)");
    cfg_path = "quickstart_synth.yaml";
    cfg.merge_from_list(overrides);
  } else {
    cfg = tasks::load_config(a.cfg, overrides);
  }
  if (!a.device.empty()) cfg.set("ENGINE.DEVICE", a.device);
  // the synthetic data set is generated once, by the first rank, before the others look for it
  if (dist::world().rank == 0) tasks::prepare_synthetic_data(cfg);
  dist::barrier("waiting for rank 0 to prepare the synthetic data");
  if (dist::world().rank != 0) tasks::prepare_synthetic_data(cfg);
  std::unique_ptr<tasks::Task> task = tasks::make_task(cfg);
  const std::string out = a.out.empty() ? tasks::experiment_output_dir(cfg, cfg_path) : a.out;
  try {
    tasks::Trainer(*task, out, a.resume).run();
  } catch (const tasks::Interrupted& e) {
    std::fflush(stdout);
    if (dist::world().rank == 0)  // every rank stopped at the same step: rank 0 says so
      std::fprintf(stderr, "hrnet-train: %s%s\n", apps::one_line(e.what()).c_str(),
                 e.checkpoint ? ("; resume with: " + resume_command(a)).c_str() : "");
    return e.signal > 0 ? 128 + e.signal : 1;
  }
  // the evaluation table went to stdout: a failed write there is an error too
  if (std::fflush(stdout) != 0 || std::ferror(stdout))
    throw Error(std::string("cannot write the results to standard output: ") + std::strerror(errno));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  tasks::install_stop_handlers("hrnet-train");
  return apps::app_main("hrnet-train", std::string("\n") + kUsage,
                        [&] { return run(parse(argc, argv)); });
}
