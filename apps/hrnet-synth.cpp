// hrnet-synth: writes a built-in synthetic dataset: for pose (the default), a COCO 2017 layout
// of JPEG images of articulated figures with person_keypoints_{train2017,val2017}.json (see
// data/synth.h); for classification (--task cls), the ImageNet folder layout of JPEG images of
// ten shape classes (see data/synth_cls.h); for segmentation (--task seg), the Cityscapes layout
// of PNG street scenes with label-id PNGs and the official .lst files (see data/synth_seg.h);
// for detection (--task det), the COCO 2017 instances layout of JPEG scenes with five object
// categories (see data/synth_det.h).
//
//   hrnet-synth --out DIR [--task pose] [--train N] [--val M] [--width W --height H]
//               [--max-people K] [--seed S] [--threads T] [--quality Q] [--quiet]
//   hrnet-synth --out DIR --task cls [--per-class N] [--val-per-class M] [--seed S]
//               [--threads T] [--quality Q] [--quiet]
//   hrnet-synth --out DIR --task seg [--train N] [--val M] [--size WxH] [--seed S]
//               [--threads T] [--quiet]
//   hrnet-synth --out DIR --task det [--train N] [--val M] [--size WxH] [--max-objects K]
//               [--seed S] [--threads T] [--quality Q] [--quiet]
//
// The output depends only on the options, not on --threads. Bad arguments print one line and
// exit 2; other errors print one line and exit 1.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "apps/app_common.h"
#include "data/synth.h"
#include "data/synth_cls.h"
#include "data/synth_det.h"
#include "data/synth_seg.h"
#include "engine/error.h"

using namespace hr;
using apps::UsageError;

