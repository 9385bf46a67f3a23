// The classification programs as a user runs them, on a tiny synthetic set (hrnet-synth --task
// cls): hrnet-train writes its outputs and metrics with top-1/top-5, resumes exactly, hrnet-eval
// reproduces the reported top-1, hrnet-infer --image prints the top-5 classes by name; and the
// backbone flow: the trained classifier's checkpoint initialises a pose model through
// MODEL.PRETRAINED and the official PRETRAINED_LAYERS rule, weights equal key for key.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>

#include "app_runner.h"
#include "data/classification.h"
#include "data/synth_cls.h"
#include "engine/checkpoint.h"
#include "tasks/pose.h"
#include "tasks/task.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace hr;
using hr::test::Run;
using hr::test::slurp;

namespace {

const fs::path kWork = fs::temp_directory_path() / ("hr_test_cls_apps_" + std::to_string(::getpid()));

Run run(const std::string& exe, const std::string& args) {
  return hr::test::run_program(exe, args, (kWork / "cmd").string());
}

std::string cls_cfg(const std::string& root) {
  const std::string text = hr::test::tiny_cls_config(root);
  const std::string path = (kWork / "cls.yaml").string();
  std::ofstream(path) << text;
  return path;
}

const std::string& dataset() {
  static std::string root = [] {
    fs::remove_all(kWork);
    fs::create_directories(kWork);
    const std::string r = (kWork / "shapes").string();
    Run g = run(HR_SYNTH_EXE, "--out " + r + " --task cls --per-class 4 --val-per-class 2 --seed 3");
    INFO(g.err);
    REQUIRE(g.code == 0);
    return r;
  }();
  return root;
}

struct Trained {
  std::string cfg, dir;
  Run run;
};
const Trained& trained() {
  static Trained t = [] {
    Trained r;
    r.cfg = cls_cfg(dataset());
    r.dir = (kWork / "run").string();
    r.run = run(HR_TRAIN_EXE, "--cfg " + r.cfg + " --out " + r.dir);
    INFO(r.run.err);
    REQUIRE(r.run.code == 0);
    return r;
  }();
  return t;
}

using hr::test::json_number;

}  // namespace

TEST_CASE("hrnet-train trains a classifier and writes what it says", "[apps][cls]") {
  const Trained& t = trained();
  for (const char* f : {"checkpoint.safetensors", "model_best.safetensors", "final_state.safetensors",
                        "metrics.jsonl", "config.yaml", "predictions.png", "results/predictions_val.json"})
    CHECK(fs::exists(fs::path(t.dir) / f));
  const std::string log = slurp(t.dir + "/metrics.jsonl");
  std::istringstream lines(log);
  std::string line, last_eval;
  int evals = 0;
  while (std::getline(lines, line))
    if (line.find("\"type\":\"eval\"") != std::string::npos) {
      ++evals;
      last_eval = line;
    }
  CHECK(evals == 2);
  const double top1 = json_number(last_eval, "top1"), top5 = json_number(last_eval, "top5");
  CHECK(top1 >= 0);
  CHECK(top5 >= top1);
  CHECK(top5 <= 1);
  CHECK(t.run.err.find("40 training images in 10 classes, 20 validation images") != std::string::npos);
  const std::string results = slurp(t.dir + "/results/predictions_val.json");
  CHECK(results.find("\"per_class\"") != std::string::npos);
  CHECK(results.find("\"top5\": [[") != std::string::npos);

  // hrnet-eval on the final weights reports the same top-1
  Run e = run(HR_EVAL_EXE, "--cfg " + t.cfg + " --out " + (kWork / "eval").string() +
                               " --weights " + t.dir + "/final_state.safetensors");
  INFO(e.err);
  REQUIRE(e.code == 0);
  char want[64];
  std::snprintf(want, sizeof want, "top1 %.4f", top1);
  CHECK(e.err.find(want) != std::string::npos);
}

TEST_CASE("an interrupted classification run resumes exactly", "[apps][cls]") {
  const Trained& t = trained();
  const std::string b = (kWork / "run_b").string();
  Run r1 = run(HR_TRAIN_EXE, "--cfg " + t.cfg + " --out " + b + " TRAIN.END_EPOCH 1");
  REQUIRE(r1.code == 0);
  Run r2 = run(HR_TRAIN_EXE, "--cfg " + t.cfg + " --out " + b + " --resume");
  INFO(r2.err);
  REQUIRE(r2.code == 0);
  const NamedTensors x = load_checkpoint(t.dir + "/final_state.safetensors");
  const NamedTensors y = load_checkpoint(b + "/final_state.safetensors");
  REQUIRE(x.size() == y.size());
  for (size_t i = 0; i < x.size(); ++i) {
    INFO(x[i].first);
    REQUIRE(x[i].second.to_vector() == y[i].second.to_vector());
  }
}

TEST_CASE("hrnet-infer --image prints a classifier's top-5 by class name", "[apps][cls]") {
  const Trained& t = trained();
  const std::string img = dataset() + "/val/star/000000.jpg";
  const std::string json = (kWork / "top5.json").string();
  Run r = run(HR_INFER_EXE, "--config " + t.cfg + " --weights " + t.dir +
                                "/final_state.safetensors --image " + img + " --json " + json);
  INFO(r.err);
  REQUIRE(r.code == 0);
  int rows = 0;
  std::istringstream out(r.out);
  for (std::string line; std::getline(out, line);) rows += !line.empty();
  CHECK(rows == 5);
  // names from the config's class folders
  CHECK(std::regex_search(r.out, std::regex("^1  (arrow|circle|crescent|cross|diamond|heart|ring|square|star|triangle) ")));
  CHECK(slurp(json).find("\"probability\"") != std::string::npos);
  // eager and graph agree
  Run e = run(HR_INFER_EXE, "--config " + t.cfg + " --weights " + t.dir +
                                "/final_state.safetensors --image " + img + " --eager");
  REQUIRE(e.code == 0);
  CHECK(e.out.substr(0, e.out.find(' ', 3)) == r.out.substr(0, r.out.find(' ', 3)));
  Run bad = run(HR_INFER_EXE, "--config " + t.cfg + " --weights " + t.dir +
                                  "/final_state.safetensors --image " + img + " --overlay x.png");
  CHECK(bad.code != 0);
  CHECK(bad.err.find("pose") != std::string::npos);
}

