#include "train/train_config.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/lora.h"
#include "core/json.h"
#include "core/status.h"

static mxl_status parse_layers(const cJSON *obj, const char *key, int *layers, int *n,
                               const char *source) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
  *n = 0;
  if (!item || cJSON_IsNull(item) || (cJSON_IsString(item) && !strcmp(item->valuestring, "all")))
    return MXL_OK;
  int64_t values[256];
  size_t count = 0;
  MXL_TRY(mxl_json_get_int_array(obj, key, 0, MXL_MAX_LAYERS - 1, values, 256, &count, source));
  for (size_t i = 0; i < count; i++) layers[i] = (int)values[i];
  *n = (int)count;
  if (count == 0)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: an empty list adapts nothing; use \"all\" or drop "
                      "the target", source, key);
  return MXL_OK;
}

static mxl_status parse_targets(const cJSON *lora, mxl_train_config *c, const char *source) {
  const char *spec;
  MXL_TRY(mxl_json_opt_string(lora, "targets", "attn,experts", &spec, source));
  unsigned mask = 0;
  mxl_status st = mxl_lora_targets_parse(spec, &mask);
  if (st != MXL_OK) return mxl_error_prefix(st, "%s: targets: ", source);
  c->attn_targets = mask & MXL_LORA_ATTN_BITS;
  c->expert_targets = mask & MXL_LORA_EXPERT_BITS;
  MXL_TRY(parse_layers(lora, "layers", c->attn_layers, &c->n_attn_layers, source));
  if (cJSON_GetObjectItemCaseSensitive(lora, "expert_layers"))
    return parse_layers(lora, "expert_layers", c->expert_layers, &c->n_expert_layers, source);
  memcpy(c->expert_layers, c->attn_layers, sizeof c->attn_layers);
  c->n_expert_layers = c->n_attn_layers;
  return MXL_OK;
}

static mxl_status parse_lora(const cJSON *recipe, mxl_train_config *c, const char *source) {
  const cJSON *lora = NULL;
  MXL_TRY(mxl_json_opt_object(recipe, "lora", &lora, source));
  cJSON empty = {0};
  empty.type = cJSON_Object;
  if (!lora) lora = &empty;
  char where[512];
  snprintf(where, sizeof where, "%s: lora", source);
  int64_t rank;
  MXL_TRY(mxl_json_opt_int_range(lora, "rank", 1, MXL_LORA_MAX_RANK, 16, &rank, where));
  c->rank = (int)rank;
  MXL_TRY(mxl_json_opt_float(lora, "alpha", 2.0f * c->rank, &c->alpha, where));
  bool rs;
  MXL_TRY(mxl_json_opt_bool(lora, "rslora", false, &rs, where));
  c->rslora = rs;
  MXL_TRY(mxl_json_opt_float(lora, "dropout", 0.0f, &c->dropout, where));
  if (c->dropout < 0 || c->dropout >= 1)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: dropout %g must be in [0, 1)", where, c->dropout);
  return parse_targets(lora, c, where);
}

static mxl_status parse_schedule(const cJSON *r, mxl_train_config *c, const char *source) {
  const char *kind;
  MXL_TRY(mxl_json_opt_string(r, "schedule", "cosine", &kind, source));
  mxl_status st = mxl_schedule_kind_parse(kind, &c->schedule.kind);
  if (st != MXL_OK) return mxl_error_prefix(st, "%s: schedule: ", source);
  MXL_TRY(mxl_json_opt_float(r, "lr", 2e-4f, &c->schedule.lr, source));
  MXL_TRY(mxl_json_opt_int(r, "warmup_steps", -1, &c->schedule.warmup, source));
  MXL_TRY(mxl_json_opt_double(r, "warmup_ratio", 0.03, &c->warmup_ratio, source));
  MXL_TRY(mxl_json_opt_float(r, "min_lr_ratio", 0.0f, &c->schedule.min_ratio, source));
  MXL_TRY(mxl_json_opt_float(r, "weight_decay", 0.0f, &c->weight_decay, source));
  MXL_TRY(mxl_json_opt_float(r, "beta1", 0.9f, &c->beta1, source));
  MXL_TRY(mxl_json_opt_float(r, "beta2", 0.999f, &c->beta2, source));
  MXL_TRY(mxl_json_opt_float(r, "eps", 1e-8f, &c->eps, source));
  MXL_TRY(mxl_json_opt_float(r, "max_grad_norm", 1.0f, &c->max_grad_norm, source));
  if (!(c->beta1 >= 0 && c->beta1 < 1 && c->beta2 >= 0 && c->beta2 < 1))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: beta1/beta2 must be in [0, 1)", source);
  return MXL_OK;
}

