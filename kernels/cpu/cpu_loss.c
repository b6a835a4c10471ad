/* CPU backend loss and optimizer: fused unembedding + cross-entropy,
 * dropout, AdamW, Σx². Shape legend as kernels/ops.h. */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "core/bf16.h"
#include "core/rng.h"
#include "kernels/cpu/cpu_internal.h"

/* ------------------------------------------------------------------ unembed + xent
 *
 * The tokens with weight != 0 are gathered and converted to bf16 once, then
 * split into chunks of at most TOK_CHUNK rows, one work item each. An item
 * streams the vocabulary VOCAB_CHUNK rows at a time, once, as flash
 * attention streams keys:
 *   logits tile [rows, VOCAB_CHUNK] = h·W_cᵀ (+ b); per row the running max
 *   m, the sum of exp(z − m) and the target logit; with dh wanted also
 *   p = exp(z − m) with the target's entry left out, and acc += p·W_c, acc
 *   and the sum rescaled whenever m grows.
 * At the end lse = m + log(sum) and
 *   dh += weight·(acc/sum + expm1(z_target − lse)·W_target)
 * = weight·Σ_v (softmax_v − onehot_v)·W_v: the target's term is taken in
 * fp32 because 1 − softmax_target, tiny once the model is confident, would
 * not survive the bf16 rounding of p. Two products per chunk with dh (the
 * logits computed twice took three). Both run on gemm_bf16_vnni: W_c is
 * packed transposed for the logits and as is for acc, into the thread's
 * buffers; the packing costs 1/rows of the products. Nothing of size
 * [n, V] exists. */

enum { TOK_CHUNK = 128, VOCAB_CHUNK = 64 };

typedef struct xent_job {
  const mxl_bf16_weight *W;
  const uint16_t *act, *act_lo; /* [na, H] active rows in bf16 (lo: exact mode) */
  const int32_t *rows;          /* [na] original token index of each active row */
  const int32_t *targets;
  const float *weight;
  float *loss, *dh;
} xent_job;

/* H rounded up to the packing's column multiple. */
static int64_t h16(int64_t H) { return (H + 15) & ~(int64_t)15; }

/* Per-thread scratch of one xent item. */
typedef struct xent_buf {
  float *logits;      /* [TOK_CHUNK, VOCAB_CHUNK] logits, then G */
  float *dacc;        /* [TOK_CHUNK, H] gradient rows of this item */
  uint16_t *g, *g_lo; /* [TOK_CHUNK, VOCAB_CHUNK] G in bf16 */
  uint16_t *wt;       /* [(H+1)/2, VOCAB_CHUNK, 2] the chunk packed transposed */
  uint16_t *wp;       /* [VOCAB_CHUNK/2, h16(H), 2] the chunk packed */
} xent_buf;

static size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

static size_t xent_buf_bytes(int64_t H) {
  return align64((size_t)TOK_CHUNK * VOCAB_CHUNK * 4) + align64((size_t)TOK_CHUNK * H * 4) +
         2 * align64((size_t)TOK_CHUNK * VOCAB_CHUNK * 2) +
         align64((size_t)(H + 1) * VOCAB_CHUNK * 2) + align64((size_t)h16(H) * VOCAB_CHUNK * 2);
}

static xent_buf xent_buf_carve(char *p, int64_t H) {
  xent_buf b;
  b.logits = (float *)p;
  p += align64((size_t)TOK_CHUNK * VOCAB_CHUNK * 4);
  b.dacc = (float *)p;
  p += align64((size_t)TOK_CHUNK * H * 4);
  b.g = (uint16_t *)p;
  p += align64((size_t)TOK_CHUNK * VOCAB_CHUNK * 2);
  b.g_lo = (uint16_t *)p;
  p += align64((size_t)TOK_CHUNK * VOCAB_CHUNK * 2);
  b.wt = (uint16_t *)p;
  p += align64((size_t)(H + 1) * VOCAB_CHUNK * 2);
  b.wp = (uint16_t *)p;
  return b;
}

/* logits [rows, vn] (row stride VOCAB_CHUNK) = act·W[v0:v0+vn]ᵀ + b */
static void xent_logits(const mxl_cpu_isa *isa, const xent_job *job, int64_t r0, int rows,
                        int64_t v0, int vn, xent_buf *b) {
  int64_t H = job->W->cols;
  isa->pack_vnni_t_bf16(b->wt, VOCAB_CHUNK, job->W->w + v0 * H, H, vn, (int)H);
  isa->gemm_bf16_vnni(b->logits, VOCAB_CHUNK, job->act + r0 * H,
                      job->act_lo ? job->act_lo + r0 * H : NULL, H, b->wt, VOCAB_CHUNK, rows, vn,
                      (int)H, 0);
  if (job->W->bias)
    for (int r = 0; r < rows; r++)
      for (int v = 0; v < vn; v++)
        b->logits[r * VOCAB_CHUNK + v] += mxl_bf16_to_f32(job->W->bias[v0 + v]);
}

