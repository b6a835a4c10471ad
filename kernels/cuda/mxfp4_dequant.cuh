/* MXFP4 dequantization kernel: blocks + scales → fp32 or bf16 rows.
 *
 * CPU reference: mxl_mxfp4_decode_block (kernels/mxfp4.h). The kernel
 * decodes with that header's own mxl_e2m1_value and mxl_e8m0_scale, so the
 * codec exists once for host, CPU kernels and GPU.
 *
 * One thread per packed byte (two values): byte i of the flat blocks array
 * [rows·cols/32, 16] holds elements 2i (low nibble) and 2i+1 (high nibble)
 * of the flat output [rows·cols], because a block's 16 bytes hold its 32
 * elements in order; its scale is scales[i / 16]. Consecutive threads read
 * consecutive bytes and write consecutive pairs, so both sides coalesce. */
#ifndef MXL_KERNELS_CUDA_MXFP4_DEQUANT_CUH
#define MXL_KERNELS_CUDA_MXFP4_DEQUANT_CUH

#include <stdint.h>

#include <cuda_bf16.h>

#include "kernels/cuda/common.cuh"
#include "kernels/mxfp4.h"

MXL_DEVICE void mxl_dequant_store(float *out, int64_t i, float v) { out[i] = v; }

MXL_DEVICE void mxl_dequant_store(uint16_t *out, int64_t i, float v) {
  out[i] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

/* out [n_bytes·2] (T = float or uint16_t bf16 bits), blocks [n_bytes],
 * scales [n_bytes / 16]. */
template <typename T>
MXL_GLOBAL void mxfp4_dequant_kernel(T *out, const uint8_t *blocks, const uint8_t *scales,
                                     int scale_bias, int64_t n_bytes) {
  int64_t stride = MXL_BLOCK_DIM_X * MXL_GRID_DIM_X;
  for (int64_t i = MXL_BLOCK_X * MXL_BLOCK_DIM_X + MXL_THREAD_X; i < n_bytes; i += stride) {
    unsigned byte = blocks[i];
    float scale = mxl_e8m0_scale(scales[i / MXL_MXFP4_BLOCK_BYTES], scale_bias);
    mxl_dequant_store(out, 2 * i, mxl_e2m1_value(byte & 0x0Fu) * scale);
    mxl_dequant_store(out, 2 * i + 1, mxl_e2m1_value(byte >> 4) * scale);
  }
}

/* Launch shape: 256 threads per block; 4096 blocks fill any current GPU
 * (an H100 holds 270k resident threads), larger matrices loop in the
 * kernel. Host code, shared with the emulator. */
enum { MXL_DEQUANT_THREADS = 256, MXL_DEQUANT_MAX_BLOCKS = 4096 };

static inline unsigned mxl_mxfp4_dequant_grid(int64_t n_bytes) {
  int64_t want = (n_bytes + MXL_DEQUANT_THREADS - 1) / MXL_DEQUANT_THREADS;
  int64_t cap = MXL_DEQUANT_MAX_BLOCKS;
  return (unsigned)(want < cap ? want : cap);
}

#endif
