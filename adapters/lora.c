/* LoRA parameter sets: sizing, lookup, initialisation, PEFT re-indexing. */
#include "adapters/lora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/assert.h"
#include "core/status.h"

static const char *const target_names[MXL_LORA_N_TARGETS] = {"q", "k", "v",
                                                            "o", "gate_up", "down"};

const char *mxl_lora_target_name(mxl_lora_target t) {
  return (unsigned)t < MXL_LORA_N_TARGETS ? target_names[t] : "?";
}

int mxl_lora_target_parse(const char *name) {
  for (int t = 0; t < MXL_LORA_N_TARGETS; t++)
    if (!strcmp(name, target_names[t])) return t;
  return -1;
}

int mxl_lora_target_is_expert(mxl_lora_target t) {
  return t == MXL_LORA_GATE_UP || t == MXL_LORA_DOWN;
}

static int parse_target_item(const char *item, unsigned *mask) {
  if (!strcmp(item, "attn")) *mask |= MXL_LORA_ATTN_BITS;
  else if (!strcmp(item, "experts")) *mask |= MXL_LORA_EXPERT_BITS;
  else if (!strcmp(item, "all")) *mask |= MXL_LORA_ATTN_BITS | MXL_LORA_EXPERT_BITS;
  else {
    int t = mxl_lora_target_parse(item);
    if (t < 0) return 0;
    *mask |= MXL_LORA_BIT(t);
  }
  return 1;
}

mxl_status mxl_lora_targets_parse(const char *spec, unsigned *mask_out) {
  *mask_out = 0;
  unsigned mask = 0;
  const char *p = spec;
  for (;;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    char item[32];
    if (len == 0 || len >= sizeof item)
      return mxl_errorf(MXL_ERR_ARGUMENT, "targets \"%s\": empty or overlong item", spec);
    memcpy(item, p, len);
    item[len] = '\0';
    if (!parse_target_item(item, &mask))
      return mxl_errorf(MXL_ERR_ARGUMENT,
                        "targets \"%s\": unknown target \"%s\" (known: q, k, v, o, gate_up, "
                        "down, attn, experts, all)",
                        spec, item);
    if (!comma) break;
    p = comma + 1;
  }
  *mask_out = mask;
  return MXL_OK;
}

void mxl_lora_config_init(mxl_lora_config *lc, int rank, float alpha) {
  memset(lc, 0, sizeof *lc);
  lc->rank = rank;
  lc->alpha = alpha;
}

mxl_status mxl_lora_config_add(mxl_lora_config *lc, unsigned mask, const int *layers, int n,
                               int n_model_layers) {
  if (n_model_layers < 1 || n_model_layers > MXL_MAX_LAYERS)
    return mxl_errorf(MXL_ERR_ARGUMENT, "lora: model layer count %d out of range",
                      n_model_layers);
  if (mask >> MXL_LORA_N_TARGETS)
    return mxl_errorf(MXL_ERR_ARGUMENT, "lora: target mask 0x%x has unknown bits", mask);
  if (layers)
    for (int i = 0; i < n; i++)
      if (layers[i] < 0 || layers[i] >= n_model_layers)
        return mxl_errorf(MXL_ERR_ARGUMENT, "lora: layer %d out of range (model has %d layers)",
                          layers[i], n_model_layers);
  for (int t = 0; t < MXL_LORA_N_TARGETS; t++) {
    if (!(mask & MXL_LORA_BIT(t))) continue;
    if (!layers)
      for (int l = 0; l < n_model_layers; l++) lc->layers[t][l] = 1;
    else
      for (int i = 0; i < n; i++) lc->layers[t][layers[i]] = 1;
  }
  return MXL_OK;
}

float mxl_lora_scaling(const mxl_lora_config *lc) {
  return lc->rslora ? lc->alpha / sqrtf((float)lc->rank) : lc->alpha / (float)lc->rank;
}

unsigned mxl_lora_config_targets(const mxl_lora_config *lc) {
  unsigned mask = 0;
  for (int t = 0; t < MXL_LORA_N_TARGETS; t++)
    for (int l = 0; l < MXL_MAX_LAYERS; l++)
      if (lc->layers[t][l]) mask |= MXL_LORA_BIT(t);
  return mask;
}

