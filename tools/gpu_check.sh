#!/usr/bin/env bash
# All GPU work in one run, for a machine with a CUDA GPU (H100: CUDA 13, cmake, ninja, no
# internet). Usage: tools/gpu_check.sh OUTDIR
#
# Steps: GPU info (nvidia-smi -q header) -> configure build-gpu (Release, HR_CUDA=ON, arch 90a)
# -> build with all cores -> ctest -L gpu -> ctest -LE gpu (the rest; together: all tests) ->
# compute-sanitizer memcheck and racecheck on every tests/gpu executable (Catch2 tag
# [sanitize] where the executable has it, else the whole executable) -> CUDA benchmarks at batch
# 32 and 128 -> CPU benchmarks. It never changes clocks or GPU settings, keeps going after a
# failing step, and ends with a summary table of steps, exit codes and durations.
#
# Dependencies: Eigen 3, Catch2 v2 (find_package, config mode) and stb (find_path). If they are
# not installed, set HR_DEPS_DIR to an install prefix holding usr/include/{eigen3,catch2,stb}
# (with or without the packages' CMake files) or to a folder with the include trees eigen3/,
# catch2/, stb/; without HR_DEPS_DIR the repo's .gpu_deps/ is used when the system lacks them.
# Minimal CMake package files are written where a package has none.
#
# OUTDIR gets at most 8 files: summary.md, build.log, tests.log, sanitizer.log, bench.md,
# bench_conv.csv, bench_fuse.csv and logs.tar.gz (every individual log and table).
# Time limits per step keep the whole run under ~9 minutes on a 16-core H100 machine
# (HR_GPU_CHECK_BUDGET seconds, default 520: no step runs past it; later steps are skipped).
set -u
if [ $# -lt 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$1"
OUT="$(cd "$1" && pwd)"
WORK="$(mktemp -d /tmp/gpu_check.XXXXXX)"
for f in build.log tests.log sanitizer.log bench.md; do : >"$OUT/$f"; done
BUILD="$ROOT/build-gpu"
JOBS="$(nproc 2>/dev/null || echo 8)"
BUDGET="${HR_GPU_CHECK_BUDGET:-520}"
T0=$(date +%s)
STEPS=()
CODES=()
SECS=()

elapsed() { echo $(($(date +%s) - T0)); }

# run_step NAME LOGFILE TIMEOUT_S CMD...   (appends to LOGFILE, records exit code and time)
run_step() {
  local name="$1" log="$2" limit="$3"
  shift 3
  local start rc
  start=$(date +%s)
  local left=$((BUDGET - $(elapsed)))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 10 ]; then
    echo "== $name: SKIPPED (time budget of ${BUDGET}s used up)" | tee -a "$log"
    STEPS+=("$name")
    CODES+=("skipped")
    SECS+=(0)
    return 0
  fi
  echo "== $name  ($(date -u +%H:%M:%S), t+$(elapsed)s): $*" | tee -a "$log"
  timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  [ $rc -eq 124 ] && echo "== $name: TIMED OUT after ${limit}s" | tee -a "$log"
  echo "== $name: exit $rc" | tee -a "$log"
  STEPS+=("$name")
  CODES+=("$rc")
  SECS+=($(($(date +%s) - start)))
  return 0
}

record() {  # record NAME CODE  (a step that ran inline)
  STEPS+=("$1")
  CODES+=("$2")
  SECS+=(0)
}

# ---- GPU and toolchain information
{
  echo "# gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host $(hostname), $JOBS cores, repo $ROOT"
  (cd "$ROOT" && git rev-parse HEAD 2>/dev/null) || echo "(no git commit)"
  echo
  nvidia-smi -q 2>&1 | head -60
  echo
  nvidia-smi --query-gpu=name,driver_version,pstate,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu,ecc.mode.current --format=csv 2>&1
  echo
  (nvcc --version || /usr/local/cuda/bin/nvcc --version) 2>&1 | tail -2
  cmake --version 2>&1 | head -1
  ninja --version 2>&1 | sed 's/^/ninja /'
} >"$WORK/gpu_info.txt" 2>&1
cat "$WORK/gpu_info.txt"

