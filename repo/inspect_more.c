/* The parts of `inspect` for what mxlora writes besides checkpoints: PEFT
 * adapter folders, merged model folders and GGUF files (inspect.h). */
#include "repo/inspect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/gguf.h"
#include "core/fileio.h"
#include "core/json.h"
#include "core/status.h"
#include "model/safetensors.h"

static double num(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItem(o, key);
  return cJSON_IsNumber(v) ? v->valuedouble : 0.0;
}

static const char *str(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItem(o, key);
  return cJSON_IsString(v) ? v->valuestring : "";
}

/* ------------------------------------------------------------ PEFT */

/* The expert layout a PEFT key uses (peft_import.c lists them). */
static const char *peft_key_layout(const char *key) {
  const char *e = strstr(key, "mlp.experts.");
  if (strstr(key, "self_attn.") && strstr(key, ".lora_")) return "attention";
  if (!e || !strstr(key, ".lora_")) return "other";
  e += strlen("mlp.experts.");
  if (!strncmp(e, "gate_up_projs.", 14) || !strncmp(e, "down_projs.", 11))
    return "experts: Unsloth per-expert modules (gate_up_projs.N, down_projs.N)";
  if (*e >= '0' && *e <= '9') return "experts: per-expert modules (experts.N.<projection>)";
  if (!strncmp(e, "lora_", 5) || !strncmp(e, "base_layer.lora_", 16))
    return "experts: PEFT target_parameters (one fused pair per projection)";
  return "other";
}

static void count_into(cJSON *obj, const char *key) {
  cJSON *v = cJSON_GetObjectItem(obj, key);
  if (v) cJSON_SetNumberValue(v, v->valuedouble + 1);
  else cJSON_AddNumberToObject(obj, key, 1);
}

void mxl_inspect_add_peft(const char *dir, cJSON *report) {
  char *cfg_path = mxl_path_join(dir, "adapter_config.json");
  char *st_path = mxl_path_join(dir, "adapter_model.safetensors");
  if (!cfg_path || !st_path || !mxl_path_exists(cfg_path)) goto done;
  cJSON *peft = cJSON_AddObjectToObject(report, "peft");
  cJSON *cfg = NULL;
  if (mxl_json_parse_file(cfg_path, 1 << 20, &cfg) != MXL_OK) {
    cJSON_AddStringToObject(peft, "error", mxl_last_error());
    goto done;
  }
  static const char *const keys[] = {"peft_type", "r", "lora_alpha", "use_rslora",
                                     "target_modules", "target_parameters", "rank_pattern",
                                     "alpha_pattern", "use_dora", "base_model_name_or_path"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, keys[i]);
    if (v) cJSON_AddItemToObject(peft, keys[i], cJSON_Duplicate(v, 1));
  }
  cJSON_Delete(cfg);
  mxl_safetensors *st = NULL;
  if (mxl_safetensors_open(st_path, &st) != MXL_OK) {
    cJSON_AddStringToObject(peft, "error", mxl_last_error());
    goto done;
  }
  cJSON *layouts = cJSON_AddObjectToObject(peft, "tensors_by_layout");
  double params = 0;
  for (int i = 0; i < st->n_tensors; i++) {
    count_into(layouts, peft_key_layout(st->tensors[i].name));
    double n = 1;
    for (int d = 0; d < st->tensors[i].ndim; d++) n *= (double)st->tensors[i].shape[d];
    params += n;
  }
  cJSON_AddNumberToObject(peft, "tensors", st->n_tensors);
  cJSON_AddNumberToObject(peft, "parameters", params);
  cJSON_AddStringToObject(peft, "check",
                          cJSON_GetObjectItem(layouts, "other")
                              ? "holds tensors mxlora cannot import (see \"other\")"
                              : "mxlora import reads this layout (mxlora import DIR --model BASE)");
  mxl_safetensors_close(st);
done:
  free(cfg_path);
  free(st_path);
}

static void text_peft(mxl_strbuf *b, const cJSON *p) {
  if (!p) return;
  mxl_strbuf_printf(b, "\nPEFT adapter\n");
  const char *fields[] = {"r", "lora_alpha", "use_rslora", "target_modules", "target_parameters",
                          "rank_pattern", "alpha_pattern", "base_model_name_or_path"};
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    const cJSON *v = cJSON_GetObjectItem(p, fields[i]);
    if (!v) continue;
    char *t = cJSON_PrintUnformatted(v);
    mxl_strbuf_printf(b, "  %-24s %.300s\n", fields[i], t ? t : "?");
    free(t);
  }
  mxl_strbuf_printf(b, "  %.0f tensors, %.0f parameters\n", num(p, "tensors"), num(p, "parameters"));
  const cJSON *l;
  cJSON_ArrayForEach(l, cJSON_GetObjectItem(p, "tensors_by_layout"))
    mxl_strbuf_printf(b, "    %4.0f %s\n", l->valuedouble, l->string);
  if (*str(p, "error")) mxl_strbuf_printf(b, "  unreadable: %s\n", str(p, "error"));
  else mxl_strbuf_printf(b, "  mxlora check: %s\n", str(p, "check"));
}

