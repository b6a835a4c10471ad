/* The JSON of responses, stream chunks and the model list, in the shapes
 * OpenAI's API (and vLLM's, for gpt-oss reasoning) defines. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "core/utf8.h"
#include "server/api.h"

char *mxl_api_utf8_clean(const char *s, size_t n) {
  /* Each bad byte grows to at most three (EF BF BD). */
  char *out = malloc(3 * n + 1);
  if (!out) return NULL;
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    /* NUL too becomes U+FFFD: C strings (and cJSON) would end there. */
    const char *nul = memchr(s + i, '\0', n - i);
    size_t run = nul ? (size_t)(nul - (s + i)) : n - i;
    o += mxl_utf8_repair((const uint8_t *)s + i, run, out + o);
    i += run;
    if (nul) {
      memcpy(out + o, MXL_UTF8_REPLACEMENT, 3);
      o += 3;
      i++;
    }
  }
  out[o] = '\0';
  return out;
}

/* Adds s[0..n) as a clean UTF-8 string; 0 when out of memory. */
static int add_text(cJSON *obj, const char *key, const char *s, size_t n) {
  char *clean = mxl_api_utf8_clean(s ? s : "", s ? n : 0);
  cJSON *item = clean ? cJSON_CreateString(clean) : NULL;
  free(clean);
  return item && cJSON_AddItemToObject(obj, key, item);
}

static cJSON *head(const mxl_api_reply *r, int chunk) {
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "id", r->id);
  cJSON_AddStringToObject(root, "object", r->chat ? (chunk ? "chat.completion.chunk"
                                                           : "chat.completion")
                                                  : "text_completion");
  cJSON_AddNumberToObject(root, "created", (double)r->created);
  cJSON_AddStringToObject(root, "model", r->model);
  return root;
}

static void add_finish(cJSON *choice, const char *finish) {
  if (finish)
    cJSON_AddStringToObject(choice, "finish_reason", finish);
  else
    cJSON_AddNullToObject(choice, "finish_reason");
}

static void add_usage(cJSON *root, const mxl_api_usage *u) {
  if (!u) return;
  cJSON *usage = cJSON_AddObjectToObject(root, "usage");
  cJSON_AddNumberToObject(usage, "prompt_tokens", u->prompt_tokens);
  cJSON_AddNumberToObject(usage, "completion_tokens", u->completion_tokens);
  cJSON_AddNumberToObject(usage, "total_tokens", u->prompt_tokens + u->completion_tokens);
  cJSON *details = cJSON_AddObjectToObject(usage, "prompt_tokens_details");
  if (details) cJSON_AddNumberToObject(details, "cached_tokens", u->cached_tokens);
}

static char *print(cJSON *root, int ok) {
  char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
  cJSON_Delete(root);
  return text;
}

/* "tool_calls" as OpenAI shapes them: in a whole message every call with
 * its id; in a chunk the index, and id, type and name only in a call's
 * first chunk. */
static int add_calls(cJSON *msg, const mxl_api_delta *d, int whole) {
  cJSON *list = cJSON_AddArrayToObject(msg, "tool_calls");
  int ok = list != NULL;
  for (int i = 0; ok && i < d->n_calls; i++) {
    const mxl_api_tool_call *c = &d->calls[i];
    cJSON *call = cJSON_CreateObject();
    ok = call && cJSON_AddItemToArray(list, call);
    if (ok && !whole) ok = cJSON_AddNumberToObject(call, "index", c->index) != NULL;
    if (ok && c->id)
      ok = add_text(call, "id", c->id, strlen(c->id)) &&
           cJSON_AddStringToObject(call, "type", "function") != NULL;
    cJSON *fn = ok ? cJSON_AddObjectToObject(call, "function") : NULL;
    ok = fn != NULL;
    if (ok && c->id) ok = add_text(fn, "name", c->name, strlen(c->name));
    if (ok) ok = add_text(fn, "arguments", c->arguments, c->arguments_len);
  }
  return ok;
}

/* The message (or delta) of a chat choice; NULL fields are left out of a
 * delta, and a whole message always has "content" (null when it holds
 * only tool calls, as OpenAI's). */
static int add_message(cJSON *choice, const char *key, const mxl_api_delta *d, int whole) {
  cJSON *msg = cJSON_AddObjectToObject(choice, key);
  int ok = msg != NULL;
  if (ok && (whole || d->role)) ok = cJSON_AddStringToObject(msg, "role", "assistant") != NULL;
  if (ok && whole && d->n_calls && !d->content_len)
    ok = cJSON_AddNullToObject(msg, "content") != NULL;
  else if (ok && (whole || d->content))
    ok = add_text(msg, "content", d->content, d->content_len);
  if (ok && d->reasoning) ok = add_text(msg, "reasoning_content", d->reasoning, d->reasoning_len);
  if (ok && d->n_calls) ok = add_calls(msg, d, whole);
  return ok;
}

static char *build(const mxl_api_reply *r, const mxl_api_delta *d, int chunk) {
  cJSON *root = head(r, chunk);
  cJSON *choices = cJSON_AddArrayToObject(root, "choices");
  int ok = choices != NULL;
  if (ok && !(chunk && d->usage_only)) {
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, choice);
    cJSON_AddNumberToObject(choice, "index", 0);
    if (r->chat)
      ok = add_message(choice, chunk ? "delta" : "message", d, !chunk);
    else
      ok = add_text(choice, "text", d->content, d->content_len);
    cJSON_AddNullToObject(choice, "logprobs");
    add_finish(choice, d->finish);
  }
  add_usage(root, d->usage);
  return print(root, ok);
}

char *mxl_api_response_json(const mxl_api_reply *r, const mxl_api_delta *d) {
  return build(r, d, 0);
}

char *mxl_api_chunk_json(const mxl_api_reply *r, const mxl_api_delta *d) {
  return build(r, d, 1);
}

char *mxl_api_models_json(const mxl_api_model *models, int n) {
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "object", "list");
  cJSON *data = cJSON_AddArrayToObject(root, "data");
  for (int i = 0; i < n; i++) {
    const mxl_api_model *m = &models[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToArray(data, o);
    add_text(o, "id", m->id, strlen(m->id));
    cJSON_AddStringToObject(o, "object", "model");
    cJSON_AddNumberToObject(o, "created", (double)m->created);
    cJSON_AddStringToObject(o, "owned_by", "mxlora");
    const char *root_path = m->root ? m->root : m->id;
    add_text(o, "root", root_path, strlen(root_path));
    if (m->parent)
      cJSON_AddStringToObject(o, "parent", m->parent);
    else
      cJSON_AddNullToObject(o, "parent");
    cJSON_AddNumberToObject(o, "max_model_len", m->max_model_len);
    cJSON_AddArrayToObject(o, "permission");
  }
  return print(root, 1);
}
