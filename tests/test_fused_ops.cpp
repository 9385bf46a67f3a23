// Fused batch norm -> (+ residual) -> ReLU: the CPU kernels (cpu::batchnorm_act_*) bit for bit
// against the unfused kernel sequence at several thread counts, the op (ops::batch_norm_act)
// against the eager composition relu(add(batch_norm(x), residual)) through autograd, finite-
// difference gradients of the op for every input, and its argument errors.
#include <catch2/catch.hpp>
#include <omp.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "gradcheck.h"
#include "kernels/cpu/cpu_kernels.h"

using namespace hr;
using hr::test::gradcheck;

namespace {

constexpr float kEps = 1e-5f, kMomentum = 0.1f;

// Bitwise equality; on a mismatch names the first differing element.
void require_bits(const float* got, const float* want, size_t n, const std::string& what) {
  INFO(what);
  if (std::memcmp(got, want, n * sizeof(float)) == 0) return;
  size_t i = 0;
  while (std::memcmp(got + i, want + i, sizeof(float)) == 0) ++i;
  FAIL(what << ": element " << i << " of " << n << " is " << got[i] << ", expected " << want[i]);
}
void require_bits(const std::vector<float>& got, const std::vector<float>& want,
                  const std::string& what) {
  INFO(what);
  REQUIRE(got.size() == want.size());
  require_bits(got.data(), want.data(), got.size(), what);
}
void require_bits(const Tensor& got, const Tensor& want, const std::string& what) {
  INFO(what);
  REQUIRE(got.defined());
  REQUIRE(want.defined());
  REQUIRE(got.shape() == want.shape());
  require_bits(got.to_vector(), want.to_vector(), what);
}

// Normal values with no exact zeros (a zero would hide a missing write or a wrong mask).
std::vector<float> nonzero_randn(size_t n, uint64_t seed, float stddev = 1.f, float mean = 0.f) {
  std::vector<float> v = hr::test::randn(n, seed, stddev, mean);
  for (float& e : v)
    if (e == 0.f) e = 0.25f;
  return v;
}

// Restores the OpenMP thread count on scope exit.
struct ThreadsGuard {
  int saved = omp_get_max_threads();
  ~ThreadsGuard() { omp_set_num_threads(saved); }
};

// ---------------------------------------------------------------- kernel level
struct Dims {
  int64_t N, C, HW;
};
// Odd sizes, HW = 1, rows that are not a multiple of the 16-lane reduction, and shapes large
// enough for the multithreaded path (N*C*HW >= 4096).
const Dims kDims[] = {{4, 3, 1},    {2, 5, 7},   {3, 4, 16},   {2, 3, 37},  {1, 6, 50},
                      {300, 16, 1}, {8, 32, 48}, {3, 17, 129}, {2, 64, 40}, {5, 9, 97}};

struct Data {
  Dims d;
  size_t n;
  std::vector<float> x, r, dy, gamma, beta, rm, rv;
};

Data make_data(const Dims& d, uint64_t seed) {
  Data t;
  t.d = d;
  t.n = static_cast<size_t>(d.N * d.C * d.HW);
  const size_t C = static_cast<size_t>(d.C);
  t.x = nonzero_randn(t.n, seed, 2.f, 0.7f);
  t.r = nonzero_randn(t.n, seed + 1);
  t.dy = nonzero_randn(t.n, seed + 2);
  t.gamma = nonzero_randn(C, seed + 3, 0.5f, 1.f);
  t.beta = nonzero_randn(C, seed + 4, 0.3f);
  t.rm = nonzero_randn(C, seed + 5, 0.5f);
  t.rv = hr::test::uniform(C, seed + 6, 0.3f, 2.5f);
  return t;
}

struct Fwd {
  std::vector<float> y, save_mean, save_invstd, rm, rv;
};
struct Bwd {
  std::vector<float> dx, dr, dgamma, dbeta;
};

// Outputs start filled with `fill`: the reference and the fused run use different values, so an
// element a kernel fails to write cannot compare equal.
Fwd new_fwd(const Data& t, float fill) {
  const size_t C = static_cast<size_t>(t.d.C);
  return {std::vector<float>(t.n, fill), std::vector<float>(C, fill), std::vector<float>(C, fill),
          t.rm, t.rv};
}
Bwd new_bwd(const Data& t, float fill) {
  const size_t C = static_cast<size_t>(t.d.C);
  return {std::vector<float>(t.n, fill), std::vector<float>(t.n, fill), std::vector<float>(C, fill),
          std::vector<float>(C, fill)};
}

// The unfused sequence the fused kernels replace: batch norm, add, relu.
Fwd unfused_forward(const Data& t, bool training, bool res, bool relu) {
  const auto [N, C, HW] = t.d;
  Fwd o = new_fwd(t, 1.f);
  std::vector<float> bn(t.n, 1.f), sum(t.n, 1.f);
  if (training)
    cpu::batchnorm_train_forward(N, C, HW, t.x.data(), t.gamma.data(), t.beta.data(), kEps,
                                 kMomentum, o.rm.data(), o.rv.data(), bn.data(), o.save_mean.data(),
                                 o.save_invstd.data());
  else
    cpu::batchnorm_infer_forward(N, C, HW, t.x.data(), t.gamma.data(), t.beta.data(), t.rm.data(),
                                 t.rv.data(), kEps, bn.data());
  if (res)
    cpu::add(static_cast<int64_t>(t.n), bn.data(), t.r.data(), sum.data());
  else
    sum = bn;
  if (relu)
    cpu::relu_forward(static_cast<int64_t>(t.n), sum.data(), o.y.data());
  else
    o.y = sum;
  return o;
}

// relu_backward, then the batch-norm backward of its result (which is also the residual's
// gradient).
Bwd unfused_backward(const Data& t, const Fwd& f, bool training, bool relu) {
  const auto [N, C, HW] = t.d;
  Bwd o = new_bwd(t, 1.f);
  std::vector<float> g = t.dy;
  if (relu) cpu::relu_backward(static_cast<int64_t>(t.n), f.y.data(), t.dy.data(), g.data());
  o.dr = g;
  if (training)
    cpu::batchnorm_train_backward(N, C, HW, t.x.data(), g.data(), t.gamma.data(),
                                  f.save_mean.data(), f.save_invstd.data(), o.dx.data(),
                                  o.dgamma.data(), o.dbeta.data());
  else
    cpu::batchnorm_infer_backward(N, C, HW, t.x.data(), g.data(), t.gamma.data(), t.rm.data(),
                                  t.rv.data(), kEps, o.dx.data(), o.dgamma.data(), o.dbeta.data());
  return o;
}

Fwd fused_forward(const Data& t, bool training, bool res, bool relu) {
  const auto [N, C, HW] = t.d;
  Fwd o = new_fwd(t, -7.f);
  const float* r = res ? t.r.data() : nullptr;
  if (training)
    cpu::batchnorm_act_train_forward(N, C, HW, t.x.data(), t.gamma.data(), t.beta.data(), kEps,
                                     kMomentum, o.rm.data(), o.rv.data(), r, relu, o.y.data(),
                                     o.save_mean.data(), o.save_invstd.data());
  else
    cpu::batchnorm_act_infer_forward(N, C, HW, t.x.data(), t.gamma.data(), t.beta.data(),
                                     t.rm.data(), t.rv.data(), kEps, r, relu, o.y.data());
  return o;
}

// Which outputs the fused backward is asked for.
struct Want {
  bool dx = true, dr = true, dgamma = true, dbeta = true;
};

Bwd fused_backward(const Data& t, const Fwd& f, bool training, bool relu, Want w) {
  const auto [N, C, HW] = t.d;
  Bwd o = new_bwd(t, -7.f);
  float* dx = w.dx ? o.dx.data() : nullptr;
  float* dr = w.dr ? o.dr.data() : nullptr;
  float* dg = w.dgamma ? o.dgamma.data() : nullptr;
  float* db = w.dbeta ? o.dbeta.data() : nullptr;
  const float* y = relu ? f.y.data() : nullptr;  // the mask is only read with the ReLU
  if (training)
    cpu::batchnorm_act_train_backward(N, C, HW, t.x.data(), y, t.dy.data(), t.gamma.data(),
                                      f.save_mean.data(), f.save_invstd.data(), relu, dx, dr, dg,
                                      db);
  else
    cpu::batchnorm_act_infer_backward(N, C, HW, t.x.data(), y, t.dy.data(), t.gamma.data(),
                                      t.rm.data(), t.rv.data(), kEps, relu, dx, dr, dg, db);
  return o;
}

void require_fwd(const Fwd& got, const Fwd& want, bool training) {
  require_bits(got.y, want.y, "y");
  if (!training) return;
  require_bits(got.save_mean, want.save_mean, "save_mean");
  require_bits(got.save_invstd, want.save_invstd, "save_invstd");
  require_bits(got.rm, want.rm, "running_mean");
  require_bits(got.rv, want.rv, "running_var");
}

void require_bwd(const Bwd& got, const Bwd& want, Want w) {
  if (w.dx) require_bits(got.dx, want.dx, "dx");
  if (w.dr) require_bits(got.dr, want.dr, "dresidual");
  if (w.dgamma) require_bits(got.dgamma, want.dgamma, "dgamma");
  if (w.dbeta) require_bits(got.dbeta, want.dbeta, "dbeta");
}

void check_kernels(bool training) {
  ThreadsGuard guard;
  uint64_t seed = training ? 100 : 200;
  for (const Dims& d : kDims) {
    const Data t = make_data(d, seed += 10);
    for (bool res : {false, true}) {
      for (bool relu : {false, true}) {
        // The reference runs on one thread; the fused kernels on 1, 2 and 3.
        omp_set_num_threads(1);
        const Fwd ref_f = unfused_forward(t, training, res, relu);
        const Bwd ref_b = unfused_backward(t, ref_f, training, relu);
        for (int threads : {1, 2, 3}) {
          omp_set_num_threads(threads);
          INFO("N=" << d.N << " C=" << d.C << " HW=" << d.HW << " residual=" << res
                    << " relu=" << relu << " threads=" << threads);
          const Fwd f = fused_forward(t, training, res, relu);
          require_fwd(f, ref_f, training);
          require_bwd(fused_backward(t, f, training, relu, Want{}), ref_b, Want{});
        }
        // Every subset of the outputs (the passes differ with and without dresidual).
        omp_set_num_threads(2);
        for (int mask = 0; mask < 16; ++mask) {
          const Want w{(mask & 1) != 0, (mask & 2) != 0, (mask & 4) != 0, (mask & 8) != 0};
          INFO("N=" << d.N << " C=" << d.C << " HW=" << d.HW << " residual=" << res
                    << " relu=" << relu << " outputs mask=" << mask);
          require_bwd(fused_backward(t, ref_f, training, relu, w), ref_b, w);
        }
      }
    }
  }
}

}  // namespace

