/* CPU backend inner loops for AVX-512 F/BW/VL with BF16 (vdpbf16ps) and
 * VNNI: the fast path (Zen 4 and later, Intel Cooper Lake / Sapphire
 * Rapids and later; the table's integer decode GEMV is cpu_q8_avx512.c). Every function carries a target attribute, so this file builds
 * with a baseline x86-64 compiler flag and runs only when cpu_backend.c has
 * checked CPUID. Semantics of each entry: cpu_internal.h.
 *
 * Numerics: products of bf16 pairs are exact in fp32 and vdpbf16ps
 * accumulates them in fp32 (its internal rounding differs from an FMA
 * chain by at most an ulp per step). The bf16 conversion (vcvtne2ps2bf16)
 * rounds to nearest even but flushes fp32 subnormal inputs to zero.
 *
 * MXFP4 decode in registers: nibble codes become 16-bit vpermw indices
 * into a 32-entry table of the E2M1 values in bf16, and the scale exponent
 * is added to the exponent field of every nonzero value (codes 0 and 8, ±0,
 * keep their bits). Per row (mxfp4_to_bf16, the GEMV) a block's 16 bytes
 * are spread to its 32 indices in element order and the table itself is
 * scaled; the packs for the GEMM decode 16 rows (forward, transposed) or 2
 * rows (backward) × 4 blocks at once, straight into the packed order, and
 * add each row's exponent after an unscaled lookup (see
 * a5_pack_vnni_t_mxfp4 and a5_pack_vnni_mxfp4). Both ways are exact as
 * long as the scaled values stay normal in bf16: scale exponents in
 * [-125, 125]. Rows, 16-row groups or row-pair steps with a scale outside
 * that range (never in real checkpoints; also the NaN code) take the
 * portable decode. */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/bf16.h"
#include "core/clock.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/cpu_mxfp4_group_avx512.h"
#include "kernels/mxfp4.h"

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma")))
#define INLINE TARGET static inline __attribute__((always_inline))
/* Register tiles are arrays indexed by loop counters: fully unrolled, they
 * live in registers (the build's -O2 does not unroll on its own). */
#define UNROLL _Pragma("GCC unroll 16")

/* ------------------------------------------------------------------ bf16 conversion */

INLINE __m512 bf16x16_to_f32(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

TARGET static void a5_to_bf16(uint16_t *dst, const float *src, size_t n) {
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
    _mm512_storeu_si512(dst + i, (__m512i)v);
  }
  for (; i < n; i += 16) {
    __mmask16 m = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
    _mm256_mask_storeu_epi16(dst + i, m, (__m256i)v);
  }
}

TARGET static void a5_to_bf16_split(uint16_t *hi, uint16_t *lo, const float *src, size_t n) {
  for (size_t i = 0; i < n; i += 16) {
    __mmask16 m = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    __m512 x = _mm512_maskz_loadu_ps(m, src + i);
    __m256i h = (__m256i)_mm512_cvtneps_pbh(x);
    __m256i l = (__m256i)_mm512_cvtneps_pbh(_mm512_sub_ps(x, bf16x16_to_f32(h)));
    _mm256_mask_storeu_epi16(hi + i, m, h);
    _mm256_mask_storeu_epi16(lo + i, m, l);
  }
}

/* ------------------------------------------------------------------ MXFP4 decode */

/* E2M1 codes 0..15 as bf16, twice (vpermw indexes 32 entries). */
static const uint16_t e2m1_bf16[32] __attribute__((aligned(64))) = {
    0x0000, 0x3f00, 0x3f80, 0x3fc0, 0x4000, 0x4040, 0x4080, 0x40c0,
    0x8000, 0xbf00, 0xbf80, 0xbfc0, 0xc000, 0xc040, 0xc080, 0xc0c0,
    0x0000, 0x3f00, 0x3f80, 0x3fc0, 0x4000, 0x4040, 0x4080, 0x40c0,
    0x8000, 0xbf00, 0xbf80, 0xbfc0, 0xc000, 0xc040, 0xc080, 0xc0c0};
/* Entries of the table that hold a nonzero value (all but codes 0 and 8). */
#define E2M1_NONZERO ((__mmask32)0xFEFEFEFEu)

/* 32 nibble indices, in element order, of one block's 16 bytes. */
INLINE __m512i block_indices(const uint8_t *block) {
  __m512i d = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)block));
  /* word 2j = low nibble of byte j, word 2j+1 = its high nibble */
  return _mm512_ternarylogic_epi32(d, _mm512_slli_epi32(d, 12), _mm512_set1_epi32(0x000F000F),
                                   0xA8); /* (a | b) & c */
}

/* The E2M1 table scaled by 2^(scale - bias) (exponent-field add). */
INLINE __m512i scaled_table(__m512i table, unsigned scale, int bias) {
  __m512i e = _mm512_set1_epi16((short)(((int)scale - bias) * 128));
  return _mm512_mask_add_epi16(table, E2M1_NONZERO, table, e);
}

INLINE __m512i decode_block(const uint8_t *block, unsigned scale, int bias, __m512i table) {
  return _mm512_permutexvar_epi16(block_indices(block), scaled_table(table, scale, bias));
}

/* 1 when every scale byte s of the n given keeps s - bias in [-125, 125]. */
TARGET int mxl_a5_scales_in_range(const uint8_t *s, int64_t n, int bias) {
  int lo = bias - 125, hi = bias + 125;
  if (lo <= 0 && hi >= 255) return 1;
  __m512i vlo = _mm512_set1_epi8((char)(lo < 0 ? 0 : lo)), vhi = _mm512_set1_epi8((char)(hi > 255 ? 255 : hi));
  for (int64_t i = 0; i < n; i += 64) {
    __mmask64 m = n - i >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (n - i)) - 1);
    __m512i v = _mm512_maskz_loadu_epi8(m, s + i);
    if (_mm512_mask_cmplt_epu8_mask(m, v, vlo) | _mm512_mask_cmpgt_epu8_mask(m, v, vhi)) return 0;
  }
  return 1;
}

/* Portable decode of one block to bf16 (any scale, NaN included). */
static void decode_block_slow(uint16_t *out, const uint8_t *block, unsigned scale, int bias) {
  float tmp[MXL_MXFP4_BLOCK];
  mxl_mxfp4_decode_block(block, scale, bias, tmp);
  for (int t = 0; t < MXL_MXFP4_BLOCK; t++) out[t] = mxl_f32_to_bf16(tmp[t]);
}

/* Prefetches the lines of bytes [p, p + n) into L1 (p may be past the end
 * of the array). Column windows of MXFP4 rows (the oneDNN backward's strips
 * of 8 blocks, 1440 bytes apart at K = 2880) read a line or two per row,
 * which the hardware prefetcher leaves to memory latency. */
static inline void prefetch_window(const uint8_t *p, int n) {
  uintptr_t a = (uintptr_t)p & ~(uintptr_t)63, end = (uintptr_t)p + (uintptr_t)n;
  for (; a < end; a += 64) _mm_prefetch((const char *)a, _MM_HINT_T0);
}

enum { DECODE_PREFETCH = 4096 };

TARGET static void a5_mxfp4_to_bf16(uint16_t *dst, int64_t ld_dst, const uint8_t *blocks,
                                    const uint8_t *scales, int64_t row_blocks, int rows, int K,
                                    int bias) {
  __m512i table = _mm512_load_si512(e2m1_bf16);
  int nb = K / MXL_MXFP4_BLOCK;
  for (int r = 0; r < rows; r++) {
    const uint8_t *rb = blocks + (int64_t)r * row_blocks * MXL_MXFP4_BLOCK_BYTES;
    const uint8_t *rs = scales + (int64_t)r * row_blocks;
    uint16_t *out = dst + (int64_t)r * ld_dst;
    if (nb < row_blocks) /* a column window: see prefetch_window */
      prefetch_window(rb + 32 * row_blocks * MXL_MXFP4_BLOCK_BYTES, nb * MXL_MXFP4_BLOCK_BYTES);
    if (mxl_a5_scales_in_range(rs, nb, bias)) {
      for (int g = 0; g < nb; g++) {
        if (nb == row_blocks && g % 4 == 0) /* whole rows: contiguous, read ahead */
          _mm_prefetch((const char *)(rb + g * MXL_MXFP4_BLOCK_BYTES + DECODE_PREFETCH),
                       _MM_HINT_T0);
        _mm512_storeu_si512(out + g * MXL_MXFP4_BLOCK,
                            decode_block(rb + g * MXL_MXFP4_BLOCK_BYTES, rs[g], bias, table));
      }
    } else {
      for (int g = 0; g < nb; g++)
        decode_block_slow(out + g * MXL_MXFP4_BLOCK, rb + g * MXL_MXFP4_BLOCK_BYTES, rs[g], bias);
    }
  }
}

/* One of the four rounds of a 16 × 16 byte transpose: out[2j], out[2j+1]
 * interleave the bytes of in[j] and in[j + 8]. */
INLINE void transpose_round(__m128i out[16], const __m128i in[16]) {
  UNROLL
  for (int j = 0; j < 8; j++) {
    out[2 * j] = _mm_unpacklo_epi8(in[j], in[j + 8]);
    out[2 * j + 1] = _mm_unpackhi_epi8(in[j], in[j + 8]);
  }
}

/* Rows 16 at a time, block by block: the 16 rows' bytes of block g
 * transposed (four rounds of byte unpacks), so that vector p holds byte p
 * of every row, i.e. elements (2p, 2p+1) of the 16 rows: the 16 words at
 * (g, p, n0..n0+15) of the blocked layout. Each row's scale is added to
 * the exponent field of its nonzero values (codes 0 and 8 are ±0). Rows
 * whose scales leave [-125, 125] take the portable decode. */
TARGET static void a5_mxfp4_to_bf16_ba16a64b2a(uint16_t *dst, const uint8_t *blocks,
                                               const uint8_t *scales, int64_t row_blocks,
                                               int rows, int K, int bias) {
  const __m512i table = _mm512_load_si512(e2m1_bf16), low3 = _mm512_set1_epi16(7);
  int nb = K / MXL_MXFP4_BLOCK;
  for (int n0 = 0; n0 < rows; n0 += 16) {
    const uint8_t *rb = blocks + (int64_t)n0 * row_blocks * MXL_MXFP4_BLOCK_BYTES;
    const uint8_t *rs = scales + (int64_t)n0 * row_blocks;
    uint32_t *out = (uint32_t *)dst + (int64_t)(n0 / 64) * nb * 1024 + n0 % 64;
    int fast = 1;
    for (int i = 0; i < 16; i++) fast &= mxl_a5_scales_in_range(rs + i * row_blocks, nb, bias);
    for (int g = 0; g < nb; g++) {
      uint32_t *o = out + (int64_t)g * 1024;
      if (!fast) {
        for (int i = 0; i < 16; i++) {
          float w[MXL_MXFP4_BLOCK];
          mxl_mxfp4_decode_block(rb + (i * row_blocks + g) * MXL_MXFP4_BLOCK_BYTES,
                                 rs[i * row_blocks + g], bias, w);
          for (int p = 0; p < 16; p++)
            o[p * 64 + i] = (uint32_t)mxl_f32_to_bf16(w[2 * p]) |
                            (uint32_t)mxl_f32_to_bf16(w[2 * p + 1]) << 16;
        }
        continue;
      }
      uint16_t e16[32] __attribute__((aligned(64)));
      __m128i v[16], t[16];
      /* the next 16 rows (contiguous) are read ahead, 4 lines per block */
      const uint8_t *ahead = rb + (16 * row_blocks + 16 * g) * MXL_MXFP4_BLOCK_BYTES;
      for (int l = 0; l < 4; l++) _mm_prefetch((const char *)(ahead + 64 * l), _MM_HINT_T0);
      for (int i = 0; i < 16; i++) {
        const uint8_t *b = rb + (i * row_blocks + g) * MXL_MXFP4_BLOCK_BYTES;
        v[i] = _mm_loadu_si128((const __m128i *)b);
        e16[2 * i] = e16[2 * i + 1] = (uint16_t)(((int)rs[i * row_blocks + g] - bias) * 128);
      }
      transpose_round(t, v), transpose_round(v, t), transpose_round(t, v), transpose_round(v, t);
      __m512i e = _mm512_load_si512(e16);
      for (int p = 0; p < 16; p++) {
        __m512i d = _mm512_cvtepu8_epi32(v[p]);
        __m512i idx = _mm512_ternarylogic_epi32(d, _mm512_slli_epi32(d, 12),
                                                _mm512_set1_epi32(0x000F000F), 0xA8);
        __mmask32 nz = _mm512_test_epi16_mask(idx, low3);
        __m512i w = _mm512_permutexvar_epi16(idx, table);
        _mm512_storeu_si512(o + p * 64, _mm512_mask_add_epi16(w, nz, w, e));
      }
    }
  }
}

/* ------------------------------------------------------------------ pair packing */

/* Interleaves 32 columns of rows r0 and r1: out0 = columns 0..15 as
 * (r0, r1) pairs, out1 = columns 16..31. */
INLINE void interleave_pair(__m512i r0, __m512i r1, __m512i *out0, __m512i *out1) {
  __m512i lo = _mm512_unpacklo_epi16(r0, r1), hi = _mm512_unpackhi_epi16(r0, r1);
  /* lo holds columns 8q..8q+3 of 128-bit lane q, hi columns 8q+4..8q+7 */
  const __m512i first = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
  const __m512i second = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
  *out0 = _mm512_permutex2var_epi64(lo, first, hi);
  *out1 = _mm512_permutex2var_epi64(lo, second, hi);
}

TARGET static void a5_pack_vnni_bf16(uint16_t *dst, int64_t ld_dst, const uint16_t *src,
                                     int64_t ld_src, int rows, int cols) {
  for (int pp = 0; pp < (rows + 1) / 2; pp++) {
    const uint16_t *s0 = src + (int64_t)(2 * pp) * ld_src;
    const uint16_t *s1 = 2 * pp + 1 < rows ? s0 + ld_src : NULL;
    uint16_t *d = dst + (int64_t)pp * ld_dst * 2;
    for (int64_t c = 0; c < ld_dst; c += 32) {
      int64_t left = cols - c;
      __mmask32 m = left >= 32 ? ~(__mmask32)0 : left <= 0 ? 0 : (((__mmask32)1 << left) - 1);
      __m512i r0 = _mm512_maskz_loadu_epi16(m, s0 + c);
      __m512i r1 = s1 ? _mm512_maskz_loadu_epi16(m, s1 + c) : _mm512_setzero_si512();
      __m512i o0, o1;
      interleave_pair(r0, r1, &o0, &o1);
      _mm512_storeu_si512(d + c * 2, o0);
      if (c + 16 < ld_dst) _mm512_storeu_si512(d + c * 2 + 32, o1);
    }
  }
}

