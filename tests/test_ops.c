/* test_ops: every op of every backend of this build against the ref oracle,
 * with the one op test driver (tests/ops_driver.h: cases, checks,
 * thresholds, mutants).
 *
 * The backends: the CPU backend in its default mode (bf16 fast-path
 * matmuls), its exact mode, with every bf16 product on oneDNN, and on each
 * lower instruction set; the CUDA
 * backend on the GPU when one is present (otherwise one "skip cuda" line:
 * tools/gpu_suite.sh fails a GPU run that prints any). The CUDA kernels on
 * the CPU emulator run the same driver in tests/cuda/test_cuda_ops.c.
 * On a GPU the CUDA backend runs twice: as created (attention through
 * cuDNN, bf16 operands both ways) and with its own attention kernels. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "kernels/cpu/cpu.h"
#include "kernels/ops.h"
#include "ops_driver.h"
#include "test.h"
#ifdef MXL_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

static mxl_status create_cuda(mxl_backend **out) { return mxl_backend_cuda_create(0, out); }
/* The CUDA backend with attention on its own kernels (the default takes
 * cuDNN's graph where cuDNN supports the shape: kernels/cuda/cudnn_attention.cuh). */
static mxl_status create_cuda_own(mxl_backend **out) {
  setenv("MXL_CUDNN_ATTENTION", "0", 1);
  mxl_status st = mxl_backend_cuda_create(0, out);
  unsetenv("MXL_CUDNN_ATTENTION");
  return st;
}
static mxl_status create_cpu(mxl_backend **out) { return mxl_backend_cpu_create(0, out); }
static mxl_status create_cpu_exact(mxl_backend **out) {
  mxl_status st = mxl_backend_cpu_create(0, out);
  if (st == MXL_OK) mxl_backend_cpu_set_exact(*out, 1);
  return st;
}
/* The CPU backend reads MXL_CPU_ISA at creation (never above the CPU). */
static mxl_status create_cpu_isa(mxl_backend **out, const char *isa) {
  setenv("MXL_CPU_ISA", isa, 1);
  mxl_status st = mxl_backend_cpu_create(0, out);
  unsetenv("MXL_CPU_ISA");
  return st;
}
static mxl_status create_cpu_avx2(mxl_backend **out) { return create_cpu_isa(out, "avx2"); }
/* Every bf16 product through oneDNN (on every host: AMX or not, the paths
 * must be right); skipped where oneDNN has no bf16 matmul (not built, or
 * a CPU without AVX-512). */
static mxl_status create_cpu_dnnl(mxl_backend **out) {
  mxl_status st = mxl_backend_cpu_create(0, out);
  if (st == MXL_OK && mxl_backend_cpu_set_dnnl(*out, 2) != 2) {
    mxl_backend_destroy(*out);
    *out = NULL;
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "no oneDNN bf16 matmul in this build or on this CPU");
  }
  return st;
}
static mxl_status create_cpu_generic(mxl_backend **out) { return create_cpu_isa(out, "generic"); }
/* On a host whose default is the AMX table: the avx512bf16 table alone,
 * attention's blocks on vdpbf16ps (the default of AVX-512 BF16 hosts
 * without AMX); skipped elsewhere, where "cpu" already is that table or
 * none like it. */
static mxl_status create_cpu_avx512_bf16(mxl_backend **out) {
  mxl_status st = create_cpu_isa(out, "avx512bf16");
  if (st != MXL_OK) return st;
  mxl_backend *dflt = NULL;
  int amx_default = mxl_backend_cpu_create(0, &dflt) == MXL_OK &&
                    strcmp(mxl_backend_cpu_isa(dflt), "avx512bf16+amx") == 0;
  mxl_backend_destroy(dflt);
  if (!amx_default || !mxl_backend_cpu_set_bf16_attention(*out, 1)) {
    mxl_backend_destroy(*out);
    *out = NULL;
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "the default table is not AMX's on this CPU");
  }
  return st;
}
/* The choices this host did not make: attention on the other operands
 * (bf16 where the measurement chose fp32, fp32 where it chose bf16) and
 * decode's MXFP4 GEMV on bf16 weights where the integer kernel is the
 * default, so that every path runs on every host with bf16 dot products;
 * skipped elsewhere. */
