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
  c->slide_from = 0;
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

/* ---------------------------------------------------------------- resuming */

/* Rows of the window before position r (all of them near the start). */
static int window_rows(const mxl_config *cfg, int r) {
  return r < cfg->sliding_window ? r : cfg->sliding_window;
}

void mxl_kv_ring_transfer(mxl_engine *e, float *ring, int cap, int kv_dim, int p0, int n,
                          float *rows, mxl_ring_dir dir) {
  const size_t row_bytes = (size_t)kv_dim * sizeof(float);
  for (int done = 0; done < n;) {
    int slot = (p0 + done) % cap;
    int run = cap - slot < n - done ? cap - slot : n - done;
    float *r = ring + (size_t)slot * kv_dim, *c = rows + (size_t)done * kv_dim;
    switch (dir) {
    case MXL_RING_TO_ROWS: e->ops->copy(e->be, c, r, run * row_bytes); break;
    case MXL_ROWS_TO_RING: e->ops->copy(e->be, r, c, run * row_bytes); break;
    case MXL_RING_TO_HOST: e->ops->download(e->be, c, r, run * row_bytes); break;
    case MXL_HOST_TO_RING: e->ops->upload(e->be, r, c, run * row_bytes); break;
    }
    done += run;
  }
}

size_t mxl_kv_tail_bytes(const mxl_config *cfg, int max_context) {
  return mxl_kv_tail_rows_bytes(cfg, window_rows(cfg, max_context > 1 ? max_context - 1 : 1));
}

size_t mxl_kv_tail_rows_bytes(const mxl_config *cfg, int rows) {
  size_t layer = 2 * (size_t)rows * cfg->n_kv_heads * cfg->head_dim * sizeof(float);
  size_t bytes = 0;
  for (int l = 0; l < cfg->n_layers; l++)
    if (cfg->layer_sliding[l]) bytes += layer;
  return bytes;
}

void mxl_kv_tail_destroy(mxl_engine *e, mxl_kv_tail *t) {
  if (!t) return;
  for (int l = 0; l < t->n_layers; l++) {
    if (t->k) e->ops->free(e->be, t->k[l]);
    if (t->v) e->ops->free(e->be, t->v[l]);
  }
  free(t->k);
  free(t->v);
  free(t);
}

/* A tail of `rows` rows per sliding layer ending at pos (not yet filled),
 * with room for `cap` rows (at least rows). */
static mxl_status tail_alloc(mxl_engine *e, int n_layers, int kv_dim, int pos, int rows, int cap,
                             mxl_kv_tail **out) {
  *out = NULL;
  if (cap < rows) cap = rows;
  mxl_kv_tail *t = calloc(1, sizeof *t);
  if (!t) return mxl_errorf(MXL_ERR_MEMORY, "KV tail: out of memory");
  t->pos = pos;
  t->rows = rows;
  t->cap = cap;
  t->n_layers = n_layers;
  t->kv_dim = kv_dim;
  t->k = calloc(n_layers, sizeof *t->k);
  t->v = calloc(n_layers, sizeof *t->v);
  int ok = t->k && t->v;
  const size_t bytes = (size_t)(cap ? cap : 1) * kv_dim * sizeof(float);
  for (int l = 0; ok && l < n_layers; l++) {
    if (!e->cfg->layer_sliding[l]) continue;
    t->k[l] = e->ops->alloc(e->be, bytes);
    t->v[l] = e->ops->alloc(e->be, bytes);
    ok = t->k[l] && t->v[l];
  }
  if (!ok) {
    mxl_kv_tail_destroy(e, t);
    return mxl_errorf(MXL_ERR_MEMORY, "KV tail: cannot allocate %d rows", cap);
  }
  *out = t;
  return MXL_OK;
}

/* MXL_OK when c's rings hold positions [p0, p1). */
static mxl_status rings_hold(const mxl_kv_cache *c, int p0, int p1) {
  if (p0 >= 0 && p0 <= p1 && p1 <= c->n_past && p0 >= mxl_kv_cache_slide_oldest(c)) return MXL_OK;
  return mxl_errorf(MXL_ERR_ARGUMENT,
                    "KV tail: the rings do not hold positions %d..%d (%d cached, from %d)", p0,
                    p1 - 1, c->n_past, mxl_kv_cache_slide_oldest(c));
}

