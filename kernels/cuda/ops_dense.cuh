/* CUDA ops, dense part: embedding, RMSNorm (+ backward), bf16 matmul
 * (+ dx), gemm_f32, RoPE, add. Activations fp32, weights bf16 decoded in
 * the kernels. CPU reference: kernels/ref/ref_dense.h, function by function
 * (mxl_ref_embed, mxl_ref_rmsnorm, ...); the semantics are kernels/ops.h's.
 *
 * Shape legend as kernels/ops.h: n tokens, H hidden, d head dim. */
#ifndef MXL_KERNELS_CUDA_OPS_DENSE_CUH
#define MXL_KERNELS_CUDA_OPS_DENSE_CUH

#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/runtime.cuh"

enum { MXL_ROW_THREADS = 256 }; /* one block per token row (norms) */

/* ---------------------------------------------------------------- embed */

/* x [n, H] = table [V, H] rows ids [n] */
MXL_GLOBAL void mxl_embed_kernel(float *x, const uint16_t *table, const int32_t *ids, int64_t n,
                                 int64_t H) {
  MXL_FOR_EACH(i, n * H) x[i] = mxl_cu_bf16(table[(int64_t)ids[i / H] * H + i % H]);
}

static void mxl_cu_embed(mxl_backend *be, float *x, const uint16_t *table, const int32_t *ids,
                         int n, int H) {
  int64_t total = (int64_t)n * H;
  if (total <= 0) return;
  mxl_cu_launched(be, "embed",
                  MXL_LAUNCH(mxl_embed_kernel,
                             mxl_cu_grid(total, MXL_CU_ELEMENTWISE_THREADS, MXL_CU_MAX_BLOCKS),
                             MXL_CU_ELEMENTWISE_THREADS, 0, mxl_cu_state(be)->stream, x, table,
                             ids, (int64_t)n, (int64_t)H));
}

/* ---------------------------------------------------------------- RMSNorm */

/* One block per row: y [n, H], rstd [n] or NULL, x [n, H], g bf16 [H]. */
MXL_GLOBAL void mxl_rmsnorm_kernel(float *y, float *rstd, const float *x, const uint16_t *g,
                                   int64_t H, float eps) {
  MXL_SHARED float red[MXL_ROW_THREADS];
  const float *xt = x + MXL_BLOCK_X * H;
  float *yt = y + MXL_BLOCK_X * H;
  float ss = 0.0f;
  for (int64_t c = MXL_THREAD_X; c < H; c += MXL_ROW_THREADS) ss = fmaf(xt[c], xt[c], ss);
  ss = mxl_block_sum<MXL_ROW_THREADS>(ss, red);
  float r = 1.0f / sqrtf(ss / (float)H + eps);
  for (int64_t c = MXL_THREAD_X; c < H; c += MXL_ROW_THREADS) yt[c] = xt[c] * r * mxl_cu_bf16(g[c]);
  if (MXL_THREAD_X == 0 && rstd) rstd[MXL_BLOCK_X] = r;
}

static void mxl_cu_rmsnorm(mxl_backend *be, float *y, float *rstd, const float *x,
                           const uint16_t *g, int n, int H, float eps) {
  if (n <= 0 || H <= 0) return;
  mxl_cu_launched(be, "rmsnorm",
                  MXL_LAUNCH(mxl_rmsnorm_kernel, (unsigned)n, MXL_ROW_THREADS, 0,
                             mxl_cu_state(be)->stream, y, rstd, x, g, (int64_t)H, eps));
}

/* dx_i += r·g_i·dy_i − x_i·r³/H·Σ_j dy_j·g_j·x_j, one block per row —
 * dx, dy, x [n, H], rstd [n], g bf16 [H]. */
