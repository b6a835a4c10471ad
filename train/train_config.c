#include "train/train_config.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/lora.h"
#include "core/json.h"
#include "core/status.h"

/* ---------------------------------------------------------------- schema */

/* The recipe schema: every key, its type and its range. Recipe files and
 * command-line settings are both checked against it, so a value is refused
 * the same way wherever it comes from. recipes/README.md documents it. */
typedef enum key_type {
  K_STRING,
  K_INT,
  K_NUMBER,
  K_BOOL,
  K_LAYERS,  /* "all", or a list of layer indices */
  K_STRINGS, /* a list of strings */
  K_OBJECT,  /* "lora": its keys are the "lora.*" entries */
  K_AUTO_BOOL, /* "auto", true or false */
} key_type;

enum { OPEN_LO = 1, OPEN_HI = 2 }; /* excluded bounds */

typedef struct key_spec {
  const char *key;
  key_type type;
  double lo, hi;
  int open;
} key_spec;

#define STEPS_MAX 1073741824.0 /* 2^30 */
#define SEED_MAX 4503599627370496.0 /* 2^52: exact in a JSON number */

static const key_spec schema[] = {
    {"name", K_STRING, 0, 0, 0},
    {"description", K_STRING, 0, 0, 0},
    {"model", K_STRING, 0, 0, 0},
    {"tiny_preset", K_STRING, 0, 0, 0},
    {"tiny_seed", K_INT, 0, SEED_MAX, 0},
    {"tiny_corpus", K_STRING, 0, 0, 0},
    {"tiny_set", K_STRINGS, 0, 16, 0},
    {"data", K_STRING, 0, 0, 0},
    {"eval_data", K_STRING, 0, 0, 0},
    {"eval_fraction", K_NUMBER, 0, 1, OPEN_HI},
    {"eval_count", K_INT, 0, STEPS_MAX, 0},
    {"out", K_STRING, 0, 0, 0},
    {"steps", K_INT, 1, STEPS_MAX, 0},
    {"epochs", K_NUMBER, 0, 1e6, OPEN_LO},
    {"batch_size", K_INT, 1, 65536, 0},
    {"seq_len", K_INT, 2, 1 << 20, 0},
    {"grad_accum", K_INT, 1, 65536, 0},
    {"pack", K_BOOL, 0, 0, 0},
    {"truncation", K_STRING, 0, 0, 0},
    {"on_bad_line", K_STRING, 0, 0, 0},
    {"loss_mask", K_STRING, 0, 0, 0},
    {"analysis_rule", K_STRING, 0, 0, 0},
    {"lr", K_NUMBER, 0, FLT_MAX, OPEN_LO},
    {"schedule", K_STRING, 0, 0, 0},
    {"warmup_steps", K_INT, 0, STEPS_MAX, 0},
    {"warmup_ratio", K_NUMBER, 0, 1, 0},
    {"min_lr_ratio", K_NUMBER, 0, 1, 0},
    {"weight_decay", K_NUMBER, 0, FLT_MAX, 0},
    {"beta1", K_NUMBER, 0, 1, OPEN_HI},
    {"beta2", K_NUMBER, 0, 1, OPEN_HI},
    {"eps", K_NUMBER, 0, 1, OPEN_LO},
    {"max_grad_norm", K_NUMBER, 0, FLT_MAX, 0},
    {"max_bad_steps", K_INT, 1, STEPS_MAX, 0},
    {"seed", K_INT, 0, SEED_MAX, 0},
    {"eval_every", K_INT, 0, STEPS_MAX, 0},
    {"save_every", K_INT, 0, STEPS_MAX, 0},
    {"keep_checkpoints", K_INT, 0, 1000, 0},
    {"threads", K_INT, 0, 4096, 0},
    {"backend", K_STRING, 0, 0, 0},
    {"adapter_dtype", K_STRING, 0, 0, 0},
    {"resume", K_BOOL, 0, 0, 0},
    {"overwrite", K_BOOL, 0, 0, 0},
    {"init_adapter", K_STRING, 0, 0, 0},
    {"rescue_dir", K_STRING, 0, 0, 0},
    {"dist", K_STRING, 0, 0, 0},
    {"dist_timeout_s", K_NUMBER, 0, 1e6, OPEN_LO},
    {"zero_stage", K_INT, 0, 1, 0},
    {"moe_chunk", K_INT, 0, 1 << 20, 0},
    {"unembed_on_host", K_BOOL, 0, 0, 0},
    {"keep_activations", K_AUTO_BOOL, 0, 0, 0},
    {"lora", K_OBJECT, 0, 0, 0},
    {"lora.rank", K_INT, 1, MXL_LORA_MAX_RANK, 0},
    {"lora.alpha", K_NUMBER, 0, 1e6, OPEN_LO},
    {"lora.rslora", K_BOOL, 0, 0, 0},
    {"lora.dropout", K_NUMBER, 0, 1, OPEN_HI},
    {"lora.targets", K_STRING, 0, 0, 0},
    {"lora.layers", K_LAYERS, 0, MXL_MAX_LAYERS - 1, 0},
    {"lora.expert_layers", K_LAYERS, 0, MXL_MAX_LAYERS - 1, 0},
};
enum { N_KEYS = sizeof schema / sizeof schema[0] };

