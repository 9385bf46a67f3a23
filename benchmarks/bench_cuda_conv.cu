// Benchmark: our implicit-GEMM convolutions (kernels/cuda/conv_igemm.h) vs cuDNN called directly
// (NHWC, same dtype, best algorithm from cudnnFind*Ex), forward / backward-data /
// backward-weight, at HRNet-W32 and W48 shapes for a 256x192 input: each branch's 3x3 s1 conv,
// the 3x3 s2 convs between branches and the 1x1 fuse convs.
// Every result of ours is validated against cuDNN's before timing. Timing: CUDA events around
// each rep after warm-up, L2 flushed (a buffer larger than L2 is written) before every rep,
// median reported. FLOP = 2*N*P*Q*K*C*R*S; bytes = the pass's inputs + output, each once.
//   bench_cuda_conv [--batch N] [--dtype bf16|f16] [--reps R] [--csv FILE] [--filter TEXT]
// Exit status: 0, or 1 when a result of ours disagreed with cuDNN.
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
#include "kernels/cuda/conv_igemm.h"
#include "kernels/cuda/cuda_kernels.h"

namespace {

using hr::bench::Args;
using hr::bench::Buf;
using hr::bench::Timer;
using hr::bench::to_float;
using hr::cuda::DT;
using hr::kern::ConvShape;

Args parse(int argc, char** argv) { return hr::bench::parse_args(argc, argv, "bench_cuda_conv", true); }

__global__ void init_kernel(uint16_t* p, int64_t n, uint64_t seed, float scale, int bf16) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint64_t z = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = (float(z >> 40) / float(1 << 24)) * 2.f - 1.f;  // uniform [-1, 1)
    const float v = u * scale;
    if (bf16) {
      const __nv_bfloat16 b = __float2bfloat16_rn(v);
      p[i] = *reinterpret_cast<const uint16_t*>(&b);
    } else {
      const __half h = __float2half_rn(v);
      p[i] = *reinterpret_cast<const uint16_t*>(&h);
    }
  }
}
void init(Buf& b, DT dt, uint64_t seed, float scale) {
  const int64_t n = int64_t(b.bytes / 2);
  init_kernel<<<1024, 256>>>(static_cast<uint16_t*>(b.p), n, seed, scale, dt == DT::bf16);
  HR_CUDA_LAUNCH_CHECK();
}

