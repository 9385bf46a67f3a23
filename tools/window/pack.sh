#!/usr/bin/env bash
# The GPU window kit, step 1 of 2, on the development machine (no GPU needed): builds the
# programs the device steps run (tools/window/targets.txt) as a Release CUDA build for sm_90a with
# HR_SHARED=ON (one libhrnet_core.so carries the CUDA fatbin; programs find it through their
# $ORIGIN/../lib RPATH), strips them and packs them, with the few system libraries the device
# image may lack, into the carry folder .window/:
#
#   .window/kit.tar.xz     bin/ (the programs), lib/ (libhrnet_core.so, yaml-cpp, simdjson,
#                          libjpeg, libgomp), lib/fallback/ (libstdc++, libgcc_s: used on the
#                          device only if its own are too old)
#   .window/deps.tar.xz    headers and CMake files of Eigen, Catch2, stb, yaml-cpp, simdjson,
#                          libjpeg, the cuDNN frontend: only for run.sh's fallback rebuild on
#                          the device
#   .window/kernels.txt    the CUDA kernels changed since --since (micro-benchmarks and
#                          sanitizer cases run only for these)
#   .window/sources.sha256 the sources the programs were built from (run.sh finds a stale kit)
#   .window/info.txt       commit, build options, toolchain
#   .window/manifest.txt   every file, in the folder and in the archives, with its size
#
# Not libcuda, cudart, cuBLAS or cuDNN: run.sh takes those from the device (/usr/local/cuda,
# the PyTorch venv's site-packages/nvidia/*/lib). .window/ is ignored through .git/info/exclude
# (this script adds "/.window/" there), so it travels only when a device call carries it.
#
# Then one device call (tools/window/run.sh says what it does):
#   command "tools/window/run.sh $OUT", carry [".window"], timeout_s 480
#
# Usage: tools/window/pack.sh [--build-dir DIR] [--out DIR] [--since REV] [--kernels "K ..."]
#                             [--jobs N] [--no-build]
#        tools/window/pack.sh --check BUILD_DIR [--cuda ON|OFF] [--exists name=0|1 ...]
#   --build-dir  the kit's build tree (default build-kit)
#   --since      kernels changed since this revision, uncommitted and untracked changes
#                included (default HEAD: only what is not committed yet)
#   --kernels    the changed-kernel list itself ("none", "all" or keys: conv fuse bn
#                group_norm elementwise loss optim pool resample layout linear runtime)
#   --check      a dry run against an existing build tree (the ctest entry window_kit_check):
#                checks that run.sh calls only programs listed in targets.txt and reads only
#                files that exist, that every listed program of this build exists, that each
#                one's libraries resolve and fall into a known class, and an existing kit's
#                manifest; prints the manifest the kit would have. Builds nothing. Exit 0, 1
#                on a problem, 77 when the CUDA-only parts were skipped (CPU-only build).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BUILD="$ROOT/build-kit"
KITDIR="$ROOT/.window"
SINCE=HEAD
KERNELS=""
JOBS="$(nproc 2>/dev/null || echo 2)"
DO_BUILD=1
CHECK=""
CHECK_CUDA=""
declare -A EXISTS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD="$(realpath -m "$2")"; shift 2 ;;
    --out) KITDIR="$(realpath -m "$2")"; shift 2 ;;
    --since) SINCE="$2"; shift 2 ;;
    --kernels) KERNELS="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    --no-build) DO_BUILD=0; shift ;;
    --check) CHECK="$(realpath -m "$2")"; shift 2 ;;
    --cuda) CHECK_CUDA="$2"; shift 2 ;;
    --exists) EXISTS["${2%%=*}"]="${2#*=}"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d;s/^# \{0,1\}//'; exit 0 ;;
    *) echo "pack.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

# ---- what the kit holds, shared by the pack and the check

# targets.txt: "build/relative/path kind" lines
TPATHS=()
TKINDS=()
while read -r p k _; do
  case "$p" in ''|'#'*) continue ;; esac
  TPATHS+=("$p")
  TKINDS+=("$k")
done <"$HERE/targets.txt"