static const key_spec *find_key(const char *key) {
  for (int i = 0; i < N_KEYS; i++)
    if (!strcmp(schema[i].key, key)) return &schema[i];
  return NULL;
}

static const char *type_text(key_type t) {
  switch (t) {
  case K_STRING: return "a string";
  case K_INT: return "an integer";
  case K_NUMBER: return "a number";
  case K_BOOL: return "true or false";
  case K_LAYERS: return "\"all\" or a list of layer indices like [0,2]";
  case K_STRINGS: return "a list of strings";
  case K_OBJECT: return "an object";
  case K_AUTO_BOOL: return "\"auto\", true or false";
  }
  return "?";
}

static int in_range(const key_spec *k, double v) {
  return ((k->open & OPEN_LO) ? v > k->lo : v >= k->lo) &&
         ((k->open & OPEN_HI) ? v < k->hi : v <= k->hi);
}

/* "an integer in [1, 4096]", "a number > 0", "a number in [0, 1)". */
static void range_text(const key_spec *k, char *buf, size_t cap) {
  const char *what = k->type == K_INT ? "an integer" : "a number";
  int unbounded = k->type == K_INT ? k->hi >= STEPS_MAX : k->hi >= FLT_MAX;
  if (unbounded)
    snprintf(buf, cap, "%s %s %g", what, (k->open & OPEN_LO) ? ">" : ">=", k->lo);
  else
    snprintf(buf, cap, "%s in %c%g, %g%c", what, (k->open & OPEN_LO) ? '(' : '[', k->lo, k->hi,
             (k->open & OPEN_HI) ? ')' : ']');
}

static int is_integral(double v) { return isfinite(v) && v == floor(v); }

/* Checks one value against its schema entry; `where` names it ("--rank",
 * "recipes/x.json: lora.rank"). Null means "use the default". */
