/* PEFT import (peft.h): adapters trained elsewhere, in every expert layout
 * in use for gpt-oss, as one mxlora LoRA set.
 *
 * Keys (after an optional "base_model.model." prefix), layer L, expert E:
 *   attention     model.layers.L.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight
 *   fused 3-D     model.layers.L.mlp.experts[.base_layer].lora_{A,B}.weight
 *                 (PEFT target_parameters; which projection comes from the
 *                 config, peft.h explains the nesting)
 *   Unsloth       model.layers.L.mlp.experts.{gate_up,down}_projs.E.lora_*
 *                 (per-expert nn.Linear, gate/up rows interleaved as HF)
 *   per-expert    model.layers.L.mlp.experts.E.{gate_proj,up_proj,down_proj,
 *                 gate_up_proj}.lora_* (one module per expert and matrix)
 *
 * An mxlora set has one rank and one alpha. Pieces that differ (rank_pattern,
 * alpha_pattern, separate gate and up LoRAs of one expert) are placed side
 * by side in a rank wide enough for the widest pair, zero elsewhere, with
 * each piece's B rescaled from its own scaling to the set's: the sum
 * Σ s·B·A is the same matrix, exactly up to float rounding. Gate and up
 * pieces of an expert stack their ranks (gate rows of B are the even HF
 * rows, up rows the odd ones). Adapters without such differences are
 * copied value for value. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <math.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "adapters/adapter_file.h"
#include "adapters/peft.h"
#include "core/bf16.h"
#include "core/bytes.h"
#include "core/json.h"
#include "core/status.h"
#include "core/strbuf.h"
#include "model/safetensors.h"

#define KEY_PREFIX "base_model.model."
enum { NAME_SIZE = 160, PATH_SIZE = 4096 };

typedef enum piece_layout {
  LAYOUT_ATTENTION, /* a dense module */
  LAYOUT_FUSED,     /* PEFT target_parameters: all experts in one pair */
  LAYOUT_UNSLOTH,   /* gate_up_projs.E / down_projs.E */
  LAYOUT_PER_EXPERT /* experts.E.<proj> */
} piece_layout;

static const char *const layout_names[4] = {
    "attention only", "PEFT target_parameters (fused 3-D experts)",
    "Unsloth per-expert modules (gate_up_projs.N, down_projs.N)",
    "per-expert modules (experts.N.gate_proj/up_proj/down_proj)"};

typedef enum piece_part { PART_ALL, PART_GATE, PART_UP } piece_part;

/* One LoRA pair of the file. */
typedef struct piece {
  int layer, expert; /* expert -1: attention or fused */
  mxl_lora_target target;
  piece_part part;
  piece_layout layout;
  char module[NAME_SIZE]; /* the name rank/alpha patterns match */
  const mxl_st_tensor *A, *B;
  int rank;
  float scaling;
  int offset; /* first rank column in the set */
} piece;

typedef struct pattern {
  const char *key;
  double value;
} pattern;

typedef struct peft_config {
  int rank;
  float alpha;
  bool rslora;
  uint8_t expert[2][MXL_MAX_LAYERS]; /* target_parameters */
  pattern *ranks, *alphas;
  int n_ranks, n_alphas;
  cJSON *root; /* owns the pattern keys */
} peft_config;

/* ------------------------------------------------------------ config */

static mxl_status require_false(const cJSON *root, const char *key, const char *src) {
  bool v;
  MXL_TRY(mxl_json_opt_bool(root, key, false, &v, src));
  if (v) return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: %s: true is not supported", src, key);
  return MXL_OK;
}

static mxl_status read_patterns(const cJSON *root, const char *key, const char *src,
                                pattern **out, int *n) {
  const cJSON *o;
  MXL_TRY(mxl_json_opt_object(root, key, &o, src));
  *n = 0;
  if (!o || !o->child) return MXL_OK;
  *out = calloc((size_t)cJSON_GetArraySize(o), sizeof **out);
  if (!*out) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", src);
  for (const cJSON *e = o->child; e; e = e->next) {
    if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble) || e->valuedouble <= 0)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: %s.%.80s: expected a positive number", src, key,
                        e->string);
    (*out)[(*n)++] = (pattern){e->string, e->valuedouble};
  }
  return MXL_OK;
}

