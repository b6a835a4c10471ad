/* CPU backend attention with GQA, learned sinks and segment/sliding masks
 * (kernels/ops.h `attention`, `attention_bwd`), blocked as flash attention:
 * fp32 throughout, the block products on the ISA's fp32 GEMM kernel.
 *
 * A query block is `bq` queries × the `group` = nh/nkv query heads that
 * read one KV head: R = bq·group rows of d values sharing every key row. Key
 * blocks have ATT_BK keys. A pair of blocks whose position/segment ranges
 * exclude every (query, key) pair is skipped before any arithmetic (causal
 * futures, keys past a sliding window, other documents of a packed batch);
 * other pairs get an exact per-pair mask.
 *
 * Forward: online softmax per row, the running max starting at the sink
 * logit and the running sum at exp(sink - max) = 1 (the sink has no value).
 * Where the ISA has native bf16 dot products (isa->bf16_dot) and outside
 * the exact mode, the forward's two block products take bf16 operands
 * (q·kᵀ and p·v, fp32 accumulation, as the CUDA backend and PyTorch's
 * bf16 attention): twice the fp32 FMA rate. The key blocks are converted
 * and packed once per call for every query block (kv_pack; per work item
 * past KV_PACK_MAX_BYTES), and each block's online softmax writes its bf16
 * probabilities in one pass (isa->softmax_block_bf16). The backward
 * does the same for its five block products (bwd16_*): the scale is taken
 * into q for the scores and applied once to dK and dQ at the end.
 * Backward (FlashAttention-2 order): per KV head, key blocks outer, their
 * dK and dV accumulated in a tile; p is recomputed from the forward's lse;
 * dQ for the head group is private to the work item, so no two threads
 * write one row.
 * Decode (fewer than ATT_BF16_MIN_Q queries) takes its own path where the
 * ISA has attn_decode_block: key blocks in memory order, split between the
 * threads, merged at the end (attention_decode below). */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "core/bf16.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/cpu_internal.h"

enum {
  ATT_BK = 64,   /* keys per block */
  ATT_ROWS = 128, /* query rows (queries × group heads) per block, at least */
  ATT_BF16_MIN_Q = 16, /* fewer queries (decode): fp32, no block packing */
};
/* The forward's keys and values packed once per call up to this size
 * (a 20b layer's 4096 keys take 8.4 MB); past it, per work item. */
#define KV_PACK_MAX_BYTES ((size_t)64 << 20)

/* Whether this call's block products take bf16 operands. */
static int attn_bf16(const mxl_backend *be, int nq) {
  return mxl_backend_cpu_bf16_attention(be) && nq >= ATT_BF16_MIN_Q;
}

typedef struct attn_shape {
  int nq, nk, nh, nkv, d, group, bq, R; /* R = bq·group */
  float scale;
} attn_shape;

static attn_shape attn_shape_of(int nq, int nk, int nh, int nkv, int d, float scale) {
  attn_shape s = {nq, nk, nh, nkv, d, nh / nkv, 0, 0, scale};
  s.bq = s.group >= ATT_ROWS ? 1 : ATT_ROWS / s.group;
  /* rows in 32s (at most 31 more queries): whole 16-row AMX tiles, and the
   * backward's dK and dV products reduce over the rows in 32s, the tiles'
   * step. The bench preset's 3 heads per KV head made 126 rows, 14 of them
   * and every dK and dV product left to vdpbf16ps. */
  while ((s.bq * s.group) % 32) s.bq++;
  s.R = s.bq * s.group;
  return s;
}

/* ------------------------------------------------------------------ masks */

/* Ranges of positions and segments over a block of queries or keys. */
typedef struct span {
  int32_t pos_min, pos_max, seg_min, seg_max;
} span;

static span span_of(const int32_t *pos, const int32_t *seg, int first, int count) {
  span s = {pos[first], pos[first], seg[first], seg[first]};
  for (int i = first + 1; i < first + count; i++) {
    if (pos[i] < s.pos_min) s.pos_min = pos[i];
    if (pos[i] > s.pos_max) s.pos_max = pos[i];
    if (seg[i] < s.seg_min) s.seg_min = seg[i];
    if (seg[i] > s.seg_max) s.seg_max = seg[i];
  }
  return s;
}

/* 1 when no query of q may see a key of k (the ops.h mask rule). */
static int spans_disjoint(span q, span k, int window) {
  if (q.seg_max < k.seg_min || k.seg_max < q.seg_min) return 1;
  if (k.pos_min > q.pos_max) return 1;
  return window > 0 && (int64_t)q.pos_min - k.pos_max >= window;
}

/* 1 when every query of q may see every key of k: one segment, every key
 * at or before every query and within the window. */
static int spans_all_visible(span q, span k, int window) {
  if (q.seg_min != q.seg_max || k.seg_min != k.seg_max || q.seg_min != k.seg_min) return 0;
  if (k.pos_max > q.pos_min) return 0;
  return window == 0 || (int64_t)q.pos_max - k.pos_min < window;
}

/* keep[qi] bit j: query i0+qi may see key j0+j (nqb queries, nkb <= 64
 * keys); returns 0 when no pair is allowed. Blocks that are wholly visible
 * (below a causal diagonal, inside a window) or wholly hidden are told
 * from the blocks' position and segment ranges; the rest pair by pair. */
static int block_mask(uint64_t *keep, const mxl_attn_mask *m, int i0, int nqb, int j0, int nkb) {
  span qs = span_of(m->q_pos, m->q_seg, i0, nqb), ks = span_of(m->k_pos, m->k_seg, j0, nkb);
  if (spans_disjoint(qs, ks, m->window)) return 0;
  if (spans_all_visible(qs, ks, m->window)) {
    uint64_t all = nkb >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << nkb) - 1;
    for (int qi = 0; qi < nqb; qi++) keep[qi] = all;
    return 1;
  }
  uint64_t any = 0;
  for (int qi = 0; qi < nqb; qi++) {
    int32_t qp = m->q_pos[i0 + qi], qs = m->q_seg[i0 + qi];
    uint64_t bits = 0;
    for (int j = 0; j < nkb; j++) {
      int32_t kp = m->k_pos[j0 + j];
      int ok = m->k_seg[j0 + j] == qs && kp <= qp &&
               (m->window == 0 || (int64_t)qp - kp < m->window);
      bits |= (uint64_t)ok << j;
    }
    keep[qi] = bits;
    any |= bits;
  }
  return any != 0;
}

