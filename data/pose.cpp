// The top-down pose pipeline of the official HRNet code (lib/utils/transforms.py,
// lib/dataset/JointsDataset.py, lib/dataset/coco.py, lib/core/inference.py): the same arithmetic
// in the same precision (float32 where numpy kept float32, double where it computed in float64),
// so crops, targets and decoded keypoints agree with the reference to the last bits that matter.
#include "data/pose.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <unordered_map>

#include "engine/error.h"

#if defined(__SSSE3__)
#include <tmmintrin.h>
#endif

namespace hr::data {

namespace {

// COCO left/right joint pairs (0-based), as the official coco.py lists them.
constexpr int kFlipPairs[8][2] = {{1, 2},  {3, 4},   {5, 6},   {7, 8},
                                  {9, 10}, {11, 12}, {13, 14}, {15, 16}};
constexpr int kNumUpperBody = 11;  // joints 0-10: head, shoulders, elbows, wrists

// cv::saturate_cast<int>(double): round half to even (cvRound), clamped to the int range.
inline int64_t cv_round(double v) {
  if (!(v > -2147483648.0)) return std::numeric_limits<int>::min();  // NaN too
  if (v >= 2147483647.0) return std::numeric_limits<int>::max();
  return static_cast<int64_t>(std::nearbyint(v));
}

// The three point pairs official get_affine_transform builds (float32, as numpy stores them).
struct Triangle {
  float p[3][2];
};

void affine_points(const std::array<float, 2>& center, const std::array<float, 2>& scale,
                   float rot_deg, int out_w, int out_h, Triangle& src, Triangle& dst) {
  const float src_w = scale[0] * 200.f;  // scale * 200.0 stays float32 in numpy
  const double rot = M_PI * static_cast<double>(rot_deg) / 180.0;
  const double sn = std::sin(rot), cs = std::cos(rot);
  const double half = static_cast<double>(src_w) * -0.5;  // exact in either precision
  const double dir_x = 0.0 * cs - half * sn, dir_y = 0.0 * sn + half * cs;
  src.p[0][0] = center[0];
  src.p[0][1] = center[1];
  src.p[1][0] = static_cast<float>(static_cast<double>(center[0]) + dir_x);
  src.p[1][1] = static_cast<float>(static_cast<double>(center[1]) + dir_y);
  dst.p[0][0] = static_cast<float>(out_w * 0.5);
  dst.p[0][1] = static_cast<float>(out_h * 0.5);
  dst.p[1][0] = dst.p[0][0];
  dst.p[1][1] = static_cast<float>(out_h * 0.5 + out_w * -0.5);
  // get_3rd_point(a, b) = b + (-(a-b).y, (a-b).x), all float32
  for (Triangle* t : {&src, &dst}) {
    const float dx = t->p[0][0] - t->p[1][0], dy = t->p[0][1] - t->p[1][1];
    t->p[2][0] = t->p[1][0] - dy;
    t->p[2][1] = t->p[1][1] + dx;
  }
}

// cv2.getAffineTransform: the map taking the three points of `a` to those of `b`, in double.
Affine solve_affine(const Triangle& a, const Triangle& b) {
  const double x0 = a.p[0][0], y0 = a.p[0][1];
  const double dx1 = a.p[1][0] - x0, dy1 = a.p[1][1] - y0;
  const double dx2 = a.p[2][0] - x0, dy2 = a.p[2][1] - y0;
  const double det = dx1 * dy2 - dx2 * dy1;
  Affine m;  // cv::solve leaves zeros for a singular system (a box of scale 0): so do we
  if (det == 0) return m;
  for (int r = 0; r < 2; ++r) {
    const double u0 = b.p[0][r], du1 = b.p[1][r] - u0, du2 = b.p[2][r] - u0;
    const double ca = (du1 * dy2 - du2 * dy1) / det;
    const double cb = (du2 * dx1 - du1 * dx2) / det;
    m.m[3 * r + 0] = ca;
    m.m[3 * r + 1] = cb;
    m.m[3 * r + 2] = u0 - ca * x0 - cb * y0;
  }
  return m;
}

// cv2.warpAffine INTER_LINEAR, BORDER_CONSTANT 0, fixed point as OpenCV computes it: the inverse
// map sampled at 1/1024 (AB_BITS 10) per term, rounded to 1/32 (INTER_BITS 5) source positions;
// bilinear weights (32-fx)(32-fy)*32 etc. summing to 2^15, result rounded by +2^14 >> 15.
// (OpenCV's table holds 32767 and 1 where the weight would be 32768 and 0; on 8-bit values that
// gives the same result.) CN: channels (0 = any); MIRROR: sample src[:, ::-1].
template <int CN, bool MIRROR>
void warp_impl(const Image& src, const Affine& M, int out_w, int out_h, uint8_t* dst) {
  const int cn = CN ? CN : src.channels;
  const int W = src.width, H = src.height;
  const size_t stride = static_cast<size_t>(W) * cn;
  const uint8_t* base = src.pixels.data();
  const uint8_t* end = base + src.pixels.size();
  const Affine inv = invert_affine(M);
#if defined(__SSSE3__)
  // byte order for maddubs: (tap x, tap x+1) of row 0, then of row 1, per channel
  const __m128i kTaps = _mm_setr_epi8(0, 3, 8, 11, 1, 4, 9, 12, 2, 5, 10, 13, -1, -1, -1, -1);
  const __m128i kTapsMirrored =
      _mm_setr_epi8(3, 0, 11, 8, 4, 1, 12, 9, 5, 2, 13, 10, -1, -1, -1, -1);
#else
  (void)end;
#endif
  // per column: the x terms; per row: integer source positions and sub-pixel fractions
  thread_local std::vector<int32_t> buf;
  buf.resize(5 * static_cast<size_t>(out_w));
  int32_t* adelta = buf.data();
  int32_t* bdelta = adelta + out_w;
  int32_t* xs = bdelta + out_w;
  int32_t* ys = xs + out_w;
  int32_t* fxy = ys + out_w;
  for (int x = 0; x < out_w; ++x) {
    adelta[x] = static_cast<int32_t>(cv_round(inv.m[0] * x * 1024));
    bdelta[x] = static_cast<int32_t>(cv_round(inv.m[3] * x * 1024));
  }
  for (int y = 0; y < out_h; ++y) {
    // cv_round saturates to the int range; the + 16 wraps as OpenCV's int addition does on
    // x86-64 (in unsigned arithmetic here: no signed overflow for a far-off or degenerate map)
    const int32_t X0 = static_cast<int32_t>(
        static_cast<uint32_t>(cv_round((inv.m[1] * y + inv.m[2]) * 1024)) + 16u);
    const int32_t Y0 = static_cast<int32_t>(
        static_cast<uint32_t>(cv_round((inv.m[4] * y + inv.m[5]) * 1024)) + 16u);
    for (int x = 0; x < out_w; ++x) {
      // int arithmetic as OpenCV's (wrapping only for positions beyond 2^21 px)
      const int32_t X = static_cast<int32_t>(static_cast<uint32_t>(X0) + adelta[x]) >> 5;
      const int32_t Y = static_cast<int32_t>(static_cast<uint32_t>(Y0) + bdelta[x]) >> 5;
      // saturate_cast<short> of the integer position, as OpenCV stores it
      xs[x] = std::min(std::max(X >> 5, -32768), 32767);
      ys[x] = std::min(std::max(Y >> 5, -32768), 32767);
      fxy[x] = ((Y & 31) << 5) | (X & 31);
    }
    uint8_t* d = dst + static_cast<size_t>(y) * out_w * cn;
    for (int x = 0; x < out_w; ++x, d += cn) {
      const int sx = xs[x], sy = ys[x], fx = fxy[x] & 31, fy = fxy[x] >> 5;
      const int w0 = (32 - fx) * (32 - fy) * 32, w1 = fx * (32 - fy) * 32;
      const int w2 = (32 - fx) * fy * 32, w3 = fx * fy * 32;
      if (static_cast<unsigned>(sx) < static_cast<unsigned>(W - 1) &&
          static_cast<unsigned>(sy) < static_cast<unsigned>(H - 1)) {
        const uint8_t* p0 = base + sy * stride + static_cast<size_t>(MIRROR ? W - 1 - sx : sx) * cn;
        const uint8_t* q0 = MIRROR ? p0 - cn : p0 + cn;  // the tap at sx + 1
        const uint8_t* p1 = p0 + stride;
        const uint8_t* q1 = q0 + stride;
#if defined(__SSSE3__)
        // RGB: both rows' taps in one register, weights factored as 32((32-fy)(.) + fy(.)) of
        // (32-fx, fx) pairs (an exact rewrite: (32T + 2^14) >> 15 == (T + 512) >> 10)
        const uint8_t* l0 = MIRROR ? q0 : p0;  // the leftmost tap in memory
        if (CN == 3 && l0 + stride + 8 <= end) {
          const __m128i rows =
              _mm_unpacklo_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(l0)),
                                 _mm_loadl_epi64(reinterpret_cast<const __m128i*>(l0 + stride)));
          const __m128i pairs = _mm_shuffle_epi8(rows, MIRROR ? kTapsMirrored : kTaps);
          const __m128i h =
              _mm_maddubs_epi16(pairs, _mm_set1_epi16(int16_t((fx << 8) | (32 - fx))));
          const __m128i t = _mm_madd_epi16(h, _mm_set1_epi32((fy << 16) | (32 - fy)));
          const __m128i r = _mm_srai_epi32(_mm_add_epi32(t, _mm_set1_epi32(512)), 10);
          const uint32_t rgb =
              static_cast<uint32_t>(_mm_cvtsi128_si32(_mm_packus_epi16(_mm_packs_epi32(r, r), r)));
          d[0] = static_cast<uint8_t>(rgb);
          d[1] = static_cast<uint8_t>(rgb >> 8);
          d[2] = static_cast<uint8_t>(rgb >> 16);
          continue;
        }
#endif
        for (int k = 0; k < cn; ++k)
          d[k] = static_cast<uint8_t>(
              (p0[k] * w0 + q0[k] * w1 + p1[k] * w2 + q1[k] * w3 + (1 << 14)) >> 15);
      } else if (sx >= W || sx + 1 < 0 || sy >= H || sy + 1 < 0) {
        for (int k = 0; k < cn; ++k) d[k] = 0;
      } else {
        // partly outside: taps outside the image read the border value 0
        const bool in_x0 = sx >= 0 && sx < W, in_x1 = sx + 1 >= 0 && sx + 1 < W;
        const bool in_y0 = sy >= 0 && sy < H, in_y1 = sy + 1 >= 0 && sy + 1 < H;
        const uint8_t* r0 = base + static_cast<size_t>(std::max(sy, 0)) * stride;
        const uint8_t* r1 = base + static_cast<size_t>(std::min(sy + 1, H - 1)) * stride;
        const int cx0 = std::max(sx, 0), cx1 = std::min(sx + 1, W - 1);
        const size_t c0 = static_cast<size_t>(MIRROR ? W - 1 - cx0 : cx0) * cn;
        const size_t c1 = static_cast<size_t>(MIRROR ? W - 1 - cx1 : cx1) * cn;
        for (int k = 0; k < cn; ++k) {
          const int v0 = in_x0 && in_y0 ? r0[c0 + k] : 0, v1 = in_x1 && in_y0 ? r0[c1 + k] : 0;
          const int v2 = in_x0 && in_y1 ? r1[c0 + k] : 0, v3 = in_x1 && in_y1 ? r1[c1 + k] : 0;
          d[k] = static_cast<uint8_t>((v0 * w0 + v1 * w1 + v2 * w2 + v3 * w3 + (1 << 14)) >> 15);
        }
      }
    }
  }
}