/* PEFT's rule: a parameter is targeted by entry t when its full name equals
 * t or ends with "." + t. */
static int param_matches(const char *full, const char *t) {
  size_t n = strlen(full), m = strlen(t);
  if (!strcmp(full, t)) return 1;
  return n > m && full[n - m - 1] == '.' && !strcmp(full + n - m, t);
}

static mxl_status parse_target_parameters(const cJSON *root, int n_layers, const char *src,
                                          peft_config *s) {
  static const char *const params[2] = {"gate_up_proj", "down_proj"};
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
        char full[NAME_SIZE];
        snprintf(full, sizeof full, "model.layers.%d.mlp.experts.%s", l, params[k]);
        if (param_matches(full, t->valuestring)) s->expert[k][l] = 1, matched = 1;
      }
    if (!matched)
      return mxl_errorf(MXL_ERR_UNSUPPORTED,
                        "%s: target_parameters[%d]: \"%.80s\" names no expert gate_up_proj or "
                        "down_proj of this model",
                        src, index, t->valuestring);
  }
  return MXL_OK;
}

static mxl_status parse_config(const char *path, int n_layers, peft_config *s) {
  memset(s, 0, sizeof *s);
  MXL_TRY(mxl_json_parse_file(path, 1 << 20, &s->root));
  const cJSON *root = s->root;
  if (!cJSON_IsObject(root)) return mxl_errorf(MXL_ERR_FORMAT, "%s: expected a JSON object", path);
  const char *type;
  MXL_TRY(mxl_json_opt_string(root, "peft_type", "LORA", &type, path));
  if (strcmp(type, "LORA"))
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: peft_type \"%.40s\" is not LORA", path, type);
  int64_t rank = 0;
  MXL_TRY(mxl_json_get_int_range(root, "r", 1, MXL_LORA_MAX_RANK, &rank, path));
  s->rank = (int)rank;
  MXL_TRY(mxl_json_get_float(root, "lora_alpha", &s->alpha, path));
  MXL_TRY(mxl_json_opt_bool(root, "use_rslora", false, &s->rslora, path));
  MXL_TRY(require_false(root, "use_dora", path));
  MXL_TRY(require_false(root, "lora_bias", path));
  MXL_TRY(require_false(root, "fan_in_fan_out", path));
  MXL_TRY(read_patterns(root, "rank_pattern", path, &s->ranks, &s->n_ranks));
  MXL_TRY(read_patterns(root, "alpha_pattern", path, &s->alphas, &s->n_alphas));
  return parse_target_parameters(root, n_layers, path, s);
}

static void config_free(peft_config *s) {
  free(s->ranks);
  free(s->alphas);
  cJSON_Delete(s->root);
}

/* The pattern PEFT would pick for a module: an exact name first, else the
 * first key that, as a regular expression, matches a dotted suffix. */
static mxl_status match_pattern(const pattern *p, int n, const char *module, const char *src,
                                const pattern **hit) {
  *hit = NULL;
  for (int i = 0; i < n; i++)
    if (!strcmp(p[i].key, module)) {
      *hit = &p[i];
      return MXL_OK;
    }
  for (int i = 0; i < n && !*hit; i++) {
    char re[512];
    snprintf(re, sizeof re, "^(.*\\.)?(?:%s)$", p[i].key);
    int err;
    PCRE2_SIZE at;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, 0, &err, &at, NULL);
    if (!code)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: pattern \"%.80s\" is not a regular expression", src,
                        p[i].key);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, NULL);
    int rc = md ? pcre2_match(code, (PCRE2_SPTR)module, PCRE2_ZERO_TERMINATED, 0, 0, md, NULL)
                : -1;
    pcre2_match_data_free(md);
    pcre2_code_free(code);
    if (rc >= 0) *hit = &p[i];
  }
  return MXL_OK;
}

/* ------------------------------------------------------------ keys */

static const char *const attn_modules[4] = {"q_proj", "k_proj", "v_proj", "o_proj"};

/* "<digits>." at *p: the number, *p moved past the dot; -1 if absent. */
static int take_index(const char **p) {
  const char *s = *p;
  long v = 0;
  int digits = 0;
  while (*s >= '0' && *s <= '9' && digits < 7) v = v * 10 + (*s++ - '0'), digits++;
  if (!digits || *s != '.') return -1;
  *p = s + 1;
  return (int)v;
}

