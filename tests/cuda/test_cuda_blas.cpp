// The cuBLASLt side of the CUDA backend without a GPU:
//   - the CPU stand-ins (tests/cuda/cublaslt_standin.cpp) against products
//     worked out by hand in NVIDIA's column-major convention, and the
//     calls they must refuse; so that the op tests, which run the
//     backend's wrapper (kernels/cuda/blas.cuh) against them, test the
//     wrapper's argument mapping and not a mirror of it;
//   - the wrapper's plan cache (hits, a full cache, alignment in the key);
//   - matmul_bf16 with fp32_act (the router) keeps fp32 activations.
#include "kernels/cuda/emulator.h"  // first: it defines MXL_CUDA_EMULATE

#include <math.h>
#include <stdlib.h>

#include "kernels/cuda/blas.cuh"
#include "test.h"
#include "tests/cuda/cublaslt_standin.h"
#include "tests/cuda/cuda_emu_backend.h"

namespace {

uint16_t bf(float x) {  // exact for the small values used here
  uint32_t b;
  memcpy(&b, &x, 4);
  return (uint16_t)(b >> 16);
}

struct lt_problem {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  cublasLtMatmulAlgo_t algo;
  ~lt_problem() {
    if (a) mxl_lt::cublasLtMatrixLayoutDestroy(a);
    if (b) mxl_lt::cublasLtMatrixLayoutDestroy(b);
    if (c) mxl_lt::cublasLtMatrixLayoutDestroy(c);
    if (desc) mxl_lt::cublasLtMatmulDescDestroy(desc);
    if (pref) mxl_lt::cublasLtMatmulPreferenceDestroy(pref);
  }
};

cublasLtHandle_t handle;

// D (m x n) = alpha·op(A)·op(B) + beta·C through the stand-ins, with the
// given stored shapes; returns the first failing status.
cublasStatus_t run(lt_problem &p, cudaDataType in, int ta, int tb, uint64_t ar, uint64_t ac,
                   int64_t lda, uint64_t br, uint64_t bc, int64_t ldb, uint64_t m, uint64_t n,
                   int64_t ldc, const void *A, const void *B, float alpha, float beta, float *C,
                   const float *bias) {
  cublasStatus_t s;
  if ((s = mxl_lt::cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F))) return s;
  int32_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  uint32_t epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  if ((s = mxl_lt::cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa,
                                                  sizeof opa)) ||
      (s = mxl_lt::cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb,
                                                  sizeof opb)) ||
      (s = mxl_lt::cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                                  sizeof epi)))
    return s;
  if (bias && (s = mxl_lt::cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                          &bias, sizeof bias)))
    return s;
  if ((s = mxl_lt::cublasLtMatrixLayoutCreate(&p.a, in, ar, ac, lda)) ||
      (s = mxl_lt::cublasLtMatrixLayoutCreate(&p.b, in, br, bc, ldb)) ||
      (s = mxl_lt::cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, m, n, ldc)) ||
      (s = mxl_lt::cublasLtMatmulPreferenceCreate(&p.pref)))
    return s;
  uint32_t one = 4;  // the test arrays are only 4-byte aligned
  for (auto attr :
       {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    if ((s = mxl_lt::cublasLtMatmulPreferenceSetAttribute(p.pref, attr, &one, sizeof one)))
      return s;
  cublasLtMatmulHeuristicResult_t r;
  int got = 0;
  if ((s = mxl_lt::cublasLtMatmulAlgoGetHeuristic(handle, p.desc, p.a, p.b, p.c, p.c, p.pref, 1, &r,
                                                  &got)))
    return s;
  if (got != 1) return CUBLAS_STATUS_NOT_SUPPORTED;
  p.algo = r.algo;
  return mxl_lt::cublasLtMatmul(handle, p.desc, &alpha, A, p.a, B, p.b, &beta, C, p.c, C, p.c,
                                &p.algo, nullptr, 0, nullptr);
}

}  // namespace

