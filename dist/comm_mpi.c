/* The MPI host transport. Every collective is the non-blocking variant,
 * polled against the deadline: MPI has no timeout of its own, and a peer
 * that hangs (stopped, deadlocked, its node cut off) would otherwise block
 * the job forever. A peer that dies is usually reported sooner by the
 * launcher, which then ends the whole job. */
#include "dist/comm_impl.h"

#include "core/status.h"

#if MXL_HAVE_MPI

#include <limits.h>
#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct mpi_state {
  MPI_Comm world; /* our duplicate of MPI_COMM_WORLD, errors returned */
  int broken;     /* a collective timed out: its request is still pending */
  int *counts, *displs; /* [size]: shards of the last block size */
  size_t shard_n;       /* the n they were computed for */
} mpi_state;

/* MPI can be initialised once per process: every communicator of the
 * process shares that, and it is finalised when the process exits. */
static int mpi_started_here;

static void finalize_at_exit(void) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

static mxl_status mpi_fail(int rc, const char *what) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "code %d", rc);
  return mxl_errorf(MXL_ERR_BACKEND, "MPI %s failed: %s", what, text);
}

/* Polls a request until it completes or the deadline passes. Spins first
 * (small collectives finish in microseconds), then sleeps in growing steps
 * so a rank waiting for a slow peer does not take a core from it. */
static mxl_status wait_for(mxl_comm *c, MPI_Request *req, const char *what) {
  mpi_state *s = c->host_impl;
  const double start = mxl_comm_now();
  long nap_ns = 0;
  for (;;) {
    int done = 0;
    int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, what);
    if (done) return MXL_OK;
    double waited = mxl_comm_now() - start;
    if (waited > c->timeout_s) {
      s->broken = 1;
      return mxl_errorf(MXL_ERR_BACKEND,
                        "rank %d: no answer from the other ranks for %.0f s in %s: a rank died "
                        "or hangs (dist_timeout_s sets this limit)",
                        c->rank, waited, what);
    }
    if (waited < 2e-3) {
      sched_yield();
      continue;
    }
    nap_ns = nap_ns < 1000000 ? nap_ns + 20000 : 1000000;
    struct timespec ts = {0, nap_ns};
    nanosleep(&ts, NULL);
  }
}

enum { CHUNK = 1 << 30 }; /* elements per call: MPI counts are int */

static mxl_status mpi_bcast(mxl_comm *c, void *buf, size_t bytes, int root) {
  mpi_state *s = c->host_impl;
  for (size_t off = 0; off < bytes; off += CHUNK) {
    int n = (int)(bytes - off < CHUNK ? bytes - off : CHUNK);
    MPI_Request req;
    int rc = MPI_Ibcast((char *)buf + off, n, MPI_BYTE, root, s->world, &req);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "broadcast");
    MXL_TRY(wait_for(c, &req, "a broadcast"));
  }
  return MXL_OK;
}

static mxl_status mpi_allreduce_f64(mxl_comm *c, double *x, int n, mxl_reduce_op op) {
  mpi_state *s = c->host_impl;
  MPI_Request req;
  int rc = MPI_Iallreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, op == MXL_REDUCE_MAX ? MPI_MAX : MPI_SUM,
                          s->world, &req);
  if (rc != MPI_SUCCESS) return mpi_fail(rc, "all-reduce");
  return wait_for(c, &req, "an all-reduce of scalars");
}

static mxl_status mpi_allreduce_f32(mxl_comm *c, float *x, size_t n) {
  mpi_state *s = c->host_impl;
  for (size_t off = 0; off < n; off += CHUNK) {
    int cnt = (int)(n - off < CHUNK ? n - off : CHUNK);
    MPI_Request req;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, x + off, cnt, MPI_FLOAT, MPI_SUM, s->world, &req);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "all-reduce");
    MXL_TRY(wait_for(c, &req, "the gradient all-reduce"));
  }
  return MXL_OK;
}

/* Counts and displacements of the shards of an n-float block. */
static mxl_status shard_table(mxl_comm *c, size_t n) {
  mpi_state *s = c->host_impl;
  if (s->counts && s->shard_n == n) return MXL_OK;
  if (!s->counts) {
    s->counts = calloc((size_t)c->size, sizeof *s->counts);
    s->displs = calloc((size_t)c->size, sizeof *s->displs);
    if (!s->counts || !s->displs) return mxl_errorf(MXL_ERR_MEMORY, "MPI: out of memory");
  }
  for (int r = 0; r < c->size; r++) {
    size_t lo, hi;
    mxl_comm_shard(c, n, r, &lo, &hi);
    if (hi > INT_MAX)
      return mxl_errorf(MXL_ERR_UNSUPPORTED, "ZeRO-1: a block of %zu floats is over MPI's int "
                        "counts", n);
    s->counts[r] = (int)(hi - lo);
    s->displs[r] = (int)lo;
  }
  s->shard_n = n;
  return MXL_OK;
}

