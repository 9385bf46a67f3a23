// Benchmark: HRNet fuse layer j > i, out_i += upsample_nearest(BN(conv1x1(x_j))), fused
// (hr::cuda::fuse_up_conv1x1_accumulate: one kernel, conv at low resolution, upsample-add in
// the epilogue) vs the unfused baseline: cuDNN 1x1 conv (NHWC, best algorithm from
// cudnnFind*Ex) + a BN-affine kernel + a nearest-upsample kernel (materialising the map) + an
// add kernel. HRNet-W32 / W48 at a 256x192 input, every pair j > i.
// The fused result is validated against the baseline's before timing. CUDA events after
// warm-up, L2 flushed before every rep, median. TFLOP/s counts the 1x1 conv; GB/s counts the
// minimal traffic (x_j, w, and out_i read + written).
//   bench_cuda_fuse [--batch N] [--dtype bf16|f16] [--reps R] [--csv FILE]
// Exit status: 0, or 1 when the fused result disagreed with the baseline.
#include <cudnn.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "benchmarks/cuda_bench_util.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/fuse_upsample.h"

namespace {

using hr::bench::Args;
using hr::bench::Buf;
using hr::bench::Timer;
using hr::bench::to_float;
using hr::cuda::DT;

Args parse(int argc, char** argv) { return hr::bench::parse_args(argc, argv, "bench_cuda_fuse", false); }

template <class T>
__device__ __forceinline__ float tf(T v);
template <>
__device__ __forceinline__ float tf(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float tf(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T>
__device__ __forceinline__ T ft(float v);
template <>
__device__ __forceinline__ __half ft(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 ft(float v) { return __float2bfloat16_rn(v); }

template <class T>
__global__ void init_kernel(T* p, int64_t n, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint64_t z = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    p[i] = ft<T>(((float(z >> 40) / float(1 << 24)) * 2.f - 1.f) * scale);
  }
}
__global__ void init_f32_kernel(float* p, int n, float lo, float hi, uint64_t seed) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  uint64_t z = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
  z = (z ^ (z >> 31)) * 0xBF58476D1CE4E5B9ull;
  p[i] = lo + (hi - lo) * (float(z >> 40) / float(1 << 24));
}

// ---- the unfused baseline's own kernels (8 channels per thread, 16-byte accesses)
template <class T>
__global__ void affine_kernel(T* y, int64_t rows, int C, const float* scale, const float* shift) {
  const int64_t n8 = rows * C / 8;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n8;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint4 raw = reinterpret_cast<uint4*>(y)[i];
    T* v = reinterpret_cast<T*>(&raw);
    const int c0 = int((i * 8) % C);
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = ft<T>(tf(v[e]) * scale[c0 + e] + shift[c0 + e]);
    reinterpret_cast<uint4*>(y)[i] = raw;
  }
}
template <class T>
__global__ void upsample_kernel(const T* x, T* y, int N, int H, int W, int C, int f) {
  const int C8 = C / 8, OH = H * f, OW = W * f;
  const int64_t n8 = int64_t(N) * OH * OW * C8;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n8;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int c8 = int(i % C8);
    int64_t pix = i / C8;
    const int ow = int(pix % OW);
    pix /= OW;
    const int oh = int(pix % OH);
    const int n = int(pix / OH);
    reinterpret_cast<uint4*>(y)[i] =
        reinterpret_cast<const uint4*>(x)[((int64_t(n) * H + oh / f) * W + ow / f) * C8 + c8];
  }
}
template <class T>
__global__ void add_kernel(T* out, const T* u, int64_t n8) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n8;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint4 a = reinterpret_cast<uint4*>(out)[i];
    const uint4 b = reinterpret_cast<const uint4*>(u)[i];
    T* va = reinterpret_cast<T*>(&a);
    const T* vb = reinterpret_cast<const T*>(&b);
#pragma unroll
    for (int e = 0; e < 8; ++e) va[e] = ft<T>(tf(va[e]) + tf(vb[e]));
    reinterpret_cast<uint4*>(out)[i] = a;
  }
}

cudnnDataType_t cudnn_dt(DT dt) { return dt == DT::bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF; }

struct Row {
  std::string net, pair;
  int N, Cin, H, W, Cout, f;
  double fused_us, base_us, conv_us, err;
  bool valid;
};

