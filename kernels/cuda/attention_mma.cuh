/* Attention forward on tensor cores for head dim 64 (gpt-oss): ops.h's
 * `attention` with GQA, learned sinks and arbitrary masks, as the fp32
 * kernel of ops_attention.cuh computes it, with bf16 operands and fp32
 * accumulation (ops.h's activation dtype: q, k, v are rounded to bf16 when
 * staged, the probabilities when fed to P·V). Other head dims take the fp32
 * kernel. CPU reference: kernels/ref/ref_attention.h mxl_ref_attention.
 *
 * A block of 4 warps takes 64 queries of one head; each warp owns 16 query
 * rows for the whole key loop (flash-attention style, all in registers):
 *   S = Q·Kᵀ     per 64-key tile: 8 n-tiles x 4 k-steps of mma.sync
 *                m16n8k16, Q fragments loaded once, K through ldmatrix;
 *   mask, scale  per element, from the positions and segments of the tile
 *                (ops.h's rule), so packed segments and KV-cache rings work;
 *   softmax      online, per row: the quad of lanes that shares a row
 *                reduces its max with two xor shuffles; the sink starts
 *                each row as a logit without a value (m = sink, l = 1), so
 *                p = exp(s) / (exp(sink) + Σ exp(s')) as ops.h states;
 *   O += P·V     P straight from the S accumulators (the C fragment of two
 *                adjacent n8 tiles is the A fragment of one k16 step), V
 *                through ldmatrix.trans.
 * Key tiles where no (query, key) pair is allowed are skipped before K and
 * V are loaded. A row with no allowed key ends with out = 0, lse = sink. */
#ifndef MXL_KERNELS_CUDA_ATTENTION_MMA_CUH
#define MXL_KERNELS_CUDA_ATTENTION_MMA_CUH

#include "kernels/cuda/runtime.cuh"
#include "kernels/cuda/warp.cuh"

enum {
  MXL_AMMA_D = 64,        /* head dim of this kernel */
  MXL_AMMA_BQ = 64,       /* queries per block: 16 per warp */
  MXL_AMMA_BK = 64,       /* keys per tile */
  MXL_AMMA_THREADS = 128,
  MXL_AMMA_LD = 36,       /* shared row stride in 32-bit words (64 bf16 + 8 pad) */
};

/* bf16 tiles as pairs per word (low half first), rows padded so that the
 * eight 16-byte rows of an ldmatrix fall in distinct banks. */
struct alignas(16) mxl_amma_smem {
  uint32_t q[MXL_AMMA_BQ][MXL_AMMA_LD];
  uint32_t k[MXL_AMMA_BK][MXL_AMMA_LD];
  uint32_t v[MXL_AMMA_BK][MXL_AMMA_LD];
  int qpos[MXL_AMMA_BQ], qseg[MXL_AMMA_BQ], qok[MXL_AMMA_BQ];
  int kpos[MXL_AMMA_BK], kseg[MXL_AMMA_BK], kok[MXL_AMMA_BK];
  int any;
};

/* rows x 64 values of head `head` from row `first` (of `total`) as bf16
 * pairs; zeros past the end. */
MXL_DEVICE void mxl_amma_load(uint32_t (*tile)[MXL_AMMA_LD], const float *src, int first,
                              int rows, int total, int heads, int head) {
  for (int l = (int)MXL_THREAD_X; l < rows * 32; l += MXL_AMMA_THREADS) {
    int r = l / 32, c = 2 * (l % 32);
    float a = 0.0f, b = 0.0f;
    if (first + r < total) {
      const float *p = src + ((int64_t)(first + r) * heads + head) * MXL_AMMA_D + c;
      a = p[0];
      b = p[1];
    }
    tile[r][c / 2] = mxl_pack_bf16x2(a, b);
  }
}

MXL_DEVICE void mxl_amma_load_mask(int *pos, int *seg, int *ok, const int32_t *all_pos,
                                   const int32_t *all_seg, int first, int count, int total) {
  for (int t = (int)MXL_THREAD_X; t < count; t += MXL_AMMA_THREADS) {
    int valid = first + t < total;
    ok[t] = valid;
    pos[t] = valid ? all_pos[first + t] : 0;
    seg[t] = valid ? all_seg[first + t] : 0;
  }
}

MXL_DEVICE bool mxl_amma_allowed(const mxl_amma_smem &s, int i, int j, int window) {
  return s.qok[i] && s.kok[j] && s.kseg[j] == s.qseg[i] && s.kpos[j] <= s.qpos[i] &&
         (window == 0 || s.qpos[i] - s.kpos[j] < window);
}

