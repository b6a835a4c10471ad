/* Private to the scheduler (infer/scheduler.c, infer/batch_forward.c,
 * infer/seq_list.c): requests as sequences, their lists, and the step's
 * forward pass. */
#ifndef MXL_INFER_SCHED_INTERNAL_H
#define MXL_INFER_SCHED_INTERNAL_H

#include <pthread.h>

#include "infer/sampler.h"
#include "model/forward.h"
#include "mxlora.h"

/* One request on its way through the scheduler. */
typedef struct mxl_seq {
  uint64_t id;
  mxl_request_fn on_event;
  void *user;
  int32_t *tokens; /* [n_prompt + max_tokens]: the prompt, then what was generated */
  int n_prompt, n_tokens, max_tokens, generated;
  int32_t stops[MXL_REQUEST_MAX_STOP];
  int n_stop;
  mxl_sampling sampling;
  mxl_sampler sampler;
  mxl_adapter_ref *refs[MXL_REQUEST_MAX_ADAPTERS]; /* held for the request's life */
  mxl_lora_use uses[MXL_REQUEST_MAX_ADAPTERS];     /* their views and scales */
  int n_adapters;
  int context;       /* KV positions reserved: prompt + max_tokens */
  uint64_t kv_bytes; /* the reservation */
  mxl_kv_cache *cache;
  mxl_kv_tail *tail; /* the prompt's end, for the prefix cache (NULL: none yet) */
  mxl_kv_tail *head; /* the prompt's first head_want positions' sliding rows, from
                        position 0, grown pass by pass (NULL: none) */
  int head_want;     /* rows the head may grow to, reserved in kv_bytes */
  int head_tried;    /* the head was taken or inherited (or that failed): not again */
  int cached;        /* tokens already in the cache */
  int reused;        /* prompt tokens taken from the prefix cache */
  int admitted;      /* holds its KV reservation */
  int cancel;        /* asked (under the scheduler's mutex) */
  double t_submit, t_admit, t_first;
} mxl_seq;

typedef struct mxl_seq_list {
  mxl_seq **items;
  int n, cap;
} mxl_seq_list;

mxl_status mxl_seq_list_push(mxl_seq_list *l, mxl_seq *q);
mxl_status mxl_seq_list_insert(mxl_seq_list *l, int at, mxl_seq *q);
void mxl_seq_list_remove(mxl_seq_list *l, const mxl_seq *q); /* keeps the order */
mxl_seq *mxl_seq_list_find(const mxl_seq_list *l, uint64_t id);
void mxl_seq_list_free(mxl_seq_list *l);

/* A sequence's share of one step: tokens [pos, pos + n) of q->tokens. */
typedef struct mxl_step_item {
  mxl_seq *seq;
  int pos, n;
  float *logits; /* host [vocab] after the step: its last position's logits */
} mxl_step_item;

enum { MXL_SHUTDOWN_DRAIN = 1, MXL_SHUTDOWN_NOW = 2 };

struct mxl_scheduler {
  const mxl_model *model;
  mxl_scheduler_options opt; /* resolved */
  mxl_backend *be;
  mxl_engine *engine;
  pthread_mutex_t mu;
  pthread_cond_t wake;
  mxl_seq_list queue, running;
  uint64_t next_id;
  uint64_t kv_used, kv_total;
  uint64_t kv_default;  /* the default budget when memory lowered it (kv_total), else 0 */
  uint64_t kv_cached;   /* the prefix cache's bytes (a copy of prefix->bytes) */
  int cached_entries;   /* its entries (a copy of prefix->n) */
  uint64_t prefix_hits, prefix_tokens;
  uint64_t heads_grown; /* requests given a whole-prompt head (shared_auto) */
  int shared_auto;      /* shared_prefix 0: heads grow where the budget has room */
  int shutdown;
  int admit_stalled;
  uint64_t submitted, completed, cancelled, failed, refused;
  uint64_t prompt_tokens, generated_tokens, steps;
  double busy_seconds;
  /* engine thread only */
  struct mxl_prefix_cache *prefix;
  mxl_step_item *items; /* [max_batch] */
  mxl_forward_state fwd;
  float *logits;        /* host [max_batch, vocab_rows] */
  mxl_fwd_seq *fwd_seqs;/* [max_batch] */
};

/* The step's forward pass over `items` (engine thread); fills each item's
 * logits. */
mxl_status mxl_batch_forward_init(mxl_scheduler *s);
mxl_status mxl_batch_forward(mxl_scheduler *s, mxl_step_item *items, int n);
void mxl_batch_forward_release(mxl_scheduler *s);

/* Ends every queued and running request (final event CANCELLED). */
void mxl_scheduler_cancel_all(mxl_scheduler *s);

#endif