# The class of a shared library, by its name:
#   base      the C library: always on the device
#   fallback  libstdc++, libgcc_s: the device's (newer) ones first; packed in lib/fallback
#   device    the driver, CUDA runtime, cuBLAS, cuDNN: from the device's CUDA or PyTorch
#   project   libhrnet_*: packed
#   pack      anything else (yaml-cpp, simdjson, libjpeg, libgomp): packed
lib_class() {
  case "$1" in
    linux-vdso.so*|ld-linux*|libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libutil.so*|libresolv.so*)
      echo base ;;
    libstdc++.so*|libgcc_s.so*) echo fallback ;;
    libcuda.so*|libcudart.so*|libcublas.so*|libcublasLt.so*|libcudnn*.so*|libnvrtc*.so*|libnvJitLink*.so*|libnvidia-*.so*|libnccl.so*)
      echo device ;;  # libnccl: 218 MB; the device's CUDA or PyTorch's nvidia-nccl wheel has it
    libhrnet_*) echo project ;;
    *) echo pack ;;
  esac
}

# "name path" for every library a binary needs (path "not-found" when ldd finds none)
deps_of() {
  ldd "$1" 2>/dev/null | awk '
    /=> not found/ { print $1, "not-found"; next }
    /=>/ { print $1, $3; next }
    /^[ \t]*\// { n = $1; sub(".*/", "", n); print n, $1 }'
}

# The programs run.sh calls ("$BIN/name") and the files of the tree it reads ("$ROOT/path";
# what it makes itself it writes "${ROOT}/path")
# (also every word of its code that names one of ours: test_*, bench_*, hrnet-*, with no
# extension, e.g. a program named in a list that a loop calls as "$BIN/$t")
runsh_bins() {
  {
    grep -oE '\$BIN/[A-Za-z0-9_.-]+' "$HERE/run.sh" | sed 's/^\$BIN\///'
    grep -vE '^[[:space:]]*#' "$HERE/run.sh" |
      grep -oE '\b(test|bench)_[A-Za-z0-9_]+(\.[A-Za-z]+)?|\bhrnet-[a-z]+(\.[A-Za-z]+)?' | grep -v '\.'
  } | sort -u
}
runsh_files() { grep -oE '\$ROOT/[A-Za-z0-9_./-]+' "$HERE/run.sh" | sed 's/^\$ROOT\///' | sort -u; }

PROBLEMS=0
problem() { echo "PROBLEM: $*"; PROBLEMS=$((PROBLEMS + 1)); }

check_runsh() {
  local b f found
  bash -n "$HERE/run.sh" || problem "tools/window/run.sh does not parse"
  for b in $(runsh_bins); do
    found=0
    for p in "${TPATHS[@]}"; do [ "$(basename "$p")" = "$b" ] && found=1; done
    [ $found = 1 ] || problem "run.sh calls \$BIN/$b, which targets.txt does not list (the kit would not have it)"
  done
  for f in $(runsh_files); do
    [ -e "$ROOT/$f" ] || problem "run.sh reads \$ROOT/$f, which does not exist"
  done
  # every GPU test of the tree runs in a window (a test added without a run.sh step never would)
  for f in "$ROOT"/tests/gpu/test_*.cpp; do
    b="$(basename "$f" .cpp)"
    runsh_bins | grep -qx "$b" || problem "run.sh never calls the GPU test $b (tests/gpu/$b.cpp)"
  done
  echo "run.sh: calls $(runsh_bins | wc -l) programs, all in targets.txt; reads $(runsh_files | wc -l) files of the tree"
}

# The source files the programs are built from, as they travel (tracked and untracked, not
# ignored): what sources.sha256 lists. run.sh enumerates the same with find.
SRC_DIRS=(engine kernels models data tasks apps tests benchmarks cmake)
source_list() {
  (cd "$ROOT" && {
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
      git ls-files -co --exclude-standard -- "${SRC_DIRS[@]}"
    else
      find "${SRC_DIRS[@]}" -type f
    fi | grep -E '\.(cpp|h|hpp|cu|cuh|in|cmake)$|(^|/)CMakeLists\.txt$' || true
    echo CMakeLists.txt
    echo hrnet.h
    echo configs/quickstart_synth.yaml
  } | sort -u | while read -r f; do [ -f "$f" ] && echo "$f"; done)
}

