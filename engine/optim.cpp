// SGD, Adam/AdamW and the learning-rate schedules.
#include "engine/optim.h"

#include <algorithm>
#include <cmath>

#include "engine/stream.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/optim_math.h"

namespace hr {

Optimizer::Optimizer(std::vector<Tensor> params, double lr) : params_(std::move(params)), lr_(lr) {
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    HR_CHECK(p.defined() && p.dtype() == DType::f32, "optimizer: parameter ", i,
             " must be an f32 tensor (keep fp32 master weights), got ", p.str());
    HR_CHECK(p.is_contiguous(p.suggest_format()), "optimizer: parameter ", i, " is not dense");
  }
  slots_.resize(params_.size());
  copies_.resize(params_.size());
}

Optimizer::~Optimizer() {
  try {
    for (void*& e : hyper_copied_) {
      if (!e) continue;
      cuda::event_synchronize(e);  // the copy no longer reads the pinned memory
      cuda::destroy_event(e);
    }
    if (hyper_host_) cuda::free_pinned(hyper_host_);
  } catch (...) {
  }
}

void Optimizer::set_capturable(bool on) {
  if (on && !hyper_host_) {
    HR_CHECK(!params_.empty(), "optimizer: capturable mode needs parameters");
    for (const Tensor& p : params_)
      HR_CHECK(p.device().is_cuda(), "optimizer: capturable mode (CUDA graphs) needs CUDA "
               "parameters, got ", p.str());
    hyper_host_ =
        static_cast<float*>(cuda::alloc_pinned(kHyperSlots * kHyperFloats * sizeof(float)));
    for (void*& e : hyper_copied_) e = cuda::create_event();
    hyper_dev_ = Tensor::zeros({kHyperFloats}, DType::f32, params_[0].device());
  }
  capturable_ = on;
}

void Optimizer::prepare_step() {
  throw Error("optimizer: this optimizer has no capturable step");
}
void Optimizer::enqueue_step() {
  throw Error("optimizer: this optimizer has no capturable step");
}

// The hand-off of the hyper-parameters to the device, and why it is done this way:
//  - The copy from pinned memory is enqueued by prepare_step(), outside any capture, on the
//    stream the step then runs on. A graph launch is ordered after the work already in its
//    stream (cudaGraphLaunch), so each replay reads the values of the prepare_step() before it,
//    and the next copy (queued after that launch) cannot overwrite them while it runs.
//  - The host may rewrite a pinned slot only once the copy that read it has completed: an event
//    recorded after each copy, outside any capture, and waited for on the host. An event last
//    recorded inside a capture cannot be waited for (cudaEventSynchronize / cudaEventQuery fail
//    with cudaErrorCapturedEvent, "not permitted on an event which was last recorded in a
//    capturing stream"), which is why the copy is not part of the graph.
//  - Two slots used in turn: prepare_step() for step t waits only for the copy of step t-2,
//    queued before step t-1 was launched, so the host may run a whole step ahead of the GPU
//    (and never waits when the GPU keeps up).
float* Optimizer::hyper_for_write() {
  HR_CHECK(capturable_, "optimizer: prepare_step needs set_capturable(true)");
  HR_CHECK(!cuda::is_capturing(current_stream()),
           "optimizer: prepare_step must not be captured "
           "(it runs on the host before each launch; capture enqueue_step)");
  const int k = hyper_slot_;
  if (hyper_pending_[k]) {
    cuda::event_synchronize(hyper_copied_[k]);
    hyper_pending_[k] = false;
  }
  return hyper_host_ + k * kHyperFloats;
}

void Optimizer::upload_hyper(int n) {
  const int k = hyper_slot_;
  const cuda::Stream st = current_stream();
  cuda::memcpy_h2d_async(hyper_dev_.data<float>(), hyper_host_ + k * kHyperFloats,
                         size_t(n) * sizeof(float), st);
  cuda::record_event(hyper_copied_[k], st);
  hyper_pending_[k] = true;
  hyper_slot_ = (k + 1) % kHyperSlots;
}

