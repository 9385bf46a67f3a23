// COCO keypoint evaluation, step for step as pycocotools' COCOeval (evaluate, accumulate,
// summarize) with iouType "keypoints", and the official HRNet rescoring and OKS-NMS
// (lib/dataset/coco.py evaluate, lib/nms/nms.py). The arithmetic follows numpy's order of
// operations (pairwise sums, no fused multiply-adds) so the figures agree to the last bits.
#include "data/coco_eval.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <unordered_map>

#include "engine/error.h"

namespace hr::data {
namespace {

constexpr int kT = 10;   // OKS thresholds .50:.05:.95
constexpr int kR = 101;  // recall thresholds 0:.01:1
constexpr int kA = 3;    // area ranges all, medium, large
constexpr size_t kMaxDets = 20;
constexpr double kEps = 2.220446049250313e-16;  // np.spacing(1)
constexpr double kAreaRng[kA][2] = {{0, 1e10}, {32 * 32, 96 * 96}, {96 * 96, 1e10}};

// x*y rounded to double before it meets an addition: -march=x86-64-v3 lets the compiler fuse
// a*b+c into one FMA, which numpy never does, and the last bit can decide a threshold.
double mul(double a, double b) {
  volatile double r = a * b;
  return r;
}
float mulf(float a, float b) {
  volatile float r = a * b;
  return r;
}

// np.sum of a contiguous float64 array of at most 128 elements: below 8 in order, else 8
// interleaved partial sums combined pairwise, then the remainder.
double np_sum_short(const double* a, size_t n) {
  if (n < 8) {
    double r = 0.;
    for (size_t i = 0; i < n; ++i) r += a[i];
    return r;
  }
  double r[8];
  for (int j = 0; j < 8; ++j) r[j] = a[j];
  size_t i = 8;
  for (; i < n - n % 8; i += 8)
    for (int j = 0; j < 8; ++j) r[j] += a[i + j];
  double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
  for (; i < n; ++i) res += a[i];
  return res;
}

// np.sum of any length: halves (cut at a multiple of 8) summed recursively.
double np_sum(const double* a, size_t n) {
  if (n <= 128) return np_sum_short(a, n);
  size_t n2 = n / 2;
  n2 -= n2 % 8;
  return np_sum(a, n2) + np_sum(a + n2, n - n2);
}

// np.linspace(start, stop, num): start + i*step, the last point exactly stop.
template <size_t N>
std::array<double, N> linspace(double start, double stop) {
  std::array<double, N> v{};
  const double step = (stop - start) / static_cast<double>(N - 1);
  for (size_t i = 0; i < N; ++i) v[i] = mul(static_cast<double>(i), step) + start;
  v[N - 1] = stop;
  return v;
}

const std::array<double, kT>& iou_thrs() {
  static const auto t = linspace<kT>(0.5, 0.95);
  return t;
}
const std::array<double, kR>& rec_thrs() {
  static const auto r = linspace<kR>(0.0, 1.0);
  return r;
}

// (sigma * 2)**2 per joint.
const std::array<double, kNumJoints>& oks_vars() {
  static const auto v = [] {
    std::array<double, kNumJoints> r{};
    for (int j = 0; j < kNumJoints; ++j)
      r[j] = mul(coco_keypoint_sigmas()[j] * 2, coco_keypoint_sigmas()[j] * 2);
    return r;
  }();
  return v;
}

// The double a config value written in decimal has: 0.9f -> 0.9, not 0.89999997615814.
double as_decimal(float v) {
  char b[32];
  const auto r = std::to_chars(b, b + sizeof b, v);
  double d = v;
  std::from_chars(b, r.ptr, d);
  return d;
}

// Indices of `scores` highest first; ties in stable order, NaN last
// (np.argsort(-s, kind="mergesort")).
std::vector<size_t> order_desc_stable(const std::vector<double>& scores) {
  std::vector<size_t> idx(scores.size());
  std::iota(idx.begin(), idx.end(), size_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    return !std::isnan(scores[a]) && (std::isnan(scores[b]) || scores[a] > scores[b]);
  });
  return idx;
}

struct Gt {
  const CocoPersonAnn* ann;
  bool ignore;  // crowd or no labelled keypoints
};
struct Dt {
  const KeypointResult* res;
  double score, area;  // area of the keypoints' bounding box, as COCO.loadRes sets it
};

// COCOeval.computeOks for one detection and one ground truth.
double oks(const Dt& d, const Gt& g) {
  const auto& gk = g.ann->keypoints;
  const auto& dk = d.res->keypoints;
  int k1 = 0;
  for (int j = 0; j < kNumJoints; ++j) k1 += gk[3 * j + 2] > 0;
  const double bx = g.ann->bbox[0], by = g.ann->bbox[1], bw = g.ann->bbox[2], bh = g.ann->bbox[3];
  const double x0 = bx - bw, x1 = bx + bw * 2, y0 = by - bh, y1 = by + bh * 2;
  const double denom = static_cast<double>(g.ann->area) + kEps;
  double e[kNumJoints];
  int n = 0;
  for (int j = 0; j < kNumJoints; ++j) {
    const double xd = dk[3 * j], yd = dk[3 * j + 1];
    double dx, dy;
    if (k1 > 0) {
      if (!(gk[3 * j + 2] > 0)) continue;
      dx = xd - gk[3 * j];
      dy = yd - gk[3 * j + 1];
    } else {  // no labelled joint: distance to the box grown by its size on every side
      dx = std::max(0.0, x0 - xd) + std::max(0.0, xd - x1);
      dy = std::max(0.0, y0 - yd) + std::max(0.0, yd - y1);
    }
    e[n++] = std::exp(-((mul(dx, dx) + mul(dy, dy)) / oks_vars()[j] / denom / 2));
  }
  return np_sum_short(e, static_cast<size_t>(n)) / n;
}

// COCOeval.evaluateImg for one image and area range (None when the image has no gt and no dt).
struct ImageEval {
  bool none = true;
  std::vector<double> dt_scores;               // the first maxDets detections, highest score first
  std::vector<uint8_t> dt_matched, dt_ignore;  // [T][D]
  std::vector<uint8_t> gt_ignore;              // [G]
};

struct ImageData {
  std::vector<Gt> gts;                    // file order
  std::vector<Dt> dts;                    // highest score first (stable), cut at maxDets
  size_t all_dts = 0;                     // before the cut
  std::vector<std::vector<double>> ious;  // [dt][gt in file order]; empty when G or D is 0
};

ImageEval evaluate_image(const ImageData& im, const double rng[2]) {
  ImageEval ev;
  const size_t G = im.gts.size(), D = im.dts.size();
  if (G == 0 && im.all_dts == 0) return ev;
  ev.none = false;
  std::vector<uint8_t> gign(G);
  for (size_t g = 0; g < G; ++g) {
    const double a = im.gts[g].ann->area;
    gign[g] = im.gts[g].ignore || a < rng[0] || a > rng[1];
  }
  // gt: not ignored first, stable
  std::vector<size_t> gtind(G);
  std::iota(gtind.begin(), gtind.end(), size_t{0});
  std::stable_sort(gtind.begin(), gtind.end(),
                   [&](size_t a, size_t b) { return gign[a] < gign[b]; });
  ev.gt_ignore.resize(G);
  std::vector<uint8_t> crowd(G);
  std::vector<int64_t> gt_id(G);
  for (size_t i = 0; i < G; ++i) {
    ev.gt_ignore[i] = gign[gtind[i]];
    crowd[i] = im.gts[gtind[i]].ann->iscrowd;
    gt_id[i] = im.gts[gtind[i]].ann->id;
  }
  ev.dt_scores.resize(D);
  for (size_t d = 0; d < D; ++d) ev.dt_scores[d] = im.dts[d].score;
  ev.dt_matched.assign(kT * D, 0);
  ev.dt_ignore.assign(kT * D, 0);
  if (!im.ious.empty()) {
    std::vector<uint8_t> gt_matched(G);
    for (int t = 0; t < kT; ++t) {
      std::fill(gt_matched.begin(), gt_matched.end(), 0);
      for (size_t d = 0; d < D; ++d) {
        double best = std::min(iou_thrs()[t], 1 - 1e-10);
        long m = -1;
        for (size_t g = 0; g < G; ++g) {
          if (gt_matched[g] && !crowd[g]) continue;
          // matched to a regular gt and only ignored ones remain: stop
          if (m > -1 && !ev.gt_ignore[m] && ev.gt_ignore[g]) break;
          const double v = im.ious[d][gtind[g]];
          if (v < best) continue;
          best = v;
          m = static_cast<long>(g);
        }
        if (m == -1) continue;
        ev.dt_ignore[t * D + d] = ev.gt_ignore[m];
        // COCOeval stores the gt id and later tests it for non-zero: a gt with id 0 never counts
        ev.dt_matched[t * D + d] = gt_id[m] != 0;
        gt_matched[m] = 1;
      }
    }
  }
  for (size_t d = 0; d < D; ++d) {
    const bool out = im.dts[d].area < rng[0] || im.dts[d].area > rng[1];
    for (int t = 0; t < kT; ++t)
      if (!ev.dt_matched[t * D + d] && out) ev.dt_ignore[t * D + d] = 1;
  }
  return ev;
}

// COCOeval.accumulate for one area range: precision [T][R] and recall [T], -1 when no gt counts.
void accumulate(const std::vector<ImageEval>& evs, std::vector<double>& precision,
                std::vector<double>& recall) {
  precision.assign(kT * kR, -1.0);
  recall.assign(kT, -1.0);
  std::vector<double> scores;
  std::vector<const ImageEval*> E;
  size_t npig = 0;
  for (const ImageEval& e : evs) {
    if (e.none) continue;
    E.push_back(&e);
    scores.insert(scores.end(), e.dt_scores.begin(), e.dt_scores.end());
    for (uint8_t g : e.gt_ignore) npig += g == 0;
  }
  if (E.empty() || npig == 0) return;
  const std::vector<size_t> inds = order_desc_stable(scores);
  const size_t nd = scores.size();
  // Flat [T][nd] in concatenation order, then permuted by inds.
  std::vector<uint8_t> matched(kT * nd), ignore(kT * nd);
  size_t off = 0;
  for (const ImageEval* e : E) {
    const size_t D = e->dt_scores.size();
    for (int t = 0; t < kT; ++t)
      for (size_t d = 0; d < D; ++d) {
        matched[t * nd + off + d] = e->dt_matched[t * D + d];
        ignore[t * nd + off + d] = e->dt_ignore[t * D + d];
      }
    off += D;
  }
  std::vector<double> rc(nd), pr(nd);
  for (int t = 0; t < kT; ++t) {
    double tp = 0, fp = 0;
    for (size_t i = 0; i < nd; ++i) {
      const size_t k = t * nd + inds[i];
      if (!ignore[k]) (matched[k] ? tp : fp) += 1;
      rc[i] = tp / static_cast<double>(npig);
      pr[i] = tp / (fp + tp + kEps);
    }
    recall[t] = nd ? rc[nd - 1] : 0;
    for (size_t i = nd; i-- > 1;)  // precision envelope
      if (pr[i] > pr[i - 1]) pr[i - 1] = pr[i];
    for (int r = 0; r < kR; ++r) {
      // np.searchsorted(rc, recThrs, side="left"); past the end the precision stays 0
      const size_t pi =
          static_cast<size_t>(std::lower_bound(rc.begin(), rc.end(), rec_thrs()[r]) - rc.begin());
      precision[t * kR + r] = pi < nd ? pr[pi] : 0.0;
    }
  }
}

// np.mean(s[s > -1]), -1 when nothing is left.
double mean_valid(const std::vector<double>& s) {
  std::vector<double> v;
  for (double x : s)
    if (x > -1) v.push_back(x);
  return v.empty() ? -1.0 : np_sum(v.data(), v.size()) / static_cast<double>(v.size());
}

// np.where(iouThr == p.iouThrs): .5 and .75 are exactly in the linspace.
int thr_index(double thr) {
  int i = 0;
  while (i < kT && iou_thrs()[i] != thr) ++i;
  HR_CHECK(i < kT, "[coco eval] no OKS threshold ", thr);
  return i;
}

// lib/nms/nms.py oks_iou (sigmas COCO's, in_vis_thre None): the keypoints are float32 there, so
// the squared distances are float32 sums before the float64 division.
double nms_oks(const float* g, const float* d, double a_g, double a_d) {
  double e[kNumJoints];
  const double denom = (a_g + a_d) / 2 + kEps;
  for (int j = 0; j < kNumJoints; ++j) {
    const float dx = d[3 * j] - g[3 * j], dy = d[3 * j + 1] - g[3 * j + 1];
    const float d2 = mulf(dx, dx) + mulf(dy, dy);
    e[j] = std::exp(-(static_cast<double>(d2) / oks_vars()[j] / denom / 2));
  }
  return np_sum_short(e, kNumJoints) / kNumJoints;
}

// lib/nms/nms.py oks_nms. order = scores.argsort()[::-1]: numpy sorts these short arrays stably,
// so equal scores come out highest index first.
std::vector<size_t> oks_nms_impl(const std::vector<const float*>& kpts,
                                 const std::vector<double>& scores,
                                 const std::vector<double>& areas, double thresh) {
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return !std::isnan(scores[a]) && (std::isnan(scores[b]) || scores[a] < scores[b]);
  });
  std::reverse(order.begin(), order.end());
  std::vector<size_t> keep, rest;
  while (!order.empty()) {
    const size_t i = order[0];
    keep.push_back(i);
    rest.clear();
    for (size_t k = 1; k < order.size(); ++k) {
      const size_t j = order[k];
      if (nms_oks(kpts[i], kpts[j], areas[i], areas[j]) <= thresh) rest.push_back(j);
    }
    order.swap(rest);
  }
  return keep;
}

}  // namespace

