// hrnet-eval: evaluation as the official tools/test.py runs it, for the task of the config's
// family (tasks/task.h); seg: the official tools/test.py testval (TEST.FLIP_TEST, MULTI_SCALE,
// SCALE_LIST, sliding windows of TEST.IMAGE_SIZE), mIoU and per-class IoU. Pose:
//
//   hrnet-eval --cfg FILE [--weights CKPT] [--out DIR] [KEY VALUE ...]
//       runs the model on TEST_SET with GT boxes (TEST.USE_GT_BBOX) or the person detections of
//       TEST.COCO_BBOX_FILE (score >= TEST.IMAGE_THRE), flip test, quarter-offset decoding,
//       rescoring and OKS-NMS; prints the 10 COCO keypoint AP/AR numbers and writes the
//       keypoint results as COCO-format JSON (DIR/results/keypoints_<TEST_SET>_results.json).
//       Weights: --weights, else TEST.MODEL_FILE, else <output dir>/final_state.safetensors.
//   hrnet-eval --cfg FILE --results RESULTS.json [KEY VALUE ...]
//       scores an existing results file against TEST_SET's annotations.
// Det (HRNet-FCOS files): the official test (MIN_SIZE_TEST / MAX_SIZE_TEST, FCOS post-processing)
// on DATASETS.TEST[0], the 12 COCO box AP/AR numbers, the detections as COCO-format JSON
// (DIR/results/bbox_<dataset>_results.json: also a person-detection file for pose's
// TEST.COCO_BBOX_FILE); --results scores a box results file against DATASETS.TEST[0]. Weights:
// --weights, else MODEL.WEIGHT (as the official test_net.py), else the output's final_state.
//
// Errors print one line and exit non-zero.

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "apps/app_common.h"
#include "kernels/cuda/cuda_kernels.h"
#include "tasks/task.h"

using namespace hr;
using apps::UsageError;
namespace fs = std::filesystem;

namespace {

const char* kUsage =
    "usage: hrnet-eval --cfg FILE [--weights CKPT] [--out DIR] [--device cpu|cuda] [KEY VALUE "
    "...]\n"
    "       hrnet-eval --cfg FILE --results RESULTS.json [KEY VALUE ...]\n"
    "  KEY VALUE pairs override config keys (e.g. TEST.USE_GT_BBOX false\n"
    "  TEST.COCO_BBOX_FILE dets.json DATASET.ROOT data/coco).\n";

struct Args {
  std::string cfg, weights, results, out, device;
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
    else if (k == "--weights")
      a.weights = value();
    else if (k == "--results")
      a.results = value();
    else if (k == "--out")
      a.out = value();
    else if (k == "--device")
      a.device = value();
    else if (k == "-h" || k == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (k.rfind("--", 0) == 0) {
      throw UsageError("unknown option " + k);
    } else {
      a.overrides.push_back(k);
    }
  }
  if (a.cfg.empty()) throw UsageError("--cfg FILE is required");
  if (a.overrides.size() % 2)
    throw UsageError("overrides come as KEY VALUE pairs; " + a.overrides.back() + " has no value");
  if (!a.results.empty() && !a.weights.empty())
    throw UsageError("--results scores a file; it takes no --weights");
  return a;
}

int run(const Args& a) {
  models::Config cfg = tasks::load_config(a.cfg, a.overrides);
  if (!a.device.empty()) cfg.set("ENGINE.DEVICE", a.device);
  std::unique_ptr<tasks::Task> task = tasks::make_task(cfg);
  const tasks::TrainSettings& s = task->settings();
  s.apply_process_settings();

  if (!a.results.empty()) {
    std::printf("%s", task->score_results(a.results).c_str());
    return 0;
  }

  const std::string out = a.out.empty() ? tasks::experiment_output_dir(cfg, a.cfg) : a.out;
  const tasks::EvalSummary r = tasks::evaluate_experiment(*task, a.weights, out);
  std::printf("%s", r.table.c_str());
  std::fprintf(stderr, "hrnet-eval: %s %.4f on %lld samples, %d unreadable skipped, %.1f s; "
               "results in %s/results\n",
               r.score_name.c_str(), r.score, static_cast<long long>(r.count), r.skipped, r.seconds,
               out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return apps::app_main("hrnet-eval", std::string("\n") + kUsage,
                        [&] { return run(parse(argc, argv)); });
}
