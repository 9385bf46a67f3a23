// Tests for data/pose.h against tests/data/pose_reference.safetensors (tools/gen_pose_reference.py:
// the official HRNet functions in numpy, crops by cv2.warpAffine of OpenCV 4.10): affine
// matrices, crops byte for byte, Gaussian targets, decoding, flip test, box -> centre/scale, the
// COCO record filtering, half body and whole samples; plus properties (inverse maps, seeded
// reproducibility, the flip's mirrored pair-swapped joints, half-body choice, draw statistics).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>

#include "data/pose.h"
#include "engine/checkpoint.h"
#include "engine/error.h"
#include "test_util.h"

using namespace hr;
using namespace hr::data;

namespace {

const std::map<std::string, Tensor>& ref() {
  static const std::map<std::string, Tensor> m = [] {
    std::map<std::string, Tensor> r;
    for (auto& [k, v] :
         load_checkpoint(std::string(HR_TEST_DATA_DIR) + "/pose_reference.safetensors"))
      r.emplace(k, v);
    return r;
  }();
  return m;
}

const Tensor& get(const std::string& key) {
  auto it = ref().find(key);
  if (it == ref().end()) FAIL("fixture has no tensor " << key);
  return it->second;
}
std::vector<float> f32(const std::string& key) { return get(key).to_vector(); }
std::vector<int64_t> i64(const std::string& key) { return get(key).to_vector_i64(); }
// float64 values stored bit for bit as I64
std::vector<double> f64(const std::string& key) {
  std::vector<int64_t> bits = i64(key);
  std::vector<double> d(bits.size());
  std::memcpy(d.data(), bits.data(), bits.size() * 8);
  return d;
}
std::vector<uint8_t> u8(const std::string& key) {
  const Tensor& t = get(key);
  REQUIRE(t.dtype() == DType::u8);
  const uint8_t* p = t.data<uint8_t>();
  return std::vector<uint8_t>(p, p + t.numel());
}

Image image_from(const std::string& key) {
  const Tensor& t = get(key);
  Image img(static_cast<int>(t.size(1)), static_cast<int>(t.size(0)),
            t.dim() == 3 ? static_cast<int>(t.size(2)) : 1);
  img.pixels = u8(key);
  return img;
}

Affine affine_from(const std::vector<double>& m, size_t k) {
  Affine a;
  for (int i = 0; i < 6; ++i) a.m[i] = m[6 * k + i];
  return a;
}

// Byte images must agree exactly; any difference is reported with its size.
void require_same_bytes(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want,
                        const std::string& what) {
  REQUIRE(got.size() == want.size());
  size_t off = 0;
  int max_diff = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const int d = std::abs(int(got[i]) - int(want[i]));
    off += d != 0;
    max_diff = std::max(max_diff, d);
  }
  INFO(what << ": " << off << " of " << got.size() << " bytes differ, max difference " << max_diff);
  REQUIRE(off == 0);
}

constexpr int kPairs[8][2] = {{1, 2},  {3, 4},   {5, 6},   {7, 8},
                              {9, 10}, {11, 12}, {13, 14}, {15, 16}};
int mirror_joint(int j) {
  for (const auto& p : kPairs) {
    if (p[0] == j) return p[1];
    if (p[1] == j) return p[0];
  }
  return j;
}

Image random_image(int w, int h, uint64_t seed) {
  Image img(w, h, 3);
  std::mt19937_64 rng(seed);
  for (auto& p : img.pixels) p = static_cast<uint8_t>(rng() >> 56);
  return img;
}

PoseRecord person_record(uint64_t seed) {
  PoseRecord r;
  std::mt19937_64 rng(seed);
  for (int j = 0; j < kNumJoints; ++j) {
    r.joints[3 * j] = 40 + 60 * static_cast<float>(uniform01(rng));
    r.joints[3 * j + 1] = 20 + 100 * static_cast<float>(uniform01(rng));
    r.joints[3 * j + 2] = 1;
  }
  box_to_center_scale({40, 20, 60, 100}, 0.75f, r.center, r.scale);
  return r;
}

}  // namespace

