// Element-wise ops: relu (and its backward), add, scaling by a constant or by a learnable
// one-element tensor (and that scale's gradient), exp, the sum of all elements.
#include "engine/ops/elementwise.h"

#include "engine/onnx_emitter.h"
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/cpu_kernels.h"

namespace hr::ops {

using namespace detail;

namespace {

// x [any], floating -> y like x
std::vector<Meta> like_float_input(const Meta& x, const char* op) {
  check_defined(x, op, "input");
  check_float(x, op, "input");
  return {same_as(x)};
}

// y [any], dy like y -> dx: the backward of an element-wise function computed from its output
// (relu_backward: dy where y > 0, else 0; exp_backward: dy * y)
struct OutputBwdOp final : OpDef {
  using CpuKernel = void (*)(int64_t n, const float* y, const float* dy, float* dx);
  using CudaKernel = void (*)(cuda::DT dt, int64_t n, const void* y, const void* dy, void* dx,
                              cuda::Stream st);
  const char* op;
  CpuKernel cpu_kernel;
  CudaKernel cuda_kernel;
  OutputBwdOp(const char* n, CpuKernel cpu, CudaKernel cuda)
      : op(n), cpu_kernel(cpu), cuda_kernel(cuda) {}
  const char* name() const override { return op; }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_defined(in[0], name(), "output");
    check_defined(in[1], name(), "dy");
    check_same(in[0], in[1], name());
    check_float(in[0], name(), "output");
    return {same_as(in[0])};
  }
  void run_cpu(const KernelArgs& a) const override {
    cpu_kernel(a.in[0].numel(), fptr(a.in[0]), fptr(a.in[1]), fptr(a.out[0]));
  }
  void run_cuda(const KernelArgs& a) const override {
    cuda_kernel(dt(a.in[0], name()), a.in[0].numel(), a.in[0].raw_data(), a.in[1].raw_data(),
                a.out[0].raw_data(), a.stream);
  }
};

// alpha * x
struct ScaleOp final : OpDef {
  float alpha;
  explicit ScaleOp(float al) : alpha(al) {}
  const char* name() const override { return "mul"; }
  std::string attributes() const override { return str_cat("alpha ", alpha); }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    return like_float_input(in[0], name());
  }
  void run_cpu(const KernelArgs& a) const override {
    cpu::scale(a.in[0].numel(), alpha, fptr(a.in[0]), fptr(a.out[0]));
  }
  void run_cuda(const KernelArgs& a) const override {
    cuda::scale(dt(a.in[0], name()), a.in[0].numel(), alpha, a.in[0].raw_data(),
                a.out[0].raw_data(), a.stream);
  }
  std::vector<Tensor> backward(const GradArgs& a) const override {
    return {mul(a.grad_out[0], alpha)};
  }
  bool saves_input(size_t) const override { return false; }
  void to_onnx(OnnxEmitter& e, const OnnxNode& n) const override {
    const std::string a = e.constant(Tensor::from_vector({alpha}, {}, n.in_meta[0].dtype), "alpha");
    e.node("Mul", {n.in[0], a}, {n.out[0]});
  }
};

// exp(x); the backward reads the output
struct ExpOp final : OpDef {
  const char* name() const override { return "exp"; }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    return like_float_input(in[0], name());
  }
  void run_cpu(const KernelArgs& a) const override {
    cpu::exp_forward(a.in[0].numel(), fptr(a.in[0]), fptr(a.out[0]));
  }
  void run_cuda(const KernelArgs& a) const override {
    cuda::exp_forward(dt(a.in[0], name()), a.in[0].numel(), a.in[0].raw_data(),
                      a.out[0].raw_data(), a.stream);
  }
  std::vector<Tensor> backward(const GradArgs& a) const override {
    return {exp_backward(a.out[0], a.grad_out[0])};
  }
  bool saves_input(size_t) const override { return false; }
  bool saves_output(size_t) const override { return true; }
  void to_onnx(OnnxEmitter& e, const OnnxNode& n) const override {
    e.node("Exp", {n.in[0]}, {n.out[0]});
  }
};