// A = [1 2 3; 4 5 6] (2 x 3), B = [1 0; 0 1; 1 1] (3 x 2):
// A·B = [4 5; 10 11], stored column-major as {4, 10, 5, 11}.
static void test_standin_by_hand(void) {
  const float A[6] = {1, 4, 2, 5, 3, 6};  // 2 x 3, ld 2
  const float B[6] = {1, 0, 1, 0, 1, 1};  // 3 x 2, ld 3
  float D[4];
  {
    lt_problem p;
    MXL_CHECK(run(p, CUDA_R_32F, 0, 0, 2, 3, 2, 3, 2, 3, 2, 2, 2, A, B, 1, 0, D, NULL) == 0);
    const float want[4] = {4, 10, 5, 11};
    MXL_CHECK(memcmp(D, want, sizeof D) == 0);
  }
  {  // alpha 2, beta 1 onto C = 1, bias per row {100, 200}
    lt_problem p;
    float C[4] = {1, 1, 1, 1};
    const float bias[2] = {100, 200};
    MXL_CHECK(run(p, CUDA_R_32F, 0, 0, 2, 3, 2, 3, 2, 3, 2, 2, 2, A, B, 2, 1, C, bias) == 0);
    const float want[4] = {109, 221, 111, 223};
    MXL_CHECK_MSG(memcmp(C, want, sizeof C) == 0, "%g %g %g %g", C[0], C[1], C[2], C[3]);
  }
  {  // transa: A stored as its transpose Aᵀ (3 x 2, ld 4: padded), bf16
    const uint16_t At[8] = {bf(1), bf(2), bf(3), bf(-7), bf(4), bf(5), bf(6), bf(-7)};
    const uint16_t Bb[6] = {bf(1), bf(0), bf(1), bf(0), bf(1), bf(1)};
    lt_problem p;
    MXL_CHECK(run(p, CUDA_R_16BF, 1, 0, 3, 2, 4, 3, 2, 3, 2, 2, 2, At, Bb, 1, 0, D, NULL) == 0);
    const float want[4] = {4, 10, 5, 11};
    MXL_CHECK(memcmp(D, want, sizeof D) == 0);
  }
  {  // transb: B stored as Bᵀ (2 x 3, ld 2) = [1 0 1; 0 1 1]
    const float Bt[6] = {1, 0, 0, 1, 1, 1};
    lt_problem p;
    MXL_CHECK(run(p, CUDA_R_32F, 0, 1, 2, 3, 2, 2, 3, 2, 2, 2, 2, A, Bt, 1, 0, D, NULL) == 0);
    const float want[4] = {4, 10, 5, 11};
    MXL_CHECK(memcmp(D, want, sizeof D) == 0);
  }
  {  // beta 0: C is not read (NaN stays out)
    lt_problem p;
    float C[4] = {NAN, NAN, NAN, NAN};
    MXL_CHECK(run(p, CUDA_R_32F, 0, 0, 2, 3, 2, 3, 2, 3, 2, 2, 2, A, B, 1, 0, C, NULL) == 0);
    MXL_CHECK(C[0] == 4 && C[3] == 11);
  }
}

static void test_standin_refuses(void) {
  const float A[8] = {0}, B[8] = {0};
  float D[8];
  {  // leading dimension below the rows
    lt_problem p;
    MXL_CHECK(run(p, CUDA_R_32F, 0, 0, 2, 3, 1, 3, 2, 3, 2, 2, 2, A, B, 1, 0, D, NULL) ==
              CUBLAS_STATUS_INVALID_VALUE);
    MXL_CHECK_MSG(strstr(mxl_lt_standin_last_error(), "leading dimension"), "%s",
                  mxl_lt_standin_last_error());
  }
  {  // op(A) is 2 x 3 but op(B) has 2 rows
    lt_problem p;
    MXL_CHECK(run(p, CUDA_R_32F, 0, 0, 2, 3, 2, 2, 2, 2, 2, 2, 2, A, B, 1, 0, D, NULL) ==
              CUBLAS_STATUS_INVALID_VALUE);
  }
  {  // an attribute the stand-in does not implement
    lt_problem p;
    MXL_CHECK(mxl_lt::cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == 0);
    int8_t fast = 1;
    MXL_CHECK(mxl_lt::cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast,
                                                     sizeof fast) == CUBLAS_STATUS_NOT_SUPPORTED);
    int32_t wrong_size = 0;  // TRANSA is int32: a 1-byte buffer is refused
    MXL_CHECK(mxl_lt::cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                                     &wrong_size,
                                                     1) == CUBLAS_STATUS_INVALID_VALUE);
  }
  {  // a pointer less aligned than the algorithm was chosen for (default 256)
    lt_problem p;
    MXL_CHECK(mxl_lt::cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == 0);
    MXL_CHECK(mxl_lt::cublasLtMatrixLayoutCreate(&p.a, CUDA_R_32F, 1, 1, 1) == 0);
    MXL_CHECK(mxl_lt::cublasLtMatrixLayoutCreate(&p.b, CUDA_R_32F, 1, 1, 1) == 0);
    MXL_CHECK(mxl_lt::cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, 1, 1, 1) == 0);
    MXL_CHECK(mxl_lt::cublasLtMatmulPreferenceCreate(&p.pref) == 0);
    cublasLtMatmulHeuristicResult_t r;
    int got = 0;
    MXL_CHECK(mxl_lt::cublasLtMatmulAlgoGetHeuristic(handle, p.desc, p.a, p.b, p.c, p.c, p.pref, 1,
                                                     &r, &got) == 0 &&
              got == 1);
    alignas(256) static float in[64] = {1, 1}, out[64];
    float one = 1, zero = 0;
    MXL_CHECK(mxl_lt::cublasLtMatmul(handle, p.desc, &one, in, p.a, in, p.b, &zero, out, p.c, out,
                                     p.c, &r.algo, nullptr, 0, nullptr) == 0);
    MXL_CHECK(mxl_lt::cublasLtMatmul(handle, p.desc, &one, in + 1, p.a, in, p.b, &zero, out, p.c,
                                     out, p.c, &r.algo, nullptr, 0,
                                     nullptr) == CUBLAS_STATUS_INVALID_VALUE);
  }
}

