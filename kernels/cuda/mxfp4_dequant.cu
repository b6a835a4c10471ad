/* Launchers of the MXFP4 dequantization kernel (mxfp4_dequant.cuh). */
#include <stdint.h>

#include "kernels/cuda/backend_internal.cuh"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/mxfp4_dequant.cuh"

template <typename T>
static mxl_status dequant(const char *name, mxl_backend *be, T *out, const uint8_t *blocks,
                          const uint8_t *scales, int scale_bias, int64_t rows, int64_t cols) {
  if (rows < 0 || cols <= 0 || cols % MXL_MXFP4_BLOCK != 0)
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "%s: shape [%lld, %lld]: cols must be a positive multiple of 32", name,
                      (long long)rows, (long long)cols);
  if (scale_bias != MXL_MXFP4_BIAS && scale_bias != MXL_MXFP4_METAL_BIAS)
    return mxl_errorf(MXL_ERR_ARGUMENT, "%s: scale bias %d is neither 127 nor 141", name,
                      scale_bias);
  if ((uintptr_t)out % (2 * sizeof(T)) != 0)
    return mxl_errorf(MXL_ERR_ARGUMENT, "%s: output is not %zu-byte aligned", name,
                      2 * sizeof(T));
  mxl_cuda_state *st = mxl_cuda_state_of(be);
  if (!st) return mxl_errorf(MXL_ERR_ARGUMENT, "%s: not a CUDA backend", name);
  int64_t n_bytes = rows * (cols / MXL_MXFP4_BLOCK) * MXL_MXFP4_BLOCK_BYTES;
  if (n_bytes == 0) return MXL_OK;
  int rc = MXL_LAUNCH(mxfp4_dequant_kernel<T>, mxl_mxfp4_dequant_grid(n_bytes),
                      MXL_DEQUANT_THREADS, 0, st->stream, out, blocks, scales, scale_bias, n_bytes);
  if (rc != 0)
    return mxl_errorf(MXL_ERR_BACKEND, "%s: launch failed: %s (error %d)", name,
                      MXL_LAUNCH_ERROR(rc), rc);
  return MXL_OK;
}

extern "C" mxl_status mxl_cuda_mxfp4_dequant_f32(mxl_backend *be, float *out,
                                                 const uint8_t *blocks, const uint8_t *scales,
                                                 int scale_bias, int64_t rows, int64_t cols) {
  return dequant("mxfp4_dequant_f32", be, out, blocks, scales, scale_bias, rows, cols);
}

extern "C" mxl_status mxl_cuda_mxfp4_dequant_bf16(mxl_backend *be, uint16_t *out,
                                                  const uint8_t *blocks, const uint8_t *scales,
                                                  int scale_bias, int64_t rows, int64_t cols) {
  return dequant("mxfp4_dequant_bf16", be, out, blocks, scales, scale_bias, rows, cols);
}
