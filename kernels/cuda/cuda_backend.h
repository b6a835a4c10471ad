/* The CUDA backend's C interface beyond the op table: kernels that model
 * code does not call through mxl_ops (dequantization for tests, merge and
 * export). Every function here is asynchronous on the backend's stream,
 * validates its arguments before touching the device, and returns
 * MXL_ERR_ARGUMENT naming the violated condition.
 *
 * mxl_backend_cuda_create itself is declared in kernels/ops.h. */
#ifndef MXL_KERNELS_CUDA_CUDA_BACKEND_H
#define MXL_KERNELS_CUDA_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Dequantizes an MXFP4 matrix: out [rows, cols] = decode(blocks, scales),
 * with blocks [rows, cols/32, 16], scales [rows, cols/32] and the scale
 * bias of the layout (MXL_MXFP4_BIAS or MXL_MXFP4_METAL_BIAS). All pointers
 * are backend memory of `be`, a CUDA backend; cols % 32 == 0; out is 8-byte
 * aligned (f32) or 4-byte aligned (bf16). The f32 values are exactly
 * mxl_mxfp4_decode_block's (CPU reference, kernels/mxfp4.h); bf16 rounds
 * them to nearest even, which is exact except below 2^-133. */
mxl_status mxl_cuda_mxfp4_dequant_f32(mxl_backend *be, float *out, const uint8_t *blocks,
                                      const uint8_t *scales, int scale_bias, int64_t rows,
                                      int64_t cols);
mxl_status mxl_cuda_mxfp4_dequant_bf16(mxl_backend *be, uint16_t *out, const uint8_t *blocks,
                                       const uint8_t *scales, int scale_bias, int64_t rows,
                                       int64_t cols);

/* Quantizes x [rows, cols] (fp32, backend memory) into blocks
 * [rows, cols/32, 16] and scales [rows, cols/32] at bias 127, bit-exactly
 * as mxl_mxfp4_encode_block does on the host. A 32-value block holding NaN
 * or Inf gets zero codes and scale byte 255 (E8M0 NaN): it decodes to NaN.
 * cols % 32 == 0. */
mxl_status mxl_cuda_mxfp4_quant(mxl_backend *be, uint8_t *blocks, uint8_t *scales,
                                const float *x, int64_t rows, int64_t cols);

/* The device's free and total memory (cudaMemGetInfo): what the process
 * and everything else hold is total - free. For measuring the CUDA runtime's
 * own share (bench_cuda_ops; `mxlora plan` budgets it as an allowance). */
mxl_status mxl_cuda_memory_info(mxl_backend *be, size_t *free_bytes, size_t *total_bytes);

/* Page-locked host memory (cudaMallocHost; NULL when it cannot be had) and
 * its release (NULL: nothing), and a device-to-host copy into such memory
 * on the backend's stream that does not wait (errors are kept for sync):
 * kernels/ops.h mxl_backend_host_alloc, mxl_backend_download_async. */
void *mxl_cuda_host_alloc(size_t bytes);
void mxl_cuda_host_free(void *host);
void mxl_cuda_download_async(mxl_backend *be, void *host_dst, const void *src, size_t bytes);

/* One line naming the attention path of `be`, a CUDA backend (or NULL:
 * none could be created): cuDNN's graph (with the library's version) and
 * where the own kernels serve, or the own kernels only and why (`mxlora
 * version`). */
void mxl_cuda_attention_path(mxl_backend *be, char *buf, size_t size);

/* The CUDA backend's op table, for tests that check its coverage without
 * a device (every op is filled); backends still come from
 * mxl_backend_cuda_create. */
const mxl_ops *mxl_cuda_op_table(void);

#ifdef __cplusplus
}
#endif

#endif
