// The pose programs end to end, as a user runs them, on a tiny synthetic
// dataset made by hrnet-synth: hrnet-train (outputs, metrics log, exact
// resume), hrnet-eval (same AP as training reported, --results scoring),
// hrnet-infer on an image, and bad input (one line naming the file, non-zero
// exit, no half-written checkpoint).

#include <strings.h>

#include <algorithm>
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "data/coco.h"
#include "data/coco_eval.h"
#include "data/image.h"
#include "app_runner.h"
#include "engine/checkpoint.h"
#include "kernels/cpu/cpu_kernels.h"

using namespace hr;
namespace fs = std::filesystem;

namespace {

using test::Run;
using test::slurp;

const fs::path kWork = fs::absolute("test_pose_apps_work");

Run run(const std::string& exe, const std::string& args) {
  return test::run_program(exe, args, (kWork / "run").string());
}

int lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

// The last line of stderr (progress output comes before an error line).
std::string last_line(const std::string& s) {
  std::string t = s;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  return t.substr(t.rfind('\n') == std::string::npos ? 0 : t.rfind('\n') + 1);
}


std::string write_cfg(const std::string& name, const std::string& root) {
  const std::string path = (kWork / name).string();
  std::ofstream(path) << hr::test::tiny_pose_config(root);
  return path;
}

// One tiny synthetic dataset for the whole file.
const std::string& dataset() {
  static std::string root = [] {
    fs::remove_all(kWork);
    fs::create_directories(kWork);
    const std::string r = (kWork / "synth").string();
    Run g =
        run(HR_SYNTH_EXE, "--out " + r + " --train 12 --val 4 --seed 5 --width 160 --height 120");
    INFO(g.err);
    REQUIRE(g.code == 0);
    return r;
  }();
  return root;
}

std::map<std::string, std::vector<float>> tensors(const std::string& path) {
  std::map<std::string, std::vector<float>> m;
  for (auto& [k, t] : load_checkpoint(path)) m[k] = t.to_vector();
  return m;
}

}  // namespace

// The tiny run every test below looks at, trained once.
struct Trained {
  std::string cfg, dir;
  Run run;
};
const Trained& trained() {
  static Trained t = [] {
    Trained r;
    r.cfg = write_cfg("tiny.yaml", dataset());
    r.dir = (kWork / "run_a").string();
    r.run = run(HR_TRAIN_EXE, "--cfg " + r.cfg + " --out " + r.dir);
    INFO(r.run.err);
    REQUIRE(r.run.code == 0);
    return r;
  }();
  return t;
}

TEST_CASE("hrnet-train writes its outputs and resumes exactly", "[apps][pose]") {
  const Trained& t = trained();
  const std::string& cfg = t.cfg;
  const std::string& a = t.dir;
  const Run& ra = t.run;
  const std::string b = (kWork / "run_b").string();
  for (const char* f : {"checkpoint.safetensors", "model_best.safetensors",
                        "final_state.safetensors", "metrics.jsonl", "config.yaml",
                        "predictions.png", "results/keypoints_val2017_results.json"})
    CHECK(fs::exists(fs::path(a) / f));
  CHECK(ra.out.find("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | "
                    "maxDets= 20 ]") != std::string::npos);

  // metrics.jsonl: one JSON object per line; train lines every iteration, an
  // epoch and an eval line per epoch
  std::istringstream log(slurp(a + "/metrics.jsonl"));
  int train = 0, epoch = 0, eval = 0;
  for (std::string line; std::getline(log, line);) {
    REQUIRE(line.front() == '{');
    REQUIRE(line.back() == '}');
    train += line.find("\"type\":\"train\"") != std::string::npos;
    epoch += line.find("\"type\":\"epoch\"") != std::string::npos;
    eval += line.find("\"type\":\"eval\"") != std::string::npos;
  }
  CHECK(epoch == 2);
  CHECK(eval == 2);
  CHECK(train >= 2);

  // one epoch, then a resumed second one: the same weights as the uninterrupted
  // run
  Run rb1 = run(HR_TRAIN_EXE, "--cfg " + cfg + " --out " + b + " TRAIN.END_EPOCH 1");
  INFO(rb1.err);
  REQUIRE(rb1.code == 0);
  Run rb2 = run(HR_TRAIN_EXE, "--cfg " + cfg + " --out " + b + " --resume");
  INFO(rb2.err);
  REQUIRE(rb2.code == 0);
  CHECK(rb2.err.find("resumed from") != std::string::npos);
  auto wa = tensors(a + "/final_state.safetensors"), wb = tensors(b + "/final_state.safetensors");
  REQUIRE(wa.size() == wb.size());
  size_t differing = 0;
  for (auto& [k, v] : wa) differing += (wb.at(k) != v);
  CHECK(differing == 0);
}

