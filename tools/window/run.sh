#!/usr/bin/env bash
# The GPU window kit, step 2 of 2, on the device machine: tools/window/run.sh OUT
# (device tool: command "tools/window/run.sh $OUT", carry [".window"], timeout_s 480; the kit is
# made here by tools/window/pack.sh). Nothing is built when the kit is sound, so the first
# figures come within a minute of the start.
#
#  0. environment and GPU (read-only queries: clocks and settings are never changed); the
#     PyTorch peer (benchmarks/torch_model.py: eager and torch.compile) starts in the
#     background at once, warms up and compiles while the steps below run, is paused
#     (SIGSTOP) while ours is timed, and is timed alone, as soon as it is ready, between steps;
#     the kit is unpacked and checked: sizes against its manifest, sources against the tree
#     (a kit older than the tree is reported), every program's libraries resolve; a program
#     that does not is rebuilt here from the tree (only those targets; CMake, ninja, and the
#     kit's deps.tar.xz for Eigen, Catch2, stb where the device lacks them)
#  1. correctness of the graph path: CUDA graphs, capture, streams, the optimizer under capture
#     (test_cuda_graph, test_cuda_graph_exec, test_cuda_runtime), test_backend_ops' CUDA rows
#  2. hrnet-train, CUDA bf16, one short epoch on synthetic data: the loss falls, AP printed
#  3. the whole-model table: W32 pose 256x192, batch 128, bf16: training step and inference,
#     ours (eager and captured graph) against PyTorch eager and torch.compile
#  4. batch-1 inference latency against PyTorch eager and torch.compile(reduce-overhead)
#  5. for the kernels changed since the kit's --since (.window/kernels.txt): their tests and
#     micro-benchmarks
#  6. compute-sanitizer: memcheck on the capture cases; memcheck and racecheck on the cases of
#     the changed kernels
#  7. with time left: W32 cls 224x224 and W48 seg 512x1024 training step and inference (ours), the
#     seg losses on CUDA, the other GPU tests
#  8. with time left (or alone: HR_WINDOW_STEPS=det): the detector, HRNet-FCOS W32 at 800x1344,
#     batch 8, bf16: training step (FCOS loss, SGD with the bias group) and inference, ours
#     (eager, CUDA graph), then the PyTorch peer's eager step alone on the same targets
#     (torch_model.py --head det --no-compile: no torch.compile here, it would not fit the box)
#  9. with time left (or alone: HR_WINDOW_STEPS=levers): the W32 b128 step with each lever off
#     alone (fusion, branch streams, CUDA graph replay, cuDNN's graph API, the optimizer's
#     weight copies, batch norm's per-shape path) and with cuDNN / our convolutions only
# Each step has a time box; the whole run stays within HR_WINDOW_BUDGET seconds (default 400),
# later steps are skipped when it is spent. OUT gets at most 8 files, written as the run goes:
# summary.md (rewritten after every step; printed last), run.log, env.txt, correctness.log,
# train.log, bench.md, sanitizer.log, logs.tar.gz (every log, CSV and the peer's output).
#
# Environment: HR_WINDOW_BUDGET (seconds), HR_WINDOW_KERNELS ("none", "all" or keys; default
# the kit's kernels.txt), HR_WINDOW_STEPS (e.g. "graph,train,table,latency,kernels,sanitizer,
# rest,det,levers"; default all), HR_WINDOW_REBUILD (auto: the programs whose libraries do not
# resolve, all of them when the kit is missing or damaged; stale: also all when the tree's
# sources differ from the kit's; never; all),
# HR_WINDOW_PEER=0 (no PyTorch peer), HR_WINDOW_FORCE=1 (run the GPU steps with no GPU: to
# check the command lines), HR_PYTHON (the Python with torch), HR_WINDOW_KIT (the kit folder).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [ $# -lt 1 ]; then
  echo "usage: $0 OUT" >&2
  exit 2
fi
mkdir -p "$1"
OUT="$(cd "$1" && pwd)"
KIT="${HR_WINDOW_KIT:-${ROOT}/.window}"  # ${ROOT}/: made, not in the tree (pack.sh --check)
BUDGET="${HR_WINDOW_BUDGET:-400}"
WANT_STEPS="${HR_WINDOW_STEPS:-all}"
REBUILD="${HR_WINDOW_REBUILD:-auto}"
FORCE="${HR_WINDOW_FORCE:-0}"
WORK="$(mktemp -d /tmp/window.XXXXXX)"
JOBS="$(nproc 2>/dev/null || echo 8)"
export OMP_WAIT_POLICY=PASSIVE
ORIG_LD="${LD_LIBRARY_PATH:-}"
T0=$(date +%s)
RUNLOG="$OUT/run.log"
ENVTXT="$OUT/env.txt"
CORR="$OUT/correctness.log"
TRAIN="$OUT/train.log"
BENCH="$OUT/bench.md"
SAN="$OUT/sanitizer.log"
for f in "$RUNLOG" "$ENVTXT" "$CORR" "$TRAIN" "$BENCH" "$SAN"; do : >"$f"; done
STEPS=()
CODES=()
SECS=()
NOTES=()
PEER_PID=""
PEER_STATE="not started"
PEER_RESERVE=30

