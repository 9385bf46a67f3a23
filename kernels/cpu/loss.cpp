// CPU losses: HRNet's JointsMSELoss with target weights, softmax cross-entropy over the channels
// of [N, C, HW] logits with an ignore label and optional class weights (the weighted mean over
// the counted pixels), and the OHEM cross-entropy of HRNet-Semantic-Segmentation. Sums are
// accumulated in double; OpenMP over rows / pixel blocks, whose partial sums are then added in a
// fixed order, so the loss is the same bits for any thread count and run.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/error.h"
#include "kernels/cpu/cpu_kernels.h"

namespace hr::cpu {
namespace {

constexpr int64_t kPixelBlock = 256;

// Throws on a label outside [0, C) that is not ignore_index; returns the number of counted pixels.
int64_t check_labels(const char* op, int64_t N, int64_t C, int64_t HW, const int64_t* labels,
                     int64_t ignore_index) {
  int64_t counted = 0;
  for (int64_t p = 0; p < N * HW; ++p) {
    const int64_t l = labels[p];
    if (l == ignore_index) continue;
    HR_CHECK(l >= 0 && l < C, op, ": label ", l, " at [n=", p / HW, ", pixel ", p % HW,
             "] is outside [0, ", C, ") and is not the ignore index ", ignore_index);
    ++counted;
  }
  return counted;
}

// For pixels [i0, i0+len) of sample n: row max and log(sum(exp(x - max))) over the C channels.
void log_sum_exp(int64_t C, int64_t HW, const float* xn, int64_t i0, int64_t len, float* mx,
                 float* lse) {
  std::fill(mx, mx + len, -INFINITY);
  for (int64_t c = 0; c < C; ++c) {
    const float* r = xn + c * HW + i0;
    for (int64_t i = 0; i < len; ++i) mx[i] = std::max(mx[i], r[i]);
  }
  std::fill(lse, lse + len, 0.f);
  for (int64_t c = 0; c < C; ++c) {
    const float* r = xn + c * HW + i0;
    for (int64_t i = 0; i < len; ++i) lse[i] += std::exp(r[i] - mx[i]);
  }
  for (int64_t i = 0; i < len; ++i) lse[i] = std::log(lse[i]);
}


// ---- class-weighted cross-entropy (torch's CrossEntropyLoss(weight=w), reduction 'mean') ----
// loss = sum_i l_i / sum_i w[y_i] over the counted pixels, l_i = w[y_i] * -log p_{y_i}; with label
// smoothing e (torch 1.13's cross_entropy_loss_label_smoothing):
//   l_i = (1 - e) * w[y_i] * -log p_{y_i} + (e / C) * sum_c w[c] * -log p_c.
// 0 when the denominator is not positive (every pixel ignored), as the unweighted loss and as
// the CUDA kernels.
float weighted_ce_forward(int64_t N, int64_t C, int64_t HW, const float* logits,
                          const int64_t* labels, int64_t ignore_index, float smoothing,
                          const float* w) {
  check_labels("softmax_ce_forward", N, C, HW, labels, ignore_index);
  const int64_t blocks_per_n = (HW + kPixelBlock - 1) / kPixelBlock;
  std::vector<double> parts(static_cast<size_t>(2 * N * blocks_per_n));
#pragma omp parallel for schedule(static) if (N * C * HW >= 16384)
  for (int64_t b = 0; b < N * blocks_per_n; ++b) {
    const int64_t n = b / blocks_per_n, i0 = (b % blocks_per_n) * kPixelBlock;
    const int64_t len = std::min(kPixelBlock, HW - i0);
    const float* xn = logits + n * C * HW;
    const int64_t* ln = labels + n * HW + i0;
    float mx[kPixelBlock], lse[kPixelBlock];
    log_sum_exp(C, HW, xn, i0, len, mx, lse);
    double s = 0, den = 0;
    for (int64_t i = 0; i < len; ++i) {
      if (ln[i] == ignore_index) continue;
      const double wy = w[ln[i]];
      const double nll = double(lse[i]) - (double(xn[ln[i] * HW + i0 + i]) - double(mx[i]));
      den += wy;
      if (smoothing == 0.f) {
        s += wy * nll;
        continue;
      }
      double smooth = 0;  // sum_c w[c] * -log p_c
      for (int64_t c = 0; c < C; ++c)
        smooth += double(w[c]) * (double(lse[i]) - (double(xn[c * HW + i0 + i]) - double(mx[i])));
      s += (1.0 - smoothing) * wy * nll + double(smoothing) / double(C) * smooth;
    }
    parts[2 * b] = s;
    parts[2 * b + 1] = den;
  }
  double total = 0, den = 0;
  for (int64_t b = 0; b < N * blocks_per_n; ++b) {
    total += parts[2 * b];
    den += parts[2 * b + 1];
  }
  return den > 0 ? float(total / den) : 0.f;
}

// dlogits_c = k * ((1 - e) * w[y] * (p_c - [c == y]) + (e / C) * (W * p_c - w[c])), k = dloss /
// sum_i w[y_i], W = sum_c w[c]; 0 on ignored pixels.
void weighted_ce_backward(int64_t N, int64_t C, int64_t HW, const float* logits,
                          const int64_t* labels, int64_t ignore_index, float dloss, float* dlogits,
                          float smoothing, const float* w) {
  check_labels("softmax_ce_backward", N, C, HW, labels, ignore_index);
  double den = 0, wsum = 0;
  for (int64_t p = 0; p < N * HW; ++p)
    if (labels[p] != ignore_index) den += w[labels[p]];
  for (int64_t c = 0; c < C; ++c) wsum += w[c];
  const double k = den > 0 ? double(dloss) / den : 0.0;
  const float ks = float(k * double(smoothing) / double(C)), W = float(wsum);
  const int64_t blocks_per_n = (HW + kPixelBlock - 1) / kPixelBlock;
#pragma omp parallel for schedule(static) if (N * C * HW >= 16384)
  for (int64_t b = 0; b < N * blocks_per_n; ++b) {
    const int64_t n = b / blocks_per_n, i0 = (b % blocks_per_n) * kPixelBlock;
    const int64_t len = std::min(kPixelBlock, HW - i0);
    const float* xn = logits + n * C * HW;
    float* dn = dlogits + n * C * HW;
    const int64_t* ln = labels + n * HW + i0;
    float mx[kPixelBlock], lse[kPixelBlock], ky[kPixelBlock], kc[kPixelBlock];
    log_sum_exp(C, HW, xn, i0, len, mx, lse);
    for (int64_t i = 0; i < len; ++i) {
      const bool ig = ln[i] == ignore_index;
      ky[i] = ig ? 0.f : float(k * (1.0 - double(smoothing)) * double(w[ln[i]]));
      kc[i] = ig ? 0.f : ks;
    }
    for (int64_t c = 0; c < C; ++c) {
      const float* r = xn + c * HW + i0;
      float* d = dn + c * HW + i0;
      for (int64_t i = 0; i < len; ++i) {
        const float prob = std::exp(r[i] - mx[i] - lse[i]);
        d[i] = ky[i] * (prob - (ln[i] == c ? 1.f : 0.f)) + kc[i] * (W * prob - w[c]);
      }
    }
  }
}

// ---- OHEM ----
// For pixels [i0, i0+len) of sample n: the softmax probability of the label, +inf where the
// label is ignore_index. The one place p is computed, so that the forward's selection and the
// backward's are the same bits.
void target_probs(int64_t C, int64_t HW, const float* xn, const int64_t* ln, int64_t ignore_index,
                  int64_t i0, int64_t len, float* mx, float* lse, float* p) {
  log_sum_exp(C, HW, xn, i0, len, mx, lse);
  for (int64_t i = 0; i < len; ++i)
    p[i] = ln[i] == ignore_index ? INFINITY : std::exp(xn[ln[i] * HW + i0 + i] - mx[i] - lse[i]);
}

// Every pixel's softmax probability of its label (+inf where ignored), with the max and
// log-sum-exp of its logits, which the OHEM loss's selection pass and its loss or gradient pass
// both read: computed once.
struct OhemPixels {
  std::vector<float> prob, mx, lse;  // [N * HW]
  OhemPixels(int64_t N, int64_t C, int64_t HW, const float* logits, const int64_t* labels,
             int64_t ignore_index)
      : prob(static_cast<size_t>(N * HW)), mx(prob.size()), lse(prob.size()) {
    const int64_t blocks_per_n = (HW + kPixelBlock - 1) / kPixelBlock;
#pragma omp parallel for schedule(static) if (N * C * HW >= 16384)
    for (int64_t b = 0; b < N * blocks_per_n; ++b) {
      const int64_t n = b / blocks_per_n, i0 = (b % blocks_per_n) * kPixelBlock;
      const int64_t len = std::min(kPixelBlock, HW - i0);
      const size_t at = static_cast<size_t>(n * HW + i0);
      target_probs(C, HW, logits + n * C * HW, labels + n * HW + i0, ignore_index, i0, len,
                   mx.data() + at, lse.data() + at, prob.data() + at);
    }
  }
};

}  // namespace

// pred, gt [N,J,HW], weight [N,J]
float heatmap_loss_forward(int64_t N, int64_t J, int64_t HW, const float* pred, const float* gt,
                           const float* weight) {
  std::vector<double> rows(static_cast<size_t>(N * J));
#pragma omp parallel for schedule(static) if (N * J * HW >= 16384)
  for (int64_t r = 0; r < N * J; ++r) {
    const float w = weight[r];
    const float* p = pred + r * HW;
    const float* g = gt + r * HW;
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < HW; ++i) {
      const double d = double(w * p[i]) - double(w * g[i]);
      s += d * d;
    }
    rows[r] = s;
  }
  double total = 0;
  for (double v : rows) total += v;
  return float(0.5 * total / (double(N) * double(HW) * double(J)));
}

