#!/usr/bin/env bash
# Quick start, Python: Debian's packages (scripts/setup.sh), the environment build/venv (Debian's
# Python with its numpy and PyTorch; nanobind, scikit-build-core, ONNX Runtime and OpenVINO pinned
# from PyPI: scripts/python_env.sh), then `pip install .` into it: the engine and the module built
# by CMake through scikit-build-core (with CUDA when nvcc is found). Extra arguments go to pip,
# e.g. --config-settings=cmake.define.HR_CUDA=OFF.
#   scripts/install_python.sh && build/venv/bin/python -c "import hrnet"
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
PY=$(scripts/python_env.sh)
"$PY" -m pip install --disable-pip-version-check -q . "$@"
echo "install_python: hrnet installed into build/venv ($("$PY" -c 'import hrnet, os; print(os.path.dirname(hrnet.__file__))'))"
