// CUDA 2-D convolution (NHWC activations, KRSC weights): cuDNN v9, through its graph API
// (conv_cudnn_graph.h: every engine configuration the heuristics offer, timed; unless
// HR_CUDNN_API=legacy) and, for what that declines, its legacy API
// (cudnnConvolution{Forward,BackwardData,BackwardFilter} with NHWC descriptors, fp32 compute);
// and the dispatcher that chooses per (device, shape, dtype, op) between cuDNN and our
// implicit-GEMM kernels (conv_igemm.h).
//
// cuDNN's legacy path: descriptors are built once per shape; the algorithm of each op is chosen
// by cudnnFind*Ex on the call's own buffers the first time and cached, with its workspace from
// hr::cuda::alloc. f16/bf16 use tensor-op math; f32 uses FMA math (true fp32) unless
// HR_ALLOW_TF32=1 (read once) lets cuDNN use TF32. bias is added by a row kernel, dbias is a
// deterministic column sum of dy.
// Dispatcher: HR_CONV_BACKEND=cudnn|igemm forces a backend (igemm falls back to cuDNN where
// it declines a shape); otherwise, the first time a (shape, dtype, op) is seen and
// igemm::supported() holds, both run once as warm-up and then 3 times between CUDA events on
// the call's stream, and the faster is kept.
// Graph capture: timing and cuDNN's search synchronise, so neither may run while the stream is
// capturing; a (shape, dtype, op) still to be chosen then throws (and fails the capture),
// asking for an eager warm-up step. Chosen ones run as usual (workspaces come from the
// capture-aware allocator).
#include <cudnn.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/conv_cudnn_graph.h"
#include "kernels/cuda/conv_igemm.h"

