// Internal header of the CUDA backend (kernels/cuda/ only, never the engine):
//  - CUDA_CHECK / CUDNN_CHECK / CUBLAS_CHECK throw hr::Error naming file:line, the failing call
//    and the library's error string; HR_CUDA_LAUNCH_CHECK() follows every kernel launch.
//    CUDNN_CHECK / CUBLAS_CHECK need cudnn.h / cublas_v2.h included first.
//  - host helpers shared by the sources: stream mapping, SM count, grid sizing, vector width,
//    event timing of a candidate (time_ms), the current device, the HR_* switches;
//  - internal launchers implemented in one .cu and used by another (bias rows, column sums);
//  - with nvcc, device helpers: dtype <-> fp32, 16-byte vector packs, a block tree reduction.
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "engine/error.h"
#include "kernels/cuda/cuda_kernels.h"

namespace hr::cuda::detail {

// "kernels/cuda/x.cu" rather than the absolute path the compiler was given.
inline const char* short_path(const char* file) {
  const char* k = std::strstr(file, "kernels/");
  return k ? k : file;
}

[[noreturn]] inline void throw_call_error(const char* file, int line, const char* call,
                                          const char* name, const char* what) {
  throw ::hr::Error(::hr::str_cat(short_path(file), ":", line, ": ", call, " failed: ", name,
                                  " (", what, ")"));
}

// Never the legacy stream 0: a null Stream means the engine's default stream.
inline cudaStream_t stream_of(Stream s) {
  return s ? static_cast<cudaStream_t>(s) : static_cast<cudaStream_t>(default_stream());
}

int sm_count();  // of the current device, cached (runtime.cpp)

// Blocks for a grid-stride kernel over `work` items with `threads` per block: one full wave
// of 2048 resident threads per SM, no more than the work needs.
inline int64_t wave_blocks(int64_t work, int threads) {
  const int64_t need = (work + threads - 1) / threads;
  const int64_t wave = int64_t(sm_count()) * (2048 / threads);
  return need < 1 ? 1 : (need < wave ? need : wave);
}

inline size_t dt_size(DT dt) { return dt == DT::f32 ? 4 : 2; }
inline const char* dt_name(DT dt) {
  return dt == DT::f32 ? "f32" : dt == DT::f16 ? "f16" : dt == DT::bf16 ? "bf16" : "?";
}

// Largest V in {8,4,2,1} with V*elem <= 16 bytes, C % V == 0 and every pointer V*elem aligned.
inline int vec_width(int64_t C, size_t elem, std::initializer_list<const void*> ptrs) {
  for (int V = 8; V > 1; V >>= 1) {
    if (V * elem > 16 || C % V != 0) continue;
    bool ok = true;
    for (const void* p : ptrs)
      if (p && reinterpret_cast<uintptr_t>(p) % (V * elem) != 0) ok = false;
    if (ok) return V;
  }
  return 1;
}

// Every non-null pointer aligned to `bytes`.
inline bool aligned(size_t bytes, std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if (p && reinterpret_cast<uintptr_t>(p) % bytes != 0) return false;
  return true;
}

// Thread layout for [rows, C] kernels whose threads keep fixed columns: tx threads across
// Cv = C/V column vectors (a warp covers whole rows, so loads coalesce along C), ty rows.
struct RowTiling {
  int V = 1, tx = 1, ty = 1, col_tiles = 1;
  int64_t Cv = 0;
};
inline RowTiling row_tiling(int64_t C, int V, int threads = 256) {
  RowTiling t;
  t.V = V;
  t.Cv = C / V;
  t.col_tiles = int((t.Cv + 31) / 32);
  t.tx = int((t.Cv + t.col_tiles - 1) / t.col_tiles);
  t.ty = threads / t.tx > 0 ? threads / t.tx : 1;
  return t;
}

// Scratch memory from the caching allocator, returned (stream-ordered on s) at scope exit.
class Workspace {
 public:
  Workspace(size_t bytes, Stream s) : p_(alloc(bytes, s)), s_(s) {}
  ~Workspace() {
    try {
      free(p_, s_);
    } catch (...) {
    }
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(p_); }
  void* get() const { return p_; }

