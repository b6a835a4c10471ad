/* POST /v1/chat/completions and /v1/completions: a job per request,
 * answered whole or streamed as server-sent events in OpenAI's chunk
 * format. A client that goes away cancels its job. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/http.h"

/* Poll interval of a connection thread waiting for tokens: how soon a
 * vanished client or an abort is noticed. */
enum { WAIT_MS = 100 };

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* A seed for a request that names none: different for every request. */
static uint64_t fresh_seed(const http_request *r) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t s = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + (r->id << 32);
  return splitmix(&s);
}

/* "sql:0.7,tone:1" for the log line: the model's adapter, then the listed. */
static void describe_adapters(http_request *r) {
  mxl_service *svc = r->srv->svc;
  mxl_strbuf b = {0};
  if (strcmp(r->gen.model, mxl_service_model_id(svc)))
    mxl_strbuf_printf(&b, "%s:%g", r->gen.model,
                      (double)mxl_service_adapter_scale(svc, r->gen.model));
  for (int i = 0; i < r->gen.n_adapters; i++)
    mxl_strbuf_printf(&b, "%s%s:%g", b.len ? "," : "", r->gen.adapters[i].name,
                      (double)r->gen.adapters[i].scale);
  snprintf(r->adapters_desc, sizeof r->adapters_desc, "%s", b.data ? b.data : "");
  mxl_strbuf_free(&b);
}

static mxl_status start_job(http_request *r) {
  const mxl_api_generation *g = &r->gen;
  mxl_job_adapter adapters[MXL_API_MAX_ADAPTERS];
  for (int i = 0; i < g->n_adapters; i++) {
    adapters[i].name = g->adapters[i].name;
    adapters[i].scale = g->adapters[i].scale;
  }
  mxl_job_request jr;
  mxl_job_request_defaults(&jr);
  jr.model = g->model;
  jr.adapters = adapters;
  jr.n_adapters = g->n_adapters;
  jr.chat = g->chat;
  jr.conversation = g->conversation;
  jr.prompt = g->prompt;
  jr.sampling = g->sampling;
  if (!g->has_seed) jr.sampling.seed = fresh_seed(r);
  jr.max_tokens = g->max_tokens;
  jr.stop = (const char *const *)g->stop;
  jr.n_stop = g->n_stop;
  jr.tools = g->tools;
  jr.call = g->force_call ? g->call : NULL;
  return mxl_job_start(r->srv->svc, &jr, &r->job);
}

/* The job's failure or cancellation as an error for the client. */
static void job_error(const mxl_job_output *o, mxl_api_error *e) {
  if (o->finish == MXL_JOB_ERROR)
    mxl_api_fail(e, 500, NULL, "generation failed: %s", o->message);
  else
    mxl_api_fail(e, 503, NULL, "the request was cancelled (the server is shutting down)");
}

static void record_end(http_request *r, const mxl_job_output *o) {
  r->prompt_tokens = o->prompt_tokens;
  r->cached_tokens = o->cached_tokens;
  r->generated_tokens = o->generated_tokens;
  r->finish = mxl_job_finish_name(o->finish);
}

/* Waits for the next output, cancelling the job when the client is gone
 * or the server aborts. */
static void next_output(http_request *r, mxl_job_output *o) {
  while (!mxl_job_next(r->job, WAIT_MS, o))
    if (mxl_http_client_gone(r) || atomic_load(&r->srv->aborting)) mxl_job_cancel(r->job);
}

/* Gives the calls that appeared since the last output their ids ("call_"
 * and 24 hex digits, fresh per call as OpenAI's). */
static void name_calls(http_request *r, const mxl_job_output *o) {
  for (; r->n_calls_seen < o->n_calls; r->n_calls_seen++) {
    uint64_t s = fresh_seed(r) + (uint64_t)r->n_calls_seen;
    snprintf(r->call_ids[r->n_calls_seen], sizeof r->call_ids[0], "call_%016llx%08llx",
             (unsigned long long)splitmix(&s), (unsigned long long)(splitmix(&s) >> 32));
  }
}

