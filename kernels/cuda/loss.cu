// CUDA losses on NHWC maps: HRNet's JointsMSELoss with target weights (pred, gt [N, HW, J]),
// softmax cross-entropy over channels (logits [N, HW, C], labels [N, HW] int64, ignore label,
// optional fp32 class weights [C]) and the OHEM cross-entropy of HRNet-Semantic-Segmentation
// (the k-th smallest target probability by a cub radix sort).
// Forwards reduce to per-block double partials, summed in a fixed order by one finishing block
// that writes the fp32 loss to the device (deterministic; the *_dev variants stop there, the
// synchronous ones copy it to the host). Backwards never synchronize; dloss comes from the
// host or from the device (the same kernels).
// A label outside [0, C) that is not ignore_index makes softmax_ce_forward throw and
// softmax_ce_forward_dev's loss NaN; the backward treats such a label as ignored.
#include <cmath>
#include <cub/device/device_radix_sort.cuh>
#include <limits>

#include "kernels/cuda/check.h"

namespace hr::cuda {
namespace {

using detail::block_sum;
using detail::from_f;
using detail::to_f;

constexpr int kThreads = 256;

// pred, gt [N, HW, J], weight [N, J] -> part[block] = sum (w*p - w*g)^2
template <class T>
__global__ void __launch_bounds__(kThreads)
    heatmap_loss_kernel(int64_t N, int64_t J, int64_t HW, const T* __restrict__ pred,
                        const T* __restrict__ gt, const float* __restrict__ weight,
                        double* __restrict__ part) {
  double acc = 0;
  const int64_t total = N * HW * J;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const float w = weight[(e / (HW * J)) * J + e % J];
    const double d = double(w * to_f(pred[e])) - double(w * to_f(gt[e]));
    acc += d * d;
  }
  const double s = block_sum<kThreads>(acc);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

// *loss = 0.5 * (sum of the nparts partials) / denom, summed in a fixed order (one block).
__global__ void __launch_bounds__(kThreads)
    heatmap_loss_finish_kernel(int64_t nparts, const double* __restrict__ part, double denom,
                               float* __restrict__ loss) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < nparts; i += blockDim.x) s += part[i];
  const double total = block_sum<kThreads>(s);
  if (threadIdx.x == 0) *loss = float(0.5 * total / denom);
}

// dpred = k * w * (w*p - w*g), k = dloss / denom; dloss = *dloss_dev, or dloss_host when null
template <class T>
__global__ void __launch_bounds__(kThreads)
    heatmap_loss_backward_kernel(int64_t N, int64_t J, int64_t HW, const T* __restrict__ pred,
                                 const T* __restrict__ gt, const float* __restrict__ weight,
                                 const float* __restrict__ dloss_dev, float dloss_host,
                                 double denom, T* __restrict__ dpred) {
  const double k = double(dloss_dev ? *dloss_dev : dloss_host) / denom;
  const int64_t total = N * HW * J;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const float w = weight[(e / (HW * J)) * J + e % J];
    const float kw = float(k * double(w));
    dpred[e] = from_f<T>(kw * (w * to_f(pred[e]) - w * to_f(gt[e])));
  }
}

// Max and log-sum-exp of the C logits at x.
template <class T>
__device__ __forceinline__ void row_lse(const T* x, int64_t C, float& mx, float& lse) {
  mx = -INFINITY;
  for (int64_t c = 0; c < C; ++c) mx = fmaxf(mx, to_f(x[c]));
  float s = 0.f;
  for (int64_t c = 0; c < C; ++c) s += expf(to_f(x[c]) - mx);
  lse = logf(s);
}

