/* gpt-oss configuration: the published values, validation, the three
 * on-disk forms (docs/gpt-oss.md §1.1-§1.3, §4.1), YaRN and parameter counts. */
#include "model/config.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"
#include "core/fileio.h"
#include "core/json.h"
#include "core/status.h"

enum { MXL_CONFIG_MAX_BYTES = 1 << 20 };

/* ------------------------------------------------------------ defaults */

void mxl_config_gpt_oss_20b(mxl_config *c) {
  memset(c, 0, sizeof *c);
  c->n_layers = 24;
  c->n_experts = 32;
  c->experts_per_token = 4;
  c->vocab_size = 201088;
  c->hidden = 2880;
  c->intermediate = 2880;
  c->head_dim = 64;
  c->n_heads = 64;
  c->n_kv_heads = 8;
  c->sliding_window = 128;
  c->initial_context = 4096;
  c->max_context = 131072;
  c->rope_theta = 150000.0f;
  c->rope_factor = 32.0f;
  c->rope_beta_fast = 32.0f;
  c->rope_beta_slow = 1.0f;
  c->swiglu_limit = 7.0f;
  c->swiglu_alpha = 1.702f;
  c->rms_eps = 1e-5f;
  for (int i = 0; i < c->n_layers; i++) c->layer_sliding[i] = (uint8_t)(i % 2 == 0);
  c->bos_id = 199998;
  c->pad_id = 199999;
  c->n_stop_ids = 3;
  c->stop_ids[0] = 200002; /* <|return|> */
  c->stop_ids[1] = 199999; /* <|endoftext|> */
  c->stop_ids[2] = 200012; /* <|call|> */
  c->names = MXL_CONFIG_NAMES_HF;
}

void mxl_config_gpt_oss_120b(mxl_config *c) {
  mxl_config_gpt_oss_20b(c);
  c->n_layers = 36;
  c->n_experts = 128;
  for (int i = 0; i < c->n_layers; i++) c->layer_sliding[i] = (uint8_t)(i % 2 == 0);
}

/* ------------------------------------------------------------ derived values */

static double yarn_bound(const mxl_config *c, double beta) {
  return (c->head_dim / 2.0) * log(c->initial_context / (beta * 2.0 * M_PI)) /
         log((double)c->rope_theta);
}

void mxl_config_yarn(const mxl_config *c, mxl_yarn *y) {
  memset(y, 0, sizeof *y);
  y->low = yarn_bound(c, c->rope_beta_fast);
  y->high = yarn_bound(c, c->rope_beta_slow);
  y->concentration = 0.1 * log((double)c->rope_factor) + 1.0;
  y->interpolation_scale = (float)(1.0 / (double)c->rope_factor);
  y->offset = (float)(-y->low / (y->high - y->low));
  y->scale = (float)(1.0 / (y->high - y->low));
  y->multiplier = (float)y->concentration;
}

void mxl_config_param_counts(const mxl_config *c, mxl_param_counts *p) {
  memset(p, 0, sizeof *p);
  const int64_t H = c->hidden, I = c->intermediate, E = c->n_experts, V = c->vocab_size;
  const int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
  const int64_t L = c->n_layers, k = c->experts_per_token;
  p->embedding = V * H;
  p->attention_per_layer = (q * H + q) + 2 * (kv * H + kv) + (H * q + H) + c->n_heads;
  p->router_per_layer = E * H + E;
  p->expert = (2 * I * H + 2 * I) + (H * I + H);
  p->norms = L * 2 * H + H;
  int64_t per_layer = p->attention_per_layer + p->router_per_layer + 2 * H + E * p->expert;
  p->total = 2 * p->embedding + L * per_layer + H;
  p->mxfp4 = L * E * (2 * I * H + H * I);
  p->bf16 = p->total - p->mxfp4;
  p->active = p->total - p->embedding - L * (E - k) * p->expert;
  p->active_with_embedding = p->active + p->embedding;
}

/* ------------------------------------------------------------ validation */

typedef struct field_names {
  const char *layers, *experts, *k, *vocab, *hidden, *intermediate, *head_dim, *heads,
      *kv_heads, *window, *initial_ctx, *max_ctx, *theta, *factor, *beta_fast, *beta_slow,
      *swiglu_limit, *rms_eps, *layer_types;
} field_names;

static const field_names hf_names = {
    "num_hidden_layers", "num_local_experts", "num_experts_per_tok", "vocab_size",
    "hidden_size", "intermediate_size", "head_dim", "num_attention_heads",
    "num_key_value_heads", "sliding_window", "rope_scaling.original_max_position_embeddings",
    "max_position_embeddings", "rope_theta", "rope_scaling.factor", "rope_scaling.beta_fast",
    "rope_scaling.beta_slow", "swiglu_limit", "rms_norm_eps", "layer_types"};

static const field_names original_names = {
    "num_hidden_layers", "num_experts", "experts_per_token", "vocab_size", "hidden_size",
    "intermediate_size", "head_dim", "num_attention_heads", "num_key_value_heads",
    "sliding_window", "initial_context_length", "initial_context_length × rope_scaling_factor",
    "rope_theta", "rope_scaling_factor", "rope_ntk_beta", "rope_ntk_alpha", "swiglu_limit",
    "rms_norm_eps", "layer pattern"};

