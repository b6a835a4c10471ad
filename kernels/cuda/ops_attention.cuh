/* CUDA ops, attention with GQA, learned sinks and segment / causal /
 * sliding-window masks (kernels/ops.h `attention`, `attention_bwd`).
 * CPU reference: kernels/ref/ref_attention.h (mxl_ref_attention,
 * mxl_ref_attention_bwd).
 *
 * Shapes: q [nq, nh, d], k, v [nk, nkv, d], out [nq, nh, d], lse [nq, nh],
 * sinks bf16 [nh]; query head h reads KV head h / (nh/nkv); d <= 128.
 * Tensor cores, bf16 operands and fp32 accumulation: the forward at head
 * dims 16, 32, 64 (gpt-oss) and 128 (attention_mma.cuh), the backward's
 * products at 16, 32 and 64 (attention_mma_bwd.cuh). Other head dims run
 * the fp32 kernels below, which are also the reading of the algorithm.
 *
 * Forward: one block per (16 queries, head), streaming 32-key tiles
 * through shared memory with an online softmax that starts from the sink:
 * running max m = sink_h and running sum l = exp(sink_h − m) = 1 before the
 * first key, so the sink is one more logit without a value, exactly ops.h's
 * p_ij = exp(s_ij) / (exp(sink_h) + Σ exp(s_ij')). A query with no allowed
 * key ends with out = 0 and lse = sink_h, as the reference.
 *
 * Masks are arbitrary (packed segments, ring-ordered KV caches), so every
 * key tile is visited, but a tile none of whose pairs is allowed is skipped
 * after the cheap position/segment test, before K and V are loaded.
 *
 * Backward, without atomics (the result is the same on every run):
 *   D_i = dout_i·out_i                      one thread per (query, head);
 *   dq_i += scale·Σ_j ds_ij·k_j             one block per (8 queries, head);
 *   dk_j += scale·Σ ds_ij·q_i, dv_j += Σ p_ij·dout_i
 *                                           one block per (32 keys, KV head),
 *                                           over every query tile and every
 *                                           query head of the group;
 * with p_ij = exp(s_ij − lse_i) recomputed and ds_ij = p_ij·(dout_i·v_j − D_i). */
#ifndef MXL_KERNELS_CUDA_OPS_ATTENTION_CUH
#define MXL_KERNELS_CUDA_OPS_ATTENTION_CUH

#include "kernels/cuda/attention_mma_bwd.cuh"
#include "kernels/cuda/cudnn_attention.cuh"
#include "kernels/cuda/runtime.cuh"

enum {
  MXL_ATT_DMAX = 128,             /* largest head dim (gpt-oss: 64) */
  MXL_ATT_DP = MXL_ATT_DMAX + 1,  /* shared row stride: rows start in different banks */
  MXL_ATT_BK = 32,                /* keys per tile */
  MXL_ATT_FWD_BQ = 16,            /* queries per forward block */
  MXL_ATT_FWD_THREADS = 128,      /* 8 threads per query row */
  MXL_ATT_BWD_BQ = 8,             /* queries per backward tile */
  MXL_ATT_DQ_THREADS = 128,       /* 16 threads per query row */
  MXL_ATT_DKV_THREADS = 256,      /* 8 threads per key row */
};

/* Everything the attention kernels read; shapes in the file comment. */
struct mxl_att_args {
  const float *q, *k, *v;
  const uint16_t *sinks;
  mxl_attn_mask mask;
  int nq, nk, nh, nkv, d;
  float scale;
};

/* The mask rule of ops.h for one (query, key) pair. */
MXL_DEVICE bool mxl_att_allowed(int q_pos, int q_seg, int k_pos, int k_seg, int window) {
  return k_seg == q_seg && k_pos <= q_pos && (window == 0 || q_pos - k_pos < window);
}

/* Positions and segments of a query tile and a key tile, staged in shared
 * memory (rows past the end: ok = 0), and whether any pair is allowed. */
template <int BQ, int BK>
struct mxl_att_tile_mask {
  int qpos[BQ], qseg[BQ], qok[BQ], kpos[BK], kseg[BK], kok[BK];
  int any; /* some pair of the two tiles is allowed */

