// The detection task (HRNet-FCOS): the official files' settings (datasets, transforms, solver),
// the official solver against maskrcnn-benchmark's own code (tests/data/model_fcos.safetensors
// from tools/gen_fcos_reference.py: one make_optimizer SGD step with the bias group, and
// WarmupMultiStepLR as its trainer steps it), and DetTask on a small synthetic set: the training
// fields, the loss, the evaluation and its results file scored back to the same numbers.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <map>

#include "data/synth_det.h"
#include "engine/autograd.h"
#include "engine/checkpoint.h"
#include "engine/optim.h"
#include "models/hrnet.h"
#include "small_specs.h"
#include "tasks/detection.h"
#include "tasks/trainer.h"
#include "tensor_checks.h"
#include "test_util.h"

using namespace hr;
using namespace hr::tasks;
using test::contains;
using test::error_of;

namespace fs = std::filesystem;

namespace {

const std::string kData = HR_TEST_DATA_DIR;
const std::string kOfficial = kData + "/model_configs/";

std::map<std::string, Tensor> reference() {
  std::map<std::string, Tensor> t;
  for (auto& [k, v] : load_checkpoint(kData + "/model_fcos.safetensors")) t[k] = v;
  return t;
}

models::Config det_config(const std::string& text) {
  return models::Config::from_yaml(text, "det_test.yaml");
}

}  // namespace

TEST_CASE("det settings from the official HRNet-FCOS files", "[det]") {
  const models::Config cfg = models::Config::load(kOfficial + "fcos_hrnet_w32_5l_2x.yaml");
  const DetSettings d = DetSettings::from_config(cfg);
  REQUIRE(d.train.size() == 2);
  CHECK(d.train[0].annotation_file == "annotations/instances_train2014.json");
  CHECK(d.train[1].image_dir == "val2014");
  CHECK(d.test.at(0).annotation_file == "annotations/instances_minival2014.json");
  // MIN_SIZE_RANGE_TRAIN (640, 800): range(640, 801)
  REQUIRE(d.train_transform.min_sizes.size() == 161);
  CHECK(d.train_transform.min_sizes.front() == 640);
  CHECK(d.train_transform.min_sizes.back() == 800);
  CHECK(d.train_transform.max_size == 1333);
  CHECK(d.train_transform.flip_prob == 0.5);
  CHECK(d.test_transform.min_sizes == std::vector<int>{800});
  CHECK(d.test_transform.flip_prob == 0);
  CHECK(d.train_transform.size_divisibility == 32);
  CHECK(d.canvas_h == 1344);
  CHECK(d.canvas_w == 1344);
  REQUIRE(d.target_assign.size() == 5);
  CHECK(d.target_assign[0] == std::array<double, 2>{-1, 64});
  CHECK(d.target_assign[4][1] == 100000000);
  CHECK(d.postprocess.num_classes == 81);
  CHECK(d.postprocess.pre_nms_thresh == 0.05f);
  CHECK(d.postprocess.nms_thresh == 0.6f);
  CHECK(d.postprocess.detections_per_img == 100);

  const TrainSettings s = TrainSettings::from_config(cfg);
  CHECK(s.optimizer == "sgd");
  CHECK(s.lr == 0.01);
  CHECK(s.wd == 0.0001);
  CHECK(s.bias_lr_factor == 2);
  CHECK(s.wd_bias == 0);
  CHECK(s.batch == 16);
  CHECK(s.max_iter == 180000);
  CHECK(s.lr_step == std::vector<int64_t>{120000, 160000});
  CHECK(s.lr_schedule == "warmup_multistep");
  CHECK(s.warmup_method == "constant");
  CHECK(s.warmup_iters == 500);
  // ENGINE.ACCUMULATE_STEPS is bounded by the det batch, SOLVER.IMS_PER_BATCH
  models::Config big = models::Config::load(kOfficial + "fcos_hrnet_w32_5l_2x.yaml");
  big.set("SOLVER.IMS_PER_BATCH", "64");
  big.set("ENGINE.ACCUMULATE_STEPS", "40");
  CHECK(TrainSettings::from_config(big).accumulate == 40);
  big.set("ENGINE.ACCUMULATE_STEPS", "65");
  CHECK(contains(error_of([&] { TrainSettings::from_config(big); }),
                 "ENGINE.ACCUMULATE_STEPS must be in 1..64"));

  // the 6-level files: strides 4..128
  const models::Config six = models::Config::load(kOfficial + "fcos_hrnet_w40_6l_3x.yaml");
  const DetSettings d6 = DetSettings::from_config(six);
  CHECK(d6.target_assign.size() == 6);
  const auto lv = d6.levels(models::spec_from_config(six), 800, 1344);
  REQUIRE(lv.size() == 6);
  CHECK(lv[0].stride == 4);
  CHECK(lv[0].h == 200);
  CHECK(lv[0].w == 336);
  CHECK(lv[5].stride == 128);
  CHECK(lv[5].max_size == 100000000);

  // errors name the file and the key
  models::Config bad = models::Config::load(kOfficial + "fcos_hrnet_w32_5l_2x.yaml");
  bad.set("DATASETS.TEST", "('coco_2019_val',)");
  CHECK(contains(error_of([&] { DetSettings::from_config(bad); }), "unknown dataset 'coco_2019_val'"));
  models::Config ranges = models::Config::load(kOfficial + "fcos_hrnet_w32_5l_2x.yaml");
  ranges.set("MODEL.FCOS.TARGET_ASSIGN", "[[-1, 64], [64, 128]]");
  CHECK(contains(error_of([&] { DetSettings::from_config(ranges); }), "TARGET_ASSIGN has 2"));
}