static const field_names metal_names = {
    "num_blocks", "num_experts", "num_active_experts", "num_text_tokens + num_special_tokens",
    "embedding_dim", "mlp_dim", "head_dim", "num_heads", "num_kv_heads", "attention_window",
    "context_length × interpolation_scale", "context_length", "rope_theta",
    "interpolation_scale", "yarn_offset/yarn_scale (beta fast)",
    "yarn_offset/yarn_scale (beta slow)", "swiglu_limit", "rmsnorm_epsilon", "layer pattern"};

static const field_names *names_for(mxl_config_names n) {
  switch (n) {
  case MXL_CONFIG_NAMES_ORIGINAL: return &original_names;
  case MXL_CONFIG_NAMES_METAL: return &metal_names;
  case MXL_CONFIG_NAMES_HF: break;
  }
  return &hf_names;
}

static mxl_status need_positive(const char *src, const char *field, long long v) {
  if (v <= 0) return mxl_errorf(MXL_ERR_FORMAT, "%s: %s is %lld, must be positive", src, field, v);
  return MXL_OK;
}

static mxl_status need_multiple_of_32(const char *src, const char *field, int v) {
  if (v % 32 != 0)
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: %s is %d, must be a multiple of 32 (the MXFP4 block size)", src,
                      field, v);
  return MXL_OK;
}

static mxl_status need_finite_positive(const char *src, const char *field, float v) {
  if (!isfinite(v) || v <= 0.0f)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s is %g, must be a positive finite number", src,
                      field, (double)v);
  return MXL_OK;
}

static mxl_status validate_sizes(const mxl_config *c, const char *src, const field_names *n) {
  MXL_TRY(need_positive(src, n->layers, c->n_layers));
  if (c->n_layers > MXL_MAX_LAYERS)
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: %s is %d, more than the %d mxlora supports",
                      src, n->layers, c->n_layers, MXL_MAX_LAYERS);
  MXL_TRY(need_positive(src, n->experts, c->n_experts));
  MXL_TRY(need_positive(src, n->k, c->experts_per_token));
  if (c->experts_per_token > c->n_experts)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s is %d, more than %s (%d)", src, n->k,
                      c->experts_per_token, n->experts, c->n_experts);
  MXL_TRY(need_positive(src, n->vocab, c->vocab_size));
  MXL_TRY(need_positive(src, n->hidden, c->hidden));
  MXL_TRY(need_multiple_of_32(src, n->hidden, c->hidden));
  MXL_TRY(need_positive(src, n->intermediate, c->intermediate));
  MXL_TRY(need_multiple_of_32(src, n->intermediate, c->intermediate));
  MXL_TRY(need_positive(src, n->head_dim, c->head_dim));
  if (c->head_dim % 2 != 0)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s is %d, must be even (RoPE rotates pairs)", src,
                      n->head_dim, c->head_dim);
  MXL_TRY(need_positive(src, n->heads, c->n_heads));
  MXL_TRY(need_positive(src, n->kv_heads, c->n_kv_heads));
  if (c->n_heads % c->n_kv_heads != 0)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s (%d) is not a multiple of %s (%d)", src,
                      n->heads, c->n_heads, n->kv_heads, c->n_kv_heads);
  /* Products used as tensor sizes must not overflow an int. */
  if ((int64_t)c->n_heads * c->head_dim > INT_MAX / 4 ||
      (int64_t)c->hidden * 2 > INT_MAX / 4 || (int64_t)c->intermediate * 2 > INT_MAX / 4)
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: %s × %s is too large", src, n->heads,
                      n->head_dim);
  MXL_TRY(need_positive(src, n->window, c->sliding_window));
  MXL_TRY(need_positive(src, n->initial_ctx, c->initial_context));
  MXL_TRY(need_positive(src, n->max_ctx, c->max_context));
  return MXL_OK;
}

static mxl_status validate_rope(const mxl_config *c, const char *src, const field_names *n) {
  if (!isfinite(c->rope_theta) || c->rope_theta <= 1.0f)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s is %g, must be greater than 1", src, n->theta,
                      (double)c->rope_theta);
  if (!isfinite(c->rope_factor) || c->rope_factor < 1.0f)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s is %g, must be at least 1", src, n->factor,
                      (double)c->rope_factor);
  MXL_TRY(need_finite_positive(src, n->beta_fast, c->rope_beta_fast));
  MXL_TRY(need_finite_positive(src, n->beta_slow, c->rope_beta_slow));
  if (c->rope_beta_fast <= c->rope_beta_slow)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s (%g) must be greater than %s (%g)", src,
                      n->beta_fast, (double)c->rope_beta_fast, n->beta_slow,
                      (double)c->rope_beta_slow);
  /* The reference code asserts 0 < low < high < d/2 - 1 (docs/gpt-oss.md §5.3). */
  mxl_yarn y;
  mxl_config_yarn(c, &y);
  if (!(y.low > 0.0 && y.low < y.high && y.high < c->head_dim / 2.0 - 1.0))
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: %s/%s: YaRN bounds low %.4f, high %.4f must satisfy 0 < low < "
                      "high < %s/2 - 1 = %g (%s %d, %s %g)",
                      src, n->beta_fast, n->beta_slow, y.low, y.high, n->head_dim,
                      c->head_dim / 2.0 - 1.0, n->initial_ctx, c->initial_context, n->theta,
                      (double)c->rope_theta);
  return MXL_OK;
}

