// Nearest and bilinear resampling (PyTorch F.interpolate) and their backward.
#include <cmath>

#include "engine/ops/resample.h"

#include "engine/onnx_emitter.h"
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/cpu_kernels.h"

namespace hr::ops {

using namespace detail;

namespace {

// How a 4-D map is resampled: the mode and PyTorch's scale rule (scale_factor > 0 when the call
// gave one: nearest and bilinear without align_corners then use 1/scale_factor).
struct Resample {
  bool bilinear = false, align_corners = false;
  double scale_factor = 0;
  const char* name() const { return bilinear ? "upsample_bilinear" : "upsample_nearest"; }
  std::string str() const {
    return str_cat(bilinear ? "bilinear" : "nearest", align_corners ? ", align_corners" : "",
                   scale_factor > 0 ? str_cat(", scale ", scale_factor) : "");
  }
  kern::ResampleShape shape(const Shape& x, const Shape& y) const {
    return kern::ResampleShape::make(x[0], x[1], x[2], x[3], y[2], y[3], bilinear, align_corners,
                                     scale_factor);
  }
};

// x [N,C,H,W] -> y [N,C,OH,OW]
struct ResampleOp final : OpDef {
  Resample r;
  std::array<int64_t, 2> size;
  ResampleOp(Resample rs, std::array<int64_t, 2> sz) : r(rs), size(sz) {}
  const char* name() const override { return r.name(); }
  std::string attributes() const override { return r.str(); }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    const Meta& x = in[0];
    check_defined(x, name(), "input");
    HR_CHECK(x.shape.size() == 4, name(), ": expected a 4-D input [N,C,H,W], got ",
             shape_str(x.shape));
    check_float(x, name(), "input");
    HR_CHECK(size[0] > 0 && size[1] > 0, name(), ": output size ", size[0], "x", size[1],
             " must be positive (input ", shape_str(x.shape), ")");
    return {Meta::make({x.shape[0], x.shape[1], size[0], size[1]}, x.dtype, x.device)};
  }
  void run_cpu(const KernelArgs& a) const override {
    const kern::ResampleShape s = r.shape(a.in[0].shape(), a.out[0].shape());
    if (r.bilinear) cpu::upsample_bilinear_forward(s, fptr(a.in[0]), fptr(a.out[0]));
    else cpu::upsample_nearest_forward(s, fptr(a.in[0]), fptr(a.out[0]));
  }
  void run_cuda(const KernelArgs& a) const override {
    const kern::ResampleShape s = r.shape(a.in[0].shape(), a.out[0].shape());
    const cuda::DT t = dt(a.in[0], name());
    if (r.bilinear)
      cuda::upsample_bilinear_forward(t, s, a.in[0].raw_data(), a.out[0].raw_data(), a.stream);
    else
      cuda::upsample_nearest_forward(t, s, a.in[0].raw_data(), a.out[0].raw_data(), a.stream);
  }
  std::vector<Tensor> backward(const GradArgs& a) const override {
    const Shape& x = a.in_meta[0].shape;
    return {upsample_backward(a.grad_out[0], {x[2], x[3]}, r.bilinear, r.align_corners,
                              r.scale_factor)};
  }
  bool saves_input(size_t) const override { return false; }
  // Resize. Bilinear: align_corners as the op has it, else half_pixel (src = (dst + 0.5) / scale
  // - 0.5 clamped at 0, PyTorch's rule; pytorch_half_pixel would map an output of size 1 to
  // src 0, where PyTorch and our kernels take in / 2 - 0.5). Nearest: asymmetric + floor
  // (src = floor(dst / scale)). With a scale factor the scales are given (both the output size
  // floor(in * scale) and the coordinate rule 1 / scale_factor, as our kernels); otherwise the
  // output size, [N, C] taken from x at run time (the batch is dynamic).
  void to_onnx(OnnxEmitter& e, const OnnxNode& n) const override {
    std::vector<OnnxAttr> attrs;
    if (r.bilinear)
      attrs = {OnnxAttr::string("mode", "linear"),
               OnnxAttr::string("coordinate_transformation_mode",
                                r.align_corners ? "align_corners" : "half_pixel")};
    else
      attrs = {OnnxAttr::string("mode", "nearest"),
               OnnxAttr::string("coordinate_transformation_mode", "asymmetric"),
               OnnxAttr::string("nearest_mode", "floor")};
    if (r.scale_factor > 0) {
      const float s = static_cast<float>(r.scale_factor);
      e.node("Resize", {n.in[0], "", e.floats({1.f, 1.f, s, s}, {4}, "scales")}, {n.out[0]}, attrs);
      return;
    }
    const std::string shape = e.op("Shape", {n.in[0]});
    const std::string nc = e.op("Slice", {shape, e.ints({0}), e.ints({2})});
    const std::string sizes =
        e.op("Concat", {nc, e.ints({size[0], size[1]}, "size")}, {OnnxAttr::integer("axis", 0)});
    e.node("Resize", {n.in[0], "", "", sizes}, {n.out[0]}, attrs);
  }
};

// dy [N,C,OH,OW] -> dx [N,C,H,W]
struct ResampleBwdOp final : OpDef {
  Resample r;
  std::array<int64_t, 2> input;
  ResampleBwdOp(Resample rs, std::array<int64_t, 2> in) : r(rs), input(in) {}
  const char* name() const override {
    return r.bilinear ? "upsample_bilinear_backward" : "upsample_nearest_backward";
  }
  std::string attributes() const override { return r.str(); }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    const Meta& dy = in[0];
    check_defined(dy, name(), "dy");
    HR_CHECK(dy.shape.size() == 4 && input[0] > 0 && input[1] > 0, name(), ": expected a 4-D dy, got ",
             shape_str(dy.shape));
    check_float(dy, name(), "dy");
    return {Meta::make({dy.shape[0], dy.shape[1], input[0], input[1]}, dy.dtype, dy.device)};
  }
  void run_cpu(const KernelArgs& a) const override {
    const kern::ResampleShape s = r.shape(a.out[0].shape(), a.in[0].shape());
    if (r.bilinear) cpu::upsample_bilinear_backward(s, fptr(a.in[0]), fptr(a.out[0]));
    else cpu::upsample_nearest_backward(s, fptr(a.in[0]), fptr(a.out[0]));
  }
  void run_cuda(const KernelArgs& a) const override {
    const kern::ResampleShape s = r.shape(a.out[0].shape(), a.in[0].shape());
    const cuda::DT t = dt(a.in[0], name());
    if (r.bilinear)
      cuda::upsample_bilinear_backward(t, s, a.in[0].raw_data(), a.out[0].raw_data(), a.stream);
    else
      cuda::upsample_nearest_backward(t, s, a.in[0].raw_data(), a.out[0].raw_data(), a.stream);
  }
};

