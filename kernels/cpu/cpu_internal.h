/* The optimized CPU backend: private state shared by its files.
 *
 * Files:
 *   cpu.h            options for tests and benchmarks (exact mode, ISA name)
 *   cpu_backend.c    creation, ISA choice, memory ops, scratch, the op table
 *   cpu_dense.c      embed, RMSNorm, RoPE, add
 *   cpu_gemm.c       gemm_f32: shape dispatch, packing, threads
 *   cpu_lora.c       segmented LoRA (forward and backward) over many segments
 *   cpu_matmul.c     bf16 and MXFP4 matmuls (forward and dx): tiling and
 *                    threads; the inner loops come from the ISA table below
 *   cpu_moe.c        router, plan, gather, SwiGLU, combine (and backward)
 *                    (SwiGLU rows come from the ISA table)
 *   cpu_attention.c  attention forward and backward; decode (few queries)
 *                    on the ISA's attn_decode_block
 *   cpu_loss.c       fused unembedding + cross-entropy, dropout, AdamW, Σx²
 *   cpu_dnnl.c       bf16 products through oneDNN: primitives per shape
 *   cpu_matmul_dnnl.c  the matmuls on oneDNN (dense, and MXFP4 decoded
 *                    panel by panel), where mxl_cpu_dnnl_rows says so
 *   cpu_threads.c    passive OpenMP waiting (mxl_wait_passively)
 *   cpu_isa_*.c      the inner loops, one file per instruction set:
 *                    generic (portable C), avx2 (AVX2 + FMA), avx512
 *                    (AVX-512 F/BW/VL + BF16), amx (the avx512 table with
 *                    its bf16 block product on AMX tiles; cpu_q8_avx512.c
 *                    holds avx512's integer MXFP4 kernel). Each x86 file compiles its
 *                    functions with __attribute__((target)), so one binary
 *                    runs on any x86-64; cpu_backend.c picks the best table
 *                    the CPU supports (CPUID) once, at creation.
 *   cpu_decode_attention.h  the decode attention's products on 8-lane
 *                    vectors, compiled into both the avx2 and avx512 files
 *
 * Shape legend as kernels/ops.h. Threads: OpenMP, `n_threads` per backend.
 * The backend is used by one host thread at a time (like a CUDA stream).
 */
#ifndef MXL_KERNELS_CPU_INTERNAL_H
#define MXL_KERNELS_CPU_INTERNAL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "core/bf16.h"
#include "kernels/mxfp4.h"
#include "kernels/ops.h"

/* AdamW's constants for one call (ops.h `adamw`), the bias corrections
 * folded: inv_bc1 = 1/(1 - b1^step), inv_sqrt_bc2 = 1/sqrt(1 - b2^step). */
typedef struct mxl_cpu_adamw_coef {
  float lr, beta1, beta2, eps, weight_decay, grad_scale, inv_bc1, inv_sqrt_bc2;
} mxl_cpu_adamw_coef;

/* ------------------------------------------------------------------ ISA table
 *
 * Inner loops of the heavy ops. All matrices are row-major; "bf16" arrays
 * hold bf16 bit patterns. K is always a multiple of 32 for the MXFP4 entry
 * points; bf16 entry points accept any K (tails handled inside). */
