/* mxl_inspect: explains a gpt-oss repository, any folder or file of it, or
 * any .safetensors file. The report is built once as a JSON tree (what
 * --json prints) and the plain-text report is rendered from that tree, so
 * both always say the same thing. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/fileio.h"
#include "core/status.h"
#include "core/strbuf.h"
#include "datasets/tokenizer.h"
#include "model/checkpoint.h"
#include "repo/inspect.h"

/* 1234567 -> "1,234,567" */
static const char *grouped(int64_t v, char buf[32]) {
  char raw[32];
  snprintf(raw, sizeof raw, "%lld", (long long)(v < 0 ? -v : v));
  size_t len = strlen(raw), o = 0;
  if (v < 0) buf[o++] = '-';
  for (size_t i = 0; i < len; i++) {
    if (i && (len - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = raw[i];
  }
  buf[o] = '\0';
  return buf;
}

static const char *human_bytes(double b, char buf[32]) {
  static const char *const units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000.0 && u < 4) b /= 1000.0, u++;
  snprintf(buf, 32, u ? "%.2f %s" : "%.0f %s", b, units[u]);
  return buf;
}

/* ------------------------------------------------------------ files */

typedef struct file_role {
  const char *match; /* exact name, or a suffix when it starts with '*' */
  const char *role;
} file_role;

static const file_role roles[] = {
    {"generation_config.json", "generation defaults (stop token ids, sampling)"},
    {"tokenizer.json", "tokenizer for Hugging Face tokenizers (byte-level BPE, o200k_harmony)"},
    {"tokenizer_config.json", "tokenizer settings (special tokens, model_max_length)"},
    {"special_tokens_map.json", "names of the bos/eos/pad special tokens"},
    {"chat_template.jinja", "chat template (harmony format, Jinja)"},
    {"model.safetensors.index.json", "shard index: which file holds each tensor"},
    {"dtypes.json", "dtype of each tensor (BF16, FP4 blocks, UE8 scales)"},
    {"model.bin", "Metal runtime file: config, tokenizer and all weights in one"},
    {"README.md", "model card"},
    {"LICENSE", "license"},
    {"USAGE_POLICY", "usage policy"},
    {".gitattributes", "git LFS settings"},
    {"adapter_config.json", "PEFT adapter settings (rank, alpha, targets)"},
    {"adapter_model.safetensors", "PEFT adapter tensors (lora_A / lora_B)"},
    {"mxlora_merge_report.json", "mxlora merge report (MXFP4 delta survival per tensor)"},
    {"*.gguf", "GGUF file (llama.cpp)"},
    {"*.tiktoken", "tiktoken rank file (ordinary tokens)"},
    {"*.safetensors", "weights (safetensors)"},
};

static int name_matches(const char *name, const char *match) {
  if (match[0] != '*') return strcmp(name, match) == 0;
  size_t n = strlen(name), k = strlen(match + 1);
  return n >= k && strcmp(name + n - k, match + 1) == 0;
}

static const char *file_role_of(const char *name, int original_config) {
  if (!strcmp(name, "config.json"))
    return original_config ? "model configuration (OpenAI reference field names)"
                           : "model configuration (Hugging Face GptOssConfig)";
  if (!strncmp(name, "model-", 6) && name_matches(name, "*.safetensors"))
    return "weights shard (Hugging Face numbering: model-<index from 0>-of-<last index>)";
  if (!strncmp(name, "model--", 7) && name_matches(name, "*.safetensors"))
    return "weights shard (original/ numbering: model--<index from 1>-of-<count>)";
  for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
    if (name_matches(name, roles[i].match)) return roles[i].role;
  return "other";
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorted file names of a folder (not . or ..); NULL-terminated, malloc'd. */
static char **list_dir(const char *dir) {
  DIR *dp = opendir(dir);
  if (!dp) return NULL;
  size_t n = 0, cap = 16;
  char **names = malloc(cap * sizeof *names);
  struct dirent *e;
  while (names && (e = readdir(dp)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (n + 2 > cap) {
      char **grown = realloc(names, (cap *= 2) * sizeof *names);
      if (!grown) break;
      names = grown;
    }
    names[n++] = strdup(e->d_name);
  }
  closedir(dp);
  if (!names) return NULL;
  names[n] = NULL;
  qsort(names, n, sizeof *names, cmp_str);
  return names;
}

static void free_list(char **names) {
  for (size_t i = 0; names && names[i]; i++) free(names[i]);
  free(names);
}

static double file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (double)st.st_size : -1.0;
}

static int is_original_config(const char *path) {
  char *text = NULL;
  size_t n = 0;
  if (mxl_read_file(path, 1 << 20, &text, &n) != MXL_OK) return 0;
  int yes = strstr(text, "\"rope_ntk_beta\"") && !strstr(text, "\"model_type\"");
  free(text);
  return yes;
}

static cJSON *files_json(const char *dir, const char *prefix) {
  cJSON *arr = cJSON_CreateArray();
  char **names = list_dir(dir);
  for (size_t i = 0; names && names[i]; i++) {
    char *path = mxl_path_join(dir, names[i]);
    if (path && !mxl_path_is_dir(path)) {
      cJSON *f = cJSON_CreateObject();
      char shown[512];
      snprintf(shown, sizeof shown, "%s%s", prefix, names[i]);
      cJSON_AddStringToObject(f, "name", shown);
      cJSON_AddNumberToObject(f, "bytes", file_size(path));
      int orig = !strcmp(names[i], "config.json") && is_original_config(path);
      cJSON_AddStringToObject(f, "role", file_role_of(names[i], orig));
      cJSON_AddItemToArray(arr, f);
    }
    free(path);
  }
  free_list(names);
  return arr;
}

static double num(const cJSON *o, const char *key);
static const char *str(const cJSON *o, const char *key);

/* ------------------------------------------------------------ tensors */

/* "model.layers.7.mlp.router.weight" -> "model.layers.{i}.mlp.router.weight" */
static void collapse_name(const char *name, char *out, size_t cap) {
  size_t o = 0;
  for (const char *p = name; *p && o + 4 < cap;) {
    if (*p == '.' && p[1] >= '0' && p[1] <= '9') {
      const char *q = p + 1;
      while (*q >= '0' && *q <= '9') q++;
      if (*q == '.' || *q == '\0') {
        o += (size_t)snprintf(out + o, cap - o, ".{i}");
        p = q;
        continue;
      }
    }
    out[o++] = *p++;
  }
  out[o] = '\0';
}

static mxl_tensor_role role_of_name(const char *name) {
  mxl_tensor_kind kind;
  int layer;
  if (mxl_tensor_name_parse(name, &kind, &layer)) return mxl_tensor_kind_role(kind);
  return MXL_ROLE_COUNT;
}

static const char *role_name(mxl_tensor_role r) {
  return r == MXL_ROLE_COUNT ? "other" : mxl_tensor_role_name(r);
}

/* Parameters a tensor stores: MXFP4 blocks hold 2 per byte; scales none. */
static int64_t tensor_params(const char *name, mxl_dtype dt, int64_t elements) {
  mxl_tensor_kind kind;
  int layer;
  if (dt == MXL_DT_U8 && mxl_tensor_name_parse(name, &kind, &layer)) {
    if (kind == MXL_T_GU_BLOCKS || kind == MXL_T_DOWN_BLOCKS) return elements * 2;
    if (kind == MXL_T_GU_SCALES || kind == MXL_T_DOWN_SCALES) return 0;
  }
  return elements;
}

static cJSON *shape_json(const int64_t *shape, int ndim) {
  cJSON *a = cJSON_CreateArray();
  for (int i = 0; i < ndim; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)shape[i]));
  return a;
}

