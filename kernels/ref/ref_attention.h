/* Reference math, attention with GQA, learned sinks and segment/sliding
 * masks (kernels/ops.h `attention`, `attention_bwd`). See ref_real.h for the
 * shape legend and numerics.
 *
 * Forward, for query i, head h, KV head g = h / (nh/nkv), allowed keys j:
 *   s_ij = scale·q_i·k_j
 *   lse_i = log(exp(sink_h) + Σ_j exp(s_ij))       (sink: a logit, no value)
 *   p_ij = exp(s_ij − lse_i),  out_i = Σ_j p_ij·v_j
 * Both sums are taken after subtracting max(sink_h, max_j s_ij), in double.
 * A query with no allowed key gets out = 0 and lse = sink_h.
 *
 * Backward, with D_i = dout_i·out_i (= Σ_j p_ij·dout_i·v_j: the sink has no
 * value, so it adds nothing):
 *   dp_ij = dout_i·v_j,  ds_ij = p_ij·(dp_ij − D_i)
 *   dq_i += scale·Σ_j ds_ij·k_j
 *   dk_j += scale·Σ_{i,h→g} ds_ij·q_i,  dv_j += Σ_{i,h→g} p_ij·dout_i
 * p is recomputed from q, k and the forward's lse. */
#ifndef MXL_KERNELS_REF_ATTENTION_H
#define MXL_KERNELS_REF_ATTENTION_H

#include "kernels/ops.h"
#include "kernels/ref/ref_real.h"

/* Per-head accumulators live on the stack; the backend wrapper rejects
 * larger head dims (gpt-oss uses 64). */
enum { MXL_REF_MAX_HEAD_DIM = 512 };

/* The mask rule of ops.h: same segment, causal, within the window. */
static inline int mxl_ref_allowed(const mxl_attn_mask *mask, int i, int j) {
  if (mask->k_seg[j] != mask->q_seg[i]) return 0;
  if (mask->k_pos[j] > mask->q_pos[i]) return 0;
  return mask->window == 0 || mask->q_pos[i] - mask->k_pos[j] < mask->window;
}

/* scale·q_i·k_j for query row qi and key row kj (d values each). */
static inline mxl_acc mxl_ref_score(const mxl_real *qi, const mxl_real *kj, int d,
                                    mxl_acc scale) {
  mxl_acc dot = 0;
  for (int c = 0; c < d; c++) dot += (mxl_acc)qi[c] * kj[c];
  return scale * dot;
}

/* q [nq, nh, d], k, v [nk, nkv, d], out [nq, nh, d], sinks bf16 [nh],
 * lse [nq, nh] or NULL. */
static inline void mxl_ref_attention(mxl_real *out, mxl_real *lse, const mxl_real *q,
                                     const mxl_real *k, const mxl_real *v,
                                     const uint16_t *sinks, const mxl_attn_mask *mask, int nq,
                                     int nk, int nh, int nkv, int d, mxl_acc scale) {
  int group = nh / nkv;
  for (int i = 0; i < nq; i++)
    for (int h = 0; h < nh; h++) {
      const mxl_real *qi = q + ((size_t)i * nh + h) * d;
      int g = h / group;
      mxl_acc sink = mxl_ref_bf16(sinks[h]), mx = sink;
      for (int j = 0; j < nk; j++)
        if (mxl_ref_allowed(mask, i, j))
          mx = fmax(mx, mxl_ref_score(qi, k + ((size_t)j * nkv + g) * d, d, scale));
      mxl_acc den = exp(sink - mx), acc[MXL_REF_MAX_HEAD_DIM] = {0};
      for (int j = 0; j < nk; j++) {
        if (!mxl_ref_allowed(mask, i, j)) continue;
        const mxl_real *vj = v + ((size_t)j * nkv + g) * d;
        mxl_acc e = exp(mxl_ref_score(qi, k + ((size_t)j * nkv + g) * d, d, scale) - mx);
        den += e;
        for (int c = 0; c < d; c++) acc[c] += e * vj[c];
      }
      for (int c = 0; c < d; c++) out[((size_t)i * nh + h) * d + c] = (mxl_real)(acc[c] / den);
      if (lse) lse[(size_t)i * nh + h] = (mxl_real)(mx + log(den));
    }
}

