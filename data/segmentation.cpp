// Segmentation data: list files, label mapping, gen_sample, the dataset.
#include "data/segmentation.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/random.h"
#include "engine/error.h"
#include "kernels/cpu/cpu_kernels.h"

namespace hr::data {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// List files
// ---------------------------------------------------------------------------------------------

SegList read_seg_list(const std::string& root, const std::string& list_path) {
  SegList l;
  l.file = (fs::path(root) / list_path).string();
  std::ifstream f(l.file);
  HR_CHECK(f, "[segmentation] cannot open the list file ", l.file,
           " (DATASET.ROOT + the list's path)");
  std::string line;
  int64_t first_line = 0;
  for (int64_t n = 1; std::getline(f, line); ++n) {
    std::istringstream in(line);
    std::vector<std::string> fields;
    for (std::string w; in >> w;) fields.push_back(w);
    if (fields.empty()) continue;
    HR_CHECK(fields.size() <= 2, "[segmentation] ", l.file, ":", n,
             ": expected 'image label' or 'image', got ", fields.size(), " fields: '", line, "'");
    const bool labelled = fields.size() == 2;
    if (first_line == 0) {
      first_line = n;
      l.labelled = labelled;
    }
    HR_CHECK(labelled == l.labelled, "[segmentation] ", l.file, ":", n, ": ",
             labelled ? "'image label'" : "an image alone", " but line ", first_line, " has ",
             l.labelled ? "'image label'" : "an image alone", " (a list is labelled or a test list)");
    SegItem it;
    it.image = (fs::path(root) / fields[0]).string();
    if (labelled) it.label = (fs::path(root) / fields[1]).string();
    it.name = fs::path(labelled ? fields[1] : fields[0]).stem().string();
    l.items.push_back(std::move(it));
  }
  HR_CHECK(!l.items.empty(), "[segmentation] ", l.file, " lists no image");
  return l;
}

// ---------------------------------------------------------------------------------------------
// Label mapping
// ---------------------------------------------------------------------------------------------

const std::array<uint8_t, 19> kCityscapesLabelIds{7,  8,  11, 12, 13, 17, 19, 20, 21, 22,
                                                  23, 24, 25, 26, 27, 28, 31, 32, 33};

std::array<int16_t, 256> seg_label_table(SegLabelMapping mapping, int ignore_label,
                                         int num_classes) {
  HR_CHECK(ignore_label >= 0 && ignore_label <= 255, "[segmentation] the ignore label ",
           ignore_label, " is outside 0..255 (labels are 8-bit)");
  std::array<int16_t, 256> t;
  t.fill(kSegBadId);
  if (mapping == SegLabelMapping::cityscapes) {
    HR_CHECK(num_classes == 19, "[segmentation] the Cityscapes label mapping has 19 classes, not ",
             num_classes);
    // an id without an entry is left unchanged by convert_label: the ignore label stays ignore
    t[size_t(ignore_label)] = int16_t(ignore_label);
    for (int id : {0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30})
      t[size_t(id)] = int16_t(ignore_label);
    for (size_t k = 0; k < kCityscapesLabelIds.size(); ++k)
      t[kCityscapesLabelIds[k]] = int16_t(k);
  } else {
    HR_CHECK(num_classes >= 1 && num_classes <= 256, "[segmentation] ", num_classes,
             " classes: 1..256 with 8-bit labels");
    for (int k = 0; k < num_classes; ++k) t[size_t(k)] = int16_t(k);
    t[size_t(ignore_label)] = int16_t(ignore_label);
  }
  return t;
}

void map_label_ids(Image& labels, const std::array<int16_t, 256>& table, const std::string& file,
                   const SegOptions& o) {
  HR_CHECK(labels.channels == 1, "[segmentation] label ", file, ": ", labels.channels,
           " channels, expected 1");
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < labels.pixels.size(); ++i) {
    const int16_t v = table[labels.pixels[i]];
    if (v == kSegBadId) {
      if (bad++ == 0) first = int64_t(i);
      continue;
    }
    labels.pixels[i] = uint8_t(v);
  }
  if (bad == 0) return;
  const int x = int(first % labels.width), y = int(first / labels.width);
  throw Error(str_cat("[segmentation] label ", file, ": id ", int(labels.pixels[size_t(first)]),
                      " at (", x, ", ", y, ") is neither a ",
                      o.mapping == SegLabelMapping::cityscapes
                          ? std::string("Cityscapes label id (0..33)")
                          : str_cat("train id (0..", o.num_classes - 1, ")"),
                      " nor the ignore label ", o.ignore_label, " (", bad, " such pixel",
                      bad > 1 ? "s)" : ")"));
}

