/* The one tiled matrix product every matmul of the backend runs on:
 *   C[i, j] (op)= Σ_p A[i, p]·B[p, j]    i < M (or an expert's rows), j < N, p < K
 * with fp32 accumulation. What A, B and C are (fp32 activations, bf16 or
 * MXFP4 weights decoded element by element, bias, "+=", alpha/beta) is an
 * operand struct `Op` with
 *   N, K                      sizes;
 *   A_K_CONTIG, B_K_CONTIG    whether consecutive p are adjacent in memory
 *                             (chooses the coalesced tile-load order);
 *   a(e, i, p), b(e, p, j)    one element of A, of B for expert e;
 *   store(e, i, j, acc)       the epilogue of one output.
 * The bf16 operand structs are below (matmul_bf16, its dx and unembed_xent
 * share them); the others live next to their ops (ops_dense.cuh gemm_f32,
 * ops_moe.cuh MXFP4).
 *
 * Tiles: a block of 256 threads computes a 64 x 64 tile of C, stepping
 * through K by 32 with both operands staged in shared memory (padded by one
 * column so that neither the staging stores nor the reads conflict); each
 * thread owns a 4 x 4 micro-tile strided by 16, so a warp reads 16
 * consecutive B values and 2 broadcast A values per step.
 *
 * Grouped (MoE) products: the rows of C are the plan's grouped rows, and a
 * tile never straddles two experts: expert e's rows [offsets[e],
 * offsets[e+1]) are cut into ceil(count/64) tiles, numbered in expert order;
 * a block finds its tile by walking the offsets (E <= a few hundred). The
 * launcher counts the tiles from the host copy of the offsets.
 *
 * CPU reference: every matmul of kernels/ref (ref_dense.h mxl_ref_matmul_bf16,
 * _dx, mxl_ref_gemm; ref_moe.h mxl_ref_mxfp4_matmul, _dx; ref_loss.h). */
#ifndef MXL_KERNELS_CUDA_GEMM_CUH
#define MXL_KERNELS_CUDA_GEMM_CUH

#include "kernels/cuda/runtime.cuh"

enum { MXL_GEMM_TM = 64, MXL_GEMM_TN = 64, MXL_GEMM_TK = 32, MXL_GEMM_THREADS = 256 };

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

template <class Op>
MXL_GLOBAL void mxl_gemm_kernel(Op op, mxl_gemm_grid g) {
  enum { TM = MXL_GEMM_TM, TN = MXL_GEMM_TN, TK = MXL_GEMM_TK, THREADS = MXL_GEMM_THREADS };
  MXL_SHARED float As[TK][TM + 1]; /* As[p][i] = A[begin + i, p0 + p] */
  MXL_SHARED float Bs[TK][TN + 1]; /* Bs[p][j] = B[p0 + p, j0 + j] */
  int64_t tile_n = MXL_BLOCK_X % g.tiles_n, tile_m = MXL_BLOCK_X / g.tiles_n;
  mxl_gemm_rows rows;
  if (!mxl_gemm_tile_rows(g, tile_m, &rows)) return; /* the whole block: no barrier skipped */
  const int64_t j0 = tile_n * TN;
  const int t = (int)MXL_THREAD_X, tx = t % 16, ty = t / 16;
  float acc[4][4];
  MXL_UNROLL for (int v = 0; v < 4; v++) MXL_UNROLL for (int u = 0; u < 4; u++) acc[v][u] = 0.0f;

  for (int64_t p0 = 0; p0 < op.K; p0 += TK) {
    for (int l = t; l < TK * TM; l += THREADS) {
      int p = Op::A_K_CONTIG ? l % TK : l / TM, i = Op::A_K_CONTIG ? l / TK : l % TM;
      int64_t gi = rows.begin + i, gp = p0 + p;
      As[p][i] = (gi < rows.end && gp < op.K) ? op.a(rows.expert, gi, gp) : 0.0f;
    }
    for (int l = t; l < TK * TN; l += THREADS) {
      int p = Op::B_K_CONTIG ? l % TK : l / TN, j = Op::B_K_CONTIG ? l / TK : l % TN;
      int64_t gj = j0 + j, gp = p0 + p;
      Bs[p][j] = (gj < op.N && gp < op.K) ? op.b(rows.expert, gp, gj) : 0.0f;
    }
    MXL_SYNC();
    MXL_UNROLL for (int p = 0; p < TK; p++) {
      float a[4], b[4];
      MXL_UNROLL for (int v = 0; v < 4; v++) a[v] = As[p][ty + 16 * v];
      MXL_UNROLL for (int u = 0; u < 4; u++) b[u] = Bs[p][tx + 16 * u];
      MXL_UNROLL for (int v = 0; v < 4; v++) MXL_UNROLL for (int u = 0; u < 4; u++)
        acc[v][u] = fmaf(a[v], b[u], acc[v][u]);
    }
    MXL_SYNC();
  }
  MXL_UNROLL for (int v = 0; v < 4; v++) MXL_UNROLL for (int u = 0; u < 4; u++) {
    int64_t gi = rows.begin + ty + 16 * v, gj = j0 + tx + 16 * u;
    if (gi < rows.end && gj < op.N) op.store(rows.expert, gi, gj, acc[v][u]);
  }
}

