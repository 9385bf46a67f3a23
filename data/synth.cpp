// The synthetic pose dataset. A figure is a 2-D skeleton posed in a body frame (standing height
// 1, y down, +x the person's left, origin between the hips), turned into a list of shapes
// (tapered limbs, torso polygons, head, face marks), mirrored for a back view, scaled, rotated and
// placed in the image. Shapes are rasterised twice: into a coverage mask (the silhouette, which
// decides areas, boxes and occlusion) and into the picture. Every random draw comes from one
// generator seeded per image, so an image depends only on (seed, index), never on threads.
#include "data/synth.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>

#include "data/draw.h"
#include "data/synth_common.h"
#include "engine/error.h"
#include "engine/progress.h"

namespace hr::data {

namespace {

using namespace synth;  // Rng, colours, noise (data/synth_common.h)

constexpr int kMinArea = 32 * 32;   // smallest visible silhouette of a person kept
constexpr int kMinKeypoints = 4;    // fewest labelled joints inside the image
constexpr uint8_t kOccluder = 255;  // owner value of an occluding object

// ---------------------------------------------------------------------------------------------
// Geometry.

struct V2 {
  float x = 0, y = 0;
};
V2 operator+(V2 a, V2 b) { return {a.x + b.x, a.y + b.y}; }
V2 operator-(V2 a, V2 b) { return {a.x - b.x, a.y - b.y}; }
V2 operator*(V2 a, float k) { return {a.x * k, a.y * k}; }
V2 rot(V2 v, float a) {
  const float c = std::cos(a), s = std::sin(a);
  return {v.x * c - v.y * s, v.x * s + v.y * c};
}
V2 lerp(V2 a, V2 b, float t) { return a + (b - a) * t; }
float norm(V2 v) { return std::hypot(v.x, v.y); }

// ---------------------------------------------------------------------------------------------
// Shapes: what a figure or an occluder is drawn with, in image coordinates.

struct Shape {
  enum Kind { Circle, Ellipse, Tapered, Polygon } kind;
  float a[6];
  std::vector<float> xy;
  RGB c;
};

void paint(const std::vector<Shape>& shapes, Image& img, bool mask) {
  for (const Shape& s : shapes) {
    const RGB c = mask ? RGB{255, 255, 255} : s.c;
    switch (s.kind) {
      case Shape::Circle: fill_circle(img, s.a[0], s.a[1], s.a[2], c); break;
      case Shape::Ellipse: fill_ellipse(img, s.a[0], s.a[1], s.a[2], s.a[3], s.a[4], c); break;
      case Shape::Tapered:
        draw_tapered(img, s.a[0], s.a[1], s.a[2], s.a[3], s.a[4], s.a[5], c);
        break;
      case Shape::Polygon: fill_polygon(img, s.xy, c); break;
    }
  }
}

// Bounding box (x0, y0, x1, y1) of a shape list.
std::array<float, 4> extent(const std::vector<Shape>& shapes) {
  std::array<float, 4> b{1e30f, 1e30f, -1e30f, -1e30f};
  auto add = [&](float x, float y, float r) {
    b[0] = std::min(b[0], x - r);
    b[1] = std::min(b[1], y - r);
    b[2] = std::max(b[2], x + r);
    b[3] = std::max(b[3], y + r);
  };
  for (const Shape& s : shapes) {
    switch (s.kind) {
      case Shape::Circle: add(s.a[0], s.a[1], s.a[2]); break;
      case Shape::Ellipse: add(s.a[0], s.a[1], std::max(s.a[2], s.a[3])); break;
      case Shape::Tapered:
        add(s.a[0], s.a[1], s.a[2]);
        add(s.a[3], s.a[4], s.a[5]);
        break;
      case Shape::Polygon:
        for (size_t i = 0; i + 1 < s.xy.size(); i += 2) add(s.xy[i], s.xy[i + 1], 0.f);
        break;
    }
  }
  return b;
}

void translate(std::vector<Shape>& shapes, V2 t) {
  for (Shape& s : shapes) {
    if (s.kind == Shape::Polygon) {
      for (size_t i = 0; i + 1 < s.xy.size(); i += 2) {
        s.xy[i] += t.x;
        s.xy[i + 1] += t.y;
      }
      continue;
    }
    s.a[0] += t.x;
    s.a[1] += t.y;
    if (s.kind == Shape::Tapered) {
      s.a[3] += t.x;
      s.a[4] += t.y;
    }
  }
}

// Records shapes given in the body frame, mapped to the image by mirror (back view), rotation
// and scale (translation comes later, once the figure's extent is known).
struct Builder {
  float mirror = 1, angle = 0, scale = 1;
  float outline = 0.005f;  // body units
  std::vector<Shape> shapes;