/* groups[role] = {role, tensors, parameters, bytes, entries: [pattern...]} */
typedef struct group_acc {
  cJSON *group, *entries;
  double tensors, params, bytes;
} group_acc;

static void add_tensor(group_acc *g, const char *name, mxl_dtype dt, const int64_t *shape,
                       int ndim, double bytes, const char *note) {
  char pattern[160];
  collapse_name(name, pattern, sizeof pattern);
  int64_t elements = 1;
  for (int i = 0; i < ndim; i++) elements *= shape[i];
  double params = (double)tensor_params(name, dt, elements);
  g->tensors += 1, g->params += params, g->bytes += bytes;
  cJSON *e;
  cJSON_ArrayForEach(e, g->entries) {
    if (!strcmp(cJSON_GetObjectItem(e, "name")->valuestring, pattern)) {
      cJSON *count = cJSON_GetObjectItem(e, "count");
      cJSON_SetNumberValue(count, count->valuedouble + 1);
      cJSON *b = cJSON_GetObjectItem(e, "bytes");
      cJSON_SetNumberValue(b, b->valuedouble + bytes);
      return;
    }
  }
  e = cJSON_CreateObject();
  cJSON_AddStringToObject(e, "name", pattern);
  cJSON_AddItemToObject(e, "shape", shape_json(shape, ndim));
  cJSON_AddStringToObject(e, "dtype", mxl_dtype_name(dt));
  cJSON_AddNumberToObject(e, "count", 1);
  cJSON_AddNumberToObject(e, "bytes", bytes);
  if (note) cJSON_AddStringToObject(e, "note", note);
  cJSON_AddItemToArray(g->entries, e);
}

static cJSON *groups_finish(group_acc *acc, int n, double *total_params, double *total_bytes) {
  cJSON *arr = cJSON_CreateArray();
  *total_params = *total_bytes = 0;
  for (int r = 0; r < n; r++) {
    if (!acc[r].group) continue;
    cJSON_AddNumberToObject(acc[r].group, "tensors", acc[r].tensors);
    cJSON_AddNumberToObject(acc[r].group, "parameters", acc[r].params);
    cJSON_AddNumberToObject(acc[r].group, "bytes", acc[r].bytes);
    if (r == MXL_ROLE_EXPERTS && acc[r].params > 0)
      cJSON_AddNumberToObject(acc[r].group, "bits_per_weight", acc[r].bytes * 8 / acc[r].params);
    cJSON_AddItemToObject(acc[r].group, "entries", acc[r].entries);
    cJSON_AddItemToArray(arr, acc[r].group);
    *total_params += acc[r].params, *total_bytes += acc[r].bytes;
  }
  return arr;
}

static group_acc *group_for(group_acc *acc, mxl_tensor_role r) {
  if (!acc[r].group) {
    acc[r].group = cJSON_CreateObject();
    cJSON_AddStringToObject(acc[r].group, "role", role_name(r));
    acc[r].entries = cJSON_CreateArray();
  }
  return &acc[r];
}

static void add_tensor_summary(cJSON *obj, group_acc *acc) {
  double params, bytes;
  cJSON *groups = groups_finish(acc, MXL_ROLE_COUNT + 1, &params, &bytes);
  cJSON_AddNumberToObject(obj, "tensor_parameters", params);
  cJSON_AddNumberToObject(obj, "tensor_bytes", bytes);
  cJSON_AddItemToObject(obj, "tensor_groups", groups);
}

/* Every tensor of a safetensors file or index, grouped by role. */
static mxl_status safetensors_tensors(const char *weights, cJSON *obj) {
  mxl_safetensors *st = NULL;
  MXL_TRY(mxl_safetensors_open(weights, &st));
  group_acc acc[MXL_ROLE_COUNT + 1];
  memset(acc, 0, sizeof acc);
  int ours = 0;
  for (int i = 0; i < st->n_tensors; i++) {
    const mxl_st_tensor *t = &st->tensors[i];
    mxl_tensor_role role = role_of_name(t->name);
    ours += role != MXL_ROLE_COUNT;
    add_tensor(group_for(acc, role), t->name, t->dtype, t->shape, t->ndim, (double)t->nbytes,
               NULL);
  }
  cJSON_AddNumberToObject(obj, "tensor_count", st->n_tensors);
  cJSON_AddNumberToObject(obj, "gpt_oss_tensors", ours);
  add_tensor_summary(obj, acc);
  mxl_safetensors_close(st);
  return MXL_OK;
}