template <bool MIRROR>
void warp_dispatch(const Image& src, const Affine& M, int out_w, int out_h, uint8_t* dst) {
  HR_CHECK(out_w > 0 && out_h > 0, "[pose] warp_affine: output size ", out_w, "x", out_h);
  HR_CHECK(src.channels >= 1 && src.channels <= 4 &&
               src.pixels.size() == static_cast<size_t>(src.width) * src.height * src.channels,
           "[pose] warp_affine: malformed image ", src.width, "x", src.height, "x", src.channels);
  if (src.empty()) {
    std::memset(dst, 0, static_cast<size_t>(out_w) * out_h * src.channels);
    return;
  }
  if (src.channels == 3) return warp_impl<3, MIRROR>(src, M, out_w, out_h, dst);
  if (src.channels == 1) return warp_impl<1, MIRROR>(src, M, out_w, out_h, dst);
  warp_impl<0, MIRROR>(src, M, out_w, out_h, dst);
}

// _xywh2cs in float64, as numpy computed it from the JSON numbers; stored as float32.
void xywh_to_center_scale(double x, double y, double w, double h, double aspect_ratio,
                          float padding, std::array<float, 2>& center,
                          std::array<float, 2>& scale) {
  center[0] = static_cast<float>(x + w * 0.5);
  center[1] = static_cast<float>(y + h * 0.5);
  if (w > aspect_ratio * h)
    h = w * 1.0 / aspect_ratio;
  else if (w < aspect_ratio * h)
    w = h * aspect_ratio;
  scale[0] = static_cast<float>(w * 1.0 / kPixelStd);
  scale[1] = static_cast<float>(h * 1.0 / kPixelStd);
  if (center[0] != -1) {  // the official code skips the padding for this sentinel centre
    scale[0] *= padding;
    scale[1] *= padding;
  }
}

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

