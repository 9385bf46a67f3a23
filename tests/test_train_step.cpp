// tasks::TrainStep on the CPU: the losses are kept until take_losses() reads them (the trainer
// reads them every PRINT_FREQ iterations): the last step's loss and the double sum of loss x
// batch size, exactly as summing each step's returned loss; the graph step agrees with the eager
// one. (tests/gpu/test_cuda_graph_exec.cpp checks the CUDA graph path, where the sum is kept on
// the device.)
#include <catch2/catch.hpp>

#include <memory>
#include <vector>

#include "engine/ops.h"
#include "engine/optim.h"
#include "heatmap_task.h"
#include "models/hrnet.h"
#include "small_specs.h"
#include "tasks/trainer.h"

using namespace hr;
using hr::test::heatmap_batch;
using hr::test::HeatmapTask;
using hr::test::small_spec;

TEST_CASE("TrainStep keeps the losses until take_losses reads them", "[trainer]") {
  HeatmapTask task;
  const models::ModelSpec spec = small_spec(models::Head::Pose, true);
  const Shape in{2, 3, 32, 32};
  const int steps = 5;
  std::vector<data::Batch> batches;
  for (int k = 0; k < steps; ++k)
    batches.push_back(heatmap_batch(in, spec.num_joints, 900 + 7 * k));
  SGDOptions so;
  so.lr = 0.05;
  so.momentum = 0.9;

  // the reference: each step's loss as operator() returns it
  models::HRNet ref_model(spec, 3);
  ref_model.train();
  SGD ref_opt(ref_model.parameters(), so);
  tasks::TrainStep ref(task, ref_model, ref_opt, Device::cpu(), DType::f32, false);
  std::vector<float> losses;
  for (const data::Batch& b : batches) losses.push_back(ref(b));
  CHECK(ref.take_losses().steps == 0);  // operator() read its own step
  for (float l : losses) REQUIRE(std::isfinite(l));

  for (bool graph : {false, true}) {
    INFO((graph ? "graph" : "eager") << " steps");
    models::HRNet model(spec, 3);
    model.train();
    SGD opt(model.parameters(), so);
    tasks::TrainStep step(task, model, opt, Device::cpu(), DType::f32, graph);
    for (int k = 0; k < 3; ++k) step.step(batches[k]);
    tasks::TrainStep::Losses l = step.take_losses();
    CHECK(l.steps == 3);
    CHECK(l.samples == 3 * in[0]);
    double sum = 0;
    for (int k = 0; k < 3; ++k) sum += double(losses[k]) * double(in[0]);
    if (graph) {
      CHECK(l.sum == Approx(sum).epsilon(1e-4));
      CHECK(l.last == Approx(losses[2]).epsilon(1e-4));
    } else {  // the same arithmetic as the trainer's sum of returned losses
      CHECK(l.sum == sum);
      CHECK(l.last == losses[2]);
    }
    // read: the next read holds only the later steps
    CHECK(step.take_losses().steps == 0);
    step.step(batches[3]);
    const float last = step(batches[4]);  // reads steps 3 and 4, returns step 4's loss
    CHECK(last == Approx(losses[4]).epsilon(graph ? 1e-4 : 0));
    CHECK(step.take_losses().steps == 0);
  }
}

