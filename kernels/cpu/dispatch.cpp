// The public GEMM-bound CPU kernels (cpu_kernels.h): argument checks, then the build of
// kernels/cpu/conv2d.cpp / linear.cpp for the instruction set chosen at run time (isa.h).
#include <atomic>
#include <cstdlib>
#include <string>

#include "engine/error.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/isa.h"

namespace hr::cpu {

void isa_internal_error(const char* what) { throw Error(what); }

namespace {

constexpr const char* kIsaNames[] = {"avx2", "avx512"};

bool isa_supported(int isa) {
  if (isa == 0) return true;  // the build's baseline
#if defined(HR_CPU_AVX512) && (defined(__x86_64__) || defined(__i386__))
  // what -march=x86-64-v4 may use; libgcc checks that the OS saves the AVX-512 state
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512cd");
#else
  return false;
#endif
}

int parse_isa(const std::string& name, const char* from) {
  for (int i = 0; i < 2; ++i)
    if (name == kIsaNames[i]) {
      HR_CHECK(isa_supported(i), from, ": the CPU kernels cannot use ", name, " here (",
               i == 1 ? "this processor lacks AVX-512F/BW/DQ/VL/CD or the build has no AVX-512 copy"
                      : "",
               "); supported: ", cpu_isas_supported());
      return i;
    }
  throw Error(str_cat(from, ": unknown instruction set '", name, "' (avx2 or avx512)"));
}

// A process-wide choice: set_*, else read at the first call from environment variable `var`
// (parse(value, var)), else `fallback`.
template <class Parse>
int chosen(std::atomic<int>& slot, const char* var, Parse parse, int fallback) {
  int v = slot.load(std::memory_order_relaxed);
  if (v >= 0) return v;
  const char* env = std::getenv(var);
  v = env && *env ? parse(env, var) : fallback;
  slot.store(v, std::memory_order_relaxed);
  return v;
}

std::atomic<int> g_isa{-1};

int current() { return chosen(g_isa, "HR_CPU_ISA", parse_isa, isa_supported(1) ? 1 : 0); }

void check_conv(const kern::ConvShape& s, const char* op) {
  HR_CHECK(s.N >= 0 && s.C > 0 && s.H > 0 && s.W > 0 && s.K > 0 && s.R > 0 && s.S > 0 &&
               s.stride_h > 0 && s.stride_w > 0 && s.pad_h >= 0 && s.pad_w >= 0,
           op, ": invalid shape N=", s.N, " C=", s.C, " H=", s.H, " W=", s.W, " K=", s.K,
           " R=", s.R, " S=", s.S, " stride=", s.stride_h, "x", s.stride_w, " pad=", s.pad_h, "x",
           s.pad_w);
  HR_CHECK(s.P == (s.H + 2 * s.pad_h - s.R) / s.stride_h + 1 &&
               s.Q == (s.W + 2 * s.pad_w - s.S) / s.stride_w + 1 && s.P > 0 && s.Q > 0,
           op, ": output ", s.P, "x", s.Q, " does not follow from input ", s.H, "x", s.W,
           ", kernel ", s.R, "x", s.S, ", stride ", s.stride_h, "x", s.stride_w, ", pad ", s.pad_h,
           "x", s.pad_w);
}

// The build has the bf16 kernels and the processor runs them (whatever the kernels in use).
bool bf16_hardware() {
#if defined(HR_CPU_BF16) && (defined(__x86_64__) || defined(__i386__))
  return isa_supported(1) && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

bool bf16_supported() { return current() == 1 && bf16_hardware(); }

int parse_precision(const std::string& name, const char* from) {
  if (name == "fp32") return 0;
  if (name == "bf16") {
    HR_CHECK(bf16_supported(), from, ": bf16 products need the avx512 CPU kernels on a processor "
             "with AVX512_BF16 (kernels in use: ", kIsaNames[current()], "; available here: ",
             cpu_isas_supported(), "; AVX512_BF16 kernels built and supported here: ",
             bf16_hardware() ? "yes" : "no", ")");
    return 1;
  }
  throw Error(str_cat(from, ": unknown precision '", name, "' (fp32 or bf16)"));
}

std::atomic<int> g_precision{-1};

int precision() { return chosen(g_precision, "HR_CPU_PRECISION", parse_precision, 0); }

}  // namespace

bool bf16_products() { return precision() == 1 && current() == 1; }

const char* cpu_precision() { return precision() == 1 ? "bf16" : "fp32"; }

bool cpu_bf16_supported() { return bf16_supported(); }

void set_cpu_precision(const std::string& name) {
  g_precision.store(parse_precision(name, "set_cpu_precision"));
}

const char* cpu_isa() { return kIsaNames[current()]; }

std::string cpu_isas_supported() {
  std::string s;
  for (int i = 0; i < 2; ++i)
    if (isa_supported(i)) s += std::string(s.empty() ? "" : ", ") + kIsaNames[i];
  return s;
}

void set_cpu_isa(const std::string& name) {
  const int isa = parse_isa(name, "set_cpu_isa");
  HR_CHECK(isa == 1 || precision() == 0, "set_cpu_isa: ", name, " has no bf16 products (",
           "set_cpu_precision(\"fp32\") first)");
  g_isa.store(isa);
}

void conv2d_forward(const kern::ConvShape& s, const float* x, const float* w, const float* bias,
                    float* y, const kern::ConvEpilogue& ep) {
  check_conv(s, "conv2d_forward");
  current() == 1 ? avx512::conv2d_forward(s, x, w, bias, y, ep)
                 : avx2::conv2d_forward(s, x, w, bias, y, ep);
}

void conv2d_backward_data(const kern::ConvShape& s, const float* dy, const float* w, float* dx) {
  check_conv(s, "conv2d_backward_data");
  current() == 1 ? avx512::conv2d_backward_data(s, dy, w, dx)
                 : avx2::conv2d_backward_data(s, dy, w, dx);
}

void conv2d_backward_weight(const kern::ConvShape& s, const float* x, const float* dy, float* dw,
                            float* dbias) {
  check_conv(s, "conv2d_backward_weight");
  current() == 1 ? avx512::conv2d_backward_weight(s, x, dy, dw, dbias)
                 : avx2::conv2d_backward_weight(s, x, dy, dw, dbias);
}

int64_t conv2d_prepacked_size(const kern::ConvShape& s) {
  check_conv(s, "conv2d_prepacked_size");
  return current() == 1 ? avx512::conv2d_prepacked_size(s) : avx2::conv2d_prepacked_size(s);
}

void conv2d_prepack_weights(const kern::ConvShape& s, const float* w, float* packed) {
  HR_CHECK(conv2d_prepacked_size(s) > 0, "conv2d_prepack_weights: no prepacked kernel for ", s.K,
           "x", s.C, "x", s.R, "x", s.S, " weights on a ", s.N, "x", s.C, "x", s.H, "x", s.W,
           " input (", cpu_isa(), ")");
  current() == 1 ? avx512::conv2d_prepack_weights(s, w, packed)
                 : avx2::conv2d_prepack_weights(s, w, packed);
}

void conv2d_forward_prepacked(const kern::ConvShape& s, const float* x, const float* packed,
                              const float* bias, float* y, const kern::ConvEpilogue& ep) {
  HR_CHECK(conv2d_prepacked_size(s) > 0, "conv2d_forward_prepacked: no prepacked kernel for ",
           s.K, "x", s.C, "x", s.R, "x", s.S, " weights on a ", s.N, "x", s.C, "x", s.H, "x", s.W,
           " input (", cpu_isa(), ")");
  current() == 1 ? avx512::conv2d_forward_prepacked(s, x, packed, bias, y, ep)
                 : avx2::conv2d_forward_prepacked(s, x, packed, bias, y, ep);
}

void linear_forward(int64_t M, int64_t I, int64_t O, const float* x, const float* w,
                    const float* bias, float* y) {
  HR_CHECK(M >= 0 && I > 0 && O > 0, "linear_forward: invalid shape M=", M, " I=", I, " O=", O);
  current() == 1 ? avx512::linear_forward(M, I, O, x, w, bias, y)
                 : avx2::linear_forward(M, I, O, x, w, bias, y);
}

void linear_backward(int64_t M, int64_t I, int64_t O, const float* x, const float* w,
                     const float* dy, float* dx, float* dw, float* dbias) {
  HR_CHECK(M >= 0 && I > 0 && O > 0, "linear_backward: invalid shape M=", M, " I=", I, " O=", O);
  current() == 1 ? avx512::linear_backward(M, I, O, x, w, dy, dx, dw, dbias)
                 : avx2::linear_backward(M, I, O, x, w, dy, dx, dw, dbias);
}

}  // namespace hr::cpu

#if !defined(HR_CPU_AVX512)
// No AVX-512 copy in this build (not x86-64, or a compiler without -march=x86-64-v4): the
// dispatcher never calls these.
namespace hr::cpu::avx512 {
void conv2d_forward(const kern::ConvShape&, const float*, const float*, const float*, float*,
                    const kern::ConvEpilogue&) {
  isa_internal_error("no AVX-512 build of conv2d_forward");
}
void conv2d_backward_data(const kern::ConvShape&, const float*, const float*, float*) {
  isa_internal_error("no AVX-512 build of conv2d_backward_data");
}
void conv2d_backward_weight(const kern::ConvShape&, const float*, const float*, float*, float*) {
  isa_internal_error("no AVX-512 build of conv2d_backward_weight");
}
int64_t conv2d_prepacked_size(const kern::ConvShape&) {
  isa_internal_error("no AVX-512 build of conv2d_prepacked_size");
}
void conv2d_prepack_weights(const kern::ConvShape&, const float*, float*) {
  isa_internal_error("no AVX-512 build of conv2d_prepack_weights");
}
void conv2d_forward_prepacked(const kern::ConvShape&, const float*, const float*, const float*,
                              float*, const kern::ConvEpilogue&) {
  isa_internal_error("no AVX-512 build of conv2d_forward_prepacked");
}
void linear_forward(int64_t, int64_t, int64_t, const float*, const float*, const float*, float*) {
  isa_internal_error("no AVX-512 build of linear_forward");
}
void linear_backward(int64_t, int64_t, int64_t, const float*, const float*, const float*, float*,
                     float*, float*) {
  isa_internal_error("no AVX-512 build of linear_backward");
}
}  // namespace hr::cpu::avx512
#endif
