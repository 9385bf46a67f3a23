// HRNet backbone and heads. Every forward is written once, against Tensor: called on eager
// tensors it computes; called on a graph's symbolic input it records the graph (engine/graph),
// which is also how summaries cost, shape and plan full-size models without computing anything.
#include "models/hrnet.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <set>

#include "engine/autograd.h"
#include "engine/checkpoint.h"
#include "engine/graph.h"
#include "engine/ops.h"

namespace hr::models {

namespace {

std::shared_ptr<Module> container() { return std::make_shared<Module>(); }

// Sets a module tree's train/eval mode for a scope and restores it.
class ModeScope {
 public:
  ModeScope(Module& m, bool training) : m_(m), was_(m.is_training()) { m.train(training); }
  ~ModeScope() { m_.train(was_); }

 private:
  Module& m_;
  bool was_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------------------------
class ConvBN : public Module {
 public:
  ConvBN(int64_t cin, int64_t cout, int64_t k, int64_t stride, bool with_relu, bool bias = false)
      : with_relu_(with_relu) {
    conv_ = register_module("0", std::make_shared<Conv2d>(cin, cout, k, stride, k / 2, bias));
    bn_ = register_module("1", std::make_shared<BatchNorm2d>(cout));
  }
  Tensor forward(const Tensor& x) override {
    Tensor y = (*bn_)((*conv_)(x));
    return with_relu_ ? ops::relu(y) : y;
  }

 private:
  std::shared_ptr<Conv2d> conv_;
  std::shared_ptr<BatchNorm2d> bn_;
  bool with_relu_;
};

namespace {
Tensor run_chain(const std::vector<std::shared_ptr<ConvBN>>& chain, Tensor x) {
  for (const auto& c : chain) x = (*c)(x);
  return x;
}
}  // namespace

class ResBlock : public Module {
 public:
  int64_t out_channels = 0;
};

namespace {

// 3x3 conv+BN+ReLU, 3x3 conv+BN, + residual, ReLU.
class BasicBlock : public ResBlock {
 public:
  BasicBlock(int64_t cin, int64_t planes) {
    out_channels = planes;
    conv1_ = register_module("conv1", std::make_shared<Conv2d>(cin, planes, 3, 1, 1, false));
    bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(planes));
    conv2_ = register_module("conv2", std::make_shared<Conv2d>(planes, planes, 3, 1, 1, false));
    bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(planes));
    if (cin != planes)
      down_ = register_module("downsample", std::make_shared<ConvBN>(cin, planes, 1, 1, false));
  }
  Tensor forward(const Tensor& x) override {
    Tensor y = ops::relu((*bn1_)((*conv1_)(x)));
    y = (*bn2_)((*conv2_)(y));
    return ops::relu(ops::add(y, down_ ? (*down_)(x) : x));
  }

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::shared_ptr<ConvBN> down_;
};

// 1x1 conv+BN+ReLU, 3x3 conv+BN+ReLU, 1x1 conv (4 planes)+BN, + residual, ReLU.
class Bottleneck : public ResBlock {
 public:
  Bottleneck(int64_t cin, int64_t planes) {
    out_channels = 4 * planes;
    conv1_ = register_module("conv1", std::make_shared<Conv2d>(cin, planes, 1, 1, 0, false));
    bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(planes));
    conv2_ = register_module("conv2", std::make_shared<Conv2d>(planes, planes, 3, 1, 1, false));
    bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(planes));
    conv3_ = register_module("conv3", std::make_shared<Conv2d>(planes, 4 * planes, 1, 1, 0, false));
    bn3_ = register_module("bn3", std::make_shared<BatchNorm2d>(4 * planes));
    if (cin != 4 * planes)
      down_ = register_module("downsample", std::make_shared<ConvBN>(cin, 4 * planes, 1, 1, false));
  }
  Tensor forward(const Tensor& x) override {
    Tensor y = ops::relu((*bn1_)((*conv1_)(x)));
    y = ops::relu((*bn2_)((*conv2_)(y)));
    y = (*bn3_)((*conv3_)(y));
    return ops::relu(ops::add(y, down_ ? (*down_)(x) : x));
  }

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_, conv3_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_, bn3_;
  std::shared_ptr<ConvBN> down_;
};

std::shared_ptr<ResBlock> make_block(Block b, int64_t cin, int64_t planes) {
  if (b == Block::Basic) return std::make_shared<BasicBlock>(cin, planes);
  return std::make_shared<Bottleneck>(cin, planes);
}

// A run of blocks registered under `parent` as "0", "1", ...; returns the output width.
int64_t make_layer(Module& parent, std::vector<std::shared_ptr<ResBlock>>& out, Block b,
                   int64_t cin, int64_t planes, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    auto blk = make_block(b, cin, planes);
    parent.register_module(std::to_string(k), blk);
    out.push_back(blk);
    cin = blk->out_channels;
  }
  return cin;
}

}  // namespace

class HRModule : public Module {
 public:
  HRModule(const std::vector<int64_t>& cin, const StageSpec& st, bool all_outputs,
           FuseUpsample fuse, bool align_corners)
      : fuse_(fuse), align_corners_(align_corners) {
    const size_t nb = cin.size();
    auto branches = register_module("branches", container());
    branches_.resize(nb);
    for (size_t i = 0; i < nb; ++i) {
      auto seq = branches->register_module(std::to_string(i), container());
      out_channels.push_back(
          make_layer(*seq, branches_[i], st.block, cin[i], st.num_channels[i], st.num_blocks[i]));
    }
    if (nb == 1) return;
    auto fuse_layers = register_module("fuse_layers", container());
    const size_t nout = all_outputs ? nb : 1;
    up_.assign(nout, std::vector<std::shared_ptr<ConvBN>>(nb));
    down_.assign(nout, std::vector<std::vector<std::shared_ptr<ConvBN>>>(nb));
    const auto& c = out_channels;
    for (size_t i = 0; i < nout; ++i) {
      auto row = fuse_layers->register_module(std::to_string(i), container());
      for (size_t j = 0; j < nb; ++j) {
        if (j > i) {
          up_[i][j] = row->register_module(std::to_string(j),
                                           std::make_shared<ConvBN>(c[j], c[i], 1, 1, false));
        } else if (j < i) {
          auto chain = row->register_module(std::to_string(j), container());
          for (size_t k = 0; k < i - j; ++k) {
            const bool last = k + 1 == i - j;
            down_[i][j].push_back(chain->register_module(
                std::to_string(k),
                std::make_shared<ConvBN>(c[j], last ? c[i] : c[j], 3, 2, !last)));
          }
        }
      }
    }
  }