static mxl_status create_cpu_other_choices(mxl_backend **out) {
  mxl_status st = mxl_backend_cpu_create(0, out);
  if (st != MXL_OK) return st;
  int want = !mxl_backend_cpu_bf16_attention(*out);
  if (mxl_backend_cpu_set_bf16_attention(*out, want) != want) {
    mxl_backend_destroy(*out);
    *out = NULL;
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "no bf16 dot products on this CPU");
  }
  mxl_backend_cpu_set_int_decode(*out, !mxl_backend_cpu_int_decode(*out));
  return st;
}

/* label, create, bf16 activations, exact (fp32) matmuls. The CUDA backend
 * keeps activations fp32 at op boundaries but its products take bf16
 * operands (ops.h): the fp32 thresholds with the bf16 matmul one, as the
 * cpu fast path and the emulator. Attention with bf16 operands (CUDA; the
 * CPU backend where mxl_backend_cpu_bf16_attention says so, set at run
 * time) is held to the bf16 attention thresholds. */
static const ops_backend backends[] = {
    {"cpu", create_cpu, 0, 0},
    {"cpu-exact", create_cpu_exact, 0, 1},
    {"cpu/avx2", create_cpu_avx2, 0, 0},
    {"cpu/dnnl", create_cpu_dnnl, 0, 0},
    {"cpu/generic", create_cpu_generic, 0, 0},
    {"cpu/other", create_cpu_other_choices, 0, 0},
    {"cpu/avx512", create_cpu_avx512_bf16, 0, 0},
    {"cuda", create_cuda, 0, 0, .bf16_attention = 1},
    {"cuda-own", create_cuda_own, 0, 0, .bf16_attention = 1},
};
enum { N_BACKENDS = sizeof backends / sizeof backends[0] };

/* The mutants are ref with one op broken; ref's thresholds are the fp32
 * ones. */
static const ops_backend ref_entry = {"ref", NULL, 0, 0};

int main(void) {
  mxl_backend *ref = NULL, *bes[N_BACKENDS] = {0};
  static ops_stats stats[N_BACKENDS];
  ops_backend entries[N_BACKENDS];
  if (mxl_backend_ref_create(&ref) != MXL_OK) {
    fprintf(stderr, "ref backend: %s\n", mxl_last_error());
    return 1;
  }
  for (int b = 0; b < N_BACKENDS; b++) {
    if (backends[b].create(&bes[b]) != MXL_OK) {
      printf("skip %-11s all ops: %s\n", backends[b].label, mxl_last_error());
      mxl_test_skips++;
      bes[b] = NULL;
    } else if (strcmp(bes[b]->ops->name, "cpu") == 0) {
      printf("info %-11s isa %s, %d threads, decode's MXFP4 GEMV %s\n", backends[b].label,
             mxl_backend_cpu_isa(bes[b]), bes[b]->n_threads,
             mxl_backend_cpu_int_decode(bes[b]) ? "integer" : "bf16");
    }
  }
  for (int b = 0; b < N_BACKENDS; b++) {
    if (!bes[b]) continue;
    entries[b] = backends[b];
    if (strcmp(bes[b]->ops->name, "cpu") == 0 && mxl_backend_cpu_bf16_attention(bes[b])) {
      entries[b].bf16_attention = 1;
      printf("info %-11s attention with bf16 operands\n", entries[b].label);
    }
    ops_test_backend(ref, bes[b], &entries[b], &stats[b]);
#ifdef MXL_HAVE_CUDA
    if (strcmp(bes[b]->ops->name, "cuda") == 0) { /* which path attention took */
      char path[512];
      mxl_cuda_attention_path(bes[b], path, sizeof path);
      printf("info %-11s %s\n", backends[b].label, path);
    }
#endif
  }
  ops_test_mutants(ref, ref, &ref_entry, ops_shared_mutants, N_SHARED_MUTANTS);
  printf("\nworst error per op (nmse; sum_squares: relative) and its threshold:\n");
  for (int b = 0; b < N_BACKENDS; b++)
    if (bes[b]) ops_print_summary(&entries[b], &stats[b]);
  for (int b = 0; b < N_BACKENDS; b++) mxl_backend_destroy(bes[b]);
  mxl_backend_destroy(ref);
  return mxl_test_summary("ops");
}
