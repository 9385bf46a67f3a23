// The synthetic detection set (data/synth_det.h): the COCO instances layout, byte-identical output
// for one seed whatever the thread count, annotation files that load_coco_instances reads and
// that match the rendered objects, boxes and areas that are the pixels each object owns (and
// differ from the background there), variety (every category, small to large, empty images,
// overlaps), and the detection records of the official filtering.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "data/detection.h"
#include "data/synth_det.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace hr;
using namespace hr::data;

namespace {

std::vector<std::string> all_files(const fs::path& root) {
  std::vector<std::string> r;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) r.push_back(fs::relative(e.path(), root).string());
  std::sort(r.begin(), r.end());
  return r;
}

}  // namespace

TEST_CASE("synthetic detection: layout, determinism, annotations", "[synth_det]") {
  test::TempDir a, b;
  SynthDetOptions o;
  o.train_images = 14;
  o.val_images = 6;
  o.width = 160;
  o.height = 128;
  o.seed = 5;
  o.threads = 1;
  generate_synthetic_detection(a.path.string(), o, false);
  o.threads = 3;
  generate_synthetic_detection(b.path.string(), o, false);

  const auto files = all_files(a.path);
  REQUIRE(files == all_files(b.path));
  REQUIRE(files.size() == 22);
  for (const auto& f : files) {
    INFO(f);
    REQUIRE(test::slurp((a.path / f).string()) == test::slurp((b.path / f).string()));
  }

  int64_t next_ann = 1;
  for (int split = 0; split < 2; ++split) {
    const std::string name = split == 0 ? "train2017" : "val2017";
    const CocoInstances coco =
        load_coco_instances((a.path / "annotations" / ("instances_" + name + ".json")).string());
    REQUIRE(coco.categories.size() == 5);
    const auto& want = synthetic_detection_categories();
    for (size_t k = 0; k < 5; ++k) {
      REQUIRE(coco.categories[k].id == want[k].id);
      REQUIRE(coco.categories[k].name == want[k].name);
    }
    REQUIRE(coco.category_of_label == std::vector<int64_t>{0, 1, 3, 13, 37, 38});
    REQUIRE(coco.images.size() == size_t(split == 0 ? 14 : 6));
    for (size_t i = 0; i < coco.images.size(); ++i) {
      const CocoImage& im = coco.images[i];
      const int64_t index = (split == 0 ? 0 : 14) + int64_t(i);
      REQUIRE(im.id == index + 1);
      REQUIRE(im.width == 160);
      REQUIRE(im.height == 128);
      const Image img = read_image((a.path / name / im.file_name).string());
      REQUIRE(img.width == 160);
      REQUIRE(img.height == 128);
      // the file's annotations are the rendered objects, in order
      const SynthDetImage r = render_synthetic_detection(synthetic_detection_seed(5, index), 160,
                                                         128, o.max_objects);
      const auto& anns = coco.anns_of_image[coco.image_pos.at(im.id)];
      REQUIRE(anns.size() == r.objects.size());
      for (size_t k = 0; k < anns.size(); ++k) {
        const CocoInstanceAnn& ann = coco.annotations[anns[k]];
        REQUIRE(ann.id == next_ann++);
        REQUIRE(ann.category_id == r.objects[k].category_id);
        REQUIRE(ann.bbox == r.objects[k].bbox);
        REQUIRE(ann.area == r.objects[k].area);
        REQUIRE(!ann.iscrowd);
      }
    }
  }

  // COCODataset's training records leave out the images without objects and keep every box
  const CocoInstances train =
      load_coco_instances((a.path / "annotations" / "instances_train2017.json").string());
  const auto recs = det_records(train, (a.path / "train2017").string(), true);
  size_t with_objects = 0, boxes = 0;
  for (const auto& l : train.anns_of_image) with_objects += !l.empty();
  for (const auto& r : recs) boxes += r.boxes.size();
  REQUIRE(recs.size() == with_objects);
  REQUIRE(boxes == train.annotations.size());
  for (const auto& r : recs) REQUIRE(read_det_image(r).width == 160);
}

