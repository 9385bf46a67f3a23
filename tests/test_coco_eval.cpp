// Tests for data/coco_eval.h: the 10 COCOeval numbers and the summary text of pycocotools on the
// cases of tools/gen_cocoeval_reference.py; hand-derived cases (perfect results, one person at a
// known OKS, the box rule for a person without visible joints); invariance to the order of the
// results (ties aside); the official rescoring and OKS-NMS against the script's implementation.
#include <simdjson.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "coco_checks.h"
#include "data/coco_eval.h"
#include "engine/error.h"
#include "test_util.h"

using namespace hr::data;

namespace {

std::string fixture(const std::string& name) {
  return std::string(HR_TEST_DATA_DIR) + "/cocoeval/" + name;
}

using Reference = hr::test::EvalReference<10>;
using hr::test::require_stats;

Reference reference(const std::string& name) {
  return hr::test::load_eval_reference<10>(fixture(name + "_stats.json"));
}

// One GT person (all joints visible) in a 640x480 image with id 1.
CocoKeypoints one_person(float area, bool visible = true, int num_keypoints = 17) {
  CocoKeypoints gt;
  gt.images.push_back({1, "a.jpg", 640, 480});
  CocoPersonAnn a;
  a.id = 1, a.image_id = 1, a.area = area, a.num_keypoints = num_keypoints;
  a.bbox = {100, 50, 80, 200};
  for (int j = 0; j < kNumJoints; ++j) {
    a.keypoints[3 * j] = visible ? 110.f + 3 * j : 0.f;
    a.keypoints[3 * j + 1] = visible ? 60.f + 10 * j : 0.f;
    a.keypoints[3 * j + 2] = visible ? 2.f : 0.f;
  }
  gt.annotations.push_back(a);
  gt.index();
  return gt;
}

KeypointResult result_from(const CocoPersonAnn& a, float score, float shift = 0) {
  KeypointResult r;
  r.image_id = a.image_id;
  r.keypoints = a.keypoints;
  for (int j = 0; j < kNumJoints; ++j) r.keypoints[3 * j] += shift, r.keypoints[3 * j + 2] = 1;
  r.score = score;
  return r;
}

}  // namespace

TEST_CASE("coco eval: equals pycocotools on the reference cases", "[coco_eval]") {
  for (const char* name : {"mixed", "ties", "large_only"}) {
    INFO("case " << name);
    const CocoKeypoints gt = load_coco_keypoints(fixture(std::string(name) + "_gt.json"));
    const auto results = load_keypoint_results(fixture(std::string(name) + "_results.json"));
    const Reference ref = reference(name);
    const KeypointMetrics m = evaluate_keypoints(gt, results);
    require_stats(m, ref.stats, 1e-12);
    REQUIRE(m.table() == ref.summary);
    REQUIRE(m.ap() == m.stats[0]);
  }
  // the cases are not degenerate
  const Reference mixed = reference("mixed");
  for (double s : mixed.stats) REQUIRE((s > 0.1 && s < 0.9));
  REQUIRE(reference("large_only").stats[3] == -1);  // no medium person: -1, as COCOeval says
}

TEST_CASE("coco eval: the order of the results does not matter, ties aside", "[coco_eval]") {
  const CocoKeypoints gt = load_coco_keypoints(fixture("mixed_gt.json"));
  const auto results = load_keypoint_results(fixture("mixed_results.json"));
  const KeypointMetrics base = evaluate_keypoints(gt, results);
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 5; ++trial) {
    const auto shuffled = hr::test::shuffled_keeping_ties(results, rng);
    REQUIRE(evaluate_keypoints(gt, shuffled).stats == base.stats);
  }
}

