// The per-element formulas of the detection losses (FCOS: sigmoid focal loss, IoU loss, the
// centerness BCE), shared by the CPU and CUDA kernels so that both devices compute the same
// expression; reductions and normalisers live in kernels/cpu/det_loss.cpp and
// kernels/cuda/det_loss.cu.
#pragma once
#include <cfloat>
#include <cmath>

#include "kernels/host_device.h"

namespace hr::kern {

// log(1 - sigmoid(x)) = -max(x, 0) - log1p(exp(-|x|)), finite for every finite x.
HR_HOST_DEVICE float log_one_minus_sigmoid(float x) {
  return -fmaxf(x, 0.f) - log1pf(expf(-fabsf(x)));
}

// v^gamma; FCOS's gamma = 2 as one product (correctly rounded, and much faster than powf).
HR_HOST_DEVICE float pow_gamma(float v, float gamma) {
  return gamma == 2.f ? v * v : powf(v, gamma);
}

// One term of maskrcnn-benchmark's sigmoid focal loss (csrc/cuda/SigmoidFocalLoss_cuda.cu, the
// kernel FCOS trains with), p = sigmoid(x):
//   positive (the location's class):  -alpha (1 - p)^gamma log(max(p, FLT_MIN))
//   negative (any other class):       -(1 - alpha) p^gamma log(1 - p)   (log(1 - p) stable)
// (their log(1 + exp(-|x|)) written log1p: the same value, exact for large |x|.)
HR_HOST_DEVICE float focal_loss_term(float x, bool positive, float gamma, float alpha) {
  const float p = 1.f / (1.f + expf(-x));
  if (positive) return -alpha * pow_gamma(1.f - p, gamma) * logf(fmaxf(p, FLT_MIN));
  return -(1.f - alpha) * pow_gamma(p, gamma) * log_one_minus_sigmoid(x);
}

// d(focal_loss_term)/dx, as their backward kernel:
//   positive: -alpha (1 - p)^gamma (1 - p - gamma p log(max(p, FLT_MIN)))
//   negative: -(1 - alpha) p^gamma (gamma (1 - p) log(1 - p) - p)
HR_HOST_DEVICE float focal_loss_grad(float x, bool positive, float gamma, float alpha) {
  const float p = 1.f / (1.f + expf(-x));
  if (positive)
    return -alpha * pow_gamma(1.f - p, gamma) * (1.f - p - p * gamma * logf(fmaxf(p, FLT_MIN)));
  return -(1.f - alpha) * pow_gamma(p, gamma) * (log_one_minus_sigmoid(x) * (1.f - p) * gamma - p);
}

// torch.min's gradient share for a of min(a, b): 1 when a < b, 1/2 on ties, else 0.
HR_HOST_DEVICE float min_share(float a, float b) { return a < b ? 1.f : a == b ? 0.5f : 0.f; }

// maskrcnn-benchmark's IOULoss at one location: pred p and target t the distances (left, top,
// right, bottom) to the box sides; -log((I + 1) / (U + 1)).
HR_HOST_DEVICE float iou_loss_term(const float (&p)[4], const float (&t)[4]) {
  const float target_area = (t[0] + t[2]) * (t[1] + t[3]);
  const float pred_area = (p[0] + p[2]) * (p[1] + p[3]);
  const float w = fminf(p[0], t[0]) + fminf(p[2], t[2]);
  const float h = fminf(p[3], t[3]) + fminf(p[1], t[1]);
  const float inter = w * h;
  const float uni = target_area + pred_area - inter;
  return -logf((inter + 1.f) / (uni + 1.f));
}

// k * d(iou_loss_term)/dp -> g (torch's gradient, ties of min split in halves).
HR_HOST_DEVICE void iou_loss_grad(const float (&p)[4], const float (&t)[4], float k,
                                  float (&g)[4]) {
  const float target_area = (t[0] + t[2]) * (t[1] + t[3]);
  const float pw = p[0] + p[2], ph = p[1] + p[3];
  const float w = fminf(p[0], t[0]) + fminf(p[2], t[2]);
  const float h = fminf(p[3], t[3]) + fminf(p[1], t[1]);
  const float inter = w * h;
  const float uni = target_area + pw * ph - inter;
  // loss = log(U + 1) - log(I + 1): dI/(I+1) and dU/(U+1) with dU = dPA - dI
  const float a = k / (inter + 1.f), b = k / (uni + 1.f);
  const float di[4] = {min_share(p[0], t[0]) * h, min_share(p[1], t[1]) * w,
                       min_share(p[2], t[2]) * h, min_share(p[3], t[3]) * w};
  const float dpa[4] = {ph, pw, ph, pw};
  for (int i = 0; i < 4; ++i) g[i] = b * (dpa[i] - di[i]) - a * di[i];
}

// BCEWithLogits in its stable form: max(x, 0) - x t + log1p(exp(-|x|)); gradient sigmoid(x) - t.
HR_HOST_DEVICE float bce_with_logits_term(float x, float t) {
  return fmaxf(x, 0.f) - x * t + log1pf(expf(-fabsf(x)));
}
HR_HOST_DEVICE float bce_with_logits_grad(float x, float t) { return 1.f / (1.f + expf(-x)) - t; }

}  // namespace hr::kern