TEST_CASE("synthetic detection: boxes are the pixels each object owns", "[synth_det]") {
  std::map<int64_t, int> per_category;
  int empty = 0, overlapping = 0, small = 0, large = 0, objects = 0, visible = 0;
  for (int64_t i = 0; i < 120; ++i) {
    const SynthDetImage r =
        render_synthetic_detection(synthetic_detection_seed(3, i), 320, 256, 6, true);
    REQUIRE(r.image.width == 320);
    REQUIRE(r.background.width == 320);
    empty += r.objects.empty();
    // the background (owner 0) differs from the picture before the objects by noise only
    double bg_diff = 0;
    int64_t bg_n = 0;
    for (size_t p = 0; p < r.owner.size(); ++p)
      if (r.owner[p] == 0) {
        for (int c = 0; c < 3; ++c)
          bg_diff += std::abs(int(r.image.pixels[3 * p + c]) - int(r.background.pixels[3 * p + c]));
        ++bg_n;
      }
    if (bg_n) REQUIRE(bg_diff / (3.0 * bg_n) < 12.0);
    for (size_t k = 0; k < r.objects.size(); ++k) {
      const SynthDetObject& o = r.objects[k];
      INFO("image " << i << " object " << k << " category " << o.category_id);
      ++objects;
      ++per_category[o.category_id];
      int x0 = 1 << 30, y0 = 1 << 30, x1 = -1, y1 = -1, n = 0;
      double diff = 0;
      for (int y = 0; y < 256; ++y)
        for (int x = 0; x < 320; ++x) {
          const size_t p = size_t(y) * 320 + x;
          if (r.owner[p] != k + 1) continue;
          ++n;
          x0 = std::min(x0, x), y0 = std::min(y0, y), x1 = std::max(x1, x), y1 = std::max(y1, y);
          for (int c = 0; c < 3; ++c)
            diff += std::abs(int(r.image.pixels[3 * p + c]) - int(r.background.pixels[3 * p + c]));
        }
      REQUIRE(n == o.area);
      REQUIRE(n >= 40);
      REQUIRE(o.bbox == std::array<double, 4>{double(x0), double(y0), double(x1 - x0 + 1),
                                              double(y1 - y0 + 1)});
      // what an object owns was drawn over the background (a colour close to it is rare)
      visible += diff / (3.0 * n) > 2.0 * bg_diff / (3.0 * std::max<int64_t>(bg_n, 1)) + 8.0;
      const double side = std::max(o.bbox[2], o.bbox[3]);
      small += side <= 32;
      large += side >= 160;
      for (size_t j = 0; j < k; ++j) {
        const auto& q = r.objects[j].bbox;
        overlapping += o.bbox[0] < q[0] + q[2] && q[0] < o.bbox[0] + o.bbox[2] &&
                       o.bbox[1] < q[1] + q[3] && q[1] < o.bbox[1] + o.bbox[3];
      }
    }
  }
  INFO(objects << " objects, " << visible << " visible, " << empty << " empty images, " << small
               << " small, " << large << " large, " << overlapping << " overlaps");
  REQUIRE(per_category.size() == 5);
  for (const auto& [id, n] : per_category) REQUIRE(n >= objects / 10);
  REQUIRE(visible >= objects * 9 / 10);
  REQUIRE(empty >= 2);
  REQUIRE(small >= 20);
  REQUIRE(large >= 10);
  REQUIRE(overlapping >= 20);

  // deterministic in the seed, different across seeds
  const auto x = render_synthetic_detection(11, 200, 100, 4), y = render_synthetic_detection(11, 200, 100, 4),
             z = render_synthetic_detection(12, 200, 100, 4);
  REQUIRE(x.image.pixels == y.image.pixels);
  REQUIRE(x.owner == y.owner);
  REQUIRE(x.image.pixels != z.image.pixels);
  // no object at all with max_objects 0
  REQUIRE(render_synthetic_detection(11, 200, 100, 0).objects.empty());
}

TEST_CASE("synthetic detection: bad options", "[synth_det]") {
  test::TempDir d;
  SynthDetOptions o;
  o.width = 32;
  REQUIRE_THROWS_WITH(generate_synthetic_detection(d.path.string(), o),
                      Catch::Contains("64..4096"));
  o = SynthDetOptions();
  o.val_images = 0;
  REQUIRE_THROWS_WITH(generate_synthetic_detection(d.path.string(), o),
                      Catch::Contains("at least one"));
  REQUIRE_THROWS_WITH(render_synthetic_detection(1, 100, 100, 101), Catch::Contains("max_objects"));
}
