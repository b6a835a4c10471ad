/* The device memory the CUDA backend allocates by itself, beyond the
 * buffers model code asks for: its scratch (the largest any op needs, see
 * below), the cuBLASLt workspace, and per-op intermediates. One set of
 * formulas, used both by the backend, which sizes its allocations with
 * them (the kernel headers of kernels/cuda), and by `mxlora plan`
 * (model/plan.c), which budgets GPU memory with them; a test checks the
 * plan against the bytes the emulated backend actually allocates
 * (tests/cuda/test_cuda_plan.c).
 *
 * Plain C: no CUDA needed to include it. Shapes as kernels/ops.h. */
#ifndef MXL_KERNELS_CUDA_MEMORY_H
#define MXL_KERNELS_CUDA_MEMORY_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/ops.h"

enum {
  MXL_CUDA_PIECE_ALIGN = 256,     /* every piece of the scratch starts aligned */
  MXL_CUDA_BLAS_PLANS = 64,       /* cached cuBLASLt plans per backend */
  /* floats of unembed_xent's [n, chunk] logits: 64 MiB, 4096 vocabulary rows per
   * chunk at 4096 tokens (products still far above the GEMM's ridge point);
   * the loss is the largest op of a training step's scratch */
  MXL_CUDA_XENT_LOGIT_BUDGET = 1 << 24,
  MXL_CUDA_XENT_CHUNK_STEP = 64,  /* chunks are multiples of this many rows */
};

/* cuBLASLt workspace: 32 MiB, NVIDIA's recommendation for Hopper and newer
 * (cuBLAS documentation, cublasSetWorkspace), allocated once per backend. */
#define MXL_CUDA_BLAS_WORKSPACE ((size_t)32 << 20)

/* The scratch buffer grows in whole MiB (kernels/cuda/runtime.cuh). */
static inline size_t mxl_cuda_scratch_rounded(size_t bytes) {
  const size_t mib = (size_t)1 << 20;
  return bytes > SIZE_MAX - mib ? SIZE_MAX : (bytes + mib - 1) & ~(mib - 1);
}

static inline size_t mxl_cuda_piece(size_t bytes) {
  return (bytes + MXL_CUDA_PIECE_ALIGN - 1) & ~(size_t)(MXL_CUDA_PIECE_ALIGN - 1);
}

/* matmul_bf16: the bias as fp32 (cuBLASLt's bias type is the output's),
 * then x as bf16 [n, cols], or with fp32_act W as fp32 [rows, cols]. */
static inline size_t mxl_cuda_scratch_matmul_bf16(int64_t n, int64_t rows, int64_t cols,
                                                  int fp32_act) {
  return mxl_cuda_piece((size_t)rows * 4) +
         (fp32_act ? mxl_cuda_piece((size_t)rows * (size_t)cols * 4)
                   : mxl_cuda_piece((size_t)n * (size_t)cols * 2));
}

/* matmul_bf16_dx: dy as bf16 [n, rows]. */
static inline size_t mxl_cuda_scratch_matmul_bf16_dx(int64_t n, int64_t rows) {
  return mxl_cuda_piece((size_t)n * (size_t)rows * 2);
}

/* unembed_xent's vocabulary rows per chunk: `rows` when positive (a test
 * override), else the logit budget over n tokens in whole steps, at least
 * one step, at most V. */
static inline int64_t mxl_cuda_xent_chunk(int64_t n, int64_t V, int64_t rows) {
  int64_t chunk = rows;
  if (chunk <= 0) {
    chunk = MXL_CUDA_XENT_LOGIT_BUDGET / (n > 0 ? n : 1);
    chunk -= chunk % MXL_CUDA_XENT_CHUNK_STEP;
    if (chunk < MXL_CUDA_XENT_CHUNK_STEP) chunk = MXL_CUDA_XENT_CHUNK_STEP;
  }
  return chunk < V ? chunk : V;
}

/* unembed_xent with `chunk` rows per chunk: logits [n, chunk] fp32, their
 * probabilities as bf16 [n, chunk] (with dh), the running state 4 x [n],
 * the bias of the whole vocabulary as fp32 [V] (when present), h as bf16
 * [n, H], and with dh the accumulator [n, H] fp32; with W in host memory
 * (host_w) the uploaded chunk of W bf16 [chunk, H] and the bias bf16 [V]
 * (when present), and with dh the target rows of W bf16 [n, H]. */
