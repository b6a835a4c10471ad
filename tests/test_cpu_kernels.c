/* The CPU backend's own tests (tests/test_ops.c compares every op of every
 * backend with the reference; this file covers what that cannot see):
 *   - each instruction-set table (generic, AVX2, AVX-512 BF16 where the CPU
 *     has it) kernel by kernel, against double-precision sums computed here
 *     and against the layouts their comments define, on ragged shapes;
 *   - bit-exact MXFP4 decoding for every scale byte (the in-register decode
 *     and its fallback for out-of-range scales and NaN);
 *   - the ops on gpt-oss shapes the op driver keeps small: K = 2880 MXFP4
 *     rows (one-row decode groups and packed groups), multi-block attention
 *     with windows and packed documents, a vocabulary of several chunks,
 *     gemm_f32 at LoRA sizes (every product of an adapted matrix) —
 *     against the reference backend, in fast and exact mode;
 *   - the error path of scratch allocation;
 *   - the thread decision: which ops run on the calling thread;
 *   - passive thread waiting (mxl_wait_passively, called first in main). */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/bf16.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/mxfp4.h"
#include "ops_util.h"
#include "test.h"

static test_rng rng = {20240917};

/* The ISA tables this CPU can run. */
static int isa_tables(const mxl_cpu_isa **out) {
  int n = 0;
  out[n++] = &mxl_cpu_isa_generic;
#ifdef MXL_CPU_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) out[n++] = &mxl_cpu_isa_avx2;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16") &&
      __builtin_cpu_supports("avx512vnni"))
    out[n++] = &mxl_cpu_isa_avx512;
  if (n == 3 && mxl_cpu_isa_amx()) out[n++] = mxl_cpu_isa_amx();
#endif
  return n;
}

static float bf(uint16_t h) { return mxl_bf16_to_f32(h); }

/* Relative error of got against want: max |got - want| / max |want|. */
static double rel_err(const float *got, const double *want, size_t n) {
  double e = 0, m = 0;
  for (size_t i = 0; i < n; i++) {
    if (isnan(got[i]) || isnan(want[i])) return isnan(got[i]) && isnan(want[i]) ? e : INFINITY;
    e = fmax(e, fabs(got[i] - want[i]));
    m = fmax(m, fabs(want[i]));
  }
  return m > 0 ? e / m : e;
}

/* ------------------------------------------------------------------ conversions */

static void test_to_bf16(void) {
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas);
  enum { N = 1003 };
  float x[N];
  uint16_t got[N], hi[N], lo[N];
  for (int i = 0; i < N; i++) x[i] = (float)(rng_normal(&rng) * pow(10.0, rng_uniform(&rng, -30, 30)));
  x[0] = NAN, x[1] = INFINITY, x[2] = -INFINITY, x[3] = 0.0f, x[4] = -0.0f;
  x[5] = 1.00390625f; /* a tie: rounds to even (1.0) */
  x[6] = 3.3895314e38f; /* rounds up to inf */
  for (int s = 0; s < n_isa; s++) {
    isas[s]->to_bf16(got, x, N);
    int bad = 0;
    for (int i = 0; i < N; i++) {
      uint16_t want = mxl_f32_to_bf16(x[i]);
      if (isnan(x[i])) bad += !isnan(bf(got[i]));
      else bad += got[i] != want;
    }
    MXL_CHECK_MSG(bad == 0, "%s: %d of %d conversions differ from core/bf16.h", isas[s]->name, bad, N);
    isas[s]->to_bf16_split(hi, lo, x, N);
    double worst = 0;
    for (int i = 7; i < N; i++)
      worst = fmax(worst, fabs(((double)bf(hi[i]) + bf(lo[i])) - x[i]) / fabs(x[i]));
    MXL_CHECK_MSG(worst < 1.6e-5, "%s: hi + lo relative error %g", isas[s]->name, worst);
  }
}

/* Every scale byte, both biases, the fast decode and its fallback: bit
 * exact against mxfp4.h's decoder rounded to bf16 (exact where bf16 holds the
 * value). */
static void test_mxfp4_decode_all_scales(void) {
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas);
  enum { ROWS = 256, NB = 3, K = NB * 32 };
  uint8_t *blocks = malloc(ROWS * NB * 16), *scales = malloc(ROWS * NB);
  uint16_t *got = malloc(ROWS * K * 2);
  for (int i = 0; i < ROWS * NB * 16; i++) blocks[i] = (uint8_t)rng_next(&rng);
  for (int bias = 127; bias <= 141; bias += 14) {
    /* row r: its middle block has scale byte r, the others a tame scale */
    for (int r = 0; r < ROWS; r++)
      for (int g = 0; g < NB; g++) scales[r * NB + g] = (uint8_t)(g == 1 ? r : bias - 2);
    for (int s = 0; s < n_isa; s++) {
      isas[s]->mxfp4_to_bf16(got, K, blocks, scales, NB, ROWS, K, bias);
      int bad = 0;
      for (int r = 0; r < ROWS; r++)
        for (int g = 0; g < NB; g++) {
          float want[32];
          mxl_mxfp4_decode_block(blocks + (r * NB + g) * 16, scales[r * NB + g], bias, want);
          for (int t = 0; t < 32; t++) {
            uint16_t w = mxl_f32_to_bf16(want[t]), h = got[r * K + g * 32 + t];
            bad += isnan(want[t]) ? !isnan(bf(h)) : h != w;
          }
        }
      MXL_CHECK_MSG(bad == 0, "%s bias %d: %d decoded values differ", isas[s]->name, bias, bad);
    }
  }
  free(blocks), free(scales), free(got);
}

/* ------------------------------------------------------------------ packing */

static void test_packing_layouts(void) {
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas);
  for (int trial = 0; trial < 40; trial++) {
    int rows = 1 + rng_int(&rng, 45), cols = 1 + rng_int(&rng, 90), ld_src = cols + rng_int(&rng, 3);
    int ld = ((cols + 15) / 16) * 16 + 16 * rng_int(&rng, 2);  /* pack: columns */
    int ld_t = ((rows + 15) / 16) * 16 + 16 * rng_int(&rng, 2); /* pack_t: rows */
    uint16_t *src = malloc((size_t)rows * ld_src * 2);
    rng_fill_bf16(&rng, src, (size_t)rows * ld_src, -4, 4);
    size_t np = (size_t)((rows + 1) / 2) * ld * 2, nt = (size_t)((cols + 1) / 2) * ld_t * 2;
    uint16_t *p = malloc(np * 2), *t = malloc(nt * 2);
    for (int s = 0; s < n_isa; s++) {
      memset(p, 0xEE, np * 2), memset(t, 0xEE, nt * 2);
      isas[s]->pack_vnni_bf16(p, ld, src, ld_src, rows, cols);
      isas[s]->pack_vnni_t_bf16(t, ld_t, src, ld_src, rows, cols);
      int bad = 0;
      for (int r = 0; r < (rows + 1) / 2 * 2; r++)
        for (int c = 0; c < ld; c++) {
          uint16_t want = r < rows && c < cols ? src[r * ld_src + c] : 0;
          bad += p[((size_t)(r / 2) * ld + c) * 2 + r % 2] != want;
        }
      for (int k = 0; k < (cols + 1) / 2 * 2; k++)
        for (int j = 0; j < ld_t; j++) {
          uint16_t want = j < rows && k < cols ? src[j * ld_src + k] : 0;
          bad += t[((size_t)(k / 2) * ld_t + j) * 2 + k % 2] != want;
        }
      MXL_CHECK_MSG(bad == 0, "%s: %d packed values misplaced (rows %d cols %d)", isas[s]->name,
                    bad, rows, cols);
    }
    free(src), free(p), free(t);
  }
}

static void test_packing_mxfp4(void) {
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas);
  enum { ROWS = 37, NB = 4, K = NB * 32, ROW_BLOCKS = 6 };
  uint8_t blocks[ROWS * ROW_BLOCKS * 16], scales[ROWS * ROW_BLOCKS];
  rng_fill_mxfp4(&rng, blocks, scales, ROWS, ROW_BLOCKS * 32, 127);
  scales[5 * ROW_BLOCKS + 2] = 255; /* a NaN block: the fallback decode */
  scales[8 * ROW_BLOCKS + 1] = 0;   /* 2^-127: subnormal, fallback */
  uint16_t dec[ROWS * K];
  /* window: blocks 1..4 of each 6-block row */
  mxl_cpu_isa_generic.mxfp4_to_bf16(dec, K, blocks + 16, scales + 1, ROW_BLOCKS, ROWS, K, 127);
  int ld = K, ld_t = 48;
  uint16_t *p = malloc((size_t)(ROWS + 1) / 2 * ld * 2 * 2), *t = malloc((size_t)K / 2 * ld_t * 2 * 2);
  for (int s = 0; s < n_isa; s++) {
    isas[s]->pack_vnni_mxfp4(p, ld, blocks + 16, scales + 1, ROW_BLOCKS, ROWS, K, 127);
    isas[s]->pack_vnni_t_mxfp4(t, ld_t, blocks + 16, scales + 1, ROW_BLOCKS, ROWS, K, 127);
    int bad = 0;
    for (int r = 0; r < (ROWS + 1) / 2 * 2; r++)
      for (int c = 0; c < K; c++) {
        uint16_t want = r < ROWS ? dec[r * K + c] : 0, got = p[((size_t)(r / 2) * ld + c) * 2 + r % 2];
        bad += isnan(bf(want)) ? !isnan(bf(got)) : got != want;
      }
    for (int k = 0; k < K; k++)
      for (int j = 0; j < ld_t; j++) {
        uint16_t want = j < ROWS ? dec[j * K + k] : 0, got = t[((size_t)(k / 2) * ld_t + j) * 2 + k % 2];
        bad += isnan(bf(want)) ? !isnan(bf(got)) : got != want;
      }
    MXL_CHECK_MSG(bad == 0, "%s: %d MXFP4 packed values differ", isas[s]->name, bad);
  }
  free(p), free(t);
}

/* Both MXFP4 packs against the generic table, bitwise, on ragged shapes
 * with every scale in range, so that the AVX-512 register decodes run (16
 * rows × 4 blocks a step for pack_vnni_t_mxfp4, row pairs × 4 blocks for
 * pack_vnni_mxfp4), and in every fourth trial one scale out of range (its
 * 16-row group or pair step takes the fallback beside fast ones): odd rows
 * and rows not a multiple of 16, ld_dst past the rows or columns, 1 to 8
 * blocks and K = 2880 (90: a step of 2), windows inside wider rows, ±0
 * codes and scales at the ends of the range; nothing written past dst. */
static int packed_differ(const uint16_t *got, const uint16_t *want, size_t n) {
  int bad = 0;
  for (size_t i = 0; i < n; i++) bad += isnan(bf(want[i])) ? !isnan(bf(got[i])) : got[i] != want[i];
  return bad;
}

static void test_packing_mxfp4_shapes(void) {
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas);
  static const int nbs[] = {1, 2, 3, 4, 5, 6, 8, 90};
  enum { GUARD = 64 };
  for (int trial = 0; trial < 64; trial++) {
    int nb = nbs[trial % 8], bias = (trial / 8) % 2 ? MXL_MXFP4_METAL_BIAS : MXL_MXFP4_BIAS;
    int rows = 1 + rng_int(&rng, 70), first = rng_int(&rng, 3), row_blocks = nb + first + rng_int(&rng, 3);
    int K = nb * 32, ld_t = (rows + 15) / 16 * 16 + 16 * rng_int(&rng, 2), ld = K + 16 * rng_int(&rng, 3);
    int lo = bias - 125 > 0 ? bias - 125 : 0, hi = bias + 125 < 255 ? bias + 125 : 255;
    size_t n_blocks = (size_t)rows * row_blocks;
    size_t n_t = (size_t)K / 2 * ld_t * 2, n_p = (size_t)(rows + 1) / 2 * ld * 2;
    uint8_t *blocks = malloc(n_blocks * 16), *scales = malloc(n_blocks);
    for (size_t i = 0; i < n_blocks * 16; i++) {
      unsigned b = (unsigned)rng_next(&rng) & 0xFF;
      /* a quarter of the codes ±0 (0 and 8) */
      if (rng_int(&rng, 4) == 0) b = (b & 0xF0) | (unsigned)(8 * rng_int(&rng, 2));
      if (rng_int(&rng, 4) == 0) b = (b & 0x0F) | (unsigned)(0x80 * rng_int(&rng, 2));
      blocks[i] = (uint8_t)b;
    }
    for (size_t i = 0; i < n_blocks; i++) {
      int pick = rng_int(&rng, 8);
      scales[i] = (uint8_t)(pick == 0 ? lo : pick == 1 ? hi : lo + rng_int(&rng, hi - lo + 1));
    }
    if (trial % 4 == 3) { /* below 2^-125 (or NaN for bias 127): a fallback */
      int r = rng_int(&rng, rows), g = first + rng_int(&rng, nb);
      scales[(size_t)r * row_blocks + g] =
          (uint8_t)(bias == MXL_MXFP4_BIAS && rng_int(&rng, 2) ? 255 : bias - 126 - rng_int(&rng, 2));
    }
    const uint8_t *wb = blocks + first * 16, *ws = scales + first;
    uint16_t *want_t = malloc(n_t * 2), *want_p = malloc(n_p * 2);
    uint16_t *got_t = malloc((n_t + GUARD) * 2), *got_p = malloc((n_p + GUARD) * 2);
    mxl_cpu_isa_generic.pack_vnni_t_mxfp4(want_t, ld_t, wb, ws, row_blocks, rows, K, bias);
    mxl_cpu_isa_generic.pack_vnni_mxfp4(want_p, ld, wb, ws, row_blocks, rows, K, bias);
    for (int s = 0; s < n_isa; s++) {
      memset(got_t, 0xEE, (n_t + GUARD) * 2), memset(got_p, 0xEE, (n_p + GUARD) * 2);
      isas[s]->pack_vnni_t_mxfp4(got_t, ld_t, wb, ws, row_blocks, rows, K, bias);
      isas[s]->pack_vnni_mxfp4(got_p, ld, wb, ws, row_blocks, rows, K, bias);
      int bad_t = packed_differ(got_t, want_t, n_t), bad_p = packed_differ(got_p, want_p, n_p);
      int past = 0;
      for (int i = 0; i < GUARD; i++) past += (got_t[n_t + i] != 0xEEEE) + (got_p[n_p + i] != 0xEEEE);
      MXL_CHECK_MSG(bad_t == 0 && bad_p == 0 && past == 0,
                    "%s rows %d blocks %d (of %d) ld_t %d ld %d bias %d: %d transposed and %d "
                    "paired values differ, %d written past",
                    isas[s]->name, rows, nb, row_blocks, ld_t, ld, bias, bad_t, bad_p, past);
    }
    free(blocks), free(scales), free(want_t), free(want_p), free(got_t), free(got_p);
  }
}