/* p_ij = exp(s_ij − lse_i) and ds_ij = p_ij·(dout_i·v_j − D_i) for query
 * row (i, h) and key row (j, g); D_i = dout_i·out_i. */
static inline void mxl_ref_attn_probs(mxl_acc *p, mxl_acc *ds, const mxl_real *qi,
                                      const mxl_real *kj, const mxl_real *vj,
                                      const mxl_real *douti, const mxl_real *outi,
                                      mxl_acc lse_i, int d, mxl_acc scale) {
  mxl_acc dp = 0, D = 0;
  for (int c = 0; c < d; c++) {
    dp += (mxl_acc)douti[c] * vj[c];
    D += (mxl_acc)douti[c] * outi[c];
  }
  *p = exp(mxl_ref_score(qi, kj, d, scale) - lse_i);
  *ds = *p * (dp - D);
}

/* dq, dk, dv += the attention backward — shapes as the forward; out and lse
 * are the forward's. Two loop nests: queries (dq), then keys (dk, dv), so
 * that each gradient row is one double accumulation. */
static inline void mxl_ref_attention_bwd(mxl_real *dq, mxl_real *dk, mxl_real *dv,
                                         const mxl_real *dout, const mxl_real *out,
                                         const mxl_real *lse, const mxl_real *q,
                                         const mxl_real *k, const mxl_real *v,
                                         const mxl_attn_mask *mask, int nq, int nk, int nh,
                                         int nkv, int d, mxl_acc scale) {
  int group = nh / nkv;
  for (int i = 0; i < nq; i++)
    for (int h = 0; h < nh; h++) {
      size_t row = (size_t)i * nh + h;
      int g = h / group;
      mxl_acc acc[MXL_REF_MAX_HEAD_DIM] = {0};
      for (int j = 0; j < nk; j++) {
        if (!mxl_ref_allowed(mask, i, j)) continue;
        const mxl_real *kj = k + ((size_t)j * nkv + g) * d, *vj = v + ((size_t)j * nkv + g) * d;
        mxl_acc p, ds;
        mxl_ref_attn_probs(&p, &ds, q + row * d, kj, vj, dout + row * d, out + row * d,
                           lse[row], d, scale);
        for (int c = 0; c < d; c++) acc[c] += ds * kj[c];
      }
      for (int c = 0; c < d; c++) dq[row * d + c] += (mxl_real)(scale * acc[c]);
    }
  for (int j = 0; j < nk; j++)
    for (int g = 0; g < nkv; g++) {
      size_t kv = (size_t)j * nkv + g;
      mxl_acc acck[MXL_REF_MAX_HEAD_DIM] = {0}, accv[MXL_REF_MAX_HEAD_DIM] = {0};
      for (int i = 0; i < nq; i++) {
        if (!mxl_ref_allowed(mask, i, j)) continue;
        for (int h = g * group; h < (g + 1) * group; h++) {
          size_t row = (size_t)i * nh + h;
          mxl_acc p, ds;
          mxl_ref_attn_probs(&p, &ds, q + row * d, k + kv * d, v + kv * d, dout + row * d,
                             out + row * d, lse[row], d, scale);
          for (int c = 0; c < d; c++) {
            acck[c] += ds * q[row * d + c];
            accv[c] += p * dout[row * d + c];
          }
        }
      }
      for (int c = 0; c < d; c++) {
        dk[kv * d + c] += (mxl_real)(scale * acck[c]);
        dv[kv * d + c] += (mxl_real)(accv[c]);
      }
    }
}

#endif
