/* MXFP4: the codec for gpt-oss expert weights. Header-only; compiles as C11
 * for the host and as CUDA C++ for the device, so every backend decodes with
 * the very same code.
 *
 * Layout (spec §2.3). A weight row of `cols` inputs is cols/32 blocks; each
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

/* E2M1: bit 3 sign, bits 2..1 exponent, bit 0 mantissa. */
MXL_HD float mxl_e2m1_value(unsigned nibble) {
  const float magnitude[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  float v = magnitude[nibble & 7u];
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

#undef MXL_HD
#endif
