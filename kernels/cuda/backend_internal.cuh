/* Private to kernels/cuda: the CUDA backend's state and how launchers reach
 * it. C++ (nvcc) only; the state itself and the services the op functions
 * use are in runtime.cuh, shared with the emulator build. */
#ifndef MXL_KERNELS_CUDA_BACKEND_INTERNAL_CUH
#define MXL_KERNELS_CUDA_BACKEND_INTERNAL_CUH

#include <cuda_runtime.h>

#include "kernels/cuda/runtime.cuh"

/* The state of `be`, or NULL when `be` is not a CUDA backend. */
mxl_cuda_state *mxl_cuda_state_of(mxl_backend *be);

/* Records the first failure of an op ("upload", "mxfp4_dequant"). */
void mxl_cuda_fail(mxl_cuda_state *st, const char *op, cudaError_t err);

/* The cuBLASLt state of a backend (kernels/cuda/blas.cuh, compiled in
 * ops_dense.cu): false when the library cannot be initialised. */
bool mxl_cuda_blas_init(mxl_cuda_state *st);
void mxl_cuda_blas_release(mxl_cuda_state *st);

/* cuDNN attention (cudnn_attention.cu): the handle on the backend's
 * stream, or st->dnn left NULL with the reason in st->dnn_off; its
 * release; and one line naming the attention path of `st` (NULL: no
 * device). */
void mxl_cuda_dnn_init(mxl_cuda_state *st);
void mxl_cuda_dnn_release(mxl_cuda_state *st);
void mxl_cuda_dnn_describe(const mxl_cuda_state *st, char *buf, size_t size);

/* The compute ops of each family (ops_<family>.cu over ops_<family>.cuh). */
void mxl_cuda_fill_dense(mxl_ops *ops);
void mxl_cuda_fill_attention(mxl_ops *ops);
void mxl_cuda_fill_moe(mxl_ops *ops);
void mxl_cuda_fill_loss(mxl_ops *ops);
void mxl_cuda_fill_lora(mxl_ops *ops);

#endif
