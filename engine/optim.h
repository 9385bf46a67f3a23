// Optimizers (torch.optim semantics) and learning-rate schedules.
// Parameters are fp32 (master weights under mixed precision); state lives on their device.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/nn.h"
#include "engine/tensor.h"

namespace hr {

class Optimizer {
 public:
  explicit Optimizer(std::vector<Tensor> params, double lr);
  virtual ~Optimizer();
  // Applies one update to every parameter that has a gradient.
  virtual void step() = 0;
  void zero_grad();
  double lr() const { return lr_; }
  void set_lr(double lr) { lr_ = lr; }
  int64_t steps() const { return steps_; }
  // Optimizer state by name ("<param index>.<slot>", plus "step") for exact resume.
  virtual NamedTensors state_dict() const;
  virtual void load_state_dict(const NamedTensors& sd);

  // CUDA graphs (parameters on CUDA). A capturable optimizer splits step() into
  //  - prepare_step(), never captured: the step count; the learning rate and step-dependent
  //    factors written to pinned memory and copied asynchronously to the device on the current
  //    stream (the host does not wait for the GPU, except for the copy of two steps before);
  //  - enqueue_step(), which may be captured: kernels that read those values on the device when
  //    they run.
  // Launch the enqueued or captured kernels on the stream prepare_step() ran on, after it. A
  // graph holding enqueue_step() replays with the values of the prepare_step() before each
  // launch; step() is prepare_step() then enqueue_step(). The set of parameters with gradients
  // must not change after capture. Results equal step()'s up to the float rounding of the
  // step-dependent factors. SGD's first step (the momentum buffer set to the gradient) is the
  // optimizer's first step for every parameter in capturable mode, where the eager step takes
  // each parameter's first gradient: the same whenever every parameter has a gradient from the
  // first step on, as a captured step requires.
  void set_capturable(bool on);
  bool capturable() const { return capturable_; }
  virtual void prepare_step();
  virtual void enqueue_step();

  // Mixed precision: a 16-bit (f16 or bf16) copy of one of this optimizer's parameters, which
  // every later step rewrites in the same pass as the parameter's update (rounded to nearest
  // even, as ops::cast rounds), so that a graph under autocast reads it instead of casting the
  // weight on every run (graph::CompileOptions::weight_copy). Made on the first call, as the
  // cast of the current values (on the current stream); one dtype per parameter. Undefined when
  // `param` is not one of this optimizer's parameters. A new copy after enqueue_step() was
  // captured is an error (the captured step would never write it).
  Tensor weight_copy(const Tensor& param, DType dtype);
  // Rewrites every copy from its parameter: needed when the parameters change other than by a
  // step (a checkpoint loaded into the model).
  void refresh_weight_copies();

 protected:
  std::vector<Tensor> params_;
  // slots_[i][k]: per-parameter state tensors (created lazily, same shape as the parameter)
  std::vector<std::vector<Tensor>> slots_;
  std::vector<std::string> slot_names_;
  std::vector<Tensor> copies_;  // per parameter: its 16-bit copy (weight_copy), or undefined
  bool step_captured_ = false;  // enqueue_step() ran inside a CUDA graph capture
  void note_capture();          // sets step_captured_ when the current stream is capturing
  double lr_;
  int64_t steps_ = 0;
  Tensor& slot(size_t param, size_t k);
  // capturable mode: hyper-parameters in pinned host memory (kHyperSlots slots, used in turn)
  // and on the device
  static constexpr int kHyperSlots = 2;
  static constexpr int kHyperFloats = 4;
  bool capturable_ = false;
  float* hyper_host_ = nullptr;           // pinned, kHyperSlots x kHyperFloats
  Tensor hyper_dev_;                      // kHyperFloats
  void* hyper_copied_[kHyperSlots] = {};  // per slot: recorded after its copy (never captured)
  bool hyper_pending_[kHyperSlots] = {};
  int hyper_slot_ = 0;  // the slot prepare_step writes next
  // The next slot, once the copy that last read it has completed.
  float* hyper_for_write();
  // Copies the first n values of the slot hyper_for_write() returned to hyper_dev_ on the
  // current stream and moves to the next slot.
  void upload_hyper(int n);

 public:
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;
};

struct SGDOptions {
  double lr = 0.01, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
  // A second parameter group, as maskrcnn-benchmark's make_optimizer builds one for biases:
  // parameter i with group2[i] true steps at lr * group2_lr_factor with weight decay
  // group2_weight_decay (empty: one group).
  std::vector<bool> group2;
  double group2_lr_factor = 1, group2_weight_decay = 0;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, const SGDOptions& o);
  void step() override;
  void prepare_step() override;
  void enqueue_step() override;

 private:
  SGDOptions o_;
  bool in_group2(size_t i) const;
};

struct AdamOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  bool decoupled = false;  // true: AdamW
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, const AdamOptions& o);
  void step() override;
  void prepare_step() override;
  void enqueue_step() override;

 private:
  AdamOptions o_;
};

// AdamW: Adam with decoupled weight decay (default 0.01, as torch.optim.AdamW).
std::unique_ptr<Optimizer> make_adamw(std::vector<Tensor> params, double lr,
                                      double weight_decay = 0.01, double beta1 = 0.9,
                                      double beta2 = 0.999, double eps = 1e-8);

// ---- schedules: lr at step t (epochs or iterations, the caller decides) ----
class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  virtual double lr(int64_t t, double base_lr) const = 0;
};

// torch.optim.lr_scheduler.MultiStepLR: base * gamma^(number of milestones <= t)
class MultiStepLR : public LrSchedule {
 public:
  MultiStepLR(std::vector<int64_t> milestones, double gamma = 0.1)
      : milestones_(std::move(milestones)), gamma_(gamma) {}
  double lr(int64_t t, double base) const override;

 private:
  std::vector<int64_t> milestones_;
  double gamma_;
};

// Poly decay (HRNet segmentation): base * (1 - t/total)^power, 0 past the end.
class PolyLR : public LrSchedule {
 public:
  PolyLR(int64_t total, double power = 0.9) : total_(total), power_(power) {}
  double lr(int64_t t, double base) const override;

 private:
  int64_t total_;
  double power_;
};

// torch CosineAnnealingLR (closed form): eta_min + (base - eta_min) * (1 + cos(pi t / T)) / 2
class CosineLR : public LrSchedule {
 public:
  CosineLR(int64_t t_max, double eta_min = 0) : t_max_(t_max), eta_min_(eta_min) {}
  double lr(int64_t t, double base) const override;

 private:
  int64_t t_max_;
  double eta_min_;
};

// Linear warm-up (torch LinearLR chained in front): for t < warmup the inner schedule's lr is
// multiplied by start + (1 - start) * t / warmup.
class LinearWarmup : public LrSchedule {
 public:
  LinearWarmup(std::shared_ptr<LrSchedule> inner, int64_t warmup, double start_factor = 1.0 / 3)
      : inner_(std::move(inner)), warmup_(warmup), start_(start_factor) {}
  double lr(int64_t t, double base) const override;

 private:
  std::shared_ptr<LrSchedule> inner_;
  int64_t warmup_;
  double start_;
};

class ConstantLR : public LrSchedule {
 public:
  double lr(int64_t, double base) const override { return base; }
};

}  // namespace hr
