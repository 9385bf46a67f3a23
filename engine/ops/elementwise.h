// Element-wise ops (engine/ops/elementwise.cpp), declared for the graph passes that fuse them
// into batch norm.
#pragma once
#include "engine/op.h"

namespace hr::ops {

struct ReluOp final : OpDef {
  const char* name() const override { return "relu"; }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override;
  void run_cpu(const KernelArgs& a) const override;
  void run_cuda(const KernelArgs& a) const override;
  std::vector<Tensor> backward(const GradArgs& a) const override;
  bool saves_input(size_t) const override { return false; }
  bool saves_output(size_t) const override { return true; }  // the mask comes from y
  void to_onnx(OnnxEmitter& e, const OnnxNode& n) const override;
};

// a + b, same shape, dtype and device
struct AddOp final : OpDef {
  const char* name() const override { return "add"; }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override;
  void run_cpu(const KernelArgs& a) const override;
  void run_cuda(const KernelArgs& a) const override;
  std::vector<Tensor> backward(const GradArgs& a) const override;
  bool saves_input(size_t) const override { return false; }
  void to_onnx(OnnxEmitter& e, const OnnxNode& n) const override;
};

}  // namespace hr::ops
