#include "tasks/classification.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <numeric>

#include "data/draw.h"
#include "data/loader.h"
#include "engine/file_util.h"
#include "engine/graph.h"
#include "engine/ops.h"
#include "engine/progress.h"

namespace hr::tasks {

namespace fs = std::filesystem;
using models::Config;

ClsSettings ClsSettings::from_config(const Config& cfg) {
  ClsSettings s;
  const std::string src = cfg.source();
  s.root = cfg.get_str("DATASET.ROOT", "");
  s.train_set = cfg.get_str("DATASET.TRAIN_SET", s.train_set);
  s.test_set = cfg.get_str("DATASET.TEST_SET", s.test_set);
  s.train_list = cfg.get_str("DATASET.TRAIN_LIST", "");
  s.test_list = cfg.get_str("DATASET.TEST_LIST", "");
  const std::string format = cfg.get_str("DATASET.DATA_FORMAT", "jpg");
  HR_CHECK(format != "zip", "[config] ", src, ": DATASET.DATA_FORMAT zip (images inside zip "
           "archives) is not read here: unpack the archives into ImageNet folders and set jpg");
  const auto size = cfg.get_int_list("MODEL.IMAGE_SIZE");
  HR_CHECK(!size.empty() && size[0] > 0 && (size.size() < 2 || size[1] == size[0]), "[config] ",
           src, ": MODEL.IMAGE_SIZE must be a square [S, S] (the official crops are square)");
  s.size = static_cast<int>(size[0]);
  s.test_batch = cfg.get_int("TEST.BATCH_SIZE_PER_GPU", s.test_batch);
  HR_CHECK(s.test_batch > 0, "[config] ", src, ": TEST.BATCH_SIZE_PER_GPU must be positive");
  s.label_smoothing = static_cast<float>(cfg.get_float("ENGINE.LABEL_SMOOTHING", 0.0));
  HR_CHECK(s.label_smoothing >= 0 && s.label_smoothing < 1, "[config] ", src,
           ": ENGINE.LABEL_SMOOTHING must be in [0, 1)");
  s.fast_decode = cfg.get_bool("ENGINE.FAST_DECODE", s.fast_decode);
  s.crop_scale_min = cfg.get_float("ENGINE.CROP_SCALE_MIN", s.crop_scale_min);
  HR_CHECK(s.crop_scale_min > 0 && s.crop_scale_min <= 1, "[config] ", src,
           ": ENGINE.CROP_SCALE_MIN must be in (0, 1]");
  s.skip_corrupt = cfg.get_bool("ENGINE.SKIP_CORRUPT", s.skip_corrupt);
  s.max_val_images = cfg.get_int("ENGINE.MAX_VAL_IMAGES", 0);
  return s;
}

namespace {
data::ImageSet images_of(const std::string& root, const std::string& set, const std::string& list) {
  return list.empty() ? data::scan_image_folder((fs::path(root) / set).string())
                      : data::read_image_list(list, root);
}
}  // namespace

data::ImageSet ClsSettings::train_images() const { return images_of(root, train_set, train_list); }

data::ImageSet ClsSettings::val_images() const {
  data::ImageSet s = images_of(root, test_set, test_list);
  if (max_val_images > 0 && static_cast<int64_t>(s.images.size()) > max_val_images) {
    // an even share of every class: the first images of each, in turn
    std::vector<std::vector<data::LabelledImage>> by(s.classes.size());
    for (auto& im : s.images) by[static_cast<size_t>(im.label)].push_back(im);
    s.images.clear();
    for (size_t k = 0; static_cast<int64_t>(s.images.size()) < max_val_images; ++k)
      for (auto& c : by)
        if (k < c.size() && static_cast<int64_t>(s.images.size()) < max_val_images)
          s.images.push_back(c[k]);
  }
  return s;
}

TopK top_classes(const float* logits, int64_t classes, int k) {
  std::vector<int64_t> idx(static_cast<size_t>(classes));
  std::iota(idx.begin(), idx.end(), 0);
  const int kk = static_cast<int>(std::min<int64_t>(k, classes));
  std::partial_sort(idx.begin(), idx.begin() + kk, idx.end(),
                    [&](int64_t a, int64_t b) { return logits[a] > logits[b]; });
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t c = 0; c < classes; ++c) mx = std::max(mx, logits[c]);
  double z = 0;
  for (int64_t c = 0; c < classes; ++c) z += std::exp(double(logits[c]) - mx);
  TopK r;
  for (int i = 0; i < kk; ++i)
    r.emplace_back(idx[i], static_cast<float>(std::exp(double(logits[idx[i]]) - mx) / z));
  return r;
}

