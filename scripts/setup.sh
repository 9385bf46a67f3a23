#!/usr/bin/env bash
# Installs the build dependencies from Debian's packages (CUDA is optional: the CUDA backend is
# built when nvcc is found). Safe to re-run; installs only what is missing.
set -euo pipefail
pkgs=(build-essential cmake libeigen3-dev catch2 libyaml-cpp-dev libstb-dev libsimdjson-dev libjpeg62-turbo-dev
      clang  # clang: libFuzzer for scripts/fuzz.sh
      openmpi-bin libopenmpi-dev  # data-parallel jobs (mpirun; engine/dist.h)
      libonnx-dev libprotobuf-dev protobuf-compiler  # ONNX export (hrnet-export; docs/EXPORT.md)
      # the Python package and its tests (scripts/python_env.sh; docs/PYTHON.md)
      python3-dev python3-venv python3-numpy python3-pytest python3-torch python3-pil)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