/* Spans of every block of keys — kspan [ceil(nk / ATT_BK)] */
static void key_spans(span *kspan, const mxl_attn_mask *m, int nk) {
  for (int b = 0; b * ATT_BK < nk; b++) {
    int n = nk - b * ATT_BK < ATT_BK ? nk - b * ATT_BK : ATT_BK;
    kspan[b] = span_of(m->k_pos, m->k_seg, b * ATT_BK, n);
  }
}

/* kt [d, ATT_BK] = the key block's rows transposed, zeros past nkb — rows
 * [nkb, ld]. The ISA's register transpose: element by element it took 16 %
 * of a batched decode step (bench_serve, 32 requests) and about a quarter
 * of the score product's time in prefill. */
static void transpose_block(const mxl_cpu_isa *isa, float *kt, const float *rows, int64_t ld,
                            int nkb, int d) {
  isa->transpose_f32(kt, ATT_BK, rows, ld, nkb, d);
  if (nkb < ATT_BK)
    for (int c = 0; c < d; c++) memset(kt + c * ATT_BK + nkb, 0, (size_t)(ATT_BK - nkb) * 4);
}

/* ------------------------------------------------------------------ forward */

typedef struct fwd_buf {
  float *qs;       /* [R, d] scaled queries */
  float *o;        /* [R, d] running Σ p·v */
  float *s;        /* [R, ATT_BK] scores, then p */
  float *kt;       /* [d, ATT_BK] */
  float *mx, *den; /* [R] */
  /* bf16 operands: qh [R, d], ph [R, ATT_BK], a block's rows kh [ATT_BK, d],
   * its keys packed transposed kp [(d+1)/2, ATT_BK, 2] and its values
   * packed vp [ATT_BK/2, d16, 2] */
  uint16_t *qh, *ph, *kh, *kp, *vp;
  uint64_t *keep;  /* [bq] mask bits per query */
} fwd_buf;

static int64_t round16(int64_t x) { return (x + 15) & ~(int64_t)15; }

/* bf16 elements of each of qh, ph, kh, kp, vp */
static size_t fwd_bf16_sizes(const attn_shape *a, size_t n[5]) {
  n[0] = (size_t)a->R * a->d;
  n[1] = (size_t)a->R * ATT_BK;
  n[2] = (size_t)ATT_BK * a->d;
  n[3] = (size_t)(a->d + 1) / 2 * ATT_BK * 2;
  n[4] = (size_t)ATT_BK * round16(a->d);
  size_t total = 0;
  for (int i = 0; i < 5; i++) n[i] = (n[i] + 31) & ~(size_t)31, total += n[i];
  return total;
}

static size_t fwd_buf_floats(const attn_shape *a, int bf16) {
  size_t n[5];
  return (size_t)a->R * a->d * 2 + (size_t)a->R * ATT_BK + (size_t)a->d * ATT_BK +
         (size_t)a->R * 2 + (bf16 ? fwd_bf16_sizes(a, n) / 2 : 0) + (size_t)a->bq * 2 + 64;
}

static fwd_buf fwd_buf_carve(float *p, const attn_shape *a, int bf16) {
  fwd_buf b;
  b.qs = p, p += (size_t)a->R * a->d;
  b.o = p, p += (size_t)a->R * a->d;
  b.s = p, p += (size_t)a->R * ATT_BK;
  b.kt = p, p += (size_t)a->d * ATT_BK;
  b.mx = p, p += a->R;
  b.den = p, p += a->R;
  b.qh = b.ph = b.kh = b.kp = b.vp = NULL;
  if (bf16) {
    size_t n[5];
    size_t total = fwd_bf16_sizes(a, n);
    uint16_t *h = (uint16_t *)(void *)p;
    b.qh = h, h += n[0];
    b.ph = h, h += n[1];
    b.kh = h, h += n[2];
    b.kp = h, h += n[3];
    b.vp = h;
    p += total / 2;
  }
  b.keep = (uint64_t *)(void *)(((uintptr_t)p + 7) & ~(uintptr_t)7);
  return b;
}

/* A block's nkb rows (row stride ld) as bf16 rows kh [nkb, d]. */
static void rows_to_bf16(const mxl_cpu_isa *isa, uint16_t *kh, const float *rows, int64_t ld,
                         int nkb, int d) {
  for (int j = 0; j < nkb; j++) isa->to_bf16(kh + (size_t)j * d, rows + j * ld, (size_t)d);
}

/* One row's scores of one key block into probabilities, updating the
 * row's running max and sum and rescaling its output row. */
static void softmax_row_update(const mxl_cpu_isa *isa, float *s, uint64_t keep, int nkb,
                               float *mx, float *den, float *o, int d) {
  float m = isa->masked_max_f32(s, keep, nkb);
  if (m > *mx) {
    float corr = expf(*mx - m);
    *den *= corr;
    isa->scale_f32(o, corr, d);
    *mx = m;
  }
  *den += isa->masked_exp_f32(s, s, keep, nkb, *mx); /* masked keys get p = 0 */
}

/* softmax_row_update for R rows of a block, p as bf16 rows into ph. */
static void softmax_block_bf16(const mxl_cpu_isa *isa, fwd_buf *b, int R, int nkb, int group,
                               int d) {
  if (isa->softmax_block_bf16) {
    isa->softmax_block_bf16(b->ph, ATT_BK, b->s, ATT_BK, b->keep, group, R, nkb, b->mx, b->den,
                            b->o, d, d);
    return;
  }
  for (int r = 0; r < R; r++) {
    softmax_row_update(isa, b->s + r * ATT_BK, b->keep[r / group], nkb, &b->mx[r], &b->den[r],
                       b->o + r * d, d);
    isa->to_bf16(b->ph + (size_t)r * ATT_BK, b->s + (size_t)r * ATT_BK, (size_t)nkb);
  }
}

/* A key block's keys packed transposed into kp and its values packed into
 * vp, the forward's B operands (kh: a block of bf16 rows, scratch). */
