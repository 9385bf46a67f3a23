// Detection data: transform options, the official transforms step by step, COCODataset records,
// the padded FCOS training dataset, the test input and the mapping of detections back.
#include "data/detection.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <numeric>

#include "data/random.h"
#include "engine/error.h"

namespace hr::data {

namespace {

// float32 products and quotients rounded before they meet an addition: -march=x86-64-v3 allows
// fused multiply-adds, which the official float32 tensor ops never do.
float mulf(float a, float b) {
  volatile float r = a * b;
  return r;
}
float divf(float a, float b) {
  volatile float r = a / b;
  return r;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

std::vector<int> det_train_min_sizes(const std::vector<int>& min_size_train,
                                     std::array<int, 2> range) {
  if (range[0] == -1) return min_size_train;
  HR_CHECK(range[0] > 0 && range[1] >= range[0], "[detection] INPUT.MIN_SIZE_RANGE_TRAIN (",
           range[0], ", ", range[1], "): expected (lo, hi) with 0 < lo <= hi, or (-1, -1)");
  std::vector<int> s(size_t(range[1] - range[0] + 1));
  std::iota(s.begin(), s.end(), range[0]);
  return s;
}

DetTransformOptions det_train_transform(const std::vector<int>& min_sizes, int max_size) {
  DetTransformOptions o;
  o.min_sizes = min_sizes;
  o.max_size = max_size;
  o.flip_prob = 0.5;
  return o;
}

DetTransformOptions det_test_transform(int min_size_test, int max_size_test) {
  DetTransformOptions o;
  o.min_sizes = {min_size_test};
  o.max_size = max_size_test;
  o.flip_prob = 0;
  return o;
}

void check_det_transform(const DetTransformOptions& o) {
  HR_CHECK(!o.min_sizes.empty(), "[detection] no minimum size to resize to (INPUT.MIN_SIZE_*)");
  for (int s : o.min_sizes)
    HR_CHECK(s > 0 && s <= kMaxImageSide, "[detection] minimum size ", s, " outside 1..",
             kMaxImageSide);
  HR_CHECK(o.max_size <= kMaxImageSide, "[detection] maximum size ", o.max_size, " above ",
           kMaxImageSide);
  HR_CHECK(o.flip_prob >= 0 && o.flip_prob <= 1, "[detection] flip probability ", o.flip_prob,
           " outside [0, 1]");
  HR_CHECK(o.size_divisibility >= 0 && o.size_divisibility <= 4096,
           "[detection] DATALOADER.SIZE_DIVISIBILITY ", o.size_divisibility, " outside 0..4096");
  for (int c = 0; c < 3; ++c) {
    HR_CHECK(std::isfinite(o.pixel_mean[size_t(c)]), "[detection] INPUT.PIXEL_MEAN[", c,
             "] is not finite");
    HR_CHECK(o.pixel_std[size_t(c)] > 0 && std::isfinite(o.pixel_std[size_t(c)]),
             "[detection] INPUT.PIXEL_STD[", c, "] = ", o.pixel_std[size_t(c)],
             ": must be positive");
  }
}

// ---------------------------------------------------------------------------------------------
// Transforms
// ---------------------------------------------------------------------------------------------

std::array<int, 2> det_resize_size(int w, int h, int min_size, int max_size) {
  HR_CHECK(w > 0 && h > 0 && min_size > 0, "[detection] resize: bad size ", w, "x", h,
           " or minimum size ", min_size);
  int size = min_size;
  if (max_size > 0) {
    const double lo = double(std::min(w, h)), hi = double(std::max(w, h));
    if (hi / lo * size > max_size)
      size = static_cast<int>(std::nearbyint(max_size * lo / hi));  // round(): half to even
  }
  if ((w <= h && w == size) || (h <= w && h == size)) return {h, w};
  // Python's int * int / int: the exact product, one correctly rounded division, truncation
  if (w < h) return {static_cast<int>(double(int64_t(size) * h) / w), size};
  return {size, static_cast<int>(double(int64_t(size) * w) / h)};
}

std::vector<Box> det_resize_boxes(const std::vector<Box>& boxes, int w, int h, int new_w,
                                  int new_h) {
  // ratios in double (Python floats), applied as float32 scalars by the tensor multiply
  const float rw = static_cast<float>(double(new_w) / double(w));
  const float rh = static_cast<float>(double(new_h) / double(h));
  std::vector<Box> out(boxes.size());
  for (size_t i = 0; i < boxes.size(); ++i) {
    const Box& b = boxes[i];
    out[i] = {mulf(b.x1, rw), mulf(b.y1, rh), mulf(b.x2, rw), mulf(b.y2, rh)};
  }
  return out;
}

std::vector<Box> det_flip_boxes(const std::vector<Box>& boxes, int w) {
  const float W = static_cast<float>(w);
  std::vector<Box> out(boxes.size());
  for (size_t i = 0; i < boxes.size(); ++i) {
    const Box& b = boxes[i];
    // image_width - xmax - TO_REMOVE: two float32 subtractions
    const float a = W - b.x2, c = W - b.x1;
    out[i] = {a - 1.f, b.y1, c - 1.f, b.y2};
  }
  return out;
}

std::vector<size_t> det_clip_boxes(std::vector<Box>& boxes, int w, int h, bool remove_empty) {
  const float mx = static_cast<float>(w - 1), my = static_cast<float>(h - 1);
  // torch.clamp_(min=0, max=m) as its kernel computes it: min(max(v, 0), m), NaN kept
  auto clamp = [](float v, float hi) { return std::isnan(v) ? v : std::min(std::max(v, 0.f), hi); };
  std::vector<size_t> keep;
  size_t n = 0;
  for (size_t i = 0; i < boxes.size(); ++i) {
    Box b = boxes[i];
    b = {clamp(b.x1, mx), clamp(b.y1, my), clamp(b.x2, mx), clamp(b.y2, my)};
    if (remove_empty && !(b.y2 > b.y1 && b.x2 > b.x1)) continue;
    boxes[n++] = b;
    keep.push_back(i);
  }
  boxes.resize(n);
  return keep;
}

std::array<float, 768> det_input_lut(const DetTransformOptions& o) {
  // F.to_tensor (v / 255), [[2, 1, 0]] * 255, F.normalize (- mean, / std): float32 each step
  std::array<float, 768> lut;
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v) {
      float t = divf(static_cast<float>(v), 255.f);
      if (o.to_bgr255) t = mulf(t, 255.f);
      t = t - o.pixel_mean[size_t(c)];
      lut[size_t(256 * c + v)] = divf(t, o.pixel_std[size_t(c)]);
    }
  return lut;
}

void det_normalize(const Image& rgb, const DetTransformOptions& o, int canvas_h, int canvas_w,
                   float* chw) {
  HR_CHECK(rgb.channels == 3 && rgb.width <= canvas_w && rgb.height <= canvas_h,
           "[detection] normalize: a ", rgb.width, "x", rgb.height, "x", rgb.channels,
           " image into a ", canvas_w, "x", canvas_h, " canvas");
  const std::array<float, 768> lut = det_input_lut(o);
  const size_t plane = size_t(canvas_h) * canvas_w;
  std::memset(chw, 0, 3 * plane * sizeof(float));
  for (int c = 0; c < 3; ++c) {
    const int src = det_input_channel(o, c);
    const float* l = lut.data() + 256 * c;
    for (int y = 0; y < rgb.height; ++y) {
      const uint8_t* p = rgb.row(y) + src;
      float* d = chw + size_t(c) * plane + size_t(y) * canvas_w;
      for (int x = 0; x < rgb.width; ++x) d[x] = l[p[3 * x]];
    }
  }
}

DetAugment draw_det_augment(const DetTransformOptions& o, std::mt19937_64& rng) {
  HR_CHECK(!o.min_sizes.empty(), "[detection] no minimum size to resize to");
  DetAugment a;
  a.min_size = o.min_sizes[size_t(uniform_int(rng, o.min_sizes.size()))];
  a.flip = uniform01(rng) < o.flip_prob;
  return a;
}

DetTransformed det_transform(const Image& rgb, const std::vector<Box>& boxes,
                             const DetTransformOptions& o, const DetAugment& a) {
  const auto s = det_resize_size(rgb.width, rgb.height, a.min_size, o.max_size);
  HR_CHECK(s[0] > 0 && s[1] > 0, "[detection] a ", rgb.width, "x", rgb.height,
           " image resized to minimum size ", a.min_size, " and maximum size ", o.max_size,
           " is empty (", s[1], "x", s[0], ")");
  DetTransformed t;
  t.image = resize_bilinear_pil(rgb, s[1], s[0]);
  t.boxes = det_resize_boxes(boxes, rgb.width, rgb.height, s[1], s[0]);
  if (a.flip) {
    flip_horizontal(t.image);
    t.boxes = det_flip_boxes(t.boxes, t.image.width);
  }
  return t;
}

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

bool det_has_valid_annotation(const CocoInstances& coco, size_t image_pos) {
  HR_CHECK(image_pos < coco.anns_of_image.size(), "[detection] image position ", image_pos,
           " out of range (index() the annotations first)");
  const auto& anns = coco.anns_of_image[image_pos];
  if (anns.empty()) return false;
  // _has_only_empty_bbox: every object has a width or a height <= 1
  for (size_t k : anns) {
    const auto& b = coco.annotations[k].bbox;
    if (!(b[2] <= 1 || b[3] <= 1)) return true;
  }
  return false;
}

std::vector<DetRecord> det_records(const CocoInstances& coco, const std::string& image_dir,
                                   bool remove_images_without_annotations) {
  HR_CHECK(coco.anns_of_image.size() == coco.images.size(),
           "[detection] the annotations are not indexed (CocoInstances::index())");
  std::vector<size_t> order(coco.images.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return coco.images[a].id < coco.images[b].id; });
  std::vector<DetRecord> out;
  out.reserve(order.size());
  for (size_t pos : order) {
    if (remove_images_without_annotations && !det_has_valid_annotation(coco, pos)) continue;
    const CocoImage& im = coco.images[pos];
    DetRecord r;
    r.image_id = im.id;
    r.file = (std::filesystem::path(image_dir) / im.file_name).string();
    r.width = im.width;
    r.height = im.height;
    HR_CHECK(im.width > 0 && im.height > 0, "[detection] image ", im.id, " (", im.file_name,
             ") has the size ", im.width, "x", im.height, " in the annotation file");
    std::vector<int64_t> labels;
    for (size_t k : coco.anns_of_image[pos]) {
      const CocoInstanceAnn& a = coco.annotations[k];
      if (a.iscrowd) continue;
      const auto l = coco.label_of_category.find(a.category_id);
      HR_CHECK(l != coco.label_of_category.end(), "[detection] annotation ", a.id,
               ": unknown category ", a.category_id);
      r.boxes.push_back(box_from_xywh(a.bbox));
      labels.push_back(l->second);
    }
    for (size_t k : det_clip_boxes(r.boxes, r.width, r.height, true)) r.labels.push_back(labels[k]);
    out.push_back(std::move(r));
  }
  return out;
}

Image read_det_image(const DetRecord& r) {
  Image img = read_image(r.file);  // its errors name the file
  HR_CHECK(img.width == r.width && img.height == r.height, "[detection] image ", r.file, " is ",
           img.width, "x", img.height, " but its annotation (image id ", r.image_id, ") says ",
           r.width, "x", r.height);
  return img;
}

// ---------------------------------------------------------------------------------------------
// The dataset
// ---------------------------------------------------------------------------------------------

void check_det_dataset_options(const DetDatasetOptions& o) {
  check_det_transform(o.transform);
  const int d = o.transform.size_divisibility;
  HR_CHECK(o.canvas_h > 0 && o.canvas_w > 0 && o.canvas_h <= kMaxImageSide &&
               o.canvas_w <= kMaxImageSide,
           "[detection] bad canvas ", o.canvas_w, "x", o.canvas_h);
  HR_CHECK(d <= 0 || (o.canvas_h % d == 0 && o.canvas_w % d == 0), "[detection] the canvas ",
           o.canvas_w, "x", o.canvas_h, " is not a multiple of the size divisibility ", d);
  HR_CHECK(!o.levels.empty(), "[detection] no FCOS level");
  for (const FcosLevel& l : o.levels)
    HR_CHECK(l.stride > 0 && l.h > 0 && l.w > 0, "[detection] bad FCOS level: stride ", l.stride,
             ", ", l.w, "x", l.h);
}

DetDataset::DetDataset(std::vector<DetRecord> records, DetDatasetOptions opt)
    : records_(std::move(records)), opt_(std::move(opt)) {
  check_det_dataset_options(opt_);
  num_locations_ = fcos_num_locations(opt_.levels);
  lut_ = det_input_lut(opt_.transform);
}

std::vector<Field> DetDataset::fields() const {
  const int64_t P = num_locations_;
  return {{"input", {3, opt_.canvas_h, opt_.canvas_w}},
          {"labels", {P}, DType::i64},
          {"reg_targets", {4, P}},
          {"centerness", {P}},
          {"positive", {P}}};
}

DetSample DetDataset::load_sample(size_t i, uint64_t seed, float* input, uint8_t* raw) const {
  HR_CHECK(i < records_.size(), "[detection] dataset: index ", i, " out of range (",
           records_.size(), " images)");
  const DetRecord& r = records_[i];
  const Image rgb = read_det_image(r);
  std::mt19937_64 rng(seed);
  DetSample s;
  s.augment = draw_det_augment(opt_.transform, rng);
  DetTransformed t;
  try {
    t = det_transform(rgb, r.boxes, opt_.transform, s.augment);
  } catch (const Error& e) {
    throw Error(str_cat(e.what(), " (", r.file, ")"));
  }
  HR_CHECK(t.image.width <= opt_.canvas_w && t.image.height <= opt_.canvas_h, "[detection] image ",
           r.file, " (", r.width, "x", r.height, ") resized to ", t.image.width, "x",
           t.image.height, " (min size ", s.augment.min_size, ", max size ", opt_.transform.max_size,
           ") does not fit the ", opt_.canvas_w, "x", opt_.canvas_h, " canvas");
  s.image_h = t.image.height;
  s.image_w = t.image.width;
  if (input) det_normalize(t.image, opt_.transform, opt_.canvas_h, opt_.canvas_w, input);
  if (raw) {  // the canvas' bytes: the image at the top-left, channels in the model's order
    const int W = opt_.canvas_w;
    std::memset(raw, 0, size_t(opt_.canvas_h) * size_t(W) * 3);
    for (int y = 0; y < t.image.height; ++y) {
      const uint8_t* p = t.image.row(y);
      uint8_t* d = raw + size_t(y) * size_t(W) * 3;
      for (int x = 0; x < t.image.width; ++x)
        for (int c = 0; c < 3; ++c)
          d[3 * x + c] = p[3 * x + det_input_channel(opt_.transform, c)];
    }
  }
  s.boxes = std::move(t.boxes);
  s.labels = r.labels;
  return s;
}

void DetDataset::load(size_t i, uint64_t seed, const std::vector<void*>& out) const {
  write_targets(load_sample(i, seed, static_cast<float*>(out[0])), out);
}

void DetDataset::load_raw(size_t i, uint64_t seed, const std::vector<void*>& out) const {
  const DetSample s = load_sample(i, seed, nullptr, static_cast<uint8_t*>(out[0]));
  write_targets(s, out);
  auto* size = static_cast<int64_t*>(out[5]);  // raw_fields: "input_size" last
  size[0] = s.image_h;
  size[1] = s.image_w;
}

void DetDataset::write_targets(const DetSample& s, const std::vector<void*>& out) const {
  auto* labels = static_cast<int64_t*>(out[1]);
  fcos_targets(opt_.levels, s.boxes, s.labels, labels, static_cast<float*>(out[2]),
               static_cast<float*>(out[3]));
  auto* positive = static_cast<float*>(out[4]);
  for (int64_t p = 0; p < num_locations_; ++p) positive[p] = labels[p] > 0 ? 1.f : 0.f;
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

DetTestInput det_test_input(const Image& rgb, const DetTransformOptions& o, int pad_h, int pad_w) {
  check_det_transform(o);
  DetAugment a;
  a.min_size = o.min_sizes[0];
  const DetTransformed t = det_transform(rgb, {}, o, a);
  DetTestInput r;
  r.orig_h = rgb.height;
  r.orig_w = rgb.width;
  r.image_h = t.image.height;
  r.image_w = t.image.width;
  if (pad_h > 0 || pad_w > 0) {
    HR_CHECK(pad_h >= r.image_h && pad_w >= r.image_w, "[detection] a ", rgb.width, "x",
             rgb.height, " image resized to ", r.image_w, "x", r.image_h, " does not fit the ",
             pad_w, "x", pad_h, " canvas");
    r.padded_h = pad_h;
    r.padded_w = pad_w;
  } else {
    const int d = std::max(o.size_divisibility, 1);
    r.padded_h = (r.image_h + d - 1) / d * d;
    r.padded_w = (r.image_w + d - 1) / d * d;
  }
  r.input.resize(size_t(3) * r.padded_h * r.padded_w);
  det_normalize(t.image, o, r.padded_h, r.padded_w, r.input.data());
  return r;
}

std::array<float, 4> det_box_to_coco(const Box& b, int image_w, int image_h, int orig_w,
                                     int orig_h) {
  const Box r = det_resize_boxes({b}, image_w, image_h, orig_w, orig_h)[0];
  return box_to_xywh(r);
}

}  // namespace hr::data
