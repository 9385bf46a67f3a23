#!/usr/bin/env bash
# Configures and builds into ./build (Release; CUDA when nvcc is found). Extra arguments go to
# the configure step, e.g. scripts/build.sh -DHR_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CUDACXX:-}" ] && ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j"$(nproc)"
