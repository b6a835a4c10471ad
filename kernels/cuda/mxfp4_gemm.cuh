/* MXFP4 grouped matmuls on tensor cores (W4A16): ops.h's mxfp4_matmul
 * (y = x·W_eᵀ + b_e) and mxfp4_matmul_dx (dx += dy·W_e) for the grouped rows
 * of each expert, one path for sm_80 … sm_120. No bf16 × fp4 MMA exists on
 * those GPUs, and quantizing the activations would change the math, so the
 * weights are decoded to bf16 in shared memory, once per tile, and the
 * product runs on mma.sync m16n8k16 (bf16 → fp32) fed by ldmatrix
 * (kernels/cuda/warp.cuh). CPU reference: kernels/ref/ref_moe.h
 * mxl_ref_mxfp4_matmul, _dx.
 *
 * Tiles: a block of 128 threads (4 warps, 2 x 2, each 32 x 32 outputs)
 * computes 64 grouped rows x 64 output columns, stepping through the
 * reduction by 64. Per step:
 *   - the MXFP4 bytes of the step after next's weight rectangle (64 W rows
 *     x 2 blocks of 32) go global → shared with cp.async, double-buffered,
 *     so the copy overlaps this step's math;
 *   - the activation tile (fp32, the op boundary dtype of ops.h) is read,
 *     rounded to bf16 and stored in shared memory;
 *   - each thread decodes one 32-value block (16 bytes + its E8M0 scale)
 *     into the bf16 weight tile: the decode happens once per tile, not per
 *     use;
 *   - 4 k16 steps of 8 mma per warp, operands through ldmatrix.
 * The weight rectangle sits in shared memory as [W row][W col] in both
 * directions: the forward reads it with ldmatrix (B = Wᵀ, "col" operand:
 * W rows are the output columns), the backward with ldmatrix.trans (B = W:
 * W rows are the reduction). Rows are padded to 72 bf16 (144 bytes), so the
 * eight 16-byte rows of every ldmatrix land in distinct banks.
 *
 * Expert weights whose blocks are not 16-byte aligned (metal's layout packs
 * blocks, scales and bias per expert) are staged with ordinary loads
 * instead of cp.async; everything else is the same.
 *
 * Decode (few rows per expert, as in generation): mxl_mx_gemv_kernel, one
 * warp per output row, reads each weight block once with 16-byte loads and
 * multiplies it with every routed row of the expert (activations rounded to
 * bf16 like the GEMM's, fp32 arithmetic; no tensor cores: the product is
 * bound by the weight bytes). */
#ifndef MXL_KERNELS_CUDA_MXFP4_GEMM_CUH
#define MXL_KERNELS_CUDA_MXFP4_GEMM_CUH

#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/runtime.cuh"
#include "kernels/cuda/warp.cuh"
#include "kernels/mxfp4.h"

enum {
  MXL_MX_BM = 64,      /* grouped rows per tile (MXL_GEMM_TM: the expert tile walk) */
  MXL_MX_BN = 64,      /* output columns per tile */
  MXL_MX_BK = 64,      /* reduction per step: two MXFP4 blocks */
  MXL_MX_THREADS = 128,
  MXL_MX_LD = 72,      /* shared row stride in bf16 */
  MXL_MX_GEMV_MAX_ROWS = 8, /* an expert with more rows takes the GEMM */
};
static_assert((int)MXL_MX_BM == (int)MXL_GEMM_TM, "the expert tile walk of gemm.cuh");

/* The bf16 tiles hold pairs of bf16 per 32-bit word (the low half first, as
 * the fragments): element (r, c) is half c % 2 of word [r][c / 2]. */
struct alignas(16) mxl_mx_smem {
  uint32_t a[MXL_MX_BM][MXL_MX_LD / 2]; /* activations [tile row][k] */
  uint32_t w[64][MXL_MX_LD / 2];        /* weights [W row][W col] of the rectangle */
  uint8_t raw[2][64][2][16];            /* MXFP4 bytes [buffer][W row][block] */
};

