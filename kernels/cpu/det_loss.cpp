// CPU kernels of the FCOS detection head's ops: exp (the regression branch's exp(scale * x)), the
// sum of a product (the gradient of the per-level learnable scale), and the three losses: the
// sigmoid focal loss over [N, C, P] logits normalised by num_pos + N, the weighted IoU loss over
// [N, 4, P] distances and the masked BCE-with-logits (centerness). The per-element formulas are
// kernels/det_loss_math.h, shared with CUDA. Sums are accumulated in double, per row or block of
// fixed extent, and the partials added in a fixed order: the same bits for any thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/error.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/det_loss_math.h"

namespace hr::cpu {
namespace {

constexpr int64_t kParallelMin = int64_t(1) << 15;  // elements below which one thread runs
constexpr int64_t kBlock = 1024;                    // elements per partial sum

// part(0) + ... + part(count - 1) added in that order, the parts computed in parallel when
// `parallel`: the same bits for any thread count.
template <class Part>
double sum_of_parts(int64_t count, bool parallel, Part&& part) {
  std::vector<double> parts(static_cast<size_t>(count));
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t k = 0; k < count; ++k) parts[k] = part(k);
  double total = 0;
  for (double v : parts) total += v;
  return total;
}

// What add(i, s) adds to a double s for i in [0, n) (in order within a block of kBlock elements),
// summed with sum_of_parts.
template <class Add>
double blocked_sum(int64_t n, Add&& add) {
  return sum_of_parts((n + kBlock - 1) / kBlock, n >= kParallelMin, [&](int64_t b) {
    const int64_t end = std::min(n, (b + 1) * kBlock);
    double s = 0;
    for (int64_t i = b * kBlock; i < end; ++i) add(i, s);
    return s;
  });
}

// Sum of w over the elements with w > 0, in order (the weighted means' denominator).
double positive_sum(int64_t n, const float* w) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i)
    if (w[i] > 0.f) s += w[i];
  return s;
}

// Throws on a label above C; returns the number of labels > 0 (FCOS's num_pos).
int64_t check_focal_labels(const char* op, int64_t N, int64_t C, int64_t P, const int64_t* labels) {
  int64_t pos = 0;
  for (int64_t i = 0; i < N * P; ++i) {
    const int64_t l = labels[i];
    HR_CHECK(l <= C, op, ": label ", l, " at [n=", i / P, ", location ", i % P, "] is above the ",
             C, " classes (labels: negative ignored, 0 background, 1..", C, " the classes)");
    pos += l > 0;
  }
  return pos;
}

}  // namespace

// x [n] -> y [n]
void exp_forward(int64_t n, const float* x, float* y) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
}

// y, dy [n] -> dx [n]
void exp_backward(int64_t n, const float* y, const float* dy, float* dx) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * y[i];
}

// a, b [n]
float dot(int64_t n, const float* a, const float* b) {
  return float(blocked_sum(n, [&](int64_t i, double& s) { s += double(a[i]) * double(b[i]); }));
}

// logits [N, C, P], labels [N, P]
float sigmoid_focal_loss_forward(int64_t N, int64_t C, int64_t P, const float* logits,
                                 const int64_t* labels, float gamma, float alpha) {
  const int64_t pos = check_focal_labels("sigmoid_focal_loss", N, C, P, labels);
  const double total = sum_of_parts(N * C, N * C * P >= kParallelMin, [&](int64_t r) {
    const int64_t c = r % C;
    const float* x = logits + r * P;
    const int64_t* l = labels + (r / C) * P;
    double s = 0;
    for (int64_t p = 0; p < P; ++p)
      if (l[p] >= 0) s += kern::focal_loss_term(x[p], l[p] == c + 1, gamma, alpha);
    return s;
  });
  const double denom = double(pos + N);
  return denom > 0 ? float(total / denom) : 0.f;
}

