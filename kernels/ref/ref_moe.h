/* Reference math, mixture of experts: router top-k, the grouped plan,
 * gather, grouped MXFP4 matmul, clamped SwiGLU, weighted combine (forward
 * and backward). See ref_real.h for the shape legend and numerics.
 *
 * Assignment a = t*k + r is token t's r-th expert; grouped row i (of m = n*k)
 * is assignment order[i]; assignment a sits at grouped row slot[a]; expert e
 * owns grouped rows [offsets[e], offsets[e+1]). The functions take the plan's
 * arrays rather than mxl_moe_plan so the double twin can pass double
 * routing weights. */
#ifndef MXL_KERNELS_REF_MOE_H
#define MXL_KERNELS_REF_MOE_H

#include "kernels/mxfp4.h"
#include "kernels/ops.h"
#include "kernels/ref/ref_real.h"

/* Per token: the k largest logits, descending, ties to the lower index (a
 * strict > scan from e = 0), then w = softmax over those k logits only
 *   w_r = exp(z_r − z_0) / Σ_r' exp(z_r' − z_0)    (z_0 the largest)
 * — logits [n, E], experts and weights [n, k]. */
static inline void mxl_ref_router_topk(int32_t *experts, mxl_real *weights,
                                       const mxl_real *logits, int n, int E, int k) {
  for (int t = 0; t < n; t++) {
    const mxl_real *z = logits + (size_t)t * E;
    int32_t *sel = experts + (size_t)t * k;
    for (int r = 0; r < k; r++) {
      int best = -1;
      for (int e = 0; e < E; e++) {
        int taken = 0;
        for (int q = 0; q < r; q++) taken |= sel[q] == e;
        if (!taken && (best < 0 || z[e] > z[best])) best = e;
      }
      sel[r] = best;
    }
    mxl_acc den = 0;
    for (int r = 0; r < k; r++) den += exp((mxl_acc)z[sel[r]] - z[sel[0]]);
    for (int r = 0; r < k; r++)
      weights[(size_t)t * k + r] = (mxl_real)(exp((mxl_acc)z[sel[r]] - z[sel[0]]) / den);
  }
}

/* Softmax-over-top-k backward (selection has no gradient):
 *   dlogits[t, experts[t,r]] += w_r·(dw_r − Σ_r' w_r'·dw_r')
 * — dlogits [n, E], dweights, weights, experts [n, k]. */
static inline void mxl_ref_router_bwd(mxl_real *dlogits, const mxl_real *dweights,
                                      const mxl_real *weights, const int32_t *experts, int n,
                                      int E, int k) {
  for (int t = 0; t < n; t++) {
    const mxl_real *w = weights + (size_t)t * k, *dw = dweights + (size_t)t * k;
    mxl_acc dot = 0;
    for (int r = 0; r < k; r++) dot += (mxl_acc)w[r] * dw[r];
    for (int r = 0; r < k; r++)
      dlogits[(size_t)t * E + experts[(size_t)t * k + r]] +=
          (mxl_real)((mxl_acc)w[r] * (dw[r] - dot));
  }
}

/* The grouped order: assignments sorted stably by expert (a scan per
 * expert in assignment order) — order, slot [n*k], offsets [E+1],
 * experts [n, k]. */
static inline void mxl_ref_moe_plan(int32_t *order, int32_t *slot, int32_t *offsets,
                                    const int32_t *experts, int n, int k, int E) {
  int m = n * k, i = 0;
  for (int e = 0; e < E; e++) {
    offsets[e] = i;
    for (int a = 0; a < m; a++)
      if (experts[a] == e) {
        order[i] = a;
        slot[a] = i++;
      }
  }
  offsets[E] = i;
}

/* xs[i] = x[order[i] / k] — xs [m, H], x [n, H], order [m] */
static inline void mxl_ref_moe_gather(mxl_real *xs, const mxl_real *x, const int32_t *order,
                                      int m, int k, int H) {
  for (int i = 0; i < m; i++)
    for (int j = 0; j < H; j++) xs[(size_t)i * H + j] = x[(size_t)(order[i] / k) * H + j];
}

