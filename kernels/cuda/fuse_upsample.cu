// HRNet fuse layer j > i: out_i += upsample(BN(conv1x1(x_j))) with the conv at low resolution
// (see fuse_upsample.h). Nearest: one igemm kernel with an upsample-add epilogue
// (igemm::conv1x1_upsample_nearest_add). Bilinear: igemm into an fp32 low-resolution scratch,
// then bilinear_add_kernel. Backward: a gather of the upsampling adjoint (no atomics).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "engine/error.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/conv_igemm.h"
#include "kernels/cuda/fuse_upsample.h"

namespace hr::cuda {
namespace {

using detail::from_f;
using detail::to_f;

// One destination index's two source taps, with PyTorch's float arithmetic (upsample_bilinear2d)
// and no FMA contraction, so the indices match kernels/cpu/resample.cpp exactly.
struct Tap {
  int i0, i1;
  float l0, l1;
};
__device__ __forceinline__ Tap linear_tap(int o, int in, int out, float scale, bool ac) {
  if (out == in) return {o, o, 1.f, 0.f};
  const float fo = static_cast<float>(o);
  const float src = ac ? __fmul_rn(scale, fo)
                       : fmaxf(__fsub_rn(__fmul_rn(scale, __fadd_rn(fo, 0.5f)), 0.5f), 0.f);
  int i0 = static_cast<int>(src);
  i0 = min(i0, in - 1);
  const int i1 = i0 + (i0 < in - 1 ? 1 : 0);
  const float l1 = fminf(fmaxf(__fsub_rn(src, static_cast<float>(i0)), 0.f), 1.f);
  return {i0, i1, __fsub_rn(1.f, l1), l1};
}
// Weight with which destination o reads source l.
__device__ __forceinline__ float tap_weight(const Tap& t, int l) {
  return (t.i0 == l ? t.l0 : 0.f) + (t.i1 == l ? t.l1 : 0.f);
}
// Destination indices that can read source l (a superset; exact weights come from tap_weight).
__device__ __forceinline__ void dst_range(int l, int in, int out, float scale, int& lo, int& hi) {
  if (out == in) {
    lo = hi = l;
    return;
  }
  if (!(scale > 0.f)) {
    lo = 0;
    hi = out - 1;
    return;
  }
  const double a = floor((l - 1.5) / scale) - 2.0, b = ceil((l + 2.0) / scale) + 2.0;
  lo = static_cast<int>(fmax(0.0, a));
  hi = static_cast<int>(fmin(static_cast<double>(out - 1), b));
}

struct UpArgs {
  int N, C, H, W, OH, OW;
  float sh, sw;
  int ac;
};

// out[n, oh, ow, c..c+8) += bilinear(z)   z [N, H, W, C] fp32 (low resolution)
template <class T>
__global__ void bilinear_add_kernel(UpArgs a, const float* __restrict__ z, T* __restrict__ out) {
  const int CH = a.C / 8;
  const int64_t total = static_cast<int64_t>(a.N) * a.OH * a.OW * CH;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int ch = static_cast<int>(idx % CH);
    int64_t pix = idx / CH;
    const int ow = static_cast<int>(pix % a.OW);
    pix /= a.OW;
    const int oh = static_cast<int>(pix % a.OH);
    const int n = static_cast<int>(pix / a.OH);
    const Tap th = linear_tap(oh, a.H, a.OH, a.sh, a.ac);
    const Tap tw = linear_tap(ow, a.W, a.OW, a.sw, a.ac);
    const float* zn = z + static_cast<int64_t>(n) * a.H * a.W * a.C + ch * 8;
    const float* p00 = zn + (static_cast<int64_t>(th.i0) * a.W + tw.i0) * a.C;
    const float* p01 = zn + (static_cast<int64_t>(th.i0) * a.W + tw.i1) * a.C;
    const float* p10 = zn + (static_cast<int64_t>(th.i1) * a.W + tw.i0) * a.C;
    const float* p11 = zn + (static_cast<int64_t>(th.i1) * a.W + tw.i1) * a.C;
    T* dst = out + ((static_cast<int64_t>(n) * a.OH + oh) * a.OW + ow) * a.C + ch * 8;
    float o[8];
    detail::load_f<T, 8>(dst, o);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const float top = tw.l0 * p00[e] + tw.l1 * p01[e];
      const float bot = tw.l0 * p10[e] + tw.l1 * p11[e];
      o[e] += th.l0 * top + th.l1 * bot;
    }
    detail::store_f<T, 8>(dst, o);
  }
}