struct mxl_mx_args {
  const float *a; /* activations [rows, K] (x or dy), row stride lda */
  int64_t lda;
  float *c; /* output [rows, N], row stride ldc */
  int64_t ldc;
  mxl_mxfp4_weight w;
  int64_t N, K;   /* output columns, reduction */
  int cp_async;   /* blocks 16-byte aligned for every expert */
};

/* One expert's MXFP4 data. */
struct mxl_mx_expert {
  const uint8_t *blocks, *scales;
  int64_t groups; /* blocks per W row */
};

MXL_DEVICE mxl_mx_expert mxl_mx_expert_of(const mxl_mxfp4_weight &w, int e) {
  mxl_mx_expert x;
  x.blocks = w.blocks + (size_t)e * w.blocks_stride;
  x.scales = w.scales + (size_t)e * w.scales_stride;
  x.groups = w.cols / MXL_MXFP4_BLOCK;
  return x;
}

/* Thread t stages block (t % 2) of W row row0 + t / 2, starting at block
 * blk0, into raw[t / 2][t % 2]; rows and blocks past the matrix are zeros. */
MXL_DEVICE void mxl_mx_stage(uint8_t (*raw)[2][16], const mxl_mx_args &p,
                             const mxl_mx_expert &x, int64_t row0, int64_t blk0) {
  const int t = (int)MXL_THREAD_X, r = t / 2, b = t % 2;
  const int64_t row = row0 + r, blk = blk0 + b;
  const bool valid = row < p.w.rows && blk < x.groups;
  const uint8_t *src = valid ? x.blocks + (row * x.groups + blk) * MXL_MXFP4_BLOCK_BYTES : x.blocks;
  if (p.cp_async) {
    mxl_cp_async16(raw[r][b], src, valid ? 16 : 0);
  } else {
    for (int i = 0; i < 16; i++) raw[r][b][i] = valid ? src[i] : 0;
  }
}

/* Thread t decodes raw[t / 2][t % 2] into w[t / 2][32·(t % 2) ..] as bf16. */
MXL_DEVICE void mxl_mx_decode(uint32_t (*w)[MXL_MX_LD / 2], const uint8_t (*raw)[2][16],
                              const mxl_mx_args &p, const mxl_mx_expert &x, int64_t row0,
                              int64_t blk0) {
  const int t = (int)MXL_THREAD_X, r = t / 2, b = t % 2;
  const int64_t row = row0 + r, blk = blk0 + b;
  const bool valid = row < p.w.rows && blk < x.groups;
  const float scale = valid ? mxl_e8m0_scale(x.scales[row * x.groups + blk], p.w.scale_bias) : 0.0f;
  MXL_UNROLL for (int i = 0; i < 16; i++) {
    unsigned byte = raw[r][b][i];
    w[r][16 * b + i] = valid ? mxl_pack_bf16x2(mxl_e2m1_value(byte & 0x0Fu) * scale,
                                               mxl_e2m1_value(byte >> 4) * scale)
                             : 0u;
  }
}

/* The activation tile: rows [begin, end) x reduction [p0, p0 + 64) as bf16,
 * zeros outside. Thread t takes column pair 2·(t % 32) of rows t/32 + 4s. */
MXL_DEVICE void mxl_mx_load_a(uint32_t (*a)[MXL_MX_LD / 2], const mxl_mx_args &p,
                              const mxl_gemm_rows &rows, int64_t p0) {
  const int t = (int)MXL_THREAD_X, kp = 2 * (t % 32);
  for (int i = t / 32; i < MXL_MX_BM; i += MXL_MX_THREADS / 32) {
    const int64_t gi = rows.begin + i, k = p0 + kp;
    float v0 = 0.0f, v1 = 0.0f;
    if (gi < rows.end) {
      const float *src = p.a + gi * p.lda;
      if (k < p.K) v0 = src[k];
      if (k + 1 < p.K) v1 = src[k + 1];
    }
    a[i][kp / 2] = mxl_pack_bf16x2(v0, v1);
  }
}

/* DX = false: c = a·W_eᵀ + b_e (W rows are the output columns);
 * DX = true:  c += a·W_e (W rows are the reduction). */
