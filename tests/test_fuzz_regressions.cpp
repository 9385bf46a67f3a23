// The inputs the libFuzzer harnesses (fuzz/, scripts/fuzz.sh) found crashes with, kept under
// tests/data/fuzz_regressions/<harness>/, replayed through the same parsers in the ordinary
// build: each must end in hr::Error or a result, never a crash or another exception. The
// sanitizer build (HR_SANITIZE) checks them for memory errors as well.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "data/coco.h"
#include "data/image.h"
#include "data/segmentation.h"
#include "engine/checkpoint_io.h"
#include "engine/error.h"
#include "models/config.h"

namespace fs = std::filesystem;
using namespace hr;

namespace {

const fs::path kRegressions = fs::path(HR_TEST_DATA_DIR) / "fuzz_regressions";

std::vector<uint8_t> slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

// Runs f; hr::Error is an accepted outcome (returns its message), anything else propagates.
template <class F>
std::string refused(F&& f) {
  try {
    f();
  } catch (const hr::Error& e) {
    return e.what();
  }
  return "";
}

// What the harness of that name does with one input file.
void replay(const std::string& harness, const fs::path& file) {
  const std::string p = file.string();
  if (harness == "safetensors") {
    refused([&] { io::SafetensorsReader r(p); });
  } else if (harness == "pth") {
    refused([&] { io::PthReader r(p); });
  } else if (harness == "yaml_config") {
    const std::vector<uint8_t> b = slurp(file);
    refused([&] {
      const auto c = models::Config::from_yaml(std::string(b.begin(), b.end()), p);
      refused([&] { models::spec_from_config(c).validate(p); });
      refused([&] { models::config_input_hw(c); });
    });
  } else if (harness == "coco_annotations") {
    refused([&] { data::load_coco_keypoints(p).index(); });
  } else if (harness == "coco_results") {
    refused([&] { data::load_keypoint_results(p); });
    refused([&] { data::load_detections(p); });
  } else if (harness == "image") {
    const std::vector<uint8_t> b = slurp(file);
    refused([&] { data::decode_image(b.data(), b.size(), p); });
    refused([&] {
      const auto e = data::EncodedImage::read(p);
      for (int d : {1, 2, 4, 8}) {
        refused([&] { e.decode(d); });
        if (!e.is_jpeg()) break;
      }
    });
    refused([&] { data::read_gray_image(p); });
  } else if (harness == "seg_list") {
    refused([&] { data::read_seg_list(file.parent_path().string(), file.filename().string()); });
  } else {
    FAIL("tests/data/fuzz_regressions/" << harness << ": no harness of that name");
  }
}

}  // namespace

TEST_CASE("fuzz regressions: every saved input is refused or read, nothing else", "[fuzz]") {
  REQUIRE(fs::is_directory(kRegressions));
  int n = 0;
  for (const auto& dir : fs::directory_iterator(kRegressions)) {
    if (!dir.is_directory()) continue;
    for (const auto& f : fs::directory_iterator(dir.path())) {
      INFO(f.path().string());
      replay(dir.path().filename().string(), f.path());
      ++n;
    }
  }
  CHECK(n > 0);
}

TEST_CASE("fuzz regressions: no JPEG-like input reaches stb_image's JPEG decoder", "[fuzz]") {
  // a DHT segment of more than 256 codes after SOF (stb 2.27 writes past its table), through
  // the grey reader; and the same behind FF fill bytes, which stb takes for a JPEG, through the
  // colour decoder: both are refused by libjpeg, naming the file
  for (const char* name : {"stb_jpeg_dht_over_256_codes.jpg", "stb_jpeg_ff_fill_before_soi.jpg"}) {
    const fs::path f = kRegressions / "image" / name;
    const std::vector<uint8_t> b = slurp(f);
    REQUIRE(!b.empty());
    CHECK_THAT(refused([&] { data::decode_image(b.data(), b.size(), f.string()); }),
               Catch::Contains("cannot read image") && Catch::Contains(name));
    CHECK_THAT(refused([&] { data::read_gray_image(f.string()); }),
               Catch::Contains("cannot read image") && Catch::Contains(name));
  }
}

TEST_CASE("fuzz regressions: PNM headers stb_image 2.27 mishandles are refused first", "[fuzz]") {
  // a header number past INT_MAX (signed overflow in stb's reader) and a 16-bit file (stb reads
  // it past the end of its buffer)
  for (const auto& [name, why] : {std::pair<const char*, const char*>{
                                      "stb_pnm_header_int_overflow.pgm", "a number too large"},
                                  {"stb_pnm_16bit_overread.pgm", "16-bit PNM"}}) {
    const fs::path f = kRegressions / "image" / name;
    const std::vector<uint8_t> b = slurp(f);
    REQUIRE(!b.empty());
    CHECK_THAT(refused([&] { data::decode_image(b.data(), b.size(), f.string()); }),
               Catch::Contains(why) && Catch::Contains(name));
    CHECK_THAT(refused([&] { data::read_gray_image(f.string()); }),
               Catch::Contains(why) && Catch::Contains(name));
  }
  // an 8-bit PGM still reads
  const std::vector<uint8_t> pgm = {'P', '5',  '\n', '3', ' ', '2', '\n', '2', '5',
                                    '5', '\n', 1,    2,   3,   4,   5,    6};
  const data::Image im = data::decode_image(pgm.data(), pgm.size(), "ok.pgm");
  CHECK(im.width == 3);
  CHECK(im.height == 2);
}
