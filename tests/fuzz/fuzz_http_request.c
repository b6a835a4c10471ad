/* libFuzzer target for what the server reads from a request: the JSON
 * bodies of chat/completions, completions and the adapter endpoints, and
 * the Authorization header. Any input must be refused with a 4xx error
 * whose JSON body parses, or give a request that keeps every bound (names,
 * stop strings, adapters, ranges) and whose conversation renders. Stop
 * strings from an accepted request are checked too: text fed in pieces
 * shows the same as text fed whole.
 *
 * Input: byte 0 picks the endpoint, the rest is the body (for the header:
 * "VALUE\nKEY"). Seeds: tests/fuzz/corpus/http_request. */
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/strbuf.h"
#include "server/api.h"
#include "server/stop.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok) {
  if (!ok) __builtin_trap();
}

static void check_error(const mxl_api_error *e) {
  check(e->http_status >= 400 && e->http_status < 600 && e->message[0]);
  char *json = mxl_api_error_json(e);
  cJSON *back = json ? cJSON_Parse(json) : NULL;
  check(back != NULL);
  cJSON_Delete(back);
  free(json);
}

/* What a client sees of `text` fed whole and fed in `split`-byte pieces. */
static void check_stops(const mxl_api_generation *g, const char *text, size_t n, size_t split) {
  mxl_strbuf whole = {0}, pieces = {0};
  mxl_stop_matcher a, b;
  mxl_stop_init(&a, (const char *const *)g->stop, g->n_stop);
  mxl_stop_init(&b, (const char *const *)g->stop, g->n_stop);
  int ma = mxl_stop_feed(&a, text, n, &whole), mb = 0;
  if (!ma) mxl_stop_flush(&a, &whole);
  for (size_t i = 0; i < n && !mb; i += split)
    mb = mxl_stop_feed(&b, text + i, n - i < split ? n - i : split, &pieces);
  if (!mb) mxl_stop_flush(&b, &pieces);
  check(ma == mb && whole.len == pieces.len &&
        (whole.len == 0 || !memcmp(whole.data, pieces.data, whole.len)));
  for (int i = 0; i < g->n_stop && whole.data; i++) check(!strstr(whole.data, g->stop[i]));
  mxl_stop_free(&a);
  mxl_stop_free(&b);
  mxl_strbuf_free(&whole);
  mxl_strbuf_free(&pieces);
}

static void check_generation(const mxl_api_generation *g, const char *body, size_t n) {
  check(mxl_api_name_valid(g->model));
  check(g->n_stop <= MXL_API_MAX_STOP && g->n_adapters <= MXL_API_MAX_ADAPTERS);
  for (int i = 0; i < g->n_stop; i++) check(g->stop[i][0] && strlen(g->stop[i]) <= 256);
  for (int i = 0; i < g->n_adapters; i++) check(mxl_api_name_valid(g->adapters[i].name));
  const mxl_job_sampling *sp = &g->sampling;
  check(sp->temperature >= 0 && sp->temperature <= 2 && sp->top_p > 0 && sp->top_p <= 1);
  check(g->max_tokens >= 0 && g->max_tokens <= 4096);
  check(g->chat ? g->conversation != NULL : g->prompt != NULL);
  check(!g->tools || (g->chat && strstr(g->conversation, "\"tools\":[")));
  /* The text round trip of a response carrying the body as content. */
  mxl_api_reply r = {g->chat, "id", g->model, 0};
  mxl_api_delta d = {0};
  d.content = body, d.content_len = n;
  char *json = mxl_api_response_json(&r, &d);
  cJSON *back = json ? cJSON_Parse(json) : NULL;
  check(back != NULL);
  cJSON_Delete(back);
  free(json);
  /* ... and of a tool call whose arguments are the body, whole and as a chunk */
  mxl_api_tool_call call = {0, "call_1", g->model, body, n};
  mxl_api_delta t = {0};
  t.calls = &call, t.n_calls = 1;
  for (int chunk = 0; chunk < 2 && g->chat; chunk++) {
    json = chunk ? mxl_api_chunk_json(&r, &t) : mxl_api_response_json(&r, &t);
    back = json ? cJSON_Parse(json) : NULL;
    check(back != NULL);
    cJSON_Delete(back);
    free(json);
  }
  check_stops(g, body, n, 1 + n % 7);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  const char *body = (const char *)data + 1;
  size_t n = size - 1;
  mxl_api_limits lim;
  mxl_api_limits_default(&lim);
  mxl_api_error e = {0};
  int which = data[0] % 6;
  if (which <= 1) {
    mxl_api_generation g;
    int rc = which == 0 ? mxl_api_parse_chat(body, n, &lim, &g, &e)
                        : mxl_api_parse_completion(body, n, &lim, &g, &e);
    if (rc == 0) check_generation(&g, body, n);
    else check_error(&e);
    mxl_api_generation_free(&g);
  } else if (which <= 4) {
    mxl_api_adapter_op op;
    mxl_api_adapter_action act = which == 2 ? MXL_API_LOAD : which == 3 ? MXL_API_UNLOAD
                                                                         : MXL_API_RELOAD;
    if (mxl_api_parse_adapter_op(act, body, n, &lim, &op, &e) == 0)
      check(mxl_api_name_valid(op.name) && (act != MXL_API_LOAD || op.path));
    else
      check_error(&e);
    mxl_api_adapter_op_free(&op);
  } else {
    char *text = malloc(n + 1);
    if (!text) return 0;
    memcpy(text, body, n);
    text[n] = '\0';
    char *nl = strchr(text, '\n');
    if (nl) {
      *nl = '\0';
      int ok = mxl_api_bearer_ok(text, nl + 1);
      /* A match means exactly "Bearer " + spaces + the key. */
      if (ok) check(strlen(nl + 1) > 0 && !strcmp(text + strlen(text) - strlen(nl + 1), nl + 1));
    }
    free(text);
  }
  return 0;
}
