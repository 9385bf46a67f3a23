// The built-in synthetic classification dataset (hrnet-synth --task cls): the ImageNet folder
// layout (train/<class>/*.jpg, val/<class>/*.jpg, what data::scan_image_folder reads) of JPEG
// images of ten filled shapes, one per image, on textured backgrounds with clutter, varied in
// size (25-90% of the shorter side), position (sometimes cut by the frame), tilt (up to 30
// degrees), mirroring, stretch, colour and fill. Everything but the outline of the shape is drawn
// independently of its class, so only the shape tells the classes apart. Deterministic in the
// seed.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"

namespace hr::data {

struct SynthClsOptions {
  // a small plain CNN at 64x64 reached ~0.95 top-1 from 1000 a class, overfit at ~0.7 from 200
  int train_per_class = 1000, val_per_class = 50;
  // the longer side of each image; the shorter is >= min_side, the aspect ratio 1 to 3:2
  int min_side = 96, max_side = 160;
  uint64_t seed = 1;
  int jpeg_quality = 92;
  int threads = 0;  // 0: hardware threads (output identical for any count)
};

// The ten classes, sorted as scan_image_folder sorts the folders, so a label is an index here:
// arrow circle crescent cross diamond heart ring square star triangle.
std::vector<std::string> synthetic_class_names();

struct SynthClsImage {
  Image image;
  // The shape's coverage of each pixel, 0..255 (row-major, width * height): 0 background.
  std::vector<uint8_t> mask;
};
// Image of class `label` (an index into synthetic_class_names()), its sides in
// [min_side, max_side]. The seed alone decides the size, background, clutter, colours,
// placement, rotation and noise: two classes rendered with one seed differ only near their
// shapes.
SynthClsImage render_synthetic_class_image(int label, uint64_t seed, int min_side, int max_side);

// The seed of image `index` of class `label` in split 0 (train) or 1 (val) of a dataset made with
// `seed`; a split's images do not depend on the other split's size.
uint64_t synthetic_class_image_seed(uint64_t seed, int split, int label, int64_t index);

// Writes OUT/train/<class>/<i>.jpg (i = 000000 .. train_per_class - 1) and OUT/val/<class>/<i>.jpg,
// then OUT/classes.txt (the class names, one a line) last and atomically: a directory holding it is
// complete. Images of an earlier run beyond the new counts are removed; a folder in OUT/train or
// OUT/val that is not a synthetic class is an error. Prints progress to stderr if `progress`.
void generate_synthetic_classification(const std::string& out_dir, const SynthClsOptions& opt,
                                       bool progress);

}  // namespace hr::data