  MXL_DEVICE bool allowed(int ii, int jj, int window) const {
    return qok[ii] && kok[jj] && mxl_att_allowed(qpos[ii], qseg[ii], kpos[jj], kseg[jj], window);
  }
};

/* Rows first.. of `total` into pos / seg / ok [count], by the first `count`
 * threads. */
MXL_DEVICE void mxl_att_load_mask(int *pos, int *seg, int *ok, const int32_t *all_pos,
                                  const int32_t *all_seg, int first, int count, int total) {
  int t = (int)MXL_THREAD_X;
  if (t < count) {
    int valid = first + t < total;
    ok[t] = valid;
    pos[t] = valid ? all_pos[first + t] : 0;
    seg[t] = valid ? all_seg[first + t] : 0;
  }
}

/* Sets m->any, which thread 0 zeroed before the caller's last barrier: every
 * thread tests its share of the pairs and ORs the answer in. The caller
 * reads m->any after a barrier. */
template <int THREADS, int BQ, int BK>
MXL_DEVICE void mxl_att_mark_any(mxl_att_tile_mask<BQ, BK> *m, int window) {
  bool mine = false;
  for (int l = (int)MXL_THREAD_X; l < BQ * BK; l += THREADS)
    mine |= m->allowed(l / BK, l % BK, window);
  if (mine) mxl_atomic_or(&m->any, 1);
}

/* rows x d values of head `head` (of `heads`) starting at row `first` of
 * `total` into a shared tile with row stride MXL_ATT_DP; zeros past the end. */
template <int THREADS>
MXL_DEVICE void mxl_att_load_rows(float *tile, const float *src, int first, int rows, int total,
                                  int heads, int head, int d) {
  for (int l = (int)MXL_THREAD_X; l < rows * d; l += THREADS) {
    int r = l / d, c = l % d;
    tile[r * MXL_ATT_DP + c] =
        first + r < total ? src[((int64_t)(first + r) * heads + head) * d + c] : 0.0f;
  }
}

/* Σ_c a[c]·b[c] over two shared rows. */
MXL_DEVICE float mxl_att_dot(const float *a, const float *b, int d) {
  float s = 0.0f;
  for (int c = 0; c < d; c++) s = fmaf(a[c], b[c], s);
  return s;
}

/* ---------------------------------------------------------------- forward */

