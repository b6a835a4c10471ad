/* Reading the safetensors layouts (HF root and original/) into the weights
 * view: every tensor of the catalogue must be present with its dtype and
 * shape, nothing else may be there, and the view points into the mapping. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "kernels/mxfp4.h"
#include "model/checkpoint.h"

static void shape_text(const int64_t *shape, int ndim, char *buf, size_t cap) {
  size_t used = (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < ndim && used < cap; i++)
    used += (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if (used < cap) snprintf(buf + used, cap - used, "]");
}

static const char *tensor_file(const mxl_safetensors *st, const mxl_st_tensor *t) {
  return t->file >= 0 && t->file < st->n_files ? st->files[t->file].path : "?";
}

/* A hint for the commonest wrong checkpoint: experts already dequantized. */
static const char *missing_hint(const mxl_safetensors *st, const mxl_tensor_desc *d) {
  if (d->kind != MXL_T_GU_BLOCKS && d->kind != MXL_T_DOWN_BLOCKS) return "";
  char plain[MXL_TENSOR_NAME_MAX];
  snprintf(plain, sizeof plain, "%.*s", (int)(strlen(d->name) - strlen("_blocks")), d->name);
  if (mxl_safetensors_find(st, plain))
    return " (the file has the dequantized bf16 tensor instead; mxlora reads the published "
           "MXFP4 checkpoint)";
  return "";
}

/* When one shard of a sharded checkpoint is opened alone. */
static const char *partial_hint(const mxl_safetensors *st, int expected) {
  if (st->n_files == 1 && st->n_tensors < expected)
    return " (this file holds only part of the model; open its folder or its "
           "model.safetensors.index.json)";
  return "";
}

static mxl_status check_tensor(const mxl_safetensors *st, const char *weights,
                               const mxl_tensor_desc *d, int expected,
                               const mxl_st_tensor **out) {
  const mxl_st_tensor *t = mxl_safetensors_find(st, d->name);
  if (!t)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: tensor %s is missing%s%s", weights, d->name,
                      missing_hint(st, d), partial_hint(st, expected));
  if (t->dtype != d->dtype)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: tensor %s has dtype %s, expected %s",
                      tensor_file(st, t), d->name, mxl_dtype_name(t->dtype),
                      mxl_dtype_name(d->dtype));
  int same = t->ndim == d->ndim;
  for (int i = 0; same && i < d->ndim; i++) same = t->shape[i] == d->shape[i];
  if (!same) {
    char got[96], want[96];
    shape_text(t->shape, t->ndim, got, sizeof got);
    shape_text(d->shape, d->ndim, want, sizeof want);
    return mxl_errorf(MXL_ERR_FORMAT, "%s: tensor %s has shape %s, expected %s (from the config)",
                      tensor_file(st, t), d->name, got, want);
  }
  if (d->dtype == MXL_DT_BF16 && ((uintptr_t)t->data & 1u))
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: tensor %s starts at an odd byte offset",
                      tensor_file(st, t), d->name);
  *out = t;
  return MXL_OK;
}

/* Points the view at one tensor. Dimensions are set by mxl_model_set_dims. */
static void assign(mxl_model *m, const mxl_tensor_desc *d, const uint8_t *data) {
  mxl_weights *w = &m->w;
  const mxl_config *c = &m->config;
  const size_t H = (size_t)c->hidden, I = (size_t)c->intermediate;
  const size_t q = (size_t)c->n_heads * c->head_dim, kv = (size_t)c->n_kv_heads * c->head_dim;
  const uint16_t *bf = (const uint16_t *)(const void *)data;
  if (d->kind == MXL_T_EMBED) w->embed.w = bf;
  if (d->kind == MXL_T_FINAL_NORM) w->final_norm = bf;
  if (d->kind == MXL_T_UNEMBED) w->unembed.w = bf;
  if (d->layer < 0) return;
  mxl_layer_weights *lw = &w->layers[d->layer];
  switch (d->kind) {
  case MXL_T_ATTN_NORM: lw->attn_norm = bf; break;
  case MXL_T_Q_W: lw->q.w = bf; break;
  case MXL_T_Q_B: lw->q.bias = bf; break;
  case MXL_T_K_W: lw->k.w = bf; break;
  case MXL_T_K_B: lw->k.bias = bf; break;
  case MXL_T_V_W: lw->v.w = bf; break;
  case MXL_T_V_B: lw->v.bias = bf; break;
  case MXL_T_QKV_W: lw->q.w = bf, lw->k.w = bf + q * H, lw->v.w = bf + (q + kv) * H; break;
  case MXL_T_QKV_B: lw->q.bias = bf, lw->k.bias = bf + q, lw->v.bias = bf + q + kv; break;
  case MXL_T_SINKS: lw->sinks = bf; break;
  case MXL_T_O_W: lw->o.w = bf; break;
  case MXL_T_O_B: lw->o.bias = bf; break;
  case MXL_T_MLP_NORM: lw->mlp_norm = bf; break;
  case MXL_T_ROUTER_W: lw->router.w = bf; break;
  case MXL_T_ROUTER_B: lw->router.bias = bf; break;
  case MXL_T_GU_BLOCKS: lw->gate_up.blocks = data, lw->gate_up.blocks_stride = 2 * I * H / 2; break;
  case MXL_T_GU_SCALES: lw->gate_up.scales = data, lw->gate_up.scales_stride = 2 * I * H / 32; break;
  case MXL_T_GU_BIAS: lw->gate_up.bias = bf, lw->gate_up.bias_stride = 2 * I; break;
  case MXL_T_DOWN_BLOCKS: lw->down.blocks = data, lw->down.blocks_stride = H * I / 2; break;
  case MXL_T_DOWN_SCALES: lw->down.scales = data, lw->down.scales_stride = H * I / 32; break;
  case MXL_T_DOWN_BIAS: lw->down.bias = bf, lw->down.bias_stride = H; break;
  default: break;
  }
}