TEST_CASE("get_affine_transform equals the official matrices", "[pose]") {
  const std::vector<float> params = f32("affine/params");
  const std::vector<int64_t> sizes = i64("affine/sizes");
  const std::vector<double> want = f64("affine/matrix");
  const size_t n = sizes.size() / 3;
  REQUIRE(n >= 10);
  for (size_t k = 0; k < n; ++k) {
    const float* p = &params[5 * k];
    const Affine a =
        get_affine_transform({p[0], p[1]}, {p[2], p[3]}, p[4], static_cast<int>(sizes[3 * k]),
                             static_cast<int>(sizes[3 * k + 1]), sizes[3 * k + 2] != 0);
    for (int i = 0; i < 6; ++i) {
      INFO("case " << k << " entry " << i << ": " << a.m[i] << " vs " << want[6 * k + i]);
      REQUIRE(std::fabs(a.m[i] - want[6 * k + i]) <= 1e-9 + 1e-9 * std::fabs(want[6 * k + i]));
    }
  }
}

TEST_CASE("an affine map followed by its inverse is the identity", "[pose]") {
  std::mt19937_64 rng(7);
  for (int t = 0; t < 50; ++t) {
    const std::array<float, 2> c{float(640 * uniform01(rng)), float(480 * uniform01(rng))};
    const float s = float(0.05 + 3 * uniform01(rng));
    const float rot = float(180 * (2 * uniform01(rng) - 1));
    const Affine fwd = get_affine_transform(c, {s, s * 4 / 3}, rot, 192, 256);
    const Affine inv = get_affine_transform(c, {s, s * 4 / 3}, rot, 192, 256, true);
    const Affine inv2 = invert_affine(fwd);
    for (int i = 0; i < 6; ++i)
      REQUIRE(std::fabs(inv.m[i] - inv2.m[i]) <= 1e-4 * (1 + std::fabs(inv.m[i])));
    for (int q = 0; q < 5; ++q) {
      const double x = 700 * uniform01(rng) - 30, y = 500 * uniform01(rng) - 10;
      double u, v, bx, by;
      fwd.apply(x, y, u, v);
      inv.apply(u, v, bx, by);
      REQUIRE(std::fabs(bx - x) < 1e-3);
      REQUIRE(std::fabs(by - y) < 1e-3);
      inv2.apply(u, v, bx, by);
      REQUIRE(std::fabs(bx - x) < 1e-9 * (1 + std::fabs(x)));
      REQUIRE(std::fabs(by - y) < 1e-9 * (1 + std::fabs(y)));
    }
    // the centre lands in the middle of the crop, the box width spans the crop width
    double u, v;
    fwd.apply(c[0], c[1], u, v);
    REQUIRE(std::fabs(u - 96) < 1e-3);
    REQUIRE(std::fabs(v - 128) < 1e-3);
    REQUIRE(std::hypot(fwd.m[0], fwd.m[1]) == Approx(192.0 / (200.0 * s)).epsilon(1e-5));
  }
}

TEST_CASE("warp_affine reproduces cv2.warpAffine byte for byte", "[pose]") {
  const Image src = image_from("warp/src");
  const Image gray = image_from("warp/src_gray");
  REQUIRE(src.channels == 3);
  REQUIRE(gray.channels == 1);
  const std::vector<double> mats = f64("warp/matrix");
  const std::vector<int64_t> sizes = i64("warp/sizes");
  const size_t n = sizes.size() / 2;
  REQUIRE(n == 10);
  for (size_t k = 0; k < n; ++k) {
    const Affine M = affine_from(mats, k);
    const int w = static_cast<int>(sizes[2 * k]), h = static_cast<int>(sizes[2 * k + 1]);
    std::vector<uint8_t> out(size_t(w) * h * 3, 77);
    warp_affine(src, M, w, h, out.data());
    require_same_bytes(out, u8("warp/out" + std::to_string(k)), "case " + std::to_string(k));
    std::fill(out.begin(), out.end(), 77);
    warp_affine_mirrored(src, M, w, h, out.data());
    require_same_bytes(out, u8("warp/mirror" + std::to_string(k)),
                       "mirrored case " + std::to_string(k));
    if (ref().count("warp/gray" + std::to_string(k))) {
      std::vector<uint8_t> g(size_t(w) * h, 77);
      warp_affine(gray, M, w, h, g.data());
      require_same_bytes(g, u8("warp/gray" + std::to_string(k)), "gray case " + std::to_string(k));
    }
  }
}

