// COCO evaluation step for step as pycocotools' COCOeval (evaluate, accumulate, summarize), one
// core for iouType "keypoints" and "bbox", and the official HRNet rescoring and OKS-NMS
// (lib/dataset/coco.py evaluate, lib/nms/nms.py). The arithmetic follows numpy's order of
// operations (pairwise sums, no fused multiply-adds) so the figures agree to the last bits.
#include "data/coco_eval.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <unordered_map>

#include "data/boxes.h"
#include "engine/error.h"

namespace hr::data {
namespace {

constexpr int kT = 10;                          // IoU/OKS thresholds .50:.05:.95
constexpr int kR = 101;                         // recall thresholds 0:.01:1
constexpr double kEps = 2.220446049250313e-16;  // np.spacing(1)
constexpr double kAreaMax = 1e10;               // 1e5 ** 2

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

// ---------------------------------------------------------------------------------------------
// The COCOeval core: what evaluate, accumulate and summarize do once the IoUs (or OKS) are known.

struct GtRec {
  double area;  // the "area" field
  bool ignore;  // crowd (or, for keypoints, no labelled joint)
  bool crowd;
  int64_t id;
};

// One (image, category) pair: its ground truth in file order, its detections highest score first
// (stable) cut at the largest maxDets, and the IoU of every pair.
struct Cell {
  std::vector<GtRec> gts;
  std::vector<double> dt_scores, dt_areas;  // [D]
  std::vector<double> ious;                 // [D][G], gt in file order; empty when D or G is 0
};

// COCOeval's order of a cell's detections (np.argsort(-score, kind="mergesort")), cut at max_det.
std::vector<size_t> sorted_dets(const std::vector<double>& scores, size_t max_det) {
  std::vector<size_t> order = order_desc_stable(scores);
  if (order.size() > max_det) order.resize(max_det);
  return order;
}

struct Params {
  std::vector<std::array<double, 2>> area_rng;
  std::vector<const char*> area_lbl;
  std::vector<size_t> max_dets;  // ascending
};

// COCOeval.evaluateImg for one cell and area range (None when the cell has no gt and no dt).
struct ImageEval {
  bool none = true;
  std::vector<double> dt_scores;               // highest score first
  std::vector<uint8_t> dt_matched, dt_ignore;  // [T][D]
  std::vector<uint8_t> gt_ignore;              // [G], not ignored first
};

ImageEval evaluate_image(const Cell& c, const std::array<double, 2>& rng) {
  ImageEval ev;
  const size_t G = c.gts.size(), D = c.dt_scores.size();
  if (G == 0 && D == 0) return ev;
  ev.none = false;
  std::vector<uint8_t> gign(G);
  for (size_t g = 0; g < G; ++g) {
    const double a = c.gts[g].area;
    gign[g] = c.gts[g].ignore || a < rng[0] || a > rng[1];
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
    crowd[i] = c.gts[gtind[i]].crowd;
    gt_id[i] = c.gts[gtind[i]].id;
  }
  ev.dt_scores = c.dt_scores;
  ev.dt_matched.assign(kT * D, 0);
  ev.dt_ignore.assign(kT * D, 0);
  if (!c.ious.empty()) {
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
          const double v = c.ious[d * G + gtind[g]];
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
    const bool out = c.dt_areas[d] < rng[0] || c.dt_areas[d] > rng[1];
    for (int t = 0; t < kT; ++t)
      if (!ev.dt_matched[t * D + d] && out) ev.dt_ignore[t * D + d] = 1;
  }
  return ev;
}

// COCOeval.accumulate for one category, area range and maxDets: precision [T][R] and recall [T],
// left at -1 when no gt counts.
void accumulate(const std::vector<ImageEval>& evs, size_t max_det, std::vector<double>& precision,
                std::vector<double>& recall) {
  precision.assign(kT * kR, -1.0);
  recall.assign(kT, -1.0);
  std::vector<double> scores;
  std::vector<const ImageEval*> E;
  size_t npig = 0;
  for (const ImageEval& e : evs) {
    if (e.none) continue;
    E.push_back(&e);
    scores.insert(scores.end(), e.dt_scores.begin(),
                  e.dt_scores.begin() + std::min(max_det, e.dt_scores.size()));
    for (uint8_t g : e.gt_ignore) npig += g == 0;
  }
  if (E.empty() || npig == 0) return;
  const std::vector<size_t> inds = order_desc_stable(scores);
  const size_t nd = scores.size();
  // Flat [T][nd] in concatenation order, then permuted by inds.
  std::vector<uint8_t> matched(kT * nd), ignore(kT * nd);
  size_t off = 0;
  for (const ImageEval* e : E) {
    const size_t D = e->dt_scores.size(), Dm = std::min(max_det, D);
    for (int t = 0; t < kT; ++t)
      for (size_t d = 0; d < Dm; ++d) {
        matched[t * nd + off + d] = e->dt_matched[t * D + d];
        ignore[t * nd + off + d] = e->dt_ignore[t * D + d];
      }
    off += Dm;
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

// COCOeval.eval's precision [T][R][K][A][M] and recall [T][K][A][M], -1 where no gt counts.
class Accumulated {
 public:
  Accumulated(size_t K, const Params& p)
      : K_(K),
        A_(p.area_rng.size()),
        M_(p.max_dets.size()),
        params_(p),
        precision_(kT * kR * K_ * A_ * M_, -1.0),
        recall_(kT * K_ * A_ * M_, -1.0) {}

  // evaluate + accumulate for category k, whose cells (one per image, imgIds order) are given.
  void add_category(size_t k, const std::vector<Cell>& cells) {
    std::vector<ImageEval> evs(cells.size());
    std::vector<double> pr, rc;
    for (size_t a = 0; a < A_; ++a) {
      for (size_t i = 0; i < cells.size(); ++i)
        evs[i] = evaluate_image(cells[i], params_.area_rng[a]);
      for (size_t m = 0; m < M_; ++m) {
        accumulate(evs, params_.max_dets[m], pr, rc);
        for (int t = 0; t < kT; ++t) {
          for (int r = 0; r < kR; ++r) precision_[idx(t * kR + r, k, a, m)] = pr[t * kR + r];
          recall_[idx(t, k, a, m)] = rc[t];
        }
      }
    }
  }

  // COCOeval.summarize's _summarize: np.mean of the entries > -1 (in C order) of
  // precision[t, :, :, a, m] or recall[t, :, a, m], every threshold when t < 0; -1 when none.
  double summarize(bool ap, int t, size_t a, size_t m) const {
    std::vector<double> v;
    const int t0 = t < 0 ? 0 : t, t1 = t < 0 ? kT : t + 1;
    for (int ti = t0; ti < t1; ++ti) {
      if (ap) {
        for (int r = 0; r < kR; ++r)
          for (size_t k = 0; k < K_; ++k) v.push_back(precision_[idx(ti * kR + r, k, a, m)]);
      } else {
        for (size_t k = 0; k < K_; ++k) v.push_back(recall_[idx(ti, k, a, m)]);
      }
    }
    v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return !(x > -1); }), v.end());
    return v.empty() ? -1.0 : np_sum(v.data(), v.size()) / static_cast<double>(v.size());
  }

