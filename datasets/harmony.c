/* Harmony rendering (docs/gpt-oss.md §7), written from openai-harmony's documented and
 * observed behaviour (format.md, encoding.rs); checked token-exactly
 * against it by tests/test_harmony.c on fixtures that
 * tools/gen_harmony_fixtures.py writes with the openai-harmony package. */
#include "datasets/harmony.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "core/strbuf.h"

static const char default_identity[] =
    "You are ChatGPT, a large language model trained by OpenAI.";
static const char default_cutoff[] = "2024-06";

/* ------------------------------------------------------------------ names */

static const char *const mask_names[MXL_MASK_COUNT] = {"assistant", "last-turn", "final",
                                                       "all"};
static const char *const rule_names[] = {"earlier-turns", "harmony", "hf", "keep"};

const char *mxl_loss_mask_name(mxl_loss_mask mode) {
  return (unsigned)mode < MXL_MASK_COUNT ? mask_names[mode] : "?";
}

mxl_status mxl_loss_mask_parse(const char *name, mxl_loss_mask *out) {
  for (int i = 0; i < MXL_MASK_COUNT; i++)
    if (name && !strcmp(name, mask_names[i])) {
      *out = (mxl_loss_mask)i;
      return MXL_OK;
    }
  return mxl_errorf(MXL_ERR_ARGUMENT,
                    "loss mask '%s': expected assistant, last-turn, final or all",
                    name ? name : "(null)");
}

const char *mxl_analysis_rule_name(mxl_analysis_rule rule) {
  return (unsigned)rule < 4 ? rule_names[rule] : "?";
}

mxl_status mxl_analysis_rule_parse(const char *name, mxl_analysis_rule *out) {
  for (int i = 0; i < 4; i++)
    if (name && !strcmp(name, rule_names[i])) {
      *out = (mxl_analysis_rule)i;
      return MXL_OK;
    }
  return mxl_errorf(MXL_ERR_ARGUMENT,
                    "analysis rule '%s': expected earlier-turns, harmony, hf or keep",
                    name ? name : "(null)");
}

mxl_status mxl_effort_parse(const char *name, mxl_effort *out) {
  static const char *const names[] = {"low", "medium", "high"};
  for (int i = 0; i < 3; i++)
    if (name && !strcmp(name, names[i])) {
      *out = (mxl_effort)(MXL_EFFORT_LOW + i);
      return MXL_OK;
    }
  return mxl_errorf(MXL_ERR_ARGUMENT, "reasoning effort '%s': expected low, medium or high",
                    name ? name : "(null)");
}

const char *mxl_role_name(mxl_role role) {
  static const char *const names[] = {"system", "developer", "user", "assistant", "tool"};
  return (unsigned)role < 5 ? names[role] : "?";
}

/* ------------------------------------------------------------------ conversation */

static char *dup_or_null(const char *s, int *oom) {
  if (!s) return NULL;
  char *d = strdup(s);
  if (!d) *oom = 1;
  return d;
}

mxl_status mxl_conversation_add(mxl_conversation *c, mxl_role role, const char *name,
                                const char *recipient, const char *channel,
                                const char *content_type, const char *content, int src) {
  if (c->n_msgs == c->cap_msgs) {
    int cap = c->cap_msgs ? c->cap_msgs * 2 : 8;
    mxl_hmsg *grown = realloc(c->msgs, (size_t)cap * sizeof *grown);
    if (!grown) return mxl_errorf(MXL_ERR_MEMORY, "conversation: out of memory");
    c->msgs = grown;
    c->cap_msgs = cap;
  }
  int oom = 0;
  mxl_hmsg m = {.role = role, .src = src};
  m.name = dup_or_null(name, &oom);
  m.recipient = dup_or_null(recipient, &oom);
  m.channel = dup_or_null(channel, &oom);
  m.content_type = dup_or_null(content_type, &oom);
  m.content = dup_or_null(content ? content : "", &oom);
  c->msgs[c->n_msgs++] = m;
  return oom ? mxl_errorf(MXL_ERR_MEMORY, "conversation: out of memory") : MXL_OK;
}

