// Issue 18, the programs: hrnet-infer refuses non-finite, absurd or empty boxes with one line
// (exit 2) instead of crashing or hanging in the overlay's drawing, never writes nan/inf tokens
// into its JSON, and leaves no partial set of outputs when one of them cannot be written.
// A config the user gives by mistake (empty file, directory, a number out of range) is one line
// naming the file (and the key).
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>

#include "app_runner.h"
#include "data/image.h"
#include "engine/checkpoint.h"
#include "models/hrnet.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace hr;
using hr::test::Run;
using hr::test::slurp;

namespace {

// a temp directory for the file's outputs, removed at exit
const fs::path& work() {
  static const hr::test::TempDir d;
  return d.path;
}
std::string at(const std::string& name) { return (work() / name).string(); }

// Every run is bounded: a hang is a failure, not a stuck suite.
Run infer(const std::string& args) {
  return hr::test::run_program(std::string("timeout 300 ") + HR_INFER_EXE, args, at("cmd"));
}

// The error output is exactly one line starting with the program's name.
void check_one_line(const Run& r) {
  INFO(r.err);
  CHECK(r.err.rfind("hrnet-infer: ", 0) == 0);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}

// Random weights of the smallest built-in pose model and a test image, made once.
struct Fixture {
  std::string weights, image;
  Fixture() {
    weights = at("w.safetensors");
    models::HRNet model(models::builtin_spec("pose_w18_small_v1"));
    save_safetensors(weights, model.state_dict());
    image = at("img.png");
    data::Image img(120, 90, 3);
    for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = uint8_t(i * 37 % 251);
    data::write_image(img, image);
  }
};
const Fixture& fixture() {
  static const Fixture f;
  return f;
}
std::string base_args() {
  return "--model pose_w18_small_v1 --weights " + fixture().weights + " --image " + fixture().image;
}

}  // namespace

TEST_CASE("hrnet-infer: non-finite, huge or empty boxes are refused with one line", "[reliability][apps]") {
  const std::string js = at("box.json"), png = at("box.png");
  for (const std::string box : {"nan,0,10,10", "0,0,inf,10", "-inf,0,10,10", "0,0,1e30,1e30",
                                "1e30,1e30,10,10", "-2e6,0,10,10", "0,0,0,10", "0,0,10,-5",
                                "0,0,10,nan", "3e9,3e9,1e9,1e9"}) {
    INFO("--box " << box);
    std::remove(js.c_str());
    std::remove(png.c_str());
    const Run r = infer(base_args() + " --box " + box + " --json " + js + " --overlay " + png);
    CHECK(r.code == 2);
    check_one_line(r);
    CHECK(r.err.find("--box") != std::string::npos);
    CHECK(!fs::exists(js));
    CHECK(!fs::exists(png));
  }
  // detections from a file: the same limits, the file named
  const std::string dets = at("dets.json");
  std::ofstream(dets) << R"([{"image_id": 1, "category_id": 1, "bbox": [1e30, 0, 10, 10], "score": 0.9}])";
  const Run r = infer(base_args() + " --boxes " + dets + " --json " + js);
  CHECK(r.code == 1);
  check_one_line(r);
  CHECK(r.err.find(dets) != std::string::npos);
  CHECK(!fs::exists(js));
}

TEST_CASE("hrnet-infer: boxes partly or wholly off the image draw and give valid JSON", "[reliability][apps]") {
  const std::string js = at("ok.json"), png = at("ok.png");
  const Run r = infer(base_args() + " --box -500000,-500000,999000,999000 --box 10,5,60,70" +
                      " --box 900000,900000,50,50 --json " + js + " --overlay " + png);
  INFO(r.err);
  REQUIRE(r.code == 0);
  const std::string j = slurp(js);
  for (const char* bad : {"nan", "inf", "NaN", "Infinity"}) CHECK(j.find(bad) == std::string::npos);
  CHECK(std::count(j.begin(), j.end(), '{') == 4);  // the object and three people
  CHECK(data::read_image(png).width == 120);
}

TEST_CASE("hrnet-infer: a failing output leaves no partial set", "[reliability][apps]") {
  const std::string js = at("partial.json"), png = at("partial.png");
  SECTION("the overlay cannot be written: no JSON either") {
    const Run r = infer(base_args() + " --json " + js + " --overlay " + at("no_such_dir/o.png"));
    CHECK(r.code == 1);
    check_one_line(r);
    CHECK(r.err.find("no_such_dir/o.png") != std::string::npos);
    CHECK(!fs::exists(js));
  }
  SECTION("the JSON cannot be written: the overlay is removed") {
    const Run r = infer(base_args() + " --json " + at("no_such_dir/o.json") + " --overlay " + png);
    CHECK(r.code == 1);
    check_one_line(r);
    CHECK(!fs::exists(png));
  }
  SECTION("an overlay with an unknown extension is refused before any work") {
    const Run r = infer(base_args() + " --json " + js + " --overlay " + at("o.bmp"));
    CHECK(r.code == 2);
    check_one_line(r);
    CHECK(r.err.find("--overlay") != std::string::npos);
    CHECK(!fs::exists(js));
  }
  // none of the runs left a temp file behind
  for (const auto& e : fs::directory_iterator(work()))
    CHECK(e.path().filename().string().find(".tmp") == std::string::npos);
}

TEST_CASE("hrnet-infer: careless configs are one line naming the file and key", "[reliability][apps]") {
  const std::string empty = at("empty.yaml");
  std::ofstream(empty) << "";
  Run r = infer("--config " + empty + " --summary");
  CHECK(r.code == 1);
  check_one_line(r);
  CHECK(r.err.find(empty) != std::string::npos);

  r = infer("--config " + work().string() + " --summary");
  CHECK(r.code == 1);
  check_one_line(r);
  CHECK(r.err.find("directory") != std::string::npos);

  const std::string big = at("big.yaml");
  std::ofstream(big) << "MODEL:\n  NAME: pose_hrnet\n  SIGMA: 1e999\n";
  r = infer("--config " + big + " --summary");
  CHECK(r.code == 1);
  check_one_line(r);
  CHECK(r.err.find(big) != std::string::npos);
  CHECK(r.err.find("MODEL.SIGMA") != std::string::npos);

  // an alias bomb: one line, quickly
  std::string bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n";
  for (char c = 'b'; c <= 'i'; ++c) {
    bomb += std::string(1, c) + ": &" + c + " [";
    for (int k = 0; k < 9; ++k) bomb += std::string(k ? ", *" : "*") + char(c - 1);
    bomb += "]\n";
  }
  const std::string bomb_path = at("bomb.yaml");
  std::ofstream(bomb_path) << bomb;
  r = infer("--config " + bomb_path + " --summary");
  CHECK(r.code == 1);
  check_one_line(r);
  CHECK(r.err.find("alias") != std::string::npos);
}
