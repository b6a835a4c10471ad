/* The dense ops of the CUDA backend: the kernels and op functions of
 * ops_dense.cuh (shared with the emulator build), compiled for the device. */
#include "kernels/cuda/backend_internal.cuh"
#include "kernels/cuda/ops_dense.cuh"

void mxl_cuda_fill_dense(mxl_ops *ops) { mxl_cu_fill_dense(ops); }

bool mxl_cuda_blas_init(mxl_cuda_state *st) { return mxl_cu_blas_init(st); }

void mxl_cuda_blas_release(mxl_cuda_state *st) { mxl_cu_blas_release(st); }
