/* Launcher of the MXFP4 quantization kernel (mxfp4_quant.cuh). */
#include <stdint.h>

#include "kernels/cuda/backend_internal.cuh"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/mxfp4_quant.cuh"

extern "C" mxl_status mxl_cuda_mxfp4_quant(mxl_backend *be, uint8_t *blocks, uint8_t *scales,
                                           const float *x, int64_t rows, int64_t cols) {
  if (rows < 0 || cols <= 0 || cols % MXL_MXFP4_BLOCK != 0)
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "mxfp4_quant: shape [%lld, %lld]: cols must be a positive multiple of 32",
                      (long long)rows, (long long)cols);
  mxl_cuda_state *st = mxl_cuda_state_of(be);
  if (!st) return mxl_errorf(MXL_ERR_ARGUMENT, "mxfp4_quant: not a CUDA backend");
  int64_t n_groups = rows * (cols / MXL_MXFP4_BLOCK);
  if (n_groups == 0) return MXL_OK;
  int rc = MXL_LAUNCH(mxfp4_quant_kernel, mxl_mxfp4_quant_grid(n_groups), MXL_QUANT_THREADS, 0,
                      st->stream, blocks, scales, x, n_groups);
  if (rc != 0)
    return mxl_errorf(MXL_ERR_BACKEND, "mxfp4_quant: launch failed: %s (error %d)",
                      MXL_LAUNCH_ERROR(rc), rc);
  return MXL_OK;
}
