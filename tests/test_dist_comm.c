/* dist/comm: a single process answers every collective itself; shards
 * cover a block exactly, on 64-byte boundaries; bad kinds and "none" under
 * a launcher of several ranks are refused. Then the test starts itself as
 * 3 MPI ranks (mpirun --oversubscribe) and checks every collective against
 * values worked out by hand: broadcast, scalar sum and max, the block
 * all-reduce, reduce-scatter, all-gather and gather of a block that does
 * not divide evenly, and the barrier. */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dist/comm_impl.h"
#include "mpi_launcher.h"
#include "test.h"

static void test_single_process(void) {
  mxl_comm *c = NULL;
  MXL_CHECK_OK(mxl_comm_create(NULL, &c));
  if (!c) return;
  MXL_CHECK(mxl_comm_rank(c) == 0 && mxl_comm_size(c) == 1 && mxl_comm_local_size(c) == 1);
  MXL_CHECK(!strcmp(mxl_comm_describe(c), "single process"));
  double x[2] = {1.5, -2};
  MXL_CHECK_OK(mxl_comm_allreduce(c, x, 2, MXL_REDUCE_SUM));
  MXL_CHECK(x[0] == 1.5 && x[1] == -2);
  char text[8] = "abc";
  MXL_CHECK_OK(mxl_comm_bcast(c, text, sizeof text, 0));
  MXL_CHECK(!strcmp(text, "abc"));
  float part[3] = {1, 2, 3}, all[3] = {0};
  MXL_CHECK_OK(mxl_comm_gather_shards(c, part, all, 3, 0));
  MXL_CHECK(all[0] == 1 && all[2] == 3);
  MXL_CHECK_OK(mxl_comm_barrier(c));
  mxl_comm_abort(c, 3); /* returns: nothing to end but this process */
  mxl_comm_destroy(c);
}

static void test_shards(void) {
  mxl_comm c;
  memset(&c, 0, sizeof c);
  for (c.size = 1; c.size <= 5; c.size++)
    for (size_t n = 0; n < 200; n += 7) {
      size_t next = 0;
      int ok = 1;
      for (int r = 0; r < c.size; r++) {
        size_t lo, hi;
        mxl_comm_shard(&c, n, r, &lo, &hi);
        ok &= lo == next && hi >= lo && hi <= n && (lo % 16 == 0 || lo == n);
        next = hi;
      }
      MXL_CHECK_MSG(ok && next == n, "%d ranks, %zu floats: shards do not tile the block",
                    c.size, n);
    }
}

static void test_refusals(void) {
  mxl_comm *c = NULL;
  mxl_comm_options o = {"tcp", 0};
  MXL_CHECK_FAILS(mxl_comm_create(&o, &c), MXL_ERR_ARGUMENT, "expected auto, none or mpi");
  setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  o.kind = "none";
  MXL_CHECK_FAILS(mxl_comm_create(&o, &c), MXL_ERR_ARGUMENT, "every rank would train alone");
  unsetenv("OMPI_COMM_WORLD_SIZE");
  MXL_CHECK(c == NULL);
}

/* ------------------------------------------------------------------ ranks */

enum { N = 1000 }; /* not a multiple of 3 or of 16 */

