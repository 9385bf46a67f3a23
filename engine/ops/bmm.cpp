// bmm: batched matrix product of 3-D tensors with optional transposes (torch.bmm with the
// transposes folded in, so attention is written without permute ops). Its backward is bmm
// again. 3-D tensors are row-major on both devices.
#include "engine/onnx_emitter.h"
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/cpu_kernels.h"

namespace hr::ops {

using namespace detail;

namespace {

struct BmmOp final : OpDef {
  bool ta, tb;
  BmmOp(bool a, bool b) : ta(a), tb(b) {}
  const char* name() const override { return "bmm"; }
  std::string attributes() const override {
    return str_cat(ta ? "a^T" : "a", " x ", tb ? "b^T" : "b");
  }
  // [batch, M, N, K] of a checked pair
  std::array<int64_t, 4> dims(const Shape& a, const Shape& b) const {
    return {a[0], ta ? a[2] : a[1], tb ? b[1] : b[2], ta ? a[1] : a[2]};
  }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    const Meta &a = in[0], &b = in[1];
    check_defined(a, name(), "a");
    check_defined(b, name(), "b");
    const int64_t kb = b.shape.size() == 3 ? (tb ? b.shape[2] : b.shape[1]) : -1;
    const int64_t ka = a.shape.size() == 3 ? (ta ? a.shape[1] : a.shape[2]) : -2;
    HR_CHECK(a.shape.size() == 3 && b.shape.size() == 3 && a.shape[0] == b.shape[0] && ka == kb,
             name(), ": a ", shape_str(a.shape), (ta ? " (transposed)" : ""), " and b ",
             shape_str(b.shape), (tb ? " (transposed)" : ""),
             " do not multiply (expected [B,M,K] x [B,K,N] after the transposes)");
    HR_CHECK(a.dtype == b.dtype, name(), ": dtypes ", dtype_name(a.dtype), " and ",
             dtype_name(b.dtype), " differ");
    check_float(a, name(), "a");
    check_same_device(a, b, name());
    const auto d = dims(a.shape, b.shape);
    return {Meta::make({d[0], d[1], d[2]}, a.dtype, a.device)};
  }
  void run_cpu(const KernelArgs& a) const override {
    const auto d = dims(a.in[0].shape(), a.in[1].shape());
    cpu::bmm(d[0], d[1], d[2], d[3], ta, tb, fptr(a.in[0]), fptr(a.in[1]), fptr(a.out[0]));
  }
  void run_cuda(const KernelArgs& a) const override {
    const auto d = dims(a.in[0].shape(), a.in[1].shape());
    cuda::bmm(dt(a.in[0], name()), d[0], d[1], d[2], d[3], ta, tb, a.in[0].raw_data(),
              a.in[1].raw_data(), a.out[0].raw_data(), a.stream);
  }
  // c = op(a) op(b): d op(a) = dc op(b)^T, d op(b) = op(a)^T dc, each transposed back when
  // the operand is stored transposed.
  std::vector<Tensor> backward(const GradArgs& g) const override {
    const Tensor &a = g.in[0], &b = g.in[1], &dc = g.grad_out[0];
    Tensor da, db;
    if (g.need[0]) da = ta ? bmm(b, dc, tb, true) : bmm(dc, b, false, !tb);
    if (g.need[1]) db = tb ? bmm(dc, a, true, ta) : bmm(a, dc, !ta, false);
    return {da, db};
  }
  double macs(const std::vector<Meta>& in) const override {
    const auto d = dims(in[0].shape, in[1].shape);
    return static_cast<double>(d[0]) * d[1] * d[2] * d[3];
  }
  // MatMul, a stored-transposed operand through Transpose [0, 2, 1]
  void to_onnx(OnnxEmitter& e, const OnnxNode& n) const override {
    auto op = [&](size_t i, bool t) {
      return t ? e.op("Transpose", {n.in[i]}, {OnnxAttr::integers("perm", {0, 2, 1})}) : n.in[i];
    };
    e.node("MatMul", {op(0, ta), op(1, tb)}, {n.out[0]});
  }
};

}  // namespace

Tensor bmm(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  const auto [aa, ba] = autocast(a, b);
  return hr::apply(std::make_shared<BmmOp>(trans_a, trans_b), {aa, ba})[0];
}

}  // namespace hr::ops
