/* CPU backend, mixture-of-experts glue: router top-k and its backward, the
 * grouped plan, gather/combine (and backward), clamped SwiGLU (and
 * backward). The grouped MXFP4 matmuls live in cpu_matmul.c.
 * Shape legend and plan conventions as kernels/ops.h. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"

/* Per token: the k largest logits, descending, ties to the lower index,
 * then softmax over those k — logits [n, E], experts and weights [n, k]. */
void mxl_cpu_router_topk(mxl_backend *be, int32_t *experts, float *weights, const float *logits,
                         int n, int E, int k) {
  int nt = mxl_cpu_threads_for(be, (double)n * E * 16, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int t = 0; t < n; t++) {
    const float *z = logits + (size_t)t * E; /* [E] */
    int32_t *sel = experts + (size_t)t * k;  /* [k] */
    int count = 0;
    /* Insertion into a sorted list of length <= k; a strict > keeps the
     * lower index first among equal logits. */
    for (int e = 0; e < E; e++) {
      int pos = count;
      while (pos > 0 && z[e] > z[sel[pos - 1]]) pos--;
      if (pos >= k) continue;
      int last = count < k ? count : k - 1;
      for (int q = last; q > pos; q--) sel[q] = sel[q - 1];
      sel[pos] = e;
      if (count < k) count++;
    }
    double den = 0;
    for (int r = 0; r < k; r++) den += exp((double)z[sel[r]] - z[sel[0]]);
    for (int r = 0; r < k; r++)
      weights[(size_t)t * k + r] = (float)(exp((double)z[sel[r]] - z[sel[0]]) / den);
  }
}

/* dlogits[t, e_r] += w_r·(dw_r − Σ_r' w_r'·dw_r') — dlogits [n, E],
 * dweights, weights, experts [n, k] */
void mxl_cpu_router_bwd(mxl_backend *be, float *dlogits, const float *dweights,
                        const float *weights, const int32_t *experts, int n, int E, int k) {
  int nt = mxl_cpu_threads_for(be, (double)n * k * 16, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int t = 0; t < n; t++) {
    const float *w = weights + (size_t)t * k, *dw = dweights + (size_t)t * k; /* [k] */
    double dot = 0;
    for (int r = 0; r < k; r++) dot += (double)w[r] * dw[r];
    for (int r = 0; r < k; r++)
      dlogits[(size_t)t * E + experts[(size_t)t * k + r]] += (float)(w[r] * (dw[r] - dot));
  }
}

/* Stable counting sort of the assignments by expert — order, slot [n*k],
 * offsets [E+1], experts [n, k]. Small (n*k entries): serial. */
void mxl_cpu_moe_plan(mxl_backend *be, int32_t *order, int32_t *slot, int32_t *offsets,
                      const int32_t *experts, int n, int k, int E) {
  (void)be;
  int m = n * k;
  memset(offsets, 0, (size_t)(E + 1) * sizeof *offsets);
  for (int a = 0; a < m; a++) offsets[experts[a] + 1]++;
  for (int e = 0; e < E; e++) offsets[e + 1] += offsets[e];
  /* Scanning assignments in order and appending to each expert's range
   * keeps the sort stable. */
  int32_t cursor_stack[256];
  int32_t *cursor = E <= 256 ? cursor_stack : NULL;
  if (!cursor) {
    cursor = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_AUX, (size_t)E * sizeof *cursor);
    if (!cursor) return;
  }
  memcpy(cursor, offsets, (size_t)E * sizeof *cursor);
  for (int a = 0; a < m; a++) {
    int i = cursor[experts[a]]++;
    order[i] = a;
    slot[a] = i;
  }
}

/* xs[i] = x[order[i] / k] — xs [m, H], x [n, H] */
void mxl_cpu_moe_gather(mxl_backend *be, float *xs, const float *x, const mxl_moe_plan *plan,
                        int H) {
  int m = plan->n_tokens * plan->k;
  int nt = mxl_cpu_threads_for(be, (double)m * H * 8, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int i = 0; i < m; i++)
    memcpy(xs + (size_t)i * H, x + (size_t)(plan->order[i] / plan->k) * H,
           (size_t)H * sizeof *xs);
}

