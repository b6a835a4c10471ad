/* CPU backend matmuls on oneDNN (cpu_dnnl.c), for the products that
 * mxl_cpu_dnnl_rows sends there. Same contracts as cpu_matmul.c.
 *
 * Dense bf16 (projections forward and dx): one oneDNN matmul over all rows,
 * on the op's threads, reading W in place (no reordered copy is kept).
 *
 * MXFP4 experts: no dequantized copy of an expert exists. Each work item
 * decodes a panel of one expert's weights into bf16 in its thread's buffer
 * (PANEL rows × K for the forward, DEPTH × STRIP for the dx: L2-sized) and
 * multiplies the expert's whole group of rows by it with a oneDNN primitive
 * on that thread; the primitives are created before the parallel region,
 * one per shape. A group's rows are rounded up to a multiple of
 * MXL_CPU_ROW_PAD (fewer shapes, so fewer primitives to generate: the
 * activations carry that many zero rows after them), and the product lands
 * in a per-thread tile from which the group's real rows are copied. */
#include <omp.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"

enum {
  PANEL = 128,  /* forward: weight rows per panel (128 × K=2880 bf16 = 720 KB) */
  STRIP = 256,  /* dx: columns per work item */
  DEPTH = 1024, /* dx: weight rows per panel (1024 × 256 bf16 = 512 KB) */
};

/* ------------------------------------------------------------------ dense bf16 */

static int dense(mxl_backend *be, const mxl_cpu_mm *mm, int nt) {
  mxl_cpu *c = mxl_cpu_of(be);
  mxl_cpu_dnnl_begin(c->dnnl);
  const mxl_cpu_mm_prim *p = mxl_cpu_dnnl_prepare(c->dnnl, mm, nt);
  if (!p) return 0;
  if (!mxl_cpu_dnnl_run(c->dnnl, p, mm)) mxl_cpu_fail(be, MXL_ERR_BACKEND, "oneDNN matmul");
  return 1;
}

int mxl_cpu_dnnl_matmul_bf16(mxl_backend *be, float *y, const uint16_t *x,
                             const mxl_bf16_weight *W, int n, int nt) {
  mxl_cpu_mm mm = {n, W->rows, W->cols, x, W->cols, W->w, W->cols, 1, y, W->rows, 0};
  if (!dense(be, &mm, nt)) return 0;
  if (W->bias) {
    /* blocks of rows, so that each converted piece of the bias serves many */
    enum { BIAS_ROWS = 16 };
    const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int i0 = 0; i0 < n; i0 += BIAS_ROWS)
      mxl_cpu_add_bias(isa, y + (int64_t)i0 * W->rows, W->rows, W->bias,
                       n - i0 < BIAS_ROWS ? n - i0 : BIAS_ROWS, (int)W->rows);
  }
  return 1;
}

int mxl_cpu_dnnl_matmul_bf16_dx(mxl_backend *be, float *dx, const uint16_t *dy,
                                const mxl_bf16_weight *W, int n, int nt) {
  mxl_cpu_mm mm = {n, W->cols, W->rows, dy, W->rows, W->w, W->cols, 0, dx, W->cols, 1};
  return dense(be, &mm, nt);
}

/* ------------------------------------------------------------------ MXFP4 experts */

/* One work item: columns or rows [at, at + len) of expert e's product. */
typedef struct dn_item {
  int32_t e, at, len;
} dn_item;

/* The groups that go to oneDNN, their items (`span` per item along a
 * dimension of `extent`) and the largest padded group. Items live in the
 * AUX2 scratch slot, followed by `shapes` primitive pointers per group. */
typedef struct dn_plan {
  dn_item *items;
  int64_t n_items, max_rows;
  const mxl_cpu_mm_prim **prims; /* [E, shapes] */
  char *bufs;                    /* per thread: a bf16 panel, then an fp32 tile */
  size_t per_thread, panel_elems;
} dn_plan;

static int plan_items(mxl_backend *be, dn_plan *pl, const int32_t *off, int E, int64_t extent,
                      int64_t span, int shapes) {
  mxl_cpu *c = mxl_cpu_of(be);
  int64_t per_group = (extent + span - 1) / span;
  size_t item_bytes = ((size_t)E * (size_t)per_group * sizeof(dn_item) + 63) & ~(size_t)63;
  char *mem = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_AUX2,
                              item_bytes + (size_t)E * (size_t)shapes * sizeof *pl->prims);
  if (!mem) return 0;
  pl->items = (dn_item *)mem;
  pl->prims = (const mxl_cpu_mm_prim **)(mem + item_bytes);
  pl->n_items = pl->max_rows = 0;
  for (int e = 0; e < E; e++) {
    int64_t rows = off[e + 1] - off[e];
    if (rows <= 0 || !mxl_cpu_dnnl_rows(c, rows)) continue;
    if (mxl_cpu_row_padded(rows) > pl->max_rows) pl->max_rows = mxl_cpu_row_padded(rows);
    for (int64_t at = 0; at < extent; at += span)
      pl->items[pl->n_items++] =
          (dn_item){e, (int32_t)at, (int32_t)(extent - at < span ? extent - at : span)};
  }
  return 1;
}

