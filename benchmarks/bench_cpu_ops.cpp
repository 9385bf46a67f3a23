// CPU operator benchmark at HRNet-W32 shapes (batch 8, 256x192 input): convolution forward,
// backward-data and backward-weight (kernels/cpu/conv2d.cpp), batch-norm training forward +
// backward, batch norm -> add -> ReLU forward + backward fused (cpu::batchnorm_act_*) and
// unfused, and nearest x2 upsampling forward + backward, each timed as the median of --reps runs
// after warm-up. When PyTorch is importable it runs benchmarks/torch_cpu_ops.py on the same ops
// with the same thread count and prints one table: ours, PyTorch, ratio (PyTorch / ours), rate.
// The whole sequence (ours, then PyTorch) runs --passes times and each side keeps its best median,
// which damps the effect of other load on a shared machine.
//
//   bench_cpu_ops [--reps N] [--passes N] [--no-torch] [--csv FILE]
//                 [--conv N,C,H,W,K[,R,stride]]... [--bn N,C,H,W]...
// --conv (repeatable): time these convolutions (square kernel R, default 3, padding R/2, stride
// default 1), all three passes, instead of the W32 table. Shapes with prepacked weights
// (cpu::conv2d_prepacked_size: inference graphs) get a row for the forward pass on them too,
// and every shape one for the forward pass with the residual + ReLU epilogue (ours only).
// --bn (repeatable): the batch-norm rows (plain, and fused with add + ReLU) at these shapes.
//   env HR_PYTHON: the python to run (default: python3, then /usr/bin/python3)
#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "benchmarks/bench_util.h"
#include "kernels/cpu/cpu_kernels.h"

#ifndef HR_BENCH_DIR
#define HR_BENCH_DIR "benchmarks"
#endif

