/* Request bodies → validated structs (server/api.h). Every refusal names
 * the field at fault ("param") and says what was expected. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/json.h"
#include "core/strbuf.h"
#include "core/utf8.h"
#include "server/api.h"

/* The prefix of messages from core/json: "request: temperature: ...". */
#define SRC "request"

void mxl_api_limits_default(mxl_api_limits *lim) {
  lim->max_body = 1u << 20;
  lim->max_messages = 256;
  lim->max_tokens = 4096;
}

int mxl_api_name_valid(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > MXL_API_NAME_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)name[i];
    if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\') return 0;
  }
  return 1;
}

/* A failed core/json read: its message, the key as the param. */
static int field_fail(mxl_api_error *e, const char *key) {
  return mxl_api_fail(e, 400, key, "%s", mxl_last_error());
}

/* The body as a JSON object with unique keys. */
static int parse_body(const char *body, size_t n, cJSON **root, mxl_api_error *e) {
  *root = NULL;
  size_t bad = 0, i = 0;
  while (i < n && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n')) i++;
  if (i == n) return mxl_api_fail(e, 400, NULL, "the request body is empty: expected a JSON object");
  if (!mxl_utf8_valid(body, n, &bad))
    return mxl_api_fail(e, 400, NULL, "the request body is not valid UTF-8 (byte %zu)", bad + 1);
  if (mxl_json_nul_escape(body, n) != SIZE_MAX)
    return mxl_api_fail(e, 400, NULL, "a string in the request body contains \\u0000");
  if (mxl_json_parse(body, n, "request body", root) != MXL_OK)
    return mxl_api_fail(e, 400, NULL, "%s", mxl_last_error());
  if (!cJSON_IsObject(*root)) {
    mxl_api_fail(e, 400, NULL, "the request body is a JSON %s: expected an object",
                 mxl_json_type_name(*root));
    cJSON_Delete(*root);
    *root = NULL;
    return -1;
  }
  if (mxl_json_check_unique_keys(*root, SRC) != MXL_OK) {
    mxl_api_fail(e, 400, NULL, "%s", mxl_last_error());
    cJSON_Delete(*root);
    *root = NULL;
    return -1;
  }
  return 0;
}

/* Present and not null. */
static const cJSON *given(const cJSON *obj, const char *key) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
  return item && !cJSON_IsNull(item) ? item : NULL;
}

static int copy_name(const cJSON *obj, const char *key, int required, char *out,
                     mxl_api_error *e) {
  const char *s = NULL;
  if (mxl_json_opt_string(obj, key, NULL, &s, SRC) != MXL_OK) return field_fail(e, key);
  if (!s) return required ? mxl_api_fail(e, 400, key, "%s is required", key) : 0;
  if (!mxl_api_name_valid(s))
    return mxl_api_fail(e, 400, key,
                        "%s: expected 1 to %d printable ASCII characters without spaces, quotes "
                        "or backslashes",
                        key, MXL_API_NAME_MAX);
  strcpy(out, s);
  return 0;
}

/* ---------------------------------------------------------------- sampling */

static int float_in(const cJSON *obj, const char *key, float def, float lo, float hi,
                    int lo_open, float *out, mxl_api_error *e) {
  if (mxl_json_opt_float(obj, key, def, out, SRC) != MXL_OK) return field_fail(e, key);
  if (*out > hi || *out < lo || (lo_open && *out == lo))
    return mxl_api_fail(e, 400, key, "%s: %g is out of range: expected %s%g, %g]", key,
                        (double)*out, lo_open ? "(" : "[", (double)lo, (double)hi);
  return 0;
}

/* A field mxlora does not implement: accepted only at its neutral value. */
static int neutral_only(const cJSON *root, const char *key, double neutral, mxl_api_error *e) {
  const cJSON *item = given(root, key);
  if (!item) return 0;
  if (cJSON_IsNumber(item) && item->valuedouble == neutral) return 0;
  if (cJSON_IsBool(item) && cJSON_IsFalse(item) && neutral == 0) return 0;
  return mxl_api_fail(e, 400, key, "%s is not supported by this server (only %g)", key, neutral);
}

/* Present, not null and not empty (array, object or string). */
static int nonempty(const cJSON *item) {
  if (!item || cJSON_IsNull(item)) return 0;
  if (cJSON_IsArray(item) || cJSON_IsObject(item)) return item->child != NULL;
  if (cJSON_IsString(item)) return item->valuestring[0] != '\0';
  return 1;
}

