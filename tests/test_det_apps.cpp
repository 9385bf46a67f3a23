// The detection programs as a user runs them, on a tiny synthetic COCO-instances set
// (hrnet-synth --task det) and an HRNet-FCOS file in the official format: hrnet-train writes its
// outputs and metrics with the 12 box AP numbers; hrnet-eval reproduces the AP from the final
// weights, and --results scores the results file it wrote, which also reads as a person-detection
// file for pose (TEST.COCO_BBOX_FILE): a person detector trained on a COCO keypoints set feeds the
// pose evaluation every box it found; hrnet-infer --image lists and draws the objects; a pose
// model with --detector poses exactly the people the detector finds; bad input is one line.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "app_runner.h"
#include "data/coco.h"
#include "data/image.h"
#include "engine/checkpoint.h"
#include "models/config.h"
#include "models/hrnet.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace hr;
using hr::test::json_number;
using hr::test::Run;
using hr::test::slurp;

namespace {

const fs::path kWork = fs::temp_directory_path() / ("hr_test_det_apps_" + std::to_string(::getpid()));

Run run(const std::string& exe, const std::string& args) {
  return hr::test::run_program(exe, args, (kWork / "cmd").string());
}

const std::string& dataset() {
  static std::string root = [] {
    fs::remove_all(kWork);
    fs::create_directories(kWork);
    const std::string r = (kWork / "scenes").string();
    Run g = run(HR_SYNTH_EXE, "--out " + r + " --task det --train 24 --val 6 --seed 3 --quiet");
    INFO(g.err);
    REQUIRE(g.code == 0);
    return r;
  }();
  return root;
}

// A small HRNet-FCOS in the official format (maskrcnn-benchmark keys; ENGINE.* is ours)
std::string det_cfg(const std::string& name, const std::string& inference_th = "0.05",
                    const std::string& extra = "") {
  const std::string text = hr::test::tiny_det_config(dataset(), inference_th) + extra;
  const std::string path = (kWork / name).string();
  std::ofstream(path) << text;
  return path;
}

struct Trained {
  std::string cfg, dir;
  Run run;
};
const Trained& trained() {
  static Trained t = [] {
    Trained r;
    r.cfg = det_cfg("det.yaml");
    r.dir = (kWork / "run").string();
    r.run = run(HR_TRAIN_EXE, "--cfg " + r.cfg + " --out " + r.dir);
    INFO(r.run.err);
    REQUIRE(r.run.code == 0);
    return r;
  }();
  return t;
}

}  // namespace

TEST_CASE("hrnet-train trains HRNet-FCOS from an official-format file and writes what it says",
          "[apps][det]") {
  const Trained& t = trained();
  for (const char* f : {"checkpoint.safetensors", "model_best.safetensors",
                        "final_state.safetensors", "metrics.jsonl", "config.yaml",
                        "results/bbox_coco_2017_val_results.json", "results/bbox_coco_2017_val.txt"})
    CHECK(fs::exists(fs::path(t.dir) / f));
  CHECK(t.run.err.find("training images (320x256 canvas), 6 test images (coco_2017_val), "
                       "5 categories") != std::string::npos);
  std::istringstream lines(slurp(t.dir + "/metrics.jsonl"));
  std::string line, last_eval;
  std::vector<double> lrs;
  while (std::getline(lines, line)) {
    if (line.find("\"type\":\"eval\"") != std::string::npos) last_eval = line;
    if (line.find("\"type\":\"train\"") != std::string::npos) lrs.push_back(json_number(line, "lr"));
  }
  REQUIRE_FALSE(last_eval.empty());
  const double ap = json_number(last_eval, "AP");
  CHECK(ap >= 0);
  CHECK(ap <= 1);
  CHECK(json_number(last_eval, "AP50") >= ap);
  CHECK(json_number(last_eval, "AR100") >= 0);
  // SOLVER.MAX_ITER steps exactly, at WarmupMultiStepLR's rates (linear warm-up over 4
  // iterations from 1/3, x0.1 from iteration 6), step t at the value of t + 1
  REQUIRE(lrs.size() == 10);
  for (size_t i = 0; i < lrs.size(); ++i) {
    const double e = double(i + 1);
    const double warm = e < 4 ? 1.0 / 3 * (1 - e / 4) + e / 4 : 1.0;
    CHECK(lrs[i] == Approx(0.01 * warm * (e >= 6 ? 0.1 : 1.0)).epsilon(1e-4));
  }

  // hrnet-eval on the final weights reports the same AP, and --results scores the file back
  const std::string eval_dir = (kWork / "eval").string();
  Run e = run(HR_EVAL_EXE, "--cfg " + t.cfg + " --out " + eval_dir + " --weights " + t.dir +
                               "/final_state.safetensors");
  INFO(e.err);
  REQUIRE(e.code == 0);
  CHECK(e.out.find("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]") !=
        std::string::npos);
  char want[64];
  std::snprintf(want, sizeof want, "AP %.4f", ap);
  CHECK(e.err.find(want) != std::string::npos);
  const std::string results = eval_dir + "/results/bbox_coco_2017_val_results.json";
  Run s = run(HR_EVAL_EXE, "--cfg " + t.cfg + " --results " + results);
  INFO(s.err);
  REQUIRE(s.code == 0);
  CHECK(s.out == slurp(eval_dir + "/results/bbox_coco_2017_val.txt"));
  // the results file is a COCO detection file: pose's TEST.COCO_BBOX_FILE takes its persons
  const std::string text = slurp(results);
  size_t persons = 0;
  for (size_t at = text.find("\"category_id\":1,"); at != std::string::npos;
       at = text.find("\"category_id\":1,", at + 1))
    ++persons;
  CHECK(data::load_detections(results).size() == persons);
}