typedef struct mxl_cpu_isa {
  const char *name; /* "avx512bf16+amx", "avx512bf16", "avx2", "generic" */
  /* 1 where gemm_bf16_vnni runs on native bf16 dot products. 0 where it
   * converts to fp32 inside. */
  int bf16_dot;
  /* Where bf16_dot: the multiply-add rate of the bf16 dot products over that
   * of fp32 FMAs on this core, measured (register-only loops, best of 3,
   * well under a millisecond). It decides whether fp32 work is worth
   * converting to bf16 operands (attention's block products): about 2 on
   * AMD Zen 4, 0.5 on an Intel Xeon with AMX (vdpbf16ps at half the
   * vfmadd231ps instruction rate there; 15 for its AMX tiles). NULL
   * elsewhere. */
  double (*bf16_dot_speedup)(void);
  /* 1 where gemm_bf16_vnni runs on AMX tiles: the products of a packed
   * panel cost next to nothing, so packing pays from fewer rows. */
  int tiles;

  /* dst[i] = bf16(src[i]) rounded to nearest even — dst [n], src [n] */
  void (*to_bf16)(uint16_t *dst, const float *src, size_t n);

  /* Split for the exact mode: hi[i] = bf16(src[i]), lo[i] = bf16(src[i] - hi[i]). */
  void (*to_bf16_split)(uint16_t *hi, uint16_t *lo, const float *src, size_t n);

  /* Decodes a block-aligned window of an MXFP4 matrix into bf16 (exact
   * wherever bf16 holds the value; NaN scales give NaN) — dst [rows, ld_dst]
   * (columns [0, K)), blocks/scales point at the window's first block of its
   * first row, row_blocks = blocks per full matrix row, K % 32 == 0. */
  /* Decodes rows [0, rows) (a multiple of 16) of an MXFP4 matrix [rows, K]
   * into B = Wᵀ [K, rows] in oneDNN's blocked weights layout BA16a64b2a
   * (what its AMX matmul reads without a reorder): element (k, n) at
   * (n/64)·64K + (k/32)·2048 + (k%32/2)·128 + (n%64)·2 + k%2, so that a
   * block's byte j of row n (elements 2j and 2j+1) is one 32-bit word.
   * dst holds ceil(rows/64)·64·K values; words of rows past `rows` in the
   * last 64 are left alone (zero them for a padded matrix). NULL where the
   * ISA has no such decoder. */
  void (*mxfp4_to_bf16_ba16a64b2a)(uint16_t *dst, const uint8_t *blocks, const uint8_t *scales,
                                   int64_t row_blocks, int rows, int K, int bias);
  /* The same layout for B = W itself [rows, K] (the backward's dx = dy·W):
   * (n, k) at (k/64)·64·rows + (n/32)·2048 + (n%32/2)·128 + (k%64)·2 + n%2;
   * rows % 32 == 0, K % 64 == 0; blocks/scales may start inside a row (a
   * column window, row_blocks apart). NULL where the ISA has none. */
  void (*mxfp4_to_bf16_ba16a64b2a_rows)(uint16_t *dst, const uint8_t *blocks,
                                        const uint8_t *scales, int64_t row_blocks, int rows,
                                        int K, int bias);
  void (*mxfp4_to_bf16)(uint16_t *dst, int64_t ld_dst, const uint8_t *blocks,
                        const uint8_t *scales, int64_t row_blocks, int rows, int K, int bias);

  /* Packs rows of a bf16 matrix in pairs for gemm_bf16_vnni:
   * dst[(r/2)·ld_dst + c][r%2] = src[r, c] for r < rows, c < cols, with
   * zeros in the second half of the last pair when rows is odd and in
   * columns [cols, ld_dst) — dst [(rows+1)/2, ld_dst, 2], src [rows, ld_src].
   * ld_dst is a multiple of 16. */
  void (*pack_vnni_bf16)(uint16_t *dst, int64_t ld_dst, const uint16_t *src, int64_t ld_src,
                         int rows, int cols);

  /* Packs a bf16 matrix transposed, in pairs along its rows, so that
   * gemm_bf16_vnni computes A·srcᵀ (the forward y = x·Wᵀ):
   * dst[(k/2)·ld_dst + j][k%2] = src[j, k] for j < rows, k < K, zeros for
   * j in [rows, ld_dst) and for k = K when K is odd — dst [(K+1)/2, ld_dst, 2],
   * src [rows, ld_src]. ld_dst is a multiple of 16. */
  void (*pack_vnni_t_bf16)(uint16_t *dst, int64_t ld_dst, const uint16_t *src, int64_t ld_src,
                           int rows, int K);

  /* pack_vnni_t_bf16 of an MXFP4 window decoded on the fly (blocks/scales
   * as mxfp4_to_bf16, K a multiple of 32). */
  void (*pack_vnni_t_mxfp4)(uint16_t *dst, int64_t ld_dst, const uint8_t *blocks,
                            const uint8_t *scales, int64_t row_blocks, int rows, int K, int bias);

  /* The same packing of an MXFP4 window decoded on the fly (blocks/scales
   * as mxfp4_to_bf16; K = cols, a multiple of 32). */
  void (*pack_vnni_mxfp4)(uint16_t *dst, int64_t ld_dst, const uint8_t *blocks,
                          const uint8_t *scales, int64_t row_blocks, int rows, int K, int bias);

  /* C[i, j] (+)= Σ_k A[i, k]·B[j, k] for i < M, j < N — C [M, ldc] fp32,
   * A [M, lda] bf16, B [N, ldb] bf16. With A_lo != NULL it adds the
   * products of A_lo (same layout) too (exact mode). accumulate == 0
   * overwrites C, else adds to it. Efficient from M = 1 (weights streamed
   * once per call) to large M. */
  void (*gemm_bf16_nt)(float *C, int64_t ldc, const uint16_t *A, const uint16_t *A_lo,
                       int64_t lda, const uint16_t *B, int64_t ldb, int M, int N, int K,
                       int accumulate);

  /* C[i, j] (+)= Σ_p A[i, p]·Bp[p/2, j, p%2] for i < M, j < N, p < P, with Bp
   * packed by pack_vnni_* (ld_bp columns per pair) — the product with a
   * weight used untransposed (dx = dy·W). C [M, ldc], A [M, lda] bf16
   * (A_lo as in gemm_bf16_nt). */
  void (*gemm_bf16_vnni)(float *C, int64_t ldc, const uint16_t *A, const uint16_t *A_lo,
                         int64_t lda, const uint16_t *Bp, int64_t ld_bp, int M, int N, int P,
                         int accumulate);

  /* y[j] = Σ_k x[k]·W[j, k] for j < N, W bf16 rows (row stride ldw): the
   * memory-bound matrix-vector product of decoding — y [N], x [K] bf16
   * (x_lo: the exact-mode residual, or NULL). The rows stream from memory
   * once: the kernel keeps enough of them in flight to run at memory speed
   * (software prefetch within these N rows). */
  void (*gemv_bf16)(float *y, const uint16_t *x, const uint16_t *x_lo, const uint16_t *W,
                    int64_t ldw, int N, int K);

  /* y[j] = Σ_k x[k]·W[j, k] for j < N, W MXFP4 rows: the memory-bound
   * matrix-vector product of decoding — y [N], x [K] in bf16 (x_lo: the
   * exact-mode residual, or NULL), blocks/scales as mxfp4_to_bf16 with K
   * the full row. */
  void (*gemv_mxfp4)(float *y, const uint16_t *x, const uint16_t *x_lo, const uint8_t *blocks,
                     const uint8_t *scales, int64_t row_blocks, int N, int K, int bias);

  /* The integer form of the MXFP4 products of decoding and few rows (NULL
   * where the ISA has none): quantize_q8 writes an activation row x [K]
   * bf16 as mxl_cpu_q8_bytes(K) bytes of 24-bit fixed point per block of 32
   * (cpu_q8_avx512.c: exact for every element within 2^-15 of its block's
   * largest, smaller ones rounded by under 2^-22 of it); gemm_mxfp4_q8
   * computes C[i, j] = Σ_k x_i[k]·W[j, k]
   * for M such rows (xq: M quantized rows, each mxl_cpu_q8_bytes(K) after
   * the last) and N MXFP4 rows with integer dot products, A [M, lda] (bf16)
   * serving the weight rows whose scales the kernel cannot take. Not for
   * exact mode. */
  void (*quantize_q8)(void *xq, const uint16_t *x, int K);
  void (*gemm_mxfp4_q8)(float *C, int64_t ldc, const void *xq, const uint16_t *A, int64_t lda,
                        const uint8_t *blocks, const uint8_t *scales, int64_t row_blocks, int M,
                        int N, int K, int bias);
  /* Where gemm_mxfp4_q8: how much faster it is than the bf16 kernels
   * (gemv_mxfp4, gemm_mxfp4_nt) on this core, measured on L2-resident
   * weights at one and four activation rows (> 1: the integer kernel wins;
   * 1.3-1.4 on an Intel Xeon with AMX, 0.65 on AMD Zen 4; 0 where the
   * probe could not allocate its buffers). */
  double (*int_decode_speedup)(void);

  /* C[i, j] = Σ_k A[i, k]·W[j, k] for a few activation rows i < M (tokens of
   * one expert) and j < N MXFP4 weight rows, each block decoded once for all
   * M rows — C [M, ldc], A [M, lda] bf16 (A_lo: exact-mode residuals, or
   * NULL), blocks/scales as mxfp4_to_bf16 with K the full row; work: scratch
   * of 2·M·(K rounded up to 128) bf16. NULL where the ISA has none (the
   * caller decodes to bf16 and uses gemm_bf16_nt). */
  void (*gemm_mxfp4_nt)(float *C, int64_t ldc, const uint16_t *A, const uint16_t *A_lo,
                        int64_t lda, const uint8_t *blocks, const uint8_t *scales,
                        int64_t row_blocks, int M, int N, int K, int bias, uint16_t *work);

  /* C (+)= alpha·A·B in fp32 with A(i, p) = A[i·lda + p·a_cs] (a_cs = 1:
   * row-major; lda = 1, a_cs = ld: A given transposed) — C [M, ldc],
   * B [K, ldb] row-major; accumulate == 0 overwrites C. For attention blocks
   * and LoRA (gemm_f32): small, cache-resident operands. */
  void (*gemm_f32_nn)(float *C, int64_t ldc, const float *A, int64_t lda, int64_t a_cs,
                      const float *B, int64_t ldb, int M, int N, int K, float alpha,
                      int accumulate);

  /* C[i, j] (+)= alpha·Σ_k A[i·lda + k]·B[j·ldb + k] for i < M, j < N,
   * k < K: both operands K-contiguous (LoRA's x·Aᵀ: few B rows, long K),
   * read in place — C [M, ldc]; accumulate == 0 overwrites C. */
  void (*gemm_f32_nt)(float *C, int64_t ldc, const float *A, int64_t lda, const float *B,
                      int64_t ldb, int M, int N, int K, float alpha, int accumulate);

  /* dst[c·ld_dst + r] = src[r·ld_src + c] for r < rows, c < cols: a block
   * of an fp32 matrix transposed (packing for gemm_f32 and attention). */
  void (*transpose_f32)(float *dst, int64_t ld_dst, const float *src, int64_t ld_src, int rows,
                        int cols);

  /* fp32 vector helpers for attention, the loss and small ops. */
  float (*dot_f32)(const float *a, const float *b, int n);  /* Σ a·b */
  void (*axpy_f32)(float *y, float a, const float *x, int n); /* y += a·x */
  float (*max_f32)(const float *x, int n);                  /* max x, -inf for n = 0 */
  float (*sum_exp_f32)(const float *x, int n, float shift); /* Σ exp(x − shift) */
  /* y = mul·exp(x − shift) (y may be x) */
  void (*exp_f32)(float *y, const float *x, int n, float shift, float mul);

  /* Attention rows of up to 64 keys with a keep bitmask (bit j: key j):
   * masked_max_f32 = max over kept x (−inf if none); masked_exp_f32 writes
   * y = kept ? exp(x − shift) : 0 (y may be x) and returns Σ y. n <= 64. */
  float (*masked_max_f32)(const float *x, uint64_t keep, int n);
  float (*masked_exp_f32)(float *y, const float *x, uint64_t keep, int n, float shift);
  void (*scale_f32)(float *y, float a, int n);              /* y *= a */
  /* The bf16 attention forward's online softmax over one key block, as
   * masked_max_f32, masked_exp_f32 and to_bf16 row by row (the same fp32
   * operations, so the same bits), in one pass per row with no calls: rows
   * r < R of scores s [R, ld_s] with keep[r / group] (n <= 64 keys); per
   * row, with m = max(mx[r], max of the kept scores): when m > mx[r], c =
   * expf(mx[r] − m) scales den[r] and o's row (d floats, stride ld_o) and
   * mx[r] = m; then p = kept ? exp(s − mx[r]) : 0 goes to ph [R, ld_p] as
   * bf16 (first n columns) and Σ p onto den[r]. NULL in tables without
   * native bf16 dot products (cpu_attention.c composes the row helpers). */
  void (*softmax_block_bf16)(uint16_t *ph, int64_t ld_p, const float *s, int64_t ld_s,
                             const uint64_t *keep, int group, int R, int n, float *mx,
                             float *den, float *o, int64_t ld_o, int d);

  /* Decode attention (few queries), one key block for one query and one KV
   * head: the head's group of query heads (group <= 8) against keys k and
   * values v (nkb <= 64 rows, row stride ld floats), keys whose bit of keep
   * is 0 skipped. q2 holds the scaled queries in pairs, [d/2, 16]: lane
   * 2h + p of pair c = q[h, 2c + p], zero lanes for h >= group. Per head
   * h < group, with m = max(mx[h], max of the kept scores): c = exp(mx[h] −
   * m) scales den[h] and o's row h, mx[h] = m, then Σ p·v goes onto row h
   * of o [group, d] (unnormalised) and Σ p onto den[h], p = exp(s − m).
   * Scores stay in registers and the scratch `s` (64·8 floats, 64-byte
   * aligned); K and V are read where they lie, no transposes or packs.
   * Meanwhile it asks for bytes [pf_k, pf_k + pf_bytes) and the same of
   * pf_v in L2, spread over its work (the caller's next rows; pf_bytes may
   * be 0). d % 32 == 0. NULL where a table has none (the blocked fp32
   * path). */
  void (*attn_decode_block)(float *o, float *mx, float *den, const float *q2, const float *k,
                            const float *v, int64_t ld, int nkb, uint64_t keep, int group, int d,
                            float *s, const float *pf_k, const float *pf_v, int64_t pf_bytes);

  /* One row of the clamped SwiGLU and of its backward ("+=" into dh), as
   * ops.h `swiglu` / `swiglu_bwd` — act [I], dact [I], h, dh [2I]. */
  void (*swiglu_row)(float *act, const float *h, int I, float alpha, float limit);
  void (*swiglu_bwd_row)(float *dh, const float *dact, const float *h, int I, float alpha,
                         float limit);
  void (*mul_sub_f32)(float *y, const float *p, float c, int n); /* y = p·(y − c) */

  /* One RMSNorm row, as ops.h `rmsnorm`: y = x·r·g with
   * r = 1/sqrt(Σx²/H + eps), Σ in double; returns r — y, x [H], g bf16 [H]. */
  float (*rmsnorm_row)(float *y, const float *x, const uint16_t *g, int H, float eps);
  /* Its backward for one row, as ops.h `rmsnorm_bwd`: dx += r·g·dy − x·c
   * with c = r³/H·Σ dy·g·x (Σ in double) — dx, dy, x [H]. */
  void (*rmsnorm_bwd_row)(float *dx, const float *dy, const float *x, const uint16_t *g, float r,
                          int H);

  /* RoPE of one head whose pairs are its two halves (a = xa[j], b = xb[j]):
   * xa = a·cs − b·s, xb = b·cs + a·s with s = sign·sn[j], j < n — the scalar
   * reference's fp32 operations in its order on every table (no fused
   * multiply-adds), so all give the same bits. */
  void (*rope_halves_f32)(float *xa, float *xb, const float *cs, const float *sn, int n,
                          float sign);

  /* AdamW on n parameters (ops.h `adamw`): every table does the same fp32
   * operations in the same order (mxl_cpu_adamw_scalar; no fused
   * multiply-adds), so the update is bit-identical whichever runs: replicas
   * of a data-parallel run on different hosts stay equal. */
  void (*adamw_f32)(float *param, const float *grad, float *m, float *v, size_t n,
                    const mxl_cpu_adamw_coef *c);
} mxl_cpu_isa;

