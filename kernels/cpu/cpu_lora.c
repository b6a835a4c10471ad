/* CPU backend segmented LoRA (kernels/ops.h lora, lora_bwd): every
 * segment's products in one parallel region per phase, instead of two (or
 * four) gemm_f32 calls per segment — one call serves all experts of a
 * training step or all sequences of a mixed batch.
 *
 * Phases, each split into work items that write disjoint memory:
 *   forward   t_s = x_s·A_sᵀ                  items: (segment, row block)
 *             y += scale_s·t_s·B_sᵀ            items: column blocks of y; the
 *                                              segments in order inside each, so
 *                                              rows shared by several adapters
 *                                              add in segment order
 *   backward  dt_s = scale_s·dy_s·B_s          items: (segment, row block)
 *             dB_s += scale_s·dy_sᵀ·t_s,
 *             dA_s += dt_sᵀ·x_s                items: (segment, column block)
 *             dx += dt_s·A_s                   items: column blocks of dx
 * The inner products are the ISA table's fp32 kernels (gemm_f32_nt for
 * long dot products, gemm_f32_nn otherwise), reductions cut into KC-deep
 * panels so operands stay in cache. Shape legend as kernels/ops.h. */
#include <omp.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"

enum {
  ROWS = 16, /* rows per item of the row phases */
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

/* Work items over (segment, block of `block` units of `extent(s)`). */
typedef struct item {
  int seg, begin, count;
} item;

static item *make_items(mxl_backend *be, const mxl_lora_seg *segs, int n, int by_rows,
                        int width, int block, int *n_items) {
  int total = 0;
  for (int s = 0; s < n; s++) {
    int extent = by_rows ? segs[s].rows : width;
    total += (extent + block - 1) / block;
  }
  item *items = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_AUX2, (size_t)(total ? total : 1) * sizeof *items);
  if (!items) return NULL;
  int k = 0;
  for (int s = 0; s < n; s++) {
    int extent = by_rows ? segs[s].rows : width;
    for (int b = 0; b < extent; b += block)
      items[k++] = (item){s, b, extent - b < block ? extent - b : block};
  }
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

/* y[rows, j0:j0+nj] += scale·t·B[j0:j0+nj]ᵀ: a few rows as dot products of
 * length R, more rows on the NN kernel with B's block transposed (pack
 * [R, NB]). */
static void add_delta(const mxl_cpu_isa *isa, const mxl_lora_seg *g, float *y, int out,
                      const float *t, int j0, int nj, float *pack) {
  const int R = g->rank;
  float *c = y + (int64_t)g->row0 * out + j0;
  if (g->rows < 4) {
    isa->gemm_f32_nt(c, out, t, R, g->B + (int64_t)j0 * R, R, g->rows, nj, R, g->scale, 1);
    return;
  }
  isa->transpose_f32(pack, NB, g->B + (int64_t)j0 * R, R, nj, R);
  nn_panels(isa, c, out, t, R, 1, pack, NB, g->rows, nj, R, g->scale, 1);
}

void mxl_cpu_lora(mxl_backend *be, float *y, float *t, const float *x, const mxl_lora_seg *segs,
                  int n_segs, int in, int out) {
  if (n_segs <= 0) return;
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  if (!t) t = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_AUX, (size_t)t_floats(segs, n_segs) * sizeof *t + 64);
  int R = max_rank(segs, n_segs), n_items = 0;
  item *items = make_items(be, segs, n_segs, 1, 0, ROWS, &n_items);
  if (!t || !items) return;
  int nt = mxl_cpu_lora_threads(be, segs, n_segs, in, out, 1);

#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(dynamic, 1)
  for (int it = 0; it < n_items; it++) {
    const mxl_lora_seg *g = &segs[items[it].seg];
    int r0 = items[it].begin;
    isa->gemm_f32_nt(t + g->t_off + (int64_t)r0 * g->rank, g->rank,
                     x + (int64_t)(g->row0 + r0) * in, in, g->A, in, items[it].count, g->rank,
                     in, 1.0f, 0);
  }

