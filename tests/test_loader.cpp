// Tests for data/loader.h on tiny PNG images in a temp dir: batches identical for 1 and 3
// workers, every index once per epoch, drop_last, batch contents equal to PoseDataset::load with
// the documented seed, resuming mid-epoch, corrupt and missing images (skipped and counted, or
// thrown), restarting an epoch, and a destructor that returns promptly mid-epoch.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>

#include "data/loader.h"
#include "data/pose.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace hr;
using namespace hr::data;

namespace {

struct Scratch {
  fs::path dir;
  Scratch() {
    dir = fs::temp_directory_path() / ("hr_test_loader_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};
const fs::path& scratch() {
  static Scratch s;
  return s.dir;
}

// `n` records over 5 small images (several persons per image); the images are written once.
std::vector<PoseRecord> make_records(size_t n) {
  static bool written = false;
  if (!written) {
    for (int i = 0; i < 5; ++i) {
      Image img(48 + 4 * i, 40, 3);
      std::mt19937_64 rng(100 + i);
      for (auto& p : img.pixels) p = static_cast<uint8_t>(rng() >> 56);
      write_image(img, (scratch() / ("img" + std::to_string(i) + ".png")).string());
    }
    written = true;
  }
  std::vector<PoseRecord> recs(n);
  std::mt19937_64 rng(42);
  for (size_t i = 0; i < n; ++i) {
    PoseRecord& r = recs[i];
    r.image_path = (scratch() / ("img" + std::to_string(i % 5) + ".png")).string();
    r.image_id = int64_t(i % 5);
    r.ann_id = 100 + int64_t(i);
    for (int j = 0; j < kNumJoints; ++j) {
      r.joints[3 * j] = 10 + 25 * float(uniform01(rng));
      r.joints[3 * j + 1] = 5 + 30 * float(uniform01(rng));
      r.joints[3 * j + 2] = uniform01(rng) < 0.8 ? 1.f : 0.f;
    }
    box_to_center_scale({8, 4, 30, 32}, 0.8f, r.center, r.scale);
  }
  return recs;
}

PoseDatasetOptions small_options() {
  PoseDatasetOptions o;
  o.target.image_w = 32, o.target.image_h = 40, o.target.heatmap_w = 8, o.target.heatmap_h = 10;
  return o;
}

std::vector<Batch> whole_epoch(DataLoader& dl, int64_t epoch, int64_t first = 0) {
  dl.start_epoch(epoch, first);
  std::vector<Batch> out;
  Batch b;
  while (dl.next(b)) out.push_back(b);
  return out;
}

void require_same(const Batch& a, const Batch& b) {
  REQUIRE(a.indices == b.indices);
  REQUIRE(a.skipped == b.skipped);
  REQUIRE(a["input"].shape() == b["input"].shape());
  REQUIRE(a["input"].to_vector() == b["input"].to_vector());
  REQUIRE(a["target"].to_vector() == b["target"].to_vector());
  REQUIRE(a["weight"].to_vector() == b["weight"].to_vector());
  REQUIRE(a.fields.size() == b.fields.size());
}

}  // namespace

TEST_CASE("epoch_order is a seeded permutation", "[loader]") {
  const auto a = epoch_order(100, 1, 0, true), b = epoch_order(100, 1, 0, true);
  REQUIRE(a == b);
  REQUIRE(std::set<size_t>(a.begin(), a.end()).size() == 100);
  REQUIRE(*std::max_element(a.begin(), a.end()) == 99);
  REQUIRE(a != epoch_order(100, 1, 1, true));
  REQUIRE(a != epoch_order(100, 2, 0, true));
  const auto id = epoch_order(5, 1, 3, false);
  REQUIRE(id == std::vector<size_t>{0, 1, 2, 3, 4});
  REQUIRE(sample_seed(1, 0, 5) != sample_seed(1, 1, 5));
  REQUIRE(sample_seed(1, 0, 5) != sample_seed(1, 0, 6));
  REQUIRE(sample_seed(1, 0, 5) != sample_seed(2, 0, 5));
}

TEST_CASE("batches are identical for 1 and 3 workers and equal PoseDataset::load", "[loader]") {
  PoseDataset ds(make_records(11), small_options());
  LoaderOptions o;
  o.batch_size = 3;
  o.drop_last = false;
  o.seed = 5;
  o.workers = 1;
  DataLoader one(ds, o);
  o.workers = 3;
  o.prefetch = 3;
  DataLoader three(ds, o);
  for (int64_t epoch : {0, 1}) {
    const auto a = whole_epoch(one, epoch), b = whole_epoch(three, epoch);
    REQUIRE(a.size() == 4);
    REQUIRE(b.size() == 4);
    for (size_t i = 0; i < a.size(); ++i) require_same(a[i], b[i]);
    // the contents are the dataset's samples with the documented seeds, in the epoch's order
    const auto order = epoch_order(11, 5, epoch, true);
    size_t pos = 0;
    for (const Batch& batch : a) {
      REQUIRE(batch["input"].shape() == Shape{batch.size(), 3, 40, 32});
      REQUIRE(batch["target"].shape() == Shape{batch.size(), 17, 10, 8});
      REQUIRE(batch["weight"].shape() == Shape{batch.size(), 17, 1});
      for (int64_t k = 0; k < batch.size(); ++k, ++pos) {
        REQUIRE(batch.indices[k] == order[pos]);
        std::vector<float> in(3 * 40 * 32), tg(17 * 10 * 8), w(17);
        ds.load_sample(order[pos], sample_seed(5, epoch, order[pos]), in.data(), tg.data(), w.data(),
                       nullptr);
        REQUIRE(std::equal(in.begin(), in.end(), batch["input"].data<float>() + k * in.size()));
        REQUIRE(std::equal(tg.begin(), tg.end(), batch["target"].data<float>() + k * tg.size()));
        REQUIRE(std::equal(w.begin(), w.end(), batch["weight"].data<float>() + k * 17));
      }
    }
  }
  // two epochs differ in order and augmentation
  const auto e0 = whole_epoch(one, 0), e1 = whole_epoch(one, 1);
  REQUIRE(e0[0].indices != e1[0].indices);
}

TEST_CASE("a raw-input loader gives the crops' bytes, normalised on the device to the input",
          "[loader]") {
  PoseDataset ds(make_records(7), small_options());
  LoaderOptions o;
  o.batch_size = 3;
  o.seed = 9;
  o.workers = 2;
  DataLoader plain(ds, o);
  o.raw_input = true;
  DataLoader raw(ds, o);
  const auto a = whole_epoch(plain, 1), b = whole_epoch(raw, 1);
  REQUIRE(a.size() == 2);
  REQUIRE(b.size() == 2);
  for (size_t i = 0; i < a.size(); ++i) {
    REQUIRE(b[i].indices == a[i].indices);
    CHECK_FALSE(a[i].input_lut.defined());
    const Tensor& x = b[i]["input"];
    REQUIRE(x.dtype() == DType::u8);
    REQUIRE(x.shape() == Shape{3, 40, 32 * 3});
    REQUIRE(b[i].input_lut.shape() == Shape{3, 256});
    // the table's normalisation of the bytes is the plain batch's input, bit for bit
    REQUIRE(ops::normalize_u8(x, b[i].input_lut).to_vector() == a[i]["input"].to_vector());
    REQUIRE(b[i]["target"].to_vector() == a[i]["target"].to_vector());
    REQUIRE(b[i]["weight"].to_vector() == a[i]["weight"].to_vector());
    // real image content: not one byte value everywhere
    const uint8_t* px = x.data<uint8_t>();
    CHECK(std::set<uint8_t>(px, px + x.numel()).size() > 16);
  }
  CHECK(b[0].input_lut.impl() == b[1].input_lut.impl());  // one table for the loader
}

TEST_CASE("every index appears once per epoch; drop_last drops the tail", "[loader]") {
  PoseDataset ds(make_records(11), small_options());
  for (bool drop : {false, true}) {
    for (bool shuffle : {false, true}) {
      LoaderOptions o;
      o.batch_size = 4;
      o.drop_last = drop;
      o.shuffle = shuffle;
      o.workers = 2;
      DataLoader dl(ds, o);
      REQUIRE(dl.batches_per_epoch() == (drop ? 2 : 3));
      const auto batches = whole_epoch(dl, 3);
      REQUIRE(int64_t(batches.size()) == dl.batches_per_epoch());
      std::vector<size_t> seen;
      for (const Batch& b : batches) {
        REQUIRE(b.size() == (&b == &batches.back() && !drop ? 3 : 4));
        seen.insert(seen.end(), b.indices.begin(), b.indices.end());
      }
      REQUIRE(seen.size() == (drop ? 8u : 11u));
      REQUIRE(std::set<size_t>(seen.begin(), seen.end()).size() == seen.size());
      if (!shuffle)
        for (size_t i = 0; i < seen.size(); ++i) REQUIRE(seen[i] == i);
    }
  }
}

TEST_CASE("resuming mid-epoch continues the uninterrupted sequence", "[loader]") {
  PoseDataset ds(make_records(13), small_options());
  LoaderOptions o;
  o.batch_size = 2;
  o.workers = 2;
  o.seed = 9;
  DataLoader full(ds, o);
  const auto all = whole_epoch(full, 4);
  REQUIRE(all.size() == 6);
  o.workers = 3;
  DataLoader resumed(ds, o);
  const auto tail = whole_epoch(resumed, 4, 4);
  REQUIRE(tail.size() == 2);
  require_same(tail[0], all[4]);
  require_same(tail[1], all[5]);
  // starting at the end gives nothing; past it is an error
  REQUIRE(whole_epoch(resumed, 4, 6).empty());
  REQUIRE_THROWS_WITH(resumed.start_epoch(4, 7), Catch::Contains("first batch"));
  // restarting in the middle of an epoch drops the batches built ahead
  resumed.start_epoch(4);
  Batch b;
  REQUIRE(resumed.next(b));
  require_same(b, all[0]);
  const auto again = whole_epoch(resumed, 4, 1);
  REQUIRE(again.size() == 5);
  for (size_t i = 0; i < again.size(); ++i) require_same(again[i], all[i + 1]);
}

TEST_CASE("corrupt and missing images are skipped and counted, or thrown", "[loader]") {
  auto recs = make_records(7);
  const std::string bad = (scratch() / "corrupt.png").string();
  {
    std::ofstream f(bad, std::ios::binary);
    f << "\x89PNG\r\n\x1a\n this is not an image";
  }
  const std::string missing = (scratch() / "missing.jpg").string();
  recs[2].image_path = bad;
  recs[5].image_path = missing;
  PoseDatasetOptions opt = small_options();
  LoaderOptions o;
  o.batch_size = 3;
  o.drop_last = false;
  o.shuffle = false;
  o.workers = 2;
  {
    PoseDataset ds(recs, opt);
    DataLoader dl(ds, o);
    const auto batches = whole_epoch(dl, 0);
    REQUIRE(batches.size() == 3);
    REQUIRE(batches[0].size() == 2);
    REQUIRE(batches[0].skipped == 1);
    REQUIRE(batches[0].indices == std::vector<size_t>{0, 1});
    REQUIRE(batches[0]["input"].shape() == Shape{2, 3, 40, 32});
    REQUIRE(batches[0].errors.size() == 1);
    REQUIRE_THAT(batches[0].errors[0], Catch::Contains("corrupt.png"));
    REQUIRE(batches[1].skipped == 1);
    REQUIRE_THAT(batches[1].errors[0], Catch::Contains("missing.jpg"));
    REQUIRE(batches[1].indices == std::vector<size_t>{3, 4});
    REQUIRE(batches[2].skipped == 0);
    REQUIRE(batches[2].errors.empty());
    // the kept samples are those of a clean run
    std::vector<float> in(3 * 40 * 32);
    ds.load_sample(1, sample_seed(0, 0, 1), in.data(), nullptr, nullptr, nullptr);
    REQUIRE(std::equal(in.begin(), in.end(), batches[0]["input"].data<float>() + in.size()));
  }
  {
    opt.skip_corrupt = false;
    PoseDataset ds(recs, opt);
    DataLoader dl(ds, o);
    dl.start_epoch(0);
    Batch b;
    REQUIRE_THROWS_WITH(dl.next(b), Catch::Contains("corrupt.png"));
    REQUIRE_THROWS_AS(dl.next(b), hr::Error);  // the batch with the missing file
    REQUIRE(dl.next(b));
    REQUIRE(b.size() == 1);
    REQUIRE(!dl.next(b));
  }
}

TEST_CASE("the destructor returns promptly mid-epoch; misuse is an error", "[loader]") {
  PoseDataset ds(make_records(40), small_options());
  LoaderOptions o;
  o.batch_size = 4;
  o.workers = 3;
  o.prefetch = 4;
  const auto t0 = std::chrono::steady_clock::now();
  {
    DataLoader dl(ds, o);  // never started
  }
  {
    DataLoader dl(ds, o);
    dl.start_epoch(0);  // destroyed while the workers are busy
  }
  {
    DataLoader dl(ds, o);
    dl.start_epoch(0);
    Batch b;
    REQUIRE(dl.next(b));
    REQUIRE(dl.next(b));
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE(s < 5.0);
  DataLoader dl(ds, o);
  Batch b;
  REQUIRE_THROWS_WITH(dl.next(b), Catch::Contains("start_epoch"));
  o.batch_size = 0;
  REQUIRE_THROWS_WITH(DataLoader(ds, o), Catch::Contains("batch size"));
}

TEST_CASE("PoseDataset::load names the file of an unreadable image", "[loader]") {
  auto recs = make_records(1);
  recs[0].image_path = (scratch() / "nope.png").string();
  PoseDataset ds(recs, small_options());
  std::vector<float> in(3 * 40 * 32);
  REQUIRE_THROWS_WITH(ds.load_sample(0, 1, in.data(), nullptr, nullptr, nullptr),
                      Catch::Contains("nope.png"));
  REQUIRE_THROWS_WITH(ds.load_sample(1, 1, in.data(), nullptr, nullptr, nullptr),
                      Catch::Contains("out of range"));
}