  // Branch i's blocks and fuse output i run on stream i of a recorded graph, so on CUDA the
  // resolutions of a module run concurrently.
  std::vector<Tensor> run(std::vector<Tensor> xs) {
    for (size_t i = 0; i < xs.size(); ++i) {
      graph::StreamScope on_branch(static_cast<int>(i));
      for (const auto& blk : branches_[i]) xs[i] = (*blk)(xs[i]);
    }
    if (xs.size() == 1) return xs;
    std::vector<Tensor> out;
    for (size_t i = 0; i < up_.size(); ++i) {
      graph::StreamScope on_branch(static_cast<int>(i));
      Tensor y;
      for (size_t j = 0; j < xs.size(); ++j) {
        Tensor t;
        if (j == i) {
          t = xs[j];
        } else if (j > i) {
          t = (*up_[i][j])(xs[j]);
          t = fuse_ == FuseUpsample::Nearest
                  ? ops::upsample_nearest_scale(t, static_cast<double>(int64_t(1) << (j - i)))
                  : ops::upsample_bilinear(t, {xs[i].size(2), xs[i].size(3)}, align_corners_);
        } else {
          t = run_chain(down_[i][j], xs[j]);
        }
        y = j == 0 ? t : ops::add(y, t);
      }
      out.push_back(ops::relu(y));
    }
    return out;
  }

  std::vector<int64_t> out_channels;

 private:
  FuseUpsample fuse_;
  bool align_corners_;
  std::vector<std::vector<std::shared_ptr<ResBlock>>> branches_;
  std::vector<std::vector<std::shared_ptr<ConvBN>>> up_;                 // [i][j], j > i
  std::vector<std::vector<std::vector<std::shared_ptr<ConvBN>>>> down_;  // [i][j], j < i
};

// ---------------------------------------------------------------------------------------------
// The OCR head (seg_hrnet_ocr.py: SpatialGather_Module, SpatialOCR_Module with its
// ObjectAttentionBlock2D at scale 1), with the official module names
// ---------------------------------------------------------------------------------------------
namespace {

// torch.nn.Dropout2d: no parameters. Its generator state {seed, step} is no buffer (PyTorch's
// module has none, so the state dict is unchanged); it follows the input's device on first use.
class Dropout2d : public Module {
 public:
  Dropout2d(float p, uint64_t seed) : p_(p), state_(ops::dropout_state(seed)) {}
  Tensor forward(const Tensor& x) override {
    if (!is_training() || p_ == 0.f) return x;
    if (state_.device() != x.device()) state_ = state_.to(x.device());
    return ops::dropout2d(x, state_, p_)[0];
  }
  const Tensor& state() const { return state_; }
  void reseed(uint64_t seed) {
    NoGradGuard g;
    state_.copy_(ops::dropout_state(seed));
  }

 private:
  float p_;
  Tensor state_;
};

// A BatchNorm2d followed by a ReLU, registered as nn.Sequential(BN, ReLU) under `name` of
// `parent` (ModuleHelper.BNReLU): keys <name>.0.*.
std::shared_ptr<BatchNorm2d> add_bn_relu(Module& parent, const std::string& name, int64_t c) {
  auto seq = parent.register_module(name, container());
  return seq->register_module("0", std::make_shared<BatchNorm2d>(c));
}

// Bias-free 1x1 convolutions, each followed by BN + ReLU, registered "0", "1", "2", "3", ...
// (conv at even indices, BNReLU at odd ones).
class ConvBNReLUChain : public Module {
 public:
  explicit ConvBNReLUChain(const std::vector<int64_t>& widths) {
    for (size_t i = 0; i + 1 < widths.size(); ++i) {
      convs_.push_back(register_module(std::to_string(2 * i),
                                       std::make_shared<Conv2d>(widths[i], widths[i + 1], 1, 1, 0,
                                                                false)));
      bns_.push_back(add_bn_relu(*this, std::to_string(2 * i + 1), widths[i + 1]));
    }
  }
  Tensor forward(const Tensor& x) override {
    Tensor y = x;
    for (size_t i = 0; i < convs_.size(); ++i) y = ops::relu((*bns_[i])((*convs_[i])(y)));
    return y;
  }

 private:
  std::vector<std::shared_ptr<Conv2d>> convs_;
  std::vector<std::shared_ptr<BatchNorm2d>> bns_;
};

}  // namespace

// FCOS's per-level learnable multiplier of the box regression (maskrcnn_benchmark/layers/
// scale.py Scale: a parameter "scale" [1], initially 1).
class ScaleModule : public Module {
 public:
  ScaleModule() { scale = register_parameter("scale", Tensor::ones({1})); }
  Tensor forward(const Tensor& x) override { return ops::scale(x, scale); }
  Tensor scale;
};

// The FCOS head of HRNet-FCOS (modeling/rpn/fcos/fcos.py FCOSHead), registered as "rpn.head"
// as GeneralizedRCNN names it: cls_tower and bbox_tower (NUM_CONVS x conv 3x3 + GroupNorm(32)
// + ReLU: modules 3i and 3i+1), cls_logits, bbox_pred and centerness (conv 3x3), scales.{l}.
// The same modules run on every pyramid level; centerness branches off the classification tower.
struct FcosHead {
  std::vector<std::shared_ptr<Conv2d>> cls_conv, box_conv;
  std::vector<std::shared_ptr<GroupNorm>> cls_gn, box_gn;
  std::shared_ptr<Conv2d> cls_logits, bbox_pred, centerness;
  std::vector<std::shared_ptr<ScaleModule>> scales;
  std::shared_ptr<Module> head;

