// Data parallelism on one GPU (engine/dist.h; jobs of several GPUs need a machine with several,
// docs/DISTRIBUTED.md). NCCL with a communicator of one rank: an averaging and a summing
// all-reduce leave random values as they are, bit for bit; the trainer's step with the reduction
// forced on (set_data_parallel's `always`), eager and as a captured CUDA graph with the
// all-reduce inside, equals the same step without it. Synchronised batch norm's CUDA kernels
// (kernels/cuda/sync_bn.h): two halves of a batch with their sums added on the host equal the CPU
// batch norm of the whole batch; the trainer's step with ENGINE.SYNC_BN on one rank equals plain
// batch norm.
#include <catch2/catch.hpp>
#include <functional>
#include <random>

#include "engine/dist.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/stream.h"
#include "heatmap_task.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/nccl.h"
#include "kernels/cuda/sync_bn.h"
#include "models/hrnet.h"
#include "small_specs.h"
#include "tasks/trainer.h"

using namespace hr;
using namespace hr::models;
using hr::test::small_spec;

TEST_CASE("cuda nccl: one-rank all-reduces leave the values as they are", "[cuda][nccl]") {
  REQUIRE(cuda::nccl_built());
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.f, 3.f);
  std::vector<float> v(100003);
  for (float& x : v) x = d(rng);
  Tensor t = Tensor::from_vector(v, {int64_t(v.size())}).to(Device::cuda());
  void* comm = dist::nccl_grad_comm();
  for (bool average : {true, false}) {
    cuda::nccl_group_start();
    cuda::nccl_all_reduce_out(comm, t.raw_data(), t.raw_data(), t.numel(), cuda::DT::f32, average,
                              current_stream());
    cuda::nccl_group_end();
    CHECK(t.to_vector() == v);
  }
}

namespace {

// The small pose HRNet trained `steps` steps on CUDA (graph or eager, SGD with momentum) twice,
// the second TrainStep configured by `setup`; the losses' sums and the parameters of both.
struct TwoRuns {
  double loss_a = 0, loss_b = 0;
  NamedTensors a, b;
};
TwoRuns train_twice(bool graph, int steps, uint64_t seed,
                    const std::function<void(tasks::TrainStep&)>& setup) {
  hr::test::HeatmapTask task;
  const ModelSpec spec = small_spec(Head::Pose, true);
  const Shape in{2, 3, 64, 64};
  HRNet ma(spec, 5), mb(spec, 5);
  for (HRNet* m : {&ma, &mb}) {
    m->train();
    m->to(Device::cuda());
  }
  SGDOptions o;
  o.lr = 0.01;
  o.momentum = 0.9;
  SGD oa(ma.parameters(), o), ob(mb.parameters(), o);
  tasks::TrainStep sa(task, ma, oa, Device::cuda(), DType::f32, graph),
      sb(task, mb, ob, Device::cuda(), DType::f32, graph);
  setup(sb);
  for (int k = 0; k < steps; ++k) {  // graph: an eager run, the capture, then replays
    const data::Batch b = hr::test::heatmap_batch(in, spec.num_joints, seed + uint64_t(k));
    sa.step(b);
    sb.step(b);
  }
  TwoRuns r;
  r.loss_a = sa.take_losses().sum;
  r.loss_b = sb.take_losses().sum;
  r.a = ma.named_parameters();
  r.b = mb.named_parameters();
  return r;
}

}  // namespace

TEST_CASE("cuda nccl: the trainer's step with the reduction equals the step without",
          "[cuda][nccl]") {
  for (bool graph : {false, true}) {
    INFO("graph " << graph);
    const TwoRuns r = train_twice(graph, 5, 900, [](tasks::TrainStep& s) {
      s.set_data_parallel(false, /*always=*/true);  // one rank: NCCL's one-rank communicator
    });
    CHECK(r.loss_b == r.loss_a);
    for (size_t i = 0; i < r.a.size(); ++i) {
      INFO(r.a[i].first);
      CHECK(r.b[i].second.to_vector() == r.a[i].second.to_vector());
    }
  }
}