  float *packs = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_THREAD, (size_t)R * NB * sizeof(float) * nt);
  if (!packs) return;
  int n_blocks = (out + NB - 1) / NB;
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(dynamic, 1)
  for (int b = 0; b < n_blocks; b++) {
    float *pack = packs + (size_t)R * NB * omp_get_thread_num();
    int j0 = b * NB, nj = out - j0 < NB ? out - j0 : NB;
    for (int s = 0; s < n_segs; s++) add_delta(isa, &segs[s], y, out, t + segs[s].t_off, j0, nj, pack);
  }
}

/* ---------------------------------------------------------------- backward */

void mxl_cpu_lora_bwd(mxl_backend *be, float *dx, const float *dy, const float *x,
                      const float *t, const mxl_lora_seg *segs, int n_segs, int in, int out) {
  if (n_segs <= 0) return;
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  float *dt = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_AUX, (size_t)t_floats(segs, n_segs) * sizeof *dt + 64);
  if (!dt) return;
  int nt = mxl_cpu_lora_threads(be, segs, n_segs, in, out, 0);
  int n_items = 0;

  /* dt_s = scale·dy_s·B_s  [rows, R] = [rows, out]·[out, R] */
  item *items = make_items(be, segs, n_segs, 1, 0, ROWS, &n_items);
  if (!items) return;
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(dynamic, 1)
  for (int it = 0; it < n_items; it++) {
    const mxl_lora_seg *g = &segs[items[it].seg];
    int r0 = items[it].begin;
    nn_panels(isa, dt + g->t_off + (int64_t)r0 * g->rank, g->rank,
              dy + (int64_t)(g->row0 + r0) * out, out, 1, g->B, g->rank, items[it].count,
              g->rank, out, g->scale, 0);
  }

  /* dB_s += scale·dy_sᵀ·t_s [out, R] and dA_s += dt_sᵀ·x_s [R, in], by
   * column blocks of out and of in: items [0, n_b) are dB's, the rest dA's. */
  int n_b = 0, n_a = 0;
  item *b_items = make_items(be, segs, n_segs, 0, out, NB, &n_b);
  if (!b_items) return;
  item *all = NULL;
  {
    int per_seg_a = (in + NB - 1) / NB;
    n_a = n_segs * per_seg_a;
    size_t bytes_b = (size_t)n_b * sizeof *all;
    all = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_THREAD, bytes_b + (size_t)(n_a ? n_a : 1) * sizeof *all);
    if (!all) return;
    /* make_items used AUX2; copy before the next call reuses it */
    memcpy(all, b_items, bytes_b);
    int k = n_b;
    for (int s = 0; s < n_segs; s++)
      for (int c = 0; c < in; c += NB) all[k++] = (item){s, c, in - c < NB ? in - c : NB};
  }
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(dynamic, 1)
  for (int it = 0; it < n_b + n_a; it++) {
    const mxl_lora_seg *g = &segs[all[it].seg];
    const int R = g->rank, c0 = all[it].begin, nc = all[it].count;
    const int64_t row = (int64_t)g->row0;
    if (it < n_b) {
      if (g->dB)
        nn_panels(isa, g->dB + (int64_t)c0 * R, R, dy + row * out + c0, 1, out, t + g->t_off, R,
                  nc, R, g->rows, g->scale, 1);
    } else if (g->dA) {
      nn_panels(isa, g->dA + c0, in, dt + g->t_off, 1, R, x + row * in + c0, in, R, nc, g->rows,
                1.0f, 1);
    }
  }

  /* dx[rows_s] += dt_s·A_s [rows, in] = [rows, R]·[R, in], column blocks of
   * in with the segments in order (rows may be shared). */
  if (!dx) return;
  int n_blocks = (in + NB - 1) / NB;
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(dynamic, 1)
  for (int b = 0; b < n_blocks; b++) {
    int c0 = b * NB, nc = in - c0 < NB ? in - c0 : NB;
    for (int s = 0; s < n_segs; s++) {
      const mxl_lora_seg *g = &segs[s];
      nn_panels(isa, dx + (int64_t)g->row0 * in + c0, in, dt + g->t_off, g->rank, 1, g->A + c0, in,
                g->rows, nc, g->rank, 1.0f, 1);
    }
  }
}
