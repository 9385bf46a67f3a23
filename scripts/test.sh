#!/usr/bin/env bash
# Quick start, tests: installs dependencies, builds, runs the test suite (GPU tests skip without
# a device; the Python package's tests included), fuzzes every parser of user files for
# HR_FUZZ_SECONDS (60) each, installs the Python package with pip and runs the README's Python
# example on it, then installs the C++ package and builds the example that uses find_package(hrnet).
set -euo pipefail
cd "$(dirname "$0")/.."
# OpenMP threads sleep rather than spin while waiting: far faster on a shared or small machine
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
scripts/setup.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)"
# the parsers of user files under libFuzzer (clang, ASan + UBSan), a bounded pass each
scripts/fuzz.sh "${HR_FUZZ_SECONDS:-60}"
# the Python package as users install it (pip install . into build/venv), and the README's
# Python example run as written against it
scripts/install_python.sh
(cd build && venv/bin/python -m pytest -q -p no:cacheprovider ../tests/python/test_readme.py)
cmake --install build --prefix build/install >/dev/null
cmake -S examples/consumer -B build/consumer -DCMAKE_PREFIX_PATH="$PWD/build/install" >/dev/null
cmake --build build/consumer -j"$(nproc)" >/dev/null
# (in its build folder: it writes its checkpoint where it runs)
(cd build/consumer && ./hrnet_consumer --steps 20 && ./hrnet_consumer --steps 20 --graph)