TEST_CASE("the classifier's checkpoint initialises a pose model (MODEL.PRETRAINED)", "[apps][cls]") {
  const Trained& t = trained();
  // a pose experiment on the same backbone, pretrained from the classifier
  const std::string pose = std::string(R"(
MODEL:
  NAME: pose_hrnet
  NUM_JOINTS: 17
  IMAGE_SIZE: [64, 96]
  HEATMAP_SIZE: [16, 24]
  INIT_WEIGHTS: true
  PRETRAINED: ')") + t.dir + R"(/final_state.safetensors'
  EXTRA:
    PRETRAINED_LAYERS: [conv1, bn1, conv2, bn2, layer1, transition1, stage2, transition2, stage3, transition3, stage4]
    FINAL_CONV_KERNEL: 1)" + hr::test::tiny_backbone();
  const std::string path = (kWork / "pose.yaml").string();
  std::ofstream(path) << pose;
  tasks::PoseTask task(tasks::load_config(path, {}));
  auto model = task.make_model(0);
  const std::string report = task.load_pretrained(*model);
  INFO(report);
  // pose's last module builds only output 0: the classifier's other fuse layers and its head are
  // reported, not loaded
  CHECK(report.find("not in the model: stage4.0.fuse_layers.1") != std::string::npos);
  std::map<std::string, Tensor> cls;
  for (auto& [k, v] : load_checkpoint(t.dir + "/final_state.safetensors")) cls[k] = v;
  int compared = 0;
  for (auto& [k, v] : model->state_dict()) {
    if (k.rfind("final_layer", 0) == 0 || !cls.count(k)) continue;
    INFO(k);
    REQUIRE(v.to_vector() == cls[k].to_vector());
    ++compared;
  }
  CHECK(compared > 100);
  INFO("compared " << compared);
  CHECK(report.find(": " + std::to_string(compared) + " loaded,") != std::string::npos);
}

TEST_CASE("hrnet-train refuses bad classification settings in one line", "[apps][cls]") {
  const Trained& t = trained();
  struct Bad {
    const char* args;
    const char* says;
  } cases[] = {
      {"ENGINE.CROP_SCALE_MIN 1.5", "ENGINE.CROP_SCALE_MIN must be in (0, 1]"},
      {"MODEL.NUM_CLASSES 12", "the training data has 10 classes but MODEL.NUM_CLASSES is 12"},
      {"MODEL.IMAGE_SIZE [32,48]", "MODEL.IMAGE_SIZE must be a square"},
      {"DATASET.TRAIN_SET nowhere", "nowhere"},
  };
  for (const Bad& b : cases) {
    INFO(b.args);
    const std::string out = (kWork / "bad").string();
    Run r = run(HR_TRAIN_EXE, "--cfg " + t.cfg + " --out " + out + " " + b.args);
    CHECK(r.code != 0);
    CHECK(r.err.find(b.says) != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK_FALSE(fs::exists(fs::path(out) / "checkpoint.safetensors"));
  }
}

TEST_CASE("ENGINE.SYNTHETIC: the built-in set generated once into the cache, then reused",
          "[apps][cls]") {
  const fs::path cache = kWork / "cache";
  hr::test::EnvGuard env("HRNET_SYNTH_DIR", cache.c_str());
  const std::string cfg_path = cls_cfg(dataset());
  // a root given, or SYNTHETIC off: nothing happens
  {
    models::Config c = tasks::load_config(cfg_path, {"ENGINE.SYNTHETIC", "True"});
    CHECK(tasks::prepare_synthetic_data(c).empty());
    CHECK(c.get_str("DATASET.ROOT", "") == dataset());
    models::Config off = tasks::load_config(cfg_path, {"DATASET.ROOT", "''"});
    CHECK(tasks::prepare_synthetic_data(off).empty());
    CHECK_FALSE(fs::exists(cache));
  }
  models::Config c = tasks::load_config(cfg_path, {"DATASET.ROOT", "''", "ENGINE.SYNTHETIC", "True"});
  const std::string dir = tasks::prepare_synthetic_data(c);
  CHECK(dir.rfind(cache.string(), 0) == 0);
  CHECK(c.get_str("DATASET.ROOT", "") == dir);
  const data::ImageSet train = data::scan_image_folder(dir + "/train");
  CHECK(train.classes == data::synthetic_class_names());
  CHECK(train.images.size() == 10 * size_t(data::SynthClsOptions().train_per_class));
  // the second time it is taken from the cache as it is (a changed image stays changed)
  const std::string probe = dir + "/val/star/000000.jpg";
  std::ofstream(probe, std::ios::app) << "x";
  const auto size = fs::file_size(probe);
  models::Config again = tasks::load_config(cfg_path, {"DATASET.ROOT", "''", "ENGINE.SYNTHETIC", "True"});
  CHECK(tasks::prepare_synthetic_data(again) == dir);
  CHECK(fs::file_size(probe) == size);
  fs::remove_all(cache);
}