  FcosHead(Module& net, const ModelSpec& s) {
    const int64_t c = s.det_channels;
    auto rpn = net.register_module("rpn", container());
    head = rpn->register_module("head", container());
    auto ct = head->register_module("cls_tower", container());
    auto bt = head->register_module("bbox_tower", container());
    for (int64_t i = 0; i < s.fcos_num_convs; ++i) {
      const std::string conv = std::to_string(3 * i), gn = std::to_string(3 * i + 1);
      cls_conv.push_back(ct->register_module(conv, std::make_shared<Conv2d>(c, c, 3, 1, 1, true)));
      cls_gn.push_back(ct->register_module(gn, std::make_shared<GroupNorm>(32, c)));
      box_conv.push_back(bt->register_module(conv, std::make_shared<Conv2d>(c, c, 3, 1, 1, true)));
      box_gn.push_back(bt->register_module(gn, std::make_shared<GroupNorm>(32, c)));
    }
    cls_logits = head->register_module(
        "cls_logits", std::make_shared<Conv2d>(c, s.num_classes, 3, 1, 1, true));
    bbox_pred = head->register_module("bbox_pred", std::make_shared<Conv2d>(c, 4, 3, 1, 1, true));
    centerness =
        head->register_module("centerness", std::make_shared<Conv2d>(c, 1, 3, 1, 1, true));
    auto sc = head->register_module("scales", container());
    for (int64_t l = 0; l < s.det_levels; ++l)
      scales.push_back(sc->register_module(std::to_string(l), std::make_shared<ScaleModule>()));
  }

  // features: the pyramid levels -> [cls logits of every level, box distances (exp(scale *
  // bbox_pred)) of every level, centerness logits of every level], as FCOSHead.forward returns
  // (logits, bbox_reg, centerness).
  std::vector<Tensor> run(const std::vector<Tensor>& features) const {
    const size_t n = features.size();
    std::vector<Tensor> out(3 * n);
    for (size_t l = 0; l < n; ++l) {
      Tensor c = features[l], b = features[l];
      for (size_t i = 0; i < cls_conv.size(); ++i) {
        c = ops::relu((*cls_gn[i])((*cls_conv[i])(c)));
        b = ops::relu((*box_gn[i])((*box_conv[i])(b)));
      }
      out[l] = (*cls_logits)(c);
      out[n + l] = ops::exp((*scales[l])((*bbox_pred)(b)));
      out[2 * n + l] = (*centerness)(c);
    }
    return out;
  }
};

struct OcrHead {
  int64_t key_channels = 0;
  // aux_head: conv 1x1 (bias), BN, ReLU, conv 1x1 (bias) -> class logits
  std::shared_ptr<Conv2d> aux_conv, aux_cls;
  std::shared_ptr<BatchNorm2d> aux_bn;
  // conv3x3_ocr: conv 3x3 (bias), BN, ReLU
  std::shared_ptr<Conv2d> mid_conv;
  std::shared_ptr<BatchNorm2d> mid_bn;
  // ocr_distri_head.object_context_block
  std::shared_ptr<ConvBNReLUChain> f_pixel, f_object, f_down, f_up;
  // ocr_distri_head.conv_bn_dropout: conv 1x1 (no bias), BNReLU, Dropout2d
  std::shared_ptr<Conv2d> out_conv;
  std::shared_ptr<BatchNorm2d> out_bn;
  std::shared_ptr<Dropout2d> dropout;
  std::shared_ptr<Conv2d> cls_head;

  // Registers the modules on `net` in the official order (conv3x3_ocr, ocr_distri_head,
  // cls_head, aux_head; ocr_gather_head has no parameters).
  OcrHead(Module& net, int64_t in, const ModelSpec& s, uint64_t seed)
      : key_channels(s.ocr_key_channels) {
    const int64_t mid = s.ocr_mid_channels, key = s.ocr_key_channels, k = s.num_classes;
    auto c3 = net.register_module("conv3x3_ocr", container());
    mid_conv = c3->register_module("0", std::make_shared<Conv2d>(in, mid, 3, 1, 1, true));
    mid_bn = c3->register_module("1", std::make_shared<BatchNorm2d>(mid));
    auto distri = net.register_module("ocr_distri_head", container());
    auto ocb = distri->register_module("object_context_block", container());
    auto chain = [](std::vector<int64_t> widths) {
      return std::make_shared<ConvBNReLUChain>(widths);
    };
    f_pixel = ocb->register_module("f_pixel", chain({mid, key, key}));
    f_object = ocb->register_module("f_object", chain({mid, key, key}));
    f_down = ocb->register_module("f_down", chain({mid, key}));
    f_up = ocb->register_module("f_up", chain({key, mid}));
    auto cbd = distri->register_module("conv_bn_dropout", container());
    out_conv = cbd->register_module("0", std::make_shared<Conv2d>(2 * mid, mid, 1, 1, 0, false));
    out_bn = add_bn_relu(*cbd, "1", mid);
    dropout = cbd->register_module(
        "2", std::make_shared<Dropout2d>(static_cast<float>(s.ocr_dropout), seed));
    cls_head = net.register_module("cls_head", std::make_shared<Conv2d>(mid, k, 1, 1, 0, true));
    auto aux = net.register_module("aux_head", container());
    aux_conv = aux->register_module("0", std::make_shared<Conv2d>(in, in, 1, 1, 0, true));
    aux_bn = aux->register_module("1", std::make_shared<BatchNorm2d>(in));
    aux_cls = aux->register_module("3", std::make_shared<Conv2d>(in, k, 1, 1, 0, true));
  }

