// Modules: named parameters and buffers composed into trees, with PyTorch's naming
// ("layer1.0.conv1.weight") and state_dict order (own parameters, own buffers, then children).
#pragma once
#include <array>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/ops.h"
#include "engine/tensor.h"

namespace hr {

// Global seeded generator used for parameter initialisation.
void manual_seed(uint64_t seed);
uint64_t next_seed();

struct LoadOptions {
  bool strict = true;                     // missing / unexpected keys are errors
  bool allow_missing_num_batches = true;  // absent `num_batches_tracked` is accepted
  // removed from the front of a key for as long as one matches
  std::vector<std::string> strip_prefixes = {"module.", "model."};
};

// Removes the listed prefixes from the front of `key` for as long as one matches
// ("module.backbone.body.conv1.weight" -> "conv1.weight").
std::string strip_key_prefixes(std::string key, const std::vector<std::string>& prefixes);

class Module {
 public:
  virtual ~Module() = default;
  // Single-input modules override this.
  virtual Tensor forward(const Tensor& x);
  Tensor operator()(const Tensor& x) { return forward(x); }

  Tensor& register_parameter(const std::string& name, Tensor t);
  Tensor& register_buffer(const std::string& name, Tensor t);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    children_.emplace_back(name, m);
    return m;
  }

  NamedTensors named_parameters() const;
  NamedTensors named_buffers() const;
  NamedTensors state_dict() const;  // parameters and buffers in PyTorch's order
  // Copies values into this module's tensors. Errors list every missing, unexpected and
  // mis-shaped key (one line each, after a one-line summary).
  void load_state_dict(const NamedTensors& sd, const LoadOptions& opt = LoadOptions());
  std::vector<Tensor> parameters() const;
  // Gradient of each parameter by name (undefined where none was computed).
  std::map<std::string, Tensor> gradients() const;
  int64_t num_parameters() const;

  // Sets this module's and its children's mode (virtual: a model may keep parts in eval mode).
  virtual void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  // Moves every floating parameter and buffer to `device` in place (tensor handles stay valid;
  // i64 buffers such as num_batches_tracked stay on the host). 4-D tensors use channels-last
  // on CUDA.
  void to(Device device);
  void zero_grad();

  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const {
    return children_;
  }

 protected:
  bool training_ = true;

 private:
  void collect(const std::string& prefix, bool params, bool buffers, NamedTensors& out) const;
  NamedTensors params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

// ---- building blocks ----
class Conv2d : public Module {
 public:
  Conv2d(int64_t in, int64_t out, std::array<int64_t, 2> kernel, std::array<int64_t, 2> stride = {1, 1},
         std::array<int64_t, 2> padding = {0, 0}, bool bias = true);
  Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1, int64_t padding = 0,
         bool bias = true)
      : Conv2d(in, out, {kernel, kernel}, {stride, stride}, {padding, padding}, bias) {}
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias;  // weight [K,C,R,S]; bias [K] or undefined
  std::array<int64_t, 2> stride, padding;
};

class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t channels, float eps = 1e-5f, float momentum = 0.1f);
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  float eps, momentum;
};

// torch.nn.GroupNorm(num_groups, num_channels, eps) with its affine weight (ones) and bias
// (zeros); no running statistics.
class GroupNorm : public Module {
 public:
  GroupNorm(int64_t groups, int64_t channels, float eps = 1e-5f);
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias;
  int64_t groups;
  float eps;
};

class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, bool bias = true);
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias;  // weight [O,I]
};

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override { return ops::relu(x); }
};

class Sequential : public Module {
 public:
  Sequential() = default;
  // Children are named "0", "1", ... as in torch.nn.Sequential.
  Sequential& add(std::shared_ptr<Module> m);
  Tensor forward(const Tensor& x) override;
  size_t size() const { return children().size(); }
};

}  // namespace hr
