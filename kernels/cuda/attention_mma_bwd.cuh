/* Attention backward on tensor cores for head dims 16, 32 and 64
 * (gpt-oss): ops.h's `attention_bwd` with GQA, learned sinks and arbitrary
 * masks, as the fp32 kernels of ops_attention.cuh compute it, with bf16
 * operands and fp32 accumulation (q, k, v, dout rounded to bf16 when
 * staged; p and ds when fed to the second product of each pair). Head dim
 * 128 would need twice the registers per warp (ptxas forbids spills here):
 * it and the other head dims take the fp32 kernels. Tiles, masks and the
 * product helpers (with their fragment layouts) are attention_mma.cuh's.
 * CPU reference: kernels/ref/ref_attention.h mxl_ref_attention_bwd.
 *
 * With p_ij = exp(scale·q_i·k_j − lse_i) over allowed pairs (lse includes
 * the sink, which has no gradient: sinks are frozen) and
 * D_i = dout_i·out_i (ops_attention.cuh's fp32 delta kernel):
 *   dp_ij = dout_i·v_j,  ds_ij = p_ij·(dp_ij − D_i),
 *   dq_i += scale·Σ_j ds_ij·k_j,  dk_j += scale·Σ_i ds_ij·q_i,
 *   dv_j += Σ_i p_ij·dout_i.
 * Two kernels, no atomics (every run gives the same bits):
 *   dq   a block of 4 warps per (64 queries, head); a warp keeps its 16
 *        rows of Q and dO as A fragments, and per 64-key tile computes
 *        S = Q·Kᵀ, dP = dO·Vᵀ, then dQ += dS·K (K through ldmatrix.trans);
 *   dkv  a block per (64 keys, KV head), K and V staged once; per 64-query
 *        tile and query head of the group a warp computes, for its 16
 *        keys, Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ, then dV += Pᵀ·dO and dK += dSᵀ·Q
 *        (dO and Q through ldmatrix.trans).
 * Tiles where no (query, key) pair is allowed are skipped before loading. */
#ifndef MXL_KERNELS_CUDA_ATTENTION_MMA_BWD_CUH
#define MXL_KERNELS_CUDA_ATTENTION_MMA_BWD_CUH

#include "kernels/cuda/attention_mma.cuh"

/* True for the head dims the tensor-core backward is built for. */
static inline bool mxl_amma_bwd_head_dim(int d) { return d == 16 || d == 32 || d == 64; }

/* Everything the backward kernels read; shapes as ops.h's attention_bwd. */
struct mxl_amma_bwd_args {
  const float *q, *k, *v, *dout;
  const float *lse, *delta; /* [nq, nh] */
  mxl_attn_mask mask;
  int nq, nk, nh, nkv;
  float scale;
};

/* p and ds of one element of S (or Sᵀ) in place: s becomes p, dp becomes
 * ds; both 0 where the pair is not allowed. */
MXL_DEVICE void mxl_amma_grads(float *s, float *dp, bool allowed, float scale, float lse,
                               float delta) {
  float p = allowed ? expf(scale * *s - lse) : 0.0f;
  *dp = allowed ? p * (*dp - delta) : 0.0f;
  *s = p;
}