template <bool DX>
MXL_GLOBAL void mxl_mx_gemm_kernel(mxl_mx_args p, mxl_gemm_grid g) {
  MXL_SHARED mxl_mx_smem s;
  const int64_t tile_n = MXL_BLOCK_X % g.tiles_n, tile_m = MXL_BLOCK_X / g.tiles_n;
  mxl_gemm_rows rows;
  if (!mxl_gemm_tile_rows(g, tile_m, &rows)) return; /* the whole block */
  const mxl_mx_expert x = mxl_mx_expert_of(p.w, rows.expert);
  const int64_t j0 = tile_n * MXL_MX_BN;
  const int t = (int)MXL_THREAD_X, lane = t % 32, warp = t / 32;
  const int wm = warp % 2, wn = warp / 2, q = lane / 8, r8 = lane % 8;
  /* The weight rectangle of reduction step p0: its first W row and block. */
  auto rect_row0 = [&](int64_t p0) { return DX ? p0 : j0; };
  auto rect_blk0 = [&](int64_t p0) { return (DX ? j0 : p0) / MXL_MXFP4_BLOCK; };

  float acc[2][4][4];
  MXL_UNROLL for (int mi = 0; mi < 2; mi++) MXL_UNROLL for (int nj = 0; nj < 4; nj++)
    MXL_UNROLL for (int i = 0; i < 4; i++) acc[mi][nj][i] = 0.0f;

  const int64_t steps = (p.K + MXL_MX_BK - 1) / MXL_MX_BK;
  mxl_mx_stage(s.raw[0], p, x, rect_row0(0), rect_blk0(0));
  mxl_cp_async_commit();
  for (int64_t step = 0; step < steps; step++) {
    const int64_t p0 = step * MXL_MX_BK;
    const int buf = (int)(step % 2);
    if (step + 1 < steps) /* raw[buf ^ 1] was last read before the previous step's barriers */
      mxl_mx_stage(s.raw[buf ^ 1], p, x, rect_row0(p0 + MXL_MX_BK), rect_blk0(p0 + MXL_MX_BK));
    mxl_cp_async_commit(); /* possibly empty: wait<1> below always means "this step's" */
    mxl_mx_load_a(s.a, p, rows, p0);
    mxl_cp_async_wait<1>();
    MXL_SYNC(); /* every thread's raw copies and activation values are in */
    mxl_mx_decode(s.w, s.raw[buf], p, x, rect_row0(p0), rect_blk0(p0));
    MXL_SYNC();
    MXL_UNROLL for (int ks = 0; ks < MXL_MX_BK / 16; ks++) {
      uint32_t af[2][4], bfr[4][2];
      MXL_UNROLL for (int mi = 0; mi < 2; mi++)
        mxl_ldmatrix_x4(af[mi], &s.a[wm * 32 + mi * 16 + (q & 1) * 8 + r8][ks * 8 + (q >> 1) * 4]);
      MXL_UNROLL for (int nj = 0; nj < 4; nj += 2) {
        uint32_t b4[4];
        const int n_row = wn * 32 + (nj + (q >> 1)) * 8;
        if (DX)
          mxl_ldmatrix_x4_trans(b4, &s.w[ks * 16 + (q & 1) * 8 + r8][n_row / 2]);
        else
          mxl_ldmatrix_x4(b4, &s.w[n_row + r8][ks * 8 + (q & 1) * 4]);
        bfr[nj][0] = b4[0];
        bfr[nj][1] = b4[1];
        bfr[nj + 1][0] = b4[2];
        bfr[nj + 1][1] = b4[3];
      }
      MXL_UNROLL for (int mi = 0; mi < 2; mi++) MXL_UNROLL for (int nj = 0; nj < 4; nj++)
        mxl_mma_bf16_16816(acc[mi][nj], af[mi], bfr[nj], acc[mi][nj]);
    }
    MXL_SYNC(); /* a and w are consumed */
  }
  mxl_cp_async_wait<0>(); /* the last (empty) group */

  const int group = lane / 4, tig = lane % 4;
  const uint16_t *bias = DX || !p.w.bias ? NULL : p.w.bias + (size_t)rows.expert * p.w.bias_stride;
  MXL_UNROLL for (int mi = 0; mi < 2; mi++) MXL_UNROLL for (int nj = 0; nj < 4; nj++)
    MXL_UNROLL for (int i = 0; i < 4; i++) {
      const int64_t gi = rows.begin + wm * 32 + mi * 16 + group + (i >= 2 ? 8 : 0);
      const int64_t gj = j0 + wn * 32 + nj * 8 + 2 * tig + (i & 1);
      if (gi >= rows.end || gj >= p.N) continue;
      float *out = &p.c[gi * p.ldc + gj];
      if (DX)
        *out += acc[mi][nj][i];
      else
        *out = bias ? acc[mi][nj][i] + mxl_cu_bf16(bias[gj]) : acc[mi][nj][i];
    }
}