# A build dir configured with another generator cannot be reused.
if [ -f "$BUILD/CMakeCache.txt" ] && command -v ninja >/dev/null 2>&1 &&
   ! grep -q "CMAKE_GENERATOR:INTERNAL=Ninja" "$BUILD/CMakeCache.txt"; then
  rm -rf "$BUILD"
fi

# ---- dependencies
# HR_DEPS_DIR is either an install prefix (HR_DEPS_DIR/usr/{include,lib,share} with the
# packages' own CMake files, like .gpu_deps/) or flat include trees (eigen3/, catch2/, stb/).
# Unset: the repo's .gpu_deps/ is used when the system lacks Eigen or Catch2.
CMAKE_DEPS=()
DEPS="${HR_DEPS_DIR:-}"
if [ -z "$DEPS" ] && [ -d "$ROOT/.gpu_deps" ] &&
   { [ ! -d /usr/include/eigen3 ] || [ ! -f /usr/include/catch2/catch.hpp ]; }; then
  DEPS="$ROOT/.gpu_deps"
fi
if [ -n "$DEPS" ]; then
  D="$(cd "$DEPS" && pwd)"
  if [ -d "$D/usr/include" ]; then PREFIX="$D/usr"; INC="$D/usr/include"; else PREFIX="$D"; INC="$D"; fi
  CMAKE_DEPS+=("-DCMAKE_PREFIX_PATH=$PREFIX" "-DCMAKE_INCLUDE_PATH=$INC")
  # packages without their own CMake files get minimal ones
  if [ ! -f "$PREFIX/share/eigen3/cmake/Eigen3Config.cmake" ] && [ -d "$INC/eigen3" ]; then
    mkdir -p "$BUILD/hr_deps_cmake/Eigen3"
    cat >"$BUILD/hr_deps_cmake/Eigen3/Eigen3Config.cmake" <<EOF
if(NOT TARGET Eigen3::Eigen)
  add_library(Eigen3::Eigen INTERFACE IMPORTED)
  set_target_properties(Eigen3::Eigen PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "$INC/eigen3")
endif()
set(EIGEN3_INCLUDE_DIR "$INC/eigen3")
set(Eigen3_FOUND TRUE)
EOF
    cat >"$BUILD/hr_deps_cmake/Eigen3/Eigen3ConfigVersion.cmake" <<'EOF'
