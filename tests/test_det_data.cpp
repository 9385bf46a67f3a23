// Detection data (data/detection.h) against HRNet-FCOS's own pipeline
// (tests/data/det/det_reference.safetensors from tools/gen_det_data_reference.py): Pillow's
// bilinear resize bit for bit, Resize.get_size, BoxList's convert / clip_to_image / resize /
// transpose, the whole transform to the padded normalised tensor, COCODataset's filtering; then
// the dataset's fields on a small COCO folder written here (targets equal to fcos_targets called
// directly, zero padding, flips consistent) and bad data.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "data/detection.h"
#include "data/loader.h"
#include "data/random.h"
#include "engine/ops.h"
#include "ref_data.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace hr;
using namespace hr::data;

namespace {

const test::RefData& ref() {
  static const test::RefData r("det/det_reference.safetensors");
  return r;
}

Image to_image(const Tensor& u8) {  // [H,W,3]
  Image img(static_cast<int>(u8.size(1)), static_cast<int>(u8.size(0)), 3);
  std::memcpy(img.pixels.data(), u8.raw_data(), img.pixels.size());
  return img;
}

void require_same_pixels(const Image& got, const Tensor& want, const std::string& what) {
  INFO(what);
  REQUIRE(got.height == want.size(0));
  REQUIRE(got.width == want.size(1));
  const uint8_t* w = want.data<uint8_t>();
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.pixels.size(); ++i)
    if (got.pixels[i] != w[i] && bad++ == 0) first = i;
  INFO("first difference at byte " << first << ": " << int(got.pixels[first]) << " vs "
                                   << int(w[first]) << " (" << bad << " bytes differ)");
  REQUIRE(bad == 0);
}

std::vector<Box> to_boxes(const Tensor& t) {  // [N,4]
  std::vector<Box> b(size_t(t.numel() / 4));
  const float* p = t.data<float>();
  for (size_t i = 0; i < b.size(); ++i) b[i] = {p[4 * i], p[4 * i + 1], p[4 * i + 2], p[4 * i + 3]};
  return b;
}

// Bit-equal floats (boxes and inputs are float32 as the official tensors).
void require_same_floats(const float* got, const float* want, size_t n, const std::string& what) {
  INFO(what);
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < n; ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0 && bad++ == 0) first = i;
  if (bad) INFO("first difference at " << first << ": " << got[first] << " vs " << want[first]);
  REQUIRE(bad == 0);
}

void require_same_boxes(const std::vector<Box>& got, const Tensor& want, const std::string& what) {
  INFO(what);
  REQUIRE(int64_t(got.size()) * 4 == want.numel());
  if (got.empty()) return;  // (got.data() may be null: no member of it to take)
  require_same_floats(&got.data()->x1, want.data<float>(), got.size() * 4, what);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

void write_text(const fs::path& p, const std::string& s) {
  std::ofstream f(p);
  f << s;
}

std::vector<double> numbers(std::string s) {  // "[1.5, 2]" -> {1.5, 2}
  for (char& c : s)
    if (c == '[' || c == ']' || c == ',') c = ' ';
  std::istringstream in(s);
  std::vector<double> v;
  for (double x; in >> x;) v.push_back(x);
  return v;
}

}  // namespace

TEST_CASE("Pillow's bilinear resize bit for bit", "[det_data]") {
  for (int k = 0; k < 40; ++k) {  // the script's 40 cases
    char name[32];
    std::snprintf(name, sizeof name, "resize_%02d", k);
    const Image src = to_image(ref().at(std::string(name) + "/src"));
    const Tensor& out = ref().at(std::string(name) + "/out");
    const int oh = int(out.size(0)), ow = int(out.size(1));
    require_same_pixels(resize_bilinear_pil(src, ow, oh), out,
                        str_cat(name, ": ", src.width, "x", src.height, " -> ", ow, "x", oh));
  }
}