void mxl_conversation_free(mxl_conversation *c) {
  if (!c) return;
  for (int i = 0; i < c->n_msgs; i++) {
    mxl_hmsg *m = &c->msgs[i];
    free(m->name);
    free(m->recipient);
    free(m->channel);
    free(m->content_type);
    free(m->content);
  }
  for (int i = 0; i < c->n_tools; i++) {
    free(c->tools[i].name);
    free(c->tools[i].description);
    cJSON_Delete(c->tools[i].parameters);
  }
  free(c->msgs);
  free(c->tools);
  free(c->instructions);
  memset(c, 0, sizeof *c);
}

/* ------------------------------------------------------------------ strings */

/* ------------------------------------------------------------------ schema text */

/* JSON text of a value the way serde_json's Display writes it: compact,
 * strings escaped, non-ASCII kept. Integral numbers print without a
 * fraction (serde keeps the source's "1.0"; cJSON cannot tell). */
static void put_json(mxl_strbuf *b, const cJSON *v);

static void put_json_string(mxl_strbuf *b, const char *s) {
  mxl_strbuf_puts(b, "\"");
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    char esc[8];
    switch (*p) {
    case '"': mxl_strbuf_puts(b, "\\\""); break;
    case '\\': mxl_strbuf_puts(b, "\\\\"); break;
    case '\n': mxl_strbuf_puts(b, "\\n"); break;
    case '\r': mxl_strbuf_puts(b, "\\r"); break;
    case '\t': mxl_strbuf_puts(b, "\\t"); break;
    case '\b': mxl_strbuf_puts(b, "\\b"); break;
    case '\f': mxl_strbuf_puts(b, "\\f"); break;
    default:
      if (*p < 0x20) {
        snprintf(esc, sizeof esc, "\\u%04x", *p);
        mxl_strbuf_puts(b, esc);
      } else {
        mxl_strbuf_append(b, (const char *)p, 1);
      }
    }
  }
  mxl_strbuf_puts(b, "\"");
}

static void put_json_number(mxl_strbuf *b, double d) {
  char num[40];
  if (d == floor(d) && fabs(d) < 9.2e18) {
    snprintf(num, sizeof num, "%lld", (long long)d);
  } else {
    /* the shortest %g that reads back to the same double */
    for (int prec = 1; prec <= 17; prec++) {
      snprintf(num, sizeof num, "%.*g", prec, d);
      if (strtod(num, NULL) == d) break;
    }
  }
  mxl_strbuf_puts(b, num);
}

static void put_json(mxl_strbuf *b, const cJSON *v) {
  if (cJSON_IsString(v)) {
    put_json_string(b, v->valuestring);
  } else if (cJSON_IsNumber(v)) {
    put_json_number(b, v->valuedouble);
  } else if (cJSON_IsBool(v)) {
    mxl_strbuf_puts(b, cJSON_IsTrue(v) ? "true" : "false");
  } else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
    int obj = cJSON_IsObject(v);
    mxl_strbuf_puts(b, obj ? "{" : "[");
    for (const cJSON *e = v->child; e; e = e->next) {
      if (e != v->child) mxl_strbuf_puts(b, ",");
      if (obj) {
        put_json_string(b, e->string);
        mxl_strbuf_puts(b, ":");
      }
      put_json(b, e);
    }
    mxl_strbuf_puts(b, obj ? "}" : "]");
  } else {
    mxl_strbuf_puts(b, "null");
  }
}

static const char *str_field(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int is_enum(const cJSON *schema) {
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(schema, "enum");
  return cJSON_IsArray(e) && e->child != NULL;
}

static int is_nullable(const cJSON *schema) {
  return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(schema, "nullable"));
}

/* The `default: ...` comment text in harmony's spellings: a string default
 * of a non-enum schema is quoted as is; an enum's string default is bare
 * (bare_enum) or JSON (top-level oneOf variants); anything else is JSON. */
static void put_default(mxl_strbuf *b, const cJSON *owner, const cJSON *def, int bare_enum) {
  mxl_strbuf_puts(b, "default: ");
  if (cJSON_IsString(def) && !is_enum(owner)) {
    mxl_strbuf_puts(b, "\"");
    mxl_strbuf_puts(b, def->valuestring);
    mxl_strbuf_puts(b, "\"");
  } else if (cJSON_IsString(def) && bare_enum) {
    mxl_strbuf_puts(b, def->valuestring);
  } else {
    put_json(b, def);
  }
}

