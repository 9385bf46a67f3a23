#include "tasks/segmentation.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include "data/draw.h"
#include "data/image.h"
#include "data/seg_classes.h"
#include "engine/file_util.h"
#include "engine/graph.h"
#include "engine/ops.h"
#include "engine/progress.h"

namespace hr::tasks {

namespace fs = std::filesystem;
using models::Config;

namespace {

// TRAIN/TEST.IMAGE_SIZE [W, H]
std::array<int, 2> size_wh(const Config& cfg, const std::string& key, std::array<int, 2> fallback) {
  if (!cfg.has(key)) return fallback;
  const auto v = cfg.get_int_list(key);
  HR_CHECK(v.size() == 2 && v[0] > 0 && v[1] > 0, "[config] ", cfg.source(), ": ", key,
           " must be [W, H] with positive sizes");
  return {static_cast<int>(v[0]), static_cast<int>(v[1])};
}

}  // namespace

SegSettings SegSettings::from_config(const Config& cfg) {
  SegSettings s;
  const std::string src = cfg.source();
  s.dataset = cfg.get_str("DATASET.DATASET", s.dataset);
  s.root = cfg.get_str("DATASET.ROOT", "");
  s.train_set = cfg.get_str("DATASET.TRAIN_SET", "list/cityscapes/train.lst");
  s.test_set = cfg.get_str("DATASET.TEST_SET", "list/cityscapes/val.lst");
  s.num_classes = cfg.get_int("DATASET.NUM_CLASSES", s.num_classes);
  HR_CHECK(s.num_classes > 1, "[config] ", src, ": DATASET.NUM_CLASSES must be at least 2");
  s.ignore_label = cfg.get_int("TRAIN.IGNORE_LABEL", s.ignore_label);
  HR_CHECK(s.ignore_label < 0 || s.ignore_label >= s.num_classes, "[config] ", src,
           ": TRAIN.IGNORE_LABEL ", s.ignore_label, " is one of the ", s.num_classes, " classes");
  HR_CHECK(s.ignore_label <= 255, "[config] ", src,
           ": TRAIN.IGNORE_LABEL must fit the 8-bit label images (-1 or 0..255)");
  s.align_corners = cfg.get_bool("MODEL.ALIGN_CORNERS", s.align_corners);
  s.num_outputs = cfg.get_int("MODEL.NUM_OUTPUTS", s.num_outputs);
  HR_CHECK(s.num_outputs >= 1, "[config] ", src, ": MODEL.NUM_OUTPUTS must be positive");
  s.output_index = cfg.get_int("TEST.OUTPUT_INDEX", s.output_index);
  HR_CHECK(s.output_index >= -s.num_outputs && s.output_index < s.num_outputs, "[config] ", src,
           ": TEST.OUTPUT_INDEX ", s.output_index, " does not pick one of the ", s.num_outputs,
           " outputs");

  data::SegOptions& t = s.train_data;
  const auto crop = size_wh(cfg, "TRAIN.IMAGE_SIZE", {1024, 512});
  t.crop_w = crop[0];
  t.crop_h = crop[1];
  t.base_size = static_cast<int>(cfg.get_int("TRAIN.BASE_SIZE", 2048));
  t.multi_scale = cfg.get_bool("TRAIN.MULTI_SCALE", true);
  t.flip = cfg.get_bool("TRAIN.FLIP", true);
  t.scale_factor = static_cast<int>(cfg.get_int("TRAIN.SCALE_FACTOR", 16));
  t.downsample_rate = static_cast<int>(cfg.get_int("TRAIN.DOWNSAMPLERATE", 1));
  t.ignore_label = static_cast<int>(s.ignore_label < 0 ? 255 : s.ignore_label);
  // Cityscapes files hold label ids; the other official datasets' readers give train ids
  t.mapping = s.dataset == "cityscapes" ? data::SegLabelMapping::cityscapes
                                        : data::SegLabelMapping::identity;
  t.num_classes = static_cast<int>(s.num_classes);
  t.skip_corrupt = cfg.get_bool("ENGINE.SKIP_CORRUPT", true);
  HR_CHECK(t.base_size > 0 && t.scale_factor >= 0 && t.downsample_rate >= 1, "[config] ", src,
           ": TRAIN.BASE_SIZE, SCALE_FACTOR and DOWNSAMPLERATE must be positive");
  HR_CHECK(!cfg.get_bool("TRAIN.RANDOM_BRIGHTNESS", false), "[config] ", src,
           ": TRAIN.RANDOM_BRIGHTNESS is not implemented here (no official file sets it)");

  const auto test = size_wh(cfg, "TEST.IMAGE_SIZE", {2048, 1024});
  s.test_w = test[0];
  s.test_h = test[1];
  s.test_base_size = static_cast<int>(cfg.get_int("TEST.BASE_SIZE", 2048));
  s.flip_test = cfg.get_bool("TEST.FLIP_TEST", false);
  s.multi_scale_test = cfg.get_bool("TEST.MULTI_SCALE", false);
  if (cfg.has("TEST.SCALE_LIST")) s.scale_list = cfg.get_float_list("TEST.SCALE_LIST");
  for (double sc : s.scale_list)
    HR_CHECK(sc > 0, "[config] ", src, ": TEST.SCALE_LIST must hold positive scales");
  s.test_num_samples = cfg.get_int("TEST.NUM_SAMPLES", 0);

  s.ohem = cfg.get_bool("LOSS.USE_OHEM", false);
  s.ohem_thres = cfg.get_float("LOSS.OHEMTHRES", s.ohem_thres);
  s.ohem_keep = cfg.get_int("LOSS.OHEMKEEP", s.ohem_keep);
  if (cfg.has("LOSS.BALANCE_WEIGHTS")) s.balance_weights = cfg.get_float_list("LOSS.BALANCE_WEIGHTS");
  HR_CHECK(static_cast<int64_t>(s.balance_weights.size()) == s.num_outputs, "[config] ", src,
           ": LOSS.BALANCE_WEIGHTS has ", s.balance_weights.size(),
           " weights for MODEL.NUM_OUTPUTS ", s.num_outputs, " outputs");
  HR_CHECK(!cfg.get_bool("LOSS.CLASS_BALANCE", false), "[config] ", src,
           ": LOSS.CLASS_BALANCE is not read by the official code either; leave it false");
  if (s.dataset == "cityscapes" && s.num_classes == 19)
    s.class_weights.assign(data::kCityscapesClassWeights.begin(),
                           data::kCityscapesClassWeights.end());
  return s;
}

data::SegOptions SegSettings::val_data() const {
  data::SegOptions o = train_data;
  o.multi_scale = false;
  o.flip = false;
  o.downsample_rate = 1;
  o.base_size = test_base_size;
  o.crop_h = test_h;
  o.crop_w = test_w;
  return o;
}

// ---------------------------------------------------------------------------------------------
ConfusionMatrix::ConfusionMatrix(int64_t classes)
    : c_(classes), m_(static_cast<size_t>(classes * classes), 0.0) {}

void ConfusionMatrix::add(const int64_t* label, const int64_t* pred, int64_t n, int64_t ignore) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t l = label[i];
    if (l == ignore) continue;
    HR_CHECK(l >= 0 && l < c_, "confusion matrix: label ", l, " is neither a class (0..", c_ - 1,
             ") nor the ignore label ", ignore);
    HR_CHECK(pred[i] >= 0 && pred[i] < c_, "confusion matrix: prediction ", pred[i],
             " is not a class");
    m_[static_cast<size_t>(l * c_ + pred[i])] += 1;
  }
}

