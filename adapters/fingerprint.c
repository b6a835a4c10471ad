/* Base-model fingerprint (see fingerprint.h for what is hashed and why). */
#include "adapters/fingerprint.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/status.h"

/* Every field that affects the shapes or the math of an adapted model. */
typedef struct config_field {
  const char *name;
  int is_float;
  size_t offset;
  int64_t lo, hi; /* accepted range when read from an adapter header (ints) */
} config_field;

#define INT_FIELD(f, lo, hi) {#f, 0, offsetof(mxl_config, f), lo, hi}
#define FLOAT_FIELD(f) {#f, 1, offsetof(mxl_config, f), 0, 0}

static const config_field fields[] = {
    INT_FIELD(n_layers, 1, MXL_MAX_LAYERS),
    INT_FIELD(n_experts, 1, 4096),
    INT_FIELD(experts_per_token, 1, 4096),
    INT_FIELD(hidden, 1, 1 << 20),
    INT_FIELD(intermediate, 1, 1 << 20),
    INT_FIELD(head_dim, 1, 4096),
    INT_FIELD(n_heads, 1, 4096),
    INT_FIELD(n_kv_heads, 1, 4096),
    INT_FIELD(sliding_window, 0, 1 << 30),
    INT_FIELD(initial_context, 0, 1 << 30),
    FLOAT_FIELD(rope_theta),
    FLOAT_FIELD(rope_factor),
    FLOAT_FIELD(rope_beta_fast),
    FLOAT_FIELD(rope_beta_slow),
    FLOAT_FIELD(swiglu_limit),
    FLOAT_FIELD(swiglu_alpha),
    FLOAT_FIELD(rms_eps),
};
enum { N_FIELDS = sizeof fields / sizeof fields[0] };

static int field_int(const mxl_config *c, const config_field *f) {
  return *(const int *)((const char *)c + f->offset);
}

static float field_float(const mxl_config *c, const config_field *f) {
  return *(const float *)((const char *)c + f->offset);
}

/* The canonical spelling of one field's value. */
static void field_value(const mxl_config *c, const config_field *f, char *buf, size_t cap) {
  if (f->is_float) snprintf(buf, cap, "%.5g", (double)field_float(c, f));
  else snprintf(buf, cap, "%d", field_int(c, f));
}

static void layer_types(const mxl_config *c, char buf[MXL_MAX_LAYERS + 1]) {
  int n = c->n_layers < 0 ? 0 : c->n_layers > MXL_MAX_LAYERS ? MXL_MAX_LAYERS : c->n_layers;
  for (int l = 0; l < n; l++) buf[l] = c->layer_sliding[l] ? 'S' : 'F';
  buf[n] = '\0';
}

void mxl_fingerprint_config_text(const mxl_config *c, char text[MXL_FINGERPRINT_TEXT_SIZE]) {
  size_t used = (size_t)snprintf(text, MXL_FINGERPRINT_TEXT_SIZE, "mxlora-fingerprint-v1\n");
  for (int i = 0; i < N_FIELDS; i++) {
    char value[48];
    field_value(c, &fields[i], value, sizeof value);
    used += (size_t)snprintf(text + used, MXL_FINGERPRINT_TEXT_SIZE - used, "%s=%s\n",
                             fields[i].name, value);
  }
  char types[MXL_MAX_LAYERS + 1];
  layer_types(c, types);
  snprintf(text + used, MXL_FINGERPRINT_TEXT_SIZE - used, "layer_types=%s\n", types);
}

/* Hashes n bf16 values as little-endian bytes (the files' byte order). */
static void hash_bf16(mxl_sha256_ctx *ctx, const uint16_t *v, size_t n) {
  uint8_t buf[512];
  size_t used = 0;
  for (size_t i = 0; i < n; i++) {
    buf[used++] = (uint8_t)(v[i] & 0xff);
    buf[used++] = (uint8_t)(v[i] >> 8);
    if (used == sizeof buf) {
      mxl_sha256_update(ctx, buf, used);
      used = 0;
    }
  }
  mxl_sha256_update(ctx, buf, used);
}

static mxl_status missing(const char *what, int layer) {
  return mxl_errorf(MXL_ERR_ARGUMENT, "fingerprint: the model has no %s in layer %d", what,
                    layer);
}

