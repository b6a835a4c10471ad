#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "model/forward.h"

static int cache_capacity(const mxl_kv_cache *c, const mxl_config *cfg, int layer) {
  return cfg->layer_sliding[layer] ? c->cap_slide : c->cap_full;
}

static int sliding_capacity(const mxl_config *cfg, int max_context, int max_chunk) {
  long slide = (long)cfg->sliding_window + max_chunk - 1;
  return slide < max_context ? (int)slide : max_context;
}

size_t mxl_kv_cache_bytes(const mxl_config *cfg, int max_context, int max_chunk) {
  const uint64_t row = (uint64_t)cfg->n_kv_heads * cfg->head_dim * sizeof(float);
  const int slide = sliding_capacity(cfg, max_context, max_chunk);
  uint64_t bytes = 2 * sizeof(int32_t) * ((uint64_t)max_context + slide);
  for (int l = 0; l < cfg->n_layers; l++)
    bytes += 2 * row * (uint64_t)(cfg->layer_sliding[l] ? slide : max_context);
  return bytes;
}

mxl_status mxl_kv_cache_create(mxl_engine *e, int max_context, int max_chunk,
                               mxl_kv_cache **out) {
  *out = NULL;
  const mxl_config *cfg = e->cfg;
  if (max_context <= 0 || max_chunk <= 0)
    return mxl_errorf(MXL_ERR_ARGUMENT, "KV cache: context %d and chunk %d must be positive",
                      max_context, max_chunk);
  if (max_context > cfg->max_context)
    return mxl_errorf(MXL_ERR_ARGUMENT, "KV cache: context %d exceeds the model's %d",
                      max_context, cfg->max_context);
  mxl_kv_cache *c = calloc(1, sizeof *c);
  if (!c) return mxl_errorf(MXL_ERR_MEMORY, "KV cache: out of memory");
  c->n_layers = cfg->n_layers;
  c->kv_dim = cfg->n_kv_heads * cfg->head_dim;
  c->max_context = max_context;
  c->max_chunk = max_chunk;
  c->cap_full = max_context;
  c->cap_slide = sliding_capacity(cfg, max_context, max_chunk);
  c->k = calloc(cfg->n_layers, sizeof *c->k);
  c->v = calloc(cfg->n_layers, sizeof *c->v);
  c->host_pos_full = malloc(c->cap_full * sizeof(int32_t));
  c->host_seg_full = malloc(c->cap_full * sizeof(int32_t));
  c->host_pos_slide = malloc(c->cap_slide * sizeof(int32_t));
  c->host_seg_slide = malloc(c->cap_slide * sizeof(int32_t));
  int ok = c->k && c->v && c->host_pos_full && c->host_seg_full && c->host_pos_slide &&
           c->host_seg_slide;
  for (int l = 0; ok && l < cfg->n_layers; l++) {
    size_t bytes = (size_t)cache_capacity(c, cfg, l) * c->kv_dim * sizeof(float);
    c->k[l] = e->ops->alloc(e->be, bytes);
    c->v[l] = e->ops->alloc(e->be, bytes);
    ok = c->k[l] && c->v[l];
  }
  if (ok) {
    c->pos_full = e->ops->alloc(e->be, c->cap_full * sizeof(int32_t));
    c->seg_full = e->ops->alloc(e->be, c->cap_full * sizeof(int32_t));
    c->pos_slide = e->ops->alloc(e->be, c->cap_slide * sizeof(int32_t));
    c->seg_slide = e->ops->alloc(e->be, c->cap_slide * sizeof(int32_t));
    ok = c->pos_full && c->seg_full && c->pos_slide && c->seg_slide;
  }
  if (!ok) {
    mxl_kv_cache_destroy(e, c);
    return mxl_errorf(MXL_ERR_MEMORY, "KV cache: cannot allocate %d positions", max_context);
  }
  mxl_kv_cache_reset(e, c);
  *out = c;
  return MXL_OK;
}

void mxl_kv_cache_reset(mxl_engine *e, mxl_kv_cache *c) {
  c->n_past = 0;
  for (int i = 0; i < c->cap_full; i++) c->host_pos_full[i] = 0, c->host_seg_full[i] = -1;
  for (int i = 0; i < c->cap_slide; i++) c->host_pos_slide[i] = 0, c->host_seg_slide[i] = -1;
  e->ops->upload(e->be, c->pos_full, c->host_pos_full, c->cap_full * sizeof(int32_t));
  e->ops->upload(e->be, c->seg_full, c->host_seg_full, c->cap_full * sizeof(int32_t));
  e->ops->upload(e->be, c->pos_slide, c->host_pos_slide, c->cap_slide * sizeof(int32_t));
  e->ops->upload(e->be, c->seg_slide, c->host_seg_slide, c->cap_slide * sizeof(int32_t));
}

void mxl_kv_cache_destroy(mxl_engine *e, mxl_kv_cache *c) {
  if (!c) return;
  for (int l = 0; l < c->n_layers; l++) {
    if (c->k) e->ops->free(e->be, c->k[l]);
    if (c->v) e->ops->free(e->be, c->v[l]);
  }
  e->ops->free(e->be, c->pos_full);
  e->ops->free(e->be, c->seg_full);
  e->ops->free(e->be, c->pos_slide);
  e->ops->free(e->be, c->seg_slide);
  free(c->k);
  free(c->v);
  free(c->host_pos_full);
  free(c->host_seg_full);
  free(c->host_pos_slide);
  free(c->host_seg_slide);
  free(c);
}