static void pack_key_block(const mxl_cpu_isa *isa, uint16_t *kp, uint16_t *vp, uint16_t *kh,
                           const float *kblk, const float *vblk, int64_t kv_ld, int nkb, int d) {
  rows_to_bf16(isa, kh, kblk, kv_ld, nkb, d);
  isa->pack_vnni_t_bf16(kp, ATT_BK, kh, d, nkb, d);
  rows_to_bf16(isa, kh, vblk, kv_ld, nkb, d);
  isa->pack_vnni_bf16(vp, round16(d), kh, d, nkb, d);
}

/* Every key block of every KV head packed once per call (pack_key_block),
 * where that fits KV_PACK_MAX_BYTES: each query block then reads them,
 * where per work item packing cost 1/R of the products per query block. */
typedef struct kv_pack {
  uint16_t *at;           /* [nkv, n_kb] blocks of per_block elements */
  size_t per_block, v_at; /* elements per block; the values' offset in it */
  int n_kb;
} kv_pack;

static void fwd_item(const mxl_cpu_isa *isa, const attn_shape *a, float *out, float *lse,
                     const float *q, const float *k, const float *v, const uint16_t *sinks,
                     const mxl_attn_mask *mask, const span *kspan, int qb, int g, int bf16,
                     const kv_pack *kv, fwd_buf *b) {
  int d = a->d, group = a->group, i0 = qb * a->bq;
  int nqb = a->nq - i0 < a->bq ? a->nq - i0 : a->bq, R = nqb * group;
  int64_t kv_ld = (int64_t)a->nkv * d;
  for (int qi = 0; qi < nqb; qi++) {
    const float *src = q + ((int64_t)(i0 + qi) * a->nh + g * group) * d; /* [group, d] */
    for (int e = 0; e < group * d; e++) b->qs[qi * group * d + e] = a->scale * src[e];
  }
  if (bf16) isa->to_bf16(b->qh, b->qs, (size_t)R * d);
  memset(b->o, 0, (size_t)R * d * sizeof *b->o);
  for (int r = 0; r < R; r++) {
    b->mx[r] = mxl_bf16_to_f32(sinks[g * group + r % group]);
    b->den[r] = 1.0f;
  }
  span qspan = span_of(mask->q_pos, mask->q_seg, i0, nqb);
  for (int kb = 0; kb * ATT_BK < a->nk; kb++) {
    int j0 = kb * ATT_BK, nkb = a->nk - j0 < ATT_BK ? a->nk - j0 : ATT_BK;
    if (spans_disjoint(qspan, kspan[kb], mask->window)) continue;
    if (!block_mask(b->keep, mask, i0, nqb, j0, nkb)) continue;
    const float *kblk = k + (int64_t)j0 * kv_ld + (int64_t)g * d; /* [nkb, kv_ld] */
    const float *vblk = v + (int64_t)j0 * kv_ld + (int64_t)g * d;
    if (bf16) {
      const uint16_t *kp = b->kp, *vp = b->vp;
      if (kv) { /* packed once for every query block (kv_pack) */
        kp = kv->at + ((size_t)g * kv->n_kb + kb) * kv->per_block;
        vp = kp + kv->v_at;
      } else {
        pack_key_block(isa, b->kp, b->vp, b->kh, kblk, vblk, kv_ld, nkb, d);
      }
      isa->gemm_bf16_vnni(b->s, ATT_BK, b->qh, NULL, d, kp, ATT_BK, R, nkb, d, 0);
      softmax_block_bf16(isa, b, R, nkb, group, d);
      isa->gemm_bf16_vnni(b->o, d, b->ph, NULL, ATT_BK, vp, round16(d), R, d, nkb, 1);
      continue;
    }
    transpose_block(isa, b->kt, kblk, kv_ld, nkb, d);
    isa->gemm_f32_nn(b->s, ATT_BK, b->qs, d, 1, b->kt, ATT_BK, R, nkb, d, 1.0f, 0);
    for (int r = 0; r < R; r++)
      softmax_row_update(isa, b->s + r * ATT_BK, b->keep[r / group], nkb, &b->mx[r], &b->den[r],
                         b->o + r * d, d);
    isa->gemm_f32_nn(b->o, d, b->s, ATT_BK, 1, vblk, kv_ld, R, d, nkb, 1.0f, 1);
  }
  for (int r = 0; r < R; r++) {
    int64_t row = (int64_t)(i0 + r / group) * a->nh + g * group + r % group;
    float inv = 1.0f / b->den[r];
    for (int c = 0; c < d; c++) out[row * d + c] = b->o[r * d + c] * inv;
    if (lse) lse[row] = b->mx[r] + logf(b->den[r]);
  }
}

/* ------------------------------------------------------------------ decode */

/* Decode (a few queries against a long cache) reads every key and value
 * once and multiplies each by only `group` query heads: the blocked path's
 * transposes, small products and per-head strided reads (6 GB/s, a third
 * of what the same bytes read in order give) left it at a quarter of the
 * memory speed. Here each thread takes a contiguous share of the key
 * blocks and walks them in memory order, every KV head of a block before
 * the next block (isa->attn_decode_block: scores in registers, K and V
 * where they lie), with its own running max, sum and output per query
 * head; the shares merge at the end (log-sum-exp). Every share starts from
 * the sink's logit as its max, the first one alone with the sink's 1 in
 * its sum, so a share that sees no key merges as nothing (its sum 0) or
 * as the sink alone; with a -inf sink and no key seen at all, the merge
 * keeps out 0 and lse -inf, as the blocked path gives. */
static int decode_path(const mxl_cpu_isa *isa, const attn_shape *a) {
  return isa->attn_decode_block && a->nq < ATT_BF16_MIN_Q && a->group <= 8 && a->d % 32 == 0;
}

/* One share's state for one query and KV head: o [group, d], then mx and
 * den [8] each. */
static size_t decode_state_floats(const attn_shape *a) { return (size_t)a->group * a->d + 16; }

/* The queries, scaled, in the kernel's pair layout — q2 [nq, nkv, d/2, 16]. */
static void decode_queries(float *q2, const attn_shape *a, const float *q) {
  const int d = a->d, group = a->group;
  for (int i = 0; i < a->nq; i++)
    for (int g = 0; g < a->nkv; g++) {
      float *dst = q2 + ((size_t)i * a->nkv + g) * (size_t)d * 8;
      memset(dst, 0, (size_t)d * 8 * sizeof *dst);
      for (int h = 0; h < group; h++) {
        const float *src = q + ((int64_t)i * a->nh + g * group + h) * d;
        for (int c = 0; c < d; c++) dst[(c / 2) * 16 + 2 * h + (c & 1)] = a->scale * src[c];
      }
    }
}

