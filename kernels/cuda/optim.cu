// CUDA optimizer steps on fp32 master weights (torch.optim SGD and Adam/AdamW: the per-element
// updates of kernels/optim_math.h, as the CPU's) and the fp16 loss-scaling helper
// unscale_and_check (fused.h).
//
// Multi-tensor steps: one launch updates up to kMultiMax tensors, their pointers and sizes passed
// by value in the kernel's parameters (MultiArgs, under the 4 KB parameter limit), so a captured
// graph holds them too and nothing is uploaded; each block takes kMultiChunk elements of one
// tensor (its tensor found by binary search over the first block of each). A model's few
// hundred parameters step in a handful of launches instead of one each. Where a tensor has a
// 16-bit copy (the weights a mixed-precision graph reads), the same pass writes it.
// The step-dependent scalars (lr, bias corrections, first step) come by value (eager steps:
// bias corrections in double, as the CPU computes them) or from device memory when the kernel
// runs (capturable steps: a captured graph replays with the values uploaded before each launch).
#include <algorithm>
#include <climits>
#include <cmath>

#include "kernels/cuda/check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/fused.h"
#include "kernels/optim_math.h"

namespace hr::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMultiMax = 64;
constexpr int64_t kMultiChunk = 16 * kThreads;

struct MultiArgs {
  float* p[kMultiMax];
  const float* g[kMultiMax];
  float* b0[kMultiMax];
  float* b1[kMultiMax];
  void* c[kMultiMax];  // the 16-bit copies (nullptr: none)
  int64_t n[kMultiMax];
  float wd[kMultiMax];
  int8_t group[kMultiMax];
  int8_t first[kMultiMax];  // SGD: 1 / 0, or -1: the group's flag from the hyper-parameters
  int8_t c_f16[kMultiMax];  // the copy is f16 (1) or bf16 (0)
  int block0[kMultiMax + 1];  // first block of each tensor; block0[count] = the grid
  int count;
};
static_assert(sizeof(MultiArgs) + 64 <= 4096, "kernel parameters over 4 KB");

// The step's scalars: by value (dev == nullptr) or read from device memory when the kernel runs.
struct HyperArg {
  const float* dev;
  double v[4];
  __device__ __forceinline__ double at(int i) const { return dev ? double(dev[i]) : v[i]; }
};

// This block's tensor and its element range [begin, end).
__device__ __forceinline__ int block_tensor(const MultiArgs& a, int64_t* begin, int64_t* end) {
  const int b = int(blockIdx.x);
  int lo = 0, hi = a.count - 1;  // the last t with block0[t] <= b
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (a.block0[mid] <= b)
      lo = mid;
    else
      hi = mid - 1;
  }
  *begin = int64_t(b - a.block0[lo]) * kMultiChunk;
  *end = min(a.n[lo], *begin + kMultiChunk);
  return lo;
}

// Tensor t's 16-bit copy (if it has one), written element by element after the update.
struct CopyOut {
  void* c;
  bool f16;
  __device__ __forceinline__ CopyOut(const MultiArgs& a, int t) : c(a.c[t]), f16(a.c_f16[t]) {}
  __device__ __forceinline__ void put(int64_t i, float v) const {
    if (!c) return;
    if (f16)
      static_cast<__half*>(c)[i] = detail::from_f<__half>(v);
    else
      static_cast<__nv_bfloat16*>(c)[i] = detail::from_f<__nv_bfloat16>(v);
  }
};

// hyper: {lr, first} of group 0, then of group 1
__global__ void __launch_bounds__(kThreads)
    sgd_multi_kernel(MultiArgs a, HyperArg h, float momentum, float keep, bool nesterov) {
  int64_t begin, end;
  const int t = block_tensor(a, &begin, &end);
  const int grp = a.group[t];
  const float lr = float(h.at(2 * grp)), wd = a.wd[t];
  const CopyOut copy(a, t);
  float* __restrict__ p = a.p[t];
  const float* __restrict__ g = a.g[t];
  if (momentum == 0.f) {
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
      kern::sgd_update(p[i], g[i], lr, wd);
      copy.put(i, p[i]);
    }
    return;
  }
  const bool first = a.first[t] >= 0 ? a.first[t] != 0 : h.at(2 * grp + 1) != 0.0;
  float* __restrict__ buf = a.b0[t];
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    kern::sgd_momentum_update(p[i], g[i], buf[i], lr, wd, momentum, keep, nesterov, first);
    copy.put(i, p[i]);
  }
}

