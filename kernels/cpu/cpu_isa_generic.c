/* CPU backend inner loops in portable C: the path for CPUs without AVX2 and
 * for non-x86 builds. Semantics of each entry: cpu_internal.h. */
#include <math.h>
#include <string.h>

#include "core/bf16.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/mxfp4.h"

static void gen_to_bf16(uint16_t *dst, const float *src, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = mxl_f32_to_bf16(src[i]);
}

static void gen_to_bf16_split(uint16_t *hi, uint16_t *lo, const float *src, size_t n) {
  for (size_t i = 0; i < n; i++) {
    hi[i] = mxl_f32_to_bf16(src[i]);
    lo[i] = mxl_f32_to_bf16(src[i] - mxl_bf16_to_f32(hi[i]));
  }
}

static void gen_mxfp4_to_bf16(uint16_t *dst, int64_t ld_dst, const uint8_t *blocks,
                              const uint8_t *scales, int64_t row_blocks, int rows, int K,
                              int bias) {
  float tmp[MXL_MXFP4_BLOCK];
  for (int r = 0; r < rows; r++)
    for (int g = 0; g < K / MXL_MXFP4_BLOCK; g++) {
      int64_t b = (int64_t)r * row_blocks + g;
      mxl_mxfp4_decode_block(blocks + b * MXL_MXFP4_BLOCK_BYTES, scales[b], bias, tmp);
      uint16_t *out = dst + (int64_t)r * ld_dst + g * MXL_MXFP4_BLOCK;
      for (int t = 0; t < MXL_MXFP4_BLOCK; t++) out[t] = mxl_f32_to_bf16(tmp[t]);
    }
}

static void gen_pack_vnni_bf16(uint16_t *dst, int64_t ld_dst, const uint16_t *src,
                               int64_t ld_src, int rows, int cols) {
  for (int pp = 0; pp < (rows + 1) / 2; pp++)
    for (int64_t c = 0; c < ld_dst; c++)
      for (int h = 0; h < 2; h++) {
        int r = 2 * pp + h;
        dst[(pp * ld_dst + c) * 2 + h] = (r < rows && c < cols) ? src[r * ld_src + c] : 0;
      }
}

static void gen_pack_vnni_t_bf16(uint16_t *dst, int64_t ld_dst, const uint16_t *src,
                                 int64_t ld_src, int rows, int K) {
  for (int64_t kp = 0; kp < (K + 1) / 2; kp++)
    for (int64_t j = 0; j < ld_dst; j++)
      for (int h = 0; h < 2; h++) {
        int64_t k = 2 * kp + h;
        dst[(kp * ld_dst + j) * 2 + h] = (j < rows && k < K) ? src[j * ld_src + k] : 0;
      }
}

static void gen_pack_vnni_t_mxfp4(uint16_t *dst, int64_t ld_dst, const uint8_t *blocks,
                                  const uint8_t *scales, int64_t row_blocks, int rows, int K,
                                  int bias) {
  uint16_t w[MXL_MXFP4_BLOCK];
  for (int64_t kp = 0; kp < K / 2; kp++)
    memset(dst + (kp * ld_dst + rows) * 2, 0, (size_t)(ld_dst - rows) * 2 * sizeof *dst);
  for (int j = 0; j < rows; j++)
    for (int g = 0; g < K / MXL_MXFP4_BLOCK; g++) {
      int64_t b = (int64_t)j * row_blocks + g;
      gen_mxfp4_to_bf16(w, MXL_MXFP4_BLOCK, blocks + b * MXL_MXFP4_BLOCK_BYTES, scales + b,
                        row_blocks, 1, MXL_MXFP4_BLOCK, bias);
      for (int t = 0; t < MXL_MXFP4_BLOCK; t++) {
        int64_t k = (int64_t)g * MXL_MXFP4_BLOCK + t;
        dst[((k / 2) * ld_dst + j) * 2 + (k & 1)] = w[t];
      }
    }
}