static mxl_status check_value(const key_spec *k, const cJSON *v, const char *where) {
  if (cJSON_IsNull(v)) return MXL_OK;
  char range[96];
  switch (k->type) {
  case K_STRING:
    if (cJSON_IsString(v)) return MXL_OK;
    break;
  case K_BOOL:
    if (cJSON_IsBool(v)) return MXL_OK;
    break;
  case K_AUTO_BOOL:
    if (cJSON_IsBool(v) || (cJSON_IsString(v) && !strcmp(v->valuestring, "auto"))) return MXL_OK;
    break;
  case K_OBJECT:
    if (cJSON_IsObject(v)) return MXL_OK;
    break;
  case K_INT:
  case K_NUMBER:
    if (!cJSON_IsNumber(v)) break;
    if (k->type == K_INT && !is_integral(v->valuedouble))
      return mxl_errorf(MXL_ERR_FORMAT, "%s: %g is not an integer", where, v->valuedouble);
    if (in_range(k, v->valuedouble)) return MXL_OK;
    range_text(k, range, sizeof range);
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %g is out of range: expected %s", where,
                      v->valuedouble, range);
  case K_STRINGS:
    if (!cJSON_IsArray(v)) break;
    if (cJSON_GetArraySize(v) > (int)k->hi)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: at most %g entries", where, k->hi);
    for (const cJSON *it = v->child; it; it = it->next)
      if (!cJSON_IsString(it))
        return mxl_errorf(MXL_ERR_FORMAT, "%s: expected a list of strings", where);
    return MXL_OK;
  case K_LAYERS:
    if (cJSON_IsString(v) && !strcmp(v->valuestring, "all")) return MXL_OK;
    if (!cJSON_IsArray(v)) break;
    if (cJSON_GetArraySize(v) == 0)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: an empty list adapts nothing; use \"all\" or drop "
                        "the target", where);
    for (const cJSON *it = v->child; it; it = it->next)
      if (!cJSON_IsNumber(it) || !is_integral(it->valuedouble) || !in_range(k, it->valuedouble))
        return mxl_errorf(MXL_ERR_FORMAT, "%s: layer indices are integers in [0, %g]", where,
                          k->hi);
    return MXL_OK;
  }
  return mxl_errorf(MXL_ERR_FORMAT, "%s: expected %s, got %s", where, type_text(k->type),
                    mxl_json_type_name(v));
}

/* Checks every key of a recipe object (and of its "lora" object). */
static mxl_status check_tree(const cJSON *obj, const char *prefix, const char *source) {
  MXL_TRY(mxl_json_check_unique_keys(obj, source));
  for (const cJSON *item = obj->child; item; item = item->next) {
    char key[160], where[768];
    snprintf(key, sizeof key, "%s%s", prefix, item->string);
    snprintf(where, sizeof where, "%s: %s", source, key);
    const key_spec *k = find_key(key);
    if (!k)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: unknown key \"%s\" (see recipes/README.md)", source,
                        key);
    MXL_TRY(check_value(k, item, where));
    if (k->type == K_OBJECT && cJSON_IsObject(item)) {
      char nested[200];
      snprintf(nested, sizeof nested, "%s.", key);
      MXL_TRY(check_tree(item, nested, source));
    }
  }
  return MXL_OK;
}

/* ---------------------------------------------------------------- reading */

/* After check_tree, values have the right type and range: reading them
 * only has to supply defaults. */
static const cJSON *item(const cJSON *obj, const char *key) {
  const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
  return v && !cJSON_IsNull(v) ? v : NULL;
}

static double num(const cJSON *obj, const char *key, double def) {
  const cJSON *v = item(obj, key);
  return v ? v->valuedouble : def;
}

static int integer(const cJSON *obj, const char *key, int def) {
  const cJSON *v = item(obj, key);
  return v ? (int)v->valuedouble : def;
}

static uint64_t seed_value(const cJSON *obj, const char *key, uint64_t def) {
  const cJSON *v = item(obj, key);
  return v ? (uint64_t)v->valuedouble : def;
}

static int flag(const cJSON *obj, const char *key, int def) {
  const cJSON *v = item(obj, key);
  return v ? cJSON_IsTrue(v) : def;
}

static const char *text(const cJSON *obj, const char *key, const char *def) {
  const cJSON *v = item(obj, key);
  return v ? v->valuestring : def;
}

/* One of `choices` (NULL-terminated); the error lists them. */
static mxl_status choice(const cJSON *obj, const char *key, const char *def,
                         const char *const *choices, const char **out, const char *where) {
  *out = text(obj, key, def);
  for (int i = 0; choices[i]; i++)
    if (!strcmp(*out, choices[i])) return MXL_OK;
  char list[256] = "";
  for (int i = 0; choices[i]; i++)
    snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", choices[i]);
  return mxl_errorf(MXL_ERR_FORMAT, "%s: %s '%s': expected one of %s", where, key, *out, list);
}

static void layers_of(const cJSON *obj, const char *key, int *layers, int *n) {
  const cJSON *v = item(obj, key);
  *n = 0;
  if (!v || cJSON_IsString(v)) return; /* "all" */
  for (const cJSON *it = v->child; it; it = it->next) layers[(*n)++] = (int)it->valuedouble;
}