void ConfusionMatrix::add(const ConfusionMatrix& o) {
  HR_CHECK(o.c_ == c_, "confusion matrix: ", o.c_, " classes added to ", c_);
  for (size_t i = 0; i < m_.size(); ++i) m_[i] += o.m_[i];
}

void ConfusionMatrix::sum_over_ranks() {
  dist::all_reduce_sum(m_.data(), static_cast<int64_t>(m_.size()), "the confusion matrix's sum");
}

std::vector<double> ConfusionMatrix::iou() const {
  std::vector<double> r(static_cast<size_t>(c_));
  for (int64_t k = 0; k < c_; ++k) {
    double gt = 0, pr = 0;
    for (int64_t j = 0; j < c_; ++j) {
      gt += at(k, j);
      pr += at(j, k);
    }
    const double tp = at(k, k);
    r[static_cast<size_t>(k)] = tp / std::max(1.0, gt + pr - tp);
  }
  return r;
}

double ConfusionMatrix::mean_iou() const {
  const auto v = iou();
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

double ConfusionMatrix::pixel_accuracy() const {
  double tp = 0, all = 0;
  for (int64_t k = 0; k < c_; ++k) tp += at(k, k);
  for (double x : m_) all += x;
  return all > 0 ? tp / all : 0;
}

double ConfusionMatrix::mean_accuracy() const {
  double s = 0;
  int present = 0;
  for (int64_t k = 0; k < c_; ++k) {
    double gt = 0;
    for (int64_t j = 0; j < c_; ++j) gt += at(k, j);
    if (gt > 0) {
      s += at(k, k) / gt;
      ++present;
    }
  }
  return present ? s / present : 0;
}

// ---------------------------------------------------------------------------------------------
namespace {

// x [1,C,H,W] host f32 -> the rectangle [y0,y1) x [x0,x1) as [1,C,y1-y0,x1-x0]
Tensor crop_chw(const Tensor& x, int64_t y0, int64_t y1, int64_t x0, int64_t x1) {
  const int64_t C = x.size(1), W = x.size(3);
  Tensor r = Tensor::empty({1, C, y1 - y0, x1 - x0});
  const float* s = x.data<float>();
  float* d = r.data<float>();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t y = y0; y < y1; ++y) {
      const float* row = s + (c * x.size(2) + y) * W;
      std::copy(row + x0, row + x1, d + (c * (y1 - y0) + (y - y0)) * (x1 - x0));
    }
  return r;
}

// x [1,C,h,w] padded bottom/right to [1,C,H,W] with value[c] (the official pad_image)
Tensor pad_chw(const Tensor& x, int64_t H, int64_t W, const std::vector<float>& value) {
  const int64_t C = x.size(1), h = x.size(2), w = x.size(3);
  if (h >= H && w >= W) return x;
  H = std::max(H, h);
  W = std::max(W, w);
  Tensor r = Tensor::empty({1, C, H, W});
  float* d = r.data<float>();
  const float* s = x.data<float>();
  for (int64_t c = 0; c < C; ++c) {
    std::fill(d + c * H * W, d + (c + 1) * H * W, value[static_cast<size_t>(c)]);
    for (int64_t y = 0; y < h; ++y)
      std::copy(s + (c * h + y) * w, s + (c * h + y + 1) * w, d + (c * H + y) * W);
  }
  return r;
}

Tensor flip_w(const Tensor& x) {
  Tensor r = Tensor::empty(x.shape());
  const int64_t rows = x.numel() / x.size(3), W = x.size(3);
  const float* s = x.data<float>();
  float* d = r.data<float>();
  for (int64_t i = 0; i < rows; ++i)
    std::reverse_copy(s + i * W, s + (i + 1) * W, d + i * W);
  return r;
}

Tensor resize(const Tensor& x, int64_t h, int64_t w, bool align_corners) {
  if (x.size(2) == h && x.size(3) == w) return x;
  InferenceMode no_grad;
  return ops::upsample_bilinear(x, {h, w}, align_corners);
}

// the official inference(): logits upsampled to the input's size, averaged with the mirrored
// pass when flipping, then exp
Tensor infer_one(const SegForward& forward, const Tensor& x, const SegInferOptions& o) {
  const int64_t h = x.size(2), w = x.size(3);
  Tensor p = resize(forward(x), h, w, o.align_corners);
  if (o.flip) {
    Tensor q = flip_w(resize(forward(flip_w(x)), h, w, o.align_corners));
    Tensor avg = Tensor::empty(p.shape());
    const float *a = p.data<float>(), *b = q.data<float>();
    float* d = avg.data<float>();
    for (int64_t i = 0; i < p.numel(); ++i) d[i] = (a[i] + b[i]) * 0.5f;
    p = avg;
  }
  float* d = p.data<float>();
  for (int64_t i = 0; i < p.numel(); ++i) d[i] = std::exp(d[i]);
  return p;
}

}  // namespace

