#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan+UBSan) and runs each on its
# seed corpus tests/fuzz/corpus/<name>, with the dictionary
# tests/fuzz/fuzz_<name>.dict when there is one. Skips, saying so, when clang
# is absent.
#
#   tools/fuzz.sh                 CI: every target for MXL_FUZZ_SECONDS (default 20) s
#   tools/fuzz.sh --long [--seconds S | --runs N] [TARGET...]
#                                 long fuzzing: each target (default: all) for S seconds
#                                 (default 3600) or N executions, one after the other,
#                                 then a table of executions, coverage and crashes
#                                 (also written to BUILD/fuzz-long-summary.txt)
#
# The working corpus of each target (BUILD/corpus-<name>) is kept between
# runs, so a long run continues where the last one stopped; the seed corpus
# in the repository is only read. A crashing input is saved as
# BUILD/<target>-crash-* (BUILD is MXL_FUZZ_BUILD_DIR, default build-fuzz).
# CI stops at the first crash; --long records it and goes on to the next
# target, and exits 1 at the end if any target crashed. Run long fuzzing
# niced on a shared machine: nice tools/fuzz.sh --long --runs 10000000.
#
# The whole library is compiled with coverage instrumentation
# (-fsanitize=fuzzer-no-link), not only the target file: otherwise libFuzzer
# would see no coverage of the parsers it drives. UBSan findings abort, so
# that they count as crashes.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${MXL_FUZZ_BUILD_DIR:-build-fuzz}"
long=0
limit=(-max_total_time="${MXL_FUZZ_SECONDS:-20}")
wanted=()
while [ $# -gt 0 ]; do
  case "$1" in
    --long) long=1; limit=(-max_total_time=3600) ;;
    --seconds) limit=(-max_total_time="$2"); shift ;;
    --runs) limit=(-runs="$2"); shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    fuzz_*) wanted+=("$1") ;;
    *) wanted+=("fuzz_$1") ;;
  esac
  shift
done
if ! command -v clang >/dev/null; then
  echo "fuzz: clang not found, fuzz targets skipped"
  exit 0
fi
ls tests/fuzz/fuzz_*.c >/dev/null 2>&1 || { echo "fuzz: no targets"; exit 0; }
targets=()
for src in tests/fuzz/fuzz_*.c; do targets+=("$(basename "$src" .c)"); done
if [ ${#wanted[@]} -gt 0 ]; then
  for t in "${wanted[@]}"; do
    [ -f "tests/fuzz/$t.c" ] || { echo "fuzz: no target $t (have: ${targets[*]})"; exit 2; }
  done
  targets=("${wanted[@]}")
fi

mkdir -p "$build"
flags="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
if ! { CC=clang cmake -S . -B "$build" -DMXL_FUZZ=ON -DMXL_CUDA=OFF -DMXL_BENCH=OFF \
         -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS="$flags" &&
       cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"; } \
     >"$build/build.log" 2>&1; then
  tail -40 "$build/build.log"
  echo "fuzz: build FAILED ($build/build.log)"
  exit 1
fi

# "executions coverage features corpus seconds" from a libFuzzer log.
stats() {
  local log="$1" runs cov ft corp
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
  corp=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
  echo "${runs:-0} ${cov:-?} ${ft:-?} ${corp:-?}"
}

summary="$build/fuzz-long-summary.txt"
[ $long = 1 ] && printf '%-20s %12s %8s %8s %8s %8s %8s %s\n' target executions "exec/s" \
  coverage features corpus crashes seconds >"$summary"
failed=0
for name in "${targets[@]}"; do
  corpus="tests/fuzz/corpus/${name#fuzz_}"
  work="$build/corpus-${name#fuzz_}"
  mkdir -p "$work" "$corpus"
  dict=()
  [ -f "tests/fuzz/$name.dict" ] && dict=(-dict="tests/fuzz/$name.dict")
  echo "fuzz: $name (${limit[*]})"
  log="$build/$name.log"
  start=$(date +%s)
  rc=0
  "$build/$name" "${limit[@]}" -print_final_stats=1 -artifact_prefix="$build/$name-" \
    "${dict[@]}" "$work" "$corpus" >"$log" 2>&1 || rc=$?
  seconds=$(( $(date +%s) - start ))
  read -r runs cov ft corp < <(stats "$log")
  if [ $long = 0 ]; then
    if [ $rc != 0 ]; then
      tail -40 "$log"
      echo "fuzz: $name FAILED (crash input saved as $build/$name-crash-*)"
      exit 1
    fi
    echo "stat::number_of_executed_units: $runs"
    continue
  fi
  crashes=0
  if [ $rc != 0 ]; then
    crashes=1
    failed=1
    cp "$log" "$build/$name-crash.log"
    tail -30 "$log"
  fi
  printf '%-20s %12s %8s %8s %8s %8s %8s %s\n' "$name" "$runs" \
    "$(( runs / (seconds > 0 ? seconds : 1) ))" "$cov" "$ft" "$corp" "$crashes" "$seconds" \
    | tee -a "$summary"
done
if [ $long = 1 ]; then
  echo
  cat "$summary"
  [ $failed = 0 ] || echo "fuzz: crashes found: see $build/fuzz_*-crash.log and $build/fuzz_*-crash-*"
fi
exit $failed
