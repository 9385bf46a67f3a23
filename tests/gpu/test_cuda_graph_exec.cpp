// The static-graph executor on CUDA: HRNet's training step (forward, loss, every gradient) with
// the branches on their own streams equals the CPU eager reference; a captured CUDA graph replays
// to the same results as the uncaptured run, with new inputs bound between replays; bf16
// autocast graphs stay within bf16 tolerances of fp32; inference graphs equal eager inference.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/graph.h"
#include "engine/nn.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "kernels/cuda/cuda_kernels.h"
#include "models/hrnet.h"
#include "small_specs.h"
#include "tensor_checks.h"
#include "test_util.h"

using namespace hr;
using namespace hr::models;
using hr::test::rand_tensor;
using hr::test::require_close_scaled;
using hr::test::small_spec;

namespace {

struct Step {
  std::unique_ptr<graph::Executable> exe;
  Shape out;
};

Step compile_pose_training(HRNet& model, const Shape& in, DType compute) {
  graph::Graph g(graph::GraphOptions{Device::cuda()});
  Tensor y, loss;
  {
    AutocastGuard ac(compute);
    y = model.forward(g.input("x", in));
  }
  const Shape out = y.shape();
  loss = ops::heatmap_loss(y, g.input("target", out), g.input("weight", {out[0], out[1]}));
  g.output(loss, "loss");
  g.output(y, "heatmaps");
  graph::CompileOptions co;
  co.loss = loss;
  return {std::make_unique<graph::Executable>(std::move(g), co), out};
}

}  // namespace

TEST_CASE("cuda graph exec: training step on branch streams equals CPU eager, captured replay too",
          "[cuda][graph]") {
  const ModelSpec spec = small_spec(Head::Pose, false);
  HRNet cpu_model(spec, 5), gpu_model(spec, 5);
  cpu_model.train();
  gpu_model.train();
  gpu_model.to(Device::cuda());
  const Shape in{2, 3, 64, 64};
  Step s = compile_pose_training(gpu_model, in, DType::f32);
  CHECK(s.exe->stats().streams == 4);
  CHECK(s.exe->stats().events > 0);

  for (int round = 0; round < 3; ++round) {
    INFO("round " << round << (round > 0 ? " (captured graph replay)" : " (stream launches)"));
    const Tensor x = rand_tensor(in, 10 + round);
    const Tensor target = rand_tensor(s.out, 20 + round, 0.f, 1.f);
    const Tensor weight = rand_tensor({s.out[0], s.out[1]}, 30 + round, 0.25f, 1.f);
    // CPU eager reference on the same weights (batch statistics: running stats do not matter)
    for (Tensor p : cpu_model.parameters()) p.zero_grad();
    Tensor ref_y = cpu_model.forward(x);
    Tensor ref_loss = ops::heatmap_loss(ref_y, target, weight);
    ref_loss.backward();

    s.exe->set_input("x", x);
    s.exe->set_input("target", target);
    s.exe->set_input("weight", weight);
    s.exe->run();
    if (round == 0) {
      cuda::synchronize(cuda::default_stream());
      s.exe->capture();  // later rounds replay the graph
      REQUIRE(s.exe->captured());
    }
    require_close_scaled(s.exe->output("loss"), ref_loss.detach(), 1e-4, "loss");
    require_close_scaled(s.exe->output("heatmaps"), ref_y.detach(), 1e-4, "heatmaps");
    const NamedTensors pc = cpu_model.named_parameters(), pg = gpu_model.named_parameters();
    for (size_t i = 0; i < pc.size(); ++i)
      require_close_scaled(s.exe->grad(pg[i].second), pc[i].second.grad(), 1e-3,
                           "gradient of " + pc[i].first);
  }
}