/* ---------------------------------------------------------------- decode GEMV */

enum { MXL_MX_GEMV_THREADS = 128, MXL_MX_GEMV_OUTS = 16 /* output rows per block */ };

/* The non-empty expert `index` (0-based among experts with rows). */
MXL_DEVICE int mxl_mx_nonempty_expert(const int32_t *offsets, int n_experts, int64_t index) {
  for (int e = 0; e < n_experts; e++)
    if (offsets[e + 1] > offsets[e] && index-- == 0) return e;
  return -1;
}

/* y[i, j] = x[i]·W_e[j] + b_e[j] for the grouped rows i of one expert and
 * 16 output rows j; warp w takes j = j0 + w, j0 + w + 4, ... Each lane
 * reads whole 16-byte blocks (lane, lane + 32, ...), decodes them in fp32
 * and multiplies them with up to 4 activation rows at once; the xor
 * butterfly sums the lanes. */
MXL_GLOBAL void mxl_mx_gemv_kernel(mxl_mx_args p, const int32_t *offsets, int64_t tiles_j) {
  const int e = mxl_mx_nonempty_expert(offsets, p.w.n_experts, MXL_BLOCK_X / tiles_j);
  if (e < 0) return;
  const int64_t j_first = (MXL_BLOCK_X % tiles_j) * MXL_MX_GEMV_OUTS;
  const int lane = (int)(MXL_THREAD_X % 32), warp = (int)(MXL_THREAD_X / 32);
  const mxl_mx_expert x = mxl_mx_expert_of(p.w, e);
  const int64_t lo = offsets[e], hi = offsets[e + 1];
  const uint16_t *bias = p.w.bias ? p.w.bias + (size_t)e * p.w.bias_stride : NULL;
  for (int64_t j = j_first + warp; j < j_first + MXL_MX_GEMV_OUTS; j += MXL_MX_GEMV_THREADS / 32) {
    const bool live = j < p.N; /* dead warps still run the shuffles below (whole warps) */
    for (int64_t i0 = lo; i0 < hi; i0 += 4) {
      float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int64_t blk = lane; live && blk < x.groups; blk += 32) {
        const uint8_t *bytes = x.blocks + (j * x.groups + blk) * MXL_MXFP4_BLOCK_BYTES;
        const float scale = mxl_e8m0_scale(x.scales[j * x.groups + blk], p.w.scale_bias);
        float wv[32];
        MXL_UNROLL for (int i = 0; i < 16; i++) {
          unsigned byte = bytes[i];
          wv[2 * i] = mxl_e2m1_value(byte & 0x0Fu) * scale;
          wv[2 * i + 1] = mxl_e2m1_value(byte >> 4) * scale;
        }
        MXL_UNROLL for (int r = 0; r < 4; r++) {
          if (i0 + r >= hi) break;
          const float *xr = p.a + (i0 + r) * p.lda + blk * MXL_MXFP4_BLOCK;
          float s = sum[r];
          /* bf16 operands, as in the tensor-core path (ops.h): a row's
           * result does not depend on which path its batch takes beyond the
           * fp32 summation order. */
          MXL_UNROLL for (int c = 0; c < 32; c++) s = fmaf(wv[c], mxl_cu_bf16_round(xr[c]), s);
          sum[r] = s;
        }
      }
      MXL_UNROLL for (int r = 0; r < 4; r++)
        for (int m = 16; m > 0; m /= 2) sum[r] += mxl_shfl_xor(sum[r], m);
      if (live && lane == 0)
        for (int r = 0; r < 4 && i0 + r < hi; r++)
          p.c[(i0 + r) * p.ldc + j] = bias ? sum[r] + mxl_cu_bf16(bias[j]) : sum[r];
    }
  }
}