// The input as the loader's raw bytes (the CUDA trainer's upload: the canvas' BGR bytes and each
// image's size), normalised by the step (HR_RAW_INPUT=1, here on the CPU): the same steps.
TEST_CASE("hrnet-train HRNet-FCOS on a raw input trains loss for loss the same", "[apps][det]") {
  const Trained& t = trained();
  const std::string d = (kWork / "run_raw").string();
  Run r = run(std::string("HR_RAW_INPUT=1 ") + HR_TRAIN_EXE, "--cfg " + t.cfg + " --out " + d);
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(r.err.find("as its bytes (u8)") != std::string::npos);
  const std::vector<double> plain = hr::test::metric_values(t.dir, "train", "loss"),
                            raw = hr::test::metric_values(d, "train", "loss");
  REQUIRE(plain.size() == 10);
  CHECK(raw == plain);
}

TEST_CASE("hrnet-infer --image lists and draws a det model's objects", "[apps][det]") {
  const Trained& t = trained();
  const std::string img = dataset() + "/val2017/000000000025.jpg";
  const std::string json = (kWork / "objects.json").string(), png = (kWork / "objects.png").string();
  Run r = run(HR_INFER_EXE, "--config " + t.cfg + " --weights " + t.dir +
                                "/final_state.safetensors --image " + img + " --box-thre 0.01 " +
                                "--json " + json + " --overlay " + png);
  INFO(r.err);
  REQUIRE(r.code == 0);
  const std::string j = slurp(json);
  CHECK(j.find("\"detections\": [") != std::string::npos);
  const data::Image in = data::read_image(img), out = data::read_image(png);
  CHECK(out.width == in.width);
  CHECK(out.height == in.height);
  // one printed line per detection, each with a category of the annotation file
  size_t listed = 0, named = 0;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line); ++listed)
    for (const char* c : {"person", "car", "stop sign", "sports ball", "kite"})
      named += line.rfind(c, 0) == 0;
  CHECK(listed == named);
  size_t in_json = 0;
  for (size_t at = j.find("\"bbox\""); at != std::string::npos; at = j.find("\"bbox\"", at + 1)) ++in_json;
  CHECK(in_json == listed);
  if (listed > 0) CHECK(out.pixels != in.pixels);  // boxes drawn

  // errors: one line, non-zero
  Run bad = run(HR_INFER_EXE, "--config " + t.cfg + " --weights " + t.dir +
                                  "/final_state.safetensors --image " + img + " --box 1,2,3,4 " +
                                  "--json " + json);
  CHECK(bad.code != 0);
  CHECK(bad.err.find("do not go with det models") != std::string::npos);
}