// ---------------------------------------------------------------------------------------------
// gen_sample
// ---------------------------------------------------------------------------------------------

void check_seg_options(const SegOptions& o) {
  HR_CHECK(o.crop_h > 0 && o.crop_w > 0, "[segmentation] bad crop ", o.crop_w, "x", o.crop_h);
  HR_CHECK(o.base_size > 0, "[segmentation] bad base size ", o.base_size);
  HR_CHECK(o.scale_factor >= 0 && o.scale_factor <= 1000, "[segmentation] bad scale factor ",
           o.scale_factor);
  HR_CHECK(o.downsample_rate >= 1, "[segmentation] bad downsample rate ", o.downsample_rate);
  HR_CHECK(o.ignore_label >= 0 && o.ignore_label <= 255, "[segmentation] the ignore label ",
           o.ignore_label, " is outside 0..255 (labels are 8-bit)");
  for (int c = 0; c < 3; ++c)
    HR_CHECK(o.std[size_t(c)] > 0, "[segmentation] bad std ", o.std[size_t(c)]);
  seg_label_table(o.mapping, o.ignore_label, o.num_classes);  // checks the classes
  const auto l = seg_label_size(o);
  HR_CHECK(l[0] > 0 && l[1] > 0, "[segmentation] downsample rate ", o.downsample_rate,
           " leaves no label of the ", o.crop_w, "x", o.crop_h, " crop");
}

double seg_rand_scale(int scale_step) { return 0.5 + scale_step / 10.0; }

std::array<int, 2> seg_scaled_size(int w, int h, int base_size, double rand_scale) {
  const int long_size = static_cast<int>(base_size * rand_scale + 0.5);
  if (h > w) return {static_cast<int>(double(w) * long_size / h + 0.5), long_size};
  return {long_size, static_cast<int>(double(h) * long_size / w + 0.5)};
}

std::array<int, 2> seg_label_size(const SegOptions& o) {
  if (o.downsample_rate == 1) return {o.crop_h, o.crop_w};
  const double f = 1. / o.downsample_rate;  // cv2.resize(None, fx=f, fy=f): round(size * f)
  return {static_cast<int>(std::lrint(o.crop_h * f)), static_cast<int>(std::lrint(o.crop_w * f))};
}

SegAugment draw_seg_augment(int w, int h, const SegOptions& o, std::mt19937_64& rng) {
  SegAugment a;
  if (o.multi_scale) {
    a.scale_step = static_cast<int>(uniform_int(rng, uint64_t(o.scale_factor) + 1));
    const auto s = seg_scaled_size(w, h, o.base_size, seg_rand_scale(a.scale_step));
    const int pw = std::max(s[0], o.crop_w), ph = std::max(s[1], o.crop_h);
    a.crop_x = static_cast<int>(uniform_int(rng, uint64_t(pw - o.crop_w) + 1));
    a.crop_y = static_cast<int>(uniform_int(rng, uint64_t(ph - o.crop_h) + 1));
  }
  if (o.flip) a.flip = uniform01(rng) < 0.5;
  return a;
}