const std::array<double, kNumJoints>& coco_keypoint_sigmas() {
  static const std::array<double, kNumJoints> s = [] {
    const double v[kNumJoints] = {.26, .25, .25,  .35,  .35, .79, .79, .72, .72,
                                  .62, .62, 1.07, 1.07, .87, .87, .89, .89};
    std::array<double, kNumJoints> r{};
    for (int j = 0; j < kNumJoints; ++j) r[j] = v[j] / 10.0;
    return r;
  }();
  return s;
}

const std::array<const char*, 10>& KeypointMetrics::names() {
  // lib/dataset/coco.py's stats_names, without its typo "Ap .5"
  static const std::array<const char*, 10> n = {"AP", "AP .5", "AP .75", "AP (M)", "AP (L)",
                                                "AR", "AR .5", "AR .75", "AR (M)", "AR (L)"};
  return n;
}

std::string KeypointMetrics::table() const {
  // COCOeval.summarize()._summarizeKps, line for line
  struct Line {
    bool ap;
    const char* iou;
    const char* area;
  };
  static const Line lines[10] = {{true, "0.50:0.95", "all"},     {true, "0.50", "all"},
                                 {true, "0.75", "all"},          {true, "0.50:0.95", "medium"},
                                 {true, "0.50:0.95", "large"},   {false, "0.50:0.95", "all"},
                                 {false, "0.50", "all"},         {false, "0.75", "all"},
                                 {false, "0.50:0.95", "medium"}, {false, "0.50:0.95", "large"}};
  std::string out;
  char buf[128];
  for (int i = 0; i < 10; ++i) {
    const Line& l = lines[i];
    std::snprintf(buf, sizeof buf, " %-18s %s @[ IoU=%-9s | area=%6s | maxDets=%3d ] = %0.3f\n",
                  l.ap ? "Average Precision" : "Average Recall", l.ap ? "(AP)" : "(AR)", l.iou,
                  l.area, static_cast<int>(kMaxDets), stats[i]);
    out += buf;
  }
  return out;
}