// The wrapper: one plan per distinct problem, reused; a full cache evicts;
// results stay right throughout (row-major C = A·B, fp32).
static void test_plan_cache(void) {
  mxl_cuda_state st;
  memset(&st, 0, sizeof st);
  st.device = -1;
  MXL_CHECK(mxl_cu_blas_init(&st));
  mxl_backend be = {NULL, 1, &st};
  enum { MAXK = 80 };
  static float A[4 * MAXK + 1], B[MAXK * 3], C[4 * 3]; /* + 1: A + 1 is used too */
  for (int i = 0; i < 4 * MAXK + 1; i++) A[i] = (float)(i % 7) - 3;
  for (int i = 0; i < MAXK * 3; i++) B[i] = (float)(i % 5) - 2;
  for (int rep = 0; rep < 2; rep++)
    for (int K = 1; K <= MAXK; K++) {  // 80 distinct shapes (> the 64 plans)
      mxl_blas_call c = {};
      c.M = 4, c.N = 3, c.K = K, c.precision = MXL_BLAS_FP32;
      c.A = {A, K, 0, 0};
      c.B = {B, 3, 0, 0};
      c.C = C, c.ldc = 3, c.alpha = 1, c.beta = 0;
      MXL_CHECK(mxl_cu_blas_gemm(&be, "test", c));
      for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++) {
          float want = 0;
          for (int p = 0; p < K; p++) want += A[i * K + p] * B[p * 3 + j];
          MXL_CHECK(C[i * 3 + j] == want);
        }
    }
  MXL_CHECK(st.blas->n_plans == MXL_CU_BLAS_PLANS);
  int before = st.blas->next_victim;
  mxl_blas_call c = {};  // the most recent shape is cached: no eviction
  c.M = 4, c.N = 3, c.K = MAXK, c.precision = MXL_BLAS_FP32;
  c.A = {A, MAXK, 0, 0};
  c.B = {B, 3, 0, 0};
  c.C = C, c.ldc = 3, c.alpha = 1, c.beta = 0;
  MXL_CHECK(mxl_cu_blas_gemm(&be, "test", c) && st.blas->next_victim == before);
  c.A = {A + 1, MAXK, 0, 0};  // the same shape less aligned: another plan
  MXL_CHECK(mxl_cu_blas_gemm(&be, "test", c) && st.blas->next_victim != before);
  MXL_CHECK(st.pending == MXL_OK);
  MXL_CHECK(st.bytes_now == MXL_CU_BLAS_WORKSPACE);  // the workspace, once
  mxl_cu_blas_release(&st);
  MXL_CHECK(st.bytes_now == 0 && st.blas == NULL);
}

// matmul_bf16 with fp32_act on the emulated backend matches ref in fp32;
// without, the activations' bf16 rounding shows.
static void test_fp32_act(void) {
  mxl_backend *ref = NULL, *emu = NULL;
  MXL_CHECK_OK(mxl_backend_ref_create(&ref));
  MXL_CHECK_OK(mxl_backend_cuda_emu_create(0, &emu));
  enum { N = 9, ROWS = 32, COLS = 200 };
  static float x[N * COLS], want[N * ROWS], got[N * ROWS];
  static uint16_t w[ROWS * COLS], bias[ROWS];
  uint32_t state = 12345;
  auto uniform = [&state]() {  // in [-1, 1)
    state = state * 1664525u + 1013904223u;
    return (float)(state >> 8) * 0x1p-23f - 1.0f;
  };
  for (float &v : x) v = uniform();
  for (uint16_t &v : w) v = bf(0.5f * uniform());  // truncated to bf16: any bf16 will do
  for (uint16_t &v : bias) v = bf(uniform());
  mxl_bf16_weight W = {w, bias, ROWS, COLS, 1, 0};
  ref->ops->matmul_bf16(ref, want, x, &W, N);
  double err[2];
  for (int exact = 1; exact >= 0; exact--) {
    W.fp32_act = exact;
    emu->ops->matmul_bf16(emu, got, x, &W, N);
    MXL_CHECK_OK(emu->ops->sync(emu));
    double e = 0, s = 0;
    for (int i = 0; i < N * ROWS; i++) {
      e += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
      s += (double)want[i] * want[i];
    }
    err[exact] = e / s;
  }
  printf("  matmul_bf16 nmse: fp32_act %.3g, bf16 operands %.3g\n", err[1], err[0]);
  MXL_CHECK(err[1] < 1e-12 && err[0] > 1e-8);
  mxl_backend_destroy(emu);
  mxl_backend_destroy(ref);
}

int main(void) {
  if (mxl_lt::cublasLtCreate(&handle) != CUBLAS_STATUS_SUCCESS) return 1;
  MXL_RUN(test_standin_by_hand);
  MXL_RUN(test_standin_refuses);
  MXL_RUN(test_plan_cache);
  MXL_RUN(test_fp32_act);
  mxl_lt::cublasLtDestroy(handle);
  return mxl_test_summary("cuda_blas");
}
