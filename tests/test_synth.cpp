// The synthetic pose dataset: determinism (same seed, same pixels and annotations, whatever the
// thread count), the annotation invariants on a few hundred generated people (checked against
// the returned per-pixel ownership map), COCO left/right semantics, and the written dataset:
// layout, loading with load_coco_keypoints, images decoding to their declared size and matching
// the in-memory render.
#include <catch2/catch.hpp>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "data/coco.h"
#include "data/image.h"
#include "data/synth.h"
#include "engine/error.h"
#include "test_util.h"

using namespace hr;
using namespace hr::data;
namespace fs = std::filesystem;
using hr::test::slurp;
using hr::test::TempDir;

namespace {

bool same_ann(const CocoPersonAnn& a, const CocoPersonAnn& b, float tol) {
  if (a.num_keypoints != b.num_keypoints || a.area != b.area || a.bbox != b.bbox) return false;
  for (int k = 0; k < 3 * kNumJoints; ++k)
    if (std::abs(a.keypoints[k] - b.keypoints[k]) > tol) return false;
  return true;
}

enum { kNose, kLEye, kREye, kLEar, kREar, kLSh, kRSh, kLHip = 11, kRHip = 12 };

}  // namespace

TEST_CASE("synthetic images are deterministic in the seed", "[synth]") {
  const SynthImage a = render_synthetic_image(42, 320, 240, 3);
  const SynthImage b = render_synthetic_image(42, 320, 240, 3);
  REQUIRE(a.image.width == 320);
  REQUIRE(a.image.height == 240);
  REQUIRE(a.image.channels == 3);
  CHECK(a.image.pixels == b.image.pixels);
  CHECK(a.owner == b.owner);
  REQUIRE(a.people.size() == b.people.size());
  for (size_t i = 0; i < a.people.size(); ++i) CHECK(same_ann(a.people[i], b.people[i], 0.f));
  const SynthImage c = render_synthetic_image(43, 320, 240, 3);
  CHECK(c.image.pixels != a.image.pixels);
  CHECK(synthetic_image_seed(1, 0) != synthetic_image_seed(1, 1));
  CHECK(synthetic_image_seed(1, 0) != synthetic_image_seed(2, 0));
}