mxl_status mxl_config_validate(const mxl_config *c, const char *source) {
  const field_names *n = names_for(c->names);
  const char *src = source ? source : "config";
  MXL_TRY(validate_sizes(c, src, n));
  MXL_TRY(validate_rope(c, src, n));
  MXL_TRY(need_finite_positive(src, n->swiglu_limit, c->swiglu_limit));
  MXL_TRY(need_finite_positive(src, "swiglu_alpha", c->swiglu_alpha));
  MXL_TRY(need_finite_positive(src, n->rms_eps, c->rms_eps));
  for (int i = 0; i < c->n_layers; i++)
    if (c->layer_sliding[i] > 1)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: %s[%d] is neither sliding nor full", src,
                        n->layer_types, i);
  if (c->n_stop_ids < 0 || c->n_stop_ids > MXL_MAX_STOP_IDS)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %d stop ids (at most %d)", src, c->n_stop_ids,
                      MXL_MAX_STOP_IDS);
  return MXL_OK;
}

/* ------------------------------------------------------------ JSON reading */

/* One JSON object being read, for messages: "<src>: <prefix><key> ...". */
typedef struct jobj {
  const cJSON *obj;
  const char *src;
  const char *prefix; /* "" or "rope_scaling." */
} jobj;

static mxl_status missing(const jobj *o, const char *key) {
  return mxl_errorf(MXL_ERR_FORMAT, "%s: %s%s is missing", o->src, o->prefix, key);
}

/* Reads an integer field. Absent: MXL_OK with *out untouched unless
 * `required`. */
static mxl_status get_int(const jobj *o, const char *key, int required, int *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o->obj, key);
  if (!v || cJSON_IsNull(v)) return required ? missing(o, key) : MXL_OK;
  if (!cJSON_IsNumber(v))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s%s must be an integer", o->src, o->prefix, key);
  double d = v->valuedouble;
  if (!isfinite(d) || d != floor(d) || d < INT_MIN || d > INT_MAX)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s%s is %g, not an integer in range", o->src,
                      o->prefix, key, d);
  *out = (int)d;
  return MXL_OK;
}

static mxl_status get_float(const jobj *o, const char *key, int required, float *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o->obj, key);
  if (!v || cJSON_IsNull(v)) return required ? missing(o, key) : MXL_OK;
  if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || fabs(v->valuedouble) > FLT_MAX)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s%s must be a finite number", o->src, o->prefix,
                      key);
  *out = (float)v->valuedouble;
  return MXL_OK;
}

static mxl_status get_string(const jobj *o, const char *key, int required, const char **out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o->obj, key);
  if (!v || cJSON_IsNull(v)) return required ? missing(o, key) : MXL_OK;
  if (!cJSON_IsString(v))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s%s must be a string", o->src, o->prefix, key);
  *out = v->valuestring;
  return MXL_OK;
}

static mxl_status parse_root(const char *json, size_t len, const char *src, cJSON **out) {
  MXL_TRY(mxl_json_parse(json, len, src, out));
  mxl_status st = cJSON_IsObject(*out) ? mxl_json_check_unique_keys(*out, src)
                                       : mxl_errorf(MXL_ERR_FORMAT, "%s: not a JSON object", src);
  if (st != MXL_OK) {
    cJSON_Delete(*out);
    *out = NULL;
  }
  return st;
}

/* Reads a token id or a list of them (eos_token_id) into ids[]. */
static mxl_status get_ids(const jobj *o, const char *key, int *ids, int *n_ids) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o->obj, key);
  if (!v || cJSON_IsNull(v)) return MXL_OK;
  if (cJSON_IsNumber(v)) {
    int id = 0;
    MXL_TRY(get_int(o, key, 1, &id));
    ids[0] = id;
    *n_ids = 1;
    return MXL_OK;
  }
  if (!cJSON_IsArray(v))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s must be a token id or a list of ids", o->src,
                      key);
  int n = cJSON_GetArraySize(v);
  if (n > MXL_MAX_STOP_IDS)
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: %s has %d ids (at most %d)", o->src, key, n,
                      MXL_MAX_STOP_IDS);
  int i = 0;
  const cJSON *item;
  cJSON_ArrayForEach(item, v) {
    double d = cJSON_IsNumber(item) ? item->valuedouble : -1.0;
    if (d != floor(d) || d < 0 || d > INT_MAX)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: %s[%d] is not a token id", o->src, key, i);
    ids[i++] = (int)d;
  }
  *n_ids = n;
  return MXL_OK;
}

/* rope_scaling (v4) or rope_parameters (transformers v5, which also holds
 * rope_theta). */
