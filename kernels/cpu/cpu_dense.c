/* CPU backend, dense elementwise and row ops: embedding, RMSNorm, RoPE, add,
 * and the fp32 GEMM that serves LoRA. Shape legend as kernels/ops.h.
 * These are memory-bound or small; they use plain loops and OpenMP. */
#include <math.h>
#include <string.h>

#include "core/bf16.h"
#include "kernels/cpu/cpu_internal.h"

/* x[t] = table[ids[t]] — x [n, H], table bf16 [V, H], ids [n] */
void mxl_cpu_embed(mxl_backend *be, float *x, const uint16_t *table, const int32_t *ids, int n,
                   int H) {
#pragma omp parallel for num_threads(be->n_threads) schedule(static)
  for (int t = 0; t < n; t++) {
    const uint16_t *row = table + (size_t)ids[t] * H; /* [H] */
    float *xt = x + (size_t)t * H;                      /* [H] */
    for (int j = 0; j < H; j++) xt[j] = mxl_bf16_to_f32(row[j]);
  }
}

/* y = x·r·g, r = 1/sqrt(mean(x²) + eps) — y, x [n, H], g bf16 [H], rstd [n] */
void mxl_cpu_rmsnorm(mxl_backend *be, float *y, float *rstd, const float *x, const uint16_t *g,
                     int n, int H, float eps) {
#pragma omp parallel for num_threads(be->n_threads) schedule(static)
  for (int t = 0; t < n; t++) {
    const float *xt = x + (size_t)t * H; /* [H] */
    float *yt = y + (size_t)t * H;       /* [H] */
    double ss = 0;
    for (int j = 0; j < H; j++) ss += (double)xt[j] * xt[j];
    float r = (float)(1.0 / sqrt(ss / H + eps));
    for (int j = 0; j < H; j++) yt[j] = xt[j] * r * mxl_bf16_to_f32(g[j]);
    if (rstd) rstd[t] = r;
  }
}

/* dx_i += r·g_i·dy_i − x_i·r³/H·Σ_j dy_j·g_j·x_j — dx, dy, x [n, H], rstd [n] */
void mxl_cpu_rmsnorm_bwd(mxl_backend *be, float *dx, const float *dy, const float *x,
                         const float *rstd, const uint16_t *g, int n, int H, float eps) {
  (void)eps; /* the forward's rstd already holds it */
#pragma omp parallel for num_threads(be->n_threads) schedule(static)
  for (int t = 0; t < n; t++) {
    const float *xt = x + (size_t)t * H, *dyt = dy + (size_t)t * H; /* [H] */
    float *dxt = dx + (size_t)t * H;                                  /* [H] */
    double r = rstd[t], dot = 0;
    for (int j = 0; j < H; j++) dot += (double)dyt[j] * mxl_bf16_to_f32(g[j]) * xt[j];
    float coef = (float)(r * r * r * dot / H), rf = (float)r;
    for (int i = 0; i < H; i++) dxt[i] += rf * mxl_bf16_to_f32(g[i]) * dyt[i] - xt[i] * coef;
  }
}

/* y += x — n elements */
void mxl_cpu_add(mxl_backend *be, float *y, const float *x, size_t n) {
  const size_t chunk = 1 << 14;
  size_t n_chunks = (n + chunk - 1) / chunk;
#pragma omp parallel for num_threads(be->n_threads) schedule(static)
  for (size_t c = 0; c < n_chunks; c++) {
    size_t end = (c + 1) * chunk < n ? (c + 1) * chunk : n;
    for (size_t i = c * chunk; i < end; i++) y[i] += x[i];
  }
}

/* In-place YaRN RoPE of x [n, heads, d] at positions pos [n]; see ops.h.
 * θ is rounded to fp32 as the references do; cos and sin in double. */