/* Share `part` of `parts` over the visible key blocks vis[0, n_vis). */
static void decode_share(const mxl_cpu_isa *isa, const attn_shape *a, float *st, float *s,
                         const float *q2, const float *k, const float *v, const uint16_t *sinks,
                         const mxl_attn_mask *mask, const int *vis, int n_vis, int part,
                         int parts) {
  const int d = a->d, group = a->group, nkv = a->nkv;
  const size_t per = decode_state_floats(a);
  const int64_t kv_ld = (int64_t)nkv * d;
  for (int i = 0; i < a->nq; i++)
    for (int g = 0; g < nkv; g++) {
      float *o = st + ((size_t)i * nkv + g) * per, *mx = o + (size_t)group * d, *den = mx + 8;
      memset(o, 0, (size_t)group * d * sizeof *o);
      for (int h = 0; h < group; h++) {
        mx[h] = mxl_bf16_to_f32(sinks[g * group + h]);
        den[h] = part == 0 ? 1.0f : 0.0f;
      }
    }
  int b0 = (int)((int64_t)n_vis * part / parts), b1 = (int)((int64_t)n_vis * (part + 1) / parts);
  for (int b = b0; b < b1; b++) {
    int j0 = vis[b] * ATT_BK, nkb = a->nk - j0 < ATT_BK ? a->nk - j0 : ATT_BK;
    /* the next block, asked for a KV head's share of its rows at a time */
    int next = b + 1 < b1 ? vis[b + 1] * ATT_BK : j0;
    int next_n = b + 1 < b1 ? (a->nk - next < ATT_BK ? a->nk - next : ATT_BK) : 0;
    for (int i = 0; i < a->nq; i++) {
      uint64_t keep;
      if (!block_mask(&keep, mask, i, 1, j0, nkb)) continue;
      for (int g = 0; g < nkv; g++) {
        int r0 = next + next_n * g / nkv, r1 = next + next_n * (g + 1) / nkv;
        int64_t pf_bytes = i == 0 ? (int64_t)(r1 - r0) * kv_ld * (int64_t)sizeof(float) : 0;
        float *o = st + ((size_t)i * nkv + g) * per, *mx = o + (size_t)group * d;
        isa->attn_decode_block(o, mx, mx + 8, q2 + ((size_t)i * nkv + g) * (size_t)d * 8,
                               k + (int64_t)j0 * kv_ld + g * d, v + (int64_t)j0 * kv_ld + g * d,
                               kv_ld, nkb, keep, group, d, s, k + (int64_t)r0 * kv_ld,
                               v + (int64_t)r0 * kv_ld, pf_bytes);
      }
    }
  }
}

/* out and lse from the shares' states: per query head, the maxima merged
 * and each share's sum and output rescaled to the common one. */
static void decode_merge(const attn_shape *a, float *out, float *lse, const float *states,
                         size_t share_floats, int parts) {
  const int d = a->d, group = a->group;
  const size_t per = decode_state_floats(a);
  for (int i = 0; i < a->nq; i++)
    for (int g = 0; g < a->nkv; g++)
      for (int h = 0; h < group; h++) {
        size_t at = ((size_t)i * a->nkv + g) * per;
        float m = -INFINITY, den = 0;
        for (int p = 0; p < parts; p++) {
          float mp = states[p * share_floats + at + (size_t)group * d + h];
          if (mp > m) m = mp;
        }
        float *row = out + ((int64_t)i * a->nh + g * group + h) * d;
        memset(row, 0, (size_t)d * sizeof *row);
        for (int p = 0; p < parts; p++) {
          const float *sp = states + p * share_floats + at;
          float mp = sp[(size_t)group * d + h];
          float w = mp == m ? 1.0f : expf(mp - m); /* a -inf sink and no key: m = -inf */
          den += w * sp[(size_t)group * d + 8 + h];
          for (int c = 0; c < d; c++) row[c] += w * sp[(size_t)h * d + c];
        }
        float inv = 1.0f / den;
        for (int c = 0; c < d; c++) row[c] *= inv;
        if (lse) lse[(int64_t)i * a->nh + g * group + h] = m + logf(den);
      }
}

static void attention_decode(mxl_backend *be, const attn_shape *a, float *out, float *lse,
                             const float *q, const float *k, const float *v,
                             const uint16_t *sinks, const mxl_attn_mask *mask, const span *kspan,
                             int nt) {
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  const int n_kb = (a->nk + ATT_BK - 1) / ATT_BK;
  const size_t share = ((size_t)a->nq * a->nkv * decode_state_floats(a) + 15) & ~(size_t)15;
  const size_t q2_floats = (size_t)a->nq * a->nkv * a->d * 8;
  /* per thread: the scores (64·8) and its share's state; then q2 */
  float *mem = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_THREAD,
                               ((512 + share) * (size_t)nt + q2_floats) * sizeof(float));
  int *vis = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_AUX2, (size_t)(n_kb + 1) * sizeof *vis);
  if (!mem || !vis) return;
  float *states = mem + 512 * (size_t)nt, *q2 = states + share * (size_t)nt;
  span qall = span_of(mask->q_pos, mask->q_seg, 0, a->nq);
  int n_vis = 0;
  for (int kb = 0; kb < n_kb; kb++)
    if (!spans_disjoint(qall, kspan[kb], mask->window)) vis[n_vis++] = kb;
  decode_queries(q2, a, q);
  if (n_vis < nt) nt = n_vis > 0 ? n_vis : 1;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    int t = omp_get_thread_num(), parts = omp_get_num_threads();
    decode_share(isa, a, states + share * (size_t)t, mem + 512 * (size_t)t, q2, k, v, sinks, mask,
                 vis, n_vis, t, parts);
  }
  decode_merge(a, out, lse, states, share, nt);
}

/* q [nq, nh, d], k, v [nk, nkv, d], out [nq, nh, d], sinks bf16 [nh],
 * lse [nq, nh] or NULL */