static mxl_status parse_hf_rope(const cJSON *root, const char *src, mxl_config *c) {
  const char *key = "rope_scaling";
  const cJSON *r = cJSON_GetObjectItemCaseSensitive(root, key);
  if (!r || cJSON_IsNull(r)) {
    key = "rope_parameters";
    r = cJSON_GetObjectItemCaseSensitive(root, key);
  }
  if (!r || cJSON_IsNull(r))
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: rope_scaling is missing (gpt-oss uses YaRN; neither rope_scaling "
                      "nor rope_parameters is present)",
                      src);
  if (!cJSON_IsObject(r)) return mxl_errorf(MXL_ERR_FORMAT, "%s: %s must be an object", src, key);
  char prefix[32];
  snprintf(prefix, sizeof prefix, "%s.", key);
  jobj o = {r, src, prefix};
  const char *type = NULL;
  MXL_TRY(get_string(&o, "rope_type", 0, &type));
  if (!type) MXL_TRY(get_string(&o, "type", 0, &type));
  if (!type) return missing(&o, "rope_type");
  if (strcmp(type, "yarn") != 0)
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: %srope_type is \"%s\"; gpt-oss uses \"yarn\"",
                      src, prefix, type);
  MXL_TRY(get_float(&o, "rope_theta", 0, &c->rope_theta));
  MXL_TRY(get_float(&o, "factor", 1, &c->rope_factor));
  MXL_TRY(get_float(&o, "beta_fast", 0, &c->rope_beta_fast));
  MXL_TRY(get_float(&o, "beta_slow", 0, &c->rope_beta_slow));
  MXL_TRY(get_int(&o, "original_max_position_embeddings", 1, &c->initial_context));
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(r, "truncate");
  if (t && !cJSON_IsFalse(t) && !cJSON_IsNull(t))
    return mxl_errorf(MXL_ERR_UNSUPPORTED,
                      "%s: %struncate is set; gpt-oss uses untruncated YaRN bounds "
                      "(truncate false)",
                      src, prefix);
  return MXL_OK;
}

static mxl_status parse_layer_types(const cJSON *root, const char *src, mxl_config *c) {
  const cJSON *lt = cJSON_GetObjectItemCaseSensitive(root, "layer_types");
  for (int i = 0; i < c->n_layers && i < MXL_MAX_LAYERS; i++)
    c->layer_sliding[i] = (uint8_t)(i % 2 == 0);
  if (!lt || cJSON_IsNull(lt)) return MXL_OK;
  if (!cJSON_IsArray(lt)) return mxl_errorf(MXL_ERR_FORMAT, "%s: layer_types must be a list", src);
  int n = cJSON_GetArraySize(lt);
  if (n != c->n_layers)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: layer_types has %d entries, num_hidden_layers is %d",
                      src, n, c->n_layers);
  int i = 0;
  const cJSON *item;
  cJSON_ArrayForEach(item, lt) {
    const char *s = cJSON_IsString(item) ? item->valuestring : "";
    if (!strcmp(s, "sliding_attention")) c->layer_sliding[i] = 1;
    else if (!strcmp(s, "full_attention")) c->layer_sliding[i] = 0;
    else
      return mxl_errorf(MXL_ERR_FORMAT,
                        "%s: layer_types[%d] must be \"sliding_attention\" or "
                        "\"full_attention\"",
                        src, i);
    i++;
  }
  return MXL_OK;
}

/* eos_token_id (an id or a list; absent keeps the stop ids), bos_token_id
 * and pad_token_id: in config.json and in generation_config.json. */
static mxl_status parse_token_ids(const jobj *o, mxl_config *c) {
  int ids[MXL_MAX_STOP_IDS], n_ids = 0;
  MXL_TRY(get_ids(o, "eos_token_id", ids, &n_ids));
  if (n_ids) {
    c->n_stop_ids = n_ids;
    memcpy(c->stop_ids, ids, sizeof(int) * (size_t)n_ids);
  }
  MXL_TRY(get_int(o, "bos_token_id", 0, &c->bos_id));
  return get_int(o, "pad_token_id", 0, &c->pad_id);
}

