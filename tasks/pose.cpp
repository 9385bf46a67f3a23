#include "tasks/pose.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "data/draw.h"
#include "data/image.h"
#include "data/loader.h"
#include "engine/autograd.h"
#include "engine/checkpoint.h"
#include "engine/graph.h"
#include "engine/ops.h"
#include "engine/progress.h"

namespace hr::tasks {

namespace fs = std::filesystem;
using models::Config;

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

PoseSettings PoseSettings::from_config(const Config& cfg) {
  PoseSettings s;
  s.root = cfg.get_str("DATASET.ROOT");
  s.train_set = cfg.get_str("DATASET.TRAIN_SET");
  s.test_set = cfg.get_str("DATASET.TEST_SET");
  const auto image_size = cfg.get_int_list("MODEL.IMAGE_SIZE");  // [W, H]
  const auto heatmap = cfg.get_int_list("MODEL.HEATMAP_SIZE");   // [W, H]
  HR_CHECK(image_size.size() == 2 && heatmap.size() == 2, "[config] ", cfg.source(),
           ": MODEL.IMAGE_SIZE and MODEL.HEATMAP_SIZE must be [width, height]");
  HR_CHECK(image_size[0] > 0 && image_size[1] > 0 && heatmap[0] > 0 && heatmap[1] > 0, "[config] ",
           cfg.source(), ": MODEL.IMAGE_SIZE and MODEL.HEATMAP_SIZE must be positive");
  HR_CHECK(cfg.get_str("MODEL.TARGET_TYPE") == "gaussian", "[config] ", cfg.source(),
           ": MODEL.TARGET_TYPE ", cfg.get_str("MODEL.TARGET_TYPE"),
           " is not supported (gaussian)");
  HR_CHECK(cfg.get_int("MODEL.NUM_JOINTS") == data::kNumJoints, "[config] ", cfg.source(),
           ": MODEL.NUM_JOINTS must be 17 for COCO keypoints");
  s.target.image_w = static_cast<int>(image_size[0]);
  s.target.image_h = static_cast<int>(image_size[1]);
  s.target.heatmap_w = static_cast<int>(heatmap[0]);
  s.target.heatmap_h = static_cast<int>(heatmap[1]);
  s.target.sigma = static_cast<float>(cfg.get_float("MODEL.SIGMA"));
  s.target.use_target_weight = cfg.get_bool("LOSS.USE_TARGET_WEIGHT");
  s.aug.flip = cfg.get_bool("DATASET.FLIP");
  s.aug.scale_factor = static_cast<float>(cfg.get_float("DATASET.SCALE_FACTOR"));
  s.aug.rot_factor = static_cast<float>(cfg.get_float("DATASET.ROT_FACTOR"));
  s.aug.half_body_prob = static_cast<float>(cfg.get_float("DATASET.PROB_HALF_BODY"));
  s.aug.num_joints_half_body = static_cast<int>(cfg.get_int("DATASET.NUM_JOINTS_HALF_BODY"));
  s.test_batch = cfg.get_int("TEST.BATCH_SIZE_PER_GPU");
  HR_CHECK(s.test_batch > 0, "[config] ", cfg.source(),
           ": TEST.BATCH_SIZE_PER_GPU must be positive");
  s.flip_test = cfg.get_bool("TEST.FLIP_TEST");
  s.post_process = cfg.get_bool("TEST.POST_PROCESS");
  s.shift_heatmap = cfg.get_bool("TEST.SHIFT_HEATMAP");
  s.use_gt_bbox = cfg.get_bool("TEST.USE_GT_BBOX");
  s.bbox_file = cfg.get_str("TEST.COCO_BBOX_FILE");
  s.image_thre = static_cast<float>(cfg.get_float("TEST.IMAGE_THRE"));
  s.in_vis_thre = static_cast<float>(cfg.get_float("TEST.IN_VIS_THRE"));
  s.oks_thre = static_cast<float>(cfg.get_float("TEST.OKS_THRE"));
  s.model_file = cfg.get_str("TEST.MODEL_FILE");
  s.skip_corrupt = cfg.get_bool("ENGINE.SKIP_CORRUPT");
  s.max_val_images = cfg.get_int("ENGINE.MAX_VAL_IMAGES");
  return s;
}

std::string PoseSettings::annotation_file(const std::string& set) const {
  return (fs::path(root) / "annotations" / ("person_keypoints_" + set + ".json")).string();
}

std::string PoseSettings::image_dir(const std::string& set) const {
  return (fs::path(root) / "images" / set).string();
}

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

namespace {

void require_dir(const std::string& dir, const std::string& what) {
  std::error_code ec;
  HR_CHECK(fs::is_directory(dir, ec), "pose data: ", what, " directory ", dir, " does not exist");
}

float aspect_ratio(const PoseSettings& s) {
  return static_cast<float>(s.target.image_w) / static_cast<float>(s.target.image_h);
}

}  // namespace

PoseData load_train_data(const PoseSettings& s) {
  PoseData d;
  d.coco = data::load_coco_keypoints(s.annotation_file(s.train_set));
  d.image_dir = s.image_dir(s.train_set);
  require_dir(d.image_dir, "image");
  d.records = data::gt_records(d.coco, d.image_dir, aspect_ratio(s));
  HR_CHECK(!d.records.empty(), "pose data: ", s.annotation_file(s.train_set),
           " has no person with keypoints (empty split)");
  return d;
}

PoseData load_eval_data(const PoseSettings& s) {
  PoseData d;
  d.coco = data::load_coco_keypoints(s.annotation_file(s.test_set));
  d.image_dir = s.image_dir(s.test_set);
  require_dir(d.image_dir, "image");
  if (s.max_val_images > 0 && static_cast<int64_t>(d.coco.images.size()) > s.max_val_images) {
    // keep the first N images and their annotations: a quick look at a large split
    d.coco.images.resize(static_cast<size_t>(s.max_val_images));
    std::unordered_map<int64_t, bool> keep;
    for (const auto& im : d.coco.images) keep[im.id] = true;
    std::vector<data::CocoPersonAnn> anns;
    for (const auto& a : d.coco.annotations)
      if (keep.count(a.image_id)) anns.push_back(a);
    d.coco.annotations = std::move(anns);
    d.coco.index();
  }
  if (s.use_gt_bbox) {
    d.records = data::gt_records(d.coco, d.image_dir, aspect_ratio(s));
  } else {
    HR_CHECK(!s.bbox_file.empty(),
             "pose data: TEST.USE_GT_BBOX is false but TEST.COCO_BBOX_FILE is empty");
    d.records = data::detection_records(data::load_detections(s.bbox_file), d.coco, d.image_dir,
                                        aspect_ratio(s), s.image_thre);
  }
  HR_CHECK(!d.records.empty(), "pose data: nothing to evaluate in ",
           s.use_gt_bbox ? s.annotation_file(s.test_set) : s.bbox_file, " (empty split)");
  return d;
}

data::PoseDatasetOptions train_dataset_options(const PoseSettings& s) {
  data::PoseDatasetOptions o;
  o.aug = s.aug;
  o.aug.enabled = true;
  o.target = s.target;
  o.skip_corrupt = s.skip_corrupt;
  return o;
}

data::PoseDatasetOptions eval_dataset_options(const PoseSettings& s) {
  data::PoseDatasetOptions o = train_dataset_options(s);
  o.aug.enabled = false;
  return o;
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

EvalOptions eval_options(const PoseSettings& s, const RunOptions& run) {
  EvalOptions o;
  o.flip_test = s.flip_test;
  o.shift_heatmap = s.shift_heatmap;
  o.in_vis_thre = s.in_vis_thre;
  o.oks_thre = s.oks_thre;
  o.batch = s.test_batch;
  o.run = run;
  return o;
}

std::vector<data::PersonPrediction> predict_crops(const HeatmapForward& heatmaps,
                                                  const Tensor& input,
                                                  const std::vector<const data::PoseRecord*>& recs,
                                                  const data::TargetParams& tp,
                                                  const EvalOptions& o) {
  const int J = data::kNumJoints;
  Tensor heat = heatmaps(input);
  HR_CHECK(heat.size(1) == J && heat.size(2) == tp.heatmap_h && heat.size(3) == tp.heatmap_w,
           "evaluate: the model's output ", shape_str(heat.shape()),
           " does not match MODEL.HEATMAP_SIZE / NUM_JOINTS");
  const int64_t n = input.size(0), h = heat.size(2), w = heat.size(3);
  HR_CHECK(static_cast<int64_t>(recs.size()) == n, "predict_crops: ", recs.size(),
           " records for ", n, " crops");
  const int64_t plane = J * h * w;
  float* hm = heat.data<float>();
  if (o.flip_test) {
    const int64_t in_plane = 3 * int64_t(tp.image_h) * tp.image_w;
    Tensor xin = Tensor::empty(input.shape());
    for (int64_t i = 0; i < n; ++i)
      data::flip_input(input.data<float>() + i * in_plane, 3, tp.image_h, tp.image_w,
                       xin.data<float>() + i * in_plane);
    Tensor hf = heatmaps(xin);
    float* f = hf.data<float>();
    for (int64_t i = 0; i < n; ++i) {
      float* fi = f + i * plane;
      data::flip_back_heatmaps(fi, J, static_cast<int>(h), static_cast<int>(w), o.shift_heatmap);
      float* hi = hm + i * plane;
      for (int64_t k = 0; k < plane; ++k) hi[k] = 0.5f * (hi[k] + fi[k]);
    }
  }
  std::vector<data::PersonPrediction> preds;
  for (int64_t i = 0; i < n; ++i) {
    const data::PoseRecord& rec = *recs[static_cast<size_t>(i)];
    data::PersonPrediction p;
    p.image_id = rec.image_id;
    p.box_score = rec.score;
    p.area = rec.scale[0] * rec.scale[1] * data::kPixelStd * data::kPixelStd;
    data::decode_heatmaps(hm + i * plane, J, static_cast<int>(h), static_cast<int>(w), rec.center,
                          rec.scale, p.keypoints.data());
    preds.push_back(p);
  }
  return preds;
}

std::vector<data::PersonPrediction> predict(models::HRNet& model, const data::PoseDataset& ds,
                                            const EvalOptions& o, int* skipped) {
  data::LoaderOptions lo;
  lo.batch_size = static_cast<int>(o.batch);
  lo.shuffle = false;
  lo.drop_last = false;
  lo.workers = o.run.workers;
  data::DataLoader loader(ds, lo);
  loader.start_epoch(0);
  model.eval();
  InferenceMode no_grad;
  // the compiled inference graph (batch norm folded, one arena), or the eager forward
  const RunOptions& r = o.run;
  graph::InferenceRunner graph_forward(
      [&model](const Tensor& x) { return model.forward_all(x); }, r.device, r.autocast);
  auto heatmaps = [&](const Tensor& x) {
    Tensor y;
    if (r.graph) {
      y = graph_forward(x)[0];
    } else {
      AutocastGuard ac(r.autocast);
      y = model(x.to(r.device));
    }
    Tensor host = Tensor::empty(y.shape());  // f32, contiguous, a copy (graph outputs are reused)
    host.copy_(y);
    return host;
  };
  std::vector<data::PersonPrediction> preds;
  preds.reserve(ds.size());
  std::unique_ptr<ProgressBar> bar;
  if (r.progress)
    bar = std::make_unique<ProgressBar>("eval", static_cast<int64_t>(ds.size()), "img");
  int skip = 0;
  data::Batch b;
  std::vector<const data::PoseRecord*> recs;
  while (loader.next(b)) {
    stop_point(r);
    skip += b.skipped;
    if (b.size() == 0) continue;
    recs.clear();
    for (size_t i = 0; i < b.indices.size(); ++i) recs.push_back(&ds.record(b.indices[i]));
    for (const data::PersonPrediction& p : predict_crops(heatmaps, b.input(), recs,
                                                          ds.options().target, o))
      preds.push_back(p);
    const int64_t n = b.size();
    if (bar) bar->update(n + b.skipped);
  }
  if (bar) bar->finish();
  if (skipped) *skipped = skip;
  return preds;
}

EvalResult evaluate(models::HRNet& model, const PoseData& val, const data::PoseDatasetOptions& dopt,
                    const EvalOptions& o) {
  ProgressBar clock("", 0, "img", nullptr);
  // a data-parallel job: this rank's contiguous part of the people, the predictions gathered in
  // rank order (the one-process order, so the post-processing sees the same list)
  const auto [begin, end] = shard_range(val.records.size(), o.run);
  data::PoseDataset ds({val.records.begin() + long(begin), val.records.begin() + long(end)}, dopt);
  EvalResult r;
  auto preds = predict(model, ds, o, &r.skipped);
  if (o.run.shard_count > 1) preds = gather_shards(preds, o.run);
  r.skipped = static_cast<int>(sum_shards(r.skipped, o.run));
  r.people = static_cast<int64_t>(preds.size());
  r.results = data::rescore_and_nms(preds, o.in_vis_thre, o.oks_thre);
  r.metrics = data::evaluate_keypoints(val.coco, r.results);
  r.seconds = clock.elapsed_s();
  return r;
}

// ---------------------------------------------------------------------------------------------
// Pictures
// ---------------------------------------------------------------------------------------------

void save_prediction_grid(const data::CocoKeypoints& coco, const std::string& image_dir,
                          const std::vector<data::KeypointResult>& results, const std::string& path,
                          int max_images, float thr) {
  std::map<int64_t, std::vector<const data::KeypointResult*>> by_image;
  for (const auto& r : results) by_image[r.image_id].push_back(&r);
  std::vector<data::Image> tiles;
  int tile_w = 0, tile_h = 0;
  for (const auto& im : coco.images) {
    if (static_cast<int>(tiles.size()) >= max_images) break;
    data::Image img;
    try {
      img = data::read_image((fs::path(image_dir) / im.file_name).string());
    } catch (const Error&) {
      continue;  // a picture is best effort: an unreadable image is left out
    }
    auto it = by_image.find(im.id);
    if (it != by_image.end())
      for (const auto* r : it->second)
        if (r->score > thr)
          data::draw_skeleton(img, r->keypoints.data(), data::kNumJoints, thr, 2.f);
    tile_w = std::max(tile_w, img.width);
    tile_h = std::max(tile_h, img.height);
    tiles.push_back(std::move(img));
  }
  HR_CHECK(!tiles.empty(), "prediction picture: no readable image in ", image_dir);
  const int cols = std::min<int>(4, static_cast<int>(tiles.size()));
  const int rows = (static_cast<int>(tiles.size()) + cols - 1) / cols;
  data::Image grid(cols * tile_w, rows * tile_h, 3, 0);
  for (size_t t = 0; t < tiles.size(); ++t) {
    const int ox = static_cast<int>(t % cols) * tile_w, oy = static_cast<int>(t / cols) * tile_h;
    const data::Image& img = tiles[t];
    for (int y = 0; y < img.height; ++y)
      std::copy(img.row(y), img.row(y) + size_t(img.width) * 3, grid.row(oy + y) + size_t(ox) * 3);
  }
  data::write_image(grid, path);
}

// ---------------------------------------------------------------------------------------------
// The task
// ---------------------------------------------------------------------------------------------
PoseTask::PoseTask(Config cfg) : Task(std::move(cfg)), pose_(PoseSettings::from_config(cfg_)) {}

const data::Dataset& PoseTask::train_data() {
  if (!train_ds_) {
    train_ = std::make_unique<PoseData>(load_train_data(pose_));
    train_ds_ = std::make_unique<data::PoseDataset>(train_->records, train_dataset_options(pose_));
  }
  return *train_ds_;
}

const PoseData& PoseTask::val_data() {
  if (!val_) val_ = std::make_unique<PoseData>(load_eval_data(pose_));
  return *val_;
}

std::string PoseTask::describe_data() {
  train_data();
  const PoseData& val = val_data();
  return str_cat(train_->records.size(), " training people in ", train_->coco.images.size(),
                 " images, ", val.records.size(), " val people in ", val.coco.images.size(),
                 " images");
}

Tensor PoseTask::loss(const std::vector<Tensor>& outputs,
                      const std::map<std::string, Tensor>& targets) const {
  return ops::heatmap_loss(outputs[0], targets.at("target"), targets.at("weight"));
}

EvalSummary PoseTask::evaluate(models::HRNet& model, const RunOptions& run) {
  last_ = tasks::evaluate(model, val_data(), eval_dataset_options(pose_), eval_options(pose_, run));
  static const char* keys[10] = {"AP", "AP50", "AP75", "APm", "APl",
                                 "AR", "AR50", "AR75", "ARm", "ARl"};
  EvalSummary e;
  e.score_name = "AP";
  e.score = last_.metrics.ap();
  for (int i = 0; i < 10; ++i) e.metrics.emplace_back(keys[i], last_.metrics.stats[i]);
  e.table = last_.metrics.table();
  e.count = last_.people;
  e.skipped = last_.skipped;
  e.seconds = last_.seconds;
  return e;
}

std::string PoseTask::score_results(const std::string& path) {
  const data::CocoKeypoints gt = data::load_coco_keypoints(pose_.annotation_file(pose_.test_set));
  return data::evaluate_keypoints(gt, data::load_keypoint_results(path)).table();
}

void PoseTask::save_outputs(const std::string& dir) {
  const PoseData& val = val_data();
  data::save_keypoint_results(last_.results,
                              dir + "/results/keypoints_" + pose_.test_set + "_results.json");
  save_prediction_grid(val.coco, val.image_dir, last_.results, dir + "/predictions.png");
}

}  // namespace hr::tasks
