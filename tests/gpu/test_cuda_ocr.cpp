// The OCR head's ops on CUDA beyond the op table: dropout2d inside a captured CUDA graph draws a
// fresh mask at every replay, the CPU's mask for the same (seed, step); the OCR model's training
// forward (dropout on) and its training step (dropout off) as CUDA graphs, captured and
// replayed, equal CPU eager step by step.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "engine/graph.h"
#include "engine/ops.h"
#include "models/hrnet.h"
#include "small_specs.h"
#include "tensor_checks.h"
#include "test_util.h"

using namespace hr;
using namespace hr::models;
using hr::test::rand_tensor;
using hr::test::require_close_scaled;

namespace {

ModelSpec small_ocr_spec(double dropout) {
  ModelSpec s = test::small_spec(Head::Seg, true);
  s.name = "small_ocr";
  s.align_corners = true;
  s.ocr = true;
  s.ocr_mid_channels = 12;
  s.ocr_key_channels = 6;
  s.ocr_dropout = dropout;
  s.num_outputs = 2;
  return s;
}

}  // namespace

TEST_CASE("cuda dropout2d: a fresh mask at every captured replay, the CPU's", "[cuda][ocr]") {
  const float p = 0.5f;
  const Tensor x = rand_tensor({3, 8, 5, 7}, 1);
  Tensor state = ops::dropout_state(77, Device::cuda());
  graph::Graph g(graph::GraphOptions{Device::cuda()});
  auto [y, mask] = ops::dropout2d(g.input("x", x.shape()), state, p);
  g.output(y, "y");
  g.output(mask, "mask");
  graph::Executable exe(std::move(g));
  exe.set_input("x", x);
  std::vector<std::vector<float>> masks;
  for (int step = 0; step < 4; ++step) {
    INFO("step " << step << (step > 0 ? " (captured replay)" : ""));
    exe.run();
    if (step == 0) exe.capture();
    Tensor cpu_state = Tensor::from_vector_i64({77, step}, {2});
    auto [ry, rmask] = ops::dropout2d(x, cpu_state, p);
    CHECK(exe.output("mask").to_vector() == rmask.to_vector());
    require_close_scaled(exe.output("y"), ry, 1e-6, "y");
    masks.push_back(rmask.to_vector());
  }
  CHECK(state.to_vector_i64() == std::vector<int64_t>{77, 4});
  CHECK(masks[1] != masks[2]);
}

TEST_CASE("cuda OCR: training forward with dropout and the training step, captured, equal CPU",
          "[cuda][ocr][graph]") {
  const Tensor x = rand_tensor({2, 3, 60, 76}, 3);
  SECTION("forward, dropout on: the same masks step by step") {
    HRNet cpu(small_ocr_spec(0.3), 11), gpu(small_ocr_spec(0.3), 11);
    cpu.train();
    gpu.train();
    gpu.to(Device::cuda());
    graph::Graph g(graph::GraphOptions{Device::cuda()});
    auto ys = gpu.forward_all(g.input("x", x.shape()));
    g.output(ys[1], "out");
    graph::Executable exe(std::move(g));
    exe.set_input("x", x);
    for (int step = 0; step < 3; ++step) {
      INFO("step " << step);
      exe.run();
      if (step == 0) exe.capture();
      NoGradGuard ng;
      require_close_scaled(exe.output("out"), cpu.forward_all(x)[1], 1e-4, "OCR output");
    }
    CHECK(gpu.dropout_state().to_vector_i64()[1] == 3);
  }
  SECTION("training step, dropout off: every gradient") {
    HRNet cpu(small_ocr_spec(0.0), 12), gpu(small_ocr_spec(0.0), 12);
    cpu.train();
    gpu.train();
    gpu.to(Device::cuda());
    std::vector<int64_t> lv(2 * 15 * 19);
    for (size_t i = 0; i < lv.size(); ++i) lv[i] = int64_t(i % 7 == 3 ? 255 : i % 5);
    const Tensor labels = Tensor::from_vector_i64(lv, {2, 15, 19});
    graph::Graph g(graph::GraphOptions{Device::cuda()});
    auto ys = gpu.forward_all(g.input("x", x.shape()));
    graph::CompileOptions co;
    co.loss = add_training_loss(g, gpu, ys);
    g.output(co.loss, "loss");
    graph::Executable exe(std::move(g), co);
    exe.set_input("x", x);
    exe.set_input("labels", labels);
    auto cpu_params = cpu.named_parameters();
    for (int round = 0; round < 2; ++round) {
      exe.run();
      if (round == 0) exe.capture();
    }
    cpu.zero_grad();
    auto outs = cpu.forward_all(x);
    Tensor loss = ops::add(ops::mul(ops::cross_entropy(outs[0], labels), 0.4f),
                           ops::cross_entropy(outs[1], labels));
    loss.backward();
    // biases right before training-mode batch norm have zero gradients up to rounding: every
    // bound also scales with the largest gradient of the model
    double largest = 0;
    for (auto& [k, p] : cpu_params)
      for (float v : p.grad().to_vector()) largest = std::max(largest, double(std::fabs(v)));
    size_t i = 0;
    for (auto& [k, p] : gpu.named_parameters()) {
      INFO("grad " << k);
      const std::vector<float> ref = cpu_params[i++].second.grad().to_vector();
      double scale = 0;
      for (float v : ref) scale = std::max(scale, double(std::fabs(v)));
      REQUIRE_CLOSE(exe.grad(p).to_vector(), ref, 1e-3 * std::max(scale, 1e-3 * largest), 0.0);
    }
  }
}
