// The synthetic detection dataset. Each object is a list of strokes (draw.h primitives at their
// final image coordinates) drawn twice: into a coverage mask, which decides what it owns and how
// much it takes from the objects already there, then into the picture. An object that would leave
// an earlier one less than half of what it showed (or too little to see) is placed again.
#include "data/synth_det.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>

#include "data/draw.h"
#include "data/synth_common.h"
#include "engine/error.h"

namespace hr::data {

namespace {

using namespace synth;  // Rng, colours, noise, the pose dataset's people and backgrounds

constexpr uint8_t kNoObject = 255;  // owner of pixels drawn by no object (a stop sign's pole)
constexpr int kMinArea = 40;        // fewest visible pixels an object keeps
constexpr int kAttempts = 20;       // placements tried per object

enum Kind { kPerson, kCar, kStopSign, kBall, kKite, kNumKinds };
constexpr int64_t kCategoryIds[kNumKinds] = {1, 3, 13, 37, 38};

using Stroke = std::function<void(Image& img, bool mask)>;

struct Drawing {
  std::vector<Stroke> body;   // the object
  std::vector<Stroke> extra;  // drawn first, owned by no object
};

RGB pick(RGB c, bool mask) { return mask ? RGB{255, 255, 255} : c; }

// Object-local coordinates -> image: scale, rotation, mirror, then the centre.
struct Frame {
  float cx = 0, cy = 0, s = 1, angle = 0, mirror = 1;
  std::array<float, 2> map(float x, float y) const {
    const float c = std::cos(angle), sn = std::sin(angle);
    x *= mirror * s;
    y *= s;
    return {cx + x * c - y * sn, cy + x * sn + y * c};
  }
  std::vector<float> poly(std::initializer_list<std::array<float, 2>> pts) const {
    std::vector<float> xy;
    for (const auto& p : pts) {
      const auto q = map(p[0], p[1]);
      xy.push_back(q[0]);
      xy.push_back(q[1]);
    }
    return xy;
  }
};

Stroke polygon(std::vector<float> xy, RGB c, float alpha = 1.f) {
  return [xy = std::move(xy), c, alpha](Image& img, bool mask) {
    fill_polygon(img, xy, pick(c, mask), alpha);
  };
}
Stroke circle(const Frame& f, float x, float y, float r, RGB c, float alpha = 1.f) {
  const auto p = f.map(x, y);
  const float rr = r * f.s;
  return [p, rr, c, alpha](Image& img, bool mask) {
    fill_circle(img, p[0], p[1], rr, pick(c, mask), alpha);
  };
}
Stroke ellipse(const Frame& f, float x, float y, float rx, float ry, RGB c) {
  const auto p = f.map(x, y);
  const float a = f.angle, sx = rx * f.s, sy = ry * f.s;
  return [p, a, sx, sy, c](Image& img, bool mask) {
    fill_ellipse(img, p[0], p[1], sx, sy, a, pick(c, mask));
  };
}
Stroke line(const Frame& f, float x0, float y0, float x1, float y1, float width, RGB c) {
  const auto p = f.map(x0, y0), q = f.map(x1, y1);
  const float w = width * f.s;
  return [p, q, w, c](Image& img, bool mask) {
    draw_line(img, p[0], p[1], q[0], q[1], w, pick(c, mask));
  };
}

// Car, side view, length 1 (x in [-0.5, 0.5], front at +x), from roof -0.21 to wheel bottoms 0.19.
Drawing car(const Frame& f, Rng& rng) {
  const RGB paint = rng.chance(0.3f) ? jitter(RGB{200, 30, 35}, rng, 25) : random_colour(rng);
  const RGB glass = jitter(RGB{120, 150, 175}, rng, 20), tyre = jitter(RGB{30, 30, 34}, rng, 8);
  const RGB hub = jitter(RGB{185, 185, 190}, rng, 20);
  Drawing d;
  d.body.push_back(polygon(f.poly({{-0.50f, 0.10f}, {-0.50f, -0.02f}, {-0.45f, -0.07f},
                                   {-0.28f, -0.08f}, {-0.17f, -0.21f}, {0.10f, -0.21f},
                                   {0.24f, -0.08f}, {0.46f, -0.05f}, {0.50f, 0.00f},
                                   {0.50f, 0.10f}}),
                           paint));
  d.body.push_back(polygon(f.poly({{-0.50f, 0.05f}, {0.50f, 0.05f}, {0.50f, 0.10f}, {-0.50f, 0.10f}}),
                           shade(paint, 0.55f)));
  d.body.push_back(polygon(f.poly({{-0.25f, -0.085f}, {-0.155f, -0.19f}, {-0.04f, -0.19f},
                                   {-0.04f, -0.085f}}),
                           glass));
  d.body.push_back(polygon(f.poly({{-0.01f, -0.085f}, {-0.01f, -0.19f}, {0.09f, -0.19f},
                                   {0.20f, -0.085f}}),
                           glass));
  d.body.push_back(line(f, -0.025f, -0.08f, -0.025f, 0.05f, 0.008f, shade(paint, 0.45f)));
  d.body.push_back(ellipse(f, 0.485f, -0.02f, 0.015f, 0.02f, RGB{250, 240, 190}));
  d.body.push_back(ellipse(f, -0.49f, -0.01f, 0.012f, 0.022f, RGB{210, 20, 20}));
  for (float x : {-0.31f, 0.31f}) {
    d.body.push_back(circle(f, x, 0.10f, 0.09f, tyre));
    d.body.push_back(circle(f, x, 0.10f, 0.045f, hub));
  }
  return d;
}

// Stop sign, radius 1: a white rim, a red octagon, STOP in white; its pole below is not the sign.
Drawing stop_sign(const Frame& f, Rng& rng) {
  const RGB red = jitter(RGB{205, 25, 35}, rng, 18), white = jitter(RGB{240, 240, 240}, rng, 10);
  const RGB pole = jitter(RGB{140, 140, 145}, rng, 25);
  Drawing d;
  const float len = rng.uni(1.5f, 3.5f);
  d.extra.push_back(polygon(f.poly({{-0.07f, 0.5f}, {0.07f, 0.5f}, {0.07f, 0.9f + len},
                                    {-0.07f, 0.9f + len}}),
                            pole));
  auto octagon = [&](float r, RGB c) {
    std::vector<float> xy;
    for (int k = 0; k < 8; ++k) {
      const float a = (22.5f + 45.f * k) * kDeg;
      const auto q = f.map(r * std::cos(a), r * std::sin(a));
      xy.push_back(q[0]);
      xy.push_back(q[1]);
    }
    d.body.push_back(polygon(std::move(xy), c));
  };
  octagon(1.f, white);
  octagon(0.87f, red);
  // S T O P: cells 0.27 wide, 0.38 high, strokes 0.07
  const float w = 0.07f, h = 0.19f, cw = 0.27f;
  auto bar = [&](float x0, float y0, float x1, float y1) {
    d.body.push_back(line(f, x0, y0, x1, y1, w, white));
  };
  const float xs[4] = {-0.50f, -0.17f, 0.17f, 0.50f};
  for (int k = 0; k < 4; ++k) {
    const float l = xs[k] - cw / 2 + w / 2, r = xs[k] + cw / 2 - w / 2, m = xs[k];
    const float t = -h + w / 2, b = h - w / 2;
    if (k == 0) {  // S
      bar(l, t, r, t);
      bar(l, 0, r, 0);
      bar(l, b, r, b);
      bar(l, t, l, 0);
      bar(r, 0, r, b);
    } else if (k == 1) {  // T
      bar(l, t, r, t);
      bar(m, t, m, b);
    } else if (k == 2) {  // O
      bar(l, t, r, t);
      bar(l, b, r, b);
      bar(l, t, l, b);
      bar(r, t, r, b);
    } else {  // P
      bar(l, t, l, b);
      bar(l, t, r, t);
      bar(l, 0, r, 0);
      bar(r, t, r, 0);
    }
  }
  return d;
}

// Sports ball, radius 1: soccer, basketball or tennis ball, with shading.
Drawing ball(const Frame& f, Rng& rng) {
  Drawing d;
  const int type = rng.range(0, 2);
  const float spin = rng.uni(0, 2 * kPi);
  auto at = [&](float r, float a) { return std::array<float, 2>{r * std::cos(a), r * std::sin(a)}; };
  if (type == 0) {  // soccer: white, black pentagons
    const RGB white = jitter(RGB{238, 238, 235}, rng, 12), black = jitter(RGB{30, 30, 32}, rng, 8);
    d.body.push_back(circle(f, 0, 0, 1.f, white));
    auto pentagon = [&](float cx, float cy, float r, float phase) {
      std::vector<float> xy;
      for (int k = 0; k < 5; ++k) {
        const auto q = f.map(cx + r * std::cos(phase + k * 72 * kDeg), cy + r * std::sin(phase + k * 72 * kDeg));
        xy.push_back(q[0]);
        xy.push_back(q[1]);
      }
      d.body.push_back(polygon(std::move(xy), black));
    };
    for (int k = 0; k < 5; ++k) {
      const auto a = at(0.33f, spin + k * 72 * kDeg), b = at(0.70f, spin + k * 72 * kDeg);
      d.body.push_back(line(f, a[0], a[1], b[0], b[1], 0.05f, black));
      const auto c = at(0.76f, spin + (k * 72 + 36) * kDeg);
      pentagon(c[0], c[1], 0.2f, spin + (k * 72 + 36) * kDeg);
    }
    pentagon(0, 0, 0.33f, spin + 36 * kDeg);
  } else if (type == 1) {  // basketball: orange, dark seams
    const RGB orange = jitter(RGB{222, 112, 40}, rng, 15), seam = jitter(RGB{40, 25, 20}, rng, 8);
    d.body.push_back(circle(f, 0, 0, 1.f, orange));
    const auto a = at(0.97f, spin), b = at(0.97f, spin + kPi);
    d.body.push_back(line(f, a[0], a[1], b[0], b[1], 0.06f, seam));
    const auto c = at(0.97f, spin + kPi / 2), e = at(0.97f, spin - kPi / 2);
    d.body.push_back(line(f, c[0], c[1], e[0], e[1], 0.06f, seam));
    for (float side : {-1.f, 1.f}) {  // the two curved seams, as chords of an arc
      std::array<float, 2> prev{};
      for (int k = 0; k <= 8; ++k) {
        const float t = -0.8f + 1.6f * k / 8;
        const float u = side * (0.55f + 0.3f * t * t);  // across, curving out to the rim
        const std::array<float, 2> p{u * std::cos(spin) - t * std::sin(spin),
                                     u * std::sin(spin) + t * std::cos(spin)};
        if (k) d.body.push_back(line(f, prev[0], prev[1], p[0], p[1], 0.06f, seam));
        prev = p;
      }
    }
  } else {  // tennis: yellow-green felt, a white seam
    const RGB felt = jitter(RGB{205, 230, 70}, rng, 15), seam = jitter(RGB{245, 245, 240}, rng, 8);
    d.body.push_back(circle(f, 0, 0, 1.f, felt));
    for (float side : {-1.f, 1.f}) {
      std::array<float, 2> prev{};
      for (int k = 0; k <= 10; ++k) {
        const float t = -0.85f + 1.7f * k / 10;
        const float u = side * (0.95f - 0.75f * std::cos(t * kPi / 1.9f));
        const std::array<float, 2> p{u * std::cos(spin) - t * std::sin(spin),
                                     u * std::sin(spin) + t * std::cos(spin)};
        if (k) d.body.push_back(line(f, prev[0], prev[1], p[0], p[1], 0.07f, seam));
        prev = p;
      }
    }
  }
  // shading toward the bottom right and a highlight, inside the ball
  d.body.push_back(circle(f, 0.2f, 0.2f, 0.7f, RGB{0, 0, 0}, 0.22f));
  d.body.push_back(circle(f, -0.4f, -0.4f, 0.2f, RGB{255, 255, 255}, 0.35f));
  return d;
}

// Kite, height 1 (top -0.5, bottom 0.5, half width 0.35): two colours in four triangles, spars,
// a wavy tail with bows below.
Drawing kite(const Frame& f, Rng& rng) {
  const RGB a = hsv(rng.uni(), rng.uni(0.6f, 1.f), rng.uni(0.7f, 1.f));
  const RGB b = rng.chance(0.3f) ? RGB{245, 245, 240} : hsv(rng.uni(), rng.uni(0.6f, 1.f), rng.uni(0.5f, 1.f));
  const RGB spar = jitter(RGB{70, 50, 35}, rng, 15), bow = hsv(rng.uni(), 0.9f, 0.95f);
  Drawing d;
  const std::array<float, 2> T{0, -0.5f}, L{-0.35f, -0.15f}, R{0.35f, -0.15f}, B{0, 0.5f},
      C{0, -0.15f};
  auto tri = [&](std::array<float, 2> p, std::array<float, 2> q, std::array<float, 2> r, RGB c) {
    d.body.push_back(polygon(f.poly({p, q, r}), c));
  };
  tri(T, L, C, a);
  tri(T, R, C, b);
  tri(L, B, C, b);
  tri(R, B, C, a);
  d.body.push_back(line(f, T[0], T[1], B[0], B[1], 0.02f, spar));
  d.body.push_back(line(f, L[0], L[1], R[0], R[1], 0.02f, spar));
  const float phase = rng.uni(0, 2 * kPi), len = rng.uni(0.6f, 1.1f);
  std::array<float, 2> prev = B;
  for (int k = 1; k <= 8; ++k) {
    const std::array<float, 2> p{0.07f * std::sin(phase + k * 1.3f), 0.5f + len * k / 8};
    d.body.push_back(line(f, prev[0], prev[1], p[0], p[1], 0.018f, spar));
    if (k % 2 == 0) {
      tri({p[0], p[1]}, {p[0] - 0.06f, p[1] - 0.03f}, {p[0] - 0.06f, p[1] + 0.03f}, bow);
      tri({p[0], p[1]}, {p[0] + 0.06f, p[1] - 0.03f}, {p[0] + 0.06f, p[1] + 0.03f}, bow);
    }
    prev = p;
  }
  return d;
}

// A distractor on the background: a polygon or a thick line of any colour.
void draw_clutter(Image& img, Rng& rng) {
  const int W = img.width, H = img.height;
  const RGB c = random_colour(rng);
  const float x = rng.uni(0, float(W)), y = rng.uni(0, float(H));
  const float r = rng.uni(6.f, 0.15f * float(std::min(W, H)) + 6.f);
  if (rng.chance(0.5f)) {
    const int n = rng.range(3, 6);
    std::vector<float> xy;
    const float a0 = rng.uni(0, 2 * kPi);
    for (int k = 0; k < n; ++k) {
      const float a = a0 + 2 * kPi * k / n, rr = r * rng.uni(0.6f, 1.f);
      xy.push_back(x + rr * std::cos(a));
      xy.push_back(y + rr * std::sin(a));
    }
    fill_polygon(img, xy, c, rng.uni(0.5f, 1.f));
  } else {
    const float a = rng.uni(0, kPi);
    draw_line(img, x - r * std::cos(a), y - r * std::sin(a), x + r * std::cos(a),
              y + r * std::sin(a), rng.uni(2.f, 6.f), c, rng.uni(0.5f, 1.f));
  }
}

float log_uniform(Rng& rng, float lo, float hi) {
  if (hi <= lo) return lo;
  return lo * std::pow(hi / lo, rng.uni());
}

// A centre coordinate for an object `size` pixels across in a `span`: inside, or with `m` of it
// allowed out (truncation), as the pose dataset places its people.
float centre(Rng& rng, float size, float span, float m) {
  float lo = size * (0.5f - m), hi = span - size * (0.5f - m);
  if (lo > hi) std::swap(lo, hi);
  return rng.uni(lo, hi);
}

// One object of `kind` at a random size, angle and place, drawn as strokes.
Drawing make_object(int kind, Rng& rng, int W, int H) {
  const float m = rng.chance(0.2f) ? 0.3f : 0.f;
  const float small = float(std::min(W, H));
  Frame f;
  switch (kind) {
    case kPerson: {
      const float height = log_uniform(rng, 24.f, 0.95f * float(H));
      const float angle = rng.chance(0.2f) ? rng.deg(-45, 45) : rng.normal() * 4.f * kDeg;
      PersonFigure p = PersonFigure::random(rng, height, angle, rng.chance(0.15f));
      const auto e = p.extent();
      p.translate(centre(rng, e[2] - e[0], float(W), m) - 0.5f * (e[0] + e[2]),
                  centre(rng, e[3] - e[1], float(H), m) - 0.5f * (e[1] + e[3]));
      Drawing d;
      d.body.push_back([p = std::make_shared<PersonFigure>(std::move(p))](Image& img, bool mask) {
        p->paint(img, mask);
      });
      return d;
    }
    case kCar:
      f.s = log_uniform(rng, 40.f, 0.9f * float(W));
      f.angle = rng.normal() * 3.f * kDeg;
      f.mirror = rng.chance(0.5f) ? 1.f : -1.f;
      f.cx = centre(rng, f.s, float(W), m);
      f.cy = centre(rng, 0.4f * f.s, float(H), m);
      return car(f, rng);
    case kStopSign:
      f.s = 0.5f * log_uniform(rng, 16.f, 0.6f * small);
      f.angle = rng.normal() * 5.f * kDeg;
      f.cx = centre(rng, 2 * f.s, float(W), m);
      f.cy = centre(rng, 2 * f.s, float(H), m);
      return stop_sign(f, rng);
    case kBall:
      f.s = 0.5f * log_uniform(rng, 16.f, 0.45f * small);
      f.cx = centre(rng, 2 * f.s, float(W), m);
      f.cy = centre(rng, 2 * f.s, float(H), m);
      return ball(f, rng);
    default:
      f.s = log_uniform(rng, 20.f, 0.6f * small);
      f.angle = rng.uni(-35.f, 35.f) * kDeg;
      f.cx = centre(rng, 0.7f * f.s, float(W), m);
      f.cy = centre(rng, 1.8f * f.s, float(H), m) - 0.4f * f.s;  // the tail hangs below
      return kite(f, rng);
  }
}

void paint_mask(const std::vector<Stroke>& strokes, Image& mask) {
  std::fill(mask.pixels.begin(), mask.pixels.end(), 0);
  for (const Stroke& s : strokes) s(mask, true);
}

void check_sizes(int width, int height, int max_objects) {
  HR_CHECK(width >= 64 && height >= 64 && width <= 4096 && height <= 4096,
           "synthetic detection images: size must be 64..4096 per side, got ", width, "x", height);
  HR_CHECK(max_objects >= 0 && max_objects <= 100,
           "synthetic detection images: max_objects must be 0..100, got ", max_objects);
}

std::string image_file_name(int64_t id) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%012lld.jpg", static_cast<long long>(id));
  return buf;
}

}  // namespace