/* The items of a model.bin, named after the original/ tensors they hold. */
static void metal_tensors(const mxl_model *m, cJSON *obj) {
  const mxl_config *c = &m->config;
  group_acc acc[MXL_ROLE_COUNT + 1];
  memset(acc, 0, sizeof acc);
  const int64_t H = c->hidden, I = c->intermediate, E = c->n_experts;
  const int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
  const int64_t rows = m->w.vocab_rows;
  struct {
    const char *name;
    mxl_tensor_kind kind;
    mxl_dtype dt;
    int ndim;
    int64_t s[4];
    int per_layer;
    const char *note;
  } items[] = {
      {"embedding.weight", MXL_T_EMBED, MXL_DT_BF16, 2, {rows, H}, 0, "rows cut to the tokenizer's tokens"},
      {"block.{i}.attn.norm.scale", MXL_T_ATTN_NORM, MXL_DT_BF16, 1, {H}, 1, NULL},
      {"block.{i}.attn.qkv.weight", MXL_T_QKV_W, MXL_DT_BF16, 2, {q + 2 * kv, H}, 1,
       "q/k rows in adjacent RoPE pairs, q x0.5, k x0.25"},
      {"block.{i}.attn.qkv.bias", MXL_T_QKV_B, MXL_DT_BF16, 1, {q + 2 * kv}, 1, "as the weight"},
      {"block.{i}.attn.sinks", MXL_T_SINKS, MXL_DT_BF16, 1, {c->n_heads}, 1, NULL},
      {"block.{i}.attn.out.weight", MXL_T_O_W, MXL_DT_BF16, 2, {H, q}, 1, NULL},
      {"block.{i}.attn.out.bias", MXL_T_O_B, MXL_DT_BF16, 1, {H}, 1, NULL},
      {"block.{i}.mlp.norm.scale", MXL_T_MLP_NORM, MXL_DT_BF16, 1, {H}, 1, NULL},
      {"block.{i}.mlp.gate.weight", MXL_T_ROUTER_W, MXL_DT_BF16, 2, {E, H}, 1, NULL},
      {"block.{i}.mlp.gate.bias", MXL_T_ROUTER_B, MXL_DT_BF16, 1, {E}, 1, NULL},
      {"norm.scale", MXL_T_FINAL_NORM, MXL_DT_BF16, 1, {H}, 0, NULL},
      {"unembedding.weight", MXL_T_UNEMBED, MXL_DT_BF16, 2, {rows, H}, 0, "rows cut as the embedding"},
      {"block.{i}.mlp.mlp1_weight.blocks", MXL_T_GU_BLOCKS, MXL_DT_U8, 4, {E, 2 * I, H / 32, 16}, 1,
       "stored per expert, beside its scales and bias"},
      {"block.{i}.mlp.mlp1_weight.scales", MXL_T_GU_SCALES, MXL_DT_U8, 3, {E, 2 * I, H / 32}, 1,
       "each byte +14"},
      {"block.{i}.mlp.mlp1_bias", MXL_T_GU_BIAS, MXL_DT_BF16, 2, {E, 2 * I}, 1, NULL},
      {"block.{i}.mlp.mlp2_weight.blocks", MXL_T_DOWN_BLOCKS, MXL_DT_U8, 4, {E, H, I / 32, 16}, 1,
       NULL},
      {"block.{i}.mlp.mlp2_weight.scales", MXL_T_DOWN_SCALES, MXL_DT_U8, 3, {E, H, I / 32}, 1,
       "each byte +14"},
      {"block.{i}.mlp.mlp2_bias", MXL_T_DOWN_BIAS, MXL_DT_BF16, 2, {E, H}, 1, NULL},
  };
  int count = 0;
  for (size_t i = 0; i < sizeof items / sizeof items[0]; i++) {
    int64_t n = mxl_dtype_size(items[i].dt);
    for (int d = 0; d < items[i].ndim; d++) n *= items[i].s[d];
    char name[96];
    for (int l = 0; l < (items[i].per_layer ? c->n_layers : 1); l++) {
      snprintf(name, sizeof name, "%s", items[i].name);
      /* a layer number in the name so the kind parses and collapses back to {i} */
      char *brace = strstr(name, "{i}");
      if (brace) {
        char tail[96];
        snprintf(tail, sizeof tail, "%s", brace + 3);
        snprintf(brace, sizeof name - (size_t)(brace - name), "%d%s", l, tail);
      }
      group_acc *g = group_for(acc, mxl_tensor_kind_role(items[i].kind));
      add_tensor(g, name, items[i].dt, items[i].s, items[i].ndim, (double)n, items[i].note);
      count++;
    }
  }
  cJSON_AddNumberToObject(obj, "tensor_count", count);
  add_tensor_summary(obj, acc);
}

/* ------------------------------------------------------------ config */

static cJSON *config_json(const mxl_config *c) {
  cJSON *o = cJSON_CreateObject();
  int sliding = 0;
  for (int i = 0; i < c->n_layers; i++) sliding += c->layer_sliding[i];
  cJSON_AddNumberToObject(o, "layers", c->n_layers);
  cJSON_AddNumberToObject(o, "sliding_layers", sliding);
  cJSON_AddNumberToObject(o, "full_attention_layers", c->n_layers - sliding);
  cJSON_AddNumberToObject(o, "sliding_window", c->sliding_window);
  cJSON_AddNumberToObject(o, "experts", c->n_experts);
  cJSON_AddNumberToObject(o, "experts_per_token", c->experts_per_token);
  cJSON_AddNumberToObject(o, "hidden_size", c->hidden);
  cJSON_AddNumberToObject(o, "expert_intermediate_size", c->intermediate);
  cJSON_AddNumberToObject(o, "query_heads", c->n_heads);
  cJSON_AddNumberToObject(o, "kv_heads", c->n_kv_heads);
  cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
  cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
  cJSON_AddNumberToObject(o, "context_length", c->max_context);
  cJSON *r = cJSON_AddObjectToObject(o, "rope");
  mxl_yarn y;
  mxl_config_yarn(c, &y);
  cJSON_AddStringToObject(r, "type", "yarn");
  cJSON_AddNumberToObject(r, "theta", c->rope_theta);
  cJSON_AddNumberToObject(r, "factor", c->rope_factor);
  cJSON_AddNumberToObject(r, "original_context", c->initial_context);
  cJSON_AddNumberToObject(r, "beta_fast", c->rope_beta_fast);
  cJSON_AddNumberToObject(r, "beta_slow", c->rope_beta_slow);
  cJSON_AddNumberToObject(r, "ramp_low", y.low);
  cJSON_AddNumberToObject(r, "ramp_high", y.high);
  cJSON_AddNumberToObject(r, "attention_factor", y.concentration);
  cJSON_AddNumberToObject(o, "swiglu_limit", c->swiglu_limit);
  cJSON_AddNumberToObject(o, "swiglu_alpha", c->swiglu_alpha);
  cJSON_AddNumberToObject(o, "rms_norm_eps", c->rms_eps);
  cJSON *stops = cJSON_AddArrayToObject(o, "stop_token_ids");
  for (int i = 0; i < c->n_stop_ids; i++) cJSON_AddItemToArray(stops, cJSON_CreateNumber(c->stop_ids[i]));
  return o;
}

