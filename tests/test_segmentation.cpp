// The segmentation task against the official code (tests/data/seg_task_reference.safetensors from
// tools/gen_seg_task_reference.py): the confusion matrix and mIoU, the poly schedule as the
// official train loop applies it, the two-output loss (class weights, OHEM, upsampling to the
// label size, balance weights) with its gradients, and multi-scale / flip / sliding-window
// inference; sliding windows against a whole-image pass where they must agree.
#include <cmath>
#include <sstream>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "ref_data.h"
#include "tasks/segmentation.h"
#include "test_util.h"

using namespace hr;
using namespace hr::tasks;
using hr::test::compare;

namespace {

const test::RefData& ref() {
  static const test::RefData r("seg_task_reference.safetensors");
  return r;
}

// a seg experiment file with the keys the task reads
models::Config seg_config(const std::string& extra) {
  const std::string text = "GPUS: (0,)\nDATASET:\n  DATASET: cityscapes\n  ROOT: ''\n  NUM_CLASSES: 19\n"
                           "MODEL:\n  NAME: seg_hrnet_ocr\n  ALIGN_CORNERS: false\n  NUM_OUTPUTS: 2\n"
                           "TRAIN:\n  IGNORE_LABEL: 255\n  LR: 0.01\n  OPTIMIZER: sgd\n" + extra;
  return models::Config::from_yaml(text, "seg_test.yaml");
}

}  // namespace

TEST_CASE("confusion matrix and mIoU equal the official get_confusion_matrix", "[seg]") {
  const auto& r = ref();
  const Tensor& labels = r.at("confusion/labels");
  const Tensor& scores = r.at("confusion/scores");
  const int64_t C = static_cast<int64_t>(r.num("confusion", "classes"));
  ConfusionMatrix cm(C);
  const int64_t N = scores.size(0), HW = scores.size(2) * scores.size(3);
  for (int64_t n = 0; n < N; ++n) {
    Tensor one = Tensor::empty({1, C, scores.size(2), scores.size(3)});
    std::copy(scores.data<float>() + n * C * HW, scores.data<float>() + (n + 1) * C * HW,
              one.data<float>());
    const std::vector<int64_t> pred = seg_argmax(one);
    cm.add(labels.data<int64_t>() + n * HW, pred.data(), HW, 255);
  }
  const Tensor& want = r.at("confusion/cm");
  for (int64_t i = 0; i < C; ++i)
    for (int64_t j = 0; j < C; ++j) REQUIRE(cm.at(i, j) == want.data<float>()[i * C + j]);
  const auto iou = cm.iou();
  const auto res = compare(std::vector<float>(iou.begin(), iou.end()), r.at("confusion/iou").to_vector(),
                           1e-7, 1e-6, "IoU");
  INFO(res.report);
  REQUIRE(res.ok);
  REQUIRE(iou[static_cast<size_t>(C - 1)] == 0.0);  // absent class: 0, and it counts in the mean
  REQUIRE(cm.mean_iou() == Approx(r.num("confusion", "miou")).epsilon(1e-9));
  REQUIRE(cm.pixel_accuracy() == Approx(r.num("confusion", "pixel_acc")).epsilon(1e-9));

  ConfusionMatrix twice(C);
  twice.add(cm);
  twice.add(cm);
  REQUIRE(twice.mean_iou() == Approx(cm.mean_iou()).epsilon(1e-12));
  REQUIRE(twice.at(2, 2) == 2 * cm.at(2, 2));

  const int64_t bad_label[1] = {C}, pred0[1] = {0};
  REQUIRE_THROWS_WITH(cm.add(bad_label, pred0, 1, 255), Catch::Contains("label 7 is neither a class"));
}

TEST_CASE("poly schedule: the rate each step of the official seg train loop runs with", "[seg]") {
  const auto& r = ref();
  models::Config cfg = seg_config("  END_EPOCH: 5\n");
  cfg.set("TRAIN.LR", r.opt("poly", "base"));
  const TrainSettings s = TrainSettings::from_config(cfg);
  REQUIRE(s.lr_schedule == "poly");  // the default for seg files
  const int64_t iters = static_cast<int64_t>(r.num("poly", "iters"));
  const std::vector<float> want = r.at("poly/lr").to_vector();
  std::vector<float> got;
  for (int64_t t = 0; t < static_cast<int64_t>(want.size()); ++t)
    got.push_back(static_cast<float>(s.lr_at(t, iters)));
  const auto res = compare(got, want, 1e-9, 1e-6, "poly lr");
  INFO(res.report);
  REQUIRE(res.ok);
}

TEST_CASE("the batch is per GPU x GPUS, as the official recipe means it", "[seg]") {
  models::Config cfg = seg_config("  BATCH_SIZE_PER_GPU: 3\n");
  cfg.set("GPUS", "(0,1,2,3)");
  const TrainSettings s = TrainSettings::from_config(cfg);
  REQUIRE(s.batch_per_gpu == 3);
  REQUIRE(s.gpus == 4);
  REQUIRE(s.batch == 12);
  REQUIRE(s.accumulate == 1);
  cfg.set("ENGINE.ACCUMULATE_STEPS", "4");  // one device standing in for the four GPUs
  REQUIRE(TrainSettings::from_config(cfg).accumulate == 4);
  cfg.set("ENGINE.ACCUMULATE_STEPS", "13");
  REQUIRE_THROWS_WITH(TrainSettings::from_config(cfg),
                      Catch::Contains("ENGINE.ACCUMULATE_STEPS must be in 1..12"));
}