namespace {
using hr::test::json_number;
std::vector<std::string> train_lines(const std::string& dir) {
  return hr::test::metric_lines(dir, "train");
}
}  // namespace

TEST_CASE("hrnet-train: the eager step matches the graph step; the cosine schedule",
          "[apps][pose]") {
  const Trained& t = trained();  // ENGINE.GRAPH defaults to True
  const std::string e = (kWork / "run_eager").string();
  Run r = run(HR_TRAIN_EXE, "--cfg " + t.cfg + " --out " + e + " ENGINE.GRAPH False TRAIN.END_EPOCH 1");
  INFO(r.err);
  REQUIRE(r.code == 0);
  // the first step sees the same weights and batch: the same loss up to float rounding
  const auto lg = train_lines(t.dir), le = train_lines(e);
  REQUIRE(!lg.empty());
  REQUIRE(!le.empty());
  const double a = json_number(lg[0], "loss"), b = json_number(le[0], "loss");
  CHECK(std::fabs(a - b) <= 1e-5 * std::fabs(b));
  CHECK(a > 0);

  // cosine: lr = LR (1 + cos(pi t / T)) / 2 with t in epochs, per iteration (PRINT_FREQ 1)
  const std::string c = (kWork / "run_cosine").string();
  Run rc = run(HR_TRAIN_EXE, "--cfg " + t.cfg + " --out " + c + " ENGINE.LR_SCHEDULE cosine");
  INFO(rc.err);
  REQUIRE(rc.code == 0);
  const auto lc = train_lines(c);
  int64_t per_epoch = 0;
  for (const auto& l : lc) per_epoch += json_number(l, "epoch") == 0;
  REQUIRE(per_epoch > 1);
  REQUIRE(lc.size() == size_t(2 * per_epoch));
  for (const auto& l : lc) {
    const double tt = json_number(l, "epoch") + json_number(l, "iter") / double(per_epoch);
    const double want = 0.001 * (1 + std::cos(3.14159265358979323846 * tt / 2)) / 2;
    INFO(l);
    CHECK(std::fabs(json_number(l, "lr") - want) <= 1e-6 * 0.001 + 1e-4 * want);
  }
  Run bad = run(HR_TRAIN_EXE, "--cfg " + t.cfg + " --out " + c + "_bad ENGINE.LR_SCHEDULE linear");
  CHECK(bad.code != 0);
  CHECK(bad.err.find("LR_SCHEDULE") != std::string::npos);
}

