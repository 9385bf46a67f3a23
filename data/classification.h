// Image classification data as the official HRNet-Image-Classification code reads it: the
// ImageNet folder layout (ROOT/SET/<class>/<image>, classes = the sorted folder names, images
// found as torchvision's ImageFolder finds them) or a list file, and torchvision's transforms on
// PIL images: RandomResizedCrop(size) + RandomHorizontalFlip for training, Resize(size / 0.875)
// + CenterCrop(size) for evaluation, then ToTensor + Normalize with the ImageNet mean and std.
// The crop boxes follow torchvision's rules with this engine's portable random draws; the
// resizing is Pillow's bilinear, bit for bit.
#pragma once
#include <array>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/image.h"

namespace hr::data {

struct LabelledImage {
  std::string path;
  int64_t label = 0;
};

struct ImageSet {
  std::vector<std::string> classes;  // index -> class name (folder name, or as the list says)
  std::vector<LabelledImage> images;
};

// torchvision's IMG_EXTENSIONS (case-insensitive).
bool is_image_file(const std::string& name);
// DIR/<class>/... : classes are the sorted sub-folder names; every image file under a class
// folder (sub-folders included, sorted) is one sample. Errors name DIR: missing, no class
// folder, a class folder with no image.
ImageSet scan_image_folder(const std::string& dir);
// A list file: one "relative/path label" per line (blank lines and '#' comments skipped), paths
// relative to `root`; class names "0", "1", ... up to the largest label. Errors name the file and
// the line.
ImageSet read_image_list(const std::string& list_file, const std::string& root);

// A crop box in pixels of the full image.
struct CropBox {
  int x = 0, y = 0, w = 0, h = 0;
};
// torchvision RandomResizedCrop.get_params: up to 10 tries of an area fraction in `scale` and a
// log-uniform aspect ratio in `ratio` (rounded as Python rounds), then the centre crop clamped to
// the ratio range.
CropBox random_resized_crop_box(int width, int height, std::mt19937_64& rng,
                            std::array<double, 2> scale = {0.08, 1.0},
                            std::array<double, 2> ratio = {3.0 / 4.0, 4.0 / 3.0});
// torchvision Resize(size) with an int: the shorter side to `size`, the other int(size*long/short).
std::array<int, 2> resize_shorter(int width, int height, int size);  // -> {w, h}
// torchvision CenterCrop(size): top and left rounded half to even, as Python's round().
CropBox center_crop_box(int width, int height, int size);

struct ClassificationOptions {
  int size = 224;               // MODEL.IMAGE_SIZE
  bool train = true;            // RandomResizedCrop + flip; else Resize + CenterCrop
  double min_scale = 0.08;      // RandomResizedCrop's area scale range is [min_scale, 1]
  double eval_ratio = 0.875;    // evaluation resizes the shorter side to int(size / eval_ratio)
  bool fast_decode = false;     // JPEGs decoded at 1/2, 1/4, 1/8 where the output allows it
  bool skip_corrupt = true;
};

// One sample into `input` [3,size,size] (normalised f32). With fast_decode, a JPEG is decoded at
// the smallest scale that still leaves at least `size` pixels along each side of the region the
// output is resized from, so the last resize is still a reduction; the crop is then that region
// of the smaller image (not bit-exact with full decoding, close to it). raw_input: the crop's
// bytes [size, size * 3] (what normalize_input reads), as well as or instead of `input` (null).
void make_classification_sample(const EncodedImage& img, const ClassificationOptions& o,
                                std::mt19937_64& rng, float* input, uint8_t* raw_input = nullptr);

// How many of n samples have their label among the k largest of their C logits (row-major
// [n, C]), for k = 1 and k = min(5, C): the official accuracy() counts (logits without ties; with
// ties a label counts when fewer than k logits are strictly larger).
std::array<int64_t, 2> topk_correct(const float* logits, const int64_t* labels, int64_t n,
                                    int64_t classes);

// Samples: "input" [3,size,size] f32 and "label" [] i64.
class ClassificationDataset : public Dataset {
 public:
  ClassificationDataset(ImageSet set, ClassificationOptions opt);
  size_t size() const override { return set_.images.size(); }
  std::vector<Field> fields() const override;
  void load(size_t i, uint64_t seed, const std::vector<void*>& out) const override;
  const float* input_lut() const override;
  void load_raw(size_t i, uint64_t seed, const std::vector<void*>& out) const override;
  bool skip_corrupt() const override { return opt_.skip_corrupt; }
  const ImageSet& set() const { return set_; }
  const ClassificationOptions& options() const { return opt_; }

 private:
  // Sample i: its input normalised (input) or raw (raw), and its label.
  void load_sample(size_t i, uint64_t seed, float* input, uint8_t* raw, int64_t* label) const;
  ImageSet set_;
  ClassificationOptions opt_;
};

}  // namespace hr::data