static mxl_status mpi_reduce_scatter_f32(mxl_comm *c, float *x, size_t n) {
  mpi_state *s = c->host_impl;
  MXL_TRY(shard_table(c, n));
  MPI_Request req;
  /* In place, the input is the whole block and the result lands at its
   * start: moved to the shard's own place below. */
  int rc = MPI_Ireduce_scatter(MPI_IN_PLACE, x, s->counts, MPI_FLOAT, MPI_SUM, s->world, &req);
  if (rc != MPI_SUCCESS) return mpi_fail(rc, "reduce-scatter");
  MXL_TRY(wait_for(c, &req, "the gradient reduce-scatter"));
  memmove(x + s->displs[c->rank], x, (size_t)s->counts[c->rank] * sizeof *x);
  return MXL_OK;
}

static mxl_status mpi_allgather_f32(mxl_comm *c, float *x, size_t n) {
  mpi_state *s = c->host_impl;
  MXL_TRY(shard_table(c, n));
  MPI_Request req;
  int rc = MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, s->counts, s->displs,
                           MPI_FLOAT, s->world, &req);
  if (rc != MPI_SUCCESS) return mpi_fail(rc, "all-gather");
  return wait_for(c, &req, "the parameter all-gather");
}

static mxl_status mpi_gather_f32(mxl_comm *c, const float *part, float *all, size_t n, int root) {
  mpi_state *s = c->host_impl;
  MXL_TRY(shard_table(c, n));
  MPI_Request req;
  int rc = MPI_Igatherv(part, s->counts[c->rank], MPI_FLOAT, all, s->counts, s->displs,
                        MPI_FLOAT, root, s->world, &req);
  if (rc != MPI_SUCCESS) return mpi_fail(rc, "gather");
  return wait_for(c, &req, "the optimizer-state gather");
}

static mxl_status mpi_barrier(mxl_comm *c) {
  mpi_state *s = c->host_impl;
  MPI_Request req;
  int rc = MPI_Ibarrier(s->world, &req);
  if (rc != MPI_SUCCESS) return mpi_fail(rc, "barrier");
  return wait_for(c, &req, "a barrier");
}

static void mpi_abort(mxl_comm *c, int code) {
  (void)c;
  MPI_Abort(MPI_COMM_WORLD, code);
}

static void mpi_close(mxl_comm *c) {
  mpi_state *s = c->host_impl;
  /* A communicator with a pending request cannot be freed; the process is
   * about to end anyway. */
  if (!s->broken) MPI_Comm_free(&s->world);
  free(s->counts);
  free(s->displs);
  free(s);
  c->host_impl = NULL;
}

static const mxl_comm_host_ops mpi_ops = {
    mpi_bcast,      mpi_allreduce_f64, mpi_allreduce_f32, mpi_reduce_scatter_f32,
    mpi_allgather_f32, mpi_gather_f32, mpi_barrier,       mpi_abort,
    mpi_close,
};

/* Ranks per node and the number of nodes, from a node-local split. */
static mxl_status node_layout(mxl_comm *c, mpi_state *s) {
  MPI_Comm node;
  int rc = MPI_Comm_split_type(s->world, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node);
  if (rc != MPI_SUCCESS) return mpi_fail(rc, "node split");
  MPI_Comm_rank(node, &c->local_rank);
  MPI_Comm_size(node, &c->local_size);
  MPI_Comm_free(&node);
  double leaders = c->local_rank == 0;
  MXL_TRY(mpi_allreduce_f64(c, &leaders, 1, MXL_REDUCE_SUM));
  c->nodes = (int)leaders;
  return MXL_OK;
}

mxl_status mxl_comm_mpi_open(mxl_comm *c) {
  int ready = 0;
  MPI_Initialized(&ready);
  if (!ready) {
    int provided = 0;
    /* Only the calling thread talks to MPI; OpenMP workers never do. */
    int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "initialisation");
    if (!mpi_started_here) atexit(finalize_at_exit);
    mpi_started_here = 1;
  }
  mpi_state *s = calloc(1, sizeof *s);
  if (!s) return mxl_errorf(MXL_ERR_MEMORY, "MPI: out of memory");
  int rc = MPI_Comm_dup(MPI_COMM_WORLD, &s->world);
  if (rc != MPI_SUCCESS) {
    free(s);
    return mpi_fail(rc, "communicator duplication");
  }
  MPI_Comm_set_errhandler(s->world, MPI_ERRORS_RETURN);
  MPI_Comm_rank(s->world, &c->rank);
  MPI_Comm_size(s->world, &c->size);
  c->host = &mpi_ops;
  c->host_impl = s;
  mxl_status st = node_layout(c, s);
  if (st != MXL_OK) {
    mpi_close(c);
    c->host = NULL;
  }
  return st;
}

void mxl_dist_abort(int code) {
  int ready = 0, finalized = 0;
  MPI_Initialized(&ready);
  MPI_Finalized(&finalized);
  if (ready && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
}

#else

void mxl_dist_abort(int code) { (void)code; }

mxl_status mxl_comm_mpi_open(mxl_comm *c) {
  (void)c;
  return mxl_errorf(MXL_ERR_UNSUPPORTED,
                    "this mxlora was built without MPI (install libopenmpi-dev and rebuild) "
                    "but was started by an MPI launcher; set dist \"none\" for one process");
}

#endif