/* The function a tool_choice names ({"type": "function", "function":
 * {"name": ...}}), or NULL. */
static const char *chosen_function(const cJSON *choice) {
  const cJSON *type = cJSON_IsObject(choice) ? cJSON_GetObjectItemCaseSensitive(choice, "type")
                                             : NULL;
  const cJSON *fn = cJSON_IsObject(choice) ? cJSON_GetObjectItemCaseSensitive(choice, "function")
                                           : NULL;
  const cJSON *name = cJSON_IsObject(fn) ? cJSON_GetObjectItemCaseSensitive(fn, "name") : NULL;
  return cJSON_IsString(type) && !strcmp(type->valuestring, "function") && cJSON_IsString(name)
             ? name->valuestring
             : NULL;
}

static int choice_is(const cJSON *choice, const char *value) {
  return cJSON_IsString(choice) && !strcmp(choice->valuestring, value);
}

/* Function tools are a chat feature. */
static int unsupported_features(const cJSON *root, int chat, mxl_api_error *e) {
  static const char *const lists[] = {"tools", "functions", "logit_bias"};
  for (size_t i = chat ? 1 : 0; i < sizeof lists / sizeof lists[0]; i++)
    if (nonempty(given(root, lists[i])))
      return mxl_api_fail(e, 400, lists[i], "%s is not supported by this server", lists[i]);
  const cJSON *choice = given(root, "tool_choice");
  int known = choice_is(choice, "none") || choice_is(choice, "auto") ||
              (chat && (choice_is(choice, "required") || chosen_function(choice)));
  if (choice && !known)
    return mxl_api_fail(e, 400, "tool_choice",
                        chat ? "tool_choice: expected \"auto\", \"none\", \"required\" or "
                               "{\"type\": \"function\", \"function\": {\"name\": ...}}"
                             : "tool_choice: only \"none\" or \"auto\" without tools is supported");
  const cJSON *parallel = given(root, "parallel_tool_calls");
  if (parallel && !cJSON_IsBool(parallel))
    return mxl_api_fail(e, 400, "parallel_tool_calls", "parallel_tool_calls: expected a boolean, "
                        "got %s", mxl_json_type_name(parallel));
  const cJSON *fmt = given(root, "response_format");
  if (fmt) {
    const cJSON *type = cJSON_IsObject(fmt) ? cJSON_GetObjectItemCaseSensitive(fmt, "type") : NULL;
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "text"))
      return mxl_api_fail(e, 400, "response_format",
                          "response_format: only {\"type\": \"text\"} is supported");
  }
  if (neutral_only(root, "presence_penalty", 0, e) || neutral_only(root, "frequency_penalty", 0, e) ||
      neutral_only(root, "n", 1, e) || neutral_only(root, "best_of", 1, e))
    return -1;
  return 0;
}

static int parse_stop(const cJSON *root, mxl_api_generation *g, mxl_api_error *e) {
  const cJSON *stop = given(root, "stop");
  if (!stop) return 0;
  const cJSON *one[1] = {stop};
  int n = cJSON_IsString(stop) ? 1 : cJSON_IsArray(stop) ? cJSON_GetArraySize(stop) : -1;
  if (n < 0)
    return mxl_api_fail(e, 400, "stop", "stop: expected a string or an array of strings, got %s",
                        mxl_json_type_name(stop));
  if (n > MXL_API_MAX_STOP)
    return mxl_api_fail(e, 400, "stop", "stop: %d strings, at most %d are allowed", n,
                        MXL_API_MAX_STOP);
  const cJSON *item = cJSON_IsString(stop) ? one[0] : stop->child;
  for (int i = 0; i < n; i++, item = item->next) {
    if (!cJSON_IsString(item))
      return mxl_api_fail(e, 400, "stop", "stop[%d]: expected a string, got %s", i,
                          mxl_json_type_name(item));
    size_t len = strlen(item->valuestring);
    if (len == 0 || len > MXL_API_STOP_MAX_LEN)
      return mxl_api_fail(e, 400, "stop", "stop[%d]: %zu bytes: expected 1 to %d", i, len,
                          MXL_API_STOP_MAX_LEN);
    if (!(g->stop[g->n_stop] = strdup(item->valuestring)))
      return mxl_api_fail(e, 503, NULL, "out of memory");
    g->n_stop++;
  }
  return 0;
}

