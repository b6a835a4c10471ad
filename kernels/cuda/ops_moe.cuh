/* CUDA ops, mixture of experts: router top-k (+ backward), the grouped
 * plan, gather (+ backward), grouped MXFP4 matmul (+ dx), clamped SwiGLU
 * (+ backward), weighted combine (+ backward). CPU reference:
 * kernels/ref/ref_moe.h, function by function.
 *
 * Shape legend as kernels/ops.h: n tokens, k experts per token, E experts,
 * m = n·k grouped rows, H hidden, I expert width. Assignment a = t·k + r.
 * Nothing here uses atomics: every output element has exactly one writer,
 * so results do not depend on scheduling. */
#ifndef MXL_KERNELS_CUDA_OPS_MOE_CUH
#define MXL_KERNELS_CUDA_OPS_MOE_CUH

#include "kernels/cuda/mxfp4_gemm.cuh"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/runtime.cuh"

/* ---------------------------------------------------------------- router */

/* One thread per token: the reference's selection verbatim (a strict >
 * scan from e = 0, so ties go to the lower index and a NaN behaves as
 * there), then the softmax over the k selected logits — logits [n, E],
 * experts, weights [n, k]. */
MXL_GLOBAL void mxl_router_topk_kernel(int32_t *experts, float *weights, const float *logits,
                                       int64_t n, int E, int k) {
  MXL_FOR_EACH(t, n) {
    const float *z = logits + t * E;
    int32_t *sel = experts + t * k;
    for (int r = 0; r < k; r++) {
      int best = -1;
      for (int e = 0; e < E; e++) {
        bool taken = false;
        for (int q = 0; q < r; q++) taken |= sel[q] == e;
        if (!taken && (best < 0 || z[e] > z[best])) best = e;
      }
      sel[r] = best;
    }
    float z0 = z[sel[0]], den = 0.0f;
    for (int r = 0; r < k; r++) den += expf(z[sel[r]] - z0);
    for (int r = 0; r < k; r++) weights[t * k + r] = expf(z[sel[r]] - z0) / den;
  }
}

static void mxl_cu_router_topk(mxl_backend *be, int32_t *experts, float *weights,
                               const float *logits, int n, int E, int k) {
  if (n <= 0 || k <= 0) return;
  mxl_cu_launched(be, "router_topk",
                  MXL_LAUNCH(mxl_router_topk_kernel, mxl_cu_grid(n, 64, MXL_CU_MAX_BLOCKS), 64, 0,
                             mxl_cu_state(be)->stream, experts, weights, logits, (int64_t)n, E,
                             k));
}

/* dlogits[t, experts[t, r]] += w_r·(dw_r − Σ_r' w_r'·dw_r'), one thread per
 * token (its k experts are distinct). */
MXL_GLOBAL void mxl_router_bwd_kernel(float *dlogits, const float *dweights, const float *weights,
                                      const int32_t *experts, int64_t n, int E, int k) {
  MXL_FOR_EACH(t, n) {
    const float *w = weights + t * k, *dw = dweights + t * k;
    float dot = 0.0f;
    for (int r = 0; r < k; r++) dot = fmaf(w[r], dw[r], dot);
    for (int r = 0; r < k; r++) dlogits[t * E + experts[t * k + r]] += w[r] * (dw[r] - dot);
  }
}

static void mxl_cu_router_bwd(mxl_backend *be, float *dlogits, const float *dweights,
                              const float *weights, const int32_t *experts, int n, int E, int k) {
  if (n <= 0 || k <= 0) return;
  mxl_cu_launched(be, "router_bwd",
                  MXL_LAUNCH(mxl_router_bwd_kernel, mxl_cu_grid(n, 64, MXL_CU_MAX_BLOCKS), 64, 0,
                             mxl_cu_state(be)->stream, dlogits, dweights, weights, experts,
                             (int64_t)n, E, k));
}

/* ---------------------------------------------------------------- plan */

enum { MXL_PLAN_THREADS = 128 };