namespace {
// A parameter's 16-bit copy (undefined: none) as the step kernels take it.
void with_copy(cpu::OptimSpan& s, const Tensor& copy) {
  if (!copy.defined()) return;
  s.copy = static_cast<uint16_t*>(copy.raw_data());
  s.copy_f16 = copy.dtype() == DType::f16;
}
cuda::OptimTensor with_copy(cuda::OptimTensor t, const Tensor& copy) {
  if (!copy.defined()) return t;
  t.copy = copy.raw_data();
  t.copy_dt = copy.dtype() == DType::f16 ? cuda::DT::f16 : cuda::DT::bf16;
  return t;
}

// The gradient as the capturable kernels read it: fp32, dense in the parameter's layout (no
// conversion may allocate inside a capture).
const float* capturable_grad(const Tensor& p, size_t i) {
  const Tensor& g = p.grad();
  HR_CHECK(g.dtype() == DType::f32 && g.is_contiguous(p.suggest_format()) &&
               g.device() == p.device(),
           "optimizer: the gradient of parameter ", i, " (", g.str(),
           ") is not fp32 and dense in the parameter's layout, as a capturable step needs");
  return g.data<float>();
}
}  // namespace

Tensor Optimizer::weight_copy(const Tensor& param, DType dtype) {
  HR_CHECK(dtype == DType::f16 || dtype == DType::bf16, "optimizer: a weight copy is f16 or "
           "bf16, not ", dtype_name(dtype));
  for (size_t i = 0; i < params_.size(); ++i) {
    if (params_[i].impl() != param.impl()) continue;
    Tensor& c = copies_[i];
    if (!c.defined()) {
      HR_CHECK(!step_captured_, "optimizer: a new weight copy of parameter ", i, " after the "
               "step was captured into a CUDA graph, which would never write it (make the "
               "copies before capturing)");
      NoGradGuard ng;
      c = params_[i].to(dtype);  // the parameter's layout (dense: checked at construction)
    }
    HR_CHECK(c.dtype() == dtype, "optimizer: parameter ", i, " already has a ",
             dtype_name(c.dtype()), " copy, not ", dtype_name(dtype));
    return c;
  }
  return Tensor();
}

void Optimizer::note_capture() {
  if (cuda::is_capturing(current_stream())) step_captured_ = true;
}

void Optimizer::refresh_weight_copies() {
  NoGradGuard ng;
  for (size_t i = 0; i < params_.size(); ++i)
    if (copies_[i].defined()) copies_[i].copy_(params_[i]);
}

void Optimizer::zero_grad() {
  for (auto& p : params_) p.zero_grad();
}

Tensor& Optimizer::slot(size_t i, size_t k) {
  auto& s = slots_[i];
  if (s.size() <= k) s.resize(k + 1);
  if (!s[k].defined()) {
    const Tensor& p = params_[i];
    s[k] = Tensor::zeros(p.shape(), DType::f32, p.device(), p.suggest_format());
  }
  return s[k];
}

NamedTensors Optimizer::state_dict() const {
  NamedTensors out;
  out.emplace_back("step", Tensor::from_vector_i64({steps_}, {}));
  for (size_t i = 0; i < slots_.size(); ++i)
    for (size_t k = 0; k < slots_[i].size(); ++k)
      if (slots_[i][k].defined())
        out.emplace_back(std::to_string(i) + "." + slot_names_[k], slots_[i][k]);
  return out;
}

void Optimizer::load_state_dict(const NamedTensors& sd) {
  for (const auto& [name, t] : sd) {
    if (name == "step") {
      HR_CHECK(t.numel() == 1 && t.dtype() == DType::i64, "optimizer state: 'step' must be one i64, got ",
               dtype_name(t.dtype()), shape_str(t.shape()));
      steps_ = t.to_vector_i64()[0];
      continue;
    }
    size_t dot = name.find('.');
    HR_CHECK(dot != std::string::npos && dot > 0 && dot <= 9 &&
                 name.find_first_not_of("0123456789") == dot,
             "optimizer state: bad key '", name, "' (expected <parameter index>.<slot>)");
    size_t i = std::stoul(name.substr(0, dot));  // 1 to 9 digits: cannot throw
    std::string sname = name.substr(dot + 1);
    auto it = std::find(slot_names_.begin(), slot_names_.end(), sname);
    HR_CHECK(i < params_.size() && it != slot_names_.end(), "optimizer state: unexpected key '",
             name, "'");
    Tensor& s = slot(i, it - slot_names_.begin());
    HR_CHECK(s.shape() == t.shape(), "optimizer state: '", name, "' has shape ",
             shape_str(t.shape()), ", expected ", shape_str(s.shape()));
    s.copy_(t);
  }
}