static int is_hf_name(const char *name) {
  return strncmp(name, "model.", 6) == 0 || strcmp(name, "lm_head.weight") == 0;
}

/* Nothing but the catalogue's tensors may be in the files. */
static mxl_status check_no_extra(const mxl_safetensors *st, const mxl_model *m, mxl_layout layout,
                                 int expected) {
  for (int i = 0; i < st->n_tensors; i++) {
    const mxl_st_tensor *t = &st->tensors[i];
    mxl_tensor_kind kind;
    int layer;
    int ours = mxl_tensor_name_parse(t->name, &kind, &layer) && layer < m->config.n_layers &&
               is_hf_name(t->name) == (layout == MXL_LAYOUT_HF);
    if (!ours)
      return mxl_errorf(MXL_ERR_FORMAT,
                        "%s: unexpected tensor %s (not part of the %s layout of this config, "
                        "%d layers)",
                        tensor_file(st, t), t->name,
                        layout == MXL_LAYOUT_HF ? "Hugging Face" : "original/",
                        m->config.n_layers);
  }
  if (st->n_tensors != expected)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %d tensors, expected %d", st->files[0].path,
                      st->n_tensors, expected);
  return MXL_OK;
}

void mxl_model_set_dims(mxl_model *m) {
  const mxl_config *c = &m->config;
  mxl_weights *w = &m->w;
  const int64_t H = c->hidden, I = c->intermediate;
  const int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
  w->embed.rows = w->unembed.rows = w->vocab_rows;
  w->embed.cols = w->unembed.cols = H;
  for (int l = 0; l < c->n_layers; l++) {
    mxl_layer_weights *lw = &w->layers[l];
    lw->q.rows = q, lw->q.cols = H;
    lw->k.rows = kv, lw->k.cols = H;
    lw->v.rows = kv, lw->v.cols = H;
    lw->o.rows = H, lw->o.cols = q;
    lw->router.rows = c->n_experts, lw->router.cols = H;
    lw->gate_up.rows = 2 * I, lw->gate_up.cols = H;
    lw->down.rows = H, lw->down.cols = I;
    lw->gate_up.n_experts = lw->down.n_experts = c->n_experts;
  }
}

static mxl_status read_safetensors(mxl_model *m, const char *weights, mxl_layout layout) {
  MXL_TRY(mxl_safetensors_open(weights, &m->st));
  const int n = mxl_checkpoint_tensors(&m->config, layout, NULL);
  mxl_tensor_desc *descs = calloc((size_t)n, sizeof *descs);
  m->w.layers = calloc((size_t)m->config.n_layers, sizeof *m->w.layers);
  if (!descs || !m->w.layers) {
    free(descs);
    return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", weights);
  }
  mxl_checkpoint_tensors(&m->config, layout, descs);
  mxl_status st = MXL_OK;
  for (int i = 0; i < n && st == MXL_OK; i++) {
    const mxl_st_tensor *t = NULL;
    st = check_tensor(m->st, weights, &descs[i], n, &t);
    if (st == MXL_OK) assign(m, &descs[i], t->data);
  }
  if (st == MXL_OK) st = check_no_extra(m->st, m, layout, n);
  free(descs);
  MXL_TRY(st);
  m->layout = layout;
  m->w.vocab_rows = m->config.vocab_size;
  m->w.qk_interleaved = 0;
  m->w.attn_scale = 1.0f / sqrtf((float)m->config.head_dim);
  for (int l = 0; l < m->config.n_layers; l++)
    m->w.layers[l].gate_up.scale_bias = m->w.layers[l].down.scale_bias = MXL_MXFP4_BIAS;
  mxl_model_set_dims(m);
  return MXL_OK;
}

mxl_status mxl_checkpoint_read_hf(mxl_model *m, const char *weights) {
  return read_safetensors(m, weights, MXL_LAYOUT_HF);
}

mxl_status mxl_checkpoint_read_original_tensors(mxl_model *m, const char *weights) {
  return read_safetensors(m, weights, MXL_LAYOUT_ORIGINAL);
}
