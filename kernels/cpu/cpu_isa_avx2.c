/* CPU backend inner loops for AVX2 + FMA (x86-64 CPUs since 2013 without
 * AVX-512 BF16). bf16 operands are widened to fp32 in registers (a shift)
 * and multiplied with fp32 FMAs, so results equal the bf16 path's up to
 * fp32 rounding. Every function carries a target attribute; cpu_backend.c
 * picks this table after checking CPUID. Semantics: cpu_internal.h.
 *
 * MXFP4 decode: a block's nibbles become 32 byte indices in element order;
 * two pshufb lookups give the low and high bytes of the E2M1 value in bf16,
 * and the block's scale exponent is added to the exponent field of the
 * nonzero values (exact for scale exponents in [-125, 125]; rows with other
 * scales take the portable decode, as in the AVX-512 file). */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "core/bf16.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/mxfp4.h"

#define TARGET __attribute__((target("avx2,fma")))
#define INLINE TARGET static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 16")

/* ------------------------------------------------------------------ bf16 conversion */

/* 8 bf16 (xmm) widened to fp32. */
INLINE __m256 bf16x8_to_f32(__m128i h) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* 8 fp32 rounded to bf16 exactly as mxl_f32_to_bf16 (nearest even, quiet
 * NaN, subnormals kept). */
INLINE __m128i f32x8_to_bf16(__m256 x) {
  __m256i b = _mm256_castps_si256(x);
  __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7fff)), lsb), 16);
  __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x7fffffff)),
                                   _mm256_set1_epi32(0x7f800000));
  __m256i q = _mm256_or_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(0x40));
  r = _mm256_blendv_epi8(r, q, nan);
  __m256i packed = _mm256_packus_epi32(r, r); /* per 128-bit lane: 4 words, twice */
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
}

TARGET static void a2_to_bf16(uint16_t *dst, const float *src, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm_storeu_si128((__m128i *)(dst + i), f32x8_to_bf16(_mm256_loadu_ps(src + i)));
  for (; i < n; i++) dst[i] = mxl_f32_to_bf16(src[i]);
}

TARGET static void a2_to_bf16_split(uint16_t *hi, uint16_t *lo, const float *src, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_loadu_ps(src + i);
    __m128i h = f32x8_to_bf16(x);
    _mm_storeu_si128((__m128i *)(hi + i), h);
    _mm_storeu_si128((__m128i *)(lo + i), f32x8_to_bf16(_mm256_sub_ps(x, bf16x8_to_f32(h))));
  }
  for (; i < n; i++) {
    hi[i] = mxl_f32_to_bf16(src[i]);
    lo[i] = mxl_f32_to_bf16(src[i] - mxl_bf16_to_f32(hi[i]));
  }
}

/* ------------------------------------------------------------------ MXFP4 decode */

/* Low and high bytes of the E2M1 codes 0..15 in bf16. */
static const uint8_t e2m1_lo[16] __attribute__((aligned(16))) = {
    0x00, 0x00, 0x80, 0xc0, 0x00, 0x40, 0x80, 0xc0, 0x00, 0x00, 0x80, 0xc0, 0x00, 0x40, 0x80, 0xc0};
static const uint8_t e2m1_hi[16] __attribute__((aligned(16))) = {
    0x00, 0x3f, 0x3f, 0x3f, 0x40, 0x40, 0x40, 0x40, 0x80, 0xbf, 0xbf, 0xbf, 0xc0, 0xc0, 0xc0, 0xc0};

/* One block as 32 bf16 in element order: out[0] = elements 0..15, out[1] = 16..31. */
INLINE void decode_block(const uint8_t *block, unsigned scale, int bias, __m256i out[2]) {
  __m128i v = _mm_loadu_si128((const __m128i *)block), m4 = _mm_set1_epi8(0x0F);
  __m128i lo = _mm_and_si128(v, m4), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4);
  __m128i idx[2] = {_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi)};
  __m128i tlo = _mm_load_si128((const __m128i *)e2m1_lo), thi = _mm_load_si128((const __m128i *)e2m1_hi);
  __m256i e = _mm256_set1_epi16((short)(((int)scale - bias) * 128));
  for (int h = 0; h < 2; h++) {
    __m128i lb = _mm_shuffle_epi8(tlo, idx[h]), hb = _mm_shuffle_epi8(thi, idx[h]);
    __m256i w = _mm256_set_m128i(_mm_unpackhi_epi8(lb, hb), _mm_unpacklo_epi8(lb, hb));
    __m256i zero = _mm256_cmpeq_epi16(_mm256_and_si256(w, _mm256_set1_epi16(0x7fff)), _mm256_setzero_si256());
    out[h] = _mm256_add_epi16(w, _mm256_andnot_si256(zero, e));
  }
}

static int scales_in_range(const uint8_t *s, int64_t n, int bias) {
  for (int64_t i = 0; i < n; i++) {
    int e = (int)s[i] - bias;
    if (e < -125 || e > 125) return 0;
  }
  return 1;
}

static void decode_block_slow(uint16_t *out, const uint8_t *block, unsigned scale, int bias) {
  float tmp[MXL_MXFP4_BLOCK];
  mxl_mxfp4_decode_block(block, scale, bias, tmp);
  for (int t = 0; t < MXL_MXFP4_BLOCK; t++) out[t] = mxl_f32_to_bf16(tmp[t]);
}

/* One block into out[0..31] as bf16, by whichever decode the row allows. */
INLINE void decode_to(uint16_t *out, const uint8_t *block, unsigned scale, int bias, int fast) {
  if (fast) {
    __m256i w[2];
    decode_block(block, scale, bias, w);
    _mm256_storeu_si256((__m256i *)out, w[0]);
    _mm256_storeu_si256((__m256i *)(out + 16), w[1]);
  } else {
    decode_block_slow(out, block, scale, bias);
  }
}

TARGET static void a2_mxfp4_to_bf16(uint16_t *dst, int64_t ld_dst, const uint8_t *blocks,
                                    const uint8_t *scales, int64_t row_blocks, int rows, int K,
                                    int bias) {
  int nb = K / MXL_MXFP4_BLOCK;
  for (int r = 0; r < rows; r++) {
    const uint8_t *rb = blocks + (int64_t)r * row_blocks * MXL_MXFP4_BLOCK_BYTES;
    const uint8_t *rs = scales + (int64_t)r * row_blocks;
    int fast = scales_in_range(rs, nb, bias);
    mxl_cpu_prefetch_mx_row(blocks, scales, row_blocks, nb, r + MXL_CPU_PACK_AHEAD, rows);
    for (int g = 0; g < nb; g++)
      decode_to(dst + (int64_t)r * ld_dst + g * 32, rb + g * MXL_MXFP4_BLOCK_BYTES, rs[g], bias, fast);
  }
}

/* ------------------------------------------------------------------ pair packing */

/* 16 columns of rows a and b (bf16) as (a, b) pairs into dst[0..31]. */
INLINE void interleave16(uint16_t *dst, __m256i a, __m256i b) {
  __m256i lo = _mm256_unpacklo_epi16(a, b), hi = _mm256_unpackhi_epi16(a, b);
  /* lo = columns 0..3 | 8..11, hi = columns 4..7 | 12..15 */
  _mm256_storeu_si256((__m256i *)dst, _mm256_permute2x128_si256(lo, hi, 0x20));
  _mm256_storeu_si256((__m256i *)(dst + 16), _mm256_permute2x128_si256(lo, hi, 0x31));
}

TARGET static void a2_pack_vnni_bf16(uint16_t *dst, int64_t ld_dst, const uint16_t *src,
                                     int64_t ld_src, int rows, int cols) {
  uint16_t t0[16], t1[16];
  for (int pp = 0; pp < (rows + 1) / 2; pp++) {
    const uint16_t *s0 = src + (int64_t)(2 * pp) * ld_src;
    const uint16_t *s1 = 2 * pp + 1 < rows ? s0 + ld_src : NULL;
    uint16_t *d = dst + (int64_t)pp * ld_dst * 2;
    for (int64_t c = 0; c < ld_dst; c += 16) {
      __m256i a, b;
      if (c + 16 <= cols) {
        a = _mm256_loadu_si256((const __m256i *)(s0 + c));
        b = s1 ? _mm256_loadu_si256((const __m256i *)(s1 + c)) : _mm256_setzero_si256();
      } else {
        for (int64_t q = 0; q < 16; q++) {
          t0[q] = c + q < cols ? s0[c + q] : 0;
          t1[q] = s1 && c + q < cols ? s1[c + q] : 0;
        }
        a = _mm256_loadu_si256((const __m256i *)t0);
        b = _mm256_loadu_si256((const __m256i *)t1);
      }
      interleave16(d + c * 2, a, b);
    }
  }
}

/* r[q] = 8 k-pairs (32-bit words) of row j0 + q: stores pair t of the 8
 * rows at dst + (kp0 + t)·ld_dst·2 (+ j0·2 by the caller), t < n_pairs —
 * an 8×8 transpose of 32-bit elements in registers. */
