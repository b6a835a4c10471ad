/* The mixed-adapter batch check, shared by tests/test_mixed_batch.c
 * (ref and cpu backends) and tests/cuda/test_cuda_mixed_batch.c (the CUDA
 * kernels on the emulator).
 *
 * Five sequences with different adapter sets —
 *   0: none   1: A at 0.5   2: A at 1 + B at 2   3: A at 0.3 + A at 1.5
 *   4: B at -1
 * — with prompts of different lengths that start at different steps, so a
 * batch mixes prefill chunks with single-token decodes, and rows of one
 * expert come from sequences with different adapters. Every step runs all
 * active sequences in one mxl_forward with per-sequence adapters; each
 * sequence is then run alone, step for step (same chunks, same fed tokens),
 * and its logits must be the batch's: bitwise (tol 0) or within `tol`
 * relative to the largest logit. Sequences 0, 1 and 3 differ from one
 * another, so the adapters and scales do act.
 *
 * Header-only (static functions) like test.h. */
#ifndef MXL_TESTS_MIXED_BATCH_H
#define MXL_TESTS_MIXED_BATCH_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/lora.h"
#include "adapter_fixture.h"
#include "core/status.h"
#include "model/forward.h"
#include "test.h"

enum { MB_SEQS = 5, MB_STEPS = 6, MB_CHUNK = 4, MB_MAX_TOKENS = 32 };

/* A host LoRA set on every target of every layer, with trained-looking
 * numbers, and its view. */
typedef struct mb_adapter {
  mxl_lora *lora;
  mxl_lora_layer *layers;
  mxl_lora_view view;
} mb_adapter;

static mxl_status mb_adapter_make(const mxl_config *c, int rank, uint64_t seed, mb_adapter *a) {
  memset(a, 0, sizeof *a);
  mxl_lora_config lc;
  mxl_lora_config_init(&lc, rank, 2.0f * rank);
  MXL_TRY(mxl_lora_config_add(&lc, MXL_LORA_ATTN_BITS | MXL_LORA_EXPERT_BITS, NULL, 0,
                              c->n_layers));
  MXL_TRY(mxl_lora_create(c, &lc, NULL, &a->lora));
  fixture_fill(a->lora, seed, 0.3f);
  a->layers = calloc((size_t)c->n_layers, sizeof *a->layers);
  if (!a->layers) return MXL_ERR_MEMORY;
  a->view.layers = a->layers;
  mxl_lora_fill_view(a->lora->layout, a->lora->params, 1.0f, &a->view);
  return MXL_OK;
}

static void mb_adapter_free(mb_adapter *a) {
  mxl_lora_destroy(a->lora);
  free(a->layers);
  memset(a, 0, sizeof *a);
}

typedef struct mb_seq {
  int start;         /* first step it runs in */
  int n_prompt;
  mxl_lora_use uses[2];
  int n_uses;
  int32_t tokens[MB_MAX_TOKENS];
} mb_seq;

static void mb_plan(mb_seq *q, const mxl_lora_view *A, const mxl_lora_view *B, int vocab) {
  static const int starts[MB_SEQS] = {0, 0, 1, 2, 0}, prompts[MB_SEQS] = {7, 3, 9, 5, 1};
  memset(q, 0, sizeof *q * MB_SEQS);
  q[1].uses[0] = (mxl_lora_use){A, 0.5f}, q[1].n_uses = 1;
  q[2].uses[0] = (mxl_lora_use){A, 1.0f}, q[2].uses[1] = (mxl_lora_use){B, 2.0f}, q[2].n_uses = 2;
  q[3].uses[0] = (mxl_lora_use){A, 0.3f}, q[3].uses[1] = (mxl_lora_use){A, 1.5f}, q[3].n_uses = 2;
  q[4].uses[0] = (mxl_lora_use){B, -1.0f}, q[4].n_uses = 1;
  uint64_t s = 12345;
  for (int i = 0; i < MB_SEQS; i++) {
    q[i].start = starts[i];
    q[i].n_prompt = prompts[i];
    for (int j = 0; j < MB_MAX_TOKENS; j++) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      q[i].tokens[j] = (int32_t)((s >> 33) % (uint64_t)vocab);
    }
  }
}

/* The tokens sequence q feeds at `step` (prompt chunks, then one token per
 * step); n = 0 when it does not run. */
static int mb_step_tokens(const mb_seq *q, int step, int *pos) {
  int k = step - q->start;
  if (k < 0) return 0;
  int prefill_steps = (q->n_prompt + MB_CHUNK - 1) / MB_CHUNK;
  if (k < prefill_steps) {
    *pos = k * MB_CHUNK;
    return q->n_prompt - *pos < MB_CHUNK ? q->n_prompt - *pos : MB_CHUNK;
  }
  *pos = q->n_prompt + (k - prefill_steps);
  return 1;
}

/* Runs sequences `which` (a bit mask) together for every step; logits
 * [MB_SEQS][MB_STEPS][V] of each sequence's last position per step (NaN
 * where it did not run). */