TEST_CASE("Resize.get_size", "[det_data]") {
  const Tensor& rows = ref().at("get_size/rows");
  const int64_t* r = rows.data<int64_t>();
  REQUIRE(rows.size(0) > 400);
  for (int64_t i = 0; i < rows.size(0); ++i, r += 6) {
    INFO("w " << r[0] << " h " << r[1] << " min " << r[2] << " max " << r[3]);
    const auto s = det_resize_size(int(r[0]), int(r[1]), int(r[2]), int(r[3]));
    REQUIRE(s[0] == r[4]);
    REQUIRE(s[1] == r[5]);
  }
}

TEST_CASE("BoxList convert, clip_to_image, resize, transpose", "[det_data]") {
  for (const char* c : {"boxes_same_ratio", "boxes_two_ratios", "boxes_down", "boxes_identity"}) {
    const std::string n = c;
    const int w = int(ref().num(n, "w")), h = int(ref().num(n, "h"));
    const int nw = int(ref().num(n, "new_w")), nh = int(ref().num(n, "new_h"));
    const Tensor& xywh = ref().at(n + "/xywh");
    std::vector<Box> boxes;
    for (int64_t i = 0; i < xywh.size(0); ++i) {
      const float* p = xywh.data<float>() + 4 * i;
      boxes.push_back(box_from_xywh({p[0], p[1], p[2], p[3]}));
    }
    require_same_boxes(boxes, ref().at(n + "/xyxy"), n + " xyxy");
    const std::vector<size_t> keep = det_clip_boxes(boxes, w, h, true);
    require_same_boxes(boxes, ref().at(n + "/clipped"), n + " clipped");
    const auto want_keep = ref().at(n + "/keep").to_vector_i64();
    REQUIRE(std::vector<int64_t>(keep.begin(), keep.end()) == want_keep);
    const std::vector<Box> resized = det_resize_boxes(boxes, w, h, nw, nh);
    require_same_boxes(resized, ref().at(n + "/resized"), n + " resized");
    require_same_boxes(det_flip_boxes(resized, nw), ref().at(n + "/flipped"), n + " flipped");
    std::vector<float> back;
    for (const Box& b : resized)
      for (float v : det_box_to_coco(b, nw, nh, w, h)) back.push_back(v);
    const Tensor& want = ref().at(n + "/coco_xywh");
    REQUIRE(int64_t(back.size()) == want.numel());
    require_same_floats(back.data(), want.data<float>(), back.size(), n + " coco xywh");
  }
  // clip without removal keeps every box, clamped
  std::vector<Box> b{{-3, 2, 50, 60}, {5, 5, 5, 5}};
  REQUIRE(det_clip_boxes(b, 40, 30, false).size() == 2);
  REQUIRE(b[0].x1 == 0);
  REQUIRE(b[0].x2 == 39);
  REQUIRE(b[0].y2 == 29);
}

