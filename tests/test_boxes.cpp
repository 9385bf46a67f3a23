// Tests for data/boxes.h against tools/gen_box_reference.py (tests/data/boxes/): the instances
// file in the real format (values as json.load reads them), save -> load round trips (every
// field bit for bit), bad files (one hr::Error naming the file and the annotation); BoxList's
// xywh/xyxy conversions; nms against a line-for-line port of nms_cpu.cpp with torch's own sort
// order (ties, IoU exactly at the threshold); fcos_targets against loss.py; fcos_postprocess
// against inference.py's FCOSPostProcessor.
#include <simdjson.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "coco_checks.h"
#include "data/boxes.h"
#include "engine/error.h"
#include "test_util.h"

using namespace hr::data;
namespace dom = simdjson::dom;

namespace {

using hr::test::contains;
using hr::test::error_of;
using hr::test::replace_once;

std::string fixture(const std::string& name) {
  return std::string(HR_TEST_DATA_DIR) + "/boxes/" + name;
}

std::string write(const hr::test::TempDir& dir, const std::string& name, const std::string& text) {
  const std::string p = dir / name;
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

std::vector<float> floats(dom::element e) {
  std::vector<float> v;
  for (dom::element x : dom::array(e)) v.push_back(static_cast<float>(double(x)));
  return v;
}

Box box_of(dom::element e) {
  const std::vector<float> v = floats(e);
  REQUIRE(v.size() == 4);
  return {v[0], v[1], v[2], v[3]};
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

std::string valid_instances_text() {
  return "{\"info\": {}, \"images\": [{\"id\": 1, \"file_name\": \"a.jpg\", \"width\": 10, "
         "\"height\": 20},\n {\"id\": 2, \"file_name\": \"b.jpg\", \"width\": 30, \"height\": "
         "40}],\n"
         "\"annotations\": [{\"id\": 7, \"image_id\": 2, \"category_id\": 5, \"bbox\": [1, 2, 3, "
         "4], "
         "\"area\": 5.5, \"iscrowd\": 0, \"segmentation\": [[1, 2, 3, 4, 5, 6]]},\n"
         " {\"id\": 8, \"image_id\": 1, \"category_id\": 9, \"bbox\": [0.5, 0, 8, 9], \"area\": 9, "
         "\"iscrowd\": 1, \"segmentation\": {\"counts\": [1, 2], \"size\": [20, 10]}}],\n"
         "\"categories\": [{\"id\": 9, \"name\": \"dog\", \"supercategory\": \"animal\"}, "
         "{\"id\": 5, \"name\": \"cat\"}]}\n";
}

}  // namespace

TEST_CASE("boxes: real-format instances file", "[boxes]") {
  const CocoInstances c = load_coco_instances(fixture("format_instances.json"));
  dom::parser p;
  const dom::element ref = p.load(fixture("format_instances_expected.json"));
  hr::test::require_images(c.images, ref["images"]);
  const dom::array anns = ref["annotations"];
  REQUIRE(c.annotations.size() == anns.size());
  size_t i = 0;
  for (dom::element a : anns) {
    INFO("annotation " << i);
    const CocoInstanceAnn& got = c.annotations[i++];
    REQUIRE(got.id == int64_t(a.at(0)));
    REQUIRE(got.image_id == int64_t(a.at(1)));
    REQUIRE(got.category_id == int64_t(a.at(2)));
    size_t k = 0;
    for (dom::element v : dom::array(a.at(3))) REQUIRE(got.bbox.at(k++) == double(v));  // double
    REQUIRE(got.area == double(a.at(4)));
    REQUIRE(got.iscrowd == (int64_t(a.at(5)) != 0));
  }
  const dom::array cats = ref["categories"];
  REQUIRE(c.categories.size() == cats.size());
  i = 0;
  for (dom::element e : cats) {
    const CocoCategory& got = c.categories[i];
    REQUIRE(got.id == int64_t(e.at(0)));
    REQUIRE(got.name == std::string(std::string_view(e.at(1))));
    REQUIRE(got.supercategory == std::string(std::string_view(e.at(2))));
    // contiguous labels in file order (COCODataset's enumerate(getCatIds()))
    REQUIRE(c.label_of_category.at(got.id) == int64_t(i + 1));
    REQUIRE(c.category_of_label.at(i + 1) == got.id);
    ++i;
  }
  REQUIRE(c.category_of_label.size() == cats.size() + 1);
  // per image, the annotations in file order
  REQUIRE(c.anns_of_image.at(c.image_pos.at(139)) == std::vector<size_t>{0, 2});
  REQUIRE(c.anns_of_image.at(c.image_pos.at(7)) == std::vector<size_t>{1, 3});
}

TEST_CASE("boxes: instances and box results round trip bit for bit", "[boxes]") {
  hr::test::TempDir dir;
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> u(0, 500);
  CocoInstances c;
  for (int i = 0; i < 5; ++i)
    c.images.push_back({100 + i, "im\"" + std::to_string(i) + ".jpg", 640 - i, 480 + i});
  c.categories = {{44, "b", "x"}, {2, "a\\b", ""}, {7, "c", "y"}};
  for (int k = 0; k < 40; ++k) {
    CocoInstanceAnn a;
    a.id = 1000 + 3 * k;
    a.image_id = 100 + k % 5;
    a.category_id = c.categories[k % 3].id;
    a.bbox = {u(rng), u(rng) / 3, u(rng) / 7, 0.1 * k};  // not exact in float
    a.area = u(rng) * u(rng);
    a.iscrowd = k % 4 == 0;
    c.annotations.push_back(a);
  }
  const std::string path = dir / "gt.json";
  save_coco_instances(c, path);
  const CocoInstances back = load_coco_instances(path);
  hr::test::require_same_images(back.images, c.images);
  REQUIRE(back.annotations.size() == c.annotations.size());
  for (size_t k = 0; k < c.annotations.size(); ++k) {
    const CocoInstanceAnn &a = c.annotations[k], &b = back.annotations[k];
    REQUIRE(b.id == a.id);
    REQUIRE(b.image_id == a.image_id);
    REQUIRE(b.category_id == a.category_id);
    REQUIRE(b.bbox == a.bbox);
    REQUIRE(b.area == a.area);
    REQUIRE(b.iscrowd == a.iscrowd);
  }
  REQUIRE(back.categories.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    REQUIRE(back.categories[i].id == c.categories[i].id);
    REQUIRE(back.categories[i].name == c.categories[i].name);
    REQUIRE(back.categories[i].supercategory == c.categories[i].supercategory);
  }
  REQUIRE(back.category_of_label == std::vector<int64_t>{0, 44, 2, 7});

  std::vector<BoxResult> res;
  std::uniform_real_distribution<float> f(0, 1);
  for (int k = 0; k < 30; ++k)
    res.push_back({100 + k % 5,
                   c.categories[k % 3].id,
                   {f(rng) * 600, f(rng) * 400, f(rng) * 100, f(rng) * 3},
                   f(rng)});
  const std::string rpath = dir / "res.json";
  save_box_results(res, rpath);
  const std::vector<BoxResult> rb = load_box_results(rpath);
  REQUIRE(rb.size() == res.size());
  for (size_t k = 0; k < res.size(); ++k) {
    REQUIRE(rb[k].image_id == res[k].image_id);
    REQUIRE(rb[k].category_id == res[k].category_id);
    REQUIRE(rb[k].bbox == res[k].bbox);
    REQUIRE(rb[k].score == res[k].score);
  }
  save_box_results({}, rpath);
  REQUIRE(load_box_results(rpath).empty());

  // a value JSON cannot hold: an error, the old file intact, no temp file left
  CocoInstances bad = c;
  bad.annotations[3].area = NAN;
  const std::string msg = error_of([&] { save_coco_instances(bad, path); });
  REQUIRE(contains(msg, path));
  REQUIRE(contains(msg, "non-finite"));
  REQUIRE(load_coco_instances(path).annotations[3].area == c.annotations[3].area);
  REQUIRE(std::distance(std::filesystem::directory_iterator(dir.path),
                        std::filesystem::directory_iterator()) == 2);
}

TEST_CASE("boxes: bad instances and result files give one error naming the file", "[boxes]") {
  hr::test::TempDir dir;
  const std::string ok = valid_instances_text();
  const CocoInstances c = load_coco_instances(write(dir, "ok.json", ok));
  REQUIRE(c.annotations.size() == 2);
  REQUIRE(c.annotations[1].iscrowd);
  REQUIRE(c.label_of_category.at(9) == 1);
  REQUIRE(c.label_of_category.at(5) == 2);
  REQUIRE(c.categories[1].supercategory.empty());
  struct Case {
    const char* name;
    std::string text;
    std::vector<std::string> says;
  };
  const std::vector<Case> cases = {
      {"empty", "", {"empty file"}},
      {"not_object", "[]", {"object"}},
      {"no_images", "{\"images\": [], \"annotations\": []}", {"no images"}},
      {"truncated", ok.substr(0, ok.find("\"area\": 9")), {"truncated"}},
      {"no_bbox", replace_once(ok, "\"bbox\": [1, 2, 3, 4], ", ""), {"annotation 7", "bbox"}},
      {"bbox_3", replace_once(ok, "[1, 2, 3, 4]", "[1, 2, 3]"), {"annotation 7", "bbox has 3"}},
      {"bbox_string",
       replace_once(ok, "[1, 2, 3, 4]", "[1, \"2\", 3, 4]"),
       {"annotation 7", "bbox"}},
      {"negative_w",
       replace_once(ok, "[1, 2, 3, 4]", "[1, 2, -3, 4]"),
       {"annotation 7", "negative width"}},
      {"negative_h",
       replace_once(ok, "[0.5, 0, 8, 9]", "[0.5, 0, 8, -0.5]"),
       {"annotation 8", "negative height"}},
      {"huge", replace_once(ok, "[1, 2, 3, 4]", "[1, 2, 3, 1e999]"), {"annotations[0]"}},
      {"no_area", replace_once(ok, "\"area\": 5.5, ", ""), {"annotation 7", "area"}},
      {"no_crowd", replace_once(ok, "\"iscrowd\": 0, ", ""), {"annotation 7", "iscrowd"}},
      {"no_category",
       replace_once(ok, "\"category_id\": 5, ", ""),
       {"annotation 7", "category_id"}},
      {"no_image_id", replace_once(ok, "\"image_id\": 2, ", ""), {"annotation 7", "image_id"}},
      {"no_id", replace_once(ok, "{\"id\": 7, ", "{"), {"annotations[0]", "\"id\""}},
      {"unknown_image",
       replace_once(ok, "\"image_id\": 2", "\"image_id\": 99"),
       {"annotation 7", "unknown image 99"}},
      {"unknown_category",
       replace_once(ok, "\"category_id\": 5", "\"category_id\": 6"),
       {"annotation 7", "category 6"}},
      {"dup_annotation",
       replace_once(ok, "{\"id\": 8,", "{\"id\": 7,"),
       {"duplicate annotation id 7"}},
      {"dup_category",
       replace_once(ok, "{\"id\": 5, \"name\"", "{\"id\": 9, \"name\""),
       {"duplicate category id 9"}},
      {"dup_image",
       replace_once(ok, "{\"id\": 2, \"file", "{\"id\": 1, \"file"),
       {"duplicate image id 1"}},
      {"category_no_name", replace_once(ok, ", \"name\": \"cat\"", ""), {"category 5", "name"}},
      {"category_no_id", replace_once(ok, "{\"id\": 5, ", "{"), {"categories[1]", "\"id\""}},
      {"bad_segmentation",
       replace_once(ok, "\"size\": [20, 10]}", "\"size\": [20, 10]]"),
       {"annotations[1]"}},
  };
  for (const Case& k : cases) {
    INFO("case " << k.name);
    const std::string path = write(dir, std::string(k.name) + ".json", k.text);
    const std::string msg = error_of([&] { load_coco_instances(path); });
    INFO("message: " << msg);
    REQUIRE(contains(msg, path));
    REQUIRE(msg.find('\n') == std::string::npos);
    for (const std::string& part : k.says) REQUIRE(contains(msg, part));
  }
  // no "categories" and no annotations: an image list
  const std::string images_only =
      write(dir, "images.json",
            "{\"images\": [{\"id\": 1, \"file_name\": \"a\", \"width\": 1, "
            "\"height\": 1}]}");
  REQUIRE(load_coco_instances(images_only).category_of_label.size() == 1);

  const std::string r =
      "[{\"image_id\": 1, \"category_id\": 18, \"bbox\": [1, 2, 3, 4], \"score\": 0.5}]";
  REQUIRE(load_box_results(write(dir, "r.json", r)).at(0).category_id == 18);
  for (const auto& [text, part] : std::vector<std::pair<std::string, std::string>>{
           {"{}", "array"},
           {replace_once(r, ", \"score\": 0.5", ""), "score"},
           {replace_once(r, "\"category_id\": 18, ", ""), "category_id"},
           {replace_once(r, "4]", "4, 5]"), "bbox has 5"},
           {replace_once(r, "0.5}", "\"x\"}"), "score"},
           {replace_once(r, "0.5}", "1e300}"), "score is not finite"},
           {r.substr(0, r.size() - 3), "truncated"}}) {
    const std::string path = write(dir, "bad_r.json", text);
    const std::string msg = error_of([&] { load_box_results(path); });
    INFO(msg);
    REQUIRE(contains(msg, path));
    REQUIRE(contains(msg, part));
  }
}

TEST_CASE("boxes: BoxList's xywh <-> xyxy conversions", "[boxes]") {
  dom::parser p;
  const dom::element ref = p.load(fixture("box_convert.json"));
  const dom::array xywh = ref["xywh"], xyxy = ref["xyxy"], back = ref["back"];
  REQUIRE(xywh.size() == xyxy.size());
  auto it = xyxy.begin(), bt = back.begin();
  size_t clamped = 0;
  for (dom::element e : xywh) {
    std::array<double, 4> in{};
    size_t k = 0;
    for (dom::element v : dom::array(e)) in.at(k++) = double(v);
    const Box got = box_from_xywh(in);
    const Box want = box_of(*it);
    INFO("box " << in[0] << " " << in[1] << " " << in[2] << " " << in[3]);
    REQUIRE(same_bits(got.x1, want.x1));
    REQUIRE(same_bits(got.y1, want.y1));
    REQUIRE(same_bits(got.x2, want.x2));
    REQUIRE(same_bits(got.y2, want.y2));
    const std::vector<float> wb = floats(*bt);
    const std::array<float, 4> gb = box_to_xywh(got);
    for (int j = 0; j < 4; ++j) REQUIRE(same_bits(gb[j], wb.at(j)));
    clamped += in[2] < 1 || in[3] < 1;
    ++it, ++bt;
  }
  REQUIRE(clamped >= 3);
}

TEST_CASE("boxes: nms equals nms_cpu.cpp, ties and the threshold included", "[boxes]") {
  dom::parser p;
  size_t cases = 0, suppressed = 0;
  for (dom::element c : dom::array(p.load(fixture("nms_cases.json")))) {
    std::vector<Box> boxes;
    for (dom::element b : dom::array(c["boxes"])) boxes.push_back(box_of(b));
    const std::vector<float> scores = floats(c["scores"]);
    std::vector<int64_t> keep;
    for (dom::element k : dom::array(c["keep"])) keep.push_back(int64_t(k));
    const float thresh = static_cast<float>(double(c["thresh"]));
    INFO("case " << cases << ": " << boxes.size() << " boxes at " << thresh);
    REQUIRE(nms(boxes, scores, thresh) == keep);
    suppressed += boxes.size() - keep.size();
    ++cases;
  }
  REQUIRE(cases == 12);
  REQUIRE(suppressed > 50);
  REQUIRE(nms({}, {}, 0.5f).empty());
  REQUIRE(contains(error_of([] { nms({Box{}}, {}, 0.5f); }), "nms"));
}

TEST_CASE("boxes: fcos_targets equals loss.py", "[boxes]") {
  dom::parser p;
  size_t cases = 0;
  for (dom::element c : dom::array(p.load(fixture("fcos_targets.json")))) {
    INFO("case " << cases++);
    std::vector<FcosLevel> levels;
    for (dom::element l : dom::array(c["levels"]))
      levels.push_back({int64_t(l["stride"]), int64_t(l["h"]), int64_t(l["w"]), double(l["min"]),
                        double(l["max"])});
    std::vector<Box> boxes;
    for (dom::element b : dom::array(c["boxes"])) boxes.push_back(box_of(b));
    std::vector<int64_t> labels;
    for (dom::element l : dom::array(c["labels"])) labels.push_back(int64_t(l));
    const int64_t P = fcos_num_locations(levels);
    std::vector<int64_t> want_labels;
    for (dom::element l : dom::array(c["out_labels"])) want_labels.push_back(int64_t(l));
    const std::vector<float> want_reg = floats(c["out_reg"]),
                             want_ctr = floats(c["out_centerness"]);
    REQUIRE(static_cast<int64_t>(want_labels.size()) == P);
    REQUIRE(static_cast<int64_t>(want_reg.size()) == 4 * P);
    std::vector<int64_t> got_labels(P, -1);
    std::vector<float> got_reg(4 * P, NAN), got_ctr(P, NAN);
    fcos_targets(levels, boxes, labels, got_labels.data(), got_reg.data(), got_ctr.data());
    REQUIRE(got_labels == want_labels);
    size_t bad = 0;
    for (int64_t i = 0; i < 4 * P; ++i) bad += !same_bits(got_reg[i], want_reg[i]);
    for (int64_t i = 0; i < P; ++i) bad += !same_bits(got_ctr[i], want_ctr[i]);
    REQUIRE(bad == 0);
    REQUIRE(int64_t(c["positives"]) ==
            std::count_if(got_labels.begin(), got_labels.end(), [](int64_t l) { return l > 0; }));
  }
  REQUIRE(cases == 3);

  // no boxes (where loss.py fails): every location background, zero targets
  const std::vector<FcosLevel> levels = {{8, 3, 4, -1, 64}, {16, 2, 2, 64, 1e8}};
  REQUIRE(fcos_num_locations(levels) == 16);
  std::vector<int64_t> lab(16, 7);
  std::vector<float> reg(64, 1), ctr(16, 1);
  fcos_targets(levels, {}, {}, lab.data(), reg.data(), ctr.data());
  REQUIRE(std::all_of(lab.begin(), lab.end(), [](int64_t v) { return v == 0; }));
  REQUIRE(std::all_of(reg.begin(), reg.end(), [](float v) { return v == 0; }));
  REQUIRE(std::all_of(ctr.begin(), ctr.end(), [](float v) { return v == 0; }));
  REQUIRE(contains(
      error_of([&] { fcos_targets(levels, {Box{}}, {}, lab.data(), reg.data(), ctr.data()); }),
      "fcos_targets"));
}

TEST_CASE("boxes: fcos_postprocess equals inference.py's FCOSPostProcessor", "[boxes]") {
  dom::parser p;
  size_t cases = 0, capped = 0, topk = 0;
  for (dom::element c : dom::array(p.load(fixture("fcos_postprocess.json")))) {
    INFO("case " << cases++);
    const dom::element o = c["options"];
    FcosPostprocessOptions opt;
    opt.pre_nms_thresh = static_cast<float>(double(o["pre_nms_thresh"]));
    opt.pre_nms_top_n = int64_t(o["pre_nms_top_n"]);
    opt.nms_thresh = static_cast<float>(double(o["nms_thresh"]));
    opt.detections_per_img = int64_t(o["detections_per_img"]);
    opt.num_classes = int64_t(o["num_classes"]);
    std::vector<FcosLevel> levels;
    for (dom::element l : dom::array(c["levels"]))
      levels.push_back({int64_t(l["stride"]), int64_t(l["h"]), int64_t(l["w"])});
    std::vector<std::vector<float>> cls, reg, ctr;
    for (dom::element v : dom::array(c["cls"])) cls.push_back(floats(v));
    for (dom::element v : dom::array(c["reg"])) reg.push_back(floats(v));
    for (dom::element v : dom::array(c["ctr"])) ctr.push_back(floats(v));
    std::vector<const float*> pc, pr, pt;
    for (size_t l = 0; l < levels.size(); ++l) {
      const size_t hw = static_cast<size_t>(levels[l].h * levels[l].w);
      REQUIRE(cls[l].size() == hw * static_cast<size_t>(opt.num_classes - 1));
      REQUIRE(reg[l].size() == 4 * hw);
      REQUIRE(ctr[l].size() == hw);
      pc.push_back(cls[l].data()), pr.push_back(reg[l].data()), pt.push_back(ctr[l].data());
    }
    for (dom::element n : dom::array(c["candidates"])) topk += int64_t(n) > opt.pre_nms_top_n;
    const dom::array image = c["image"];
    const std::vector<Detection> got =
        fcos_postprocess(levels, pc, pr, pt, int64_t(image.at(0)), int64_t(image.at(1)), opt);
    const dom::array boxes = c["boxes"];
    const std::vector<float> scores = floats(c["scores"]);
    std::vector<int64_t> labels;
    for (dom::element l : dom::array(c["labels"])) labels.push_back(int64_t(l));
    REQUIRE(got.size() == labels.size());
    capped += opt.detections_per_img > 0 && got.size() >= size_t(opt.detections_per_img);
    size_t i = 0;
    for (dom::element b : boxes) {
      INFO("detection " << i);
      const Box want = box_of(b);
      REQUIRE(got[i].label == labels[i]);
      REQUIRE(same_bits(got[i].box.x1, want.x1));
      REQUIRE(same_bits(got[i].box.y1, want.y1));
      REQUIRE(same_bits(got[i].box.x2, want.x2));
      REQUIRE(same_bits(got[i].box.y2, want.y2));
      // PyTorch's sigmoid (SLEEF) and glibc's expf differ in the last bits
      REQUIRE(std::fabs(got[i].score - scores[i]) <= 2e-7f * scores[i]);
      ++i;
    }
  }
  REQUIRE(cases == 4);
  REQUIRE(capped >= 3);
  REQUIRE(topk >= 3);
}
