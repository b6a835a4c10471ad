/* The reference backend's math, written once for a type `mxl_real`.
 *
 * kernels/ref is the ORACLE: plain scalar C, no intrinsics, no threads, one
 * loop nest per op, every other backend is tested against it
 * (tests/test_ops.c). Its math lives in four headers of `static inline`
 * functions written for `mxl_real`:
 *   ref_dense.h      embed, RMSNorm, bf16 matmul, gemm_f32, RoPE, add
 *   ref_attention.h  attention with GQA, sinks, masks (forward, backward)
 *   ref_moe.h        router, plan, gather, MXFP4 matmul, SwiGLU, combine
 *   ref_loss.h       fused unembedding + cross-entropy, dropout, AdamW, Σx²
 * A translation unit defines MXL_REAL and includes them:
 *   kernels/ref/ref_backend.c   MXL_REAL float   -> the backend's ops
 *   tests/test_grad.c           MXL_REAL double  -> a double-precision twin
 *                               for finite-difference gradient checks.
 * So the float oracle and the double twin are the same source text.
 *
 * Shape legend (as kernels/ops.h):
 *   n  tokens            H  hidden size        I  expert width
 *   V  vocabulary rows   E  experts            k  experts per token
 *   nh query heads       nkv key/value heads   d  head dim
 *   m  grouped rows (n*k)                      R  LoRA rank
 *
 * Numerics: every reduction (dot products, norms, softmax sums) accumulates
 * in `mxl_acc` = double, and transcendental functions (exp, log, sqrt, sin,
 * cos) are evaluated in double; a float result is rounded once when it is
 * stored. The float oracle is therefore within about one float rounding of
 * the exact result of its float inputs, which is what the other backends are
 * compared with. Frozen weights (bf16, MXFP4) are decoded exactly.
 */
#ifndef MXL_KERNELS_REF_REAL_H
#define MXL_KERNELS_REF_REAL_H

#ifndef MXL_REAL
#error "define MXL_REAL (float or double) before including the ref math headers"
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "core/bf16.h"

typedef MXL_REAL mxl_real; /* activations and their gradients */
typedef double mxl_acc;    /* every accumulation */

/* A bf16 weight element as an accumulator value (exact). */
static inline mxl_acc mxl_ref_bf16(uint16_t w) { return (mxl_acc)mxl_bf16_to_f32(w); }

/* A bf16 bias element, or 0 when there is no bias. */
static inline mxl_acc mxl_ref_bias(const uint16_t *bias, int64_t i) {
  return bias ? mxl_ref_bf16(bias[i]) : 0.0;
}

#endif
