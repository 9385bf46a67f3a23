// Classification data (data/classification.h) against PIL and torchvision
// (tests/data/cls_reference.safetensors from tools/gen_cls_reference.py): Pillow's bilinear resize
// and RandomResizedCrop's crop + resize bit for bit, the evaluation transform to the normalised
// tensor, JPEG decoding, top-k accuracy; and the folder scan, list files, crop boxes, reduced
// JPEG decoding and bad inputs.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "data/classification.h"
#include "engine/checkpoint.h"
#include "engine/ops.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace hr;
using namespace hr::data;

namespace {

struct Ref {
  std::map<std::string, Tensor> t;
  std::map<std::string, std::string> meta;
  Ref() {
    for (auto& [k, v] : load_checkpoint(std::string(HR_TEST_DATA_DIR) + "/cls_reference.safetensors",
                                        &meta))
      t[k] = v;
  }
  const Tensor& at(const std::string& k) const {
    auto it = t.find(k);
    REQUIRE(it != t.end());
    return it->second;
  }
  // the JSON value of `key` in a case's metadata, as text
  std::string opt(const std::string& c, const std::string& key) const {
    const std::string& m = meta.at(c);
    const size_t p = m.find("\"" + key + "\": ");
    REQUIRE(p != std::string::npos);
    const size_t b = p + key.size() + 4, e = m.find_first_of(",}", m[b] == '[' ? m.find(']', b) : b);
    return m.substr(b, e - b);
  }
};
const Ref& ref() {
  static const Ref r;
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
                                   << int(w[first]));
  REQUIRE(bad == 0);
}