// Float64 joints (x, y, v) as the official dataset keeps them after the affine map.
void generate_target_impl(const double* joints, int num_joints, const TargetParams& tp,
                          float* target, float* weight) {
  const int W = tp.heatmap_w, H = tp.heatmap_h;
  HR_CHECK(W > 0 && H > 0 && tp.image_w > 0 && tp.image_h > 0 && tp.sigma > 0,
           "[pose] generate_target: bad sizes (image ", tp.image_w, "x", tp.image_h, ", heatmap ",
           W, "x", H, ", sigma ", tp.sigma, ")");
  const double stride_x = static_cast<double>(tp.image_w) / W;
  const double stride_y = static_cast<double>(tp.image_h) / H;
  const double tmp_size = static_cast<double>(tp.sigma) * 3;
  const int size = static_cast<int>(2 * tmp_size + 1);  // the Gaussian window's width
  const int g0 = size / 2;                              // its centre
  const float denom = static_cast<float>(2.0 * tp.sigma * tp.sigma);
  const size_t plane = static_cast<size_t>(W) * H;
  if (target) std::memset(target, 0, plane * num_joints * sizeof(float));
  // Python's int(): truncation toward zero; far-off or non-finite positions are off the map.
  auto trunc = [](double v) -> int64_t {
    if (!(std::fabs(v) < 1e9)) return v > 0 ? int64_t(1e9) : int64_t(-1e9);
    return static_cast<int64_t>(v);
  };
  for (int j = 0; j < num_joints; ++j) {
    const double* p = joints + 3 * j;
    float w = static_cast<float>(p[2]);
    const int64_t mu_x = trunc(p[0] / stride_x + 0.5), mu_y = trunc(p[1] / stride_y + 0.5);
    const int64_t ul_x = trunc(mu_x - tmp_size), ul_y = trunc(mu_y - tmp_size);
    const int64_t br_x = trunc(mu_x + tmp_size + 1), br_y = trunc(mu_y + tmp_size + 1);
    if (ul_x >= W || ul_y >= H || br_x < 0 || br_y < 0) {
      if (weight) weight[j] = 0;
      continue;
    }
    if (weight) weight[j] = w;
    if (!target || !(w > 0.5f)) continue;
    float* t = target + plane * j;
    const int64_t y_end = std::min<int64_t>({br_y, H, ul_y + size});
    const int64_t x_end = std::min<int64_t>({br_x, W, ul_x + size});
    for (int64_t y = std::max<int64_t>(0, ul_y); y < y_end; ++y) {
      const int gy = static_cast<int>(y - ul_y) - g0;
      for (int64_t x = std::max<int64_t>(0, ul_x); x < x_end; ++x) {
        const int gx = static_cast<int>(x - ul_x) - g0;
        // float32 as numpy: exp(-(dx^2 + dy^2) / (2 sigma^2))
        t[y * W + x] = std::exp(-static_cast<float>(gx * gx + gy * gy) / denom);
      }
    }
  }
}

}  // namespace