const std::vector<CocoCategory>& synthetic_detection_categories() {
  static const std::vector<CocoCategory> c{{1, "person", "person"},
                                           {3, "car", "vehicle"},
                                           {13, "stop sign", "outdoor"},
                                           {37, "sports ball", "sports"},
                                           {38, "kite", "sports"}};
  return c;
}

SynthDetImage render_synthetic_detection(uint64_t seed, int width, int height, int max_objects,
                                         bool keep_background) {
  check_sizes(width, height, max_objects);
  Rng rng(seed);
  const int W = width, H = height;
  SynthDetImage out;
  out.image = Image(W, H, 3);
  out.owner.assign(size_t(W) * H, 0);
  pose_background(out.image, rng);
  const int clutter = rng.range(0, 3);
  for (int k = 0; k < clutter; ++k) draw_clutter(out.image, rng);
  if (keep_background) out.background = out.image;

  const int want = max_objects == 0 || rng.chance(1.f / 16) ? 0 : rng.range(1, max_objects);
  Image body(W, H, 1), extra(W, H, 1);
  std::vector<int> area0, area, lost;
  for (int k = 0; k < want; ++k) {
    const int kind = rng.range(0, kNumKinds - 1);
    for (int attempt = 0; attempt < kAttempts; ++attempt) {
      const Drawing d = make_object(kind, rng, W, H);
      paint_mask(d.body, body);
      paint_mask(d.extra, extra);
      int own = 0;
      lost.assign(area.size(), 0);
      for (size_t i = 0; i < out.owner.size(); ++i) {
        const bool b = body.pixels[i] >= 128;
        if (!b && extra.pixels[i] < 128) continue;
        own += b;
        const uint8_t o = out.owner[i];
        if (o > 0 && o != kNoObject) ++lost[o - 1];
      }
      bool ok = own >= kMinArea;
      for (size_t i = 0; ok && i < area.size(); ++i)
        ok = area[i] - lost[i] >= kMinArea && 2 * (area[i] - lost[i]) >= area0[i];
      if (!ok) continue;
      for (size_t i = 0; i < area.size(); ++i) area[i] -= lost[i];
      for (const Stroke& s : d.extra) s(out.image, false);
      for (const Stroke& s : d.body) s(out.image, false);
      const uint8_t id = uint8_t(area.size() + 1);
      for (size_t i = 0; i < out.owner.size(); ++i) {
        if (body.pixels[i] >= 128)
          out.owner[i] = id;
        else if (extra.pixels[i] >= 128)
          out.owner[i] = kNoObject;
      }
      area0.push_back(own);
      area.push_back(own);
      out.objects.push_back({kCategoryIds[kind], {}, 0});
      break;
    }
  }
  if (rng.chance(0.7f)) add_noise(out.image, rng, rng.uni(1.f, 5.f));

  // boxes and areas from the final ownership of every pixel
  for (size_t i = 0; i < out.objects.size(); ++i) {
    const uint8_t id = uint8_t(i + 1);
    int x0 = W, y0 = H, x1 = -1, y1 = -1, n = 0;
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x)
        if (out.owner[size_t(y) * W + x] == id) {
          ++n;
          x0 = std::min(x0, x);
          x1 = std::max(x1, x);
          y0 = std::min(y0, y);
          y1 = std::max(y1, y);
        }
    out.objects[i].bbox = {double(x0), double(y0), double(x1 - x0 + 1), double(y1 - y0 + 1)};
    out.objects[i].area = n;
  }
  return out;
}