// logits [P, C], labels [P] -> part[block] = {sum of losses, counted pixels}; the smallest
// pixel index with an invalid label goes to *bad (left at max when none). With class weights
// (weight non-null): {sum of w[y] * loss (smoothing: torch's weighted form), sum of w[y]}.
template <class T>
__global__ void __launch_bounds__(kThreads)
    softmax_ce_kernel(int64_t P, int64_t C, const T* __restrict__ logits,
                      const int64_t* __restrict__ labels, int64_t ignore_index, float smoothing,
                      const float* __restrict__ weight, double* __restrict__ part,
                      unsigned long long* bad) {
  double loss = 0, count = 0;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < P;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t l = labels[p];
    if (l == ignore_index) continue;
    if (l < 0 || l >= C) {
      atomicMin(bad, static_cast<unsigned long long>(p));
      continue;
    }
    const T* x = logits + p * C;
    float mx, lse;
    row_lse(x, C, mx, lse);
    const double nll = double(lse) - (double(to_f(x[l])) - double(mx));
    if (weight) {  // w[y] * nll, or (1 - e) * w[y] * nll + (e / C) * sum_c w[c] * -log p_c
      const double wy = weight[l];
      if (smoothing == 0.f) {
        loss += wy * nll;
      } else {
        double smooth = 0;
        for (int64_t c = 0; c < C; ++c)
          smooth += double(weight[c]) * (double(lse) - (double(to_f(x[c])) - double(mx)));
        loss += (1.0 - smoothing) * wy * nll + double(smoothing) / double(C) * smooth;
      }
      count += wy;
      continue;
    }
    if (smoothing == 0.f) {
      loss += nll;
    } else {  // (1 - e) * -log p_label + e * mean_c -log p_c
      double mean_x = 0;
      for (int64_t c = 0; c < C; ++c) mean_x += to_f(x[c]);
      loss += (1.0 - smoothing) * nll + smoothing * (double(lse) - (mean_x / C - double(mx)));
    }
    count += 1;
  }
  const double sl = block_sum<kThreads>(loss);
  const double sc = block_sum<kThreads>(count);
  if (threadIdx.x == 0) {
    part[2 * blockIdx.x] = sl;
    part[2 * blockIdx.x + 1] = sc;
  }
}

// part[block] = number of counted pixels (with class weights: the sum of their w[y])
__global__ void __launch_bounds__(kThreads)
    ce_count_kernel(int64_t P, int64_t C, const int64_t* __restrict__ labels,
                    int64_t ignore_index, const float* __restrict__ weight,
                    double* __restrict__ part) {
  double count = 0;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < P;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t l = labels[p];
    const bool counted = l != ignore_index && l >= 0 && l < C;
    count += counted ? (weight ? double(weight[l]) : 1.0) : 0.0;
  }
  const double s = block_sum<kThreads>(count);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

// *loss = mean over the counted pixels (0 when none; NaN when *bad names an invalid label),
// from nparts {loss, count} partials summed in a fixed order (one block).
__global__ void __launch_bounds__(kThreads)
    softmax_ce_finish_kernel(int64_t nparts, const double* __restrict__ part,
                             const unsigned long long* __restrict__ bad, float* __restrict__ loss) {
  double sl = 0, sc = 0;
  for (int64_t i = threadIdx.x; i < nparts; i += blockDim.x) {
    sl += part[2 * i];
    sc += part[2 * i + 1];
  }
  const double tl = block_sum<kThreads>(sl);
  const double tc = block_sum<kThreads>(sc);
  if (threadIdx.x == 0) {
    const bool invalid = *bad != ~0ull;
    *loss = invalid ? NAN : tc > 0 ? float(tl / tc) : 0.f;
  }
}

// *k = counted ? dloss / counted : 0, from nparts partial counts (one block);
// dloss = *dloss_dev, or dloss_host when null.
__global__ void __launch_bounds__(kThreads)
    ce_scale_kernel(int64_t nparts, const double* part, const float* dloss_dev, float dloss_host,
                    float* k) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < nparts; i += blockDim.x) s += part[i];
  const double total = block_sum<kThreads>(s);
  const float dloss = dloss_dev ? *dloss_dev : dloss_host;
  if (threadIdx.x == 0) *k = total > 0 ? float(double(dloss) / total) : 0.f;
}

