/* Inside the communicator: the transports behind dist/comm.h.
 *
 * A host transport (MPI) moves host memory: broadcasts, scalars, and the
 * gradient block when it lives in host memory (or is staged there). A
 * device transport (NCCL) moves the gradient block in GPU memory. A single
 * process has neither; comm.c then answers every call itself. */
#ifndef MXL_DIST_COMM_IMPL_H
#define MXL_DIST_COMM_IMPL_H

#include "dist/comm.h"

typedef struct mxl_comm_host_ops {
  mxl_status (*bcast)(mxl_comm *c, void *buf, size_t bytes, int root);
  mxl_status (*allreduce_f64)(mxl_comm *c, double *x, int n, mxl_reduce_op op);
  mxl_status (*allreduce_f32)(mxl_comm *c, float *x, size_t n);
  /* Shards as mxl_comm_shard cuts them. */
  mxl_status (*reduce_scatter_f32)(mxl_comm *c, float *x, size_t n);
  mxl_status (*allgather_f32)(mxl_comm *c, float *x, size_t n);
  mxl_status (*gather_f32)(mxl_comm *c, const float *part, float *all, size_t n, int root);
  mxl_status (*barrier)(mxl_comm *c);
  void (*abort)(mxl_comm *c, int code);
  void (*close)(mxl_comm *c);
} mxl_comm_host_ops;

typedef struct mxl_comm_device_ops {
  mxl_status (*allreduce_f32)(mxl_comm *c, float *x, size_t n);
  mxl_status (*reduce_scatter_f32)(mxl_comm *c, float *x, size_t n);
  mxl_status (*allgather_f32)(mxl_comm *c, float *x, size_t n);
  void (*close)(mxl_comm *c);
} mxl_comm_device_ops;

struct mxl_comm {
  int rank, size, local_rank, local_size, nodes;
  double timeout_s;
  const mxl_comm_host_ops *host; /* NULL: a single process */
  void *host_impl;
  const mxl_comm_device_ops *device; /* NULL: blocks go through the host */
  void *device_impl;
  mxl_backend *be;
  int device_memory; /* the block lives in GPU memory */
  float *staging;    /* host copy of a device block for the host transport */
  size_t staging_cap;
  double block_seconds;
  long long block_calls;
  char desc[128];
};

/* comm_mpi.c: joins the MPI job (MPI_Init once per process, finalized at
 * exit), fills rank, size, the node counts and c->host. Without MPI in the
 * build: MXL_ERR_UNSUPPORTED. */
mxl_status mxl_comm_mpi_open(mxl_comm *c);

/* comm_nccl.c: a NCCL communicator over the ranks of `c` (unique id sent
 * with c->host) on CUDA device `device`; fills c->device. Without NCCL in
 * the build: MXL_ERR_UNSUPPORTED. */
mxl_status mxl_comm_nccl_open(mxl_comm *c, int device);

/* Monotonic seconds, for deadlines and timings. */
double mxl_comm_now(void);

#endif
