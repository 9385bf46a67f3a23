// A task for testing tasks::TrainStep without data: HRNet's pose loss (JointsMSELoss with target
// weights) on the model's first output, and batches of seeded random fields.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "models/config.h"
#include "tasks/task.h"
#include "tensor_checks.h"

namespace hr::test {

class HeatmapTask : public tasks::Task {
 public:
  HeatmapTask() : Task(models::Config::pose_defaults()) {}
  const char* name() const override { return "heatmap-test"; }
  const data::Dataset& train_data() override { throw Error("heatmap-test: no data"); }
  std::string describe_data() override { return "none"; }
  Tensor loss(const std::vector<Tensor>& outputs,
              const std::map<std::string, Tensor>& targets) const override {
    return ops::heatmap_loss(outputs.at(0), targets.at("target"), targets.at("weight"));
  }
  tasks::EvalSummary evaluate(models::HRNet&, const tasks::RunOptions&) override { return {}; }
  void save_outputs(const std::string&) override {}
};

// input [N, 3, H, W], target [N, J, H/4, W/4] in [0, 1], weight [N, J] in [0.25, 1]
inline data::Batch heatmap_batch(const Shape& in, int64_t joints, uint64_t seed) {
  const Shape out{in[0], joints, in[2] / 4, in[3] / 4};
  data::Batch b;
  b.fields = {{"input", rand_tensor(in, seed)},
              {"target", rand_tensor(out, seed + 1, 0.f, 1.f)},
              {"weight", rand_tensor({out[0], out[1]}, seed + 2, 0.25f, 1.f)}};
  for (int64_t i = 0; i < in[0]; ++i) b.indices.push_back(size_t(i));
  return b;
}

// heatmap_batch with a raw input, as a loader with raw_input gives it: random crop bytes u8
// [N, H, W * 3] and the table `lut` [3, 256]; `plain` receives the same batch with the input
// normalised (ops::normalize_u8 on the CPU), what the loader would give without raw_input.
inline data::Batch raw_heatmap_batch(const Shape& in, int64_t joints, uint64_t seed,
                                     const Tensor& lut, data::Batch* plain) {
  data::Batch b = heatmap_batch(in, joints, seed);
  Tensor bytes = Tensor::empty({in[0], in[2], in[3] * 3}, DType::u8);
  const std::vector<float> u = uniform(size_t(bytes.numel()), seed + 3, 0.f, 255.99f);
  for (int64_t i = 0; i < bytes.numel(); ++i) bytes.data<uint8_t>()[i] = uint8_t(u[size_t(i)]);
  *plain = b;
  plain->fields[0].second = ops::normalize_u8(bytes, lut);
  b.fields[0].second = bytes;
  b.input_lut = lut;
  return b;
}

}  // namespace hr::test
