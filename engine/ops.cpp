// Op front-ends: validation, device dispatch, and the backward rules.
#include "engine/ops.h"

#include <cmath>
#include <cstring>

#include "engine/stream.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/fused.h"

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

namespace {

// Under autocast, a CUDA floating tensor in another dtype is cast (differentiably).
Tensor autocast(const Tensor& t) {
  if (g_autocast == DType::f32 || !t.defined() || !t.device().is_cuda() ||
      !is_floating(t.dtype()) || t.dtype() == g_autocast)
    return t;
  return cast(t, g_autocast);
}

cuda::DT dt_of(const Tensor& t, const char* op) {
  switch (t.dtype()) {
    case DType::f32: return cuda::DT::f32;
    case DType::f16: return cuda::DT::f16;
    case DType::bf16: return cuda::DT::bf16;
    default: throw Error(str_cat(op, ": unsupported dtype ", dtype_name(t.dtype())));
  }
}

// The dense layout each device's kernels take: NCHW on the CPU, NHWC (4-D) on CUDA.
MemoryFormat device_format(const Tensor& t) {
  return t.device().is_cuda() && t.dim() == 4 ? MemoryFormat::ChannelsLast
                                              : MemoryFormat::Contiguous;
}
Tensor dense(const Tensor& t) { return t.contiguous(device_format(t)); }
Tensor new_output(const Shape& shape, const Tensor& like, DType dtype) {
  MemoryFormat f = like.device().is_cuda() && shape.size() == 4 ? MemoryFormat::ChannelsLast
                                                                : MemoryFormat::Contiguous;
  return Tensor::empty(shape, dtype, like.device(), f);
}
Tensor new_output(const Shape& shape, const Tensor& like) {
  return new_output(shape, like, like.dtype());
}

void check_defined(const Tensor& t, const char* op, const char* what) {
  HR_CHECK(t.defined(), op, ": ", what, " is undefined");
}

void check_float(const Tensor& t, const char* op, const char* what) {
  HR_CHECK(t.device().is_cuda() ? is_floating(t.dtype()) : t.dtype() == DType::f32, op, ": ",
           what, " has dtype ", dtype_name(t.dtype()), ", expected ",
           t.device().is_cuda() ? "f32, f16 or bf16" : "f32 (the CPU computes in f32)");
}

void check_same_device(const Tensor& a, const Tensor& b, const char* op) {
  HR_CHECK(a.device() == b.device(), op, ": tensors on different devices (", a.device().str(),
           " and ", b.device().str(), ")");
}

void check_param(const Tensor& p, int64_t n, const Tensor& x, const char* op, const char* what) {
  HR_CHECK(p.dim() == 1 && p.size(0) == n, op, ": ", what, " has shape ", shape_str(p.shape()),
           ", expected [", n, "]");
  HR_CHECK(p.dtype() == DType::f32, op, ": ", what, " must be f32, got ", dtype_name(p.dtype()));
  check_same_device(p, x, op);
}

const float* fptr(const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }
float* fptr_mut(const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }

// Element-wise binary shape check.
void check_same(const Tensor& a, const Tensor& b, const char* op) {
  HR_CHECK(a.shape() == b.shape(), op, ": shapes ", shape_str(a.shape()), " and ",
           shape_str(b.shape()), " differ");
  HR_CHECK(a.dtype() == b.dtype(), op, ": dtypes ", dtype_name(a.dtype()), " and ",
           dtype_name(b.dtype()), " differ");
  check_same_device(a, b, op);
}

}  // namespace

// ---------------------------------------------------------------- conv2d
namespace {

kern::ConvShape conv_shape(const Tensor& x, const Tensor& w, std::array<int64_t, 2> stride,
                           std::array<int64_t, 2> padding) {
  return kern::ConvShape::make(x.size(0), x.size(1), x.size(2), x.size(3), w.size(0), w.size(2),
                               w.size(3), stride[0], stride[1], padding[0], padding[1]);
}

Tensor conv_bwd_data(const kern::ConvShape& s, const Tensor& dy, const Tensor& w, const Tensor& x) {
  Tensor dyd = dense(dy), wd = dense(w);
  Tensor dx = new_output(x.shape(), x);
  if (x.device().is_cpu())
    cpu::conv2d_backward_data(s, dyd.data<float>(), wd.data<float>(), dx.data<float>());
  else
    cuda::conv2d_backward_data(s, dt_of(x, "conv2d"), dyd.raw_data(), wd.raw_data(),
                               dx.raw_data(), current_stream());
  return dx;
}

std::pair<Tensor, Tensor> conv_bwd_weight(const kern::ConvShape& s, const Tensor& x,
                                          const Tensor& dy, const Tensor& w, bool need_bias) {
  Tensor xd = dense(x), dyd = dense(dy);
  Tensor dw = new_output(w.shape(), w);
  Tensor db = need_bias ? Tensor::empty({s.K}, DType::f32, x.device()) : Tensor();
  if (x.device().is_cpu())
    cpu::conv2d_backward_weight(s, xd.data<float>(), dyd.data<float>(), dw.data<float>(),
                                fptr_mut(db));
  else
    cuda::conv2d_backward_weight(s, dt_of(x, "conv2d"), xd.raw_data(), dyd.raw_data(),
                                 dw.raw_data(), fptr_mut(db), current_stream());
  return {dw, db};
}

}  // namespace

