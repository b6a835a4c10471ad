/* The continuous-batching scheduler (include/mxlora/scheduler.h).
 *
 * State: a FIFO queue of submitted requests and the running set. Other
 * threads touch both only under the mutex (submit appends, cancel flags);
 * the engine thread alone admits, steps and finishes, taking the mutex for
 * the list changes and never while it runs the model or a callback.
 *
 * A step: (1) end the requests whose cancellation was asked; (2) admit from
 * the queue head while a batch slot and the KV budget allow (first in,
 * first out: a large request at the head is not overtaken); (3) give every
 * running sequence its tokens for this step — one for a decoding sequence,
 * a prompt chunk for one in prefill, within max_step_tokens — and run them
 * through one forward pass (infer/batch_forward.c); (4) sample where a
 * sequence's known tokens are all cached, deliver events, end the finished
 * ones. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adapters/registry_internal.h"
#include "core/assert.h"
#include "core/clock.h"
#include "core/status.h"
#include "infer/prefix_cache.h"
#include "infer/sched_internal.h"
#include "kernels/backend_memory.h"

/* ---------------------------------------------------------------- options */

/* The rows a request's head keeps (the prefix cache): its first
 * shared_prefix prompt positions, short of its last prompt token. */
static int head_rows(int shared_prefix, int n_prompt) {
  return n_prompt - 1 < shared_prefix ? n_prompt - 1 : shared_prefix;
}

static mxl_status resolve_options(const mxl_model *model, const mxl_scheduler_options *in,
                                  mxl_scheduler_options *o) {
  mxl_scheduler_options zero = {0};
  *o = in ? *in : zero;
  if (!o->backend) o->backend = "cpu";
  const mxl_config *c = &model->config;
  if (o->max_context < 0 || o->max_batch < 0 || o->prefill_chunk < 0 || o->max_step_tokens < 0 ||
      o->max_queue < 0)
    return mxl_errorf(MXL_ERR_ARGUMENT, "scheduler: negative size in the options");
  if (o->max_context == 0) o->max_context = 4096;
  if (o->max_context > c->max_context) o->max_context = c->max_context;
  if (o->max_batch == 0) o->max_batch = 32;
  if (o->prefill_chunk == 0) o->prefill_chunk = 256;
  if (o->max_step_tokens == 0) o->max_step_tokens = o->prefill_chunk + o->max_batch;
  if (o->max_step_tokens < o->max_batch)
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "scheduler: max_step_tokens %d is below max_batch %d (every running "
                      "sequence decodes one token per step)",
                      o->max_step_tokens, o->max_batch);
  if (o->max_queue == 0) o->max_queue = 256;
  if (o->prefix_cache < -1)
    return mxl_errorf(MXL_ERR_ARGUMENT, "scheduler: prefix_cache %d (-1: off, 0: default)",
                      o->prefix_cache);
  if (o->prefix_cache == 0) o->prefix_cache = o->max_batch;
  if (o->shared_prefix < 0)
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "scheduler: shared_prefix %d (0: automatic, as far as the KV budget has "
                      "room)",
                      o->shared_prefix);
  /* automatic: one pass always, more at admission (head_growth) */
  if (o->shared_prefix == 0) o->shared_prefix = o->prefill_chunk;
  if (o->shared_prefix > o->max_context) o->shared_prefix = o->max_context;
  /* a request's reservation: its cache, and the window kept for the
   * prefix cache */
  uint64_t one = mxl_kv_cache_bytes(c, o->max_context, o->prefill_chunk);
  if (o->prefix_cache > 0)
    one += mxl_kv_tail_bytes(c, o->max_context) +
           mxl_kv_tail_rows_bytes(c, head_rows(o->shared_prefix, o->max_context));
  if (o->kv_memory == 0) o->kv_memory = one * (uint64_t)o->max_batch;
  return MXL_OK;
}

/* The default KV budget (kv_memory 0: max_batch requests of max_context
 * positions) is lowered to 3/4 of the memory the backend has left once the
 * weights are in (the host's MemAvailable, a CUDA device's free memory):
 * the rest is for activations, adapters and, on the host, everything
 * else, so a full batch of long requests cannot push the machine into
 * swapping or the OOM killer. A budget the caller chose is kept, with a
 * warning when it exceeds that; a backend that cannot say keeps either. */