static mxl_status parse_hf_fields(const cJSON *root, const char *src, mxl_config *c) {
  jobj o = {root, src, ""};
  const char *s = NULL;
  MXL_TRY(get_string(&o, "model_type", 0, &s));
  if (s && strcmp(s, "gpt_oss") != 0)
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: model_type is \"%s\", expected \"gpt_oss\"", src,
                      s);
  MXL_TRY(get_int(&o, "num_hidden_layers", 1, &c->n_layers));
  if (cJSON_GetObjectItemCaseSensitive(root, "num_experts"))
    MXL_TRY(get_int(&o, "num_experts", 1, &c->n_experts)); /* the class's alias */
  else
    MXL_TRY(get_int(&o, "num_local_experts", 1, &c->n_experts));
  if (cJSON_GetObjectItemCaseSensitive(root, "num_experts_per_tok"))
    MXL_TRY(get_int(&o, "num_experts_per_tok", 1, &c->experts_per_token));
  else
    MXL_TRY(get_int(&o, "experts_per_token", 0, &c->experts_per_token));
  MXL_TRY(get_int(&o, "vocab_size", 1, &c->vocab_size));
  MXL_TRY(get_int(&o, "hidden_size", 1, &c->hidden));
  MXL_TRY(get_int(&o, "intermediate_size", 1, &c->intermediate));
  MXL_TRY(get_int(&o, "head_dim", 1, &c->head_dim));
  MXL_TRY(get_int(&o, "num_attention_heads", 1, &c->n_heads));
  MXL_TRY(get_int(&o, "num_key_value_heads", 1, &c->n_kv_heads));
  MXL_TRY(get_int(&o, "sliding_window", 0, &c->sliding_window));
  MXL_TRY(get_int(&o, "max_position_embeddings", 0, &c->max_context));
  MXL_TRY(get_float(&o, "rope_theta", 0, &c->rope_theta));
  MXL_TRY(get_float(&o, "swiglu_limit", 0, &c->swiglu_limit));
  MXL_TRY(get_float(&o, "swiglu_alpha", 0, &c->swiglu_alpha)); /* transformers v5 writes it */
  MXL_TRY(get_float(&o, "rms_norm_eps", 0, &c->rms_eps));
  MXL_TRY(parse_hf_rope(root, src, c));
  int legacy_ctx = c->initial_context; /* legacy duplicate of original_max_position_embeddings */
  MXL_TRY(get_int(&o, "initial_context_length", 0, &legacy_ctx));
  if (legacy_ctx != c->initial_context)
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: initial_context_length (%d) disagrees with "
                      "rope_scaling.original_max_position_embeddings (%d)",
                      src, legacy_ctx, c->initial_context);
  if (c->n_layers > 0 && c->n_layers <= MXL_MAX_LAYERS) MXL_TRY(parse_layer_types(root, src, c));
  const cJSON *b = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
  if (cJSON_IsTrue(b))
    return mxl_errorf(MXL_ERR_UNSUPPORTED,
                      "%s: tie_word_embeddings is true; gpt-oss has a separate lm_head", src);
  const cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
  if (q && !cJSON_IsNull(q)) {
    jobj qo = {q, src, "quantization_config."};
    const char *method = NULL;
    if (cJSON_IsObject(q)) MXL_TRY(get_string(&qo, "quant_method", 0, &method));
    if (!method || strcmp(method, "mxfp4") != 0)
      return mxl_errorf(MXL_ERR_UNSUPPORTED,
                        "%s: quantization_config.quant_method is \"%s\"; mxlora reads "
                        "gpt-oss's MXFP4 experts",
                        src, method ? method : "(none)");
  }
  return parse_token_ids(&o, c);
}

/* Fields the files may leave out take the published gpt-oss values; the
 * shape fields are required. Token ids start unknown. */
static void set_defaults(mxl_config *c, mxl_config_names names) {
  mxl_config_gpt_oss_20b(c);
  c->bos_id = c->pad_id = -1;
  c->n_stop_ids = 0;
  c->names = names;
}

static mxl_status check_token_ids(const mxl_config *c, const char *src) {
  for (int i = 0; i < c->n_stop_ids; i++)
    if (c->stop_ids[i] < 0 || c->stop_ids[i] >= c->vocab_size)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: eos_token_id %d is outside the vocabulary (%d)",
                        src, c->stop_ids[i], c->vocab_size);
  if (c->bos_id >= c->vocab_size || c->bos_id < -1)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: bos_token_id %d is outside the vocabulary (%d)", src,
                      c->bos_id, c->vocab_size);
  if (c->pad_id >= c->vocab_size || c->pad_id < -1)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: pad_token_id %d is outside the vocabulary (%d)", src,
                      c->pad_id, c->vocab_size);
  return MXL_OK;
}

typedef mxl_status (*fields_fn)(const cJSON *root, const char *src, mxl_config *c);

/* Defaults, then the file's fields, then validation: config.json and
 * original/config.json alike. */
static mxl_status parse_config(const char *json, size_t len, const char *src,
                               mxl_config_names names, fields_fn fields, mxl_config *c) {
  set_defaults(c, names);
  cJSON *root = NULL;
  MXL_TRY(parse_root(json, len, src, &root));
  mxl_status st = fields(root, src, c);
  cJSON_Delete(root);
  MXL_TRY(st);
  return mxl_config_validate(c, src);
}

mxl_status mxl_config_parse_hf(const char *json, size_t len, const char *source,
                               mxl_config *c) {
  const char *src = source ? source : "config.json";
  MXL_TRY(parse_config(json, len, src, MXL_CONFIG_NAMES_HF, parse_hf_fields, c));
  return check_token_ids(c, src);
}

static mxl_status parse_original_fields(const cJSON *root, const char *src, mxl_config *c) {
  jobj o = {root, src, ""};
  MXL_TRY(get_int(&o, "num_hidden_layers", 1, &c->n_layers));
  MXL_TRY(get_int(&o, "num_experts", 1, &c->n_experts));
  MXL_TRY(get_int(&o, "experts_per_token", 1, &c->experts_per_token));
  MXL_TRY(get_int(&o, "vocab_size", 1, &c->vocab_size));
  MXL_TRY(get_int(&o, "hidden_size", 1, &c->hidden));
  MXL_TRY(get_int(&o, "intermediate_size", 1, &c->intermediate));
  MXL_TRY(get_int(&o, "head_dim", 1, &c->head_dim));
  MXL_TRY(get_int(&o, "num_attention_heads", 1, &c->n_heads));
  MXL_TRY(get_int(&o, "num_key_value_heads", 1, &c->n_kv_heads));
  MXL_TRY(get_int(&o, "sliding_window", 1, &c->sliding_window));
  MXL_TRY(get_int(&o, "initial_context_length", 1, &c->initial_context));
  MXL_TRY(get_float(&o, "swiglu_limit", 0, &c->swiglu_limit));
  MXL_TRY(get_float(&o, "rope_theta", 1, &c->rope_theta));
  MXL_TRY(get_float(&o, "rope_scaling_factor", 1, &c->rope_factor));
  MXL_TRY(get_float(&o, "rope_ntk_alpha", 1, &c->rope_beta_slow));
  MXL_TRY(get_float(&o, "rope_ntk_beta", 1, &c->rope_beta_fast));
  /* The reference code hard-codes even layers sliding and eps 1e-5. */
  for (int i = 0; i < c->n_layers && i < MXL_MAX_LAYERS; i++)
    c->layer_sliding[i] = (uint8_t)(i % 2 == 0);
  double ctx = (double)c->initial_context * c->rope_factor;
  c->max_context = ctx > 0 && ctx < INT_MAX ? (int)ctx : 0;
  return MXL_OK;
}

