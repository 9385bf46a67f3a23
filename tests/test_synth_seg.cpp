// The synthetic segmentation set (data/synth_seg.h): the Cityscapes layout and the official list
// files, byte-identical output for one seed whatever the thread count, every train class in the
// validation split, label ids (not train ids) that SegmentationDataset maps to the train ids of
// what was drawn, stale files of a larger run removed.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "data/segmentation.h"
#include "data/synth_seg.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace hr;
using namespace hr::data;

namespace {

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> r;
  for (std::string l; std::getline(f, l);) r.push_back(l);
  return r;
}

std::vector<std::string> all_files(const fs::path& root) {
  std::vector<std::string> r;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) r.push_back(fs::relative(e.path(), root).string());
  std::sort(r.begin(), r.end());
  return r;
}

SegOptions whole_image(int w, int h) {
  SegOptions o;
  o.multi_scale = o.flip = false;
  o.crop_w = w;
  o.crop_h = h;
  return o;
}

}  // namespace

TEST_CASE("synthetic segmentation: layout, lists and labels through the dataset", "[synth_seg]") {
  test::TempDir dir;
  SynthSegOptions o;
  o.train_images = 13;
  o.val_images = 30;
  o.seed = 7;
  generate_synthetic_cityscapes(dir.path.string(), o, false);

  for (int split = 0; split < 2; ++split) {
    const std::string name = split == 0 ? "train" : "val";
    const auto lines = read_lines(dir / ("list/cityscapes/" + name + ".lst"));
    REQUIRE(lines.size() == size_t(split == 0 ? 13 : 30));
    for (size_t k = 0; k < lines.size(); ++k) {
      INFO(lines[k]);
      const size_t tab = lines[k].find('\t');
      REQUIRE(tab != std::string::npos);
      const std::string img = lines[k].substr(0, tab), lab = lines[k].substr(tab + 1);
      const auto p = synthetic_street_paths(split, int64_t(k), int64_t(lines.size()));
      REQUIRE(img == p[0]);
      REQUIRE(lab == p[1]);
      REQUIRE(img.rfind("leftImg8bit/" + name + "/", 0) == 0);
      REQUIRE(lab.rfind("gtFine/" + name + "/", 0) == 0);
      // <city>_<seq>_<frame>_leftImg8bit.png in <city>/, the label with the same stem
      const fs::path ip(img), lp(lab);
      const std::string city = ip.parent_path().filename().string();
      REQUIRE(ip.filename().string().rfind(city + "_", 0) == 0);
      REQUIRE(ip.filename().string().size() == city.size() + 30);
      REQUIRE(ip.filename().string().substr(city.size() + 14) == "_leftImg8bit.png");
      REQUIRE(lp.filename().string() ==
              ip.filename().string().substr(0, city.size() + 14) + "_gtFine_labelIds.png");
      REQUIRE(fs::is_regular_file(dir.path / img));
      REQUIRE(fs::is_regular_file(dir.path / lab));
    }
  }
  REQUIRE(fs::is_directory(dir.path / "leftImg8bit/val/frankfurt"));
  REQUIRE(fs::is_directory(dir.path / "gtFine/train/aachen"));

  // the official list through read_seg_list + the dataset: label ids mapped to the train ids of
  // what render_synthetic_street drew, the PNG image as rendered (lossless)
  const SegList val = read_seg_list(dir.path.string() + "/", "list/cityscapes/val.lst");
  REQUIRE(val.labelled);
  const SegmentationDataset ds(val, whole_image(256, 128));
  const auto table = seg_label_table(SegLabelMapping::cityscapes, 255, 19);
  std::set<int64_t> seen;
  std::vector<int64_t> images_with(20, 0);
  for (size_t k = 0; k < ds.size(); ++k) {
    const SegFullSample s = ds.load_full(k);
    const SynthSegImage want =
        render_synthetic_street(synthetic_street_seed(7, 1, int64_t(k)), 256, 128, int(k % 15));
    REQUIRE(s.rgb.pixels == want.image.pixels);
    REQUIRE(s.label.shape() == Shape{128, 256});
    const int64_t* l = s.label.data<int64_t>();
    std::set<int64_t> here;
    bool raw_ids = false;
    for (size_t p = 0; p < want.labels.pixels.size(); ++p) {
      const uint8_t id = want.labels.pixels[p];
      REQUIRE(table[id] != kSegBadId);
      REQUIRE(l[p] == table[id]);
      raw_ids |= id != table[id];  // label ids, not train ids, in the files
      here.insert(l[p]);
    }
    REQUIRE(raw_ids);
    for (int64_t c : here) {
      seen.insert(c);
      ++images_with[size_t(std::min<int64_t>(c, 19))];
    }
  }
  for (int64_t c = 0; c < 19; ++c) {
    INFO("train id " << c << " in " << images_with[size_t(c)] << " of 30 validation images");
    REQUIRE(images_with[size_t(c)] >= 2);
  }
  REQUIRE(seen.count(255));  // void ids (ego vehicle, clutter, rail bed) are ignored pixels

  // training samples from the synthetic set: the official crop pipeline runs on it
  SegOptions t;
  t.base_size = 256;
  t.crop_w = 192;
  t.crop_h = 96;
  const SegmentationDataset train(read_seg_list(dir.path.string(), "list/cityscapes/train.lst"), t);
  std::vector<float> in(3 * 96 * 192);
  std::vector<int64_t> lab(96 * 192);
  for (size_t k = 0; k < train.size(); ++k) {
    train.load(k, 100 + k, {in.data(), lab.data()});
    for (int64_t v : lab) REQUIRE(((v >= 0 && v < 19) || v == 255));
  }
}

