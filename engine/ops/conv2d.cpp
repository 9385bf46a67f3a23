// conv2d and its two backward ops (data and weight gradients).
#include "engine/ops/conv2d.h"

#include "engine/onnx_emitter.h"
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/cpu_kernels.h"

namespace hr::ops {

using namespace detail;

namespace {

kern::ConvShape conv_shape(const Shape& x, const Shape& w, std::array<int64_t, 2> stride,
                           std::array<int64_t, 2> padding) {
  return kern::ConvShape::make(x[0], x[1], x[2], x[3], w[0], w[2], w[3], stride[0], stride[1],
                               padding[0], padding[1]);
}

void check_window(std::array<int64_t, 2> stride, std::array<int64_t, 2> padding, const char* op) {
  HR_CHECK(stride[0] > 0 && stride[1] > 0 && padding[0] >= 0 && padding[1] >= 0, op,
           ": bad stride ", pair_str(stride), " or padding ", pair_str(padding));
}

std::string window_str(std::array<int64_t, 2> stride, std::array<int64_t, 2> padding) {
  return str_cat("stride ", pair_str(stride), ", padding ", pair_str(padding));
}

// dy [N,K,P,Q], w [K,C,R,S] -> dx [N,C,H,W]
struct Conv2dBwdDataOp final : OpDef {
  Shape input;
  std::array<int64_t, 2> stride, padding;
  Conv2dBwdDataOp(Shape in, std::array<int64_t, 2> s, std::array<int64_t, 2> p)
      : input(std::move(in)), stride(s), padding(p) {}
  const char* name() const override { return "conv2d_backward_data"; }
  std::string attributes() const override { return window_str(stride, padding); }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    const Meta &dy = in[0], &w = in[1];
    check_defined(dy, name(), "dy");
    check_defined(w, name(), "weight");
    HR_CHECK(input.size() == 4 && w.shape.size() == 4 && dy.shape.size() == 4, name(),
             ": expected 4-D shapes, got dy ", shape_str(dy.shape), ", weight ",
             shape_str(w.shape), ", input ", shape_str(input));
    const kern::ConvShape s = conv_shape(input, w.shape, stride, padding);
    HR_CHECK(dy.shape == Shape({s.N, s.K, s.P, s.Q}) && w.shape[1] == input[1], name(), ": dy ",
             shape_str(dy.shape), " and weight ", shape_str(w.shape), " do not fit input ",
             shape_str(input));
    HR_CHECK(dy.dtype == w.dtype, name(), ": dy and weight dtypes differ");
    check_float(dy, name(), "dy");
    check_same_device(dy, w, name());
    return {Meta::make(input, dy.dtype, dy.device)};
  }
  void run_cpu(const KernelArgs& a) const override {
    cpu::conv2d_backward_data(conv_shape(input, a.in[1].shape(), stride, padding),
                              a.in[0].data<float>(), a.in[1].data<float>(), a.out[0].data<float>());
  }
  void run_cuda(const KernelArgs& a) const override {
    cuda::conv2d_backward_data(conv_shape(input, a.in[1].shape(), stride, padding),
                               dt(a.in[0], name()), a.in[0].raw_data(), a.in[1].raw_data(),
                               a.out[0].raw_data(), a.stream);
  }
  double macs(const std::vector<Meta>& in) const override {
    return static_cast<double>(conv_shape(input, in[1].shape, stride, padding).macs());
  }
};

// x [N,C,H,W], dy [N,K,P,Q] -> dw [K,C,R,S], dbias [K] f32 (absent unless `bias`)
struct Conv2dBwdWeightOp final : OpDef {
  Shape weight;
  std::array<int64_t, 2> stride, padding;
  bool bias;
  Conv2dBwdWeightOp(Shape w, std::array<int64_t, 2> s, std::array<int64_t, 2> p, bool b)
      : weight(std::move(w)), stride(s), padding(p), bias(b) {}
  const char* name() const override { return "conv2d_backward_weight"; }
  std::string attributes() const override {
    return window_str(stride, padding) + (bias ? ", bias" : "");
  }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    const Meta &x = in[0], &dy = in[1];
    check_defined(x, name(), "input");
    check_defined(dy, name(), "dy");
    HR_CHECK(x.shape.size() == 4 && weight.size() == 4 && dy.shape.size() == 4 &&
                 x.shape[1] == weight[1],
             name(), ": input ", shape_str(x.shape), " does not fit weight ", shape_str(weight));
    const kern::ConvShape s = conv_shape(x.shape, weight, stride, padding);
    HR_CHECK(dy.shape == Shape({s.N, s.K, s.P, s.Q}), name(), ": dy ", shape_str(dy.shape),
             " does not fit input ", shape_str(x.shape), " and weight ", shape_str(weight));
    HR_CHECK(dy.dtype == x.dtype, name(), ": input and dy dtypes differ");
    check_float(x, name(), "input");
    check_same_device(x, dy, name());
    return {Meta::make(weight, x.dtype, x.device),
            bias ? f32_on({weight[0]}, x) : Meta::none()};
  }
  void run_cpu(const KernelArgs& a) const override {
    cpu::conv2d_backward_weight(conv_shape(a.in[0].shape(), weight, stride, padding),
                                a.in[0].data<float>(), a.in[1].data<float>(),
                                a.out[0].data<float>(), fptr(a.out[1]));
  }
  void run_cuda(const KernelArgs& a) const override {
    cuda::conv2d_backward_weight(conv_shape(a.in[0].shape(), weight, stride, padding),
                                 dt(a.in[0], name()), a.in[0].raw_data(), a.in[1].raw_data(),
                                 a.out[0].raw_data(), fptr(a.out[1]), a.stream);
  }
  double macs(const std::vector<Meta>& in) const override {
    return static_cast<double>(conv_shape(in[0].shape, weight, stride, padding).macs());
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
std::string Conv2dOp::attributes() const {
  return window_str(stride, padding) + (relu ? ", relu" : "");
}

namespace {
bool has_residual(const std::vector<Tensor>& in) { return in.size() > 3 && in[3].defined(); }
bool has_prepacked(const std::vector<Tensor>& in) { return in.size() > 4 && in[4].defined(); }
}  // namespace

std::vector<Meta> Conv2dOp::infer(const std::vector<Meta>& in) const {
  const Meta &x = in[0], &w = in[1], &bias = in[2];
  check_defined(x, "conv2d", "input");
  check_defined(w, "conv2d", "weight");
  HR_CHECK(x.shape.size() == 4, "conv2d: expected a 4-D input [N,C,H,W], got ",
           shape_str(x.shape));
  HR_CHECK(w.shape.size() == 4, "conv2d: expected a 4-D weight [K,C,R,S], got ",
           shape_str(w.shape));
  HR_CHECK(x.shape[1] == w.shape[1], "conv2d: input ", shape_str(x.shape), " has ", x.shape[1],
           " channels but weight ", shape_str(w.shape), " expects ", w.shape[1]);
  HR_CHECK(x.dtype == w.dtype, "conv2d: input dtype ", dtype_name(x.dtype),
           " differs from weight dtype ", dtype_name(w.dtype));
  check_window(stride, padding, "conv2d");
  check_float(x, "conv2d", "input");
  check_same_device(x, w, "conv2d");
  if (bias.defined) check_param(bias, w.shape[0], x, "conv2d", "bias");
  const kern::ConvShape s = conv_shape(x.shape, w.shape, stride, padding);
  HR_CHECK(x.shape[2] + 2 * padding[0] >= w.shape[2] && x.shape[3] + 2 * padding[1] >= w.shape[3] &&
               s.P > 0 && s.Q > 0,
           "conv2d: input ", shape_str(x.shape), " is smaller than kernel ", shape_str(w.shape),
           " with padding ", padding[0], "x", padding[1]);
  const Meta y = Meta::make({s.N, s.K, s.P, s.Q}, x.dtype, x.device);
  if (in.size() > 3 && in[3].defined) {
    HR_CHECK(in[3].shape == y.shape && in[3].dtype == y.dtype, "conv2d: the residual ",
             shape_str(in[3].shape), " ", dtype_name(in[3].dtype), " differs from the output ",
             shape_str(y.shape), " ", dtype_name(y.dtype));
    check_same_device(x, in[3], "conv2d");
  }
  if (in.size() > 4 && in[4].defined) {
    const int64_t n = x.device.is_cpu() ? cpu::conv2d_prepacked_size(s) : 0;
    HR_CHECK(n > 0 && in[4].shape == Shape({n}) && in[4].dtype == DType::f32 &&
                 in[4].device == x.device,
             "conv2d: prepacked weights ", shape_str(in[4].shape), " ", dtype_name(in[4].dtype),
             " on ", in[4].device.str(), " do not fit this convolution (", n > 0 ? "" : "none ",
             "expected", n > 0 ? str_cat(" f32 [", n, "] on the CPU") : std::string(), ")");
  }
  return {y};
}

void Conv2dOp::run_cpu(const KernelArgs& a) const {
  kern::ConvEpilogue ep;
  ep.residual = has_residual(a.in) ? a.in[3].data<float>() : nullptr;
  ep.relu = relu;
  const kern::ConvShape s = conv_shape(a.in[0].shape(), a.in[1].shape(), stride, padding);
  if (has_prepacked(a.in))
    cpu::conv2d_forward_prepacked(s, a.in[0].data<float>(), a.in[4].data<float>(), fptr(a.in[2]),
                                  a.out[0].data<float>(), ep);
  else
    cpu::conv2d_forward(s, a.in[0].data<float>(), a.in[1].data<float>(), fptr(a.in[2]),
                        a.out[0].data<float>(), ep);
}

// The epilogue as elementwise passes after the convolution (no fused CUDA epilogue yet; the
// graph pass makes it for CPU graphs only).
void Conv2dOp::run_cuda(const KernelArgs& a) const {
  HR_CHECK(!has_prepacked(a.in), "conv2d: prepacked weights are CPU only");
  const cuda::DT t = dt(a.in[0], "conv2d");
  void* y = a.out[0].raw_data();
  cuda::conv2d_forward(conv_shape(a.in[0].shape(), a.in[1].shape(), stride, padding), t,
                       a.in[0].raw_data(), a.in[1].raw_data(), fptr(a.in[2]), y, a.stream);
  const int64_t n = a.out[0].numel();
  if (has_residual(a.in)) cuda::add(t, n, y, a.in[3].raw_data(), y, a.stream);
  if (relu) cuda::relu_forward(t, n, y, y, a.stream);
}

std::vector<Tensor> Conv2dOp::backward(const GradArgs& a) const {
  HR_CHECK(!relu && !has_residual(a.in) && !has_prepacked(a.in),
           "conv2d: a convolution with a fused residual/ReLU epilogue or prepacked weights has no "
           "backward (inference graphs only)");
  const Tensor &x = a.in[0], &w = a.in[1], &dy = a.grad_out[0];
  std::vector<Tensor> g(3);
  if (a.need[0]) g[0] = conv2d_backward_data(dy, w, a.in_meta[0].shape, stride, padding);
  if (a.need[1] || a.need[2]) {
    auto [dw, db] = conv2d_backward_weight(x, dy, a.in_meta[1].shape, stride, padding, a.need[2]);
    if (a.need[1]) g[1] = dw;
    g[2] = db;
  }
  return g;
}

double Conv2dOp::macs(const std::vector<Meta>& in) const {
  return static_cast<double>(conv_shape(in[0].shape, in[1].shape, stride, padding).macs());
}

// Conv (group 1, dilation 1: the op has neither) with the optional bias; the epilogue as Add
// and Relu nodes
void Conv2dOp::to_onnx(OnnxEmitter& e, const OnnxNode& n) const {
  const Shape& w = n.in_meta[1].shape;
  std::vector<std::string> in = {n.in[0], n.in[1]};
  if (!n.in[2].empty()) in.push_back(n.in[2]);
  const bool residual = n.in.size() > 3 && !n.in[3].empty();
  std::string y = residual || relu ? e.fresh("conv") : n.out[0];
  e.node("Conv", in, {y},
         {OnnxAttr::integers("kernel_shape", {w[2], w[3]}),
          OnnxAttr::integers("strides", {stride[0], stride[1]}),
          OnnxAttr::integers("pads", {padding[0], padding[1], padding[0], padding[1]}),
          OnnxAttr::integers("dilations", {1, 1}), OnnxAttr::integer("group", 1)});
  if (residual) {
    const std::string sum = relu ? e.fresh("add") : n.out[0];
    e.node("Add", {y, n.in[3]}, {sum});
    y = sum;
  }
  if (relu) e.node("Relu", {y}, {n.out[0]});
}

std::string Conv2dPrepackOp::attributes() const {
  return str_cat("input ", shape_str(input), ", ", window_str(stride, padding));
}

std::vector<Meta> Conv2dPrepackOp::infer(const std::vector<Meta>& in) const {
  const Meta& w = in[0];
  check_defined(w, name(), "weight");
  HR_CHECK(w.device.is_cpu() && w.dtype == DType::f32 && w.shape.size() == 4 &&
               input.size() == 4 && input[1] == w.shape[1],
           name(), ": expected f32 CPU weights [K,C,R,S] for input ", shape_str(input), ", got ",
           dtype_name(w.dtype), " ", shape_str(w.shape), " on ", w.device.str());
  check_window(stride, padding, name());
  const int64_t n = conv2d_prepacked_size(input, w.shape, stride, padding);
  HR_CHECK(n > 0, name(), ": the CPU kernels (", cpu::cpu_isa(), ") have no prepacked form for ",
           shape_str(w.shape), " weights on input ", shape_str(input), ", ",
           window_str(stride, padding));
  return {f32_on({n}, w)};
}

void Conv2dPrepackOp::run_cpu(const KernelArgs& a) const {
  cpu::conv2d_prepack_weights(conv_shape(input, a.in[0].shape(), stride, padding),
                              a.in[0].data<float>(), a.out[0].data<float>());
}

void Conv2dPrepackOp::run_cuda(const KernelArgs&) const {
  throw Error("conv2d_prepack: prepacked weights are CPU only");
}

int64_t conv2d_prepacked_size(const Shape& input, const Shape& w, std::array<int64_t, 2> stride,
                              std::array<int64_t, 2> padding) {
  if (input.size() != 4 || w.size() != 4 || input[1] != w[1]) return 0;
  const kern::ConvShape s = conv_shape(input, w, stride, padding);
  if (s.P <= 0 || s.Q <= 0) return 0;
  return cpu::conv2d_prepacked_size(s);
}

Tensor conv2d_prepack(const Tensor& w, const Shape& input, std::array<int64_t, 2> stride,
                      std::array<int64_t, 2> padding) {
  return hr::apply(std::make_shared<Conv2dPrepackOp>(input, stride, padding), {w})[0];
}

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, std::array<int64_t, 2> stride,
              std::array<int64_t, 2> padding) {
  const auto [xa, wa] = autocast(x, w);
  return hr::apply(std::make_shared<Conv2dOp>(stride, padding), {xa, wa, bias})[0];
}

Tensor conv2d_backward_data(const Tensor& dy, const Tensor& w, const Shape& input,
                            std::array<int64_t, 2> stride, std::array<int64_t, 2> padding) {
  return hr::apply(std::make_shared<Conv2dBwdDataOp>(input, stride, padding), {dy, w})[0];
}

std::array<Tensor, 2> conv2d_backward_weight(const Tensor& x, const Tensor& dy, const Shape& weight,
                                             std::array<int64_t, 2> stride,
                                             std::array<int64_t, 2> padding, bool bias) {
  auto r = hr::apply(std::make_shared<Conv2dBwdWeightOp>(weight, stride, padding, bias), {x, dy});
  return {r[0], r[1]};
}

}  // namespace hr::ops
