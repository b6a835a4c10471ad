/* PEFT interchange (peft.h): export a LoRA set as PEFT saves one for
 * GptOssForCausalLM, and import such a directory back. */
#include "adapters/peft.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/bf16.h"
#include "core/bytes.h"
#include "core/fileio.h"
#include "core/json.h"
#include "core/status.h"
#include "model/safetensors.h"

#define KEY_PREFIX "base_model.model."
enum { KEY_SIZE = 128, PATH_SIZE = 4096 };

static const char *const attn_modules[4] = {"q_proj", "k_proj", "v_proj", "o_proj"};
static const char *const expert_params[2] = {"gate_up_proj", "down_proj"};

/* Both expert projections of layer l adapted: PEFT nests two wrappers. */
static int both_experts(const mxl_lora_config *lc, int l) {
  return lc->layers[MXL_LORA_GATE_UP][l] && lc->layers[MXL_LORA_DOWN][l];
}

/* The key without the "base_model.model." prefix. */
static void bare_key(int layer, mxl_lora_target t, int nested_inner, int is_b, char *buf,
                     size_t cap) {
  char ab = is_b ? 'B' : 'A';
  if (mxl_lora_target_is_expert(t))
    snprintf(buf, cap, "model.layers.%d.mlp.experts.%slora_%c.weight", layer,
             nested_inner ? "base_layer." : "", ab);
  else
    snprintf(buf, cap, "model.layers.%d.self_attn.%s.lora_%c.weight", layer, attn_modules[t], ab);
}

void mxl_peft_key(const mxl_lora_layout *lay, int i, char *buf, size_t cap) {
  const mxl_lora_tensor *x = &lay->tensors[i];
  int inner = x->target == MXL_LORA_GATE_UP && both_experts(&lay->cfg, x->layer);
  char bare[KEY_SIZE - sizeof KEY_PREFIX];
  bare_key(x->layer, x->target, inner, x->is_b, bare, sizeof bare);
  snprintf(buf, cap, KEY_PREFIX "%s", bare);
}

/* ------------------------------------------------------------ export */

typedef struct export_item {
  char key[KEY_SIZE];
  int tensor;
} export_item;

static int compare_items(const void *a, const void *b) {
  return strcmp(((const export_item *)a)->key, ((const export_item *)b)->key);
}

/* PEFT shapes: experts flatten to [E·R, in] and [out, R·E]. */
static void peft_spec(const mxl_lora_tensor *x, const char *key, mxl_adapter_dtype dt,
                      mxl_st_spec *s) {
  memset(s, 0, sizeof *s);
  s->name = key;
  s->dtype = dt == MXL_ADAPTER_BF16 ? MXL_DT_BF16 : MXL_DT_F32;
  s->ndim = 2;
  int expert = mxl_lora_target_is_expert(x->target);
  if (!x->is_b) {
    s->shape[0] = (int64_t)x->n_experts * x->rows;
    s->shape[1] = x->cols;
  } else {
    s->shape[0] = x->rows;
    s->shape[1] = (int64_t)(expert ? x->n_experts : 1) * x->cols;
  }
}

/* Tensor i in PEFT order and dtype, into out (count elements of 2 or 4
 * bytes); tmp holds count floats. */
static void peft_bytes(const mxl_lora *lora, int i, mxl_adapter_dtype dt, float *tmp,
                       float *order, void *out) {
  const mxl_lora_tensor *x = &lora->layout->tensors[i];
  mxl_lora_tensor_read(lora, i, tmp);
  const float *src = tmp;
  if (x->is_b && mxl_lora_target_is_expert(x->target)) {
    mxl_lora_b_to_peft(order, tmp, x->n_experts, x->rows, x->cols);
    src = order;
  }
  if (dt == MXL_ADAPTER_BF16) {
    uint16_t *h = out;
    for (size_t j = 0; j < x->count; j++) h[j] = mxl_f32_to_bf16(src[j]);
  } else {
    memcpy(out, src, x->count * sizeof(float));
  }
}