namespace hr::cuda {
namespace detail {
// runtime.cpp: records `what` as the failure of the capture in progress, then throws it.
[[noreturn]] void refuse_in_capture(const std::string& what);
}  // namespace detail

namespace {

using kern::ConvShape;

enum Op { kFwd = 0, kBwdData = 1, kBwdWeight = 2 };
enum class Backend : int8_t { unknown, cudnn, igemm };

const char* op_name(int op) {
  return op == kFwd ? "conv2d_forward" : op == kBwdData ? "conv2d_backward_data"
                                                        : "conv2d_backward_weight";
}

struct Key {
  int device, dt;
  int64_t N, C, H, W, K, R, S, sh, sw, ph, pw;
  auto tie() const { return std::tie(device, dt, N, C, H, W, K, R, S, sh, sw, ph, pw); }
  bool operator<(const Key& o) const { return tie() < o.tie(); }
};

struct Algo {
  bool found = false;
  int algo = 0;
  size_t workspace = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};

struct Entry {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnMathType_t find_math = CUDNN_DEFAULT_MATH;
  Algo algo[3];
  Backend backend[3] = {Backend::unknown, Backend::unknown, Backend::unknown};
  // cuDNN's graph API (conv_cudnn_graph.h): the chosen plan per op, once tried (graph_tried)
  std::shared_ptr<cudnn_graph::Plan> plan[3];
  bool graph_tried[3] = {false, false, false};
};

// Guards the cache, the handles and every cuDNN call (a handle is not thread-safe).
std::mutex g_mu;
int64_t g_graph_plans = 0;  // (shape, dtype, op) served by the graph API (under g_mu)

std::map<Key, std::unique_ptr<Entry>>& cache() {
  static auto* m = new std::map<Key, std::unique_ptr<Entry>>;
  return *m;
}

cudnnHandle_t handle(int device) {
  static auto* handles = new std::vector<cudnnHandle_t>;
  if (device >= int(handles->size())) handles->resize(device + 1, nullptr);
  if (!(*handles)[device]) CUDNN_CHECK(cudnnCreate(&(*handles)[device]));
  return (*handles)[device];
}

Backend forced_backend() {
  const char* e = std::getenv("HR_CONV_BACKEND");
  if (!e || !*e || std::strcmp(e, "auto") == 0) return Backend::unknown;
  if (std::strcmp(e, "cudnn") == 0) return Backend::cudnn;
  if (std::strcmp(e, "igemm") == 0) return Backend::igemm;
  throw Error(str_cat("conv2d: HR_CONV_BACKEND=", e, " is not one of auto, cudnn, igemm"));
}

cudnnDataType_t cudnn_type(DT dt) {
  switch (dt) {
    case DT::f32: return CUDNN_DATA_FLOAT;
    case DT::f16: return CUDNN_DATA_HALF;
    case DT::bf16: return CUDNN_DATA_BFLOAT16;
  }
  throw Error("conv2d: unknown dtype");
}

std::string shape_of(const ConvShape& s) {
  return str_cat("x [", s.N, ",", s.H, ",", s.W, ",", s.C, "], w [", s.K, ",", s.R, ",", s.S,
                 ",", s.C, "], stride ", s.stride_h, "x", s.stride_w, ", pad ", s.pad_h, "x",
                 s.pad_w, ", y [", s.N, ",", s.P, ",", s.Q, ",", s.K, "]");
}

// The cache entry of (current device, s, dt), descriptors built on first use.
Entry* entry(const ConvShape& s, DT dt) {
  const Key key{detail::current_device(), int(dt), s.N, s.C, s.H, s.W, s.K, s.R, s.S,
                s.stride_h, s.stride_w, s.pad_h, s.pad_w};
  std::lock_guard<std::mutex> lock(g_mu);
  auto& m = cache();
  auto it = m.find(key);
  if (it != m.end()) return it->second.get();
  const int64_t big = std::max({s.N * s.H * s.W * s.C, s.N * s.P * s.Q * s.K, s.K * s.R * s.S * s.C});
  HR_CHECK(big < INT_MAX && s.P > 0 && s.Q > 0, "conv2d: ", shape_of(s),
           " is outside what cuDNN's 4-D descriptors take (positive output, < 2^31 elements)");
  auto e = std::make_unique<Entry>();
  const cudnnDataType_t t = cudnn_type(dt);
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&e->x));
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&e->y));
  CUDNN_CHECK(cudnnCreateFilterDescriptor(&e->w));
  CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&e->conv));
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(e->x, CUDNN_TENSOR_NHWC, t, int(s.N), int(s.C), int(s.H),
                                         int(s.W)));
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(e->y, CUDNN_TENSOR_NHWC, t, int(s.N), int(s.K), int(s.P),
                                         int(s.Q)));
  CUDNN_CHECK(cudnnSetFilter4dDescriptor(e->w, t, CUDNN_TENSOR_NHWC, int(s.K), int(s.C), int(s.R),
                                         int(s.S)));
  CUDNN_CHECK(cudnnSetConvolution2dDescriptor(e->conv, int(s.pad_h), int(s.pad_w),
                                              int(s.stride_h), int(s.stride_w), 1, 1,
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  e->find_math = dt == DT::f32 ? (detail::allow_tf32() ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH)
                               : CUDNN_TENSOR_OP_MATH;
  Entry* raw = e.get();
  m.emplace(key, std::move(e));
  return raw;
}

// Choosing op's algorithm for (s, dt) times candidates or searches, which synchronises: when
// st is capturing, throws the warm-up error instead.
void refuse_choice_in_capture(int op, const ConvShape& s, DT dt, Stream st) {
  if (!is_capturing(st)) return;
  detail::refuse_in_capture(str_cat(op_name(op), ": ", shape_of(s), " in ", detail::dt_name(dt),
                                    " is first seen during CUDA graph capture; its algorithm is "
                                    "chosen by timing, which cannot run while capturing: run the "
                                    "step once before capturing"));
}

// Workspace cuDNN's search may use: the largest any algorithm asks for, within half of the
// free device memory and 1 GiB.
size_t find_workspace_cap() {
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return std::min<size_t>(free_b / 2, size_t(1) << 30);
}

// Transform-domain algorithms (FFT, FFT tiling, non-fused Winograd) round their transforms
// to the storage type: in f16/bf16 they lose far more than the fp32-accumulated GEMM-based
// algorithms (seen on an H100: bf16 weight gradients off by 7%), so only f32 may use them.
bool precise_enough(int op, int algo, DT dt) {
  if (dt == DT::f32) return true;
  if (op == kFwd)
    return algo != CUDNN_CONVOLUTION_FWD_ALGO_FFT && algo != CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING &&
           algo != CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
  if (op == kBwdData)
    return algo != CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT &&
           algo != CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING &&
           algo != CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED;
  return algo != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT &&
         algo != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING &&
         algo != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED;
}

// cuDNN's non-deterministic algorithms are taken only when no deterministic algorithm runs the
// shape, in every dtype: a step then repeats bit for bit (as on the CPU, and as our
// implicit-GEMM kernels' split-K sums in a fixed order), and in f16/bf16 those algorithms
// accumulate partial sums into the half-precision output with atomics, rounding at every add
// (bf16 weight gradients came out up to 25% off on an H100: elements whose partial sums
// cancel).
template <class Perf>
Algo pick(const Perf* perf, int n, size_t ws_limit, const ConvShape& s, DT dt, int op) {
  for (int pass = 0; pass < 2; ++pass) {
    for (int i = 0; i < n; ++i) {
      const bool det_ok = pass == 1 || perf[i].determinism == CUDNN_DETERMINISTIC;
      if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].memory > ws_limit || !det_ok ||
          !precise_enough(op, int(perf[i].algo), dt))
        continue;
      Algo a;
      a.found = true;
      a.algo = int(perf[i].algo);
      a.workspace = perf[i].memory;
      a.math = perf[i].mathType;
      return a;
    }
  }
  throw Error(str_cat(op_name(op), ": cuDNN has no algorithm for ", shape_of(s), " in ",
                      detail::dt_name(dt)));
}

