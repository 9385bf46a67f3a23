#include "tasks/detection.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "data/coco_eval.h"
#include "engine/file_util.h"
#include "engine/graph.h"
#include "engine/ops.h"
#include "engine/progress.h"

namespace hr::tasks {

namespace fs = std::filesystem;
using models::Config;

// paths_catalog.py's COCO entries, with DATASET.ROOT standing for its DATA_DIR/coco
DetSplit det_split(const std::string& root, const std::string& name, const std::string& source) {
  struct Entry {
    const char *name, *images, *annotations;
  };
  static const Entry kCatalog[] = {
      {"coco_2017_train", "train2017", "instances_train2017.json"},
      {"coco_2017_val", "val2017", "instances_val2017.json"},
      {"coco_2014_train", "train2014", "instances_train2014.json"},
      {"coco_2014_val", "val2014", "instances_val2014.json"},
      {"coco_2014_minival", "val2014", "instances_minival2014.json"},
      {"coco_2014_valminusminival", "val2014", "instances_valminusminival2014.json"},
  };
  std::string known;
  for (const Entry& e : kCatalog) {
    if (name == e.name)
      return {name, (fs::path(root) / e.images).string(),
              (fs::path(root) / "annotations" / e.annotations).string()};
    known += (known.empty() ? "" : ", ") + std::string(e.name);
  }
  throw Error(str_cat("[config] ", source, ": unknown dataset '", name, "' in DATASETS (known: ",
                      known, ")"));
}

DetSettings DetSettings::from_config(const Config& cfg) {
  DetSettings s;
  const std::string& src = cfg.source();
  s.root = cfg.get_str("DATASET.ROOT", "");
  for (const auto& n : cfg.get_str_list("DATASETS.TRAIN")) s.train.push_back(det_split(s.root, n, src));
  for (const auto& n : cfg.get_str_list("DATASETS.TEST")) s.test.push_back(det_split(s.root, n, src));

  auto ints = [&](const std::string& key) {
    std::vector<int> v;
    for (int64_t x : cfg.get_int_list(key)) {
      HR_CHECK(x >= -1 && x <= 100000, "[config] ", src, ": ", key, " holds ", x,
               ", not an image size");
      v.push_back(static_cast<int>(x));
    }
    return v;
  };
  auto size = [&](const std::string& key) {
    const int64_t v = cfg.get_int(key);
    HR_CHECK(v > 0 && v <= 100000, "[config] ", src, ": ", key, " must be in 1..100000, got ", v);
    return static_cast<int>(v);
  };
  const std::vector<int> range = ints("INPUT.MIN_SIZE_RANGE_TRAIN");
  HR_CHECK(range.size() == 2, "[config] ", src, ": INPUT.MIN_SIZE_RANGE_TRAIN must have two "
           "elements (lower bound, upper bound)");
  try {
    s.train_transform = data::det_train_transform(
        data::det_train_min_sizes(ints("INPUT.MIN_SIZE_TRAIN"), {range[0], range[1]}),
        size("INPUT.MAX_SIZE_TRAIN"));
    s.test_transform =
        data::det_test_transform(size("INPUT.MIN_SIZE_TEST"), size("INPUT.MAX_SIZE_TEST"));
    for (data::DetTransformOptions* t : {&s.train_transform, &s.test_transform}) {
      const int64_t div = cfg.get_int("DATALOADER.SIZE_DIVISIBILITY");
      HR_CHECK(div >= 0 && div <= 1024, "DATALOADER.SIZE_DIVISIBILITY must be in 0..1024, got ",
               div);
      t->size_divisibility = static_cast<int>(div);
      const auto mean = cfg.get_float_list("INPUT.PIXEL_MEAN");
      const auto sd = cfg.get_float_list("INPUT.PIXEL_STD");
      HR_CHECK(mean.size() == 3 && sd.size() == 3,
               "INPUT.PIXEL_MEAN and INPUT.PIXEL_STD must have 3 values each");
      for (int c = 0; c < 3; ++c) {
        t->pixel_mean[c] = static_cast<float>(mean[c]);
        t->pixel_std[c] = static_cast<float>(sd[c]);
      }
      t->to_bgr255 = cfg.get_bool("INPUT.TO_BGR255");
      data::check_det_transform(*t);
    }
  } catch (const Error& e) {
    const std::string m = e.what();
    throw Error(m.rfind("[config]", 0) == 0 ? m : str_cat("[config] ", src, ": ", m));
  }

  // the training canvas: the largest resized image in either orientation, or ENGINE.DET_CANVAS
  const int div = std::max(1, s.train_transform.size_divisibility);
  auto up = [div](int v) { return (v + div - 1) / div * div; };
  const auto canvas = cfg.get_int_list("ENGINE.DET_CANVAS");
  HR_CHECK(canvas.size() == 2, "[config] ", src, ": ENGINE.DET_CANVAS must be [W, H]");
  if (canvas[0] > 0 || canvas[1] > 0) {
    HR_CHECK(canvas[0] > 0 && canvas[1] > 0 && canvas[0] <= 100000 && canvas[1] <= 100000,
             "[config] ", src, ": ENGINE.DET_CANVAS must be [W, H] with sizes in 1..100000");
    s.canvas_w = up(static_cast<int>(canvas[0]));
    s.canvas_h = up(static_cast<int>(canvas[1]));
  } else {
    const int largest_min =
        *std::max_element(s.train_transform.min_sizes.begin(), s.train_transform.min_sizes.end());
    const int side = up(std::max(largest_min, s.train_transform.max_size));
    s.canvas_h = s.canvas_w = side;
  }

  const models::CfgNode& ta = cfg.at("MODEL.FCOS.TARGET_ASSIGN");
  HR_CHECK(ta.kind == models::CfgNode::Kind::List, "[config] ", src,
           ": MODEL.FCOS.TARGET_ASSIGN must be a list of [min, max] pairs");
  for (const auto& row : ta.items) {
    HR_CHECK(row.kind == models::CfgNode::Kind::List && row.items.size() == 2, "[config] ", src,
             ": MODEL.FCOS.TARGET_ASSIGN must be a list of [min, max] pairs, got ", ta.str());
    std::array<double, 2> r{};
    for (int k = 0; k < 2; ++k) {
      const auto& v = row.items[k];
      HR_CHECK(v.kind == models::CfgNode::Kind::Int || v.kind == models::CfgNode::Kind::Float,
               "[config] ", src, ": MODEL.FCOS.TARGET_ASSIGN holds ", v.str(), ", not a number");
      r[k] = v.kind == models::CfgNode::Kind::Int ? double(v.i) : v.f;
    }
    HR_CHECK(r[0] <= r[1], "[config] ", src, ": MODEL.FCOS.TARGET_ASSIGN range ", row.str(),
             " is empty");
    s.target_assign.push_back(r);
  }
  const size_t levels = cfg.get_int_list("MODEL.FCOS.FPN_STRIDES").size();
  HR_CHECK(s.target_assign.size() == levels, "[config] ", src, ": MODEL.FCOS.TARGET_ASSIGN has ",
           s.target_assign.size(), " ranges but FPN_STRIDES ", levels, " levels");
  s.gamma = static_cast<float>(cfg.get_float("MODEL.FCOS.LOSS_GAMMA"));
  s.alpha = static_cast<float>(cfg.get_float("MODEL.FCOS.LOSS_ALPHA"));
  HR_CHECK(s.gamma >= 0 && s.alpha >= 0 && s.alpha <= 1, "[config] ", src,
           ": MODEL.FCOS.LOSS_GAMMA must be >= 0 and LOSS_ALPHA in [0, 1]");
  data::FcosPostprocessOptions& p = s.postprocess;
  p.pre_nms_thresh = static_cast<float>(cfg.get_float("MODEL.FCOS.INFERENCE_TH"));
  p.pre_nms_top_n = cfg.get_int("MODEL.FCOS.PRE_NMS_TOP_N");
  p.nms_thresh = static_cast<float>(cfg.get_float("MODEL.FCOS.NMS_TH"));
  p.detections_per_img = cfg.get_int("TEST.DETECTIONS_PER_IMG");
  p.num_classes = cfg.get_int("MODEL.FCOS.NUM_CLASSES");
  HR_CHECK(p.pre_nms_top_n > 0 && p.nms_thresh >= 0 && p.nms_thresh <= 1, "[config] ", src,
           ": MODEL.FCOS.PRE_NMS_TOP_N must be positive and NMS_TH in [0, 1]");
  s.skip_corrupt = cfg.get_bool("ENGINE.SKIP_CORRUPT", s.skip_corrupt);
  return s;
}

std::vector<data::FcosLevel> DetSettings::levels(const models::ModelSpec& spec, int64_t h,
                                                 int64_t w) const {
  const auto sizes = models::det_level_sizes(spec, h, w);
  HR_CHECK(sizes.size() == target_assign.size(), "detection: the model has ", sizes.size(),
           " pyramid levels, MODEL.FCOS.TARGET_ASSIGN ", target_assign.size(), " ranges");
  std::vector<data::FcosLevel> lv;
  for (size_t l = 0; l < sizes.size(); ++l)
    lv.push_back({spec.det_stride(static_cast<int64_t>(l)), sizes[l][0], sizes[l][1],
                  target_assign[l][0], target_assign[l][1]});
  return lv;
}

std::vector<data::CocoCategory> det_label_categories(const DetSettings& s, int64_t num_classes) {
  std::vector<data::CocoCategory> out(static_cast<size_t>(num_classes + 1));
  std::error_code ec;
  if (!s.test.empty() && fs::exists(s.test[0].annotation_file, ec)) {
    const data::CocoInstances gt = data::load_coco_instances(s.test[0].annotation_file);
    HR_CHECK(static_cast<int64_t>(gt.category_of_label.size()) == num_classes + 1, "detection: ",
             s.test[0].annotation_file, " has ", gt.categories.size(), " categories, the model ",
             num_classes);
    for (const auto& c : gt.categories)
      out[static_cast<size_t>(gt.label_of_category.at(c.id))] = c;
    return out;
  }
  for (int64_t k = 1; k <= num_classes; ++k)
    out[static_cast<size_t>(k)] = {k, str_cat("class ", k), ""};
  return out;
}

std::vector<data::Detection> detect(const std::vector<Tensor>& outputs,
                                    const models::ModelSpec& spec, int64_t image_h,
                                    int64_t image_w, const data::FcosPostprocessOptions& o) {
  const size_t n = outputs.size() / 3;
  HR_CHECK(n * 3 == outputs.size() && n == static_cast<size_t>(spec.det_levels),
           "detection: expected 3 outputs per pyramid level, got ", outputs.size());
  std::vector<Tensor> host(outputs.size());
  std::vector<data::FcosLevel> levels;
  std::vector<const float*> cls, reg, ctr;
  for (size_t i = 0; i < outputs.size(); ++i) {
    host[i] = Tensor::empty(outputs[i].shape());  // f32 NCHW on the host
    host[i].copy_(outputs[i]);
    HR_CHECK(host[i].size(0) == 1, "detection: one image at a time, got a batch of ",
             host[i].size(0));
  }
  for (size_t l = 0; l < n; ++l) {
    levels.push_back({spec.det_stride(static_cast<int64_t>(l)), host[l].size(2), host[l].size(3)});
    cls.push_back(host[l].data<float>());
    reg.push_back(host[n + l].data<float>());
    ctr.push_back(host[2 * n + l].data<float>());
  }
  return data::fcos_postprocess(levels, cls, reg, ctr, image_h, image_w, o);
}

// ---------------------------------------------------------------------------------------------
Detector::Detector(models::HRNet& model, const DetSettings& settings, const RunOptions& run)
    : model_(model), det_(settings), run_(run) {
  HR_CHECK(model.spec().head == models::Head::Det, "detection: ", model.spec().name, " has the ",
           models::head_name(model.spec().head), " head, not the det head");
  if (run.graph)
    graph_ = std::make_unique<graph::InferenceRunner>(
        [&model](const Tensor& x) { return model.forward_all(x); }, run.device, run.autocast);
}

Detector::~Detector() = default;

std::vector<DetBox> Detector::operator()(const data::Image& rgb) {
  model_.eval();
  InferenceMode no_grad;
  const data::DetTestInput in = data::det_test_input(rgb, det_.test_transform);
  const Tensor x = Tensor::from_vector(in.input, {1, 3, in.padded_h, in.padded_w});
  model_.check_input(x.shape());
  std::vector<Tensor> ys;
  if (graph_) {
    ys = (*graph_)(x);
  } else {
    AutocastGuard ac(run_.autocast);
    ys = model_.forward_all(x.to(run_.device));
  }
  std::vector<DetBox> out;
  for (const data::Detection& d : detect(ys, model_.spec(), in.image_h, in.image_w, det_.postprocess))
    out.push_back({data::det_box_to_coco(d.box, in.image_w, in.image_h, in.orig_w, in.orig_h),
                   d.score, d.label});
  return out;
}

// ---------------------------------------------------------------------------------------------
DetTask::DetTask(Config cfg) : Task(std::move(cfg)), det_(DetSettings::from_config(cfg_)) {}

std::string DetTask::load_pretrained(models::HRNet& model) const {
  const std::string path = cfg_.get_str("MODEL.WEIGHT", "");
  if (path.empty()) return "";
  HR_CHECK(fs::exists(path), "MODEL.WEIGHT ", path,
           " does not exist (download it, or set MODEL.WEIGHT '')");
  const auto rep = models::load_pretrained_layers(model, path, model.spec().pretrained_layers);
  return str_cat("initialised from ", path, ": ", rep.summary());
}

const data::Dataset& DetTask::train_data() {
  if (!train_) {
    HR_CHECK(!det_.root.empty(), "[config] ", cfg_.source(),
             ": DATASET.ROOT is empty (the COCO folder: train2017/, val2017/, annotations/)");
    HR_CHECK(!det_.train.empty(), "[config] ", cfg_.source(), ": DATASETS.TRAIN is empty");
    std::vector<data::DetRecord> records;
    for (const DetSplit& s : det_.train) {
      const data::CocoInstances coco = data::load_coco_instances(s.annotation_file);
      auto r = data::det_records(coco, s.image_dir, true);
      records.insert(records.end(), std::make_move_iterator(r.begin()),
                     std::make_move_iterator(r.end()));
    }
    HR_CHECK(!records.empty(), "detection: the training sets (", det_.train[0].annotation_file,
             " ...) have no image with a usable annotation");
    data::DetDatasetOptions o;
    o.transform = det_.train_transform;
    o.canvas_h = det_.canvas_h;
    o.canvas_w = det_.canvas_w;
    o.levels = det_.levels(models::spec_from_config(cfg_), det_.canvas_h, det_.canvas_w);
    o.skip_corrupt = det_.skip_corrupt;
    train_ = std::make_unique<data::DetDataset>(std::move(records), std::move(o));
  }
  return *train_;
}

const data::CocoInstances& DetTask::test_annotations() {
  if (!test_gt_) {
    HR_CHECK(!det_.test.empty(), "[config] ", cfg_.source(), ": DATASETS.TEST is empty");
    test_gt_ = std::make_unique<data::CocoInstances>(
        data::load_coco_instances(det_.test[0].annotation_file));
  }
  return *test_gt_;
}

std::string DetTask::describe_data() {
  const auto& t = static_cast<const data::DetDataset&>(train_data());
  const auto& gt = test_annotations();
  return str_cat(t.size(), " training images (", det_.canvas_w, "x", det_.canvas_h,
                 " canvas), ", gt.images.size(), " test images (", det_.test[0].name, "), ",
                 gt.categories.size(), " categories");
}

Tensor DetTask::loss(const std::vector<Tensor>& outputs,
                     const std::map<std::string, Tensor>& targets) const {
  return models::fcos_loss(outputs, targets.at("labels"), targets.at("reg_targets"),
                           targets.at("centerness"), targets.at("positive"), det_.gamma,
                           det_.alpha);
}

EvalSummary DetTask::evaluate(models::HRNet& model, const RunOptions& run) {
  const data::CocoInstances& gt = test_annotations();
  const std::vector<data::DetRecord> records =
      data::det_records(gt, det_.test[0].image_dir, false);
  HR_CHECK(static_cast<int64_t>(gt.category_of_label.size()) == det_.postprocess.num_classes,
           "detection: ", det_.test[0].annotation_file, " has ", gt.categories.size(),
           " categories but MODEL.FCOS.NUM_CLASSES is ", det_.postprocess.num_classes,
           " (the categories and the background)");
  ProgressBar clock("", 0, "img", nullptr);
  Detector detector(model, det_, run);
  // a data-parallel job: this rank's contiguous part of the images, the detections gathered in
  // rank order (the one-process order) and the counts summed after
  const auto [begin, end] = shard_range(records.size(), run);
  std::unique_ptr<ProgressBar> bar;
  if (run.progress) bar = std::make_unique<ProgressBar>("eval", int64_t(end - begin), "img");
  last_results_.clear();
  int skipped = 0;
  int64_t images = 0;
  for (size_t i = begin; i < end; ++i) {
    stop_point(run);
    const data::DetRecord& r = records[i];
    data::Image rgb;
    try {
      rgb = data::read_det_image(r);
    } catch (const Error& e) {
      if (!det_.skip_corrupt) throw;
      std::fprintf(stderr, "hrnet: skipped: %s\n", e.what());
      ++skipped;
      if (bar) bar->update(1);
      continue;
    }
    for (const DetBox& d : detector(rgb)) {
      data::BoxResult b;
      b.image_id = r.image_id;
      b.category_id = gt.category_of_label.at(static_cast<size_t>(d.label));
      b.bbox = d.xywh;
      b.score = d.score;
      last_results_.push_back(b);
    }
    ++images;
    if (bar) bar->update(1);
  }
  if (bar) bar->finish();
  if (run.shard_count > 1) last_results_ = gather_shards(last_results_, run);
  images = sum_shards(images, run);
  skipped = static_cast<int>(sum_shards(skipped, run));
  const data::BoxMetrics m = data::evaluate_boxes(gt, last_results_);
  last_table_ = m.table();
  EvalSummary e;
  e.score_name = "AP";
  e.score = m.ap();
  const auto& names = data::BoxMetrics::names();
  for (size_t k = 0; k < names.size(); ++k) e.metrics.emplace_back(names[k], m.stats[k]);
  e.table = str_cat("box AP ", m.stats[0], ", AP50 ", m.stats[1], " on ", images, " images (",
                    last_results_.size(), " detections, ", skipped, " unreadable skipped)\n",
                    last_table_);
  e.count = images;
  e.skipped = skipped;
  e.seconds = clock.elapsed_s();
  return e;
}

void DetTask::save_outputs(const std::string& dir) {
  const std::string base = (fs::path(dir) / "results" / ("bbox_" + det_.test[0].name)).string();
  data::save_box_results(last_results_, base + "_results.json");
  write_file_atomic(base + ".txt", last_table_.data(), last_table_.size(),
                    "cannot write " + base + ".txt");
}

std::string DetTask::score_results(const std::string& path) {
  HR_CHECK(!det_.test.empty(), "[config] ", cfg_.source(), ": DATASETS.TEST is empty");
  return data::score_box_results(det_.test[0].annotation_file, path);
}

}  // namespace hr::tasks
