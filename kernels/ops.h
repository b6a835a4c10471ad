/* The op table: the one interface between model code and a compute backend.
 *
 * Model code (model/, train/, infer/) is written once against `mxl_ops` and
 * never branches on the backend. Each backend fills the table:
 *   kernels/ref   plain scalar C, the readable oracle every other backend is
 *                 tested against (tests/test_ops.c);
 *   kernels/cpu   OpenMP + SIMD chosen at run time (AVX-512 BF16/VNNI, AVX2,
 *                 portable C);
 *   kernels/cuda  CUDA kernels (tensor cores: mma.sync), cuBLASLt and
 *                 cuDNN (attention, where it supports the shape),
 *                 asynchronous on one stream.
 *
 * Conventions, binding for every op:
 *   - Shapes are in the comments, row-major, innermost last. Legend:
 *       n  tokens            H  hidden size        I  expert width (intermediate)
 *       V  vocabulary rows   E  experts            k  experts per token
 *       nh query heads       nkv key/value heads   d  head dim
 *       m  rows of a grouped (expert-sorted) matrix, normally n*k
 *       R  LoRA rank
 *   - Activations are fp32 at every op boundary, on every backend (the
 *     activation dtype decision, below). Frozen weights stay as stored: bf16
 *     (uint16_t bit patterns) or MXFP4 blocks + scales, decoded inside the
 *     kernel; no op ever makes a dequantized copy of a weight matrix.
 *   - All pointers refer to backend memory (from `alloc`), except fields
 *     named *_host. On the CPU backends the two are the same.
 *   - Forward ops overwrite their outputs unless the parameter says "+=".
 *     Elementwise ops (add, dropout, swiglu's output aside) accept y == x.
 *   - Backward ops ADD into their gradient outputs ("+="); the caller zeroes
 *     them first. Frozen weights never receive gradients.
 *   - Ops are asynchronous on CUDA; `sync` waits and reports the first error
 *     since the last sync. Shapes are validated by the caller (model load),
 *     not per call.
 *   - A matmul may round activations to bf16 internally on a fast path
 *     (fp32 accumulation always); tests state the tolerance per op.
 *
 * Activation dtype (decided for the tensor-core CUDA backend):
 * activations stay fp32 at op boundaries everywhere, and the products with
 * frozen weights (matmul_bf16(+dx), mxfp4_matmul(+dx), unembed_xent) take
 * bf16 operands with fp32 accumulation inside the op, except a matmul_bf16
 * whose weight says fp32_act (the router); so do the products inside the
 * CUDA attention on tensor cores (forward: QKᵀ and PV at head dims 16, 32,
 * 64 and 128; backward: QKᵀ, dO·Vᵀ, dS·K, dSᵀ·Q and Pᵀ·dO at 16, 32 and
 * 64; gpt-oss's is 64), and the CUDA attention forward and backward
 * through cuDNN's graph; gemm_f32 (LoRA) stays fp32:
 *   cpu    converts activations to bf16 once per product (cpu_matmul.c),
 *          exactly as before (its exact mode keeps a bf16 hi + lo pair);
 *   cuda   rounds them while staging a tile into shared memory (MXFP4
 *          grouped GEMM on mma.sync) or into a bf16 scratch operand for
 *          cuBLASLt (bf16 weights). LoRA's products, with one side of rank
 *          R <= 64, are bound by memory, not arithmetic: fp32 costs them
 *          nothing, and bf16 would cost the gradients accuracy.
 * Why not bf16 tensors at the boundaries (tensors carrying a dtype, or
 * per-dtype op variants as gpt-oss's Metal kernels name them): it would
 * touch every op, all model code and the CPU numerics, for a saving that
 * is small here: the products, where tensor cores pay, already run on
 * bf16; the elementwise ops between them (norms, RoPE, SwiGLU, combine)
 * read and write fp32 at memory speed, about 2x the bytes of bf16 on a
 * few percent of a step's time (bench/roofline.c); and the training tape
 * that activation checkpointing keeps is one [n, H] input per layer. The
 * price is stated per op by the op tests: the products of the CUDA
 * backend are held to the bf16 matmul threshold (ops_driver.h), the other
 * ops to the fp32 ones.
 */
