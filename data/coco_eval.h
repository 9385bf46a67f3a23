// COCO evaluation equal to pycocotools' COCOeval (to 1e-12 on the reference cases): greedy
// matching by score with crowd/area-range ignore rules, precision at 101 recall points over
// thresholds 0.50:0.05:0.95, one evaluate/accumulate/summarize core for
//   keypoints (iouType="keypoints"): OKS with the per-keypoint sigmas, person category, areas
//             all/medium/large, maxDets 20; plus the official top-down post-processing
//             (rescoring, OKS-NMS);
//   boxes     (iouType="bbox"): box IoU (intersection over the detection's area for a crowd
//             ground truth), every category of the ground truth, areas all/small/medium/large
//             from the ground truth's "area" field, maxDets 1/10/100.
#pragma once
#include <array>
#include <string>
#include <vector>

#include "data/boxes.h"
#include "data/coco.h"

namespace hr::data {

// sigmas[j] = COCO's per-keypoint sigma (.26, .25, ... /10)
const std::array<double, kNumJoints>& coco_keypoint_sigmas();

// AP, AP .5, AP .75, AP (M), AP (L), AR, AR .5, AR .75, AR (M), AR (L): COCOeval.stats order.
struct KeypointMetrics {
  std::array<double, 10> stats{};
  static const std::array<const char*, 10>& names();
  double ap() const { return stats[0]; }
  std::string table() const;  // the 10 lines COCOeval.summarize() prints, same wording
};

// Scores `results` against the ground truth; every result's image must be in `gt` (an unknown
// image_id is an error naming it). Images without results count (their GT is missed), as in
// COCOeval with imgIds = all GT images.
KeypointMetrics evaluate_keypoints(const CocoKeypoints& gt, const std::vector<KeypointResult>& results);

// AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl: COCOeval.stats order for
// iouType "bbox" (AR1/AR10 at maxDets 1 and 10, every other figure at 100; -1 where no ground
// truth counts).
struct BoxMetrics {
  std::array<double, 12> stats{};
  static const std::array<const char*, 12>& names();
  double ap() const { return stats[0]; }
  std::string table() const;  // the 12 lines COCOeval.summarize() prints, same wording
};

// COCOeval(gt, gt.loadRes(results), "bbox") with imgIds every GT image and catIds every GT
// category (sorted ids). Every result's image must be in `gt` (an unknown image_id is an error
// naming it, as loadRes asserts); results of a category that is not in gt.categories are not
// evaluated. An empty `results` scores 0 where ground truth counts (pycocotools' loadRes cannot
// take an empty list).
BoxMetrics evaluate_boxes(const CocoInstances& gt, const std::vector<BoxResult>& results);

// hrnet-eval --results for detection: loads both files and returns BoxMetrics::table().
std::string score_box_results(const std::string& gt_json, const std::string& results_json);

// One top-down prediction before post-processing.
struct PersonPrediction {
  int64_t image_id = 0;
  std::array<float, 3 * kNumJoints> keypoints{};  // x, y, heatmap maximum per joint
  float box_score = 1;
  float area = 0;  // scale_w * scale_h * 200^2, what the official code uses for OKS-NMS
};

// The official post-processing: score = (mean of the joint maxima above `in_vis_thre`, 0 when
// none) * box_score; then per image greedy OKS-NMS at `oks_thre` (an image whose NMS keeps
// nothing keeps all). Returns the kept results, in image order, then by score.
std::vector<KeypointResult> rescore_and_nms(const std::vector<PersonPrediction>& preds,
                                            float in_vis_thre = 0.2f, float oks_thre = 0.9f);

// Greedy OKS-NMS over the people of one image: `kpts` x,y,score per joint each, areas as above;
// returns the kept indices, highest score first.
std::vector<size_t> oks_nms(const std::vector<std::array<float, 3 * kNumJoints>>& kpts,
                            const std::vector<float>& scores, const std::vector<float>& areas,
                            float thresh);

}  // namespace hr::data