  // feats [N, C, H, W] (the concatenated branches) -> {aux, out} [N, classes, H, W]
  std::vector<Tensor> run(const Tensor& feats) const {
    const int64_t N = feats.size(0), H = feats.size(2), W = feats.size(3), HW = H * W;
    Tensor aux = (*aux_cls)(ops::relu((*aux_bn)((*aux_conv)(feats))));
    Tensor f = ops::relu((*mid_bn)((*mid_conv)(feats)));
    const int64_t mid = f.size(1), K = aux.size(1), key = key_channels;
    // ocr_gather_head: class centres [N, mid, K, 1] = feats [N,mid,HW] x softmax_HW(aux)^T
    Tensor probs = ops::softmax(ops::reshape(aux, {N, K, HW}), -1);
    Tensor proxy = ops::reshape(ops::bmm(ops::reshape(f, {N, mid, HW}), probs, false, true),
                                {N, mid, K, 1});
    // object_context_block: pixel-to-object attention
    Tensor query = ops::reshape((*f_pixel)(f), {N, key, HW});
    Tensor keys = ops::reshape((*f_object)(proxy), {N, key, K});
    Tensor value = ops::reshape((*f_down)(proxy), {N, key, K});
    Tensor sim = ops::bmm(query, keys, true, false);  // [N, HW, K]
    sim = ops::softmax(ops::mul(sim, static_cast<float>(std::pow(double(key), -0.5))), -1);
    Tensor context = ops::reshape(ops::bmm(value, sim, false, true), {N, key, H, W});
    context = (*f_up)(context);
    // conv_bn_dropout on [context, feats], then cls_head
    Tensor out = ops::relu((*out_bn)((*out_conv)(ops::concat({context, f}, 1))));
    return {aux, (*cls_head)((*dropout)(out))};
  }
};

// ---------------------------------------------------------------------------------------------
// HRNet
// ---------------------------------------------------------------------------------------------
HRNet::HRNet(const ModelSpec& spec, uint64_t seed) : spec_(spec) {
  spec_.validate(spec_.name);
  const int64_t stem = spec_.stem_channels;
  conv1_ = register_module("conv1", std::make_shared<Conv2d>(3, stem, 3, 2, 1, false));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(stem));
  conv2_ = register_module("conv2", std::make_shared<Conv2d>(stem, stem, 3, 2, 1, false));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(stem));
  auto layer1 = register_module("layer1", container());
  std::vector<int64_t> pre = {make_layer(*layer1, layer1_, spec_.stage1.block, stem,
                                         spec_.stage1.num_channels[0], spec_.stage1.num_blocks[0])};

  transitions_.resize(3);
  stages_.resize(3);
  for (int s = 0; s < 3; ++s) {
    const StageSpec& st = spec_.stages[s];
    const int64_t expansion = st.block == Block::Bottleneck ? 4 : 1;
    std::vector<int64_t> cur;
    for (int64_t c : st.num_channels) cur.push_back(c * expansion);
    auto trans = register_module("transition" + std::to_string(s + 1), container());
    auto& tr = transitions_[s];
    tr.resize(cur.size());
    for (size_t i = 0; i < cur.size(); ++i) {
      if (i < pre.size()) {
        if (pre[i] != cur[i])
          tr[i].push_back(trans->register_module(
              std::to_string(i), std::make_shared<ConvBN>(pre[i], cur[i], 3, 1, true)));
      } else {
        auto chain = trans->register_module(std::to_string(i), container());
        const size_t n = i + 1 - pre.size();
        for (size_t k = 0; k < n; ++k)
          tr[i].push_back(chain->register_module(
              std::to_string(k),
              std::make_shared<ConvBN>(pre.back(), k + 1 == n ? cur[i] : pre.back(), 3, 2, true)));
      }
    }
    auto stage = register_module("stage" + std::to_string(s + 2), container());
    std::vector<int64_t> cin = cur;
    for (int64_t m = 0; m < st.num_modules; ++m) {
      const bool last = s == 2 && m + 1 == st.num_modules;
      auto mod = std::make_shared<HRModule>(cin, st, !(last && spec_.last_module_single_output()),
                                            spec_.fuse, spec_.align_corners);
      stage->register_module(std::to_string(m), mod);
      stages_[s].push_back(mod);
      cin = mod->out_channels;
    }
    pre = cin;
  }

  int64_t total = 0;
  for (int64_t c : pre) total += c;
  const int64_t k = spec_.final_conv_kernel;
  switch (spec_.head) {
    case Head::Pose:
      pose_final_ = register_module(
          "final_layer", std::make_shared<Conv2d>(pre[0], spec_.num_joints, k, 1, k == 3 ? 1 : 0));
      break;
    case Head::Seg: {
      if (spec_.ocr) {
        ocr_ = std::make_shared<OcrHead>(*this, total, spec_, seed);
        break;
      }
      auto last = register_module("last_layer", container());
      seg_conv1_ = last->register_module("0", std::make_shared<Conv2d>(total, total, 1));
      seg_bn_ = last->register_module("1", std::make_shared<BatchNorm2d>(total));
      seg_conv2_ = last->register_module(
          "3", std::make_shared<Conv2d>(total, spec_.num_classes, k, 1, k == 3 ? 1 : 0));
      break;
    }
    case Head::Det: {
      // HRFPN (modeling/backbone/hrfpn.py): reduction_conv.0 (1x1, bias), fpn_conv.{l} (3x3,
      // bias, stride CONV_STRIDE); then the FCOS head
      auto red = register_module("reduction_conv", container());
      det_reduce_ =
          red->register_module("0", std::make_shared<Conv2d>(total, spec_.det_channels, 1));
      auto fpn = register_module("fpn_conv", container());
      for (int64_t l = 0; l < spec_.det_levels; ++l)
        det_fpn_.push_back(fpn->register_module(
            std::to_string(l), std::make_shared<Conv2d>(spec_.det_channels, spec_.det_channels, 3,
                                                        spec_.det_conv_stride, 1)));
      fcos_ = std::make_shared<FcosHead>(*this, spec_);
      break;
    }
    case Head::Cls: {
      const auto& hc = spec_.cls_head_channels;
      auto incre = register_module("incre_modules", container());
      for (size_t i = 0; i < pre.size(); ++i) {
        auto seq = incre->register_module(std::to_string(i), container());
        std::vector<std::shared_ptr<ResBlock>> blk;
        make_layer(*seq, blk, Block::Bottleneck, pre[i], hc[i], 1);
        cls_incre_.push_back(blk[0]);
      }
      auto down = register_module("downsamp_modules", container());
      for (size_t i = 0; i + 1 < pre.size(); ++i)
        cls_down_.push_back(down->register_module(
            std::to_string(i),
            std::make_shared<ConvBN>(4 * hc[i], 4 * hc[i + 1], 3, 2, true, true)));
      cls_final_ = register_module(
          "final_layer",
          std::make_shared<ConvBN>(4 * hc[pre.size() - 1], spec_.cls_features, 1, 1, true, true));
      cls_classifier_ = register_module(
          "classifier", std::make_shared<Linear>(spec_.cls_features, spec_.num_classes));
      break;
    }
  }
  init_weights(seed);
}

