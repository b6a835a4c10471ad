/* The loss ops of the CUDA backend: the kernels and op functions of
 * ops_loss.cuh (shared with the emulator build), compiled for the device. */
#include "kernels/cuda/backend_internal.cuh"
#include "kernels/cuda/ops_loss.cuh"

void mxl_cuda_fill_loss(mxl_ops *ops) { mxl_cu_fill_loss(ops); }
