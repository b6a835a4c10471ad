/* The integer MXFP4 products of decoding and of few rows, for AVX-512 with
 * VNNI (vpdpbusd): the fast path of the avx512bf16 table for MXFP4 groups
 * of one to a few activation rows.
 *
 * Why integers: the bf16 GEMV (cpu_isa_avx512.c) spends 4 vpermw and 4
 * vdpbf16ps per 128 weights; on Intel, where vdpbf16ps runs at half the
 * FMA rate, it reaches only 14 GB/s per core with its weights in L2, less
 * than one core streams (15.6 GB/s), so decode could not run at memory
 * speed. Here the E2M1 codes become bytes with one vpshufb per 64 and the
 * products run on vpdpbusd: 21 GB/s per core on the same weights.
 *
 * The arithmetic, on the same bf16 activations as the bf16 kernel:
 *   - weights: each E2M1 value v doubled is an integer in [-12, 12]; the
 *     table gives u = 2v + 12 in [0, 24] (vpdpbusd wants one unsigned
 *     operand), and the 12 is taken back with the activation sums below.
 *   - activations, per block of 32 with max |x| < 2^e: q = x · 2^(22 − e),
 *     |q| < 2^22, an integer for every element within 2^-15 of the block's
 *     largest (a bf16 significand has 8 bits), so those are exact; smaller
 *     ones round to the step, 2^-22 of the block's largest at most. q =
 *     65536·h + 256·m + l with h, m, l int8: six vpdpbusd per 64 weights
 *     give Σ u·h, Σ u·m and Σ u·l exactly in int32.
 *   - per lane (8 elements of one block): t = 65536·Σu·h + 256·Σu·m +
 *     Σu·l − 12·Σq = Σ 2v·q, below 2^29 in magnitude (exact in int32;
 *     rounded to fp32 like an fp32 accumulation); it is scaled by
 *     2^(e − 23) and by 2^(s − bias), each exact while the products stay
 *     in fp32's range, and summed in fp32.
 * So the numerics are the bf16 kernel's (bf16 inputs, exact products, fp32
 * sums) but for elements under 2^-15 of their block's largest, rounded by
 * under 2^-22 of it. Exact mode (x_lo) keeps the bf16 kernel. Blocks
 * holding NaN or ±inf give NaN; blocks whose largest magnitude is below
 * 2^-127 count as zeros (vdpbf16ps reads bf16 subnormals, below 2^-126, as
 * zeros too). Rows with scales outside [-125, 125] (never in real
 * checkpoints; also the NaN code) take the portable decode.
 *
 * Layout of a quantized row: per 128 elements (4 blocks, one 128-bit lane
 * each) a q8_group; byte i of lane b of a plane's half p holds element
 * 2i + p of block b, the order of the nibbles in the MXFP4 bytes (low
 * nibble: even element), so one 64-byte load of weights meets its
 * activations with no shuffle. */
#if defined(__x86_64__) || defined(__i386__)

#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/cpu_mxfp4_group_avx512.h"
#include "kernels/mxfp4.h"

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma")))
#define INLINE TARGET static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 16")

typedef struct q8_group {
  int8_t plane[3][2][64]; /* h, m, l; of the even and the odd elements */
  int32_t corr[16];       /* per lane: −12·Σ q over its 8 elements */
  float step[16];         /* per lane: 2^(e − 23), the block's step halved (weights enter doubled) */
} q8_group;
_Static_assert(sizeof(q8_group) == MXL_CPU_Q8_GROUP_BYTES, "q8_group layout");

enum {
  Q8_PREFETCH = 6144, /* bytes ahead of the tile in flight, as the bf16 kernel's MX_PREFETCH */
  Q8_NR = 4,          /* weight rows per tile at most */
  Q8_MR = 4,          /* activation rows per tile at most */
};

/* 2v + 12 for the E2M1 codes 0..15 (8..15: the negatives), per 128-bit lane */
static const int8_t e2m1_doubled_u8[16] = {12, 13, 14, 15, 16, 18, 20, 24,
                                           12, 11, 10, 9,  8,  6,  4,  0};

