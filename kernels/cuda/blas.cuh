/* The one GEMM interface of the CUDA backend over cuBLASLt: bf16 operands
 * (tensor cores) or fp32 ones (LoRA's memory-bound products, the router),
 * fp32 accumulation and output, an optional bias in the epilogue, a
 * workspace, and the descriptors plus the heuristic's algorithm cached per
 * shape. Used by matmul_bf16 (attention projections, router), its dx,
 * unembed_xent's two products per vocabulary chunk, and gemm_f32 (LoRA);
 * a grouped call runs one product per non-empty group (per-expert LoRA).
 *
 * Callers speak row-major, as ops.h:  C[M, N] = alpha·op(A)·op(B) + beta·C
 * (+ bias[N] on every row), op(A) [M, K], op(B) [K, N], row strides lda,
 * ldb, ldc; beta == 0 means C is not read. cuBLASLt is column-major: a
 * row-major X [r, c] with row stride ld is the column-major Xᵀ [c, r] with
 * leading dimension ld, so the call computes Cᵀ = op(B)ᵀ·op(A)ᵀ:
 *   matrix A of the library = our B, transa = tB, stored [N, K] (tB = 0)
 *                             or [K, N] (tB = 1) column-major, ld ldb;
 *   matrix B of the library = our A, transb = tA, likewise with M, ld lda;
 *   C = D = Cᵀ [N, M], ld ldc; the library's m, n, k = N, M, K;
 *   the bias epilogue adds a vector over D's rows: our columns.
 *
 * Written once for the device build and the CPU emulator build: every
 * library call goes through namespace mxl_lt, which is cuBLASLt itself on
 * the device and, under MXL_CUDA_EMULATE, the CPU stand-ins of
 * tests/cuda/cublaslt_standin.cpp (NVIDIA's documented semantics, written
 * from the documentation and cublasLt.h, not from our kernels): so the
 * argument mapping of every call the backend makes runs in the emulator
 * tests. The list of functions below is exactly the set the backend uses. */
#ifndef MXL_KERNELS_CUDA_BLAS_CUH
#define MXL_KERNELS_CUDA_BLAS_CUH

#include <cublasLt.h>
#include <string.h>

#include "kernels/cuda/runtime.cuh"

#ifdef MXL_CUDA_EMULATE
namespace mxl_lt {
cublasStatus_t cublasLtCreate(cublasLtHandle_t *handle);
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle);
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc, cublasComputeType_t compute,
                                        cudaDataType_t scale_type);
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc);
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size);
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *layout, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld);
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout);
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout,
                                                cublasLtMatrixLayoutAttribute_t attr,
                                                const void *buf, size_t size);
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref);
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref);
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t size);
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
    cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
    cublasLtMatmulPreference_t pref, int requested, cublasLtMatmulHeuristicResult_t results[],
    int *returned);
cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                              const void *alpha, const void *A, cublasLtMatrixLayout_t a,
                              const void *B, cublasLtMatrixLayout_t b, const void *beta,
                              const void *C, cublasLtMatrixLayout_t c, void *D,
                              cublasLtMatrixLayout_t d, const cublasLtMatmulAlgo_t *algo,
                              void *workspace, size_t workspace_bytes, mxl_cu_stream stream);
const char *cublasLtGetStatusString(cublasStatus_t status);
}  // namespace mxl_lt
#else
namespace mxl_lt {
using ::cublasLtCreate;
using ::cublasLtDestroy;
using ::cublasLtGetStatusString;
using ::cublasLtMatmul;
using ::cublasLtMatmulAlgoGetHeuristic;
using ::cublasLtMatmulDescCreate;
using ::cublasLtMatmulDescDestroy;
using ::cublasLtMatmulDescSetAttribute;
using ::cublasLtMatmulPreferenceCreate;
using ::cublasLtMatmulPreferenceDestroy;
using ::cublasLtMatmulPreferenceSetAttribute;
using ::cublasLtMatrixLayoutCreate;
using ::cublasLtMatrixLayoutDestroy;
using ::cublasLtMatrixLayoutSetAttribute;
}  // namespace mxl_lt
#endif

/* One operand in the row-major terms of the file comment. */
struct mxl_blas_operand {
  const void *ptr;
  int64_t ld;           /* row stride of the stored matrix */
  int trans;            /* op(X) = Xᵀ */
  int64_t batch_stride; /* elements between batch members (batch > 1) */
};

