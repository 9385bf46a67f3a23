// Object detection as HRNet-FCOS has it (data/boxes.h): COCO instances files and box results
// (read and written with data/coco_io.h), maskrcnn-benchmark's NMS (csrc/cpu/nms_cpu.cpp), the
// FCOS targets (modeling/rpn/fcos/loss.py) and post-processing (modeling/rpn/fcos/inference.py).
// Everything the official code does in float32 is float32 here, operation for operation, with
// products kept out of fused multiply-adds; the orders PyTorch's CPU sort and topk leave equal
// scores in come from the same libstdc++ calls on the same (value, index) pairs.
#include "data/boxes.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "data/coco_io.h"
#include "engine/error.h"
#include "engine/onnx_emitter.h"

namespace hr::data {

using namespace coco_io;

namespace {

// x*y rounded to float before it meets an addition (no FMA contraction under -march=x86-64-v3;
// the official code's float32 tensors never fuse).
float mulf(float a, float b) {
  volatile float r = a * b;
  return r;
}

// ---- instances files ----

void read_instance(dom::element el, Record& r, CocoInstanceAnn& a) {
  static constexpr Field<CocoInstanceAnn> kFields[] = {
      field<&CocoInstanceAnn::id>("id"),
      field<&CocoInstanceAnn::image_id>("image_id"),
      field<&CocoInstanceAnn::category_id>("category_id"),
      field<&CocoInstanceAnn::bbox>("bbox"),
      field<&CocoInstanceAnn::area>("area"),
      field<&CocoInstanceAnn::iscrowd>("iscrowd")};
  const dom::object o = r.object(el);
  r.name_by_id(o, "annotation");
  read_record(r, o, kFields, a);
  for (const double v : a.bbox)
    if (!std::isfinite(v)) r.fail("bbox has a value that is not finite");
  if (a.bbox[2] < 0 || a.bbox[3] < 0)
    r.fail(str_cat("bbox has a negative ", a.bbox[2] < 0 ? "width " : "height ",
                   a.bbox[2] < 0 ? a.bbox[2] : a.bbox[3]));
  if (!std::isfinite(a.area)) r.fail("area is not finite");
}

CocoCategory read_category(dom::element el, Record& r) {
  static constexpr Field<CocoCategory> kFields[] = {
      field<&CocoCategory::id>("id"), field<&CocoCategory::name>("name"),
      field<&CocoCategory::supercategory>("supercategory", false)};
  const dom::object o = r.object(el);
  r.name_by_id(o, "category");
  CocoCategory c;
  read_record(r, o, kFields, c);
  return c;
}

// ---- FCOS ----

// compute_locations: (x * stride + stride // 2, y * stride + stride // 2) as float32.
struct Location {
  float x, y;
  int level;
};

std::vector<Location> fcos_locations(const std::vector<FcosLevel>& levels) {
  std::vector<Location> out;
  out.reserve(static_cast<size_t>(fcos_num_locations(levels)));
  for (size_t l = 0; l < levels.size(); ++l) {
    const FcosLevel& lv = levels[l];
    for (int64_t y = 0; y < lv.h; ++y)
      for (int64_t x = 0; x < lv.w; ++x)
        out.push_back({static_cast<float>(x * lv.stride + lv.stride / 2),
                       static_cast<float>(y * lv.stride + lv.stride / 2), static_cast<int>(l)});
  }
  return out;
}

float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }

// The comparator of PyTorch's CPU sort(descending) and topk(largest): NaN first, then greater.
template <class T>
bool desc_nan_first(const std::pair<T, int64_t>& a, const std::pair<T, int64_t>& b) {
  return (std::isnan(a.first) && !std::isnan(b.first)) || a.first > b.first;
}

// torch.topk(values, k, sorted=False).indices on the CPU (aten TopKImpl.h of 1.13): the values
// widened to double (acc_type), then std::partial_sort when k * 64 <= n, else std::nth_element.
std::vector<int64_t> torch_topk_unsorted(const std::vector<float>& values, int64_t k) {
  const int64_t n = static_cast<int64_t>(values.size());
  std::vector<std::pair<double, int64_t>> q(values.size());
  for (int64_t i = 0; i < n; ++i) q[i] = {values[i], i};
  if (k * 64 <= n)
    std::partial_sort(q.begin(), q.begin() + k, q.end(), desc_nan_first<double>);
  else
    std::nth_element(q.begin(), q.begin() + k - 1, q.end(), desc_nan_first<double>);
  std::vector<int64_t> out(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j) out[j] = q[j].second;
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

Box box_from_xywh(const std::array<double, 4>& xywh) {
  const float x = static_cast<float>(xywh[0]), y = static_cast<float>(xywh[1]);
  const float w = static_cast<float>(xywh[2]), h = static_cast<float>(xywh[3]);
  return {x, y, x + std::max(w - 1.f, 0.f), y + std::max(h - 1.f, 0.f)};
}

std::array<float, 4> box_to_xywh(const Box& b) {
  return {b.x1, b.y1, b.x2 - b.x1 + 1.f, b.y2 - b.y1 + 1.f};
}

void CocoInstances::index() {
  label_of_category.clear();
  category_of_label.assign(1, 0);
  for (const CocoCategory& c : categories) {
    HR_CHECK(label_of_category.emplace(c.id, static_cast<int64_t>(category_of_label.size())).second,
             "[coco] duplicate category id ", c.id);
    category_of_label.push_back(c.id);
  }
  index_images(images, annotations, image_pos, anns_of_image);
  std::unordered_map<int64_t, size_t> ann_ids;
  ann_ids.reserve(annotations.size());
  for (const CocoInstanceAnn& a : annotations) {
    HR_CHECK(ann_ids.emplace(a.id, 0).second, "[coco] duplicate annotation id ", a.id);
    HR_CHECK(label_of_category.count(a.category_id), "[coco] annotation ", a.id, " has category ",
             a.category_id, ", which is not in \"categories\"");
  }
}

CocoInstances load_coco_instances(const std::string& path) {
  CocoInstances coco;
  {
    const Source src = read_source(path);
    const AnnotationSpans spans = scan_annotation_file(src);
    dom::parser parser;
    coco.images = read_images(src, spans.images, parser);
    coco.annotations.resize(spans.annotations.size());
    for_each_record(src, spans.annotations, "annotations", parser, [&](dom::element el, Record& r) {
      read_instance(el, r, coco.annotations[r.name.index]);
    });
    coco.categories.reserve(spans.categories.size());
    for_each_record(src, spans.categories, "categories", parser, [&](dom::element el, Record& r) {
      coco.categories.push_back(read_category(el, r));
    });
  }  // the file's bytes are freed here
  with_path(path, [&] { coco.index(); });
  return coco;
}

void save_coco_instances(const CocoInstances& coco, const std::string& path) {
  AtomicJsonWriter w(path);
  write_annotation_file_head(w, "COCO-format instances", coco.images);
  for (size_t i = 0; i < coco.annotations.size(); ++i) {
    const CocoInstanceAnn& a = coco.annotations[i];
    write_annotation_start(w, i, a.id, a.image_id, a.category_id, a.bbox, a.area, a.iscrowd);
    w.raw("}");
  }
  w.raw("],\n\"categories\":[");
  for (size_t i = 0; i < coco.categories.size(); ++i) {
    const CocoCategory& c = coco.categories[i];
    w.raw(i ? ",\n" : "\n").raw("{\"supercategory\":").string(c.supercategory);
    w.raw(",\"id\":").integer(c.id).raw(",\"name\":").string(c.name).raw("}");
  }
  w.raw("]}\n");
  w.commit();
}

std::vector<BoxResult> load_box_results(const std::string& path) {
  static constexpr Field<BoxResult> kFields[] = {
      field<&BoxResult::image_id>("image_id"), field<&BoxResult::category_id>("category_id"),
      field<&BoxResult::bbox>("bbox"), field<&BoxResult::score>("score")};
  return read_root_records<BoxResult>(
      path, "results", [](dom::object o, const Record& r, BoxResult& b) {
        read_record(r, o, kFields, b);
        for (const float v : b.bbox)
          if (!std::isfinite(v)) r.fail("bbox has a value that is not finite as a float");
        if (!std::isfinite(b.score)) r.fail("score is not finite as a float");
        return true;
      });
}

void save_box_results(const std::vector<BoxResult>& results, const std::string& path) {
  save_results(results, path, "bbox", &BoxResult::bbox);
}

// ---------------------------------------------------------------------------------------------

std::vector<int64_t> nms(const std::vector<Box>& boxes, const std::vector<float>& scores,
                         float thresh) {
  HR_CHECK(boxes.size() == scores.size(), "nms: ", boxes.size(), " boxes and ", scores.size(),
           " scores");
  const size_t n = boxes.size();
  std::vector<float> areas(n);
  for (size_t i = 0; i < n; ++i) {
    const Box& b = boxes[i];
    areas[i] = mulf(b.x2 - b.x1 + 1, b.y2 - b.y1 + 1);
  }
  std::vector<std::pair<float, int64_t>> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = {scores[i], static_cast<int64_t>(i)};
  std::sort(order.begin(), order.end(), desc_nan_first<float>);
  std::vector<uint8_t> suppressed(n, 0);
  for (size_t oi = 0; oi < n; ++oi) {
    const size_t i = static_cast<size_t>(order[oi].second);
    if (suppressed[i]) continue;
    const Box& a = boxes[i];
    for (size_t oj = oi + 1; oj < n; ++oj) {
      const size_t j = static_cast<size_t>(order[oj].second);
      if (suppressed[j]) continue;
      const Box& b = boxes[j];
      const float xx1 = std::max(a.x1, b.x1), yy1 = std::max(a.y1, b.y1);
      const float xx2 = std::min(a.x2, b.x2), yy2 = std::min(a.y2, b.y2);
      const float w = std::max(0.f, xx2 - xx1 + 1), h = std::max(0.f, yy2 - yy1 + 1);
      const float inter = mulf(w, h);
      const float ovr = inter / (areas[i] + areas[j] - inter);
      if (ovr >= thresh) suppressed[j] = 1;
    }
  }
  std::vector<int64_t> keep;
  for (size_t i = 0; i < n; ++i)
    if (!suppressed[i]) keep.push_back(static_cast<int64_t>(i));
  return keep;
}

int64_t fcos_num_locations(const std::vector<FcosLevel>& levels) {
  int64_t n = 0;
  for (const FcosLevel& l : levels) {
    HR_CHECK(l.h >= 0 && l.w >= 0 && l.stride > 0, "fcos: a level of ", l.h, "x", l.w,
             " locations with stride ", l.stride);
    n += l.h * l.w;
  }
  return n;
}

void fcos_targets(const std::vector<FcosLevel>& levels, const std::vector<Box>& boxes,
                  const std::vector<int64_t>& labels, int64_t* out_labels, float* out_reg,
                  float* out_centerness) {
  HR_CHECK(boxes.size() == labels.size(), "fcos_targets: ", boxes.size(), " boxes and ",
           labels.size(), " labels");
  constexpr float kInf = 100000000.f;  // loss.py INF
  const std::vector<Location> locs = fcos_locations(levels);
  const size_t P = locs.size(), N = boxes.size();
  std::vector<float> area(N), lo(levels.size()), hi(levels.size());
  for (size_t k = 0; k < N; ++k)
    area[k] = mulf(boxes[k].x2 - boxes[k].x1 + 1, boxes[k].y2 - boxes[k].y1 + 1);
  for (size_t l = 0; l < levels.size(); ++l) {
    lo[l] = static_cast<float>(levels[l].min_size);
    hi[l] = static_cast<float>(levels[l].max_size);
  }
  for (size_t p = 0; p < P; ++p) {
    const Location& q = locs[p];
    float best = kInf;
    size_t arg = 0;
    float ltrb[4] = {0, 0, 0, 0};
    for (size_t k = 0; k < N; ++k) {
      const Box& b = boxes[k];
      const float l = q.x - b.x1, t = q.y - b.y1, r = b.x2 - q.x, d = b.y2 - q.y;
      const float mn = std::min(std::min(l, t), std::min(r, d));
      const float mx = std::max(std::max(l, t), std::max(r, d));
      const bool cared = mx >= lo[q.level] && mx <= hi[q.level];
      const float a = mn > 0 && cared ? area[k] : kInf;
      if (k == 0 || a < best) {  // torch.min(dim=1): the first of equal minima
        best = a, arg = k;
        ltrb[0] = l, ltrb[1] = t, ltrb[2] = r, ltrb[3] = d;
      }
    }
    const bool positive = N > 0 && best != kInf;
    out_labels[p] = positive ? labels[arg] : 0;
    for (int c = 0; c < 4; ++c) out_reg[c * P + p] = ltrb[c];
    float ctr = 0;
    if (positive) {
      const float lr = std::min(ltrb[0], ltrb[2]) / std::max(ltrb[0], ltrb[2]);
      const float tb = std::min(ltrb[1], ltrb[3]) / std::max(ltrb[1], ltrb[3]);
      ctr = std::sqrt(lr * tb);
    }
    out_centerness[p] = ctr;
  }
}

std::vector<Detection> fcos_postprocess(const std::vector<FcosLevel>& levels,
                                        const std::vector<const float*>& cls,
                                        const std::vector<const float*>& reg,
                                        const std::vector<const float*>& ctr, int64_t image_h,
                                        int64_t image_w, const FcosPostprocessOptions& o) {
  HR_CHECK(
      cls.size() == levels.size() && reg.size() == levels.size() && ctr.size() == levels.size(),
      "fcos_postprocess: ", levels.size(), " levels but ", cls.size(), " class maps, ", reg.size(),
      " box maps and ", ctr.size(), " centerness maps");
  HR_CHECK(o.num_classes >= 2, "fcos_postprocess: num_classes ", o.num_classes,
           " (with the background) must be at least 2");
  const int64_t C = o.num_classes - 1;
  const float max_x = static_cast<float>(image_w - 1), max_y = static_cast<float>(image_h - 1);
  std::vector<Box> boxes;  // all levels' candidates, concatenated (cat_boxlist)
  std::vector<float> scores;
  std::vector<int64_t> labels;
  for (size_t l = 0; l < levels.size(); ++l) {
    const FcosLevel& lv = levels[l];
    const int64_t HW = lv.h * lv.w;
    std::vector<float> ctr_sig(static_cast<size_t>(HW));
    for (int64_t p = 0; p < HW; ++p) ctr_sig[p] = sigmoid(ctr[l][p]);
    std::vector<int64_t> cand;  // p * C + c, location-major (nonzero() of [HW, C])
    std::vector<float> cand_score;
    for (int64_t p = 0; p < HW; ++p)
      for (int64_t c = 0; c < C; ++c) {
        const float s = sigmoid(cls[l][c * HW + p]);
        if (s > o.pre_nms_thresh) {
          cand.push_back(p * C + c);
          cand_score.push_back(s * ctr_sig[p]);
        }
      }
    std::vector<int64_t> pick(cand.size());
    std::iota(pick.begin(), pick.end(), int64_t{0});
    if (static_cast<int64_t>(cand.size()) > o.pre_nms_top_n)
      pick = torch_topk_unsorted(cand_score, std::max<int64_t>(o.pre_nms_top_n, 0));
    for (const int64_t k : pick) {
      const int64_t p = cand[k] / C, c = cand[k] % C;
      const float x = static_cast<float>((p % lv.w) * lv.stride + lv.stride / 2);
      const float y = static_cast<float>((p / lv.w) * lv.stride + lv.stride / 2);
      const float* r = reg[l];
      Box b{x - r[p], y - r[HW + p], x + r[2 * HW + p], y + r[3 * HW + p]};
      // clamp_(min=0, max=size - 1)
      b.x1 = std::min(std::max(b.x1, 0.f), max_x), b.y1 = std::min(std::max(b.y1, 0.f), max_y);
      b.x2 = std::min(std::max(b.x2, 0.f), max_x), b.y2 = std::min(std::max(b.y2, 0.f), max_y);
      if (!(b.x2 - b.x1 + 1 >= 0.f && b.y2 - b.y1 + 1 >= 0.f)) continue;  // min_size 0
      boxes.push_back(b);
      scores.push_back(cand_score[k]);
      labels.push_back(c + 1);
    }
  }

  std::vector<Detection> out;
  std::vector<Box> cb;
  std::vector<float> cs;
  for (int64_t j = 1; j <= C; ++j) {
    cb.clear(), cs.clear();
    for (size_t i = 0; i < boxes.size(); ++i)
      if (labels[i] == j) cb.push_back(boxes[i]), cs.push_back(scores[i]);
    if (cb.empty()) continue;
    std::vector<int64_t> keep(cb.size());
    std::iota(keep.begin(), keep.end(), int64_t{0});
    if (o.nms_thresh > 0) keep = nms(cb, cs, o.nms_thresh);  // boxlist_nms returns at <= 0
    for (const int64_t k : keep) out.push_back({cb[k], cs[k], j});
  }

  const int64_t n = static_cast<int64_t>(out.size()), top = o.detections_per_img;
  if (top > 0 && n > top) {
    // torch.kthvalue(scores, n - top + 1): the (n - top + 1)-th smallest
    std::vector<float> s(out.size());
    for (size_t i = 0; i < out.size(); ++i) s[i] = out[i].score;
    std::nth_element(s.begin(), s.begin() + (n - top), s.end());
    const float thresh = s[n - top];
    std::vector<Detection> kept;
    for (const Detection& d : out)
      if (d.score >= thresh) kept.push_back(d);
    out.swap(kept);
  }
  return out;
}

void fcos_postprocess_onnx(OnnxEmitter& e, const std::vector<FcosLevel>& levels,
                           const std::vector<std::string>& cls, const std::vector<std::string>& reg,
                           const std::vector<std::string>& ctr, int64_t image_h, int64_t image_w,
                           const FcosPostprocessOptions& o, const std::string& out) {
  HR_CHECK(!levels.empty() && cls.size() == levels.size() && reg.size() == levels.size() &&
               ctr.size() == levels.size(),
           "fcos_postprocess_onnx: ", levels.size(), " levels but ", cls.size(), " class maps, ",
           reg.size(), " box maps and ", ctr.size(), " centerness maps");
  HR_CHECK(o.num_classes >= 2, "fcos_postprocess_onnx: num_classes ", o.num_classes,
           " (with the background) must be at least 2");
  HR_CHECK(o.pre_nms_top_n > 0, "fcos_postprocess_onnx: pre_nms_top_n must be positive");
  using A = OnnxAttr;
  const int64_t C = o.num_classes - 1;
  const auto axis = [](int64_t a) { return A::integer("axis", a); };
  const auto perm021 = A::integers("perm", {0, 2, 1});
  const auto unsqueeze = [&](const std::string& x, int64_t a) {
    return e.op("Unsqueeze", {x, e.ints({a}, "axes")});
  };
  const auto slice = [&](const std::string& x, int64_t begin, int64_t end, int64_t ax) {
    return e.op("Slice",
                {x, e.ints({begin}, "starts"), e.ints({end}, "ends"), e.ints({ax}, "axes")});
  };
  const std::string minus_one = e.float_scalar(-1.f, "minus_one");

  // per level: the top candidates' boxes [N, k, 4], scores [N, k] (-1 where no candidate),
  // labels [N, k] and validity [N, k]
  std::vector<std::string> boxes, scores, labels, valid;
  int64_t M = 0;
  for (size_t l = 0; l < levels.size(); ++l) {
    const FcosLevel& lv = levels[l];
    const int64_t HW = lv.h * lv.w, k = std::min(o.pre_nms_top_n, HW * C);
    // [N, C, h, w] -> [N, HW, C]: index p * C + c once flattened, as nonzero() over [HW, C]
    const std::string prob = e.op(
        "Sigmoid",
        {e.op("Transpose", {e.op("Reshape", {cls[l], e.ints({0, C, HW}, "shape")})}, {perm021})});
    const std::string cand =
        e.op("Greater", {prob, e.float_scalar(o.pre_nms_thresh, "pre_nms_thresh")});
    const std::string centerness =
        e.op("Sigmoid", {e.op("Reshape", {ctr[l], e.ints({0, HW, 1}, "shape")})});
    const std::string score = e.op("Mul", {prob, centerness});
    const std::string masked =
        e.op("Reshape", {e.op("Where", {cand, score, minus_one}), e.ints({0, HW * C}, "shape")});
    const std::string top = e.fresh("top_scores"), index = e.fresh("top_index");
    e.node("TopK", {masked, e.ints({k}, "k")}, {top, index},
           {axis(1), A::integer("largest", 1), A::integer("sorted", 1)});
    const std::string loc = e.op("Div", {index, e.int_scalar(C, "classes")});
    labels.push_back(
        e.op("Add", {e.op("Mod", {index, e.int_scalar(C, "classes")}), e.int_scalar(1, "one")}));
    // the locations (x, y, x, y) and distances (-l, -t, r, b): x1 = x - l, ..., y2 = y + b
    std::vector<float> xyxy(static_cast<size_t>(4 * HW));
    for (int64_t p = 0; p < HW; ++p) {
      const float x = static_cast<float>((p % lv.w) * lv.stride + lv.stride / 2);
      const float y = static_cast<float>((p / lv.w) * lv.stride + lv.stride / 2);
      xyxy[4 * p] = xyxy[4 * p + 2] = x;
      xyxy[4 * p + 1] = xyxy[4 * p + 3] = y;
    }
    const std::string at = e.op("Gather", {e.floats(xyxy, {HW, 4}, "locations"), loc}, {axis(0)});
    const std::string dist = e.op(
        "GatherND",
        {e.op("Transpose", {e.op("Reshape", {reg[l], e.ints({0, 4, HW}, "shape")})}, {perm021}),
         unsqueeze(loc, 2)},
        {A::integer("batch_dims", 1)});
    std::string box =
        e.op("Add", {at, e.op("Mul", {dist, e.floats({-1.f, -1.f, 1.f, 1.f}, {4}, "signs")})});
    // clip_to_image: x to [0, w - 1], y to [0, h - 1]
    const float mx = static_cast<float>(image_w - 1), my = static_cast<float>(image_h - 1);
    box = e.op("Min", {e.op("Max", {box, e.float_scalar(0.f, "zero")}),
                       e.floats({mx, my, mx, my}, {4}, "image_max")});
    // remove_small_boxes(0): x2 - x1 + 1 >= 0 and y2 - y1 + 1 >= 0
    const std::string ok = e.op(
        "GreaterOrEqual", {e.op("Add", {e.op("Sub", {slice(box, 2, 4, 2), slice(box, 0, 2, 2)}),
                                        e.float_scalar(1.f, "one")}),
                           e.float_scalar(0.f, "zero")});
    const std::string sized = e.op(
        "Squeeze", {e.op("And", {slice(ok, 0, 1, 2), slice(ok, 1, 2, 2)}), e.ints({2}, "axes")});
    valid.push_back(
        e.op("And", {e.op("GreaterOrEqual", {top, e.float_scalar(0.f, "zero")}), sized}));
    boxes.push_back(box);
    scores.push_back(top);
    M += k;
  }
  auto cat = [&](const std::vector<std::string>& xs, const std::string& hint) {
    return xs.size() == 1 ? xs[0] : e.op("Concat", xs, {axis(1)}, hint);
  };
  const std::string all_boxes = cat(boxes, "boxes"), all_scores = cat(scores, "scores"),
                    all_labels = cat(labels, "labels"), all_valid = cat(valid, "valid");

  // class-wise NMS: each class's scores [N, C, M], -1 where a candidate is not of that class
  std::vector<int64_t> classes(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) classes[c] = c + 1;
  const std::string match = e.op(
      "And", {e.op("Equal", {unsqueeze(all_labels, 1),
                             e.constant(Tensor::from_vector_i64(classes, {1, C, 1}), "class_ids")}),
              unsqueeze(all_valid, 1)});
  std::string selected;  // [S, 3]: image, class index, candidate
  if (o.nms_thresh > 0) {
    // boxlist_nms's areas and overlaps count pixels (+1): x2 + 1 and y2 + 1 give NMS the same
    // widths; it suppresses at IoU > threshold where nms() does at >= nms_thresh
    const std::string class_scores =
        e.op("Where", {match, unsqueeze(all_scores, 1), minus_one}, {}, "class_scores");
    selected = e.op("NonMaxSuppression",
                    {e.op("Add", {all_boxes, e.floats({0.f, 0.f, 1.f, 1.f}, {4}, "plus_one")}),
                     class_scores, e.ints({M}, "max_boxes"),
                     e.floats({std::nextafter(o.nms_thresh, 0.f)}, {1}, "iou_threshold"),
                     e.floats({-0.5f}, {1}, "score_threshold")});
  } else {  // boxlist_nms keeps every box
    selected = e.op("Transpose", {e.op("NonZero", {match})}, {A::integers("perm", {1, 0})});
  }
  const std::string image_candidate =
      e.op("Gather", {selected, e.ints({0, 2}, "columns")}, {axis(1)});
  const std::string det_box = e.op("GatherND", {all_boxes, image_candidate});
  const std::string det_score = e.op("GatherND", {all_scores, image_candidate});
  const std::string image = e.op("Gather", {selected, e.int_scalar(0, "column")}, {axis(1)});
  const std::string label = e.op(
      "Add",
      {e.op("Gather", {selected, e.int_scalar(1, "column")}, {axis(1)}), e.int_scalar(1, "one")});
  auto as_column = [&](const std::string& x, bool cast) {
    return unsqueeze(cast ? e.op("Cast", {x}, {A::integer("to", onnx_elem_type(DType::f32))}) : x,
                     1);
  };
  const std::vector<std::string> columns = {as_column(image, true), det_box,
                                            as_column(det_score, false), as_column(label, true)};
  if (o.detections_per_img <= 0) {
    e.node("Concat", columns, {out}, {axis(1)});
    return;
  }
  // detections_per_img: per image, keep the scores >= its kth largest (k = detections_per_img),
  // ties included: torch.kthvalue's (n - k + 1)-th smallest. Rows: [N, S + 1], an image's own
  // scores and -1 elsewhere (the extra column makes k >= 1 when S is 0).
  const std::string N = slice(e.op("Shape", {all_scores}), 0, 1, 0);
  const std::string rows = unsqueeze(
      e.op("Range", {e.int_scalar(0, "zero"), e.op("Squeeze", {N}), e.int_scalar(1, "one")}), 1);
  const std::string own = e.op("Equal", {rows, unsqueeze(image, 0)});
  const std::string pad = e.op("Expand", {e.floats({-1.f}, {1, 1}, "minus_one"),
                                          e.op("Concat", {N, e.ints({1}, "one")}, {axis(0)})});
  const std::string per_image =
      e.op("Concat", {e.op("Where", {own, unsqueeze(det_score, 0), minus_one}), pad}, {axis(1)});
  const std::string k = e.op("Min", {e.ints({o.detections_per_img}, "detections_per_img"),
                                     slice(e.op("Shape", {per_image}), 1, 2, 0)});
  const std::string kth_values = e.fresh("kth_values"), kth_index = e.fresh("kth_index");
  e.node("TopK", {per_image, k}, {kth_values, kth_index},
         {axis(1), A::integer("largest", 1), A::integer("sorted", 1)});
  const std::string kth = e.op(
      "Squeeze", {e.op("Gather", {kth_values, e.op("Sub", {k, e.ints({1}, "one")})}, {axis(1)}),
                  e.ints({1}, "axes")});
  const std::string keep =
      e.op("GreaterOrEqual", {det_score, e.op("Gather", {kth, image}, {axis(0)})});
  e.node("Compress", {e.op("Concat", columns, {axis(1)}), keep}, {out}, {axis(0)});
}

}  // namespace hr::data
