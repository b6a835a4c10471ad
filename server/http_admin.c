/* GET /v1/models, the adapter endpoints (vLLM's bodies and answers), and
 * GET /metrics in Prometheus' text format. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/http.h"

enum MHD_Result mxl_http_models(http_request *r) {
  mxl_service *svc = r->srv->svc;
  mxl_registry_entry *list = NULL;
  int n = 0;
  mxl_api_error e = {0};
  mxl_status st = mxl_registry_list(mxl_service_registry(svc), &list, &n);
  if (st != MXL_OK) {
    mxl_api_fail_status(&e, st, NULL);
    return mxl_http_send_error(r, &e);
  }
  mxl_api_model *models = calloc((size_t)n + 1, sizeof *models);
  char *json = NULL;
  if (models) {
    int64_t created = (int64_t)time(NULL);
    const char *base = mxl_service_model_id(svc);
    int ctx = mxl_service_max_context(svc);
    models[0] = (mxl_api_model){base, base, NULL, created, ctx};
    for (int i = 0; i < n; i++)
      models[i + 1] = (mxl_api_model){list[i].name, list[i].path, base, created, ctx};
    json = mxl_api_models_json(models, n + 1);
  }
  free(models);
  mxl_registry_list_free(list);
  if (!json) {
    mxl_api_fail(&e, 503, NULL, "out of memory");
    return mxl_http_send_error(r, &e);
  }
  enum MHD_Result ret = mxl_http_send(r, 200, "application/json", json, strlen(json));
  free(json);
  return ret;
}

/* ---------------------------------------------------------------- adapters */

static mxl_status apply(mxl_service *svc, const mxl_api_adapter_op *op, const char *path) {
  switch (op->action) {
  case MXL_API_LOAD: return mxl_service_load_adapter(svc, op->name, path, op->scale, op->pinned);
  case MXL_API_RELOAD: return mxl_service_reload_adapter(svc, op->name, path,
                                                         op->path ? op->scale : NAN, op->pinned);
  default: return mxl_service_unload_adapter(svc, op->name);
  }
}

/* vLLM answers these with plain text. */
enum MHD_Result mxl_http_adapter(http_request *r, mxl_api_adapter_action action) {
  mxl_server *srv = r->srv;
  mxl_api_adapter_op op;
  mxl_api_error e = {0};
  if (mxl_api_parse_adapter_op(action, r->body.data, r->body.len, &srv->lim, &op, &e))
    return mxl_http_send_error(r, &e);
  char *path = NULL;
  if (op.path && mxl_api_resolve_adapter_path(srv->adapter_dir, op.path, &path, &e)) {
    mxl_api_adapter_op_free(&op);
    return mxl_http_send_error(r, &e);
  }
  mxl_status st = apply(srv->svc, &op, path);
  enum MHD_Result ret;
  if (st != MXL_OK) {
    mxl_api_fail_status(&e, st, st == MXL_ERR_NOT_FOUND ? "lora_name" : NULL);
    ret = mxl_http_send_error(r, &e);
  } else {
    static const char *const done[] = {"added", "removed", "reloaded"};
    char text[256];
    int n = snprintf(text, sizeof text, "Success: LoRA adapter '%s' %s successfully.", op.name,
                     done[op.action == MXL_API_LOAD ? 0 : op.action == MXL_API_UNLOAD ? 1 : 2]);
    ret = mxl_http_send(r, 200, "text/plain; charset=utf-8", text, (size_t)n);
  }
  if (st == MXL_OK && srv->log) {
    char line[600];
    snprintf(line, sizeof line, "adapter %s %s%s%s", op.name,
             op.action == MXL_API_LOAD ? "loaded" : op.action == MXL_API_UNLOAD ? "unloaded"
                                                                                : "reloaded",
             path ? " from " : "", path ? path : "");
    srv->log(srv->log_user, line);
  }
  free(path);
  mxl_api_adapter_op_free(&op);
  return ret;
}

/* ---------------------------------------------------------------- metrics */

