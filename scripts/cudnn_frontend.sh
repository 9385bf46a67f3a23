#!/usr/bin/env bash
# NVIDIA's cuDNN frontend (header-only C++: cuDNN's graph API, kernels/cuda/conv_cudnn_graph.cpp),
# pinned: the include/ folder of the nvidia-cudnn-frontend wheel from PyPI, unpacked into
# .deps/cudnn_frontend/include (ignored by git), where engine/CMakeLists.txt looks for it. Only
# when a CUDA toolkit is found; safe to re-run (nothing is fetched when the pinned version is
# there). Without it the build uses cuDNN's legacy API alone. docs/DEPENDENCIES.md says why.
#   scripts/cudnn_frontend.sh [PYTHON]   (a Python with pip; default: the project's venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=1.32.0
DEST=.deps/cudnn_frontend
if ! command -v nvcc >/dev/null && [ ! -x /usr/local/cuda/bin/nvcc ] && [ -z "${CUDACXX:-}" ]; then
  exit 0  # no CUDA toolkit: nothing uses it
fi
if [ -f "$DEST/VERSION" ] && [ "$(cat "$DEST/VERSION")" = "$VERSION" ] &&
   [ -f "$DEST/include/cudnn_frontend.h" ]; then
  exit 0
fi
PY="${1:-$(scripts/python_env.sh)}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
     -d "$tmp" "nvidia-cudnn-frontend==$VERSION" >&2; then
  echo "cudnn_frontend: could not fetch nvidia-cudnn-frontend==$VERSION from PyPI: building with" \
       "cuDNN's legacy API alone" >&2
  exit 0
fi
rm -rf "$DEST"
mkdir -p "$DEST"
"$PY" - "$tmp" "$DEST" <<'PYEOF'
import glob, sys, zipfile
src, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(src + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("include/")]
    for n in names:
        z.extract(n, dest)
    for n in z.namelist():  # its licence travels with the headers
        if n.endswith("LICENSE.txt") or n.endswith("LICENSE"):
            open(dest + "/LICENSE.txt", "wb").write(z.read(n))
            break
PYEOF
echo "$VERSION" >"$DEST/VERSION"
echo "cudnn_frontend: $VERSION headers in $DEST/include" >&2