TEST_CASE("fused batchnorm_act training kernels are bit-identical to the unfused sequence",
          "[fused][cpu]") {
  check_kernels(true);
}

TEST_CASE("fused batchnorm_act inference kernels are bit-identical to the unfused sequence",
          "[fused][cpu]") {
  check_kernels(false);
}

TEST_CASE("fused batchnorm_act masks the gradient with the forward output", "[fused][cpu]") {
  // Independent of the unfused kernels: with relu, dresidual is dy where y > 0 and 0 elsewhere;
  // without, it is dy. Both masks occur (the residual moves y across zero).
  const Data t = make_data({3, 4, 20}, 7);
  for (bool relu : {false, true}) {
    const Fwd f = fused_forward(t, true, true, relu);
    const Bwd b = fused_backward(t, f, true, relu, Want{});
    size_t masked = 0;
    for (size_t i = 0; i < t.n; ++i) {
      const float want = relu && f.y[i] <= 0.f ? 0.f : t.dy[i];
      masked += want == 0.f;
      REQUIRE(b.dr[i] == want);
      if (relu) REQUIRE(f.y[i] >= 0.f);
    }
    if (relu)
      REQUIRE(masked > t.n / 5);
    else
      REQUIRE(masked == 0);
  }
}

TEST_CASE("fused batchnorm_act kernel errors", "[fused][cpu][errors]") {
  const std::vector<float> x(2, 1.f), g(2, 1.f), b(2, 0.f);
  std::vector<float> y(2), sm(2), si(2), dx(2);
  REQUIRE_THROWS_WITH(cpu::batchnorm_act_train_forward(1, 2, 1, x.data(), g.data(), b.data(), kEps,
                                                       kMomentum, nullptr, nullptr, nullptr, true,
                                                       y.data(), sm.data(), si.data()),
                      Catch::Contains("batchnorm_act_train_forward"));
  REQUIRE_THROWS_WITH(
      cpu::batchnorm_act_train_backward(2, 1, 1, x.data(), nullptr, x.data(), g.data(), sm.data(),
                                        si.data(), true, dx.data(), nullptr, nullptr, nullptr),
      Catch::Contains("batchnorm_act_train_backward") && Catch::Contains("y"));
  REQUIRE_THROWS_WITH(cpu::batchnorm_act_infer_backward(2, 1, 1, x.data(), nullptr, x.data(),
                                                        g.data(), sm.data(), si.data(), kEps, true,
                                                        dx.data(), nullptr, nullptr, nullptr),
                      Catch::Contains("batchnorm_act_infer_backward"));
}