elapsed() { echo $(($(date +%s) - T0)); }
log() { echo "$*" | tee -a "$RUNLOG"; }
note() { NOTES+=("$*"); log "note: $*"; }
want() { [ "$WANT_STEPS" = all ] || [ "$1" = setup ] || [[ ",$WANT_STEPS," == *",$1,"* ]]; }

write_summary() {
  {
    echo "# GPU window run, $(date -u +%Y-%m-%dT%H:%M:%SZ), t+$(elapsed)s of ${BUDGET}s"
    echo
    awk 'NF == 0 { exit } { print "    " $0 }' "$ENVTXT"
    echo
    echo "| step | exit code | seconds |"
    echo "|---|---|---:|"
    local i
    for i in "${!STEPS[@]}"; do echo "| ${STEPS[$i]} | ${CODES[$i]} | ${SECS[$i]} |"; done
    echo
    for i in "${!NOTES[@]}"; do echo "- ${NOTES[$i]}"; done
  } >"$OUT/summary.md"
}

record() {  # record NAME CODE SECONDS
  STEPS+=("$1")
  CODES+=("$2")
  SECS+=("$3")
  write_summary
}

# step gpu|any GROUP NAME LOG LIMIT CMD...: runs CMD with a time box (the smaller of LIMIT and
# the budget left), output appended to LOG; records the exit code (124: timed out). Returns it.
step() {
  local kind="$1" group="$2" name="$3" logf="$4" limit="$5"
  shift 5
  if ! want "$group"; then return 0; fi
  if [ "$kind" = gpu ] && [ "$HAVE_GPU" = 0 ] && [ "$FORCE" != 1 ]; then
    record "$name" "skipped: no GPU" 0
    return 0
  fi
  local left=$((BUDGET - $(elapsed)))
  # while the peer has not been timed, keep the time it needs
  if [ "$PEER_STATE" = compiling ] && [ "$group" != table ]; then
    left=$((left - PEER_RESERVE))
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 8 ]; then
    record "$name" "skipped: budget" 0
    return 0
  fi
  local start rc
  start=$(date +%s)
  echo "== $name  (t+$(elapsed)s, limit ${limit}s)"
  echo "== $name  (t+$(elapsed)s, limit ${limit}s): $*" >>"$logf"
  [ "$logf" = "$RUNLOG" ] || echo "== $name  (t+$(elapsed)s, limit ${limit}s)" >>"$RUNLOG"
  timeout --kill-after=5 "$limit" "$@" >>"$logf" 2>&1
  rc=$?
  local end="== $name: exit $rc, $(($(date +%s) - start)) s"
  [ $rc -eq 124 ] && end="== $name: TIMED OUT after ${limit}s"
  echo "$end"
  echo "$end" >>"$logf"
  [ "$logf" = "$RUNLOG" ] || echo "$end" >>"$RUNLOG"
  record "$name" "$rc" $(($(date +%s) - start))
  return $rc
}

# ---------------------------------------------------------------------------------------------
# 0. environment, GPU, the peer, the kit
HAVE_GPU=0
{ nvidia-smi -L 2>/dev/null | grep -q "^GPU" || compgen -G "/dev/nvidia[0-9]*" >/dev/null; } && HAVE_GPU=1
PY="${HR_PYTHON:-}"
if [ -z "$PY" ]; then
  for c in /opt/torch/.venv/bin/python3 python3; do
    command -v "$c" >/dev/null 2>&1 && { PY="$(command -v "$c")"; break; }
  done
fi
{
  echo "host $(hostname), $JOBS cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), repo $ROOT"
  if [ $HAVE_GPU = 1 ]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,pstate,clocks.sm,clocks.max.sm,power.limit,temperature.gpu,ecc.mode.current --format=csv,noheader 2>&1
  else
    echo "NO GPU: nvidia-smi lists none; the GPU steps are skipped"
  fi
  head -n 3 "$KIT/info.txt" 2>/dev/null || echo "no kit info in $KIT"
  echo "kernels: ${HR_WINDOW_KERNELS:-$(tr '\n' ' ' <"$KIT/kernels.txt" 2>/dev/null)}"
  echo "nvcc: $( (nvcc --version || /usr/local/cuda/bin/nvcc --version) 2>/dev/null | tail -1)"
  echo "python: ${PY:-none}"
  echo "budget ${BUDGET}s, steps $WANT_STEPS, rebuild $REBUILD"
  echo
  [ $HAVE_GPU = 1 ] && nvidia-smi -q 2>&1 | head -40
} >"$ENVTXT" 2>&1
cat "$ENVTXT" | head -n 9

# the PyTorch peer first: torch.compile takes minutes, which pass while our steps run
[ -f "$ROOT/tools/gen_model_reference.py" ] || note "no tools/gen_model_reference.py: the peer cannot run"
PEER_LOG="$WORK/peer.log"
PEER_READY="$WORK/peer.ready"
PEER_GO="$WORK/peer.go"
if [ "${HR_WINDOW_PEER:-1}" = 1 ] && [ -n "$PY" ] && { [ $HAVE_GPU = 1 ] || [ "$FORCE" = 1 ]; } &&
   { want table || want latency; }; then
  set -m  # its own process group: paused and resumed as one (inductor's compile workers too)
  (cd "$ROOT" && exec env LD_LIBRARY_PATH="$ORIG_LD" PYTHONUNBUFFERED=1 timeout $((BUDGET + 30)) \
     "$PY" "$ROOT/benchmarks/torch_model.py" --device cuda --amp bf16 --batch 128 --steps 10 \
     --warmup 3 --latency-batch 1 --latency-steps 50 --ready-file "$PEER_READY" \
     --go-file "$PEER_GO" --go-timeout $((BUDGET + 30)) >"$PEER_LOG" 2>&1) &
  PEER_PID=$!
  set +m
  PEER_STATE=compiling
  log "peer: started (pid $PEER_PID) at t+$(elapsed)s"
