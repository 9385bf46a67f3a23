// hrnet-eval: COCO keypoint evaluation as the official tools/test.py runs it.
//
//   hrnet-eval --cfg FILE [--weights CKPT] [--out DIR] [KEY VALUE ...]
//       runs the model on TEST_SET with GT boxes (TEST.USE_GT_BBOX) or the person detections of
//       TEST.COCO_BBOX_FILE (score >= TEST.IMAGE_THRE), flip test, quarter-offset decoding,
//       rescoring and OKS-NMS; prints the 10 COCO keypoint AP/AR numbers and writes the
//       keypoint results as COCO-format JSON (DIR/results/keypoints_<TEST_SET>_results.json).
//       Weights: --weights, else TEST.MODEL_FILE, else <output dir>/final_state.safetensors.
//   hrnet-eval --cfg FILE --results RESULTS.json [KEY VALUE ...]
//       scores an existing results file against TEST_SET's annotations.
//
// Errors print one line and exit non-zero.
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "apps/app_common.h"
#include "kernels/cuda/cuda_kernels.h"
#include "tasks/pose.h"

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
  models::Config cfg = tasks::load_pose_config(a.cfg, a.overrides);
  if (!a.device.empty()) cfg.set("ENGINE.DEVICE", a.device);
  const tasks::PoseSettings s = tasks::PoseSettings::from_config(cfg);
  if (s.threads > 0) omp_set_num_threads(s.threads);

  if (!a.results.empty()) {
    const data::CocoKeypoints gt = data::load_coco_keypoints(s.annotation_file(s.test_set));
    const auto results = data::load_keypoint_results(a.results);
    const data::KeypointMetrics m = data::evaluate_keypoints(gt, results);
    std::printf("%s", m.table().c_str());
    return 0;
  }

  const Device dev = s.engine_device();
  HR_CHECK(dev.is_cpu() || cuda::available(), "ENGINE.DEVICE is cuda but no CUDA device is usable");
  const std::string out = a.out.empty() ? tasks::experiment_output_dir(cfg, a.cfg) : a.out;
  std::string weights = a.weights;
  if (weights.empty()) weights = s.model_file;
  if (weights.empty()) weights = out + "/final_state.safetensors";
  HR_CHECK(fs::exists(weights), "weights ", weights,
           " do not exist (give --weights or TEST.MODEL_FILE)");
  tasks::make_output_dir(out);

  tasks::PoseData val = tasks::load_eval_data(s);
  auto model = models::make_hrnet(cfg, s.seed);
  model->check_input({1, 3, s.target.image_h, s.target.image_w});
  models::load_hrnet_checkpoint(*model, weights);
  model->to(dev);
  tasks::EvalOptions eo = tasks::eval_options(s);
  const tasks::EvalResult r = tasks::evaluate(*model, val, tasks::eval_dataset_options(s), eo);
  const std::string res = out + "/results/keypoints_" + s.test_set + "_results.json";
  data::save_keypoint_results(r.results, res);
  std::printf("%s", r.metrics.table().c_str());
  std::fprintf(stderr,
               "hrnet-eval: %lld people (%s boxes), %d unreadable skipped, %.1f s; results in %s\n",
               static_cast<long long>(r.people), s.use_gt_bbox ? "GT" : "detected", r.skipped,
               r.seconds, res.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return apps::app_main("hrnet-eval", std::string("\n") + kUsage,
                        [&] { return run(parse(argc, argv)); });
}