// Max |a - b| / (atol + rtol*|b|) over the buffers; <= 1 passes.
double mismatch(const Buf& a, const Buf& b, DT dt, double* max_abs) {
  std::vector<uint16_t> ha(a.bytes / 2), hb(b.bytes / 2);
  CUDA_CHECK(cudaMemcpy(ha.data(), a.p, a.bytes, cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(hb.data(), b.p, b.bytes, cudaMemcpyDeviceToHost));
  double s2 = 0;
  for (uint16_t v : hb) s2 += double(to_float(v, dt)) * to_float(v, dt);
  const double rms = std::sqrt(s2 / std::max<size_t>(1, hb.size()));
  const double rtol = dt == DT::bf16 ? 1.6e-2 : 4e-3, atol = rtol * rms + 1e-6;
  double worst = 0;
  *max_abs = 0;
  for (size_t i = 0; i < ha.size(); ++i) {
    const double x = to_float(ha[i], dt), y = to_float(hb[i], dt);
    const double e = std::fabs(x - y);
    if (std::isnan(x) || std::isnan(y)) return INFINITY;
    *max_abs = std::max(*max_abs, e);
    worst = std::max(worst, e / (atol + rtol * std::fabs(y)));
  }
  return worst;
}

struct Case {
  std::string net, layer;
  ConvShape s;
};

std::vector<Case> hrnet_cases(int batch) {
  std::vector<Case> v;
  const int64_t res[4][2] = {{64, 48}, {32, 24}, {16, 12}, {8, 6}};
  const struct {
    const char* name;
    int64_t c[4];
  } nets[] = {{"W32", {32, 64, 128, 256}}, {"W48", {48, 96, 192, 384}}};
  for (const auto& n : nets) {
    for (int b = 0; b < 4; ++b)
      v.push_back({n.name, "b" + std::to_string(b) + " 3x3s1",
                   ConvShape::make(batch, n.c[b], res[b][0], res[b][1], n.c[b], 3, 3, 1, 1, 1,
                                   1)});
    for (int b = 0; b < 3; ++b)
      v.push_back({n.name, "b" + std::to_string(b) + "->b" + std::to_string(b + 1) + " 3x3s2",
                   ConvShape::make(batch, n.c[b], res[b][0], res[b][1], n.c[b + 1], 3, 3, 2, 2,
                                   1, 1)});
    for (int j = 1; j < 4; ++j)
      for (int i = 0; i < j; ++i)
        v.push_back({n.name, "b" + std::to_string(j) + "->b" + std::to_string(i) + " 1x1",
                     ConvShape::make(batch, n.c[j], res[j][0], res[j][1], n.c[i], 1, 1, 1, 1, 0,
                                     0)});
  }
  return v;
}

cudnnDataType_t cudnn_dt(DT dt) { return dt == DT::bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF; }

struct Cudnn {
  cudnnHandle_t h = nullptr;
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  Cudnn(const ConvShape& s, DT dt, cudnnHandle_t handle) : h(handle) {
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NHWC, cudnn_dt(dt), int(s.N), int(s.C),
                                           int(s.H), int(s.W)));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NHWC, cudnn_dt(dt), int(s.N), int(s.K),
                                           int(s.P), int(s.Q)));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, cudnn_dt(dt), CUDNN_TENSOR_NHWC, int(s.K), int(s.C),
                                           int(s.R), int(s.S)));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv, int(s.pad_h), int(s.pad_w), int(s.stride_h),
                                                int(s.stride_w), 1, 1, CUDNN_CROSS_CORRELATION,
                                                CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(conv, CUDNN_TENSOR_OP_MATH));
  }
  ~Cudnn() {
    cudnnDestroyTensorDescriptor(x);
    cudnnDestroyTensorDescriptor(y);
    cudnnDestroyFilterDescriptor(w);
    cudnnDestroyConvolutionDescriptor(conv);
  }
};

struct Row {
  std::string net, layer, pass;
  ConvShape s;
  int splits = 1;  // split-K the igemm planner chose
  double ours_us = NAN, cudnn_us = NAN, err = NAN;
  bool valid = false;
};

void print_row(const Row& r, FILE* f, bool markdown) {
  const ConvShape& s = r.s;
  const double flop = 2.0 * double(s.N * s.P * s.Q) * double(s.K) * double(s.C * s.R * s.S);
  const double x = double(s.N * s.H * s.W * s.C), w = double(s.K * s.R * s.S * s.C),
               y = double(s.N * s.P * s.Q * s.K);
  const double bytes = 2.0 * (x + w + y);
  const double t_ours = r.ours_us * 1e-6, t_dnn = r.cudnn_us * 1e-6;
  char shape[96];
  std::snprintf(shape, sizeof shape, "N%lld C%lld %lldx%lld K%lld %lldx%lld s%lld",
                (long long)s.N, (long long)s.C, (long long)s.H, (long long)s.W, (long long)s.K,
                (long long)s.R, (long long)s.S, (long long)s.stride_h);
  if (markdown)
    std::fprintf(f,
                 "| %s | %-14s | %-5s | %-30s | %6d | %9.1f | %9.1f | %6.1f | %6.1f | %7.0f | %5.2f | %s |\n",
                 r.net.c_str(), r.layer.c_str(), r.pass.c_str(), shape, r.splits, r.ours_us, r.cudnn_us,
                 flop / t_ours * 1e-12, flop / t_dnn * 1e-12, bytes / t_ours * 1e-9,
                 t_dnn / t_ours, r.valid ? "ok" : "MISMATCH");
  else
    std::fprintf(f, "%s,%s,%s,%lld,%lld,%lld,%lld,%lld,%lld,%lld,%lld,%d,%.2f,%.2f,%.3f,%.3f,%.1f,%.1f,%.3f,%s,%.3g\n",
                 r.net.c_str(), r.layer.c_str(), r.pass.c_str(), (long long)s.N, (long long)s.C,
                 (long long)s.H, (long long)s.W, (long long)s.K, (long long)s.R, (long long)s.S,
                 (long long)s.stride_h, r.splits, r.ours_us, r.cudnn_us, flop / t_ours * 1e-12,
                 flop / t_dnn * 1e-12, bytes / t_ours * 1e-9, bytes / t_dnn * 1e-9,
                 t_dnn / t_ours, r.valid ? "ok" : "MISMATCH", r.err);
}