// pred, gt [N,J,HW], weight [N,J] -> dpred [N,J,HW]
void heatmap_loss_backward(int64_t N, int64_t J, int64_t HW, const float* pred, const float* gt,
                           const float* weight, float dloss, float* dpred) {
  const double k = double(dloss) / (double(N) * double(HW) * double(J));
#pragma omp parallel for schedule(static) if (N * J * HW >= 16384)
  for (int64_t r = 0; r < N * J; ++r) {
    const float w = weight[r];
    const float kw = float(k * w);
    const float* p = pred + r * HW;
    const float* g = gt + r * HW;
    float* d = dpred + r * HW;
#pragma omp simd
    for (int64_t i = 0; i < HW; ++i) d[i] = kw * (w * p[i] - w * g[i]);
  }
}

// logits [N,C,HW], labels [N,HW]
float softmax_ce_forward(int64_t N, int64_t C, int64_t HW, const float* logits,
                         const int64_t* labels, int64_t ignore_index, float smoothing,
                         const float* class_weight) {
  if (class_weight)
    return weighted_ce_forward(N, C, HW, logits, labels, ignore_index, smoothing, class_weight);
  const int64_t counted = check_labels("softmax_ce_forward", N, C, HW, labels, ignore_index);
  if (counted == 0) return 0.f;
  const int64_t blocks_per_n = (HW + kPixelBlock - 1) / kPixelBlock;
  std::vector<double> parts(static_cast<size_t>(N * blocks_per_n));
#pragma omp parallel for schedule(static) if (N * C * HW >= 16384)
  for (int64_t b = 0; b < N * blocks_per_n; ++b) {
    const int64_t n = b / blocks_per_n, i0 = (b % blocks_per_n) * kPixelBlock;
    const int64_t len = std::min(kPixelBlock, HW - i0);
    const float* xn = logits + n * C * HW;
    const int64_t* ln = labels + n * HW + i0;
    float mx[kPixelBlock], lse[kPixelBlock];
    log_sum_exp(C, HW, xn, i0, len, mx, lse);
    double s = 0;
    for (int64_t i = 0; i < len; ++i) {
      if (ln[i] == ignore_index) continue;
      // -log p_label, and with smoothing the mean of -log p_c over the classes
      const double nll = double(lse[i]) - (double(xn[ln[i] * HW + i0 + i]) - double(mx[i]));
      if (smoothing == 0.f) {
        s += nll;
        continue;
      }
      double mean_x = 0;
      for (int64_t c = 0; c < C; ++c) mean_x += xn[c * HW + i0 + i];
      const double uniform = double(lse[i]) - (mean_x / double(C) - double(mx[i]));
      s += (1.0 - smoothing) * nll + smoothing * uniform;
    }
    parts[b] = s;
  }
  double total = 0;
  for (double v : parts) total += v;
  return float(total / double(counted));
}