// Runs op with cuDNN: pointers (a, b, out) are fwd (x, w, y), bwd-data (dy, w, dx),
// bwd-weight (x, dy, dw). The first call per entry and op searches the algorithm.
void cudnn_run(int op, Entry* e, const ConvShape& s, DT dt, const void* a, const void* b,
               void* out, Stream st) {
  const float one = 1.f, zero = 0.f;
  const int device = detail::current_device();
  std::lock_guard<std::mutex> lock(g_mu);
  cudnnHandle_t h = handle(device);
  CUDNN_CHECK(cudnnSetStream(h, detail::stream_of(st)));
  if (cudnn_graph::enabled()) {  // the graph API first; the legacy API for what it declines
    if (!e->graph_tried[op]) {
      refuse_choice_in_capture(op, s, dt, st);
      e->plan[op] = cudnn_graph::choose(op, s, dt, dt == DT::f32 && detail::allow_tf32(),
                                        find_workspace_cap(), a, b, out, h, st);
      e->graph_tried[op] = true;
      if (e->plan[op]) ++g_graph_plans;
    }
    if (e->plan[op]) {
      cudnn_graph::run(*e->plan[op], a, b, out, h, st);
      return;
    }
  }
  Algo& al = e->algo[op];
  if (!al.found) {
    refuse_choice_in_capture(op, s, dt, st);
    CUDNN_CHECK(cudnnSetConvolutionMathType(e->conv, e->find_math));
    const size_t cap = find_workspace_cap();
    size_t want = 0;
    int max_n = 0, got = 0;
    if (op == kFwd) {
      for (int i = 0; i < CUDNN_CONVOLUTION_FWD_ALGO_COUNT; ++i) {
        size_t sz = 0;
        if (cudnnGetConvolutionForwardWorkspaceSize(h, e->x, e->w, e->conv, e->y,
                                                    cudnnConvolutionFwdAlgo_t(i), &sz) ==
                CUDNN_STATUS_SUCCESS && sz <= cap)
          want = std::max(want, sz);
      }
      CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &max_n));
      std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(std::max(max_n, 1));
      detail::Workspace ws(want, st);
      CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(h, e->x, a, e->w, b, e->conv, e->y, out,
                                                         max_n, &got, perf.data(), ws.get(), want));
      al = pick(perf.data(), got, want, s, dt, op);
    } else if (op == kBwdData) {
      for (int i = 0; i < CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT; ++i) {
        size_t sz = 0;
        if (cudnnGetConvolutionBackwardDataWorkspaceSize(h, e->w, e->y, e->conv, e->x,
                                                         cudnnConvolutionBwdDataAlgo_t(i), &sz) ==
                CUDNN_STATUS_SUCCESS && sz <= cap)
          want = std::max(want, sz);
      }
      CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &max_n));
      std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(std::max(max_n, 1));
      detail::Workspace ws(want, st);
      CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(h, e->w, b, e->y, a, e->conv, e->x,
                                                              out, max_n, &got, perf.data(),
                                                              ws.get(), want));
      al = pick(perf.data(), got, want, s, dt, op);
    } else {
      for (int i = 0; i < CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT; ++i) {
        size_t sz = 0;
        if (cudnnGetConvolutionBackwardFilterWorkspaceSize(h, e->x, e->y, e->conv, e->w,
                                                           cudnnConvolutionBwdFilterAlgo_t(i),
                                                           &sz) == CUDNN_STATUS_SUCCESS &&
            sz <= cap)
          want = std::max(want, sz);
      }
      CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &max_n));
      std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(std::max(max_n, 1));
      detail::Workspace ws(want, st);
      CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(h, e->x, a, e->y, b, e->conv,
                                                                e->w, out, max_n, &got,
                                                                perf.data(), ws.get(), want));
      al = pick(perf.data(), got, want, s, dt, op);
    }
  }
  CUDNN_CHECK(cudnnSetConvolutionMathType(e->conv, al.math));
  detail::Workspace ws(al.workspace, st);
  if (op == kFwd) {
    CUDNN_CHECK(cudnnConvolutionForward(h, &one, e->x, a, e->w, b, e->conv,
                                        cudnnConvolutionFwdAlgo_t(al.algo), ws.get(),
                                        al.workspace, &zero, e->y, out));
  } else if (op == kBwdData) {
    CUDNN_CHECK(cudnnConvolutionBackwardData(h, &one, e->w, b, e->y, a, e->conv,
                                             cudnnConvolutionBwdDataAlgo_t(al.algo), ws.get(),
                                             al.workspace, &zero, e->x, out));
  } else {
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, &one, e->x, a, e->y, b, e->conv,
                                               cudnnConvolutionBwdFilterAlgo_t(al.algo),
                                               ws.get(), al.workspace, &zero, e->w, out));
  }
}