static mxl_status parse_lora(const cJSON *recipe, mxl_train_config *c, const char *source) {
  const cJSON *lora = item(recipe, "lora");
  char where[512];
  snprintf(where, sizeof where, "%s: lora", source);
  c->rank = integer(lora, "rank", 16);
  c->alpha = (float)num(lora, "alpha", 2.0 * c->rank);
  c->rslora = flag(lora, "rslora", 0);
  c->dropout = (float)num(lora, "dropout", 0);
  unsigned mask = 0;
  mxl_status st = mxl_lora_targets_parse(text(lora, "targets", "attn,experts"), &mask);
  if (st != MXL_OK) return mxl_error_prefix(st, "%s: targets: ", where);
  c->attn_targets = mask & MXL_LORA_ATTN_BITS;
  c->expert_targets = mask & MXL_LORA_EXPERT_BITS;
  layers_of(lora, "layers", c->attn_layers, &c->n_attn_layers);
  if (item(lora, "expert_layers")) {
    layers_of(lora, "expert_layers", c->expert_layers, &c->n_expert_layers);
  } else {
    memcpy(c->expert_layers, c->attn_layers, sizeof c->attn_layers);
    c->n_expert_layers = c->n_attn_layers;
  }
  return MXL_OK;
}

static mxl_status parse_schedule(const cJSON *r, mxl_train_config *c, const char *source) {
  static const char *const kinds[] = {"constant", "linear", "cosine", NULL};
  const char *kind;
  MXL_TRY(choice(r, "schedule", "cosine", kinds, &kind, source));
  MXL_TRY(mxl_schedule_kind_parse(kind, &c->schedule.kind));
  c->schedule.lr = (float)num(r, "lr", 2e-4);
  c->schedule.warmup = integer(r, "warmup_steps", -1);
  c->warmup_ratio = num(r, "warmup_ratio", 0.03);
  c->schedule.min_ratio = (float)num(r, "min_lr_ratio", 0);
  c->weight_decay = (float)num(r, "weight_decay", 0);
  c->beta1 = (float)num(r, "beta1", 0.9);
  c->beta2 = (float)num(r, "beta2", 0.999);
  c->eps = (float)num(r, "eps", 1e-8);
  c->max_grad_norm = (float)num(r, "max_grad_norm", 1.0);
  return MXL_OK;
}

static mxl_status parse_data(const cJSON *r, mxl_train_config *c, const char *source) {
  static const char *const truncations[] = {"cut", "drop", NULL};
  static const char *const bad_lines[] = {"error", "skip", NULL};
  c->data = text(r, "data", NULL);
  if (!c->data) return mxl_errorf(MXL_ERR_FORMAT, "%s: data: required (the training file)", source);
  c->eval_data = text(r, "eval_data", NULL);
  c->eval_fraction = num(r, "eval_fraction", 0.05);
  c->eval_count = integer(r, "eval_count", 0);
  c->batch_size = integer(r, "batch_size", 4);
  c->seq_len = integer(r, "seq_len", 1024);
  c->grad_accum = integer(r, "grad_accum", 1);
  c->pack = flag(r, "pack", 1);
  c->loss_mask = text(r, "loss_mask", "assistant");
  c->analysis_rule = text(r, "analysis_rule", "earlier-turns");
  const char *truncation, *bad;
  MXL_TRY(choice(r, "truncation", "cut", truncations, &truncation, source));
  c->truncate_cut = !strcmp(truncation, "cut");
  MXL_TRY(choice(r, "on_bad_line", "error", bad_lines, &bad, source));
  c->skip_bad_lines = !strcmp(bad, "skip");
  return MXL_OK;
}