TEST_CASE("the transform: resize, flip, normalise, pad", "[det_data]") {
  for (const char* c :
       {"transform_train_flip", "transform_cap", "transform_down_rgb", "transform_same"}) {
    const std::string n = c;
    INFO(n);
    DetTransformOptions o;
    o.min_sizes = {int(ref().num(n, "min_size"))};
    o.max_size = int(ref().num(n, "max_size"));
    o.to_bgr255 = ref().flag(n, "to_bgr255");
    o.size_divisibility = int(ref().num(n, "div"));
    const auto mean = numbers(ref().opt(n, "mean")), std = numbers(ref().opt(n, "std"));
    REQUIRE(mean.size() == 3);
    REQUIRE(std.size() == 3);
    for (size_t k = 0; k < 3; ++k) {
      o.pixel_mean[k] = float(mean[k]);
      o.pixel_std[k] = float(std[k]);
    }
    DetAugment a;
    a.min_size = o.min_sizes[0];
    a.flip = ref().flag(n, "flip");
    const Image src = to_image(ref().at(n + "/src"));
    const DetTransformed t = det_transform(src, to_boxes(ref().at(n + "/boxes")), o, a);
    require_same_pixels(t.image, ref().at(n + "/image"), n + " image");
    require_same_boxes(t.boxes, ref().at(n + "/out_boxes"), n + " boxes");
    const Tensor& padded = ref().at(n + "/padded");
    const int H = int(padded.size(1)), W = int(padded.size(2));
    std::vector<float> in(size_t(3) * H * W, -1.f);
    det_normalize(t.image, o, H, W, in.data());
    require_same_floats(in.data(), padded.data<float>(), in.size(), n + " input");
    if (!a.flip) {  // the test input is the same transform
      const DetTestInput ti = det_test_input(src, o);
      REQUIRE(ti.padded_h == H);
      REQUIRE(ti.padded_w == W);
      REQUIRE(ti.image_h == t.image.height);
      REQUIRE(ti.image_w == t.image.width);
      REQUIRE(ti.orig_h == src.height);
      REQUIRE(ti.orig_w == src.width);
      require_same_floats(ti.input.data(), padded.data<float>(), in.size(), n + " test input");
    }
  }
}

TEST_CASE("COCODataset's records: crowds, empty images, clipping, contiguous labels", "[det_data]") {
  const std::string dir = std::string(HR_TEST_DATA_DIR) + "/det";
  const CocoInstances coco = load_coco_instances(dir + "/instances_tiny.json");
  for (const char* c : {"records_train", "records_test"}) {
    const std::string n = c;
    INFO(n);
    const auto recs = det_records(coco, "imgs", ref().flag(n, "remove"));
    const auto ids = ref().at(n + "/ids").to_vector_i64();
    REQUIRE(recs.size() == ids.size());
    for (size_t i = 0; i < recs.size(); ++i) {
      const DetRecord& r = recs[i];
      REQUIRE(r.image_id == ids[i]);
      const std::string key = n + "/" + std::to_string(r.image_id);
      require_same_boxes(r.boxes, ref().at(key + "/boxes"), key);
      REQUIRE(r.labels == ref().at(key + "/labels").to_vector_i64());
      REQUIRE(r.file == (fs::path("imgs") / str_cat(r.image_id < 10 ? "00000000000" : "0000000000",
                                                    r.image_id, ".jpg"))
                            .string());
    }
  }
  // training keeps the image with only a crowd annotation (coco.py looks at every annotation),
  // with no box
  const auto train = det_records(coco, "imgs", true);
  bool crowd_only = false;
  for (const auto& r : train) crowd_only |= r.image_id == 3 && r.boxes.empty();
  REQUIRE(crowd_only);
}

TEST_CASE("transform options", "[det_data]") {
  REQUIRE(det_train_min_sizes({640, 672}) == std::vector<int>{640, 672});
  REQUIRE(det_train_min_sizes({800}, {640, 644}) == std::vector<int>{640, 641, 642, 643, 644});
  REQUIRE_THROWS_WITH(det_train_min_sizes({800}, {700, 600}),
                      Catch::Contains("MIN_SIZE_RANGE_TRAIN"));
  const DetTransformOptions tr = det_train_transform({256, 288}, 320), te = det_test_transform(256, 320);
  REQUIRE(tr.flip_prob == 0.5);
  REQUIRE(te.flip_prob == 0);
  REQUIRE(te.min_sizes == std::vector<int>{256});
  DetTransformOptions bad = tr;
  bad.pixel_std[1] = 0;
  REQUIRE_THROWS_WITH(check_det_transform(bad), Catch::Contains("PIXEL_STD"));
  bad = tr;
  bad.min_sizes.clear();
  REQUIRE_THROWS_WITH(check_det_transform(bad), Catch::Contains("minimum size"));
  // the draws: every min size is chosen, flips about half the time
  std::set<int> seen;
  int flips = 0;
  for (uint64_t s = 0; s < 400; ++s) {
    std::mt19937_64 rng(s);
    const DetAugment a = draw_det_augment(tr, rng);
    seen.insert(a.min_size);
    flips += a.flip;
  }
  REQUIRE(seen == std::set<int>{256, 288});
  REQUIRE(flips > 150);
  REQUIRE(flips < 250);
  for (uint64_t s = 0; s < 50; ++s) {
    std::mt19937_64 rng(s);
    REQUIRE(!draw_det_augment(te, rng).flip);
  }
}

