/* Jobs: a text request turned into a scheduler request, and its tokens
 * turned back into text per channel.
 *
 * The scheduler calls on_event on the engine thread; it only appends the
 * token to the job's inbox. The reader (an HTTP connection thread, the
 * chat loop) takes the inbox in mxl_job_next and does the decoding, the
 * harmony channel parsing and the stop-string matching on its own thread,
 * so the engine never waits for text work. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/status.h"
#include "core/strbuf.h"
#include "server/service.h"
#include "server/reply.h"

struct mxl_job {
  mxl_service *svc;
  uint64_t id;
  int n_prompt;
  int chat;
  /* Written by the engine thread under mu. */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int32_t *inbox;
  int n_inbox, cap_inbox;
  int ended;
  mxl_request_event final;
  char message[512];
  /* The reader's side. */
  int32_t *taken;
  int cap_taken;
  mxl_reply reply;
  mxl_job_call calls[MXL_JOB_MAX_CALLS]; /* views of reply.calls for the reader */
  char *stops[MXL_REQUEST_MAX_STOP];
  int end_reported;
};

void mxl_job_request_defaults(mxl_job_request *r) {
  memset(r, 0, sizeof *r);
  r->sampling.temperature = 1.0f;
  r->sampling.top_p = 1.0f;
  r->sampling.repetition_penalty = 1.0f;
}

const char *mxl_job_finish_name(mxl_job_finish f) {
  switch (f) {
  case MXL_JOB_STOP: return "stop";
  case MXL_JOB_LENGTH: return "length";
  case MXL_JOB_CANCELLED: return "cancelled";
  case MXL_JOB_ERROR: return "error";
  case MXL_JOB_TOOL_CALLS: return "tool_calls";
  default: return "";
  }
}

/* ---------------------------------------------------------------- engine side */

static int on_event(void *user, const mxl_request_event *ev) {
  mxl_job *j = user;
  pthread_mutex_lock(&j->mu);
  if (ev->finish == MXL_FINISH_NONE) {
    if (j->n_inbox == j->cap_inbox) {
      int cap = j->cap_inbox ? 2 * j->cap_inbox : 64;
      int32_t *grown = realloc(j->inbox, (size_t)cap * sizeof *grown);
      if (grown) j->inbox = grown, j->cap_inbox = cap;
    }
    /* Out of memory: the token is lost and the job ends as cancelled. */
    int lost = j->n_inbox == j->cap_inbox;
    if (!lost) j->inbox[j->n_inbox++] = ev->token;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return lost;
  }
  j->final = *ev;
  snprintf(j->message, sizeof j->message, "%s", ev->message ? ev->message : "");
  j->final.message = j->message;
  j->ended = 1;
  pthread_cond_signal(&j->cv);
  pthread_mutex_unlock(&j->mu);
  return 0;
}

/* ---------------------------------------------------------------- start */

/* References to the adapters of a request: the model's own (at its
 * default scale) first, then the listed ones. */
static mxl_status acquire_adapters(mxl_service *svc, const mxl_job_request *req,
                                   mxl_request_adapter *out, int *n_out) {
  *n_out = 0;
  int from_model = req->model && strcmp(req->model, svc->model_id);
  int n = from_model + req->n_adapters;
  if (n > MXL_REQUEST_MAX_ADAPTERS)
    return mxl_errorf(MXL_ERR_ARGUMENT, "%d adapters: at most %d per request", n,
                      MXL_REQUEST_MAX_ADAPTERS);
  mxl_status st = MXL_OK;
  for (int i = 0; i < n && st == MXL_OK; i++) {
    const char *name = from_model && i == 0 ? req->model : req->adapters[i - from_model].name;
    st = mxl_registry_acquire(svc->reg, name, &out[i].adapter);
    if (st == MXL_ERR_NOT_FOUND)
      st = from_model && i == 0
               ? mxl_errorf(st, "The model `%s` does not exist (the base is `%s`; adapters are "
                                "listed by GET /v1/models)", name, svc->model_id)
               : mxl_errorf(st, "adapters[%d]: no adapter named `%s` is loaded",
                            i - from_model, name);
    if (st != MXL_OK) break;
    out[i].scale = from_model && i == 0 ? mxl_service_adapter_scale(svc, name)
                                        : req->adapters[i - from_model].scale;
    *n_out = i + 1;
  }
  return st;
}