/* Copies c's sliding rows [p0, p1) (rings_hold) into t at row
 * p0 - (t->pos - t->rows). */
static void tail_fill(mxl_engine *e, const mxl_kv_cache *c, mxl_kv_tail *t, int p0, int p1) {
  const size_t at = (size_t)(p0 - (t->pos - t->rows)) * c->kv_dim;
  for (int l = 0; l < c->n_layers; l++) {
    if (!e->cfg->layer_sliding[l]) continue;
    mxl_kv_ring_transfer(e, c->k[l], c->cap_slide, c->kv_dim, p0, p1 - p0, t->k[l] + at,
                         MXL_RING_TO_ROWS);
    mxl_kv_ring_transfer(e, c->v[l], c->cap_slide, c->kv_dim, p0, p1 - p0, t->v[l] + at,
                         MXL_RING_TO_ROWS);
  }
}

mxl_status mxl_kv_tail_take(mxl_engine *e, const mxl_kv_cache *c, int pos, int rows, int cap,
                            mxl_kv_tail **out) {
  *out = NULL;
  if (rows < 0) return mxl_errorf(MXL_ERR_ARGUMENT, "KV tail: %d rows", rows);
  MXL_TRY(rings_hold(c, pos - rows, pos));
  MXL_TRY(tail_alloc(e, c->n_layers, c->kv_dim, pos, rows, cap, out));
  tail_fill(e, c, *out, pos - rows, pos);
  return MXL_OK;
}

mxl_status mxl_kv_tail_grow(mxl_engine *e, const mxl_kv_cache *c, mxl_kv_tail *t, int pos) {
  const int from = t->pos - t->rows;
  if (pos < t->pos || pos - from > t->cap)
    return mxl_errorf(MXL_ERR_ARGUMENT, "KV tail: position %d outside %d..%d", pos, t->pos,
                      from + t->cap);
  MXL_TRY(rings_hold(c, t->pos, pos));
  tail_fill(e, c, t, t->pos, pos);
  t->rows += pos - t->pos;
  t->pos = pos;
  return MXL_OK;
}

mxl_status mxl_kv_tail_copy(mxl_engine *e, const mxl_kv_tail *src, int pos, int cap,
                            mxl_kv_tail **out) {
  *out = NULL;
  const int from = src->pos - src->rows;
  if (pos < from || pos > src->pos)
    return mxl_errorf(MXL_ERR_ARGUMENT, "KV tail: position %d outside %d..%d", pos, from,
                      src->pos);
  MXL_TRY(tail_alloc(e, src->n_layers, src->kv_dim, pos, pos - from, cap, out));
  const size_t bytes = (size_t)(pos - from) * src->kv_dim * sizeof(float);
  for (int l = 0; l < src->n_layers; l++) {
    if (!e->cfg->layer_sliding[l]) continue;
    e->ops->copy(e->be, (*out)->k[l], src->k[l], bytes);
    e->ops->copy(e->be, (*out)->v[l], src->v[l], bytes);
  }
  return MXL_OK;
}

/* 1 when t holds the window before r. */
static int tail_serves(const mxl_config *cfg, const mxl_kv_tail *t, int r) {
  return t && r <= t->pos && r - window_rows(cfg, r) >= t->pos - t->rows;
}

static int ring_serves(const mxl_config *cfg, const mxl_kv_cache *c, int r) {
  return r - window_rows(cfg, r) >= mxl_kv_cache_slide_oldest(c);
}

int mxl_kv_cache_resumable(const mxl_config *cfg, const mxl_kv_cache *c, const mxl_kv_tail *t,
                           int r) {
  if (r < 0 || r > c->n_past) return 0;
  return ring_serves(cfg, c, r) || tail_serves(cfg, t, r);
}

