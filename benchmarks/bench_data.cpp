// Data pipeline benchmark, written to a temp dir and timed there:
//  - pose (default): training samples (256x192 crops with augmentation, 64x48 targets) from
//    COCO-sized JPEGs (640x480, synthetic people from data/synth.h);
//  - cls (--task cls): ImageNet training samples (RandomResizedCrop 224 + flip, normalised) and
//    validation samples (Resize 256 + CenterCrop 224) from ImageNet-typical JPEGs (500x375), with
//    and without reduced-scale JPEG decoding.
//   bench_data [--task pose|cls] [--images N] [--samples S] [--workers 1,2,...] [--batch B]
//              [--quality Q]
// Prints the cost of each stage on one core and the DataLoader's throughput for each worker
// count, in samples/s and samples/s per worker.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "data/classification.h"
#include "data/loader.h"
#include "data/pose.h"
#include "data/synth.h"
#include "engine/error.h"

using namespace hr;
using namespace hr::data;
namespace fs = std::filesystem;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Seconds per call of fn: the best of `rounds` rounds of `reps` calls (the machine is shared).
template <class F>
double best_of(int rounds, int reps, F&& fn) {
  double best = 1e30;
  for (int r = 0; r < rounds; ++r) {
    const double t = now();
    for (int i = 0; i < reps; ++i) fn(i);
    best = std::min(best, (now() - t) / reps);
  }
  return best;
}

struct Args {
  std::string task = "pose";
  int images = 0, samples = 768, batch = 32, quality = 90;  // images 0: 24 (pose), 128 (cls)
  std::vector<int> workers;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_data: %s needs a value\n", k.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--task")
      a.task = val();
    else if (k == "--images")
      a.images = std::stoi(val());
    else if (k == "--samples")
      a.samples = std::stoi(val());
    else if (k == "--batch")
      a.batch = std::stoi(val());
    else if (k == "--quality")
      a.quality = std::stoi(val());
    else if (k == "--workers") {
      const std::string s = val();
      size_t p = 0;
      while (p < s.size()) {
        const size_t q = s.find(',', p);
        a.workers.push_back(std::stoi(s.substr(p, q - p)));
        p = q == std::string::npos ? s.size() : q + 1;
      }
    } else {
      std::fprintf(stderr,
                   "usage: bench_data [--task pose|cls] [--images N] [--samples S] "
                   "[--workers 1,2] [--batch B] [--quality Q]\n");
      std::exit(2);
    }
  }
  if (a.task != "pose" && a.task != "cls") {
    std::fprintf(stderr, "bench_data: --task must be pose or cls\n");
    std::exit(2);
  }
  if (a.images <= 0) a.images = a.task == "cls" ? 128 : 24;  // cls: more than a batch of files
  if (a.workers.empty()) {
    const int hw = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    a.workers = {1};
    if (hw > 1) a.workers.push_back(hw);
  }
  return a;
}

// samples/s of the DataLoader over `ds` for `samples` samples after a first batch of warm-up
double loader_rate(const Dataset& ds, int workers, int batch, int samples) {
  LoaderOptions lo;
  lo.batch_size = batch;
  lo.workers = workers;
  lo.prefetch = 2;
  DataLoader dl(ds, lo);
  int64_t epoch = 0, done = 0;
  Batch b;
  dl.start_epoch(epoch);
  if (!dl.next(b)) throw Error("fewer samples than one batch");
  const double t = now();
  while (done < samples) {
    if (!dl.next(b)) {
      dl.start_epoch(++epoch);
      continue;
    }
    done += b.size();
  }
  return done / (now() - t);
}

void loader_table(const Dataset& ds, const Args& args, const char* what) {
  std::printf("\nDataLoader, %s, batch %d, %d samples per run:\n", what, args.batch, args.samples);
  std::printf("  %8s %12s %20s\n", "workers", "samples/s", "samples/s/worker");
  for (int nw : args.workers) {
    double best = 0;
    for (int round = 0; round < 3; ++round)
      best = std::max(best, loader_rate(ds, nw, args.batch, args.samples));
    std::printf("  %8d %12.0f %20.0f\n", nw, best, best / nw);
  }
}