TEST_CASE("synthetic annotations agree with what was drawn", "[synth]") {
  struct Size {
    int w, h, max_people, images;
  };
  int people = 0, labelled = 0, occluded = 0, truncated = 0, multi = 0, front = 0, back = 0;
  int tilted = 0, images = 0;
  std::vector<double> heights;
  for (const Size sz : {Size{320, 240, 3, 110}, Size{160, 120, 2, 40}, Size{200, 300, 4, 30}}) {
    const int W = sz.w, H = sz.h;
    for (int s = 0; s < sz.images; ++s) {
      const SynthImage im = render_synthetic_image(synthetic_image_seed(77, s), W, H, sz.max_people);
      ++images;
      REQUIRE(im.owner.size() == size_t(W) * H);
      REQUIRE(!im.people.empty());
      REQUIRE(int(im.people.size()) <= sz.max_people);
      multi += im.people.size() > 1;
      for (size_t i = 0; i < im.people.size(); ++i) {
        const CocoPersonAnn& a = im.people[i];
        const uint8_t id = uint8_t(i + 1);
        INFO("image " << s << " (" << W << "x" << H << ") person " << i);
        ++people;
        // the visible silhouette from the ownership map
        int x0 = W, y0 = H, x1 = -1, y1 = -1, area = 0;
        for (int y = 0; y < H; ++y)
          for (int x = 0; x < W; ++x)
            if (im.owner[size_t(y) * W + x] == id) {
              ++area;
              x0 = std::min(x0, x), x1 = std::max(x1, x);
              y0 = std::min(y0, y), y1 = std::max(y1, y);
            }
        CHECK(a.area == float(area));
        CHECK(a.area >= 32 * 32);
        CHECK(a.area <= a.bbox[2] * a.bbox[3]);
        CHECK(a.bbox[0] == float(x0));
        CHECK(a.bbox[1] == float(y0));
        CHECK(a.bbox[2] == float(x1 - x0 + 1));
        CHECK(a.bbox[3] == float(y1 - y0 + 1));
        CHECK(a.bbox[0] >= 0);
        CHECK(a.bbox[1] >= 0);
        CHECK(a.bbox[0] + a.bbox[2] <= W);
        CHECK(a.bbox[1] + a.bbox[3] <= H);
        CHECK_FALSE(a.iscrowd);
        int n = 0, body_missing = 0;
        for (int k = 0; k < kNumJoints; ++k) {
          const float x = a.keypoints[3 * k], y = a.keypoints[3 * k + 1], v = a.keypoints[3 * k + 2];
          INFO("joint " << k << " at " << x << "," << y << " v " << v);
          REQUIRE((v == 0.f || v == 1.f || v == 2.f));
          if (v == 0.f) {
            CHECK(x == 0.f);
            CHECK(y == 0.f);
            body_missing += k >= kLSh;
            continue;
          }
          ++n;
          ++labelled;
          REQUIRE(x >= 0.f);
          REQUIRE(y >= 0.f);
          REQUIRE(x <= float(W - 1));
          REQUIRE(y <= float(H - 1));
          const uint8_t o = im.owner[size_t(std::lround(y)) * W + size_t(std::lround(x))];
          if (v == 2.f) {
            CHECK(o == id);  // seen: the person's own body is at the joint
          } else {
            CHECK(o > id);  // covered by a later person (id + 1 ...) or an occluder (255)
            ++occluded;
          }
        }
        CHECK(a.num_keypoints == n);
        CHECK(n >= 1);
        truncated += body_missing > 0;
        heights.push_back(double(a.bbox[3]) / H);

        // COCO's left/right: the person's left shoulder is on the viewer's right when the
        // person faces the viewer, on the viewer's left from the back (taken across the torso,
        // so that it holds for rotated figures too)
        auto pt = [&](int k) { return std::array<float, 2>{a.keypoints[3 * k], a.keypoints[3 * k + 1]}; };
        auto has = [&](int k) { return a.keypoints[3 * k + 2] > 0; };
        if (!(has(kLSh) && has(kRSh) && has(kLHip) && has(kRHip))) continue;
        const float ux = (pt(kLSh)[0] + pt(kRSh)[0] - pt(kLHip)[0] - pt(kRHip)[0]) / 2;
        const float uy = (pt(kLSh)[1] + pt(kRSh)[1] - pt(kLHip)[1] - pt(kRHip)[1]) / 2;
        auto across = [&](int l, int r) {  // > 0: l lies to the viewer's right of r
          const float sx = pt(l)[0] - pt(r)[0], sy = pt(l)[1] - pt(r)[1];
          return ux * sy - uy * sx;
        };
        tilted += std::abs(std::atan2(ux, -uy)) > 25 * 3.14159265f / 180;
        if (has(kNose)) {
          ++front;
          CHECK(across(kLSh, kRSh) > 0);
          CHECK(across(kLHip, kRHip) > 0);
          if (has(kLEye) && has(kREye)) CHECK(across(kLEye, kREye) > 0);
        } else if (!has(kLEye) && !has(kREye) && has(kLEar) && has(kREar)) {
          ++back;
          CHECK(across(kLSh, kRSh) < 0);
          CHECK(across(kLHip, kRHip) < 0);
          CHECK(across(kLEar, kREar) < 0);
        }
      }
    }
  }
  // the dataset's variety: several people, occlusion, truncation, back views, rotation, scale
  INFO(people << " people in " << images << " images: " << multi << " with several, " << occluded
              << " of " << labelled << " joints occluded, " << truncated << " truncated, "
              << front << " front, " << back << " back, " << tilted << " tilted");
  CHECK(people >= 300);
  CHECK(multi > images / 4);
  CHECK(occluded > labelled / 100);
  CHECK(occluded < labelled / 3);
  CHECK(truncated > people / 30);
  CHECK(back > (front + back) / 20);
  CHECK(back < (front + back) / 3);
  CHECK(tilted > people / 30);
  std::sort(heights.begin(), heights.end());
  CHECK(heights[heights.size() / 2] > 0.3);
  CHECK(heights[heights.size() / 2] < 0.9);
  CHECK(heights.back() > 0.85);
}