static void test_collectives(void) {
  mxl_comm *c = NULL;
  MXL_CHECK_OK(mxl_comm_create(NULL, &c));
  if (!c) return;
  const int rank = mxl_comm_rank(c), size = mxl_comm_size(c);
  MXL_CHECK_MSG(size == 3, "size %d", size);
  MXL_CHECK(strstr(mxl_comm_describe(c), "MPI, 3 ranks") != NULL);
  char text[16] = "";
  if (rank == 1) snprintf(text, sizeof text, "from rank 1");
  MXL_CHECK_OK(mxl_comm_bcast(c, text, sizeof text, 1));
  MXL_CHECK(!strcmp(text, "from rank 1"));
  double x[2] = {rank + 1.0, 10.0 * rank};
  MXL_CHECK_OK(mxl_comm_allreduce(c, x, 2, MXL_REDUCE_SUM));
  MXL_CHECK(x[0] == 6 && x[1] == 30);
  double y = rank == 2 ? 7 : -1;
  MXL_CHECK_OK(mxl_comm_allreduce(c, &y, 1, MXL_REDUCE_MAX));
  MXL_CHECK(y == 7);

  mxl_backend *be = NULL;
  MXL_CHECK_OK(mxl_backend_cpu_create(1, &be));
  MXL_CHECK_OK(mxl_comm_attach_backend(c, be, 0, "auto"));
  float *block = be->ops->alloc(be, N * sizeof(float));
  for (int i = 0; i < N; i++) block[i] = (float)((rank + 1) * i);
  MXL_CHECK_OK(mxl_comm_allreduce_block(c, block, N));
  int sums = 1;
  for (int i = 0; i < N; i++) sums &= block[i] == 6.0f * i;
  MXL_CHECK_MSG(sums, "all-reduce: wrong sums on rank %d", rank);

  size_t lo, hi;
  mxl_comm_shard(c, N, rank, &lo, &hi);
  for (int i = 0; i < N; i++) block[i] = (float)((rank + 1) * i);
  MXL_CHECK_OK(mxl_comm_reduce_scatter_block(c, block, N));
  int own = 1;
  for (size_t i = lo; i < hi; i++) own &= block[i] == 6.0f * (float)i;
  MXL_CHECK_MSG(own, "reduce-scatter: wrong shard [%zu, %zu) on rank %d", lo, hi, rank);
  for (size_t i = lo; i < hi; i++) block[i] = (float)(1000 * rank) + (float)i;
  MXL_CHECK_OK(mxl_comm_allgather_block(c, block, N));
  int gathered = 1;
  for (int r = 0; r < size; r++) {
    size_t a, b;
    mxl_comm_shard(c, N, r, &a, &b);
    for (size_t i = a; i < b; i++) gathered &= block[i] == (float)(1000 * r) + (float)i;
  }
  MXL_CHECK_MSG(gathered, "all-gather: wrong block on rank %d", rank);

  float *part = malloc((hi - lo + 1) * sizeof(float)), *all = calloc(N, sizeof(float));
  for (size_t i = lo; i < hi; i++) part[i - lo] = -(float)i;
  MXL_CHECK_OK(mxl_comm_gather_shards(c, part, all, N, 2));
  if (rank == 2) {
    int ok = 1;
    for (int i = 0; i < N; i++) ok &= all[i] == -(float)i;
    MXL_CHECK_MSG(ok, "gather: wrong block on the root");
  }
  long long calls = 0;
  MXL_CHECK(mxl_comm_block_seconds(c, &calls) >= 0 && calls == 3);
  MXL_CHECK_OK(mxl_comm_barrier(c));
  free(part);
  free(all);
  be->ops->free(be, block);
  mxl_backend_destroy(be);
  mxl_comm_destroy(c);
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--ranks")) {
    MXL_RUN(test_collectives);
    return mxl_test_summary("dist_comm (a rank)");
  }
  MXL_RUN(test_single_process);
  MXL_RUN(test_shards);
  MXL_RUN(test_refusals);
#if defined(MXL_HAVE_MPI) && defined(MXL_MPIEXEC)
  if (access(MXL_MPIEXEC, X_OK) == 0) {
    char launcher[512], cmd[1024];
    mpi_launcher(launcher, sizeof launcher);
    snprintf(cmd, sizeof cmd, "%s -np 3 /proc/%ld/exe --ranks", launcher, (long)getpid());
    int status = system(cmd);
    MXL_CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "3 ranks: status %d", status);
  } else {
    fprintf(stderr, "SKIP 3 ranks: %s not found\n", MXL_MPIEXEC);
  }
#endif
  return mxl_test_summary("dist_comm");
}