Tensor seg_inference(const SegForward& forward, const Tensor& image, const SegInferOptions& o) {
  HR_CHECK(image.dim() == 4 && image.size(0) == 1 && image.size(1) == 3 && image.device().is_cpu() &&
               image.dtype() == DType::f32,
           "segmentation inference: expected one host f32 image [1,3,H,W], got ",
           shape_str(image.shape()));
  const int64_t H = image.size(2), W = image.size(3), C = o.classes;
  const int64_t ch = o.crop_h, cw = o.crop_w;
  // the normalised black the official pads with: -mean / std
  const std::vector<float> pad{-0.485f / 0.229f, -0.456f / 0.224f, -0.406f / 0.225f};
  Tensor final_pred = Tensor::zeros({1, C, H, W});
  for (double scale : o.scales) {
    // multi_scale_aug(rand_scale = scale, no crop): long side int(base * scale + 0.5)
    const int64_t long_size = static_cast<int64_t>(o.base_size * scale + 0.5);
    int64_t nh, nw;
    if (H > W) {
      nh = long_size;
      nw = static_cast<int64_t>(double(W) * long_size / H + 0.5);
    } else {
      nw = long_size;
      nh = static_cast<int64_t>(double(H) * long_size / W + 0.5);
    }
    const Tensor img = resize(image, nh, nw, false);  // cv2 INTER_LINEAR on floats
    Tensor preds;
    const bool whole = o.cityscapes_windows ? scale <= 1.0 : std::max(nh, nw) <= std::min(ch, cw);
    if (whole) {
      if (o.cityscapes_windows) {
        preds = infer_one(forward, img, o);
      } else {
        preds = crop_chw(infer_one(forward, pad_chw(img, ch, cw, pad), o), 0, nh, 0, nw);
      }
    } else {
      const Tensor in = o.cityscapes_windows ? img : pad_chw(img, ch, cw, pad);
      const int64_t ph = in.size(2), pw = in.size(3);
      const int64_t sh = o.cityscapes_windows ? ch : static_cast<int64_t>(ch * 2.0 / 3.0);
      const int64_t sw = o.cityscapes_windows ? cw : static_cast<int64_t>(cw * 2.0 / 3.0);
      const int64_t rows = static_cast<int64_t>(std::ceil(double(ph - ch) / sh)) + 1;
      const int64_t cols = static_cast<int64_t>(std::ceil(double(pw - cw) / sw)) + 1;
      Tensor sum = Tensor::zeros({1, C, ph, pw});
      std::vector<float> count(static_cast<size_t>(ph * pw), 0.f);
      for (int64_t r = 0; r < std::max<int64_t>(rows, 1); ++r)
        for (int64_t c = 0; c < std::max<int64_t>(cols, 1); ++c) {
          int64_t h0 = r * sh, w0 = c * sw;
          const int64_t h1 = std::min(h0 + ch, ph), w1 = std::min(w0 + cw, pw);
          if (o.cityscapes_windows) {
            h0 = std::max<int64_t>(h1 - ch, 0);
            w0 = std::max<int64_t>(w1 - cw, 0);
          }
          Tensor win = crop_chw(in, h0, h1, w0, w1);
          if (!o.cityscapes_windows && (h1 == ph || w1 == pw)) win = pad_chw(win, ch, cw, pad);
          const Tensor p = infer_one(forward, win, o);
          const float* ps = p.data<float>();
          float* s = sum.data<float>();
          const int64_t wh = p.size(2), ww = p.size(3);
          for (int64_t k = 0; k < C; ++k)
            for (int64_t y = h0; y < h1; ++y)
              for (int64_t x = w0; x < w1; ++x) s[(k * ph + y) * pw + x] += ps[(k * wh + y - h0) * ww + x - w0];
          for (int64_t y = h0; y < h1; ++y)
            for (int64_t x = w0; x < w1; ++x) count[static_cast<size_t>(y * pw + x)] += 1;
        }
      float* s = sum.data<float>();
      for (int64_t k = 0; k < C; ++k)
        for (int64_t i = 0; i < ph * pw; ++i) s[k * ph * pw + i] /= count[static_cast<size_t>(i)];
      preds = crop_chw(sum, 0, nh, 0, nw);
    }
    HR_CHECK(preds.size(1) == C, "segmentation inference: the model gives ", preds.size(1),
             " classes, the data has ", C);
    const Tensor up = resize(preds, H, W, o.align_corners);
    float* f = final_pred.data<float>();
    const float* u = up.data<float>();
    for (int64_t i = 0; i < final_pred.numel(); ++i) f[i] += u[i];
  }
  return final_pred;
}

