// Batch norm (with the fused residual add and ReLU), its backward, and its folding into a
// convolution for inference.
#include "engine/ops/batch_norm.h"

#include "engine/dist.h"
#include "engine/onnx_emitter.h"
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/fused.h"
#include "kernels/cuda/sync_bn.h"

namespace hr {
namespace {
thread_local bool g_sync_bn = false;
}
SyncBatchNormGuard::SyncBatchNormGuard(bool on) : prev_(g_sync_bn) { g_sync_bn = on; }
SyncBatchNormGuard::~SyncBatchNormGuard() { g_sync_bn = prev_; }
bool sync_batch_norm() { return g_sync_bn; }
}  // namespace hr

namespace hr::ops {

using namespace detail;

namespace {

// The per-channel sums of synchronised batch norm, summed over the ranks.
void reduce_bn_sums(double* sums, int64_t n) {
  dist::all_reduce_sum(sums, n, "the synchronised batch norm's all-reduce");
}

// The CUDA synchronised kernels' sums, summed over the ranks on the op's stream (NCCL).
void reduce_bn_sums_cuda(double* sums, int64_t n, cuda::Stream s) {
  dist::all_reduce_sum_device(sums, n, s);
}

// A device workspace for the synchronised kernels, returned to the allocator on the op's stream.
struct SyncWorkspace {
  void* p;
  cuda::Stream s;
  SyncWorkspace(int64_t M, int64_t C, cuda::Stream st)
      : p(cuda::alloc(cuda::syncbn_workspace_bytes(M, C), st)), s(st) {}
  ~SyncWorkspace() {
    try {
      cuda::free(p, s);
    } catch (...) {  // a destructor (may run while an exception unwinds) never throws
    }
  }
};

// x [N,C,...] as the kernels see it: CPU [N, C, HW], CUDA rows [M = N*HW, C].
struct BnDims {
  int64_t N, C, HW;
  explicit BnDims(const Shape& x) : N(x[0]), C(x[1]), HW(spatial(x)) {}
  int64_t M() const { return N * HW; }
};

// Inputs: x, y (the forward output: the ReLU mask; absent without ReLU), dy, gamma, stat_a,
// stat_b (saved mean / inverse std in training, running mean / variance in inference).
// Outputs: dx, dresidual (ReLU only), dgamma, dbeta; those not asked for are absent.
struct BatchNormBwdOp final : OpDef {
  bool training, relu;
  float eps;
  std::array<bool, 4> need;
  bool sync;
  BatchNormBwdOp(bool t, bool r, float e, std::array<bool, 4> n, bool s)
      : training(t), relu(r), eps(e), need(n), sync(s && t) {}
  const char* name() const override { return "batch_norm_backward"; }
  std::string attributes() const override {
    return str_cat(training ? "training" : "inference", relu ? ", relu" : "", sync ? ", sync" : "");
  }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    const Meta &x = in[0], &y = in[1], &dy = in[2];
    check_defined(x, name(), "input");
    check_defined(dy, name(), "dy");
    HR_CHECK(x.shape.size() == 4 || x.shape.size() == 2, name(), ": expected [N,C,H,W] or [N,C], got ",
             shape_str(x.shape));
    check_same(x, dy, name());
    HR_CHECK(!relu || y.defined, name(), ": the ReLU mask needs the forward output");
    if (relu) check_same(x, y, name());
    check_float(x, name(), "input");
    const int64_t C = x.shape[1];
    check_param(in[3], C, x, name(), "weight");
    check_param(in[4], C, x, name(), training ? "saved mean" : "running_mean");
    check_param(in[5], C, x, name(), training ? "saved inverse std" : "running_var");
    return {need[0] ? same_as(x) : Meta::none(), need[1] && relu ? same_as(x) : Meta::none(),
            need[2] ? f32_on({C}, x) : Meta::none(), need[3] ? f32_on({C}, x) : Meta::none()};
  }
  void run_cpu(const KernelArgs& a) const override {
    const BnDims d(a.in[0].shape());
    const float *x = fptr(a.in[0]), *y = fptr(a.in[1]), *dy = fptr(a.in[2]), *g = fptr(a.in[3]);
    if (sync)
      cpu::batchnorm_act_train_backward_sync(d.N, d.C, d.HW, x, y, dy, g, fptr(a.in[4]),
                                             fptr(a.in[5]), relu, fptr(a.out[0]), fptr(a.out[1]),
                                             fptr(a.out[2]), fptr(a.out[3]), reduce_bn_sums);
    else if (training)
      cpu::batchnorm_act_train_backward(d.N, d.C, d.HW, x, y, dy, g, fptr(a.in[4]),
                                        fptr(a.in[5]), relu, fptr(a.out[0]), fptr(a.out[1]),
                                        fptr(a.out[2]), fptr(a.out[3]));
    else
      cpu::batchnorm_act_infer_backward(d.N, d.C, d.HW, x, y, dy, g, fptr(a.in[4]), fptr(a.in[5]),
                                        eps, relu, fptr(a.out[0]), fptr(a.out[1]),
                                        fptr(a.out[2]), fptr(a.out[3]));
  }
  void run_cuda(const KernelArgs& a) const override {
    const BnDims d(a.in[0].shape());
    const cuda::DT t = dt(a.in[0], name());
    if (sync) {
      SyncWorkspace ws(d.M(), d.C, a.stream);
      double* sums = cuda::syncbn_backward_sums(t, d.M(), d.C, vptr(a.in[0]), vptr(a.in[1]),
                                                vptr(a.in[2]), fptr(a.in[4]), fptr(a.in[5]), relu,
                                                vptr(a.out[1]), fptr(a.out[2]), fptr(a.out[3]), ws.p,
                                                a.stream);
      reduce_bn_sums_cuda(sums, 2 * d.C + 1, a.stream);  // every rank, whatever it needs
      cuda::syncbn_backward_dx(t, d.M(), d.C, vptr(a.in[0]), vptr(a.in[1]), vptr(a.in[2]),
                               fptr(a.in[3]), fptr(a.in[4]), fptr(a.in[5]), relu, vptr(a.out[0]),
                               ws.p, a.stream);
      return;
    }
    if (training) {
      cuda::batchnorm_act_train_backward(t, d.M(), d.C, vptr(a.in[0]), vptr(a.in[1]),
                                         vptr(a.in[2]), fptr(a.in[3]), fptr(a.in[4]),
                                         fptr(a.in[5]), relu, vptr(a.out[0]), vptr(a.out[1]),
                                         fptr(a.out[2]), fptr(a.out[3]), a.stream);
      return;
    }
    // inference backward (rare; no fused kernel): the ReLU mask into dresidual (or a temporary),
    // then the batch-norm backward of that
    Tensor g = a.in[2];
    if (relu) {
      g = a.out[1].defined() ? a.out[1] : Tensor::empty(a.in[0].shape(), a.in[0].dtype(),
                                                         a.in[0].device(), a.in[0].suggest_format());
      cuda::relu_backward(t, g.numel(), a.in[1].raw_data(), a.in[2].raw_data(), g.raw_data(),
                          a.stream);
    }
    if (need[0] || need[2] || need[3])
      cuda::batchnorm_infer_backward(t, d.M(), d.C, vptr(a.in[0]), g.raw_data(), fptr(a.in[3]),
                                     fptr(a.in[4]), fptr(a.in[5]), eps, vptr(a.out[0]),
                                     fptr(a.out[2]), fptr(a.out[3]), a.stream);
  }
};

// w [K,...] (any float dtype), b f32 [K] or absent, gamma, beta, running mean and variance f32
// [K] -> w' like w, b' f32 [K]
struct FoldBatchNormOp final : OpDef {
  float eps;
  explicit FoldBatchNormOp(float e) : eps(e) {}
  const char* name() const override { return "fold_batch_norm"; }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    const Meta& w = in[0];
    check_defined(w, name(), "weight");
    HR_CHECK(w.shape.size() >= 1 && w.shape[0] > 0, name(), ": bad weight ", shape_str(w.shape));
    check_float(w, name(), "weight");
    const int64_t K = w.shape[0];
    if (in[1].defined) check_param(in[1], K, w, name(), "bias");
    const char* names[4] = {"bn weight", "bn bias", "running_mean", "running_var"};
    for (int i = 0; i < 4; ++i) check_param(in[2 + i], K, w, name(), names[i]);
    return {same_as(w), f32_on({K}, w)};
  }
  void run_cpu(const KernelArgs& a) const override {
    const int64_t K = a.in[0].size(0), inner = a.in[0].numel() / K;
    cpu::fold_batch_norm(K, inner, fptr(a.in[0]), fptr(a.in[1]), fptr(a.in[2]), fptr(a.in[3]),
                         fptr(a.in[4]), fptr(a.in[5]), eps, fptr(a.out[0]), fptr(a.out[1]));
  }
  void run_cuda(const KernelArgs& a) const override {
    const int64_t K = a.in[0].size(0), inner = a.in[0].numel() / K;
    cuda::fold_batch_norm(dt(a.in[0], name()), K, inner, a.in[0].raw_data(), fptr(a.in[1]),
                          fptr(a.in[2]), fptr(a.in[3]), fptr(a.in[4]), fptr(a.in[5]), eps,
                          a.out[0].raw_data(), fptr(a.out[1]), a.stream);
  }
};