 private:
  // [..][K][A][M] with `lead` the index over the leading dimensions
  size_t idx(size_t lead, size_t k, size_t a, size_t m) const {
    return ((lead * K_ + k) * A_ + a) * M_ + m;
  }
  size_t K_, A_, M_;
  Params params_;
  std::vector<double> precision_, recall_;
};

// One figure of a summary: precision (ap) or recall at threshold index t (-1: all), area index a,
// maxDets index m.
struct Figure {
  bool ap;
  int t;
  size_t a, m;
};

// The summary lines COCOeval.summarize() prints (_summarize's iStr), one per figure.
template <size_t N>
std::string summary(const Params& p, const std::array<Figure, N>& figs,
                    const std::array<double, N>& stats) {
  std::string out;
  for (size_t i = 0; i < N; ++i) {
    const Figure& f = figs[i];
    char iou[16], buf[160];
    if (f.t < 0)
      std::snprintf(iou, sizeof iou, "%0.2f:%0.2f", iou_thrs()[0], iou_thrs()[kT - 1]);
    else
      std::snprintf(iou, sizeof iou, "%0.2f", iou_thrs()[f.t]);
    std::snprintf(buf, sizeof buf, " %-18s %s @[ IoU=%-9s | area=%6s | maxDets=%3d ] = %0.3f\n",
                  f.ap ? "Average Precision" : "Average Recall", f.ap ? "(AP)" : "(AR)", iou,
                  p.area_lbl[f.a], static_cast<int>(p.max_dets[f.m]), stats[i]);
    out += buf;
  }
  return out;
}

template <size_t N>
std::array<double, N> summarize(const Accumulated& acc, const std::array<Figure, N>& figs) {
  std::array<double, N> s{};
  for (size_t i = 0; i < N; ++i) s[i] = acc.summarize(figs[i].ap, figs[i].t, figs[i].a, figs[i].m);
  return s;
}

// np.where(iouThr == p.iouThrs): .5 and .75 are exactly in the linspace.
int thr_index(double thr) {
  int i = 0;
  while (i < kT && iou_thrs()[i] != thr) ++i;
  HR_CHECK(i < kT, "[coco eval] no IoU threshold ", thr);
  return i;
}

// Sorted unique ids, and id -> position.
std::vector<int64_t> unique_sorted(std::vector<int64_t> ids,
                                   std::unordered_map<int64_t, size_t>& pos) {
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  pos.clear();
  pos.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) pos.emplace(ids[i], i);
  return ids;
}

