// Tensor-level helpers shared by the graph tests: seeded uniform tensors and a comparison whose
// bound scales with the reference tensor's largest magnitude.
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "test_util.h"

namespace hr::test {

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

}  // namespace hr::test
