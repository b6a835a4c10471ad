/* The segmented LoRA ops of the CUDA backend: the kernels and op functions
 * of ops_lora.cuh (shared with the emulator build), compiled for the
 * device. */
#include "kernels/cuda/backend_internal.cuh"
#include "kernels/cuda/ops_lora.cuh"

void mxl_cuda_fill_lora(mxl_ops *ops) { mxl_cu_fill_lora(ops); }
