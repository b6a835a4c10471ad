/* Reference math, dense ops: embedding, RMSNorm, bf16 matmul, gemm_f32,
 * RoPE, add. The oracle for kernels/ops.h; see ref_real.h for the shape
 * legend, the `mxl_real` convention and the numerics (double accumulation).
 * Scalar parameters are passed as double (a float converts exactly). */
#ifndef MXL_KERNELS_REF_DENSE_H
#define MXL_KERNELS_REF_DENSE_H

#include "kernels/ops.h"
#include "kernels/ref/ref_real.h"

/* x[t] = table[ids[t]] — x [n, H], table bf16 [V, H], ids [n] */
static inline void mxl_ref_embed(mxl_real *x, const uint16_t *table, const int32_t *ids, int n,
                                 int H) {
  for (int t = 0; t < n; t++)
    for (int j = 0; j < H; j++)
      x[(size_t)t * H + j] = (mxl_real)mxl_ref_bf16(table[(size_t)ids[t] * H + j]);
}

/* y = x·r·g with r = 1/sqrt(mean(x²) + eps) — y, x [n, H], g bf16 [H],
 * rstd [n] (or NULL) receives r. */
static inline void mxl_ref_rmsnorm(mxl_real *y, mxl_real *rstd, const mxl_real *x,
                                   const uint16_t *g, int n, int H, mxl_acc eps) {
  for (int t = 0; t < n; t++) {
    const mxl_real *xt = x + (size_t)t * H;
    mxl_acc ss = 0;
    for (int j = 0; j < H; j++) ss += (mxl_acc)xt[j] * xt[j];
    mxl_acc r = 1.0 / sqrt(ss / H + eps);
    for (int j = 0; j < H; j++) y[(size_t)t * H + j] = (mxl_real)(xt[j] * r * mxl_ref_bf16(g[j]));
    if (rstd) rstd[t] = (mxl_real)r;
  }
}

/* RMSNorm backward with the forward's r = rstd[t]:
 *   dx_i += r·g_i·dy_i − x_i·r³/H·Σ_j dy_j·g_j·x_j
 * — dx, dy, x [n, H], rstd [n], g bf16 [H]. */
static inline void mxl_ref_rmsnorm_bwd(mxl_real *dx, const mxl_real *dy, const mxl_real *x,
                                       const mxl_real *rstd, const uint16_t *g, int n, int H) {
  for (int t = 0; t < n; t++) {
    const mxl_real *xt = x + (size_t)t * H, *dyt = dy + (size_t)t * H;
    mxl_acc r = rstd[t], dot = 0;
    for (int j = 0; j < H; j++) dot += (mxl_acc)dyt[j] * mxl_ref_bf16(g[j]) * xt[j];
    mxl_acc coef = r * r * r * dot / H;
    for (int i = 0; i < H; i++)
      dx[(size_t)t * H + i] += (mxl_real)(r * mxl_ref_bf16(g[i]) * dyt[i] - xt[i] * coef);
  }
}

/* y = x·Wᵀ + b — y [n, W.rows], x [n, W.cols], W bf16 [rows, cols] */
static inline void mxl_ref_matmul_bf16(mxl_real *y, const mxl_real *x, const mxl_bf16_weight *W,
                                       int n) {
  for (int t = 0; t < n; t++)
    for (int64_t o = 0; o < W->rows; o++) {
      const uint16_t *wo = W->w + o * W->cols;
      mxl_acc acc = mxl_ref_bias(W->bias, o);
      for (int64_t c = 0; c < W->cols; c++) acc += (mxl_acc)x[t * W->cols + c] * mxl_ref_bf16(wo[c]);
      y[t * W->rows + o] = (mxl_real)acc;
    }
}

/* dx += dy·W — dx [n, W.cols], dy [n, W.rows] */
static inline void mxl_ref_matmul_bf16_dx(mxl_real *dx, const mxl_real *dy,
                                          const mxl_bf16_weight *W, int n) {
  for (int t = 0; t < n; t++)
    for (int64_t c = 0; c < W->cols; c++) {
      mxl_acc acc = 0;
      for (int64_t o = 0; o < W->rows; o++)
        acc += (mxl_acc)dy[t * W->rows + o] * mxl_ref_bf16(W->w[o * W->cols + c]);
      dx[t * W->cols + c] += (mxl_real)acc;
    }
}

/* C = alpha·op(A)·op(B) + beta·C — op(A) [M, K], op(B) [K, N], C [M, N],
 * row strides lda, ldb, ldc; op(X) = Xᵀ if tX. As in BLAS, beta == 0 means
 * C is not read (it may hold NaN). */
static inline void mxl_ref_gemm(int tA, int tB, int M, int N, int K, mxl_acc alpha,
                                const mxl_real *A, int lda, const mxl_real *B, int ldb,
                                mxl_acc beta, mxl_real *C, int ldc) {
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      mxl_acc acc = 0;
      for (int p = 0; p < K; p++) {
        mxl_acc a = tA ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
        mxl_acc b = tB ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
        acc += a * b;
      }
      mxl_real *c = &C[(size_t)i * ldc + j];
      *c = (mxl_real)(alpha * acc + (beta == 0 ? 0.0 : beta * (mxl_acc)*c));
    }
}

/* In-place YaRN RoPE of x [n, heads, d] at positions pos [n].
 * Pair j (j < d/2) is (j, j + d/2), or (2j, 2j+1) when interleaved. With
 * θ = pos·inv_freq[j] rounded to fp32 (as the gpt-oss references do) and
 * σ = -1 when inverse (the transpose, i.e. the backward), else +1:
 *   a' = c·(a·cos θ − σ·b·sin θ)
 *   b' = c·(b·cos θ + σ·a·sin θ)
 * cos and sin are evaluated in double. */
static inline void mxl_ref_rope(mxl_real *x, int n, int heads, int d, const int32_t *pos,
                                const float *inv_freq, mxl_acc concentration, int interleaved,
                                int inverse) {
  for (int t = 0; t < n; t++)
    for (int h = 0; h < heads; h++)
      for (int j = 0; j < d / 2; j++) {
        mxl_real *xh = x + ((size_t)t * heads + h) * d;
        int ia = interleaved ? 2 * j : j, ib = interleaved ? 2 * j + 1 : j + d / 2;
        float theta = (float)pos[t] * inv_freq[j];
        mxl_acc c = cos((double)theta), s = (inverse ? -1.0 : 1.0) * sin((double)theta);
        mxl_acc a = xh[ia], b = xh[ib];
        xh[ia] = (mxl_real)(concentration * (a * c - b * s));
        xh[ib] = (mxl_real)(concentration * (b * c + a * s));
      }
}

/* y += x — n elements */
static inline void mxl_ref_add(mxl_real *y, const mxl_real *x, size_t n) {
  for (size_t i = 0; i < n; i++) y[i] += x[i];
}

#endif