// logits [N,C,HW], labels [N,HW] -> dlogits [N,C,HW]
void softmax_ce_backward(int64_t N, int64_t C, int64_t HW, const float* logits,
                         const int64_t* labels, int64_t ignore_index, float dloss,
                         float* dlogits, float smoothing, const float* class_weight) {
  if (class_weight)
    return weighted_ce_backward(N, C, HW, logits, labels, ignore_index, dloss, dlogits, smoothing,
                                class_weight);
  const float on = 1.f - smoothing + smoothing / float(C), off = smoothing / float(C);
  const int64_t counted = check_labels("softmax_ce_backward", N, C, HW, labels, ignore_index);
  const float k = counted ? float(double(dloss) / double(counted)) : 0.f;
  const int64_t blocks_per_n = (HW + kPixelBlock - 1) / kPixelBlock;
#pragma omp parallel for schedule(static) if (N * C * HW >= 16384)
  for (int64_t b = 0; b < N * blocks_per_n; ++b) {
    const int64_t n = b / blocks_per_n, i0 = (b % blocks_per_n) * kPixelBlock;
    const int64_t len = std::min(kPixelBlock, HW - i0);
    const float* xn = logits + n * C * HW;
    float* dn = dlogits + n * C * HW;
    const int64_t* ln = labels + n * HW + i0;
    float mx[kPixelBlock], lse[kPixelBlock], kk[kPixelBlock];
    log_sum_exp(C, HW, xn, i0, len, mx, lse);
    for (int64_t i = 0; i < len; ++i) kk[i] = ln[i] == ignore_index ? 0.f : k;
    for (int64_t c = 0; c < C; ++c) {
      const float* r = xn + c * HW + i0;
      float* d = dn + c * HW + i0;
      for (int64_t i = 0; i < len; ++i) {
        const float prob = std::exp(r[i] - mx[i] - lse[i]);
        d[i] = kk[i] * (prob - (ln[i] == c ? on : off));
      }
    }
  }
}