// ---------------------------------------------------------------- op level
namespace {

struct OpInputs {
  Tensor x, r, gamma, beta, rm, rv, seed;
};

OpInputs op_inputs(const Shape& s, uint64_t seed) {
  const size_t n = static_cast<size_t>(shape_numel(s)), C = static_cast<size_t>(s[1]);
  return {Tensor::from_vector(nonzero_randn(n, seed, 2.f, 0.5f), s),
          Tensor::from_vector(nonzero_randn(n, seed + 1), s),
          Tensor::from_vector(nonzero_randn(C, seed + 2, 0.5f, 1.f), {s[1]}),
          Tensor::from_vector(nonzero_randn(C, seed + 3, 0.3f), {s[1]}),
          Tensor::from_vector(nonzero_randn(C, seed + 4, 0.5f), {s[1]}),
          Tensor::from_vector(hr::test::uniform(C, seed + 5, 0.3f, 2.5f), {s[1]}),
          Tensor::from_vector(nonzero_randn(n, seed + 6), s)};
}

struct OpRun {
  Tensor y, rm, rv, nbt, x, r, gamma, beta;  // x, r, gamma, beta: the leaves (with .grad())
};

// One forward + backward, fused or as the eager composition; `grads` picks the leaves that
// require grad (x, residual, gamma, beta).
OpRun run_op(const OpInputs& in, bool fused, bool training, bool res, bool relu,
             std::array<bool, 4> grads) {
  OpRun o;
  o.x = in.x.clone().set_requires_grad(grads[0]);
  o.r = in.r.clone().set_requires_grad(grads[1]);
  o.gamma = in.gamma.clone().set_requires_grad(grads[2]);
  o.beta = in.beta.clone().set_requires_grad(grads[3]);
  o.rm = in.rm.clone();
  o.rv = in.rv.clone();
  o.nbt = Tensor::zeros({}, DType::i64);
  const Tensor r = res ? o.r : Tensor();
  if (fused) {
    o.y = ops::batch_norm_act(o.x, r, relu, o.gamma, o.beta, o.rm, o.rv, training, kMomentum, kEps,
                              o.nbt);
  } else {
    o.y = ops::batch_norm(o.x, o.gamma, o.beta, o.rm, o.rv, training, kMomentum, kEps, o.nbt);
    if (res) o.y = ops::add(o.y, r);
    if (relu) o.y = ops::relu(o.y);
  }
  if (o.y.requires_grad()) o.y.backward(in.seed);
  return o;
}

void require_same_grad(const Tensor& got, const Tensor& want, bool expected,
                       const std::string& what) {
  INFO(what);
  REQUIRE(got.grad().defined() == expected);
  REQUIRE(want.grad().defined() == expected);
  if (expected) require_bits(got.grad(), want.grad(), what);
}

}  // namespace

