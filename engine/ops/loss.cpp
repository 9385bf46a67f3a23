// The training losses: HRNet's JointsMSELoss with target weights, softmax cross-entropy with an
// ignore label and optional class weights, and the OHEM cross-entropy of HRNet-Semantic-
// Segmentation; each a scalar f32 on the prediction's device, and their backward.
#include <algorithm>
#include <cmath>

#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/cpu_kernels.h"

namespace hr::ops {

using namespace detail;

namespace {

// pred, target [N,J,H,W]; weight f32 [N,J] or [N,J,1]
void check_heatmap_args(const std::vector<Meta>& in, const char* op) {
  const Meta &pred = in[0], &target = in[1], &weight = in[2];
  check_defined(pred, op, "prediction");
  check_defined(target, op, "target");
  check_defined(weight, op, "target weight");
  HR_CHECK(pred.shape.size() == 4, op, ": expected prediction [N,J,H,W], got ",
           shape_str(pred.shape));
  HR_CHECK(target.shape == pred.shape, op, ": target ", shape_str(target.shape),
           " does not match prediction ", shape_str(pred.shape));
  HR_CHECK(target.dtype == pred.dtype, op, ": target dtype ", dtype_name(target.dtype),
           " differs from the prediction's ", dtype_name(pred.dtype));
  const int64_t N = pred.shape[0], J = pred.shape[1];
  HR_CHECK(weight.shape.size() >= 2 && weight.numel() == N * J && weight.shape[0] == N &&
               weight.shape[1] == J,
           op, ": target weight ", shape_str(weight.shape), " does not fit [", N, ", ", J, "]");
  HR_CHECK(weight.dtype == DType::f32, op, ": target weight must be f32");
  check_float(pred, op, "prediction");
  check_same_device(pred, target, op);
  check_same_device(pred, weight, op);
}

struct HeatmapDims {
  int64_t N, J, HW;
  explicit HeatmapDims(const Tensor& p) : N(p.size(0)), J(p.size(1)), HW(spatial(p.shape())) {}
};

struct HeatmapLossOp final : OpDef {
  const char* name() const override { return "heatmap_loss"; }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_heatmap_args(in, name());
    return {f32_on({}, in[0])};
  }
  void run_cpu(const KernelArgs& a) const override {
    const HeatmapDims d(a.in[0]);
    *fptr(a.out[0]) =
        cpu::heatmap_loss_forward(d.N, d.J, d.HW, fptr(a.in[0]), fptr(a.in[1]), fptr(a.in[2]));
  }
  void run_cuda(const KernelArgs& a) const override {
    const HeatmapDims d(a.in[0]);
    cuda::heatmap_loss_forward_dev(dt(a.in[0], name()), d.N, d.J, d.HW, a.in[0].raw_data(),
                                   a.in[1].raw_data(), fptr(a.in[2]), fptr(a.out[0]), a.stream);
  }
  bool differentiable(size_t i) const override { return i == 0; }
  std::vector<Tensor> backward(const GradArgs& a) const override {
    return {heatmap_loss_backward(a.in[0], a.in[1], a.in[2], a.grad_out[0]), Tensor(), Tensor()};
  }
};

// pred, target, weight as the forward; dloss a scalar f32 -> dpred
struct HeatmapLossBwdOp final : OpDef {
  const char* name() const override { return "heatmap_loss_backward"; }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_heatmap_args(in, name());
    check_defined(in[3], name(), "dloss");
    HR_CHECK(in[3].numel() == 1 && in[3].dtype == DType::f32, name(),
             ": dloss must be one f32 value, got ", in[3].str());
    return {same_as(in[0])};
  }
  void run_cpu(const KernelArgs& a) const override {
    const HeatmapDims d(a.in[0]);
    cpu::heatmap_loss_backward(d.N, d.J, d.HW, fptr(a.in[0]), fptr(a.in[1]), fptr(a.in[2]),
                               *fptr(a.in[3]), fptr(a.out[0]));
  }
  void run_cuda(const KernelArgs& a) const override {
    const HeatmapDims d(a.in[0]);
    cuda::heatmap_loss_backward_dev(dt(a.in[0], name()), d.N, d.J, d.HW, a.in[0].raw_data(),
                                    a.in[1].raw_data(), fptr(a.in[2]), fptr(a.in[3]),
                                    a.out[0].raw_data(), a.stream);
  }
};