INLINE void transpose8_store(uint16_t *dst, int64_t ld_dst, int64_t kp0, int64_t n_pairs,
                             const __m256i r[8]) {
  __m256i a0 = _mm256_unpacklo_epi32(r[0], r[1]), a1 = _mm256_unpackhi_epi32(r[0], r[1]);
  __m256i a2 = _mm256_unpacklo_epi32(r[2], r[3]), a3 = _mm256_unpackhi_epi32(r[2], r[3]);
  __m256i a4 = _mm256_unpacklo_epi32(r[4], r[5]), a5 = _mm256_unpackhi_epi32(r[4], r[5]);
  __m256i a6 = _mm256_unpacklo_epi32(r[6], r[7]), a7 = _mm256_unpackhi_epi32(r[6], r[7]);
  __m256i b0 = _mm256_unpacklo_epi64(a0, a2), b1 = _mm256_unpackhi_epi64(a0, a2);
  __m256i b2 = _mm256_unpacklo_epi64(a1, a3), b3 = _mm256_unpackhi_epi64(a1, a3);
  __m256i b4 = _mm256_unpacklo_epi64(a4, a6), b5 = _mm256_unpackhi_epi64(a4, a6);
  __m256i b6 = _mm256_unpacklo_epi64(a5, a7), b7 = _mm256_unpackhi_epi64(a5, a7);
  __m256i out[8] = {
      _mm256_permute2x128_si256(b0, b4, 0x20), _mm256_permute2x128_si256(b1, b5, 0x20),
      _mm256_permute2x128_si256(b2, b6, 0x20), _mm256_permute2x128_si256(b3, b7, 0x20),
      _mm256_permute2x128_si256(b0, b4, 0x31), _mm256_permute2x128_si256(b1, b5, 0x31),
      _mm256_permute2x128_si256(b2, b6, 0x31), _mm256_permute2x128_si256(b3, b7, 0x31)};
  for (int t = 0; t < 8 && t < n_pairs; t++)
    _mm256_storeu_si256((__m256i *)(dst + (kp0 + t) * ld_dst * 2), out[t]);
}

/* Transposed pair packing: 8 rows at a time, 8 k-pairs per step
 * (transpose8_store). */
TARGET static void a2_pack_vnni_t_bf16(uint16_t *dst, int64_t ld_dst, const uint16_t *src,
                                       int64_t ld_src, int rows, int K) {
  int64_t kpairs = (K + 1) / 2;
  uint16_t tmp[8][16];
  for (int64_t j0 = 0; j0 < ld_dst; j0 += 8)
    for (int64_t k0 = 0; k0 < K; k0 += 16) {
      __m256i r[8];
      for (int q = 0; q < 8; q++) {
        int64_t j = j0 + q;
        if (j < rows && k0 + 16 <= K) {
          r[q] = _mm256_loadu_si256((const __m256i *)(src + j * ld_src + k0));
        } else {
          for (int t = 0; t < 16; t++) tmp[q][t] = j < rows && k0 + t < K ? src[j * ld_src + k0 + t] : 0;
          r[q] = _mm256_loadu_si256((const __m256i *)tmp[q]);
        }
      }
      transpose8_store(dst + j0 * 2, ld_dst, k0 / 2, kpairs - k0 / 2, r);
    }
}

/* 8 rows at a time: each row's block decoded (16 k-pairs in two ymm), then
 * transposed into place 8 pairs at a time (transpose8_store), where
 * scattering each decoded pair took 37 % of the forward's time (avx2 table
 * on Zen 4, gate_up, 64 rows per expert). Rows past `rows` are zeros. */
TARGET static void a2_pack_vnni_t_mxfp4(uint16_t *dst, int64_t ld_dst, const uint8_t *blocks,
                                        const uint8_t *scales, int64_t row_blocks, int rows, int K,
                                        int bias) {
  int nb = K / MXL_MXFP4_BLOCK;
  for (int64_t j0 = 0; j0 < ld_dst; j0 += 8) {
    int fast[8];
    for (int q = 0; q < 8; q++) {
      int64_t j = j0 + q;
      fast[q] = j < rows && scales_in_range(scales + j * row_blocks, nb, bias);
    }
    for (int g = 0; g < nb; g++) {
      __m256i lo[8], hi[8];
      for (int q = 0; q < 8; q++) {
        int64_t j = j0 + q;
        if (j >= rows) {
          lo[q] = hi[q] = _mm256_setzero_si256();
          continue;
        }
        const uint8_t *b = blocks + (j * row_blocks + g) * MXL_MXFP4_BLOCK_BYTES;
        unsigned sc = scales[j * row_blocks + g];
        if (fast[q]) {
          __m256i w[2];
          decode_block(b, sc, bias, w);
          lo[q] = w[0], hi[q] = w[1];
        } else {
          uint16_t w[MXL_MXFP4_BLOCK];
          decode_block_slow(w, b, sc, bias);
          lo[q] = _mm256_loadu_si256((const __m256i *)w);
          hi[q] = _mm256_loadu_si256((const __m256i *)(w + 16));
        }
      }
      transpose8_store(dst + j0 * 2, ld_dst, (int64_t)g * 16, 8, lo);
      transpose8_store(dst + j0 * 2, ld_dst, (int64_t)g * 16 + 8, 8, hi);
    }
  }
}

TARGET static void a2_pack_vnni_mxfp4(uint16_t *dst, int64_t ld_dst, const uint8_t *blocks,
                                      const uint8_t *scales, int64_t row_blocks, int rows, int K,
                                      int bias) {
  int nb = K / MXL_MXFP4_BLOCK;
  uint16_t r0[32], r1[32];
  for (int pp = 0; pp < (rows + 1) / 2; pp++) {
    int have1 = 2 * pp + 1 < rows;
    const uint8_t *b0 = blocks + (int64_t)(2 * pp) * row_blocks * MXL_MXFP4_BLOCK_BYTES;
    const uint8_t *s0 = scales + (int64_t)(2 * pp) * row_blocks;
    const uint8_t *b1 = b0 + row_blocks * MXL_MXFP4_BLOCK_BYTES, *s1 = s0 + row_blocks;
    int fast0 = scales_in_range(s0, nb, bias), fast1 = have1 && scales_in_range(s1, nb, bias);
    uint16_t *d = dst + (int64_t)pp * ld_dst * 2;
    for (int q = 0; q < 2; q++)
      mxl_cpu_prefetch_mx_row(blocks, scales, row_blocks, nb, 2 * pp + MXL_CPU_PACK_AHEAD + q, rows);
    memset(r1, 0, sizeof r1);
    for (int g = 0; g < nb; g++) {
      decode_to(r0, b0 + g * MXL_MXFP4_BLOCK_BYTES, s0[g], bias, fast0);
      if (have1) decode_to(r1, b1 + g * MXL_MXFP4_BLOCK_BYTES, s1[g], bias, fast1);
      for (int h = 0; h < 2; h++)
        interleave16(d + (int64_t)(g * 32 + h * 16) * 2, _mm256_loadu_si256((const __m256i *)(r0 + 16 * h)),
                     _mm256_loadu_si256((const __m256i *)(r1 + 16 * h)));
    }
    for (int64_t c = K; c < ld_dst; c++) d[c * 2] = d[c * 2 + 1] = 0;
  }
}

/* ------------------------------------------------------------------ C = A·Bᵀ (both K-contiguous) */

enum { NT_NR = 4 };

/* x [K] -> per group of G elements its G/2 even elements, then its G/2 odd
 * ones, fp32 (in exact mode hi + lo): the order in which the kernels below
 * widen weights (whole groups only: the first K / G·G). */
INLINE void permute_even_odd(float *dst, const uint16_t *x, const uint16_t *x_lo, int K,
                             const int G) {
  for (int k0 = 0; k0 + G <= K; k0 += G)
    for (int t = 0; t < G / 2; t++)
      for (int h = 0; h < 2; h++) {
        int k = k0 + 2 * t + h;
        dst[k0 + h * (G / 2) + t] = mxl_bf16_to_f32(x[k]) + (x_lo ? mxl_bf16_to_f32(x_lo[k]) : 0.0f);
      }
}