Affine invert_affine(const Affine& M) {
  const double* m = M.m.data();
  double D = m[0] * m[4] - m[1] * m[3];
  D = D != 0 ? 1. / D : 0;
  Affine r;
  r.m[0] = m[4] * D;
  r.m[1] = -m[1] * D;
  r.m[3] = -m[3] * D;
  r.m[4] = m[0] * D;
  r.m[2] = -r.m[0] * m[2] - r.m[1] * m[5];
  r.m[5] = -r.m[3] * m[2] - r.m[4] * m[5];
  return r;
}

Affine get_affine_transform(const std::array<float, 2>& center, const std::array<float, 2>& scale,
                            float rot_deg, int out_w, int out_h, bool inverse) {
  Triangle src, dst;
  affine_points(center, scale, rot_deg, out_w, out_h, src, dst);
  return inverse ? solve_affine(dst, src) : solve_affine(src, dst);
}

void warp_affine(const Image& src, const Affine& M, int out_w, int out_h, uint8_t* dst) {
  warp_dispatch<false>(src, M, out_w, out_h, dst);
}

void warp_affine_mirrored(const Image& src, const Affine& M, int out_w, int out_h, uint8_t* dst) {
  warp_dispatch<true>(src, M, out_w, out_h, dst);
}

void box_to_center_scale(const std::array<float, 4>& box, float aspect_ratio,
                         std::array<float, 2>& center, std::array<float, 2>& scale, float padding) {
  HR_CHECK(aspect_ratio > 0, "[pose] box_to_center_scale: aspect ratio ", aspect_ratio);
  xywh_to_center_scale(box[0], box[1], box[2], box[3], aspect_ratio, padding, center, scale);
}