static inline size_t mxl_cuda_scratch_unembed_xent(int64_t n, int64_t V, int64_t H,
                                                   int64_t chunk, int bias, int with_dh,
                                                   int host_w) {
  size_t nc = (size_t)n * (size_t)chunk, nH = (size_t)n * (size_t)H;
  size_t staged = host_w ? mxl_cuda_piece((size_t)chunk * (size_t)H * 2) +
                               (bias ? mxl_cuda_piece((size_t)V * 2) : 0) +
                               (with_dh ? mxl_cuda_piece(nH * 2) : 0)
                         : 0;
  return mxl_cuda_piece(nc * 4) + (with_dh ? mxl_cuda_piece(nc * 2) : 0) +
         mxl_cuda_piece(4 * (size_t)n * 4) + (bias ? mxl_cuda_piece((size_t)V * 4) : 0) +
         mxl_cuda_piece(nH * 2) + (with_dh ? mxl_cuda_piece(nH * 4) : 0) + staged;
}

/* lora / lora_bwd (kernels/cuda/ops_lora.cuh): the segment table and its
 * indexes (per-phase prefix sums, the covered rows and their segment list)
 * for n_segs segments covering `covered` rows with `entries` (row,
 * segment) pairs, then t_floats + 1 floats of t. */
static inline size_t mxl_cuda_scratch_lora(int64_t n_segs, int64_t covered, int64_t entries,
                                           int64_t t_floats) {
  const size_t seg_bytes = sizeof(mxl_lora_seg), row_bytes = 16; /* mxl_lora_row */
  return mxl_cuda_piece(seg_bytes * (size_t)n_segs) +
         3 * mxl_cuda_piece(sizeof(int64_t) * (size_t)(n_segs + 1)) +
         mxl_cuda_piece(row_bytes * (size_t)(covered + 1)) +
         mxl_cuda_piece(sizeof(int) * (size_t)(entries + 1)) +
         sizeof(float) * (size_t)(t_floats + 1);
}

/* attention_bwd: D = rowsum(dout·out) [nq, nh]. */
static inline size_t mxl_cuda_scratch_attention_bwd(int64_t nq, int64_t nh) {
  return mxl_cuda_piece((size_t)nq * (size_t)nh * 4);
}

/* cuDNN attention (kernels/cuda/cudnn_attention.cuh): the workspace its
 * plans share, allocated at the first call at this size, or at a plan's
 * own request when that is larger (then beyond this accounting). An
 * allowance until a GPU run reports what the SDPA engines ask for: the
 * graphs bind every intermediate they keep (Stats, the fp32 gradients), so
 * the engines' own needs are small; 32 MiB as cuBLASLt's. */
#define MXL_CUDA_DNN_WORKSPACE ((size_t)32 << 20)

/* cuDNN attention forward: bf16 q, out [nq·nh·d] and k, v [nk·nkv·d], the
 * sinks as fp32 [nh], Stats [nh, nq]. */
static inline size_t mxl_cuda_scratch_attention_cudnn(int64_t nq, int64_t nk, int64_t nh,
                                                      int64_t nkv, int64_t d) {
  const size_t nqd = (size_t)nq * (size_t)nh * (size_t)d, nkd = (size_t)nk * (size_t)nkv * (size_t)d;
  return 2 * mxl_cuda_piece(nqd * 2) + 2 * mxl_cuda_piece(nkd * 2) + mxl_cuda_piece((size_t)nh * 4) +
         mxl_cuda_piece((size_t)nq * (size_t)nh * 4);
}

/* cuDNN attention backward: bf16 q, out, dout and k, v, Stats [nh, nq],
 * the fp32 gradients dq [nq·nh·d], dk, dv [nk·nkv·d] before they are
 * added into the op's. */
static inline size_t mxl_cuda_scratch_attention_cudnn_bwd(int64_t nq, int64_t nk, int64_t nh,
                                                          int64_t nkv, int64_t d) {
  const size_t nqd = (size_t)nq * (size_t)nh * (size_t)d, nkd = (size_t)nk * (size_t)nkv * (size_t)d;
  return 3 * mxl_cuda_piece(nqd * 2) + 2 * mxl_cuda_piece(nkd * 2) +
         mxl_cuda_piece((size_t)nq * (size_t)nh * 4) + mxl_cuda_piece(nqd * 4) +
         2 * mxl_cuda_piece(nkd * 4);
}

#endif