MXL_GLOBAL void mxl_attention_kernel(mxl_att_args a, float *out, float *lse) {
  enum { BQ = MXL_ATT_FWD_BQ, BK = MXL_ATT_BK, THREADS = MXL_ATT_FWD_THREADS, DP = MXL_ATT_DP };
  enum { LANES = THREADS / BQ, COLS = MXL_ATT_DMAX / LANES };
  MXL_SHARED float qs[BQ * DP], ks[BK * DP], vs[BK * DP];
  MXL_SHARED float ps[BQ][BK + 1]; /* scores, then probabilities of the tile */
  MXL_SHARED float row_m[BQ], row_l[BQ], row_scale[BQ];
  MXL_SHARED mxl_att_tile_mask<BQ, BK> m;
  const int t = (int)MXL_THREAD_X, r = t / LANES, lane = t % LANES;
  const int h = (int)(MXL_BLOCK_X % a.nh), i0 = (int)(MXL_BLOCK_X / a.nh) * BQ;
  const int g = h / (a.nh / a.nkv), d = a.d;

  mxl_att_load_rows<THREADS>(qs, a.q, i0, BQ, a.nq, a.nh, h, d);
  mxl_att_load_mask(m.qpos, m.qseg, m.qok, a.mask.q_pos, a.mask.q_seg, i0, BQ, a.nq);
  if (t < BQ) {
    row_m[t] = mxl_cu_bf16(a.sinks[h]); /* the sink is the first logit */
    row_l[t] = 1.0f;
  }
  float acc[COLS];
  MXL_UNROLL for (int u = 0; u < COLS; u++) acc[u] = 0.0f;

  for (int j0 = 0; j0 < a.nk; j0 += BK) {
    MXL_SYNC(); /* the previous tile is consumed */
    mxl_att_load_mask(m.kpos, m.kseg, m.kok, a.mask.k_pos, a.mask.k_seg, j0, BK, a.nk);
    if (t == 0) m.any = 0;
    MXL_SYNC();
    mxl_att_mark_any<THREADS>(&m, a.mask.window);
    MXL_SYNC();
    if (!m.any) continue; /* the same for every thread */
    mxl_att_load_rows<THREADS>(ks, a.k, j0, BK, a.nk, a.nkv, g, d);
    mxl_att_load_rows<THREADS>(vs, a.v, j0, BK, a.nk, a.nkv, g, d);
    MXL_SYNC();
    for (int l = t; l < BQ * BK; l += THREADS) {
      int ii = l / BK, jj = l % BK;
      ps[ii][jj] = m.allowed(ii, jj, a.mask.window)
                       ? a.scale * mxl_att_dot(&qs[ii * DP], &ks[jj * DP], d)
                       : -INFINITY;
    }
    MXL_SYNC();
    if (t < BQ) { /* the online softmax of row t over this tile */
      float m_old = row_m[t], mx = m_old;
      for (int jj = 0; jj < BK; jj++) mx = ps[t][jj] > mx ? ps[t][jj] : mx;
      float rescale = expf(m_old - mx), l = row_l[t] * rescale;
      for (int jj = 0; jj < BK; jj++) {
        float p = ps[t][jj] == -INFINITY ? 0.0f : expf(ps[t][jj] - mx);
        ps[t][jj] = p;
        l += p;
      }
      row_m[t] = mx;
      row_l[t] = l;
      row_scale[t] = rescale;
    }
    MXL_SYNC();
    float rescale = row_scale[r];
    MXL_UNROLL for (int u = 0; u < COLS; u++) {
      int c = lane + LANES * u;
      if (c < d) {
        float s = acc[u] * rescale;
        for (int jj = 0; jj < BK; jj++) s = fmaf(ps[r][jj], vs[jj * DP + c], s);
        acc[u] = s;
      }
    }
  }
  MXL_SYNC(); /* row_m / row_l are final (also when no tile ran) */
  int64_t i = i0 + r;
  if (i < a.nq) {
    float l = row_l[r];
    MXL_UNROLL for (int u = 0; u < COLS; u++) {
      int c = lane + LANES * u;
      if (c < d) out[(i * a.nh + h) * d + c] = acc[u] / l;
    }
    if (lane == 0 && lse) lse[i * a.nh + h] = row_m[r] + logf(l);
  }
}

/* True when the shapes fit the kernels; otherwise records why. */
static bool mxl_cu_attention_fits(mxl_backend *be, const char *op, int nh, int nkv, int d) {
  if (d > MXL_ATT_DMAX) {
    mxl_cu_fail(be, MXL_ERR_UNSUPPORTED, op, "head dim %d is above the CUDA kernels' limit of %d",
                d, (int)MXL_ATT_DMAX);
    return false;
  }
  if (nkv <= 0 || nh % nkv != 0) {
    mxl_cu_fail(be, MXL_ERR_ARGUMENT, op, "%d query heads are not a multiple of %d KV heads", nh,
                nkv);
    return false;
  }
  return true;
}

static void mxl_cu_attention(mxl_backend *be, float *out, float *lse, const float *q,
                             const float *k, const float *v, const uint16_t *sinks,
                             const mxl_attn_mask *mask, int nq, int nk, int nh, int nkv, int d,
                             float scale) {
  if (nq <= 0 || nh <= 0 || d <= 0 || !mxl_cu_attention_fits(be, "attention", nh, nkv, d)) return;
  /* cuDNN where the backend has it and the shape is supported (cudnn_attention.cuh) */
  if (mxl_cu_dnn_attention(be, out, lse, q, k, v, sinks, mask, nq, nk, nh, nkv, d, scale)) return;
  if (mxl_amma_head_dim(d)) { /* tensor cores (attention_mma.cuh) */
    mxl_cu_attention_mma(be, out, lse, q, k, v, sinks, mask, nq, nk, nh, nkv, d, scale);
    return;
  }
  mxl_att_args a = {q, k, v, sinks, *mask, nq, nk, nh, nkv, d, scale};
  int64_t blocks = (int64_t)((nq + MXL_ATT_FWD_BQ - 1) / MXL_ATT_FWD_BQ) * nh;
  mxl_cu_launched(be, "attention",
                  MXL_LAUNCH(mxl_attention_kernel, (unsigned)blocks, MXL_ATT_FWD_THREADS, 0,
                             mxl_cu_state(be)->stream, a, out, lse));
}