std::vector<PoseRecord> gt_records(const CocoKeypoints& coco, const std::string& image_dir,
                                   float aspect_ratio) {
  HR_CHECK(aspect_ratio > 0, "[pose] gt_records: aspect ratio ", aspect_ratio);
  // annotations per image in file order (pycocotools' imgToAnns), independent of index()
  std::unordered_map<int64_t, std::vector<size_t>> by_image;
  by_image.reserve(coco.images.size());
  for (size_t i = 0; i < coco.annotations.size(); ++i)
    by_image[coco.annotations[i].image_id].push_back(i);
  std::vector<PoseRecord> out;
  out.reserve(coco.annotations.size());
  for (const CocoImage& img : coco.images) {
    auto it = by_image.find(img.id);
    if (it == by_image.end()) continue;
    HR_CHECK(img.width > 0 && img.height > 0, "[pose] image ", img.id, " (", img.file_name,
             ") has size ", img.width, "x", img.height);
    for (size_t pos : it->second) {
      const CocoPersonAnn& a = coco.annotations[pos];
      if (a.iscrowd || a.category_id != 1) continue;  // getAnnIds(iscrowd=False), persons
      // the official box sanitising: clip to the image, keep boxes of positive area
      const double x = a.bbox[0], y = a.bbox[1], w = a.bbox[2], h = a.bbox[3];
      const double x1 = std::max(0.0, x), y1 = std::max(0.0, y);
      const double x2 = std::min(img.width - 1.0, x1 + std::max(0.0, w - 1));
      const double y2 = std::min(img.height - 1.0, y1 + std::max(0.0, h - 1));
      if (!(a.area > 0 && x2 >= x1 && y2 >= y1)) continue;
      if (*std::max_element(a.keypoints.begin(), a.keypoints.end()) == 0) continue;
      PoseRecord r;
      r.image_path = join_path(image_dir, img.file_name);
      r.image_id = img.id;
      r.ann_id = a.id;
      for (int j = 0; j < kNumJoints; ++j) {
        r.joints[3 * j] = a.keypoints[3 * j];
        r.joints[3 * j + 1] = a.keypoints[3 * j + 1];
        r.joints[3 * j + 2] = std::min(a.keypoints[3 * j + 2], 1.f);
      }
      xywh_to_center_scale(x1, y1, x2 - x1, y2 - y1, aspect_ratio, 1.25f, r.center, r.scale);
      out.push_back(std::move(r));
    }
  }
  return out;
}