TEST_CASE("batch_norm_act equals relu(add(batch_norm(x), residual)) through autograd",
          "[fused][autograd]") {
  const std::vector<Shape> shapes = {{2, 3, 4, 5}, {6, 4}, {3, 5, 1, 1}, {2, 16, 9, 7}};
  const std::vector<std::array<bool, 4>> grad_sets = {
      {true, true, true, true}, {false, true, false, false}, {true, false, true, false}};
  uint64_t seed = 300;
  for (const Shape& s : shapes) {
    const OpInputs in = op_inputs(s, seed += 10);
    for (bool training : {true, false}) {
      for (bool res : {false, true}) {
        for (bool relu : {false, true}) {
          for (const auto& grads : grad_sets) {
            INFO("shape " << shape_str(s) << " training=" << training << " residual=" << res
                          << " relu=" << relu << " grads " << grads[0] << grads[1] << grads[2]
                          << grads[3]);
            const OpRun e = run_op(in, false, training, res, relu, grads);
            const OpRun f = run_op(in, true, training, res, relu, grads);
            require_bits(f.y, e.y, "y");
            require_bits(f.rm, e.rm, "running_mean");
            require_bits(f.rv, e.rv, "running_var");
            REQUIRE(f.nbt.data<int64_t>()[0] == (training ? 1 : 0));
            REQUIRE(e.nbt.data<int64_t>()[0] == (training ? 1 : 0));
            // One node, straight to the leaves.
            const bool any = grads[0] || (res && grads[1]) || grads[2] || grads[3];
            REQUIRE(f.y.requires_grad() == any);
            if (any) {
              REQUIRE(f.y.grad_fn() != nullptr);
              REQUIRE(std::string(f.y.grad_fn()->name()) == "batch_norm_act");
              for (const Edge& edge : f.y.grad_fn()->next) REQUIRE(edge.node == nullptr);
            }
            require_same_grad(f.x, e.x, grads[0], "dx");
            require_same_grad(f.r, e.r, res && grads[1], "dresidual");
            require_same_grad(f.gamma, e.gamma, grads[2], "dgamma");
            require_same_grad(f.beta, e.beta, grads[3], "dbeta");
          }
        }
      }
    }
  }
}

