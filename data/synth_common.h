// What the built-in synthetic datasets (data/synth.cpp: pose, data/synth_cls.cpp:
// classification, data/synth_det.cpp: detection) share: one random generator per image, random colours and sensor noise. Every
// draw is computed here, not by the standard library's distributions, so a dataset is the same
// on every platform; the image writers depend only on (seed, index), never on threads.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "data/draw.h"
#include "data/image.h"

namespace hr::data::synth {

constexpr float kPi = 3.14159265358979f;
constexpr float kDeg = kPi / 180.f;

// splitmix64 advancing its state: the seeding sequence of Rng.
inline uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// xoshiro256** seeded by splitmix64, with our own float/normal transforms.
struct Rng {
  uint64_t s[4];
  explicit Rng(uint64_t seed) {
    for (auto& v : s) v = splitmix64(seed);
  }
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t next() {
    const uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
  }
  float uni() { return float(next() >> 40) * (1.f / 16777216.f); }  // [0, 1)
  float uni(float a, float b) { return a + (b - a) * uni(); }
  float deg(float a, float b) { return uni(a, b) * kDeg; }
  int range(int lo, int hi) { return lo + int((next() >> 33) % uint64_t(hi - lo + 1)); }
  bool chance(float p) { return uni() < p; }
  float normal() {  // Box-Muller
    const double u1 = (double(next() >> 11) + 1.0) * 0x1.0p-53;
    const double u2 = double(next() >> 11) * 0x1.0p-53;
    return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * 3.141592653589793 * u2));
  }
};

inline uint8_t u8(float v) { return uint8_t(std::clamp(v, 0.f, 255.f) + 0.5f); }
inline RGB shade(RGB c, float k) { return {u8(c[0] * k), u8(c[1] * k), u8(c[2] * k)}; }
inline RGB jitter(RGB c, Rng& rng, float amount) {
  return {u8(c[0] + rng.uni(-amount, amount)), u8(c[1] + rng.uni(-amount, amount)),
          u8(c[2] + rng.uni(-amount, amount))};
}
inline RGB hsv(float h, float s, float v) {
  auto ch = [&](float off) {
    const float k = std::fmod(h * 6.f + off, 6.f);
    return u8(255.f * v * (1.f - s * std::clamp(std::min(k, 4.f - k), 0.f, 1.f)));
  };
  return {ch(5.f), ch(3.f), ch(1.f)};
}
// A grey one time in five, else any hue at a moderate saturation and value.
inline RGB random_colour(Rng& rng) {
  if (rng.chance(0.2f)) {
    const uint8_t g = u8(rng.uni(20.f, 235.f));
    return {g, g, g};
  }
  const float h = rng.uni(), sat = rng.uni(0.15f, 0.9f), val = rng.uni(0.2f, 0.95f);
  return hsv(h, sat, val);
}

// Per-pixel sensor noise of standard deviation ~sigma on every channel.
inline void add_noise(Image& img, Rng& rng, float sigma) {
  uint64_t st = rng.next() | 1;
  for (auto& p : img.pixels) {
    st ^= st << 13;
    st ^= st >> 7;
    st ^= st << 17;
    // sum of four uniforms: close enough to a normal for sensor noise (variance 4/12)
    float s = 0;
    for (int k = 0; k < 4; ++k) s += float((st >> (16 * k)) & 0xFFFF) * (1.f / 65536.f);
    p = u8(p + (s - 2.f) * sigma * 1.732f);
  }
}

// Adds value noise to the float image f (W x H x 3): random values in [-1, 1] drawn from rng on
// a grid of `cell` pixels, interpolated bilinearly, times `amp`; one value for the three
// channels if `mono`.
inline void add_value_noise(std::vector<float>& f, int W, int H, float cell, float amp, bool mono,
                            Rng& rng) {
  const int gw = int(W / cell) + 2, gh = int(H / cell) + 2;
  std::vector<float> grid(size_t(gw) * gh * 3);
  for (auto& g : grid) g = rng.uni(-1.f, 1.f);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const float gx = x / cell, gy = y / cell;
      const int ix = int(gx), iy = int(gy);
      const float tx = gx - ix, ty = gy - iy;
      float* p = &f[(size_t(y) * W + x) * 3];
      for (int k = 0; k < 3; ++k) {
        const int kk = mono ? 0 : k;
        auto g = [&](int a, int b) { return grid[(size_t(b) * gw + a) * 3 + kk]; };
        const float v = (g(ix, iy) * (1 - tx) + g(ix + 1, iy) * tx) * (1 - ty) +
                        (g(ix, iy + 1) * (1 - tx) + g(ix + 1, iy + 1) * tx) * ty;
        p[k] += amp * v;
      }
    }
}

// The pose dataset's people and backgrounds (defined in data/synth.cpp), for the other datasets
// to draw with.
//
// One person: a random pose, proportions, clothes and view, its standing height `height` pixels,
// turned by `angle` radians, seen from the back when `back` (face hidden, mirrored). Built around
// the origin: translate() it into place. paint() draws it in colour, or with `mask` its coverage
// in white (on a 1-channel image, >= 128 where at least half a pixel is covered).
class PersonFigure {
 public:
  PersonFigure();
  ~PersonFigure();
  PersonFigure(PersonFigure&&) noexcept;
  PersonFigure& operator=(PersonFigure&&) noexcept;
  static PersonFigure random(Rng& rng, float height, float angle, bool back);
  std::array<float, 4> extent() const;  // x0, y0, x1, y1 of everything it draws
  void translate(float dx, float dy);
  void paint(Image& img, bool mask) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};
// The pose dataset's background: a gradient under stripes, checkers, value noise or translucent
// blobs, with nothing shaped like a limb or a head.
void pose_background(Image& img, Rng& rng);

// Runs render(i) for every i in [0, total) on `threads` threads (0: every core), with a progress
// bar on stderr if `progress`. The first exception stops the others and is rethrown (as an Error
// with its message) once every thread has ended. Defined in data/synth.cpp.
void render_all(int64_t total, int threads, bool progress,
                const std::function<void(int64_t)>& render);

}  // namespace hr::data::synth
