#!/usr/bin/env bash
# Quick start, training: installs the dependencies, builds, and runs hrnet-train with no
# arguments: it generates the built-in synthetic COCO-layout dataset once (cached under
# ~/.cache/hrnet), trains a small HRNet on the CPU, evaluates it (COCO keypoint AP) and writes
# the checkpoint, metrics.jsonl and a picture of predictions under output/.
# Extra arguments go to hrnet-train (e.g. scripts/train.sh --cfg FILE TRAIN.END_EPOCH 1).
set -euo pipefail
cd "$(dirname "$0")/.."
# OpenMP's own wait policy (spin briefly, then sleep): one training process has the cores to
# itself, and OMP_WAIT_POLICY=PASSIVE (every wait a sleep, right for ctest's parallel processes,
# scripts/test.sh) made the quick start's step 15-30% slower (docs/PERFORMANCE.md, session 14)
scripts/setup.sh
scripts/build.sh -DHR_BUILD_TESTS=OFF -DHR_BUILD_BENCHMARKS=OFF
exec build/apps/hrnet-train "$@"
