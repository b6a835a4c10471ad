#!/usr/bin/env bash
# The SASS gate of the CUDA backend: reads the machine code of the built
# library (libmxlora_cuda.a) for every architecture it carries and checks
#   - the MXFP4 grouped GEMM kernels (mxl_mx_gemm_kernel, forward and dx)
#     run on tensor cores: HMMA (mma.sync), fed by LDSM (ldmatrix) and
#     LDGSTS (cp.async); so do the attention forward and the two kernels of
#     its backward (dq, dk/dv), every head dim they are built for (HMMA,
#     LDSM);
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
# members are disassembled): member, mangled-name prefix (every template
# instantiation starting with it is checked; there must be one), label,
# instructions that must be there.
gates=(
  "ops_moe.cu.o _Z18mxl_mx_gemm_kernelILb0EE mxfp4_gemm<fwd> HMMA LDSM LDGSTS"
  "ops_moe.cu.o _Z18mxl_mx_gemm_kernelILb1EE mxfp4_gemm<dx> HMMA LDSM LDGSTS"
  "ops_attention.cu.o _Z24mxl_attention_mma_kernelI attention_mma HMMA LDSM"
  "ops_attention.cu.o _Z27mxl_attention_dq_mma_kernelI attention_dq_mma HMMA LDSM"
  "ops_attention.cu.o _Z28mxl_attention_dkv_mma_kernelI attention_dkv_mma HMMA LDSM"
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
lib_abs=$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")
(cd "$work" && ar x "$lib_abs" ops_moe.cu.o ops_attention.cu.o) || fail "$lib lacks ops_moe.cu.o or ops_attention.cu.o"

archs=$(cuobjdump -lelf "$lib" 2>/dev/null | sed -n 's/.*\.\(sm_[0-9a-z]*\)\.cubin.*/\1/p' | sort -u)
[ -n "$archs" ] || fail "$lib holds no device code (cuobjdump -lelf)"
# One pass over a member's disassembly: "function instruction count" for
# every function and each instruction of the gates.
count_insns() {
  awk 'BEGIN { n = split("HMMA LDSM LDGSTS", I, " ") }
       /Function : / { f = $3; seen[f] = 1 }
       f != "" { for (i = 1; i <= n; i++) if (index($0, I[i])) c[f " " I[i]]++ }
       END { for (f in seen) for (i = 1; i <= n; i++) print f, I[i], c[f " " I[i]] + 0 }'
}
for arch in $archs; do
  for member in ops_moe.cu.o ops_attention.cu.o; do
    counts=$(cuobjdump -sass -arch "$arch" "$work/$member" 2>&1 | count_insns)
    for gate in "${gates[@]}"; do
      read -r gate_member prefix label insns <<<"$gate"
      [ "$gate_member" = "$member" ] || continue
      functions=$(awk -v p="$prefix" 'index($1, p) == 1 { print $1 }' <<<"$counts" | sort -u)
      if [ -z "$functions" ]; then
        fail "$arch: no $label kernel ($prefix*) in $member"
        continue
      fi
      for fn in $functions; do
        inst=$(sed -n 's/^.*_kernelILi\([0-9]*\)E.*$/<d=\1>/p' <<<"$fn")
        for insn in $insns; do
          count=$(awk -v f="$fn" -v i="$insn" '$1 == f && $2 == i { print $3 }' <<<"$counts")
          if [ "$count" = 0 ]; then
            fail "$arch: $label$inst has no $insn"
          else
            echo "ok    $arch: $label$inst: $count $insn"
          fi
        done
      done
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
