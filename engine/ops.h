// The op vocabulary. Each function builds its op's definition (engine/ops/<op>.cpp: checks whose
// errors name the op and the shapes, kernels per device, backward rule) and applies it
// (engine/op.h): at once on eager tensors, recording backward nodes when grad mode is on and an
// input requires grad; as a graph node on symbolic tensors (engine/graph/graph.h). CPU computes
// in fp32; CUDA in fp32, f16 or bf16 storage with fp32 accumulation (batch-norm parameters and
// statistics stay fp32).
#pragma once
#include <array>
#include <optional>
#include <vector>

#include "engine/autograd.h"
#include "engine/op.h"
#include "engine/tensor.h"

namespace hr {

// Mixed precision, as torch.autocast: inside the guard, conv2d and linear on CUDA cast their
// floating inputs and weights to `dtype` (f16 or bf16) through the differentiable cast op, so
// fp32 master weights receive fp32 gradients; every other op follows its input's dtype
// (batch-norm statistics and parameters stay fp32). No effect on the CPU.
class AutocastGuard {
 public:
  explicit AutocastGuard(DType dtype);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  DType prev_;
};
DType autocast_dtype();  // f32 when autocast is off

// Synchronised batch norm (the official seg code's SyncBatchNorm): training-mode batch norms made
// on this thread while the guard is on (eager calls, or a graph being recorded) take their
// statistics over the batches of every rank of a data-parallel job (engine/dist.h), forward and
// backward; with one rank that is plain batch norm. CPU (MPI); CUDA needs one rank for now.
class SyncBatchNormGuard {
 public:
  explicit SyncBatchNormGuard(bool on);
  ~SyncBatchNormGuard();
  SyncBatchNormGuard(const SyncBatchNormGuard&) = delete;
  SyncBatchNormGuard& operator=(const SyncBatchNormGuard&) = delete;

 private:
  bool prev_;
};
bool sync_batch_norm();

}  // namespace hr

namespace hr::ops {

// x [N,C,H,W], w [K,C,R,S], bias [K] or undefined -> [N,K,P,Q]
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor(),
              std::array<int64_t, 2> stride = {1, 1}, std::array<int64_t, 2> padding = {0, 0});

// x [N,C,H,W] (or [N,C]); gamma, beta, running_mean, running_var [C] fp32.
// training: batch statistics, running stats updated in place (momentum, unbiased variance);
// otherwise the running statistics. num_batches_tracked (i64 scalar, may be undefined) is
// incremented in training.
Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor running_mean,
                  Tensor running_var, bool training, float momentum = 0.1f, float eps = 1e-5f,
                  Tensor num_batches_tracked = Tensor());

// Fused relu(batch_norm(x) + residual) (HRNet's BN -> add -> ReLU): residual (x's shape, dtype
// and device) may be undefined, and relu = false leaves out the ReLU. Arguments, statistics and
// running-stat updates as batch_norm; one autograd node with gradients for x, residual, gamma and
// beta. On the CPU the result and every gradient are bit-identical to the unfused ops.
Tensor batch_norm_act(const Tensor& x, const Tensor& residual, bool relu, const Tensor& gamma,
                      const Tensor& beta, Tensor running_mean, Tensor running_var, bool training,
                      float momentum = 0.1f, float eps = 1e-5f,
                      Tensor num_batches_tracked = Tensor());

// torch.nn.functional.group_norm: x [N,C,H,W] or [N,C] in `groups` groups of C/groups channels,
// each normalised by its own mean and (biased) variance, then gamma * x + beta (f32 [C]).
Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta,
                  float eps = 1e-5f);

Tensor relu(const Tensor& x);
Tensor add(const Tensor& a, const Tensor& b);  // same shape
Tensor mul(const Tensor& x, float alpha);       // alpha * x
Tensor sum_all(const Tensor& x);                // scalar f32 (CPU tensors only)
Tensor exp(const Tensor& x);
// s * x with s a one-element f32 tensor on x's device (a learnable scale: FCOS's per-level
// Scale); x any shape and floating dtype. Gradients: dx = s * dy, ds = sum(dy * x) (f32, a
// fixed-order reduction).
Tensor scale(const Tensor& x, const Tensor& s);

