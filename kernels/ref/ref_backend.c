/* The reference backend: the ORACLE every other backend is tested against
 * (tests/test_ops.c). Plain scalar C, single-threaded, no intrinsics; memory
 * is host memory (malloc/memcpy).
 *
 * The math lives in ref_dense.h, ref_attention.h, ref_moe.h and ref_loss.h,
 * written once for `mxl_real` (see ref_real.h): this file instantiates it
 * for float and adapts it to the op table (unpacking plans, checking the few
 * limits the ref has). tests/test_grad.c instantiates the same headers for
 * double to check every backward op against finite differences.
 *
 * Errors inside an op (a scratch allocation, a head dim beyond the ref's
 * stack accumulators) cannot be returned by a void op; as ops.h specifies for
 * asynchronous backends, the first one is kept and reported by `sync`. */
#define MXL_REAL float

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "kernels/ops.h"
#include "kernels/ref/ref_attention.h"
#include "kernels/ref/ref_dense.h"
#include "kernels/ref/ref_lora.h"
#include "kernels/ref/ref_loss.h"
#include "kernels/ref/ref_moe.h"

/* Backend state: the first error since the last sync. */
typedef struct ref_state {
  mxl_status pending;
  char message[160];
} ref_state;

static void ref_fail(mxl_backend *be, mxl_status status, const char *message) {
  ref_state *st = be->impl;
  if (st->pending != MXL_OK) return;
  st->pending = status;
  snprintf(st->message, sizeof st->message, "%s", message);
}

/* ---- lifetime and memory ---- */

static void ref_destroy(mxl_backend *be) {
  free(be->impl);
  free(be);
}

static void *ref_alloc(mxl_backend *be, size_t bytes) {
  (void)be;
  return calloc(1, bytes ? bytes : 1);
}

static void ref_free(mxl_backend *be, void *ptr) {
  (void)be;
  free(ptr);
}

static void ref_upload(mxl_backend *be, void *dst, const void *host_src, size_t bytes) {
  (void)be;
  if (bytes) memcpy(dst, host_src, bytes);
}

static void ref_download(mxl_backend *be, void *host_dst, const void *src, size_t bytes) {
  (void)be;
  if (bytes) memcpy(host_dst, src, bytes);
}

static void ref_copy(mxl_backend *be, void *dst, const void *src, size_t bytes) {
  (void)be;
  if (bytes) memmove(dst, src, bytes);
}

static void ref_zero(mxl_backend *be, void *dst, size_t bytes) {
  (void)be;
  if (bytes) memset(dst, 0, bytes);
}

static mxl_status ref_sync(mxl_backend *be) {
  ref_state *st = be->impl;
  mxl_status status = st->pending;
  st->pending = MXL_OK;
  if (status == MXL_OK) return MXL_OK;
  return mxl_errorf(status, "ref backend: %s", st->message);
}

/* ---- forward ---- */

static void ref_embed(mxl_backend *be, float *x, const uint16_t *table, const int32_t *ids,
                      int n, int H) {
  (void)be;
  mxl_ref_embed(x, table, ids, n, H);
}

static void ref_rmsnorm(mxl_backend *be, float *y, float *rstd, const float *x,
                        const uint16_t *g, int n, int H, float eps) {
  (void)be;
  mxl_ref_rmsnorm(y, rstd, x, g, n, H, eps);
}

static void ref_matmul_bf16(mxl_backend *be, float *y, const float *x, const mxl_bf16_weight *W,
                            int n) {
  (void)be;
  mxl_ref_matmul_bf16(y, x, W, n);
}

