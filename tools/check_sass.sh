#!/usr/bin/env bash
# The SASS gate of the CUDA backend: reads the machine code of the built
# library (libmxlora_cuda.a) for every architecture it carries and checks
#   - the MXFP4 grouped GEMM kernels (mxl_mx_gemm_kernel, forward and dx)
#     run on tensor cores: HMMA (mma.sync), fed by LDSM (ldmatrix) and
#     LDGSTS (cp.async); so does the attention forward (HMMA, LDSM);
#   - no kernel touches local memory (LDL/STL: spills or stack arrays;
#     ptxas already fails the build on them, this checks the binary);
#   - cuBLASLt is called, not only linked: the objects reference
#     cublasLtMatmul.
#
#   tools/check_sass.sh LIBRARY [TOOLS_DIR]
#   tools/check_sass.sh --install TOOLS_DIR   (pip: a venv with NVIDIA's
#                                              cuobjdump and nvdisasm)
#
# cuobjdump and nvdisasm come from PATH, else from TOOLS_DIR (a venv made
# by --install; CMake passes <build>/cuda-tools). Without them the gate
# cannot run: it says so and exits 77, which ctest shows as "Skipped".
set -uo pipefail

if [ "${1:-}" = "--install" ]; then
  dir="${2:?usage: tools/check_sass.sh --install TOOLS_DIR}"
  python3 -m venv "$dir" && "$dir/bin/pip" install -q nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm
  exit $?
fi

lib="${1:?usage: tools/check_sass.sh LIBRARY [TOOLS_DIR]}"
tools="${2:-}"
if ! command -v cuobjdump >/dev/null || ! command -v nvdisasm >/dev/null; then
  if [ -n "$tools" ]; then
    for bin in "$tools"/lib/python3*/site-packages/nvidia/cu*/bin; do
      [ -x "$bin/cuobjdump" ] && PATH="$bin:$PATH"
    done
  fi
fi
if ! command -v cuobjdump >/dev/null || ! command -v nvdisasm >/dev/null; then
  echo "SKIP: cuobjdump/nvdisasm not found (PATH${tools:+, $tools}); install them with"
  echo "      tools/check_sass.sh --install ${tools:-<build>/cuda-tools}"
  exit 77
fi

failed=0
fail() { echo "FAIL: $*"; failed=1; }

# The tensor-core kernels and the library members holding them (only those
# members are disassembled): member, mangled name, label, instructions that
# must be there.
gates=(
  "ops_moe.cu.o _Z18mxl_mx_gemm_kernelILb0EEv11mxl_mx_args13mxl_gemm_grid mxfp4_gemm<fwd> HMMA LDSM LDGSTS"
  "ops_moe.cu.o _Z18mxl_mx_gemm_kernelILb1EEv11mxl_mx_args13mxl_gemm_grid mxfp4_gemm<dx> HMMA LDSM LDGSTS"
  "ops_attention.cu.o _Z24mxl_attention_mma_kernelPKfS0_S0_PKt13mxl_attn_maskiiiifPfS4_ attention_mma HMMA LDSM"
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
lib_abs=$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")
(cd "$work" && ar x "$lib_abs" ops_moe.cu.o ops_attention.cu.o) || fail "$lib lacks ops_moe.cu.o or ops_attention.cu.o"

archs=$(cuobjdump -lelf "$lib" 2>/dev/null | sed -n 's/.*\.\(sm_[0-9a-z]*\)\.cubin.*/\1/p' | sort -u)
[ -n "$archs" ] || fail "$lib holds no device code (cuobjdump -lelf)"
for arch in $archs; do
  for gate in "${gates[@]}"; do
    read -r member kernel label insns <<<"$gate"
    sass=$(cuobjdump -sass -arch "$arch" -fun "$kernel" "$work/$member" 2>&1)
    for insn in $insns; do
      count=$(grep -c "$insn" <<<"$sass")
      if [ "$count" = 0 ]; then
        fail "$arch: $label has no $insn"
      else
        echo "ok    $arch: $label: $count $insn"
      fi
    done
  done
done

# Local memory and stack per kernel, every architecture (ptxas's report).
usage=$(cuobjdump -res-usage "$lib" 2>&1)
kernels=$(grep -c "Function" <<<"$usage")
lmem=$(awk '/Function/ { f = $2 } /LOCAL:/ { if ($0 !~ /STACK:0 / || $0 !~ /LOCAL:0 /) print f }' <<<"$usage" | sort -u)
if [ -n "$lmem" ]; then
  fail "local memory or stack in: $lmem"
else
  echo "ok    no local memory or stack in any of $kernels kernel builds ($(echo $archs))"
fi

symbols=$(nm -A "$lib" 2>/dev/null)
callers=$(grep " U cublasLtMatmul$" <<<"$symbols" | cut -d: -f2 | sort -u | tr '\n' ' ')
if [ -n "$callers" ]; then
  echo "ok    cuBLASLt called from: $callers"
else
  fail "no object of $lib calls cublasLtMatmul"
fi
exit "$failed"