/* The primitive of each group's shapes (the full span and the tail), on one
 * thread; 0 if oneDNN refuses one. */
static int prepare_group_prims(mxl_cpu *c, dn_plan *pl, const int32_t *off, int E, int shapes,
                               mxl_cpu_mm (*shape_of)(int64_t rows, int s, const void *ctx),
                               const void *ctx) {
  mxl_cpu_dnnl_begin(c->dnnl);
  for (int e = 0; e < E; e++) {
    int64_t rows = off[e + 1] - off[e];
    if (rows <= 0 || !mxl_cpu_dnnl_rows(c, rows)) continue;
    for (int s = 0; s < shapes; s++) {
      mxl_cpu_mm mm = shape_of(mxl_cpu_row_padded(rows), s, ctx);
      pl->prims[e * shapes + s] = mm.M ? mxl_cpu_dnnl_prepare(c->dnnl, &mm, 1) : NULL;
      if (mm.M && !pl->prims[e * shapes + s]) return 0;
    }
  }
  return 1;
}

/* Items, primitives and per-thread buffers (a bf16 panel of panel_elems,
 * an fp32 tile of max_rows × tile_cols) of an expert product: 1 ready,
 * 0 nothing for oneDNN (or scratch refused: recorded for sync), -1 oneDNN
 * refused a shape. */
static int prepare(mxl_backend *be, dn_plan *pl, const int32_t *off, int E, int64_t extent,
                   int64_t span, int shapes,
                   mxl_cpu_mm (*shape_of)(int64_t rows, int s, const void *ctx), const void *ctx,
                   size_t panel_elems, int tile_cols) {
  mxl_cpu *c = mxl_cpu_of(be);
  if (!plan_items(be, pl, off, E, extent, span, shapes)) return -1;
  if (pl->n_items == 0) return 0;
  if (!prepare_group_prims(c, pl, off, E, shapes, shape_of, ctx)) return -1;
  pl->panel_elems = panel_elems;
  pl->per_thread = (panel_elems * 2 + (size_t)pl->max_rows * tile_cols * 4 + 63) & ~(size_t)63;
  pl->bufs = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_THREAD, pl->per_thread * (size_t)be->n_threads);
  return pl->bufs ? 1 : 0;
}

static void thread_bufs(const dn_plan *pl, uint16_t **panel, float **tile) {
  char *mine = pl->bufs + pl->per_thread * (size_t)omp_get_thread_num();
  *panel = (uint16_t *)mine;
  *tile = (float *)(mine + pl->panel_elems * 2);
}

typedef struct fwd_ctx {
  int64_t N, K;
  int blocked; /* panels decoded into oneDNN's blocked layout (no reorder) */
} fwd_ctx;

/* Forward shapes: s = 0 a full panel, s = 1 the last (shorter) one. */
static mxl_cpu_mm fwd_shape(int64_t rows, int s, const void *ctx) {
  const fwd_ctx *f = ctx;
  int64_t tail = f->N % PANEL, nj = s == 0 ? PANEL : tail;
  if ((s == 0 && f->N < PANEL) || (s == 1 && tail == 0)) return (mxl_cpu_mm){0};
  /* the tile's rows are nj apart: with a stride past nj oneDNN reads B
   * as a plain matrix (gemm:jit instead of brgemm for a 64-row panel) */
  return (mxl_cpu_mm){rows, nj, f->K, NULL, f->K, NULL, f->K, 1, NULL, nj, 0, f->blocked};
}