static char *indent_plus(const char *indent, const char *more) {
  size_t a = strlen(indent), m = strlen(more);
  char *s = malloc(a + m + 1);
  if (s) {
    memcpy(s, indent, a);
    memcpy(s + a, more, m + 1);
  }
  return s;
}

static void put_schema(mxl_strbuf *b, const cJSON *schema, const char *indent);

/* A schema's type, its inner lines indented by indent + more, with
 * " | null" when it is nullable and the type does not already say null. */
static void put_type(mxl_strbuf *b, const cJSON *schema, const char *indent, const char *more) {
  char *inner = indent_plus(indent, more);
  if (!inner) {
    b->failed = 1;
    return;
  }
  mxl_strbuf t = {0};
  put_schema(&t, schema, inner);
  free(inner);
  if (t.failed) {
    b->failed = 1;
  } else {
    mxl_strbuf_append(b, t.data, t.len);
    if (is_nullable(schema) && !(t.data && strstr(t.data, "null"))) mxl_strbuf_puts(b, " | null");
  }
  mxl_strbuf_free(&t);
}

/* "indent// text\n" */
static void put_indented_comment(mxl_strbuf *b, const char *indent, const char *text) {
  mxl_strbuf_puts(b, indent);
  mxl_strbuf_puts(b, "// ");
  mxl_strbuf_puts(b, text);
  mxl_strbuf_puts(b, "\n");
}

/* A oneOf variant's " // description default: ..." comment, if it has either. */
static void put_variant_comment(mxl_strbuf *b, const cJSON *variant, const char *desc,
                                const cJSON *def, int bare_enum) {
  if (desc || def) mxl_strbuf_puts(b, " // ");
  if (desc) mxl_strbuf_puts(b, desc);
  if (desc && def) mxl_strbuf_puts(b, " ");
  if (def) put_default(b, variant, def, bare_enum);
}

/* A top-level oneOf: each variant on its own " | " line. */
static void put_one_of(mxl_strbuf *b, const cJSON *one_of, const char *indent) {
  for (const cJSON *v = one_of->child; v; v = v->next) {
    mxl_strbuf_puts(b, "\n");
    mxl_strbuf_puts(b, indent);
    mxl_strbuf_puts(b, " | ");
    put_type(b, v, indent, "   ");
    put_variant_comment(b, v, str_field(v, "description"),
                        cJSON_GetObjectItemCaseSensitive(v, "default"), 0);
  }
}

/* A property whose schema is a oneOf: comments above, then one line per
 * variant, then a lone comma. */
static void put_one_of_property(mxl_strbuf *b, const char *key, const cJSON *val, int required,
                                const char *indent) {
  const cJSON *one_of = cJSON_GetObjectItemCaseSensitive(val, "oneOf");
  const char *prop_desc = str_field(val, "description");
  const char *first_desc = one_of->child ? str_field(one_of->child, "description") : NULL;
  int above = 0;
  if (prop_desc && !(first_desc && !strcmp(first_desc, prop_desc))) {
    put_indented_comment(b, indent, prop_desc);
    above = 1;
  }
  const cJSON *def = cJSON_GetObjectItemCaseSensitive(val, "default");
  if (def) {
    mxl_strbuf_puts(b, indent);
    mxl_strbuf_puts(b, "// ");
    put_default(b, val, def, 1);
    mxl_strbuf_puts(b, "\n");
  }
  mxl_strbuf_puts(b, indent);
  mxl_strbuf_puts(b, key);
  mxl_strbuf_puts(b, required ? ":\n" : "?:\n");
  int i = 0;
  for (const cJSON *v = one_of->child; v; v = v->next, i++) {
    mxl_strbuf_puts(b, indent);
    mxl_strbuf_puts(b, " | ");
    put_type(b, v, indent, "   ");
    const char *desc = (i == 0 && above) ? NULL : str_field(v, "description");
    if (desc && prop_desc && !strcmp(desc, prop_desc)) desc = NULL;
    put_variant_comment(b, v, desc, cJSON_GetObjectItemCaseSensitive(v, "default"), 1);
    mxl_strbuf_puts(b, "\n");
  }
  mxl_strbuf_puts(b, indent);
  mxl_strbuf_puts(b, ",\n");
}