extern const mxl_cpu_isa mxl_cpu_isa_generic;
#if defined(__x86_64__) || defined(__i386__)
#define MXL_CPU_X86 1
extern const mxl_cpu_isa mxl_cpu_isa_avx2;
extern const mxl_cpu_isa mxl_cpu_isa_avx512;
/* Shared by cpu_isa_avx512.c and cpu_q8_avx512.c (the avx512bf16 table):
 * whether every scale s of n keeps s − bias in [-125, 125]; Σ over blocks
 * [g0, g1) of x·w (+ x_lo·w) by the portable decode, bf16-rounded weights;
 * the integer MXFP4 product. */
int mxl_a5_scales_in_range(const uint8_t *s, int64_t n, int bias);
float mxl_a5_mxfp4_dot_slow(const uint16_t *x, const uint16_t *x_lo, const uint8_t *blocks,
                            const uint8_t *scales, int g0, int g1, int bias);
void mxl_a5_quantize_q8(void *xq, const uint16_t *x, int K);
/* fp32 multiply-adds per second of one core's FMAs (register-only probe,
 * measured once per process). */
double mxl_a5_fma_rate(void);
/* The avx512bf16 table with gemm_bf16_vnni on AMX tiles (cpu_isa_amx.c), or
 * NULL where the CPU has no AMX-BF16 or the kernel refuses this process the
 * tile registers. */
