// The engine's side of the ONNX runtime checks (check_onnx_runtimes.py):
//
//   onnx_test_helper weights (--config FILE [--set KEY VALUE]... | --model NAME) --out
//   W.safetensors
//                    [--seed S] [--input-size HxW]
//     a random checkpoint whose batch norms are not the identity: every convolution and linear
//     weight N(0, 1/fan_in) with small random biases, batch-norm and group-norm affine
//     parameters random around (1, 0), FCOS's scales random around 1, and the batch norms'
//     running statistics those of a random batch (one training-mode forward with momentum 1:
//     non-trivial means and variances that keep the activations in range, so the folding of
//     every batch norm is tested); det: the classifier's bias -4 and the box regression's
//     log(24), so that a random input gives candidates and overlapping boxes;
//
//   onnx_test_helper decode --config FILE [--set KEY VALUE]... --raw RAW.safetensors
//                    --out DETS.safetensors [--input-size HxW]
//     data::fcos_postprocess of every image of a det model's raw outputs ("output.0" ... as
//     hrnet-infer writes them, levels of [N, ...]), boxes clipped to the input size, as
//     "detections" f32 [K, 7]: (image, x1, y1, x2, y2, score, label), image by image;
//
//   onnx_test_helper ops --out DIR
//     one small model per op translation, including the cases HRNet does not reach (bilinear
//     resizing to and from size 1 with and without align_corners, non-integer ratios, the scale
//     path, average pooling with padding, batch norm not folded, with its fused residual and
//     ReLU): DIR/<case>.onnx (exported with export_onnx_graph) and DIR/<case>.safetensors with
//     "input" and "output", the op's own result on the CPU (eager).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "apps/app_common.h"
#include "data/boxes.h"
#include "engine/autograd.h"
#include "engine/checkpoint.h"
#include "engine/export/onnx.h"
#include "engine/graph/graph.h"
#include "models/config.h"
#include "models/hrnet.h"
#include "tasks/detection.h"

using namespace hr;

namespace {

struct Args {
  std::string cmd, config, model, out, raw, input_size;
  std::vector<std::string> overrides;
  uint64_t seed = 1;
};

Args parse(int argc, char** argv) {
  if (argc < 2) throw apps::UsageError("expected a command: weights or decode");
  Args a;
  a.cmd = argv[1];
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) throw apps::UsageError(std::string(argv[i]) + " needs a value");
    return argv[++i];
  };
  for (int i = 2; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--config")
      a.config = value(i);
    else if (k == "--model")
      a.model = value(i);
    else if (k == "--out")
      a.out = value(i);
    else if (k == "--raw")
      a.raw = value(i);
    else if (k == "--input-size")
      a.input_size = value(i);
    else if (k == "--seed")
      a.seed = std::strtoull(value(i).c_str(), nullptr, 10);
    else if (k == "--set") {
      a.overrides.push_back(value(i));
      a.overrides.push_back(value(i));
    } else {
      throw apps::UsageError("unknown argument " + k);
    }
  }
  if (a.cmd != "weights" && a.cmd != "decode" && a.cmd != "ops")
    throw apps::UsageError("unknown command " + a.cmd);
  if (a.out.empty()) throw apps::UsageError("--out is required");
  return a;
}

std::array<int64_t, 2> input_hw(const Args& a, const models::Config* cfg,
                                const models::ModelSpec& s) {
  if (!a.input_size.empty()) {
    const size_t x = a.input_size.find('x');
    return {std::atoll(a.input_size.substr(0, x).c_str()),
            std::atoll(a.input_size.substr(x + 1).c_str())};
  }
  return cfg ? models::config_input_hw(*cfg)
             : std::array<int64_t, 2>{s.image_size[1], s.image_size[0]};
}

void fill(Tensor& t, std::mt19937_64& rng, float mean, float spread, bool normal) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  std::normal_distribution<float> n(mean, spread);
  std::uniform_real_distribution<float> u(mean - spread, mean + spread);
  for (float& x : v) x = normal ? n(rng) : u(rng);
  t.copy_(Tensor::from_vector(v, t.shape()));
}

void randomize(Module& m, std::mt19937_64& rng) {
  if (auto* c = dynamic_cast<Conv2d*>(&m)) {
    const Shape& w = c->weight.shape();
    fill(c->weight, rng, 0.f, 1.f / std::sqrt(float(w[1] * w[2] * w[3])), true);
    if (c->bias.defined()) fill(c->bias, rng, 0.f, 0.1f, false);
  } else if (auto* l = dynamic_cast<Linear*>(&m)) {
    fill(l->weight, rng, 0.f, 1.f / std::sqrt(float(l->weight.size(1))), true);
    if (l->bias.defined()) fill(l->bias, rng, 0.f, 0.1f, false);
  } else if (auto* b = dynamic_cast<BatchNorm2d*>(&m)) {
    fill(b->weight, rng, 1.f, 0.5f, false);
    fill(b->bias, rng, 0.f, 0.3f, false);
    b->momentum = 1.f;  // the calibration forward sets the running statistics to its batch's
  } else if (auto* g = dynamic_cast<GroupNorm*>(&m)) {
    fill(g->weight, rng, 1.f, 0.5f, false);
    fill(g->bias, rng, 0.f, 0.3f, false);
  }
  for (auto& [name, child] : m.children()) randomize(*child, rng);
}