// dlogits [P, C] = k * (softmax - target), target the one-hot label smoothed by e
// ((1 - e) onehot + e / C); 0 on ignored pixels. With class weights:
// k * ((1 - e) * w[y] * (p_c - [c == y]) + (e / C) * (W * p_c - w[c])), W = sum_c w[c].
template <class T>
__global__ void __launch_bounds__(kThreads)
    softmax_ce_backward_kernel(int64_t P, int64_t C, const T* __restrict__ logits,
                               const int64_t* __restrict__ labels, int64_t ignore_index,
                               float smoothing, const float* __restrict__ weight,
                               const float* __restrict__ kptr, T* __restrict__ dlogits) {
  const float k = *kptr;
  if (weight) {
    double wsum = 0;
    for (int64_t c = 0; c < C; ++c) wsum += weight[c];
    const float W = float(wsum), kc = float(double(k) * double(smoothing) / double(C));
    for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < P;
         p += int64_t(gridDim.x) * blockDim.x) {
      const int64_t l = labels[p];
      const T* x = logits + p * C;
      T* d = dlogits + p * C;
      if (l == ignore_index || l < 0 || l >= C) {
        for (int64_t c = 0; c < C; ++c) d[c] = from_f<T>(0.f);
        continue;
      }
      const float ky = float(double(k) * (1.0 - double(smoothing)) * double(weight[l]));
      float mx, lse;
      row_lse(x, C, mx, lse);
      for (int64_t c = 0; c < C; ++c) {
        const float prob = expf(to_f(x[c]) - mx - lse);
        d[c] = from_f<T>(ky * (prob - (c == l ? 1.f : 0.f)) + kc * (W * prob - weight[c]));
      }
    }
    return;
  }
  const float on = 1.f - smoothing + smoothing / float(C), off = smoothing / float(C);
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < P;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t l = labels[p];
    const T* x = logits + p * C;
    T* d = dlogits + p * C;
    if (l == ignore_index || l < 0 || l >= C) {
      for (int64_t c = 0; c < C; ++c) d[c] = from_f<T>(0.f);
      continue;
    }
    float mx, lse;
    row_lse(x, C, mx, lse);
    for (int64_t c = 0; c < C; ++c) {
      const float prob = expf(to_f(x[c]) - mx - lse);
      d[c] = from_f<T>(k * (prob - (c == l ? on : off)));
    }
  }
}

}  // namespace

// pred, gt [N,HW,J] (NHWC heatmaps), weight [N,J]; loss: one fp32 on the device
void heatmap_loss_forward_dev(DT dt, int64_t N, int64_t J, int64_t HW, const void* pred,
                              const void* gt, const float* weight, float* loss, Stream st) {
  const cudaStream_t cs = detail::stream_of(st);
  const int64_t total = N * J * HW;
  if (total <= 0) {
    CUDA_CHECK(cudaMemsetAsync(loss, 0, sizeof(float), cs));
    return;
  }
  const int64_t blocks = detail::wave_blocks(total, kThreads);
  detail::Workspace ws(sizeof(double) * blocks, st);
  HR_DISPATCH_DT(dt, T, {
    heatmap_loss_kernel<T><<<unsigned(blocks), kThreads, 0, cs>>>(
        N, J, HW, static_cast<const T*>(pred), static_cast<const T*>(gt), weight, ws.as<double>());
  });
  HR_CUDA_LAUNCH_CHECK();
  heatmap_loss_finish_kernel<<<1, kThreads, 0, cs>>>(
      blocks, ws.as<double>(), double(N) * double(HW) * double(J), loss);
  HR_CUDA_LAUNCH_CHECK();
}