TEST_CASE("warp_affine: bad arguments are one clear error", "[pose]") {
  Image img(4, 4, 3);
  std::vector<uint8_t> out(16 * 3);
  Affine id;
  id.m = {1, 0, 0, 0, 1, 0};
  REQUIRE_THROWS_WITH(warp_affine(img, id, 0, 4, out.data()), Catch::Contains("output size"));
  img.pixels.resize(5);
  REQUIRE_THROWS_WITH(warp_affine(img, id, 4, 4, out.data()), Catch::Contains("malformed image"));
}

TEST_CASE("generate_target equals the official Gaussian targets", "[pose]") {
  const std::vector<float> joints = f32("target/joints");
  const int J = static_cast<int>(joints.size() / 3);
  REQUIRE(J == 17);
  for (int sigma : {2, 3}) {
    TargetParams tp;
    tp.image_w = 64, tp.image_h = 80, tp.heatmap_w = 16, tp.heatmap_h = 20;
    tp.sigma = static_cast<float>(sigma);
    std::vector<float> target(size_t(J) * 20 * 16, -1.f), weight(J, -1.f);
    generate_target(joints.data(), J, tp, target.data(), weight.data());
    const std::string pre = "target/sigma" + std::to_string(sigma) + "/";
    REQUIRE_CLOSE(weight, f32(pre + "weight"), 0, 0);
    REQUIRE_CLOSE(target, f32(pre + "target"), 1e-6, 1e-6);
    // the peak is exactly 1 for joints whose centre is on the map
    REQUIRE(target[0 * 320 + 10 * 16 + 8] == 1.f);
    // joint 8 (x = -30): mu_x = int(-7.5 + 0.5) = -7, the window ends at column 0 exclusive.
    // At sigma 2 the official test `br < 0` keeps the weight though nothing is drawn.
    const bool drawn =
        std::any_of(&target[8 * 320], &target[9 * 320], [](float v) { return v > 0; });
    REQUIRE(weight[8] == 1.f);
    REQUIRE(drawn == (sigma == 3));
    REQUIRE(weight[10] == (sigma == 3 ? 1.f : 0.f));  // x = -34: br = -1 at sigma 2
    REQUIRE(weight[12] == 0.f);                       // invisible
    // weights alone
    std::vector<float> w2(J, -1.f);
    generate_target(joints.data(), J, tp, nullptr, w2.data());
    REQUIRE(w2 == weight);
  }
}

TEST_CASE("decode_heatmaps equals get_final_preds", "[pose]") {
  const Tensor& hm = get("decode/heatmaps");
  const int B = int(hm.size(0)), J = int(hm.size(1)), h = int(hm.size(2)), w = int(hm.size(3));
  const std::vector<float> maps = hm.to_vector(), center = f32("decode/center"),
                           scale = f32("decode/scale"), preds = f32("decode/preds"),
                           maxvals = f32("decode/maxvals");
  std::vector<float> got_xy, want_xy, got_s;
  for (int b = 0; b < B; ++b) {
    std::vector<float> out(size_t(J) * 3);
    decode_heatmaps(maps.data() + size_t(b) * J * h * w, J, h, w,
                    {center[2 * b], center[2 * b + 1]}, {scale[2 * b], scale[2 * b + 1]},
                    out.data());
    for (int j = 0; j < J; ++j) {
      got_xy.push_back(out[3 * j]);
      got_xy.push_back(out[3 * j + 1]);
      got_s.push_back(out[3 * j + 2]);
    }
  }
  REQUIRE_CLOSE(got_xy, preds, 1e-5, 1e-6);
  REQUIRE_CLOSE(got_s, maxvals, 0, 0);
  // the all-negative map decodes to the inverse image of heatmap (0, 0) with its negative score
  REQUIRE(got_s[2 * J] < 0);
  const Affine inv =
      get_affine_transform({center[4], center[5]}, {scale[4], scale[5]}, 0, w, h, true);
  REQUIRE(got_xy[4 * J] == Approx(inv.m[2]).margin(1e-4));
  REQUIRE(got_xy[4 * J + 1] == Approx(inv.m[5]).margin(1e-4));
}

