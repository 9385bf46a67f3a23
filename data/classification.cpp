// Classification data: ImageFolder scanning, list files, torchvision's crop boxes, the sample.
#include "data/classification.h"

#include <algorithm>
#include <cstring>
#include <cctype>
#include <cfenv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/random.h"
#include "engine/error.h"

namespace hr::data {

namespace fs = std::filesystem;

bool is_image_file(const std::string& name) {
  const size_t dot = name.find_last_of('.');
  if (dot == std::string::npos) return false;
  std::string e = name.substr(dot);
  for (auto& c : e) c = char(std::tolower(static_cast<unsigned char>(c)));
  for (const char* x : {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})
    if (e == x) return true;
  return false;
}

ImageSet scan_image_folder(const std::string& dir) {
  std::error_code ec;
  HR_CHECK(fs::is_directory(dir, ec), "[classification] image folder ", dir, " does not exist");
  ImageSet s;
  for (const auto& e : fs::directory_iterator(dir, fs::directory_options::follow_directory_symlink, ec))
    if (e.is_directory()) s.classes.push_back(e.path().filename().string());
  HR_CHECK(!ec, "[classification] cannot list ", dir, ": ", ec.message());
  std::sort(s.classes.begin(), s.classes.end());
  HR_CHECK(!s.classes.empty(), "[classification] ", dir, " has no class folders (expected ", dir,
           "/<class>/<images>)");
  std::vector<std::string> empty;
  for (size_t c = 0; c < s.classes.size(); ++c) {
    // os.walk order: directories by path, files sorted within each
    std::vector<std::pair<std::string, std::string>> found;  // (folder, file name)
    const fs::path root = fs::path(dir) / s.classes[c];
    for (auto it = fs::recursive_directory_iterator(
             root, fs::directory_options::follow_directory_symlink, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_directory()) continue;
      const std::string name = it->path().filename().string();
      if (is_image_file(name)) found.emplace_back(it->path().parent_path().string(), name);
    }
    HR_CHECK(!ec, "[classification] cannot list ", root.string(), ": ", ec.message());
    std::sort(found.begin(), found.end());
    if (found.empty()) empty.push_back(s.classes[c]);
    for (const auto& [folder, name] : found)
      s.images.push_back({(fs::path(folder) / name).string(), static_cast<int64_t>(c)});
  }
  if (!empty.empty()) {
    std::string list;
    for (const auto& e : empty) list += (list.empty() ? "" : ", ") + e;
    throw Error(str_cat("[classification] ", dir, ": no image in the class folder",
                        empty.size() > 1 ? "s " : " ", list,
                        " (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp)"));
  }
  return s;
}

ImageSet read_image_list(const std::string& list_file, const std::string& root) {
  std::ifstream f(list_file);
  HR_CHECK(f, "[classification] cannot open the list file ", list_file);
  ImageSet s;
  int64_t max_label = -1;
  std::string line;
  for (int64_t n = 1; std::getline(f, line); ++n) {
    const size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    std::istringstream in(line);
    std::string path, extra;
    int64_t label = -1;
    HR_CHECK((in >> path >> label) && !(in >> extra) && label >= 0, "[classification] ",
             list_file, ":", n, ": expected 'relative/path label' with a label >= 0, got '", line,
             "'");
    s.images.push_back({(fs::path(root) / path).string(), label});
    max_label = std::max(max_label, label);
  }
  HR_CHECK(!s.images.empty(), "[classification] ", list_file, " lists no image");
  for (int64_t c = 0; c <= max_label; ++c) s.classes.push_back(std::to_string(c));
  return s;
}

// ---------------------------------------------------------------------------------------------
// torchvision's boxes
// ---------------------------------------------------------------------------------------------
namespace {
// Python's round() to an int: half to even
int py_round(double v) { return static_cast<int>(std::nearbyint(v)); }
}  // namespace

CropBox random_resized_crop_box(int width, int height, std::mt19937_64& rng,
                            std::array<double, 2> scale, std::array<double, 2> ratio) {
  const double area = double(width) * height;
  const double lr0 = std::log(ratio[0]), lr1 = std::log(ratio[1]);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * (scale[0] + (scale[1] - scale[0]) * uniform01(rng));
    const double aspect = std::exp(lr0 + (lr1 - lr0) * uniform01(rng));
    const int w = py_round(std::sqrt(target * aspect));
    const int h = py_round(std::sqrt(target / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const int y = static_cast<int>(uniform_int(rng, uint64_t(height - h + 1)));
      const int x = static_cast<int>(uniform_int(rng, uint64_t(width - w + 1)));
      return {x, y, w, h};
    }
  }
  // the centre crop, clamped to the ratio range
  const double in_ratio = double(width) / height;
  int w = width, h = height;
  if (in_ratio < std::min(ratio[0], ratio[1])) {
    h = py_round(w / std::min(ratio[0], ratio[1]));
  } else if (in_ratio > std::max(ratio[0], ratio[1])) {
    w = py_round(h * std::max(ratio[0], ratio[1]));
  }
  return {(width - w) / 2, (height - h) / 2, w, h};
}

std::array<int, 2> resize_shorter(int width, int height, int size) {
  if (width <= height) return {size, static_cast<int>(double(size) * height / width)};
  return {static_cast<int>(double(size) * width / height), size};
}

CropBox center_crop_box(int width, int height, int size) {
  HR_CHECK(width >= size && height >= size, "center crop: ", size, "x", size, " from a ", width,
           "x", height, " image");
  return {py_round((width - size) / 2.0), py_round((height - size) / 2.0), size, size};
}

// ---------------------------------------------------------------------------------------------
// The sample
// ---------------------------------------------------------------------------------------------
namespace {

// The largest JPEG reduction 1/d (d in 8, 4, 2) that keeps `need_w` x `need_h` full-size pixels
// at least `size` decoded pixels along each side; 1 when none does (or not a JPEG).
int decode_denom(const EncodedImage& img, bool fast, int need_w, int need_h, int size) {
  if (!fast || !img.is_jpeg()) return 1;
  for (int d : {8, 4, 2})
    if (need_w / d >= size && need_h / d >= size) return d;
  return 1;
}

// The region of a full-size box in an image decoded at 1/d (ceil(W/d) x ceil(H/d) pixels).
CropBox scaled_box(const CropBox& b, int d, const Image& decoded) {
  const int x0 = b.x / d, y0 = b.y / d;
  const int x1 = std::min((b.x + b.w + d - 1) / d, decoded.width);
  const int y1 = std::min((b.y + b.h + d - 1) / d, decoded.height);
  return {x0, y0, x1 - x0, y1 - y0};
}

}  // namespace

void make_classification_sample(const EncodedImage& img, const ClassificationOptions& o,
                                std::mt19937_64& rng, float* input, uint8_t* raw_input) {
  const int S = o.size;
  Image out;
  if (o.train) {
    const CropBox b = random_resized_crop_box(img.width(), img.height(), rng, {o.min_scale, 1.0});
    const int d = decode_denom(img, o.fast_decode, b.w, b.h, S);
    const Image full = img.decode(d);
    const CropBox r = d == 1 ? b : scaled_box(b, d, full);
    out = resize_bilinear_pil(crop(full, r.x, r.y, r.w, r.h), S, S);
    if (uniform01(rng) < 0.5) flip_horizontal(out);
  } else {
    const int R = static_cast<int>(S / o.eval_ratio);
    const int d = decode_denom(img, o.fast_decode, std::min(img.width(), img.height()),
                               std::min(img.width(), img.height()), R);
    const Image full = img.decode(d);
    const auto [rw, rh] = resize_shorter(full.width, full.height, R);
    const Image resized = resize_bilinear_pil(full, rw, rh);
    const CropBox c = center_crop_box(rw, rh, S);
    out = crop(resized, c.x, c.y, S, S);
  }
  if (raw_input) std::memcpy(raw_input, out.pixels.data(), out.pixels.size());
  if (input) normalize_input(out.pixels.data(), S, S, input);
}

std::array<int64_t, 2> topk_correct(const float* logits, const int64_t* labels, int64_t n,
                                    int64_t classes) {
  std::array<int64_t, 2> r{0, 0};
  const int64_t k5 = std::min<int64_t>(5, classes);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = logits + i * classes;
    const int64_t y = labels[i];
    HR_CHECK(y >= 0 && y < classes, "top-k: label ", y, " outside [0, ", classes, ")");
    int64_t above = 0;
    for (int64_t c = 0; c < classes; ++c) above += row[c] > row[y];
    r[0] += above < 1;
    r[1] += above < k5;
  }
  return r;
}

