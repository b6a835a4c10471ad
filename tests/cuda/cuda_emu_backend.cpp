// The emulated CUDA backend (tests/cuda/cuda_emu_backend.h): kernels/cuda's
// op functions on the fiber emulator, memory ops on malloc.
#include "kernels/cuda/emulator.h"  // first: it defines MXL_CUDA_EMULATE

#include "tests/cuda/cuda_emu_backend.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/ops_attention.cuh"
#include "kernels/cuda/ops_dense.cuh"
#include "kernels/cuda/ops_lora.cuh"
#include "kernels/cuda/ops_loss.cuh"
#include "kernels/cuda/ops_moe.cuh"

static const char emu_name[] = "cuda-emu";

static void emu_destroy(mxl_backend *be) {
  mxl_cuda_state *st = mxl_cu_state(be);
  mxl_cu_blas_release(st);
  mxl_cu_scratch_release(st);
  free(st);
  free(be);
}

/* Every allocation carries its size in a 256-byte header (the alignment
 * cudaMalloc gives), so that the backend counts the bytes it holds as the
 * device backend's memory would (mxl_cuda_emu_memory). */
enum { EMU_HEADER = 256 };

static void *emu_alloc(mxl_backend *be, size_t bytes) {
  char *p =
      static_cast<char *>(aligned_alloc(EMU_HEADER, EMU_HEADER + ((bytes + 255) & ~(size_t)255)));
  if (!p) return NULL;
  memset(p + EMU_HEADER, 0, bytes);
  memcpy(p, &bytes, sizeof bytes);
  mxl_cuda_state *st = mxl_cu_state(be);
  st->bytes_now += bytes;
  if (st->bytes_now > st->bytes_peak) st->bytes_peak = st->bytes_now;
  return p + EMU_HEADER;
}

static void emu_free(mxl_backend *be, void *ptr) {
  if (!ptr) return;
  char *p = static_cast<char *>(ptr) - EMU_HEADER;
  size_t bytes;
  memcpy(&bytes, p, sizeof bytes);
  mxl_cu_state(be)->bytes_now -= bytes;
  free(p);
}

static void emu_upload(mxl_backend *be, void *dst, const void *host_src, size_t bytes) {
  (void)be;
  if (bytes) memcpy(dst, host_src, bytes);
}

static void emu_copy(mxl_backend *be, void *dst, const void *src, size_t bytes) {
  (void)be;
  if (bytes) memmove(dst, src, bytes);
}

static void emu_zero(mxl_backend *be, void *dst, size_t bytes) {
  (void)be;
  if (bytes) memset(dst, 0, bytes);
}

static mxl_status emu_sync(mxl_backend *be) {
  mxl_cuda_state *st = mxl_cu_state(be);
  mxl_status status = st->pending;
  if (status != MXL_OK) mxl_errorf(status, "%s", st->message);
  st->pending = MXL_OK;
  st->message[0] = '\0';
  return status;
}

static mxl_ops make_emu_ops(int host_memory) {
  mxl_ops ops;
  memset(&ops, 0, sizeof ops);
  ops.name = emu_name;
  ops.host_memory = host_memory;
  ops.destroy = emu_destroy;
  ops.alloc = emu_alloc;
  ops.free = emu_free;
  ops.upload = emu_upload;
  ops.download = emu_upload; /* host to host either way */
  ops.copy = emu_copy;
  ops.zero = emu_zero;
  ops.sync = emu_sync;
  mxl_cu_fill_dense(&ops);
  mxl_cu_fill_attention(&ops);
  mxl_cu_fill_moe(&ops);
  mxl_cu_fill_loss(&ops);
  mxl_cu_fill_lora(&ops);
  return ops;
}

static const mxl_ops emu_ops = make_emu_ops(0), emu_ops_host = make_emu_ops(1);

extern "C" mxl_status mxl_backend_cuda_emu_create(int host_memory, mxl_backend **out) {
  *out = NULL;
  mxl_cuda_state *st = static_cast<mxl_cuda_state *>(calloc(1, sizeof *st));
  mxl_backend *be = static_cast<mxl_backend *>(calloc(1, sizeof *be));
  if (!st || !be) {
    free(st);
    free(be);
    return mxl_errorf(MXL_ERR_MEMORY, "CUDA emulator backend: out of memory");
  }
  st->device = -1;
  if (!mxl_cu_blas_init(st)) {
    free(st);
    free(be);
    return mxl_errorf(MXL_ERR_BACKEND, "CUDA emulator backend: the cuBLASLt stand-in failed");
  }
  be->ops = host_memory ? &emu_ops_host : &emu_ops;
  be->n_threads = 1;
  be->impl = st;
  *out = be;
  return MXL_OK;
}

extern "C" void mxl_cuda_emu_set_order(mxl_emu_order order, uint64_t seed) {
  static const mxl_emu::order orders[3] = {mxl_emu::order::forward, mxl_emu::order::reverse,
                                           mxl_emu::order::shuffle};
  mxl_emu::settings().run_order = orders[order];
  mxl_emu::settings().seed = seed;
}

extern "C" void mxl_cuda_emu_set_xent_chunk(mxl_backend *be, int64_t rows) {
  mxl_cu_state(be)->xent_chunk_rows = rows;
}

extern "C" void mxl_cuda_emu_memory(mxl_backend *be, size_t *now, size_t *peak) {
  *now = mxl_cu_state(be)->bytes_now;
  *peak = mxl_cu_state(be)->bytes_peak;
}