TEST_CASE("flip_back_heatmaps equals flip_back + SHIFT_HEATMAP", "[pose]") {
  const Tensor& t = get("flip/heatmaps");
  const int B = int(t.size(0)), J = int(t.size(1)), h = int(t.size(2)), w = int(t.size(3));
  std::vector<float> maps = t.to_vector();
  for (int b = 0; b < B; ++b) flip_back_heatmaps(maps.data() + size_t(b) * J * h * w, J, h, w);
  REQUIRE_CLOSE(maps, f32("flip/flipped_back"), 0, 0);
}

TEST_CASE("flip_input mirrors every row", "[pose]") {
  const int C = 3, h = 5, w = 7;
  std::vector<float> in(C * h * w), out(in.size()), back(in.size());
  std::iota(in.begin(), in.end(), 0.f);
  flip_input(in.data(), C, h, w, out.data());
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        REQUIRE(out[(c * h + y) * w + x] == in[(c * h + y) * w + (w - 1 - x)]);
  flip_input(out.data(), C, h, w, back.data());
  REQUIRE(back == in);
}

TEST_CASE("box_to_center_scale equals _xywh2cs", "[pose]") {
  const std::vector<float> boxes = f32("box/boxes");
  for (auto [name, aspect] :
       {std::pair<std::string, float>{"a075", 0.75f}, {"a1", 1.f}, {"a0667", 2.f / 3.f}}) {
    std::vector<float> c, s;
    for (size_t i = 0; i < boxes.size() / 4; ++i) {
      std::array<float, 2> cc, ss;
      box_to_center_scale({boxes[4 * i], boxes[4 * i + 1], boxes[4 * i + 2], boxes[4 * i + 3]},
                          aspect, cc, ss);
      c.insert(c.end(), cc.begin(), cc.end());
      s.insert(s.end(), ss.begin(), ss.end());
    }
    REQUIRE_CLOSE(c, f32("box/" + name + "/center"), 0, 0);
    // 2/3 is not a float: the Python side used the double, we get the float
    REQUIRE_CLOSE(s, f32("box/" + name + "/scale"), 0, name == "a0667" ? 1e-6 : 0);
  }
  std::array<float, 2> c, s;
  REQUIRE_THROWS_WITH(box_to_center_scale({0, 0, 1, 1}, 0.f, c, s), Catch::Contains("aspect"));
}

