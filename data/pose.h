// The top-down pose pipeline of the official HRNet code, step for step: person box -> centre/scale,
// the affine crop (cv2.warpAffine bilinear, border 0), the training augmentation (half body,
// scale, rotation, flip with joint-pair swap), Gaussian heatmap targets with target weights,
// and the test-time decoding (argmax, quarter offset, inverse affine, flip test).
// Facts and traps: ../shared/HRNET_REFERENCE.md section 4.
#pragma once
#include <array>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "data/coco.h"
#include "data/dataset.h"
#include "data/image.h"
#include "data/random.h"

namespace hr::data {

inline constexpr float kPixelStd = 200.f;

// 2x3 affine map: x' = m[0] x + m[1] y + m[2], y' = m[3] x + m[4] y + m[5].
struct Affine {
  std::array<double, 6> m{};
  void apply(double x, double y, double& ox, double& oy) const {
    ox = m[0] * x + m[1] * y + m[2];
    oy = m[3] * x + m[4] * y + m[5];
  }
};

// The official get_affine_transform with shift 0: maps the box (center, scale*200; only the
// width of scale is used) rotated by rot_deg to an out_w x out_h image; `inverse` maps back.
Affine get_affine_transform(const std::array<float, 2>& center, const std::array<float, 2>& scale,
                            float rot_deg, int out_w, int out_h, bool inverse = false);

// cv2.warpAffine(src, M, (out_w, out_h), flags=INTER_LINEAR, borderValue=0): dst(x,y) =
// src(M^-1 (x,y)) sampled bilinearly; `dst` holds out_h*out_w*channels bytes.
void warp_affine(const Image& src, const Affine& M, int out_w, int out_h, uint8_t* dst);

// Box [x,y,w,h] -> centre and scale (in units of 200 px): aspect fixed to aspect_ratio (w/h) by
// growing the short side, times `padding` (1.25 for GT and detection boxes).
void box_to_center_scale(const std::array<float, 4>& box, float aspect_ratio,
                         std::array<float, 2>& center, std::array<float, 2>& scale,
                         float padding = 1.25f);

// One person to crop: from a GT annotation (training / GT-box evaluation) or a detection.
struct PoseRecord {
  std::string image_path;
  int64_t image_id = 0;
  int64_t ann_id = -1;  // -1 for detections
  std::array<float, 2> center{}, scale{};
  float score = 1;      // detection score (1 for GT boxes)
  std::array<float, 3 * kNumJoints> joints{};  // x, y, visible (0/1) per joint
};

// The official COCO loading: persons whose clipped box has positive area and that have at least
// one labelled keypoint; boxes clipped to the image first.
std::vector<PoseRecord> gt_records(const CocoKeypoints& coco, const std::string& image_dir,
                                   float aspect_ratio);
// Detection boxes of category person with score >= score_threshold, for images in `coco`.
std::vector<PoseRecord> detection_records(const std::vector<DetectionBox>& dets,
                                          const CocoKeypoints& coco, const std::string& image_dir,
                                          float aspect_ratio, float score_threshold);

struct AugmentParams {
  bool enabled = true;         // false: evaluation crops
  float scale_factor = 0.35f;  // DATASET.SCALE_FACTOR
  float rot_factor = 45.f;     // DATASET.ROT_FACTOR (degrees)
  float rot_prob = 0.6f;
  bool flip = true;            // DATASET.FLIP
  float half_body_prob = 0.3f; // DATASET.PROB_HALF_BODY
  int num_joints_half_body = 8;
};

struct TargetParams {
  int image_w = 192, image_h = 256;    // MODEL.IMAGE_SIZE
  int heatmap_w = 48, heatmap_h = 64;  // MODEL.HEATMAP_SIZE
  float sigma = 2.f;                   // MODEL.SIGMA
  bool use_target_weight = true;       // LOSS.USE_TARGET_WEIGHT
};

// How a crop was made, for mapping predictions back.
struct CropMeta {
  std::array<float, 2> center{}, scale{};
  float rotation = 0;
  bool flipped = false;
};

// Builds one sample from a decoded image: the normalised input [3,H,W] (RGB/255, ImageNet mean
// and std), the heatmap target [J,h,w] and target weight [J]. With aug.enabled it applies the
// official augmentation, drawing from `rng`. `target`/`weight` may be null (inference).
// raw_input: the warped crop's bytes [H, W * 3] (what normalize_input reads), as well as or
// instead of `input` (null).
void make_sample(const Image& img, const PoseRecord& rec, const AugmentParams& aug,
                 const TargetParams& tp, std::mt19937_64& rng, float* input, float* target,
                 float* weight, CropMeta* meta, uint8_t* raw_input = nullptr);

// Heatmap target of one person in heatmap coordinates' parent frame: joints are in input-image
// pixels (x, y, visible); writes [J,h,w] and [J].
void generate_target(const float* joints_xyv, int num_joints, const TargetParams& tp, float* target,
                     float* weight);

// Decoding of heatmaps [J,h,w] of one person: argmax (first maximum; a maximum <= 0 gives (0,0)),
// the quarter-pixel offset toward the larger neighbour when 1 < x < w-1 and 1 < y < h-1, then the
// inverse affine of (center, scale) to image pixels. Writes x, y, maxval per joint.
void decode_heatmaps(const float* heatmaps, int num_joints, int h, int w,
                     const std::array<float, 2>& center, const std::array<float, 2>& scale,
                     float* out_xyscore);

// Flip test: mirrors heatmaps [J,h,w] of the flipped input in place (width reversed, joint pairs
// swapped, shifted right by one column with column 0 kept), ready to average with the plain pass.
// With shift false (TEST.SHIFT_HEATMAP false) the one-column shift is left out.
void flip_back_heatmaps(float* heatmaps, int num_joints, int h, int w, bool shift = true);
// Mirrors an input [3,H,W] horizontally into `out`.
void flip_input(const float* input, int channels, int h, int w, float* out);

// ---- the steps make_sample is made of (tests and tools use them one by one) ----

// The inverse of an invertible affine map (the same arithmetic as cv2.warpAffine applies).
Affine invert_affine(const Affine& M);

// warp_affine of the horizontally mirrored src (src[:, ::-1]) without making the mirrored copy:
// the official flip augmentation mirrors the image before the crop.
void warp_affine_mirrored(const Image& src, const Affine& M, int out_w, int out_h, uint8_t* dst);

// The official half_body_transform: the visible joints (v > 0) of the upper body (ids 0-10) when
// prefer_upper (the official `np.random.randn() < 0.5`) and more than 2 are visible, else of the
// lower body if more than 2, else the upper; false when fewer than 2 are chosen. The centre is
// their mean; the box is their extent grown to aspect_ratio (w/h), in units of 200 px, x1.5.
bool half_body_center_scale(const float* joints_xyv, int num_joints, bool prefer_upper,
                            float aspect_ratio, std::array<float, 2>& center,
                            std::array<float, 2>& scale);

// Draws the training augmentation of one sample in the official order (half body, scale,
// rotation, flip); returns the crop to make (center/scale mirrored when flipped). `image_width`
// is the width of the decoded image (the flip mirrors about it). Without aug.enabled: the
// record's own crop.
CropMeta draw_augmentation(const PoseRecord& rec, int image_width, const AugmentParams& aug,
                           const TargetParams& tp, std::mt19937_64& rng);

// Builds the sample of a given crop (as drawn by draw_augmentation): the warped, normalised input
// [3,H,W], the target [J,h,w] and weight [J] (either may be null), and optionally the joints in
// input pixels `joints_out` [J,3] (x, y, v; flipped and pair-swapped when crop.flipped).
void render_sample(const Image& img, const PoseRecord& rec, const CropMeta& crop,
                   const TargetParams& tp, float* input, float* target, float* weight,
                   float* joints_out = nullptr, uint8_t* raw_input = nullptr);


// ---- the dataset the loader and the trainer see ----
struct PoseDatasetOptions {
  AugmentParams aug;
  TargetParams target;
  bool skip_corrupt = true;  // a sample whose image cannot be read: skip and count, or throw
};

// Person records as samples: "input" [3,H,W], "target" [J,h,w] and "weight" [J,1] (f32).
class PoseDataset : public Dataset {
 public:
  PoseDataset(std::vector<PoseRecord> records, PoseDatasetOptions opt);
  size_t size() const override { return records_.size(); }
  std::vector<Field> fields() const override;
  void load(size_t i, uint64_t seed, const std::vector<void*>& out) const override;
  bool skip_corrupt() const override { return opt_.skip_corrupt; }
  const float* input_lut() const override;
  void load_raw(size_t i, uint64_t seed, const std::vector<void*>& out) const override;
  const PoseRecord& record(size_t i) const { return records_[i]; }
  const PoseDatasetOptions& options() const { return opt_; }
  // Builds sample i into the given buffers (make_sample; target, weight, meta may be null).
  // Throws hr::Error naming the image and the annotation.
  void load_sample(size_t i, uint64_t seed, float* input, float* target, float* weight,
                   CropMeta* meta, uint8_t* raw_input = nullptr) const;

 private:
  std::vector<PoseRecord> records_;
  PoseDatasetOptions opt_;
};

}  // namespace hr::data