namespace {

// A small COCO instances folder: images of distinct sizes with boxes over coloured rectangles.
struct TinyCoco {
  test::TempDir dir;
  std::vector<Image> images;
  TinyCoco() {
    fs::create_directories(dir.path / "img");
    const int sizes[4][2] = {{60, 40}, {40, 52}, {64, 64}, {50, 30}};
    std::ostringstream js;
    js << "{\"images\": [";
    for (int i = 0; i < 4; ++i) {
      Image img(sizes[i][0], sizes[i][1], 3);
      for (size_t p = 0; p < img.pixels.size(); ++p) img.pixels[p] = uint8_t((p * 37 + i * 11) % 251);
      write_image(img, (dir.path / "img" / str_cat("im", i + 1, ".png")).string());
      images.push_back(img);
      js << (i ? ", " : "") << "{\"id\": " << i + 1 << ", \"file_name\": \"im" << i + 1
         << ".png\", \"width\": " << img.width << ", \"height\": " << img.height << "}";
    }
    js << "], \"annotations\": ["
       << "{\"id\": 1, \"image_id\": 1, \"category_id\": 3, \"bbox\": [4, 6, 30, 20], \"area\": 600, "
          "\"iscrowd\": 0, \"segmentation\": [[4, 6, 34, 6, 34, 26]]}, "
       << "{\"id\": 2, \"image_id\": 1, \"category_id\": 1, \"bbox\": [30.5, 2, 25, 35], \"area\": 875, "
          "\"iscrowd\": 0, \"segmentation\": [[30, 2, 55, 2, 55, 37]]}, "
       << "{\"id\": 3, \"image_id\": 2, \"category_id\": 1, \"bbox\": [2, 3, 36, 45], \"area\": 1620, "
          "\"iscrowd\": 0, \"segmentation\": [[2, 3, 38, 3, 38, 48]]}, "
       << "{\"id\": 4, \"image_id\": 3, \"category_id\": 3, \"bbox\": [10, 10, 12, 9], \"area\": 108, "
          "\"iscrowd\": 0, \"segmentation\": [[10, 10, 22, 10, 22, 19]]}, "
       << "{\"id\": 5, \"image_id\": 3, \"category_id\": 1, \"bbox\": [20, 8, 40, 50], \"area\": 2000, "
          "\"iscrowd\": 0, \"segmentation\": [[20, 8, 60, 8, 60, 58]]}, "
       << "{\"id\": 6, \"image_id\": 4, \"category_id\": 3, \"bbox\": [5, 5, 20, 20], \"area\": 400, "
          "\"iscrowd\": 0, \"segmentation\": [[5, 5, 25, 5, 25, 25]]}"
       << "], \"categories\": [{\"id\": 1, \"name\": \"person\", \"supercategory\": \"person\"}, "
          "{\"id\": 3, \"name\": \"car\", \"supercategory\": \"vehicle\"}]}";
    write_text(dir.path / "instances.json", js.str());
  }
  std::vector<DetRecord> records() const {
    return det_records(load_coco_instances((dir.path / "instances.json").string()),
                       (dir.path / "img").string(), true);
  }
};

// Levels of a 64x64 canvas: strides 8..64 with ranges scaled down from FCOS' defaults.
std::vector<FcosLevel> tiny_levels(int H, int W) {
  std::vector<FcosLevel> l;
  const double lo[4] = {-1, 8, 16, 32}, hi[4] = {8, 16, 32, 1e8};
  for (int k = 0; k < 4; ++k) {
    const int64_t s = int64_t(8) << k;
    l.push_back({s, (H + s - 1) / s, (W + s - 1) / s, lo[k], hi[k]});
  }
  return l;
}

DetDatasetOptions tiny_options() {
  DetDatasetOptions o;
  o.transform = det_train_transform({40, 48, 64}, 64);
  o.canvas_h = o.canvas_w = 64;
  o.levels = tiny_levels(64, 64);
  return o;
}

struct Fields {
  std::vector<float> input, reg, ctr, pos;
  std::vector<int64_t> labels;
  explicit Fields(const DetDataset& ds) {
    const auto f = ds.fields();
    input.resize(size_t(shape_numel(f[0].shape)));
    labels.resize(size_t(shape_numel(f[1].shape)));
    reg.resize(size_t(shape_numel(f[2].shape)));
    ctr.resize(size_t(shape_numel(f[3].shape)));
    pos.resize(size_t(shape_numel(f[4].shape)));
  }
  std::vector<void*> ptrs() { return {input.data(), labels.data(), reg.data(), ctr.data(), pos.data()}; }
};

}  // namespace

