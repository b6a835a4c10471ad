#!/usr/bin/env bash
# Builds with AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/) and
# runs the tests that parse outside input or exercise every op, the
# emulated CUDA kernels' op tests included (out-of-bounds shared memory shows
# at the kernel's line). The slowest model-level tests (whole-model
# gradients, trainer, the emulated CUDA model, plan and mixed batch) are
# left to the plain build; MXL_SANITIZE_ALL=1 runs everything.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-asan -DMXL_SANITIZE=ON -DMXL_CUDA=OFF -DMXL_BENCH=OFF >/dev/null
cmake --build build-asan -j "$(nproc)" >/dev/null
# test_dist runs mpirun jobs: OpenMPI's own allocations are not leak-clean
# under LeakSanitizer, and its trainers are the plain build's test_trainer's.
exclude='test_model_grad|test_trainer|test_dist|test_cuda_model|test_cuda_plan|test_cuda_mixed_batch'
[ "${MXL_SANITIZE_ALL:-0}" = 1 ] && exclude='^$'
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ctest --output-on-failure -j "$(nproc)" -E "$exclude")