void restore_momentum(Module& m) {
  if (auto* b = dynamic_cast<BatchNorm2d*>(&m)) b->momentum = 0.1f;
  for (auto& [name, child] : m.children()) restore_momentum(*child);
}

void weights(const Args& a) {
  models::Config cfg;
  std::shared_ptr<models::HRNet> model;
  if (!a.config.empty()) {
    cfg = models::Config::load(a.config);
    cfg.merge_from_list(a.overrides);
    model = models::make_hrnet(cfg, a.seed);
  } else {
    model = std::make_shared<models::HRNet>(models::builtin_spec(a.model), a.seed);
  }
  const models::ModelSpec& spec = model->spec();
  std::mt19937_64 rng(a.seed);
  NoGradGuard no_grad;
  randomize(*model, rng);
  for (auto& [key, t] : model->state_dict()) {
    Tensor p = t;
    if (key.size() > 6 && key.compare(key.size() - 6, 6, ".scale") == 0)
      fill(p, rng, 1.f, 0.2f, false);
    if (key == "rpn.head.cls_logits.bias") p.fill_(-4.f);
    if (key == "rpn.head.bbox_pred.bias") p.fill_(std::log(24.f));
  }
  const auto hw = input_hw(a, a.config.empty() ? nullptr : &cfg, spec);
  model->Module::train(true);  // every batch norm, HRNet-FCOS's norm_eval ones too
  model->forward_all(Tensor::randn({4, 3, hw[0], hw[1]}, a.seed + 1));
  restore_momentum(*model);
  model->eval();
  save_safetensors(a.out, model->state_dict(), {{"format", "pt"}});
}

void decode(const Args& a) {
  models::Config cfg = models::Config::load(a.config);
  cfg.merge_from_list(a.overrides);
  const models::ModelSpec spec = models::spec_from_config(cfg);
  const data::FcosPostprocessOptions post = tasks::DetSettings::from_config(cfg).postprocess;
  const auto hw = input_hw(a, &cfg, spec);
  const NamedTensors raw = load_checkpoint(a.raw);
  const size_t L = static_cast<size_t>(spec.det_levels);
  std::vector<Tensor> out(3 * L);
  for (const auto& [k, t] : raw)
    for (size_t i = 0; i < out.size(); ++i)
      if (k == "output." + std::to_string(i)) out[i] = t.contiguous();
  for (size_t i = 0; i < out.size(); ++i) HR_CHECK(out[i].defined(), a.raw, ": no output.", i);
  const int64_t N = out[0].size(0);
  std::vector<float> rows;
  for (int64_t b = 0; b < N; ++b) {
    std::vector<data::FcosLevel> levels;
    std::vector<const float*> cls, reg, ctr;
    for (size_t l = 0; l < L; ++l) {
      levels.push_back({spec.det_stride(static_cast<int64_t>(l)), out[l].size(2), out[l].size(3)});
      auto at = [&](const Tensor& t) { return t.data<float>() + b * (t.numel() / N); };
      cls.push_back(at(out[l]));
      reg.push_back(at(out[L + l]));
      ctr.push_back(at(out[2 * L + l]));
    }
    for (const data::Detection& d :
         data::fcos_postprocess(levels, cls, reg, ctr, hw[0], hw[1], post))
      rows.insert(rows.end(),
                  {float(b), d.box.x1, d.box.y1, d.box.x2, d.box.y2, d.score, float(d.label)});
  }
  const int64_t K = static_cast<int64_t>(rows.size() / 7);
  save_safetensors(a.out, {{"detections", Tensor::from_vector(rows, {K, 7})}});
}

