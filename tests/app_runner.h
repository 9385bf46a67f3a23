// Running the hrnet-* programs from the tests as a user would: a shell command line, with stdout
// and stderr captured to files (removed afterwards) and the exit code.
#pragma once
#include <sys/wait.h>

#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace hr::test {

struct Run {
  int code;  // exit status, -1 when the program did not exit normally
  std::string out, err;
};

// Runs `exe args`; `scratch` is a path prefix for the capture files.
inline Run run_program(const std::string& exe, const std::string& args,
                       const std::string& scratch) {
  const std::string out = scratch + "_stdout.txt", err = scratch + "_stderr.txt";
  const int rc = std::system((exe + " " + args + " >" + out + " 2>" + err).c_str());
  Run r{WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, slurp(out), slurp(err)};
  std::remove(out.c_str());
  std::remove(err.c_str());
  return r;
}

// The tiny pose experiment of the program tests (tests/data/tiny_pose.yaml: HRNet of widths 8..64
// at 64x96, batch 4, two epochs; the Python tests read it too); DATASET.ROOT = root.
inline std::string tiny_pose_config(const std::string& root) {
  std::string text = slurp(std::string(HR_TEST_DATA_DIR) + "/tiny_pose.yaml");
  REQUIRE(text.find("@ROOT@") != std::string::npos);
  text.replace(text.find("@ROOT@"), 6, root);
  return text;
}

// The stages of the tiny models (layer1: one bottleneck of 8 planes; widths 8..64), for an
// EXTRA section.
inline const char* tiny_backbone() {
  return R"(
    STAGE1: {NUM_MODULES: 1, NUM_RANCHES: 1, BLOCK: BOTTLENECK, NUM_BLOCKS: [1], NUM_CHANNELS: [8], FUSE_METHOD: SUM}
    STAGE2: {NUM_MODULES: 1, NUM_BRANCHES: 2, BLOCK: BASIC, NUM_BLOCKS: [1, 1], NUM_CHANNELS: [8, 16], FUSE_METHOD: SUM}
    STAGE3: {NUM_MODULES: 1, NUM_BRANCHES: 3, BLOCK: BASIC, NUM_BLOCKS: [1, 1, 1], NUM_CHANNELS: [8, 16, 32], FUSE_METHOD: SUM}
    STAGE4: {NUM_MODULES: 1, NUM_BRANCHES: 4, BLOCK: BASIC, NUM_BLOCKS: [1, 1, 1, 1], NUM_CHANNELS: [8, 16, 32, 64], FUSE_METHOD: SUM}
)";
}

// The tiny segmentation experiment of the program tests (seg_hrnet of widths 8..64, Cityscapes
// layout at 96x64 crops, batch 4, two epochs); DATASET.ROOT = root.
inline std::string tiny_seg_config(const std::string& root) {
  std::string text = std::string(R"(
GPUS: (0,)
WORKERS: 2
PRINT_FREQ: 1
DATASET: {DATASET: cityscapes, ROOT: '@ROOT@', TEST_SET: list/cityscapes/val.lst, TRAIN_SET: list/cityscapes/train.lst, NUM_CLASSES: 19}
MODEL:
  NAME: seg_hrnet
  ALIGN_CORNERS: False
  EXTRA:
    FINAL_CONV_KERNEL: 1)") + tiny_backbone() + R"(LOSS: {USE_OHEM: false, OHEMTHRES: 0.9, OHEMKEEP: 131072}
TRAIN: {IMAGE_SIZE: [96, 64], BASE_SIZE: 128, BATCH_SIZE_PER_GPU: 4, SHUFFLE: true, BEGIN_EPOCH: 0, END_EPOCH: 2, RESUME: false, OPTIMIZER: sgd, LR: 0.05, WD: 0.0005, MOMENTUM: 0.9, NESTEROV: false, FLIP: true, MULTI_SCALE: true, DOWNSAMPLERATE: 1, IGNORE_LABEL: 255, SCALE_FACTOR: 16}
TEST: {IMAGE_SIZE: [128, 64], BASE_SIZE: 128, BATCH_SIZE_PER_GPU: 4, FLIP_TEST: false, MULTI_SCALE: false}
ENGINE: {SEED: 5, THREADS: 2}
)";
  text.replace(text.find("@ROOT@"), 6, root);
  return text;
}

