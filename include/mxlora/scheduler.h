/* Public API: the continuous-batching scheduler — many generation requests
 * decoded together on one base model, each with its own adapters and
 * scales (mxlora serve, chat).
 *
 * One engine thread owns the backend and drives the scheduler
 * (mxl_scheduler_run, or mxl_scheduler_step in a loop); any other thread
 * submits and cancels requests and reads statistics.
 *
 * Each step runs one forward pass over the batch: one new token for every
 * decoding sequence plus a chunk of prompt for sequences still in prefill
 * (at most prefill_chunk tokens each, at most max_step_tokens in all), so a
 * long prompt never stalls the running decodes. Requests join and leave
 * between steps. Sequences with different adapter sets share the pass: the
 * LoRA products gather rows per adapter (attention and routed expert rows
 * alike), and a sequence's logits do not depend on what else is in the
 * batch: bit for bit on the ref backend (so greedy output is the same alone
 * or batched); on cpu and cuda within their matmul tolerance (their
 * kernels pick paths by row count, e.g. bf16 tensor-core tiles for an
 * expert with many rows), so a greedy choice between two logits closer
 * than that may differ.
 *
 * KV memory. Every admitted request holds KV cache for its whole budget,
 * min(prompt + max_tokens, max_context) positions (sliding-window layers:
 * their window), reserved at admission from `kv_memory` bytes. A request
 * that does not fit now waits in the queue (first in, first out); one that
 * could never fit, even alone, is refused at submit. The pool never
 * allocates beyond its budget, and an allocation the backend refuses keeps
 * the request waiting while others run (and ends it with MXL_FINISH_ERROR,
 * MXL_ERR_MEMORY, when nothing runs), never failing the process. Cancelling or
 * finishing frees the reservation at once.
 *
 * Prefix cache. A finished (or cancelled) request's KV cache is kept in the
 * budget's unused part, so that a later request whose prompt begins with
 * the same tokens, with the same adapter versions at the same scales,
 * prefills only the rest: a chat's next turn (its prompt repeats the
 * conversation so far), a shared system prompt, a regenerated reply. Kept
 * caches are freed, least recently used first, as soon as a request needs
 * the memory, so they never delay one. A sliding-window layer keeps only
 * its last window + prefill_chunk - 1 positions, so a prompt can continue
 * from any point less than prefill_chunk positions before the kept cache's
 * end, and from the kept request's last prompt token (the window before it
 * is kept aside: 2 × window × kv heads × head dim floats per sliding
 * layer, counted in each request's reservation; that token runs again, so
 * the same prompt repeated reuses all but its last token), and from any
 * point of its first shared_prefix prompt positions (their sliding rows
 * from position 0 are kept too, pass by pass, also reserved: 2 × kv heads ×
 * head dim floats per position and sliding layer, 48 KB on gpt-oss-20b;
 * by default a request's whole prompt where the budget has spare room, see
 * shared_prefix): conversations that share only a system or developer
 * prompt skip that much of it. Reuse gives the same result as a fresh prefill: bit
 * for bit on the ref backend, within the matmul tolerance on
 * cpu and cuda (the reused keys were computed in other chunks).
 *
 * Events. Each request gets its events through its callback, on the engine
 * thread, in order: one per generated token (stop tokens included), then
 * exactly one final event (finish != MXL_FINISH_NONE) — also for requests
 * cancelled or failed, and for those still queued when the scheduler is
 * destroyed. Callbacks must return quickly (copy the token into a queue);
 * they may call mxl_scheduler_cancel and mxl_scheduler_submit. */
#ifndef MXLORA_SCHEDULER_H
#define MXLORA_SCHEDULER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mxl_model mxl_model;
typedef struct mxl_backend mxl_backend;
typedef struct mxl_adapter_ref mxl_adapter_ref;
typedef struct mxl_scheduler mxl_scheduler;