const mxl_cpu_isa *mxl_cpu_isa_amx(void);
void mxl_a5_gemm_mxfp4_q8(float *C, int64_t ldc, const void *xq, const uint16_t *A,
                          int64_t lda, const uint8_t *blocks, const uint8_t *scales,
                          int64_t row_blocks, int M, int N, int K, int bias);
#endif

/* Bytes of quantize_q8's form of K activations: per 128, 6 × 64 int8
 * parts, 16 int32 corrections and 16 fp32 steps. */
#define MXL_CPU_Q8_GROUP_BYTES 512
static inline size_t mxl_cpu_q8_bytes(int64_t K) {
  return (size_t)((K + 127) / 128) * MXL_CPU_Q8_GROUP_BYTES;
}

/* ------------------------------------------------------------------ scalar SwiGLU
 * The scalar math of one row's units [u0, u1), shared by the generic table
 * and the vector tables' tails. The clamps are comparisons so that NaN
 * propagates, as torch.clamp. */

static inline void mxl_cpu_swiglu_scalar(float *act, const float *h, int u0, int u1, float alpha,
                                         float limit) {
  for (int u = u0; u < u1; u++) {
    float hg = h[2 * u], hl = h[2 * u + 1];
    float g = hg > limit ? limit : hg, l = hl > limit ? limit : (hl < -limit ? -limit : hl);
    act[u] = g * (1.0f / (1.0f + expf(-alpha * g))) * (l + 1.0f);
  }
}

static inline void mxl_cpu_swiglu_bwd_scalar(float *dh, const float *dact, const float *h, int u0,
                                             int u1, float alpha, float limit) {
  for (int u = u0; u < u1; u++) {
    float hg = h[2 * u], hl = h[2 * u + 1];
    float g = hg > limit ? limit : hg, l = hl > limit ? limit : (hl < -limit ? -limit : hl);
    float s = 1.0f / (1.0f + expf(-alpha * g));
    if (hg <= limit) dh[2 * u] += dact[u] * (l + 1.0f) * (s + alpha * g * s * (1.0f - s));
    if (hl >= -limit && hl <= limit) dh[2 * u + 1] += dact[u] * g * s;
  }
}

/* ------------------------------------------------------------------ scalar AdamW
 * Elements [i0, i1), the reference order of operations for every table
 * (and their vector tails). sqrtf of v >= 0 and the division are correctly
 * rounded, as their vector instructions. */