namespace {

using hr::kern::ConvShape;
using Clock = std::chrono::steady_clock;

struct Row {
  std::string op, shape, torch_spec;
  double flops = 0, bytes = 0;  // per call, for GFLOP/s and GB/s
  bool is3x3 = false;
  std::function<double(int reps)> time_ours;       // median ms
  double ours_ms = INFINITY, torch_ms = INFINITY;  // best median over the passes
};

std::vector<float> random_vec(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// --cold: every timed call starts with the caches holding other data (64 MiB written first), as
// an op inside a training step finds them, rather than with its own operands from the last call.
bool g_cold = false;
void evict_caches() {
  static std::vector<float> junk(size_t(16) << 20);
  static float v = 0.f;
  v += 1.f;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < junk.size(); ++i) junk[i] = v;
}

// Median milliseconds of fn over reps calls, after warm-up (>= 2 calls and >= 0.2 s).
template <class Fn>
double median_ms(int reps, Fn&& fn) {
  const auto w0 = Clock::now();
  for (int i = 0; i < 2 || std::chrono::duration<double>(Clock::now() - w0).count() < 0.2; ++i)
    fn();
  std::vector<double> t(static_cast<size_t>(reps));
  for (auto& ti : t) {
    if (g_cold) evict_caches();
    const auto t0 = Clock::now();
    fn();
    ti = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  }
  std::sort(t.begin(), t.end());
  return t.size() % 2 ? t[t.size() / 2] : 0.5 * (t[t.size() / 2 - 1] + t[t.size() / 2]);
}

std::string conv_spec(const ConvShape& s) {
  char b[128];
  std::snprintf(b, sizeof b, "%ld,%ld,%ld,%ld,%ld,%ld,%ld,%ld,%ld", long(s.N), long(s.C), long(s.H),
                long(s.W), long(s.K), long(s.R), long(s.S), long(s.stride_h), long(s.pad_h));
  return b;
}

// Each row times itself on demand (allocating its data then) so that passes can repeat it.
void add_conv_rows(std::vector<Row>& rows, const ConvShape& s) {
  char shape[128];
  std::snprintf(shape, sizeof shape, "%ldx%ld@%ldx%ld->%ld s%ld", long(s.N), long(s.C), long(s.H),
                long(s.W), long(s.K), long(s.stride_h));
  const std::string k = std::to_string(s.R) + "x" + std::to_string(s.S);
  // passes: forward, data gradient, weight gradient, and the forward pass with the residual +
  // ReLU epilogue (a block's last convolution in inference graphs, batch norm folded in; no peer:
  // PyTorch runs three ops for it, and not in the 3x3 ratio summary)
  const char* names[4] = {" fwd", " bwd-data", " bwd-weight", " fwd +res+relu"};
  const char* specs[3] = {"conv_fwd:", "conv_bwd_data:", "conv_bwd_weight:"};
  for (int pass = 0; pass < 4; ++pass) {
    Row r;
    r.op = "conv" + k + names[pass];
    r.shape = shape;
    if (pass < 3) r.torch_spec = specs[pass] + conv_spec(s);
    r.flops = 2.0 * double(s.macs());
    r.is3x3 = pass < 3 && s.R == 3 && s.S == 3;
    r.time_ours = [s, pass](int reps) {
      const size_t nx = s.N * s.C * s.H * s.W, nw = s.K * s.C * s.R * s.S;
      const size_t ny = s.N * s.K * s.P * s.Q;
      const auto x = random_vec(nx, 1), dy = random_vec(ny, 3);
      const auto w = random_vec(nw, 2, 1.f / std::sqrt(float(s.C * s.R * s.S)));
      std::vector<float> y(ny), dx(nx), dw(nw);
      if (pass == 0 || pass == 3) {
        hr::kern::ConvEpilogue ep;  // pass 3: dy stands in as the residual
        if (pass == 3) ep.residual = dy.data(), ep.relu = true;
        return median_ms(reps, [&] {
          hr::cpu::conv2d_forward(s, x.data(), w.data(), nullptr, y.data(), ep);
        });
      }
      if (pass == 1)
        return median_ms(reps,
                         [&] { hr::cpu::conv2d_backward_data(s, dy.data(), w.data(), dx.data()); });
      return median_ms(reps, [&] {
        hr::cpu::conv2d_backward_weight(s, x.data(), dy.data(), dw.data(), nullptr);
      });
    };
    rows.push_back(r);
  }
  // the forward pass on prepacked weights (inference graphs), where the kernels have them
  if (hr::cpu::conv2d_prepacked_size(s) > 0) {
    Row r;
    r.op = "conv" + k + " fwd prepacked";
    r.shape = shape;
    r.torch_spec = specs[0] + conv_spec(s);
    r.flops = 2.0 * double(s.macs());
    r.is3x3 = s.R == 3 && s.S == 3;
    r.time_ours = [s](int reps) {
      const size_t nx = s.N * s.C * s.H * s.W, nw = s.K * s.C * s.R * s.S;
      const auto x = random_vec(nx, 1);
      const auto w = random_vec(nw, 2, 1.f / std::sqrt(float(s.C * s.R * s.S)));
      std::vector<float> y(s.N * s.K * s.P * s.Q);
      std::vector<float> packed(static_cast<size_t>(hr::cpu::conv2d_prepacked_size(s)));
      hr::cpu::conv2d_prepack_weights(s, w.data(), packed.data());
      return median_ms(reps, [&] {
        hr::cpu::conv2d_forward_prepacked(s, x.data(), packed.data(), nullptr, y.data());
      });
    };
    rows.push_back(r);
  }
}

std::string map_label(int64_t N, int64_t C, int64_t H, int64_t W) {
  return std::to_string(N) + "x" + std::to_string(C) + "@" + std::to_string(H) + "x" +
         std::to_string(W);
}
std::string map_args(int64_t N, int64_t C, int64_t H, int64_t W) {
  return std::to_string(N) + "," + std::to_string(C) + "," + std::to_string(H) + "," +
         std::to_string(W);
}

void add_bn_row(std::vector<Row>& rows, int64_t N, int64_t C, int64_t H, int64_t W) {
  Row r;
  r.op = "batchnorm fwd+bwd";
  r.shape = map_label(N, C, H, W);
  r.torch_spec = "bn:" + map_args(N, C, H, W);
  r.bytes = 5.0 * 4.0 * double(N * C * H * W);  // fwd: read x, write y; bwd: read x, dy, write dx
  r.time_ours = [=](int reps) {
    const int64_t HW = H * W;
    const size_t n = N * C * HW;
    const auto x = random_vec(n, 4), dy = random_vec(n, 5), beta = random_vec(C, 7, 0.1f);
    auto gamma = random_vec(C, 6, 0.1f);
    for (auto& g : gamma) g += 1.f;
    std::vector<float> y(n), dx(n), rm(C, 0.f), rv(C, 1.f), sm(C), si(C), dg(C), dbt(C);
    return median_ms(reps, [&] {
      hr::cpu::batchnorm_train_forward(N, C, HW, x.data(), gamma.data(), beta.data(), 1e-5f, 0.1f,
                                       rm.data(), rv.data(), y.data(), sm.data(), si.data());
      hr::cpu::batchnorm_train_backward(N, C, HW, x.data(), dy.data(), gamma.data(), sm.data(),
                                        si.data(), dx.data(), dg.data(), dbt.data());
    });
  };
  rows.push_back(r);
}

// HRNet's BN -> add -> ReLU (training forward + backward, residual gradient included): the
// fused kernels (cpu::batchnorm_act_*) or the unfused sequence they replace (batch norm, add,
// relu; relu backward, batch-norm backward). Both rows share the PyTorch peer relu(bn(x) + r).
void add_bn_add_relu_row(std::vector<Row>& rows, int64_t N, int64_t C, int64_t H, int64_t W,
                         bool fused) {
  Row r;
  r.op = fused ? "bn+add+relu fwd+bwd fused" : "bn+add+relu fwd+bwd unfused";
  r.shape = map_label(N, C, H, W);
  r.torch_spec = "bnar:" + map_args(N, C, H, W);
  // the same nominal traffic for both (fwd: read x, r, write y; bwd: read x, y, dy, write dx,
  // dr), so GB/s compares like the times
  r.bytes = 8.0 * 4.0 * double(N * C * H * W);
  r.time_ours = [=](int reps) {
    const int64_t HW = H * W;
    const size_t n = N * C * HW;
    const auto x = random_vec(n, 4), res = random_vec(n, 10), dy = random_vec(n, 5);
    const auto beta = random_vec(C, 7, 0.1f);
    auto gamma = random_vec(C, 6, 0.1f);
    for (auto& g : gamma) g += 1.f;
    std::vector<float> y(n), t(n), g(n), dx(n), dr(n), rm(C, 0.f), rv(C, 1.f), sm(C), si(C);
    std::vector<float> dg(C), dbt(C);
    if (fused)
      return median_ms(reps, [&] {
        hr::cpu::batchnorm_act_train_forward(N, C, HW, x.data(), gamma.data(), beta.data(), 1e-5f,
                                             0.1f, rm.data(), rv.data(), res.data(), true, y.data(),
                                             sm.data(), si.data());
        hr::cpu::batchnorm_act_train_backward(N, C, HW, x.data(), y.data(), dy.data(), gamma.data(),
                                              sm.data(), si.data(), true, dx.data(), dr.data(),
                                              dg.data(), dbt.data());
      });
    // As the eager ops run it: the residual's gradient is relu_backward's output itself.
    return median_ms(reps, [&] {
      hr::cpu::batchnorm_train_forward(N, C, HW, x.data(), gamma.data(), beta.data(), 1e-5f, 0.1f,
                                       rm.data(), rv.data(), t.data(), sm.data(), si.data());
      hr::cpu::add(int64_t(n), t.data(), res.data(), g.data());
      hr::cpu::relu_forward(int64_t(n), g.data(), y.data());
      hr::cpu::relu_backward(int64_t(n), y.data(), dy.data(), dr.data());
      hr::cpu::batchnorm_train_backward(N, C, HW, x.data(), dr.data(), gamma.data(), sm.data(),
                                        si.data(), dx.data(), dg.data(), dbt.data());
    });
  };
  rows.push_back(r);
}

void add_upsample_row(std::vector<Row>& rows, int64_t N, int64_t C, int64_t H, int64_t W) {
  Row r;
  r.op = "upsample-nearest x2 fwd+bwd";
  r.shape = map_label(N, C, H, W);
  r.torch_spec = "up2:" + map_args(N, C, H, W);
  r.bytes = 10.0 * 4.0 * double(N * C * H * W);  // fwd: read n, write 4n; bwd: read 4n, write n
  r.time_ours = [=](int reps) {
    hr::kern::ResampleShape s;
    s.N = N, s.C = C, s.H = H, s.W = W, s.OH = 2 * H, s.OW = 2 * W;
    s.scale_h = s.scale_w = 0.5f;
    const size_t n = N * C * H * W;
    const auto x = random_vec(n, 8), dy = random_vec(4 * n, 9);
    std::vector<float> y(4 * n), dx(n);
    return median_ms(reps, [&] {
      hr::cpu::upsample_nearest_forward(s, x.data(), y.data());
      hr::cpu::upsample_nearest_backward(s, dy.data(), dx.data());
    });
  };
  rows.push_back(r);
}

// Runs torch_cpu_ops.py on every row's spec and fills torch_ms. Returns its info line.
std::string run_torch(std::vector<Row>& rows, const std::string& py, int threads, int reps) {
  std::string cmd = py + " " + HR_BENCH_DIR + "/torch_cpu_ops.py --threads " +
                    std::to_string(threads) + " --reps " + std::to_string(reps);
  std::set<std::string> specs;  // rows may share a peer (fused and unfused)
  for (const Row& r : rows)
    if (!r.torch_spec.empty() && specs.insert(r.torch_spec).second) cmd += " " + r.torch_spec;
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) return "PyTorch: could not start " + py;
  std::map<std::string, double> ms;
  std::string info;
  char line[512];
  while (std::fgets(line, sizeof line, f)) {
    char spec[256];
    double t = 0;
    if (std::sscanf(line, "TORCH %255s %lf", spec, &t) == 2)
      ms[spec] = t;
    else if (std::strncmp(line, "TORCH_INFO", 10) == 0)
      info = line + 11;
  }
  const int rc = pclose(f);
  for (Row& r : rows) {
    auto it = ms.find(r.torch_spec);
    if (it != ms.end()) r.torch_ms = std::min(r.torch_ms, it->second);
  }
  if (!info.empty() && info.back() == '\n') info.pop_back();
  if (rc != 0) info += " (torch_cpu_ops.py exited with status " + std::to_string(rc) + ")";
  return "PyTorch " + info;
}