KeypointMetrics evaluate_keypoints(const CocoKeypoints& gt,
                                   const std::vector<KeypointResult>& results) {
  // imgIds: every GT image, sorted, unique
  std::vector<int64_t> img_ids;
  img_ids.reserve(gt.images.size());
  for (const CocoImage& im : gt.images) img_ids.push_back(im.id);
  std::sort(img_ids.begin(), img_ids.end());
  img_ids.erase(std::unique(img_ids.begin(), img_ids.end()), img_ids.end());
  std::unordered_map<int64_t, size_t> pos;
  pos.reserve(img_ids.size());
  for (size_t i = 0; i < img_ids.size(); ++i) pos.emplace(img_ids[i], i);

  std::vector<ImageData> ims(img_ids.size());
  for (const CocoPersonAnn& a : gt.annotations) {
    const auto it = pos.find(a.image_id);
    if (a.category_id != 1 || it == pos.end()) continue;
    ims[it->second].gts.push_back({&a, a.iscrowd || a.num_keypoints == 0});
  }
  for (size_t k = 0; k < results.size(); ++k) {
    const KeypointResult& r = results[k];
    const auto it = pos.find(r.image_id);
    HR_CHECK(it != pos.end(), "[coco eval] result ", k, " is for image ", r.image_id,
             ", which is not in the ground truth");
    if (r.category_id != 1) continue;
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int j = 0; j < kNumJoints; ++j) {
      x0 = std::min<double>(x0, r.keypoints[3 * j]), x1 = std::max<double>(x1, r.keypoints[3 * j]);
      y0 = std::min<double>(y0, r.keypoints[3 * j + 1]);
      y1 = std::max<double>(y1, r.keypoints[3 * j + 1]);
    }
    ims[it->second].dts.push_back({&r, static_cast<double>(r.score), (x1 - x0) * (y1 - y0)});
  }
  for (ImageData& im : ims) {
    im.all_dts = im.dts.size();
    std::vector<double> s(im.dts.size());
    for (size_t d = 0; d < s.size(); ++d) s[d] = im.dts[d].score;
    const std::vector<size_t> order = order_desc_stable(s);
    std::vector<Dt> sorted;
    for (size_t i = 0; i < order.size() && i < kMaxDets; ++i) sorted.push_back(im.dts[order[i]]);
    im.dts.swap(sorted);
    if (im.gts.empty() || im.dts.empty()) continue;
    im.ious.assign(im.dts.size(), std::vector<double>(im.gts.size()));
    for (size_t d = 0; d < im.dts.size(); ++d)
      for (size_t g = 0; g < im.gts.size(); ++g) im.ious[d][g] = oks(im.dts[d], im.gts[g]);
  }

  std::vector<double> precision[kA], recall[kA];
  std::vector<ImageEval> evs(ims.size());
  for (int a = 0; a < kA; ++a) {
    for (size_t i = 0; i < ims.size(); ++i) evs[i] = evaluate_image(ims[i], kAreaRng[a]);
    accumulate(evs, precision[a], recall[a]);
  }

  // _summarizeKps
  auto ap = [&](int a, int t) {
    if (t < 0) return mean_valid(precision[a]);
    return mean_valid(
        std::vector<double>(precision[a].begin() + t * kR, precision[a].begin() + (t + 1) * kR));
  };
  auto ar = [&](int a, int t) {
    if (t < 0) return mean_valid(recall[a]);
    return mean_valid({recall[a][t]});
  };
  const int t50 = thr_index(.5), t75 = thr_index(.75);
  KeypointMetrics m;
  m.stats = {ap(0, -1), ap(0, t50), ap(0, t75), ap(1, -1), ap(2, -1),
             ar(0, -1), ar(0, t50), ar(0, t75), ar(1, -1), ar(2, -1)};
  return m;
}

