/* CUDA ops, segmented LoRA (kernels/ops.h lora, lora_bwd): every segment of
 * a call in one launch per phase. CPU reference: kernels/ref/ref_lora.h
 * (mxl_ref_lora_seg, mxl_ref_lora_seg_bwd), applied segment after segment.
 *
 * The launcher copies the segment table to device scratch with two indexes
 * built on the host:
 *   start[s]   prefix sums of each segment's element count in a phase (t
 *              and dt: rows·R; dB: out·R; dA: R·in), so that one thread per
 *              element finds its segment by binary search;
 *   row CSR    for each row that some segment covers, its segments in
 *              order: y (and dx) elements loop over them, so rows shared by
 *              several adapters add in segment order, without atomics.
 * Every output element is computed by one thread with a fixed reduction
 * order: results do not depend on the thread order (the emulator checks).
 * One thread per output element with plain dot products: correct and
 * deterministic; tiles and tensor cores are the CUDA backend's next step. */
#ifndef MXL_KERNELS_CUDA_OPS_LORA_CUH
#define MXL_KERNELS_CUDA_OPS_LORA_CUH

#include <string.h>

#include "kernels/cuda/runtime.cuh"

/* The segment of element e: the last s with start[s] <= e. */
MXL_DEVICE int mxl_lora_seg_of(const int64_t *start, int n, int64_t e) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (start[mid] <= e) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/* One row covered by segments: row index and its segments [begin, end) of
 * the CSR list. */
struct mxl_lora_row {
  int64_t row;
  int begin, end;
};

/* t_s[r, k] = src[row0 + r]·A_s[k] with src = x (forward), or dt_s[r, k] =
 * scale·src[row0 + r]·B_s[:, k] with src = dy when `bwd` — one thread per
 * element. */
MXL_GLOBAL void mxl_lora_t_kernel(float *t, const float *src, const mxl_lora_seg *segs,
                                  const int64_t *start, int n_segs, int64_t total, int64_t in,
                                  int64_t out, int bwd) {
  MXL_FOR_EACH(e, total) {
    int s = mxl_lora_seg_of(start, n_segs, e);
    const mxl_lora_seg g = segs[s];
    int64_t local = e - start[s], r = local / g.rank, k = local % g.rank;
    float acc = 0.0f;
    if (!bwd) {
      const float *xr = src + (g.row0 + r) * in, *ak = g.A + k * in;
      for (int64_t i = 0; i < in; i++) acc = fmaf(xr[i], ak[i], acc);
    } else {
      const float *dyr = src + (g.row0 + r) * out;
      for (int64_t j = 0; j < out; j++) acc = fmaf(dyr[j], g.B[j * g.rank + k], acc);
      acc *= g.scale;
    }
    t[g.t_off + local] = acc;
  }
}

/* y[row, j] += Σ over the row's segments, in order, of scale_s·t_s[row]·B_s[j]
 * (forward), or dx[row, i] += Σ dt_s[row]·A_s[:, i] (bwd) — one thread per
 * element of the covered rows. */
MXL_GLOBAL void mxl_lora_rows_kernel(float *y, const float *t, const mxl_lora_seg *segs,
                                     const mxl_lora_row *rows, const int *row_segs,
                                     int64_t n_rows, int64_t width, int bwd) {
  MXL_FOR_EACH(e, n_rows * width) {
    const mxl_lora_row rr = rows[e / width];
    const int64_t j = e % width;
    float v = y[rr.row * width + j];
    for (int q = rr.begin; q < rr.end; q++) {
      const mxl_lora_seg g = segs[row_segs[q]];
      const float *tr = t + g.t_off + (rr.row - g.row0) * g.rank;
      float acc = 0.0f;
      if (!bwd)
        for (int k = 0; k < g.rank; k++) acc = fmaf(tr[k], g.B[j * g.rank + k], acc);
      else
        for (int k = 0; k < g.rank; k++) acc = fmaf(tr[k], g.A[(int64_t)k * width + j], acc);
      v = bwd ? v + acc : fmaf(g.scale, acc, v);
    }
    y[rr.row * width + j] = v;
  }
}

/* dB_s[j, k] += scale·Σ_r dy[row0 + r, j]·t_s[r, k]  (which = 0), or
 * dA_s[k, i] += Σ_r dt_s[r, k]·x[row0 + r, i]  (which = 1) — one thread per
 * gradient element; segments without that gradient have no elements. */