float heatmap_loss_forward(DT dt, int64_t N, int64_t J, int64_t HW, const void* pred,
                           const void* gt, const float* weight, Stream st) {
  if (N * J * HW <= 0) return 0.f;
  detail::Workspace out(sizeof(float), st);
  heatmap_loss_forward_dev(dt, N, J, HW, pred, gt, weight, out.as<float>(), st);
  float loss = 0.f;
  memcpy_d2h(&loss, out.get(), sizeof(float), st);
  return loss;
}

namespace {
// pred, gt, dpred [N,HW,J], weight [N,J]; dloss from the device when dloss_dev is set
void heatmap_backward(DT dt, int64_t N, int64_t J, int64_t HW, const void* pred, const void* gt,
                      const float* weight, const float* dloss_dev, float dloss_host, void* dpred,
                      Stream st) {
  const int64_t total = N * J * HW;
  if (total <= 0) return;
  const cudaStream_t cs = detail::stream_of(st);
  const double denom = double(N) * double(HW) * double(J);
  const unsigned blocks = unsigned(detail::wave_blocks(total, kThreads));
  HR_DISPATCH_DT(dt, T, {
    heatmap_loss_backward_kernel<T><<<blocks, kThreads, 0, cs>>>(
        N, J, HW, static_cast<const T*>(pred), static_cast<const T*>(gt), weight, dloss_dev,
        dloss_host, denom, static_cast<T*>(dpred));
  });
  HR_CUDA_LAUNCH_CHECK();
}
}  // namespace

void heatmap_loss_backward(DT dt, int64_t N, int64_t J, int64_t HW, const void* pred,
                           const void* gt, const float* weight, float dloss, void* dpred,
                           Stream st) {
  heatmap_backward(dt, N, J, HW, pred, gt, weight, nullptr, dloss, dpred, st);
}

void heatmap_loss_backward_dev(DT dt, int64_t N, int64_t J, int64_t HW, const void* pred,
                               const void* gt, const float* weight, const float* dloss,
                               void* dpred, Stream st) {
  heatmap_backward(dt, N, J, HW, pred, gt, weight, dloss, 0.f, dpred, st);
}

namespace {
// logits [N,HW,C], labels [N,HW] -> *loss (device); *bad (device) = the smallest pixel index
// with an invalid label, all ones when none (a slot of the workspace when bad is null).
void softmax_ce_forward_to(DT dt, int64_t N, int64_t C, int64_t HW, const void* logits,
                           const int64_t* labels, int64_t ignore_index, float smoothing,
                           const float* weight, float* loss, unsigned long long* bad, Stream st) {
  const int64_t P = N * HW;
  const cudaStream_t cs = detail::stream_of(st);
  if (P <= 0) {
    CUDA_CHECK(cudaMemsetAsync(loss, 0, sizeof(float), cs));
    if (bad) CUDA_CHECK(cudaMemsetAsync(bad, 0xFF, sizeof(unsigned long long), cs));
    return;
  }
  const int64_t blocks = detail::wave_blocks(P, kThreads);
  detail::Workspace ws(sizeof(double) * 2 * blocks + (bad ? 0 : sizeof(unsigned long long)), st);
  double* part = ws.as<double>();
  if (!bad) bad = reinterpret_cast<unsigned long long*>(part + 2 * blocks);
  CUDA_CHECK(cudaMemsetAsync(bad, 0xFF, sizeof(unsigned long long), cs));
  HR_DISPATCH_DT(dt, T, {
    softmax_ce_kernel<T><<<unsigned(blocks), kThreads, 0, cs>>>(
        P, C, static_cast<const T*>(logits), labels, ignore_index, smoothing, weight, part,
        bad);
  });
  HR_CUDA_LAUNCH_CHECK();
  softmax_ce_finish_kernel<<<1, kThreads, 0, cs>>>(blocks, part, bad, loss);
  HR_CUDA_LAUNCH_CHECK();
}
}  // namespace