static mxl_status parse_run(const cJSON *r, mxl_train_config *c, const char *source) {
  static const char *const dtypes[] = {"f32", "bf16", NULL};
  static const char *const dists[] = {"auto", "none", "mpi", "nccl", NULL};
  c->name = text(r, "name", "custom");
  c->model = text(r, "model", NULL);
  c->out = text(r, "out", NULL);
  if (!c->model) return mxl_errorf(MXL_ERR_FORMAT, "%s: model: required (a checkpoint)", source);
  if (!c->out) return mxl_errorf(MXL_ERR_FORMAT, "%s: out: required (the run folder)", source);
  c->tiny_preset = text(r, "tiny_preset", NULL);
  c->tiny_corpus = text(r, "tiny_corpus", NULL);
  const cJSON *sets = item(r, "tiny_set");
  for (const cJSON *it = sets ? sets->child : NULL; it; it = it->next)
    c->tiny_set[c->n_tiny_set++] = it->valuestring;
  c->tiny_seed = seed_value(r, "tiny_seed", 1);
  int has_steps = item(r, "steps") != NULL, has_epochs = item(r, "epochs") != NULL;
  if (has_steps && has_epochs)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: both \"steps\" and \"epochs\" are set: give one "
                      "(--steps or --epochs on the command line replaces the other)", source);
  if (!has_steps && !has_epochs)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: give \"steps\" or \"epochs\"", source);
  c->steps = integer(r, "steps", 0);
  c->epochs = num(r, "epochs", 0);
  c->seed = seed_value(r, "seed", 42);
  c->eval_every = integer(r, "eval_every", 0);
  c->save_every = integer(r, "save_every", 0);
  c->keep_checkpoints = integer(r, "keep_checkpoints", 0);
  c->threads = integer(r, "threads", 0);
  c->max_bad_steps = integer(r, "max_bad_steps", 10);
  c->backend = text(r, "backend", "cpu");
  const char *dtype;
  MXL_TRY(choice(r, "adapter_dtype", "f32", dtypes, &dtype, source));
  c->adapter_bf16 = !strcmp(dtype, "bf16");
  c->resume = flag(r, "resume", 0);
  c->overwrite = flag(r, "overwrite", 0);
  if (c->resume && c->overwrite)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: resume and overwrite exclude each other", source);
  c->init_adapter = text(r, "init_adapter", NULL);
  c->rescue_dir = text(r, "rescue_dir", NULL);
  MXL_TRY(choice(r, "dist", "auto", dists, &c->dist, source));
  c->dist_timeout_s = num(r, "dist_timeout_s", 600);
  c->zero_stage = integer(r, "zero_stage", 0);
  c->moe_chunk = integer(r, "moe_chunk", 0);
  c->unembed_on_host = flag(r, "unembed_on_host", 0);
  const cJSON *keep = item(r, "keep_activations");
  c->keep_activations = !keep || cJSON_IsString(keep) ? 0 : cJSON_IsTrue(keep) ? 1 : 2;
  return MXL_OK;
}

mxl_status mxl_train_config_parse(const cJSON *recipe, const char *source,
                                  mxl_train_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  if (!cJSON_IsObject(recipe))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: a recipe is a JSON object", source);
  MXL_TRY(check_tree(recipe, "", source));
  MXL_TRY(parse_run(recipe, cfg, source));
  MXL_TRY(parse_data(recipe, cfg, source));
  MXL_TRY(parse_schedule(recipe, cfg, source));
  return parse_lora(recipe, cfg, source);
}

/* ---------------------------------------------------------------- settings */

/* Whole-text numbers: decimal digits, a sign, a point and an exponent
 * only, so "5abc", "0x10", "inf" and "nan" are refused. */
static int parse_number(const char *s, int integral, double *out) {
  if (!*s) return 0;
  for (const char *p = s; *p; p++)
    if (!isdigit((unsigned char)*p) && !strchr(integral ? "+-" : "+-.eE", *p)) return 0;
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *end || !isfinite(v)) return 0;
  *out = v;
  return 1;
}

/* "0,2,5" as the JSON list [0,2,5]; NULL if it is not such a list. */
static cJSON *layer_list(const char *s) {
  cJSON *arr = cJSON_CreateArray();
  for (const char *p = s; arr && isdigit((unsigned char)*p);) {
    char *end = NULL;
    long v = strtol(p, &end, 10);
    cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)v));
    if (*end == '\0') return arr;
    if (*end != ',') break;
    p = end + 1;
  }
  cJSON_Delete(arr);
  return NULL;
}

