// The emulated CUDA backend (tests/cuda/cuda_emu_backend.h): kernels/cuda's
// op functions on the fiber emulator; device memory the host cannot touch
// outside kernels and memory ops.
#include "kernels/cuda/emulator.h"  // first: it defines MXL_CUDA_EMULATE

#include "tests/cuda/cuda_emu_backend.h"

#include <execinfo.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/cuda/ops_attention.cuh"
#include "kernels/cuda/ops_dense.cuh"
#include "kernels/cuda/ops_lora.cuh"
#include "kernels/cuda/ops_loss.cuh"
#include "kernels/cuda/ops_moe.cuh"

static const char emu_name[] = "cuda-emu";

static void emu_destroy(mxl_backend *be) {
  mxl_cuda_state *st = mxl_cu_state(be);
  mxl_cu_dnn_release(st);
  mxl_cu_blas_release(st);
  mxl_cu_scratch_release(st);
  free(st);
  free(be);
}

/* Every allocation carries its size in a 256-byte header (the alignment
 * cudaMalloc gives), so that the backend counts the bytes it holds as the
 * device backend's memory would (mxl_cuda_emu_memory). */
enum { EMU_HEADER = 256 };

/* Device memory (backends with host_memory 0) lies in one reserved range
 * of address space that host code cannot reach, as on a GPU: it opens only
 * while a kernel runs (the emulator's device_access hook), a cuBLASLt
 * stand-in multiplies, or a memory op (upload, download, copy, zero)
 * copies. Host code that reads or writes it through a device pointer
 * (which on a GPU crashes or reads garbage) stops the test with a message
 * saying so. Blocks are whole pages and never reused (a freed block's pages
 * go back to the system), so a test allocates at most ARENA_BYTES in all.
 * Host-memory backends (host_memory 1) use the heap. */
namespace {

constexpr size_t ARENA_BYTES = (size_t)64 << 30;

struct arena {
  char *base = nullptr;
  size_t used = 0, page = 4096;
  int open = 0; /* nesting depth of device_access(true) */
  struct sigaction previous;
};

arena &device_memory() {
  static arena a;
  return a;
}

void device_access(bool open) {
  arena &a = device_memory();
  if (open ? a.open++ > 0 : --a.open > 0) return;
  if (a.used) mprotect(a.base, a.used, open ? PROT_READ | PROT_WRITE : PROT_NONE);
}

/* Names the mistake, then lets the access fault again under the handler
 * that was there before (the default, or AddressSanitizer's report). */
void on_segv(int, siginfo_t *info, void *) {
  arena &a = device_memory();
  const char *at = static_cast<const char *>(info->si_addr);
  if (at >= a.base && at < a.base + ARENA_BYTES) {
    static const char msg[] =
        "emulated CUDA backend: host code read or wrote device memory (a device pointer used "
        "outside a kernel or a memory op); backtrace:\n";
    if (write(2, msg, sizeof msg - 1) < 0) _exit(2);
    void *frames[48];
    backtrace_symbols_fd(frames, backtrace(frames, 48), 2);
  }
  sigaction(SIGSEGV, &a.previous, nullptr);
}

bool arena_ready() {
  arena &a = device_memory();
  if (a.base) return true;
  void *p = mmap(nullptr, ARENA_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) return false;
  a.base = static_cast<char *>(p);
  a.page = (size_t)sysconf(_SC_PAGESIZE);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &a.previous);
  mxl_emu::settings().device_access = device_access;
  return true;
}

/* A block of at least `bytes`, page-aligned, out of the host's reach. */
char *arena_alloc(size_t bytes) {
  if (!arena_ready()) return nullptr;
  arena &a = device_memory();
  size_t span = (bytes + a.page - 1) / a.page * a.page;
  if (span > ARENA_BYTES - a.used) return nullptr;
  char *block = a.base + a.used;
  a.used += span;
  if (a.open) mprotect(block, span, PROT_READ | PROT_WRITE);
  return block;
}

