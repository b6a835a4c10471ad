/* CPU backend matmuls: dense bf16 and grouped MXFP4, forward (y = x·Wᵀ) and
 * backward (dx = dy·W). This file splits the work into tiles and threads;
 * the inner loops come from the ISA table (cpu_isa_*.c).
 *
 * The plan for every product: activations are converted once to bf16
 * (or to a bf16 hi + lo pair in exact mode) and the weights are fed as bf16
 * to the ISA's two GEMM kernels:
 *   - gemm_bf16_vnni (C = A·B with B packed in pairs of its reduction
 *     index) runs at the bf16 dot-product peak; a weight panel is packed
 *     once into a per-thread buffer that stays in L2 and is reused by every
 *     activation row: transposed (pack_vnni_t_*) for the forward y = x·Wᵀ,
 *     as is (pack_vnni_*) for the backward dx = dy·W. MXFP4 panels are
 *     decoded while they are packed; no op makes a dequantized copy of a
 *     whole matrix.
 *   - gemm_bf16_nt (C = A·Bᵀ, both K-contiguous) reads weight rows in
 *     place: the forward of few activation rows, where packing would cost
 *     more than it saves; gemv_bf16 is its one-row case (decode), which
 *     streams the weights at memory speed.
 *   - MXFP4 groups of one or a few rows (decode, batched decode, short
 *     prefills) use gemm_mxfp4_q8 where the ISA has it: integer dot
 *     products on the bf16 activations written once per row in 24-bit
 *     fixed point per block (cpu_q8_avx512.c), each weight block decoded
 *     once in registers for all the group's rows. Elsewhere, and in exact mode,
 *     gemv_mxfp4 (one row) and gemm_mxfp4_nt (a few) decode to bf16 in
 *     registers.
 */
#include <omp.h>
#include <string.h>

#include "core/bf16.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/mxfp4.h"

enum {
  PANEL_ROWS = 64,   /* weight rows per forward tile: 64 × K=2880 bf16 = 368 KB (L2) */
  PACK_MIN_ROWS = 17, /* activation rows from which an MXFP4 forward panel is packed */
  /* ... and a bf16 one: below, gemm_bf16_nt reads the rows in place. Zen 4,
   * 1 thread, K = 2880, weights from memory: in place 105 / 135 / 156
   * GFLOP/s for 8 / 16 / 32 rows, packed 71 / 111 / 148; even at 48, packed
   * ahead from 64 (batched decode steps have up to 32 rows) */
  BF16_PACK_MIN_ROWS = 33,
  /* ... where the products run on AMX tiles (isa->tiles), which leave the
   * packing as the panel's only cost: Intel Xeon with AMX, 2 threads, 20b
   * q_proj from memory, 16 / 32 / 64 rows: in place 2.79 / 5.10 / 8.58 ms,
   * packed 1.42 / 1.44 / 1.67 (oneDNN 1.39 from 32). MXFP4 panels keep
   * PACK_MIN_ROWS: their decode while packing is slower than the integer
   * kernel's even at 8 rows per expert. */
  TILES_PACK_MIN_ROWS = 13,
  GEMV_ROWS = 256,   /* weight rows per decode (one activation row) work item */
  FEW_ROWS = 12,     /* activation rows up to which MXFP4 groups skip packing */
  STRIP_COLS = 128,  /* dx columns per backward work item */
  STRIP_ROWS = 1024, /* weight rows packed at once in the backward */
};

/* ------------------------------------------------------------------ activations */

/* Activations [rows, K] fp32 as bf16 [rows, K]; in exact mode also the
 * residuals lo = bf16(x - hi). */
typedef struct act_bf16 {
  const uint16_t *hi; /* [rows, K] */
  const uint16_t *lo; /* [rows, K] or NULL */
} act_bf16;