/* Lanes i < n of 8 (n may be <= 0 or >= 8) as an AVX2 load/store mask. */
INLINE __m256i lanes8(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* c[0, ncols) (+)= x0 ‖ x1 (ncols <= 16): a tile row's store. */
INLINE void store_row16(float *c, __m256 x0, __m256 x1, int ncols, int accumulate) {
  if (ncols >= 16) {
    if (accumulate) x0 = _mm256_add_ps(x0, _mm256_loadu_ps(c)), x1 = _mm256_add_ps(x1, _mm256_loadu_ps(c + 8));
    _mm256_storeu_ps(c, x0);
    _mm256_storeu_ps(c + 8, x1);
    return;
  }
  const __m256i m0 = lanes8(ncols), m1 = lanes8(ncols - 8);
  if (accumulate)
    x0 = _mm256_add_ps(x0, _mm256_maskload_ps(c, m0)), x1 = _mm256_add_ps(x1, _mm256_maskload_ps(c + 8, m1));
  _mm256_maskstore_ps(c, m0, x0);
  _mm256_maskstore_ps(c + 8, m1, x1);
}

INLINE float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* B's rows widened 16 weights at a time with a shift (even elements) and a
 * mask (odd ones; bf16 is fp32's top half), against A's rows permuted once
 * per row tile to [8 evens, 8 odds] per 16 (fp32; in exact mode hi + lo),
 * K in chunks of NT16_MAX_K (a stack buffer). The tile kernel this replaced
 * widened 8 weights with vpmovzxwd and a shift, both on the two shuffle
 * pipes of Zen cores, which kept decode's bf16 products (this kernel at
 * M = 1) at 20 GB/s of 33 on 2 threads (Zen 4, the 20b shape's q, o and
 * lm_head). Tiles: up to 2 rows × 4 columns (A's rows held in registers,
 * each B column widened in turn), and 3 or 4 rows × 2 columns for M >= 3
 * (both columns widened first, then A's rows read per row: B is widened
 * once per 4 rows rather than 2, 10 loads and 2 shifts per 16 FMAs against
 * 8 and 4; Zen 1, 1 thread, M = 16: 25 GFLOP/s before, see bench/README).
 * One accumulator per output (the even FMA, then the odd), so any M takes
 * the same per-element order, and a token's sums are the same decoded
 * alone (gemv_bf16) or with others. */
/* Keeps v in a register from its load on: GCC otherwise folds a load used
 * by several FMAs into each of them (a load per FMA), and Zen 1 loads one
 * ymm per cycle. */
#define IN_REGISTER(v) __asm__("" : "+x"(v))

enum { NT16_MR = 4, NT16_MAX_K = 8192, NT16_PREFETCH = 6144 /* as MX_PREFETCH */ };

INLINE void nt16_tile(const int MR, const int NR, float *C, int64_t ldc, const float *ap,
                      int64_t ldap, const uint16_t *A, const uint16_t *A_lo, int64_t lda,
                      const uint16_t *B, int64_t ldb, int nvalid, int K, int accumulate) {
  const __m256i odd = _mm256_set1_epi32((int)0xFFFF0000u);
  __m256 acc[NT16_MR][NT_NR];
  const uint16_t *brow[NT_NR];
  UNROLL
  for (int c = 0; c < NR; c++) brow[c] = B + (int64_t)(c < nvalid ? c : nvalid - 1) * ldb;
  UNROLL
  for (int r = 0; r < MR; r++)
    UNROLL
    for (int c = 0; c < NR; c++) acc[r][c] = _mm256_setzero_ps();
  int k = 0;
  for (; k + 16 <= K; k += 16) {
    if (MR <= 2) { /* A's rows in registers, one B column at a time */
      __m256 xe[NT16_MR], xo[NT16_MR];
      UNROLL
      for (int r = 0; r < MR; r++) xe[r] = _mm256_load_ps(ap + r * ldap + k), xo[r] = _mm256_load_ps(ap + r * ldap + k + 8);
      UNROLL
      for (int c = 0; c < NR; c++) {
        _mm_prefetch((const char *)(brow[c] + k) + NT16_PREFETCH, _MM_HINT_T0); /* may pass the end */
        __m256i v = _mm256_loadu_si256((const __m256i *)(brow[c] + k));
        __m256 we = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
        __m256 wo = _mm256_castsi256_ps(_mm256_and_si256(v, odd));
        UNROLL
        for (int r = 0; r < MR; r++) acc[r][c] = _mm256_fmadd_ps(wo, xo[r], _mm256_fmadd_ps(we, xe[r], acc[r][c]));
      }
    } else { /* B's columns in registers, one row of A at a time */
      __m256 we[NT_NR], wo[NT_NR];
      UNROLL
      for (int c = 0; c < NR; c++) {
        _mm_prefetch((const char *)(brow[c] + k) + NT16_PREFETCH, _MM_HINT_T0);
        __m256i v = _mm256_loadu_si256((const __m256i *)(brow[c] + k));
        IN_REGISTER(v);
        we[c] = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
        wo[c] = _mm256_castsi256_ps(_mm256_and_si256(v, odd));
      }
      UNROLL
      for (int r = 0; r < MR; r++) {
        __m256 xe = _mm256_load_ps(ap + r * ldap + k), xo = _mm256_load_ps(ap + r * ldap + k + 8);
        IN_REGISTER(xe);
        IN_REGISTER(xo);
        UNROLL
        for (int c = 0; c < NR; c++) acc[r][c] = _mm256_fmadd_ps(wo[c], xo, _mm256_fmadd_ps(we[c], xe, acc[r][c]));
      }
    }
  }
  UNROLL
  for (int r = 0; r < MR; r++)
    UNROLL
    for (int c = 0; c < NR; c++) {
      if (c >= nvalid) continue;
      float s = hsum8(acc[r][c]);
      for (int t = k; t < K; t++) /* the last K % 16, in order */
        s += mxl_bf16_to_f32(brow[c][t]) *
             (mxl_bf16_to_f32(A[r * lda + t]) + (A_lo ? mxl_bf16_to_f32(A_lo[r * lda + t]) : 0.0f));
      float *dst = C + r * ldc + c;
      *dst = accumulate ? *dst + s : s;
    }
}

typedef void nt16_tile_fn(float *C, int64_t ldc, const float *ap, int64_t ldap, const uint16_t *A,
                          const uint16_t *A_lo, int64_t lda, const uint16_t *B, int64_t ldb,
                          int nvalid, int K, int acc);
#define NT16_TILE(MR, NR)                                                                          \
  TARGET static void nt16_tile_##MR##x##NR(float *C, int64_t ldc, const float *ap, int64_t ldap,   \
                                           const uint16_t *A, const uint16_t *A_lo, int64_t lda,   \
                                           const uint16_t *B, int64_t ldb, int nvalid, int K,      \
                                           int acc) {                                              \
    nt16_tile(MR, NR, C, ldc, ap, ldap, A, A_lo, lda, B, ldb, nvalid, K, acc);                     \
  }
NT16_TILE(1, 4)
NT16_TILE(2, 4)
NT16_TILE(3, 2)
NT16_TILE(4, 2)
#undef NT16_TILE

TARGET static void a2_gemm_bf16_nt(float *C, int64_t ldc, const uint16_t *A, const uint16_t *A_lo,
                                   int64_t lda, const uint16_t *B, int64_t ldb, int M, int N, int K,
                                   int accumulate) {
  static nt16_tile_fn *const tiles[NT16_MR + 1] = {NULL, nt16_tile_1x4, nt16_tile_2x4,
                                                   nt16_tile_3x2, nt16_tile_4x2};
  float ap[NT16_MR][NT16_MAX_K] __attribute__((aligned(32)));
  for (int i = 0; i < M;) {
    /* 5 rows as 3 + 2, not 4 + 1: the 1-row tile reads B for one row */
    int mr = M - i >= NT16_MR ? (M - i == 5 ? 3 : NT16_MR) : M - i;
    int nr = mr <= 2 ? 4 : 2;
    for (int k0 = 0; k0 < K; k0 += NT16_MAX_K) { /* one chunk at model sizes */
      int kc = K - k0 < NT16_MAX_K ? K - k0 : NT16_MAX_K;
      const uint16_t *a = A + (int64_t)i * lda + k0;
      const uint16_t *al = A_lo ? A_lo + (int64_t)i * lda + k0 : NULL;
      for (int r = 0; r < mr; r++) permute_even_odd(ap[r], a + r * lda, al ? al + r * lda : NULL, kc, 16);
      for (int j = 0; j < N; j += nr) {
        int nv = N - j < nr ? N - j : nr;
        tiles[mr](C + (int64_t)i * ldc + j, ldc, ap[0], NT16_MAX_K, a, al, lda,
                  B + (int64_t)j * ldb + k0, ldb, nv, kc, accumulate || k0 > 0);
      }
    }
    i += mr;
  }
}

/* ------------------------------------------------------------------ C = A·B (B packed in pairs)
 *
 * Both operands are widened to fp32 once per reduction chunk of VN_PC
 * indices, into stack buffers: VN_RB rows of A ([VN_RB][VN_PC]; in exact
 * mode hi + lo) and, per column strip of 16 (2 ymm), the strip's packed
 * pairs ([VN_PC][16], 16 KB, L1-resident). Tile: MR <= 6 rows × 16 columns,
 * 12 accumulators, 2 B registers and one fp32 broadcast of A per row and
 * index (15 of the 16 ymm), 2 FMAs per row and index, p then p + 1 as the
 * bf16 path's pairs. Each strip is widened once per VN_RB rows, where
 * widening it per tile cost more than the FMAs (the kernel ran at half
 * the FMA peak: Zen 4, 1 thread, 512×4096×2880: 60 GFLOP/s of 116). The
 * tile this replaced (4 rows, A's bf16 pairs split per row with a shift and
 * a mask, strips of 1024 indices) spent 2 of every 6 FMA-pipe operations
 * on the split; Zen 1, 1 thread, M = 128, the 20b q_proj: 98-107 ms, now
 * 81-87 (bench/README). */

enum { VN_MR = 6, VN_PC = 256, VN_RB = 96 };

/* strip [pc][16] = Bp's pairs [p0, p0+pc) of columns [j, j + 16) as fp32
 * (columns past nc and the odd half of an odd last pair are Bp's zeros or
 * zeros). */
INLINE void vn_widen_strip(float *strip, const uint16_t *Bp, int64_t ld_bp, int p0, int pc, int nc) {
  const __m256i odd_mask = _mm256_set1_epi32((int)0xFFFF0000u);
  for (int p = 0; p < pc; p += 2) {
    const uint16_t *b = Bp + (int64_t)((p0 + p) / 2) * ld_bp * 2;
    __m256i w[2];
    if (nc >= 16) {
      w[0] = _mm256_loadu_si256((const __m256i *)b);
      w[1] = _mm256_loadu_si256((const __m256i *)(b + 16));
    } else {
      uint32_t tmp[16] = {0};
      memcpy(tmp, b, (size_t)nc * 4);
      w[0] = _mm256_loadu_si256((const __m256i *)tmp);
      w[1] = _mm256_loadu_si256((const __m256i *)(tmp + 8));
    }
    UNROLL
    for (int v = 0; v < 2; v++) {
      _mm256_storeu_ps(strip + p * 16 + v * 8, _mm256_castsi256_ps(_mm256_slli_epi32(w[v], 16)));
      _mm256_storeu_ps(strip + (p + 1) * 16 + v * 8,
                       _mm256_castsi256_ps(_mm256_and_si256(w[v], odd_mask)));
    }
  }
}

/* af [rows][ld_af] = A's rows [0, rows) × [p0, p0 + pc) as fp32 (in exact
 * mode hi + lo, exact in fp32). */