static inline void mxl_cpu_adamw_scalar(float *param, const float *grad, float *m, float *v,
                                        size_t i0, size_t i1, const mxl_cpu_adamw_coef *c) {
  for (size_t i = i0; i < i1; i++) {
    float g = grad[i] * c->grad_scale;
    m[i] = c->beta1 * m[i] + (1.0f - c->beta1) * g;
    v[i] = c->beta2 * v[i] + (1.0f - c->beta2) * g * g;
    float update = (m[i] * c->inv_bc1) / (sqrtf(v[i]) * c->inv_sqrt_bc2 + c->eps) +
                   c->weight_decay * param[i];
    param[i] -= c->lr * update;
  }
}

/* ------------------------------------------------------------------ scalar RoPE halves
 * Pairs [j0, j1) of rope_halves_f32, the reference order for every table
 * (and their vector tails). */
static inline void mxl_cpu_rope_halves_scalar(float *xa, float *xb, const float *cs,
                                              const float *sn, int j0, int j1, float sign) {
  for (int j = j0; j < j1; j++) {
    float a = xa[j], b = xb[j], s = sign * sn[j];
    xa[j] = a * cs[j] - b * s;
    xb[j] = b * cs[j] + a * s;
  }
}

/* ------------------------------------------------------------------ MXFP4 row prefetch
 * The backward packs a short window (a column strip: one or two cache lines)
 * of each long weight row, rows a row length apart, which the hardware
 * prefetchers do not follow: without help every row's piece waits on
 * memory (the expert dx ran at 15 % of the bf16 peak, with this at 23 %:
 * AVX2 on Zen 4, bench_ops; the AVX-512 packers prefetch their own way).
 * The AVX2 packers ask for the window of row r (when below `rows`),
 * MXL_CPU_PACK_AHEAD rows ahead of use. */
enum { MXL_CPU_PACK_AHEAD = 16 };

/* Always inlined: GCC otherwise splits the guarded part into a function of
 * its own, which it finds free of side effects and deletes with its calls. */
static inline __attribute__((always_inline)) void mxl_cpu_prefetch_mx_row(
    const uint8_t *blocks, const uint8_t *scales, int64_t row_blocks, int nb, int64_t r,
    int64_t rows) {
  if (r >= rows) return;
  const char *b = (const char *)(blocks + r * row_blocks * MXL_MXFP4_BLOCK_BYTES);
  __builtin_prefetch(b, 0, 3);
  __builtin_prefetch(b + (int64_t)nb * MXL_MXFP4_BLOCK_BYTES - 1, 0, 3);
  __builtin_prefetch(scales + r * row_blocks, 0, 3);
}

/* The portable transpose (generic table; AVX2 uses it too: it runs from
 * cache and is a small part of the products it serves). */
static inline void mxl_cpu_transpose_f32_scalar(float *dst, int64_t ld_dst, const float *src,
                                                int64_t ld_src, int rows, int cols) {
  enum { TB = 16 };
  for (int r0 = 0; r0 < rows; r0 += TB)
    for (int c0 = 0; c0 < cols; c0 += TB)
      for (int r = r0; r < rows && r < r0 + TB; r++)
        for (int c = c0; c < cols && c < c0 + TB; c++) dst[c * ld_dst + r] = src[r * ld_src + c];
}

/* ------------------------------------------------------------------ oneDNN (cpu_dnnl.c) */

/* One bf16 product: C [M, N] (+)= A [M, K] · op(B), fp32 accumulation and
 * output; A row-major (lda); B [N, K] row-major (ldb) used transposed when
 * b_trans (y = x·Wᵀ), else B [K, N] row-major (dx = dy·W); C row-major
 * (ldc); accumulate: add into C instead of overwriting it. */
typedef struct mxl_cpu_mm {
  int64_t M, N, K;
  const uint16_t *A;
  int64_t lda;
  const uint16_t *B;
  int64_t ldb;
  int b_trans;
  float *C;
  int64_t ldc;
  int accumulate;
  /* 1: B is [K, N] in oneDNN's blocked layout BA16a64b2a (ldb, b_trans
   * unused); a primitive for it exists only where oneDNN picks that layout
   * itself (AMX), else prepare returns NULL */
  int b_blocked;
} mxl_cpu_mm;

typedef struct mxl_cpu_dnnl mxl_cpu_dnnl;        /* engine, streams, primitive table */
typedef struct mxl_cpu_mm_prim mxl_cpu_mm_prim;  /* a primitive for one shape */

/* Where the bf16 products go (MXL_CPU_DNNL at backend creation). */
enum {
  MXL_CPU_DNNL_OFF = 0,   /* hand-written kernels only (default without AMX, or =0) */
  MXL_CPU_DNNL_LARGE = 1, /* oneDNN from MXL_CPU_DNNL_MIN_ROWS rows (default with AMX) */
  MXL_CPU_DNNL_ALL = 2,   /* oneDNN for every product it serves (=1: tests) */
};
/* Activation rows from which a product goes to oneDNN in MXL_CPU_DNNL_LARGE
 * mode: below it the hand-written kernels stream the weights once (decode,
 * few-row expert groups), which a oneDNN call cannot beat. */
enum { MXL_CPU_DNNL_MIN_ROWS = 32 };

int mxl_cpu_dnnl_mode_default(void);
/* NULL when oneDNN is not built in or its engine fails. */
mxl_cpu_dnnl *mxl_cpu_dnnl_create(int n_threads);
void mxl_cpu_dnnl_destroy(mxl_cpu_dnnl *d);
/* Starts an op: the primitives it prepares are kept until the next begin. */
void mxl_cpu_dnnl_begin(mxl_cpu_dnnl *d);
/* The primitive for `mm`'s shape run on `nt` threads (1 for calls inside a
 * parallel region), created on first use. Serial code only. NULL when
 * oneDNN refuses the shape (the caller takes the hand-written path). */
const mxl_cpu_mm_prim *mxl_cpu_dnnl_prepare(mxl_cpu_dnnl *d, const mxl_cpu_mm *mm, int nt);
/* Runs it on mm's pointers (same shape); inside a parallel region on the
 * calling thread. 1 on success. */
