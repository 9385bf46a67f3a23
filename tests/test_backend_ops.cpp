// The op table, after ggml's tests/test-backend-ops.cpp: every op's cases (odd sizes, 1x1 maps,
// C = 1, stride 2 on odd sizes, channel counts that are not multiples of 8) in one table, each
// case run on four backends: CPU eager (the reference), CPU graph, CUDA eager and CUDA graph, the
// CUDA rows in f32 and, where the op takes them, f16, bf16 and bf16 autocast. Every row is
// compared with CPU eager on the same (rounded) inputs: the forward outputs, the gradient of each
// differentiable input through one scalar probe loss, and the running statistics batch norm
// updates in place; CPU eager must also repeat itself bit for bit.
//
//   test_backend_ops [check]  every case on every backend (what ctest runs)
//   test_backend_ops grad     the CPU eager gradients against central differences (gradcheck.h)
//   test_backend_ops perf     ms, GFLOP/s and GB/s of HRNet-sized cases per backend and pass
//   -o OP   only ops whose name contains OP      -b B   only backends whose name contains B
//   -r N    perf: timed repetitions (median)            (cpu, cuda, cpu-graph, cuda-eager, ...)
// Any other argument goes to Catch2 (-s, --durations yes, ...).
#define CATCH_CONFIG_RUNNER
#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine/graph.h"
#include "engine/ops.h"
#include "engine/ops/conv2d.h"
#include "gradcheck.h"
#include "kernels/cuda/cuda_kernels.h"
#include "test_util.h"

using namespace hr;

namespace {

// ---------------------------------------------------------------------------------------------
// Command line

struct Options {
  std::string mode = "check";  // check, grad, perf
  std::string op;              // -o
  std::string backend;         // -b
  int reps = 10;               // -r
};
Options& options() {
  static Options o;
  return o;
}

const char* const kBackends[] = {"cpu-eager", "cpu-graph", "cuda-eager", "cuda-graph"};

// ---------------------------------------------------------------------------------------------
// The table

enum class In : uint8_t {
  Data,     // floating; stored in the row's dtype on CUDA (f16, bf16)
  Param,    // f32 on every row (bias, batch-norm weight and bias, target weight)
  State,    // f32, updated in place (running statistics): compared after the run
  Labels,   // i64 class labels, some equal to the ignore index
  Counter,  // i64 CPU scalar (num_batches_tracked): compared after the run
  Rng,      // i64 [2] {seed, step} on the backend (dropout2d's state): the step compared after
  Bytes,    // u8 (raw image crops): consecutive values from a random start, shuffled
  Absent,   // an optional operand left out
};

struct Input {
  std::string name;
  In kind = In::Data;
  Shape shape;
  bool grad = false;          // differentiable: its gradient is compared
  float lo = 0.1f, hi = 1.f;  // magnitudes, never zero
  bool positive = false;      // else a random sign
  int64_t classes = 0, ignore = 0;
  std::vector<float> values;  // explicit values instead of random ones
};

Input input(std::string name, In kind, Shape shape, bool grad = false) {
  Input in;
  in.name = std::move(name);
  in.kind = kind;
  in.shape = std::move(shape);
  in.grad = grad;
  return in;
}
Input data(std::string n, Shape s, bool grad = true) {
  return input(std::move(n), In::Data, s, grad);
}
Input param(std::string n, Shape s, bool grad = true) {
  return input(std::move(n), In::Param, s, grad);
}
Input positive(std::string n, Shape s, In kind = In::Param) {
  Input in = input(std::move(n), kind, s);
  in.lo = 0.5f;
  in.hi = 1.5f;
  in.positive = true;
  return in;
}
Input running_mean(int64_t c) {
  Input in = input("running_mean", In::State, {c});
  in.hi = 0.5f;
  return in;
}
Input running_var(int64_t c) { return positive("running_var", {c}, In::State); }
Input labels(Shape s, int64_t classes, int64_t ignore) {
  Input in = input("labels", In::Labels, s);
  in.classes = classes;
  in.ignore = ignore;
  return in;
}
Input counter() { return input("num_batches_tracked", In::Counter, {}); }
Input rng_state() { return input("state", In::Rng, {2}); }
Input absent(std::string n) { return input(std::move(n), In::Absent, {}); }

// The CUDA rows of a case: the storage dtype of its Data inputs, or f32 inputs under autocast.
enum Prec : unsigned { kF32 = 1, kF16 = 2, kBF16 = 4, kAutocast = 8 };
constexpr unsigned kFloat = kF32 | kF16 | kBF16;
constexpr Prec kPrecs[] = {kF32, kF16, kBF16, kAutocast};

const char* prec_name(Prec p) {
  return p == kF32 ? "f32" : p == kF16 ? "f16" : p == kBF16 ? "bf16" : "bf16 autocast";
}
DType storage(Prec p) { return p == kF16 ? DType::f16 : p == kBF16 ? DType::bf16 : DType::f32; }
// The dtype the device computes in: the inputs of the reference are rounded to it.
DType rounding(Prec p) { return p == kAutocast ? DType::bf16 : storage(p); }

using Args = std::vector<Tensor>;
using OpFn = std::function<std::vector<Tensor>(const Args&)>;

struct Case {
  std::string op, attrs;
  std::vector<Input> in;
  OpFn fn;                 // the op on the inputs, in table order; -> its outputs
  unsigned cuda = kFloat;  // CUDA rows
  std::string no_cuda;     // why there are none
  bool matmul = false;     // conv2d, linear: TF32 under HR_ALLOW_TF32=1
  double tol = 1;          // scales the per-dtype tolerances
  float fd_eps = 1e-2f;    // grad mode
  double fd_atol = 2e-3, fd_rtol = 1e-2;
  std::string no_fd;  // why grad mode skips it
  bool perf = false;  // HRNet-sized: timed by perf, not checked
  size_t index = 0;   // in the table (seeds the inputs)

  bool differentiable() const {
    return std::any_of(in.begin(), in.end(), [](const Input& i) { return i.grad; });
  }
  std::string str() const {
    std::string s = op + "(";
    bool first = true;
    for (const Input& i : in) {
      if (i.kind == In::Absent || i.kind == In::Counter) continue;
      s += (first ? "" : ", ") + i.name + shape_str(i.shape);
      first = false;
    }
    return s + (attrs.empty() ? "" : "; " + attrs) + ")";
  }
};

std::string pair(std::array<int64_t, 2> p) {
  return p[0] == p[1] ? std::to_string(p[0]) : str_cat(p[0], "x", p[1]);
}

// OHEM inputs: logits [N,C,H,W] or [N,C] whose softmax probability of the label at every counted
// pixel is a distinct value of the grid 0.01, 0.03, ..., 0.99 (drawn without replacement; at most
// 50 counted pixels), the other logits uniform in [-1, 1]; every fifth pixel (p % 5 == 2)
// ignored. No probability lies within 0.01 of another or of a threshold at a multiple of 0.1, so
// the selection is the same on every device and under the finite-difference steps.
struct OhemInputs {
  std::vector<float> logits, labels;
};
OhemInputs ohem_inputs(const Shape& x, int64_t ignore, uint64_t seed) {
  const int64_t N = x[0], C = x[1], HW = x.size() == 4 ? x[2] * x[3] : 1;
  std::mt19937_64 rng(seed);
  std::vector<int> grid(50);
  for (int i = 0; i < 50; ++i) grid[i] = i;
  std::shuffle(grid.begin(), grid.end(), rng);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  OhemInputs r;
  r.logits.resize(static_cast<size_t>(N * C * HW));
  r.labels.resize(static_cast<size_t>(N * HW));
  size_t next = 0;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t i = 0; i < HW; ++i) {
      const int64_t pix = n * HW + i;
      auto at = [&](int64_t c) -> float& { return r.logits[static_cast<size_t>((n * C + c) * HW + i)]; };
      for (int64_t c = 0; c < C; ++c) at(c) = static_cast<float>(u(rng));
      if (pix % 5 == 2) {
        r.labels[static_cast<size_t>(pix)] = static_cast<float>(ignore);
        continue;
      }
      HR_CHECK(next < grid.size(), "ohem_inputs: more than 50 counted pixels in ", shape_str(x));
      const int64_t y = static_cast<int64_t>(rng() % static_cast<uint64_t>(C));
      r.labels[static_cast<size_t>(pix)] = static_cast<float>(y);
      const double p = 0.01 + 0.02 * grid[next++];
      double rest = 0;
      for (int64_t c = 0; c < C; ++c)
        if (c != y) rest += std::exp(double(at(c)));
      at(y) = static_cast<float>(std::log(p / (1 - p)) + std::log(rest));
    }
  }
  return r;
}