// logits [N,HW,C], labels [N,HW]; loss: one fp32 on the device
void softmax_ce_forward_dev(DT dt, int64_t N, int64_t C, int64_t HW, const void* logits,
                            const int64_t* labels, int64_t ignore_index, float* loss, Stream st,
                            float smoothing, const float* class_weight) {
  softmax_ce_forward_to(dt, N, C, HW, logits, labels, ignore_index, smoothing, class_weight, loss,
                        nullptr, st);
}

float softmax_ce_forward(DT dt, int64_t N, int64_t C, int64_t HW, const void* logits,
                         const int64_t* labels, int64_t ignore_index, Stream st, float smoothing,
                         const float* class_weight) {
  if (N * HW <= 0) return 0.f;
  // {bad (u64), loss (f32)}: one copy to the host
  struct Out {
    unsigned long long bad;
    float loss;
  };
  detail::Workspace ws(sizeof(Out), st);
  auto* dev = ws.as<Out>();
  softmax_ce_forward_to(dt, N, C, HW, logits, labels, ignore_index, smoothing, class_weight,
                        &dev->loss, &dev->bad, st);
  Out host;
  memcpy_d2h(&host, dev, sizeof(Out), st);
  if (host.bad != std::numeric_limits<unsigned long long>::max()) {
    int64_t label = 0;
    memcpy_d2h(&label, labels + host.bad, sizeof(label), st);
    throw Error(str_cat("softmax_ce_forward: label ", label, " at [n=", int64_t(host.bad) / HW,
                        ", pixel ", int64_t(host.bad) % HW, "] is outside [0, ", C,
                        ") and is not the ignore index ", ignore_index));
  }
  return host.loss;
}

namespace {
// logits, dlogits [N,HW,C], labels [N,HW]; dloss from the device when dloss_dev is set
void softmax_ce_backward_impl(DT dt, int64_t N, int64_t C, int64_t HW, const void* logits,
                              const int64_t* labels, int64_t ignore_index, float smoothing,
                              const float* weight, const float* dloss_dev, float dloss_host,
                              void* dlogits, Stream st) {
  const int64_t P = N * HW;
  if (P <= 0 || C <= 0) return;
  const cudaStream_t cs = detail::stream_of(st);
  const int64_t blocks = detail::wave_blocks(P, kThreads);
  detail::Workspace ws(sizeof(double) * blocks + sizeof(float), st);
  double* part = ws.as<double>();
  float* k = reinterpret_cast<float*>(part + blocks);
  ce_count_kernel<<<unsigned(blocks), kThreads, 0, cs>>>(P, C, labels, ignore_index, weight,
                                                         part);
  HR_CUDA_LAUNCH_CHECK();
  ce_scale_kernel<<<1, kThreads, 0, cs>>>(blocks, part, dloss_dev, dloss_host, k);
  HR_CUDA_LAUNCH_CHECK();
  HR_DISPATCH_DT(dt, T, {
    softmax_ce_backward_kernel<T><<<unsigned(blocks), kThreads, 0, cs>>>(
        P, C, static_cast<const T*>(logits), labels, ignore_index, smoothing, weight, k,
        static_cast<T*>(dlogits));
  });
  HR_CUDA_LAUNCH_CHECK();
}
}  // namespace

void softmax_ce_backward(DT dt, int64_t N, int64_t C, int64_t HW, const void* logits,
                         const int64_t* labels, int64_t ignore_index, float dloss, void* dlogits,
                         Stream st, float smoothing, const float* class_weight) {
  softmax_ce_backward_impl(dt, N, C, HW, logits, labels, ignore_index, smoothing, class_weight,
                           nullptr, dloss, dlogits, st);
}