// The fastest deterministic algorithm cudnnFind returned (else the fastest): the policy of the
// engine's own cuDNN path for f16/bf16 (kernels/cuda/conv.cpp), whose non-deterministic
// algorithms round atomically accumulated partial sums to half precision. The unrestricted
// PyTorch/cuDNN choice is measured separately by benchmarks/torch_cuda_conv.py.
template <class Perf>
int first_ok(const Perf* perf, int n, const char* what) {
  for (int k = 0; k < n; ++k)
    if (perf[k].status == CUDNN_STATUS_SUCCESS && perf[k].determinism == CUDNN_DETERMINISTIC)
      return k;
  for (int k = 0; k < n; ++k)
    if (perf[k].status == CUDNN_STATUS_SUCCESS) return k;
  throw hr::Error(std::string("cudnnFind found no ") + what + " algorithm");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse(argc, argv);
    if (!hr::cuda::available()) {
      std::printf("bench_cuda_conv: no CUDA device, nothing to do\n");
      return 0;
    }
    cudaStream_t st;
    CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudnnHandle_t handle;
    CUDNN_CHECK(cudnnCreate(&handle));
    CUDNN_CHECK(cudnnSetStream(handle, st));
    const size_t ws_bytes = size_t(1) << 30;
    Buf ws(ws_bytes);
    Timer timer(st);
    const DT dt = args.dt;
    const float alpha = 1.f, beta = 0.f;
    std::vector<Row> rows;
    bool any_bad = false;

    std::printf("bench_cuda_conv: %s, batch %d, dtype %s, %d reps (median), L2 flushed\n\n",
                hr::cuda::device_name(0).c_str(), args.batch, dt == DT::bf16 ? "bf16" : "f16",
                args.reps);
    std::printf("| net | layer | pass | shape (NHWC in, KRSC w) | splits | ours us | cuDNN us | ours TFLOP/s "
                "| cuDNN TFLOP/s | ours GB/s | speedup (cuDNN/ours) | check |\n");
    std::printf("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for (const Case& c : hrnet_cases(args.batch)) {
      if (!args.filter.empty() && (c.net + " " + c.layer).find(args.filter) == std::string::npos)
        continue;
      const ConvShape& s = c.s;
      const size_t bx = s.N * s.H * s.W * s.C * 2, bw = s.K * s.R * s.S * s.C * 2,
                   by = s.N * s.P * s.Q * s.K * 2;
      Buf x(bx), w(bw), dy(by), y_ours(by), y_ref(by), dx_ours(bx), dx_ref(bx), dw_ours(bw),
          dw_ref(bw);
      init(x, dt, 1, 1.f);
      init(w, dt, 2, 1.f / std::sqrt(float(s.C * s.R * s.S)));
      init(dy, dt, 3, 1.f);
      Cudnn cd(s, dt, handle);
      void* wsp = ws.p;

      for (int pass = 0; pass < 3; ++pass) {
        Row r{c.net, c.layer, pass == 0 ? "fwd" : pass == 1 ? "dgrad" : "wgrad", s};
        r.splits = hr::cuda::igemm::planned_splits(
            s, dt, pass == 0 ? hr::cuda::igemm::Pass::fwd
                             : pass == 1 ? hr::cuda::igemm::Pass::dgrad : hr::cuda::igemm::Pass::wgrad);
        std::function<void()> ours, theirs;
        Buf* out = nullptr;
        Buf* ref = nullptr;
        if (pass == 0) {
          cudnnConvolutionFwdAlgoPerf_t perf[16];
          int n = 0;
          CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(handle, cd.x, x.p, cd.w, w.p,
                                                             cd.conv, cd.y, y_ref.p, 16, &n, perf,
                                                             wsp, ws_bytes));
          const auto algo = perf[first_ok(perf, n, "forward")].algo;
          theirs = [&, algo] {
            CUDNN_CHECK(cudnnConvolutionForward(handle, &alpha, cd.x, x.p, cd.w, w.p, cd.conv,
                                                algo, wsp, ws_bytes, &beta, cd.y, y_ref.p));
          };
          ours = [&] {
            if (!hr::cuda::igemm::forward(s, dt, x.p, w.p, nullptr, y_ours.p, st))
              throw hr::Error("igemm::forward: shape not supported");
          };
          out = &y_ours;
          ref = &y_ref;
        } else if (pass == 1) {
          cudnnConvolutionBwdDataAlgoPerf_t perf[16];
          int n = 0;
          CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(
              handle, cd.w, w.p, cd.y, dy.p, cd.conv, cd.x, dx_ref.p, 16, &n, perf, wsp,
              ws_bytes));
          const auto algo = perf[first_ok(perf, n, "backward-data")].algo;
          theirs = [&, algo] {
            CUDNN_CHECK(cudnnConvolutionBackwardData(handle, &alpha, cd.w, w.p, cd.y, dy.p,
                                                     cd.conv, algo, wsp, ws_bytes, &beta, cd.x,
                                                     dx_ref.p));
          };
          ours = [&] {
            if (!hr::cuda::igemm::backward_data(s, dt, dy.p, w.p, dx_ours.p, st))
              throw hr::Error("igemm::backward_data: shape not supported");
          };
          out = &dx_ours;
          ref = &dx_ref;
        } else {
          cudnnConvolutionBwdFilterAlgoPerf_t perf[16];
          int n = 0;
          CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
              handle, cd.x, x.p, cd.y, dy.p, cd.conv, cd.w, dw_ref.p, 16, &n, perf, wsp,
              ws_bytes));
          const auto algo = perf[first_ok(perf, n, "backward-filter")].algo;
          theirs = [&, algo] {
            CUDNN_CHECK(cudnnConvolutionBackwardFilter(handle, &alpha, cd.x, x.p, cd.y, dy.p,
                                                       cd.conv, algo, wsp, ws_bytes, &beta, cd.w,
                                                       dw_ref.p));
          };
          ours = [&] {
            if (!hr::cuda::igemm::backward_weight(s, dt, x.p, dy.p, dw_ours.p, nullptr, st))
              throw hr::Error("igemm::backward_weight: shape not supported");
          };
          out = &dw_ours;
          ref = &dw_ref;
        }
        // validate before timing: ours (output poisoned with NaN) vs cuDNN
        CUDA_CHECK(cudaMemsetAsync(out->p, 0xFF, out->bytes, st));
        theirs();
        ours();
        CUDA_CHECK(cudaStreamSynchronize(st));
        double max_abs = 0;
        const double m = mismatch(*out, *ref, dt, &max_abs);
        r.err = max_abs;
        r.valid = m <= 1.0;
        if (!r.valid) {
          any_bad = true;
          std::fprintf(stderr, "MISMATCH %s %s %s: worst error ratio %g, max abs err %g\n",
                       c.net.c_str(), c.layer.c_str(), r.pass.c_str(), m, max_abs);
        }
        r.cudnn_us = timer.median_us(theirs, args.reps);
        r.ours_us = timer.median_us(ours, args.reps);
        print_row(r, stdout, true);
        std::fflush(stdout);
        rows.push_back(r);
      }
    }
    if (!args.csv.empty()) {
      FILE* f = std::fopen(args.csv.c_str(), "w");
      if (!f) throw hr::Error("bench_cuda_conv: cannot write " + args.csv);
      std::fprintf(f,
                   "net,layer,pass,N,C,H,W,K,R,S,stride,splits,ours_us,cudnn_us,ours_tflops,"
                   "cudnn_tflops,ours_gbs,cudnn_gbs,speedup,check,max_abs_err\n");
      for (const Row& r : rows) print_row(r, f, false);
      std::fclose(f);
    }
    double lg = 0;
    for (const Row& r : rows) lg += std::log(r.cudnn_us / r.ours_us);
    if (!rows.empty())
      std::printf("\ngeometric-mean speedup (cuDNN time / our time) over %zu rows: %.3f\n",
                  rows.size(), std::exp(lg / rows.size()));
    cudnnDestroy(handle);
    cudaStreamDestroy(st);
    return any_bad ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_conv: %s\n", e.what());
    return 2;
  }
}