// Detection loss inputs. The locations a loss must not read (weight or mask <= 0) hold garbage
// (negative distances, +-1e20 or 1e30: NaN or inf if read); elsewhere IoU predictions lie 10% to
// 40% away from the target on either side (never within a finite-difference step of min's kink).
struct DetInputs {
  std::vector<float> pred, target, weight;
};
// pred, target [N,4,P], weight [N,P]: every fourth location weight 0, the third -0.5 (none
// positive unless `positive`)
DetInputs iou_inputs(int64_t N, int64_t P, bool positive, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const float garbage[4] = {-3.f, 1e20f, -1e20f, 0.f};
  DetInputs r;
  r.pred.resize(static_cast<size_t>(N * 4 * P));
  r.target.resize(r.pred.size());
  r.weight.resize(static_cast<size_t>(N * P));
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t p = 0; p < P; ++p) {
      const int64_t i = n * P + p;
      float w = static_cast<float>(0.1 + 0.9 * u(rng));
      if (i % 4 == 1) w = 0.f;
      if (i == 2) w = -0.5f;
      if (!positive) w = 0.f;
      r.weight[static_cast<size_t>(i)] = w;
      for (int64_t j = 0; j < 4; ++j) {
        const size_t at = static_cast<size_t>((n * 4 + j) * P + p);
        if (w > 0.f) {
          const double t = 0.5 + 2.5 * u(rng), sign = u(rng) < 0.5 ? -1.0 : 1.0;
          r.target[at] = static_cast<float>(t);
          r.pred[at] = static_cast<float>(t * (1.0 + sign * (0.1 + 0.3 * u(rng))));
        } else {
          r.pred[at] = garbage[(j + i) % 4];
          r.target[at] = garbage[(j + i + 1) % 4];
        }
      }
    }
  }
  return r;
}
enum class BceMask { Binary, Weights, None };
// logits (pred), target in [0, 1], mask [N,P]: Binary 1 but every third element; Weights in
// [0.2, 1.5] but every third 0 and the third element -0.5; None all 0
DetInputs bce_inputs(int64_t N, int64_t P, BceMask kind, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  DetInputs r;
  const size_t n = static_cast<size_t>(N * P);
  r.pred.resize(n);
  r.target.resize(n);
  r.weight.resize(n);
  for (size_t i = 0; i < n; ++i) {
    float m = kind == BceMask::Binary ? 1.f : static_cast<float>(0.2 + 1.3 * u(rng));
    if (i % 3 == 1 || kind == BceMask::None) m = 0.f;
    if (i == 2 && kind == BceMask::Weights) m = -0.5f;
    r.weight[i] = m;
    const double x = (0.1 + 1.9 * u(rng)) * (u(rng) < 0.5 ? -1.0 : 1.0);
    r.pred[i] = m > 0.f ? static_cast<float>(x) : 1e30f;
    r.target[i] = m > 0.f ? static_cast<float>(u(rng)) : -1e30f;
  }
  return r;
}