/* ------------------------------------------------------------------ GEMM kernels */

static void test_gemm_kernels(void) {
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas);
  /* the last trials reduce over more than a kernel's chunk (the AVX2
   * kernel widens 256 indices at a time), odd lengths included, and the
   * very last take more rows than a row block (the AVX2 kernel's 96) */
  for (int trial = 0; trial < 48; trial++) {
    int M = 1 + rng_int(&rng, 20), N = 1 + rng_int(&rng, 150), K = 1 + rng_int(&rng, 200);
    if (trial >= 30) K = 1000 + rng_int(&rng, 2100) + (trial == 30 ? 1 : 0);
    if (trial >= 34) M = 97 + rng_int(&rng, 120), N = 17 + rng_int(&rng, 40);
    /* the AMX table's tiles: rows in 16s (and a few past), reductions in
     * 32s, columns filling 0-2 tiles of 16 partly */
    if (trial >= 36) {
      M = 16 * (1 + rng_int(&rng, 8)) + (trial % 3 == 0 ? rng_int(&rng, 16) : 0);
      K = 32 * (1 + rng_int(&rng, 6)), N = 1 + rng_int(&rng, 70);
      if (trial == 36) M = 128, N = 64, K = 64; /* attention's block */
    }
    int lda = K + rng_int(&rng, 3), ldb = K + rng_int(&rng, 3), ldc = N + rng_int(&rng, 3);
    int acc = rng_int(&rng, 2), exact = rng_int(&rng, 2);
    uint16_t *A = malloc((size_t)M * lda * 2), *Al = malloc((size_t)M * lda * 2);
    uint16_t *B = malloc((size_t)N * ldb * 2);
    rng_fill_bf16(&rng, A, (size_t)M * lda, -1, 1), rng_fill_bf16(&rng, Al, (size_t)M * lda, -1e-3, 1e-3);
    rng_fill_bf16(&rng, B, (size_t)N * ldb, -1, 1);
    float *C0 = malloc((size_t)M * ldc * 4), *C = malloc((size_t)M * ldc * 4);
    rng_fill_f32(&rng, C0, (size_t)M * ldc, -1, 1);
    double *want = malloc((size_t)M * N * sizeof *want);
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++) {
        double s = acc ? C0[i * ldc + j] : 0;
        for (int k = 0; k < K; k++)
          s += ((double)bf(A[i * lda + k]) + (exact ? bf(Al[i * lda + k]) : 0.0)) * bf(B[j * ldb + k]);
        want[i * N + j] = s;
      }
    /* the packed form of B (as the weight's transpose) for gemm_bf16_vnni */
    int ld_bp = ((N + 15) / 16) * 16;
    uint16_t *Bp = malloc((size_t)(K + 1) / 2 * ld_bp * 2 * 2);
    mxl_cpu_isa_generic.pack_vnni_t_bf16(Bp, ld_bp, B, ldb, N, K);
    float *got = malloc((size_t)M * N * sizeof *got);
    for (int s = 0; s < n_isa; s++)
      for (int kernel = 0; kernel < 2; kernel++) {
        memcpy(C, C0, (size_t)M * ldc * 4);
        if (kernel == 0)
          isas[s]->gemm_bf16_nt(C, ldc, A, exact ? Al : NULL, lda, B, ldb, M, N, K, acc);
        else
          isas[s]->gemm_bf16_vnni(C, ldc, A, exact ? Al : NULL, lda, Bp, ld_bp, M, N, K, acc);
        int outside = 0;
        for (int i = 0; i < M; i++) {
          for (int j = 0; j < N; j++) got[i * N + j] = C[i * ldc + j];
          for (int j = N; j < ldc; j++) outside += C[i * ldc + j] != C0[i * ldc + j];
        }
        double e = rel_err(got, want, (size_t)M * N);
        double tol = K > 1000 ? 1e-5 : 2e-6; /* fp32 sums of K terms */
        MXL_CHECK_MSG(e < tol && !outside, "%s %s M%d N%d K%d acc%d exact%d: err %g, %d writes outside",
                      isas[s]->name, kernel ? "vnni" : "nt", M, N, K, acc, exact, e, outside);
        /* each row's sums as that row alone (M = 1), bit for bit: a token
         * decoded in a batch gets the logits it gets alone, and a training
         * row the gradients it gets alone, whatever tile its row falls in */
        int differ = 0;
        for (int i = 0; i < M; i++) {
          memcpy(C + i * ldc, C0 + i * ldc, (size_t)N * 4);
          if (kernel == 0)
            isas[s]->gemm_bf16_nt(C + i * ldc, ldc, A + i * lda, exact ? Al + i * lda : NULL, lda,
                                  B, ldb, 1, N, K, acc);
          else
            isas[s]->gemm_bf16_vnni(C + i * ldc, ldc, A + i * lda, exact ? Al + i * lda : NULL,
                                    lda, Bp, ld_bp, 1, N, K, acc);
          for (int j = 0; j < N; j++) differ += memcmp(&C[i * ldc + j], &got[i * N + j], 4) != 0;
        }
        MXL_CHECK_MSG(!differ, "%s %s M%d N%d K%d acc%d exact%d: %d sums differ from the rows' "
                      "own (M = 1)", isas[s]->name, kernel ? "vnni" : "nt", M, N, K, acc, exact,
                      differ);
      }
    free(A), free(Al), free(B), free(C0), free(C), free(want), free(Bp), free(got);
  }
}

static void test_gemm_f32_kernel(void) {
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas);
  for (int trial = 0; trial < 30; trial++) {
    int M = 1 + rng_int(&rng, 20), N = 1 + rng_int(&rng, 150), K = 1 + rng_int(&rng, 80);
    int lda = K + rng_int(&rng, 3), ldb = N + rng_int(&rng, 3), ldc = N + rng_int(&rng, 3);
    int acc = rng_int(&rng, 2), tA = rng_int(&rng, 2);
    float alpha = (float)rng_uniform(&rng, 0.5, 2);
    if (tA) lda = M + rng_int(&rng, 3); /* A stored [K, lda] */
    size_t a_elems = tA ? (size_t)K * lda : (size_t)M * lda;
    int64_t a_rs = tA ? 1 : lda, a_cs = tA ? lda : 1;
    float *A = malloc(a_elems * 4), *B = malloc((size_t)K * ldb * 4);
    float *C0 = malloc((size_t)M * ldc * 4), *C = malloc((size_t)M * ldc * 4);
    rng_fill_f32(&rng, A, a_elems, -1, 1), rng_fill_f32(&rng, B, (size_t)K * ldb, -1, 1);
    rng_fill_f32(&rng, C0, (size_t)M * ldc, -1, 1);
    double *want = malloc((size_t)M * N * sizeof *want);
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++) {
        double s = 0;
        for (int k = 0; k < K; k++) s += (double)A[i * a_rs + k * a_cs] * B[k * ldb + j];
        want[i * N + j] = alpha * s + (acc ? C0[i * ldc + j] : 0);
      }
    float got[20 * 160];
    for (int s = 0; s < n_isa; s++) {
      memcpy(C, C0, (size_t)M * ldc * 4);
      isas[s]->gemm_f32_nn(C, ldc, A, a_rs, a_cs, B, ldb, M, N, K, alpha, acc);
      for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) got[i * N + j] = C[i * ldc + j];
      double e = rel_err(got, want, (size_t)M * N);
      MXL_CHECK_MSG(e < 1e-5, "%s M%d N%d K%d tA%d: err %g", isas[s]->name, M, N, K, tA, e);
    }
    free(A), free(B), free(C0), free(C), free(want);
  }
}

/* C (+)= alpha·A·Bᵀ with both operands K-contiguous, ragged tiles and K
 * tails, padded strides. */
static void test_gemm_f32_nt_kernel(void) {
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas);
  for (int trial = 0; trial < 30; trial++) {
    int M = 1 + rng_int(&rng, 20), N = 1 + rng_int(&rng, 40), K = 1 + rng_int(&rng, 300);
    int lda = K + rng_int(&rng, 3), ldb = K + rng_int(&rng, 3), ldc = N + rng_int(&rng, 3);
    int acc = rng_int(&rng, 2);
    float alpha = (float)rng_uniform(&rng, 0.5, 2);
    float *A = malloc((size_t)M * lda * 4), *B = malloc((size_t)N * ldb * 4);
    float *C0 = malloc((size_t)M * ldc * 4), *C = malloc((size_t)M * ldc * 4);
    rng_fill_f32(&rng, A, (size_t)M * lda, -1, 1), rng_fill_f32(&rng, B, (size_t)N * ldb, -1, 1);
    rng_fill_f32(&rng, C0, (size_t)M * ldc, -1, 1);
    double *want = malloc((size_t)M * N * sizeof *want);
    float *got = malloc((size_t)M * N * sizeof *got);
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++) {
        double s = 0;
        for (int k = 0; k < K; k++) s += (double)A[i * lda + k] * B[j * ldb + k];
        want[i * N + j] = alpha * s + (acc ? C0[i * ldc + j] : 0);
      }
    for (int s = 0; s < n_isa; s++) {
      memcpy(C, C0, (size_t)M * ldc * 4);
      isas[s]->gemm_f32_nt(C, ldc, A, lda, B, ldb, M, N, K, alpha, acc);
      int outside = 0; /* the padding columns stay as they were */
      for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) got[i * N + j] = C[i * ldc + j];
        for (int j = N; j < ldc; j++) outside += C[i * ldc + j] != C0[i * ldc + j];
      }
      double e = rel_err(got, want, (size_t)M * N);
      MXL_CHECK_MSG(e < 1e-5 && outside == 0, "%s M%d N%d K%d: err %g, %d padding values written",
                    isas[s]->name, M, N, K, e, outside);
    }
    free(A), free(B), free(C0), free(C), free(want), free(got);
  }
}

/* The backend's clear: one under the threads' minimum (one thread) and one
 * large enough to split over both, unaligned and ending inside a piece;
 * every byte cleared, none outside touched. */
static void test_zero_split(void) {
  mxl_backend *be = NULL;
  MXL_CHECK_OK(mxl_backend_cpu_create(2, &be));
  if (!be) return;
  size_t sizes[2] = {1000, ((size_t)9 << 20) + 12345};
  for (int i = 0; i < 2; i++) {
    size_t n = sizes[i];
    unsigned char *buf = malloc(n + 2);
    memset(buf, 0xAB, n + 2);
    be->ops->zero(be, buf + 1, n);
    size_t nonzero = 0;
    for (size_t j = 1; j <= n; j++) nonzero += buf[j] != 0;
    MXL_CHECK_MSG(nonzero == 0 && buf[0] == 0xAB && buf[n + 1] == 0xAB,
                  "%zu bytes: %zu not cleared, edges %02x %02x", n, nonzero, buf[0], buf[n + 1]);
    free(buf);
  }
  mxl_backend_destroy(be);
}

/* Blocks of an fp32 matrix transposed: exact, nothing outside written. */
static void test_transpose_f32(void) {
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas);
  enum { LD_SRC = 70, LD_DST = 60 };
  float src[50 * LD_SRC], dst[70 * LD_DST];
  rng_fill_f32(&rng, src, 50 * LD_SRC, -1, 1);
  int shapes[4][2] = {{1, 1}, {16, 16}, {17, 33}, {50, 70}};
  for (int s = 0; s < n_isa; s++)
    for (int t = 0; t < 4; t++) {
      int rows = shapes[t][0], cols = shapes[t][1], bad = 0;
      for (int i = 0; i < 70 * LD_DST; i++) dst[i] = -7.0f;
      isas[s]->transpose_f32(dst, LD_DST, src, LD_SRC, rows, cols);
      for (int c = 0; c < 70; c++)
        for (int r = 0; r < LD_DST; r++) {
          float want = c < cols && r < rows ? src[r * LD_SRC + c] : -7.0f;
          bad += dst[c * LD_DST + r] != want;
        }
      MXL_CHECK_MSG(bad == 0, "%s %dx%d: %d values differ", isas[s]->name, rows, cols, bad);
    }
}

/* The decode matrix-vector product: a row with a NaN scale, one with a
 * subnormal scale (fallback rows), an odd block count, exact mode. */
/* The decode GEMV on activations whose blocks span many binades (the
 * AVX2 table multiplies them as int16 planes: activations down to 2^-7 of
 * a block's largest exactly in one, down to 2^-15 in the other, smaller
 * ones rounded to 2^-23 of it). Per block, of every 10 values 4 large, 4
 * at 2^-8..2^-14 of them, 1 at 2^-16..2^-30 and 1 a bf16 subnormal, with
 * a ±0 block; then activations the integer planes do not take (an
 * infinity, a block at 2^60, every block near 2^-112 with one of
 * subnormals only), which take the fp32 path; then all zeros. Each row
 * against a double reference, the bound relative to Σ|w·x| (what fp32
 * sums of the exact products keep). */
