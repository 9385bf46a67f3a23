// Tests for data/coco.h: save -> load round trips of annotation and result files (every field,
// floats bit for bit), the real formats written by tools/gen_cocoeval_reference.py (ints, floats,
// bools, exponents, escapes, unknown fields; expected values read straight from its JSON), every
// kind of bad input (one hr::Error naming the file and the annotation), and the atomic write.
#include <simdjson.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "coco_checks.h"
#include "data/coco.h"
#include "engine/error.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace hr::data;

namespace {

using hr::test::contains;
using hr::test::error_of;
using hr::test::replace_once;

std::string fixture(const std::string& name) {
  return std::string(HR_TEST_DATA_DIR) + "/cocoeval/" + name;
}

// A per-process scratch directory, removed at exit.
struct Scratch {
  fs::path dir;
  Scratch() {
    dir = fs::temp_directory_path() / ("hr_test_coco_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string file(const std::string& name, const std::string& text) const {
    const std::string p = (dir / name).string();
    fs::remove(p);  // a new file, not a truncated one: ext4 flushes those to disk on close
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  size_t entries() const {
    return static_cast<size_t>(
        std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
  }
};

float num(simdjson::dom::element e) { return static_cast<float>(double(e)); }

template <size_t N>
void require_numbers(const std::array<float, N>& got, simdjson::dom::array ref) {
  REQUIRE(ref.size() == N);
  size_t i = 0;
  for (auto v : ref) {
    INFO("value " << i);
    REQUIRE(got[i] == num(v));
    ++i;
  }
}

// A small valid annotation file; the bad-input cases edit its text.
std::string kpts_text(int n) {
  std::string s = "[";
  for (int i = 0; i < n; ++i) s += (i ? "," : "") + std::to_string(i % 3 == 2 ? 2 : 10 + i);
  return s + "]";
}
std::string valid_gt_text() {
  return "{\"info\": {\"v\": [1, {\"x\": \"]\"}]}, \"licenses\": [],\n"
         "\"images\": [{\"id\": 1, \"file_name\": \"a.jpg\", \"width\": 10, \"height\": 20},\n"
         "            {\"id\": 2, \"file_name\": \"b.jpg\", \"width\": 30, \"height\": 40}],\n"
         "\"annotations\": [{\"segmentation\": [[1.5, 2, 3, 4, 5, 6]], \"num_keypoints\": 17, "
         "\"area\": 5.5, \"iscrowd\": 0, \"keypoints\": " +
         kpts_text(51) +
         ", \"image_id\": 2, \"bbox\": [1, 2, 3, 4], \"category_id\": 1, \"id\": 7},\n"
         "  {\"segmentation\": [[1, 2, 3, 4]], \"area\": 9, \"iscrowd\": 1, \"keypoints\": " +
         kpts_text(51) +
         ", \"image_id\": 1, \"bbox\": [0.5, 0, 8, 9], \"category_id\": 1, \"id\": 8}],\n"
         "\"categories\": [{\"id\": 1, \"name\": \"person\", \"keypoints\": [\"a\", \"b\"], "
         "\"skeleton\": [[1, 2]]}]}\n";
}

}  // namespace

TEST_CASE("coco: the constant tables", "[coco]") {
  REQUIRE(coco_keypoint_names().size() == 17);
  REQUIRE(coco_keypoint_names()[0] == "nose");
  REQUIRE(coco_keypoint_names()[16] == "right_ankle");
  REQUIRE(coco_skeleton().size() == 19);
  REQUIRE(coco_skeleton()[0] == std::array<int, 2>{16, 14});
  REQUIRE(coco_skeleton()[18] == std::array<int, 2>{5, 7});
  // every flip pair is a left/right pair by name
  REQUIRE(coco_flip_pairs().size() == 8);
  for (const auto& p : coco_flip_pairs()) {
    const std::string& l = coco_keypoint_names()[p[0]];
    const std::string& r = coco_keypoint_names()[p[1]];
    REQUIRE(l.rfind("left_", 0) == 0);
    REQUIRE(r == "right_" + l.substr(5));
  }
}

TEST_CASE("coco: annotation file round trip keeps every field", "[coco]") {
  Scratch s;
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<float> u(-1000, 5000);
  CocoKeypoints c;
  for (int i = 0; i < 5; ++i) {
    CocoImage im;
    im.id = (i == 3) ? 9007199254740993LL : 1000 + 17 * i;  // > 2^53: must stay an integer
    im.file_name = i == 1 ? "dir/caf\xc3\xa9 \"q\" \\ \t.jpg" : "img" + std::to_string(i) + ".jpg";
    im.width = 100 + i;
    im.height = 200 + i;
    c.images.push_back(im);
  }
  for (int k = 0; k < 12; ++k) {
    CocoPersonAnn a;
    a.id = 500 + k;
    a.image_id = c.images[k % 5].id;
    a.bbox = {u(rng), u(rng), std::fabs(u(rng)), 1e-7f * (k + 1)};
    a.area = k == 2 ? 0.f : std::fabs(u(rng)) * 3.3f;
    a.iscrowd = k % 4 == 1;
    a.num_keypoints = k % 18;  // need not agree with the visibilities: the file's value is kept
    for (auto& v : a.keypoints) v = u(rng);
    a.keypoints[2] = 2, a.keypoints[5] = 0, a.keypoints[8] = 1;
    c.annotations.push_back(a);
  }
  c.keypoint_names = coco_keypoint_names();
  c.keypoint_names[3] = "we\"ird\\name";
  c.skeleton = {{1, 2}, {3, 17}};
  const std::string path = (s.dir / "gt.json").string();
  save_coco_keypoints(c, path);
  REQUIRE(s.entries() == 1);  // no temp file left behind

  const CocoKeypoints d = load_coco_keypoints(path);
  hr::test::require_same_images(d.images, c.images);
  REQUIRE(d.annotations.size() == c.annotations.size());
  for (size_t k = 0; k < c.annotations.size(); ++k) {
    const CocoPersonAnn &a = c.annotations[k], &b = d.annotations[k];
    REQUIRE(b.id == a.id);
    REQUIRE(b.image_id == a.image_id);
    REQUIRE(b.category_id == 1);
    REQUIRE(b.bbox == a.bbox);  // bit for bit
    REQUIRE(b.area == a.area);
    REQUIRE(b.iscrowd == a.iscrowd);
    REQUIRE(b.num_keypoints == a.num_keypoints);
    REQUIRE(b.keypoints == a.keypoints);
  }
  REQUIRE(d.keypoint_names == c.keypoint_names);
  REQUIRE(d.skeleton == c.skeleton);
  // index(): positions and the annotations of each image
  REQUIRE(d.image_pos.at(9007199254740993LL) == 3);
  REQUIRE(d.anns_of_image.size() == 5);
  REQUIRE(d.anns_of_image[2] == std::vector<size_t>{2, 7});

  // a file read back is written back identically
  const std::string path2 = (s.dir / "gt2.json").string();
  save_coco_keypoints(d, path2);
  std::ifstream f1(path), f2(path2);
  std::stringstream t1, t2;
  t1 << f1.rdbuf();
  t2 << f2.rdbuf();
  REQUIRE(t1.str() == t2.str());

  // empty names and skeleton are written as COCO's; the segmentation is the box polygon
  c.keypoint_names.clear();
  c.skeleton.clear();
  save_coco_keypoints(c, path);
  const CocoKeypoints e = load_coco_keypoints(path);
  REQUIRE(e.keypoint_names == coco_keypoint_names());
  REQUIRE(e.skeleton == coco_skeleton());
  simdjson::dom::parser p;
  simdjson::dom::element root = p.load(path);
  simdjson::dom::array seg = root["annotations"].at(0)["segmentation"].at(0);
  const auto& b = c.annotations[0].bbox;
  const float poly[8] = {b[0],        b[1],        b[0] + b[2], b[1],
                         b[0] + b[2], b[1] + b[3], b[0],        b[1] + b[3]};
  REQUIRE(seg.size() == 8);
  for (size_t i = 0; i < 8; ++i) REQUIRE(num(seg.at(i)) == poly[i]);
  REQUIRE(std::string_view(root["categories"].at(0)["name"]) == "person");
  REQUIRE(int64_t(root["categories"].at(0)["id"]) == 1);
  REQUIRE(simdjson::dom::array(root["licenses"]).size() == 0);
}

TEST_CASE("coco: real-format annotation file", "[coco]") {
  const CocoKeypoints c = load_coco_keypoints(fixture("format_gt.json"));
  simdjson::dom::parser p;
  simdjson::dom::element ref = p.load(fixture("format_expected.json"));

  hr::test::require_images(c.images, ref["images"]);
  REQUIRE(c.images[1].file_name == "caf\xc3\xa9 \"q\" \\ [x].jpg");

  simdjson::dom::array anns = ref["annotations"];  // persons only: the dog is dropped
  REQUIRE(c.annotations.size() == anns.size());
  size_t i = 0;
  for (simdjson::dom::element a : anns) {
    INFO("annotation " << i);
    const CocoPersonAnn& got = c.annotations[i];
    REQUIRE(got.id == int64_t(a["id"]));
    REQUIRE(got.image_id == int64_t(a["image_id"]));
    REQUIRE(got.area == num(a["area"]));
    REQUIRE(got.iscrowd == (int64_t(a["iscrowd"]) != 0));
    REQUIRE(got.num_keypoints == int64_t(a["num_keypoints"]));
    require_numbers(got.bbox, a["bbox"]);
    require_numbers(got.keypoints, a["keypoints"]);
    ++i;
  }
  REQUIRE(c.annotations[2].keypoints[0] == 150.0625f);  // written as 1.500625E+2

  std::vector<std::string> names;
  for (std::string_view n : ref["keypoint_names"].get_array()) names.emplace_back(n);
  REQUIRE(c.keypoint_names == names);
  REQUIRE(c.skeleton == coco_skeleton());
  REQUIRE(c.anns_of_image[c.image_pos.at(139)] == std::vector<size_t>{0});
}

TEST_CASE("coco: keypoint results and detections", "[coco]") {
  simdjson::dom::parser p;
  simdjson::dom::element ref = p.load(fixture("format_expected.json"));

  const std::vector<KeypointResult> res = load_keypoint_results(fixture("format_results.json"));
  simdjson::dom::array rr = ref["results"];
  REQUIRE(res.size() == rr.size());
  size_t i = 0;
  for (simdjson::dom::element r : rr) {
    REQUIRE(res[i].image_id == int64_t(r["image_id"]));
    REQUIRE(res[i].category_id == int64_t(r["category_id"]));
    REQUIRE(res[i].score == num(r["score"]));
    require_numbers(res[i].keypoints, r["keypoints"]);
    ++i;
  }

  const std::vector<DetectionBox> dets = load_detections(fixture("format_dets.json"));
  simdjson::dom::array dr = ref["detections"];  // persons only
  REQUIRE(dets.size() == dr.size());
  i = 0;
  for (simdjson::dom::element d : dr) {
    REQUIRE(dets[i].image_id == int64_t(d["image_id"]));
    REQUIRE(dets[i].category_id == 1);
    REQUIRE(dets[i].score == num(d["score"]));
    require_numbers(dets[i].bbox, d["bbox"]);
    ++i;
  }

  // results round trip, bit for bit
  Scratch s;
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<float> u(-10, 700);
  std::vector<KeypointResult> out(40);
  for (size_t k = 0; k < out.size(); ++k) {
    out[k].image_id = static_cast<int64_t>(k * 7919 % 101);
    out[k].category_id = k == 5 ? 2 : 1;
    for (auto& v : out[k].keypoints) v = u(rng);
    out[k].score = u(rng) / 700;
  }
  const std::string path = (s.dir / "res.json").string();
  save_keypoint_results(out, path);
  const std::vector<KeypointResult> back = load_keypoint_results(path);
  REQUIRE(back.size() == out.size());
  for (size_t k = 0; k < out.size(); ++k) {
    REQUIRE(back[k].image_id == out[k].image_id);
    REQUIRE(back[k].category_id == out[k].category_id);
    REQUIRE(back[k].keypoints == out[k].keypoints);
    REQUIRE(back[k].score == out[k].score);
  }
  save_keypoint_results({}, path);
  REQUIRE(load_keypoint_results(path).empty());
}

TEST_CASE("coco: the valid base file of the bad-input cases loads", "[coco]") {
  Scratch s;
  const CocoKeypoints c = load_coco_keypoints(s.file("ok.json", valid_gt_text()));
  REQUIRE(c.images.size() == 2);
  REQUIRE(c.annotations.size() == 2);
  REQUIRE(c.annotations[0].area == 5.5f);
  REQUIRE(c.annotations[1].num_keypoints == 17);  // missing: counted from the visibilities
  REQUIRE(c.annotations[1].iscrowd);
  REQUIRE(c.keypoint_names == std::vector<std::string>{"a", "b"});
}

TEST_CASE("coco: bad annotation files give one error naming the file", "[coco]") {
  Scratch s;
  const std::string ok = valid_gt_text();
  struct Case {
    const char* name;
    std::string text;
    std::vector<std::string> says;  // parts of the message besides the file name
  };
  const std::string k50 = kpts_text(50), k51 = kpts_text(51);
  const std::vector<Case> cases = {
      {"empty", "", {"empty file"}},
      {"blank", " \n\t ", {"empty"}},
      {"not_object", "[1, 2]", {"object"}},
      {"trailing", ok + "x", {"after the top-level value"}},
      {"bad_literal", replace_once(ok, "\"iscrowd\": 0", "\"iscrowd\": tru"), {"annotations[0]"}},
      {"double_comma",
       replace_once(ok, "[[1.5, 2,", "[[1.5,, 2,"),
       {"malformed JSON", "annotations[0]"}},
      {"trailing_comma",
       replace_once(ok, "\"height\": 40}],", "\"height\": 40},],"),
       {"malformed"}},
      {"missing_colon", replace_once(ok, "\"licenses\": []", "\"licenses\" []"), {"expected ':'"}},
      {"unmatched",
       replace_once(ok, "[[1, 2, 3, 4]]", "[[1, 2, 3, 4}]"),
       {"unmatched", "annotations[1]"}},
      {"bad_info", replace_once(ok, "{\"v\": [1,", "{\"v\": [1,,"), {"malformed JSON", "\"info\""}},
      {"no_images_key", replace_once(ok, "\"images\"", "\"imagez\""), {"no \"images\""}},
      {"no_images", "{\"images\": [], \"annotations\": []}", {"no images"}},
      {"images_not_array", "{\"images\": {}}", {"not an array"}},
      {"image_no_id", replace_once(ok, "{\"id\": 2, ", "{"), {"images[1]", "\"id\""}},
      {"image_no_file",
       replace_once(ok, "\"file_name\": \"b.jpg\", ", ""),
       {"image 2", "file_name"}},
      {"image_no_width", replace_once(ok, "\"width\": 30, ", ""), {"image 2", "width"}},
      {"image_no_height", replace_once(ok, ", \"height\": 40", ""), {"image 2", "height"}},
      {"image_bad_width",
       replace_once(ok, "\"width\": 30", "\"width\": 30.5"),
       {"image 2", "integer"}},
      {"image_name_number", replace_once(ok, "\"b.jpg\"", "5"), {"image 2", "file_name"}},
      {"dup_image", replace_once(ok, "{\"id\": 2,", "{\"id\": 1,"), {"duplicate image id 1"}},
      {"unknown_image",
       replace_once(ok, "\"image_id\": 2", "\"image_id\": 99"),
       {"annotation 7", "unknown image 99"}},
      {"kpts_50",
       replace_once(ok, k51 + ", \"image_id\": 2", k50 + ", \"image_id\": 2"),
       {"annotation 7", "50", "51"}},
      {"kpts_string",
       replace_once(ok, "[10,11,2,", "[10,\"11\",2,"),
       {"annotation 7", "keypoints"}},
      {"bbox_3", replace_once(ok, "[1, 2, 3, 4]", "[1, 2, 3]"), {"annotation 7", "bbox", "3"}},
      {"bbox_5", replace_once(ok, "[0.5, 0, 8, 9]", "[0.5, 0, 8, 9, 1]"), {"annotation 8", "bbox"}},
      {"bbox_string",
       replace_once(ok, "[1, 2, 3, 4]", "[1, 2, \"3\", 4]"),
       {"annotation 7", "bbox"}},
      {"no_id", replace_once(ok, ", \"id\": 7}", "}"), {"annotations[0]", "\"id\""}},
      {"no_image_id", replace_once(ok, ", \"image_id\": 2", ""), {"annotation 7", "image_id"}},
      {"no_bbox", replace_once(ok, ", \"bbox\": [1, 2, 3, 4]", ""), {"annotation 7", "bbox"}},
      {"no_area", replace_once(ok, "\"area\": 5.5, ", ""), {"annotation 7", "area"}},
      {"no_crowd", replace_once(ok, "\"iscrowd\": 0, ", ""), {"annotation 7", "iscrowd"}},
      {"no_kpts",
       replace_once(ok, "\"keypoints\": " + k51 + ", \"image_id\": 2", "\"image_id\": 2"),
       {"annotation 7", "keypoints"}},
      {"no_category",
       replace_once(ok, ", \"category_id\": 1, \"id\": 7", ", \"id\": 7"),
       {"annotation 7", "category_id"}},
      {"ann_not_object",
       replace_once(ok, "\"annotations\": [", "\"annotations\": [3, "),
       {"annotations[0]", "object"}},
      {"dup_key", replace_once(ok, "\"licenses\": []", "\"images\": []"), {"duplicate key"}},
  };
  for (const Case& c : cases) {
    INFO("case " << c.name);
    const std::string path = s.file(std::string(c.name) + ".json", c.text);
    const std::string msg = error_of([&] { load_coco_keypoints(path); });
    INFO("message: " << msg);
    REQUIRE(contains(msg, path));
    REQUIRE(msg.find('\n') == std::string::npos);
    for (const std::string& part : c.says) REQUIRE(contains(msg, part));
  }
  const std::string missing = (s.dir / "nope.json").string();
  const std::string msg = error_of([&] { load_coco_keypoints(missing); });
  REQUIRE(contains(msg, missing));
  REQUIRE(contains(msg, "No such file"));
  REQUIRE(contains(error_of([&] { load_coco_keypoints(s.dir.string()); }), "regular file"));

  // another category's annotation needs no keypoints
  const std::string dog =
      replace_once(ok, "\"category_id\": 1, \"id\": 8", "\"category_id\": 18, \"id\": 8");
  REQUIRE(load_coco_keypoints(
              s.file("dog.json", replace_once(dog, "\"keypoints\": " + k51 + ", \"image_id\": 1",
                                         "\"image_id\": 1")))
              .annotations.size() == 1);
}

TEST_CASE("coco: every truncation of a file is an error", "[coco]") {
  Scratch s;
  const std::string ok = valid_gt_text();
  // the text minus its final newline is complete JSON, so stop before the closing brace
  const size_t last = ok.rfind('}');
  for (size_t n = 1; n < last; ++n) {
    const std::string path = s.file("t.json", ok.substr(0, n));
    const std::string msg = error_of([&] { load_coco_keypoints(path); });
    INFO("prefix of " << n << " bytes: " << msg);
    REQUIRE(contains(msg, path));
  }
  // the message carries simdjson's reading when the file ends inside a record
  const std::string cut = ok.substr(0, ok.find("[[1, 2, 3, 4]]") + 4);
  const std::string msg = error_of([&] { load_coco_keypoints(s.file("cut.json", cut)); });
  REQUIRE(contains(msg, "truncated JSON"));
  REQUIRE(contains(msg, "annotations[1]"));
  REQUIRE(contains(msg, "simdjson:"));
}

TEST_CASE("coco: bad result and detection files", "[coco]") {
  Scratch s;
  const std::string k51 = kpts_text(51);
  const std::string r =
      "[{\"image_id\": 1, \"category_id\": 1, \"keypoints\": " + k51 + ", \"score\": 0.5}]";
  REQUIRE(load_keypoint_results(s.file("r.json", r)).size() == 1);
  const std::vector<std::pair<std::string, std::string>> bad_results = {
      {"{}", "array"},
      {replace_once(r, ", \"score\": 0.5", ""), "score"},
      {replace_once(r, "\"image_id\": 1, ", ""), "image_id"},
      {replace_once(r, "[10,11,", "[10,11,12,"), "52"},
      {replace_once(r, "0.5}", "\"high\"}"), "score"},
      {r.substr(0, r.size() - 3), "truncated"},
  };
  for (const auto& [text, part] : bad_results) {
    const std::string path = s.file("bad_r.json", text);
    const std::string msg = error_of([&] { load_keypoint_results(path); });
    INFO(msg);
    REQUIRE(contains(msg, path));
    REQUIRE(contains(msg, part));
    REQUIRE(contains(msg, "results[0]") == (part != "array"));
  }
  const std::string d =
      "[{\"image_id\": 1, \"category_id\": 1, \"bbox\": [1, 2, 3, 4], \"score\": 1}]";
  REQUIRE(load_detections(s.file("d.json", d)).size() == 1);
  for (const auto& [text, part] : std::vector<std::pair<std::string, std::string>>{
           {replace_once(d, "4]", "4, 5]"), "bbox"},
           {replace_once(d, ", \"score\": 1", ""), "score"},
           {"", "empty"}}) {
    const std::string path = s.file("bad_d.json", text);
    const std::string msg = error_of([&] { load_detections(path); });
    INFO(msg);
    REQUIRE(contains(msg, path));
    REQUIRE(contains(msg, part));
  }
}

TEST_CASE("coco: writes are atomic", "[coco]") {
  Scratch s;
  CocoKeypoints c;
  c.images.push_back({1, "a.jpg", 10, 10});
  CocoPersonAnn a;
  a.id = 3, a.image_id = 1, a.area = 4;
  c.annotations.push_back(a);
  const std::string path = (s.dir / "gt.json").string();
  save_coco_keypoints(c, path);
  REQUIRE(load_coco_keypoints(path).annotations.size() == 1);

  // a value JSON cannot hold: an error, the old file intact, no temp file left
  CocoKeypoints bad = c;
  bad.annotations[0].area = NAN;
  const std::string msg = error_of([&] { save_coco_keypoints(bad, path); });
  REQUIRE(contains(msg, path));
  REQUIRE(contains(msg, "non-finite"));
  REQUIRE(load_coco_keypoints(path).annotations[0].area == 4.f);
  REQUIRE(s.entries() == 1);

  // rename onto a directory fails: the temp file is removed
  fs::create_directories(s.dir / "sub");
  REQUIRE(contains(error_of([&] { save_coco_keypoints(c, (s.dir / "sub").string()); }), "sub"));
  REQUIRE(s.entries() == 2);
  // a directory that does not exist
  REQUIRE(contains(error_of([&] { save_keypoint_results({}, (s.dir / "no/r.json").string()); }),
                   "no/r.json"));
  REQUIRE(s.entries() == 2);
}