static int in_required(const cJSON *schema, const char *key) {
  const cJSON *req = cJSON_GetObjectItemCaseSensitive(schema, "required");
  if (!cJSON_IsArray(req)) return 0;
  for (const cJSON *r = req->child; r; r = r->next)
    if (cJSON_IsString(r) && !strcmp(r->valuestring, key)) return 1;
  return 0;
}

static void put_property(mxl_strbuf *b, const cJSON *schema, const cJSON *val, const char *indent) {
  const char *key = val->string;
  int required = in_required(schema, key);
  const cJSON *one_of = cJSON_GetObjectItemCaseSensitive(val, "oneOf");
  const char *title = str_field(val, "title");
  if (title) {
    put_indented_comment(b, indent, title);
    mxl_strbuf_puts(b, indent);
    mxl_strbuf_puts(b, "//\n");
  }
  const char *desc = str_field(val, "description");
  if (!one_of && desc) put_indented_comment(b, indent, desc);
  const cJSON *examples = cJSON_GetObjectItemCaseSensitive(val, "examples");
  if (cJSON_IsArray(examples) && examples->child) {
    mxl_strbuf_puts(b, indent);
    mxl_strbuf_puts(b, "// Examples:\n");
    for (const cJSON *e = examples->child; e; e = e->next) {
      if (!cJSON_IsString(e)) continue;
      mxl_strbuf_puts(b, indent);
      mxl_strbuf_puts(b, "// - \"");
      mxl_strbuf_puts(b, e->valuestring);
      mxl_strbuf_puts(b, "\"\n");
    }
  }
  if (cJSON_IsArray(one_of)) {
    put_one_of_property(b, key, val, required, indent);
    return;
  }
  mxl_strbuf_puts(b, indent);
  mxl_strbuf_puts(b, key);
  mxl_strbuf_puts(b, required ? ": " : "?: ");
  put_type(b, val, indent, "    ");
  mxl_strbuf_puts(b, ",");
  const cJSON *def = cJSON_GetObjectItemCaseSensitive(val, "default");
  if (!one_of && def) {
    mxl_strbuf_puts(b, " // ");
    put_default(b, val, def, 1);
  }
  mxl_strbuf_puts(b, "\n");
}

static void put_object(mxl_strbuf *b, const cJSON *schema, const char *indent) {
  const char *desc = str_field(schema, "description");
  if (desc) {
    mxl_strbuf_puts(b, indent);
    mxl_strbuf_puts(b, "// ");
    mxl_strbuf_puts(b, desc);
    mxl_strbuf_puts(b, "\n");
  }
  mxl_strbuf_puts(b, "{\n");
  const cJSON *props = cJSON_GetObjectItemCaseSensitive(schema, "properties");
  if (cJSON_IsObject(props))
    for (const cJSON *p = props->child; p; p = p->next) put_property(b, schema, p, indent);
  mxl_strbuf_puts(b, indent);
  mxl_strbuf_puts(b, "}");
}

static void put_schema(mxl_strbuf *b, const cJSON *schema, const char *indent) {
  const cJSON *one_of = cJSON_GetObjectItemCaseSensitive(schema, "oneOf");
  if (cJSON_IsArray(one_of)) {
    put_one_of(b, one_of, indent);
    return;
  }
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(schema, "type");
  if (cJSON_IsArray(type)) {
    int first = 1;
    for (const cJSON *t = type->child; t; t = t->next) {
      if (!cJSON_IsString(t)) continue;
      if (!first) mxl_strbuf_puts(b, " | ");
      mxl_strbuf_puts(b, !strcmp(t->valuestring, "integer") ? "number" : t->valuestring);
      first = 0;
    }
    if (!first) return;
  }
  const char *ty = cJSON_IsString(type) ? type->valuestring : NULL;
  if (!ty) {
    mxl_strbuf_puts(b, "any");
  } else if (!strcmp(ty, "object")) {
    put_object(b, schema, indent);
  } else if (!strcmp(ty, "string")) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(schema, "enum");
    int first = 1;
    if (cJSON_IsArray(e))
      for (const cJSON *v = e->child; v; v = v->next) {
        if (!cJSON_IsString(v)) continue;
        if (!first) mxl_strbuf_puts(b, " | ");
        mxl_strbuf_puts(b, "\"");
        mxl_strbuf_puts(b, v->valuestring);
        mxl_strbuf_puts(b, "\"");
        first = 0;
      }
    if (first) mxl_strbuf_puts(b, "string");
  } else if (!strcmp(ty, "number") || !strcmp(ty, "integer")) {
    mxl_strbuf_puts(b, "number");
  } else if (!strcmp(ty, "boolean")) {
    mxl_strbuf_puts(b, "boolean");
  } else if (!strcmp(ty, "array")) {
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(schema, "items");
    if (items) {
      put_schema(b, items, indent);
      mxl_strbuf_puts(b, "[]");
    } else {
      mxl_strbuf_puts(b, "Array<any>");
    }
  } else {
    mxl_strbuf_puts(b, "any");
  }
}