static void test_gemv_mxfp4_wide_blocks(void) {
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas);
  enum { N = 7, NB = 90, K = NB * 32 };
  uint8_t *blocks = malloc(N * NB * 16), *scales = malloc(N * NB);
  rng_fill_mxfp4(&rng, blocks, scales, N, K, 127);
  /* scales at the integer path's limits (±40 from the bias: kept) and past
   * them, in the 8-block groups and in the tail: beside blocks 10 and 89's
   * activations near 2^-40, 2^-90 would put the integer path's factor
   * outside the normal floats (the row takes the fp32 path) */
  scales[3 * NB + 10] = 127 - 90, scales[5 * NB + 89] = 127 - 90;
  scales[6 * NB + 3] = 127 + 40, scales[6 * NB + 88] = 127 - 40;
  uint16_t xh[K];
  for (int c = 0; c < 5; c++) {
    for (int g = 0; g < NB; g++)
      for (int t = 0; t < 32; t++) {
        double big = ldexp(1.0, (g == 10 || g == 89 ? -39 : g % 9 - 4) - (c == 3 ? 112 : 0)), v;
        /* 13 blocks with all values within 2^-7 of the largest (plane 1 alone) */
        int kind = g % 7 == 2 ? (t * 3 + g) % 4 : (t * 7 + g) % 10;
        if (kind < 4) v = big * rng_uniform(&rng, 0.5, 1.0);
        else if (kind < 8) v = big * ldexp(rng_uniform(&rng, 0.5, 1.0), -8 - rng_int(&rng, 7));
        else if (kind < 9) v = big * ldexp(rng_uniform(&rng, 0.5, 1.0), -16 - rng_int(&rng, 15));
        else v = ldexp(rng_uniform(&rng, 0.5, 1.0), -128 - rng_int(&rng, 5)); /* bf16 subnormal */
        xh[g * 32 + t] = mxl_f32_to_bf16((float)(rng_int(&rng, 2) ? v : -v));
      }
    for (int t = 0; t < 32; t++) xh[17 * 32 + t] = (uint16_t)(t % 2 ? 0x8000 : 0); /* ±0 */
    if (c == 1) xh[40 * 32 + 5] = 0x7F80;                                        /* +inf */
    if (c == 2)
      for (int t = 0; t < 32; t++) xh[60 * 32 + t] = mxl_f32_to_bf16(ldexpf(1.5f, 60));
    if (c == 3)
      for (int t = 0; t < 32; t++) xh[60 * 32 + t] = (uint16_t)(0x0001 + t); /* subnormals only */
    if (c == 4) memset(xh, 0, sizeof xh);
    /* [0] exact; [1] as the avx512bf16 table computes: vdpbf16ps reads
     * bf16 subnormal inputs as zero and flushes subnormal fp32 results
     * (Intel SDM, VDPBF16PS: DAZ and FTZ whatever MXCSR says), on the
     * unscaled E2M1 values (the block scale multiplies the sums after).
     * That matters only where a block scale of 2^40 lifts such products
     * into the row's leading digits (row 6 of case 3); flushed partial
     * sums would cost under 2·K·2^-126 in all. */
    double want[2][N], mag[2][N];
    for (int j = 0; j < N; j++) {
      for (int d = 0; d < 2; d++) want[d][j] = mag[d][j] = 0;
      for (int g = 0; g < NB; g++) {
        float w[32];
        mxl_mxfp4_decode_block(blocks + (j * NB + g) * 16, scales[j * NB + g], 127, w);
        for (int t = 0; t < 32; t++) {
          uint16_t xb = xh[g * 32 + t];
          double p = (double)w[t] * bf(xb);
          double unscaled = fabs(p) * ldexp(1.0, 127 - scales[j * NB + g]);
          int flushed = ((xb & 0x7F80) == 0 && (xb & 0x7F) != 0) || unscaled < 0x1p-126;
          want[0][j] += p, mag[0][j] += fabs(p);
          if (!flushed) want[1][j] += p, mag[1][j] += fabs(p);
        }
      }
    }
    for (int s = 0; s < n_isa; s++) {
      float y[N];
      int daz = !strncmp(isas[s]->name, "avx512bf16", 10);
      double *wj = want[daz], *mj = mag[daz], slack = daz ? 2.0 * K * 0x1p-126 : 0;
      isas[s]->gemv_mxfp4(y, xh, NULL, blocks, scales, NB, N, K, 127);
      for (int j = 0; j < N; j++) {
        int ok = c == 1 ? isnan(y[j]) == isnan(wj[j]) && (isnan(y[j]) || y[j] == wj[j])
                        : fabs(y[j] - wj[j]) <= 2e-7 * mj[j] + slack;
        MXL_CHECK_MSG(ok, "%s case %d row %d: %.9g vs %.9g (Σ|w·x| %.3g)", isas[s]->name, c, j,
                      (double)y[j], wj[j], mj[j]);
      }
    }
  }
  free(blocks), free(scales);
}

static void test_gemv_mxfp4(void) {
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas);
  enum { N = 19, NB = 91, K = NB * 32 };
  uint8_t *blocks = malloc(N * NB * 16), *scales = malloc(N * NB);
  rng_fill_mxfp4(&rng, blocks, scales, N, K, 127);
  scales[3 * NB + 40] = 255;
  scales[6 * NB + 7] = 1;
  float x[K];
  uint16_t xh[K], xl[K];
  rng_fill_f32(&rng, x, K, -1, 1);
  mxl_cpu_isa_generic.to_bf16_split(xh, xl, x, K);
  double want[2][N];
  for (int j = 0; j < N; j++)
    for (int ex = 0; ex < 2; ex++) {
      double s = 0;
      for (int g = 0; g < NB; g++) {
        float w[32];
        mxl_mxfp4_decode_block(blocks + (j * NB + g) * 16, scales[j * NB + g], 127, w);
        for (int t = 0; t < 32; t++)
          s += (double)w[t] * (ex ? x[g * 32 + t] : bf(xh[g * 32 + t]));
      }
      want[ex][j] = s;
    }
  for (int s = 0; s < n_isa; s++)
    for (int ex = 0; ex < 2; ex++) {
      float y[N];
      isas[s]->gemv_mxfp4(y, xh, ex ? xl : NULL, blocks, scales, NB, N, K, 127);
      MXL_CHECK_MSG(isnan(y[3]), "%s: the NaN-scale row gives %g", isas[s]->name, y[3]);
      y[3] = 0, want[ex][3] = 0;
      double e = rel_err(y, want[ex], N);
      MXL_CHECK_MSG(e < (ex ? 2e-5 : 1e-5), "%s exact%d: err %g", isas[s]->name, ex, e);
    }
  /* Rows with tiny and huge scales, each against its own magnitude: 2^-101
   * is the AVX2 kernel's smallest in-kernel scale (its block scale times
   * 2^-25 must stay a normal float), 2^-102 takes its portable decode;
   * 2^-125 is the low end of the AVX-512 kernels' range; 2^100 is large,
   * with sums that stay finite. */
  static const int exps[5] = {-101, -102, -125, 100, -100};
  for (int r = 0; r < 10; r++) {
    /* one block at the scale under test, early or late in the row (kernels
     * check scales in vectors and a scalar tail), the rest at 2^-100 */
    int e = exps[r / 2], at = r % 2 ? 80 : 5;
    memset(scales, 127 - 100, NB);
    scales[at] = (uint8_t)(127 + e);
    double s = 0;
    for (int g = 0; g < NB; g++) {
      float w[32];
      mxl_mxfp4_decode_block(blocks + g * 16, scales[g], 127, w);
      for (int t = 0; t < 32; t++) s += (double)w[t] * bf(xh[g * 32 + t]);
    }
    for (int t = 0; t < n_isa; t++) {
      float y;
      isas[t]->gemv_mxfp4(&y, xh, NULL, blocks, scales, NB, 1, K, 127);
      MXL_CHECK_MSG(fabs(y - s) <= 1e-5 * fabs(s), "%s block %d at 2^%d: %g vs %g",
                    isas[t]->name, at, e, (double)y, s);
    }
  }
  free(blocks), free(scales);
}

/* The integer MXFP4 product of decoding and few rows (gemm_mxfp4_q8,
 * where a table has one) against a double reference on the same bf16
 * activations. Per block of 32 (max |x| < 2^e) it puts the activations on
 * steps of 2^(e-22): exact for elements within 2^-15 of the largest,
 * smaller ones rounded half to even, so a result is within
 * Σ_b 2^(e_b-23)·Σ_b|w| of the exact sum, plus what fp32 sums keep, and
 * equals the sum over activations on those steps up to fp32 sums. Cases:
 * uniform blocks; blocks whose elements spread over 2^-30..1 of their
 * largest (many off the steps); an infinity. 1 and 6 activation rows
 * (tiles of 4 rows and the rest) of 91 blocks (a tail group of 3), of
 * magnitudes 2^-4..2^4 per block, a zero block, one near 2^-100 and one of
 * bf16 subnormals only (counted as zeros, as vdpbf16ps does); 19 weight
 * rows (tiles of 4 and 2 and single rows), one with the NaN scale and one
 * with a scale below the kernel's range (the portable decode). */
static void test_gemm_mxfp4_q8(void) {
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas), ran = 0;
  enum { N = 19, NB = 91, K = NB * 32, M = 6, NAN_ROW = 3, SLOW_ROW = 6, SUB_BLOCK = 70 };
  uint8_t *blocks = malloc(N * NB * 16), *scales = malloc(N * NB);
  uint8_t *xq = aligned_alloc(64, M * mxl_cpu_q8_bytes(K));
  float *y = malloc(sizeof(float) * M * N);
  uint16_t *xh = malloc(sizeof(uint16_t) * M * K);
  int(*step_e)[NB] = malloc(sizeof(int[M][NB]));
  rng_fill_mxfp4(&rng, blocks, scales, N, K, 127);
  scales[NAN_ROW * NB + 40] = 255;
  scales[SLOW_ROW * NB + 7] = 1;
  for (int c = 0; c < 3; c++) /* uniform, spread, with an infinity */
    for (int rows = 1; rows <= M; rows += M - 1) {
      for (int i = 0; i < rows; i++)
        for (int g = 0; g < NB; g++) {
          double mag = g == 20 ? 0 : ldexp(1.0, g == 50 ? -100 : (g + i) % 9 - 4);
          uint16_t *xb = xh + i * K + g * 32;
          float mx = 0;
          for (int t = 0; t < 32; t++) {
            double v = mag * rng_uniform(&rng, -1, 1);
            if (c == 1) v = ldexp(v, -rng_int(&rng, 31));
            xb[t] = g == SUB_BLOCK ? (uint16_t)(1 + t) : mxl_f32_to_bf16((float)v);
            mx = fmaxf(mx, fabsf(bf(xb[t])));
          }
          frexpf(mx, &step_e[i][g]); /* mx < 2^e: steps of 2^(e-22) */
        }
      if (c == 2) xh[(rows - 1) * K + 33 * 32 + 9] = 0x7F80; /* +inf */
      for (int s = 0; s < n_isa; s++) {
        if (!isas[s]->gemm_mxfp4_q8) continue;
        ran = 1;
        for (int i = 0; i < rows; i++)
          isas[s]->quantize_q8(xq + i * mxl_cpu_q8_bytes(K), xh + i * K, K);
        isas[s]->gemm_mxfp4_q8(y, N, xq, xh, K, blocks, scales, NB, rows, N, K, 127);
        for (int i = 0; i < rows; i++)
          for (int j = 0; j < N; j++) {
            /* want: on x; want_q: on x put on its block's steps */
            double want = 0, want_q = 0, mag = 0, bound = 0;
            for (int g = 0; g < NB; g++) {
              float w[32];
              double wsum = 0, stp = ldexp(1.0, step_e[i][g] - 22);
              mxl_mxfp4_decode_block(blocks + (j * NB + g) * 16, scales[j * NB + g], 127, w);
              for (int t = 0; t < 32; t++) {
                double xv = bf(xh[i * K + g * 32 + t]);
                double xr = j == SLOW_ROW || stp == 0 ? xv : nearbyint(xv / stp) * stp;
                if (g == SUB_BLOCK && j != SLOW_ROW) xr = 0;
                want += (double)w[t] * xv, want_q += (double)w[t] * xr;
                mag += fabs((double)w[t] * xv), wsum += fabs(w[t]);
              }
              if (j != SLOW_ROW) bound += ldexp(wsum, step_e[i][g] - 23);
            }
            /* fp32 sums: the portable decode's one sequential sum is looser */
            float got = y[i * N + j];
            double sums = (j == SLOW_ROW ? 2e-6 : 2e-7) * mag;
            int ok = j == NAN_ROW               ? isnan(got)
                     : c == 2 && i == rows - 1 ? !isfinite(got) /* NaN here, ±inf portable */
                                               : fabs(got - want) <= bound + sums &&
                                                     fabs(got - want_q) <= sums;
            MXL_CHECK_MSG(ok, "%s case %d, %d rows, [%d, %d]: %.9g vs %.9g, on the steps %.9g "
                          "(bound %.3g, Σ|w·x| %.3g)", isas[s]->name, c, rows, i, j, (double)got,
                          want, want_q, bound, mag);
          }
      }
    }
  free(y), free(xh), free(step_e);
  if (!ran) printf("skip test_gemm_mxfp4_q8: no table on this CPU has the integer kernel\n");
  free(blocks), free(scales), free(xq);
}

/* The bf16 matrix-vector product of decoding: ragged row counts (tiles of
 * 4 and single rows), K tails, padded row stride, exact mode. */
