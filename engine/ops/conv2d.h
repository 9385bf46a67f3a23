// The 2-D convolution op (engine/ops/conv2d.cpp), declared for the graph passes that rewrite it
// (batch-norm folding).
#pragma once
#include <array>

#include "engine/op.h"

namespace hr::ops {

// x [N,C,H,W], w [K,C,R,S], bias [K] f32 or absent -> y [N,K,P,Q]. Inference graphs on the CPU
// may give it an epilogue (graph pass fold_batch_norm: a batch norm fused with a residual add
// and/or ReLU folded into it): an optional fourth input, the residual [N,K,P,Q], and `relu`:
// y = relu(conv(x, w) + bias + residual), applied to each output tile while it is in cache. The
// epilogue has no backward (it is made for inference only). CPU inference graphs may also give
// it a fifth input (graph pass prepack_conv_weights): w prepacked by Conv2dPrepackOp for this
// input shape (f32 [cpu::conv2d_prepacked_size]); the kernel then reads that in place of w.
struct Conv2dOp final : OpDef {
  std::array<int64_t, 2> stride{1, 1}, padding{0, 0};
  bool relu = false;
  Conv2dOp(std::array<int64_t, 2> s, std::array<int64_t, 2> p, bool r = false)
      : stride(s), padding(p), relu(r) {}
  const char* name() const override { return "conv2d"; }
  std::string attributes() const override;
  std::vector<Meta> infer(const std::vector<Meta>& in) const override;
  void run_cpu(const KernelArgs& a) const override;
  void run_cuda(const KernelArgs& a) const override;
  std::vector<Tensor> backward(const GradArgs& a) const override;
  bool saves_input(size_t i) const override { return i < 2; }
  double macs(const std::vector<Meta>& in) const override;
  void to_onnx(OnnxEmitter& e, const OnnxNode& n) const override;
};

// w [K,C,R,S] f32 (CPU) -> w prepacked for the convolution of an `input`-shaped tensor
// (cpu::conv2d_prepack_weights; f32 [cpu::conv2d_prepacked_size]). No backward: for weights
// frozen in an inference graph, where it runs in the prologue.
struct Conv2dPrepackOp final : OpDef {
  Shape input;
  std::array<int64_t, 2> stride, padding;
  Conv2dPrepackOp(Shape in, std::array<int64_t, 2> s, std::array<int64_t, 2> p)
      : input(std::move(in)), stride(s), padding(p) {}
  const char* name() const override { return "conv2d_prepack"; }
  std::string attributes() const override;
  std::vector<Meta> infer(const std::vector<Meta>& in) const override;
  void run_cpu(const KernelArgs& a) const override;
  void run_cuda(const KernelArgs& a) const override;
};

// The floats of w prepacked for a convolution of `input` (kern::ConvShape of it and w), 0 where
// the CPU kernels have no prepacked form for it.
int64_t conv2d_prepacked_size(const Shape& input, const Shape& w, std::array<int64_t, 2> stride,
                              std::array<int64_t, 2> padding);
Tensor conv2d_prepack(const Tensor& w, const Shape& input, std::array<int64_t, 2> stride,
                      std::array<int64_t, 2> padding);

}  // namespace hr::ops
