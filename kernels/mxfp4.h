/* MXFP4: the codec for gpt-oss expert weights. Header-only; compiles as C11
 * for the host and as CUDA C++ for the device, so every backend decodes with
 * the very same code.
 *
 * Layout (docs/gpt-oss.md §2.3). A weight row of `cols` inputs is cols/32 blocks; each
 * block is 16 bytes of packed E2M1 codes plus one E8M0 scale byte stored in a
 * separate tensor:
 *   blocks [rows, cols/32, 16] u8    scales [rows, cols/32] u8
 *   element 32*g + 2*j     = low nibble  (byte & 0x0F) of byte j of block g
 *   element 32*g + 2*j + 1 = high nibble (byte >> 4)
 *   value = E2M1[nibble] * 2^(scale - bias)
 * bias is 127 for the Hugging Face and original/ layouts and 141 for
 * metal/model.bin, which stores every scale byte +14. An E8M0 byte of 255
 * (after removing the bias offset) is NaN, as in the OCP MX specification.
 */
#ifndef MXL_KERNELS_MXFP4_H
#define MXL_KERNELS_MXFP4_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define MXL_HD __host__ __device__ __forceinline__
#else
#define MXL_HD static inline
#endif

enum {
  MXL_MXFP4_BLOCK = 32,       /* values per block */
  MXL_MXFP4_BLOCK_BYTES = 16, /* packed bytes per block */
  MXL_MXFP4_BIAS = 127,       /* E8M0 bias of the HF and original/ layouts */
  MXL_MXFP4_METAL_BIAS = 141, /* metal/model.bin stores scale + 14 */
};

/* E2M1: bit 3 sign, bits 2..1 exponent, bit 0 mantissa. Magnitudes
 * 0, 0.5, 1, 1.5, 2, 3, 4, 6 are twice 0, 1, 2, 3, 4, 6, 8, 12: one hex digit
 * each of a 32-bit constant, so the lookup needs no array (no memory on the
 * host, no local memory on the GPU). */
MXL_HD float mxl_e2m1_value(unsigned nibble) {
  float v = (float)((0xC8643210u >> (4u * (nibble & 7u))) & 0xFu) * 0.5f;
  return (nibble & 8u) ? -v : v;
}

/* 2^(scale - bias), exact; the all-ones E8M0 code is NaN. */
MXL_HD float mxl_e8m0_scale(unsigned scale_byte, int bias) {
  if ((int)scale_byte - bias == 255 - MXL_MXFP4_BIAS) return NAN;
  return ldexpf(1.0f, (int)scale_byte - bias);
}

/* Decodes one 32-value block into out[0..31]. */
MXL_HD void mxl_mxfp4_decode_block(const uint8_t *block, unsigned scale_byte, int bias,
                                   float *out) {
  float scale = mxl_e8m0_scale(scale_byte, bias);
  for (int j = 0; j < MXL_MXFP4_BLOCK_BYTES; j++) {
    out[2 * j] = mxl_e2m1_value(block[j] & 0x0Fu) * scale;
    out[2 * j + 1] = mxl_e2m1_value(block[j] >> 4) * scale;
  }
}

/* Decodes one element `col` of a row (blocks and scales of that row). */
MXL_HD float mxl_mxfp4_decode_at(const uint8_t *row_blocks, const uint8_t *row_scales,
                                 int bias, int64_t col) {
  int64_t g = col / MXL_MXFP4_BLOCK;
  int t = (int)(col % MXL_MXFP4_BLOCK);
  uint8_t byte = row_blocks[g * MXL_MXFP4_BLOCK_BYTES + t / 2];
  unsigned nibble = (t & 1) ? (byte >> 4) : (byte & 0x0Fu);
  return mxl_e2m1_value(nibble) * mxl_e8m0_scale(row_scales[g], bias);
}

/* ------------------------------------------------------------------ encode
 *
 * Rounding: each scaled value goes to the nearest E2M1 value, ties to the
 * even mantissa (0.25→0, 0.75→1, 1.25→1, 1.75→2, 2.5→2, 3.5→4, 5→4), and
 * magnitudes above 6 saturate to ±6. This is IEEE round-to-nearest-even
 * restricted to E2M1 with saturation, the same as NVIDIA's
 * __nv_cvt_float_to_fp4(x, __NV_E2M1, cudaRoundNearest).
 * Signed zero: the sign bit is always kept, so -0.0 and small negatives that
 * round to zero encode as code 8 (-0); every finite block therefore
 * round-trips bit-exactly when it is representable.
 * Scale: the one of e-1, e, e+1 (e = the max-based exponent, the smallest
 * with max|x| / 2^e <= 6) that gives the smallest squared error of the
 * block; ties keep e, then prefer e-1. Exponents are clamped to the E8M0
 * range 2^-127 .. 2^127 (bytes 0..254 at bias 127). An all-zero block gets
 * scale byte 127 (2^0). */