static cJSON *params_json(const mxl_config *c) {
  mxl_param_counts p;
  mxl_config_param_counts(c, &p);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "total", (double)p.total);
  cJSON_AddNumberToObject(o, "mxfp4_expert_weights", (double)p.mxfp4);
  cJSON_AddNumberToObject(o, "bf16", (double)p.bf16);
  cJSON_AddNumberToObject(o, "embedding", (double)p.embedding);
  cJSON_AddNumberToObject(o, "unembedding", (double)p.embedding);
  cJSON_AddNumberToObject(o, "attention_per_layer", (double)p.attention_per_layer);
  cJSON_AddNumberToObject(o, "router_per_layer", (double)p.router_per_layer);
  cJSON_AddNumberToObject(o, "one_expert", (double)p.expert);
  cJSON_AddNumberToObject(o, "active_per_token", (double)p.active);
  cJSON_AddNumberToObject(o, "active_with_embedding", (double)p.active_with_embedding);
  cJSON_AddNumberToObject(o, "mxfp4_bits_per_weight", 4.25);
  return o;
}

/* ------------------------------------------------------------ tokenizer */

static cJSON *tokenizer_json(mxl_tokenizer *tok, const char *kind, int vocab_rows) {
  const mxl_token_table *t = mxl_tokenizer_table(tok);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "kind", kind);
  cJSON_AddNumberToObject(o, "ordinary_tokens", t->n_text);
  cJSON_AddNumberToObject(o, "special_tokens", t->n_special);
  cJSON_AddNumberToObject(o, "tokens", t->special_base + t->n_special);
  if (vocab_rows > 0) cJSON_AddNumberToObject(o, "model_rows", vocab_rows);
  cJSON *sp = cJSON_AddArrayToObject(o, "specials");
  for (int i = 0; i < t->n_special; i++) {
    if (!t->special[i] || !t->special[i][0]) continue;
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "name", t->special[i]);
    cJSON_AddNumberToObject(s, "id", t->special_base + i);
    cJSON_AddItemToArray(sp, s);
  }
  return o;
}

/* Loads `path` when it exists; a file that exists but does not load is a
 * problem the report names. */
static mxl_tokenizer *load_tokenizer_file(cJSON *report, const char *path) {
  mxl_tokenizer *tok = NULL;
  if (!path || !mxl_path_exists(path)) return NULL;
  if (mxl_tokenizer_load(path, &tok) == MXL_OK) return tok;
  if (!cJSON_GetObjectItem(report, "tokenizer_error"))
    cJSON_AddStringToObject(report, "tokenizer_error", mxl_last_error());
  return NULL;
}

static void add_tokenizer(cJSON *report, const char *dir, const mxl_model *m) {
  mxl_tokenizer *tok = NULL;
  const char *kind = NULL;
  char *tj = mxl_path_join(dir, "tokenizer.json");
  char *up = mxl_path_join(dir, "../tokenizer.json"); /* original/ and metal/ use the root's */
  if ((tok = load_tokenizer_file(report, tj)) != NULL)
    kind = "tokenizer.json (Hugging Face byte-level BPE)";
  else if (!(m && m->has_metal_tokenizer) && (tok = load_tokenizer_file(report, up)) != NULL)
    kind = "../tokenizer.json, the repository's (Hugging Face byte-level BPE)";
  free(tj);
  free(up);
  if (!tok && m && m->has_metal_tokenizer &&
      mxl_tokenizer_from_metal_section(m->metal_tokenizer.data, m->metal_tokenizer.size, &tok) ==
          MXL_OK)
    kind = "model.bin tokenizer section (tiktoken ranks, specials by UUID)";
  if (!tok) return;
  cJSON_AddItemToObject(report, "tokenizer",
                        tokenizer_json(tok, kind, m ? m->w.vocab_rows : 0));
  mxl_tokenizer_free(tok);
}

/* ------------------------------------------------------------ layouts */

static const char *layout_purpose(mxl_layout l) {
  switch (l) {
  case MXL_LAYOUT_HF:
    return "Hugging Face layout, read by transformers and vLLM (model.layers.N.* names, "
           "separate q/k/v, MXFP4 experts as *_blocks/*_scales)";
  case MXL_LAYOUT_ORIGINAL:
    return "OpenAI's original layout, read by the gpt_oss reference code (PyTorch, Triton): "
           "block.N.* names, fused qkv, dtypes.json";
  case MXL_LAYOUT_METAL:
    return "OpenAI's Apple Metal runtime (gpt_oss/metal): one model.bin with config, "
           "tokenizer and weights, q/k pre-permuted and pre-scaled, scales +14";
  }
  return "";
}

/* One layout folder: files, tensors, and whether mxlora can open it. The
 * opened model is returned (for config and tokenizer), or NULL. */
