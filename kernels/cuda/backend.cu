/* The CUDA backend: device selection and the memory part of the op table.
 *
 * Everything runs on one non-blocking stream per backend, in order, so an
 * op may use the results of the ops before it without waiting. upload,
 * copy and zero are asynchronous; download waits for its own copy (the
 * caller reads the host buffer right after); sync waits for everything and
 * reports the first CUDA error since the previous sync.
 *
 * The compute ops come from ops_dense.cu, ops_attention.cu, ops_moe.cu,
 * ops_loss.cu and ops_lora.cu, each the device build of a kernel header that the CPU
 * emulator also runs (tests/cuda/test_cuda_ops.cpp); every op of the table
 * is filled (mxl_cuda_op_table lets a test check that without a device). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/backend_internal.cuh"
#include "kernels/cuda/cuda_backend.h"

static const char mxl_cuda_name[] = "cuda";

mxl_cuda_state *mxl_cuda_state_of(mxl_backend *be) {
  if (!be || !be->ops || be->ops->name != mxl_cuda_name) return NULL;
  return static_cast<mxl_cuda_state *>(be->impl);
}

void mxl_cuda_fail(mxl_cuda_state *st, const char *op, cudaError_t err) {
  if (st->pending != MXL_OK) return;
  st->pending = MXL_ERR_BACKEND;
  snprintf(st->message, sizeof st->message, "CUDA device %d: %s: %s (error %d)", st->device, op,
           cudaGetErrorString(err), (int)err);
}

static mxl_cuda_state *state(mxl_backend *be) {
  return static_cast<mxl_cuda_state *>(be->impl);
}

static void check(mxl_backend *be, const char *op, cudaError_t err) {
  if (err != cudaSuccess) mxl_cuda_fail(state(be), op, err);
}

/* ---- lifetime and memory ---- */

static void cuda_destroy(mxl_backend *be) {
  mxl_cuda_state *st = state(be);
  cudaStreamSynchronize(st->stream);
  mxl_cuda_dnn_release(st);
  mxl_cuda_blas_release(st);
  mxl_cu_scratch_release(st);
  cudaStreamDestroy(st->stream);
  free(st);
  free(be);
}

static void *cuda_alloc(mxl_backend *be, size_t bytes) {
  void *ptr = NULL;
  cudaError_t err = cudaMalloc(&ptr, bytes ? bytes : 1);
  if (err != cudaSuccess) {
    cudaGetLastError(); /* an out-of-memory here is the caller's to handle, not sticky */
    return NULL;
  }
  err = cudaMemsetAsync(ptr, 0, bytes, state(be)->stream);
  if (err != cudaSuccess) {
    check(be, "alloc (zeroing)", err);
    cudaFree(ptr);
    return NULL;
  }
  return ptr;
}

static void cuda_free(mxl_backend *be, void *ptr) {
  /* cudaFree synchronizes the device, so pending work on ptr completes. */
  if (ptr) check(be, "free", cudaFree(ptr));
}

static void cuda_upload(mxl_backend *be, void *dst, const void *host_src, size_t bytes) {
  if (bytes)
    check(be, "upload",
          cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, state(be)->stream));
}

static void cuda_download(mxl_backend *be, void *host_dst, const void *src, size_t bytes) {
  if (!bytes) return;
  cudaStream_t stream = state(be)->stream;
  check(be, "download", cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream));
  check(be, "download", cudaStreamSynchronize(stream));
}

static void cuda_copy(mxl_backend *be, void *dst, const void *src, size_t bytes) {
  if (bytes)
    check(be, "copy",
          cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, state(be)->stream));
}

static void cuda_zero(mxl_backend *be, void *dst, size_t bytes) {
  if (bytes) check(be, "zero", cudaMemsetAsync(dst, 0, bytes, state(be)->stream));
}

static mxl_status cuda_sync(mxl_backend *be) {
  mxl_cuda_state *st = state(be);
  check(be, "sync", cudaStreamSynchronize(st->stream));
  mxl_status status = st->pending;
  if (status != MXL_OK) mxl_errorf(status, "%s", st->message);
  st->pending = MXL_OK;
  st->message[0] = '\0';
  return status;
}

static mxl_ops make_cuda_ops(void) {
  mxl_ops ops;
  memset(&ops, 0, sizeof ops);
  ops.name = mxl_cuda_name;
  ops.host_memory = 0;
  ops.destroy = cuda_destroy;
  ops.alloc = cuda_alloc;
  ops.free = cuda_free;
  ops.upload = cuda_upload;
  ops.download = cuda_download;
  ops.copy = cuda_copy;
  ops.zero = cuda_zero;
  ops.sync = cuda_sync;
  mxl_cuda_fill_dense(&ops);
  mxl_cuda_fill_attention(&ops);
  mxl_cuda_fill_moe(&ops);
  mxl_cuda_fill_loss(&ops);
  mxl_cuda_fill_lora(&ops);
  return ops;
}

