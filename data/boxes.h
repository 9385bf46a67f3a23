// Object detection as HRNet-FCOS (a maskrcnn-benchmark fork) has it: COCO instances files and
// box results, boxes in maskrcnn-benchmark's "xyxy" convention, its NMS, the FCOS target
// assignment of the training loss (modeling/rpn/fcos/loss.py) and the FCOS post-processing of
// inference (modeling/rpn/fcos/inference.py). Pure host code, no tensors: the loader calls
// fcos_targets, the detection task calls fcos_postprocess on the head's outputs.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "data/coco.h"  // CocoImage

namespace hr {
class OnnxEmitter;  // engine/onnx_emitter.h
}

namespace hr::data {

// maskrcnn-benchmark's "xyxy" box: pixel-inclusive corners. A COCO [x, y, w, h] box becomes
// x1 = x, y1 = y, x2 = x + max(w - 1, 0), y2 = y + max(h - 1, 0) (TO_REMOVE = 1, clamped as
// BoxList.convert("xyxy") does) and back w = x2 - x1 + 1.
struct Box {
  float x1 = 0, y1 = 0, x2 = 0, y2 = 0;
};

// BoxList(xywh, mode="xywh").convert("xyxy") in float32 (the box is made float32 first).
Box box_from_xywh(const std::array<double, 4>& xywh);
// BoxList.convert("xywh") in float32: [x1, y1, x2 - x1 + 1, y2 - y1 + 1].
std::array<float, 4> box_to_xywh(const Box& b);

// ---- COCO instances files (instances_*.json) and box results ----

struct CocoCategory {
  int64_t id = 0;
  std::string name, supercategory;
};

struct CocoInstanceAnn {
  int64_t id = 0, image_id = 0, category_id = 0;
  std::array<double, 4> bbox{};  // x, y, w, h as in the file
  double area = 0;               // the segmentation area, as in the file
  bool iscrowd = false;
};

struct CocoInstances {
  std::vector<CocoImage> images;             // file order
  std::vector<CocoCategory> categories;      // file order
  std::vector<CocoInstanceAnn> annotations;  // file order (segmentations skipped)