std::vector<PoseRecord> detection_records(const std::vector<DetectionBox>& dets,
                                          const CocoKeypoints& coco, const std::string& image_dir,
                                          float aspect_ratio, float score_threshold) {
  HR_CHECK(aspect_ratio > 0, "[pose] detection_records: aspect ratio ", aspect_ratio);
  std::unordered_map<int64_t, const CocoImage*> images;
  images.reserve(coco.images.size());
  for (const CocoImage& img : coco.images) images.emplace(img.id, &img);
  std::vector<PoseRecord> out;
  out.reserve(dets.size());
  for (const DetectionBox& d : dets) {
    if (d.category_id != 1 || d.score < score_threshold) continue;
    auto it = images.find(d.image_id);
    if (it == images.end()) continue;
    PoseRecord r;
    r.image_path = join_path(image_dir, it->second->file_name);
    r.image_id = d.image_id;
    r.ann_id = -1;
    r.score = d.score;
    // no keypoints: joints (0,0) and not visible, so such a sample never carries a target
    // (the official code marks them visible, which makes its detection-box loss meaningless)
    xywh_to_center_scale(d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3], aspect_ratio, 1.25f, r.center,
                         r.scale);
    out.push_back(std::move(r));
  }
  return out;
}

bool half_body_center_scale(const float* joints_xyv, int num_joints, bool prefer_upper,
                            float aspect_ratio, std::array<float, 2>& center,
                            std::array<float, 2>& scale) {
  std::vector<int> upper, lower;
  for (int j = 0; j < num_joints; ++j) {
    if (!(joints_xyv[3 * j + 2] > 0)) continue;
    (j < kNumUpperBody ? upper : lower).push_back(j);
  }
  const std::vector<int>* sel;
  if (prefer_upper && upper.size() > 2)
    sel = &upper;
  else
    sel = lower.size() > 2 ? &lower : &upper;
  if (sel->size() < 2) return false;
  // float32 like the numpy array of the chosen joints: sequential sums, min and max
  float sx = 0, sy = 0;
  float lo_x = joints_xyv[3 * sel->front()], hi_x = lo_x;
  float lo_y = joints_xyv[3 * sel->front() + 1], hi_y = lo_y;
  for (int j : *sel) {
    const float x = joints_xyv[3 * j], y = joints_xyv[3 * j + 1];
    sx += x;
    sy += y;
    lo_x = std::min(lo_x, x);
    hi_x = std::max(hi_x, x);
    lo_y = std::min(lo_y, y);
    hi_y = std::max(hi_y, y);
  }
  const float n = static_cast<float>(sel->size());
  center = {sx / n, sy / n};
  double w = static_cast<float>(hi_x - lo_x), h = static_cast<float>(hi_y - lo_y);
  const double aspect = aspect_ratio;
  if (w > aspect * h)
    h = w * 1.0 / aspect;
  else if (w < aspect * h)
    w = h * aspect;
  scale = {static_cast<float>(w / kPixelStd) * 1.5f, static_cast<float>(h / kPixelStd) * 1.5f};
  return true;
}

CropMeta draw_augmentation(const PoseRecord& rec, int image_width, const AugmentParams& aug,
                           const TargetParams& tp, std::mt19937_64& rng) {
  CropMeta m;
  m.center = rec.center;
  m.scale = rec.scale;
  if (!aug.enabled) return m;
  int num_vis = 0;
  for (int j = 0; j < kNumJoints; ++j) num_vis += rec.joints[3 * j + 2] > 0;
  if (num_vis > aug.num_joints_half_body && uniform01(rng) < aug.half_body_prob) {
    const bool upper = standard_normal(rng) < 0.5;  // sic: randn, not rand, in the original
    std::array<float, 2> c, s;
    const float aspect = static_cast<float>(tp.image_w) / static_cast<float>(tp.image_h);
    if (half_body_center_scale(rec.joints.data(), kNumJoints, upper, aspect, c, s)) {
      m.center = c;
      m.scale = s;
    }
  }
  const double sf = aug.scale_factor, rf = aug.rot_factor;
  const float mult = static_cast<float>(std::clamp(standard_normal(rng) * sf + 1, 1 - sf, 1 + sf));
  m.scale[0] *= mult;
  m.scale[1] *= mult;
  if (uniform01(rng) <= aug.rot_prob)
    m.rotation = static_cast<float>(std::clamp(standard_normal(rng) * rf, -2 * rf, 2 * rf));
  if (aug.flip && uniform01(rng) <= 0.5) {
    m.flipped = true;
    m.center[0] = static_cast<float>(static_cast<double>(image_width) - m.center[0] - 1);
  }
  return m;
}