static const mxl_ops cuda_ops = make_cuda_ops();

extern "C" const mxl_ops *mxl_cuda_op_table(void) { return &cuda_ops; }

extern "C" void *mxl_cuda_host_alloc(size_t bytes) {
  void *p = NULL;
  if (cudaMallocHost(&p, bytes ? bytes : 1) != cudaSuccess) {
    cudaGetLastError(); /* the caller's to handle, not sticky */
    return NULL;
  }
  return p;
}

extern "C" void mxl_cuda_host_free(void *host) {
  if (host) cudaFreeHost(host); /* waits for the copies still using it */
}

extern "C" void mxl_cuda_download_async(mxl_backend *be, void *host_dst, const void *src,
                                        size_t bytes) {
  if (bytes)
    check(be, "download",
          cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, state(be)->stream));
}

extern "C" void mxl_cuda_attention_path(mxl_backend *be, char *buf, size_t size) {
  mxl_cuda_dnn_describe(mxl_cuda_state_of(be), buf, size);
}

extern "C" mxl_status mxl_cuda_memory_info(mxl_backend *be, size_t *free_bytes,
                                           size_t *total_bytes) {
  *free_bytes = *total_bytes = 0;
  mxl_cuda_state *st = mxl_cuda_state_of(be);
  if (!st) return mxl_errorf(MXL_ERR_ARGUMENT, "mxl_cuda_memory_info: not a CUDA backend");
  cudaError_t err = cudaSetDevice(st->device);
  if (err == cudaSuccess) err = cudaMemGetInfo(free_bytes, total_bytes);
  if (err != cudaSuccess)
    return mxl_errorf(MXL_ERR_BACKEND, "CUDA device %d: cudaMemGetInfo: %s", st->device,
                      cudaGetErrorString(err));
  return MXL_OK;
}

/* The oldest architecture this build carries SASS for (CMakeLists.txt). */
enum { MXL_CUDA_MIN_MAJOR = 8 };

extern "C" mxl_status mxl_backend_cuda_create(int device, mxl_backend **out) {
  *out = NULL;
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    cudaGetLastError();
    if (err == cudaSuccess) err = cudaErrorNoDevice;
    return mxl_errorf(MXL_ERR_UNSUPPORTED,
                      "CUDA backend: no usable GPU (cudaGetDeviceCount: %s, error %d)",
                      cudaGetErrorString(err), (int)err);
  }
  if (device < 0 || device >= count)
    return mxl_errorf(MXL_ERR_ARGUMENT, "CUDA backend: device %d does not exist (%d present)",
                      device, count);
  cudaDeviceProp prop;
  if ((err = cudaGetDeviceProperties(&prop, device)) != cudaSuccess)
    return mxl_errorf(MXL_ERR_BACKEND, "CUDA device %d: cudaGetDeviceProperties: %s", device,
                      cudaGetErrorString(err));
  if (prop.major < MXL_CUDA_MIN_MAJOR)
    return mxl_errorf(MXL_ERR_UNSUPPORTED,
                      "CUDA device %d (%s) has compute capability %d.%d; mxlora needs 8.0 "
                      "(Ampere) or newer",
                      device, prop.name, prop.major, prop.minor);
  mxl_cuda_state *st = static_cast<mxl_cuda_state *>(calloc(1, sizeof *st));
  mxl_backend *be = static_cast<mxl_backend *>(calloc(1, sizeof *be));
  if (!st || !be) {
    free(st);
    free(be);
    return mxl_errorf(MXL_ERR_MEMORY, "CUDA backend: out of host memory");
  }
  st->device = device;
  if ((err = cudaSetDevice(device)) != cudaSuccess ||
      (err = cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking)) != cudaSuccess) {
    free(st);
    free(be);
    return mxl_errorf(MXL_ERR_BACKEND, "CUDA device %d: creating the stream: %s", device,
                      cudaGetErrorString(err));
  }
  if (!mxl_cuda_blas_init(st)) {
    cudaStreamDestroy(st->stream);
    free(st);
    free(be);
    return mxl_errorf(MXL_ERR_BACKEND, "CUDA device %d: cuBLASLt cannot be initialised",
                      device);
  }
  mxl_cuda_dnn_init(st); /* without it, attention runs the own kernels */
  be->ops = &cuda_ops;
  be->n_threads = 1;
  be->impl = st;
  *out = be;
  return MXL_OK;
}