std::vector<int64_t> seg_argmax(const Tensor& scores) {
  const int64_t C = scores.size(1), HW = scores.size(2) * scores.size(3);
  std::vector<int64_t> r(static_cast<size_t>(HW), 0);
  const float* s = scores.data<float>();
  for (int64_t i = 0; i < HW; ++i) {
    float best = s[i];
    for (int64_t k = 1; k < C; ++k)
      if (s[k * HW + i] > best) {
        best = s[k * HW + i];
        r[static_cast<size_t>(i)] = k;
      }
  }
  return r;
}

SegInferOptions infer_options(const SegSettings& s, bool test_augmentation) {
  SegInferOptions o;
  if (test_augmentation && s.multi_scale_test) o.scales = s.scale_list;
  o.flip = test_augmentation && s.flip_test;
  o.base_size = s.test_base_size;
  o.crop_h = s.test_h;
  o.crop_w = s.test_w;
  o.align_corners = s.align_corners;
  o.cityscapes_windows = s.dataset == "cityscapes";
  o.classes = s.num_classes;
  return o;
}

// ---------------------------------------------------------------------------------------------
SegTask::SegTask(Config cfg) : Task(std::move(cfg)), seg_(SegSettings::from_config(cfg_)) {}

const data::Dataset& SegTask::train_data() {
  if (!train_) {
    HR_CHECK(!seg_.root.empty(), "[config] ", cfg_.source(),
             ": DATASET.ROOT is empty (the folder the .lst paths are relative to)");
    train_ = std::make_unique<data::SegmentationDataset>(
        data::read_seg_list(seg_.root, seg_.train_set), seg_.train_data);
  }
  return *train_;
}

