#!/usr/bin/env bash
# The GPU suite, for the rare occasion a machine with an NVIDIA GPU is lent:
# builds mxlora with the CUDA backend for that GPU, runs the whole test
# suite (test_ops then compares every op of the CUDA backend with the
# reference instead of skipping it; the device tests of kernels/cuda run),
# then the benchmarks, and leaves every log in one folder to bring back.
#
#   tools/gpu_suite.sh [--out DIR] [--quick] [--all-archs] [--sanitize] [--no-bench]
#
#   --out DIR     logs and summary (default gpu-suite-<date>/, in the repository)
#   --quick       shorter benchmarks (bench_cuda_ops --quick, bench_ops --quick,
#                 no bench_forward / bench_train)
#   --all-archs   build every architecture of the CI list instead of only
#                 this GPU's (slower; checks the multi-arch binary on it)
#   --sanitize    also run the device tests under compute-sanitizer
#                 (memcheck, racecheck, synccheck, initcheck) when it exists
#   --no-bench    tests only
#
# Nothing is fetched: the machine may have no network. The build needs
# cmake, a C compiler, nvcc and the packages of tools/deps.sh already there.
# Exit status: 0 when every step passed, 1 otherwise (the summary says which).
set -uo pipefail
cd "$(dirname "$0")/.."

out="gpu-suite-$(date +%Y%m%d-%H%M%S)"
quick=0 all_archs=0 sanitize=0 bench=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --all-archs) all_archs=1; shift ;;
    --sanitize) sanitize=1; shift ;;
    --no-bench) bench=0; shift ;;
    *) echo "usage: tools/gpu_suite.sh [--out DIR] [--quick] [--all-archs] [--sanitize] [--no-bench]" >&2
       exit 2 ;;
  esac
done
mkdir -p "$out"
summary="$out/summary.txt"
build="${MXL_GPU_BUILD:-build-gpu}" # the build folder (environment: MXL_GPU_BUILD)
failed=0
: >"$summary"

note() { echo "$*" | tee -a "$summary"; }

# step NAME LOG COMMAND...: runs the command with its output in LOG, notes
# PASS/FAIL and the time taken.
step() {
  local name="$1" log="$out/$2"; shift 2
  local t0=$SECONDS
  if "$@" >"$log" 2>&1; then
    note "PASS  $name ($((SECONDS - t0)) s)"
  else
    note "FAIL  $name ($((SECONDS - t0)) s): see $log"
    failed=1
  fi
}

# ------------------------------------------------------------ the machine
note "mxlora GPU suite, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >"$out/gpus.txt" 2>&1; then
  note "FAIL  no NVIDIA GPU visible (nvidia-smi)"
  exit 1
fi
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv >>"$out/gpus.txt" 2>&1
cat "$out/gpus.txt" | tee -a "$summary"
command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
nvcc --version | tail -1 | tee -a "$summary"

# ------------------------------------------------------------ build
archs=(-DMXL_CUDA_ARCHITECTURES=native)
what="for this GPU only"
if [ "$all_archs" = 1 ]; then
  archs=(-UMXL_CUDA_ARCHITECTURES) # back to the default list
  what="for every CI architecture"
fi
step "configure (CUDA on, $what)" configure.log \
  cmake -S . -B "$build" -DMXL_CUDA=ON -DMXL_BENCH=ON "${archs[@]}"
step "build" build.log cmake --build "$build" -j "$(nproc)"
if [ "$failed" = 1 ]; then
  note "the build failed: nothing to test"
  exit 1
fi

# ------------------------------------------------------------ tests
# The device must be usable by the CUDA runtime, not only visible.
step "CUDA device tests (test_cuda_mxfp4)" test_cuda_mxfp4.log "$build/kernels/cuda/test_cuda_mxfp4"
if grep -q "no CUDA device" "$out/test_cuda_mxfp4.log"; then
  note "FAIL  the CUDA backend found no usable device: $(grep -m1 'no CUDA device' "$out/test_cuda_mxfp4.log")"
  failed=1
fi

# test_ops: every op of every backend against ref; the CUDA backend must run
# every op (no 'skip cuda' line at all).
step "test_ops (every op, CUDA included)" test_ops.log "$build/test_ops"
if grep -q "^skip cuda" "$out/test_ops.log"; then
  note "FAIL  test_ops skipped CUDA ops: $(grep -c '^skip cuda' "$out/test_ops.log") lines 'skip cuda'"
  failed=1
fi
note "      test_ops CUDA cases: $(grep -c '^ok   cuda' "$out/test_ops.log") ok, $(grep -c '^FAIL cuda' "$out/test_ops.log") failed"
grep -E "^  cuda " "$out/test_ops.log" >>"$summary" || true

step "ctest (the whole suite)" ctest.log \
  bash -c "cd '$build' && ctest --output-on-failure -j '$(nproc)'"
tail -3 "$out/ctest.log" >>"$summary"

if [ "$sanitize" = 1 ]; then
  if command -v compute-sanitizer >/dev/null; then
    for tool in memcheck racecheck synccheck initcheck; do
      step "compute-sanitizer $tool test_cuda_mxfp4" "sanitize-$tool-mxfp4.log" \
        compute-sanitizer --tool "$tool" --error-exitcode 1 "$build/kernels/cuda/test_cuda_mxfp4"
      step "compute-sanitizer $tool test_ops" "sanitize-$tool-ops.log" \
        timeout 3600 compute-sanitizer --tool "$tool" --error-exitcode 1 "$build/test_ops"
    done
  else
    note "SKIP  compute-sanitizer not found"
  fi
fi

# ------------------------------------------------------------ benchmarks
if [ "$bench" = 1 ]; then
  if [ "$quick" = 1 ]; then
    step "bench_cuda_ops --quick" bench_cuda_ops.log "$build/kernels/cuda/bench_cuda_ops" --quick
    step "bench_ops --quick (CPU, for comparison)" bench_ops.log "$build/bench_ops" --quick
  else
    step "bench_cuda_ops" bench_cuda_ops.log "$build/kernels/cuda/bench_cuda_ops"
    step "bench_ops (CPU, for comparison)" bench_ops.log "$build/bench_ops"
    step "bench_forward" bench_forward.log "$build/bench_forward"
    step "bench_train" bench_train.log "$build/bench_train"
  fi
  [ -f "$out/bench_cuda_ops.log" ] && cat "$out/bench_cuda_ops.log" >>"$summary"
  for b in bench_mxfp4; do
    [ -x "$build/$b" ] && step "$b" "$b.log" "$build/$b"
  done
fi

note ""
if [ "$failed" = 0 ]; then note "GPU suite: all steps passed (logs in $out/)"; else note "GPU suite: FAILED (logs in $out/)"; fi
exit "$failed"
