// Anti-aliased raster drawing. Every shape is a signed distance d (negative inside) evaluated at
// pixel centres; coverage = clamp(0.5 - d, 0, 1), a one-pixel ramp across the edge, which makes
// coverage sums equal the shape's area up to the curvature of its outline. Rectangles use the
// exact pixel overlap instead.
#include "data/draw.h"

#include <algorithm>
#include <cmath>

#include "data/coco.h"

namespace hr::data {

namespace {

inline float ramp(float d) { return std::clamp(0.5f - d, 0.f, 1.f); }

// Blends colour c with weight alpha * coverage(x, y) over every pixel of the (clipped) box.
template <class Coverage>
void raster(Image& img, float bx0, float by0, float bx1, float by1, RGB c, float alpha,
            Coverage&& coverage) {
  alpha = std::min(alpha, 1.f);
  if (img.empty() || !(alpha > 0.f)) return;
  if (!(bx0 <= bx1 && by0 <= by1)) return;  // also rejects NaN
  // clipped to the image in float before any conversion to int: a box at 1e30 or +-inf (float
  // to int out of range is undefined) is off the image or covers it, never a wild pixel range
  const float fw = float(img.width - 1), fh = float(img.height - 1);
  if (bx1 < 0.f || by1 < 0.f || bx0 > fw || by0 > fh) return;
  const int x0 = int(std::clamp(std::floor(bx0), 0.f, fw));
  const int y0 = int(std::clamp(std::floor(by0), 0.f, fh));
  const int x1 = int(std::clamp(std::ceil(bx1), 0.f, fw));
  const int y1 = int(std::clamp(std::ceil(by1), 0.f, fh));
  const int ch = img.channels;
  for (int y = y0; y <= y1; ++y) {
    uint8_t* row = img.row(y);
    for (int x = x0; x <= x1; ++x) {
      const float cov = coverage(float(x), float(y));
      if (!(cov > 0.f)) continue;  // NaN too (distances from coordinates near float's limit)
      const float a = alpha * std::min(cov, 1.f);
      uint8_t* p = row + size_t(x) * ch;
      const int colour_ch = ch == 4 ? 3 : std::min(ch, 3);
      for (int k = 0; k < colour_ch; ++k) {
        const float v = p[k] + (float(c[k]) - p[k]) * a;
        p[k] = uint8_t(v + 0.5f);
      }
      if (ch == 4) p[3] = uint8_t(p[3] + (255.f - p[3]) * a + 0.5f);
    }
  }
}

// Plain sqrt(x² + y²): std::hypot's overflow care costs more than all the rest here, and
// coordinates are pixels.
inline float len(float x, float y) { return std::sqrt(x * x + y * y); }

// Squared distance from (px, py) to the segment (ax, ay)-(bx, by).
inline float segment_distance2(float px, float py, float ax, float ay, float bx, float by) {
  const float dx = bx - ax, dy = by - ay, qx = px - ax, qy = py - ay;
  const float len2 = dx * dx + dy * dy;
  const float t = len2 > 0.f ? std::clamp((qx * dx + qy * dy) / len2, 0.f, 1.f) : 0.f;
  const float ex = qx - t * dx, ey = qy - t * dy;
  return ex * ex + ey * ey;
}

}  // namespace

void fill_circle(Image& img, float cx, float cy, float r, RGB c, float alpha) {
  if (!(r > 0.f)) return;
  raster(img, cx - r - 1, cy - r - 1, cx + r + 1, cy + r + 1, c, alpha,
         [&](float x, float y) { return ramp(len(x - cx, y - cy) - r); });
}

void fill_ellipse(Image& img, float cx, float cy, float rx, float ry, float angle_rad, RGB c,
                  float alpha) {
  if (!(rx > 0.f && ry > 0.f)) return;
  const float cs = std::cos(angle_rad), sn = std::sin(angle_rad);
  // half extents of the rotated ellipse's bounding box
  const float hx = std::sqrt(rx * rx * cs * cs + ry * ry * sn * sn);
  const float hy = std::sqrt(rx * rx * sn * sn + ry * ry * cs * cs);
  const float irx2 = 1.f / (rx * rx), iry2 = 1.f / (ry * ry), rmin = std::min(rx, ry);
  raster(img, cx - hx - 1, cy - hy - 1, cx + hx + 1, cy + hy + 1, c, alpha, [&](float x, float y) {
    const float u = (x - cx) * cs + (y - cy) * sn, v = -(x - cx) * sn + (y - cy) * cs;
    const float k = std::sqrt(u * u * irx2 + v * v * iry2);
    const float g = len(u * irx2, v * iry2);  // |grad k| * k
    // first-order distance to the outline, (k - 1) / |grad k|: exact on the axes, close near it
    const float d = g > 0.f ? k * (k - 1.f) / g : -rmin;
    return ramp(std::max(d, -rmin));
  });
}

// Clips the segment to the box [lo, hi]^2 (Liang-Barsky, in double): false when it misses the
// box or has a non-finite end. A segment from far outside the image (1e30) keeps only its part
// near the image, so the distances below stay small and exact.
bool clip_segment(float& x0, float& y0, float& x1, float& y1, double xlo, double ylo, double xhi,
                  double yhi) {
  if (!(std::isfinite(x0) && std::isfinite(y0) && std::isfinite(x1) && std::isfinite(y1)))
    return false;
  const double dx = double(x1) - x0, dy = double(y1) - y0;
  double t0 = 0, t1 = 1;
  const double p[4] = {-dx, dx, -dy, dy};
  const double q[4] = {x0 - xlo, xhi - x0, y0 - ylo, yhi - y0};
  for (int k = 0; k < 4; ++k) {
    if (p[k] == 0) {
      if (q[k] < 0) return false;
      continue;
    }
    const double t = q[k] / p[k];
    if (p[k] < 0)
      t0 = std::max(t0, t);
    else
      t1 = std::min(t1, t);
    if (t0 > t1) return false;
  }
  const double ox = x0, oy = y0;
  x0 = float(ox + t0 * dx);
  y0 = float(oy + t0 * dy);
  x1 = float(ox + t1 * dx);
  y1 = float(oy + t1 * dy);
  return true;
}

void draw_line(Image& img, float x0, float y0, float x1, float y1, float width, RGB c,
               float alpha) {
  if (!(width > 0.f) || img.empty()) return;
  const float r = 0.5f * width;
  const double m = double(r) + 2;
  if (!clip_segment(x0, y0, x1, y1, -m, -m, img.width - 1 + m, img.height - 1 + m)) return;
  raster(img, std::min(x0, x1) - r - 1, std::min(y0, y1) - r - 1, std::max(x0, x1) + r + 1,
         std::max(y0, y1) + r + 1, c, alpha,
         [&](float x, float y) { return ramp(std::sqrt(segment_distance2(x, y, x0, y0, x1, y1)) - r); });
}

void draw_tapered(Image& img, float x0, float y0, float r0, float x1, float y1, float r1, RGB c,
                  float alpha) {
  r0 = std::max(r0, 0.f);
  r1 = std::max(r1, 0.f);
  if (!(r0 > 0.f || r1 > 0.f)) return;
  const float length = len(x1 - x0, y1 - y0);
  // one disc inside the other: the hull is the bigger disc
  if (length <= std::abs(r0 - r1)) {
    if (r0 >= r1)
      fill_circle(img, x0, y0, r0, c, alpha);
    else
      fill_circle(img, x1, y1, r1, c, alpha);
    return;
  }
  const float dx = (x1 - x0) / length, dy = (y1 - y0) / length;
  // In the frame (t along the axis, s off it), the side line's outward normal is (k, m): the
  // tangent points a + r0 n and b + r1 n differ along the axis by r0 - r1 = length * k.
  const float k = (r0 - r1) / length, m = std::sqrt(1.f - k * k);
  const float lm = length * m;
  raster(img, std::min(x0 - r0, x1 - r1) - 1, std::min(y0 - r0, y1 - r1) - 1,
         std::max(x0 + r0, x1 + r1) + 1, std::max(y0 + r0, y1 + r1) + 1, c, alpha,
         [&](float x, float y) {
           const float qx = x - x0, qy = y - y0;
           const float t = qx * dx + qy * dy, s = std::abs(-qx * dy + qy * dx);
           const float q = t * m - s * k;  // position along the side line, 0 at a's tangent point
           float d;
           if (q < 0.f)
             d = len(t, s) - r0;
           else if (q > lm)
             d = len(t - length, s) - r1;
           else
             d = t * k + s * m - r0;
           return ramp(d);
         });
}

void fill_polygon(Image& img, const std::vector<float>& xy, RGB c, float alpha) {
  const size_t n = xy.size() / 2;
  if (n < 3) return;
  float bx0 = xy[0], by0 = xy[1], bx1 = xy[0], by1 = xy[1];
  for (size_t i = 1; i < n; ++i) {
    bx0 = std::min(bx0, xy[2 * i]);
    bx1 = std::max(bx1, xy[2 * i]);
    by0 = std::min(by0, xy[2 * i + 1]);
    by1 = std::max(by1, xy[2 * i + 1]);
  }
  raster(img, bx0 - 1, by0 - 1, bx1 + 1, by1 + 1, c, alpha, [&](float x, float y) {
    float d2 = 1e30f;
    bool inside = false;
    for (size_t i = 0, j = n - 1; i < n; j = i++) {
      const float ax = xy[2 * j], ay = xy[2 * j + 1], bx = xy[2 * i], by = xy[2 * i + 1];
      d2 = std::min(d2, segment_distance2(x, y, ax, ay, bx, by));
      if ((ay > y) != (by > y) && x < ax + (y - ay) * (bx - ax) / (by - ay)) inside = !inside;
    }
    const float d = std::sqrt(d2);
    return ramp(inside ? -d : d);
  });
}

void fill_rect(Image& img, float x0, float y0, float x1, float y1, RGB c, float alpha) {
  if (x0 > x1) std::swap(x0, x1);
  if (y0 > y1) std::swap(y0, y1);
  // exact overlap of pixel (x, y)'s unit square with the rectangle
  raster(img, x0 - 1, y0 - 1, x1 + 1, y1 + 1, c, alpha, [&](float x, float y) {
    const float ox = std::min(x + 0.5f, x1) - std::max(x - 0.5f, x0);
    const float oy = std::min(y + 0.5f, y1) - std::max(y - 0.5f, y0);
    return ox > 0.f && oy > 0.f ? ox * oy : 0.f;
  });
}

void draw_skeleton(Image& img, const float* keypoints, int num_joints, float threshold,
                   float line_width) {
  const auto& pairs = coco_skeleton();
  auto hue = [](float h) -> RGB {  // fully saturated colour of hue h in [0, 1)
    auto ch = [&](float off) {
      const float t = std::abs(std::fmod(h * 6.f + off, 6.f) - 3.f) - 1.f;
      return uint8_t(std::clamp(t, 0.f, 1.f) * 255.f + 0.5f);
    };
    return {ch(0.f), ch(4.f), ch(2.f)};
  };
  auto shown = [&](int j) { return j >= 0 && j < num_joints && keypoints[3 * j + 2] > threshold; };
  for (size_t i = 0; i < pairs.size(); ++i) {
    const int a = pairs[i][0] - 1, b = pairs[i][1] - 1;
    if (!shown(a) || !shown(b)) continue;
    draw_line(img, keypoints[3 * a], keypoints[3 * a + 1], keypoints[3 * b],
              keypoints[3 * b + 1], line_width, hue(float(i) / float(pairs.size())), 0.9f);
  }
  const float r = std::max(1.5f, 0.9f * line_width);
  for (int j = 0; j < num_joints; ++j) {
    if (!shown(j)) continue;
    fill_circle(img, keypoints[3 * j], keypoints[3 * j + 1], r + 1.f, {0, 0, 0});
    fill_circle(img, keypoints[3 * j], keypoints[3 * j + 1], r,
                hue(float(j) / float(std::max(num_joints, 1)) + 0.05f));
  }
}

}  // namespace hr::data