/* dx[t] += Σ_r dxs[slot[t*k + r]] — dx [n, H], dxs [m, H], slot [n*k] */
static inline void mxl_ref_moe_gather_bwd(mxl_real *dx, const mxl_real *dxs,
                                          const int32_t *slot, int n, int k, int H) {
  for (int t = 0; t < n; t++)
    for (int j = 0; j < H; j++) {
      mxl_acc acc = 0;
      for (int r = 0; r < k; r++) acc += dxs[(size_t)slot[(size_t)t * k + r] * H + j];
      dx[(size_t)t * H + j] += (mxl_real)acc;
    }
}

/* Row o of expert e's blocks / scales (mxfp4.h layout), and its bias. */
static inline const uint8_t *mxl_ref_mx_blocks(const mxl_mxfp4_weight *W, int e, int64_t o) {
  return W->blocks + (size_t)e * W->blocks_stride +
         (size_t)o * (size_t)(W->cols / MXL_MXFP4_BLOCK) * MXL_MXFP4_BLOCK_BYTES;
}
static inline const uint8_t *mxl_ref_mx_scales(const mxl_mxfp4_weight *W, int e, int64_t o) {
  return W->scales + (size_t)e * W->scales_stride + (size_t)o * (size_t)(W->cols / MXL_MXFP4_BLOCK);
}
static inline mxl_acc mxl_ref_mx_bias(const mxl_mxfp4_weight *W, int e, int64_t o) {
  return W->bias ? mxl_ref_bf16(W->bias[(size_t)e * W->bias_stride + (size_t)o]) : 0.0;
}

/* Grouped row i of expert e: y[i] = x[i]·W_eᵀ + b_e, W_e decoded element by
 * element — y [m, W.rows], x [m, W.cols], offsets [E+1]. */
static inline void mxl_ref_mxfp4_matmul(mxl_real *y, const mxl_real *x,
                                        const mxl_mxfp4_weight *W, const int32_t *offsets,
                                        int E) {
  for (int e = 0; e < E; e++)
    for (int64_t i = offsets[e]; i < offsets[e + 1]; i++)
      for (int64_t o = 0; o < W->rows; o++) {
        const uint8_t *rb = mxl_ref_mx_blocks(W, e, o), *rs = mxl_ref_mx_scales(W, e, o);
        mxl_acc acc = mxl_ref_mx_bias(W, e, o);
        for (int64_t c = 0; c < W->cols; c++)
          acc += (mxl_acc)x[i * W->cols + c] * mxl_mxfp4_decode_at(rb, rs, W->scale_bias, c);
        y[i * W->rows + o] = (mxl_real)acc;
      }
}

/* dx[i] += dy[i]·W_e for grouped row i of expert e — dx [m, W.cols],
 * dy [m, W.rows], offsets [E+1]. */
static inline void mxl_ref_mxfp4_matmul_dx(mxl_real *dx, const mxl_real *dy,
                                           const mxl_mxfp4_weight *W, const int32_t *offsets,
                                           int E) {
  for (int e = 0; e < E; e++)
    for (int64_t i = offsets[e]; i < offsets[e + 1]; i++)
      for (int64_t c = 0; c < W->cols; c++) {
        mxl_acc acc = 0;
        for (int64_t o = 0; o < W->rows; o++)
          acc += (mxl_acc)dy[i * W->rows + o] *
                 mxl_mxfp4_decode_at(mxl_ref_mx_blocks(W, e, o), mxl_ref_mx_scales(W, e, o),
                                     W->scale_bias, c);
        dx[i * W->cols + c] += (mxl_real)acc;
      }
}

/* The clamps of gpt-oss's SwiGLU, written with comparisons so that NaN
 * propagates (as torch.clamp does; fmin would drop it). */
static inline mxl_acc mxl_ref_clamp_hi(mxl_acc x, mxl_acc hi) { return x > hi ? hi : x; }
static inline mxl_acc mxl_ref_clamp(mxl_acc x, mxl_acc lo, mxl_acc hi) {
  return x > hi ? hi : (x < lo ? lo : x);
}
static inline mxl_acc mxl_ref_sigmoid(mxl_acc x) { return 1.0 / (1.0 + exp(-x)); }