/* ---------------------------------------------------------------- backward */

/* D [nq, nh] = Σ_c dout·out, one thread per (query, head). */
MXL_GLOBAL void mxl_attention_delta_kernel(float *D, const float *dout, const float *out,
                                           int64_t rows, int d) {
  MXL_FOR_EACH(row, rows) {
    float s = 0.0f;
    for (int c = 0; c < d; c++) s = fmaf(dout[row * d + c], out[row * d + c], s);
    D[row] = s;
  }
}

/* The backward's extra inputs. */
struct mxl_att_bwd_args {
  const float *dout, *lse, *D;
};

/* p and ds of one allowed pair: query row qi/doi (shared), key row kj/vj. */
MXL_DEVICE void mxl_att_pair_grads(float *p, float *ds, const float *qi, const float *doi,
                                   const float *kj, const float *vj, float lse_i, float D_i,
                                   int d, float scale) {
  float s = scale * mxl_att_dot(qi, kj, d);
  *p = expf(s - lse_i);
  *ds = *p * (mxl_att_dot(doi, vj, d) - D_i);
}

/* dq += scale·Σ_j ds_ij·k_j, one block per (8 queries, head). */
MXL_GLOBAL void mxl_attention_dq_kernel(mxl_att_args a, mxl_att_bwd_args b, float *dq) {
  enum { BQ = MXL_ATT_BWD_BQ, BK = MXL_ATT_BK, THREADS = MXL_ATT_DQ_THREADS, DP = MXL_ATT_DP };
  enum { LANES = THREADS / BQ, COLS = MXL_ATT_DMAX / LANES };
  MXL_SHARED float qs[BQ * DP], dos[BQ * DP], ks[BK * DP], vs[BK * DP];
  MXL_SHARED float dss[BQ][BK + 1];
  MXL_SHARED float lse_s[BQ], D_s[BQ];
  MXL_SHARED mxl_att_tile_mask<BQ, BK> m;
  const int t = (int)MXL_THREAD_X, r = t / LANES, lane = t % LANES;
  const int h = (int)(MXL_BLOCK_X % a.nh), i0 = (int)(MXL_BLOCK_X / a.nh) * BQ;
  const int g = h / (a.nh / a.nkv), d = a.d;

  mxl_att_load_rows<THREADS>(qs, a.q, i0, BQ, a.nq, a.nh, h, d);
  mxl_att_load_rows<THREADS>(dos, b.dout, i0, BQ, a.nq, a.nh, h, d);
  mxl_att_load_mask(m.qpos, m.qseg, m.qok, a.mask.q_pos, a.mask.q_seg, i0, BQ, a.nq);
  if (t < BQ && i0 + t < a.nq) {
    lse_s[t] = b.lse[(int64_t)(i0 + t) * a.nh + h];
    D_s[t] = b.D[(int64_t)(i0 + t) * a.nh + h];
  }
  float acc[COLS];
  MXL_UNROLL for (int u = 0; u < COLS; u++) acc[u] = 0.0f;

  for (int j0 = 0; j0 < a.nk; j0 += BK) {
    MXL_SYNC();
    mxl_att_load_mask(m.kpos, m.kseg, m.kok, a.mask.k_pos, a.mask.k_seg, j0, BK, a.nk);
    if (t == 0) m.any = 0;
    MXL_SYNC();
    mxl_att_mark_any<THREADS>(&m, a.mask.window);
    MXL_SYNC();
    if (!m.any) continue;
    mxl_att_load_rows<THREADS>(ks, a.k, j0, BK, a.nk, a.nkv, g, d);
    mxl_att_load_rows<THREADS>(vs, a.v, j0, BK, a.nk, a.nkv, g, d);
    MXL_SYNC();
    for (int l = t; l < BQ * BK; l += THREADS) {
      int ii = l / BK, jj = l % BK;
      float p = 0.0f, ds = 0.0f;
      if (m.allowed(ii, jj, a.mask.window))
        mxl_att_pair_grads(&p, &ds, &qs[ii * DP], &dos[ii * DP], &ks[jj * DP], &vs[jj * DP],
                           lse_s[ii], D_s[ii], d, a.scale);
      dss[ii][jj] = ds;
    }
    MXL_SYNC();
    MXL_UNROLL for (int u = 0; u < COLS; u++) {
      int c = lane + LANES * u;
      if (c < d) {
        float s = acc[u];
        for (int jj = 0; jj < BK; jj++) s = fmaf(dss[r][jj], ks[jj * DP + c], s);
        acc[u] = s;
      }
    }
  }
  int64_t i = i0 + r;
  if (i < a.nq) {
    MXL_UNROLL for (int u = 0; u < COLS; u++) {
      int c = lane + LANES * u;
      if (c < d) dq[(i * a.nh + h) * d + c] += a.scale * acc[u];
    }
  }
}

