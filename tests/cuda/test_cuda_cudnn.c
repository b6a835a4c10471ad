/* test_cuda_cudnn: the attention forward through cuDNN's graph API
 * (kernels/cuda/cudnn_attention.cuh) on the emulated CUDA backend, whose
 * cuDNN calls go to the CPU interpreter of tests/cuda/cudnn_standin.cpp
 * (NVIDIA's documented semantics, not our kernels). No GPU needed.
 *
 *   - every attention case of the op driver, forward and backward (causal
 *     GQA with sinks, sliding windows, packed documents, KV-cache slots, a
 *     query that sees nothing, lse NULL) against ref at the bf16 threshold,
 *     each run by cuDNN (not silently by the own kernels) where the policy
 *     says so (nq == nk), the KV-cache cases on the own kernels, then
 *     through cuDNN's graph as well;
 *   - the support check: a head dim the SDPA engines refuse, and a library
 *     that offers no engine at all, fall back to the own kernels with the
 *     right answer, the refusal asked once per shape and remembered;
 *   - planted mistakes in the graphs' arguments (swapped K/V strides, a
 *     wrong GQA group, a stride count, a missing descriptor, the window off
 *     by one, the sink left out, dS unscaled) are each caught: a wrong
 *     answer, or the stand-in refusing the graph with the documented reason;
 *   - the description line names the path; no descriptor leaks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
/* Only the driver's attention cases and its per-case check are used here;
 * its whole-table runners stay unused. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "ops_driver.h"
#pragma GCC diagnostic pop
#include "test.h"
#include "tests/cuda/cuda_emu_backend.h"
#include "tests/cuda/cudnn_standin.h"

/* enum mxl_dnn_plant of kernels/cuda/cudnn_attention.cuh (C++ only) */
enum {
  PLANT_NONE = 0,
  PLANT_KV_STRIDES = 1,
  PLANT_GQA_GROUP = 2,
  PLANT_STRIDE_COUNT = 3,
  PLANT_NO_MATMUL_DESC = 4,
  PLANT_WINDOW = 5,
  PLANT_NO_SINK = 6,
  PLANT_BWD_NO_SCALE = 7,
};

static mxl_backend *ref;

static const ops_backend dnn_entry = {
    .label = "cuda-emu+cudnn",
    .bf16_attention = 1,
    .small_cases = 1,
};

static mxl_backend *cudnn_backend(void) {
  mxl_backend *be = NULL;
  if (mxl_backend_cuda_emu_create(0, &be) != MXL_OK || mxl_cuda_emu_use_cudnn(be) != MXL_OK) {
    fprintf(stderr, "emulated backend with cuDNN: %s\n", mxl_last_error());
    abort();
  }
  return be;
}

static long long executed(mxl_backend *be) {
  long long run, fell;
  const char *why;
  mxl_cuda_emu_cudnn_counts(be, &run, &fell, &why);
  return run;
}

static long long fell_back(mxl_backend *be) {
  long long run, fell;
  const char *why;
  mxl_cuda_emu_cudnn_counts(be, &run, &fell, &why);
  return fell;
}

static const char *refusal(mxl_backend *be) {
  long long run, fell;
  const char *why;
  mxl_cuda_emu_cudnn_counts(be, &run, &fell, &why);
  return why;
}

/* The driver's case index of the first case of `op` with at least `nkv`
 * KV heads (and several query heads per KV head when gqa), a window when
 * `windowed`. */
static int find_case(int op, int nkv, int gqa, int windowed) {
  for (int ci = 0; ci < N_CASES; ci++) {
    const shape *s = &cases[ci].s;
    if (cases[ci].op == op && s->nkv >= nkv && (!gqa || s->nh > s->nkv) &&
        (!windowed || s->window > 0))
      return ci;
  }
  abort();
}

/* One driver case on `be` against ref at the op's bf16 threshold (cuDNN
 * takes bf16 operands both ways); the worst NMSE / threshold ratio (+inf
 * when it fails, `why` saying how). */
static double run_driver_case(mxl_backend *be, int ci, char *why, size_t size) {
  double worst;
  why[0] = '\0';
  return check_case(ci, ref, be, &dnn_entry, threshold(cases[ci].op, &dnn_entry), why, size,
                    &worst);
}