static void fit_kv_budget(mxl_scheduler *s, int chosen) {
  size_t left = 0;
  if (mxl_backend_memory_left(s->be, &left) != MXL_OK) return;
  const uint64_t room = (uint64_t)left / 4 * 3;
  if (s->kv_total <= room) return;
  if (chosen) {
    mxl_warnf("scheduler: a KV budget of %.1f MiB exceeds 3/4 of the %.1f MiB of memory left: "
              "a full batch may fail to allocate or make the machine swap",
              (double)s->kv_total / 1048576.0, (double)left / 1048576.0);
    return;
  }
  s->kv_default = s->kv_total;
  s->kv_total = s->opt.kv_memory = room;
}

mxl_status mxl_scheduler_create(const mxl_model *model, const mxl_scheduler_options *opt,
                                mxl_scheduler **out) {
  *out = NULL;
  if (!model) return mxl_errorf(MXL_ERR_ARGUMENT, "scheduler: no model");
  mxl_scheduler *s = calloc(1, sizeof *s);
  if (!s) return mxl_errorf(MXL_ERR_MEMORY, "scheduler: out of memory");
  s->model = model;
  s->shared_auto = !opt || opt->shared_prefix == 0;
  mxl_status st = resolve_options(model, opt, &s->opt);
  s->prefix = calloc(1, sizeof *s->prefix);
  if (st == MXL_OK && !s->prefix) st = mxl_errorf(MXL_ERR_MEMORY, "scheduler: out of memory");
  if (st == MXL_OK) st = mxl_prefix_cache_init(s->prefix, s->opt.prefix_cache); /* -1: off */
  if (st == MXL_OK) st = mxl_backend_create_named(s->opt.backend, s->opt.threads, &s->be);
  if (st == MXL_OK) st = mxl_engine_create_with(model, s->be, &s->opt.weights, &s->engine);
  if (st == MXL_OK) st = mxl_batch_forward_init(s);
  if (st != MXL_OK) {
    mxl_batch_forward_release(s);
    if (s->prefix) free(s->prefix->items);
    free(s->prefix);
    mxl_engine_destroy(s->engine);
    mxl_backend_destroy(s->be);
    free(s);
    return st;
  }
  s->kv_total = s->opt.kv_memory;
  fit_kv_budget(s, opt && opt->kv_memory != 0);
  s->next_id = 1;
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->wake, NULL);
  *out = s;
  return MXL_OK;
}

mxl_backend *mxl_scheduler_backend(mxl_scheduler *s) { return s->be; }

/* ---------------------------------------------------------------- sequences */

static void seq_free(mxl_scheduler *s, mxl_seq *q) {
  if (!q) return;
  mxl_kv_cache_destroy(s->engine, q->cache);
  mxl_kv_tail_destroy(s->engine, q->tail);
  mxl_kv_tail_destroy(s->engine, q->head);
  mxl_sampler_free(&q->sampler);
  for (int i = 0; i < q->n_adapters; i++) mxl_adapter_ref_release(q->refs[i]);
  free(q->tokens);
  free(q);
}

void mxl_request_defaults(mxl_request *r) {
  memset(r, 0, sizeof *r);
  r->temperature = 1.0f;
  r->top_p = 1.0f;
  r->repetition_penalty = 1.0f;
  r->max_tokens = 256;
}

