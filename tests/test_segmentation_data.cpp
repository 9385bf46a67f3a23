// Segmentation data (data/segmentation.h, the cv2 resizes of data/image.h) against OpenCV 4.10 and
// the official HRNet-Semantic-Segmentation sample (tests/data/seg_reference.safetensors from
// tools/gen_seg_reference.py): cv2.resize INTER_LINEAR / INTER_NEAREST bit for bit, DOWNSAMPLERATE,
// convert_label, gen_sample with given random choices, the validation sample read from files; and
// list files, the random draws, and the error paths.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>

#include "data/segmentation.h"
#include "engine/checkpoint.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace hr;
using namespace hr::data;

namespace {

struct Ref {
  std::map<std::string, Tensor> t;
  std::map<std::string, std::string> meta;
  explicit Ref(const std::string& path) {
    for (auto& [k, v] : load_checkpoint(path, &meta)) t[k] = v;
  }
  const Tensor& at(const std::string& k) const {
    auto it = t.find(k);
    INFO(k);
    REQUIRE(it != t.end());
    return it->second;
  }
  // the integer (or true/false) value of `key` in a case's metadata
  int opt(const std::string& c, const std::string& key) const {
    const std::string& m = meta.at(c);
    const size_t p = m.find("\"" + key + "\": ");
    INFO(c << " " << key);
    REQUIRE(p != std::string::npos);
    const std::string v = m.substr(p + key.size() + 4, 5);
    if (v.rfind("true", 0) == 0) return 1;
    if (v.rfind("false", 0) == 0) return 0;
    return std::atoi(v.c_str());
  }
  std::vector<std::string> cases(const std::string& op) const {
    std::vector<std::string> r;
    for (const auto& [k, m] : meta)
      if (m.find("\"op\": \"" + op + "\"") != std::string::npos) r.push_back(k);
    return r;
  }
};
const Ref& ref() {
  static const Ref r(std::string(HR_TEST_DATA_DIR) + "/seg_reference.safetensors");
  return r;
}

Image to_image(const Tensor& u8) {  // [H,W,C] or [H,W]
  const int c = u8.dim() == 3 ? static_cast<int>(u8.size(2)) : 1;
  Image img(static_cast<int>(u8.size(1)), static_cast<int>(u8.size(0)), c);
  std::memcpy(img.pixels.data(), u8.raw_data(), img.pixels.size());
  return img;
}

void require_same_bytes(const Image& got, const Tensor& want, const std::string& what) {
  INFO(what);
  REQUIRE(got.height == want.size(0));
  REQUIRE(got.width == want.size(1));
  REQUIRE(size_t(want.numel()) == got.pixels.size());
  const uint8_t* w = want.data<uint8_t>();
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.pixels.size(); ++i)
    if (got.pixels[i] != w[i] && bad++ == 0) first = i;
  INFO(bad << " bytes differ, the first at " << first << ": " << int(got.pixels[first]) << " vs "
            << int(w[first]) << " (pixel " << first / got.channels << " of a " << got.width << "x"
            << got.height << "x" << got.channels << " image)");
  REQUIRE(bad == 0);
}

void require_same_labels(const int64_t* got, const Tensor& want, const std::string& what) {
  INFO(what);
  const int64_t* w = want.data<int64_t>();
  int64_t bad = 0, first = 0;
  for (int64_t i = 0; i < want.numel(); ++i)
    if (got[i] != w[i] && bad++ == 0) first = i;
  INFO(bad << " labels differ, the first at " << first << ": " << got[first] << " vs " << w[first]);
  REQUIRE(bad == 0);
}

SegOptions options_of(const std::string& c) {
  SegOptions o;
  o.base_size = ref().opt(c, "base_size");
  o.crop_h = ref().opt(c, "crop_h");
  o.crop_w = ref().opt(c, "crop_w");
  o.downsample_rate = ref().opt(c, "downsample_rate");
  o.scale_factor = 16;
  return o;
}