OpPtr make_bn(bool training, bool relu, float momentum, float eps, const Tensor& counter,
              bool fused) {
  const char* op = fused ? "batch_norm_act" : "batch_norm";
  if (training && counter.defined())
    HR_CHECK(counter.device().is_cpu() && counter.dtype() == DType::i64 && counter.numel() == 1,
             op, ": num_batches_tracked must be an i64 CPU scalar, got ", counter.str());
  auto bn = std::make_shared<BatchNormOp>();
  bn->training = training;
  bn->relu = relu;
  bn->fused = fused;
  bn->momentum = momentum;
  bn->eps = eps;
  if (training) bn->num_batches_tracked = counter;
  bn->sync = training && sync_batch_norm();
  return bn;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
const char* BatchNormOp::name() const { return fused ? "batch_norm_act" : "batch_norm"; }

std::string BatchNormOp::attributes() const {
  return str_cat(training ? "training" : "inference", relu ? ", relu" : "", sync ? ", sync" : "",
                 ", eps ", eps);
}

std::vector<Meta> BatchNormOp::infer(const std::vector<Meta>& in) const {
  const char* op = name();
  const Meta& x = in[0];
  check_defined(x, op, "input");
  HR_CHECK(x.shape.size() == 4 || x.shape.size() == 2, op, ": expected [N,C,H,W] or [N,C], got ",
           shape_str(x.shape));
  check_float(x, op, "input");
  const int64_t C = x.shape[1];
  check_param(in[1], C, x, op, "weight");
  check_param(in[2], C, x, op, "bias");
  if (in[3].defined) check_param(in[3], C, x, op, "running_mean");
  if (in[4].defined) check_param(in[4], C, x, op, "running_var");
  HR_CHECK(training || (in[3].defined && in[4].defined), op,
           ": inference needs running statistics");
  HR_CHECK(!training || x.shape[0] * spatial(x.shape) > 1, op,
           ": training needs more than one value per channel, got input ", shape_str(x.shape));
  if (in[5].defined) {
    const Meta& r = in[5];
    HR_CHECK(r.shape == x.shape, op, ": residual has shape ", shape_str(r.shape),
             ", expected the input's shape ", shape_str(x.shape));
    HR_CHECK(r.dtype == x.dtype, op, ": residual has dtype ", dtype_name(r.dtype),
             ", expected the input's dtype ", dtype_name(x.dtype));
    check_same_device(r, x, op);
  }
  if (!training) return {same_as(x)};
  return {same_as(x), f32_on({C}, x), f32_on({C}, x)};
}

void BatchNormOp::run_cpu(const KernelArgs& a) const {
  const BnDims d(a.in[0].shape());
  if (training && sync)
    cpu::batchnorm_act_train_forward_sync(d.N, d.C, d.HW, fptr(a.in[0]), fptr(a.in[1]),
                                          fptr(a.in[2]), eps, momentum, fptr(a.in[3]),
                                          fptr(a.in[4]), fptr(a.in[5]), relu, fptr(a.out[0]),
                                          fptr(a.out[1]), fptr(a.out[2]), reduce_bn_sums);
  else if (training)
    cpu::batchnorm_act_train_forward(d.N, d.C, d.HW, fptr(a.in[0]), fptr(a.in[1]), fptr(a.in[2]),
                                     eps, momentum, fptr(a.in[3]), fptr(a.in[4]), fptr(a.in[5]),
                                     relu, fptr(a.out[0]), fptr(a.out[1]), fptr(a.out[2]));
  else
    cpu::batchnorm_act_infer_forward(d.N, d.C, d.HW, fptr(a.in[0]), fptr(a.in[1]), fptr(a.in[2]),
                                     fptr(a.in[3]), fptr(a.in[4]), eps, fptr(a.in[5]), relu,
                                     fptr(a.out[0]));
}

void BatchNormOp::run_cuda(const KernelArgs& a) const {
  const BnDims d(a.in[0].shape());
  const cuda::DT t = dt(a.in[0], name());
  if (training && sync) {
    SyncWorkspace ws(d.M(), d.C, a.stream);
    reduce_bn_sums_cuda(cuda::syncbn_forward_sums(t, d.M(), d.C, vptr(a.in[0]), ws.p, a.stream),
                        d.C + 1, a.stream);
    reduce_bn_sums_cuda(cuda::syncbn_forward_sq(t, d.M(), d.C, vptr(a.in[0]), ws.p, a.stream), d.C,
                        a.stream);
    cuda::syncbn_forward_apply(t, d.M(), d.C, vptr(a.in[0]), fptr(a.in[1]), fptr(a.in[2]), eps,
                               momentum, fptr(a.in[3]), fptr(a.in[4]), vptr(a.in[5]), relu,
                               vptr(a.out[0]), fptr(a.out[1]), fptr(a.out[2]), ws.p, a.stream);
    return;
  }
  if (training)
    cuda::batchnorm_act_train_forward(t, d.M(), d.C, vptr(a.in[0]), fptr(a.in[1]), fptr(a.in[2]),
                                      eps, momentum, fptr(a.in[3]), fptr(a.in[4]), vptr(a.in[5]),
                                      relu, vptr(a.out[0]), fptr(a.out[1]), fptr(a.out[2]),
                                      a.stream);
  else
    cuda::batchnorm_act_infer_forward(t, d.M(), d.C, vptr(a.in[0]), fptr(a.in[1]), fptr(a.in[2]),
                                      fptr(a.in[3]), fptr(a.in[4]), eps, vptr(a.in[5]), relu,
                                      vptr(a.out[0]), a.stream);
}

void BatchNormOp::on_run() const {
  if (training && num_batches_tracked.defined()) num_batches_tracked.data<int64_t>()[0] += 1;
}

std::vector<Tensor> BatchNormOp::backward(const GradArgs& a) const {
  const bool need_res = a.in.size() > 5 && a.need[5];
  const Tensor& dy = a.grad_out[0];
  const Tensor stat_a = training ? a.out[1] : a.in[3], stat_b = training ? a.out[2] : a.in[4];
  auto [dx, dres, dg, db] =
      batch_norm_backward(a.in[0], relu ? a.out[0] : Tensor(), dy, a.in[1], stat_a, stat_b,
                          training, relu, eps, {a.need[0], need_res && relu, a.need[1], a.need[2]},
                          sync);
  // without the ReLU the residual's gradient is dy itself, as add's backward gives it
  return {dx, dg, db, Tensor(), Tensor(), need_res ? (relu ? dres : dy) : Tensor()};
}

// Inference: BatchNormalization with the running statistics, then the fused residual Add and
// Relu as their own nodes (runtimes fuse them again).
void BatchNormOp::to_onnx(OnnxEmitter& e, const OnnxNode& n) const {
  HR_CHECK(!training, name(),
           ": batch norm in training mode has no ONNX export (export the "
           "model in eval mode)");
  const bool residual = !n.in[5].empty();
  std::string y = residual || relu ? e.fresh("batch_norm") : n.out[0];
  e.node("BatchNormalization", {n.in[0], n.in[1], n.in[2], n.in[3], n.in[4]}, {y},
         {OnnxAttr::real("epsilon", eps), OnnxAttr::real("momentum", 1.f - momentum)});
  if (residual) {
    const std::string s = relu ? e.fresh("add") : n.out[0];
    e.node("Add", {y, n.in[5]}, {s});
    y = s;
  }
  if (relu) e.node("Relu", {y}, {n.out[0]});
}

// ---------------------------------------------------------------------------------------------
Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor running_mean,
                  Tensor running_var, bool training, float momentum, float eps,
                  Tensor num_batches_tracked) {
  return hr::apply(make_bn(training, false, momentum, eps, num_batches_tracked, false),
               {x, gamma, beta, running_mean, running_var, Tensor()})[0];
}