INLINE __m512 bf16x16_to_f32(const uint16_t *x) {
  __m256i h = _mm256_loadu_si256((const __m256i *)x);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Stores int32 parts p0 (elements 0..15) and p1 (16..31) of a block as the
 * bytes of the even and the odd half of plane `pl`, lane `lane`. */
INLINE void store_plane(q8_group *g, int pl, int lane, __m512i p0, __m512i p1) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  _mm_storeu_si128((__m128i *)(g->plane[pl][0] + lane * 16),
                   _mm512_cvtepi32_epi8(_mm512_permutex2var_epi32(p0, even, p1)));
  _mm_storeu_si128((__m128i *)(g->plane[pl][1] + lane * 16),
                   _mm512_cvtepi32_epi8(_mm512_permutex2var_epi32(p0, odd, p1)));
}

/* q = 256·hi + lo with lo in [-128, 127]: returns lo, leaves hi in *q. */
INLINE __m512i split_byte(__m512i *q) {
  __m512i hi = _mm512_srai_epi32(_mm512_add_epi32(*q, _mm512_set1_epi32(128)), 8);
  __m512i lo = _mm512_sub_epi32(*q, _mm512_slli_epi32(hi, 8));
  *q = hi;
  return lo;
}

/* One block of 32 bf16 activations into lane `lane` of group g. */
INLINE void quantize_block(q8_group *g, int lane, const uint16_t *x) {
  __m512 x0 = bf16x16_to_f32(x), x1 = bf16x16_to_f32(x + 16);
  float mx = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
  if (!(mx <= FLT_MAX)) { /* NaN or inf: the block's products are NaN */
    for (int j = 0; j < 4; j++) g->step[lane * 4 + j] = NAN;
    return;
  }
  if (mx == 0) return; /* zeros: the group was cleared */
  int e;
  (void)frexpf(mx, &e); /* mx < 2^e */
  __m512 up = _mm512_set1_ps((float)(22 - e));
  /* scalef by a power of two is exact; cvtps rounds to nearest even */
  __m512i q0 = _mm512_cvtps_epi32(_mm512_scalef_ps(x0, up));
  __m512i q1 = _mm512_cvtps_epi32(_mm512_scalef_ps(x1, up));
  int32_t q[32];
  _mm512_storeu_si512(q, q0);
  _mm512_storeu_si512(q + 16, q1);
  __m512i l0 = split_byte(&q0), l1 = split_byte(&q1);
  __m512i m0 = split_byte(&q0), m1 = split_byte(&q1);
  store_plane(g, 0, lane, q0, q1);
  store_plane(g, 1, lane, m0, m1);
  store_plane(g, 2, lane, l0, l1);
  float step = ldexpf(1.0f, e - 23);
  for (int j = 0; j < 4; j++) { /* lane j: bytes 4j..4j+3 of both halves, elements 8j..8j+7 */
    int32_t sum = 0;
    for (int t = 8 * j; t < 8 * j + 8; t++) sum += q[t];
    g->corr[lane * 4 + j] = -12 * sum;
    g->step[lane * 4 + j] = step;
  }
}

TARGET void mxl_a5_quantize_q8(void *dst, const uint16_t *x, int K) {
  q8_group *G = dst;
  int ng = (K + 127) / 128;
  memset(G, 0, (size_t)ng * sizeof *G);
  for (int b = 0; b < K / MXL_MXFP4_BLOCK; b++) quantize_block(&G[b / 4], b % 4, x + b * 32);
}

typedef struct q8_consts {
  __m512i table, nibble;     /* e2m1_doubled_u8 in every lane; 0x0F bytes */
  mxl_a5_scale_consts scale; /* the scale bytes to their lanes */
} q8_consts;

INLINE q8_consts q8_consts_of(int bias) {
  q8_consts c;
  c.table = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)e2m1_doubled_u8));
  c.nibble = _mm512_set1_epi8(0x0F);
  c.scale = mxl_a5_scale_consts_of(bias);
  return c;
}

/* Group g of MR activation rows (quantized rows ldq groups apart, G at
 * group g of the first) × NR weight rows (row_blocks apart) into acc;
 * `tail` blocks (1..3) when the rows end inside the group, else 0. Each
 * weight vector is decoded once for the MR rows; one row's activations stay
 * in registers across the NR weight rows, several rows' are read from L1
 * where they are used. */