void arena_free(char *block, size_t bytes) {
  arena &a = device_memory();
  madvise(block, (bytes + a.page - 1) / a.page * a.page, MADV_DONTNEED);
}

}  // namespace

static size_t padded(size_t bytes) { return EMU_HEADER + ((bytes + 255) & ~(size_t)255); }

static void *emu_alloc(mxl_backend *be, size_t bytes) {
  char *p;
  if (be->ops->host_memory) {
    p = static_cast<char *>(aligned_alloc(EMU_HEADER, padded(bytes)));
    if (!p) return NULL;
    memset(p + EMU_HEADER, 0, bytes);
    memcpy(p, &bytes, sizeof bytes);
  } else {
    p = arena_alloc(padded(bytes)); /* fresh pages: zero */
    if (!p) return NULL;
    device_access(true);
    memcpy(p, &bytes, sizeof bytes);
    device_access(false);
  }
  mxl_cuda_state *st = mxl_cu_state(be);
  st->bytes_now += bytes;
  if (st->bytes_now > st->bytes_peak) st->bytes_peak = st->bytes_now;
  return p + EMU_HEADER;
}

static void emu_free(mxl_backend *be, void *ptr) {
  if (!ptr) return;
  char *p = static_cast<char *>(ptr) - EMU_HEADER;
  size_t bytes;
  if (!be->ops->host_memory) device_access(true);
  memcpy(&bytes, p, sizeof bytes);
  if (!be->ops->host_memory) device_access(false);
  mxl_cu_state(be)->bytes_now -= bytes;
  if (be->ops->host_memory)
    free(p);
  else
    arena_free(p, padded(bytes));
}

/* Memory ops copy on the host: device memory is open to them. */
static void emu_upload(mxl_backend *be, void *dst, const void *host_src, size_t bytes) {
  (void)be;
  if (!bytes) return;
  device_access(true);
  memcpy(dst, host_src, bytes);
  device_access(false);
}

static void emu_copy(mxl_backend *be, void *dst, const void *src, size_t bytes) {
  (void)be;
  if (!bytes) return;
  device_access(true);
  memmove(dst, src, bytes);
  device_access(false);
}

static void emu_zero(mxl_backend *be, void *dst, size_t bytes) {
  (void)be;
  if (!bytes) return;
  device_access(true);
  memset(dst, 0, bytes);
  device_access(false);
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

extern "C" mxl_status mxl_cuda_emu_use_cudnn(mxl_backend *be) {
  mxl_cuda_state *st = mxl_cu_state(be);
  if (st->dnn) return MXL_OK;
  mxl_cu_dnn_init(st, st->dnn_off, sizeof st->dnn_off);
  if (!st->dnn)
    return mxl_errorf(MXL_ERR_BACKEND, "CUDA emulator backend: cuDNN stand-in: %s", st->dnn_off);
  return MXL_OK;
}

extern "C" void mxl_cuda_emu_cudnn_plant(mxl_backend *be, int mistake) {
  if (mxl_cu_state(be)->dnn) mxl_cu_state(be)->dnn->plant = mistake;
}

extern "C" void mxl_cuda_emu_cudnn_any_shape(mxl_backend *be, int yes) {
  if (mxl_cu_state(be)->dnn) mxl_cu_state(be)->dnn->any_shape = yes;
}

extern "C" void mxl_cuda_emu_cudnn_counts(mxl_backend *be, long long *executed,
                                          long long *fell_back, const char **refusal) {
  const mxl_dnn_state *ds = mxl_cu_state(be)->dnn;
  *executed = ds ? ds->executed : 0;
  *fell_back = ds ? ds->fell_back : 0;
  *refusal = ds ? ds->refusal : "";
}

extern "C" void mxl_cuda_emu_describe_attention(mxl_backend *be, char *buf, size_t size) {
  const mxl_cuda_state *st = mxl_cu_state(be);
  mxl_cu_dnn_describe(st, buf, size, st->dnn_off[0] ? st->dnn_off : "not enabled on the emulator");
}