int mxl_cpu_dnnl_mxfp4(mxl_backend *be, float *y, const uint16_t *x, const mxl_mxfp4_weight *W,
                       const int32_t *off, int nt) {
  mxl_cpu *c = mxl_cpu_of(be);
  const mxl_cpu_isa *isa = c->isa;
  int E = W->n_experts;
  int64_t N = W->rows, K = W->cols, row_blocks = K / MXL_MXFP4_BLOCK;
  dn_plan pl;
  /* Panels straight into the layout oneDNN's AMX matmul reads (it would
   * otherwise reorder every panel: 64 rows × 128 × 2880 took 64 instead of
   * 30 µs on an Intel Xeon with AMX), where the ISA decodes into it and
   * every panel is whole blocks of 64 rows; else plain panels. */
  fwd_ctx f = {N, K, isa->mxfp4_to_bf16_ba16a64b2a != NULL && N % 64 == 0};
  int ready = prepare(be, &pl, off, E, N, PANEL, 2, fwd_shape, &f, (size_t)PANEL * K, PANEL);
  if (ready < 0 && f.blocked) {
    f.blocked = 0;
    ready = prepare(be, &pl, off, E, N, PANEL, 2, fwd_shape, &f, (size_t)PANEL * K, PANEL);
  }
  if (ready <= 0) return ready == 0;
  if (nt > pl.n_items) nt = (int)pl.n_items;
  int failed = 0;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    uint16_t *panel;
    float *out;
    thread_bufs(&pl, &panel, &out);
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < pl.n_items; it++) {
      dn_item w = pl.items[it];
      int64_t i0 = off[w.e], rows = off[w.e + 1] - i0;
      if (f.blocked)
        isa->mxfp4_to_bf16_ba16a64b2a(panel, mxl_cpu_mx_blocks(W, w.e, w.at),
                                      mxl_cpu_mx_scales(W, w.e, w.at), row_blocks, w.len, (int)K,
                                      W->scale_bias);
      else
        isa->mxfp4_to_bf16(panel, K, mxl_cpu_mx_blocks(W, w.e, w.at),
                           mxl_cpu_mx_scales(W, w.e, w.at), row_blocks, w.len, (int)K,
                           W->scale_bias);
      const mxl_cpu_mm_prim *p = pl.prims[w.e * 2 + (w.len == PANEL ? 0 : 1)];
      mxl_cpu_mm mm = {mxl_cpu_row_padded(rows), w.len, K, x + i0 * K, K, panel, K, 1, out, w.len,
                       0, f.blocked};
      if (!mxl_cpu_dnnl_run(c->dnnl, p, &mm)) {
#pragma omp atomic write
        failed = 1;
      }
      for (int64_t r = 0; r < rows; r++)
        memcpy(y + (i0 + r) * N + w.at, out + r * w.len, (size_t)w.len * sizeof *y);
      mxl_cpu_add_bias(isa, y + i0 * N + w.at, N, mxl_cpu_mx_bias(W, w.e, w.at), (int)rows, w.len);
    }
  }
  if (failed) mxl_cpu_fail(be, MXL_ERR_BACKEND, "oneDNN MXFP4 expert matmul");
  return 1;
}

typedef struct dx_ctx {
  int64_t N, K; /* W [N, K]: dx [rows, K] += dy [rows, N] · W */
  int blocked;  /* panels decoded into oneDNN's blocked layout (no reorder) */
} dx_ctx;

/* dx shapes: s = 2·(last strip) + (last depth panel), each only when it
 * is shorter than the full one (else the full shape serves it). The
 * accumulator tile's rows are the strip's width apart (dense: see
 * fwd_shape). */
static mxl_cpu_mm dx_shape(int64_t rows, int s, const void *ctx) {
  const dx_ctx *d = ctx;
  int64_t kt = d->K % STRIP, jt = d->N % DEPTH;
  int64_t kn = (s & 2) ? kt : STRIP, nj = (s & 1) ? jt : DEPTH;
  if (((s & 2) && kt == 0) || ((s & 1) && jt == 0) || (!(s & 2) && d->K < STRIP) ||
      (!(s & 1) && d->N < DEPTH))
    return (mxl_cpu_mm){0};
  return (mxl_cpu_mm){rows, kn, nj, NULL, nj, NULL, kn, 0, NULL, kn, 1, d->blocked};
}

/* dy's rows of each group that goes to oneDNN, copied per depth panel into
 * dense [padded rows, nj] blocks (zero rows past the group's): oneDNN's
 * AMX matmul takes its A operand only dense (a depth panel's slice of dy's
 * rows, lda = N, sent it to gemm:jit at about 600 GFLOP/s). Group e's
 * panel j0 starts at base[e] + j0·mxl_cpu_row_padded(rows). NULL if scratch refused. */