/* Driver case ci on `be`, which must run it through cuDNN (by_cudnn) or
 * leave it to the own kernels; right either way. */
static void check_driver_case(mxl_backend *be, int ci, int by_cudnn, const char *path) {
  char desc[256] = "", why[300];
  describe(&cases[ci], desc, sizeof desc);
  long long before = executed(be), fell = fell_back(be);
  double ratio = run_driver_case(be, ci, why, sizeof why);
  const char *name = op_defs[cases[ci].op].name;
  MXL_CHECK_MSG(isfinite(ratio), "%s%s: %s", name, desc, why);
  if (by_cudnn)
    MXL_CHECK_MSG(executed(be) == before + 1 && fell_back(be) == fell,
                  "%s%s: not run by cuDNN (refusal: %s)", name, desc, refusal(be));
  else
    MXL_CHECK_MSG(executed(be) == before && fell_back(be) == fell + 1,
                  "%s%s: run by cuDNN, expected the own kernels", name, desc);
  printf("ok   %-10s %-13s%s  err/threshold %.3g\n", path, name, desc, ratio);
}

/* Every attention case of the driver, forward and backward: a sequence
 * attending to itself through cuDNN, queries against a KV cache on the own
 * kernels (the backend's policy); then the KV-cache cases through cuDNN's
 * graph too (any_shape), whose masks describe the cache's rings. */
static void test_driver_cases(void) {
  mxl_backend *be = cudnn_backend();
  int ran = 0, kv = 0;
  for (int ci = 0; ci < N_CASES; ci++) {
    if (cases[ci].op != ATTENTION && cases[ci].op != ATTENTION_BWD) continue;
    /* cuDNN's SDPA engines need a head dim that is a multiple of 8: the
     * own kernels take the others (the odd-d case) */
    int self = cases[ci].s.nq == cases[ci].s.nk, by_cudnn = self && cases[ci].s.d % 8 == 0;
    check_driver_case(be, ci, by_cudnn, by_cudnn ? "cudnn" : self ? "own (head dim)" : "own (kv)");
    ran += by_cudnn;
    kv += !self;
  }
  mxl_cuda_emu_cudnn_any_shape(be, 1);
  for (int ci = 0; ci < N_CASES; ci++)
    if ((cases[ci].op == ATTENTION || cases[ci].op == ATTENTION_BWD) &&
        cases[ci].s.nq != cases[ci].s.nk)
      check_driver_case(be, ci, 1, "cudnn (kv)");
  MXL_CHECK(ran >= 16 && kv >= 2);
  mxl_backend_destroy(be);
}

