// cast (a differentiable dtype change) and autocast, the mixed-precision rule built on it.
#include "engine/graph/graph.h"
#include "engine/onnx_emitter.h"
#include "engine/ops.h"
#include "engine/ops/op_util.h"

namespace hr {

namespace {
thread_local DType g_autocast = DType::f32;
}  // namespace

AutocastGuard::AutocastGuard(DType dtype) : prev_(g_autocast) {
  HR_CHECK(dtype == DType::f16 || dtype == DType::bf16 || dtype == DType::f32,
           "autocast: dtype must be f16, bf16 or f32, got ", dtype_name(dtype));
  g_autocast = dtype;
}
AutocastGuard::~AutocastGuard() { g_autocast = prev_; }
DType autocast_dtype() { return g_autocast; }

}  // namespace hr

namespace hr::ops {

using namespace detail;

namespace {

struct CastOp final : OpDef {
  DType to;
  explicit CastOp(DType t) : to(t) {}
  const char* name() const override { return "cast"; }
  std::string attributes() const override { return dtype_name(to); }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_defined(in[0], name(), "input");
    HR_CHECK(is_floating(in[0].dtype) && is_floating(to), "cast: ", dtype_name(in[0].dtype), " -> ",
             dtype_name(to), " is not a float cast");
    return {Meta::make(in[0].shape, to, in[0].device)};
  }
  void run_cpu(const KernelArgs& a) const override {
    Tensor y = a.out[0];
    y.copy_(a.in[0]);
  }
  void run_cuda(const KernelArgs& a) const override {
    cuda::convert(a.in[0].numel(), dt(a.in[0], name()), a.in[0].raw_data(), dt(a.out[0], name()),
                  a.out[0].raw_data(), a.stream);
  }
  std::vector<Tensor> backward(const GradArgs& a) const override {
    return {cast(a.grad_out[0], a.in_meta[0].dtype)};
  }
  bool saves_input(size_t) const override { return false; }
  void to_onnx(OnnxEmitter& e, const OnnxNode& n) const override {
    e.node("Cast", {n.in[0]}, {n.out[0]}, {OnnxAttr::integer("to", onnx_elem_type(to))});
  }
};

}  // namespace

Tensor cast(const Tensor& x, DType dtype) { return hr::apply(std::make_shared<CastOp>(dtype), {x})[0]; }

std::array<Tensor, 2> detail::autocast(const Tensor& a, const Tensor& b) {
  if (g_autocast == DType::f32) return {a, b};
  graph::GraphIR* g = graph::recording_graph({a, b}, "autocast");
  auto one = [&](const Tensor& t) {
    if (!t.defined() || !t.device().is_cuda() || !is_floating(t.dtype()) ||
        t.dtype() == g_autocast)
      return t;
    // a concrete tensor used by a graph: the graph's own value for it (a parameter), so that
    // the cast is recorded, not run now
    return cast(g && !t.is_symbolic() ? g->symbolic(g->param(t)) : t, g_autocast);
  };
  return {one(a), one(b)};
}

}  // namespace hr::ops