// d_low[n, h, w, c..c+8) = scale[c] * sum over the high-resolution pixels that read (h, w)
template <class T, bool NEAREST>
__global__ void up_adjoint_kernel(UpArgs a, int f, const T* __restrict__ dout,
                                  const float* __restrict__ scale, T* __restrict__ dlow) {
  const int CH = a.C / 8;
  const int64_t total = static_cast<int64_t>(a.N) * a.H * a.W * CH;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int ch = static_cast<int>(idx % CH);
    int64_t pix = idx / CH;
    const int w = static_cast<int>(pix % a.W);
    pix /= a.W;
    const int h = static_cast<int>(pix % a.H);
    const int n = static_cast<int>(pix / a.H);
    const T* dn = dout + static_cast<int64_t>(n) * a.OH * a.OW * a.C + ch * 8;
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if constexpr (NEAREST) {
      for (int dy = 0; dy < f; ++dy)
        for (int dx = 0; dx < f; ++dx) {
          float v[8];
          detail::load_f<T, 8>(dn + (static_cast<int64_t>(h * f + dy) * a.OW + w * f + dx) * a.C,
                               v);
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[e] += v[e];
        }
    } else {
      int oh_lo, oh_hi, ow_lo, ow_hi;
      dst_range(h, a.H, a.OH, a.sh, oh_lo, oh_hi);
      dst_range(w, a.W, a.OW, a.sw, ow_lo, ow_hi);
      for (int oh = oh_lo; oh <= oh_hi; ++oh) {
        const float wh = tap_weight(linear_tap(oh, a.H, a.OH, a.sh, a.ac), h);
        if (wh == 0.f) continue;
        for (int ow = ow_lo; ow <= ow_hi; ++ow) {
          const float ww = tap_weight(linear_tap(ow, a.W, a.OW, a.sw, a.ac), w);
          if (ww == 0.f) continue;
          float v[8];
          detail::load_f<T, 8>(dn + (static_cast<int64_t>(oh) * a.OW + ow) * a.C, v);
          const float wgt = wh * ww;
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[e] += wgt * v[e];
        }
      }
    }
    if (scale) {
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] *= scale[ch * 8 + e];
    }
    detail::store_f<T, 8>(dlow + idx * 8, acc);
  }
}

__global__ void fold_bn_kernel(int C, const float* gamma, const float* beta, const float* mean,
                               const float* var, float eps, float* scale, float* shift) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const float s = gamma[c] / sqrtf(var[c] + eps);
  scale[c] = s;
  shift[c] = beta[c] - mean[c] * s;
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Power-of-two factor f with OH = f*H, OW = f*W and scales exactly 1/f, else 0.
int nearest_factor(const kern::ResampleShape& r) {
  if (r.H < 1 || r.W < 1 || r.OH % r.H != 0 || r.OW % r.W != 0) return 0;
  const int64_t f = r.OH / r.H;
  if (r.OW / r.W != f || f < 1 || f > 64 || (f & (f - 1)) != 0) return 0;
  const float inv = 1.f / static_cast<float>(f);
  if (r.scale_h != inv || r.scale_w != inv) return 0;
  return static_cast<int>(f);
}

bool common_ok(DT dt, const kern::ResampleShape& r) {
  if (dt != DT::f16 && dt != DT::bf16) return false;
  if (r.N < 1 || r.C < 8 || r.C % 8 != 0 || r.H < 1 || r.W < 1 || r.OH < 1 || r.OW < 1)
    return false;
  return r.N * r.OH * r.OW * r.C < (int64_t{1} << 31) && r.N * r.H * r.W * r.C < (int64_t{1} << 31);
}

UpArgs up_args(const kern::ResampleShape& r) {
  return UpArgs{static_cast<int>(r.N),  static_cast<int>(r.C),  static_cast<int>(r.H),
                static_cast<int>(r.W),  static_cast<int>(r.OH), static_cast<int>(r.OW),
                r.scale_h,              r.scale_w,              r.align_corners ? 1 : 0};
}

}  // namespace

