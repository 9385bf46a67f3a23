#!/usr/bin/env bash
# The sanitizer leg (issue 18 item 4): the whole CPU test suite built with AddressSanitizer and
# UndefinedBehaviorSanitizer (-DHR_SANITIZE=ON: every report fatal, -fno-sanitize-recover=all),
# run by ctest with halt_on_error. Too long for CI's budget on 2 cores (docs/RELIABILITY.md):
# run it for every change to parsers or kernels.
#   scripts/sanitize.sh [ctest arguments...]      (build dir: $HR_SANITIZE_BUILD, default build-asan)
# The processes of MPI jobs (test_distributed_apps) run with leak detection off: Open MPI's
# plugins keep allocations at exit that LeakSanitizer can only place in "<unknown module>"; every
# other report stays fatal there too. Allocation failures are returned (allocator_may_return_null),
# as test_reliability_inputs checks that a huge tensor is refused with one line.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${HR_SANITIZE_BUILD:-build-asan}
t0=$(date +%s)
mkdir -p "$B"
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DHR_SANITIZE=ON -DHR_CUDA=OFF \
  -DHR_BUILD_BENCHMARKS=OFF >"$B/configure.log" 2>&1 || { cat "$B/configure.log"; exit 2; }
cmake --build "$B" -j"$(nproc)"
echo "sanitize.sh: build $(( $(date +%s) - t0 )) s"
asan="halt_on_error=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1:allocator_may_return_null=1"
export ASAN_OPTIONS="$asan:detect_leaks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export OMP_WAIT_POLICY=PASSIVE
t1=$(date +%s)
rc=0
ctest --test-dir "$B" --output-on-failure -j"$(nproc)" -L cpu -E '^test_distributed_apps$' "$@" || rc=1
if [ -x "$B/tests/test_distributed_apps" ]; then
  ASAN_OPTIONS="$asan:detect_leaks=0" ctest --test-dir "$B" --output-on-failure \
    -R '^test_distributed_apps$' "$@" || rc=1
fi
echo "sanitize.sh: tests $(( $(date +%s) - t1 )) s"
exit $rc