Tensor batch_norm_act(const Tensor& x, const Tensor& residual, bool relu, const Tensor& gamma,
                      const Tensor& beta, Tensor running_mean, Tensor running_var, bool training,
                      float momentum, float eps, Tensor num_batches_tracked) {
  return hr::apply(make_bn(training, relu, momentum, eps, num_batches_tracked, true),
               {x, gamma, beta, running_mean, running_var, residual})[0];
}

std::array<Tensor, 4> batch_norm_backward(const Tensor& x, const Tensor& y, const Tensor& dy,
                                          const Tensor& gamma, const Tensor& stat_a,
                                          const Tensor& stat_b, bool training, bool relu,
                                          float eps, std::array<bool, 4> need, bool sync) {
  auto r = hr::apply(std::make_shared<BatchNormBwdOp>(training, relu, eps, need, sync),
                 {x, relu ? y : Tensor(), dy, gamma, stat_a, stat_b});
  return {r[0], r[1], r[2], r[3]};
}

std::array<Tensor, 2> fold_batch_norm(const Tensor& w, const Tensor& b, const Tensor& gamma,
                                      const Tensor& beta, const Tensor& running_mean,
                                      const Tensor& running_var, float eps) {
  auto r = hr::apply(std::make_shared<FoldBatchNormOp>(eps),
                 {w, b, gamma, beta, running_mean, running_var});
  return {r[0], r[1]};
}

}  // namespace hr::ops