changed_kernels() {
  (cd "$ROOT" && {
    git diff --name-only "$SINCE" -- kernels/cuda benchmarks 2>/dev/null || true
    git ls-files --others --exclude-standard -- kernels/cuda benchmarks 2>/dev/null || true
  } | sort -u | while read -r f; do
    case "$f" in
      kernels/cuda/conv_igemm*|kernels/cuda/conv.cpp|benchmarks/bench_cuda_conv.cu) echo conv ;;
      kernels/cuda/fuse_upsample*|benchmarks/bench_cuda_fuse.cu) echo fuse ;;
      kernels/cuda/fused_bn.cu|kernels/cuda/batchnorm.cu|kernels/cuda/fused.h|benchmarks/bench_cuda_bn.cu) echo bn ;;
      kernels/cuda/elementwise.cu) echo elementwise ;;
      kernels/cuda/loss.cu) echo loss ;;
      kernels/cuda/optim.cu) echo optim ;;
      kernels/cuda/pool.cu) echo pool ;;
      kernels/cuda/resample.cu) echo resample ;;
      kernels/cuda/layout.cu) echo layout ;;
      kernels/cuda/linear.cpp) echo linear ;;
      kernels/cuda/runtime.cpp|kernels/cuda/check.h) echo runtime ;;
      kernels/cuda/*.cu) basename "$f" .cu ;;  # a new kernel: its file name (group_norm, ...)
    esac
  done | sort -u)
}

human() { numfmt --to=iec --suffix=B "$1" 2>/dev/null || echo "$1 B"; }

# ---------------------------------------------------------------------------------------------
# --check: the dry run (ctest)
if [ -n "$CHECK" ]; then
  echo "window kit check: build tree $CHECK"
  [ -d "$CHECK" ] || { echo "PROBLEM: no build tree at $CHECK"; exit 1; }
  if [ -z "$CHECK_CUDA" ]; then
    CHECK_CUDA=OFF
    compgen -G "$CHECK/CMakeFiles/*/CMakeCUDACompiler.cmake" >/dev/null && CHECK_CUDA=ON
  fi
  check_runsh
  for f in targets.txt run.sh; do [ -f "$HERE/$f" ] || problem "tools/window/$f is missing"; done
  [ "$(source_list | wc -l)" -gt 50 ] || problem "the source list for sources.sha256 is nearly empty"
  skipped_cuda=0
  declare -A LIBS=()
  total=0
  echo
  echo "the manifest the kit would have (sizes before stripping):"
  for i in "${!TPATHS[@]}"; do
    p="${TPATHS[$i]}"
    name="$(basename "$p")"
    if [ "${TKINDS[$i]}" = cuda ] && [ "$CHECK_CUDA" != ON ]; then
      echo "  (skipped: $name exists only in CUDA builds)"
      skipped_cuda=1
      continue
    fi
    if [ "${EXISTS[$name]:-1}" = 0 ]; then
      echo "  (skipped: $name is not a target of this build: HR_BUILD_APPS/HR_BUILD_BENCHMARKS off)"
      continue
    fi
    if [ ! -x "$CHECK/$p" ]; then
      problem "$p is not in the build tree (the kit needs it; build it first)"
      continue
    fi
    s=$(stat -c %s "$CHECK/$p")
    total=$((total + s))
    printf "  %10d bin/%s\n" "$s" "$name"
    while read -r lib path; do
      cls=$(lib_class "$lib")
      case "$cls" in
        base) ;;
        device)
          [ "$path" = not-found ] && echo "  note: $name needs $lib, not found here (the device provides it)" ;;
        *)
          if [ "$path" = not-found ]; then
            problem "$name needs $lib ($cls), which does not resolve here: the kit could not pack it"
          else
            LIBS["$lib"]="$cls $path"
          fi ;;
      esac
    done < <(deps_of "$CHECK/$p")
  done
  for lib in $(printf '%s\n' "${!LIBS[@]}" | sort); do
    read -r cls path <<<"${LIBS[$lib]}"
    s=$(stat -L -c %s "$path")
    total=$((total + s))
    if [ "$cls" = fallback ]; then printf "  %10d lib/fallback/%s\n" "$s" "$lib"; else printf "  %10d lib/%s\n" "$s" "$lib"; fi
  done
  echo "  total $(human $total) uncompressed, unstripped"
  # an existing kit: every file its manifest lists is there with its size
  if [ -f "$KITDIR/manifest.txt" ]; then
    n=0
    while read -r what size path; do
      [ "$what" = file ] || continue
      n=$((n + 1))
      [ -f "$KITDIR/$path" ] || { problem "the kit in $KITDIR lacks $path (its manifest lists it)"; continue; }
      [ "$(stat -c %s "$KITDIR/$path")" = "$size" ] || problem "$KITDIR/$path is not the size its manifest says"
    done <"$KITDIR/manifest.txt"
    echo "existing kit $KITDIR: $n files checked against its manifest"
  fi
  echo "changed kernels since $SINCE: $(changed_kernels | tr '\n' ' ')"
  if [ $PROBLEMS -gt 0 ]; then
    echo "window kit check: $PROBLEMS problem(s)"
    exit 1
  fi
  if [ $skipped_cuda = 1 ]; then
    echo "window kit check: ok; the CUDA-only programs were skipped (CPU-only build)"
    exit 77
  fi
  echo "window kit check: ok"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# the pack