Tensor conv2d(const Tensor& x_in, const Tensor& w_in, const Tensor& bias,
              std::array<int64_t, 2> stride, std::array<int64_t, 2> padding) {
  const Tensor x = autocast(x_in), w = autocast(w_in);
  check_defined(x, "conv2d", "input");
  check_defined(w, "conv2d", "weight");
  HR_CHECK(x.dim() == 4, "conv2d: expected a 4-D input [N,C,H,W], got ", shape_str(x.shape()));
  HR_CHECK(w.dim() == 4, "conv2d: expected a 4-D weight [K,C,R,S], got ", shape_str(w.shape()));
  HR_CHECK(x.size(1) == w.size(1), "conv2d: input ", shape_str(x.shape()), " has ", x.size(1),
           " channels but weight ", shape_str(w.shape()), " expects ", w.size(1));
  HR_CHECK(x.dtype() == w.dtype(), "conv2d: input dtype ", dtype_name(x.dtype()),
           " differs from weight dtype ", dtype_name(w.dtype()));
  HR_CHECK(stride[0] > 0 && stride[1] > 0 && padding[0] >= 0 && padding[1] >= 0,
           "conv2d: bad stride/padding");
  check_float(x, "conv2d", "input");
  check_same_device(x, w, "conv2d");
  if (bias.defined()) check_param(bias, w.size(0), x, "conv2d", "bias");
  const kern::ConvShape s = conv_shape(x, w, stride, padding);
  HR_CHECK(s.P > 0 && s.Q > 0, "conv2d: input ", shape_str(x.shape()), " is smaller than kernel ",
           shape_str(w.shape()), " with padding ", padding[0], "x", padding[1]);

  Tensor xd = dense(x), wd = dense(w);
  Tensor y = new_output({s.N, s.K, s.P, s.Q}, x);
  if (x.device().is_cpu())
    cpu::conv2d_forward(s, xd.data<float>(), wd.data<float>(), fptr(bias), y.data<float>());
  else
    cuda::conv2d_forward(s, dt_of(x, "conv2d"), xd.raw_data(), wd.raw_data(), fptr(bias),
                         y.raw_data(), current_stream());

  if (needs_grad({x, w, bias})) {
    Tensor xs = xd.detach(), ws = wd.detach();
    bool need_x = x.requires_grad(), need_w = w.requires_grad();
    bool need_b = bias.defined() && bias.requires_grad();
    record("conv2d", {x, w, bias}, {y}, [=](const std::vector<Tensor>& g) {
      std::vector<Tensor> r(3);
      if (need_x) r[0] = conv_bwd_data(s, g[0], ws, xs);
      if (need_w || need_b) {
        auto [dw, db] = conv_bwd_weight(s, xs, g[0], ws, need_b);
        if (need_w) r[1] = dw;
        if (need_b) r[2] = db;
      }
      return r;
    });
  }
  return y;
}

