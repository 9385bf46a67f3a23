// Shape descriptors shared by the CPU and CUDA kernels. Kernels take raw pointers and one of
// these; the engine front-ends (engine/ops_*.cpp) validate and fill them.
#pragma once
#include <cstdint>

namespace hr::kern {

// 2-D convolution, no groups, no dilation. Output size follows PyTorch:
// P = (H + 2*pad_h - R) / stride_h + 1, Q likewise.
struct ConvShape {
  int64_t N = 0, C = 0, H = 0, W = 0;  // input
  int64_t K = 0, R = 0, S = 0;         // output channels, kernel height, kernel width
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  int64_t P = 0, Q = 0;                // output height, width

  static ConvShape make(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R,
                        int64_t S, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                        int64_t pad_w) {
    ConvShape s{N, C, H, W, K, R, S, stride_h, stride_w, pad_h, pad_w, 0, 0};
    s.P = (H + 2 * pad_h - R) / stride_h + 1;
    s.Q = (W + 2 * pad_w - S) / stride_w + 1;
    return s;
  }
  int64_t macs() const { return N * K * P * Q * C * R * S; }
};

// What a convolution's forward pass does to its output tile while it is in cache:
// y = conv(x, w) + bias [+ residual] [then ReLU]. residual is [N,K,P,Q] like y and does not
// overlap it.
struct ConvEpilogue {
  const float* residual = nullptr;
  bool relu = false;
  bool any() const { return residual != nullptr || relu; }
};

// Resampling of an [N, C, H, W] map to [N, C, OH, OW]. scale_h / scale_w are the
// source-per-destination ratios exactly as PyTorch computes them (area_pixel_compute_scale):
// align_corners ? (H-1)/(OH-1) (0 if OH == 1) : (scale_factor given ? 1/scale_factor : H/OH).
struct ResampleShape {
  int64_t N = 0, C = 0, H = 0, W = 0, OH = 0, OW = 0;
  float scale_h = 1.f, scale_w = 1.f;
  bool align_corners = false;  // bilinear only

  // The scales as PyTorch computes them; scale_factor > 0 when the op was given one (nearest
  // and bilinear without align_corners then use 1/scale_factor, as interpolate does).
  static ResampleShape make(int64_t N, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW,
                            bool bilinear, bool align_corners, double scale_factor) {
    ResampleShape s{N, C, H, W, OH, OW, 1.f, 1.f, bilinear && align_corners};
    auto scale = [&](int64_t in, int64_t out) {
      if (s.align_corners)
        return out > 1 ? static_cast<float>(in - 1) / static_cast<float>(out - 1) : 0.f;
      if (scale_factor > 0) return static_cast<float>(1.0 / scale_factor);
      return static_cast<float>(in) / static_cast<float>(out);
    };
    s.scale_h = scale(H, OH);
    s.scale_w = scale(W, OW);
    return s;
  }
};

// Average pooling, PyTorch AvgPool2d semantics (ceil_mode = false).
struct PoolShape {
  int64_t N = 0, C = 0, H = 0, W = 0;
  int64_t kh = 1, kw = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  int64_t OH = 0, OW = 0;
  bool count_include_pad = true;

  static PoolShape make(int64_t N, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                        int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                        bool count_include_pad) {
    PoolShape s{N, C, H, W, kh, kw, stride_h, stride_w, pad_h, pad_w, 0, 0, count_include_pad};
    s.OH = (H + 2 * pad_h - kh) / stride_h + 1;
    s.OW = (W + 2 * pad_w - kw) / stride_w + 1;
    return s;
  }
};

}  // namespace hr::kern
