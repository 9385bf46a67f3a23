#!/usr/bin/env bash
# Copies the Debian build dependencies (headers, CMake configs, the shared libraries) into
# .gpu_deps/ so that a machine without apt (the lent GPU machine) can build the project:
#   tools/pack_gpu_deps.sh; then carry .gpu_deps and configure with
#   -DCMAKE_PREFIX_PATH=$PWD/.gpu_deps/usr (tools/gpu_check.sh does this when HR_DEPS_DIR is set).
set -euo pipefail
cd "$(dirname "$0")/.."
out=.gpu_deps
rm -rf "$out"
mkdir -p "$out"
for pkg in libeigen3-dev catch2 libyaml-cpp-dev libyaml-cpp0.7 libstb-dev libsimdjson-dev \
    libsimdjson14 libjpeg62-turbo-dev libjpeg62-turbo; do
  dpkg -L "$pkg" | while read -r f; do
    case "$f" in /usr/share/doc*|/usr/share/man*|/usr/share/pkgconfig*|/usr/lib/*/pkgconfig*) continue ;; esac
    if [ -f "$f" ] || [ -L "$f" ]; then
      mkdir -p "$out$(dirname "$f")"
      cp -a "$f" "$out$f"
    fi
  done
done
du -sh "$out"