typedef struct mxl_scheduler_options {
  const char *backend; /* "cpu" (default), "cuda", "cuda:N", "auto" or "ref" */
  int threads;         /* CPU threads; 0: all cores */
  int max_context;     /* positions per request, prompt + generated (0: 4096, capped by the
                          model) */
  int max_batch;       /* sequences running at once (0: 32) */
  int prefill_chunk;   /* prompt tokens of one sequence per step (0: 256) */
  int max_step_tokens; /* tokens of one step over the whole batch (0: prefill_chunk +
                          max_batch, so a whole chunk fits beside every decode); at least
                          max_batch */
  uint64_t kv_memory;  /* bytes of KV cache for all requests (0: max_batch requests of
                          max_context positions, lowered to 3/4 of the memory the backend
                          has left after the weights: MemAvailable, or a CUDA device's free
                          memory) */
  int max_queue;       /* requests waiting at once before submit refuses (0: 256) */
  int prefix_cache;    /* finished requests' KV caches kept for reuse (0: max_batch;
                          -1: none, the cache is off) */
  int shared_prefix;   /* prompt positions from 0 whose sliding-window rows each request
                          keeps for later prompts that share its start, reserved with it.
                          0 (automatic): its whole prompt when, at admission, the KV budget
                          has room for that beside the running requests, the kept cache it
                          resumes from and, for each free batch slot, the next queued
                          request (or one like it); other kept caches give way to it as to
                          any request. Else prefill_chunk positions */
  mxl_weight_options weights; /* CPU: weights in 2 MB pages (--no-mmap) */
} mxl_scheduler_options;

/* Binds `model` (which must outlive the scheduler) to a new backend. */
mxl_status mxl_scheduler_create(const mxl_model *model, const mxl_scheduler_options *opt,
                                mxl_scheduler **out);
/* Ends every request still queued or running (final event
 * MXL_FINISH_CANCELLED, on the calling thread), releases their adapter
 * references, frees the KV pool and the backend. Not while mxl_scheduler_run
 * runs on another thread (shut it down and join first). NULL is fine. */
void mxl_scheduler_destroy(mxl_scheduler *s);

/* The scheduler's backend, for mxl_registry_create. */
mxl_backend *mxl_scheduler_backend(mxl_scheduler *s);

/* ---------------------------------------------------------------- requests */

typedef enum mxl_finish_reason {
  MXL_FINISH_NONE = 0,  /* a token event: the request goes on */
  MXL_FINISH_STOP,      /* a stop id was generated (it was delivered) */
  MXL_FINISH_LENGTH,    /* max_tokens generated, or the context is full */
  MXL_FINISH_CANCELLED, /* mxl_scheduler_cancel, a callback's nonzero return, or shutdown */
  MXL_FINISH_ERROR,     /* the backend failed; `status` and `message` say how */
} mxl_finish_reason;

typedef struct mxl_request_event {
  uint64_t id;
  int32_t token;            /* the new token (token events); -1 in the final event */
  mxl_finish_reason finish; /* MXL_FINISH_NONE for token events */
  int prompt_tokens, generated_tokens; /* so far */
  int cached_tokens;        /* prompt tokens taken from the prefix cache, not prefilled */
  /* Final event only: */
  mxl_status status;        /* MXL_OK unless finish == MXL_FINISH_ERROR */
  const char *message;      /* the error, or ""; valid during the callback */
  double queued_seconds;    /* submit → admission */
  double first_token_seconds; /* submit → first token (0: none) */
  double total_seconds;     /* submit → finish */
} mxl_request_event;

/* Called on the engine thread; return nonzero to cancel the request (the
 * return value of the final event is ignored). */
typedef int (*mxl_request_fn)(void *user, const mxl_request_event *ev);

/* One adapter of a request, with the scale its delta is multiplied by
 * (1: as trained). Several add up; the same adapter may appear twice. */
typedef struct mxl_request_adapter {
  mxl_adapter_ref *adapter;
  float scale;
} mxl_request_adapter;

enum { MXL_REQUEST_MAX_ADAPTERS = 8, MXL_REQUEST_MAX_STOP = 16 };

