/* The scheduler step's forward pass: every running sequence's tokens of
 * this step in one mxl_forward call, each sequence with its own adapters
 * (a mixed batch). Sequences with the same adapters and scales are placed
 * next to each other, so that their rows share LoRA segments (one product
 * per adapter instead of one per sequence). */
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "infer/sched_internal.h"

mxl_status mxl_batch_forward_init(mxl_scheduler *s) {
  const int B = s->opt.max_batch;
  s->items = calloc((size_t)B, sizeof *s->items);
  s->fwd_seqs = calloc((size_t)B, sizeof *s->fwd_seqs);
  s->logits = malloc((size_t)B * s->engine->w.vocab_rows * sizeof *s->logits);
  if (!s->items || !s->fwd_seqs || !s->logits)
    return mxl_errorf(MXL_ERR_MEMORY, "scheduler: out of memory for a batch of %d", B);
  return MXL_OK;
}

void mxl_batch_forward_release(mxl_scheduler *s) {
  if (s->engine) mxl_forward_state_release(s->engine, &s->fwd);
  free(s->items);
  free(s->fwd_seqs);
  free(s->logits);
  s->items = NULL;
  s->fwd_seqs = NULL;
  s->logits = NULL;
}

/* Orders items by adapter set (views, then scales), then by request id. */
static int by_adapters(const void *pa, const void *pb) {
  const mxl_seq *a = ((const mxl_step_item *)pa)->seq, *b = ((const mxl_step_item *)pb)->seq;
  int n = a->n_adapters < b->n_adapters ? a->n_adapters : b->n_adapters;
  for (int i = 0; i < n; i++) {
    if (a->uses[i].view != b->uses[i].view)
      return (uintptr_t)a->uses[i].view < (uintptr_t)b->uses[i].view ? -1 : 1;
    if (a->uses[i].scale != b->uses[i].scale) return a->uses[i].scale < b->uses[i].scale ? -1 : 1;
  }
  if (a->n_adapters != b->n_adapters) return a->n_adapters < b->n_adapters ? -1 : 1;
  return a->id < b->id ? -1 : a->id > b->id;
}

mxl_status mxl_batch_forward(mxl_scheduler *s, mxl_step_item *items, int n) {
  const size_t V = s->engine->w.vocab_rows;
  qsort(items, (size_t)n, sizeof *items, by_adapters);
  int rows = 0;
  for (int i = 0; i < n; i++) {
    mxl_seq *q = items[i].seq;
    int last = items[i].pos + items[i].n == q->n_tokens; /* its logits give the next token */
    s->fwd_seqs[i] = (mxl_fwd_seq){q->cache, q->tokens + items[i].pos, items[i].n,
                                   q->n_adapters ? q->uses : NULL, q->n_adapters, !last};
    items[i].logits = last ? s->logits + (size_t)rows++ * V : NULL;
  }
  mxl_forward_out out = {0};
  out.logits = s->logits;
  return mxl_forward(s->engine, &s->fwd, s->fwd_seqs, n, NULL, &out);
}