/* dk += scale·Σ ds·q, dv += Σ p·dout, one block per (32 keys, KV head). */
MXL_GLOBAL void mxl_attention_dkv_kernel(mxl_att_args a, mxl_att_bwd_args b, float *dk,
                                         float *dv) {
  enum { BQ = MXL_ATT_BWD_BQ, BK = MXL_ATT_BK, THREADS = MXL_ATT_DKV_THREADS, DP = MXL_ATT_DP };
  enum { LANES = THREADS / BK, COLS = MXL_ATT_DMAX / LANES };
  MXL_SHARED float ks[BK * DP], vs[BK * DP], qs[BQ * DP], dos[BQ * DP];
  MXL_SHARED float ps[BQ][BK + 1], dss[BQ][BK + 1];
  MXL_SHARED float lse_s[BQ], D_s[BQ];
  MXL_SHARED mxl_att_tile_mask<BQ, BK> m;
  const int t = (int)MXL_THREAD_X, jr = t / LANES, lane = t % LANES;
  const int g = (int)(MXL_BLOCK_X % a.nkv), j0 = (int)(MXL_BLOCK_X / a.nkv) * BK;
  const int group = a.nh / a.nkv, d = a.d;

  mxl_att_load_rows<THREADS>(ks, a.k, j0, BK, a.nk, a.nkv, g, d);
  mxl_att_load_rows<THREADS>(vs, a.v, j0, BK, a.nk, a.nkv, g, d);
  mxl_att_load_mask(m.kpos, m.kseg, m.kok, a.mask.k_pos, a.mask.k_seg, j0, BK, a.nk);
  float acc_k[COLS], acc_v[COLS];
  MXL_UNROLL for (int u = 0; u < COLS; u++) acc_k[u] = acc_v[u] = 0.0f;

  for (int i0 = 0; i0 < a.nq; i0 += BQ) {
    MXL_SYNC();
    mxl_att_load_mask(m.qpos, m.qseg, m.qok, a.mask.q_pos, a.mask.q_seg, i0, BQ, a.nq);
    if (t == 0) m.any = 0;
    MXL_SYNC();
    mxl_att_mark_any<THREADS>(&m, a.mask.window);
    MXL_SYNC();
    if (!m.any) continue;
    for (int h = g * group; h < (g + 1) * group; h++) {
      MXL_SYNC(); /* the previous head's tiles are consumed */
      mxl_att_load_rows<THREADS>(qs, a.q, i0, BQ, a.nq, a.nh, h, d);
      mxl_att_load_rows<THREADS>(dos, b.dout, i0, BQ, a.nq, a.nh, h, d);
      if (t < BQ && i0 + t < a.nq) {
        lse_s[t] = b.lse[(int64_t)(i0 + t) * a.nh + h];
        D_s[t] = b.D[(int64_t)(i0 + t) * a.nh + h];
      }
      MXL_SYNC();
      for (int l = t; l < BQ * BK; l += THREADS) {
        int ii = l / BK, jj = l % BK;
        float p = 0.0f, ds = 0.0f;
        if (m.allowed(ii, jj, a.mask.window))
          mxl_att_pair_grads(&p, &ds, &qs[ii * DP], &dos[ii * DP], &ks[jj * DP], &vs[jj * DP],
                             lse_s[ii], D_s[ii], d, a.scale);
        ps[ii][jj] = p;
        dss[ii][jj] = ds;
      }
      MXL_SYNC();
      MXL_UNROLL for (int u = 0; u < COLS; u++) {
        int c = lane + LANES * u;
        if (c < d) {
          float sk = acc_k[u], sv = acc_v[u];
          for (int ii = 0; ii < BQ; ii++) {
            sk = fmaf(dss[ii][jr], qs[ii * DP + c], sk);
            sv = fmaf(ps[ii][jr], dos[ii * DP + c], sv);
          }
          acc_k[u] = sk;
          acc_v[u] = sv;
        }
      }
    }
  }
  int64_t j = j0 + jr;
  if (j < a.nk) {
    MXL_UNROLL for (int u = 0; u < COLS; u++) {
      int c = lane + LANES * u;
      if (c < d) {
        dk[(j * a.nkv + g) * d + c] += a.scale * acc_k[u];
        dv[(j * a.nkv + g) * d + c] += acc_v[u];
      }
    }
  }
}

