// CPU nearest and bilinear resampling of NCHW maps, forward and backward, with PyTorch's index
// arithmetic (upsample_nearest2d / upsample_bilinear2d): per-axis index and weight tables are
// built once, then OpenMP runs over the N*C planes.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"

namespace hr::cpu {
namespace {

// Source index along one axis for mode='nearest': floor(dst * scale) in float, as PyTorch's CPU
// forward for maps with C > 1. (Its backward and its C == 1 forward copy when out == in and halve
// when out == 2*in instead; that differs only for a scale_factor that disagrees with the sizes.)
std::vector<int64_t> nearest_table(int64_t in, int64_t out, float scale) {
  std::vector<int64_t> t(out);
  for (int64_t o = 0; o < out; ++o)
    t[o] = std::min(static_cast<int64_t>(std::floor(static_cast<float>(o) * scale)), in - 1);
  return t;
}

struct LinearTap {
  int64_t i0, i1;
  float l0, l1;
};

// The two source taps and weights of each destination index along one axis. The coordinate is
// formed in double from the float scale: that reproduces PyTorch 1.13's CPU forward bit for bit
// on our cases, while a float coordinate is off by up to half an ulp of the index (errors ~1e-5
// on the output at 64 -> 256).
std::vector<LinearTap> linear_table(int64_t in, int64_t out, float scale, bool align_corners) {
  std::vector<LinearTap> t(out);
  const double sc = scale;
  for (int64_t o = 0; o < out; ++o) {
    if (out == in) {  // PyTorch copies whatever the scale
      t[o] = {o, o, 1.f, 0.f};
      continue;
    }
    const double src =
        align_corners ? sc * double(o) : std::max(sc * (double(o) + 0.5) - 0.5, 0.0);
    const int64_t i0 = static_cast<int64_t>(src);
    const int64_t i1 = i0 + (i0 < in - 1 ? 1 : 0);
    const float l1 = static_cast<float>(std::min(std::max(src - double(i0), 0.0), 1.0));
    t[o] = {i0, i1, 1.f - l1, l1};
  }
  return t;
}

bool parallel_planes(const kern::ResampleShape& s) {
  return s.N * s.C > 1 && s.N * s.C * std::max(s.H * s.W, s.OH * s.OW) >= 8192;
}

}  // namespace

// x [N,C,H,W] -> y [N,C,OH,OW]
void upsample_nearest_forward(const kern::ResampleShape& s, const float* x, float* y,
                              const float* add) {
  const auto th = nearest_table(s.H, s.OH, s.scale_h);
  const auto tw = nearest_table(s.W, s.OW, s.scale_w);
  const int64_t planes = s.N * s.C;
#pragma omp parallel for schedule(static) if (parallel_planes(s))
  for (int64_t p = 0; p < planes; ++p) {
    const float* xp = x + p * s.H * s.W;
    float* yp = y + p * s.OH * s.OW;
    for (int64_t oh = 0; oh < s.OH; ++oh) {
      const float* xr = xp + th[oh] * s.W;
      float* yr = yp + oh * s.OW;
      if (add) {
        const float* ar = add + p * s.OH * s.OW + oh * s.OW;
        for (int64_t ow = 0; ow < s.OW; ++ow) yr[ow] = ar[ow] + xr[tw[ow]];
      } else {
        for (int64_t ow = 0; ow < s.OW; ++ow) yr[ow] = xr[tw[ow]];
      }
    }
  }
}

// dy [N,C,OH,OW] -> dx [N,C,H,W]
void upsample_nearest_backward(const kern::ResampleShape& s, const float* dy, float* dx) {
  const auto th = nearest_table(s.H, s.OH, s.scale_h);
  const auto tw = nearest_table(s.W, s.OW, s.scale_w);
  const int64_t planes = s.N * s.C;
#pragma omp parallel for schedule(static) if (parallel_planes(s))
  for (int64_t p = 0; p < planes; ++p) {
    float* dxp = dx + p * s.H * s.W;
    const float* dyp = dy + p * s.OH * s.OW;
    std::memset(dxp, 0, sizeof(float) * s.H * s.W);
    for (int64_t oh = 0; oh < s.OH; ++oh) {
      float* dxr = dxp + th[oh] * s.W;
      const float* dyr = dyp + oh * s.OW;
      for (int64_t ow = 0; ow < s.OW; ++ow) dxr[tw[ow]] += dyr[ow];
    }
  }
}

// x [N,C,H,W] -> y [N,C,OH,OW]
void upsample_bilinear_forward(const kern::ResampleShape& s, const float* x, float* y) {
  const auto th = linear_table(s.H, s.OH, s.scale_h, s.align_corners);
  const auto tw = linear_table(s.W, s.OW, s.scale_w, s.align_corners);
  const int64_t planes = s.N * s.C;
#pragma omp parallel for schedule(static) if (parallel_planes(s))
  for (int64_t p = 0; p < planes; ++p) {
    const float* xp = x + p * s.H * s.W;
    float* yp = y + p * s.OH * s.OW;
    for (int64_t oh = 0; oh < s.OH; ++oh) {
      const LinearTap h = th[oh];
      const float* r0 = xp + h.i0 * s.W;
      const float* r1 = xp + h.i1 * s.W;
      float* yr = yp + oh * s.OW;
      for (int64_t ow = 0; ow < s.OW; ++ow) {
        const LinearTap w = tw[ow];
        yr[ow] = h.l0 * (w.l0 * r0[w.i0] + w.l1 * r0[w.i1]) +
                 h.l1 * (w.l0 * r1[w.i0] + w.l1 * r1[w.i1]);
      }
    }
  }
}

// dy [N,C,OH,OW] -> dx [N,C,H,W]
void upsample_bilinear_backward(const kern::ResampleShape& s, const float* dy, float* dx) {
  const auto th = linear_table(s.H, s.OH, s.scale_h, s.align_corners);
  const auto tw = linear_table(s.W, s.OW, s.scale_w, s.align_corners);
  const int64_t planes = s.N * s.C;
#pragma omp parallel for schedule(static) if (parallel_planes(s))
  for (int64_t p = 0; p < planes; ++p) {
    float* dxp = dx + p * s.H * s.W;
    const float* dyp = dy + p * s.OH * s.OW;
    std::memset(dxp, 0, sizeof(float) * s.H * s.W);
    for (int64_t oh = 0; oh < s.OH; ++oh) {
      const LinearTap h = th[oh];
      float* r0 = dxp + h.i0 * s.W;
      float* r1 = dxp + h.i1 * s.W;
      const float* dyr = dyp + oh * s.OW;
      for (int64_t ow = 0; ow < s.OW; ++ow) {
        const LinearTap w = tw[ow];
        const float g0 = h.l0 * dyr[ow], g1 = h.l1 * dyr[ow];
        r0[w.i0] += w.l0 * g0;
        r0[w.i1] += w.l1 * g0;
        r1[w.i0] += w.l0 * g1;
        r1[w.i1] += w.l1 * g1;
      }
    }
  }
}

}  // namespace hr::cpu
