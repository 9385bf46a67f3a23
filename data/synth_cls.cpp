// The synthetic classification dataset. A shape is a signed distance function in its own frame
// (circumscribed by the unit circle, y down): a polygon, a disc, a disc less another disc, or a
// heart.
// Scaled, stretched, rotated and placed in the image, it is rasterised as coverage = clamp(0.5 -
// d, 0, 1) at pixel centres (data/draw.cpp's anti-aliasing) and blended over the background.
// Two generators per image: `look` draws everything a class must not influence (size,
// background, clutter, placement, colours, noise), always in the same order; `form` draws the
// class's own proportions (a star's inner radius, a ring's hole, ...).
#include "data/synth_cls.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "data/draw.h"
#include "data/synth_common.h"
#include "engine/error.h"
#include "engine/file_util.h"

namespace hr::data {

namespace {

using namespace synth;  // Rng, colours, noise

enum Class { kArrow, kCircle, kCrescent, kCross, kDiamond, kHeart, kRing, kSquare, kStar,
             kTriangle, kNumClasses };
const char* const kClassNames[kNumClasses] = {"arrow", "circle", "crescent", "cross", "diamond",
                                              "heart", "ring",   "square",   "star",  "triangle"};

constexpr float kMinSize = 0.25f, kMaxSize = 0.9f;  // shape diameter / shorter side
// Shapes are turned by at most this (degrees) from upright, as photographed objects mostly are:
// a small CNN learns upright classes from a few thousand images, arbitrary turns need many more.
constexpr float kMaxTilt = 30.f;
constexpr int kMaxSide = 4096;
constexpr uint64_t kFormStream = 0x5DEECE66D9E3779Bull;  // seeds `form` apart from `look`

struct V2 {
  float x = 0, y = 0;
};

// ---------------------------------------------------------------------------------------------
// Shapes in their own frame.

// Quilez's exact heart: tip at the origin, lobes up (+y) around (+-0.25, 0.75), 1.1 tall.
float heart_sdf(float x, float y) {
  x = std::abs(x);
  if (x + y > 1.f)
    return std::sqrt((x - 0.25f) * (x - 0.25f) + (y - 0.75f) * (y - 0.75f)) - 0.35355339f;
  const float t = 0.5f * std::max(x + y, 0.f);
  const float d2 = std::min(x * x + (y - 1.f) * (y - 1.f), (x - t) * (x - t) + (y - t) * (y - t));
  return std::sqrt(d2) * (x > y ? 1.f : x < y ? -1.f : 0.f);
}

struct Geometry {
  std::vector<V2> poly;  // a polygon, or empty: a disc of radius 1 at the origin ...
  float hole_r = 0;      // ... less the disc of radius hole_r at (hole_x, 0) if hole_r > 0
  float hole_x = 0;
  bool heart = false;  // or a heart, tip down