#ifndef MXL_KERNELS_OPS_H
#define MXL_KERNELS_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "mxlora.h"

typedef struct mxl_backend mxl_backend;
typedef struct mxl_ops mxl_ops;

/* A frozen bf16 matrix W [rows, cols] used as y = x·Wᵀ + bias.
 * fp32_act asks matmul_bf16 to keep x in fp32 (no bf16 rounding of the
 * activations) on backends whose products round them by design: the CUDA
 * backend honours it; the CPU fast path keeps its numerics (it rounds; its
 * exact mode never does). The model sets it for the router: its logits
 * choose experts, and a bf16 input flips near-tied choices (on the test
 * model: logits NMSE 4e-2 against the reference instead of 5e-5). */
typedef struct mxl_bf16_weight {
  const uint16_t *w;    /* [rows, cols] bf16 */
  const uint16_t *bias; /* [rows] bf16, or NULL */
  int64_t rows, cols;
  int fp32_act;
  /* 1: w and bias are host memory, not backend memory (the unembedding of
   * a training step kept off a GPU); only unembed_xent accepts such a
   * weight: the CUDA backend uploads each vocabulary chunk before its
   * products. On host-memory backends the two are the same. */
  int host;
} mxl_bf16_weight;

/* Frozen MXFP4 matrices, one per expert: W_e [rows, cols], y = x·W_eᵀ + b_e.
 * Expert e's data starts at blocks + e*blocks_stride (bytes), likewise for
 * scales, and at bias + e*bias_stride (elements). The strides let one view
 * describe both the HF layout (experts contiguous per tensor) and metal's
 * (each expert's blocks, scales and bias side by side). */
typedef struct mxl_mxfp4_weight {
  const uint8_t *blocks; /* per expert [rows, cols/32, 16] */
  const uint8_t *scales; /* per expert [rows, cols/32] */
  const uint16_t *bias;  /* per expert [rows] bf16, or NULL */
  size_t blocks_stride, scales_stride, bias_stride;
  int64_t rows, cols; /* cols % 32 == 0 */
  int n_experts;
  int scale_bias; /* MXL_MXFP4_BIAS (127) or MXL_MXFP4_METAL_BIAS (141) */
} mxl_mxfp4_weight;

/* Which keys a query may attend to. Query i may see key j iff
 *   k_seg[j] == q_seg[i]  and  k_pos[j] <= q_pos[i]
 *   and (window == 0 or q_pos[i] - k_pos[j] < window).
 * Packed training sequences give each document its own segment id and
 * restart positions at 0; a KV cache marks empty slots with k_seg = -1. */
typedef struct mxl_attn_mask {
  const int32_t *q_pos, *q_seg; /* [nq] */
  const int32_t *k_pos, *k_seg; /* [nk] */
  int window;                   /* 0 = full causal attention */
} mxl_attn_mask;

/* Expert routing for n tokens with k experts each. Assignment a = t*k + r is
 * token t's r-th expert. Grouped rows are the assignments sorted (stably) by
 * expert: grouped row i is assignment order[i]; assignment a sits at grouped
 * row slot[a]; expert e owns grouped rows [offsets[e], offsets[e+1]). */
typedef struct mxl_moe_plan {
  int n_tokens, k, n_experts;
  const int32_t *experts;      /* [n, k] expert of each assignment */
  const float *weights;        /* [n, k] routing weight of each assignment */
  const int32_t *order;        /* [m] */
  const int32_t *slot;         /* [m] */
  const int32_t *offsets;      /* [E+1] */
  const int32_t *offsets_host; /* [E+1], host copy for per-expert loops */
} mxl_moe_plan;

