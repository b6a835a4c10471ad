/* How much more memory a backend can allocate: for sizing optional
 * allocations (the trainer's kept activations, model/train_step.c). */
#ifndef MXL_KERNELS_BACKEND_MEMORY_H
#define MXL_KERNELS_BACKEND_MEMORY_H

#include <stddef.h>

#include "kernels/ops.h"

/* The bytes `be` can still allocate: on the CUDA backend the device's free
 * memory (cudaMemGetInfo), on backends with host memory /proc/meminfo's
 * MemAvailable. MXL_ERR_UNSUPPORTED on a backend that cannot say (the
 * emulated CUDA backend of the tests). */
mxl_status mxl_backend_memory_left(mxl_backend *be, size_t *bytes);

#endif