static mxl_status write_tensors(const mxl_lora *lora, mxl_adapter_dtype dt, const char *path) {
  const mxl_lora_layout *lay = lora->layout;
  int n = lay->n_tensors;
  export_item *items = calloc((size_t)n, sizeof *items);
  mxl_st_spec *specs = calloc((size_t)n, sizeof *specs);
  size_t max_count = 0;
  for (int i = 0; i < n; i++)
    if (lay->tensors[i].count > max_count) max_count = lay->tensors[i].count;
  float *tmp = malloc(max_count * sizeof *tmp), *order = malloc(max_count * sizeof *order);
  void *out = malloc(max_count * sizeof(float));
  mxl_status st = MXL_OK;
  if (!items || !specs || !tmp || !order || !out)
    st = mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  for (int i = 0; st == MXL_OK && i < n; i++) {
    mxl_peft_key(lay, i, items[i].key, sizeof items[i].key);
    items[i].tensor = i;
  }
  if (st == MXL_OK) qsort(items, (size_t)n, sizeof *items, compare_items);
  for (int i = 0; st == MXL_OK && i < n; i++)
    peft_spec(&lay->tensors[items[i].tensor], items[i].key, dt, &specs[i]);
  static const char *const metadata[] = {"format", "pt"};
  mxl_st_writer *w = NULL;
  if (st == MXL_OK) st = mxl_st_writer_begin(path, specs, n, metadata, 1, &w);
  for (int i = 0; st == MXL_OK && i < n; i++) {
    int t = items[i].tensor;
    peft_bytes(lora, t, dt, tmp, order, out);
    st = mxl_st_writer_write(w, out, lay->tensors[t].count * (dt == MXL_ADAPTER_BF16 ? 2 : 4));
  }
  if (w) {
    if (st == MXL_OK) st = mxl_st_writer_commit(w);
    else mxl_st_writer_abort(w);
  }
  free(items);
  free(specs);
  free(tmp);
  free(order);
  free(out);
  return st;
}

static cJSON *target_lists(const mxl_lora_layout *lay, cJSON **params_out) {
  cJSON *modules = cJSON_CreateArray(), *params = cJSON_CreateArray();
  char name[KEY_SIZE];
  for (int t = MXL_LORA_Q; t <= MXL_LORA_O; t++) {
    int count = 0;
    for (int l = 0; l < lay->n_layers; l++) count += lay->cfg.layers[t][l] != 0;
    if (count == lay->n_layers) {
      cJSON_AddItemToArray(modules, cJSON_CreateString(attn_modules[t]));
      continue;
    }
    for (int l = 0; l < lay->n_layers; l++) {
      if (!lay->cfg.layers[t][l]) continue;
      snprintf(name, sizeof name, "model.layers.%d.self_attn.%s", l, attn_modules[t]);
      cJSON_AddItemToArray(modules, cJSON_CreateString(name));
    }
  }
  for (int l = 0; l < lay->n_layers; l++)
    for (int k = 0; k < 2; k++) {
      if (!lay->cfg.layers[MXL_LORA_GATE_UP + k][l]) continue;
      snprintf(name, sizeof name, "%d.mlp.experts.%s", l, expert_params[k]);
      cJSON_AddItemToArray(params, cJSON_CreateString(name));
    }
  *params_out = params;
  return modules;
}

static mxl_status write_config(const mxl_lora_layout *lay, const char *path) {
  cJSON *root = cJSON_CreateObject(), *params = NULL;
  cJSON_AddStringToObject(root, "peft_type", "LORA");
  cJSON_AddStringToObject(root, "task_type", "CAUSAL_LM");
  cJSON_AddNullToObject(root, "base_model_name_or_path");
  cJSON_AddNumberToObject(root, "r", lay->cfg.rank);
  cJSON_AddNumberToObject(root, "lora_alpha", lay->cfg.alpha);
  cJSON_AddBoolToObject(root, "use_rslora", lay->cfg.rslora != 0);
  cJSON_AddNumberToObject(root, "lora_dropout", 0.0);
  cJSON_AddStringToObject(root, "bias", "none");
  cJSON_AddBoolToObject(root, "fan_in_fan_out", 0);
  cJSON_AddBoolToObject(root, "use_dora", 0);
  cJSON_AddBoolToObject(root, "lora_bias", 0);
  cJSON_AddBoolToObject(root, "init_lora_weights", 1);
  cJSON_AddBoolToObject(root, "inference_mode", 1);
  cJSON_AddItemToObject(root, "rank_pattern", cJSON_CreateObject());
  cJSON_AddItemToObject(root, "alpha_pattern", cJSON_CreateObject());
  cJSON_AddItemToObject(root, "target_modules", target_lists(lay, &params));
  cJSON_AddItemToObject(root, "target_parameters", params);
  char *text = cJSON_Print(root);
  cJSON_Delete(root);
  if (!text) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  mxl_status st = mxl_write_file_atomic(path, text, strlen(text));
  free(text);
  return st;
}

