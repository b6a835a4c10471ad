/* The communicator's front: picks the transports, answers every call of a
 * single process itself, stages device blocks through the host when only
 * MPI can move them, and times the block reductions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/status.h"
#include "dist/comm_impl.h"

double mxl_comm_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The variables MPI launchers set in every rank's environment: OpenMPI's
 * mpirun, PMIx (srun --mpi=pmix, OpenMPI 5, MPICH's hydra with PMIx), PMI-1
 * and PMI-2 (srun --mpi=pmi2, MPICH, Intel MPI). */
int mxl_comm_launched(void) {
  static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK",
                                     "PMI_SIZE", "MV2_COMM_WORLD_SIZE"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
    if (getenv(vars[i])) return 1;
  return 0;
}

/* Ranks the launcher announced (0 when it did not say). */
static int launcher_size(void) {
  const char *s = getenv("OMPI_COMM_WORLD_SIZE");
  if (!s) s = getenv("PMI_SIZE");
  return s ? atoi(s) : 0;
}

mxl_status mxl_comm_create(const mxl_comm_options *o, mxl_comm **out) {
  *out = NULL;
  const char *kind = o && o->kind ? o->kind : "auto";
  if (strcmp(kind, "auto") && strcmp(kind, "none") && strcmp(kind, "mpi"))
    return mxl_errorf(MXL_ERR_ARGUMENT, "dist '%s': expected auto, none or mpi", kind);
  if (!strcmp(kind, "none") && launcher_size() > 1)
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "dist \"none\" but an MPI launcher started %d ranks: every rank would "
                      "train alone and write the same files; use dist \"auto\"",
                      launcher_size());
  mxl_comm *c = calloc(1, sizeof *c);
  if (!c) return mxl_errorf(MXL_ERR_MEMORY, "communicator: out of memory");
  c->size = c->local_size = c->nodes = 1;
  c->timeout_s = o && o->timeout_s > 0 ? o->timeout_s : 600;
  snprintf(c->desc, sizeof c->desc, "single process");
  int use_mpi = !strcmp(kind, "mpi") || (!strcmp(kind, "auto") && mxl_comm_launched());
  if (use_mpi) {
    mxl_status st = mxl_comm_mpi_open(c);
    if (st != MXL_OK) {
      free(c);
      return st;
    }
    snprintf(c->desc, sizeof c->desc, "MPI, %d rank%s on %d node%s", c->size,
             c->size == 1 ? "" : "s", c->nodes, c->nodes == 1 ? "" : "s");
  }
  *out = c;
  return MXL_OK;
}

void mxl_comm_destroy(mxl_comm *c) {
  if (!c) return;
  if (c->device) c->device->close(c);
  if (c->host) c->host->close(c);
  free(c->staging);
  free(c);
}

mxl_status mxl_comm_attach_backend(mxl_comm *c, mxl_backend *be, int device,
                                   const char *gradients) {
  const char *g = gradients ? gradients : "auto";
  if (strcmp(g, "auto") && strcmp(g, "mpi") && strcmp(g, "nccl"))
    return mxl_errorf(MXL_ERR_ARGUMENT, "gradient transport '%s': expected auto, mpi or nccl", g);
  c->be = be;
  c->device_memory = !strcmp(be->ops->name, "cuda");
  if (!strcmp(g, "nccl") && !c->device_memory)
    return mxl_errorf(MXL_ERR_ARGUMENT, "NCCL moves GPU memory; the backend is '%s'",
                      be->ops->name);
  if (!c->host || !c->device_memory || !strcmp(g, "mpi")) return MXL_OK;
  mxl_status st = mxl_comm_nccl_open(c, device);
  if (st == MXL_ERR_UNSUPPORTED && !strcmp(g, "auto")) return MXL_OK; /* staged over MPI */
  if (st != MXL_OK) return st;
  snprintf(c->desc, sizeof c->desc, "MPI + NCCL, %d ranks on %d node%s", c->size, c->nodes,
           c->nodes == 1 ? "" : "s");
  return MXL_OK;
}

int mxl_comm_rank(const mxl_comm *c) { return c->rank; }
int mxl_comm_size(const mxl_comm *c) { return c->size; }
int mxl_comm_local_rank(const mxl_comm *c) { return c->local_rank; }
int mxl_comm_local_size(const mxl_comm *c) { return c->local_size; }
const char *mxl_comm_describe(const mxl_comm *c) { return c->desc; }

double mxl_comm_block_seconds(const mxl_comm *c, long long *calls) {
  if (calls) *calls = c->block_calls;
  return c->block_seconds;
}