void mxl_cpu_attention(mxl_backend *be, float *out, float *lse, const float *q, const float *k,
                       const float *v, const uint16_t *sinks, const mxl_attn_mask *mask, int nq,
                       int nk, int nh, int nkv, int d, float scale) {
  if (nq <= 0) return;
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  attn_shape a = attn_shape_of(nq, nk, nh, nkv, d, scale);
  int n_kb = (nk + ATT_BK - 1) / ATT_BK, n_qb = (nq + a.bq - 1) / a.bq;
  span *kspan = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_AUX, (size_t)(n_kb + 1) * sizeof *kspan);
  if (!kspan) return;
  key_spans(kspan, mask, nk);
  int nt = mxl_cpu_attention_threads(be, nq, nk, nh, nkv, d, 2);
  if (decode_path(isa, &a)) {
    attention_decode(be, &a, out, lse, q, k, v, sinks, mask, kspan, nt);
    return;
  }
  int bf16 = attn_bf16(be, nq);
  size_t per_thread = (fwd_buf_floats(&a, bf16) + 15) & ~(size_t)15;
  float *mem = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_THREAD, per_thread * 4 * (size_t)be->n_threads);
  if (!mem) return;
  kv_pack kv = {NULL, 0, 0, n_kb}, *kvp = NULL;
  if (bf16 && n_qb > 1) {
    size_t n[5];
    fwd_bf16_sizes(&a, n);
    kv.per_block = n[3] + n[4], kv.v_at = n[3];
    size_t bytes = kv.per_block * (size_t)n_kb * (size_t)nkv * sizeof(uint16_t);
    if (bytes <= KV_PACK_MAX_BYTES) {
      kv.at = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_AUX2, bytes);
      if (!kv.at) return;
      kvp = &kv;
    }
  }
  span qall = span_of(mask->q_pos, mask->q_seg, 0, nq);
  int64_t kv_ld = (int64_t)nkv * d;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    fwd_buf b = fwd_buf_carve(mem + per_thread * (size_t)omp_get_thread_num(), &a, bf16);
    if (kvp) {
#pragma omp for schedule(dynamic, 4) collapse(2)
      for (int g = 0; g < nkv; g++)
        for (int kb = 0; kb < n_kb; kb++) {
          if (spans_disjoint(qall, kspan[kb], mask->window)) continue; /* no query sees it */
          int j0 = kb * ATT_BK, nkb = nk - j0 < ATT_BK ? nk - j0 : ATT_BK;
          uint16_t *kp = kv.at + ((size_t)g * n_kb + kb) * kv.per_block;
          int64_t at = (int64_t)j0 * kv_ld + (int64_t)g * d;
          pack_key_block(isa, kp, kp + kv.v_at, b.kh, k + at, v + at, kv_ld, nkb, d);
        }
    }
#pragma omp for schedule(dynamic, 1) collapse(2)
    for (int qb = 0; qb < n_qb; qb++)
      for (int g = 0; g < nkv; g++)
        fwd_item(isa, &a, out, lse, q, k, v, sinks, mask, kspan, qb, g, bf16, kvp, &b);
  }
}

/* ------------------------------------------------------------------ backward */

/* bf16 operands of the backward (bwd16_*), per KV head: qh [rows, d] the
 * scaled queries and doh [rows, d] dout as A operands; qt and dot the
 * unscaled queries and dout transposed per query block, [d, R] each (blocks
 * of bwd16_block elements), the A operands of dKᵀ and dVᵀ; per key block
 * kpt, vpt [(d+1)/2, ATT_BK, 2] the keys and values packed transposed and
 * kp [ATT_BK/2, d16, 2] the keys packed; per pair th [(R+1)/2, ATT_BK, 2]
 * p or ds packed in row pairs (the B operand of dVᵀ and dKᵀ) and dsh
 * [R, ATT_BK] p or ds as bf16 rows; tf [max(d, ATT_BK), R] fp32 for the
 * gather's transposes; kh [ATT_BK, d] a block's rows. */
typedef struct bwd16_buf {
  uint16_t *qh, *doh, *qt, *dot, *kpt, *vpt, *kp, *th, *dsh, *kh;
  float *tf;
} bwd16_buf;

static size_t bwd16_block(const attn_shape *a) {
  return (size_t)(a->R + 1) / 2 * round16(a->d) * 2;
}

/* u16 elements of each bwd16_buf array but tf (in the struct's order) */
static size_t bwd16_sizes(const attn_shape *a, size_t n[10]) {
  size_t rows = (size_t)a->nq * a->group, n_qb = (size_t)(a->nq + a->bq - 1) / a->bq;
  n[0] = n[1] = rows * a->d;
  n[2] = n[3] = n_qb * bwd16_block(a);
  n[4] = n[5] = (size_t)(a->d + 1) / 2 * ATT_BK * 2;
  n[6] = (size_t)ATT_BK * round16(a->d);
  n[7] = (size_t)(a->R + 1) / 2 * ATT_BK * 2;
  n[8] = (size_t)ATT_BK * a->R;
  n[9] = (size_t)ATT_BK * a->d;
  size_t total = 0;
  for (int i = 0; i < 10; i++) n[i] = (n[i] + 31) & ~(size_t)31, total += n[i];
  return total;
}

/* fp32 elements of tf */
static size_t bwd16_tf_floats(const attn_shape *a) {
  return (size_t)(a->d > ATT_BK ? a->d : ATT_BK) * a->R;
}

static size_t bwd16_floats(const attn_shape *a) {
  size_t n[10];
  return bwd16_sizes(a, n) / 2 + bwd16_tf_floats(a) + 16;
}

static bwd16_buf bwd16_carve(float *p, const attn_shape *a) {
  size_t n[10];
  bwd16_sizes(a, n);
  bwd16_buf b;
  b.tf = p;
  uint16_t *h = (uint16_t *)(void *)(p + ((bwd16_tf_floats(a) + 15) & ~(size_t)15));
  uint16_t **slot[10] = {&b.qh, &b.doh, &b.qt, &b.dot, &b.kpt, &b.vpt, &b.kp, &b.th, &b.dsh, &b.kh};
  for (int i = 0; i < 10; i++) *slot[i] = h, h += n[i];
  return b;
}

