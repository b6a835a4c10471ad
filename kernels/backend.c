#include <stdlib.h>
#include <string.h>

#include <stdio.h>

#include "core/hugemem.h"
#include "core/status.h"
#include "kernels/backend_memory.h"
#include "kernels/cpu/cpu.h"
#include "kernels/ops.h"
#ifdef MXL_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

void mxl_backend_destroy(mxl_backend *be) {
  if (be) be->ops->destroy(be);
}

#ifdef MXL_HAVE_CUDA
static int is_cuda(const mxl_backend *be) { return be->ops == mxl_cuda_op_table(); }
#endif

void *mxl_backend_host_alloc(mxl_backend *be, size_t bytes) {
#ifdef MXL_HAVE_CUDA
  if (is_cuda(be)) return mxl_cuda_host_alloc(bytes);
#endif
  (void)be;
  return malloc(bytes ? bytes : 1);
}

void mxl_backend_host_free(mxl_backend *be, void *host) {
#ifdef MXL_HAVE_CUDA
  if (is_cuda(be)) {
    mxl_cuda_host_free(host);
    return;
  }
#endif
  (void)be;
  free(host);
}

void mxl_backend_download_async(mxl_backend *be, void *host_dst, const void *src, size_t bytes) {
#ifdef MXL_HAVE_CUDA
  if (is_cuda(be)) {
    mxl_cuda_download_async(be, host_dst, src, bytes);
    return;
  }
#endif
  be->ops->download(be, host_dst, src, bytes);
}

mxl_status mxl_backend_memory_left(mxl_backend *be, size_t *bytes) {
  *bytes = 0;
#ifdef MXL_HAVE_CUDA
  if (is_cuda(be)) {
    size_t total = 0;
    return mxl_cuda_memory_info(be, bytes, &total);
  }
#endif
  if (!be->ops->host_memory)
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s backend: the memory left is not known",
                      be->ops->name);
  uint64_t avail = 0;
  MXL_TRY(mxl_mem_available(&avail));
  *bytes = (size_t)avail;
  return MXL_OK;
}

const char *mxl_build_features(void) {
  static char line[512];
  mxl_backend *be = NULL;
  const char *isa = "unavailable";
  if (mxl_backend_cpu_create(1, &be) == MXL_OK) isa = mxl_backend_cpu_isa(be);
  char cuda[320];
#ifdef MXL_HAVE_CUDA
  mxl_backend *gpu = NULL;
  char path[256];
  int usable = mxl_backend_cuda_create(0, &gpu) == MXL_OK;
  mxl_cuda_attention_path(gpu, path, sizeof path); /* NULL: what no device means */
  snprintf(cuda, sizeof cuda, "cuda built, %s; %s",
           usable ? "device 0 available" : "no usable device", path);
  mxl_backend_destroy(gpu);
#else
  snprintf(cuda, sizeof cuda, "cuda not built");
#endif
  snprintf(line, sizeof line, "cpu kernels: %s; %s", isa, cuda);
  mxl_backend_destroy(be);
  return line;
}

mxl_status mxl_backend_create_named(const char *name, int n_threads, mxl_backend **out) {
  *out = NULL;
  if (n_threads < 0)
    return mxl_errorf(MXL_ERR_ARGUMENT, "threads %d: expected 0 (all cores) or a positive count",
                      n_threads);
  if (!name || !strcmp(name, "cpu")) return mxl_backend_cpu_create(n_threads, out);
  if (!strcmp(name, "ref")) return mxl_backend_ref_create(out);
  if (!strcmp(name, "auto")) {
    if (mxl_backend_cuda_create(0, out) == MXL_OK) return MXL_OK;
    return mxl_backend_cpu_create(n_threads, out);
  }
  if (!strncmp(name, "cuda", 4) && (name[4] == '\0' || name[4] == ':')) {
    char *end = NULL;
    long device = name[4] ? strtol(name + 5, &end, 10) : 0;
    if (name[4] && (end == name + 5 || *end || device < 0 || device > 1024))
      return mxl_errorf(MXL_ERR_ARGUMENT, "backend '%s': expected cuda:N with a device number",
                        name);
    return mxl_backend_cuda_create((int)device, out);
  }
  return mxl_errorf(MXL_ERR_ARGUMENT, "backend '%s': expected cpu, cuda, cuda:N, auto or ref",
                    name);
}

#ifndef MXL_HAVE_CUDA
mxl_status mxl_backend_cuda_create(int device, mxl_backend **out) {
  (void)device;
  *out = NULL;
  return mxl_errorf(MXL_ERR_UNSUPPORTED,
                    "this mxlora was built without the CUDA backend (configure with nvcc "
                    "present, or -DMXL_CUDA=ON)");
}
#endif