static void gen_pack_vnni_mxfp4(uint16_t *dst, int64_t ld_dst, const uint8_t *blocks,
                                const uint8_t *scales, int64_t row_blocks, int rows, int K,
                                int bias) {
  uint16_t row[2][MXL_MXFP4_BLOCK];
  for (int pp = 0; pp < (rows + 1) / 2; pp++) {
    for (int g = 0; g < K / MXL_MXFP4_BLOCK; g++) {
      for (int h = 0; h < 2; h++) {
        int64_t r = 2 * pp + h, b = r * row_blocks + g;
        if (r < rows)
          gen_mxfp4_to_bf16(row[h], MXL_MXFP4_BLOCK, blocks + b * MXL_MXFP4_BLOCK_BYTES,
                            scales + b, row_blocks, 1, MXL_MXFP4_BLOCK, bias);
        else memset(row[h], 0, sizeof row[h]);
      }
      for (int t = 0; t < MXL_MXFP4_BLOCK; t++)
        for (int h = 0; h < 2; h++)
          dst[(pp * ld_dst + g * MXL_MXFP4_BLOCK + t) * 2 + h] = row[h][t];
    }
    memset(dst + (pp * ld_dst + K) * 2, 0, (size_t)(ld_dst - K) * 2 * sizeof *dst);
  }
}

static void gen_gemm_bf16_nt(float *C, int64_t ldc, const uint16_t *A, const uint16_t *A_lo,
                             int64_t lda, const uint16_t *B, int64_t ldb, int M, int N, int K,
                             int accumulate) {
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      const uint16_t *a = A + (int64_t)i * lda, *b = B + (int64_t)j * ldb;
      float acc = 0;
      for (int k = 0; k < K; k++) acc += mxl_bf16_to_f32(a[k]) * mxl_bf16_to_f32(b[k]);
      if (A_lo) {
        const uint16_t *al = A_lo + (int64_t)i * lda;
        for (int k = 0; k < K; k++) acc += mxl_bf16_to_f32(al[k]) * mxl_bf16_to_f32(b[k]);
      }
      float *c = &C[(int64_t)i * ldc + j];
      *c = accumulate ? *c + acc : acc;
    }
}

static void gen_gemm_bf16_vnni(float *C, int64_t ldc, const uint16_t *A, const uint16_t *A_lo,
                               int64_t lda, const uint16_t *Bp, int64_t ld_bp, int M, int N,
                               int P, int accumulate) {
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      float acc = 0;
      for (int p = 0; p < P; p++) {
        float b = mxl_bf16_to_f32(Bp[((int64_t)(p / 2) * ld_bp + j) * 2 + p % 2]);
        acc += mxl_bf16_to_f32(A[(int64_t)i * lda + p]) * b;
        if (A_lo) acc += mxl_bf16_to_f32(A_lo[(int64_t)i * lda + p]) * b;
      }
      float *c = &C[(int64_t)i * ldc + j];
      *c = accumulate ? *c + acc : acc;
    }
}

static void gen_gemv_mxfp4(float *y, const uint16_t *x, const uint16_t *x_lo,
                           const uint8_t *blocks, const uint8_t *scales, int64_t row_blocks,
                           int N, int K, int bias) {
  float w[MXL_MXFP4_BLOCK];
  for (int j = 0; j < N; j++) {
    float acc = 0;
    for (int g = 0; g < K / MXL_MXFP4_BLOCK; g++) {
      int64_t b = (int64_t)j * row_blocks + g;
      mxl_mxfp4_decode_block(blocks + b * MXL_MXFP4_BLOCK_BYTES, scales[b], bias, w);
      for (int t = 0; t < MXL_MXFP4_BLOCK; t++) {
        int k = g * MXL_MXFP4_BLOCK + t;
        acc += mxl_bf16_to_f32(x[k]) * w[t];
        if (x_lo) acc += mxl_bf16_to_f32(x_lo[k]) * w[t];
      }
    }
    y[j] = acc;
  }
}

static void gen_gemm_f32_nn(float *C, int64_t ldc, const float *A, int64_t lda, int64_t a_cs,
                            const float *B, int64_t ldb, int M, int N, int K, float alpha,
                            int accumulate) {
  for (int i = 0; i < M; i++) {
    float *c = C + (int64_t)i * ldc;
    if (!accumulate)
      for (int j = 0; j < N; j++) c[j] = 0;
    for (int p = 0; p < K; p++) {
      float a = alpha * A[(int64_t)i * lda + p * a_cs];
      const float *b = B + (int64_t)p * ldb;
      for (int j = 0; j < N; j++) c[j] += a * b[j];
    }
  }
}