ClsEval evaluate_classifier(models::HRNet& model, const data::ClassificationDataset& val,
                            int64_t batch, const RunOptions& run) {
  ProgressBar clock("", 0, "img", nullptr);
  data::LoaderOptions lo;
  lo.batch_size = static_cast<int>(batch);
  lo.shuffle = false;
  lo.drop_last = false;
  lo.workers = run.workers;
  // a data-parallel job: this rank's contiguous part of the images; the counts summed and the
  // predictions gathered after
  const auto [begin, end] = shard_range(val.size(), run);
  const data::DatasetRange part(val, begin, end);
  data::DataLoader loader(part, lo);
  loader.start_epoch(0);
  model.eval();
  InferenceMode no_grad;
  graph::InferenceRunner graph_forward(
      [&model](const Tensor& x) { return model.forward_all(x); }, run.device, run.autocast);
  const int64_t C = static_cast<int64_t>(val.set().classes.size());
  ClsEval r;
  r.predictions.resize(val.size());
  std::vector<int64_t> right(static_cast<size_t>(C), 0), seen(static_cast<size_t>(C), 0);
  std::unique_ptr<ProgressBar> bar;
  if (run.progress) bar = std::make_unique<ProgressBar>("eval", int64_t(part.size()), "img");
  double loss_sum = 0;
  int64_t top1 = 0, top5 = 0;
  data::Batch b;
  while (loader.next(b)) {
    stop_point(run);
    r.skipped += b.skipped;
    if (b.size() == 0) continue;
    Tensor y;
    if (run.graph) {
      y = graph_forward(b.input())[0];
    } else {
      AutocastGuard ac(run.autocast);
      y = model(b.input().to(run.device));
    }
    Tensor logits = Tensor::empty(y.shape());  // f32 on the host (graph outputs are reused)
    logits.copy_(y);
    HR_CHECK(logits.dim() == 2 && logits.size(1) == C, "classification: the model's output ",
             shape_str(logits.shape()), " does not fit the ", C, " classes of the data");
    const int64_t* labels = b["label"].data<int64_t>();
    const auto k = data::topk_correct(logits.data<float>(), labels, b.size(), C);
    top1 += k[0];
    top5 += k[1];
    for (int64_t i = 0; i < b.size(); ++i) {
      const float* row = logits.data<float>() + i * C;
      const int64_t l = labels[i];
      TopK t = top_classes(row, C, 5);
      // -log softmax(row)[l]
      const float mx = *std::max_element(row, row + C);
      double z = 0;
      for (int64_t c = 0; c < C; ++c) z += std::exp(double(row[c]) - mx);
      loss_sum += std::log(z) + mx - row[l];
      r.predictions[begin + b.indices[static_cast<size_t>(i)]] = t;
      ++seen[static_cast<size_t>(l)];
      right[static_cast<size_t>(l)] += t[0].first == l;
    }
    if (bar) bar->update(b.size() + b.skipped);
  }
  if (bar) bar->finish();
  if (run.shard_count > 1) {
    // counts as doubles (exact below 2^53)
    std::vector<double> n{double(top1), double(top5), loss_sum, double(r.skipped)};
    for (int64_t c = 0; c < C; ++c) {
      n.push_back(double(seen[static_cast<size_t>(c)]));
      n.push_back(double(right[static_cast<size_t>(c)]));
    }
    dist::all_reduce_sum(n.data(), static_cast<int64_t>(n.size()), "the evaluation's counts");
    top1 = static_cast<int64_t>(n[0]);
    top5 = static_cast<int64_t>(n[1]);
    loss_sum = n[2];
    r.skipped = static_cast<int>(n[3]);
    for (int64_t c = 0; c < C; ++c) {
      seen[static_cast<size_t>(c)] = static_cast<int64_t>(n[4 + 2 * static_cast<size_t>(c)]);
      right[static_cast<size_t>(c)] = static_cast<int64_t>(n[5 + 2 * static_cast<size_t>(c)]);
    }
    struct Top5 {  // one image's predictions, fixed-size for the gather
      int64_t image, k, cls[5];
      float p[5];
    };
    std::vector<Top5> mine;
    for (size_t i = begin; i < end; ++i) {
      const TopK& t = r.predictions[i];
      if (t.empty()) continue;
      Top5 x{};
      x.image = static_cast<int64_t>(i);
      x.k = static_cast<int64_t>(std::min<size_t>(5, t.size()));
      for (int64_t k = 0; k < x.k; ++k) {
        x.cls[k] = t[static_cast<size_t>(k)].first;
        x.p[k] = t[static_cast<size_t>(k)].second;
      }
      mine.push_back(x);
    }
    for (const Top5& x : gather_shards(mine, run)) {
      TopK& t = r.predictions[static_cast<size_t>(x.image)];
      t.clear();
      for (int64_t k = 0; k < x.k; ++k) t.emplace_back(x.cls[k], x.p[k]);
    }
  }
  r.images = std::accumulate(seen.begin(), seen.end(), int64_t(0));
  r.top1 = r.images ? double(top1) / r.images : 0;
  r.top5 = r.images ? double(top5) / r.images : 0;
  r.loss = r.images ? loss_sum / r.images : 0;
  for (int64_t c = 0; c < C; ++c)
    r.per_class.push_back(seen[c] ? double(right[c]) / seen[c]
                                  : std::numeric_limits<double>::quiet_NaN());
  r.seconds = clock.elapsed_s();
  return r;
}