INLINE void q8_group_tile(const int MR, const int NR, __m512 acc[Q8_MR][Q8_NR],
                          const q8_group *G, int64_t ldq, int g, int tail,
                          const uint8_t *blocks, const uint8_t *scales, int64_t row_blocks,
                          const q8_consts *c, const uint8_t *pf_end) {
  UNROLL
  for (int n = 0; n < NR; n++) {
    const uint8_t *ahead = blocks + Q8_PREFETCH + ((int64_t)g * NR + n) * 64;
    if (ahead < pf_end) _mm_prefetch((const char *)ahead, _MM_HINT_T0);
    const uint8_t *b = blocks + (n * row_blocks + g * 4) * MXL_MXFP4_BLOCK_BYTES;
    const uint8_t *s = scales + n * row_blocks + g * 4;
    uint32_t sc;
    __m512i w = mxl_a5_load_group(b, s, tail, &sc);
    __m512i even = _mm512_shuffle_epi8(c->table, _mm512_and_si512(w, c->nibble));
    __m512i odd = _mm512_shuffle_epi8(c->table, _mm512_and_si512(_mm512_srli_epi16(w, 4), c->nibble));
    __m512 S = mxl_a5_scale_lanes(sc, &c->scale);
    UNROLL
    for (int m = 0; m < MR; m++) {
      const q8_group *a = G + m * ldq;
      __m512i th = _mm512_dpbusd_epi32(_mm512_setzero_si512(), even, _mm512_load_si512(a->plane[0][0]));
      th = _mm512_dpbusd_epi32(th, odd, _mm512_load_si512(a->plane[0][1]));
      __m512i tm = _mm512_dpbusd_epi32(_mm512_setzero_si512(), even, _mm512_load_si512(a->plane[1][0]));
      tm = _mm512_dpbusd_epi32(tm, odd, _mm512_load_si512(a->plane[1][1]));
      __m512i tl = _mm512_dpbusd_epi32(_mm512_load_si512(a->corr), even, _mm512_load_si512(a->plane[2][0]));
      tl = _mm512_dpbusd_epi32(tl, odd, _mm512_load_si512(a->plane[2][1]));
      __m512i t = _mm512_add_epi32(_mm512_add_epi32(_mm512_slli_epi32(th, 16),
                                                    _mm512_slli_epi32(tm, 8)), tl);
      /* t·step·2^(s − bias): two exact power-of-two scalings (a combined
       * step·2^(s − bias) could underflow where the products do not) */
      __m512 ts = _mm512_mul_ps(_mm512_cvtepi32_ps(t), _mm512_load_ps(a->step));
      acc[m][n] = _mm512_fmadd_ps(ts, S, acc[m][n]);
    }
  }
}

/* C[m, n] for MR activation rows × NR weight rows of nb blocks, all scales
 * in range. */
INLINE void q8_tile(const int MR, const int NR, float *C, int64_t ldc, const q8_group *G,
                    int64_t ldq, const uint8_t *blocks, const uint8_t *scales,
                    int64_t row_blocks, int nb, int bias, const uint8_t *pf_end) {
  q8_consts c = q8_consts_of(bias);
  __m512 acc[Q8_MR][Q8_NR];
  UNROLL
  for (int m = 0; m < MR; m++)
    UNROLL
    for (int n = 0; n < NR; n++) acc[m][n] = _mm512_setzero_ps();
  int full = nb / 4;
  for (int g = 0; g < full; g++)
    q8_group_tile(MR, NR, acc, G + g, ldq, g, 0, blocks, scales, row_blocks, &c, pf_end);
  if (nb % 4)
    q8_group_tile(MR, NR, acc, G + full, ldq, full, nb % 4, blocks, scales, row_blocks, &c,
                  pf_end);
  UNROLL
  for (int m = 0; m < MR; m++)
    UNROLL
    for (int n = 0; n < NR; n++) C[m * ldc + n] = _mm512_reduce_add_ps(acc[m][n]);
}

typedef void (*q8_tile_fn)(float *, int64_t, const q8_group *, int64_t, const uint8_t *,
                           const uint8_t *, int64_t, int, int, const uint8_t *);