void mxl_http_rate_sample(mxl_server *srv) {
  mxl_scheduler_stats ss;
  mxl_scheduler_get_stats(mxl_service_scheduler(srv->svc), &ss);
  double now = mxl_http_now();
  pthread_mutex_lock(&srv->mu);
  int last = (srv->rate_next + RATE_SAMPLES - 1) % RATE_SAMPLES;
  if (srv->rate_count == 0 || now - srv->rate_time[last] >= 0.5) {
    srv->rate_time[srv->rate_next] = now;
    srv->rate_tokens[srv->rate_next] = ss.generated_tokens;
    srv->rate_next = (srv->rate_next + 1) % RATE_SAMPLES;
    if (srv->rate_count < RATE_SAMPLES) srv->rate_count++;
  }
  pthread_mutex_unlock(&srv->mu);
}

/* Generated tokens per second over the last ~10 s of samples. */
static double token_rate(mxl_server *srv, uint64_t total_now) {
  double now = mxl_http_now(), rate = 0;
  pthread_mutex_lock(&srv->mu);
  int best = -1;
  for (int k = 0; k < srv->rate_count; k++) {
    int i = (srv->rate_next + RATE_SAMPLES - 1 - k) % RATE_SAMPLES;
    best = i;
    if (now - srv->rate_time[i] >= 10.0) break;
  }
  if (best >= 0 && now - srv->rate_time[best] > 0.2)
    rate = (double)(total_now - srv->rate_tokens[best]) / (now - srv->rate_time[best]);
  pthread_mutex_unlock(&srv->mu);
  return rate;
}

static void metric(mxl_strbuf *b, const char *name, const char *type, const char *help,
                   double value) {
  mxl_strbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name,
                    value);
}

/* One counter with a label taking n values. */
static void labelled_counter(mxl_strbuf *b, const char *name, const char *help, const char *label,
                             const char *const *values, const uint64_t *counts, int n) {
  mxl_strbuf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
  for (int i = 0; i < n; i++)
    mxl_strbuf_printf(b, "%s{%s=\"%s\"} %llu\n", name, label, values[i],
                      (unsigned long long)counts[i]);
}

static const char *const ROUTE_NAMES[N_ROUTES] = {
    "/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions",
    "/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/v1/reload_lora_adapter", "/version",
    "other"};

static void request_counts(mxl_server *srv, mxl_strbuf *b) {
  mxl_strbuf_puts(b, "# HELP mxlora_http_requests_total HTTP requests answered, by route and "
                     "status.\n# TYPE mxlora_http_requests_total counter\n");
  pthread_mutex_lock(&srv->mu);
  for (int i = 0; i < N_ROUTES; i++)
    for (int s = 0; s < N_STATUS_SLOTS; s++)
      if (srv->requests[i][s]) {
        char status[8];
        if (s < N_STATUS_SLOTS - 1)
          snprintf(status, sizeof status, "%d", mxl_http_status_slots[s]);
        else
          snprintf(status, sizeof status, "other");
        mxl_strbuf_printf(b, "mxlora_http_requests_total{route=\"%s\",status=\"%s\"} %llu\n",
                          ROUTE_NAMES[i], status, (unsigned long long)srv->requests[i][s]);
      }
  uint64_t gens = srv->generations;
  double secs = srv->generation_seconds;
  int active = srv->active;
  pthread_mutex_unlock(&srv->mu);
  mxl_strbuf_printf(b, "# HELP mxlora_generation_request_seconds Time of generation requests, "
                       "arrival to last byte.\n# TYPE mxlora_generation_request_seconds summary\n"
                       "mxlora_generation_request_seconds_sum %.6f\n"
                       "mxlora_generation_request_seconds_count %llu\n",
                    secs, (unsigned long long)gens);
  metric(b, "mxlora_http_generations_in_flight", "gauge",
         "Generation requests being answered now.", active);
}