// y = r + upsample_nearest(x) (x [N,C,H,W], r and y [N,C,OH,OW]): made by the graph pass
// fuse_upsample_add from an upsampling and the add consuming it. The same bits as the two ops
// (one float addition per element, commutative, rounded once); the gradients are theirs.
struct UpsampleAddOp final : OpDef {
  Resample r;  // nearest
  explicit UpsampleAddOp(Resample rs) : r(rs) {}
  const char* name() const override { return "upsample_nearest_add"; }
  std::string attributes() const override { return r.str(); }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    const Meta &x = in[0], &a = in[1];
    check_defined(x, name(), "input");
    check_defined(a, name(), "addend");
    HR_CHECK(x.shape.size() == 4 && a.shape.size() == 4 && x.shape[0] == a.shape[0] &&
                 x.shape[1] == a.shape[1],
             name(), ": expected [N,C,H,W] inputs with the addend's N and C, got ",
             shape_str(x.shape), " and ", shape_str(a.shape));
    check_float(x, name(), "input");
    check_same(a, Meta::make(a.shape, x.dtype, x.device), name());
    if (r.scale_factor > 0)
      HR_CHECK(a.shape[2] == int64_t(std::floor(x.shape[2] * r.scale_factor)) &&
                   a.shape[3] == int64_t(std::floor(x.shape[3] * r.scale_factor)),
               name(), ": the addend ", shape_str(a.shape), " is not ", shape_str(x.shape),
               " upsampled by ", r.scale_factor);
    return {same_as(a)};
  }
  void run_cpu(const KernelArgs& a) const override {
    cpu::upsample_nearest_forward(r.shape(a.in[0].shape(), a.out[0].shape()), fptr(a.in[0]),
                                  fptr(a.out[0]), fptr(a.in[1]));
  }
  void run_cuda(const KernelArgs& a) const override {
    cuda::upsample_nearest_forward(dt(a.in[0], name()), r.shape(a.in[0].shape(), a.out[0].shape()),
                                   a.in[0].raw_data(), a.out[0].raw_data(), a.stream,
                                   a.in[1].raw_data());
  }
  std::vector<Tensor> backward(const GradArgs& a) const override {
    const Shape& x = a.in_meta[0].shape;
    return {a.need[0] ? upsample_backward(a.grad_out[0], {x[2], x[3]}, false, false,
                                          r.scale_factor)
                      : Tensor(),
            a.grad_out[0]};
  }
  bool saves_input(size_t) const override { return false; }
};

Tensor resample(const Tensor& x, std::array<int64_t, 2> size, Resample r) {
  return hr::apply(std::make_shared<ResampleOp>(r, size), {x})[0];
}

// PyTorch's output size for a scale factor: floor(in * scale)
std::array<int64_t, 2> scaled_size(const Tensor& x, double sf, const char* op) {
  HR_CHECK(x.defined(), op, ": input is undefined");
  HR_CHECK(sf > 0, op, ": scale factor ", sf, " must be positive");
  HR_CHECK(x.dim() == 4, op, ": expected a 4-D input [N,C,H,W], got ", shape_str(x.shape()));
  return {static_cast<int64_t>(std::floor(x.size(2) * sf)),
          static_cast<int64_t>(std::floor(x.size(3) * sf))};
}

}  // namespace

OpPtr upsample_add_op(const OpDef& up) {
  const auto* op = dynamic_cast<const ResampleOp*>(&up);
  if (!op || op->r.bilinear) return nullptr;
  return std::make_shared<UpsampleAddOp>(op->r);
}

Tensor upsample_nearest(const Tensor& x, std::array<int64_t, 2> size) {
  return resample(x, size, Resample{false, false, 0.0});
}
Tensor upsample_nearest_scale(const Tensor& x, double sf) {
  return resample(x, scaled_size(x, sf, "upsample_nearest"), Resample{false, false, sf});
}
Tensor upsample_bilinear(const Tensor& x, std::array<int64_t, 2> size, bool align_corners) {
  return resample(x, size, Resample{true, align_corners, 0.0});
}
Tensor upsample_bilinear_scale(const Tensor& x, double sf, bool align_corners) {
  return resample(x, scaled_size(x, sf, "upsample_bilinear"), Resample{true, align_corners, sf});
}
Tensor upsample_backward(const Tensor& dy, std::array<int64_t, 2> input_hw, bool bilinear,
                         bool align_corners, double scale_factor) {
  const Resample r{bilinear, bilinear && align_corners, scale_factor};
  return hr::apply(std::make_shared<ResampleBwdOp>(r, input_hw), {dy})[0];
}

}  // namespace hr::ops