static cJSON *layout_json(mxl_layout l, const char *folder, const char *shown, mxl_model **out) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "layout", mxl_layout_name(l));
  cJSON_AddStringToObject(o, "folder", shown);
  cJSON_AddStringToObject(o, "purpose", layout_purpose(l));
  mxl_model *m = NULL;
  size_t len = strlen(folder);
  int is_file = len > 4 && !strcmp(folder + len - 4, ".bin");
  char *open_path = l == MXL_LAYOUT_METAL && !is_file ? mxl_path_join(folder, "model.bin")
                                                      : strdup(folder);
  mxl_status st = open_path ? mxl_model_open(open_path, &m) : MXL_ERR_MEMORY;
  free(open_path);
  cJSON_AddStringToObject(o, "check", st == MXL_OK ? "ok" : mxl_last_error());
  if (l == MXL_LAYOUT_METAL) {
    if (m) metal_tensors(m, o);
  } else {
    char *w = mxl_checkpoint_find_weights(folder);
    if (w && safetensors_tensors(w, o) != MXL_OK)
      cJSON_AddStringToObject(o, "tensor_error", mxl_last_error());
    free(w);
    const cJSON *g;
    cJSON_ArrayForEach(g, cJSON_GetObjectItem(o, "tensor_groups"))
      if (!m && !strcmp(str(g, "role"), mxl_tensor_role_name(MXL_ROLE_EXPERTS_DENSE))) {
        /* not a fault of the folder: mxlora itself runs MXFP4 experts only */
        cJSON_SetValuestring(cJSON_GetObjectItem(o, "check"),
                             "bf16 experts (a merged model): transformers and vLLM load it; "
                             "mxlora runs MXFP4 experts (merge with --dtype mxfp4 for that)");
        cJSON_AddTrueToObject(o, "dense_experts");
      }
  }
  *out = m;
  return o;
}

/* The first config field on which two layouts of one repository disagree
 * (metal's vocabulary is cut to the tokenizer, so it is not compared). */
static const char *config_disagreement(const mxl_model *a, const mxl_model *b) {
  const mxl_config *x = &a->config, *y = &b->config;
#define SAME(f, name) \
  if (x->f != y->f) return name
  SAME(n_layers, "layers");
  SAME(n_experts, "experts");
  SAME(experts_per_token, "experts per token");
  SAME(hidden, "hidden size");
  SAME(intermediate, "intermediate size");
  SAME(head_dim, "head_dim");
  SAME(n_heads, "query heads");
  SAME(n_kv_heads, "key/value heads");
  SAME(sliding_window, "sliding window");
  SAME(initial_context, "initial context");
  SAME(rope_theta, "rope theta");
  SAME(rope_factor, "rope factor");
  SAME(rope_beta_fast, "YaRN beta fast");
  SAME(rope_beta_slow, "YaRN beta slow");
  SAME(swiglu_limit, "swiglu limit");
  SAME(rms_eps, "rms eps");
#undef SAME
  if (a->layout != MXL_LAYOUT_METAL && b->layout != MXL_LAYOUT_METAL &&
      x->vocab_size != y->vocab_size)
    return "vocabulary size";
  return NULL;
}

static void note_agreement(cJSON *report, const mxl_model *first, const mxl_model *m,
                           const char *folder) {
  const char *diff = config_disagreement(first, m);
  if (!diff) return;
  char text[256];
  snprintf(text, sizeof text, "%s disagrees with the first layout on the %s", folder, diff);
  cJSON_AddItemToArray(cJSON_GetObjectItem(report, "disagreements"), cJSON_CreateString(text));
}

/* Which layouts a folder holds: a repo root has HF files and perhaps
 * original/ and metal/; original/ and metal/ can be given directly. */
static void collect_layouts(const char *path, cJSON *report, mxl_model **first) {
  cJSON *layouts = cJSON_AddArrayToObject(report, "layouts");
  cJSON *files = cJSON_AddArrayToObject(report, "files");
  cJSON_AddArrayToObject(report, "disagreements");
  char *config = mxl_path_join(path, "config.json"), *bin = mxl_path_join(path, "model.bin");
  char *weights = NULL;
  const int has_config = config && mxl_path_exists(config);
  const int original = has_config && is_original_config(config);
  if (has_config) weights = mxl_checkpoint_find_weights(path);
  *first = NULL;
  const struct {
    mxl_layout l;
    const char *sub;
  } subs[] = {{MXL_LAYOUT_ORIGINAL, "original"}, {MXL_LAYOUT_METAL, "metal"}};
  cJSON *f, *tmp;
  tmp = files_json(path, "");
  while ((f = cJSON_DetachItemFromArray(tmp, 0)) != NULL) cJSON_AddItemToArray(files, f);
  cJSON_Delete(tmp);
  mxl_model *m = NULL;
  if (has_config && !weights)
    cJSON_AddStringToObject(report, "check", "config.json is here, but no *.safetensors weights "
                                             "beside it");
  if (has_config && weights) {
    cJSON_AddItemToArray(layouts, layout_json(original ? MXL_LAYOUT_ORIGINAL : MXL_LAYOUT_HF,
                                              path, ".", &m));
    *first = m;
  } else if (bin && mxl_path_exists(bin)) {
    cJSON_AddItemToArray(layouts, layout_json(MXL_LAYOUT_METAL, path, ".", &m));
    *first = m;
  }
  for (size_t i = 0; i < 2 && !original; i++) {
    char *sub = mxl_path_join(path, subs[i].sub);
    if (sub && mxl_path_is_dir(sub)) {
      char prefix[32];
      snprintf(prefix, sizeof prefix, "%s/", subs[i].sub);
      tmp = files_json(sub, prefix);
      while ((f = cJSON_DetachItemFromArray(tmp, 0)) != NULL) cJSON_AddItemToArray(files, f);
      cJSON_Delete(tmp);
      char *marker = mxl_path_join(sub, i == 0 ? "config.json" : "model.bin");
      if (marker && mxl_path_exists(marker)) {
        cJSON_AddItemToArray(layouts, layout_json(subs[i].l, sub, prefix, &m));
        if (!*first) {
          *first = m;
        } else {
          if (m) note_agreement(report, *first, m, prefix);
          mxl_model_close(m);
        }
      }
      free(marker);
    }
    free(sub);
  }
  free(config);
  free(bin);
  free(weights);
}