template <class T>
void run_all(const Args& args, cudaStream_t st, cudnnHandle_t handle, std::vector<Row>& rows,
             bool& any_bad) {
  const DT dt = args.dt;
  const int res[4][2] = {{64, 48}, {32, 24}, {16, 12}, {8, 6}};
  const struct {
    const char* name;
    int c[4];
  } nets[] = {{"W32", {32, 64, 128, 256}}, {"W48", {48, 96, 192, 384}}};
  const size_t ws_bytes = size_t(512) << 20;
  Buf ws(ws_bytes);
  Timer timer(st);
  const float alpha = 1.f, beta = 0.f;
  const int blocks = 132 * 8;
  for (const auto& net : nets)
    for (int j = 1; j < 4; ++j)
      for (int i = 0; i < j; ++i) {
        const int N = args.batch, Cin = net.c[j], Cout = net.c[i], H = res[j][0], W = res[j][1];
        const int f = 1 << (j - i), OH = H * f, OW = W * f;
        const int64_t nx = int64_t(N) * H * W * Cin, nw = int64_t(Cout) * Cin,
                      nl = int64_t(N) * H * W * Cout, no = int64_t(N) * OH * OW * Cout;
        Buf x(nx * 2), w(nw * 2), t(nl * 2), u(no * 2), out0(no * 2), out_f(no * 2),
            out_b(no * 2), sc(Cout * 4), sh(Cout * 4);
        init_kernel<T><<<1024, 256, 0, st>>>(static_cast<T*>(x.p), nx, 11, 1.f);
        init_kernel<T><<<1024, 256, 0, st>>>(static_cast<T*>(w.p), nw, 12,
                                             1.f / std::sqrt(float(Cin)));
        init_kernel<T><<<1024, 256, 0, st>>>(static_cast<T*>(out0.p), no, 13, 1.f);
        init_f32_kernel<<<(Cout + 127) / 128, 128, 0, st>>>(static_cast<float*>(sc.p), Cout, 0.5f,
                                                             1.5f, 14);
        init_f32_kernel<<<(Cout + 127) / 128, 128, 0, st>>>(static_cast<float*>(sh.p), Cout,
                                                             -0.2f, 0.2f, 15);
        HR_CUDA_LAUNCH_CHECK();

        hr::kern::ResampleShape r;
        r.N = N;
        r.C = Cout;
        r.H = H;
        r.W = W;
        r.OH = OH;
        r.OW = OW;
        r.scale_h = r.scale_w = 1.f / float(f);

        cudnnTensorDescriptor_t xd, yd;
        cudnnFilterDescriptor_t wd;
        cudnnConvolutionDescriptor_t cd;
        CUDNN_CHECK(cudnnCreateTensorDescriptor(&xd));
        CUDNN_CHECK(cudnnCreateTensorDescriptor(&yd));
        CUDNN_CHECK(cudnnCreateFilterDescriptor(&wd));
        CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&cd));
        CUDNN_CHECK(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NHWC, cudnn_dt(dt), N, Cin, H, W));
        CUDNN_CHECK(cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NHWC, cudnn_dt(dt), N, Cout, H, W));
        CUDNN_CHECK(cudnnSetFilter4dDescriptor(wd, cudnn_dt(dt), CUDNN_TENSOR_NHWC, Cout, Cin, 1, 1));
        CUDNN_CHECK(cudnnSetConvolution2dDescriptor(cd, 0, 0, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION,
                                                    CUDNN_DATA_FLOAT));
        CUDNN_CHECK(cudnnSetConvolutionMathType(cd, CUDNN_TENSOR_OP_MATH));
        cudnnConvolutionFwdAlgoPerf_t perf[16];
        int n = 0;
        CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(handle, xd, x.p, wd, w.p, cd, yd, t.p,
                                                           16, &n, perf, ws.p, ws_bytes));
        int k = 0;
        while (k < n && perf[k].status != CUDNN_STATUS_SUCCESS) ++k;
        if (k == n) throw hr::Error("cudnnFind found no forward algorithm");
        const auto algo = perf[k].algo;

        auto conv = [&] {
          CUDNN_CHECK(cudnnConvolutionForward(handle, &alpha, xd, x.p, wd, w.p, cd, algo, ws.p,
                                              ws_bytes, &beta, yd, t.p));
        };
        auto base = [&] {
          conv();
          affine_kernel<T><<<blocks, 256, 0, st>>>(static_cast<T*>(t.p), int64_t(N) * H * W, Cout,
                                                   static_cast<const float*>(sc.p),
                                                   static_cast<const float*>(sh.p));
          upsample_kernel<T><<<blocks, 256, 0, st>>>(static_cast<const T*>(t.p),
                                                     static_cast<T*>(u.p), N, H, W, Cout, f);
          add_kernel<T><<<blocks, 256, 0, st>>>(static_cast<T*>(out_b.p),
                                                static_cast<const T*>(u.p), no / 8);
          HR_CUDA_LAUNCH_CHECK();
        };
        auto fused = [&] {
          if (!hr::cuda::fuse_up_conv1x1_accumulate(hr::cuda::UpMode::nearest, dt, r, Cin, x.p,
                                                    w.p, static_cast<const float*>(sc.p),
                                                    static_cast<const float*>(sh.p), out_f.p, st))
            throw hr::Error("fuse_up_conv1x1_accumulate: shape not supported");
        };

        // validate once from the same starting sum
        CUDA_CHECK(cudaMemcpyAsync(out_f.p, out0.p, no * 2, cudaMemcpyDeviceToDevice, st));
        CUDA_CHECK(cudaMemcpyAsync(out_b.p, out0.p, no * 2, cudaMemcpyDeviceToDevice, st));
        base();
        fused();
        CUDA_CHECK(cudaStreamSynchronize(st));
        std::vector<uint16_t> hf(no), hb(no);
        CUDA_CHECK(cudaMemcpy(hf.data(), out_f.p, no * 2, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(hb.data(), out_b.p, no * 2, cudaMemcpyDeviceToHost));
        double s2 = 0, worst = 0, max_abs = 0;
        for (int64_t e = 0; e < no; ++e) s2 += double(to_float(hb[e], dt)) * to_float(hb[e], dt);
        const double rms = std::sqrt(s2 / double(no));
        const double rtol = dt == DT::bf16 ? 2.4e-2 : 6e-3, atol = rtol * rms;
        for (int64_t e = 0; e < no; ++e) {
          const double a = to_float(hf[e], dt), b = to_float(hb[e], dt);
          const double d = std::fabs(a - b);
          max_abs = std::max(max_abs, std::isnan(a) ? INFINITY : d);
          worst = std::max(worst, std::isnan(a) ? INFINITY : d / (atol + rtol * std::fabs(b)));
        }
        Row row{net.name,
                "b" + std::to_string(j) + "->b" + std::to_string(i),
                N, Cin, H, W, Cout, f, 0, 0, 0, max_abs, worst <= 1.0};
        if (!row.valid) {
          any_bad = true;
          std::fprintf(stderr, "MISMATCH %s %s: worst error ratio %g, max abs err %g\n",
                       row.net.c_str(), row.pair.c_str(), worst, max_abs);
        }
        row.base_us = timer.median_us(base, args.reps);
        row.conv_us = timer.median_us(conv, args.reps);
        row.fused_us = timer.median_us(fused, args.reps);
        const double flop = 2.0 * double(N) * H * W * Cin * Cout;
        const double bytes = 2.0 * double(nx + nw + 2 * no);
        std::printf("| %s | %s | N%d %dx%d C%d->%d x%d | %8.1f | %8.1f | %8.1f | %6.1f | %7.0f | "
                    "%7.0f | %5.2f | %s |\n",
                    row.net.c_str(), row.pair.c_str(), N, H, W, Cin, Cout, f, row.fused_us,
                    row.base_us, row.conv_us, flop / (row.fused_us * 1e-6) * 1e-12,
                    bytes / (row.fused_us * 1e-6) * 1e-9, bytes / (row.base_us * 1e-6) * 1e-9,
                    row.base_us / row.fused_us, row.valid ? "ok" : "MISMATCH");
        std::fflush(stdout);
        rows.push_back(row);
        cudnnDestroyTensorDescriptor(xd);
        cudnnDestroyTensorDescriptor(yd);
        cudnnDestroyFilterDescriptor(wd);
        cudnnDestroyConvolutionDescriptor(cd);
      }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse(argc, argv);
    if (!hr::cuda::available()) {
      std::printf("bench_cuda_fuse: no CUDA device, nothing to do\n");
      return 0;
    }
    cudaStream_t st;
    CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudnnHandle_t handle;
    CUDNN_CHECK(cudnnCreate(&handle));
    CUDNN_CHECK(cudnnSetStream(handle, st));
    std::printf("bench_cuda_fuse: %s, batch %d, dtype %s, %d reps (median), L2 flushed\n\n",
                hr::cuda::device_name(0).c_str(), args.batch,
                args.dt == DT::bf16 ? "bf16" : "f16", args.reps);
    std::printf("| net | pair j->i | shape (low res) | fused us | baseline us | cuDNN conv "
                "alone us | fused TFLOP/s | fused GB/s | baseline GB/s | speedup "
                "(baseline/fused) | check |\n");
    std::printf("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
    std::vector<Row> rows;
    bool any_bad = false;
    if (args.dt == DT::bf16)
      run_all<__nv_bfloat16>(args, st, handle, rows, any_bad);
    else
      run_all<__half>(args, st, handle, rows, any_bad);
    if (!args.csv.empty()) {
      FILE* f = std::fopen(args.csv.c_str(), "w");
      if (!f) throw hr::Error("bench_cuda_fuse: cannot write " + args.csv);
      std::fprintf(f, "net,pair,N,Cin,H,W,Cout,factor,fused_us,baseline_us,cudnn_conv_us,"
                      "speedup,check,max_abs_err\n");
      for (const Row& r : rows)
        std::fprintf(f, "%s,%s,%d,%d,%d,%d,%d,%d,%.2f,%.2f,%.2f,%.3f,%s,%.3g\n", r.net.c_str(),
                     r.pair.c_str(), r.N, r.Cin, r.H, r.W, r.Cout, r.f, r.fused_us, r.base_us,
                     r.conv_us, r.base_us / r.fused_us, r.valid ? "ok" : "MISMATCH", r.err);
      std::fclose(f);
    }
    double lg = 0;
    for (const Row& r : rows) lg += std::log(r.base_us / r.fused_us);
    if (!rows.empty())
      std::printf("\ngeometric-mean speedup (baseline time / fused time) over %zu rows: %.3f\n",
                  rows.size(), std::exp(lg / rows.size()));
    cudnnDestroy(handle);
    cudaStreamDestroy(st);
    return any_bad ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_fuse: %s\n", e.what());
    return 2;
  }
}
