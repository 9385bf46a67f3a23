// Average pooling (PyTorch AvgPool2d, ceil_mode false), global average pooling, and their
// backward.
#include "engine/onnx_emitter.h"
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/cpu_kernels.h"

namespace hr::ops {

using namespace detail;

namespace {

struct Window {
  std::array<int64_t, 2> kernel, stride, padding;
  bool count_include_pad;
  kern::PoolShape shape(const Shape& x) const {
    return kern::PoolShape::make(x[0], x[1], x[2], x[3], kernel[0], kernel[1], stride[0],
                                 stride[1], padding[0], padding[1], count_include_pad);
  }
  std::string str() const {
    return str_cat("kernel ", pair_str(kernel), ", stride ", pair_str(stride), ", padding ",
                   pair_str(padding), count_include_pad ? "" : ", exclude pad");
  }
};

struct AvgPoolOp final : OpDef {
  Window w;
  explicit AvgPoolOp(Window win) : w(win) {}
  const char* name() const override { return "avg_pool2d"; }
  std::string attributes() const override { return w.str(); }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    const Meta& x = in[0];
    check_defined(x, name(), "input");
    HR_CHECK(x.shape.size() == 4, "avg_pool2d: expected a 4-D input, got ", shape_str(x.shape));
    check_float(x, name(), "input");
    HR_CHECK(w.kernel[0] > 0 && w.kernel[1] > 0 && w.stride[0] > 0 && w.stride[1] > 0,
             "avg_pool2d: kernel and stride must be positive");
    HR_CHECK(w.padding[0] >= 0 && w.padding[1] >= 0 && w.padding[0] * 2 <= w.kernel[0] &&
                 w.padding[1] * 2 <= w.kernel[1],
             "avg_pool2d: padding must be at most half the kernel");
    HR_CHECK(x.shape[2] + 2 * w.padding[0] >= w.kernel[0] &&
                 x.shape[3] + 2 * w.padding[1] >= w.kernel[1],
             "avg_pool2d: input ", shape_str(x.shape), " is smaller than the kernel ", w.kernel[0],
             "x", w.kernel[1]);
    const kern::PoolShape s = w.shape(x.shape);
    return {Meta::make({s.N, s.C, s.OH, s.OW}, x.dtype, x.device)};
  }
  void run_cpu(const KernelArgs& a) const override {
    cpu::avgpool2d_forward(w.shape(a.in[0].shape()), fptr(a.in[0]), fptr(a.out[0]));
  }
  void run_cuda(const KernelArgs& a) const override {
    cuda::avgpool2d_forward(dt(a.in[0], name()), w.shape(a.in[0].shape()), a.in[0].raw_data(),
                            a.out[0].raw_data(), a.stream);
  }
  std::vector<Tensor> backward(const GradArgs& a) const override {
    return {avg_pool2d_backward(a.grad_out[0], a.in_meta[0].shape, w.kernel, w.stride, w.padding,
                                w.count_include_pad)};
  }
  bool saves_input(size_t) const override { return false; }
  void to_onnx(OnnxEmitter& e, const OnnxNode& n) const override {
    e.node("AveragePool", {n.in[0]}, {n.out[0]},
           {OnnxAttr::integers("kernel_shape", {w.kernel[0], w.kernel[1]}),
            OnnxAttr::integers("strides", {w.stride[0], w.stride[1]}),
            OnnxAttr::integers("pads", {w.padding[0], w.padding[1], w.padding[0], w.padding[1]}),
            OnnxAttr::integer("count_include_pad", w.count_include_pad ? 1 : 0),
            OnnxAttr::integer("ceil_mode", 0)});
  }
};

struct AvgPoolBwdOp final : OpDef {
  Window w;
  Shape input;
  AvgPoolBwdOp(Window win, Shape in) : w(win), input(std::move(in)) {}
  const char* name() const override { return "avg_pool2d_backward"; }
  std::string attributes() const override { return w.str(); }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    const Meta& dy = in[0];
    check_defined(dy, name(), "dy");
    HR_CHECK(input.size() == 4, name(), ": expected a 4-D input shape, got ", shape_str(input));
    const kern::PoolShape s = w.shape(input);
    HR_CHECK(dy.shape == Shape({s.N, s.C, s.OH, s.OW}), name(), ": dy ", shape_str(dy.shape),
             " does not fit input ", shape_str(input));
    check_float(dy, name(), "dy");
    return {Meta::make(input, dy.dtype, dy.device)};
  }
  void run_cpu(const KernelArgs& a) const override {
    cpu::avgpool2d_backward(w.shape(input), fptr(a.in[0]), fptr(a.out[0]));
  }
  void run_cuda(const KernelArgs& a) const override {
    cuda::avgpool2d_backward(dt(a.in[0], name()), w.shape(input), a.in[0].raw_data(),
                             a.out[0].raw_data(), a.stream);
  }
};