bool fuse_up_conv1x1_accumulate(UpMode mode, DT dt, const kern::ResampleShape& r, int64_t Cin,
                                const void* x_low, const void* w, const float* scale,
                                const float* shift, void* out, Stream st) {
  if (!common_ok(dt, r) || Cin < 8 || Cin % 8 != 0) return false;
  if (!aligned16(x_low) || !aligned16(w) || !aligned16(out)) return false;
  if (mode == UpMode::nearest) {
    const int f = nearest_factor(r);
    if (f == 0) return false;
    return igemm::conv1x1_upsample_nearest_add(dt, r.N, Cin, r.H, r.W, r.C, f, x_low, w, scale,
                                               shift, out, st);
  }
  const kern::ConvShape s = kern::ConvShape::make(r.N, Cin, r.H, r.W, r.C, 1, 1, 1, 1, 0, 0);
  if (!igemm::supported(s, dt)) return false;
  float* z = static_cast<float*>(alloc(sizeof(float) * r.N * r.H * r.W * r.C, st));
  igemm::Epilogue ep;
  ep.scale = scale;
  ep.shift = shift;
  ep.out_f32 = true;
  if (!igemm::forward_fused(s, dt, x_low, w, ep, z, st)) {
    free(z, st);
    return false;
  }
  const cudaStream_t cs = detail::stream_of(st);
  const UpArgs a = up_args(r);
  const int64_t work = r.N * r.OH * r.OW * (r.C / 8);
  const int blocks = static_cast<int>(detail::wave_blocks(work, 256));
  if (dt == DT::bf16)
    bilinear_add_kernel<__nv_bfloat16><<<blocks, 256, 0, cs>>>(
        a, z, static_cast<__nv_bfloat16*>(out));
  else
    bilinear_add_kernel<__half><<<blocks, 256, 0, cs>>>(a, z, static_cast<__half*>(out));
  HR_CUDA_LAUNCH_CHECK();
  free(z, st);
  return true;
}

void fuse_up_conv1x1_accumulate_unfused(UpMode mode, DT dt, const kern::ResampleShape& r,
                                        int64_t Cin, const void* x_low, const void* w,
                                        const float* gamma, const float* beta, const float* mean,
                                        const float* var, float eps, void* out, Stream st) {
  const size_t es = dt == DT::f32 ? 4 : 2;
  const int64_t low = r.N * r.H * r.W * r.C, high = r.N * r.OH * r.OW * r.C;
  const kern::ConvShape s = kern::ConvShape::make(r.N, Cin, r.H, r.W, r.C, 1, 1, 1, 1, 0, 0);
  void* t = alloc(es * low, st);
  void* tb = alloc(es * low, st);
  void* u = alloc(es * high, st);
  conv2d_forward(s, dt, x_low, w, nullptr, t, st);
  batchnorm_infer_forward(dt, r.N * r.H * r.W, r.C, t, gamma, beta, mean, var, eps, tb, st);
  if (mode == UpMode::nearest)
    upsample_nearest_forward(dt, r, tb, u, st);
  else
    upsample_bilinear_forward(dt, r, tb, u, st);
  add(dt, high, out, u, out, st);
  free(u, st);
  free(tb, st);
  free(t, st);
}

void fold_batchnorm(int64_t C, const float* gamma, const float* beta, const float* mean,
                    const float* var, float eps, float* scale, float* shift, Stream st) {
  HR_CHECK(C >= 1, "fold_batchnorm: C = ", C);
  fold_bn_kernel<<<static_cast<unsigned>((C + 127) / 128), 128, 0, detail::stream_of(st)>>>(
      static_cast<int>(C), gamma, beta, mean, var, eps, scale, shift);
  HR_CUDA_LAUNCH_CHECK();
}

bool fuse_up_backward(UpMode mode, DT dt, const kern::ResampleShape& r, const void* d_out,
                      const float* scale, void* d_low, float* dsum, Stream st) {
  if (!common_ok(dt, r) || !aligned16(d_out) || !aligned16(d_low)) return false;
  int f = 0;
  if (mode == UpMode::nearest) {
    f = nearest_factor(r);
    if (f == 0) return false;
  }
  const cudaStream_t cs = detail::stream_of(st);
  const UpArgs a = up_args(r);
  const int64_t work = r.N * r.H * r.W * (r.C / 8);
  const int blocks = static_cast<int>(detail::wave_blocks(work, 256));
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* dy = static_cast<const T*>(d_out);
    T* dl = static_cast<T*>(d_low);
    if (mode == UpMode::nearest)
      up_adjoint_kernel<T, true><<<blocks, 256, 0, cs>>>(a, f, dy, scale, dl);
    else
      up_adjoint_kernel<T, false><<<blocks, 256, 0, cs>>>(a, f, dy, scale, dl);
    HR_CUDA_LAUNCH_CHECK();
  };
  if (dt == DT::bf16)
    run(__nv_bfloat16{});
  else
    run(__half{});
  if (dsum) detail::column_sum(dt, 1, r.N * r.OH * r.OW, r.C, d_out, 1.f, true, dsum, st);
  return true;
}

}  // namespace hr::cuda