static void test_gemv_bf16(void) {
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas);
  for (int trial = 0; trial < 13; trial++) {
    int N = 1 + rng_int(&rng, 40), K = 1 + rng_int(&rng, 700), ldw = K + rng_int(&rng, 5);
    if (trial == 12) K = 8192 + 311, ldw = K + 3; /* past the AVX2 kernel's 8192-long chunks */
    uint16_t *W = malloc((size_t)N * ldw * 2), *x = malloc((size_t)K * 2), *xl = malloc((size_t)K * 2);
    rng_fill_bf16(&rng, W, (size_t)N * ldw, -1, 1), rng_fill_bf16(&rng, x, K, -1, 1);
    rng_fill_bf16(&rng, xl, K, -1e-3, 1e-3);
    double want[2][40];
    for (int j = 0; j < N; j++)
      for (int ex = 0; ex < 2; ex++) {
        double t = 0;
        for (int k = 0; k < K; k++) t += ((double)bf(x[k]) + (ex ? bf(xl[k]) : 0.0)) * bf(W[j * ldw + k]);
        want[ex][j] = t;
      }
    for (int s = 0; s < n_isa; s++)
      for (int ex = 0; ex < 2; ex++) {
        float y[41];
        y[N] = 12345.0f;
        isas[s]->gemv_bf16(y, x, ex ? xl : NULL, W, ldw, N, K);
        double e = rel_err(y, want[ex], N);
        double tol = K > 1000 ? 1e-5 : 2e-6; /* fp32 sums of K terms */
        MXL_CHECK_MSG(e < tol && y[N] == 12345.0f, "%s N%d K%d exact%d: err %g", isas[s]->name,
                      N, K, ex, e);
        /* bit for bit the few-row product's sums: a token decoded alone
         * gets the logits it gets in a small batch */
        float g[40];
        isas[s]->gemm_bf16_nt(g, N, x, ex ? xl : NULL, K, W, ldw, 1, N, K, 0);
        MXL_CHECK_MSG(!memcmp(g, y, (size_t)N * sizeof *y), "%s N%d K%d exact%d: gemv and gemm "
                      "M=1 differ", isas[s]->name, N, K, ex);
      }
    free(W), free(x), free(xl);
  }
}

/* Few activation rows against MXFP4 rows (one decode per block for all of
 * them): every row count of the kernel's chunks, ragged weight rows, block
 * counts with and without a partial last group, a NaN-scale row and an
 * out-of-range scale (portable rows), exact mode. */
static void test_gemm_mxfp4_nt(void) {
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas);
  int nbs[3] = {91, 92, 93};
  for (int trial = 0; trial < 9; trial++) {
    int NB = nbs[trial % 3], K = NB * 32, N = 1 + rng_int(&rng, 13), M = 1 + trial % 12;
    int ldc = N + 2, lda = K + 7;
    uint8_t *blocks = malloc((size_t)N * NB * 16), *scales = malloc((size_t)N * NB);
    rng_fill_mxfp4(&rng, blocks, scales, N, K, 127);
    if (trial % 2) scales[(N - 1) * NB + 5] = 255;
    if (N > 2) scales[1 * NB + NB - 1] = 1;
    uint16_t *A = malloc((size_t)M * lda * 2), *Al = malloc((size_t)M * lda * 2);
    rng_fill_bf16(&rng, A, (size_t)M * lda, -1, 1), rng_fill_bf16(&rng, Al, (size_t)M * lda, -1e-3, 1e-3);
    uint16_t *work = malloc((size_t)2 * M * ((K + 127) / 128 * 128) * 2);
    double *want = malloc((size_t)2 * M * N * sizeof *want);
    float *C = malloc((size_t)M * ldc * 4), *got = malloc((size_t)M * N * 4);
    for (int ex = 0; ex < 2; ex++)
      for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
          double t = 0;
          for (int g = 0; g < NB; g++) {
            float w[32];
            mxl_mxfp4_decode_block(blocks + (j * NB + g) * 16, scales[j * NB + g], 127, w);
            for (int q = 0; q < 32; q++)
              t += (double)w[q] * ((double)bf(A[i * lda + g * 32 + q]) + (ex ? bf(Al[i * lda + g * 32 + q]) : 0.0));
          }
          want[(ex * M + i) * N + j] = t;
        }
    for (int s = 0; s < n_isa; s++) {
      if (!isas[s]->gemm_mxfp4_nt) continue;
      for (int ex = 0; ex < 2; ex++) {
        for (size_t q = 0; q < (size_t)M * ldc; q++) C[q] = -7.0f;
        isas[s]->gemm_mxfp4_nt(C, ldc, A, ex ? Al : NULL, lda, blocks, scales, NB, M, N, K, 127,
                               work);
        int nan_ok = 1, outside = 0;
        for (int i = 0; i < M; i++) {
          for (int j = 0; j < N; j++) got[i * N + j] = C[i * ldc + j];
          for (int j = N; j < ldc; j++) outside += C[i * ldc + j] != -7.0f;
          if (trial % 2) { /* the NaN-scale row gives NaN, then is left out of the comparison */
            nan_ok &= isnan(got[i * N + N - 1]) != 0;
            got[i * N + N - 1] = 0;
          }
        }
        double *w = want + (size_t)ex * M * N;
        if (trial % 2)
          for (int i = 0; i < M; i++) w[i * N + N - 1] = 0;
        double e = rel_err(got, w, (size_t)M * N);
        MXL_CHECK_MSG(e < 2e-5 && nan_ok && !outside, "%s M%d N%d NB%d exact%d: err %g nan %d outside %d",
                      isas[s]->name, M, N, NB, ex, e, nan_ok, outside);
      }
    }
    free(blocks), free(scales), free(A), free(Al), free(work), free(want), free(C), free(got);
  }
}

static void test_vector_helpers(void) {
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas);
  enum { N = 61 };
  float x[N], y[N], z[N];
  rng_fill_f32(&rng, x, N, -30, 5);
  rng_fill_f32(&rng, y, N, -1, 1);
  uint64_t keep = rng_next(&rng) & ((1ull << N) - 1);
  double dot = 0, mx = -INFINITY, se = 0, mmx = -INFINITY, mse = 0;
  for (int i = 0; i < N; i++) {
    dot += (double)x[i] * y[i];
    mx = fmax(mx, x[i]);
    se += exp((double)x[i] - 2.0);
    if (keep >> i & 1) mmx = fmax(mmx, x[i]), mse += exp((double)x[i] - 2.0);
  }
  for (int s = 0; s < n_isa; s++) {
    const mxl_cpu_isa *I = isas[s];
    MXL_CHECK_MSG(fabs(I->dot_f32(x, y, N) - dot) < 1e-4, "%s dot", I->name);
    MXL_CHECK_MSG(I->max_f32(x, N) == (float)mx, "%s max", I->name);
    MXL_CHECK_MSG(fabs(I->sum_exp_f32(x, N, 2.0f) - se) < 2e-6 * se, "%s sum_exp", I->name);
    MXL_CHECK_MSG(I->masked_max_f32(x, keep, N) == (float)mmx, "%s masked_max", I->name);
    MXL_CHECK_MSG(I->masked_max_f32(x, 0, N) == -INFINITY, "%s masked_max of nothing", I->name);
    MXL_CHECK_MSG(fabs(I->masked_exp_f32(z, x, keep, N, 2.0f) - mse) < 2e-6 * mse, "%s masked_exp",
                  I->name);
    int bad = 0;
    for (int i = 0; i < N; i++)
      bad += (keep >> i & 1) ? fabs(z[i] - exp((double)x[i] - 2.0)) > 2e-6 * exp((double)x[i] - 2.0)
                             : z[i] != 0.0f;
    I->exp_f32(z, x, N, 2.0f, 3.0f);
    for (int i = 0; i < N; i++) bad += fabs(z[i] - 3 * exp((double)x[i] - 2.0)) > 6e-6 * exp((double)x[i] - 2.0);
    memcpy(z, y, sizeof z);
    I->axpy_f32(z, 0.5f, x, N);
    for (int i = 0; i < N; i++) bad += fabsf(z[i] - (y[i] + 0.5f * x[i])) > 1e-5f;
    memcpy(z, y, sizeof z);
    I->scale_f32(z, -2.0f, N);
    for (int i = 0; i < N; i++) bad += z[i] != -2.0f * y[i];
    memcpy(z, y, sizeof z);
    I->mul_sub_f32(z, x, 0.25f, N);
    for (int i = 0; i < N; i++) bad += fabsf(z[i] - x[i] * (y[i] - 0.25f)) > 1e-5f * fabsf(x[i]) + 1e-6f;
    MXL_CHECK_MSG(bad == 0, "%s: %d elementwise results off", I->name, bad);
    /* exp of -inf and of huge negative inputs is 0, NaN stays NaN */
    float special[3] = {-INFINITY, -1e30f, NAN}, out[3];
    I->exp_f32(out, special, 3, 0.0f, 1.0f);
    MXL_CHECK_MSG(out[0] < 1e-37f && out[1] < 1e-37f && isnan(out[2]), "%s: exp specials %g %g %g",
                  I->name, out[0], out[1], out[2]);
  }
}

/* ------------------------------------------------------------------ ops vs the reference */

typedef struct both {
  mxl_backend *ref, *cpu;
} both;

static both open_both(int exact) {
  both b = {NULL, NULL};
  MXL_CHECK_OK(mxl_backend_ref_create(&b.ref));
  MXL_CHECK_OK(mxl_backend_cpu_create(2, &b.cpu));
  if (b.cpu) mxl_backend_cpu_set_exact(b.cpu, exact);
  return b;
}

static void close_both(both *b) {
  if (b->cpu) MXL_CHECK_OK(b->cpu->ops->sync(b->cpu));
  mxl_backend_destroy(b->ref);
  mxl_backend_destroy(b->cpu);
}

/* Normalised RMS error of got against want (both float). */
static double nrms(const float *got, const float *want, size_t n) {
  double e = 0, w = 0;
  for (size_t i = 0; i < n; i++) {
    if (isnan(got[i]) || isnan(want[i])) return INFINITY;
    e += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
    w += (double)want[i] * want[i];
  }
  return w > 0 ? sqrt(e / w) : sqrt(e);
}

/* K = 2880 MXFP4 rows: one-row groups (gemv), small groups (rows in place),
 * large groups (packed panels); forward and dx; fast and exact. */
static void test_mxfp4_ops_gpt_oss_rows(void) {
  enum { E = 4, N = 72, K = 2880, NB = K / 32 };
  int counts[E] = {1, 5, 0, 23}; /* rows per expert */
  int m = 0;
  for (int e = 0; e < E; e++) m += counts[e];
  uint8_t *blocks = malloc((size_t)E * N * NB * 16), *scales = malloc((size_t)E * N * NB);
  uint16_t bias[E * N];
  rng_fill_mxfp4(&rng, blocks, scales, (int64_t)E * N, K, 127);
  rng_fill_bf16(&rng, bias, E * N, -1, 1);
  mxl_mxfp4_weight W = {blocks, scales, bias, (size_t)N * NB * 16, (size_t)N * NB, N, N, K, E, 127};
  int32_t off[E + 1] = {0};
  for (int e = 0; e < E; e++) off[e + 1] = off[e] + counts[e];
  mxl_moe_plan plan = {m, 1, E, NULL, NULL, NULL, NULL, off, off};
  float *x = malloc((size_t)m * K * 4), *y0 = malloc((size_t)m * N * 4), *y1 = malloc((size_t)m * N * 4);
  float *dy = malloc((size_t)m * N * 4), *dx0 = malloc((size_t)m * K * 4), *dx1 = malloc((size_t)m * K * 4);
  rng_fill_f32(&rng, x, (size_t)m * K, -1, 1), rng_fill_f32(&rng, dy, (size_t)m * N, -1, 1);
  for (int exact = 0; exact < 2; exact++) {
    both b = open_both(exact);
    if (!b.ref || !b.cpu) return;
    b.ref->ops->mxfp4_matmul(b.ref, y0, x, &W, &plan);
    b.cpu->ops->mxfp4_matmul(b.cpu, y1, x, &W, &plan);
    memset(dx0, 0, (size_t)m * K * 4), memset(dx1, 0, (size_t)m * K * 4);
    b.ref->ops->mxfp4_matmul_dx(b.ref, dx0, dy, &W, &plan);
    b.cpu->ops->mxfp4_matmul_dx(b.cpu, dx1, dy, &W, &plan);
    double ey = nrms(y1, y0, (size_t)m * N), ed = nrms(dx1, dx0, (size_t)m * K);
    double tol = exact ? 1e-5 : 4e-3;
    MXL_CHECK_MSG(ey < tol, "exact%d forward nrms %g", exact, ey);
    MXL_CHECK_MSG(ed < tol, "exact%d dx nrms %g", exact, ed);
    close_both(&b);
  }
  free(blocks), free(scales), free(x), free(y0), free(y1), free(dy), free(dx0), free(dx1);
}

/* The oneDNN paths on gpt-oss rows (K = 2880: strips and panels with
 * tails): in "large" mode the groups of at least MXL_CPU_DNNL_MIN_ROWS rows
 * go to oneDNN and the others stay on the hand-written kernels, in "all"
 * mode every group does; results against the reference, and the product
 * count proves which path ran. Skipped without oneDNN. */