TEST_CASE("seg loss: two outputs, class weights, OHEM, upsampling, balance weights", "[seg]") {
  const auto& r = ref();
  for (const std::string c : {"loss_ce", "loss_ohem"}) {
    SECTION(c) {
      std::ostringstream extra;
      extra << "LOSS:\n  USE_OHEM: " << (r.flag(c, "ohem") ? "true" : "false")
            << "\n  OHEMTHRES: " << r.opt(c, "thres") << "\n  OHEMKEEP: " << r.opt(c, "keep")
            << "\n  BALANCE_WEIGHTS: [0.4, 1]\n";
      const SegTask task(seg_config(extra.str()));
      REQUIRE(task.seg().class_weights.size() == 19);
      Tensor aux = r.at(c + "/aux").to(Device::cpu()), out = r.at(c + "/out").to(Device::cpu());
      Tensor a = Tensor::empty(aux.shape()), o = Tensor::empty(out.shape());
      a.copy_(aux);
      o.copy_(out);
      a.set_requires_grad(true);
      o.set_requires_grad(true);
      Tensor loss = task.loss({a, o}, {{"label", r.at(c + "/label")}});
      REQUIRE(loss.item() == Approx(r.num(c, "loss")).epsilon(2e-5));
      loss.backward();
      for (auto [t, role] : {std::pair{&a, "daux"}, std::pair{&o, "dout"}}) {
        const auto res = compare(t->grad().to_vector(), r.at(c + "/" + role).to_vector(), 1e-7,
                                 2e-4, c + " " + role);
        INFO(res.report);
        REQUIRE(res.ok);
      }
    }
  }
}

TEST_CASE("multi-scale, flip and sliding-window inference equal the official", "[seg]") {
  const auto& r = ref();
  const Tensor& w = r.at("infer/w");
  const Tensor& b = r.at("infer/b");
  int calls = 0;
  const SegForward model = [&](const Tensor& x) {
    ++calls;
    InferenceMode no_grad;
    return ops::conv2d(x, w, b, {2, 2}, {1, 1});
  };
  for (const std::string c :
       {"infer_cityscapes", "infer_cityscapes_whole", "infer_base", "infer_base_noflip"}) {
    SECTION(c) {
      SegInferOptions o;
      o.cityscapes_windows = r.flag(c, "cityscapes");
      o.flip = r.flag(c, "flip");
      o.base_size = static_cast<int>(r.num(c, "base_size"));
      std::string crop = r.opt(c, "crop"), scales = r.opt(c, "scales");
      std::replace(crop.begin(), crop.end(), ',', ' ');
      std::replace(scales.begin(), scales.end(), ',', ' ');
      std::istringstream cs(crop.substr(1, crop.size() - 2)), ss(scales.substr(1, scales.size() - 2));
      cs >> o.crop_h >> o.crop_w;
      o.scales.clear();
      for (double v; ss >> v;) o.scales.push_back(v);
      o.classes = w.size(0);
      o.align_corners = false;
      const Tensor pred = seg_inference(model, r.at("infer/image"), o);
      const auto res = compare(pred.to_vector(), r.at(c + "/pred").to_vector(), 1e-5, 1e-4, c);
      INFO(res.report);
      REQUIRE(res.ok);
    }
  }
  REQUIRE(calls > 0);
}

TEST_CASE("sliding windows agree with a whole-image pass for a pointwise model", "[seg]") {
  // a per-pixel model sees no context: every window rule must give the whole-image scores
  const Tensor w = Tensor::from_vector(test::randn(4 * 3, 5, 0.5f), {4, 3, 1, 1});
  const SegForward model = [&](const Tensor& x) {
    InferenceMode no_grad;
    return ops::conv2d(x, w);
  };
  const Tensor image = Tensor::from_vector(test::randn(3 * 45 * 70, 6), {1, 3, 45, 70});
  SegInferOptions whole;
  whole.classes = 4;
  whole.base_size = 70;
  whole.crop_h = 45;
  whole.crop_w = 70;
  const Tensor ref_scores = seg_inference(model, image, whole);
  for (bool cityscapes : {true, false})
    for (bool flip : {false, true}) {
      SegInferOptions o = whole;
      o.cityscapes_windows = cityscapes;
      o.flip = flip;
      o.crop_h = 16;
      o.crop_w = 24;
      o.scales = {1.0};
      if (cityscapes) o.scales = {1.0 + 1e-9};  // the cityscapes rule slides only above scale 1
      const Tensor got = seg_inference(model, image, o);
      const auto res = compare(got.to_vector(), ref_scores.to_vector(), 1e-6, 1e-5,
                               std::string(cityscapes ? "cityscapes" : "base") + (flip ? " flip" : ""));
      INFO(res.report);
      REQUIRE(res.ok);
    }
}

TEST_CASE("seg settings from the official files", "[seg]") {
  const std::string dir = std::string(HR_TEST_DATA_DIR) + "/model_configs/";
  const auto ocr = SegSettings::from_config(models::Config::load(
      dir + "seg_hrnet_ocr_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml"));
  REQUIRE(ocr.num_outputs == 2);
  REQUIRE(ocr.balance_weights == std::vector<double>{0.4, 1.0});
  REQUIRE(ocr.train_data.crop_h == 512);
  REQUIRE(ocr.train_data.crop_w == 1024);
  REQUIRE(ocr.test_h == 1024);
  REQUIRE(ocr.ignore_label == 255);
  const auto ohem = SegSettings::from_config(models::Config::load(
      dir + "seg_hrnet_w48_train_ohem_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml"));
  REQUIRE(ohem.ohem);
  REQUIRE_FALSE(ohem.align_corners);
  REQUIRE(ohem.num_outputs == 1);

  REQUIRE_THROWS_WITH(SegSettings::from_config(seg_config("LOSS:\n  BALANCE_WEIGHTS: [1]\n")),
                      Catch::Contains("LOSS.BALANCE_WEIGHTS has 1 weights for MODEL.NUM_OUTPUTS 2"));
}