// ENGINE.PRECISION on the CPU: bf16 products in the convolutions where the processor has
// AVX512_BF16 (the first loss then differs from the fp32 run's by the operands' rounding, not
// more), a one-line error where it has not; auto takes bf16 where it can; fp16 is CUDA's only.
TEST_CASE("hrnet-train: ENGINE.PRECISION bf16 and auto on the CPU; fp16 refused", "[apps][pose]") {
  const Trained& t = trained();
  const std::string b = (kWork / "run_bf16").string();
  Run r = run(HR_TRAIN_EXE, "--cfg " + t.cfg + " --out " + b +
                                " ENGINE.PRECISION bf16 TRAIN.END_EPOCH 1");
  INFO(r.err);
  if (hr::cpu::cpu_bf16_supported()) {
    REQUIRE(r.code == 0);
    CHECK(r.err.find("bf16 products") != std::string::npos);
    const auto l32 = train_lines(t.dir), l16 = train_lines(b);
    REQUIRE(!l32.empty());
    REQUIRE(!l16.empty());
    const double a = json_number(l16[0], "loss"), want = json_number(l32[0], "loss");
    CHECK(a != want);
    CHECK(std::fabs(a - want) <= 2e-2 * std::fabs(want));
  } else {
    CHECK(r.code != 0);
    CHECK(lines(r.err) == 1);
    CHECK(r.err.find("AVX512_BF16") != std::string::npos);
  }
  // auto: bf16 products where they are supported (the same run as bf16's), fp32 elsewhere (here:
  // the avx2 kernels forced, which have no bf16 products)
  Run a = run(HR_TRAIN_EXE, "--cfg " + t.cfg + " --out " + b + "_auto" +
                                " ENGINE.PRECISION auto TRAIN.END_EPOCH 1");
  INFO(a.err);
  REQUIRE(a.code == 0);
  const bool bf16 = hr::cpu::cpu_bf16_supported();
  CHECK(a.err.find(bf16 ? "bf16 products" : "fp32 products") != std::string::npos);
  // the note on OMP_WAIT_POLICY=PASSIVE (ctest sets it), and none without it (a2 below)
  const char* wait = std::getenv("OMP_WAIT_POLICY");
  const bool passive = wait && strcasecmp(wait, "passive") == 0;
  CHECK((a.err.find("OMP_WAIT_POLICY=PASSIVE") != std::string::npos) == passive);
  {
    const auto la = train_lines(b + "_auto"), lw = train_lines(bf16 ? b : t.dir);
    REQUIRE(!la.empty());
    REQUIRE(!lw.empty());
    CHECK(json_number(la[0], "loss") == json_number(lw[0], "loss"));
  }
  if (hr::cpu::cpu_isas_supported().find("avx2") != std::string::npos) {
    Run a2 = run("env -u OMP_WAIT_POLICY HR_CPU_ISA=avx2 " + std::string(HR_TRAIN_EXE),
                 "--cfg " + t.cfg + " --out " + b + "_auto_avx2" +
                     " ENGINE.PRECISION auto TRAIN.END_EPOCH 1");
    INFO(a2.err);
    CHECK(a2.code == 0);
    CHECK(a2.err.find("kernels avx2, fp32 products") != std::string::npos);
    CHECK(a2.err.find("OMP_WAIT_POLICY") == std::string::npos);
  }
  Run h = run(HR_TRAIN_EXE, "--cfg " + t.cfg + " --out " + b + "_fp16 ENGINE.PRECISION fp16");
  CHECK(h.code != 0);
  CHECK(lines(h.err) == 1);
  CHECK(h.err.find("fp16") != std::string::npos);
  CHECK(!fs::exists(b + "_fp16/final_state.safetensors"));
}

// The trainer reads the losses every PRINT_FREQ iterations (on CUDA that is its one wait for the
// GPU): the train lines thin out, and what they and the epoch lines say stays the same.
TEST_CASE("hrnet-train: PRINT_FREQ thins the train lines, the losses stay the same",
          "[apps][pose]") {
  const Trained& t = trained();  // PRINT_FREQ 1
  const std::string d = (kWork / "run_print3").string();
  Run r = run(HR_TRAIN_EXE, "--cfg " + t.cfg + " --out " + d + " PRINT_FREQ 3");
  INFO(r.err);
  REQUIRE(r.code == 0);
  const auto every = train_lines(t.dir), thinned = train_lines(d);
  REQUIRE(every.size() > 4);
  size_t matched = 0;
  for (const auto& l : thinned) {
    INFO(l);
    const int64_t iter = int64_t(json_number(l, "iter"));
    CHECK(iter % 3 == 0);
    for (const auto& e : every)
      if (json_number(e, "step") == json_number(l, "step")) {
        ++matched;
        for (const char* k : {"loss", "avg_loss", "lr"}) {
          INFO(k);
          CHECK(json_number(l, k) == Approx(json_number(e, k)).epsilon(1e-5));
        }
      }
  }
  CHECK(matched == thinned.size());
  CHECK(thinned.size() < every.size());
  const std::vector<double> le = hr::test::metric_values(t.dir, "epoch", "loss"),
                            lt = hr::test::metric_values(d, "epoch", "loss");
  REQUIRE(le.size() == 2);
  REQUIRE(lt.size() == 2);
  for (size_t i = 0; i < le.size(); ++i) CHECK(lt[i] == Approx(le[i]).epsilon(1e-5));
}

