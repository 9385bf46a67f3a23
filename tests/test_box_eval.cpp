// Tests for evaluate_boxes (data/coco_eval.h): the 12 COCOeval(iouType="bbox") numbers and the
// summary text of pycocotools on the cases of tools/gen_box_reference.py; score_box_results on
// the files; invariance to the order of the results (ties aside); hand-derived cases (perfect
// results, the crowd rule, maxDets, unknown images and categories).
#include <random>

#include "coco_checks.h"
#include "data/boxes.h"
#include "data/coco_eval.h"
#include "engine/error.h"
#include "test_util.h"

using namespace hr::data;

namespace {

std::string fixture(const std::string& name) {
  return std::string(HR_TEST_DATA_DIR) + "/boxes/" + name;
}

using Reference = hr::test::EvalReference<12>;
using hr::test::require_stats;

Reference reference(const std::string& name) {
  return hr::test::load_eval_reference<12>(fixture(name + "_stats.json"));
}

// One image 640x480 with id 1, categories 1 and 2, the given objects (x, y, w, h, category).
CocoInstances scene(const std::vector<std::array<double, 5>>& objs) {
  CocoInstances gt;
  gt.images.push_back({1, "a.jpg", 640, 480});
  gt.categories = {{1, "a", ""}, {2, "b", ""}};
  int64_t id = 1;
  for (const auto& o : objs) {
    CocoInstanceAnn a;
    a.id = id++, a.image_id = 1, a.category_id = static_cast<int64_t>(o[4]);
    a.bbox = {o[0], o[1], o[2], o[3]};
    a.area = o[2] * o[3];
    gt.annotations.push_back(a);
  }
  gt.index();
  return gt;
}

BoxResult result_of(const CocoInstanceAnn& a, float score, float dx = 0) {
  return {a.image_id,
          a.category_id,
          {static_cast<float>(a.bbox[0]) + dx, static_cast<float>(a.bbox[1]),
           static_cast<float>(a.bbox[2]), static_cast<float>(a.bbox[3])},
          score};
}

}  // namespace

TEST_CASE("box eval: equals pycocotools on the reference cases", "[box_eval]") {
  for (const char* name : {"mixed", "ties", "crowded", "no_large"}) {
    INFO("case " << name);
    const std::string gt_path = fixture(std::string(name) + "_gt.json");
    const std::string res_path = fixture(std::string(name) + "_results.json");
    const CocoInstances gt = load_coco_instances(gt_path);
    const std::vector<BoxResult> results = load_box_results(res_path);
    const Reference ref = reference(name);
    const BoxMetrics m = evaluate_boxes(gt, results);
    require_stats(m, ref.stats, 1e-12);
    REQUIRE(m.table() == ref.summary);
    REQUIRE(m.ap() == m.stats[0]);
    REQUIRE(score_box_results(gt_path, res_path) == ref.summary);
  }
  // the cases are not degenerate
  const Reference mixed = reference("mixed");
  for (double s : mixed.stats) REQUIRE((s > 0.05 && s < 0.95));
  const Reference crowded = reference("crowded");
  REQUIRE((crowded.stats[6] < crowded.stats[7] && crowded.stats[7] < crowded.stats[8]));
  const Reference no_large = reference("no_large");
  REQUIRE(no_large.stats[5] == -1);  // no large object: -1, as COCOeval says
  REQUIRE(no_large.stats[11] == -1);
}

TEST_CASE("box eval: the order of the results does not matter, ties aside", "[box_eval]") {
  const CocoInstances gt = load_coco_instances(fixture("mixed_gt.json"));
  const auto results = load_box_results(fixture("mixed_results.json"));
  const BoxMetrics base = evaluate_boxes(gt, results);
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 5; ++trial) {
    const auto shuffled = hr::test::shuffled_keeping_ties(results, rng);
    REQUIRE(evaluate_boxes(gt, shuffled).stats == base.stats);
  }
}