void render_sample(const Image& img, const PoseRecord& rec, const CropMeta& crop,
                   const TargetParams& tp, float* input, float* target, float* weight,
                   float* joints_out, uint8_t* raw_input) {
  const Affine trans =
      get_affine_transform(crop.center, crop.scale, crop.rotation, tp.image_w, tp.image_h);
  if (input || raw_input) {
    HR_CHECK(img.channels == 3, "[pose] render_sample: image has ", img.channels,
             " channels, expected RGB");
    thread_local std::vector<uint8_t> crop_px;
    uint8_t* px = raw_input;
    if (!px) {
      crop_px.resize(static_cast<size_t>(tp.image_w) * tp.image_h * 3);
      px = crop_px.data();
    }
    if (crop.flipped)
      warp_affine_mirrored(img, trans, tp.image_w, tp.image_h, px);
    else
      warp_affine(img, trans, tp.image_w, tp.image_h, px);
    if (input) normalize_input(px, tp.image_h, tp.image_w, input);
  }
  double joints[3 * kNumJoints];
  for (int j = 0; j < kNumJoints; ++j) {
    const float v = rec.joints[3 * j + 2];
    joints[3 * j] = rec.joints[3 * j];
    joints[3 * j + 1] = rec.joints[3 * j + 1];
    joints[3 * j + 2] = v > 0 ? std::min(v, 1.f) : 0.f;
  }
  if (crop.flipped) {  // fliplr_joints: mirror about the image width, swap pairs, zero invisible
    for (int j = 0; j < kNumJoints; ++j) joints[3 * j] = img.width - joints[3 * j] - 1;
    for (const auto& p : kFlipPairs)
      for (int k = 0; k < 3; ++k) std::swap(joints[3 * p[0] + k], joints[3 * p[1] + k]);
    for (int j = 0; j < kNumJoints; ++j) {
      joints[3 * j] *= joints[3 * j + 2];
      joints[3 * j + 1] *= joints[3 * j + 2];
    }
  }
  for (int j = 0; j < kNumJoints; ++j) {
    if (!(joints[3 * j + 2] > 0)) continue;
    double x, y;
    trans.apply(joints[3 * j], joints[3 * j + 1], x, y);
    joints[3 * j] = x;
    joints[3 * j + 1] = y;
  }
  if (target || weight) generate_target_impl(joints, kNumJoints, tp, target, weight);
  if (joints_out)
    for (int i = 0; i < 3 * kNumJoints; ++i) joints_out[i] = static_cast<float>(joints[i]);
}

void make_sample(const Image& img, const PoseRecord& rec, const AugmentParams& aug,
                 const TargetParams& tp, std::mt19937_64& rng, float* input, float* target,
                 float* weight, CropMeta* meta, uint8_t* raw_input) {
  const CropMeta crop = draw_augmentation(rec, img.width, aug, tp, rng);
  render_sample(img, rec, crop, tp, input, target, weight, nullptr, raw_input);
  if (meta) *meta = crop;
}

void generate_target(const float* joints_xyv, int num_joints, const TargetParams& tp, float* target,
                     float* weight) {
  std::vector<double> j(joints_xyv, joints_xyv + 3 * num_joints);
  generate_target_impl(j.data(), num_joints, tp, target, weight);
}

void decode_heatmaps(const float* heatmaps, int num_joints, int h, int w,
                     const std::array<float, 2>& center, const std::array<float, 2>& scale,
                     float* out_xyscore) {
  const Affine inv = get_affine_transform(center, scale, 0, w, h, /*inverse=*/true);
  const size_t plane = static_cast<size_t>(h) * w;
  for (int j = 0; j < num_joints; ++j) {
    const float* hm = heatmaps + plane * j;
    // np.argmax / np.amax: the first maximum; a NaN counts as the maximum
    size_t idx = 0;
    float maxv = hm[0];
    if (!std::isnan(maxv))
      for (size_t i = 1; i < plane; ++i) {
        if (std::isnan(hm[i])) {
          idx = i;
          maxv = hm[i];
          break;
        }
        if (hm[i] > maxv) {
          maxv = hm[i];
          idx = i;
        }
      }
    float px = 0, py = 0;
    if (maxv > 0) {
      px = static_cast<float>(idx % w);
      py = static_cast<float>(idx / w);
      const int ix = static_cast<int>(px), iy = static_cast<int>(py);
      if (1 < ix && ix < w - 1 && 1 < iy && iy < h - 1) {  // strict, as the original
        const float dx = hm[iy * w + ix + 1] - hm[iy * w + ix - 1];
        const float dy = hm[(iy + 1) * w + ix] - hm[(iy - 1) * w + ix];
        px += 0.25f * static_cast<float>((dx > 0) - (dx < 0));
        py += 0.25f * static_cast<float>((dy > 0) - (dy < 0));
      }
    }
    double x, y;
    inv.apply(px, py, x, y);
    out_xyscore[3 * j] = static_cast<float>(x);
    out_xyscore[3 * j + 1] = static_cast<float>(y);
    out_xyscore[3 * j + 2] = maxv;
  }
}