mxl_lora_dims mxl_lora_target_dims(const mxl_config *c, mxl_lora_target t) {
  int q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
  switch (t) {
  case MXL_LORA_Q: return (mxl_lora_dims){c->hidden, q, 1};
  case MXL_LORA_K:
  case MXL_LORA_V: return (mxl_lora_dims){c->hidden, kv, 1};
  case MXL_LORA_O: return (mxl_lora_dims){q, c->hidden, 1};
  case MXL_LORA_GATE_UP: return (mxl_lora_dims){c->hidden, 2 * c->intermediate, c->n_experts};
  case MXL_LORA_DOWN: return (mxl_lora_dims){c->intermediate, c->hidden, c->n_experts};
  default: return (mxl_lora_dims){0, 0, 0};
  }
}

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

static void set_tensor(mxl_lora_tensor *x, int layer, mxl_lora_target t, int is_b,
                       mxl_lora_dims d, int rank, size_t offset) {
  memset(x, 0, sizeof *x);
  snprintf(x->name, sizeof x->name, "layers.%d.%s.%s.lora_%c", layer,
           mxl_lora_target_is_expert(t) ? "experts" : "attn", target_names[t],
           is_b ? 'B' : 'A');
  x->layer = layer;
  x->target = t;
  x->is_b = is_b;
  x->n_experts = d.n_experts;
  x->rows = is_b ? d.out : rank;
  x->cols = is_b ? rank : d.in;
  x->offset = offset;
  x->count = (size_t)d.n_experts * (size_t)x->rows * (size_t)x->cols;
}

static mxl_status check_layout_inputs(const mxl_config *c, const mxl_lora_config *lc) {
  if (lc->rank < 1 || lc->rank > MXL_LORA_MAX_RANK)
    return mxl_errorf(MXL_ERR_ARGUMENT, "lora: rank %d out of range 1..%d", lc->rank,
                      MXL_LORA_MAX_RANK);
  if (!isfinite(lc->alpha))
    return mxl_errorf(MXL_ERR_ARGUMENT, "lora: alpha is not a finite number");
  if (c->n_layers < 1 || c->n_layers > MXL_MAX_LAYERS)
    return mxl_errorf(MXL_ERR_ARGUMENT, "lora: model layer count %d out of range",
                      c->n_layers);
  unsigned any = 0;
  for (int t = 0; t < MXL_LORA_N_TARGETS; t++) {
    for (int l = 0; l < MXL_MAX_LAYERS; l++) {
      if (!lc->layers[t][l]) continue;
      if (l >= c->n_layers)
        return mxl_errorf(MXL_ERR_ARGUMENT,
                          "lora: target %s on layer %d, but the model has %d layers",
                          target_names[t], l, c->n_layers);
      any = 1;
    }
    mxl_lora_dims d = mxl_lora_target_dims(c, (mxl_lora_target)t);
    if (d.in < 1 || d.out < 1 || d.n_experts < 1)
      return mxl_errorf(MXL_ERR_ARGUMENT, "lora: model config gives target %s no shape",
                        target_names[t]);
  }
  if (!any) return mxl_errorf(MXL_ERR_ARGUMENT, "lora: no target selected");
  return MXL_OK;
}

