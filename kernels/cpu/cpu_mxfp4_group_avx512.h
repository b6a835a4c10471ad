/* An MXFP4 row's group (4 blocks of 32: 64 bytes, and their 4 scale bytes)
 * as both AVX-512 decode kernels read it (cpu_isa_avx512.c, bf16;
 * cpu_q8_avx512.c, integer): the load, whole or at the row's end, and the
 * scales as fp32 powers of two over the group's 16 lanes (lane l: block
 * l/4). For x86 files only; the functions carry their target. */
#ifndef MXL_KERNELS_CPU_MXFP4_GROUP_AVX512_H
#define MXL_KERNELS_CPU_MXFP4_GROUP_AVX512_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define MXL_A5_GROUP_INLINE                                                                       \
  __attribute__((target("avx512f,avx512bw,avx512vl"))) static inline                             \
      __attribute__((always_inline))

/* Per lane, the rotation bringing scale byte lane/4 to bits 23..30; the
 * exponent mask; (127 − bias) << 23. */
typedef struct mxl_a5_scale_consts {
  __m512i rot, emask, badj;
} mxl_a5_scale_consts;

MXL_A5_GROUP_INLINE mxl_a5_scale_consts mxl_a5_scale_consts_of(int bias) {
  mxl_a5_scale_consts c;
  c.rot = _mm512_setr_epi32(23, 23, 23, 23, 15, 15, 15, 15, 7, 7, 7, 7, 31, 31, 31, 31);
  c.emask = _mm512_set1_epi32(0x7F800000);
  c.badj = _mm512_set1_epi32((127 - bias) * (1 << 23));
  return c;
}

/* The group's 64 bytes and, in *sc, its scale bytes: `tail` blocks (1..3)
 * where the row ends inside the group, the rest zeros; 0: all four. */
MXL_A5_GROUP_INLINE __m512i mxl_a5_load_group(const uint8_t *blocks, const uint8_t *scales,
                                              int tail, uint32_t *sc) {
  if (!tail) {
    memcpy(sc, scales, 4);
    return _mm512_loadu_si512(blocks);
  }
  *sc = (uint32_t)_mm_cvtsi128_si32(_mm_maskz_loadu_epi8((__mmask16)((1u << tail) - 1), scales));
  return _mm512_maskz_loadu_epi8((((__mmask64)1) << (16 * tail)) - 1, blocks);
}

/* 2^(s − bias) of the four scale bytes in sc over their lanes, the
 * exponent field built in place: exact for s − bias in [-125, 125]. */
MXL_A5_GROUP_INLINE __m512 mxl_a5_scale_lanes(uint32_t sc, const mxl_a5_scale_consts *c) {
  __m512i e = _mm512_and_si512(_mm512_rolv_epi32(_mm512_set1_epi32((int)sc), c->rot), c->emask);
  return _mm512_castsi512_ps(_mm512_add_epi32(e, c->badj));
}

#endif
