#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan+UBSan) and runs each for a
# bounded time on its seed corpus. Skips, saying so, when clang is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${MXL_FUZZ_SECONDS:-20}"
if ! command -v clang >/dev/null; then
  echo "fuzz: clang not found, fuzz targets skipped"
  exit 0
fi
ls tests/fuzz/fuzz_*.c >/dev/null 2>&1 || { echo "fuzz: no targets"; exit 0; }
CC=clang cmake -S . -B build-fuzz -DMXL_FUZZ=ON -DMXL_CUDA=OFF -DMXL_BENCH=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j "$(nproc)" >/dev/null
for src in tests/fuzz/fuzz_*.c; do
  name=$(basename "$src" .c)
  corpus="tests/fuzz/corpus/${name#fuzz_}"
  work="build-fuzz/corpus-${name#fuzz_}"
  mkdir -p "$work"
  echo "fuzz: $name for ${seconds}s"
  log="build-fuzz/$name.log"
  if ! "build-fuzz/$name" -max_total_time="$seconds" -print_final_stats=1 "$work" "$corpus" \
    >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $name FAILED (crash input saved beside the log)"
    exit 1
  fi
  grep -E 'stat::number_of_executed_units' "$log" || true
done