static void scheduler_metrics(mxl_server *srv, mxl_strbuf *b) {
  mxl_scheduler_stats s;
  mxl_scheduler_get_stats(mxl_service_scheduler(srv->svc), &s);
  metric(b, "mxlora_requests_running", "gauge", "Sequences in the running batch.", s.running);
  metric(b, "mxlora_requests_waiting", "gauge", "Requests in the queue.", s.queued);
  metric(b, "mxlora_kv_cache_bytes_used", "gauge", "KV cache reserved by admitted requests.",
         (double)s.kv_bytes_used);
  metric(b, "mxlora_kv_cache_bytes_total", "gauge", "The KV cache budget.",
         (double)s.kv_bytes_total);
  metric(b, "mxlora_kv_cache_usage_ratio", "gauge", "KV cache used over its budget.",
         s.kv_bytes_total ? (double)s.kv_bytes_used / (double)s.kv_bytes_total : 0);
  metric(b, "mxlora_prompt_tokens_total", "counter", "Prompt tokens prefilled.",
         (double)s.prompt_tokens);
  metric(b, "mxlora_prefix_cache_hits_total", "counter",
         "Requests that continued from a kept KV cache.", (double)s.prefix_hits);
  metric(b, "mxlora_prefix_cache_tokens_total", "counter",
         "Prompt tokens taken from kept KV caches instead of prefilled.",
         (double)s.prefix_tokens);
  metric(b, "mxlora_prefix_cache_whole_prompt_heads_total", "counter",
         "Requests whose whole prompt was kept for later prompts sharing its start (spare KV "
         "budget).",
         (double)s.heads_grown);
  metric(b, "mxlora_prefix_cache_bytes", "gauge",
         "KV cache kept for reuse (freed when a request needs it).", (double)s.kv_bytes_cached);
  metric(b, "mxlora_generation_tokens_total", "counter", "Tokens generated.",
         (double)s.generated_tokens);
  metric(b, "mxlora_generation_tokens_per_second", "gauge",
         "Tokens generated per second over the last 10 seconds.",
         token_rate(srv, s.generated_tokens));
  const char *names[] = {"submitted", "completed", "cancelled", "failed", "refused"};
  uint64_t counts[] = {s.submitted, s.completed, s.cancelled, s.failed, s.refused};
  labelled_counter(b, "mxlora_scheduler_requests_total", "Requests by outcome.", "outcome", names,
                   counts, 5);
  metric(b, "mxlora_scheduler_steps_total", "counter", "Forward passes run.", (double)s.steps);
  metric(b, "mxlora_scheduler_busy_seconds_total", "counter", "Time spent in steps with work.",
         s.busy_seconds);
}

static void registry_metrics(mxl_server *srv, mxl_strbuf *b) {
  mxl_registry_stats s;
  mxl_registry_get_stats(mxl_service_registry(srv->svc), &s);
  metric(b, "mxlora_adapters_loaded", "gauge", "Adapters registered by name.", s.adapters);
  metric(b, "mxlora_adapters_resident", "gauge", "Registered adapters in memory.", s.resident);
  metric(b, "mxlora_adapter_versions_live", "gauge",
         "Adapter versions in memory, old ones still in use included.", s.live_versions);
  metric(b, "mxlora_adapter_bytes", "gauge", "Bytes of adapter parameters in memory.",
         (double)s.bytes);
  metric(b, "mxlora_adapter_memory_budget_bytes", "gauge", "The adapter memory budget (0: none).",
         (double)s.max_memory);
  const char *names[] = {"load", "reload", "unload", "eviction", "failed_load"};
  uint64_t counts[] = {s.loads, s.reloads, s.unloads, s.evictions, s.failed_loads};
  labelled_counter(b, "mxlora_adapter_events_total", "Adapter registry events.", "event", names,
                   counts, 5);
}

enum MHD_Result mxl_http_metrics(http_request *r) {
  mxl_server *srv = r->srv;
  mxl_http_rate_sample(srv);
  mxl_strbuf b = {0};
  request_counts(srv, &b);
  scheduler_metrics(srv, &b);
  registry_metrics(srv, &b);
  metric(&b, "mxlora_uptime_seconds", "gauge", "Seconds since the server started.",
         mxl_http_now() - srv->started);
  enum MHD_Result ret;
  if (b.failed) {
    mxl_api_error e = {0};
    mxl_api_fail(&e, 503, NULL, "out of memory");
    ret = mxl_http_send_error(r, &e);
  } else {
    ret = mxl_http_send(r, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
  }
  mxl_strbuf_free(&b);
  return ret;
}
