// What op definitions (engine/ops/*.cpp) share: argument checks whose errors name the op, and
// the small conversions between tensors and kernel arguments.
#pragma once
#include <array>
#include <string>

#include "engine/cuda_dtype.h"
#include "engine/op.h"

namespace hr::ops::detail {

inline void check_defined(const Meta& t, const char* op, const char* what) {
  HR_CHECK(t.defined, op, ": ", what, " is undefined");
}

// Floating storage the device computes in: f32 on the CPU; f32, f16 or bf16 on CUDA.
inline void check_float(const Meta& t, const char* op, const char* what) {
  HR_CHECK(t.device.is_cuda() ? is_floating(t.dtype) : t.dtype == DType::f32, op, ": ", what,
           " has dtype ", dtype_name(t.dtype), ", expected ",
           t.device.is_cuda() ? "f32, f16 or bf16" : "f32 (the CPU computes in f32)");
}

inline void check_same_device(const Meta& a, const Meta& b, const char* op) {
  HR_CHECK(a.device == b.device, op, ": tensors on different devices (", a.device.str(), " and ",
           b.device.str(), ")");
}

// A per-channel fp32 parameter [n] on x's device.
inline void check_param(const Meta& p, int64_t n, const Meta& x, const char* op, const char* what) {
  check_defined(p, op, what);
  HR_CHECK(p.shape.size() == 1 && p.shape[0] == n, op, ": ", what, " has shape ",
           shape_str(p.shape), ", expected [", n, "]");
  HR_CHECK(p.dtype == DType::f32, op, ": ", what, " must be f32, got ", dtype_name(p.dtype));
  check_same_device(p, x, op);
}

// Same shape, dtype and device (element-wise operands).
inline void check_same(const Meta& a, const Meta& b, const char* op) {
  HR_CHECK(a.shape == b.shape, op, ": shapes ", shape_str(a.shape), " and ", shape_str(b.shape),
           " differ");
  HR_CHECK(a.dtype == b.dtype, op, ": dtypes ", dtype_name(a.dtype), " and ", dtype_name(b.dtype),
           " differ");
  check_same_device(a, b, op);
}

inline Meta same_as(const Meta& m) { return Meta::make(m.shape, m.dtype, m.device); }
inline Meta f32_on(const Shape& s, const Meta& like) { return Meta::make(s, DType::f32, like.device); }

// The product of the dimensions after the first two (H*W for [N,C,H,W], 1 for [N,C]).
inline int64_t spatial(const Shape& s) {
  int64_t n = 1;
  for (size_t d = 2; d < s.size(); ++d) n *= s[d];
  return n;
}

inline float* fptr(const Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }
inline void* vptr(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }
inline cuda::DT dt(const Tensor& t, const char* op) { return cuda_dtype(t.dtype(), op); }

// The two floating operands of conv2d, linear and bmm under autocast (ops.h AutocastGuard): each
// CUDA floating tensor of another dtype cast with the differentiable cast op, as torch.autocast
// does; otherwise the operand itself. While a graph is recorded (one operand a value of it), the
// other operand's cast (a weight's) is recorded into that graph too, reading the tensor itself:
// the graph casts the weight's current values on each run (or reads the copy the optimizer keeps:
// graph::CompileOptions::weight_copy; inference: once, in the prologue), never a snapshot taken
// while recording, and the weight's gradient flows back through the cast to the fp32 tensor.
std::array<Tensor, 2> autocast(const Tensor& a, const Tensor& b);

inline std::string pair_str(std::array<int64_t, 2> p) {
  return p[0] == p[1] ? std::to_string(p[0]) : str_cat(p[0], "x", p[1]);
}

}  // namespace hr::ops::detail