static mxl_status parse_data(const cJSON *r, mxl_train_config *c, const char *source) {
  MXL_TRY(mxl_json_get_string(r, "data", &c->data, source));
  MXL_TRY(mxl_json_opt_string(r, "eval_data", NULL, &c->eval_data, source));
  MXL_TRY(mxl_json_opt_double(r, "eval_fraction", 0.05, &c->eval_fraction, source));
  MXL_TRY(mxl_json_opt_int(r, "eval_count", 0, &c->eval_count, source));
  if (c->eval_fraction < 0 || c->eval_fraction >= 1)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: eval_fraction %g must be in [0, 1)", source,
                      c->eval_fraction);
  int64_t v;
  MXL_TRY(mxl_json_opt_int_range(r, "batch_size", 1, 65536, 4, &v, source));
  c->batch_size = (int)v;
  MXL_TRY(mxl_json_opt_int_range(r, "seq_len", 2, 1 << 20, 1024, &v, source));
  c->seq_len = (int)v;
  MXL_TRY(mxl_json_opt_int_range(r, "grad_accum", 1, 65536, 1, &v, source));
  c->grad_accum = (int)v;
  bool pack;
  MXL_TRY(mxl_json_opt_bool(r, "pack", true, &pack, source));
  c->pack = pack;
  MXL_TRY(mxl_json_opt_string(r, "loss_mask", "assistant", &c->loss_mask, source));
  MXL_TRY(mxl_json_opt_string(r, "analysis_rule", "earlier-turns", &c->analysis_rule, source));
  const char *truncation;
  MXL_TRY(mxl_json_opt_string(r, "truncation", "cut", &truncation, source));
  if (strcmp(truncation, "cut") && strcmp(truncation, "drop"))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: truncation '%s': expected cut or drop", source,
                      truncation);
  c->truncate_cut = !strcmp(truncation, "cut");
  const char *bad;
  MXL_TRY(mxl_json_opt_string(r, "on_bad_line", "error", &bad, source));
  if (strcmp(bad, "error") && strcmp(bad, "skip"))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: on_bad_line '%s': expected error or skip", source, bad);
  c->skip_bad_lines = !strcmp(bad, "skip");
  return MXL_OK;
}

static mxl_status parse_run(const cJSON *r, mxl_train_config *c, const char *source) {
  MXL_TRY(mxl_json_opt_string(r, "name", "custom", &c->name, source));
  MXL_TRY(mxl_json_get_string(r, "model", &c->model, source));
  MXL_TRY(mxl_json_get_string(r, "out", &c->out, source));
  MXL_TRY(mxl_json_opt_string(r, "tiny_preset", NULL, &c->tiny_preset, source));
  MXL_TRY(mxl_json_opt_string(r, "tiny_corpus", NULL, &c->tiny_corpus, source));
  const cJSON *sets = cJSON_GetObjectItemCaseSensitive(r, "tiny_set");
  if (sets && !cJSON_IsNull(sets)) {
    if (!cJSON_IsArray(sets) || cJSON_GetArraySize(sets) > 16)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: tiny_set: expected a list of up to 16 \"key=value\"",
                        source);
    for (const cJSON *it = sets->child; it; it = it->next) {
      if (!cJSON_IsString(it))
        return mxl_errorf(MXL_ERR_FORMAT, "%s: tiny_set: expected strings", source);
      c->tiny_set[c->n_tiny_set++] = it->valuestring;
    }
  }
  int64_t v;
  MXL_TRY(mxl_json_opt_int_range(r, "tiny_seed", 0, (int64_t)1 << 52, 1, &v, source));
  c->tiny_seed = (uint64_t)v;
  MXL_TRY(mxl_json_opt_int_range(r, "steps", 0, 1 << 30, 0, &v, source));
  c->steps = (int)v;
  MXL_TRY(mxl_json_opt_double(r, "epochs", 0, &c->epochs, source));
  if (c->steps == 0 && !(c->epochs > 0))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: give \"steps\" or \"epochs\"", source);
  MXL_TRY(mxl_json_opt_int_range(r, "seed", 0, (int64_t)1 << 52, 42, &v, source));
  c->seed = (uint64_t)v;
  MXL_TRY(mxl_json_opt_int(r, "eval_every", 0, &c->eval_every, source));
  MXL_TRY(mxl_json_opt_int(r, "save_every", 0, &c->save_every, source));
  MXL_TRY(mxl_json_opt_int(r, "threads", 0, &c->threads, source));
  MXL_TRY(mxl_json_opt_int(r, "max_bad_steps", 10, &c->max_bad_steps, source));
  MXL_TRY(mxl_json_opt_string(r, "backend", "cpu", &c->backend, source));
  const char *dtype;
  MXL_TRY(mxl_json_opt_string(r, "adapter_dtype", "f32", &dtype, source));
  if (strcmp(dtype, "f32") && strcmp(dtype, "bf16"))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: adapter_dtype '%s': expected f32 or bf16", source,
                      dtype);
  c->adapter_bf16 = !strcmp(dtype, "bf16");
  bool resume;
  MXL_TRY(mxl_json_opt_bool(r, "resume", false, &resume, source));
  c->resume = resume;
  return MXL_OK;
}