INLINE void vn_widen_rows(float *af, int64_t ld_af, const uint16_t *A, const uint16_t *A_lo,
                          int64_t lda, int rows, int p0, int pc) {
  for (int r = 0; r < rows; r++) {
    const uint16_t *a = A + r * lda + p0, *al = A_lo ? A_lo + r * lda + p0 : NULL;
    float *dst = af + r * ld_af;
    int p = 0;
    for (; p + 8 <= pc; p += 8) {
      __m256 v = bf16x8_to_f32(_mm_loadu_si128((const __m128i *)(a + p)));
      if (al) v = _mm256_add_ps(v, bf16x8_to_f32(_mm_loadu_si128((const __m128i *)(al + p))));
      _mm256_store_ps(dst + p, v);
    }
    for (; p < pc; p++) dst[p] = mxl_bf16_to_f32(a[p]) + (al ? mxl_bf16_to_f32(al[p]) : 0.0f);
  }
}

/* Tile: MR <= 6 rows × 16 columns over pc reduction indices, A's
 * rows as fp32 in af, B's as the widened strip; per index one fp32
 * broadcast per row and 2 FMAs (12 accumulators, 2 B registers, the
 * broadcast: 15 of the 16 ymm). */
INLINE void vn_tile(const int MR, float *C, int64_t ldc, const float *af, int64_t ld_af,
                    const float *strip, int pc, int ncols, int accumulate) {
  __m256 acc[VN_MR][2];
  UNROLL
  for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int p = 0; p < pc; p++) {
    const float *b = strip + p * 16;
    __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
    UNROLL
    for (int r = 0; r < MR; r++) {
      __m256 a = _mm256_broadcast_ss(af + r * ld_af + p);
      acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
    }
  }
  UNROLL
  for (int r = 0; r < MR; r++) store_row16(C + r * ldc, acc[r][0], acc[r][1], ncols, accumulate);
}

#define VN_TILE_FN(MR)                                                                            \
  TARGET static void vn_tile_##MR(float *C, int64_t ldc, const float *af, int64_t ld_af,          \
                                  const float *strip, int pc, int ncols, int accumulate) {        \
    vn_tile(MR, C, ldc, af, ld_af, strip, pc, ncols, accumulate);                                 \
  }
VN_TILE_FN(1)
VN_TILE_FN(2)
VN_TILE_FN(3)
VN_TILE_FN(4)
VN_TILE_FN(5)
VN_TILE_FN(6)
#undef VN_TILE_FN

typedef void (*vn_tile_fn)(float *, int64_t, const float *, int64_t, const float *, int, int, int);

TARGET static void a2_gemm_bf16_vnni(float *C, int64_t ldc, const uint16_t *A,
                                     const uint16_t *A_lo, int64_t lda, const uint16_t *Bp,
                                     int64_t ld_bp, int M, int N, int P, int accumulate) {
  static const vn_tile_fn tiles[VN_MR + 1] = {NULL,      vn_tile_1, vn_tile_2, vn_tile_3,
                                                vn_tile_4, vn_tile_5, vn_tile_6};
  float strip[VN_PC * 16] __attribute__((aligned(32)));
  float af[VN_RB * VN_PC] __attribute__((aligned(32)));
  for (int p0 = 0; p0 < P; p0 += VN_PC) {
    int pc = P - p0 < VN_PC ? P - p0 : VN_PC;
    for (int i0 = 0; i0 < M; i0 += VN_RB) {
      int rb = M - i0 < VN_RB ? M - i0 : VN_RB;
      vn_widen_rows(af, VN_PC, A + (int64_t)i0 * lda, A_lo ? A_lo + (int64_t)i0 * lda : NULL, lda,
                    rb, p0, pc);
      for (int j = 0; j < N; j += 16) {
        int nc = N - j < 16 ? N - j : 16;
        vn_widen_strip(strip, Bp + (int64_t)j * 2, ld_bp, p0, pc, nc);
        for (int i = 0; i < rb;) {
          int mr = rb - i >= VN_MR ? VN_MR : rb - i;
          tiles[mr](C + (int64_t)(i0 + i) * ldc + j, ldc, af + (int64_t)i * VN_PC, VN_PC, strip, pc,
                    nc, accumulate || p0 > 0);
          i += mr;
        }
      }
    }
  }
}

/* ------------------------------------------------------------------ MXFP4 matrix-vector
 * Straight to fp32, no bf16 step, with in-lane shuffles only: a block's 16
 * bytes broadcast to both 128-bit lanes; their low and high nibbles (the
 * block's even and odd elements) looked up with vpshufb in a table of twice
 * the E2M1 values as signed bytes (0, 1, 2, 3, 4, 6, 8, 12 and negatives);
 * a second vpshufb moves each byte to the top byte of its 32-bit lane, an
 * int32 of value·2^24 with its sign, which vcvtdq2ps converts exactly. A
 * block's 32 products sum unscaled, and the block's scale times 2^-25 (the
 * 2^24 and the doubling; an exponent in [-101, 125], else the row takes the
 * portable decode) multiplies the sum once. x is permuted once per call to
 * the weights' order (per block: its 16 even elements, then its 16 odd
 * ones) and widened to fp32 (in exact mode as hi + lo). On Zen cores the
 * former lookup (vpermps of a per-block scaled table, the sign from shifted
 * nibbles; vpermps and byte-to-dword widening are 2-3 shuffle-pipe
 * operations each) kept both shuffle pipes full: 11 cycles per block
 * (llvm-mca, znver3), 6 GB/s per core with the weights in L1 or in memory
 * alike; now 8 cycles, 7.1 / 7.6 GB/s (Zen 4, 1 thread). Rows stream
 * with a software prefetch GV_PREFETCH bytes ahead (the AVX-512 file's
 * MX_PREFETCH). */

enum { GV_MAX_K = 8192, GV_PREFETCH = 6144 };

/* 2 × E2M1 code 0..15 as signed bytes, in both 128-bit lanes */
static const int8_t e2m1_x2[32] __attribute__((aligned(32))) = {
    0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12,
    0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* vpshufb controls: byte i of a lane to the top byte of 32-bit lane i
 * (zeros below); lane 0 takes bytes 0-3 (8-11), lane 1 bytes 4-7 (12-15) */
#define Z (-128)
static const int8_t gv_place[2][32] __attribute__((aligned(32))) = {
    {Z, Z, Z, 0, Z, Z, Z, 1, Z, Z, Z, 2, Z, Z, Z, 3, Z, Z, Z, 4, Z, Z, Z, 5, Z, Z, Z, 6, Z, Z, Z, 7},
    {Z, Z, Z, 8, Z, Z, Z, 9, Z, Z, Z, 10, Z, Z, Z, 11,
     Z, Z, Z, 12, Z, Z, Z, 13, Z, Z, Z, 14, Z, Z, Z, 15}};
#undef Z

/* 1 when every scale of a row has s - bias in [lo, hi]: 32 scales per
 * compare (a byte loop per row cost a fifth of the row's time). */
TARGET static int scales_within(const uint8_t *s, int64_t n, int bias, int lo, int hi) {
  /* bytes as signed after xor 0x80: s in [lo, hi] <=> s^0x80 in [lo^0x80, hi^0x80] */
  lo += bias, hi += bias;
  if (lo < 0) lo = 0;
  if (hi > 255) hi = 255;
  const __m256i flip = _mm256_set1_epi8((char)0x80);
  const __m256i vlo = _mm256_set1_epi8((char)(lo ^ 0x80)), vhi = _mm256_set1_epi8((char)(hi ^ 0x80));
  int64_t i = 0;
  __m256i bad = _mm256_setzero_si256();
  for (; i + 32 <= n; i += 32) {
    __m256i v = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(s + i)), flip);
    bad = _mm256_or_si256(bad, _mm256_or_si256(_mm256_cmpgt_epi8(vlo, v), _mm256_cmpgt_epi8(v, vhi)));
  }
  int ok = _mm256_testz_si256(bad, bad);
  for (; i < n; i++) ok &= s[i] >= lo && s[i] <= hi;
  return ok;
}

/* 1 when every scale of a row leaves its block scale·2^-25 a normal float. */
TARGET static int gv_scales_ok(const uint8_t *s, int64_t n, int bias) {
  return scales_within(s, n, bias, -101, 125);
}

/* acc + scale·Σ w·x over one block — xg [32] permuted fp32, b the block's
 * 16 bytes, s its scale byte. */
INLINE __m256 block_dot(__m256 acc, __m256i lut, __m256i m4, __m256i place0, __m256i place1,
                        const float *xg, const uint8_t *b, uint8_t s, int bias) {
  __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)b));
  __m256i ev = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, m4));
  __m256i od = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
  __m256 w0 = _mm256_cvtepi32_ps(_mm256_shuffle_epi8(ev, place0));
  __m256 w1 = _mm256_cvtepi32_ps(_mm256_shuffle_epi8(ev, place1));
  __m256 w2 = _mm256_cvtepi32_ps(_mm256_shuffle_epi8(od, place0));
  __m256 w3 = _mm256_cvtepi32_ps(_mm256_shuffle_epi8(od, place1));
  __m256 p0 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xg + 8), _mm256_mul_ps(w0, _mm256_loadu_ps(xg)));
  __m256 p1 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xg + 24), _mm256_mul_ps(w2, _mm256_loadu_ps(xg + 16)));
  __m256 scale = _mm256_castsi256_ps(_mm256_set1_epi32(((int)s - bias + 102) << 23));
  return _mm256_fmadd_ps(scale, _mm256_add_ps(p0, p1), acc);
}

