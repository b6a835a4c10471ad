/* The CUDA backend's compute ops on the CPU emulator, as an ordinary
 * backend that C tests can compare with the reference
 * (tests/cuda/cuda_emu_backend.cpp). Test code: not part of the library.
 *
 * Its compute ops are the very kernels and op functions of kernels/cuda
 * (ops_*.cuh), compiled for the host with kernels/cuda/emulator.h. With
 * host_memory 0 its memory is device memory as a GPU's is: host code that
 * reads or writes it other than through upload/download/copy/zero (a
 * device pointer handed to host code) faults, and the test stops with a
 * message saying so. Single-threaded: the emulator's scheduler, its shared
 * memory and the device memory's guard are process-wide. */
#ifndef MXL_TESTS_CUDA_CUDA_EMU_BACKEND_H
#define MXL_TESTS_CUDA_CUDA_EMU_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The order in which a block's threads run between barriers. */
typedef enum mxl_emu_order {
  MXL_EMU_FORWARD = 0,
  MXL_EMU_REVERSE = 1,
  MXL_EMU_SHUFFLE = 2, /* seeded */
} mxl_emu_order;

/* host_memory 0: device memory, and the table says so as the device
 * backend does; 1: host memory (malloc), and the table says so, so an
 * engine uses mapped weights in place and host code may touch it (the op
 * driver's mutants). */
mxl_status mxl_backend_cuda_emu_create(int host_memory, mxl_backend **out);

/* Sets the thread order of every later launch (all emulated backends). */
void mxl_cuda_emu_set_order(mxl_emu_order order, uint64_t seed);

/* unembed_xent's vocabulary rows per chunk on `be` (0 = the backend's
 * automatic size), to exercise several chunks at test sizes. */
void mxl_cuda_emu_set_xent_chunk(mxl_backend *be, int64_t rows);

/* The device memory `be` holds now and held at most: every alloc, its
 * scratch and the cuBLASLt workspace (what `mxlora plan` accounts). */
void mxl_cuda_emu_memory(mxl_backend *be, size_t *now, size_t *peak);

/* Attention through cuDNN's graph API (kernels/cuda/cudnn_attention.cuh)
 * on `be`, against the CPU stand-ins of tests/cuda/cudnn_standin.cpp; off
 * by default, so the other emulated tests run the own kernels. */
mxl_status mxl_cuda_emu_use_cudnn(mxl_backend *be);

/* Plants a mistake in the graph the backend builds from now on (enum
 * mxl_dnn_plant of cudnn_attention.cuh; 0: none). */
void mxl_cuda_emu_cudnn_plant(mxl_backend *be, int mistake);

/* 1: calls against a KV cache (nq != nk) through cuDNN too, which the
 * backend leaves to its own kernels by policy (cudnn_attention.cuh). */
void mxl_cuda_emu_cudnn_any_shape(mxl_backend *be, int yes);

/* Attention calls run by cuDNN, those given to the own kernels, and
 * why the last refused shape was refused (valid until the next op). */
void mxl_cuda_emu_cudnn_counts(mxl_backend *be, long long *executed, long long *fell_back,
                               const char **refusal);

/* The line `mxlora version` prints for a CUDA backend's attention path. */
void mxl_cuda_emu_describe_attention(mxl_backend *be, char *buf, size_t size);

#ifdef __cplusplus
}
#endif

#endif