// ---------------------------------------------------------------- SGD
SGD::SGD(std::vector<Tensor> params, const SGDOptions& o) : Optimizer(std::move(params), o.lr), o_(o) {
  HR_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
           "SGD: Nesterov momentum requires a momentum and zero dampening");
  HR_CHECK(o.group2.empty() || o.group2.size() == params_.size(), "SGD: group2 has ",
           o.group2.size(), " entries for ", params_.size(), " parameters");
  slot_names_ = {"momentum_buffer"};
}

void SGD::prepare_step() {
  float* h = hyper_for_write();
  h[0] = float(lr_);
  h[1] = steps_ == 0 ? 1.f : 0.f;  // the first step initialises the momentum buffers
  h[2] = float(lr_ * o_.group2_lr_factor);  // the second group's {lr, first}
  h[3] = h[1];
  upload_hyper(4);
  ++steps_;
}

bool SGD::in_group2(size_t i) const { return i < o_.group2.size() && o_.group2[i]; }

void SGD::enqueue_step() {
  HR_CHECK(capturable_, "SGD: enqueue_step needs set_capturable(true)");
  note_capture();
  std::vector<cuda::OptimTensor> ts;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    if (!p.grad().defined()) continue;
    float* buf = o_.momentum != 0 ? slot(i, 0).data<float>() : nullptr;
    const bool g2 = in_group2(i);
    ts.push_back(with_copy({p.numel(), p.data<float>(), capturable_grad(p, i), buf, nullptr,
                            float(g2 ? o_.group2_weight_decay : o_.weight_decay), g2 ? 1 : 0, -1},
                           copies_[i]));
  }
  cuda::OptimHyper h;
  h.dev = hyper_dev_.data<float>();  // {lr, first} of each group (prepare_step)
  cuda::sgd_multi_step(ts.data(), static_cast<int64_t>(ts.size()), h, float(o_.momentum),
                       float(o_.dampening), o_.nesterov, current_stream());
}

void SGD::step() {
  if (capturable_) {
    prepare_step();
    enqueue_step();
    return;
  }
  std::vector<Tensor> grads;  // the gradients as the kernels read them, alive until their step
  std::vector<cpu::OptimSpan> spans;
  std::vector<cuda::OptimTensor> cuda_ts;
  cuda::OptimHyper h;  // the CUDA tensors' lr per group (their first-step flags are their own)
  h.v[0] = float(lr_);
  h.v[2] = float(lr_ * o_.group2_lr_factor);
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    if (!p.grad().defined()) continue;
    Tensor g = p.grad().contiguous(p.suggest_format()).to(DType::f32);
    // torch initialises the momentum buffer with the first gradient a parameter receives.
    const bool first = slots_[i].empty() || !slots_[i][0].defined();
    float* buf = o_.momentum != 0 ? slot(i, 0).data<float>() : nullptr;
    const bool g2 = in_group2(i);
    const float lr = float(g2 ? lr_ * o_.group2_lr_factor : lr_);
    const float wd = float(g2 ? o_.group2_weight_decay : o_.weight_decay);
    if (p.device().is_cpu()) {
      spans.push_back({p.numel(), p.data<float>(), g.data<float>(), buf, nullptr, lr, wd, first});
      with_copy(spans.back(), copies_[i]);
    } else {
      cuda_ts.push_back(with_copy({p.numel(), p.data<float>(), g.data<float>(), buf, nullptr, wd,
                                   g2 ? 1 : 0, first ? 1 : 0},
                                  copies_[i]));
    }
    grads.push_back(std::move(g));
  }
  cpu::sgd_step(spans.data(), static_cast<int64_t>(spans.size()), float(o_.momentum),
                float(o_.dampening), o_.nesterov);
  if (!cuda_ts.empty())
    cuda::sgd_multi_step(cuda_ts.data(), static_cast<int64_t>(cuda_ts.size()), h,
                         float(o_.momentum), float(o_.dampening), o_.nesterov, current_stream());
  ++steps_;
}

// ---------------------------------------------------------------- Adam
Adam::Adam(std::vector<Tensor> params, const AdamOptions& o) : Optimizer(std::move(params), o.lr), o_(o) {
  slot_names_ = {"exp_avg", "exp_avg_sq"};
}