// PyTorch F.interpolate(mode="nearest"): by integer/float scale factor or to a size.
Tensor upsample_nearest(const Tensor& x, std::array<int64_t, 2> size);
Tensor upsample_nearest_scale(const Tensor& x, double scale_factor);
// PyTorch F.interpolate(mode="bilinear", align_corners=...).
Tensor upsample_bilinear(const Tensor& x, std::array<int64_t, 2> size, bool align_corners);
Tensor upsample_bilinear_scale(const Tensor& x, double scale_factor, bool align_corners);

Tensor concat(const std::vector<Tensor>& xs, int64_t dim = 1);

// PyTorch AvgPool2d (ceil_mode false)
Tensor avg_pool2d(const Tensor& x, std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride,
                  std::array<int64_t, 2> padding = {0, 0}, bool count_include_pad = true);
// x [N,C,H,W] -> [N,C]
Tensor global_avg_pool(const Tensor& x);

// x [M,I], w [O,I], bias [O] or undefined -> [M,O]
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor());

// Batched matrix product of 3-D tensors: op(a) [B,M,K] x op(b) [B,K,N] -> [B,M,N], where op
// transposes the last two dimensions of an operand stored [B,K,M] (trans_a) or [B,N,K]
// (trans_b). Under autocast both operands are cast as for linear. Its backward is bmm again.
Tensor bmm(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);

// torch.softmax(x, dim): max-subtracted exponentials normalised along `dim` (negative counts
// from the end), any rank.
Tensor softmax(const Tensor& x, int64_t dim = -1);

// torch.nn.Dropout2d in training: each channel (n, c) of x [N,C,...] is zeroed with probability
// p, the others scaled by 1/(1-p). The mask comes from a counter-based hash of (seed, step, n, c)
// with `state` = {seed, step} (i64 [2] on x's device, see dropout_state) read and advanced by one
// in place by the kernel, so that eager calls, compiled graphs and CUDA-graph replays each draw a
// fresh mask, the same one on the CPU and on CUDA for the same state. -> {y, mask f32 [N,C] of
// 0 and 1/(1-p)}. The gradient of x is dy * mask. Give each dropout its own state. (Eval mode:
// call no op at all.)
std::array<Tensor, 2> dropout2d(const Tensor& x, const Tensor& state, float p);
// A dropout2d state {seed, 0} on `device`.
Tensor dropout_state(uint64_t seed, Device device = Device::cpu());
// y[n, c, ...] = x[n, c, ...] * s[n, c] (s f32 [N,C], no gradient): dropout2d's backward.
Tensor channel_scale(const Tensor& x, const Tensor& s);

// Differentiable reshape (the elements in logical row-major order, copied).
Tensor reshape(const Tensor& x, const Shape& shape);
// Differentiable dtype change (mixed precision: fp32 master weights cast to bf16/f16).
Tensor cast(const Tensor& x, DType dtype);
// A dataset's raw input to the model's: x u8 [N, H, W * C] (channel-interleaved crops),
// lut f32 [C, 256] (data::Dataset::input_lut) -> f32 [N, C, H, W], y[n, c, h, w] =
// lut[c, x[n, h, w * C + c]]; with size i64 [N, 2] (sample n's valid {h, w}: an image padded to
// the batch's canvas), 0 outside it. Not differentiable.
Tensor normalize_u8(const Tensor& x, const Tensor& lut, const Tensor& size = Tensor());

// x (f32) averaged over the ranks of a data-parallel job (engine/dist.h; one rank: a copy). A
// collective: every rank must call it, in the same order.
Tensor all_reduce_mean(const Tensor& x);

// HRNet JointsMSELoss with target weights: pred, target [N,J,H,W], weight [N,J] or [N,J,1].
Tensor heatmap_loss(const Tensor& pred, const Tensor& target, const Tensor& weight);
// Mean softmax cross-entropy over classes of logits [N,C,H,W] (or [N,C]) against i64 labels
// [N,H,W] (or [N]); pixels equal to ignore_index are not counted. label_smoothing e as torch's:
// (1 - e) * -log p_label + e * mean over classes of -log p_c. class_weight: f32 [C] on the
// logits' device, or undefined (unweighted): torch's CrossEntropyLoss(weight=w) with reduction
// 'mean', sum_i w[y_i] * -log p_{y_i} / sum_i w[y_i]; with label smoothing, torch 1.13's
// ((1 - e) * sum_i w[y_i] * -log p_{y_i} + (e / C) * sum_i sum_c w[c] * -log p_c) / sum_i w[y_i].
// When nothing is counted (every pixel ignored, or the weights of the labels sum to 0 or less)
// the loss is 0 with a zero gradient (torch gives NaN).
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, int64_t ignore_index = 255,
                     float label_smoothing = 0.f, const Tensor& class_weight = Tensor());
