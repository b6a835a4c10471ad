/* CPU backend segmented LoRA (kernels/ops.h lora, lora_bwd): every
 * segment's products in one parallel region per call (two for the
 * backward), instead of two (or four) gemm_f32 calls per segment — one call
 * serves all experts of a training step or all sequences of a mixed batch.
 *
 * Most calls are small (0.1-1 ms: the bench preset's projections), so what
 * decides their speed on 2 threads is how often the threads meet, not the
 * products, which run at 75-90 % of the fp32 FMA peak on one thread: every
 * parallel region and every barrier wakes the sleeping partner (passive
 * waiting, cpu_threads.c: ~25 µs on a Zen 4 VM). Where no two segments
 * share a token row (training: one adapter, one segment per expert) the
 * work splits by rows, and each work item carries a block of rows through
 * the whole chain with no barrier in between:
 *   forward   t = x·Aᵀ, then y += scale·t·Bᵀ           (row items)
 *   backward  dt = scale·dy·B, then dx += dt·A          (row items)
 *             dB += scale·dyᵀ·t, dA += dtᵀ·x           (column items: each
 *                                                      gradient block has
 *                                                      one writer)
 * Segments that share rows (several adapters stacked on the same tokens)
 * add into y and dx in segment order: those phases split by columns
 * instead, after a barrier.
 *
 * The inner products are the ISA table's fp32 kernels (gemm_f32_nt for
 * long dot products, gemm_f32_nn otherwise), reductions cut into KC-deep
 * panels so operands stay in cache. Shape legend as kernels/ops.h. */
#include <omp.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"

enum {
  ROWS = 32, /* rows per item of the row phases */
  NB = 128,  /* columns per item of the column phases */
  KC = 256,  /* reduction depth per panel */
};

static int64_t t_floats(const mxl_lora_seg *segs, int n) {
  int64_t need = 0;
  for (int s = 0; s < n; s++) {
    int64_t end = segs[s].t_off + (int64_t)segs[s].rows * segs[s].rank;
    if (end > need) need = end;
  }
  return need;
}

static int max_rank(const mxl_lora_seg *segs, int n) {
  int r = 1;
  for (int s = 0; s < n; s++)
    if (segs[s].rank > r) r = segs[s].rank;
  return r;
}

/* 1 when the segments follow one another in row order, none sharing a
 * row: training's (one per expert, in the grouped order, or one per
 * sequence). Stacked adapters repeat rows, and segments out of order are
 * not sorted here (a linear check on every call, decode included): both
 * take the column order, which is right for any segments. */
static int rows_disjoint(const mxl_lora_seg *segs, int n) {
  int64_t end = 0; /* past the last row seen */
  for (int s = 0; s < n; s++) {
    if (segs[s].rows <= 0) continue;
    if (segs[s].row0 < end) return 0;
    end = (int64_t)segs[s].row0 + segs[s].rows;
  }
  return 1;
}

/* Most of a LoRA call's time is moving activations, not multiplying: the
 * forward reads x and adds into y (read and write), the backward reads dy
 * twice (dt, dB), x once (dA) and adds into dx; the adapters are small. */
int mxl_cpu_lora_threads(const mxl_backend *be, const mxl_lora_seg *segs, int n_segs, int in,
                         int out, int forward) {
  double fmas = 0, bytes = 0;
  for (int s = 0; s < n_segs; s++) {
    double rows = segs[s].rows, adapter = (double)segs[s].rank * ((double)in + out);
    fmas += rows * adapter;
    bytes += forward ? rows * ((double)in + 2.0 * out) + adapter
                     : rows * (3.0 * in + 2.0 * out) + 2 * adapter;
  }
  return mxl_cpu_threads_for_op(be, 4 * bytes, forward ? fmas : 2 * fmas);
}

/* Work items: a block of `count` units from `begin` of segment `seg`'s rows
 * (row phases) or of a matrix's columns (column phases). */
typedef struct item {
  int seg, begin, count;
} item;

/* Appends the blocks of `block` units of [0, extent) of segment s. */
static void add_blocks(item *items, int *k, int s, int extent, int block) {
  for (int b = 0; b < extent; b += block)
    items[(*k)++] = (item){s, b, extent - b < block ? extent - b : block};
}

static int n_blocks(int extent, int block) { return (extent + block - 1) / block; }

/* The row items of every segment, then (columns > 0) the column items of
 * every segment over `columns`, then (columns2 > 0) over `columns2`: one
 * list in scratch; *n_rows, *n_cols1 say where the parts end. */