void Adam::prepare_step() {
  float* h = hyper_for_write();
  ++steps_;
  h[0] = float(lr_);
  double bc1, bc2;  // from the betas as the kernels and the eager step take them: floats
  kern::adam_bias_corrections(float(o_.beta1), float(o_.beta2), steps_, &bc1, &bc2);
  h[1] = float(bc1);
  h[2] = float(bc2);
  upload_hyper(3);
}

void Adam::enqueue_step() {
  HR_CHECK(capturable_, "Adam: enqueue_step needs set_capturable(true)");
  note_capture();
  std::vector<cuda::OptimTensor> ts;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    if (!p.grad().defined()) continue;
    ts.push_back(with_copy({p.numel(), p.data<float>(), capturable_grad(p, i),
                            slot(i, 0).data<float>(), slot(i, 1).data<float>(),
                            float(o_.weight_decay), 0, -1},
                           copies_[i]));
  }
  cuda::OptimHyper h;
  h.dev = hyper_dev_.data<float>();  // {lr, 1 - beta1^t, 1 - beta2^t} (prepare_step)
  cuda::adam_multi_step(ts.data(), static_cast<int64_t>(ts.size()), h, float(o_.beta1),
                        float(o_.beta2), float(o_.eps), o_.decoupled, current_stream());
}

void Adam::step() {
  if (capturable_) {
    prepare_step();
    enqueue_step();
    return;
  }
  ++steps_;
  std::vector<Tensor> grads;  // the gradients as the kernels read them, alive until their step
  std::vector<cpu::OptimSpan> spans;
  std::vector<cuda::OptimTensor> cuda_ts;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    if (!p.grad().defined()) continue;
    Tensor g = p.grad().contiguous(p.suggest_format()).to(DType::f32);
    float* m = slot(i, 0).data<float>();
    float* v = slot(i, 1).data<float>();
    if (p.device().is_cpu()) {
      spans.push_back({p.numel(), p.data<float>(), g.data<float>(), m, v, float(lr_),
                       float(o_.weight_decay), false});
      with_copy(spans.back(), copies_[i]);
    } else {
      cuda_ts.push_back(with_copy(
          {p.numel(), p.data<float>(), g.data<float>(), m, v, float(o_.weight_decay), 0, -1},
          copies_[i]));
    }
    grads.push_back(std::move(g));
  }
  cpu::adam_step(spans.data(), static_cast<int64_t>(spans.size()), float(o_.beta1),
                 float(o_.beta2), float(o_.eps), o_.decoupled, steps_);
  if (!cuda_ts.empty())
    cuda::adam_multi_step(cuda_ts.data(), static_cast<int64_t>(cuda_ts.size()),
                          cuda::adam_hyper(float(lr_), float(o_.beta1), float(o_.beta2), steps_),
                          float(o_.beta1), float(o_.beta2), float(o_.eps), o_.decoupled,
                          current_stream());
}

std::unique_ptr<Optimizer> make_adamw(std::vector<Tensor> params, double lr, double wd,
                                      double beta1, double beta2, double eps) {
  AdamOptions o;
  o.lr = lr;
  o.weight_decay = wd;
  o.beta1 = beta1;
  o.beta2 = beta2;
  o.eps = eps;
  o.decoupled = true;
  return std::make_unique<Adam>(std::move(params), o);
}

// ---------------------------------------------------------------- schedules
double MultiStepLR::lr(int64_t t, double base) const {
  int n = 0;
  for (int64_t m : milestones_) n += t >= m;
  return base * std::pow(gamma_, n);
}

double PolyLR::lr(int64_t t, double base) const {
  if (t >= total_) return 0.0;
  return base * std::pow(1.0 - static_cast<double>(t) / static_cast<double>(total_), power_);
}

double CosineLR::lr(int64_t t, double base) const {
  const double pi = 3.14159265358979323846;
  return eta_min_ + (base - eta_min_) * (1 + std::cos(pi * static_cast<double>(t) / t_max_)) / 2;
}

double LinearWarmup::lr(int64_t t, double base) const {
  double inner = inner_->lr(t, base);
  if (t >= warmup_) return inner;
  return inner * (start_ + (1 - start_) * static_cast<double>(t) / static_cast<double>(warmup_));
}

}  // namespace hr