TEST_CASE("the generated dataset has the COCO layout and loads", "[synth]") {
  TempDir d;
  SynthOptions opt;
  opt.train_images = 5;
  opt.val_images = 3;
  opt.width = 160;
  opt.height = 120;
  opt.seed = 9;
  opt.threads = 1;
  const fs::path a = d.path / "one", b = d.path / "three";
  generate_synthetic_coco(a.string(), opt, false);
  opt.threads = 3;
  generate_synthetic_coco(b.string(), opt, false);

  // byte-identical whatever the thread count
  size_t files = 0;
  for (const auto& e : fs::recursive_directory_iterator(a)) {
    if (!e.is_regular_file()) continue;
    ++files;
    const fs::path rel = fs::relative(e.path(), a);
    INFO(rel.string());
    REQUIRE(fs::exists(b / rel));
    CHECK(slurp(e.path()) == slurp(b / rel));
  }
  CHECK(files == 8 + 2);

  std::set<int64_t> ann_ids, image_ids;
  int64_t expect_id = 1;
  for (const std::string split : {"train2017", "val2017"}) {
    const CocoKeypoints coco =
        load_coco_keypoints((a / "annotations" / ("person_keypoints_" + split + ".json")).string());
    REQUIRE(coco.images.size() == (split == "train2017" ? 5u : 3u));
    CHECK(coco.keypoint_names == coco_keypoint_names());
    CHECK(coco.skeleton == coco_skeleton());
    for (const CocoImage& ci : coco.images) {
      INFO(split << " " << ci.file_name);
      CHECK(ci.id == expect_id);  // ids run on across the splits
      CHECK(image_ids.insert(ci.id).second);
      char name[32];
      std::snprintf(name, sizeof name, "%012lld.jpg", static_cast<long long>(ci.id));
      CHECK(ci.file_name == name);
      CHECK(ci.width == 160);
      CHECK(ci.height == 120);
      const Image img = read_image((a / "images" / split / ci.file_name).string());
      CHECK(img.width == ci.width);
      CHECK(img.height == ci.height);
      // the file holds the render of its seed, its annotations are the render's
      const SynthImage ref =
          render_synthetic_image(synthetic_image_seed(9, ci.id - 1), 160, 120, opt.max_people);
      double se = 0;
      for (size_t i = 0; i < img.pixels.size(); ++i) {
        const double e = double(img.pixels[i]) - ref.image.pixels[i];
        se += e * e;
      }
      const double psnr = 10 * std::log10(255.0 * 255.0 * img.pixels.size() / std::max(se, 1e-9));
      INFO("PSNR " << psnr);
      CHECK(psnr > 28);
      std::vector<CocoPersonAnn> anns;
      for (const CocoPersonAnn& x : coco.annotations)
        if (x.image_id == ci.id) anns.push_back(x);
      REQUIRE(anns.size() == ref.people.size());
      for (size_t i = 0; i < anns.size(); ++i) {
        CHECK(same_ann(anns[i], ref.people[i], 0.006f));
        CHECK(anns[i].category_id == 1);
      }
      ++expect_id;
    }
    for (const CocoPersonAnn& x : coco.annotations) CHECK(ann_ids.insert(x.id).second);
  }
  CHECK(fs::is_directory(a / "images" / "train2017"));
  CHECK(fs::is_directory(a / "images" / "val2017"));
}

TEST_CASE("synthetic dataset errors are one line", "[synth]") {
  TempDir d;
  std::ofstream(d.path / "file") << "x";
  SynthOptions opt;
  opt.train_images = 1;
  opt.val_images = 1;
  const std::string bad = (d.path / "file" / "out").string();
  try {
    generate_synthetic_coco(bad, opt, false);
    FAIL("wrote under a regular file");
  } catch (const Error& e) {
    const std::string m = e.what();
    INFO(m);
    CHECK(m.find(bad) != std::string::npos);
    CHECK(m.find('\n') == std::string::npos);
  }
  opt.train_images = 0;
  CHECK_THROWS_AS(generate_synthetic_coco((d.path / "x").string(), opt, false), Error);
  CHECK_THROWS_AS(render_synthetic_image(1, 10, 240, 3), Error);
  CHECK_THROWS_AS(render_synthetic_image(1, 320, 240, 0), Error);
}
