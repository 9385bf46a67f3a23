// The CPU kernels built once per instruction set. kernels/cpu/conv2d.cpp and linear.cpp (the
// GEMM-bound kernels) are compiled twice: with the build's baseline flags (x86-64-v3: AVX2 +
// FMA), their functions in hr::cpu::avx2, and, where the compiler targets x86-64, once more with
// -march=x86-64-v4 (AVX-512F/BW/DQ/VL), in hr::cpu::avx512 and with Eigen renamed (the macro
// Eigen=Eigen_avx512, engine/CMakeLists.txt). No code of one build may serve the other: a
// function compiled for AVX-512 reached from the baseline build would crash a processor without
// it. So these files keep to their own namespace, file-local types and templates, and functions
// of the baseline build (isa_internal_error); the ctest cpu_isa_symbols lists the AVX-512
// objects' symbols and fails on any shared one. kernels/cpu/dispatch.cpp defines the public
// functions of cpu_kernels.h, which check their arguments and call the build chosen at run time.
#pragma once
#include <cstdint>

#include "kernels/shapes.h"

#ifndef HR_ISA_NS
#define HR_ISA_NS avx2
#endif

namespace hr::cpu {

// Throws hr::Error(what): for the per-ISA builds, which must not instantiate the error
// helpers' templates themselves.
[[noreturn]] void isa_internal_error(const char* what);
// Whether the products run in bf16 (cpu_precision() == "bf16"; only ever with the avx512 build
// on a processor with AVX512_BF16).
bool bf16_products();

#define HR_CPU_ISA_DECLARE(ns)                                                                  \
  namespace ns {                                                                                \
  void conv2d_forward(const kern::ConvShape& s, const float* x, const float* w,                 \
                      const float* bias, float* y, const kern::ConvEpilogue& ep);              \
  void conv2d_backward_data(const kern::ConvShape& s, const float* dy, const float* w,          \
                            float* dx);                                                         \
  void conv2d_backward_weight(const kern::ConvShape& s, const float* x, const float* dy,        \
                              float* dw, float* dbias);                                         \
  int64_t conv2d_prepacked_size(const kern::ConvShape& s);                                      \
  void conv2d_prepack_weights(const kern::ConvShape& s, const float* w, float* packed);         \
  void conv2d_forward_prepacked(const kern::ConvShape& s, const float* x, const float* packed,  \
                                const float* bias, float* y, const kern::ConvEpilogue& ep);    \
  void linear_forward(int64_t M, int64_t I, int64_t O, const float* x, const float* w,          \
                      const float* bias, float* y);                                            \
  void linear_backward(int64_t M, int64_t I, int64_t O, const float* x, const float* w,         \
                       const float* dy, float* dx, float* dw, float* dbias);                    \
  }
HR_CPU_ISA_DECLARE(avx2)
HR_CPU_ISA_DECLARE(avx512)
#undef HR_CPU_ISA_DECLARE

}  // namespace hr::cpu