static int convert_activations(mxl_backend *be, act_bf16 *out, const float *x, int64_t rows,
                               int64_t K) {
  mxl_cpu *c = mxl_cpu_of(be);
  size_t n = (size_t)rows * (size_t)K;
  /* MXL_CPU_ROW_PAD spare rows after the hi part, zeros for oneDNN */
  size_t pad = (size_t)MXL_CPU_ROW_PAD * (size_t)K;
  uint16_t *buf = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_ACT,
                                  (n * (c->exact ? 2 : 1) + pad) * sizeof *buf);
  if (!buf) return -1;
  out->hi = buf;
  out->lo = c->exact ? buf + n + pad : NULL;
  if (c->dnnl) memset(buf + n, 0, pad * sizeof *buf);
  const size_t chunk = 1 << 14;
  int64_t n_chunks = (int64_t)((n + chunk - 1) / chunk);
  int nt = mxl_cpu_threads_for(be, (double)n * (c->exact ? 8 : 6), MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int64_t ch = 0; ch < n_chunks; ch++) {
    size_t i0 = (size_t)ch * chunk, len = n - i0 < chunk ? n - i0 : chunk;
    if (c->exact) c->isa->to_bf16_split(buf + i0, buf + n + pad + i0, x + i0, len);
    else c->isa->to_bf16(buf + i0, x + i0, len);
  }
  return 0;
}


/* ------------------------------------------------------------------ bf16 forward */

/* y = x·Wᵀ + b for one activation row (decode) — y [N], x [K]: items of
 * GEMV_ROWS weight rows streamed by gemv_bf16. */
static void matmul_bf16_row(mxl_backend *be, float *y, act_bf16 a, const mxl_bf16_weight *W) {
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  int64_t N = W->rows, K = W->cols, items = (N + GEMV_ROWS - 1) / GEMV_ROWS;
  int nt = mxl_cpu_threads_for(be, (double)N * K * 2, MXL_CPU_MIN_STREAM_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(dynamic, 1)
  for (int64_t it = 0; it < items; it++) {
    int64_t j0 = it * GEMV_ROWS, nj = N - j0 < GEMV_ROWS ? N - j0 : GEMV_ROWS;
    isa->gemv_bf16(y + j0, a.hi, a.lo, W->w + j0 * K, K, (int)nj, (int)K);
    mxl_cpu_add_bias(isa, y + j0, 0, W->bias ? W->bias + j0 : NULL, 1, (int)nj);
  }
}

/* y = x·Wᵀ + b — y [n, N], x [n, K], W bf16 [N, K]. Tiles of PANEL_ROWS
 * weight rows × a block of activation rows; the row blocks only split when
 * there are too few weight panels to keep every thread busy. */
void mxl_cpu_matmul_bf16(mxl_backend *be, float *y, const float *x, const mxl_bf16_weight *W,
                         int n) {
  if (n <= 0 || W->rows <= 0) return;
  mxl_cpu *c = mxl_cpu_of(be);
  const mxl_cpu_isa *isa = c->isa;
  int64_t N = W->rows, K = W->cols;
  act_bf16 a;
  if (convert_activations(be, &a, x, n, K) != 0) return;
  /* bf16 products count two thirds of an fp32 FMA (cpu_internal.h) */
  int nt = mxl_cpu_threads_for_product(be, (double)N * K * 2, (double)n * (K * 2 + N * 4),
                                       mxl_cpu_bf16_fmas(n, N, K));
  if (mxl_cpu_dnnl_rows(c, n) && mxl_cpu_dnnl_matmul_bf16(be, y, a.hi, W, n, nt)) return;
  if (n == 1) {
    matmul_bf16_row(be, y, a, W);
    return;
  }
  int64_t n_panels = (N + PANEL_ROWS - 1) / PANEL_ROWS;
  int64_t want = 4 * (int64_t)be->n_threads;
  int64_t m_splits = n_panels >= want ? 1 : (want + n_panels - 1) / n_panels;
  int64_t mb = (n + m_splits - 1) / m_splits;
  if (mb < 16) mb = 16;
  int64_t n_mblocks = (n + mb - 1) / mb;
  int64_t items = n_panels * n_mblocks;
  size_t panel_elems = (size_t)PANEL_ROWS * (size_t)(K + 1);
  uint16_t *panels = NULL;
  const int pack_min = isa->tiles ? TILES_PACK_MIN_ROWS : BF16_PACK_MIN_ROWS;
  if (n >= pack_min) {
    panels = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_THREAD,
                             panel_elems * sizeof *panels * (size_t)be->n_threads);
    if (!panels) return;
  }
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    uint16_t *bp = panels ? panels + panel_elems * (size_t)omp_get_thread_num() : NULL;
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < items; it++) {
      int64_t p = it / n_mblocks, mbk = it % n_mblocks;
      int64_t j0 = p * PANEL_ROWS, nj = N - j0 < PANEL_ROWS ? N - j0 : PANEL_ROWS;
      int64_t i0 = mbk * mb, ni = n - i0 < mb ? n - i0 : mb;
      float *yt = y + i0 * N + j0; /* [ni, N] tile of [n, N] */
      const uint16_t *ah = a.hi + i0 * K, *al = a.lo ? a.lo + i0 * K : NULL;
      if (bp && ni >= pack_min) {
        isa->pack_vnni_t_bf16(bp, PANEL_ROWS, W->w + j0 * K, K, (int)nj, (int)K);
        isa->gemm_bf16_vnni(yt, N, ah, al, K, bp, PANEL_ROWS, (int)ni, (int)nj, (int)K, 0);
      } else {
        isa->gemm_bf16_nt(yt, N, ah, al, K, W->w + j0 * K, K, (int)ni, (int)nj, (int)K, 0);
      }
      mxl_cpu_add_bias(isa, yt, N, W->bias ? W->bias + j0 : NULL, (int)ni, (int)nj);
    }
  }
}

