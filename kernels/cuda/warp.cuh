/* Warp-level instructions of the tensor-core kernels, written once: inline
 * PTX on the device (sm_80 and newer: every architecture of the build) and
 * the CPU emulator's versions (kernels/cuda/emulator.h, which documents the
 * fragment layouts with their PTX ISA sections) under MXL_CUDA_EMULATE.
 *
 *   mxl_mma_bf16_16816(d, a, b, c)   mma.sync.aligned.m16n8k16.row.col
 *                                    .f32.bf16.bf16.f32: d = a·b + c, one
 *                                    16x8 fp32 tile per warp;
 *   mxl_ldmatrix_x{1,2,4}[_trans]    ldmatrix.sync.aligned.m8n8 .b16 from
 *                                    shared memory (row addresses from lanes
 *                                    0-7, 0-15, 0-31, 16-byte aligned);
 *   mxl_cp_async16(dst, src, n)      cp.async.cg 16 bytes global -> shared,
 *                                    the last 16 - n of them zero-filled;
 *   mxl_cp_async_commit()            cp.async.commit_group;
 *   mxl_cp_async_wait<N>()           cp.async.wait_group N (this thread's
 *                                    copies; a barrier must follow before
 *                                    other threads read them);
 *   mxl_shfl_xor(v, mask)            __shfl_xor_sync over the full warp;
 *   mxl_pack_bf16x2(lo, hi)          two floats as bf16 (round to nearest
 *                                    even) in one register, lo in the low
 *                                    half, as the fragments want.
 * Every lane of the warp must execute the warp instructions together
 * (.aligned): the emulator stops a launch where they do not. */
#ifndef MXL_KERNELS_CUDA_WARP_CUH
#define MXL_KERNELS_CUDA_WARP_CUH

#include <stdint.h>

#include "kernels/cuda/common.cuh"

#ifndef MXL_CUDA_EMULATE
#include <cuda_bf16.h>

MXL_DEVICE uint32_t mxl_smem_addr(const void *p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}
#endif

MXL_DEVICE void mxl_mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2],
                                   const float c[4]) {
#ifdef MXL_CUDA_EMULATE
  mxl_emu::mma_m16n8k16_bf16(d, a, b, c);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
#endif
}

MXL_DEVICE void mxl_ldmatrix_x1(uint32_t r[1], const void *row) {
#ifdef MXL_CUDA_EMULATE
  mxl_emu::ldmatrix(r, 1, false, row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n"
               : "=r"(r[0])
               : "r"(mxl_smem_addr(row)));
#endif
}

MXL_DEVICE void mxl_ldmatrix_x2(uint32_t r[2], const void *row) {
#ifdef MXL_CUDA_EMULATE
  mxl_emu::ldmatrix(r, 2, false, row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(mxl_smem_addr(row)));
#endif
}

MXL_DEVICE void mxl_ldmatrix_x4(uint32_t r[4], const void *row) {
#ifdef MXL_CUDA_EMULATE
  mxl_emu::ldmatrix(r, 4, false, row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(mxl_smem_addr(row)));
#endif
}

MXL_DEVICE void mxl_ldmatrix_x1_trans(uint32_t r[1], const void *row) {
#ifdef MXL_CUDA_EMULATE
  mxl_emu::ldmatrix(r, 1, true, row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
               : "=r"(r[0])
               : "r"(mxl_smem_addr(row)));
#endif
}

MXL_DEVICE void mxl_ldmatrix_x2_trans(uint32_t r[2], const void *row) {
#ifdef MXL_CUDA_EMULATE
  mxl_emu::ldmatrix(r, 2, true, row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(mxl_smem_addr(row)));
#endif
}

MXL_DEVICE void mxl_ldmatrix_x4_trans(uint32_t r[4], const void *row) {
#ifdef MXL_CUDA_EMULATE
  mxl_emu::ldmatrix(r, 4, true, row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(mxl_smem_addr(row)));
#endif
}

/* 16 bytes from global src to shared dst (both 16-byte aligned); only the
 * first src_bytes (0..16) are read, the rest of dst becomes zero. */
MXL_DEVICE void mxl_cp_async16(void *dst, const void *src, int src_bytes) {
#ifdef MXL_CUDA_EMULATE
  mxl_emu::cp_async(dst, src, 16, (unsigned)src_bytes);
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(mxl_smem_addr(dst)),
               "l"(src), "r"(src_bytes)
               : "memory");
#endif
}

MXL_DEVICE void mxl_cp_async_commit(void) {
#ifdef MXL_CUDA_EMULATE
  mxl_emu::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int PENDING>
MXL_DEVICE void mxl_cp_async_wait(void) {
#ifdef MXL_CUDA_EMULATE
  mxl_emu::cp_async_wait(PENDING);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING) : "memory");
#endif
}

MXL_DEVICE float mxl_shfl_xor(float v, int lane_mask) {
#ifdef MXL_CUDA_EMULATE
  return mxl_emu::shfl_xor(v, lane_mask);
#else
  return __shfl_xor_sync(0xffffffffu, v, lane_mask);
#endif
}

MXL_DEVICE uint32_t mxl_pack_bf16x2(float lo, float hi) {
#ifdef MXL_CUDA_EMULATE
  return (mxl_cu_bf16_bits(lo) & 0xFFFFu) | (mxl_cu_bf16_bits(hi) << 16);
#else
  __nv_bfloat162 p = __floats2bfloat162_rn(lo, hi); /* .x = lo: the low half */
  uint32_t out;
  __builtin_memcpy(&out, &p, 4);
  return out;
#endif
}

/* x rounded to the nearest bf16 (as mxl_pack_bf16x2 rounds), as a float. */
MXL_DEVICE float mxl_cu_bf16_round(float x) {
  return mxl_cu_bf16((uint16_t)(mxl_pack_bf16x2(x, 0.0f) & 0xFFFFu));
}

#endif
