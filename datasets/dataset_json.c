/* Dataset JSON → harmony conversation, and rendering one sample.
 *
 * The mapping (documented in include/mxlora/data.h): a leading system or
 * developer message becomes the developer instructions; an assistant
 * message becomes, in order, an analysis message (its "thinking"), a
 * commentary preamble (content next to tool calls), one message per tool
 * call (`to=functions.NAME`, commentary, `<|constrain|>json`), or a final
 * answer; a tool message is authored by `functions.NAME` and addressed to
 * the assistant on the commentary channel. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/status.h"
#include "core/utf8.h"
#include "datasets/dataset.h"
#include "datasets/harmony.h"

/* ------------------------------------------------------------------ JSON text */

mxl_status mxl_parse_json_text(const char *s, size_t n, const char *where, cJSON **out) {
  *out = NULL;
  size_t bad = 0;
  if (!mxl_utf8_valid(s, n, &bad))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: invalid UTF-8 at byte %zu of the line", where,
                      bad + 1);
  if (mxl_json_nul_escape(s, n) != SIZE_MAX)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: a string contains \\u0000 (NUL is not allowed)",
                      where);
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(s, n, &end, 0);
  if (!root) {
    size_t at = end && end >= s && end <= s + n ? (size_t)(end - s) : 0;
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s at byte %zu", where,
                      mxl_json_error_name(s, n, at), at + 1);
  }
  for (const char *p = end; p && p < s + n; p++)
    if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
      cJSON_Delete(root);
      return mxl_errorf(MXL_ERR_FORMAT, "%s: unexpected text after the JSON value at byte %zu",
                        where, (size_t)(p - s) + 1);
    }
  *out = root;
  return MXL_OK;
}

/* ------------------------------------------------------------------ fields */

/* What the reader of one sample carries along. */
typedef struct reader {
  const char *where;         /* "file:line" */
  mxl_conversation *conv;
  int src;                   /* index of the next dataset message */
  int seen_chat;             /* a user/assistant/tool message was read */
  char last_call[256];       /* name of the latest tool call */
  const cJSON *calls[64];    /* tool calls with ids, for tool_call_id lookups */
  int n_calls;
} reader;

