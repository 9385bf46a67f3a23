// The synthetic classification dataset: renders deterministic in the seed and, for one seed, the
// same for every class away from the shape (colour and background cannot give the class away);
// shapes large, contrasted and of the right topology; the written set in the ImageNet folder
// layout (scan_image_folder reads 10 sorted, balanced classes), byte-identical for any thread
// count, decoding to the renders, with its marker written last and stale files cleared; bad
// arguments rejected with one-line errors.
#include <catch2/catch.hpp>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "data/classification.h"
#include "data/image.h"
#include "data/synth_cls.h"
#include "engine/error.h"
#include "test_util.h"

using namespace hr;
using namespace hr::data;
namespace fs = std::filesystem;
using hr::test::slurp;
using hr::test::TempDir;

namespace {

// Pixels of `mask` (>= 128) grown by r pixels (a square neighbourhood).
std::vector<uint8_t> dilate(const std::vector<uint8_t>& mask, int W, int H, int r) {
  std::vector<uint8_t> rows(mask.size(), 0), out(mask.size(), 0);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      for (int dx = -r; dx <= r && !rows[size_t(y) * W + x]; ++dx) {
        const int xx = x + dx;
        if (xx >= 0 && xx < W && mask[size_t(y) * W + xx] >= 128) rows[size_t(y) * W + x] = 1;
      }
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      for (int dy = -r; dy <= r && !out[size_t(y) * W + x]; ++dy) {
        const int yy = y + dy;
        if (yy >= 0 && yy < H && rows[size_t(yy) * W + x]) out[size_t(y) * W + x] = 1;
      }
  return out;
}

// Whether the background (mask < 128) has a part the image border cannot reach: a hole.
bool has_hole(const std::vector<uint8_t>& mask, int W, int H) {
  std::vector<uint8_t> seen(mask.size(), 0);
  std::vector<size_t> stack;
  auto push = [&](int x, int y) {
    const size_t i = size_t(y) * W + x;
    if (x < 0 || y < 0 || x >= W || y >= H || seen[i] || mask[i] >= 128) return;
    seen[i] = 1;
    stack.push_back(i);
  };
  for (int x = 0; x < W; ++x) push(x, 0), push(x, H - 1);
  for (int y = 0; y < H; ++y) push(0, y), push(W - 1, y);
  while (!stack.empty()) {
    const size_t i = stack.back();
    stack.pop_back();
    const int x = int(i % W), y = int(i / W);
    push(x - 1, y), push(x + 1, y), push(x, y - 1), push(x, y + 1);
  }
  for (size_t i = 0; i < mask.size(); ++i)
    if (mask[i] < 128 && !seen[i]) return true;
  return false;
}

const int kClasses = 10;

}  // namespace

TEST_CASE("synthetic class names are ten sorted distinct shapes", "[synth_cls]") {
  const std::vector<std::string> names = synthetic_class_names();
  REQUIRE(names.size() == size_t(kClasses));
  CHECK(std::is_sorted(names.begin(), names.end()));
  CHECK(std::adjacent_find(names.begin(), names.end()) == names.end());
  CHECK(names[0] == "arrow");
  CHECK(std::find(names.begin(), names.end(), "ring") != names.end());
}