/* ------------------------------------------------------------------ MXFP4 forward */


/* One forward work item: rows [j0, j0 + nj) of expert e's weights applied to
 * the expert's whole group of activation rows. */
typedef struct mx_item {
  int32_t e, j0, nj;
  int32_t q8; /* the group's first quantized row for gemm_mxfp4_q8, or -1 */
} mx_item;

void mxl_cpu_mxfp4_matmul(mxl_backend *be, float *y, const float *x, const mxl_mxfp4_weight *W,
                          const mxl_moe_plan *plan) {
  mxl_cpu *c = mxl_cpu_of(be);
  const mxl_cpu_isa *isa = c->isa;
  int E = W->n_experts;
  const int32_t *off = plan->offsets_host; /* [E+1] */
  int64_t N = W->rows, K = W->cols, row_blocks = K / MXL_MXFP4_BLOCK;
  int64_t m = off[E];
  if (m <= 0 || N <= 0) return;

  /* Work items: GEMV_ROWS weight rows for groups of at most FEW_ROWS rows
   * (decoded in registers once for all the group's rows), PANEL_ROWS
   * weight rows packed for larger groups. */
  act_bf16 a;
  if (convert_activations(be, &a, x, m, K) != 0) return;
  int used = 0;
  for (int e = 0; e < E; e++) used += off[e + 1] > off[e];
  int nt = mxl_cpu_threads_for_product(be, (double)used * N * K * 17 / 32,
                                       (double)m * (K * 2 + N * 4), mxl_cpu_bf16_fmas(m, N, K));
  /* the groups oneDNN takes (mxl_cpu_dnnl_rows), if any */
  int on_dnnl = c->dnnl && mxl_cpu_dnnl_mxfp4(be, y, a.hi, W, off, nt);

  /* groups of few rows (decode, batched decode, short prefills) take the
   * integer kernel where the ISA has one, their activation rows quantized
   * once (q8_src: the row of x behind each quantized row) */
  int q8 = c->int_decode && isa->gemm_mxfp4_q8 && !a.lo;
  int few_rows = q8 || isa->gemm_mxfp4_nt ? FEW_ROWS : 1;
  int64_t max_items = (int64_t)E * ((N + PANEL_ROWS - 1) / PANEL_ROWS + 1), n_q8 = 0;
  for (int e = 0; q8 && e < E; e++) {
    int64_t rows = off[e + 1] - off[e];
    if (rows > 0 && rows <= few_rows && !(on_dnnl && mxl_cpu_dnnl_rows(c, rows))) n_q8 += rows;
  }
  size_t q8_bytes = mxl_cpu_q8_bytes(K);
  size_t items_bytes = ((size_t)max_items * sizeof(mx_item) + 63) & ~(size_t)63;
  size_t src_bytes = ((size_t)n_q8 * sizeof(int32_t) + 63) & ~(size_t)63;
  char *aux = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_AUX,
                              items_bytes + src_bytes + (size_t)n_q8 * q8_bytes);
  if (!aux) return;
  mx_item *items = (mx_item *)aux;
  int32_t *q8_src = (int32_t *)(aux + items_bytes);
  char *q8_rows = aux + items_bytes + src_bytes; /* [n_q8] quantized rows, in group order */
  int64_t n_items = 0;
  int any_gemm = 0;
  n_q8 = 0;
  for (int e = 0; e < E; e++) {
    int64_t rows = off[e + 1] - off[e];
    if (rows <= 0 || (on_dnnl && mxl_cpu_dnnl_rows(c, rows))) continue;
    int64_t step = rows <= few_rows ? GEMV_ROWS : PANEL_ROWS;
    int32_t q = -1;
    if (q8 && rows <= few_rows) {
      q = (int32_t)n_q8;
      for (int64_t i = off[e]; i < off[e + 1]; i++) q8_src[n_q8++] = (int32_t)i;
    }
    any_gemm |= rows > 1 && q < 0;
    for (int64_t j0 = 0; j0 < N; j0 += step)
      items[n_items++] = (mx_item){e, (int32_t)j0, (int32_t)(N - j0 < step ? N - j0 : step), q};
  }
  if (n_items == 0) return;
  /* per thread: a packed panel, or the few-row kernel's reordered rows */
  size_t panel_elems = (size_t)PANEL_ROWS * (size_t)K;
  size_t few_elems = (size_t)4 * FEW_ROWS * (size_t)((K + 127) / 128 * 128);
  if (few_elems > panel_elems) panel_elems = few_elems;
  uint16_t *panels = NULL;
  if (any_gemm) {
    panels = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_THREAD,
                             panel_elems * sizeof *panels * (size_t)be->n_threads);
    if (!panels) return;
  }
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    uint16_t *panel = panels ? panels + panel_elems * (size_t)omp_get_thread_num() : NULL;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n_q8; i++)
      isa->quantize_q8(q8_rows + (size_t)i * q8_bytes, a.hi + (int64_t)q8_src[i] * K, (int)K);
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < n_items; it++) {
      mx_item w = items[it];
      int64_t i0 = off[w.e], rows = off[w.e + 1] - i0;
      float *yt = y + i0 * N + w.j0; /* [rows, N] tile of [m, N] */
      if (w.q8 >= 0) {
        isa->gemm_mxfp4_q8(yt, N, q8_rows + (size_t)w.q8 * q8_bytes, a.hi + i0 * K, K,
                           mxl_cpu_mx_blocks(W, w.e, w.j0), mxl_cpu_mx_scales(W, w.e, w.j0),
                           row_blocks, (int)rows, w.nj, (int)K, W->scale_bias);
      } else if (rows == 1) {
        isa->gemv_mxfp4(yt, a.hi + i0 * K, a.lo ? a.lo + i0 * K : NULL,
                        mxl_cpu_mx_blocks(W, w.e, w.j0), mxl_cpu_mx_scales(W, w.e, w.j0),
                        row_blocks, w.nj, (int)K, W->scale_bias);
      } else if (rows <= few_rows) {
        isa->gemm_mxfp4_nt(yt, N, a.hi + i0 * K, a.lo ? a.lo + i0 * K : NULL, K,
                           mxl_cpu_mx_blocks(W, w.e, w.j0), mxl_cpu_mx_scales(W, w.e, w.j0),
                           row_blocks, (int)rows, w.nj, (int)K, W->scale_bias, panel);
      } else if (rows >= PACK_MIN_ROWS) {
        isa->pack_vnni_t_mxfp4(panel, PANEL_ROWS, mxl_cpu_mx_blocks(W, w.e, w.j0),
                               mxl_cpu_mx_scales(W, w.e, w.j0), row_blocks, w.nj, (int)K,
                               W->scale_bias);
        isa->gemm_bf16_vnni(yt, N, a.hi + i0 * K, a.lo ? a.lo + i0 * K : NULL, K, panel, PANEL_ROWS,
                            (int)rows, w.nj, (int)K, 0);
      } else {
        isa->mxfp4_to_bf16(panel, K, mxl_cpu_mx_blocks(W, w.e, w.j0),
                           mxl_cpu_mx_scales(W, w.e, w.j0), row_blocks, w.nj, (int)K,
                           W->scale_bias);
        isa->gemm_bf16_nt(yt, N, a.hi + i0 * K, a.lo ? a.lo + i0 * K : NULL, K, panel, K, (int)rows,
                          w.nj, (int)K, 0);
      }
      mxl_cpu_add_bias(isa, yt, N, mxl_cpu_mx_bias(W, w.e, w.j0), (int)rows, w.nj);
    }
  }
}