static void release_adapters(mxl_request_adapter *a, int n) {
  for (int i = 0; i < n; i++) mxl_adapter_ref_release(a[i].adapter);
}

/* The header of a call the request asks for, after the prompt's
 * "<|start|>assistant", as harmony renders a call (and the adapters trained
 * here learn it): " to=functions.NAME<|channel|>commentary <|constrain|>
 * json<|message|>"; with no name given, up to "functions." (the model
 * names the function and ends the header). Each text piece is encoded on
 * its own, as the renderer does. */
static mxl_status call_header(mxl_service *svc, const char *name, mxl_ids *out) {
  const mxl_chat_ids *id = &svc->chat_ids;
  char to[96];
  snprintf(to, sizeof to, " to=functions.%s", name);
  mxl_status st = mxl_tokenizer_encode(svc->tok, to, strlen(to), 0, out);
  if (!name[0]) return st;
  if (st == MXL_OK) st = mxl_ids_push(out, id->channel);
  if (st == MXL_OK) st = mxl_tokenizer_encode(svc->tok, "commentary ", 11, 0, out);
  if (st == MXL_OK) st = mxl_ids_push(out, id->constrain);
  if (st == MXL_OK) st = mxl_tokenizer_encode(svc->tok, "json", 4, 0, out);
  if (st == MXL_OK) st = mxl_ids_push(out, id->message);
  return st;
}

static mxl_status build_prompt(mxl_service *svc, const mxl_job_request *req, mxl_ids *ids,
                               mxl_ids *forced) {
  if (!req->chat) {
    if (!req->prompt) return mxl_errorf(MXL_ERR_ARGUMENT, "request: no prompt");
    return mxl_tokenizer_encode(svc->tok, req->prompt, strlen(req->prompt), 0, ids);
  }
  if (!svc->has_chat)
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "this model's tokenizer has no harmony tokens: "
                      "use /v1/completions");
  if (!req->conversation) return mxl_errorf(MXL_ERR_ARGUMENT, "request: no conversation");
  mxl_render_options opts = {0};
  opts.mode = MXL_RENDER_PROMPT;
  mxl_rendered r = {0};
  mxl_status st = mxl_harmony_render_json(svc->tok, req->conversation,
                                          strlen(req->conversation), "request", &opts, &r);
  for (size_t i = 0; st == MXL_OK && i < r.n; i++) st = mxl_ids_push(ids, r.ids[i]);
  mxl_rendered_free(&r);
  if (st == MXL_OK && req->call && req->tools) st = call_header(svc, req->call, forced);
  for (size_t i = 0; st == MXL_OK && i < forced->n; i++) st = mxl_ids_push(ids, forced->data[i]);
  return st;
}

static int choose_max_tokens(const mxl_service *svc, const mxl_job_request *req, int n_prompt) {
  if (req->max_tokens > 0) return req->max_tokens; /* the scheduler checks it fits */
  int left = svc->max_context - n_prompt;
  return left < svc->default_max_tokens ? (left > 1 ? left : 1) : svc->default_max_tokens;
}

