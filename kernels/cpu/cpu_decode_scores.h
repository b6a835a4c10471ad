/* The decode attention's scores on 8-lane vectors, for the AVX2 and
 * AVX-512 tables (cpu_internal.h attn_decode_block): included by
 * cpu_isa_avx2.c and cpu_isa_avx512.c after their TARGET, INLINE and UNROLL
 * macros, so each compiles it for its own instruction set.
 *
 * Lane 2h + p of a key's accumulator sums q[h, 2c + p]·k[2c + p] over the
 * pairs c: the pair layout's 16 lanes are two 8-lane vectors (heads 0-3,
 * 4-7; the second only past 4 heads), and each key's pair of floats is
 * broadcast from memory. On Zen 4 a pair broadcast into 8 lanes costs
 * nothing beside the FMAs, into 16 (zmm) a shuffle: the same FMA work in
 * 8-lane vectors ran 1.4x faster (2.2 against 3.0 ns per step of 8 keys,
 * from L1). A key's two accumulators give its 8 scores by one horizontal
 * add and a lane permutation, s [nkb, 8]. */
#ifndef MXL_CPU_DECODE_SCORES_H
#define MXL_CPU_DECODE_SCORES_H

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

#endif