std::vector<size_t> oks_nms(const std::vector<std::array<float, 3 * kNumJoints>>& kpts,
                            const std::vector<float>& scores, const std::vector<float>& areas,
                            float thresh) {
  HR_CHECK(scores.size() == kpts.size() && areas.size() == kpts.size(), "oks_nms: ", kpts.size(),
           " keypoint sets, ", scores.size(), " scores and ", areas.size(), " areas");
  std::vector<const float*> k(kpts.size());
  for (size_t i = 0; i < kpts.size(); ++i) k[i] = kpts[i].data();
  return oks_nms_impl(k, std::vector<double>(scores.begin(), scores.end()),
                      std::vector<double>(areas.begin(), areas.end()), as_decimal(thresh));
}

std::vector<KeypointResult> rescore_and_nms(const std::vector<PersonPrediction>& preds,
                                            float in_vis_thre, float oks_thre) {
  // The official code ran on numpy 1.x, where `0 + float32` is a float64: the joint scores are
  // compared with the config's 0.2 and summed in double.
  const double vis = as_decimal(in_vis_thre), thre = as_decimal(oks_thre);
  std::vector<int64_t> image_order;  // first appearance, as the official dict of images
  std::unordered_map<int64_t, std::vector<size_t>> by_image;
  for (size_t i = 0; i < preds.size(); ++i) {
    auto [it, fresh] = by_image.try_emplace(preds[i].image_id);
    if (fresh) image_order.push_back(preds[i].image_id);
    it->second.push_back(i);
  }
  std::vector<KeypointResult> out;
  out.reserve(preds.size());
  std::vector<const float*> kpts;
  std::vector<double> scores, areas;
  for (const int64_t img : image_order) {
    const std::vector<size_t>& idx = by_image[img];
    kpts.clear(), scores.clear(), areas.clear();
    for (const size_t i : idx) {
      const PersonPrediction& p = preds[i];
      double sum = 0;
      int valid = 0;
      for (int j = 0; j < kNumJoints; ++j) {
        const double s = p.keypoints[3 * j + 2];
        if (s > vis) sum += s, ++valid;
      }
      scores.push_back((valid ? sum / valid : 0.0) * static_cast<double>(p.box_score));
      kpts.push_back(p.keypoints.data());
      areas.push_back(p.area);
    }
    std::vector<size_t> keep = oks_nms_impl(kpts, scores, areas, thre);
    if (keep.empty()) {
      keep.resize(idx.size());
      std::iota(keep.begin(), keep.end(), size_t{0});
    }
    for (const size_t k : keep) {
      KeypointResult r;
      r.image_id = img;
      r.category_id = 1;
      r.keypoints = preds[idx[k]].keypoints;
      r.score = static_cast<float>(scores[k]);
      out.push_back(r);
    }
  }
  return out;
}

}  // namespace hr::data