/* ------------------------------------------------------------------ backward (dx) */

/* dx[:, k0:k0+kn] += dy·W[:, k0:k0+kn] for one group of activation rows,
 * W's column strip packed STRIP_ROWS rows at a time into `bp`
 * [STRIP_ROWS/2, STRIP_COLS, 2]. `pack` packs W[j0:j0+nj, k0:k0+kn] of
 * group e (decoding it, for MXFP4). */
typedef void (*strip_packer)(const void *ctx, const mxl_cpu_isa *isa, int e, int64_t j0,
                             int64_t nj, int64_t k0, int64_t kn, uint16_t *bp);

static void dx_strip(const mxl_cpu_isa *isa, float *dx, int64_t ldx, act_bf16 dy, int64_t ldy,
                     int rows, int64_t N, int64_t k0, int64_t kn, strip_packer pack,
                     const void *ctx, int e, uint16_t *bp) {
  for (int64_t j0 = 0; j0 < N; j0 += STRIP_ROWS) {
    int64_t nj = N - j0 < STRIP_ROWS ? N - j0 : STRIP_ROWS;
    pack(ctx, isa, e, j0, nj, k0, kn, bp);
    isa->gemm_bf16_vnni(dx + k0, ldx, dy.hi + j0, dy.lo ? dy.lo + j0 : NULL, ldy, bp,
                        STRIP_COLS, rows, (int)kn, (int)nj, 1);
  }
}

