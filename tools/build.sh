#!/usr/bin/env bash
# Configures and builds mxlora into build/ (Release with debug info).
# Extra arguments go to cmake's configure step, e.g. -DMXL_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
cmake -S . -B build "$@" >/dev/null
cmake --build build -j "$(nproc)"
