/* The tile walk of the grouped (MoE) products: the rows of C are a plan's
 * grouped rows, and a tile never straddles two experts: expert e's rows
 * [offsets[e], offsets[e+1]) are cut into ceil(count/64) tiles, numbered
 * in expert order; a block finds its tile by walking the offsets
 * (E <= a few hundred). The launcher counts the tiles from the host copy
 * of the offsets. Used by the MXFP4 grouped GEMM (mxfp4_gemm.cuh); with
 * offsets NULL the walk is a plain one over M rows. */
#ifndef MXL_KERNELS_CUDA_GEMM_CUH
#define MXL_KERNELS_CUDA_GEMM_CUH

#include "kernels/cuda/runtime.cuh"

enum { MXL_GEMM_TM = 64 }; /* rows per tile */

/* How blocks map to tiles. */
struct mxl_gemm_grid {
  int64_t M;              /* rows of C (plain) */
  int64_t tiles_n;        /* ceil(N / 64) */
  const int32_t *offsets; /* grouped: [E+1] backend memory; NULL: plain */
  int n_experts;
};

/* The rows [begin, end) of expert `expert` that M-tile `tile_m` covers;
 * false when the tile is past the last one. */
struct mxl_gemm_rows {
  int64_t begin, end;
  int expert;
};

MXL_DEVICE bool mxl_gemm_tile_rows(const mxl_gemm_grid &g, int64_t tile_m, mxl_gemm_rows *r) {
  if (!g.offsets) {
    r->begin = tile_m * MXL_GEMM_TM;
    r->end = r->begin + MXL_GEMM_TM < g.M ? r->begin + MXL_GEMM_TM : g.M;
    r->expert = 0;
    return r->begin < g.M;
  }
  for (int e = 0; e < g.n_experts; e++) {
    int64_t lo = g.offsets[e], hi = g.offsets[e + 1];
    int64_t tiles = hi > lo ? (hi - lo + MXL_GEMM_TM - 1) / MXL_GEMM_TM : 0;
    if (tile_m < tiles) {
      r->begin = lo + tile_m * MXL_GEMM_TM;
      r->end = r->begin + MXL_GEMM_TM < hi ? r->begin + MXL_GEMM_TM : hi;
      r->expert = e;
      return true;
    }
    tile_m -= tiles;
  }
  return false;
}

#endif