mxl_status mxl_comm_bcast(mxl_comm *c, void *host, size_t bytes, int root) {
  return c->host ? c->host->bcast(c, host, bytes, root) : MXL_OK;
}

mxl_status mxl_comm_allreduce(mxl_comm *c, double *host, int n, mxl_reduce_op op) {
  return c->host ? c->host->allreduce_f64(c, host, n, op) : MXL_OK;
}

mxl_status mxl_comm_barrier(mxl_comm *c) { return c->host ? c->host->barrier(c) : MXL_OK; }

void mxl_comm_abort(mxl_comm *c, int code) {
  if (c && c->host) c->host->abort(c, code);
}

void mxl_comm_shard(const mxl_comm *c, size_t n, int rank, size_t *lo, size_t *hi) {
  /* Shards start on 16-float (64-byte) boundaries, like the LoRA tensors. */
  size_t per = (n + (size_t)c->size - 1) / (size_t)c->size;
  per = (per + 15) / 16 * 16;
  size_t a = per * (size_t)rank, b = a + per;
  *lo = a < n ? a : n;
  *hi = b < n ? b : n;
}

/* ---------------------------------------------------------------- blocks */

typedef enum block_op { BLOCK_ALLREDUCE, BLOCK_REDUCE_SCATTER, BLOCK_ALLGATHER } block_op;

static mxl_status host_block(mxl_comm *c, block_op op, float *x, size_t n) {
  switch (op) {
  case BLOCK_ALLREDUCE: return c->host->allreduce_f32(c, x, n);
  case BLOCK_REDUCE_SCATTER: return c->host->reduce_scatter_f32(c, x, n);
  case BLOCK_ALLGATHER: return c->host->allgather_f32(c, x, n);
  }
  return MXL_OK;
}

static mxl_status device_block(mxl_comm *c, block_op op, float *x, size_t n) {
  switch (op) {
  case BLOCK_ALLREDUCE: return c->device->allreduce_f32(c, x, n);
  case BLOCK_REDUCE_SCATTER: return c->device->reduce_scatter_f32(c, x, n);
  case BLOCK_ALLGATHER: return c->device->allgather_f32(c, x, n);
  }
  return MXL_OK;
}

/* A device block without a device transport goes down to the host, over
 * MPI, and back up. */
static mxl_status staged_block(mxl_comm *c, block_op op, float *x, size_t n) {
  if (c->staging_cap < n) {
    float *p = realloc(c->staging, n * sizeof *p);
    if (!p) return mxl_errorf(MXL_ERR_MEMORY, "communicator: out of memory for %zu floats", n);
    c->staging = p;
    c->staging_cap = n;
  }
  const mxl_ops *ops = c->be->ops;
  ops->download(c->be, c->staging, x, n * sizeof(float));
  MXL_TRY(ops->sync(c->be));
  MXL_TRY(host_block(c, op, c->staging, n));
  ops->upload(c->be, x, c->staging, n * sizeof(float));
  return ops->sync(c->be);
}

static mxl_status run_block(mxl_comm *c, block_op op, float *x, size_t n) {
  if (!c->host) return MXL_OK;
  if (!c->be) return mxl_errorf(MXL_ERR_STATE, "communicator: no backend attached");
  double t0 = mxl_comm_now();
  /* The block must be complete before another engine reads it. */
  MXL_TRY(c->be->ops->sync(c->be));
  mxl_status st = c->device ? device_block(c, op, x, n)
                  : c->device_memory ? staged_block(c, op, x, n)
                                     : host_block(c, op, x, n);
  c->block_seconds += mxl_comm_now() - t0;
  c->block_calls++;
  return st;
}

mxl_status mxl_comm_allreduce_block(mxl_comm *c, float *block, size_t n) {
  return run_block(c, BLOCK_ALLREDUCE, block, n);
}

mxl_status mxl_comm_reduce_scatter_block(mxl_comm *c, float *block, size_t n) {
  return run_block(c, BLOCK_REDUCE_SCATTER, block, n);
}

mxl_status mxl_comm_allgather_block(mxl_comm *c, float *block, size_t n) {
  return run_block(c, BLOCK_ALLGATHER, block, n);
}

mxl_status mxl_comm_gather_shards(mxl_comm *c, const float *part, float *all, size_t n,
                                  int root) {
  if (c->host) return c->host->gather_f32(c, part, all, n, root);
  memcpy(all, part, n * sizeof *all);
  return MXL_OK;
}