// ---------------------------------------------------------------------------------------------
ClsTask::ClsTask(Config cfg) : Task(std::move(cfg)), cls_(ClsSettings::from_config(cfg_)) {}

const data::Dataset& ClsTask::train_data() {
  if (!train_) {
    data::ClassificationOptions o;
    o.size = cls_.size;
    o.train = true;
    o.fast_decode = cls_.fast_decode;
    o.min_scale = cls_.crop_scale_min;
    o.skip_corrupt = cls_.skip_corrupt;
    train_ = std::make_unique<data::ClassificationDataset>(cls_.train_images(), o);
    const int64_t model_classes = cfg_.get_int("MODEL.NUM_CLASSES", 1000);
    HR_CHECK(static_cast<int64_t>(train_->set().classes.size()) == model_classes,
             "classification: the training data has ", train_->set().classes.size(),
             " classes but MODEL.NUM_CLASSES is ", model_classes, " (", cfg_.source(), ")");
  }
  return *train_;
}

const data::ClassificationDataset& ClsTask::val_data() {
  if (!val_) {
    data::ClassificationOptions o;
    o.size = cls_.size;
    o.train = false;  // the official evaluation: full decode, Resize + CenterCrop
    o.skip_corrupt = cls_.skip_corrupt;
    val_ = std::make_unique<data::ClassificationDataset>(cls_.val_images(), o);
  }
  return *val_;
}

std::string ClsTask::describe_data() {
  const auto& t = static_cast<const data::ClassificationDataset&>(train_data());
  return str_cat(t.size(), " training images in ", t.set().classes.size(), " classes, ",
                 val_data().size(), " validation images");
}

Tensor ClsTask::loss(const std::vector<Tensor>& outputs,
                     const std::map<std::string, Tensor>& targets) const {
  return ops::cross_entropy(outputs[0], targets.at("label"), -100, cls_.label_smoothing);
}