  // Signed distance (negative inside), in the frame's units.
  float sdf(V2 p) const {
    if (heart) {  // scaled by 0.64 and centred, its lobes and tip touch the unit circle
      constexpr float k = 0.64f;
      return heart_sdf(p.x * k, 0.55f - p.y * k) / k;
    }
    if (poly.empty()) {
      const float d = std::sqrt(p.x * p.x + p.y * p.y) - 1.f;
      if (hole_r <= 0.f) return d;
      const float hx = p.x - hole_x;
      return std::max(d, hole_r - std::sqrt(hx * hx + p.y * p.y));
    }
    // distance to the nearest edge, the sign by crossings (Quilez's polygon SDF)
    const size_t n = poly.size();
    float d2 = 1e30f, sign = 1.f;
    for (size_t i = 0, j = n - 1; i < n; j = i++) {
      const V2 a = poly[i], b = poly[j];
      const float ex = b.x - a.x, ey = b.y - a.y, wx = p.x - a.x, wy = p.y - a.y;
      const float t = std::clamp((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.f, 1.f);
      const float bx = wx - ex * t, by = wy - ey * t;
      d2 = std::min(d2, bx * bx + by * by);
      const bool c0 = p.y >= a.y, c1 = p.y < b.y, c2 = ex * wy > ey * wx;
      if ((c0 && c1 && c2) || (!c0 && !c1 && !c2)) sign = -sign;
    }
    return sign * std::sqrt(d2);
  }
};

std::vector<V2> regular(int n, float r, float phase) {
  std::vector<V2> v;
  for (int i = 0; i < n; ++i) {
    const float a = phase + 2.f * kPi * float(i) / float(n);
    v.push_back({r * std::cos(a), r * std::sin(a)});
  }
  return v;
}

// The class's outline with its own proportions; every shape reaches (about) the unit circle, so
// the drawn size means the same for all.
Geometry make_geometry(int label, Rng& form) {
  Geometry g;
  switch (label) {
    case kArrow: {  // shaft and head along +x
      const float t = form.uni(0.13f, 0.2f), h = form.uni(0.42f, 0.58f);
      const float base = form.uni(0.1f, 0.3f);
      g.poly = {{-0.98f, -t}, {base, -t}, {base, -h}, {1.f, 0.f},
                {base, h},    {base, t},  {-0.98f, t}};
      break;
    }
    case kCircle: break;
    case kCrescent:  // open toward +x, at least 0.4 thick at its middle
      g.hole_r = form.uni(0.72f, 0.88f);
      g.hole_x = form.uni(1.15f, 1.3f) - g.hole_r + form.uni(0.f, 0.12f);
      break;
    case kCross: {  // a plus with square ends
      const float w = form.uni(0.2f, 0.3f), l = std::sqrt(1.f - w * w);
      g.poly = {{w, -l}, {w, -w}, {l, -w}, {l, w}, {w, w}, {w, l},
                {-w, l}, {-w, w}, {-l, w}, {-l, -w}, {-w, -w}, {-w, -l}};
      break;
    }
    case kDiamond: {  // a rhombus 1.6-2.1 times as tall as wide: never a square
      const float w = 1.f / form.uni(1.6f, 2.1f);
      g.poly = {{0.f, -1.f}, {w, 0.f}, {0.f, 1.f}, {-w, 0.f}};
      break;
    }
    case kHeart: g.heart = true; break;
    case kRing: g.hole_r = form.uni(0.45f, 0.65f); break;
    case kSquare: g.poly = regular(4, 1.f, kPi / 4); break;
    case kStar: {
      const float inner = form.uni(0.36f, 0.46f);
      for (int i = 0; i < 10; ++i) {
        const float a = -kPi / 2 + kPi * float(i) / 5.f, r = i % 2 ? inner : 1.f;
        g.poly.push_back({r * std::cos(a), r * std::sin(a)});
      }
      break;
    }
    case kTriangle:  // equilateral, each corner moved a little
      g.poly = regular(3, 1.f, -kPi / 2);
      for (V2& v : g.poly) v = {v.x + form.uni(-0.07f, 0.07f), v.y + form.uni(-0.07f, 0.07f)};
      break;
    default: HR_CHECK(false, "synthetic classification: no class ", label);
  }
  return g;
}

// A geometry mapped to the image: p = centre + R(angle) (scale * (mirror * sx, sy) * q).
struct Placement {
  float cx = 0, cy = 0, scale = 1, sx = 1, sy = 1, angle = 0, mirror = 1;
};

// Coverage of every pixel of the image (W * H), 0 outside the shape; `inset` > 0 pixels shrinks
// the shape by that distance from its outline.
void rasterise(const Geometry& g, const Placement& pl, int W, int H, std::vector<float>& cov,
               float inset = 0.f) {
  cov.assign(size_t(W) * H, 0.f);
  const float ca = std::cos(pl.angle), sa = std::sin(pl.angle);
  const float kx = 1.f / (pl.scale * pl.sx), ky = 1.f / (pl.scale * pl.sy);
  const float to_px = pl.scale * std::sqrt(pl.sx * pl.sy);  // frame units -> pixels
  const float r = pl.scale * std::max(pl.sx, pl.sy) * 1.05f + 1.f;
  const int x0 = std::max(0, int(std::floor(pl.cx - r)));
  const int x1 = std::min(W - 1, int(std::ceil(pl.cx + r)));
  const int y0 = std::max(0, int(std::floor(pl.cy - r)));
  const int y1 = std::min(H - 1, int(std::ceil(pl.cy + r)));
  for (int y = y0; y <= y1; ++y)
    for (int x = x0; x <= x1; ++x) {
      const float dx = float(x) - pl.cx, dy = float(y) - pl.cy;
      const V2 q{(dx * ca + dy * sa) * kx * pl.mirror, (-dx * sa + dy * ca) * ky};
      cov[size_t(y) * W + x] = std::clamp(0.5f - g.sdf(q) * to_px - inset, 0.f, 1.f);
    }
}

// ---------------------------------------------------------------------------------------------
// Background: a gradient, textures, clutter. Nothing in it is a filled shape: textures are
// stripes, bands and noise, clutter is thin strokes and specks.

float luma(const float* c) { return 0.299f * c[0] + 0.587f * c[1] + 0.114f * c[2]; }

void render_background(Image& img, Rng& look) {
  const int W = img.width, H = img.height;
  std::vector<float> f(size_t(W) * H * 3);
  const RGB c0 = random_colour(look), c1 = random_colour(look);
  const bool radial = look.chance(0.3f);
  const float ga = look.uni(0, 2 * kPi), gc = std::cos(ga), gs = std::sin(ga);
  const float rx = look.uni(0.f, float(W)), ry = look.uni(0.f, float(H));
  const float diag = std::hypot(float(W), float(H));
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const float t =
          radial ? std::min(std::hypot(x - rx, y - ry) / (0.8f * diag), 1.f)
                 : std::clamp(((x - W * 0.5f) * gc + (y - H * 0.5f) * gs) / diag + 0.5f, 0.f, 1.f);
      float* p = &f[(size_t(y) * W + x) * 3];
      for (int k = 0; k < 3; ++k) p[k] = c0[k] + (c1[k] - c0[k]) * t;
    }
  const int layers = look.range(0, 2);
  for (int l = 0; l < layers; ++l) {
    const int kind = look.range(0, 3);
    if (kind <= 1) {  // straight or wavy stripes, soft or hard
      const RGB c = random_colour(look);
      const float alpha = look.uni(0.1f, 0.45f), period = look.uni(5.f, 30.f);
      const float ang = look.uni(0, kPi), ca = std::cos(ang), sa = std::sin(ang);
      const float wave = kind == 1 ? look.uni(0.2f, 0.8f) : 0.f, wave_len = look.uni(20.f, 80.f);
      const bool soft = look.chance(0.5f);
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
          const float v = -x * sa + y * ca;
          const float u = (x * ca + y * sa) / period + wave * std::sin(2 * kPi * v / wave_len);
          const float w = soft ? 0.5f + 0.5f * std::sin(2 * kPi * u)
                               : std::clamp((std::abs(u - std::floor(u) - 0.5f) - 0.25f) * period +
                                                0.5f, 0.f, 1.f);
          float* p = &f[(size_t(y) * W + x) * 3];
          for (int k = 0; k < 3; ++k) p[k] += (c[k] - p[k]) * alpha * w;
        }
    } else {  // value noise: coarse blotches (kind 2) or fine grain (kind 3), bilinear
      const float cell = kind == 2 ? look.uni(8.f, 48.f) : look.uni(1.5f, 4.f);
      const float amp = kind == 2 ? look.uni(15.f, 60.f) : look.uni(8.f, 30.f);
      const bool mono = look.chance(0.5f);
      add_value_noise(f, W, H, cell, amp, mono, look);
    }
  }
  for (size_t i = 0; i < f.size(); ++i) img.pixels[i] = u8(f[i]);
}

// A thin meandering stroke (a few capsules, at most 2.5 px wide): clutter no class looks like.
void draw_stroke(Image& img, Rng& look) {
  const float m = float(std::min(img.width, img.height));
  float x = look.uni(0.f, float(img.width)), y = look.uni(0.f, float(img.height));
  float heading = look.uni(0.f, 2 * kPi);
  const float width = look.uni(0.8f, 2.5f), alpha = look.uni(0.5f, 1.f);
  const RGB c = random_colour(look);
  const int n = look.range(2, 6);
  for (int i = 0; i < n; ++i) {
    const float len = look.uni(0.08f, 0.3f) * m;
    const float nx = x + len * std::cos(heading), ny = y + len * std::sin(heading);
    draw_line(img, x, y, nx, ny, width, c, alpha);
    x = nx, y = ny;
    heading += look.deg(-45, 45);
  }
}

void draw_clutter(Image& img, Rng& look) {
  const int strokes = look.range(0, 5);
  for (int i = 0; i < strokes; ++i) draw_stroke(img, look);
  const int specks = look.chance(0.5f) ? look.range(1, 30) : 0;
  for (int i = 0; i < specks; ++i) {
    const float x = look.uni(0.f, float(img.width)), y = look.uni(0.f, float(img.height));
    fill_circle(img, x, y, look.uni(0.5f, 1.6f), random_colour(look), look.uni(0.5f, 1.f));
  }
}

// ---------------------------------------------------------------------------------------------
// The shape's place and paint.

// The image's size: the longer side in [min_side, max_side], the aspect ratio of a photograph
// (1 to 3:2, log-uniform), landscape three times in five.
std::array<int, 2> image_size(Rng& look, int min_side, int max_side) {
  const int long_side = look.range(min_side, max_side);
  const float aspect = std::exp(look.uni(0.f, std::log(1.5f)));
  const int short_side = std::max(min_side, int(std::lround(float(long_side) / aspect)));
  return look.chance(0.6f) ? std::array<int, 2>{long_side, short_side}
                           : std::array<int, 2>{short_side, long_side};
}

// Size, stretch, rotation and position. The shape's circumscribed circle lies in the central
// square of the image (its side the shorter side) less a margin of 4% of the side, where an
// evaluation's centre crop (87.5%) keeps nearly all of it. One time in seven it leaves the frame
// across the shorter side instead, by 10-35% of its radius (at most ~12% of a disc is cut).
Placement place(Rng& look, int W, int H) {
  Placement pl;
  const float side = float(std::min(W, H)), margin = 0.04f * side;
  pl.scale = 0.5f * look.uni(kMinSize, kMaxSize) * side;
  const float u = look.uni(-0.07f, 0.07f);  // aspect up to 1.15 (a diamond stays far from square)
  pl.sx = std::exp(u);
  pl.sy = std::exp(-u);
  pl.angle = look.deg(-kMaxTilt, kMaxTilt);
  pl.mirror = look.chance(0.5f) ? -1.f : 1.f;
  const float r = pl.scale;  // circumscribed radius, stretch aside
  // across the shorter side (a), along the longer (b), in the central square's coordinates
  const float lo = std::min(r + margin, 0.5f * side), hi = std::max(side - r - margin, 0.5f * side);
  float a = look.uni(lo, hi), b = look.uni(lo, hi);
  const bool cut = look.chance(1.f / 7.f), low = look.chance(0.5f);
  const float out = look.uni(0.1f, 0.35f) * r;
  if (cut) a = low ? r - out : side - r + out;
  const bool wide = W >= H;
  const float b_off = 0.5f * (float(std::max(W, H)) - side);
  pl.cx = (wide ? b + b_off : a) - 0.5f;  // pixel centres: the image spans [-0.5, W - 0.5]
  pl.cy = (wide ? a : b + b_off) - 0.5f;
  return pl;
}

RGB mix(RGB a, RGB b, float t) {
  return {u8(a[0] + (b[0] - a[0]) * t), u8(a[1] + (b[1] - a[1]) * t), u8(a[2] + (b[2] - a[2]) * t)};
}

// A fill colour that stands out from `bg` in brightness and in colour, as far as a few tries
// find one.
RGB contrasting_colour(Rng& look, const float* bg) {
  RGB best{};
  float best_score = -1.f;
  for (int t = 0; t < 24; ++t) {
    const RGB c = random_colour(look);
    const float cf[3] = {float(c[0]), float(c[1]), float(c[2])};
    float d2 = 0.f;
    for (int k = 0; k < 3; ++k) d2 += (cf[k] - bg[k]) * (cf[k] - bg[k]);
    const float dist = std::sqrt(d2);
    const float score = std::min(std::abs(luma(cf) - luma(bg)) / 70.f, dist / 120.f);
    if (score > best_score) best = c, best_score = score;
    if (score >= 1.f) break;
  }
  return best;
}

void blend(uint8_t* p, const RGB& c, float a) {
  for (int k = 0; k < 3; ++k) p[k] = uint8_t(p[k] + (float(c[k]) - p[k]) * a + 0.5f);
}

}  // namespace