std::array<float, 768> seg_input_lut(const std::array<double, 3>& mean,
                                     const std::array<double, 3>& std) {
  std::array<float, 768> lut;
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v) {
      const float x = static_cast<float>(v) / 255.f;  // float32 image / 255.0
      const float m = static_cast<float>(double(x) - mean[size_t(c)]);  // -= mean (float64 list)
      lut[size_t(c * 256 + v)] = static_cast<float>(double(m) / std[size_t(c)]);  // /= std
    }
  return lut;
}

void normalize_seg_input(const Image& rgb, const std::array<double, 3>& mean,
                         const std::array<double, 3>& std, float* chw) {
  HR_CHECK(rgb.channels == 3, "normalize_seg_input: ", rgb.channels, " channels, expected 3");
  const std::array<float, 768> lut = seg_input_lut(mean, std);
  cpu::lut_u8_planar(1, rgb.height, rgb.width, 3, rgb.pixels.data(), lut.data(), nullptr, chw);
}

void make_seg_sample(const Image& rgb, const Image& ids, const SegOptions& o, const SegAugment& a,
                     float* input, int64_t* label, uint8_t* raw_input) {
  HR_CHECK(rgb.channels == 3 && ids.channels == 1 && rgb.width == ids.width &&
               rgb.height == ids.height && rgb.width > 0 && rgb.height > 0,
           "[segmentation] sample: image ", rgb.width, "x", rgb.height, "x", rgb.channels,
           " and labels ", ids.width, "x", ids.height, "x", ids.channels, " do not match");
  Image img, lab;
  if (o.multi_scale) {
    HR_CHECK(a.scale_step >= 0 && a.scale_step <= o.scale_factor, "[segmentation] scale step ",
             a.scale_step, " outside 0..", o.scale_factor);
    const auto s = seg_scaled_size(rgb.width, rgb.height, o.base_size, seg_rand_scale(a.scale_step));
    HR_CHECK(s[0] > 0 && s[1] > 0, "[segmentation] a ", rgb.width, "x", rgb.height,
             " image scaled by ", seg_rand_scale(a.scale_step), " to base size ", o.base_size,
             " is empty");
    const Image big = resize_linear(rgb, s[0], s[1]);
    const Image big_lab = resize_nearest(ids, s[0], s[1]);
    // pad bottom and right to the crop: black image, ignored labels
    const int pw = std::max(s[0], o.crop_w), ph = std::max(s[1], o.crop_h);
    HR_CHECK(a.crop_x >= 0 && a.crop_y >= 0 && a.crop_x + o.crop_w <= pw &&
                 a.crop_y + o.crop_h <= ph,
             "[segmentation] crop at (", a.crop_x, ", ", a.crop_y, ") outside the ", pw, "x", ph,
             " padded image");
    img = Image(o.crop_w, o.crop_h, 3, 0);
    lab = Image(o.crop_w, o.crop_h, 1, static_cast<uint8_t>(o.ignore_label));
    const int x1 = std::min(s[0], a.crop_x + o.crop_w), y1 = std::min(s[1], a.crop_y + o.crop_h);
    for (int y = a.crop_y; y < y1; ++y) {
      if (x1 <= a.crop_x) break;
      std::memcpy(img.row(y - a.crop_y), big.row(y) + size_t(a.crop_x) * 3,
                  size_t(x1 - a.crop_x) * 3);
      std::memcpy(lab.row(y - a.crop_y), big_lab.row(y) + a.crop_x, size_t(x1 - a.crop_x));
    }
  } else {
    HR_CHECK(rgb.width == o.crop_w && rgb.height == o.crop_h, "[segmentation] a ", rgb.width,
             "x", rgb.height, " image without multi-scale cropping: the sample is the whole image",
             ", which must then be the crop size ", o.crop_w, "x", o.crop_h);
    img = rgb;
    lab = ids;
  }
  if (a.flip) {
    flip_horizontal(img);
    flip_horizontal(lab);
  }
  if (raw_input) std::memcpy(raw_input, img.pixels.data(), img.pixels.size());
  if (input) normalize_seg_input(img, o.mean, o.std, input);
  if (o.downsample_rate != 1) {
    const double f = 1. / o.downsample_rate;
    lab = resize_nearest_scale(lab, f, f);
  }
  const auto ls = seg_label_size(o);
  HR_CHECK(lab.width == ls[1] && lab.height == ls[0], "[segmentation] label size ", lab.width,
           "x", lab.height, ", expected ", ls[1], "x", ls[0]);
  for (size_t i = 0; i < lab.pixels.size(); ++i) label[i] = lab.pixels[i];
}

