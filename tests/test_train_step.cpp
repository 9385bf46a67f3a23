// tasks::TrainStep on the CPU: the losses are kept until take_losses() reads them (the trainer
// reads them every PRINT_FREQ iterations): the last step's loss and the double sum of loss x
// batch size, exactly as summing each step's returned loss; the graph step agrees with the eager
// one. (tests/gpu/test_cuda_graph_exec.cpp checks the CUDA graph path, where the sum is kept on
// the device.)
#include <catch2/catch.hpp>

#include <memory>
#include <vector>

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