// The input as the loader's raw bytes (the CUDA trainer's upload), normalised by the step
// (HR_RAW_INPUT=1, here on the CPU): the same run, loss for loss.
TEST_CASE("hrnet-train: a raw input normalised by the step trains bit for bit the same",
          "[apps][pose]") {
  const Trained& t = trained();  // PRINT_FREQ 1
  const std::string d = (kWork / "run_raw").string();
  Run r = run(std::string("HR_RAW_INPUT=1 ") + HR_TRAIN_EXE, "--cfg " + t.cfg + " --out " + d);
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(r.err.find("as its bytes (u8)") != std::string::npos);
  const auto every = train_lines(t.dir), raw = train_lines(d);
  REQUIRE(every.size() > 4);
  REQUIRE(raw.size() == every.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    INFO(raw[i]);
    CHECK(json_number(raw[i], "step") == json_number(every[i], "step"));
    CHECK(json_number(raw[i], "loss") == json_number(every[i], "loss"));
  }
}

TEST_CASE(
    "hrnet-eval reproduces the AP hrnet-train reported, and --results "
    "scores the file",
    "[apps][pose]") {
  const Trained& t = trained();
  const std::string& cfg = t.cfg;
  const std::string& a = t.dir;
  const Run& ra = t.run;
  Run e = run(HR_EVAL_EXE, "--cfg " + cfg + " --out " + (kWork / "eval").string() + " --weights " +
                               a + "/final_state.safetensors");
  INFO(e.err);
  REQUIRE(e.code == 0);
  // the last table hrnet-train printed is the final evaluation: same weights,
  // same numbers
  CHECK(e.out == ra.out.substr(0, e.out.size()));
  Run s = run(HR_EVAL_EXE, "--cfg " + cfg + " --results " + (kWork / "eval").string() +
                               "/results/keypoints_val2017_results.json");
  INFO(s.err);
  REQUIRE(s.code == 0);
  CHECK(s.out == e.out);
  // the training checkpoint (weights + optimizer state) is accepted as weights
  // too
  Run c = run(HR_EVAL_EXE, "--cfg " + cfg + " --out " + (kWork / "eval2").string() + " --weights " +
                               a + "/checkpoint.safetensors");
  INFO(c.err);
  REQUIRE(c.code == 0);
  CHECK(c.out == e.out);
}

TEST_CASE("hrnet-infer finds the people of an image", "[apps][pose]") {
  const Trained& t = trained();
  const std::string& cfg = t.cfg;
  const std::string& a = t.dir;
  const std::string root = dataset();
  const data::CocoKeypoints val =
      data::load_coco_keypoints(root + "/annotations/person_keypoints_val2017.json");
  const std::string img = root + "/images/val2017/" + val.images[0].file_name;
  const std::string js = (kWork / "infer.json").string(), png = (kWork / "infer.png").string();
  Run r = run(HR_INFER_EXE, "--config " + cfg + " --weights " + a +
                                "/final_state.safetensors --image " + img + " --box 10,5,60,100" +
                                " --box 50,20,40,80 --json " + js + " --overlay " + png);
  INFO(r.err);
  REQUIRE(r.code == 0);
  const std::string j = slurp(js);
  CHECK(j.find("\"people\"") != std::string::npos);
  CHECK(std::count(j.begin(), j.end(), '{') == 3);  // the object and two people
  const data::Image o = data::read_image(png);
  CHECK(o.width == val.images[0].width);
  CHECK(o.height == val.images[0].height);
}