std::vector<Case> make_table() {
  std::vector<Case> t;
  auto add = [&](Case c) -> Case& {
    c.index = t.size();
    t.push_back(std::move(c));
    return t.back();
  };
  using V = std::vector<Tensor>;
  using P2 = std::array<int64_t, 2>;

  // ---- conv2d: x, weight, bias (f32 or absent)
  auto conv = [&](Shape x, Shape w, bool bias, P2 s, P2 p) -> Case& {
    Case c;
    c.op = "conv2d";
    c.attrs = "stride " + pair(s) + ", pad " + pair(p);
    c.in = {data("x", x), data("w", w), bias ? param("bias", {w[0]}) : absent("bias")};
    c.fn = [s, p](const Args& a) { return V{ops::conv2d(a[0], a[1], a[2], s, p)}; };
    c.cuda = kFloat | kAutocast;
    c.matmul = true;
    return add(std::move(c));
  };
  conv({2, 3, 5, 6}, {4, 3, 3, 3}, true, {1, 1}, {1, 1});
  conv({1, 2, 7, 5}, {3, 2, 3, 3}, false, {2, 2}, {1, 1});  // stride 2 on odd H, W
  conv({2, 4, 4, 4}, {2, 4, 1, 1}, true, {1, 1}, {0, 0});
  conv({1, 2, 6, 5}, {2, 2, 1, 3}, false, {2, 1}, {0, 1});    // rectangular kernel, stride, pad
  conv({2, 12, 3, 3}, {10, 12, 3, 3}, true, {2, 2}, {1, 1});  // C, K not multiples of 8
  conv({1, 1, 1, 1}, {1, 1, 1, 1}, true, {1, 1}, {0, 0});     // C = K = 1 on a 1x1 map
  conv({2, 5, 1, 1}, {3, 5, 3, 3}, false, {1, 1}, {1, 1});    // 1x1 map: the padding only
  conv({1, 3, 9, 9}, {8, 3, 3, 3}, false, {2, 2}, {0, 0});    // the stem's C = 3
  conv({1, 9, 5, 7}, {6, 9, 1, 1}, true, {2, 2}, {0, 0});     // 1x1 stride 2, odd sizes
  conv({2, 16, 6, 5}, {24, 16, 3, 3}, true, {1, 1}, {1, 1});  // tensor-core friendly channels
  conv({8, 3, 256, 192}, {64, 3, 3, 3}, false, {2, 2}, {1, 1}).perf = true;
  conv({8, 32, 64, 48}, {32, 32, 3, 3}, false, {1, 1}, {1, 1}).perf = true;
  conv({8, 32, 64, 48}, {64, 32, 3, 3}, false, {2, 2}, {1, 1}).perf = true;
  conv({8, 256, 64, 48}, {64, 256, 1, 1}, false, {1, 1}, {0, 0}).perf = true;

  // ---- batch_norm: x, gamma, beta, running mean and variance, num_batches_tracked
  auto bn = [&](Shape x, bool training) -> Case& {
    const int64_t C = x[1];
    Case c;
    c.op = "batch_norm";
    c.attrs = training ? "training" : "inference";
    c.in = {data("x", x),    param("gamma", {C}), param("beta", {C}),
            running_mean(C), running_var(C),      counter()};
    c.fn = [training](const Args& a) {
      return V{ops::batch_norm(a[0], a[1], a[2], a[3], a[4], training, 0.1f, 1e-5f, a[5])};
    };
    c.fd_atol = 3e-3;
    c.fd_rtol = 2e-2;
    return add(std::move(c));
  };
  bn({2, 3, 3, 4}, true);
  bn({2, 3, 3, 4}, false);
  bn({5, 4}, true);  // [N, C]: BatchNorm1d
  bn({4, 9}, false);
  bn({3, 1, 1, 1}, true);  // C = 1 on 1x1 maps: three values per channel
  bn({2, 5, 1, 1}, false);
  bn({1, 7, 3, 5}, true);
  bn({2, 12, 5, 3}, true);
  bn({8, 32, 64, 48}, true).perf = true;
  bn({8, 32, 64, 48}, false).perf = true;

  // ---- batch_norm_act: batch_norm's inputs, then the residual (or absent)
  auto bn_act = [&](Shape x, bool residual, bool relu, bool training) -> Case& {
    const int64_t C = x[1];
    Case c;
    c.op = "batch_norm_act";
    c.attrs = str_cat(training ? "training" : "inference", relu ? ", relu" : "");
    c.in = {data("x", x),
            param("gamma", {C}),
            param("beta", {C}),
            running_mean(C),
            running_var(C),
            counter(),
            residual ? data("residual", x) : absent("residual")};
    c.fn = [relu, training](const Args& a) {
      return V{ops::batch_norm_act(a[0], a[6], relu, a[1], a[2], a[3], a[4], training, 0.1f, 1e-5f,
                                   a[5])};
    };
    c.fd_eps = 1e-3f;  // ReLU kinks
    c.fd_atol = 3e-3;
    c.fd_rtol = 2e-2;
    return add(std::move(c));
  };
  bn_act({2, 3, 3, 5}, true, true, true);
  bn_act({1, 5, 2, 3}, false, true, true);
  bn_act({2, 3, 3, 5}, true, false, true);
  bn_act({3, 1, 1, 1}, true, true, true);
  bn_act({2, 6, 3, 3}, true, true, false);
  bn_act({2, 4, 1, 3}, false, true, false);
  bn_act({8, 32, 64, 48}, true, true, true).perf = true;
  {  // the unfused ops, which the graph compiler fuses into one batch_norm_act node
    Case c;
    c.op = "batch_norm+add+relu";
    c.attrs = "training, fused in graphs";
    c.in = {data("x", {2, 5, 3, 3}), param("gamma", {5}), param("beta", {5}),
            running_mean(5),         running_var(5),      data("residual", {2, 5, 3, 3})};
    c.fn = [](const Args& a) {
      return V{ops::relu(ops::add(ops::batch_norm(a[0], a[1], a[2], a[3], a[4], true), a[5]))};
    };
    c.fd_eps = 1e-3f;
    c.fd_atol = 3e-3;
    c.fd_rtol = 2e-2;
    add(std::move(c));
  }

  // ---- group norm: x, gamma, beta
  auto gn = [&](Shape x, int64_t groups) -> Case& {
    Case c;
    c.op = "group_norm";
    c.attrs = str_cat("groups ", groups);
    c.in = {data("x", x), param("gamma", {x[1]}), param("beta", {x[1]})};
    c.fn = [groups](const Args& a) { return V{ops::group_norm(a[0], groups, a[1], a[2])}; };
    return add(std::move(c));
  };
  gn({2, 6, 5, 3}, 3);
  gn({2, 4, 3, 3}, 4);   // one channel per group
  gn({3, 5, 1, 1}, 1);   // one group, 1x1 maps
  gn({4, 8}, 2);         // [N, C]
  gn({2, 10, 7, 9}, 5);  // odd sizes, channels not a multiple of 8
  gn({8, 256, 25, 34}, 32).perf = true;  // the FCOS head's GroupNorm(32, 256)

  // ---- element-wise (and the other one-input ops below)
  using Unary = std::function<Tensor(const Tensor&)>;
  auto unary = [&](const char* op, Shape x, std::string attrs, Unary f) -> Case& {
    Case c;
    c.op = op;
    c.attrs = std::move(attrs);
    c.in = {data("x", x)};
    c.fn = [f](const Args& a) { return V{f(a[0])}; };
    return add(std::move(c));
  };
  const Unary relu = [](const Tensor& x) { return ops::relu(x); };
  for (Shape s : {Shape{2, 3, 4, 5}, Shape{7}, Shape{1, 1, 1, 1}, Shape{3, 5}})
    unary("relu", s, "", relu);
  unary("relu", {8, 32, 64, 48}, "", relu).perf = true;
  for (Shape s : {Shape{2, 3, 4}, Shape{2, 5, 3, 7}, Shape{1, 1, 1, 1}, Shape{8, 32, 64, 48}}) {
    Case c;
    c.op = "add";
    c.in = {data("a", s), data("b", s)};
    c.fn = [](const Args& a) { return V{ops::add(a[0], a[1])}; };
    c.perf = s[0] == 8;
    add(std::move(c));
  }
  auto mul = [&](Shape x, float alpha) -> Case& {
    return unary("mul", x, str_cat("alpha ", alpha),
                 [alpha](const Tensor& v) { return ops::mul(v, alpha); });
  };
  mul({7}, -2.5f);
  mul({2, 3, 5, 5}, 0.5f);
  mul({8, 32, 64, 48}, 0.5f).perf = true;
  for (Shape s : {Shape{2, 3, 4}, Shape{1}, Shape{1, 1, 1, 1}}) {
    Case& c = unary("sum_all", s, "", [](const Tensor& x) { return ops::sum_all(x); });
    c.cuda = 0;
    c.no_cuda = "sum_all is a CPU test helper (no CUDA kernel)";
  }

  // ---- resampling
  auto nearest_scale = [&](Shape x, double sf) -> Case& {
    return unary("upsample_nearest", x, str_cat("scale ", sf),
                 [sf](const Tensor& v) { return ops::upsample_nearest_scale(v, sf); });
  };
  auto nearest_size = [&](Shape x, P2 size) -> Case& {
    return unary("upsample_nearest", x, str_cat("size ", size[0], "x", size[1]),
                 [size](const Tensor& v) { return ops::upsample_nearest(v, size); });
  };
  nearest_scale({2, 3, 5, 7}, 2.0);
  nearest_scale({1, 2, 1, 1}, 3.0);  // 1x1 map
  nearest_scale({1, 3, 5, 4}, 1.5);
  nearest_size({2, 3, 5, 7}, {12, 9});
  nearest_size({2, 3, 5, 7}, {3, 4});  // down
  nearest_size({1, 9, 3, 2}, {1, 1});
  nearest_scale({1, 3, 5, 6}, 2.1);  // out = 2 x in, yet src = floor(dst / 2.1)
  // the fuse layers' x_i + up(y): the graph compiler fuses them into one upsample_nearest_add
  for (double sf : {2.0, 4.0, 2.1}) {
    Case c;
    c.op = "upsample_nearest+add";
    c.attrs = str_cat("scale ", sf, ", fused in graphs");
    const int64_t h = 3, w = 5;
    c.in = {data("x", {2, 4, h, w}),
            data("r", {2, 4, int64_t(std::floor(h * sf)), int64_t(std::floor(w * sf))})};
    c.fn = [sf](const Args& a) { return V{ops::add(ops::upsample_nearest_scale(a[0], sf), a[1])}; };
    add(std::move(c));
  }
  nearest_scale({8, 64, 32, 24}, 2.0).perf = true;
  nearest_scale({8, 256, 8, 6}, 8.0).perf = true;
  for (bool ac : {false, true}) {
    const std::string a = ac ? ", align_corners" : "";
    auto size = [&](Shape x, P2 sz) -> Case& {
      return unary("upsample_bilinear", x, str_cat("size ", sz[0], "x", sz[1], a),
                   [sz, ac](const Tensor& v) { return ops::upsample_bilinear(v, sz, ac); });
    };
    auto scale = [&](Shape x, double sf) -> Case& {
      return unary("upsample_bilinear", x, str_cat("scale ", sf, a),
                   [sf, ac](const Tensor& v) { return ops::upsample_bilinear_scale(v, sf, ac); });
    };
    size({2, 3, 5, 7}, {11, 13});
    size({2, 3, 5, 7}, {3, 4});  // down
    size({1, 2, 1, 1}, {3, 3});  // from a 1x1 map
    size({1, 3, 4, 5}, {1, 1});  // to a 1x1 map
    scale({2, 3, 5, 7}, 1.5);
    scale({1, 5, 3, 3}, 2.0);
    size({8, 64, 32, 24}, {64, 48}).perf = true;
  }

  // ---- concat
  auto concat = [&](std::vector<Shape> xs, int64_t dim) -> Case& {
    Case c;
    c.op = "concat";
    c.attrs = str_cat("dim ", dim);
    for (size_t i = 0; i < xs.size(); ++i) c.in.push_back(data(str_cat("x", i), xs[i]));
    c.fn = [dim](const Args& a) { return V{ops::concat(a, dim)}; };
    return add(std::move(c));
  };
  concat({{2, 1, 3, 2}, {2, 3, 3, 2}, {2, 2, 3, 2}}, 1);
  concat({{1, 5, 3, 3}, {1, 7, 3, 3}}, 1);
  concat({{2, 3, 1, 1}}, 1);  // one input
  concat({{1, 3}, {2, 3}}, 0);
  concat({{2, 3}, {2, 5}}, 1);
  concat({{2, 3}, {2, 1}}, -1);
  {
    Case& c = concat({{1, 2, 3, 3}, {2, 2, 3, 3}}, 0);
    c.cuda = 0;
    c.no_cuda = "CUDA concatenates 4-D (channels-last) tensors along dim 1 only";
  }
  concat({{8, 32, 64, 48}, {8, 64, 64, 48}, {8, 128, 64, 48}, {8, 256, 64, 48}}, 1).perf = true;

  // ---- pooling
  auto pool = [&](Shape x, P2 k, P2 s, P2 p, bool cip) -> Case& {
    return unary("avg_pool2d", x,
                 "kernel " + pair(k) + ", stride " + pair(s) + ", pad " + pair(p) +
                     (cip ? "" : ", exclude pad"),
                 [k, s, p, cip](const Tensor& v) { return ops::avg_pool2d(v, k, s, p, cip); });
  };
  pool({2, 2, 7, 6}, {3, 3}, {2, 2}, {1, 1}, true);
  pool({2, 2, 7, 6}, {3, 3}, {2, 2}, {1, 1}, false);
  pool({1, 3, 5, 5}, {2, 2}, {2, 2}, {0, 0}, true);  // odd size: the last row/column dropped
  pool({1, 1, 1, 1}, {3, 3}, {1, 1}, {1, 1}, false);
  pool({1, 9, 1, 2}, {3, 3}, {2, 2}, {1, 1}, true);
  pool({2, 3, 6, 5}, {3, 2}, {1, 2}, {1, 0}, false);
  pool({8, 32, 64, 48}, {3, 3}, {2, 2}, {1, 1}, true).perf = true;
  const Unary gap = [](const Tensor& x) { return ops::global_avg_pool(x); };
  for (Shape s : {Shape{2, 3, 4, 5}, Shape{1, 5, 1, 1}, Shape{3, 1, 7, 3}})
    unary("global_avg_pool", s, "", gap);
  unary("global_avg_pool", {8, 2048, 7, 7}, "", gap).perf = true;

  // ---- linear: x, weight, bias (f32 or absent)
  auto linear = [&](Shape x, Shape w, bool bias) -> Case& {
    Case c;
    c.op = "linear";
    c.in = {data("x", x), data("w", w), bias ? param("bias", {w[0]}) : absent("bias")};
    c.fn = [](const Args& a) { return V{ops::linear(a[0], a[1], a[2])}; };
    c.cuda = kFloat | kAutocast;
    c.matmul = true;
    return add(std::move(c));
  };
  linear({3, 5}, {4, 5}, true);
  linear({1, 1}, {1, 1}, true);
  linear({2, 17}, {10, 17}, false);
  linear({7, 33}, {9, 33}, true);
  linear({8, 2048}, {1000, 2048}, true).perf = true;

  // ---- reshape (on CUDA 4-D tensors are channels-last: the logical order must survive)
  auto reshape = [&](Shape from, Shape to) -> Case& {
    return unary("reshape", from, "to " + shape_str(to),
                 [to](const Tensor& x) { return ops::reshape(x, to); });
  };
  reshape({2, 3, 4}, {6, 4});
  reshape({2, 3, 2, 2}, {2, 12});
  reshape({6, 4}, {2, 3, 2, 2});
  reshape({2, 3, 2, 2}, {2, 2, 3, 2});
  reshape({1, 5, 1, 1}, {5});
  reshape({8, 17, 64, 48}, {8, 17, 3072}).perf = true;

  // ---- cast
  auto round_trip = [&](Shape x, DType d) -> Case& {
    Case& c = unary("cast", x, str_cat("f32 -> ", dtype_name(d), " -> f32"),
                    [d](const Tensor& v) { return ops::cast(ops::cast(v, d), DType::f32); });
    c.cuda = kF32;
    c.no_fd = "rounding is piecewise constant (the gradient passes straight through)";
    return c;
  };
  round_trip({2, 3, 4, 5}, DType::bf16);
  round_trip({3, 7}, DType::f16);
  unary("cast", {2, 3, 3, 5}, "the row's dtype -> f32",
        [](const Tensor& x) { return ops::cast(x, DType::f32); });
  round_trip({8, 32, 64, 48}, DType::bf16).perf = true;

  // ---- losses
  auto heatmap = [&](Shape x, Shape w, std::vector<float> wv = {}) -> Case& {
    Case c;
    c.op = "heatmap_loss";
    c.in = {data("pred", x), data("target", x, false), positive("weight", w)};
    c.in[2].lo = 0.25f;
    c.in[2].hi = 1.f;
    c.in[2].values = std::move(wv);
    if (!c.in[2].values.empty()) c.attrs = "zero weights";
    c.fn = [](const Args& a) { return V{ops::heatmap_loss(a[0], a[1], a[2])}; };
    return add(std::move(c));
  };
  heatmap({2, 3, 4, 5}, {2, 3});
  heatmap({1, 17, 3, 5}, {1, 17, 1});
  heatmap({2, 1, 1, 1}, {2, 1});
  // zero target weights (joints not visible) are part of the op's contract
  heatmap({2, 3, 4, 5}, {2, 3, 1}, {1, 0, 1, 1, 1, 0});
  heatmap({8, 17, 64, 48}, {8, 17, 1}).perf = true;
  auto ce = [&](Shape x, int64_t ignore, float smoothing = 0.f) -> Case& {
    Case c;
    c.op = "cross_entropy";
    c.attrs = str_cat("ignore ", ignore, smoothing > 0 ? str_cat(", smoothing ", smoothing) : "");
    Shape l = x.size() == 4 ? Shape{x[0], x[2], x[3]} : Shape{x[0]};
    c.in = {data("logits", x), labels(l, x[1], ignore)};
    c.fn = [ignore, smoothing](const Args& a) {
      return V{ops::cross_entropy(a[0], a[1], ignore, smoothing)};
    };
    return add(std::move(c));
  };
  ce({2, 4, 2, 3}, 255);
  ce({5, 3}, -100);
  ce({3, 5, 1, 1}, 255);
  ce({1, 19, 3, 7}, 255);
  ce({6, 10}, 255, 0.1f);       // label smoothing (classification)
  ce({2, 5, 3, 2}, 255, 0.3f);
  ce({8, 19, 64, 48}, 255).perf = true;

  // ---- fold_batch_norm (inference; no backward): weight, bias, gamma, beta, mean, variance
  auto fold = [&](Shape w, bool bias) -> Case& {
    const int64_t K = w[0];
    Case c;
    c.op = "fold_batch_norm";
    c.in = {data("w", w, false),        bias ? param("bias", {K}, false) : absent("bias"),
            param("gamma", {K}, false), param("beta", {K}, false),
            param("mean", {K}, false),  positive("var", {K})};
    c.fn = [](const Args& a) {
      auto r = ops::fold_batch_norm(a[0], a[1], a[2], a[3], a[4], a[5], 1e-5f);
      return V{r[0], r[1]};
    };
    return add(std::move(c));
  };
  fold({4, 3, 3, 3}, true);
  fold({5, 2, 1, 1}, false);
  fold({1, 1, 1, 1}, true);
  fold({256, 256, 3, 3}, true).perf = true;

  // ---- bmm: a, b (transposes as attributes)
  auto bmm = [&](Shape a, Shape b, bool ta, bool tb) -> Case& {
    Case c;
    c.op = "bmm";
    c.attrs = str_cat(ta ? "a^T" : "a", " x ", tb ? "b^T" : "b");
    c.in = {data("a", a), data("b", b)};
    c.fn = [ta, tb](const Args& x) { return V{ops::bmm(x[0], x[1], ta, tb)}; };
    c.cuda = kFloat | kAutocast;
    c.matmul = true;
    return add(std::move(c));
  };
  bmm({2, 3, 5}, {2, 5, 4}, false, false);
  bmm({3, 7, 2}, {3, 6, 7}, true, true);    // OCR's sim^T order: both transposed
  bmm({2, 9, 3}, {2, 6, 3}, false, true);   // gather: feats [N,C,HW] x probs [N,K,HW]^T
  bmm({2, 5, 11}, {2, 5, 3}, true, false);  // similarity: query^T [N,HW,Kc] x key [N,Kc,K]
  bmm({1, 1, 1}, {1, 1, 1}, false, false);
  bmm({4, 1, 13}, {4, 1, 2}, true, false);  // K = 1
  bmm({8, 256, 3072}, {8, 256, 19}, true, false).perf = true;   // OCR W48 sim at 64x48
  bmm({8, 256, 19}, {8, 3072, 19}, false, true).perf = true;    // OCR context

  // ---- softmax over one dimension (4-D tensors are channels-last on CUDA: every dim)
  auto softmax = [&](Shape x, int64_t dim) -> Case& {
    return unary("softmax", x, str_cat("dim ", dim),
                 [dim](const Tensor& v) { return ops::softmax(v, dim); });
  };
  softmax({2, 3, 7}, -1);
  softmax({2, 5, 3}, 1);   // strided lines
  softmax({9}, 0);
  softmax({3, 1}, -1);     // one element: exactly 1
  softmax({2, 3, 1500}, 2);  // rows longer than a warp's kernel takes (OCR gather over HW)
  for (int64_t d : {0, 1, 2, 3}) softmax({2, 4, 3, 5}, d);
  softmax({8, 19, 3072}, -1).perf = true;  // gather over HW
  softmax({8, 3072, 19}, -1).perf = true;  // similarity over objects

  // ---- dropout2d: x, state {seed, step} (updated in place); outputs y and the mask
  auto dropout = [&](Shape x, float p) -> Case& {
    Case c;
    c.op = "dropout2d";
    c.attrs = str_cat("p ", p);
    c.in = {data("x", x), rng_state()};
    c.fn = [p](const Args& a) {
      auto r = ops::dropout2d(a[0], a[1], p);
      return V{r[0], r[1]};
    };
    return add(std::move(c));
  };
  dropout({2, 6, 3, 5}, 0.5f);
  dropout({3, 5, 1, 1}, 0.05f);
  dropout({4, 7}, 0.3f);      // [N, C]
  dropout({2, 3, 4}, 0.5f);   // [N, C, L]
  dropout({1, 4, 2, 2}, 0.f);  // keeps everything
  dropout({1, 3, 2, 2}, 1.f);  // drops everything
  dropout({8, 512, 64, 48}, 0.05f).perf = true;
  {
    Case c;
    c.op = "channel_scale";
    c.in = {data("x", {2, 3, 4, 5}), param("s", {2, 3}, false)};
    c.fn = [](const Args& a) { return V{ops::channel_scale(a[0], a[1])}; };
    add(std::move(c));
  }

  // ---- segmentation losses (HRNet-Semantic-Segmentation's criterion.py)
  // class-weighted cross-entropy: logits, labels, class weights (f32 [C])
  auto wce = [&](Shape x, int64_t ignore, float smoothing = 0.f) -> Case& {
    Case c;
    c.op = "cross_entropy";
    c.attrs = str_cat("ignore ", ignore, ", class weights",
                      smoothing > 0 ? str_cat(", smoothing ", smoothing) : "");
    Shape l = x.size() == 4 ? Shape{x[0], x[2], x[3]} : Shape{x[0]};
    c.in = {data("logits", x), labels(l, x[1], ignore), positive("class_weight", {x[1]})};
    c.fn = [ignore, smoothing](const Args& a) {
      return V{ops::cross_entropy(a[0], a[1], ignore, smoothing, a[2])};
    };
    return add(std::move(c));
  };
  wce({2, 4, 2, 3}, 255);
  wce({5, 3}, -100);
  wce({1, 19, 3, 7}, 255);
  wce({6, 10}, 255, 0.1f);
  wce({2, 5, 3, 2}, 255, 0.3f);
  wce({8, 19, 64, 48}, 255).perf = true;
  // OHEM cross-entropy: logits, labels, class weights (or absent). Inputs from ohem_inputs (the
  // selection away from every threshold) unless `zeros` (every probability 1/C: ties).
  auto ohem = [&](Shape x, float thresh, int64_t min_kept, bool weighted,
                  bool zeros = false) -> Case& {
    Case c;
    c.op = "ohem_cross_entropy";
    c.attrs = str_cat("thresh ", thresh, ", min_kept ", min_kept,
                      weighted ? ", class weights" : "", zeros ? ", zero logits (ties)" : "");
    Shape l = x.size() == 4 ? Shape{x[0], x[2], x[3]} : Shape{x[0]};
    c.in = {data("logits", x), labels(l, x[1], 255),
            weighted ? positive("class_weight", {x[1]}) : absent("class_weight")};
    if (zeros) {
      c.in[0].values.assign(static_cast<size_t>(shape_numel(x)), 0.f);
    } else if (shape_numel(x) < 100000) {
      OhemInputs v = ohem_inputs(x, 255, 7919 * (t.size() + 1));
      c.in[0].values = std::move(v.logits);
      c.in[1].values = std::move(v.labels);
    }
    c.fn = [thresh, min_kept](const Args& a) {
      return V{ops::ohem_cross_entropy(a[0], a[1], 255, thresh, min_kept, a[2])};
    };
    c.fd_eps = 1e-3f;  // probabilities move by < 2.5e-4: no pixel crosses the threshold
    return add(std::move(c));
  };
  ohem({2, 5, 3, 4}, 0.7f, 5, false);      // threshold = thresh
  ohem({2, 5, 3, 4}, 0.3f, 12, false);     // threshold = the 12th smallest probability
  ohem({1, 19, 4, 5}, 0.9f, 4, true);      // 19 classes, Cityscapes-like weights
  ohem({2, 4, 3, 3}, 0.7f, 1000, false);   // min_kept above the counted pixels
  ohem({2, 4, 3, 3}, 0.3f, 1000, true);
  ohem({12, 6}, 0.5f, 3, true);            // [N, C]
  ohem({1, 4, 2, 3}, 0.5f, 2, false, true);  // ties below the threshold: all kept
  ohem({1, 4, 2, 3}, 0.1f, 2, false, true)  // ties at the threshold: none kept, loss 0
      .no_fd = "every probability equals the threshold: any step changes the selection";
  ohem({8, 19, 64, 48}, 0.7f, 100000, true).perf = true;

  // ---- detection (the FCOS head): exp, the learnable per-level scale, the three losses
  const Unary exp_fn = [](const Tensor& x) { return ops::exp(x); };
  for (Shape s : {Shape{2, 3, 4, 5}, Shape{7}, Shape{1, 1, 1, 1}, Shape{2, 4, 37}})
    unary("exp", s, "", exp_fn);
  unary("exp", {8, 4, 100, 136}, "", exp_fn).perf = true;
  auto scale_by = [&](Shape x) -> Case& {
    Case c;
    c.op = "scale";
    c.in = {data("x", x), param("s", {1})};
    c.fn = [](const Args& a) { return V{ops::scale(a[0], a[1])}; };
    return add(std::move(c));
  };
  scale_by({2, 3, 4, 5});  // 4-D: channels-last on CUDA
  scale_by({7});
  scale_by({2, 4, 37});
  scale_by({8, 4, 100, 136}).perf = true;
  // sigmoid focal loss: logits [N,C,P], labels [N,P] in 0..C (background 0), every fifth -1
  // (ignored), or explicit ones
  auto focal = [&](Shape x, float gamma, float alpha, std::vector<float> lv = {}) -> Case& {
    Case c;
    c.op = "sigmoid_focal_loss";
    c.attrs = str_cat("gamma ", gamma, ", alpha ", alpha, lv.empty() ? "" : ", explicit labels");
    c.in = {data("logits", x), labels({x[0], x[2]}, x[1] + 1, -1)};
    c.in[1].values = std::move(lv);
    c.fn = [gamma, alpha](const Args& a) {
      return V{ops::sigmoid_focal_loss(a[0], a[1], gamma, alpha)};
    };
    return add(std::move(c));
  };
  focal({2, 5, 37}, 2.f, 0.25f);
  focal({1, 1, 1}, 2.f, 0.25f);
  focal({3, 80, 13}, 2.f, 0.25f);  // COCO's 80 classes
  focal({2, 3, 23}, 1.5f, 0.4f);
  // an image without objects, and the other one's labels 1..3 with ignored locations
  focal({2, 3, 7}, 2.f, 0.25f, {0, 0, 0, 0, 0, 0, 0, 1, 0, -1, 3, 2, 0, -1});
  focal({2, 4, 5}, 2.f, 0.25f, std::vector<float>(10, 0.f)).attrs += " (all background)";
  focal({8, 80, 16800}, 2.f, 0.25f).perf = true;
  // IoU loss: pred [N,4,P], target, weight (f32 data)
  auto iou = [&](int64_t N, int64_t P, bool positive = true) -> Case& {
    Case c;
    c.op = "iou_loss";
    c.attrs = positive ? "weights > 0, 0 and < 0" : "no positive weight";
    DetInputs v = iou_inputs(N, P, positive, 104729 * (t.size() + 1));
    c.in = {data("pred", {N, 4, P}), param("target", {N, 4, P}, false),
            param("weight", {N, P}, false)};
    c.in[0].values = std::move(v.pred);
    c.in[1].values = std::move(v.target);
    c.in[2].values = std::move(v.weight);
    c.fn = [](const Args& a) { return V{ops::iou_loss(a[0], a[1], a[2])}; };
    return add(std::move(c));
  };
  iou(2, 29);
  iou(1, 1);
  iou(3, 50);
  iou(2, 9, false);
  iou(8, 16800).perf = true;
  // masked BCE with logits (centerness): logits, target, mask [N,P]
  auto bce = [&](int64_t N, int64_t P, BceMask kind) -> Case& {
    Case c;
    c.op = "masked_bce_with_logits";
    c.attrs = kind == BceMask::Binary    ? "0/1 mask"
              : kind == BceMask::Weights ? "mask weights > 0, 0 and < 0"
                                         : "no mask";
    DetInputs v = bce_inputs(N, P, kind, 104729 * (t.size() + 1));
    c.in = {data("logits", {N, P}), param("target", {N, P}, false), param("mask", {N, P}, false)};
    c.in[0].values = std::move(v.pred);
    c.in[1].values = std::move(v.target);
    c.in[2].values = std::move(v.weight);
    c.fn = [](const Args& a) { return V{ops::masked_bce_with_logits(a[0], a[1], a[2])}; };
    return add(std::move(c));
  };
  bce(2, 31, BceMask::Binary);
  bce(3, 17, BceMask::Weights);
  bce(1, 1, BceMask::Binary);
  bce(2, 5, BceMask::None);
  bce(8, 16800, BceMask::Binary).perf = true;

  // ---- conv2d with the inference epilogue: + residual, ReLU, no backward (what fold_batch_norm
  // makes of a conv + batch norm fused with a residual add and ReLU in CPU graphs). At the end
  // of the table: a case's inputs are seeded by its place in it.
  auto conv_epilogue = [&](Shape x, Shape w, bool residual, P2 s, P2 p) -> Case& {
    Case c;
    c.op = "conv2d";
    c.attrs = "stride " + pair(s) + ", pad " + pair(p) + (residual ? ", + residual" : "");
    c.attrs += ", relu";
    const Shape y = {x[0], w[0], (x[2] + 2 * p[0] - w[2]) / s[0] + 1,
                     (x[3] + 2 * p[1] - w[3]) / s[1] + 1};
    c.in = {data("x", x, false), data("w", w, false), param("bias", {w[0]}, false),
            residual ? data("residual", y, false) : absent("residual")};
    c.fn = [s, p](const Args& a) {
      return V{hr::apply(std::make_shared<ops::Conv2dOp>(s, p, true), {a[0], a[1], a[2], a[3]})[0]};
    };
    c.cuda = kFloat;
    c.matmul = true;
    c.no_fd = "the epilogue has no backward (inference graphs only)";
    return add(std::move(c));
  };
  conv_epilogue({2, 5, 7, 6}, {9, 5, 3, 3}, true, {1, 1}, {1, 1});
  conv_epilogue({2, 4, 7, 9}, {6, 4, 3, 3}, true, {2, 2}, {1, 1});
  conv_epilogue({1, 6, 5, 5}, {17, 6, 1, 1}, false, {1, 1}, {0, 0});

  // ---- normalize_u8: bytes [N, H, W * C] (every value 0..255), table [C, 256]
  auto normalize_u8 = [&](Shape x, int64_t C) -> Case& {
    Case c;
    c.op = "normalize_u8";
    c.attrs = str_cat(C, " channels");
    c.in = {input("x", In::Bytes, x), param("lut", {C, 256}, false)};
    c.fn = [](const Args& a) { return V{ops::normalize_u8(a[0], a[1])}; };
    c.cuda = kF32;  // the output is f32 on every row
    return add(std::move(c));
  };
  normalize_u8({2, 5, 7 * 3}, 3);  // RGB crops, odd sizes (the CUDA tail past whole vectors)
  normalize_u8({1, 1, 3}, 3);      // one pixel
  normalize_u8({3, 4, 8 * 4}, 4);  // 4 channels: whole vectors
  normalize_u8({2, 3, 5}, 1);      // one channel
  normalize_u8({128, 256, 192 * 3}, 3).perf = true;  // a W32 pose batch
  {  // images padded to the batch's canvas: each sample's valid {h, w} (0..5), zeros outside
    Case& c = normalize_u8({3, 5, 7 * 3}, 3);
    c.attrs += ", valid sizes";
    c.in.push_back(labels({3, 2}, 6, 4));
    c.fn = [](const Args& a) { return V{ops::normalize_u8(a[0], a[1], a[2])}; };
  }
  return t;
}