void softmax_ce_backward_dev(DT dt, int64_t N, int64_t C, int64_t HW, const void* logits,
                             const int64_t* labels, int64_t ignore_index, const float* dloss,
                             void* dlogits, Stream st, float smoothing,
                             const float* class_weight) {
  softmax_ce_backward_impl(dt, N, C, HW, logits, labels, ignore_index, smoothing, class_weight,
                           dloss, 0.f, dlogits, st);
}

namespace {
// ---- OHEM cross-entropy ----
// The softmax probability of class c at logits x, given row_lse's max and log-sum-exp: the one
// expression the OHEM forward's sort, its selection and the backward's selection all use, so that
// they see the same bits.
template <class T>
__device__ __forceinline__ float prob_of(const T* x, int64_t c, float mx, float lse) {
  return expf(to_f(x[c]) - mx - lse);
}

__device__ __forceinline__ bool counted_label(int64_t l, int64_t C, int64_t ignore_index) {
  return l != ignore_index && l >= 0 && l < C;
}

// prob[p] = the softmax probability of pixel p's label (+inf on ignored and invalid pixels, which
// sort last); part[block] = counted pixels; the smallest pixel with an invalid label -> *bad.
template <class T>
__global__ void __launch_bounds__(kThreads)
    ohem_prob_kernel(int64_t P, int64_t C, const T* __restrict__ logits,
                     const int64_t* __restrict__ labels, int64_t ignore_index,
                     float* __restrict__ prob, double* __restrict__ part,
                     unsigned long long* bad) {
  double count = 0;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < P;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t l = labels[p];
    if (!counted_label(l, C, ignore_index)) {
      if (l != ignore_index) atomicMin(bad, static_cast<unsigned long long>(p));
      prob[p] = INFINITY;
      continue;
    }
    const T* x = logits + p * C;
    float mx, lse;
    row_lse(x, C, mx, lse);
    prob[p] = prob_of(x, l, mx, lse);
    count += 1;
  }
  const double s = block_sum<kThreads>(count);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

// *threshold = max(sorted[k], thresh) (Python's max(min_value, thresh)), k = min(max(min_kept, 1),
// count - 1), count summed from nparts partials; thresh when no pixel is counted (one block).
__global__ void __launch_bounds__(kThreads)
    ohem_threshold_kernel(int64_t nparts, const double* __restrict__ part,
                          const float* __restrict__ sorted, int64_t min_kept, float thresh,
                          float* __restrict__ threshold) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < nparts; i += blockDim.x) s += part[i];
  const double total = block_sum<kThreads>(s);
  if (threadIdx.x == 0) {
    const int64_t count = int64_t(total);
    float thr = thresh;
    if (count > 0) {
      const int64_t kept = min_kept > 1 ? min_kept : 1;
      const int64_t k = kept < count - 1 ? kept : count - 1;
      const float min_value = sorted[k];
      thr = thresh > min_value ? thresh : min_value;
    }
    *threshold = thr;
  }
}

// part[block] = {sum of w[y] * -log p_y, kept pixels} over the pixels with p_y < *threshold
template <class T>
__global__ void __launch_bounds__(kThreads)
    ohem_loss_kernel(int64_t P, int64_t C, const T* __restrict__ logits,
                     const int64_t* __restrict__ labels, int64_t ignore_index,
                     const float* __restrict__ weight, const float* __restrict__ threshold,
                     double* __restrict__ part) {
  const float thr = *threshold;
  double loss = 0, kept = 0;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < P;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t l = labels[p];
    if (!counted_label(l, C, ignore_index)) continue;
    const T* x = logits + p * C;
    float mx, lse;
    row_lse(x, C, mx, lse);
    if (!(prob_of(x, l, mx, lse) < thr)) continue;
    const double nll = double(lse) - (double(to_f(x[l])) - double(mx));
    loss += weight ? double(weight[l]) * nll : nll;
    kept += 1;
  }
  const double sl = block_sum<kThreads>(loss);
  const double sk = block_sum<kThreads>(kept);
  if (threadIdx.x == 0) {
    part[2 * blockIdx.x] = sl;
    part[2 * blockIdx.x + 1] = sk;
  }
}