// A one-element f32 tensor on x's device (the learnable scale).
void check_scale_value(const Meta& s, const Meta& x, const char* op) {
  check_defined(s, op, "scale");
  HR_CHECK(s.numel() == 1 && s.dtype == DType::f32, op, ": the scale must be one f32 value, got ",
           s.str());
  check_same_device(x, s, op);
}

// x [any], s one f32 -> s * x
struct ScaleByOp final : OpDef {
  const char* name() const override { return "scale"; }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    std::vector<Meta> out = like_float_input(in[0], name());
    check_scale_value(in[1], in[0], name());
    return out;
  }
  void run_cpu(const KernelArgs& a) const override {
    cpu::scale(a.in[0].numel(), *fptr(a.in[1]), fptr(a.in[0]), fptr(a.out[0]));
  }
  void run_cuda(const KernelArgs& a) const override {
    cuda::scale_by(dt(a.in[0], name()), a.in[0].numel(), a.in[0].raw_data(), fptr(a.in[1]),
                   a.out[0].raw_data(), a.stream);
  }
  std::vector<Tensor> backward(const GradArgs& a) const override {
    return {a.need[0] ? scale(a.grad_out[0], a.in[1]) : Tensor(),
            a.need[1] ? scale_backward(a.in[0], a.grad_out[0], a.in_meta[1].shape) : Tensor()};
  }
  // the one-element scale broadcasts (an f32 scale of an f16/bf16 x is cast first)
  void to_onnx(OnnxEmitter& e, const OnnxNode& n) const override {
    std::string s = n.in[1];
    if (n.in_meta[0].dtype != n.in_meta[1].dtype)
      s = e.op("Cast", {s}, {OnnxAttr::integer("to", onnx_elem_type(n.in_meta[0].dtype))});
    e.node("Mul", {n.in[0], s}, {n.out[0]});
  }
};

// x, dy [any] -> ds = sum(dy * x), f32 of the scale's shape
struct ScaleByBwdOp final : OpDef {
  Shape shape;
  explicit ScaleByBwdOp(Shape s) : shape(std::move(s)) {}
  const char* name() const override { return "scale_backward"; }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_defined(in[0], name(), "input");
    check_defined(in[1], name(), "dy");
    check_same(in[0], in[1], name());
    check_float(in[0], name(), "input");
    HR_CHECK(shape_numel(shape) == 1, name(), ": the scale's shape ", shape_str(shape),
             " is not one element");
    return {f32_on(shape, in[0])};
  }
  void run_cpu(const KernelArgs& a) const override {
    *fptr(a.out[0]) = cpu::dot(a.in[0].numel(), fptr(a.in[0]), fptr(a.in[1]));
  }
  void run_cuda(const KernelArgs& a) const override {
    cuda::dot(dt(a.in[0], name()), a.in[0].numel(), a.in[0].raw_data(), a.in[1].raw_data(),
              fptr(a.out[0]), a.stream);
  }
};

// the sum of every element as a scalar f32, accumulated in double (CPU only)
struct SumAllOp final : OpDef {
  const char* name() const override { return "sum_all"; }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_defined(in[0], name(), "input");
    HR_CHECK(in[0].dtype == DType::f32, name(), ": expected f32, got ", dtype_name(in[0].dtype));
    return {f32_on({}, in[0])};
  }
  void run_cpu(const KernelArgs& a) const override {
    const float* x = fptr(a.in[0]);
    double s = 0;
    for (int64_t i = 0, n = a.in[0].numel(); i < n; ++i) s += x[i];
    *fptr(a.out[0]) = static_cast<float>(s);
  }
  void run_cuda(const KernelArgs&) const override {
    throw Error("sum_all has no CUDA kernel (a CPU test helper)");
  }
  std::vector<Tensor> backward(const GradArgs& a) const override {
    return {expand_scalar(a.grad_out[0], a.in_meta[0].shape, a.in_meta[0].dtype)};
  }
  bool saves_input(size_t) const override { return false; }
};

