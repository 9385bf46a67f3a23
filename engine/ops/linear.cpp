// linear (torch.nn.Linear) and its backward.
#include "engine/onnx_emitter.h"
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/cpu_kernels.h"

namespace hr::ops {

using namespace detail;

namespace {

void check_xw(const Meta& x, const Meta& w, const char* op) {
  check_defined(x, op, "input");
  check_defined(w, op, "weight");
  HR_CHECK(x.shape.size() == 2 && w.shape.size() == 2 && x.shape[1] == w.shape[1], op, ": input ",
           shape_str(x.shape), " does not fit weight ", shape_str(w.shape),
           " (expected [M,I] and [O,I])");
  HR_CHECK(x.dtype == w.dtype, op, ": input dtype ", dtype_name(x.dtype),
           " differs from weight dtype ", dtype_name(w.dtype));
  check_float(x, op, "input");
  check_same_device(x, w, op);
}

// x [M,I], w [O,I], bias f32 [O] or absent -> y [M,O]
struct LinearOp final : OpDef {
  const char* name() const override { return "linear"; }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_xw(in[0], in[1], name());
    if (in[2].defined) check_param(in[2], in[1].shape[0], in[0], name(), "bias");
    return {Meta::make({in[0].shape[0], in[1].shape[0]}, in[0].dtype, in[0].device)};
  }
  void run_cpu(const KernelArgs& a) const override {
    const Shape &x = a.in[0].shape(), &w = a.in[1].shape();
    cpu::linear_forward(x[0], x[1], w[0], fptr(a.in[0]), fptr(a.in[1]), fptr(a.in[2]),
                        fptr(a.out[0]));
  }
  void run_cuda(const KernelArgs& a) const override {
    const Shape &x = a.in[0].shape(), &w = a.in[1].shape();
    cuda::linear_forward(dt(a.in[0], name()), x[0], x[1], w[0], a.in[0].raw_data(),
                         a.in[1].raw_data(), fptr(a.in[2]), a.out[0].raw_data(), a.stream);
  }
  std::vector<Tensor> backward(const GradArgs& a) const override {
    auto [dx, dw, db] = linear_backward(a.in[0], a.in[1], a.grad_out[0],
                                        {a.need[0], a.need[1], a.need[2]});
    return {dx, dw, db};
  }
  bool saves_input(size_t i) const override { return i < 2; }
  double macs(const std::vector<Meta>& in) const override {
    return static_cast<double>(in[0].shape[0]) * in[1].shape[0] * in[1].shape[1];
  }
  // Gemm: x w^T + bias
  void to_onnx(OnnxEmitter& e, const OnnxNode& n) const override {
    std::vector<std::string> in = {n.in[0], n.in[1]};
    if (!n.in[2].empty()) in.push_back(n.in[2]);
    e.node("Gemm", in, {n.out[0]}, {OnnxAttr::integer("transB", 1)});
  }
};

// x [M,I], w [O,I], dy [M,O] -> dx [M,I], dw [O,I], dbias f32 [O] (those not needed absent)
struct LinearBwdOp final : OpDef {
  std::array<bool, 3> need;
  explicit LinearBwdOp(std::array<bool, 3> n) : need(n) {}
  const char* name() const override { return "linear_backward"; }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    const Meta &x = in[0], &w = in[1], &dy = in[2];
    check_xw(x, w, name());
    check_defined(dy, name(), "dy");
    HR_CHECK(dy.shape == Shape({x.shape[0], w.shape[0]}) && dy.dtype == x.dtype, name(), ": dy ",
             dy.str(), " does not fit input ", x.str(), " and weight ", w.str());
    return {need[0] ? same_as(x) : Meta::none(), need[1] ? same_as(w) : Meta::none(),
            need[2] ? f32_on({w.shape[0]}, x) : Meta::none()};
  }
  void run_cpu(const KernelArgs& a) const override {
    const Shape &x = a.in[0].shape(), &w = a.in[1].shape();
    cpu::linear_backward(x[0], x[1], w[0], fptr(a.in[0]), fptr(a.in[1]), fptr(a.in[2]),
                         fptr(a.out[0]), fptr(a.out[1]), fptr(a.out[2]));
  }
  void run_cuda(const KernelArgs& a) const override {
    const Shape &x = a.in[0].shape(), &w = a.in[1].shape();
    cuda::linear_backward(dt(a.in[0], name()), x[0], x[1], w[0], a.in[0].raw_data(),
                          a.in[1].raw_data(), a.in[2].raw_data(), vptr(a.out[0]), vptr(a.out[1]),
                          fptr(a.out[2]), a.stream);
  }
  double macs(const std::vector<Meta>& in) const override {
    return (need[0] + need[1]) * static_cast<double>(in[0].shape[0]) * in[1].shape[0] *
           in[1].shape[1];
  }
};

}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const auto [xa, wa] = autocast(x, w);
  return hr::apply(std::make_shared<LinearOp>(), {xa, wa, bias})[0];
}

std::array<Tensor, 3> linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy,
                                      std::array<bool, 3> need) {
  auto r = hr::apply(std::make_shared<LinearBwdOp>(need), {x, w, dy});
  return {r[0], r[1], r[2]};
}

}  // namespace hr::ops