TEST_CASE("synthetic class images depend on the seed, the class only through the shape",
          "[synth_cls]") {
  const SynthClsImage a = render_synthetic_class_image(3, 42, 96, 160);
  const SynthClsImage b = render_synthetic_class_image(3, 42, 96, 160);
  CHECK(a.image.pixels == b.image.pixels);
  CHECK(a.mask == b.mask);
  CHECK(render_synthetic_class_image(3, 43, 96, 160).image.pixels != a.image.pixels);
  CHECK(synthetic_class_image_seed(1, 0, 0, 0) != synthetic_class_image_seed(1, 0, 0, 1));
  CHECK(synthetic_class_image_seed(1, 0, 0, 0) != synthetic_class_image_seed(1, 0, 1, 0));
  CHECK(synthetic_class_image_seed(1, 0, 0, 0) != synthetic_class_image_seed(1, 1, 0, 0));
  CHECK(synthetic_class_image_seed(1, 0, 0, 0) != synthetic_class_image_seed(2, 0, 0, 0));

  // one seed, every class: the same size, and the same pixels away from both shapes (a shadow
  // falls at most ~7 px from its shape)
  int sizes_w = 0, sizes_h = 0;
  int64_t away = 0, pixels = 0;
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    const SynthClsImage ref = render_synthetic_class_image(0, seed, 96, 160);
    const int W = ref.image.width, H = ref.image.height;
    sizes_w += W;
    sizes_h += H;
    REQUIRE(W >= 96);
    REQUIRE(W <= 160);
    REQUIRE(H >= 96);
    REQUIRE(H <= 160);
    CHECK(std::max(W, H) <= 1.5 * std::min(W, H) + 1);
    const std::vector<uint8_t> near_ref = dilate(ref.mask, W, H, 8);
    for (int c = 1; c < kClasses; ++c) {
      const SynthClsImage im = render_synthetic_class_image(c, seed, 96, 160);
      INFO("seed " << seed << " class " << c);
      REQUIRE(im.image.width == W);
      REQUIRE(im.image.height == H);
      const std::vector<uint8_t> near = dilate(im.mask, W, H, 8);
      int differ = 0;
      pixels += int64_t(W) * H;
      for (size_t i = 0; i < near.size(); ++i) {
        if (near[i] || near_ref[i]) continue;
        ++away;
        for (int k = 0; k < 3; ++k)
          differ += im.image.pixels[3 * i + k] != ref.image.pixels[3 * i + k];
      }
      CHECK(differ == 0);
    }
  }
  CHECK(away > pixels / 4);
  CHECK(sizes_w != 12 * 96);  // sizes vary
  CHECK(sizes_w != sizes_h);
}

TEST_CASE("synthetic class shapes are large, contrasted and of their class's topology",
          "[synth_cls]") {
  const std::vector<std::string> names = synthetic_class_names();
  const int per_class = 24;
  int images = 0, cut = 0, weak = 0;
  std::vector<double> extents;
  // nearest class mean of the mean colour of each image (leave-one-out): near chance
  std::vector<std::array<double, 3>> colour;
  std::vector<int> label;
  for (int c = 0; c < kClasses; ++c)
    for (int i = 0; i < per_class; ++i) {
      const SynthClsImage im =
          render_synthetic_class_image(c, synthetic_class_image_seed(5, 0, c, i), 96, 160);
      const int W = im.image.width, H = im.image.height;
      INFO(names[size_t(c)] << " " << i << " (" << W << "x" << H << ")");
      ++images;
      REQUIRE(im.mask.size() == size_t(W) * H);
      int x0 = W, y0 = H, x1 = -1, y1 = -1;
      bool border = false;
      double in[3] = {0, 0, 0}, around[3] = {0, 0, 0};
      int n_in = 0, n_around = 0;
      const std::vector<uint8_t> grown = dilate(im.mask, W, H, 4);
      std::array<double, 3> mean{0, 0, 0};
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
          const size_t p = size_t(y) * W + x;
          for (int k = 0; k < 3; ++k) mean[k] += im.image.pixels[3 * p + k];
          if (im.mask[p] >= 128) {
            x0 = std::min(x0, x), x1 = std::max(x1, x);
            y0 = std::min(y0, y), y1 = std::max(y1, y);
            border |= x == 0 || y == 0 || x == W - 1 || y == H - 1;
          }
          if (im.mask[p] == 255) {
            for (int k = 0; k < 3; ++k) in[k] += im.image.pixels[3 * p + k];
            ++n_in;
          } else if (im.mask[p] == 0 && grown[p]) {
            for (int k = 0; k < 3; ++k) around[k] += im.image.pixels[3 * p + k];
            ++n_around;
          }
        }
      for (auto& m : mean) m /= double(W) * H;
      colour.push_back(mean);
      label.push_back(c);
      REQUIRE(x1 >= 0);
      REQUIRE(n_in > 0);
      REQUIRE(n_around > 0);
      // the shape's extent: 25-90% of the shorter side (a cut shape keeps it across the cut)
      const double extent = double(std::max(x1 - x0 + 1, y1 - y0 + 1)) / std::min(W, H);
      CHECK(extent > 0.17);  // a square is 0.71 of its circumscribed circle
      CHECK(extent <= 1.0);
      extents.push_back(extent);
      cut += border;
      // it stands out from what surrounds it
      double d2 = 0;
      for (int k = 0; k < 3; ++k) {
        const double d = in[k] / n_in - around[k] / n_around;
        d2 += d * d;
      }
      weak += std::sqrt(d2) < 40;
      // a ring, and only a ring, encloses background
      if (!border) CHECK(has_hole(im.mask, W, H) == (names[size_t(c)] == "ring"));
    }
  INFO(images << " images: " << cut << " cut by the frame, " << weak << " of low contrast");
  CHECK(cut > images / 30);
  CHECK(cut < images / 4);
  CHECK(weak < images / 20);
  std::sort(extents.begin(), extents.end());
  CHECK(extents.front() < 0.35);
  CHECK(extents.back() > 0.8);

  int right = 0;
  for (size_t i = 0; i < colour.size(); ++i) {
    std::array<std::array<double, 3>, kClasses> centre{};
    std::array<int, kClasses> count{};
    for (size_t j = 0; j < colour.size(); ++j) {
      if (j == i) continue;
      for (int k = 0; k < 3; ++k) centre[size_t(label[j])][k] += colour[j][k];
      ++count[size_t(label[j])];
    }
    int best = 0;
    double best_d = 1e30;
    for (int c = 0; c < kClasses; ++c) {
      double d = 0;
      for (int k = 0; k < 3; ++k) {
        const double e = colour[i][k] - centre[size_t(c)][k] / count[size_t(c)];
        d += e * e;
      }
      if (d < best_d) best_d = d, best = c;
    }
    right += best == label[i];
  }
  INFO("mean colour predicts " << right << " of " << colour.size());
  CHECK(right < int(colour.size()) / 4);  // chance: a tenth
}