/* dq += scale·dS·K, one block per (64 queries, head). */
template <int D>
MXL_GLOBAL void mxl_attention_dq_mma_kernel(mxl_amma_bwd_args a, float *dq) {
  MXL_SHARED mxl_amma_tile<D> ta, tb; /* Q and dO, then K and V */
  MXL_SHARED mxl_amma_mask m;
  const int t = (int)MXL_THREAD_X, lane = t % 32, warp = t / 32;
  const int g = lane / 4, tig = lane % 4;
  const int h = (int)(MXL_BLOCK_X % a.nh), i0 = (int)(MXL_BLOCK_X / a.nh) * MXL_AMMA_BQ;
  const int kvh = h / (a.nh / a.nkv), row0 = warp * 16;

  mxl_amma_load<D>(ta, a.q, i0, MXL_AMMA_BQ, a.nq, a.nh, h);
  mxl_amma_load<D>(tb, a.dout, i0, MXL_AMMA_BQ, a.nq, a.nh, h);
  mxl_amma_load_mask(m.qpos, m.qseg, m.qok, a.mask.q_pos, a.mask.q_seg, i0, MXL_AMMA_BQ, a.nq);
  MXL_SYNC();
  uint32_t qf[D / 16][4], dof[D / 16][4];
  mxl_amma_a_frags<D>(qf, ta, row0);
  mxl_amma_a_frags<D>(dof, tb, row0);
  float lse[2], delta[2]; /* of rows g and g + 8 */
  MXL_UNROLL for (int hr = 0; hr < 2; hr++) {
    const int64_t i = i0 + row0 + g + 8 * hr;
    lse[hr] = i < a.nq ? a.lse[i * a.nh + h] : 0.0f;
    delta[hr] = i < a.nq ? a.delta[i * a.nh + h] : 0.0f;
  }
  float acc[D / 8][4];
  mxl_amma_zero<D / 8>(acc);

  for (int j0 = 0; j0 < a.nk; j0 += MXL_AMMA_BK) {
    MXL_SYNC(); /* the previous tiles (or Q, dO) are consumed */
    mxl_amma_load_mask(m.kpos, m.kseg, m.kok, a.mask.k_pos, a.mask.k_seg, j0, MXL_AMMA_BK, a.nk);
    mxl_amma_mark_any(m, a.mask.window);
    if (!m.any) continue;
    mxl_amma_load<D>(ta, a.k, j0, MXL_AMMA_BK, a.nk, a.nkv, kvh);
    mxl_amma_load<D>(tb, a.v, j0, MXL_AMMA_BK, a.nk, a.nkv, kvh);
    MXL_SYNC();
    float s[8][4], dp[8][4];
    mxl_amma_zero<8>(s);
    mxl_amma_zero<8>(dp);
    mxl_amma_abt<D>(s, qf, ta);
    mxl_amma_abt<D>(dp, dof, tb);
    MXL_UNROLL for (int nj = 0; nj < 8; nj++) MXL_UNROLL for (int i = 0; i < 4; i++) {
      const int r = row0 + g + (i >= 2 ? 8 : 0), c = nj * 8 + 2 * tig + (i & 1);
      mxl_amma_grads(&s[nj][i], &dp[nj][i], m.allowed(r, c, a.mask.window), a.scale, lse[i / 2],
                     delta[i / 2]);
    }
    mxl_amma_pb<D>(acc, dp, ta); /* dQ += dS·K */
  }
  MXL_UNROLL for (int hr = 0; hr < 2; hr++) {
    const int64_t i = i0 + row0 + g + 8 * hr;
    if (i >= a.nq) continue;
    float *dst = dq + (i * a.nh + h) * D;
    MXL_UNROLL for (int nd = 0; nd < D / 8; nd++) {
      dst[nd * 8 + 2 * tig] += a.scale * acc[nd][2 * hr];
      dst[nd * 8 + 2 * tig + 1] += a.scale * acc[nd][2 * hr + 1];
    }
  }
}

/* dk += scale·dSᵀ·Q, dv += Pᵀ·dO, one block per (64 keys, KV head), over
 * every query tile and every query head of the group. */