// Small graphs of one or a few ops on "input", each exported and computed eagerly.
void op_models(const Args& a) {
  using F = std::function<Tensor(const Tensor&)>;
  auto param = [](const Shape& s, uint64_t seed, float lo, float hi) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> u(lo, hi);
    std::vector<float> v(static_cast<size_t>(shape_numel(s)));
    for (float& x : v) x = u(rng);
    return Tensor::from_vector(v, s);
  };
  const Tensor gamma = param({8}, 1, 0.5f, 1.5f), beta = param({8}, 2, -0.5f, 0.5f),
               mean = param({8}, 3, -0.5f, 0.5f), var = param({8}, 4, 0.5f, 2.f);
  const Tensor conv_w = param({6, 8, 3, 2}, 5, -0.3f, 0.3f), conv_b = param({6}, 6, -0.1f, 0.1f);
  const Tensor lin_w = param({5, 8}, 7, -0.3f, 0.3f), lin_b = param({5}, 8, -0.1f, 0.1f);
  const Tensor scale = param({1}, 9, 0.5f, 1.5f);
  const Shape x4 = {2, 8, 5, 7};
  const std::vector<std::tuple<std::string, Shape, F>> cases = {
      {"bilinear_up", x4,
       [](const Tensor& x) {
         return ops::upsample_bilinear(x, {9, 13}, false);
       }},
      {"bilinear_down", x4,
       [](const Tensor& x) {
         return ops::upsample_bilinear(x, {3, 4}, false);
       }},
      {"bilinear_to_1", x4,
       [](const Tensor& x) {
         return ops::upsample_bilinear(x, {1, 1}, false);
       }},
      {"bilinear_from_1",
       {2, 8, 1, 1},
       [](const Tensor& x) {
         return ops::upsample_bilinear(x, {4, 6}, false);
       }},
      {"bilinear_ac_up", x4,
       [](const Tensor& x) {
         return ops::upsample_bilinear(x, {9, 13}, true);
       }},
      {"bilinear_ac_to_1", x4,
       [](const Tensor& x) {
         return ops::upsample_bilinear(x, {1, 1}, true);
       }},
      {"bilinear_ac_from_1",
       {2, 8, 1, 1},
       [](const Tensor& x) {
         return ops::upsample_bilinear(x, {4, 6}, true);
       }},
      {"bilinear_scale2", x4,
       [](const Tensor& x) { return ops::upsample_bilinear_scale(x, 2.0, false); }},
      {"bilinear_ac_scale2", x4,
       [](const Tensor& x) { return ops::upsample_bilinear_scale(x, 2.0, true); }},
      {"nearest_scale2", x4, [](const Tensor& x) { return ops::upsample_nearest_scale(x, 2.0); }},
      {"nearest_scale4", x4, [](const Tensor& x) { return ops::upsample_nearest_scale(x, 4.0); }},
      {"nearest_size_2x", x4,
       [](const Tensor& x) {
         return ops::upsample_nearest(x, {10, 14});
       }},
      {"avg_pool_pad", x4,
       [](const Tensor& x) {
         return ops::avg_pool2d(x, {3, 3}, {2, 2}, {1, 1}, true);
       }},
      {"avg_pool_pad_exclude", x4,
       [](const Tensor& x) {
         return ops::avg_pool2d(x, {3, 3}, {2, 2}, {1, 1}, false);
       }},
      {"batch_norm", x4,
       [&](const Tensor& x) {
         return ops::batch_norm(ops::relu(x), gamma, beta, mean, var, false);
       }},
      {"batch_norm_add_relu", x4,
       [&](const Tensor& x) {
         return ops::batch_norm_act(x, ops::exp(ops::mul(x, 0.5f)), true, gamma, beta, mean, var,
                                    false);
       }},
      {"batch_norm_2d",
       {3, 8},
       [&](const Tensor& x) { return ops::batch_norm(x, gamma, beta, mean, var, false); }},
      {"conv_stride_pad", x4,
       [&](const Tensor& x) {
         return ops::conv2d(x, conv_w, conv_b, {2, 1}, {0, 1});
       }},
      {"group_norm", x4, [&](const Tensor& x) { return ops::group_norm(x, 4, gamma, beta); }},
      {"group_norm_2d",
       {3, 8},
       [&](const Tensor& x) { return ops::group_norm(x, 2, gamma, beta); }},
      {"softmax_bmm",
       {2, 6, 5},
       [](const Tensor& x) {
         return ops::softmax(ops::bmm(ops::mul(x, 0.7f), x, true, false), -1);  // [2, 5, 5]
       }},
      {"bmm_trans_b", {2, 6, 5}, [](const Tensor& x) { return ops::bmm(x, x, false, true); }},
      {"linear", {3, 8}, [&](const Tensor& x) { return ops::linear(x, lin_w, lin_b); }},
      {"global_pool_scale", x4,
       [&](const Tensor& x) { return ops::scale(ops::global_avg_pool(x), scale); }},
      {"channel_scale", x4,
       [](const Tensor& x) { return ops::channel_scale(x, ops::exp(ops::global_avg_pool(x))); }},
      {"concat_reshape_softmax", x4,
       [](const Tensor& x) {
         return ops::softmax(ops::reshape(ops::concat({x, ops::relu(x)}, 1), {2, 16, 35}), 1);
       }},
  };
  for (const auto& [name, shape, f] : cases) {
    graph::Graph g;
    g.output(f(g.input("input", shape)), "output");
    export_onnx_graph(g, OnnxGraphOptions()).save(a.out + "/" + name + ".onnx");
    const Tensor x = Tensor::randn(shape, std::hash<std::string>()(name) % 1000);
    Tensor y;
    {
      NoGradGuard no_grad;
      y = f(x);
    }
    save_safetensors(a.out + "/" + name + ".safetensors", {{"input", x}, {"output", y}});
  }
}

}  // namespace

int main(int argc, char** argv) {
  return apps::app_main("onnx_test_helper", "\n", [&] {
    const Args a = parse(argc, argv);
    if (a.cmd == "weights")
      weights(a);
    else if (a.cmd == "decode")
      decode(a);
    else
      op_models(a);
    return 0;
  });
}
