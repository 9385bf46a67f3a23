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

// Returns false for an annotation of another category (dropped without further checks).
bool read_annotation(dom::element el, Record& r, CocoPersonAnn& a) {
  const dom::object o = r.object(el);
  r.name_by_id(o, "annotation");
  dom::element cat;
  if (o["category_id"].get(cat)) r.missing("category_id");
  a.category_id = r.int32(cat, "category_id");
  if (a.category_id != 1) return false;
  enum : unsigned { kId = 1, kImage = 2, kBbox = 4, kArea = 8, kCrowd = 16, kKpts = 32, kNum = 64 };
  unsigned seen = 0;
  for (const dom::key_value_pair kv : o) {
    const std::string_view k = kv.key;
    if (k == "id") {
      a.id = r.integer(kv.value, k), seen |= kId;
    } else if (k == "image_id") {
      a.image_id = r.integer(kv.value, k), seen |= kImage;
    } else if (k == "bbox") {
      a.bbox = r.bbox(kv.value), seen |= kBbox;
    } else if (k == "area") {
      a.area = static_cast<float>(r.number(kv.value, k)), seen |= kArea;
    } else if (k == "iscrowd") {
      a.iscrowd = r.flag(kv.value, k), seen |= kCrowd;
    } else if (k == "keypoints") {
      a.keypoints = r.keypoints(kv.value), seen |= kKpts;
    } else if (k == "num_keypoints") {
      a.num_keypoints = r.int32(kv.value, k), seen |= kNum;
    }
  }
  if (!(seen & kId)) r.missing("id");
  if (!(seen & kImage)) r.missing("image_id");
  if (!(seen & kBbox)) r.missing("bbox");
  if (!(seen & kArea)) r.missing("area");
  if (!(seen & kCrowd)) r.missing("iscrowd");
  if (!(seen & kKpts)) r.missing("keypoints");
  if (!(seen & kNum)) {  // as COCO defines it: the labelled joints
    a.num_keypoints = 0;
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
  CocoPersonAnn a;
  for (size_t i = 0; i < spans.annotations.size(); ++i) {
    Record r{src, Name{"annotations", i}};
    a = CocoPersonAnn{};
    if (read_annotation(parse_record(parser, src, spans.annotations[i], r.name), r, a))
      coco.annotations.push_back(a);
  }
  for (size_t i = 0; i < spans.categories.size(); ++i) {
    Record r{src, Name{"categories", i}};
    read_category(parse_record(parser, src, spans.categories[i], r.name), r, coco);
  }
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
  w.raw("{\"info\":{\"description\":\"COCO-format person keypoints\",\"version\":\"1.0\"},\n")
      .raw("\"licenses\":[],\n\"images\":[");
  write_images(w, coco.images);
  w.raw("],\n\"annotations\":[");
  for (size_t i = 0; i < coco.annotations.size(); ++i) {
    const CocoPersonAnn& a = coco.annotations[i];
    const auto& b = a.bbox;
    const float poly[8] = {b[0],        b[1],        b[0] + b[2], b[1],
                           b[0] + b[2], b[1] + b[3], b[0],        b[1] + b[3]};
    w.raw(i ? ",\n" : "\n").raw("{\"id\":").integer(a.id).raw(",\"image_id\":").integer(a.image_id);
    w.raw(",\"category_id\":").integer(a.category_id).raw(",\"segmentation\":[");
    w.numbers(poly, 8, "bbox").raw("],\"area\":").number(a.area, "area");
    w.raw(",\"bbox\":")
        .numbers(b.data(), 4, "bbox")
        .raw(",\"iscrowd\":")
        .integer(a.iscrowd ? 1 : 0);
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
  const Source src = read_source(path);
  const std::vector<Span> spans = Scanner(src).root_array_elements("results");
  std::vector<KeypointResult> out(spans.size());
  dom::parser parser;
  for (size_t i = 0; i < spans.size(); ++i) {
    Record r{src, Name{"results", i}};
    const dom::object o = r.object(parse_record(parser, src, spans[i], r.name));
    KeypointResult& k = out[i];
    unsigned seen = 0;
    for (const dom::key_value_pair kv : o) {
      if (kv.key == "image_id") {
        k.image_id = r.integer(kv.value, kv.key), seen |= 1;
      } else if (kv.key == "category_id") {
        k.category_id = r.int32(kv.value, kv.key), seen |= 2;
      } else if (kv.key == "keypoints") {
        k.keypoints = r.keypoints(kv.value), seen |= 4;
      } else if (kv.key == "score") {
        k.score = static_cast<float>(r.number(kv.value, kv.key)), seen |= 8;
      }
    }
    if (!(seen & 1)) r.missing("image_id");
    if (!(seen & 2)) r.missing("category_id");
    if (!(seen & 4)) r.missing("keypoints");
    if (!(seen & 8)) r.missing("score");
  }
  return out;
}

void save_keypoint_results(const std::vector<KeypointResult>& results, const std::string& path) {
  AtomicJsonWriter w(path);
  w.raw("[");
  for (size_t i = 0; i < results.size(); ++i) {
    const KeypointResult& k = results[i];
    w.raw(i ? ",\n" : "\n").raw("{\"image_id\":").integer(k.image_id);
    w.raw(",\"category_id\":").integer(k.category_id).raw(",\"keypoints\":");
    w.numbers(k.keypoints.data(), k.keypoints.size(), "keypoints");
    w.raw(",\"score\":").number(k.score, "score").raw("}");
  }
  w.raw("\n]\n");
  w.commit();
}

std::vector<DetectionBox> load_detections(const std::string& path) {
  const Source src = read_source(path);
  const std::vector<Span> spans = Scanner(src).root_array_elements("detections");
  std::vector<DetectionBox> out;
  out.reserve(spans.size());
  dom::parser parser;
  for (size_t i = 0; i < spans.size(); ++i) {
    Record r{src, Name{"detections", i}};
    const dom::object o = r.object(parse_record(parser, src, spans[i], r.name));
    DetectionBox d;
    unsigned seen = 0;
    for (const dom::key_value_pair kv : o) {
      if (kv.key == "image_id") {
        d.image_id = r.integer(kv.value, kv.key), seen |= 1;
      } else if (kv.key == "category_id") {
        d.category_id = r.int32(kv.value, kv.key), seen |= 2;
      } else if (kv.key == "bbox") {
        d.bbox = r.bbox(kv.value), seen |= 4;
      } else if (kv.key == "score") {
        d.score = static_cast<float>(r.number(kv.value, kv.key)), seen |= 8;
      }
    }
    if (!(seen & 2)) r.missing("category_id");
    if (d.category_id != 1) continue;
    if (!(seen & 1)) r.missing("image_id");
    if (!(seen & 4)) r.missing("bbox");
    if (!(seen & 8)) r.missing("score");
    out.push_back(d);
  }
  return out;
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
