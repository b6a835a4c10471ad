/* PEFT export (peft.h): a LoRA set as PEFT saves one for GptOssForCausalLM.
 * The import, in every expert layout, is peft_import.c. */
#include "adapters/peft.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/bf16.h"
#include "core/fileio.h"
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