mxl_status mxl_config_parse_original(const char *json, size_t len, const char *source,
                                     mxl_config *c) {
  const char *src = source ? source : "original/config.json";
  return parse_config(json, len, src, MXL_CONFIG_NAMES_ORIGINAL, parse_original_fields, c);
}

mxl_status mxl_config_parse_generation(const char *json, size_t len, const char *source,
                                       mxl_config *c) {
  const char *src = source ? source : "generation_config.json";
  cJSON *root = NULL;
  MXL_TRY(parse_root(json, len, src, &root));
  jobj o = {root, src, ""};
  mxl_config t = *c; /* *c changes only when the whole file is good */
  mxl_status st = parse_token_ids(&o, &t);
  cJSON_Delete(root);
  MXL_TRY(st);
  MXL_TRY(check_token_ids(&t, src));
  *c = t;
  return MXL_OK;
}

typedef mxl_status (*parse_fn)(const char *, size_t, const char *, mxl_config *);

static mxl_status load_with(const char *path, mxl_config *c, parse_fn parse) {
  char *text = NULL;
  size_t n = 0;
  MXL_TRY(mxl_read_file(path, MXL_CONFIG_MAX_BYTES, &text, &n));
  mxl_status st = parse(text, n, path, c);
  free(text);
  return st;
}

mxl_status mxl_config_load_hf(const char *path, mxl_config *c) {
  return load_with(path, c, mxl_config_parse_hf);
}

mxl_status mxl_config_load_original(const char *path, mxl_config *c) {
  return load_with(path, c, mxl_config_parse_original);
}

mxl_status mxl_config_load_generation(const char *path, mxl_config *c) {
  return load_with(path, c, mxl_config_parse_generation);
}

/* ------------------------------------------------------------ metal header */

static int header_int(const uint8_t *h, int index, int *out) {
  uint32_t v = mxl_get_le32(h + 4 * index);
  *out = v > INT_MAX ? -1 : (int)v;
  return v <= INT_MAX;
}

/* beta such that yarn_bound(c, beta) == bound; snapped to a whole number
 * when within 1e-4 of one (the published betas are 32 and 1). */
static float beta_for_bound(const mxl_config *c, double bound) {
  double beta = c->initial_context /
                (2.0 * M_PI * exp(bound * log((double)c->rope_theta) / (c->head_dim / 2.0)));
  double r = nearbyint(beta);
  if (fabs(beta - r) <= 1e-4 * fmax(1.0, fabs(beta))) beta = r;
  return (float)beta;
}

static int close_f32(float a, float b) {
  return fabsf(a - b) <= 4.0f * FLT_EPSILON * fmaxf(fabsf(a), fabsf(b));
}

static mxl_status derive_metal_rope(const uint8_t *h, const char *src, mxl_config *c) {
  float interp = mxl_get_lef32(h + 48), offset = mxl_get_lef32(h + 52);
  float scale = mxl_get_lef32(h + 56), mult = mxl_get_lef32(h + 60);
  if (!isfinite(interp) || interp <= 0.0f || interp > 1.0f)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: interpolation_scale is %g, must be in (0, 1]", src,
                      (double)interp);
  if (!isfinite(scale) || scale <= 0.0f || !isfinite(offset))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: yarn_scale %g / yarn_offset %g are not valid", src,
                      (double)scale, (double)offset);
  c->rope_factor = (float)nearbyint(1.0 / interp);
  double ictx = nearbyint((double)c->max_context * interp);
  c->initial_context = ictx >= 1 && ictx <= INT_MAX ? (int)ictx : 0;
  if (c->initial_context <= 0 || c->head_dim <= 0 || !(c->rope_theta > 1.0f))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: context_length %d, interpolation_scale %g, "
                      "head_dim %d, rope_theta %g do not describe a YaRN RoPE",
                      src, c->max_context, (double)interp, c->head_dim, (double)c->rope_theta);
  double low = -(double)offset / scale, high = low + 1.0 / scale;
  c->rope_beta_fast = beta_for_bound(c, low);
  c->rope_beta_slow = beta_for_bound(c, high);
  /* The derived config must give back the header's values. */
  mxl_yarn y;
  mxl_config_yarn(c, &y);
  if (!close_f32(y.interpolation_scale, interp))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: interpolation_scale %.9g is not 1/%g", src,
                      (double)interp, (double)c->rope_factor);
  if (!close_f32(y.offset, offset) || !close_f32(y.scale, scale))
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: yarn_offset %.9g / yarn_scale %.9g do not match the YaRN "
                      "parameters they imply (%.9g / %.9g)",
                      src, (double)offset, (double)scale, (double)y.offset, (double)y.scale);
  if (!close_f32(y.multiplier, mult))
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: yarn_multiplier %.9g is not 0.1·ln(%g) + 1 = %.9g", src,
                      (double)mult, (double)c->rope_factor, (double)y.multiplier);
  return MXL_OK;
}