const std::vector<Case>& table() {
  static const std::vector<Case> t = make_table();
  return t;
}

bool selected(const Case& c, bool perf) {
  return c.perf == perf && c.op.find(options().op) != std::string::npos;
}
bool backend_selected(const std::string& name) {
  return name.find(options().backend) != std::string::npos;
}

// ---------------------------------------------------------------------------------------------
// Inputs

// Host values of one input (f32, i64 or u8 on the CPU); undefined when absent.
Tensor host_input(const Input& in, uint64_t seed) {
  const size_t n = static_cast<size_t>(shape_numel(in.shape));
  switch (in.kind) {
    case In::Absent:
      return Tensor();
    case In::Counter:
      return Tensor::from_vector_i64({0}, {});
    case In::Rng:
      return ops::dropout_state(seed);
    case In::Bytes: {  // 0..255 in turn from a random start, then shuffled
      std::mt19937_64 rng(seed);
      Tensor t = Tensor::empty(in.shape, DType::u8);
      uint8_t* b = t.data<uint8_t>();
      const size_t start = rng() % 256;
      for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>((start + i) % 256);
      std::shuffle(b, b + n, rng);
      return t;
    }
    case In::Labels: {
      if (!in.values.empty())  // explicit labels (OHEM cases)
        return Tensor::from_vector_i64(std::vector<int64_t>(in.values.begin(), in.values.end()),
                                       in.shape);
      std::mt19937_64 rng(seed);
      std::vector<int64_t> v(n);
      for (size_t i = 0; i < n; ++i)
        v[i] = i % 5 == 2 ? in.ignore : static_cast<int64_t>(rng() % in.classes);
      return Tensor::from_vector_i64(v, in.shape);
    }
    default: {
      if (!in.values.empty()) return Tensor::from_vector(in.values, in.shape);
      std::vector<float> v = test::uniform(n, seed, in.lo, in.hi);
      const std::vector<float> sign = test::uniform(n, seed + 7, -1.f, 1.f);
      if (!in.positive)
        for (size_t i = 0; i < n; ++i) v[i] = sign[i] < 0 ? -v[i] : v[i];
      return Tensor::from_vector(v, in.shape);
    }
  }
}

