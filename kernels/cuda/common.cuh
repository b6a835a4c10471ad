/* Shared by every CUDA kernel header: the one launch macro, the thread
 * index helpers and the few device functions whose CUDA spelling the host
 * compiler lacks.
 *
 * Kernels are written once in headers (*.cuh) that are valid CUDA for nvcc
 * and C++ for the CPU emulator (docs/cuda-testing.md). The rules that
 * make that possible:
 *   - launches go through MXL_LAUNCH, never through <<<>>> directly, so the
 *     emulator can replace the launch with its fiber scheduler; its value is
 *     0 or an error code whose text MXL_LAUNCH_ERROR gives;
 *   - kernels read their coordinates through the MXL_* index macros below;
 *   - barriers are MXL_SYNC() and shared arrays MXL_SHARED, never the raw
 *     __syncthreads / __shared__; unrolled loops say MXL_UNROLL;
 *   - device-only intrinsics (bf16 bits, sincospi, atomics) go through the
 *     wrappers at the end of this file.
 * kernels/cuda/emulator.h defines MXL_CUDA_EMULATE and its own versions of
 * the macros; it is included before any kernel header. */
#ifndef MXL_KERNELS_CUDA_COMMON_CUH
#define MXL_KERNELS_CUDA_COMMON_CUH

#include <math.h>
#include <stdint.h>

#ifndef MXL_CUDA_EMULATE
#include <cuda_bf16.h>
#include <cuda_runtime.h>

/* Launches `kernel` on `grid` x `block` threads with `smem` bytes of dynamic
 * shared memory on `stream`; the value is the launch's cudaError_t as an int
 * (0 = launched). */
#define MXL_LAUNCH(kernel, grid, block, smem, stream, ...) \
  (kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__), (int)cudaGetLastError())
#define MXL_LAUNCH_ERROR(rc) cudaGetErrorString((cudaError_t)(rc))

/* Kernels have internal linkage: a header may be included by several
 * translation units without duplicate host stubs. */
#define MXL_GLOBAL static __global__
#define MXL_DEVICE __device__ __forceinline__
#define MXL_SHARED __shared__
#define MXL_SYNC() __syncthreads()
#define MXL_UNROLL _Pragma("unroll")
#define MXL_THREAD_X ((int64_t)threadIdx.x)
#define MXL_BLOCK_X ((int64_t)blockIdx.x)
#define MXL_BLOCK_DIM_X ((int64_t)blockDim.x)
#define MXL_GRID_DIM_X ((int64_t)gridDim.x)
#endif

/* Host and device (emulated: host) functions of the kernel headers. */
#ifdef MXL_CUDA_EMULATE
#define MXL_HOST_DEVICE inline
#else
#define MXL_HOST_DEVICE __host__ __device__ __forceinline__
#endif

/* A bf16 bit pattern as a float (exact). */
MXL_DEVICE float mxl_cu_bf16(uint16_t w) {
#ifdef MXL_CUDA_EMULATE
  uint32_t bits = (uint32_t)w << 16;
  float f;
  __builtin_memcpy(&f, &bits, sizeof f);
  return f;
#else
  return __uint_as_float((uint32_t)w << 16);
#endif
}

/* A float as bf16 bits, rounded to nearest even (NaN stays NaN): core/bf16.h's
 * rounding, and the device's own conversion instruction. */
MXL_DEVICE uint32_t mxl_cu_bf16_bits(float x) {
#ifdef MXL_CUDA_EMULATE
  uint32_t bits;
  __builtin_memcpy(&bits, &x, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (bits >> 16) | 0x40u;
  return (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
#else
  return __bfloat16_as_ushort(__float2bfloat16_rn(x));
#endif
}

/* sin(πx) and cos(πx). CUDA's sincospif has no large-argument path (sinf
 * and cosf fall back to double precision there, which the build forbids);
 * the emulator, having no sincospif, evaluates it in double, which is within
 * CUDA's documented 1-2 ulp of it. */
MXL_DEVICE void mxl_cu_sincospi(float x, float *s, float *c) {
#ifdef MXL_CUDA_EMULATE
  const double pi = 3.14159265358979323846;
  *s = (float)sin(pi * (double)x);
  *c = (float)cos(pi * (double)x);
#else
  sincospif(x, s, c);
#endif
}

/* *p |= v as one atomic operation; returns the old value. The emulator's
 * fibers never preempt one another, so a plain read-modify-write is atomic
 * there. (An OR of flags gives the same result in any order.) */
MXL_DEVICE int mxl_atomic_or(int *p, int v) {
#ifdef MXL_CUDA_EMULATE
  int old = *p;
  *p = old | v;
  return old;
#else
  return atomicOr(p, v);
#endif
}

/* Grid-stride loop over [0, n): every thread of every block. */
#define MXL_FOR_EACH(i, n)                                                           \
  for (int64_t i = MXL_BLOCK_X * MXL_BLOCK_DIM_X + MXL_THREAD_X; i < (int64_t)(n); \
       i += MXL_BLOCK_DIM_X * MXL_GRID_DIM_X)

#endif
