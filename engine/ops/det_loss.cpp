// The FCOS detection losses (HRNet-FCOS, maskrcnn_benchmark/modeling/rpn/fcos/loss.py): the
// sigmoid focal loss of the classification branch normalised by num_pos + N, the IoU loss of the
// box regression weighted by the centerness targets, and the centerness BCE with logits over the
// positive locations; each a scalar f32 on the prediction's device, and their backward.
// Predictions may be f16/bf16 on CUDA (autocast); targets, weights and masks are f32 data.
#include <cmath>

#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/cpu_kernels.h"

namespace hr::ops {

using namespace detail;

namespace {

void check_dloss(const Meta& d, const Meta& like, const char* op) {
  check_defined(d, op, "dloss");
  HR_CHECK(d.numel() == 1 && d.dtype == DType::f32, op, ": dloss must be one f32 value, got ",
           d.str());
  check_same_device(like, d, op);
}

// An f32 operand of exactly `shape` on x's device (targets, weights, masks).
void check_f32_like(const Meta& t, const Shape& shape, const Meta& x, const char* op,
                    const char* what) {
  check_defined(t, op, what);
  HR_CHECK(t.shape == shape, op, ": ", what, " ", shape_str(t.shape), " does not fit ",
           shape_str(shape));
  HR_CHECK(t.dtype == DType::f32, op, ": ", what, " must be f32, got ", dtype_name(t.dtype));
  check_same_device(x, t, op);
}

const int64_t* labels_of(const Tensor& t) { return t.data<int64_t>(); }

// ---- sigmoid focal loss: logits [N,C,P], labels i64 [N,P]
void check_focal_args(const std::vector<Meta>& in, const char* op) {
  const Meta &logits = in[0], &labels = in[1];
  check_defined(logits, op, "logits");
  check_defined(labels, op, "labels");
  HR_CHECK(logits.shape.size() == 3 && logits.shape[1] >= 1, op,
           ": expected logits [N,C,P] with C >= 1, got ", shape_str(logits.shape));
  const Shape want{logits.shape[0], logits.shape[2]};
  HR_CHECK(labels.shape == want, op, ": labels ", shape_str(labels.shape), " do not fit logits ",
           shape_str(logits.shape), " (expected ", shape_str(want), ")");
  HR_CHECK(labels.dtype == DType::i64, op, ": labels must be i64, got ", dtype_name(labels.dtype));
  check_float(logits, op, "logits");
  check_same_device(logits, labels, op);
}

struct FocalDims {
  int64_t N, C, P;
  explicit FocalDims(const Tensor& l) : N(l.size(0)), C(l.size(1)), P(l.size(2)) {}
};

std::string focal_attributes(float gamma, float alpha) {
  return str_cat("gamma ", gamma, ", alpha ", alpha);
}

struct SigmoidFocalLossOp final : OpDef {
  float gamma, alpha;
  SigmoidFocalLossOp(float g, float a) : gamma(g), alpha(a) {}
  const char* name() const override { return "sigmoid_focal_loss"; }
  std::string attributes() const override { return focal_attributes(gamma, alpha); }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_focal_args(in, name());
    return {f32_on({}, in[0])};
  }
  void run_cpu(const KernelArgs& a) const override {
    const FocalDims d(a.in[0]);
    *fptr(a.out[0]) = cpu::sigmoid_focal_loss_forward(d.N, d.C, d.P, fptr(a.in[0]),
                                                      labels_of(a.in[1]), gamma, alpha);
  }
  // A label above C makes the loss NaN (the CPU throws).
  void run_cuda(const KernelArgs& a) const override {
    const FocalDims d(a.in[0]);
    cuda::sigmoid_focal_loss_forward_dev(dt(a.in[0], name()), d.N, d.C, d.P, a.in[0].raw_data(),
                                         labels_of(a.in[1]), gamma, alpha, fptr(a.out[0]),
                                         a.stream);
  }
  bool differentiable(size_t i) const override { return i == 0; }
  std::vector<Tensor> backward(const GradArgs& a) const override {
    return {sigmoid_focal_loss_backward(a.in[0], a.in[1], a.grad_out[0], gamma, alpha), Tensor()};
  }
};

// logits, labels, dloss -> dlogits
struct SigmoidFocalLossBwdOp final : OpDef {
  float gamma, alpha;
  SigmoidFocalLossBwdOp(float g, float a) : gamma(g), alpha(a) {}
  const char* name() const override { return "sigmoid_focal_loss_backward"; }
  std::string attributes() const override { return focal_attributes(gamma, alpha); }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_focal_args(in, name());
    check_dloss(in[2], in[0], name());
    return {same_as(in[0])};
  }
  void run_cpu(const KernelArgs& a) const override {
    const FocalDims d(a.in[0]);
    cpu::sigmoid_focal_loss_backward(d.N, d.C, d.P, fptr(a.in[0]), labels_of(a.in[1]), gamma, alpha,
                                     *fptr(a.in[2]), fptr(a.out[0]));
  }
  void run_cuda(const KernelArgs& a) const override {
    const FocalDims d(a.in[0]);
    cuda::sigmoid_focal_loss_backward_dev(dt(a.in[0], name()), d.N, d.C, d.P, a.in[0].raw_data(),
                                          labels_of(a.in[1]), gamma, alpha, fptr(a.in[2]),
                                          a.out[0].raw_data(), a.stream);
  }
};