/* The rows' p = exp(z − m) of this chunk (target entries zeroed, the tail
 * past vn too: its products meet the packing's zero rows, and stale values
 * could be NaN) into bf16, times the chunk, added to acc. */
static void xent_accumulate(const mxl_cpu_isa *isa, const xent_job *job, int rows, int64_t v0,
                            int vn, int exact, xent_buf *b) {
  int64_t H = job->W->cols;
  if (vn < VOCAB_CHUNK)
    for (int r = 0; r < rows; r++)
      memset(b->logits + r * VOCAB_CHUNK + vn, 0, (size_t)(VOCAB_CHUNK - vn) * sizeof(float));
  if (exact) isa->to_bf16_split(b->g, b->g_lo, b->logits, (size_t)rows * VOCAB_CHUNK);
  else isa->to_bf16(b->g, b->logits, (size_t)rows * VOCAB_CHUNK);
  isa->pack_vnni_bf16(b->wp, h16(H), job->W->w + v0 * H, H, vn, (int)H);
  isa->gemm_bf16_vnni(b->dacc, H, b->g, exact ? b->g_lo : NULL, VOCAB_CHUNK, b->wp, h16(H), rows,
                      (int)H, vn, 1);
}

static void xent_item(const mxl_cpu_isa *isa, const xent_job *job, int64_t r0, int rows,
                      int exact, xent_buf *b) {
  const mxl_bf16_weight *W = job->W;
  int64_t V = W->rows, H = W->cols;
  float mx[TOK_CHUNK], sum[TOK_CHUNK], zt[TOK_CHUNK];
  for (int r = 0; r < rows; r++) mx[r] = -INFINITY, sum[r] = 0, zt[r] = 0;
  if (job->dh) memset(b->dacc, 0, (size_t)rows * H * sizeof *b->dacc);

  for (int64_t v0 = 0; v0 < V; v0 += VOCAB_CHUNK) {
    int vn = (int)(V - v0 < VOCAB_CHUNK ? V - v0 : VOCAB_CHUNK);
    uint64_t keep = vn == 64 ? ~0ull : (1ull << vn) - 1;
    xent_logits(isa, job, r0, rows, v0, vn, b);
    for (int r = 0; r < rows; r++) {
      float *z = b->logits + r * VOCAB_CHUNK; /* [vn] */
      int64_t tgt = job->targets[job->rows[r0 + r]] - v0;
      if (tgt >= 0 && tgt < vn) zt[r] = z[tgt];
      float m = isa->max_f32(z, vn);
      if (m > mx[r]) {
        float corr = expf(mx[r] - m);
        sum[r] *= corr;
        if (job->dh) isa->scale_f32(b->dacc + (size_t)r * H, corr, (int)H);
        mx[r] = m;
      }
      if (!job->dh) {
        sum[r] += isa->sum_exp_f32(z, vn, mx[r]);
        continue;
      }
      sum[r] += isa->masked_exp_f32(z, z, keep, vn, mx[r]);
      if (tgt >= 0 && tgt < vn) z[tgt] = 0;
    }
    if (job->dh) xent_accumulate(isa, job, rows, v0, vn, exact, b);
  }
  for (int r = 0; r < rows; r++) {
    int32_t t = job->rows[r0 + r];
    float lse = mx[r] + logf(sum[r]);
    if (job->loss) job->loss[t] = lse - zt[r];
    if (!job->dh) continue;
    float w = job->weight[t], s = w / sum[r], g_target = w * expm1f(zt[r] - lse);
    const uint16_t *wt = W->w + (int64_t)job->targets[t] * H;
    float *dst = job->dh + (size_t)t * H;
    const float *acc = b->dacc + (size_t)r * H;
    for (int64_t c = 0; c < H; c++) dst[c] += s * acc[c] + g_target * mxl_bf16_to_f32(wt[c]);
  }
}