TEST_CASE("the dataset's fields: FCOS targets of the transformed boxes, zero padding, flips",
          "[det_data]") {
  TinyCoco tc;
  const DetDatasetOptions o = tiny_options();
  const DetDataset ds(tc.records(), o);
  REQUIRE(ds.size() == 4);
  const int64_t P = fcos_num_locations(o.levels);
  const auto f = ds.fields();
  REQUIRE(f.size() == 5);
  REQUIRE(f[0].name == "input");
  REQUIRE(f[0].shape == Shape{3, 64, 64});
  REQUIRE((f[1].name == "labels" && f[1].shape == Shape{P} && f[1].dtype == DType::i64));
  REQUIRE((f[2].name == "reg_targets" && f[2].shape == Shape{4, P} && f[2].dtype == DType::f32));
  REQUIRE((f[3].name == "centerness" && f[3].shape == Shape{P}));
  REQUIRE((f[4].name == "positive" && f[4].shape == Shape{P}));

  Fields got(ds);
  REQUIRE(o.transform.to_bgr255);  // the raw input's channels are swapped too
  const auto rf = raw_fields(ds);
  REQUIRE(rf.size() == 6);
  REQUIRE((rf[0].shape == Shape{64, 64 * 3} && rf[0].dtype == DType::u8));
  REQUIRE((rf[5].name == kInputSizeField && rf[5].shape == Shape{2} && rf[5].dtype == DType::i64));
  const Tensor lut =
      Tensor::from_vector(std::vector<float>(ds.input_lut(), ds.input_lut() + 768), {3, 256});
  int flipped = 0, unflipped = 0, positives = 0;
  for (size_t i = 0; i < ds.size(); ++i)
    for (uint64_t seed = 0; seed < 6; ++seed) {
      INFO("image " << i << " seed " << seed);
      ds.load(i, seed, got.ptrs());
      // the same steps by hand
      const DetRecord& r = ds.record(i);
      std::mt19937_64 rng(seed);
      const DetAugment a = draw_det_augment(o.transform, rng);
      const DetTransformed t = det_transform(tc.images[i], r.boxes, o.transform, a);
      (a.flip ? flipped : unflipped)++;
      std::vector<float> in(got.input.size(), -1.f);
      det_normalize(t.image, o.transform, 64, 64, in.data());
      require_same_floats(got.input.data(), in.data(), in.size(), "input");
      std::vector<int64_t> labels(static_cast<size_t>(P));
      std::vector<float> reg(static_cast<size_t>(4 * P)), ctr(static_cast<size_t>(P));
      fcos_targets(o.levels, t.boxes, r.labels, labels.data(), reg.data(), ctr.data());
      REQUIRE(got.labels == labels);
      require_same_floats(got.reg.data(), reg.data(), reg.size(), "reg_targets");
      require_same_floats(got.ctr.data(), ctr.data(), ctr.size(), "centerness");
      for (int64_t p = 0; p < P; ++p) {
        REQUIRE(got.pos[size_t(p)] == (labels[size_t(p)] > 0 ? 1.f : 0.f));
        positives += labels[size_t(p)] > 0;
      }
      // padding: zero outside the resized image
      for (int c = 0; c < 3; ++c)
        for (int y = 0; y < 64; ++y)
          for (int x = 0; x < 64; ++x)
            if (y >= t.image.height || x >= t.image.width)
              REQUIRE(got.input[(size_t(c) * 64 + y) * 64 + x] == 0.f);
      // the sample's own account
      const DetSample s = ds.load_sample(i, seed, nullptr);
      REQUIRE(s.augment.min_size == a.min_size);
      REQUIRE(s.augment.flip == a.flip);
      REQUIRE(s.image_h == t.image.height);
      REQUIRE(s.image_w == t.image.width);
      REQUIRE(s.labels == r.labels);
      // the raw input (the canvas' bytes, BGR, and the image's size) normalises to the input
      // bit for bit, the padding included; the targets as load()'s
      Tensor bytes = Tensor::empty({1, 64, 64 * 3}, DType::u8);
      Tensor size = Tensor::empty({1, 2}, DType::i64);
      Fields raw(ds);
      std::vector<void*> rp = raw.ptrs();
      rp[0] = bytes.raw_data();
      rp.push_back(size.raw_data());
      ds.load_raw(i, seed, rp);
      REQUIRE(size.to_vector_i64() == std::vector<int64_t>{t.image.height, t.image.width});
      REQUIRE(raw.labels == got.labels);
      REQUIRE(raw.reg == got.reg);
      REQUIRE(raw.ctr == got.ctr);
      REQUIRE(raw.pos == got.pos);
      REQUIRE(ops::normalize_u8(bytes, lut, size).to_vector() == got.input);
    }
  REQUIRE(flipped > 0);
  REQUIRE(unflipped > 0);
  REQUIRE(positives > 0);

  // a flip mirrors the input and the boxes (x -> W - 1 - x) and nothing else
  const DetRecord& r = ds.record(0);
  DetAugment a;
  a.min_size = 48;
  const DetTransformed plain = det_transform(tc.images[0], r.boxes, o.transform, a);
  a.flip = true;
  const DetTransformed mirrored = det_transform(tc.images[0], r.boxes, o.transform, a);
  REQUIRE(plain.image.width == mirrored.image.width);
  for (int y = 0; y < plain.image.height; ++y)
    for (int x = 0; x < plain.image.width; ++x)
      for (int c = 0; c < 3; ++c)
        REQUIRE(plain.image.row(y)[3 * x + c] ==
                mirrored.image.row(y)[3 * (plain.image.width - 1 - x) + c]);
  REQUIRE(plain.boxes.size() == mirrored.boxes.size());
  for (size_t k = 0; k < plain.boxes.size(); ++k) {
    const float W = float(plain.image.width);
    REQUIRE(mirrored.boxes[k].x1 == W - plain.boxes[k].x2 - 1);
    REQUIRE(mirrored.boxes[k].x2 == W - plain.boxes[k].x1 - 1);
    REQUIRE(mirrored.boxes[k].y1 == plain.boxes[k].y1);
    REQUIRE(mirrored.boxes[k].y2 == plain.boxes[k].y2);
  }

  // an image left without boxes (only crowds, or all clipped away) is all background
  std::vector<DetRecord> none{ds.record(1)};
  none[0].boxes.clear();
  none[0].labels.clear();
  const DetDataset empty(none, o);
  empty.load(0, 0, got.ptrs());
  for (int64_t p = 0; p < P; ++p) {
    REQUIRE(got.labels[size_t(p)] == 0);
    REQUIRE(got.pos[size_t(p)] == 0.f);
  }

  // the loader stacks the fields
  LoaderOptions lo;
  lo.batch_size = 2;
  lo.workers = 1;
  lo.shuffle = false;
  DataLoader loader(ds, lo);
  loader.start_epoch(0);
  Batch b;
  REQUIRE(loader.next(b));
  REQUIRE(b.input().shape() == Shape{2, 3, 64, 64});
  REQUIRE(b["labels"].shape() == Shape{2, P});
  REQUIRE(b["reg_targets"].shape() == Shape{2, 4, P});
}