/* 16×16 transpose of 32-bit elements: r[i] row i in, r[c] column c out. */
INLINE void transpose16x16(__m512i r[16]) {
  __m512i t[16], u[16];
  UNROLL
  for (int i = 0; i < 8; i++) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  /* t[2i] lane L: rows 2i, 2i+1 of columns 4L, 4L+1; t[2i+1]: 4L+2, 4L+3 */
  UNROLL
  for (int g = 0; g < 4; g++) {
    u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
    u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
  }
  /* u[4g+e] lane L: rows 4g..4g+3 of column 4L+e */
  UNROLL
  for (int e = 0; e < 4; e++) {
    __m512i v0 = _mm512_shuffle_i32x4(u[e], u[4 + e], 0x88), v1 = _mm512_shuffle_i32x4(u[e], u[4 + e], 0xDD);
    __m512i w0 = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0x88);
    __m512i w1 = _mm512_shuffle_i32x4(u[8 + e], u[12 + e], 0xDD);
    r[e] = _mm512_shuffle_i32x4(v0, w0, 0x88);
    r[8 + e] = _mm512_shuffle_i32x4(v0, w0, 0xDD);
    r[4 + e] = _mm512_shuffle_i32x4(v1, w1, 0x88);
    r[12 + e] = _mm512_shuffle_i32x4(v1, w1, 0xDD);
  }
}

TARGET static void a5_pack_vnni_t_bf16(uint16_t *dst, int64_t ld_dst, const uint16_t *src,
                                       int64_t ld_src, int rows, int K) {
  int64_t kpairs = (K + 1) / 2;
  for (int64_t j0 = 0; j0 < ld_dst; j0 += 16)
    for (int64_t k0 = 0; k0 < K; k0 += 32) {
      int64_t left = K - k0;
      __mmask32 m = left >= 32 ? ~(__mmask32)0 : (((__mmask32)1 << left) - 1);
      __m512i r[16];
      UNROLL
      for (int q = 0; q < 16; q++)
        r[q] = j0 + q < rows ? _mm512_maskz_loadu_epi16(m, src + (j0 + q) * ld_src + k0)
                             : _mm512_setzero_si512();
      transpose16x16(r);
      if (kpairs - k0 / 2 >= 16) {
        UNROLL
        for (int t = 0; t < 16; t++) _mm512_storeu_si512(dst + ((k0 / 2 + t) * ld_dst + j0) * 2, r[t]);
      } else {
        for (int t = 0; k0 / 2 + t < kpairs; t++)
          _mm512_storeu_si512(dst + ((k0 / 2 + t) * ld_dst + j0) * 2, r[t]);
      }
    }
}

/* Transposed MXFP4 pack (the forward's weight panel), 16 rows × 4 blocks a
 * step. The output for block g, byte t (elements 2t, 2t+1) of rows
 * j0..j0+15 is one zmm of 32 words, word 2q + h = element 2t + h of row
 * j0 + q: lane L holds rows 4L..4L+3. So the decode works with 128-bit
 * lanes as row groups and needs no word transpose:
 *   1. 16 loads of 64 bytes (row q, blocks g..g+3 in lanes 0..3) and a 4×4
 *      lane transpose (32 vshufi32x4): a[b][r] lane L = block g+b of row
 *      4L + r;
 *   2. per block, in-lane unpacks (8) give q[i], dword t' of lane L = byte
 *      4i + t' of rows 4L..4L+3; a shift (4) and byte unpacks (8) put each
 *      byte's high nibble after it, and byte unpacks (16) spread the codes
 *      to words: the vpermw indices of the 16 outputs, in output order;
 *   3. per output, vpermw into the unscaled table, vptestmw of the code's
 *      magnitude bits and a masked vpaddw of the rows' exponents (words
 *      (s - bias)·128: a pshufb and a shift per block from one gather of 4
 *      scale bytes per row per step), and the store.
 * 442 vector ops per 2048 weights: 6.9 per 32 weights with the store,
 * against about 12 for the per-row decode + 16×16 dword transpose, which a
 * group with an out-of-range scale still takes. On Zen 4 that is about 4.5
 * cycles per 32 weights with the panel in L2 (vpermw, vptestmw and the
 * lane shuffles share two pipes; a zmm store takes 2 cycles). */

/* out[b] lane L = in[L] lane b. */
INLINE void transpose_lanes4(__m512i i0, __m512i i1, __m512i i2, __m512i i3, __m512i out[4]) {
  __m512i t0 = _mm512_shuffle_i32x4(i0, i1, 0x44), t1 = _mm512_shuffle_i32x4(i0, i1, 0xEE);
  __m512i t2 = _mm512_shuffle_i32x4(i2, i3, 0x44), t3 = _mm512_shuffle_i32x4(i2, i3, 0xEE);
  /* t0 = [i0.0, i0.1, i1.0, i1.1], t1 = [i0.2, i0.3, i1.2, i1.3], ... */
  out[0] = _mm512_shuffle_i32x4(t0, t2, 0x88);
  out[1] = _mm512_shuffle_i32x4(t0, t2, 0xDD);
  out[2] = _mm512_shuffle_i32x4(t1, t3, 0x88);
  out[3] = _mm512_shuffle_i32x4(t1, t3, 0xDD);
}

/* One output: the codes' bf16 values, exponents e added to nonzero ones
 * (codes 0 and 8, ±0, keep their bits). idx word low 5 bits = code (bit 4
 * is junk: e2m1_bf16 repeats at 16). */
INLINE void lookup_store(uint16_t *d, __m512i idx, __m512i e, __m512i table) {
  __m512i v = _mm512_permutexvar_epi16(idx, table);
  v = _mm512_mask_add_epi16(v, _mm512_test_epi16_mask(idx, _mm512_set1_epi16(7)), v, e);
  _mm512_storeu_si512(d, v);
}

/* The 16 outputs of one block: a[r] lane L = its 16 bytes in row 4L + r,
 * e its exponents; output t goes to d + t·ld2. */
INLINE void pack_t_block(uint16_t *d, int64_t ld2, const __m512i a[4], __m512i e, __m512i table) {
  __m512i p0 = _mm512_unpacklo_epi8(a[0], a[1]), p1 = _mm512_unpackhi_epi8(a[0], a[1]);
  __m512i p2 = _mm512_unpacklo_epi8(a[2], a[3]), p3 = _mm512_unpackhi_epi8(a[2], a[3]);
  /* p0 word t = (byte t of row 4L, of row 4L+1), t < 8 */
  __m512i q[4] = {_mm512_unpacklo_epi16(p0, p2), _mm512_unpackhi_epi16(p0, p2),
                  _mm512_unpacklo_epi16(p1, p3), _mm512_unpackhi_epi16(p1, p3)};
  UNROLL
  for (int i = 0; i < 4; i++) {
    /* q[i] dword t' = byte 4i + t' of rows 4L..4L+3; each byte's low nibble
     * followed by its high one (in the low 4 bits of the shifted byte),
     * then spread to words */
    __m512i hi = _mm512_srli_epi16(q[i], 4);
    __m512i x0 = _mm512_unpacklo_epi8(q[i], hi), x1 = _mm512_unpackhi_epi8(q[i], hi);
    uint16_t *o = d + 4 * i * ld2;
    lookup_store(o, _mm512_unpacklo_epi8(x0, x0), e, table);
    lookup_store(o + ld2, _mm512_unpackhi_epi8(x0, x0), e, table);
    lookup_store(o + 2 * ld2, _mm512_unpacklo_epi8(x1, x1), e, table);
    lookup_store(o + 3 * ld2, _mm512_unpackhi_epi8(x1, x1), e, table);
  }
}

/* Scale exponents of block b of a step: word 2q, 2q+1 = (s - bias)·128,
 * from sb with dword q = the scale bytes of row q, blocks g..g+3, minus
 * bias (an int8: in range, s - bias is within ±125). */
INLINE __m512i block_exponents_t(__m512i sb, int b) {
#define EXP_CTL(d) (int)(0x00800080u | (4u * (d) + (unsigned)b) << 8 | (4u * (d) + (unsigned)b) << 24)
  /* pshufb: byte b of each dword into the high byte of both its words */
  const __m512i ctl = _mm512_set_epi32(EXP_CTL(3), EXP_CTL(2), EXP_CTL(1), EXP_CTL(0), EXP_CTL(3),
                                       EXP_CTL(2), EXP_CTL(1), EXP_CTL(0), EXP_CTL(3), EXP_CTL(2),
                                       EXP_CTL(1), EXP_CTL(0), EXP_CTL(3), EXP_CTL(2), EXP_CTL(1),
                                       EXP_CTL(0));
#undef EXP_CTL
  return _mm512_srai_epi16(_mm512_shuffle_epi8(sb, ctl), 1);
}

/* Scale bytes of blocks g..g+n-1 (n <= 4) of rows 0..nrows-1 minus bias,
 * dword q = row q (zero bytes elsewhere). */
INLINE __m512i step_scales_t(const uint8_t *scales, int64_t row_blocks, int nrows, int g, int n,
                             int bias) {
  __m512i s;
  if (n == 4) {
    __mmask16 m = nrows >= 16 ? 0xFFFF : (__mmask16)((1u << nrows) - 1);
    __m512i off = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                     _mm512_set1_epi32((int)row_blocks));
    s = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, off, scales + g, 1);
  } else { /* the last blocks of a row: no 4-byte read past them */
    uint32_t w[16] = {0};
    for (int q = 0; q < nrows; q++) memcpy(&w[q], scales + q * row_blocks + g, (size_t)n);
    s = _mm512_loadu_si512(w);
  }
  return _mm512_sub_epi8(s, _mm512_set1_epi8((char)bias));
}

/* One step of a 16-row group: blocks g..g+n-1 (n <= 4) of its rows (the
 * first nrows real, the others read as zeros) into their 16·n outputs. */
INLINE void pack_t_step(uint16_t *dst, int64_t ld_dst, const uint8_t *blocks,
                        const uint8_t *scales, int64_t row_blocks, int nrows, int g, int n,
                        int bias, __m512i table) {
  __mmask16 m = n == 4 ? 0xFFFF : (__mmask16)((1u << (4 * n)) - 1);
  uintptr_t ahead = (uintptr_t)(16 * row_blocks * MXL_MXFP4_BLOCK_BYTES);
  __m512i a[4][4];
  UNROLL
  for (int k = 0; k < 4; k++) {
    __m512i r[4], t[4];
    UNROLL
    for (int i = 0; i < 4; i++) {
      int q = 4 * i + k;
      const uint8_t *row = blocks + ((q < nrows ? q : 0) * row_blocks + g) * MXL_MXFP4_BLOCK_BYTES;
      /* the same bytes of the row 16 below into L2: the next group's step,
       * 23 steps ahead at K = 2880. Weights stream from memory, and on
       * Zen 4 the hardware prefetcher alone gave 16 such row streams half
       * of the read bandwidth (gate_up prefill, 1 thread: 364 -> 331 ms) */
      _mm_prefetch((const char *)((uintptr_t)row + ahead), _MM_HINT_T1); /* may pass the end */
      r[i] = _mm512_maskz_loadu_epi32(q < nrows ? m : 0, row);
    }
    transpose_lanes4(r[0], r[1], r[2], r[3], t);
    UNROLL
    for (int b = 0; b < 4; b++) a[b][k] = t[b];
  }
  __m512i sb = step_scales_t(scales, row_blocks, nrows, g, n, bias);
  UNROLL
  for (int b = 0; b < 4; b++) {
    if (b >= n) break;
    pack_t_block(dst + (int64_t)(g + b) * 16 * ld_dst * 2, ld_dst * 2, a[b], block_exponents_t(sb, b),
                 table);
  }
}

/* The group of rows j0..j0+15 one block at a time: rows with in-range
 * scales decoded in registers, the others by the portable decode, then a
 * 16×16 dword transpose. */
TARGET static void pack_t_group_rows(uint16_t *dst, int64_t ld_dst, const uint8_t *blocks,
                                     const uint8_t *scales, int64_t row_blocks, int nrows, int nb,
                                     int bias, __m512i table) {
  uint16_t slow[MXL_MXFP4_BLOCK] __attribute__((aligned(64)));
  int fast[16];
  for (int q = 0; q < 16; q++) fast[q] = q < nrows && mxl_a5_scales_in_range(scales + q * row_blocks, nb, bias);
  for (int g = 0; g < nb; g++) {
    __m512i r[16];
    UNROLL
    for (int q = 0; q < 16; q++) {
      int64_t b = q * row_blocks + g;
      if (fast[q]) {
        r[q] = decode_block(blocks + b * MXL_MXFP4_BLOCK_BYTES, scales[b], bias, table);
      } else if (q < nrows) {
        decode_block_slow(slow, blocks + b * MXL_MXFP4_BLOCK_BYTES, scales[b], bias);
        r[q] = _mm512_load_si512(slow);
      } else {
        r[q] = _mm512_setzero_si512();
      }
    }
    transpose16x16(r);
    UNROLL
    for (int t = 0; t < 16; t++) _mm512_storeu_si512(dst + ((int64_t)g * 16 + t) * ld_dst * 2, r[t]);
  }
}

TARGET static void a5_pack_vnni_t_mxfp4(uint16_t *dst, int64_t ld_dst, const uint8_t *blocks,
                                        const uint8_t *scales, int64_t row_blocks, int rows, int K,
                                        int bias) {
  __m512i table = _mm512_load_si512(e2m1_bf16);
  int nb = K / MXL_MXFP4_BLOCK;
  for (int64_t j0 = 0; j0 < ld_dst; j0 += 16) {
    int nrows = rows - j0 >= 16 ? 16 : rows - j0 <= 0 ? 0 : (int)(rows - j0);
    /* rows past `rows` are read as zeros (masked loads: no pointer into them) */
    const uint8_t *gb = nrows ? blocks + j0 * row_blocks * MXL_MXFP4_BLOCK_BYTES : blocks;
    const uint8_t *gs = nrows ? scales + j0 * row_blocks : scales;
    int in_range = 1;
    for (int q = 0; q < nrows && in_range; q++) in_range = mxl_a5_scales_in_range(gs + q * row_blocks, nb, bias);
    if (!in_range) {
      pack_t_group_rows(dst + j0 * 2, ld_dst, gb, gs, row_blocks, nrows, nb, bias, table);
      continue;
    }
    int g = 0;
    if (nrows == 16) /* the common case, with constant row and block counts */
      for (; g + 4 <= nb; g += 4) pack_t_step(dst + j0 * 2, ld_dst, gb, gs, row_blocks, 16, g, 4, bias, table);
    for (; g < nb; g += 4)
      pack_t_step(dst + j0 * 2, ld_dst, gb, gs, row_blocks, nrows, g, nb - g < 4 ? nb - g : 4, bias,
                  table);
  }
}