// part[block] = kept pixels (p_y < *threshold)
template <class T>
__global__ void __launch_bounds__(kThreads)
    ohem_count_kernel(int64_t P, int64_t C, const T* __restrict__ logits,
                      const int64_t* __restrict__ labels, int64_t ignore_index,
                      const float* __restrict__ threshold, double* __restrict__ part) {
  const float thr = *threshold;
  double kept = 0;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < P;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t l = labels[p];
    if (!counted_label(l, C, ignore_index)) continue;
    const T* x = logits + p * C;
    float mx, lse;
    row_lse(x, C, mx, lse);
    kept += prob_of(x, l, mx, lse) < thr ? 1.0 : 0.0;
  }
  const double s = block_sum<kThreads>(kept);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

// dlogits [P, C] = k * w[y] * (softmax - onehot(y)) on the kept pixels, 0 elsewhere (k = dloss /
// kept, from ce_scale_kernel)
template <class T>
__global__ void __launch_bounds__(kThreads)
    ohem_backward_kernel(int64_t P, int64_t C, const T* __restrict__ logits,
                         const int64_t* __restrict__ labels, int64_t ignore_index,
                         const float* __restrict__ weight, const float* __restrict__ threshold,
                         const float* __restrict__ kptr, T* __restrict__ dlogits) {
  const float thr = *threshold, k = *kptr;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < P;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t l = labels[p];
    const T* x = logits + p * C;
    T* d = dlogits + p * C;
    float mx = 0.f, lse = 0.f;
    bool kept = counted_label(l, C, ignore_index);
    if (kept) {
      row_lse(x, C, mx, lse);
      kept = prob_of(x, l, mx, lse) < thr;
    }
    if (!kept) {
      for (int64_t c = 0; c < C; ++c) d[c] = from_f<T>(0.f);
      continue;
    }
    const float kw = weight ? float(double(k) * double(weight[l])) : k;
    for (int64_t c = 0; c < C; ++c)
      d[c] = from_f<T>(kw * (prob_of(x, c, mx, lse) - (c == l ? 1.f : 0.f)));
  }
}

__global__ void ohem_empty_kernel(float* loss, float* threshold, float thresh) {
  *loss = 0.f;
  *threshold = thresh;
}

constexpr size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }
}  // namespace

