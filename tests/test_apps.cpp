// The programs as a user runs them: hrnet-infer's summary figures, its tensor-in / tensor-out
// inference against the same model run in-process, and bad input (one line on stderr, non-zero
// exit, no output file left behind).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "engine/checkpoint.h"
#include "models/config.h"
#include "models/hrnet.h"
#include "app_runner.h"
#include "test_util.h"

using namespace hr;
using namespace hr::models;

namespace {

bool exists(const std::string& path) { return std::ifstream(path).good(); }

using test::Run;

Run infer(const std::string& args) { return test::run_program(HR_INFER_EXE, args, "test_apps"); }

const std::string kW32 = std::string(HR_TEST_DATA_DIR) + "/model_configs/w32_256x192_adam_lr1e-3.yaml";

}  // namespace

TEST_CASE("hrnet-infer --summary prints the paper's figures", "[apps]") {
  Run r = infer("--config " + kW32 + " --summary");
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("28,536,113") != std::string::npos);
  CHECK(r.out.find("7.12") != std::string::npos);
  CHECK(r.out.find("[1, 17, 64, 48]") != std::string::npos);
  // the static graphs' plans, as the library computes them for the same model and input
  HRNet model(spec_from_config(Config::load(kW32)), 0);
  const GraphPlans gp = plan_graphs(model, {1, 3, 256, 192});
  REQUIRE(gp.has_training);
  char line[64];
  std::snprintf(line, sizeof line, "graph infer  %.1f MiB", gp.inference.arena_bytes / 1048576.0);
  CHECK(r.out.find(line) != std::string::npos);
  std::snprintf(line, sizeof line, "graph train  %.1f MiB", gp.training.arena_bytes / 1048576.0);
  CHECK(r.out.find(line) != std::string::npos);
  // reuse: the training arena holds the saved activations, far below the no-reuse total
  CHECK(gp.training.arena_bytes * 2 < gp.training.total_bytes);
  CHECK(gp.training.streams == 4);
}

TEST_CASE("hrnet-infer runs a checkpoint on a tensor file like the model in-process", "[apps]") {
  HRNet model(builtin_spec("pose_w18_small_v1"), 7);
  model.eval();
  Tensor x = Tensor::randn({2, 3, 64, 96}, 8);
  Tensor want;
  {
    InferenceMode g;
    want = model(x);
  }
  const std::string w = "test_apps_weights.safetensors", in = "test_apps_in.safetensors",
                    out = "test_apps_out.safetensors";
  save_safetensors(w, model.state_dict());
  save_safetensors(in, {{"input", x}});
  std::remove(out.c_str());
  Run r = infer("--model pose_w18_small_v1 --weights " + w + " --input-tensor " + in +
                " --output-tensor " + out);
  INFO(r.err);
  REQUIRE(r.code == 0);
  NamedTensors got = load_checkpoint(out);
  REQUIRE(got.size() == 1);
  REQUIRE(got[0].first == "output");
  REQUIRE(got[0].second.shape() == want.shape());
  REQUIRE_CLOSE(got[0].second.to_vector(), want.to_vector(), 1e-6, 1e-5);

  SECTION("an input the variant cannot take is refused before any work, naming the reason") {
    save_safetensors(in, {{"input", Tensor::randn({1, 3, 60, 96}, 9)}});
    std::remove(out.c_str());
    Run bad = infer("--model pose_w18_small_v1 --weights " + w + " --input-tensor " + in +
                    " --output-tensor " + out);
    CHECK(bad.code != 0);
    CHECK(bad.err.find("32") != std::string::npos);
    CHECK(std::count(bad.err.begin(), bad.err.end(), '\n') == 1);
    CHECK_FALSE(exists(out));
  }
  SECTION("a checkpoint with a missing key names it") {
    NamedTensors sd = model.state_dict();
    sd.erase(sd.begin());  // conv1.weight
    save_safetensors(w, sd);
    std::remove(out.c_str());
    Run bad = infer("--model pose_w18_small_v1 --weights " + w + " --input-tensor " + in +
                    " --output-tensor " + out);
    CHECK(bad.code != 0);
    CHECK(bad.err.find("conv1.weight") != std::string::npos);
    CHECK_FALSE(exists(out));
  }
  SECTION("a missing weights file is named") {
    std::remove(out.c_str());
    Run bad = infer("--model pose_w18_small_v1 --weights /nonexistent/w.safetensors --input-tensor " +
                    in + " --output-tensor " + out);
    CHECK(bad.code != 0);
    CHECK(bad.err.find("/nonexistent/w.safetensors") != std::string::npos);
    CHECK_FALSE(exists(out));
  }
  std::remove(w.c_str());
  std::remove(in.c_str());
  std::remove(out.c_str());
}

TEST_CASE("hrnet-infer rejects a malformed config with one line naming the file", "[apps]") {
  const std::string cfg = "test_apps_bad.yaml";
  std::ofstream(cfg) << "MODEL:\n  NAME: pose_hrnet\n  EXTRA: [unclosed\n";
  Run r = infer("--config " + cfg + " --summary");
  CHECK(r.code != 0);
  CHECK(r.err.find(cfg) != std::string::npos);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  std::remove(cfg.c_str());
}