// The case's host inputs for precision p: Data rounded to the dtype the device computes in.
std::vector<Tensor> host_inputs(const Case& c, Prec p) {
  std::vector<Tensor> h;
  for (size_t i = 0; i < c.in.size(); ++i) {
    Tensor t = host_input(c.in[i], 1000 * c.index + 10 * i + 1);
    if (c.in[i].kind == In::Data && rounding(p) != DType::f32) t = t.to(rounding(p)).to(DType::f32);
    h.push_back(t);
  }
  return h;
}

// A fresh copy of a host input on the backend (CUDA: Data in the row's storage dtype, 4-D tensors
// channels-last), a leaf that requires grad when the input is differentiable.
Tensor on_backend(const Input& in, const Tensor& h, Device dev, Prec p) {
  if (!h.defined()) return Tensor();
  if (in.kind == In::Counter) return h.clone();  // a CPU scalar on every device
  if (dev.is_cpu()) {  // the CPU computes in f32: the inputs come rounded already
    Tensor t = h.clone();
    if (in.grad) t.set_requires_grad(true);
    return t;
  }
  Tensor t = in.kind == In::Data ? h.to(storage(p)) : h;
  t = t.to(dev).contiguous(device_format(t.shape(), dev));
  if (in.grad) t.set_requires_grad(true);
  return t;
}