// The OHEM cross-entropy of HRNet-Semantic-Segmentation (OhemCrossEntropy._ohem_forward), on
// logits and labels as cross_entropy: p_i, the softmax probability of pixel i's label over the
// counted pixels, sorted ascending; threshold = max(p_sorted[min(min_kept, count - 1)], thresh)
// with min_kept raised to 1 as OhemCrossEntropy's constructor does; the loss is the plain mean of
// w[y_i] * -log p_i (w = class_weight, f32 [C], or 1 when undefined) over the pixels with
// p_i < threshold (ties: all pixels equal to the threshold are dropped, as torch's strict
// comparison does). The backward treats the selection as constant. When no pixel is counted or
// none is below the threshold, the loss is 0 with a zero gradient (torch raises an IndexError for
// the first and gives NaN for the second).
Tensor ohem_cross_entropy(const Tensor& logits, const Tensor& labels, int64_t ignore_index = 255,
                          float thresh = 0.7f, int64_t min_kept = 100000,
                          const Tensor& class_weight = Tensor());

// ---- detection losses (HRNet-FCOS, maskrcnn_benchmark/modeling/rpn/fcos/loss.py) ----
// Scalar f32 losses on the prediction's device; the prediction may be f16/bf16 on CUDA, the
// other operands are data (targets, weights and masks in another floating dtype are cast to f32)
// and carry no gradient.
// maskrcnn-benchmark's SigmoidFocalLoss(gamma, alpha) divided by num_pos + N, FCOS's normaliser:
// logits [N,C,P] (C classes, no background), labels i64 [N,P]: 0 background, k in 1..C marks
// class k - 1 positive, a negative label is ignored (no term); num_pos = the labels > 0. The
// terms, p = sigmoid(x): -alpha (1 - p)^gamma log p for the positive class, -(1 - alpha) p^gamma
// log(1 - p) for every other class, in the stable form of their CUDA kernel (forward and
// backward). A label above C throws on the CPU and makes the loss NaN on CUDA.
Tensor sigmoid_focal_loss(const Tensor& logits, const Tensor& labels, float gamma, float alpha);
// maskrcnn-benchmark's IOULoss, -log((I + 1) / (U + 1)), of pred and target [N,4,P] (distances
// to the left, top, right and bottom sides), averaged with weights [N,P] (FCOS: the centerness
// targets) over the locations whose weight is > 0: sum w_p loss_p / sum w_p. Nothing else is
// read (any values may stand at the other locations, whose gradient is 0); 0 with a zero
// gradient when no weight is > 0. min's gradient splits ties in halves, as torch.min's.
Tensor iou_loss(const Tensor& pred, const Tensor& target, const Tensor& weight);
// BCE with logits, max(x, 0) - x t + log1p(exp(-|x|)), of logits, target and mask [N,P], over
// the elements with mask > 0: sum m_i bce_i / sum m_i (FCOS's centerness loss, mask the positive
// locations: nn.BCEWithLogitsLoss's mean over them); nothing else is read; 0 with a zero
// gradient when no mask is > 0.
Tensor masked_bce_with_logits(const Tensor& logits, const Tensor& target, const Tensor& mask);

// ---- the ops backward rules are written with (not differentiable themselves) ----
// dy [N,K,P,Q], w [K,C,R,S] -> dx of shape `input`
Tensor conv2d_backward_data(const Tensor& dy, const Tensor& w, const Shape& input,
                            std::array<int64_t, 2> stride, std::array<int64_t, 2> padding);
// x [N,C,H,W], dy [N,K,P,Q] -> {dw of shape `weight`, dbias [K] f32 (when `bias`, else undefined)}
std::array<Tensor, 2> conv2d_backward_weight(const Tensor& x, const Tensor& dy, const Shape& weight,
                                             std::array<int64_t, 2> stride,
                                             std::array<int64_t, 2> padding, bool bias);