Image mapped_src_labels() {
  Image ids = to_image(ref().at("sample_src/labels"));
  SegOptions o;
  map_label_ids(ids, seg_label_table(o.mapping, o.ignore_label, o.num_classes), "sample_src", o);
  return ids;
}

void write_text(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

// A labelled list of the reference sample in `dir`: image, labels (label ids), list/val.lst.
void write_sample_set(const test::TempDir& dir) {
  fs::create_directories(dir.path / "img");
  write_image(to_image(ref().at("sample_src/image")), dir / "img/a_leftImg8bit.png");
  write_image(to_image(ref().at("sample_src/labels")), dir / "img/a_gtFine_labelIds.png");
  write_text(dir / "list/val.lst", "img/a_leftImg8bit.png\timg/a_gtFine_labelIds.png\n");
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("resize_linear and resize_nearest equal cv2.resize bit for bit", "[segmentation]") {
  const auto lin = ref().cases("linear"), near = ref().cases("nearest");
  REQUIRE(lin.size() == 30);
  REQUIRE(near.size() == 30);
  for (const auto& c : lin) {
    const Tensor& out = ref().at(c + "/out");
    require_same_bytes(resize_linear(to_image(ref().at(c + "/src")), int(out.size(1)),
                                     int(out.size(0))),
                       out, c);
  }
  for (const auto& c : near) {
    const Tensor& out = ref().at(c + "/out");
    require_same_bytes(resize_nearest(to_image(ref().at(c + "/src")), int(out.size(1)),
                                      int(out.size(0))),
                       out, c);
  }
}

TEST_CASE("DOWNSAMPLERATE equals cv2.resize(fx=1/rate, INTER_NEAREST)", "[segmentation]") {
  const auto cs = ref().cases("downsample");
  REQUIRE(cs.size() == 5);
  for (const auto& c : cs) {
    const double f = 1. / ref().opt(c, "rate");
    require_same_bytes(resize_nearest_scale(to_image(ref().at(c + "/src")), f, f),
                       ref().at(c + "/out"), c);
  }
}

// A wider sweep, not run by ctest: tools/gen_seg_reference.py --sweep-out FILE writes 3000 random
// cv2.resize cases (1-4 channels, up to 300 pixels a side), then
// HR_SEG_RESIZE_FUZZ=FILE test_segmentation_data '[.segmentation_fuzz]'.
TEST_CASE("resize sweep against a cv2 file given by HR_SEG_RESIZE_FUZZ", "[.segmentation_fuzz]") {
  const char* path = std::getenv("HR_SEG_RESIZE_FUZZ");
  REQUIRE(path != nullptr);
  const Ref fz(path);
  int n = 0;
  for (const char* op : {"linear", "nearest"})
    for (const auto& c : fz.cases(op)) {
      const Tensor& out = fz.at(c + "/out");
      const Image src = to_image(fz.at(c + "/src"));
      const Image got = std::string(op) == "linear"
                            ? resize_linear(src, int(out.size(1)), int(out.size(0)))
                            : resize_nearest(src, int(out.size(1)), int(out.size(0)));
      require_same_bytes(got, out, c);
      ++n;
    }
  WARN(n << " resizes equal cv2's");
}

TEST_CASE("the Cityscapes label table equals convert_label", "[segmentation]") {
  const auto t = seg_label_table(SegLabelMapping::cityscapes, 255, 19);
  const uint8_t* ids = ref().at("mapping/ids").data<uint8_t>();
  const uint8_t* mapped = ref().at("mapping/mapped").data<uint8_t>();
  int train = 0, ignored = 0, bad = 0;
  for (int i = 0; i < 256; ++i) {
    INFO("id " << int(ids[i]));
    if (t[ids[i]] == kSegBadId) {
      // convert_label leaves it unchanged: a class that does not exist
      REQUIRE(mapped[i] == ids[i]);
      REQUIRE(ids[i] >= 34);
      REQUIRE(ids[i] <= 254);
      ++bad;
    } else {
      REQUIRE(t[ids[i]] == mapped[i]);
      (mapped[i] == 255 ? ignored : train)++;
    }
  }
  REQUIRE(train == 19);
  REQUIRE(ignored == 16);  // 15 void ids and 255 itself
  REQUIRE(bad == 221);
  for (int k = 0; k < 19; ++k) REQUIRE(t[kCityscapesLabelIds[size_t(k)]] == k);

  // identity: train ids and the ignore label pass, anything else is an error
  const auto id = seg_label_table(SegLabelMapping::identity, 255, 20);
  REQUIRE(id[0] == 0);
  REQUIRE(id[19] == 19);
  REQUIRE(id[20] == kSegBadId);
  REQUIRE(id[255] == 255);
  REQUIRE_THROWS_WITH(seg_label_table(SegLabelMapping::cityscapes, 255, 20),
                      Catch::Contains("19 classes"));
  REQUIRE_THROWS_WITH(seg_label_table(SegLabelMapping::cityscapes, -1, 19),
                      Catch::Contains("outside 0..255"));

  Image lab(4, 3, 1, 7);
  lab.pixels[6] = 40;
  lab.pixels[7] = 40;
  SegOptions o;
  const std::string msg = error_of([&] { map_label_ids(lab, t, "dir/x_labelIds.png", o); });
  REQUIRE_THAT(msg, Catch::Contains("dir/x_labelIds.png") && Catch::Contains("id 40 at (2, 1)") &&
                        Catch::Contains("2 such pixels"));
  REQUIRE(msg.find('\n') == std::string::npos);
}

TEST_CASE("make_seg_sample equals the official gen_sample for given draws", "[segmentation]") {
  const Image rgb = to_image(ref().at("sample_src/image"));
  const Image ids = mapped_src_labels();
  const auto cs = ref().cases("gen_sample");
  REQUIRE(cs.size() == 8);
  for (const auto& c : cs) {
    const SegOptions o = options_of(c);
    SegAugment a;
    a.scale_step = ref().opt(c, "scale_step");
    a.crop_x = ref().opt(c, "crop_x");
    a.crop_y = ref().opt(c, "crop_y");
    a.flip = ref().opt(c, "flip") != 0;
    const Tensor& want_in = ref().at(c + "/input");
    const Tensor& want_lab = ref().at(c + "/label");
    REQUIRE(want_in.shape() == Shape{3, o.crop_h, o.crop_w});
    const auto ls = seg_label_size(o);
    REQUIRE(want_lab.shape() == Shape{ls[0], ls[1]});
    std::vector<float> in(size_t(want_in.numel()));
    std::vector<int64_t> lab(size_t(want_lab.numel()));
    make_seg_sample(rgb, ids, o, a, in.data(), lab.data());
    {
      INFO(c);
      const auto cmp = test::compare(in.data(), want_in.data<float>(), in.size(), 1e-6, 0, "input");
      INFO(cmp.report);
      REQUIRE(cmp.ok);
    }
    // in fact the very same floats
    REQUIRE(std::memcmp(in.data(), want_in.raw_data(), in.size() * 4) == 0);
    require_same_labels(lab.data(), want_lab, c);
  }
}

TEST_CASE("the validation sample read from files equals the official", "[segmentation]") {
  test::TempDir dir;
  write_sample_set(dir);
  const SegList l = read_seg_list(dir.path.string(), "list/val.lst");
  REQUIRE(l.labelled);
  REQUIRE(l.items.size() == 1);
  REQUIRE(l.items[0].name == "a_gtFine_labelIds");
  REQUIRE(l.items[0].image == dir / "img/a_leftImg8bit.png");
  SegOptions o;
  o.multi_scale = o.flip = false;
  o.crop_h = 30;
  o.crop_w = 60;
  const SegmentationDataset ds(l, o);
  const SegFullSample s = ds.load_full(0);
  REQUIRE(s.name == "a_gtFine_labelIds");
  REQUIRE(s.image.shape() == Shape{3, 30, 60});
  REQUIRE(s.label.shape() == Shape{30, 60});
  REQUIRE(std::memcmp(s.image.raw_data(), ref().at("val/input").raw_data(), 3 * 30 * 60 * 4) == 0);
  require_same_labels(s.label.data<int64_t>(), ref().at("val/label"), "val");
  require_same_bytes(s.rgb, ref().at("sample_src/image"), "rgb");

  // without multi-scale the training sample is the whole image (here the crop's size)
  std::vector<float> in(3 * 30 * 60);
  std::vector<int64_t> lab(30 * 60);
  ds.load(0, 1, {in.data(), lab.data()});
  require_same_labels(lab.data(), ref().at("val/label"), "whole image");
}

TEST_CASE("the dataset draws its augmentation from the sample seed alone", "[segmentation]") {
  test::TempDir dir;
  write_sample_set(dir);
  SegOptions o;
  o.base_size = 60;
  o.crop_h = 24;
  o.crop_w = 40;
  o.scale_factor = 10;
  const SegmentationDataset ds(read_seg_list(dir.path.string(), "list/val.lst"), o);
  const auto f = ds.fields();
  REQUIRE(f.size() == 2);
  REQUIRE(f[0].name == "input");
  REQUIRE(f[0].shape == Shape{3, 24, 40});
  REQUIRE(f[1].name == "label");
  REQUIRE(f[1].shape == Shape{24, 40});
  REQUIRE(f[1].dtype == DType::i64);

  const Image rgb = to_image(ref().at("sample_src/image"));
  const Image ids = mapped_src_labels();
  std::set<int> steps;
  int flips = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    std::vector<float> in(3 * 24 * 40), in2(in.size()), want(in.size());
    std::vector<int64_t> lab(24 * 40), lab2(lab.size()), want_lab(lab.size());
    ds.load(0, seed, {in.data(), lab.data()});
    ds.load(0, seed, {in2.data(), lab2.data()});
    REQUIRE(in == in2);
    REQUIRE(lab == lab2);
    std::mt19937_64 rng(seed);
    const SegAugment a = draw_seg_augment(60, 30, o, rng);
    REQUIRE(a.scale_step >= 0);
    REQUIRE(a.scale_step <= 10);
    const auto s = seg_scaled_size(60, 30, 60, seg_rand_scale(a.scale_step));
    REQUIRE(a.crop_x <= std::max(s[0], 40) - 40);
    REQUIRE(a.crop_y <= std::max(s[1], 24) - 24);
    steps.insert(a.scale_step);
    flips += a.flip;
    make_seg_sample(rgb, ids, o, a, want.data(), want_lab.data());
    REQUIRE(in == want);
    REQUIRE(lab == want_lab);
    if (seed % 20 == 0) {  // the raw input: the crop's bytes, normalised by the dataset's table
      Tensor bytes = Tensor::empty({1, 24, 40 * 3}, DType::u8);
      std::vector<int64_t> lab3(lab.size());
      ds.load_raw(0, seed, {bytes.raw_data(), lab3.data()});
      REQUIRE(lab3 == lab);
      const Tensor lut = Tensor::from_vector(
          std::vector<float>(ds.input_lut(), ds.input_lut() + 768), {3, 256});
      REQUIRE(ops::normalize_u8(bytes, lut).to_vector() == in);
    }
  }
  REQUIRE(steps.size() == 11);
  REQUIRE(flips > 70);
  REQUIRE(flips < 130);
  // the scaled sizes of multi_scale_aug
  REQUIRE(seg_scaled_size(2048, 1024, 2048, 0.5 + 7 / 10.0) == std::array<int, 2>{2458, 1229});
  REQUIRE(seg_scaled_size(100, 300, 64, 0.5) == std::array<int, 2>{11, 32});
  SegOptions d;
  d.crop_h = 512;
  d.crop_w = 1023;
  d.downsample_rate = 2;
  REQUIRE(seg_label_size(d) == std::array<int, 2>{256, 512});  // round half to even
}

TEST_CASE("list files: labelled, test lists and bad lines", "[segmentation]") {
  test::TempDir dir;
  write_text(dir / "l/train.lst",
             "leftImg8bit/train/x/x_000001_000019_leftImg8bit.png\tgtFine/train/x/"
             "x_000001_000019_gtFine_labelIds.png\n\n  a.png   b.png  \n");
  const SegList l = read_seg_list(dir.path.string() + "/", "l/train.lst");
  REQUIRE(l.labelled);
  REQUIRE(l.items.size() == 2);
  REQUIRE(l.items[0].name == "x_000001_000019_gtFine_labelIds");
  REQUIRE(l.items[1].image == dir / "a.png");
  REQUIRE(l.items[1].label == dir / "b.png");
  write_text(dir / "l/test.lst", "leftImg8bit/test/b/b_000000_000019_leftImg8bit.png\n");
  const SegList t = read_seg_list(dir.path.string(), "l/test.lst");
  REQUIRE(!t.labelled);
  REQUIRE(t.items[0].label.empty());
  REQUIRE(t.items[0].name == "b_000000_000019_leftImg8bit");

  write_text(dir / "l/bad.lst", "a.png b.png\na.png b.png c.png\n");
  std::string m = error_of([&] { read_seg_list(dir.path.string(), "l/bad.lst"); });
  REQUIRE_THAT(m, Catch::Contains("bad.lst:2") && Catch::Contains("3 fields"));
  write_text(dir / "l/mixed.lst", "a.png b.png\n\nc.png\n");
  m = error_of([&] { read_seg_list(dir.path.string(), "l/mixed.lst"); });
  REQUIRE_THAT(m, Catch::Contains("mixed.lst:3") && Catch::Contains("line 1"));
  write_text(dir / "l/empty.lst", "\n\n");
  REQUIRE_THROWS_WITH(read_seg_list(dir.path.string(), "l/empty.lst"),
                      Catch::Contains("empty.lst lists no image"));
  REQUIRE_THROWS_WITH(read_seg_list(dir.path.string(), "l/none.lst"),
                      Catch::Contains("cannot open the list file") && Catch::Contains("none.lst"));
}

TEST_CASE("bad samples are one-line errors naming the file, or skipped", "[segmentation]") {
  test::TempDir dir;
  write_sample_set(dir);
  const Image rgb = to_image(ref().at("sample_src/image"));
  Image labels = to_image(ref().at("sample_src/labels"));
  write_image(Image(59, 30, 1, 7), dir / "img/small_gtFine_labelIds.png");
  labels.pixels[5 * 60 + 9] = 34;  // no such Cityscapes id
  write_image(labels, dir / "img/badid_gtFine_labelIds.png");
  write_image(rgb, dir / "img/rgb_gtFine_labelIds.png");  // colour label file
  write_text(dir / "list/bad.lst",
             "img/a_leftImg8bit.png img/missing_gtFine_labelIds.png\n"
             "img/a_leftImg8bit.png img/small_gtFine_labelIds.png\n"
             "img/a_leftImg8bit.png img/badid_gtFine_labelIds.png\n"
             "img/a_leftImg8bit.png img/rgb_gtFine_labelIds.png\n"
             "img/missing_leftImg8bit.png img/a_gtFine_labelIds.png\n");
  SegOptions o;
  o.base_size = 60;
  o.crop_h = 16;
  o.crop_w = 16;
  const SegmentationDataset ds(read_seg_list(dir.path.string(), "list/bad.lst"), o);
  REQUIRE(!ds.skip_corrupt());
  std::vector<float> in(3 * 16 * 16);
  std::vector<int64_t> lab(16 * 16);
  auto load = [&](size_t i) { return error_of([&] { ds.load(i, 0, {in.data(), lab.data()}); }); };
  const std::string missing = load(0), small = load(1), badid = load(2), colour = load(3),
                    noimage = load(4);
  INFO(missing << "\n" << small << "\n" << badid << "\n" << colour << "\n" << noimage);
  REQUIRE_THAT(missing, Catch::Contains("missing_gtFine_labelIds.png"));
  REQUIRE_THAT(small, Catch::Contains("small_gtFine_labelIds.png is 59x30") &&
                          Catch::Contains("a_leftImg8bit.png is 60x30"));
  REQUIRE_THAT(badid, Catch::Contains("badid_gtFine_labelIds.png: id 34 at (9, 5)") &&
                          Catch::Contains("Cityscapes label id"));
  REQUIRE_THAT(colour, Catch::Contains("rgb_gtFine_labelIds.png") && Catch::Contains("8-bit RGB"));
  REQUIRE_THAT(noimage, Catch::Contains("missing_leftImg8bit.png"));
  for (const auto& m : {missing, small, badid, colour, noimage})
    REQUIRE(m.find('\n') == std::string::npos);
  REQUIRE_THROWS_WITH(ds.load_full(2), Catch::Contains("badid_gtFine_labelIds.png"));

  // skip_corrupt: the loader skips and counts what load() throws
  SegOptions s = o;
  s.skip_corrupt = true;
  REQUIRE(SegmentationDataset(read_seg_list(dir.path.string(), "list/bad.lst"), s).skip_corrupt());

  // without multi-scale an image of another size than the crop cannot be a sample
  SegOptions w = o;
  w.multi_scale = false;
  const SegmentationDataset whole(read_seg_list(dir.path.string(), "list/val.lst"), w);
  REQUIRE_THAT(error_of([&] { whole.load(0, 0, {in.data(), lab.data()}); }),
               Catch::Contains("a_leftImg8bit.png") && Catch::Contains("crop size 16x16"));

  // a test list: full samples without labels, no training samples
  write_text(dir / "list/test.lst", "img/a_leftImg8bit.png\n");
  const SegmentationDataset test(read_seg_list(dir.path.string(), "list/test.lst"), o);
  const SegFullSample f = test.load_full(0);
  REQUIRE(f.image.shape() == Shape{3, 30, 60});
  REQUIRE(!f.label.defined());
  REQUIRE(f.name == "a_leftImg8bit");
  REQUIRE_THAT(error_of([&] { test.load(0, 0, {in.data(), lab.data()}); }),
               Catch::Contains("test list"));

  // options
  SegOptions bad = o;
  bad.ignore_label = 300;
  REQUIRE_THROWS_WITH(SegmentationDataset(read_seg_list(dir.path.string(), "list/val.lst"), bad),
                      Catch::Contains("ignore label 300"));
}

TEST_CASE("label files: 8-bit grey only", "[segmentation]") {
  test::TempDir dir;
  Image g(5, 4, 1);
  for (size_t i = 0; i < g.pixels.size(); ++i) g.pixels[i] = uint8_t(i * 13);
  write_image(g, dir / "g.png");
  const Image r = read_gray_image(dir / "g.png");
  REQUIRE(r.channels == 1);
  REQUIRE(r.pixels == g.pixels);
  Image ga(5, 4, 4, 9);
  write_image(ga, dir / "rgba.png");
  REQUIRE_THROWS_WITH(read_gray_image(dir / "rgba.png"),
                      Catch::Contains("rgba.png") && Catch::Contains("8-bit RGBA"));
  // a 16-bit grey PNG (IHDR bit depth 16): rejected before decoding
  {
    std::string png = test::slurp(dir / "g.png");
    REQUIRE(png.size() > 33);
    png[24] = 16;  // IHDR bit depth, and the chunk's CRC to match
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 12; i < 29; ++i) {
      c ^= uint8_t(png[i]);
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    }
    c ^= 0xFFFFFFFFu;
    for (int k = 0; k < 4; ++k) png[29 + size_t(k)] = char(c >> (24 - 8 * k));
    std::ofstream(dir / "g16.png", std::ios::binary) << png;
    REQUIRE_THROWS_WITH(read_gray_image(dir / "g16.png"),
                        Catch::Contains("g16.png") && Catch::Contains("16-bit grey"));
  }
  REQUIRE_THROWS_WITH(read_gray_image(dir / "none.png"), Catch::Contains("none.png"));
}