const data::SegmentationDataset& SegTask::val_data() {
  if (!val_) {
    data::SegList list = data::read_seg_list(seg_.root, seg_.test_set);
    if (seg_.test_num_samples > 0 && static_cast<int64_t>(list.items.size()) > seg_.test_num_samples)
      list.items.resize(static_cast<size_t>(seg_.test_num_samples));
    val_ = std::make_unique<data::SegmentationDataset>(std::move(list), seg_.val_data());
  }
  return *val_;
}

std::string SegTask::describe_data() {
  const auto& t = static_cast<const data::SegmentationDataset&>(train_data());
  return str_cat(t.size(), " training images (crops ", seg_.train_data.crop_w, "x",
                 seg_.train_data.crop_h, "), ", val_data().size(), " validation images, ",
                 seg_.num_classes, " classes",
                 seg_.class_weights.empty() ? "" : ", official class weights",
                 seg_.ohem ? str_cat(", OHEM (thres ", seg_.ohem_thres, ", keep ", seg_.ohem_keep, ")") : "");
}

Tensor SegTask::loss(const std::vector<Tensor>& outputs,
                     const std::map<std::string, Tensor>& targets) const {
  const Tensor& label = targets.at("label");
  HR_CHECK(static_cast<int64_t>(outputs.size()) == seg_.num_outputs, "segmentation: the model gives ",
           outputs.size(), " outputs, MODEL.NUM_OUTPUTS is ", seg_.num_outputs);
  Tensor weights;
  if (!seg_.class_weights.empty()) {
    Tensor& w = label.device().is_cpu() ? weights_cpu_ : weights_cuda_;
    if (!w.defined())
      w = Tensor::from_vector(seg_.class_weights, {static_cast<int64_t>(seg_.class_weights.size())},
                              DType::f32, label.device());
    weights = w;
  }
  const int64_t H = label.size(1), W = label.size(2);
  const int64_t ignore = seg_.ignore_label < 0 ? 255 : seg_.ignore_label;
  Tensor total;
  for (size_t i = 0; i < outputs.size(); ++i) {
    Tensor score = outputs[i];
    if (score.size(2) != H || score.size(3) != W)
      score = ops::upsample_bilinear(score, {H, W}, seg_.align_corners);
    // the official OHEM applies to the last output, the plain weighted cross-entropy to the others
    Tensor l = seg_.ohem && i + 1 == outputs.size()
                   ? ops::ohem_cross_entropy(score, label, ignore, static_cast<float>(seg_.ohem_thres),
                                             seg_.ohem_keep, weights)
                   : ops::cross_entropy(score, label, ignore, 0.f, weights);
    if (seg_.balance_weights[i] != 1.0) l = ops::mul(l, static_cast<float>(seg_.balance_weights[i]));
    total = total.defined() ? ops::add(total, l) : l;
  }
  return total;
}