// "-" for a missing value (no PyTorch timing, no FLOP count).
std::string fmt(const char* f, double v) {
  if (!std::isfinite(v)) return "-";
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 10, passes = 2;
  bool torch = true;
  std::string csv;
  std::vector<ConvShape> convs;
  std::vector<std::array<int64_t, 4>> bns;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (!std::strcmp(argv[i], "--passes") && i + 1 < argc) {
      passes = std::max(1, std::atoi(argv[++i]));
    } else if (!std::strcmp(argv[i], "--cold")) {
      g_cold = true;
    } else if (!std::strcmp(argv[i], "--no-torch")) {
      torch = false;
    } else if (!std::strcmp(argv[i], "--csv") && i + 1 < argc) {
      csv = argv[++i];
    } else if (!std::strcmp(argv[i], "--conv") && i + 1 < argc) {
      long v[7] = {0, 0, 0, 0, 0, 3, 1};
      const int got = std::sscanf(argv[++i], "%ld,%ld,%ld,%ld,%ld,%ld,%ld", &v[0], &v[1], &v[2],
                                  &v[3], &v[4], &v[5], &v[6]);
      if (got < 5 || v[0] < 1 || v[1] < 1 || v[2] < 1 || v[3] < 1 || v[4] < 1 || v[5] < 1 ||
          v[6] < 1) {
        std::fprintf(stderr,
                     "bench_cpu_ops: --conv wants N,C,H,W,K[,R,stride] (positive), got '%s'\n",
                     argv[i]);
        return 2;
      }
      convs.push_back(ConvShape::make(v[0], v[1], v[2], v[3], v[4], v[5], v[5], v[6], v[6],
                                      v[5] / 2, v[5] / 2));
    } else if (!std::strcmp(argv[i], "--bn") && i + 1 < argc) {
      long v[4] = {0, 0, 0, 0};
      if (std::sscanf(argv[++i], "%ld,%ld,%ld,%ld", &v[0], &v[1], &v[2], &v[3]) != 4 ||
          v[0] < 1 || v[1] < 1 || v[2] < 1 || v[3] < 1) {
        std::fprintf(stderr, "bench_cpu_ops: --bn wants N,C,H,W (positive), got '%s'\n", argv[i]);
        return 2;
      }
      bns.push_back({v[0], v[1], v[2], v[3]});
    } else {
      std::fprintf(stderr,
                   "usage: %s [--reps N] [--passes N] [--no-torch] [--csv FILE] "
                   "[--conv N,C,H,W,K[,R,stride]]... [--bn N,C,H,W]...\n",
                   argv[0]);
      return 2;
    }
  }
  const int threads = omp_get_max_threads();
  const int64_t N = 8;
  std::vector<Row> rows;
  auto conv = [&](int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t stride) {
    const int64_t pad = R / 2;
    add_conv_rows(rows, ConvShape::make(N, C, H, W, K, R, R, stride, stride, pad, pad));
  };
  const int64_t branch[4][3] = {{32, 64, 48}, {64, 32, 24}, {128, 16, 12}, {256, 8, 6}};
  for (const ConvShape& s : convs) add_conv_rows(rows, s);
  for (const auto& b : bns) {
    add_bn_row(rows, b[0], b[1], b[2], b[3]);
    add_bn_add_relu_row(rows, b[0], b[1], b[2], b[3], true);
  }
  if (convs.empty() && bns.empty()) {
    for (auto& b : branch) conv(b[0], b[1], b[2], b[0], 3, 1);  // branch BasicBlock convs
    for (int i = 0; i < 3; ++i)
      conv(branch[i][0], branch[i][1], branch[i][2], branch[i + 1][0], 3, 2);
    conv(3, 256, 192, 64, 3, 2);  // stem conv1
    conv(64, 128, 96, 64, 3, 2);  // stem conv2
    conv(64, 32, 24, 32, 1, 1);   // fuse 1x1, branch 1 -> branch 0 width
    for (auto& b : branch) add_bn_row(rows, N, b[0], b[1], b[2]);
    for (auto& b : branch) {
      add_bn_add_relu_row(rows, N, b[0], b[1], b[2], true);
      add_bn_add_relu_row(rows, N, b[0], b[1], b[2], false);
    }
    for (auto& b : branch) add_upsample_row(rows, N, b[0], b[1], b[2]);
  }

  std::string py;
  std::string torch_info = "PyTorch: not run (--no-torch)";
  if (torch) {
    py = hr::bench::torch_python();
    if (py.empty()) torch_info = "PyTorch: not importable (set HR_PYTHON), column left empty";
  }
  // Passes alternate ours and PyTorch so that both see the same machine load; each side keeps
  // its best median.
  for (int pass = 0; pass < passes; ++pass) {
    for (Row& r : rows) r.ours_ms = std::min(r.ours_ms, r.time_ours(reps));
    if (!py.empty()) torch_info = run_torch(rows, py, threads, reps);
  }

  std::printf("bench_cpu_ops: %d OpenMP threads, best of %d passes of median-of-%d; %s\n", threads,
              passes, reps, torch_info.c_str());
  std::printf("%-28s %-22s %10s %10s %8s %9s %8s\n", "op", "shape (NxC@HxW->K s)", "ours ms",
              "torch ms", "ratio", "GFLOP/s", "GB/s");
  double min_ratio = INFINITY;
  std::string min_row;
  auto ratio_of = [](const Row& r) { return r.torch_ms / r.ours_ms; };
  auto rate = [](double work, double ms) { return work > 0 ? work / ms * 1e-6 : NAN; };
  for (const Row& r : rows) {
    const double ratio = ratio_of(r);
    std::printf("%-28s %-22s %10s %10s %8s %9s %8s\n", r.op.c_str(), r.shape.c_str(),
                fmt("%.3f", r.ours_ms).c_str(), fmt("%.3f", r.torch_ms).c_str(),
                fmt("%.2f", ratio).c_str(), fmt("%.1f", rate(r.flops, r.ours_ms)).c_str(),
                fmt("%.1f", rate(r.bytes, r.ours_ms)).c_str());
    if (r.is3x3 && std::isfinite(ratio) && ratio < min_ratio) {
      min_ratio = ratio;
      min_row = r.op + " " + r.shape;
    }
  }
  std::string fused_line;
  for (const Row& f : rows) {
    if (f.op != "bn+add+relu fwd+bwd fused") continue;
    for (const Row& u : rows)
      if (u.op == "bn+add+relu fwd+bwd unfused" && u.shape == f.shape)
        fused_line += " " + f.shape + " " + fmt("%.2f", f.ours_ms / u.ours_ms);
  }
  if (!fused_line.empty()) std::printf("bn+add+relu fused / unfused time:%s\n", fused_line.c_str());
  if (std::isinf(min_ratio))
    std::printf("min ratio over 3x3 conv rows: - (no PyTorch timings)\n");
  else
    std::printf("min ratio over 3x3 conv rows: %.2f (%s)\n", min_ratio, min_row.c_str());

  if (!csv.empty()) {
    FILE* f = std::fopen(csv.c_str(), "w");
    if (!f) {
      std::fprintf(stderr, "bench_cpu_ops: cannot write %s\n", csv.c_str());
      return 1;
    }
    std::fprintf(f, "op,shape,ours_ms,torch_ms,ratio,gflops,gbps\n");
    for (const Row& r : rows)
      std::fprintf(f, "%s,%s,%s,%s,%s,%s,%s\n", r.op.c_str(), r.shape.c_str(),
                   fmt("%.4f", r.ours_ms).c_str(), fmt("%.4f", r.torch_ms).c_str(),
                   fmt("%.4f", ratio_of(r)).c_str(), fmt("%.2f", rate(r.flops, r.ours_ms)).c_str(),
                   fmt("%.2f", rate(r.bytes, r.ours_ms)).c_str());
    std::fclose(f);
  }
  return 0;
}
