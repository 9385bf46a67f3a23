// CUDA element-wise kernels (relu forward/backward, add, axpy, scale, fill), dtype conversion,
// and two row helpers used by conv/linear/pool: bias added to [M, C] rows and deterministic
// column sums of [N, R, C]. Grid-stride loops; 16-byte vector loads when every pointer allows.
#include <algorithm>
#include <memory>

#include "kernels/cuda/check.h"

namespace hr::cuda {
namespace {

using detail::from_f;
using detail::load_f;
using detail::Pack;
using detail::store_f;
using detail::to_f;

enum class Ew { relu, relu_bwd, add, axpy, scale, fill };

template <Ew op>
__device__ __forceinline__ float ew_apply(float a, float b, float alpha) {
  if constexpr (op == Ew::relu) return a < 0.f ? 0.f : a;  // NaN propagates, as torch.relu
  if constexpr (op == Ew::relu_bwd) return a <= 0.f ? 0.f : b;  // a = relu output, b = dy
  if constexpr (op == Ew::add) return a + b;
  if constexpr (op == Ew::axpy) return fmaf(alpha, a, b);  // b = old y
  if constexpr (op == Ew::scale) return alpha * a;
  return alpha;  // fill
}

template <Ew op>
constexpr bool uses_a() { return op != Ew::fill; }
template <Ew op>
constexpr bool uses_b() { return op == Ew::relu_bwd || op == Ew::add || op == Ew::axpy; }

// a, b, y [n]; vec: all pointers 16-byte aligned.
template <class T, Ew op>
__global__ void ew_kernel(int64_t n, const T* a, const T* b, T* y, float alpha,
                          bool vec) {
  constexpr int V = 16 / sizeof(T);
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec) {
    const int64_t nv = n / V;
    for (int64_t i = tid; i < nv; i += stride) {
      float va[V] = {}, vb[V] = {}, out[V];
      if constexpr (uses_a<op>()) load_f<T, V>(a + i * V, va);
      if constexpr (uses_b<op>()) load_f<T, V>(b + i * V, vb);
#pragma unroll
      for (int k = 0; k < V; ++k) out[k] = ew_apply<op>(va[k], vb[k], alpha);
      store_f<T, V>(y + i * V, out);
    }
    done = nv * V;
  }
  for (int64_t i = done + tid; i < n; i += stride) {
    const float va = uses_a<op>() ? to_f(a[i]) : 0.f;
    const float vb = uses_b<op>() ? to_f(b[i]) : 0.f;
    y[i] = from_f<T>(ew_apply<op>(va, vb, alpha));
  }
}

template <Ew op>
void ew_launch(DT dt, int64_t n, const void* a, const void* b, void* y, float alpha, Stream st) {
  if (n <= 0) return;
  const bool vec = detail::aligned(16, {a, b, y});
  HR_DISPATCH_DT(dt, T, {
    constexpr int V = 16 / sizeof(T);
    const int64_t blocks = detail::wave_blocks(vec ? (n + V - 1) / V : n, 256);
    ew_kernel<T, op><<<unsigned(blocks), 256, 0, detail::stream_of(st)>>>(
        n, static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(y), alpha, vec);
  });
  HR_CUDA_LAUNCH_CHECK();
}

// x [n] (Tin) -> y [n] (Tout)
template <class Tin, class Tout>
__global__ void convert_kernel(int64_t n, const Tin* x, Tout* y,
                               bool vec) {
  constexpr int V = 4;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec) {
    const int64_t nv = n / V;
    for (int64_t i = tid; i < nv; i += stride) {
      float v[V];
      load_f<Tin, V>(x + i * V, v);
      store_f<Tout, V>(y + i * V, v);
    }
    done = nv * V;
  }
  for (int64_t i = done + tid; i < n; i += stride) y[i] = from_f<Tout>(to_f(x[i]));
}

template <class Tin>
void convert_from(int64_t n, const Tin* x, DT to, void* y, Stream st) {
  const bool vec = detail::aligned(4 * sizeof(Tin), {x}) && detail::aligned(4 * detail::dt_size(to), {y});
  const int64_t blocks = detail::wave_blocks(vec ? (n + 3) / 4 : n, 256);
  const cudaStream_t cs = detail::stream_of(st);
  HR_DISPATCH_DT(to, Tout, {
    convert_kernel<Tin, Tout><<<unsigned(blocks), 256, 0, cs>>>(n, x, static_cast<Tout*>(y), vec);
  });
  HR_CUDA_LAUNCH_CHECK();
}

// y [M, C] += bias [C]; thread (x, y) of the block owns column vector blockIdx.x*tx + x.
template <class T, int V>
__global__ void bias_rows_kernel(int64_t M, int64_t C, T* y, const float* __restrict__ bias) {
  const int64_t cv = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (cv * V >= C) return;
  float b[V];
#pragma unroll
  for (int i = 0; i < V; ++i) b[i] = bias[cv * V + i];
  for (int64_t r = int64_t(blockIdx.y) * blockDim.y + threadIdx.y; r < M;
       r += int64_t(gridDim.y) * blockDim.y) {
    T* p = y + r * C + cv * V;
    float v[V];
    load_f<T, V>(p, v);
#pragma unroll
    for (int i = 0; i < V; ++i) v[i] += b[i];
    store_f<T, V>(p, v);
  }
}