mxl_status mxl_config_parse_metal(const uint8_t h[MXL_METAL_MODEL_HEADER_BYTES],
                                  const char *source, mxl_config *c) {
  const char *src = source ? source : "model.bin";
  set_defaults(c, MXL_CONFIG_NAMES_METAL);
  static const char *const int_fields[] = {
      "context_length", "num_blocks",  "num_experts", "num_active_experts", "embedding_dim",
      "mlp_dim",        NULL,          "head_dim",    "num_heads",          "num_kv_heads",
      "attention_window"};
  int *const dest[] = {&c->max_context, &c->n_layers,   &c->n_experts,  &c->experts_per_token,
                       &c->hidden,      &c->intermediate, NULL,         &c->head_dim,
                       &c->n_heads,     &c->n_kv_heads, &c->sliding_window};
  for (int i = 0; i < 11; i++) {
    if (!dest[i]) continue;
    if (!header_int(h, i, dest[i]))
      return mxl_errorf(MXL_ERR_FORMAT, "%s: %s %u is out of range", src, int_fields[i],
                        mxl_get_le32(h + 4 * i));
  }
  c->swiglu_limit = mxl_get_lef32(h + 24);
  c->rope_theta = mxl_get_lef32(h + 44);
  c->rms_eps = mxl_get_lef32(h + 64);
  if (c->n_layers > 0 && c->n_layers <= MXL_MAX_LAYERS)
    for (int i = 0; i < c->n_layers; i++) c->layer_sliding[i] = (uint8_t)(i % 2 == 0);
  c->vocab_size = 0;
  return derive_metal_rope(h, src, c);
}

void mxl_config_write_metal(const mxl_config *c, uint8_t out[MXL_METAL_MODEL_HEADER_BYTES]) {
  mxl_yarn y;
  mxl_config_yarn(c, &y);
  /* create-local-model.py writes int(initial_context × factor). */
  mxl_put_le32(out + 0, (uint32_t)((double)c->initial_context * c->rope_factor));
  mxl_put_le32(out + 4, (uint32_t)c->n_layers);
  mxl_put_le32(out + 8, (uint32_t)c->n_experts);
  mxl_put_le32(out + 12, (uint32_t)c->experts_per_token);
  mxl_put_le32(out + 16, (uint32_t)c->hidden);
  mxl_put_le32(out + 20, (uint32_t)c->intermediate);
  mxl_put_lef32(out + 24, c->swiglu_limit);
  mxl_put_le32(out + 28, (uint32_t)c->head_dim);
  mxl_put_le32(out + 32, (uint32_t)c->n_heads);
  mxl_put_le32(out + 36, (uint32_t)c->n_kv_heads);
  mxl_put_le32(out + 40, (uint32_t)c->sliding_window);
  mxl_put_lef32(out + 44, c->rope_theta);
  mxl_put_lef32(out + 48, y.interpolation_scale);
  mxl_put_lef32(out + 52, y.offset);
  mxl_put_lef32(out + 56, y.scale);
  mxl_put_lef32(out + 60, y.multiplier);
  mxl_put_lef32(out + 64, c->rms_eps);
}

/* ------------------------------------------------------------ JSON writing */

/* The shortest decimal that reads back as the same float ("1e-05", "7"). */
static cJSON *float_number(float f) {
  char buf[32];
  if (f == floorf(f) && fabsf(f) < 1e9f) {
    snprintf(buf, sizeof buf, "%.1f", (double)f); /* 150000.0, not 1.5e+05 */
    return cJSON_CreateRaw(buf);
  }
  for (int prec = 1; prec <= 9; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
    if (strtof(buf, NULL) == f) break;
  }
  /* JSON wants "7" or "7.0", both fine; keep a ".0" so Python reads a float. */
  if (!strpbrk(buf, ".eEn")) strncat(buf, ".0", sizeof buf - strlen(buf) - 1);
  return cJSON_CreateRaw(buf);
}

static void add_float(cJSON *o, const char *key, float f) {
  cJSON_AddItemToObject(o, key, float_number(f));
}

static cJSON *id_list(const int *ids, int n) {
  cJSON *a = cJSON_CreateArray();
  for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
  return a;
}

static char *print_and_free(cJSON *root) {
  char *text = root ? cJSON_Print(root) : NULL;
  cJSON_Delete(root);
  return text;
}

static cJSON *hf_rope_scaling(const mxl_config *c) {
  cJSON *r = cJSON_CreateObject();
  add_float(r, "beta_fast", c->rope_beta_fast);
  add_float(r, "beta_slow", c->rope_beta_slow);
  add_float(r, "factor", c->rope_factor);
  cJSON_AddNumberToObject(r, "original_max_position_embeddings", c->initial_context);
  cJSON_AddStringToObject(r, "rope_type", "yarn");
  cJSON_AddFalseToObject(r, "truncate");
  return r;
}