/* Σ over one row's blocks of w·x — xp [nb·32] permuted fp32 */
INLINE __m256 row_dot(const float *xp, const uint8_t *rb, const uint8_t *rs, int nb, int bias) {
  const __m256i lut = _mm256_load_si256((const __m256i *)e2m1_x2), m4 = _mm256_set1_epi8(0x0F);
  const __m256i place0 = _mm256_load_si256((const __m256i *)gv_place[0]);
  const __m256i place1 = _mm256_load_si256((const __m256i *)gv_place[1]);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int g = 0;
  for (; g + 2 <= nb; g += 2) { /* two blocks, two accumulators */
    const uint8_t *b = rb + g * MXL_MXFP4_BLOCK_BYTES;
    if ((g & 3) == 0) _mm_prefetch((const char *)b + GV_PREFETCH, _MM_HINT_T0); /* may pass the end */
    acc0 = block_dot(acc0, lut, m4, place0, place1, xp + g * 32, b, rs[g], bias);
    acc1 = block_dot(acc1, lut, m4, place0, place1, xp + g * 32 + 32, b + 16, rs[g + 1], bias);
  }
  if (g < nb)
    acc0 = block_dot(acc0, lut, m4, place0, place1, xp + g * 32, rb + g * 16, rs[g], bias);
  return _mm256_add_ps(acc0, acc1);
}

/* The portable decode of one row (out-of-range scales, K above GV_MAX_K),
 * bf16-rounded weights as every other path. */
static float row_dot_slow(const uint16_t *x, const uint16_t *x_lo, const uint8_t *rb,
                          const uint8_t *rs, int nb, int bias) {
  uint16_t w[32];
  float acc = 0;
  for (int g = 0; g < nb; g++) {
    decode_block_slow(w, rb + g * MXL_MXFP4_BLOCK_BYTES, rs[g], bias);
    for (int t = 0; t < 32; t++) {
      float xt = mxl_bf16_to_f32(x[g * 32 + t]) + (x_lo ? mxl_bf16_to_f32(x_lo[g * 32 + t]) : 0.0f);
      acc += mxl_bf16_to_f32(w[t]) * xt;
    }
  }
  return acc;
}

/* ---- integer products: activations as int16 planes per block
 *
 * A block's 32 products need not be fp32 operations to be exact: the
 * weights are 2 × E2M1 integers (|w| <= 12) and a block's bf16 activations
 * are integers times a power of two. Per block of 32, with E its largest
 * exponent, plane 1 holds the activations whose exponent is at least E - 7
 * as int16 multiples of 2^(E-14) (exactly: 8 significant bits, at most
 * 255·2^7), plane 2 the smaller ones as multiples of 2^(E-22) (exact down
 * to E - 15; below, rounded to 2^-23 of the block's largest, under fp32's
 * resolution of its sum); a block with none of them has no plane 2.
 * vpmaddwd sums the products of a plane exactly in int32 (|Σ| < 2^24, so
 * its conversion is exact too), and one FMA per plane adds it, scaled by
 * the weights' block scale and the plane's unit. The fp32 path converts
 * each of the 32 weights (4 vcvtdq2ps per block, one pipe on Zen 1: 8
 * cycles); this one converts a block's sum. Taken outside the exact mode
 * (hi + lo activations keep the fp32 path), for activations and scales in
 * ranges where every unit and factor is a normal float.
 *
 * The row loops are bound by instructions issued, not by a pipe: so blocks
 * are sorted once per activation vector (those with a plane 2 first), each
 * loop runs without a branch per block (a branch on plane 2 mispredicted on
 * the model's activations), and a block's factor 2^(scale - bias)·unit is
 * made by adding exponent fields for eight blocks at a time. */

enum { GI_MAX_BLOCKS = GV_MAX_K / MXL_MXFP4_BLOCK, GI_EXP_RANGE = 40 };

/* The activation vector's blocks in slots: those with a plane 2 in
 * [0, n_two), those with plane 1 alone in [first_one, nb), all-zero blocks
 * nowhere (no products). */
typedef struct gi_x {
  int16_t q[GI_MAX_BLOCKS][2][32]; /* [slot][plane][16 evens, 16 odds] */
  int32_t woff[GI_MAX_BLOCKS];     /* [slot] its block's byte offset in a row */
  int32_t block[GI_MAX_BLOCKS];    /* [slot] its block */
  /* [block] plane 1's unit, halved (the table's 2×), as an exponent field */
  int32_t expo[GI_MAX_BLOCKS] __attribute__((aligned(32)));
  int n_two, first_one;
} gi_x;

/* 2^e as a float (e a normal exponent) */
INLINE __m256 pow2_ps(int e) { return _mm256_castsi256_ps(_mm256_set1_epi32((127 + e) << 23)); }

/* int32 lanes a (elements 0-7), b (8-15) as 16 int16 in order */
INLINE __m256i pack16(__m256i a, __m256i b) {
  return _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
}

/* One nonzero block's planes, E its largest exponent: plane 1 of the
 * elements whose exponent is at least E - 7, plane 2 of the rest; 1 when
 * plane 2 is nonzero. v: evens 0-7, evens 8-15, odds 0-7, odds 8-15; e
 * their exponent fields. */
INLINE int gi_block_planes(int16_t q[2][32], const __m256 v[4], const __m256i e[4], int E) {
  const __m256 to1 = pow2_ps(14 - E), to2 = pow2_ps(22 - E);
  const __m256i cut = _mm256_set1_epi32(E + 127 - 8);
  __m256i q1[4], q2[4];
  for (int i = 0; i < 4; i++) {
    __m256i big = _mm256_cmpgt_epi32(e[i], cut);
    /* round to nearest even as nearbyintf; plane 1's products are exact */
    q1[i] = _mm256_and_si256(big, _mm256_cvtps_epi32(_mm256_mul_ps(v[i], to1)));
    q2[i] = _mm256_andnot_si256(big, _mm256_cvtps_epi32(_mm256_mul_ps(v[i], to2)));
  }
  _mm256_store_si256((__m256i *)q[0], pack16(q1[0], q1[1]));
  _mm256_store_si256((__m256i *)(q[0] + 16), pack16(q1[2], q1[3]));
  __m256i p2e = pack16(q2[0], q2[1]), p2o = pack16(q2[2], q2[3]);
  _mm256_store_si256((__m256i *)q[1], p2e);
  _mm256_store_si256((__m256i *)(q[1] + 16), p2o);
  __m256i any = _mm256_or_si256(p2e, p2o);
  return !_mm256_testz_si256(any, any);
}

/* x (bf16, no lo) as int16 planes; 0 when a block's largest exponent
 * lies outside ±GI_EXP_RANGE, as infinities' and NaNs' do (the fp32 path
 * then). Each pair of bf16 read as one 32-bit word gives the odd element
 * as fp32 by masking and the even one by shifting: the planes' even/odd
 * split for free. */
TARGET static int gi_prepare(gi_x *g, const uint16_t *x, int nb) {
  g->n_two = 0;
  g->first_one = nb;
  const __m256i hi16 = _mm256_set1_epi32((int)0xFFFF0000u), ff = _mm256_set1_epi32(0xFF);
  const __m256i magnitude = _mm256_set1_epi32(0x7FFF7FFF);
  for (int b = 0; b < nb; b++) {
    g->expo[b] = 127; /* an all-zero block's: any normal factor */
    __m256i u0 = _mm256_loadu_si256((const __m256i *)(x + b * 32));
    __m256i u1 = _mm256_loadu_si256((const __m256i *)(x + b * 32 + 16));
    __m256i nz = _mm256_and_si256(_mm256_or_si256(u0, u1), magnitude);
    if (_mm256_testz_si256(nz, nz)) continue; /* all zeros: no products */
    __m256i w[4] = {_mm256_slli_epi32(u0, 16), _mm256_slli_epi32(u1, 16), _mm256_and_si256(u0, hi16),
                    _mm256_and_si256(u1, hi16)};
    __m256 v[4];
    __m256i e[4], m = _mm256_setzero_si256();
    for (int i = 0; i < 4; i++) {
      v[i] = _mm256_castsi256_ps(w[i]);
      e[i] = _mm256_and_si256(_mm256_srli_epi32(w[i], 23), ff); /* infinities, NaNs: 255 */
      m = _mm256_max_epi32(m, e[i]);
    }
    __m128i m4 = _mm_max_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
    m4 = _mm_max_epi32(m4, _mm_shuffle_epi32(m4, 0x4E));
    m4 = _mm_max_epi32(m4, _mm_shuffle_epi32(m4, 0xB1));
    int E = _mm_cvtsi128_si32(m4) - 127; /* subnormals alone: -127, out of range */
    if (E < -GI_EXP_RANGE || E > GI_EXP_RANGE) return 0;
    int slot = g->n_two;
    if (gi_block_planes(g->q[slot], v, e, E)) {
      g->n_two++;
    } else { /* plane 1 alone: to the back */
      slot = --g->first_one;
      memcpy(g->q[slot][0], g->q[g->n_two][0], sizeof g->q[slot][0]);
    }
    g->woff[slot] = b * MXL_MXFP4_BLOCK_BYTES;
    g->block[slot] = b;
    g->expo[b] = 127 + E - 15;
  }
  return 1;
}

/* A block's two nibble planes as int16 weights (2 × E2M1): evens, odds. */
INLINE __m256i gi_weights(const uint8_t *b, __m128i lut, __m128i m4, __m256i *odd) {
  __m128i v = _mm_loadu_si128((const __m128i *)b);
  *odd = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(v, 4), m4)));
  return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(lut, _mm_and_si128(v, m4)));
}

/* One plane's exact int32 sums of a block: 8 lanes. */
INLINE __m256 gi_plane(__m256i ev, __m256i od, const int16_t *q) {
  return _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_madd_epi16(ev, _mm256_load_si256((const __m256i *)q)),
                                             _mm256_madd_epi16(od, _mm256_load_si256((const __m256i *)(q + 16)))));
}

