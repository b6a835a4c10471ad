/* Private to kernels/cuda: the CUDA backend's state and how launchers reach
 * it. C++ (nvcc) only. */
#ifndef MXL_KERNELS_CUDA_BACKEND_INTERNAL_CUH
#define MXL_KERNELS_CUDA_BACKEND_INTERNAL_CUH

#include <cuda_runtime.h>

extern "C" {
#include "core/status.h"
#include "kernels/ops.h"
}

/* Backend state. Ops are void, so the first CUDA error since the last sync
 * is kept here and reported by sync (ops.h). */
struct mxl_cuda_state {
  int device;
  cudaStream_t stream;
  mxl_status pending;
  char message[256];
};

/* The state of `be`, or NULL when `be` is not a CUDA backend. */
mxl_cuda_state *mxl_cuda_state_of(mxl_backend *be);

/* Records the first failure of an op ("upload", "mxfp4_dequant"). */
void mxl_cuda_fail(mxl_cuda_state *st, const char *op, cudaError_t err);

#endif