static void add_model_facts(cJSON *report, const mxl_model *m) {
  if (!m) return;
  cJSON_AddItemToObject(report, "config", config_json(&m->config));
  cJSON_AddItemToObject(report, "parameters", params_json(&m->config));
}

/* A folder mxlora cannot run (a bf16 merge): the facts from config.json. */
static void add_config_facts(cJSON *report, const char *path) {
  char *cfg = mxl_path_join(path, "config.json");
  mxl_config c;
  if (cfg && mxl_path_exists(cfg) && !is_original_config(cfg) &&
      mxl_config_load_hf(cfg, &c) == MXL_OK) {
    cJSON_AddItemToObject(report, "config", config_json(&c));
    cJSON_AddItemToObject(report, "parameters", params_json(&c));
  }
  free(cfg);
}

static mxl_status inspect_dir(const char *path, cJSON *report) {
  mxl_model *m = NULL;
  collect_layouts(path, report, &m);
  cJSON *layouts = cJSON_GetObjectItem(report, "layouts");
  int n = cJSON_GetArraySize(layouts);
  mxl_inspect_add_peft(path, report);
  mxl_inspect_add_merge(path, report);
  const char *kind = n > 1 ? "repository" : n == 1 ? "checkpoint folder" : "folder";
  if (cJSON_GetObjectItem(report, "merged")) kind = "model folder merged by mxlora";
  if (cJSON_GetObjectItem(report, "peft")) kind = "PEFT adapter folder";
  cJSON_AddStringToObject(report, "kind", kind);
  add_model_facts(report, m);
  if (!m) add_config_facts(report, path);
  add_tokenizer(report, path, m);
  mxl_model_close(m);
  return MXL_OK;
}

static mxl_status inspect_file(const char *path, cJSON *report) {
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  cJSON *files = cJSON_AddArrayToObject(report, "files");
  cJSON *f = cJSON_CreateObject();
  cJSON_AddStringToObject(f, "name", base);
  cJSON_AddNumberToObject(f, "bytes", file_size(path));
  int orig = !strcmp(base, "config.json") && is_original_config(path);
  cJSON_AddStringToObject(f, "role", file_role_of(base, orig));
  cJSON_AddItemToArray(files, f);
  cJSON_AddStringToObject(report, "kind", "file");
  mxl_model *m = NULL;
  if (name_matches(base, "*.safetensors") || name_matches(base, "*.safetensors.index.json")) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "folder", base);
    if (safetensors_tensors(path, o) != MXL_OK) cJSON_AddStringToObject(o, "tensor_error", mxl_last_error());
    if (num(o, "gpt_oss_tensors") == 0) {
      /* Any other model's file: a generic listing. */
      cJSON_AddStringToObject(o, "layout", "none");
      cJSON_AddStringToObject(o, "purpose", "safetensors file without gpt-oss tensor names");
    } else {
      /* A complete gpt-oss file (with config.json beside it) also loads. */
      mxl_status st = mxl_model_open(path, &m);
      cJSON_AddStringToObject(o, "layout", st == MXL_OK ? mxl_layout_name(m->layout) : "unknown");
      cJSON_AddStringToObject(o, "purpose", st == MXL_OK ? layout_purpose(m->layout)
                                                          : "gpt-oss tensors (mxlora cannot load this file alone)");
      cJSON_AddStringToObject(o, "check", st == MXL_OK ? "ok" : mxl_last_error());
    }
    cJSON_AddItemToArray(cJSON_AddArrayToObject(report, "layouts"), o);
  } else if (name_matches(base, "*.bin")) {
    cJSON *o = layout_json(MXL_LAYOUT_METAL, path, base, &m);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(report, "layouts"), o);
  } else if (name_matches(base, "*.gguf")) {
    cJSON_SetValuestring(cJSON_GetObjectItem(report, "kind"), "GGUF file");
    mxl_inspect_gguf(path, report);
  } else if (!strcmp(base, "config.json")) {
    mxl_config c;
    mxl_status st = orig ? mxl_config_load_original(path, &c) : mxl_config_load_hf(path, &c);
    cJSON_AddStringToObject(report, "check", st == MXL_OK ? "ok" : mxl_last_error());
    if (st == MXL_OK) {
      cJSON_AddItemToObject(report, "config", config_json(&c));
      cJSON_AddItemToObject(report, "parameters", params_json(&c));
    }
  }
  if (m) {
    add_model_facts(report, m);
    if (m->has_metal_tokenizer) add_tokenizer(report, "", m);
  } else if (!strcmp(base, "tokenizer.json") || name_matches(base, "*.tiktoken")) {
    mxl_tokenizer *tok = load_tokenizer_file(report, path);
    if (tok) {
      cJSON_AddItemToObject(report, "tokenizer", tokenizer_json(tok, base, 0));
      mxl_tokenizer_free(tok);
    }
  }
  mxl_model_close(m);
  return MXL_OK;
}

/* ------------------------------------------------------------ text */

static double num(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItem(o, key);
  return cJSON_IsNumber(v) ? v->valuedouble : 0.0;
}

static const char *str(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItem(o, key);
  return cJSON_IsString(v) ? v->valuestring : "";
}

static void text_shape(mxl_strbuf *b, const cJSON *shape) {
  mxl_strbuf_printf(b, "[");
  const cJSON *d;
  int i = 0;
  cJSON_ArrayForEach(d, shape) mxl_strbuf_printf(b, "%s%.0f", i++ ? ", " : "", d->valuedouble);
  mxl_strbuf_printf(b, "]");
}

static void text_files(mxl_strbuf *b, const cJSON *files) {
  char hb[32];
  mxl_strbuf_printf(b, "\nFiles\n");
  const cJSON *f;
  cJSON_ArrayForEach(f, files)
    mxl_strbuf_printf(b, "  %-40s %10s  %s\n", str(f, "name"), human_bytes(num(f, "bytes"), hb),
                      str(f, "role"));
}