  // Built by index(): image id -> position in images; annotation positions per image; the
  // official contiguous labels (COCODataset.json_category_id_to_contiguous_id): the i-th
  // category of the file, in file order as pycocotools' getCatIds() returns them (not sorted;
  // COCO's own files list them in ascending id order) -> i + 1 (0 is the background).
  std::unordered_map<int64_t, size_t> image_pos;
  std::vector<std::vector<size_t>> anns_of_image;
  std::unordered_map<int64_t, int64_t> label_of_category;
  std::vector<int64_t> category_of_label;  // [0] unused (background)
  void index();  // throws on duplicate ids or an annotation of an unknown image/category
};

// Throws hr::Error naming the file (and the annotation id): malformed JSON, a missing field, a
// bbox that is not 4 finite numbers, negative width or height, duplicate ids, an annotation of
// an unknown image or category. "categories" may be absent (then there may be no annotations).

CocoInstances load_coco_instances(const std::string& path);
// Atomic (temp file + rename). Annotations get a bbox-polygon segmentation.
void save_coco_instances(const CocoInstances& coco, const std::string& path);

// The COCO box results format: [{"image_id", "category_id", "bbox": [x,y,w,h], "score"}, ...]
// (what maskrcnn-benchmark's prepare_for_coco_detection writes: float32 values, so float keeps
// them exactly). Unknown fields are ignored; errors name the file and the result's index.
struct BoxResult {
  int64_t image_id = 0, category_id = 0;
  std::array<float, 4> bbox{};
  float score = 0;
};
std::vector<BoxResult> load_box_results(const std::string& path);
void save_box_results(const std::vector<BoxResult>& results, const std::string& path);

// ---- NMS ----

// maskrcnn-benchmark's nms (csrc/cpu/nms_cpu.cpp), in float32: boxes visited in the order of
// scores.sort(0, descending=True), areas and overlaps with +1 (pixel-inclusive), a box
// suppressed when its IoU with a kept one is >= thresh (nms_cpu.cpp's test; the CUDA kernel of
// csrc/cuda/nms.cu suppresses at > thresh only). Returns the kept indices in ascending index
// order (at::nonzero(suppressed == 0); nms.cu sorts its result the same way), which is the order
// boxlist_nms keeps the boxes in.
// Ties: PyTorch 1.13's CPU sort(descending) without stable=True is std::sort (libstdc++
// introsort) over (score, index) pairs comparing scores only (NaN first); equal scores come out
// in whatever order introsort leaves them: index order for up to 16 boxes (insertion sort),
// not in general beyond. We run the same std::sort on the same pairs, so the visiting order is
// PyTorch's, ties included (checked against torch in tests/test_boxes.cpp).
std::vector<int64_t> nms(const std::vector<Box>& boxes, const std::vector<float>& scores,
                         float thresh);

// ---- FCOS ----

// One pyramid level: its stride, size, and its object size range (MODEL.FCOS.TARGET_ASSIGN row:
// a location is responsible for an object when max(l, t, r, b) lies in [min_size, max_size]).
struct FcosLevel {
  int64_t stride = 8, h = 0, w = 0;
  double min_size = -1, max_size = 64;
};
// Locations are level-major, row-major within a level: location (y, x) of level l is the point
// (x * stride + stride / 2, y * stride + stride / 2) (integer division), as compute_locations.
int64_t fcos_num_locations(const std::vector<FcosLevel>& levels);

// The training targets of one image (loss.py compute_targets_for_locations +
// compute_centerness_targets), written into caller buffers of fcos_num_locations() entries:
//   labels[p]      0 background, else the contiguous label of the object assigned to p (the
//                  smallest-area box, lowest index on ties (torch.min(dim=1)), among those
//                  containing p strictly inside (min(l,t,r,b) > 0) with max(l,t,r,b) in the
//                  level's range [min_size, max_size], both as float32)
//   reg[k * P + p] k = 0..3: l, t, r, b of p to that box (channel-major [4, P]); at a background
//                  location the official tensor holds the distances to box 0 (the argmin of an
//                  all-INF row), and so does this one
//   centerness[p]  sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b)) at positives, 0 elsewhere
// An area that is not assigned is INF = 100000000 (loss.py), so a box of area >= 1e8 is never
// positive. With no boxes every location is background with zero reg targets (the official code
// fails there: torch.min over an empty dimension; COCODataset drops such images in training).
// boxes are xyxy in the (resized, flipped) image's pixels; area = (x2-x1+1)*(y2-y1+1) as
// BoxList.area() in xyxy mode. Arithmetic in float32, as the official tensors.
void fcos_targets(const std::vector<FcosLevel>& levels, const std::vector<Box>& boxes,
                  const std::vector<int64_t>& labels, int64_t* out_labels, float* out_reg,
                  float* out_centerness);

struct FcosPostprocessOptions {
  float pre_nms_thresh = 0.05f;  // MODEL.FCOS.INFERENCE_TH
  int64_t pre_nms_top_n = 1000;  // MODEL.FCOS.PRE_NMS_TOP_N
  float nms_thresh = 0.6f;       // MODEL.FCOS.NMS_TH
  int64_t detections_per_img = 100;  // TEST.DETECTIONS_PER_IMG
  int64_t num_classes = 81;      // MODEL.FCOS.NUM_CLASSES (with the background)
};

struct Detection {
  Box box;
  float score = 0;
  int64_t label = 0;  // contiguous, 1 .. num_classes - 1
};

// One image's head outputs, level by level, in logical NCHW order with the image's batch index
// already taken: cls[l] [C, h, w] logits (C = num_classes - 1), reg[l] [4, h, w] (after exp and
// the level's scale: l, t, r, b distances), ctr[l] [1, h, w] logits. image_h, image_w: the
// resized image's size before padding (boxes are clipped to it). FCOSPostProcessor with
// make_fcos_postprocessor's settings, in float32: per level, candidates are the (location, class)
// pairs with sigmoid(cls) > pre_nms_thresh, location-major; score = sigmoid(cls) x
// sigmoid(centerness); when there are more than pre_nms_top_n, torch.topk(pre_nms_top_n,
// sorted=False) of the scores, in the order PyTorch 1.13's CPU topk leaves them (std::partial_sort
// when k * 64 <= n, else std::nth_element, over (score, index) pairs: the same calls here);
// boxes decoded from the location, clip_to_image(remove_empty=False) (x to [0, w - 1], y to
// [0, h - 1]), remove_small_boxes(min_size 0): kept when x2 - x1 + 1 >= 0 and y2 - y1 + 1 >= 0.
// All levels concatenated, class by class boxlist_nms (nms() above: ascending candidate order);
// then, with more than detections_per_img (> 0), the kthvalue rule: every detection scoring >=
// the (n - detections_per_img + 1)-th smallest score is kept, ties included, order unchanged.
// Returns the detections class by class (ascending label), each class in candidate order.
std::vector<Detection> fcos_postprocess(const std::vector<FcosLevel>& levels,
                                        const std::vector<const float*>& cls,
                                        const std::vector<const float*>& reg,
                                        const std::vector<const float*>& ctr, int64_t image_h,
                                        int64_t image_w, const FcosPostprocessOptions& o);

// fcos_postprocess as ONNX nodes (an exported model's --det-decode), over a batch: cls, reg, ctr
// name the head's outputs [N, C, h, w], [N, 4, h, w], [N, 1, h, w] of each level (N dynamic),
// image_h x image_w the size boxes are clipped to. Writes `out`, f32 [K, 7]: one row per
// detection of every image, (image index, x1, y1, x2, y2, score, label). The same rules, in ONNX
// operators: per level, sigmoid scores > pre_nms_thresh, score x sigmoid(centerness), TopK of
// min(pre_nms_top_n, h*w*C) over the candidates, boxes from the locations, clipped, the
// min_size-0 filter; class-wise NonMaxSuppression (IoU with the +1 pixel-inclusive widths,
// suppression at IoU >= nms_thresh; none when nms_thresh <= 0); the kthvalue rule of
// detections_per_img per image. What differs: rows are ordered as NonMaxSuppression returns
// them (ONNX Runtime and OpenVINO: by image, class, descending score), not class by class in
// candidate order; which of equal scores TopK keeps at the pre_nms_top_n boundary and NMS visits
// first is the runtime's (ours is PyTorch's); IoU rounding may differ in the last bit.
void fcos_postprocess_onnx(OnnxEmitter& e, const std::vector<FcosLevel>& levels,
                           const std::vector<std::string>& cls, const std::vector<std::string>& reg,
                           const std::vector<std::string>& ctr, int64_t image_h, int64_t image_w,
                           const FcosPostprocessOptions& o, const std::string& out);

}  // namespace hr::data