set(PACKAGE_VERSION 3.4.0)
if(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
endif()
EOF
    CMAKE_DEPS+=("-DEigen3_DIR=$BUILD/hr_deps_cmake/Eigen3")
  fi
  if [ ! -f "$PREFIX/lib/cmake/Catch2/Catch2Config.cmake" ] && [ -d "$INC/catch2" ]; then
    mkdir -p "$BUILD/hr_deps_cmake/Catch2"
    cat >"$BUILD/hr_deps_cmake/Catch2/Catch2Config.cmake" <<EOF
if(NOT TARGET Catch2::Catch2)
  add_library(Catch2::Catch2 INTERFACE IMPORTED)
  set_target_properties(Catch2::Catch2 PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "$INC")
endif()
set(Catch2_FOUND TRUE)
EOF
    cat >"$BUILD/hr_deps_cmake/Catch2/Catch2ConfigVersion.cmake" <<'EOF'
set(PACKAGE_VERSION 2.13.10)
if(PACKAGE_FIND_VERSION_MAJOR AND NOT PACKAGE_FIND_VERSION_MAJOR EQUAL 2)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
endif()
EOF
    CMAKE_DEPS+=("-DCatch2_DIR=$BUILD/hr_deps_cmake/Catch2")
  fi
  export LD_LIBRARY_PATH="$PREFIX/lib/x86_64-linux-gnu:$PREFIX/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "dependencies from $D (prefix $PREFIX)"
else
  [ -d /usr/include/eigen3 ] || echo "WARNING: /usr/include/eigen3 missing and no HR_DEPS_DIR"
  [ -f /usr/include/catch2/catch.hpp ] || echo "WARNING: catch2 missing and no HR_DEPS_DIR"
fi

# ---- configure and build
CFG=(cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DHR_CUDA=ON -DHR_CUDA_ARCH=90a
     -DHR_BUILD_TESTS=ON -DHR_BUILD_BENCHMARKS=ON "${CMAKE_DEPS[@]}")
command -v ninja >/dev/null 2>&1 && CFG+=(-G Ninja)
[ -x /usr/local/cuda/bin/nvcc ] && CFG+=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
run_step configure "$OUT/build.log" 120 "${CFG[@]}"
# keep going: build whatever builds
if command -v ninja >/dev/null 2>&1; then KEEP=(-- -k 0); else KEEP=(-- -k); fi
run_step build "$OUT/build.log" 330 cmake --build "$BUILD" -j "$JOBS" "${KEEP[@]}"
grep -E "error|warning: .*spill|bytes spill" "$OUT/build.log" | head -40 >"$WORK/build_errors.txt"

# ---- tests
run_step "ctest -L gpu" "$OUT/tests.log" 180 \
  ctest --test-dir "$BUILD" -L gpu --output-on-failure --timeout 170
run_step "ctest -LE gpu (all other tests)" "$OUT/tests.log" 180 \
  ctest --test-dir "$BUILD" -LE gpu --output-on-failure -j "$JOBS" --timeout 170

# ---- hrnet-train on the GPU with bf16 autocast: the quick-start config on a small synthetic set,
# two epochs (training, evaluation with flip test, checkpoint), as a user runs it
if [ -x "$BUILD/apps/hrnet-train" ] && [ -x "$BUILD/apps/hrnet-synth" ]; then
  run_step "hrnet-synth 300+60" "$OUT/train_gpu.log" 60 \
    "$BUILD/apps/hrnet-synth" --out "$WORK/synth" --train 300 --val 60 --quiet
  run_step "hrnet-train cuda bf16" "$OUT/train_gpu.log" 150 \
    "$BUILD/apps/hrnet-train" --cfg "$ROOT/configs/quickstart_synth.yaml" --out "$WORK/train_gpu" \
    DATASET.ROOT "$WORK/synth" TRAIN.END_EPOCH 2 ENGINE.DEVICE cuda ENGINE.PRECISION bf16 \
    TRAIN.BATCH_SIZE_PER_GPU 32
  # the same op by op (ENGINE.GRAPH False): the eager path must keep working too
  run_step "hrnet-train cuda bf16 eager" "$OUT/train_gpu.log" 150 \
    "$BUILD/apps/hrnet-train" --cfg "$ROOT/configs/quickstart_synth.yaml" --out "$WORK/train_gpu_eager" \
    DATASET.ROOT "$WORK/synth" TRAIN.END_EPOCH 1 ENGINE.DEVICE cuda ENGINE.PRECISION bf16 \
    TRAIN.BATCH_SIZE_PER_GPU 32 ENGINE.GRAPH False
fi

# ---- compute-sanitizer on the GPU test executables
SAN="$(command -v compute-sanitizer || true)"
[ -z "$SAN" ] && [ -x /usr/local/cuda/bin/compute-sanitizer ] && SAN=/usr/local/cuda/bin/compute-sanitizer
[ -z "$SAN" ] && [ -x /usr/local/cuda/compute-sanitizer/compute-sanitizer ] &&
  SAN=/usr/local/cuda/compute-sanitizer/compute-sanitizer
if [ -z "$SAN" ]; then
  echo "compute-sanitizer not found" | tee -a "$OUT/sanitizer.log"
  record "compute-sanitizer (not found)" 127
else
  for exe in "$BUILD"/tests/test_cuda_*; do
    [ -x "$exe" ] || continue
    name="$(basename "$exe")"
    # the [sanitize] subset where the executable has one; else the whole executable, with a
    # shorter limit
    # tests tagged [provokes-errors] make failing CUDA calls on purpose: never sanitized
    filter=("~[provokes-errors]")
    limit=90
    if "$exe" --list-test-names-only "[sanitize]" 2>/dev/null | grep -q .; then
      filter=("[sanitize]")
      limit=150
    fi
    for tool in memcheck racecheck; do
      extra=()
      tfilter=("${filter[@]}")
      # racecheck crashes inside cuBLAS's own Hopper kernels ("failed to handle a hardware
      # exception"; memcheck is clean there): test cases driving cuBLAS are left to memcheck
      [ "$tool" = racecheck ] && [ "${filter[0]}" = "~[provokes-errors]" ] && tfilter=("~[provokes-errors]~[cublas]")
      # cuBLAS's own Hopper GEMMs (nvjet_*: TMA + mbarrier) show as hazards to racecheck;
      # they are NVIDIA's code, so racecheck looks at ours only.
      [ "$tool" = racecheck ] && extra=(--racecheck-report hazard --kernel-name-exclude kns=nvjet)
      run_step "sanitizer $tool $name ${tfilter[*]:-(all)}" "$OUT/sanitizer.log" "$limit" \
        "$SAN" --tool "$tool" "${extra[@]}" --error-exitcode 86 "$exe" "${tfilter[@]}"
    done
  done
fi

# ---- benchmarks
: >"$OUT/bench.md"
for b in 32 128; do
  if [ -x "$BUILD/benchmarks/bench_cuda_conv" ]; then
    run_step "bench_cuda_conv --batch $b" "$WORK/bench_cuda_conv_b$b.log" 150 \
      "$BUILD/benchmarks/bench_cuda_conv" --batch "$b" --csv "$WORK/bench_conv_b$b.csv"
    { echo "## bench_cuda_conv, batch $b"; echo; grep -v "^== " "$WORK/bench_cuda_conv_b$b.log"; echo; } >>"$OUT/bench.md"
  else
    record "bench_cuda_conv --batch $b (not built)" 127
  fi
  if [ -x "$BUILD/benchmarks/bench_cuda_fuse" ]; then
    run_step "bench_cuda_fuse --batch $b" "$WORK/bench_cuda_fuse_b$b.log" 90 \
      "$BUILD/benchmarks/bench_cuda_fuse" --batch "$b" --csv "$WORK/bench_fuse_b$b.csv"
    { echo "## bench_cuda_fuse, batch $b"; echo; grep -v "^== " "$WORK/bench_cuda_fuse_b$b.log"; echo; } >>"$OUT/bench.md"
  else
    record "bench_cuda_fuse --batch $b (not built)" 127
  fi
done
# PyTorch's own cuDNN path on the same shapes, as an independent peer (when torch is there)
if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  for b in 32 128; do
    [ -f "$WORK/bench_conv_b$b.csv" ] || continue
    run_step "torch_cuda_conv --batch $b" "$WORK/torch_cuda_conv_b$b.log" 120 \
      python3 "$ROOT/benchmarks/torch_cuda_conv.py" "$WORK/bench_conv_b$b.csv" "$WORK/torch_conv_b$b.csv"
  done
  { head -n 1 "$WORK/torch_conv_b32.csv"; tail -q -n +2 "$WORK"/torch_conv_b*.csv; } >"$WORK/torch_conv_all.csv" 2>/dev/null
fi
# whole model: W32 pose 256x192 training step and inference, bf16 autocast, vs PyTorch eager and
# torch.compile (bench_model runs benchmarks/torch_model.py itself)
if [ -x "$BUILD/benchmarks/bench_model" ]; then
  run_step "bench_model cuda bf16 --batch 128" "$WORK/bench_model_b128.log" 240 \
    "$BUILD/benchmarks/bench_model" --device cuda --amp bf16 --batch 128 --steps 10 --warmup 3
  { echo "## bench_model, batch 128"; echo; grep -v "^== " "$WORK/bench_model_b128.log"; echo; } >>"$OUT/bench.md"
  # batch-1 latency (target <= 0.5 ms for the captured inference graph); no peer: latency target
  run_step "bench_model cuda bf16 --batch 1" "$WORK/bench_model_b1.log" 90 \
    "$BUILD/benchmarks/bench_model" --device cuda --amp bf16 --batch 1 --steps 50 --warmup 5 --no-torch
  { echo "## bench_model, batch 1"; echo; grep -v "^== " "$WORK/bench_model_b1.log"; echo; } >>"$OUT/bench.md"
fi
if [ -x "$BUILD/benchmarks/bench_cuda_bn" ]; then
  run_step "bench_cuda_bn" "$WORK/bench_cuda_bn.log" 90 "$BUILD/benchmarks/bench_cuda_bn"
  { echo "## bench_cuda_bn"; echo; grep -v "^== " "$WORK/bench_cuda_bn.log"; echo; } >>"$OUT/bench.md"
fi
# merge the per-batch CSVs (one header)
for kind in conv fuse; do
  first=1
  : >"$OUT/bench_$kind.csv"
  for b in 32 128; do
    f="$WORK/bench_${kind}_b$b.csv"
    [ -f "$f" ] || continue
    if [ $first -eq 1 ]; then cat "$f" >>"$OUT/bench_$kind.csv"; first=0; else tail -n +2 "$f" >>"$OUT/bench_$kind.csv"; fi
  done
done
# CPU benchmarks (every other bench_* program), short; only on request (HR_GPU_CHECK_CPU_BENCH=1):
# the CPU figures that count are measured on the development machine.
[ "${HR_GPU_CHECK_CPU_BENCH:-0}" = 1 ] && for exe in "$BUILD"/benchmarks/bench_*; do
  [ -x "$exe" ] && [ -f "$exe" ] || continue
  name="$(basename "$exe")"
  case "$name" in bench_cuda_*) continue ;; esac
  run_step "$name" "$WORK/$name.log" 90 "$exe"
  { echo "## $name"; echo; grep -v "^== " "$WORK/$name.log"; echo; } >>"$OUT/bench.md"