static void ref_gemm_f32(mxl_backend *be, int tA, int tB, int M, int N, int K, float alpha,
                         const float *A, int lda, const float *B, int ldb, float beta, float *C,
                         int ldc) {
  (void)be;
  mxl_ref_gemm(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

static void ref_rope(mxl_backend *be, float *x, int n, int heads, int d, const int32_t *pos,
                     const float *inv_freq, float concentration, int interleaved, int inverse) {
  (void)be;
  mxl_ref_rope(x, n, heads, d, pos, inv_freq, concentration, interleaved, inverse);
}

static void ref_attention(mxl_backend *be, float *out, float *lse, const float *q,
                          const float *k, const float *v, const uint16_t *sinks,
                          const mxl_attn_mask *mask, int nq, int nk, int nh, int nkv, int d,
                          float scale) {
  if (d > MXL_REF_MAX_HEAD_DIM) {
    ref_fail(be, MXL_ERR_UNSUPPORTED, "attention: head dim above the ref's limit of 512");
    return;
  }
  mxl_ref_attention(out, lse, q, k, v, sinks, mask, nq, nk, nh, nkv, d, scale);
}

static void ref_router_topk(mxl_backend *be, int32_t *experts, float *weights,
                            const float *logits, int n, int E, int k) {
  (void)be;
  mxl_ref_router_topk(experts, weights, logits, n, E, k);
}

static void ref_moe_plan(mxl_backend *be, int32_t *order, int32_t *slot, int32_t *offsets,
                         const int32_t *experts, int n, int k, int E) {
  (void)be;
  mxl_ref_moe_plan(order, slot, offsets, experts, n, k, E);
}

static void ref_moe_gather(mxl_backend *be, float *xs, const float *x, const mxl_moe_plan *plan,
                           int H) {
  (void)be;
  mxl_ref_moe_gather(xs, x, plan->order, plan->n_tokens * plan->k, plan->k, H);
}

static void ref_mxfp4_matmul(mxl_backend *be, float *y, const float *x,
                             const mxl_mxfp4_weight *W, const mxl_moe_plan *plan) {
  (void)be;
  mxl_ref_mxfp4_matmul(y, x, W, plan->offsets_host, plan->n_experts);
}

static void ref_swiglu(mxl_backend *be, float *act, const float *h, int m, int I, float alpha,
                       float limit) {
  (void)be;
  mxl_ref_swiglu(act, h, m, I, alpha, limit);
}

static void ref_moe_combine(mxl_backend *be, float *out, const float *ys,
                            const mxl_moe_plan *plan, int H) {
  (void)be;
  mxl_ref_moe_combine(out, ys, plan->slot, plan->weights, plan->n_tokens, plan->k, H);
}

static void ref_add(mxl_backend *be, float *y, const float *x, size_t n) {
  (void)be;
  mxl_ref_add(y, x, n);
}

static void ref_dropout(mxl_backend *be, float *y, const float *x, size_t n, float p,
                        uint64_t seed) {
  (void)be;
  mxl_ref_dropout(y, x, n, p, seed);
}

static void ref_unembed_xent(mxl_backend *be, float *loss, float *dh, const float *h,
                             const mxl_bf16_weight *W, const int32_t *targets,
                             const float *weight, int n) {
  if (mxl_ref_unembed_xent(loss, dh, h, W, targets, weight, n) != 0)
    ref_fail(be, MXL_ERR_MEMORY, "unembed_xent: out of memory for a [H] scratch row");
}

/* Floats of t that the segments address. */
static size_t lora_t_floats(const mxl_lora_seg *segs, int n) {
  size_t need = 0;
  for (int s = 0; s < n; s++) {
    size_t end = (size_t)segs[s].t_off + (size_t)segs[s].rows * segs[s].rank;
    if (end > need) need = end;
  }
  return need;
}

static void ref_lora(mxl_backend *be, float *y, float *t, const float *x,
                     const mxl_lora_seg *segs, int n_segs, int in, int out) {
  float *scratch = NULL;
  if (!t && n_segs > 0) {
    t = scratch = malloc(lora_t_floats(segs, n_segs) * sizeof *t + sizeof *t);
    if (!t) {
      ref_fail(be, MXL_ERR_MEMORY, "lora: out of memory for the x·Aᵀ scratch");
      return;
    }
  }
  for (int s = 0; s < n_segs; s++) {
    const mxl_lora_seg *g = &segs[s];
    mxl_ref_lora_seg(y + (size_t)g->row0 * out, t + g->t_off, x + (size_t)g->row0 * in, g->A,
                     g->B, g->rows, g->rank, in, out, g->scale);
  }
  free(scratch);
}

/* ---- backward ---- */

static void ref_lora_bwd(mxl_backend *be, float *dx, const float *dy, const float *x,
                         const float *t, const mxl_lora_seg *segs, int n_segs, int in, int out) {
  size_t most = 1;
  for (int s = 0; s < n_segs; s++)
    if ((size_t)segs[s].rows * segs[s].rank > most) most = (size_t)segs[s].rows * segs[s].rank;
  float *dt = malloc(most * sizeof *dt);
  if (!dt) {
    ref_fail(be, MXL_ERR_MEMORY, "lora_bwd: out of memory for the dt scratch");
    return;
  }
  for (int s = 0; s < n_segs; s++) {
    const mxl_lora_seg *g = &segs[s];
    mxl_ref_lora_seg_bwd(dx ? dx + (size_t)g->row0 * in : NULL, g->dA, g->dB, dt,
                         dy + (size_t)g->row0 * out, x + (size_t)g->row0 * in, t + g->t_off,
                         g->A, g->B, g->rows, g->rank, in, out, g->scale);
  }
  free(dt);
}

static void ref_rmsnorm_bwd(mxl_backend *be, float *dx, const float *dy, const float *x,
                            const float *rstd, const uint16_t *g, int n, int H, float eps) {
  (void)be;
  (void)eps; /* rstd from the forward already holds it */
  mxl_ref_rmsnorm_bwd(dx, dy, x, rstd, g, n, H);
}

static void ref_matmul_bf16_dx(mxl_backend *be, float *dx, const float *dy,
                               const mxl_bf16_weight *W, int n) {
  (void)be;
  mxl_ref_matmul_bf16_dx(dx, dy, W, n);
}

static void ref_attention_bwd(mxl_backend *be, float *dq, float *dk, float *dv,
                              const float *dout, const float *out, const float *lse,
                              const float *q, const float *k, const float *v,
                              const uint16_t *sinks, const mxl_attn_mask *mask, int nq, int nk,
                              int nh, int nkv, int d, float scale) {
  (void)sinks; /* they are inside lse */
  if (d > MXL_REF_MAX_HEAD_DIM) {
    ref_fail(be, MXL_ERR_UNSUPPORTED, "attention_bwd: head dim above the ref's limit of 512");
    return;
  }
  mxl_ref_attention_bwd(dq, dk, dv, dout, out, lse, q, k, v, mask, nq, nk, nh, nkv, d, scale);
}

static void ref_router_bwd(mxl_backend *be, float *dlogits, const float *dweights,
                           const float *weights, const int32_t *experts, int n, int E, int k) {
  (void)be;
  mxl_ref_router_bwd(dlogits, dweights, weights, experts, n, E, k);
}

static void ref_moe_gather_bwd(mxl_backend *be, float *dx, const float *dxs,
                               const mxl_moe_plan *plan, int H) {
  (void)be;
  mxl_ref_moe_gather_bwd(dx, dxs, plan->slot, plan->n_tokens, plan->k, H);
}

static void ref_mxfp4_matmul_dx(mxl_backend *be, float *dx, const float *dy,
                                const mxl_mxfp4_weight *W, const mxl_moe_plan *plan) {
  (void)be;
  mxl_ref_mxfp4_matmul_dx(dx, dy, W, plan->offsets_host, plan->n_experts);
}

static void ref_swiglu_bwd(mxl_backend *be, float *dh, const float *dact, const float *h, int m,
                           int I, float alpha, float limit) {
  (void)be;
  mxl_ref_swiglu_bwd(dh, dact, h, m, I, alpha, limit);
}

static void ref_moe_combine_bwd(mxl_backend *be, float *dys, float *dweights, const float *dout,
                                const float *ys, const mxl_moe_plan *plan, int H) {
  (void)be;
  mxl_ref_moe_combine_bwd(dys, dweights, dout, ys, plan->slot, plan->weights, plan->n_tokens,
                          plan->k, H);
}

/* ---- optimizer and reductions ---- */

static void ref_adamw(mxl_backend *be, float *param, const float *grad, float *m, float *v,
                      size_t n, float lr, float beta1, float beta2, float eps,
                      float weight_decay, int step, float grad_scale) {
  (void)be;
  mxl_ref_adamw(param, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, step, grad_scale);
}

static double ref_sum_squares(mxl_backend *be, const float *x, size_t n) {
  (void)be;
  return mxl_ref_sum_squares(x, n);
}

static const mxl_ops ref_ops = {
    .name = "ref",
    .host_memory = 1,
    .destroy = ref_destroy,
    .alloc = ref_alloc,
    .free = ref_free,
    .upload = ref_upload,
    .download = ref_download,
    .copy = ref_copy,
    .zero = ref_zero,
    .sync = ref_sync,
    .embed = ref_embed,
    .rmsnorm = ref_rmsnorm,
    .matmul_bf16 = ref_matmul_bf16,
    .gemm_f32 = ref_gemm_f32,
    .rope = ref_rope,
    .attention = ref_attention,
    .router_topk = ref_router_topk,
    .moe_plan = ref_moe_plan,
    .moe_gather = ref_moe_gather,
    .mxfp4_matmul = ref_mxfp4_matmul,
    .swiglu = ref_swiglu,
    .moe_combine = ref_moe_combine,
    .add = ref_add,
    .dropout = ref_dropout,
    .unembed_xent = ref_unembed_xent,
    .lora = ref_lora,
    .lora_bwd = ref_lora_bwd,
    .rmsnorm_bwd = ref_rmsnorm_bwd,
    .matmul_bf16_dx = ref_matmul_bf16_dx,
    .attention_bwd = ref_attention_bwd,
    .router_bwd = ref_router_bwd,
    .moe_gather_bwd = ref_moe_gather_bwd,
    .mxfp4_matmul_dx = ref_mxfp4_matmul_dx,
    .swiglu_bwd = ref_swiglu_bwd,
    .moe_combine_bwd = ref_moe_combine_bwd,
    .adamw = ref_adamw,
    .sum_squares = ref_sum_squares,
};

mxl_status mxl_backend_ref_create(mxl_backend **out) {
  *out = NULL;
  mxl_backend *be = calloc(1, sizeof *be);
  ref_state *st = calloc(1, sizeof *st);
  if (!be || !st) {
    free(be);
    free(st);
    return mxl_errorf(MXL_ERR_MEMORY, "ref backend: out of memory");
  }
  be->ops = &ref_ops;
  be->n_threads = 1;
  be->impl = st;
  *out = be;
  return MXL_OK;
}