#define Q8_TILE_FN(MR, NR)                                                                       \
  TARGET static void q8_tile_##MR##_##NR(float *C, int64_t ldc, const q8_group *G, int64_t ldq, \
                                         const uint8_t *blocks, const uint8_t *scales,         \
                                         int64_t row_blocks, int nb, int bias,                 \
                                         const uint8_t *pf_end) {                              \
    q8_tile(MR, NR, C, ldc, G, ldq, blocks, scales, row_blocks, nb, bias, pf_end);             \
  }
Q8_TILE_FN(1, 4)
Q8_TILE_FN(2, 4)
Q8_TILE_FN(3, 4)
Q8_TILE_FN(4, 2)
Q8_TILE_FN(1, 1)
Q8_TILE_FN(2, 1)
Q8_TILE_FN(3, 1)
Q8_TILE_FN(4, 1)

/* By activation rows: {NR, the tile of NR weight rows, the one-row tile}. */
static const struct {
  int nr;
  q8_tile_fn wide, one;
} q8_tiles[Q8_MR + 1] = {{0, NULL, NULL},
                         {4, q8_tile_1_4, q8_tile_1_1},
                         {4, q8_tile_2_4, q8_tile_2_1},
                         {4, q8_tile_3_4, q8_tile_3_1},
                         {2, q8_tile_4_2, q8_tile_4_1}};

/* 1 when every scale of `rows` weight rows keeps s − bias in [-125, 125]. */
static int rows_in_range(const uint8_t *s, int rows, int64_t row_blocks, int nb, int bias) {
  if (row_blocks == nb) return mxl_a5_scales_in_range(s, (int64_t)rows * nb, bias);
  for (int r = 0; r < rows; r++)
    if (!mxl_a5_scales_in_range(s + r * row_blocks, nb, bias)) return 0;
  return 1;
}

TARGET void mxl_a5_gemm_mxfp4_q8(float *C, int64_t ldc, const void *xq, const uint16_t *A,
                                 int64_t lda, const uint8_t *blocks, const uint8_t *scales,
                                 int64_t row_blocks, int M, int N, int K, int bias) {
  int nb = K / MXL_MXFP4_BLOCK;
  int64_t ldq = (int64_t)(mxl_cpu_q8_bytes(K) / sizeof(q8_group));
  const uint8_t *pf_end = blocks + (int64_t)N * row_blocks * MXL_MXFP4_BLOCK_BYTES;
  for (int j0 = 0; j0 < N; j0 += Q8_NR) {
    int rows = N - j0 < Q8_NR ? N - j0 : Q8_NR;
    const uint8_t *b = blocks + (int64_t)j0 * row_blocks * MXL_MXFP4_BLOCK_BYTES;
    const uint8_t *s = scales + (int64_t)j0 * row_blocks;
    for (int m0 = 0; m0 < M; m0 += Q8_MR) {
      int mr = M - m0 < Q8_MR ? M - m0 : Q8_MR, r = 0;
      const q8_group *G = (const q8_group *)xq + m0 * ldq;
      float *c = C + m0 * ldc + j0;
      for (; r + q8_tiles[mr].nr <= rows; r += q8_tiles[mr].nr)
        q8_tiles[mr].wide(c + r, ldc, G, ldq, b + r * row_blocks * MXL_MXFP4_BLOCK_BYTES,
                          s + r * row_blocks, row_blocks, nb, bias, pf_end);
      for (; r < rows; r++)
        q8_tiles[mr].one(c + r, ldc, G, ldq, b + r * row_blocks * MXL_MXFP4_BLOCK_BYTES,
                         s + r * row_blocks, row_blocks, nb, bias, pf_end);
    }
    /* The scales checked after the tile, from L1 (a check of a whole item's
     * scales up front cost 7 % of decode's expert time, as misses in
     * series); rows the fast kernels cannot take are computed again by the
     * portable decode. */
    if (rows_in_range(s, rows, row_blocks, nb, bias)) continue;
    for (int r = 0; r < rows; r++) {
      const uint8_t *rb = b + r * row_blocks * MXL_MXFP4_BLOCK_BYTES, *rs = s + r * row_blocks;
      if (mxl_a5_scales_in_range(rs, nb, bias)) continue;
      for (int m = 0; m < M; m++)
        C[m * ldc + j0 + r] = mxl_a5_mxfp4_dot_slow(A + m * lda, NULL, rb, rs, 0, nb, bias);
    }
  }
}

#else
typedef int mxl_cpu_q8_not_x86;
#endif