uint64_t synthetic_detection_seed(uint64_t seed, int64_t index) {
  uint64_t x = seed ^ 0x5DE7EC7105EED5A1ull;
  uint64_t y = splitmix64(x) + uint64_t(index);
  return splitmix64(y);
}

void generate_synthetic_detection(const std::string& out_dir, const SynthDetOptions& opt,
                                  bool progress) {
  namespace fs = std::filesystem;
  HR_CHECK(opt.train_images >= 1 && opt.val_images >= 1,
           "synthetic detection dataset: need at least one train and one val image, got ",
           opt.train_images, " and ", opt.val_images);
  HR_CHECK(opt.jpeg_quality >= 1 && opt.jpeg_quality <= 100,
           "synthetic detection dataset: JPEG quality ", opt.jpeg_quality, " outside 1..100");
  HR_CHECK(opt.threads >= 0, "synthetic detection dataset: threads must be >= 0, got ",
           opt.threads);
  check_sizes(opt.width, opt.height, opt.max_objects);

  const std::string split_names[2] = {"train2017", "val2017"};
  for (const auto& d : {fs::path(out_dir) / split_names[0], fs::path(out_dir) / split_names[1],
                        fs::path(out_dir) / "annotations"}) {
    std::error_code ec;
    fs::create_directories(d, ec);
    if (ec) throw Error(str_cat("cannot create directory ", d.string(), ": ", ec.message()));
  }
  // an earlier dataset's annotation files would make a failed run look complete
  for (const auto& s : split_names) {
    const fs::path f = fs::path(out_dir) / "annotations" / ("instances_" + s + ".json");
    std::error_code ec;
    fs::remove(f, ec);
    if (ec) throw Error(str_cat("cannot remove ", f.string(), ": ", ec.message()));
  }

  const int64_t total = int64_t(opt.train_images) + opt.val_images;
  std::vector<std::vector<SynthDetObject>> objects(static_cast<size_t>(total));
  render_all(total, opt.threads, progress, [&](int64_t i) {
    SynthDetImage im = render_synthetic_detection(synthetic_detection_seed(opt.seed, i),
                                                  opt.width, opt.height, opt.max_objects);
    const int split = i < opt.train_images ? 0 : 1;
    write_image(im.image, (fs::path(out_dir) / split_names[split] / image_file_name(i + 1)).string(),
                opt.jpeg_quality);
    objects[size_t(i)] = std::move(im.objects);
  });

  int64_t ann_id = 1;
  for (int split = 0; split < 2; ++split) {
    CocoInstances coco;
    coco.categories = synthetic_detection_categories();
    const int64_t b0 = split == 0 ? 0 : opt.train_images, b1 = split == 0 ? opt.train_images : total;
    for (int64_t i = b0; i < b1; ++i) {
      coco.images.push_back({i + 1, image_file_name(i + 1), opt.width, opt.height});
      for (const SynthDetObject& o : objects[size_t(i)]) {
        CocoInstanceAnn a;
        a.id = ann_id++;
        a.image_id = i + 1;
        a.category_id = o.category_id;
        a.bbox = o.bbox;
        a.area = o.area;
        coco.annotations.push_back(a);
      }
    }
    save_coco_instances(coco, (fs::path(out_dir) / "annotations" /
                               ("instances_" + split_names[split] + ".json"))
                                  .string());
  }
}

}  // namespace hr::data
