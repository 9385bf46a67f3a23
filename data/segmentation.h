// Semantic segmentation data as the official HRNet-Semantic-Segmentation code reads it
// (lib/datasets/base_dataset.py, cityscapes.py): the .lst files ("image label" per line, paths
// relative to DATASET.ROOT; a test list holds the images alone), label ids read as 8-bit grey
// PNGs (cv2.IMREAD_GRAYSCALE) and mapped to train ids (Cityscapes' label_mapping, or identity
// for datasets whose labels are train ids already), and the training sample of gen_sample: a
// random scale (the long side to base_size * (0.5 + randint(0, scale_factor) / 10)) with
// cv2.resize (INTER_LINEAR for the image, INTER_NEAREST for the labels, data/image.h, bit for
// bit), padding at the bottom and right to the crop (black image, ignore labels), a random crop,
// a horizontal flip with probability 1/2 and DOWNSAMPLERATE, the image normalised with the
// ImageNet mean and std as the official numpy code computes it. Images are RGB here (the official
// reads BGR with cv2 and reverses the channels in input_transform: the same pixels).
#pragma once
#include <array>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/image.h"

namespace hr::data {

// ---------------------------------------------------------------------------------------------
// List files

struct SegItem {
  std::string image;  // root joined with the list's path
  std::string label;  // likewise; empty in a test list
  std::string name;   // as the official: the label's file name without extension (the image's
                      // in a test list)
};
struct SegList {
  std::string file;       // the list file read
  bool labelled = true;   // false: a test list (images only)
  std::vector<SegItem> items;
};
// Reads ROOT/LIST_PATH (the official root + list_path, e.g. DATASET.ROOT + DATASET.TRAIN_SET):
// one "image label" or, for a whole test list, "image" per line, separated by spaces or tabs;
// blank lines are skipped. Errors are one line naming the file and the line: a missing file, a
// line of three or more fields, a list mixing labelled and unlabelled lines, an empty list.
SegList read_seg_list(const std::string& root, const std::string& list_path);

// ---------------------------------------------------------------------------------------------
// Label ids -> train ids

enum class SegLabelMapping {
  cityscapes,  // Cityscapes label ids (gtFine_labelIds.png) -> the 19 train ids, others ignored
  identity,    // the file holds train ids already (LIP, ...)
};
// A table entry for an id the mapping has no entry for: an error (or a skipped sample).
constexpr int16_t kSegBadId = -1;
// The 256-entry table of a mapping: train id, ignore_label, or kSegBadId.
// cityscapes: cityscapes.py's label_mapping (ids 7 8 11 12 13 17 19 20 21 22 23 24 25 26 27 28 31
// 32 33 -> 0..18, ids 0-6 9 10 14 15 16 18 29 30 -> ignore). The official convert_label leaves an
// id without an entry unchanged: ignore_label itself then stays ignore, any other (34..254 for
// the usual 255) would reach the loss as a class that does not exist, so it is kSegBadId here.
// identity: ids 0..num_classes-1 to themselves, ignore_label to itself, others kSegBadId.
std::array<int16_t, 256> seg_label_table(SegLabelMapping mapping, int ignore_label,
                                         int num_classes);
// Cityscapes' label id of each train id 0..18 (the inverse of the mapping's classes).
extern const std::array<uint8_t, 19> kCityscapesLabelIds;
struct SegOptions;
// Maps an 8-bit label image in place through `table` (seg_label_table of o's mapping). An id
// without an entry throws "[segmentation] label FILE: id V at (x, y) is neither a ... nor the
// ignore label ... (N such pixels)".
void map_label_ids(Image& labels, const std::array<int16_t, 256>& table, const std::string& file,
                   const SegOptions& o);

// ---------------------------------------------------------------------------------------------
// Samples

struct SegOptions {
  int crop_h = 512, crop_w = 1024;  // TRAIN.IMAGE_SIZE is [crop_w, crop_h]
  int base_size = 2048;             // TRAIN.BASE_SIZE: the long side at scale 1
  bool multi_scale = true;          // TRAIN.MULTI_SCALE: random scale + pad + crop
  bool flip = true;                 // TRAIN.FLIP
  int scale_factor = 16;            // TRAIN.SCALE_FACTOR: scales 0.5 + {0..scale_factor} / 10
  int downsample_rate = 1;          // TRAIN.DOWNSAMPLERATE: labels resized by 1/rate (nearest)
  int ignore_label = 255;           // TRAIN.IGNORE_LABEL, 0..255 (labels are 8-bit)
  SegLabelMapping mapping = SegLabelMapping::cityscapes;
  int num_classes = 19;             // DATASET.NUM_CLASSES (19 for the Cityscapes mapping)
  std::array<double, 3> mean{0.485, 0.456, 0.406}, std{0.229, 0.224, 0.225};  // RGB
  // A sample that cannot be built (missing or unreadable file, sizes differ, an id without an
  // entry): skipped and counted by the loader (true) or an error (false).
  bool skip_corrupt = false;
};
// Throws naming what is wrong (crop, sizes, ignore label, classes, mean/std).
void check_seg_options(const SegOptions& o);

// The random choices of one training sample, drawn by draw_seg_augment or given by a test.
struct SegAugment {
  int scale_step = 5;        // rand_scale = 0.5 + scale_step / 10, scale_step in 0..scale_factor
  int crop_x = 0, crop_y = 0;  // the crop's corner in the scaled and padded image
  bool flip = false;
};
double seg_rand_scale(int scale_step);
// multi_scale_aug's size {w, h} of a w x h image: the long side int(base_size * rand_scale + 0.5),
// the other int(short * long / long_before + 0.5) (the height is the long side when h > w).
std::array<int, 2> seg_scaled_size(int w, int h, int base_size, double rand_scale);
// The label field's {h, w}: the crop, or round(crop / downsample_rate) (cv2.resize with fx=1/rate).
std::array<int, 2> seg_label_size(const SegOptions& o);
// randint(0, scale_factor), then the crop corner (uniform over the padded scaled image) and the
// flip, from rng alone, in that order. Without multi_scale only the flip is drawn.
SegAugment draw_seg_augment(int w, int h, const SegOptions& o, std::mt19937_64& rng);

// The official input_transform: per channel (float32(v) / 255 - mean) / std, the subtraction and
// the division in double rounded to float32 (numpy's in-place ops on a float32 image), RGB uint8
// [H,W,3] -> f32 [3,H,W].
void normalize_seg_input(const Image& rgb, const std::array<double, 3>& mean,
                         const std::array<double, 3>& std, float* chw);
// The table normalize_seg_input reads, [3][256]: channel c's value for byte v.
std::array<float, 768> seg_input_lut(const std::array<double, 3>& mean,
                                     const std::array<double, 3>& std);

// gen_sample with the given choices: `rgb` (the image) and `ids` (train ids, 1 channel, the same
// size, already mapped) -> `input` [3,crop_h,crop_w] f32 and `label` seg_label_size() i64. With
// multi_scale: resize, pad, crop; without it the image must be the crop's size (the official
// returns the whole image then). Then the flip, then DOWNSAMPLERATE. raw_input: the crop's bytes
// [crop_h, crop_w * 3] (what normalize_seg_input reads), as well as or instead of `input` (null).
void make_seg_sample(const Image& rgb, const Image& ids, const SegOptions& o, const SegAugment& a,
                     float* input, int64_t* label, uint8_t* raw_input = nullptr);

// One image at its full size without augmentation (the official validation sample: gen_sample
// with multi_scale and flip off).
struct SegFullSample {
  Tensor image;      // f32 [3,H,W], normalised
  Tensor label;      // i64 [H,W] train ids and ignore_label; undefined for a test list
  Image rgb;         // the image as read, for pictures
  std::string name;  // SegItem::name
};

// Samples: "input" f32 [3,crop_h,crop_w] and "label" i64 seg_label_size().
class SegmentationDataset : public Dataset {
 public:
  SegmentationDataset(SegList list, SegOptions opt);
  size_t size() const override { return list_.items.size(); }
  std::vector<Field> fields() const override;
  void load(size_t i, uint64_t seed, const std::vector<void*>& out) const override;
  bool skip_corrupt() const override { return opt_.skip_corrupt; }
  const float* input_lut() const override { return lut_.data(); }
  void load_raw(size_t i, uint64_t seed, const std::vector<void*>& out) const override;
  SegFullSample load_full(size_t i) const;
  // Item i's image and its labels mapped to train ids (1 channel), checked: both readable, the
  // same size, every id in the mapping. Errors name the file.
  void read_item(size_t i, Image& rgb, Image& ids) const;
  const SegList& list() const { return list_; }
  const SegOptions& options() const { return opt_; }

 private:
  SegList list_;
  SegOptions opt_;
  std::array<int16_t, 256> table_;
  std::array<float, 768> lut_;  // seg_input_lut(opt_.mean, opt_.std)
  void load_sample(size_t i, uint64_t seed, float* input, int64_t* label, uint8_t* raw) const;
};

}  // namespace hr::data