// The classification experiment of the program tests: the tiny backbone with a narrow cls head,
// 10 shapes at 32x32, batch 8, two epochs; DATASET.ROOT = root.
inline std::string tiny_cls_config(const std::string& root) {
  std::string text = std::string(R"(
WORKERS: 2
PRINT_FREQ: 1
MODEL:
  NAME: cls_hrnet
  NUM_CLASSES: 10
  IMAGE_SIZE: [32, 32]
  EXTRA:
    HEAD_CHANNELS: [4, 8, 8, 16]
    HEAD_FEATURES: 32)") + tiny_backbone() + R"(
DATASET: {DATASET: synth_shapes, DATA_FORMAT: jpg, ROOT: ')" + root + R"(', TRAIN_SET: train, TEST_SET: val}
TEST: {BATCH_SIZE_PER_GPU: 16, MODEL_FILE: ''}
TRAIN: {BATCH_SIZE_PER_GPU: 8, BEGIN_EPOCH: 0, END_EPOCH: 2, RESUME: false, LR_FACTOR: 0.1, LR_STEP: [1], OPTIMIZER: sgd, LR: 0.05, WD: 0.0001, MOMENTUM: 0.9, NESTEROV: true, SHUFFLE: true}
ENGINE: {SEED: 4, THREADS: 2, LABEL_SMOOTHING: 0.1}
)";
  return text;
}

// A small HRNet-FCOS in the official format (maskrcnn-benchmark keys; ENGINE.* is ours): W18-small
// v1, 32 FPN channels, 10 iterations of batch 4 at up to 320x256; DATASET.ROOT = root.
inline std::string tiny_det_config(const std::string& root, const std::string& inference_th = "0.05") {
  std::string text = R"(MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  FCOS_ON: True
  BACKBONE:
    CONV_BODY: "HRNET-W18-SMALL-V1"
  HRNET:
    NORM_EVAL: False
    FPN:
      OUT_CHANNEL: 32
  FCOS:
    NUM_CLASSES: 6
    NUM_CONVS: 1
    INFERENCE_TH: @TH@
    FPN_STRIDES: [8, 16, 32, 64]
    TARGET_ASSIGN: [[-1, 48], [48, 96], [96, 192], [192, 100000000]]
DATASETS:
  TRAIN: ("coco_2017_train",)
  TEST: ("coco_2017_val",)
INPUT:
  MIN_SIZE_TRAIN: (224, 256)
  MAX_SIZE_TRAIN: 320
  MIN_SIZE_TEST: 256
  MAX_SIZE_TEST: 320
DATALOADER:
  SIZE_DIVISIBILITY: 32
  NUM_WORKERS: 2
SOLVER:
  BASE_LR: 0.01
  IMS_PER_BATCH: 4
  MAX_ITER: 10
  STEPS: (6,)
  WARMUP_ITERS: 4
PRINT_FREQ: 1
DATASET:
  ROOT: '@ROOT@'
ENGINE:
  DET_CANVAS: [320, 256]
  SEED: 5
  THREADS: 2
)";
  text.replace(text.find("@TH@"), 4, inference_th);
  text.replace(text.find("@ROOT@"), 6, root);
  return text;
}

// "key":number from a JSON line (metrics.jsonl); the key must be there.
inline double json_number(const std::string& line, const std::string& key) {
  const std::string k = "\"" + key + "\":";
  const size_t at = line.find(k);
  INFO("no " << k << " in " << line);
  REQUIRE(at != std::string::npos);
  return std::strtod(line.c_str() + at + k.size(), nullptr);
}

// The lines of dir/metrics.jsonl of one type ("train", "epoch", "eval").
inline std::vector<std::string> metric_lines(const std::string& dir, const std::string& type) {
  std::istringstream log(slurp(dir + "/metrics.jsonl"));
  std::vector<std::string> out;
  const std::string tag = "\"type\":\"" + type + "\"";
  for (std::string line; std::getline(log, line);)
    if (line.find(tag) != std::string::npos) out.push_back(line);
  return out;
}

// json_number(key) of each of those lines.
inline std::vector<double> metric_values(const std::string& dir, const std::string& type,
                                         const std::string& key) {
  std::vector<double> out;
  for (const std::string& line : metric_lines(dir, type)) out.push_back(json_number(line, key));
  return out;
}

}  // namespace hr::test