void ohem_ce_forward_dev(DT dt, int64_t N, int64_t C, int64_t HW, const void* logits,
                         const int64_t* labels, int64_t ignore_index, float thresh,
                         int64_t min_kept, const float* class_weight, float* loss,
                         float* threshold, Stream st) {
  const int64_t P = N * HW;
  const cudaStream_t cs = detail::stream_of(st);
  if (P <= 0 || C <= 0) {
    ohem_empty_kernel<<<1, 1, 0, cs>>>(loss, threshold, thresh);
    HR_CUDA_LAUNCH_CHECK();
    return;
  }
  const int64_t blocks = detail::wave_blocks(P, kThreads);
  // the probabilities sorted in place between two buffers (cub::DoubleBuffer): no third copy
  size_t sort_bytes = 0;
  cub::DoubleBuffer<float> keys(nullptr, nullptr);
  CUDA_CHECK(cub::DeviceRadixSort::SortKeys(nullptr, sort_bytes, keys, P, 0, 32, cs));
  // workspace: {loss, kept} partials (double), bad (u64), two prob buffers, cub's scratch
  const size_t part_bytes = round_up(sizeof(double) * 2 * blocks + sizeof(unsigned long long), 256);
  const size_t prob_bytes = round_up(sizeof(float) * size_t(P), 256);
  detail::Workspace ws(part_bytes + 2 * prob_bytes + sort_bytes, st);
  char* base = ws.as<char>();
  double* part = reinterpret_cast<double*>(base);
  auto* bad = reinterpret_cast<unsigned long long*>(part + 2 * blocks);
  float* prob = reinterpret_cast<float*>(base + part_bytes);
  float* alt = reinterpret_cast<float*>(base + part_bytes + prob_bytes);
  void* sort_tmp = base + part_bytes + 2 * prob_bytes;
  CUDA_CHECK(cudaMemsetAsync(bad, 0xFF, sizeof(unsigned long long), cs));
  HR_DISPATCH_DT(dt, T, {
    ohem_prob_kernel<T><<<unsigned(blocks), kThreads, 0, cs>>>(
        P, C, static_cast<const T*>(logits), labels, ignore_index, prob, part, bad);
  });
  HR_CUDA_LAUNCH_CHECK();
  keys = cub::DoubleBuffer<float>(prob, alt);
  CUDA_CHECK(cub::DeviceRadixSort::SortKeys(sort_tmp, sort_bytes, keys, P, 0, 32, cs));
  ohem_threshold_kernel<<<1, kThreads, 0, cs>>>(blocks, part, keys.Current(), min_kept, thresh,
                                                threshold);
  HR_CUDA_LAUNCH_CHECK();
  HR_DISPATCH_DT(dt, T, {
    ohem_loss_kernel<T><<<unsigned(blocks), kThreads, 0, cs>>>(
        P, C, static_cast<const T*>(logits), labels, ignore_index, class_weight, threshold, part);
  });
  HR_CUDA_LAUNCH_CHECK();
  softmax_ce_finish_kernel<<<1, kThreads, 0, cs>>>(blocks, part, bad, loss);
  HR_CUDA_LAUNCH_CHECK();
}

void ohem_ce_backward_dev(DT dt, int64_t N, int64_t C, int64_t HW, const void* logits,
                          const int64_t* labels, int64_t ignore_index, const float* class_weight,
                          const float* threshold, const float* dloss, void* dlogits, Stream st) {
  const int64_t P = N * HW;
  if (P <= 0 || C <= 0) return;
  const cudaStream_t cs = detail::stream_of(st);
  const int64_t blocks = detail::wave_blocks(P, kThreads);
  detail::Workspace ws(sizeof(double) * blocks + sizeof(float), st);
  double* part = ws.as<double>();
  float* k = reinterpret_cast<float*>(part + blocks);
  HR_DISPATCH_DT(dt, T, {
    ohem_count_kernel<T><<<unsigned(blocks), kThreads, 0, cs>>>(
        P, C, static_cast<const T*>(logits), labels, ignore_index, threshold, part);
  });
  HR_CUDA_LAUNCH_CHECK();
  ce_scale_kernel<<<1, kThreads, 0, cs>>>(blocks, part, dloss, 0.f, k);
  HR_CUDA_LAUNCH_CHECK();
  HR_DISPATCH_DT(dt, T, {
    ohem_backward_kernel<T><<<unsigned(blocks), kThreads, 0, cs>>>(
        P, C, static_cast<const T*>(logits), labels, ignore_index, class_weight, threshold, k,
        static_cast<T*>(dlogits));
  });
  HR_CUDA_LAUNCH_CHECK();
}

namespace {
// Rounded multiply and add (no fused multiply-add): the host's double(loss) * weight + sum.
__global__ void loss_accumulate_kernel(const float* loss, double weight, double* acc) {
  const double l = double(*loss);
  acc[0] = __dadd_rn(acc[0], __dmul_rn(l, weight));
  acc[1] = l;
}
}  // namespace

void loss_accumulate(const float* loss, double weight, double* acc, Stream st) {
  HR_CHECK(loss && acc, "loss_accumulate: loss and acc must be device pointers");
  loss_accumulate_kernel<<<1, 1, 0, detail::stream_of(st)>>>(loss, weight, acc);
  HR_CUDA_LAUNCH_CHECK();
}

}  // namespace hr::cuda
