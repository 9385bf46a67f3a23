// all_reduce_mean: a tensor averaged over the ranks of a data-parallel job (engine/dist.h): MPI on
// the CPU, NCCL (the gradients' own communicator) on CUDA. The data-parallel gradient reduction
// of compiled CUDA training graphs is made of these nodes (engine/graph/reduce.cpp).
#include "engine/dist.h"
#include "engine/ops.h"
#include "engine/ops/op_util.h"

namespace hr::ops {

using namespace detail;

namespace {

struct AllReduceMeanOp final : OpDef {
  const char* name() const override { return "all_reduce_mean"; }
  std::string attributes() const override { return str_cat(dist::world().size, " ranks"); }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_defined(in[0], name(), "input");
    HR_CHECK(in[0].dtype == DType::f32, name(), ": expected f32, got ", dtype_name(in[0].dtype));
    return {same_as(in[0])};
  }
  void run_cpu(const KernelArgs& a) const override {
    Tensor y = a.out[0];
    y.copy_(a.in[0]);
    dist::all_reduce_sum(y.data<float>(), y.numel(), "the all_reduce_mean op");
    const float s = 1.0f / static_cast<float>(dist::world().size);
    if (s != 1.0f)
      for (float *p = y.data<float>(), *e = p + y.numel(); p != e; ++p) *p *= s;
  }
  void run_cuda(const KernelArgs& a) const override {
    dist::all_reduce_mean_device(a.in[0].data<float>(), a.out[0].data<float>(), a.in[0].numel(),
                                 a.stream);
  }
  // the mean over the ranks is linear: its gradient is the mean of the ranks' gradients
  std::vector<Tensor> backward(const GradArgs& a) const override {
    return {all_reduce_mean(a.grad_out[0])};
  }
  bool saves_input(size_t) const override { return false; }
};

}  // namespace

Tensor all_reduce_mean(const Tensor& x) {
  return hr::apply(std::make_shared<AllReduceMeanOp>(), {x})[0];
}

}  // namespace hr::ops