/* Non-transposed MXFP4 pack (the backward's weight strips), 2 rows × 4
 * blocks a step: the pair's output for block g is two zmms (columns
 * 32g..32g+15, 32g+16..32g+31), word 2c + h = column c of row h.
 * Interleaving the two rows' bytes (unpacklo/hi epi8: z[i] lane b word k =
 * byte 8i + k of block b of both rows) puts the 4 codes of words 4k..4k+3
 * in one 16-bit word, so per output a vpermw spreads z's words of block b
 * and a vpsrlvw by 0, 8, 4, 12 brings each code to the low bits: the vpermw
 * indices; then the lookup, exponent add and store as in the transposed
 * pack (with the two rows' exponents alternating). 54 vector ops per 8
 * outputs: 6.8 per 32 weights with the store, against about 9 for two
 * per-row decodes and an interleave. */

/* Row pair step: n <= 4 blocks of row 0 (b0, s0) and row 1 (b1, s1; NULL
 * when the pair has one row) into d, the pair's output of their first. */
INLINE void pack_pair_step(uint16_t *d, const uint8_t *b0, const uint8_t *b1, const uint8_t *s0,
                           const uint8_t *s1, int n, int bias, __m512i table) {
  __mmask16 m = n == 4 ? 0xFFFF : (__mmask16)((1u << (4 * n)) - 1);
  __m512i r0 = _mm512_maskz_loadu_epi32(m, b0);
  __m512i r1 = b1 ? _mm512_maskz_loadu_epi32(m, b1) : _mm512_setzero_si512();
  __m512i z[2] = {_mm512_unpacklo_epi8(r0, r1), _mm512_unpackhi_epi8(r0, r1)};
  /* word 4k + j of an output: code j of z's word k (row j & 1, nibble j >> 1) */
  const __m512i shift = _mm512_set1_epi64(0x000C000400080000);
  UNROLL
  for (int b = 0; b < 4; b++) {
    if (b >= n) break;
    const __m512i spread = _mm512_set_epi16(
        8 * b + 7, 8 * b + 7, 8 * b + 7, 8 * b + 7, 8 * b + 6, 8 * b + 6, 8 * b + 6, 8 * b + 6,
        8 * b + 5, 8 * b + 5, 8 * b + 5, 8 * b + 5, 8 * b + 4, 8 * b + 4, 8 * b + 4, 8 * b + 4,
        8 * b + 3, 8 * b + 3, 8 * b + 3, 8 * b + 3, 8 * b + 2, 8 * b + 2, 8 * b + 2, 8 * b + 2,
        8 * b + 1, 8 * b + 1, 8 * b + 1, 8 * b + 1, 8 * b, 8 * b, 8 * b, 8 * b);
    int e0 = ((int)s0[b] - bias) * 128, e1 = b1 ? ((int)s1[b] - bias) * 128 : 0;
    __m512i e = _mm512_set1_epi32((int)(((unsigned)e0 & 0xFFFFu) | (unsigned)e1 << 16));
    UNROLL
    for (int i = 0; i < 2; i++)
      lookup_store(d + b * 64 + i * 32,
                     _mm512_srlv_epi16(_mm512_permutexvar_epi16(spread, z[i]), shift), e, table);
  }
}

/* 1 when each of the n <= 4 scale bytes s keeps s - bias in [-125, 125]
 * (a call of scales_in_range per row pair and step cost a quarter of the
 * backward's pack). */
static inline int few_scales_in_range(const uint8_t *s, int n, int bias) {
  int ok = 1;
  for (int i = 0; i < n; i++) ok &= (unsigned)((int)s[i] - bias + 125) <= 250u;
  return ok;
}

/* A row pair's step block by block through the portable decode (a scale
 * out of range in either row). */
TARGET static void pack_pair_slow(uint16_t *d, const uint8_t *b0, const uint8_t *b1,
                                  const uint8_t *s0, const uint8_t *s1, int nb, int bias) {
  uint16_t slow[2][MXL_MXFP4_BLOCK] __attribute__((aligned(64)));
  for (int g = 0; g < nb; g++) {
    __m512i r0, r1 = _mm512_setzero_si512();
    decode_block_slow(slow[0], b0 + g * MXL_MXFP4_BLOCK_BYTES, s0[g], bias);
    r0 = _mm512_load_si512(slow[0]);
    if (b1) {
      decode_block_slow(slow[1], b1 + g * MXL_MXFP4_BLOCK_BYTES, s1[g], bias);
      r1 = _mm512_load_si512(slow[1]);
    }
    __m512i o0, o1;
    interleave_pair(r0, r1, &o0, &o1);
    _mm512_storeu_si512(d + (int64_t)g * 64, o0);
    _mm512_storeu_si512(d + (int64_t)g * 64 + 32, o1);
  }
}

TARGET static void a5_pack_vnni_mxfp4(uint16_t *dst, int64_t ld_dst, const uint8_t *blocks,
                                      const uint8_t *scales, int64_t row_blocks, int rows, int K,
                                      int bias) {
  __m512i table = _mm512_load_si512(e2m1_bf16);
  int nb = K / MXL_MXFP4_BLOCK;
  int64_t row_bytes = row_blocks * MXL_MXFP4_BLOCK_BYTES;
  for (int pp = 0; pp < (rows + 1) / 2; pp++) {
    const uint8_t *b0 = blocks + (int64_t)(2 * pp) * row_bytes, *s0 = scales + (int64_t)(2 * pp) * row_blocks;
    const uint8_t *b1 = 2 * pp + 1 < rows ? b0 + row_bytes : NULL, *s1 = s0 + row_blocks;
    /* both ends of the pair 32 pairs below: a backward strip reads 1 or 2
     * lines of each of its rows (1440 bytes apart at K = 2880), which the
     * hardware prefetcher leaves to memory latency (Zen 4, 1 thread, the
     * strips of a 5760 × 2880 weight: 3 to 23 ns per 32 weights without,
     * 2.4 to 4 with, depending on the machine's other traffic) */
    for (int h = 0; h < 2; h++) {
      uintptr_t ahead = (uintptr_t)b0 + (uintptr_t)((64 + h) * row_bytes); /* may pass the end */
      _mm_prefetch((const char *)ahead, _MM_HINT_T0);
      _mm_prefetch((const char *)(ahead + (uintptr_t)nb * MXL_MXFP4_BLOCK_BYTES - 1), _MM_HINT_T0);
    }
    uint16_t *d = dst + (int64_t)pp * ld_dst * 2;
    for (int g = 0; g < nb; g += 4) {
      int n = nb - g < 4 ? nb - g : 4;
      const uint8_t *g0 = b0 + g * MXL_MXFP4_BLOCK_BYTES, *g1 = b1 ? b1 + g * MXL_MXFP4_BLOCK_BYTES : NULL;
      if (few_scales_in_range(s0 + g, n, bias) && (!b1 || few_scales_in_range(s1 + g, n, bias)))
        pack_pair_step(d + (int64_t)g * 64, g0, g1, s0 + g, s1 + g, n, bias, table);
      else
        pack_pair_slow(d + (int64_t)g * 64, g0, g1, s0 + g, s1 + g, n, bias);
    }
    for (int64_t c = K; c < ld_dst; c += 16) _mm512_storeu_si512(d + c * 2, _mm512_setzero_si512());
  }
}

/* W itself (not transposed) as B = W [rows, K] in oneDNN's blocked layout
 * BA16a64b2a (the backward's dx = dy·W): (n, k) at (k/64)·rows·64 +
 * (n/32)·2048 + (n%32/2)·128 + (k%64)·2 + n%2, i.e. per 64 columns the
 * row pairs of a16 above packed as pack_vnni_mxfp4 packs them. rows % 32
 * == 0 and K % 64 == 0 (the caller's panels); blocks/scales may point into
 * a column window (row_blocks apart). */
TARGET static void a5_mxfp4_to_bf16_ba16a64b2a_rows(uint16_t *dst, const uint8_t *blocks,
                                                    const uint8_t *scales, int64_t row_blocks,
                                                    int rows, int K, int bias) {
  __m512i table = _mm512_load_si512(e2m1_bf16);
  int nb = K / MXL_MXFP4_BLOCK;
  int64_t row_bytes = row_blocks * MXL_MXFP4_BLOCK_BYTES;
  for (int pp = 0; pp < rows / 2; pp++) {
    const uint8_t *b0 = blocks + (int64_t)(2 * pp) * row_bytes, *b1 = b0 + row_bytes;
    const uint8_t *s0 = scales + (int64_t)(2 * pp) * row_blocks, *s1 = s0 + row_blocks;
    for (int h = 0; h < 2; h++) { /* as a5_pack_vnni_mxfp4: both ends, 32 pairs below */
      uintptr_t ahead = (uintptr_t)b0 + (uintptr_t)((64 + h) * row_bytes); /* may pass the end */
      _mm_prefetch((const char *)ahead, _MM_HINT_T0);
      _mm_prefetch((const char *)(ahead + (uintptr_t)nb * MXL_MXFP4_BLOCK_BYTES - 1), _MM_HINT_T0);
    }
    uint16_t *d = dst + (int64_t)(pp / 16) * 2048 + (pp % 16) * 128;
    for (int g = 0; g < nb; g += 2) {
      uint16_t *dg = d + (int64_t)(g / 2) * rows * 64;
      const uint8_t *g0 = b0 + g * MXL_MXFP4_BLOCK_BYTES, *g1 = b1 + g * MXL_MXFP4_BLOCK_BYTES;
      if (few_scales_in_range(s0 + g, 2, bias) && few_scales_in_range(s1 + g, 2, bias))
        pack_pair_step(dg, g0, g1, s0 + g, s1 + g, 2, bias, table);
      else
        pack_pair_slow(dg, g0, g1, s0 + g, s1 + g, 2, bias);
    }
  }
}

/* ------------------------------------------------------------------ C = A·Bᵀ (both K-contiguous)
 *
 * Shared by the bf16 and fp32 (gemm_f32_nt) dot-product kernels: a zmm
 * accumulator per (A row, B row) pair holds 16 partial sums over k, reduced
 * into floats at the end, 8 B rows at once (reduce8) or 4 (reduce4). */

enum { NT_NR = 8 };

/* Sums each of a[0..7] into one float: result lane i = Σ a[i]. */
INLINE __m256 reduce8(const __m512 a[8]) {
  __m512 t01 = _mm512_add_ps(_mm512_unpacklo_ps(a[0], a[1]), _mm512_unpackhi_ps(a[0], a[1]));
  __m512 t23 = _mm512_add_ps(_mm512_unpacklo_ps(a[2], a[3]), _mm512_unpackhi_ps(a[2], a[3]));
  __m512 t45 = _mm512_add_ps(_mm512_unpacklo_ps(a[4], a[5]), _mm512_unpackhi_ps(a[4], a[5]));
  __m512 t67 = _mm512_add_ps(_mm512_unpacklo_ps(a[6], a[7]), _mm512_unpackhi_ps(a[6], a[7]));
  /* t01 lane q: [a0 even, a1 even, a0 odd, a1 odd] partial sums */
  __m512 u0 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t01), _mm512_castps_pd(t23)));
  __m512 u1 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t01), _mm512_castps_pd(t23)));
  __m512 v0 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t45), _mm512_castps_pd(t67)));
  __m512 v1 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t45), _mm512_castps_pd(t67)));
  __m512 s0123 = _mm512_add_ps(u0, u1); /* lane q: [a0, a1, a2, a3] partial sums */
  __m512 s4567 = _mm512_add_ps(v0, v1);
  __m512 w = _mm512_add_ps(_mm512_shuffle_f32x4(s0123, s4567, _MM_SHUFFLE(1, 0, 1, 0)),
                           _mm512_shuffle_f32x4(s0123, s4567, _MM_SHUFFLE(3, 2, 3, 2)));
  /* w lanes: [s0123 q0+q2, s0123 q1+q3, s4567 q0+q2, s4567 q1+q3] */
  w = _mm512_shuffle_f32x4(w, w, _MM_SHUFFLE(3, 1, 2, 0));
  return _mm256_add_ps(_mm512_castps512_ps256(w), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(w), 1)));
}

/* Few rows of A against rows of B: B tiles of 4 rows outer (weights: 4·K·2
 * contiguous bytes that stay in L1), chunks of up to 4 rows of A inner,
 * one zmm of partial sums per (A row, B row), reduced at the end. The
 * first chunk streams the B tile from memory: each step prefetches the 4
 * lines BT_PREFETCH bytes ahead of it in the tile's sequential order, within
 * B, into L2 (on Zen 4 from the page cache, 1 row of A: 21 GB/s against 18.6
 * with prefetcht0 16 KB ahead; rows stream better one at a time, see
 * gemv_bf16, but a tile of 4 B rows lets each A vector serve 4 products).
 * A few long streams run at the read bandwidth of a core (8 row streams
 * with per-row prefetch reached about 80 % of it); with 4 rows of A each
 * B vector feeds 4 dot products, so 16 rows cost 4 passes over L1, not
 * over memory. */

enum { BT_NR = 4, BT_MR = 4, BT_PREFETCH = 32768 };

/* Sums each of a[0..3] into one float: result lane i = Σ a[i]. */
INLINE __m128 reduce4(const __m512 a[4]) {
  __m512 t01 = _mm512_add_ps(_mm512_unpacklo_ps(a[0], a[1]), _mm512_unpackhi_ps(a[0], a[1]));
  __m512 t23 = _mm512_add_ps(_mm512_unpacklo_ps(a[2], a[3]), _mm512_unpackhi_ps(a[2], a[3]));
  /* t01 lane q: [a0 even, a1 even, a0 odd, a1 odd] partial sums */
  __m512 u = _mm512_add_ps(
      _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t01), _mm512_castps_pd(t23))),
      _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t01), _mm512_castps_pd(t23))));
  /* u lane q: [a0, a1, a2, a3] partial sums */
  __m256 h = _mm256_add_ps(_mm512_castps512_ps256(u),
                           _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(u), 1)));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