fi
peer_alive() { [ -n "$PEER_PID" ] && kill -0 "$PEER_PID" 2>/dev/null; }
peer_pause() { peer_alive && [ "$PEER_STATE" = compiling ] && kill -STOP -- "-$PEER_PID" 2>/dev/null; }
peer_resume() { [ -n "$PEER_PID" ] && kill -CONT -- "-$PEER_PID" 2>/dev/null; }
cleanup() {
  if [ -n "$PEER_PID" ]; then
    kill -CONT -- "-$PEER_PID" 2>/dev/null
    kill -TERM -- "-$PEER_PID" 2>/dev/null
  fi
}
trap cleanup EXIT

# the kit
KITBIN="$WORK/kit/bin"
KITLIB="$WORK/kit/lib"
BIN="$KITBIN"
kit_ok=1
if [ ! -f "$KIT/kit.tar.xz" ]; then
  log "kit: no $KIT/kit.tar.xz (make it with tools/window/pack.sh and carry .window)"
  kit_ok=0
else
  mkdir -p "$WORK/kit"
  if ! tar -C "$WORK/kit" -xJf "$KIT/kit.tar.xz" 2>>"$ENVTXT"; then
    # no xz binary: Python's tarfile reads it
    "$PY" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" \
      "$KIT/kit.tar.xz" "$WORK/kit" 2>>"$ENVTXT" || kit_ok=0
  fi
  # the programs and libraries must be as packed (else: rebuilt); the folder's other files
  # only noted
  bad=0
  while read -r what size path; do
    case "$what" in
      member) f="$WORK/kit/$path" ;;
      file) f="$KIT/$path" ;;
      *) continue ;;
    esac
    if [ ! -f "$f" ] || [ "$(stat -c %s "$f")" != "$size" ]; then
      echo "kit: $what $path missing or not $size bytes" >>"$ENVTXT"
      note "kit: $what $path missing or not the $size bytes its manifest says"
      [ "$what" = member ] && bad=$((bad + 1))
    fi
  done <"$KIT/manifest.txt"
  [ $bad -eq 0 ] || kit_ok=0
fi

# sources: the kit against the tree that came with it
STALE=0
if [ -f "$KIT/sources.sha256" ]; then
  (cd "$ROOT" && sha256sum --quiet -c "$KIT/sources.sha256" 2>/dev/null) >"$WORK/stale.txt"
  (cd "$ROOT" && find engine kernels models data tasks apps tests benchmarks cmake -type f \
     \( -name '*.cpp' -o -name '*.h' -o -name '*.hpp' -o -name '*.cu' -o -name '*.cuh' -o \
        -name '*.in' -o -name '*.cmake' -o -name CMakeLists.txt \) 2>/dev/null | sort) >"$WORK/src_now.txt"
  awk '{print $2}' "$KIT/sources.sha256" | sort >"$WORK/src_kit.txt"
  comm -23 "$WORK/src_now.txt" "$WORK/src_kit.txt" | sed 's/$/: NEW since the kit was packed/' >>"$WORK/stale.txt"
  if [ -s "$WORK/stale.txt" ]; then
    STALE=1
    { echo "sources changed since the kit was packed:"; head -20 "$WORK/stale.txt"; } >>"$ENVTXT"
    note "the kit is older than the tree: $(wc -l <"$WORK/stale.txt") source file(s) differ (the programs run the packed sources; HR_WINDOW_REBUILD=stale rebuilds): $(head -5 "$WORK/stale.txt" | sed 's/: .*//' | tr '\n' ' ')"
  fi
fi

# libraries: the kit's, then the device's CUDA, cuBLAS and cuDNN (system CUDA first, then the
# PyTorch venv's nvidia-* wheels)
LD_DIRS="$KITLIB"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
  [ -d "$d" ] && LD_DIRS="$LD_DIRS:$d"
done
if [ -n "$PY" ]; then
  for site in $("$PY" -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null); do
    for d in $(find "$site/nvidia" -maxdepth 3 -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u); do
      LD_DIRS="$LD_DIRS:$d"
    done
  done
