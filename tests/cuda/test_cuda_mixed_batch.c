/* test_cuda_mixed_batch: mixed-adapter batches on the CUDA kernels, on the
 * CPU emulator: sequences with different adapter sets in one forward pass
 * get the logits they get alone, and the adapters and scales act
 * (tests/mixed_batch.h). A decode step's MXFP4 experts take the GEMV or the
 * tensor-core GEMM by how many rows the batch routes to them, both on bf16
 * operands but summing in different orders; a last-bit difference there can
 * flip the bf16 rounding of a later product's input, which moves the
 * logits by up to about 1e-3 of the largest (6.6e-4 measured). The
 * tolerance is 5e-3: a sequence given another's adapters moves them by
 * about 1. The emulator's memory is host memory, so the host adapter views
 * are read in place. */
#include "mixed_batch.h"
#include "model_fixture.h"
#include "tests/cuda/cuda_emu_backend.h"

int main(void) {
  model_fixture f;
  mxl_backend *emu = NULL;
  mxl_engine *engine = NULL;
  mxl_status st = fixture_open(&f, "test", "hf", 5, "", 1);
  if (st == MXL_OK) st = mxl_backend_cuda_emu_create(0, &emu);
  if (st == MXL_OK) st = mxl_engine_create(f.model, emu, &engine);
  if (st != MXL_OK) {
    fprintf(stderr, "setup: %s\n", mxl_last_error());
    return 1;
  }
  mixed_batch_check(engine, "cuda-emu", 5e-3);
  mxl_engine_destroy(engine);
  mxl_backend_destroy(emu);
  fixture_close(&f);
  return mxl_test_summary("cuda_mixed_batch");
}