/* One segment of a segmented LoRA product (ops lora, lora_bwd): token rows
 * [row0, row0 + rows) of x and y use one adapter's matrices, PEFT
 * orientation, A [rank, in] and B [out, rank] (backend memory), with
 * `scale` (alpha/r times the user's scale). t_off places the segment's
 * [rows, rank] block of x·Aᵀ in t (floats). dA [rank, in], dB [out, rank]:
 * lora_bwd's "+=" gradients, or NULL (the forward ignores them).
 * Segments are how one op serves every LoRA product: attention targets get
 * a segment per run of rows sharing an adapter (a mixed batch: one per
 * sequence set and adapter); expert targets a segment per expert (and
 * adapter) over the expert's grouped rows. */
typedef struct mxl_lora_seg {
  int row0, rows, rank;
  float scale;
  const float *A, *B;
  float *dA, *dB;
  int64_t t_off;
} mxl_lora_seg;

struct mxl_ops {
  const char *name; /* "ref", "cpu", "cuda" */
  int host_memory;  /* 1: backend memory is host memory, so mmapped weights are used in place */

  /* ---- lifetime and memory ---- */
  void (*destroy)(mxl_backend *be);
  void *(*alloc)(mxl_backend *be, size_t bytes); /* zeroed; NULL on failure */
  void (*free)(mxl_backend *be, void *ptr); /* NULL is a no-op */
  /* host_src may be reused once upload returns (CUDA stages pageable memory) */
  void (*upload)(mxl_backend *be, void *dst, const void *host_src, size_t bytes);
  void (*download)(mxl_backend *be, void *host_dst, const void *src, size_t bytes);
  void (*copy)(mxl_backend *be, void *dst, const void *src, size_t bytes);
  void (*zero)(mxl_backend *be, void *dst, size_t bytes);
  mxl_status (*sync)(mxl_backend *be);

  /* ---- forward ---- */

  /* x[t] = table[ids[t]] — x [n, H], table bf16 [V, H], ids [n] */
  void (*embed)(mxl_backend *be, float *x, const uint16_t *table, const int32_t *ids, int n,
                int H);

  /* y = x / sqrt(mean(x²) + eps) * g — y, x [n, H], g bf16 [H];
   * rstd [n] receives 1/sqrt(mean(x²)+eps) for the backward, or NULL. */
  void (*rmsnorm)(mxl_backend *be, float *y, float *rstd, const float *x, const uint16_t *g,
                  int n, int H, float eps);

  /* y = x·Wᵀ + b — y [n, W.rows], x [n, W.cols] */
  void (*matmul_bf16)(mxl_backend *be, float *y, const float *x, const mxl_bf16_weight *W,
                      int n);

  /* C = alpha·op(A)·op(B) + beta·C, row-major fp32; op(X) = Xᵀ if tX.
   * op(A) [M, K], op(B) [K, N], C [M, N]; lda/ldb/ldc are row strides.
   * As in BLAS, beta == 0 means C is not read (it may hold NaN).
   * Serves LoRA: its parameters are small fp32 matrices. */
  void (*gemm_f32)(mxl_backend *be, int tA, int tB, int M, int N, int K, float alpha,
                   const float *A, int lda, const float *B, int ldb, float beta, float *C,
                   int ldc);

  /* In-place YaRN rotary embedding of x [n, heads, d] at positions pos [n]:
   * angle_i = pos·inv_freq[i] (i < d/2) as an fp32 product, as the gpt-oss
   * references compute it (cos/sin of that fp32 angle), and with c = concentration
   *   half-split pairs (j, j + d/2)      when interleaved == 0 (HF, original/)
   *   adjacent pairs   (2j, 2j + 1)      when interleaved == 1 (metal q/k)
   * out = c·R(angle)·x; with inverse == 1, out = c·R(-angle)·x, which is the
   * transpose, i.e. the backward (dx = c·R(-angle)·dy). */
  void (*rope)(mxl_backend *be, float *x, int n, int heads, int d, const int32_t *pos,
               const float *inv_freq, float concentration, int interleaved, int inverse);