// logits [N,C,H,W] or [N,C]; labels i64 [N,H,W] or [N]
void check_ce_args(const std::vector<Meta>& in, const char* op) {
  const Meta &logits = in[0], &labels = in[1];
  check_defined(logits, op, "logits");
  check_defined(labels, op, "labels");
  HR_CHECK(logits.shape.size() == 4 || logits.shape.size() == 2, op,
           ": expected logits [N,C,H,W] or [N,C], got ", shape_str(logits.shape));
  const Shape& l = logits.shape;
  const Shape want = l.size() == 4 ? Shape{l[0], l[2], l[3]} : Shape{l[0]};
  HR_CHECK(labels.shape == want, op, ": labels ", shape_str(labels.shape), " do not fit logits ",
           shape_str(l), " (expected ", shape_str(want), ")");
  HR_CHECK(labels.dtype == DType::i64, op, ": labels must be i64, got ",
           dtype_name(labels.dtype));
  check_float(logits, op, "logits");
  check_same_device(logits, labels, op);
}

// An optional class weight: f32 [C] on the logits' device (undefined: unweighted).
void check_class_weight(const Meta& w, const Meta& logits, const char* op) {
  if (!w.defined) return;
  const int64_t C = logits.shape[1];
  HR_CHECK(w.shape.size() == 1 && w.shape[0] == C, op, ": class weight ", shape_str(w.shape),
           " does not fit logits ", shape_str(logits.shape), " (expected [", C, "])");
  HR_CHECK(w.dtype == DType::f32, op, ": class weight must be f32, got ", dtype_name(w.dtype));
  HR_CHECK(w.device == logits.device, op, ": class weight on ", w.device.str(),
           ", logits on ", logits.device.str());
}

struct CeDims {
  int64_t N, C, HW;
  explicit CeDims(const Tensor& l) : N(l.size(0)), C(l.size(1)), HW(spatial(l.shape())) {}
};

const int64_t* labels_of(const Tensor& t) { return t.data<int64_t>(); }

std::string ce_attributes(int64_t ignore_index, float smoothing) {
  return str_cat("ignore ", ignore_index, smoothing > 0 ? str_cat(", label smoothing ", smoothing) : "");
}

struct CrossEntropyOp final : OpDef {
  int64_t ignore_index;
  float smoothing;
  CrossEntropyOp(int64_t ig, float sm) : ignore_index(ig), smoothing(sm) {}
  const char* name() const override { return "cross_entropy"; }
  std::string attributes() const override { return ce_attributes(ignore_index, smoothing); }
  // logits, labels, class weight (may be undefined)
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_ce_args(in, name());
    check_class_weight(in[2], in[0], name());
    return {f32_on({}, in[0])};
  }
  void run_cpu(const KernelArgs& a) const override {
    const CeDims d(a.in[0]);
    *fptr(a.out[0]) = cpu::softmax_ce_forward(d.N, d.C, d.HW, fptr(a.in[0]), labels_of(a.in[1]),
                                              ignore_index, smoothing, fptr(a.in[2]));
  }
  // A label outside [0, C) that is not ignore_index makes the loss NaN (the CPU throws).
  void run_cuda(const KernelArgs& a) const override {
    const CeDims d(a.in[0]);
    cuda::softmax_ce_forward_dev(dt(a.in[0], name()), d.N, d.C, d.HW, a.in[0].raw_data(),
                                 labels_of(a.in[1]), ignore_index, fptr(a.out[0]), a.stream,
                                 smoothing, fptr(a.in[2]));
  }
  bool differentiable(size_t i) const override { return i == 0; }
  std::vector<Tensor> backward(const GradArgs& a) const override {
    return {cross_entropy_backward(a.in[0], a.in[1], a.grad_out[0], ignore_index, smoothing,
                                   a.in[2]),
            Tensor(), Tensor()};
  }
};