/* The operand types and how the library multiplies them. */
enum mxl_blas_precision {
  MXL_BLAS_BF16 = 0, /* A, B bf16, fp32 accumulation (tensor cores) */
  MXL_BLAS_FP32 = 1, /* A, B fp32, fp32 products (LoRA, the router) */
};

/* C[M, N] (row stride ldc) = alpha·op(A)·op(B) + beta·C (+ bias[N]). */
struct mxl_blas_call {
  int64_t M, N, K;
  int precision;           /* mxl_blas_precision */
  mxl_blas_operand A, B;
  float *C;
  int64_t ldc, c_batch_stride;
  float alpha, beta;
  const float *bias; /* [N] fp32, or NULL */
  int batch;         /* 0 or 1: one product */
};

/* What identifies a cached plan: everything the descriptors and the
 * heuristic's choice depend on. */
struct mxl_blas_key {
  int32_t transa, transb, precision, bias, batch;
  int32_t align_a, align_b, align_c; /* bytes, powers of two up to 256 */
  int64_t m, n, k, lda, ldb, ldc, stride_a, stride_b, stride_c;
};

struct mxl_blas_plan {
  mxl_blas_key key;
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t a, b, c;
  cublasLtMatmulAlgo_t algo;
};

/* The library state of one backend. */
struct mxl_blas_state {
  cublasLtHandle_t handle;
  void *workspace; /* MXL_CU_BLAS_WORKSPACE bytes, allocated at the first product */
  mxl_blas_plan plans[MXL_CU_BLAS_PLANS];
  int n_plans, next_victim;
};

/* The largest power of two (<= 256) dividing the address. */
static inline int32_t mxl_blas_align(const void *p) {
  uintptr_t a = (uintptr_t)p;
  int32_t align = 256;
  while (align > 1 && a % (uintptr_t)align) align /= 2;
  return align;
}

/* Destroys what a plan holds (parts never created are NULL). */
static inline void mxl_blas_release_plan(mxl_blas_plan *p) {
  if (p->a) mxl_lt::cublasLtMatrixLayoutDestroy(p->a);
  if (p->b) mxl_lt::cublasLtMatrixLayoutDestroy(p->b);
  if (p->c) mxl_lt::cublasLtMatrixLayoutDestroy(p->c);
  if (p->desc) mxl_lt::cublasLtMatmulDescDestroy(p->desc);
}

/* Creates the library handle of a backend; false when it cannot. */
static inline bool mxl_cu_blas_init(mxl_cuda_state *st) {
  st->blas = static_cast<mxl_blas_state *>(calloc(1, sizeof *st->blas));
  if (!st->blas) return false;
  if (mxl_lt::cublasLtCreate(&st->blas->handle) != CUBLAS_STATUS_SUCCESS) {
    free(st->blas);
    st->blas = NULL;
    return false;
  }
  return true;
}

/* Releases the plans, workspace and handle (backend destruction, after the
 * stream is idle). */
static inline void mxl_cu_blas_release(mxl_cuda_state *st) {
  mxl_blas_state *b = st->blas;
  if (!b) return;
  for (int i = 0; i < b->n_plans; i++) mxl_blas_release_plan(&b->plans[i]);
  mxl_cu_device_free(st, b->workspace, MXL_CU_BLAS_WORKSPACE);
  mxl_lt::cublasLtDestroy(b->handle);
  free(b);
  st->blas = NULL;
}

/* Records a library failure for sync. */
static inline bool mxl_blas_ok(mxl_backend *be, const char *op, const char *what,
                               cublasStatus_t status) {
  if (status == CUBLAS_STATUS_SUCCESS) return true;
  mxl_cu_fail(be, MXL_ERR_BACKEND, op, "cuBLASLt %s: %s (status %d)", what,
              mxl_lt::cublasLtGetStatusString(status), (int)status);
  return false;
}

