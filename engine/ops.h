// Differentiable ops. Each front-end validates its arguments (errors name the op and the
// shapes), picks the kernel for the device (kernels/cpu or kernels/cuda), and records a backward
// node when grad mode is on and an input requires grad. CPU computes in fp32; CUDA in fp32,
// f16 or bf16 storage with fp32 accumulation (batch-norm parameters and statistics stay fp32).
#pragma once
#include <array>
#include <optional>
#include <vector>

#include "engine/autograd.h"
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

Tensor relu(const Tensor& x);
Tensor add(const Tensor& a, const Tensor& b);  // same shape
Tensor mul(const Tensor& x, float alpha);       // alpha * x
Tensor sum_all(const Tensor& x);                // scalar f32 (CPU tensors only)

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

// Differentiable reshape of a contiguous tensor (a view on the same storage).
Tensor reshape(const Tensor& x, const Shape& shape);
// Differentiable dtype change (mixed precision: fp32 master weights cast to bf16/f16).
Tensor cast(const Tensor& x, DType dtype);

// HRNet JointsMSELoss with target weights: pred, target [N,J,H,W], weight [N,J] or [N,J,1].
Tensor heatmap_loss(const Tensor& pred, const Tensor& target, const Tensor& weight);
// Mean softmax cross-entropy over classes of logits [N,C,H,W] (or [N,C]) against i64 labels
// [N,H,W] (or [N]); pixels equal to ignore_index are not counted.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, int64_t ignore_index = 255);

}  // namespace hr::ops