MXL_GLOBAL void mxl_rmsnorm_bwd_kernel(float *dx, const float *dy, const float *x,
                                       const float *rstd, const uint16_t *g, int64_t H) {
  MXL_SHARED float red[MXL_ROW_THREADS];
  int64_t row = MXL_BLOCK_X * H;
  float dot = 0.0f;
  for (int64_t c = MXL_THREAD_X; c < H; c += MXL_ROW_THREADS)
    dot = fmaf(dy[row + c] * mxl_cu_bf16(g[c]), x[row + c], dot);
  dot = mxl_block_sum<MXL_ROW_THREADS>(dot, red);
  float r = rstd[MXL_BLOCK_X], coef = r * r * r * dot / (float)H;
  for (int64_t c = MXL_THREAD_X; c < H; c += MXL_ROW_THREADS)
    dx[row + c] += r * mxl_cu_bf16(g[c]) * dy[row + c] - x[row + c] * coef;
}

static void mxl_cu_rmsnorm_bwd(mxl_backend *be, float *dx, const float *dy, const float *x,
                               const float *rstd, const uint16_t *g, int n, int H, float eps) {
  (void)eps; /* rstd from the forward holds it */
  if (n <= 0 || H <= 0) return;
  mxl_cu_launched(be, "rmsnorm_bwd",
                  MXL_LAUNCH(mxl_rmsnorm_bwd_kernel, (unsigned)n, MXL_ROW_THREADS, 0,
                             mxl_cu_state(be)->stream, dx, dy, x, rstd, g, (int64_t)H));
}

/* ---------------------------------------------------------------- bf16 matmuls */

static void mxl_cu_matmul_bf16(mxl_backend *be, float *y, const float *x,
                               const mxl_bf16_weight *W, int n) {
  mxl_op_linear_bf16 op = {W->rows, W->cols, x, W->w, W->bias, y, W->rows};
  mxl_cu_gemm(be, "matmul_bf16", op, n);
}

static void mxl_cu_matmul_bf16_dx(mxl_backend *be, float *dx, const float *dy,
                                  const mxl_bf16_weight *W, int n) {
  mxl_op_linear_bf16_dx op = {W->cols, W->rows, dy, W->rows, W->w, dx};
  mxl_cu_gemm(be, "matmul_bf16_dx", op, n);
}

/* ---------------------------------------------------------------- gemm_f32 */

/* C = alpha·op(A)·op(B) + beta·C with row strides; beta == 0: C not read. */
template <bool TA, bool TB>
struct mxl_op_f32 {
  static constexpr bool A_K_CONTIG = !TA, B_K_CONTIG = TB;
  int64_t N, K;
  const float *A, *B;
  float *C;
  int64_t lda, ldb, ldc;
  float alpha, beta;
  MXL_DEVICE float a(int, int64_t i, int64_t p) const {
    return TA ? A[p * lda + i] : A[i * lda + p];
  }
  MXL_DEVICE float b(int, int64_t p, int64_t j) const {
    return TB ? B[j * ldb + p] : B[p * ldb + j];
  }
  MXL_DEVICE void store(int, int64_t i, int64_t j, float acc) const {
    float *c = &C[i * ldc + j];
    *c = beta == 0.0f ? alpha * acc : alpha * acc + beta * *c;
  }
};

template <bool TA, bool TB>
static void mxl_cu_gemm_f32_t(mxl_backend *be, int M, int N, int K, float alpha, const float *A,
                              int lda, const float *B, int ldb, float beta, float *C, int ldc) {
  mxl_op_f32<TA, TB> op = {N, K, A, B, C, lda, ldb, ldc, alpha, beta};
  mxl_cu_gemm(be, "gemm_f32", op, M);
}