MXL_GLOBAL void mxl_lora_grad_kernel(const float *act, const float *t, const mxl_lora_seg *segs,
                                     const int64_t *start, int n_segs, int64_t total,
                                     int64_t width, int which) {
  MXL_FOR_EACH(e, total) {
    int s = mxl_lora_seg_of(start, n_segs, e);
    const mxl_lora_seg g = segs[s];
    int64_t local = e - start[s];
    float acc = 0.0f;
    if (which == 0) { /* local = j·R + k, act = dy [*, width = out] */
      int64_t j = local / g.rank, k = local % g.rank;
      for (int64_t r = 0; r < g.rows; r++)
        acc = fmaf(act[(g.row0 + r) * width + j], t[g.t_off + r * g.rank + k], acc);
      g.dB[local] += g.scale * acc;
    } else { /* local = k·in + i, act = x [*, width = in], t = dt */
      int64_t k = local / width, i = local % width;
      for (int64_t r = 0; r < g.rows; r++)
        acc = fmaf(t[g.t_off + r * g.rank + k], act[(g.row0 + r) * width + i], acc);
      g.dA[local] += acc;
    }
  }
}

/* The device copy of a call's segment table and indexes, in scratch:
 * segs [n], three prefix tables [n+1] (t elements, dB elements, dA
 * elements), the covered rows and their CSR, then t/dt. */
struct mxl_lora_plan {
  const mxl_lora_seg *segs;
  const int64_t *start_t, *start_b, *start_a;
  int64_t total_t, total_b, total_a;
  const mxl_lora_row *rows;
  const int *row_segs;
  int64_t n_rows;
  float *t; /* scratch t (or dt), addressed by the segments' t_off */
};

static inline size_t mxl_lora_align(size_t bytes) { return (bytes + 255) & ~(size_t)255; }
static_assert(sizeof(mxl_lora_row) == 16, "mxl_cuda_scratch_lora's row size");

/* Builds the plan on the host and uploads it; false on failure (recorded). */
static bool mxl_cu_lora_plan(mxl_backend *be, const mxl_lora_seg *segs, int n, int64_t in,
                             int64_t out, const char *op, mxl_lora_plan *p) {
  int64_t max_row = 0, covered = 0, entries = 0;
  for (int s = 0; s < n; s++)
    if (segs[s].row0 + segs[s].rows > max_row) max_row = segs[s].row0 + segs[s].rows;
  int *count = static_cast<int *>(calloc((size_t)max_row + 1, sizeof(int)));
  if (!count) {
    mxl_cu_fail(be, MXL_ERR_MEMORY, op, "out of host memory for the row index");
    return false;
  }
  for (int s = 0; s < n; s++)
    for (int64_t r = segs[s].row0; r < segs[s].row0 + segs[s].rows; r++) count[r]++;
  for (int64_t r = 0; r < max_row; r++) {
    covered += count[r] > 0;
    entries += count[r];
  }
  const size_t b_segs = mxl_lora_align(sizeof(mxl_lora_seg) * (size_t)n);
  const size_t b_start = mxl_lora_align(sizeof(int64_t) * (size_t)(n + 1));
  const size_t b_rows = mxl_lora_align(sizeof(mxl_lora_row) * (size_t)(covered + 1));
  const size_t b_csr = mxl_lora_align(sizeof(int) * (size_t)(entries + 1));
  const size_t head = b_segs + 3 * b_start + b_rows + b_csr;
  char *host = static_cast<char *>(calloc(1, head));
  int64_t t_extent = 0; /* floats of t the offsets address */
  for (int s = 0; s < n; s++) {
    int64_t end = segs[s].t_off + (int64_t)segs[s].rows * segs[s].rank;
    if (end > t_extent) t_extent = end;
  }
  /* head + t as kernels/cuda_memory.h accounts it (mxlora plan) */
  char *dev = host ? static_cast<char *>(mxl_cu_scratch(
                         be, mxl_cuda_scratch_lora(n, covered, entries, t_extent), op))
                   : NULL;
  if (!host || !dev) {
    if (!host) mxl_cu_fail(be, MXL_ERR_MEMORY, op, "out of host memory for the segment table");
    free(host);
    free(count);
    return false;
  }
  memcpy(host, segs, sizeof(mxl_lora_seg) * (size_t)n);
  int64_t *st = reinterpret_cast<int64_t *>(host + b_segs);
  int64_t *sb = reinterpret_cast<int64_t *>(host + b_segs + b_start);
  int64_t *sa = reinterpret_cast<int64_t *>(host + b_segs + 2 * b_start);
  st[0] = sb[0] = sa[0] = 0;
  for (int s = 0; s < n; s++) {
    st[s + 1] = st[s] + (int64_t)segs[s].rows * segs[s].rank;
    sb[s + 1] = sb[s] + (segs[s].dB ? out * segs[s].rank : 0);
    sa[s + 1] = sa[s] + (segs[s].dA ? in * segs[s].rank : 0);
  }
  mxl_lora_row *rows = reinterpret_cast<mxl_lora_row *>(host + b_segs + 3 * b_start);
  int *csr = reinterpret_cast<int *>(host + b_segs + 3 * b_start + b_rows);
  int64_t k = 0;
  int at = 0;
  for (int64_t r = 0; r < max_row; r++) { /* covered rows in order; count[r] becomes the
                                             row's fill cursor in the CSR list */
    if (!count[r]) continue;
    rows[k++] = {r, at, at + count[r]};
    int first = at;
    at += count[r];
    count[r] = first;
  }
  for (int s = 0; s < n; s++) /* segments in order: each row's list keeps that order */
    for (int64_t r = segs[s].row0; r < segs[s].row0 + segs[s].rows; r++) csr[count[r]++] = s;
  be->ops->upload(be, dev, host, head);
  p->segs = reinterpret_cast<const mxl_lora_seg *>(dev);
  p->start_t = reinterpret_cast<const int64_t *>(dev + b_segs);
  p->start_b = reinterpret_cast<const int64_t *>(dev + b_segs + b_start);
  p->start_a = reinterpret_cast<const int64_t *>(dev + b_segs + 2 * b_start);
  p->total_t = st[n];
  p->total_b = sb[n];
  p->total_a = sa[n];
  p->rows = reinterpret_cast<const mxl_lora_row *>(dev + b_segs + 3 * b_start);
  p->row_segs = reinterpret_cast<const int *>(dev + b_segs + 3 * b_start + b_rows);
  p->n_rows = covered;
  p->t = reinterpret_cast<float *>(dev + head);
  free(host);
  free(count);
  return true;
}

