#!/usr/bin/env bash
# libFuzzer harnesses of every parser of user files (fuzz/, issue 18 item 3).
#   scripts/fuzz.sh [SECONDS] [HARNESS...]     (default: 60 s each, every harness)
# Configures and builds build-fuzz/ with clang (-DHR_FUZZ=ON -DHR_CUDA=OFF; the parsers compiled
# with -fsanitize=fuzzer-no-link,address,undefined), replays the regression inputs of
# tests/data/fuzz_regressions/<harness>/, then runs each harness for SECONDS on its seed corpus
# (fuzz/seeds/<harness>/ plus small files from tests/data and configs/) and the corpus grown by
# earlier runs (build-fuzz/fuzz-corpus/<harness>/). Exits non-zero on any finding (crash,
# uncaught non-hr::Error exception, sanitizer report, leak, > 2 GiB, > 10 s on one input); the
# input that caused it is left in build-fuzz/fuzz-findings/<harness>/ and named in the output:
# copy it into tests/data/fuzz_regressions/<harness>/ once it is fixed.
# Environment: HR_FUZZ_BUILD (build dir, default build-fuzz), HR_FUZZ_JOBS (default 2),
# HR_FUZZ_TIMEOUT (seconds one input may take, wall clock, default 10: raise it for runs niced
# under other work, where an input can wait that long for a core).
set -uo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
[ $# -gt 0 ] && shift
ALL=(safetensors pth yaml_config coco_annotations coco_results image seg_list)
if [ $# -gt 0 ]; then HARNESSES=("$@"); else HARNESSES=("${ALL[@]}"); fi
B=${HR_FUZZ_BUILD:-build-fuzz}
case $B in /*) ;; *) B="$PWD/$B" ;; esac

command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (apt-get install clang)"; exit 2; }
t0=$(date +%s)
mkdir -p "$B"
CC=clang CXX=clang++ cmake -S . -B "$B" -DHR_FUZZ=ON -DHR_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DHR_BUILD_TESTS=OFF -DHR_BUILD_BENCHMARKS=OFF -DHR_BUILD_APPS=OFF >"$B/fuzz-configure.log" 2>&1 \
  || { cat "$B/fuzz-configure.log"; echo "fuzz.sh: configure failed"; exit 2; }
targets=()
for h in "${HARNESSES[@]}"; do targets+=(--target "fuzz_$h"); done
cmake --build "$B" -j"${HR_FUZZ_JOBS:-2}" "${targets[@]}" || { echo "fuzz.sh: build failed"; exit 2; }
echo "fuzz.sh: configure + build $(( $(date +%s) - t0 )) s"

max_len() {
  case $1 in
    yaml_config) echo 16384 ;;
    seg_list) echo 4096 ;;
    *) echo 65536 ;;
  esac
}
# seed files of a harness (those no longer than its -max_len are copied)
seed_sources() {
  case $1 in
    safetensors) ls tests/data/*.safetensors ;;
    pth) ls tests/data/*.pth ;;
    yaml_config) ls tests/data/model_configs/*.yaml configs/*.yaml ;;
    coco_annotations) ls tests/data/cocoeval/*_gt.json ;;
    coco_results) ls tests/data/cocoeval/*_results.json tests/data/cocoeval/*dets*.json \
                     tests/data/cocoeval/nms_case.json ;;
  esac 2>/dev/null
  [ -d "fuzz/seeds/$1" ] && find "fuzz/seeds/$1" -type f
  [ -d "tests/data/fuzz_regressions/$1" ] && find "tests/data/fuzz_regressions/$1" -type f
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# a scratch directory of this run's own: runs side by side (one harness each) must not remove
# each other's
export TMPDIR="$B/fuzz-tmp.$$"
mkdir -p "$TMPDIR"
failed=()
summary=()
for h in "${HARNESSES[@]}"; do
  bin="$B/fuzz/fuzz_$h"
  len=$(max_len "$h")
  seeds="$B/fuzz-seeds/$h"; corpus="$B/fuzz-corpus/$h"; findings="$B/fuzz-findings/$h"
  rm -rf "$seeds"; mkdir -p "$seeds" "$corpus" "$findings"
  while read -r f; do
    [ -n "$f" ] && [ "$(stat -c %s "$f")" -le "$len" ] && cp "$f" "$seeds/$(echo "$f" | tr / _)"
  done < <(seed_sources "$h")
  log="$B/fuzz-$h.log"
  # the regression inputs first: each must pass
  reg="tests/data/fuzz_regressions/$h"
  if [ -d "$reg" ] && [ -n "$(ls -A "$reg")" ]; then
    if ! "$bin" -rss_limit_mb=2048 -timeout=10 "$reg"/* >"$B/fuzz-$h.regressions.log" 2>&1; then
      echo "fuzz.sh: $h: a regression input fails again (see $B/fuzz-$h.regressions.log)"
      failed+=("$h (regression)")
      continue
    fi
  fi
  echo "fuzz.sh: $h: $(ls "$seeds" | wc -l) seeds, $(ls "$corpus" | wc -l) corpus files, ${SECS} s, -max_len=$len"
  "$bin" -max_total_time="$SECS" -max_len="$len" -rss_limit_mb=2048 -timeout="${HR_FUZZ_TIMEOUT:-10}" -print_final_stats=1 \
    -artifact_prefix="$findings/" "$corpus" "$seeds" >"$log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  speed=$(grep -o 'exec/s: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  summary+=("$(printf '%-18s rc=%-3s execs=%-9s exec/s=%-7s cov=%s' "$h" "$rc" "${execs:-?}" "${speed:-?}" "${cov:-?}")")
  if [ $rc -ne 0 ]; then
    failed+=("$h")
    echo "fuzz.sh: $h: FINDING (exit $rc); log $log"
    grep -E 'ERROR: |runtime error: |==ERROR|uncaught exception|Test unit written to' "$log" | head -8
    grep -E '^ +#[0-9]+ ' "$log" | head -12 | sed 's/^/    /'
  fi
done
rm -rf "$TMPDIR"
echo "fuzz.sh: summary (${SECS} s each)"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: FINDINGS in: ${failed[*]} (inputs under $B/fuzz-findings/)"
  exit 1
fi
echo "fuzz.sh: no findings"