// ---------------------------------------------------------------- batch norm
namespace {

// The arguments batch_norm and batch_norm_act share; `op` names the op in the errors.
void check_batch_norm_args(const char* op, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                           const Tensor& running_mean, const Tensor& running_var, bool training) {
  check_defined(x, op, "input");
  HR_CHECK(x.dim() == 4 || x.dim() == 2, op, ": expected [N,C,H,W] or [N,C], got ",
           shape_str(x.shape()));
  check_float(x, op, "input");
  const int64_t N = x.size(0), C = x.size(1);
  const int64_t HW = x.dim() == 4 ? x.size(2) * x.size(3) : 1;
  check_param(gamma, C, x, op, "weight");
  check_param(beta, C, x, op, "bias");
  if (running_mean.defined()) check_param(running_mean, C, x, op, "running_mean");
  if (running_var.defined()) check_param(running_var, C, x, op, "running_var");
  HR_CHECK(training || (running_mean.defined() && running_var.defined()), op,
           ": inference needs running statistics");
  HR_CHECK(!training || N * HW > 1, op,
           ": training needs more than one value per channel, got input ", shape_str(x.shape()));
}

// Training step counter: num_batches_tracked (i64 CPU scalar, may be undefined) += 1.
void count_batch(const Tensor& num_batches_tracked, const char* op) {
  if (!num_batches_tracked.defined()) return;
  HR_CHECK(num_batches_tracked.device().is_cpu() && num_batches_tracked.dtype() == DType::i64, op,
           ": num_batches_tracked must be an i64 CPU tensor");
  num_batches_tracked.data<int64_t>()[0] += 1;
}

}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor running_mean,
                  Tensor running_var, bool training, float momentum, float eps,
                  Tensor num_batches_tracked) {
  check_batch_norm_args("batch_norm", x, gamma, beta, running_mean, running_var, training);
  const int64_t N = x.size(0), C = x.size(1);
  const int64_t HW = x.dim() == 4 ? x.size(2) * x.size(3) : 1;

  const bool on_cpu = x.device().is_cpu();
  Tensor xd = dense(x);
  Tensor y = new_output(x.shape(), x);
  Tensor save_mean, save_invstd;
  if (training) {
    save_mean = Tensor::empty({C}, DType::f32, x.device());
    save_invstd = Tensor::empty({C}, DType::f32, x.device());
    if (on_cpu)
      cpu::batchnorm_train_forward(N, C, HW, xd.data<float>(), gamma.data<float>(),
                                   beta.data<float>(), eps, momentum, fptr_mut(running_mean),
                                   fptr_mut(running_var), y.data<float>(),
                                   save_mean.data<float>(), save_invstd.data<float>());
    else
      cuda::batchnorm_train_forward(dt_of(x, "batch_norm"), N * HW, C, xd.raw_data(),
                                    gamma.data<float>(), beta.data<float>(), eps, momentum,
                                    fptr_mut(running_mean), fptr_mut(running_var), y.raw_data(),
                                    save_mean.data<float>(), save_invstd.data<float>(),
                                    current_stream());
    count_batch(num_batches_tracked, "batch_norm");
  } else {
    if (on_cpu)
      cpu::batchnorm_infer_forward(N, C, HW, xd.data<float>(), gamma.data<float>(),
                                   beta.data<float>(), running_mean.data<float>(),
                                   running_var.data<float>(), eps, y.data<float>());
    else
      cuda::batchnorm_infer_forward(dt_of(x, "batch_norm"), N * HW, C, xd.raw_data(),
                                    gamma.data<float>(), beta.data<float>(),
                                    running_mean.data<float>(), running_var.data<float>(), eps,
                                    y.raw_data(), current_stream());
  }

  if (needs_grad({x, gamma, beta})) {
    Tensor xs = xd.detach(), gs = gamma.detach(), sm = save_mean, si = save_invstd;
    Tensor rm = training ? Tensor() : running_mean.detach().clone();
    Tensor rv = training ? Tensor() : running_var.detach().clone();
    bool need_x = x.requires_grad(), need_g = gamma.requires_grad(), need_b = beta.requires_grad();
    record("batch_norm", {x, gamma, beta}, {y}, [=](const std::vector<Tensor>& g) {
      Tensor dy = dense(g[0]);
      Tensor dx = need_x ? new_output(xs.shape(), xs) : Tensor();
      Tensor dg = need_g ? Tensor::empty({C}, DType::f32, xs.device()) : Tensor();
      Tensor db = need_b ? Tensor::empty({C}, DType::f32, xs.device()) : Tensor();
      void* dxp = dx.defined() ? dx.raw_data() : nullptr;
      if (xs.device().is_cpu()) {
        if (training)
          cpu::batchnorm_train_backward(N, C, HW, xs.data<float>(), dy.data<float>(),
                                        gs.data<float>(), sm.data<float>(), si.data<float>(),
                                        static_cast<float*>(dxp), fptr_mut(dg), fptr_mut(db));
        else
          cpu::batchnorm_infer_backward(N, C, HW, xs.data<float>(), dy.data<float>(),
                                        gs.data<float>(), rm.data<float>(), rv.data<float>(), eps,
                                        static_cast<float*>(dxp), fptr_mut(dg), fptr_mut(db));
      } else {
        cuda::DT dt = dt_of(xs, "batch_norm");
        if (training)
          cuda::batchnorm_train_backward(dt, N * HW, C, xs.raw_data(), dy.raw_data(),
                                         gs.data<float>(), sm.data<float>(), si.data<float>(), dxp,
                                         fptr_mut(dg), fptr_mut(db), current_stream());
        else
          cuda::batchnorm_infer_backward(dt, N * HW, C, xs.raw_data(), dy.raw_data(),
                                         gs.data<float>(), rm.data<float>(), rv.data<float>(),
                                         eps, dxp, fptr_mut(dg), fptr_mut(db), current_stream());
      }
      return std::vector<Tensor>{dx, dg, db};
    });
  }
  return y;
}