static item *make_items(mxl_backend *be, const mxl_lora_seg *segs, int n, int columns,
                        int columns2, int *n_rows, int *n_cols1, int *n_items) {
  int total = 0;
  for (int s = 0; s < n; s++)
    total += n_blocks(segs[s].rows, ROWS) + n_blocks(columns, NB) + n_blocks(columns2, NB);
  item *items = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_AUX2, (size_t)(total ? total : 1) * sizeof *items);
  if (!items) return NULL;
  int k = 0;
  for (int s = 0; s < n; s++) add_blocks(items, &k, s, segs[s].rows, ROWS);
  *n_rows = k;
  for (int s = 0; s < n; s++) add_blocks(items, &k, s, columns, NB);
  *n_cols1 = k;
  for (int s = 0; s < n; s++) add_blocks(items, &k, s, columns2, NB);
  *n_items = k;
  return items;
}

/* C (+)= alpha·A·B through the NN kernel, K cut into KC panels:
 * A(i, p) = A[i·lda + p·a_cs], B [K, ldb]. */
static void nn_panels(const mxl_cpu_isa *isa, float *C, int64_t ldc, const float *A, int64_t lda,
                      int64_t a_cs, const float *B, int64_t ldb, int M, int N, int K, float alpha,
                      int accumulate) {
  if (K == 0 && !accumulate)
    for (int i = 0; i < M; i++) memset(C + (int64_t)i * ldc, 0, (size_t)N * sizeof *C);
  for (int p0 = 0; p0 < K; p0 += KC) {
    int kc = K - p0 < KC ? K - p0 : KC;
    isa->gemm_f32_nn(C, ldc, A + (int64_t)p0 * a_cs, lda, a_cs, B + (int64_t)p0 * ldb, ldb, M, N,
                     kc, alpha, accumulate || p0 > 0);
  }
}

/* ---------------------------------------------------------------- forward */

/* t[rows] = x[rows]·Aᵀ for a row item. */
static void item_t(const mxl_cpu_isa *isa, const mxl_lora_seg *g, const item *it, float *t,
                   const float *x, int in) {
  isa->gemm_f32_nt(t + g->t_off + (int64_t)it->begin * g->rank, g->rank,
                   x + (int64_t)(g->row0 + it->begin) * in, in, g->A, in, it->count, g->rank, in,
                   1.0f, 0);
}

/* y[rows, j0:j0+nj] += scale·t·B[j0:j0+nj]ᵀ for `rows` rows from `r0` of
 * the segment: a few rows as dot products of length R, more on the NN
 * kernel with B's block transposed into `pack` ([R, ld_pack]; `packed`:
 * it already holds it). */
static void add_delta(const mxl_cpu_isa *isa, const mxl_lora_seg *g, float *y, int out,
                      const float *t, int r0, int rows, int j0, int nj, float *pack,
                      int64_t ld_pack, int packed) {
  const int R = g->rank;
  float *c = y + (int64_t)(g->row0 + r0) * out + j0;
  t += g->t_off + (int64_t)r0 * R;
  if (rows < 4) {
    isa->gemm_f32_nt(c, out, t, R, g->B + (int64_t)j0 * R, R, rows, nj, R, g->scale, 1);
    return;
  }
  if (!packed) isa->transpose_f32(pack, ld_pack, g->B + (int64_t)j0 * R, R, nj, R);
  nn_panels(isa, c, out, t, R, 1, pack, ld_pack, rows, nj, R, g->scale, 1);
}

void mxl_cpu_lora(mxl_backend *be, float *y, float *t, const float *x, const mxl_lora_seg *segs,
                  int n_segs, int in, int out) {
  if (n_segs <= 0) return;
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  if (!t) t = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_AUX, (size_t)t_floats(segs, n_segs) * sizeof *t + 64);
  const int R = max_rank(segs, n_segs), by_rows = rows_disjoint(segs, n_segs);
  const int nt = mxl_cpu_lora_threads(be, segs, n_segs, in, out, 1);
  int n_rows = 0, n_cols = 0, n_items = 0;
  item *items = make_items(be, segs, n_segs, by_rows ? 0 : out, 0, &n_rows, &n_cols, &n_items);
  /* per thread: Bᵀ of a whole segment (row items) or of a column block */
  const int64_t ld_pack = by_rows ? out : NB;
  float *packs = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_THREAD, (size_t)R * ld_pack * sizeof(float) * nt);
  if (!t || !items || !packs) return;

#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    float *pack = packs + (size_t)R * ld_pack * omp_get_thread_num();
    int packed_seg = -1; /* the segment whose Bᵀ `pack` holds */
#pragma omp for schedule(dynamic, 1) nowait
    for (int i = 0; i < n_rows; i++) {
      const item *it = &items[i];
      const mxl_lora_seg *g = &segs[it->seg];
      item_t(isa, g, it, t, x, in);
      if (!by_rows) continue;
      add_delta(isa, g, y, out, t, it->begin, it->count, 0, out, pack, ld_pack,
                packed_seg == it->seg);
      if (it->count >= 4) packed_seg = it->seg;
    }
    if (!by_rows) {
      /* columns of y, every segment in order inside each: t complete first */
#pragma omp barrier
#pragma omp for schedule(dynamic, 1)
      for (int b = 0; b < n_blocks(out, NB); b++) {
        int j0 = b * NB, nj = out - j0 < NB ? out - j0 : NB;
        for (int s = 0; s < n_segs; s++)
          add_delta(isa, &segs[s], y, out, t, 0, segs[s].rows, j0, nj, pack, ld_pack, 0);
      }
    }
  }
}