TEST_CASE("batch_norm_act records nothing without grad mode", "[fused][autograd]") {
  const OpInputs in = op_inputs({2, 3, 4, 4}, 5);
  Tensor x = in.x.clone().set_requires_grad(true);
  NoGradGuard ng;
  Tensor y =
      ops::batch_norm_act(x, in.r, true, in.gamma, in.beta, in.rm.clone(), in.rv.clone(), true);
  REQUIRE_FALSE(y.requires_grad());
  REQUIRE(y.grad_fn() == nullptr);
}

TEST_CASE("batch_norm_act gradients by finite differences", "[fused][autograd][grad]") {
  const std::vector<Shape> shapes = {{2, 3, 3, 4}, {5, 4}};
  uint64_t seed = 500;
  for (const Shape& s : shapes) {
    for (bool training : {true, false}) {
      for (bool relu : {true, false}) {
        const OpInputs in = op_inputs(s, seed += 10);
        // The residual puts batch_norm(x) + residual at 0.3..1.3 from zero, so the finite
        // differences (eps 1e-2 moves a pre-activation by well under 0.1) never cross the kink.
        Tensor r;
        {
          NoGradGuard ng;
          const Tensor z =
              ops::batch_norm(in.x, in.gamma, in.beta, in.rm.clone(), in.rv.clone(), training);
          const std::vector<float> zv = z.to_vector();
          std::vector<float> mag = hr::test::uniform(zv.size(), seed + 7, 0.3f, 1.3f);
          const std::vector<float> sign = hr::test::randn(zv.size(), seed + 8);
          for (size_t i = 0; i < zv.size(); ++i) mag[i] = (sign[i] < 0 ? -mag[i] : mag[i]) - zv[i];
          r = Tensor::from_vector(mag, s);
        }
        Tensor rm = in.rm.clone(), rv = in.rv.clone();
        const std::string name = std::string("batch_norm_act ") + shape_str(s) +
                                 (training ? " train" : " eval") + (relu ? " relu" : "");
        gradcheck(
            name,
            [&](const std::vector<Tensor>& v) {
              return ops::batch_norm_act(v[0], v[1], relu, v[2], v[3], rm, rv, training);
            },
            {in.x, r, in.gamma, in.beta}, {}, 1e-2f, 3e-3, 2e-2);
      }
    }
  }
}