EvalSummary ClsTask::evaluate(models::HRNet& model, const RunOptions& run) {
  last_ = evaluate_classifier(model, val_data(), cls_.test_batch, run);
  EvalSummary e;
  e.score_name = "top1";
  e.score = last_.top1;
  e.metrics = {{"top1", last_.top1}, {"top5", last_.top5}, {"val_loss", last_.loss}};
  e.table = str_cat("top-1 ", 100 * last_.top1, "%, top-5 ", 100 * last_.top5, "% on ",
                    last_.images, " images (", last_.skipped, " unreadable skipped)\n");
  const auto& names = val_data().set().classes;
  for (size_t c = 0; c < last_.per_class.size() && c < 20; ++c)
    e.table += str_cat("  ", names[c], ": ", 100 * last_.per_class[c], "%\n");
  if (last_.per_class.size() > 20) e.table += str_cat("  (", last_.per_class.size() - 20, " more classes)\n");
  e.count = last_.images;
  e.skipped = last_.skipped;
  e.seconds = last_.seconds;
  return e;
}

void ClsTask::save_outputs(const std::string& dir) {
  const data::ClassificationDataset& val = val_data();
  const auto& names = val.set().classes;
  std::string j = "{\"top1\": " + str_cat(last_.top1) + ", \"top5\": " + str_cat(last_.top5) +
                  ",\n \"per_class\": {";
  for (size_t c = 0; c < names.size(); ++c)
    j += str_cat(c ? ", " : "", json_quote(names[c]), ": ",
                 std::isfinite(last_.per_class[c]) ? str_cat(last_.per_class[c]) : "null");
  j += "},\n \"predictions\": [";
  bool first = true;
  for (size_t i = 0; i < val.size(); ++i) {
    const TopK& t = last_.predictions[i];
    if (t.empty()) continue;
    j += str_cat(first ? "\n  " : ",\n  ", "{\"image\": ", json_quote(val.set().images[i].path),
                 ", \"label\": ", val.set().images[i].label, ", \"top5\": [");
    for (size_t k = 0; k < t.size(); ++k)
      j += str_cat(k ? ", " : "", "[", t[k].first, ", ", t[k].second, "]");
    j += "]}";
    first = false;
  }
  j += "\n ]}\n";
  const std::string res = dir + "/results/predictions_" + cls_.test_set + ".json";
  write_file_atomic(res, j.data(), j.size(), "cannot write " + res);

  // a picture: up to 16 validation images, each framed green (right) or red (wrong)
  const int tile = 128, cols = 4;
  std::vector<size_t> shown;
  for (size_t i = 0; i < val.size() && shown.size() < 16; i += std::max<size_t>(1, val.size() / 16))
    if (!last_.predictions[i].empty()) shown.push_back(i);
  if (shown.empty()) return;
  const int rows = (static_cast<int>(shown.size()) + cols - 1) / cols;
  data::Image grid(cols * tile, rows * tile, 3, 0);
  for (size_t t = 0; t < shown.size(); ++t) {
    data::Image img;
    try {
      img = data::read_image(val.set().images[shown[t]].path);
    } catch (const Error&) {
      continue;  // a picture is best effort
    }
    const data::Image small = data::resize_bilinear_pil(img, tile - 8, tile - 8);
    const int ox = static_cast<int>(t % cols) * tile, oy = static_cast<int>(t / cols) * tile;
    const bool ok = last_.predictions[shown[t]][0].first == val.set().images[shown[t]].label;
    data::fill_rect(grid, float(ox), float(oy), float(ox + tile - 1), float(oy + tile - 1),
                    ok ? data::RGB{40, 200, 60} : data::RGB{220, 40, 40});
    for (int y = 0; y < small.height; ++y)
      std::copy(small.row(y), small.row(y) + size_t(small.width) * 3,
                grid.row(oy + 4 + y) + size_t(ox + 4) * 3);
  }
  data::write_image(grid, dir + "/predictions.png");
}

}  // namespace hr::tasks