/* ---------------------------------------------------------------- whole */

static enum MHD_Result answer_whole(http_request *r) {
  mxl_strbuf content = {0}, reasoning = {0};
  mxl_job_output o;
  mxl_api_tool_call calls[MXL_JOB_MAX_CALLS];
  int n_calls = 0;
  do {
    next_output(r, &o);
    mxl_strbuf_append(&content, o.content, o.content_len);
    mxl_strbuf_append(&reasoning, o.reasoning, o.reasoning_len);
    name_calls(r, &o);
    n_calls = o.n_calls; /* every output lists every call so far */
    for (int i = 0; i < n_calls; i++)
      calls[i] = (mxl_api_tool_call){i, r->call_ids[i], o.calls[i].name, o.calls[i].arguments,
                                     o.calls[i].arguments_len};
  } while (o.finish == MXL_JOB_RUNNING);
  record_end(r, &o);
  enum MHD_Result ret;
  mxl_api_error e = {0};
  if (o.finish == MXL_JOB_ERROR || o.finish == MXL_JOB_CANCELLED) {
    job_error(&o, &e);
    ret = mxl_http_send_error(r, &e);
  } else {
    mxl_api_usage u = {o.prompt_tokens, o.generated_tokens, o.cached_tokens};
    mxl_api_delta d = {0};
    d.content = content.data ? content.data : "";
    d.content_len = content.len;
    if (r->gen.chat && reasoning.len) {
      d.reasoning = reasoning.data;
      d.reasoning_len = reasoning.len;
    }
    d.finish = r->finish;
    d.usage = &u;
    d.calls = calls;
    d.n_calls = n_calls;
    char *json = content.failed || reasoning.failed ? NULL : mxl_api_response_json(&r->reply, &d);
    if (json) {
      ret = mxl_http_send(r, 200, "application/json", json, strlen(json));
    } else {
      mxl_api_fail(&e, 503, NULL, "out of memory for the response");
      ret = mxl_http_send_error(r, &e);
    }
    free(json);
  }
  mxl_strbuf_free(&content);
  mxl_strbuf_free(&reasoning);
  return ret;
}

/* ---------------------------------------------------------------- streamed */

static void sse(mxl_strbuf *out, const char *json) {
  mxl_strbuf_puts(out, "data: ");
  mxl_strbuf_puts(out, json ? json : "{\"error\":{\"message\":\"out of memory\"}}");
  mxl_strbuf_puts(out, "\n\n");
}

static void chunk(http_request *r, const mxl_api_delta *d) {
  char *json = mxl_api_chunk_json(&r->reply, d);
  sse(&r->pending, json);
  free(json);
}

/* The calls' new parts as one chunk: a new call with its id and name,
 * then the arguments not sent yet. */
static void stream_calls(http_request *r, const mxl_job_output *o) {
  int first_new = r->n_calls_seen;
  name_calls(r, o);
  mxl_api_tool_call parts[MXL_JOB_MAX_CALLS];
  int n = 0;
  for (int i = 0; i < o->n_calls; i++) {
    const mxl_job_call *c = &o->calls[i];
    int fresh = i >= first_new;
    if (!fresh && c->arguments_len == r->call_sent[i]) continue;
    parts[n++] = (mxl_api_tool_call){i, fresh ? r->call_ids[i] : NULL, c->name,
                                     c->arguments + r->call_sent[i],
                                     c->arguments_len - r->call_sent[i]};
    r->call_sent[i] = c->arguments_len;
  }
  if (!n) return;
  mxl_api_delta d = {0};
  d.calls = parts;
  d.n_calls = n;
  chunk(r, &d);
}

/* Appends the next events to r->pending (may add nothing when the wait
 * ran out). */