static mxl_status check_request(const mxl_scheduler *s, const mxl_request *r) {
  const int vocab = s->engine->w.vocab_rows;
  if (!r->prompt || r->n_prompt <= 0)
    return mxl_errorf(MXL_ERR_ARGUMENT, "request: the prompt is empty");
  if (r->max_tokens < 1)
    return mxl_errorf(MXL_ERR_ARGUMENT, "request: max_tokens %d must be at least 1",
                      r->max_tokens);
  if ((int64_t)r->n_prompt + r->max_tokens > s->opt.max_context)
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "request: %d prompt tokens + %d new tokens exceed the context of %d",
                      r->n_prompt, r->max_tokens, s->opt.max_context);
  for (int i = 0; i < r->n_prompt; i++)
    if (r->prompt[i] < 0 || r->prompt[i] >= vocab)
      return mxl_errorf(MXL_ERR_ARGUMENT, "request: prompt token %d is %d, outside 0..%d", i,
                        r->prompt[i], vocab - 1);
  if (r->n_adapters < 0 || r->n_adapters > MXL_REQUEST_MAX_ADAPTERS ||
      (r->n_adapters > 0 && !r->adapters))
    return mxl_errorf(MXL_ERR_ARGUMENT, "request: %d adapters (at most %d)", r->n_adapters,
                      MXL_REQUEST_MAX_ADAPTERS);
  for (int i = 0; i < r->n_adapters; i++) {
    if (!r->adapters[i].adapter)
      return mxl_errorf(MXL_ERR_ARGUMENT, "request: adapter %d is NULL", i);
    float sc = r->adapters[i].scale;
    if (!(sc == sc) || sc > 1e6f || sc < -1e6f)
      return mxl_errorf(MXL_ERR_ARGUMENT, "request: adapter %s scale %g is not a finite number",
                        mxl_adapter_ref_name(r->adapters[i].adapter), (double)sc);
  }
  if (r->n_stop < 0 || r->n_stop > MXL_REQUEST_MAX_STOP || (r->n_stop > 0 && !r->stop_ids))
    return mxl_errorf(MXL_ERR_ARGUMENT, "request: %d stop ids (at most %d)", r->n_stop,
                      MXL_REQUEST_MAX_STOP);
  for (int i = 0; i < r->n_stop; i++)
    if (r->stop_ids[i] < 0 || r->stop_ids[i] >= vocab)
      return mxl_errorf(MXL_ERR_ARGUMENT, "request: stop id %d outside 0..%d", r->stop_ids[i],
                        vocab - 1);
  if (!r->on_event) return mxl_errorf(MXL_ERR_ARGUMENT, "request: no event callback");
  return MXL_OK;
}

static void fill_sampling(const mxl_request *r, mxl_sampling *p) {
  mxl_sampling_defaults(p);
  p->temperature = r->temperature;
  p->top_p = r->top_p;
  p->top_k = r->top_k;
  p->min_p = r->min_p;
  p->repetition_penalty = r->repetition_penalty;
  p->seed = r->seed;
}

static mxl_status seq_create(mxl_scheduler *s, const mxl_request *r, mxl_seq **out) {
  *out = NULL;
  MXL_TRY(check_request(s, r));
  mxl_seq *q = calloc(1, sizeof *q);
  if (!q) return mxl_errorf(MXL_ERR_MEMORY, "request: out of memory");
  fill_sampling(r, &q->sampling);
  mxl_status st = mxl_sampling_validate(&q->sampling);
  if (st != MXL_OK) {
    free(q);
    return mxl_error_prefix(st, "request: ");
  }
  q->tokens = malloc(((size_t)r->n_prompt + r->max_tokens) * sizeof *q->tokens);
  if (!q->tokens) {
    free(q);
    return mxl_errorf(MXL_ERR_MEMORY, "request: out of memory for %d tokens", r->n_prompt);
  }
  memcpy(q->tokens, r->prompt, (size_t)r->n_prompt * sizeof *q->tokens);
  q->n_prompt = q->n_tokens = r->n_prompt;
  q->max_tokens = r->max_tokens;
  q->n_stop = r->n_stop;
  if (r->n_stop) memcpy(q->stops, r->stop_ids, (size_t)r->n_stop * sizeof *q->stops);
  for (int i = 0; i < r->n_adapters; i++) {
    if (r->adapters[i].scale == 0) continue; /* adds nothing */
    q->refs[q->n_adapters] = mxl_adapter_ref_retain(r->adapters[i].adapter);
    q->uses[q->n_adapters].view = mxl_adapter_ref_view(q->refs[q->n_adapters]);
    q->uses[q->n_adapters++].scale = r->adapters[i].scale;
  }
  q->on_event = r->on_event;
  q->user = r->user;
  q->context = r->n_prompt + r->max_tokens;
  q->kv_bytes = mxl_kv_cache_bytes(s->engine->cfg, q->context, s->opt.prefill_chunk);
  q->head_want = s->prefix->max_entries ? head_rows(s->opt.shared_prefix, r->n_prompt) : 0;
  if (s->prefix->max_entries)
    q->kv_bytes += mxl_kv_tail_bytes(s->engine->cfg, q->context) +
                   mxl_kv_tail_rows_bytes(s->engine->cfg, q->head_want);
  if (q->kv_bytes > s->kv_total) {
    uint64_t need = q->kv_bytes;
    seq_free(s, q);
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "request: %d positions need %.1f MiB of KV cache, more than the whole "
                      "KV budget of %.1f MiB",
                      r->n_prompt + r->max_tokens, (double)need / 1048576.0,
                      (double)s->kv_total / 1048576.0);
  }
  *out = q;
  return MXL_OK;
}