static void mxl_cu_attention_bwd(mxl_backend *be, float *dq, float *dk, float *dv,
                                 const float *dout, const float *out, const float *lse,
                                 const float *q, const float *k, const float *v,
                                 const uint16_t *sinks, const mxl_attn_mask *mask, int nq, int nk,
                                 int nh, int nkv, int d, float scale) {
  if (nq <= 0 || nk <= 0 || nh <= 0 || d <= 0 ||
      !mxl_cu_attention_fits(be, "attention_bwd", nh, nkv, d))
    return;
  /* cuDNN where the backend has it and the shape is supported (cudnn_attention.cuh) */
  if (mxl_cu_dnn_attention_bwd(be, dq, dk, dv, dout, out, lse, q, k, v, mask, nq, nk, nh, nkv, d,
                               scale))
    return;
  int64_t rows = (int64_t)nq * nh;
  void *scratch = mxl_cu_scratch(be, (size_t)rows * sizeof(float), "attention_bwd");
  float *D = static_cast<float *>(scratch); /* [nq, nh] */
  if (!D) return;
  mxl_cu_stream stream = mxl_cu_state(be)->stream;
  if (!mxl_cu_launched(be, "attention_bwd",
                       MXL_LAUNCH(mxl_attention_delta_kernel,
                                  mxl_cu_grid(rows, MXL_CU_ELEMENTWISE_THREADS, MXL_CU_MAX_BLOCKS),
                                  MXL_CU_ELEMENTWISE_THREADS, 0, stream, D, dout, out, rows, d)))
    return;
  if (mxl_amma_bwd_head_dim(d)) { /* tensor cores (attention_mma_bwd.cuh) */
    mxl_amma_bwd_args a = {q, k, v, dout, lse, D, *mask, nq, nk, nh, nkv, scale};
    mxl_cu_attention_bwd_mma(be, a, d, dq, dk, dv);
    return;
  }
  mxl_att_args a = {q, k, v, sinks, *mask, nq, nk, nh, nkv, d, scale};
  mxl_att_bwd_args b = {dout, lse, D};
  int64_t q_blocks = (int64_t)((nq + MXL_ATT_BWD_BQ - 1) / MXL_ATT_BWD_BQ) * nh;
  if (!mxl_cu_launched(be, "attention_bwd",
                       MXL_LAUNCH(mxl_attention_dq_kernel, (unsigned)q_blocks,
                                  MXL_ATT_DQ_THREADS, 0, stream, a, b, dq)))
    return;
  int64_t k_blocks = (int64_t)((nk + MXL_ATT_BK - 1) / MXL_ATT_BK) * nkv;
  mxl_cu_launched(be, "attention_bwd",
                  MXL_LAUNCH(mxl_attention_dkv_kernel, (unsigned)k_blocks, MXL_ATT_DKV_THREADS,
                             0, stream, a, b, dk, dv));
}

static inline void mxl_cu_fill_attention(mxl_ops *ops) {
  ops->attention = mxl_cu_attention;
  ops->attention_bwd = mxl_cu_attention_bwd;
}

#endif