static void pack_bf16_strip(const void *ctx, const mxl_cpu_isa *isa, int e, int64_t j0,
                            int64_t nj, int64_t k0, int64_t kn, uint16_t *bp) {
  (void)e; /* one matrix for every group */
  const mxl_bf16_weight *W = ctx;
  isa->pack_vnni_bf16(bp, STRIP_COLS, W->w + j0 * W->cols + k0, W->cols, (int)nj, (int)kn);
}

static void pack_mx_strip(const void *ctx, const mxl_cpu_isa *isa, int e, int64_t j0, int64_t nj,
                          int64_t k0, int64_t kn, uint16_t *bp) {
  const mxl_mxfp4_weight *W = ctx;
  int64_t g0 = k0 / MXL_MXFP4_BLOCK;
  isa->pack_vnni_mxfp4(bp, STRIP_COLS, mxl_cpu_mx_blocks(W, e, j0) + g0 * MXL_MXFP4_BLOCK_BYTES,
                       mxl_cpu_mx_scales(W, e, j0) + g0, W->cols / MXL_MXFP4_BLOCK, (int)nj,
                       (int)kn, W->scale_bias);
}

/* Runs dx_strip over work items (group, column strip); groups are row
 * ranges [off[g], off[g+1]) using expert g's weights. */
static int dx_threads(mxl_backend *be, int64_t m, int64_t N, int64_t K, int n_groups) {
  return mxl_cpu_threads_for_product(be, (double)n_groups * N * K, (double)m * (N * 2 + K * 8),
                                     mxl_cpu_bf16_fmas(m, N, K));
}