mxl_status mxl_scheduler_submit(mxl_scheduler *s, const mxl_request *req, uint64_t *id_out) {
  *id_out = 0;
  mxl_seq *q = NULL;
  mxl_status st = seq_create(s, req, &q);
  if (st != MXL_OK) {
    pthread_mutex_lock(&s->mu);
    s->refused++;
    pthread_mutex_unlock(&s->mu);
    return st;
  }
  q->t_submit = mxl_now_seconds();
  pthread_mutex_lock(&s->mu);
  if (s->shutdown)
    st = mxl_errorf(MXL_ERR_STATE, "request refused: the scheduler is shutting down");
  else if (s->queue.n >= s->opt.max_queue)
    st = mxl_errorf(MXL_ERR_BUSY, "request refused: %d requests already wait (the queue limit)",
                    s->queue.n);
  else
    st = mxl_seq_list_push(&s->queue, q);
  if (st == MXL_OK) {
    q->id = s->next_id++;
    *id_out = q->id;
    s->submitted++;
    pthread_cond_signal(&s->wake);
  } else {
    s->refused++;
  }
  pthread_mutex_unlock(&s->mu);
  if (st != MXL_OK) seq_free(s, q);
  return st;
}

mxl_status mxl_scheduler_cancel(mxl_scheduler *s, uint64_t id) {
  pthread_mutex_lock(&s->mu);
  mxl_seq *q = mxl_seq_list_find(&s->queue, id);
  if (!q) q = mxl_seq_list_find(&s->running, id);
  if (q) {
    q->cancel = 1;
    pthread_cond_signal(&s->wake);
  }
  pthread_mutex_unlock(&s->mu);
  if (!q) return mxl_errorf(MXL_ERR_NOT_FOUND, "no request %llu is queued or running",
                            (unsigned long long)id);
  return MXL_OK;
}

/* ---------------------------------------------------------------- events */

static int deliver_token(mxl_seq *q, int32_t token) {
  mxl_request_event ev = {0};
  ev.id = q->id;
  ev.token = token;
  ev.prompt_tokens = q->n_prompt;
  ev.generated_tokens = q->generated;
  ev.cached_tokens = q->reused;
  ev.message = "";
  return q->on_event(q->user, &ev);
}

/* The statistics' copy of the prefix cache's size (engine thread). */
static void sync_cached(mxl_scheduler *s) {
  pthread_mutex_lock(&s->mu);
  s->kv_cached = s->prefix->bytes;
  s->cached_entries = s->prefix->n;
  pthread_mutex_unlock(&s->mu);
}

/* Ends a sequence that is in no list any more: returns its KV reservation
 * (its cache may stay, as a prefix cache entry), counts it, sends the
 * final event, frees it. */
static void finish(mxl_scheduler *s, mxl_seq *q, mxl_finish_reason why, mxl_status status,
                   const char *message) {
  double now = mxl_now_seconds();
  if (q->admitted && why != MXL_FINISH_ERROR && mxl_prefix_cache_keep(s->engine, s->prefix, q))
    sync_cached(s);
  pthread_mutex_lock(&s->mu);
  if (q->admitted) s->kv_used -= q->kv_bytes;
  if (why == MXL_FINISH_CANCELLED) s->cancelled++;
  else if (why == MXL_FINISH_ERROR) s->failed++;
  else s->completed++;
  pthread_mutex_unlock(&s->mu);
  mxl_request_event ev = {0};
  ev.id = q->id;
  ev.token = -1;
  ev.finish = why;
  ev.prompt_tokens = q->n_prompt;
  ev.generated_tokens = q->generated;
  ev.cached_tokens = q->reused;
  ev.status = status;
  ev.message = message ? message : "";
  ev.queued_seconds = (q->admitted ? q->t_admit : now) - q->t_submit;
  ev.first_token_seconds = q->t_first > 0 ? q->t_first - q->t_submit : 0;
  ev.total_seconds = now - q->t_submit;
  q->on_event(q->user, &ev);
  seq_free(s, q);
}

/* Removes a running sequence and ends it. */
static void finish_running(mxl_scheduler *s, mxl_seq *q, mxl_finish_reason why,
                           mxl_status status, const char *message) {
  pthread_mutex_lock(&s->mu);
  mxl_seq_list_remove(&s->running, q);
  pthread_mutex_unlock(&s->mu);
  finish(s, q, why, status, message);
}