static int take(const char **p, const char *word) {
  size_t n = strlen(word);
  if (strncmp(*p, word, n)) return 0;
  *p += n;
  return 1;
}

/* Classifies a bare key ("model.layers..."): fills x (everything but the
 * tensors and ranks) and *is_b; returns 0 when the key is not one mxlora
 * knows. Fused pairs get their target later, from the config. */
static int classify(const char *key, piece *x, int *is_b) {
  memset(x, 0, sizeof *x);
  x->expert = -1;
  const char *p = key;
  if (!take(&p, "model.layers.") || (x->layer = take_index(&p)) < 0) return 0;
  const char *module_start = key, *module_end = NULL;
  if (take(&p, "self_attn.")) {
    x->layout = LAYOUT_ATTENTION;
    int t = -1;
    for (int i = 0; i < 4 && t < 0; i++)
      if (take(&p, attn_modules[i])) t = i;
    if (t < 0) return 0;
    x->target = (mxl_lora_target)t;
    module_end = p;
  } else if (take(&p, "mlp.experts.")) {
    int gate_up = take(&p, "gate_up_projs.");
    if (gate_up || take(&p, "down_projs.")) {
      x->layout = LAYOUT_UNSLOTH;
      x->target = gate_up ? MXL_LORA_GATE_UP : MXL_LORA_DOWN;
      if ((x->expert = take_index(&p)) < 0) return 0;
      module_end = --p; /* back on the dot before lora_ */
    } else if (*p >= '0' && *p <= '9') {
      x->layout = LAYOUT_PER_EXPERT;
      if ((x->expert = take_index(&p)) < 0) return 0;
      if (take(&p, "gate_up_proj")) x->target = MXL_LORA_GATE_UP;
      else if (take(&p, "gate_proj")) x->target = MXL_LORA_GATE_UP, x->part = PART_GATE;
      else if (take(&p, "up_proj")) x->target = MXL_LORA_GATE_UP, x->part = PART_UP;
      else if (take(&p, "down_proj")) x->target = MXL_LORA_DOWN;
      else return 0;
      module_end = p;
    } else {
      x->layout = LAYOUT_FUSED;
      module_end = p - 1; /* "...mlp.experts"; the parameter is added later */
      x->target = take(&p, "base_layer.") ? MXL_LORA_GATE_UP : MXL_LORA_N_TARGETS;
    }
  } else {
    return 0;
  }
  if (x->layout != LAYOUT_FUSED && !take(&p, ".")) return 0;
  if (take(&p, "lora_A.weight")) *is_b = 0;
  else if (take(&p, "lora_B.weight")) *is_b = 1;
  else return 0;
  if (*p) return 0;
  snprintf(x->module, sizeof x->module, "%.*s", (int)(module_end - module_start), module_start);
  return 1;
}

/* ------------------------------------------------------------ pieces */

typedef struct import_ctx {
  const mxl_config *c;
  const peft_config *cfg;
  const char *file, *config_path;
  piece *pieces;
  int n_pieces;
  unsigned layouts; /* bits of piece_layout */
  int rescaled, stacked;
} import_ctx;

static int same_slot(const piece *a, const piece *b) {
  return a->layer == b->layer && a->target == b->target && a->expert == b->expert &&
         a->part == b->part && a->layout == b->layout;
}

/* Fused pairs name no projection: nested means gate_up inside, down outside;
 * a lone pair is whichever target_parameters lists for the layer. */
static mxl_status resolve_fused(import_ctx *x, piece *p, const char *key) {
  const uint8_t gu = x->cfg->expert[0][p->layer], dn = x->cfg->expert[1][p->layer];
  if (p->target == MXL_LORA_GATE_UP) {
    if (!gu || !dn)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: a nested (base_layer) expert pair, but "
                        "target_parameters does not list both projections of layer %d",
                        x->file, key, p->layer);
  } else if (gu && dn) {
    p->target = MXL_LORA_DOWN;
  } else if (gu || dn) {
    p->target = gu ? MXL_LORA_GATE_UP : MXL_LORA_DOWN;
  } else {
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: expert LoRA for layer %d, but %s lists no "
                      "gate_up_proj or down_proj of that layer in target_parameters",
                      x->file, key, p->layer, x->config_path);
  }
  size_t n = strlen(p->module);
  snprintf(p->module + n, sizeof p->module - n, ".%s",
           p->target == MXL_LORA_GATE_UP ? "gate_up_proj" : "down_proj");
  return MXL_OK;
}