// a tensor of `shape` filled with g's one value (CPU only)
struct ExpandScalarOp final : OpDef {
  Shape shape;
  DType dtype;
  ExpandScalarOp(Shape s, DType d) : shape(std::move(s)), dtype(d) {}
  const char* name() const override { return "expand_scalar"; }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_defined(in[0], name(), "input");
    HR_CHECK(in[0].numel() == 1 && in[0].dtype == DType::f32, name(),
             ": expects one f32 value, got ", in[0].str());
    HR_CHECK(dtype == DType::f32, name(), ": f32 only");
    return {Meta::make(shape, dtype, in[0].device)};
  }
  void run_cpu(const KernelArgs& a) const override {
    cpu::fill(a.out[0].numel(), *fptr(a.in[0]), fptr(a.out[0]));
  }
  void run_cuda(const KernelArgs&) const override {
    throw Error("expand_scalar has no CUDA kernel (sum_all's backward, a CPU test helper)");
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
std::vector<Meta> ReluOp::infer(const std::vector<Meta>& in) const {
  return like_float_input(in[0], "relu");
}
void ReluOp::run_cpu(const KernelArgs& a) const {
  cpu::relu_forward(a.in[0].numel(), fptr(a.in[0]), fptr(a.out[0]));
}
void ReluOp::run_cuda(const KernelArgs& a) const {
  cuda::relu_forward(dt(a.in[0], "relu"), a.in[0].numel(), a.in[0].raw_data(), a.out[0].raw_data(),
                     a.stream);
}
std::vector<Tensor> ReluOp::backward(const GradArgs& a) const {
  return {relu_backward(a.out[0], a.grad_out[0])};
}
void ReluOp::to_onnx(OnnxEmitter& e, const OnnxNode& n) const {
  e.node("Relu", {n.in[0]}, {n.out[0]});
}

std::vector<Meta> AddOp::infer(const std::vector<Meta>& in) const {
  check_defined(in[0], "add", "first operand");
  check_defined(in[1], "add", "second operand");
  check_same(in[0], in[1], "add");
  check_float(in[0], "add", "operand");
  return {same_as(in[0])};
}
void AddOp::run_cpu(const KernelArgs& a) const {
  cpu::add(a.in[0].numel(), fptr(a.in[0]), fptr(a.in[1]), fptr(a.out[0]));
}
void AddOp::run_cuda(const KernelArgs& a) const {
  cuda::add(dt(a.in[0], "add"), a.in[0].numel(), a.in[0].raw_data(), a.in[1].raw_data(),
            a.out[0].raw_data(), a.stream);
}
std::vector<Tensor> AddOp::backward(const GradArgs& a) const {
  return {a.grad_out[0], a.grad_out[0]};
}
void AddOp::to_onnx(OnnxEmitter& e, const OnnxNode& n) const {
  e.node("Add", {n.in[0], n.in[1]}, {n.out[0]});
}

// ---------------------------------------------------------------------------------------------
Tensor relu(const Tensor& x) { return hr::apply(std::make_shared<ReluOp>(), {x})[0]; }
Tensor relu_backward(const Tensor& y, const Tensor& dy) {
  return hr::apply(
      std::make_shared<OutputBwdOp>("relu_backward", cpu::relu_backward, cuda::relu_backward),
      {y, dy})[0];
}
Tensor add(const Tensor& a, const Tensor& b) { return hr::apply(std::make_shared<AddOp>(), {a, b})[0]; }
Tensor mul(const Tensor& x, float alpha) { return hr::apply(std::make_shared<ScaleOp>(alpha), {x})[0]; }
Tensor exp(const Tensor& x) { return hr::apply(std::make_shared<ExpOp>(), {x})[0]; }
Tensor exp_backward(const Tensor& y, const Tensor& dy) {
  return hr::apply(
      std::make_shared<OutputBwdOp>("exp_backward", cpu::exp_backward, cuda::exp_backward),
      {y, dy})[0];
}
Tensor scale(const Tensor& x, const Tensor& s) {
  return hr::apply(std::make_shared<ScaleByOp>(), {x, s})[0];
}
Tensor scale_backward(const Tensor& x, const Tensor& dy, const Shape& scale_shape) {
  return hr::apply(std::make_shared<ScaleByBwdOp>(scale_shape), {x, dy})[0];
}
Tensor sum_all(const Tensor& x) { return hr::apply(std::make_shared<SumAllOp>(), {x})[0]; }
Tensor expand_scalar(const Tensor& g, const Shape& shape, DType dtype) {
  return hr::apply(std::make_shared<ExpandScalarOp>(shape, dtype), {g})[0];
}

}  // namespace hr::ops