/* ---------------------------------------------------------------- admission */

/* Ends cancelled requests (queued and running). */
static void reap_cancelled(mxl_scheduler *s) {
  mxl_seq_list gone = {0};
  pthread_mutex_lock(&s->mu);
  for (int i = 0; i < s->queue.n;) {
    mxl_seq *q = s->queue.items[i];
    if (q->cancel && mxl_seq_list_push(&gone, q) == MXL_OK) mxl_seq_list_remove(&s->queue, q);
    else i++;
  }
  for (int i = 0; i < s->running.n;) {
    mxl_seq *q = s->running.items[i];
    if (q->cancel && mxl_seq_list_push(&gone, q) == MXL_OK) mxl_seq_list_remove(&s->running, q);
    else i++;
  }
  pthread_mutex_unlock(&s->mu);
  for (int i = 0; i < gone.n; i++) finish(s, gone.items[i], MXL_FINISH_CANCELLED, MXL_OK, NULL);
  mxl_seq_list_free(&gone);
}

/* Gives an admitted sequence its KV cache (continuing from the prefix
 * cache's entry m.entry, if any) and sampler (engine thread). */
static mxl_status seq_start(mxl_scheduler *s, mxl_seq *q, mxl_prefix_match m) {
  MXL_TRY(mxl_kv_cache_create(s->engine, q->context, s->opt.prefill_chunk, &q->cache));
  if (m.entry >= 0) {
    const mxl_prefix_entry *en = &s->prefix->items[m.entry];
    if (mxl_kv_cache_resume(s->engine, q->cache, en->cache, m.via, m.pos) == MXL_OK) {
      q->cached = q->reused = m.pos;
      /* the shared part of the entry's head becomes q's (a failure only
       * costs later reuse; a head kept from an admission the backend
       * refused covers q's own tokens already) */
      q->head_tried = 1;
      if (en->head && !q->head) {
        /* no more than q reserved: a grown head may serve a request
         * whose own was not */
        int rows = m.pos < en->head->pos ? m.pos : en->head->pos;
        if (rows > q->head_want) rows = q->head_want;
        mxl_kv_tail_copy(s->engine, en->head, rows, q->head_want, &q->head);
        MXL_ASSERT(!q->head || q->head->cap <= q->head_want);
      }
      mxl_prefix_cache_touch(s->prefix, m.entry);
      pthread_mutex_lock(&s->mu);
      s->prefix_hits++;
      s->prefix_tokens += (uint64_t)m.pos;
      pthread_mutex_unlock(&s->mu);
    }
  }
  return mxl_sampler_init(&q->sampler, &q->sampling, s->engine->w.vocab_rows);
}

/* Frees kept caches, least recently used first, until `need` bytes fit
 * beside the running requests; the entry *keep goes last (then *keep =
 * -1; its index follows the evictions). Returns 1 when they fit. */
static int make_room(mxl_scheduler *s, uint64_t need, int *keep) {
  for (;;) {
    pthread_mutex_lock(&s->mu);
    int fits = s->kv_used + s->kv_cached + need <= s->kv_total;
    pthread_mutex_unlock(&s->mu);
    if (fits || s->prefix->n == 0) return fits;
    int victim = mxl_prefix_cache_lru(s->prefix, *keep);
    if (victim < 0) victim = *keep, *keep = -1;
    else if (*keep > victim) (*keep)--;
    mxl_prefix_cache_evict(s->engine, s->prefix, victim);
    sync_cached(s);
  }
}

/* The automatic shared prefix (shared_prefix 0): the bytes by which q's
 * head may grow from one pass to its whole prompt, or 0. It grows only
 * into room no request claims: beside the running requests, the kept
 * cache q resumes from (`keep`, or -1), and, for every batch slot left
 * free after q, the next queued request's reservation or, with none
 * queued, one like q's. Other kept caches give way to it as to any request
 * (q at the queue's head; engine thread). */