/* ------------------------------------------------------------ merged */

void mxl_inspect_add_merge(const char *dir, cJSON *report) {
  char *path = mxl_path_join(dir, "mxlora_merge_report.json");
  cJSON *r = NULL;
  if (path && mxl_path_exists(path) && mxl_json_parse_file(path, 64 << 20, &r) == MXL_OK) {
    cJSON *m = cJSON_AddObjectToObject(report, "merged");
    cJSON_AddStringToObject(m, "dtype", str(r, "dtype"));
    cJSON *ads = cJSON_GetObjectItem(r, "adapters");
    if (ads) cJSON_AddItemToObject(m, "adapters", cJSON_Duplicate(ads, 1));
    cJSON *sum = cJSON_GetObjectItem(r, "summary");
    if (sum) cJSON_AddItemToObject(m, "summary", cJSON_Duplicate(sum, 1));
    cJSON_Delete(r);
  }
  free(path);
}

static void text_merge(mxl_strbuf *b, const cJSON *m) {
  if (!m) return;
  mxl_strbuf_printf(b, "\nMerged by mxlora (%s)\n", str(m, "dtype"));
  const cJSON *a;
  cJSON_ArrayForEach(a, cJSON_GetObjectItem(m, "adapters"))
    mxl_strbuf_printf(b, "  adapter %s at scale %g\n", str(a, "path"), num(a, "scale"));
  const cJSON *s = cJSON_GetObjectItem(m, "summary");
  if (s && num(s, "tensors") > 0)
    mxl_strbuf_printf(b, "  %.0f re-quantized expert tensors: %.1f%% of the adapters' expert delta "
                         "survives MXFP4, weights' relative RMS error %.5f%s%s\n",
                      num(s, "tensors"), 100 * num(s, "delta_kept"), num(s, "rel_rms_error"),
                      *str(s, "warning") ? "\n  WARNING: " : "", str(s, "warning"));
}

/* ------------------------------------------------------------ GGUF */

static cJSON *kv_json(const mxl_gguf_kv *kv) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "key", kv->key);
  if (kv->type == MXL_GGUF_STRING) cJSON_AddStringToObject(o, "value", kv->str);
  else if (kv->type == MXL_GGUF_ARRAY) {
    char t[64];
    snprintf(t, sizeof t, "array of %llu (type %d)", (unsigned long long)kv->array_count,
             (int)kv->array_type);
    cJSON_AddStringToObject(o, "value", t);
  } else if (kv->type == MXL_GGUF_BOOL) cJSON_AddBoolToObject(o, "value", kv->number != 0);
  else cJSON_AddNumberToObject(o, "value", kv->number);
  return o;
}

/* "blk.7.ffn_up_exps.weight.lora_b" -> "blk.{i}.ffn_up_exps.weight.lora_b" */
static void collapse(const char *name, char *out, size_t cap) {
  const char *p = strstr(name, "blk.");
  if (p == name) {
    const char *q = name + 4;
    while (*q >= '0' && *q <= '9') q++;
    if (q > name + 4 && *q == '.') {
      snprintf(out, cap, "blk.{i}%s", q);
      return;
    }
  }
  snprintf(out, cap, "%s", name);
}

static void gguf_tensors_json(const mxl_gguf *g, cJSON *o) {
  cJSON *groups = cJSON_AddArrayToObject(o, "tensor_groups");
  int pairs = 0, rank = -1, rank_mixed = 0;
  for (int i = 0; i < g->n_tensors; i++) {
    const mxl_gguf_tensor *t = &g->tensors[i];
    char pattern[128], tn[16];
    collapse(t->name, pattern, sizeof pattern);
    size_t n = strlen(t->name);
    if (n > 7 && !strcmp(t->name + n - 7, ".lora_b")) {
      pairs++;
      if (rank < 0) rank = (int)t->ne[0];
      else if (rank != t->ne[0]) rank_mixed = 1;
    }
    cJSON *e = NULL, *it;
    cJSON_ArrayForEach(it, groups) if (!strcmp(str(it, "name"), pattern)) e = it;
    if (e) {
      cJSON_SetNumberValue(cJSON_GetObjectItem(e, "count"), num(e, "count") + 1);
      continue;
    }
    e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "name", pattern);
    cJSON *ne = cJSON_AddArrayToObject(e, "ne");
    for (int d = 0; d < t->n_dims; d++) cJSON_AddItemToArray(ne, cJSON_CreateNumber((double)t->ne[d]));
    cJSON_AddStringToObject(e, "type", mxl_ggml_type_name(t->type, tn));
    cJSON_AddNumberToObject(e, "count", 1);
    cJSON_AddItemToArray(groups, e);
  }
  cJSON_AddNumberToObject(o, "lora_pairs", pairs);
  if (rank > 0 && !rank_mixed) cJSON_AddNumberToObject(o, "lora_rank", rank);
}

