/* test_cuda_ops: every compute op of the CUDA backend on the CPU emulator
 * (tests/cuda/cuda_emu_backend.h: the kernels of kernels/cuda compiled for
 * the host) against the ref oracle, with the one op test driver
 * (tests/ops_driver.h: its cases, checks and thresholds). No GPU needed.
 *
 * The emulator runs every case three times, with a block's threads run
 * forward, reversed and shuffled between barriers; the three must give the
 * same bits: the kernels use no atomics and fixed reduction trees, so any
 * difference is a race. Thresholds are the fp32 ones, with the bf16 matmul
 * threshold for the products (their operands are bf16, ops.h) and for the
 * attention forward and backward (tensor cores with bf16 operands at the
 * head dims of attention_mma.cuh and attention_mma_bwd.cuh).
 * The heavy cases (gpt-oss's whole vocabulary) are left out: the emulator
 * costs microseconds per thread; test_ops runs them on the device when a GPU
 * is present.
 *
 * On top of the driver: every op of both tables (emulated and device)
 * filled, argument errors reported through sync, and a mutant whose result
 * depends on the thread order (the driver's own mutants run on the emulated
 * table too). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "ops_driver.h"
#include "test.h"
#include "tests/cuda/cuda_emu_backend.h"
#ifdef MXL_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

static mxl_backend *ref, *emu;

/* ------------------------------------------------------------ the backend */

static const char *const order_names[] = {"forward order", "reverse order", "shuffle order"};
enum { N_ORDERS = sizeof order_names / sizeof order_names[0] };

static int current_order; /* of the run in progress, for the order mutant */

static void before_run(mxl_backend *be, const case_spec *cs, int ci, int run) {
  current_order = run;
  mxl_cuda_emu_set_order((mxl_emu_order)run, 1 + (uint64_t)ci);
  mxl_cuda_emu_set_xent_chunk(be, cs->s.chunk);
}

static mxl_status create_emu(mxl_backend **out) { return mxl_backend_cuda_emu_create(0, out); }

static const ops_backend emu_entry = {
    .label = "cuda-emu",
    .create = create_emu,
    .bf16_attention = 1,
    .small_cases = 1,
    .runs = N_ORDERS,
    .run_names = order_names,
    .before_run = before_run,
};

/* ------------------------------------------------------------ tables */

/* Every op of a table is filled: what test_ops would compare on a device. */
static void check_table_filled(const mxl_ops *ops, const char *label) {
  /* After name and host_memory, mxl_ops is function pointers only. */
  size_t first = offsetof(mxl_ops, destroy), count = 0;
  for (size_t at = first; at + sizeof(void (*)(void)) <= sizeof *ops;
       at += sizeof(void (*)(void))) {
    void (*fn)(void);
    memcpy(&fn, (const char *)ops + at, sizeof fn);
    MXL_CHECK_MSG(fn != NULL, "%s: op table entry at byte %zu is NULL", label, at);
    count++;
  }
  MXL_CHECK_MSG(count == (sizeof *ops - first) / sizeof(void (*)(void)), "%s", label);
  printf("info %s: %zu of %zu op table entries filled\n", label, count, count);
}

static void test_tables(void) {
  check_table_filled(emu->ops, "cuda-emu");
#ifdef MXL_HAVE_CUDA
  const mxl_ops *device = mxl_cuda_op_table();
  MXL_CHECK(strcmp(device->name, "cuda") == 0 && !device->host_memory);
  check_table_filled(device, "cuda (device build)");
#else
  printf("info no device build (no nvcc): its op table is not checked\n");
#endif
}

/* ------------------------------------------------------------ errors */

/* Shapes the kernels refuse are reported by the next sync, with the op and
 * the reason; the backend keeps working afterwards. */
