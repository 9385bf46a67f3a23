// concat along one dimension, and its backward (the slabs of the gradient).
#include <cstring>

#include "engine/onnx_emitter.h"
#include "engine/ops.h"
#include "engine/ops/op_util.h"

namespace hr::ops {

using namespace detail;

namespace {

// The slab [offset, offset + part.size(dim)) of `big` along `dim`, copied into or out of `part`.
// Both dense in the device's layout: NHWC 4-D on CUDA (dim 1 only: a channel slab in each of
// the N*H*W rows), row-major otherwise.
void slab_copy(const Tensor& big, const Tensor& part, int64_t dim, int64_t offset, bool into_big,
               cuda::Stream st) {
  const size_t es = dtype_size(big.dtype());
  int64_t outer = 1, inner = 1;
  if (big.device().is_cuda() && big.dim() == 4) {  // NHWC: dim == 1 (checked by infer)
    outer = big.size(0) * big.size(2) * big.size(3);
  } else {
    for (int64_t d = 0; d < dim; ++d) outer *= big.size(d);
    for (int64_t d = dim + 1; d < big.dim(); ++d) inner *= big.size(d);
  }
  const size_t row_big = big.size(dim) * inner * es, row_part = part.size(dim) * inner * es;
  char* b = static_cast<char*>(big.raw_data()) + offset * inner * es;
  char* p = static_cast<char*>(part.raw_data());
  if (big.device().is_cuda()) {
    if (into_big) cuda::memcpy_2d(b, row_big, p, row_part, row_part, outer, st);
    else cuda::memcpy_2d(p, row_part, b, row_big, row_part, outer, st);
    return;
  }
  for (int64_t o = 0; o < outer; ++o) {
    if (into_big) std::memcpy(b + o * row_big, p + o * row_part, row_part);
    else std::memcpy(p + o * row_part, b + o * row_big, row_part);
  }
}

void check_dim(const Meta& x, int64_t dim, const char* op) {
  HR_CHECK(dim >= 0 && dim < static_cast<int64_t>(x.shape.size()), op, ": dim ", dim,
           " out of range for ", shape_str(x.shape));
  HR_CHECK(!(x.device.is_cuda() && x.shape.size() == 4 && dim != 1), op,
           ": CUDA 4-D tensors (channels-last) concatenate along dim 1 only");
}

struct ConcatOp final : OpDef {
  int64_t dim;
  explicit ConcatOp(int64_t d) : dim(d) {}
  const char* name() const override { return "concat"; }
  std::string attributes() const override { return str_cat("dim ", dim); }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    HR_CHECK(!in.empty(), "concat: no tensors");
    const Meta& x0 = in[0];
    check_defined(x0, name(), "input 0");
    check_dim(x0, dim, name());
    Shape out = x0.shape;
    out[dim] = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      const Meta& t = in[i];
      check_defined(t, name(), "an input");
      bool ok = t.shape.size() == x0.shape.size() && t.dtype == x0.dtype && t.device == x0.device;
      for (size_t d = 0; ok && d < t.shape.size(); ++d)
        ok = static_cast<int64_t>(d) == dim || t.shape[d] == x0.shape[d];
      HR_CHECK(ok, "concat: input ", i, " ", t.str(), " does not fit input 0 ", x0.str(),
               " along dim ", dim);
      out[dim] += t.shape[dim];
    }
    return {Meta::make(out, x0.dtype, x0.device)};
  }
  void run(const KernelArgs& a) const {
    int64_t off = 0;
    for (const Tensor& t : a.in) {
      slab_copy(a.out[0], t, dim, off, true, a.stream);
      off += t.size(dim);
    }
  }
  void run_cpu(const KernelArgs& a) const override { run(a); }
  void run_cuda(const KernelArgs& a) const override { run(a); }
  std::vector<Tensor> backward(const GradArgs& a) const override {
    std::vector<int64_t> sizes;
    for (const Meta& t : a.in_meta) sizes.push_back(t.shape[dim]);
    return concat_backward(a.grad_out[0], sizes, dim, a.need);
  }
  bool saves_input(size_t) const override { return false; }
  void to_onnx(OnnxEmitter& e, const OnnxNode& n) const override {
    e.node("Concat", n.in, {n.out[0]}, {OnnxAttr::integer("axis", dim)});
  }
};

// dy -> the slabs of `sizes` along dim (those not needed absent)
struct ConcatBwdOp final : OpDef {
  std::vector<int64_t> sizes;
  int64_t dim;
  std::vector<bool> need;
  ConcatBwdOp(std::vector<int64_t> s, int64_t d, std::vector<bool> n)
      : sizes(std::move(s)), dim(d), need(std::move(n)) {}
  const char* name() const override { return "concat_backward"; }
  std::string attributes() const override { return str_cat("dim ", dim); }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    const Meta& dy = in[0];
    check_defined(dy, name(), "dy");
    check_dim(dy, dim, name());
    int64_t total = 0;
    for (int64_t s : sizes) total += s;
    HR_CHECK(total == dy.shape[dim] && need.size() == sizes.size(), name(), ": sizes do not add up to ",
             shape_str(dy.shape), " along dim ", dim);
    std::vector<Meta> out;
    for (size_t k = 0; k < sizes.size(); ++k) {
      Shape s = dy.shape;
      s[dim] = sizes[k];
      out.push_back(need[k] ? Meta::make(s, dy.dtype, dy.device) : Meta::none());
    }
    return out;
  }
  void run(const KernelArgs& a) const {
    int64_t off = 0;
    for (size_t k = 0; k < sizes.size(); ++k) {
      if (a.out[k].defined()) slab_copy(a.in[0], a.out[k], dim, off, false, a.stream);
      off += sizes[k];
    }
  }
  void run_cpu(const KernelArgs& a) const override { run(a); }
  void run_cuda(const KernelArgs& a) const override { run(a); }
};

}  // namespace

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  HR_CHECK(!xs.empty(), "concat: no tensors");
  HR_CHECK(xs[0].defined(), "concat: input 0 is undefined");
  if (dim < 0) dim += xs[0].dim();
  return hr::apply(std::make_shared<ConcatOp>(dim), xs)[0];
}

std::vector<Tensor> concat_backward(const Tensor& dy, const std::vector<int64_t>& sizes,
                                    int64_t dim, const std::vector<bool>& need) {
  return hr::apply(std::make_shared<ConcatBwdOp>(sizes, dim, need), {dy});
}

}  // namespace hr::ops