TEST_CASE("TrainStep with accumulation: the size-weighted sum of its micro-batches' gradients",
          "[trainer]") {
  HeatmapTask task;
  const models::ModelSpec spec = small_spec(models::Head::Pose, true);
  const data::Batch batch = heatmap_batch({5, 3, 32, 32}, spec.num_joints, 4242);
  // the micro-batches the step makes of 5 samples in 2: rows [0, 2) and [2, 5)
  auto rows = [&](int64_t b, int64_t e) {
    data::Batch r;
    for (const auto& [name, t] : batch.fields) {
      Shape s = t.shape();
      const int64_t row = t.numel() / s[0];
      s[0] = e - b;
      std::vector<float> v(t.data<float>() + b * row, t.data<float>() + e * row);
      r.fields.emplace_back(name, Tensor::from_vector(v, s));
    }
    for (int64_t i = b; i < e; ++i) r.indices.push_back(size_t(i));
    return r;
  };
  const data::Batch parts[2] = {rows(0, 2), rows(2, 5)};
  const float w[2] = {2.f / 5.f, 3.f / 5.f};
  SGDOptions so;
  so.lr = 0.1;

  // the reference, by hand: each part's gradient on its own, then p - lr * sum w_i g_i
  models::HRNet ref(spec, 3);
  ref.train();
  std::vector<std::vector<float>> g(ref.parameters().size());
  double loss = 0;
  for (int i = 0; i < 2; ++i) {
    for (Tensor p : ref.parameters()) p.zero_grad();
    std::map<std::string, Tensor> targets{{"target", parts[i]["target"]}, {"weight", parts[i]["weight"]}};
    Tensor l = task.loss(ref.forward_all(parts[i].input()), targets);
    l.backward();
    loss += double(l.item()) * parts[i].size();
    const auto ps = ref.parameters();
    for (size_t j = 0; j < ps.size(); ++j) {
      const std::vector<float> gj = ps[j].grad().to_vector();
      if (g[j].empty()) g[j].assign(gj.size(), 0.f);
      for (size_t e = 0; e < gj.size(); ++e) g[j][e] += w[i] * gj[e];
    }
  }
  std::vector<std::vector<float>> want;
  for (size_t j = 0; j < g.size(); ++j) {
    std::vector<float> p = ref.parameters()[j].to_vector();
    for (size_t e = 0; e < p.size(); ++e) p[e] -= float(so.lr) * g[j][e];
    want.push_back(p);
  }
  const auto ref_state = ref.state_dict();

  for (bool graph : {false, true}) {
    INFO((graph ? "graph" : "eager") << " step, 2 micro-batches");
    models::HRNet model(spec, 3);
    model.train();
    SGD opt(model.parameters(), so);
    tasks::TrainStep step(task, model, opt, Device::cpu(), DType::f32, graph, 2);
    step.step(batch);
    const tasks::TrainStep::Losses l = step.take_losses();
    CHECK(l.samples == 5);
    CHECK(l.last == Approx(loss / 5).epsilon(1e-5));
    const auto ps = model.parameters();
    for (size_t j = 0; j < ps.size(); ++j) {
      const auto r = hr::test::compare(ps[j].to_vector(), want[j], 1e-6, 1e-4, "parameter " + std::to_string(j));
      INFO(r.report);
      REQUIRE(r.ok);
    }
    // batch norm ran once per micro-batch: the running statistics equal the reference's
    const auto st = model.state_dict();
    for (size_t k = 0; k < st.size(); ++k)
      if (st[k].first.find("running_mean") != std::string::npos) {
        const auto r = hr::test::compare(st[k].second.to_vector(), ref_state[k].second.to_vector(),
                                         1e-6, 1e-4, st[k].first);
        INFO(r.report);
        REQUIRE(r.ok);
      }
  }
}

// A raw input (u8 crops and the dataset's table, as a loader with raw_input gives them: the CUDA
// trainer's upload) is normalised by the step itself: the same losses and weights, bit for bit,
// as the normalised input, eager and through the graph, with and without micro-batches.
TEST_CASE("TrainStep normalises a raw input: the same steps as the normalised input",
          "[trainer]") {
  HeatmapTask task;
  const models::ModelSpec spec = small_spec(models::Head::Pose, true);
  const Shape in{4, 3, 32, 32};
  std::vector<float> lut_v = test::uniform(768, 5, -2.f, 2.f);
  const Tensor lut = Tensor::from_vector(lut_v, {3, 256});
  std::vector<data::Batch> plain(3), raw;
  for (int k = 0; k < 3; ++k)
    raw.push_back(test::raw_heatmap_batch(in, spec.num_joints, 300 + 7 * k, lut, &plain[k]));
  for (bool graph : {false, true})
    for (int accumulate : {1, 2}) {
      INFO((graph ? "graph" : "eager") << ", accumulate " << accumulate);
      std::vector<float> losses[2];
      std::vector<std::vector<float>> weights[2];
      for (int mode = 0; mode < 2; ++mode) {
        models::HRNet model(spec, 3);
        model.train();
        SGDOptions so;
        so.lr = 0.05;
        so.momentum = 0.9;
        SGD opt(model.parameters(), so);
        tasks::TrainStep step(task, model, opt, Device::cpu(), DType::f32, graph, accumulate);
        for (const data::Batch& b : mode ? raw : plain) losses[mode].push_back(step(b));
        for (const Tensor& p : model.parameters()) weights[mode].push_back(p.to_vector());
      }
      CHECK(losses[1] == losses[0]);
      CHECK(weights[1] == weights[0]);
    }
}