static void text_tensors(mxl_strbuf *b, const cJSON *l) {
  char g1[32], g2[32], hb[32];
  const cJSON *groups = cJSON_GetObjectItem(l, "tensor_groups");
  if (!groups) return;
  mxl_strbuf_printf(b, "\nTensors in %s: %.0f tensors, %s parameters, %s\n", str(l, "folder"),
                    num(l, "tensor_count"), grouped((int64_t)num(l, "tensor_parameters"), g1),
                    human_bytes(num(l, "tensor_bytes"), hb));
  const cJSON *g;
  cJSON_ArrayForEach(g, groups) {
    mxl_strbuf_printf(b, "  %-16s %5.0f tensor%s %16s params %12s", str(g, "role"),
                      num(g, "tensors"), num(g, "tensors") == 1 ? " " : "s",
                      grouped((int64_t)num(g, "parameters"), g2), human_bytes(num(g, "bytes"), hb));
    if (cJSON_GetObjectItem(g, "bits_per_weight"))
      mxl_strbuf_printf(b, "  (%.2f bits per weight)", num(g, "bits_per_weight"));
    mxl_strbuf_printf(b, "\n");
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(g, "entries")) {
      mxl_strbuf_printf(b, "      %-46s ", str(e, "name"));
      text_shape(b, cJSON_GetObjectItem(e, "shape"));
      mxl_strbuf_printf(b, " %s", str(e, "dtype"));
      if (num(e, "count") > 1) mxl_strbuf_printf(b, " x %.0f", num(e, "count"));
      if (*str(e, "note")) mxl_strbuf_printf(b, "  (%s)", str(e, "note"));
      mxl_strbuf_printf(b, "\n");
    }
  }
}

static void text_layouts(mxl_strbuf *b, const cJSON *layouts) {
  if (!cJSON_GetArraySize(layouts)) return;
  mxl_strbuf_printf(b, "\nLayouts\n");
  const cJSON *l;
  cJSON_ArrayForEach(l, layouts) {
    mxl_strbuf_printf(b, "  %-10s %s\n", str(l, "folder"), str(l, "purpose"));
    if (*str(l, "check")) mxl_strbuf_printf(b, "  %-10s mxlora check: %s\n", "", str(l, "check"));
  }
}

static void text_config(mxl_strbuf *b, const cJSON *c) {
  if (!c) return;
  const cJSON *r = cJSON_GetObjectItem(c, "rope");
  mxl_strbuf_printf(b, "\nConfig\n");
  mxl_strbuf_printf(b, "  %.0f layers: %.0f with a sliding window of %.0f tokens, "
                       "%.0f with full attention\n",
                    num(c, "layers"), num(c, "sliding_layers"), num(c, "sliding_window"),
                    num(c, "full_attention_layers"));
  mxl_strbuf_printf(b, "  mixture of %.0f experts, top-%.0f per token; "
                       "hidden %.0f, expert width %.0f\n",
                    num(c, "experts"), num(c, "experts_per_token"), num(c, "hidden_size"),
                    num(c, "expert_intermediate_size"));
  mxl_strbuf_printf(b, "  attention: %.0f query heads and %.0f key/value heads of %.0f dims, "
                       "learned sinks\n",
                    num(c, "query_heads"), num(c, "kv_heads"), num(c, "head_dim"));
  mxl_strbuf_printf(b, "  context %.0f tokens: YaRN RoPE theta %g, factor %g over %.0f, beta %g/%g "
                       "(ramp %.3f..%.3f, attention factor %.4f)\n",
                    num(c, "context_length"), num(r, "theta"), num(r, "factor"),
                    num(r, "original_context"), num(r, "beta_fast"), num(r, "beta_slow"),
                    num(r, "ramp_low"), num(r, "ramp_high"), num(r, "attention_factor"));
  mxl_strbuf_printf(b, "  SwiGLU clamped at %g (alpha %g), RMSNorm eps %g, vocabulary %.0f rows\n",
                    num(c, "swiglu_limit"), num(c, "swiglu_alpha"), num(c, "rms_norm_eps"),
                    num(c, "vocab_size"));
  const cJSON *s;
  int i = 0;
  mxl_strbuf_printf(b, "  stop token ids:");
  cJSON_ArrayForEach(s, cJSON_GetObjectItem(c, "stop_token_ids"))
    mxl_strbuf_printf(b, "%s %.0f", i++ ? "," : "", s->valuedouble);
  mxl_strbuf_printf(b, "%s\n", i ? "" : " none");
}

static void text_params(mxl_strbuf *b, const cJSON *p) {
  if (!p) return;
  char a[32], c2[32], d[32], e[32], f[32], g[32];
  mxl_strbuf_printf(b, "\nParameters (from the config)\n");
  mxl_strbuf_printf(b, "  total %s = %s in MXFP4 experts (4.25 bits per weight) + %s in BF16\n",
                    grouped((int64_t)num(p, "total"), a),
                    grouped((int64_t)num(p, "mxfp4_expert_weights"), c2),
                    grouped((int64_t)num(p, "bf16"), d));
  mxl_strbuf_printf(b, "  active per token %s (selected experts and lm_head, no embedding); "
                       "%s with the embedding\n",
                    grouped((int64_t)num(p, "active_per_token"), e),
                    grouped((int64_t)num(p, "active_with_embedding"), f));
  mxl_strbuf_printf(b, "  embedding %s and unembedding %s; per layer: attention %s, router %s, "
                       "one expert %s\n",
                    grouped((int64_t)num(p, "embedding"), a),
                    grouped((int64_t)num(p, "unembedding"), c2),
                    grouped((int64_t)num(p, "attention_per_layer"), d),
                    grouped((int64_t)num(p, "router_per_layer"), e),
                    grouped((int64_t)num(p, "one_expert"), g));
}