static void dnnl_paths(int N) {
  enum { E = 3, K = 2880, NB = K / 32, NQ = 200 };
  int counts[E] = {40, 3, 70};
  int m = 0;
  for (int e = 0; e < E; e++) m += counts[e];
  uint8_t *blocks = malloc((size_t)E * N * NB * 16), *scales = malloc((size_t)E * N * NB);
  uint16_t *bias = malloc(E * N * 2), *wq = malloc((size_t)NQ * K * 2), *bq = malloc(NQ * 2);
  rng_fill_mxfp4(&rng, blocks, scales, (int64_t)E * N, K, 127);
  rng_fill_bf16(&rng, bias, E * N, -1, 1), rng_fill_bf16(&rng, wq, (size_t)NQ * K, -1, 1);
  rng_fill_bf16(&rng, bq, NQ, -1, 1);
  mxl_mxfp4_weight W = {blocks, scales, bias, (size_t)N * NB * 16, (size_t)N * NB, N, N, K, E, 127};
  mxl_bf16_weight Q = {wq, bq, NQ, K};
  int32_t off[E + 1] = {0};
  for (int e = 0; e < E; e++) off[e + 1] = off[e] + counts[e];
  mxl_moe_plan plan = {m, 1, E, NULL, NULL, NULL, NULL, off, off};
  size_t big = (size_t)m * K;
  float *x = malloc(big * 4), *dy = malloc(big * 4), *r = malloc(big * 4), *c = malloc(big * 4);
  rng_fill_f32(&rng, x, big, -1, 1), rng_fill_f32(&rng, dy, big, -1, 1);
  for (int mode = 1; mode <= 2; mode++) {
    both b = open_both(0);
    if (!b.ref || !b.cpu) return;
    if (mxl_backend_cpu_set_dnnl(b.cpu, mode) != mode) {
#if defined(MXL_HAVE_DNNL) && defined(MXL_CPU_X86)
      /* oneDNN 2.6 multiplies bf16 wherever AVX-512 BF16 is: a probe that
       * refused it there would turn oneDNN off on AMX hosts unseen */
      MXL_CHECK_MSG(!__builtin_cpu_supports("avx512bf16"),
                    "oneDNN refused a bf16 matmul on a CPU with AVX-512 BF16");
#endif
      printf("skip test_dnnl_paths: no oneDNN bf16 matmul in this build or on this CPU\n");
      mxl_test_skips++;
      close_both(&b);
      break;
    }
    const mxl_cpu_dnnl *d = mxl_cpu_of(b.cpu)->dnnl;
    uint64_t runs = mxl_cpu_dnnl_runs(d);
    /* expert forward and dx, dense forward and dx over all m rows, then 8 rows */
    for (int op = 0; op < 6; op++) {
      int rows = op < 4 ? m : 8;
      size_t nout = (size_t)rows * (op == 0 ? N : op == 1 ? K : op == 2 || op == 4 ? NQ : K);
      rng_fill_f32(&rng, r, nout, -1, 1);
      memcpy(c, r, nout * 4);
      mxl_backend *be[2] = {b.ref, b.cpu};
      float *out[2] = {r, c};
      for (int i = 0; i < 2; i++) {
        const mxl_ops *o = be[i]->ops;
        if (op == 0) o->mxfp4_matmul(be[i], out[i], x, &W, &plan);
        if (op == 1) o->mxfp4_matmul_dx(be[i], out[i], dy, &W, &plan);
        if (op == 2 || op == 4) o->matmul_bf16(be[i], out[i], x, &Q, rows);
        if (op == 3 || op == 5) o->matmul_bf16_dx(be[i], out[i], dy, &Q, rows);
      }
      MXL_CHECK_OK(b.cpu->ops->sync(b.cpu));
      double e = nrms(c, r, nout);
      uint64_t now = mxl_cpu_dnnl_runs(d);
      int want_dnnl = op < 4 || mode == 2; /* 8 rows: hand-written in large mode */
      MXL_CHECK_MSG(e < 4e-3, "mode %d op %d: nrms %g", mode, op, e);
      MXL_CHECK_MSG((now > runs) == want_dnnl, "mode %d op %d: %llu oneDNN products", mode, op,
                    (unsigned long long)(now - runs));
      runs = now;
    }
    close_both(&b);
  }
  free(blocks), free(scales), free(bias), free(wq), free(bq), free(x), free(dy), free(r), free(c);
}

/* N = 300: plain bf16 panels; N = 320 (forward: two panels of 128 and one
 * of 64; dx: strips of 256 and 64 columns over 320 rows) and 1088 (dx: two
 * depth panels, 1024 and 64 rows): the panels decoded into oneDNN's
 * blocked layout where it reads that layout (AMX). */
static void test_dnnl_paths(void) {
  dnnl_paths(300);
  dnnl_paths(320);
  dnnl_paths(1088);
}

/* The decodes into oneDNN's blocked weights layout BA16a64b2a, element by
 * element against the portable decode placed by the layout's formula. Wᵀ
 * (the forward's B): 80 rows (a group of 64 and a part of the next; the
 * words past row 80 of that group untouched), 3 blocks per row, one row
 * with a NaN scale and one with a scale past the fast path's range among
 * the last 16 (the portable decode for those 16 rows). W (the backward's
 * B): a column window of 64 rows, below. */
static void test_mxfp4_blocked_layout(void) {
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas), tested = 0;
  enum { ROWS = 80, K = 96, NB = K / 32, GROUPS = (ROWS + 63) / 64 };
  uint8_t blocks[ROWS * NB * 16], scales[ROWS * NB];
  rng_fill_mxfp4(&rng, blocks, scales, ROWS, K, 127);
  scales[70 * NB + 1] = 255, scales[75 * NB + 2] = 127 - 126;
  static uint16_t dst[GROUPS * 64 * K];
  for (int s = 0; s < n_isa; s++) {
    if (!isas[s]->mxfp4_to_bf16_ba16a64b2a) continue;
    tested++;
    for (int i = 0; i < GROUPS * 64 * K; i++) dst[i] = 0x1234;
    isas[s]->mxfp4_to_bf16_ba16a64b2a(dst, blocks, scales, NB, ROWS, K, 127);
    int bad = 0, nan_ok = 1, untouched = 0;
    for (int n = 0; n < GROUPS * 64; n++)
      for (int k = 0; k < K; k++) {
        uint16_t got = dst[(n / 64) * 64 * K + (k / 32) * 2048 + (k % 32 / 2) * 128 + (n % 64) * 2 +
                           k % 2];
        if (n >= ROWS) {
          untouched += got == 0x1234;
          continue;
        }
        float w[32];
        mxl_mxfp4_decode_block(blocks + (n * NB + k / 32) * 16, scales[n * NB + k / 32], 127, w);
        uint16_t want = mxl_f32_to_bf16(w[k % 32]);
        if (isnan(w[k % 32])) nan_ok &= isnan(mxl_bf16_to_f32(got));
        else bad += got != want;
      }
    MXL_CHECK_MSG(bad == 0 && nan_ok, "%s: %d values differ, NaN kept %d", isas[s]->name, bad,
                  nan_ok);
    MXL_CHECK_MSG(untouched == (GROUPS * 64 - ROWS) * K, "%s: %d of the padding words written",
                  isas[s]->name, (GROUPS * 64 - ROWS) * K - untouched);
  }
  /* W itself (the backward's B): 64 rows, a window of 4 blocks starting at
   * block 2 of 7, NaN and out-of-range scales inside the window */
  enum { WR = 64, WNB = 7, WG0 = 2, WK = 128 };
  uint8_t wb[WR * WNB * 16], ws[WR * WNB];
  rng_fill_mxfp4(&rng, wb, ws, WR, WNB * 32, 127);
  ws[3 * WNB + 3] = 255, ws[40 * WNB + 5] = 127 + 126;
  static uint16_t wd[WR * WK];
  for (int s = 0; s < n_isa; s++) {
    if (!isas[s]->mxfp4_to_bf16_ba16a64b2a_rows) continue;
    memset(wd, 0, sizeof wd);
    isas[s]->mxfp4_to_bf16_ba16a64b2a_rows(wd, wb + WG0 * 16, ws + WG0, WNB, WR, WK, 127);
    int bad = 0, nan_ok = 1;
    for (int n = 0; n < WR; n++)
      for (int k = 0; k < WK; k++) {
        uint16_t got = wd[(k / 64) * WR * 64 + (n / 32) * 2048 + (n % 32 / 2) * 128 + (k % 64) * 2 +
                          n % 2];
        int g = WG0 + k / 32;
        float w[32];
        mxl_mxfp4_decode_block(wb + (n * WNB + g) * 16, ws[n * WNB + g], 127, w);
        if (isnan(w[k % 32])) nan_ok &= isnan(mxl_bf16_to_f32(got));
        else bad += got != mxl_f32_to_bf16(w[k % 32]);
      }
    MXL_CHECK_MSG(bad == 0 && nan_ok, "%s rows: %d values differ, NaN kept %d", isas[s]->name, bad,
                  nan_ok);
  }
  if (!tested) {
    printf("skip test_mxfp4_blocked_layout: no ISA table here decodes into it\n");
    mxl_test_skips++;
  }
}

/* gemm_f32 at LoRA sizes the op driver keeps small: the six products of
 * one adapted matrix (x·Aᵀ on the dot-product kernel, z·Bᵀ with a packed
 * transposed B, the backward's transposed A), K longer than a packed
 * panel, calls large enough to split over both threads, beta 0, 1 and
 * other — against the reference backend. */
static void test_gemm_f32_lora_shapes(void) {
  both b = open_both(0);
  struct {
    int tA, tB, M, N, K;
    float beta;
  } cases[] = {
      {0, 1, 300, 16, 2880, 0},   {0, 1, 300, 2880, 16, 1},    {1, 0, 2880, 16, 300, 1},
      {0, 0, 300, 16, 2880, 0},   {1, 0, 16, 2880, 300, 1},    {0, 0, 300, 2880, 16, 1},
      {1, 1, 37, 200, 600, 0.5f}, {0, 1, 5, 130, 40, -1},      {0, 1, 1, 64, 2880, 0},
      {1, 0, 64, 16, 3, 2},       {0, 0, 1024, 2880, 32, 1}, /* 94 M multiply-adds: 2 threads */
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    int tA = cases[c].tA, tB = cases[c].tB, M = cases[c].M, N = cases[c].N, K = cases[c].K;
    int lda = (tA ? M : K) + 1, ldb = (tB ? K : N) + 2, ldc = N + 3;
    size_t na = (size_t)(tA ? K : M) * lda, nb = (size_t)(tB ? N : K) * ldb, nc = (size_t)M * ldc;
    float *A = malloc(na * 4), *B = malloc(nb * 4), *C0 = malloc(nc * 4), *C1 = malloc(nc * 4);
    rng_fill_f32(&rng, A, na, -1, 1), rng_fill_f32(&rng, B, nb, -1, 1);
    rng_fill_f32(&rng, C0, nc, -1, 1);
    memcpy(C1, C0, nc * 4);
    b.ref->ops->gemm_f32(b.ref, tA, tB, M, N, K, 0.7f, A, lda, B, ldb, cases[c].beta, C0, ldc);
    b.cpu->ops->gemm_f32(b.cpu, tA, tB, M, N, K, 0.7f, A, lda, B, ldb, cases[c].beta, C1, ldc);
    double e = nrms(C1, C0, nc); /* padding included: it must stay as it was */
    MXL_CHECK_MSG(e < 1e-6, "tA%d tB%d M%d N%d K%d beta %g: nrms %g", tA, tB, M, N, K,
                  cases[c].beta, e);
    free(A), free(B), free(C0), free(C1);
  }
  close_both(&b);
}

/* Attention over several key blocks: causal with a window that cuts blocks,
 * packed documents, a shuffled KV cache with empty slots. The block
 * products on fp32 (exact mode, or bf16 operands turned off: 2e-6), and on
 * bf16 operands where the ISA has bf16 dot products, whichever this host
 * picks by default: held to the op driver's bf16 attention threshold (NMSE
 * 5e-4, an RMS of 0.022). */
static void attention_multiblock(int exact, int bf16) {
  struct {
    mask_kind kind;
    int nq, nk, nh, nkv, d, window;
  } cases[] = {
      {MASK_CAUSAL, 300, 300, 16, 2, 64, 0},  {MASK_CAUSAL, 300, 300, 16, 2, 64, 100},
      {MASK_PACKED, 260, 260, 8, 8, 32, 0},   {MASK_KVCACHE, 7, 333, 16, 4, 64, 128},
      {MASK_CAUSAL, 130, 130, 12, 1, 16, 70}, {MASK_CAUSAL, 150, 150, 64, 8, 64, 128},
      /* decode (cpu_attention.c attention_decode): gpt-oss's 8 query heads
       * per KV head over a long shuffled cache, the key blocks shared by
       * both threads; a window; several queries; a group of 3 */
      {MASK_KVCACHE, 1, 1500, 64, 8, 64, 0},  {MASK_KVCACHE, 1, 1500, 64, 8, 64, 128},
      {MASK_KVCACHE, 5, 900, 64, 8, 64, 0},   {MASK_KVCACHE, 2, 1300, 12, 4, 64, 0},
  };
  both b = open_both(exact);
  if (!b.ref || !b.cpu) return;
  if (mxl_backend_cpu_set_bf16_attention(b.cpu, bf16) != bf16) {
    printf("skip attention_multiblock on bf16 operands: no bf16 dot products here\n");
    mxl_test_skips++;
    close_both(&b);
    return;
  }
  double limit = !exact && mxl_backend_cpu_bf16_attention(b.cpu) ? 0.022 : 2e-6;
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    int nq = cases[c].nq, nk = cases[c].nk, nh = cases[c].nh, nkv = cases[c].nkv, d = cases[c].d;
    int32_t *qp = malloc(nq * 4), *qs = malloc(nq * 4), *kp = malloc(nk * 4), *ks = malloc(nk * 4);
    build_mask(cases[c].kind, 3, qp, qs, kp, ks, nq, nk);
    mxl_attn_mask mask = {qp, qs, kp, ks, cases[c].window};
    size_t nqe = (size_t)nq * nh * d, nke = (size_t)nk * nkv * d;
    float *q = malloc(nqe * 4), *k = malloc(nke * 4), *v = malloc(nke * 4), *dout = malloc(nqe * 4);
    rng_fill_f32(&rng, q, nqe, -2, 2), rng_fill_f32(&rng, k, nke, -2, 2);
    rng_fill_f32(&rng, v, nke, -1, 1), rng_fill_f32(&rng, dout, nqe, -1, 1);
    uint16_t sinks[64];
    rng_fill_bf16(&rng, sinks, nh, -1, 2);
    float *o[2], *l[2], *dq[2], *dk[2], *dv[2];
    mxl_backend *be[2] = {b.ref, b.cpu};
    for (int s = 0; s < 2; s++) {
      o[s] = malloc(nqe * 4), l[s] = malloc((size_t)nq * nh * 4);
      dq[s] = calloc(nqe, 4), dk[s] = calloc(nke, 4), dv[s] = calloc(nke, 4);
      be[s]->ops->attention(be[s], o[s], l[s], q, k, v, sinks, &mask, nq, nk, nh, nkv, d, 0.125f);
      /* both backwards start from the reference forward */
      be[s]->ops->attention_bwd(be[s], dq[s], dk[s], dv[s], dout, o[0], l[0], q, k, v, sinks,
                                &mask, nq, nk, nh, nkv, d, 0.125f);
    }
    double e[5] = {nrms(o[1], o[0], nqe), nrms(l[1], l[0], (size_t)nq * nh),
                   nrms(dq[1], dq[0], nqe), nrms(dk[1], dk[0], nke), nrms(dv[1], dv[0], nke)};
    for (int i = 0; i < 5; i++)
      MXL_CHECK_MSG(e[i] < limit,
                    "exact %d bf16 %d case %zu (kind %d nq %d nk %d window %d): output %d nrms %g",
                    exact, bf16, c, cases[c].kind, nq, nk, cases[c].window, i, e[i]);
    for (int s = 0; s < 2; s++) free(o[s]), free(l[s]), free(dq[s]), free(dk[s]), free(dv[s]);
    free(qp), free(qs), free(kp), free(ks), free(q), free(k), free(v), free(dout);
  }
  close_both(&b);
}