/* dx[t] += Σ_r dxs[slot[t*k + r]] — dx [n, H], dxs [m, H] */
void mxl_cpu_moe_gather_bwd(mxl_backend *be, float *dx, const float *dxs,
                            const mxl_moe_plan *plan, int H) {
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  int k = plan->k;
  int nt = mxl_cpu_threads_for(be, (double)plan->n_tokens * (k + 2) * H * 4, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int t = 0; t < plan->n_tokens; t++) {
    float *dxt = dx + (size_t)t * H; /* [H] */
    for (int r = 0; r < k; r++) {
      const float *src = dxs + (size_t)plan->slot[(size_t)t * k + r] * H; /* [H] */
      isa->axpy_f32(dxt, 1.0f, src, H); /* exact: 1·src + dxt rounds once, as an add */
    }
  }
}

/* out[t] += Σ_r weights[t, r]·ys[slot[t*k + r]] — out [n, H], ys [m, H] */
void mxl_cpu_moe_combine(mxl_backend *be, float *out, const float *ys, const mxl_moe_plan *plan,
                         int H) {
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  int k = plan->k;
  int nt = mxl_cpu_threads_for(be, (double)plan->n_tokens * (k + 2) * H * 4, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int t = 0; t < plan->n_tokens; t++) {
    float *ot = out + (size_t)t * H; /* [H] */
    for (int r = 0; r < k; r++) {
      size_t a = (size_t)t * k + r;
      isa->axpy_f32(ot, plan->weights[a], ys + (size_t)plan->slot[a] * H, H);
    }
  }
}

/* dys[slot[a]] += weights[a]·dout[t]; dweights[a] += dout[t]·ys[slot[a]]
 * — dys [m, H], dweights [n, k], dout [n, H], ys [m, H] */
void mxl_cpu_moe_combine_bwd(mxl_backend *be, float *dys, float *dweights, const float *dout,
                             const float *ys, const mxl_moe_plan *plan, int H) {
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  int k = plan->k;
  int nt = mxl_cpu_threads_for(be, (double)plan->n_tokens * (3 * k + 1) * H * 4, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int t = 0; t < plan->n_tokens; t++) {
    const float *dt = dout + (size_t)t * H; /* [H] */
    for (int r = 0; r < k; r++) {
      size_t a = (size_t)t * k + r, s = (size_t)plan->slot[a];
      isa->axpy_f32(dys + s * H, plan->weights[a], dt, H);
      dweights[a] += isa->dot_f32(dt, ys + s * H, H); /* fp32 lanes, as the op driver allows */
    }
  }
}

/* act[u] = g·σ(alpha·g)·(l + 1), g = min(h[2u], limit),
 * l = clamp(h[2u+1], −limit, limit) — act [m, I], h [m, 2I] */
void mxl_cpu_swiglu(mxl_backend *be, float *act, const float *h, int m, int I, float alpha,
                    float limit) {
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  /* the sigmoid's exp costs about as much as the 12 bytes moved per unit */
  int nt = mxl_cpu_threads_for(be, (double)m * I * 24, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int i = 0; i < m; i++)
    isa->swiglu_row(act + (size_t)i * I, h + (size_t)i * 2 * I, I, alpha, limit);
}

/* dh[2u] += dact·(l+1)·(s + alpha·g·s·(1−s)) where h[2u] <= limit;
 * dh[2u+1] += dact·g·s where −limit <= h[2u+1] <= limit; s = σ(alpha·g)
 * — dh [m, 2I], dact [m, I], h [m, 2I] */
void mxl_cpu_swiglu_bwd(mxl_backend *be, float *dh, const float *dact, const float *h, int m,
                        int I, float alpha, float limit) {
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  int nt = mxl_cpu_threads_for(be, (double)m * I * 48, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int i = 0; i < m; i++)
    isa->swiglu_bwd_row(dh + (size_t)i * 2 * I, dact + (size_t)i * I, h + (size_t)i * 2 * I, I,
                        alpha, limit);
}