struct CrossEntropyBwdOp final : OpDef {
  int64_t ignore_index;
  float smoothing;
  CrossEntropyBwdOp(int64_t ig, float sm) : ignore_index(ig), smoothing(sm) {}
  const char* name() const override { return "cross_entropy_backward"; }
  std::string attributes() const override { return ce_attributes(ignore_index, smoothing); }
  // logits, labels, dloss, class weight (may be undefined)
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_ce_args(in, name());
    check_defined(in[2], name(), "dloss");
    HR_CHECK(in[2].numel() == 1 && in[2].dtype == DType::f32, name(),
             ": dloss must be one f32 value, got ", in[2].str());
    check_class_weight(in[3], in[0], name());
    return {same_as(in[0])};
  }
  void run_cpu(const KernelArgs& a) const override {
    const CeDims d(a.in[0]);
    cpu::softmax_ce_backward(d.N, d.C, d.HW, fptr(a.in[0]), labels_of(a.in[1]), ignore_index,
                             *fptr(a.in[2]), fptr(a.out[0]), smoothing, fptr(a.in[3]));
  }
  void run_cuda(const KernelArgs& a) const override {
    const CeDims d(a.in[0]);
    cuda::softmax_ce_backward_dev(dt(a.in[0], name()), d.N, d.C, d.HW, a.in[0].raw_data(),
                                  labels_of(a.in[1]), ignore_index, fptr(a.in[2]),
                                  a.out[0].raw_data(), a.stream, smoothing, fptr(a.in[3]));
  }
};

std::string ohem_attributes(int64_t ignore_index, float thresh, int64_t min_kept) {
  return str_cat("ignore ", ignore_index, ", thresh ", thresh, ", min kept ", min_kept);
}

// logits, labels, class weight (may be undefined) -> {loss, threshold}: the threshold of the
// selection (one f32), kept for the backward.
struct OhemCrossEntropyOp final : OpDef {
  int64_t ignore_index;
  float thresh;
  int64_t min_kept;
  OhemCrossEntropyOp(int64_t ig, float th, int64_t mk) : ignore_index(ig), thresh(th), min_kept(mk) {}
  const char* name() const override { return "ohem_cross_entropy"; }
  std::string attributes() const override {
    return ohem_attributes(ignore_index, thresh, min_kept);
  }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_ce_args(in, name());
    check_class_weight(in[2], in[0], name());
    return {f32_on({}, in[0]), f32_on({}, in[0])};
  }
  void run_cpu(const KernelArgs& a) const override {
    const CeDims d(a.in[0]);
    *fptr(a.out[0]) =
        cpu::ohem_ce_forward(d.N, d.C, d.HW, fptr(a.in[0]), labels_of(a.in[1]), ignore_index,
                             thresh, min_kept, fptr(a.in[2]), fptr(a.out[1]));
  }
  // A label outside [0, C) that is not ignore_index makes the loss NaN (the CPU throws).
  void run_cuda(const KernelArgs& a) const override {
    const CeDims d(a.in[0]);
    cuda::ohem_ce_forward_dev(dt(a.in[0], name()), d.N, d.C, d.HW, a.in[0].raw_data(),
                              labels_of(a.in[1]), ignore_index, thresh, min_kept, fptr(a.in[2]),
                              fptr(a.out[0]), fptr(a.out[1]), a.stream);
  }
  bool differentiable(size_t i) const override { return i == 0; }
  bool saves_output(size_t i) const override { return i == 1; }
  std::vector<Tensor> backward(const GradArgs& a) const override {
    return {ohem_cross_entropy_backward(a.in[0], a.in[1], a.in[2], a.out[1], a.grad_out[0],
                                        ignore_index),
            Tensor(), Tensor()};
  }
};

