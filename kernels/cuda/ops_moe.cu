/* The MoE ops of the CUDA backend: the kernels and op functions of
 * ops_moe.cuh (shared with the emulator build), compiled for the device. */
#include "kernels/cuda/backend_internal.cuh"
#include "kernels/cuda/ops_moe.cuh"

void mxl_cuda_fill_moe(mxl_ops *ops) { mxl_cu_fill_moe(ops); }