/* The E2M1 code (0..15) nearest to x, which is already divided by the
 * block scale. x must not be NaN. */
MXL_HD unsigned mxl_e2m1_encode(float x) {
  float a = fabsf(x);
  /* Count the midpoints below a; a midpoint itself goes to the even code,
   * hence > before an even code and >= before an odd one's successor. */
  unsigned code = (unsigned)(a > 0.25f) + (unsigned)(a >= 0.75f) + (unsigned)(a > 1.25f) +
                  (unsigned)(a >= 1.75f) + (unsigned)(a > 2.5f) + (unsigned)(a >= 3.5f) +
                  (unsigned)(a > 5.0f);
  return (signbit(x) ? 8u : 0u) | code;
}

/* The smallest e with amax / 2^e <= 6, for finite amax > 0. With
 * amax = m·2^E, m in [0.5, 1): 2^(E-2)·6 = 1.5·2^E >= amax always, and
 * 2^(E-3)·6 = 0.75·2^E >= amax exactly when m <= 0.75. */
MXL_HD int mxl_mxfp4_max_exponent(float amax) {
  int E;
  float m = frexpf(amax, &E);
  return m <= 0.75f ? E - 3 : E - 2;
}

/* Σ (q_i - x_i/2^e)², the block's squared error in units of 4^e. */
MXL_HD float mxl_mxfp4_scaled_sse(const float *in32, int e) {
  /* 2^-e is a float for every e in -127..127, and x·2^-e rounds exactly
   * as ldexpf(x, -e) does, at a fraction of the cost. */
  float inv = ldexpf(1.0f, -e);
  float sse = 0.0f;
  for (int i = 0; i < MXL_MXFP4_BLOCK; i++) {
    float a = fabsf(in32[i]) * inv; /* the error does not depend on the sign */
    float d = mxl_e2m1_value(mxl_e2m1_encode(a)) - a;
    sse += d * d;
  }
  return sse;
}

MXL_HD int mxl_mxfp4_clamp_exponent(int e) {
  const int e_min = -MXL_MXFP4_BIAS, e_max = 254 - MXL_MXFP4_BIAS;
  return e < e_min ? e_min : (e > e_max ? e_max : e);
}

/* Encodes in32[0..31] into block16 (nibble order as the decoder) and
 * *scale_byte (bias 127). Returns 0, or -1 when a value is NaN or Inf, in
 * which case nothing is written. */
MXL_HD int mxl_mxfp4_encode_block(const float *in32, uint8_t *block16, uint8_t *scale_byte) {
  float amax = 0.0f;
  for (int i = 0; i < MXL_MXFP4_BLOCK; i++) {
    if (!isfinite(in32[i])) return -1;
    float a = fabsf(in32[i]);
    amax = a > amax ? a : amax; /* fmaxf is a libm call on the host */
  }
  int best = 0; /* all-zero block: 2^0 */
  if (amax > 0.0f) {
    int e = mxl_mxfp4_max_exponent(amax);
    best = mxl_mxfp4_clamp_exponent(e);
    float best_err = mxl_mxfp4_scaled_sse(in32, best);
    for (int d = -1; d <= 1; d += 2) {
      int c = mxl_mxfp4_clamp_exponent(e + d);
      if (c == mxl_mxfp4_clamp_exponent(e)) continue;
      /* Rescale to the units of `best`: an exponent one higher means 4x. */
      float err = ldexpf(mxl_mxfp4_scaled_sse(in32, c), 2 * (c - best));
      if (err < best_err) {
        best_err = err;
        best = c;
      }
    }
  }
  float inv = ldexpf(1.0f, -best);
  for (int j = 0; j < MXL_MXFP4_BLOCK_BYTES; j++) {
    unsigned lo = mxl_e2m1_encode(in32[2 * j] * inv);
    unsigned hi = mxl_e2m1_encode(in32[2 * j + 1] * inv);
    block16[j] = (uint8_t)(lo | (hi << 4));
  }
  *scale_byte = (uint8_t)(best + MXL_MXFP4_BIAS);
  return 0;
}