// hyper: {lr, 1 - beta1^t, 1 - beta2^t}
__global__ void __launch_bounds__(kThreads)
    adam_multi_kernel(MultiArgs a, HyperArg h, float beta1, float beta2, float eps,
                      bool decoupled) {
  int64_t begin, end;
  const int t = block_tensor(a, &begin, &end);
  const kern::AdamScalars s =
      kern::adam_scalars(float(h.at(0)), a.wd[t], beta1, beta2, eps, decoupled, h.at(1), h.at(2));
  float* __restrict__ p = a.p[t];
  const float* __restrict__ g = a.g[t];
  float* __restrict__ m = a.b0[t];
  float* __restrict__ v = a.b1[t];
  const CopyOut copy(a, t);
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    kern::adam_update(p[i], g[i], m[i], v[i], s);
    copy.put(i, p[i]);
  }
}

// g [n] *= inv_scale; *found = 1 when some g was inf or NaN (every writer stores 1).
__global__ void __launch_bounds__(kThreads)
    unscale_kernel(int64_t n, float* g, float inv_scale, bool vec, int* found) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  bool bad = false;
  int64_t done = 0;
  if (vec) {
    float4* g4 = reinterpret_cast<float4*>(g);
    for (int64_t i = tid; i < n / 4; i += stride) {
      float4 v = g4[i];
      bad |= !isfinite(v.x) || !isfinite(v.y) || !isfinite(v.z) || !isfinite(v.w);
      v.x *= inv_scale;
      v.y *= inv_scale;
      v.z *= inv_scale;
      v.w *= inv_scale;
      g4[i] = v;
    }
    done = n / 4 * 4;
  }
  for (int64_t i = done + tid; i < n; i += stride) {
    const float v = g[i];
    bad |= !isfinite(v);
    g[i] = v * inv_scale;
  }
  if (bad) *found = 1;
}

// launch(args, blocks) for each batch of at most kMultiMax tensors (empty ones skipped); the
// first `buffers` state buffers (buf0, buf1) of each tensor are required. Every tensor is checked
// before the first launch, so a bad one leaves no tensor updated.
template <class Launch>
void for_each_batch(const OptimTensor* ts, int64_t count, const char* op, int buffers,
                    Launch launch) {
  for (int64_t i = 0; i < count; ++i) {
    const OptimTensor& t = ts[i];
    if (t.n <= 0) continue;
    HR_CHECK(t.p && t.grad, op, ": tensor ", i, " has no parameter or gradient pointer");
    HR_CHECK((buffers < 1 || t.buf0) && (buffers < 2 || t.buf1), op, ": tensor ", i,
             " lacks its state buffer", buffers > 1 ? "s (exp_avg, exp_avg_sq)" : " (momentum)");
    HR_CHECK(t.group == 0 || t.group == 1, op, ": tensor ", i, " has group ", t.group,
             ", expected 0 or 1");
    HR_CHECK(!t.copy || t.copy_dt == DT::f16 || t.copy_dt == DT::bf16, op, ": tensor ", i,
             "'s copy must be f16 or bf16");
    HR_CHECK((t.n + kMultiChunk - 1) / kMultiChunk < INT_MAX / 2, op, ": tensor ", i, " has ",
             t.n, " elements, too many");
  }
  MultiArgs a;
  a.count = 0;
  int64_t blocks = 0;
  auto flush = [&] {
    if (a.count == 0) return;
    a.block0[a.count] = int(blocks);
    launch(a, blocks);
    a.count = 0;
    blocks = 0;
  };
  for (int64_t i = 0; i < count; ++i) {
    const OptimTensor& t = ts[i];
    if (t.n <= 0) continue;
    const int64_t nb = (t.n + kMultiChunk - 1) / kMultiChunk;
    if (a.count == kMultiMax || blocks + nb >= INT_MAX / 2) flush();
    const int k = a.count++;
    a.p[k] = t.p;
    a.g[k] = t.grad;
    a.b0[k] = t.buf0;
    a.b1[k] = t.buf1;
    a.c[k] = t.copy;
    a.c_f16[k] = int8_t(t.copy_dt == DT::f16);
    a.n[k] = t.n;
    a.wd[k] = t.weight_decay;
    a.group[k] = int8_t(t.group);
    a.first[k] = int8_t(t.first_step < 0 ? -1 : t.first_step != 0);
    a.block0[k] = int(blocks);
    blocks += nb;
  }
  flush();
}

HyperArg hyper_arg(const OptimHyper& h) {
  HyperArg a;
  a.dev = h.dev;
  for (int i = 0; i < 4; ++i) a.v[i] = h.v[i];
  return a;
}

}  // namespace

