#!/usr/bin/env bash
# The test command: builds everything (the CUDA backend too when nvcc is
# present), runs every test under ctest, runs the input-parsing and op tests
# again under ASan+UBSan, then the fuzz targets for a bounded time when clang
# is present. Any failure fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh "$@"
# The SASS gate (test_cuda_sass) reads the CUDA kernels' machine code with
# NVIDIA's cuobjdump and nvdisasm, which the toolkit's Debian packages lack:
# fetch them once into build/cuda-tools (pip, 32 MB); where that fails the
# test shows as skipped.
if [ -d build/kernels/cuda ] && [ ! -d build/cuda-tools ] && ! command -v cuobjdump >/dev/null; then
  tools/check_sass.sh --install build/cuda-tools ||
    { echo "test: cuobjdump/nvdisasm not installed, test_cuda_sass will skip"; rm -rf build/cuda-tools; }
fi
(cd build && ctest --output-on-failure -j "$(nproc)")
tools/sanitize.sh
tools/fuzz.sh