/* ---------------------------------------------------------------- launchers */

/* Whether every expert's blocks start 16-byte aligned (cp.async). */
static inline int mxl_mx_blocks_aligned(const mxl_mxfp4_weight *W) {
  return ((uintptr_t)W->blocks % 16 == 0) && (W->blocks_stride % 16 == 0);
}

/* The most grouped rows any expert has, and how many experts have rows. */
static inline void mxl_mx_expert_rows(const mxl_moe_plan *plan, int64_t *most, int64_t *nonempty,
                                      int64_t *tiles_m) {
  *most = *nonempty = *tiles_m = 0;
  for (int e = 0; e < plan->n_experts; e++) {
    int64_t count = (int64_t)plan->offsets_host[e + 1] - plan->offsets_host[e];
    if (count <= 0) continue;
    *most = count > *most ? count : *most;
    *nonempty += 1;
    *tiles_m += (count + MXL_MX_BM - 1) / MXL_MX_BM;
  }
}

template <bool DX>
static void mxl_cu_mx_gemm(mxl_backend *be, const char *name, const mxl_mx_args &p,
                           const mxl_moe_plan *plan, int64_t tiles_m) {
  mxl_gemm_grid g = {0, (p.N + MXL_MX_BN - 1) / MXL_MX_BN, plan->offsets, plan->n_experts};
  mxl_cu_launched(be, name,
                  MXL_LAUNCH(mxl_mx_gemm_kernel<DX>, (unsigned)(g.tiles_n * tiles_m),
                             MXL_MX_THREADS, 0, mxl_cu_state(be)->stream, p, g));
}

static void mxl_cu_mxfp4_matmul(mxl_backend *be, float *y, const float *x,
                                const mxl_mxfp4_weight *W, const mxl_moe_plan *plan) {
  int64_t most, nonempty, tiles_m;
  mxl_mx_expert_rows(plan, &most, &nonempty, &tiles_m);
  if (nonempty == 0 || W->rows <= 0) return;
  mxl_mx_args p = {x, W->cols, y, W->rows, *W, W->rows, W->cols, mxl_mx_blocks_aligned(W)};
  if (most <= MXL_MX_GEMV_MAX_ROWS) {
    int64_t tiles_j = (W->rows + MXL_MX_GEMV_OUTS - 1) / MXL_MX_GEMV_OUTS;
    mxl_cu_launched(be, "mxfp4_matmul",
                    MXL_LAUNCH(mxl_mx_gemv_kernel, (unsigned)(tiles_j * nonempty),
                               MXL_MX_GEMV_THREADS, 0, mxl_cu_state(be)->stream, p,
                               plan->offsets, tiles_j));
    return;
  }
  mxl_cu_mx_gemm<false>(be, "mxfp4_matmul", p, plan, tiles_m);
}

static void mxl_cu_mxfp4_matmul_dx(mxl_backend *be, float *dx, const float *dy,
                                   const mxl_mxfp4_weight *W, const mxl_moe_plan *plan) {
  int64_t most, nonempty, tiles_m;
  mxl_mx_expert_rows(plan, &most, &nonempty, &tiles_m);
  if (nonempty == 0 || W->cols <= 0) return;
  mxl_mx_args p = {dy, W->rows, dx, W->cols, *W, W->cols, W->rows, mxl_mx_blocks_aligned(W)};
  mxl_cu_mx_gemm<true>(be, "mxfp4_matmul_dx", p, plan, tiles_m);
}

#endif
