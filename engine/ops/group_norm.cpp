// group_norm (torch.nn.functional.group_norm with an affine weight and bias) and its backward.
#include "engine/onnx_emitter.h"
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/cpu_kernels.h"

namespace hr::ops {

using namespace detail;

namespace {

// x [N,C,H,W] or [N,C]: groups of C/G channels; gamma, beta f32 [C]
void check_group_args(const Meta& x, const Meta& gamma, int64_t groups, const char* op) {
  check_defined(x, op, "input");
  HR_CHECK(x.shape.size() == 4 || x.shape.size() == 2, op, ": expected [N,C,H,W] or [N,C], got ",
           shape_str(x.shape));
  check_float(x, op, "input");
  HR_CHECK(groups > 0 && x.shape[1] % groups == 0, op, ": ", x.shape[1],
           " channels do not split into ", groups, " groups");
  check_param(gamma, x.shape[1], x, op, "weight");
}

struct Dims {
  int64_t N, C, HW;
  explicit Dims(const Tensor& x) : N(x.size(0)), C(x.size(1)), HW(spatial(x.shape())) {}
};

// Inputs x, dy, gamma, mean, rstd -> dx, dgamma, dbeta (those not needed absent)
struct GroupNormBwdOp final : OpDef {
  int64_t groups;
  std::array<bool, 3> need;
  GroupNormBwdOp(int64_t g, std::array<bool, 3> n) : groups(g), need(n) {}
  const char* name() const override { return "group_norm_backward"; }
  std::string attributes() const override { return str_cat("groups ", groups); }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    const Meta &x = in[0], &dy = in[1];
    check_group_args(x, in[2], groups, name());
    check_defined(dy, name(), "dy");
    check_same(x, dy, name());
    const Shape stats = {x.shape[0], groups};
    for (int k : {3, 4})
      HR_CHECK(in[k].defined && in[k].shape == stats && in[k].dtype == DType::f32, name(),
               ": saved statistics must be f32 ", shape_str(stats), ", got ", in[k].str());
    const int64_t C = x.shape[1];
    return {need[0] ? same_as(x) : Meta::none(), need[1] ? f32_on({C}, x) : Meta::none(),
            need[2] ? f32_on({C}, x) : Meta::none()};
  }
  void run_cpu(const KernelArgs& a) const override {
    const Dims d(a.in[0]);
    cpu::group_norm_backward(d.N, d.C, d.HW, groups, fptr(a.in[0]), fptr(a.in[1]), fptr(a.in[2]),
                             fptr(a.in[3]), fptr(a.in[4]), fptr(a.out[0]), fptr(a.out[1]),
                             fptr(a.out[2]));
  }
  void run_cuda(const KernelArgs& a) const override {
    const Dims d(a.in[0]);
    cuda::group_norm_backward(dt(a.in[0], name()), d.N, d.HW, d.C, groups, a.in[0].raw_data(),
                              a.in[1].raw_data(), fptr(a.in[2]), fptr(a.in[3]), fptr(a.in[4]),
                              vptr(a.out[0]), fptr(a.out[1]), fptr(a.out[2]), a.stream);
  }
};

// x, gamma, beta -> y like x, and the saved mean and 1/std [N, G] (f32)
struct GroupNormOp final : OpDef {
  int64_t groups;
  float eps;
  GroupNormOp(int64_t g, float e) : groups(g), eps(e) {}
  const char* name() const override { return "group_norm"; }
  std::string attributes() const override { return str_cat("groups ", groups, ", eps ", eps); }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    const Meta& x = in[0];
    check_group_args(x, in[1], groups, name());
    check_param(in[2], x.shape[1], x, name(), "bias");
    return {same_as(x), f32_on({x.shape[0], groups}, x), f32_on({x.shape[0], groups}, x)};
  }
  void run_cpu(const KernelArgs& a) const override {
    const Dims d(a.in[0]);
    cpu::group_norm_forward(d.N, d.C, d.HW, groups, fptr(a.in[0]), fptr(a.in[1]), fptr(a.in[2]),
                            eps, fptr(a.out[0]), fptr(a.out[1]), fptr(a.out[2]));
  }
  void run_cuda(const KernelArgs& a) const override {
    const Dims d(a.in[0]);
    cuda::group_norm_forward(dt(a.in[0], name()), d.N, d.HW, d.C, groups, a.in[0].raw_data(),
                             fptr(a.in[1]), fptr(a.in[2]), eps, a.out[0].raw_data(),
                             fptr(a.out[1]), fptr(a.out[2]), a.stream);
  }
  std::vector<Tensor> backward(const GradArgs& a) const override {
    auto [dx, dg, db] = group_norm_backward(a.in[0], a.grad_out[0], a.in[1], a.out[1], a.out[2],
                                            groups, {a.need[0], a.need[1], a.need[2]});
    return {dx, dg, db};
  }
  bool saves_input(size_t i) const override { return i < 2; }
  bool saves_output(size_t i) const override { return i > 0; }
  // Opset 17 has no GroupNormalization: x as [N, G, rest] through InstanceNormalization (each
  // group's mean and biased variance), back to x's shape, then gamma and beta per channel.
  void to_onnx(OnnxEmitter& e, const OnnxNode& n) const override {
    HR_CHECK(n.out[1].empty() && n.out[2].empty(), name(),
             ": its saved statistics have no ONNX export (inference uses the output only)");
    const Meta& x = n.in_meta[0];
    const std::string grouped = e.op("Reshape", {n.in[0], e.ints({0, groups, -1}, "shape")});
    const std::string norm = e.op("InstanceNormalization",
                                  {grouped, e.constant(Tensor::ones({groups}, x.dtype), "ones"),
                                   e.constant(Tensor::zeros({groups}, x.dtype), "zeros")},
                                  {OnnxAttr::real("epsilon", eps)});
    const std::string y = e.op("Reshape", {norm, e.op("Shape", {n.in[0]})});
    std::vector<int64_t> axes;  // gamma, beta [C] -> [C, 1, ...] against [N, C, ...]
    for (size_t d = 2; d < x.shape.size(); ++d) axes.push_back(static_cast<int64_t>(d - 1));
    auto per_channel = [&](const std::string& p) {
      return axes.empty() ? p : e.op("Unsqueeze", {p, e.ints(axes, "axes")});
    };
    e.node("Add", {e.op("Mul", {y, per_channel(n.in[1])}), per_channel(n.in[2])}, {n.out[0]});
  }
};

}  // namespace

Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta,
                  float eps) {
  return hr::apply(std::make_shared<GroupNormOp>(groups, eps), {x, gamma, beta})[0];
}

std::array<Tensor, 3> group_norm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                                          const Tensor& mean, const Tensor& rstd, int64_t groups,
                                          std::array<bool, 3> need) {
  auto r = hr::apply(std::make_shared<GroupNormBwdOp>(groups, need), {x, dy, gamma, mean, rstd});
  return {r[0], r[1], r[2]};
}

}  // namespace hr::ops