  /* Attention with GQA and learned sinks — q [nq, nh, d], k, v [nk, nkv, d],
   * out [nq, nh, d], sinks bf16 [nh]; query head h reads KV head h/(nh/nkv).
   *   s_ij = scale·q_i·k_j over allowed j (mask);
   *   p_ij = exp(s_ij) / (exp(sink_h) + Σ_j' exp(s_ij'))    (sink: no value)
   *   out_i = Σ_j p_ij·v_j
   * lse [nq, nh] (or NULL) receives log(exp(sink_h) + Σ_j exp(s_ij)). */
  void (*attention)(mxl_backend *be, float *out, float *lse, const float *q, const float *k,
                    const float *v, const uint16_t *sinks, const mxl_attn_mask *mask, int nq,
                    int nk, int nh, int nkv, int d, float scale);

  /* Router: per token, the k largest logits (descending; ties → lower
   * index), then softmax over those k only — logits [n, E], experts and
   * weights [n, k]. */
  void (*router_topk)(mxl_backend *be, int32_t *experts, float *weights, const float *logits,
                      int n, int E, int k);

  /* Builds the grouped order of a plan: order, slot [n*k], offsets [E+1]
   * (backend memory) from experts [n, k]. The caller downloads offsets into
   * plan->offsets_host. */
  void (*moe_plan)(mxl_backend *be, int32_t *order, int32_t *slot, int32_t *offsets,
                   const int32_t *experts, int n, int k, int E);

  /* xs[i] = x[order[i] / k] — xs [m, H], x [n, H] */
  void (*moe_gather)(mxl_backend *be, float *xs, const float *x, const mxl_moe_plan *plan,
                     int H);

  /* Grouped MXFP4 matmul: grouped row i of expert e (offsets) computes
   * y[i] = x[i]·W_eᵀ + b_e — y [m, W.rows], x [m, W.cols]. A dense MXFP4
   * matrix is the case E = 1, offsets = {0, m}. */
  void (*mxfp4_matmul)(mxl_backend *be, float *y, const float *x, const mxl_mxfp4_weight *W,
                       const mxl_moe_plan *plan);

  /* Clamped SwiGLU on interleaved gate/up: with g = min(h[2u], limit),
   * u' = clamp(h[2u+1], -limit, limit):  act[u] = g·σ(alpha·g)·(u' + 1)
   * — act [m, I], h [m, 2I] */
  void (*swiglu)(mxl_backend *be, float *act, const float *h, int m, int I, float alpha,
                 float limit);

  /* out[t] += Σ_r weights[t, r]·ys[slot[t*k + r]] — out [n, H], ys [m, H] */
  void (*moe_combine)(mxl_backend *be, float *out, const float *ys, const mxl_moe_plan *plan,
                      int H);

  /* y += x — n elements */
  void (*add)(mxl_backend *be, float *y, const float *x, size_t n);

  /* Inverted dropout with a counter-based mask, 0 <= p < 1, y may be x:
   *   y[i] = keep_i ? x[i]·scale : 0,   scale = 1.0f / (1.0f - p) in fp32
   * keep_i is a pure function of (seed, i), bit-identical on every backend:
   * the (i+1)-th output of splitmix64 seeded with `seed`, in uint64_t
   * arithmetic (mod 2^64),
   *   z = seed + (i + 1)·0x9E3779B97F4A7C15
   *   z = (z ^ (z >> 30))·0xBF58476D1CE4E5B9
   *   z = (z ^ (z >> 27))·0x94D049BB133111EB
   *   z = z ^ (z >> 31)
   *   keep_i = (float)(z >> 40)·2^-24 >= p      (u in [0, 1), exact in fp32)
   * Applying it to dy with the same seed is its backward. */
  void (*dropout)(mxl_backend *be, float *y, const float *x, size_t n, float p, uint64_t seed);

