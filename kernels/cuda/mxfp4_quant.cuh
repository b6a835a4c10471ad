/* MXFP4 quantization kernel: fp32 rows → blocks + scales (bias 127), for
 * re-quantizing merged weights on the device.
 *
 * CPU reference: mxl_mxfp4_encode_block (kernels/mxfp4.h), which this kernel
 * calls: one thread per 32-value block, so the device result is the host
 * encoder's, bit for bit. A block holding NaN or Inf cannot be encoded; it
 * gets zero codes and scale byte 255, the E8M0 NaN, so it decodes to NaN
 * rather than to plausible numbers. */
#ifndef MXL_KERNELS_CUDA_MXFP4_QUANT_CUH
#define MXL_KERNELS_CUDA_MXFP4_QUANT_CUH

#include <stdint.h>

#include "kernels/cuda/common.cuh"
#include "kernels/mxfp4.h"

/* blocks [n_groups, 16], scales [n_groups], x [n_groups·32] */
MXL_GLOBAL void mxfp4_quant_kernel(uint8_t *blocks, uint8_t *scales, const float *x,
                                   int64_t n_groups) {
  int64_t stride = MXL_BLOCK_DIM_X * MXL_GRID_DIM_X;
  for (int64_t g = MXL_BLOCK_X * MXL_BLOCK_DIM_X + MXL_THREAD_X; g < n_groups; g += stride) {
    uint8_t *block = blocks + g * MXL_MXFP4_BLOCK_BYTES;
    if (mxl_mxfp4_encode_block(x + g * MXL_MXFP4_BLOCK, block, &scales[g]) != 0) {
      for (int j = 0; j < MXL_MXFP4_BLOCK_BYTES; j++) block[j] = 0;
      scales[g] = 255;
    }
  }
}

/* 128 threads per block: one thread encodes a whole 32-value block. */
enum { MXL_QUANT_THREADS = 128, MXL_QUANT_MAX_BLOCKS = 4096 };

static inline unsigned mxl_mxfp4_quant_grid(int64_t n_groups) {
  int64_t want = (n_groups + MXL_QUANT_THREADS - 1) / MXL_QUANT_THREADS;
  int64_t cap = MXL_QUANT_MAX_BLOCKS;
  return (unsigned)(want < cap ? want : cap);
}

#endif
