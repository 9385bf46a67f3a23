#include "tasks/pose.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "data/draw.h"
#include "data/image.h"
#include "engine/autograd.h"
#include "engine/checkpoint.h"
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
  s.train_batch = cfg.get_int("TRAIN.BATCH_SIZE_PER_GPU");
  s.test_batch = cfg.get_int("TEST.BATCH_SIZE_PER_GPU");
  HR_CHECK(s.train_batch > 0 && s.test_batch > 0, "[config] ", cfg.source(),
           ": TRAIN/TEST.BATCH_SIZE_PER_GPU must be positive");
  s.workers = static_cast<int>(cfg.get_int("WORKERS"));
  s.optimizer = cfg.get_str("TRAIN.OPTIMIZER");
  HR_CHECK(s.optimizer == "adam" || s.optimizer == "sgd", "[config] ", cfg.source(),
           ": TRAIN.OPTIMIZER must be adam or sgd, got ", s.optimizer);
  s.lr = cfg.get_float("TRAIN.LR");
  s.lr_factor = cfg.get_float("TRAIN.LR_FACTOR");
  s.momentum = cfg.get_float("TRAIN.MOMENTUM");
  s.wd = cfg.get_float("TRAIN.WD");
  s.nesterov = cfg.get_bool("TRAIN.NESTEROV");
  s.lr_step = cfg.get_int_list("TRAIN.LR_STEP");
  s.begin_epoch = cfg.get_int("TRAIN.BEGIN_EPOCH");
  s.end_epoch = cfg.get_int("TRAIN.END_EPOCH");
  HR_CHECK(s.end_epoch > s.begin_epoch && s.begin_epoch >= 0, "[config] ", cfg.source(),
           ": TRAIN.END_EPOCH must be greater than TRAIN.BEGIN_EPOCH >= 0");
  s.shuffle = cfg.get_bool("TRAIN.SHUFFLE");
  s.flip_test = cfg.get_bool("TEST.FLIP_TEST");
  s.post_process = cfg.get_bool("TEST.POST_PROCESS");
  s.shift_heatmap = cfg.get_bool("TEST.SHIFT_HEATMAP");
  s.use_gt_bbox = cfg.get_bool("TEST.USE_GT_BBOX");
  s.bbox_file = cfg.get_str("TEST.COCO_BBOX_FILE");
  s.image_thre = static_cast<float>(cfg.get_float("TEST.IMAGE_THRE"));
  s.in_vis_thre = static_cast<float>(cfg.get_float("TEST.IN_VIS_THRE"));
  s.oks_thre = static_cast<float>(cfg.get_float("TEST.OKS_THRE"));
  s.model_file = cfg.get_str("TEST.MODEL_FILE");
  s.pretrained = cfg.get_str("MODEL.PRETRAINED");
  s.init_weights = cfg.get_bool("MODEL.INIT_WEIGHTS");
  s.output_dir = cfg.get_str("OUTPUT_DIR");
  s.device = cfg.get_str("ENGINE.DEVICE");
  HR_CHECK(s.device == "cpu" || s.device == "cuda", "[config] ", cfg.source(),
           ": ENGINE.DEVICE must be cpu or cuda, got ", s.device);
  s.precision = cfg.get_str("ENGINE.PRECISION");
  HR_CHECK(s.precision == "fp32" || s.precision == "bf16" || s.precision == "fp16", "[config] ",
           cfg.source(), ": ENGINE.PRECISION must be fp32, bf16 or fp16, got ", s.precision);
  s.seed = static_cast<uint64_t>(cfg.get_int("ENGINE.SEED"));
  s.skip_corrupt = cfg.get_bool("ENGINE.SKIP_CORRUPT");
  s.eval_every = std::max<int64_t>(1, cfg.get_int("ENGINE.EVAL_EVERY"));
  s.max_val_images = cfg.get_int("ENGINE.MAX_VAL_IMAGES");
  s.threads = static_cast<int>(cfg.get_int("ENGINE.THREADS"));
  s.graph = cfg.get_bool("ENGINE.GRAPH");
  s.lr_schedule = cfg.get_str("ENGINE.LR_SCHEDULE");
  HR_CHECK(s.lr_schedule == "multistep" || s.lr_schedule == "cosine", "[config] ", cfg.source(),
           ": ENGINE.LR_SCHEDULE must be multistep or cosine, got '", s.lr_schedule, "'");
  return s;
}

std::string PoseSettings::annotation_file(const std::string& set) const {
  return (fs::path(root) / "annotations" / ("person_keypoints_" + set + ".json")).string();
}

std::string PoseSettings::image_dir(const std::string& set) const {
  return (fs::path(root) / "images" / set).string();
}

Device PoseSettings::engine_device() const {
  return device == "cuda" ? Device::cuda() : Device::cpu();
}

DType PoseSettings::autocast() const {
  if (device != "cuda") return DType::f32;
  return precision == "bf16" ? DType::bf16 : precision == "fp16" ? DType::f16 : DType::f32;
}