EvalSummary SegTask::evaluate(models::HRNet& model, const RunOptions& run) {
  const data::SegmentationDataset& val = val_data();
  ProgressBar clock("", 0, "img", nullptr);
  model.eval();
  InferenceMode no_grad;
  graph::InferenceRunner graph_forward(
      [&model](const Tensor& x) { return model.forward_all(x); }, run.device, run.autocast);
  const int64_t out_index =
      seg_.output_index < 0 ? seg_.num_outputs + seg_.output_index : seg_.output_index;
  SegForward forward = [&](const Tensor& x) {
    std::vector<Tensor> ys;
    if (run.graph) {
      ys = graph_forward(x);
    } else {
      AutocastGuard ac(run.autocast);
      ys = model.forward_all(x.to(run.device));
    }
    HR_CHECK(out_index < static_cast<int64_t>(ys.size()), "segmentation: the model gives ",
             ys.size(), " outputs, TEST.OUTPUT_INDEX asks for ", seg_.output_index);
    const Tensor& y = ys[static_cast<size_t>(out_index)];
    Tensor h = Tensor::empty(y.shape());  // f32 NCHW on the host
    h.copy_(y);
    return h;
  };
  const SegInferOptions io = infer_options(seg_, run.test_augmentation);
  const int64_t ignore = seg_.ignore_label < 0 ? 255 : seg_.ignore_label;
  last_ = SegEval();
  last_.cm = ConfusionMatrix(seg_.num_classes);
  // a data-parallel job: this rank's contiguous part of the images, the counts summed after
  // (the picture shows images of rank 0's part)
  const auto [begin, end] = shard_range(val.size(), run);
  std::unique_ptr<ProgressBar> bar;
  if (run.progress) bar = std::make_unique<ProgressBar>("eval", int64_t(end - begin), "img");
  const size_t show_every = std::max<size_t>(1, (end - begin) / 4);
  for (size_t i = begin; i < end; ++i) {
    stop_point(run);
    data::SegFullSample s;
    try {
      s = val.load_full(i);
    } catch (const Error& e) {
      if (!seg_.train_data.skip_corrupt) throw;
      std::fprintf(stderr, "hrnet: skipped: %s\n", e.what());
      ++last_.skipped;
      if (bar) bar->update(1);
      continue;
    }
    const Tensor x = ops::reshape(s.image, {1, 3, s.image.size(1), s.image.size(2)});
    const Tensor scores = seg_inference(forward, x, io);
    std::vector<int64_t> pred = seg_argmax(scores);
    last_.cm.add(s.label.data<int64_t>(), pred.data(), s.label.numel(), ignore);
    ++last_.images;
    if ((i - begin) % show_every == 0 && last_.shown.size() < 4)
      last_.shown.emplace_back(i, std::move(pred));
    if (bar) bar->update(1);
  }
  if (bar) bar->finish();
  if (run.shard_count > 1) last_.cm.sum_over_ranks();
  last_.images = sum_shards(last_.images, run);
  last_.skipped = static_cast<int>(sum_shards(last_.skipped, run));
  last_.seconds = clock.elapsed_s();

  const auto classes = data::seg_class_table(seg_.dataset, seg_.num_classes);
  const auto iou = last_.cm.iou();
  EvalSummary e;
  e.score_name = "mIoU";
  e.score = last_.cm.mean_iou();
  e.metrics = {{"mIoU", e.score},
               {"pixel_acc", last_.cm.pixel_accuracy()},
               {"mean_acc", last_.cm.mean_accuracy()}};
  for (size_t k = 0; k < iou.size(); ++k) e.metrics.emplace_back("IoU/" + classes.names[k], iou[k]);
  char line[160];
  std::snprintf(line, sizeof line, "mIoU %.4f, pixel accuracy %.4f, mean accuracy %.4f on %lld images (%d unreadable skipped)\n",
                e.score, last_.cm.pixel_accuracy(), last_.cm.mean_accuracy(),
                static_cast<long long>(last_.images), last_.skipped);
  e.table = line;
  for (size_t k = 0; k < iou.size() && k < 60; ++k) {
    std::snprintf(line, sizeof line, "  %-16s IoU %.4f\n", classes.names[k].c_str(), iou[k]);
    e.table += line;
  }
  e.count = last_.images;
  e.skipped = last_.skipped;
  e.seconds = last_.seconds;
  return e;
}