INLINE void bt_tile(const int MR, const int NR, const int EXACT, float *C, int64_t ldc,
                    const uint16_t *A, const uint16_t *A_lo, int64_t lda, const uint16_t *B,
                    int64_t ldb, int K, int accumulate, const char *pf, const char *pf_end) {
  __m512 acc[BT_MR][BT_NR];
  UNROLL
  for (int m = 0; m < MR; m++)
    UNROLL
    for (int n = 0; n < NR; n++) acc[m][n] = _mm512_setzero_ps();
  for (int k = 0; k < K; k += 32) {
    __mmask32 mk = K - k >= 32 ? ~(__mmask32)0 : (((__mmask32)1 << (K - k)) - 1);
    __m512bh w[BT_NR];
    UNROLL
    for (int n = 0; n < NR; n++) {
      if (pf) {
        if (pf < pf_end) _mm_prefetch(pf, _MM_HINT_T1);
        pf += 64;
      }
      w[n] = (__m512bh)_mm512_maskz_loadu_epi16(mk, B + n * ldb + k);
    }
    UNROLL
    for (int m = 0; m < MR; m++) {
      __m512bh a = (__m512bh)_mm512_maskz_loadu_epi16(mk, A + m * lda + k), al = a;
      if (EXACT) al = (__m512bh)_mm512_maskz_loadu_epi16(mk, A_lo + m * lda + k);
      UNROLL
      for (int n = 0; n < NR; n++) {
        acc[m][n] = _mm512_dpbf16_ps(acc[m][n], a, w[n]);
        if (EXACT) acc[m][n] = _mm512_dpbf16_ps(acc[m][n], al, w[n]);
      }
    }
  }
  UNROLL
  for (int m = 0; m < MR; m++) {
    float *c = C + m * ldc;
    if (NR == 4) {
      __m128 sums = reduce4(acc[m]);
      if (accumulate) sums = _mm_add_ps(sums, _mm_loadu_ps(c));
      _mm_storeu_ps(c, sums);
    } else {
      UNROLL
      for (int n = 0; n < NR; n++) {
        float v = _mm512_reduce_add_ps(acc[m][n]);
        c[n] = accumulate ? c[n] + v : v;
      }
    }
  }
}

typedef void (*bt_tile_fn)(float *, int64_t, const uint16_t *, const uint16_t *, int64_t,
                           const uint16_t *, int64_t, int, int, const char *, const char *);

#define BT_TILE_FN(MR, NR, EX)                                                                    \
  TARGET static void bt_tile_##MR##_##NR##_##EX(float *C, int64_t ldc, const uint16_t *A,         \
                                                const uint16_t *A_lo, int64_t lda,                \
                                                const uint16_t *B, int64_t ldb, int K, int acc,   \
                                                const char *pf, const char *pf_end) {             \
    bt_tile(MR, NR, EX, C, ldc, A, A_lo, lda, B, ldb, K, acc, pf, pf_end);                        \
  }
BT_TILE_FN(1, 4, 0)
BT_TILE_FN(2, 4, 0)
BT_TILE_FN(3, 4, 0)
BT_TILE_FN(4, 4, 0)
BT_TILE_FN(1, 1, 0)
BT_TILE_FN(2, 1, 0)
BT_TILE_FN(3, 1, 0)
BT_TILE_FN(4, 1, 0)
BT_TILE_FN(1, 4, 1)
BT_TILE_FN(2, 4, 1)
BT_TILE_FN(3, 4, 1)
BT_TILE_FN(4, 4, 1)
BT_TILE_FN(1, 1, 1)
BT_TILE_FN(2, 1, 1)
BT_TILE_FN(3, 1, 1)
BT_TILE_FN(4, 1, 1)

TARGET static void a5_gemm_bf16_nt(float *C, int64_t ldc, const uint16_t *A, const uint16_t *A_lo,
                                   int64_t lda, const uint16_t *B, int64_t ldb, int M, int N, int K,
                                   int accumulate) {
  /* [exact][NR == 4][MR] */
  static const bt_tile_fn tiles[2][2][5] = {
      {{NULL, bt_tile_1_1_0, bt_tile_2_1_0, bt_tile_3_1_0, bt_tile_4_1_0},
       {NULL, bt_tile_1_4_0, bt_tile_2_4_0, bt_tile_3_4_0, bt_tile_4_4_0}},
      {{NULL, bt_tile_1_1_1, bt_tile_2_1_1, bt_tile_3_1_1, bt_tile_4_1_1},
       {NULL, bt_tile_1_4_1, bt_tile_2_4_1, bt_tile_3_4_1, bt_tile_4_4_1}}};
  const char *pf_end = (const char *)(B + (int64_t)(N - 1) * ldb + K);
  int ex = A_lo != NULL;
  for (int j = 0; j < N;) {
    int nr = N - j >= BT_NR ? BT_NR : 1;
    const uint16_t *b = B + (int64_t)j * ldb;
    for (int i = 0; i < M; i += BT_MR) {
      int mr = M - i < BT_MR ? M - i : BT_MR;
      const char *pf = i == 0 ? (const char *)b + BT_PREFETCH : NULL;
      tiles[ex][nr == BT_NR][mr](C + (int64_t)i * ldc + j, ldc, A + (int64_t)i * lda,
                                 ex ? A_lo + (int64_t)i * lda : NULL, lda, b, ldb, K, accumulate,
                                 pf, pf_end);
    }
    j += nr;
  }
}

/* One activation row (decode): the weight rows are read one after the other,
 * so that the loads follow memory order, and each 256 bytes read prefetch
 * the 256 bytes GV_PREFETCH ahead into L2 (prefetcht1). The hardware
 * prefetchers stop at 4 KB page boundaries, and a mapped checkpoint lives on
 * 4 KB pages; the software prefetch crosses them. Measured on Zen 4 on the
 * page cache (1 thread, CPU time): 23.6 GB/s against 18.8 for the 4-row
 * tiles of gemm_bf16_nt with their L1 prefetch 16 KB ahead, and 22.7 for a
 * plain sum of the same pages; 2 and 8 KB ahead, or prefetcht0, were slower.
 *
 * The sums are gemm_bf16_nt's for M = 1, bit for bit: one accumulator per
 * row over k in steps of 32, rows reduced 4 at a time by reduce4 (the last
 * N % 4 alone), so a token decoded alone gets the logits it gets in a batch
 * of few rows. One dependent vdpbf16ps per 64 bytes is still faster than
 * memory. */
enum { GV_PREFETCH = 4096 };

INLINE __m512 gv_row(const int EXACT, const uint16_t *x, const uint16_t *x_lo, const uint16_t *w,
                     int K, const char *pf_end) {
  __m512 acc = _mm512_setzero_ps();
  int k = 0;
  for (; k + 128 <= K; k += 128) {
    const char *pf = (const char *)(w + k) + GV_PREFETCH;
    if (pf + 192 < pf_end) {
      _mm_prefetch(pf, _MM_HINT_T1);
      _mm_prefetch(pf + 64, _MM_HINT_T1);
      _mm_prefetch(pf + 128, _MM_HINT_T1);
      _mm_prefetch(pf + 192, _MM_HINT_T1);
    }
    UNROLL
    for (int v = 0; v < 4; v++) {
      __m512bh wv = (__m512bh)_mm512_loadu_si512(w + k + 32 * v);
      acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512(x + k + 32 * v), wv);
      if (EXACT) acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512(x_lo + k + 32 * v), wv);
    }
  }
  for (; k < K; k += 32) {
    __mmask32 m = K - k >= 32 ? ~(__mmask32)0 : (((__mmask32)1 << (K - k)) - 1);
    __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(m, w + k);
    acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_maskz_loadu_epi16(m, x + k), wv);
    if (EXACT) acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_maskz_loadu_epi16(m, x_lo + k), wv);
  }
  return acc;
}

INLINE void gv_rows(const int EXACT, float *y, const uint16_t *x, const uint16_t *x_lo,
                    const uint16_t *W, int64_t ldw, int N, int K) {
  const char *pf_end = (const char *)(W + (int64_t)(N - 1) * ldw + K);
  int j = 0;
  for (; j + 4 <= N; j += 4) {
    __m512 acc[4];
    UNROLL
    for (int r = 0; r < 4; r++)
      acc[r] = gv_row(EXACT, x, x_lo, W + (int64_t)(j + r) * ldw, K, pf_end);
    _mm_storeu_ps(y + j, reduce4(acc));
  }
  for (; j < N; j++)
    y[j] = _mm512_reduce_add_ps(gv_row(EXACT, x, x_lo, W + (int64_t)j * ldw, K, pf_end));
}

TARGET static void a5_gemv_bf16(float *y, const uint16_t *x, const uint16_t *x_lo,
                                const uint16_t *W, int64_t ldw, int N, int K) {
  if (x_lo) gv_rows(1, y, x, x_lo, W, ldw, N, K);
  else gv_rows(0, y, x, NULL, W, ldw, N, K);
}

/* ------------------------------------------------------------------ C = A·B (B packed in pairs)
 *
 * Register tile: MR rows × 64 columns (4 zmm of 16 fp32 each). Per pair of
 * reduction indices p, p+1: 4 loads of packed B, and per row one broadcast
 * of the (A[i,p], A[i,p+1]) pair and 4 vdpbf16ps. No final reduction. */

enum { VN_COLS = 64 };

/* The bf16 pair (A[p], A[p+1]) broadcast; p+1 == P reads only A[p]. */
INLINE __m512bh pair_bcast(const uint16_t *a, int p, int P) {
  uint32_t v;
  if (p + 1 < P) memcpy(&v, a + p, sizeof v);
  else v = a[p];
  return (__m512bh)_mm512_set1_epi32((int)v);
}

INLINE void vn_tile(const int MR, const int EXACT, float *C, int64_t ldc, const uint16_t *A,
                    const uint16_t *A_lo, int64_t lda, const uint16_t *Bp, int64_t ld_bp, int ncols,
                    int P, int accumulate) {
  __m512 acc[6][4];
  UNROLL
  for (int r = 0; r < MR; r++)
    UNROLL
    for (int v = 0; v < 4; v++) acc[r][v] = _mm512_setzero_ps();
  int nv = (ncols + 15) / 16; /* live column vectors */
  for (int p = 0; p < P; p += 2) {
    const uint16_t *b = Bp + (int64_t)(p / 2) * ld_bp * 2;
    __m512bh bv[4];
    UNROLL
    for (int v = 0; v < 4; v++)
      bv[v] = (__m512bh)(v < nv ? _mm512_loadu_si512(b + v * 32) : _mm512_setzero_si512());
    UNROLL
    for (int r = 0; r < MR; r++) {
      __m512bh a = pair_bcast(A + r * lda, p, P);
      UNROLL
      for (int v = 0; v < 4; v++) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], a, bv[v]);
      if (EXACT) {
        __m512bh al = pair_bcast(A_lo + r * lda, p, P);
        UNROLL
        for (int v = 0; v < 4; v++) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], al, bv[v]);
      }
    }
  }
  UNROLL
  for (int r = 0; r < MR; r++)
    UNROLL
    for (int v = 0; v < nv; v++) {
      int left = ncols - v * 16;
      __mmask16 m = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);
      float *c = C + r * ldc + v * 16;
      __m512 x = acc[r][v];
      if (accumulate) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, c));
      _mm512_mask_storeu_ps(c, m, x);
    }
}

#define VN_TILE_FN(MR, EX)                                                                        \
  TARGET static void vn_tile_##MR##_##EX(float *C, int64_t ldc, const uint16_t *A,               \
                                         const uint16_t *A_lo, int64_t lda, const uint16_t *Bp,  \
                                         int64_t ld_bp, int ncols, int P, int accumulate) {       \
    vn_tile(MR, EX, C, ldc, A, A_lo, lda, Bp, ld_bp, ncols, P, accumulate);                       \
  }
VN_TILE_FN(1, 0)
VN_TILE_FN(2, 0)
VN_TILE_FN(3, 0)
VN_TILE_FN(4, 0)
VN_TILE_FN(5, 0)
VN_TILE_FN(6, 0)
VN_TILE_FN(1, 1)
VN_TILE_FN(2, 1)
VN_TILE_FN(3, 1)

typedef void (*vn_tile_fn)(float *, int64_t, const uint16_t *, const uint16_t *, int64_t,
                           const uint16_t *, int64_t, int, int, int);

TARGET static void a5_gemm_bf16_vnni(float *C, int64_t ldc, const uint16_t *A,
                                     const uint16_t *A_lo, int64_t lda, const uint16_t *Bp,
                                     int64_t ld_bp, int M, int N, int P, int accumulate) {
  static const vn_tile_fn fast[7] = {NULL,        vn_tile_1_0, vn_tile_2_0, vn_tile_3_0,
                                     vn_tile_4_0, vn_tile_5_0, vn_tile_6_0};
  static const vn_tile_fn exact[4] = {NULL, vn_tile_1_1, vn_tile_2_1, vn_tile_3_1};
  int mr_max = A_lo ? 3 : 6;
  /* Loop order by what fits in L2: a small B (all its column tiles) is
   * reused by every row tile (rows outer); a large B is taken one column
   * tile at a time, reused by every row tile while A streams from L2. */
  int j_step = (int64_t)P * N * 2 <= 512 * 1024 ? N : VN_COLS;
  for (int j0 = 0; j0 < N; j0 += j_step) {
    int j1 = N - j0 < j_step ? N : j0 + j_step;
    for (int i = 0; i < M;) {
      int mr = M - i >= mr_max ? mr_max : M - i;
      vn_tile_fn tile = A_lo ? exact[mr] : fast[mr];
      for (int j = j0; j < j1; j += VN_COLS) {
        int nc = j1 - j < VN_COLS ? j1 - j : VN_COLS;
        tile(C + (int64_t)i * ldc + j, ldc, A + (int64_t)i * lda,
             A_lo ? A_lo + (int64_t)i * lda : NULL, lda, Bp + (int64_t)j * 2, ld_bp, nc, P,
             accumulate);
      }
      i += mr;
    }
  }
}

