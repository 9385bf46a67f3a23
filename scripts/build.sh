#!/usr/bin/env bash
# Configures and builds into ./build (Release; CUDA when nvcc is found; the Python module). Extra arguments go to
# the configure step, e.g. scripts/build.sh -DHR_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CUDACXX:-}" ] && ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi
# the Python environment (build/venv: nanobind for the module, ONNX Runtime and OpenVINO for the
# export checks); the module and its tests are built with its Python
PY=$(scripts/python_env.sh)
# cuDNN's graph API: the pinned cuDNN frontend headers (with a CUDA toolkit only)
scripts/cudnn_frontend.sh "$PY"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$PY" "$@"
cmake --build build -j"$(nproc)"
