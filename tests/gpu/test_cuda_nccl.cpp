// The data-parallel reduction on CUDA (NCCL; engine/dist.h) with a communicator of one rank, the
// most a one-GPU machine can run: an averaging and a summing all-reduce leave random values as
// they are, bit for bit; the trainer's step with the reduction forced on (set_data_parallel's
// `always`), eager and as a captured CUDA graph with the all-reduce inside, equals the same
// step without it. Jobs of several GPUs need a machine with several (docs/DISTRIBUTED.md).
#include <catch2/catch.hpp>
#include <random>

#include "engine/dist.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/stream.h"
#include "heatmap_task.h"
#include "kernels/cuda/nccl.h"
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
  void* comm = dist::nccl_comm();
  for (bool average : {true, false}) {
    cuda::nccl_group_start();
    cuda::nccl_all_reduce(comm, t.raw_data(), t.numel(), cuda::DT::f32, average, current_stream());
    cuda::nccl_group_end();
    CHECK(t.to_vector() == v);
  }
}

TEST_CASE("cuda nccl: the trainer's step with the reduction equals the step without",
          "[cuda][nccl]") {
  hr::test::HeatmapTask task;
  const ModelSpec spec = small_spec(Head::Pose, true);
  const Shape in{2, 3, 64, 64};
  for (bool graph : {false, true}) {
    INFO("graph " << graph);
    HRNet plain(spec, 5), reduced(spec, 5);
    for (HRNet* m : {&plain, &reduced}) {
      m->train();
      m->to(Device::cuda());
    }
    SGDOptions o;
    o.lr = 0.01;
    o.momentum = 0.9;
    SGD op(plain.parameters(), o), orr(reduced.parameters(), o);
    tasks::TrainStep sp(task, plain, op, Device::cuda(), DType::f32, graph),
        sr(task, reduced, orr, Device::cuda(), DType::f32, graph);
    sr.set_data_parallel(false, /*always=*/true);
    for (int k = 0; k < 5; ++k) {  // graph: an eager run, the capture, then replays
      const data::Batch b = hr::test::heatmap_batch(in, spec.num_joints, 900 + k);
      sp.step(b);
      sr.step(b);
    }
    const auto lp = sp.take_losses(), lr = sr.take_losses();
    CHECK(lr.sum == lp.sum);
    const NamedTensors pp = plain.named_parameters(), pr = reduced.named_parameters();
    for (size_t i = 0; i < pp.size(); ++i) {
      INFO(pp[i].first);
      CHECK(pr[i].second.to_vector() == pp[i].second.to_vector());
    }
  }
}