/* "where: field: problem" */
static mxl_status field_error(const reader *rd, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static mxl_status field_error(const reader *rd, const char *field, const char *fmt, ...) {
  char problem[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(problem, sizeof problem, fmt, ap);
  va_end(ap);
  return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: %s", rd->where, field, problem);
}

/* An optional string field: absent or null gives NULL. */
static mxl_status opt_string(const reader *rd, const cJSON *obj, const char *key,
                             const char *path, const char **out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  *out = NULL;
  if (!v || cJSON_IsNull(v)) return MXL_OK;
  if (!cJSON_IsString(v)) {
    char field[96];
    snprintf(field, sizeof field, "%s%s", path, key);
    return field_error(rd, field, "expected a string, got %s", mxl_json_type_name(v));
  }
  *out = v->valuestring;
  return MXL_OK;
}

/* Message content: a string, null/absent (NULL), or a list of parts
 * ({"type": "text", "text": ...} or plain strings) joined together. The
 * result is malloc'd in *out (NULL when absent). */
static mxl_status read_content(const reader *rd, const cJSON *msg, const char *path,
                               char **out) {
  *out = NULL;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(msg, "content");
  char field[96];
  snprintf(field, sizeof field, "%scontent", path);
  if (!v || cJSON_IsNull(v)) return MXL_OK;
  if (cJSON_IsString(v)) {
    *out = strdup(v->valuestring);
    return *out ? MXL_OK : mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", rd->where);
  }
  if (!cJSON_IsArray(v))
    return field_error(rd, field, "expected a string or a list of text parts, got %s",
                       mxl_json_type_name(v));
  size_t total = 0;
  int k = 0;
  for (const cJSON *part = v->child; part; part = part->next, k++) {
    const cJSON *t = cJSON_IsString(part) ? part : cJSON_GetObjectItemCaseSensitive(part, "text");
    if (!cJSON_IsString(t)) {
      char pf[112];
      snprintf(pf, sizeof pf, "%s[%d]", field, k);
      return field_error(rd, pf, "expected a string or {\"type\": \"text\", \"text\": ...}");
    }
    total += strlen(t->valuestring);
  }
  char *s = malloc(total + 1);
  if (!s) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", rd->where);
  size_t n = 0;
  for (const cJSON *part = v->child; part; part = part->next) {
    const cJSON *t = cJSON_IsString(part) ? part : cJSON_GetObjectItemCaseSensitive(part, "text");
    size_t len = strlen(t->valuestring);
    memcpy(s + n, t->valuestring, len);
    n += len;
  }
  s[n] = '\0';
  *out = s;
  return MXL_OK;
}

/* Content that must be there: absent or null is an error. */
static mxl_status read_required_content(const reader *rd, const cJSON *msg, const char *path,
                                        char **out) {
  MXL_TRY(read_content(rd, msg, path, out));
  if (*out) return MXL_OK;
  char field[96];
  snprintf(field, sizeof field, "%scontent", path);
  return field_error(rd, field, "missing");
}

static mxl_status parse_role(const reader *rd, const cJSON *msg, const char *path,
                             mxl_role *out) {
  static const char *const names[] = {"system", "developer", "user", "assistant", "tool"};
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(msg, "role");
  char field[96];
  snprintf(field, sizeof field, "%srole", path);
  if (!v) return field_error(rd, field, "missing");
  if (!cJSON_IsString(v))
    return field_error(rd, field, "expected a string, got %s", mxl_json_type_name(v));
  for (int i = 0; i < 5; i++)
    if (!strcmp(v->valuestring, names[i])) {
      *out = (mxl_role)i;
      return MXL_OK;
    }
  return field_error(rd, field,
                     "unknown role '%.60s' (expected system, developer, user, assistant or tool)",
                     v->valuestring);
}

/* "functions.NAME" for a bare function name; a dotted name is kept. */
static void qualified_name(const char *name, char *buf, size_t cap) {
  snprintf(buf, cap, strchr(name, '.') ? "%s" : "functions.%s", name);
}

/* ------------------------------------------------------------------ messages */

static mxl_status read_instructions(reader *rd, const cJSON *msg, const char *path) {
  if (rd->seen_chat || rd->conv->instructions)
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: %.*s: a system or developer message may only come once, first",
                      rd->where, (int)strlen(path) - 1, path); /* path ends in '.' */
  char *content = NULL;
  MXL_TRY(read_required_content(rd, msg, path, &content));
  rd->conv->instructions = content;
  return MXL_OK;
}

/* Arguments of a tool call: a JSON string as is, an object compact. */
static mxl_status call_arguments(const reader *rd, const cJSON *fn, const char *path,
                                 char **out) {
  const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
  if (!args || cJSON_IsNull(args)) {
    *out = strdup("{}");
  } else if (cJSON_IsString(args)) {
    *out = strdup(args->valuestring);
  } else if (cJSON_IsObject(args) || cJSON_IsArray(args)) {
    *out = cJSON_PrintUnformatted(args);
  } else {
    char field[256];
    snprintf(field, sizeof field, "%sarguments", path);
    return field_error(rd, field, "expected a JSON string or object, got %s",
                       mxl_json_type_name(args));
  }
  return *out ? MXL_OK : mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", rd->where);
}

static mxl_status read_tool_calls(reader *rd, const cJSON *calls, const char *path) {
  int k = 0;
  for (const cJSON *call = calls->child; call; call = call->next, k++) {
    char cpath[128];
    snprintf(cpath, sizeof cpath, "%stool_calls[%d]", path, k);
    if (!cJSON_IsObject(call))
      return field_error(rd, cpath, "expected an object, got %s", mxl_json_type_name(call));
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(call, "function");
    char fpath[160];
    snprintf(fpath, sizeof fpath, "%s.%s", cpath, fn ? "function." : "");
    if (fn && !cJSON_IsObject(fn))
      return field_error(rd, cpath, "function: expected an object, got %s", mxl_json_type_name(fn));
    if (!fn) fn = call;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    if (!cJSON_IsString(name) || !name->valuestring[0]) {
      char field[176];
      snprintf(field, sizeof field, "%sname", fpath);
      return field_error(rd, field, "expected the function's name, got %s",
                         mxl_json_type_name(name));
    }
    char *args = NULL;
    MXL_TRY(call_arguments(rd, fn, fpath, &args));
    char recipient[300];
    qualified_name(name->valuestring, recipient, sizeof recipient);
    mxl_status st = mxl_conversation_add(rd->conv, MXL_ROLE_ASSISTANT, NULL, recipient,
                                         "commentary", "<|constrain|>json", args, rd->src);
    free(args);
    MXL_TRY(st);
    snprintf(rd->last_call, sizeof rd->last_call, "%s", name->valuestring);
    if (rd->n_calls < 64) rd->calls[rd->n_calls++] = call;
  }
  return MXL_OK;
}

static mxl_status read_assistant(reader *rd, const cJSON *msg, const char *path) {
  const char *thinking, *channel, *recipient, *content_type, *name;
  MXL_TRY(opt_string(rd, msg, "thinking", path, &thinking));
  MXL_TRY(opt_string(rd, msg, "channel", path, &channel));
  MXL_TRY(opt_string(rd, msg, "recipient", path, &recipient));
  MXL_TRY(opt_string(rd, msg, "content_type", path, &content_type));
  MXL_TRY(opt_string(rd, msg, "name", path, &name));
  const cJSON *calls = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");
  if (calls && !cJSON_IsNull(calls) && !cJSON_IsArray(calls)) {
    char field[112];
    snprintf(field, sizeof field, "%stool_calls", path);
    return field_error(rd, field, "expected a list, got %s", mxl_json_type_name(calls));
  }
  int has_calls = cJSON_IsArray(calls) && calls->child != NULL;
  char *content = NULL;
  MXL_TRY(read_content(rd, msg, path, &content));
  int has_content = content && (content[0] || channel);
  int first = rd->conv->n_msgs;
  mxl_status st = MXL_OK;
  if (!has_content && !has_calls && !(thinking && thinking[0]))
    st = mxl_errorf(MXL_ERR_FORMAT,
                    "%s: %.*s: an assistant message needs content, thinking or tool_calls",
                    rd->where, (int)strlen(path) - 1, path); /* path without its '.' */
  if (!st && thinking && thinking[0])
    st = mxl_conversation_add(rd->conv, MXL_ROLE_ASSISTANT, name, NULL, "analysis", NULL,
                              thinking, rd->src);
  if (!st && has_content) {
    const char *ch = channel ? channel : has_calls ? "commentary" : "final";
    st = mxl_conversation_add(rd->conv, MXL_ROLE_ASSISTANT, name, recipient, ch,
                              content_type, content, rd->src);
  }
  free(content);
  if (!st && has_calls) st = read_tool_calls(rd, calls, path);
  for (int i = first; i < rd->conv->n_msgs; i++) rd->conv->msgs[i].from_tool_call = has_calls;
  return st;
}

/* The function a tool message answers: its "name", else the call its
 * "tool_call_id" names, else the latest call. */
static const char *tool_function(const reader *rd, const cJSON *msg) {
  const cJSON *name = cJSON_GetObjectItemCaseSensitive(msg, "name");
  if (cJSON_IsString(name) && name->valuestring[0]) return name->valuestring;
  const cJSON *id = cJSON_GetObjectItemCaseSensitive(msg, "tool_call_id");
  if (cJSON_IsString(id))
    for (int i = 0; i < rd->n_calls; i++) {
      const cJSON *cid = cJSON_GetObjectItemCaseSensitive(rd->calls[i], "id");
      const cJSON *fn = cJSON_GetObjectItemCaseSensitive(rd->calls[i], "function");
      const cJSON *fname = cJSON_GetObjectItemCaseSensitive(fn ? fn : rd->calls[i], "name");
      if (cJSON_IsString(cid) && !strcmp(cid->valuestring, id->valuestring))
        return fname->valuestring;
    }
  return rd->last_call[0] ? rd->last_call : NULL;
}

static mxl_status read_tool(reader *rd, const cJSON *msg, const char *path) {
  const char *name_field, *channel, *recipient, *content_type;
  MXL_TRY(opt_string(rd, msg, "name", path, &name_field));
  MXL_TRY(opt_string(rd, msg, "channel", path, &channel));
  MXL_TRY(opt_string(rd, msg, "recipient", path, &recipient));
  MXL_TRY(opt_string(rd, msg, "content_type", path, &content_type));
  const char *fn = tool_function(rd, msg);
  if (!fn) {
    char field[96];
    snprintf(field, sizeof field, "%sname", path);
    return field_error(rd, field, "a tool message needs the tool's name (or an earlier tool call)");
  }
  char author[300];
  qualified_name(fn, author, sizeof author);
  char *content = NULL;
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(msg, "content");
  if (cJSON_IsObject(v)) {
    content = cJSON_PrintUnformatted(v); /* a structured result as JSON text */
    if (!content) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", rd->where);
  } else {
    MXL_TRY(read_content(rd, msg, path, &content));
  }
  mxl_status st = mxl_conversation_add(rd->conv, MXL_ROLE_TOOL, author,
                                       recipient ? recipient : "assistant",
                                       channel ? channel : "commentary", content_type,
                                       content, rd->src);
  free(content);
  return st;
}

static mxl_status read_simple(reader *rd, const cJSON *msg, const char *path, mxl_role role) {
  const char *name, *channel, *recipient, *content_type;
  MXL_TRY(opt_string(rd, msg, "name", path, &name));
  MXL_TRY(opt_string(rd, msg, "channel", path, &channel));
  MXL_TRY(opt_string(rd, msg, "recipient", path, &recipient));
  MXL_TRY(opt_string(rd, msg, "content_type", path, &content_type));
  char *content = NULL;
  MXL_TRY(read_required_content(rd, msg, path, &content));
  mxl_status st =
      mxl_conversation_add(rd->conv, role, name, recipient, channel, content_type, content, rd->src);
  free(content);
  return st;
}

static mxl_status read_messages(reader *rd, const cJSON *list, const char *key) {
  if (!cJSON_IsArray(list))
    return field_error(rd, key, "expected a list of messages, got %s", mxl_json_type_name(list));
  int k = 0;
  for (const cJSON *msg = list->child; msg; msg = msg->next, k++, rd->src++) {
    char path[64];
    snprintf(path, sizeof path, "%s[%d].", key, k);
    if (!cJSON_IsObject(msg)) {
      char field[64];
      snprintf(field, sizeof field, "%s[%d]", key, k);
      return field_error(rd, field, "expected a message object, got %s", mxl_json_type_name(msg));
    }
    mxl_role role = MXL_ROLE_USER;
    MXL_TRY(parse_role(rd, msg, path, &role));
    if (role == MXL_ROLE_SYSTEM || role == MXL_ROLE_DEVELOPER) {
      MXL_TRY(read_instructions(rd, msg, path));
      continue;
    }
    rd->seen_chat = 1;
    if (role == MXL_ROLE_ASSISTANT) MXL_TRY(read_assistant(rd, msg, path));
    else if (role == MXL_ROLE_TOOL) MXL_TRY(read_tool(rd, msg, path));
    else MXL_TRY(read_simple(rd, msg, path, role));
  }
  return MXL_OK;
}

/* ------------------------------------------------------------------ sample level */

static mxl_status read_tools(reader *rd, const cJSON *tools) {
  if (!tools || cJSON_IsNull(tools)) return MXL_OK;
  if (!cJSON_IsArray(tools))
    return field_error(rd, "tools", "expected a list, got %s", mxl_json_type_name(tools));
  int n = cJSON_GetArraySize(tools);
  if (n == 0) return MXL_OK;
  rd->conv->tools = calloc((size_t)n, sizeof *rd->conv->tools);
  if (!rd->conv->tools) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", rd->where);
  int k = 0;
  for (const cJSON *t = tools->child; t; t = t->next, k++) {
    char field[64];
    snprintf(field, sizeof field, "tools[%d]", k);
    if (!cJSON_IsObject(t))
      return field_error(rd, field, "expected an object, got %s", mxl_json_type_name(t));
    const cJSON *def = cJSON_GetObjectItemCaseSensitive(t, "function");
    if (def) {
      snprintf(field, sizeof field, "tools[%d].function", k);
      if (!cJSON_IsObject(def))
        return field_error(rd, field, "expected an object, got %s", mxl_json_type_name(def));
    } else {
      def = t; /* the function object itself */
    }
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(def, "name");
    const cJSON *desc = cJSON_GetObjectItemCaseSensitive(def, "description");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(def, "parameters");
    char sub[96];
    if (!cJSON_IsString(name) || !name->valuestring[0]) {
      snprintf(sub, sizeof sub, "%s.name", field);
      return field_error(rd, sub, "expected the function's name, got %s", mxl_json_type_name(name));
    }
    if (desc && !cJSON_IsNull(desc) && !cJSON_IsString(desc)) {
      snprintf(sub, sizeof sub, "%s.description", field);
      return field_error(rd, sub, "expected a string, got %s", mxl_json_type_name(desc));
    }
    if (params && !cJSON_IsNull(params) && !cJSON_IsObject(params)) {
      snprintf(sub, sizeof sub, "%s.parameters", field);
      return field_error(rd, sub, "expected a JSON schema object, got %s",
                         mxl_json_type_name(params));
    }
    mxl_htool *h = &rd->conv->tools[rd->conv->n_tools++];
    h->name = strdup(name->valuestring);
    h->description = strdup(cJSON_IsString(desc) ? desc->valuestring : "");
    h->parameters = cJSON_IsObject(params) ? cJSON_Duplicate(params, 1) : NULL;
    if (!h->name || !h->description || (cJSON_IsObject(params) && !h->parameters))
      return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", rd->where);
  }
  return MXL_OK;
}

/* {"prompt", "completion"}: strings (a user turn and a final answer) or
 * message lists. */
static mxl_status read_prompt_completion(reader *rd, const cJSON *item) {
  const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(item, "prompt");
  const cJSON *completion = cJSON_GetObjectItemCaseSensitive(item, "completion");
  if (!completion) return field_error(rd, "completion", "missing (prompt needs a completion)");
  if (cJSON_IsString(prompt)) {
    rd->seen_chat = 1;
    MXL_TRY(mxl_conversation_add(rd->conv, MXL_ROLE_USER, NULL, NULL, NULL, NULL,
                                 prompt->valuestring, rd->src++));
  } else if (cJSON_IsArray(prompt)) {
    MXL_TRY(read_messages(rd, prompt, "prompt"));
  } else {
    return field_error(rd, "prompt", "expected a string or a list of messages, got %s",
                       mxl_json_type_name(prompt));
  }
  if (cJSON_IsString(completion)) {
    rd->seen_chat = 1;
    return mxl_conversation_add(rd->conv, MXL_ROLE_ASSISTANT, NULL, NULL, "final", NULL,
                                completion->valuestring, rd->src++);
  }
  if (cJSON_IsArray(completion)) return read_messages(rd, completion, "completion");
  return field_error(rd, "completion", "expected a string or a list of messages, got %s",
                     mxl_json_type_name(completion));
}

mxl_status mxl_sample_from_json(const cJSON *item, const char *where, mxl_json_sample *kind,
                                mxl_conversation *conv, const char **text) {
  memset(conv, 0, sizeof *conv);
  *text = NULL;
  *kind = MXL_JSON_CHAT;
  reader rd = {.where = where, .conv = conv};
  /* cJSON keeps both copies of a repeated key and lookups see the first:
   * the sample would silently train on half of what the line says. */
  mxl_status st = mxl_json_check_unique_keys_deep(item, where);
  if (st != MXL_OK) {
  } else if (cJSON_IsArray(item)) {
    st = read_messages(&rd, item, "messages");
  } else if (!cJSON_IsObject(item)) {
    st = mxl_errorf(MXL_ERR_FORMAT, "%s: expected a JSON object, got %s", where,
                    mxl_json_type_name(item));
  } else {
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(item, "messages");
    const cJSON *text_item = cJSON_GetObjectItemCaseSensitive(item, "text");
    const char *effort = NULL;
    st = opt_string(&rd, item, "reasoning_effort", "", &effort);
    if (!st && effort && mxl_effort_parse(effort, &conv->effort) != MXL_OK)
      st = field_error(&rd, "reasoning_effort", "'%.40s': expected low, medium or high", effort);
    if (!st) st = read_tools(&rd, cJSON_GetObjectItemCaseSensitive(item, "tools"));
    if (st) {
    } else if (messages) {
      st = read_messages(&rd, messages, "messages");
    } else if (cJSON_GetObjectItemCaseSensitive(item, "prompt")) {
      st = read_prompt_completion(&rd, item);
    } else if (text_item) {
      if (!cJSON_IsString(text_item))
        st = field_error(&rd, "text", "expected a string, got %s", mxl_json_type_name(text_item));
      *kind = MXL_JSON_TEXT;
      *text = st ? NULL : text_item->valuestring;
    } else {
      st = mxl_errorf(MXL_ERR_FORMAT,
                      "%s: expected a \"messages\", \"prompt\"/\"completion\" or \"text\" field",
                      where);
    }
  }
  conv->n_src = rd.src;
  if (!st && *kind == MXL_JSON_CHAT && conv->n_msgs == 0)
    st = mxl_errorf(MXL_ERR_FORMAT, "%s: messages: no user, assistant or tool message", where);
  if (st) mxl_conversation_free(conv);
  return st;
}

/* ------------------------------------------------------------------ rendering a sample */

static mxl_status grow_flags(uint8_t **flags, size_t *cap, size_t need) {
  if (need <= *cap) return MXL_OK;
  size_t c = *cap ? *cap : 256;
  while (c < need) c *= 2;
  uint8_t *g = realloc(*flags, c);
  if (!g) return mxl_errorf(MXL_ERR_MEMORY, "dataset: out of memory");
  *flags = g;
  *cap = c;
  return MXL_OK;
}

/* Copies the rendered text into an mxl_rendered. */
static mxl_status keep_text(const char *text, const uint8_t *tflags, size_t len, uint8_t fill,
                            mxl_rendered *out) {
  out->text = malloc(len + 1);
  out->text_flags = malloc(len ? len : 1);
  if (!out->text || !out->text_flags) return mxl_errorf(MXL_ERR_MEMORY, "render: out of memory");
  memcpy(out->text, text, len);
  out->text[len] = '\0';
  if (tflags) memcpy(out->text_flags, tflags, len);
  else memset(out->text_flags, fill, len);
  out->text_len = len;
  return MXL_OK;
}

mxl_status mxl_render_sample(const cJSON *item, const char *where, const mxl_tokenizer *tok,
                             const mxl_render_options *opts, mxl_ids *ids, uint8_t **flags,
                             size_t *flags_cap, mxl_rendered *text_out,
                             mxl_sample_kind *kind_out) {
  mxl_json_sample kind;
  mxl_conversation conv;
  const char *text = NULL;
  MXL_TRY(mxl_sample_from_json(item, where, &kind, &conv, &text));
  const uint8_t all = (uint8_t)((1u << MXL_MASK_COUNT) - 1);
  mxl_status st = MXL_OK;
  if (kind == MXL_JSON_TEXT) {
    *kind_out = MXL_SAMPLE_TEXT;
    size_t len = strlen(text);
    if (text_out) st = keep_text(text, NULL, len, all, text_out);
    if (!st && tok) {
      size_t before = ids->n;
      st = mxl_tokenizer_encode(tok, text, len, 0, ids);
      if (!st) st = grow_flags(flags, flags_cap, ids->n);
      if (!st && ids->n > before) memset(*flags + before, all, ids->n - before);
    }
    return st;
  }
  *kind_out = MXL_SAMPLE_CHAT;
  mxl_hrender r;
  st = mxl_harmony_render(&conv, opts, &r);
  if (st) mxl_error_prefix(st, "%s: ", where);
  mxl_conversation_free(&conv);
  if (st) return st;
  if (text_out) st = keep_text(r.text, r.text_flags, r.len, 0, text_out);
  if (!st && tok) st = mxl_harmony_tokenize(tok, &r, ids, flags, flags_cap);
  mxl_hrender_free(&r);
  return st;
}

/* ------------------------------------------------------------------ public entry */

void mxl_rendered_free(mxl_rendered *r) {
  if (!r) return;
  free(r->text);
  free(r->text_flags);
  free(r->ids);
  free(r->flags);
  memset(r, 0, sizeof *r);
}

size_t mxl_rendered_trained(const mxl_rendered *r, mxl_loss_mask mode) {
  const uint8_t *f = r->ids ? r->flags : r->text_flags;
  size_t n = r->ids ? r->n : r->text_len, count = 0;
  for (size_t i = 0; i < n; i++) count += (f[i] & MXL_MASK_BIT(mode)) != 0;
  return count;
}

mxl_status mxl_harmony_render_json(const mxl_tokenizer *tok, const char *json, size_t len,
                                   const char *source, const mxl_render_options *opts,
                                   mxl_rendered *out) {
  memset(out, 0, sizeof *out);
  if (!source) source = "chat";
  cJSON *root = NULL;
  MXL_TRY(mxl_parse_json_text(json, len, source, &root));
  mxl_ids ids = {0};
  uint8_t *flags = NULL;
  size_t flags_cap = 0;
  mxl_sample_kind kind;
  mxl_status st =
      mxl_render_sample(root, source, tok, opts, &ids, &flags, &flags_cap, out, &kind);
  cJSON_Delete(root);
  if (st) {
    mxl_ids_free(&ids);
    free(flags);
    mxl_rendered_free(out);
    return st;
  }
  out->ids = ids.data;
  out->n = ids.n;
  out->flags = flags;
  if (tok && !out->ids) { /* an empty render still gets non-NULL arrays */
    out->ids = malloc(sizeof *out->ids);
    out->flags = malloc(1);
    if (!out->ids || !out->flags) {
      mxl_rendered_free(out);
      return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", source);
    }
  }
  return MXL_OK;
}