std::vector<Tensor> HRNet::run_backbone(const Tensor& x) {
  Tensor y = ops::relu((*bn1_)((*conv1_)(x)));
  y = ops::relu((*bn2_)((*conv2_)(y)));
  for (const auto& blk : layer1_) y = (*blk)(y);
  std::vector<Tensor> ys = {y};
  for (int s = 0; s < 3; ++s) {
    std::vector<Tensor> xs;
    const auto& tr = transitions_[s];
    for (size_t i = 0; i < tr.size(); ++i) {
      graph::StreamScope on_branch(static_cast<int>(i));
      xs.push_back(run_chain(tr[i], i < ys.size() ? ys[i] : ys.back()));
    }
    for (const auto& mod : stages_[s]) xs = mod->run(xs);
    ys = xs;
  }
  return ys;
}

std::vector<Tensor> HRNet::run(const Tensor& x) {
  std::vector<Tensor> ys = run_backbone(x);
  switch (spec_.head) {
    case Head::Pose:
      return {(*pose_final_)(ys[0])};
    case Head::Seg:
    case Head::Det: {
      const bool ac = spec_.head == Head::Seg ? spec_.align_corners : false;
      std::vector<Tensor> parts = {ys[0]};
      for (size_t i = 1; i < ys.size(); ++i)
        parts.push_back(ops::upsample_bilinear(ys[i], {ys[0].size(2), ys[0].size(3)}, ac));
      Tensor cat = parts.size() == 1 ? parts[0] : ops::concat(parts, 1);
      if (ocr_) return ocr_->run(cat);
      if (spec_.head == Head::Seg)
        return {(*seg_conv2_)(ops::relu((*seg_bn_)((*seg_conv1_)(cat))))};
      Tensor base = (*det_reduce_)(cat);
      std::vector<Tensor> levels;
      for (int64_t l = 0; l < spec_.det_levels; ++l) {
        const int64_t k = int64_t(1) << l;
        levels.push_back((*det_fpn_[l])(l == 0 ? base : ops::avg_pool2d(base, {k, k}, {k, k})));
      }
      return fcos_->run(levels);
    }
    case Head::Cls: {
      Tensor y = (*cls_incre_[0])(ys[0]);
      for (size_t i = 0; i < cls_down_.size(); ++i)
        y = ops::add((*cls_incre_[i + 1])(ys[i + 1]), (*cls_down_[i])(y));
      y = ops::global_avg_pool((*cls_final_)(y));
      return {(*cls_classifier_)(y)};
    }
  }
  return {};
}

void HRNet::check_input(const Shape& s) const {
  const std::string& n = spec_.name;
  HR_CHECK(s.size() == 4, "[hrnet] ", n, ": expected an input [N,3,H,W], got ", shape_str(s));
  HR_CHECK(s[1] == 3, "[hrnet] ", n, ": expected 3 input channels (RGB), got ", s[1], " in ",
           shape_str(s));
  HR_CHECK(s[0] > 0 && s[2] > 0 && s[3] > 0, "[hrnet] ", n, ": empty input ", shape_str(s));
  int64_t branches = 1;
  for (const auto& st : spec_.stages) branches = std::max(branches, st.num_branches());
  if (spec_.fuse == FuseUpsample::Nearest) {
    const int64_t m = int64_t(4) << (branches - 1);
    for (int d = 2; d < 4; ++d)
      HR_CHECK(s[d] % m == 0, "[hrnet] ", n, ": input ", d == 2 ? "height " : "width ", s[d],
               " is not a multiple of ", m,
               ": the fuse layers upsample by exact powers of 2 "
               "(nearest), so each of the ",
               branches,
               " branches must be exactly twice the "
               "size of the next (input ",
               shape_str(s), ")");
  }
  if (spec_.head == Head::Det) {
    const int64_t m = int64_t(4) << (spec_.det_levels - 1);
    for (int d = 2; d < 4; ++d)
      HR_CHECK(s[d] >= m, "[hrnet] ", n, ": input ", d == 2 ? "height " : "width ", s[d],
               " is smaller than ", m, ", the coarsest pyramid level's window (stride ", m,
               ") (input ", shape_str(s), ")");
  }
}

std::vector<Tensor> HRNet::forward_all(const Tensor& x) {
  HR_CHECK(x.defined(), "[hrnet] ", spec_.name, ": undefined input");
  check_input(x.shape());
  return run(x);
}

Tensor HRNet::forward(const Tensor& x) {
  std::vector<Tensor> ys = forward_all(x);
  return ocr_ ? ys.back() : ys[0];
}

void HRNet::train(bool on) {
  Module::train(on);
  if (!on || !spec_.norm_eval) return;
  // HighResolutionNet.train(mode) with norm_eval: every batch norm back in eval mode
  std::function<void(Module&)> freeze = [&](Module& m) {
    for (const auto& [name, c] : m.children()) {
      if (dynamic_cast<BatchNorm2d*>(c.get())) c->train(false);
      freeze(*c);
    }
  };
  freeze(*this);
}

Tensor HRNet::dropout_state() const { return ocr_ ? ocr_->dropout->state() : Tensor(); }

void HRNet::seed_dropout(uint64_t seed) {
  if (ocr_) ocr_->dropout->reseed(seed);
}

std::vector<Tensor> HRNet::forward_backbone(const Tensor& x) {
  HR_CHECK(x.defined(), "[hrnet] ", spec_.name, ": undefined input");
  check_input(x.shape());
  return run_backbone(x);
}