// ---------------------------------------------------------------------------------------------
// Keypoints

const Params& keypoint_params() {
  static const Params p{
      {{0, kAreaMax}, {32 * 32, 96 * 96}, {96 * 96, kAreaMax}}, {"all", "medium", "large"}, {20}};
  return p;
}

// _summarizeKps
const std::array<Figure, 10>& keypoint_figures() {
  static const std::array<Figure, 10> f = [] {
    const int t50 = thr_index(.5), t75 = thr_index(.75);
    return std::array<Figure, 10>{{{true, -1, 0, 0},
                                   {true, t50, 0, 0},
                                   {true, t75, 0, 0},
                                   {true, -1, 1, 0},
                                   {true, -1, 2, 0},
                                   {false, -1, 0, 0},
                                   {false, t50, 0, 0},
                                   {false, t75, 0, 0},
                                   {false, -1, 1, 0},
                                   {false, -1, 2, 0}}};
  }();
  return f;
}

// COCOeval.computeOks for one detection and one ground truth.
double oks(const KeypointResult& d, const CocoPersonAnn& g) {
  const auto& gk = g.keypoints;
  const auto& dk = d.keypoints;
  int k1 = 0;
  for (int j = 0; j < kNumJoints; ++j) k1 += gk[3 * j + 2] > 0;
  const double bx = g.bbox[0], by = g.bbox[1], bw = g.bbox[2], bh = g.bbox[3];
  const double x0 = bx - bw, x1 = bx + bw * 2, y0 = by - bh, y1 = by + bh * 2;
  const double denom = static_cast<double>(g.area) + kEps;
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

// ---------------------------------------------------------------------------------------------
// Boxes

const Params& box_params() {
  static const Params p{{{0, kAreaMax}, {0, 32 * 32}, {32 * 32, 96 * 96}, {96 * 96, kAreaMax}},
                        {"all", "small", "medium", "large"},
                        {1, 10, 100}};
  return p;
}

// _summarizeDets
const std::array<Figure, 12>& box_figures() {
  static const std::array<Figure, 12> f = [] {
    const int t50 = thr_index(.5), t75 = thr_index(.75);
    return std::array<Figure, 12>{{{true, -1, 0, 2},
                                   {true, t50, 0, 2},
                                   {true, t75, 0, 2},
                                   {true, -1, 1, 2},
                                   {true, -1, 2, 2},
                                   {true, -1, 3, 2},
                                   {false, -1, 0, 0},
                                   {false, -1, 0, 1},
                                   {false, -1, 0, 2},
                                   {false, -1, 1, 2},
                                   {false, -1, 2, 2},
                                   {false, -1, 3, 2}}};
  }();
  return f;
}

// pycocotools maskApi.c bbIou for one pair of [x, y, w, h] boxes; a crowd gt divides by the
// detection's area.
double box_iou(const std::array<double, 4>& d, const std::array<double, 4>& g, bool crowd) {
  const double da = mul(d[2], d[3]), ga = mul(g[2], g[3]);
  const double w = std::fmin(d[2] + d[0], g[2] + g[0]) - std::fmax(d[0], g[0]);
  if (w <= 0) return 0;
  const double h = std::fmin(d[3] + d[1], g[3] + g[1]) - std::fmax(d[1], g[1]);
  if (h <= 0) return 0;
  const double i = mul(w, h);
  const double u = crowd ? da : da + ga - i;
  return i / u;
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
  return summary(keypoint_params(), keypoint_figures(), stats);
}

KeypointMetrics evaluate_keypoints(const CocoKeypoints& gt,
                                   const std::vector<KeypointResult>& results) {
  // imgIds: every GT image, sorted, unique
  std::vector<int64_t> ids;
  ids.reserve(gt.images.size());
  for (const CocoImage& im : gt.images) ids.push_back(im.id);
  std::unordered_map<int64_t, size_t> pos;
  const std::vector<int64_t> img_ids = unique_sorted(std::move(ids), pos);

  std::vector<std::vector<const CocoPersonAnn*>> gts(img_ids.size());
  std::vector<std::vector<const KeypointResult*>> dts(img_ids.size());
  for (const CocoPersonAnn& a : gt.annotations) {
    const auto it = pos.find(a.image_id);
    if (a.category_id != 1 || it == pos.end()) continue;
    gts[it->second].push_back(&a);
  }
  for (size_t k = 0; k < results.size(); ++k) {
    const KeypointResult& r = results[k];
    const auto it = pos.find(r.image_id);
    HR_CHECK(it != pos.end(), "[coco eval] result ", k, " is for image ", r.image_id,
             ", which is not in the ground truth");
    if (r.category_id != 1) continue;
    dts[it->second].push_back(&r);
  }
  const Params& p = keypoint_params();
  std::vector<Cell> cells(img_ids.size());
  std::vector<double> s;
  for (size_t i = 0; i < cells.size(); ++i) {
    Cell& c = cells[i];
    for (const CocoPersonAnn* a : gts[i])
      c.gts.push_back(
          {static_cast<double>(a->area), a->iscrowd || a->num_keypoints == 0, a->iscrowd, a->id});
    s.clear();
    for (const KeypointResult* r : dts[i]) s.push_back(r->score);
    std::vector<const KeypointResult*> d;
    for (const size_t k : sorted_dets(s, p.max_dets.back())) d.push_back(dts[i][k]);
    for (const KeypointResult* r : d) {
      // the area of the keypoints' bounding box, as COCO.loadRes sets it
      double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
      for (int j = 0; j < kNumJoints; ++j) {
        x0 = std::min<double>(x0, r->keypoints[3 * j]);
        x1 = std::max<double>(x1, r->keypoints[3 * j]);
        y0 = std::min<double>(y0, r->keypoints[3 * j + 1]);
        y1 = std::max<double>(y1, r->keypoints[3 * j + 1]);
      }
      c.dt_scores.push_back(r->score);
      c.dt_areas.push_back((x1 - x0) * (y1 - y0));
    }
    if (gts[i].empty() || d.empty()) continue;
    c.ious.resize(d.size() * gts[i].size());
    for (size_t di = 0; di < d.size(); ++di)
      for (size_t g = 0; g < gts[i].size(); ++g)
        c.ious[di * gts[i].size() + g] = oks(*d[di], *gts[i][g]);
  }
  Accumulated acc(1, p);
  acc.add_category(0, cells);
  KeypointMetrics m;
  m.stats = summarize(acc, keypoint_figures());
  return m;
}

const std::array<const char*, 12>& BoxMetrics::names() {
  // maskrcnn-benchmark's COCOResults names for the AP figures
  static const std::array<const char*, 12> n = {"AP",  "AP50", "AP75",  "APs", "APm", "APl",
                                                "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"};
  return n;
}

std::string BoxMetrics::table() const { return summary(box_params(), box_figures(), stats); }

BoxMetrics evaluate_boxes(const CocoInstances& gt, const std::vector<BoxResult>& results) {
  std::vector<int64_t> ids;
  ids.reserve(gt.images.size());
  for (const CocoImage& im : gt.images) ids.push_back(im.id);
  std::unordered_map<int64_t, size_t> img_pos, cat_pos;
  const std::vector<int64_t> img_ids = unique_sorted(std::move(ids), img_pos);
  ids.clear();
  for (const CocoCategory& c : gt.categories) ids.push_back(c.id);
  const std::vector<int64_t> cat_ids = unique_sorted(std::move(ids), cat_pos);

  // per category, the annotations and results in file order
  std::vector<std::vector<const CocoInstanceAnn*>> gt_of_cat(cat_ids.size());
  std::vector<std::vector<const BoxResult*>> dt_of_cat(cat_ids.size());
  for (const CocoInstanceAnn& a : gt.annotations) {
    const auto c = cat_pos.find(a.category_id);
    if (c != cat_pos.end() && img_pos.count(a.image_id)) gt_of_cat[c->second].push_back(&a);
  }
  for (size_t k = 0; k < results.size(); ++k) {
    const BoxResult& r = results[k];
    HR_CHECK(img_pos.count(r.image_id), "[coco eval] result ", k, " is for image ", r.image_id,
             ", which is not in the ground truth");
    const auto c = cat_pos.find(r.category_id);
    if (c != cat_pos.end()) dt_of_cat[c->second].push_back(&r);
  }

  const Params& p = box_params();
  Accumulated acc(cat_ids.size(), p);
  std::vector<Cell> cells(img_ids.size());
  std::vector<std::vector<const CocoInstanceAnn*>> g(img_ids.size());
  std::vector<std::vector<const BoxResult*>> d(img_ids.size());
  std::vector<double> s;
  std::vector<std::array<double, 4>> dbox;
  for (size_t k = 0; k < cat_ids.size(); ++k) {
    for (auto& v : g) v.clear();
    for (auto& v : d) v.clear();
    for (const CocoInstanceAnn* a : gt_of_cat[k]) g[img_pos.at(a->image_id)].push_back(a);
    for (const BoxResult* r : dt_of_cat[k]) d[img_pos.at(r->image_id)].push_back(r);
    for (size_t i = 0; i < cells.size(); ++i) {
      Cell& c = cells[i];
      c = Cell{};
      for (const CocoInstanceAnn* a : g[i])
        c.gts.push_back({a->area, a->iscrowd, a->iscrowd, a->id});
      s.clear();
      for (const BoxResult* r : d[i]) s.push_back(r->score);
      dbox.clear();
      for (const size_t j : sorted_dets(s, p.max_dets.back())) {
        const BoxResult& r = *d[i][j];
        dbox.push_back({r.bbox[0], r.bbox[1], r.bbox[2], r.bbox[3]});
        c.dt_scores.push_back(r.score);
        c.dt_areas.push_back(mul(r.bbox[2], r.bbox[3]));  // loadRes: bb[2] * bb[3]
      }
      const size_t G = g[i].size();
      if (G == 0 || dbox.empty()) continue;
      c.ious.resize(dbox.size() * G);
      for (size_t di = 0; di < dbox.size(); ++di)
        for (size_t gi = 0; gi < G; ++gi)
          c.ious[di * G + gi] = box_iou(dbox[di], g[i][gi]->bbox, g[i][gi]->iscrowd);
    }
    acc.add_category(k, cells);
  }
  BoxMetrics m;
  m.stats = summarize(acc, box_figures());
  return m;
}

std::string score_box_results(const std::string& gt_json, const std::string& results_json) {
  const CocoInstances gt = load_coco_instances(gt_json);
  return evaluate_boxes(gt, load_box_results(results_json)).table();
}

namespace {

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