typedef struct bwd_buf {
  float *qg, *dog, *dqg; /* [nq·group, d] this KV head's queries, dout, dq */
  float *dg, *lseg;      /* [nq·group] */
  float *kt, *vt;        /* [d, ATT_BK] */
  float *p, *dp;         /* [R, ATT_BK] */
  float *dk, *dv;        /* [ATT_BK, d] */
  float *dkt, *dvt;      /* [d, ATT_BK] the bf16 pairs' dKᵀ, dVᵀ */
  uint64_t *keep;        /* [bq] mask bits per query */
  bwd16_buf h;           /* bf16 operands (bf16 calls only) */
} bwd_buf;

static size_t bwd_buf_floats(const attn_shape *a, int bf16) {
  size_t rows = (size_t)a->nq * a->group;
  return rows * a->d * 3 + rows * 2 + (size_t)a->d * ATT_BK * 2 + (size_t)a->R * ATT_BK * 2 +
         (size_t)ATT_BK * a->d * 4 + (size_t)a->bq * 2 + 64 + (bf16 ? bwd16_floats(a) : 0);
}

static bwd_buf bwd_buf_carve(float *p, const attn_shape *a, int bf16) {
  size_t rows = (size_t)a->nq * a->group;
  bwd_buf b;
  b.qg = p, p += rows * a->d;
  b.dog = p, p += rows * a->d;
  b.dqg = p, p += rows * a->d;
  b.dg = p, p += rows;
  b.lseg = p, p += rows;
  b.kt = p, p += (size_t)a->d * ATT_BK;
  b.vt = p, p += (size_t)a->d * ATT_BK;
  b.p = p, p += (size_t)a->R * ATT_BK;
  b.dp = p, p += (size_t)a->R * ATT_BK;
  b.dk = p, p += (size_t)ATT_BK * a->d;
  b.dv = p, p += (size_t)ATT_BK * a->d;
  b.dkt = p, p += (size_t)ATT_BK * a->d;
  b.dvt = p, p += (size_t)ATT_BK * a->d;
  b.keep = (uint64_t *)(void *)(((uintptr_t)p + 7) & ~(uintptr_t)7);
  p += (size_t)a->bq * 2 + 16;
  if (bf16) b.h = bwd16_carve((float *)(((uintptr_t)p + 63) & ~(uintptr_t)63), a);
  return b;
}

typedef struct bwd_args {
  float *dq, *dk, *dv;
  const float *dout, *out, *lse, *q, *k, *v;
  const mxl_attn_mask *mask;
  const span *kspan, *qspan;
} bwd_args;

/* Gathers KV head g's query rows: qg, dog [nq·group, d], dg = dout·out and
 * lseg [nq·group]; zeroes dqg. */
static void bwd_gather(const mxl_cpu_isa *isa, const attn_shape *a, const bwd_args *x, int g,
                       bwd_buf *b) {
  int d = a->d, group = a->group;
  for (int i = 0; i < a->nq; i++) {
    int64_t src = ((int64_t)i * a->nh + g * group) * d, dst = (int64_t)i * group * d;
    memcpy(b->qg + dst, x->q + src, (size_t)group * d * sizeof(float));
    memcpy(b->dog + dst, x->dout + src, (size_t)group * d * sizeof(float));
    for (int h = 0; h < group; h++) {
      int64_t row = (int64_t)i * a->nh + g * group + h;
      b->dg[i * group + h] = isa->dot_f32(x->dout + row * d, x->out + row * d, d);
      b->lseg[i * group + h] = x->lse[row];
    }
  }
  memset(b->dqg, 0, (size_t)a->nq * group * d * sizeof(float));
}

/* One (key block, query block) pair of KV head g. */
static void bwd_pair(const mxl_cpu_isa *isa, const attn_shape *a, const bwd_args *x, int g,
                     int kb, int qb, const float *kblk, bwd_buf *b) {
  int d = a->d, group = a->group, i0 = qb * a->bq, j0 = kb * ATT_BK;
  int nqb = a->nq - i0 < a->bq ? a->nq - i0 : a->bq, R = nqb * group;
  int nkb = a->nk - j0 < ATT_BK ? a->nk - j0 : ATT_BK;
  int64_t kv_ld = (int64_t)a->nkv * d;
  (void)g;
  if (!block_mask(b->keep, x->mask, i0, nqb, j0, nkb)) return;
  const float *qb_rows = b->qg + (int64_t)i0 * group * d;  /* [R, d] */
  const float *dob = b->dog + (int64_t)i0 * group * d;     /* [R, d] */
  float *dqb = b->dqg + (int64_t)i0 * group * d;           /* [R, d] */
  /* p = exp(scale·q·k − lse), masked */
  isa->gemm_f32_nn(b->p, ATT_BK, qb_rows, d, 1, b->kt, ATT_BK, R, nkb, d, a->scale, 0);
  for (int r = 0; r < R; r++) {
    float *pr = b->p + r * ATT_BK;
    isa->masked_exp_f32(pr, pr, b->keep[r / group], nkb, b->lseg[i0 * group + r]);
  }
  /* dV += pᵀ·dout (p read transposed: element (j, r) at r·ATT_BK + j) */
  isa->gemm_f32_nn(b->dv, d, b->p, 1, ATT_BK, dob, d, nkb, d, R, 1.0f, 1);
  /* dp = dout·vᵀ, ds = p·(dp − D) (in dp) */
  isa->gemm_f32_nn(b->dp, ATT_BK, dob, d, 1, b->vt, ATT_BK, R, nkb, d, 1.0f, 0);
  for (int r = 0; r < R; r++)
    isa->mul_sub_f32(b->dp + r * ATT_BK, b->p + r * ATT_BK, b->dg[i0 * group + r], nkb);
  /* dK += scale·dsᵀ·q;  dQ += scale·ds·k */
  isa->gemm_f32_nn(b->dk, d, b->dp, 1, ATT_BK, qb_rows, d, nkb, d, R, a->scale, 1);
  isa->gemm_f32_nn(dqb, d, b->dp, ATT_BK, 1, kblk, kv_ld, R, d, nkb, a->scale, 1);
}

/* The bf16 operands of head g from its gathered rows: doh, then dout and
 * the unscaled queries packed per query block, then the scaled queries
 * (qg is scaled in place: the fp32 copy is not read after this). */