/* Block e (of E + 1) writes offsets[e] = #assignments with an expert in
 * [0, e), and for e < E the grouped rows of expert e: each thread takes a
 * contiguous run of assignments, so an exclusive scan of the per-thread
 * counts gives every assignment its rank among expert e's in assignment
 * order (the stable order of ops.h) — order, slot [m], offsets [E+1],
 * experts [m]. */
MXL_GLOBAL void mxl_moe_plan_kernel(int32_t *order, int32_t *slot, int32_t *offsets,
                                    const int32_t *experts, int64_t m, int E) {
  MXL_SHARED int buf[MXL_PLAN_THREADS];
  const int e = (int)MXL_BLOCK_X;
  const int64_t run = (m + MXL_PLAN_THREADS - 1) / MXL_PLAN_THREADS;
  const int64_t lo = MXL_THREAD_X * run, hi = lo + run < m ? lo + run : m;
  int below = 0, mine = 0;
  for (int64_t a = lo; a < hi; a++) {
    int x = experts[a];
    below += x >= 0 && x < e;
    mine += x == e;
  }
  int start = 0;
  mxl_block_exclusive_scan<MXL_PLAN_THREADS>(below, buf, &start);
  if (MXL_THREAD_X == 0) offsets[e] = start;
  if (e == E) return; /* the whole block */
  int total = 0;
  int rank = start + mxl_block_exclusive_scan<MXL_PLAN_THREADS>(mine, buf, &total);
  for (int64_t a = lo; a < hi; a++)
    if (experts[a] == e) {
      order[rank] = (int32_t)a;
      slot[a] = rank++;
    }
}

static void mxl_cu_moe_plan(mxl_backend *be, int32_t *order, int32_t *slot, int32_t *offsets,
                            const int32_t *experts, int n, int k, int E) {
  if (E < 0) return;
  mxl_cu_launched(be, "moe_plan",
                  MXL_LAUNCH(mxl_moe_plan_kernel, (unsigned)(E + 1), MXL_PLAN_THREADS, 0,
                             mxl_cu_state(be)->stream, order, slot, offsets, experts,
                             (int64_t)n * k, E));
}

/* ---------------------------------------------------------------- gather */

/* xs[i] = x[order[i] / k] — xs [m, H], x [n, H] */
MXL_GLOBAL void mxl_moe_gather_kernel(float *xs, const float *x, const int32_t *order, int64_t m,
                                      int k, int64_t H) {
  MXL_FOR_EACH(idx, m * H) xs[idx] = x[(int64_t)(order[idx / H] / k) * H + idx % H];
}

static void mxl_cu_moe_gather(mxl_backend *be, float *xs, const float *x,
                              const mxl_moe_plan *plan, int H) {
  int64_t m = (int64_t)plan->n_tokens * plan->k, total = m * H;
  if (total <= 0) return;
  mxl_cu_launched(be, "moe_gather",
                  MXL_LAUNCH(mxl_moe_gather_kernel,
                             mxl_cu_grid(total, MXL_CU_ELEMENTWISE_THREADS, MXL_CU_MAX_BLOCKS),
                             MXL_CU_ELEMENTWISE_THREADS, 0, mxl_cu_state(be)->stream, xs, x,
                             plan->order, m, plan->k, (int64_t)H));
}

/* dx[t] += Σ_r dxs[slot[t·k + r]] — dx [n, H], dxs [m, H] */
MXL_GLOBAL void mxl_moe_gather_bwd_kernel(float *dx, const float *dxs, const int32_t *slot,
                                          int64_t n, int k, int64_t H) {
  MXL_FOR_EACH(idx, n * H) {
    int64_t t = idx / H, j = idx % H;
    float s = 0.0f;
    for (int r = 0; r < k; r++) s += dxs[(int64_t)slot[t * k + r] * H + j];
    dx[idx] += s;
  }
}

