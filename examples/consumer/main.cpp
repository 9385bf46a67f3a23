// A two-resolution network in the HRNet manner (a high- and a low-resolution branch, the low one
// fused back into the high one), composed from the engine's modules and ops and trained on
// synthetic heatmaps: each image holds one bright blob, the target is a Gaussian at its centre.
// The network is written once (forward): eager by default; --graph records the same forward into
// a static graph and trains through the compiled step.
// Builds against the installed package: find_package(hrnet) -> hrnet::engine.
#include <hrnet.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>

using namespace hr;

struct TwoBranchNet : Module {
  std::shared_ptr<Sequential> stem, high, low, up, head;
  std::shared_ptr<BatchNorm2d> up_bn;
  static std::shared_ptr<Sequential> conv_bn_relu(int64_t in, int64_t out, int64_t stride) {
    auto s = std::make_shared<Sequential>();
    s->add(std::make_shared<Conv2d>(in, out, 3, stride, 1, false))
        .add(std::make_shared<BatchNorm2d>(out))
        .add(std::make_shared<ReLU>());
    return s;
  }
  TwoBranchNet() {
    stem = register_module("stem", conv_bn_relu(1, 8, 1));
    high = register_module("high", conv_bn_relu(8, 8, 1));
    low = register_module("low", conv_bn_relu(8, 16, 2));
    up = register_module("up", std::make_shared<Sequential>());
    up->add(std::make_shared<Conv2d>(16, 8, 1, 1, 0, false)).add(std::make_shared<BatchNorm2d>(8));
    head = register_module("head", std::make_shared<Sequential>());
    head->add(std::make_shared<Conv2d>(8, 1, 1, 1, 0, true));
  }
  // Runs on tensors, or records a graph when x is a graph input: the low branch then runs on
  // its own stream (a no-op in eager mode). The modules' own tensors enter the graph, so
  // training the graph trains this network.
  Tensor forward(const Tensor& x) override {
    Tensor s = (*stem)(x);
    Tensor h = (*high)(s), l;
    {
      graph::StreamScope low_branch(1);
      l = ops::upsample_nearest_scale((*up)((*low)(s)), 2.0);
    }
    // fuse: high += upsample(1x1(low))
    return (*head)(ops::relu(ops::add(h, l)));
  }
};

static void make_batch(std::mt19937& rng, int64_t n, int64_t size, Tensor& img, Tensor& heat) {
  std::vector<float> x(n * size * size), t(n * size * size);
  std::uniform_real_distribution<float> pos(3, size - 4);
  std::normal_distribution<float> noise(0, 0.1f);
  for (int64_t b = 0; b < n; ++b) {
    float cx = pos(rng), cy = pos(rng);
    for (int64_t i = 0; i < size; ++i)
      for (int64_t j = 0; j < size; ++j) {
        float d2 = (j - cx) * (j - cx) + (i - cy) * (i - cy);
        x[(b * size + i) * size + j] = (d2 < 4.f ? 1.f : 0.f) + noise(rng);
        t[(b * size + i) * size + j] = std::exp(-d2 / 8.f);
      }
  }
  img = Tensor::from_vector(x, {n, 1, size, size});
  heat = Tensor::from_vector(t, {n, 1, size, size});
}

int main(int argc, char** argv) try {
  int steps = 300;
  bool use_graph = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--graph")) use_graph = true;
    else throw std::runtime_error(std::string("unknown argument ") + argv[i] +
                                  " (usage: hrnet_consumer [--steps N] [--graph])");
  }
  manual_seed(0);
  TwoBranchNet net;
  Adam opt(net.parameters(), AdamOptions{2e-3});
  std::mt19937 rng(1);
  const int64_t batch = 8, size = 16;
  Tensor w = Tensor::ones({batch, 1});
  // --graph: the training step compiled once (forward, loss, backward; fused batch norm, planned
  // memory); the optimizer reads the gradients from the graph's buffers.
  std::unique_ptr<graph::Executable> step;
  if (use_graph) {
    graph::Graph g;
    Tensor loss = ops::heatmap_loss(net(g.input("img", {batch, 1, size, size})),
                                    g.input("heat", {batch, 1, size, size}),
                                    g.input("weight", {batch, 1}));
    g.output(loss, "loss");
    graph::CompileOptions co;
    co.loss = loss;
    step = std::make_unique<graph::Executable>(std::move(g), co);
    for (Tensor p : step->trained_parameters()) p.set_grad(step->grad(p));
    const graph::PlanStats& st = step->stats();
    std::printf("graph: %lld nodes (%lld fused), %lld streams, arena %.1f KiB (%.1f KiB without reuse)\n",
                static_cast<long long>(st.nodes), static_cast<long long>(st.fused),
                static_cast<long long>(st.streams), st.arena_bytes / 1024.0, st.total_bytes / 1024.0);
  }
  float first = 0, loss_v = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (int s = 0; s < steps; ++s) {
    Tensor img, heat;
    make_batch(rng, batch, size, img, heat);
    if (step) {
      step->set_input("img", img);
      step->set_input("heat", heat);
      step->set_input("weight", w);
      step->run();
      opt.step();
      loss_v = step->output("loss").item();
    } else {
      opt.zero_grad();
      Tensor loss = ops::heatmap_loss(net(img), heat, w);
      loss.backward();
      opt.step();
      loss_v = loss.item();
    }
    if (s == 0) first = loss_v;
    if (s % 20 == 0 || s == steps - 1) {
      double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("step %4d/%d  loss %.5f  %.0f img/s\n", s + 1, steps, loss_v,
                  (s + 1) * batch / std::max(sec, 1e-9));
    }
  }
  save_safetensors("hrnet_consumer.safetensors", net.state_dict(), {{"steps", std::to_string(steps)}});
  TwoBranchNet reloaded;
  reloaded.load_state_dict(load_checkpoint("hrnet_consumer.safetensors"));
  std::printf("loss %.5f -> %.5f; checkpoint hrnet_consumer.safetensors reloaded (%lld parameters)\n",
              first, loss_v, static_cast<long long>(reloaded.num_parameters()));
  return loss_v < first ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "hrnet_consumer: %s\n", e.what());
  return 1;
}
