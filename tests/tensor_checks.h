// Tensor-level helpers shared by the graph tests: seeded uniform tensors and a comparison whose
// bound scales with the reference tensor's largest magnitude.
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <map>

#include "engine/error.h"
#include "engine/nn.h"
#include "engine/tensor.h"
#include "test_util.h"

namespace hr::test {

// A module's state dict by key.
inline std::map<std::string, Tensor> state_map(const Module& m) {
  std::map<std::string, Tensor> r;
  for (auto& [k, t] : m.state_dict()) r[k] = t;
  return r;
}

inline Tensor rand_tensor(const Shape& s, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  return Tensor::from_vector(uniform(static_cast<size_t>(shape_numel(s)), seed, lo, hi), s);
}

// |got - ref| <= rel * max|ref| + 1e-7 everywhere: gradients span orders of magnitude within a
// tensor, so the bound scales with the tensor. A reference of all zeros fails (nothing compared).
inline void require_close_scaled(const Tensor& got, const Tensor& ref, double rel,
                                 const std::string& what) {
  INFO(what);
  REQUIRE(got.defined());
  REQUIRE(ref.defined());
  REQUIRE(got.shape() == ref.shape());
  const std::vector<float> g = got.to_vector(), r = ref.to_vector();
  double scale = 0;
  for (float v : r) scale = std::max(scale, static_cast<double>(std::fabs(v)));
  REQUIRE(scale > 0);
  REQUIRE_CLOSE(g, r, rel * scale + 1e-7, 0.0);
}

// Bit-for-bit equal (the same computation run twice, or nothing recomputed).
inline void require_equal(const Tensor& got, const Tensor& ref, const std::string& what) {
  INFO(what);
  const std::vector<float> g = got.to_vector(), r = ref.to_vector();
  REQUIRE(g.size() == r.size());
  size_t bad = 0;
  for (size_t i = 0; i < g.size(); ++i) bad += !(g[i] == r[i]);
  REQUIRE(bad == 0);
}

// PyTorch parity of a model's tensors: relative L2 error <= 1e-4 and per element |got - ref| <=
// 1e-3 max|ref| + 1e-4 |ref|; a reference that is zero up to rounding (a conv bias before
// training-mode batch norm) is compared against 1e-6 of the case's largest gradient
// (case_scale > 0). l2_bound: the relative L2 bound (a float32 backward through long sums can
// need more than 1e-4 against a float64 reference).
inline void require_parity(const Tensor& got, const Tensor& ref, const std::string& what,
                           double case_scale = 0, double l2_bound = 1e-4) {
  INFO(what);
  REQUIRE(got.defined());
  REQUIRE(got.shape() == ref.shape());
  auto g = got.to_vector(), r = ref.to_vector();
  double scale = 0, d2 = 0, r2 = 0;
  for (size_t i = 0; i < r.size(); ++i) {
    const double d = double(g[i]) - r[i];
    scale = std::max(scale, double(std::fabs(r[i])));
    d2 += d * d;
    r2 += double(r[i]) * r[i];
  }
  if (case_scale > 0 && scale < 1e-6 * case_scale) {
    REQUIRE_CLOSE(g, r, 1e-6 * case_scale, 0.0);
    return;
  }
  const double l2 = std::sqrt(d2 / std::max(r2, 1e-300));
  INFO("relative L2 error " << l2);
  CHECK(l2 <= l2_bound);
  REQUIRE_CLOSE(g, r, 1e-3 * scale + 1e-30, 1e-4);
}

}  // namespace hr::test