// run_cudnn() computes the op with cuDNN; run_igemm() with igemm, false when it declines.
template <class CudnnFn, class IgemmFn>
void dispatch(int op, const ConvShape& s, DT dt, Stream st, CudnnFn&& run_cudnn,
              IgemmFn&& run_igemm) {
  const Backend forced = forced_backend();
  if (forced == Backend::cudnn) return run_cudnn();
  if (forced == Backend::igemm) {
    if (!run_igemm()) run_cudnn();
    return;
  }
  Entry* e = entry(s, dt);
  Backend b;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    b = e->backend[op];
  }
  if (b == Backend::unknown) {
    b = Backend::cudnn;
    if (igemm::supported(s, dt)) {
      refuse_choice_in_capture(op, s, dt, st);
      const cudaStream_t cs = detail::stream_of(st);
      const float t_igemm = detail::time_ms(run_igemm, cs);
      const float t_cudnn = detail::time_ms([&] { run_cudnn(); return true; }, cs);
      if (t_igemm < t_cudnn) b = Backend::igemm;
    }
    std::lock_guard<std::mutex> lock(g_mu);
    e->backend[op] = b;
  }
  if (b == Backend::igemm && run_igemm()) return;
  run_cudnn();
}

}  // namespace

bool conv_cudnn_graph_enabled() { return cudnn_graph::enabled(); }
int64_t conv_cudnn_graph_plans() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_graph_plans;
}

// x [N,H,W,C], w [K,R,S,C], bias [K] fp32 or nullptr -> y [N,P,Q,K]
void conv2d_forward(const ConvShape& s, DT dt, const void* x, const void* w, const float* bias,
                    void* y, Stream st) {
  if (s.N * s.K * s.P * s.Q <= 0) return;
  dispatch(
      kFwd, s, dt, st,
      [&] {
        cudnn_run(kFwd, entry(s, dt), s, dt, x, w, y, st);
        detail::add_bias_rows(dt, s.N * s.P * s.Q, s.K, y, bias, st);
      },
      [&] { return igemm::forward(s, dt, x, w, bias, y, st); });
}

// dy [N,P,Q,K], w [K,R,S,C] -> dx [N,H,W,C]
void conv2d_backward_data(const ConvShape& s, DT dt, const void* dy, const void* w, void* dx,
                          Stream st) {
  if (s.N * s.C * s.H * s.W <= 0) return;
  dispatch(
      kBwdData, s, dt, st, [&] { cudnn_run(kBwdData, entry(s, dt), s, dt, dy, w, dx, st); },
      [&] { return igemm::backward_data(s, dt, dy, w, dx, st); });
}

// x [N,H,W,C], dy [N,P,Q,K] -> dw [K,R,S,C] (dt), dbias [K] fp32 or nullptr
void conv2d_backward_weight(const ConvShape& s, DT dt, const void* x, const void* dy, void* dw,
                            float* dbias, Stream st) {
  if (s.K * s.R * s.S * s.C <= 0) return;
  if (s.N * s.P * s.Q <= 0) {  // no output positions: zero gradients
    memset_zero(dw, size_t(s.K * s.R * s.S * s.C) * detail::dt_size(dt), st);
    if (dbias) memset_zero(dbias, sizeof(float) * size_t(s.K), st);
    return;
  }
  dispatch(
      kBwdWeight, s, dt, st,
      [&] {
        cudnn_run(kBwdWeight, entry(s, dt), s, dt, x, dy, dw, st);
        if (dbias) detail::column_sum(dt, 1, s.N * s.P * s.Q, s.K, dy, 1.f, true, dbias, st);
      },
      [&] { return igemm::backward_weight(s, dt, x, dy, dw, dbias, st); });
}

}  // namespace hr::cuda