int mxl_cpu_dnnl_run(mxl_cpu_dnnl *d, const mxl_cpu_mm_prim *p, const mxl_cpu_mm *mm);
/* The implementation oneDNN chose last (e.g. "brg:avx512_core_amx_bf16"),
 * and the bf16 instruction set it has here ("AMX", "AVX-512 BF16"). */
const char *mxl_cpu_dnnl_impl(const mxl_cpu_dnnl *d);
const char *mxl_cpu_dnnl_isa_name(void);
/* Products run so far (tests check which path an op took). */
uint64_t mxl_cpu_dnnl_runs(const mxl_cpu_dnnl *d);

/* ------------------------------------------------------------------ state */

enum { MXL_CPU_SCRATCH_SLOTS = 4 };

/* cos·c and sin·c of θ = pos[t]·inv_freq[j] for the positions of the last
 * RoPE call: the q and k RoPE of every layer, forward and backward, take
 * the same positions, so a training step or a decoded token computes its
 * cos and sin once instead of once per call (cpu_dense.c). The key is the
 * content of pos and inv_freq, not their addresses. */
typedef struct mxl_cpu_rope_table {
  float *cs_sn;      /* [n, 2, half]: cos·c then sin·c of each position */
  int32_t *pos;      /* [n] */
  float *inv_freq;   /* [half] */
  float concentration;
  int n, half;
  size_t cap_rows;   /* rows the buffers hold (of `half` pairs) */
} mxl_cpu_rope_table;

typedef struct mxl_cpu {
  const mxl_cpu_isa *isa;
  int n_threads;
  int exact;               /* 1: keep fp32 activations inside matmuls (MXL_CPU_EXACT=1) */
  int bf16_attention;      /* attention's block products on bf16 operands (outside exact) */
  int int_decode;          /* MXFP4 products of few rows on gemm_mxfp4_q8 (outside exact) */
  double int_speedup;      /* isa->int_decode_speedup() at creation, 0 if not measured */
  double bf16_speedup;     /* isa->bf16_dot_speedup() at creation, 0 if not measured */
  mxl_status error;        /* first failure since the last sync */
  char message[160];       /* its description, returned by sync */
  void *scratch[MXL_CPU_SCRATCH_SLOTS];
  size_t scratch_bytes[MXL_CPU_SCRATCH_SLOTS];
  int dnnl_mode;      /* MXL_CPU_DNNL_*; OFF when dnnl is NULL */
  mxl_cpu_dnnl *dnnl; /* oneDNN state, or NULL */
  mxl_cpu_rope_table rope; /* RoPE's cos and sin for the last positions */
} mxl_cpu;

static inline mxl_cpu *mxl_cpu_of(mxl_backend *be) { return (mxl_cpu *)be->impl; }

/* Scratch memory that lives as long as the backend, grown on demand
 * (64-byte aligned, contents undefined). Slots let one op hold several
 * buffers at once. NULL on allocation failure (recorded for sync). */
enum {
  MXL_CPU_SCRATCH_ACT = 0,    /* activations converted to bf16 */
  MXL_CPU_SCRATCH_THREAD = 1, /* per-thread tiles */
  MXL_CPU_SCRATCH_AUX = 2,    /* a second shared buffer */
  MXL_CPU_SCRATCH_AUX2 = 3,
};
void *mxl_cpu_scratch(mxl_backend *be, int slot, size_t bytes);

/* Threads for an op of `work` units when one thread should get at least
 * `per_thread` of them: n_threads for big ops, fewer (down to 1) for small
 * ones, which run on the calling thread (`#pragma omp parallel ... if(nt >
 * 1)` opens no team). Units are the caller's (bytes touched, multiply-adds).
 * Every op of this backend takes its thread count from here (or from the
 * two helpers below), so that the minimums are decided in one place. */
static inline int mxl_cpu_threads_for(const mxl_backend *be, double work, double per_thread) {
  double n = work / per_thread;
  if (n < 2) return 1;
  return n < be->n_threads ? (int)n : be->n_threads;
}

/* Minimum work per thread. mxlora's threads wait passively
 * (mxl_wait_passively: spinning threads stall a shared machine), so every
 * parallel region wakes its sleeping partner through the kernel, and the
 * partner then reads data that sits in the caller's caches: on idle cores
 * of a Zen 4 VM, a 2-thread region costs 30-45 µs more than the same work
 * split between spinning threads (1-3 µs); with another process on the
 * partner's core, up to a scheduler time slice. A second thread must save
 * more than that, so each thread gets at least:
 *   MXL_CPU_MIN_BYTES   bytes of a memory-bound op over activations (norms,
 *                       RoPE, SwiGLU, gather/combine, conversions): 2 MB,
 *                       beyond one core's L2; below, one core alone was
 *                       faster than two;
 *   MXL_CPU_MIN_STREAM_BYTES  weight bytes that a product streams from
 *                       memory once (decode): 1 MB, ≈ 60 µs at one core's
 *                       memory bandwidth, which two cores more than double;
 *   MXL_CPU_MIN_FMAS    multiply-adds of compute-bound ops (fp32 rate; bf16
 *                       products count two thirds: packed and converted,
 *                       they run at about 1.5× the fp32 FMA rate, not the
 *                       2× of vdpbf16ps — Zen 4, the bench preset's k/v
 *                       projection, 100 M multiply-adds: 1.2 ms on one
 *                       thread, where counting half kept it there):
 *                       32 M, ≈ 0.2-0.4 ms of one core.
 * With 4-16× smaller minimums the demo's 20 training steps opened 261
 * regions per step and ran 0.75× as fast as on one thread, the bench
 * preset's decode 0.7× (bench/README.md, "Fewer parallel regions"). */
enum {
  MXL_CPU_MIN_BYTES = 2 << 20,
  MXL_CPU_MIN_STREAM_BYTES = 1 << 20,
  MXL_CPU_MIN_FMAS = 1 << 25,
};