void sgd_multi_step(const OptimTensor* ts, int64_t count, const OptimHyper& h, float momentum,
                    float dampening, bool nesterov, Stream st) {
  const HyperArg ha = hyper_arg(h);
  const cudaStream_t cs = detail::stream_of(st);
  for_each_batch(ts, count, "sgd_step", momentum != 0.f ? 1 : 0,
                 [&](const MultiArgs& a, int64_t blocks) {
    sgd_multi_kernel<<<unsigned(blocks), kThreads, 0, cs>>>(a, ha, momentum, 1.f - dampening,
                                                            nesterov);
    HR_CUDA_LAUNCH_CHECK();
  });
}

void adam_multi_step(const OptimTensor* ts, int64_t count, const OptimHyper& h, float beta1,
                     float beta2, float eps, bool decoupled, Stream st) {
  const HyperArg ha = hyper_arg(h);
  const cudaStream_t cs = detail::stream_of(st);
  for_each_batch(ts, count, "adam_step", 2, [&](const MultiArgs& a, int64_t blocks) {
    adam_multi_kernel<<<unsigned(blocks), kThreads, 0, cs>>>(a, ha, beta1, beta2, eps, decoupled);
    HR_CUDA_LAUNCH_CHECK();
  });
}

OptimHyper adam_hyper(float lr, float beta1, float beta2, int64_t step) {
  HR_CHECK(step >= 1, "adam_step: step must be >= 1, got ", step);
  OptimHyper h;
  h.v[0] = lr;
  kern::adam_bias_corrections(beta1, beta2, step, &h.v[1], &h.v[2]);
  return h;
}

// One tensor: the multi-tensor kernels with a count of one.
void sgd_step(int64_t n, float* p, const float* grad, float* momentum_buf, float lr,
              float momentum, float dampening, float weight_decay, bool nesterov, bool first_step,
              Stream st) {
  const OptimTensor t{n, p, grad, momentum_buf, nullptr, weight_decay, 0, first_step ? 1 : 0};
  OptimHyper h;
  h.v[0] = lr;
  sgd_multi_step(&t, 1, h, momentum, dampening, nesterov, st);
}

void adam_step(int64_t n, float* p, const float* grad, float* exp_avg, float* exp_avg_sq, float lr,
               float beta1, float beta2, float eps, float weight_decay, bool decoupled,
               int64_t step, Stream st) {
  const OptimTensor t{n, p, grad, exp_avg, exp_avg_sq, weight_decay, 0, -1};
  adam_multi_step(&t, 1, adam_hyper(lr, beta1, beta2, step), beta1, beta2, eps, decoupled, st);
}

void sgd_step_dev(int64_t n, float* p, const float* grad, float* momentum_buf, const float* hyper,
                  float momentum, float dampening, float weight_decay, bool nesterov, Stream st) {
  HR_CHECK(hyper, "sgd_step_dev: hyper (lr, first step) must be a device pointer");
  const OptimTensor t{n, p, grad, momentum_buf, nullptr, weight_decay, 0, -1};
  OptimHyper h;
  h.dev = hyper;
  sgd_multi_step(&t, 1, h, momentum, dampening, nesterov, st);
}

void adam_step_dev(int64_t n, float* p, const float* grad, float* exp_avg, float* exp_avg_sq,
                   const float* hyper, float beta1, float beta2, float eps, float weight_decay,
                   bool decoupled, Stream st) {
  HR_CHECK(hyper, "adam_step_dev: hyper (lr, bias corrections) must be a device pointer");
  const OptimTensor t{n, p, grad, exp_avg, exp_avg_sq, weight_decay, 0, -1};
  OptimHyper h;
  h.dev = hyper;
  adam_multi_step(&t, 1, h, beta1, beta2, eps, decoupled, st);
}

// grads [n]
bool unscale_and_check(int64_t n, float* grads, float inv_scale, Stream st) {
  if (n <= 0) return false;
  const cudaStream_t cs = detail::stream_of(st);
  detail::Workspace flag(sizeof(int), st);
  CUDA_CHECK(cudaMemsetAsync(flag.get(), 0, sizeof(int), cs));
  const bool vec = detail::aligned(16, {grads});
  unscale_kernel<<<unsigned(detail::wave_blocks(vec ? (n + 3) / 4 : n, kThreads)), kThreads, 0, cs>>>(
      n, grads, inv_scale, vec, flag.as<int>());
  HR_CUDA_LAUNCH_CHECK();
  int found = 0;
  memcpy_d2h(&found, flag.get(), sizeof(int), st);
  return found != 0;
}

}  // namespace hr::cuda