TEST_CASE("coco eval: hand-derived cases", "[coco_eval]") {
  SECTION("perfect results score 1") {
    const CocoKeypoints gt = load_coco_keypoints(fixture("ties_gt.json"));
    std::vector<KeypointResult> res;
    bool medium = false, large = false;
    for (const CocoPersonAnn& a : gt.annotations) {
      REQUIRE((!a.iscrowd && a.num_keypoints > 0));
      res.push_back(result_from(a, 0.5f));
      medium |= a.area >= 32 * 32 && a.area <= 96 * 96;
      large |= a.area > 96 * 96;
    }
    REQUIRE((medium && large));
    // precision 1 / (1 + eps) as COCOeval computes it, recall exactly 1
    const KeypointMetrics m = evaluate_keypoints(gt, res);
    for (double s : m.stats) REQUIRE(s == Approx(1.0).epsilon(1e-12));
  }
  SECTION("no results: every figure 0") {
    const CocoKeypoints gt = load_coco_keypoints(fixture("mixed_gt.json"));
    for (double s : evaluate_keypoints(gt, {}).stats) REQUIRE(s == 0.0);
  }
  SECTION("one person at a known OKS") {
    // every joint moved by 6 px: OKS = mean_j exp(-36 / (2 sigma_j)^2 / area / 2)
    const float area = 5000;
    const CocoKeypoints gt = one_person(area);
    double oks = 0;
    for (int j = 0; j < kNumJoints; ++j) {
      const double k = 2 * coco_keypoint_sigmas()[j];
      oks += std::exp(-36.0 / (k * k) / area / 2) / kNumJoints;
    }
    int passed = 0;  // thresholds .50 .. .95 at or below the OKS
    for (int t = 0; t < 10; ++t) passed += oks >= 0.5 + 0.05 * t;
    REQUIRE((passed > 0 && passed < 10));
    const KeypointMetrics m = evaluate_keypoints(gt, {result_from(gt.annotations[0], 0.9f, 6)});
    REQUIRE(m.stats[0] == Approx(passed / 10.0).epsilon(1e-12));  // AP
    REQUIRE(m.stats[5] == Approx(passed / 10.0).epsilon(1e-12));  // AR
    REQUIRE(m.stats[1] == Approx(1.0).epsilon(1e-12));            // AP .5
    REQUIRE(m.stats[3] == m.stats[0]);                            // medium: 5000 px^2
    REQUIRE(m.stats[4] == -1);                                    // no large person
    REQUIRE(m.stats[9] == -1);
    // a second, worse detection of the same person is a false positive after it
    const KeypointMetrics m2 = evaluate_keypoints(
        gt, {result_from(gt.annotations[0], 0.9f, 6), result_from(gt.annotations[0], 0.2f, 100)});
    REQUIRE(m2.stats[0] == m.stats[0]);
    // ... and before it, it halves the precision at the matched recall
    const KeypointMetrics m3 = evaluate_keypoints(
        gt, {result_from(gt.annotations[0], 0.2f, 6), result_from(gt.annotations[0], 0.9f, 100)});
    REQUIRE(m3.stats[1] == Approx(0.5).epsilon(1e-12));
  }
  SECTION("a person counted as labelled with no visible joint: the box rule") {
    // box [100, 50, 80, 200] grown to x in [20, 260], y in [-150, 450]
    const float area = 5000;
    const CocoKeypoints gt = one_person(area, false, 3);
    KeypointResult inside;
    inside.image_id = 1;
    for (int j = 0; j < kNumJoints; ++j)
      inside.keypoints[3 * j] = 30 + 10 * j, inside.keypoints[3 * j + 1] = 0;
    inside.score = 1;
    REQUIRE(evaluate_keypoints(gt, {inside}).stats[0] == Approx(1.0).epsilon(1e-12));
    // 5 px left of the grown box: OKS = mean_j exp(-25 / (2 sigma_j)^2 / area / 2)
    KeypointResult left = inside;
    for (int j = 0; j < kNumJoints; ++j) left.keypoints[3 * j] = 15;
    double oks = 0;
    for (int j = 0; j < kNumJoints; ++j) {
      const double k = 2 * coco_keypoint_sigmas()[j];
      oks += std::exp(-25.0 / (k * k) / area / 2) / kNumJoints;
    }
    int passed = 0;
    for (int t = 0; t < 10; ++t) passed += oks >= 0.5 + 0.05 * t;
    REQUIRE((passed > 0 && passed < 10));
    REQUIRE(evaluate_keypoints(gt, {left}).stats[0] == Approx(passed / 10.0).epsilon(1e-12));
    // with num_keypoints 0 the person is ignored: nothing to find
    REQUIRE(evaluate_keypoints(one_person(area, false, 0), {inside}).stats[0] == -1);
  }
  SECTION("crowd people are ignored; a detection on them is no false positive") {
    CocoKeypoints gt = one_person(5000);
    CocoPersonAnn crowd = gt.annotations[0];
    crowd.id = 2, crowd.iscrowd = true;
    for (int j = 0; j < kNumJoints; ++j) crowd.keypoints[3 * j] += 300;
    gt.annotations.push_back(crowd);
    gt.index();
    const KeypointResult good = result_from(gt.annotations[0], 0.5f);
    const KeypointResult on_crowd = result_from(crowd, 0.9f);
    REQUIRE(evaluate_keypoints(gt, {good, on_crowd}).stats[0] == Approx(1.0).epsilon(1e-12));
    REQUIRE(evaluate_keypoints(gt, {good, result_from(crowd, 0.9f, -150)}).stats[0] < 1.0);
  }
  SECTION("only the 20 best detections of an image count") {
    const CocoKeypoints gt = one_person(5000);
    std::vector<KeypointResult> res;
    for (int i = 0; i < 20; ++i)
      res.push_back(result_from(gt.annotations[0], 0.5f + 0.01f * i, 200));
    res.push_back(result_from(gt.annotations[0], 0.1f));  // 21st by score: dropped
    const KeypointMetrics m = evaluate_keypoints(gt, res);
    REQUIRE(m.stats[5] == 0.0);
    res.back().score = 0.95f;  // now the best
    REQUIRE(evaluate_keypoints(gt, res).stats[5] == 1.0);
  }
}

