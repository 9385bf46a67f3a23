// Raster drawing on RGB images, anti-aliased where it matters: what the synthetic dataset paints
// its figures with and what hrnet-infer draws its skeleton overlays with.
#pragma once
#include <array>
#include <vector>

#include "data/image.h"

namespace hr::data {

using RGB = std::array<uint8_t, 3>;

// Coordinates are pixel centres: pixel (i, j) is the unit square centred on (x = i, y = j), the
// convention of the keypoint pipeline (a flip maps x to W - 1 - x). Shapes are clipped to the
// image; 1-channel images take c[0], 4-channel ones also accumulate coverage in their alpha.
// Coverage-weighted (anti-aliased) fills; alpha in [0,1] blends over what is there.
void fill_circle(Image& img, float cx, float cy, float r, RGB c, float alpha = 1.f);
void fill_ellipse(Image& img, float cx, float cy, float rx, float ry, float angle_rad, RGB c,
                  float alpha = 1.f);
// A thick segment with round caps (a capsule) of the given width.
void draw_line(Image& img, float x0, float y0, float x1, float y1, float width, RGB c,
               float alpha = 1.f);
// Even-odd polygon fill; xy holds x0,y0,x1,y1,...
void fill_polygon(Image& img, const std::vector<float>& xy, RGB c, float alpha = 1.f);
void fill_rect(Image& img, float x0, float y0, float x1, float y1, RGB c, float alpha = 1.f);
// A tapered capsule: radius r0 at (x0, y0) narrowing or widening linearly to r1 at (x1, y1),
// with round ends (the convex hull of the two discs): limbs of the synthetic figures.
void draw_tapered(Image& img, float x0, float y0, float r0, float x1, float y1, float r1, RGB c,
                  float alpha = 1.f);

// The COCO skeleton of one person: limbs as lines, joints as dots, only joints with
// score/visibility above `threshold`; keypoints hold x, y, score per joint.
void draw_skeleton(Image& img, const float* keypoints, int num_joints, float threshold,
                   float line_width = 2.f);

}  // namespace hr::data
