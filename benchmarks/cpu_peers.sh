#!/usr/bin/env bash
# The CPU runtimes beside ours (issue 17): benchmarks/cpu_peers.py in a virtual environment of
# its own, made here: ONNX Runtime and OpenVINO pinned from PyPI; PyTorch and numpy from the
# system (python3-torch), numpy held at the system's version so that torch keeps working.
#   benchmarks/cpu_peers.sh [BUILD_DIR] [cpu_peers.py options, e.g. --batches 8,1 --steps 5]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
[ $# -gt 0 ] && shift
PY="${HR_PYTHON:-/usr/bin/python3}"
VENV="$BUILD/peers-venv"
ORT_VERSION=1.32.0
OV_VERSION=2026.4.1
"$PY" -c "import torch, numpy" 2>/dev/null || {
  echo "cpu_peers: $PY has no torch/numpy (Debian: apt-get install python3-torch)" >&2
  exit 1
}
if [ ! -x "$VENV/bin/python" ] ||
   ! "$VENV/bin/python" -c "import onnxruntime, openvino" 2>/dev/null; then
  "$PY" -m venv --system-site-packages "$VENV"
  numpy_version=$("$PY" -c "import numpy; print(numpy.__version__)")
  echo "numpy==$numpy_version" >"$VENV/constraints.txt"
  "$VENV/bin/pip" install -q -c "$VENV/constraints.txt" "onnxruntime==$ORT_VERSION" "openvino==$OV_VERSION"
fi
cmake --build "$BUILD" -j"$(nproc)" --target hrnet-infer bench_model >/dev/null
exec "$VENV/bin/python" benchmarks/cpu_peers.py --ours "$BUILD" "$@"
