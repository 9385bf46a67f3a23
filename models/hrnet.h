// HRNet as engine Modules: the shared backbone (stem, layer1, transitions, multi-resolution
// modules with fuse layers) and the heads (V1 pose, V2 seg, V2 + OCR seg, V2p detection
// pyramid, cls),
// with the official checkpoints' parameter names, the official initialisation, strict and
// PRETRAINED_LAYERS checkpoint loading, and an analytic summary (params, mult-adds, shapes).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/graph.h"
#include "engine/nn.h"
#include "models/config.h"

namespace hr::models {

class ResBlock;  // BasicBlock or Bottleneck
class ConvBN;    // conv + BN (+ ReLU), named like nn.Sequential(conv, bn, relu)
class HRModule;  // one multi-resolution module: branches + fuse layers
struct OcrHead;   // the seg_hrnet_ocr head's modules
struct FcosHead;  // the det head's modules (HRNet-FCOS)

// What a forward costs, computed from shapes alone (no tensor is allocated).
struct ModelStats {
  int64_t params = 0;
  int64_t conv_layers = 0, bn_layers = 0, linear_layers = 0;  // modules in the model
  // multiply-adds of convolutions, linear layers and batched matrix products (OCR's attention);
  // nothing else is counted
  double conv_macs = 0, linear_macs = 0, bmm_macs = 0;
  // Sum over every op of its output's bytes in an inference forward (conv, BN, ReLU, add,
  // upsample, concat, pool, linear; fp32): an upper bound on activation memory, since buffers
  // whose lifetimes do not overlap could share memory.
  double activation_bytes = 0;
  // The same buffers (input included) with eager lifetimes (freed after the last use), packed
  // into one arena by the graph's memory planner (op by op: no fusion, one stream): what an
  // unfused inference forward needs, and the lower bound of any packing (most bytes alive at once).
  double planned_activation_bytes = 0;
  double peak_live_bytes = 0;
  std::vector<Shape> outputs;
  double macs() const { return conv_macs + linear_macs + bmm_macs; }
  double gflops() const { return macs() / double(1ull << 30); }  // the HRNet papers' "GFLOPs"
};

class HRNet : public Module {
 public:
  // Builds the network with the official initialisation drawn from `seed` (see init_weights).
  explicit HRNet(const ModelSpec& spec, uint64_t seed = 0);

  const ModelSpec& spec() const { return spec_; }

  // Module::train, then with spec().norm_eval (HRNet-FCOS) every batch norm back in eval mode.
  void train(bool on = true) override;

  // x [N,3,H,W] -> the head's prediction: pose heatmaps [N,J,H/4,W/4], seg logits
  // [N,classes,H/4,W/4] (stride-4 map; upsample for loss/inference; OCR: the final output, the
  // official TEST.OUTPUT_INDEX -1), cls logits [N,classes], det: the class logits of the first
  // pyramid level. forward_all gives every output: det's maps, OCR's [aux, out] in the official
  // order.
  // On a graph's symbolic input (graph::Graph::input) the same calls record the model, with
  // batch norm in the model's current mode; branch b's blocks, the transition into it and its
  // fuse output on stream b, so on CUDA the branches of a module overlap.
  Tensor forward(const Tensor& x) override;
  // Every head output: one tensor; det (FCOS) 3 x det_levels tensors, level l at stride
  // spec().det_stride(l): the class logits [N,classes,h,w] of every level, then the box distances
  // [N,4,h,w] (l, t, r, b in input pixels: exp(scale_l * bbox_pred)), then the centerness logits
  // [N,1,h,w]; or the
  // OCR head's [aux logits, OCR logits], both [N,classes,H/4,W/4]. In training mode the OCR
  // head's Dropout2d draws a fresh channel mask at every call (eager or compiled graph).
  std::vector<Tensor> forward_all(const Tensor& x);
  // Backbone only: the last stage's fused outputs (pose: only output 0 exists).
  std::vector<Tensor> forward_backbone(const Tensor& x);

  // Throws hr::Error with the reason when the network cannot take an input of this shape
  // (not [N,3,H,W]; H or W not a multiple of 32 where nearest-upsampling fuse layers need
  // each branch exactly twice the next; det smaller than its coarsest pooling window).
  void check_input(const Shape& x) const;

  // Costs and output shapes of an inference forward on `input` (checked with check_input), from
  // the recorded graph: nothing is computed or allocated.
  ModelStats stats(const Shape& input);

  // The official initialisation: pose and seg conv weights N(0, 0.001) (pose conv biases 0,
  // seg conv biases PyTorch's default); the OCR head's modules (names with cls, aux or ocr)
  // PyTorch's defaults (conv weights kaiming uniform a = sqrt(5), biases U(+-1/sqrt(fan_in)));
  // cls conv weights kaiming normal (fan_out); det (HRNet-FCOS): backbone and HRFPN PyTorch's
  // defaults, FCOS head convs N(0, 0.01) with bias 0 but the classifier's -log((1-p)/p); BN weight 1, bias 0, running mean 0, var 1, counter 0; Linear PyTorch's
  // default. Deterministic in `seed`, whatever the number of threads. The OCR dropout's
  // generator is reset to {seed, step 0}.
  void init_weights(uint64_t seed);

  // The OCR head's Dropout2d generator state {seed, step} (i64 [2], not in the state dict, on the
  // device of the last forward), reset in place by seed_dropout; undefined without OCR.
  Tensor dropout_state() const;
  void seed_dropout(uint64_t seed);