static mxl_status job_create(mxl_service *svc, const mxl_job_request *req,
                             const mxl_ids *forced, mxl_job **out) {
  mxl_job *j = calloc(1, sizeof *j);
  if (!j) return mxl_errorf(MXL_ERR_MEMORY, "request: out of memory");
  j->svc = svc;
  j->chat = req->chat;
  pthread_mutex_init(&j->mu, NULL);
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&j->cv, &attr);
  pthread_condattr_destroy(&attr);
  int n_stop = req->n_stop < MXL_REQUEST_MAX_STOP ? req->n_stop : MXL_REQUEST_MAX_STOP;
  for (int i = 0; i < n_stop; i++)
    if (!(j->stops[i] = strdup(req->stop[i]))) {
      *out = j;
      return mxl_errorf(MXL_ERR_MEMORY, "request: out of memory");
    }
  mxl_reply_init(&j->reply, svc->tok, &svc->chat_ids, req->chat, (const char *const *)j->stops,
                 n_stop, svc->raw_stops, svc->n_raw_stops);
  if (req->chat && req->tools) mxl_reply_parse_calls(&j->reply);
  mxl_reply_seed(&j->reply, forced->data, (int)forced->n);
  *out = j;
  return MXL_OK;
}

static void job_destroy(mxl_job *j) {
  for (int i = 0; i < MXL_REQUEST_MAX_STOP; i++) free(j->stops[i]);
  mxl_reply_free(&j->reply);
  free(j->inbox);
  free(j->taken);
  pthread_cond_destroy(&j->cv);
  pthread_mutex_destroy(&j->mu);
  free(j);
}

mxl_status mxl_job_start(mxl_service *svc, const mxl_job_request *req, mxl_job **out) {
  *out = NULL;
  for (int i = 0; i < req->n_stop; i++)
    if (!req->stop[i] || !req->stop[i][0])
      return mxl_errorf(MXL_ERR_ARGUMENT, "request: stop string %d is empty", i);
  if (req->n_stop > MXL_REQUEST_MAX_STOP)
    return mxl_errorf(MXL_ERR_ARGUMENT, "request: %d stop strings (at most %d)", req->n_stop,
                      MXL_REQUEST_MAX_STOP);
  mxl_request_adapter adapters[MXL_REQUEST_MAX_ADAPTERS];
  int n_adapters = 0;
  mxl_ids prompt = {0}, forced = {0}; /* forced: the end of the prompt that opens the reply */
  mxl_job *j = NULL;
  mxl_status st = acquire_adapters(svc, req, adapters, &n_adapters);
  if (st == MXL_OK) st = build_prompt(svc, req, &prompt, &forced);
  if (st == MXL_OK) st = job_create(svc, req, &forced, &j);
  if (st == MXL_OK) {
    mxl_request r;
    mxl_request_defaults(&r);
    r.prompt = prompt.data;
    r.n_prompt = (int)prompt.n;
    r.adapters = adapters;
    r.n_adapters = n_adapters;
    const mxl_job_sampling *sp = &req->sampling;
    r.temperature = sp->temperature;
    r.top_p = sp->top_p;
    r.min_p = sp->min_p;
    r.repetition_penalty = sp->repetition_penalty;
    r.top_k = sp->top_k;
    r.seed = sp->seed;
    r.max_tokens = choose_max_tokens(svc, req, (int)prompt.n);
    int32_t chat_stops[2] = {svc->chat_ids.ret, svc->chat_ids.call};
    r.stop_ids = req->chat ? chat_stops : svc->raw_stops;
    r.n_stop = req->chat ? 2 : svc->n_raw_stops;
    r.on_event = on_event;
    r.user = j;
    j->n_prompt = (int)prompt.n;
    st = mxl_scheduler_submit(svc->sched, &r, &j->id);
  }
  release_adapters(adapters, n_adapters); /* the scheduler holds its own */
  mxl_ids_free(&prompt);
  mxl_ids_free(&forced);
  if (st != MXL_OK) {
    if (j) job_destroy(j); /* never submitted: no event will come */
    return st;
  }
  *out = j;
  return MXL_OK;
}

/* ---------------------------------------------------------------- reading */