done

# ---- summary
{
  echo "# gpu_check summary"
  echo
  echo '```'
  cat "$WORK/gpu_info.txt"
  echo '```'
  echo
  echo "| step | exit code | seconds |"
  echo "|---|---|---:|"
  fails=0
  for i in "${!STEPS[@]}"; do
    echo "| ${STEPS[$i]} | ${CODES[$i]} | ${SECS[$i]} |"
    [ "${CODES[$i]}" = "0" ] || fails=$((fails + 1))
  done
  echo
  echo "total $(elapsed) s; $fails step(s) not ok"
  if [ -s "$WORK/build_errors.txt" ]; then
    echo
    echo "## build errors / spills (first 40)"
    echo '```'
    cat "$WORK/build_errors.txt"
    echo '```'
  fi
  echo
  echo "## failing tests"
  echo '```'
  grep -E "Failed|\*\*\*|FAILED|MISMATCH|ERROR SUMMARY: [1-9]|RACECHECK SUMMARY: [1-9]" \
    "$OUT/tests.log" "$OUT/sanitizer.log" "$WORK"/*.log 2>/dev/null | head -60
  echo '```'
} >"$OUT/summary.md"
cp "$OUT/summary.md" "$OUT/build.log" "$OUT/tests.log" "$OUT/sanitizer.log" "$WORK"/ 2>/dev/null
tar -czf "$OUT/logs.tar.gz" -C "$WORK" . 2>/dev/null
rm -rf "$WORK"
cat "$OUT/summary.md"
