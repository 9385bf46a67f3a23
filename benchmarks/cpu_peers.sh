#!/usr/bin/env bash
# The CPU runtimes beside ours (issues 16, 17): benchmarks/cpu_peers.py in the project's Python
# environment (scripts/python_env.sh: ONNX Runtime and OpenVINO pinned from PyPI; PyTorch and
# numpy from Debian), on PyTorch's ONNX export and on ours (hrnet-export).
#   benchmarks/cpu_peers.sh [BUILD_DIR] [cpu_peers.py options, e.g. --batches 8,1 --steps 5]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
[ $# -gt 0 ] && shift
PY=$(scripts/python_env.sh)  # onnxruntime and openvino pinned there
cmake --build "$BUILD" -j"$(nproc)" --target hrnet-infer hrnet-export bench_model >/dev/null
exec "$PY" benchmarks/cpu_peers.py --ours "$BUILD" "$@"