TEST_CASE("gt_records: the official box clipping and filtering", "[pose]") {
  const std::vector<int64_t> wh = i64("gt/image_wh"), ann_image = i64("gt/ann_image"),
                             iscrowd = i64("gt/ann_iscrowd"), kept = i64("gt/kept");
  const std::vector<float> bbox = f32("gt/ann_bbox"), area = f32("gt/ann_area"),
                           kps = f32("gt/ann_keypoints");
  CocoKeypoints coco;
  for (size_t i = 0; i < wh.size() / 2; ++i) {
    CocoImage im;
    im.id = 1000 + int64_t(i);
    im.file_name = "img" + std::to_string(i) + ".jpg";
    im.width = int(wh[2 * i]);
    im.height = int(wh[2 * i + 1]);
    coco.images.push_back(im);
  }
  // annotations listed in reverse, so the per-image file order must be rebuilt
  for (size_t a = ann_image.size(); a-- > 0;) {
    CocoPersonAnn an;
    an.id = 500 + int64_t(a);
    an.image_id = 1000 + ann_image[a];
    for (int k = 0; k < 4; ++k) an.bbox[k] = bbox[4 * a + k];
    an.area = area[a];
    an.iscrowd = iscrowd[a] != 0;
    for (int k = 0; k < 51; ++k) an.keypoints[k] = kps[51 * a + k];
    coco.annotations.push_back(an);
  }
  const std::vector<PoseRecord> recs = gt_records(coco, "/data/images/", 0.75f);
  // the reference kept annotations in (image, file) order; ours is (image, reversed file) order
  std::vector<int64_t> want_ids;
  std::map<int64_t, size_t> row_of;
  for (size_t k = 0; k < kept.size(); ++k) row_of[500 + kept[k]] = k;
  for (size_t img = 0; img < wh.size() / 2; ++img)
    for (size_t a = ann_image.size(); a-- > 0;)
      if (ann_image[a] == int64_t(img) && row_of.count(500 + int64_t(a)))
        want_ids.push_back(500 + int64_t(a));
  REQUIRE(recs.size() == kept.size());
  const std::vector<float> center = f32("gt/center"), scale = f32("gt/scale"),
                           joints = f32("gt/joints");
  for (size_t r = 0; r < recs.size(); ++r) {
    INFO("record " << r);
    REQUIRE(recs[r].ann_id == want_ids[r]);
    const size_t k = row_of[recs[r].ann_id];
    const int64_t img = ann_image[kept[k]];
    REQUIRE(recs[r].image_id == 1000 + img);
    REQUIRE(recs[r].image_path == "/data/images/img" + std::to_string(img) + ".jpg");
    REQUIRE(recs[r].score == 1.f);
    REQUIRE(recs[r].center[0] == center[2 * k]);
    REQUIRE(recs[r].center[1] == center[2 * k + 1]);
    REQUIRE(recs[r].scale[0] == scale[2 * k]);
    REQUIRE(recs[r].scale[1] == scale[2 * k + 1]);
    for (int q = 0; q < 51; ++q) REQUIRE(recs[r].joints[q] == joints[51 * k + q]);
  }
  REQUIRE_THROWS_WITH(gt_records(coco, "", 0.f), Catch::Contains("aspect"));
}

TEST_CASE("detection_records: persons above the threshold, on known images", "[pose]") {
  CocoKeypoints coco;
  coco.images.push_back({7, "000000000007.jpg", 640, 480});
  coco.images.push_back({9, "000000000009.jpg", 320, 240});
  std::vector<DetectionBox> dets = {
      {7, 1, {10, 20, 30, 40}, 0.9f},  // kept
      {9, 1, {0, 0, 90, 40}, 0.05f},   // below the threshold
      {9, 2, {0, 0, 90, 40}, 0.95f},   // not a person
      {8, 1, {0, 0, 90, 40}, 0.95f},   // unknown image
      {9, 1, {-5, 3, 90, 40}, 0.1f},   // at the threshold: kept, box not clipped
  };
  const auto recs = detection_records(dets, coco, "imgs", 0.75f, 0.1f);
  REQUIRE(recs.size() == 2);
  REQUIRE(recs[0].image_path == "imgs/000000000007.jpg");
  REQUIRE(recs[0].ann_id == -1);
  REQUIRE(recs[0].score == 0.9f);
  // box (10,20,30,40): centre (25,40); 30 = 0.75*40, so no growth; x1.25 padding
  REQUIRE(recs[0].center == std::array<float, 2>{25, 40});
  REQUIRE(recs[0].scale[0] == 0.15f * 1.25f);
  REQUIRE(recs[0].scale[1] == 0.2f * 1.25f);
  REQUIRE(recs[1].image_id == 9);
  REQUIRE(recs[1].center == std::array<float, 2>{40, 23});
  // (90, 40): wider than 3:4, so h = 120
  REQUIRE(recs[1].scale[0] == Approx(0.45 * 1.25).epsilon(1e-6));
  REQUIRE(recs[1].scale[1] == Approx(0.6 * 1.25).epsilon(1e-6));
  for (int j = 0; j < kNumJoints; ++j) REQUIRE(recs[1].joints[3 * j + 2] == 0);
}

