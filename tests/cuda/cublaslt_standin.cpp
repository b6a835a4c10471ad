// CPU stand-ins for exactly the cuBLASLt calls of kernels/cuda/blas.cuh (the
// list in its namespace mxl_lt), for the emulated CUDA backend: the
// backend's own wrapper code runs unchanged in the emulator tests, against
// these. Written from NVIDIA's documentation of cublasLtMatmul and the
// comments of cublasLt.h, not from our kernels:
//   - D = alpha·op(A)·op(B) + beta·C, column-major: element (i, j) of a
//     layout with leading dimension ld is at i + j·ld; op(X) = Xᵀ when the
//     descriptor's TRANSA/TRANSB is CUBLAS_OP_T, so A's layout is m x k
//     (N) or k x m (T), B's k x n or n x k, C and D m x n; a layout's ld must
//     be at least its rows;
//   - strided batches: CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT (int32) and
//     STRIDED_BATCH_OFFSET (int64, elements) on every matrix, counts equal;
//   - compute type CUBLAS_COMPUTE_32F with A, B bf16 or fp32 and C, D fp32
//     (products accumulated in fp32); the scale type (alpha, beta: host
//     floats, the default pointer mode) is CUDA_R_32F;
//   - CUBLASLT_EPILOGUE_BIAS adds bias[i] (a vector of D's rows, type of D
//     unless CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE says otherwise) to every
//     column; with beta == 0, C is not read (as cuBLAS documents for gemm);
//     C may be D (in place) with the same layout;
//   - cublasLtMatmulAlgoGetHeuristic returns algorithms valid for the
//     problem and the preference's minimum alignments (default 256 bytes);
//     cublasLtMatmul refuses pointers less aligned than the algorithm was
//     chosen for, and a workspace smaller than the heuristic asked for.
// Anything else the wrapper might pass is refused (NOT_SUPPORTED or
// INVALID_VALUE), so a new call or attribute shows up in the tests.
#include "kernels/cuda/emulator.h"  // first: MXL_CUDA_EMULATE

#include "tests/cuda/cublaslt_standin.h"

#include <cmath>
#include <cstring>
#include <new>
#include <string>

#include "kernels/cuda/blas.cuh"    // the declarations of namespace mxl_lt

struct cublasLtContext {
  uint64_t magic;
};

