/* test_cuda_mixed_batch: mixed-adapter batches on the CUDA
 * kernels, on the CPU emulator: sequences with different adapter sets in
 * one forward pass get the logits they get alone, up to the fp32 summation
 * order (1e-4 relative, as on the cpu backend): a decode step's MXFP4
 * experts take the GEMV or the tensor-core GEMM by how many rows the batch
 * routes to them, both with bf16 operands, and the adapters
 * and scales act (tests/mixed_batch.h). The emulator's memory is host
 * memory, so the host adapter views are read in place. */
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
  mixed_batch_check(engine, "cuda-emu", 1e-4);
  mxl_engine_destroy(engine);
  mxl_backend_destroy(emu);
  fixture_close(&f);
  return mxl_test_summary("cuda_mixed_batch");
}