mxl_status mxl_kv_cache_resume(mxl_engine *e, mxl_kv_cache *dst, const mxl_kv_cache *src,
                               const mxl_kv_tail *t, int r) {
  const mxl_config *cfg = e->cfg;
  if (dst->n_past != 0 || r >= dst->max_context || dst->kv_dim != src->kv_dim ||
      !mxl_kv_cache_resumable(cfg, src, t, r))
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "KV cache: cannot resume at position %d (%d cached there, %d here, "
                      "room for %d)",
                      r, src->n_past, dst->n_past, dst->max_context);
  const int rows = window_rows(cfg, r), p0 = r - rows;
  const int from_tail = !ring_serves(cfg, src, r);
  const float *const *tk = from_tail ? (const float *const *)t->k : NULL;
  const float *const *tv = from_tail ? (const float *const *)t->v : NULL;
  const size_t tail_at = from_tail ? (size_t)(p0 - (t->pos - t->rows)) * dst->kv_dim : 0;
  const size_t row_bytes = (size_t)dst->kv_dim * sizeof(float);
  for (int l = 0; l < dst->n_layers; l++) {
    if (!cfg->layer_sliding[l]) {
      e->ops->copy(e->be, dst->k[l], src->k[l], (size_t)r * row_bytes);
      e->ops->copy(e->be, dst->v[l], src->v[l], (size_t)r * row_bytes);
    } else if (from_tail) {
      mxl_kv_ring_transfer(e, dst->k[l], dst->cap_slide, dst->kv_dim, p0, rows,
                           (float *)tk[l] + tail_at, MXL_ROWS_TO_RING);
      mxl_kv_ring_transfer(e, dst->v[l], dst->cap_slide, dst->kv_dim, p0, rows,
                           (float *)tv[l] + tail_at, MXL_ROWS_TO_RING);
    } else {
      /* ring to ring: runs end where either ring wraps */
      for (int p = p0; p < r;) {
        int ss = p % src->cap_slide, ds = p % dst->cap_slide, run = r - p;
        if (run > src->cap_slide - ss) run = src->cap_slide - ss;
        if (run > dst->cap_slide - ds) run = dst->cap_slide - ds;
        size_t so = (size_t)ss * dst->kv_dim, dof = (size_t)ds * dst->kv_dim;
        e->ops->copy(e->be, dst->k[l] + dof, src->k[l] + so, run * row_bytes);
        e->ops->copy(e->be, dst->v[l] + dof, src->v[l] + so, run * row_bytes);
        p += run;
      }
    }
  }
  mxl_kv_cache_claim_prefix(e, dst, r);
  return MXL_OK;
}

int mxl_kv_cache_window_rows(const mxl_config *cfg, int r) { return window_rows(cfg, r); }

int mxl_kv_cache_slide_oldest(const mxl_kv_cache *c) {
  const int in_ring = c->n_past < c->cap_slide ? c->n_past : c->cap_slide;
  return c->n_past - in_ring > c->slide_from ? c->n_past - in_ring : c->slide_from;
}

void mxl_kv_cache_claim_prefix(mxl_engine *e, mxl_kv_cache *c, int r) {
  const int p0 = r - window_rows(e->cfg, r);
  for (int p = 0; p < r; p++) c->host_pos_full[p] = p, c->host_seg_full[p] = 0;
  for (int p = p0; p < r; p++) {
    int slot = p % c->cap_slide;
    c->host_pos_slide[slot] = p;
    c->host_seg_slide[slot] = 0;
  }
  e->ops->upload(e->be, c->pos_full, c->host_pos_full, (size_t)r * sizeof(int32_t));
  e->ops->upload(e->be, c->seg_full, c->host_seg_full, (size_t)r * sizeof(int32_t));
  e->ops->upload(e->be, c->pos_slide, c->host_pos_slide, c->cap_slide * sizeof(int32_t));
  e->ops->upload(e->be, c->seg_slide, c->host_seg_slide, c->cap_slide * sizeof(int32_t));
  c->n_past = r;
  c->slide_from = p0;
}
