/* Shared by every CUDA kernel header: the one launch macro and the thread
 * index helpers.
 *
 * Kernels are written once in headers (*.cuh) that are valid CUDA for nvcc
 * and, later, C++ for the CPU emulator (design/CUDA-TESTING.md). Two rules
 * make that possible:
 *   - launches go through MXL_LAUNCH, never through <<<>>> directly, so the
 *     emulator can replace the launch with its fiber scheduler;
 *   - kernels read their coordinates through the MXL_* index macros below.
 *   - barriers are MXL_SYNC() and shared arrays MXL_SHARED, never the raw
 *     __syncthreads / __shared__.
 * kernels/cuda/emulator.h defines MXL_CUDA_EMULATE and its own versions of
 * these macros; it is included before any kernel header. */
#ifndef MXL_KERNELS_CUDA_COMMON_CUH
#define MXL_KERNELS_CUDA_COMMON_CUH

#include <stdint.h>

#ifndef MXL_CUDA_EMULATE
#include <cuda_runtime.h>

/* Launches `kernel` on `grid` x `block` threads with `smem` bytes of dynamic
 * shared memory on `stream`; the launch error is read with
 * cudaGetLastError() by the caller. */
#define MXL_LAUNCH(kernel, grid, block, smem, stream, ...) \
  kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)

#define MXL_GLOBAL __global__
#define MXL_DEVICE __device__ __forceinline__
#define MXL_SHARED __shared__
#define MXL_SYNC() __syncthreads()
#define MXL_THREAD_X ((int64_t)threadIdx.x)
#define MXL_BLOCK_X ((int64_t)blockIdx.x)
#define MXL_BLOCK_DIM_X ((int64_t)blockDim.x)
#define MXL_GRID_DIM_X ((int64_t)gridDim.x)
#endif

#endif