std::vector<std::string> synthetic_class_names() {
  return std::vector<std::string>(kClassNames, kClassNames + kNumClasses);
}

SynthClsImage render_synthetic_class_image(int label, uint64_t seed, int min_side, int max_side) {
  HR_CHECK(label >= 0 && label < kNumClasses, "synthetic classification: label ", label,
           " outside 0..", kNumClasses - 1);
  HR_CHECK(min_side >= 32 && min_side <= max_side && max_side <= kMaxSide,
           "synthetic classification: image sides must satisfy 32 <= min <= max <= ", kMaxSide,
           ", got ", min_side, "..", max_side);
  Rng look(seed), form(seed ^ kFormStream);
  const auto [W, H] = image_size(look, min_side, max_side);
  SynthClsImage out;
  out.image = Image(W, H, 3);
  Image& img = out.image;
  render_background(img, look);
  draw_clutter(img, look);

  const Geometry g = make_geometry(label, form);
  const Placement pl = place(look, W, H);
  // what the shape's colour must stand out from: the background around its centre (the same
  // region for every class)
  float bg[3] = {0, 0, 0};
  {
    const int r = std::max(2, int(pl.scale * 0.8f));
    int n = 0;
    for (int y = std::max(0, int(pl.cy) - r); y <= std::min(H - 1, int(pl.cy) + r); ++y)
      for (int x = std::max(0, int(pl.cx) - r); x <= std::min(W - 1, int(pl.cx) + r); ++x, ++n)
        for (int k = 0; k < 3; ++k) bg[k] += img.row(y)[3 * x + k];
    for (float& v : bg) v /= float(std::max(n, 1));
  }
  const RGB fill = contrasting_colour(look, bg);
  // fill: plain, a gradient to a second shade, or stripes of it
  const int style = look.chance(0.5f) ? 0 : look.chance(0.6f) ? 1 : 2;
  const RGB second = look.chance(0.5f) ? shade(fill, look.uni(0.55f, 0.8f))
                                       : mix(fill, RGB{255, 255, 255}, look.uni(0.25f, 0.5f));
  const float fa = look.uni(0, 2 * kPi), fc = std::cos(fa), fs = std::sin(fa);
  const float period = look.uni(3.f, 9.f);
  const bool rim = look.chance(0.25f);
  const float rim_w = std::min(look.uni(1.f, 2.5f), 0.1f * pl.scale);  // thin parts stay filled
  const RGB rim_c = look.chance(0.5f) ? shade(fill, 0.4f) : mix(fill, RGB{255, 255, 255}, 0.6f);
  const bool shadow = look.chance(0.15f);
  const float sdx = look.uni(-5.f, 5.f), sdy = look.uni(1.5f, 5.f), s_alpha = look.uni(0.3f, 0.55f);

  std::vector<float> cov, fill_cov;
  if (shadow) {
    Placement sp = pl;
    sp.cx += sdx;
    sp.cy += sdy;
    rasterise(g, sp, W, H, cov);
    for (size_t i = 0; i < cov.size(); ++i)
      if (cov[i] > 0.f) blend(&img.pixels[3 * i], RGB{0, 0, 0}, s_alpha * cov[i]);
  }
  rasterise(g, pl, W, H, cov);
  if (rim) {  // a band rim_w pixels wide inside the outline, then the fill inside it
    rasterise(g, pl, W, H, fill_cov, rim_w);
    for (size_t i = 0; i < cov.size(); ++i)
      if (cov[i] > 0.f) blend(&img.pixels[3 * i], rim_c, std::max(0.f, cov[i] - fill_cov[i]));
  }
  const std::vector<float>& paint_cov = rim ? fill_cov : cov;
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const size_t i = size_t(y) * W + x;
      if (paint_cov[i] <= 0.f) continue;
      RGB c = fill;
      const float t = (x - pl.cx) * fc + (y - pl.cy) * fs;
      if (style == 1) c = mix(fill, second, std::clamp(0.5f + 0.5f * t / pl.scale, 0.f, 1.f));
      if (style == 2) {  // anti-aliased stripes
        const float u = t / period;
        c = mix(fill, second,
                std::clamp((std::abs(u - std::floor(u) - 0.5f) - 0.25f) * period + 0.5f, 0.f, 1.f));
      }
      blend(&img.pixels[3 * i], c, paint_cov[i]);
    }
  out.mask.resize(cov.size());
  for (size_t i = 0; i < cov.size(); ++i) out.mask[i] = u8(cov[i] * 255.f);

  if (look.chance(0.2f)) {  // strokes across the shape too
    const int n = look.range(1, 2);
    for (int i = 0; i < n; ++i) draw_stroke(img, look);
  }
  if (look.chance(0.7f)) add_noise(img, look, look.uni(1.f, 6.f));
  return out;
}

