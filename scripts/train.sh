#!/usr/bin/env bash
# Quick start, training: installs the dependencies, builds, and runs hrnet-train with no
# arguments: it generates the built-in synthetic COCO-layout dataset once (cached under
# ~/.cache/hrnet), trains a small HRNet on the CPU, evaluates it (COCO keypoint AP) and writes
# the checkpoint, metrics.jsonl and a picture of predictions under output/.
# Extra arguments go to hrnet-train (e.g. scripts/train.sh --cfg FILE TRAIN.END_EPOCH 1).
set -euo pipefail
cd "$(dirname "$0")/.."
# OpenMP threads sleep rather than spin while waiting: far faster on a shared or small machine
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
scripts/setup.sh
scripts/build.sh -DHR_BUILD_TESTS=OFF -DHR_BUILD_BENCHMARKS=OFF
exec build/apps/hrnet-train "$@"
