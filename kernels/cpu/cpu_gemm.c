/* CPU backend gemm_f32 (kernels/ops.h): C = alpha·op(A)·op(B) + beta·C in
 * fp32, the LoRA products. LoRA calls it thousands of times per training
 * step with one dimension equal to the rank (4-64) and another of a few
 * thousand: x·Aᵀ, z·Bᵀ, and in the backward dyᵀ·z, dy·B, dzᵀ·x, dz·A.
 *
 * Two kernels of the ISA table serve every shape without a transposed copy
 * of a whole operand:
 *   - gemm_f32_nt when op(A) and op(B) are both contiguous along K (tA = 0,
 *     tB = 1) and K is long: dot products reduced at the end (x·Aᵀ);
 *   - gemm_f32_nn otherwise: op(A) is read through strides (either layout),
 *     op(B) row by row, either in place (tB = 0) or, when tB = 1 and K is
 *     short (z·Bᵀ), from a panel of KC × NB values transposed into the
 *     thread's scratch (the transpose is 1/M of the product's work).
 * Calls too small to gain from a second thread run on the calling thread
 * (MXL_CPU_MIN_FMAS per thread): a parallel region per LoRA call would cost
 * more than the product, and milliseconds when another process holds the
 * sibling core. Shape legend as kernels/ops.h. */
#include <omp.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"

enum {
  NT_MIN_K = 64, /* K from which the dot-product kernel beats packing */
  NB = 128,      /* columns of C per work item (and per packed panel) */
  KC = 256,      /* reduction depth per packed panel: KC × NB floats = 128 KB */
};

typedef struct gemm_job {
  int tA, tB, M, N, K;
  float alpha;
  const float *A, *B; /* as passed: A [M, lda] or [K, lda] (tA), B [K, ldb] or [N, ldb] (tB) */
  int64_t lda, ldb, ldc;
  float *C;           /* [M, ldc] */
  int accumulate;     /* 1: add into C (beta already applied) */
} gemm_job;

/* C[i0:i0+mi, j0:j0+nj] (+)= alpha·op(A)·op(B) by dot products (tA = 0, tB = 1). */
static void nt_block(const mxl_cpu_isa *isa, const gemm_job *g, int i0, int mi, int j0, int nj) {
  isa->gemm_f32_nt(g->C + i0 * g->ldc + j0, g->ldc, g->A + i0 * g->lda, g->lda,
                   g->B + j0 * g->ldb, g->ldb, mi, nj, g->K, g->alpha, g->accumulate);
}

/* The same block on the NN kernel; pack [KC, NB] is the thread's panel
 * for a transposed B. */
static void nn_block(const mxl_cpu_isa *isa, const gemm_job *g, int i0, int mi, int j0, int nj,
                     float *pack) {
  int64_t a_rs = g->tA ? 1 : g->lda, a_cs = g->tA ? g->lda : 1;
  for (int p0 = 0; p0 < g->K; p0 += KC) {
    int kc = g->K - p0 < KC ? g->K - p0 : KC;
    const float *bp = g->B + p0 * g->ldb + j0; /* op(B)[p0:, j0:] row-major */
    int64_t ldbp = g->ldb;
    if (g->tB) { /* op(B)[p, j] = B[j, p]: transpose the [nj, kc] block */
      isa->transpose_f32(pack, NB, g->B + j0 * g->ldb + p0, g->ldb, nj, kc);
      bp = pack, ldbp = NB;
    }
    isa->gemm_f32_nn(g->C + i0 * g->ldc + j0, g->ldc, g->A + i0 * a_rs + p0 * a_cs, a_rs, a_cs,
                     bp, ldbp, mi, nj, kc, g->alpha, g->accumulate || p0 > 0);
  }
}

/* C = beta·C for beta other than 0 and 1 (0: not read, as BLAS). */
static void scale_c(mxl_backend *be, float *C, int64_t ldc, int M, int N, float beta) {
  int nt = mxl_cpu_threads_for(be, (double)M * N * 8, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) C[(int64_t)i * ldc + j] *= beta;
}

void mxl_cpu_gemm_f32(mxl_backend *be, int tA, int tB, int M, int N, int K, float alpha,
                      const float *A, int lda, const float *B, int ldb, float beta, float *C,
                      int ldc) {
  if (M <= 0 || N <= 0) return;
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  if (beta != 0.0f && beta != 1.0f) scale_c(be, C, ldc, M, N, beta);
  int accumulate = beta != 0.0f;
  if (K <= 0) {
    if (!accumulate)
      for (int i = 0; i < M; i++) memset(C + (int64_t)i * ldc, 0, (size_t)N * sizeof *C);
    return;
  }
  gemm_job g = {tA, tB, M, N, K, alpha, A, B, lda, ldb, ldc, C, accumulate};
  int nt_kernel = !tA && tB && K >= NT_MIN_K;

  /* Work items: blocks of NB columns × mb rows; rows split only when the
   * column blocks alone cannot keep the threads busy. */
  int nt = mxl_cpu_threads_for(be, (double)M * N * K, MXL_CPU_MIN_FMAS);
  int nbn = (N + NB - 1) / NB, nbm = 1;
  if (nt > 1 && nbn < 4 * nt) {
    nbm = (4 * nt + nbn - 1) / nbn;
    if (nbm > (M + 15) / 16) nbm = (M + 15) / 16; /* at least 16 rows per block */
  }
  int mb = (M + nbm - 1) / nbm;
  nbm = (M + mb - 1) / mb;
  float *packs = NULL;
  if (!nt_kernel && tB) {
    packs = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_AUX2, (size_t)KC * NB * sizeof *packs * nt);
    if (!packs) return;
  }
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    float *pack = packs ? packs + (size_t)KC * NB * omp_get_thread_num() : NULL;
#pragma omp for schedule(dynamic, 1) collapse(2)
    for (int bn = 0; bn < nbn; bn++)
      for (int bm = 0; bm < nbm; bm++) {
        int i0 = bm * mb, j0 = bn * NB;
        int mi = M - i0 < mb ? M - i0 : mb, nj = N - j0 < NB ? N - j0 : NB;
        if (nt_kernel) nt_block(isa, &g, i0, mi, j0, nj);
        else nn_block(isa, &g, i0, mi, j0, nj, pack);
      }
  }
}