Tensor add_training_loss(graph::Graph& g, const HRNet& model, const std::vector<Tensor>& ys) {
  const Shape& y = ys[0].shape();
  switch (model.spec().head) {
    case Head::Pose:
      return ops::heatmap_loss(ys[0], g.input("target", y), g.input("weight", {y[0], y[1], 1}));
    case Head::Seg: {
      Tensor labels = g.input("labels", {y[0], y[2], y[3]}, DType::i64);
      if (!model.spec().ocr) return ops::cross_entropy(ys[0], labels);
      return ops::add(ops::mul(ops::cross_entropy(ys[0], labels), 0.4f),
                      ops::cross_entropy(ys[1], labels));
    }
    case Head::Cls:
      return ops::cross_entropy(ys[0], g.input("labels", {y[0]}, DType::i64));
    case Head::Det: {
      const int64_t n = y[0], p = fcos_num_locations(ys);
      return fcos_loss(ys, g.input("labels", {n, p}, DType::i64),
                       g.input("reg_targets", {n, 4, p}), g.input("centerness", {n, p}),
                       g.input("positive", {n, p}));
    }
  }
  return Tensor();
}

std::vector<std::array<int64_t, 2>> det_level_sizes(const ModelSpec& spec, int64_t h, int64_t w) {
  auto conv = [](int64_t n, int64_t stride) { return (n - 1) / stride + 1; };  // 3x3, padding 1
  const int64_t h0 = conv(conv(h, 2), 2), w0 = conv(conv(w, 2), 2);
  std::vector<std::array<int64_t, 2>> sizes;
  for (int64_t l = 0; l < spec.det_levels; ++l) {
    const int64_t k = int64_t(1) << l;
    sizes.push_back({conv(h0 / k, spec.det_conv_stride), conv(w0 / k, spec.det_conv_stride)});
  }
  return sizes;
}

int64_t fcos_num_locations(const std::vector<Tensor>& ys) {
  HR_CHECK(!ys.empty() && ys.size() % 3 == 0, "[hrnet] fcos: expected 3 outputs per level, got ",
           ys.size());
  int64_t p = 0;
  for (size_t l = 0; l < ys.size() / 3; ++l) p += ys[l].size(2) * ys[l].size(3);
  return p;
}

Tensor fcos_loss(const std::vector<Tensor>& ys, const Tensor& labels, const Tensor& reg_targets,
                 const Tensor& centerness, const Tensor& positive, float gamma, float alpha) {
  const size_t levels = ys.size() / 3;
  const int64_t p = fcos_num_locations(ys);
  // [N,C,h,w] of each level -> [N,C,h*w], concatenated along the locations (level-major, then
  // row-major: the order of loss.py's per-level permute/reshape and cat)
  auto flat = [&](size_t first) {
    std::vector<Tensor> parts;
    for (size_t l = 0; l < levels; ++l) {
      const Tensor& t = ys[first + l];
      parts.push_back(ops::reshape(t, {t.size(0), t.size(1), t.size(2) * t.size(3)}));
    }
    return parts.size() == 1 ? parts[0] : ops::concat(parts, 2);
  };
  const Tensor cls = flat(0), reg = flat(levels);
  const Tensor ctr = ops::reshape(flat(2 * levels), {ys[0].size(0), p});
  return ops::add(ops::add(ops::sigmoid_focal_loss(cls, labels, gamma, alpha),
                           ops::iou_loss(reg, reg_targets, centerness)),
                  ops::masked_bce_with_logits(ctr, centerness, positive));
}

namespace {

Device device_of(const Module& m) {
  const auto params = m.parameters();
  return params.empty() ? Device::cpu() : params[0].device();
}

// The forward recorded on a graph input of `input`'s shape, with its outputs named output0...
graph::Graph record_forward(HRNet& model, const Shape& input, std::vector<Tensor>* ys) {
  graph::Graph g(graph::GraphOptions{device_of(model)});
  *ys = model.forward_all(g.input("input", input));
  for (size_t i = 0; i < ys->size(); ++i) g.output((*ys)[i], "output" + std::to_string(i));
  return g;
}

}  // namespace

GraphPlans plan_graphs(HRNet& model, const Shape& input) {
  GraphPlans p;
  graph::CompileOptions co;
  co.allocate = false;
  std::vector<Tensor> ys;
  {
    ModeScope eval(model, false);
    graph::CompileOptions inf = co;
    inf.inference = true;
    p.inference = graph::Executable(record_forward(model, input, &ys), inf).stats();
  }
  {
    ModeScope train(model, true);
    graph::Graph g = record_forward(model, input, &ys);
    co.loss = add_training_loss(g, model, ys);
    g.output(co.loss, "loss");
    p.training = graph::Executable(std::move(g), co).stats();
    p.has_training = true;
  }
  return p;
}

namespace {
void count_layers(const Module& m, ModelStats& st) {
  for (const auto& [name, c] : m.children()) {
    if (dynamic_cast<const Conv2d*>(c.get())) ++st.conv_layers;
    if (dynamic_cast<const BatchNorm2d*>(c.get())) ++st.bn_layers;
    if (dynamic_cast<const Linear*>(c.get())) ++st.linear_layers;
    count_layers(*c, st);
  }
}
}  // namespace

ModelStats HRNet::stats(const Shape& input) {
  check_input(input);
  ModelStats st;
  st.params = num_parameters();
  count_layers(*this, st);
  ModeScope eval(*this, false);
  std::vector<Tensor> ys;
  graph::Graph g = record_forward(*this, input, &ys);
  for (const Tensor& y : ys) st.outputs.push_back(y.shape());
  const graph::GraphIR& ir = g.ir();
  for (size_t i = 1; i < ir.nodes.size(); ++i) {
    const graph::Node& n = ir.nodes[i];
    std::vector<Meta> in;
    for (graph::V v : n.in) in.push_back(v >= 0 ? ir.values[v].meta(ir.opt.device) : Meta::none());
    const double macs = n.op->macs(in);
    if (std::strcmp(n.op->name(), "linear") == 0) st.linear_macs += macs;
    else if (std::strcmp(n.op->name(), "bmm") == 0) st.bmm_macs += macs;
    else st.conv_macs += macs;
    for (graph::V v : n.out)
      if (v >= 0) st.activation_bytes += 4.0 * static_cast<double>(shape_numel(ir.values[v].shape));
  }
  // the op-by-op plan: no fusion, one stream, every op's output in program order (the buffers an
  // eager forward allocates, with their lifetimes)
  graph::CompileOptions co;
  co.fuse = false;
  co.streams = false;
  co.allocate = false;
  const graph::PlanStats plan = graph::Executable(std::move(g), co).stats();
  st.planned_activation_bytes = static_cast<double>(plan.arena_bytes);
  st.peak_live_bytes = static_cast<double>(plan.peak_live_bytes);
  return st;
}

