// Object detection data as HRNet-FCOS (maskrcnn-benchmark) prepares it: the COCODataset records
// (data/datasets/coco.py: images sorted by id, crowd annotations dropped, images without a usable
// annotation removed for training, contiguous labels, xywh -> xyxy with TO_REMOVE = 1 and
// clip_to_image(remove_empty=True)), the transforms of data/transforms/build.py (Resize.get_size
// with Pillow's bilinear resize, RandomHorizontalFlip with BoxList.transpose, ToTensor +
// Normalize to BGR x 255 minus PIXEL_MEAN over PIXEL_STD, boxes as BoxList.resize), zero padding
// at the bottom and right (structures/image_list.py to_image_list), and the FCOS training
// targets of the padded image (data/boxes.h fcos_targets). Box arithmetic in float32 as the
// official tensors; random choices from the sample's seed (data/random.h), not Python's random.
#pragma once
#include <array>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "data/boxes.h"
#include "data/dataset.h"
#include "data/image.h"

namespace hr::data {

// ---------------------------------------------------------------------------------------------
// Transform options (cfg.INPUT.*, DATALOADER.SIZE_DIVISIBILITY)

struct DetTransformOptions {
  std::vector<int> min_sizes{800};  // Resize's min_size tuple (random.choice of one per sample)
  int max_size = 1333;              // MAX_SIZE_TRAIN / MAX_SIZE_TEST; <= 0: None (no cap)
  double flip_prob = 0.5;           // 0.5 in training, 0 in test (build.py)
  int size_divisibility = 32;       // DATALOADER.SIZE_DIVISIBILITY (0: none)
  std::array<float, 3> pixel_mean{102.9801f, 115.9465f, 122.7717f};  // INPUT.PIXEL_MEAN
  std::array<float, 3> pixel_std{1.f, 1.f, 1.f};                     // INPUT.PIXEL_STD
  bool to_bgr255 = true;  // INPUT.TO_BGR255: channels B, G, R in 0..255; else R, G, B in 0..1
};
// build.py's training min sizes: MIN_SIZE_TRAIN, or range(lo, hi + 1) when MIN_SIZE_RANGE_TRAIN
// is not (-1, -1) (then it must be lo <= hi, both positive).
std::vector<int> det_train_min_sizes(const std::vector<int>& min_size_train,
                                     std::array<int, 2> min_size_range_train = {-1, -1});
// build_transforms(cfg, is_train): flip 0.5 with the training sizes, 0 with MIN_SIZE_TEST.
DetTransformOptions det_train_transform(const std::vector<int>& min_sizes, int max_size);
DetTransformOptions det_test_transform(int min_size_test, int max_size_test);
// Throws naming the bad option (no min size, a size <= 0, flip outside [0, 1], std <= 0, ...).
void check_det_transform(const DetTransformOptions& o);

// ---------------------------------------------------------------------------------------------
// The transforms, step by step

// Resize.get_size of a w x h image with the chosen min size: {oh, ow}. With max_size > 0 the
// size becomes int(round(max_size * short / long)) (round half to even) when long / short * size
// exceeds it; the short side becomes the size and the long one int(size * long / short).
std::array<int, 2> det_resize_size(int w, int h, int min_size, int max_size);

// BoxList.resize from (w, h) to (new_w, new_h): coordinates times float32(new / old) per axis.
std::vector<Box> det_resize_boxes(const std::vector<Box>& boxes, int w, int h, int new_w,
                                  int new_h);
// BoxList.transpose(FLIP_LEFT_RIGHT) in an image of width w: x1' = w - x2 - 1, x2' = w - x1 - 1.
std::vector<Box> det_flip_boxes(const std::vector<Box>& boxes, int w);
// (The conversions xywh <-> xyxy are data/boxes.h box_from_xywh and box_to_xywh.)
// BoxList.clip_to_image on a w x h image: every coordinate clamped to [0, w - 1] / [0, h - 1];
// with remove_empty, boxes with x2 <= x1 or y2 <= y1 (after the clamp) are dropped. Returns the
// positions kept (into the boxes given), boxes clamped and compacted in place.
std::vector<size_t> det_clip_boxes(std::vector<Box>& boxes, int w, int h, bool remove_empty);

// ToTensor + Normalize of an RGB image into `chw` [3, canvas_h, canvas_w] at the top-left, the
// rest zero (to_image_list's padding): per channel (v / 255 * 255 - mean) / std with to_bgr255
// (channel 0 = blue), else (v / 255 - mean) / std (channel 0 = red), each step in float32.
void det_normalize(const Image& rgb, const DetTransformOptions& o, int canvas_h, int canvas_w,
                   float* chw);
// The table det_normalize reads, [3][256]: channel c's value (the model's channel order) for
// byte v of the image's channel det_input_channel(o, c).
std::array<float, 768> det_input_lut(const DetTransformOptions& o);
inline int det_input_channel(const DetTransformOptions& o, int c) {
  return o.to_bgr255 ? 2 - c : c;
}

// The random choices of one sample: Resize's min size, then the flip.
struct DetAugment {
  int min_size = 800;
  bool flip = false;
};
// uniform_int over o.min_sizes, then uniform01 < flip_prob (always drawn), from rng alone.
DetAugment draw_det_augment(const DetTransformOptions& o, std::mt19937_64& rng);

// One image and its boxes through Resize and RandomHorizontalFlip (pixels bit for bit with
// Pillow 9.4's Image.resize BILINEAR, boxes as BoxList). `boxes` are xyxy in rgb's pixels.
struct DetTransformed {
  Image image;             // resized (and flipped) RGB
  std::vector<Box> boxes;  // in the resized image
};
DetTransformed det_transform(const Image& rgb, const std::vector<Box>& boxes,
                             const DetTransformOptions& o, const DetAugment& a);

// ---------------------------------------------------------------------------------------------
// COCO instances -> records (COCODataset)

struct DetRecord {
  int64_t image_id = 0;
  std::string file;           // image_dir joined with file_name
  int width = 0, height = 0;  // as the annotation file gives them
  std::vector<Box> boxes;     // xyxy, crowd removed, clipped, empty ones removed
  std::vector<int64_t> labels;  // contiguous (CocoInstances::label_of_category), one per box
};
// coco.py has_valid_annotation over ALL the image's annotations (crowd ones included): false
// when there are none, or when every bbox has w <= 1 or h <= 1.
bool det_has_valid_annotation(const CocoInstances& coco, size_t image_pos);
// The records of COCODataset in its order (ascending image id). With
// remove_images_without_annotations (training), images failing det_has_valid_annotation are
// left out; the others keep their boxes after crowd removal and clip_to_image(remove_empty) on the
// annotation file's size (possibly none: an image whose only annotations are crowds). `coco`
// must be index()ed (load_coco_instances does it).
std::vector<DetRecord> det_records(const CocoInstances& coco, const std::string& image_dir,
                                   bool remove_images_without_annotations);

// Reads a record's image: errors name the file ("cannot read image F: ..." for a missing or
// unreadable file; "[detection] image F is WxH but its annotation says WxH").
Image read_det_image(const DetRecord& r);

// ---------------------------------------------------------------------------------------------
// The training dataset

struct DetDatasetOptions {
  DetTransformOptions transform;
  // Every sample zero-padded at the bottom and right into one [3, canvas_h, canvas_w] input; a
  // multiple of transform.size_divisibility, large enough for every resized image.
  int canvas_h = 0, canvas_w = 0;
  // The FCOS levels of the canvas (strides, feature sizes, TARGET_ASSIGN ranges).
  std::vector<FcosLevel> levels;
  // A sample that cannot be built (missing or unreadable image, size differing from the
  // annotation file's, a resized image larger than the canvas): skipped and counted by the loader
  // (true) or an error (false).
  bool skip_corrupt = false;
};
// Throws naming what is wrong (transform options, canvas, levels).
void check_det_dataset_options(const DetDatasetOptions& o);

// The pieces of one training sample before they become fields (tests and pictures use them).
struct DetSample {
  DetAugment augment;
  int image_h = 0, image_w = 0;  // the resized image inside the canvas
  std::vector<Box> boxes;        // transformed, the input's pixels
  std::vector<int64_t> labels;
};

// Samples: "input" f32 [3, canvas_h, canvas_w], "labels" i64 [P], "reg_targets" f32 [4, P],
// "centerness" f32 [P], "positive" f32 [P] (1 where labels > 0), P = fcos_num_locations(levels).
class DetDataset : public Dataset {
 public:
  DetDataset(std::vector<DetRecord> records, DetDatasetOptions opt);
  size_t size() const override { return records_.size(); }
  std::vector<Field> fields() const override;
  void load(size_t i, uint64_t seed, const std::vector<void*>& out) const override;
  bool skip_corrupt() const override { return opt_.skip_corrupt; }
  // The raw input: the resized image's bytes at the canvas' top-left in the model's channel
  // order (BGR with to_bgr255), zero bytes around, and its size (raw_input_sized).
  const float* input_lut() const override { return lut_.data(); }
  void load_raw(size_t i, uint64_t seed, const std::vector<void*>& out) const override;
  bool raw_input_sized() const override { return true; }
  // Builds sample i: the input (may be null; or raw: the bytes load_raw writes) and the sample's
  // boxes; throws naming the file.
  DetSample load_sample(size_t i, uint64_t seed, float* input, uint8_t* raw = nullptr) const;
  const DetRecord& record(size_t i) const { return records_[i]; }
  const std::vector<DetRecord>& records() const { return records_; }
  const DetDatasetOptions& options() const { return opt_; }

