/* CUDA ops, dense part: embedding, RMSNorm (+ backward), bf16 matmul
 * (+ dx) and gemm_f32 on cuBLASLt (kernels/cuda/blas.cuh), RoPE, add.
 * Activations fp32 at the op boundaries (ops.h). CPU reference:
 * kernels/ref/ref_dense.h, function by function (mxl_ref_embed,
 * mxl_ref_rmsnorm, ...); the semantics are kernels/ops.h's.
 *
 * Shape legend as kernels/ops.h: n tokens, H hidden, d head dim. */
#ifndef MXL_KERNELS_CUDA_OPS_DENSE_CUH
#define MXL_KERNELS_CUDA_OPS_DENSE_CUH

#include "kernels/cuda/blas.cuh"
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

/* y [n, rows] = x [n, cols]·Wᵀ + bias on cuBLASLt: x is rounded to bf16 in
 * the scratch (ops.h's activation dtype), the bias converted to fp32 for
 * the epilogue (kernels/cuda/blas.cuh). With W->fp32_act (the router) the
 * product runs in fp32 instead: x as it is, W converted to fp32 in the
 * scratch (E x H: small), CUBLAS_COMPUTE_32F. */
static void mxl_cu_matmul_bf16(mxl_backend *be, float *y, const float *x,
                               const mxl_bf16_weight *W, int n) {
  const char *op = "matmul_bf16";
  if (n <= 0 || W->rows <= 0) return;
  const int64_t N = W->rows, K = W->cols;
  const int fp32 = W->fp32_act != 0;
  void *scratch = mxl_cu_scratch(be, mxl_cuda_scratch_matmul_bf16(n, N, K, fp32), op);
  if (!scratch) return;
  mxl_cu_carve cv = {static_cast<char *>(scratch)};
  float *bias = cv.take<float>((size_t)N * 4);
  if (W->bias && !mxl_cu_from_bf16(be, op, bias, W->bias, N)) return;
  mxl_blas_call c = {};
  c.M = n, c.N = N, c.K = K;
  c.C = y, c.ldc = N;
  c.alpha = 1.0f, c.beta = 0.0f;
  c.bias = W->bias ? bias : NULL;
  if (fp32) {
    float *wf = cv.take<float>((size_t)N * K * 4);
    if (!mxl_cu_from_bf16(be, op, wf, W->w, N * K)) return;
    c.precision = MXL_BLAS_FP32;
    c.A = {x, K, 0, 0};
    c.B = {wf, K, 1, 0}; /* W [N, K]: op(B) = Wᵀ */
  } else {
    uint16_t *xb = cv.take<uint16_t>((size_t)n * K * 2);
    if (!mxl_cu_to_bf16(be, op, xb, x, (int64_t)n * K)) return;
    c.precision = MXL_BLAS_BF16;
    c.A = {xb, K, 0, 0};
    c.B = {W->w, K, 1, 0};
  }
  mxl_cu_blas_gemm(be, op, c);
}

/* dx [n, cols] += dy [n, rows]·W on cuBLASLt (beta = 1), dy rounded to bf16. */
static void mxl_cu_matmul_bf16_dx(mxl_backend *be, float *dx, const float *dy,
                                  const mxl_bf16_weight *W, int n) {
  const char *op = "matmul_bf16_dx";
  if (n <= 0 || W->cols <= 0) return;
  const int64_t R = W->rows, Cn = W->cols;
  void *scratch = mxl_cu_scratch(be, mxl_cuda_scratch_matmul_bf16_dx(n, R), op);
  if (!scratch) return;
  uint16_t *dyb = static_cast<uint16_t *>(scratch);
  if (!mxl_cu_to_bf16(be, op, dyb, dy, (int64_t)n * R)) return;
  mxl_blas_call c = {};
  c.M = n, c.N = Cn, c.K = R, c.precision = MXL_BLAS_BF16;
  c.A = {dyb, R, 0, 0};
  c.B = {W->w, Cn, 0, 0}; /* W [R, cols] */
  c.C = dx, c.ldc = Cn;
  c.alpha = 1.0f, c.beta = 1.0f;
  mxl_cu_blas_gemm(be, op, c);
}

/* ---------------------------------------------------------------- gemm_f32 */

/* C [M, N] (row stride ldc) = beta·C, or 0 when beta == 0 (C not read): the
 * product of an empty reduction. */
MXL_GLOBAL void mxl_scale_rows_kernel(float *C, int64_t M, int64_t N, int64_t ldc, float beta) {
  MXL_FOR_EACH(idx, M * N) {
    float *c = &C[(idx / N) * ldc + idx % N];
    *c = beta == 0.0f ? 0.0f : beta * *c;
  }
}

/* C = alpha·op(A)·op(B) + beta·C, row-major fp32 (LoRA's small matrices), on
 * cuBLASLt in fp32 (CUBLAS_COMPUTE_32F): LoRA's products have one side of
 * rank R <= 64, so they are bound by the bytes of the wide operand, not by
 * arithmetic, and rounding them to bf16 would only cost accuracy (measured
 * on the test model: LoRA gradients NMSE up to 4e-3 against the reference
 * with CUBLAS_COMPUTE_32F_FAST_16BF, 6e-4 without); beta == 0: C is not
 * read. */
static void mxl_cu_gemm_f32(mxl_backend *be, int tA, int tB, int M, int N, int K, float alpha,
                            const float *A, int lda, const float *B, int ldb, float beta, float *C,
                            int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    int64_t total = (int64_t)M * N;
    mxl_cu_launched(be, "gemm_f32",
                    MXL_LAUNCH(mxl_scale_rows_kernel,
                               mxl_cu_grid(total, MXL_CU_ELEMENTWISE_THREADS, MXL_CU_MAX_BLOCKS),
                               MXL_CU_ELEMENTWISE_THREADS, 0, mxl_cu_state(be)->stream, C,
                               (int64_t)M, (int64_t)N, (int64_t)ldc, beta));
    return;
  }
  mxl_blas_call c = {};
  c.M = M, c.N = N, c.K = K, c.precision = MXL_BLAS_FP32;
  c.A = {A, lda, tA, 0};
  c.B = {B, ldb, tB, 0};
  c.C = C, c.ldc = ldc;
  c.alpha = alpha, c.beta = beta;
  mxl_cu_blas_gemm(be, "gemm_f32", c);
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