  /* Fused unembedding + cross-entropy, chunked so that the [n, V] logits are
   * never materialised. h [n, H] (after the final norm), W [V, H].
   * For each token with weight[t] != 0:
   *   loss[t] = logsumexp(h_t·Wᵀ) - (h_t·Wᵀ)[targets[t]]
   *   dh[t] += weight[t]·(softmax(h_t·Wᵀ) - onehot(targets[t]))·W
   * loss and dh may be NULL; masked tokens get loss 0 and no gradient.
   * W may be in host memory (W->host). */
  void (*unembed_xent)(mxl_backend *be, float *loss, float *dh, const float *h,
                       const mxl_bf16_weight *W, const int32_t *targets, const float *weight,
                       int n);

  /* Segmented LoRA (the SGMV of Punica and S-LoRA): for each segment s of
   * segs_host [n_segs] (host memory, read before the call returns), in order,
   *   t_s = x[rows_s]·A_sᵀ                     t_s = t + t_off_s [rows_s, R_s]
   *   y[rows_s] += scale_s·t_s·B_sᵀ
   * — x [*, in], y [*, out] with rows as the segments address them. The
   * dense ΔW = B·A is never formed. Segments may share rows (a row with
   * several adapters: their deltas add in segment order); their t blocks
   * must not overlap. t == NULL: t is not kept (the backend uses scratch);
   * training keeps it for lora_bwd. */
  void (*lora)(mxl_backend *be, float *y, float *t, const float *x, const mxl_lora_seg *segs_host,
               int n_segs, int in, int out);

  /* ---- backward (gradients of activations; "+=") ---- */

  /* The backward of lora, given dy [*, out] and the forward's x and t; with
   * dt_s = scale_s·dy[rows_s]·B_s (internal scratch):
   *   dB_s += scale_s·dy[rows_s]ᵀ·t_s          (when dB_s != NULL)
   *   dA_s += dt_sᵀ·x[rows_s]                  (when dA_s != NULL)
   *   dx[rows_s] += dt_s·A_s                   (when dx != NULL)
   * The gradient blocks of different segments must not overlap. */
  void (*lora_bwd)(mxl_backend *be, float *dx, const float *dy, const float *x, const float *t,
                   const mxl_lora_seg *segs_host, int n_segs, int in, int out);

  /* dx += RMSNorm'(x)ᵀ·dy — dx, dy, x [n, H], rstd [n] from the forward */
  void (*rmsnorm_bwd)(mxl_backend *be, float *dx, const float *dy, const float *x,
                      const float *rstd, const uint16_t *g, int n, int H, float eps);

  /* dx += dy·W — dx [n, W.cols], dy [n, W.rows] */
  void (*matmul_bf16_dx)(mxl_backend *be, float *dx, const float *dy, const mxl_bf16_weight *W,
                         int n);

  /* dq, dk, dv += ∂out/∂(q, k, v)ᵀ·dout — shapes as the forward; out and
   * lse are the forward's. Sinks are frozen (no gradient). */
  void (*attention_bwd)(mxl_backend *be, float *dq, float *dk, float *dv, const float *dout,
                        const float *out, const float *lse, const float *q, const float *k,
                        const float *v, const uint16_t *sinks, const mxl_attn_mask *mask,
                        int nq, int nk, int nh, int nkv, int d, float scale);

  /* dlogits += softmax-over-top-k backward — dweights, weights [n, k],
   * experts [n, k], dlogits [n, E]. Selection itself has no gradient. */
  void (*router_bwd)(mxl_backend *be, float *dlogits, const float *dweights,
                     const float *weights, const int32_t *experts, int n, int E, int k);

  /* dx[t] += Σ_r dxs[slot[t*k + r]] — dx [n, H], dxs [m, H] */
  void (*moe_gather_bwd)(mxl_backend *be, float *dx, const float *dxs,
                         const mxl_moe_plan *plan, int H);