TEST_CASE("the synthetic classification set has the ImageNet layout and its marker last",
          "[synth_cls]") {
  TempDir d;
  SynthClsOptions opt;
  opt.train_per_class = 3;
  opt.val_per_class = 2;
  opt.min_side = 48;
  opt.max_side = 72;
  opt.seed = 7;
  opt.threads = 1;
  const fs::path a = d.path / "one", b = d.path / "two";
  generate_synthetic_classification(a.string(), opt, false);
  opt.threads = 2;
  generate_synthetic_classification(b.string(), opt, false);

  // byte-identical whatever the thread count
  size_t files = 0;
  fs::file_time_type newest_image = fs::file_time_type::min();
  for (const auto& e : fs::recursive_directory_iterator(a)) {
    if (!e.is_regular_file()) continue;
    ++files;
    const fs::path rel = fs::relative(e.path(), a);
    INFO(rel.string());
    REQUIRE(fs::exists(b / rel));
    CHECK(slurp(e.path()) == slurp(b / rel));
    if (rel != "classes.txt") newest_image = std::max(newest_image, fs::last_write_time(e.path()));
  }
  CHECK(files == size_t(kClasses) * (3 + 2) + 1);
  // the marker lists the classes and was written after every image
  std::string list;
  for (const std::string& n : synthetic_class_names()) list += n + "\n";
  CHECK(slurp(a / "classes.txt") == list);
  CHECK(fs::last_write_time(a / "classes.txt") >= newest_image);

  const std::vector<std::string> names = synthetic_class_names();
  for (int split = 0; split < 2; ++split) {
    const std::string dir = (a / (split == 0 ? "train" : "val")).string();
    const ImageSet set = scan_image_folder(dir);
    CHECK(set.classes == names);
    const int per = split == 0 ? 3 : 2;
    REQUIRE(set.images.size() == size_t(kClasses * per));
    std::map<int64_t, int> count;
    for (const LabelledImage& li : set.images) {
      ++count[li.label];
      const std::string stem = fs::path(li.path).stem().string();
      const int64_t k = std::stoll(stem);
      INFO(li.path);
      CHECK(stem.size() == 6);
      CHECK(fs::path(li.path).parent_path().filename() == names[size_t(li.label)]);
      // the file holds the render of its seed
      const Image img = read_image(li.path);
      const SynthClsImage ref = render_synthetic_class_image(
          int(li.label), synthetic_class_image_seed(7, split, int(li.label), k), 48, 72);
      REQUIRE(img.width == ref.image.width);
      REQUIRE(img.height == ref.image.height);
      double se = 0;
      for (size_t i = 0; i < img.pixels.size(); ++i) {
        const double e = double(img.pixels[i]) - ref.image.pixels[i];
        se += e * e;
      }
      const double psnr = 10 * std::log10(255.0 * 255.0 * img.pixels.size() / std::max(se, 1e-9));
      INFO("PSNR " << psnr);
      CHECK(psnr > 28);
    }
    CHECK(count.size() == size_t(kClasses));
    for (const auto& [l, n] : count) CHECK(n == per);
  }

  // a smaller set over it: the images beyond the new counts go, the others stay
  opt.train_per_class = 2;
  generate_synthetic_classification(a.string(), opt, false);
  CHECK(scan_image_folder((a / "train").string()).images.size() == size_t(kClasses * 2));
  CHECK_FALSE(fs::exists(a / "train" / "star" / "000002.jpg"));
  CHECK(fs::exists(a / "classes.txt"));
}