 private:
  std::vector<DetRecord> records_;
  DetDatasetOptions opt_;
  int64_t num_locations_ = 0;
  std::array<float, 768> lut_;  // det_input_lut(opt_.transform)
  // the FCOS targets of a loaded sample into out[1..4]
  void write_targets(const DetSample& s, const std::vector<void*>& out) const;
};

// ---------------------------------------------------------------------------------------------
// Evaluation and inference

// One image through the test transform (Resize with o.min_sizes[0] and o.max_size, no flip,
// ToTensor + Normalize) and to_image_list's padding: up to the size divisibility, or into a
// given canvas (pad_h, pad_w > 0, which must hold the resized image).
struct DetTestInput {
  std::vector<float> input;        // [3, padded_h, padded_w]
  int padded_h = 0, padded_w = 0;
  int image_h = 0, image_w = 0;    // resized, before padding (the BoxList size of detections)
  int orig_h = 0, orig_w = 0;      // the image given
};
DetTestInput det_test_input(const Image& rgb, const DetTransformOptions& o, int pad_h = 0,
                            int pad_w = 0);

// prepare_for_coco_detection: a detection box of the resized image_w x image_h image ->
// BoxList.resize to orig_w x orig_h -> convert("xywh"), the COCO result's bbox.
std::array<float, 4> det_box_to_coco(const Box& b, int image_w, int image_h, int orig_w,
                                     int orig_h);

}  // namespace hr::data