/* ------------------------------------------------------------------ MXFP4 rows × few activation rows
 *
 * Decode (one activation row) and few-row products (a handful of tokens per
 * expert): the packed weights stream from memory once, so decoding must
 * cost less than reading a block, and each decoded block serves every
 * activation row.
 *
 * A group is 4 blocks of a row (64 bytes, 128 weights) loaded as one zmm of
 * 32 words. vpermw reads only bits 0..4 of each index word, so with the
 * 16 E2M1 values (unscaled, exact in bf16) stored twice in its 32-entry
 * table, the words themselves and their shifts by 4, 8 and 12 are the
 * indices of the group's four nibble planes: word j of plane q is element
 * 4·(j % 8) + q of block j / 8. The activations are permuted once per call
 * into the same order (x_q_order); a dot product does not care about the
 * order of its terms. Four vdpbf16ps give 16 lanes of partial sums, lanes
 * 4b..4b+3 belonging to block b, and one FMA applies the block scales:
 * 2^(s - bias) built in the exponent field of each lane from the four scale
 * bytes (a rotate per lane and a mask). The products are exact and summed
 * in fp32, as with pre-scaled weights; 4 permutes per 128 weights where a
 * scaled table per block pair needed 8 shuffles.
 *
 * Rows stream with a software prefetch (prefetcht0) MX_PREFETCH bytes ahead
 * of the tile of weight rows in flight (the tile's rows are contiguous),
 * within the caller's rows: about one tile of 4 rows of K = 2880 ahead.
 * Measured on Zen 4 on the page cache's 4 KB pages (1 thread, CPU time):
 * 22 GB/s, as fast as a plain sum of the same pages, against 16.3 GB/s with
 * 16 KB ahead (which left lines to be evicted from L1 before use); 3 and
 * 8 KB ahead, or prefetcht1, were slower. Rows whose scales leave [-125, 125] (never in real
 * checkpoints; also the NaN code) take the portable decode. */

enum { MX_MAX_K = 8192, MX_PREFETCH = 6144, MX_TILE_ROWS = 4, MX_MR = 4 };

/* x [K] (natural order) -> dst [ceil(K/128)·128] in group order: per group,
 * plane q word j = x[128·g + 32·(j/8) + 4·(j%8) + q]; zeros past K. */
TARGET static void x_q_order(uint16_t *dst, const uint16_t *x, int K) {
  /* idx[q] picks, from two 32-word blocks (second one from word 32), the 8
   * elements of plane q of each, into words 0..7 and 8..15 */
  __m512i idx[4];
  {
    uint16_t t[32];
    for (int q = 0; q < 4; q++) {
      for (int j = 0; j < 32; j++) t[j] = (uint16_t)((j / 8 % 2) * 32 + 4 * (j % 8) + q);
      idx[q] = _mm512_loadu_si512(t);
    }
  }
  int ng = (K + 127) / 128;
  for (int g = 0; g < ng; g++) {
    __m512i in[4];
    int left = K - g * 128;
    for (int b = 0; b < 4; b++) {
      int n = left - 32 * b;
      __mmask32 m = n >= 32 ? ~(__mmask32)0 : n <= 0 ? 0 : (((__mmask32)1 << n) - 1);
      in[b] = _mm512_maskz_loadu_epi16(m, x + g * 128 + 32 * b);
    }
    UNROLL
    for (int q = 0; q < 4; q++) {
      __m512i lo = _mm512_permutex2var_epi16(in[0], idx[q], in[1]); /* blocks 0, 1 */
      __m512i hi = _mm512_permutex2var_epi16(in[2], idx[q], in[3]); /* blocks 2, 3 */
      _mm512_storeu_si512(dst + g * 128 + q * 32,
                          _mm512_inserti64x4(lo, _mm512_castsi512_si256(hi), 1));
    }
  }
}

/* Constants of the group decode. */
typedef struct mx_consts {
  __m512i table;             /* E2M1 codes 0..15 as bf16, twice */
  mxl_a5_scale_consts scale; /* the scale bytes to their lanes */
} mx_consts;

INLINE mx_consts mx_consts_of(int bias) {
  mx_consts c;
  c.table = _mm512_load_si512(e2m1_bf16);
  c.scale = mxl_a5_scale_consts_of(bias);
  return c;
}

/* Decodes one group: W[q] = nibble plane q as bf16 E2M1 values, *S = the
 * four block scales over their lanes. `tail` blocks (1..3) when the row
 * ends inside the group, else 0. */
INLINE void mx_decode(const uint8_t *blocks, const uint8_t *scales, int tail, const mx_consts *c,
                      __m512bh W[4], __m512 *S) {
  uint32_t sc;
  __m512i w = mxl_a5_load_group(blocks, scales, tail, &sc);
  *S = mxl_a5_scale_lanes(sc, &c->scale);
  if (tail) *S = _mm512_maskz_mov_ps((__mmask16)((1u << (4 * tail)) - 1), *S);
  W[0] = (__m512bh)_mm512_permutexvar_epi16(w, c->table);
  W[1] = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(w, 4), c->table);
  W[2] = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(w, 8), c->table);
  W[3] = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(w, 12), c->table);
}

/* Σ over the group of x·w, block by block in lanes: 4 dependent vdpbf16ps
 * (independent across rows and groups). */
INLINE __m512 mx_dot(const __m512bh X[4], const __m512bh W[4]) {
  __m512 t = _mm512_dpbf16_ps(_mm512_setzero_ps(), X[0], W[0]);
  t = _mm512_dpbf16_ps(t, X[1], W[1]);
  t = _mm512_dpbf16_ps(t, X[2], W[2]);
  return _mm512_dpbf16_ps(t, X[3], W[3]);
}

/* One group g of MR activation rows × NR weight rows into acc (tail: as
 * mx_decode). */
INLINE void mx_group(const int MR, const int NR, const int EXACT, __m512 acc[MX_MR][4], int g,
                     int tail,
                     const uint16_t *xq, const uint16_t *xq_lo, int64_t ldq, const uint8_t *blocks,
                     const uint8_t *scales, int64_t row_blocks, const mx_consts *c,
                     const uint8_t *pf_end) {
  /* Activation vectors: one row's 4 held for the NR weight rows, several
   * rows' read where they are used (from L1) */
  const int HOLD = MR == 1 && NR > 1;
  __m512bh X[MX_MR][4], L[MX_MR][4];
  if (HOLD)
    UNROLL
    for (int m = 0; m < MR; m++)
      UNROLL
      for (int q = 0; q < 4; q++) {
        X[m][q] = (__m512bh)_mm512_loadu_si512(xq + m * ldq + g * 128 + q * 32);
        if (EXACT) L[m][q] = (__m512bh)_mm512_loadu_si512(xq_lo + m * ldq + g * 128 + q * 32);
      }
  UNROLL
  for (int n = 0; n < NR; n++) {
    const uint8_t *ahead = blocks + MX_PREFETCH + ((int64_t)g * NR + n) * 64;
    if (ahead < pf_end) _mm_prefetch((const char *)ahead, _MM_HINT_T0);
    __m512bh W[4];
    __m512 S;
    mx_decode(blocks + (n * row_blocks + g * 4) * MXL_MXFP4_BLOCK_BYTES,
              scales + n * row_blocks + g * 4, tail, c, W, &S);
    UNROLL
    for (int m = 0; m < MR; m++) {
      if (!HOLD)
        UNROLL
        for (int q = 0; q < 4; q++) {
          X[m][q] = (__m512bh)_mm512_loadu_si512(xq + m * ldq + g * 128 + q * 32);
          if (EXACT) L[m][q] = (__m512bh)_mm512_loadu_si512(xq_lo + m * ldq + g * 128 + q * 32);
        }
      __m512 t = mx_dot(X[m], W);
      if (EXACT) t = _mm512_add_ps(t, mx_dot(L[m], W));
      acc[m][n] = _mm512_fmadd_ps(t, S, acc[m][n]);
    }
  }
}

/* C[m, n] = Σ_k x_m[k]·W_n[k] for MR activation rows (group order, row
 * stride ldq; EXACT: plus the residual rows xq_lo) and NR weight rows of
 * nb blocks (row_blocks apart). Full groups, then the tail group. */
INLINE void mx_tile(const int MR, const int NR, const int EXACT, float *C, int64_t ldc,
                    const uint16_t *xq, const uint16_t *xq_lo, int64_t ldq, const uint8_t *blocks,
                    const uint8_t *scales, int64_t row_blocks, int nb, int bias,
                    const uint8_t *pf_end) {
  mx_consts c = mx_consts_of(bias);
  __m512 acc[MX_MR][4];
  UNROLL
  for (int m = 0; m < MR; m++)
    UNROLL
    for (int n = 0; n < NR; n++) acc[m][n] = _mm512_setzero_ps();
  int full = nb / 4;
  for (int g = 0; g < full; g++)
    mx_group(MR, NR, EXACT, acc, g, 0, xq, xq_lo, ldq, blocks, scales, row_blocks, &c, pf_end);
  if (nb % 4)
    mx_group(MR, NR, EXACT, acc, full, nb % 4, xq, xq_lo, ldq, blocks, scales, row_blocks, &c,
             pf_end);
  UNROLL
  for (int m = 0; m < MR; m++)
    UNROLL
    for (int n = 0; n < NR; n++) C[m * ldc + n] = _mm512_reduce_add_ps(acc[m][n]);
}

typedef void (*mx_tile_fn)(float *, int64_t, const uint16_t *, const uint16_t *, int64_t,
                           const uint8_t *, const uint8_t *, int64_t, int, int, const uint8_t *);

#define MX_TILE_FN(MR, NR, EX)                                                                    \
  TARGET static void mx_tile_##MR##_##NR##_##EX(float *C, int64_t ldc, const uint16_t *xq,       \
                                                const uint16_t *xq_lo, int64_t ldq,              \
                                                const uint8_t *blocks, const uint8_t *scales,    \
                                                int64_t row_blocks, int nb, int bias,            \
                                                const uint8_t *pf_end) {                         \
    mx_tile(MR, NR, EX, C, ldc, xq, xq_lo, ldq, blocks, scales, row_blocks, nb, bias, pf_end);   \
  }
/* Weight rows per tile by activation rows, within 32 registers: MR·NR
 * accumulators, 4 (·2 exact) vectors per weight row decoded, and for one
 * activation row its 4 (·2) vectors held; tiles of several activation rows
 * read theirs from L1 where they are used. Zen 4, 1 thread, K = 2880,
 * weights in L2, GFLOP/s with the activation vectors held up front (tiles
 * 2×2, 3×2, 4×1) → read where used (2×4, 3×4, 4×2): 2 rows 124 → 131,
 * 3 rows 141 → 147, 4 rows 125 → 150, 8 rows 118 → 151 (8 rows per tile
 * were slower than 2 × 4). */
MX_TILE_FN(1, 4, 0)
MX_TILE_FN(2, 4, 0)
MX_TILE_FN(3, 4, 0)
MX_TILE_FN(4, 1, 0)
MX_TILE_FN(4, 2, 0)
MX_TILE_FN(1, 1, 0)
MX_TILE_FN(2, 1, 0)
MX_TILE_FN(3, 1, 0)
MX_TILE_FN(1, 4, 1)
MX_TILE_FN(2, 1, 1)
MX_TILE_FN(1, 1, 1)

/* Tile kernels by activation rows: [exact][MR] = {NR, wide kernel, one-row kernel}. */
typedef struct mx_tiles {
  int nr;
  mx_tile_fn wide, one;
} mx_tiles;
static const mx_tiles mx_tile_table[2][MX_MR + 1] = {
    {{0, NULL, NULL},
     {4, mx_tile_1_4_0, mx_tile_1_1_0},
     {4, mx_tile_2_4_0, mx_tile_2_1_0},
     {4, mx_tile_3_4_0, mx_tile_3_1_0},
     {2, mx_tile_4_2_0, mx_tile_4_1_0}},
    {{0, NULL, NULL},
     {4, mx_tile_1_4_1, mx_tile_1_1_1},
     {1, mx_tile_2_1_1, mx_tile_2_1_1}},
};

/* Blocks [g0, g1) of one row by the portable decode, bf16-rounded weights
 * (rows with out-of-range scales). */
float mxl_a5_mxfp4_dot_slow(const uint16_t *x, const uint16_t *x_lo, const uint8_t *blocks,
                            const uint8_t *scales, int g0, int g1, int bias) {
  float w[MXL_MXFP4_BLOCK], acc = 0;
  for (int g = g0; g < g1; g++) {
    mxl_mxfp4_decode_block(blocks + (int64_t)g * MXL_MXFP4_BLOCK_BYTES, scales[g], bias, w);
    for (int t = 0; t < MXL_MXFP4_BLOCK; t++) {
      float wt = mxl_bf16_to_f32(mxl_f32_to_bf16(w[t]));
      acc += mxl_bf16_to_f32(x[g * 32 + t]) * wt;
      if (x_lo) acc += mxl_bf16_to_f32(x_lo[g * 32 + t]) * wt;
    }
  }
  return acc;
}

/* C = A·Wᵀ for M activation rows already in group order (xq, xq_lo
 * [M, ldq]) or, for the portable path, natural order (A, A_lo [M, lda]). */
TARGET static void mx_rows(float *C, int64_t ldc, const uint16_t *A, const uint16_t *A_lo,
                           int64_t lda, const uint16_t *xq, const uint16_t *xq_lo, int64_t ldq,
                           const uint8_t *blocks, const uint8_t *scales, int64_t row_blocks,
                           int M, int N, int K, int bias) {
  int nb = K / MXL_MXFP4_BLOCK, exact = A_lo != NULL, mr_max = exact ? 2 : MX_MR;
  const uint8_t *pf_end = blocks + (int64_t)N * row_blocks * MXL_MXFP4_BLOCK_BYTES;
  for (int j0 = 0; j0 < N; j0 += MX_TILE_ROWS) {
    int rows = N - j0 < MX_TILE_ROWS ? N - j0 : MX_TILE_ROWS;
    const uint8_t *b = blocks + (int64_t)j0 * row_blocks * MXL_MXFP4_BLOCK_BYTES;
    const uint8_t *s = scales + (int64_t)j0 * row_blocks;
    int fast[MX_TILE_ROWS], all = xq != NULL;
    for (int r = 0; r < rows; r++) {
      fast[r] = xq && mxl_a5_scales_in_range(s + r * row_blocks, nb, bias);
      all &= fast[r];
    }
    for (int m0 = 0; m0 < M; m0 += mr_max) {
      int mr = M - m0 < mr_max ? M - m0 : mr_max;
      const mx_tiles *t = &mx_tile_table[exact][mr];
      const uint16_t *x = xq ? xq + m0 * ldq : NULL, *xl = xq_lo ? xq_lo + m0 * ldq : NULL;
      float *c = C + m0 * ldc + j0;
      int r = 0;
      if (all)
        for (; r + t->nr <= rows; r += t->nr)
          t->wide(c + r, ldc, x, xl, ldq, b + r * row_blocks * MXL_MXFP4_BLOCK_BYTES,
                  s + r * row_blocks, row_blocks, nb, bias, pf_end);
      for (; r < rows; r++) {
        const uint8_t *rb = b + r * row_blocks * MXL_MXFP4_BLOCK_BYTES, *rs = s + r * row_blocks;
        if (fast[r]) {
          t->one(c + r, ldc, x, xl, ldq, rb, rs, row_blocks, nb, bias, pf_end);
        } else {
          for (int m = m0; m < m0 + mr; m++)
            C[m * ldc + j0 + r] = mxl_a5_mxfp4_dot_slow(A + m * lda, A_lo ? A_lo + m * lda : NULL, rb,
                                                 rs, 0, nb, bias);
        }
      }
    }
  }
}

