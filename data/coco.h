// COCO keypoint annotation files (person_keypoints_*.json), keypoint result files and person
// detection files: reading with simdjson (the 250 MB train2017 file in seconds, memory bounded by
// the file plus the records kept: segmentations are skipped, not stored), and atomic writing.
// Every error is one line naming the file (and the annotation id where there is one).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace hr::data {

inline constexpr int kNumJoints = 17;  // COCO person keypoints

struct CocoImage {
  int64_t id = 0;
  std::string file_name;
  int width = 0, height = 0;
};

// One annotation of category 1 (person); other categories are dropped at load.
struct CocoPersonAnn {
  int64_t id = 0, image_id = 0;
  int category_id = 1;
  std::array<float, 4> bbox{};  // x, y, w, h (pixels)
  float area = 0;               // the segmentation area, as in the file
  bool iscrowd = false;
  int num_keypoints = 0;
  std::array<float, 3 * kNumJoints> keypoints{};  // x, y, v per joint (v: 0 absent, 1 occluded, 2 visible)
};

struct CocoKeypoints {
  std::vector<CocoImage> images;           // file order
  std::vector<CocoPersonAnn> annotations;  // file order, persons only
  std::vector<std::string> keypoint_names; // from the person category ("nose", ...)
  std::vector<std::array<int, 2>> skeleton;  // 1-based joint pairs, as in the file

  // Built by index(): image id -> position in images; annotations (positions) per image.
  std::unordered_map<int64_t, size_t> image_pos;
  std::vector<std::vector<size_t>> anns_of_image;
  void index();  // throws on duplicate image ids or an annotation of an unknown image
};

// Throws hr::Error: unreadable/truncated/malformed JSON, a missing required field, an annotation
// whose keypoints do not hold 51 numbers (naming its id), an empty image list.
CocoKeypoints load_coco_keypoints(const std::string& path);
// Writes a COCO keypoint annotation file (info, images, annotations with the fields above and
// a bbox-polygon segmentation, categories with the 17 COCO keypoint names and skeleton);
// atomically (temp file + rename).
void save_coco_keypoints(const CocoKeypoints& coco, const std::string& path);

// The COCO results format: [{"image_id", "category_id", "keypoints": [51], "score"}, ...].
struct KeypointResult {
  int64_t image_id = 0;
  int category_id = 1;
  std::array<float, 3 * kNumJoints> keypoints{};
  float score = 0;
};
std::vector<KeypointResult> load_keypoint_results(const std::string& path);
void save_keypoint_results(const std::vector<KeypointResult>& results, const std::string& path);

// A COCO-format detection file (e.g. the official COCO_val2017_detections_AP_H_56_person.json):
// [{"image_id", "category_id", "bbox": [x,y,w,h], "score"}, ...]; persons only are kept.
struct DetectionBox {
  int64_t image_id = 0;
  int category_id = 1;
  std::array<float, 4> bbox{};
  float score = 0;
};
std::vector<DetectionBox> load_detections(const std::string& path);

// The 17 COCO keypoint names, the 19 skeleton pairs (1-based) and the flip pairs (0-based).
const std::vector<std::string>& coco_keypoint_names();
const std::vector<std::array<int, 2>>& coco_skeleton();
const std::vector<std::array<int, 2>>& coco_flip_pairs();

}  // namespace hr::data