// ---------------------------------------------------------------------------------------------
// The dataset
// ---------------------------------------------------------------------------------------------

SegmentationDataset::SegmentationDataset(SegList list, SegOptions opt)
    : list_(std::move(list)), opt_(opt) {
  check_seg_options(opt_);
  table_ = seg_label_table(opt_.mapping, opt_.ignore_label, opt_.num_classes);
  lut_ = seg_input_lut(opt_.mean, opt_.std);
}

std::vector<Field> SegmentationDataset::fields() const {
  const auto l = seg_label_size(opt_);
  return {{"input", {3, opt_.crop_h, opt_.crop_w}}, {"label", {l[0], l[1]}, DType::i64}};
}

void SegmentationDataset::read_item(size_t i, Image& rgb, Image& ids) const {
  HR_CHECK(i < list_.items.size(), "[segmentation] dataset: index ", i, " out of range (",
           list_.items.size(), " images)");
  const SegItem& it = list_.items[i];
  HR_CHECK(!it.label.empty(), "[segmentation] ", list_.file, " is a test list (no labels): ",
           it.image, " has no label to train or evaluate on");
  rgb = read_image(it.image);
  ids = read_gray_image(it.label);
  HR_CHECK(ids.width == rgb.width && ids.height == rgb.height, "[segmentation] label ", it.label,
           " is ", ids.width, "x", ids.height, " but its image ", it.image, " is ", rgb.width, "x",
           rgb.height);
  map_label_ids(ids, table_, it.label, opt_);
}

void SegmentationDataset::load(size_t i, uint64_t seed, const std::vector<void*>& out) const {
  load_sample(i, seed, static_cast<float*>(out[0]), static_cast<int64_t*>(out[1]), nullptr);
}

void SegmentationDataset::load_raw(size_t i, uint64_t seed, const std::vector<void*>& out) const {
  load_sample(i, seed, nullptr, static_cast<int64_t*>(out[1]), static_cast<uint8_t*>(out[0]));
}

void SegmentationDataset::load_sample(size_t i, uint64_t seed, float* input, int64_t* label,
                                      uint8_t* raw) const {
  Image rgb, ids;
  read_item(i, rgb, ids);
  std::mt19937_64 rng(seed);
  const SegAugment a = draw_seg_augment(rgb.width, rgb.height, opt_, rng);
  try {
    make_seg_sample(rgb, ids, opt_, a, input, label, raw);
  } catch (const Error& e) {
    throw Error(str_cat(e.what(), " (", list_.items[i].image, ")"));
  }
}

SegFullSample SegmentationDataset::load_full(size_t i) const {
  HR_CHECK(i < list_.items.size(), "[segmentation] dataset: index ", i, " out of range (",
           list_.items.size(), " images)");
  SegFullSample s;
  const SegItem& it = list_.items[i];
  s.name = it.name;
  Image ids;
  if (it.label.empty()) {
    s.rgb = read_image(it.image);
  } else {
    read_item(i, s.rgb, ids);
  }
  const int H = s.rgb.height, W = s.rgb.width;
  s.image = Tensor::empty({3, H, W});
  normalize_seg_input(s.rgb, opt_.mean, opt_.std, s.image.data<float>());
  if (!ids.empty()) {
    s.label = Tensor::empty({H, W}, DType::i64);
    int64_t* l = s.label.data<int64_t>();
    for (size_t p = 0; p < ids.pixels.size(); ++p) l[p] = ids.pixels[p];
  }
  return s;
}

}  // namespace hr::data