TEST_CASE("cuda graph exec: bf16 autocast training graph is close to fp32", "[cuda][graph]") {
  const ModelSpec spec = small_spec(Head::Pose, false);
  HRNet a(spec, 8), b(spec, 8);
  a.train();
  b.train();
  a.to(Device::cuda());
  b.to(Device::cuda());
  const Shape in{4, 3, 64, 64};
  Step f32 = compile_pose_training(a, in, DType::f32), bf16 = compile_pose_training(b, in, DType::bf16);
  const Tensor x = rand_tensor(in, 1);
  const Tensor target = rand_tensor(f32.out, 2, 0.f, 1.f);
  const Tensor weight = rand_tensor({f32.out[0], f32.out[1]}, 3, 0.25f, 1.f);
  for (Step* s : {&f32, &bf16}) {
    s->exe->set_input("x", x);
    s->exe->set_input("target", target);
    s->exe->set_input("weight", weight);
    s->exe->run();
  }
  require_close_scaled(bf16.exe->output("loss"), f32.exe->output("loss"), 3e-2, "loss");
  require_close_scaled(bf16.exe->output("heatmaps").to(DType::f32), f32.exe->output("heatmaps"),
                       6e-2, "heatmaps");
  // gradients of the fp32 master weights are fp32 and close in relative L2
  const NamedTensors pa = a.named_parameters(), pb = b.named_parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    const Tensor ga = f32.exe->grad(pa[i].second), gb = bf16.exe->grad(pb[i].second);
    REQUIRE(gb.dtype() == DType::f32);
    const std::vector<float> va = ga.to_vector(), vb = gb.to_vector();
    double num = 0, den = 0;
    for (size_t k = 0; k < va.size(); ++k) {
      num += (va[k] - vb[k]) * double(va[k] - vb[k]);
      den += double(va[k]) * va[k];
    }
    INFO("gradient of " << pa[i].first);
    CHECK(std::sqrt(num / std::max(den, 1e-30)) < 0.1);
  }
}

TEST_CASE("cuda graph exec: inference graph equals eager inference, captured", "[cuda][graph]") {
  HRNet model(small_spec(Head::Seg, false), 4);
  model.eval();
  model.to(Device::cuda());
  const Tensor x = rand_tensor({2, 3, 64, 64}, 9);
  Tensor ref;
  {
    NoGradGuard ng;
    ref = model.forward(x.to(Device::cuda()));
  }
  for (bool inference : {false, true}) {
    INFO("inference pipeline (batch norm folded) " << inference);
    graph::Graph g(graph::GraphOptions{Device::cuda()});
    g.output(model.forward(g.input("x", x.shape())), "logits");
    graph::CompileOptions co;
    co.inference = inference;
    graph::Executable e(std::move(g), co);
    if (inference) CHECK(e.stats().folded > 0);
    e.set_input("x", x);
    e.run();
    cuda::synchronize(cuda::default_stream());
    e.capture();
    e.run();
    require_close_scaled(e.output("logits"), ref, inference ? 1e-4 : 1e-5, "logits");
  }
}

TEST_CASE("cuda graph exec: a whole training step (with a capturable Adam) replays like eager steps",
          "[cuda][graph]") {
  const ModelSpec spec = small_spec(Head::Pose, true);
  HRNet eager(spec, 21), replayed(spec, 21);
  for (HRNet* m : {&eager, &replayed}) {
    m->train();
    m->to(Device::cuda());
  }
  AdamOptions ao;
  ao.lr = 1e-3;
  Adam oe(eager.parameters(), ao), og(replayed.parameters(), ao);
  og.set_capturable(true);
  const Shape in{2, 3, 64, 64};
  Step s = compile_pose_training(replayed, in, DType::f32);
  for (Tensor p : replayed.parameters()) p.set_grad(s.exe->grad(p));
  for (int step = 0; step < 4; ++step) {
    const Tensor x = rand_tensor(in, 40 + step);
    const Tensor target = rand_tensor(s.out, 50 + step, 0.f, 1.f);
    const Tensor weight = rand_tensor({s.out[0], s.out[1]}, 60 + step, 0.25f, 1.f);
    oe.zero_grad();
    Tensor loss = ops::heatmap_loss(eager.forward(x.to(Device::cuda())), target.to(Device::cuda()),
                                    weight.to(Device::cuda()));
    loss.backward();
    oe.step();
    oe.set_lr(oe.lr() * 0.5);  // a changing learning rate must reach the replayed graph
    s.exe->set_input("x", x);
    s.exe->set_input("target", target);
    s.exe->set_input("weight", weight);
    if (step == 0) {
      s.exe->run();
      og.step();
      cuda::synchronize(cuda::default_stream());
      s.exe->capture([&] { og.enqueue_step(); }, [&] { og.prepare_step(); });
    } else {
      s.exe->run();  // prepare_step, then forward + backward + Adam as one graph
    }
    og.set_lr(og.lr() * 0.5);
    INFO("step " << step);
    require_close_scaled(s.exe->output("loss"), loss.detach(), 1e-3, "loss");
  }
  CHECK(og.steps() == 4);
  const NamedTensors pe = eager.named_parameters(), pg = replayed.named_parameters();
  for (size_t i = 0; i < pe.size(); ++i)
    require_close_scaled(pg[i].second, pe[i].second, 2e-3, "parameter " + pe[i].first);
}