namespace {

constexpr uint64_t HANDLE_MAGIC = 0x4c54484e444c4531ull, DESC_MAGIC = 0x4c54444553435231ull,
                   LAYOUT_MAGIC = 0x4c544c41594f5531ull, PREF_MAGIC = 0x4c54505245463031ull,
                   ALGO_MAGIC = 0x4c54414c474f3031ull;

std::string last_error;

cublasStatus_t refuse(cublasStatus_t status, const std::string &why) {
  last_error = why;
  return status;
}

struct desc_t {
  uint64_t magic;
  cublasComputeType_t compute;
  cudaDataType_t scale;
  int32_t transa, transb;
  uint32_t epilogue;
  const void *bias;
  int32_t bias_type;  // -1: D's type
};

struct layout_t {
  uint64_t magic;
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
  int32_t batch;
  int64_t stride;
};

struct pref_t {
  uint64_t magic;
  uint64_t max_workspace;
  uint32_t align[4];  // A, B, C, D
};

struct algo_t {
  uint64_t magic;
  uint32_t align[4];
};

static_assert(sizeof(desc_t) <= sizeof(cublasLtMatmulDescOpaque_t), "desc");
static_assert(sizeof(layout_t) <= sizeof(cublasLtMatrixLayoutOpaque_t), "layout");
static_assert(sizeof(pref_t) <= sizeof(cublasLtMatmulPreferenceOpaque_t), "preference");
static_assert(sizeof(algo_t) <= sizeof(cublasLtMatmulAlgo_t), "algo");

template <class T, class Opaque>
T *view(Opaque *o, uint64_t magic) {
  T *t = reinterpret_cast<T *>(o);
  return o && t->magic == magic ? t : nullptr;
}

size_t type_size(cudaDataType_t t) { return t == CUDA_R_16BF ? 2 : 4; }

float element(const layout_t &l, const void *base, int64_t batch, uint64_t i, uint64_t j) {
  size_t at = (size_t)(batch * l.stride + (int64_t)i + (int64_t)j * l.ld);
  if (l.type == CUDA_R_16BF) {
    uint16_t h;
    std::memcpy(&h, static_cast<const char *>(base) + 2 * at, 2);
    uint32_t bits = (uint32_t)h << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  float f;
  std::memcpy(&f, static_cast<const char *>(base) + 4 * at, 4);
  return f;
}

bool aligned(const void *p, uint32_t bytes) {
  return bytes <= 1 || reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// The problem's dimensions after every documented consistency check.
struct problem {
  uint64_t m, n, k;
  int32_t batch;
};

cublasStatus_t check(const desc_t *d, const layout_t *a, const layout_t *b, const layout_t *c,
                     const layout_t *dl, problem *p) {
  if (!d || !a || !b || !c || !dl)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "a descriptor is NULL or not one of ours");
  if (d->scale != CUDA_R_32F)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "scale type other than CUDA_R_32F");
  bool bf16_in = a->type == CUDA_R_16BF && b->type == CUDA_R_16BF;
  bool f32_in = a->type == CUDA_R_32F && b->type == CUDA_R_32F;
  bool f32_out = c->type == CUDA_R_32F && dl->type == CUDA_R_32F;
  bool types_ok = f32_out && d->compute == CUBLAS_COMPUTE_32F && (bf16_in || f32_in);
  if (!types_ok)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "unsupported compute/data type combination");
  if (d->epilogue != CUBLASLT_EPILOGUE_DEFAULT && d->epilogue != CUBLASLT_EPILOGUE_BIAS)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "epilogue other than DEFAULT or BIAS");
  if (d->epilogue == CUBLASLT_EPILOGUE_BIAS && d->bias_type != -1 && d->bias_type != CUDA_R_32F)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "bias type other than D's (fp32)");
  p->m = c->rows;
  p->n = c->cols;
  p->k = d->transa == CUBLAS_OP_N ? a->cols : a->rows;
  uint64_t a_m = d->transa == CUBLAS_OP_N ? a->rows : a->cols;
  uint64_t b_k = d->transb == CUBLAS_OP_N ? b->rows : b->cols;
  uint64_t b_n = d->transb == CUBLAS_OP_N ? b->cols : b->rows;
  if (a_m != p->m || b_k != p->k || b_n != p->n || dl->rows != c->rows || dl->cols != c->cols)
    return refuse(CUBLAS_STATUS_INVALID_VALUE,
                  "op(A) is " + std::to_string(a_m) + "x" + std::to_string(p->k) + ", op(B) " +
                      std::to_string(b_k) + "x" + std::to_string(b_n) + ", C " +
                      std::to_string(c->rows) + "x" + std::to_string(c->cols));
  for (const layout_t *l : {a, b, c, dl})
    if (l->ld < (int64_t)l->rows || l->ld < 1)
      return refuse(CUBLAS_STATUS_INVALID_VALUE, "leading dimension " + std::to_string(l->ld) +
                                                     " below the rows " + std::to_string(l->rows));
  if (a->batch != c->batch || b->batch != c->batch || dl->batch != c->batch || c->batch < 1)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "batch counts differ");
  if (d->transa != CUBLAS_OP_N && d->transa != CUBLAS_OP_T)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "transa");
  if (d->transb != CUBLAS_OP_N && d->transb != CUBLAS_OP_T)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "transb");
  p->batch = c->batch;
  return CUBLAS_STATUS_SUCCESS;
}

template <class T>
cublasStatus_t read_attr(T *dst, const void *buf, size_t size) {
  if (!buf || size != sizeof(T))
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "attribute buffer of the wrong size");
  std::memcpy(dst, buf, sizeof(T));
  return CUBLAS_STATUS_SUCCESS;
}