 private:
  void* p_;
  Stream s_;
};

// ---- internal launchers shared between files (elementwise.cu) ----
// y [M, C] (dt) += bias [C] (fp32), in place.
void add_bias_rows(DT dt, int64_t M, int64_t C, void* y, const float* bias, Stream st);
// out[n, c] = scale * sum_r x[n, r, c] for x [N, R, C] in dt; out is fp32 when out_f32, else dt.
// Deterministic (fixed-order partial sums, no atomics).
void column_sum(DT dt, int64_t N, int64_t R, int64_t C, const void* x, float scale, bool out_f32,
                void* out, Stream st);

}  // namespace hr::cuda::detail

#define CUDA_CHECK(call)                                                                 \
  do {                                                                                   \
    const cudaError_t hr_err_ = (call);                                                  \
    if (hr_err_ != cudaSuccess)                                                          \
      ::hr::cuda::detail::throw_call_error(__FILE__, __LINE__, #call,                    \
                                           cudaGetErrorName(hr_err_),                    \
                                           cudaGetErrorString(hr_err_));                 \
  } while (0)

#define CUDNN_CHECK(call)                                                                \
  do {                                                                                   \
    const cudnnStatus_t hr_st_ = (call);                                                 \
    if (hr_st_ != CUDNN_STATUS_SUCCESS)                                                  \
      ::hr::cuda::detail::throw_call_error(__FILE__, __LINE__, #call, "cuDNN error",     \
                                           cudnnGetErrorString(hr_st_));                 \
  } while (0)

#define CUBLAS_CHECK(call)                                                               \
  do {                                                                                   \
    const cublasStatus_t hr_st_ = (call);                                                \
    if (hr_st_ != CUBLAS_STATUS_SUCCESS)                                                 \
      ::hr::cuda::detail::throw_call_error(__FILE__, __LINE__, #call,                    \
                                           cublasGetStatusName(hr_st_),                  \
                                           cublasGetStatusString(hr_st_));               \
  } while (0)

#define HR_CUDA_LAUNCH_CHECK()                                                           \
  do {                                                                                   \
    const cudaError_t hr_err_ = cudaGetLastError();                                      \
    if (hr_err_ != cudaSuccess)                                                          \
      ::hr::cuda::detail::throw_call_error(__FILE__, __LINE__, "kernel launch",          \
                                           cudaGetErrorName(hr_err_),                    \
                                           cudaGetErrorString(hr_err_));                 \
  } while (0)