  V2 map(V2 p) const { return rot(V2{mirror * p.x, p.y}, angle) * scale; }
  void circle(V2 c, float r, RGB col) {
    const V2 q = map(c);
    shapes.push_back({Shape::Circle, {q.x, q.y, r * scale, 0, 0, 0}, {}, col});
  }
  void ellipse(V2 c, float rx, float ry, float body_angle, RGB col) {
    const V2 q = map(c);
    shapes.push_back({Shape::Ellipse,
                      {q.x, q.y, rx * scale, ry * scale, angle + mirror * body_angle, 0},
                      {},
                      col});
  }
  void tapered(V2 a, float ra, V2 b, float rb, RGB col) {
    const V2 p = map(a), q = map(b);
    shapes.push_back({Shape::Tapered, {p.x, p.y, ra * scale, q.x, q.y, rb * scale}, {}, col});
  }
  void polygon(const std::vector<V2>& pts, RGB col) {
    Shape s{Shape::Polygon, {}, {}, col};
    for (V2 p : pts) {
      const V2 q = map(p);
      s.xy.push_back(q.x);
      s.xy.push_back(q.y);
    }
    shapes.push_back(std::move(s));
  }
  // A body part with a dark rim, so parts stay apart where they cross.
  void limb(V2 a, float ra, V2 b, float rb, RGB col) {
    tapered(a, ra + outline, b, rb + outline, shade(col, 0.5f));
    tapered(a, ra, b, rb, col);
  }
  void blob(V2 c, float r, RGB col) {
    circle(c, r + outline, shade(col, 0.5f));
    circle(c, r, col);
  }
};

// ---------------------------------------------------------------------------------------------
// The figure.

enum Joint {
  kNose, kLEye, kREye, kLEar, kREar, kLShoulder, kRShoulder, kLElbow, kRElbow, kLWrist, kRWrist,
  kLHip, kRHip, kLKnee, kRKnee, kLAnkle, kRAnkle
};

struct Figure {
  std::array<V2, kNumJoints> kp;  // image coordinates
  std::array<bool, kNumJoints> labelled;
  std::vector<Shape> shapes;
};

// Angles of one limb: upper segment from "down" (positive: away from the body's midline), the
// lower segment relative to the upper, and the foreshortening of each (1: in the image plane).
struct LimbPose {
  float up = 0, bend = 0, f_up = 1, f_low = 1;
};

struct BodyPose {
  float lean = 0, torso_f = 1, shoulder_tilt = 0, pelvis_tilt = 0, head_tilt = 0, yaw = 0;
  LimbPose arm[2], leg[2];  // [0] left, [1] right
};

LimbPose limb(Rng& rng, float u0, float u1, float b0, float b1, float f0, float f1, float g0,
              float g1) {
  return {rng.deg(u0, u1), rng.deg(b0, b1), rng.uni(f0, f1), rng.uni(g0, g1)};
}

// Joint angles within human ranges, by kind of pose.
BodyPose sample_pose(Rng& rng) {
  BodyPose p;
  p.lean = rng.normal() * 3.f * kDeg;
  p.shoulder_tilt = rng.normal() * 2.5f * kDeg;
  p.pelvis_tilt = rng.normal() * 2.5f * kDeg;
  p.head_tilt = std::clamp(rng.normal() * 8.f, -25.f, 25.f) * kDeg;
  p.yaw = std::clamp(rng.normal() * 22.f, -55.f, 55.f) * kDeg;
  auto stand_arm = [&] { return limb(rng, 3, 28, -8, 25, 0.88f, 1, 0.85f, 1); };
  auto stand_leg = [&] { return limb(rng, -1, 11, -7, 4, 0.93f, 1, 0.92f, 1); };
  const float kind = rng.uni();
  if (kind < 0.18f) {  // standing
    for (int s = 0; s < 2; ++s) p.arm[s] = stand_arm(), p.leg[s] = stand_leg();
  } else if (kind < 0.32f) {  // walking: swinging limbs are foreshortened
    for (int s = 0; s < 2; ++s) {
      p.arm[s] = limb(rng, 0, 18, -8, 30, 0.65f, 1, 0.6f, 1);
      p.leg[s] = limb(rng, -2, 9, -12, 5, 0.8f, 1, 0.75f, 1);
    }
  } else if (kind < 0.47f) {  // one or both arms raised
    for (int s = 0; s < 2; ++s) {
      p.arm[s] = rng.chance(0.75f) ? limb(rng, 60, 175, -75, 45, 0.75f, 1, 0.7f, 1) : stand_arm();
      p.leg[s] = stand_leg();
    }
  } else if (kind < 0.54f) {  // hands on hips
    for (int s = 0; s < 2; ++s) {
      p.arm[s] = limb(rng, 30, 50, -150, -115, 0.85f, 1, 0.8f, 1);
      p.leg[s] = stand_leg();
    }
  } else if (kind < 0.64f) {  // sitting, seen from the front: thighs point at the viewer
    p.lean = rng.normal() * 4.f * kDeg;
    for (int s = 0; s < 2; ++s) {
      p.arm[s] = limb(rng, 0, 25, -75, -15, 0.85f, 1, 0.55f, 1);
      LimbPose l = limb(rng, 5, 38, 0, 0, 0.2f, 0.45f, 0.85f, 1);
      l.bend = rng.deg(-10, 15) - l.up;
      p.leg[s] = l;
    }
  } else if (kind < 0.74f) {  // squatting / bending forward
    p.torso_f = rng.uni(0.55f, 0.85f);
    p.lean = rng.normal() * 6.f * kDeg;
    for (int s = 0; s < 2; ++s) {
      p.arm[s] = limb(rng, 0, 70, -45, 45, 0.7f, 1, 0.7f, 1);
      LimbPose l = limb(rng, 22, 60, 0, 0, 0.5f, 0.85f, 0.8f, 1);
      l.bend = rng.deg(-22, 5) - l.up;
      p.leg[s] = l;
    }
  } else if (kind < 0.82f) {  // kicking / standing on one leg
    const int k = rng.range(0, 1);
    for (int s = 0; s < 2; ++s) p.arm[s] = limb(rng, 10, 100, -40, 50, 0.75f, 1, 0.7f, 1);
    p.leg[k] = limb(rng, 30, 85, -70, 20, 0.65f, 1, 0.7f, 1);
    p.leg[1 - k] = stand_leg();
    p.lean = rng.normal() * 7.f * kDeg;
  } else {  // anything within the joints' ranges
    p.lean = rng.normal() * 10.f * kDeg;
    for (int s = 0; s < 2; ++s) {
      p.arm[s] = limb(rng, -25, 180, -140, 140, 0.6f, 1, 0.6f, 1);
      p.leg[s] = limb(rng, -10, 65, -90, 30, 0.6f, 1, 0.6f, 1);
    }
  }
  return p;
}

const RGB kSkin[] = {{255, 224, 196}, {241, 194, 125}, {224, 172, 105},
                     {198, 134, 66},  {141, 85, 36},   {92, 56, 36}};
const RGB kHair[] = {{20, 16, 14},   {55, 35, 22},   {100, 65, 35},
                     {190, 160, 100}, {150, 150, 150}, {140, 60, 25}};

// Builds one person: pose, proportions, clothing, then its shapes and keypoints mapped to the
// image by the builder's mirror/rotation/scale (not yet translated).
Figure build_figure(Rng& rng, Builder& b, bool back) {
  const BodyPose p = sample_pose(rng);
  // proportions (standing height 1) and build
  const float len = rng.uni(0.94f, 1.06f), build = rng.uni(0.85f, 1.2f);
  const float torso = 0.30f * len, sw = rng.uni(0.105f, 0.125f) * build,
              hw = rng.uni(0.058f, 0.072f) * build;
  const float neck_len = rng.uni(0.10f, 0.115f), head_r = rng.uni(0.056f, 0.066f);
  const float l_upper = 0.17f * len, l_fore = 0.15f * len, l_thigh = 0.24f * len,
              l_shin = 0.24f * len;
  // colours and clothing
  const RGB skin = jitter(kSkin[rng.range(0, 5)], rng, 12);
  const RGB hair = rng.chance(0.08f) ? shade(skin, 0.9f) : jitter(kHair[rng.range(0, 5)], rng, 10);
  const RGB top = random_colour(rng), bottom = random_colour(rng);
  const RGB shoes = rng.chance(0.5f) ? jitter(RGB{35, 30, 30}, rng, 20) : random_colour(rng);
  // sleeves: none, short (half the upper arm), to the elbow, long
  const float sleeve = std::array<float, 4>{0.f, 0.5f, 1.f, 2.f}[rng.range(0, 3)];
  const int legwear = rng.chance(0.12f) ? 2 : rng.chance(0.25f) ? 1 : 0;  // trousers/shorts/skirt
  const float shorts = rng.uni(0.4f, 0.75f);  // how far down the thigh shorts reach

  // skeleton in the body frame
  std::array<V2, kNumJoints> j;
  const V2 up = rot(V2{0, -1}, p.lean), down = up * -1.f;
  const V2 side = rot(V2{1, 0}, p.lean + p.shoulder_tilt);
  const V2 hip_side = rot(V2{1, 0}, p.pelvis_tilt), leg_down = rot(V2{0, 1}, p.pelvis_tilt);
  const V2 pelvis{0, 0}, neck = pelvis + up * (torso * p.torso_f);
  j[kLShoulder] = neck + side * sw;
  j[kRShoulder] = neck - side * sw;
  j[kLHip] = pelvis + hip_side * hw;
  j[kRHip] = pelvis - hip_side * hw;
  V2 hand_dir[2], foot_dir[2];
  for (int s = 0; s < 2; ++s) {
    const float sg = s == 0 ? 1.f : -1.f;  // left limbs turn toward +x
    const LimbPose& a = p.arm[s];
    const V2 du = rot(down, -sg * a.up), dl = rot(down, -sg * (a.up + a.bend));
    j[kLElbow + s] = j[kLShoulder + s] + du * (l_upper * a.f_up);
    j[kLWrist + s] = j[kLElbow + s] + dl * (l_fore * a.f_low);
    hand_dir[s] = dl;
    const LimbPose& l = p.leg[s];
    const V2 tu = rot(leg_down, -sg * l.up), tl = rot(leg_down, -sg * (l.up + l.bend));
    j[kLKnee + s] = j[kLHip + s] + tu * (l_thigh * l.f_up);
    j[kLAnkle + s] = j[kLKnee + s] + tl * (l_shin * l.f_low);
    foot_dir[s] = tl;
  }
  const float head_roll = p.lean + p.head_tilt;
  const V2 head = neck + rot(up, p.head_tilt) * (neck_len * (0.75f + 0.25f * p.torso_f));
  // Face points on the head seen as a sphere: a point at azimuth psi (0: facing the viewer,
  // positive toward the person's left) sits at x = r sin(psi) and faces the viewer when
  // cos(psi) > 0; from the back the visible half is the other one.
  auto on_head = [&](float psi, float dy) {
    return head + rot(V2{head_r * 0.92f * std::sin(psi), dy * head_r}, head_roll);
  };
  j[kNose] = on_head(p.yaw, 0.22f);
  j[kLEye] = on_head(p.yaw + 0.5f, -0.12f);
  j[kREye] = on_head(p.yaw - 0.5f, -0.12f);
  j[kLEar] = on_head(p.yaw + kPi / 2, 0.05f);
  j[kREar] = on_head(p.yaw - kPi / 2, 0.05f);
  const float facing = back ? -1.f : 1.f;
  std::array<bool, kNumJoints> labelled;
  labelled.fill(true);
  for (int k = kNose; k <= kREye; ++k) labelled[k] = !back;
  const bool ear_shown[2] = {facing * std::cos(p.yaw + kPi / 2) > -0.3f,
                             facing * std::cos(p.yaw - kPi / 2) > -0.3f};
  labelled[kLEar] = ear_shown[0];
  labelled[kREar] = ear_shown[1];

  // radii (body units)
  const float r_sh = 0.031f * build, r_el = 0.025f * build, r_wr = 0.019f * build;
  const float r_hip = 0.047f * build, r_kn = 0.034f * build, r_an = 0.023f * build;
  const float waist_hw = (hw + 0.03f) * rng.uni(0.95f, 1.1f);

  // legs, then feet
  for (int s = 0; s < 2; ++s) {
    const V2 hip = j[kLHip + s], knee = j[kLKnee + s], ankle = j[kLAnkle + s];
    const RGB leg_c = legwear == 0 ? bottom : skin;
    b.limb(hip, r_hip, knee, r_kn, leg_c);
    b.limb(knee, r_kn * 0.97f, ankle, r_an, leg_c);
    if (legwear == 1) b.tapered(hip, r_hip + 0.004f, lerp(hip, knee, shorts), r_kn * 1.25f, bottom);
  }
  for (int s = 0; s < 2; ++s) {
    const float sg = s == 0 ? 1.f : -1.f;
    const V2 c = j[kLAnkle + s] + foot_dir[s] * 0.028f + hip_side * (sg * 0.01f);
    const float ang = std::atan2(foot_dir[s].y, foot_dir[s].x) + kPi / 2;
    b.ellipse(c, 0.03f + b.outline, 0.02f + b.outline, ang, shade(shoes, 0.5f));
    b.ellipse(c, 0.03f, 0.02f, ang, shoes);
  }
  // skirt over the thighs, pelvis (lower garment), torso (upper garment)
  const V2 waist = lerp(pelvis, neck, 0.38f);
  if (legwear == 2) {
    const V2 hem = lerp(pelvis, lerp(j[kLKnee], j[kRKnee], 0.5f), rng.uni(0.5f, 0.9f));
    const float spread = std::max(norm(j[kLKnee] - j[kRKnee]) * 0.5f + r_kn, hw + 0.07f);
    b.polygon({waist + side * waist_hw, j[kLHip] + hip_side * (r_hip * 0.9f),
               hem + hip_side * (spread + 0.01f), hem - hip_side * (spread + 0.01f),
               j[kRHip] - hip_side * (r_hip * 0.9f), waist - side * waist_hw},
              bottom);
  }
  const V2 crotch = pelvis + leg_down * (r_hip * 1.1f);
  b.polygon({waist + side * (waist_hw + b.outline), j[kLHip] + hip_side * (r_hip + b.outline),
             j[kLHip] + leg_down * (r_hip + b.outline), crotch + leg_down * b.outline,
             j[kRHip] + leg_down * (r_hip + b.outline), j[kRHip] - hip_side * (r_hip + b.outline),
             waist - side * (waist_hw + b.outline)},
            shade(bottom, 0.5f));
  b.polygon({waist + side * waist_hw, j[kLHip] + hip_side * r_hip, j[kLHip] + leg_down * r_hip,
             crotch, j[kRHip] + leg_down * r_hip, j[kRHip] - hip_side * r_hip,
             waist - side * waist_hw},
            bottom);
  const V2 hem = lerp(pelvis, neck, 0.12f);
  auto torso_poly = [&](float o) {
    return std::vector<V2>{neck + side * (0.035f + o) + up * (0.012f + o),
                           j[kLShoulder] + up * (r_sh + o),
                           j[kLShoulder] + side * (r_sh + o),
                           j[kLShoulder] + side * (r_sh * 0.7f + o) + down * (0.09f * p.torso_f),
                           waist + side * (waist_hw + o),
                           hem + side * (waist_hw + 0.008f + o) + down * o,
                           hem - side * (waist_hw + 0.008f + o) + down * o,
                           waist - side * (waist_hw + o),
                           j[kRShoulder] - side * (r_sh * 0.7f + o) + down * (0.09f * p.torso_f),
                           j[kRShoulder] - side * (r_sh + o),
                           j[kRShoulder] + up * (r_sh + o),
                           neck - side * (0.035f + o) + up * (0.012f + o)};
  };
  b.polygon(torso_poly(b.outline), shade(top, 0.5f));
  b.polygon(torso_poly(0.f), top);
  // neck and head
  b.limb(neck + down * 0.01f, 0.024f * build, head, 0.022f * build, skin);
  // head: hair all round, the face a skin oval in front turned with the yaw
  b.blob(head, head_r, hair);
  if (!back) {
    const V2 face = head + rot(V2{0.2f * head_r * std::sin(p.yaw), 0.2f * head_r}, head_roll);
    b.ellipse(face, head_r * 0.8f, head_r * 0.8f, head_roll, skin);
    const RGB dark = {40, 28, 24};
    const float eye_r = std::max(0.09f * head_r, 0.7f / b.scale);
    b.circle(j[kLEye], eye_r, dark);
    b.circle(j[kREye], eye_r, dark);
    b.ellipse(j[kNose], 0.1f * head_r, 0.14f * head_r, head_roll, shade(skin, 0.72f));
    const V2 mouth = on_head(p.yaw, 0.5f);
    b.ellipse(mouth, 0.2f * head_r, 0.06f * head_r, head_roll, shade(skin, 0.55f));
  } else {
    b.ellipse(head + rot(V2{0, head_r * 0.75f}, head_roll), head_r * 0.45f, head_r * 0.25f,
              head_roll, skin);  // nape
  }
  for (int s = 0; s < 2; ++s) {
    if (!ear_shown[s]) continue;
    const float psi = p.yaw + (s == 0 ? kPi / 2 : -kPi / 2);
    const V2 c = head + rot(V2{head_r * std::sin(psi), 0.05f * head_r}, head_roll);
    b.ellipse(c, 0.2f * head_r + b.outline * 0.5f, 0.3f * head_r + b.outline * 0.5f, head_roll,
              shade(skin, 0.5f));
    b.ellipse(c, 0.2f * head_r, 0.3f * head_r, head_roll, shade(skin, 0.9f));
  }
  // arms and hands last: they may cross the torso and the head
  for (int s = 0; s < 2; ++s) {
    const V2 sh = j[kLShoulder + s], el = j[kLElbow + s], wr = j[kLWrist + s];
    b.limb(sh, r_sh, el, r_el, sleeve >= 1.f ? top : skin);
    b.limb(el, r_el * 0.95f, wr, r_wr, sleeve >= 2.f ? top : skin);
    if (sleeve == 0.5f) b.tapered(sh, r_sh, lerp(sh, el, 0.5f), r_el * 1.05f, top);
    b.blob(wr + hand_dir[s] * 0.03f, 0.024f * build, skin);
  }
  // keypoints to the image (translation comes later)
  Figure f;
  for (int k = 0; k < kNumJoints; ++k) f.kp[k] = b.map(j[k]);
  f.labelled = labelled;
  return f;
}

// ---------------------------------------------------------------------------------------------
// Background textures: smooth, periodic or noisy, with nothing shaped like a limb or a head.

void render_background(Image& img, Rng& rng) {
  const int W = img.width, H = img.height;
  std::vector<float> f(size_t(W) * H * 3);
  const RGB c0 = random_colour(rng), c1 = random_colour(rng);
  const float ga = rng.uni(0, 2 * kPi), gc = std::cos(ga), gs = std::sin(ga);
  const float diag = std::hypot(float(W), float(H));
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const float t =
          std::clamp(((x - W * 0.5f) * gc + (y - H * 0.5f) * gs) / diag + 0.5f, 0.f, 1.f);
      float* p = &f[(size_t(y) * W + x) * 3];
      for (int k = 0; k < 3; ++k) p[k] = c0[k] + (c1[k] - c0[k]) * t;
    }
  const int layers = rng.range(1, 2);
  bool blobs = rng.chance(0.25f);
  for (int l = 0; l < layers; ++l) {
    const int kind = rng.range(0, 3);
    const RGB c = random_colour(rng);
    const float alpha = rng.uni(0.15f, 0.6f);
    const float ang = rng.uni(0, kPi), ca = std::cos(ang), sa = std::sin(ang);
    if (kind == 0 || kind == 1) {  // stripes (soft or hard) or checkers
      const float period = rng.uni(6.f, 40.f);
      const bool soft = rng.chance(0.5f);
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
          const float u = (x * ca + y * sa) / period, v = (-x * sa + y * ca) / period;
          float w;
          if (kind == 0) {
            w = soft ? 0.5f + 0.5f * std::sin(2 * kPi * u)
                     : std::clamp((std::abs(u - std::floor(u) - 0.5f) - 0.25f) * period + 0.5f,
                                  0.f, 1.f);
          } else {
            const bool odd = (int(std::floor(u)) + int(std::floor(v))) & 1;
            w = odd ? 1.f : 0.f;
          }
          float* p = &f[(size_t(y) * W + x) * 3];
          for (int k = 0; k < 3; ++k) p[k] += (c[k] - p[k]) * alpha * w;
        }
    } else if (kind == 2) {  // value noise: random values on a coarse grid, bilinear
      const float cell = rng.uni(6.f, 40.f), amp = rng.uni(15.f, 60.f);
      const bool mono = rng.chance(0.5f);
      add_value_noise(f, W, H, cell, amp, mono, rng);
    } else {
      blobs = true;  // a few large translucent blobs, drawn below
    }
  }
  for (size_t i = 0; i < f.size(); ++i) img.pixels[i] = u8(f[i]);
  if (blobs) {
    const int n = rng.range(2, 6);
    const float m = float(std::min(W, H));
    for (int i = 0; i < n; ++i) {
      const float x = rng.uni(0, float(W)), y = rng.uni(0, float(H));
      const float rx = rng.uni(0.15f, 0.5f) * m, ry = rng.uni(0.15f, 0.5f) * m;
      const float ang = rng.uni(0, kPi);
      const RGB c = random_colour(rng);
      fill_ellipse(img, x, y, rx, ry, ang, c, rng.uni(0.2f, 0.5f));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Placement with occlusion bookkeeping.

struct Placed {
  Figure fig;
  int area0 = 0, area = 0;  // visible silhouette when placed and now
};

// Counts, for a mask about to be drawn on top, its own pixels and the pixels it takes from each
// owner.
void coverage_counts(const Image& mask, const std::vector<uint8_t>& owner, int& own,
                     std::vector<int>& lost) {
  own = 0;
  std::fill(lost.begin(), lost.end(), 0);
  for (size_t i = 0; i < owner.size(); ++i) {
    if (mask.pixels[i] < 128) continue;
    ++own;
    const uint8_t o = owner[i];
    if (o > 0 && o != kOccluder) ++lost[o - 1];
  }
}

bool takes_too_much(const std::vector<Placed>& people, const std::vector<int>& lost) {
  for (size_t i = 0; i < people.size(); ++i) {
    const int left = people[i].area - lost[i];
    if (left < kMinArea || left < people[i].area0 / 2) return true;
  }
  return false;
}

bool inside(V2 p, int W, int H) {
  return p.x >= 0.f && p.y >= 0.f && p.x <= float(W - 1) && p.y <= float(H - 1);
}

// Keypoints are stored to 0.01 px; visibility is decided on the stored values.
V2 stored(V2 p) { return {std::round(p.x * 100.f) / 100.f, std::round(p.y * 100.f) / 100.f}; }

size_t pixel_of(V2 p, int W) { return size_t(std::lround(p.y)) * W + size_t(std::lround(p.x)); }

// One new person: figure, scale, rotation and position; false if it does not fit.
bool try_person(Rng& rng, int W, int H, Image& mask, const std::vector<uint8_t>& owner,
                std::vector<Placed>& people, std::vector<int>& lost) {
  Builder b;
  const bool back = rng.chance(0.15f);
  b.mirror = back ? -1.f : 1.f;
  b.angle = rng.chance(0.2f) ? rng.deg(-45, 45) : rng.normal() * 4.f * kDeg;
  b.scale = rng.uni(0.35f, 0.95f) * float(H);
  b.outline = std::max(0.004f, 0.8f / b.scale);
  Figure f = build_figure(rng, b, back);
  f.shapes = std::move(b.shapes);
  // position: the figure's box inside the image, or (truncation) up to 40% outside
  const auto e = extent(f.shapes);
  const float bw = e[2] - e[0], bh = e[3] - e[1];
  const float m = rng.chance(0.25f) ? 0.4f : 0.f;
  auto centre = [&](float size, float span) {
    float lo = size * (0.5f - m), hi = span - size * (0.5f - m);
    if (lo > hi) std::swap(lo, hi);
    return rng.uni(lo, hi);
  };
  const V2 t{centre(bw, float(W)) - 0.5f * (e[0] + e[2]), centre(bh, float(H)) - 0.5f * (e[1] + e[3])};
  translate(f.shapes, t);
  int in_image = 0;
  for (int k = 0; k < kNumJoints; ++k) {
    f.kp[k] = stored(f.kp[k] + t);
    in_image += f.labelled[k] && inside(f.kp[k], W, H);
  }
  if (in_image < kMinKeypoints) return false;
  std::fill(mask.pixels.begin(), mask.pixels.end(), 0);
  paint(f.shapes, mask, true);
  // every labelled joint in the image lies on the figure's own silhouette
  for (int k = 0; k < kNumJoints; ++k)
    if (f.labelled[k] && inside(f.kp[k], W, H) && mask.pixels[pixel_of(f.kp[k], W)] < 128)
      return false;
  int own = 0;
  coverage_counts(mask, owner, own, lost);
  if (own < kMinArea || takes_too_much(people, lost)) return false;
  for (size_t i = 0; i < people.size(); ++i) people[i].area -= lost[i];
  Placed pl;
  pl.fig = std::move(f);
  pl.area0 = pl.area = own;
  people.push_back(std::move(pl));
  return true;
}

// An occluding object over a random person's random joint.
bool try_occluder(Rng& rng, int W, int H, Image& mask, const std::vector<uint8_t>& owner,
                  std::vector<Placed>& people, std::vector<int>& lost, std::vector<Shape>& out) {
  const Placed& target = people[size_t(rng.range(0, int(people.size()) - 1))];
  const V2 joint = target.fig.kp[size_t(rng.range(0, kNumJoints - 1))];
  const V2 c = joint + V2{rng.uni(-20.f, 20.f), rng.uni(-20.f, 20.f)};
  const float rx = rng.uni(0.06f, 0.18f) * W, ry = rng.uni(0.06f, 0.18f) * H;
  const float ang = rng.chance(0.5f) ? 0.f : rng.uni(0, kPi);
  const RGB col = random_colour(rng);
  std::vector<Shape> s;
  if (rng.chance(0.3f)) {
    s.push_back({Shape::Ellipse, {c.x, c.y, rx + 1, ry + 1, ang, 0}, {}, shade(col, 0.5f)});
    s.push_back({Shape::Ellipse, {c.x, c.y, rx, ry, ang, 0}, {}, col});
  } else {
    for (float o : {1.f, 0.f}) {
      Shape r{Shape::Polygon, {}, {}, o > 0 ? shade(col, 0.5f) : col};
      for (V2 q : {V2{-rx - o, -ry - o}, V2{rx + o, -ry - o}, V2{rx + o, ry + o}, V2{-rx - o, ry + o}}) {
        const V2 p = c + rot(q, ang);
        r.xy.push_back(p.x);
        r.xy.push_back(p.y);
      }
      s.push_back(std::move(r));
    }
  }
  std::fill(mask.pixels.begin(), mask.pixels.end(), 0);
  paint(s, mask, true);
  int own = 0;
  coverage_counts(mask, owner, own, lost);
  if (takes_too_much(people, lost)) return false;
  for (size_t i = 0; i < people.size(); ++i) people[i].area -= lost[i];
  out = std::move(s);
  return true;
}

void claim(const Image& mask, std::vector<uint8_t>& owner, uint8_t id) {
  for (size_t i = 0; i < owner.size(); ++i)
    if (mask.pixels[i] >= 128) owner[i] = id;
}

std::string image_file_name(int64_t id) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%012lld.jpg", static_cast<long long>(id));
  return buf;
}

void check_sizes(int width, int height, int max_people) {
  HR_CHECK(width >= 32 && height >= 32 && width <= 8192 && height <= 8192,
           "synthetic images: size must be 32..8192 per side, got ", width, "x", height);
  HR_CHECK(max_people >= 1 && max_people <= 200,
           "synthetic images: max_people must be 1..200, got ", max_people);
}

}  // namespace

SynthImage render_synthetic_image(uint64_t seed, int width, int height, int max_people) {
  check_sizes(width, height, max_people);
  Rng rng(seed);
  const int W = width, H = height;
  SynthImage out;
  out.image = Image(W, H, 3);
  out.owner.assign(size_t(W) * H, 0);
  render_background(out.image, rng);
  Image mask(W, H, 1);
  std::vector<Placed> people;
  std::vector<int> lost(size_t(max_people), 0);
  const int want = rng.range(1, max_people);
  for (int k = 0; k < want; ++k) {
    bool ok = false;
    // the first person always fits eventually; later ones give up in crowded images
    for (int attempt = 0; attempt < (k == 0 ? 500 : 25) && !ok; ++attempt)
      ok = try_person(rng, W, H, mask, out.owner, people, lost);
    if (!ok) break;
    paint(people.back().fig.shapes, out.image, false);
    claim(mask, out.owner, uint8_t(people.size()));
  }
  HR_CHECK(!people.empty(), "synthetic image ", W, "x", H, ": no person fits (too small?)");
  if (rng.chance(0.25f)) {
    const int n = rng.range(1, 2);
    for (int i = 0; i < n; ++i) {
      std::vector<Shape> occ;
      for (int attempt = 0; attempt < 5 && occ.empty(); ++attempt)
        if (!try_occluder(rng, W, H, mask, out.owner, people, lost, occ)) occ.clear();
      if (occ.empty()) continue;
      paint(occ, out.image, false);
      claim(mask, out.owner, kOccluder);
    }
  }
  if (rng.chance(0.7f)) add_noise(out.image, rng, rng.uni(1.f, 5.f));

  // annotations from the final ownership of every pixel
  for (size_t i = 0; i < people.size(); ++i) {
    const Placed& pl = people[i];
    const uint8_t id = uint8_t(i + 1);
    CocoPersonAnn a;
    int x0 = W, y0 = H, x1 = -1, y1 = -1, area = 0;
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x)
        if (out.owner[size_t(y) * W + x] == id) {
          ++area;
          x0 = std::min(x0, x);
          x1 = std::max(x1, x);
          y0 = std::min(y0, y);
          y1 = std::max(y1, y);
        }
    a.bbox = {float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)};
    a.area = float(area);
    for (int k = 0; k < kNumJoints; ++k) {
      const V2 p = pl.fig.kp[k];
      if (!pl.fig.labelled[k] || !inside(p, W, H)) continue;  // x = y = v = 0
      const uint8_t o = out.owner[pixel_of(p, W)];
      a.keypoints[3 * k] = p.x;
      a.keypoints[3 * k + 1] = p.y;
      a.keypoints[3 * k + 2] = o == id ? 2.f : 1.f;  // else: a later person or an occluder
      ++a.num_keypoints;
    }
    out.people.push_back(a);
  }
  return out;
}