TEST_CASE("det files: sections left empty take the defaults, a value is no section", "[det]") {
  const models::Config empty = det_config("MODEL:\n  FCOS_ON: True\n  HRNET:\nSOLVER:\n");
  CHECK(empty.get_bool("MODEL.HRNET.NORM_EVAL"));
  CHECK(empty.get_int("SOLVER.MAX_ITER") == 40000);
  CHECK(contains(error_of([] { det_config("MODEL:\n  FCOS_ON: True\n  HRNET: 5\n"); }),
                 "det_test.yaml: MODEL.HRNET must be a section of keys, got 5"));
}

TEST_CASE("det solver: WarmupMultiStepLR as the official trainer steps it", "[det]") {
  auto ref = reference();
  const std::vector<int64_t> at = ref.at("lr_steps").to_vector_i64();
  for (const char* method : {"constant", "linear"}) {
    INFO(method);
    TrainSettings s;
    s.lr = 0.01;
    s.lr_schedule = "warmup_multistep";
    s.lr_step = {120000, 160000};
    s.lr_factor = 0.1;
    s.warmup_factor = 1.0 / 3;
    s.warmup_iters = 500;
    s.warmup_method = method;
    const std::vector<float> want = ref.at(std::string("lr_") + method).to_vector();
    REQUIRE(want.size() == at.size());
    for (size_t i = 0; i < at.size(); ++i) {
      INFO("iteration " << at[i]);
      CHECK(s.lr_at(at[i], 7330) == Approx(want[i]).epsilon(1e-6));
    }
  }
}

TEST_CASE("det solver: one SGD step with maskrcnn-benchmark's bias group", "[det]") {
  auto ref = reference();
  models::ModelSpec spec = test::small_spec(models::Head::Det, true);
  spec.det_channels = 32;
  spec.det_levels = 5;
  spec.fcos_num_convs = 2;
  spec.norm_eval = true;
  models::HRNet model(spec, 1);
  NamedTensors state;
  for (auto& [k, v] : ref)
    if (k.rfind("state.", 0) == 0) state.emplace_back(k.substr(6), v);
  LoadOptions lo;
  lo.strip_prefixes = {"module.", "backbone.body.", "backbone.fpn."};
  model.load_state_dict(state, lo);
  for (auto& [k, p] : model.named_parameters()) p.set_grad(ref.at("grad." + k).clone());
  const models::Config cfg = det_config(
      "MODEL: {FCOS_ON: True}\nSOLVER: {BASE_LR: 0.01, BIAS_LR_FACTOR: 2, WEIGHT_DECAY: 0.0001, "
      "WEIGHT_DECAY_BIAS: 0, MOMENTUM: 0.9}\n");
  const TrainSettings s = TrainSettings::from_config(cfg);
  auto opt = make_optimizer(s, model.named_parameters());
  opt->set_lr(s.lr);
  opt->step();
  size_t biases = 0;
  for (auto& [k, p] : model.named_parameters()) {
    INFO(k);
    biases += k.find("bias") != std::string::npos;
    REQUIRE_CLOSE(p.to_vector(), ref.at("after_sgd." + k).to_vector(), 1e-7, 1e-6);
  }
  CHECK(biases > 10);
}

