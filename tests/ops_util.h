/* Shared helpers of the op tests (ops_driver.h, test_grad.c, ...): a seeded random
 * generator, random bf16 / MXFP4 weights, routing plans and attention masks
 * built on the host by the tests' own code (never by a backend). */
#ifndef MXL_TESTS_OPS_UTIL_H
#define MXL_TESTS_OPS_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/bf16.h"
#include "core/rng.h"
#include "kernels/mxfp4.h"

/* Σ(b − r)² / Σr² (Σ(b − r)² when r is all zero). */
static inline double nmse_f32(const float *b, const float *r, size_t n) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < n; i++) {
    err += ((double)b[i] - r[i]) * ((double)b[i] - r[i]);
    norm += (double)r[i] * r[i];
  }
  return norm > 0 ? err / norm : err;
}

/* splitmix64: small, seedable, good enough for test data. */
typedef struct test_rng {
  uint64_t s;
} test_rng;

static inline uint64_t rng_next(test_rng *r) { return mxl_splitmix64(&r->s); }

/* Uniform in [0, 1) with 53 random bits. */
static inline double rng_unit(test_rng *r) { return (double)(rng_next(r) >> 11) * 0x1p-53; }

/* Uniform in [lo, hi). */
static inline double rng_uniform(test_rng *r, double lo, double hi) {
  return lo + (hi - lo) * rng_unit(r);
}

/* Integer in [0, n). */
static inline int rng_int(test_rng *r, int n) { return (int)(rng_next(r) % (uint64_t)n); }

/* Standard normal (Box-Muller). */
static inline double rng_normal(test_rng *r) {
  double u = rng_unit(r), v = rng_unit(r);
  return sqrt(-2.0 * log(1.0 - u)) * cos(2.0 * M_PI * v);
}

static inline void rng_fill_f32(test_rng *r, float *x, size_t n, double lo, double hi) {
  for (size_t i = 0; i < n; i++) x[i] = (float)rng_uniform(r, lo, hi);
}

static inline void rng_fill_bf16(test_rng *r, uint16_t *x, size_t n, double lo, double hi) {
  for (size_t i = 0; i < n; i++) x[i] = mxl_f32_to_bf16((float)rng_uniform(r, lo, hi));
}

/* Random MXFP4 blocks and scales for `rows` rows of `cols` values: every
 * nibble is random, scale bytes are bias + [-3, 0] so values stay O(1..6). */
static inline void rng_fill_mxfp4(test_rng *r, uint8_t *blocks, uint8_t *scales, int64_t rows,
                                  int64_t cols, int scale_bias) {
  int64_t nb = cols / MXL_MXFP4_BLOCK;
  for (int64_t i = 0; i < rows * nb * MXL_MXFP4_BLOCK_BYTES; i++)
    blocks[i] = (uint8_t)rng_next(r);
  for (int64_t i = 0; i < rows * nb; i++) scales[i] = (uint8_t)(scale_bias - rng_int(r, 4));
}

/* k distinct experts per token, in random order — experts [n, k]. */
static inline void rng_experts(test_rng *r, int32_t *experts, int n, int k, int E) {
  for (int t = 0; t < n; t++)
    for (int q = 0; q < k; q++) {
      int e, dup;
      do {
        e = rng_int(r, E);
        dup = 0;
        for (int p = 0; p < q; p++) dup |= experts[t * k + p] == e;
      } while (dup);
      experts[t * k + q] = e;
    }
}

/* The grouped plan by counting sort (the tests' own construction):
 * order, slot [n*k], offsets [E+1] from experts [n, k]. */
static inline void host_moe_plan(int32_t *order, int32_t *slot, int32_t *offsets,
                                 const int32_t *experts, int n, int k, int E) {
  int m = n * k;
  memset(offsets, 0, sizeof *offsets * (size_t)(E + 1));
  for (int a = 0; a < m; a++) offsets[experts[a] + 1]++;
  for (int e = 0; e < E; e++) offsets[e + 1] += offsets[e];
  int32_t *fill = calloc((size_t)E, sizeof *fill);
  for (int a = 0; a < m; a++) {
    int e = experts[a], i = offsets[e] + fill[e]++;
    order[i] = a;
    slot[a] = i;
  }
  free(fill);
}

/* Attention mask layouts used by the tests. */
typedef enum mask_kind {
  MASK_CAUSAL,  /* one sequence, positions 0..n-1, nq == nk */
  MASK_PACKED,  /* `segs` documents packed back to back, positions restart */
  MASK_KVCACHE, /* nk cache slots as a ring: every 4th slot empty (seg -1),
                   the nq queries are the newest positions */
  MASK_ORPHAN,  /* like causal, but query 0 sits in a segment no key has */
} mask_kind;

/* Fills q_pos, q_seg [nq] and k_pos, k_seg [nk]. */
static inline void build_mask(mask_kind kind, int segs, int32_t *q_pos, int32_t *q_seg,
                              int32_t *k_pos, int32_t *k_seg, int nq, int nk) {
  if (kind == MASK_KVCACHE) {
    /* Slots hold positions in a shuffled ring order; positions run
     * 0..nk-1 + a base so that they exceed any small window. */
    int base = 1000, newest = base + nk - 1;
    for (int j = 0; j < nk; j++) {
      k_pos[j] = base + (j * 7) % nk; /* 7 coprime with the sizes used */
      k_seg[j] = (j % 4 == 3) ? -1 : 0;
    }
    for (int i = 0; i < nq; i++) {
      q_pos[i] = newest - (nq - 1 - i);
      q_seg[i] = 0;
    }
    return;
  }
  /* causal, packed and orphan: queries are the keys (nq == nk) */
  if (segs < 1) segs = 1;
  int per = (nk + segs - 1) / segs;
  for (int j = 0; j < nk; j++) {
    int s = kind == MASK_PACKED ? j / per : 0;
    k_seg[j] = s;
    k_pos[j] = kind == MASK_PACKED ? j - s * per : j;
  }
  for (int i = 0; i < nq; i++) {
    q_seg[i] = k_seg[i];
    q_pos[i] = k_pos[i];
  }
  if (kind == MASK_ORPHAN) q_seg[0] = 99;
}

/* inv_freq[i] = 150000^(-2i/d), i < d/2 (a plain RoPE table). */
static inline void rope_table(float *inv_freq, int d) {
  for (int i = 0; i < d / 2; i++) inv_freq[i] = (float)pow(150000.0, -2.0 * i / d);
}

#endif