/* acc + a slot's plane times its block's factor */
INLINE __m256 gi_block(const gi_x *g, int i, const uint8_t *rb, const uint32_t *fac, int plane,
                       __m128i lut, __m128i m4, __m256 acc) {
  __m256i od, ev = gi_weights(rb + g->woff[i], lut, m4, &od);
  __m256 f = _mm256_broadcast_ss((const float *)&fac[g->block[i]]);
  return _mm256_fmadd_ps(f, gi_plane(ev, od, g->q[i][plane]), acc);
}

/* Each block's factor 2^(scale - bias)·unit, a power of two, as float
 * bits: exponent fields added in integers (no multiply on the vector
 * pipes). 0 when a scale lies outside ±GI_EXP_RANGE of the bias (a factor
 * could leave the normal floats: the caller takes the fp32 path). */
INLINE int gi_factors(uint32_t *fac, const gi_x *g, const uint8_t *rs, int nb, int bias) {
  const __m256i vbias = _mm256_set1_epi32(bias), lim = _mm256_set1_epi32(GI_EXP_RANGE);
  const __m256i neg_lim = _mm256_set1_epi32(-GI_EXP_RANGE);
  __m256i bad = _mm256_setzero_si256();
  int b = 0;
  for (; b + 8 <= nb; b += 8) {
    __m256i d = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(rs + b))), vbias);
    bad = _mm256_or_si256(bad, _mm256_or_si256(_mm256_cmpgt_epi32(d, lim), _mm256_cmpgt_epi32(neg_lim, d)));
    __m256i ex = _mm256_add_epi32(d, _mm256_load_si256((const __m256i *)(g->expo + b)));
    _mm256_store_si256((__m256i *)(fac + b), _mm256_slli_epi32(ex, 23));
  }
  int ok = _mm256_testz_si256(bad, bad);
  for (; b < nb; b++) {
    int d = rs[b] - bias;
    ok &= d >= -GI_EXP_RANGE && d <= GI_EXP_RANGE;
    fac[b] = (uint32_t)(d + g->expo[b]) << 23;
  }
  return ok;
}

/* Σ over one row's blocks of w·x into *y; 0 (nothing written) when a
 * scale is out of gi_factors' range. */
INLINE int gi_row_dot(float *y, const gi_x *g, const uint8_t *rb, const uint8_t *rs, int nb, int bias) {
  const __m128i lut = _mm_load_si128((const __m128i *)e2m1_x2), m4 = _mm_set1_epi8(0x0F);
  uint32_t fac[GI_MAX_BLOCKS] __attribute__((aligned(32)));
  if (!gi_factors(fac, g, rs, nb, bias)) return 0;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps();
  for (int i = 0; i < g->n_two; i++) { /* both planes */
    if ((i & 3) == 0) _mm_prefetch((const char *)rb + i * 16 + GV_PREFETCH, _MM_HINT_T0); /* may pass the end */
    __m256i od, ev = gi_weights(rb + g->woff[i], lut, m4, &od);
    __m256 f = _mm256_broadcast_ss((const float *)&fac[g->block[i]]);
    acc0 = _mm256_fmadd_ps(f, gi_plane(ev, od, g->q[i][0]), acc0);
    acc2 = _mm256_fmadd_ps(f, gi_plane(ev, od, g->q[i][1]), acc2);
  }
  int i = g->first_one;
  for (; i + 2 <= nb; i += 2) { /* plane 1 alone, two blocks a step */
    if ((i & 3) < 2) _mm_prefetch((const char *)rb + i * 16 + GV_PREFETCH, _MM_HINT_T0);
    acc0 = gi_block(g, i, rb, fac, 0, lut, m4, acc0);
    acc1 = gi_block(g, i + 1, rb, fac, 0, lut, m4, acc1);
  }
  if (i < nb) acc0 = gi_block(g, i, rb, fac, 0, lut, m4, acc0);
  /* plane 2's unit: 2^-8 of plane 1's */
  *y = hsum8(_mm256_fmadd_ps(acc2, _mm256_set1_ps(0x1p-8f), _mm256_add_ps(acc0, acc1)));
  return 1;
}

TARGET static void a2_gemv_mxfp4(float *y, const uint16_t *x, const uint16_t *x_lo,
                                 const uint8_t *blocks, const uint8_t *scales, int64_t row_blocks,
                                 int N, int K, int bias) {
  int nb = K / MXL_MXFP4_BLOCK;
  int wide = K <= GV_MAX_K;
  gi_x gx __attribute__((aligned(32)));
  int ints = wide && !x_lo && gi_prepare(&gx, x, nb), permuted = 0;
  float xp[GV_MAX_K] __attribute__((aligned(32)));
  for (int j = 0; j < N; j++) {
    const uint8_t *rb = blocks + (int64_t)j * row_blocks * MXL_MXFP4_BLOCK_BYTES;
    const uint8_t *rs = scales + (int64_t)j * row_blocks;
    if (ints && gi_row_dot(&y[j], &gx, rb, rs, nb, bias)) continue;
    if (wide && gv_scales_ok(rs, nb, bias)) {
      if (!permuted) permute_even_odd(xp, x, x_lo, K, 32); /* per block: 16 evens, 16 odds */
      permuted = 1;
      y[j] = hsum8(row_dot(xp, rb, rs, nb, bias));
    } else {
      y[j] = row_dot_slow(x, x_lo, rb, rs, nb, bias);
    }
  }
}

/* ------------------------------------------------------------------ fp32 C = A·B */

/* Tile: MR <= 6 rows × 16 columns (12 accumulators, 2 B registers and a
 * broadcast: 15 of the 16 ymm), stored with vector (masked) stores: the
 * element-by-element epilogue took about as long as the products at the
 * short reductions of attention blocks (64) and LoRA (the rank). */
INLINE void f32_tile(const int MR, float *C, int64_t ldc, const float *A, int64_t lda,
                     int64_t a_cs, const float *B, int64_t ldb, int ncols, int K, float alpha,
                     int accumulate) {
  __m256 acc[6][2];
  UNROLL
  for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  const __m256i m0 = lanes8(ncols), m1 = lanes8(ncols - 8);
  for (int p = 0; p < K; p++) {
    const float *b = B + (int64_t)p * ldb;
    __m256 b0, b1;
    if (ncols == 16) {
      b0 = _mm256_loadu_ps(b);
      b1 = _mm256_loadu_ps(b + 8);
    } else {
      b0 = _mm256_maskload_ps(b, m0);
      b1 = _mm256_maskload_ps(b + 8, m1);
    }
    UNROLL
    for (int r = 0; r < MR; r++) {
      __m256 a = _mm256_set1_ps(A[r * lda + p * a_cs]);
      acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
    }
  }
  __m256 va = _mm256_set1_ps(alpha);
  UNROLL
  for (int r = 0; r < MR; r++) {
    store_row16(C + r * ldc, _mm256_mul_ps(va, acc[r][0]), _mm256_mul_ps(va, acc[r][1]), ncols,
                accumulate);
  }
}

#define F32_TILE_FN(MR)                                                                           \
  TARGET static void f32_tile_##MR(float *C, int64_t ldc, const float *A, int64_t lda,            \
                                   int64_t a_cs, const float *B, int64_t ldb, int nc, int K,      \
                                   float alpha, int acc) {                                        \
    f32_tile(MR, C, ldc, A, lda, a_cs, B, ldb, nc, K, alpha, acc);                                \
  }
F32_TILE_FN(1)
F32_TILE_FN(2)
F32_TILE_FN(3)
F32_TILE_FN(4)
F32_TILE_FN(5)
F32_TILE_FN(6)

TARGET static void a2_gemm_f32_nn(float *C, int64_t ldc, const float *A, int64_t lda,
                                  int64_t a_cs, const float *B, int64_t ldb, int M, int N, int K,
                                  float alpha, int accumulate) {
  typedef void (*tile_fn)(float *, int64_t, const float *, int64_t, int64_t, const float *,
                          int64_t, int, int, float, int);
  static const tile_fn tiles[7] = {NULL,       f32_tile_1, f32_tile_2, f32_tile_3,
                                   f32_tile_4, f32_tile_5, f32_tile_6};
  for (int i = 0; i < M;) {
    int mr = M - i >= 6 ? 6 : M - i;
    for (int j = 0; j < N; j += 16)
      tiles[mr](C + (int64_t)i * ldc + j, ldc, A + (int64_t)i * lda, lda, a_cs, B + j, ldb,
                N - j < 16 ? N - j : 16, K, alpha, accumulate);
    i += mr;
  }
}

TARGET static void a2_gemv_bf16(float *y, const uint16_t *x, const uint16_t *x_lo,
                                const uint16_t *W, int64_t ldw, int N, int K) {
  a2_gemm_bf16_nt(y, N, x, x_lo, K, W, ldw, 1, N, K, 0);
}

/* ------------------------------------------------------------------ fp32 C = A·Bᵀ
 * Tile: 2 rows of A × 4 rows of B, one ymm of 8 partial sums per pair. */

INLINE void f32_nt_tile(const int MR, const int NR, float *C, int64_t ldc, const float *A,
                        int64_t lda, const float *B, int64_t ldb, int K, float alpha,
                        int accumulate) {
  __m256 acc[2][4];
  UNROLL
  for (int r = 0; r < MR; r++)
    UNROLL
    for (int c = 0; c < NR; c++) acc[r][c] = _mm256_setzero_ps();
  int k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 a[2];
    UNROLL
    for (int r = 0; r < MR; r++) a[r] = _mm256_loadu_ps(A + r * lda + k);
    UNROLL
    for (int c = 0; c < NR; c++) {
      __m256 b = _mm256_loadu_ps(B + c * ldb + k);
      UNROLL
      for (int r = 0; r < MR; r++) acc[r][c] = _mm256_fmadd_ps(a[r], b, acc[r][c]);
    }
  }
  UNROLL
  for (int r = 0; r < MR; r++)
    UNROLL
    for (int c = 0; c < NR; c++) {
      float s = hsum8(acc[r][c]);
      for (int t = k; t < K; t++) s += A[r * lda + t] * B[c * ldb + t];
      float *dst = C + r * ldc + c;
      *dst = accumulate ? *dst + alpha * s : alpha * s;
    }
}