static void mxl_cu_moe_gather_bwd(mxl_backend *be, float *dx, const float *dxs,
                                  const mxl_moe_plan *plan, int H) {
  int64_t total = (int64_t)plan->n_tokens * H;
  if (total <= 0) return;
  mxl_cu_launched(be, "moe_gather_bwd",
                  MXL_LAUNCH(mxl_moe_gather_bwd_kernel,
                             mxl_cu_grid(total, MXL_CU_ELEMENTWISE_THREADS, MXL_CU_MAX_BLOCKS),
                             MXL_CU_ELEMENTWISE_THREADS, 0, mxl_cu_state(be)->stream, dx, dxs,
                             plan->slot, (int64_t)plan->n_tokens, plan->k, (int64_t)H));
}

/* ---------------------------------------------------------------- MXFP4 matmuls */

/* mxfp4_matmul and mxfp4_matmul_dx: tensor cores, kernels/cuda/mxfp4_gemm.cuh. */

/* ---------------------------------------------------------------- SwiGLU */

/* The clamps of gpt-oss's SwiGLU with comparisons, so that NaN propagates
 * as in the reference (fminf would drop it). */
MXL_DEVICE float mxl_cu_clamp_hi(float x, float hi) { return x > hi ? hi : x; }
MXL_DEVICE float mxl_cu_clamp(float x, float lo, float hi) {
  return x > hi ? hi : (x < lo ? lo : x);
}
MXL_DEVICE float mxl_cu_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* act [m, I] from interleaved gate/up h [m, 2I]. */
MXL_GLOBAL void mxl_swiglu_kernel(float *act, const float *h, int64_t total, float alpha,
                                  float limit) {
  MXL_FOR_EACH(idx, total) {
    float g = mxl_cu_clamp_hi(h[2 * idx], limit), l = mxl_cu_clamp(h[2 * idx + 1], -limit, limit);
    act[idx] = g * mxl_cu_sigmoid(alpha * g) * (l + 1.0f);
  }
}

static void mxl_cu_swiglu(mxl_backend *be, float *act, const float *h, int m, int I, float alpha,
                          float limit) {
  int64_t total = (int64_t)m * I;
  if (total <= 0) return;
  mxl_cu_launched(be, "swiglu",
                  MXL_LAUNCH(mxl_swiglu_kernel,
                             mxl_cu_grid(total, MXL_CU_ELEMENTWISE_THREADS, MXL_CU_MAX_BLOCKS),
                             MXL_CU_ELEMENTWISE_THREADS, 0, mxl_cu_state(be)->stream, act, h,
                             total, alpha, limit));
}

/* dh [m, 2I] += SwiGLU'ᵀ·dact; the gradient passes at the clamp boundaries
 * and stops strictly outside (and for NaN), as the reference. */
MXL_GLOBAL void mxl_swiglu_bwd_kernel(float *dh, const float *dact, const float *h, int64_t total,
                                      float alpha, float limit) {
  MXL_FOR_EACH(idx, total) {
    float hg = h[2 * idx], hl = h[2 * idx + 1], da = dact[idx];
    float g = mxl_cu_clamp_hi(hg, limit), l = mxl_cu_clamp(hl, -limit, limit);
    float s = mxl_cu_sigmoid(alpha * g);
    if (hg <= limit) dh[2 * idx] += da * (l + 1.0f) * (s + alpha * g * s * (1.0f - s));
    if (hl >= -limit && hl <= limit) dh[2 * idx + 1] += da * g * s;
  }
}

static void mxl_cu_swiglu_bwd(mxl_backend *be, float *dh, const float *dact, const float *h,
                              int m, int I, float alpha, float limit) {
  int64_t total = (int64_t)m * I;
  if (total <= 0) return;
  mxl_cu_launched(be, "swiglu_bwd",
                  MXL_LAUNCH(mxl_swiglu_bwd_kernel,
                             mxl_cu_grid(total, MXL_CU_ELEMENTWISE_THREADS, MXL_CU_MAX_BLOCKS),
                             MXL_CU_ELEMENTWISE_THREADS, 0, mxl_cu_state(be)->stream, dh, dact,
                             h, total, alpha, limit));
}

/* ---------------------------------------------------------------- combine */