/* Clamped SwiGLU on interleaved gate/up — act [m, I], h [m, 2I]:
 *   g = min(h[2u], limit),  l = clamp(h[2u+1], −limit, limit)
 *   act[u] = g·σ(alpha·g)·(l + 1) */
static inline void mxl_ref_swiglu(mxl_real *act, const mxl_real *h, int m, int I, mxl_acc alpha,
                                  mxl_acc limit) {
  for (int i = 0; i < m; i++)
    for (int u = 0; u < I; u++) {
      const mxl_real *hu = h + (size_t)i * 2 * I + 2 * u;
      mxl_acc g = mxl_ref_clamp_hi(hu[0], limit), l = mxl_ref_clamp(hu[1], -limit, limit);
      act[(size_t)i * I + u] = (mxl_real)(g * mxl_ref_sigmoid(alpha * g) * (l + 1.0));
    }
}

/* SwiGLU backward — dh [m, 2I] +=, dact [m, I], h [m, 2I]; with s = σ(alpha·g):
 *   dh[2u]   += dact·(l + 1)·(s + alpha·g·s·(1 − s))   if h[2u] <= limit
 *   dh[2u+1] += dact·g·s                               if −limit <= h[2u+1] <= limit
 * ops.h's convention (torch.clamp's until 2026): the gradient passes at the
 * boundaries themselves and is zero strictly outside (and for NaN inputs). */
static inline void mxl_ref_swiglu_bwd(mxl_real *dh, const mxl_real *dact, const mxl_real *h,
                                      int m, int I, mxl_acc alpha, mxl_acc limit) {
  for (int i = 0; i < m; i++)
    for (int u = 0; u < I; u++) {
      size_t gi = (size_t)i * 2 * I + 2 * u;
      mxl_acc hg = h[gi], hl = h[gi + 1], da = dact[(size_t)i * I + u];
      mxl_acc g = mxl_ref_clamp_hi(hg, limit), l = mxl_ref_clamp(hl, -limit, limit);
      mxl_acc s = mxl_ref_sigmoid(alpha * g);
      if (hg <= limit) dh[gi] += (mxl_real)(da * (l + 1.0) * (s + alpha * g * s * (1.0 - s)));
      if (hl >= -limit && hl <= limit) dh[gi + 1] += (mxl_real)(da * g * s);
    }
}

/* out[t] += Σ_r weights[t, r]·ys[slot[t*k + r]] — out [n, H], ys [m, H],
 * weights [n, k], slot [n*k] */
static inline void mxl_ref_moe_combine(mxl_real *out, const mxl_real *ys, const int32_t *slot,
                                       const mxl_real *weights, int n, int k, int H) {
  for (int t = 0; t < n; t++)
    for (int j = 0; j < H; j++) {
      mxl_acc acc = out[(size_t)t * H + j];
      for (int r = 0; r < k; r++) {
        size_t a = (size_t)t * k + r;
        acc += (mxl_acc)weights[a] * ys[(size_t)slot[a] * H + j];
      }
      out[(size_t)t * H + j] = (mxl_real)acc;
    }
}

/* Combine backward, for a = t*k + r:
 *   dys[slot[a]] += weights[a]·dout[t];  dweights[a] += dout[t]·ys[slot[a]]
 * — dys [m, H], dweights [n, k], dout [n, H], ys [m, H]. */
static inline void mxl_ref_moe_combine_bwd(mxl_real *dys, mxl_real *dweights,
                                           const mxl_real *dout, const mxl_real *ys,
                                           const int32_t *slot, const mxl_real *weights, int n,
                                           int k, int H) {
  for (int t = 0; t < n; t++)
    for (int r = 0; r < k; r++) {
      size_t a = (size_t)t * k + r, s = (size_t)slot[a];
      mxl_acc dot = 0;
      for (int j = 0; j < H; j++) {
        dys[s * H + j] += (mxl_real)((mxl_acc)weights[a] * dout[(size_t)t * H + j]);
        dot += (mxl_acc)dout[(size_t)t * H + j] * ys[s * H + j];
      }
      dweights[a] += (mxl_real)dot;
    }
}

#endif
