// Our own implicit-GEMM convolution kernels on tensor cores (NHWC activations, KRSC weights,
// f16/bf16 storage, fp32 accumulation). kernels/cuda/conv.cpp's dispatcher times these against
// cuDNN per shape and keeps the faster. Each function returns false (doing nothing) when the
// shape/dtype is outside what the kernel supports, so the caller falls back to cuDNN.
// Design, versions and measured numbers: docs/kernels.md.
#pragma once
#include "kernels/cuda/cuda_kernels.h"

namespace hr::cuda::igemm {

// f16/bf16; C and K multiples of 8; R = S in {1, 3}; stride_h = stride_w in {1, 2};
// pad_h = pad_w <= R/2; every tensor under 2^31 elements. Pointers must be 16-byte aligned
// (checked by each call; a misaligned call returns false).
bool supported(const kern::ConvShape& s, DT dt);
// bias fp32 [K] or nullptr.
// x [N,H,W,C], w [K,R,S,C] -> y [N,P,Q,K]
bool forward(const kern::ConvShape& s, DT dt, const void* x, const void* w, const float* bias,
             void* y, Stream st);
// dy [N,P,Q,K], w [K,R,S,C] -> dx [N,H,W,C]. Stride 2 runs one GEMM per output phase
// (h mod 2, w mod 2), each over only the taps that reach that phase: no zero taps are multiplied.
bool backward_data(const kern::ConvShape& s, DT dt, const void* dy, const void* w, void* dx,
                   Stream st);
// dw in dt (fp32 accumulation inside, using scratch from hr::cuda::alloc); dbias fp32 or nullptr.
// x [N,H,W,C], dy [N,P,Q,K] -> dw [K,R,S,C], dbias [K]
bool backward_weight(const kern::ConvShape& s, DT dt, const void* x, const void* dy, void* dw,
                     float* dbias, Stream st);

// Reduction splits (split-K) the tile planner picks for a pass of shape s: 1 = none, 0 =
// unsupported. Splits of up to 16 are summed inside the GEMM kernel (deterministic, split order);
// more (backward-weight only) use fp32 partials and a reduce kernel. For tests and benchmarks.
enum class Pass { fwd, dgrad, wgrad };
int planned_splits(const kern::ConvShape& s, DT dt, Pass pass);

// Epilogue of forward_fused, applied per output element in fp32 in this order:
//   v = acc * scale[k] + shift[k] + residual[n,p,q,k];  y = relu ? max(v, 0) : v
struct Epilogue {
  const float* scale = nullptr;    // [K] (BN folded: gamma / sqrt(var + eps)), nullptr = 1
  const float* shift = nullptr;    // [K] (bias, or beta - mean * scale), nullptr = 0
  const void* residual = nullptr;  // [N,P,Q,K] in y's dtype, nullptr = none; may alias y
  bool relu = false;
  bool out_f32 = false;            // y (and residual) are fp32 instead of dt
};
// x [N,H,W,C], w [K,R,S,C] -> y [N,P,Q,K]
bool forward_fused(const kern::ConvShape& s, DT dt, const void* x, const void* w,
                   const Epilogue& ep, void* y, Stream st);

// 1x1 convolution at low resolution with a per-channel affine epilogue, nearest-upsampled by an
// integer power-of-two factor f and ADDED into out, in one kernel (the upsampled map is never
// written). Used by kernels/cuda/fuse_upsample.cu.
// x [N,H,W,C], w [K,1,1,C], scale/shift [K] or nullptr, out [N, H*f, W*f, K] (accumulated)
bool conv1x1_upsample_nearest_add(DT dt, int64_t N, int64_t C, int64_t H, int64_t W, int64_t K,
                                  int f, const void* x, const void* w, const float* scale,
                                  const float* shift, void* out, Stream st);

}  // namespace hr::cuda::igemm