// Backward of batch_norm_act (relu false, residual undefined: batch_norm). stat_a, stat_b: the
// saved mean and inverse std (training) or the running mean and variance (inference). y: the
// forward output (read for the ReLU mask; may be undefined without ReLU). need: dx, dresidual
// (ReLU only: without it the residual's gradient is dy), dgamma, dbeta.
// -> {dx, dresidual, dgamma, dbeta}, undefined where not needed.
std::array<Tensor, 4> batch_norm_backward(const Tensor& x, const Tensor& y, const Tensor& dy,
                                          const Tensor& gamma, const Tensor& stat_a,
                                          const Tensor& stat_b, bool training, bool relu,
                                          float eps, std::array<bool, 4> need, bool sync = false);
// mean, rstd: group_norm's saved statistics [N, groups]; need: dx, dgamma, dbeta
// -> {dx, dgamma, dbeta}, undefined where not needed
std::array<Tensor, 3> group_norm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                                          const Tensor& mean, const Tensor& rstd, int64_t groups,
                                          std::array<bool, 3> need);
// y: the ReLU's output; dx = y > 0 ? dy : 0
Tensor relu_backward(const Tensor& y, const Tensor& dy);
// y: softmax's output; dx = y * (dy - sum over dim of dy * y)
Tensor softmax_backward(const Tensor& y, const Tensor& dy, int64_t dim = -1);
// Backward of upsample_*: dy [N,C,OH,OW] -> dx [N,C,input_h,input_w], the forward's arguments.
Tensor upsample_backward(const Tensor& dy, std::array<int64_t, 2> input_hw, bool bilinear,
                         bool align_corners, double scale_factor);
// Backward of concat: the slabs of dy along `dim` with the given sizes; parts not needed are
// undefined.
std::vector<Tensor> concat_backward(const Tensor& dy, const std::vector<int64_t>& sizes,
                                    int64_t dim, const std::vector<bool>& need);
Tensor avg_pool2d_backward(const Tensor& dy, const Shape& input, std::array<int64_t, 2> kernel,
                           std::array<int64_t, 2> stride, std::array<int64_t, 2> padding,
                           bool count_include_pad);
Tensor global_avg_pool_backward(const Tensor& dy, const Shape& input);
// -> {dx, dw, dbias}, undefined where not needed
std::array<Tensor, 3> linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy,
                                      std::array<bool, 3> need);
// dloss: the loss's gradient, a scalar f32 on the prediction's device
Tensor heatmap_loss_backward(const Tensor& pred, const Tensor& target, const Tensor& weight,
                             const Tensor& dloss);
Tensor cross_entropy_backward(const Tensor& logits, const Tensor& labels, const Tensor& dloss,
                              int64_t ignore_index, float label_smoothing = 0.f,
                              const Tensor& class_weight = Tensor());
// threshold: the forward's selection threshold (one f32 on the logits' device)
Tensor ohem_cross_entropy_backward(const Tensor& logits, const Tensor& labels,
                                   const Tensor& class_weight, const Tensor& threshold,
                                   const Tensor& dloss, int64_t ignore_index);
// y: exp's output; dx = dy * y
Tensor exp_backward(const Tensor& y, const Tensor& dy);
// The scale's gradient: sum(dy * x) as f32 of scale_shape (one element)
Tensor scale_backward(const Tensor& x, const Tensor& dy, const Shape& scale_shape);
// dloss: the loss's gradient, a scalar f32 on the prediction's device; the forward's arguments
Tensor sigmoid_focal_loss_backward(const Tensor& logits, const Tensor& labels, const Tensor& dloss,
                                   float gamma, float alpha);
Tensor iou_loss_backward(const Tensor& pred, const Tensor& target, const Tensor& weight,
                         const Tensor& dloss);
Tensor masked_bce_with_logits_backward(const Tensor& logits, const Tensor& target,
                                       const Tensor& mask, const Tensor& dloss);
// A tensor of `shape` filled with the value of the one-element tensor g (sum_all's backward).
Tensor expand_scalar(const Tensor& g, const Shape& shape, DType dtype);

// ---- inference ----
// Batch norm (inference statistics) folded into the convolution before it:
// s = gamma / sqrt(running_var + eps); w' = w * s (per output channel), b' = (b - mean) * s + beta
// (b = 0 when undefined). -> {w' like w, b' f32 [K]}
std::array<Tensor, 2> fold_batch_norm(const Tensor& w, const Tensor& b, const Tensor& gamma,
                                      const Tensor& beta, const Tensor& running_mean,
                                      const Tensor& running_var, float eps);

}  // namespace hr::ops