static int parse_adapters(const cJSON *root, mxl_api_generation *g, mxl_api_error *e) {
  const cJSON *list = given(root, "adapters");
  if (!list) return 0;
  if (!cJSON_IsArray(list))
    return mxl_api_fail(e, 400, "adapters", "adapters: expected an array of {\"name\", \"scale\"}, "
                        "got %s", mxl_json_type_name(list));
  int i = 0;
  for (const cJSON *a = list->child; a; a = a->next, i++) {
    if (i == MXL_API_MAX_ADAPTERS)
      return mxl_api_fail(e, 400, "adapters", "adapters: at most %d per request",
                          MXL_API_MAX_ADAPTERS);
    char where[64];
    snprintf(where, sizeof where, "adapters[%d]", i);
    if (!cJSON_IsObject(a))
      return mxl_api_fail(e, 400, "adapters", "%s: expected an object {\"name\", \"scale\"}, got %s",
                          where, mxl_json_type_name(a));
    mxl_api_adapter *out = &g->adapters[i];
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(a, "name");
    if (!cJSON_IsString(name) || !mxl_api_name_valid(name->valuestring))
      return mxl_api_fail(e, 400, "adapters", "%s.name: expected an adapter's name (1 to %d "
                          "printable ASCII characters without spaces, quotes or backslashes)",
                          where, MXL_API_NAME_MAX);
    strcpy(out->name, name->valuestring);
    if (mxl_json_opt_float(a, "scale", 1.0f, &out->scale, where) != MXL_OK)
      return field_fail(e, "adapters");
    if (fabsf(out->scale) > 100.0f)
      return mxl_api_fail(e, 400, "adapters", "%s.scale: %g is out of range: expected [-100, 100]",
                          where, (double)out->scale);
    g->n_adapters = i + 1;
  }
  return 0;
}

static int parse_max_tokens(const cJSON *root, const mxl_api_limits *lim, mxl_api_generation *g,
                            mxl_api_error *e) {
  const char *key = given(root, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  int64_t v = 0;
  if (mxl_json_opt_int_range(root, key, INT32_MIN, INT32_MAX, 0, &v, SRC) != MXL_OK)
    return field_fail(e, key);
  if (!given(root, key)) return 0;
  if (v < 1) return mxl_api_fail(e, 400, key, "%s: %lld: expected at least 1", key, (long long)v);
  if (v > lim->max_tokens)
    return mxl_api_fail(e, 400, key, "%s: %lld is above this server's limit of %d", key,
                        (long long)v, lim->max_tokens);
  g->max_tokens = (int)v;
  return 0;
}

/* Everything but the prompt, shared by both endpoints. */
static int parse_common(const cJSON *root, const mxl_api_limits *lim, mxl_api_generation *g,
                        mxl_api_error *e) {
  if (copy_name(root, "model", 1, g->model, e)) return -1;
  if (unsupported_features(root, g->chat, e)) return -1;
  if (float_in(root, "temperature", 1.0f, 0.0f, 2.0f, 0, &g->sampling.temperature, e) ||
      float_in(root, "top_p", 1.0f, 0.0f, 1.0f, 1, &g->sampling.top_p, e) ||
      float_in(root, "min_p", 0.0f, 0.0f, 1.0f, 0, &g->sampling.min_p, e) ||
      float_in(root, "repetition_penalty", 1.0f, 0.0f, 10.0f, 1, &g->sampling.repetition_penalty, e))
    return -1;
  int64_t k = 0;
  if (mxl_json_opt_int_range(root, "top_k", -1, 1 << 30, 0, &k, SRC) != MXL_OK)
    return field_fail(e, "top_k");
  g->sampling.top_k = k < 0 ? 0 : (int)k;
  const double exact = 9007199254740992.0; /* integers beyond 2^53 were rounded by the parser */
  int64_t seed = 0;
  if (mxl_json_opt_int_range(root, "seed", -(int64_t)exact, (int64_t)exact, 0, &seed, SRC) != MXL_OK)
    return field_fail(e, "seed");
  g->sampling.seed = (uint64_t)seed;
  g->has_seed = given(root, "seed") != NULL;
  bool stream = false;
  if (mxl_json_opt_bool(root, "stream", false, &stream, SRC) != MXL_OK)
    return field_fail(e, "stream");
  g->stream = stream;
  const cJSON *so = NULL;
  if (mxl_json_opt_object(root, "stream_options", &so, SRC) != MXL_OK)
    return field_fail(e, "stream_options");
  bool usage = false;
  if (so && mxl_json_opt_bool(so, "include_usage", false, &usage, SRC ": stream_options") != MXL_OK)
    return field_fail(e, "stream_options");
  g->include_usage = usage;
  return parse_max_tokens(root, lim, g, e) || parse_stop(root, g, e) || parse_adapters(root, g, e);
}

/* ---------------------------------------------------------------- chat messages */

/* One OpenAI message → one message of the harmony renderer's sample
 * format (include/mxlora/data.h), which checks roles, content and tool
 * calls itself: the fields OpenAI clients send are kept, vLLM's
 * "reasoning_content" (or "reasoning") becomes "thinking", and harmony
 * header fields (channel, recipient, ...) are not taken from clients. */
static int normalize_message(const cJSON *m, int i, cJSON *dst, mxl_api_error *e) {
  if (!cJSON_IsObject(m))
    return mxl_api_fail(e, 400, "messages", "messages[%d]: expected an object, got %s", i,
                        mxl_json_type_name(m));
  static const char *const keep[] = {"role", "content", "tool_calls", "name", "tool_call_id"};
  for (size_t k = 0; k < sizeof keep / sizeof keep[0]; k++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, keep[k]);
    if (v) cJSON_AddItemToObject(dst, keep[k], cJSON_Duplicate(v, 1));
  }
  const cJSON *thinking = given(m, "reasoning_content");
  if (!thinking) thinking = given(m, "reasoning");
  if (thinking) cJSON_AddItemToObject(dst, "thinking", cJSON_Duplicate(thinking, 1));
  return 0;
}

