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

// The tiny pose experiment of the program tests (HRNet of widths 8..64 at 64x96, batch 4, two
// epochs): fast enough for the suite, real enough to exercise every part; DATASET.ROOT = root.
inline std::string tiny_pose_config(const std::string& root) {
  std::string text = R"(
DATASET:
  DATASET: synth
  ROOT: '@ROOT@'
  TRAIN_SET: train2017
  TEST_SET: val2017
  FLIP: true
  PROB_HALF_BODY: 0.3
  ROT_FACTOR: 30
  SCALE_FACTOR: 0.25
WORKERS: 2
PRINT_FREQ: 1
MODEL:
  NAME: pose_hrnet
  NUM_JOINTS: 17
  IMAGE_SIZE: [64, 96]
  HEATMAP_SIZE: [16, 24]
  SIGMA: 2
  EXTRA:
    PRETRAINED_LAYERS: ['*']
    FINAL_CONV_KERNEL: 1
    STAGE2: {NUM_MODULES: 1, NUM_BRANCHES: 2, BLOCK: BASIC, NUM_BLOCKS: [1, 1], NUM_CHANNELS: [8, 16], FUSE_METHOD: SUM}
    STAGE3: {NUM_MODULES: 1, NUM_BRANCHES: 3, BLOCK: BASIC, NUM_BLOCKS: [1, 1, 1], NUM_CHANNELS: [8, 16, 32], FUSE_METHOD: SUM}
    STAGE4: {NUM_MODULES: 1, NUM_BRANCHES: 4, BLOCK: BASIC, NUM_BLOCKS: [1, 1, 1, 1], NUM_CHANNELS: [8, 16, 32, 64], FUSE_METHOD: SUM}
LOSS:
  USE_TARGET_WEIGHT: true
TRAIN:
  BATCH_SIZE_PER_GPU: 4
  END_EPOCH: 2
  OPTIMIZER: adam
  LR: 0.001
  LR_STEP: [1]
TEST:
  BATCH_SIZE_PER_GPU: 8
  USE_GT_BBOX: true
  FLIP_TEST: true
  POST_PROCESS: true
  SHIFT_HEATMAP: true
  IN_VIS_THRE: 0.2
  OKS_THRE: 0.9
ENGINE:
  SEED: 3
  THREADS: 2
)";
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

}  // namespace hr::test