// ---------------------------------------------------------------------------------------------
// Initialisation
// ---------------------------------------------------------------------------------------------
namespace {

// Seeded N(0, std) and U(-b, b) fills. Values come in 64K-element chunks, each from its own
// generator seeded by (draw, chunk), so the result does not depend on the thread count;
// Box-Muller on 32-bit halves of mt19937_64 output is several times faster than
// std::normal_distribution, which matters for 100M-parameter models.
struct Init {
  std::mt19937_64 rng;
  static constexpr int64_t kChunk = 1 << 16;

  template <class F>
  void fill(Tensor& t, F gen_chunk) {
    const uint64_t draw = rng();
    std::vector<float> v(static_cast<size_t>(t.numel()));
    const int64_t n = t.numel(), chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int64_t c = 0; c < chunks; ++c) {
      std::mt19937_64 g(draw ^ (0x9e3779b97f4a7c15ull * static_cast<uint64_t>(c + 1)));
      gen_chunk(g, v.data() + c * kChunk, std::min(kChunk, n - c * kChunk));
    }
    t.copy_(Tensor::from_vector(v, t.shape()));
  }
  static float unit(uint32_t u) { return (static_cast<float>(u >> 8) + 0.5f) * (1.f / 16777216.f); }

  void normal(Tensor& t, double std) {
    const float s = static_cast<float>(std);
    fill(t, [s](std::mt19937_64& g, float* out, int64_t m) {
      for (int64_t i = 0; i < m; i += 2) {
        const uint64_t r = g();
        const float u1 = unit(static_cast<uint32_t>(r)), u2 = unit(static_cast<uint32_t>(r >> 32));
        const float rad = s * std::sqrt(-2.f * std::log(u1));
        out[i] = rad * std::cos(6.28318530718f * u2);
        if (i + 1 < m) out[i + 1] = rad * std::sin(6.28318530718f * u2);
      }
    });
  }
  void uniform(Tensor& t, double bound) {
    const float b = static_cast<float>(bound);
    fill(t, [b](std::mt19937_64& g, float* out, int64_t m) {
      for (int64_t i = 0; i < m; ++i) out[i] = b * (2.f * unit(static_cast<uint32_t>(g())) - 1.f);
    });
  }
};

// TorchDefault: nn.Conv2d's reset_parameters (kaiming uniform a = sqrt(5), i.e. weights and
// biases U(+-1/sqrt(fan_in))).
enum class ConvInit { Normal001, KaimingFanOut, TorchDefault };

void init_tree(Module& m, Init& init, ConvInit mode, bool zero_conv_bias) {
  for (const auto& [name, c] : m.children()) {
    if (auto* cv = dynamic_cast<Conv2d*>(c.get())) {
      const Shape& w = cv->weight.shape();
      const double fan_in = static_cast<double>(w[1] * w[2] * w[3]);
      const double fan_out = static_cast<double>(w[0] * w[2] * w[3]);
      switch (mode) {
        case ConvInit::Normal001:
          init.normal(cv->weight, 0.001);
          break;
        case ConvInit::KaimingFanOut:
          init.normal(cv->weight, std::sqrt(2.0 / fan_out));
          break;
        case ConvInit::TorchDefault:
          init.uniform(cv->weight, 1.0 / std::sqrt(fan_in));
          break;
      }
      if (cv->bias.defined()) {
        if (zero_conv_bias)
          cv->bias.fill_(0.f);
        else
          init.uniform(cv->bias, 1.0 / std::sqrt(fan_in));  // PyTorch's default
      }
    } else if (auto* b = dynamic_cast<BatchNorm2d*>(c.get())) {
      b->weight.fill_(1.f);
      b->bias.fill_(0.f);
      b->running_mean.fill_(0.f);
      b->running_var.fill_(1.f);
      b->num_batches_tracked.copy_(Tensor::zeros({}, DType::i64));
    } else if (auto* l = dynamic_cast<Linear*>(c.get())) {
      const double bound = 1.0 / std::sqrt(static_cast<double>(l->weight.size(1)));
      init.uniform(l->weight, bound);
      if (l->bias.defined()) init.uniform(l->bias, bound);
    }
    init_tree(*c, init, mode, zero_conv_bias);
  }
}

}  // namespace

void HRNet::init_weights(uint64_t seed) {
  NoGradGuard guard;
  Init init{std::mt19937_64(seed)};
  ConvInit backbone = ConvInit::Normal001;
  if (spec_.head == Head::Cls) backbone = ConvInit::KaimingFanOut;
  // HRNet-FCOS initialises nothing itself but the FCOS head: the backbone and HRFPN keep
  // PyTorch's defaults (HRFPN.init_weights is never called)
  if (spec_.head == Head::Det) backbone = ConvInit::TorchDefault;
  const bool zero_bias = spec_.head == Head::Pose;
  for (const auto& [name, c] : children()) {
    if (fcos_ && name == "rpn") {
      // FCOSHead: every conv N(0, 0.01) with bias 0, the classifier's bias
      // -log((1 - prior) / prior); GroupNorm weight 1, bias 0; scales 1
      const auto conv = [&](Conv2d& cv, float bias) {
        init.normal(cv.weight, 0.01);
        cv.bias.fill_(bias);
      };
      for (size_t i = 0; i < fcos_->cls_conv.size(); ++i) {
        conv(*fcos_->cls_conv[i], 0.f);
        conv(*fcos_->box_conv[i], 0.f);
        for (GroupNorm* gn : {fcos_->cls_gn[i].get(), fcos_->box_gn[i].get()}) {
          gn->weight.fill_(1.f);
          gn->bias.fill_(0.f);
        }
      }
      const double prior = spec_.fcos_prior_prob;
      conv(*fcos_->cls_logits, static_cast<float>(-std::log((1 - prior) / prior)));
      conv(*fcos_->bbox_pred, 0.f);
      conv(*fcos_->centerness, 0.f);
      for (const auto& sc : fcos_->scales) sc->scale.fill_(1.f);
      continue;
    }
    // seg_hrnet_ocr.py's init_weights skips every module whose name contains cls, aux or ocr
    const std::string& module_name = name;  // a structured binding: not capturable in C++17
    auto has = [&](const char* part) { return module_name.find(part) != std::string::npos; };
    const bool ocr_head = spec_.ocr && (has("cls") || has("aux") || has("ocr"));
    Module holder;  // init_tree walks children, so wrap the top-level module
    holder.register_module(name, c);
    init_tree(holder, init, ocr_head ? ConvInit::TorchDefault : backbone, zero_bias);
  }
  seed_dropout(seed);
}