mxl_status mxl_inspect_gguf(const char *path, cJSON *report) {
  mxl_mapping map;
  MXL_TRY(mxl_mapping_open(path, &map));
  mxl_gguf *g = NULL;
  mxl_status st = mxl_gguf_parse(map.data, map.size, path, 0, &g);
  cJSON *o = cJSON_AddObjectToObject(report, "gguf");
  cJSON_AddStringToObject(o, "check", st == MXL_OK ? "ok" : mxl_last_error());
  if (st == MXL_OK) {
    cJSON_AddNumberToObject(o, "version", g->version);
    cJSON_AddNumberToObject(o, "tensors", g->n_tensors);
    cJSON *kvs = cJSON_AddArrayToObject(o, "metadata");
    for (int i = 0; i < g->n_kv; i++) cJSON_AddItemToArray(kvs, kv_json(&g->kv[i]));
    const mxl_gguf_kv *type = mxl_gguf_find_kv(g, "general.type");
    const mxl_gguf_kv *alpha = mxl_gguf_find_kv(g, "adapter.lora.alpha");
    int adapter = type && type->str && !strcmp(type->str, "adapter");
    cJSON_AddStringToObject(o, "kind", adapter ? "LoRA adapter (llama.cpp --lora)" : "model");
    gguf_tensors_json(g, o);
    double rank = num(o, "lora_rank");
    if (adapter && alpha && rank > 0)
      cJSON_AddNumberToObject(o, "scaling", alpha->number / rank);
  }
  mxl_gguf_free(g);
  mxl_mapping_close(&map);
  return MXL_OK;
}

static void text_gguf(mxl_strbuf *b, const cJSON *g) {
  if (!g) return;
  mxl_strbuf_printf(b, "\nGGUF %s, version %.0f, %.0f tensors\n", str(g, "kind"), num(g, "version"),
                    num(g, "tensors"));
  mxl_strbuf_printf(b, "  mxlora check: %s\n", str(g, "check"));
  if (num(g, "lora_pairs") > 0)
    mxl_strbuf_printf(b, "  %.0f LoRA pairs, rank %.0f, scaling alpha/rank %g\n",
                      num(g, "lora_pairs"), num(g, "lora_rank"), num(g, "scaling"));
  const cJSON *kv;
  mxl_strbuf_printf(b, "  metadata:\n");
  cJSON_ArrayForEach(kv, cJSON_GetObjectItem(g, "metadata")) {
    const cJSON *v = cJSON_GetObjectItem(kv, "value");
    char *t = cJSON_PrintUnformatted(v);
    mxl_strbuf_printf(b, "    %-32s %.120s\n", str(kv, "key"), t ? t : "?");
    free(t);
  }
  mxl_strbuf_printf(b, "  tensors:\n");
  const cJSON *e;
  cJSON_ArrayForEach(e, cJSON_GetObjectItem(g, "tensor_groups")) {
    char *ne = cJSON_PrintUnformatted(cJSON_GetObjectItem(e, "ne"));
    mxl_strbuf_printf(b, "    %-44s ne %-18s %s", str(e, "name"), ne ? ne : "?", str(e, "type"));
    if (num(e, "count") > 1) mxl_strbuf_printf(b, " x %.0f", num(e, "count"));
    mxl_strbuf_printf(b, "\n");
    free(ne);
  }
}

int mxl_inspect_more_problems(const cJSON *report, const char **what, int cap) {
  int n = 0;
  const char *peft = str(cJSON_GetObjectItem(report, "peft"), "error");
  const cJSON *g = cJSON_GetObjectItem(report, "gguf");
  if (*peft && n < cap) what[n++] = peft;
  if (g && strcmp(str(g, "check"), "ok") && n < cap) what[n++] = str(g, "check");
  return n;
}

void mxl_inspect_text_more(mxl_strbuf *b, const cJSON *report) {
  text_peft(b, cJSON_GetObjectItem(report, "peft"));
  text_merge(b, cJSON_GetObjectItem(report, "merged"));
  text_gguf(b, cJSON_GetObjectItem(report, "gguf"));
}