/* The text of a setting as a JSON value of the key's type (NULL: not one;
 * *why says what was expected). */
static cJSON *typed_value(const key_spec *k, const char *s, const char **why) {
  double v;
  *why = type_text(k->type);
  switch (k->type) {
  case K_STRING: return cJSON_CreateString(s);
  case K_INT: return parse_number(s, 1, &v) ? cJSON_CreateNumber(v) : NULL;
  case K_NUMBER: return parse_number(s, 0, &v) ? cJSON_CreateNumber(v) : NULL;
  case K_BOOL:
  case K_AUTO_BOOL:
    if (k->type == K_AUTO_BOOL && !strcmp(s, "auto")) return cJSON_CreateString(s);
    if (!strcmp(s, "true")) return cJSON_CreateTrue();
    return !strcmp(s, "false") ? cJSON_CreateFalse() : NULL;
  case K_LAYERS:
    if (!strcmp(s, "all")) return cJSON_CreateString(s);
    return s[0] == '[' ? cJSON_Parse(s) : layer_list(s);
  case K_STRINGS: return cJSON_Parse(s);
  case K_OBJECT: *why = "its keys one by one (lora.rank=8)"; return NULL;
  }
  return NULL;
}

static mxl_status put(cJSON *obj, const char *key, cJSON *value) {
  if (cJSON_GetObjectItemCaseSensitive(obj, key))
    cJSON_ReplaceItemInObjectCaseSensitive(obj, key, value);
  else
    cJSON_AddItemToObject(obj, key, value);
  return MXL_OK;
}

mxl_status mxl_recipe_set(cJSON *recipe, const char *key, const char *value,
                          const char *flag_name) {
  const char *who = flag_name ? flag_name : key;
  const key_spec *k = find_key(key);
  if (!k) return mxl_errorf(MXL_ERR_ARGUMENT, "%s: unknown recipe key \"%s\" (see "
                            "recipes/README.md)", who, key);
  const char *why;
  cJSON *v = typed_value(k, value, &why);
  if (!v) return mxl_errorf(MXL_ERR_ARGUMENT, "%s '%s': expected %s", who, value, why);
  mxl_status st = check_value(k, v, who);
  if (st != MXL_OK) {
    cJSON_Delete(v);
    return MXL_ERR_ARGUMENT;
  }
  cJSON *obj = recipe;
  const char *leaf = key, *dot = strchr(key, '.');
  if (dot) {
    char parent[64];
    snprintf(parent, sizeof parent, "%.*s", (int)(dot - key), key);
    obj = cJSON_GetObjectItemCaseSensitive(recipe, parent);
    if (!obj || cJSON_IsNull(obj)) {
      cJSON_DeleteItemFromObjectCaseSensitive(recipe, parent);
      obj = cJSON_AddObjectToObject(recipe, parent);
    }
    if (!cJSON_IsObject(obj)) {
      cJSON_Delete(v);
      return mxl_errorf(MXL_ERR_ARGUMENT, "%s: the recipe's \"%s\" is not an object", who, parent);
    }
    leaf = dot + 1;
  }
  /* steps and epochs exclude each other: the setting replaces the recipe's. */
  if (!strcmp(key, "steps")) cJSON_DeleteItemFromObjectCaseSensitive(recipe, "epochs");
  if (!strcmp(key, "epochs")) cJSON_DeleteItemFromObjectCaseSensitive(recipe, "steps");
  return put(obj, leaf, v);
}

mxl_status mxl_recipe_override(cJSON *recipe, const char *assignment) {
  const char *eq = strchr(assignment, '=');
  if (!eq || eq == assignment)
    return mxl_errorf(MXL_ERR_ARGUMENT, "override '%s': expected key=value", assignment);
  char key[256];
  size_t klen = (size_t)(eq - assignment);
  if (klen >= sizeof key) return mxl_errorf(MXL_ERR_ARGUMENT, "override key too long");
  memcpy(key, assignment, klen);
  key[klen] = '\0';
  return mxl_recipe_set(recipe, key, eq + 1, NULL);
}