std::shared_ptr<HRNet> make_hrnet(const Config& cfg, uint64_t seed) {
  return std::make_shared<HRNet>(spec_from_config(cfg), seed);
}

// ---------------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------------
namespace {
// The prefixes checkpoints of the model's repository put before its keys: DataParallel's
// "module.", the seg repository's "model."; HRNet-FCOS's GeneralizedRCNN nests the backbone
// and HRFPN as "backbone.body." / "backbone.fpn.".
std::vector<std::string> checkpoint_prefixes(const ModelSpec& spec) {
  std::vector<std::string> p = {"module.", "model."};
  if (spec.head == Head::Det) p.insert(p.end(), {"backbone.body.", "backbone.fpn."});
  return p;
}
std::string first_component(const std::string& k) { return k.substr(0, k.find('.')); }
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

void load_hrnet_checkpoint(HRNet& model, const std::string& path) {
  std::map<std::string, std::string> meta;
  NamedTensors sd = load_checkpoint(path, &meta);
  HR_CHECK(!sd.empty(), "[hrnet] ", path, ": the checkpoint holds no tensors");
  auto fmt = meta.find("format");
  if (fmt != meta.end() && fmt->second == kTrainingCheckpointFormat) {
    // hrnet-train's checkpoint.safetensors: the weights are the "model." entries
    NamedTensors weights;
    for (auto& [k, t] : sd)
      if (k.compare(0, 6, "model.") == 0) weights.emplace_back(k.substr(6), t);
    sd = std::move(weights);
  }
  LoadOptions opt;
  opt.strip_prefixes = checkpoint_prefixes(model.spec());
  try {
    model.load_state_dict(sd, opt);
  } catch (const Error& e) {
    throw Error(str_cat("[hrnet] ", path, " does not fit ", model.spec().name, ": ", e.what()));
  }
}


std::string PretrainedReport::summary() const {
  std::string s = str_cat(loaded.size(), " loaded, ", skipped.size(),
                          " skipped (layer not listed), ", unexpected.size(), " not in the model, ",
                          missing.size(), " model keys not in the checkpoint");
  for (const auto& k : unexpected) s += "\n  not in the model: " + k;
  for (const auto& k : missing) s += "\n  not in the checkpoint: " + k;
  return s;
}

PretrainedReport load_pretrained_layers(HRNet& model, const NamedTensors& ckpt,
                                        const std::vector<std::string>& layers) {
  const bool all = !layers.empty() && layers[0] == "*";
  const std::set<std::string> wanted(layers.begin(), layers.end());
  auto take = [&](const std::string& k) { return all || wanted.count(first_component(k)); };
  std::map<std::string, Tensor> mine;
  for (auto& [k, t] : model.state_dict()) mine[k] = t;
  const std::vector<std::string> prefixes = checkpoint_prefixes(model.spec());

  PretrainedReport rep;
  std::vector<std::string> misshaped;
  std::vector<std::pair<Tensor, Tensor>> copies;  // dst, src
  std::set<std::string> got;
  for (const auto& [raw, src] : ckpt) {
    std::string k = strip_key_prefixes(raw, prefixes);
    // seg_hrnet_ocr.py init_weights: k.replace('last_layer', 'aux_head')
    if (model.spec().ocr)
      for (size_t p = k.find("last_layer"); p != std::string::npos; p = k.find("last_layer", p))
        k.replace(p, 10, "aux_head");
    if (!take(k)) {
      rep.skipped.push_back(raw);
      continue;
    }
    auto it = mine.find(k);
    if (it == mine.end()) {
      rep.unexpected.push_back(raw);
      continue;
    }
    if (it->second.shape() != src.shape() && !(it->second.numel() == 1 && src.numel() == 1)) {
      misshaped.push_back(str_cat(raw, " has shape ", shape_str(src.shape()), ", the model's is ",
                                  shape_str(it->second.shape())));
      continue;
    }
    rep.loaded.push_back(raw);
    got.insert(k);
    copies.emplace_back(it->second, src);
  }
  if (!misshaped.empty()) {
    std::string msg = str_cat("[hrnet] pretrained layers: ", misshaped.size(),
                              " mis-shaped keys (nothing was loaded)");
    for (const auto& m : misshaped) msg += "\n  mis-shaped: " + m;
    throw Error(msg);
  }
  for (const auto& [k, t] : model.state_dict())
    if (take(k) && !got.count(k) && !ends_with(k, "num_batches_tracked")) rep.missing.push_back(k);
  NoGradGuard guard;
  for (auto& [dst, src] : copies)
    dst.copy_(src.shape() == dst.shape() ? src : src.view(dst.shape()));
  return rep;
}

PretrainedReport load_pretrained_layers(HRNet& model, const std::string& path,
                                        const std::vector<std::string>& layers) {
  NamedTensors ckpt = load_checkpoint(path);
  try {
    return load_pretrained_layers(model, ckpt, layers);
  } catch (const Error& e) {
    throw Error(str_cat("[hrnet] ", path, ": ", e.what()));
  }
}

}  // namespace hr::models
