// hrnet-synth: writes the built-in synthetic pose dataset, a COCO 2017 layout of JPEG images of
// articulated figures with person_keypoints_{train2017,val2017}.json (see data/synth.h).
//
//   hrnet-synth --out DIR [--train N] [--val M] [--seed S] [--width W --height H]
//               [--max-people K] [--threads T] [--quality Q] [--quiet]
//
// The output depends only on the options, not on --threads. Bad arguments print one line and
// exit 2; other errors print one line and exit 1.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "apps/app_common.h"
#include "data/synth.h"
#include "engine/error.h"

using namespace hr;
using apps::UsageError;

namespace {

const char* kUsage =
    "usage: hrnet-synth --out DIR [--train N] [--val M] [--seed S] [--width W --height H]\n"
    "                   [--max-people K] [--threads T] [--quality Q] [--quiet]\n"
    "Writes DIR/images/{train2017,val2017}/*.jpg and\n"
    "DIR/annotations/person_keypoints_{train2017,val2017}.json (COCO keypoint format).\n"
    "  --train N       training images (default 2000)\n"
    "  --val M         validation images (default 200)\n"
    "  --seed S        random seed (default 1); the same seed gives identical files\n"
    "  --width W       image width (default 320)\n"
    "  --height H      image height (default 240)\n"
    "  --max-people K  people per image: 1..K (default 3)\n"
    "  --threads T     worker threads, 0 = all cores (default 0); does not change the output\n"
    "  --quality Q     JPEG quality 1..100 (default 92)\n"
    "  --quiet         no progress bar\n";

long long parse_int(const std::string& flag, const std::string& v, long long lo, long long hi) {
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end || errno == ERANGE || x < lo || x > hi)
    throw UsageError(str_cat(flag, " must be an integer in ", lo, "..", hi, ", got '", v, "'"));
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  return apps::app_main("hrnet-synth", "\n", [&] {
    data::SynthOptions opt;
    std::string out;
    bool quiet = false;
    auto value = [&](int& i) -> std::string {
      if (i + 1 >= argc) throw UsageError(std::string(argv[i]) + " needs a value");
      return argv[++i];
    };
    for (int i = 1; i < argc; ++i) {
      const std::string k = argv[i];
      if (k == "-h" || k == "--help") {
        std::fputs(kUsage, stdout);
        return 0;
      } else if (k == "--out") {
        out = value(i);
      } else if (k == "--train") {
        opt.train_images = int(parse_int(k, value(i), 1, 100000000));
      } else if (k == "--val") {
        opt.val_images = int(parse_int(k, value(i), 1, 100000000));
      } else if (k == "--seed") {
        const std::string v = value(i);
        char* end = nullptr;
        errno = 0;
        const unsigned long long s = std::strtoull(v.c_str(), &end, 10);
        if (v.empty() || v[0] == '-' || *end || errno == ERANGE)
          throw UsageError("--seed must be a non-negative integer, got '" + v + "'");
        opt.seed = s;
      } else if (k == "--width") {
        opt.width = int(parse_int(k, value(i), 32, 8192));
      } else if (k == "--height") {
        opt.height = int(parse_int(k, value(i), 32, 8192));
      } else if (k == "--max-people") {
        opt.max_people = int(parse_int(k, value(i), 1, 200));
      } else if (k == "--threads") {
        opt.threads = int(parse_int(k, value(i), 0, 1024));
      } else if (k == "--quality") {
        opt.jpeg_quality = int(parse_int(k, value(i), 1, 100));
      } else if (k == "--quiet") {
        quiet = true;
      } else {
        throw UsageError("unknown argument '" + k + "' (see --help)");
      }
    }
    if (out.empty()) throw UsageError("--out DIR is required (see --help)");
    data::generate_synthetic_coco(out, opt, !quiet);
    return 0;
  });
}