uint64_t synthetic_image_seed(uint64_t seed, int64_t index) {
  uint64_t x = seed ^ 0xA0761D6478BD642Full;
  uint64_t y = splitmix64(x) + uint64_t(index);
  return splitmix64(y);
}

void generate_synthetic_coco(const std::string& out_dir, const SynthOptions& opt, bool progress) {
  namespace fs = std::filesystem;
  HR_CHECK(opt.train_images >= 1 && opt.val_images >= 1,
           "synthetic dataset: need at least one train and one val image, got ", opt.train_images,
           " and ", opt.val_images);
  HR_CHECK(opt.jpeg_quality >= 1 && opt.jpeg_quality <= 100, "synthetic dataset: JPEG quality ",
           opt.jpeg_quality, " outside 1..100");
  HR_CHECK(opt.threads >= 0, "synthetic dataset: threads must be >= 0, got ", opt.threads);
  check_sizes(opt.width, opt.height, opt.max_people);

  const std::string split_names[2] = {"train2017", "val2017"};
  for (const auto& d : {fs::path(out_dir) / "images" / split_names[0],
                        fs::path(out_dir) / "images" / split_names[1],
                        fs::path(out_dir) / "annotations"}) {
    std::error_code ec;
    fs::create_directories(d, ec);
    if (ec) throw Error(str_cat("cannot create directory ", d.string(), ": ", ec.message()));
  }
  // an earlier dataset's annotation files would make a failed run look complete
  for (const auto& s : split_names) {
    const fs::path f = fs::path(out_dir) / "annotations" / ("person_keypoints_" + s + ".json");
    std::error_code ec;
    fs::remove(f, ec);
    if (ec) throw Error(str_cat("cannot remove ", f.string(), ": ", ec.message()));
  }

  const int64_t total = int64_t(opt.train_images) + opt.val_images;
  std::vector<std::vector<CocoPersonAnn>> anns(static_cast<size_t>(total));
  synth::render_all(total, opt.threads, progress, [&](int64_t i) {
    SynthImage im = render_synthetic_image(synthetic_image_seed(opt.seed, i), opt.width,
                                           opt.height, opt.max_people);
    const int split = i < opt.train_images ? 0 : 1;
    const fs::path file = fs::path(out_dir) / "images" / split_names[split] / image_file_name(i + 1);
    write_image(im.image, file.string(), opt.jpeg_quality);
    anns[size_t(i)] = std::move(im.people);
  });

  // annotation files last: a directory holding both is complete
  int64_t ann_id = 1;
  for (int split = 0; split < 2; ++split) {
    CocoKeypoints coco;
    coco.keypoint_names = coco_keypoint_names();
    coco.skeleton = coco_skeleton();
    const int64_t b0 = split == 0 ? 0 : opt.train_images, b1 = split == 0 ? opt.train_images : total;
    for (int64_t i = b0; i < b1; ++i) {
      coco.images.push_back({i + 1, image_file_name(i + 1), opt.width, opt.height});
      for (CocoPersonAnn a : anns[size_t(i)]) {
        a.id = ann_id++;
        a.image_id = i + 1;
        coco.annotations.push_back(a);
      }
    }
    save_coco_keypoints(coco, (fs::path(out_dir) / "annotations" /
                               ("person_keypoints_" + split_names[split] + ".json"))
                                  .string());
  }
}