mxl_status mxl_peft_export(const mxl_lora *lora, mxl_adapter_dtype dtype, const char *dir) {
  if (dtype != MXL_ADAPTER_F32 && dtype != MXL_ADAPTER_BF16)
    return mxl_errorf(MXL_ERR_ARGUMENT, "peft export: unknown dtype %d", (int)dtype);
  char path[PATH_SIZE];
  MXL_TRY(mxl_make_dirs(dir));
  snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
  MXL_TRY(write_tensors(lora, dtype, path));
  snprintf(path, sizeof path, "%s/adapter_config.json", dir);
  return write_config(lora->layout, path);
}

/* ------------------------------------------------------------ import */

typedef struct peft_settings {
  int rank;
  float alpha;
  bool rslora;
  /* target_parameters: which expert projections each layer targets */
  uint8_t expert[2][MXL_MAX_LAYERS];
} peft_settings;

static mxl_status require_false(const cJSON *root, const char *key, const char *src) {
  bool v;
  MXL_TRY(mxl_json_opt_bool(root, key, false, &v, src));
  if (v) return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: %s: true is not supported", src, key);
  return MXL_OK;
}

static mxl_status require_empty_object(const cJSON *root, const char *key, const char *src) {
  const cJSON *o;
  MXL_TRY(mxl_json_opt_object(root, key, &o, src));
  if (o && o->child)
    return mxl_errorf(MXL_ERR_UNSUPPORTED,
                      "%s: %s: per-module ranks or alphas are not supported", src, key);
  return MXL_OK;
}

/* PEFT's rule: a parameter "model.layers.l.mlp.experts.p" is targeted by
 * entry t when it equals t or ends with "." + t. */
static int param_matches(const char *full, const char *t) {
  size_t n = strlen(full), m = strlen(t);
  if (!strcmp(full, t)) return 1;
  return n > m && full[n - m - 1] == '.' && !strcmp(full + n - m, t);
}

static mxl_status parse_target_parameters(const cJSON *root, int n_layers, const char *src,
                                          peft_settings *s) {
  const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "target_parameters");
  if (!list || cJSON_IsNull(list)) return MXL_OK;
  if (!cJSON_IsArray(list))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: target_parameters: expected an array, got %s", src,
                      mxl_json_type_name(list));
  int index = 0;
  for (const cJSON *t = list->child; t; t = t->next, index++) {
    if (!cJSON_IsString(t))
      return mxl_errorf(MXL_ERR_FORMAT, "%s: target_parameters[%d]: expected a string", src,
                        index);
    int matched = 0;
    for (int l = 0; l < n_layers; l++)
      for (int k = 0; k < 2; k++) {
        char full[KEY_SIZE];
        snprintf(full, sizeof full, "model.layers.%d.mlp.experts.%s", l, expert_params[k]);
        if (param_matches(full, t->valuestring)) {
          s->expert[k][l] = 1;
          matched = 1;
        }
      }
    if (!matched)
      return mxl_errorf(MXL_ERR_UNSUPPORTED,
                        "%s: target_parameters[%d]: \"%.80s\" names no expert gate_up_proj or "
                        "down_proj of this model",
                        src, index, t->valuestring);
  }
  return MXL_OK;
}