  /* dx[i] += dy[i]·W_e for grouped row i of expert e — dx [m, W.cols],
   * dy [m, W.rows]. W is decoded on the fly. */
  void (*mxfp4_matmul_dx)(mxl_backend *be, float *dx, const float *dy,
                          const mxl_mxfp4_weight *W, const mxl_moe_plan *plan);

  /* dh += SwiGLU'ᵀ·dact — dh [m, 2I], dact [m, I], h [m, 2I] (forward
   * input). Clamped lanes pass no gradient; the boundaries (h == ±limit)
   * pass it, as torch.clamp did until PyTorch 2026 releases switched scalar
   * clamps to the minimum-norm subgradient (0 at the boundary). */
  void (*swiglu_bwd)(mxl_backend *be, float *dh, const float *dact, const float *h, int m,
                     int I, float alpha, float limit);

  /* dys[slot[a]] += weights[a]·dout[t];  dweights[a] += dout[t]·ys[slot[a]]
   * for a = t*k + r — dys [m, H], dweights [n, k], dout [n, H] */
  void (*moe_combine_bwd)(mxl_backend *be, float *dys, float *dweights, const float *dout,
                          const float *ys, const mxl_moe_plan *plan, int H);

  /* ---- optimizer and reductions ---- */

  /* AdamW on fp32 parameters, decoupled weight decay, bias correction with
   * 1-based `step`; the gradient is multiplied by grad_scale first (clipping
   * and accumulation averaging):
   *   g = grad·grad_scale; m = b1·m + (1-b1)·g; v = b2·v + (1-b2)·g²
   *   param -= lr·(m/(1-b1^step) / (sqrt(v/(1-b2^step)) + eps) + wd·param) */
  void (*adamw)(mxl_backend *be, float *param, const float *grad, float *m, float *v,
                size_t n, float lr, float beta1, float beta2, float eps, float weight_decay,
                int step, float grad_scale);

  /* Σ x[i]² in double, returned to the host (synchronises). */
  double (*sum_squares)(mxl_backend *be, const float *x, size_t n);
};

/* A backend instance: its op table plus private state (threads, stream). */
struct mxl_backend {
  const mxl_ops *ops;
  int n_threads;
  void *impl;
};

/* The scalar reference backend (single-threaded, no SIMD). */
mxl_status mxl_backend_ref_create(mxl_backend **out);
/* The optimized CPU backend; n_threads <= 0 means all cores. */
mxl_status mxl_backend_cpu_create(int n_threads, mxl_backend **out);
/* The CUDA backend on `device`; MXL_ERR_UNSUPPORTED when built without CUDA
 * or when no device is present. */
mxl_status mxl_backend_cuda_create(int device, mxl_backend **out);
void mxl_backend_destroy(mxl_backend *be);

/* Host memory that `be` copies to and from at full speed: page-locked
 * (pinned) on the CUDA backend, so that copies are DMA transfers that need
 * not wait; plain heap memory elsewhere. NULL when it cannot be had. Free
 * it with mxl_backend_host_free on the same backend. */
void *mxl_backend_host_alloc(mxl_backend *be, size_t bytes);
void mxl_backend_host_free(mxl_backend *be, void *host);

/* download into memory from mxl_backend_host_alloc without waiting for the
 * copy on the CUDA backend: ordered after the work issued before it, done
 * by the next sync, and uploads from host_dst issued after it read what it
 * wrote; the host must not read host_dst before a sync. Elsewhere: download. */
void mxl_backend_download_async(mxl_backend *be, void *host_dst, const void *src, size_t bytes);

/* A backend by name, as users give it: "cpu", "ref", "cuda" or "cuda:N"
 * (device N), or "auto" (the first CUDA device when one works, else cpu).
 * n_threads applies to the CPU backends. */
mxl_status mxl_backend_create_named(const char *name, int n_threads, mxl_backend **out);

#endif