cd "$ROOT"
check_runsh
[ $PROBLEMS -eq 0 ] || exit 1

# .window/ must never be committed or travel unasked: ignore it in this clone
EXCLUDE="$(git rev-parse --git-path info/exclude 2>/dev/null || echo .git/info/exclude)"
mkdir -p "$(dirname "$EXCLUDE")"
grep -qxF "/$(basename "$KITDIR")/" "$EXCLUDE" 2>/dev/null || echo "/$(basename "$KITDIR")/" >>"$EXCLUDE"

NVCC=/usr/local/cuda/bin/nvcc
[ -x "$NVCC" ] || NVCC="$(command -v nvcc || true)"
[ -n "$NVCC" ] || { echo "pack.sh: no nvcc: the kit is a CUDA build" >&2; exit 1; }
# (no MPI: one GPU runs one process; the NCCL path is tested with a communicator of one rank)
CFG=(-DCMAKE_BUILD_TYPE=Release -DHR_CUDA=ON -DHR_CUDA_ARCH=90a-real -DHR_SHARED=ON -DHR_MPI=OFF
     -DHR_BUILD_TESTS=ON -DHR_BUILD_BENCHMARKS=ON -DHR_BUILD_APPS=ON -DCMAKE_CUDA_COMPILER="$NVCC")
TNAMES=()
for p in "${TPATHS[@]}"; do TNAMES+=("$(basename "$p")"); done
if [ $DO_BUILD = 1 ]; then
  GEN=()
  command -v ninja >/dev/null && GEN=(-G Ninja)
  if [ -f "$BUILD/CMakeCache.txt" ]; then GEN=(); fi
  t0=$(date +%s)
  cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" "${CFG[@]}" >/dev/null
  cmake --build "$BUILD" -j "$JOBS" --target "${TNAMES[@]}"
  echo "build: $(($(date +%s) - t0)) s"
fi
grep -q '^HR_SHARED:BOOL=ON' "$BUILD/CMakeCache.txt" ||
  { echo "pack.sh: $BUILD is not an HR_SHARED=ON build" >&2; exit 1; }

STAGE="$(mktemp -d /tmp/window_stage.XXXXXX)"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/kit/bin" "$STAGE/kit/lib/fallback" "$STAGE/out"
declare -A LIBS=()
for p in "${TPATHS[@]}"; do
  [ -x "$BUILD/$p" ] || { echo "pack.sh: $BUILD/$p was not built" >&2; exit 1; }
  cp "$BUILD/$p" "$STAGE/kit/bin/"
  strip "$STAGE/kit/bin/$(basename "$p")"
  while read -r lib path; do
    cls=$(lib_class "$lib")
    case "$cls" in
      base|device) ;;
      *)
        [ "$path" != not-found ] || { echo "pack.sh: $p needs $lib, which does not resolve" >&2; exit 1; }
        LIBS["$lib"]="$cls $path" ;;
    esac
  done < <(deps_of "$BUILD/$p")
done
for lib in "${!LIBS[@]}"; do
  read -r cls path <<<"${LIBS[$lib]}"
  case "$cls" in
    fallback) cp -L "$path" "$STAGE/kit/lib/fallback/$lib" ;;
    project) cp -L "$path" "$STAGE/kit/lib/$lib"; strip --strip-unneeded "$STAGE/kit/lib/$lib" ;;
    *) cp -L "$path" "$STAGE/kit/lib/$lib" ;;
  esac