TEST_CASE("half_body_center_scale equals half_body_transform", "[pose]") {
  const std::vector<float> joints = f32("half_body/joints"), center = f32("half_body/center"),
                           scale = f32("half_body/scale");
  const std::vector<int64_t> prefer = i64("half_body/prefer_upper"), valid = i64("half_body/valid");
  REQUIRE(std::count(valid.begin(), valid.end(), 0) >= 2);
  for (size_t k = 0; k < prefer.size(); ++k) {
    INFO("case " << k);
    std::array<float, 2> c{-1, -1}, s{-1, -1};
    const bool ok = half_body_center_scale(&joints[51 * k], 17, prefer[k] != 0, 0.75f, c, s);
    REQUIRE(ok == (valid[k] != 0));
    if (!ok) continue;
    REQUIRE(c[0] == Approx(center[2 * k]).epsilon(1e-6));
    REQUIRE(c[1] == Approx(center[2 * k + 1]).epsilon(1e-6));
    REQUIRE(s[0] == Approx(scale[2 * k]).epsilon(1e-6));
    REQUIRE(s[1] == Approx(scale[2 * k + 1]).epsilon(1e-6));
  }
}

TEST_CASE("render_sample equals the official __getitem__ for given crops", "[pose]") {
  const Image img = image_from("sample/image");
  const std::vector<float> joints = f32("sample/joints"), crops = f32("sample/crops"),
                           lut = f32("sample/normalise_lut");
  PoseRecord rec;
  std::copy(joints.begin(), joints.end(), rec.joints.begin());
  TargetParams tp;
  tp.image_w = 32, tp.image_h = 40, tp.heatmap_w = 8, tp.heatmap_h = 10, tp.sigma = 2;
  const size_t n_in = 3 * 40 * 32;
  for (size_t k = 0; k < crops.size() / 6; ++k) {
    INFO("crop " << k);
    const float* c = &crops[6 * k];
    CropMeta crop;
    crop.center = {c[0], c[1]};
    crop.scale = {c[2], c[3]};
    crop.rotation = c[4];
    crop.flipped = c[5] != 0;
    std::vector<float> input(n_in), target(17 * 10 * 8), weight(17), jout(51);
    render_sample(img, rec, crop, tp, input.data(), target.data(), weight.data(), jout.data());
    const std::vector<uint8_t> px = u8("sample/crop" + std::to_string(k));
    std::vector<float> want(n_in);
    for (int ch = 0; ch < 3; ++ch)
      for (size_t i = 0; i < 40 * 32; ++i) want[ch * 40 * 32 + i] = lut[ch * 256 + px[3 * i + ch]];
    REQUIRE_CLOSE(input, want, 0, 0);
    REQUIRE_CLOSE(target, f32("sample/target" + std::to_string(k)), 1e-6, 1e-6);
    REQUIRE_CLOSE(weight, f32("sample/weight" + std::to_string(k)), 0, 0);
    REQUIRE_CLOSE(jout, f32("sample/joints_out" + std::to_string(k)), 1e-4, 1e-6);
  }
}

TEST_CASE("normalize_input equals ToTensor + Normalize", "[pose]") {
  const std::vector<float> lut = f32("sample/normalise_lut");
  std::vector<uint8_t> px(256 * 3);
  for (int i = 0; i < 256; ++i) px[3 * i] = px[3 * i + 1] = px[3 * i + 2] = uint8_t(i);
  std::vector<float> out(3 * 256);
  normalize_input(px.data(), 1, 256, out.data());
  REQUIRE_CLOSE(out, lut, 0, 0);
}