TARGET static void a2_gemm_f32_nt(float *C, int64_t ldc, const float *A, int64_t lda,
                                  const float *B, int64_t ldb, int M, int N, int K, float alpha,
                                  int accumulate) {
  for (int i = 0; i < M; i += 2)
    for (int j = 0; j < N; j += 4) {
      float *c = C + (int64_t)i * ldc + j;
      const float *a = A + (int64_t)i * lda, *b = B + (int64_t)j * ldb;
      int two = M - i >= 2, four = N - j >= 4;
      if (two && four) f32_nt_tile(2, 4, c, ldc, a, lda, b, ldb, K, alpha, accumulate);
      else
        for (int r = 0; r < (two ? 2 : 1); r++)
          for (int q = 0; q < (four ? 4 : N - j); q++)
            f32_nt_tile(1, 1, c + r * ldc + q, ldc, a + r * lda, lda, b + q * ldb, ldb, K, alpha,
                        accumulate);
    }
}

/* ------------------------------------------------------------------ fp32 vector helpers */

TARGET static float a2_dot_f32(const float *a, const float *b, int n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  float s = hsum8(_mm256_add_ps(s0, s1));
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

TARGET static void a2_axpy_f32(float *y, float a, const float *x, int n) {
  __m256 va = _mm256_set1_ps(a);
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; i++) y[i] += a * x[i];
}

TARGET static float a2_max_f32(const float *x, int n) {
  __m256 m = _mm256_set1_ps(-INFINITY);
  int i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  float out[8], r = -INFINITY;
  _mm256_storeu_ps(out, m);
  for (int q = 0; q < 8; q++) r = out[q] > r ? out[q] : r;
  for (; i < n; i++) r = x[i] > r ? x[i] : r;
  return r;
}

/* exp as in the AVX-512 file; 2^n is built in the exponent field, so n is
 * clamped to [-126, 127] (inputs below about -87.3 give 2^-126·p, not 0:
 * negligible next to the sums they enter). */
INLINE __m256 exp256(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(88.3762626647949f), _mm256_max_ps(_mm256_set1_ps(-87.3f), x));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

TARGET static float a2_sum_exp_f32(const float *x, int n, float shift) {
  __m256 s = _mm256_setzero_ps(), sh = _mm256_set1_ps(shift);
  int i = 0;
  for (; i + 8 <= n; i += 8) s = _mm256_add_ps(s, exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh)));
  float r = hsum8(s);
  for (; i < n; i++) r += expf(x[i] - shift);
  return r;
}

TARGET static void a2_exp_f32(float *y, const float *x, int n, float shift, float mul) {
  __m256 sh = _mm256_set1_ps(shift), mu = _mm256_set1_ps(mul);
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_mul_ps(mu, exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh))));
  for (; i < n; i++) y[i] = mul * expf(x[i] - shift);
}

/* The 8 keep bits starting at bit i as a lane mask. */
INLINE __m256 keep8(uint64_t keep, int i) {
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  __m256i b = _mm256_set1_epi32((int)(keep >> i & 0xFF));
  return _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(b, bit), bit));
}

TARGET static float a2_masked_max_f32(const float *x, uint64_t keep, int n) {
  __m256 m = _mm256_set1_ps(-INFINITY);
  int i = 0;
  for (; i + 8 <= n; i += 8)
    m = _mm256_max_ps(m, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), _mm256_loadu_ps(x + i), keep8(keep, i)));
  float out[8], r = -INFINITY;
  _mm256_storeu_ps(out, m);
  for (int q = 0; q < 8; q++) r = out[q] > r ? out[q] : r;
  for (; i < n; i++)
    if ((keep >> i & 1) && x[i] > r) r = x[i];
  return r;
}

TARGET static float a2_masked_exp_f32(float *y, const float *x, uint64_t keep, int n, float shift) {
  __m256 s = _mm256_setzero_ps(), sh = _mm256_set1_ps(shift);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 e = _mm256_and_ps(exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh)), keep8(keep, i));
    _mm256_storeu_ps(y + i, e);
    s = _mm256_add_ps(s, e);
  }
  float r = hsum8(s);
  for (; i < n; i++) {
    y[i] = (keep >> i & 1) ? expf(x[i] - shift) : 0.0f;
    r += y[i];
  }
  return r;
}

TARGET static void a2_scale_f32(float *y, float a, int n) {
  __m256 va = _mm256_set1_ps(a);
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(va, _mm256_loadu_ps(y + i)));
  for (; i < n; i++) y[i] *= a;
}

/* ------------------------------------------------------------------ decode attention
 * One key block of one KV head (cpu_internal.h attn_decode_block): the
 * scores 4 keys a step and Σ p·v 4 heads a pass (cpu_decode_attention.h;
 * 16 vector registers), the softmax between them key by key. */

#include "kernels/cpu/cpu_decode_attention.h"

TARGET static void a2_attn_decode_block(float *o, float *mx, float *den, const float *q2,
                                        const float *k, const float *v, int64_t ld, int nkb,
                                        uint64_t keep, int group, int d, float *s,
                                        const float *pf_k, const float *pf_v, int64_t pf_bytes) {
  if (nkb < 64) keep &= ((uint64_t)1 << nkb) - 1;
  if (group > 4) decode_scores8(s, q2, k, ld, nkb, d, 4, 1, pf_k, pf_v, pf_bytes);
  else decode_scores8(s, q2, k, ld, nkb, d, 4, 0, pf_k, pf_v, pf_bytes);
  float m[8] = {0}, corr[8];
  for (int h = 0; h < group; h++) m[h] = mx[h];
  __m256 bm = _mm256_set1_ps(-INFINITY);
  for (int j = 0; j < nkb; j++)
    if (keep >> j & 1) bm = _mm256_max_ps(bm, _mm256_loadu_ps(s + j * 8));
  __m256 old = _mm256_loadu_ps(m), m8 = _mm256_max_ps(old, bm);
  _mm256_storeu_ps(corr, exp256(_mm256_sub_ps(old, m8)));
  _mm256_storeu_ps(m, m8);
  for (int h = 0; h < group; h++) {
    mx[h] = m[h];
    if (corr[h] == 1.0f) continue;
    den[h] *= corr[h];
    a2_scale_f32(o + h * d, corr[h], d);
  }
  /* p = exp(s − m) for the kept keys; Σ p per head */
  __m256 sum = _mm256_setzero_ps();
  for (int j = 0; j < nkb; j++) {
    if (!(keep >> j & 1)) continue;
    __m256 p = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j * 8), m8));
    _mm256_storeu_ps(s + j * 8, p);
    sum = _mm256_add_ps(sum, p);
  }
  float sums[8];
  _mm256_storeu_ps(sums, sum);
  for (int h = 0; h < group; h++) den[h] += sums[h];
  if (group == 8) decode_pv8(o, s, v, ld, nkb, keep, 8, d, 4); /* constant: no head tests */
  else decode_pv8(o, s, v, ld, nkb, keep, group, d, 4);
}

TARGET static void a2_mul_sub_f32(float *y, const float *p, float c, int n) {
  __m256 vc = _mm256_set1_ps(c);
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(p + i), _mm256_sub_ps(_mm256_loadu_ps(y + i), vc)));
  for (; i < n; i++) y[i] = p[i] * (y[i] - c);
}

/* ------------------------------------------------------------------ SwiGLU rows
 * 8 units per step; see the AVX-512 file for the clamp/NaN convention. */

INLINE void swiglu_split(const float *h, __m256 *g, __m256 *u) {
  __m256 a = _mm256_loadu_ps(h), b = _mm256_loadu_ps(h + 8);
  /* per 128-bit lane [a0 a2 b0 b2 | a4 a6 b4 b6], then lanes reordered */
  *g = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
  *u = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
}

INLINE __m256 sigmoid256(__m256 g, __m256 alpha) {
  __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), alpha), g))));
}

TARGET static void a2_swiglu_row(float *act, const float *h, int I, float alpha, float limit) {
  __m256 lim = _mm256_set1_ps(limit), nlim = _mm256_set1_ps(-limit), al = _mm256_set1_ps(alpha);
  __m256 one = _mm256_set1_ps(1.0f);
  int u = 0;
  for (; u + 8 <= I; u += 8) {
    __m256 hg, hl;
    swiglu_split(h + 2 * u, &hg, &hl);
    __m256 g = _mm256_min_ps(lim, hg), l = _mm256_max_ps(nlim, _mm256_min_ps(lim, hl));
    _mm256_storeu_ps(act + u, _mm256_mul_ps(_mm256_mul_ps(g, sigmoid256(g, al)), _mm256_add_ps(l, one)));
  }
  mxl_cpu_swiglu_scalar(act, h, u, I, alpha, limit);
}

