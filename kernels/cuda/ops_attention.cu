/* The attention ops of the CUDA backend: the kernels and op functions of
 * ops_attention.cuh (shared with the emulator build), compiled for the device. */
#include "kernels/cuda/backend_internal.cuh"
#include "kernels/cuda/ops_attention.cuh"

void mxl_cuda_fill_attention(mxl_ops *ops) { mxl_cu_fill_attention(ops); }