// logits [N, C, P], labels [N, P] -> dlogits [N, C, P]
void sigmoid_focal_loss_backward(int64_t N, int64_t C, int64_t P, const float* logits,
                                 const int64_t* labels, float gamma, float alpha, float dloss,
                                 float* dlogits) {
  const int64_t pos = check_focal_labels("sigmoid_focal_loss_backward", N, C, P, labels);
  const float k = pos + N > 0 ? float(double(dloss) / double(pos + N)) : 0.f;
#pragma omp parallel for schedule(static) if (N * C * P >= kParallelMin)
  for (int64_t r = 0; r < N * C; ++r) {
    const int64_t c = r % C;
    const float* x = logits + r * P;
    const int64_t* l = labels + (r / C) * P;
    float* d = dlogits + r * P;
    for (int64_t p = 0; p < P; ++p)
      d[p] = l[p] < 0 ? 0.f : k * kern::focal_loss_grad(x[p], l[p] == c + 1, gamma, alpha);
  }
}

namespace {
// The four distances of location p of sample n from [N, 4, P].
void box_at(const float* xn, int64_t P, int64_t p, float (&b)[4]) {
  for (int j = 0; j < 4; ++j) b[j] = xn[j * P + p];
}
}  // namespace

// pred, target [N, 4, P], weight [N, P]
float iou_loss_forward(int64_t N, int64_t P, const float* pred, const float* target,
                       const float* weight) {
  const double wsum = positive_sum(N * P, weight);
  if (!(wsum > 0)) return 0.f;
  const int64_t per_n = (P + kBlock - 1) / kBlock;  // partials per sample
  const double total = sum_of_parts(N * per_n, N * P * 4 >= kParallelMin, [&](int64_t b) {
    const int64_t n = b / per_n, p0 = (b % per_n) * kBlock, p1 = std::min(P, p0 + kBlock);
    const float* w = weight + n * P;
    double s = 0;
    for (int64_t p = p0; p < p1; ++p) {
      if (!(w[p] > 0.f)) continue;  // pred and target there are never read
      float pb[4], tb[4];
      box_at(pred + n * 4 * P, P, p, pb);
      box_at(target + n * 4 * P, P, p, tb);
      s += double(w[p]) * double(kern::iou_loss_term(pb, tb));
    }
    return s;
  });
  return float(total / wsum);
}

// pred, target [N, 4, P], weight [N, P] -> dpred [N, 4, P]
void iou_loss_backward(int64_t N, int64_t P, const float* pred, const float* target,
                       const float* weight, float dloss, float* dpred) {
  const double wsum = positive_sum(N * P, weight);
  const float k = wsum > 0 ? float(double(dloss) / wsum) : 0.f;
#pragma omp parallel for schedule(static) if (N * P * 4 >= kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    const float* w = weight + n * P;
    float* d = dpred + n * 4 * P;
    for (int64_t p = 0; p < P; ++p) {
      float g[4] = {0.f, 0.f, 0.f, 0.f};
      if (w[p] > 0.f) {
        float pb[4], tb[4];
        box_at(pred + n * 4 * P, P, p, pb);
        box_at(target + n * 4 * P, P, p, tb);
        kern::iou_loss_grad(pb, tb, k * w[p], g);
      }
      for (int j = 0; j < 4; ++j) d[j * P + p] = g[j];
    }
  }
}

// logits, target, mask [n]
float masked_bce_forward(int64_t n, const float* logits, const float* target, const float* mask) {
  const double msum = positive_sum(n, mask);
  if (!(msum > 0)) return 0.f;
  const double total = blocked_sum(n, [&](int64_t i, double& s) {
    if (mask[i] > 0.f)
      s += double(mask[i]) * double(kern::bce_with_logits_term(logits[i], target[i]));
  });
  return float(total / msum);
}

// logits, target, mask [n] -> dlogits [n]
void masked_bce_backward(int64_t n, const float* logits, const float* target, const float* mask,
                         float dloss, float* dlogits) {
  const double msum = positive_sum(n, mask);
  const float k = msum > 0 ? float(double(dloss) / msum) : 0.f;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i)
    dlogits[i] =
        mask[i] > 0.f ? k * mask[i] * kern::bce_with_logits_grad(logits[i], target[i]) : 0.f;
}

}  // namespace hr::cpu