static void stream_more(http_request *r) {
  if (r->stream_state == 0) {
    r->stream_state = 1;
    if (r->gen.chat) {
      mxl_api_delta d = {0};
      d.role = 1;
      d.content = "";
      chunk(r, &d);
      return;
    }
  }
  mxl_job_output o;
  next_output(r, &o);
  mxl_api_delta d = {0};
  if (o.content_len) d.content = o.content, d.content_len = o.content_len;
  if (o.reasoning_len && r->gen.chat) d.reasoning = o.reasoning, d.reasoning_len = o.reasoning_len;
  if (d.content || d.reasoning) chunk(r, &d);
  stream_calls(r, &o);
  if (o.finish == MXL_JOB_RUNNING) return;
  record_end(r, &o);
  mxl_api_usage u = {o.prompt_tokens, o.generated_tokens, o.cached_tokens};
  if (o.finish == MXL_JOB_ERROR || o.finish == MXL_JOB_CANCELLED) {
    mxl_api_error e = {0};
    job_error(&o, &e);
    char *json = mxl_api_error_json(&e);
    sse(&r->pending, json);
    free(json);
  } else {
    mxl_api_delta end = {0};
    end.finish = r->finish;
    end.usage = &u; /* every stream ends with its counts */
    chunk(r, &end);
    if (r->gen.include_usage) {
      mxl_api_delta last = {0};
      last.usage = &u;
      last.usage_only = 1;
      chunk(r, &last);
    }
  }
  mxl_strbuf_puts(&r->pending, "data: [DONE]\n\n");
  r->stream_state = 2;
}

/* MHD's content reader: blocks (this connection's thread) until events
 * are ready. */
static ssize_t read_stream(void *cls, uint64_t pos, char *buf, size_t max) {
  (void)pos;
  http_request *r = cls;
  while (r->pending_off == r->pending.len) {
    if (r->stream_state == 2) return MHD_CONTENT_READER_END_OF_STREAM;
    mxl_strbuf_clear(&r->pending);
    r->pending_off = 0;
    stream_more(r);
    if (r->pending.failed) return MHD_CONTENT_READER_END_WITH_ERROR;
  }
  size_t n = r->pending.len - r->pending_off;
  if (n > max) n = max;
  memcpy(buf, r->pending.data + r->pending_off, n);
  r->pending_off += n;
  return (ssize_t)n;
}

static enum MHD_Result answer_stream(http_request *r) {
  struct MHD_Response *resp =
      MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, read_stream, r, NULL);
  if (!resp) return MHD_NO;
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
  r->status = 200;
  enum MHD_Result ret = MHD_queue_response(r->conn, 200, resp);
  MHD_destroy_response(resp);
  return ret;
}

/* ---------------------------------------------------------------- entry */

enum MHD_Result mxl_http_generate(http_request *r) {
  mxl_server *srv = r->srv;
  mxl_api_error e = {0};
  int chat = r->route == ROUTE_CHAT;
  int rc = chat ? mxl_api_parse_chat(r->body.data, r->body.len, &srv->lim, &r->gen, &e)
                : mxl_api_parse_completion(r->body.data, r->body.len, &srv->lim, &r->gen, &e);
  if (rc) return mxl_http_send_error(r, &e);
  describe_adapters(r);
  if (!mxl_http_begin_active(r)) {
    mxl_api_fail(&e, 503, NULL, "the server is shutting down");
    return mxl_http_send_error(r, &e);
  }
  mxl_status st = start_job(r);
  if (st != MXL_OK) {
    const char *param = st == MXL_ERR_NOT_FOUND && !strncmp(mxl_last_error(), "adapters", 8)
                            ? "adapters" : st == MXL_ERR_NOT_FOUND ? "model" : NULL;
    mxl_api_fail_status(&e, st, param);
    return mxl_http_send_error(r, &e);
  }
  snprintf(r->reply_id, sizeof r->reply_id, "%s-%016llx%08llx", chat ? "chatcmpl" : "cmpl",
           (unsigned long long)fresh_seed(r), (unsigned long long)r->id);
  r->reply.chat = chat;
  r->reply.id = r->reply_id;
  r->reply.model = r->gen.model;
  r->reply.created = (int64_t)time(NULL);
  return r->gen.stream ? answer_stream(r) : answer_whole(r);
}