/* Threads for an op that moves `bytes` and computes `fmas` multiply-adds:
 * enough for whichever of the two needs more. */
static inline int mxl_cpu_threads_for_op(const mxl_backend *be, double bytes, double fmas) {
  int a = mxl_cpu_threads_for(be, bytes, MXL_CPU_MIN_BYTES);
  int b = mxl_cpu_threads_for(be, fmas, MXL_CPU_MIN_FMAS);
  return a > b ? a : b;
}

/* The FMA count a bf16 (or MXFP4-decoded) product of rows × N × K
 * multiply-adds stands for in MXL_CPU_MIN_FMAS units: two thirds (above). */
static inline double mxl_cpu_bf16_fmas(double rows, double N, double K) {
  return rows * N * K * 2 / 3;
}

/* Threads for a weight product: `weight_bytes` streamed from memory,
 * `act_bytes` of activations moved, `fmas` multiply-adds. */
static inline int mxl_cpu_threads_for_product(const mxl_backend *be, double weight_bytes,
                                              double act_bytes, double fmas) {
  int w = mxl_cpu_threads_for(be, weight_bytes, MXL_CPU_MIN_STREAM_BYTES);
  int a = mxl_cpu_threads_for_op(be, act_bytes, fmas);
  return w > a ? w : a;
}

/* Threads for an attention call: its multiply-adds (at most every pair of
 * the mask; `passes` products of d per pair and head) and the q, k, v (and
 * gradient) bytes it touches. Its multiply-adds count 4 times: with the
 * softmax, the masks and the key transposes between them, attention runs
 * at about a quarter of the fp32 FMA rate MXL_CPU_MIN_FMAS assumes (a
 * 64-token prefill of gpt-oss-20b, 33 M per layer: 1.2 ms on one core). */
static inline int mxl_cpu_attention_threads(const mxl_backend *be, int nq, int nk, int nh,
                                            int nkv, int d, int passes) {
  double fmas = (double)nq * nk * nh * d * passes;
  double bytes = ((double)nq * nh + (double)nk * nkv) * d * 4 * passes;
  int nt = mxl_cpu_threads_for_op(be, bytes, 4 * fmas);
  /* A decoded token reads its layer's keys and values once, from memory
   * (the cache of every layer outgrows the caches): they count as streamed
   * bytes, as a product's weights. */
  int streamed = mxl_cpu_threads_for(be, (double)nk * nkv * d * 4 * 2, MXL_CPU_MIN_STREAM_BYTES);
  return streamed > nt ? streamed : nt;
}

/* Room in the RoPE table for `rows` positions of `half` pairs; empties the
 * table (it is filled by the next RoPE call). 0, or -1 on allocation
 * failure (recorded for sync). */
int mxl_cpu_rope_reserve(mxl_backend *be, size_t rows, int half);

/* Threads for a segmented LoRA call (cpu_lora.c), forward or backward. */
int mxl_cpu_lora_threads(const mxl_backend *be, const mxl_lora_seg *segs, int n_segs, int in,
                         int out, int forward);

/* 1 when a product of `rows` activation rows goes to oneDNN. Exact mode
 * keeps the hand-written kernels (they multiply the bf16 hi/lo split). */
static inline int mxl_cpu_dnnl_rows(const mxl_cpu *c, int64_t rows) {
  if (!c->dnnl || c->exact || c->dnnl_mode == MXL_CPU_DNNL_OFF) return 0;
  return c->dnnl_mode == MXL_CPU_DNNL_ALL || rows >= MXL_CPU_DNNL_MIN_ROWS;
}

/* Spare rows after every converted activation matrix (convert_activations):
 * oneDNN's MXFP4 expert products round a group's rows up to a multiple of
 * 16 (fewer primitive shapes) and read that far. */
enum { MXL_CPU_ROW_PAD = 16 };

/* rows rounded up to a multiple of MXL_CPU_ROW_PAD */
static inline int64_t mxl_cpu_row_padded(int64_t rows) {
  return (rows + MXL_CPU_ROW_PAD - 1) / MXL_CPU_ROW_PAD * MXL_CPU_ROW_PAD;
}

/* y[i, j] += bias[j] for a tile — y [rows, ldy], bias bf16 [cols] (or NULL) */
static inline void mxl_cpu_add_bias(const mxl_cpu_isa *isa, float *y, int64_t ldy,
                                    const uint16_t *bias, int rows, int cols) {
  if (!bias) return;
  /* the bias in fp32 once, then one vector add per row */
  enum { CHUNK = 256 };
  float b[CHUNK];
  for (int j0 = 0; j0 < cols; j0 += CHUNK) {
    int n = cols - j0 < CHUNK ? cols - j0 : CHUNK;
    for (int j = 0; j < n; j++) b[j] = mxl_bf16_to_f32(bias[j0 + j]);
    for (int i = 0; i < rows; i++) isa->axpy_f32(y + (int64_t)i * ldy + j0, 1.0f, b, n);
  }
}

/* Expert e's MXFP4 rows from `row` on: blocks, scales, bias (NULL if none). */
static inline const uint8_t *mxl_cpu_mx_blocks(const mxl_mxfp4_weight *W, int e, int64_t row) {
  return W->blocks + (size_t)e * W->blocks_stride +
         (size_t)row * (size_t)(W->cols / MXL_MXFP4_BLOCK) * MXL_MXFP4_BLOCK_BYTES;
}
static inline const uint8_t *mxl_cpu_mx_scales(const mxl_mxfp4_weight *W, int e, int64_t row) {
  return W->scales + (size_t)e * W->scales_stride +
         (size_t)row * (size_t)(W->cols / MXL_MXFP4_BLOCK);
}
static inline const uint16_t *mxl_cpu_mx_bias(const mxl_mxfp4_weight *W, int e, int64_t row) {
  return W->bias ? W->bias + (size_t)e * W->bias_stride + (size_t)row : NULL;
}