std::string experiment_output_dir(const Config& cfg, const std::string& cfg_path) {
  std::string out = cfg.get_str("OUTPUT_DIR");
  if (out.empty()) out = "output";
  return (fs::path(out) / cfg.get_str("DATASET.DATASET") / cfg.get_str("MODEL.NAME") /
          fs::path(cfg_path).stem())
      .string();
}

void make_output_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(fs::path(dir) / "results", ec);
  HR_CHECK(!ec && fs::is_directory(dir), "cannot create output directory ", dir, ": ",
           ec.message());
}

Config load_pose_config(const std::string& path, const std::vector<std::string>& overrides) {
  Config cfg = Config::load(path);
  HR_CHECK(cfg.has("ENGINE.DEVICE"), "[config] ", path,
           ": not a pose experiment file (MODEL.NAME names another family)");
  cfg.merge_from_list(overrides);
  return cfg;
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
// Training
// ---------------------------------------------------------------------------------------------

float train_step(models::HRNet& model, Optimizer& opt, const data::Batch& batch, Device dev,
                 DType autocast) {
  HR_CHECK(batch.size() > 0, "train_step: empty batch");
  Tensor x = batch.input.to(dev), target = batch.target.to(dev), weight = batch.weight.to(dev);
  AutocastGuard ac(autocast);
  opt.zero_grad();
  Tensor loss = ops::heatmap_loss(model(x), target, weight);
  loss.backward();
  opt.step();
  return loss.item();
}

GraphTrainStep::GraphTrainStep(models::HRNet& model, Optimizer& opt, Device dev, DType autocast)
    : model_(model), opt_(opt), dev_(dev), autocast_(autocast) {
  // CUDA: after one eager step per batch shape, the whole step (forward, backward, optimizer)
  // replays as one CUDA graph
  if (dev_.is_cuda()) opt_.set_capturable(true);
}

GraphTrainStep::~GraphTrainStep() = default;

float GraphTrainStep::operator()(const data::Batch& batch) {
  HR_CHECK(batch.size() > 0, "train_step: empty batch");
  HR_CHECK(model_.is_training(), "train_step: the model is in eval mode");
  auto& exe = graphs_[batch.input.shape()];
  if (!exe) {
    graph::Graph g(graph::GraphOptions{dev_});
    Tensor loss;
    {
      AutocastGuard ac(autocast_);
      loss = models::add_training_loss(g, model_,
                                       model_.forward_all(g.input("input", batch.input.shape())));
    }
    g.output(loss, "loss");
    graph::CompileOptions co;
    co.loss = loss;
    exe = std::make_unique<graph::Executable>(std::move(g), co);
  }
  graph::Executable& e = *exe;
  if (last_ != &e) {
    // the optimizer reads the gradients where this graph writes them
    for (Tensor p : model_.parameters()) p.set_grad(e.grad(p));
    last_ = &e;
  }
  e.set_input("input", batch.input);
  e.set_input("target", batch.target);
  e.set_input("weight", batch.weight);
  if (e.captured()) {
    e.run();  // prepare_step on the host, then the graph: forward, backward, optimizer
    return e.output("loss").item();
  }
  e.run();
  opt_.step();
  const float loss = e.output("loss").item();  // synchronises: the step is done
  if (dev_.is_cuda())
    e.capture([this] { opt_.enqueue_step(); }, [this] { opt_.prepare_step(); });
  return loss;
}

void save_training_checkpoint(const std::string& path, const models::HRNet& model,
                              const Optimizer& opt, const TrainState& st, uint64_t seed,
                              const std::string& config_text) {
  NamedTensors all;
  for (auto& [k, t] : model.state_dict()) all.emplace_back("model." + k, t);
  for (auto& [k, t] : opt.state_dict()) all.emplace_back("optimizer." + k, t);
  save_safetensors(path, all,
                   {{"format", models::kTrainingCheckpointFormat},
                    {"model", model.spec().name},
                    {"epoch", std::to_string(st.epoch)},
                    {"best_ap", str_cat(st.best_ap)},
                    {"global_step", std::to_string(st.global_step)},
                    {"seed", std::to_string(seed)},
                    {"config", config_text}});
}

TrainState load_training_checkpoint(const std::string& path, models::HRNet& model, Optimizer& opt,
                                    uint64_t seed) {
  std::map<std::string, std::string> meta;
  NamedTensors all = load_checkpoint(path, &meta);
  auto get = [&](const char* key) -> const std::string& {
    auto it = meta.find(key);
    HR_CHECK(it != meta.end(), "[resume] ", path, ": not an hrnet-train checkpoint (no '", key,
             "' in its metadata)");
    return it->second;
  };
  HR_CHECK(get("format") == models::kTrainingCheckpointFormat, "[resume] ", path,
           ": unknown checkpoint format ", get("format"));
  HR_CHECK(get("seed") == std::to_string(seed), "[resume] ", path, ": made with ENGINE.SEED ",
           get("seed"), ", this run has ", seed, " (the sample order would differ)");
  NamedTensors weights, state;
  for (auto& [k, t] : all) {
    if (k.compare(0, 6, "model.") == 0)
      weights.emplace_back(k.substr(6), t);
    else if (k.compare(0, 10, "optimizer.") == 0)
      state.emplace_back(k.substr(10), t);
    else
      throw Error(str_cat("[resume] ", path, ": unexpected entry ", k));
  }
  try {
    model.load_state_dict(weights);
    opt.load_state_dict(state);
  } catch (const Error& e) {
    throw Error(str_cat("[resume] ", path, ": ", e.what()));
  }
  TrainState st;
  try {
    st.epoch = std::stoll(get("epoch"));
    st.best_ap = std::stod(get("best_ap"));
    st.global_step = std::stoll(get("global_step"));
  } catch (const std::logic_error&) {
    throw Error(str_cat("[resume] ", path, ": corrupt metadata"));
  }
  return st;
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

EvalOptions eval_options(const PoseSettings& s) {
  EvalOptions o;
  o.flip_test = s.flip_test;
  o.shift_heatmap = s.shift_heatmap;
  o.in_vis_thre = s.in_vis_thre;
  o.oks_thre = s.oks_thre;
  o.batch = s.test_batch;
  o.workers = s.workers;
  o.device = s.engine_device();
  o.autocast = s.autocast();
  o.graph = s.graph;
  return o;
}

std::vector<data::PersonPrediction> predict(models::HRNet& model, const data::PoseDataset& ds,
                                            const EvalOptions& o, int* skipped) {
  data::LoaderOptions lo;
  lo.batch_size = static_cast<int>(o.batch);
  lo.shuffle = false;
  lo.drop_last = false;
  lo.workers = o.workers;
  data::DataLoader loader(ds, lo);
  loader.start_epoch(0);
  model.eval();
  InferenceMode no_grad;
  // the compiled inference graph (batch norm folded, one arena), or the eager forward
  graph::InferenceRunner graph_forward(
      [&model](const Tensor& x) { return model.forward_all(x); }, o.device, o.autocast);
  auto heatmaps = [&](const Tensor& x) {
    Tensor y;
    if (o.graph) {
      y = graph_forward(x)[0];
    } else {
      AutocastGuard ac(o.autocast);
      y = model(x.to(o.device));
    }
    Tensor host = Tensor::empty(y.shape());  // f32, contiguous, a copy (graph outputs are reused)
    host.copy_(y);
    return host;
  };
  std::vector<data::PersonPrediction> preds;
  preds.reserve(ds.size());
  const auto& tp = ds.options().target;
  const int J = data::kNumJoints;
  std::unique_ptr<ProgressBar> bar;
  if (o.progress)
    bar = std::make_unique<ProgressBar>("eval", static_cast<int64_t>(ds.size()), "img");
  int skip = 0;
  data::Batch b;
  std::vector<float> flipped;
  while (loader.next(b)) {
    skip += b.skipped;
    if (b.size() == 0) continue;
    Tensor heat = heatmaps(b.input);
    HR_CHECK(heat.size(1) == J && heat.size(2) == tp.heatmap_h && heat.size(3) == tp.heatmap_w,
             "evaluate: the model's output ", shape_str(heat.shape()),
             " does not match MODEL.HEATMAP_SIZE / NUM_JOINTS");
    const int64_t n = b.size(), h = heat.size(2), w = heat.size(3);
    const int64_t plane = J * h * w;
    float* hm = heat.data<float>();
    if (o.flip_test) {
      const int64_t in_plane = 3 * int64_t(tp.image_h) * tp.image_w;
      Tensor xin = Tensor::empty(b.input.shape());
      for (int64_t i = 0; i < n; ++i)
        data::flip_input(b.input.data<float>() + i * in_plane, 3, tp.image_h, tp.image_w,
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
    for (int64_t i = 0; i < n; ++i) {
      const data::PoseRecord& rec = ds.record(b.indices[static_cast<size_t>(i)]);
      data::PersonPrediction p;
      p.image_id = rec.image_id;
      p.box_score = rec.score;
      p.area = rec.scale[0] * rec.scale[1] * data::kPixelStd * data::kPixelStd;
      data::decode_heatmaps(hm + i * plane, J, static_cast<int>(h), static_cast<int>(w), rec.center,
                            rec.scale, p.keypoints.data());
      preds.push_back(p);
    }
    if (bar) bar->update(n + b.skipped);
  }
  if (bar) bar->finish();
  if (skipped) *skipped = skip;
  return preds;
}

EvalResult evaluate(models::HRNet& model, const PoseData& val, const data::PoseDatasetOptions& dopt,
                    const EvalOptions& o) {
  ProgressBar clock("", 0, "img", nullptr);
  data::PoseDataset ds(val.records, dopt);
  EvalResult r;
  auto preds = predict(model, ds, o, &r.skipped);
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

}  // namespace hr::tasks