static void mxl_cu_gemm_f32(mxl_backend *be, int tA, int tB, int M, int N, int K, float alpha,
                            const float *A, int lda, const float *B, int ldb, float beta, float *C,
                            int ldc) {
  if (tA && tB)
    mxl_cu_gemm_f32_t<true, true>(be, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else if (tA)
    mxl_cu_gemm_f32_t<true, false>(be, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else if (tB)
    mxl_cu_gemm_f32_t<false, true>(be, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else
    mxl_cu_gemm_f32_t<false, false>(be, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* ---------------------------------------------------------------- RoPE */

/* sin θ and cos θ of an fp32 angle up to ~1e6 rad, to about 2e-7 absolute.
 * θ/π is formed in double-float (1/π as two floats, the product's error
 * recovered with fma), the even integer part removed exactly, and the rest
 * (in [-1, 1]) given to sincospi. */
MXL_DEVICE void mxl_cu_sincos(float theta, float *s, float *c) {
  const float inv_pi_hi = 0x1.45f306p-2f, inv_pi_lo = 0x1.b9391p-27f;
  float hi = theta * inv_pi_hi;
  float lo = fmaf(theta, inv_pi_hi, -hi) + theta * inv_pi_lo;
  float turns = rintf(hi * 0.5f);
  mxl_cu_sincospi((hi - 2.0f * turns) + lo, s, c);
}

/* In place, one thread per rotated pair — x [n, heads, d], pos [n],
 * inv_freq [d/2]; sign = -1 for the inverse (backward) rotation. */
MXL_GLOBAL void mxl_rope_kernel(float *x, int64_t n, int heads, int d, const int32_t *pos,
                                const float *inv_freq, float concentration, int interleaved,
                                float sign) {
  int half = d / 2;
  MXL_FOR_EACH(idx, n * heads * half) {
    int j = (int)(idx % half);
    int64_t row = idx / half, t = row / heads;
    float *xh = x + row * d;
    int ia = interleaved ? 2 * j : j, ib = interleaved ? 2 * j + 1 : j + half;
    float theta = (float)pos[t] * inv_freq[j];
    float sn, cs;
    mxl_cu_sincos(theta, &sn, &cs);
    sn *= sign;
    float a = xh[ia], b = xh[ib];
    xh[ia] = concentration * (a * cs - b * sn);
    xh[ib] = concentration * (b * cs + a * sn);
  }
}

static void mxl_cu_rope(mxl_backend *be, float *x, int n, int heads, int d, const int32_t *pos,
                        const float *inv_freq, float concentration, int interleaved,
                        int inverse) {
  int64_t total = (int64_t)n * heads * (d / 2);
  if (total <= 0) return;
  mxl_cu_launched(be, "rope",
                  MXL_LAUNCH(mxl_rope_kernel,
                             mxl_cu_grid(total, MXL_CU_ELEMENTWISE_THREADS, MXL_CU_MAX_BLOCKS),
                             MXL_CU_ELEMENTWISE_THREADS, 0, mxl_cu_state(be)->stream, x,
                             (int64_t)n, heads, d, pos, inv_freq, concentration, interleaved,
                             inverse ? -1.0f : 1.0f));
}

/* ---------------------------------------------------------------- add */

MXL_GLOBAL void mxl_add_kernel(float *y, const float *x, int64_t n) {
  MXL_FOR_EACH(i, n) y[i] += x[i];
}

static void mxl_cu_add(mxl_backend *be, float *y, const float *x, size_t n) {
  if (n == 0) return;
  mxl_cu_launched(be, "add",
                  MXL_LAUNCH(mxl_add_kernel,
                             mxl_cu_grid((int64_t)n, MXL_CU_ELEMENTWISE_THREADS, MXL_CU_MAX_BLOCKS),
                             MXL_CU_ELEMENTWISE_THREADS, 0, mxl_cu_state(be)->stream, y, x,
                             (int64_t)n));
}

/* ---------------------------------------------------------------- table */

static inline void mxl_cu_fill_dense(mxl_ops *ops) {
  ops->embed = mxl_cu_embed;
  ops->rmsnorm = mxl_cu_rmsnorm;
  ops->rmsnorm_bwd = mxl_cu_rmsnorm_bwd;
  ops->matmul_bf16 = mxl_cu_matmul_bf16;
  ops->matmul_bf16_dx = mxl_cu_matmul_bf16_dx;
  ops->gemm_f32 = mxl_cu_gemm_f32;
  ops->rope = mxl_cu_rope;
  ops->add = mxl_cu_add;
}

#endif