static void test_attention_multiblock(void) {
  attention_multiblock(1, 0);
  attention_multiblock(0, 0);
  attention_multiblock(0, 1);
}

/* Decode's edges (cpu_attention.c attention_decode), 2 threads sharing the
 * key blocks: sinks of -inf (no sink at all) with keys to see, against the
 * reference; and a query that sees no key at all with -inf sinks: out 0
 * and lse -inf, as the blocked path gives, not NaN from merging shares
 * whose maxima are all -inf. */
static void test_attention_decode_edges(void) {
  enum { NQ = 2, NK = 2500, NH = 16, NKV = 2, D = 64 };
  both b = open_both(1);
  if (!b.ref || !b.cpu) return;
  int32_t qp[NQ], qs[NQ], *kp = malloc(NK * 4), *ks = malloc(NK * 4);
  for (int j = 0; j < NK; j++) kp[j] = j, ks[j] = 0;
  qp[0] = qp[1] = NK;
  qs[0] = 0, qs[1] = 7; /* query 1: a segment no key has */
  mxl_attn_mask mask = {qp, qs, kp, ks, 0};
  size_t nqe = (size_t)NQ * NH * D, nke = (size_t)NK * NKV * D;
  float *q = malloc(nqe * 4), *k = malloc(nke * 4), *v = malloc(nke * 4);
  float *o[2] = {malloc(nqe * 4), malloc(nqe * 4)}, l[2][NQ * NH];
  rng_fill_f32(&rng, q, nqe, -2, 2), rng_fill_f32(&rng, k, nke, -2, 2);
  rng_fill_f32(&rng, v, nke, -1, 1);
  uint16_t sinks[NH];
  for (int h = 0; h < NH; h++) sinks[h] = 0xFF80; /* -inf */
  MXL_CHECK(mxl_cpu_attention_threads(b.cpu, NQ, NK, NH, NKV, D, 2) == 2);
  mxl_backend *be[2] = {b.ref, b.cpu};
  for (int s = 0; s < 2; s++)
    be[s]->ops->attention(be[s], o[s], l[s], q, k, v, sinks, &mask, NQ, NK, NH, NKV, D, 0.125f);
  size_t half = nqe / 2; /* query 0's rows */
  MXL_CHECK_MSG(nrms(o[1], o[0], half) < 2e-6, "query 0 out nrms %g", nrms(o[1], o[0], half));
  MXL_CHECK_MSG(nrms(l[1], l[0], NH) < 2e-6, "query 0 lse nrms %g", nrms(l[1], l[0], NH));
  int bad = 0;
  for (size_t i = half; i < nqe; i++) bad += o[1][i] != 0.0f;
  for (int h = 0; h < NH; h++) bad += !(isinf(l[1][NH + h]) && l[1][NH + h] < 0);
  MXL_CHECK_MSG(bad == 0, "the query that sees no key: %d outputs not 0 / lse not -inf", bad);
  free(kp), free(ks), free(q), free(k), free(v), free(o[0]), free(o[1]);
  close_both(&b);
}

/* A vocabulary of several chunks with a ragged tail, masked tokens, bias:
 * the hand kernels (fast and exact), then every product on oneDNN (its
 * chunks are wider: V spans two and a tail; items of two row counts, the
 * last one padded), where oneDNN multiplies bf16. */
static void test_unembed_xent_chunks(void) {
  enum { n = 150, V = 2500, H = 96 };
  uint16_t *w = malloc((size_t)V * H * 2), bias[V];
  rng_fill_bf16(&rng, w, (size_t)V * H, -0.5, 0.5), rng_fill_bf16(&rng, bias, V, -1, 1);
  mxl_bf16_weight W = {w, bias, V, H};
  float *h = malloc((size_t)n * H * 4), wt[n], loss[2][n];
  int32_t tg[n];
  rng_fill_f32(&rng, h, (size_t)n * H, -1, 1);
  for (int t = 0; t < n; t++) tg[t] = rng_int(&rng, V), wt[t] = t % 7 == 3 ? 0.0f : 1.0f;
  tg[5] = 0, tg[6] = V - 1, tg[8] = 1023, tg[9] = 1024; /* first, last, across a wide chunk */
  float *dh[2] = {calloc((size_t)n * H, 4), calloc((size_t)n * H, 4)};
  for (int mode = 0; mode < 3; mode++) { /* hand fast, hand exact, oneDNN */
    int exact = mode == 1;
    both b = open_both(exact);
    if (!b.ref || !b.cpu) return;
    mxl_backend_cpu_set_dnnl(b.cpu, 0); /* the hand kernels, AMX host or not */
    if (mode == 2 && mxl_backend_cpu_set_dnnl(b.cpu, 2) != 2) {
      printf("skip test_unembed_xent_chunks on oneDNN: no oneDNN bf16 matmul here\n");
      mxl_test_skips++;
      close_both(&b);
      break;
    }
    uint64_t runs = mode == 2 ? mxl_cpu_dnnl_runs(mxl_cpu_of(b.cpu)->dnnl) : 0;
    mxl_backend *be[2] = {b.ref, b.cpu};
    for (int s = 0; s < 2; s++) {
      memset(dh[s], 0, (size_t)n * H * 4);
      be[s]->ops->unembed_xent(be[s], loss[s], dh[s], h, &W, tg, wt, n);
    }
    MXL_CHECK_OK(b.cpu->ops->sync(b.cpu));
    if (mode == 2)
      MXL_CHECK_MSG(mxl_cpu_dnnl_runs(mxl_cpu_of(b.cpu)->dnnl) > runs,
                    "oneDNN mode: the unembedding ran no oneDNN product");
    double el = nrms(loss[1], loss[0], n), ed = nrms(dh[1], dh[0], (size_t)n * H);
    MXL_CHECK_MSG(el < (exact ? 1e-6 : 2e-3) && ed < (exact ? 1e-5 : 4e-3),
                  "mode %d: loss nrms %g, dh nrms %g", mode, el, ed);
    int masked_ok = 1;
    for (int t = 3; t < n; t += 7) {
      masked_ok &= loss[1][t] == 0.0f;
      for (int c = 0; c < H; c++) masked_ok &= dh[1][t * H + c] == 0.0f;
    }
    MXL_CHECK_MSG(masked_ok, "mode %d: a masked token got a loss or a gradient", mode);
    close_both(&b);
  }
  free(w), free(h), free(dh[0]), free(dh[1]);
}

/* SwiGLU rows long enough for the vector paths (plus a tail), with gates
 * and ups exactly at ±limit, beyond it, and NaN. */
static void test_swiglu_vector_rows(void) {
  enum { m = 5, I = 100 };
  float h[m * 2 * I], dact[m * I], act[2][m * I], dh[2][m * 2 * I];
  rng_fill_f32(&rng, h, m * 2 * I, -10, 10);
  rng_fill_f32(&rng, dact, m * I, -1, 1);
  for (int i = 0; i < m * 2 * I; i += 13) h[i] = (i / 13) % 2 ? 7.0f : -7.0f;
  h[40] = NAN, h[41] = NAN, h[2 * I + 3] = INFINITY;
  mxl_backend *ref = NULL;
  MXL_CHECK_OK(mxl_backend_ref_create(&ref));
  if (!ref) return;
  ref->ops->swiglu(ref, act[0], h, m, I, 1.702f, 7.0f);
  memset(dh[0], 0, sizeof dh[0]);
  ref->ops->swiglu_bwd(ref, dh[0], dact, h, m, I, 1.702f, 7.0f);
  mxl_backend_destroy(ref);
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas);
  for (int s = 0; s < n_isa; s++) {
    memset(dh[1], 0, sizeof dh[1]);
    for (int r = 0; r < m; r++) {
      isas[s]->swiglu_row(act[1] + r * I, h + r * 2 * I, I, 1.702f, 7.0f);
      isas[s]->swiglu_bwd_row(dh[1] + r * 2 * I, dact + r * I, h + r * 2 * I, I, 1.702f, 7.0f);
    }
    int bad = 0;
    for (int i = 0; i < m * I; i++)
      bad += isnan(act[0][i]) != isnan(act[1][i]) ||
             (!isnan(act[0][i]) && fabsf(act[1][i] - act[0][i]) > 1e-5f * (1 + fabsf(act[0][i])));
    for (int i = 0; i < m * 2 * I; i++)
      bad += isnan(dh[0][i]) != isnan(dh[1][i]) ||
             (!isnan(dh[0][i]) && fabsf(dh[1][i] - dh[0][i]) > 1e-5f * (1 + fabsf(dh[0][i])));
    MXL_CHECK_MSG(bad == 0, "%s: %d SwiGLU values differ from the reference", isas[s]->name, bad);
  }
}

/* RMSNorm rows of gpt-oss's width and a ragged one (vector tails), forward
 * and backward, every ISA against the reference backend's op. */
static void test_rmsnorm_vector_rows(void) {
  static const int widths[] = {2880, 100, 7};
  mxl_backend *ref = NULL;
  MXL_CHECK_OK(mxl_backend_ref_create(&ref));
  if (!ref) return;
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas);
  for (int w = 0; w < 3; w++) {
    const int m = 3, H = widths[w];
    float *x = malloc(sizeof(float) * m * H), *dy = malloc(sizeof(float) * m * H);
    float *y[2] = {malloc(sizeof(float) * m * H), malloc(sizeof(float) * m * H)};
    float *dx[2] = {malloc(sizeof(float) * m * H), malloc(sizeof(float) * m * H)};
    uint16_t *g = malloc(sizeof(uint16_t) * H);
    float rstd[2][3];
    rng_fill_f32(&rng, x, (size_t)m * H, -3, 3), rng_fill_f32(&rng, dy, (size_t)m * H, -1, 1);
    rng_fill_bf16(&rng, g, (size_t)H, 0.5f, 1.5f);
    ref->ops->rmsnorm(ref, y[0], rstd[0], x, g, m, H, 1e-5f);
    rng_fill_f32(&rng, dx[0], (size_t)m * H, -1, 1); /* the backward adds */
    memcpy(dx[1], dx[0], sizeof(float) * m * H);
    float *dx0 = malloc(sizeof(float) * m * H);
    memcpy(dx0, dx[0], sizeof(float) * m * H);
    ref->ops->rmsnorm_bwd(ref, dx[0], dy, x, rstd[0], g, m, H, 1e-5f);
    for (int s = 0; s < n_isa; s++) {
      memcpy(dx[1], dx0, sizeof(float) * m * H);
      for (int r = 0; r < m; r++) {
        rstd[1][r] = isas[s]->rmsnorm_row(y[1] + r * H, x + r * H, g, H, 1e-5f);
        isas[s]->rmsnorm_bwd_row(dx[1] + r * H, dy + r * H, x + r * H, g, rstd[0][r], H);
      }
      int bad = 0;
      for (int r = 0; r < m; r++) bad += fabsf(rstd[1][r] - rstd[0][r]) > 1e-6f * rstd[0][r];
      for (int i = 0; i < m * H; i++) {
        bad += fabsf(y[1][i] - y[0][i]) > 1e-6f * (1 + fabsf(y[0][i]));
        bad += fabsf(dx[1][i] - dx[0][i]) > 1e-6f * (1 + fabsf(dx[0][i]));
      }
      MXL_CHECK_MSG(bad == 0, "%s: %d RMSNorm values differ from the reference (H %d)",
                    isas[s]->name, bad, H);
    }
    free(x), free(dy), free(y[0]), free(y[1]), free(dx[0]), free(dx[1]), free(dx0), free(g);
  }
  mxl_backend_destroy(ref);
}

/* AdamW: every ISA table's update bit for bit the same (replicas on hosts
 * with different instruction sets must not drift apart), a length with a
 * vector tail, gradient scaling and weight decay; and the op against the
 * reference backend's. */
