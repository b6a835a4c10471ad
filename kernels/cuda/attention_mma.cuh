/* Attention forward on tensor cores for head dims 16, 32, 64 (gpt-oss) and
 * 128: ops.h's `attention` with GQA, learned sinks and arbitrary masks, as
 * the fp32 kernel of ops_attention.cuh computes it, with bf16 operands and
 * fp32 accumulation (ops.h's activation dtype: q, k, v are rounded to bf16
 * when staged, the probabilities when fed to P·V). Other head dims take the
 * fp32 kernel. CPU reference: kernels/ref/ref_attention.h mxl_ref_attention.
 * The tiles, masks and loads here are shared with the backward
 * (attention_mma_bwd.cuh).
 *
 * A block of 4 warps takes 64 queries of one head; each warp owns 16 query
 * rows for the whole key loop (flash-attention style, all in registers):
 *   S = Q·Kᵀ     per 64-key tile: 8 n-tiles x D/16 k-steps of mma.sync
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
 * V are loaded. A row with no allowed key ends with out = 0, lse = sink.
 *
 * Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16", and
 * "ldmatrix"): an ldmatrix.x4 at lane l reads the row address of matrix
 * l/8, row l%8; lane l receives row l/4, elements 2(l%4), 2(l%4)+1 of each
 * 8x8 matrix (.trans: column l/4, rows 2(l%4), 2(l%4)+1). A of m16n8k16
 * is matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15),
 * (rows 8-15, k 8-15); B ("col") is (k 0-7, n), (k 8-15, n) with lane l
 * holding n = l/4; C holds rows l/4 and l/4 + 8, columns 2(l%4), +1. */
#ifndef MXL_KERNELS_CUDA_ATTENTION_MMA_CUH
#define MXL_KERNELS_CUDA_ATTENTION_MMA_CUH

#include "kernels/cuda/runtime.cuh"
#include "kernels/cuda/warp.cuh"

enum {
  MXL_AMMA_BQ = 64,      /* queries per tile: 16 per warp */
  MXL_AMMA_BK = 64,      /* keys per tile */
  MXL_AMMA_THREADS = 128,
};

/* True for the head dims the tensor-core kernels are built for. */
static inline bool mxl_amma_head_dim(int d) { return d == 16 || d == 32 || d == 64 || d == 128; }

/* A tile of 64 rows x D values of one head as bf16 pairs per word (low
 * half first), rows padded by 16 bytes so that the eight 16-byte rows of an
 * ldmatrix fall in distinct banks. */
template <int D>
struct alignas(16) mxl_amma_tile {
  enum { LD = D / 2 + 4 }; /* row stride in 32-bit words */
  uint32_t w[64][LD];
};

/* Positions and segments of a query tile and a key tile (ops.h's mask),
 * rows past the end with ok = 0, and whether any pair is allowed. */
struct mxl_amma_mask {
  int qpos[MXL_AMMA_BQ], qseg[MXL_AMMA_BQ], qok[MXL_AMMA_BQ];
  int kpos[MXL_AMMA_BK], kseg[MXL_AMMA_BK], kok[MXL_AMMA_BK];
  int any;

  MXL_DEVICE bool allowed(int i, int j, int window) const {
    return qok[i] && kok[j] && kseg[j] == qseg[i] && kpos[j] <= qpos[i] &&
           (window == 0 || qpos[i] - kpos[j] < window);
  }
};

/* rows x D values of head `head` (of `heads`) from row `first` (of
 * `total`) as bf16 pairs; zeros past the end. */