/* The groups oneDNN takes (mxl_cpu_dnnl_rows) for the expert dx: 1 if done. */
static int mx_dx_on_dnnl(mxl_backend *be, float *dx, const uint16_t *dy, const void *ctx,
                         const int32_t *off, int nt) {
  return mxl_cpu_dnnl_mxfp4_dx(be, dx, dy, ctx, off, nt);
}

static void dx_driver(mxl_backend *be, float *dx, const float *dy, int64_t N, int64_t K,
                      const int32_t *off, int n_groups, strip_packer pack, const void *ctx,
                      int (*on_dnnl)(mxl_backend *, float *, const uint16_t *, const void *,
                                     const int32_t *, int)) {
  mxl_cpu *c = mxl_cpu_of(be);
  const mxl_cpu_isa *isa = c->isa;
  int64_t m = off[n_groups];
  if (m <= 0 || N <= 0 || K <= 0) return;
  act_bf16 a;
  if (convert_activations(be, &a, dy, m, N) != 0) return;
  int nt = dx_threads(be, m, N, K, n_groups);
  int dnnl_done = on_dnnl && c->dnnl && on_dnnl(be, dx, a.hi, ctx, off, nt);
  int64_t n_strips = (K + STRIP_COLS - 1) / STRIP_COLS;
  size_t per_thread = (size_t)STRIP_ROWS * STRIP_COLS;
  uint16_t *bufs = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_THREAD,
                                   per_thread * sizeof *bufs * (size_t)be->n_threads);
  if (!bufs) return;
  int64_t items = (int64_t)n_groups * n_strips;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    uint16_t *bp = bufs + per_thread * (size_t)omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < items; it++) {
      int g = (int)(it / n_strips);
      int64_t rows = off[g + 1] - off[g];
      if (rows <= 0 || (dnnl_done && mxl_cpu_dnnl_rows(c, rows))) continue;
      int64_t k0 = (it % n_strips) * STRIP_COLS, kn = K - k0 < STRIP_COLS ? K - k0 : STRIP_COLS;
      act_bf16 ag = {a.hi + off[g] * N, a.lo ? a.lo + off[g] * N : NULL};
      dx_strip(isa, dx + off[g] * K, K, ag, N, (int)rows, N, k0, kn, pack, ctx, g, bp);
    }
  }
}

/* dx += dy·W — dx [n, K], dy [n, N], W bf16 [N, K] */
void mxl_cpu_matmul_bf16_dx(mxl_backend *be, float *dx, const float *dy,
                            const mxl_bf16_weight *W, int n) {
  /* One group of all n rows, split further so both threads get strips of
   * every row block when n is large. */
  enum { MAX_BLOCKS = 64 };
  int32_t off[MAX_BLOCKS + 1];
  int blocks = n > 256 ? (n + 255) / 256 : 1;
  if (blocks > MAX_BLOCKS) blocks = MAX_BLOCKS;
  for (int b = 0; b <= blocks; b++) off[b] = (int32_t)((int64_t)n * b / blocks);
  mxl_cpu *c = mxl_cpu_of(be);
  if (n > 0 && mxl_cpu_dnnl_rows(c, n)) { /* all rows in one oneDNN product */
    act_bf16 a;
    if (convert_activations(be, &a, dy, n, W->rows) != 0) return;
    if (mxl_cpu_dnnl_matmul_bf16_dx(be, dx, a.hi, W, n, dx_threads(be, n, W->rows, W->cols, 1)))
      return;
  }
  dx_driver(be, dx, dy, W->rows, W->cols, off, blocks, pack_bf16_strip, W, NULL);
}

/* dx[i] += dy[i]·W_e for grouped row i of expert e — dx [m, K], dy [m, N] */
void mxl_cpu_mxfp4_matmul_dx(mxl_backend *be, float *dx, const float *dy,
                             const mxl_mxfp4_weight *W, const mxl_moe_plan *plan) {
  dx_driver(be, dx, dy, W->rows, W->cols, plan->offsets_host, W->n_experts, pack_mx_strip, W,
            mx_dx_on_dnnl);
}