uint64_t synthetic_class_image_seed(uint64_t seed, int split, int label, int64_t index) {
  uint64_t x = seed ^ 0xC1A55E5ull;
  uint64_t y = splitmix64(x) + (uint64_t(split) << 56) + (uint64_t(label) << 40) + uint64_t(index);
  return splitmix64(y);
}

void generate_synthetic_classification(const std::string& out_dir, const SynthClsOptions& opt,
                                       bool progress) {
  namespace fs = std::filesystem;
  HR_CHECK(opt.train_per_class >= 1 && opt.val_per_class >= 1,
           "synthetic classification: need at least one train and one val image per class, got ",
           opt.train_per_class, " and ", opt.val_per_class);
  HR_CHECK(opt.train_per_class <= 10000000 && opt.val_per_class <= 10000000,
           "synthetic classification: at most 10000000 images per class and split");
  HR_CHECK(opt.min_side >= 32 && opt.min_side <= opt.max_side && opt.max_side <= kMaxSide,
           "synthetic classification: image sides must satisfy 32 <= min <= max <= ", kMaxSide,
           ", got ", opt.min_side, "..", opt.max_side);
  HR_CHECK(opt.jpeg_quality >= 1 && opt.jpeg_quality <= 100,
           "synthetic classification: JPEG quality ", opt.jpeg_quality, " outside 1..100");
  HR_CHECK(opt.threads >= 0, "synthetic classification: threads must be >= 0, got ", opt.threads);

  const std::string splits[2] = {"train", "val"};
  const int per_class[2] = {opt.train_per_class, opt.val_per_class};
  const fs::path root(out_dir), marker = root / "classes.txt";
  {
    std::error_code ec;
    fs::create_directories(root, ec);
    if (ec) throw Error(str_cat("cannot create directory ", out_dir, ": ", ec.message()));
    // an earlier set's marker would make a failed run look complete
    fs::remove(marker, ec);
    if (ec) throw Error(str_cat("cannot remove ", marker.string(), ": ", ec.message()));
  }
  const std::vector<std::string> names = synthetic_class_names();
  for (int s = 0; s < 2; ++s) {
    const fs::path split_dir = root / splits[s];
    std::error_code ec;
    if (fs::is_directory(split_dir, ec)) {
      // a foreign class folder would become an eleventh class
      for (const auto& e : fs::directory_iterator(split_dir, ec))
        if (e.is_directory() && std::find(names.begin(), names.end(),
                                          e.path().filename().string()) == names.end())
          throw Error(str_cat("synthetic classification: ", e.path().string(),
                              " is not a synthetic class folder (use an empty directory)"));
      if (ec) throw Error(str_cat("cannot list ", split_dir.string(), ": ", ec.message()));
    }
    for (const std::string& name : names) {
      const fs::path d = split_dir / name;
      fs::create_directories(d, ec);
      if (ec) throw Error(str_cat("cannot create directory ", d.string(), ": ", ec.message()));
      // images of an earlier, larger set
      std::vector<fs::path> stale;
      for (const auto& e : fs::directory_iterator(d, ec)) {
        const std::string f = e.path().filename().string();
        if (f.size() < 5 || f.compare(f.size() - 4, 4, ".jpg") != 0) continue;
        const std::string stem = f.substr(0, f.size() - 4);
        if (stem.empty() || stem.find_first_not_of("0123456789") != std::string::npos) continue;
        if (stem.size() > 9 || std::stoll(stem) >= per_class[s]) stale.push_back(e.path());
      }
      if (ec) throw Error(str_cat("cannot list ", d.string(), ": ", ec.message()));
      for (const fs::path& p : stale)
        if (!fs::remove(p, ec) && ec)
          throw Error(str_cat("cannot remove ", p.string(), ": ", ec.message()));
    }
  }

  // image i: train (class-major) then val
  const int64_t n_train = int64_t(kNumClasses) * opt.train_per_class;
  const int64_t total = n_train + int64_t(kNumClasses) * opt.val_per_class;
  synth::render_all(total, opt.threads, progress, [&](int64_t i) {
    const int s = i < n_train ? 0 : 1;
    const int64_t j = s == 0 ? i : i - n_train;
    const int label = int(j / per_class[s]);
    const int64_t k = j % per_class[s];
    const SynthClsImage im = render_synthetic_class_image(
        label, synthetic_class_image_seed(opt.seed, s, label, k), opt.min_side, opt.max_side);
    char file[32];
    std::snprintf(file, sizeof file, "%06lld.jpg", static_cast<long long>(k));
    write_image(im.image, (root / splits[s] / names[size_t(label)] / file).string(),
                opt.jpeg_quality);
  });

  // the marker last: a directory holding it is complete
  std::string list;
  for (const std::string& n : names) list += n + "\n";
  write_file_atomic(marker.string(), list.data(), list.size(),
                    str_cat("cannot write ", marker.string()));
}

}  // namespace hr::data