static void gen_gemv_bf16(float *y, const uint16_t *x, const uint16_t *x_lo, const uint16_t *W,
                          int64_t ldw, int N, int K) {
  gen_gemm_bf16_nt(y, N, x, x_lo, K, W, ldw, 1, N, K, 0);
}

static void gen_gemm_f32_nt(float *C, int64_t ldc, const float *A, int64_t lda, const float *B,
                            int64_t ldb, int M, int N, int K, float alpha, int accumulate) {
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      const float *a = A + (int64_t)i * lda, *b = B + (int64_t)j * ldb;
      float s[4] = {0, 0, 0, 0};
      int k = 0;
      for (; k + 4 <= K; k += 4)
        for (int l = 0; l < 4; l++) s[l] += a[k + l] * b[k + l];
      for (; k < K; k++) s[0] += a[k] * b[k];
      float v = alpha * ((s[0] + s[1]) + (s[2] + s[3]));
      float *c = C + (int64_t)i * ldc + j;
      *c = accumulate ? *c + v : v;
    }
}

static float gen_dot_f32(const float *a, const float *b, int n) {
  float s[4] = {0, 0, 0, 0};
  int i = 0;
  for (; i + 4 <= n; i += 4)
    for (int l = 0; l < 4; l++) s[l] += a[i + l] * b[i + l];
  for (; i < n; i++) s[0] += a[i] * b[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

static void gen_axpy_f32(float *y, float a, const float *x, int n) {
  for (int i = 0; i < n; i++) y[i] += a * x[i];
}

static float gen_max_f32(const float *x, int n) {
  float m = -INFINITY;
  for (int i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

static float gen_sum_exp_f32(const float *x, int n, float shift) {
  float s = 0;
  for (int i = 0; i < n; i++) s += expf(x[i] - shift);
  return s;
}

static void gen_exp_f32(float *y, const float *x, int n, float shift, float mul) {
  for (int i = 0; i < n; i++) y[i] = mul * expf(x[i] - shift);
}

static float gen_masked_max_f32(const float *x, uint64_t keep, int n) {
  float m = -INFINITY;
  for (int i = 0; i < n; i++)
    if ((keep >> i & 1) && x[i] > m) m = x[i];
  return m;
}

static float gen_masked_exp_f32(float *y, const float *x, uint64_t keep, int n, float shift) {
  float s = 0;
  for (int i = 0; i < n; i++) {
    y[i] = (keep >> i & 1) ? expf(x[i] - shift) : 0.0f;
    s += y[i];
  }
  return s;
}

static void gen_scale_f32(float *y, float a, int n) {
  for (int i = 0; i < n; i++) y[i] *= a;
}

/* The decode attention's key block (cpu_internal.h attn_decode_block),
 * key by key: scores into s [nkb, 8], the block's max per head, then the
 * rescale and Σ p·v. */
static void gen_attn_decode_block(float *o, float *mx, float *den, const float *q2,
                                  const float *k, const float *v, int64_t ld, int nkb,
                                  uint64_t keep, int group, int d, float *s,
                                  const float *pf_k, const float *pf_v, int64_t pf_bytes) {
  const int64_t per_key = (pf_bytes + 64 * (int64_t)nkb - 1) / (64 * (int64_t)nkb) * 64;
  float bm[8];
  for (int h = 0; h < group; h++) bm[h] = -INFINITY;
  for (int j = 0; j < nkb; j++) {
    for (int64_t at = j * per_key; at < (j + 1) * per_key && at < pf_bytes; at += 64) {
      __builtin_prefetch((const char *)pf_k + at, 0, 2); /* a share of them per key */
      __builtin_prefetch((const char *)pf_v + at, 0, 2);
    }
    if (!(keep >> j & 1)) continue;
    for (int h = 0; h < group; h++) {
      float acc = 0;
      for (int c = 0; c < d; c++) acc += q2[(c / 2) * 16 + 2 * h + (c & 1)] * k[j * ld + c];
      s[j * 8 + h] = acc;
      if (acc > bm[h]) bm[h] = acc;
    }
  }
  for (int h = 0; h < group; h++) {
    if (!(bm[h] > mx[h])) continue;
    float c = expf(mx[h] - bm[h]);
    den[h] *= c;
    gen_scale_f32(o + (int64_t)h * d, c, d);
    mx[h] = bm[h];
  }
  for (int j = 0; j < nkb; j++) {
    if (!(keep >> j & 1)) continue;
    for (int h = 0; h < group; h++) {
      float p = expf(s[j * 8 + h] - mx[h]);
      den[h] += p;
      for (int c = 0; c < d; c++) o[(int64_t)h * d + c] += p * v[j * ld + c];
    }
  }
}

static void gen_mul_sub_f32(float *y, const float *p, float c, int n) {
  for (int i = 0; i < n; i++) y[i] = p[i] * (y[i] - c);
}

static void gen_swiglu_row(float *act, const float *h, int I, float alpha, float limit) {
  mxl_cpu_swiglu_scalar(act, h, 0, I, alpha, limit);
}

static void gen_swiglu_bwd_row(float *dh, const float *dact, const float *h, int I, float alpha,
                               float limit) {
  mxl_cpu_swiglu_bwd_scalar(dh, dact, h, 0, I, alpha, limit);
}

static float gen_rmsnorm_row(float *y, const float *x, const uint16_t *g, int H, float eps) {
  double ss = 0;
  for (int j = 0; j < H; j++) ss += (double)x[j] * x[j];
  float r = (float)(1.0 / sqrt(ss / H + eps));
  for (int j = 0; j < H; j++) y[j] = x[j] * r * mxl_bf16_to_f32(g[j]);
  return r;
}

static void gen_rmsnorm_bwd_row(float *dx, const float *dy, const float *x, const uint16_t *g,
                                float r, int H) {
  double dot = 0, rd = r;
  for (int j = 0; j < H; j++) dot += (double)dy[j] * mxl_bf16_to_f32(g[j]) * x[j];
  float coef = (float)(rd * rd * rd * dot / H);
  for (int i = 0; i < H; i++) dx[i] += r * mxl_bf16_to_f32(g[i]) * dy[i] - x[i] * coef;
}

static void gen_rope_halves_f32(float *xa, float *xb, const float *cs, const float *sn, int n,
                                float sign) {
  mxl_cpu_rope_halves_scalar(xa, xb, cs, sn, 0, n, sign);
}

static void gen_adamw_f32(float *param, const float *grad, float *m, float *v, size_t n,
                          const mxl_cpu_adamw_coef *c) {
  mxl_cpu_adamw_scalar(param, grad, m, v, 0, n, c);
}

const mxl_cpu_isa mxl_cpu_isa_generic = {
    .name = "generic",
    .to_bf16 = gen_to_bf16,
    .to_bf16_split = gen_to_bf16_split,
    .mxfp4_to_bf16 = gen_mxfp4_to_bf16,
    .pack_vnni_bf16 = gen_pack_vnni_bf16,
    .pack_vnni_t_bf16 = gen_pack_vnni_t_bf16,
    .pack_vnni_t_mxfp4 = gen_pack_vnni_t_mxfp4,
    .pack_vnni_mxfp4 = gen_pack_vnni_mxfp4,
    .gemm_bf16_nt = gen_gemm_bf16_nt,
    .gemv_bf16 = gen_gemv_bf16,
    .gemm_bf16_vnni = gen_gemm_bf16_vnni,
    .gemv_mxfp4 = gen_gemv_mxfp4,
    .gemm_f32_nn = gen_gemm_f32_nn,
    .gemm_f32_nt = gen_gemm_f32_nt,
    .transpose_f32 = mxl_cpu_transpose_f32_scalar,
    .dot_f32 = gen_dot_f32,
    .axpy_f32 = gen_axpy_f32,
    .max_f32 = gen_max_f32,
    .sum_exp_f32 = gen_sum_exp_f32,
    .exp_f32 = gen_exp_f32,
    .masked_max_f32 = gen_masked_max_f32,
    .masked_exp_f32 = gen_masked_exp_f32,
    .scale_f32 = gen_scale_f32,
    .attn_decode_block = gen_attn_decode_block,
    .mul_sub_f32 = gen_mul_sub_f32,
    .swiglu_row = gen_swiglu_row,
    .swiglu_bwd_row = gen_swiglu_bwd_row,
    .rmsnorm_row = gen_rmsnorm_row,
    .rmsnorm_bwd_row = gen_rmsnorm_bwd_row,
    .rope_halves_f32 = gen_rope_halves_f32,
    .adamw_f32 = gen_adamw_f32,
};
