#!/usr/bin/env bash
# Quick start, training: installs dependencies, builds, installs the package, and trains the
# example network on synthetic data.
set -euo pipefail
cd "$(dirname "$0")/.."
# OpenMP threads sleep rather than spin while waiting: far faster on a shared or small machine
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
scripts/setup.sh
scripts/build.sh -DHR_BUILD_TESTS=OFF -DHR_BUILD_BENCHMARKS=OFF
cmake --install build --prefix build/install >/dev/null
cmake -S examples/consumer -B build/consumer -DCMAKE_PREFIX_PATH="$PWD/build/install" >/dev/null
cmake --build build/consumer -j"$(nproc)" >/dev/null
build/consumer/hrnet_consumer --steps "${STEPS:-300}"
