// Module tree, state dicts and the basic layers.
#include "engine/nn.h"

#include <cmath>
#include <random>
#include <set>

namespace hr {

namespace {
std::mt19937_64& generator() {
  static std::mt19937_64 g(0x5eed);
  return g;
}

Tensor uniform(const Shape& shape, float bound) {
  std::uniform_real_distribution<float> d(-bound, bound);
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (auto& x : v) x = d(generator());
  return Tensor::from_vector(v, shape);
}


bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

std::string strip_key_prefixes(std::string key, const std::vector<std::string>& prefixes) {
  for (bool again = true; again;) {
    again = false;
    for (const auto& p : prefixes)
      if (!p.empty() && key.compare(0, p.size(), p) == 0) {
        key = key.substr(p.size());
        again = true;
      }
  }
  return key;
}

void manual_seed(uint64_t seed) { generator().seed(seed); }
uint64_t next_seed() { return generator()(); }

// ---------------------------------------------------------------- Module
Tensor Module::forward(const Tensor&) {
  throw Error("Module::forward: this module does not take a single input");
}

Tensor& Module::register_parameter(const std::string& name, Tensor t) {
  if (t.defined()) t.set_requires_grad(true);
  params_.emplace_back(name, t);
  return params_.back().second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor t) {
  buffers_.emplace_back(name, t);
  return buffers_.back().second;
}

void Module::collect(const std::string& prefix, bool params, bool buffers, NamedTensors& out) const {
  if (params)
    for (const auto& [n, t] : params_)
      if (t.defined()) out.emplace_back(prefix + n, t);
  if (buffers)
    for (const auto& [n, t] : buffers_)
      if (t.defined()) out.emplace_back(prefix + n, t);
  for (const auto& [n, c] : children_)
    if (c) c->collect(prefix + n + ".", params, buffers, out);
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", true, false, out);
  return out;
}
NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect("", false, true, out);
  return out;
}
NamedTensors Module::state_dict() const {
  NamedTensors out;
  collect("", true, true, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> r;
  for (auto& [n, t] : named_parameters()) r.push_back(t);
  return r;
}

std::map<std::string, Tensor> Module::gradients() const {
  std::map<std::string, Tensor> r;
  for (auto& [n, t] : named_parameters()) r[n] = t.grad();
  return r;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [k, t] : named_parameters()) n += t.numel();
  return n;
}

void Module::load_state_dict(const NamedTensors& sd, const LoadOptions& opt) {
  std::map<std::string, Tensor> mine;
  for (auto& [k, t] : state_dict()) mine[k] = t;
  std::set<std::string> seen;
  std::vector<std::string> unexpected, misshaped, missing;
  for (const auto& [raw, src] : sd) {
    std::string k = strip_key_prefixes(raw, opt.strip_prefixes);
    auto it = mine.find(k);
    if (it == mine.end()) {
      unexpected.push_back(raw);
      continue;
    }
    Tensor dst = it->second;
    if (src.shape() != dst.shape() && !(src.numel() == 1 && dst.numel() == 1)) {
      misshaped.push_back(str_cat(raw, " has shape ", shape_str(src.shape()), ", expected ",
                                  shape_str(dst.shape())));
      continue;
    }
    seen.insert(k);
  }
  for (const auto& [k, t] : mine)
    if (!seen.count(k) && !(opt.allow_missing_num_batches && ends_with(k, "num_batches_tracked")))
      missing.push_back(k);
  const bool bad = !misshaped.empty() || (opt.strict && (!unexpected.empty() || !missing.empty()));
  if (bad) {
    std::string msg = str_cat("load_state_dict: ", missing.size(), " missing, ", unexpected.size(),
                              " unexpected, ", misshaped.size(), " mis-shaped keys");
    for (auto& k : missing) msg += "\n  missing: " + k;
    for (auto& k : unexpected) msg += "\n  unexpected: " + k;
    for (auto& k : misshaped) msg += "\n  mis-shaped: " + k;
    throw Error(msg);
  }
  NoGradGuard g;
  for (const auto& [raw, src] : sd) {
    auto it = mine.find(strip_key_prefixes(raw, opt.strip_prefixes));
    if (it == mine.end()) continue;
    Tensor dst = it->second;
    dst.copy_(src.shape() == dst.shape() ? src : src.view(dst.shape()));
  }
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_)
    if (c) c->train(on);
}