template <int D>
MXL_DEVICE void mxl_amma_load(mxl_amma_tile<D> &tile, const float *src, int first, int rows,
                              int total, int heads, int head) {
  for (int l = (int)MXL_THREAD_X; l < rows * (D / 2); l += MXL_AMMA_THREADS) {
    int r = l / (D / 2), c = 2 * (l % (D / 2));
    float a = 0.0f, b = 0.0f;
    if (first + r < total) {
      const float *p = src + ((int64_t)(first + r) * heads + head) * D + c;
      a = p[0];
      b = p[1];
    }
    tile.w[r][c / 2] = mxl_pack_bf16x2(a, b);
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

/* Sets m.any for the query and key tiles staged in m: thread 0 zeroes it,
 * every thread tests its share of the pairs. Barriers before and after:
 * m.any is the same for every thread on return. */
MXL_DEVICE void mxl_amma_mark_any(mxl_amma_mask &m, int window) {
  if (MXL_THREAD_X == 0) m.any = 0;
  MXL_SYNC();
  bool mine = false;
  for (int l = (int)MXL_THREAD_X; l < MXL_AMMA_BQ * MXL_AMMA_BK; l += MXL_AMMA_THREADS)
    mine |= m.allowed(l / MXL_AMMA_BK, l % MXL_AMMA_BK, window);
  if (mine) mxl_atomic_or(&m.any, 1);
  MXL_SYNC();
}

/* The A fragments of 16 rows (from row0) x D of a tile: D/16 k-steps. */
template <int D>
MXL_DEVICE void mxl_amma_a_frags(uint32_t (*a)[4], const mxl_amma_tile<D> &t, int row0) {
  const int lane = (int)(MXL_THREAD_X % 32), quad = lane / 8, r8 = lane % 8;
  MXL_UNROLL for (int ks = 0; ks < D / 16; ks++)
    mxl_ldmatrix_x4(a[ks], &t.w[row0 + (quad & 1) * 8 + r8][ks * 8 + (quad >> 1) * 4]);
}

/* acc[nj] (16 x 64 in 8 n-tiles) += A·Bᵀ, A as fragments [D/16][4], B the
 * 64 rows x D of a tile (S = Q·Kᵀ and its relatives). */
template <int D>
MXL_DEVICE void mxl_amma_abt(float (*acc)[4], const uint32_t (*a)[4], const mxl_amma_tile<D> &b) {
  const int lane = (int)(MXL_THREAD_X % 32), quad = lane / 8, r8 = lane % 8;
  MXL_UNROLL for (int ks = 0; ks < D / 16; ks++) MXL_UNROLL for (int nj = 0; nj < 8; nj += 2) {
    uint32_t b4[4];
    mxl_ldmatrix_x4(b4, &b.w[(nj + (quad >> 1)) * 8 + r8][ks * 8 + (quad & 1) * 4]);
    const uint32_t lo[2] = {b4[0], b4[1]}, hi[2] = {b4[2], b4[3]};
    mxl_mma_bf16_16816(acc[nj], a[ks], lo, acc[nj]);
    mxl_mma_bf16_16816(acc[nj + 1], a[ks], hi, acc[nj + 1]);
  }
}

/* The same with A the 16 rows from row0 of a tile, its fragments loaded
 * per k-step (fewer registers than keeping all of them). */
template <int D>
MXL_DEVICE void mxl_amma_abt(float (*acc)[4], const mxl_amma_tile<D> &a, int row0,
                             const mxl_amma_tile<D> &b) {
  const int lane = (int)(MXL_THREAD_X % 32), quad = lane / 8, r8 = lane % 8;
  MXL_UNROLL for (int ks = 0; ks < D / 16; ks++) {
    uint32_t af[4];
    mxl_ldmatrix_x4(af, &a.w[row0 + (quad & 1) * 8 + r8][ks * 8 + (quad >> 1) * 4]);
    MXL_UNROLL for (int nj = 0; nj < 8; nj += 2) {
      uint32_t b4[4];
      mxl_ldmatrix_x4(b4, &b.w[(nj + (quad >> 1)) * 8 + r8][ks * 8 + (quad & 1) * 4]);
      const uint32_t lo[2] = {b4[0], b4[1]}, hi[2] = {b4[2], b4[3]};
      mxl_mma_bf16_16816(acc[nj], af, lo, acc[nj]);
      mxl_mma_bf16_16816(acc[nj + 1], af, hi, acc[nj + 1]);
    }
  }
}

/* acc[nd] (16 x D in D/8 n-tiles) += P·B, P the 16 x 64 values of eight C
 * fragments p[nj] (rounded to bf16 here), B the 64 rows x D of a tile
 * (O += P·V and its relatives). */
template <int D>
MXL_DEVICE void mxl_amma_pb(float (*acc)[4], const float (*p)[4], const mxl_amma_tile<D> &b) {
  const int lane = (int)(MXL_THREAD_X % 32), quad = lane / 8, r8 = lane % 8;
  MXL_UNROLL for (int kk = 0; kk < 4; kk++) {
    const float *lo = p[2 * kk], *hi = p[2 * kk + 1];
    const uint32_t pa[4] = {mxl_pack_bf16x2(lo[0], lo[1]), mxl_pack_bf16x2(lo[2], lo[3]),
                            mxl_pack_bf16x2(hi[0], hi[1]), mxl_pack_bf16x2(hi[2], hi[3])};
    MXL_UNROLL for (int nd = 0; nd < D / 8; nd += 2) {
      uint32_t b4[4];
      mxl_ldmatrix_x4_trans(b4, &b.w[kk * 16 + (quad & 1) * 8 + r8][(nd + (quad >> 1)) * 4]);
      const uint32_t b_lo[2] = {b4[0], b4[1]}, b_hi[2] = {b4[2], b4[3]};
      mxl_mma_bf16_16816(acc[nd], pa, b_lo, acc[nd]);
      mxl_mma_bf16_16816(acc[nd + 1], pa, b_hi, acc[nd + 1]);
    }
  }
}

template <int N>
MXL_DEVICE void mxl_amma_zero(float (*acc)[4]) {
  MXL_UNROLL for (int n = 0; n < N; n++) MXL_UNROLL for (int i = 0; i < 4; i++) acc[n][i] = 0.0f;
}

/* q [nq, nh, D], k, v [nk, nkv, D], out [nq, nh, D], lse [nq, nh] or NULL.
 * One tile holds Q until its fragments are in registers, then K. */
template <int D>
MXL_GLOBAL void mxl_attention_mma_kernel(const float *q, const float *k, const float *v,
                                         const uint16_t *sinks, mxl_attn_mask mask, int nq,
                                         int nk, int nh, int nkv, float scale, float *out,
                                         float *lse) {
  MXL_SHARED mxl_amma_tile<D> qk, vt;
  MXL_SHARED mxl_amma_mask m;
  const int t = (int)MXL_THREAD_X, lane = t % 32, warp = t / 32;
  const int g = lane / 4, tig = lane % 4;
  const int h = (int)(MXL_BLOCK_X % nh), i0 = (int)(MXL_BLOCK_X / nh) * MXL_AMMA_BQ;
  const int kvh = h / (nh / nkv), row0 = warp * 16; /* this warp's rows in the tile */

  mxl_amma_load<D>(qk, q, i0, MXL_AMMA_BQ, nq, nh, h);
  mxl_amma_load_mask(m.qpos, m.qseg, m.qok, mask.q_pos, mask.q_seg, i0, MXL_AMMA_BQ, nq);
  MXL_SYNC();
  uint32_t qf[D / 16][4]; /* A fragments of the warp's 16 rows */
  mxl_amma_a_frags<D>(qf, qk, row0);

  /* Rows g and g + 8 of the warp: running max, this lane's share of the
   * running sum (the quad adds up at the end), output accumulators. */
  const float sink = mxl_cu_bf16(sinks[h]);
  float m_run[2] = {sink, sink}, l_run[2] = {tig == 0 ? 1.0f : 0.0f, tig == 0 ? 1.0f : 0.0f};
  float o[D / 8][4];
  mxl_amma_zero<D / 8>(o);

  for (int j0 = 0; j0 < nk; j0 += MXL_AMMA_BK) {
    MXL_SYNC(); /* the previous tile (or Q) is consumed */
    mxl_amma_load_mask(m.kpos, m.kseg, m.kok, mask.k_pos, mask.k_seg, j0, MXL_AMMA_BK, nk);
    mxl_amma_mark_any(m, mask.window);
    if (!m.any) continue; /* the same for every thread */
    mxl_amma_load<D>(qk, k, j0, MXL_AMMA_BK, nk, nkv, kvh);
    mxl_amma_load<D>(vt, v, j0, MXL_AMMA_BK, nk, nkv, kvh);
    MXL_SYNC();

    float sc[8][4]; /* S of the warp's 16 rows x 64 keys */
    mxl_amma_zero<8>(sc);
    mxl_amma_abt<D>(sc, qf, qk);
    /* scale, mask, this tile's row max */
    float tile_max[2] = {-INFINITY, -INFINITY};
    MXL_UNROLL for (int nj = 0; nj < 8; nj++) MXL_UNROLL for (int i = 0; i < 4; i++) {
      const int r = row0 + g + (i >= 2 ? 8 : 0), c = nj * 8 + 2 * tig + (i & 1);
      float x = m.allowed(r, c, mask.window) ? scale * sc[nj][i] : -INFINITY;
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
    MXL_UNROLL for (int nd = 0; nd < D / 8; nd++) MXL_UNROLL for (int i = 0; i < 4; i++)
      o[nd][i] *= rescale[i / 2];
    /* P = exp(S - m) in place; O += P·V */
    MXL_UNROLL for (int nj = 0; nj < 8; nj++) MXL_UNROLL for (int i = 0; i < 4; i++) {
      float x = sc[nj][i];
      float e = x == -INFINITY ? 0.0f : expf(x - m_run[i / 2]);
      sc[nj][i] = e;
      l_run[i / 2] += e;
    }
    mxl_amma_pb<D>(o, sc, vt);
  }

  MXL_UNROLL for (int hr = 0; hr < 2; hr++) { /* the quad's partial sums */
    l_run[hr] += mxl_shfl_xor(l_run[hr], 1);
    l_run[hr] += mxl_shfl_xor(l_run[hr], 2);
  }
  MXL_UNROLL for (int hr = 0; hr < 2; hr++) {
    const int64_t i = i0 + row0 + g + 8 * hr;
    if (i >= nq) continue;
    float *dst = out + (i * nh + h) * D;
    MXL_UNROLL for (int nd = 0; nd < D / 8; nd++) {
      dst[nd * 8 + 2 * tig] = o[nd][2 * hr] / l_run[hr];
      dst[nd * 8 + 2 * tig + 1] = o[nd][2 * hr + 1] / l_run[hr];
    }
    if (lse && tig == 0) lse[i * nh + h] = m_run[hr] + logf(l_run[hr]);
  }
}

template <int D>
static bool mxl_cu_attention_mma_d(mxl_backend *be, float *out, float *lse, const float *q,
                                   const float *k, const float *v, const uint16_t *sinks,
                                   const mxl_attn_mask *mask, int nq, int nk, int nh, int nkv,
                                   float scale) {
  int64_t blocks = (int64_t)((nq + MXL_AMMA_BQ - 1) / MXL_AMMA_BQ) * nh;
  return mxl_cu_launched(be, "attention",
                         MXL_LAUNCH(mxl_attention_mma_kernel<D>, (unsigned)blocks,
                                    MXL_AMMA_THREADS, 0, mxl_cu_state(be)->stream, q, k, v, sinks,
                                    *mask, nq, nk, nh, nkv, scale, out, lse));
}

/* The forward on tensor cores; the caller checked mxl_amma_head_dim(d). */
static bool mxl_cu_attention_mma(mxl_backend *be, float *out, float *lse, const float *q,
                                 const float *k, const float *v, const uint16_t *sinks,
                                 const mxl_attn_mask *mask, int nq, int nk, int nh, int nkv, int d,
                                 float scale) {
  switch (d) {
    case 16:
      return mxl_cu_attention_mma_d<16>(be, out, lse, q, k, v, sinks, mask, nq, nk, nh, nkv, scale);
    case 32:
      return mxl_cu_attention_mma_d<32>(be, out, lse, q, k, v, sinks, mask, nq, nk, nh, nkv, scale);
    case 64:
      return mxl_cu_attention_mma_d<64>(be, out, lse, q, k, v, sinks, mask, nq, nk, nh, nkv, scale);
    default:
      return mxl_cu_attention_mma_d<128>(be, out, lse, q, k, v, sinks, mask, nq, nk, nh, nkv,
                                         scale);
  }
}

#endif
