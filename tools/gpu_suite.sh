#!/usr/bin/env bash
# The GPU suite, for the rare occasion a machine with an NVIDIA GPU is lent:
# one command that builds mxlora with the CUDA backend for that GPU, checks
# its SASS (tensor-core MMA in the GEMM kernels, no local memory, cuBLASLt
# called), runs the whole test suite on the real backend (test_ops then
# compares every op of the CUDA backend with the reference instead of
# skipping it), the benchmarks with per-kernel TFLOP/s and GB/s against the
# GPU's published peaks next to the roofline model's expectation
# (bench_roofline), then compute-sanitizer (memcheck, racecheck, synccheck)
# on the op tests; every log in one folder to bring back. Budget: under 10
# minutes on one H100 (device time is scarce); every step has a time limit.
#
#   tools/gpu_suite.sh [--out DIR] [--full] [--all-archs] [--no-sanitize] [--no-bench]
#
#   --out DIR       logs and summary (default gpu-suite-<date>/, in the repository)
#   --full          the long benchmarks too (bench_cuda_ops at 512 tokens,
#                   bench_ops, bench_forward, bench_train); default: quick ones
#   --all-archs     build every architecture of the CI list instead of only
#                   this GPU's (slower; checks the multi-arch binary on it)
#   --no-sanitize   skip compute-sanitizer
#   --no-bench      tests only
#
# Nothing is fetched: the machine may have no network. The build needs
# cmake, a C compiler, nvcc and the packages of tools/deps.sh already there;
# the SASS gate needs cuobjdump and nvdisasm (the toolkit's, or a venv at
# <build>/cuda-tools: tools/check_sass.sh --install) and is skipped without.
# Exit status: 0 when every step passed, 1 otherwise (the summary says which).
set -uo pipefail
cd "$(dirname "$0")/.."

out="gpu-suite-$(date +%Y%m%d-%H%M%S)"
quick=1 all_archs=0 sanitize=1 bench=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --full) quick=0; shift ;;
    --quick) quick=1; shift ;;
    --all-archs) all_archs=1; shift ;;
    --sanitize) sanitize=1; shift ;;
    --no-sanitize) sanitize=0; shift ;;
    --no-bench) bench=0; shift ;;
    *) echo "usage: tools/gpu_suite.sh [--out DIR] [--full] [--all-archs] [--no-sanitize] [--no-bench]" >&2
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
# PASS/FAIL (SKIP for exit status 77) and the time taken.
step() {
  local name="$1" log="$out/$2"; shift 2
  local t0=$SECONDS rc=0
  "$@" >"$log" 2>&1 || rc=$?
  if [ "$rc" = 0 ]; then
    note "PASS  $name ($((SECONDS - t0)) s)"
  elif [ "$rc" = 77 ]; then
    note "SKIP  $name: $(head -1 "$log")"
  else
    note "FAIL  $name ($((SECONDS - t0)) s, status $rc): see $log"
    failed=1
  fi
}

# Published peaks of the GPU, by name: bf16 dense TFLOP/s and GB/s (empty when unknown). RTX PRO 6000: bf16 = its 4000 TOPS FP4 sparse / 8.
peaks_of() {
  case "$1" in
    *H200*) echo "989 4800" ;;
    *H100*NVL*) echo "835 3900" ;;
    *H100*PCIe*) echo "756 2000" ;;
    *H100*) echo "989 3350" ;;
    *A100*80GB*) echo "312 2039" ;;
    *A100*) echo "312 1555" ;;
    *"RTX PRO 6000"*) echo "500 1792" ;;
    *L40S*) echo "362 864" ;;
    *"RTX 5090"*) echo "209.5 1792" ;;
    *"RTX 4090"*) echo "165.2 1008" ;;
    *) echo "" ;;
  esac
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
step "SASS gate (tools/check_sass.sh)" sass.log \
  timeout 300 tools/check_sass.sh "$build/kernels/cuda/libmxlora_cuda.a" "$build/cuda-tools"
grep -E "^(ok|FAIL)" "$out/sass.log" | tail -4 >>"$summary" || true

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
# which path attention took on the device (cuDNN's graph or the own kernels, and why)
grep -E "^info cuda" "$out/test_ops.log" >>"$summary" || true

step "ctest (the whole suite)" ctest.log \
  bash -c "cd '$build' && ctest --output-on-failure --timeout 300 -j '$(nproc)'"
tail -3 "$out/ctest.log" >>"$summary"

# ------------------------------------------------------------ benchmarks
if [ "$bench" = 1 ]; then
  gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
  read -r p_bf16 p_gbs <<<"$(peaks_of "$gpu_name")"
  peak_args=()
  if [ -n "${p_bf16:-}" ]; then
    peak_args=(--peak-bf16 "$p_bf16" --peak-gbs "$p_gbs")
    note "      peaks of $gpu_name: bf16 $p_bf16 TFLOP/s, $p_gbs GB/s"
  else
    note "      no published peaks known for $gpu_name: rows without % of peak"
  fi
  step "bench_roofline (the model's expectation)" bench_roofline.log "$build/bench_roofline"
  if [ "$quick" = 1 ]; then
    step "bench_cuda_ops --quick" bench_cuda_ops.log \
      timeout 300 "$build/kernels/cuda/bench_cuda_ops" --quick "${peak_args[@]}"
  else
    step "bench_cuda_ops" bench_cuda_ops.log \
      timeout 600 "$build/kernels/cuda/bench_cuda_ops" "${peak_args[@]}"
    step "bench_ops (CPU, for comparison)" bench_ops.log "$build/bench_ops"
    step "bench_forward" bench_forward.log "$build/bench_forward"
    step "bench_train" bench_train.log "$build/bench_train"
    for b in bench_mxfp4; do
      [ -x "$build/$b" ] && step "$b" "$b.log" "$build/$b"
    done
  fi
  [ -f "$out/bench_cuda_ops.log" ] && cat "$out/bench_cuda_ops.log" >>"$summary"
  grep -E "tokens/s" "$out/bench_roofline.log" >>"$summary" || true
fi

# ------------------------------------------------------------ compute-sanitizer
# Last, with time limits: the results above are in even if these run long.
if [ "$sanitize" = 1 ]; then
  if command -v compute-sanitizer >/dev/null; then
    for tool in memcheck racecheck synccheck; do
      step "compute-sanitizer $tool test_cuda_mxfp4" "sanitize-$tool-mxfp4.log" \
        timeout 60 compute-sanitizer --tool "$tool" --error-exitcode 1 \
          "$build/kernels/cuda/test_cuda_mxfp4"
      step "compute-sanitizer $tool test_ops" "sanitize-$tool-ops.log" \
        timeout 120 compute-sanitizer --tool "$tool" --error-exitcode 1 "$build/test_ops"
    done
  else
    note "SKIP  compute-sanitizer not found"
  fi
fi

note ""
if [ "$failed" = 0 ]; then note "GPU suite: all steps passed (logs in $out/)"; else note "GPU suite: FAILED (logs in $out/)"; fi
exit "$failed"