TEST_CASE("coco eval: results for unknown images are an error", "[coco_eval]") {
  const CocoKeypoints gt = one_person(5000);
  KeypointResult r = result_from(gt.annotations[0], 1);
  r.image_id = 424242;
  const std::string msg =
      hr::test::error_of([&] { evaluate_keypoints(gt, {result_from(gt.annotations[0], 1), r}); });
  INFO(msg);
  REQUIRE(hr::test::contains(msg, "424242"));
  REQUIRE(hr::test::contains(msg, "result 1"));
  // another category on a known image is simply not evaluated
  r.image_id = 1, r.category_id = 2;
  REQUIRE(evaluate_keypoints(gt, {result_from(gt.annotations[0], 0.5f), r}).stats[5] == 1.0);
}

TEST_CASE("coco eval: rescoring and OKS-NMS equal the official code", "[coco_eval]") {
  simdjson::dom::parser p;
  simdjson::dom::element ref = p.load(fixture("nms_case.json"));
  REQUIRE(double(ref["in_vis_thre"]) == 0.2);
  REQUIRE(double(ref["oks_thre"]) == 0.9);
  std::vector<PersonPrediction> preds;
  for (simdjson::dom::element e : simdjson::dom::array(ref["preds"])) {
    PersonPrediction q;
    q.image_id = int64_t(e["image_id"]);
    size_t j = 0;
    for (simdjson::dom::element v : simdjson::dom::array(e["keypoints"]))
      q.keypoints.at(j++) = float(double(v));
    REQUIRE(j == q.keypoints.size());
    q.box_score = float(double(e["box_score"]));
    q.area = float(double(e["area"]));
    preds.push_back(q);
  }
  const std::vector<KeypointResult> got = rescore_and_nms(preds);
  simdjson::dom::array expected = ref["expected"];
  REQUIRE(got.size() == expected.size());
  REQUIRE(got.size() < preds.size());  // NMS removed some
  size_t i = 0, zero_scores = 0;
  for (simdjson::dom::element e : expected) {
    INFO("kept prediction " << i);
    const PersonPrediction& want = preds.at(size_t(int64_t(e["index"])));
    REQUIRE(got[i].image_id == want.image_id);
    REQUIRE(got[i].category_id == 1);
    REQUIRE(got[i].keypoints == want.keypoints);
    REQUIRE(got[i].score == float(double(e["score"])));
    zero_scores += got[i].score == 0;
    ++i;
  }
  REQUIRE(zero_scores == 1);  // the person with no joint above 0.2

  // oks_nms itself, image by image
  size_t images = 0;
  for (simdjson::dom::element c : simdjson::dom::array(ref["oks_nms"])) {
    std::vector<std::array<float, 3 * kNumJoints>> kpts;
    std::vector<float> scores, areas;
    for (simdjson::dom::element k : simdjson::dom::array(c["indices"])) {
      const PersonPrediction& q = preds.at(size_t(int64_t(k)));
      kpts.push_back(q.keypoints);
      areas.push_back(q.area);
    }
    for (simdjson::dom::element s : simdjson::dom::array(c["scores"]))
      scores.push_back(float(double(s)));
    std::vector<size_t> keep;
    for (simdjson::dom::element k : simdjson::dom::array(c["keep"]))
      keep.push_back(size_t(int64_t(k)));
    REQUIRE(oks_nms(kpts, scores, areas, 0.9f) == keep);
    ++images;
  }
  REQUIRE(images == 4);
}