TARGET static void a2_swiglu_bwd_row(float *dh, const float *dact, const float *h, int I,
                                     float alpha, float limit) {
  __m256 lim = _mm256_set1_ps(limit), nlim = _mm256_set1_ps(-limit), al = _mm256_set1_ps(alpha);
  __m256 one = _mm256_set1_ps(1.0f);
  int u = 0;
  for (; u + 8 <= I; u += 8) {
    __m256 hg, hl;
    swiglu_split(h + 2 * u, &hg, &hl);
    __m256 g = _mm256_min_ps(lim, hg), l = _mm256_max_ps(nlim, _mm256_min_ps(lim, hl));
    __m256 s = sigmoid256(g, al), da = _mm256_loadu_ps(dact + u);
    __m256 dsg = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_mul_ps(al, g), s), _mm256_sub_ps(one, s), s);
    __m256 dg = _mm256_mul_ps(_mm256_mul_ps(da, _mm256_add_ps(l, one)), dsg);
    __m256 du = _mm256_mul_ps(da, _mm256_mul_ps(g, s));
    dg = _mm256_and_ps(dg, _mm256_cmp_ps(hg, lim, _CMP_LE_OQ));
    du = _mm256_and_ps(du, _mm256_and_ps(_mm256_cmp_ps(hl, nlim, _CMP_GE_OQ), _mm256_cmp_ps(hl, lim, _CMP_LE_OQ)));
    /* back to (gate, up) pairs */
    __m256 lo = _mm256_unpacklo_ps(dg, du), hi = _mm256_unpackhi_ps(dg, du);
    float *d = dh + 2 * u;
    _mm256_storeu_ps(d, _mm256_add_ps(_mm256_loadu_ps(d), _mm256_permute2f128_ps(lo, hi, 0x20)));
    _mm256_storeu_ps(d + 8, _mm256_add_ps(_mm256_loadu_ps(d + 8), _mm256_permute2f128_ps(lo, hi, 0x31)));
  }
  mxl_cpu_swiglu_bwd_scalar(dh, dact, h, u, I, alpha, limit);
}

/* ------------------------------------------------------------------ RMSNorm rows
 * As the AVX-512 file: sums in double lanes, updates in fp32 in the
 * portable loop's operation order; scalar tails. */

INLINE __m256 load_bf16x8(const uint16_t *g) {
  return bf16x8_to_f32(_mm_loadu_si128((const __m128i *)g));
}

TARGET static float a2_rmsnorm_row(float *y, const float *x, const uint16_t *g, int H, float eps) {
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  int j = 0;
  for (; j + 8 <= H; j += 8) {
    __m256 v = _mm256_loadu_ps(x + j);
    __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    s0 = _mm256_fmadd_pd(lo, lo, s0);
    s1 = _mm256_fmadd_pd(hi, hi, s1);
  }
  double lanes[4], ss = 0;
  _mm256_storeu_pd(lanes, _mm256_add_pd(s0, s1));
  for (int q = 0; q < 4; q++) ss += lanes[q];
  for (int t = j; t < H; t++) ss += (double)x[t] * x[t];
  float r = (float)(1.0 / sqrt(ss / H + eps));
  __m256 vr = _mm256_set1_ps(r);
  for (j = 0; j + 8 <= H; j += 8)
    _mm256_storeu_ps(y + j, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j), vr), load_bf16x8(g + j)));
  for (; j < H; j++) y[j] = x[j] * r * mxl_bf16_to_f32(g[j]);
  return r;
}

TARGET static void a2_rmsnorm_bwd_row(float *dx, const float *dy, const float *x,
                                      const uint16_t *g, float r, int H) {
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  int j = 0;
  for (; j + 8 <= H; j += 8) {
    __m256 d = _mm256_loadu_ps(dy + j), gv = load_bf16x8(g + j), xv = _mm256_loadu_ps(x + j);
    __m256d dl = _mm256_cvtps_pd(_mm256_castps256_ps128(d)), dh = _mm256_cvtps_pd(_mm256_extractf128_ps(d, 1));
    __m256d gl = _mm256_cvtps_pd(_mm256_castps256_ps128(gv)), gh = _mm256_cvtps_pd(_mm256_extractf128_ps(gv, 1));
    __m256d xl = _mm256_cvtps_pd(_mm256_castps256_ps128(xv)), xh = _mm256_cvtps_pd(_mm256_extractf128_ps(xv, 1));
    s0 = _mm256_add_pd(s0, _mm256_mul_pd(_mm256_mul_pd(dl, gl), xl));
    s1 = _mm256_add_pd(s1, _mm256_mul_pd(_mm256_mul_pd(dh, gh), xh));
  }
  double lanes[4], dot = 0, rd = r;
  _mm256_storeu_pd(lanes, _mm256_add_pd(s0, s1));
  for (int q = 0; q < 4; q++) dot += lanes[q];
  for (int t = j; t < H; t++) dot += (double)dy[t] * mxl_bf16_to_f32(g[t]) * x[t];
  float coef = (float)(rd * rd * rd * dot / H);
  __m256 vc = _mm256_set1_ps(coef), vr = _mm256_set1_ps(r);
  int i = 0;
  for (; i + 8 <= H; i += 8) {
    __m256 a = _mm256_mul_ps(_mm256_mul_ps(vr, load_bf16x8(g + i)), _mm256_loadu_ps(dy + i));
    __m256 b = _mm256_mul_ps(_mm256_loadu_ps(x + i), vc);
    _mm256_storeu_ps(dx + i, _mm256_add_ps(_mm256_loadu_ps(dx + i), _mm256_sub_ps(a, b)));
  }
  for (; i < H; i++) dx[i] += r * mxl_bf16_to_f32(g[i]) * dy[i] - x[i] * coef;
}

/* mxl_cpu_rope_halves_scalar 8 pairs at a time, the same operations. */
TARGET static void a2_rope_halves_f32(float *xa, float *xb, const float *cs, const float *sn,
                                      int n, float sign) {
  const __m256 sg = _mm256_set1_ps(sign);
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256 a = _mm256_loadu_ps(xa + j), b = _mm256_loadu_ps(xb + j), c = _mm256_loadu_ps(cs + j);
    __m256 s = _mm256_mul_ps(sg, _mm256_loadu_ps(sn + j));
    _mm256_storeu_ps(xa + j, _mm256_sub_ps(_mm256_mul_ps(a, c), _mm256_mul_ps(b, s)));
    _mm256_storeu_ps(xb + j, _mm256_add_ps(_mm256_mul_ps(b, c), _mm256_mul_ps(a, s)));
  }
  mxl_cpu_rope_halves_scalar(xa, xb, cs, sn, j, n, sign);
}

/* mxl_cpu_adamw_scalar 8 lanes at a time, the same operations in order. */
TARGET static void a2_adamw_f32(float *param, const float *grad, float *m, float *v, size_t n,
                                const mxl_cpu_adamw_coef *c) {
  const __m256 gs = _mm256_set1_ps(c->grad_scale), b1 = _mm256_set1_ps(c->beta1);
  const __m256 b2 = _mm256_set1_ps(c->beta2), ob1 = _mm256_set1_ps(1.0f - c->beta1);
  const __m256 ob2 = _mm256_set1_ps(1.0f - c->beta2), ibc1 = _mm256_set1_ps(c->inv_bc1);
  const __m256 isbc2 = _mm256_set1_ps(c->inv_sqrt_bc2), eps = _mm256_set1_ps(c->eps);
  const __m256 wd = _mm256_set1_ps(c->weight_decay), lr = _mm256_set1_ps(c->lr);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 g = _mm256_mul_ps(_mm256_loadu_ps(grad + i), gs), p = _mm256_loadu_ps(param + i);
    __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(ob1, g));
    __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)),
                              _mm256_mul_ps(_mm256_mul_ps(ob2, g), g));
    __m256 den = _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(vi), isbc2), eps);
    __m256 up = _mm256_add_ps(_mm256_div_ps(_mm256_mul_ps(mi, ibc1), den), _mm256_mul_ps(wd, p));
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    _mm256_storeu_ps(param + i, _mm256_sub_ps(p, _mm256_mul_ps(lr, up)));
  }
  mxl_cpu_adamw_scalar(param, grad, m, v, i, n, c);
}

const mxl_cpu_isa mxl_cpu_isa_avx2 = {
    .name = "avx2",
    .to_bf16 = a2_to_bf16,
    .to_bf16_split = a2_to_bf16_split,
    .mxfp4_to_bf16 = a2_mxfp4_to_bf16,
    .pack_vnni_bf16 = a2_pack_vnni_bf16,
    .pack_vnni_t_bf16 = a2_pack_vnni_t_bf16,
    .pack_vnni_t_mxfp4 = a2_pack_vnni_t_mxfp4,
    .pack_vnni_mxfp4 = a2_pack_vnni_mxfp4,
    .gemm_bf16_nt = a2_gemm_bf16_nt,
    .gemv_bf16 = a2_gemv_bf16,
    .gemm_bf16_vnni = a2_gemm_bf16_vnni,
    .gemv_mxfp4 = a2_gemv_mxfp4,
    .gemm_f32_nn = a2_gemm_f32_nn,
    .gemm_f32_nt = a2_gemm_f32_nt,
    .transpose_f32 = mxl_cpu_transpose_f32_scalar,
    .dot_f32 = a2_dot_f32,
    .axpy_f32 = a2_axpy_f32,
    .max_f32 = a2_max_f32,
    .sum_exp_f32 = a2_sum_exp_f32,
    .exp_f32 = a2_exp_f32,
    .masked_max_f32 = a2_masked_max_f32,
    .masked_exp_f32 = a2_masked_exp_f32,
    .scale_f32 = a2_scale_f32,
    .attn_decode_block = a2_attn_decode_block,
    .mul_sub_f32 = a2_mul_sub_f32,
    .swiglu_row = a2_swiglu_row,
    .swiglu_bwd_row = a2_swiglu_bwd_row,
    .rmsnorm_row = a2_rmsnorm_row,
    .rmsnorm_bwd_row = a2_rmsnorm_bwd_row,
    .rope_halves_f32 = a2_rope_halves_f32,
    .adamw_f32 = a2_adamw_f32,
};

#else
/* Not x86: this table does not exist (ISO C wants a declaration here). */
typedef int mxl_cpu_isa_not_x86;
#endif