// The probe loss: a scalar on any device for an output y of any shape and dtype,
// heatmap_loss of y viewed as [1, J, HW, 1] (HW: the spatial size of a 4-D y, else its last
// dimension) against a fixed target with unit weights, times y's element count: 0.5 *
// sum((y - target)^2), so the gradient reaching y is y - target.
struct Probe {
  Shape view;
  Tensor target, weight;  // host f32
};
Probe probe(const Shape& y, Prec p) {
  const int64_t n = shape_numel(y);
  const int64_t hw = y.size() == 4 ? y[2] * y[3] : y.empty() ? 1 : y.back();
  const Shape view{1, n / hw, hw, 1};
  Tensor t = Tensor::from_vector(test::randn(static_cast<size_t>(n), 99), view);
  // the device subtracts in its dtype: the target is rounded to it for the reference too
  if (rounding(p) != DType::f32) t = t.to(rounding(p)).to(DType::f32);
  return {view, t, Tensor::ones({1, n / hw})};
}
Tensor probe_loss(const Tensor& y, const Shape& view, const Tensor& target, const Tensor& weight) {
  return ops::mul(ops::heatmap_loss(ops::reshape(y, view), target, weight),
                  static_cast<float>(y.numel()));
}

// ---------------------------------------------------------------------------------------------
// Running one row

// What a row produced, copied to the host as f32.
struct Outcome {
  std::vector<std::vector<float>> out, grad, state;  // per output; per input (grad, state)
  std::vector<Shape> out_shape;
  std::vector<bool> has_grad;
  std::vector<int64_t> counter;  // per input: num_batches_tracked after the run
};

Outcome collect(const Case& c, const std::vector<Tensor>& real, const std::vector<Tensor>& outs,
                const std::function<Tensor(size_t)>& grad_of) {
  Outcome o;
  for (const Tensor& y : outs) {
    o.out.push_back(y.defined() ? y.to_vector() : std::vector<float>());
    o.out_shape.push_back(y.defined() ? y.shape() : Shape{-1});
  }
  const size_t n = c.in.size();
  o.grad.resize(n);
  o.state.resize(n);
  o.has_grad.assign(n, false);
  o.counter.assign(n, -1);
  for (size_t i = 0; i < n; ++i) {
    if (c.in[i].grad) {
      const Tensor g = grad_of(i);
      o.has_grad[i] = g.defined();
      if (g.defined()) {
        HR_CHECK(g.shape() == c.in[i].shape, "the gradient of ", c.in[i].name, " has shape ",
                 shape_str(g.shape()), ", expected ", shape_str(c.in[i].shape));
        o.grad[i] = g.to_vector();
      }
    }
    if (c.in[i].kind == In::State) o.state[i] = real[i].to_vector();
    if (c.in[i].kind == In::Counter) o.counter[i] = real[i].to_vector_i64()[0];
    if (c.in[i].kind == In::Rng) o.counter[i] = real[i].to_vector_i64()[1];  // the step
  }
  return o;
}

std::vector<Tensor> backend_inputs(const Case& c, const std::vector<Tensor>& host, Device dev,
                                   Prec p) {
  std::vector<Tensor> real;
  for (size_t i = 0; i < c.in.size(); ++i) real.push_back(on_backend(c.in[i], host[i], dev, p));
  return real;
}

// The case's op applied eagerly (under autocast for kAutocast rows).
std::vector<Tensor> apply_case(const Case& c, const Args& a, Prec p) {
  std::optional<AutocastGuard> ac;
  if (p == kAutocast) ac.emplace(DType::bf16);
  return c.fn(a);
}

Outcome run_eager(const Case& c, const std::vector<Tensor>& host, Device dev, Prec p) {
  const std::vector<Tensor> real = backend_inputs(c, host, dev, p);
  const std::vector<Tensor> outs = apply_case(c, real, p);
  if (c.differentiable()) {
    const Probe pr = probe(outs[0].shape(), p);
    probe_loss(outs[0], pr.view, pr.target.to(dev), pr.weight.to(dev)).backward();
  }
  return collect(c, real, outs, [&](size_t i) { return real[i].grad(); });
}

// The case recorded and compiled: differentiable inputs and running statistics enter as
// parameters by handle (exe.grad() of a parameter; statistics updated in place), the other
// inputs as graph inputs bound by set_input. With `loss`, the probe loss is the training loss.
struct Compiled {
  std::unique_ptr<graph::Executable> exe;
  size_t outputs = 0;
};

Compiled compile_case(const Case& c, const std::vector<Tensor>& real,
                      const std::vector<Tensor>& host, Device dev, Prec p, bool loss,
                      graph::CompileOptions co = {}) {
  graph::Graph g(graph::GraphOptions{dev});
  graph::GraphIR& ir = g.ir();
  std::vector<Tensor> args(real.size());
  std::vector<size_t> bound;
  for (size_t i = 0; i < real.size(); ++i) {
    const Input& in = c.in[i];
    if (!real[i].defined() || in.kind == In::Counter) {
      args[i] = real[i];  // absent, or held by the op itself (num_batches_tracked)
    } else if (in.grad || in.kind == In::State || in.kind == In::Rng) {
      args[i] = ir.symbolic(ir.param(real[i], in.name));
    } else {
      args[i] = g.input(in.name, real[i].shape(), real[i].dtype());
      bound.push_back(i);
    }
  }
  const std::vector<Tensor> outs = apply_case(c, args, p);
  Compiled r;
  for (const Tensor& y : outs) {
    if (y.defined()) g.output(y, str_cat("out", r.outputs));
    ++r.outputs;
  }
  std::optional<Probe> pr;
  if (loss) {
    pr = probe(outs[0].shape(), p);
    co.loss = probe_loss(outs[0], pr->view, g.input("probe_target", pr->target.shape()),
                         g.input("probe_weight", pr->weight.shape()));
    g.output(co.loss, "loss");
  }
  r.exe = std::make_unique<graph::Executable>(std::move(g), co);
  if (!co.allocate) return r;
  for (size_t i : bound) r.exe->set_input(c.in[i].name, host[i]);
  if (pr) {
    r.exe->set_input("probe_target", pr->target);
    r.exe->set_input("probe_weight", pr->weight);
  }
  return r;
}

