// CPU losses: HRNet's JointsMSELoss with target weights, and softmax cross-entropy over the
// channels of [N, C, HW] logits with an ignore label (mean over the counted pixels). Sums are
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
                         const int64_t* labels, int64_t ignore_index, float smoothing) {
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
                         float* dlogits, float smoothing) {
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

}  // namespace hr::cpu