static mxl_status add_tensor(import_ctx *x, const mxl_st_tensor *t) {
  const char *key = t->name;
  if (!strncmp(key, KEY_PREFIX, strlen(KEY_PREFIX))) key += strlen(KEY_PREFIX);
  piece p;
  int is_b = 0;
  if (!classify(key, &p, &is_b))
    return mxl_errorf(MXL_ERR_UNSUPPORTED,
                      "%s: %s: not a LoRA tensor mxlora knows (attention q/k/v/o or expert "
                      "gate_up/down in one of the known layouts; embeddings, lm_head, the "
                      "router, biases and DoRA vectors are not adapted by mxlora)",
                      x->file, t->name);
  if (p.layer >= x->c->n_layers)
    return mxl_errorf(MXL_ERR_ARGUMENT, "%s: %s: layer %d, the model has %d", x->file, t->name,
                      p.layer, x->c->n_layers);
  if (p.expert >= x->c->n_experts)
    return mxl_errorf(MXL_ERR_ARGUMENT, "%s: %s: expert %d, the model has %d", x->file, t->name,
                      p.expert, x->c->n_experts);
  if (p.layout == LAYOUT_FUSED) MXL_TRY(resolve_fused(x, &p, key));
  for (int i = 0; i < x->n_pieces; i++) {
    piece *q = &x->pieces[i];
    if (!same_slot(q, &p)) continue;
    const mxl_st_tensor **slot = is_b ? &q->B : &q->A;
    if (*slot)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: %s and %s are the same LoRA matrix", x->file,
                        (*slot)->name, t->name);
    *slot = t;
    return MXL_OK;
  }
  for (int i = 0; i < x->n_pieces; i++) {
    const piece *q = &x->pieces[i];
    if (q->layer != p.layer || q->target != p.target) continue;
    if (q->layout != p.layout || (q->expert == p.expert && (q->part == PART_ALL) != (p.part == PART_ALL)))
      return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: layer %d's %s is adapted twice (%s and %s)",
                        x->file, t->name, p.layer, mxl_lora_target_name(p.target), q->module,
                        p.module);
  }
  if (is_b) p.B = t;
  else p.A = t;
  x->pieces[x->n_pieces++] = p;
  x->layouts |= 1u << p.layout;
  return MXL_OK;
}

/* The rank and scaling a piece's module gets, and its shapes checked. */
static mxl_status size_piece(import_ctx *x, piece *p) {
  if (!p->A || !p->B)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s without its lora_%c", x->file,
                      (p->A ? p->A : p->B)->name, p->A ? 'B' : 'A');
  const pattern *r = NULL, *a = NULL;
  MXL_TRY(match_pattern(x->cfg->ranks, x->cfg->n_ranks, p->module, x->config_path, &r));
  MXL_TRY(match_pattern(x->cfg->alphas, x->cfg->n_alphas, p->module, x->config_path, &a));
  p->rank = r ? (int)r->value : x->cfg->rank;
  float alpha = a ? (float)a->value : x->cfg->alpha;
  p->scaling = x->cfg->rslora ? alpha / sqrtf((float)p->rank) : alpha / (float)p->rank;
  mxl_lora_dims d = mxl_lora_target_dims(x->c, p->target);
  const int fused = p->layout == LAYOUT_FUSED;
  const int64_t E = fused ? d.n_experts : 1;
  const int64_t out = p->part == PART_ALL ? d.out : d.out / 2;
  const int64_t want_a[2] = {E * p->rank, d.in}, want_b[2] = {out, p->rank * E};
  const mxl_st_tensor *ts[2] = {p->A, p->B};
  const int64_t *want[2] = {want_a, want_b};
  for (int i = 0; i < 2; i++) {
    const mxl_st_tensor *t = ts[i];
    if (t->ndim != 2 || t->shape[0] != want[i][0] || t->shape[1] != want[i][1])
      return mxl_errorf(MXL_ERR_FORMAT,
                        "%s: %s: a %d-D tensor [%lld, %lld%s], expected [%lld, %lld] for rank %d "
                        "(%s) and this model's %s",
                        x->file, t->name, t->ndim, t->ndim > 0 ? (long long)t->shape[0] : 0LL,
                        t->ndim > 1 ? (long long)t->shape[1] : 0LL, t->ndim > 2 ? ", ..." : "",
                        (long long)want[i][0], (long long)want[i][1], p->rank,
                        r ? "rank_pattern" : "r", mxl_lora_target_name(p->target));
  }
  return MXL_OK;
}

