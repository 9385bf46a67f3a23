// softmax over one dimension (torch.softmax, max-subtracted) and its backward from the output.
#include "engine/onnx_emitter.h"
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/cpu_kernels.h"

namespace hr::ops {

using namespace detail;

namespace {

int64_t norm_dim(int64_t dim, size_t rank, const char* op) {
  const int64_t r = static_cast<int64_t>(rank);
  HR_CHECK(dim >= -r && dim < r, op, ": dim ", dim, " is out of range for a ", r, "-D tensor");
  return dim < 0 ? dim + r : dim;
}

// The tensor as the kernels see it: [outer, L, inner] in memory order. On CUDA a 4-D tensor is
// channels-last, its memory order N, H, W, C.
struct Lines {
  int64_t outer = 1, L = 1, inner = 1;
  Lines(const Tensor& t, int64_t dim) {
    Shape mem = t.shape();
    int64_t d = dim;
    if (t.device().is_cuda() && mem.size() == 4) {
      mem = {t.size(0), t.size(2), t.size(3), t.size(1)};
      d = dim == 1 ? 3 : dim == 0 ? 0 : dim - 1;
    }
    for (int64_t i = 0; i < static_cast<int64_t>(mem.size()); ++i)
      (i < d ? outer : i == d ? L : inner) *= mem[static_cast<size_t>(i)];
  }
};

// y (the forward's output), dy -> dx
struct SoftmaxBwdOp final : OpDef {
  int64_t dim;
  explicit SoftmaxBwdOp(int64_t d) : dim(d) {}
  const char* name() const override { return "softmax_backward"; }
  std::string attributes() const override { return str_cat("dim ", dim); }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_defined(in[0], name(), "y");
    check_defined(in[1], name(), "dy");
    check_same(in[0], in[1], name());
    check_float(in[0], name(), "y");
    norm_dim(dim, in[0].shape.size(), name());
    return {same_as(in[0])};
  }
  void run_cpu(const KernelArgs& a) const override {
    const Lines l(a.in[0], norm_dim(dim, a.in[0].dim(), name()));
    cpu::softmax_backward(l.outer, l.L, l.inner, fptr(a.in[0]), fptr(a.in[1]), fptr(a.out[0]));
  }
  void run_cuda(const KernelArgs& a) const override {
    const Lines l(a.in[0], norm_dim(dim, a.in[0].dim(), name()));
    cuda::softmax_backward(dt(a.in[0], name()), l.outer, l.L, l.inner, a.in[0].raw_data(),
                           a.in[1].raw_data(), a.out[0].raw_data(), a.stream);
  }
};

struct SoftmaxOp final : OpDef {
  int64_t dim;
  explicit SoftmaxOp(int64_t d) : dim(d) {}
  const char* name() const override { return "softmax"; }
  std::string attributes() const override { return str_cat("dim ", dim); }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_defined(in[0], name(), "input");
    HR_CHECK(!in[0].shape.empty(), name(), ": expected a tensor of at least one dimension, got ",
             in[0].str());
    check_float(in[0], name(), "input");
    norm_dim(dim, in[0].shape.size(), name());
    return {same_as(in[0])};
  }
  void run_cpu(const KernelArgs& a) const override {
    const Lines l(a.in[0], norm_dim(dim, a.in[0].dim(), name()));
    cpu::softmax_forward(l.outer, l.L, l.inner, fptr(a.in[0]), fptr(a.out[0]));
  }
  void run_cuda(const KernelArgs& a) const override {
    const Lines l(a.in[0], norm_dim(dim, a.in[0].dim(), name()));
    cuda::softmax_forward(dt(a.in[0], name()), l.outer, l.L, l.inner, a.in[0].raw_data(),
                          a.out[0].raw_data(), a.stream);
  }
  std::vector<Tensor> backward(const GradArgs& g) const override {
    return {softmax_backward(g.out[0], g.grad_out[0], dim)};
  }
  bool saves_input(size_t) const override { return false; }
  bool saves_output(size_t) const override { return true; }
  void to_onnx(OnnxEmitter& e, const OnnxNode& n) const override {
    e.node("Softmax", {n.in[0]}, {n.out[0]}, {OnnxAttr::integer("axis", dim)});
  }
};

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) {
  return hr::apply(std::make_shared<SoftmaxOp>(dim), {x})[0];
}

Tensor softmax_backward(const Tensor& y, const Tensor& dy, int64_t dim) {
  return hr::apply(std::make_shared<SoftmaxBwdOp>(dim), {y, dy})[0];
}

}  // namespace hr::ops