/* ---- bf16 weight operands (matmul_bf16, its dx, unembed_xent) ---- */

/* y [M, ldy] = x [M, K]·Wᵀ + bias — W bf16 [N, K] (row j at w + j·K),
 * bias bf16 [N] or NULL. Also the logits of unembed_xent (a slice of W). */
struct mxl_op_linear_bf16 {
  static constexpr bool A_K_CONTIG = true, B_K_CONTIG = true;
  int64_t N, K;
  const float *x;
  const uint16_t *w, *bias;
  float *y;
  int64_t ldy;
  MXL_DEVICE float a(int, int64_t i, int64_t p) const { return x[i * K + p]; }
  MXL_DEVICE float b(int, int64_t p, int64_t j) const { return mxl_cu_bf16(w[j * K + p]); }
  MXL_DEVICE void store(int, int64_t i, int64_t j, float acc) const {
    y[i * ldy + j] = bias ? acc + mxl_cu_bf16(bias[j]) : acc;
  }
};

/* dx [M, N] += dy [M, lda]·W — W bf16 [K, N] (row p at w + p·N); dy's
 * first K columns are used. Also unembed_xent's probabilities·W. */
struct mxl_op_linear_bf16_dx {
  static constexpr bool A_K_CONTIG = true, B_K_CONTIG = false;
  int64_t N, K;
  const float *dy;
  int64_t lda;
  const uint16_t *w;
  float *dx;
  MXL_DEVICE float a(int, int64_t i, int64_t p) const { return dy[i * lda + p]; }
  MXL_DEVICE float b(int, int64_t p, int64_t j) const { return mxl_cu_bf16(w[p * N + j]); }
  MXL_DEVICE void store(int, int64_t i, int64_t j, float acc) const { dx[i * N + j] += acc; }
};

/* Runs a plain product of M rows. */
template <class Op>
static void mxl_cu_gemm(mxl_backend *be, const char *name, const Op &op, int64_t M) {
  if (M <= 0 || op.N <= 0) return;
  mxl_gemm_grid g = {M, (op.N + MXL_GEMM_TN - 1) / MXL_GEMM_TN, NULL, 0};
  int64_t blocks = g.tiles_n * ((M + MXL_GEMM_TM - 1) / MXL_GEMM_TM);
  mxl_cu_launched(be, name,
                  MXL_LAUNCH(mxl_gemm_kernel<Op>, (unsigned)blocks, MXL_GEMM_THREADS, 0,
                             mxl_cu_state(be)->stream, op, g));
}

/* Runs a grouped product over a plan's experts: offsets [E+1] (backend
 * memory) and offsets_host (the same, host). */
template <class Op>
static void mxl_cu_gemm_grouped(mxl_backend *be, const char *name, const Op &op,
                                const int32_t *offsets, const int32_t *offsets_host, int E) {
  int64_t tiles_m = 0;
  for (int e = 0; e < E; e++) {
    int64_t count = (int64_t)offsets_host[e + 1] - offsets_host[e];
    if (count > 0) tiles_m += (count + MXL_GEMM_TM - 1) / MXL_GEMM_TM;
  }
  if (tiles_m == 0 || op.N <= 0) return;
  mxl_gemm_grid g = {0, (op.N + MXL_GEMM_TN - 1) / MXL_GEMM_TN, offsets, E};
  mxl_cu_launched(be, name,
                  MXL_LAUNCH(mxl_gemm_kernel<Op>, (unsigned)(g.tiles_n * tiles_m),
                             MXL_GEMM_THREADS, 0, mxl_cu_state(be)->stream, op, g));
}

#endif