#undef MXL_HD

/* Error statistics of an encoding, over the values x and their decoding y:
 * sums that merge across calls, and the figures derived from them. */
typedef struct mxl_mxfp4_error_stats {
  int64_t n_values;       /* values encoded */
  int64_t n_saturated;    /* values with |x| > 6·scale, clipped to ±6·scale */
  int64_t first_bad;      /* flat index of the first NaN/Inf input, or -1 */
  double sum_sq_error;    /* Σ (x - y)² */
  double sum_sq_value;    /* Σ x² */
  double max_abs_error;   /* max |x - y| */
  double rms_error;       /* sqrt(sum_sq_error / n_values) */
  double rel_rms_error;   /* sqrt(sum_sq_error / sum_sq_value); 0 when x is all zero */
} mxl_mxfp4_error_stats;

/* Recomputes the derived figures of `s` from its sums. */
static inline void mxl_mxfp4_error_stats_finish(mxl_mxfp4_error_stats *s) {
  s->rms_error = s->n_values ? sqrt(s->sum_sq_error / (double)s->n_values) : 0.0;
  s->rel_rms_error = s->sum_sq_value > 0.0 ? sqrt(s->sum_sq_error / s->sum_sq_value) : 0.0;
}

/* Adds the sums of `part` into `total` (e.g. per-thread row chunks). */
static inline void mxl_mxfp4_error_stats_merge(mxl_mxfp4_error_stats *total,
                                               const mxl_mxfp4_error_stats *part) {
  if (total->first_bad < 0 && part->first_bad >= 0) total->first_bad = part->first_bad;
  total->n_values += part->n_values;
  total->n_saturated += part->n_saturated;
  total->sum_sq_error += part->sum_sq_error;
  total->sum_sq_value += part->sum_sq_value;
  if (part->max_abs_error > total->max_abs_error) total->max_abs_error = part->max_abs_error;
  mxl_mxfp4_error_stats_finish(total);
}

/* Encodes x [rows, cols] (host memory) into blocks [rows, cols/32, 16] and
 * scales [rows, cols/32] (bias 127), block by block with
 * mxl_mxfp4_encode_block, and fills *stats (may be NULL).
 * Returns 0; -1 when x holds a NaN or Inf (stats->first_bad names it);
 * -2 when rows < 0 or cols is not a positive multiple of 32. On failure
 * nothing is written to blocks or scales. Host only. */
static inline int mxl_mxfp4_encode_rows(const float *x, int64_t rows, int64_t cols,
                                        uint8_t *blocks, uint8_t *scales,
                                        mxl_mxfp4_error_stats *stats) {
  mxl_mxfp4_error_stats s = {0, 0, -1, 0.0, 0.0, 0.0, 0.0, 0.0};
  if (stats) *stats = s;
  if (rows < 0 || cols <= 0 || cols % MXL_MXFP4_BLOCK != 0) return -2;
  int64_t n = rows * cols;
  for (int64_t i = 0; i < n; i++) {
    if (!isfinite(x[i])) {
      if (stats) stats->first_bad = i;
      return -1;
    }
  }
  for (int64_t g = 0; g < n / MXL_MXFP4_BLOCK; g++) {
    const float *in = x + g * MXL_MXFP4_BLOCK;
    uint8_t *block = blocks + g * MXL_MXFP4_BLOCK_BYTES;
    (void)mxl_mxfp4_encode_block(in, block, &scales[g]); /* inputs checked above */
    float out[MXL_MXFP4_BLOCK];
    mxl_mxfp4_decode_block(block, scales[g], MXL_MXFP4_BIAS, out);
    float limit = 6.0f * mxl_e8m0_scale(scales[g], MXL_MXFP4_BIAS);
    for (int t = 0; t < MXL_MXFP4_BLOCK; t++) {
      double err = fabs((double)in[t] - (double)out[t]);
      s.sum_sq_error += err * err;
      s.sum_sq_value += (double)in[t] * (double)in[t];
      if (err > s.max_abs_error) s.max_abs_error = err;
      if (fabsf(in[t]) > limit) s.n_saturated++;
    }
  }
  s.n_values = n;
  mxl_mxfp4_error_stats_finish(&s);
  if (stats) *stats = s;
  return 0;
}

#endif
