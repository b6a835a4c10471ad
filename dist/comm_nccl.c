/* The NCCL device transport: the LoRA gradient block is reduced between
 * GPUs without leaving them. The communicator is created in NCCL's
 * non-blocking mode so that every wait can be bounded like MPI's: a peer
 * that died or hangs makes the wait fail, and the communicator is aborted
 * (which frees the GPU work stuck on it). Collectives run on a stream of
 * their own after the backend's stream has been synchronised (comm.c). */
#include "dist/comm_impl.h"

#include "core/status.h"

#if MXL_HAVE_NCCL

#include <cuda_runtime_api.h>
#include <nccl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct nccl_state {
  ncclComm_t comm; /* NULL once aborted */
  cudaStream_t stream;
  int device;
} nccl_state;

static mxl_status nccl_fail(ncclResult_t r, const char *what) {
  return mxl_errorf(MXL_ERR_BACKEND, "NCCL %s failed: %s", what, ncclGetErrorString(r));
}

static void nap(long *ns) {
  *ns = *ns < 1000000 ? *ns + 20000 : 1000000;
  struct timespec ts = {0, *ns};
  nanosleep(&ts, NULL);
}

static mxl_status give_up(mxl_comm *c, const char *what, double waited) {
  nccl_state *s = c->device_impl;
  ncclCommAbort(s->comm);
  s->comm = NULL;
  return mxl_errorf(MXL_ERR_BACKEND,
                    "rank %d: no answer from the other GPUs for %.0f s in %s: a rank died or "
                    "hangs (dist_timeout_s sets this limit)",
                    c->rank, waited, what);
}

/* A non-blocking NCCL call may return ncclInProgress: poll the
 * communicator until the call has been issued (or failed). */
static mxl_status settle(mxl_comm *c, ncclResult_t r, const char *what) {
  nccl_state *s = c->device_impl;
  const double start = mxl_comm_now();
  long ns = 0;
  while (r == ncclInProgress) {
    double waited = mxl_comm_now() - start;
    if (waited > c->timeout_s) return give_up(c, what, waited);
    nap(&ns);
    ncclCommGetAsyncError(s->comm, &r);
  }
  return r == ncclSuccess ? MXL_OK : nccl_fail(r, what);
}

/* Waits until the collective on our stream has finished. */
static mxl_status finish(mxl_comm *c, const char *what) {
  nccl_state *s = c->device_impl;
  const double start = mxl_comm_now();
  long ns = 0;
  for (;;) {
    cudaError_t e = cudaStreamQuery(s->stream);
    if (e == cudaSuccess) return MXL_OK;
    if (e != cudaErrorNotReady)
      return mxl_errorf(MXL_ERR_BACKEND, "CUDA error during %s: %s", what, cudaGetErrorString(e));
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(s->comm, &async);
    if (async != ncclSuccess && async != ncclInProgress) {
      ncclCommAbort(s->comm);
      s->comm = NULL;
      return nccl_fail(async, what);
    }
    double waited = mxl_comm_now() - start;
    if (waited > c->timeout_s) return give_up(c, what, waited);
    if (waited < 2e-3)
      sched_yield();
    else
      nap(&ns);
  }
}

static mxl_status use_device(const nccl_state *s) {
  cudaError_t e = cudaSetDevice(s->device);
  return e == cudaSuccess ? MXL_OK
                          : mxl_errorf(MXL_ERR_BACKEND, "CUDA device %d: %s", s->device,
                                       cudaGetErrorString(e));
}

static mxl_status nccl_allreduce(mxl_comm *c, float *x, size_t n) {
  nccl_state *s = c->device_impl;
  MXL_TRY(use_device(s));
  MXL_TRY(settle(c, ncclAllReduce(x, x, n, ncclFloat, ncclSum, s->comm, s->stream),
                 "gradient all-reduce"));
  return finish(c, "the gradient all-reduce");
}

/* Shards differ in size (the last one is shorter), so reduce-scatter and
 * all-gather are one grouped reduce / broadcast per owner. */
static mxl_status nccl_per_owner(mxl_comm *c, float *x, size_t n, int gather) {
  nccl_state *s = c->device_impl;
  MXL_TRY(use_device(s));
  const char *what = gather ? "parameter all-gather" : "gradient reduce-scatter";
  MXL_TRY(settle(c, ncclGroupStart(), what));
  for (int r = 0; r < c->size; r++) {
    size_t lo, hi;
    mxl_comm_shard(c, n, r, &lo, &hi);
    if (hi == lo) continue;
    ncclResult_t res =
        gather ? ncclBroadcast(x + lo, x + lo, hi - lo, ncclFloat, r, s->comm, s->stream)
               : ncclReduce(x + lo, x + lo, hi - lo, ncclFloat, ncclSum, r, s->comm, s->stream);
    if (res != ncclSuccess && res != ncclInProgress) return nccl_fail(res, what);
  }
  MXL_TRY(settle(c, ncclGroupEnd(), what));
  return finish(c, what);
}

static mxl_status nccl_reduce_scatter(mxl_comm *c, float *x, size_t n) {
  return nccl_per_owner(c, x, n, 0);
}

static mxl_status nccl_allgather(mxl_comm *c, float *x, size_t n) {
  return nccl_per_owner(c, x, n, 1);
}

static void nccl_close(mxl_comm *c) {
  nccl_state *s = c->device_impl;
  if (!s) return;
  if (s->comm) ncclCommDestroy(s->comm);
  if (s->stream) cudaStreamDestroy(s->stream);
  free(s);
  c->device_impl = NULL;
  c->device = NULL;
}

static const mxl_comm_device_ops nccl_ops = {nccl_allreduce, nccl_reduce_scatter, nccl_allgather,
                                             nccl_close};

mxl_status mxl_comm_nccl_open(mxl_comm *c, int device) {
  nccl_state *s = calloc(1, sizeof *s);
  if (!s) return mxl_errorf(MXL_ERR_MEMORY, "NCCL: out of memory");
  s->device = device;
  c->device_impl = s;
  c->device = &nccl_ops;
  ncclUniqueId id;
  memset(&id, 0, sizeof id);
  mxl_status st = use_device(s);
  if (st == MXL_OK && c->rank == 0) {
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) st = nccl_fail(r, "unique id");
  }
  /* Every rank takes part in the broadcast even after a failure above, so
   * that no rank waits for one that gave up. */
  mxl_status sent = c->host->bcast(c, &id, sizeof id, 0);
  if (st == MXL_OK) st = sent;
  if (st == MXL_OK) {
    cudaError_t e = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess)
      st = mxl_errorf(MXL_ERR_BACKEND, "CUDA stream: %s", cudaGetErrorString(e));
  }
  if (st == MXL_OK) {
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&s->comm, c->size, id, c->rank, &config);
    if (r != ncclSuccess && r != ncclInProgress) {
      s->comm = NULL;
      st = nccl_fail(r, "initialisation");
    } else {
      st = settle(c, r, "initialisation");
    }
  }
  if (st != MXL_OK) nccl_close(c);
  return st;
}

#else

mxl_status mxl_comm_nccl_open(mxl_comm *c, int device) {
  (void)c;
  (void)device;
  return mxl_errorf(MXL_ERR_UNSUPPORTED, "this mxlora was built without NCCL (it needs the "
                    "CUDA backend and NCCL at build time)");
}

#endif