mxl_status mxl_lora_layout_create(const mxl_config *c, const mxl_lora_config *lc,
                                  mxl_lora_layout **out) {
  *out = NULL;
  MXL_TRY(check_layout_inputs(c, lc));
  mxl_lora_layout *lay = calloc(1, sizeof *lay);
  int n_pairs = 0;
  for (int l = 0; l < c->n_layers; l++)
    for (int t = 0; t < MXL_LORA_N_TARGETS; t++) n_pairs += lc->layers[t][l] != 0;
  if (lay) {
    lay->tensors = calloc((size_t)n_pairs * 2, sizeof *lay->tensors);
    lay->a_index = malloc((size_t)c->n_layers * MXL_LORA_N_TARGETS * sizeof *lay->a_index);
  }
  if (!lay || !lay->tensors || !lay->a_index) {
    mxl_lora_layout_destroy(lay);
    return mxl_errorf(MXL_ERR_MEMORY, "lora: out of memory for the layout");
  }
  lay->cfg = *lc;
  lay->n_layers = c->n_layers;
  lay->scaling = mxl_lora_scaling(lc);
  for (int t = 0; t < MXL_LORA_N_TARGETS; t++)
    lay->dims[t] = mxl_lora_target_dims(c, (mxl_lora_target)t);
  size_t offset = 0;
  for (int l = 0; l < c->n_layers; l++) {
    for (int t = 0; t < MXL_LORA_N_TARGETS; t++) {
      lay->a_index[l * MXL_LORA_N_TARGETS + t] = -1;
      if (!lc->layers[t][l]) continue;
      lay->a_index[l * MXL_LORA_N_TARGETS + t] = lay->n_tensors;
      for (int is_b = 0; is_b < 2; is_b++) {
        mxl_lora_tensor *x = &lay->tensors[lay->n_tensors++];
        set_tensor(x, l, (mxl_lora_target)t, is_b, lay->dims[t], lc->rank, offset);
        lay->n_params += x->count;
        offset = round_up(offset + x->count, MXL_LORA_ALIGN);
      }
    }
  }
  MXL_ASSERT(lay->n_tensors == 2 * n_pairs);
  lay->n_floats = offset;
  *out = lay;
  return MXL_OK;
}

void mxl_lora_layout_destroy(mxl_lora_layout *lay) {
  if (!lay) return;
  free(lay->tensors);
  free(lay->a_index);
  free(lay);
}

int mxl_lora_find(const mxl_lora_layout *lay, float *block, int layer, mxl_lora_target t,
                  mxl_lora_pair *out) {
  memset(out, 0, sizeof *out);
  if (layer < 0 || layer >= lay->n_layers || (unsigned)t >= MXL_LORA_N_TARGETS) return 0;
  int i = lay->a_index[layer * MXL_LORA_N_TARGETS + t];
  if (i < 0) return 0;
  const mxl_lora_tensor *a = &lay->tensors[i], *b = &lay->tensors[i + 1];
  out->A = block + a->offset;
  out->B = block + b->offset;
  out->rank = lay->cfg.rank;
  out->in = a->cols;
  out->out = b->rows;
  out->n_experts = a->n_experts;
  return 1;
}

int mxl_lora_tensor_index(const mxl_lora_layout *lay, const char *name) {
  for (int i = 0; i < lay->n_tensors; i++)
    if (!strcmp(lay->tensors[i].name, name)) return i;
  return -1;
}

void mxl_lora_fill_view(const mxl_lora_layout *lay, float *block, float overlay_scale,
                        mxl_lora_view *view) {
  view->n_layers = lay->n_layers;
  for (int l = 0; l < lay->n_layers; l++) {
    for (int t = 0; t < MXL_LORA_N_TARGETS; t++) {
      mxl_lora_pair p;
      mxl_lora_mat *m = &view->layers[l].t[t];
      memset(m, 0, sizeof *m);
      if (!mxl_lora_find(lay, block, l, (mxl_lora_target)t, &p)) continue;
      m->A = p.A;
      m->B = p.B;
      m->rank = p.rank;
      m->scale = lay->scaling * overlay_scale;
    }
  }
}

/* ---- the set ---- */

mxl_status mxl_lora_create(const mxl_config *c, const mxl_lora_config *lc, mxl_backend *be,
                           mxl_lora **out) {
  *out = NULL;
  mxl_lora *lora = calloc(1, sizeof *lora);
  if (!lora) return mxl_errorf(MXL_ERR_MEMORY, "lora: out of memory");
  mxl_status st = mxl_lora_layout_create(c, lc, &lora->layout);
  if (st != MXL_OK) {
    free(lora);
    return st;
  }
  size_t bytes = lora->layout->n_floats * sizeof(float); /* a multiple of 64 */
  lora->be = be;
  if (be) {
    lora->params = be->ops->alloc(be, bytes); /* zeroed by contract */
  } else {
    lora->params = aligned_alloc(64, bytes);
    if (lora->params) memset(lora->params, 0, bytes);
  }
  if (!lora->params) {
    mxl_lora_destroy(lora);
    return mxl_errorf(MXL_ERR_MEMORY, "lora: cannot allocate %zu bytes of parameters", bytes);
  }
  *out = lora;
  return MXL_OK;
}