// Stage 1 of column_sum: part[n][split][C] = sum of x[n, rows of split, :] in fp32.
template <class T, int V>
__global__ void colsum_partial_kernel(int64_t R, int64_t C, int64_t rows_per_split,
                                      const T* __restrict__ x, float* __restrict__ part) {
  __shared__ float sh[256 * V];
  const int tx = blockDim.x, ty = blockDim.y;
  const int64_t cv = int64_t(blockIdx.x) * tx + threadIdx.x;
  const int64_t n = blockIdx.y, split = blockIdx.z;
  const int64_t r0 = split * rows_per_split, r1 = min(R, r0 + rows_per_split);
  float acc[V] = {};
  if (cv * V < C) {
    const T* xn = x + n * R * C + cv * V;
    for (int64_t r = r0 + threadIdx.y; r < r1; r += ty) {
      float v[V];
      load_f<T, V>(xn + r * C, v);
#pragma unroll
      for (int i = 0; i < V; ++i) acc[i] += v[i];
    }
  }
  const int W = tx * V;
#pragma unroll
  for (int i = 0; i < V; ++i) sh[threadIdx.y * W + threadIdx.x * V + i] = acc[i];
  detail::block_sum_rows<V>(sh, W, ty, threadIdx.x, threadIdx.y);
  if (threadIdx.y == 0 && cv * V < C) {
    float* out = part + (n * gridDim.z + split) * C + cv * V;
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = sh[threadIdx.x * V + i];
  }
}

// Stage 2: out[n, c] = scale * sum over splits (double, fixed order).
template <class Tout>
__global__ void colsum_final_kernel(int64_t N, int64_t C, int64_t splits, const float* part,
                                    float scale, Tout* out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < N * C;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / C, c = i % C;
    double s = 0;
    for (int64_t k = 0; k < splits; ++k) s += part[(n * splits + k) * C + c];
    out[i] = from_f<Tout>(float(s * double(scale)));
  }
}

}  // namespace

// ---- element-wise: every tensor [n], in place allowed (y == x) ----
void relu_forward(DT dt, int64_t n, const void* x, void* y, Stream st) {
  ew_launch<Ew::relu>(dt, n, x, nullptr, y, 0.f, st);
}
void relu_backward(DT dt, int64_t n, const void* y, const void* dy, void* dx, Stream st) {
  ew_launch<Ew::relu_bwd>(dt, n, y, dy, dx, 0.f, st);
}
void add(DT dt, int64_t n, const void* a, const void* b, void* y, Stream st) {
  ew_launch<Ew::add>(dt, n, a, b, y, 0.f, st);
}
void axpy(DT dt, int64_t n, float alpha, const void* x, void* y, Stream st) {
  ew_launch<Ew::axpy>(dt, n, x, y, y, alpha, st);
}
void scale(DT dt, int64_t n, float alpha, const void* x, void* y, Stream st) {
  ew_launch<Ew::scale>(dt, n, x, nullptr, y, alpha, st);
}
void fill(DT dt, int64_t n, float value, void* y, Stream st) {
  ew_launch<Ew::fill>(dt, n, nullptr, nullptr, y, value, st);
}

// x [n] (from) -> y [n] (to)
void convert(int64_t n, DT from, const void* x, DT to, void* y, Stream st) {
  if (n <= 0) return;
  if (from == to) {
    memcpy_d2d(y, x, size_t(n) * detail::dt_size(from), st);
    return;
  }
  HR_DISPATCH_DT(from, Tin, convert_from<Tin>(n, static_cast<const Tin*>(x), to, y, st));
}

// y[i] = lut[i % C][x[i]] (0 outside sample n's valid size), the table in shared memory; each
// thread four bytes at a time.
struct LutShape {
  int64_t H, W;
  int C;
  const int64_t* size;  // [N][2] or nullptr
  // element i is inside its sample's valid rows and columns
  __device__ __forceinline__ bool valid(int64_t i) const {
    if (!size) return true;
    const int64_t p = i / C, w = p % W, hn = p / W, h = hn % H, n = hn / H;
    return h < size[2 * n] && w < size[2 * n + 1];
  }
};