TEST_CASE("an interrupted synthetic classification set has no marker", "[synth_cls]") {
  TempDir d;
  SynthClsOptions opt;
  opt.train_per_class = 2;
  opt.val_per_class = 1;
  opt.min_side = opt.max_side = 40;
  const fs::path out = d.path / "set";
  generate_synthetic_classification(out.string(), opt, false);
  REQUIRE(fs::exists(out / "classes.txt"));
  // an image that cannot be written (a directory in its place) fails the run
  fs::remove(out / "val" / "ring" / "000000.jpg");
  fs::create_directories(out / "val" / "ring" / "000000.jpg" / "x");
  CHECK_THROWS_AS(generate_synthetic_classification(out.string(), opt, false), Error);
  CHECK_FALSE(fs::exists(out / "classes.txt"));
  // a folder that is not a class would become an eleventh class: refused
  fs::remove_all(out / "val" / "ring" / "000000.jpg");
  fs::create_directories(out / "train" / "dog");
  try {
    generate_synthetic_classification(out.string(), opt, false);
    FAIL("accepted a foreign class folder");
  } catch (const Error& e) {
    const std::string m = e.what();
    INFO(m);
    CHECK(m.find("dog") != std::string::npos);
    CHECK(m.find('\n') == std::string::npos);
  }
  CHECK_FALSE(fs::exists(out / "classes.txt"));
  fs::remove_all(out / "train" / "dog");
  generate_synthetic_classification(out.string(), opt, false);
  CHECK(fs::exists(out / "classes.txt"));
}

TEST_CASE("synthetic classification errors are one line", "[synth_cls]") {
  TempDir d;
  std::ofstream(d.path / "file") << "x";
  SynthClsOptions opt;
  opt.train_per_class = 1;
  opt.val_per_class = 1;
  opt.min_side = opt.max_side = 40;
  const std::string bad = (d.path / "file" / "out").string();
  try {
    generate_synthetic_classification(bad, opt, false);
    FAIL("wrote under a regular file");
  } catch (const Error& e) {
    const std::string m = e.what();
    INFO(m);
    CHECK(m.find(bad) != std::string::npos);
    CHECK(m.find('\n') == std::string::npos);
  }
  const std::string out = (d.path / "x").string();
  auto rejects = [&](SynthClsOptions o) {
    try {
      generate_synthetic_classification(out, o, false);
    } catch (const Error& e) {
      const std::string m = e.what();
      INFO(m);
      CHECK(m.find('\n') == std::string::npos);
      return true;
    }
    return false;
  };
  const std::vector<std::function<void(SynthClsOptions&)>> bad_options = {
      [](SynthClsOptions& o) { o.train_per_class = 0; },
      [](SynthClsOptions& o) { o.val_per_class = 0; },
      [](SynthClsOptions& o) { o.min_side = 31; },
      [](SynthClsOptions& o) { o.min_side = 64, o.max_side = 63; },
      [](SynthClsOptions& o) { o.max_side = 5000; },
      [](SynthClsOptions& o) { o.jpeg_quality = 0; },
      [](SynthClsOptions& o) { o.jpeg_quality = 101; },
      [](SynthClsOptions& o) { o.threads = -1; }};
  for (size_t i = 0; i < bad_options.size(); ++i) {
    INFO("bad option " << i);
    SynthClsOptions o = opt;
    bad_options[i](o);
    CHECK(rejects(o));
  }
  CHECK_FALSE(fs::exists(out));  // options are checked before anything is written
  CHECK_THROWS_AS(render_synthetic_class_image(-1, 1, 96, 160), Error);
  CHECK_THROWS_AS(render_synthetic_class_image(10, 1, 96, 160), Error);
  CHECK_THROWS_AS(render_synthetic_class_image(0, 1, 16, 16), Error);
}