char *mxl_harmony_schema_text(const cJSON *schema, const char *indent) {
  mxl_strbuf b = {0};
  put_schema(&b, schema, indent ? indent : "");
  return mxl_strbuf_take(&b);
}

/* Rust's str::lines: split on '\n', drop a '\r' before it, no empty last
 * line for a trailing newline. Each line gets `prefix` and a '\n' joiner
 * is written before every line but the first item of the section. */
static void put_comment_lines(mxl_strbuf *b, const char *text) {
  const char *p = text;
  while (*p) {
    const char *nl = strchr(p, '\n');
    size_t n = nl ? (size_t)(nl - p) : strlen(p);
    size_t shown = (n > 0 && p[n - 1] == '\r') ? n - 1 : n;
    mxl_strbuf_puts(b, "// ");
    mxl_strbuf_append(b, p, shown);
    mxl_strbuf_puts(b, "\n");
    p += n + (nl ? 1 : 0);
  }
}

/* The "# Tools" section of a developer message with function tools. */
static void put_tools_section(mxl_strbuf *b, const mxl_conversation *c) {
  mxl_strbuf_puts(b, "# Tools\n\n## functions\n\nnamespace functions {\n\n");
  for (int i = 0; i < c->n_tools; i++) {
    const mxl_htool *t = &c->tools[i];
    put_comment_lines(b, t->description);
    mxl_strbuf_puts(b, "type ");
    mxl_strbuf_puts(b, t->name);
    if (t->parameters) {
      mxl_strbuf_puts(b, " = (_: ");
      put_schema(b, t->parameters, "");
      mxl_strbuf_puts(b, ") => any;\n\n");
    } else {
      mxl_strbuf_puts(b, " = () => any;\n\n");
    }
  }
  mxl_strbuf_puts(b, "} // namespace functions");
}

static char *system_text(const mxl_conversation *c, const mxl_render_options *o) {
  static const char *const efforts[] = {"medium", "low", "medium", "high"};
  mxl_effort effort = o->effort != MXL_EFFORT_DEFAULT ? o->effort : c->effort;
  if ((unsigned)effort > MXL_EFFORT_HIGH) effort = MXL_EFFORT_DEFAULT;
  mxl_strbuf b = {0};
  mxl_strbuf_puts(&b, o->model_identity ? o->model_identity : default_identity);
  mxl_strbuf_puts(&b, "\nKnowledge cutoff: ");
  mxl_strbuf_puts(&b, o->knowledge_cutoff ? o->knowledge_cutoff : default_cutoff);
  if (o->date) {
    mxl_strbuf_puts(&b, "\nCurrent date: ");
    mxl_strbuf_puts(&b, o->date);
  }
  mxl_strbuf_puts(&b, "\n\nReasoning: ");
  mxl_strbuf_puts(&b, efforts[effort]);
  mxl_strbuf_puts(&b, "\n\n# Valid channels: analysis, commentary, final. Channel must be "
                      "included for every message.");
  if (c->n_tools > 0)
    mxl_strbuf_puts(&b, "\nCalls to these tools must go to the commentary channel: 'functions'.");
  return mxl_strbuf_take(&b);
}