static void test_adamw_tables_agree(void) {
  enum { N = 1000 + 13 };
  static float p0[N], g[N], m0[N], v0[N], p[4][N], m[4][N], v[4][N];
  rng_fill_f32(&rng, p0, N, -1, 1), rng_fill_f32(&rng, g, N, -3, 3);
  rng_fill_f32(&rng, m0, N, -0.5f, 0.5f), rng_fill_f32(&rng, v0, N, 0, 2);
  v0[7] = 0, m0[7] = 0, g[7] = 0, g[8] = 1e-30f; /* zero moments: eps alone */
  const mxl_cpu_adamw_coef c = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 0.37f,
                                (float)(1.0 / (1.0 - pow(0.9, 3))),
                                (float)(1.0 / sqrt(1.0 - pow(0.999, 3)))};
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas);
  for (int s = 0; s < n_isa; s++) {
    memcpy(p[s], p0, sizeof p0), memcpy(m[s], m0, sizeof m0), memcpy(v[s], v0, sizeof v0);
    isas[s]->adamw_f32(p[s], g, m[s], v[s], N, &c);
    MXL_CHECK_MSG(memcmp(p[s], p[0], sizeof p0) == 0 && memcmp(m[s], m[0], sizeof m0) == 0 &&
                      memcmp(v[s], v[0], sizeof v0) == 0,
                  "%s: AdamW differs from %s in some bit", isas[s]->name, isas[0]->name);
  }
  mxl_backend *ref = NULL;
  MXL_CHECK_OK(mxl_backend_ref_create(&ref));
  if (!ref) return;
  static float pr[N], mr[N], vr[N];
  memcpy(pr, p0, sizeof p0), memcpy(mr, m0, sizeof m0), memcpy(vr, v0, sizeof v0);
  ref->ops->adamw(ref, pr, g, mr, vr, N, c.lr, c.beta1, c.beta2, c.eps, c.weight_decay, 3,
                  c.grad_scale);
  mxl_backend_destroy(ref);
  /* each step within 1e-5 of itself, plus the parameter's own rounding */
  int bad = 0;
  for (int i = 0; i < N; i++) {
    double step_ref = (double)pr[i] - p0[i], step = (double)p[0][i] - p0[i];
    double ulp = (double)nextafterf(fabsf(pr[i]), INFINITY) - fabsf(pr[i]);
    bad += fabs(step - step_ref) > 1e-5 * fabs(step_ref) + ulp;
  }
  MXL_CHECK_MSG(bad == 0, "%d AdamW steps differ from the reference's", bad);
}

/* RoPE's half-split rotation: every ISA table bit for bit the scalar
 * reference, both directions, a length with vector tails. */
static void test_rope_halves_tables_agree(void) {
  enum { N = 37 };
  float xa0[N], xb0[N], cs[N], sn[N], want_a[N], want_b[N], xa[N], xb[N];
  rng_fill_f32(&rng, xa0, N, -4, 4), rng_fill_f32(&rng, xb0, N, -4, 4);
  rng_fill_f32(&rng, cs, N, -1.3f, 1.3f), rng_fill_f32(&rng, sn, N, -1.3f, 1.3f);
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas);
  for (int dir = 0; dir < 2; dir++) {
    float sign = dir ? -1.0f : 1.0f;
    memcpy(want_a, xa0, sizeof xa0), memcpy(want_b, xb0, sizeof xb0);
    mxl_cpu_rope_halves_scalar(want_a, want_b, cs, sn, 0, N, sign);
    for (int s = 0; s < n_isa; s++) {
      memcpy(xa, xa0, sizeof xa0), memcpy(xb, xb0, sizeof xb0);
      isas[s]->rope_halves_f32(xa, xb, cs, sn, N, sign);
      MXL_CHECK_MSG(memcmp(xa, want_a, sizeof xa) == 0 && memcmp(xb, want_b, sizeof xb) == 0,
                    "%s: RoPE halves differ from the scalar reference (sign %g)", isas[s]->name,
                    (double)sign);
    }
  }
}

/* The backend keeps RoPE's cos/sin for the last positions: a call with the
 * same positions reuses them, and positions or frequencies changed in place
 * (same pointers) must not. Each call against the reference backend; then
 * the table's allocation failure. */
static void test_rope_table_reuse(void) {
  enum { n = 5, heads = 3, d = 8 };
  int32_t pos[n] = {0, 1, 2, 3, 4};
  float inv_freq[d / 2] = {1.0f, 0.1f, 0.01f, 0.001f};
  mxl_backend *ref = NULL, *cpu = NULL;
  MXL_CHECK_OK(mxl_backend_ref_create(&ref));
  MXL_CHECK_OK(mxl_backend_cpu_create(1, &cpu));
  if (!ref || !cpu) return;
  float x0[n * heads * d];
  rng_fill_f32(&rng, x0, n * heads * d, -1, 1);
  for (int step = 0; step < 6; step++) {
    if (step == 2) pos[3] = 1000;       /* same pointer, new content */
    if (step == 3) inv_freq[2] = 0.5f;  /* new frequencies */
    float conc = step == 4 ? 1.25f : 1.0f;
    int inverse = step == 5, interleaved = step % 2;
    float want[n * heads * d], got[n * heads * d];
    memcpy(want, x0, sizeof x0), memcpy(got, x0, sizeof x0);
    ref->ops->rope(ref, want, n, heads, d, pos, inv_freq, conc, interleaved, inverse);
    cpu->ops->rope(cpu, got, n, heads, d, pos, inv_freq, conc, interleaved, inverse);
    int bad = 0;
    for (int i = 0; i < n * heads * d; i++) bad += fabsf(got[i] - want[i]) > 1e-6f;
    MXL_CHECK_MSG(bad == 0, "step %d: %d RoPE values differ from the reference", step, bad);
  }
  MXL_CHECK_OK(cpu->ops->sync(cpu));
  /* a table that cannot be allocated: reported once by sync, and the next
   * call rebuilds the table */
  MXL_CHECK(mxl_cpu_rope_reserve(cpu, SIZE_MAX / 64, d / 2) == -1);
  MXL_CHECK_FAILS(cpu->ops->sync(cpu), MXL_ERR_MEMORY, "rope table");
  MXL_CHECK_OK(cpu->ops->sync(cpu));
  float want[n * heads * d], got[n * heads * d];
  memcpy(want, x0, sizeof x0), memcpy(got, x0, sizeof x0);
  ref->ops->rope(ref, want, n, heads, d, pos, inv_freq, 1.0f, 0, 0);
  cpu->ops->rope(cpu, got, n, heads, d, pos, inv_freq, 1.0f, 0, 0);
  int bad = 0;
  for (int i = 0; i < n * heads * d; i++) bad += fabsf(got[i] - want[i]) > 1e-6f;
  MXL_CHECK_MSG(bad == 0, "after a failed reserve: %d RoPE values differ", bad);
  MXL_CHECK_OK(cpu->ops->sync(cpu));
  mxl_backend_destroy(ref), mxl_backend_destroy(cpu);
}

/* ------------------------------------------------------------------ backend */

static void test_isa_override(void) {
  mxl_backend *be = NULL;
  setenv("MXL_CPU_ISA", "generic", 1);
  MXL_CHECK_OK(mxl_backend_cpu_create(1, &be));
  unsetenv("MXL_CPU_ISA");
  if (!be) return;
  MXL_CHECK(!strcmp(mxl_backend_cpu_isa(be), "generic"));
  MXL_CHECK(be->ops->host_memory == 1 && !strcmp(be->ops->name, "cpu"));
  mxl_backend_destroy(be);
  MXL_CHECK_OK(mxl_backend_cpu_create(0, &be));
  MXL_CHECK(be && be->n_threads >= 1);
  mxl_backend_destroy(be);
}

/* The integer decode kernel is chosen by timing it against the bf16 ones
 * (int_decode_speedup, measured once per process), and MXL_CPU_INT_DECODE
 * decides instead when set. */
static void test_int_decode_choice(void) {
  const char *saved = getenv("MXL_CPU_INT_DECODE");
  char *keep = saved ? strdup(saved) : NULL;
  static const char *const wants[] = {NULL, "1", "0"};
  for (int w = 0; w < 3; w++) {
    if (wants[w]) setenv("MXL_CPU_INT_DECODE", wants[w], 1);
    else unsetenv("MXL_CPU_INT_DECODE");
    mxl_backend *be = NULL;
    MXL_CHECK_OK(mxl_backend_cpu_create(1, &be));
    if (!be) continue;
    const mxl_cpu *c = be->impl;
    int has_q8 = c->isa->gemm_mxfp4_q8 != NULL;
    if (w == 0 && has_q8 && c->isa->int_decode_speedup) {
      double first = c->int_speedup;
      MXL_CHECK_MSG(first > 0.05 && first < 50, "integer decode speed-up %g", first);
      MXL_CHECK(c->isa->int_decode_speedup() == first); /* once per process */
      MXL_CHECK(mxl_backend_cpu_int_decode(be) == (first > 1.0));
    } else if (w == 0) {
      MXL_CHECK(mxl_backend_cpu_int_decode(be) == has_q8);
    } else {
      MXL_CHECK(mxl_backend_cpu_int_decode(be) == (has_q8 && w == 1));
      MXL_CHECK(c->int_speedup == 0); /* not measured when the user decides */
    }
    mxl_backend_destroy(be);
  }
  if (keep) setenv("MXL_CPU_INT_DECODE", keep, 1);
  else unsetenv("MXL_CPU_INT_DECODE");
  free(keep);
}

/* The scratch test asks for an impossible allocation on purpose: under
 * AddressSanitizer, have malloc return NULL as libc does instead of aborting. */
#ifdef __SANITIZE_ADDRESS__
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }
#endif

/* A scratch request the allocator refuses: the op stops, sync reports it
 * once and names the cause. */
static void test_scratch_failure(void) {
  mxl_backend *be = NULL;
  MXL_CHECK_OK(mxl_backend_cpu_create(1, &be));
  if (!be) return;
  MXL_CHECK(mxl_cpu_scratch(be, MXL_CPU_SCRATCH_AUX, SIZE_MAX / 2) == NULL);
  MXL_CHECK_FAILS(be->ops->sync(be), MXL_ERR_MEMORY, "scratch");
  MXL_CHECK_OK(be->ops->sync(be)); /* reported once */
  MXL_CHECK(mxl_cpu_scratch(be, MXL_CPU_SCRATCH_AUX, 100) != NULL);
  mxl_backend_destroy(be);
}

/* ------------------------------------------------------------------ threads per op */

/* The thread decision every op takes (mxl_cpu_threads_for and the two
 * helpers on it), on the shapes that set the minimums (bench/README.md,
 * "Fewer parallel regions"): work worth less than waking a sleeping thread
 * runs on the calling thread. The work figures are the ops' own (bytes
 * moved; multiply-adds, bf16 products at two thirds). */
static void test_threads_per_op(void) {
  mxl_backend *be = NULL, *be8 = NULL;
  MXL_CHECK_OK(mxl_backend_cpu_create(2, &be));
  MXL_CHECK_OK(mxl_backend_cpu_create(8, &be8));
  if (!be || !be8) return;
  /* a decode token of the bench preset (H 768, 12 heads of 64): RMSNorm,
   * RoPE, SwiGLU of 2 experts × 512 — and the q projection (768 × 768
   * bf16, 1.2 MB, in cache) — on the calling thread */
  MXL_CHECK(mxl_cpu_threads_for(be, 768.0 * 8, MXL_CPU_MIN_BYTES) == 1);
  MXL_CHECK(mxl_cpu_threads_for(be, (12.0 + 4) * 64 * 8, MXL_CPU_MIN_BYTES) == 1);
  MXL_CHECK(mxl_cpu_threads_for(be, 2.0 * 512 * 24, MXL_CPU_MIN_BYTES) == 1);
  MXL_CHECK(mxl_cpu_threads_for_product(be, 768.0 * 768 * 2, 768.0 * 6,
                                        mxl_cpu_bf16_fmas(1, 768, 768)) == 1);
  /* ... its lm_head (4160 × 768 bf16, 6.4 MB) on both threads */
  MXL_CHECK(mxl_cpu_threads_for_product(be, 4160.0 * 768 * 2, 768.0 * 2 + 4160.0 * 4,
                                        mxl_cpu_bf16_fmas(1, 4160, 768)) == 2);
  /* a demo training step (4 × 256 tokens, H 128): RMSNorm and the gate_up
   * product of its 2048 expert rows (4 experts of 256 × 128 MXFP4) */
  MXL_CHECK(mxl_cpu_threads_for(be, 1024.0 * 128 * 8, MXL_CPU_MIN_BYTES) == 1);
  MXL_CHECK(mxl_cpu_threads_for_product(be, 4.0 * 256 * 128 * 17 / 32, 2048.0 * (128 * 2 + 256 * 4),
                                        mxl_cpu_bf16_fmas(2048, 256, 128)) == 1);
  /* a bench-preset training step (512 tokens, H 768): the k projection
   * (768 -> 256, 100 M multiply-adds, 1.2 ms on one thread) on both */
  MXL_CHECK(mxl_cpu_threads_for_product(be, 256.0 * 768 * 2, 512.0 * (768 * 2 + 256 * 4),
                                        mxl_cpu_bf16_fmas(512, 256, 768)) == 2);
  /* gpt-oss-20b: the decode k projection (512 × 2880 bf16, 2.9 MB streamed
   * from memory), RMSNorm of a 512-token prefill, its q projection */
  MXL_CHECK(mxl_cpu_threads_for_product(be, 512.0 * 2880 * 2, 2880.0 * 2 + 512.0 * 4,
                                        mxl_cpu_bf16_fmas(1, 512, 2880)) == 2);
  MXL_CHECK(mxl_cpu_threads_for(be, 512.0 * 2880 * 8, MXL_CPU_MIN_BYTES) == 2);
  double q_fmas = mxl_cpu_bf16_fmas(512, 4096, 2880);
  MXL_CHECK(mxl_cpu_threads_for_op(be, 512.0 * (2880 * 2 + 4096 * 4), q_fmas) == 2);
  /* attention: a 64-token prefill of gpt-oss-20b (64 heads of 64, 8 KV
   * heads) on both threads, a decode token of the bench preset on one; a
   * decode token of gpt-oss-20b at position 520 (2.1 MB of keys and values
   * read from memory) on both, at position 100 on one */
  MXL_CHECK(mxl_cpu_attention_threads(be, 64, 64, 64, 8, 64, 2) == 2);
  MXL_CHECK(mxl_cpu_attention_threads(be, 1, 64, 12, 4, 64, 2) == 1);
  MXL_CHECK(mxl_cpu_attention_threads(be, 1, 520, 64, 8, 64, 2) == 2);
  MXL_CHECK(mxl_cpu_attention_threads(be, 1, 100, 64, 8, 64, 2) == 1);
  /* LoRA rank 16 of the bench preset's gate_up (8 experts × 128 rows, 768
   * in, 1536 out): its activations (15.7 MB forward) fill both threads; a
   * decode token's (one row) stays on the calling thread */
  mxl_lora_seg segs[8];
  for (int s = 0; s < 8; s++) segs[s] = (mxl_lora_seg){.rows = 128, .rank = 16, .row0 = 128 * s};
  MXL_CHECK(mxl_cpu_lora_threads(be, segs, 8, 768, 1536, 1) == 2);
  MXL_CHECK(mxl_cpu_lora_threads(be, segs, 8, 768, 1536, 0) == 2);
  segs[0].rows = 1;
  MXL_CHECK(mxl_cpu_lora_threads(be, segs, 1, 768, 1536, 1) == 1);
  MXL_CHECK(mxl_cpu_lora_threads(be, segs, 1, 768, 1536, 0) == 1);
  /* more threads: as many as the work fills, never more than the backend has */
  MXL_CHECK(mxl_cpu_threads_for_op(be8, 0, q_fmas) == 8);
  MXL_CHECK(mxl_cpu_threads_for_op(be8, 0, 3.5 * MXL_CPU_MIN_FMAS) == 3);
  MXL_CHECK(mxl_cpu_threads_for_product(be8, 0, 0, 1.5 * MXL_CPU_MIN_FMAS) == 1);
  mxl_backend_destroy(be);
  mxl_backend_destroy(be8);
}