/* Rank columns: gate then up pieces of an expert side by side; the set's
 * rank is the widest pair. */
static int place_pieces(import_ctx *x) {
  int rank = 1;
  for (int i = 0; i < x->n_pieces; i++) {
    piece *p = &x->pieces[i];
    p->offset = 0;
    if (p->part == PART_UP)
      for (int j = 0; j < x->n_pieces; j++) {
        const piece *g = &x->pieces[j];
        if (g->part == PART_GATE && g->layer == p->layer && g->expert == p->expert)
          p->offset = g->rank, x->stacked = 1;
      }
    if (p->offset + p->rank > rank) rank = p->offset + p->rank;
  }
  return rank;
}

/* ------------------------------------------------------------ values */

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
    if (!isfinite(dst[j]))
      return mxl_errorf(MXL_ERR_NUMERIC, "%s: %s: element %zu is not finite", file, t->name, j);
  }
  return MXL_OK;
}

/* Writes piece p's A and B (B times `factor`) into the set's host block. */
static mxl_status fill_piece(import_ctx *x, const piece *p, mxl_lora *lora, float *a, float *b,
                             float factor) {
  mxl_lora_pair pair;
  mxl_lora_find(lora->layout, lora->params, p->layer, p->target, &pair);
  MXL_TRY(read_f32(p->A, a, x->file));
  MXL_TRY(read_f32(p->B, b, x->file));
  const int R = pair.rank, r = p->rank, in = pair.in, out = pair.out;
  const int fused = p->layout == LAYOUT_FUSED;
  const int e0 = fused ? 0 : (p->expert < 0 ? 0 : p->expert);
  const int e1 = fused ? pair.n_experts : e0 + 1;
  const int E = e1 - e0;
  for (int e = e0; e < e1; e++) {
    const int le = e - e0; /* the expert's index within the file's tensor */
    float *A = pair.A + (size_t)e * R * in, *B = pair.B + (size_t)e * out * R;
    for (int k = 0; k < r; k++)
      memcpy(A + (size_t)(p->offset + k) * in, a + ((size_t)le * r + k) * in, (size_t)in * 4);
    const int rows = p->part == PART_ALL ? out : out / 2;
    for (int o = 0; o < rows; o++) {
      const int row = p->part == PART_ALL ? o : 2 * o + (p->part == PART_UP);
      for (int k = 0; k < r; k++) {
        /* fused B is [out, r·E], column k·E + e (peft.h) */
        float v = fused ? b[(size_t)o * r * E + (size_t)k * E + le] : b[(size_t)o * r + k];
        B[(size_t)row * R + p->offset + k] = v * factor;
      }
    }
  }
  return MXL_OK;
}

static mxl_status fill_all(import_ctx *x, mxl_lora *lora) {
  size_t max = 0;
  for (int i = 0; i < x->n_pieces; i++) {
    size_t na = x->pieces[i].A->nbytes / 2, nb = x->pieces[i].B->nbytes / 2;
    if (na > max) max = na;
    if (nb > max) max = nb;
  }
  float *a = malloc(max * sizeof *a), *b = malloc(max * sizeof *b);
  mxl_status st = a && b ? MXL_OK : mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", x->file);
  const float S = lora->layout->scaling;
  for (int i = 0; i < x->n_pieces && st == MXL_OK; i++) {
    const piece *p = &x->pieces[i];
    float factor = p->scaling == S ? 1.0f : p->scaling / S;
    if (factor != 1.0f) x->rescaled = 1;
    st = fill_piece(x, p, lora, a, b, factor);
  }
  free(a);
  free(b);
  return st;
}

/* ------------------------------------------------------------ report */