/* Attention on ref and `be` with head dim d: the NMSE of out and lse. */
static double direct_nmse(mxl_backend *be, int d) {
  enum { NQ = 9, NH = 4, NKV = 2 };
  const size_t nqd = (size_t)NQ * NH * d, nkd = (size_t)NQ * NKV * d;
  float *host = malloc((nqd * 3 + nkd * 2 + NQ * NH * 2) * sizeof *host);
  if (!host) abort();
  float *q = host, *k = q + nqd, *v = k + nkd, *out_ref = v + nkd, *out = out_ref + nqd;
  float *lse_ref = out + nqd, *lse = lse_ref + NQ * NH;
  uint16_t sinks[NH] = {0x3f80, 0xbf80, 0x4000, 0x0000}; /* 1, -1, 2, 0 */
  int32_t pos[NQ], seg[NQ];
  test_rng r = {42};
  for (size_t i = 0; i < nqd; i++) q[i] = (float)rng_normal(&r);
  for (size_t i = 0; i < nkd; i++) k[i] = (float)rng_normal(&r), v[i] = (float)rng_normal(&r);
  for (int i = 0; i < NQ; i++) pos[i] = i, seg[i] = 0;
  mxl_attn_mask mask = {pos, seg, pos, seg, 0};
  float scale = 1.0f / sqrtf((float)d);
  ref->ops->attention(ref, out_ref, lse_ref, q, k, v, sinks, &mask, NQ, NQ, NH, NKV, d, scale);
  /* the same on `be`, through its memory */
  size_t bytes[8] = {nqd * 4, nkd * 4, nkd * 4, NH * 2, NQ * 4, NQ * 4, nqd * 4, NQ * NH * 4};
  const void *src[6] = {q, k, v, sinks, pos, seg};
  void *dev[8];
  for (int i = 0; i < 8; i++) {
    dev[i] = be->ops->alloc(be, bytes[i]);
    if (i < 6) be->ops->upload(be, dev[i], src[i], bytes[i]);
  }
  mxl_attn_mask dmask = {dev[4], dev[5], dev[4], dev[5], 0};
  be->ops->attention(be, dev[6], dev[7], dev[0], dev[1], dev[2], dev[3], &dmask, NQ, NQ, NH, NKV,
                     d, scale);
  be->ops->download(be, out, dev[6], bytes[6]);
  be->ops->download(be, lse, dev[7], bytes[7]);
  MXL_CHECK_OK(be->ops->sync(be));
  for (int i = 0; i < 8; i++) be->ops->free(be, dev[i]);
  double err = 0, norm = 0;
  for (size_t i = 0; i < nqd; i++)
    err += (out[i] - out_ref[i]) * (out[i] - out_ref[i]), norm += out_ref[i] * out_ref[i];
  for (int i = 0; i < NQ * NH; i++)
    err += (lse[i] - lse_ref[i]) * (lse[i] - lse_ref[i]), norm += lse_ref[i] * lse_ref[i];
  free(host);
  return err / norm;
}

/* Shapes cuDNN refuses go to the own kernels, asked once per shape. */
static void test_fallback(void) {
  mxl_backend *be = cudnn_backend();
  long queries = mxl_cudnn_standin_heuristic_queries();
  /* head dim 12: not a multiple of 8, which the SDPA engines need (the own
   * fp32 kernel takes it) */
  double e = direct_nmse(be, 12);
  MXL_CHECK_MSG(e < 1e-10, "fallback result nmse %.3g", e);
  MXL_CHECK(fell_back(be) == 1 && executed(be) == 0);
  MXL_CHECK_MSG(strstr(refusal(be), "head dimension 12") != NULL, "refusal: %s", refusal(be));
  MXL_CHECK(mxl_cudnn_standin_heuristic_queries() == queries + 1);
  e = direct_nmse(be, 12); /* remembered: no second query */
  MXL_CHECK(e < 1e-10 && fell_back(be) == 2);
  MXL_CHECK(mxl_cudnn_standin_heuristic_queries() == queries + 1);
  /* head dim 16 on the same backend: cuDNN */
  e = direct_nmse(be, 16);
  MXL_CHECK_MSG(e < 5e-4, "cuDNN result nmse %.3g", e);
  MXL_CHECK(executed(be) == 1);
  char line[512];
  mxl_cuda_emu_describe_attention(be, line, sizeof line);
  MXL_CHECK_MSG(strstr(line, "1 calls by cuDNN, 2 by the own kernels (0 against a KV cache); "
                            "last refusal: ") &&
                    strstr(line, "head dimension 12"),
                "%s", line);
  mxl_backend_destroy(be);

  /* a library that offers no engine for anything */
  mxl_cudnn_standin_offer_engines(0);
  be = cudnn_backend();
  e = direct_nmse(be, 16); /* the own tensor-core kernel: bf16 operands */
  MXL_CHECK_MSG(e < 5e-4, "fallback result nmse %.3g", e);
  MXL_CHECK(fell_back(be) == 1 && executed(be) == 0);
  MXL_CHECK_MSG(strstr(refusal(be), "heuristic: no engine") != NULL, "refusal: %s", refusal(be));
  /* the backward too: a GQA case on the own kernels, right */
  char why[300];
  double ratio = run_driver_case(be, find_case(ATTENTION_BWD, 2, 1, 0), why, sizeof why);
  MXL_CHECK_MSG(isfinite(ratio), "backward fallback: %s", why);
  MXL_CHECK(fell_back(be) == 2 && executed(be) == 0);
  mxl_cudnn_standin_offer_engines(1);
  mxl_backend_destroy(be);
}

