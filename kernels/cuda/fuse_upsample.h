// HRNet fuse layer j > i on the GPU (NHWC):  out_i += upsample(BN(conv1x1(x_j))).
//
// The 1x1 convolution and the per-channel affine BN commute with nearest and bilinear
// upsampling (both are linear and act per channel), so the conv runs at x_j's LOW resolution
// and only the sum into out_i happens at high resolution; the upsampled map is never written.
//
// Unfused fallback this replaces (what the engine runs when these return false, and the oracle
// of tests/gpu/test_cuda_conv.cpp):
//   t = conv2d_forward(x_j, w)                          [N, Hl, Wl, Cout]
//   t = batchnorm_infer_forward(t, gamma, beta, mean, var, eps)
//   u = upsample_{nearest,bilinear}_forward(t)          [N, OH, OW, Cout]
//   out_i = add(out_i, u)
// fuse_up_conv1x1_accumulate_unfused() below is exactly that sequence.
//
// BN must be folded first (inference): scale = gamma / sqrt(var + eps), shift = beta - mean*scale
// (fold_batchnorm does it on the device).
#pragma once
#include <cstdint>

#include "kernels/cuda/cuda_kernels.h"

namespace hr::cuda {

enum class UpMode : int { nearest = 0, bilinear = 1 };

// r describes the upsampling of the conv output: r.N, r.C = Cout, r.H x r.W = low resolution,
// r.OH x r.OW = out's size, scales / align_corners as kern::ResampleShape documents.
// x_low [N, H, W, Cin], w [Cout, 1, 1, Cin] (dt), scale / shift [Cout] fp32 or nullptr,
// out [N, OH, OW, Cout] (dt, accumulated in place).
// Nearest runs as ONE kernel (1x1 implicit GEMM whose epilogue adds each low-resolution pixel
// into its f x f block); it needs OH = f*H, OW = f*W with f a power of two and scale = 1/f.
// Bilinear runs the GEMM into an fp32 low-resolution scratch map, then one kernel adds its
// bilinear interpolation into out. Returns false (doing nothing) when the shape, dtype (f16 /
// bf16, Cin and Cout multiples of 8) or alignment is unsupported.
bool fuse_up_conv1x1_accumulate(UpMode mode, DT dt, const kern::ResampleShape& r, int64_t Cin,
                                const void* x_low, const void* w, const float* scale,
                                const float* shift, void* out, Stream st);

// The unfused sequence above, from the engine's primitive CUDA ops (any dtype and shape they
// support). gamma, beta, mean, var [Cout] fp32.
void fuse_up_conv1x1_accumulate_unfused(UpMode mode, DT dt, const kern::ResampleShape& r,
                                        int64_t Cin, const void* x_low, const void* w,
                                        const float* gamma, const float* beta, const float* mean,
                                        const float* var, float eps, void* out, Stream st);

// scale = gamma / sqrt(var + eps), shift = beta - mean * scale, all [C] fp32 on the device.
void fold_batchnorm(int64_t C, const float* gamma, const float* beta, const float* mean,
                    const float* var, float eps, float* scale, float* shift, Stream st);

// Backward (training): d_out [N, OH, OW, Cout] -> d_low [N, H, W, Cout] (dt) =
//   scale[c] * upsample^T(d_out)     (scale nullptr: 1)
// where upsample^T is the adjoint of the forward upsampling (nearest: the sum over each f x f
// window; bilinear: each low pixel gathers the weighted high-resolution pixels that read it),
// computed as a gather (no atomics, deterministic). With scale = the folded BN scale this is the
// gradient w.r.t. the conv output at inference-mode BN; with scale = nullptr it is the gradient
// w.r.t. the BN output, for a training-mode BN backward at low resolution. Feed d_low to
// igemm::backward_data / backward_weight (1x1) for dx_j and dw.
// dsum [Cout] fp32 or nullptr receives sum over all pixels of upsample^T(d_out), which equals
// the channel sum of d_out (the adjoint weights of every high-resolution pixel sum to 1): the
// gradient of shift / BN beta.
// Same support rules as the forward (nearest: power-of-two factor); returns false otherwise.
bool fuse_up_backward(UpMode mode, DT dt, const kern::ResampleShape& r, const void* d_out,
                      const float* scale, void* d_low, float* dsum, Stream st);

}  // namespace hr::cuda
