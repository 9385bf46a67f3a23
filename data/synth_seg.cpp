// The synthetic street scenes. A scene is a camera at height 1 (the unit of every size here) over
// a flat ground: the horizon at row yh, the vanishing point (xv, yh), and a ground point at
// distance Z projecting to row yh + G / Z (G = H - yh: the bottom row is at distance 1), so
// something 1 unit tall at distance Z spans d = G / Z pixels. The street runs toward the
// vanishing point (road, sidewalks, grass strips, facades along both sides, a block closing the
// street); the things in front (poles, trees, people, vehicles) stand on the ground at their
// distance and are drawn in side view, far ones first. Every pixel is written together with its
// label id, so the labels follow the picture's edges exactly. One generator per image (xoshiro
// seeded by synthetic_street_seed): a scene depends only on (seed, split, index, size).
#include "data/synth_seg.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>

#include "data/synth_common.h"
#include "engine/error.h"
#include "engine/file_util.h"

namespace hr::data {

namespace {

using namespace synth;  // Rng, add_noise, render_all
using Col = std::array<float, 3>;

// Cityscapes label ids
enum : uint8_t {
  kUnlabeled = 0, kEgo = 1, kStatic = 4, kRoad = 7, kSidewalk = 8, kRailTrack = 10,
  kBuilding = 11, kWall = 12, kFence = 13, kPole = 17, kLight = 19, kSign = 20, kVegetation = 21,
  kTerrain = 22, kSky = 23, kPerson = 24, kRider = 25, kCar = 26, kTruck = 27, kBus = 28,
  kTrain = 31, kMotorcycle = 32, kBicycle = 33
};
// the rarer classes an image can feature (synth_seg.h)
enum Featured { fWall, fFence, fPole, fLight, fSign, fTerrain, fPerson, fRider, fCar, fTruck, fBus,
                fTrain, fMotorcycle, fBicycle, fVegetation, kNumFeatured };

constexpr int kMaxSide = 4096;

Col operator+(Col a, Col b) { return {a[0] + b[0], a[1] + b[1], a[2] + b[2]}; }
Col operator*(Col a, float k) { return {a[0] * k, a[1] * k, a[2] * k}; }
Col mixc(Col a, Col b, float t) { return a * (1.f - t) + b * t; }
Col grey(float v) { return {v, v, v}; }
Col hsvf(float h, float s, float v) {
  const RGB c = hsv(h - std::floor(h), s, v);
  return {float(c[0]), float(c[1]), float(c[2])};
}
Col jit(Col c, Rng& r, float a) {
  return {c[0] + r.uni(-a, a), c[1] + r.uni(-a, a), c[2] + r.uni(-a, a)};
}
float frac(float v) { return v - std::floor(v); }

// Bilinear value noise in [-1, 1] on a grid of `cell` pixels.
struct Noise {
  int gw = 0, gh = 0;
  float inv = 1;
  std::vector<float> g;
  Noise(Rng& r, int W, int H, float cell) : gw(int(W / cell) + 3), gh(int(H / cell) + 3), inv(1.f / cell) {
    g.resize(size_t(gw) * gh);
    for (auto& v : g) v = r.uni(-1.f, 1.f);
  }
  float at(float x, float y) const {
    const float gx = std::clamp(x * inv, 0.f, float(gw - 2)), gy = std::clamp(y * inv, 0.f, float(gh - 2));
    const int ix = std::min(int(gx), gw - 2), iy = std::min(int(gy), gh - 2);
    const float tx = gx - ix, ty = gy - iy;
    auto v = [&](int a, int b) { return g[size_t(b) * gw + a]; };
    return (v(ix, iy) * (1 - tx) + v(ix + 1, iy) * tx) * (1 - ty) +
           (v(ix, iy + 1) * (1 - tx) + v(ix + 1, iy + 1) * tx) * ty;
  }
};

struct Canvas {
  int W, H;
  std::vector<float> rgb;
  std::vector<uint8_t> id;
  Canvas(int w, int h) : W(w), H(h), rgb(size_t(w) * h * 3, 0.f), id(size_t(w) * h, kUnlabeled) {}
  // Every pixel of the box whose centre is inside: colour and label.
  template <class Inside, class Paint>
  void fill(float x0, float y0, float x1, float y1, uint8_t lab, const Inside& in, const Paint& paint) {
    const int ix0 = std::max(0, int(std::floor(x0))), ix1 = std::min(W - 1, int(std::ceil(x1)));
    const int iy0 = std::max(0, int(std::floor(y0))), iy1 = std::min(H - 1, int(std::ceil(y1)));
    for (int y = iy0; y <= iy1; ++y)
      for (int x = ix0; x <= ix1; ++x) {
        const float px = x + 0.5f, py = y + 0.5f;
        if (!in(px, py)) continue;
        const Col c = paint(px, py);
        float* p = &rgb[(size_t(y) * W + x) * 3];
        p[0] = c[0], p[1] = c[1], p[2] = c[2];
        id[size_t(y) * W + x] = lab;
      }
  }
};

// Shapes as (box, inside test).
struct Shape {
  float x0, y0, x1, y1;
  std::function<bool(float, float)> in;
};
Shape rect(float x0, float y0, float x1, float y1) {
  return {x0, y0, x1, y1, [=](float x, float y) { return x >= x0 && x < x1 && y >= y0 && y < y1; }};
}
Shape disc(float cx, float cy, float r) {
  return {cx - r, cy - r, cx + r, cy + r,
          [=](float x, float y) { return (x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r; }};
}
Shape ellipse(float cx, float cy, float rx, float ry) {
  return {cx - rx, cy - ry, cx + rx, cy + ry, [=](float x, float y) {
            const float u = (x - cx) / rx, v = (y - cy) / ry;
            return u * u + v * v <= 1.f;
          }};
}
Shape ring(float cx, float cy, float ro, float ri) {
  return {cx - ro, cy - ro, cx + ro, cy + ro, [=](float x, float y) {
            const float q = (x - cx) * (x - cx) + (y - cy) * (y - cy);
            return q <= ro * ro && q >= ri * ri;
          }};
}
// A segment of half-width r with round ends.
Shape capsule(float ax, float ay, float bx, float by, float r) {
  return {std::min(ax, bx) - r, std::min(ay, by) - r, std::max(ax, bx) + r, std::max(ay, by) + r,
          [=](float x, float y) {
            const float ex = bx - ax, ey = by - ay, wx = x - ax, wy = y - ay;
            const float l2 = ex * ex + ey * ey;
            const float t = l2 > 0 ? std::clamp((wx * ex + wy * ey) / l2, 0.f, 1.f) : 0.f;
            const float dx = wx - ex * t, dy = wy - ey * t;
            return dx * dx + dy * dy <= r * r;
          }};
}
Shape polygon(std::vector<std::array<float, 2>> p) {
  float x0 = 1e9f, y0 = 1e9f, x1 = -1e9f, y1 = -1e9f;
  for (auto& q : p) x0 = std::min(x0, q[0]), y0 = std::min(y0, q[1]), x1 = std::max(x1, q[0]), y1 = std::max(y1, q[1]);
  return {x0, y0, x1, y1, [p](float x, float y) {
            bool inside = false;
            for (size_t i = 0, j = p.size() - 1; i < p.size(); j = i++)
              if ((p[i][1] > y) != (p[j][1] > y) &&
                  x < (p[j][0] - p[i][0]) * (y - p[i][1]) / (p[j][1] - p[i][1]) + p[i][0])
                inside = !inside;
            return inside;
          }};
}

// ---------------------------------------------------------------------------------------------
// The scene

struct Scene {
  Rng& r;
  Canvas& cv;
  int W, H;
  float yh, xv, G;
  Noise fine, med, coarse;
  Scene(Rng& rng, Canvas& c)
      : r(rng), cv(c), W(c.W), H(c.H), yh(0), xv(0), G(1), fine(rng, c.W, c.H, 1.4f),
        med(rng, c.W, c.H, 5.f), coarse(rng, c.W, c.H, 22.f) {}

  // A colour with value noise (mono) at three scales.
  Col tex(Col base, float x, float y, float af, float am, float ac = 0.f) const {
    const float n = af * fine.at(x, y) + am * med.at(x + 17.f, y + 5.f) + ac * coarse.at(x, y);
    return base + grey(n);
  }
  void paint(const Shape& s, uint8_t lab, const std::function<Col(float, float)>& col) {
    cv.fill(s.x0, s.y0, s.x1, s.y1, lab, s.in, col);
  }
  void paint(const Shape& s, uint8_t lab, Col c, float af = 6.f, float am = 4.f) {
    cv.fill(s.x0, s.y0, s.x1, s.y1, lab, s.in,
            [&](float x, float y) { return tex(c, x, y, af, am); });
  }
  float d_at(float Z) const { return G / Z; }
  float foot_y(float Z) const { return yh + G / Z; }
  float x_at(float X, float Z) const { return xv + X * G / Z; }
};

// ---- colour families ----
Col sky_colour(Rng& r) { return hsvf(r.uni(0.55f, 0.6f), r.uni(0.35f, 0.55f), r.uni(0.78f, 0.95f)); }
Col facade_colour(Rng& r) {
  return hsvf(r.uni(0.03f, 0.11f), r.uni(0.25f, 0.55f), r.uni(0.42f, 0.72f));
}
Col veg_colour(Rng& r) { return hsvf(r.uni(0.22f, 0.3f), r.uni(0.55f, 0.8f), r.uni(0.35f, 0.55f)); }
Col terrain_colour(Rng& r) {
  return hsvf(r.uni(0.15f, 0.19f), r.uni(0.35f, 0.55f), r.uni(0.62f, 0.78f));
}
Col road_colour(Rng& r) { return jit(Col{78, 74, 86}, r, 8) * r.uni(0.85f, 1.12f); }
Col sidewalk_colour(Rng& r) { return jit(Col{186, 160, 170}, r, 8); }
Col wall_colour(Rng& r) { return jit(Col{150, 152, 182}, r, 8); }
Col fence_colour(Rng& r) { return jit(Col{196, 160, 120}, r, 10); }
Col pole_colour(Rng& r) { return grey(r.uni(120.f, 150.f)) + Col{0, 2, 6}; }
Col car_colour(Rng& r) {
  static const Col k[] = {{175, 25, 30}, {30, 50, 150}, {40, 110, 160}, {25, 95, 70},
                          {150, 60, 140}, {20, 20, 26}};
  return jit(k[r.range(0, 5)], r, 14);
}
Col clothes_colour(Rng& r) {  // muted
  return hsvf(r.uni(0.f, 1.f), r.uni(0.1f, 0.45f), r.uni(0.2f, 0.6f));
}
Col hivis_colour(Rng& r) {  // riders' jackets: neon yellow-green or orange
  return r.chance(0.5f) ? jit(Col{200, 240, 30}, r, 12) : jit(Col{250, 120, 20}, r, 12);
}
const Col kSkin[] = {{235, 200, 170}, {210, 160, 120}, {160, 110, 75}, {110, 75, 50}};

// ---- the static background ----

struct Street {
  float rl, rr, sl, sr, tl, tr;  // lateral positions X (units) of the edges
  bool terrain_l = false, terrain_r = false;
  float fl, fr;   // facade planes
  float z_end;    // distance of the block closing the street
  float lane_x;
};

struct Building {
  float z0, z1, height;
  Col colour, window;
  float win_w, floor_h;
};

void draw_background(Scene& s, Street& st, bool force_terrain) {
  Rng& r = s.r;
  const int W = s.W, H = s.H;
  // sky with lighter clouds
  const Col sky = sky_colour(r), cloud = mixc(sky, grey(245), 0.6f);
  const float top_dark = r.uni(0.75f, 0.95f);
  s.paint(rect(0, 0, float(W), float(H)), kSky, [&](float x, float y) {
    const float t = std::clamp(y / s.yh, 0.f, 1.f);
    const Col base = sky * (top_dark + (1.f - top_dark) * t);
    const float c = std::clamp(s.coarse.at(x * 0.7f, y * 1.6f) * 1.6f - 0.2f, 0.f, 1.f);
    return s.tex(mixc(base, cloud, c), x, y, 2.f, 2.f);
  });
  // street layout (units at distance 1 = G pixels)
  st.lane_x = r.uni(-0.3f, 0.3f);
  st.rl = st.lane_x - r.uni(0.9f, 1.6f);
  st.rr = st.lane_x + r.uni(0.9f, 1.6f);
  st.sl = st.rl - r.uni(0.6f, 1.1f);
  st.sr = st.rr + r.uni(0.6f, 1.1f);
  st.terrain_l = force_terrain || r.chance(0.4f);
  st.terrain_r = r.chance(0.4f);
  st.tl = st.sl - (st.terrain_l ? r.uni(0.5f, 1.0f) : 0.f);
  st.tr = st.sr + (st.terrain_r ? r.uni(0.5f, 1.0f) : 0.f);
  st.fl = st.tl;
  st.fr = st.tr;
  st.z_end = r.uni(9.f, 16.f);
  const Col road = road_colour(r), walk = sidewalk_colour(r), curb = walk * 1.12f;
  const Col grass = terrain_colour(r), mark = grey(r.uni(210.f, 240.f));
  const Col grout = walk * 0.78f;
  const float tile = r.uni(0.35f, 0.6f), dash = r.uni(1.5f, 2.5f);
  // ground: each pixel's lateral position X and distance Z
  s.paint(rect(0, s.yh, float(W), float(H)), kRoad, [&](float, float) { return road; });
  for (int y = int(std::ceil(s.yh)); y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const float px = x + 0.5f, py = y + 0.5f;
      if (py <= s.yh) continue;
      const float Z = s.G / (py - s.yh), X = (px - s.xv) * Z / s.G;
      if (X < st.fl || X > st.fr) continue;  // facades (drawn next)
      uint8_t lab;
      Col c;
      const float ppu = s.G / Z;  // pixels per unit here
      if (X >= st.rl && X <= st.rr) {
        lab = kRoad;
        c = s.tex(road, px, py, 9.f, 5.f, 6.f);
        const bool centre = std::abs(X - st.lane_x) < 0.06f && frac(Z / dash) < 0.5f;
        const bool edge = std::abs(X - st.rl - 0.18f) < 0.04f || std::abs(X - st.rr + 0.18f) < 0.04f;
        if ((centre || edge) && ppu * 0.08f > 0.6f) c = s.tex(mark, px, py, 6.f, 0.f);
      } else if (X >= st.sl && X <= st.sr) {
        lab = kSidewalk;
        const bool is_curb = std::abs(X - st.rl) < 0.09f || std::abs(X - st.rr) < 0.09f;
        const bool g = (frac(X / tile) < 0.07f || frac(Z / tile) < 0.07f) && ppu * tile * 0.07f > 0.5f;
        c = s.tex(is_curb ? curb : g ? grout : walk, px, py, 6.f, 4.f);
      } else {
        lab = kTerrain;
        c = s.tex(grass, px, py, 20.f, 10.f);
      }
      float* p = &s.cv.rgb[(size_t(y) * W + x) * 3];
      p[0] = c[0], p[1] = c[1], p[2] = c[2];
      s.cv.id[size_t(y) * W + x] = lab;
    }
  // facades: buildings along both sides, from near to the block at z_end
  for (int side = 0; side < 2; ++side) {
    const float F = side == 0 ? st.fl : st.fr;
    std::vector<Building> bs;
    for (float z = 0.f; z < st.z_end;) {
      Building b;
      b.z0 = z;
      b.z1 = z + r.uni(1.5f, 5.f);
      b.height = r.uni(1.8f, 4.5f);
      b.colour = facade_colour(r);
      b.window = jit(Col{55, 65, 85}, r, 12);
      b.win_w = r.uni(0.5f, 0.8f);
      b.floor_h = r.uni(1.6f, 2.2f);
      bs.push_back(b);
      z = b.z1;
    }
    for (int x = 0; x < W; ++x) {
      const float px = x + 0.5f;
      // the facade plane at lateral F: column px sees distance Z = F * G / (px - xv)
      if ((side == 0) != (px < s.xv)) continue;
      const float Z = F * s.G / (px - s.xv);
      if (!(Z > 0) || Z > st.z_end) continue;
      const Building* b = nullptr;
      for (const Building& c : bs)
        if (Z >= c.z0 && Z < c.z1) b = &c;
      if (!b) continue;
      const float d = s.G / Z, yf = s.yh + d, top = yf - b->height * d;
      for (int y = std::max(0, int(std::floor(top))); y < std::min(H, int(std::ceil(yf))); ++y) {
        const float py = y + 0.5f;
        if (py < top || py >= yf) continue;
        const float v = (yf - py) / d;  // height above the ground (units)
        const bool win = d > 5.f && v > b->floor_h * 0.75f && v < b->height - 0.4f &&
                         frac(Z / 1.4f) > 1.f - b->win_w && frac(v / b->floor_h) > 0.3f &&
                         frac(v / b->floor_h) < 0.78f;
        const Col c = win ? s.tex(b->window, px, py, 4.f, 3.f)
                          : s.tex(b->colour, px, py, 5.f, 8.f, 6.f);
        float* p = &s.cv.rgb[(size_t(y) * W + x) * 3];
        p[0] = c[0], p[1] = c[1], p[2] = c[2];
        s.cv.id[size_t(y) * W + x] = kBuilding;
      }
    }
  }
  // the block closing the street
  {
    const float d = s.G / st.z_end, yf = s.yh + d;
    const float x0 = s.x_at(st.fl, st.z_end), x1 = s.x_at(st.fr, st.z_end);
    const float top = yf - r.uni(2.5f, 6.f) * d;
    const Col c = mixc(facade_colour(r), sky, 0.25f);
    s.paint(rect(x0, top, x1, yf), kBuilding, c, 4.f, 6.f);
  }
}

// A vertical band on a facade plane (lateral F) between distances z0 and z1, from the ground to
// `height`: walls, fences, hedges. col(px, py, Z, v) gives the colour (v: height above ground).
void facade_band(Scene& s, float F, float z0, float z1, float height, uint8_t lab,
                 const std::function<Col(float, float, float, float)>& col) {
  for (int x = 0; x < s.W; ++x) {
    const float px = x + 0.5f;
    if ((F < 0) != (px < s.xv)) continue;
    const float Z = F * s.G / (px - s.xv);
    if (!(Z >= z0 && Z <= z1)) continue;
    const float d = s.G / Z, yf = s.yh + d, top = yf - height * d;
    for (int y = std::max(0, int(std::floor(top))); y < std::min(s.H, int(std::ceil(yf))); ++y) {
      const float py = y + 0.5f;
      if (py < top || py >= yf) continue;
      const Col c = col(px, py, Z, (yf - py) / d);
      float* p = &s.cv.rgb[(size_t(y) * s.W + x) * 3];
      p[0] = c[0], p[1] = c[1], p[2] = c[2];
      s.cv.id[size_t(y) * s.W + x] = lab;
    }
  }
}

// ---- things, in side view: (x, yf) the bottom centre, d pixels per unit, dir +1 facing right ----

void draw_pole(Scene& s, float x, float yf, float d, bool light, bool sign, float dir) {
  Rng& r = s.r;
  const float w = std::max(3.f, 0.12f * d), h = r.uni(2.6f, 3.6f) * d;
  const Col c = pole_colour(r);
  s.paint(rect(x - w / 2, yf - h, x + w / 2, yf), kPole, [&](float px, float py) {
    const float t = (px - (x - w / 2)) / w;  // a cylinder: light from the left
    return s.tex(c * (1.15f - 0.45f * t), px, py, 3.f, 0.f);
  });
  if (sign) {
    const float sz = std::max(12.f, r.uni(0.55f, 0.75f) * d), cy = yf - h * r.uni(0.55f, 0.75f);
    const int kind = r.range(0, 3);
    const Col rim{210, 30, 35}, white{240, 240, 235}, blue{25, 80, 190}, yellow{245, 205, 20};
    const float rr = sz / 2;
    if (kind == 0) {  // round, red rim, white face
      s.paint(disc(x, cy, rr), kSign, rim, 4.f, 0.f);
      s.paint(disc(x, cy, rr * 0.68f), kSign, white, 4.f, 0.f);
    } else if (kind == 1) {  // triangle
      s.paint(polygon({{x - rr, cy + rr * 0.8f}, {x + rr, cy + rr * 0.8f}, {x, cy - rr}}), kSign, rim, 4.f, 0.f);
      s.paint(polygon({{x - rr * 0.55f, cy + rr * 0.5f}, {x + rr * 0.55f, cy + rr * 0.5f}, {x, cy - rr * 0.4f}}),
              kSign, white, 4.f, 0.f);
    } else if (kind == 2) {  // blue square with a white arrow
      s.paint(rect(x - rr, cy - rr, x + rr, cy + rr), kSign, blue, 4.f, 0.f);
      s.paint(capsule(x - rr * 0.5f, cy, x + rr * 0.5f, cy, std::max(1.f, rr * 0.14f)), kSign, white, 3.f, 0.f);
    } else {  // yellow diamond with a white border
      s.paint(polygon({{x, cy - rr}, {x + rr, cy}, {x, cy + rr}, {x - rr, cy}}), kSign, white, 4.f, 0.f);
      s.paint(polygon({{x, cy - rr * 0.7f}, {x + rr * 0.7f, cy}, {x, cy + rr * 0.7f}, {x - rr * 0.7f, cy}}),
              kSign, yellow, 4.f, 0.f);
    }
  }
  if (light) {
    const float bw = std::max(8.f, 0.38f * d), bh = bw * 2.5f;
    const float bx = x + dir * (w / 2 + bw / 2), top = yf - h;
    const Col body = jit(Col{38, 42, 34}, r, 6);
    s.paint(rect(bx - bw / 2, top, bx + bw / 2, top + bh), kLight, body, 4.f, 0.f);
    const int lit = r.range(0, 2);
    const Col on[3] = {{255, 40, 30}, {255, 190, 20}, {40, 230, 90}};
    for (int k = 0; k < 3; ++k) {
      const Col c = k == lit ? on[k] : on[k] * 0.3f;
      s.paint(disc(bx, top + bh * (0.2f + 0.3f * k), bw * 0.3f), kLight, c, 3.f, 0.f);
    }
  }
}

void draw_tree(Scene& s, float x, float yf, float d) {
  Rng& r = s.r;
  const float th = r.uni(1.3f, 2.0f) * d, tw = std::max(3.f, 0.16f * d);
  const Col bark = jit(Col{85, 60, 40}, r, 10), leaf = veg_colour(r);
  s.paint(rect(x - tw / 2, yf - th - 0.3f * d, x + tw / 2, yf), kVegetation, bark, 8.f, 4.f);
  const int n = r.range(3, 6);
  const float R = r.uni(0.6f, 1.0f) * d;
  for (int i = 0; i < n; ++i) {
    const float cx = x + r.uni(-0.7f, 0.7f) * R, cy = yf - th - r.uni(0.1f, 0.9f) * R;
    s.paint(disc(cx, cy, R * r.uni(0.55f, 0.8f)), kVegetation,
            [&](float px, float py) { return s.tex(leaf, px, py, 30.f, 22.f); });
  }
}

// A person standing or walking; `rider` seats the figure (on a bike at x, yf) with helmet and a
// high-visibility jacket.
void draw_figure(Scene& s, float x, float yf, float d, bool rider, float dir, float seat_y = 0) {
  Rng& r = s.r;
  const uint8_t lab = rider ? kRider : kPerson;
  const Col skin = jit(kSkin[r.range(0, 3)], r, 10);
  const Col top = rider ? hivis_colour(r) : clothes_colour(r);
  const Col legs = rider ? jit(Col{30, 30, 40}, r, 8) : (r.chance(0.5f) ? jit(Col{40, 55, 95}, r, 10) : clothes_colour(r));
  const float u = d;  // the figure is 1.15 units tall standing
  const float limb = std::max(1.5f, 0.05f * u), arm = std::max(1.2f, 0.04f * u);
  float hip_y, hip_x = x;
  if (!rider) {
    hip_y = yf - 0.55f * u;
    const float step = r.uni(0.f, 0.16f) * u;
    s.paint(capsule(hip_x, hip_y, x - step, yf - limb, limb), lab, legs, 5.f, 2.f);
    s.paint(capsule(hip_x, hip_y, x + step, yf - limb, limb), lab, legs * 0.9f, 5.f, 2.f);
  } else {
    hip_y = seat_y;
    const float kx = x + dir * 0.2f * u;
    s.paint(capsule(hip_x, hip_y, kx, hip_y + 0.05f * u, limb), lab, legs, 5.f, 2.f);
    s.paint(capsule(kx, hip_y + 0.05f * u, kx - dir * 0.05f * u, yf - 0.12f * u, limb), lab, legs, 5.f, 2.f);
  }
  const float lean = rider ? dir * 0.22f * u : dir * r.uni(-0.03f, 0.05f) * u;
  const float sh_y = hip_y - 0.42f * u, sh_x = hip_x + lean;
  const float tw = std::max(2.f, 0.11f * u);
  s.paint(capsule(hip_x, hip_y - tw * 0.5f, sh_x, sh_y + tw * 0.3f, tw), lab,
          [&](float px, float py) { return s.tex(top, px, py, 5.f, 3.f); });
  // arms
  const float hx = rider ? sh_x + dir * 0.3f * u : sh_x + dir * r.uni(-0.12f, 0.12f) * u;
  const float hy = rider ? sh_y + 0.12f * u : sh_y + 0.42f * u;
  s.paint(capsule(sh_x, sh_y + arm, hx, hy, arm), lab, top * 0.85f, 5.f, 2.f);
  // head (helmet for riders)
  const float hr = std::max(2.f, 0.085f * u), hcx = sh_x + dir * 0.02f * u, hcy = sh_y - hr * 1.25f;
  s.paint(disc(hcx, hcy, hr), lab, skin, 4.f, 0.f);
  if (rider) {
    const Col helmet = r.chance(0.5f) ? jit(Col{240, 240, 240}, r, 10) : jit(Col{230, 40, 160}, r, 15);
    s.paint(ellipse(hcx, hcy - hr * 0.35f, hr * 1.15f, hr * 0.8f), lab, helmet, 4.f, 0.f);
  } else if (r.chance(0.6f)) {  // hair
    s.paint(ellipse(hcx - dir * hr * 0.2f, hcy - hr * 0.45f, hr, hr * 0.65f), lab,
            jit(Col{45, 32, 25}, r, 12), 5.f, 0.f);
  }
}

// Two-wheelers; returns the seat height for a rider.
float draw_bicycle(Scene& s, float x, float yf, float d, float dir) {
  Rng& r = s.r;
  const float wr = 0.3f * d, half = 0.36f * d, tyre = std::max(1.5f, 0.05f * d);
  const Col frame = hsvf(r.uni(0.f, 1.f), 0.85f, 0.9f), dark{25, 25, 28};
  const float fw = std::max(1.5f, 0.04f * d);
  for (float sx : {-1.f, 1.f}) {
    const float cx = x + sx * half, cy = yf - wr;
    s.paint(disc(cx, cy, wr), kBicycle, [&](float px, float py) {  // spokes over grey
      const float a = std::atan2(py - cy, px - cx);
      const bool spoke = frac(a * 12.f / 6.2832f) < 0.12f;
      return s.tex(spoke ? Col{70, 70, 75} : Col{150, 150, 158}, px, py, 4.f, 0.f);
    });
    s.paint(ring(cx, cy, wr, wr - tyre), kBicycle, dark, 3.f, 0.f);
  }
  const float bx0 = x - half, bx1 = x + half, by = yf - wr, seat_y = yf - wr - 0.45f * d;
  const float sx = x - dir * 0.12f * d, hx = x + dir * 0.25f * d;
  s.paint(capsule(bx0, by, sx, seat_y, fw), kBicycle, frame, 3.f, 0.f);
  s.paint(capsule(sx, seat_y, hx, seat_y, fw), kBicycle, frame, 3.f, 0.f);
  s.paint(capsule(hx, seat_y - 0.08f * d, bx1, by, fw), kBicycle, frame, 3.f, 0.f);
  s.paint(capsule(bx0 + (bx1 - bx0) * 0.5f, by, sx, seat_y, fw), kBicycle, frame, 3.f, 0.f);
  (void)dir;
  return seat_y;
}

float draw_motorcycle(Scene& s, float x, float yf, float d, float dir) {
  Rng& r = s.r;
  const float wr = 0.24f * d, half = 0.48f * d, tyre = std::max(2.5f, 0.1f * d);
  const Col body = r.chance(0.5f) ? jit(Col{30, 28, 32}, r, 6) : jit(Col{130, 20, 25}, r, 12);
  const Col chrome{175, 178, 185};
  for (float sx : {-1.f, 1.f}) {
    const float cx = x + sx * half, cy = yf - wr;
    s.paint(disc(cx, cy, wr), kMotorcycle, chrome, 6.f, 0.f);
    s.paint(ring(cx, cy, wr, wr - tyre), kMotorcycle, Col{18, 18, 20}, 3.f, 0.f);
  }
  const float top = yf - 0.62f * d;
  s.paint(polygon({{x - half * 0.9f, yf - wr}, {x - half * 0.5f, top + 0.1f * d}, {x + half * 0.6f, top},
                   {x + half * 0.9f, yf - wr * 1.2f}, {x + half * 0.2f, yf - wr * 0.6f}}),
          kMotorcycle, [&](float px, float py) {
            return s.tex(body * (1.2f - 0.5f * (py - top) / (0.62f * d)), px, py, 4.f, 2.f);
          });
  s.paint(rect(x - 0.15f * d, yf - wr * 1.3f, x + 0.2f * d, yf - wr * 0.5f), kMotorcycle, chrome * 0.8f, 8.f, 0.f);
  (void)dir;
  return top + 0.02f * d;
}

void draw_wheels(Scene& s, uint8_t lab, float x0, float x1, float yf, float wr, int n) {
  for (int i = 0; i < n; ++i) {
    const float cx = n == 1 ? (x0 + x1) / 2 : x0 + (x1 - x0) * float(i) / float(n - 1), cy = yf - wr;
    s.paint(disc(cx, cy, wr), lab, Col{22, 22, 24}, 3.f, 0.f);
    s.paint(disc(cx, cy, wr * 0.5f), lab, Col{140, 140, 145}, 4.f, 0.f);
  }
}

void draw_car(Scene& s, float x, float yf, float d, float dir) {
  Rng& r = s.r;
  const float L = r.uni(2.5f, 3.0f) * d, hb = r.uni(0.55f, 0.7f) * d, hc = r.uni(0.38f, 0.48f) * d;
  const float x0 = x - L / 2, x1 = x + L / 2, wr = 0.2f * d;
  const Col body = car_colour(r), glass{130, 160, 185};
  const float b0 = yf - 0.12f * d, b1 = b0 - hb;
  // cabin: a trapezoid over the middle, windows inside it
  const float c0 = x0 + L * (dir > 0 ? 0.18f : 0.28f), c1 = x1 - L * (dir > 0 ? 0.28f : 0.18f);
  const float front_l = dir < 0 ? 0.16f * L : 0.08f * L, front_r = dir > 0 ? 0.16f * L : 0.08f * L;
  s.paint(polygon({{c0, b1 + 1}, {c1, b1 + 1}, {c1 - front_r, b1 - hc}, {c0 + front_l, b1 - hc}}),
          kCar, body, 4.f, 2.f);
  s.paint(polygon({{c0 + 0.04f * L, b1 - 0.04f * d}, {c1 - 0.04f * L, b1 - 0.04f * d},
                   {c1 - front_r - 0.02f * L, b1 - hc * 0.85f}, {c0 + front_l + 0.02f * L, b1 - hc * 0.85f}}),
          kCar,
          [&](float px, float py) { return s.tex(glass * (0.75f + 0.5f * frac((px - py) / (0.5f * d))), px, py, 3.f, 0.f); });
  s.paint(capsule(x0 + hb * 0.3f, b0 - hb / 2, x1 - hb * 0.3f, b0 - hb / 2, hb / 2), kCar,
          [&](float px, float py) {
            const float t = (py - b1) / hb;
            return s.tex(body * (1.25f - 0.5f * t), px, py, 4.f, 2.f);
          });
  draw_wheels(s, kCar, x0 + 0.2f * L, x1 - 0.2f * L, yf, wr, 2);
}

void draw_truck(Scene& s, float x, float yf, float d, float dir) {
  Rng& r = s.r;
  const float L = r.uni(4.f, 5.f) * d, H = r.uni(2.0f, 2.4f) * d, wr = 0.28f * d;
  const float x0 = x - L / 2, x1 = x + L / 2, base = yf - 0.25f * d;
  const float cab = 0.24f * L;
  const float box0 = dir > 0 ? x0 : x0 + cab, box1 = dir > 0 ? x1 - cab : x1;
  const Col boxc = jit(Col{225, 225, 215}, r, 10), stripe = hsvf(r.uni(0.f, 1.f), 0.8f, 0.7f);
  const Col cabc = jit(Col{240, 140, 30}, r, 15);
  s.paint(rect(box0, base - H, box1, base), kTruck, [&](float px, float py) {
    const float v = (base - py) / H;
    return s.tex(v > 0.2f && v < 0.32f ? stripe : boxc * (0.92f + 0.16f * v), px, py, 4.f, 3.f);
  });
  const float cx0 = dir > 0 ? box1 : x0, cx1 = dir > 0 ? x1 : box0;
  s.paint(rect(cx0, base - 0.7f * H, cx1, base), kTruck, cabc, 4.f, 2.f);
  const float wx0 = dir > 0 ? cx0 + 0.25f * cab : cx0 + 0.15f * cab;
  s.paint(rect(wx0, base - 0.66f * H, wx0 + 0.6f * cab, base - 0.42f * H), kTruck, Col{60, 80, 100}, 3.f, 0.f);
  draw_wheels(s, kTruck, x0 + 0.12f * L, x1 - 0.12f * L, yf, wr, 3);
  s.paint(rect(x0, base, x1, base + 0.08f * d), kTruck, Col{40, 40, 42}, 3.f, 0.f);
}

void draw_bus(Scene& s, float x, float yf, float d, float dir) {
  Rng& r = s.r;
  const float L = r.uni(5.f, 6.5f) * d, H = r.uni(1.9f, 2.2f) * d, wr = 0.27f * d;
  const float x0 = x - L / 2, x1 = x + L / 2, base = yf - 0.2f * d;
  static const Col kBusColours[] = {{235, 190, 20}, {200, 35, 35}, {40, 140, 70}};
  const Col body = jit(kBusColours[r.range(0, 2)], r, 12), band{35, 45, 60}, white{235, 235, 230};
  const float pitch = r.uni(0.75f, 0.95f) * d;
  s.paint(rect(x0, base - H, x1, base), kBus, [&](float px, float py) {
    const float v = (base - py) / H;
    if (v > 0.52f && v < 0.86f && frac((px - x0) / pitch) > 0.12f && px > x0 + 0.1f * d && px < x1 - 0.1f * d)
      return s.tex(band + grey(25.f * frac((px + py) / (0.6f * d))), px, py, 3.f, 0.f);
    if (v > 0.4f && v < 0.47f) return s.tex(white, px, py, 3.f, 0.f);
    return s.tex(body, px, py, 4.f, 3.f);
  });
  (void)dir;
  draw_wheels(s, kBus, x0 + 0.15f * L, x1 - 0.18f * L, yf, wr, 2);
}

void draw_train(Scene& s, float x, float yf, float d) {
  Rng& r = s.r;
  // the rail bed (void: rail track) across the image, then the tram on it
  const float bed0 = yf - 0.06f * d, bed1 = std::min(float(s.H), yf + 0.16f * d);
  s.paint(rect(0, bed0, float(s.W), bed1), kRailTrack, [&](float px, float py) {
    const bool rail = std::abs(py - (yf + 0.02f * d)) < std::max(0.8f, 0.025f * d);
    return s.tex(rail ? Col{150, 150, 155} : Col{105, 95, 85}, px, py, 25.f, 5.f);
  });
  const float L = r.uni(8.f, 11.f) * d, H = r.uni(2.1f, 2.4f) * d;
  const float x0 = x - L / 2, x1 = x + L / 2, base = yf - 0.08f * d;
  const Col body = jit(Col{228, 230, 232}, r, 6), stripe = r.chance(0.5f) ? Col{30, 70, 170} : Col{190, 30, 40};
  const float pitch = r.uni(1.0f, 1.3f) * d;
  const float rr = 0.35f * d;
  s.paint(Shape{x0, base - H, x1, base, [&](float px, float py) {
                  if (px < x0 || px >= x1 || py < base - H || py >= base) return false;
                  // rounded ends
                  const float cx = std::clamp(px, x0 + rr, x1 - rr), cy = std::max(py, base - H + rr);
                  return (px - cx) * (px - cx) + (py - cy) * (py - cy) <= rr * rr || py >= base - H + rr ||
                         (px >= x0 + rr && px < x1 - rr);
                }},
          kTrain, [&](float px, float py) {
            const float v = (base - py) / H;
            if (v < 0.22f) return s.tex(stripe, px, py, 3.f, 0.f);
            if (v > 0.5f && v < 0.82f && frac((px - x0) / pitch) > 0.2f && frac((px - x0) / pitch) < 0.9f)
              return s.tex(Col{40, 50, 60}, px, py, 3.f, 0.f);
            return s.tex(body, px, py, 3.f, 2.f);
          });
  // pantograph
  const float pw = std::max(1.f, 0.03f * d);
  s.paint(capsule(x - 0.4f * d, base - H, x, base - H - 0.45f * d, pw), kTrain, Col{45, 45, 50}, 2.f, 0.f);
  s.paint(capsule(x, base - H - 0.45f * d, x + 0.4f * d, base - H, pw), kTrain, Col{45, 45, 50}, 2.f, 0.f);
}

struct Thing {
  float Z;
  std::function<void()> draw;
};

// ---- the whole image ----

SynthSegImage render(uint64_t seed, int W, int H, int featured) {
  Rng r(seed);
  Canvas cv(W, H);
  Scene s(r, cv);
  s.yh = H * r.uni(0.36f, 0.46f);
  s.xv = W * r.uni(0.38f, 0.62f);
  s.G = float(H) - s.yh;
  Street st{};
  draw_background(s, st, featured == fTerrain);
  auto want = [&](int f, float p) { return featured == f || r.chance(p); };

  // walls, fences, hedges along the facades' feet
  const bool wall = want(fWall, 0.35f), fence = want(fFence, 0.35f), hedge = r.chance(0.4f);
  auto band_range = [&](float& z0, float& z1) {
    z0 = r.uni(0.8f, 2.5f);
    z1 = z0 + r.uni(2.f, 6.f);
  };
  if (wall) {
    const float F = r.chance(0.5f) ? st.fl : st.fr;
    float z0, z1;
    band_range(z0, z1);
    const float h = r.uni(0.8f, 1.4f), course = r.uni(0.14f, 0.2f), brick = r.uni(0.35f, 0.5f);
    const Col c = wall_colour(r), mortar = c * 0.72f;
    facade_band(s, F, z0, z1, h, kWall, [&](float px, float py, float Z, float v) {
      const int row = int(std::floor(v / course));
      const bool joint = frac(v / course) < 0.14f || frac(Z / brick + 0.5f * (row & 1)) < 0.1f;
      return s.tex(joint && s.G / Z > 6.f ? mortar : c, px, py, 5.f, 4.f);
    });
  }
  if (fence) {
    const float F = r.chance(0.5f) ? st.fl : st.fr;
    float z0, z1;
    band_range(z0, z1);
    const float h = r.uni(0.9f, 1.4f), k = r.uni(3.f, 5.f);
    const Col c = fence_colour(r), gap = c * 0.45f;
    facade_band(s, F, z0, z1, h, kFence, [&](float px, float py, float Z, float v) {
      const bool slat = frac(Z * k * 0.25f + v * k) < 0.35f || frac(Z * k * 0.25f - v * k) < 0.35f ||
                        v > h - 0.08f;
      return s.tex(slat ? c : gap, px, py, 4.f, 2.f);
    });
  }
  if (hedge) {
    const float F = r.chance(0.5f) ? st.fl : st.fr;
    float z0, z1;
    band_range(z0, z1);
    const float h = r.uni(0.4f, 0.8f);
    const Col c = veg_colour(r);
    facade_band(s, F, z0, z1, h, kVegetation,
                [&](float px, float py, float, float) { return s.tex(c, px, py, 30.f, 22.f); });
  }

  std::vector<Thing> things;
  auto side_walk_x = [&](bool left) { return left ? r.uni(st.sl + 0.15f, st.rl - 0.15f) : r.uni(st.rr + 0.15f, st.sr - 0.15f); };
  auto dir_rand = [&] { return r.chance(0.5f) ? 1.f : -1.f; };
  // poles with traffic lights and signs
  int poles = r.range(0, 2);
  const bool force_light = featured == fLight, force_sign = featured == fSign;
  if ((featured == fPole || force_light || force_sign) && poles == 0) poles = 1;
  for (int i = 0; i < poles; ++i) {
    const bool left = r.chance(0.5f);
    const float X = left ? st.rl - r.uni(0.1f, 0.3f) : st.rr + r.uni(0.1f, 0.3f);
    const float Z = r.uni(1.15f, 3.f);
    const bool light = (i == 0 && force_light) || r.chance(0.35f);
    const bool sign = (i == 0 && force_sign) || r.chance(0.4f);
    const float dir = left ? 1.f : -1.f;
    things.push_back({Z, [&s, X, Z, light, sign, dir] {
                        draw_pole(s, s.x_at(X, Z), s.foot_y(Z), s.d_at(Z), light, sign, dir);
                      }});
  }
  // trees
  int trees = r.chance(0.5f) ? r.range(1, 2) : 0;
  if (featured == fVegetation && trees == 0) trees = 1;
  for (int i = 0; i < trees; ++i) {
    const bool left = r.chance(0.5f);
    const float X = left ? st.sl + r.uni(0.1f, 0.35f) : st.sr - r.uni(0.1f, 0.35f);
    const float Z = r.uni(1.3f, 4.5f);
    things.push_back({Z, [&s, X, Z] { draw_tree(s, s.x_at(X, Z), s.foot_y(Z), s.d_at(Z)); }});
  }
  // pedestrians
  int people = r.chance(0.55f) ? r.range(1, 3) : 0;
  if (featured == fPerson && people == 0) people = 1;
  for (int i = 0; i < people; ++i) {
    const float X = side_walk_x(r.chance(0.5f)), Z = r.uni(1.2f, 3.5f), dir = dir_rand();
    things.push_back({Z, [&s, X, Z, dir] {
                        draw_figure(s, s.x_at(X, Z), s.foot_y(Z), s.d_at(Z), false, dir);
                      }});
  }
  // cyclists and motorcyclists (riders), parked two-wheelers
  const bool bike_rider = featured == fRider ? !r.chance(0.5f) : r.chance(0.3f);
  const bool moto_rider = (featured == fRider && !bike_rider) || r.chance(0.22f);
  const bool bike = bike_rider || featured == fBicycle || r.chance(0.1f);
  const bool moto = moto_rider || featured == fMotorcycle || r.chance(0.1f);
  for (int k = 0; k < 2; ++k) {
    const bool present = k == 0 ? bike : moto;
    if (!present) continue;
    const bool ridden = k == 0 ? bike_rider : moto_rider;
    const float X = ridden ? r.uni(st.rl + 0.3f, st.rr - 0.3f) : side_walk_x(r.chance(0.5f));
    const float Z = r.uni(1.2f, 3.2f), dir = dir_rand();
    things.push_back({Z, [&s, X, Z, dir, ridden, k] {
                        const float x = s.x_at(X, Z), yf = s.foot_y(Z), d = s.d_at(Z);
                        const float seat = k == 0 ? draw_bicycle(s, x, yf, d, dir)
                                                  : draw_motorcycle(s, x, yf, d, dir);
                        if (ridden) draw_figure(s, x - dir * 0.1f * d, yf, d, true, dir, seat);
                      }});
  }
  // vehicles on the road
  int cars = r.chance(0.7f) ? r.range(1, 3) : 0;
  if (featured == fCar && cars == 0) cars = 1;
  for (int i = 0; i < cars; ++i) {
    const float X = r.uni(st.rl + 0.5f, st.rr - 0.5f), Z = r.uni(1.5f, 5.f), dir = dir_rand();
    things.push_back({Z, [&s, X, Z, dir] { draw_car(s, s.x_at(X, Z), s.foot_y(Z), s.d_at(Z), dir); }});
  }
  if (want(fTruck, 0.15f)) {
    const float X = r.uni(st.rl + 0.5f, st.rr - 0.5f), Z = r.uni(2.6f, 6.f), dir = dir_rand();
    things.push_back({Z, [&s, X, Z, dir] { draw_truck(s, s.x_at(X, Z), s.foot_y(Z), s.d_at(Z), dir); }});
  }
  if (want(fBus, 0.15f)) {
    const float X = r.uni(st.rl + 0.5f, st.rr - 0.5f), Z = r.uni(3.f, 6.5f), dir = dir_rand();
    things.push_back({Z, [&s, X, Z, dir] { draw_bus(s, s.x_at(X, Z), s.foot_y(Z), s.d_at(Z), dir); }});
  }
  if (want(fTrain, 0.1f)) {
    const float X = r.uni(-0.8f, 0.8f), Z = r.uni(3.5f, 7.f);
    things.push_back({Z, [&s, X, Z] { draw_train(s, s.x_at(X, Z), s.foot_y(Z), s.d_at(Z)); }});
  }
  // void: clutter boxes on the sidewalk
  if (r.chance(0.35f)) {
    const float X = side_walk_x(r.chance(0.5f)), Z = r.uni(1.3f, 4.f);
    const Col c = jit(Col{90, 110, 80}, r, 25);
    things.push_back({Z, [&s, X, Z, c] {
                        const float x = s.x_at(X, Z), yf = s.foot_y(Z), d = s.d_at(Z);
                        s.paint(rect(x - 0.25f * d, yf - 0.6f * d, x + 0.25f * d, yf), kStatic, c, 6.f, 3.f);
                      }});
  }
  std::stable_sort(things.begin(), things.end(), [](const Thing& a, const Thing& b) { return a.Z > b.Z; });
  for (const Thing& t : things) t.draw();

  // void: the ego vehicle's bonnet
  if (r.chance(0.3f)) {
    const float hmax = r.uni(0.05f, 0.1f) * H, cx = W * r.uni(0.4f, 0.6f);
    const Col c = car_colour(r) * 0.7f;
    s.paint(Shape{0, H - hmax, float(W), float(H), [=](float x, float y) {
                    const float t = (x - cx) / (0.6f * W);
                    return y >= H - hmax * (1.f - 0.6f * t * t);
                  }},
            kEgo, c, 3.f, 2.f);
  }

  // camera: brightness, tint, then 8 bits and sensor noise
  const float gain = r.uni(0.85f, 1.12f);
  const Col tint{r.uni(0.94f, 1.06f), r.uni(0.94f, 1.06f), r.uni(0.94f, 1.06f)};
  SynthSegImage out;
  out.image = Image(W, H, 3);
  for (size_t i = 0; i < size_t(W) * H; ++i)
    for (int c = 0; c < 3; ++c) out.image.pixels[3 * i + c] = u8(cv.rgb[3 * i + c] * gain * tint[size_t(c)]);
  add_noise(out.image, r, r.uni(1.5f, 4.f));
  out.labels = Image(W, H, 1);
  out.labels.pixels = cv.id;
  return out;
}

const char* const kTrainCities[] = {"aachen", "bochum", "bremen", "cologne", "darmstadt", "erfurt"};
const char* const kValCities[] = {"frankfurt", "lindau", "munster"};

}  // namespace

SynthSegImage render_synthetic_street(uint64_t seed, int width, int height, int featured) {
  HR_CHECK(width >= 64 && height >= 32 && width <= kMaxSide && height <= kMaxSide,
           "synthetic segmentation: image size ", width, "x", height, " outside 64x32..",
           kMaxSide, "x", kMaxSide);
  HR_CHECK(featured >= -1 && featured < kNumFeatured, "synthetic segmentation: featured class ",
           featured, " outside -1..", kNumFeatured - 1);
  return render(seed, width, height, featured);
}

uint64_t synthetic_street_seed(uint64_t seed, int split, int64_t index) {
  uint64_t x = seed ^ 0x5E65CA9Eull;
  uint64_t y = splitmix64(x) + (uint64_t(split) << 56) + uint64_t(index);
  return splitmix64(y);
}

std::array<std::string, 2> synthetic_street_paths(int split, int64_t index, int64_t count) {
  const int n = split == 0 ? 6 : 3;
  const char* const* cities = split == 0 ? kTrainCities : kValCities;
  const int64_t per = (count + n - 1) / n;  // contiguous blocks of images per city
  const int c = int(index / per);
  const int64_t seq = index % per;
  const std::string s = split == 0 ? "train" : "val", city = cities[c];
  char stem[96];
  std::snprintf(stem, sizeof stem, "%s_%06lld_000019", city.c_str(), static_cast<long long>(seq));
  return {"leftImg8bit/" + s + "/" + city + "/" + stem + "_leftImg8bit.png",
          "gtFine/" + s + "/" + city + "/" + stem + "_gtFine_labelIds.png"};
}

void generate_synthetic_cityscapes(const std::string& out_dir, const SynthSegOptions& opt,
                                   bool progress) {
  namespace fs = std::filesystem;
  HR_CHECK(opt.train_images >= 1 && opt.val_images >= 1 && opt.train_images <= 10000000 &&
               opt.val_images <= 10000000,
           "synthetic segmentation: 1..10000000 train and val images, got ", opt.train_images,
           " and ", opt.val_images);
  HR_CHECK(opt.width >= 64 && opt.height >= 32 && opt.width <= kMaxSide && opt.height <= kMaxSide,
           "synthetic segmentation: image size ", opt.width, "x", opt.height, " outside 64x32..",
           kMaxSide, "x", kMaxSide);
  HR_CHECK(opt.threads >= 0, "synthetic segmentation: threads must be >= 0, got ", opt.threads);
  const fs::path root(out_dir);
  const fs::path lists = root / "list" / "cityscapes";
  const std::string split_names[2] = {"train", "val"};
  const int64_t counts[2] = {opt.train_images, opt.val_images};
  {
    std::error_code ec;
    fs::create_directories(lists, ec);
    if (ec) throw Error(str_cat("cannot create directory ", lists.string(), ": ", ec.message()));
    for (const auto& s : split_names) {  // an earlier set's lists would make a failed run look complete
      fs::remove(lists / (s + ".lst"), ec);
      if (ec) throw Error(str_cat("cannot remove ", (lists / (s + ".lst")).string(), ": ", ec.message()));
    }
  }
  // folders, and files of an earlier, larger run in the synthetic cities' folders
  for (int sp = 0; sp < 2; ++sp) {
    std::vector<std::string> keep;
    for (int64_t i = 0; i < counts[sp]; ++i) {
      const auto p = synthetic_street_paths(sp, i, counts[sp]);
      keep.push_back((root / p[0]).string());
      keep.push_back((root / p[1]).string());
    }
    std::sort(keep.begin(), keep.end());
    const int n = sp == 0 ? 6 : 3;
    const char* const* cities = sp == 0 ? kTrainCities : kValCities;
    for (int c = 0; c < n; ++c)
      for (const char* top : {"leftImg8bit", "gtFine"}) {
        const fs::path d = root / top / split_names[sp] / cities[c];
        std::error_code ec;
        fs::create_directories(d, ec);
        if (ec) throw Error(str_cat("cannot create directory ", d.string(), ": ", ec.message()));
        std::vector<fs::path> stale;
        for (const auto& e : fs::directory_iterator(d, ec)) {
          const std::string f = e.path().filename().string();
          const bool ours = f.rfind(std::string(cities[c]) + "_", 0) == 0 &&
                            (f.size() > 16 && (f.find("_leftImg8bit.png") != std::string::npos ||
                                               f.find("_gtFine_labelIds.png") != std::string::npos));
          if (ours && !std::binary_search(keep.begin(), keep.end(), e.path().string()))
            stale.push_back(e.path());
        }
        if (ec) throw Error(str_cat("cannot list ", d.string(), ": ", ec.message()));
        for (const fs::path& p : stale)
          if (!fs::remove(p, ec) && ec)
            throw Error(str_cat("cannot remove ", p.string(), ": ", ec.message()));
      }
  }
  const int64_t total = counts[0] + counts[1];
  render_all(total, opt.threads, progress, [&](int64_t i) {
    const int sp = i < counts[0] ? 0 : 1;
    const int64_t k = sp == 0 ? i : i - counts[0];
    const SynthSegImage im = render_synthetic_street(synthetic_street_seed(opt.seed, sp, k),
                                                     opt.width, opt.height, int(k % kNumFeatured));
    const auto p = synthetic_street_paths(sp, k, counts[sp]);
    write_image(im.image, (root / p[0]).string());
    write_image(im.labels, (root / p[1]).string());
  });
  // the lists last: a folder holding val.lst is complete
  for (int sp = 0; sp < 2; ++sp) {
    std::string text;
    for (int64_t k = 0; k < counts[sp]; ++k) {
      const auto p = synthetic_street_paths(sp, k, counts[sp]);
      text += p[0] + "\t" + p[1] + "\n";
    }
    const fs::path f = lists / (split_names[sp] + ".lst");
    write_file_atomic(f.string(), text.data(), text.size(), str_cat("cannot write ", f.string()));
  }
}

}  // namespace hr::data
