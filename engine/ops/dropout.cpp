// dropout2d (torch.nn.Dropout2d in training: whole channels zeroed with probability p, the others
// scaled by 1/(1-p)) and the channel scaling its backward is.
//
// Design: the op owns no generator. Its mask comes from a counter-based hash of (seed, step, n, c)
// (kernels/dropout_hash.h) with {seed, step} in a small i64 state tensor on x's device that the
// kernel reads and advances in place (writes_input, as batch norm's running statistics). So the
// same definition serves eager calls, the recorded static graph (the state is a parameter the
// graph updates) and CUDA-graph replay (the step lives in device memory, not in a captured kernel
// argument), and each run draws a fresh mask. The mask [N,C] is an output beside y: the backward
// is dy * mask (ops::channel_scale), with no second draw.
#include "engine/onnx_emitter.h"
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/cpu_kernels.h"

namespace hr::ops {

using namespace detail;

namespace {

void check_nc(const Meta& x, const char* op, const char* what) {
  check_defined(x, op, what);
  HR_CHECK(x.shape.size() >= 2, op, ": expected ", what, " [N,C,...], got ", shape_str(x.shape));
  check_float(x, op, what);
}

// x [N,C,...] and s f32 [N,C] as the kernels see them
struct Dims {
  int64_t N, C, HW;
  bool channels_last;
  explicit Dims(const Tensor& x)
      : N(x.size(0)), C(x.size(1)), HW(spatial(x.shape())),
        channels_last(x.device().is_cuda() && x.dim() == 4) {}
};

// y = x * s[n, c] on the tensors' device
void scale_channels(const Tensor& x, const Tensor& s, const Tensor& y, cuda::Stream stream,
                    const char* op) {
  const Dims d(x);
  if (x.device().is_cpu())
    cpu::channel_scale(d.N, d.C, d.HW, fptr(x), fptr(s), fptr(y));
  else
    cuda::channel_scale(dt(x, op), d.N, d.C, d.HW, d.channels_last, x.raw_data(), fptr(s),
                        y.raw_data(), stream);
}

// x [N,C,...], s f32 [N,C] -> x * s[n,c]; s carries no gradient (a mask)
struct ChannelScaleOp final : OpDef {
  const char* name() const override { return "channel_scale"; }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_nc(in[0], name(), "input");
    const Meta& s = in[1];
    check_defined(s, name(), "scale");
    HR_CHECK(s.shape == Shape({in[0].shape[0], in[0].shape[1]}) && s.dtype == DType::f32, name(),
             ": scale must be f32 [", in[0].shape[0], ", ", in[0].shape[1], "] for input ",
             in[0].str(), ", got ", s.str());
    check_same_device(in[0], s, name());
    return {same_as(in[0])};
  }
  void run_cpu(const KernelArgs& a) const override {
    scale_channels(a.in[0], a.in[1], a.out[0], a.stream, name());
  }
  void run_cuda(const KernelArgs& a) const override {
    scale_channels(a.in[0], a.in[1], a.out[0], a.stream, name());
  }
  bool differentiable(size_t i) const override { return i == 0; }
  std::vector<Tensor> backward(const GradArgs& g) const override {
    return {channel_scale(g.grad_out[0], g.in[1]), Tensor()};
  }
  bool saves_input(size_t i) const override { return i == 1; }
  // Mul by s [N, C] unsqueezed to [N, C, 1, ...]
  void to_onnx(OnnxEmitter& e, const OnnxNode& n) const override {
    std::vector<int64_t> axes;
    for (size_t d = 2; d < n.in_meta[0].shape.size(); ++d) axes.push_back(static_cast<int64_t>(d));
    const std::string s =
        axes.empty() ? n.in[1] : e.op("Unsqueeze", {n.in[1], e.ints(axes, "axes")});
    e.node("Mul", {n.in[0], s}, {n.out[0]});
  }
};

// x [N,C,...], state i64 [2] {seed, step} (updated in place) -> y like x, mask f32 [N,C]
struct Dropout2dOp final : OpDef {
  float p, scale;
  explicit Dropout2dOp(float prob) : p(prob), scale(prob < 1.f ? 1.f / (1.f - prob) : 0.f) {}
  const char* name() const override { return "dropout2d"; }
  std::string attributes() const override { return str_cat("p ", p); }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    const Meta &x = in[0], &st = in[1];
    check_nc(x, name(), "input");
    check_defined(st, name(), "state");
    HR_CHECK(st.shape == Shape({2}) && st.dtype == DType::i64, name(),
             ": state must be i64 [2] {seed, step}, got ", st.str());
    check_same_device(x, st, name());
    return {same_as(x), f32_on({x.shape[0], x.shape[1]}, x)};
  }
  void run_cpu(const KernelArgs& a) const override {
    const Dims d(a.in[0]);
    cpu::dropout2d_mask(a.in[1].data<int64_t>(), d.N, d.C, p, scale, fptr(a.out[1]));
    scale_channels(a.in[0], a.out[1], a.out[0], a.stream, name());
  }
  void run_cuda(const KernelArgs& a) const override {
    const Dims d(a.in[0]);
    cuda::dropout2d_mask(a.in[1].data<int64_t>(), d.N, d.C, p, scale, fptr(a.out[1]), a.stream);
    scale_channels(a.in[0], a.out[1], a.out[0], a.stream, name());
  }
  bool writes_input(size_t i) const override { return i == 1; }
  bool differentiable(size_t i) const override { return i == 0; }
  std::vector<Tensor> backward(const GradArgs& g) const override {
    return {channel_scale(g.grad_out[0], g.out[1]), Tensor()};
  }
  bool saves_input(size_t) const override { return false; }
  bool saves_output(size_t i) const override { return i == 1; }
  // Inference: dropout is the identity (a model in eval mode records no dropout at all; this
  // is the translation of one recorded in training mode, as torch.onnx exports it for inference)
  void to_onnx(OnnxEmitter& e, const OnnxNode& n) const override {
    HR_CHECK(n.out[1].empty(), name(), ": its mask has no ONNX export (inference has none)");
    e.node("Identity", {n.in[0]}, {n.out[0]});
  }
};

}  // namespace

Tensor channel_scale(const Tensor& x, const Tensor& s) {
  return hr::apply(std::make_shared<ChannelScaleOp>(), {x, s})[0];
}

std::array<Tensor, 2> dropout2d(const Tensor& x, const Tensor& state, float p) {
  HR_CHECK(p >= 0.f && p <= 1.f, "dropout2d: p must be in [0, 1], got ", p);
  auto r = hr::apply(std::make_shared<Dropout2dOp>(p), {x, state});
  return {r[0], r[1]};
}

Tensor dropout_state(uint64_t seed, Device device) {
  return Tensor::from_vector_i64({static_cast<int64_t>(seed), 0}, {2}).to(device);
}

}  // namespace hr::ops