static void report(const import_ctx *x, const mxl_lora_layout *lay, const char *dir,
                   char **out) {
  if (!out) return;
  mxl_strbuf b = {0};
  char targets[MXL_LORA_N_TARGETS * 4 * MXL_MAX_LAYERS];
  mxl_adapter_targets_text(&lay->cfg, lay->n_layers, targets, sizeof targets);
  mxl_strbuf_printf(&b, "imported %s: ", dir);
  int first = 1;
  for (int l = 0; l < 4; l++)
    if (x->layouts & (1u << l) && (l != LAYOUT_ATTENTION || x->layouts == 1u)) {
      mxl_strbuf_printf(&b, "%s%s", first ? "" : " + ", layout_names[l]);
      first = 0;
    }
  mxl_strbuf_printf(&b, "\n  rank %d, alpha %g, scaling %g%s, %zu parameters\n  targets %s\n",
                    lay->cfg.rank, lay->cfg.alpha, lay->scaling, lay->cfg.rslora ? " (rsLoRA)" : "",
                    lay->n_params, targets);
  if (x->stacked)
    mxl_strbuf_printf(&b, "  separate gate and up LoRAs stacked into one gate_up pair per expert "
                          "(ranks side by side; the same delta)\n");
  if (x->rescaled || lay->cfg.rank != x->cfg->rank)
    mxl_strbuf_printf(&b, "  per-module ranks or alphas folded in: pairs padded with zeros to "
                          "rank %d and their B rescaled to scaling %g (the same delta)\n",
                      lay->cfg.rank, lay->scaling);
  *out = mxl_strbuf_take(&b);
}

/* ------------------------------------------------------------ entry */

static mxl_status import_from(import_ctx *x, const mxl_safetensors *st, mxl_lora **out) {
  x->pieces = calloc((size_t)st->n_tensors + 1, sizeof *x->pieces);
  if (!x->pieces) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", x->file);
  for (int i = 0; i < st->n_tensors; i++) MXL_TRY(add_tensor(x, &st->tensors[i]));
  if (!x->n_pieces) return mxl_errorf(MXL_ERR_FORMAT, "%s: no LoRA tensors", x->file);
  for (int i = 0; i < x->n_pieces; i++) MXL_TRY(size_piece(x, &x->pieces[i]));
  const int rank = place_pieces(x);
  if (rank > MXL_LORA_MAX_RANK)
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: the pairs need rank %d, more than %d", x->file,
                      rank, MXL_LORA_MAX_RANK);
  mxl_lora_config lc;
  /* the config's alpha and rsLoRA at the widest rank; the usual uniform
   * adapter keeps its r and alpha, so nothing is rescaled */
  mxl_lora_config_init(&lc, rank, x->cfg->alpha);
  lc.rslora = x->cfg->rslora;
  for (int i = 0; i < x->n_pieces; i++)
    lc.layers[x->pieces[i].target][x->pieces[i].layer] = 1;
  mxl_status status = mxl_lora_create(x->c, &lc, NULL, out);
  if (status != MXL_OK) return mxl_error_prefix(status, "%s: ", x->file);
  status = fill_all(x, *out);
  if (status != MXL_OK) {
    mxl_lora_destroy(*out);
    *out = NULL;
  }
  return status;
}

mxl_status mxl_peft_import_report(const char *dir, const mxl_config *c, mxl_lora **out,
                                  char **report_out) {
  *out = NULL;
  if (report_out) *report_out = NULL;
  char config_path[PATH_SIZE], path[PATH_SIZE];
  snprintf(config_path, sizeof config_path, "%s/adapter_config.json", dir);
  snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
  peft_config cfg;
  mxl_status status = parse_config(config_path, c->n_layers, &cfg);
  mxl_safetensors *st = NULL;
  if (status == MXL_OK) status = mxl_safetensors_open(path, &st);
  import_ctx x = {.c = c, .cfg = &cfg, .file = path, .config_path = config_path};
  if (status == MXL_OK) status = import_from(&x, st, out);
  if (status == MXL_OK) report(&x, (*out)->layout, dir, report_out);
  free(x.pieces);
  mxl_safetensors_close(st);
  config_free(&cfg);
  return status;
}

mxl_status mxl_peft_import(const char *dir, const mxl_config *c, mxl_lora **out) {
  return mxl_peft_import_report(dir, c, out, NULL);
}