/* out[t] += Σ_r weights[t·k + r]·ys[slot[t·k + r]] — out [n, H], ys [m, H] */
MXL_GLOBAL void mxl_moe_combine_kernel(float *out, const float *ys, const int32_t *slot,
                                       const float *weights, int64_t n, int k, int64_t H) {
  MXL_FOR_EACH(idx, n * H) {
    int64_t t = idx / H, j = idx % H;
    float acc = out[idx];
    for (int r = 0; r < k; r++)
      acc = fmaf(weights[t * k + r], ys[(int64_t)slot[t * k + r] * H + j], acc);
    out[idx] = acc;
  }
}

static void mxl_cu_moe_combine(mxl_backend *be, float *out, const float *ys,
                               const mxl_moe_plan *plan, int H) {
  int64_t total = (int64_t)plan->n_tokens * H;
  if (total <= 0) return;
  mxl_cu_launched(be, "moe_combine",
                  MXL_LAUNCH(mxl_moe_combine_kernel,
                             mxl_cu_grid(total, MXL_CU_ELEMENTWISE_THREADS, MXL_CU_MAX_BLOCKS),
                             MXL_CU_ELEMENTWISE_THREADS, 0, mxl_cu_state(be)->stream, out, ys,
                             plan->slot, plan->weights, (int64_t)plan->n_tokens, plan->k,
                             (int64_t)H));
}

enum { MXL_COMBINE_BWD_THREADS = 128 };

/* One block per assignment a = t·k + r (slot is a permutation, so each dys
 * row has one writer): dys[slot[a]] += weights[a]·dout[t] and
 * dweights[a] += dout[t]·ys[slot[a]] — dys, ys [m, H], dout [n, H]. */
MXL_GLOBAL void mxl_moe_combine_bwd_kernel(float *dys, float *dweights, const float *dout,
                                           const float *ys, const int32_t *slot,
                                           const float *weights, int k, int64_t H) {
  MXL_SHARED float red[MXL_COMBINE_BWD_THREADS];
  const int64_t a = MXL_BLOCK_X, t = a / k, s = slot[a];
  const float w = weights[a];
  float dot = 0.0f;
  for (int64_t j = MXL_THREAD_X; j < H; j += MXL_COMBINE_BWD_THREADS) {
    float g = dout[t * H + j];
    dys[s * H + j] += w * g;
    dot = fmaf(g, ys[s * H + j], dot);
  }
  dot = mxl_block_sum<MXL_COMBINE_BWD_THREADS>(dot, red);
  if (MXL_THREAD_X == 0) dweights[a] += dot;
}

static void mxl_cu_moe_combine_bwd(mxl_backend *be, float *dys, float *dweights,
                                   const float *dout, const float *ys, const mxl_moe_plan *plan,
                                   int H) {
  int64_t m = (int64_t)plan->n_tokens * plan->k;
  if (m <= 0) return;
  mxl_cu_launched(be, "moe_combine_bwd",
                  MXL_LAUNCH(mxl_moe_combine_bwd_kernel, (unsigned)m, MXL_COMBINE_BWD_THREADS, 0,
                             mxl_cu_state(be)->stream, dys, dweights, dout, ys, plan->slot,
                             plan->weights, plan->k, (int64_t)H));
}

static inline void mxl_cu_fill_moe(mxl_ops *ops) {
  ops->router_topk = mxl_cu_router_topk;
  ops->router_bwd = mxl_cu_router_bwd;
  ops->moe_plan = mxl_cu_moe_plan;
  ops->moe_gather = mxl_cu_moe_gather;
  ops->moe_gather_bwd = mxl_cu_moe_gather_bwd;
  ops->mxfp4_matmul = mxl_cu_mxfp4_matmul;
  ops->mxfp4_matmul_dx = mxl_cu_mxfp4_matmul_dx;
  ops->swiglu = mxl_cu_swiglu;
  ops->swiglu_bwd = mxl_cu_swiglu_bwd;
  ops->moe_combine = mxl_cu_moe_combine;
  ops->moe_combine_bwd = mxl_cu_moe_combine_bwd;
}

#endif
