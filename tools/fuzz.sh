#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan+UBSan) and runs each for a
# bounded time (MXL_FUZZ_SECONDS, default 20) on its seed corpus
# tests/fuzz/corpus/<name>, with the dictionary tests/fuzz/fuzz_<name>.dict
# when there is one. Skips, saying so, when clang is absent.
#
# The whole library is compiled with coverage instrumentation
# (-fsanitize=fuzzer-no-link), not only the target file: otherwise libFuzzer
# would see no coverage of the parsers it drives. UBSan findings abort, so
# that they count as crashes. A crashing input is saved in the build folder
# (MXL_FUZZ_BUILD_DIR, default build-fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${MXL_FUZZ_SECONDS:-20}"
build="${MXL_FUZZ_BUILD_DIR:-build-fuzz}"
if ! command -v clang >/dev/null; then
  echo "fuzz: clang not found, fuzz targets skipped"
  exit 0
fi
ls tests/fuzz/fuzz_*.c >/dev/null 2>&1 || { echo "fuzz: no targets"; exit 0; }
targets=()
for src in tests/fuzz/fuzz_*.c; do targets+=("$(basename "$src" .c)"); done

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

for name in "${targets[@]}"; do
  corpus="tests/fuzz/corpus/${name#fuzz_}"
  work="$build/corpus-${name#fuzz_}"
  mkdir -p "$work" "$corpus"
  dict=()
  [ -f "tests/fuzz/$name.dict" ] && dict=(-dict="tests/fuzz/$name.dict")
  echo "fuzz: $name for ${seconds}s"
  log="$build/$name.log"
  if ! "$build/$name" -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="$build/$name-" "${dict[@]}" "$work" "$corpus" >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $name FAILED (crash input saved as $build/$name-crash-*)"
    exit 1
  fi
  grep -E 'stat::number_of_executed_units' "$log" || true
done