void Module::to(Device device) {
  for (auto& [n, t] : state_dict()) {
    if (!is_floating(t.dtype()) || t.device() == device) continue;
    MemoryFormat f = device.is_cuda() && t.dim() == 4 ? MemoryFormat::ChannelsLast
                                                      : MemoryFormat::Contiguous;
    Tensor moved = Tensor::empty(t.shape(), t.dtype(), device, f);
    moved.copy_(t);
    TensorImpl* impl = t.impl();
    impl->storage = moved.storage();
    impl->offset = 0;
    impl->strides = moved.strides();
    impl->grad = Tensor();
  }
}

void Module::zero_grad() {
  for (auto& [n, t] : named_parameters()) t.zero_grad();
}

// ---------------------------------------------------------------- layers
Conv2d::Conv2d(int64_t in, int64_t out, std::array<int64_t, 2> kernel,
               std::array<int64_t, 2> stride_, std::array<int64_t, 2> padding_, bool with_bias)
    : stride(stride_), padding(padding_) {
  HR_CHECK(in > 0 && out > 0 && kernel[0] > 0 && kernel[1] > 0, "Conv2d: bad sizes in=", in,
           " out=", out, " kernel=", kernel[0], "x", kernel[1]);
  // PyTorch's default: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  const float bound = 1.f / std::sqrt(static_cast<float>(in * kernel[0] * kernel[1]));
  weight = register_parameter("weight", uniform({out, in, kernel[0], kernel[1]}, bound));
  if (with_bias) bias = register_parameter("bias", uniform({out}, bound));
}

Tensor Conv2d::forward(const Tensor& x) { return ops::conv2d(x, weight, bias, stride, padding); }

BatchNorm2d::BatchNorm2d(int64_t channels, float eps_, float momentum_)
    : eps(eps_), momentum(momentum_) {
  weight = register_parameter("weight", Tensor::ones({channels}));
  bias = register_parameter("bias", Tensor::zeros({channels}));
  running_mean = register_buffer("running_mean", Tensor::zeros({channels}));
  running_var = register_buffer("running_var", Tensor::ones({channels}));
  num_batches_tracked = register_buffer("num_batches_tracked", Tensor::zeros({}, DType::i64));
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  return ops::batch_norm(x, weight, bias, running_mean, running_var, training_, momentum, eps,
                         training_ ? num_batches_tracked : Tensor());
}

GroupNorm::GroupNorm(int64_t groups_, int64_t channels, float eps_) : groups(groups_), eps(eps_) {
  HR_CHECK(groups > 0 && channels > 0 && channels % groups == 0, "GroupNorm: ", channels,
           " channels do not split into ", groups, " groups");
  weight = register_parameter("weight", Tensor::ones({channels}));
  bias = register_parameter("bias", Tensor::zeros({channels}));
}

Tensor GroupNorm::forward(const Tensor& x) { return ops::group_norm(x, groups, weight, bias, eps); }

Linear::Linear(int64_t in, int64_t out, bool with_bias) {
  const float bound = 1.f / std::sqrt(static_cast<float>(in));
  weight = register_parameter("weight", uniform({out, in}, bound));
  if (with_bias) bias = register_parameter("bias", uniform({out}, bound));
}

Tensor Linear::forward(const Tensor& x) { return ops::linear(x, weight, bias); }

Sequential& Sequential::add(std::shared_ptr<Module> m) {
  register_module(std::to_string(children().size()), std::move(m));
  return *this;
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor y = x;
  for (auto& [n, c] : children()) y = c->forward(y);
  return y;
}

}  // namespace hr