namespace synth {

struct PersonFigure::Impl {
  std::vector<Shape> shapes;
};

PersonFigure::PersonFigure() : impl_(std::make_unique<Impl>()) {}
PersonFigure::~PersonFigure() = default;
PersonFigure::PersonFigure(PersonFigure&&) noexcept = default;
PersonFigure& PersonFigure::operator=(PersonFigure&&) noexcept = default;

// As try_person builds its figures (without the keypoints)
PersonFigure PersonFigure::random(Rng& rng, float height, float angle, bool back) {
  Builder b;
  b.mirror = back ? -1.f : 1.f;
  b.angle = angle;
  b.scale = height;
  b.outline = std::max(0.004f, 0.8f / b.scale);
  build_figure(rng, b, back);
  PersonFigure f;
  f.impl_->shapes = std::move(b.shapes);
  return f;
}

std::array<float, 4> PersonFigure::extent() const { return data::extent(impl_->shapes); }
void PersonFigure::translate(float dx, float dy) { data::translate(impl_->shapes, V2{dx, dy}); }
void PersonFigure::paint(Image& img, bool mask) const { data::paint(impl_->shapes, img, mask); }

void pose_background(Image& img, Rng& rng) { render_background(img, rng); }

void render_all(int64_t total, int threads, bool progress,
                const std::function<void(int64_t)>& render) {
  std::atomic<int64_t> next{0}, done{0};
  std::atomic<bool> failed{false};
  std::string error;
  std::mutex mu;
  std::condition_variable cv;
  auto work = [&] {
    for (;;) {
      const int64_t i = next.fetch_add(1);
      if (i >= total || failed.load()) break;
      try {
        render(i);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lk(mu);
        if (!failed.exchange(true)) error = e.what();
      }
      done.fetch_add(1);
      cv.notify_one();
    }
  };
  const int64_t want =
      threads > 0 ? int64_t(threads) : int64_t(std::max(1u, std::thread::hardware_concurrency()));
  const int nt = int(std::max<int64_t>(1, std::min<int64_t>(total, want)));
  std::vector<std::thread> pool;
  for (int t = 0; t < nt; ++t) pool.emplace_back(work);
  {
    ProgressBar bar("synthetic images", total, "img", progress ? stderr : nullptr);
    int64_t shown = 0;
    std::unique_lock<std::mutex> lk(mu);
    while (shown < total && !failed.load()) {
      cv.wait_for(lk, std::chrono::milliseconds(100));
      const int64_t d = done.load();
      if (d > shown) {
        lk.unlock();
        bar.update(d - shown);
        lk.lock();
        shown = d;
      }
    }
  }
  for (auto& t : pool) t.join();
  if (failed) throw Error(error);
}

}  // namespace synth
}  // namespace hr::data