/* ---------------------------------------------------------------- backward */

/* dt[rows] = scale·dy[rows]·B  [rows, R] = [rows, out]·[out, R] */
static void item_dt(const mxl_cpu_isa *isa, const mxl_lora_seg *g, const item *it, float *dt,
                    const float *dy, int out) {
  nn_panels(isa, dt + g->t_off + (int64_t)it->begin * g->rank, g->rank,
            dy + (int64_t)(g->row0 + it->begin) * out, out, 1, g->B, g->rank, it->count, g->rank,
            out, g->scale, 0);
}

/* dx[rows, c0:c0+nc] += dt[rows]·A[:, c0:c0+nc]  ([rows, R]·[R, nc]) for
 * `rows` rows from `r0` of the segment. */
static void add_dx(const mxl_cpu_isa *isa, const mxl_lora_seg *g, float *dx, int in,
                   const float *dt, int r0, int rows, int c0, int nc) {
  nn_panels(isa, dx + (int64_t)(g->row0 + r0) * in + c0, in, dt + g->t_off + (int64_t)r0 * g->rank,
            g->rank, 1, g->A + c0, in, rows, nc, g->rank, 1.0f, 1);
}

/* dB[c0:c0+nc] += scale·dy[:, c0:c0+nc]ᵀ·t  [nc, R] (a column item of out) */
static void item_dB(const mxl_cpu_isa *isa, const mxl_lora_seg *g, const item *it,
                    const float *dy, const float *t, int out) {
  const int R = g->rank;
  if (!g->dB) return;
  nn_panels(isa, g->dB + (int64_t)it->begin * R, R, dy + (int64_t)g->row0 * out + it->begin, 1,
            out, t + g->t_off, R, it->count, R, g->rows, g->scale, 1);
}

/* dA[:, c0:c0+nc] += dtᵀ·x[:, c0:c0+nc]  [R, nc] (a column item of in) */
static void item_dA(const mxl_cpu_isa *isa, const mxl_lora_seg *g, const item *it,
                    const float *dt, const float *x, int in) {
  if (!g->dA) return;
  nn_panels(isa, g->dA + it->begin, in, dt + g->t_off, 1, g->rank,
            x + (int64_t)g->row0 * in + it->begin, in, g->rank, it->count, g->rows, 1.0f, 1);
}

void mxl_cpu_lora_bwd(mxl_backend *be, float *dx, const float *dy, const float *x,
                      const float *t, const mxl_lora_seg *segs, int n_segs, int in, int out) {
  if (n_segs <= 0) return;
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  float *dt = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_AUX, (size_t)t_floats(segs, n_segs) * sizeof *dt + 64);
  const int by_rows = rows_disjoint(segs, n_segs);
  const int nt = mxl_cpu_lora_threads(be, segs, n_segs, in, out, 0);
  int n_rows = 0, n_b = 0, n_items = 0;
  /* row items, then dB's column items (of out), then dA's (of in) */
  item *items = make_items(be, segs, n_segs, out, in, &n_rows, &n_b, &n_items);
  if (!dt || !items) return;

#pragma omp parallel num_threads(nt) if (nt > 1)
  {
#pragma omp for schedule(dynamic, 1)
    for (int i = 0; i < n_rows; i++) {
      const item *it = &items[i];
      const mxl_lora_seg *g = &segs[it->seg];
      item_dt(isa, g, it, dt, dy, out);
      if (by_rows && dx) add_dx(isa, g, dx, in, dt, it->begin, it->count, 0, in);
    }
    /* dt complete: the gradients of A and B, each block by one item */
#pragma omp for schedule(dynamic, 1) nowait
    for (int i = n_rows; i < n_items; i++) {
      const item *it = &items[i];
      if (i < n_b) item_dB(isa, &segs[it->seg], it, dy, t, out);
      else item_dA(isa, &segs[it->seg], it, dt, x, in);
    }
    if (!by_rows && dx) {
      /* columns of dx, every segment in order inside each */
#pragma omp for schedule(dynamic, 1)
      for (int b = 0; b < n_blocks(in, NB); b++) {
        int c0 = b * NB, nc = in - c0 < NB ? in - c0 : NB;
        for (int s = 0; s < n_segs; s++) add_dx(isa, &segs[s], dx, in, dt, 0, segs[s].rows, c0, nc);
      }
    }
  }
}