done
# the libraries' own needs (a packed library needing another non-device library)
for f in "$STAGE"/kit/lib/*.so*; do
  while read -r lib path; do
    cls=$(lib_class "$lib")
    case "$cls" in base|device|fallback) continue ;; esac
    [ -e "$STAGE/kit/lib/$lib" ] || { cp -L "$path" "$STAGE/kit/lib/$lib"; LIBS["$lib"]="$cls $path"; }
  done < <(deps_of "$f")
done

# headers and CMake files for the fallback rebuild on the device (it has no apt)
DEPS_PKGS=(libeigen3-dev catch2 libstb-dev libstb0 libyaml-cpp-dev libyaml-cpp0.7 libsimdjson-dev
           libsimdjson14 libjpeg62-turbo-dev libjpeg62-turbo)
if command -v dpkg >/dev/null; then
  mkdir -p "$STAGE/deps"
  for pkg in "${DEPS_PKGS[@]}"; do
    dpkg -L "$pkg" 2>/dev/null | while read -r f; do
      case "$f" in /usr/share/doc*|/usr/share/man*|/usr/share/lintian*) continue ;; esac
      if [ -f "$f" ] || [ -L "$f" ]; then
        mkdir -p "$STAGE/deps$(dirname "$f")"
        cp -a "$f" "$STAGE/deps$f"
      fi
    done || echo "pack.sh: package $pkg not installed: the fallback rebuild may lack it" >&2
  done
  # the pinned cuDNN frontend headers (scripts/cudnn_frontend.sh), if this build has them
  if [ -f "$ROOT/.deps/cudnn_frontend/include/cudnn_frontend.h" ]; then
    mkdir -p "$STAGE/deps/usr/share/cudnn_frontend"
    cp -a "$ROOT/.deps/cudnn_frontend/include" "$STAGE/deps/usr/share/cudnn_frontend/"
  fi
  tar -C "$STAGE/deps" -cf - usr | xz -T0 -6 >"$STAGE/out/deps.tar.xz"
else
  echo "pack.sh: no dpkg: no deps.tar.xz (the device's fallback rebuild needs Eigen, Catch2, stb)" >&2
fi

tar -C "$STAGE/kit" -cf - bin lib | xz -T0 -6 >"$STAGE/out/kit.tar.xz"
if [ -n "$KERNELS" ]; then echo "$KERNELS" | tr ' ,' '\n\n' | sed '/^$/d'; else changed_kernels; fi >"$STAGE/out/kernels.txt"
source_list | (cd "$ROOT" && xargs -d '\n' sha256sum) >"$STAGE/out/sources.sha256"
{
  echo "packed $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
  echo "commit $(git rev-parse HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "cmake ${CFG[*]}"
  echo "nvcc $("$NVCC" --version | tail -1)"
  echo "cudnn (headers) $(awk '/define CUDNN_(MAJOR|MINOR|PATCHLEVEL) /{printf "%s%s", s, $3; s="."}' /usr/local/cuda/include/cudnn_version.h 2>/dev/null)"
  echo "kernels changed since $SINCE: $(tr '\n' ' ' <"$STAGE/out/kernels.txt")"
} >"$STAGE/out/info.txt"

# the manifest: "member SIZE PATH" for the archives' files, "file SIZE PATH" for the folder's
{
  echo "# hrnet GPU window kit: 'member' = a file of kit.tar.xz (unpacked), 'file' = a file of this folder"
  (cd "$STAGE/kit" && find . -type f -printf 'member %s %P\n' | sort -k3)
  (cd "$STAGE/out" && find . -type f -printf 'file %s %P\n' | sort -k3)
} >"$STAGE/manifest.txt"
mv "$STAGE/manifest.txt" "$STAGE/out/manifest.txt"

rm -rf "$KITDIR"
mkdir -p "$KITDIR"
cp "$STAGE"/out/* "$KITDIR/"

# ---- sizes
echo
echo "kit $KITDIR:"
(cd "$STAGE/kit" && {
  printf "  %-44s %10s\n" "bin/ (stripped, ${#TPATHS[@]} programs)" "$(human "$(du -cb bin | tail -1 | cut -f1)")"
  for f in lib/*.so* lib/fallback/*; do printf "  %-44s %10s\n" "$f" "$(human "$(stat -c %s "$f")")"; done
})
echo "  as carried:"
for f in "$KITDIR"/*; do printf "    %-42s %10s\n" "$(basename "$f")" "$(human "$(stat -c %s "$f")")"; done
kit=$(du -cb "$KITDIR"/* | tail -1 | cut -f1)
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
echo "  kit $(human "$kit") + working tree $(human "$tree") = $(human $((kit + tree))) of the 64 MiB a device call may carry"
[ $((kit + tree)) -lt $((60 * 1024 * 1024)) ] || { echo "pack.sh: over 60 MiB: too close to the limit" >&2; exit 1; }
echo "  changed kernels (micro-benchmarks, sanitizer): $(tr '\n' ' ' <"$KITDIR/kernels.txt")"
echo
echo "device call: command \"tools/window/run.sh \$OUT\", carry [\".window\"], timeout_s 480"