// ---- IoU loss: pred [N,4,P], target f32 [N,4,P], weight f32 [N,P]
void check_iou_args(const std::vector<Meta>& in, const char* op) {
  const Meta& pred = in[0];
  check_defined(pred, op, "prediction");
  HR_CHECK(pred.shape.size() == 3 && pred.shape[1] == 4, op,
           ": expected prediction [N,4,P] (left, top, right, bottom), got ", shape_str(pred.shape));
  check_float(pred, op, "prediction");
  check_f32_like(in[1], pred.shape, pred, op, "target");
  check_f32_like(in[2], {pred.shape[0], pred.shape[2]}, pred, op, "weight");
}

struct IouLossOp final : OpDef {
  const char* name() const override { return "iou_loss"; }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_iou_args(in, name());
    return {f32_on({}, in[0])};
  }
  void run_cpu(const KernelArgs& a) const override {
    *fptr(a.out[0]) = cpu::iou_loss_forward(a.in[0].size(0), a.in[0].size(2), fptr(a.in[0]),
                                            fptr(a.in[1]), fptr(a.in[2]));
  }
  void run_cuda(const KernelArgs& a) const override {
    cuda::iou_loss_forward_dev(dt(a.in[0], name()), a.in[0].size(0), a.in[0].size(2),
                               a.in[0].raw_data(), fptr(a.in[1]), fptr(a.in[2]), fptr(a.out[0]),
                               a.stream);
  }
  bool differentiable(size_t i) const override { return i == 0; }
  std::vector<Tensor> backward(const GradArgs& a) const override {
    return {iou_loss_backward(a.in[0], a.in[1], a.in[2], a.grad_out[0]), Tensor(), Tensor()};
  }
};

// pred, target, weight, dloss -> dpred
struct IouLossBwdOp final : OpDef {
  const char* name() const override { return "iou_loss_backward"; }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_iou_args(in, name());
    check_dloss(in[3], in[0], name());
    return {same_as(in[0])};
  }
  void run_cpu(const KernelArgs& a) const override {
    cpu::iou_loss_backward(a.in[0].size(0), a.in[0].size(2), fptr(a.in[0]), fptr(a.in[1]),
                           fptr(a.in[2]), *fptr(a.in[3]), fptr(a.out[0]));
  }
  void run_cuda(const KernelArgs& a) const override {
    cuda::iou_loss_backward_dev(dt(a.in[0], name()), a.in[0].size(0), a.in[0].size(2),
                                a.in[0].raw_data(), fptr(a.in[1]), fptr(a.in[2]), fptr(a.in[3]),
                                a.out[0].raw_data(), a.stream);
  }
};

// ---- masked BCE with logits: logits [N,P], target, mask f32 [N,P]
void check_bce_args(const std::vector<Meta>& in, const char* op) {
  const Meta& logits = in[0];
  check_defined(logits, op, "logits");
  HR_CHECK(logits.shape.size() == 2, op, ": expected logits [N,P], got ", shape_str(logits.shape));
  check_float(logits, op, "logits");
  check_f32_like(in[1], logits.shape, logits, op, "target");
  check_f32_like(in[2], logits.shape, logits, op, "mask");
}