namespace {

const char* kUsage =
    "usage: hrnet-synth --out DIR [--task pose] [--train N] [--val M] [--width W --height H]\n"
    "                   [--max-people K] [--seed S] [--threads T] [--quality Q] [--quiet]\n"
    "       hrnet-synth --out DIR --task cls [--per-class N] [--val-per-class M] [--seed S]\n"
    "                   [--threads T] [--quality Q] [--quiet]\n"
    "       hrnet-synth --out DIR --task seg [--train N] [--val M] [--size WxH] [--seed S]\n"
    "                   [--threads T] [--quiet]\n"
    "       hrnet-synth --out DIR --task det [--train N] [--val M] [--size WxH] [--max-objects K]\n"
    "                   [--seed S] [--threads T] [--quality Q] [--quiet]\n"
    "pose: DIR/images/{train2017,val2017}/*.jpg and\n"
    "DIR/annotations/person_keypoints_{train2017,val2017}.json (COCO keypoint format).\n"
    "cls: DIR/{train,val}/<class>/*.jpg (ImageNet folder layout) of 10 shape classes, images of\n"
    "96..160 pixels a side, and DIR/classes.txt, written last.\n"
    "seg: DIR/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png street scenes,\n"
    "DIR/gtFine/{train,val}/<city>/*_gtFine_labelIds.png (Cityscapes label ids) and\n"
    "DIR/list/cityscapes/{train,val}.lst (the official lists), written last.\n"
    "det: DIR/{train2017,val2017}/*.jpg scenes of persons, cars, stop signs, sports balls and\n"
    "kites, DIR/annotations/instances_{train2017,val2017}.json (COCO instances), written last.\n"
    "  --task T           pose (default), cls, seg or det\n"
    "  --train N          pose: training images (default 2000); seg: (default 600); det: (1000)\n"
    "  --val M            pose: validation images (default 200); seg: (default 100); det: (200)\n"
    "  --size WxH         seg: image size (default 256x128); det: (default 320x256)\n"
    "  --max-objects K    det: objects per image: 0..K (default 6)\n"
    "  --width W          pose: image width (default 320)\n"
    "  --height H         pose: image height (default 240)\n"
    "  --max-people K     pose: people per image: 1..K (default 3)\n"
    "  --per-class N      cls: training images per class (default 1000)\n"
    "  --val-per-class M  cls: validation images per class (default 50)\n"
    "  --seed S           random seed (default 1); the same seed gives identical files\n"
    "  --threads T        worker threads, 0 = all cores (default 0); does not change the output\n"
    "  --quality Q        pose, cls, det: JPEG quality 1..100 (default 92)\n"
    "  --quiet            no progress bar\n";

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
    data::SynthClsOptions cls;
    data::SynthSegOptions seg;
    data::SynthDetOptions det;
    // the last option seen that only pose, only cls, only seg or det, only det, not seg takes
    std::string out, task = "pose", pose_only, cls_only, seg_only, det_only, not_seg;
    bool train_set = false, val_set = false;
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
      } else if (k == "--task") {
        task = value(i);
        if (task != "pose" && task != "cls" && task != "seg" && task != "det")
          throw UsageError("--task must be pose, cls, seg or det, got '" + task + "'");
      } else if (k == "--train") {
        opt.train_images = int(parse_int(k, value(i), 1, 100000000));
        seg.train_images = det.train_images = opt.train_images;
        train_set = true;
      } else if (k == "--val") {
        opt.val_images = int(parse_int(k, value(i), 1, 100000000));
        seg.val_images = det.val_images = opt.val_images;
        val_set = true;
      } else if (k == "--size") {
        const std::string v = value(i);
        const size_t x = v.find('x');
        if (x == std::string::npos) throw UsageError("--size must be WxH, got '" + v + "'");
        seg.width = det.width = int(parse_int("--size width", v.substr(0, x), 64, 4096));
        seg.height = det.height = int(parse_int("--size height", v.substr(x + 1), 32, 4096));
        seg_only = k;
      } else if (k == "--max-objects") {
        det.max_objects = int(parse_int(k, value(i), 0, 200));
        det_only = k;
      } else if (k == "--per-class") {
        cls.train_per_class = int(parse_int(k, value(i), 1, 10000000));
        cls_only = k;
      } else if (k == "--val-per-class") {
        cls.val_per_class = int(parse_int(k, value(i), 1, 10000000));
        cls_only = k;
      } else if (k == "--seed") {
        const std::string v = value(i);
        char* end = nullptr;
        errno = 0;
        const unsigned long long s = std::strtoull(v.c_str(), &end, 10);
        if (v.empty() || v[0] == '-' || *end || errno == ERANGE)
          throw UsageError("--seed must be a non-negative integer, got '" + v + "'");
        opt.seed = cls.seed = seg.seed = det.seed = s;
      } else if (k == "--width") {
        opt.width = int(parse_int(k, value(i), 32, 8192));
        pose_only = k;
      } else if (k == "--height") {
        opt.height = int(parse_int(k, value(i), 32, 8192));
        pose_only = k;
      } else if (k == "--max-people") {
        opt.max_people = int(parse_int(k, value(i), 1, 200));
        pose_only = k;
      } else if (k == "--threads") {
        opt.threads = cls.threads = seg.threads = det.threads = int(parse_int(k, value(i), 0, 1024));
      } else if (k == "--quality") {
        opt.jpeg_quality = cls.jpeg_quality = det.jpeg_quality = int(parse_int(k, value(i), 1, 100));
        not_seg = k;
      } else if (k == "--quiet") {
        quiet = true;
      } else {
        throw UsageError("unknown argument '" + k + "' (see --help)");
      }
    }
    if (out.empty()) throw UsageError("--out DIR is required (see --help)");
    if (task == "cls" && (train_set || val_set))
      throw UsageError(std::string(train_set ? "--train" : "--val") +
                       " is a pose and seg option; --task cls takes --per-class and " +
                       "--val-per-class");
    if (task != "pose" && !pose_only.empty())
      throw UsageError(pose_only + " is a pose option" +
                       (task == "seg" ? std::string(" (--task seg takes --size WxH)") : ""));
    if (task != "cls" && !cls_only.empty()) throw UsageError(cls_only + " needs --task cls");
    if (task != "seg" && task != "det" && !seg_only.empty())
      throw UsageError(seg_only + " needs --task seg or det");
    if (task != "det" && !det_only.empty()) throw UsageError(det_only + " needs --task det");
    if (task == "seg" && !not_seg.empty())
      throw UsageError(not_seg + " does not apply to --task seg (PNG images)");
    if (task == "seg")
      data::generate_synthetic_cityscapes(out, seg, !quiet);
    else if (task == "det")
      data::generate_synthetic_detection(out, det, !quiet);
    else if (task == "cls")
      data::generate_synthetic_classification(out, cls, !quiet);
    else
      data::generate_synthetic_coco(out, opt, !quiet);
    return 0;
  });
}