TARGET static void a5_gemv_mxfp4(float *y, const uint16_t *x, const uint16_t *x_lo,
                                 const uint8_t *blocks, const uint8_t *scales, int64_t row_blocks,
                                 int N, int K, int bias) {
  uint16_t xq[MX_MAX_K] __attribute__((aligned(64))), xq_lo[MX_MAX_K] __attribute__((aligned(64)));
  int ok = K <= MX_MAX_K;
  if (ok) {
    x_q_order(xq, x, K);
    if (x_lo) x_q_order(xq_lo, x_lo, K);
  }
  mx_rows(y, 1, x, x_lo, K, ok ? xq : NULL, ok && x_lo ? xq_lo : NULL, 0, blocks, scales,
          row_blocks, 1, N, K, bias);
}

TARGET static void a5_gemm_mxfp4_nt(float *C, int64_t ldc, const uint16_t *A,
                                    const uint16_t *A_lo, int64_t lda, const uint8_t *blocks,
                                    const uint8_t *scales, int64_t row_blocks, int M, int N, int K,
                                    int bias, uint16_t *work) {
  int64_t ldq = (K + 127) / 128 * 128;
  uint16_t *xq = NULL, *xq_lo = NULL;
  if (K <= MX_MAX_K) {
    xq = work;
    xq_lo = A_lo ? work + M * ldq : NULL;
    for (int m = 0; m < M; m++) {
      x_q_order(xq + m * ldq, A + m * lda, K);
      if (A_lo) x_q_order(xq_lo + m * ldq, A_lo + m * lda, K);
    }
  }
  mx_rows(C, ldc, A, A_lo, lda, xq, xq_lo, ldq, blocks, scales, row_blocks, M, N, K, bias);
}

/* ------------------------------------------------------------------ fp32 C = A·B
 * Tile: MR rows × NV zmm of columns; per k, NV loads of B and one
 * broadcast of A per row, as the packed bf16 kernel but with FMAs. Two
 * shapes: 6 rows × 64 columns for wide B, 12 rows × 16 columns for B of at
 * most 16 columns (LoRA's rank): 12 independent accumulators cover the FMA
 * latency where 6 × 1 would leave the FMA units half idle. NV is exact
 * (a narrower last column block takes the tile of its width, the last zmm
 * masked): a runtime count of live vectors left a compare and branch beside
 * every FMA of the loop, a third of the tile's time in attention. */

INLINE void f32_tile(const int MR, const int NV, float *C, int64_t ldc, const float *A,
                     int64_t lda, int64_t a_cs, const float *B, int64_t ldb, int ncols, int K,
                     float alpha, int accumulate) {
  __m512 acc[12][4];
  __mmask16 last = (__mmask16)(ncols % 16 ? (1u << (ncols % 16)) - 1 : 0xFFFF);
  UNROLL
  for (int r = 0; r < MR; r++)
    UNROLL
    for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();
  for (int p = 0; p < K; p++) {
    const float *b = B + (int64_t)p * ldb;
    __m512 bv[4];
    UNROLL
    for (int v = 0; v < NV; v++)
      bv[v] = v == NV - 1 ? _mm512_maskz_loadu_ps(last, b + v * 16) : _mm512_loadu_ps(b + v * 16);
    UNROLL
    for (int r = 0; r < MR; r++) {
      __m512 a = _mm512_set1_ps(A[r * lda + p * a_cs]);
      UNROLL
      for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(a, bv[v], acc[r][v]);
    }
  }
  __m512 va = _mm512_set1_ps(alpha);
  UNROLL
  for (int r = 0; r < MR; r++)
    UNROLL
    for (int v = 0; v < NV; v++) {
      __mmask16 m = v == NV - 1 ? last : 0xFFFF;
      float *c = C + r * ldc + v * 16;
      __m512 x = _mm512_mul_ps(va, acc[r][v]);
      if (accumulate) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, c));
      _mm512_mask_storeu_ps(c, m, x);
    }
}

typedef void (*f32_tile_fn)(float *, int64_t, const float *, int64_t, int64_t, const float *,
                            int64_t, int, int, float, int);

#define F32_TILE_FN(MR, NV)                                                                       \
  TARGET static void f32_tile_##MR##x##NV(float *C, int64_t ldc, const float *A, int64_t lda,    \
                                          int64_t a_cs, const float *B, int64_t ldb, int nc,      \
                                          int K, float alpha, int acc) {                          \
    f32_tile(MR, NV, C, ldc, A, lda, a_cs, B, ldb, nc, K, alpha, acc);                            \
  }
#define F32_TILE_ROWS(MR) F32_TILE_FN(MR, 1) F32_TILE_FN(MR, 2) F32_TILE_FN(MR, 3) F32_TILE_FN(MR, 4)
F32_TILE_ROWS(1)
F32_TILE_ROWS(2)
F32_TILE_ROWS(3)
F32_TILE_ROWS(4)
F32_TILE_ROWS(5)
F32_TILE_ROWS(6)
F32_TILE_FN(7, 1)
F32_TILE_FN(8, 1)
F32_TILE_FN(9, 1)
F32_TILE_FN(10, 1)
F32_TILE_FN(11, 1)
F32_TILE_FN(12, 1)

TARGET static void a5_gemm_f32_nn(float *C, int64_t ldc, const float *A, int64_t lda,
                                  int64_t a_cs, const float *B, int64_t ldb, int M, int N, int K,
                                  float alpha, int accumulate) {
#define F32_TILE_ROW(MR) {f32_tile_##MR##x1, f32_tile_##MR##x2, f32_tile_##MR##x3, f32_tile_##MR##x4}
  static const f32_tile_fn wide[7][4] = {{NULL},           F32_TILE_ROW(1), F32_TILE_ROW(2),
                                         F32_TILE_ROW(3), F32_TILE_ROW(4), F32_TILE_ROW(5),
                                         F32_TILE_ROW(6)};
#undef F32_TILE_ROW
  static const f32_tile_fn narrow[13] = {
      NULL,         f32_tile_1x1, f32_tile_2x1, f32_tile_3x1,  f32_tile_4x1,  f32_tile_5x1, f32_tile_6x1,
      f32_tile_7x1, f32_tile_8x1, f32_tile_9x1, f32_tile_10x1, f32_tile_11x1, f32_tile_12x1};
  int mr_max = N <= 16 ? 12 : 6, cols = N <= 16 ? 16 : 64;
  for (int i = 0; i < M;) {
    int mr = M - i >= mr_max ? mr_max : M - i;
    for (int j = 0; j < N; j += cols) {
      int nc = N - j < cols ? N - j : cols;
      f32_tile_fn tile = N <= 16 ? narrow[mr] : wide[mr][(nc + 15) / 16 - 1];
      tile(C + (int64_t)i * ldc + j, ldc, A + (int64_t)i * lda, lda, a_cs, B + j, ldb, nc, K,
           alpha, accumulate);
    }
    i += mr;
  }
}

/* ------------------------------------------------------------------ fp32 C = A·Bᵀ (both K-contiguous)
 * Tile: 3 rows of A × 8 rows of B, one zmm of 16 partial sums per pair,
 * reduced at the end (reduce8), as the bf16 nt kernel with FMAs: LoRA's
 * x·Aᵀ (a few rank rows, long K) without a transposed copy. Rows of B past
 * N repeat the last valid one and are not stored. */

INLINE void f32_nt_tile(const int MR, float *C, int64_t ldc, const float *A, int64_t lda,
                        const float *B, int64_t ldb, int nvalid, int K, float alpha,
                        int accumulate) {
  __m512 acc[3][NT_NR];
  const float *brow[NT_NR];
  UNROLL
  for (int c = 0; c < NT_NR; c++) brow[c] = B + (int64_t)(c < nvalid ? c : nvalid - 1) * ldb;
  UNROLL
  for (int r = 0; r < MR; r++)
    UNROLL
    for (int c = 0; c < NT_NR; c++) acc[r][c] = _mm512_setzero_ps();
  for (int k = 0; k < K; k += 16) {
    __mmask16 m = K - k >= 16 ? 0xFFFF : (__mmask16)((1u << (K - k)) - 1);
    __m512 a[3];
    UNROLL
    for (int r = 0; r < MR; r++) a[r] = _mm512_maskz_loadu_ps(m, A + r * lda + k);
    UNROLL
    for (int c = 0; c < NT_NR; c++) {
      __m512 b = _mm512_maskz_loadu_ps(m, brow[c] + k);
      UNROLL
      for (int r = 0; r < MR; r++) acc[r][c] = _mm512_fmadd_ps(a[r], b, acc[r][c]);
    }
  }
  __mmask8 store = (__mmask8)((1u << nvalid) - 1);
  __m256 va = _mm256_set1_ps(alpha);
  UNROLL
  for (int r = 0; r < MR; r++) {
    __m256 sums = _mm256_mul_ps(va, reduce8(acc[r]));
    float *c = C + r * ldc;
    if (accumulate) sums = _mm256_add_ps(sums, _mm256_maskz_loadu_ps(store, c));
    _mm256_mask_storeu_ps(c, store, sums);
  }
}

#define F32_NT_TILE_FN(MR)                                                                        \
  TARGET static void f32_nt_tile_##MR(float *C, int64_t ldc, const float *A, int64_t lda,        \
                                      const float *B, int64_t ldb, int nvalid, int K,            \
                                      float alpha, int acc) {                                     \
    f32_nt_tile(MR, C, ldc, A, lda, B, ldb, nvalid, K, alpha, acc);                               \
  }
F32_NT_TILE_FN(1)
F32_NT_TILE_FN(2)
F32_NT_TILE_FN(3)

TARGET static void a5_gemm_f32_nt(float *C, int64_t ldc, const float *A, int64_t lda,
                                  const float *B, int64_t ldb, int M, int N, int K, float alpha,
                                  int accumulate) {
  typedef void (*tile_fn)(float *, int64_t, const float *, int64_t, const float *, int64_t, int,
                          int, float, int);
  static const tile_fn tiles[4] = {NULL, f32_nt_tile_1, f32_nt_tile_2, f32_nt_tile_3};
  for (int i = 0; i < M;) {
    int mr = M - i >= 3 ? 3 : M - i;
    for (int j = 0; j < N; j += NT_NR)
      tiles[mr](C + (int64_t)i * ldc + j, ldc, A + (int64_t)i * lda, lda, B + (int64_t)j * ldb,
                ldb, N - j < NT_NR ? N - j : NT_NR, K, alpha, accumulate);
    i += mr;
  }
}

/* ------------------------------------------------------------------ fp32 transpose
 * 16 × 16 tiles through registers (transpose16x16), masked at the edges. */

TARGET static void a5_transpose_f32(float *dst, int64_t ld_dst, const float *src, int64_t ld_src,
                                    int rows, int cols) {
  for (int r0 = 0; r0 < rows; r0 += 16) {
    int nr = rows - r0 < 16 ? rows - r0 : 16;
    __mmask16 rmask = (__mmask16)(nr == 16 ? 0xFFFF : (1u << nr) - 1);
    for (int c0 = 0; c0 < cols; c0 += 16) {
      int nc = cols - c0 < 16 ? cols - c0 : 16;
      __mmask16 cmask = (__mmask16)(nc == 16 ? 0xFFFF : (1u << nc) - 1);
      __m512i t[16];
      UNROLL
      for (int r = 0; r < 16; r++)
        t[r] = r < nr ? _mm512_maskz_loadu_epi32(cmask, src + (int64_t)(r0 + r) * ld_src + c0)
                      : _mm512_setzero_si512();
      transpose16x16(t);
      UNROLL
      for (int c = 0; c < 16; c++)
        if (c < nc) _mm512_mask_storeu_epi32(dst + (int64_t)(c0 + c) * ld_dst + r0, rmask, t[c]);
    }
  }
}

/* ------------------------------------------------------------------ fp32 vector helpers */

TARGET static float a5_dot_f32(const float *a, const float *b, int n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
  }
  for (; i < n; i += 16) {
    __mmask16 m = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

TARGET static void a5_axpy_f32(float *y, float a, const float *x, int n) {
  __m512 va = _mm512_set1_ps(a);
  for (int i = 0; i < n; i += 16) {
    __mmask16 m = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    __m512 v = _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i));
    _mm512_mask_storeu_ps(y + i, m, v);
  }
}

TARGET static float a5_max_f32(const float *x, int n) {
  __m512 m = _mm512_set1_ps(-INFINITY);
  for (int i = 0; i < n; i += 16) {
    __mmask16 k = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    m = _mm512_mask_max_ps(m, k, m, _mm512_maskz_loadu_ps(k, x + i));
  }
  return _mm512_reduce_max_ps(m);
}

/* exp(x) for fp32 lanes: 2^n·p(r) with n = round(x·log2 e), r = x − n·ln 2
 * (two-part ln 2), p a degree-6 polynomial; about 1 ulp. Inputs are
 * clamped to [-104, 88.7] (exp underflows to 0 / overflows to inf there);
 * NaN stays NaN. */
INLINE __m512 exp512(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(88.7228394f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

TARGET static float a5_sum_exp_f32(const float *x, int n, float shift) {
  __m512 s = _mm512_setzero_ps(), sh = _mm512_set1_ps(shift);
  for (int i = 0; i < n; i += 16) {
    __mmask16 k = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), sh));
    s = _mm512_mask_add_ps(s, k, s, e);
  }
  return _mm512_reduce_add_ps(s);
}

TARGET static void a5_exp_f32(float *y, const float *x, int n, float shift, float mul) {
  __m512 sh = _mm512_set1_ps(shift), mu = _mm512_set1_ps(mul);
  for (int i = 0; i < n; i += 16) {
    __mmask16 k = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), sh));
    _mm512_mask_storeu_ps(y + i, k, _mm512_mul_ps(mu, e));
  }
}

/* Lanes of 16 floats from i: in range and kept. */
INLINE __mmask16 keep16(uint64_t keep, int i, int n) {
  __mmask16 range = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
  return (__mmask16)(keep >> i) & range;
}

TARGET static float a5_masked_max_f32(const float *x, uint64_t keep, int n) {
  __m512 m = _mm512_set1_ps(-INFINITY);
  for (int i = 0; i < n; i += 16) {
    __mmask16 k = keep16(keep, i, n);
    m = _mm512_mask_max_ps(m, k, m, _mm512_maskz_loadu_ps(k, x + i));
  }
  return _mm512_reduce_max_ps(m);
}