static char *developer_text(const mxl_conversation *c) {
  mxl_strbuf b = {0};
  if (c->instructions) {
    mxl_strbuf_puts(&b, "# Instructions\n\n");
    mxl_strbuf_puts(&b, c->instructions);
    if (c->n_tools > 0) mxl_strbuf_puts(&b, "\n\n");
  }
  if (c->n_tools > 0) put_tools_section(&b, c);
  return mxl_strbuf_take(&b);
}

/* ------------------------------------------------------------------ pieces */

void mxl_hrender_free(mxl_hrender *r) {
  if (!r) return;
  free(r->text);
  free(r->text_flags);
  free(r->pieces);
  memset(r, 0, sizeof *r);
}

static mxl_status add_piece(mxl_hrender *r, const char *s, size_t n, int special,
                            uint8_t flags) {
  if (n == 0) return MXL_OK; /* an empty text piece encodes to nothing */
  if (r->len + n + 1 > r->cap) {
    size_t cap = r->cap ? r->cap : 256;
    while (cap < r->len + n + 1) cap *= 2;
    char *text = realloc(r->text, cap);
    if (text) r->text = text;
    uint8_t *tf = text ? realloc(r->text_flags, cap) : NULL;
    if (tf) r->text_flags = tf;
    if (!text || !tf) return mxl_errorf(MXL_ERR_MEMORY, "harmony: out of memory");
    r->cap = cap;
  }
  if (r->n_pieces == r->cap_pieces) {
    size_t cap = r->cap_pieces ? r->cap_pieces * 2 : 64;
    mxl_hpiece *p = realloc(r->pieces, cap * sizeof *p);
    if (!p) return mxl_errorf(MXL_ERR_MEMORY, "harmony: out of memory");
    r->pieces = p;
    r->cap_pieces = cap;
  }
  r->pieces[r->n_pieces++] = (mxl_hpiece){r->len, n, special, flags};
  memcpy(r->text + r->len, s, n);
  memset(r->text_flags + r->len, flags, n);
  r->len += n;
  r->text[r->len] = '\0';
  return MXL_OK;
}

static mxl_status add_special(mxl_hrender *r, const char *name, uint8_t flags) {
  return add_piece(r, name, strlen(name), 1, flags);
}

static mxl_status add_text(mxl_hrender *r, const char *s, uint8_t flags) {
  return add_piece(r, s, strlen(s), 0, flags);
}

/* ------------------------------------------------------------------ which analysis stays */

static int is_channel(const mxl_hmsg *m, const char *channel) {
  return m->channel && !strcmp(m->channel, channel);
}

static int is_assistant_analysis(const mxl_hmsg *m) {
  return m->role == MXL_ROLE_ASSISTANT && is_channel(m, "analysis");
}

/* keep[i] = 0 for the messages the analysis rule drops. */
static void choose_messages(const mxl_conversation *c, const mxl_render_options *o,
                            uint8_t *keep) {
  int n = c->n_msgs;
  for (int i = 0; i < n; i++) keep[i] = 1;
  switch (o->analysis) {
  case MXL_ANALYSIS_KEEP: break;
  case MXL_ANALYSIS_HARMONY: {
    /* openai-harmony render_conversation_into with auto_drop_analysis */
    int last_assistant_final = 0, first_final = -1;
    for (int i = n - 1; i >= 0; i--)
      if (c->msgs[i].role == MXL_ROLE_ASSISTANT) {
        last_assistant_final = is_channel(&c->msgs[i], "final");
        break;
      }
    for (int i = 0; i < n && first_final < 0; i++)
      if (is_channel(&c->msgs[i], "final")) first_final = i;
    if (last_assistant_final && first_final >= 0)
      for (int i = 0; i < first_final; i++)
        if (is_channel(&c->msgs[i], "analysis")) keep[i] = 0;
    break;
  }
  case MXL_ANALYSIS_HF: {
    int last_src = n > 0 ? c->msgs[n - 1].src : -1;
    for (int i = 0; i < n; i++) {
      if (!is_assistant_analysis(&c->msgs[i])) continue;
      int later_final = 0;
      for (int j = i + 1; j < n; j++)
        if (c->msgs[j].role == MXL_ROLE_ASSISTANT && is_channel(&c->msgs[j], "final"))
          later_final = 1;
      int last = c->msgs[i].src == last_src && o->mode != MXL_RENDER_PROMPT;
      keep[i] = last || (c->msgs[i].from_tool_call && !later_final);
    }
    break;
  }
  case MXL_ANALYSIS_EARLIER_TURNS:
  default: {
    int last_user = -1;
    for (int i = 0; i < n; i++)
      if (c->msgs[i].role == MXL_ROLE_USER) last_user = i;
    for (int i = 0; i < last_user; i++)
      if (is_assistant_analysis(&c->msgs[i])) keep[i] = 0;
    break;
  }
  }
}