static cJSON *hf_quantization(void) {
  cJSON *q = cJSON_CreateObject();
  static const char *const skip[] = {"model.layers.*.self_attn", "model.layers.*.mlp.router",
                                     "model.embed_tokens", "lm_head"};
  cJSON_AddItemToObject(q, "modules_to_not_convert", cJSON_CreateStringArray(skip, 4));
  cJSON_AddStringToObject(q, "quant_method", "mxfp4");
  return q;
}

char *mxl_config_to_hf_json(const mxl_config *c) {
  cJSON *o = cJSON_CreateObject();
  const char *arch[] = {"GptOssForCausalLM"};
  cJSON_AddItemToObject(o, "architectures", cJSON_CreateStringArray(arch, 1));
  cJSON_AddTrueToObject(o, "attention_bias");
  add_float(o, "attention_dropout", 0.0f);
  if (c->n_stop_ids > 0) cJSON_AddNumberToObject(o, "eos_token_id", c->stop_ids[0]);
  cJSON_AddNumberToObject(o, "experts_per_token", c->experts_per_token);
  cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
  cJSON_AddStringToObject(o, "hidden_act", "silu");
  cJSON_AddNumberToObject(o, "hidden_size", c->hidden);
  cJSON_AddNumberToObject(o, "initial_context_length", c->initial_context);
  add_float(o, "initializer_range", 0.02f);
  cJSON_AddNumberToObject(o, "intermediate_size", c->intermediate);
  cJSON *types = cJSON_AddArrayToObject(o, "layer_types");
  for (int i = 0; i < c->n_layers; i++)
    cJSON_AddItemToArray(types, cJSON_CreateString(c->layer_sliding[i] ? "sliding_attention"
                                                                       : "full_attention"));
  cJSON_AddNumberToObject(o, "max_position_embeddings", c->max_context);
  cJSON_AddStringToObject(o, "model_type", "gpt_oss");
  cJSON_AddNumberToObject(o, "num_attention_heads", c->n_heads);
  cJSON_AddNumberToObject(o, "num_experts_per_tok", c->experts_per_token);
  cJSON_AddNumberToObject(o, "num_hidden_layers", c->n_layers);
  cJSON_AddNumberToObject(o, "num_key_value_heads", c->n_kv_heads);
  cJSON_AddNumberToObject(o, "num_local_experts", c->n_experts);
  cJSON_AddFalseToObject(o, "output_router_logits");
  if (c->pad_id >= 0) cJSON_AddNumberToObject(o, "pad_token_id", c->pad_id);
  cJSON_AddItemToObject(o, "quantization_config", hf_quantization());
  add_float(o, "rms_norm_eps", c->rms_eps);
  cJSON_AddItemToObject(o, "rope_scaling", hf_rope_scaling(c));
  add_float(o, "rope_theta", c->rope_theta);
  add_float(o, "router_aux_loss_coef", 0.9f);
  cJSON_AddNumberToObject(o, "sliding_window", c->sliding_window);
  add_float(o, "swiglu_limit", c->swiglu_limit);
  cJSON_AddFalseToObject(o, "tie_word_embeddings");
  cJSON_AddStringToObject(o, "transformers_version", "4.55.0.dev0");
  cJSON_AddTrueToObject(o, "use_cache");
  cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
  return print_and_free(o);
}

char *mxl_config_to_original_json(const mxl_config *c) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddNumberToObject(o, "num_hidden_layers", c->n_layers);
  cJSON_AddNumberToObject(o, "num_experts", c->n_experts);
  cJSON_AddNumberToObject(o, "experts_per_token", c->experts_per_token);
  cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
  cJSON_AddNumberToObject(o, "hidden_size", c->hidden);
  cJSON_AddNumberToObject(o, "intermediate_size", c->intermediate);
  add_float(o, "swiglu_limit", c->swiglu_limit);
  cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
  cJSON_AddNumberToObject(o, "num_attention_heads", c->n_heads);
  cJSON_AddNumberToObject(o, "num_key_value_heads", c->n_kv_heads);
  cJSON_AddNumberToObject(o, "sliding_window", c->sliding_window);
  cJSON_AddNumberToObject(o, "initial_context_length", c->initial_context);
  add_float(o, "rope_theta", c->rope_theta);
  add_float(o, "rope_scaling_factor", c->rope_factor);
  add_float(o, "rope_ntk_alpha", c->rope_beta_slow);
  add_float(o, "rope_ntk_beta", c->rope_beta_fast);
  return print_and_free(o);
}

char *mxl_config_to_generation_json(const mxl_config *c) {
  cJSON *o = cJSON_CreateObject();
  if (c->bos_id >= 0) cJSON_AddNumberToObject(o, "bos_token_id", c->bos_id);
  cJSON_AddTrueToObject(o, "do_sample");
  cJSON_AddItemToObject(o, "eos_token_id", id_list(c->stop_ids, c->n_stop_ids));
  if (c->pad_id >= 0) cJSON_AddNumberToObject(o, "pad_token_id", c->pad_id);
  cJSON_AddStringToObject(o, "transformers_version", "4.55.0.dev0");
  return print_and_free(o);
}
