// Checks the COCO tests share: a loaded file's images against the reference rows of
// tools/gen_*_reference.py or against the images saved, pycocotools' COCOeval figures and summary
// (test_coco_eval, test_box_eval), and results shuffled with equal scores kept in order.
#pragma once
#include <catch2/catch.hpp>
#include <simdjson.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "data/coco.h"

namespace hr::test {

// The images of a loaded file against the reference's [id, file_name, width, height] rows.
inline void require_images(const std::vector<data::CocoImage>& got, simdjson::dom::array ref) {
  REQUIRE(got.size() == ref.size());
  size_t i = 0;
  for (simdjson::dom::element im : ref) {
    INFO("image " << i);
    REQUIRE(got[i].id == int64_t(im.at(0)));
    REQUIRE(got[i].file_name == std::string(std::string_view(im.at(1))));
    REQUIRE(got[i].width == int64_t(im.at(2)));
    REQUIRE(got[i].height == int64_t(im.at(3)));
    ++i;
  }
}

// The images read back from a saved file, field for field.
inline void require_same_images(const std::vector<data::CocoImage>& got,
                                const std::vector<data::CocoImage>& saved) {
  REQUIRE(got.size() == saved.size());
  for (size_t i = 0; i < saved.size(); ++i) {
    REQUIRE(got[i].id == saved[i].id);
    REQUIRE(got[i].file_name == saved[i].file_name);
    REQUIRE(got[i].width == saved[i].width);
    REQUIRE(got[i].height == saved[i].height);
  }
}

// COCOeval's K figures and summary text as pycocotools gives them ({"stats": [...], "summary"}).
template <size_t K>
struct EvalReference {
  std::array<double, K> stats{};
  std::string summary;
};

template <size_t K>
EvalReference<K> load_eval_reference(const std::string& path) {
  simdjson::dom::parser p;
  simdjson::dom::element e = p.load(path);
  EvalReference<K> r;
  simdjson::dom::array s = e["stats"];
  REQUIRE(s.size() == K);
  for (size_t i = 0; i < K; ++i) r.stats[i] = double(s.at(i));
  r.summary = std::string(std::string_view(e["summary"]));
  return r;
}

// Every figure of m (KeypointMetrics, BoxMetrics) within tol of pycocotools'.
template <class Metrics, size_t K>
void require_stats(const Metrics& m, const std::array<double, K>& ref, double tol) {
  double worst = 0;
  for (size_t i = 0; i < K; ++i) worst = std::max(worst, std::fabs(m.stats[i] - ref[i]));
  for (size_t i = 0; i < K; ++i) {
    INFO(Metrics::names()[i] << ": got " << m.stats[i] << ", pycocotools " << ref[i]
                             << " (largest difference " << worst << ")");
    REQUIRE(std::fabs(m.stats[i] - ref[i]) <= tol);
  }
}

// A random permutation of results that keeps those of equal score in their relative order (the
// order COCOeval's stable sort leaves them in is the one thing that may change its figures).
template <class Result>
std::vector<Result> shuffled_keeping_ties(const std::vector<Result>& results,
                                          std::mt19937_64& rng) {
  std::vector<size_t> perm(results.size());
  for (size_t i = 0; i < perm.size(); ++i) perm[i] = i;
  std::shuffle(perm.begin(), perm.end(), rng);
  std::map<float, std::vector<size_t>> groups;  // score -> original indices, in order
  for (size_t i = 0; i < results.size(); ++i) groups[results[i].score].push_back(i);
  std::map<float, size_t> next;
  std::vector<Result> shuffled;
  for (size_t p : perm) {
    const float s = results[p].score;
    shuffled.push_back(results[groups[s][next[s]++]]);
  }
  return shuffled;
}

}  // namespace hr::test