 private:
  std::vector<Tensor> run_backbone(const Tensor& x);
  std::vector<Tensor> run(const Tensor& x);

  ModelSpec spec_;
  std::shared_ptr<Conv2d> conv1_, conv2_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::vector<std::shared_ptr<ResBlock>> layer1_;
  // transitions_[t][i]: empty (identity) or a chain of conv-bn-relu
  std::vector<std::vector<std::vector<std::shared_ptr<ConvBN>>>> transitions_;
  std::vector<std::vector<std::shared_ptr<HRModule>>> stages_;
  // heads
  std::shared_ptr<Conv2d> pose_final_;
  std::shared_ptr<Conv2d> seg_conv1_, seg_conv2_;
  std::shared_ptr<BatchNorm2d> seg_bn_;
  std::shared_ptr<Conv2d> det_reduce_;
  std::vector<std::shared_ptr<Conv2d>> det_fpn_;
  std::vector<std::shared_ptr<ResBlock>> cls_incre_;
  std::vector<std::shared_ptr<ConvBN>> cls_down_;
  std::shared_ptr<ConvBN> cls_final_;
  std::shared_ptr<Linear> cls_classifier_;
  std::shared_ptr<OcrHead> ocr_;
  std::shared_ptr<FcosHead> fcos_;
};

// The standard training loss of the model's head on recorded outputs `ys`, with its targets as
// inputs of g: pose JointsMSELoss ("target" like the heatmaps, "weight" [N,J,1] as the
// official target_weight and data::Batch have it); seg and cls
// cross-entropy ("labels": [N,H/4,W/4] / [N] i64; OCR: 0.4 CE(aux) + CE(out), the official
// OCR configs' LOSS.BALANCE_WEIGHTS); det the FCOS loss (fcos_loss with the default gamma and
// alpha; "labels" [N,P] i64, "reg_targets" [N,4,P], "centerness" [N,P], "positive" [N,P]).
Tensor add_training_loss(graph::Graph& g, const HRNet& model, const std::vector<Tensor>& ys);

// The det head's outputs (forward_all: cls, box and centerness maps, level by level) -> the
// number of locations P of all levels together.
int64_t fcos_num_locations(const std::vector<Tensor>& ys);
// The det head's level sizes {h, w} for an input of h x w, analytically (no model built): the
// stem's two stride-2 convs give the stride-4 map, level l pools it by 2^l (floor), then HRFPN's
// 3x3 conv of stride det_conv_stride.
std::vector<std::array<int64_t, 2>> det_level_sizes(const ModelSpec& spec, int64_t h, int64_t w);
// HRNet-FCOS's training loss (modeling/rpn/fcos/loss.py FCOSLossComputation) on the det head's
// outputs and a batch's dense targets over the P locations (data::fcos_targets, level-major):
// the sigmoid focal loss over (positives + N), the IoU loss weighted by the centerness targets,
// and the centerness BCE over the positives, summed (the official trainer sums its loss dict).
Tensor fcos_loss(const std::vector<Tensor>& ys, const Tensor& labels, const Tensor& reg_targets,
                 const Tensor& centerness, const Tensor& positive, float gamma = 2.f,
                 float alpha = 0.25f);

// The static graphs' memory plans for an input shape, planned without allocating or running:
// the inference pipeline (eval-mode batch norm, folded) and the training step
// (forward, loss, backward). The model's train/eval mode is restored.
struct GraphPlans {
  graph::PlanStats inference, training;
  bool has_training = false;
};
GraphPlans plan_graphs(HRNet& model, const Shape& input);

// Builds a model from an experiment config (spec_from_config).
std::shared_ptr<HRNet> make_hrnet(const Config& cfg, uint64_t seed = 0);

// Strict load of a checkpoint (.safetensors or torch.save .pth; a state dict at the top level
// or under state_dict/model): every model key must be present with its shape, no extra key;
// `module.` / `model.` prefixes (det: also HRNet-FCOS's `backbone.body.` / `backbone.fpn.`)
// and absent num_batches_tracked are accepted. Errors name the file and every missing,
// unexpected and mis-shaped key.
// hrnet-train's resumable checkpoints (metadata "format" = kTrainingCheckpointFormat) hold the
// weights as "model.<key>" next to "optimizer.<slot>" entries; only the weights are taken.
void load_hrnet_checkpoint(HRNet& model, const std::string& path);
inline constexpr const char* kTrainingCheckpointFormat = "hrnet-train-checkpoint/1";

// Initialising from another model's checkpoint (pose from an ImageNet cls checkpoint): only
// keys whose first component is in `layers` ("*" as the first entry: all) are taken. For an OCR
// model, as the official init_weights does, `last_layer` in a key reads `aux_head` (a plain seg
// checkpoint's head initialises the auxiliary head).
struct PretrainedReport {
  std::vector<std::string> loaded;      // copied into the model
  std::vector<std::string> skipped;     // first component not in `layers`
  std::vector<std::string> unexpected;  // in `layers` but the model has no such key
  std::vector<std::string> missing;     // model keys under `layers` the checkpoint lacks
  std::string summary() const;          // one line of counts, then one line per key not loaded
};
// Mis-shaped keys are an error (naming them); nothing is copied unless all shapes fit.
PretrainedReport load_pretrained_layers(HRNet& model, const std::string& path,
                                        const std::vector<std::string>& layers);
PretrainedReport load_pretrained_layers(HRNet& model, const NamedTensors& checkpoint,
                                        const std::vector<std::string>& layers);

}  // namespace hr::models