TEST_CASE("DetTask on synthetic scenes: fields, loss, evaluation, results file", "[det]") {
  const fs::path dir = fs::temp_directory_path() / ("hr_test_det_task_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  data::SynthDetOptions o;
  o.train_images = 12;
  o.val_images = 6;
  o.seed = 4;
  data::generate_synthetic_detection(dir.string(), o);
  const std::string cfg_text =
      "MODEL:\n  FCOS_ON: True\n  BACKBONE: {CONV_BODY: HRNET-W18-SMALL-V1}\n"
      "  HRNET: {NORM_EVAL: False, FPN: {OUT_CHANNEL: 32}}\n"
      "  FCOS: {NUM_CLASSES: 6, NUM_CONVS: 1, FPN_STRIDES: [8, 16, 32, 64],\n"
      "         TARGET_ASSIGN: [[-1, 48], [48, 96], [96, 192], [192, 100000000]]}\n"
      "DATASETS:\n  TRAIN: ('coco_2017_train',)\n  TEST: ('coco_2017_val',)\n"
      "INPUT:\n  MIN_SIZE_TRAIN: (256,)\n  MAX_SIZE_TRAIN: 320\n  MIN_SIZE_TEST: 224\n"
      "  MAX_SIZE_TEST: 320\n"
      "DATALOADER: {SIZE_DIVISIBILITY: 32}\n"
      "SOLVER: {IMS_PER_BATCH: 2, MAX_ITER: 10}\n"
      "DATASET: {ROOT: '" + dir.string() + "'}\n"
      "ENGINE: {DET_CANVAS: [320, 256], THREADS: 2}\n";
  DetTask task(det_config(cfg_text));
  const data::Dataset& train = task.train_data();
  REQUIRE(train.size() > 0);
  const auto fields = train.fields();
  REQUIRE(fields.size() == 5);
  CHECK(fields[0].shape == Shape{3, 256, 320});
  const int64_t P = 32 * 40 + 16 * 20 + 8 * 10 + 4 * 5;
  CHECK(fields[1].shape == Shape{P});
  CHECK(fields[2].shape == Shape{4, P});

  auto model = task.make_model(3);
  CHECK(model->spec().num_classes == 5);
  // a training loss from a loaded sample: finite, with positives
  std::vector<void*> ptrs;
  std::vector<Tensor> ts;
  for (const auto& f : fields) {
    ts.push_back(Tensor::empty(f.shape, f.dtype));
    ptrs.push_back(ts.back().raw_data());
  }
  train.load(0, 11, ptrs);
  std::map<std::string, Tensor> targets;
  for (size_t i = 1; i < fields.size(); ++i) {
    Shape s = fields[i].shape;
    s.insert(s.begin(), 1);
    targets[fields[i].name] = ts[i].view(s);
  }
  model->train();
  const Tensor x = ts[0].view({1, 3, 256, 320});
  Tensor loss = task.loss(model->forward_all(x), targets);
  REQUIRE(std::isfinite(loss.item()));
  CHECK(loss.item() > 0);

  // evaluation (an untrained model) and its results file scored back
  RunOptions run;
  run.progress = false;
  const EvalSummary e = task.evaluate(*model, run);
  CHECK(e.score_name == "AP");
  CHECK(e.count == 6);
  REQUIRE(e.metrics.size() == 12);
  CHECK(e.score >= 0);
  CHECK(e.score <= 1);
  fs::create_directories(dir / "out" / "results");
  task.save_outputs((dir / "out").string());
  const fs::path results = dir / "out" / "results" / "bbox_coco_2017_val_results.json";
  REQUIRE(fs::exists(results));
  const std::string table = task.score_results(results.string());
  CHECK(table == test::slurp((dir / "out" / "results" / "bbox_coco_2017_val.txt").string()));
  // the graph and the eager forward detect the same
  RunOptions eager = run;
  eager.graph = false;
  const EvalSummary e2 = task.evaluate(*model, eager);
  for (size_t k = 0; k < 12; ++k) CHECK(e2.metrics[k].second == Approx(e.metrics[k].second).margin(0.02));
  fs::remove_all(dir);
}