TEST_CASE("make_sample: a fixed seed reproduces the sample, another seed does not", "[pose]") {
  const Image img = random_image(160, 140, 3);
  const PoseRecord rec = person_record(4);
  AugmentParams aug;
  TargetParams tp;
  tp.image_w = 48, tp.image_h = 64, tp.heatmap_w = 12, tp.heatmap_h = 16;
  const size_t n_in = 3 * 64 * 48, n_t = 17 * 16 * 12;
  auto run = [&](uint64_t seed, CropMeta& m) {
    std::vector<float> v(n_in + n_t + 17);
    std::mt19937_64 rng(seed);
    make_sample(img, rec, aug, tp, rng, v.data(), v.data() + n_in, v.data() + n_in + n_t, &m);
    return v;
  };
  CropMeta m1, m2, m3;
  const auto a = run(11, m1), b = run(11, m2), c = run(12, m3);
  REQUIRE(a == b);
  REQUIRE(m1.center == m2.center);
  REQUIRE(m1.rotation == m2.rotation);
  REQUIRE(a != c);
  // the sample is render_sample of the drawn crop
  std::vector<float> r(n_in + n_t + 17);
  render_sample(img, rec, m1, tp, r.data(), r.data() + n_in, r.data() + n_in + n_t);
  REQUIRE(r == a);
  // without augmentation: the record's own crop, no random draw
  aug.enabled = false;
  std::mt19937_64 rng(5), untouched(5);
  CropMeta m;
  std::vector<float> v(n_in);
  make_sample(img, rec, aug, tp, rng, v.data(), nullptr, nullptr, &m);
  REQUIRE(m.center == rec.center);
  REQUIRE(m.scale == rec.scale);
  REQUIRE(m.rotation == 0);
  REQUIRE(!m.flipped);
  REQUIRE(rng() == untouched());
}

TEST_CASE("a flipped sample's joints are the mirrored, pair-swapped joints", "[pose]") {
  const Image img = random_image(150, 140, 5);
  PoseRecord rec = person_record(6);
  rec.joints[3 * 5 + 2] = 0;  // an invisible left shoulder: its partner's slot goes invisible
  TargetParams tp;
  for (float rot : {0.f, 25.f, -70.f}) {
    CropMeta plain;
    plain.center = rec.center;
    plain.scale = rec.scale;
    plain.rotation = -rot;
    CropMeta flip = plain;
    flip.rotation = rot;
    flip.flipped = true;
    flip.center[0] = img.width - rec.center[0] - 1;
    std::vector<float> jp(51), jf(51), wp(17), wf(17);
    render_sample(img, rec, plain, tp, nullptr, nullptr, wp.data(), jp.data());
    render_sample(img, rec, flip, tp, nullptr, nullptr, wf.data(), jf.data());
    for (int j = 0; j < kNumJoints; ++j) {
      INFO("rotation " << rot << " joint " << j);
      const int m = mirror_joint(j);
      REQUIRE(jf[3 * m + 2] == jp[3 * j + 2]);
      REQUIRE(wf[m] == wp[j]);
      if (jp[3 * j + 2] == 0) continue;
      // mirroring the image mirrors the crop: u -> W - u (the crop centre is at W/2)
      REQUIRE(jf[3 * m] == Approx(tp.image_w - jp[3 * j]).margin(2e-3));
      REQUIRE(jf[3 * m + 1] == Approx(jp[3 * j + 1]).margin(2e-3));
    }
    REQUIRE(jf[3 * 6 + 2] == 0);  // the right-shoulder slot holds the invisible left shoulder
  }
}

