// reshape: the elements in logical row-major order under a new shape (a copy), differentiable.
#include <cstring>

#include "engine/onnx_emitter.h"
#include "engine/ops.h"
#include "engine/ops/op_util.h"

namespace hr::ops {

using namespace detail;

namespace {

struct ReshapeOp final : OpDef {
  Shape shape;
  explicit ReshapeOp(Shape s) : shape(std::move(s)) {}
  const char* name() const override { return "reshape"; }
  std::string attributes() const override { return shape_str(shape); }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_defined(in[0], name(), "input");
    for (int64_t d : shape) HR_CHECK(d >= 0, "reshape: bad shape ", shape_str(shape));
    HR_CHECK(shape_numel(shape) == in[0].numel(), "reshape: cannot reshape ",
             shape_str(in[0].shape), " to ", shape_str(shape));
    return {Meta::make(shape, in[0].dtype, in[0].device)};
  }
  // Both dense contiguous on the CPU: the same bytes.
  void run_cpu(const KernelArgs& a) const override {
    std::memcpy(a.out[0].raw_data(), a.in[0].raw_data(), a.in[0].nbytes());
  }
  // On CUDA 4-D tensors are channels-last: through the layout conversions.
  void run_cuda(const KernelArgs& a) const override {
    const Tensor &x = a.in[0], &y = a.out[0];
    const size_t bytes = x.nbytes();
    if (x.dim() != 4 && y.dim() != 4) {
      cuda::memcpy_d2d(y.raw_data(), x.raw_data(), bytes, a.stream);
      return;
    }
    const cuda::DT t = dt(x, name());
    Tensor nchw = x.dim() == 4 ? Tensor() : x;  // the elements in logical order
    if (x.dim() == 4) {
      nchw = y.dim() == 4 ? Tensor::empty(x.shape(), x.dtype(), x.device()) : y;
      cuda::nhwc_to_nchw(t, x.size(0), x.size(1), x.size(2) * x.size(3), x.raw_data(),
                         nchw.raw_data(), a.stream);
      if (y.dim() != 4) return;
    }
    cuda::nchw_to_nhwc(t, y.size(0), y.size(1), y.size(2) * y.size(3), nchw.raw_data(),
                       y.raw_data(), a.stream);
  }
  std::vector<Tensor> backward(const GradArgs& a) const override {
    return {reshape(a.grad_out[0], a.in_meta[0].shape)};
  }
  bool saves_input(size_t) const override { return false; }
  // Reshape to the recorded shape; with a dynamic batch its dim 0 is 0 (Reshape copies the
  // input's), which needs the batch to stay dim 0 with the other dimensions' product unchanged.
  void to_onnx(OnnxEmitter& e, const OnnxNode& n) const override {
    const Shape& in = n.in_meta[0].shape;
    std::vector<int64_t> s(shape.begin(), shape.end());
    if (n.batched) {
      HR_CHECK(!s.empty() && !in.empty() && s[0] == in[0], name(), ": ", shape_str(in), " -> ",
               shape_str(shape),
               " does not keep the batch as dimension 0: no ONNX export with "
               "a dynamic batch");
      s[0] = 0;
    }
    e.node("Reshape", {n.in[0], e.ints(s, "shape")}, {n.out[0]});
  }
};

}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape) {
  return hr::apply(std::make_shared<ReshapeOp>(shape), {x})[0];
}

}  // namespace hr::ops
