// The batch-norm op (engine/ops/batch_norm.cpp), declared for the graph passes that rewrite it:
// fusion with a following residual add and ReLU, folding into the convolution before it.
#pragma once
#include "engine/op.h"

namespace hr::ops {

// act(BN(x) + residual) over [N,C,H,W] or [N,C]. Inputs: x, gamma, beta, running_mean,
// running_var (fp32 [C]; may be absent in training), residual (absent: none). Outputs: y, and in
// training the saved mean and inverse std (fp32 [C]). Training uses batch statistics and updates
// the running statistics in place (momentum, unbiased variance) and num_batches_tracked (a host
// i64 scalar, may be undefined); inference uses the running statistics.
struct BatchNormOp final : OpDef {
  bool training = false, relu = false;
  bool fused = false;  // made by batch_norm_act or the fusion pass: named so in errors
  // training statistics over the ranks of a data-parallel job (SyncBatchNormGuard)
  bool sync = false;
  float momentum = 0.1f, eps = 1e-5f;
  Tensor num_batches_tracked;
  const char* name() const override;
  std::string attributes() const override;
  std::vector<Meta> infer(const std::vector<Meta>& in) const override;
  void run_cpu(const KernelArgs& a) const override;
  void run_cuda(const KernelArgs& a) const override;
  void on_run() const override;
  bool writes_input(size_t i) const override { return training && (i == 3 || i == 4); }
  bool differentiable(size_t i) const override { return i != 3 && i != 4; }
  std::vector<Tensor> backward(const GradArgs& a) const override;
  bool saves_input(size_t i) const override { return i <= 1 || (!training && (i == 3 || i == 4)); }
  bool saves_output(size_t i) const override { return training ? i >= 1 || relu : i == 0 && relu; }
  void to_onnx(OnnxEmitter& e, const OnnxNode& n) const override;
};

}  // namespace hr::ops
