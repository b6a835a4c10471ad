#!/usr/bin/env bash
# The test command: builds everything (the CUDA backend too when nvcc is
# present), runs every test under ctest, runs the input-parsing and op tests
# again under ASan+UBSan, then the fuzz targets for a bounded time when clang
# is present. Any failure fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh "$@"
(cd build && ctest --output-on-failure -j "$(nproc)")
tools/sanitize.sh
tools/fuzz.sh