static mxl_status parse_peft_config(const char *path, int n_layers, peft_settings *s) {
  memset(s, 0, sizeof *s);
  cJSON *root = NULL;
  MXL_TRY(mxl_json_parse_file(path, 1 << 20, &root));
  mxl_status st = MXL_OK;
  const char *type;
  if (!cJSON_IsObject(root))
    st = mxl_errorf(MXL_ERR_FORMAT, "%s: expected a JSON object", path);
  if (st == MXL_OK) st = mxl_json_opt_string(root, "peft_type", "LORA", &type, path);
  if (st == MXL_OK && strcmp(type, "LORA"))
    st = mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: peft_type \"%.40s\" is not LORA", path, type);
  int64_t rank = 0;
  if (st == MXL_OK) st = mxl_json_get_int_range(root, "r", 1, MXL_LORA_MAX_RANK, &rank, path);
  if (st == MXL_OK) st = mxl_json_get_float(root, "lora_alpha", &s->alpha, path);
  if (st == MXL_OK) st = mxl_json_opt_bool(root, "use_rslora", false, &s->rslora, path);
  if (st == MXL_OK) st = require_false(root, "use_dora", path);
  if (st == MXL_OK) st = require_false(root, "lora_bias", path);
  if (st == MXL_OK) st = require_false(root, "fan_in_fan_out", path);
  if (st == MXL_OK) st = require_empty_object(root, "rank_pattern", path);
  if (st == MXL_OK) st = require_empty_object(root, "alpha_pattern", path);
  if (st == MXL_OK) st = parse_target_parameters(root, n_layers, path, s);
  s->rank = (int)rank;
  cJSON_Delete(root);
  return st;
}

static mxl_status read_f32(const mxl_st_tensor *t, float *dst, const char *file) {
  size_t n = 1;
  for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
  const uint8_t *p = t->data;
  for (size_t j = 0; j < n; j++) {
    switch (t->dtype) {
    case MXL_DT_F32: memcpy(&dst[j], p + 4 * j, 4); break;
    case MXL_DT_BF16: dst[j] = mxl_bf16_to_f32(mxl_get_le16(p + 2 * j)); break;
    case MXL_DT_F16: {
      unsigned h = mxl_get_le16(p + 2 * j), e = (h >> 10) & 31, m = h & 1023;
      float v = e == 0 ? ldexpf((float)m, -24)
                : e == 31 ? (m ? NAN : INFINITY)
                          : ldexpf((float)(m | 1024), (int)e - 25);
      dst[j] = h & 0x8000 ? -v : v;
      break;
    }
    default:
      return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: %s: dtype %s (expected F32, BF16 or F16)",
                        file, t->name, mxl_dtype_name(t->dtype));
    }
  }
  return MXL_OK;
}

/* The file's tensor for a bare key, with or without the prefix. */
static const mxl_st_tensor *find_key(const mxl_safetensors *st, const char *bare) {
  char key[2 * KEY_SIZE];
  snprintf(key, sizeof key, KEY_PREFIX "%s", bare);
  const mxl_st_tensor *t = mxl_safetensors_find(st, key);
  return t ? t : mxl_safetensors_find(st, bare);
}

/* Fills lc from what the file holds: attention pairs by key, experts by
 * target_parameters (the keys do not name the projection). */
static mxl_status collect_targets(const mxl_safetensors *st, const mxl_config *c,
                                  const peft_settings *s, const char *file,
                                  mxl_lora_config *lc) {
  mxl_lora_config_init(lc, s->rank, s->alpha);
  lc->rslora = s->rslora;
  for (int l = 0; l < c->n_layers; l++)
    for (int t = 0; t < MXL_LORA_N_TARGETS; t++) {
      int expert = mxl_lora_target_is_expert((mxl_lora_target)t);
      if (expert) {
        lc->layers[t][l] = s->expert[t - MXL_LORA_GATE_UP][l];
        continue;
      }
      char a[KEY_SIZE], b[KEY_SIZE];
      bare_key(l, (mxl_lora_target)t, 0, 0, a, sizeof a);
      bare_key(l, (mxl_lora_target)t, 0, 1, b, sizeof b);
      int has_a = find_key(st, a) != NULL, has_b = find_key(st, b) != NULL;
      if (has_a != has_b)
        return mxl_errorf(MXL_ERR_FORMAT, "%s: %s without its lora_%c", file, has_a ? a : b,
                          has_a ? 'B' : 'A');
      lc->layers[t][l] = (uint8_t)has_a;
    }
  return MXL_OK;
}

