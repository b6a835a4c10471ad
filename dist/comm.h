/* The communicator of a data-parallel training run: one process per rank,
 * each with a full copy of the frozen base and of the LoRA parameters.
 *
 *   single process  no launcher (or dist "none"): every call is a no-op
 *   MPI             launched by mpirun / srun (OpenMPI, MPICH): broadcasts,
 *                   scalar and gradient all-reduces between CPU processes
 *                   and nodes
 *   MPI + NCCL      the CUDA backend: the gradient block is all-reduced by
 *                   NCCL between GPUs, the NCCL unique id travels over MPI;
 *                   scalars and broadcasts stay on MPI
 *
 * Every collective waits at most `timeout_s`: a rank that died or hangs
 * makes the others fail with MXL_ERR_BACKEND naming the collective, instead
 * of blocking forever. After any failure the run cannot continue (the
 * collective may be half done on other ranks): end it with mxl_comm_abort.
 *
 * Reductions are deterministic for a given world size: the same inputs
 * give the same bits on every rank and in every run (MPI and NCCL pick
 * their algorithm from the size and the count alone). */
#ifndef MXL_DIST_COMM_H
#define MXL_DIST_COMM_H

#include <stddef.h>

#include "kernels/ops.h"
#include "mxlora.h"

typedef struct mxl_comm mxl_comm;

typedef enum mxl_reduce_op { MXL_REDUCE_SUM, MXL_REDUCE_MAX } mxl_reduce_op;

typedef struct mxl_comm_options {
  /* "auto": MPI when launched by an MPI launcher (mpirun, srun), else a
   * single process; "none": a single process (refused under a launcher of
   * several ranks); "mpi": MPI even without a launcher (a singleton).
   * NULL means "auto". */
  const char *kind;
  double timeout_s; /* the longest wait in one collective; <= 0: 600 s */
} mxl_comm_options;

mxl_status mxl_comm_create(const mxl_comm_options *o, mxl_comm **out);
void mxl_comm_destroy(mxl_comm *c);

/* Tells the communicator where the gradient block lives. `gradients`:
 * "auto" (NCCL on the CUDA backend when built with it, else MPI), "mpi"
 * (device memory is staged through the host) or "nccl" (fails unless
 * possible). `device` is the CUDA device of `be` (ignored on the CPU). */
mxl_status mxl_comm_attach_backend(mxl_comm *c, mxl_backend *be, int device,
                                   const char *gradients);

int mxl_comm_rank(const mxl_comm *c);
int mxl_comm_size(const mxl_comm *c);
/* Rank and rank count on this node (for choosing a GPU). */
int mxl_comm_local_rank(const mxl_comm *c);
int mxl_comm_local_size(const mxl_comm *c);
/* "single process", "MPI, 4 ranks on 2 nodes", "MPI + NCCL, 8 ranks ...". */
const char *mxl_comm_describe(const mxl_comm *c);

/* `bytes` of host memory from `root` to every rank. */
mxl_status mxl_comm_bcast(mxl_comm *c, void *host, size_t bytes, int root);

/* Host scalars, reduced in place on every rank. */
mxl_status mxl_comm_allreduce(mxl_comm *c, double *host, int n, mxl_reduce_op op);

/* Sums a block of n floats in backend memory (the LoRA gradients) over
 * every rank, in place. */
mxl_status mxl_comm_allreduce_block(mxl_comm *c, float *block, size_t n);

/* ZeRO-1 sharding of a block of n floats: rank r owns [lo, hi). */
void mxl_comm_shard(const mxl_comm *c, size_t n, int rank, size_t *lo, size_t *hi);
/* Sums the block over every rank into each owner's own shard (other
 * shards of `block` are left undefined). */
mxl_status mxl_comm_reduce_scatter_block(mxl_comm *c, float *block, size_t n);
/* Every rank's shard of `block` to every rank. */
mxl_status mxl_comm_allgather_block(mxl_comm *c, float *block, size_t n);
/* Host memory: each rank's shard of a block of n floats (`part`, hi - lo
 * floats) into `all` (n floats) on `root`; `all` is ignored elsewhere. */
mxl_status mxl_comm_gather_shards(mxl_comm *c, const float *part, float *all, size_t n,
                                  int root);

mxl_status mxl_comm_barrier(mxl_comm *c);

/* Seconds spent in block reductions and gathers so far, and their count. */
double mxl_comm_block_seconds(const mxl_comm *c, long long *calls);

/* Ends every rank of the job with exit status `code` (MPI_Abort); in a
 * single process it returns and the caller exits normally. The only
 * function of the library that may end the process: a rank that cannot go
 * on must not leave the others waiting. */
void mxl_comm_abort(mxl_comm *c, int code);

/* 1 when this process was started by an MPI launcher. */
int mxl_comm_launched(void);

#endif