void mxl_cpu_unembed_xent(mxl_backend *be, float *loss, float *dh, const float *h,
                          const mxl_bf16_weight *W, const int32_t *targets, const float *weight,
                          int n) {
  mxl_cpu *c = mxl_cpu_of(be);
  int64_t H = W->cols;
  if (n <= 0 || (!loss && !dh)) return;
  for (int t = 0; t < n; t++)
    if (weight[t] == 0 && loss) loss[t] = 0;
  /* Active rows, gathered and converted; [na] indices then [na, H] bf16 (x2 exact). */
  size_t idx_bytes = ((size_t)n * sizeof(int32_t) + 63) & ~(size_t)63;
  char *act_mem = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_ACT,
                                  idx_bytes + (size_t)n * H * 2 * (c->exact ? 2 : 1));
  if (!act_mem) return;
  int32_t *rows = (int32_t *)act_mem;
  int na = 0;
  for (int t = 0; t < n; t++)
    if (weight[t] != 0) rows[na++] = t;
  if (na == 0) return;
  uint16_t *act = (uint16_t *)(act_mem + idx_bytes);
  uint16_t *act_lo = c->exact ? act + (size_t)na * H : NULL;
  int nt = mxl_cpu_threads_for(be, (double)na * H * 8, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int r = 0; r < na; r++) {
    const float *src = h + (size_t)rows[r] * H;
    if (act_lo) c->isa->to_bf16_split(act + (size_t)r * H, act_lo + (size_t)r * H, src, (size_t)H);
    else c->isa->to_bf16(act + (size_t)r * H, src, (size_t)H);
  }

  size_t per_thread = align64(xent_buf_bytes(H));
  char *bufs = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_THREAD, per_thread * (size_t)be->n_threads);
  if (!bufs) return;
  xent_job job = {W, act, act_lo, rows, targets, weight, loss, dh};
  /* Chunks small enough that every thread gets work. */
  int chunk = (na + be->n_threads - 1) / be->n_threads;
  if (chunk > TOK_CHUNK) chunk = TOK_CHUNK;
  int items = (na + chunk - 1) / chunk;
  /* bf16 products: the logits, and with dh the softmax-weighted rows */
  int nt_items = mxl_cpu_threads_for(be, (double)na * W->rows * H * (dh ? 2 : 1) / 2,
                                     MXL_CPU_MIN_FMAS);
  if (nt_items > items) nt_items = items;
#pragma omp parallel num_threads(nt_items) if (nt_items > 1)
  {
    xent_buf b = xent_buf_carve(bufs + per_thread * (size_t)omp_get_thread_num(), H);
#pragma omp for schedule(dynamic, 1)
    for (int it = 0; it < items; it++) {
      int r0 = it * chunk, len = na - r0 < chunk ? na - r0 : chunk;
      xent_item(c->isa, &job, r0, len, c->exact, &b);
    }
  }
}

/* ------------------------------------------------------------------ dropout */

/* The keep decision is core/rng.h's, shared by every backend. */
void mxl_cpu_dropout(mxl_backend *be, float *y, const float *x, size_t n, float p,
                     uint64_t seed) {
  float scale = 1.0f / (1.0f - p);
  const size_t chunk = 1 << 14;
  int64_t n_chunks = (int64_t)((n + chunk - 1) / chunk);
  int nt = mxl_cpu_threads_for(be, (double)n * 16, MXL_CPU_MIN_BYTES); /* 8 moved, the hash */
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int64_t c = 0; c < n_chunks; c++) {
    size_t end = ((size_t)c + 1) * chunk < n ? ((size_t)c + 1) * chunk : n;
    for (size_t i = (size_t)c * chunk; i < end; i++)
      y[i] = mxl_dropout_keep(seed, i, p) ? x[i] * scale : 0.0f;
  }
}

/* ------------------------------------------------------------------ AdamW, Σx² */

void mxl_cpu_adamw(mxl_backend *be, float *param, const float *grad, float *m, float *v,
                   size_t n, float lr, float beta1, float beta2, float eps, float weight_decay,
                   int step, float grad_scale) {
  double bc1 = 1.0 - pow(beta1, step), bc2 = 1.0 - pow(beta2, step);
  const mxl_cpu_adamw_coef coef = {lr, beta1, beta2, eps, weight_decay, grad_scale,
                                   (float)(1.0 / bc1), (float)(1.0 / sqrt(bc2))};
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  const size_t chunk = 1 << 14;
  int64_t n_chunks = (int64_t)((n + chunk - 1) / chunk);
  int nt = mxl_cpu_threads_for(be, (double)n * 28, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int64_t c = 0; c < n_chunks; c++) {
    size_t i0 = (size_t)c * chunk, len = n - i0 < chunk ? n - i0 : chunk;
    isa->adamw_f32(param + i0, grad + i0, m + i0, v + i0, len, &coef);
  }
}

double mxl_cpu_sum_squares(mxl_backend *be, const float *x, size_t n) {
  double total = 0;
  const size_t chunk = 1 << 14;
  int64_t n_chunks = (int64_t)((n + chunk - 1) / chunk);
  int nt = mxl_cpu_threads_for(be, (double)n * 4, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static) reduction(+ : total)
  for (int64_t c = 0; c < n_chunks; c++) {
    size_t end = ((size_t)c + 1) * chunk < n ? ((size_t)c + 1) * chunk : n;
    double s = 0;
    for (size_t i = (size_t)c * chunk; i < end; i++) s += (double)x[i] * x[i];
    total += s;
  }
  return total;
}