TEST_CASE("batch_norm_act argument errors name the op and the shapes", "[fused][errors]") {
  const OpInputs in = op_inputs({2, 3, 4, 5}, 9);
  auto call = [&](const Tensor& x, const Tensor& r, const Tensor& gamma, bool training,
                  const Tensor& rm) {
    return ops::batch_norm_act(x, r, true, gamma, in.beta, rm, in.rv.clone(), training);
  };
  REQUIRE_THROWS_WITH(call(in.x, Tensor::zeros({2, 3, 5, 4}), in.gamma, true, in.rm.clone()),
                      Catch::Contains("batch_norm_act") && Catch::Contains("residual") &&
                          Catch::Contains("[2, 3, 5, 4]") && Catch::Contains("[2, 3, 4, 5]"));
  REQUIRE_THROWS_WITH(call(in.x, Tensor::zeros({2, 3, 20}), in.gamma, true, in.rm.clone()),
                      Catch::Contains("batch_norm_act") && Catch::Contains("[2, 3, 20]") &&
                          Catch::Contains("[2, 3, 4, 5]"));
  REQUIRE_THROWS_WITH(
      call(in.x, in.r.to(DType::bf16), in.gamma, true, in.rm.clone()),
      Catch::Contains("batch_norm_act") && Catch::Contains("residual") && Catch::Contains("bf16"));
  REQUIRE_THROWS_WITH(call(in.x, in.r, Tensor::ones({4}), true, in.rm.clone()),
                      Catch::Contains("batch_norm_act") && Catch::Contains("[4]"));
  REQUIRE_THROWS_WITH(call(in.x, in.r, in.gamma, false, Tensor()),
                      Catch::Contains("batch_norm_act") && Catch::Contains("running statistics"));
  REQUIRE_THROWS_WITH(
      call(Tensor::zeros({1, 3, 1, 1}), Tensor::zeros({1, 3, 1, 1}), in.gamma, true, in.rm.clone()),
      Catch::Contains("batch_norm_act") && Catch::Contains("[1, 3, 1, 1]"));
  REQUIRE_THROWS_WITH(
      call(Tensor::zeros({2, 3, 4}), Tensor::zeros({2, 3, 4}), in.gamma, true, in.rm.clone()),
      Catch::Contains("batch_norm_act") && Catch::Contains("[2, 3, 4]"));
}