/* q [nq, nh, 64], k, v [nk, nkv, 64], out [nq, nh, 64], lse [nq, nh] or NULL. */
MXL_GLOBAL void mxl_attention_mma_kernel(const float *q, const float *k, const float *v,
                                         const uint16_t *sinks, mxl_attn_mask mask, int nq,
                                         int nk, int nh, int nkv, float scale, float *out,
                                         float *lse) {
  MXL_SHARED mxl_amma_smem s;
  const int t = (int)MXL_THREAD_X, lane = t % 32, warp = t / 32;
  const int g = lane / 4, tig = lane % 4, quad = lane / 8, r8 = lane % 8;
  const int h = (int)(MXL_BLOCK_X % nh), i0 = (int)(MXL_BLOCK_X / nh) * MXL_AMMA_BQ;
  const int kvh = h / (nh / nkv), row0 = warp * 16; /* this warp's rows in the tile */

  mxl_amma_load(s.q, q, i0, MXL_AMMA_BQ, nq, nh, h);
  mxl_amma_load_mask(s.qpos, s.qseg, s.qok, mask.q_pos, mask.q_seg, i0, MXL_AMMA_BQ, nq);
  MXL_SYNC();
  uint32_t qf[4][4]; /* A fragments of the warp's 16 rows, 4 k-steps over d */
  MXL_UNROLL for (int ks = 0; ks < 4; ks++)
    mxl_ldmatrix_x4(qf[ks], &s.q[row0 + (quad & 1) * 8 + r8][ks * 8 + (quad >> 1) * 4]);

  /* Rows g and g + 8 of the warp: running max, this lane's share of the
   * running sum (the quad adds up at the end), output accumulators. */
  const float sink = mxl_cu_bf16(sinks[h]);
  float m_run[2] = {sink, sink}, l_run[2] = {tig == 0 ? 1.0f : 0.0f, tig == 0 ? 1.0f : 0.0f};
  float o[8][4];
  MXL_UNROLL for (int nd = 0; nd < 8; nd++) MXL_UNROLL for (int i = 0; i < 4; i++) o[nd][i] = 0.0f;

  for (int j0 = 0; j0 < nk; j0 += MXL_AMMA_BK) {
    MXL_SYNC(); /* the previous tile is consumed */
    mxl_amma_load_mask(s.kpos, s.kseg, s.kok, mask.k_pos, mask.k_seg, j0, MXL_AMMA_BK, nk);
    if (t == 0) s.any = 0;
    MXL_SYNC();
    bool mine = false;
    for (int l = t; l < MXL_AMMA_BQ * MXL_AMMA_BK; l += MXL_AMMA_THREADS)
      mine |= mxl_amma_allowed(s, l / MXL_AMMA_BK, l % MXL_AMMA_BK, mask.window);
    if (mine) mxl_atomic_or(&s.any, 1);
    MXL_SYNC();
    if (!s.any) continue; /* the same for every thread */
    mxl_amma_load(s.k, k, j0, MXL_AMMA_BK, nk, nkv, kvh);
    mxl_amma_load(s.v, v, j0, MXL_AMMA_BK, nk, nkv, kvh);
    MXL_SYNC();

    float sc[8][4]; /* S of the warp's 16 rows x 64 keys */
    MXL_UNROLL for (int nj = 0; nj < 8; nj++) MXL_UNROLL for (int i = 0; i < 4; i++) sc[nj][i] = 0.0f;
    MXL_UNROLL for (int ks = 0; ks < 4; ks++) MXL_UNROLL for (int nj = 0; nj < 8; nj += 2) {
      uint32_t b4[4], b_lo[2], b_hi[2];
      mxl_ldmatrix_x4(b4, &s.k[(nj + (quad >> 1)) * 8 + r8][ks * 8 + (quad & 1) * 4]);
      b_lo[0] = b4[0], b_lo[1] = b4[1], b_hi[0] = b4[2], b_hi[1] = b4[3];
      mxl_mma_bf16_16816(sc[nj], qf[ks], b_lo, sc[nj]);
      mxl_mma_bf16_16816(sc[nj + 1], qf[ks], b_hi, sc[nj + 1]);
    }
    /* scale, mask, this tile's row max */
    float tile_max[2] = {-INFINITY, -INFINITY};
    MXL_UNROLL for (int nj = 0; nj < 8; nj++) MXL_UNROLL for (int i = 0; i < 4; i++) {
      const int r = row0 + g + (i >= 2 ? 8 : 0), c = nj * 8 + 2 * tig + (i & 1);
      float x = mxl_amma_allowed(s, r, c, mask.window) ? scale * sc[nj][i] : -INFINITY;
      sc[nj][i] = x;
      tile_max[i / 2] = x > tile_max[i / 2] ? x : tile_max[i / 2];
    }
    float rescale[2];
    MXL_UNROLL for (int hr = 0; hr < 2; hr++) {
      float mx = tile_max[hr];
      mx = fmaxf(mx, mxl_shfl_xor(mx, 1)); /* the quad shares the row */
      mx = fmaxf(mx, mxl_shfl_xor(mx, 2));
      float m_new = mx > m_run[hr] ? mx : m_run[hr]; /* finite: starts at the sink */
      rescale[hr] = expf(m_run[hr] - m_new);
      m_run[hr] = m_new;
      l_run[hr] *= rescale[hr];
    }
    MXL_UNROLL for (int nd = 0; nd < 8; nd++) MXL_UNROLL for (int i = 0; i < 4; i++)
      o[nd][i] *= rescale[i / 2];
    /* P = exp(S - m), as bf16 A fragments; O += P·V */
    MXL_UNROLL for (int kk = 0; kk < 4; kk++) {
      float p[2][4];
      MXL_UNROLL for (int half = 0; half < 2; half++) MXL_UNROLL for (int i = 0; i < 4; i++) {
        float x = sc[2 * kk + half][i];
        float e = x == -INFINITY ? 0.0f : expf(x - m_run[i / 2]);
        p[half][i] = e;
        l_run[i / 2] += e;
      }
      uint32_t pa[4] = {mxl_pack_bf16x2(p[0][0], p[0][1]), mxl_pack_bf16x2(p[0][2], p[0][3]),
                        mxl_pack_bf16x2(p[1][0], p[1][1]), mxl_pack_bf16x2(p[1][2], p[1][3])};
      MXL_UNROLL for (int nd = 0; nd < 8; nd += 2) {
        uint32_t b4[4], b_lo[2], b_hi[2];
        mxl_ldmatrix_x4_trans(b4, &s.v[kk * 16 + (quad & 1) * 8 + r8][(nd + (quad >> 1)) * 4]);
        b_lo[0] = b4[0], b_lo[1] = b4[1], b_hi[0] = b4[2], b_hi[1] = b4[3];
        mxl_mma_bf16_16816(o[nd], pa, b_lo, o[nd]);
        mxl_mma_bf16_16816(o[nd + 1], pa, b_hi, o[nd + 1]);
      }
    }
  }

  MXL_UNROLL for (int hr = 0; hr < 2; hr++) { /* the quad's partial sums */
    l_run[hr] += mxl_shfl_xor(l_run[hr], 1);
    l_run[hr] += mxl_shfl_xor(l_run[hr], 2);
  }
  MXL_UNROLL for (int hr = 0; hr < 2; hr++) {
    const int64_t i = i0 + row0 + g + 8 * hr;
    if (i >= nq) continue;
    float *dst = out + (i * nh + h) * MXL_AMMA_D;
    MXL_UNROLL for (int nd = 0; nd < 8; nd++) {
      dst[nd * 8 + 2 * tig] = o[nd][2 * hr] / l_run[hr];
      dst[nd * 8 + 2 * tig + 1] = o[nd][2 * hr + 1] / l_run[hr];
    }
    if (lse && tig == 0) lse[i * nh + h] = m_run[hr] + logf(l_run[hr]);
  }
}

static bool mxl_cu_attention_mma(mxl_backend *be, float *out, float *lse, const float *q,
                                 const float *k, const float *v, const uint16_t *sinks,
                                 const mxl_attn_mask *mask, int nq, int nk, int nh, int nkv,
                                 float scale) {
  int64_t blocks = (int64_t)((nq + MXL_AMMA_BQ - 1) / MXL_AMMA_BQ) * nh;
  return mxl_cu_launched(be, "attention",
                         MXL_LAUNCH(mxl_attention_mma_kernel, (unsigned)blocks, MXL_AMMA_THREADS,
                                    0, mxl_cu_state(be)->stream, q, k, v, sinks, *mask, nq, nk, nh,
                                    nkv, scale, out, lse));
}

#endif