TEST_CASE("box eval: hand-derived cases", "[box_eval]") {
  // a small (20x20), a medium (50x40) and a large (120x100) object of category 1, one of 2
  const CocoInstances gt = scene(
      {{10, 10, 20, 20, 1}, {100, 100, 50, 40, 1}, {300, 200, 120, 100, 1}, {400, 50, 60, 60, 2}});
  SECTION("perfect results score 1, no results 0") {
    std::vector<BoxResult> res;
    for (const CocoInstanceAnn& a : gt.annotations) res.push_back(result_of(a, 0.5f));
    const BoxMetrics m = evaluate_boxes(gt, res);
    for (int i = 0; i < 12; ++i)
      if (i != 6) REQUIRE(m.stats[i] == Approx(1.0).epsilon(1e-12));
    // AR@1: one detection per image and category finds 1 of category 1's 3 objects
    REQUIRE(m.stats[6] == Approx((1.0 / 3 + 1) / 2).epsilon(1e-12));
    for (double s : evaluate_boxes(gt, {}).stats) REQUIRE(s == 0.0);
  }
  SECTION("IoU of [x, y, w, h] boxes (no +1): a box moved by a fifth of its width") {
    // 20x20 box moved 4 px: IoU = 16*20 / (2*400 - 320) = 2/3: matched at .50 .. .65
    std::vector<BoxResult> res = {result_of(gt.annotations[0], 0.9f, 4)};
    const BoxMetrics m = evaluate_boxes(gt, res);
    // category 1: 4 thresholds of 10 find 1 of its 3 objects; category 2: nothing
    REQUIRE(m.stats[8] == Approx((4.0 / 10 / 3 + 0) / 2).epsilon(1e-12));  // AR100
    REQUIRE(m.stats[9] == Approx(4.0 / 10).epsilon(1e-12));                // ARs: cat 1 only
    REQUIRE(m.stats[10] == 0.0);
    REQUIRE(m.stats[5] == 0.0);
  }
  SECTION("a crowd box: what lies inside it is ignored, not a false positive") {
    CocoInstances g = scene({{100, 100, 50, 40, 1}, {300, 200, 200, 150, 1}});
    g.annotations[1].iscrowd = true;
    const BoxResult good = result_of(g.annotations[0], 0.5f);
    // a small box inside the crowd region: intersection over its own area is 1
    BoxResult inside = {1, 1, {320, 220, 30, 30}, 0.9f};
    REQUIRE(evaluate_boxes(g, {good, inside}).stats[0] == Approx(1.0).epsilon(1e-12));
    // the same box not crowd: a false positive ahead of the good one
    g.annotations[1].iscrowd = false;
    REQUIRE(evaluate_boxes(g, {good, inside}).stats[1] < 1.0);
  }
  SECTION("maxDets: only the 100 best detections of an image and category count") {
    std::vector<BoxResult> res;
    for (int i = 0; i < 100; ++i)
      res.push_back(result_of(gt.annotations[3], 0.5f + 0.001f * i, 200));
    res.push_back(result_of(gt.annotations[3], 0.1f));  // the 101st by score: dropped
    REQUIRE(evaluate_boxes(gt, res).stats[8] == 0.0);
    res[0].category_id = 1;  // now 99 of category 2 ahead of it
    REQUIRE(evaluate_boxes(gt, res).stats[8] == Approx(0.5).epsilon(1e-12));
    REQUIRE(evaluate_boxes(gt, res).stats[7] == 0.0);  // AR@10
  }
}

TEST_CASE("box eval: unknown images are an error, unknown categories are skipped", "[box_eval]") {
  const CocoInstances gt = scene({{10, 10, 20, 20, 1}});
  BoxResult r = result_of(gt.annotations[0], 1);
  r.image_id = 424242;
  const std::string msg =
      hr::test::error_of([&] { evaluate_boxes(gt, {result_of(gt.annotations[0], 1), r}); });
  INFO(msg);
  REQUIRE(hr::test::contains(msg, "424242"));
  REQUIRE(hr::test::contains(msg, "result 1"));
  r.image_id = 1, r.category_id = 77;  // not a category of the ground truth
  REQUIRE(evaluate_boxes(gt, {result_of(gt.annotations[0], 0.5f), r}).stats[0] ==
          Approx(1.0).epsilon(1e-12));
}