/* Reads tensor i of the new set from the file, checking PEFT's shape. */
static mxl_status import_tensor(const mxl_safetensors *st, mxl_lora *lora, int i, float *tmp,
                                const char *file) {
  const mxl_lora_layout *lay = lora->layout;
  const mxl_lora_tensor *x = &lay->tensors[i];
  char key[KEY_SIZE];
  int inner = x->target == MXL_LORA_GATE_UP && both_experts(&lay->cfg, x->layer);
  bare_key(x->layer, x->target, inner, x->is_b, key, sizeof key);
  const mxl_st_tensor *t = find_key(st, key);
  if (!t)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: missing " KEY_PREFIX "%s (%s)", file, key, x->name);
  mxl_st_spec want;
  peft_spec(x, key, MXL_ADAPTER_F32, &want);
  if (t->ndim != 2 || t->shape[0] != want.shape[0] || t->shape[1] != want.shape[1])
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: %s: a %d-D tensor [%lld, %lld%s], expected [%lld, %lld] for rank %d "
                      "and this model's %s",
                      file, t->name, t->ndim, t->ndim > 0 ? (long long)t->shape[0] : 0LL,
                      t->ndim > 1 ? (long long)t->shape[1] : 0LL, t->ndim > 2 ? ", ..." : "",
                      (long long)want.shape[0], (long long)want.shape[1], lay->cfg.rank,
                      mxl_lora_target_name(x->target));
  float *dst = lora->params + x->offset;
  if (x->is_b && mxl_lora_target_is_expert(x->target)) {
    MXL_TRY(read_f32(t, tmp, file));
    mxl_lora_b_from_peft(dst, tmp, x->n_experts, x->rows, x->cols);
    return MXL_OK;
  }
  return read_f32(t, dst, file);
}

static mxl_status import_from(const mxl_safetensors *st, const mxl_config *c,
                              const peft_settings *s, const char *file, mxl_lora **out) {
  mxl_lora_config lc;
  MXL_TRY(collect_targets(st, c, s, file, &lc));
  mxl_status status = mxl_lora_create(c, &lc, NULL, out);
  if (status != MXL_OK) return mxl_error_prefix(status, "%s: ", file);
  mxl_lora *lora = *out;
  size_t max_count = 0;
  for (int i = 0; i < lora->layout->n_tensors; i++)
    if (lora->layout->tensors[i].count > max_count) max_count = lora->layout->tensors[i].count;
  float *tmp = malloc(max_count * sizeof *tmp);
  if (!tmp) status = mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", file);
  for (int i = 0; status == MXL_OK && i < lora->layout->n_tensors; i++)
    status = import_tensor(st, lora, i, tmp, file);
  free(tmp);
  /* Every key must have been one of ours: anything else (lm_head, router,
   * embeddings, biases) would be silently dropped. */
  if (status == MXL_OK && st->n_tensors != lora->layout->n_tensors) {
    for (int j = 0; j < st->n_tensors; j++) {
      int known = 0;
      for (int i = 0; i < lora->layout->n_tensors && !known; i++) {
        char key[KEY_SIZE];
        mxl_peft_key(lora->layout, i, key, sizeof key);
        known = !strcmp(key, st->tensors[j].name) ||
                !strcmp(key + strlen(KEY_PREFIX), st->tensors[j].name);
      }
      if (!known) {
        status = mxl_errorf(MXL_ERR_UNSUPPORTED,
                            "%s: %s: not a LoRA tensor mxlora knows (attention q/k/v/o or "
                            "experts listed in target_parameters)",
                            file, st->tensors[j].name);
        break;
      }
    }
  }
  if (status != MXL_OK) {
    mxl_lora_destroy(lora);
    *out = NULL;
  }
  return status;
}

mxl_status mxl_peft_import(const char *dir, const mxl_config *c, mxl_lora **out) {
  *out = NULL;
  char path[PATH_SIZE];
  peft_settings s;
  snprintf(path, sizeof path, "%s/adapter_config.json", dir);
  MXL_TRY(parse_peft_config(path, c->n_layers, &s));
  snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
  mxl_safetensors *st = NULL;
  MXL_TRY(mxl_safetensors_open(path, &st));
  mxl_status status = import_from(st, c, &s, path, out);
  mxl_safetensors_close(st);
  return status;
}
