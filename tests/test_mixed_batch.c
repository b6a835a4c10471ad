/* Mixed-adapter batches: sequences with different adapter
 * sets in one forward pass get the logits they get alone — bitwise on the
 * ref backend, within the fast path's tolerance on the CPU backend. The
 * emulated CUDA kernels run the same check in
 * tests/cuda/test_cuda_mixed_batch.c. */
#include "mixed_batch.h"
#include "model_fixture.h"

static void test_ref_bitwise(void) {
  model_fixture f;
  MXL_CHECK_OK(fixture_open(&f, "test", "hf", 5, "", 1));
  if (f.engine) mixed_batch_check(f.engine, "ref", 0);
  fixture_close(&f);
}

/* The CPU backend changes kernels with the number of rows (matrix-vector
 * products for one token, tiles for more), so the sums are ordered
 * differently; bf16 rounding of activations is per element and the same. */
static void test_cpu_tolerance(void) {
  model_fixture f;
  MXL_CHECK_OK(fixture_open(&f, "test", "hf", 5, "", 0));
  if (f.engine) mixed_batch_check(f.engine, "cpu", 1e-4);
  fixture_close(&f);
}

int main(void) {
  MXL_RUN(test_ref_bitwise);
  MXL_RUN(test_cpu_tolerance);
  return mxl_test_summary("mixed_batch");
}