static void bwd16_gather(const mxl_cpu_isa *isa, const attn_shape *a, bwd_buf *b) {
  int d = a->d, group = a->group, n_qb = (a->nq + a->bq - 1) / a->bq;
  size_t rows = (size_t)a->nq * group, blk = bwd16_block(a);
  const bwd16_buf *h = &b->h;
  isa->to_bf16(h->doh, b->dog, rows * d);
  for (int qb = 0; qb < n_qb; qb++) {
    int i0 = qb * a->bq, R = (a->nq - i0 < a->bq ? a->nq - i0 : a->bq) * group;
    size_t at = (size_t)i0 * group * d;
    isa->transpose_f32(h->tf, R, b->dog + at, d, R, d);
    isa->to_bf16(h->dot + qb * blk, h->tf, (size_t)d * R);
    isa->transpose_f32(h->tf, R, b->qg + at, d, R, d);
    isa->to_bf16(h->qt + qb * blk, h->tf, (size_t)d * R);
  }
  isa->scale_f32(b->qg, a->scale, (int)(rows * d));
  isa->to_bf16(h->qh, b->qg, rows * d);
}

/* Key block rows kblk, vblk [nkb, kv_ld] as the pair products' B operands. */
static void bwd16_pack_keys(const mxl_cpu_isa *isa, const attn_shape *a, const float *kblk,
                            const float *vblk, int nkb, bwd16_buf *h) {
  int d = a->d;
  int64_t kv_ld = (int64_t)a->nkv * d;
  rows_to_bf16(isa, h->kh, kblk, kv_ld, nkb, d);
  isa->pack_vnni_t_bf16(h->kpt, ATT_BK, h->kh, d, nkb, d);
  isa->pack_vnni_bf16(h->kp, round16(d), h->kh, d, nkb, d);
  rows_to_bf16(isa, h->kh, vblk, kv_ld, nkb, d);
  isa->pack_vnni_t_bf16(h->vpt, ATT_BK, h->kh, d, nkb, d);
}

/* The [R, nkb] block m (row stride ATT_BK) as bf16 rows dsh and packed in
 * row pairs th: the B operand of dVᵀ += doutᵀ·p and dKᵀ += qᵀ·ds, whose
 * A operands (dot, qt) are transposed once per head, where pᵀ and dsᵀ as A
 * operands needed an fp32 transpose per pair. */
static void bwd16_pairs(const mxl_cpu_isa *isa, bwd16_buf *h, const float *m, int R, int nkb) {
  for (int r = 0; r < R; r++)
    isa->to_bf16(h->dsh + (size_t)r * ATT_BK, m + (size_t)r * ATT_BK, (size_t)nkb);
  isa->pack_vnni_bf16(h->th, ATT_BK, h->dsh, ATT_BK, R, nkb);
}

/* bwd_pair with bf16 operands; dK and dQ are left unscaled. */
static void bwd16_pair(const mxl_cpu_isa *isa, const attn_shape *a, const bwd_args *x, int kb,
                       int qb, bwd_buf *b) {
  int d = a->d, group = a->group, i0 = qb * a->bq, j0 = kb * ATT_BK;
  int nqb = a->nq - i0 < a->bq ? a->nq - i0 : a->bq, R = nqb * group;
  int nkb = a->nk - j0 < ATT_BK ? a->nk - j0 : ATT_BK;
  if (!block_mask(b->keep, x->mask, i0, nqb, j0, nkb)) return;
  bwd16_buf *h = &b->h;
  size_t at = (size_t)i0 * group * d, blk = bwd16_block(a);
  /* p = exp(scale·q·k − lse), masked */
  isa->gemm_bf16_vnni(b->p, ATT_BK, h->qh + at, NULL, d, h->kpt, ATT_BK, R, nkb, d, 0);
  for (int r = 0; r < R; r++) {
    float *pr = b->p + r * ATT_BK;
    isa->masked_exp_f32(pr, pr, b->keep[r / group], nkb, b->lseg[i0 * group + r]);
  }
  /* dVᵀ += doutᵀ·p */
  bwd16_pairs(isa, h, b->p, R, nkb);
  isa->gemm_bf16_vnni(b->dvt, ATT_BK, h->dot + qb * blk, NULL, R, h->th, ATT_BK, d, nkb, R, 1);
  /* dp = dout·vᵀ, ds = p·(dp − D) (in dp) */
  isa->gemm_bf16_vnni(b->dp, ATT_BK, h->doh + at, NULL, d, h->vpt, ATT_BK, R, nkb, d, 0);
  for (int r = 0; r < R; r++)
    isa->mul_sub_f32(b->dp + r * ATT_BK, b->p + r * ATT_BK, b->dg[i0 * group + r], nkb);
  /* dKᵀ += qᵀ·ds;  dQ += ds·k */
  bwd16_pairs(isa, h, b->dp, R, nkb);
  isa->gemm_bf16_vnni(b->dkt, ATT_BK, h->qt + qb * blk, NULL, R, h->th, ATT_BK, d, nkb, R, 1);
  isa->gemm_bf16_vnni(b->dqg + at, d, h->dsh, NULL, ATT_BK, h->kp, round16(d), R, d, nkb, 1);
}