/* Waits for tokens or the end (lock held); 0 on timeout. */
static int wait_inbox(mxl_job *j, int timeout_ms) {
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += timeout_ms / 1000;
  until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
  while (j->n_inbox == 0 && !j->ended) {
    if (timeout_ms < 0) {
      pthread_cond_wait(&j->cv, &j->mu);
    } else if (pthread_cond_timedwait(&j->cv, &j->mu, &until) == ETIMEDOUT) {
      return j->n_inbox > 0 || j->ended;
    }
  }
  return 1;
}

static mxl_job_finish finish_of(const mxl_job *j) {
  if (j->reply.stop_matched) return MXL_JOB_STOP;
  switch (j->final.finish) {
  case MXL_FINISH_STOP: return j->reply.n_calls ? MXL_JOB_TOOL_CALLS : MXL_JOB_STOP;
  case MXL_FINISH_LENGTH: return MXL_JOB_LENGTH;
  case MXL_FINISH_ERROR: return MXL_JOB_ERROR;
  default: return MXL_JOB_CANCELLED;
  }
}

static void fill_end(mxl_job *j, mxl_job_output *out) {
  out->finish = finish_of(j);
  out->prompt_tokens = j->n_prompt;
  out->cached_tokens = j->final.cached_tokens;
  out->generated_tokens = j->reply.stop_matched ? j->reply.tokens_at_stop
                                                : j->final.generated_tokens;
  out->queued_seconds = j->final.queued_seconds;
  out->first_token_seconds = j->final.first_token_seconds;
  out->total_seconds = j->final.total_seconds;
  out->status = j->final.status;
  out->message = j->message;
}

int mxl_job_next(mxl_job *j, int timeout_ms, mxl_job_output *out) {
  memset(out, 0, sizeof *out);
  mxl_reply_clear(&j->reply);
  if (j->end_reported) {
    fill_end(j, out);
    return 1;
  }
  pthread_mutex_lock(&j->mu);
  int got = wait_inbox(j, timeout_ms);
  /* Swap the inbox for the reader's buffer: the engine keeps appending to
   * the other one. */
  int32_t *tokens = j->inbox;
  int n = j->n_inbox, cap = j->cap_inbox;
  j->inbox = j->taken;
  j->cap_inbox = j->cap_taken;
  j->n_inbox = 0;
  j->taken = tokens;
  j->cap_taken = cap;
  int ended = j->ended;
  pthread_mutex_unlock(&j->mu);
  if (!got) return 0;
  mxl_reply *rp = &j->reply;
  for (int i = 0; i < n; i++)
    if (mxl_reply_push(rp, tokens[i])) mxl_job_cancel(j); /* a stop string: the rest is unwanted */
  if (ended) {
    mxl_reply_finish(rp);
    fill_end(j, out);
    j->end_reported = 1;
  }
  out->content = rp->content.data ? rp->content.data : "";
  out->content_len = rp->content.len;
  out->reasoning = rp->reasoning.data ? rp->reasoning.data : "";
  out->reasoning_len = rp->reasoning.len;
  for (int i = 0; i < rp->n_calls; i++) {
    const mxl_strbuf *a = &rp->calls[i].arguments;
    j->calls[i] = (mxl_job_call){rp->calls[i].name, a->data ? a->data : "", a->len};
  }
  out->calls = j->calls;
  out->n_calls = rp->n_calls;
  return 1;
}

void mxl_job_cancel(mxl_job *j) {
  if (j) mxl_scheduler_cancel(j->svc->sched, j->id); /* NOT_FOUND when it has ended */
  mxl_error_clear();
}

void mxl_job_free(mxl_job *j) {
  if (!j) return;
  pthread_mutex_lock(&j->mu);
  int ended = j->ended;
  pthread_mutex_unlock(&j->mu);
  if (!ended) mxl_job_cancel(j);
  pthread_mutex_lock(&j->mu);
  while (!j->ended) pthread_cond_wait(&j->cv, &j->mu);
  pthread_mutex_unlock(&j->mu);
  job_destroy(j);
}

int mxl_job_prompt_tokens(const mxl_job *j) { return j->n_prompt; }
