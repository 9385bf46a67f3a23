// CPU average pooling (PyTorch AvgPool2d, ceil_mode = false) and global average pooling, forward
// and backward; OpenMP over the N*C planes.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/cpu_kernels.h"

namespace hr::cpu {
namespace {

// One output window: rows [h0, h1) x cols [w0, w1) clipped to the image, and its divisor.
struct Window {
  int64_t h0, h1, w0, w1;
  float divisor;
};

Window window(const kern::PoolShape& s, int64_t oh, int64_t ow) {
  int64_t h0 = oh * s.stride_h - s.pad_h, w0 = ow * s.stride_w - s.pad_w;
  int64_t h1 = std::min(h0 + s.kh, s.H + s.pad_h), w1 = std::min(w0 + s.kw, s.W + s.pad_w);
  const int64_t padded = (h1 - h0) * (w1 - w0);
  h0 = std::max<int64_t>(h0, 0);
  w0 = std::max<int64_t>(w0, 0);
  h1 = std::min(h1, s.H);
  w1 = std::min(w1, s.W);
  const int64_t inside = (h1 - h0) * (w1 - w0);
  return {h0, h1, w0, w1, float(s.count_include_pad ? padded : inside)};
}

bool parallel_planes(int64_t planes, int64_t work) { return planes > 1 && work >= 8192; }

}  // namespace

// x [N,C,H,W] -> y [N,C,OH,OW]
void avgpool2d_forward(const kern::PoolShape& s, const float* x, float* y) {
  const int64_t planes = s.N * s.C;
#pragma omp parallel for schedule(static) if (parallel_planes(planes, planes * s.H * s.W))
  for (int64_t p = 0; p < planes; ++p) {
    const float* xp = x + p * s.H * s.W;
    float* yp = y + p * s.OH * s.OW;
    for (int64_t oh = 0; oh < s.OH; ++oh) {
      for (int64_t ow = 0; ow < s.OW; ++ow) {
        const Window win = window(s, oh, ow);
        float sum = 0.f;
        for (int64_t h = win.h0; h < win.h1; ++h)
          for (int64_t w = win.w0; w < win.w1; ++w) sum += xp[h * s.W + w];
        // An all-padding window (possible only when pad >= kernel) averages to 0, as PyTorch.
        yp[oh * s.OW + ow] = (win.h0 < win.h1 && win.w0 < win.w1) ? sum / win.divisor : 0.f;
      }
    }
  }
}

// dy [N,C,OH,OW] -> dx [N,C,H,W]
void avgpool2d_backward(const kern::PoolShape& s, const float* dy, float* dx) {
  const int64_t planes = s.N * s.C;
#pragma omp parallel for schedule(static) if (parallel_planes(planes, planes * s.H * s.W))
  for (int64_t p = 0; p < planes; ++p) {
    float* dxp = dx + p * s.H * s.W;
    const float* dyp = dy + p * s.OH * s.OW;
    std::memset(dxp, 0, sizeof(float) * s.H * s.W);
    for (int64_t oh = 0; oh < s.OH; ++oh) {
      for (int64_t ow = 0; ow < s.OW; ++ow) {
        const Window win = window(s, oh, ow);
        const float g = dyp[oh * s.OW + ow] / win.divisor;
        for (int64_t h = win.h0; h < win.h1; ++h)
          for (int64_t w = win.w0; w < win.w1; ++w) dxp[h * s.W + w] += g;
      }
    }
  }
}

// x [N,C,HW] -> y [N,C]
void global_avgpool_forward(int64_t N, int64_t C, int64_t HW, const float* x, float* y) {
  const int64_t planes = N * C;
#pragma omp parallel for schedule(static) if (parallel_planes(planes, planes * HW))
  for (int64_t p = 0; p < planes; ++p) {
    const float* xp = x + p * HW;
    double sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < HW; ++i) sum += xp[i];
    y[p] = float(sum / double(HW));
  }
}

// dy [N,C] -> dx [N,C,HW]
void global_avgpool_backward(int64_t N, int64_t C, int64_t HW, const float* dy, float* dx) {
  const int64_t planes = N * C;
#pragma omp parallel for schedule(static) if (parallel_planes(planes, planes * HW))
  for (int64_t p = 0; p < planes; ++p) {
    const float g = dy[p] / float(HW);
    float* dxp = dx + p * HW;
#pragma omp simd
    for (int64_t i = 0; i < HW; ++i) dxp[i] = g;
  }
}

}  // namespace hr::cpu
