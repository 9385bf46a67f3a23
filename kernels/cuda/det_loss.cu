// CUDA kernels of the FCOS detection head's ops: exp and its backward, y = s * x with the scale s
// read from the device, the sum of a product (the scale's gradient), and the three losses (sigmoid
// focal loss over [N, C, P] logits / (num_pos + N), the weighted IoU loss over [N, 4, P], the
// masked BCE with logits). Every 3-D or 2-D operand is row-major, as on the CPU; the per-element
// formulas are kernels/det_loss_math.h, the CPU's.
// Reductions: grid-stride partials per block (double), summed in a fixed order by one finishing
// block that writes the fp32 result to the device: deterministic, no host synchronisation, no
// atomics, so a step that contains them can be captured. The normalisers (num_pos + N, the sum
// of the positive weights) are reduced on the device the same way, in the backward too.
#include <cmath>

#include "kernels/cuda/check.h"
#include "kernels/det_loss_math.h"

namespace hr::cuda {
namespace {

using detail::block_sum;
using detail::from_f;
using detail::to_f;

constexpr int kThreads = 256;

#define HR_GRID_STRIDE(i, n)                                                \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += int64_t(gridDim.x) * blockDim.x)

// ---- element-wise ----
template <class T>
__global__ void __launch_bounds__(kThreads)
    exp_kernel(int64_t n, const T* __restrict__ x, T* __restrict__ y) {
  HR_GRID_STRIDE(i, n) y[i] = from_f<T>(expf(to_f(x[i])));
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    mul_kernel(int64_t n, const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ y) {
  HR_GRID_STRIDE(i, n) y[i] = from_f<T>(to_f(a[i]) * to_f(b[i]));
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    scale_by_kernel(int64_t n, const T* __restrict__ x, const float* __restrict__ s,
                    T* __restrict__ y) {
  const float k = *s;
  HR_GRID_STRIDE(i, n) y[i] = from_f<T>(k * to_f(x[i]));
}

// ---- reductions ----
// Every forward writes three partials per block: {numerator, denominator, invalid count}.
constexpr int kParts = 3;

// part[block] = the block's sums of v..., in order; the partials not given are 0.
template <class... V>
__device__ __forceinline__ void write_partials(double* part, V... v) {
  static_assert(sizeof...(V) <= kParts, "write_partials: at most kParts values");
  const double sums[kParts] = {block_sum<kThreads>(v)...};  // summed left to right
  if (threadIdx.x == 0)
    for (int j = 0; j < kParts; ++j) part[kParts * blockIdx.x + j] = sums[j];
}

// *out = num / (den + offset) (0 when not positive; NaN when a partial counted an invalid
// label), from nparts partials summed in a fixed order (one block).
__global__ void __launch_bounds__(kThreads)
    finish_kernel(int64_t nparts, const double* __restrict__ part, double offset,
                  float* __restrict__ out) {
  double num = 0, den = 0, bad = 0;
  for (int64_t i = threadIdx.x; i < nparts; i += blockDim.x) {
    num += part[kParts * i];
    den += part[kParts * i + 1];
    bad += part[kParts * i + 2];
  }
  num = block_sum<kThreads>(num);
  den = block_sum<kThreads>(den);
  bad = block_sum<kThreads>(bad);
  if (threadIdx.x == 0) {
    const double d = den + offset;
    *out = bad > 0 ? NAN : d > 0 ? float(num / d) : 0.f;
  }
}

// *k = dloss / (sum of nparts partials + offset), 0 when that is not positive (one block).
__global__ void __launch_bounds__(kThreads)
    grad_scale_kernel(int64_t nparts, const double* __restrict__ part, double offset,
                      const float* __restrict__ dloss, float* __restrict__ k) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < nparts; i += blockDim.x) s += part[i];
  const double d = block_sum<kThreads>(s) + offset;
  if (threadIdx.x == 0) *k = d > 0 ? float(double(*dloss) / d) : 0.f;
}

// part[block] = {sum a * b, 0, 0}: finished with offset 1, a plain sum
template <class T>
__global__ void __launch_bounds__(kThreads)
    dot_kernel(int64_t n, const T* __restrict__ a, const T* __restrict__ b,
               double* __restrict__ part) {
  double s = 0;
  HR_GRID_STRIDE(i, n) s += double(to_f(a[i])) * double(to_f(b[i]));
  write_partials(part, s);
}

// part[block] = {sum of the focal terms over logits [N, C, P], labels > 0, labels > C}
template <class T>
__global__ void __launch_bounds__(kThreads)
    focal_loss_kernel(int64_t N, int64_t C, int64_t P, const T* __restrict__ logits,
                      const int64_t* __restrict__ labels, float gamma, float alpha,
                      double* __restrict__ part) {
  double loss = 0, pos = 0, bad = 0;
  HR_GRID_STRIDE(e, N * C * P) {
    const int64_t p = e % P, nc = e / P;
    const int64_t c = nc % C, l = labels[(nc / C) * P + p];
    if (l < 0 || l > C) continue;
    loss += kern::focal_loss_term(to_f(logits[e]), l == c + 1, gamma, alpha);
  }
  HR_GRID_STRIDE(i, N * P) {
    pos += labels[i] > 0 ? 1.0 : 0.0;
    bad += labels[i] > C ? 1.0 : 0.0;
  }
  write_partials(part, loss, pos, bad);
}

// part[block] = valid labels > 0 (labels [n])
__global__ void __launch_bounds__(kThreads)
    positive_labels_kernel(int64_t n, int64_t C, const int64_t* __restrict__ labels,
                           double* __restrict__ part) {
  double pos = 0;
  HR_GRID_STRIDE(i, n) pos += labels[i] > 0 && labels[i] <= C ? 1.0 : 0.0;
  pos = block_sum<kThreads>(pos);
  if (threadIdx.x == 0) part[blockIdx.x] = pos;
}

// dlogits = *k * d(focal term)/dx; 0 where the label is ignored or invalid
template <class T>
__global__ void __launch_bounds__(kThreads)
    focal_loss_backward_kernel(int64_t N, int64_t C, int64_t P, const T* __restrict__ logits,
                               const int64_t* __restrict__ labels, float gamma, float alpha,
                               const float* __restrict__ kptr, T* __restrict__ dlogits) {
  const float k = *kptr;
  HR_GRID_STRIDE(e, N * C * P) {
    const int64_t p = e % P, nc = e / P;
    const int64_t c = nc % C, l = labels[(nc / C) * P + p];
    const bool counted = l >= 0 && l <= C;
    dlogits[e] = from_f<T>(
        counted ? k * kern::focal_loss_grad(to_f(logits[e]), l == c + 1, gamma, alpha) : 0.f);
  }
}

// part[block] = the sum of the w > 0 of w [n] (the weighted means' denominator)
__global__ void __launch_bounds__(kThreads)
    positive_sum_kernel(int64_t n, const float* __restrict__ w, double* __restrict__ part) {
  double s = 0;
  HR_GRID_STRIDE(i, n) s += w[i] > 0.f ? double(w[i]) : 0.0;
  s = block_sum<kThreads>(s);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

// The distances of location p (of P) from a sample's [4, P] slab.
template <class T>
__device__ __forceinline__ void box_at(const T* xn, int64_t P, int64_t p, float (&b)[4]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) b[j] = to_f(xn[j * P + p]);
}

// part[block] = {sum w * iou loss, sum w, 0} over the locations with w > 0
template <class T>
__global__ void __launch_bounds__(kThreads)
    iou_loss_kernel(int64_t N, int64_t P, const T* __restrict__ pred,
                    const float* __restrict__ target, const float* __restrict__ weight,
                    double* __restrict__ part) {
  double loss = 0, wsum = 0;
  HR_GRID_STRIDE(i, N * P) {
    const float w = weight[i];
    if (!(w > 0.f)) continue;  // pred and target there are never read
    const int64_t n = i / P, p = i % P;
    float pb[4], tb[4];
    box_at(pred + n * 4 * P, P, p, pb);
    box_at(target + n * 4 * P, P, p, tb);
    loss += double(w) * double(kern::iou_loss_term(pb, tb));
    wsum += w;
  }
  write_partials(part, loss, wsum);
}

// dpred [N, 4, P] = *k * w * d(iou loss)/dpred where w > 0, else 0
template <class T>
__global__ void __launch_bounds__(kThreads)
    iou_loss_backward_kernel(int64_t N, int64_t P, const T* __restrict__ pred,
                             const float* __restrict__ target, const float* __restrict__ weight,
                             const float* __restrict__ kptr, T* __restrict__ dpred) {
  const float k = *kptr;
  HR_GRID_STRIDE(i, N * P) {
    const float w = weight[i];
    const int64_t n = i / P, p = i % P;
    float g[4] = {0.f, 0.f, 0.f, 0.f};
    if (w > 0.f) {
      float pb[4], tb[4];
      box_at(pred + n * 4 * P, P, p, pb);
      box_at(target + n * 4 * P, P, p, tb);
      kern::iou_loss_grad(pb, tb, k * w, g);
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) dpred[n * 4 * P + j * P + p] = from_f<T>(g[j]);
  }
}

// part[block] = {sum m * bce, sum m, 0} over the elements with m > 0
template <class T>
__global__ void __launch_bounds__(kThreads)
    masked_bce_kernel(int64_t n, const T* __restrict__ logits, const float* __restrict__ target,
                      const float* __restrict__ mask, double* __restrict__ part) {
  double loss = 0, msum = 0;
  HR_GRID_STRIDE(i, n) {
    const float m = mask[i];
    if (!(m > 0.f)) continue;
    loss += double(m) * double(kern::bce_with_logits_term(to_f(logits[i]), target[i]));
    msum += m;
  }
  write_partials(part, loss, msum);
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    masked_bce_backward_kernel(int64_t n, const T* __restrict__ logits,
                               const float* __restrict__ target, const float* __restrict__ mask,
                               const float* __restrict__ kptr, T* __restrict__ dlogits) {
  const float k = *kptr;
  HR_GRID_STRIDE(i, n) {
    const float m = mask[i];
    dlogits[i] =
        from_f<T>(m > 0.f ? k * m * kern::bce_with_logits_grad(to_f(logits[i]), target[i]) : 0.f);
  }
}

#undef HR_GRID_STRIDE

__global__ void zero_kernel(float* out) { *out = 0.f; }

// *out = 0 (a kernel, like the rest of the stream's work)
void write_zero(float* out, cudaStream_t cs) {
  zero_kernel<<<1, 1, 0, cs>>>(out);
  HR_CUDA_LAUNCH_CHECK();
}

unsigned blocks_for(int64_t work) { return unsigned(detail::wave_blocks(work, kThreads)); }

// A forward over `work` elements: launch(blocks, stream, part) runs the kernel that writes kParts
// partials per block, then the finishing block writes *loss = num / (den + offset); *loss = 0
// when there is no work.
template <class Launch>
void forward_to_loss(int64_t work, double offset, float* loss, Stream st, Launch&& launch) {
  const cudaStream_t cs = detail::stream_of(st);
  if (work <= 0) return write_zero(loss, cs);
  const unsigned blocks = blocks_for(work);
  detail::Workspace ws(sizeof(double) * kParts * blocks, st);
  launch(blocks, cs, ws.as<double>());
  HR_CUDA_LAUNCH_CHECK();
  finish_kernel<<<1, kThreads, 0, cs>>>(blocks, ws.as<double>(), offset, loss);
  HR_CUDA_LAUNCH_CHECK();
}

// A backward: count(blocks, stream, part) writes one partial per block over `work` elements, one
// block turns them into *k = *dloss / (their sum + offset) on the device, and grad(blocks, stream,
// k) runs the gradient kernel. Nothing to do when there is no work.
template <class Count, class Grad>
void backward_scaled(int64_t work, double offset, const float* dloss, Stream st, Count&& count,
                     Grad&& grad) {
  if (work <= 0) return;
  const cudaStream_t cs = detail::stream_of(st);
  const unsigned blocks = blocks_for(work);
  detail::Workspace ws(sizeof(double) * blocks + sizeof(float), st);
  double* part = ws.as<double>();
  float* k = reinterpret_cast<float*>(part + blocks);
  count(blocks, cs, part);
  HR_CUDA_LAUNCH_CHECK();
  grad_scale_kernel<<<1, kThreads, 0, cs>>>(blocks, part, offset, dloss, k);
  HR_CUDA_LAUNCH_CHECK();
  grad(blocks, cs, k);
  HR_CUDA_LAUNCH_CHECK();
}

}  // namespace

// ---- element-wise ----
void exp_forward(DT dt, int64_t n, const void* x, void* y, Stream st) {
  if (n <= 0) return;
  HR_DISPATCH_DT(dt, T, {
    exp_kernel<T><<<blocks_for(n), kThreads, 0, detail::stream_of(st)>>>(
        n, static_cast<const T*>(x), static_cast<T*>(y));
  });
  HR_CUDA_LAUNCH_CHECK();
}

void exp_backward(DT dt, int64_t n, const void* y, const void* dy, void* dx, Stream st) {
  if (n <= 0) return;
  HR_DISPATCH_DT(dt, T, {
    mul_kernel<T><<<blocks_for(n), kThreads, 0, detail::stream_of(st)>>>(
        n, static_cast<const T*>(dy), static_cast<const T*>(y), static_cast<T*>(dx));
  });
  HR_CUDA_LAUNCH_CHECK();
}

void scale_by(DT dt, int64_t n, const void* x, const float* s, void* y, Stream st) {
  if (n <= 0) return;
  HR_DISPATCH_DT(dt, T, {
    scale_by_kernel<T><<<blocks_for(n), kThreads, 0, detail::stream_of(st)>>>(
        n, static_cast<const T*>(x), s, static_cast<T*>(y));
  });
  HR_CUDA_LAUNCH_CHECK();
}

// a, b [n] -> *out
void dot(DT dt, int64_t n, const void* a, const void* b, float* out, Stream st) {
  forward_to_loss(n, 1.0, out, st, [&](unsigned blocks, cudaStream_t cs, double* part) {
    HR_DISPATCH_DT(dt, T, {
      dot_kernel<T><<<blocks, kThreads, 0, cs>>>(n, static_cast<const T*>(a),
                                                 static_cast<const T*>(b), part);
    });
  });
}

// ---- sigmoid focal loss ----
// logits [N, C, P], labels [N, P]
void sigmoid_focal_loss_forward_dev(DT dt, int64_t N, int64_t C, int64_t P, const void* logits,
                                    const int64_t* labels, float gamma, float alpha, float* loss,
                                    Stream st) {
  // / (num_pos + N)
  forward_to_loss(N * C * P, double(N), loss, st,
                  [&](unsigned blocks, cudaStream_t cs, double* part) {
                    HR_DISPATCH_DT(dt, T, {
                      focal_loss_kernel<T><<<blocks, kThreads, 0, cs>>>(
                          N, C, P, static_cast<const T*>(logits), labels, gamma, alpha, part);
                    });
                  });
}

void sigmoid_focal_loss_backward_dev(DT dt, int64_t N, int64_t C, int64_t P, const void* logits,
                                     const int64_t* labels, float gamma, float alpha,
                                     const float* dloss, void* dlogits, Stream st) {
  if (N * C * P <= 0) return;
  backward_scaled(
      N * P, double(N), dloss, st,
      [&](unsigned blocks, cudaStream_t cs, double* part) {
        positive_labels_kernel<<<blocks, kThreads, 0, cs>>>(N * P, C, labels, part);
      },
      [&](unsigned, cudaStream_t cs, const float* k) {
        HR_DISPATCH_DT(dt, T, {
          focal_loss_backward_kernel<T><<<blocks_for(N * C * P), kThreads, 0, cs>>>(
              N, C, P, static_cast<const T*>(logits), labels, gamma, alpha, k,
              static_cast<T*>(dlogits));
        });
      });
}

// ---- IoU loss ----
// pred [N, 4, P] (dt), target [N, 4, P], weight [N, P]
void iou_loss_forward_dev(DT dt, int64_t N, int64_t P, const void* pred, const float* target,
                          const float* weight, float* loss, Stream st) {
  forward_to_loss(N * P, 0.0, loss, st, [&](unsigned blocks, cudaStream_t cs, double* part) {
    HR_DISPATCH_DT(dt, T, {
      iou_loss_kernel<T><<<blocks, kThreads, 0, cs>>>(N, P, static_cast<const T*>(pred), target,
                                                      weight, part);
    });
  });
}

void iou_loss_backward_dev(DT dt, int64_t N, int64_t P, const void* pred, const float* target,
                           const float* weight, const float* dloss, void* dpred, Stream st) {
  backward_scaled(
      N * P, 0.0, dloss, st,
      [&](unsigned blocks, cudaStream_t cs, double* part) {
        positive_sum_kernel<<<blocks, kThreads, 0, cs>>>(N * P, weight, part);
      },
      [&](unsigned blocks, cudaStream_t cs, const float* k) {
        HR_DISPATCH_DT(dt, T, {
          iou_loss_backward_kernel<T><<<blocks, kThreads, 0, cs>>>(
              N, P, static_cast<const T*>(pred), target, weight, k, static_cast<T*>(dpred));
        });
      });
}

// ---- masked BCE with logits ----
// logits, target, mask [n]
void masked_bce_forward_dev(DT dt, int64_t n, const void* logits, const float* target,
                            const float* mask, float* loss, Stream st) {
  forward_to_loss(n, 0.0, loss, st, [&](unsigned blocks, cudaStream_t cs, double* part) {
    HR_DISPATCH_DT(dt, T, {
      masked_bce_kernel<T><<<blocks, kThreads, 0, cs>>>(n, static_cast<const T*>(logits), target,
                                                        mask, part);
    });
  });
}

void masked_bce_backward_dev(DT dt, int64_t n, const void* logits, const float* target,
                             const float* mask, const float* dloss, void* dlogits, Stream st) {
  backward_scaled(
      n, 0.0, dloss, st,
      [&](unsigned blocks, cudaStream_t cs, double* part) {
        positive_sum_kernel<<<blocks, kThreads, 0, cs>>>(n, mask, part);
      },
      [&](unsigned blocks, cudaStream_t cs, const float* k) {
        HR_DISPATCH_DT(dt, T, {
          masked_bce_backward_kernel<T><<<blocks, kThreads, 0, cs>>>(
              n, static_cast<const T*>(logits), target, mask, k, static_cast<T*>(dlogits));
        });
      });
}

}  // namespace hr::cuda