/* ------------------------------------------------------------------ thread waiting */

static char **test_argv;

static double process_cpu_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU milliseconds the process burns while its main thread sleeps 20 ms
 * right after a parallel region: a spinning worker burns milliseconds
 * (libgomp: 300,000 spins), a passive one microseconds. The most of 5 tries,
 * as a spinning worker may lose its core in one. */
static double idle_worker_cpu_ms(void) {
  double most = 0;
  for (int t = 0; t < 5; t++) {
    volatile int sink = 0;
#pragma omp parallel num_threads(2)
    sink += omp_get_thread_num();
    double c0 = process_cpu_seconds();
    usleep(20000);
    double ms = (process_cpu_seconds() - c0) * 1e3;
    if (ms > most) most = ms;
    (void)sink;
  }
  return most;
}

/* main called mxl_wait_passively: unless the user chose a policy, OpenMP
 * threads now wait passively (the runtime took the variable, so the
 * program was re-executed); a user's choice is left alone. */
static void test_wait_passively(void) {
  const char *policy = getenv("OMP_WAIT_POLICY");
  if (!getenv("GOMP_SPINCOUNT") && !getenv("KMP_BLOCKTIME")) MXL_CHECK(policy != NULL);
  MXL_CHECK(mxl_wait_policy_chosen());
  if (policy && !strcmp(policy, "passive")) {
    double ms = idle_worker_cpu_ms();
    MXL_CHECK_MSG(ms < 1.0, "an idle worker burned %.3f ms of CPU in 20 ms", ms);
  }
  const char *spin = getenv("GOMP_SPINCOUNT");
  char *saved_policy = policy ? strdup(policy) : NULL, *saved_spin = spin ? strdup(spin) : NULL;
  unsetenv("OMP_WAIT_POLICY");
  setenv("GOMP_SPINCOUNT", "1000", 1);
  mxl_wait_passively(test_argv); /* returns: the user chose */
  MXL_CHECK(getenv("OMP_WAIT_POLICY") == NULL);
  if (saved_spin) setenv("GOMP_SPINCOUNT", saved_spin, 1);
  else unsetenv("GOMP_SPINCOUNT");
  if (saved_policy) setenv("OMP_WAIT_POLICY", saved_policy, 1);
  free(saved_policy), free(saved_spin);
}

/* The fused online-softmax block (bf16 attention's forward) against the row
 * helpers it replaces, composed as cpu_attention.c's fallback does: the
 * same bits in mx, den, o and p, for key counts across the 16-lane and
 * 32-element boundaries, rows that see no key, and rows whose max rises. */
static void test_softmax_block_bf16(void) {
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas);
  enum { R = 7, GROUP = 3, LD = 64, D = 24 };
  static const int ns[] = {1, 15, 16, 17, 31, 32, 33, 50, 64};
  int checked = 0;
  for (int s = 0; s < n_isa; s++) {
    const mxl_cpu_isa *I = isas[s];
    if (!I->softmax_block_bf16) continue;
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
      int n = ns[t];
      float sc[R * LD], o0[R * D], o1[R * D], mx0[R], mx1[R], den0[R], den1[R], tmp[LD];
      uint16_t p0[R * LD], p1[R * LD];
      uint64_t keep[(R + GROUP - 1) / GROUP];
      rng_fill_f32(&rng, sc, R * LD, -12, 6);
      rng_fill_f32(&rng, o0, R * D, -1, 1);
      memcpy(o1, o0, sizeof o0);
      for (int q = 0; q < (R + GROUP - 1) / GROUP; q++) keep[q] = rng_next(&rng);
      keep[1] = 0; /* rows 3..5 see no key */
      for (int r = 0; r < R; r++) {
        mx0[r] = mx1[r] = r == 6 ? 40.0f : (float)(r - 3); /* row 6: the max never rises */
        den0[r] = den1[r] = 1.0f + 0.25f * (float)r;
      }
      for (int j = 0; j < R * LD; j++) p0[j] = p1[j] = 0x7777;
      I->softmax_block_bf16(p1, LD, sc, LD, keep, GROUP, R, n, mx1, den1, o1, D, D);
      for (int r = 0; r < R; r++) { /* the rows as the helpers do them */
        uint64_t k = keep[r / GROUP];
        float m = I->masked_max_f32(sc + r * LD, k, n);
        if (m > mx0[r]) {
          float corr = expf(mx0[r] - m);
          den0[r] *= corr;
          I->scale_f32(o0 + r * D, corr, D);
          mx0[r] = m;
        }
        den0[r] += I->masked_exp_f32(tmp, sc + r * LD, k, n, mx0[r]);
        I->to_bf16(p0 + r * LD, tmp, (size_t)n);
      }
      int bad = memcmp(p0, p1, sizeof p0) != 0;
      bad += memcmp(o0, o1, sizeof o0) != 0;
      bad += memcmp(mx0, mx1, sizeof mx0) != 0;
      bad += memcmp(den0, den1, sizeof den0) != 0;
      MXL_CHECK_MSG(bad == 0, "%s softmax_block_bf16 n=%d: %d of p, o, mx, den differ", I->name,
                    n, bad);
      checked++;
    }
  }
  if (!checked) MXL_SKIP("no table on this host has softmax_block_bf16");
}

/* The decode attention's key block, table by table, against its contract
 * computed here in double: heads 1..8 of a group, head dims 32..128, key
 * counts across the 8-key steps up to 64, keep masks with gaps, empty ones
 * and every key; a running state whose max rises for some heads and not
 * for others; keys and values as rows of a wider cache (ld > d). */
static void test_attn_decode_block(void) {
  const mxl_cpu_isa *isas[4];
  int n_isa = isa_tables(isas);
  enum { LD_EXTRA = 40 };
  static const struct {
    int group, d, nkb;
  } cases[] = {{8, 64, 64}, {8, 64, 61}, {8, 32, 1}, {3, 64, 9}, {1, 128, 40}, {5, 96, 17},
               {8, 64, 8}, {2, 32, 64}};
  int checked = 0;
  for (int t = 0; t < n_isa; t++) {
    const mxl_cpu_isa *I = isas[t];
    if (!I->attn_decode_block) continue;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
      const int G = cases[c].group, d = cases[c].d, nkb = cases[c].nkb, ld = d + LD_EXTRA;
      for (int variant = 0; variant < 3; variant++) {
        float *q = malloc((size_t)G * d * 4), *q2 = aligned_alloc(64, (size_t)d * 8 * 4);
        float *k = malloc((size_t)nkb * ld * 4), *v = malloc((size_t)nkb * ld * 4);
        float *o = malloc((size_t)G * d * 4), *s = aligned_alloc(64, 64 * 8 * 4);
        double *want = malloc((size_t)G * d * sizeof *want);
        float mx[8], den[8];
        double wmx[8], wden[8];
        rng_fill_f32(&rng, q, (size_t)G * d, -0.5, 0.5);
        rng_fill_f32(&rng, k, (size_t)nkb * ld, -1, 1);
        rng_fill_f32(&rng, v, (size_t)nkb * ld, -1, 1);
        rng_fill_f32(&rng, o, (size_t)G * d, -2, 2);
        memset(q2, 0, (size_t)d * 8 * 4);
        for (int h = 0; h < G; h++)
          for (int e = 0; e < d; e++) q2[(e / 2) * 16 + 2 * h + (e & 1)] = q[h * d + e];
        uint64_t keep = variant == 0 ? ~(uint64_t)0 : variant == 1 ? rng_next(&rng) : 0;
        if (nkb < 64) keep &= ((uint64_t)1 << nkb) - 1;
        for (int h = 0; h < G; h++) { /* odd heads: a max no score reaches */
          mx[h] = h % 2 ? 30.0f : -3.0f + 0.5f * (float)h;
          den[h] = 0.5f + (float)h;
          wmx[h] = mx[h], wden[h] = den[h];
        }
        for (int h = 0; h < G; h++) {
          double sc[64], m = wmx[h];
          for (int j = 0; j < nkb; j++) {
            sc[j] = 0;
            for (int e = 0; e < d; e++) sc[j] += (double)q[h * d + e] * k[j * ld + e];
            if ((keep >> j & 1) && sc[j] > m) m = sc[j];
          }
          double corr = exp(wmx[h] - m);
          wden[h] *= corr;
          for (int e = 0; e < d; e++) want[h * d + e] = o[h * d + e] * corr;
          for (int j = 0; j < nkb; j++) {
            if (!(keep >> j & 1)) continue;
            double p = exp(sc[j] - m);
            wden[h] += p;
            for (int e = 0; e < d; e++) want[h * d + e] += p * v[j * ld + e];
          }
          wmx[h] = m;
        }
        /* the prefetched range: this block's own rows (any readable bytes) */
        I->attn_decode_block(o, mx, den, q2, k, v, ld, nkb, keep, G, d, s, k, v,
                             (int64_t)nkb * ld * 4);
        double e_o = rel_err(o, want, (size_t)G * d), e_s = 0;
        for (int h = 0; h < G; h++) {
          e_s = fmax(e_s, fabs(mx[h] - wmx[h]) / fmax(1.0, fabs(wmx[h])));
          e_s = fmax(e_s, fabs(den[h] - wden[h]) / fabs(wden[h]));
        }
        MXL_CHECK_MSG(e_o < 2e-6 && e_s < 2e-6,
                      "%s attn_decode_block group %d d %d nkb %d keep %d: o %g, mx/den %g",
                      I->name, G, d, nkb, variant, e_o, e_s);
        free(q), free(q2), free(k), free(v), free(o), free(s), free(want);
        checked++;
      }
    }
  }
  if (!checked) MXL_SKIP("no table on this host has attn_decode_block");
}

int main(int argc, char **argv) {
  (void)argc;
  mxl_wait_passively(argv);
  test_argv = argv;
  MXL_RUN(test_wait_passively);
  MXL_RUN(test_to_bf16);
  MXL_RUN(test_mxfp4_decode_all_scales);
  MXL_RUN(test_packing_layouts);
  MXL_RUN(test_packing_mxfp4);
  MXL_RUN(test_packing_mxfp4_shapes);
  MXL_RUN(test_gemm_kernels);
  MXL_RUN(test_gemm_f32_kernel);
  MXL_RUN(test_gemm_f32_nt_kernel);
  MXL_RUN(test_transpose_f32);
  MXL_RUN(test_gemv_mxfp4);
  MXL_RUN(test_gemv_mxfp4_wide_blocks);
  MXL_RUN(test_gemm_mxfp4_q8);
  MXL_RUN(test_gemv_bf16);
  MXL_RUN(test_gemm_mxfp4_nt);
  MXL_RUN(test_vector_helpers);
  MXL_RUN(test_mxfp4_ops_gpt_oss_rows);
  MXL_RUN(test_dnnl_paths);
  MXL_RUN(test_gemm_f32_lora_shapes);
  MXL_RUN(test_attention_multiblock);
  MXL_RUN(test_attention_decode_edges);
  MXL_RUN(test_softmax_block_bf16);
  MXL_RUN(test_attn_decode_block);
  MXL_RUN(test_zero_split);
  MXL_RUN(test_unembed_xent_chunks);
  MXL_RUN(test_mxfp4_blocked_layout);
  MXL_RUN(test_swiglu_vector_rows);
  MXL_RUN(test_rmsnorm_vector_rows);
  MXL_RUN(test_adamw_tables_agree);
  MXL_RUN(test_rope_halves_tables_agree);
  MXL_RUN(test_rope_table_reuse);
  MXL_RUN(test_isa_override);
  MXL_RUN(test_int_decode_choice);
  MXL_RUN(test_scratch_failure);
  MXL_RUN(test_threads_per_op);
  return mxl_test_summary("cpu_kernels");
}