TARGET static float a5_masked_exp_f32(float *y, const float *x, uint64_t keep, int n, float shift) {
  __m512 s = _mm512_setzero_ps(), sh = _mm512_set1_ps(shift);
  for (int i = 0; i < n; i += 16) {
    __mmask16 k = keep16(keep, i, n), range = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    __m512 e = _mm512_maskz_mov_ps(k, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), sh)));
    _mm512_mask_storeu_ps(y + i, range, e);
    s = _mm512_add_ps(s, e);
  }
  return _mm512_reduce_add_ps(s);
}

/* One row of softmax_block_bf16: the row's 64 scores in four registers.
 * Masked lanes load as 0 and are dropped by the keep mask, as in
 * a5_masked_max_f32 / a5_masked_exp_f32 (whose operations these repeat). */
INLINE void softmax_row_bf16(uint16_t *ph, const float *s, uint64_t keep, int n, float *mx,
                             float *den, float *o, int d) {
  __m512 x[4], m = _mm512_set1_ps(-INFINITY);
  __mmask16 k[4];
  UNROLL
  for (int v = 0; v < 4; v++) {
    int i = 16 * v;
    k[v] = i >= n ? 0 : keep16(keep, i, n);
    x[v] = _mm512_maskz_loadu_ps(k[v], s + i);
    m = _mm512_mask_max_ps(m, k[v], m, x[v]);
  }
  float rm = _mm512_reduce_max_ps(m);
  if (rm > *mx) {
    float corr = expf(*mx - rm);
    *den *= corr;
    __m512 c = _mm512_set1_ps(corr);
    for (int i = 0; i < d; i += 16) {
      __mmask16 dm = d - i >= 16 ? 0xFFFF : (__mmask16)((1u << (d - i)) - 1);
      _mm512_mask_storeu_ps(o + i, dm, _mm512_mul_ps(c, _mm512_maskz_loadu_ps(dm, o + i)));
    }
    *mx = rm;
  }
  __m512 sum = _mm512_setzero_ps(), sh = _mm512_set1_ps(*mx), e[4];
  UNROLL
  for (int v = 0; v < 4; v++) {
    e[v] = _mm512_maskz_mov_ps(k[v], exp512(_mm512_sub_ps(x[v], sh)));
    if (16 * v < n) sum = _mm512_add_ps(sum, e[v]);
  }
  *den += _mm512_reduce_add_ps(sum);
  __m512i lo = (__m512i)_mm512_cvtne2ps_pbh(e[1], e[0]);
  __m512i hi = (__m512i)_mm512_cvtne2ps_pbh(e[3], e[2]);
  __mmask32 m_lo = n >= 32 ? ~(__mmask32)0 : (__mmask32)(((uint64_t)1 << n) - 1);
  __mmask32 m_hi = n <= 32 ? 0 : n >= 64 ? ~(__mmask32)0 : (__mmask32)(((uint64_t)1 << (n - 32)) - 1);
  _mm512_mask_storeu_epi16(ph, m_lo, lo);
  _mm512_mask_storeu_epi16(ph + 32, m_hi, hi);
}

TARGET static void a5_softmax_block_bf16(uint16_t *ph, int64_t ld_p, const float *s, int64_t ld_s,
                                         const uint64_t *keep, int group, int R, int n, float *mx,
                                         float *den, float *o, int64_t ld_o, int d) {
  for (int r = 0; r < R; r++)
    softmax_row_bf16(ph + r * ld_p, s + r * ld_s, keep[r / group], n, mx + r, den + r,
                     o + r * ld_o, d);
}

TARGET static void a5_scale_f32(float *y, float a, int n) {
  __m512 va = _mm512_set1_ps(a);
  for (int i = 0; i < n; i += 16) {
    __mmask16 m = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, y + i)));
  }
}

/* ------------------------------------------------------------------ decode attention
 * One key block of one KV head (cpu_internal.h attn_decode_block): the
 * scores 8 keys a step and Σ p·v 8 heads a pass on 8-lane vectors
 * (cpu_decode_attention.h), the softmax between them on 16-lane vectors of
 * two keys' scores (lanes 0-7 the first key's heads, 8-15 the second's). */

#include "kernels/cpu/cpu_decode_attention.h"

/* Lanes of score vector i (keys 2i, 2i + 1) whose key is kept. */
INLINE __mmask16 pair_keep(uint64_t keep, int i) {
  unsigned b = (unsigned)(keep >> (2 * i)) & 3u;
  return (__mmask16)((b & 1u ? 0x00FFu : 0u) | (b & 2u ? 0xFF00u : 0u));
}

/* Lanes 8-15 of x. */
INLINE __m256 upper_half(__m512 x) {
  return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1));
}

TARGET static void a5_attn_decode_block(float *o, float *mx, float *den, const float *q2,
                                        const float *k, const float *v, int64_t ld, int nkb,
                                        uint64_t keep, int group, int d, float *s,
                                        const float *pf_k, const float *pf_v, int64_t pf_bytes) {
  if (nkb < 64) keep &= ((uint64_t)1 << nkb) - 1;
  const int nv = (nkb + 1) / 2; /* score vectors */
  if (group > 4) decode_scores8(s, q2, k, ld, nkb, d, 8, 1, pf_k, pf_v, pf_bytes);
  else decode_scores8(s, q2, k, ld, nkb, d, 8, 0, pf_k, pf_v, pf_bytes);
  /* the block's max per head: lanes h and 8 + h */
  __m512 bm = _mm512_set1_ps(-INFINITY);
  for (int i = 0; i < nv; i++)
    bm = _mm512_mask_max_ps(bm, pair_keep(keep, i), bm, _mm512_load_ps(s + 16 * i));
  const __mmask8 heads = (__mmask8)((1u << group) - 1);
  __m256 old = _mm256_maskz_loadu_ps(heads, mx);
  __m256 m8 = _mm256_max_ps(old, _mm256_max_ps(_mm512_castps512_ps256(bm), upper_half(bm)));
  float corr[16] __attribute__((aligned(64)));
  _mm512_store_ps(corr, exp512(_mm512_castps256_ps512(_mm256_sub_ps(old, m8))));
  for (int h = 0; h < group; h++) {
    if (corr[h] == 1.0f) continue;
    den[h] *= corr[h];
    a5_scale_f32(o + h * d, corr[h], d);
  }
  _mm256_mask_storeu_ps(mx, heads, m8);
  /* p = exp(s − m), 0 for keys not kept; Σ p per head */
  const __m512 m16 = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(m8)));
  __m512 sum = _mm512_setzero_ps();
  for (int i = 0; i < nv; i++) {
    __m512 e = exp512(_mm512_sub_ps(_mm512_load_ps(s + 16 * i), m16));
    __m512 p = _mm512_maskz_mov_ps(pair_keep(keep, i), e);
    _mm512_store_ps(s + 16 * i, p);
    sum = _mm512_add_ps(sum, p);
  }
  __m256 sum8 = _mm256_add_ps(_mm512_castps512_ps256(sum), upper_half(sum));
  _mm256_mask_storeu_ps(den, heads, _mm256_add_ps(_mm256_maskz_loadu_ps(heads, den), sum8));
  if (group == 8) decode_pv8(o, s, v, ld, nkb, keep, 8, d, 8); /* constant: no head tests */
  else decode_pv8(o, s, v, ld, nkb, keep, group, d, 8);
}

TARGET static void a5_mul_sub_f32(float *y, const float *p, float c, int n) {
  __m512 vc = _mm512_set1_ps(c);
  for (int i = 0; i < n; i += 16) {
    __mmask16 m = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p + i), _mm512_sub_ps(_mm512_maskz_loadu_ps(m, y + i), vc));
    _mm512_mask_storeu_ps(y + i, m, v);
  }
}

/* ------------------------------------------------------------------ SwiGLU rows
 * 16 units per step: the interleaved (gate, up) pairs are split with two
 * permutes. min/max take the clamp bound first so that NaN passes through
 * (vminps returns its second operand when one is NaN), as torch.clamp. */

INLINE void swiglu_split(const float *h, __m512 *g, __m512 *u) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  __m512 a = _mm512_loadu_ps(h), b = _mm512_loadu_ps(h + 16);
  *g = _mm512_permutex2var_ps(a, even, b);
  *u = _mm512_permutex2var_ps(a, odd, b);
}

/* σ(alpha·g) */
INLINE __m512 sigmoid512(__m512 g, __m512 alpha) {
  __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp512(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), alpha), g))));
}

TARGET static void a5_swiglu_row(float *act, const float *h, int I, float alpha, float limit) {
  __m512 lim = _mm512_set1_ps(limit), nlim = _mm512_set1_ps(-limit), al = _mm512_set1_ps(alpha);
  __m512 one = _mm512_set1_ps(1.0f);
  int u = 0;
  for (; u + 16 <= I; u += 16) {
    __m512 hg, hl;
    swiglu_split(h + 2 * u, &hg, &hl);
    __m512 g = _mm512_min_ps(lim, hg), l = _mm512_max_ps(nlim, _mm512_min_ps(lim, hl));
    _mm512_storeu_ps(act + u, _mm512_mul_ps(_mm512_mul_ps(g, sigmoid512(g, al)), _mm512_add_ps(l, one)));
  }
  mxl_cpu_swiglu_scalar(act, h, u, I, alpha, limit);
}

TARGET static void a5_swiglu_bwd_row(float *dh, const float *dact, const float *h, int I,
                                     float alpha, float limit) {
  const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  __m512 lim = _mm512_set1_ps(limit), nlim = _mm512_set1_ps(-limit), al = _mm512_set1_ps(alpha);
  __m512 one = _mm512_set1_ps(1.0f);
  int u = 0;
  for (; u + 16 <= I; u += 16) {
    __m512 hg, hl;
    swiglu_split(h + 2 * u, &hg, &hl);
    __m512 g = _mm512_min_ps(lim, hg), l = _mm512_max_ps(nlim, _mm512_min_ps(lim, hl));
    __m512 s = sigmoid512(g, al), da = _mm512_loadu_ps(dact + u);
    /* dg = da·(l+1)·(s + alpha·g·s·(1−s)), du = da·g·s; lanes outside the
     * clamps (or NaN) pass nothing */
    __m512 dsg = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_mul_ps(al, g), s), _mm512_sub_ps(one, s), s);
    __m512 dg = _mm512_mul_ps(_mm512_mul_ps(da, _mm512_add_ps(l, one)), dsg);
    __m512 du = _mm512_mul_ps(da, _mm512_mul_ps(g, s));
    __mmask16 pass_g = _mm512_cmp_ps_mask(hg, lim, _CMP_LE_OQ);
    __mmask16 pass_u = _mm512_cmp_ps_mask(hl, nlim, _CMP_GE_OQ) & _mm512_cmp_ps_mask(hl, lim, _CMP_LE_OQ);
    dg = _mm512_maskz_mov_ps(pass_g, dg);
    du = _mm512_maskz_mov_ps(pass_u, du);
    float *d = dh + 2 * u;
    _mm512_storeu_ps(d, _mm512_add_ps(_mm512_loadu_ps(d), _mm512_permutex2var_ps(dg, lo, du)));
    _mm512_storeu_ps(d + 16, _mm512_add_ps(_mm512_loadu_ps(d + 16), _mm512_permutex2var_ps(dg, hi, du)));
  }
  mxl_cpu_swiglu_bwd_scalar(dh, dact, h, u, I, alpha, limit);
}

/* ------------------------------------------------------------------ RMSNorm rows
 * Sums in double (8 lanes, two accumulators: the order of the terms differs
 * from the portable loop, their precision does not); the row updates in
 * fp32 with the portable loop's operation order. */

INLINE __mmask16 tail16(int left) {
  return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

/* 16 floats as two halves of 8 doubles */
INLINE void widen16(__m512 v, __m512d *lo, __m512d *hi) {
  *lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
  *hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

INLINE __m512 bf16_load16(const uint16_t *g, __mmask16 m) {
  return bf16x16_to_f32(_mm256_maskz_loadu_epi16(m, g));
}

TARGET static float a5_rmsnorm_row(float *y, const float *x, const uint16_t *g, int H, float eps) {
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  for (int j = 0; j < H; j += 16) {
    __m512d lo, hi;
    widen16(_mm512_maskz_loadu_ps(tail16(H - j), x + j), &lo, &hi);
    s0 = _mm512_fmadd_pd(lo, lo, s0);
    s1 = _mm512_fmadd_pd(hi, hi, s1);
  }
  double ss = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
  float r = (float)(1.0 / sqrt(ss / H + eps));
  __m512 vr = _mm512_set1_ps(r);
  for (int j = 0; j < H; j += 16) {
    __mmask16 m = tail16(H - j);
    __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + j), vr), bf16_load16(g + j, m));
    _mm512_mask_storeu_ps(y + j, m, v);
  }
  return r;
}

TARGET static void a5_rmsnorm_bwd_row(float *dx, const float *dy, const float *x,
                                      const uint16_t *g, float r, int H) {
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  for (int j = 0; j < H; j += 16) {
    __mmask16 m = tail16(H - j);
    __m512d dl, dh, gl, gh, xl, xh;
    widen16(_mm512_maskz_loadu_ps(m, dy + j), &dl, &dh);
    widen16(bf16_load16(g + j, m), &gl, &gh);
    widen16(_mm512_maskz_loadu_ps(m, x + j), &xl, &xh);
    s0 = _mm512_add_pd(s0, _mm512_mul_pd(_mm512_mul_pd(dl, gl), xl));
    s1 = _mm512_add_pd(s1, _mm512_mul_pd(_mm512_mul_pd(dh, gh), xh));
  }
  double dot = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1)), rd = r;
  __m512 vc = _mm512_set1_ps((float)(rd * rd * rd * dot / H)), vr = _mm512_set1_ps(r);
  for (int i = 0; i < H; i += 16) {
    __mmask16 m = tail16(H - i);
    __m512 a = _mm512_mul_ps(_mm512_mul_ps(vr, bf16_load16(g + i, m)), _mm512_maskz_loadu_ps(m, dy + i));
    __m512 b = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vc);
    __m512 d = _mm512_add_ps(_mm512_maskz_loadu_ps(m, dx + i), _mm512_sub_ps(a, b));
    _mm512_mask_storeu_ps(dx + i, m, d);
  }
}

/* mxl_cpu_rope_halves_scalar 16 pairs at a time, the same operations
 * (the tail masked). */