static const uint16_t *dense_dy(mxl_backend *be, const uint16_t *dy, const int32_t *off, int E,
                                int64_t N, int nt, int64_t **base_out) {
  mxl_cpu *c = mxl_cpu_of(be);
  size_t head = ((size_t)E * sizeof(int64_t) + 63) & ~(size_t)63;
  int64_t total = 0;
  for (int e = 0; e < E; e++) {
    int64_t rows = off[e + 1] - off[e];
    if (rows > 0 && mxl_cpu_dnnl_rows(c, rows)) total += mxl_cpu_row_padded(rows) * N;
  }
  char *mem = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_AUX, head + (size_t)total * 2);
  if (!mem) return NULL;
  int64_t *base = (int64_t *)mem, at = 0;
  uint16_t *out = (uint16_t *)(mem + head);
  for (int e = 0; e < E; e++) {
    int64_t rows = off[e + 1] - off[e];
    base[e] = at;
    if (rows > 0 && mxl_cpu_dnnl_rows(c, rows)) at += mxl_cpu_row_padded(rows) * N;
  }
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(dynamic, 1)
  for (int e = 0; e < E; e++) {
    int64_t i0 = off[e], rows = off[e + 1] - i0, mp = mxl_cpu_row_padded(rows);
    if (rows <= 0 || !mxl_cpu_dnnl_rows(c, rows)) continue;
    for (int64_t j0 = 0; j0 < N; j0 += DEPTH) {
      int64_t nj = N - j0 < DEPTH ? N - j0 : DEPTH;
      uint16_t *blk = out + base[e] + j0 * mp;
      for (int64_t r = 0; r < rows; r++)
        memcpy(blk + r * nj, dy + (i0 + r) * N + j0, (size_t)nj * sizeof *blk);
      memset(blk + rows * nj, 0, (size_t)(mp - rows) * nj * sizeof *blk);
    }
  }
  *base_out = base;
  return out;
}

int mxl_cpu_dnnl_mxfp4_dx(mxl_backend *be, float *dx, const uint16_t *dy,
                          const mxl_mxfp4_weight *W, const int32_t *off, int nt) {
  mxl_cpu *c = mxl_cpu_of(be);
  const mxl_cpu_isa *isa = c->isa;
  int E = W->n_experts;
  int64_t N = W->rows, K = W->cols, row_blocks = K / MXL_MXFP4_BLOCK;
  dn_plan pl;
  /* blocked panels as the forward's: every strip a multiple of 64 columns,
   * every depth panel of 32 rows */
  dx_ctx d = {N, K, isa->mxfp4_to_bf16_ba16a64b2a_rows != NULL && K % 64 == 0 && N % 32 == 0};
  int ready = prepare(be, &pl, off, E, K, STRIP, 4, dx_shape, &d, (size_t)DEPTH * STRIP, STRIP);
  if (ready < 0 && d.blocked) {
    d.blocked = 0;
    ready = prepare(be, &pl, off, E, K, STRIP, 4, dx_shape, &d, (size_t)DEPTH * STRIP, STRIP);
  }
  if (ready <= 0) return ready == 0;
  int64_t *base = NULL;
  const uint16_t *dyd = dense_dy(be, dy, off, E, N, nt, &base);
  if (!dyd) return 0;
  if (nt > pl.n_items) nt = (int)pl.n_items;
  int failed = 0;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    uint16_t *panel;
    float *acc;
    thread_bufs(&pl, &panel, &acc);
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < pl.n_items; it++) {
      dn_item w = pl.items[it]; /* columns [at, at + len) of dx */
      int64_t i0 = off[w.e], rows = off[w.e + 1] - i0, mp = mxl_cpu_row_padded(rows);
      memset(acc, 0, (size_t)mp * w.len * sizeof *acc);
      for (int64_t j0 = 0; j0 < N; j0 += DEPTH) {
        int64_t nj = N - j0 < DEPTH ? N - j0 : DEPTH;
        int64_t g0 = w.at / MXL_MXFP4_BLOCK;
        const uint8_t *wb = mxl_cpu_mx_blocks(W, w.e, j0) + g0 * MXL_MXFP4_BLOCK_BYTES;
        const uint8_t *ws = mxl_cpu_mx_scales(W, w.e, j0) + g0;
        if (d.blocked)
          isa->mxfp4_to_bf16_ba16a64b2a_rows(panel, wb, ws, row_blocks, (int)nj, w.len,
                                             W->scale_bias);
        else
          isa->mxfp4_to_bf16(panel, w.len, wb, ws, row_blocks, (int)nj, w.len, W->scale_bias);
        int s = (w.len == STRIP ? 0 : 2) + (nj == DEPTH ? 0 : 1);
        mxl_cpu_mm mm = {mp, w.len, nj, dyd + base[w.e] + j0 * mp, nj, panel, w.len, 0, acc,
                         w.len, 1, d.blocked};
        if (!mxl_cpu_dnnl_run(c->dnnl, pl.prims[w.e * 4 + s], &mm)) {
#pragma omp atomic write
          failed = 1;
        }
      }
      for (int64_t r = 0; r < rows; r++) {
        float *dst = dx + (i0 + r) * K + w.at;
        const float *src = acc + r * w.len;
        for (int j = 0; j < w.len; j++) dst[j] += src[j];
      }
    }
  }
  if (failed) mxl_cpu_fail(be, MXL_ERR_BACKEND, "oneDNN MXFP4 expert matmul (dx)");
  return 1;
}