__global__ void lut_u8_kernel(int64_t n, LutShape s, const uint8_t* __restrict__ x,
                              const float* __restrict__ lut, float* __restrict__ y, bool vec) {
  __shared__ float t[4 * 256];
  const int C = s.C;
  for (int i = threadIdx.x; i < C * 256; i += blockDim.x) t[i] = lut[i];
  __syncthreads();
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec) {
    const int64_t nv = n / 4;
    for (int64_t i = tid; i < nv; i += stride) {
      const uchar4 b = reinterpret_cast<const uchar4*>(x)[i];
      const int64_t e = 4 * i;
      const int c0 = int(e % C);
      float4 v;
      v.x = s.valid(e) ? t[c0 * 256 + b.x] : 0.f;
      v.y = s.valid(e + 1) ? t[((c0 + 1) % C) * 256 + b.y] : 0.f;
      v.z = s.valid(e + 2) ? t[((c0 + 2) % C) * 256 + b.z] : 0.f;
      v.w = s.valid(e + 3) ? t[((c0 + 3) % C) * 256 + b.w] : 0.f;
      reinterpret_cast<float4*>(y)[i] = v;
    }
    done = nv * 4;
  }
  for (int64_t i = done + tid; i < n; i += stride)
    y[i] = s.valid(i) ? t[int(i % C) * 256 + x[i]] : 0.f;
}

void lut_u8(int64_t N, int64_t H, int64_t W, int C, const uint8_t* x, const float* lut,
            const int64_t* size, float* y, Stream st) {
  const int64_t n = N * H * W * C;
  if (n <= 0) return;
  HR_CHECK(C >= 1 && C <= 4, "lut_u8: 1 to 4 channels, got ", C);
  const bool vec = detail::aligned(4, {x}) && detail::aligned(16, {y});
  const int64_t blocks = detail::wave_blocks(vec ? (n + 3) / 4 : n, 256);
  lut_u8_kernel<<<unsigned(blocks), 256, 0, detail::stream_of(st)>>>(n, LutShape{H, W, C, size},
                                                                      x, lut, y, vec);
  HR_CUDA_LAUNCH_CHECK();
}

namespace detail {

// y [M,C], bias [C]
void add_bias_rows(DT dt, int64_t M, int64_t C, void* y, const float* bias, Stream st) {
  if (M <= 0 || C <= 0 || !bias) return;
  const cudaStream_t cs = stream_of(st);
  HR_DISPATCH_DT(dt, T, {
    const RowTiling t = row_tiling(C, vec_width(C, sizeof(T), {y}));
    const int64_t gy = std::min<int64_t>((M + t.ty - 1) / t.ty,
                                         std::max<int64_t>(1, wave_blocks(M * t.Cv, 256) / t.col_tiles));
    const dim3 grid(t.col_tiles, unsigned(std::max<int64_t>(gy, 1))), block(t.tx, t.ty);
    dispatch_vec<T>(t.V, [&](auto v) {
      bias_rows_kernel<T, decltype(v)::value><<<grid, block, 0, cs>>>(M, C, static_cast<T*>(y), bias);
    });
  });
  HR_CUDA_LAUNCH_CHECK();
}

// x [N,R,C] -> out [N,C]
void column_sum(DT dt, int64_t N, int64_t R, int64_t C, const void* x, float scale, bool out_f32,
                void* out, Stream st) {
  if (N <= 0 || C <= 0) return;
  HR_CHECK(N <= 65535, "cuda column_sum: N = ", N, " exceeds 65535");
  const cudaStream_t cs = stream_of(st);
  int64_t splits = 0;
  std::unique_ptr<Workspace> ws;
  float* part = nullptr;
  if (R > 0) {
    HR_DISPATCH_DT(dt, T, {
      const RowTiling t = row_tiling(C, vec_width(C, sizeof(T), {x}));
      const int64_t target = int64_t(sm_count()) * 8;
      splits = std::max<int64_t>(1, target / (int64_t(t.col_tiles) * N));
      splits = std::min<int64_t>(splits, std::max<int64_t>(1, R / (int64_t(t.ty) * 4)));
      splits = std::min<int64_t>(splits, 65535);
      const int64_t rps = (R + splits - 1) / splits;
      splits = (R + rps - 1) / rps;
      ws = std::make_unique<Workspace>(sizeof(float) * N * splits * C, st);
      part = ws->as<float>();
      const dim3 grid(t.col_tiles, unsigned(N), unsigned(splits)), block(t.tx, t.ty);
      dispatch_vec<T>(t.V, [&](auto v) {
        colsum_partial_kernel<T, decltype(v)::value>
            <<<grid, block, 0, cs>>>(R, C, rps, static_cast<const T*>(x), part);
      });
    });
    HR_CUDA_LAUNCH_CHECK();
  }
  const unsigned blocks = unsigned(wave_blocks(N * C, 256));
  if (out_f32) {
    colsum_final_kernel<float><<<blocks, 256, 0, cs>>>(N, C, splits, part, scale,
                                                       static_cast<float*>(out));
  } else {
    HR_DISPATCH_DT(dt, T, {
      colsum_final_kernel<T><<<blocks, 256, 0, cs>>>(N, C, splits, part, scale, static_cast<T*>(out));
    });
  }
  HR_CUDA_LAUNCH_CHECK();
}

}  // namespace detail
}  // namespace hr::cuda