template <int D>
MXL_GLOBAL void mxl_attention_dkv_mma_kernel(mxl_amma_bwd_args a, float *dk, float *dv) {
  MXL_SHARED mxl_amma_tile<D> tk, tv, ta, tb; /* K, V; Q and dO of a query tile */
  MXL_SHARED mxl_amma_mask m;
  MXL_SHARED float lse_s[MXL_AMMA_BQ], delta_s[MXL_AMMA_BQ];
  const int t = (int)MXL_THREAD_X, lane = t % 32, warp = t / 32;
  const int g = lane / 4, tig = lane % 4;
  const int kvh = (int)(MXL_BLOCK_X % a.nkv), j0 = (int)(MXL_BLOCK_X / a.nkv) * MXL_AMMA_BK;
  const int group = a.nh / a.nkv, row0 = warp * 16;

  mxl_amma_load<D>(tk, a.k, j0, MXL_AMMA_BK, a.nk, a.nkv, kvh);
  mxl_amma_load<D>(tv, a.v, j0, MXL_AMMA_BK, a.nk, a.nkv, kvh);
  mxl_amma_load_mask(m.kpos, m.kseg, m.kok, a.mask.k_pos, a.mask.k_seg, j0, MXL_AMMA_BK, a.nk);
  float acc_k[D / 8][4], acc_v[D / 8][4];
  mxl_amma_zero<D / 8>(acc_k);
  mxl_amma_zero<D / 8>(acc_v);

  for (int i0 = 0; i0 < a.nq; i0 += MXL_AMMA_BQ) {
    MXL_SYNC(); /* the previous query tile is consumed */
    mxl_amma_load_mask(m.qpos, m.qseg, m.qok, a.mask.q_pos, a.mask.q_seg, i0, MXL_AMMA_BQ, a.nq);
    mxl_amma_mark_any(m, a.mask.window);
    if (!m.any) continue;
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
      MXL_SYNC(); /* the previous head's tiles are consumed */
      mxl_amma_load<D>(ta, a.q, i0, MXL_AMMA_BQ, a.nq, a.nh, h);
      mxl_amma_load<D>(tb, a.dout, i0, MXL_AMMA_BQ, a.nq, a.nh, h);
      for (int r = t; r < MXL_AMMA_BQ; r += MXL_AMMA_THREADS) {
        const bool valid = i0 + r < a.nq;
        lse_s[r] = valid ? a.lse[(int64_t)(i0 + r) * a.nh + h] : 0.0f;
        delta_s[r] = valid ? a.delta[(int64_t)(i0 + r) * a.nh + h] : 0.0f;
      }
      MXL_SYNC();
      float st[8][4], dpt[8][4]; /* Sᵀ and dPᵀ: the warp's 16 keys x 64 queries */
      mxl_amma_zero<8>(st);
      mxl_amma_zero<8>(dpt);
      mxl_amma_abt<D>(st, tk, row0, ta);
      mxl_amma_abt<D>(dpt, tv, row0, tb);
      MXL_UNROLL for (int nj = 0; nj < 8; nj++) MXL_UNROLL for (int i = 0; i < 4; i++) {
        const int key = row0 + g + (i >= 2 ? 8 : 0), query = nj * 8 + 2 * tig + (i & 1);
        mxl_amma_grads(&st[nj][i], &dpt[nj][i], m.allowed(query, key, a.mask.window), a.scale,
                       lse_s[query], delta_s[query]);
      }
      mxl_amma_pb<D>(acc_v, st, tb);  /* dV += Pᵀ·dO */
      mxl_amma_pb<D>(acc_k, dpt, ta); /* dK += dSᵀ·Q */
    }
  }
  MXL_UNROLL for (int hr = 0; hr < 2; hr++) {
    const int64_t j = j0 + row0 + g + 8 * hr;
    if (j >= a.nk) continue;
    float *dkj = dk + (j * a.nkv + kvh) * D, *dvj = dv + (j * a.nkv + kvh) * D;
    MXL_UNROLL for (int nd = 0; nd < D / 8; nd++) MXL_UNROLL for (int e = 0; e < 2; e++) {
      dkj[nd * 8 + 2 * tig + e] += a.scale * acc_k[nd][2 * hr + e];
      dvj[nd * 8 + 2 * tig + e] += acc_v[nd][2 * hr + e];
    }
  }
}

template <int D>
static bool mxl_cu_attention_bwd_mma_d(mxl_backend *be, const mxl_amma_bwd_args &a, float *dq,
                                       float *dk, float *dv) {
  mxl_cu_stream stream = mxl_cu_state(be)->stream;
  int64_t q_blocks = (int64_t)((a.nq + MXL_AMMA_BQ - 1) / MXL_AMMA_BQ) * a.nh;
  int64_t k_blocks = (int64_t)((a.nk + MXL_AMMA_BK - 1) / MXL_AMMA_BK) * a.nkv;
  return mxl_cu_launched(be, "attention_bwd",
                         MXL_LAUNCH(mxl_attention_dq_mma_kernel<D>, (unsigned)q_blocks,
                                    MXL_AMMA_THREADS, 0, stream, a, dq)) &&
         mxl_cu_launched(be, "attention_bwd",
                         MXL_LAUNCH(mxl_attention_dkv_mma_kernel<D>, (unsigned)k_blocks,
                                    MXL_AMMA_THREADS, 0, stream, a, dk, dv));
}

/* The backward's products on tensor cores, given delta; the caller checked
 * mxl_amma_bwd_head_dim(d). */
static bool mxl_cu_attention_bwd_mma(mxl_backend *be, const mxl_amma_bwd_args &a, int d,
                                     float *dq, float *dk, float *dv) {
  switch (d) {
    case 16: return mxl_cu_attention_bwd_mma_d<16>(be, a, dq, dk, dv);
    case 32: return mxl_cu_attention_bwd_mma_d<32>(be, a, dq, dk, dv);
    default: return mxl_cu_attention_bwd_mma_d<64>(be, a, dq, dk, dv);
  }
}

#endif
