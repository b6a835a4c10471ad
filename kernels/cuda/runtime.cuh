/* The CUDA backend's state and the few services its op functions use,
 * written once for the device build (nvcc) and the CPU emulator build
 * (kernels/cuda/emulator.h included first):
 *   mxl_cu_state(be)                 the state of a CUDA (or emulated) backend;
 *   mxl_cu_launched(be, op, rc)      checks an MXL_LAUNCH result, keeps the first
 *                                    error for sync (ops are void, ops.h);
 *   mxl_cu_fail(be, status, op, ...) keeps any other first error;
 *   mxl_cu_scratch(be, bytes, op)    device scratch shared by all ops.
 * Scratch is one growable buffer: ops run in order on one stream, so an op
 * may reuse what the previous op used; growing it frees the old buffer with
 * cudaFree, which waits for the work still reading it. */
#ifndef MXL_KERNELS_CUDA_RUNTIME_CUH
#define MXL_KERNELS_CUDA_RUNTIME_CUH

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/cuda/common.cuh"

extern "C" {
#include "core/status.h"
#include "kernels/cuda_memory.h"
#include "kernels/ops.h"
}

enum { MXL_CU_BLAS_PLANS = MXL_CUDA_BLAS_PLANS };
#define MXL_CU_BLAS_WORKSPACE MXL_CUDA_BLAS_WORKSPACE

struct mxl_blas_state; /* kernels/cuda/blas.cuh */
struct mxl_dnn_state;  /* kernels/cuda/cudnn_attention.cuh */

#ifdef MXL_CUDA_EMULATE
typedef void *mxl_cu_stream; /* the emulator runs launches to completion */
/* A program may link both builds (the emulator test links the library):
 * the two layouts of the state get two names. */
#define mxl_cuda_state mxl_cuda_emu_state
#else
typedef cudaStream_t mxl_cu_stream;
#endif

/* Backend state. */
struct mxl_cuda_state {
  int device;           /* CUDA device, -1 on the emulator */
  mxl_cu_stream stream; /* every op of the backend runs on it, in order */
  mxl_status pending;   /* first error since the last sync */
  char message[256];
  void *scratch; /* [scratch_bytes] device memory for ops' intermediates */
  size_t scratch_bytes;
  /* unembed_xent: vocabulary rows per chunk, 0 = sized from the token count
   * (kernels/cuda_memory.h); tests set it to force several chunks. */
  int64_t xent_chunk_rows;
  struct mxl_blas_state *blas; /* cuBLASLt handle, workspace, plans */
  /* cuDNN attention (handle, plans, workspace), or NULL: own kernels, for
   * the reason in dnn_off */
  struct mxl_dnn_state *dnn;
  char dnn_off[96];
  /* Device memory the backend holds for itself (scratch, workspace) and,
   * on the emulator, for every alloc: now and at most (tests/cuda plan
   * test). */
  size_t bytes_now, bytes_peak;
};

static inline mxl_cuda_state *mxl_cu_state(mxl_backend *be) {
  return static_cast<mxl_cuda_state *>(be->impl);
}

/* Keeps the first failure since the last sync: "op: message". */
static inline void mxl_cu_fail(mxl_backend *be, mxl_status status, const char *op,
                               const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static inline void mxl_cu_fail(mxl_backend *be, mxl_status status, const char *op,
                               const char *fmt, ...) {
  mxl_cuda_state *st = mxl_cu_state(be);
  if (st->pending != MXL_OK) return;
  st->pending = status;
  int len = st->device < 0
                ? snprintf(st->message, sizeof st->message, "CUDA emulator: %s: ", op)
                : snprintf(st->message, sizeof st->message, "CUDA device %d: %s: ", st->device, op);
  if (len < 0 || (size_t)len >= sizeof st->message) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(st->message + len, sizeof st->message - (size_t)len, fmt, ap);
  va_end(ap);
}

/* True when an MXL_LAUNCH returned 0; otherwise records the error. */
static inline bool mxl_cu_launched(mxl_backend *be, const char *op, int rc) {
  if (rc == 0) return true;
  mxl_cu_fail(be, MXL_ERR_BACKEND, op, "kernel launch failed: %s (error %d)",
              MXL_LAUNCH_ERROR(rc), rc);
  return false;
}

/* Device memory of `bytes` (host memory on the emulator), counted in
 * st->bytes_now; NULL when it cannot be had. */
static inline void *mxl_cu_device_alloc(mxl_cuda_state *st, size_t bytes) {
  void *p = NULL;
#ifdef MXL_CUDA_EMULATE
  p = malloc(bytes ? bytes : 1);
#else
  if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
    cudaGetLastError(); /* out of memory is not sticky */
    p = NULL;
  }
#endif
  if (p) {
    st->bytes_now += bytes;
    if (st->bytes_now > st->bytes_peak) st->bytes_peak = st->bytes_now;
  }
  return p;
}

/* Frees what mxl_cu_device_alloc gave (cudaFree waits for the work still
 * using it); NULL is a no-op. */
static inline void mxl_cu_device_free(mxl_cuda_state *st, void *p, size_t bytes) {
  if (!p) return;
#ifdef MXL_CUDA_EMULATE
  free(p);
#else
  cudaFree(p);
#endif
  st->bytes_now -= bytes;
}

/* A scratch buffer of at least `bytes`, valid until the next call; NULL
 * (error recorded) when it cannot be allocated. It grows in whole MiB
 * (kernels/cuda_memory.h) and never shrinks. */
static inline void *mxl_cu_scratch(mxl_backend *be, size_t bytes, const char *op) {
  mxl_cuda_state *st = mxl_cu_state(be);
  if (bytes <= st->scratch_bytes) return st->scratch;
  size_t want = mxl_cuda_scratch_rounded(bytes);
  mxl_cu_device_free(st, st->scratch, st->scratch_bytes);
  st->scratch = mxl_cu_device_alloc(st, want);
  if (!st->scratch) {
    st->scratch_bytes = 0;
    mxl_cu_fail(be, MXL_ERR_MEMORY, op, "cannot allocate %zu bytes of scratch", want);
    return NULL;
  }
  st->scratch_bytes = want;
  return st->scratch;
}

/* Releases the scratch (backend destruction). */
static inline void mxl_cu_scratch_release(mxl_cuda_state *st) {
  mxl_cu_device_free(st, st->scratch, st->scratch_bytes);
  st->scratch = NULL;
  st->scratch_bytes = 0;
}

/* Carves 256-byte aligned pieces off a scratch buffer, in the order of the
 * size formulas of kernels/cuda_memory.h. */
struct mxl_cu_carve {
  char *at;
  template <class T>
  T *take(size_t bytes) {
    T *p = reinterpret_cast<T *>(at);
    at += mxl_cuda_piece(bytes);
    return p;
  }
};

/* Blocks for n items at `threads` per block, at most `cap` blocks (kernels
 * loop with MXL_FOR_EACH); at least one block. */
static inline unsigned mxl_cu_grid(int64_t n, int threads, int64_t cap) {
  int64_t want = (n + threads - 1) / threads;
  if (want < 1) want = 1;
  return (unsigned)(want < cap ? want : cap);
}

/* Grid cap of elementwise kernels: enough to fill any current GPU. */
enum { MXL_CU_ELEMENTWISE_THREADS = 256, MXL_CU_MAX_BLOCKS = 8192 };

#endif