/* Each planted mistake is caught: the answer is wrong, or the stand-in
 * refuses the graph for the documented reason (the backend then falls
 * back, so only the refusal shows it). */
static void test_planted_mistakes(void) {
  static const struct {
    int plant;
    const char *name;
    int op, nkv, gqa, windowed;
    const char *refused; /* NULL: the answer must be wrong */
  } plants[] = {
      {PLANT_KV_STRIDES, "K's head and sequence strides swapped", ATTENTION, 2, 0, 0, NULL},
      {PLANT_GQA_GROUP, "every query head reads KV head 0", ATTENTION, 2, 1, 0, NULL},
      {PLANT_WINDOW, "window compared with <=", ATTENTION, 1, 0, 1, NULL},
      {PLANT_NO_SINK, "exp(sink) left out of the denominator", ATTENTION, 1, 0, 0, NULL},
      {PLANT_STRIDE_COUNT, "Q with 3 strides for 4 dims", ATTENTION, 1, 0, 0,
       "4 dimensions but 3 strides"},
      {PLANT_NO_MATMUL_DESC, "matmul without its descriptor", ATTENTION, 1, 0, 0,
       "missing required attribute: matmul descriptor"},
      {PLANT_KV_STRIDES, "backward: K's and V's strides swapped", ATTENTION_BWD, 2, 0, 0, NULL},
      {PLANT_GQA_GROUP, "backward: one KV head for all", ATTENTION_BWD, 2, 1, 0, NULL},
      {PLANT_WINDOW, "backward: window compared with <=", ATTENTION_BWD, 1, 0, 1, NULL},
      {PLANT_BWD_NO_SCALE, "backward: dS not scaled", ATTENTION_BWD, 1, 0, 0, NULL},
  };
  for (size_t i = 0; i < sizeof plants / sizeof plants[0]; i++) {
    mxl_backend *be = cudnn_backend();
    mxl_cuda_emu_cudnn_plant(be, plants[i].plant);
    int ci = find_case(plants[i].op, plants[i].nkv, plants[i].gqa, plants[i].windowed);
    char why[300];
    double ratio = run_driver_case(be, ci, why, sizeof why);
    if (plants[i].refused) {
      MXL_CHECK_MSG(fell_back(be) == 1 && strstr(refusal(be), plants[i].refused) != NULL,
                    "%s: not refused as documented (refusal: '%s')", plants[i].name,
                    refusal(be));
      printf("ok   planted: %s -> refused: %s\n", plants[i].name, refusal(be));
    } else {
      MXL_CHECK_MSG(executed(be) == 1 && !isfinite(ratio), "%s: not caught (ratio %.3g)",
                    plants[i].name, ratio);
      printf("ok   planted: %s -> caught: %s\n", plants[i].name, why);
    }
    mxl_backend_destroy(be);
  }
}

static void test_description(void) {
  char line[256];
  mxl_backend *be = NULL;
  MXL_CHECK_OK(mxl_backend_cuda_emu_create(0, &be));
  mxl_cuda_emu_describe_attention(be, line, sizeof line);
  MXL_CHECK_MSG(strstr(line, "attention: own kernels") != NULL, "%s", line);
  MXL_CHECK_OK(mxl_cuda_emu_use_cudnn(be));
  mxl_cuda_emu_describe_attention(be, line, sizeof line);
  MXL_CHECK_MSG(strstr(line, "attention: cuDNN 9.") != NULL, "%s", line);
  printf("info %s\n", line);
  mxl_backend_destroy(be);
}

int main(void) {
  if (mxl_backend_ref_create(&ref) != MXL_OK) {
    fprintf(stderr, "ref backend: %s\n", mxl_last_error());
    return 1;
  }
  MXL_RUN(test_driver_cases);
  MXL_RUN(test_fallback);
  MXL_RUN(test_planted_mistakes);
  MXL_RUN(test_description);
  MXL_CHECK_MSG(mxl_cudnn_standin_live_descriptors() == 0, "%ld cuDNN descriptors leaked",
                mxl_cudnn_standin_live_descriptors());
  mxl_backend_destroy(ref);
  return mxl_test_summary("cuda_cudnn");
}