Tensor batch_norm_act(const Tensor& x, const Tensor& residual, bool relu, const Tensor& gamma,
                      const Tensor& beta, Tensor running_mean, Tensor running_var, bool training,
                      float momentum, float eps, Tensor num_batches_tracked) {
  const char* op = "batch_norm_act";
  check_batch_norm_args(op, x, gamma, beta, running_mean, running_var, training);
  if (residual.defined()) {
    HR_CHECK(residual.shape() == x.shape(), op, ": residual has shape ",
             shape_str(residual.shape()), ", expected the input's shape ", shape_str(x.shape()));
    HR_CHECK(residual.dtype() == x.dtype(), op, ": residual has dtype ",
             dtype_name(residual.dtype()), ", expected the input's dtype ", dtype_name(x.dtype()));
    check_same_device(residual, x, op);
  }
  const int64_t N = x.size(0), C = x.size(1);
  const int64_t HW = x.dim() == 4 ? x.size(2) * x.size(3) : 1;

  const bool on_cpu = x.device().is_cpu();
  Tensor xd = dense(x);
  Tensor rd = residual.defined() ? dense(residual) : Tensor();
  const void* rp = rd.defined() ? rd.raw_data() : nullptr;
  Tensor y = new_output(x.shape(), x);
  Tensor save_mean, save_invstd;
  if (training) {
    save_mean = Tensor::empty({C}, DType::f32, x.device());
    save_invstd = Tensor::empty({C}, DType::f32, x.device());
    if (on_cpu)
      cpu::batchnorm_act_train_forward(
          N, C, HW, xd.data<float>(), gamma.data<float>(), beta.data<float>(), eps, momentum,
          fptr_mut(running_mean), fptr_mut(running_var), static_cast<const float*>(rp), relu,
          y.data<float>(), save_mean.data<float>(), save_invstd.data<float>());
    else
      cuda::batchnorm_act_train_forward(
          dt_of(x, op), N * HW, C, xd.raw_data(), gamma.data<float>(), beta.data<float>(), eps,
          momentum, fptr_mut(running_mean), fptr_mut(running_var), rp, relu, y.raw_data(),
          save_mean.data<float>(), save_invstd.data<float>(), current_stream());
    count_batch(num_batches_tracked, op);
  } else {
    if (on_cpu)
      cpu::batchnorm_act_infer_forward(N, C, HW, xd.data<float>(), gamma.data<float>(),
                                       beta.data<float>(), running_mean.data<float>(),
                                       running_var.data<float>(), eps,
                                       static_cast<const float*>(rp), relu, y.data<float>());
    else
      cuda::batchnorm_act_infer_forward(dt_of(x, op), N * HW, C, xd.raw_data(), gamma.data<float>(),
                                        beta.data<float>(), running_mean.data<float>(),
                                        running_var.data<float>(), eps, rp, relu, y.raw_data(),
                                        current_stream());
  }

  if (needs_grad({x, residual, gamma, beta})) {
    // The ReLU mask comes from the output, so only a ReLU saves it.
    Tensor xs = xd.detach(), ys = relu ? y.detach() : Tensor(), gs = gamma.detach();
    Tensor sm = save_mean, si = save_invstd;
    Tensor rm = training ? Tensor() : running_mean.detach().clone();
    Tensor rv = training ? Tensor() : running_var.detach().clone();
    bool need_x = x.requires_grad(), need_g = gamma.requires_grad(), need_b = beta.requires_grad();
    bool need_r = residual.defined() && residual.requires_grad();
    record(op, {x, residual, gamma, beta}, {y}, [=](const std::vector<Tensor>& g) {
      Tensor dy = dense(g[0]);
      Tensor dx = need_x ? new_output(xs.shape(), xs) : Tensor();
      // Without the ReLU the residual's gradient is dy itself, as add's backward gives it.
      Tensor dr = need_r && relu ? new_output(xs.shape(), xs) : Tensor();
      Tensor dg = need_g ? Tensor::empty({C}, DType::f32, xs.device()) : Tensor();
      Tensor db = need_b ? Tensor::empty({C}, DType::f32, xs.device()) : Tensor();
      void* dxp = dx.defined() ? dx.raw_data() : nullptr;
      void* drp = dr.defined() ? dr.raw_data() : nullptr;
      if (xs.device().is_cpu()) {
        if (training)
          cpu::batchnorm_act_train_backward(N, C, HW, xs.data<float>(), fptr(ys), dy.data<float>(),
                                            gs.data<float>(), sm.data<float>(), si.data<float>(),
                                            relu, static_cast<float*>(dxp),
                                            static_cast<float*>(drp), fptr_mut(dg), fptr_mut(db));
        else
          cpu::batchnorm_act_infer_backward(N, C, HW, xs.data<float>(), fptr(ys), dy.data<float>(),
                                            gs.data<float>(), rm.data<float>(), rv.data<float>(),
                                            eps, relu, static_cast<float*>(dxp),
                                            static_cast<float*>(drp), fptr_mut(dg), fptr_mut(db));
      } else {
        cuda::DT dt = dt_of(xs, "batch_norm_act");
        if (training) {
          cuda::batchnorm_act_train_backward(
              dt, N * HW, C, xs.raw_data(), relu ? ys.raw_data() : nullptr, dy.raw_data(),
              gs.data<float>(), sm.data<float>(), si.data<float>(), relu, dxp, drp, fptr_mut(dg),
              fptr_mut(db), current_stream());
        } else {
          // Inference-mode backward (rare) has no fused kernel: relu_backward into the
          // residual's gradient (or a temporary), then the batch-norm backward of that.
          Tensor gt = dy;
          if (relu) {
            gt = dr.defined() ? dr : new_output(xs.shape(), xs);
            cuda::relu_backward(dt, xs.numel(), ys.raw_data(), dy.raw_data(), gt.raw_data(),
                                current_stream());
          }
          if (need_x || need_g || need_b)
            cuda::batchnorm_infer_backward(dt, N * HW, C, xs.raw_data(), gt.raw_data(),
                                           gs.data<float>(), rm.data<float>(), rv.data<float>(),
                                           eps, dxp, fptr_mut(dg), fptr_mut(db), current_stream());
        }
      }
      if (need_r && !relu) dr = dy;
      return std::vector<Tensor>{dx, dr, dg, db};
    });
  }
  return y;
}