static inline unsigned mxl_lora_grid(int64_t n) {
  return mxl_cu_grid(n, MXL_CU_ELEMENTWISE_THREADS, MXL_CU_MAX_BLOCKS);
}

static void mxl_cu_lora(mxl_backend *be, float *y, float *t, const float *x,
                        const mxl_lora_seg *segs, int n_segs, int in, int out) {
  if (n_segs <= 0) return;
  mxl_lora_plan p;
  if (!mxl_cu_lora_plan(be, segs, n_segs, in, out, "lora", &p)) return;
  if (!t) t = p.t;
  mxl_cu_stream stream = mxl_cu_state(be)->stream;
  if (!mxl_cu_launched(be, "lora",
                       MXL_LAUNCH(mxl_lora_t_kernel, mxl_lora_grid(p.total_t),
                                  MXL_CU_ELEMENTWISE_THREADS, 0, stream, t, x, p.segs, p.start_t,
                                  n_segs, p.total_t, (int64_t)in, (int64_t)out, 0)))
    return;
  mxl_cu_launched(be, "lora",
                  MXL_LAUNCH(mxl_lora_rows_kernel, mxl_lora_grid(p.n_rows * out),
                             MXL_CU_ELEMENTWISE_THREADS, 0, stream, y, t, p.segs, p.rows,
                             p.row_segs, p.n_rows, (int64_t)out, 0));
}

static void mxl_cu_lora_bwd(mxl_backend *be, float *dx, const float *dy, const float *x,
                            const float *t, const mxl_lora_seg *segs, int n_segs, int in,
                            int out) {
  if (n_segs <= 0) return;
  mxl_lora_plan p;
  if (!mxl_cu_lora_plan(be, segs, n_segs, in, out, "lora_bwd", &p)) return;
  mxl_cu_stream stream = mxl_cu_state(be)->stream;
  float *dt = p.t;
  if (!mxl_cu_launched(be, "lora_bwd",
                       MXL_LAUNCH(mxl_lora_t_kernel, mxl_lora_grid(p.total_t),
                                  MXL_CU_ELEMENTWISE_THREADS, 0, stream, dt, dy, p.segs,
                                  p.start_t, n_segs, p.total_t, (int64_t)in, (int64_t)out, 1)))
    return;
  if (p.total_b > 0 &&
      !mxl_cu_launched(be, "lora_bwd",
                       MXL_LAUNCH(mxl_lora_grad_kernel, mxl_lora_grid(p.total_b),
                                  MXL_CU_ELEMENTWISE_THREADS, 0, stream, dy, t, p.segs,
                                  p.start_b, n_segs, p.total_b, (int64_t)out, 0)))
    return;
  if (p.total_a > 0 &&
      !mxl_cu_launched(be, "lora_bwd",
                       MXL_LAUNCH(mxl_lora_grad_kernel, mxl_lora_grid(p.total_a),
                                  MXL_CU_ELEMENTWISE_THREADS, 0, stream, x, dt, p.segs,
                                  p.start_a, n_segs, p.total_a, (int64_t)in, 1)))
    return;
  if (dx)
    mxl_cu_launched(be, "lora_bwd",
                    MXL_LAUNCH(mxl_lora_rows_kernel, mxl_lora_grid(p.n_rows * in),
                               MXL_CU_ELEMENTWISE_THREADS, 0, stream, dx, dt, p.segs, p.rows,
                               p.row_segs, p.n_rows, (int64_t)in, 1));
}

static inline void mxl_cu_fill_lora(mxl_ops *ops) {
  ops->lora = mxl_cu_lora;
  ops->lora_bwd = mxl_cu_lora_bwd;
}

#endif
