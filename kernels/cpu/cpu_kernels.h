// CPU reference kernels (fp32). Layout: every 4-D activation is contiguous NCHW, conv weights
// are contiguous [K, C, R, S] (PyTorch OIHW). Every kernel OVERWRITES its outputs (the engine
// accumulates gradients itself). Kernels are multithreaded with OpenMP; matrix work uses Eigen.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "kernels/shapes.h"

namespace hr::cpu {

// ---- instruction set of the GEMM-bound kernels (convolution, linear) ----
// They are built for the build's baseline (avx2: x86-64-v3, AVX2 + FMA) and, on x86-64, once
// more for avx512 (x86-64-v4: AVX-512F/BW/CD/DQ/VL); the best the processor runs is used, unless
// HR_CPU_ISA=avx2|avx512 (read at the first call) or set_cpu_isa() chooses (an unsupported choice
// is an error). Every build gives the same results up to float rounding.
const char* cpu_isa();               // the one in use
std::string cpu_isas_supported();    // "avx2, avx512" or "avx2"
void set_cpu_isa(const std::string& name);

// ---- precision of the convolutions' products ----
// fp32 (the default), or bf16: tensors stay fp32, the convolutions' GEMMs and Winograd products
// round their operands to bf16 (nearest even) and sum in fp32 (AVX-512 BF16: twice the fp32
// multiply-adds per instruction; oneDNN's fpmath mode bf16, PyTorch's
// torch.backends.mkldnn.matmul.fp32_precision "bf16"). The direct kernel (1x1 and strided
// convolutions' forward passes) stays fp32. bf16 needs the avx512 kernels on a processor with
// AVX512_BF16 (an error otherwise). HR_CPU_PRECISION=fp32|bf16 (read at the first call) or
// set_cpu_precision() chooses; ENGINE.PRECISION bf16 on the CPU sets it.
const char* cpu_precision();          // "fp32" or "bf16"
bool cpu_bf16_supported();            // whether set_cpu_precision("bf16") would succeed
void set_cpu_precision(const std::string& name);

// ---- convolution ----
// x [N,C,H,W], w [K,C,R,S], bias [K] or nullptr, y [N,K,P,Q]; the epilogue (residual add,
// ReLU) applied to each output tile before it leaves the cache.
void conv2d_forward(const kern::ConvShape& s, const float* x, const float* w, const float* bias,
                    float* y, const kern::ConvEpilogue& ep = {});
// dy [N,K,P,Q], w [K,C,R,S] -> dx [N,C,H,W]
void conv2d_backward_data(const kern::ConvShape& s, const float* dy, const float* w, float* dx);
// x [N,C,H,W], dy [N,K,P,Q] -> dw [K,C,R,S], dbias [K] (skipped when nullptr)
void conv2d_backward_weight(const kern::ConvShape& s, const float* x, const float* dy, float* dw,
                            float* dbias);
// Prepacked weights, for weights that stay fixed over many calls (inference graphs: the graph
// pass prepack_conv_weights): the floats of w [K,C,R,S] in the form of the kernel the forward
// pass runs on s with them (Winograd: the transformed weights, so that no call transforms them),
// or 0 where no such kernel applies (this shape, or a build or processor without one);
// conv2d_prepack_weights fills them; conv2d_forward_prepacked is conv2d_forward on them.
int64_t conv2d_prepacked_size(const kern::ConvShape& s);
void conv2d_prepack_weights(const kern::ConvShape& s, const float* w, float* packed);
void conv2d_forward_prepacked(const kern::ConvShape& s, const float* x, const float* packed,
                              const float* bias, float* y, const kern::ConvEpilogue& ep = {});

// ---- batch norm over [N, C, HW] (channel c at x[(n*C + c)*HW + i]) ----
// Training: batch statistics; save_mean / save_invstd [C] receive mean and 1/sqrt(var_biased+eps).
// running_mean / running_var [C] (may be nullptr) are updated in place with momentum, the
// running variance using the unbiased batch variance (as PyTorch).
void batchnorm_train_forward(int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma,
                             const float* beta, float eps, float momentum, float* running_mean,
                             float* running_var, float* y, float* save_mean, float* save_invstd);
// Inference: y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta
void batchnorm_infer_forward(int64_t N, int64_t C, int64_t HW, const float* x, const float* gamma,
                             const float* beta, const float* running_mean,
                             const float* running_var, float eps, float* y);
// Training-mode backward. dx, dgamma, dbeta may each be nullptr (skipped).
void batchnorm_train_backward(int64_t N, int64_t C, int64_t HW, const float* x, const float* dy,
                              const float* gamma, const float* save_mean, const float* save_invstd,
                              float* dx, float* dgamma, float* dbeta);
// Inference-mode backward (statistics are constants). dx, dgamma, dbeta may be nullptr.
void batchnorm_infer_backward(int64_t N, int64_t C, int64_t HW, const float* x, const float* dy,
                              const float* gamma, const float* running_mean,
                              const float* running_var, float eps, float* dx, float* dgamma,
                              float* dbeta);

// ---- fused batch norm -> (+ residual) -> ReLU over [N, C, HW] (HRNet's hot pattern) ----
// The same semantics as kernels/cuda/fused.h, and bit-identical to the unfused sequence
// (batchnorm_*_forward; add(y, residual); relu_forward, and relu_backward; batchnorm_*_backward)
// for any input and thread count; one apply pass forward, no materialised g backward.
// y = act(BN_train(x) + residual), act = ReLU when relu, else identity; residual may be nullptr.
// Statistics, running stats and save_mean / save_invstd exactly as batchnorm_train_forward.
void batchnorm_act_train_forward(int64_t N, int64_t C, int64_t HW, const float* x,
                                 const float* gamma, const float* beta, float eps, float momentum,
                                 float* running_mean, float* running_var, const float* residual,
                                 bool relu, float* y, float* save_mean, float* save_invstd);
// Backward of batchnorm_act_train_forward. The ReLU mask comes from the forward output y (may be
// nullptr when !relu): g = relu ? relu_backward(y, dy) : dy (y <= 0 masks, as relu_backward);
// dresidual = g; dx, dgamma, dbeta are batchnorm_train_backward of g. Every output may be
// nullptr (skipped).
void batchnorm_act_train_backward(int64_t N, int64_t C, int64_t HW, const float* x, const float* y,
                                  const float* dy, const float* gamma, const float* save_mean,
                                  const float* save_invstd, bool relu, float* dx, float* dresidual,
                                  float* dgamma, float* dbeta);
// Synchronised batch norm (SyncBN, data-parallel jobs): batchnorm_act_train_forward and
// _backward with every per-channel sum (and the count of values) passed through all_reduce
// (summed in place over the ranks) before use: the statistics of all ranks' batches together.
// The backward's dgamma / dbeta stay this rank's own sums; dx uses the reduced ones. With an
// all_reduce that changes nothing, the unsynchronised kernels' bits.
using SumReducer = std::function<void(double* sums, int64_t n)>;
void batchnorm_act_train_forward_sync(int64_t N, int64_t C, int64_t HW, const float* x,
                                      const float* gamma, const float* beta, float eps,
                                      float momentum, float* running_mean, float* running_var,
                                      const float* residual, bool relu, float* y,
                                      float* save_mean, float* save_invstd,
                                      const SumReducer& all_reduce);
void batchnorm_act_train_backward_sync(int64_t N, int64_t C, int64_t HW, const float* x,
                                       const float* y, const float* dy, const float* gamma,
                                       const float* save_mean, const float* save_invstd, bool relu,
                                       float* dx, float* dresidual, float* dgamma, float* dbeta,
                                       const SumReducer& all_reduce);
// y = act(BN_infer(x) + residual) with running statistics; residual may be nullptr.
void batchnorm_act_infer_forward(int64_t N, int64_t C, int64_t HW, const float* x,
                                 const float* gamma, const float* beta, const float* running_mean,
                                 const float* running_var, float eps, const float* residual,
                                 bool relu, float* y);
// Backward of batchnorm_act_infer_forward: g as in batchnorm_act_train_backward, dresidual = g,
// dx, dgamma, dbeta are batchnorm_infer_backward of g. Every output may be nullptr.
void batchnorm_act_infer_backward(int64_t N, int64_t C, int64_t HW, const float* x, const float* y,
                                  const float* dy, const float* gamma, const float* running_mean,
                                  const float* running_var, float eps, bool relu, float* dx,
                                  float* dresidual, float* dgamma, float* dbeta);

// ---- group norm over [N, C, HW] in G groups of C/G channels (torch group_norm) ----
// mean / rstd [N, G] receive each group's mean and 1/sqrt(var_biased + eps).
void group_norm_forward(int64_t N, int64_t C, int64_t HW, int64_t G, const float* x,
                        const float* gamma, const float* beta, float eps, float* y, float* mean,
                        float* rstd);
// dx, dgamma, dbeta may each be nullptr (skipped).
void group_norm_backward(int64_t N, int64_t C, int64_t HW, int64_t G, const float* x,
                         const float* dy, const float* gamma, const float* mean, const float* rstd,
                         float* dx, float* dgamma, float* dbeta);

// ---- batch norm folded into the convolution before it (inference) ----
// s[k] = gamma[k] / sqrt(running_var[k] + eps); w_out[k, i] = w[k, i] * s[k] for the `inner`
// values of output channel k; b_out[k] = (b[k] - running_mean[k]) * s[k] + beta[k] (b = 0 when
// nullptr). w [K, inner] (any layout with K outermost), all fp32.
void fold_batch_norm(int64_t K, int64_t inner, const float* w, const float* b, const float* gamma,
                     const float* beta, const float* running_mean, const float* running_var,
                     float eps, float* w_out, float* b_out);

// ---- element-wise ----
void relu_forward(int64_t n, const float* x, float* y);
// dx = y > 0 ? dy : 0   (y is the ReLU output)
void relu_backward(int64_t n, const float* y, const float* dy, float* dx);
void add(int64_t n, const float* a, const float* b, float* y);
// y = alpha * x + y
void axpy(int64_t n, float alpha, const float* x, float* y);
void scale(int64_t n, float alpha, const float* x, float* y);
void fill(int64_t n, float value, float* y);

// ---- resampling (PyTorch nn.functional.interpolate semantics) ----
// nearest: src = min(floor(dst * scale), in - 1). With `add` ([N,C,OH,OW]): y = add + the
// upsampled x in the same pass (the fuse layers' sums: graph pass fuse_upsample_add).
void upsample_nearest_forward(const kern::ResampleShape& s, const float* x, float* y,
                              const float* add = nullptr);
void upsample_nearest_backward(const kern::ResampleShape& s, const float* dy, float* dx);
void upsample_bilinear_forward(const kern::ResampleShape& s, const float* x, float* y);
void upsample_bilinear_backward(const kern::ResampleShape& s, const float* dy, float* dx);

// ---- pooling ----
void avgpool2d_forward(const kern::PoolShape& s, const float* x, float* y);
void avgpool2d_backward(const kern::PoolShape& s, const float* dy, float* dx);
// x [N, C, HW] -> y [N, C]
void global_avgpool_forward(int64_t N, int64_t C, int64_t HW, const float* x, float* y);
void global_avgpool_backward(int64_t N, int64_t C, int64_t HW, const float* dy, float* dx);

// ---- matrix ----
// y[M,O] = x[M,I] * w[O,I]^T + bias[O] (bias may be nullptr)  (torch.nn.Linear)
void linear_forward(int64_t M, int64_t I, int64_t O, const float* x, const float* w,
                    const float* bias, float* y);
// dx[M,I] = dy * w ; dw[O,I] = dy^T * x ; dbias[O] = sum_m dy. Any output may be nullptr.
void linear_backward(int64_t M, int64_t I, int64_t O, const float* x, const float* w,
                     const float* dy, float* dx, float* dw, float* dbias);

// ---- losses ----
// HRNet JointsMSELoss (use_target_weight = true):
//   loss = (1/J) * sum_j 0.5 * mean_{n,i} (w[n,j]*pred[n,j,i] - w[n,j]*gt[n,j,i])^2
// pred, gt [N, J, HW]; weight [N, J]. Returns the loss.
float heatmap_loss_forward(int64_t N, int64_t J, int64_t HW, const float* pred, const float* gt,
                           const float* weight);
// dpred = dloss * d(loss)/d(pred)
void heatmap_loss_backward(int64_t N, int64_t J, int64_t HW, const float* pred, const float* gt,
                           const float* weight, float dloss, float* dpred);
// Softmax cross-entropy over channels of logits [N, C, HW] with labels [N, HW] (int64);
// labels equal to ignore_index are skipped; the loss is the mean over the counted pixels
// (0 when none). A label outside [0, C) that is not ignore_index throws hr::Error naming it.
// With label smoothing e (torch's label_smoothing): (1 - e) * -log p_label + e * mean_c -log p_c.
// class_weight [C] (null: unweighted): torch's CrossEntropyLoss(weight=w), reduction 'mean':
// sum_i l_i / sum_i w[y_i], l_i = w[y_i] * -log p_{y_i}, with smoothing
// (1 - e) * w[y_i] * -log p_{y_i} + (e / C) * sum_c w[c] * -log p_c (torch 1.13); 0 when the
// denominator is not positive.
float softmax_ce_forward(int64_t N, int64_t C, int64_t HW, const float* logits,
                         const int64_t* labels, int64_t ignore_index, float smoothing = 0.f,
                         const float* class_weight = nullptr);
void softmax_ce_backward(int64_t N, int64_t C, int64_t HW, const float* logits,
                         const int64_t* labels, int64_t ignore_index, float dloss, float* dlogits,
                         float smoothing = 0.f, const float* class_weight = nullptr);
// OHEM cross-entropy (HRNet-Semantic-Segmentation OhemCrossEntropy._ohem_forward): p_i the
// softmax probability of pixel i's label (counted pixels only); threshold = max(k-th smallest p,
// thresh), k = min(max(min_kept, 1), count - 1); the loss is the plain mean of
// w[y_i] * -log p_i over the pixels with p_i < threshold (0 when none; threshold = thresh when
// no pixel is counted). class_weight [C] or null. Labels as softmax_ce_forward (throws).
float ohem_ce_forward(int64_t N, int64_t C, int64_t HW, const float* logits,
                      const int64_t* labels, int64_t ignore_index, float thresh, int64_t min_kept,
                      const float* class_weight, float* threshold);
// The gradient of that mean with the selection (p < threshold, the forward's threshold) constant.
void ohem_ce_backward(int64_t N, int64_t C, int64_t HW, const float* logits,
                      const int64_t* labels, int64_t ignore_index, const float* class_weight,
                      float threshold, float dloss, float* dlogits);

// ---- detection (FCOS head; kernels/cpu/det_loss.cpp, formulas in kernels/det_loss_math.h) ----
void exp_forward(int64_t n, const float* x, float* y);
// dx = dy * y   (y is exp's output)
void exp_backward(int64_t n, const float* y, const float* dy, float* dx);
// sum_i a[i] * b[i], in double over fixed blocks (the same bits for any thread count)
float dot(int64_t n, const float* a, const float* b);
// maskrcnn-benchmark's sigmoid focal loss (their CUDA kernel's stable form) summed over logits
// [N, C, P] and divided by num_pos + N (FCOS); labels [N, P]: < 0 ignored, 0 background, k in
// 1..C positive for class k - 1; num_pos = the labels > 0. A label above C throws hr::Error.
float sigmoid_focal_loss_forward(int64_t N, int64_t C, int64_t P, const float* logits,
                                 const int64_t* labels, float gamma, float alpha);
void sigmoid_focal_loss_backward(int64_t N, int64_t C, int64_t P, const float* logits,
                                 const int64_t* labels, float gamma, float alpha, float dloss,
                                 float* dlogits);
// IOULoss (-log((I + 1) / (U + 1))) of pred, target [N, 4, P] (left, top, right, bottom), the
// mean weighted by weight [N, P] over the locations with weight > 0 (nothing else is read); 0
// when there are none. dpred is 0 at the other locations.
float iou_loss_forward(int64_t N, int64_t P, const float* pred, const float* target,
                       const float* weight);
void iou_loss_backward(int64_t N, int64_t P, const float* pred, const float* target,
                       const float* weight, float dloss, float* dpred);
// BCE with logits (stable form) weighted by mask over the elements with mask > 0, divided by the
// sum of those mask values; 0 when there are none. logits, target, mask [n].
float masked_bce_forward(int64_t n, const float* logits, const float* target, const float* mask);
void masked_bce_backward(int64_t n, const float* logits, const float* target, const float* mask,
                         float dloss, float* dlogits);

// ---- optimizer steps (PyTorch torch.optim semantics) ----
// One parameter tensor's part of a step: its n floats, gradient and state (buf0: SGD's momentum
// buffer, nullptr if momentum == 0, or Adam's exp_avg; buf1: Adam's exp_avg_sq), its learning
// rate and weight decay, and (SGD) whether this is its first step. A step takes every tensor in
// one parallel pass over chunks of all of them: most of a model's tensors are too small to
// split alone, and one at a time they ran on one thread.
struct OptimSpan {
  int64_t n;
  float* p;
  const float* grad;
  float* buf0;
  float* buf1;
  float lr, weight_decay;
  bool first_step;
  // Optional: a 16-bit copy of p, rewritten from the updated values in the same pass (bf16, or
  // IEEE f16 with copy_f16; rounded to nearest even as f32_to_bf16 / f32_to_f16): the weights
  // a mixed-precision graph reads (Optimizer::weight_copy).
  uint16_t* copy = nullptr;
  bool copy_f16 = false;
};
// SGD: g = grad + wd*p; buf = momentum*buf + (1-dampening)*g (buf = g on the first step);
// g = nesterov ? g + momentum*buf : buf; p -= lr*g.
void sgd_step(const OptimSpan* spans, int64_t count, float momentum, float dampening,
              bool nesterov);
// Adam / AdamW (decoupled = true): step is 1-based.
void adam_step(const OptimSpan* spans, int64_t count, float beta1, float beta2, float eps,
               bool decoupled, int64_t step);

// ---- batched matrix product (row-major [batch, rows, cols] operands) ----
// c[i] = op(a[i]) op(b[i]) for i < batch: op(a) [M,K] (a stored [M,K], or [K,M] when trans_a),
// op(b) [K,N] (b stored [K,N], or [N,K] when trans_b), c [batch, M, N].
void bmm(int64_t batch, int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b,
         const float* a, const float* b, float* c);

// ---- softmax over dimension j of x viewed as [outer, L, inner] ----
void softmax_forward(int64_t outer, int64_t L, int64_t inner, const float* x, float* y);
// dx = y * (dy - sum_j dy y), from the forward's output y
void softmax_backward(int64_t outer, int64_t L, int64_t inner, const float* y, const float* dy,
                      float* dx);

// ---- channel dropout (Dropout2d) ----
// state: {seed, step} (i64); mask [N, C] = scale or 0 (dropped with probability p), drawn by
// kern::dropout_keep (kernels/dropout_hash.h) from (seed, step, n, c); then state[1] += 1.
void dropout2d_mask(int64_t* state, int64_t N, int64_t C, float p, float scale, float* mask);
// y[n, c, i] = x[n, c, i] * s[n, c] over [N, C, HW]
void channel_scale(int64_t N, int64_t C, int64_t HW, const float* x, const float* s, float* y);

// ---- dtype conversion (round to nearest even) ----
void f32_to_bf16(int64_t n, const float* x, uint16_t* y);
void bf16_to_f32(int64_t n, const uint16_t* x, float* y);
void f32_to_f16(int64_t n, const float* x, uint16_t* y);
void f16_to_f32(int64_t n, const uint16_t* x, float* y);

// ---- bytes through a table (a dataset's input normalisation, done on the device) ----
// y [N, C, H, W] = lut[c][x [N, H, W, C]]: channel-interleaved bytes (an RGB crop) to planar
// floats, each value the table's entry for its channel and byte. lut [C][256]. size [N][2]
// (optional): sample n's valid rows and columns {h, w}; outside them y = 0 (padding).
void lut_u8_planar(int64_t N, int64_t H, int64_t W, int64_t C, const uint8_t* x,
                   const float* lut, const int64_t* size, float* y);

}  // namespace hr::cpu