TARGET static void a5_rope_halves_f32(float *xa, float *xb, const float *cs, const float *sn,
                                      int n, float sign) {
  const __m512 sg = _mm512_set1_ps(sign);
  for (int j = 0; j < n; j += 16) {
    __mmask16 k = n - j >= 16 ? 0xFFFF : (__mmask16)((1u << (n - j)) - 1);
    __m512 a = _mm512_maskz_loadu_ps(k, xa + j), b = _mm512_maskz_loadu_ps(k, xb + j);
    __m512 c = _mm512_maskz_loadu_ps(k, cs + j), s = _mm512_mul_ps(sg, _mm512_maskz_loadu_ps(k, sn + j));
    _mm512_mask_storeu_ps(xa + j, k, _mm512_sub_ps(_mm512_mul_ps(a, c), _mm512_mul_ps(b, s)));
    _mm512_mask_storeu_ps(xb + j, k, _mm512_add_ps(_mm512_mul_ps(b, c), _mm512_mul_ps(a, s)));
  }
}

/* mxl_cpu_adamw_scalar 16 lanes at a time, the same operations in order
 * (the tail masked). */
TARGET static void a5_adamw_f32(float *param, const float *grad, float *m, float *v, size_t n,
                                const mxl_cpu_adamw_coef *c) {
  const __m512 gs = _mm512_set1_ps(c->grad_scale), b1 = _mm512_set1_ps(c->beta1);
  const __m512 b2 = _mm512_set1_ps(c->beta2), ob1 = _mm512_set1_ps(1.0f - c->beta1);
  const __m512 ob2 = _mm512_set1_ps(1.0f - c->beta2), ibc1 = _mm512_set1_ps(c->inv_bc1);
  const __m512 isbc2 = _mm512_set1_ps(c->inv_sqrt_bc2), eps = _mm512_set1_ps(c->eps);
  const __m512 wd = _mm512_set1_ps(c->weight_decay), lr = _mm512_set1_ps(c->lr);
  for (size_t i = 0; i < n; i += 16) {
    __mmask16 k = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, grad + i), gs);
    __m512 p = _mm512_maskz_loadu_ps(k, param + i);
    __m512 mi = _mm512_add_ps(_mm512_mul_ps(b1, _mm512_maskz_loadu_ps(k, m + i)), _mm512_mul_ps(ob1, g));
    __m512 vi = _mm512_add_ps(_mm512_mul_ps(b2, _mm512_maskz_loadu_ps(k, v + i)),
                              _mm512_mul_ps(_mm512_mul_ps(ob2, g), g));
    __m512 den = _mm512_add_ps(_mm512_mul_ps(_mm512_sqrt_ps(vi), isbc2), eps);
    __m512 up = _mm512_add_ps(_mm512_div_ps(_mm512_mul_ps(mi, ibc1), den), _mm512_mul_ps(wd, p));
    _mm512_mask_storeu_ps(m + i, k, mi);
    _mm512_mask_storeu_ps(v + i, k, vi);
    _mm512_mask_storeu_ps(param + i, k, _mm512_sub_ps(p, _mm512_mul_ps(lr, up)));
  }
}

/* ------------------------------------------------------------------ bf16 dot rate probe */

/* 16 independent chains of `iters` vdpbf16ps (32 multiply-adds each) or
 * vfmadd231ps (16), distinct inputs per chain so that no two chains can
 * be merged; seconds taken. */
#define PROBE_CHAINS(T, INIT, STEP)                                                               \
  T a0 = INIT(1), a1 = INIT(2), a2 = INIT(3), a3 = INIT(4), a4 = INIT(5), a5 = INIT(6),          \
    a6 = INIT(7), a7 = INIT(8), a8 = INIT(9), a9 = INIT(10), a10 = INIT(11), a11 = INIT(12),      \
    a12 = INIT(13), a13 = INIT(14), a14 = INIT(15), a15 = INIT(16);                               \
  double t0 = mxl_now_seconds();                                                                  \
  for (long i = 0; i < iters; i++) {                                                              \
    STEP(a0) STEP(a1) STEP(a2) STEP(a3) STEP(a4) STEP(a5) STEP(a6) STEP(a7) STEP(a8) STEP(a9)     \
    STEP(a10) STEP(a11) STEP(a12) STEP(a13) STEP(a14) STEP(a15)                                   \
    __asm__ volatile("" : "+v"(x));                                                               \
  }                                                                                               \
  double dt = mxl_now_seconds() - t0;                                                             \
  __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),           \
                           _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));          \
  s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)),\
                                     _mm512_add_ps(_mm512_add_ps(a12, a13), _mm512_add_ps(a14, a15))));\
  *sink = _mm512_reduce_add_ps(s);                                                                \
  return dt;

#define PROBE_INIT(k) _mm512_set1_ps((float)(k))
TARGET __attribute__((noinline)) static double probe_dot(long iters, float *sink) {
  __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3400);
#define PROBE_DOT(a) a = _mm512_dpbf16_ps(a, x, y);
  PROBE_CHAINS(__m512, PROBE_INIT, PROBE_DOT)
#undef PROBE_DOT
}

TARGET __attribute__((noinline)) static double probe_fma(long iters, float *sink) {
  __m512 x = _mm512_set1_ps(1.0f), y = _mm512_set1_ps(0x1p-23f);
#define PROBE_FMA(a) a = _mm512_fmadd_ps(x, y, a);
  PROBE_CHAINS(__m512, PROBE_INIT, PROBE_FMA)
#undef PROBE_FMA
}
#undef PROBE_INIT
#undef PROBE_CHAINS

double mxl_a5_fma_rate(void) {
  static _Atomic double measured;
  double known = measured;
  if (known > 0) return known;
  enum { ITERS = 4000 }; /* 64 K instructions per run: tens of µs */
  double best = 1e30;
  float sink;
  for (int rep = 0; rep < 3; rep++) {
    double f = probe_fma(ITERS, &sink);
    best = f < best ? f : best;
  }
  known = best > 0 ? 16.0 * 16.0 * ITERS / best : 0; /* 16 chains of 16-lane FMAs */
  measured = known;
  return known;
}

/* Measured once per process, so that every backend of a process (tests
 * compare several) makes the same choice. */
static double a5_bf16_dot_speedup(void) {
  static _Atomic double measured;
  double known = measured;
  if (known > 0) return known;
  enum { ITERS = 4000 };
  double dot = 1e30, fma_rate = mxl_a5_fma_rate();
  float sink;
  for (int rep = 0; rep < 3; rep++) {
    double d = probe_dot(ITERS, &sink);
    dot = d < dot ? d : dot;
  }
  /* 16 chains of vdpbf16ps, 32 multiply-adds each */
  known = dot > 0 && fma_rate > 0 ? 16.0 * 32.0 * ITERS / dot / fma_rate : 1.0;
  measured = known;
  return known;
}

/* ------------------------------------------------------------------ integer decode probe */

/* The MXFP4 decode kernels' speed differs by core more than any rule
 * predicts: on an Intel Xeon with AMX, vdpbf16ps runs at half the FMA rate
 * and the integer kernel (vpdpbusd) streamed 19 GB/s against 14 from L2;
 * on AMD Zen 4, vdpbf16ps runs at twice the FMA rate and the bf16 kernels
 * won, 1.3x at one row and 1.4-1.6x at 4-64 rows (bench_ops, 20b shapes).
 * So both are timed here on the same L2-resident weights, one activation
 * row and four, and the ratio of their summed times (bf16 over integer: > 1
 * where the integer kernel is faster) decides. Measured once per process,
 * so every backend of a process (tests compare several) makes the same
 * choice; about 6 ms, at the first backend's creation. */
enum { PROBE_ROWS = 64, PROBE_K = 2880, PROBE_M = 4, PROBE_CALLS = 24, PROBE_REPS = 5 };

typedef struct decode_probe {
  uint8_t *blocks, *scales;
  uint16_t *x, *work;
  void *xq;
  float *y;
} decode_probe;

static void decode_probe_free(decode_probe *p) {
  free(p->blocks), free(p->scales), free(p->x), free(p->work), free(p->xq), free(p->y);
}

static uint32_t probe_random(uint32_t *r) { return *r = *r * 1664525u + 1013904223u; }

/* Random codes and activations with scales around the bias (as real
 * checkpoints have them: every row takes the fast paths). */
static int decode_probe_init(decode_probe *p) {
  int nb = PROBE_K / MXL_MXFP4_BLOCK;
  size_t kr = (PROBE_K + 127) / 128 * 128;
  *p = (decode_probe){
      malloc((size_t)PROBE_ROWS * nb * MXL_MXFP4_BLOCK_BYTES), malloc((size_t)PROBE_ROWS * nb),
      malloc((size_t)PROBE_M * PROBE_K * sizeof(uint16_t)),
      aligned_alloc(64, 2 * PROBE_M * kr * sizeof(uint16_t)),
      aligned_alloc(64, PROBE_M * mxl_cpu_q8_bytes(PROBE_K)),
      malloc((size_t)PROBE_M * PROBE_ROWS * sizeof(float))};
  if (!p->blocks || !p->scales || !p->x || !p->work || !p->xq || !p->y) return 0;
  uint32_t r = 12345;
  for (size_t i = 0; i < (size_t)PROBE_ROWS * nb * MXL_MXFP4_BLOCK_BYTES; i++)
    p->blocks[i] = (uint8_t)(probe_random(&r) >> 24);
  for (size_t i = 0; i < (size_t)PROBE_ROWS * nb; i++)
    p->scales[i] = (uint8_t)(124 + (probe_random(&r) >> 30));
  for (size_t i = 0; i < (size_t)PROBE_M * PROBE_K; i++) { /* bf16 in ±[0.5, 1) */
    uint32_t v = probe_random(&r);
    p->x[i] = (uint16_t)(0x3F00 | (v >> 25) | ((v >> 8) & 1) << 15);
  }
  /* quantized once, as an op does for all its weight rows */
  for (int i = 0; i < PROBE_M; i++)
    mxl_a5_quantize_q8((char *)p->xq + i * mxl_cpu_q8_bytes(PROBE_K), p->x + i * PROBE_K,
                       PROBE_K);
  return 1;
}

/* Seconds for PROBE_CALLS products of m rows (best of PROBE_REPS) on one
 * kernel: integer (q8) or bf16. */
TARGET static double decode_probe_time(decode_probe *p, int q8, int m) {
  int nb = PROBE_K / MXL_MXFP4_BLOCK;
  double best = 1e30;
  for (int rep = 0; rep < PROBE_REPS; rep++) {
    double t0 = mxl_now_seconds();
    for (int c = 0; c < PROBE_CALLS; c++) {
      if (q8) {
        mxl_a5_gemm_mxfp4_q8(p->y, PROBE_ROWS, p->xq, p->x, PROBE_K, p->blocks, p->scales, nb, m,
                             PROBE_ROWS, PROBE_K, 127);
      } else if (m == 1) {
        a5_gemv_mxfp4(p->y, p->x, NULL, p->blocks, p->scales, nb, PROBE_ROWS, PROBE_K, 127);
      } else {
        a5_gemm_mxfp4_nt(p->y, PROBE_ROWS, p->x, NULL, PROBE_K, p->blocks, p->scales, nb, m,
                         PROBE_ROWS, PROBE_K, 127, p->work);
      }
    }
    double dt = mxl_now_seconds() - t0;
    best = dt < best ? dt : best;
  }
  return best;
}

static double a5_int_decode_speedup(void) {
  static _Atomic double measured;
  double known = measured;
  if (known > 0) return known;
  decode_probe p;
  if (decode_probe_init(&p)) {
    decode_probe_time(&p, 0, 1), decode_probe_time(&p, 1, 1); /* weights into L2 */
    double bf16 = decode_probe_time(&p, 0, 1) + decode_probe_time(&p, 0, PROBE_M);
    double q8 = decode_probe_time(&p, 1, 1) + decode_probe_time(&p, 1, PROBE_M);
    if (bf16 > 0 && q8 > 0) known = bf16 / q8;
  }
  decode_probe_free(&p);
  /* 0 where the probe had no memory: the bf16 kernels serve, and the next
   * backend measures again */
  measured = known;
  return known;
}

const mxl_cpu_isa mxl_cpu_isa_avx512 = {
    .name = "avx512bf16",
    .bf16_dot = 1,
    .bf16_dot_speedup = a5_bf16_dot_speedup,
    .int_decode_speedup = a5_int_decode_speedup,
    .to_bf16 = a5_to_bf16,
    .to_bf16_split = a5_to_bf16_split,
    .mxfp4_to_bf16 = a5_mxfp4_to_bf16,
    .mxfp4_to_bf16_ba16a64b2a = a5_mxfp4_to_bf16_ba16a64b2a,
    .mxfp4_to_bf16_ba16a64b2a_rows = a5_mxfp4_to_bf16_ba16a64b2a_rows,
    .pack_vnni_bf16 = a5_pack_vnni_bf16,
    .pack_vnni_t_bf16 = a5_pack_vnni_t_bf16,
    .pack_vnni_t_mxfp4 = a5_pack_vnni_t_mxfp4,
    .pack_vnni_mxfp4 = a5_pack_vnni_mxfp4,
    .gemm_bf16_nt = a5_gemm_bf16_nt,
    .gemv_bf16 = a5_gemv_bf16,
    .gemm_bf16_vnni = a5_gemm_bf16_vnni,
    .gemv_mxfp4 = a5_gemv_mxfp4,
    .quantize_q8 = mxl_a5_quantize_q8,
    .gemm_mxfp4_q8 = mxl_a5_gemm_mxfp4_q8,
    .gemm_mxfp4_nt = a5_gemm_mxfp4_nt,
    .gemm_f32_nn = a5_gemm_f32_nn,
    .gemm_f32_nt = a5_gemm_f32_nt,
    .transpose_f32 = a5_transpose_f32,
    .dot_f32 = a5_dot_f32,
    .axpy_f32 = a5_axpy_f32,
    .max_f32 = a5_max_f32,
    .sum_exp_f32 = a5_sum_exp_f32,
    .exp_f32 = a5_exp_f32,
    .masked_max_f32 = a5_masked_max_f32,
    .masked_exp_f32 = a5_masked_exp_f32,
    .scale_f32 = a5_scale_f32,
    .softmax_block_bf16 = a5_softmax_block_bf16,
    .attn_decode_block = a5_attn_decode_block,
    .mul_sub_f32 = a5_mul_sub_f32,
    .swiglu_row = a5_swiglu_row,
    .swiglu_bwd_row = a5_swiglu_bwd_row,
    .rmsnorm_row = a5_rmsnorm_row,
    .rmsnorm_bwd_row = a5_rmsnorm_bwd_row,
    .rope_halves_f32 = a5_rope_halves_f32,
    .adamw_f32 = a5_adamw_f32,
};

#else
/* Not x86: this table does not exist (ISO C wants a declaration here). */
typedef int mxl_cpu_isa_not_x86;
#endif
