#!/usr/bin/env bash
# The project's Python environment: a virtual environment over Debian's Python (which has numpy,
# PyTorch and pytest from scripts/setup.sh), with the pinned PyPI packages the Python package and
# the ONNX checks need: nanobind and scikit-build-core (building the `hrnet` module), ONNX Runtime
# and OpenVINO (running exported models). numpy is held at the system's version so that Debian's
# PyTorch keeps working. Safe to re-run: installs only when a package is missing.
#   scripts/python_env.sh [VENV]     (default: build/venv; prints the venv's python)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-build/venv}"
PY="${HR_PYTHON:-/usr/bin/python3}"
NANOBIND_VERSION=2.9.2
SKBUILD_VERSION=0.11.6
ORT_VERSION=1.32.0
OV_VERSION=2026.4.1
"$PY" -c "import numpy, torch, pytest" 2>/dev/null || {
  echo "python_env: $PY lacks numpy/torch/pytest (scripts/setup.sh installs python3-numpy python3-torch python3-pytest)" >&2
  exit 1
}
if [ ! -x "$VENV/bin/python" ] ||
   ! "$VENV/bin/python" - <<EOF 2>/dev/null
import importlib.metadata as m
want = {"nanobind": "$NANOBIND_VERSION", "scikit_build_core": "$SKBUILD_VERSION",
        "onnxruntime": "$ORT_VERSION", "openvino": "$OV_VERSION"}
assert all(m.version(k) == v for k, v in want.items())
EOF
then
  "$PY" -m venv --system-site-packages "$VENV" >&2
  numpy_version=$("$PY" -c "import numpy; print(numpy.__version__)")
  echo "numpy==$numpy_version" >"$VENV/constraints.txt"
  "$VENV/bin/pip" install -q --disable-pip-version-check -c "$VENV/constraints.txt" \
    "nanobind==$NANOBIND_VERSION" "scikit-build-core==$SKBUILD_VERSION" \
    "onnxruntime==$ORT_VERSION" "openvino==$OV_VERSION" >&2
fi
echo "$PWD/$VENV/bin/python"
