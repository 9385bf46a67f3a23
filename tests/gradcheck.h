// Finite-difference gradient check through autograd: the analytic gradient of
// L = sum(f(inputs) * r) (r random) against central differences of L, input by input.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "test_util.h"

namespace hr::test {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

inline double weighted_sum(const Tensor& y, const std::vector<float>& r) {
  std::vector<float> v = y.to_vector();
  double s = 0;
  for (size_t i = 0; i < v.size(); ++i) s += static_cast<double>(v[i]) * r[i];
  return s;
}

// Checks d/d inputs[k] for every k in `which` (all inputs when empty).
inline void gradcheck(const std::string& name, const Fn& f, std::vector<Tensor> inputs,
                      std::vector<size_t> which = {}, float eps = 1e-2f, double atol = 2e-3,
                      double rtol = 1e-2) {
  if (which.empty())
    for (size_t k = 0; k < inputs.size(); ++k) which.push_back(k);
  for (size_t k : which) {
    inputs[k] = inputs[k].detach();  // a fresh leaf: no gradient left from an earlier check
    inputs[k].set_requires_grad(true);
  }
  Tensor y = f(inputs);
  std::vector<float> r = randn(static_cast<size_t>(y.numel()), 777);
  y.backward(Tensor::from_vector(r, y.shape()));
  for (size_t k : which) {
    INFO(name << ": input " << k);
    REQUIRE(inputs[k].grad().defined());
    std::vector<float> analytic = inputs[k].grad().to_vector();
    std::vector<float> numeric(analytic.size());
    NoGradGuard ng;
    for (size_t i = 0; i < analytic.size(); ++i) {
      std::vector<Tensor> in = inputs;
      std::vector<float> base = inputs[k].to_vector();
      base[i] += eps;
      in[k] = Tensor::from_vector(base, inputs[k].shape());
      double lp = weighted_sum(f(in), r);
      base[i] -= 2 * eps;
      in[k] = Tensor::from_vector(base, inputs[k].shape());
      double lm = weighted_sum(f(in), r);
      numeric[i] = static_cast<float>((lp - lm) / (2 * eps));
    }
    REQUIRE_CLOSE(analytic, numeric, atol, rtol);
  }
}

}  // namespace hr::test