static mxl_status mb_run(mxl_engine *e, unsigned which, const mb_seq *q, float *logits) {
  const size_t V = e->w.vocab_rows;
  mxl_kv_cache *cache[MB_SEQS] = {0};
  mxl_forward_state st = {0};
  float *rows = malloc(MB_SEQS * V * sizeof *rows);
  mxl_status s = rows ? MXL_OK : MXL_ERR_MEMORY;
  for (int i = 0; i < MB_SEQS && s == MXL_OK; i++)
    if (which & (1u << i)) s = mxl_kv_cache_create(e, MB_MAX_TOKENS, MB_CHUNK, &cache[i]);
  for (size_t i = 0; i < (size_t)MB_SEQS * MB_STEPS * V; i++) logits[i] = NAN;
  for (int step = 0; step < MB_STEPS && s == MXL_OK; step++) {
    mxl_fwd_seq seqs[MB_SEQS];
    int idx[MB_SEQS], n = 0;
    for (int i = 0; i < MB_SEQS; i++) {
      int pos = 0, len = (which & (1u << i)) ? mb_step_tokens(&q[i], step, &pos) : 0;
      if (!len) continue;
      seqs[n] = (mxl_fwd_seq){cache[i], q[i].tokens + pos, len, q[i].uses, q[i].n_uses, 0};
      idx[n++] = i;
    }
    if (!n) continue;
    mxl_forward_out out = {0};
    out.logits = rows;
    s = mxl_forward(e, &st, seqs, n, NULL, &out);
    for (int j = 0; j < n && s == MXL_OK; j++)
      memcpy(logits + ((size_t)idx[j] * MB_STEPS + step) * V, rows + j * V, V * sizeof *rows);
  }
  for (int i = 0; i < MB_SEQS; i++) mxl_kv_cache_destroy(e, cache[i]);
  mxl_forward_state_release(e, &st);
  free(rows);
  return s;
}

/* Largest |a - b| over the steps sequence i ran, relative to max |b|. */
static double mb_diff(const float *a, const float *b, int i, size_t V, int *bitwise) {
  double d = 0, big = 1e-30;
  *bitwise = 1;
  for (size_t k = (size_t)i * MB_STEPS * V; k < (size_t)(i + 1) * MB_STEPS * V; k++) {
    if (isnan(b[k]) && isnan(a[k])) continue;
    if (memcmp(&a[k], &b[k], sizeof a[k]) != 0) *bitwise = 0;
    d = fmax(d, fabs((double)a[k] - b[k]));
    big = fmax(big, fabs((double)b[k]));
  }
  return d / big;
}

/* The check on engine `e` (tol 0: bitwise). Returns the worst relative
 * difference seen. */
static double mixed_batch_check(mxl_engine *e, const char *label, double tol) {
  const mxl_config *c = e->cfg;
  const size_t V = e->w.vocab_rows;
  mb_adapter A, B;
  double worst = 0;
  MXL_CHECK_OK(mb_adapter_make(c, 4, 101, &A));
  MXL_CHECK_OK(mb_adapter_make(c, 8, 202, &B));
  mb_seq q[MB_SEQS];
  mb_plan(q, &A.view, &B.view, (int)V);
  size_t count = (size_t)MB_SEQS * MB_STEPS * V;
  float *batch = malloc(count * sizeof *batch), *alone = malloc(count * sizeof *alone);
  float *one = malloc(count * sizeof *one);
  if (!batch || !alone || !one) abort();
  MXL_CHECK_OK(mb_run(e, (1u << MB_SEQS) - 1, q, batch));
  for (int i = 0; i < MB_SEQS; i++) {
    MXL_CHECK_OK(mb_run(e, 1u << i, q, one));
    memcpy(alone + (size_t)i * MB_STEPS * V, one + (size_t)i * MB_STEPS * V,
           MB_STEPS * V * sizeof *one);
  }
  for (int i = 0; i < MB_SEQS; i++) {
    int bitwise;
    double d = mb_diff(batch, alone, i, V, &bitwise);
    worst = fmax(worst, d);
    if (tol == 0)
      MXL_CHECK_MSG(bitwise, "%s: sequence %d batched differs from alone (relative %.3g)", label,
                    i, d);
    else
      MXL_CHECK_MSG(d <= tol, "%s: sequence %d batched vs alone: relative %.3g > %.3g", label, i,
                    d, tol);
  }
  /* The adapters act: sequence 1 (A at 0.5) and 3 (A at 0.3 + A at 1.5)
   * without their adapters differ clearly; A twice is A once at 1.8 (up to
   * rounding, and the backend's tolerance: the deltas are linear in the
   * scale). */
  mb_seq bare[MB_SEQS];
  memcpy(bare, q, sizeof bare);
  bare[1].n_uses = bare[3].n_uses = 0;
  MXL_CHECK_OK(mb_run(e, (1u << 1) | (1u << 3), bare, one));
  int bw;
  double moved1 = mb_diff(one, alone, 1, V, &bw), moved3 = mb_diff(one, alone, 3, V, &bw);
  bare[3].uses[0] = (mxl_lora_use){&A.view, 1.8f};
  bare[3].n_uses = 1;
  MXL_CHECK_OK(mb_run(e, 1u << 3, bare, one));
  double once = mb_diff(one, alone, 3, V, &bw);
  printf("  %s: batched vs alone, worst relative difference %.3g; the adapters move the "
         "logits by %.3g and %.3g; A at 0.3 + A at 1.5 vs A at 1.8: %.3g\n",
         label, worst, moved1, moved3, once);
  MXL_CHECK_MSG(moved1 > 1e-2 && moved3 > 1e-2, "%s: the adapters do not change the logits",
                label);
  MXL_CHECK_MSG(once < fmax(1e-3, tol), "%s: the same adapter twice is not the sum of its scales",
                label);
  free(batch);
  free(alone);
  free(one);
  mb_adapter_free(&A);
  mb_adapter_free(&B);
  return worst;
}

#endif