void SegTask::save_outputs(const std::string& dir) {
  const auto classes = data::seg_class_table(seg_.dataset, seg_.num_classes);
  const auto iou = last_.cm.iou();
  std::string j = str_cat("{\"mIoU\": ", last_.cm.mean_iou(), ", \"pixel_acc\": ",
                          last_.cm.pixel_accuracy(), ", \"mean_acc\": ", last_.cm.mean_accuracy(),
                          ", \"images\": ", last_.images, ",\n \"per_class_iou\": {");
  for (size_t k = 0; k < iou.size(); ++k)
    j += str_cat(k ? ", " : "", json_quote(classes.names[k]), ": ", iou[k]);
  j += "},\n \"confusion_matrix\": [";
  for (int64_t r = 0; r < last_.cm.classes(); ++r) {
    j += r ? ",\n  [" : "\n  [";
    for (int64_t c = 0; c < last_.cm.classes(); ++c)
      j += str_cat(c ? ", " : "", static_cast<int64_t>(last_.cm.at(r, c)));
    j += "]";
  }
  j += "\n ]}\n";
  const std::string split = fs::path(seg_.test_set).stem().string();
  const std::string res = dir + "/results/seg_" + split + ".json";
  write_file_atomic(res, j.data(), j.size(), "cannot write " + res);

  // the picture: per shown image a row of image | ground truth | prediction
  if (last_.shown.empty()) return;
  const data::SegmentationDataset& val = val_data();
  const int tile_w = 256;
  std::vector<data::Image> rows;
  for (const auto& [i, pred] : last_.shown) {
    data::SegFullSample s;
    try {
      s = val.load_full(i);
    } catch (const Error&) {
      continue;  // a picture is best effort
    }
    const int H = static_cast<int>(s.label.size(0)), W = static_cast<int>(s.label.size(1));
    data::Image gt(W, H), pr(W, H);
    const int64_t* l = s.label.data<int64_t>();
    for (int64_t p = 0; p < int64_t(H) * W; ++p) {
      const auto paint = [&](data::Image& im, int64_t k) {
        uint8_t* px = im.pixels.data() + p * 3;
        if (k >= 0 && k < seg_.num_classes) {
          const auto& c = classes.colours[static_cast<size_t>(k)];
          px[0] = c[0];
          px[1] = c[1];
          px[2] = c[2];
        }
      };
      paint(gt, l[p]);
      paint(pr, pred[static_cast<size_t>(p)]);
    }
    const int th = std::max(1, H * tile_w / W);
    data::Image row(3 * tile_w, th, 3, 0);
    const data::Image parts[3] = {data::resize_bilinear_pil(s.rgb, tile_w, th),
                                  data::resize_nearest(gt, tile_w, th),
                                  data::resize_nearest(pr, tile_w, th)};
    for (int k = 0; k < 3; ++k)
      for (int y = 0; y < th; ++y)
        std::copy(parts[k].row(y), parts[k].row(y) + size_t(tile_w) * 3,
                  row.row(y) + size_t(k * tile_w) * 3);
    rows.push_back(std::move(row));
  }
  if (rows.empty()) return;
  int total_h = 0;
  for (const auto& r : rows) total_h += r.height + 4;
  data::Image grid(3 * tile_w, total_h, 3, 255);
  int y0 = 0;
  for (const auto& r : rows) {
    for (int y = 0; y < r.height; ++y) std::copy(r.row(y), r.row(y) + size_t(r.width) * 3, grid.row(y0 + y));
    y0 += r.height + 4;
  }
  data::write_image(grid, dir + "/predictions.png");
}

}  // namespace hr::tasks