/* A misspelt key would otherwise be silently ignored. */
static mxl_status check_known_keys(const cJSON *obj, const char *const *known, const char *source) {
  for (const cJSON *item = obj->child; item; item = item->next) {
    int ok = 0;
    for (int i = 0; known[i] && !ok; i++) ok = !strcmp(item->string, known[i]);
    if (!ok) return mxl_errorf(MXL_ERR_FORMAT, "%s: unknown key \"%s\" (see recipes/README.md)",
                               source, item->string);
  }
  return MXL_OK;
}

static const char *const top_keys[] = {
    "name", "description", "model", "tiny_preset", "tiny_seed", "tiny_corpus", "tiny_set",
    "data", "eval_data", "eval_fraction", "eval_count", "out", "lora", "steps", "epochs",
    "batch_size", "seq_len", "grad_accum", "pack", "truncation", "lr", "schedule",
    "warmup_steps", "warmup_ratio", "min_lr_ratio", "weight_decay", "beta1", "beta2", "eps",
    "max_grad_norm", "max_bad_steps", "loss_mask", "analysis_rule", "seed", "eval_every",
    "save_every", "threads", "backend", "adapter_dtype", "resume", "on_bad_line", NULL};
static const char *const lora_keys[] = {"rank",   "alpha",         "rslora", "dropout",
                                        "targets", "layers", "expert_layers", NULL};

mxl_status mxl_train_config_parse(const cJSON *recipe, const char *source,
                                  mxl_train_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  if (!cJSON_IsObject(recipe))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: a recipe is a JSON object", source);
  MXL_TRY(mxl_json_check_unique_keys(recipe, source));
  MXL_TRY(check_known_keys(recipe, top_keys, source));
  const cJSON *lora = cJSON_GetObjectItemCaseSensitive(recipe, "lora");
  if (cJSON_IsObject(lora)) {
    char where[512];
    snprintf(where, sizeof where, "%s: lora", source);
    MXL_TRY(check_known_keys(lora, lora_keys, where));
  }
  MXL_TRY(parse_run(recipe, cfg, source));
  MXL_TRY(parse_data(recipe, cfg, source));
  MXL_TRY(parse_schedule(recipe, cfg, source));
  return parse_lora(recipe, cfg, source);
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
  cJSON *obj = recipe;
  char *part = key, *dot;
  while ((dot = strchr(part, '.'))) {
    *dot = '\0';
    cJSON *child = cJSON_GetObjectItemCaseSensitive(obj, part);
    if (!child) child = cJSON_AddObjectToObject(obj, part);
    if (!cJSON_IsObject(child))
      return mxl_errorf(MXL_ERR_ARGUMENT, "override '%s': '%s' is not an object", assignment,
                        part);
    obj = child;
    part = dot + 1;
  }
  cJSON *value = cJSON_Parse(eq + 1);
  if (!value || cJSON_IsObject(value)) {
    cJSON_Delete(value);
    value = cJSON_CreateString(eq + 1);
  }
  if (!value) return mxl_errorf(MXL_ERR_MEMORY, "override: out of memory");
  if (cJSON_GetObjectItemCaseSensitive(obj, part))
    cJSON_ReplaceItemInObjectCaseSensitive(obj, part, value);
  else
    cJSON_AddItemToObject(obj, part, value);
  return MXL_OK;
}