static uint64_t head_growth(mxl_scheduler *s, const mxl_seq *q, int keep) {
  const int whole = head_rows(s->opt.max_context, q->n_prompt);
  if (!s->shared_auto || !s->prefix->max_entries || whole <= q->head_want) return 0;
  const mxl_config *c = s->engine->cfg;
  uint64_t extra = mxl_kv_tail_rows_bytes(c, whole) - mxl_kv_tail_rows_bytes(c, q->head_want);
  uint64_t claimed = q->kv_bytes + extra + (keep >= 0 ? s->prefix->items[keep].bytes : 0);
  pthread_mutex_lock(&s->mu);
  claimed += s->kv_used;
  int slots = s->opt.max_batch - s->running.n - 1;
  for (int i = 1; i <= slots; i++)
    claimed += i < s->queue.n ? s->queue.items[i]->kv_bytes : q->kv_bytes;
  pthread_mutex_unlock(&s->mu);
  return claimed <= s->kv_total ? extra : 0;
}

/* A request the backend refused goes back to the queue's head without the
 * head growth it was given: its next admission decides that again, when
 * requests queued behind it may claim the room. A head it inherited beyond
 * the plain reservation is let go with it (caller holds the mutex). */
static void undo_head_growth(mxl_scheduler *s, mxl_seq *q, uint64_t growth, int head_want) {
  if (q->head && q->head->cap > head_want) {
    mxl_kv_tail_destroy(s->engine, q->head);
    q->head = NULL;
    q->head_tried = 0;
  }
  q->kv_bytes -= growth;
  q->head_want = head_want;
  s->heads_grown--;
}

/* Admits from the queue head while a slot and the KV budget allow. The
 * queue's head changes only on this thread (others append and flag). */
static void admit(mxl_scheduler *s) {
  for (;;) {
    pthread_mutex_lock(&s->mu);
    mxl_seq *q = s->queue.n && s->running.n < s->opt.max_batch ? s->queue.items[0] : NULL;
    pthread_mutex_unlock(&s->mu);
    if (!q) return;
    mxl_prefix_match m = mxl_prefix_cache_find(s->prefix, s->engine->cfg, q);
    const uint64_t growth = head_growth(s, q, m.entry);
    const int plain_head = q->head_want;
    if (!make_room(s, q->kv_bytes + growth, &m.entry)) return;
    pthread_mutex_lock(&s->mu);
    if (growth) {
      q->kv_bytes += growth;
      q->head_want = head_rows(s->opt.max_context, q->n_prompt);
      s->heads_grown++;
    }
    mxl_seq_list_remove(&s->queue, q);
    s->kv_used += q->kv_bytes;
    q->admitted = 1;
    pthread_mutex_unlock(&s->mu);
    mxl_status st = seq_start(s, q, m);
    if (st != MXL_OK && s->prefix->n > 0) { /* the backend wants the kept caches' memory */
      mxl_kv_cache_destroy(s->engine, q->cache);
      q->cache = NULL;
      q->cached = q->reused = 0;
      mxl_sampler_free(&q->sampler);
      while (s->prefix->n) mxl_prefix_cache_evict(s->engine, s->prefix, s->prefix->n - 1);
      sync_cached(s);
      st = seq_start(s, q, (mxl_prefix_match){-1, 0});
    }
    if (st != MXL_OK && s->running.n == 0) { /* nothing will give memory back */
      char message[512];
      snprintf(message, sizeof message, "%s", mxl_last_error());
      finish(s, q, MXL_FINISH_ERROR, st, message);
      continue;
    }
    if (st != MXL_OK) {
      /* The backend refused memory the budget allowed: keep waiting (at
       * the head) until running requests give some back. */
      mxl_kv_cache_destroy(s->engine, q->cache);
      q->cache = NULL;
      q->cached = q->reused = 0;
      mxl_sampler_free(&q->sampler);
      pthread_mutex_lock(&s->mu);
      s->kv_used -= q->kv_bytes;
      if (growth) undo_head_growth(s, q, growth, plain_head);
      q->admitted = 0;
      mxl_seq_list_insert(&s->queue, 0, q);
      s->admit_stalled = 1;
      pthread_mutex_unlock(&s->mu);
      return;
    }
    q->t_admit = mxl_now_seconds();
    pthread_mutex_lock(&s->mu);
    st = mxl_seq_list_push(&s->running, q);
    pthread_mutex_unlock(&s->mu);
    if (st != MXL_OK) {
      finish(s, q, MXL_FINISH_ERROR, st, mxl_last_error());
      return;
    }
  }
}

/* ---------------------------------------------------------------- a step */

static int is_stop(const mxl_seq *q, int32_t t) {
  for (int i = 0; i < q->n_stop; i++)
    if (q->stops[i] == t) return 1;
  return 0;
}

/* Samples the next token of a sequence whose known tokens are all cached,
 * delivers it, and ends the sequence when it is done. */