TEST_CASE(
    "hrnet-train refuses bad input with one line and leaves no "
    "half-written output",
    "[apps][pose]") {
  const std::string root = dataset();
  const std::string out = (kWork / "bad_out").string();

  SECTION("a missing annotation file is named") {
    const std::string cfg = write_cfg("missing.yaml", (kWork / "nowhere").string());
    Run r = run(HR_TRAIN_EXE, "--cfg " + cfg + " --out " + out);
    CHECK(r.code != 0);
    CHECK(last_line(r.err).find("nowhere/annotations/person_keypoints_train2017.json") !=
          std::string::npos);
  }
  SECTION("a truncated annotation file is named") {
    const fs::path bad = kWork / "truncated";
    fs::create_directories(bad / "annotations");
    fs::create_directories(bad / "images" / "train2017");
    const std::string full = slurp(root + "/annotations/person_keypoints_train2017.json");
    std::ofstream(bad / "annotations" / "person_keypoints_train2017.json")
        << full.substr(0, full.size() / 2);
    Run r = run(HR_TRAIN_EXE, "--cfg " + write_cfg("trunc.yaml", bad.string()) + " --out " + out);
    CHECK(r.code != 0);
    CHECK(lines(r.err) == 1);
    CHECK(r.err.find("person_keypoints_train2017.json") != std::string::npos);
  }
  SECTION("a misspelt config key is named") {
    const std::string cfg = write_cfg("typo.yaml", root);
    Run r = run(HR_TRAIN_EXE, "--cfg " + cfg + " --out " + out + " TRAIN.END_EPOCHS 1");
    CHECK(r.code != 0);
    CHECK(lines(r.err) == 1);
    CHECK(r.err.find("TRAIN.END_EPOCHS") != std::string::npos);
  }
  SECTION("an unwritable output directory fails before any work") {
    const std::string cfg = write_cfg("unwritable.yaml", root);
    Run r = run(HR_TRAIN_EXE, "--cfg " + cfg + " --out /proc/hrnet-cannot-write-here");
    CHECK(r.code != 0);
    CHECK(lines(r.err) == 1);
    CHECK(r.err.find("/proc/hrnet-cannot-write-here") != std::string::npos);
  }
  SECTION(
      "a corrupt image is skipped and counted, or fatal with "
      "ENGINE.SKIP_CORRUPT false") {
    const fs::path bad = kWork / "corrupt";
    fs::remove_all(bad);
    fs::copy(root, bad, fs::copy_options::recursive);
    const data::CocoKeypoints train =
        data::load_coco_keypoints(root + "/annotations/person_keypoints_train2017.json");
    const std::string victim = train.images[0].file_name;
    std::ofstream(bad / "images" / "train2017" / victim, std::ios::trunc) << "not a jpeg";
    const std::string cfg = write_cfg("corrupt.yaml", bad.string());
    const std::string o1 = (kWork / "corrupt_skip").string(),
                      o2 = (kWork / "corrupt_fatal").string();
    Run skip = run(HR_TRAIN_EXE, "--cfg " + cfg + " --out " + o1 + " TRAIN.END_EPOCH 1");
    INFO(skip.err);
    REQUIRE(skip.code == 0);
    CHECK(skip.err.find(victim) != std::string::npos);
    const std::string log = slurp(o1 + "/metrics.jsonl");
    // the epoch line counts them: one per person of the unreadable image
    const size_t ep = log.find("\"type\":\"epoch\"");
    REQUIRE(ep != std::string::npos);
    const size_t sk = log.find("\"skipped\":", ep);
    REQUIRE(sk != std::string::npos);
    CHECK(std::atoi(log.c_str() + sk + 10) == static_cast<int>(train.anns_of_image[0].size()));
    Run fatal = run(HR_TRAIN_EXE, "--cfg " + cfg + " --out " + o2 +
                                      " TRAIN.END_EPOCH 1 ENGINE.SKIP_CORRUPT false");
    CHECK(fatal.code != 0);
    CHECK(last_line(fatal.err).find(victim) != std::string::npos);
    CHECK_FALSE(fs::exists(o2 + "/checkpoint.safetensors"));
    for (auto& e : fs::directory_iterator(o2)) CHECK(e.path().extension() != ".tmp");
  }
  SECTION("an empty split is refused") {
    const fs::path bad = kWork / "empty";
    fs::remove_all(bad);
    fs::create_directories(bad / "annotations");
    fs::create_directories(bad / "images" / "train2017");
    data::CocoKeypoints c =
        data::load_coco_keypoints(root + "/annotations/person_keypoints_train2017.json");
    c.annotations.clear();
    c.index();
    data::save_coco_keypoints(c,
                              (bad / "annotations" / "person_keypoints_train2017.json").string());
    Run r = run(HR_TRAIN_EXE, "--cfg " + write_cfg("empty.yaml", bad.string()) + " --out " + out);
    CHECK(r.code != 0);
    CHECK(last_line(r.err).find("empty split") != std::string::npos);
  }
}