/* The renderer's own checks (roles, order, content, tool calls, tools),
 * on the text alone: a conversation it refuses is the client's error. */
static int check_renders(const char *conversation, mxl_api_error *e) {
  mxl_render_options opts = {0};
  opts.mode = MXL_RENDER_PROMPT;
  mxl_rendered r = {0};
  mxl_status st = mxl_harmony_render_json(NULL, conversation, strlen(conversation), SRC, &opts, &r);
  mxl_rendered_free(&r);
  if (st == MXL_OK) return 0;
  return mxl_api_fail_status(e, st, strstr(mxl_last_error(), ": tools[") ? "tools" : "messages");
}

/* A function name as OpenAI allows it (^[a-zA-Z0-9_-]{1,64}$): the model
 * writes it back after "to=functions.", where a space, '.' or '<' would
 * end or split it. */
static int function_name_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > MXL_API_FUNCTION_NAME_MAX) return 0;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-') return 0;
  return 1;
}

/* `tools` (OpenAI's function tools) into the conversation for the renderer,
 * which puts them in the developer message as harmony does; with
 * tool_choice "none" they are left out, so that the model calls none. The
 * renderer checks the rest of each definition. tool_choice "required" or
 * a named function forces a call: its header ends the prompt (server/job.c),
 * so the model writes the name (required) and the arguments. */