// x [N,C,H,W] -> [N,C]
struct GlobalAvgPoolOp final : OpDef {
  const char* name() const override { return "global_avg_pool"; }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    const Meta& x = in[0];
    check_defined(x, name(), "input");
    HR_CHECK(x.shape.size() == 4, "global_avg_pool: expected a 4-D input, got ",
             shape_str(x.shape));
    check_float(x, name(), "input");
    return {Meta::make({x.shape[0], x.shape[1]}, x.dtype, x.device)};
  }
  void run_cpu(const KernelArgs& a) const override {
    const Shape& x = a.in[0].shape();
    cpu::global_avgpool_forward(x[0], x[1], spatial(x), fptr(a.in[0]), fptr(a.out[0]));
  }
  void run_cuda(const KernelArgs& a) const override {
    const Shape& x = a.in[0].shape();
    cuda::global_avgpool_forward(dt(a.in[0], name()), x[0], x[1], spatial(x), a.in[0].raw_data(),
                                 a.out[0].raw_data(), a.stream);
  }
  std::vector<Tensor> backward(const GradArgs& a) const override {
    return {global_avg_pool_backward(a.grad_out[0], a.in_meta[0].shape)};
  }
  bool saves_input(size_t) const override { return false; }
  // GlobalAveragePool gives [N, C, 1, 1]; Flatten makes it [N, C]
  void to_onnx(OnnxEmitter& e, const OnnxNode& n) const override {
    e.node("Flatten", {e.op("GlobalAveragePool", {n.in[0]})}, {n.out[0]},
           {OnnxAttr::integer("axis", 1)});
  }
};

struct GlobalAvgPoolBwdOp final : OpDef {
  Shape input;
  explicit GlobalAvgPoolBwdOp(Shape in) : input(std::move(in)) {}
  const char* name() const override { return "global_avg_pool_backward"; }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    const Meta& dy = in[0];
    check_defined(dy, name(), "dy");
    HR_CHECK(input.size() == 4 && dy.shape == Shape({input[0], input[1]}), name(), ": dy ",
             shape_str(dy.shape), " does not fit input ", shape_str(input));
    check_float(dy, name(), "dy");
    return {Meta::make(input, dy.dtype, dy.device)};
  }
  void run_cpu(const KernelArgs& a) const override {
    cpu::global_avgpool_backward(input[0], input[1], spatial(input), fptr(a.in[0]),
                                 fptr(a.out[0]));
  }
  void run_cuda(const KernelArgs& a) const override {
    cuda::global_avgpool_backward(dt(a.in[0], name()), input[0], input[1], spatial(input),
                                  a.in[0].raw_data(), a.out[0].raw_data(), a.stream);
  }
};

}  // namespace

Tensor avg_pool2d(const Tensor& x, std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride,
                  std::array<int64_t, 2> padding, bool count_include_pad) {
  return hr::apply(std::make_shared<AvgPoolOp>(Window{kernel, stride, padding, count_include_pad}),
               {x})[0];
}
Tensor avg_pool2d_backward(const Tensor& dy, const Shape& input, std::array<int64_t, 2> kernel,
                           std::array<int64_t, 2> stride, std::array<int64_t, 2> padding,
                           bool count_include_pad) {
  return hr::apply(std::make_shared<AvgPoolBwdOp>(Window{kernel, stride, padding, count_include_pad},
                                              input),
               {dy})[0];
}
Tensor global_avg_pool(const Tensor& x) {
  return hr::apply(std::make_shared<GlobalAvgPoolOp>(), {x})[0];
}
Tensor global_avg_pool_backward(const Tensor& dy, const Shape& input) {
  return hr::apply(std::make_shared<GlobalAvgPoolBwdOp>(input), {dy})[0];
}

}  // namespace hr::ops