namespace hr::cuda::detail {

// The calling thread's current CUDA device (what per-device caches are keyed by).
inline int current_device() {
  int d = 0;
  CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

// Whether environment variable `name` is set and starts with `c` (the HR_* switches: "0"/"1").
inline bool env_starts_with(const char* name, char c) {
  const char* e = std::getenv(name);
  return e && e[0] == c;
}

// HR_ALLOW_TF32=1 (read once): f32 convolutions and matrix products may use TF32 tensor cores
// (cuDNN, cuBLAS); off by default, so f32 stays f32 as the CPU reference computes it.
inline bool allow_tf32() {
  static const bool on = env_starts_with("HR_ALLOW_TF32", '1');
  return on;
}

// Mean milliseconds of f() over 3 runs on cs, after one warm-up run (synchronises); f returns
// false when it declines or fails (then +inf). The per-shape choices of the convolution
// dispatcher (conv.cpp) and of cuDNN's graph-API plans (conv_cudnn_graph.cpp).
template <class F>
float time_ms(F&& f, cudaStream_t cs) {
  if (!f()) return INFINITY;
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  float ms = 0.f;
  bool ok = true;
  try {
    CUDA_CHECK(cudaEventRecord(start, cs));
    for (int i = 0; i < 3; ++i) ok = f() && ok;
    CUDA_CHECK(cudaEventRecord(stop, cs));
    CUDA_CHECK(cudaEventSynchronize(stop));
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  } catch (...) {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    throw;
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  return ok ? ms / 3.f : INFINITY;
}

}  // namespace hr::cuda::detail

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace hr::cuda::detail {

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// V consecutive elements moved as one (up to 16-byte) load or store.
template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <class T, int V>
__device__ __forceinline__ void load_f(const T* p, float (&out)[V]) {
  const Pack<T, V> pk = *reinterpret_cast<const Pack<T, V>*>(p);
#pragma unroll
  for (int i = 0; i < V; ++i) out[i] = to_f(pk.v[i]);
}

template <class T, int V>
__device__ __forceinline__ void store_f(T* p, const float (&in)[V]) {
  Pack<T, V> pk;
#pragma unroll
  for (int i = 0; i < V; ++i) pk.v[i] = from_f<T>(in[i]);
  *reinterpret_cast<Pack<T, V>*>(p) = pk;
}

// Sum of v over a block of Threads threads (blockDim.x == Threads) in a fixed pairing order, valid
// in every thread: deterministic for a given launch shape. Every thread must call it; it may be
// called repeatedly.
template <int Threads>
__device__ __forceinline__ double block_sum(double v) {
  __shared__ double sh[Threads];
  __syncthreads();  // the previous call's readers are done
  sh[threadIdx.x] = v;
  for (int s = Threads / 2; s > 0; s >>= 1) {
    __syncthreads();
    if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
  }
  // A barrier before everyone reads sh[0]: a read guarded by threadIdx.x == 0 alone is
  // if-converted by the compiler into an unconditional load (racecheck, H100).
  __syncthreads();
  return sh[0];
}

// Sum sh[y][0..W) over y in [0, ny) into sh[0][...]; sh is row-major [ny][W] in shared memory,
// thread (x, y) owns columns [x*V, x*V+V). Fixed pairing order, so results are deterministic.
// Every thread of the block must call it.
template <int V>
__device__ __forceinline__ void block_sum_rows(float* sh, int W, int ny, int x, int y) {
  int len = ny;
  while (len > 1) {
    const int half = (len + 1) >> 1;
    __syncthreads();
    if (y < len - half) {
#pragma unroll
      for (int i = 0; i < V; ++i) sh[y * W + x * V + i] += sh[(y + half) * W + x * V + i];
    }
    len = half;
  }
  __syncthreads();
}

}  // namespace hr::cuda::detail

// Runs the following statement with T bound to the storage type of dt.
#define HR_DISPATCH_DT(dt, T, ...)                                                       \
  do {                                                                                   \
    switch (dt) {                                                                        \
      case ::hr::cuda::DT::f32: { using T = float; __VA_ARGS__; break; }                 \
      case ::hr::cuda::DT::f16: { using T = __half; __VA_ARGS__; break; }                \
      case ::hr::cuda::DT::bf16: { using T = __nv_bfloat16; __VA_ARGS__; break; }        \
      default: throw ::hr::Error("cuda: unknown dtype");                                 \
    }                                                                                    \
  } while (0)

// Calls f(std::integral_constant<int, V>{}) for V in {1, 2, 4, 8}, never instantiating a
// V with V * sizeof(T) > 16.
namespace hr::cuda::detail {
template <class T, class F>
void dispatch_vec(int V, F&& f) {
  switch (V) {
    case 8:
      if constexpr (sizeof(T) <= 2) {
        f(std::integral_constant<int, 8>{});
        return;
      }
      break;
    case 4: f(std::integral_constant<int, 4>{}); return;
    case 2: f(std::integral_constant<int, 2>{}); return;
    default: break;
  }
  f(std::integral_constant<int, 1>{});
}
}  // namespace hr::cuda::detail
#endif  // __CUDACC__