static int add_tools(const cJSON *root, cJSON *conv, mxl_api_generation *g, mxl_api_error *e) {
  const cJSON *tools = given(root, "tools"), *choice = given(root, "tool_choice");
  const char *named = chosen_function(choice);
  int forced = named || choice_is(choice, "required");
  if (forced && !nonempty(tools))
    return mxl_api_fail(e, 400, "tool_choice", "tool_choice: a call is required but no tools "
                        "are given");
  if (!nonempty(tools) || choice_is(choice, "none")) return 0;
  if (!cJSON_IsArray(tools))
    return mxl_api_fail(e, 400, "tools", "tools: expected a list of tools, got %s",
                        mxl_json_type_name(tools));
  int k = 0, named_found = 0;
  for (const cJSON *t = tools->child; t; t = t->next, k++) {
    const cJSON *type = cJSON_IsObject(t) ? cJSON_GetObjectItemCaseSensitive(t, "type") : NULL;
    const cJSON *fn = cJSON_IsObject(t) ? cJSON_GetObjectItemCaseSensitive(t, "function") : NULL;
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "function") || !cJSON_IsObject(fn))
      return mxl_api_fail(e, 400, "tools", "tools[%d]: expected {\"type\": \"function\", "
                          "\"function\": {...}} (only function tools are supported)", k);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    if (!cJSON_IsString(name) || !function_name_ok(name->valuestring))
      return mxl_api_fail(e, 400, "tools", "tools[%d].function.name: expected 1 to %d letters, "
                          "digits, '_' or '-'", k, MXL_API_FUNCTION_NAME_MAX);
    if (named && !strcmp(named, name->valuestring)) named_found = 1;
  }
  if (named && !named_found)
    return mxl_api_fail(e, 400, "tool_choice", "tool_choice: function \"%.64s\" is not among "
                        "the tools", named);
  g->force_call = forced;
  snprintf(g->call, sizeof g->call, "%s", named ? named : "");
  if (!cJSON_AddItemToObject(conv, "tools", cJSON_Duplicate(tools, 1)))
    return mxl_api_fail(e, 503, NULL, "out of memory");
  g->tools = 1;
  return 0;
}

/* {"messages": [...], "reasoning_effort": ...} for the renderer. */
static int parse_conversation(const cJSON *root, const mxl_api_limits *lim, mxl_api_generation *g,
                              mxl_api_error *e) {
  const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
  if (!cJSON_IsArray(msgs))
    return mxl_api_fail(e, 400, "messages", "messages: expected an array of messages, got %s",
                        mxl_json_type_name(msgs));
  int n = cJSON_GetArraySize(msgs);
  if (n == 0) return mxl_api_fail(e, 400, "messages", "messages: at least one message is required");
  if (n > lim->max_messages)
    return mxl_api_fail(e, 400, "messages", "messages: %d messages, at most %d are allowed", n,
                        lim->max_messages);
  const char *effort = NULL;
  if (mxl_json_opt_string(root, "reasoning_effort", NULL, &effort, SRC) != MXL_OK)
    return field_fail(e, "reasoning_effort");
  if (effort && strcmp(effort, "low") && strcmp(effort, "medium") && strcmp(effort, "high"))
    return mxl_api_fail(e, 400, "reasoning_effort",
                        "reasoning_effort: \"%.32s\": expected low, medium or high", effort);
  cJSON *conv = cJSON_CreateObject(), *out = cJSON_AddArrayToObject(conv, "messages");
  int i = 0, rc = 0;
  for (const cJSON *m = msgs->child; m && !rc; m = m->next, i++) {
    cJSON *dst = cJSON_CreateObject();
    cJSON_AddItemToArray(out, dst);
    rc = normalize_message(m, i, dst, e);
  }
  if (!rc && effort) cJSON_AddStringToObject(conv, "reasoning_effort", effort);
  if (!rc) rc = add_tools(root, conv, g, e);
  if (!rc && !(g->conversation = cJSON_PrintUnformatted(conv)))
    rc = mxl_api_fail(e, 503, NULL, "out of memory");
  cJSON_Delete(conv);
  return rc ? rc : check_renders(g->conversation, e);
}

/* ---------------------------------------------------------------- entry points */

static int finish(cJSON *root, int rc, mxl_api_generation *g) {
  cJSON_Delete(root);
  if (rc) mxl_api_generation_free(g);
  return rc ? -1 : 0;
}

int mxl_api_parse_chat(const char *body, size_t n, const mxl_api_limits *lim,
                       mxl_api_generation *g, mxl_api_error *e) {
  memset(g, 0, sizeof *g);
  g->chat = 1;
  cJSON *root = NULL;
  if (parse_body(body, n, &root, e)) return -1;
  int rc = parse_common(root, lim, g, e);
  if (!rc && given(root, "logprobs") && !cJSON_IsFalse(given(root, "logprobs")))
    rc = mxl_api_fail(e, 400, "logprobs", "logprobs is not supported by this server");
  if (!rc && given(root, "top_logprobs"))
    rc = mxl_api_fail(e, 400, "top_logprobs", "top_logprobs is not supported by this server");
  if (!rc) rc = parse_conversation(root, lim, g, e);
  return finish(root, rc, g);
}