TEST_CASE("hrnet-infer: a pose model finds its people with --detector", "[apps][det][pose]") {
  const Trained& t = trained();
  const std::string img = dataset() + "/val2017/000000000025.jpg";
  // the briefly trained detector made to see people: its person logit's bias raised
  NamedTensors w = load_checkpoint(t.dir + "/final_state.safetensors");
  bool raised = false;
  for (auto& [k, v] : w)
    if (k == "rpn.head.cls_logits.bias") {
      v.data<float>()[0] = 3.f;  // label 1: person
      raised = true;
    }
  REQUIRE(raised);
  const std::string det_w = (kWork / "det_person.safetensors").string();
  save_safetensors(det_w, w);
  const std::string all = det_cfg("det_all.yaml");
  Run d = run(HR_INFER_EXE, "--config " + all + " --weights " + det_w + " --image " + img +
                                " --box-thre 0.3 --json " + (kWork / "d.json").string());
  INFO(d.err);
  REQUIRE(d.code == 0);
  std::vector<std::string> person_boxes;
  const std::string dj = slurp((kWork / "d.json").string());
  const std::regex row("\\{\"bbox\": \\[([^\\]]*)\\], \"score\": [^,]*, \"category_id\": 1,");
  for (auto it = std::sregex_iterator(dj.begin(), dj.end(), row); it != std::sregex_iterator(); ++it)
    person_boxes.push_back((*it)[1]);
  REQUIRE(!person_boxes.empty());

  // a pose model (initial weights: the pipeline is what is tested)
  const std::string pose_cfg = (kWork / "pose.yaml").string();
  std::ofstream(pose_cfg) << hr::test::tiny_pose_config(dataset());
  models::HRNet pose(models::spec_from_config(models::Config::load(pose_cfg)), 7);
  const std::string pose_w = (kWork / "pose.safetensors").string();
  save_safetensors(pose_w, pose.state_dict());
  const std::string out = (kWork / "people.json").string();
  Run p = run(HR_INFER_EXE, "--config " + pose_cfg + " --weights " + pose_w + " --image " + img +
                                " --detector " + all + " --detector-weights " + det_w +
                                " --box-thre 0.3 --json " + out);
  INFO(p.err);
  REQUIRE(p.code == 0);
  const std::string pj = slurp(out);
  std::vector<std::string> posed;
  const std::regex prow("\\{\"bbox\": \\[([^\\]]*)\\], \"box_score\"");
  for (auto it = std::sregex_iterator(pj.begin(), pj.end(), prow); it != std::sregex_iterator(); ++it)
    posed.push_back((*it)[1]);
  CHECK(posed == person_boxes);

  Run half = run(HR_INFER_EXE, "--config " + pose_cfg + " --weights " + pose_w + " --image " +
                                   img + " --detector " + t.cfg + " --json " + out);
  CHECK(half.code != 0);
  CHECK(half.err.find("--detector and --detector-weights go together") != std::string::npos);
}

TEST_CASE("pose evaluated on our detector's person boxes (TEST.COCO_BBOX_FILE)", "[apps][det][pose]") {
  // a COCO keypoints set (hrnet-synth, pose), seen as COCO instances of one category by the
  // detector: the same images and image ids, as COCO's instances and person_keypoints files are
  dataset();  // makes kWork
  const fs::path people = kWork / "people";
  Run g = run(HR_SYNTH_EXE, "--out " + people.string() + " --train 16 --val 4 --seed 9 --quiet");
  INFO(g.err);
  REQUIRE(g.code == 0);
  const fs::path as_det = kWork / "people_det";
  fs::create_directories(as_det / "annotations");
  for (const char* split : {"train2017", "val2017"}) {
    fs::create_directory_symlink(people / "images" / split, as_det / split);
    fs::create_symlink(people / "annotations" / (std::string("person_keypoints_") + split + ".json"),
                       as_det / "annotations" / (std::string("instances_") + split + ".json"));
  }
  const std::string cfg = (kWork / "person_det.yaml").string();
  {
    std::string text = slurp(det_cfg("person_det.yaml", "0.0"));
    text = std::regex_replace(text, std::regex("NUM_CLASSES: 6"), "NUM_CLASSES: 2");
    text = std::regex_replace(text, std::regex("ROOT: '[^']*'"), "ROOT: '" + as_det.string() + "'");
    text = std::regex_replace(text, std::regex("MIN_SIZE_TRAIN: \\(224, 256\\)"), "MIN_SIZE_TRAIN: (240,)");
    text = std::regex_replace(text, std::regex("MIN_SIZE_TEST: 256"), "MIN_SIZE_TEST: 240");
    std::ofstream(cfg) << text;
  }
  const std::string dir = (kWork / "person_run").string();
  Run t = run(HR_TRAIN_EXE, "--cfg " + cfg + " --out " + dir + " SOLVER.MAX_ITER 4");
  INFO(t.err);
  REQUIRE(t.code == 0);
  const std::string dets = dir + "/results/bbox_coco_2017_val_results.json";
  const size_t boxes = data::load_detections(dets).size();
  REQUIRE(boxes > 0);

  // the pose evaluation takes them in place of the official person-detection file
  const std::string pose_cfg = (kWork / "pose_on_dets.yaml").string();
  std::ofstream(pose_cfg) << hr::test::tiny_pose_config(people.string());
  models::HRNet pose(models::spec_from_config(models::Config::load(pose_cfg)), 7);
  const std::string pose_w = (kWork / "pose_on_dets.safetensors").string();
  save_safetensors(pose_w, pose.state_dict());
  Run e = run(HR_EVAL_EXE, "--cfg " + pose_cfg + " --weights " + pose_w + " --out " +
                               (kWork / "pose_eval").string() + " TEST.USE_GT_BBOX False " +
                               "TEST.COCO_BBOX_FILE " + dets + " TEST.IMAGE_THRE 0.0");
  INFO(e.err);
  REQUIRE(e.code == 0);
  CHECK(e.err.find("on " + std::to_string(boxes) + " samples") != std::string::npos);
}
