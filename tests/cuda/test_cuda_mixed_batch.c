/* test_cuda_mixed_batch: mixed-adapter batches (issue 8 §2) on the CUDA
 * kernels, on the CPU emulator: sequences with different adapter sets in
 * one forward pass get the logits they get alone, and the adapters and
 * scales act (tests/mixed_batch.h). The LoRA kernels compute each output
 * element with a fixed reduction order whatever the batch, but the MXFP4
 * expert products do not: an expert with at most 8 routed rows takes the
 * fp32 GEMV, one with more the tensor-core GEMM on bf16-rounded
 * activations (kernels/cuda/mxfp4_gemm.cuh), so a batch that puts more
 * rows on an expert rounds differently — measured up to 3.4e-3 of the
 * largest logit through the three layers. The tolerance is that of bf16
 * activations (2^-8 relative per product, 1e-2 at the logits). The
 * emulator's memory is host memory, so the host adapter views are read in
 * place. */
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
  mixed_batch_check(engine, "cuda-emu", 1e-2);
  mxl_engine_destroy(engine);
  mxl_backend_destroy(emu);
  fixture_close(&f);
  return mxl_test_summary("cuda_mixed_batch");
}