typedef struct mxl_request {
  const int32_t *prompt; /* token ids; copied by submit */
  int n_prompt;
  const mxl_request_adapter *adapters; /* [n_adapters]: submit retains each reference for
                                          the request's life (the caller keeps its own) */
  int n_adapters;
  /* Sampling: as mxl_gen_request (greedy at temperature 0). */
  float temperature, top_p, min_p, repetition_penalty;
  int top_k;
  uint64_t seed;
  int max_tokens;          /* new tokens at most, >= 1 */
  const int32_t *stop_ids; /* generation ends after one of these; copied */
  int n_stop;
  mxl_request_fn on_event;
  void *user;
} mxl_request;

/* temperature 1, top_p 1, no top-k/min-p/penalty, seed 0, 256 tokens, no
 * adapters, no stop ids. */
void mxl_request_defaults(mxl_request *r);

/* Queues a request; *id_out identifies it in events and for cancel.
 * Refused (nothing queued, no event) with MXL_ERR_ARGUMENT for bad
 * parameters, token ids outside the vocabulary, a prompt + max_tokens
 * beyond max_context, or a KV need beyond the whole kv_memory; with
 * MXL_ERR_BUSY when max_queue requests already wait; with MXL_ERR_STATE
 * after shutdown. */
mxl_status mxl_scheduler_submit(mxl_scheduler *s, const mxl_request *req, uint64_t *id_out);

/* Ends a queued or running request at the next step (its final event says
 * MXL_FINISH_CANCELLED) and frees its KV reservation. MXL_ERR_NOT_FOUND
 * when `id` is unknown or already finished. */
mxl_status mxl_scheduler_cancel(mxl_scheduler *s, uint64_t id);

/* ---------------------------------------------------------------- the engine thread */

/* Runs steps until mxl_scheduler_shutdown; sleeps while there is nothing to
 * do. A failing step ends the requests it ran with MXL_FINISH_ERROR and the
 * loop goes on. Returns MXL_OK after shutdown. */
mxl_status mxl_scheduler_run(mxl_scheduler *s);

/* One step: admits what fits, runs one forward pass, delivers events.
 * *progressed (may be NULL) is 1 when there was work. Returns the step's
 * backend error, if any (its requests have been ended already). */
mxl_status mxl_scheduler_step(mxl_scheduler *s, int *progressed);

/* From any thread: makes mxl_scheduler_run return and refuses new
 * submissions. drain = 1: after every queued and running request has
 * finished; drain = 0: at once, cancelling them. */
void mxl_scheduler_shutdown(mxl_scheduler *s, int drain);

/* ---------------------------------------------------------------- statistics */

typedef struct mxl_scheduler_stats {
  /* now */
  int running, queued;
  uint64_t kv_bytes_used, kv_bytes_total; /* used: by requests that run */
  uint64_t kv_bytes_cached; /* by kept caches (freed when a request needs the memory) */
  uint64_t kv_bytes_default; /* the default budget, when the memory left lowered it to
                                kv_bytes_total; else 0 */
  int cached_prefixes;      /* kept caches */
  /* totals since creation */
  uint64_t submitted, completed, cancelled, failed, refused;
  uint64_t prompt_tokens, generated_tokens; /* prompt: prefilled (cached ones not counted) */
  uint64_t prefix_hits, prefix_tokens;      /* requests that reused a kept cache; tokens reused */
  uint64_t heads_grown; /* requests whose head was reserved for the whole prompt (automatic) */
  uint64_t steps;
  double busy_seconds; /* inside steps that had work */
  /* configuration */
  int max_context, max_batch, prefill_chunk, max_step_tokens, max_queue;
  int prefix_cache;    /* kept caches at most (0: off) */
  int shared_prefix;   /* prompt positions from 0 a kept cache serves any prompt sharing them
                          (automatic: at least these) */
  int shared_prefix_auto; /* 1: heads cover whole prompts where the budget has room */
  int vocab;           /* token ids are < vocab */
  const char *backend; /* "cpu", "ref", "cuda" */
  int threads;         /* the backend's CPU threads */
} mxl_scheduler_stats;

/* From any thread. */
void mxl_scheduler_get_stats(mxl_scheduler *s, mxl_scheduler_stats *out);

#ifdef __cplusplus
}
#endif

#endif