namespace {

std::vector<float> randv(size_t n, uint32_t seed, float shift) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.5f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng) + shift;
  return v;
}

}  // namespace

// Two "ranks" as the two halves of one batch on one GPU, their sums added on the host where NCCL
// would: the synchronised kernels give the CPU batch norm of the whole batch.
TEST_CASE("cuda sync batch norm: two halves with their sums added equal the whole batch on the CPU",
          "[cuda][syncbn]") {
  const int64_t M = 2 * 300, C = 70, H = M / 2;  // rows [M, C] (NHWC), halves of H rows
  const size_t Cs = static_cast<size_t>(C);
  const auto x = randv(size_t(M * C), 1, 0.8f), dy = randv(size_t(M * C), 2, 0.f),
             res = randv(size_t(M * C), 3, 0.f);
  const auto gamma = randv(Cs, 4, 1.f), beta = randv(Cs, 5, 0.f);
  for (bool relu : {false, true}) {
    INFO("relu " << relu);
    // CPU reference over the whole batch: [N=M, C, HW=1] is the same layout as rows [M, C]
    std::vector<float> rm(Cs, 0.2f), rv(Cs, 1.2f), y(x.size()), sm(Cs),
        si(Cs), dx(x.size()), dres(x.size()), dg(Cs), db(Cs);
    cpu::batchnorm_act_train_forward(M, C, 1, x.data(), gamma.data(), beta.data(), 1e-5f, 0.1f,
                                     rm.data(), rv.data(), res.data(), relu, y.data(), sm.data(),
                                     si.data());
    cpu::batchnorm_act_train_backward(M, C, 1, x.data(), y.data(), dy.data(), gamma.data(),
                                      sm.data(), si.data(), relu, dx.data(), dres.data(), dg.data(),
                                      db.data());
    // the GPU, one half at a time
    auto up = [](const std::vector<float>& v) {
      return Tensor::from_vector(v, {int64_t(v.size())}).to(Device::cuda());
    };
    Tensor X = up(x), DY = up(dy), R = up(res), G = up(gamma), B = up(beta);
    Tensor Y = up(std::vector<float>(x.size())), DX = up(std::vector<float>(x.size())),
           DR = up(std::vector<float>(x.size()));
    std::vector<Tensor> RM, RV, SM, SI, DG, DB;
    for (int r = 0; r < 2; ++r) {
      RM.push_back(up(std::vector<float>(Cs, 0.2f)));
      RV.push_back(up(std::vector<float>(Cs, 1.2f)));
      for (auto* v : {&SM, &SI, &DG, &DB}) v->push_back(up(std::vector<float>(Cs)));
    }
    const cuda::Stream s = current_stream();
    const size_t wsb = cuda::syncbn_workspace_bytes(H, C);
    void* ws[2] = {cuda::alloc(wsb, s), cuda::alloc(wsb, s)};
    auto at = [&](const Tensor& t, int r) { return static_cast<float*>(t.raw_data()) + r * H * C; };
    // the host's part of the all-reduce: both halves' n doubles summed into both
    auto exchange = [&](double* d0, double* d1, int64_t n) {
      std::vector<double> a(static_cast<size_t>(n)), b(static_cast<size_t>(n));
      cuda::memcpy_d2h(a.data(), d0, size_t(n) * 8, s);
      cuda::memcpy_d2h(b.data(), d1, size_t(n) * 8, s);
      for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
      cuda::memcpy_h2d(d0, a.data(), size_t(n) * 8, s);
      cuda::memcpy_h2d(d1, a.data(), size_t(n) * 8, s);
    };
    double* p[2];
    for (int r = 0; r < 2; ++r) p[r] = cuda::syncbn_forward_sums(cuda::DT::f32, H, C, at(X, r), ws[r], s);
    exchange(p[0], p[1], C + 1);
    for (int r = 0; r < 2; ++r) p[r] = cuda::syncbn_forward_sq(cuda::DT::f32, H, C, at(X, r), ws[r], s);
    exchange(p[0], p[1], C);
    for (int r = 0; r < 2; ++r)
      cuda::syncbn_forward_apply(cuda::DT::f32, H, C, at(X, r), G.data<float>(), B.data<float>(),
                                 1e-5f, 0.1f, RM[r].data<float>(), RV[r].data<float>(), at(R, r),
                                 relu, at(Y, r), SM[r].data<float>(), SI[r].data<float>(), ws[r], s);
    for (int r = 0; r < 2; ++r)
      p[r] = cuda::syncbn_backward_sums(cuda::DT::f32, H, C, at(X, r), at(Y, r), at(DY, r),
                                        SM[r].data<float>(), SI[r].data<float>(), relu, at(DR, r),
                                        DG[r].data<float>(), DB[r].data<float>(), ws[r], s);
    exchange(p[0], p[1], 2 * C + 1);
    for (int r = 0; r < 2; ++r)
      cuda::syncbn_backward_dx(cuda::DT::f32, H, C, at(X, r), at(Y, r), at(DY, r), G.data<float>(),
                               SM[r].data<float>(), SI[r].data<float>(), relu, at(DX, r), ws[r], s);
    for (void* w : ws) cuda::free(w, s);
    const auto y2 = Y.to_vector(), dx2 = DX.to_vector(), dr2 = DR.to_vector();
    for (size_t i = 0; i < x.size(); ++i) {
      REQUIRE(y2[i] == Approx(y[i]).margin(1e-5).epsilon(1e-5));
      REQUIRE(dx2[i] == Approx(dx[i]).margin(2e-5).epsilon(2e-4));
      if (relu) REQUIRE(dr2[i] == Approx(dres[i]).margin(1e-6));
    }
    for (int r = 0; r < 2; ++r) {
      const auto rm2 = RM[r].to_vector(), rv2 = RV[r].to_vector(), sm2 = SM[r].to_vector();
      for (size_t c = 0; c < Cs; ++c) {
        REQUIRE(sm2[c] == Approx(sm[c]).margin(1e-6));
        REQUIRE(rm2[c] == Approx(rm[c]).margin(1e-6));
        REQUIRE(rv2[c] == Approx(rv[c]).epsilon(1e-5));
      }
    }
    const auto dg0 = DG[0].to_vector(), dg1 = DG[1].to_vector(), db0 = DB[0].to_vector(),
               db1 = DB[1].to_vector();
    for (size_t c = 0; c < Cs; ++c) {  // each half's own; their sum is the batch's
      REQUIRE(dg0[c] + dg1[c] == Approx(dg[c]).margin(1e-4).epsilon(1e-4));
      REQUIRE(db0[c] + db1[c] == Approx(db[c]).margin(1e-4).epsilon(1e-4));
    }
  }
}

// One rank: a training step with SyncBatchNorm (the trainer's ENGINE.SYNC_BN) on CUDA, eager and
// captured, equals the step with plain batch norm up to the kernels' rounding.
TEST_CASE("cuda sync batch norm: the trainer's step with one rank equals plain batch norm",
          "[cuda][syncbn]") {
  for (bool graph : {false, true}) {
    INFO("graph " << graph);
    const TwoRuns r = train_twice(graph, 4, 700, [](tasks::TrainStep& s) {
      s.set_data_parallel(/*sync_bn=*/true);
    });
    CHECK(r.loss_b == Approx(r.loss_a).epsilon(1e-4));
    for (size_t i = 0; i < r.a.size(); ++i) {
      INFO(r.a[i].first);
      const auto a = r.a[i].second.to_vector(), b = r.b[i].second.to_vector();
      for (size_t j = 0; j < a.size(); ++j) REQUIRE(b[j] == Approx(a[j]).margin(1e-4).epsilon(1e-3));
    }
  }
}