// ---------------------------------------------------------------- element-wise
Tensor relu(const Tensor& x) {
  check_defined(x, "relu", "input");
  check_float(x, "relu", "input");
  Tensor xd = dense(x);
  Tensor y = new_output(x.shape(), x);
  if (x.device().is_cpu())
    cpu::relu_forward(x.numel(), xd.data<float>(), y.data<float>());
  else
    cuda::relu_forward(dt_of(x, "relu"), x.numel(), xd.raw_data(), y.raw_data(), current_stream());
  if (needs_grad({x})) {
    Tensor ys = y.detach();
    record("relu", {x}, {y}, [ys](const std::vector<Tensor>& g) {
      Tensor dy = g[0].contiguous(ys.suggest_format());
      Tensor dx = Tensor::empty(ys.shape(), ys.dtype(), ys.device(), ys.suggest_format());
      if (ys.device().is_cpu())
        cpu::relu_backward(ys.numel(), ys.data<float>(), dy.data<float>(), dx.data<float>());
      else
        cuda::relu_backward(dt_of(ys, "relu"), ys.numel(), ys.raw_data(), dy.raw_data(),
                            dx.raw_data(), current_stream());
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

Tensor add(const Tensor& a, const Tensor& b) {
  check_defined(a, "add", "first operand");
  check_defined(b, "add", "second operand");
  check_same(a, b, "add");
  check_float(a, "add", "operand");
  MemoryFormat f = a.device().is_cuda() ? a.suggest_format() : MemoryFormat::Contiguous;
  Tensor ad = a.contiguous(f), bd = b.contiguous(f);
  Tensor y = Tensor::empty(a.shape(), a.dtype(), a.device(), f);
  if (a.device().is_cpu())
    cpu::add(a.numel(), ad.data<float>(), bd.data<float>(), y.data<float>());
  else
    cuda::add(dt_of(a, "add"), a.numel(), ad.raw_data(), bd.raw_data(), y.raw_data(),
              current_stream());
  if (needs_grad({a, b}))
    record("add", {a, b}, {y}, [](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{g[0], g[0]};
    });
  return y;
}

Tensor mul(const Tensor& x, float alpha) {
  check_defined(x, "mul", "input");
  check_float(x, "mul", "input");
  MemoryFormat f = x.suggest_format();
  Tensor xd = x.contiguous(f);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device(), f);
  if (x.device().is_cpu())
    cpu::scale(x.numel(), alpha, xd.data<float>(), y.data<float>());
  else
    cuda::scale(dt_of(x, "mul"), x.numel(), alpha, xd.raw_data(), y.raw_data(), current_stream());
  if (needs_grad({x}))
    record("mul", {x}, {y}, [alpha](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{mul(g[0], alpha)};
    });
  return y;
}

Tensor sum_all(const Tensor& x) {
  check_defined(x, "sum_all", "input");
  std::vector<float> v = x.to_vector();
  double s = 0;
  for (float e : v) s += e;
  Tensor y = Tensor::from_vector({static_cast<float>(s)}, {}, DType::f32, x.device());
  if (needs_grad({x})) {
    Shape shp = x.shape();
    DType dt = x.dtype();
    Device dev = x.device();
    record("sum_all", {x}, {y}, [shp, dt, dev](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{Tensor::full(shp, g[0].item(), dt, dev)};
    });
  }
  return y;
}

// ---------------------------------------------------------------- resampling
namespace {

enum class Mode { Nearest, Bilinear };

Tensor resample(const Tensor& x, std::array<int64_t, 2> size, Mode m, bool align_corners,
                double scale_factor, const char* op) {
  check_defined(x, op, "input");
  HR_CHECK(x.dim() == 4, op, ": expected a 4-D input [N,C,H,W], got ", shape_str(x.shape()));
  check_float(x, op, "input");
  HR_CHECK(size[0] > 0 && size[1] > 0, op, ": output size ", size[0], "x", size[1],
           " must be positive (input ", shape_str(x.shape()), ")");
  // PyTorch's area_pixel_compute_scale / compute_scales_value
  const kern::ResampleShape s =
      kern::ResampleShape::make(x.size(0), x.size(1), x.size(2), x.size(3), size[0], size[1],
                                m == Mode::Bilinear, align_corners, scale_factor);

  Tensor xd = dense(x);
  Tensor y = new_output({s.N, s.C, s.OH, s.OW}, x);
  const bool on_cpu = x.device().is_cpu();
  if (m == Mode::Nearest) {
    if (on_cpu) cpu::upsample_nearest_forward(s, xd.data<float>(), y.data<float>());
    else cuda::upsample_nearest_forward(dt_of(x, op), s, xd.raw_data(), y.raw_data(), current_stream());
  } else {
    if (on_cpu) cpu::upsample_bilinear_forward(s, xd.data<float>(), y.data<float>());
    else cuda::upsample_bilinear_forward(dt_of(x, op), s, xd.raw_data(), y.raw_data(), current_stream());
  }
  if (needs_grad({x})) {
    Tensor like = xd.detach();
    std::string name = op;
    record(op, {x}, {y}, [s, m, like, name](const std::vector<Tensor>& g) {
      Tensor dy = dense(g[0]);
      Tensor dx = new_output(like.shape(), like);
      if (like.device().is_cpu()) {
        if (m == Mode::Nearest) cpu::upsample_nearest_backward(s, dy.data<float>(), dx.data<float>());
        else cpu::upsample_bilinear_backward(s, dy.data<float>(), dx.data<float>());
      } else {
        cuda::DT dt = dt_of(like, name.c_str());
        if (m == Mode::Nearest)
          cuda::upsample_nearest_backward(dt, s, dy.raw_data(), dx.raw_data(), current_stream());
        else
          cuda::upsample_bilinear_backward(dt, s, dy.raw_data(), dx.raw_data(), current_stream());
      }
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

std::array<int64_t, 2> scaled_size(const Tensor& x, double sf, const char* op) {
  HR_CHECK(sf > 0, op, ": scale factor ", sf, " must be positive");
  HR_CHECK(x.dim() == 4, op, ": expected a 4-D input [N,C,H,W], got ", shape_str(x.shape()));
  return {static_cast<int64_t>(std::floor(x.size(2) * sf)),
          static_cast<int64_t>(std::floor(x.size(3) * sf))};
}

}  // namespace

Tensor upsample_nearest(const Tensor& x, std::array<int64_t, 2> size) {
  return resample(x, size, Mode::Nearest, false, 0.0, "upsample_nearest");
}
Tensor upsample_nearest_scale(const Tensor& x, double sf) {
  return resample(x, scaled_size(x, sf, "upsample_nearest"), Mode::Nearest, false, sf,
                  "upsample_nearest");
}
Tensor upsample_bilinear(const Tensor& x, std::array<int64_t, 2> size, bool align_corners) {
  return resample(x, size, Mode::Bilinear, align_corners, 0.0, "upsample_bilinear");
}
Tensor upsample_bilinear_scale(const Tensor& x, double sf, bool align_corners) {
  return resample(x, scaled_size(x, sf, "upsample_bilinear"), Mode::Bilinear, align_corners, sf,
                  "upsample_bilinear");
}

// ---------------------------------------------------------------- concat
namespace {

// Copy `src` into the slab [offset, offset + src.size(dim)) of `dst` along `dim` (or the
// reverse when `gather` is true: dst slab -> src). Both dense in the device's format.
void slab_copy(const Tensor& big, const Tensor& part, int64_t dim, int64_t offset, bool into_big) {
  const size_t es = dtype_size(big.dtype());
  if (big.device().is_cuda() && big.dim() == 4 && dim == 1) {
    // NHWC: rows of N*H*W, channel slabs inside each row.
    const int64_t rows = big.size(0) * big.size(2) * big.size(3);
    const size_t wbig = big.size(1) * es, wpart = part.size(1) * es;
    char* b = static_cast<char*>(big.raw_data()) + offset * es;
    if (into_big)
      cuda::memcpy_2d(b, wbig, part.raw_data(), wpart, wpart, rows, current_stream());
    else
      cuda::memcpy_2d(part.raw_data(), wpart, b, wbig, wpart, rows, current_stream());
    return;
  }
  HR_CHECK(!(big.device().is_cuda() && big.dim() == 4),
           "concat: CUDA 4-D tensors concatenate along dim 1 only");
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= big.size(d);
  for (int64_t d = dim + 1; d < big.dim(); ++d) inner *= big.size(d);
  const size_t row_big = big.size(dim) * inner * es, row_part = part.size(dim) * inner * es;
  char* b = static_cast<char*>(big.raw_data()) + offset * inner * es;
  char* p = static_cast<char*>(part.raw_data());
  if (big.device().is_cuda()) {
    if (into_big) cuda::memcpy_2d(b, row_big, p, row_part, row_part, outer, current_stream());
    else cuda::memcpy_2d(p, row_part, b, row_big, row_part, outer, current_stream());
    return;
  }
  for (int64_t o = 0; o < outer; ++o) {
    if (into_big) std::memcpy(b + o * row_big, p + o * row_part, row_part);
    else std::memcpy(p + o * row_part, b + o * row_big, row_part);
  }
}

}  // namespace

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  HR_CHECK(!xs.empty(), "concat: no tensors");
  const Tensor& x0 = xs[0];
  check_defined(x0, "concat", "input 0");
  if (dim < 0) dim += x0.dim();
  HR_CHECK(dim >= 0 && dim < x0.dim(), "concat: dim out of range for ", shape_str(x0.shape()));
  Shape out = x0.shape();
  out[dim] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& t = xs[i];
    check_defined(t, "concat", "an input");
    bool ok = t.dim() == x0.dim() && t.dtype() == x0.dtype() && t.device() == x0.device();
    for (int64_t d = 0; ok && d < t.dim(); ++d) ok = d == dim || t.size(d) == x0.size(d);
    HR_CHECK(ok, "concat: input ", i, " ", t.str(), " does not fit input 0 ", x0.str(),
             " along dim ", dim);
    out[dim] += t.size(dim);
  }
  Tensor y = new_output(out, x0);
  int64_t off = 0;
  std::vector<Tensor> parts;
  for (const Tensor& t : xs) {
    Tensor td = dense(t);
    slab_copy(y, td, dim, off, true);
    parts.push_back(td.detach());
    off += t.size(dim);
  }
  if (needs_grad(xs)) {
    record("concat", xs, {y}, [parts, dim](const std::vector<Tensor>& g) {
      Tensor dy = dense(g[0]);
      std::vector<Tensor> r;
      int64_t o = 0;
      for (const Tensor& p : parts) {
        Tensor d = new_output(p.shape(), p);
        slab_copy(dy, d, dim, o, false);
        o += p.size(dim);
        r.push_back(d);
      }
      return r;
    });
  }
  return y;
}

// ---------------------------------------------------------------- pooling
Tensor avg_pool2d(const Tensor& x, std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride,
                  std::array<int64_t, 2> padding, bool count_include_pad) {
  check_defined(x, "avg_pool2d", "input");
  HR_CHECK(x.dim() == 4, "avg_pool2d: expected a 4-D input, got ", shape_str(x.shape()));
  check_float(x, "avg_pool2d", "input");
  HR_CHECK(kernel[0] > 0 && kernel[1] > 0 && stride[0] > 0 && stride[1] > 0,
           "avg_pool2d: kernel and stride must be positive");
  HR_CHECK(padding[0] * 2 <= kernel[0] && padding[1] * 2 <= kernel[1],
           "avg_pool2d: padding must be at most half the kernel");
  const kern::PoolShape s =
      kern::PoolShape::make(x.size(0), x.size(1), x.size(2), x.size(3), kernel[0], kernel[1],
                            stride[0], stride[1], padding[0], padding[1], count_include_pad);
  HR_CHECK(s.OH > 0 && s.OW > 0, "avg_pool2d: input ", shape_str(x.shape()),
           " is smaller than the kernel ", kernel[0], "x", kernel[1]);
  Tensor xd = dense(x);
  Tensor y = new_output({s.N, s.C, s.OH, s.OW}, x);
  if (x.device().is_cpu())
    cpu::avgpool2d_forward(s, xd.data<float>(), y.data<float>());
  else
    cuda::avgpool2d_forward(dt_of(x, "avg_pool2d"), s, xd.raw_data(), y.raw_data(),
                            current_stream());
  if (needs_grad({x})) {
    Tensor like = xd.detach();
    record("avg_pool2d", {x}, {y}, [s, like](const std::vector<Tensor>& g) {
      Tensor dy = dense(g[0]);
      Tensor dx = new_output(like.shape(), like);
      if (like.device().is_cpu())
        cpu::avgpool2d_backward(s, dy.data<float>(), dx.data<float>());
      else
        cuda::avgpool2d_backward(dt_of(like, "avg_pool2d"), s, dy.raw_data(), dx.raw_data(),
                                 current_stream());
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

Tensor global_avg_pool(const Tensor& x) {
  check_defined(x, "global_avg_pool", "input");
  HR_CHECK(x.dim() == 4, "global_avg_pool: expected a 4-D input, got ", shape_str(x.shape()));
  check_float(x, "global_avg_pool", "input");
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  Tensor xd = dense(x);
  Tensor y = new_output({N, C}, x);
  if (x.device().is_cpu())
    cpu::global_avgpool_forward(N, C, HW, xd.data<float>(), y.data<float>());
  else
    cuda::global_avgpool_forward(dt_of(x, "global_avg_pool"), N, C, HW, xd.raw_data(),
                                 y.raw_data(), current_stream());
  if (needs_grad({x})) {
    Tensor like = xd.detach();
    record("global_avg_pool", {x}, {y}, [like, N, C, HW](const std::vector<Tensor>& g) {
      Tensor dy = g[0].contiguous();
      Tensor dx = new_output(like.shape(), like);
      if (like.device().is_cpu())
        cpu::global_avgpool_backward(N, C, HW, dy.data<float>(), dx.data<float>());
      else
        cuda::global_avgpool_backward(dt_of(like, "global_avg_pool"), N, C, HW, dy.raw_data(),
                                      dx.raw_data(), current_stream());
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

// ---------------------------------------------------------------- linear
Tensor linear(const Tensor& x_in, const Tensor& w_in, const Tensor& bias) {
  const Tensor x = autocast(x_in), w = autocast(w_in);
  check_defined(x, "linear", "input");
  check_defined(w, "linear", "weight");
  HR_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1), "linear: input ",
           shape_str(x.shape()), " does not fit weight ", shape_str(w.shape()),
           " (expected [M,I] and [O,I])");
  HR_CHECK(x.dtype() == w.dtype(), "linear: input dtype ", dtype_name(x.dtype()),
           " differs from weight dtype ", dtype_name(w.dtype()));
  check_float(x, "linear", "input");
  check_same_device(x, w, "linear");
  const int64_t M = x.size(0), I = x.size(1), O = w.size(0);
  if (bias.defined()) check_param(bias, O, x, "linear", "bias");
  Tensor xd = x.contiguous(), wd = w.contiguous();
  Tensor y = Tensor::empty({M, O}, x.dtype(), x.device());
  if (x.device().is_cpu())
    cpu::linear_forward(M, I, O, xd.data<float>(), wd.data<float>(), fptr(bias), y.data<float>());
  else
    cuda::linear_forward(dt_of(x, "linear"), M, I, O, xd.raw_data(), wd.raw_data(), fptr(bias),
                         y.raw_data(), current_stream());
  if (needs_grad({x, w, bias})) {
    Tensor xs = xd.detach(), ws = wd.detach();
    bool nx = x.requires_grad(), nw = w.requires_grad(), nb = bias.defined() && bias.requires_grad();
    record("linear", {x, w, bias}, {y}, [=](const std::vector<Tensor>& g) {
      Tensor dy = g[0].contiguous();
      Tensor dx = nx ? Tensor::empty({M, I}, xs.dtype(), xs.device()) : Tensor();
      Tensor dw = nw ? Tensor::empty({O, I}, ws.dtype(), ws.device()) : Tensor();
      Tensor db = nb ? Tensor::empty({O}, DType::f32, xs.device()) : Tensor();
      auto p = [](const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; };
      if (xs.device().is_cpu())
        cpu::linear_backward(M, I, O, xs.data<float>(), ws.data<float>(), dy.data<float>(),
                             static_cast<float*>(p(dx)), static_cast<float*>(p(dw)), fptr_mut(db));
      else
        cuda::linear_backward(dt_of(xs, "linear"), M, I, O, xs.raw_data(), ws.raw_data(),
                              dy.raw_data(), p(dx), p(dw), fptr_mut(db), current_stream());
      return std::vector<Tensor>{dx, dw, db};
    });
  }
  return y;
}

// ---------------------------------------------------------------- shape and dtype
Tensor reshape(const Tensor& x, const Shape& shape) {
  check_defined(x, "reshape", "input");
  HR_CHECK(shape_numel(shape) == x.numel(), "reshape: cannot reshape ", shape_str(x.shape()),
           " to ", shape_str(shape));
  Tensor y = x.contiguous().view(shape).detach();
  if (needs_grad({x})) {
    Shape in = x.shape();
    record("reshape", {x}, {y}, [in](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{g[0].contiguous().view(in)};
    });
  }
  return y;
}

Tensor cast(const Tensor& x, DType dtype) {
  check_defined(x, "cast", "input");
  Tensor y = x.dtype() == dtype ? x.clone() : x.to(dtype);  // always a fresh tensor
  if (needs_grad({x})) {
    DType from = x.dtype();
    record("cast", {x}, {y}, [from](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{g[0].to(from)};
    });
  }
  return y;
}

// ---------------------------------------------------------------- losses
Tensor heatmap_loss(const Tensor& pred, const Tensor& target, const Tensor& weight) {
  check_defined(pred, "heatmap_loss", "prediction");
  HR_CHECK(pred.dim() == 4, "heatmap_loss: expected prediction [N,J,H,W], got ",
           shape_str(pred.shape()));
  HR_CHECK(target.shape() == pred.shape(), "heatmap_loss: target ", shape_str(target.shape()),
           " does not match prediction ", shape_str(pred.shape()));
  const int64_t N = pred.size(0), J = pred.size(1), HW = pred.size(2) * pred.size(3);
  HR_CHECK(weight.numel() == N * J && weight.size(0) == N && weight.size(1) == J,
           "heatmap_loss: target weight ", shape_str(weight.shape()), " does not fit [", N, ", ",
           J, "]");
  HR_CHECK(weight.dtype() == DType::f32, "heatmap_loss: target weight must be f32");
  check_float(pred, "heatmap_loss", "prediction");
  check_same_device(pred, target, "heatmap_loss");
  check_same_device(pred, weight, "heatmap_loss");
  Tensor pd = dense(pred), td = dense(target.to(pred.dtype())), wd = weight.contiguous();
  float loss;
  if (pred.device().is_cpu())
    loss = cpu::heatmap_loss_forward(N, J, HW, pd.data<float>(), td.data<float>(),
                                     wd.data<float>());
  else
    loss = cuda::heatmap_loss_forward(dt_of(pred, "heatmap_loss"), N, J, HW, pd.raw_data(),
                                      td.raw_data(), wd.data<float>(), current_stream());
  Tensor y = Tensor::from_vector({loss}, {}, DType::f32, pred.device());
  if (needs_grad({pred})) {
    Tensor ps = pd.detach(), ts = td.detach(), ws = wd.detach();
    record("heatmap_loss", {pred}, {y}, [=](const std::vector<Tensor>& g) {
      float dl = g[0].item();
      Tensor dp = new_output(ps.shape(), ps);
      if (ps.device().is_cpu())
        cpu::heatmap_loss_backward(N, J, HW, ps.data<float>(), ts.data<float>(), ws.data<float>(),
                                   dl, dp.data<float>());
      else
        cuda::heatmap_loss_backward(dt_of(ps, "heatmap_loss"), N, J, HW, ps.raw_data(),
                                    ts.raw_data(), ws.data<float>(), dl, dp.raw_data(),
                                    current_stream());
      return std::vector<Tensor>{dp};
    });
  }
  return y;
}

Tensor cross_entropy(const Tensor& logits, const Tensor& labels, int64_t ignore_index) {
  check_defined(logits, "cross_entropy", "logits");
  check_defined(labels, "cross_entropy", "labels");
  HR_CHECK(logits.dim() == 4 || logits.dim() == 2,
           "cross_entropy: expected logits [N,C,H,W] or [N,C], got ", shape_str(logits.shape()));
  const int64_t N = logits.size(0), C = logits.size(1);
  const int64_t HW = logits.dim() == 4 ? logits.size(2) * logits.size(3) : 1;
  Shape want = logits.dim() == 4 ? Shape{N, logits.size(2), logits.size(3)} : Shape{N};
  HR_CHECK(labels.shape() == want, "cross_entropy: labels ", shape_str(labels.shape()),
           " do not fit logits ", shape_str(logits.shape()), " (expected ", shape_str(want), ")");
  HR_CHECK(labels.dtype() == DType::i64, "cross_entropy: labels must be i64, got ",
           dtype_name(labels.dtype()));
  check_float(logits, "cross_entropy", "logits");
  check_same_device(logits, labels, "cross_entropy");
  Tensor ld = dense(logits), lab = labels.contiguous();
  float loss;
  if (logits.device().is_cpu())
    loss = cpu::softmax_ce_forward(N, C, HW, ld.data<float>(), lab.data<int64_t>(), ignore_index);
  else
    loss = cuda::softmax_ce_forward(dt_of(logits, "cross_entropy"), N, C, HW, ld.raw_data(),
                                    lab.data<int64_t>(), ignore_index, current_stream());
  Tensor y = Tensor::from_vector({loss}, {}, DType::f32, logits.device());
  if (needs_grad({logits})) {
    Tensor ls = ld.detach(), labs = lab.detach();
    record("cross_entropy", {logits}, {y}, [=](const std::vector<Tensor>& g) {
      float dl = g[0].item();
      Tensor dx = new_output(ls.shape(), ls);
      if (ls.device().is_cpu())
        cpu::softmax_ce_backward(N, C, HW, ls.data<float>(), labs.data<int64_t>(), ignore_index,
                                 dl, dx.data<float>());
      else
        cuda::softmax_ce_backward(dt_of(ls, "cross_entropy"), N, C, HW, ls.raw_data(),
                                  labs.data<int64_t>(), ignore_index, dl, dx.raw_data(),
                                  current_stream());
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

}  // namespace hr::ops
