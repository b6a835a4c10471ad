#!/usr/bin/env bash
# Configures and builds mxlora into build/ (Release with debug info).
# Extra arguments go to cmake's configure step, e.g. -DMXL_CUDA=OFF.
# MXL_CUDA=OFF in the environment does the same for the scripts that call
# this one (tools/demo.sh, tools/test.sh): when nvcc is present, the first
# build otherwise compiles the CUDA kernels for six GPU architectures, which
# takes long on a small machine.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
cuda=()
[ -n "${MXL_CUDA:-}" ] && cuda=(-DMXL_CUDA="$MXL_CUDA")
cmake -S . -B build "${cuda[@]}" "$@" >/dev/null
cmake --build build -j "$(nproc)"