// A descriptor: `init` placed in a fresh opaque block of the library's type.
template <class T, class Opaque>
cublasStatus_t make(Opaque **out, const T &init) {
  Opaque *o = new Opaque();
  new (o) T(init);
  *out = o;
  return CUBLAS_STATUS_SUCCESS;
}

template <class T, class Opaque>
cublasStatus_t destroy(Opaque *o, uint64_t magic, const char *what) {
  T *t = view<T>(o, magic);
  if (!t) return refuse(CUBLAS_STATUS_INVALID_VALUE, std::string("not a ") + what);
  t->magic = 0;
  delete o;
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

extern "C" const char *mxl_lt_standin_last_error(void) { return last_error.c_str(); }

namespace mxl_lt {

cublasStatus_t cublasLtCreate(cublasLtHandle_t *handle) {
  *handle = new cublasLtContext{HANDLE_MAGIC};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  if (!handle || handle->magic != HANDLE_MAGIC)
    return refuse(CUBLAS_STATUS_NOT_INITIALIZED, "not a handle");
  handle->magic = 0;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *out, cublasComputeType_t compute,
                                        cudaDataType_t scale_type) {
  return make(out, desc_t{DESC_MAGIC, compute, scale_type, CUBLAS_OP_N, CUBLAS_OP_N,
                          CUBLASLT_EPILOGUE_DEFAULT, nullptr, -1});
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  return destroy<desc_t>(desc, DESC_MAGIC, "matmul descriptor");
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr, const void *buf,
                                              size_t size) {
  desc_t *d = view<desc_t>(desc, DESC_MAGIC);
  if (!d) return refuse(CUBLAS_STATUS_INVALID_VALUE, "not a matmul descriptor");
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
      return read_attr(&d->transa, buf, size);
    case CUBLASLT_MATMUL_DESC_TRANSB:
      return read_attr(&d->transb, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
      return read_attr(&d->epilogue, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
      return read_attr(&d->bias, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
      return read_attr(&d->bias_type, buf, size);
    default:
      return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                    "matmul descriptor attribute " + std::to_string((int)attr));
  }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *out, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  return make(out, layout_t{LAYOUT_MAGIC, type, rows, cols, ld, 1, 0});
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  return destroy<layout_t>(layout, LAYOUT_MAGIC, "matrix layout");
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout,
                                                cublasLtMatrixLayoutAttribute_t attr,
                                                const void *buf, size_t size) {
  layout_t *l = view<layout_t>(layout, LAYOUT_MAGIC);
  if (!l) return refuse(CUBLAS_STATUS_INVALID_VALUE, "not a matrix layout");
  switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT:
      return read_attr(&l->batch, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET:
      return read_attr(&l->stride, buf, size);
    default:
      return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                    "matrix layout attribute " + std::to_string((int)attr));
  }
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *out) {
  return make(out, pref_t{PREF_MAGIC, 0, {256, 256, 256, 256}});
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  return destroy<pref_t>(pref, PREF_MAGIC, "preference");
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t size) {
  pref_t *p = view<pref_t>(pref, PREF_MAGIC);
  if (!p) return refuse(CUBLAS_STATUS_INVALID_VALUE, "not a preference");
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
      return read_attr(&p->max_workspace, buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
      return read_attr(&p->align[0], buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
      return read_attr(&p->align[1], buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
      return read_attr(&p->align[2], buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
      return read_attr(&p->align[3], buf, size);
    default:
      return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                    "preference attribute " + std::to_string((int)attr));
  }
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t results[],
                                              int *returned) {
  *returned = 0;
  if (!handle || handle->magic != HANDLE_MAGIC)
    return refuse(CUBLAS_STATUS_NOT_INITIALIZED, "not a handle");
  const pref_t *p = view<pref_t>(pref, PREF_MAGIC);
  if (!p || requested < 1) return refuse(CUBLAS_STATUS_INVALID_VALUE, "preference or count");
  problem pr;
  cublasStatus_t s = check(view<desc_t>(desc, DESC_MAGIC), view<layout_t>(a, LAYOUT_MAGIC),
                           view<layout_t>(b, LAYOUT_MAGIC), view<layout_t>(c, LAYOUT_MAGIC),
                           view<layout_t>(d, LAYOUT_MAGIC), &pr);
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  std::memset(&results[0], 0, sizeof results[0]);
  algo_t *algo = reinterpret_cast<algo_t *>(&results[0].algo);
  algo->magic = ALGO_MAGIC;
  std::memcpy(algo->align, p->align, sizeof algo->align);
  results[0].workspaceSize = 0;
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.0f;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t a, const void *B,
                              cublasLtMatrixLayout_t b, const void *beta, const void *C,
                              cublasLtMatrixLayout_t c, void *D, cublasLtMatrixLayout_t d,
                              const cublasLtMatmulAlgo_t *algo, void *workspace,
                              size_t workspace_bytes, mxl_cu_stream stream) {
  (void)workspace, (void)workspace_bytes, (void)stream;  // the algorithm needs none
  if (!handle || handle->magic != HANDLE_MAGIC)
    return refuse(CUBLAS_STATUS_NOT_INITIALIZED, "not a handle");
  const desc_t *dd = view<desc_t>(desc, DESC_MAGIC);
  const layout_t *la = view<layout_t>(a, LAYOUT_MAGIC), *lb = view<layout_t>(b, LAYOUT_MAGIC);
  const layout_t *lc = view<layout_t>(c, LAYOUT_MAGIC), *ld = view<layout_t>(d, LAYOUT_MAGIC);
  problem pr;
  cublasStatus_t s = check(dd, la, lb, lc, ld, &pr);
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  const algo_t *al = reinterpret_cast<const algo_t *>(algo);
  if (!algo || al->magic != ALGO_MAGIC)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "an algorithm not from the heuristic");
  if (!alpha || !beta || !A || !B || !D) return refuse(CUBLAS_STATUS_INVALID_VALUE, "NULL pointer");
  if (!aligned(A, al->align[0]) || !aligned(B, al->align[1]) || !aligned(C, al->align[2]) ||
      !aligned(D, al->align[3]))
    return refuse(CUBLAS_STATUS_INVALID_VALUE,
                  "a pointer less aligned than the algorithm was chosen for");
  const bool bias = dd->epilogue == CUBLASLT_EPILOGUE_BIAS;
  if (bias && !dd->bias) return refuse(CUBLAS_STATUS_INVALID_VALUE, "BIAS epilogue, no bias");
  float fa, fb;
  std::memcpy(&fa, alpha, 4);
  std::memcpy(&fb, beta, 4);
  if (fb != 0.0f && !C) return refuse(CUBLAS_STATUS_INVALID_VALUE, "beta != 0 and C NULL");
  const float *bias_v = static_cast<const float *>(dd->bias);
  // The product reads and writes device memory, as a kernel does.
  void (*access)(bool) = mxl_emu::settings().device_access;
  if (access) access(true);
  for (int64_t bt = 0; bt < pr.batch; bt++)
    for (uint64_t j = 0; j < pr.n; j++)
      for (uint64_t i = 0; i < pr.m; i++) {
        float acc = 0.0f;
        for (uint64_t p = 0; p < pr.k; p++) {
          float x =
              dd->transa == CUBLAS_OP_N ? element(*la, A, bt, i, p) : element(*la, A, bt, p, i);
          float y =
              dd->transb == CUBLAS_OP_N ? element(*lb, B, bt, p, j) : element(*lb, B, bt, j, p);
          acc = std::fma(x, y, acc);
        }
        float out = fa * acc;
        if (fb != 0.0f) out += fb * element(*lc, C, bt, i, j);
        if (bias) out += bias_v[i];
        size_t at = (size_t)(bt * ld->stride + (int64_t)i + (int64_t)j * ld->ld);
        std::memcpy(static_cast<char *>(D) + 4 * at, &out, 4);
      }
  if (access) access(false);
  return CUBLAS_STATUS_SUCCESS;
}

const char *cublasLtGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    default:
      return "CUBLAS_STATUS (other)";
  }
}

}  // namespace mxl_lt