// ImageNet-typical JPEGs (500x375, the synthetic scenes) in DIR/train/<class>/.
int bench_cls(const Args& args, const fs::path& dir) {
  size_t jpeg_bytes = 0;
  for (int i = 0; i < args.images; ++i) {
    const fs::path p = dir / "train" / ("c" + std::to_string(i % 4)) / ("img" + std::to_string(i) + ".jpg");
    fs::create_directories(p.parent_path());
    write_image(render_synthetic_image(2000 + i, 500, 375, 3).image, p.string(), args.quality);
    jpeg_bytes += fs::file_size(p);
  }
  const ImageSet set = scan_image_folder((dir / "train").string());
  std::printf("data: %d JPEGs 500x375 (quality %d, %.0f KB average)\n", args.images, args.quality,
              jpeg_bytes / 1024.0 / args.images);
  const int reps = std::max(args.images, 24);
  std::vector<float> in(3 * 224 * 224);
  std::mt19937_64 rng(1);
  auto sample = [&](bool train, bool fast) {
    ClassificationOptions o;
    o.train = train;
    o.fast_decode = fast;
    return best_of(5, reps, [&](int i) {
      make_classification_sample(EncodedImage::read(set.images[i % set.images.size()].path), o, rng,
                                 in.data());
    });
  };
  const double t_read = best_of(5, reps, [&](int i) {
    (void)EncodedImage::read(set.images[i % set.images.size()].path);
  });
  const EncodedImage enc = EncodedImage::read(set.images[0].path);
  const double t_full = best_of(5, reps, [&](int) { (void)enc.decode(1); });
  const double t_half = best_of(5, reps, [&](int) { (void)enc.decode(2); });
  const double t_train = sample(true, false), t_train_fast = sample(true, true);
  const double t_eval = sample(false, false);
  std::printf("\none core, per sample:\n");
  std::printf("  %-52s %8.3f ms\n", "read the file and its JPEG header", t_read * 1e3);
  std::printf("  %-52s %8.3f ms\n", "decode 500x375 (full size)", t_full * 1e3);
  std::printf("  %-52s %8.3f ms\n", "decode at 1/2 (250x188)", t_half * 1e3);
  std::printf("  %-52s %8.3f ms  (%4.0f samples/s)\n", "training sample, full decode",
              t_train * 1e3, 1 / t_train);
  std::printf("  %-52s %8.3f ms  (%4.0f samples/s)\n", "training sample, reduced decode",
              t_train_fast * 1e3, 1 / t_train_fast);
  std::printf("  %-52s %8.3f ms  (%4.0f samples/s)\n", "validation sample (Resize 256 + CenterCrop)",
              t_eval * 1e3, 1 / t_eval);
  for (bool fast : {false, true}) {
    ClassificationOptions o;
    o.fast_decode = fast;
    const ClassificationDataset ds(set, o);
    loader_table(ds, args, fast ? "training, reduced decode" : "training, full decode");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) try {
  const Args args = parse(argc, argv);
  const fs::path dir = fs::temp_directory_path() / ("hr_bench_data_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  struct Cleanup {
    fs::path d;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(d, ec);
    }
  } cleanup{dir};
  if (args.task == "cls") return bench_cls(args, dir);

  // COCO-like images and annotations
  CocoKeypoints coco;
  size_t jpeg_bytes = 0;
  for (int i = 0; i < args.images; ++i) {
    SynthImage s = render_synthetic_image(1000 + i, 640, 480, 3);
    CocoImage im{i + 1, "img" + std::to_string(i) + ".jpg", 640, 480};
    write_image(s.image, (dir / im.file_name).string(), args.quality);
    jpeg_bytes += fs::file_size(dir / im.file_name);
    coco.images.push_back(im);
    for (auto& p : s.people) {
      p.image_id = im.id;
      p.id = static_cast<int64_t>(coco.annotations.size()) + 1;
      coco.annotations.push_back(p);
    }
  }
  PoseDatasetOptions opt;  // 256x192, sigma 2, the official augmentation
  PoseDataset ds(gt_records(coco, dir.string(), 0.75f), opt);
  std::printf("data: %d JPEGs 640x480 (quality %d, %.0f KB average), %zu persons\n", args.images,
              args.quality, jpeg_bytes / 1024.0 / args.images, ds.size());
  if (ds.size() == 0) return 1;

  // one core, stage by stage
  const TargetParams& tp = opt.target;
  std::vector<float> in(3 * size_t(tp.image_h) * tp.image_w);
  std::vector<float> tg(kNumJoints * size_t(tp.heatmap_h) * tp.heatmap_w), w(kNumJoints);
  std::vector<uint8_t> crop(3 * size_t(tp.image_h) * tp.image_w);
  const int reps = std::max(args.images, 24);
  const double t_decode =
      best_of(5, reps, [&](int i) { (void)read_image(ds.record(i % ds.size()).image_path); });
  const Image img = read_image(ds.record(0).image_path);
  const PoseRecord& rec = ds.record(0);
  const Affine M = get_affine_transform(rec.center, rec.scale, 30.f, tp.image_w, tp.image_h);
  const double t_warp =
      best_of(5, 100, [&](int) { warp_affine(img, M, tp.image_w, tp.image_h, crop.data()); });
  std::mt19937_64 rng(1);
  const double t_sample = best_of(5, 100, [&](int i) {
    make_sample(img, ds.record(i % ds.size()), opt.aug, tp, rng, in.data(), tg.data(), w.data(),
                nullptr);
  });
  std::printf("\none core, per sample:\n");
  std::printf("  %-40s %8.3f ms\n", "read + decode a 640x480 JPEG", t_decode * 1e3);
  std::printf("  %-40s %8.3f ms\n", "warp_affine 256x192x3", t_warp * 1e3);
  std::printf("  %-40s %8.3f ms\n", "make_sample (warp, normalise, target)", t_sample * 1e3);
  std::printf("  %-40s %8.0f samples/s\n", "=> bound on one core", 1.0 / (t_decode + t_sample));

  loader_table(ds, args, "pose training");
  std::printf(
      "\nhardware threads: %u (shared machines: per-worker rates drop when cores are busy)\n",
      std::thread::hardware_concurrency());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_data: %s\n", e.what());
  return 1;
}