TEST_CASE("bad detection data: one-line errors naming the file, or skipped", "[det_data]") {
  TinyCoco tc;
  auto recs = tc.records();
  REQUIRE(recs.size() == 4);
  // a missing file, a corrupt one, one of another size than the annotation says
  recs[0].file = (tc.dir.path / "img" / "missing.png").string();
  write_text(tc.dir.path / "img" / "garbage.png", "not an image at all");
  recs[1].file = (tc.dir.path / "img" / "garbage.png").string();
  recs[2].width = 65;
  DetDatasetOptions o = tiny_options();
  const DetDataset ds(recs, o);
  REQUIRE(!ds.skip_corrupt());
  Fields f(ds);
  const std::string missing = error_of([&] { ds.load(0, 0, f.ptrs()); });
  const std::string garbage = error_of([&] { ds.load(1, 0, f.ptrs()); });
  const std::string size = error_of([&] { ds.load(2, 0, f.ptrs()); });
  INFO(missing << "\n" << garbage << "\n" << size);
  REQUIRE_THAT(missing, Catch::Contains("missing.png"));
  REQUIRE_THAT(garbage, Catch::Contains("garbage.png"));
  REQUIRE_THAT(size, Catch::Contains("im3.png is 64x64") && Catch::Contains("says 65x64"));
  for (const auto& m : {missing, garbage, size}) REQUIRE(m.find('\n') == std::string::npos);

  // an image that does not fit the canvas once resized
  DetDatasetOptions small = o;
  small.transform.min_sizes = {64};
  small.transform.max_size = 0;  // None: 60x40 -> 96x64
  const DetDataset big(tc.records(), small);
  REQUIRE_THAT(error_of([&] { big.load(0, 0, f.ptrs()); }),
               Catch::Contains("im1.png") && Catch::Contains("96x64") &&
                   Catch::Contains("64x64 canvas"));

  // options
  DetDatasetOptions bad = o;
  bad.canvas_w = 48;  // not a multiple of 32
  REQUIRE_THROWS_WITH(DetDataset(tc.records(), bad), Catch::Contains("size divisibility"));
  bad = o;
  bad.levels.clear();
  REQUIRE_THROWS_WITH(DetDataset(tc.records(), bad), Catch::Contains("FCOS level"));

  // skip_corrupt: the loader skips and counts what load() throws
  o.skip_corrupt = true;
  const DetDataset skipping(recs, o);
  REQUIRE(skipping.skip_corrupt());
  LoaderOptions lo;
  lo.batch_size = 4;
  lo.workers = 1;
  lo.shuffle = false;
  DataLoader loader(skipping, lo);
  loader.start_epoch(0);
  Batch b;
  REQUIRE(loader.next(b));
  REQUIRE(b.skipped == 3);
  REQUIRE(b.size() == 1);
  REQUIRE(b.errors.size() == 3);

  // the test input into a given canvas, or refused when it does not fit
  const DetTransformOptions te = det_test_transform(40, 64);
  const DetTestInput ti = det_test_input(tc.images[0], te, 64, 96);
  REQUIRE(ti.padded_h == 64);
  REQUIRE(ti.padded_w == 96);
  REQUIRE(ti.image_h == 40);
  REQUIRE(ti.image_w == 60);
  REQUIRE_THROWS_WITH(det_test_input(tc.images[0], te, 32, 32), Catch::Contains("32x32 canvas"));
}