/* ------------------------------------------------------------------ render */

/* `a` and `b` as one text piece (harmony encodes them together). */
static mxl_status add_text_pair(mxl_hrender *r, const char *a, const char *b, uint8_t flags) {
  mxl_strbuf t = {0};
  mxl_strbuf_puts(&t, a);
  mxl_strbuf_puts(&t, b);
  char *s = mxl_strbuf_take(&t);
  if (!s) return mxl_errorf(MXL_ERR_MEMORY, "harmony: out of memory");
  mxl_status st = add_text(r, s, flags);
  free(s);
  return st;
}

/* The flags of one message's pieces: `head` for `<|start|>` and the
 * author, `body` for everything after. */
typedef struct msg_flags {
  uint8_t head, body;
} msg_flags;

static msg_flags flags_for(const mxl_hmsg *m, int run_start, int in_last_turn) {
  const uint8_t all = MXL_MASK_BIT(MXL_MASK_ALL);
  msg_flags f = {all, all};
  if (m->role != MXL_ROLE_ASSISTANT) return f;
  uint8_t trained = MXL_MASK_BIT(MXL_MASK_ASSISTANT);
  if (in_last_turn) trained |= MXL_MASK_BIT(MXL_MASK_LAST_TURN);
  f.body |= trained;
  if (!run_start) f.head |= trained;
  if (is_channel(m, "final")) f.body |= MXL_MASK_BIT(MXL_MASK_FINAL);
  return f;
}

static mxl_status render_message(mxl_hrender *r, const mxl_hmsg *m, msg_flags f) {
  MXL_TRY(add_special(r, "<|start|>", f.head));
  if (m->role == MXL_ROLE_TOOL) {
    /* a tool message is authored by the tool: its name replaces the role */
    MXL_TRY(add_text(r, m->name, f.head));
  } else {
    MXL_TRY(add_text(r, mxl_role_name(m->role), f.head));
    if (m->name) MXL_TRY(add_text_pair(r, ":", m->name, f.body));
  }
  if (m->recipient && strcmp(m->recipient, "all") != 0)
    MXL_TRY(add_text_pair(r, " to=", m->recipient, f.body));
  if (m->channel) {
    MXL_TRY(add_special(r, "<|channel|>", f.body));
    MXL_TRY(add_text(r, m->channel, f.body));
  }
  if (m->content_type) {
    static const char constrain[] = "<|constrain|>";
    if (!strncmp(m->content_type, constrain, sizeof constrain - 1)) {
      MXL_TRY(add_text(r, " ", f.body));
      MXL_TRY(add_special(r, constrain, f.body));
      MXL_TRY(add_text(r, m->content_type + sizeof constrain - 1, f.body));
    } else {
      MXL_TRY(add_text_pair(r, " ", m->content_type, f.body));
    }
  }
  MXL_TRY(add_special(r, "<|message|>", f.body));
  MXL_TRY(add_text(r, m->content, f.body));
  int call = m->role == MXL_ROLE_ASSISTANT && m->recipient != NULL;
  return add_special(r, call ? "<|call|>" : "<|end|>", f.body);
}

static mxl_status render_fixed(mxl_hrender *r, const char *role, char *content) {
  const uint8_t all = MXL_MASK_BIT(MXL_MASK_ALL);
  if (!content) return mxl_errorf(MXL_ERR_MEMORY, "harmony: out of memory");
  mxl_status st = add_special(r, "<|start|>", all);
  if (!st) st = add_text(r, role, all);
  if (!st) st = add_special(r, "<|message|>", all);
  if (!st) st = add_text(r, content, all);
  if (!st) st = add_special(r, "<|end|>", all);
  free(content);
  return st;
}