TEST_CASE("coco eval: rescoring and NMS by hand", "[coco_eval]") {
  PersonPrediction a;
  a.image_id = 5;
  for (int j = 0; j < kNumJoints; ++j) {
    a.keypoints[3 * j] = 100 + 5 * j, a.keypoints[3 * j + 1] = 50 + 12 * j;
    a.keypoints[3 * j + 2] = j < 4 ? 0.9f : 0.1f;
  }
  a.box_score = 0.5f;
  a.area = 120 * 240;
  PersonPrediction dup = a, far = a, other = a;
  dup.box_score = 0.4f;
  for (int j = 0; j < kNumJoints; ++j) far.keypoints[3 * j] += 80;
  far.box_score = 0.3f;
  other.image_id = 2;
  // joint maxima of exactly 0.2f count: the official numpy-1.x code compares them in float64
  for (int j = 0; j < kNumJoints; ++j) other.keypoints[3 * j + 2] = 0.2f;
  const auto out = rescore_and_nms({dup, other, a, far});
  REQUIRE(out.size() == 3);       // dup is suppressed by a (OKS 1)
  REQUIRE(out[0].image_id == 5);  // images in order of first appearance
  REQUIRE(out[0].score == float(double(0.9f) * 0.5));
  REQUIRE(out[1].score == float(double(0.9f) * double(0.3f)));
  REQUIRE(out[1].keypoints == far.keypoints);
  REQUIRE(out[2].image_id == 2);
  REQUIRE(out[2].score == float(double(0.2f) * 0.5));
  // a lower threshold removes the far one too
  REQUIRE(oks_nms({a.keypoints, far.keypoints}, {1.f, 0.5f}, {a.area, far.area}, 0.9f).size() == 2);
  REQUIRE(oks_nms({a.keypoints, far.keypoints}, {1.f, 0.5f}, {a.area, far.area}, 0.0f) ==
          std::vector<size_t>{0});
  // equal scores: the later one first, as numpy's argsort()[::-1]
  REQUIRE(oks_nms({a.keypoints, far.keypoints}, {1.f, 1.f}, {a.area, far.area}, 0.9f) ==
          std::vector<size_t>{1, 0});
  REQUIRE(rescore_and_nms({}).empty());
}