static void advance(mxl_scheduler *s, mxl_seq *q, float *logits) {
  int32_t t = mxl_sampler_next(&q->sampler, logits, q->tokens, q->n_tokens);
  q->tokens[q->n_tokens++] = t;
  q->generated++;
  if (q->generated == 1) q->t_first = mxl_now_seconds();
  pthread_mutex_lock(&s->mu);
  s->generated_tokens++;
  pthread_mutex_unlock(&s->mu);
  int cancel = deliver_token(q, t);
  if (is_stop(q, t)) finish_running(s, q, MXL_FINISH_STOP, MXL_OK, NULL);
  else if (q->generated == q->max_tokens) finish_running(s, q, MXL_FINISH_LENGTH, MXL_OK, NULL);
  else if (cancel) finish_running(s, q, MXL_FINISH_CANCELLED, MXL_OK, NULL);
}

/* This step's tokens for each running sequence (within max_step_tokens:
 * decodes first, then prompt chunks in admission order). Chunks are whole
 * (prefill_chunk tokens from position 0, as `generate` feeds them) when the
 * budget allows; a shorter one only keeps prefill moving when no whole
 * chunk fits. */
static int plan_step(mxl_scheduler *s, mxl_step_item *items) {
  int budget = s->opt.max_step_tokens, n = 0, prefills = 0;
  for (int i = 0; i < s->running.n; i++) {
    mxl_seq *q = s->running.items[i];
    if (q->cached < q->n_prompt) continue;
    items[n++] = (mxl_step_item){q, q->cached, 1};
    budget--;
  }
  for (int i = 0; i < s->running.n && budget > 0; i++) {
    mxl_seq *q = s->running.items[i];
    if (q->cached >= q->n_prompt) continue;
    int take = q->n_prompt - q->cached;
    if (take > s->opt.prefill_chunk) take = s->opt.prefill_chunk;
    if (take > budget) {
      if (prefills) break;
      take = budget;
    }
    items[n++] = (mxl_step_item){q, q->cached, take};
    budget -= take;
    prefills++;
  }
  return n;
}

/* After a pass, the sliding rows the prefix cache will need once the rings
 * have moved on (a failure only costs that reuse): the head, from position
 * 0 and grown pass by pass (each pass's rows are still in the rings after
 * it), for later prompts that begin the same; the window before the
 * prompt's last token, unless the head covers it, for a later prompt that
 * repeats this one (that token then runs again, for its logits). */
static void keep_windows(mxl_scheduler *s, mxl_seq *q) {
  const int want = q->head_want;
  const int upto = q->cached < want ? q->cached : want;
  if (!q->head_tried) {
    q->head_tried = 1;
    mxl_kv_tail_take(s->engine, q->cache, upto, upto, want, &q->head);
  } else if (q->head && q->head->pos < upto &&
             q->head->pos >= mxl_kv_cache_slide_oldest(q->cache)) {
    /* (a head inherited short of where q resumed can never grow: the
     * check spares a refused call each pass) */
    mxl_kv_tail_grow(s->engine, q->cache, q->head, upto);
  }
  const int last = q->n_prompt - 1;
  if (q->cached == q->n_prompt && !q->tail && !(q->head && q->head->pos == last))
    mxl_kv_tail_take(s->engine, q->cache, last, mxl_kv_cache_window_rows(s->engine->cfg, last), 0,
                     &q->tail);
}

mxl_status mxl_scheduler_step(mxl_scheduler *s, int *progressed) {
  if (progressed) *progressed = 0;
  reap_cancelled(s);
  admit(s);
  int n = plan_step(s, s->items);
  if (n == 0) return MXL_OK;
  if (progressed) *progressed = 1;
  double t0 = mxl_now_seconds();
  mxl_status st = mxl_batch_forward(s, s->items, n);
  if (st != MXL_OK) {
    char message[512];
    snprintf(message, sizeof message, "%s", mxl_last_error());
    for (int i = 0; i < n; i++)
      finish_running(s, s->items[i].seq, MXL_FINISH_ERROR, st, message);
    mxl_errorf(st, "%s", message);
  } else {
    int prompt = 0;
    for (int i = 0; i < n; i++) {
      mxl_seq *q = s->items[i].seq;
      q->cached += s->items[i].n;
      if (q->cached <= q->n_prompt) prompt += s->items[i].n;
      if (s->prefix->max_entries && q->n_prompt > 1) keep_windows(s, q);
    }
    pthread_mutex_lock(&s->mu);
    s->prompt_tokens += (uint64_t)prompt;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < n; i++) {
      mxl_seq *q = s->items[i].seq;
      if (q->cached == q->n_tokens) advance(s, q, s->items[i].logits);
    }
  }
  pthread_mutex_lock(&s->mu);
  s->steps++;
  s->busy_seconds += mxl_now_seconds() - t0;
  pthread_mutex_unlock(&s->mu);
  return st;
}