Outcome run_graph(const Case& c, const std::vector<Tensor>& host, Device dev, Prec p) {
  const std::vector<Tensor> real = backend_inputs(c, host, dev, p);
  Compiled cg = compile_case(c, real, host, dev, p, c.differentiable());
  cg.exe->run();
  std::vector<Tensor> outs(cg.outputs);
  for (size_t k = 0; k < cg.outputs; ++k) outs[k] = cg.exe->output(str_cat("out", k));
  return collect(c, real, outs, [&](size_t i) { return cg.exe->grad(real[i]); });
}

// ---------------------------------------------------------------------------------------------
// Comparison

struct Tol {
  double atol, rtol;
  Tol operator*(double k) const { return {atol * k, rtol * k}; }
};

bool tf32_allowed() {
  static const bool on = [] {
    const char* e = std::getenv("HR_ALLOW_TF32");
    return e && e[0] == '1';
  }();
  return on;
}

// Forward tolerance of a CUDA row: |got - ref| <= atol + rtol * |ref| per element, the inputs of
// the reference rounded as the device's. Gradients get kGradTol times more (longer chains of
// rounded intermediates, reductions over the batch).
// f32 products: cuDNN may take a transform-domain algorithm (FFT, Winograd) for an f32
// convolution, whose error grows with the sum of the terms' magnitudes (~1e-5 on outputs near 0
// at 16 x 3 x 3 inputs), hence 1e-4 there.
Tol cuda_tol(const Case& c, Prec p) {
  Tol t{1e-5, 1e-5};
  if (p == kF32 && c.matmul) t = tf32_allowed() ? Tol{1e-3, 1e-3} : Tol{1e-4, 1e-4};
  if (p == kF16) t = {3e-3, 3e-3};
  if (p == kBF16 || p == kAutocast) t = {1e-2, 1e-2};
  return t * c.tol;
}
constexpr double kGradTol = 4;

struct RowStat {
  bool ok = true;
  double out_err = 0, grad_err = 0;
};

void check_tensor(const std::vector<float>& got, const std::vector<float>& ref, Tol t,
                  const std::string& what, RowStat& st, double& err) {
  const test::CompareResult r = test::compare(got, ref, t.atol, t.rtol, what);
  err = std::max(err, r.max_abs);
  if (!r.ok) {
    st.ok = false;
    FAIL_CHECK(r.report);
  }
}

// Compares a row with the reference; every mismatch is a Catch2 failure naming the op, the case,
// the row, the first elements off and the largest error.
RowStat check_row(const Case& c, const Outcome& ref, const Outcome& got, Tol fwd, Tol grad,
                  const std::string& row) {
  RowStat st;
  const std::string head = c.str() + " [" + row + "] ";
  for (size_t k = 0; k < ref.out.size(); ++k) {
    const std::string what = head + "output " + std::to_string(k);
    if (k >= got.out.size() || got.out_shape[k] != ref.out_shape[k]) {
      st.ok = false;
      FAIL_CHECK(what << ": shape " << (k < got.out.size() ? shape_str(got.out_shape[k]) : "none")
                      << ", expected " << shape_str(ref.out_shape[k]));
      continue;
    }
    check_tensor(got.out[k], ref.out[k], fwd, what, st, st.out_err);
  }
  for (size_t i = 0; i < c.in.size(); ++i) {
    const std::string& name = c.in[i].name;
    if (c.in[i].grad) {
      if (!got.has_grad[i]) {
        st.ok = false;
        FAIL_CHECK(head << "no gradient reached " << name);
      } else {
        check_tensor(got.grad[i], ref.grad[i], grad, head + "gradient of " + name, st, st.grad_err);
      }
    }
    if (c.in[i].kind == In::State)
      check_tensor(got.state[i], ref.state[i], fwd, head + name + " after the run", st, st.out_err);
    if ((c.in[i].kind == In::Counter || c.in[i].kind == In::Rng) &&
        got.counter[i] != ref.counter[i]) {
      st.ok = false;
      FAIL_CHECK(head << name << " is " << got.counter[i] << " after the run, expected "
                      << ref.counter[i]);
    }
  }
  return st;
}

struct Totals {
  int cases = 0, rows = 0, passed = 0, failed = 0, skipped = 0;
} g_totals;

std::string row_name(Device dev, bool graph) {
  return str_cat(dev.is_cuda() ? "cuda" : "cpu", graph ? "-graph" : "-eager");
}

void print_row(const std::string& row, const char* prec, const std::string& status) {
  std::printf("  %-11s %-14s %s\n", row.c_str(), prec, status.c_str());
}

// Runs one row and compares it; exceptions fail the row.
void check_backend(const Case& c, const Outcome* ref, Device dev, bool graph, Prec p, Tol fwd,
                   Tol grad) {
  const std::string row = row_name(dev, graph);
  if (!backend_selected(row)) return;
  ++g_totals.rows;
  RowStat st;
  try {
    const std::vector<Tensor> host = host_inputs(c, p);
    const Outcome got = graph ? run_graph(c, host, dev, p) : run_eager(c, host, dev, p);
    st = check_row(c, *ref, got, fwd, grad, row + " " + prec_name(p));
  } catch (const std::exception& e) {
    st.ok = false;
    FAIL_CHECK(c.str() << " [" << row << " " << prec_name(p) << "] threw: " << e.what());
  }
  (st.ok ? g_totals.passed : g_totals.failed)++;
  std::string errs = str_cat("max err: out ", st.out_err);
  if (c.differentiable()) errs += str_cat(", grad ", st.grad_err);
  print_row(row, prec_name(p), (st.ok ? "ok    " : "FAIL  ") + errs);
}

void check_case(const Case& c) {
  ++g_totals.cases;
  std::printf("%s\n", c.str().c_str());
  // the reference, twice: CPU eager must repeat itself bit for bit
  const std::vector<Tensor> host = host_inputs(c, kF32);
  const Outcome ref = run_eager(c, host, Device::cpu(), kF32);
  if (backend_selected("cpu-eager")) {
    ++g_totals.rows;
    const Outcome again = run_eager(c, host, Device::cpu(), kF32);
    const RowStat st = check_row(c, ref, again, {0, 0}, {0, 0}, "cpu-eager f32, run twice");
    (st.ok ? g_totals.passed : g_totals.failed)++;
    print_row("cpu-eager", "f32",
              st.ok ? "ok    the reference, repeatable" : "FAIL  not repeatable");
  }
  // the same kernels on the same values: bit-identical
  check_backend(c, &ref, Device::cpu(), true, kF32, {0, 0}, {0, 0});

  const bool cuda_rows = backend_selected("cuda-eager") || backend_selected("cuda-graph");
  if (!cuda_rows) return;
  if (c.cuda == 0) {
    print_row("cuda", "", "none: " + c.no_cuda);
    return;
  }
  if (!cuda::available()) {
    std::string precs;
    for (Prec p : kPrecs)
      if (c.cuda & p) precs += std::string(precs.empty() ? "" : ", ") + prec_name(p);
    int n = 0;
    for (const char* b : {"cuda-eager", "cuda-graph"})
      for (Prec p : kPrecs) n += backend_selected(b) && (c.cuda & p);
    g_totals.rows += n;
    g_totals.skipped += n;
    print_row("cuda", "",
              "SKIPPED (no usable CUDA device): " + std::to_string(n) + " rows, " + precs);
    return;
  }
  for (Prec p : kPrecs) {
    if (!(c.cuda & p)) continue;
    Outcome ref_p;
    const Outcome* r = &ref;
    if (p != kF32) {  // the reference on the inputs rounded as the device's
      ref_p = run_eager(c, host_inputs(c, p), Device::cpu(), p);
      r = &ref_p;
    }
    const Tol t = cuda_tol(c, p);
    for (bool graph : {false, true}) check_backend(c, r, Device::cuda(), graph, p, t, t * kGradTol);
  }
}

// ---------------------------------------------------------------------------------------------
// perf

// Multiply-adds (OpDef::macs) and bytes read and written by the nodes of a compiled graph.
struct Work {
  double macs = 0, bytes = 0;
};
Work work_of(const graph::GraphIR& g) {
  Work w;
  for (const graph::Node& n : g.nodes) {
    const std::string name = n.op->name();
    if (name == "start" || name == "end") continue;
    std::vector<Meta> in;
    for (graph::V v : n.in) {
      in.push_back(v >= 0 ? g.values[v].meta(g.opt.device) : Meta::none());
      if (v >= 0) w.bytes += static_cast<double>(in.back().bytes());
    }
    for (graph::V v : n.out)
      if (v >= 0) w.bytes += static_cast<double>(g.values[v].meta(g.opt.device).bytes());
    w.macs += n.op->macs(in);
  }
  return w;
}

void sync(Device dev) {
  if (dev.is_cuda()) cuda::synchronize(cuda::default_stream());
}