fi
export LD_LIBRARY_PATH="$LD_DIRS${ORIG_LD:+:$ORIG_LD}"
ldd_check() {  # prints "name" for every program of $BIN with a library that does not resolve
  local b
  command -v ldd >/dev/null || return 0  # no ldd: the programs will tell
  for b in "$BIN"/*; do
    [ -x "$b" ] || continue
    if ldd "$b" 2>&1 | grep -q "not found"; then basename "$b"; fi
  done
}
BROKEN=""
if [ $kit_ok = 1 ]; then
  BROKEN="$(ldd_check)"
  if [ -n "$BROKEN" ] && ldd "$BIN/$(echo "$BROKEN" | head -1)" 2>&1 | grep -q "GLIBCXX\|CXXABI\|GCC_"; then
    # the device's libstdc++ is older than the build machine's: the kit's own
    export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$KITLIB/fallback"
    note "libstdc++ of the device too old: using the kit's (lib/fallback)"
    BROKEN="$(ldd_check)"
  fi
  {
    echo
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "ldd $BIN/hrnet-train:"
    ldd "$BIN/hrnet-train" 2>&1
    for b in $BROKEN; do echo "NOT RESOLVED: $b"; ldd "$BIN/$b" 2>&1 | grep "not found"; done
  } >>"$ENVTXT"
fi
nbin=$(ls "$BIN" 2>/dev/null | wc -l)
log "kit: $nbin programs, $(echo $BROKEN | wc -w) with unresolved libraries, stale $STALE (t+$(elapsed)s)"

# the fallback: rebuild here what does not run (everything when the kit is older than the tree,
# or when asked)
mapfile -t TARGETS < <(awk '!/^#/ && NF {print $1}' "$ROOT/tools/window/targets.txt")
rebuild_list=()
for t in "${TARGETS[@]}"; do
  n="$(basename "$t")"
  if [ "$REBUILD" = all ] || [ $kit_ok = 0 ] || { [ "$REBUILD" = stale ] && [ $STALE = 1 ]; } ||
     { [ "$REBUILD" != never ] && echo " $BROKEN " | tr '\n' ' ' | grep -q " $n "; }; then
    rebuild_list+=("$t")
  fi
done
# a library built from a tree other than the kit's cannot serve the kit's other programs
if [ ${#rebuild_list[@]} -gt 0 ] && [ $STALE = 1 ]; then rebuild_list=("${TARGETS[@]}"); fi
if [ ${#rebuild_list[@]} -gt 0 ] && [ $HAVE_GPU = 0 ] && [ "$FORCE" != 1 ]; then
  note "no GPU: ${#rebuild_list[@]} program(s) would be rebuilt here; not done"
elif [ ${#rebuild_list[@]} -gt 0 ] && [ "$REBUILD" != never ]; then
  BW="${ROOT}/build-window"
  CM=(-DCMAKE_BUILD_TYPE=Release -DHR_CUDA=ON -DHR_CUDA_ARCH=90a-real -DHR_SHARED=ON)
  [ -x /usr/local/cuda/bin/nvcc ] && CM+=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
  command -v ninja >/dev/null && [ ! -f "$BW/CMakeCache.txt" ] && CM+=(-G Ninja)
  # the build machine's Eigen, Catch2, stb, yaml-cpp, simdjson and libjpeg (headers, CMake
  # files), found before anything the device has
  if [ -f "$KIT/deps.tar.xz" ]; then
    D="$BW/deps"  # beside the build that records its paths (kept with it on a warm machine)
    mkdir -p "$D"
    tar -C "$D" -xJf "$KIT/deps.tar.xz" 2>>"$ENVTXT" ||
      "$PY" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$KIT/deps.tar.xz" "$D"
    CM+=("-DCMAKE_PREFIX_PATH=$D/usr" "-DCMAKE_INCLUDE_PATH=$D/usr/include"
         "-DCMAKE_CXX_FLAGS=-isystem $D/usr/include/x86_64-linux-gnu")
    export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$D/usr/lib/x86_64-linux-gnu"
    [ -f "$D/usr/share/cudnn_frontend/include/cudnn_frontend.h" ] &&
      CM+=("-DHR_CUDNN_FRONTEND_INCLUDE=$D/usr/share/cudnn_frontend/include")
  else
    note "rebuild: no deps.tar.xz in the kit: Eigen, Catch2, stb ... must be on the device"
  fi
  names=()
  for t in "${rebuild_list[@]}"; do names+=("$(basename "$t")"); done
  log "rebuild: ${names[*]}"
  if step any setup "rebuild: configure" "$RUNLOG" 90 cmake -S "$ROOT" -B "$BW" "${CM[@]}" &&
     step any setup "rebuild: ${#names[@]} target(s)" "$RUNLOG" 300 \
       cmake --build "$BW" -j "$JOBS" --target "${names[@]}"; then
    # the rebuilt programs and library take the kit's places (only a whole rebuild: never a
    # library of one tree with programs of another)
    mkdir -p "$KITBIN" "$KITLIB"
    [ -f "$BW/engine/libhrnet_core.so" ] && cp -f "$BW/engine/libhrnet_core.so" "$KITLIB/"
    for t in "${rebuild_list[@]}"; do [ -x "$BW/$t" ] && cp -f "$BW/$t" "$KITBIN/"; done
  else
    note "the rebuild failed (run.log): the packed programs run as they are"
  fi
  BROKEN="$(ldd_check)"
  [ -n "$BROKEN" ] && note "still unresolved after the rebuild: $(echo $BROKEN)"
fi
write_summary

# kernels whose tests, micro-benchmarks and sanitizer cases run
ALL_KERNELS="conv fuse bn group_norm elementwise loss optim pool resample layout linear runtime"
KERNELS="${HR_WINDOW_KERNELS:-$(cat "$KIT/kernels.txt" 2>/dev/null)}"
[ "$KERNELS" = all ] && KERNELS="$ALL_KERNELS"
[ "$KERNELS" = none ] && KERNELS=""
KERNELS="$(echo $KERNELS)"

# the peer: timed alone, group by group, as soon as a group is ready (compiled and warmed up:
# benchmarks/torch_model.py's groups: 0 = eager, torch.compile at batch 128, eager latency;
# 1 = torch.compile(reduce-overhead) latency); WAIT seconds at most for the next group
PEER_NEXT=0
peer_collect() {
  local wait_s="$1" t lim start
  [ "$PEER_STATE" = compiling ] || return 0
  peer_resume
  t=0
  while [ ! -f "$PEER_READY.$PEER_NEXT" ] && peer_alive && [ $t -lt "$wait_s" ]; do sleep 1; t=$((t + 1)); done
  while [ -f "$PEER_READY.$PEER_NEXT" ] && [ "$(elapsed)" -lt $((BUDGET + 10)) ]; do
    log "peer: group $PEER_NEXT ready at t+$(elapsed)s; timing it alone"
    start=$(date +%s)
    touch "$PEER_GO.$PEER_NEXT"
    # its timing takes 5-20 s; at most a minute, and not much past the budget
    lim=$((BUDGET + 20 - $(elapsed)))
    [ $lim -gt 60 ] && lim=60
    [ $lim -lt 25 ] && lim=25
    t=0
    while [ ! -f "$PEER_READY.$PEER_NEXT.done" ] && peer_alive && [ $t -lt $lim ]; do sleep 1; t=$((t + 1)); done
    record "PyTorch peer, group $PEER_NEXT timed alone" "$(grep -c '^RESULT' "$PEER_LOG") results" $(($(date +%s) - start))
    PEER_NEXT=$((PEER_NEXT + 1))
    # the next group may be ready at once (nothing to compile)
    t=0
    while [ ! -f "$PEER_READY.$PEER_NEXT" ] && [ ! -f "$PEER_READY.all" ] && peer_alive && [ $t -lt 3 ]; do sleep 1; t=$((t + 1)); done
  done
  if [ -f "$PEER_READY.all" ]; then
    PEER_STATE=collected
  elif ! peer_alive; then
    PEER_STATE="died"
    note "the PyTorch peer exited before it was timed (logs.tar.gz: peer.log): $(grep -v '^peer:' "$PEER_LOG" | tail -2 | tr '\n' ' ')"
  fi
}
peer_ready_now() { [ "$PEER_STATE" = compiling ] && [ -f "$PEER_READY.$PEER_NEXT" ]; }

# ---------------------------------------------------------------------------------------------
# 1. correctness of the graph path
# First, alone and briefly: cooperative batch-norm grids on two streams at once. Should they
# deadlock (grids not co-scheduled), every later step would hang on HRNet's branch streams:
# the rest of the run then takes the multi-kernel path (HR_BN_COOPERATIVE=0).
# A cooperative launch the device refuses (an error naming it) takes the same path.
peer_pause  # the peer's warm-up shares the GPU: a slow run must not pass for a hang
step gpu graph "test_cuda_graph: cooperative BN on two streams (hang check)" "$WORK/coop.log" 25 \
  "$BIN/test_cuda_graph" "graph: cooperative batch norm on two streams at once, eager and captured"
coop_rc=$?
peer_resume
cat "$WORK/coop.log" >>"$CORR" 2>/dev/null
if [ $coop_rc = 124 ] || [ $coop_rc = 137 ]; then
  export HR_BN_COOPERATIVE=0
  note "cooperative batch norm on two streams timed out: the rest of the run has HR_BN_COOPERATIVE=0"
elif [ $coop_rc != 0 ] && [ $coop_rc != 77 ] &&
     grep -qE "cudaLaunchCooperativeKernel|cudaErrorCooperative" "$WORK/coop.log" 2>/dev/null; then
  export HR_BN_COOPERATIVE=0
  note "the cooperative batch norm's launch failed: the rest of the run has HR_BN_COOPERATIVE=0"
fi
step gpu graph "test_cuda_graph (capture, streams, optimizer replay)" "$CORR" 60 "$BIN/test_cuda_graph"
step gpu graph "test_cuda_graph_exec (compiled graphs on CUDA, captured)" "$CORR" 90 "$BIN/test_cuda_graph_exec"
step gpu graph "test_cuda_runtime (streams, events, allocator)" "$CORR" 30 "$BIN/test_cuda_runtime"
step gpu graph "test_cuda_nccl (NCCL gradient reduction, one rank, captured)" "$CORR" 30 "$BIN/test_cuda_nccl"
step gpu graph "test_backend_ops -b cuda (every op, CUDA eager and graph)" "$CORR" 90 "$BIN/test_backend_ops" -b cuda

# ---------------------------------------------------------------------------------------------
# 2. hrnet-train on CUDA, bf16, one short epoch
SYN="$WORK/synth"
step gpu train "hrnet-synth 640+96 images" "$TRAIN" 40 "$BIN/hrnet-synth" --out "$SYN" --train 640 --val 96 --quiet
step gpu train "hrnet-train cuda bf16, 1 epoch" "$TRAIN" 150 "$BIN/hrnet-train" \
  --cfg "$ROOT/configs/quickstart_synth.yaml" --out "$WORK/train" DATASET.ROOT "$SYN" \
  TRAIN.END_EPOCH 1 ENGINE.DEVICE cuda ENGINE.PRECISION bf16 TRAIN.BATCH_SIZE_PER_GPU 32 \
  PRINT_FREQ 1 WORKERS 8
if want train && [ -f "$WORK/train/metrics.jsonl" ]; then
  cat >"$WORK/train_check.py" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
loss = [r["loss"] for r in rows if r.get("type") == "train"]
ev = [r for r in rows if r.get("type") == "eval"]
k = max(1, len(loss) // 4)
first, last = sum(loss[:k]) / k, sum(loss[-k:]) / k
print(f"train loss over {len(loss)} iterations: first quarter {first:.6g}, last quarter {last:.6g}")
if ev:
    print("eval: " + ", ".join(f"{a} {b}" for a, b in ev[-1].items() if a not in ("type",)))
sys.exit(0 if len(loss) >= 4 and last < first and ev else 1)
EOF
  step any train "hrnet-train: loss falls, AP printed" "$TRAIN" 20 \
    env LD_LIBRARY_PATH="$ORIG_LD" "$PY" "$WORK/train_check.py" "$WORK/train/metrics.jsonl"
  note "$(grep -E '^train loss|^eval:' "$TRAIN" | tail -2 | tr '\n' ';' | cut -c1-300)"
fi

# ---------------------------------------------------------------------------------------------
# 3. the whole-model table (ours timed with the peer paused; the peer alone, once ready)
peer_ready_now && peer_collect 0
peer_pause
step gpu table "bench_model W32 b128 bf16 (ours: eager, CUDA graph)" "$WORK/bench_model_b128.log" 120 \
  env HR_CUDNN_VERBOSE=1 HR_BN_VERBOSE=1 "$BIN/bench_model" --device cuda --amp bf16 --batch 128 \
  --steps 10 --warmup 3 --no-torch --save "$WORK/ours_b128.txt"
# 4. batch-1 latency
step gpu latency "bench_model W32 b1 bf16 --latency (ours)" "$WORK/bench_model_b1.log" 60 \
  "$BIN/bench_model" --device cuda --amp bf16 --batch 1 --steps 50 --warmup 5 --latency --no-torch \
  --save "$WORK/ours_b1.txt"

# ---------------------------------------------------------------------------------------------
# 5. the changed kernels: their tests (the peer compiling on), then their micro-benchmarks (the
# peer paused)
peer_resume
kernel_test() {  # KT=(program args...): the test cases of one kernel
  case "$1" in
    conv) KT=(test_cuda_conv "[igemm]") ;;
    fuse) KT=(test_cuda_conv "[fuse]") ;;
    bn) KT=(test_cuda_kernels "[bn]") ;;
    elementwise) KT=(test_cuda_kernels "cuda element-wise*") ;;
    loss) KT=(test_cuda_kernels "[loss]") ;;
    optim) KT=(test_cuda_kernels "[optim]") ;;
    pool) KT=(test_cuda_kernels "[pool]") ;;
    resample) KT=(test_cuda_kernels "[resample]") ;;
    layout) KT=(test_cuda_kernels "cuda layout*") ;;
    linear) KT=(test_cuda_kernels "[linear]") ;;
    runtime) KT=(test_cuda_runtime "~[provokes-errors]") ;;
    *) KT=(test_backend_ops -o "$1" -b cuda) ;;  # a new op's kernel: its rows of the op table
  esac
}
for k in $KERNELS; do
  kernel_test "$k"
  peer_ready_now && peer_collect 0
  step gpu kernels "kernel $k: ${KT[*]}" "$CORR" 90 "$BIN/${KT[0]}" "${KT[@]:1}"
done
peer_ready_now && peer_collect 0
peer_pause
for k in $KERNELS; do
  case "$k" in
    conv)
      step gpu kernels "bench_cuda_conv --batch 128" "$WORK/bench_cuda_conv.log" 150 \
        "$BIN/bench_cuda_conv" --batch 128 --csv "$WORK/bench_conv.csv" ;;
    fuse)
      step gpu kernels "bench_cuda_fuse --batch 128" "$WORK/bench_cuda_fuse.log" 90 \
        "$BIN/bench_cuda_fuse" --batch 128 --csv "$WORK/bench_fuse.csv" ;;
    bn)
      step gpu kernels "bench_cuda_bn" "$WORK/bench_cuda_bn.log" 90 "$BIN/bench_cuda_bn" ;;
  esac
  case "$k" in
    conv) op=conv2d ;; bn) op=batch_norm ;; elementwise) op=add ;; loss) op=loss ;;
    linear|group_norm|concat) op=$k ;;
    fuse|optim|pool|resample|layout|runtime) op="" ;;
    *) op=$k ;;
  esac
  [ -n "$op" ] && step gpu kernels "test_backend_ops perf -o $op -b cuda" "$WORK/ops_perf_$k.log" 60 \
    "$BIN/test_backend_ops" perf -o "$op" -b cuda
done
peer_resume
# PyTorch's own cuDNN path on the same convolutions (benchmarks/torch_cuda_conv.py)
if [ -f "$WORK/bench_conv.csv" ] && [ -n "$PY" ]; then
  peer_ready_now && peer_collect 0
  peer_pause
  step gpu kernels "torch_cuda_conv --batch 128 (peer)" "$WORK/torch_cuda_conv.log" 90 \
    env LD_LIBRARY_PATH="$ORIG_LD" "$PY" "$ROOT/benchmarks/torch_cuda_conv.py" "$WORK/bench_conv.csv" "$WORK/torch_conv_all.csv"
  peer_resume
fi

# ---------------------------------------------------------------------------------------------
# 6. compute-sanitizer: the capture cases (memcheck), the changed kernels' cases (memcheck and
# racecheck; racecheck leaves cuBLAS's own nvjet kernels out: false hazards)
CS="$(command -v compute-sanitizer || true)"
for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
  [ -z "$CS" ] && [ -x "$c" ] && CS="$c"
done
sanitize() {  # sanitize TOOL LIMIT PROGRAM ARGS...
  local tool="$1" limit="$2" prog="$3"
  shift 3
  local extra=()
  [ "$tool" = racecheck ] && extra=(--racecheck-report hazard --kernel-name-exclude kns=nvjet)
  peer_ready_now && peer_collect 0
  step gpu sanitizer "$tool $prog $*" "$SAN" "$limit" \
    "$CS" --tool "$tool" "${extra[@]}" --error-exitcode 86 "$BIN/$prog" "$@"
}
if want sanitizer; then
  if [ -z "$CS" ] && { [ $HAVE_GPU = 1 ] || [ "$FORCE" = 1 ]; }; then
    record "compute-sanitizer" "not found" 0
  else
    sanitize memcheck 90 test_cuda_graph "~[provokes-errors]"
    sanitize memcheck 90 test_cuda_graph_exec
    for k in $KERNELS; do
      kernel_test "$k"
      sanitize memcheck 90 "${KT[@]}"
      [ "$k" != linear ] && sanitize racecheck 90 "${KT[@]}"  # linear: cuBLAS (see above)
    done
  fi
fi

# head_bench GROUP TAG WHAT LIMIT_OURS LIMIT_PEER ARGS...: bench_model ARGS, ours (eager and
# CUDA graph) saved to ours_TAG.txt, then the PyTorch peer's eager step alone on the same model,
# shapes and steps (its arguments from bench_model --peer-args; no torch.compile: it would not
# fit the box), its RESULT lines in TAG_peer.log; bench.md's table for TAG joins the two
declare -A HEAD_ARGS=()
head_bench() {
  local group="$1" tag="$2" what="$3" lo="$4" lp="$5" pargs
  shift 5
  HEAD_ARGS[$tag]="$*"
  step gpu "$group" "bench_model $what (ours: eager, CUDA graph)" "$WORK/${tag}_bench_model.log" \
    "$lo" "$BIN/bench_model" "$@" --no-torch --save "$WORK/ours_$tag.txt"
  [ -n "$PY" ] && [ "${HR_WINDOW_PEER:-1}" = 1 ] && want "$group" || return 0
  pargs=$("$BIN/bench_model" "$@" --peer-args 2>>"$RUNLOG") || return 0
  # shellcheck disable=SC2086  # the peer's arguments, a word each
  step gpu "$group" "torch_model.py $what, eager (peer)" "$WORK/${tag}_peer.log" "$lp" \
    env LD_LIBRARY_PATH="$ORIG_LD" "$PY" "$ROOT/benchmarks/torch_model.py" $pargs --no-compile
}

# ---------------------------------------------------------------------------------------------
# 7. time left: the classifier's step (W32 cls 224x224: ours, then the peer's eager step; timm's
# published hrnet_w32 throughput is the other sanity check), the seg tests, the segmenter's step
# (W48 512x1024: ours, then the peer's eager step), then the other GPU tests
peer_ready_now && peer_collect 0
peer_pause
head_bench rest cls "W32 cls 224 b128 bf16" 90 90 \
  --model w32:cls --device cuda --amp bf16 --batch 128 --steps 10 --warmup 3
step gpu rest "test_cuda_seg_losses (weighted CE, OHEM on CUDA)" "$CORR" 60 "$BIN/test_cuda_seg_losses"
step gpu rest "test_cuda_ocr (HRNet+OCR head on CUDA vs the CPU)" "$CORR" 60 "$BIN/test_cuda_ocr"
head_bench rest seg "W48 seg 512x1024 b8 bf16" 120 120 \
  --model w48:seg --device cuda --amp bf16 --batch 8 --steps 5 --warmup 2
peer_resume
for t in test_cuda_ops test_cuda_kernels test_cuda_conv; do
  peer_ready_now && peer_collect 0
  step gpu rest "$t" "$CORR" 120 "$BIN/$t"
done

# ---------------------------------------------------------------------------------------------
# 8. the detector: HRNet-FCOS W32 800x1344 (1333x800 padded), batch 8, bf16; ours (the pose
# peer paused), then the det peer's eager step alone (its RESULT lines make bench.md's table)
peer_ready_now && peer_collect 0
peer_pause
head_bench det det "W32 det 800x1344 b8 bf16" 150 120 \
  --model w32:det --device cuda --amp bf16 --batch 8 --steps 5 --warmup 2
peer_resume

# ---------------------------------------------------------------------------------------------
# 9. with time left (or alone: HR_WINDOW_STEPS=levers): each lever of the W32 b128 bf16 step
# turned off alone (graph fusion, branch streams, CUDA graph replay), the convolutions forced
# to cuDNN, then to our kernels, cuDNN's legacy API instead of its graph API, every weight cast
# on each step instead of the optimizer's 16-bit copies, and batch norm on its full-wave single
# kernel everywhere instead of the path timed fastest per shape, against step 3's table (the
# peer paused)
peer_pause
for lever in --no-fuse --no-streams --no-capture "--conv-backend cudnn" "--conv-backend igemm" \
             HR_CUDNN_API=legacy --no-weight-copies HR_BN_TUNE=0; do
  case "$lever" in HR_*=*) lever_env=$lever lever_args="" ;; *) lever_env="" lever_args=$lever ;; esac
  # shellcheck disable=SC2086  # a lever's words: an environment setting or arguments
  step gpu levers "bench_model W32 b128 bf16 $lever (ours)" "$WORK/levers.log" 90 \
    env $lever_env "$BIN/bench_model" --device cuda --amp bf16 --batch 128 --steps 5 --warmup 2 \
    --no-torch $lever_args
done
peer_resume

# the peer, if it has not been timed yet: what is left of the budget
if [ "$PEER_STATE" = compiling ]; then
  left=$((BUDGET - $(elapsed) - 20))
  [ $left -lt 0 ] && left=0
  peer_collect "$left"
  [ "$PEER_STATE" = compiling ] &&
    note "the PyTorch peer was not done (group $PEER_NEXT still compiling) when the budget ran out"
fi

# ---------------------------------------------------------------------------------------------
# tables: ours with the peer's results (bench_model --load: nothing is measured again)
{
  echo "# GPU window: whole model, latency, micro-benchmarks"
  echo
  head -n 2 "$ENVTXT"
  echo
  peer_args=(--no-torch)
  [ -s "$PEER_LOG" ] && peer_args=(--peer-results "$PEER_LOG")
  if [ -f "$WORK/ours_b128.txt" ]; then
    "$BIN/bench_model" --device cuda --amp bf16 --batch 128 --steps 10 --load "$WORK/ours_b128.txt" \
      "${peer_args[@]}" 2>/dev/null | grep -v '^peer: '
  fi
  if [ -f "$WORK/ours_b1.txt" ]; then
    "$BIN/bench_model" --device cuda --amp bf16 --batch 1 --steps 50 --latency --load "$WORK/ours_b1.txt" \
      "${peer_args[@]}" 2>/dev/null | grep -v '^peer: '
  fi
  for tag in cls seg det; do
    [ -f "$WORK/ours_$tag.txt" ] || continue
    head_peer=(--no-torch)
    [ -s "$WORK/${tag}_peer.log" ] && head_peer=(--peer-results "$WORK/${tag}_peer.log")
    # shellcheck disable=SC2086  # the saved arguments, a word each
    "$BIN/bench_model" ${HEAD_ARGS[$tag]} --load "$WORK/ours_$tag.txt" "${head_peer[@]}" \
      2>/dev/null | grep -v '^peer: '
  done
  echo
  echo "PyTorch peer: $PEER_STATE; $(grep -E '^peer: (torch|.*warmed|.*ready)' "$PEER_LOG" 2>/dev/null | tr '\n' ';')"
  grep '^RESULT' "$PEER_LOG" 2>/dev/null
  for f in bench_cuda_conv bench_cuda_fuse bench_cuda_bn torch_cuda_conv; do
    [ -f "$WORK/$f.log" ] && { echo; echo "## $f"; echo; grep -v '^== ' "$WORK/$f.log"; }
  done
  if [ -f "$WORK/levers.log" ]; then  # each lever's run: its command, then its "ours:" line
    echo
    echo "## levers (W32 b128 bf16, one off at a time; the step-3 table above has all on)"
    echo
    grep -E '^== .*limit|^ours: ' "$WORK/levers.log" | sed -E 's/^== (.*) +\(t\+.*$/\1/'
  fi
  for f in "$WORK"/ops_perf_*.log; do
    [ -f "$f" ] && { echo; echo "## $(basename "$f" .log)"; echo; grep -v '^== ' "$f"; }
  done
} >"$BENCH" 2>&1

# failing test cases, sanitizer errors
{
  grep -hE "FAILED|failed|MISMATCH|ERROR SUMMARY: [1-9]|RACECHECK SUMMARY: [1-9]|TIMED OUT" \
    "$CORR" "$TRAIN" "$SAN" 2>/dev/null | grep -v "0 failed" | head -30
} >"$WORK/failures.txt"
if [ -s "$WORK/failures.txt" ]; then
  note "failures (first lines; details in correctness.log, train.log, sanitizer.log):"
  while read -r l; do NOTES+=("    $l"); done <"$WORK/failures.txt"
fi
fails=0
for c in "${CODES[@]}"; do case "$c" in 0|skipped*|*results) ;; *) fails=$((fails + 1)) ;; esac; done
note "total $(elapsed) s; $fails step(s) not ok"
write_summary
cp "$OUT"/*.log "$OUT/summary.md" "$OUT/env.txt" "$OUT/bench.md" "$WORK/" 2>/dev/null
[ -d "$WORK/train" ] && cp "$WORK/train/metrics.jsonl" "$WORK/train_metrics.jsonl" 2>/dev/null
tar -czf "$OUT/logs.tar.gz" -C "$WORK" --exclude=./kit --exclude=./deps --exclude=./synth --exclude=./train . 2>/dev/null
echo
sed -n '/^# GPU window: whole/,/^PyTorch peer/p' "$BENCH" | grep -v '^#' | head -40
echo
cat "$OUT/summary.md"
rm -rf "$WORK"
[ $HAVE_GPU = 1 ] || [ "$FORCE" = 1 ] || exit 77  # nothing ran: no GPU
[ $fails -eq 0 ]
