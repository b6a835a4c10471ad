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
 * streams the vocabulary `vc` rows at a time, once, as flash attention
 * streams keys:
 *   logits tile [rows, vc] = h·W_cᵀ (+ b); per row the running max m, the
 *   sum of exp(z − m) and the target logit; with dh wanted also
 *   p = exp(z − m) with the target's entry left out, and acc += p·W_c, acc
 *   and the sum rescaled whenever m grows.
 * At the end lse = m + log(sum) and
 *   dh += weight·(acc/sum + expm1(z_target − lse)·W_target)
 * = weight·Σ_v (softmax_v − onehot_v)·W_v: the target's term is taken in
 * fp32 because 1 − softmax_target, tiny once the model is confident, would
 * not survive the bf16 rounding of p. Two products per chunk with dh (the
 * logits computed twice took three). Nothing of size [n, V] exists.
 *
 * The products run on gemm_bf16_vnni (W_c packed transposed for the logits
 * and as is for acc, into the thread's buffers; the packing costs 1/rows of
 * the products), or on oneDNN where mxl_cpu_dnnl_rows sends the tokens' rows
 * (AMX hosts): there the chunks are wider (DN_VOCAB_CHUNK: a call's fixed
 * cost and the accumulator's traffic spread over more products), oneDNN
 * packs W_c itself, and an item's rows are rounded up to MXL_CPU_ROW_PAD
 * (zero rows after the activations; their results are ignored) so that a
 * call has at most two row counts and two vocabulary widths: at most eight
 * primitives, created before the parallel region. Same numerics: bf16
 * operands, fp32 accumulation. */

enum { TOK_CHUNK = 128, VOCAB_CHUNK = 64, DN_VOCAB_CHUNK = 1024 };

typedef struct xent_job {
  const mxl_bf16_weight *W;
  const uint16_t *act, *act_lo; /* [na, H] active rows in bf16 (lo: exact mode) */
  const int32_t *rows;          /* [na] original token index of each active row */
  const int32_t *targets;
  const float *weight;
  float *loss, *dh;
  int vc; /* vocabulary rows per chunk: VOCAB_CHUNK, or DN_VOCAB_CHUNK on oneDNN */
  /* oneDNN (NULL: hand-written kernels): the primitives by product (logits,
   * acc), item rows (full, last) and chunk width (full, last) */
  mxl_cpu_dnnl *dnnl;
  const mxl_cpu_mm_prim *prims[2][2][2];
  int64_t item_rows; /* padded rows of a full item (the last one may have fewer) */
} xent_job;

/* H rounded up to the packing's column multiple. */
static int64_t h16(int64_t H) { return (H + 15) & ~(int64_t)15; }

/* Per-thread scratch of one xent item. */
typedef struct xent_buf {
  float *logits;      /* [TOK_CHUNK, vc] logits, then G */
  float *dacc;        /* [TOK_CHUNK, H] gradient rows of this item */
  uint16_t *g, *g_lo; /* [TOK_CHUNK, vc] G in bf16 */
  uint16_t *wt;       /* [(H+1)/2, vc, 2] the chunk packed transposed (hand kernels) */
  uint16_t *wp;       /* [vc/2, h16(H), 2] the chunk packed (hand kernels) */
} xent_buf;

static size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

/* The buffer's parts in xent_buf's order; packs: the hand kernels' two. */
static void xent_buf_sizes(int64_t H, int vc, int packs, size_t n[6]) {
  n[0] = align64((size_t)TOK_CHUNK * vc * 4);
  n[1] = align64((size_t)TOK_CHUNK * H * 4);
  n[2] = n[3] = align64((size_t)TOK_CHUNK * vc * 2);
  n[4] = packs ? align64((size_t)(H + 1) * vc * 2) : 0;
  n[5] = packs ? align64((size_t)h16(H) * vc * 2) : 0;
}

static size_t xent_buf_bytes(int64_t H, int vc, int packs) {
  size_t n[6];
  xent_buf_sizes(H, vc, packs, n);
  return n[0] + n[1] + n[2] + n[3] + n[4] + n[5];
}

static xent_buf xent_buf_carve(char *p, int64_t H, int vc, int packs) {
  size_t n[6];
  xent_buf_sizes(H, vc, packs, n);
  xent_buf b;
  b.logits = (float *)p, p += n[0];
  b.dacc = (float *)p, p += n[1];
  b.g = (uint16_t *)p, p += n[2];
  b.g_lo = (uint16_t *)p, p += n[3];
  b.wt = packs ? (uint16_t *)p : NULL, p += n[4];
  b.wp = packs ? (uint16_t *)p : NULL;
  return b;
}

/* The product's primitive: p = 0 logits, 1 acc. */
static const mxl_cpu_mm_prim *xent_prim(const xent_job *job, int p, int rows, int vn) {
  int last = mxl_cpu_row_padded(rows) != job->item_rows;
  return job->prims[p][last][vn != job->vc];
}

/* 1 done (0 only when oneDNN failed: recorded by the caller) */
static int xent_dnnl(const xent_job *job, int p, const mxl_cpu_mm *mm, int rows, int vn) {
  return mxl_cpu_dnnl_run(job->dnnl, xent_prim(job, p, rows, vn), mm);
}

/* logits [rows, vn] (row stride vc) = act·W[v0:v0+vn]ᵀ + b */
static int xent_logits(const mxl_cpu_isa *isa, const xent_job *job, int64_t r0, int rows,
                       int64_t v0, int vn, xent_buf *b) {
  int64_t H = job->W->cols;
  int ok = 1;
  if (job->dnnl) {
    mxl_cpu_mm mm = {mxl_cpu_row_padded(rows), vn, H, job->act + r0 * H, H, job->W->w + v0 * H,
                     H, 1, b->logits, job->vc, 0};
    ok = xent_dnnl(job, 0, &mm, rows, vn);
  } else {
    isa->pack_vnni_t_bf16(b->wt, job->vc, job->W->w + v0 * H, H, vn, (int)H);
    isa->gemm_bf16_vnni(b->logits, job->vc, job->act + r0 * H,
                        job->act_lo ? job->act_lo + r0 * H : NULL, H, b->wt, job->vc, rows, vn,
                        (int)H, 0);
  }
  if (job->W->bias)
    for (int r = 0; r < rows; r++)
      for (int v = 0; v < vn; v++)
        b->logits[r * job->vc + v] += mxl_bf16_to_f32(job->W->bias[v0 + v]);
  return ok;
}

/* The rows' p = exp(z − m) of this chunk (target entries zeroed, the tail
 * past vn too: its products meet the packing's zero rows, and stale values
 * could be NaN) into bf16, times the chunk, added to acc. */
static int xent_accumulate(const mxl_cpu_isa *isa, const xent_job *job, int rows, int64_t v0,
                           int vn, int exact, xent_buf *b) {
  int64_t H = job->W->cols;
  int vc = job->vc;
  if (vn < vc)
    for (int r = 0; r < rows; r++)
      memset(b->logits + r * vc + vn, 0, (size_t)(vc - vn) * sizeof(float));
  if (exact) isa->to_bf16_split(b->g, b->g_lo, b->logits, (size_t)rows * vc);
  else isa->to_bf16(b->g, b->logits, (size_t)rows * vc);
  if (job->dnnl) {
    mxl_cpu_mm mm = {mxl_cpu_row_padded(rows), H, vn, b->g, vc, job->W->w + v0 * H, H, 0, b->dacc,
                     H, 1};
    return xent_dnnl(job, 1, &mm, rows, vn);
  }
  isa->pack_vnni_bf16(b->wp, h16(H), job->W->w + v0 * H, H, vn, (int)H);
  isa->gemm_bf16_vnni(b->dacc, H, b->g, exact ? b->g_lo : NULL, vc, b->wp, h16(H), rows, (int)H,
                      vn, 1);
  return 1;
}

/* Row r's chunk of logits z [vn]: the running max and sum updated (acc
 * rescaled), and with dh z turned into p (the target's entry zeroed). */
static void xent_softmax_row(const mxl_cpu_isa *isa, const xent_job *job, float *z, int vn,
                             int64_t tgt, float *mx, float *sum, float *acc) {
  int64_t H = job->W->cols;
  float m = isa->max_f32(z, vn);
  if (m > *mx) {
    float corr = expf(*mx - m);
    *sum *= corr;
    if (job->dh) isa->scale_f32(acc, corr, (int)H);
    *mx = m;
  }
  if (!job->dh) {
    *sum += isa->sum_exp_f32(z, vn, *mx);
    return;
  }
  for (int s0 = 0; s0 < vn; s0 += 64) { /* masked_exp_f32 takes 64 at most */
    int sn = vn - s0 < 64 ? vn - s0 : 64;
    *sum += isa->masked_exp_f32(z + s0, z + s0, sn == 64 ? ~0ull : (1ull << sn) - 1, sn, *mx);
  }
  if (tgt >= 0 && tgt < vn) z[tgt] = 0;
}

/* 0 when a oneDNN product failed */
static int xent_item(const mxl_cpu_isa *isa, const xent_job *job, int64_t r0, int rows,
                     int exact, xent_buf *b) {
  const mxl_bf16_weight *W = job->W;
  int64_t V = W->rows, H = W->cols;
  int vc = job->vc, ok = 1;
  float mx[TOK_CHUNK], sum[TOK_CHUNK], zt[TOK_CHUNK];
  for (int r = 0; r < rows; r++) mx[r] = -INFINITY, sum[r] = 0, zt[r] = 0;
  /* oneDNN's padded rows: zero p rows, so that their acc rows stay finite */
  int64_t all_rows = job->dnnl ? mxl_cpu_row_padded(rows) : rows;
  if (job->dh) memset(b->dacc, 0, (size_t)all_rows * H * sizeof *b->dacc);
  if (job->dh && all_rows > rows)
    memset(b->g + (size_t)rows * vc, 0, (size_t)(all_rows - rows) * vc * sizeof *b->g);

  for (int64_t v0 = 0; v0 < V; v0 += vc) {
    int vn = (int)(V - v0 < vc ? V - v0 : vc);
    ok &= xent_logits(isa, job, r0, rows, v0, vn, b);
    for (int r = 0; r < rows; r++) {
      float *z = b->logits + r * vc; /* [vn] */
      int64_t tgt = job->targets[job->rows[r0 + r]] - v0;
      if (tgt >= 0 && tgt < vn) zt[r] = z[tgt];
      xent_softmax_row(isa, job, z, vn, tgt, &mx[r], &sum[r], b->dacc + (size_t)r * H);
    }
    if (job->dh) ok &= xent_accumulate(isa, job, rows, v0, vn, exact, b);
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
  return ok;
}

/* The oneDNN primitives of a call whose items have `chunk` rows (the last
 * one `last`): 0 when oneDNN refused one (the call then stays on the hand
 * kernels). Serial code. */
static int xent_prepare_dnnl(mxl_cpu *c, xent_job *job, int chunk, int last) {
  int64_t V = job->W->rows, H = job->W->cols;
  int vc = job->vc, tail = (int)(V % vc);
  job->item_rows = mxl_cpu_row_padded(chunk);
  mxl_cpu_dnnl_begin(c->dnnl);
  for (int rs = 0; rs < 2; rs++)
    for (int vs = 0; vs < 2; vs++) {
      int64_t M = rs ? mxl_cpu_row_padded(last) : job->item_rows, vn = vs ? tail : vc;
      job->prims[0][rs][vs] = job->prims[1][rs][vs] = NULL;
      if (vn == 0 || (vs == 0 && V < vc)) continue;
      mxl_cpu_mm lg = {M, vn, H, NULL, H, NULL, H, 1, NULL, vc, 0};
      mxl_cpu_mm ac = {M, H, vn, NULL, vc, NULL, H, 0, NULL, H, 1};
      job->prims[0][rs][vs] = mxl_cpu_dnnl_prepare(c->dnnl, &lg, 1);
      if (!job->prims[0][rs][vs]) return 0;
      if (job->dh && !(job->prims[1][rs][vs] = mxl_cpu_dnnl_prepare(c->dnnl, &ac, 1))) return 0;
    }
  return 1;
}

void mxl_cpu_unembed_xent(mxl_backend *be, float *loss, float *dh, const float *h,
                          const mxl_bf16_weight *W, const int32_t *targets, const float *weight,
                          int n) {
  mxl_cpu *c = mxl_cpu_of(be);
  int64_t H = W->cols;
  if (n <= 0 || (!loss && !dh)) return;
  for (int t = 0; t < n; t++)
    if (weight[t] == 0 && loss) loss[t] = 0;
  /* Active rows, gathered and converted; [na] indices then [na, H] bf16 (x2
   * exact), then MXL_CPU_ROW_PAD zero rows for oneDNN's padded items. */
  size_t idx_bytes = ((size_t)n * sizeof(int32_t) + 63) & ~(size_t)63;
  size_t act_rows = (size_t)n + MXL_CPU_ROW_PAD;
  char *act_mem = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_ACT,
                                  idx_bytes + act_rows * H * 2 * (c->exact ? 2 : 1));
  if (!act_mem) return;
  int32_t *rows = (int32_t *)act_mem;
  int na = 0;
  for (int t = 0; t < n; t++)
    if (weight[t] != 0) rows[na++] = t;
  if (na == 0) return;
  uint16_t *act = (uint16_t *)(act_mem + idx_bytes);
  uint16_t *act_lo = c->exact ? act + act_rows * H : NULL;
  int nt = mxl_cpu_threads_for(be, (double)na * H * 8, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int r = 0; r < na; r++) {
    const float *src = h + (size_t)rows[r] * H;
    if (act_lo) c->isa->to_bf16_split(act + (size_t)r * H, act_lo + (size_t)r * H, src, (size_t)H);
    else c->isa->to_bf16(act + (size_t)r * H, src, (size_t)H);
  }
  memset(act + (size_t)na * H, 0, (size_t)MXL_CPU_ROW_PAD * H * sizeof *act);

  xent_job job = {W, act, act_lo, rows, targets, weight, loss, dh, VOCAB_CHUNK, NULL, {{{0}}}, 0};
  /* Chunks small enough that every thread gets work (on oneDNN a multiple
   * of the row padding, so that only the last item is padded). */
  int on_dnnl = mxl_cpu_dnnl_rows(c, na);
  int chunk = (na + be->n_threads - 1) / be->n_threads;
  if (on_dnnl) chunk = (int)mxl_cpu_row_padded(chunk);
  if (chunk > TOK_CHUNK) chunk = TOK_CHUNK;
  int items = (na + chunk - 1) / chunk;
  if (on_dnnl) {
    job.dnnl = c->dnnl, job.vc = DN_VOCAB_CHUNK;
    if (!xent_prepare_dnnl(c, &job, chunk, na - (items - 1) * chunk))
      job.dnnl = NULL, job.vc = VOCAB_CHUNK;
  }
  int packs = job.dnnl == NULL;
  size_t per_thread = align64(xent_buf_bytes(H, job.vc, packs));
  char *bufs = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_THREAD, per_thread * (size_t)be->n_threads);
  if (!bufs) return;
  /* bf16 products: the logits, and with dh the softmax-weighted rows */
  int nt_items = mxl_cpu_threads_for(be, (double)na * W->rows * H * (dh ? 2 : 1) / 2,
                                     MXL_CPU_MIN_FMAS);
  if (nt_items > items) nt_items = items;
  int failed = 0;
#pragma omp parallel num_threads(nt_items) if (nt_items > 1)
  {
    xent_buf b = xent_buf_carve(bufs + per_thread * (size_t)omp_get_thread_num(), H, job.vc, packs);
#pragma omp for schedule(dynamic, 1)
    for (int it = 0; it < items; it++) {
      int r0 = it * chunk, len = na - r0 < chunk ? na - r0 : chunk;
      if (!xent_item(c->isa, &job, r0, len, c->exact, &b)) {
#pragma omp atomic write
        failed = 1;
      }
    }
  }
  if (failed) mxl_cpu_fail(be, MXL_ERR_BACKEND, "oneDNN unembedding matmul");
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