static void text_tokenizer(mxl_strbuf *b, const cJSON *t) {
  if (!t) return;
  mxl_strbuf_printf(b, "\nTokenizer: %s\n", str(t, "kind"));
  mxl_strbuf_printf(b, "  %.0f ordinary tokens + %.0f special tokens", num(t, "ordinary_tokens"),
                    num(t, "special_tokens"));
  if (num(t, "model_rows") > 0)
    mxl_strbuf_printf(b, "; the model has %.0f embedding rows (%.0f unused by the tokenizer)",
                      num(t, "model_rows"), num(t, "model_rows") - num(t, "tokens"));
  mxl_strbuf_printf(b, "\n  specials:");
  const cJSON *s;
  int col = 11;
  cJSON_ArrayForEach(s, cJSON_GetObjectItem(t, "specials")) {
    char item[96];
    int n = snprintf(item, sizeof item, " %s=%.0f", str(s, "name"), num(s, "id"));
    if (col + n > 100) mxl_strbuf_printf(b, "\n           "), col = 11;
    mxl_strbuf_printf(b, "%s", item);
    col += n;
  }
  mxl_strbuf_printf(b, "\n");
}

/* ------------------------------------------------------------ problems */

/* Each message names its file already. */
static void add_problem(cJSON *list, const char *what) {
  const cJSON *seen;
  cJSON_ArrayForEach(seen, list) if (!strcmp(seen->valuestring, what)) return; /* once each */
  cJSON_AddItemToArray(list, cJSON_CreateString(what));
}

/* Everything the report found unreadable or inconsistent, as one list: a
 * failed check, unreadable tensors, layouts that disagree, a tokenizer file
 * that does not load. The exit status of `mxlora inspect` follows it. */
static int collect_problems(cJSON *report) {
  cJSON *list = cJSON_AddArrayToObject(report, "problems");
  const char *check = str(report, "check");
  if (*check && strcmp(check, "ok")) add_problem(list, check);
  const cJSON *l;
  cJSON_ArrayForEach(l, cJSON_GetObjectItem(report, "layouts")) {
    check = str(l, "check");
    if (*check && strcmp(check, "ok") && !cJSON_IsTrue(cJSON_GetObjectItem(l, "dense_experts")))
      add_problem(list, check);
    if (*str(l, "tensor_error")) add_problem(list, str(l, "tensor_error"));
  }
  cJSON_ArrayForEach(l, cJSON_GetObjectItem(report, "disagreements"))
    add_problem(list, l->valuestring);
  if (*str(report, "tokenizer_error")) add_problem(list, str(report, "tokenizer_error"));
  const char *more[2];
  for (int i = 0, n = mxl_inspect_more_problems(report, more, 2); i < n; i++)
    add_problem(list, more[i]);
  return cJSON_GetArraySize(list);
}

static void text_problems(mxl_strbuf *b, const cJSON *problems) {
  int n = cJSON_GetArraySize(problems);
  if (!n) return;
  mxl_strbuf_printf(b, "\n%d problem%s found\n", n, n > 1 ? "s" : "");
  const cJSON *p;
  cJSON_ArrayForEach(p, problems) mxl_strbuf_printf(b, "  %s\n", p->valuestring);
}

static char *render_text(const cJSON *r) {
  mxl_strbuf b = {0};
  const cJSON *l;
  const cJSON *layouts = cJSON_GetObjectItem(r, "layouts");
  mxl_strbuf_printf(&b, "%s: %s", str(r, "path"), str(r, "kind"));
  int n = 0;
  cJSON_ArrayForEach(l, layouts) n += strcmp(str(l, "layout"), "none") != 0;
  if (n) mxl_strbuf_printf(&b, " with %d gpt-oss layout%s", n, n > 1 ? "s" : "");
  mxl_strbuf_printf(&b, "\n");
  if (*str(r, "check")) mxl_strbuf_printf(&b, "mxlora check: %s\n", str(r, "check"));
  text_layouts(&b, layouts);
  cJSON_ArrayForEach(l, cJSON_GetObjectItem(r, "disagreements"))
    mxl_strbuf_printf(&b, "  WARNING: %s\n", l->valuestring);
  if (cJSON_GetArraySize(cJSON_GetObjectItem(r, "disagreements")) == 0 && n > 1)
    mxl_strbuf_printf(&b, "  the %d layouts describe the same model\n", n);
  text_files(&b, cJSON_GetObjectItem(r, "files"));
  text_config(&b, cJSON_GetObjectItem(r, "config"));
  text_params(&b, cJSON_GetObjectItem(r, "parameters"));
  cJSON_ArrayForEach(l, layouts) {
    text_tensors(&b, l);
    if (*str(l, "tensor_error"))
      mxl_strbuf_printf(&b, "  (tensors unreadable: %s)\n", str(l, "tensor_error"));
  }
  mxl_inspect_text_more(&b, r);
  text_tokenizer(&b, cJSON_GetObjectItem(r, "tokenizer"));
  text_problems(&b, cJSON_GetObjectItem(r, "problems"));
  return mxl_strbuf_take(&b);
}

/* ------------------------------------------------------------ entry */

mxl_status mxl_inspect(const char *path, int as_json, char **report_out) {
  return mxl_inspect_checked(path, as_json, report_out, NULL);
}

mxl_status mxl_inspect_checked(const char *path, int as_json, char **report_out,
                               int *problems_out) {
  *report_out = NULL;
  if (problems_out) *problems_out = 0;
  if (!path || !*path) return mxl_errorf(MXL_ERR_ARGUMENT, "inspect: no path given");
  if (!mxl_path_exists(path)) return mxl_errorf(MXL_ERR_IO, "%s: no such file or folder", path);
  cJSON *report = cJSON_CreateObject();
  if (!report) return mxl_errorf(MXL_ERR_MEMORY, "inspect: out of memory");
  cJSON_AddStringToObject(report, "path", path);
  mxl_status st = mxl_path_is_dir(path) ? inspect_dir(path, report) : inspect_file(path, report);
  int problems = st == MXL_OK ? collect_problems(report) : 0;
  if (st == MXL_OK) {
    *report_out = as_json ? cJSON_Print(report) : render_text(report);
    if (!*report_out) st = mxl_errorf(MXL_ERR_MEMORY, "inspect: out of memory");
  }
  cJSON_Delete(report);
  if (st == MXL_OK) mxl_error_clear(); /* the checks' messages live in the report */
  if (st == MXL_OK && problems_out) *problems_out = problems;
  return st;
}