void mxl_cpu_rope(mxl_backend *be, float *x, int n, int heads, int d, const int32_t *pos,
                  const float *inv_freq, float concentration, int interleaved, int inverse) {
  int half = d / 2;
#pragma omp parallel num_threads(be->n_threads)
  {
    float cs[512], sn[512]; /* [min(d/2, 512)]: one chunk of the pairs */
#pragma omp for schedule(static)
    for (int t = 0; t < n; t++) {
      for (int j0 = 0; j0 < half; j0 += 512) {
        int len = half - j0 < 512 ? half - j0 : 512;
        for (int j = 0; j < len; j++) {
          float theta = (float)pos[t] * inv_freq[j0 + j];
          cs[j] = (float)(concentration * cos((double)theta));
          sn[j] = (float)((inverse ? -1.0 : 1.0) * concentration * sin((double)theta));
        }
        for (int h = 0; h < heads; h++) {
          float *xh = x + ((size_t)t * heads + h) * d; /* [d] */
          for (int j = 0; j < len; j++) {
            int jj = j0 + j;
            int ia = interleaved ? 2 * jj : jj, ib = interleaved ? 2 * jj + 1 : jj + half;
            float a = xh[ia], b = xh[ib];
            xh[ia] = a * cs[j] - b * sn[j];
            xh[ib] = b * cs[j] + a * sn[j];
          }
        }
      }
    }
  }
}

/* ------------------------------------------------------------------ gemm_f32
 *
 * C = alpha·op(A)·op(B) + beta·C. LoRA shapes have one small dimension (the
 * rank R): x·Aᵀ (K = H, N = R), z·Bᵀ (K = R), dzᵀ·x (M = R, K = n), ... Two
 * forms cover them: dot products of rows when op(B) = Bᵀ and K is long,
 * otherwise row updates C[i, :] += a·B[p, :] over column blocks that stay
 * in cache (B transposed into scratch first when tB). */

static void gemm_scale_c(mxl_backend *be, float *C, int ldc, int M, int N, float beta) {
  if (beta == 1.0f) return;
#pragma omp parallel for num_threads(be->n_threads) schedule(static)
  for (int i = 0; i < M; i++) {
    float *c = C + (size_t)i * ldc; /* [N] */
    if (beta == 0.0f) memset(c, 0, (size_t)N * sizeof *c);
    else
      for (int j = 0; j < N; j++) c[j] *= beta;
  }
}

static void gemm_dot_form(mxl_backend *be, int tA, int M, int N, int K, float alpha,
                          const float *A, int lda, const float *B, int ldb, float beta, float *C,
                          int ldc) {
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
#pragma omp parallel for num_threads(be->n_threads) schedule(static) collapse(2)
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      const float *a = A + (size_t)i * lda; /* [K] (tA is 0 on this path) */
      (void)tA;
      float acc = isa->dot_f32(a, B + (size_t)j * ldb, K);
      float *c = &C[(size_t)i * ldc + j];
      *c = alpha * acc + (beta == 0.0f ? 0.0f : beta * *c);
    }
}

void mxl_cpu_gemm_f32(mxl_backend *be, int tA, int tB, int M, int N, int K, float alpha,
                      const float *A, int lda, const float *B, int ldb, float beta, float *C,
                      int ldc) {
  if (M <= 0 || N <= 0) return;
  if (tB && !tA && K >= 32) {
    gemm_dot_form(be, tA, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  gemm_scale_c(be, C, ldc, M, N, beta);
  if (K <= 0) return;
  const float *Bk = B; /* op(B) as [K, ldbk] */
  int ldbk = ldb;
  if (tB) {
    float *bt = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_AUX, (size_t)K * N * sizeof *bt);
    if (!bt) return;
    for (int j = 0; j < N; j++)
      for (int p = 0; p < K; p++) bt[(size_t)p * N + j] = B[(size_t)j * ldb + p];
    Bk = bt;
    ldbk = N;
  }
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  enum { IB = 64, JB = 512 };
  int ni = (M + IB - 1) / IB, nj = (N + JB - 1) / JB;
#pragma omp parallel for num_threads(be->n_threads) schedule(dynamic, 1) collapse(2)
  for (int bi = 0; bi < ni; bi++)
    for (int bj = 0; bj < nj; bj++) {
      int i0 = bi * IB, i1 = i0 + IB < M ? i0 + IB : M;
      int j0 = bj * JB, jn = (j0 + JB < N ? j0 + JB : N) - j0;
      for (int p = 0; p < K; p++) {
        const float *b = Bk + (size_t)p * ldbk + j0; /* [jn] */
        for (int i = i0; i < i1; i++) {
          float a = alpha * (tA ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p]);
          isa->axpy_f32(C + (size_t)i * ldc + j0, a, b, jn);
        }
      }
    }
}