/* Replaces the trailing "<|end|>" piece with "<|return|>". */
static mxl_status end_with_return(mxl_hrender *r) {
  mxl_hpiece last = r->pieces[r->n_pieces - 1];
  r->n_pieces--;
  r->len = last.off;
  return add_special(r, "<|return|>", last.flags);
}

static mxl_status render_messages(const mxl_conversation *c, const mxl_render_options *o,
                                  const uint8_t *keep, mxl_hrender *r) {
  int last_user = -1;
  for (int i = 0; i < c->n_msgs; i++)
    if (c->msgs[i].role == MXL_ROLE_USER) last_user = i;
  int prev_assistant = 0, last_rendered = -1;
  for (int i = 0; i < c->n_msgs; i++) {
    if (!keep[i]) continue;
    const mxl_hmsg *m = &c->msgs[i];
    if (m->role == MXL_ROLE_TOOL && !m->name)
      return mxl_errorf(MXL_ERR_FORMAT, "messages[%d]: a tool message needs a name", m->src);
    int assistant = m->role == MXL_ROLE_ASSISTANT;
    MXL_TRY(render_message(r, m, flags_for(m, assistant && !prev_assistant, i > last_user)));
    prev_assistant = assistant;
    last_rendered = i;
  }
  if (o->mode == MXL_RENDER_TRAIN && last_rendered >= 0 &&
      last_rendered == c->n_msgs - 1) {
    const mxl_hmsg *m = &c->msgs[last_rendered];
    if (m->role == MXL_ROLE_ASSISTANT && is_channel(m, "final")) MXL_TRY(end_with_return(r));
  }
  if (o->mode == MXL_RENDER_PROMPT) {
    const uint8_t all = MXL_MASK_BIT(MXL_MASK_ALL);
    MXL_TRY(add_special(r, "<|start|>", all));
    MXL_TRY(add_text(r, "assistant", all));
  }
  return MXL_OK;
}

mxl_status mxl_harmony_render(const mxl_conversation *c, const mxl_render_options *opts,
                              mxl_hrender *out) {
  static const mxl_render_options defaults = {0};
  const mxl_render_options *o = opts ? opts : &defaults;
  memset(out, 0, sizeof *out);
  uint8_t *keep = malloc((size_t)c->n_msgs + 1);
  if (!keep) return mxl_errorf(MXL_ERR_MEMORY, "harmony: out of memory");
  choose_messages(c, o, keep);
  mxl_status st = render_fixed(out, "system", system_text(c, o));
  if (!st && (c->instructions || c->n_tools > 0))
    st = render_fixed(out, "developer", developer_text(c));
  if (!st) st = render_messages(c, o, keep, out);
  free(keep);
  if (st) mxl_hrender_free(out);
  return st;
}

mxl_status mxl_harmony_tokenize(const mxl_tokenizer *tok, const mxl_hrender *r, mxl_ids *ids,
                                uint8_t **flags, size_t *flags_cap) {
  for (size_t i = 0; i < r->n_pieces; i++) {
    const mxl_hpiece *p = &r->pieces[i];
    size_t before = ids->n;
    if (p->special) {
      char name[64];
      if (p->len >= sizeof name) return mxl_errorf(MXL_ERR_ARGUMENT, "harmony: bad piece");
      memcpy(name, r->text + p->off, p->len);
      name[p->len] = '\0';
      int32_t id = mxl_tokenizer_special(tok, name);
      if (id < 0)
        return mxl_errorf(MXL_ERR_FORMAT, "tokenizer: no special token %s (harmony needs it)",
                          name);
      MXL_TRY(mxl_ids_push(ids, id));
    } else {
      MXL_TRY(mxl_tokenizer_encode(tok, r->text + p->off, p->len, 0, ids));
    }
    if (ids->n > *flags_cap) {
      size_t cap = *flags_cap ? *flags_cap : 256;
      while (cap < ids->n) cap *= 2;
      uint8_t *grown = realloc(*flags, cap);
      if (!grown) return mxl_errorf(MXL_ERR_MEMORY, "harmony: out of memory");
      *flags = grown;
      *flags_cap = cap;
    }
    memset(*flags + before, p->flags, ids->n - before);
  }
  return MXL_OK;
}