static void bwd_head(const mxl_cpu_isa *isa, const attn_shape *a, const bwd_args *x, int g,
                     int bf16, bwd_buf *b) {
  int d = a->d, group = a->group, n_qb = (a->nq + a->bq - 1) / a->bq;
  int64_t kv_ld = (int64_t)a->nkv * d;
  float dkq_scale = bf16 ? a->scale : 1.0f; /* bf16 pairs leave dK, dQ unscaled */
  bwd_gather(isa, a, x, g, b);
  if (bf16) bwd16_gather(isa, a, b);
  for (int kb = 0; kb * ATT_BK < a->nk; kb++) {
    int j0 = kb * ATT_BK, nkb = a->nk - j0 < ATT_BK ? a->nk - j0 : ATT_BK;
    const float *kblk = x->k + (int64_t)j0 * kv_ld + (int64_t)g * d;
    const float *vblk = x->v + (int64_t)j0 * kv_ld + (int64_t)g * d;
    int touched = 0;
    for (int qb = 0; qb < n_qb; qb++) {
      if (spans_disjoint(x->qspan[qb], x->kspan[kb], x->mask->window)) continue;
      if (!touched) {
        if (bf16) {
          bwd16_pack_keys(isa, a, kblk, vblk, nkb, &b->h);
        } else {
          transpose_block(isa, b->kt, kblk, kv_ld, nkb, d);
          transpose_block(isa, b->vt, vblk, kv_ld, nkb, d);
        }
        memset(bf16 ? b->dkt : b->dk, 0, (size_t)ATT_BK * d * sizeof(float));
        memset(bf16 ? b->dvt : b->dv, 0, (size_t)ATT_BK * d * sizeof(float));
        touched = 1;
      }
      if (bf16) bwd16_pair(isa, a, x, kb, qb, b);
      else bwd_pair(isa, a, x, g, kb, qb, kblk, b);
    }
    if (!touched) continue;
    if (bf16) { /* dKᵀ, dVᵀ [d, ATT_BK] back to rows */
      isa->transpose_f32(b->dk, d, b->dkt, ATT_BK, d, nkb);
      isa->transpose_f32(b->dv, d, b->dvt, ATT_BK, d, nkb);
    }
    for (int j = 0; j < nkb; j++) {
      int64_t row = ((int64_t)(j0 + j) * a->nkv + g) * d;
      isa->axpy_f32(x->dk + row, dkq_scale, b->dk + j * d, d);
      isa->axpy_f32(x->dv + row, 1.0f, b->dv + j * d, d);
    }
  }
  for (int i = 0; i < a->nq; i++)
    isa->axpy_f32(x->dq + ((int64_t)i * a->nh + g * group) * d, dkq_scale,
                  b->dqg + (int64_t)i * group * d, group * d);
}

/* The simple backward for fewer KV heads than threads: queries (dq) then
 * keys (dk, dv), each row owned by one thread, p recomputed per pair. */
static void bwd_by_rows(mxl_backend *be, const attn_shape *a, const bwd_args *x,
                        const float *D) {
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  int d = a->d, group = a->group, nh = a->nh, nkv = a->nkv;
  const mxl_attn_mask *m = x->mask;
  int nt = mxl_cpu_attention_threads(be, a->nq, a->nk, nh, nkv, d, 3);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(dynamic, 4) collapse(2)
  for (int i = 0; i < a->nq; i++)
    for (int h = 0; h < nh; h++) {
      int64_t row = (int64_t)i * nh + h;
      int g = h / group;
      for (int j = 0; j < a->nk; j++) {
        if (m->k_seg[j] != m->q_seg[i] || m->k_pos[j] > m->q_pos[i] ||
            (m->window && (int64_t)m->q_pos[i] - m->k_pos[j] >= m->window))
          continue;
        const float *kj = x->k + ((int64_t)j * nkv + g) * d, *vj = x->v + ((int64_t)j * nkv + g) * d;
        float p = expf(a->scale * isa->dot_f32(x->q + row * d, kj, d) - x->lse[row]);
        float ds = p * (isa->dot_f32(x->dout + row * d, vj, d) - D[row]);
        isa->axpy_f32(x->dq + row * d, a->scale * ds, kj, d);
      }
    }
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(dynamic, 4) collapse(2)
  for (int j = 0; j < a->nk; j++)
    for (int g = 0; g < nkv; g++) {
      int64_t kv = (int64_t)j * nkv + g;
      for (int i = 0; i < a->nq; i++) {
        if (m->k_seg[j] != m->q_seg[i] || m->k_pos[j] > m->q_pos[i] ||
            (m->window && (int64_t)m->q_pos[i] - m->k_pos[j] >= m->window))
          continue;
        for (int h = g * group; h < (g + 1) * group; h++) {
          int64_t row = (int64_t)i * nh + h;
          float p = expf(a->scale * isa->dot_f32(x->q + row * d, x->k + kv * d, d) - x->lse[row]);
          float ds = p * (isa->dot_f32(x->dout + row * d, x->v + kv * d, d) - D[row]);
          isa->axpy_f32(x->dk + kv * d, a->scale * ds, x->q + row * d, d);
          isa->axpy_f32(x->dv + kv * d, p, x->dout + row * d, d);
        }
      }
    }
}

void mxl_cpu_attention_bwd(mxl_backend *be, float *dq, float *dk, float *dv, const float *dout,
                           const float *out, const float *lse, const float *q, const float *k,
                           const float *v, const uint16_t *sinks, const mxl_attn_mask *mask,
                           int nq, int nk, int nh, int nkv, int d, float scale) {
  (void)sinks; /* frozen; their effect is inside lse */
  if (nq <= 0 || nk <= 0) return;
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  attn_shape a = attn_shape_of(nq, nk, nh, nkv, d, scale);
  bwd_args x = {dq, dk, dv, dout, out, lse, q, k, v, mask, NULL, NULL};
  if (nkv < be->n_threads) {
    float *D = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_AUX, (size_t)nq * nh * sizeof *D);
    if (!D) return;
    int nt = mxl_cpu_threads_for(be, (double)nq * nh * d * 8, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t r = 0; r < (int64_t)nq * nh; r++) D[r] = isa->dot_f32(dout + r * d, out + r * d, d);
    bwd_by_rows(be, &a, &x, D);
    return;
  }
  int n_kb = (nk + ATT_BK - 1) / ATT_BK, n_qb = (nq + a.bq - 1) / a.bq;
  int bf16 = attn_bf16(be, nq);
  size_t per_thread = (bwd_buf_floats(&a, bf16) + 15) & ~(size_t)15;
  float *mem = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_THREAD, per_thread * 4 * (size_t)be->n_threads);
  span *spans = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_AUX, (size_t)(n_kb + n_qb) * sizeof *spans);
  if (!mem || !spans) return;
  key_spans(spans, mask, nk);
  for (int qb = 0; qb < n_qb; qb++) {
    int i0 = qb * a.bq, n = nq - i0 < a.bq ? nq - i0 : a.bq;
    spans[n_kb + qb] = span_of(mask->q_pos, mask->q_seg, i0, n);
  }
  x.kspan = spans;
  x.qspan = spans + n_kb;
  int nt = mxl_cpu_attention_threads(be, nq, nk, nh, nkv, d, 5);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    bwd_buf b = bwd_buf_carve(mem + per_thread * (size_t)omp_get_thread_num(), &a, bf16);
#pragma omp for schedule(dynamic, 1)
    for (int g = 0; g < nkv; g++) bwd_head(isa, &a, &x, g, bf16, &b);
  }
}