ClassificationDataset::ClassificationDataset(ImageSet set, ClassificationOptions opt)
    : set_(std::move(set)), opt_(opt) {
  HR_CHECK(opt_.size > 0 && opt_.eval_ratio > 0 && opt_.eval_ratio <= 1,
           "[classification] dataset: bad size ", opt_.size, " or resize ratio ", opt_.eval_ratio);
}

std::vector<Field> ClassificationDataset::fields() const {
  return {{"input", {3, opt_.size, opt_.size}}, {"label", {}, DType::i64}};
}

void ClassificationDataset::load(size_t i, uint64_t seed, const std::vector<void*>& out) const {
  load_sample(i, seed, static_cast<float*>(out[0]), nullptr, static_cast<int64_t*>(out[1]));
}

const float* ClassificationDataset::input_lut() const { return imagenet_input_lut(); }

void ClassificationDataset::load_raw(size_t i, uint64_t seed,
                                     const std::vector<void*>& out) const {
  load_sample(i, seed, nullptr, static_cast<uint8_t*>(out[0]), static_cast<int64_t*>(out[1]));
}

void ClassificationDataset::load_sample(size_t i, uint64_t seed, float* input, uint8_t* raw,
                                        int64_t* label) const {
  HR_CHECK(i < set_.images.size(), "[classification] dataset: index ", i, " out of range (",
           set_.images.size(), " images)");
  const LabelledImage& s = set_.images[i];
  std::mt19937_64 rng(seed);
  make_classification_sample(EncodedImage::read(s.path), opt_, rng, input, raw);
  *label = s.label;
}

}  // namespace hr::data