static int parse_prompt(const cJSON *root, mxl_api_generation *g, mxl_api_error *e) {
  const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
  if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && cJSON_IsString(p->child)) p = p->child;
  if (!cJSON_IsString(p))
    return mxl_api_fail(e, 400, "prompt", "prompt: expected a string (or an array of one string), "
                        "got %s", mxl_json_type_name(p));
  if (!(g->prompt = strdup(p->valuestring))) return mxl_api_fail(e, 503, NULL, "out of memory");
  return 0;
}

int mxl_api_parse_completion(const char *body, size_t n, const mxl_api_limits *lim,
                             mxl_api_generation *g, mxl_api_error *e) {
  memset(g, 0, sizeof *g);
  cJSON *root = NULL;
  if (parse_body(body, n, &root, e)) return -1;
  int rc = parse_common(root, lim, g, e);
  if (!rc && given(root, "logprobs"))
    rc = mxl_api_fail(e, 400, "logprobs", "logprobs is not supported by this server");
  if (!rc && given(root, "echo") && !cJSON_IsFalse(given(root, "echo")))
    rc = mxl_api_fail(e, 400, "echo", "echo is not supported by this server");
  if (!rc && nonempty(given(root, "suffix")))
    rc = mxl_api_fail(e, 400, "suffix", "suffix is not supported by this server");
  if (!rc) rc = parse_prompt(root, g, e);
  return finish(root, rc, g);
}

void mxl_api_generation_free(mxl_api_generation *g) {
  free(g->conversation);
  free(g->prompt);
  for (int i = 0; i < g->n_stop; i++) free(g->stop[i]);
  memset(g, 0, sizeof *g);
}

/* ---------------------------------------------------------------- adapters */

int mxl_api_parse_adapter_op(mxl_api_adapter_action action, const char *body, size_t n,
                             const mxl_api_limits *lim, mxl_api_adapter_op *op,
                             mxl_api_error *e) {
  (void)lim;
  memset(op, 0, sizeof *op);
  op->action = action;
  op->scale = 1.0f;
  op->pinned = -1;
  cJSON *root = NULL;
  if (parse_body(body, n, &root, e)) return -1;
  int rc = copy_name(root, "lora_name", 1, op->name, e);
  const char *path = NULL;
  if (!rc && mxl_json_opt_string(root, "lora_path", NULL, &path, SRC) != MXL_OK)
    rc = field_fail(e, "lora_path");
  if (!rc && action == MXL_API_LOAD && !path)
    rc = mxl_api_fail(e, 400, "lora_path", "lora_path is required");
  if (!rc && path && (!path[0] || strlen(path) > 4096))
    rc = mxl_api_fail(e, 400, "lora_path", "lora_path: expected 1 to 4096 bytes");
  if (!rc && path && !(op->path = strdup(path))) rc = mxl_api_fail(e, 503, NULL, "out of memory");
  bool inplace = false;
  if (!rc && mxl_json_opt_bool(root, "load_inplace", false, &inplace, SRC) != MXL_OK)
    rc = field_fail(e, "load_inplace");
  if (!rc && inplace && action == MXL_API_LOAD) op->action = MXL_API_RELOAD;
  if (!rc && float_in(root, "scale", 1.0f, -100.0f, 100.0f, 0, &op->scale, e)) rc = -1;
  bool pinned = false;
  if (!rc && mxl_json_opt_bool(root, "pinned", false, &pinned, SRC) != MXL_OK)
    rc = field_fail(e, "pinned");
  if (!rc && given(root, "pinned")) op->pinned = pinned;
  cJSON_Delete(root);
  if (rc) mxl_api_adapter_op_free(op);
  return rc ? -1 : 0;
}

void mxl_api_adapter_op_free(mxl_api_adapter_op *op) {
  free(op->path);
  op->path = NULL;
}

/* ---------------------------------------------------------------- auth */

int mxl_api_bearer_ok(const char *header, const char *key) {
  if (!header || !key || !key[0] || strncasecmp(header, "Bearer ", 7)) return 0;
  const char *token = header + 7;
  while (*token == ' ') token++;
  size_t nt = strlen(token), nk = strlen(key);
  /* Compare every byte of the key whatever the token, so the time says
   * nothing about where they differ. */
  unsigned diff = (unsigned)(nt != nk);
  for (size_t i = 0; i < nk; i++) diff |= (unsigned char)key[i] ^ (unsigned char)(i < nt ? token[i] : 0);
  return diff == 0;
}
