// COCO keypoint annotation, result and detection files, read and written with the machinery of
// data/coco_io.h (simdjson per record, one-line errors naming the file and the annotation, atomic
// writes).
#include "data/coco.h"

#include <cmath>
#include <string_view>

#include "data/coco_io.h"
#include "engine/error.h"

namespace hr::data {

using namespace coco_io;

namespace {

constexpr Field<CocoPersonAnn> kAnnotationFields[] = {
    field<&CocoPersonAnn::id>("id"),
    field<&CocoPersonAnn::image_id>("image_id"),
    field<&CocoPersonAnn::bbox>("bbox"),
    field<&CocoPersonAnn::area>("area"),
    field<&CocoPersonAnn::iscrowd>("iscrowd"),
    field<&CocoPersonAnn::keypoints>("keypoints"),
    field<&CocoPersonAnn::num_keypoints>("num_keypoints", false)};

// Returns false for an annotation of another category (dropped without further checks).
bool read_annotation(dom::element el, Record& r, CocoPersonAnn& a) {
  const dom::object o = r.object(el);
  r.name_by_id(o, "annotation");
  dom::element cat;
  if (o["category_id"].get(cat)) r.missing("category_id");
  a.category_id = r.int32(cat, "category_id");
  if (a.category_id != 1) return false;
  const unsigned seen = read_record(r, o, kAnnotationFields, a);
  if (!(seen & field_bit(kAnnotationFields, "num_keypoints"))) {
    a.num_keypoints = 0;  // as COCO defines it: the labelled joints
    for (int j = 0; j < kNumJoints; ++j) a.num_keypoints += a.keypoints[3 * j + 2] > 0;
  }
  return true;
}

// The person category's keypoint names and skeleton (left empty when the file has none).
void read_category(dom::element el, Record& r, CocoKeypoints& coco) {
  const dom::object o = r.object(el);
  dom::element id;
  if (o["id"].get(id)) r.missing("id");
  if (r.integer(id, "id") != 1) return;
  r.kind = "category", r.id = 1;
  dom::element v;
  if (!o["keypoints"].get(v)) {
    dom::array a;
    if (v.get_array().get(a)) r.fail("field \"keypoints\" must be an array of strings");
    coco.keypoint_names.clear();
    for (dom::element x : a) coco.keypoint_names.push_back(r.string(x, "keypoints"));
  }
  if (!o["skeleton"].get(v)) {
    dom::array a;
    if (v.get_array().get(a)) r.fail("field \"skeleton\" must be an array of pairs");
    coco.skeleton.clear();
    for (dom::element x : a) {
      dom::array pair;
      if (x.get_array().get(pair) || pair.size() != 2)
        r.fail("field \"skeleton\" must be an array of pairs");
      coco.skeleton.push_back({r.int32(pair.at(0).value_unsafe(), "skeleton"),
                               r.int32(pair.at(1).value_unsafe(), "skeleton")});
    }
  }
}

// The records of an annotation file, before index().
CocoKeypoints read_annotation_file(const std::string& path) {
  const Source src = read_source(path);
  const AnnotationSpans spans = scan_annotation_file(src);
  CocoKeypoints coco;
  dom::parser parser;
  coco.images = read_images(src, spans.images, parser);
  coco.annotations.reserve(spans.annotations.size());
  for_each_record(src, spans.annotations, "annotations", parser, [&](dom::element el, Record& r) {
    CocoPersonAnn a;
    if (read_annotation(el, r, a)) coco.annotations.push_back(a);
  });
  for_each_record(src, spans.categories, "categories", parser,
                  [&](dom::element el, Record& r) { read_category(el, r, coco); });
  return coco;
}

}  // namespace

void CocoKeypoints::index() { index_images(images, annotations, image_pos, anns_of_image); }

CocoKeypoints load_coco_keypoints(const std::string& path) {
  CocoKeypoints coco = read_annotation_file(path);  // the file's bytes are freed here
  with_path(path, [&] { coco.index(); });
  return coco;
}

void save_coco_keypoints(const CocoKeypoints& coco, const std::string& path) {
  AtomicJsonWriter w(path);
  write_annotation_file_head(w, "COCO-format person keypoints", coco.images);
  for (size_t i = 0; i < coco.annotations.size(); ++i) {
    const CocoPersonAnn& a = coco.annotations[i];
    write_annotation_start(w, i, a.id, a.image_id, a.category_id, a.bbox, a.area, a.iscrowd);
    w.raw(",\"num_keypoints\":").integer(a.num_keypoints).raw(",\"keypoints\":");
    w.numbers(a.keypoints.data(), a.keypoints.size(), "keypoints").raw("}");
  }
  const auto& names = coco.keypoint_names.empty() ? coco_keypoint_names() : coco.keypoint_names;
  const auto& skel = coco.skeleton.empty() ? coco_skeleton() : coco.skeleton;
  w.raw("],\n\"categories\":[{\"supercategory\":\"person\",\"id\":1,\"name\":\"person\",")
      .raw("\"keypoints\":[");
  for (size_t j = 0; j < names.size(); ++j) w.raw(j ? "," : "").string(names[j]);
  w.raw("],\"skeleton\":[");
  for (size_t j = 0; j < skel.size(); ++j)
    w.raw(j ? ",[" : "[").integer(skel[j][0]).raw(",").integer(skel[j][1]).raw("]");
  w.raw("]}]}\n");
  w.commit();
}

std::vector<KeypointResult> load_keypoint_results(const std::string& path) {
  static constexpr Field<KeypointResult> kFields[] = {
      field<&KeypointResult::image_id>("image_id"),
      field<&KeypointResult::category_id>("category_id"),
      field<&KeypointResult::keypoints>("keypoints"), field<&KeypointResult::score>("score")};
  return read_root_records<KeypointResult>(
      path, "results", [](dom::object o, const Record& r, KeypointResult& k) {
        read_record(r, o, kFields, k);
        return true;
      });
}

void save_keypoint_results(const std::vector<KeypointResult>& results, const std::string& path) {
  save_results(results, path, "keypoints", &KeypointResult::keypoints);
}

std::vector<DetectionBox> load_detections(const std::string& path) {
  static constexpr Field<DetectionBox> kFields[] = {
      field<&DetectionBox::category_id>("category_id"), field<&DetectionBox::image_id>("image_id"),
      field<&DetectionBox::bbox>("bbox"), field<&DetectionBox::score>("score")};
  return read_root_records<DetectionBox>(
      path, "detections", [](dom::object o, const Record& r, DetectionBox& d) {
        const unsigned seen = read_fields(r, o, kFields, d);
        if ((seen & field_bit(kFields, "category_id")) && d.category_id != 1)
          return false;  // another category: dropped unchecked
        require_fields(r, kFields, seen);
        return true;
      });
}

const std::vector<std::string>& coco_keypoint_names() {
  static const std::vector<std::string> names = {
      "nose",           "left_eye",   "right_eye",   "left_ear",   "right_ear",   "left_shoulder",
      "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
      "right_hip",      "left_knee",  "right_knee",  "left_ankle", "right_ankle"};
  return names;
}

const std::vector<std::array<int, 2>>& coco_skeleton() {
  static const std::vector<std::array<int, 2>> s = {
      {16, 14}, {14, 12}, {17, 15}, {15, 13}, {12, 13}, {6, 12}, {7, 13}, {6, 7}, {6, 8}, {7, 9},
      {8, 10},  {9, 11},  {2, 3},   {1, 2},   {1, 3},   {2, 4},  {3, 5},  {4, 6}, {5, 7}};
  return s;
}

const std::vector<std::array<int, 2>>& coco_flip_pairs() {
  static const std::vector<std::array<int, 2>> p = {{1, 2},  {3, 4},   {5, 6},   {7, 8},
                                                    {9, 10}, {11, 12}, {13, 14}, {15, 16}};
  return p;
}

}  // namespace hr::data
