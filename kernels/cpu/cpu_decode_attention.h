/* The decode attention's products on 8-lane vectors, for the AVX2 and
 * AVX-512 tables (cpu_internal.h attn_decode_block): included by
 * cpu_isa_avx2.c and cpu_isa_avx512.c after their TARGET, INLINE and UNROLL
 * macros, so each compiles them for its own instruction set (the AVX-512
 * build with twice the keys and heads per step in its 32 registers).
 *
 * Scores: lane 2h + p of a key's accumulator sums q[h, 2c + p]·k[2c + p] over the
 * pairs c: the pair layout's 16 lanes are two 8-lane vectors (heads 0-3,
 * 4-7; the second only past 4 heads), and each key's pair of floats is
 * broadcast from memory. On Zen 4 a pair broadcast into 8 lanes costs
 * nothing beside the FMAs, into 16 (zmm) a shuffle: the same FMA work in
 * 8-lane vectors ran 1.4x faster (2.2 against 3.0 ns per step of 8 keys,
 * from L1). A key's two accumulators give its 8 scores by one horizontal
 * add and a lane permutation, s [nkb, 8].
 * Σ p·v: 16 columns of o per head in two 8-lane vectors; on Zen 4 these
 * ran as fast as 32 columns in two 16-lane vectors did (1.41 against 1.45
 * µs per 64-key block of 8 heads, in L2). */
#ifndef MXL_CPU_DECODE_ATTENTION_H
#define MXL_CPU_DECODE_ATTENTION_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

/* A key's floats c, c + 1 in every lane pair. */
INLINE __m256 pair_broadcast8(const float *p) {
  double t;
  memcpy(&t, p, sizeof t);
  return _mm256_castpd_ps(_mm256_set1_pd(t));
}

/* s [nkb rounded up to `keys`, 8] = the scores of every key (kept or
 * not), `keys` (4 or 8, a constant: 16 or 32 vector registers) a step, two
 * vectors per pair when `two`; meanwhile the lines of pf_k and pf_v, one
 * of each per step (a burst of them filled the load queue and the work
 * waited on memory). */
INLINE void decode_scores8(float *s, const float *q2, const float *k, int64_t ld, int nkb, int d,
                           int keys, int two, const float *pf_k, const float *pf_v,
                           int64_t pf_bytes) {
  const char *pk = (const char *)pf_k, *pv = (const char *)pf_v;
  const __m256i order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7); /* after hadd */
  int64_t at = 0;
  for (int j0 = 0; j0 < nkb; j0 += keys) {
    const float *kr[8];
    __m256 lo[8], hi[8];
    UNROLL
    for (int jj = 0; jj < keys; jj++) {
      kr[jj] = k + (int64_t)(j0 + jj < nkb ? j0 + jj : j0) * ld; /* past nkb: a copy */
      lo[jj] = hi[jj] = _mm256_setzero_ps();
    }
    for (int c = 0; c < d / 2; c++) {
      if (at < pf_bytes) {
        _mm_prefetch(pk + at, _MM_HINT_T1);
        _mm_prefetch(pv + at, _MM_HINT_T1);
        at += 64;
      }
      __m256 q0 = _mm256_loadu_ps(q2 + c * 16);
      if (two) {
        __m256 q1 = _mm256_loadu_ps(q2 + c * 16 + 8);
        UNROLL
        for (int jj = 0; jj < keys; jj++) {
          __m256 b = pair_broadcast8(kr[jj] + 2 * c);
          lo[jj] = _mm256_fmadd_ps(q0, b, lo[jj]);
          hi[jj] = _mm256_fmadd_ps(q1, b, hi[jj]);
        }
      } else {
        UNROLL
        for (int jj = 0; jj < keys; jj++)
          lo[jj] = _mm256_fmadd_ps(q0, pair_broadcast8(kr[jj] + 2 * c), lo[jj]);
      }
    }
    UNROLL
    for (int jj = 0; jj < keys; jj++) /* lanes h0 h1 h4 h5 h2 h3 h6 h7, put in order */
      _mm256_storeu_ps(s + (j0 + jj) * 8,
                       _mm256_permutevar8x32_ps(_mm256_hadd_ps(lo[jj], hi[jj]), order));
  }
  for (; at < pf_bytes; at += 64) { /* more than a line per step */
    _mm_prefetch(pk + at, _MM_HINT_T1);
    _mm_prefetch(pv + at, _MM_HINT_T1);
  }
}

/* o[h, 0:d] += Σ_j p[j, h]·v[j, 0:d] over the kept keys, heads h < group:
 * `heads` (4 or 8, a constant) heads × 16 columns of o in registers a pass,
 * each key's value row read where it lies, p broadcast per head. */
INLINE void decode_pv8(float *o, const float *s, const float *v, int64_t ld, int nkb,
                       uint64_t keep, int group, int d, int heads) {
  for (int h0 = 0; h0 < group; h0 += heads) {
    const int nh = group - h0 < heads ? group - h0 : heads;
    for (int c0 = 0; c0 < d; c0 += 16) {
      __m256 acc[8][2];
      UNROLL
      for (int h = 0; h < heads; h++) {
        acc[h][0] = acc[h][1] = _mm256_setzero_ps(); /* unused past nh */
        if (h >= nh) continue;
        acc[h][0] = _mm256_loadu_ps(o + (h0 + h) * d + c0);
        acc[h][1] = _mm256_loadu_ps(o + (h0 + h) * d + c0 + 8);
      }
      for (int j = 0; j < nkb; j++) {
        if (!(keep >> j & 1)) continue;
        __m256 v0 = _mm256_loadu_ps(v + j * ld + c0), v1 = _mm256_loadu_ps(v + j * ld + c0 + 8);
        UNROLL
        for (int h = 0; h < heads; h++) {
          if (h >= nh) break;
          __m256 p = _mm256_broadcast_ss(s + j * 8 + h0 + h);
          acc[h][0] = _mm256_fmadd_ps(p, v0, acc[h][0]);
          acc[h][1] = _mm256_fmadd_ps(p, v1, acc[h][1]);
        }
      }
      UNROLL
      for (int h = 0; h < heads; h++) {
        if (h >= nh) break;
        _mm256_storeu_ps(o + (h0 + h) * d + c0, acc[h][0]);
        _mm256_storeu_ps(o + (h0 + h) * d + c0 + 8, acc[h][1]);
      }
    }
  }
}

#endif