/* Builds the descriptors of `key` and asks the heuristic for an algorithm. */
static inline bool mxl_blas_make_plan(mxl_backend *be, const char *op, const mxl_blas_key &k,
                               mxl_blas_plan *p) {
  mxl_blas_state *bs = mxl_cu_state(be)->blas;
  memset(p, 0, sizeof *p);
  p->key = k;
  const cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  const cudaDataType_t in = k.precision == MXL_BLAS_BF16 ? CUDA_R_16BF : CUDA_R_32F;
  const int32_t ta = k.transa ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int32_t tb = k.transb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const uint32_t epilogue = k.bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  bool ok =
      mxl_blas_ok(be, op, "matmul descriptor",
                  mxl_lt::cublasLtMatmulDescCreate(&p->desc, compute, CUDA_R_32F)) &&
      mxl_blas_ok(be, op, "transa",
                  mxl_lt::cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                                         &ta, sizeof ta)) &&
      mxl_blas_ok(be, op, "transb",
                  mxl_lt::cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB,
                                                         &tb, sizeof tb)) &&
      mxl_blas_ok(be, op, "epilogue",
                  mxl_lt::cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                         &epilogue, sizeof epilogue));
  /* Stored shapes, column-major (file comment). */
  ok = ok && mxl_blas_ok(be, op, "layout A",
                         mxl_lt::cublasLtMatrixLayoutCreate(&p->a, in, k.transa ? k.k : k.m,
                                                            k.transa ? k.m : k.k, k.lda));
  ok = ok && mxl_blas_ok(be, op, "layout B",
                         mxl_lt::cublasLtMatrixLayoutCreate(&p->b, in, k.transb ? k.n : k.k,
                                                            k.transb ? k.k : k.n, k.ldb));
  ok = ok && mxl_blas_ok(be, op, "layout C",
                         mxl_lt::cublasLtMatrixLayoutCreate(&p->c, CUDA_R_32F, k.m, k.n, k.ldc));
  if (ok && k.batch > 1) {
    struct {
      cublasLtMatrixLayout_t layout;
      int64_t stride;
    } each[3] = {{p->a, k.stride_a}, {p->b, k.stride_b}, {p->c, k.stride_c}};
    for (int i = 0; ok && i < 3; i++)
      ok = mxl_blas_ok(be, op, "batch count",
                       mxl_lt::cublasLtMatrixLayoutSetAttribute(
                           each[i].layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &k.batch,
                           sizeof k.batch)) &&
           mxl_blas_ok(be, op, "batch stride",
                       mxl_lt::cublasLtMatrixLayoutSetAttribute(
                           each[i].layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                           &each[i].stride, sizeof each[i].stride));
  }
  cublasLtMatmulPreference_t pref = NULL;
  ok = ok && mxl_blas_ok(be, op, "preference", mxl_lt::cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = MXL_CU_BLAS_WORKSPACE;
  const uint32_t al[3] = {(uint32_t)k.align_a, (uint32_t)k.align_b, (uint32_t)k.align_c};
  ok = ok && mxl_blas_ok(be, op, "workspace preference",
                         mxl_lt::cublasLtMatmulPreferenceSetAttribute(
                             pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; ok && i < 4; i++)
    ok = mxl_blas_ok(be, op, "alignment preference",
                     mxl_lt::cublasLtMatmulPreferenceSetAttribute(pref, align_attr[i],
                                                                  &al[i < 3 ? i : 2],
                                                                  sizeof al[0]));
  cublasLtMatmulHeuristicResult_t result;
  int returned = 0;
  ok = ok && mxl_blas_ok(be, op, "heuristic",
                         mxl_lt::cublasLtMatmulAlgoGetHeuristic(bs->handle, p->desc, p->a, p->b,
                                                                p->c, p->c, pref, 1, &result,
                                                                &returned));
  if (ok && returned == 0) {
    mxl_cu_fail(be, MXL_ERR_UNSUPPORTED, op,
                "cuBLASLt has no algorithm for m=%lld n=%lld k=%lld (lda %lld, ldb %lld, "
                "ldc %lld)",
                (long long)k.m, (long long)k.n, (long long)k.k, (long long)k.lda,
                (long long)k.ldb, (long long)k.ldc);
    ok = false;
  }
  if (pref) mxl_lt::cublasLtMatmulPreferenceDestroy(pref);
  if (!ok) {
    mxl_blas_release_plan(p);
    return false;
  }
  p->algo = result.algo;
  return true;
}

/* The cached plan of `key`, made on a miss (the oldest plan makes room). */
static inline mxl_blas_plan *mxl_blas_plan_for(mxl_backend *be, const char *op,
                                               const mxl_blas_key &k) {
  mxl_blas_state *bs = mxl_cu_state(be)->blas;
  for (int i = 0; i < bs->n_plans; i++)
    if (memcmp(&bs->plans[i].key, &k, sizeof k) == 0) return &bs->plans[i];
  mxl_blas_plan fresh;
  if (!mxl_blas_make_plan(be, op, k, &fresh)) return NULL;
  int slot = bs->n_plans;
  if (slot == MXL_CU_BLAS_PLANS) {
    slot = bs->next_victim;
    bs->next_victim = (bs->next_victim + 1) % MXL_CU_BLAS_PLANS;
    mxl_blas_release_plan(&bs->plans[slot]);
  } else {
    bs->n_plans++;
  }
  bs->plans[slot] = fresh;
  return &bs->plans[slot];
}

/* Runs one product (file comment); false with the error recorded. */
static inline bool mxl_cu_blas_gemm(mxl_backend *be, const char *op, const mxl_blas_call &c) {
  if (c.M <= 0 || c.N <= 0) return true;
  mxl_cuda_state *st = mxl_cu_state(be);
  mxl_blas_state *bs = st->blas;
  if (!bs) {
    mxl_cu_fail(be, MXL_ERR_BACKEND, op, "cuBLASLt is not initialised");
    return false;
  }
  if (!bs->workspace) {
    bs->workspace = mxl_cu_device_alloc(st, MXL_CU_BLAS_WORKSPACE);
    if (!bs->workspace) {
      mxl_cu_fail(be, MXL_ERR_MEMORY, op, "cannot allocate the %d MiB cuBLASLt workspace",
                  (int)(MXL_CU_BLAS_WORKSPACE >> 20));
      return false;
    }
  }
  mxl_blas_key k;
  memset(&k, 0, sizeof k); /* padding too: keys are compared with memcmp */
  k.transa = c.B.trans;
  k.transb = c.A.trans;
  k.precision = c.precision;
  k.bias = c.bias != NULL;
  k.batch = c.batch > 1 ? c.batch : 1;
  k.align_a = mxl_blas_align(c.B.ptr);
  k.align_b = mxl_blas_align(c.A.ptr);
  k.align_c = mxl_blas_align(c.C);
  k.m = c.N;
  k.n = c.M;
  k.k = c.K;
  k.lda = c.B.ld;
  k.ldb = c.A.ld;
  k.ldc = c.ldc;
  if (k.batch > 1) {
    k.stride_a = c.B.batch_stride;
    k.stride_b = c.A.batch_stride;
    k.stride_c = c.c_batch_stride;
  }
  mxl_blas_plan *p = mxl_blas_plan_for(be, op, k);
  if (!p) return false;
  if (c.bias && !mxl_blas_ok(be, op, "bias pointer",
                             mxl_lt::cublasLtMatmulDescSetAttribute(
                                 p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &c.bias,
                                 sizeof c.bias)))
    return false;
  return mxl_blas_ok(be, op, "matmul",
                     mxl_lt::cublasLtMatmul(bs->handle, p->desc, &c.alpha, c.B.ptr, p->a, c.A.ptr,
                                            p->b, &c.beta, c.C, p->c, c.C, p->c, &p->algo,
                                            bs->workspace, MXL_CU_BLAS_WORKSPACE, st->stream));
}

/* ---------------------------------------------------------------- conversions */

/* out[i] = bf16(x[i]), round to nearest even — n elements. */
MXL_GLOBAL void mxl_to_bf16_kernel(uint16_t *out, const float *x, int64_t n) {
  MXL_FOR_EACH(i, n) out[i] = (uint16_t)(mxl_cu_bf16_bits(x[i]));
}

/* out[i] = float(b[i]) — n elements (bias vectors for the epilogue, whose
 * type is D's: fp32). */
MXL_GLOBAL void mxl_from_bf16_kernel(float *out, const uint16_t *b, int64_t n) {
  MXL_FOR_EACH(i, n) out[i] = mxl_cu_bf16(b[i]);
}

/* Launches an elementwise conversion of n elements. */
template <class Out, class In>
static inline bool mxl_cu_convert(mxl_backend *be, const char *op,
                                  void (*kernel)(Out *, const In *, int64_t), Out *out,
                                  const In *in, int64_t n) {
  if (n <= 0) return true;
  return mxl_cu_launched(be, op,
                         MXL_LAUNCH(kernel,
                                    mxl_cu_grid(n, MXL_CU_ELEMENTWISE_THREADS, MXL_CU_MAX_BLOCKS),
                                    MXL_CU_ELEMENTWISE_THREADS, 0, mxl_cu_state(be)->stream, out,
                                    in, n));
}

static inline bool mxl_cu_to_bf16(mxl_backend *be, const char *op, uint16_t *out, const float *x,
                                  int64_t n) {
  return mxl_cu_convert(be, op, mxl_to_bf16_kernel, out, x, n);
}

static inline bool mxl_cu_from_bf16(mxl_backend *be, const char *op, float *out,
                                    const uint16_t *b, int64_t n) {
  return mxl_cu_convert(be, op, mxl_from_bf16_kernel, out, b, n);
}

#endif