// logits [N,C,HW], labels [N,HW], class_weight [C] or null -> the loss; *threshold the
// probability threshold of the selection (thresh when no pixel is counted)
float ohem_ce_forward(int64_t N, int64_t C, int64_t HW, const float* logits,
                      const int64_t* labels, int64_t ignore_index, float thresh, int64_t min_kept,
                      const float* class_weight, float* threshold) {
  const int64_t counted = check_labels("ohem_ce_forward", N, C, HW, labels, ignore_index);
  const int64_t blocks_per_n = (HW + kPixelBlock - 1) / kPixelBlock;
  const int64_t nblocks = N * blocks_per_n;
  const OhemPixels px(N, C, HW, logits, labels, ignore_index);
  const std::vector<float>& prob = px.prob;
  // the k-th smallest probability, k = min(min_kept, count - 1) (torch: sort, then index)
  float thr = thresh;
  if (counted > 0) {
    std::vector<float> valid;
    valid.reserve(static_cast<size_t>(counted));
    for (int64_t p = 0; p < N * HW; ++p)
      if (labels[p] != ignore_index) valid.push_back(prob[p]);
    const int64_t k = std::min(std::max<int64_t>(min_kept, 1), counted - 1);
    std::nth_element(valid.begin(), valid.begin() + k, valid.end());
    const float min_value = valid[k];
    thr = thresh > min_value ? thresh : min_value;  // Python's max(min_value, thresh)
  }
  *threshold = thr;
  // the plain mean of w[y] * -log p_y over the pixels with p < threshold
  std::vector<double> parts(static_cast<size_t>(2 * nblocks));
#pragma omp parallel for schedule(static) if (N * C * HW >= 16384)
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t n = b / blocks_per_n, i0 = (b % blocks_per_n) * kPixelBlock;
    const int64_t len = std::min(kPixelBlock, HW - i0);
    const float* xn = logits + n * C * HW;
    const int64_t* ln = labels + n * HW + i0;
    const float* pn = prob.data() + n * HW + i0;
    const float* mx = px.mx.data() + n * HW + i0;
    const float* lse = px.lse.data() + n * HW + i0;
    double s = 0, kept = 0;
    for (int64_t i = 0; i < len; ++i) {
      if (ln[i] == ignore_index || !(pn[i] < thr)) continue;
      const double nll = double(lse[i]) - (double(xn[ln[i] * HW + i0 + i]) - double(mx[i]));
      s += class_weight ? double(class_weight[ln[i]]) * nll : nll;
      kept += 1;
    }
    parts[2 * b] = s;
    parts[2 * b + 1] = kept;
  }
  double total = 0, kept = 0;
  for (int64_t b = 0; b < nblocks; ++b) {
    total += parts[2 * b];
    kept += parts[2 * b + 1];
  }
  return kept > 0 ? float(total / kept) : 0.f;
}