TEST_CASE("half body picks the upper or the lower body", "[pose]") {
  PoseRecord rec = person_record(8);
  for (int j = 0; j < kNumJoints; ++j) rec.joints[3 * j + 1] = j < 11 ? 30.f + j : 100.f + j;
  auto mean_of = [&](int from, int to) {
    float sx = 0, sy = 0;
    for (int j = from; j < to; ++j) sx += rec.joints[3 * j], sy += rec.joints[3 * j + 1];
    return std::array<float, 2>{sx / (to - from), sy / (to - from)};
  };
  const auto upper = mean_of(0, 11), lower = mean_of(11, 17);
  AugmentParams aug;
  aug.half_body_prob = 1;
  aug.scale_factor = 0;
  aug.rot_prob = 0;
  aug.flip = false;
  TargetParams tp;
  int n_upper = 0, n_lower = 0;
  for (uint64_t seed = 0; seed < 400; ++seed) {
    std::mt19937_64 rng(seed);
    const CropMeta m = draw_augmentation(rec, 200, aug, tp, rng);
    const bool is_upper =
        std::fabs(m.center[0] - upper[0]) < 1e-3 && std::fabs(m.center[1] - upper[1]) < 1e-3;
    const bool is_lower =
        std::fabs(m.center[0] - lower[0]) < 1e-3 && std::fabs(m.center[1] - lower[1]) < 1e-3;
    REQUIRE(is_upper != is_lower);
    (is_upper ? n_upper : n_lower)++;
    REQUIRE(m.rotation == 0);
    REQUIRE(m.scale[0] == Approx(m.scale[1] * 0.75f).epsilon(1e-5));
  }
  // upper when randn < 0.5: P = Phi(0.5) = 0.691
  REQUIRE(n_upper > 0.6 * 400);
  REQUIRE(n_upper < 0.78 * 400);
  // 8 visible joints are not enough (more than 8 needed)
  for (int j = 8; j < kNumJoints; ++j) rec.joints[3 * j + 2] = 0;
  std::mt19937_64 rng(1);
  const CropMeta m = draw_augmentation(rec, 200, aug, tp, rng);
  REQUIRE(m.center == rec.center);
}

TEST_CASE("draw_augmentation: ranges and frequencies of the official recipe", "[pose]") {
  const PoseRecord rec = person_record(9);
  AugmentParams aug;
  aug.half_body_prob = 0;
  TargetParams tp;
  const int n = 4000;
  int rotated = 0, flipped = 0;
  double sum_mult = 0;
  for (int i = 0; i < n; ++i) {
    std::mt19937_64 rng(1000 + i);
    const CropMeta m = draw_augmentation(rec, 300, aug, tp, rng);
    const float mult = m.scale[0] / rec.scale[0];
    REQUIRE(mult >= 0.65f - 1e-6f);
    REQUIRE(mult <= 1.35f + 1e-6f);
    REQUIRE(m.scale[1] / rec.scale[1] == Approx(mult).epsilon(1e-6));
    REQUIRE(std::fabs(m.rotation) <= 90.f);
    rotated += m.rotation != 0;
    flipped += m.flipped;
    sum_mult += mult;
    REQUIRE(m.center[0] == Approx(m.flipped ? 299.0 - rec.center[0] : rec.center[0]).margin(1e-4));
  }
  REQUIRE(std::fabs(rotated / double(n) - 0.6) < 0.04);
  REQUIRE(std::fabs(flipped / double(n) - 0.5) < 0.04);
  REQUIRE(std::fabs(sum_mult / n - 1.0) < 0.02);
  // the normal draws: mean 0, variance 1
  std::mt19937_64 rng(3);
  double s = 0, s2 = 0;
  for (int i = 0; i < 20000; ++i) {
    const double z = standard_normal(rng);
    s += z, s2 += z * z;
  }
  REQUIRE(std::fabs(s / 20000) < 0.03);
  REQUIRE(std::fabs(s2 / 20000 - 1) < 0.04);
}

TEST_CASE("render_sample: a grey image needs converting first", "[pose]") {
  Image g(20, 20, 1);
  const PoseRecord rec = person_record(1);
  std::vector<float> in(3 * 256 * 192);
  REQUIRE_THROWS_WITH(render_sample(g, rec, CropMeta{rec.center, rec.scale, 0, false},
                                    TargetParams{}, in.data(), nullptr, nullptr),
                      Catch::Contains("channels"));
}