static void test_errors(void) {
  enum { NQ = 2, NH = 6, HD = 160 };
  size_t count = (size_t)NQ * NH * HD;
  float *q = calloc(count, sizeof *q), *out = calloc(count, sizeof *out);
  float *dq = calloc(count, sizeof *dq), lse[NQ * NH] = {0};
  uint16_t sinks[NH] = {0};
  int32_t pos[NQ] = {0, 1}, seg[NQ] = {0, 0};
  mxl_attn_mask mask = {pos, seg, pos, seg, 0};
  if (!q || !out || !dq) abort();
  emu->ops->attention(emu, out, lse, q, q, q, sinks, &mask, NQ, NQ, NH, NH, HD, 1.0f);
  MXL_CHECK_FAILS(emu->ops->sync(emu), MXL_ERR_UNSUPPORTED, "attention: head dim 160");
  emu->ops->attention_bwd(emu, dq, dq, dq, q, q, lse, q, q, q, sinks, &mask, NQ, NQ, NH, NH, HD,
                          1.0f);
  MXL_CHECK_FAILS(emu->ops->sync(emu), MXL_ERR_UNSUPPORTED, "attention_bwd: head dim 160");
  emu->ops->attention(emu, out, lse, q, q, q, sinks, &mask, NQ, NQ, NH, 4, 16, 1.0f);
  MXL_CHECK_FAILS(emu->ops->sync(emu), MXL_ERR_ARGUMENT, "6 query heads");
  /* only the first error since the last sync is kept */
  emu->ops->attention(emu, out, lse, q, q, q, sinks, &mask, NQ, NQ, NH, 4, 16, 1.0f);
  emu->ops->attention(emu, out, lse, q, q, q, sinks, &mask, NQ, NQ, NH, NH, HD, 1.0f);
  MXL_CHECK_FAILS(emu->ops->sync(emu), MXL_ERR_ARGUMENT, "6 query heads");
  emu->ops->attention(emu, out, lse, q, q, q, sinks, &mask, NQ, NQ, NH, NH, 16, 1.0f);
  MXL_CHECK_OK(emu->ops->sync(emu));
  free(q);
  free(out);
  free(dq);
}

/* ------------------------------------------------------------ mutants */

/* A race: one ulp off in one thread order only. */
static void racy_rmsnorm(mxl_backend *be, float *y, float *rstd, const float *x,
                         const uint16_t *g, int n, int H, float eps) {
  emu->ops->rmsnorm(be, y, rstd, x, g, n, H, eps);
  if (current_order == MXL_EMU_SHUFFLE) y[0] = nextafterf(y[0], INFINITY);
}

static const ops_mutant emu_mutants[] = {
    MUTANT("depends on the thread order", RMSNORM, 1, rmsnorm, racy_rmsnorm),
};

int main(void) {
  static ops_stats stats;
  if (mxl_backend_ref_create(&ref) != MXL_OK || emu_entry.create(&emu) != MXL_OK) {
    fprintf(stderr, "backend creation: %s\n", mxl_last_error());
    return 1;
  }
  MXL_RUN(test_tables);
  MXL_RUN(test_errors);
  ops_test_backend(ref, emu, &emu_entry, &stats);
  /* The mutants are host code around the ops (they read and write the
   * op's memory): they wrap the emulated backend whose memory is the
   * host's, since the device backend's is out of the host's reach. */
  mxl_backend *emu_host = NULL;
  MXL_CHECK_OK(mxl_backend_cuda_emu_create(1, &emu_host));
  if (emu_host) {
    ops_test_mutants(ref, emu_host, &emu_entry, ops_shared_mutants, N_SHARED_MUTANTS);
    ops_test_mutants(ref, emu_host, &emu_entry, emu_mutants, 1);
  }
  mxl_backend_destroy(emu_host);
  printf("\nworst error per op over %d thread orders (nmse; sum_squares: relative):\n",
         N_ORDERS);
  ops_print_summary(&emu_entry, &stats);
  mxl_backend_destroy(emu);
  mxl_backend_destroy(ref);
  return mxl_test_summary("cuda_ops");
}