// Median milliseconds of f over `reps` runs after two warm-up runs (CUDA: synchronised).
double median_ms(const std::function<void()>& f, Device dev, int reps) {
  for (int i = 0; i < 2; ++i) f();
  sync(dev);
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    sync(dev);
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct Timing {
  double ms;
  Work work;
};

// The probe loss alone (forward and backward) on a leaf shaped like the case's output: what the
// fwd+bwd timings of a case subtract.
Timing time_probe(const Tensor& y_like, Device dev, Prec p, bool graph) {
  const Probe pr = probe(y_like.shape(), p);
  Tensor y =
      Tensor::from_vector(test::randn(static_cast<size_t>(y_like.numel()), 5), y_like.shape())
          .to(y_like.dtype())
          .to(dev);
  y = y.contiguous(device_format(y.shape(), dev));
  y.set_requires_grad(true);
  graph::Graph g(graph::GraphOptions{dev});
  graph::GraphIR& ir = g.ir();
  graph::CompileOptions co;
  co.loss = probe_loss(ir.symbolic(ir.param(y)), pr.view, g.input("target", pr.target.shape()),
                       g.input("weight", pr.weight.shape()));
  g.output(co.loss, "loss");
  co.fuse = graph;
  co.allocate = graph;
  graph::Executable exe(std::move(g), co);
  const Work w = work_of(exe.graph());
  if (graph) {
    exe.set_input("target", pr.target);
    exe.set_input("weight", pr.weight);
    return {median_ms([&] { exe.run(); }, dev, options().reps), w};
  }
  const Tensor target = pr.target.to(dev), weight = pr.weight.to(dev);
  return {median_ms(
              [&] {
                y.zero_grad();
                probe_loss(y, pr.view, target, weight).backward();
              },
              dev, options().reps),
          w};
}

// One timing row: the forward alone, or forward and backward through the probe loss less the
// probe's own time and work. Eager rows count the work of the unfused graph.
Timing time_row(const Case& c, const std::vector<Tensor>& host, Device dev, Prec p, bool graph,
                bool train) {
  const std::vector<Tensor> real = backend_inputs(c, host, dev, p);
  graph::CompileOptions co;
  co.fuse = graph;
  co.allocate = graph;  // eager rows: the plan only, for the work
  Compiled cg = compile_case(c, real, host, dev, p, train, co);
  Timing t{0, work_of(cg.exe->graph())};
  if (graph) {
    t.ms = median_ms([&] { cg.exe->run(); }, dev, options().reps);
  } else if (!train) {
    NoGradGuard ng;
    t.ms = median_ms([&] { apply_case(c, real, p); }, dev, options().reps);
  } else {
    const Probe pr = probe(apply_case(c, real, p)[0].shape(), p);
    const Tensor target = pr.target.to(dev), weight = pr.weight.to(dev);
    t.ms = median_ms(
        [&] {
          for (Tensor x : real)
            if (x.defined() && x.requires_grad()) x.zero_grad();
          probe_loss(apply_case(c, real, p)[0], pr.view, target, weight).backward();
        },
        dev, options().reps);
  }
  if (train) {
    Tensor y;
    {
      NoGradGuard ng;
      y = apply_case(c, real, p)[0];
    }
    const Timing pt = time_probe(y, dev, p, graph);
    t.ms = std::max(t.ms - pt.ms, 1e-6);
    t.work.macs -= pt.work.macs;
    t.work.bytes -= pt.work.bytes;
  }
  return t;
}

void time_case(const Case& c) {
  const std::vector<Tensor> host = host_inputs(c, kF32);
  for (Device dev : {Device::cpu(), Device::cuda()}) {
    if (dev.is_cuda() && (c.cuda == 0 || !cuda::available())) continue;
    for (Prec p : kPrecs) {
      if (dev.is_cuda() ? !(c.cuda & p) : p != kF32) continue;
      for (bool train : {false, true}) {
        if (train && !c.differentiable()) continue;
        for (bool graph : {false, true}) {
          const std::string row = row_name(dev, graph);
          if (!backend_selected(row)) continue;
          const Timing t = time_row(c, host, dev, p, graph, train);
          const double s = t.ms * 1e-3;
          char gflops[32] = "-";
          if (t.work.macs > 0)
            std::snprintf(gflops, sizeof gflops, "%.1f", 2 * t.work.macs / s * 1e-9);
          std::printf("%-10s %-13s %-7s %10.3f %9s %8.1f  %s\n", row.c_str(), prec_name(p),
                      train ? "fwd+bwd" : "fwd", t.ms, gflops, t.work.bytes / s * 1e-9,
                      c.str().c_str());
          std::fflush(stdout);
        }
      }
    }
  }
}

}  // namespace

TEST_CASE("backend ops: every case on every backend against CPU eager", "[check]") {
  for (const Case& c : table()) {
    if (!selected(c, false)) continue;
    DYNAMIC_SECTION("#" << c.index << " " << c.str()) { check_case(c); }
  }
}

TEST_CASE("backend ops: CPU eager gradients against central differences", "[.grad]") {
  for (const Case& c : table()) {
    if (!selected(c, false) || !c.differentiable() || !backend_selected("cpu-eager")) continue;
    DYNAMIC_SECTION("#" << c.index << " " << c.str()) {
      ++g_totals.cases;
      if (!c.no_fd.empty()) {
        std::printf("%-70s skipped: %s\n", c.str().c_str(), c.no_fd.c_str());
        ++g_totals.skipped;
        continue;
      }
      std::vector<size_t> which;
      for (size_t i = 0; i < c.in.size(); ++i)
        if (c.in[i].grad) which.push_back(i);
      ++g_totals.rows;
      // a generator state is reset before every evaluation: one mask for every difference
      const std::vector<Tensor> host = host_inputs(c, kF32);
      std::vector<Tensor> rng_start(host.size());
      for (size_t i = 0; i < host.size(); ++i)
        if (c.in[i].kind == In::Rng) rng_start[i] = host[i].clone();
      test::gradcheck(
          c.str() + " [cpu-eager f32]",
          [&c, rng_start](const std::vector<Tensor>& in) {
            for (size_t i = 0; i < in.size(); ++i)
              if (rng_start[i].defined()) Tensor(in[i]).copy_(rng_start[i]);
            return c.fn(in)[0];
          },
          host, which, c.fd_eps, c.fd_atol, c.fd_rtol);
      ++g_totals.passed;
      std::printf("%-70s ok\n", c.str().c_str());
    }
  }
}

TEST_CASE("backend ops: timings", "[.perf]") {
  std::printf("%-10s %-13s %-7s %10s %9s %8s  %s\n", "backend", "dtype", "pass", "ms", "GFLOP/s",
              "GB/s", "case (fwd+bwd: the probe loss's own time and work taken out)");
  for (const Case& c : table())
    if (selected(c, true)) time_case(c);
  if (!cuda::available()) std::printf("(no usable CUDA device: CPU rows only)\n");
}

int main(int argc, char** argv) {
  Options& o = options();
  std::vector<char*> rest = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "check" || a == "grad" || a == "perf") {
      o.mode = a;
    } else if (a == "-h" || a == "--help") {
      std::printf(
          "usage: %s [check|grad|perf] [-o OP] [-b BACKEND] [-r N] [Catch2 options]\n"
          "  check  every case on every backend against CPU eager (the default)\n"
          "  grad   CPU eager gradients against central differences\n"
          "  perf   ms, GFLOP/s, GB/s of the HRNet-sized cases\n"
          "  -o OP  ops whose name contains OP; -b B  backends whose name contains B\n"
          "         (cpu-eager, cpu-graph, cuda-eager, cuda-graph); -r N  perf repetitions\n",
          argv[0]);
      return 0;
    } else if ((a == "-o" || a == "-b" || a == "-r") && i + 1 < argc) {
      const std::string v = argv[++i];
      if (a == "-o") o.op = v;
      if (a == "-r") o.reps = std::max(1, std::atoi(v.c_str()));
      if (a == "-b") {
        o.backend = v;
        if (std::none_of(std::begin(kBackends), std::end(kBackends), [&](const char* b) {
              return std::string(b).find(v) != std::string::npos;
            })) {
          std::fprintf(stderr,
                       "-b %s matches no backend (cpu-eager, cpu-graph, cuda-eager, "
                       "cuda-graph)\n",
                       v.c_str());
          return 2;
        }
      }
    } else {
      rest.push_back(argv[i]);
    }
  }
  if (o.mode == "check" && !cuda::available())
    std::printf("CUDA rows are skipped: no usable CUDA device (hr::cuda::available() is false)\n");
  std::string spec = "[" + o.mode + "]";
  rest.push_back(spec.data());
  Catch::Session session;
  const int rc = session.run(static_cast<int>(rest.size()), rest.data());
  if (o.mode == "grad") g_totals.failed = g_totals.rows - g_totals.passed;  // REQUIRE threw
  if (o.mode != "perf")
    std::printf("backend ops (%s): %d cases, %d rows: %d passed, %d failed, %d skipped\n",
                o.mode.c_str(), g_totals.cases, g_totals.rows, g_totals.passed, g_totals.failed,
                g_totals.skipped);
  return rc;
}