TEST_CASE("synthetic segmentation: the same seed gives the same bytes, any thread count",
          "[synth_seg]") {
  test::TempDir a, b, c;
  SynthSegOptions o;
  o.train_images = 6;
  o.val_images = 4;
  o.width = 160;
  o.height = 80;
  o.seed = 3;
  o.threads = 1;
  generate_synthetic_cityscapes(a.path.string(), o, false);
  o.threads = 2;
  generate_synthetic_cityscapes(b.path.string(), o, false);
  o.seed = 4;
  generate_synthetic_cityscapes(c.path.string(), o, false);
  const auto fa = all_files(a.path), fb = all_files(b.path);
  REQUIRE(fa.size() == 6 * 2 + 4 * 2 + 2);
  REQUIRE(fa == fb);
  int differ = 0;
  for (const auto& f : fa) {
    INFO(f);
    REQUIRE(test::slurp(a / f) == test::slurp(b / f));
    differ += test::slurp(a / f) != test::slurp(c / f);
  }
  REQUIRE(differ == 6 * 2 + 4 * 2);  // another seed: other images, the same lists
  const Image img = read_image(a / synthetic_street_paths(0, 0, 6)[0]);
  REQUIRE(img.width == 160);
  REQUIRE(img.height == 80);
  const Image lab = read_gray_image(a / synthetic_street_paths(0, 0, 6)[1]);
  REQUIRE(lab.channels == 1);
  REQUIRE(lab.width == 160);

  // a smaller run into the same folder removes the larger run's files
  o.seed = 3;
  o.train_images = 3;
  o.val_images = 2;
  generate_synthetic_cityscapes(a.path.string(), o, false);
  REQUIRE(all_files(a.path).size() == 3 * 2 + 2 * 2 + 2);
  REQUIRE(read_lines(a / "list/cityscapes/train.lst").size() == 3);
}

TEST_CASE("synthetic segmentation: bad options", "[synth_seg]") {
  test::TempDir d;
  SynthSegOptions o;
  o.val_images = 0;
  REQUIRE_THROWS_WITH(generate_synthetic_cityscapes(d.path.string(), o, false),
                      Catch::Contains("train and val images"));
  o.val_images = 1;
  o.width = 32;
  REQUIRE_THROWS_WITH(generate_synthetic_cityscapes(d.path.string(), o, false),
                      Catch::Contains("image size 32x128"));
  REQUIRE_THROWS_WITH(render_synthetic_street(1, 256, 128, 15), Catch::Contains("featured"));
}