struct MaskedBceOp final : OpDef {
  const char* name() const override { return "masked_bce_with_logits"; }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_bce_args(in, name());
    return {f32_on({}, in[0])};
  }
  void run_cpu(const KernelArgs& a) const override {
    *fptr(a.out[0]) =
        cpu::masked_bce_forward(a.in[0].numel(), fptr(a.in[0]), fptr(a.in[1]), fptr(a.in[2]));
  }
  void run_cuda(const KernelArgs& a) const override {
    cuda::masked_bce_forward_dev(dt(a.in[0], name()), a.in[0].numel(), a.in[0].raw_data(),
                                 fptr(a.in[1]), fptr(a.in[2]), fptr(a.out[0]), a.stream);
  }
  bool differentiable(size_t i) const override { return i == 0; }
  std::vector<Tensor> backward(const GradArgs& a) const override {
    return {masked_bce_with_logits_backward(a.in[0], a.in[1], a.in[2], a.grad_out[0]), Tensor(),
            Tensor()};
  }
};

// logits, target, mask, dloss -> dlogits
struct MaskedBceBwdOp final : OpDef {
  const char* name() const override { return "masked_bce_with_logits_backward"; }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_bce_args(in, name());
    check_dloss(in[3], in[0], name());
    return {same_as(in[0])};
  }
  void run_cpu(const KernelArgs& a) const override {
    cpu::masked_bce_backward(a.in[0].numel(), fptr(a.in[0]), fptr(a.in[1]), fptr(a.in[2]),
                             *fptr(a.in[3]), fptr(a.out[0]));
  }
  void run_cuda(const KernelArgs& a) const override {
    cuda::masked_bce_backward_dev(dt(a.in[0], name()), a.in[0].numel(), a.in[0].raw_data(),
                                  fptr(a.in[1]), fptr(a.in[2]), fptr(a.in[3]), a.out[0].raw_data(),
                                  a.stream);
  }
};

// Data operands (targets, weights, masks) in f32 whatever the prediction's dtype: a floating
// tensor of another dtype is cast (not differentiated: they carry no gradient).
Tensor as_f32(const Tensor& t) {
  return t.defined() && is_floating(t.dtype()) && t.dtype() != DType::f32 ? cast(t, DType::f32) : t;
}

}  // namespace

Tensor sigmoid_focal_loss(const Tensor& logits, const Tensor& labels, float gamma, float alpha) {
  HR_CHECK(std::isfinite(gamma) && gamma >= 0.f, "sigmoid_focal_loss: gamma ", gamma,
           " must be finite and >= 0");
  HR_CHECK(std::isfinite(alpha), "sigmoid_focal_loss: alpha ", alpha, " is not finite");
  return hr::apply(std::make_shared<SigmoidFocalLossOp>(gamma, alpha), {logits, labels})[0];
}

Tensor sigmoid_focal_loss_backward(const Tensor& logits, const Tensor& labels, const Tensor& dloss,
                                   float gamma, float alpha) {
  return hr::apply(std::make_shared<SigmoidFocalLossBwdOp>(gamma, alpha),
                   {logits, labels, dloss})[0];
}

Tensor iou_loss(const Tensor& pred, const Tensor& target, const Tensor& weight) {
  return hr::apply(std::make_shared<IouLossOp>(), {pred, as_f32(target), as_f32(weight)})[0];
}

Tensor iou_loss_backward(const Tensor& pred, const Tensor& target, const Tensor& weight,
                         const Tensor& dloss) {
  return hr::apply(std::make_shared<IouLossBwdOp>(), {pred, target, weight, dloss})[0];
}

Tensor masked_bce_with_logits(const Tensor& logits, const Tensor& target, const Tensor& mask) {
  return hr::apply(std::make_shared<MaskedBceOp>(), {logits, as_f32(target), as_f32(mask)})[0];
}

Tensor masked_bce_with_logits_backward(const Tensor& logits, const Tensor& target,
                                       const Tensor& mask, const Tensor& dloss) {
  return hr::apply(std::make_shared<MaskedBceBwdOp>(), {logits, target, mask, dloss})[0];
}

}  // namespace hr::ops