// dlogits = dloss / kept * w[y] * (softmax - onehot(y)) on the kept pixels (p < threshold), 0
// elsewhere; kept: their number (no gradient when none).
void ohem_ce_backward(int64_t N, int64_t C, int64_t HW, const float* logits,
                      const int64_t* labels, int64_t ignore_index, const float* class_weight,
                      float threshold, float dloss, float* dlogits) {
  check_labels("ohem_ce_backward", N, C, HW, labels, ignore_index);
  const int64_t blocks_per_n = (HW + kPixelBlock - 1) / kPixelBlock;
  const int64_t nblocks = N * blocks_per_n;
  const OhemPixels px(N, C, HW, logits, labels, ignore_index);
  const std::vector<float>& prob = px.prob;
  int64_t kept = 0;
  for (int64_t p = 0; p < N * HW; ++p) kept += labels[p] != ignore_index && prob[p] < threshold;
  const double k = kept ? double(dloss) / double(kept) : 0.0;
#pragma omp parallel for schedule(static) if (N * C * HW >= 16384)
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t n = b / blocks_per_n, i0 = (b % blocks_per_n) * kPixelBlock;
    const int64_t len = std::min(kPixelBlock, HW - i0);
    const float* xn = logits + n * C * HW;
    float* dn = dlogits + n * C * HW;
    const int64_t* ln = labels + n * HW + i0;
    const float* pn = prob.data() + n * HW + i0;
    const float* mx = px.mx.data() + n * HW + i0;
    const float* lse = px.lse.data() + n * HW + i0;
    float kk[kPixelBlock];
    for (int64_t i = 0; i < len; ++i) {
      const bool sel = ln[i] != ignore_index && pn[i] < threshold;
      kk[i] = sel ? float(k * (class_weight ? double(class_weight[ln[i]]) : 1.0)) : 0.f;
    }
    for (int64_t c = 0; c < C; ++c) {
      const float* r = xn + c * HW + i0;
      float* d = dn + c * HW + i0;
      for (int64_t i = 0; i < len; ++i) {
        const float p = std::exp(r[i] - mx[i] - lse[i]);
        d[i] = kk[i] * (p - (ln[i] == c ? 1.f : 0.f));
      }
    }
  }
}

}  // namespace hr::cpu