mxl_status mxl_fingerprint_compute(const mxl_config *c, const mxl_weights *w,
                                   uint8_t digest[MXL_SHA256_SIZE]) {
  if (c->n_layers < 1 || c->n_layers > MXL_MAX_LAYERS || !w->layers || !w->final_norm)
    return mxl_errorf(MXL_ERR_ARGUMENT, "fingerprint: the model has no layers or final norm");
  for (int l = 0; l < c->n_layers; l++) {
    const mxl_layer_weights *lw = &w->layers[l];
    if (!lw->attn_norm) return missing("input norm", l);
    if (!lw->sinks) return missing("attention sinks", l);
    if (!lw->mlp_norm) return missing("post-attention norm", l);
    if (!lw->router.w || !lw->router.bias) return missing("router weight and bias", l);
  }
  char text[MXL_FINGERPRINT_TEXT_SIZE];
  mxl_fingerprint_config_text(c, text);
  mxl_sha256_ctx ctx;
  mxl_sha256_init(&ctx);
  mxl_sha256_update(&ctx, text, strlen(text));
  size_t H = (size_t)c->hidden, E = (size_t)c->n_experts;
  for (int l = 0; l < c->n_layers; l++) {
    const mxl_layer_weights *lw = &w->layers[l];
    hash_bf16(&ctx, lw->attn_norm, H);
    hash_bf16(&ctx, lw->sinks, (size_t)c->n_heads);
    hash_bf16(&ctx, lw->mlp_norm, H);
    hash_bf16(&ctx, lw->router.w, E * H);
    hash_bf16(&ctx, lw->router.bias, E);
  }
  hash_bf16(&ctx, w->final_norm, H);
  mxl_sha256_final(&ctx, digest);
  return MXL_OK;
}

mxl_status mxl_model_fingerprint(const struct mxl_model *m, uint8_t digest[MXL_SHA256_SIZE]) {
  return mxl_fingerprint_compute(&m->config, &m->w, digest);
}

cJSON *mxl_fingerprint_config_json(const mxl_config *c) {
  cJSON *obj = cJSON_CreateObject();
  if (!obj) return NULL;
  for (int i = 0; i < N_FIELDS; i++) {
    char value[48];
    field_value(c, &fields[i], value, sizeof value);
    /* The JSON holds the canonical value itself (1e-05, not 9.99999974e-06). */
    if (!cJSON_AddNumberToObject(obj, fields[i].name, strtod(value, NULL))) goto fail;
  }
  char types[MXL_MAX_LAYERS + 1];
  layer_types(c, types);
  if (!cJSON_AddStringToObject(obj, "layer_types", types)) goto fail;
  return obj;
fail:
  cJSON_Delete(obj);
  return NULL;
}

mxl_status mxl_fingerprint_config_from_json(const cJSON *obj, mxl_config *out,
                                             const char *source) {
  memset(out, 0, sizeof *out);
  mxl_config c;
  memset(&c, 0, sizeof c);
  for (int i = 0; i < N_FIELDS; i++) {
    const config_field *f = &fields[i];
    if (f->is_float) {
      MXL_TRY(mxl_json_get_float(obj, f->name, (float *)((char *)&c + f->offset), source));
    } else {
      int64_t v;
      MXL_TRY(mxl_json_get_int_range(obj, f->name, f->lo, f->hi, &v, source));
      *(int *)((char *)&c + f->offset) = (int)v;
    }
  }
  const char *types;
  MXL_TRY(mxl_json_get_string(obj, "layer_types", &types, source));
  if (strlen(types) != (size_t)c.n_layers)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: layer_types: %zu letters for %d layers", source,
                      strlen(types), c.n_layers);
  for (int l = 0; l < c.n_layers; l++) {
    if (types[l] != 'S' && types[l] != 'F')
      return mxl_errorf(MXL_ERR_FORMAT,
                        "%s: layer_types: letter %d is '%c', expected S (sliding) or F (full)",
                        source, l, types[l]);
    c.layer_sliding[l] = types[l] == 'S';
  }
  *out = c;
  return MXL_OK;
}

static void append(char *buf, size_t cap, size_t *used, const char *name, const char *a,
                   const char *b) {
  if (*used >= cap) return;
  int n = snprintf(buf + *used, cap - *used, "%s%s %s vs %s", *used ? ", " : "", name, a, b);
  if (n > 0) *used += (size_t)n;
}

int mxl_fingerprint_config_diff(const mxl_config *a, const mxl_config *b, char *buf,
                                size_t cap) {
  size_t used = 0;
  int n = 0;
  if (cap) buf[0] = '\0';
  for (int i = 0; i < N_FIELDS; i++) {
    char va[48], vb[48];
    field_value(a, &fields[i], va, sizeof va);
    field_value(b, &fields[i], vb, sizeof vb);
    if (strcmp(va, vb)) {
      n++;
      append(buf, cap, &used, fields[i].name, va, vb);
    }
  }
  char ta[MXL_MAX_LAYERS + 1], tb[MXL_MAX_LAYERS + 1];
  layer_types(a, ta);
  layer_types(b, tb);
  if (strcmp(ta, tb)) {
    n++;
    append(buf, cap, &used, "layer_types", ta, tb);
  }
  return n;
}