/* ------------------------------------------------------------------ matmuls on oneDNN
 * (cpu_matmul_dnnl.c) for the activations in bf16 (`x`, `dy`: converted,
 * with MXL_CPU_ROW_PAD zero rows after them), on up to `nt` threads.
 * Each returns 1 when it did its work, 0 when oneDNN refused a shape before
 * anything was written (the caller runs the hand-written path). */
int mxl_cpu_dnnl_matmul_bf16(mxl_backend *be, float *y, const uint16_t *x,
                             const mxl_bf16_weight *W, int n, int nt);
int mxl_cpu_dnnl_matmul_bf16_dx(mxl_backend *be, float *dx, const uint16_t *dy,
                                const mxl_bf16_weight *W, int n, int nt);
/* The expert groups [off[e], off[e+1]) for which mxl_cpu_dnnl_rows holds;
 * the others are left to the caller. */
int mxl_cpu_dnnl_mxfp4(mxl_backend *be, float *y, const uint16_t *x, const mxl_mxfp4_weight *W,
                       const int32_t *off, int nt);
int mxl_cpu_dnnl_mxfp4_dx(mxl_backend *be, float *dx, const uint16_t *dy,
                          const mxl_mxfp4_weight *W, const int32_t *off, int nt);

/* Records the first failure of an op; `sync` returns it with `what`.
 * Called from serial code (outside parallel regions). */
void mxl_cpu_fail(mxl_backend *be, mxl_status status, const char *what);

/* ------------------------------------------------------------------ ops by file */

void mxl_cpu_embed(mxl_backend *be, float *x, const uint16_t *table, const int32_t *ids, int n,
                   int H);
void mxl_cpu_rmsnorm(mxl_backend *be, float *y, float *rstd, const float *x, const uint16_t *g,
                     int n, int H, float eps);
void mxl_cpu_rmsnorm_bwd(mxl_backend *be, float *dx, const float *dy, const float *x,
                         const float *rstd, const uint16_t *g, int n, int H, float eps);
void mxl_cpu_gemm_f32(mxl_backend *be, int tA, int tB, int M, int N, int K, float alpha,
                      const float *A, int lda, const float *B, int ldb, float beta, float *C,
                      int ldc);
void mxl_cpu_lora(mxl_backend *be, float *y, float *t, const float *x, const mxl_lora_seg *segs,
                  int n_segs, int in, int out);
void mxl_cpu_lora_bwd(mxl_backend *be, float *dx, const float *dy, const float *x,
                      const float *t, const mxl_lora_seg *segs, int n_segs, int in, int out);
void mxl_cpu_rope(mxl_backend *be, float *x, int n, int heads, int d, const int32_t *pos,
                  const float *inv_freq, float concentration, int interleaved, int inverse);
void mxl_cpu_add(mxl_backend *be, float *y, const float *x, size_t n);

void mxl_cpu_matmul_bf16(mxl_backend *be, float *y, const float *x, const mxl_bf16_weight *W,
                         int n);
void mxl_cpu_matmul_bf16_dx(mxl_backend *be, float *dx, const float *dy,
                            const mxl_bf16_weight *W, int n);
void mxl_cpu_mxfp4_matmul(mxl_backend *be, float *y, const float *x, const mxl_mxfp4_weight *W,
                          const mxl_moe_plan *plan);
void mxl_cpu_mxfp4_matmul_dx(mxl_backend *be, float *dx, const float *dy,
                             const mxl_mxfp4_weight *W, const mxl_moe_plan *plan);

void mxl_cpu_router_topk(mxl_backend *be, int32_t *experts, float *weights, const float *logits,
                         int n, int E, int k);
void mxl_cpu_router_bwd(mxl_backend *be, float *dlogits, const float *dweights,
                        const float *weights, const int32_t *experts, int n, int E, int k);
void mxl_cpu_moe_plan(mxl_backend *be, int32_t *order, int32_t *slot, int32_t *offsets,
                      const int32_t *experts, int n, int k, int E);
void mxl_cpu_moe_gather(mxl_backend *be, float *xs, const float *x, const mxl_moe_plan *plan,
                        int H);
void mxl_cpu_moe_gather_bwd(mxl_backend *be, float *dx, const float *dxs,
                            const mxl_moe_plan *plan, int H);
void mxl_cpu_swiglu(mxl_backend *be, float *act, const float *h, int m, int I, float alpha,
                    float limit);
void mxl_cpu_swiglu_bwd(mxl_backend *be, float *dh, const float *dact, const float *h, int m,
                        int I, float alpha, float limit);
void mxl_cpu_moe_combine(mxl_backend *be, float *out, const float *ys, const mxl_moe_plan *plan,
                         int H);
void mxl_cpu_moe_combine_bwd(mxl_backend *be, float *dys, float *dweights, const float *dout,
                             const float *ys, const mxl_moe_plan *plan, int H);

void mxl_cpu_attention(mxl_backend *be, float *out, float *lse, const float *q, const float *k,
                       const float *v, const uint16_t *sinks, const mxl_attn_mask *mask, int nq,
                       int nk, int nh, int nkv, int d, float scale);
void mxl_cpu_attention_bwd(mxl_backend *be, float *dq, float *dk, float *dv, const float *dout,
                           const float *out, const float *lse, const float *q, const float *k,
                           const float *v, const uint16_t *sinks, const mxl_attn_mask *mask,
                           int nq, int nk, int nh, int nkv, int d, float scale);

void mxl_cpu_unembed_xent(mxl_backend *be, float *loss, float *dh, const float *h,
                          const mxl_bf16_weight *W, const int32_t *targets, const float *weight,
                          int n);
void mxl_cpu_dropout(mxl_backend *be, float *y, const float *x, size_t n, float p,
                     uint64_t seed);
void mxl_cpu_adamw(mxl_backend *be, float *param, const float *grad, float *m, float *v,
                   size_t n, float lr, float beta1, float beta2, float eps, float weight_decay,
                   int step, float grad_scale);
double mxl_cpu_sum_squares(mxl_backend *be, const float *x, size_t n);

#endif