/* ---------------------------------------------------------------- the loop */

static int has_work(const mxl_scheduler *s) { return s->queue.n > 0 || s->running.n > 0; }

mxl_status mxl_scheduler_run(mxl_scheduler *s) {
  for (;;) {
    pthread_mutex_lock(&s->mu);
    while (!s->shutdown && !has_work(s)) pthread_cond_wait(&s->wake, &s->mu);
    int stop = s->shutdown == MXL_SHUTDOWN_NOW || (s->shutdown && !has_work(s));
    int stalled = s->admit_stalled;
    s->admit_stalled = 0;
    pthread_mutex_unlock(&s->mu);
    if (stop) break;
    int progressed = 0;
    mxl_scheduler_step(s, &progressed);
    if (!progressed && stalled) { /* the backend refused KV memory: wait a little */
      struct timespec pause = {0, 5 * 1000 * 1000};
      nanosleep(&pause, NULL);
    }
  }
  mxl_scheduler_cancel_all(s);
  return MXL_OK;
}

void mxl_scheduler_shutdown(mxl_scheduler *s, int drain) {
  pthread_mutex_lock(&s->mu);
  s->shutdown = drain ? MXL_SHUTDOWN_DRAIN : MXL_SHUTDOWN_NOW;
  pthread_cond_broadcast(&s->wake);
  pthread_mutex_unlock(&s->mu);
}

void mxl_scheduler_cancel_all(mxl_scheduler *s) {
  pthread_mutex_lock(&s->mu);
  for (int i = 0; i < s->queue.n; i++) s->queue.items[i]->cancel = 1;
  for (int i = 0; i < s->running.n; i++) s->running.items[i]->cancel = 1;
  pthread_mutex_unlock(&s->mu);
  reap_cancelled(s);
}

void mxl_scheduler_destroy(mxl_scheduler *s) {
  if (!s) return;
  mxl_scheduler_cancel_all(s);
  mxl_seq_list_free(&s->queue);
  mxl_seq_list_free(&s->running);
  mxl_prefix_cache_release(s->engine, s->prefix);
  free(s->prefix);
  mxl_batch_forward_release(s);
  mxl_engine_destroy(s->engine);
  mxl_backend_destroy(s->be);
  pthread_cond_destroy(&s->wake);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

void mxl_scheduler_get_stats(mxl_scheduler *s, mxl_scheduler_stats *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&s->mu);
  out->running = s->running.n;
  out->queued = s->queue.n;
  out->kv_bytes_used = s->kv_used;
  out->kv_bytes_total = s->kv_total;
  out->kv_bytes_cached = s->kv_cached;
  out->kv_bytes_default = s->kv_default;
  out->cached_prefixes = s->cached_entries;
  out->prefix_hits = s->prefix_hits;
  out->prefix_tokens = s->prefix_tokens;
  out->submitted = s->submitted;
  out->completed = s->completed;
  out->cancelled = s->cancelled;
  out->failed = s->failed;
  out->refused = s->refused;
  out->prompt_tokens = s->prompt_tokens;
  out->generated_tokens = s->generated_tokens;
  out->steps = s->steps;
  out->busy_seconds = s->busy_seconds;
  out->heads_grown = s->heads_grown;
  pthread_mutex_unlock(&s->mu);
  out->max_context = s->opt.max_context;
  out->max_batch = s->opt.max_batch;
  out->prefill_chunk = s->opt.prefill_chunk;
  out->max_step_tokens = s->opt.max_step_tokens;
  out->max_queue = s->opt.max_queue;
  out->prefix_cache = s->prefix->max_entries;
  out->shared_prefix = s->prefix->max_entries ? s->opt.shared_prefix : 0;
  out->shared_prefix_auto = s->prefix->max_entries && s->shared_auto;
  out->vocab = s->engine->w.vocab_rows;
  out->backend = s->be->ops->name;
  out->threads = s->be->n_threads;
}