// logits, labels, class weight (may be undefined), threshold, dloss -> dlogits
struct OhemCrossEntropyBwdOp final : OpDef {
  int64_t ignore_index;
  explicit OhemCrossEntropyBwdOp(int64_t ig) : ignore_index(ig) {}
  const char* name() const override { return "ohem_cross_entropy_backward"; }
  std::string attributes() const override { return str_cat("ignore ", ignore_index); }
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_ce_args(in, name());
    check_class_weight(in[2], in[0], name());
    for (size_t i : {size_t(3), size_t(4)}) {
      const char* what = i == 3 ? "threshold" : "dloss";
      check_defined(in[i], name(), what);
      HR_CHECK(in[i].numel() == 1 && in[i].dtype == DType::f32, name(), ": ", what,
               " must be one f32 value, got ", in[i].str());
      check_same_device(in[0], in[i], name());
    }
    return {same_as(in[0])};
  }
  void run_cpu(const KernelArgs& a) const override {
    const CeDims d(a.in[0]);
    cpu::ohem_ce_backward(d.N, d.C, d.HW, fptr(a.in[0]), labels_of(a.in[1]), ignore_index,
                          fptr(a.in[2]), *fptr(a.in[3]), *fptr(a.in[4]), fptr(a.out[0]));
  }
  void run_cuda(const KernelArgs& a) const override {
    const CeDims d(a.in[0]);
    cuda::ohem_ce_backward_dev(dt(a.in[0], name()), d.N, d.C, d.HW, a.in[0].raw_data(),
                               labels_of(a.in[1]), ignore_index, fptr(a.in[2]), fptr(a.in[3]),
                               fptr(a.in[4]), a.out[0].raw_data(), a.stream);
  }
};

}  // namespace

Tensor heatmap_loss(const Tensor& pred, const Tensor& target, const Tensor& weight) {
  // the target in the prediction's dtype (mixed precision: bf16 heatmaps against f32 targets)
  const Tensor t = pred.defined() && target.defined() && target.dtype() != pred.dtype()
                       ? cast(target, pred.dtype())
                       : target;
  return hr::apply(std::make_shared<HeatmapLossOp>(), {pred, t, weight})[0];
}

Tensor heatmap_loss_backward(const Tensor& pred, const Tensor& target, const Tensor& weight,
                             const Tensor& dloss) {
  return hr::apply(std::make_shared<HeatmapLossBwdOp>(), {pred, target, weight, dloss})[0];
}

Tensor cross_entropy(const Tensor& logits, const Tensor& labels, int64_t ignore_index,
                     float label_smoothing, const Tensor& class_weight) {
  HR_CHECK(label_smoothing >= 0.f && label_smoothing <= 1.f,
           "cross_entropy: label smoothing ", label_smoothing, " outside [0, 1]");
  return hr::apply(std::make_shared<CrossEntropyOp>(ignore_index, label_smoothing),
                   {logits, labels, class_weight})[0];
}

Tensor cross_entropy_backward(const Tensor& logits, const Tensor& labels, const Tensor& dloss,
                              int64_t ignore_index, float label_smoothing,
                              const Tensor& class_weight) {
  return hr::apply(std::make_shared<CrossEntropyBwdOp>(ignore_index, label_smoothing),
                   {logits, labels, dloss, class_weight})[0];
}

Tensor ohem_cross_entropy(const Tensor& logits, const Tensor& labels, int64_t ignore_index,
                          float thresh, int64_t min_kept, const Tensor& class_weight) {
  HR_CHECK(std::isfinite(thresh), "ohem_cross_entropy: threshold ", thresh, " is not finite");
  // OhemCrossEntropy's constructor: self.min_kept = max(1, min_kept)
  return hr::apply(std::make_shared<OhemCrossEntropyOp>(ignore_index, thresh,
                                                        std::max<int64_t>(1, min_kept)),
                   {logits, labels, class_weight})[0];
}

Tensor ohem_cross_entropy_backward(const Tensor& logits, const Tensor& labels,
                                   const Tensor& class_weight, const Tensor& threshold,
                                   const Tensor& dloss, int64_t ignore_index) {
  return hr::apply(std::make_shared<OhemCrossEntropyBwdOp>(ignore_index),
                   {logits, labels, class_weight, threshold, dloss})[0];
}

}  // namespace hr::ops