void mxl_lora_destroy(mxl_lora *lora) {
  if (!lora) return;
  if (lora->params) {
    if (lora->be) lora->be->ops->free(lora->be, lora->params);
    else free(lora->params);
  }
  mxl_lora_layout_destroy(lora->layout);
  free(lora);
}

void mxl_lora_tensor_read(const mxl_lora *lora, int i, float *dst) {
  const mxl_lora_tensor *x = &lora->layout->tensors[i];
  size_t bytes = x->count * sizeof(float);
  if (lora->be) lora->be->ops->download(lora->be, dst, lora->params + x->offset, bytes);
  else memcpy(dst, lora->params + x->offset, bytes);
}

void mxl_lora_tensor_write(mxl_lora *lora, int i, const float *src) {
  const mxl_lora_tensor *x = &lora->layout->tensors[i];
  size_t bytes = x->count * sizeof(float);
  if (lora->be) lora->be->ops->upload(lora->be, lora->params + x->offset, src, bytes);
  else memcpy(lora->params + x->offset, src, bytes);
}

/* ---- initialisation ---- */

uint64_t mxl_lora_stream_seed(uint64_t seed, int layer, mxl_lora_target t) {
  /* Mix (seed, layer, target) through one SplitMix64 step so that nearby
   * seeds and neighbouring tensors get unrelated streams. */
  uint64_t s = seed ^ ((uint64_t)(uint32_t)layer << 32 | (uint64_t)(t + 1) << 8);
  return mxl_splitmix64(&s);
}

float mxl_lora_init_bound(int in) {
  /* kaiming_uniform_(a=√5): gain = √(2/(1+a²)) = √(1/3), std = gain/√fan_in,
   * bound = √3·std = 1/√fan_in, fan_in = the weight's column count. */
  return 1.0f / sqrtf((float)in);
}

mxl_status mxl_lora_init_peft(mxl_lora *lora, uint64_t seed) {
  const mxl_lora_layout *lay = lora->layout;
  size_t max_count = 0;
  for (int i = 0; i < lay->n_tensors; i++)
    if (lay->tensors[i].count > max_count) max_count = lay->tensors[i].count;
  float *tmp = malloc(max_count * sizeof *tmp);
  if (!tmp) return mxl_errorf(MXL_ERR_MEMORY, "lora: out of memory for initialisation");
  for (int i = 0; i < lay->n_tensors; i++) {
    const mxl_lora_tensor *x = &lay->tensors[i];
    if (x->is_b) {
      memset(tmp, 0, x->count * sizeof *tmp);
    } else {
      uint64_t state = mxl_lora_stream_seed(seed, x->layer, x->target);
      float bound = mxl_lora_init_bound(x->cols);
      for (size_t j = 0; j < x->count; j++)
        tmp[j] = bound * (2.0f * mxl_splitmix_uniform(&state) - 1.0f);
    }
    mxl_lora_tensor_write(lora, i, tmp);
  }
  free(tmp);
  return MXL_OK;
}

/* ---- PEFT re-indexing ---- */

void mxl_lora_b_to_peft(float *dst, const float *src, int n_experts, int out, int rank) {
  /* dst [out, R·E]: dst[o][k·E + e] = src[e][o][k] */
  for (int e = 0; e < n_experts; e++)
    for (int o = 0; o < out; o++)
      for (int k = 0; k < rank; k++)
        dst[(size_t)o * rank * n_experts + (size_t)k * n_experts + e] =
            src[((size_t)e * out + o) * rank + k];
}

void mxl_lora_b_from_peft(float *dst, const float *src, int n_experts, int out, int rank) {
  for (int e = 0; e < n_experts; e++)
    for (int o = 0; o < out; o++)
      for (int k = 0; k < rank; k++)
        dst[((size_t)e * out + o) * rank + k] =
            src[(size_t)o * rank * n_experts + (size_t)k * n_experts + e];
}
