// The segmentation programs as a user runs them, on a tiny synthetic Cityscapes-layout set
// (hrnet-synth --task seg): hrnet-train reads the official .lst files and writes its outputs,
// metrics with mIoU and per-class IoU, the results JSON and the picture; hrnet-eval reproduces the
// mIoU; hrnet-infer --image writes the label map and the overlay; a missing label file is one
// line naming it; the poly rate reaches the optimizer; ENGINE.SYNTHETIC makes the set.
#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>

#include "app_runner.h"
#include "data/image.h"
#include "data/seg_classes.h"
#include "data/synth_seg.h"
#include "engine/checkpoint.h"
#include "tasks/segmentation.h"
#include "tasks/task.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace hr;
using hr::test::Run;
using hr::test::slurp;

namespace {

const fs::path kWork = fs::temp_directory_path() / ("hr_test_seg_apps_" + std::to_string(::getpid()));

Run run(const std::string& exe, const std::string& args) {
  return hr::test::run_program(exe, args, (kWork / "cmd").string());
}

std::string seg_cfg(const std::string& root, const std::string& extra = "") {
  const std::string text = hr::test::tiny_seg_config(root) + extra;
  const std::string path = (kWork / "seg.yaml").string();
  std::ofstream(path) << text;
  return path;
}

const std::string& dataset() {
  static std::string root = [] {
    fs::remove_all(kWork);
    fs::create_directories(kWork);
    const std::string r = (kWork / "streets").string();
    Run g = run(HR_SYNTH_EXE, "--out " + r + " --task seg --train 16 --val 6 --size 128x64 --seed 3");
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
    r.cfg = seg_cfg(dataset());
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

TEST_CASE("hrnet-train trains a seg model on the official lists and writes what it says",
          "[apps][seg]") {
  const Trained& t = trained();
  for (const char* f : {"checkpoint.safetensors", "model_best.safetensors", "final_state.safetensors",
                        "metrics.jsonl", "config.yaml", "predictions.png", "results/seg_val.json"})
    CHECK(fs::exists(fs::path(t.dir) / f));
  CHECK(t.run.err.find("16 training images (crops 96x64), 6 validation images, 19 classes, "
                       "official class weights") != std::string::npos);
  std::istringstream lines(slurp(t.dir + "/metrics.jsonl"));
  std::string line, last_eval;
  std::vector<double> lrs;
  while (std::getline(lines, line)) {
    if (line.find("\"type\":\"eval\"") != std::string::npos) last_eval = line;
    if (line.find("\"type\":\"train\"") != std::string::npos) lrs.push_back(json_number(line, "lr"));
  }
  REQUIRE_FALSE(last_eval.empty());
  const double miou = json_number(last_eval, "mIoU");
  CHECK(miou > 0);
  CHECK(miou <= 1);
  CHECK(json_number(last_eval, "pixel_acc") >= miou);
  CHECK(json_number(last_eval, "IoU/road") >= 0);
  // poly: 4 steps an epoch, 8 in all; step t runs with 0.05 (1 - (t-1)/8)^0.9
  REQUIRE(lrs.size() == 8);
  for (size_t i = 0; i < lrs.size(); ++i)
    CHECK(lrs[i] == Approx(0.05 * std::pow(1.0 - std::max<int>(int(i) - 1, 0) / 8.0, 0.9)).epsilon(1e-4));
  const std::string results = slurp(t.dir + "/results/seg_val.json");
  CHECK(results.find("\"per_class_iou\"") != std::string::npos);
  CHECK(results.find("\"traffic light\"") != std::string::npos);
  CHECK(results.find("\"confusion_matrix\"") != std::string::npos);
  const data::Image pic = data::read_image(t.dir + "/predictions.png");
  CHECK(pic.width == 3 * 256);

  // hrnet-eval on the final weights reports the same mIoU
  Run e = run(HR_EVAL_EXE, "--cfg " + t.cfg + " --out " + (kWork / "eval").string() +
                               " --weights " + t.dir + "/final_state.safetensors");
  INFO(e.err);
  REQUIRE(e.code == 0);
  char want[64];
  std::snprintf(want, sizeof want, "mIoU %.4f", miou);
  CHECK(e.err.find(want) != std::string::npos);
  CHECK(e.out.find("traffic sign") != std::string::npos);
}

TEST_CASE("hrnet-infer --image writes a seg model's label map and overlay", "[apps][seg]") {
  const Trained& t = trained();
  const auto paths = data::synthetic_street_paths(1, 0, 6);
  const std::string img = dataset() + "/" + paths[0];
  const std::string map = (kWork / "map.png").string(), over = (kWork / "over.png").string(),
                    json = (kWork / "classes.json").string();
  Run r = run(HR_INFER_EXE, "--config " + t.cfg + " --weights " + t.dir +
                                "/final_state.safetensors --image " + img + " --label-map " + map +
                                " --overlay " + over + " --json " + json);
  INFO(r.err);
  REQUIRE(r.code == 0);
  const data::Image m = data::read_image(map), o = data::read_image(over), src = data::read_image(img);
  CHECK(m.width == src.width);
  CHECK(m.height == src.height);
  CHECK(o.width == src.width);
  // every pixel of the label map is one of the Cityscapes colours
  const auto table = data::seg_class_table("cityscapes", 19);
  for (size_t p = 0; p < m.pixels.size(); p += 3 * 97) {
    const std::array<uint8_t, 3> c{m.pixels[p], m.pixels[p + 1], m.pixels[p + 2]};
    CHECK(std::find(table.colours.begin(), table.colours.end(), c) != table.colours.end());
  }
  CHECK(slurp(json).find("\"share\"") != std::string::npos);
  // eager and graph print the same class shares
  Run e = run(HR_INFER_EXE, "--config " + t.cfg + " --weights " + t.dir +
                                "/final_state.safetensors --image " + img + " --json " + json + " --eager");
  REQUIRE(e.code == 0);
  CHECK(e.out == r.out);
  Run bad = run(HR_INFER_EXE, "--config " + t.cfg + " --weights " + t.dir +
                                  "/final_state.safetensors --image " + img + " --classes x.txt --json " + json);
  CHECK(bad.code != 0);
  CHECK(bad.err.find("seg models") != std::string::npos);
}

TEST_CASE("an OCR model with OHEM trains, and an interrupted run resumes exactly", "[apps][seg]") {
  // the OCR head (two outputs, LOSS.BALANCE_WEIGHTS, OHEM on the last) through the trainer's
  // graph; the resumed run must also continue the dropout generator where it stopped
  std::string cfg = slurp(seg_cfg(dataset()));
  cfg.replace(cfg.find("NAME: seg_hrnet"), 15,
              "NAME: seg_hrnet_ocr\n  NUM_OUTPUTS: 2\n  OCR: {MID_CHANNELS: 16, KEY_CHANNELS: 8, DROPOUT: 0.3}");
  cfg.replace(cfg.find("LOSS: {USE_OHEM: false, OHEMTHRES: 0.9, OHEMKEEP: 131072}"), 57,
              "LOSS: {USE_OHEM: true, OHEMTHRES: 0.7, OHEMKEEP: 2000, BALANCE_WEIGHTS: [0.4, 1]}");
  const std::string path = (kWork / "ocr.yaml").string();
  std::ofstream(path) << cfg;
  const std::string a = (kWork / "ocr_a").string(), b = (kWork / "ocr_b").string();
  Run full = run(HR_TRAIN_EXE, "--cfg " + path + " --out " + a + " TRAIN.END_EPOCH 3");
  INFO(full.err);
  REQUIRE(full.code == 0);
  CHECK(full.err.find("OHEM (thres 0.7, keep 2000)") != std::string::npos);
  // the same run killed (SIGKILL) once its first checkpoint is on disk: a shorter END_EPOCH
  // would change the poly schedule, so the interruption is a real one
  const std::string pidfile = (kWork / "ocr_b.pid").string();
  REQUIRE(std::system((std::string(HR_TRAIN_EXE) + " --cfg " + path + " --out " + b +
                       " TRAIN.END_EPOCH 3 >/dev/null 2>&1 & echo $! >" + pidfile).c_str()) == 0);
  const pid_t pid = static_cast<pid_t>(std::stol(slurp(pidfile)));
  for (int i = 0; i < 6000 && !fs::exists(b + "/checkpoint.safetensors") && ::kill(pid, 0) == 0; ++i)
    ::usleep(10000);
  ::kill(pid, SIGKILL);
  for (int i = 0; i < 500 && ::kill(pid, 0) == 0; ++i) ::usleep(10000);
  REQUIRE(fs::exists(b + "/checkpoint.safetensors"));
  Run r2 = run(HR_TRAIN_EXE, "--cfg " + path + " --out " + b + " TRAIN.END_EPOCH 3 --resume");
  INFO(r2.err);
  REQUIRE(r2.code == 0);
  const NamedTensors x = load_checkpoint(a + "/final_state.safetensors");
  const NamedTensors y = load_checkpoint(b + "/final_state.safetensors");
  REQUIRE(x.size() == y.size());
  bool has_ocr = false;
  for (size_t i = 0; i < x.size(); ++i) {
    INFO(x[i].first);
    has_ocr |= x[i].first.rfind("ocr_distri_head.", 0) == 0;
    REQUIRE(x[i].second.to_vector() == y[i].second.to_vector());
  }
  CHECK(has_ocr);
}

TEST_CASE("a missing label file is one line naming it", "[apps][seg]") {
  const std::string root = (kWork / "broken").string();
  fs::remove_all(root);
  fs::copy(dataset(), root, fs::copy_options::recursive);
  const auto paths = data::synthetic_street_paths(0, 2, 16);
  fs::remove(root + "/" + paths[1]);
  const std::string out = (kWork / "broken_run").string();
  Run r = run(HR_TRAIN_EXE, "--cfg " + seg_cfg(root) + " --out " + out +
                                " ENGINE.SKIP_CORRUPT False TRAIN.END_EPOCH 1");
  CHECK(r.code != 0);
  CHECK(r.err.find(fs::path(paths[1]).filename().string()) != std::string::npos);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') >= 1);
  CHECK_FALSE(fs::exists(fs::path(out) / "checkpoint.safetensors"));
  // skipping: the run goes on and says how many it left out
  Run s = run(HR_TRAIN_EXE, "--cfg " + seg_cfg(root) + " --out " + out + "_skip TRAIN.END_EPOCH 1");
  INFO(s.err);
  CHECK(s.code == 0);
  CHECK(s.err.find("skipped") != std::string::npos);
}

TEST_CASE("ENGINE.SYNTHETIC makes the seg set in the Cityscapes layout", "[apps][seg]") {
  const fs::path cache = kWork / "cache";
  hr::test::EnvGuard env("HRNET_SYNTH_DIR", cache.c_str());
  models::Config c = tasks::load_config(seg_cfg(""), {"ENGINE.SYNTHETIC", "True"});
  const std::string dir = tasks::prepare_synthetic_data(c);
  CHECK(dir.rfind(cache.string(), 0) == 0);
  CHECK(c.get_str("DATASET.ROOT", "") == dir);
  CHECK(fs::exists(dir + "/list/cityscapes/val.lst"));
  CHECK(fs::exists(dir + "/leftImg8bit/train"));
  CHECK(fs::exists(dir + "/gtFine/val"));
  fs::remove_all(cache);
}