void flip_back_heatmaps(float* heatmaps, int num_joints, int h, int w, bool shift) {
  const size_t plane = static_cast<size_t>(h) * w;
  for (int j = 0; j < num_joints; ++j)
    for (int y = 0; y < h; ++y) {
      float* row = heatmaps + plane * j + static_cast<size_t>(y) * w;
      std::reverse(row, row + w);
      // SHIFT_HEATMAP: out[..., 1:] = out[..., :-1], column 0 kept
      if (shift && w > 1) std::memmove(row + 1, row, (w - 1) * sizeof(float));
    }
  for (const auto& p : kFlipPairs)
    if (p[0] < num_joints && p[1] < num_joints)
      std::swap_ranges(heatmaps + plane * p[0], heatmaps + plane * (p[0] + 1),
                       heatmaps + plane * p[1]);
}

void flip_input(const float* input, int channels, int h, int w, float* out) {
  for (int c = 0; c < channels; ++c)
    for (int y = 0; y < h; ++y) {
      const float* src = input + (static_cast<size_t>(c) * h + y) * w;
      float* dst = out + (static_cast<size_t>(c) * h + y) * w;
      for (int x = 0; x < w; ++x) dst[x] = src[w - 1 - x];
    }
}

// ---------------------------------------------------------------------------------------------
// PoseDataset
// ---------------------------------------------------------------------------------------------
PoseDataset::PoseDataset(std::vector<PoseRecord> records, PoseDatasetOptions opt)
    : records_(std::move(records)), opt_(opt) {
  const TargetParams& t = opt_.target;
  HR_CHECK(t.image_w > 0 && t.image_h > 0 && t.heatmap_w > 0 && t.heatmap_h > 0 && t.sigma > 0,
           "[pose] dataset: bad sizes (image ", t.image_w, "x", t.image_h, ", heatmap ",
           t.heatmap_w, "x", t.heatmap_h, ", sigma ", t.sigma, ")");
}

std::vector<Field> PoseDataset::fields() const {
  const TargetParams& t = opt_.target;
  return {{"input", {3, t.image_h, t.image_w}},
          {"target", {kNumJoints, t.heatmap_h, t.heatmap_w}},
          {"weight", {kNumJoints, 1}}};
}

void PoseDataset::load(size_t i, uint64_t seed, const std::vector<void*>& out) const {
  load_sample(i, seed, static_cast<float*>(out[0]), static_cast<float*>(out[1]),
              static_cast<float*>(out[2]), nullptr);
}

const float* PoseDataset::input_lut() const { return imagenet_input_lut(); }

void PoseDataset::load_raw(size_t i, uint64_t seed, const std::vector<void*>& out) const {
  load_sample(i, seed, nullptr, static_cast<float*>(out[1]), static_cast<float*>(out[2]), nullptr,
              static_cast<uint8_t*>(out[0]));
}

void PoseDataset::load_sample(size_t i, uint64_t seed, float* input, float* target, float* weight,
                              CropMeta* meta, uint8_t* raw_input) const {
  HR_CHECK(i < records_.size(), "[pose] dataset: index ", i, " out of range (", records_.size(),
           " records)");
  const PoseRecord& r = records_[i];
  const Image img = read_image(r.image_path);  // its errors name the file
  std::mt19937_64 rng(seed);
  try {
    make_sample(img, r, opt_.aug, opt_.target, rng, input, target, weight, meta, raw_input);
  } catch (const Error& e) {
    throw Error(str_cat(e.what(), " (", r.image_path, ", annotation ", r.ann_id, ")"));
  }
}

}  // namespace hr::data