struct Scratch {
  fs::path dir;
  Scratch() {
    dir = fs::temp_directory_path() / ("hr_test_cls_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

Image noise(int w, int h, uint64_t seed) {
  Image img(w, h, 3);
  std::mt19937_64 rng(seed);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)  // smooth plus noise, as photographs
        img.row(y)[3 * x + c] = uint8_t(std::clamp(
            128.0 + 90 * std::sin(x / (4.0 + c) + y / 7.0) + double(rng() % 31) - 15, 0.0, 255.0));
  return img;
}

}  // namespace

TEST_CASE("resize equals Pillow's Image.resize(BILINEAR) bit for bit", "[classification]") {
  for (const char* c : {"resize_down", "resize_down_big", "resize_up", "resize_width_only",
                        "resize_height_only", "resize_mixed"}) {
    const Tensor& out = ref().at(std::string(c) + "/out");
    require_same_pixels(resize_bilinear_pil(to_image(ref().at(std::string(c) + "/src")),
                                            static_cast<int>(out.size(1)),
                                            static_cast<int>(out.size(0))),
                        out, c);
  }
}

TEST_CASE("crop + resize equals torchvision's resized_crop for a sampled box", "[classification]") {
  const Image src = to_image(ref().at("crop_src/src"));
  for (const char* c : {"crop_small_box", "crop_large_box", "crop_up"}) {
    const std::string box = ref().opt(c, "box");  // "[x, y, w, h]"
    int x, y, w, h;
    REQUIRE(std::sscanf(box.c_str(), "[%d, %d, %d, %d]", &x, &y, &w, &h) == 4);
    const int size = std::stoi(ref().opt(c, "size"));
    require_same_pixels(resize_bilinear_pil(crop(src, x, y, w, h), size, size),
                        ref().at(std::string(c) + "/out"), c);
  }
}

TEST_CASE("the evaluation transform equals Resize + CenterCrop + ToTensor + Normalize",
          "[classification]") {
  Scratch s;
  for (const char* c : {"eval_landscape", "eval_portrait", "eval_round"}) {
    INFO(c);
    const Image src = to_image(ref().at(std::string(c) + "/src"));
    const int size = std::stoi(ref().opt(c, "size"));
    // the pixels, step by step
    const auto [rw, rh] = resize_shorter(src.width, src.height, static_cast<int>(size / 0.875));
    const CropBox b = center_crop_box(rw, rh, size);
    require_same_pixels(crop(resize_bilinear_pil(src, rw, rh), b.x, b.y, size, size),
                        ref().at(std::string(c) + "/out"), c);
    // the whole sample from a (lossless) file
    const std::string path = (s.dir / (std::string(c) + ".png")).string();
    write_image(src, path);
    ClassificationOptions o;
    o.size = size;
    o.train = false;
    std::vector<float> t(size_t(3) * size * size);
    std::mt19937_64 rng(1);
    make_classification_sample(EncodedImage::read(path), o, rng, t.data());
    const std::vector<float> want = ref().at(std::string(c) + "/tensor").to_vector();
    REQUIRE(t == want);
  }
}

TEST_CASE("JPEG decoding equals PIL's", "[classification]") {
  for (const char* c : {"jpeg_420", "jpeg_444"}) {
    const Tensor& bytes = ref().at(std::string(c) + "/bytes");
    require_same_pixels(decode_jpeg_libjpeg(bytes.data<uint8_t>(), size_t(bytes.numel()), c),
                        ref().at(std::string(c) + "/decoded"), c);
  }
}

TEST_CASE("top-k counts equal the official accuracy()", "[classification]") {
  const Tensor& logits = ref().at("topk/logits");
  const Tensor& labels = ref().at("topk/labels");
  const auto r = topk_correct(logits.data<float>(), labels.data<int64_t>(), logits.size(0),
                              logits.size(1));
  CHECK(100.0 * r[0] / logits.size(0) == Approx(std::stod(ref().opt("topk", "top1"))));
  CHECK(100.0 * r[1] / logits.size(0) == Approx(std::stod(ref().opt("topk", "top5"))));
  // fewer than five classes: top-5 is every sample
  const float two[4] = {0.1f, 0.9f, 0.8f, 0.2f};
  const int64_t lab[2] = {0, 0};
  CHECK(topk_correct(two, lab, 2, 2) == std::array<int64_t, 2>{1, 2});
}

TEST_CASE("RandomResizedCrop boxes follow torchvision's rules", "[classification]") {
  std::mt19937_64 rng(3);
  for (int k = 0; k < 2000; ++k) {
    const int W = 40 + int(rng() % 500), H = 40 + int(rng() % 500);
    const CropBox b = random_resized_crop_box(W, H, rng);
    REQUIRE(b.w > 0);
    REQUIRE(b.h > 0);
    REQUIRE(b.x >= 0);
    REQUIRE(b.y >= 0);
    REQUIRE(b.x + b.w <= W);
    REQUIRE(b.y + b.h <= H);
    const double frac = double(b.w) * b.h / (double(W) * H);
    REQUIRE(frac >= 0.08 * 0.8);  // rounding of w and h at small sizes
    REQUIRE(double(b.w) / b.h >= 0.75 * 0.8);
    REQUIRE(double(b.w) / b.h <= 4.0 / 3.0 * 1.25);
  }
  // a strip no box of ratio 3/4..4/3 fits ten times: the fallback is the ratio-clamped centre
  const CropBox f = random_resized_crop_box(1000, 10, rng);
  CHECK(f.h == 10);
  CHECK(f.w == 13);  // round(10 * 4/3)
  CHECK(f.x == (1000 - 13) / 2);
  CHECK(f.y == 0);
  // Python's round() in CenterCrop: (101 - 32) / 2 = 34.5 rounds to 34
  CHECK(center_crop_box(101, 40, 32).x == 34);
  CHECK(center_crop_box(101, 40, 32).y == 4);
}

TEST_CASE("reduced JPEG decoding stays close to the full pipeline", "[classification]") {
  Scratch s;
  const std::string path = (s.dir / "big.jpg").string();
  write_image(noise(640, 480, 5), path, 92);
  const EncodedImage img = EncodedImage::read(path);
  CHECK(img.width() == 640);
  CHECK(img.height() == 480);
  CHECK(img.decode(4).width == 160);
  CHECK(img.decode(8).height == 60);
  ClassificationOptions o;
  o.size = 64;
  o.train = false;
  std::vector<float> full(3 * 64 * 64), fast(3 * 64 * 64);
  std::mt19937_64 r1(1), r2(1);
  make_classification_sample(img, o, r1, full.data());
  o.fast_decode = true;  // shorter side 480 -> 73 needed: decoded at 1/4 (120 pixels)
  make_classification_sample(img, o, r2, fast.data());
  double diff = 0;
  for (size_t i = 0; i < full.size(); ++i) diff += std::abs(full[i] - fast[i]);
  diff /= full.size();
  INFO("mean abs difference (normalised units) " << diff);
  CHECK(diff > 0);     // a different decode...
  CHECK(diff < 0.05);  // ...of the same picture (one grey level is ~0.017)
  // training samples: the same draws give the same box whatever the decode (at 1/d its edges
  // move to the 1/d grid, so the per-pixel noise of this image differs more)
  o.train = true;
  std::mt19937_64 r3(9), r4(9);
  o.fast_decode = false;
  make_classification_sample(img, o, r3, full.data());
  o.fast_decode = true;
  make_classification_sample(img, o, r4, fast.data());
  diff = 0;
  for (size_t i = 0; i < full.size(); ++i) diff += std::abs(full[i] - fast[i]);
  CHECK(diff / full.size() < 0.15);
}

TEST_CASE("image folders are scanned as ImageFolder does; bad layouts are errors naming them",
          "[classification]") {
  Scratch s;
  auto touch_image = [&](const fs::path& p) {
    fs::create_directories(p.parent_path());
    write_image(noise(20, 16, p.string().size()), p.string());
  };
  touch_image(s.dir / "ok/zebra/b.png");
  touch_image(s.dir / "ok/zebra/a.PNG");  // case-insensitive extension
  touch_image(s.dir / "ok/ant/sub/z.png");
  touch_image(s.dir / "ok/ant/y.png");
  std::ofstream(s.dir / "ok/ant/notes.txt") << "not an image";
  const ImageSet set = scan_image_folder((s.dir / "ok").string());
  REQUIRE(set.classes == std::vector<std::string>{"ant", "zebra"});
  REQUIRE(set.images.size() == 4);
  // os.walk order: the folder's own files, then sub-folders, each sorted
  CHECK(fs::path(set.images[0].path).filename() == "y.png");
  CHECK(fs::path(set.images[1].path).filename() == "z.png");
  CHECK(set.images[1].label == 0);
  CHECK(fs::path(set.images[2].path).filename() == "a.PNG");
  CHECK(set.images[3].label == 1);

  fs::create_directories(s.dir / "bad/empty_class");
  touch_image(s.dir / "bad/full/x.png");
  CHECK_THROWS_WITH(scan_image_folder((s.dir / "bad").string()),
                    Catch::Contains("empty_class") && Catch::Contains("no image"));
  CHECK_THROWS_WITH(scan_image_folder((s.dir / "nope").string()),
                    Catch::Contains("does not exist"));
  fs::create_directories(s.dir / "flat");
  touch_image(s.dir / "flat/x.png");
  CHECK_THROWS_WITH(scan_image_folder((s.dir / "flat").string()),
                    Catch::Contains("no class folders"));

  std::ofstream(s.dir / "list.txt") << "# comment\nzebra/b.png 3\n\nant/y.png 0\n";
  const ImageSet l = read_image_list((s.dir / "list.txt").string(), (s.dir / "ok").string());
  CHECK(l.images.size() == 2);
  CHECK(l.classes.size() == 4);
  CHECK(l.images[0].label == 3);
  std::ofstream(s.dir / "bad.txt") << "zebra/b.png three\n";
  CHECK_THROWS_WITH(read_image_list((s.dir / "bad.txt").string(), s.dir.string()),
                    Catch::Contains("bad.txt:1"));
}

TEST_CASE("the dataset's samples and a corrupt JPEG", "[classification]") {
  Scratch s;
  fs::create_directories(s.dir / "set/a");
  fs::create_directories(s.dir / "set/b");
  write_image(noise(50, 40, 1), (s.dir / "set/a/1.jpg").string());
  write_image(noise(40, 60, 2), (s.dir / "set/b/2.jpg").string());
  std::ofstream(s.dir / "set/b/3.jpg", std::ios::binary) << "\xff\xd8\xff garbage";
  ClassificationOptions o;
  o.size = 32;
  ClassificationDataset ds(scan_image_folder((s.dir / "set").string()), o);
  REQUIRE(ds.size() == 3);
  const auto f = ds.fields();
  REQUIRE(f.size() == 2);
  CHECK(f[0].shape == Shape{3, 32, 32});
  CHECK(f[1].dtype == DType::i64);
  std::vector<float> a(3 * 32 * 32), b(3 * 32 * 32);
  int64_t la = -1, lb = -1;
  ds.load(1, 77, {a.data(), &la});
  ds.load(1, 77, {b.data(), &lb});
  CHECK(a == b);  // the seed decides the augmentation
  CHECK(la == 1);
  ds.load(1, 78, {b.data(), &lb});
  CHECK(a != b);
  CHECK_THROWS_WITH(ds.load(2, 1, {a.data(), &la}), Catch::Contains("3.jpg"));
  // the raw input: the crop's bytes, which the dataset's table normalises to load()'s input
  REQUIRE(ds.input_lut() != nullptr);
  const auto rf = raw_fields(ds);
  CHECK(rf[0].shape == Shape{32, 32 * 3});
  CHECK(rf[0].dtype == DType::u8);
  Tensor bytes = Tensor::empty({1, 32, 32 * 3}, DType::u8);
  int64_t lr = -1;
  ds.load(1, 77, {a.data(), &la});
  ds.load_raw(1, 77, {bytes.raw_data(), &lr});
  CHECK(lr == la);
  const Tensor lut = Tensor::from_vector(std::vector<float>(ds.input_lut(), ds.input_lut() + 768),
                                         {3, 256});
  CHECK(ops::normalize_u8(bytes, lut).to_vector() == a);
}
