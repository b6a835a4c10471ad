/* Deterministic weights for tiny checkpoints (see tiny.h).
 *
 * Initialisation keeps activations O(1) through every layer: uniform
 * values with a chosen standard deviation per matrix, 1/sqrt(fan-in) for
 * projections into the block, and an extra 1/sqrt(2L) on the two matrices
 * that write into the residual stream (attention out, expert down), so the
 * residual grows by O(1) over the whole stack; norms near 1, sinks near 1,
 * small biases. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/bf16.h"
#include "core/rng.h"
#include "core/status.h"
#include "repo/tiny.h"

/* One independent stream per (seed, tensor, layer, purpose). */
static uint64_t stream_key(const mxl_tiny_gen *g, int kind, int layer, int purpose) {
  uint64_t k = mxl_splitmix64_hash(g->seed);
  k = mxl_splitmix64_hash(k ^ (uint64_t)(kind + 1) * 0x100000001b3ull);
  k = mxl_splitmix64_hash(k ^ (uint64_t)(layer + 2) * 0xc2b2ae3d27d4eb4full);
  return mxl_splitmix64_hash(k ^ (uint64_t)purpose);
}

/* Uniform in [-sqrt(3), sqrt(3)): unit variance. */
static float unit_uniform(uint64_t h) {
  float u = (float)(h >> 40) * (1.0f / 16777216.0f);
  return (2.0f * u - 1.0f) * 1.7320508f;
}

typedef struct init {
  float mean, std;
} init;

static init init_for(const mxl_config *c, mxl_tensor_kind k) {
  const float H = (float)c->hidden, I = (float)c->intermediate;
  const float q = (float)c->n_heads * (float)c->head_dim;
  const float residual = 1.0f / sqrtf(2.0f * (float)c->n_layers);
  switch (k) {
  case MXL_T_EMBED: return (init){0.0f, 1.0f};
  case MXL_T_ATTN_NORM:
  case MXL_T_MLP_NORM:
  case MXL_T_FINAL_NORM: return (init){1.0f, 0.05f};
  case MXL_T_Q_W:
  case MXL_T_K_W:
  case MXL_T_V_W:
  case MXL_T_ROUTER_W:
  case MXL_T_GU_BLOCKS:
  case MXL_T_UNEMBED: return (init){0.0f, 1.0f / sqrtf(H)};
  case MXL_T_O_W: return (init){0.0f, residual / sqrtf(q)};
  case MXL_T_DOWN_BLOCKS: return (init){0.0f, residual / sqrtf(I)};
  case MXL_T_SINKS: return (init){1.0f, 0.5f};
  case MXL_T_ROUTER_B: return (init){0.0f, 0.1f};
  default: return (init){0.0f, 0.02f}; /* biases */
  }
}

/* Maps an element of a fused qkv tensor to its q, k or v tensor. */
static void unfuse(const mxl_config *c, mxl_tensor_kind *kind, int64_t *idx) {
  const int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
  const int64_t row_len = *kind == MXL_T_QKV_W ? c->hidden : 1;
  int64_t row = *idx / row_len;
  int w = *kind == MXL_T_QKV_W;
  if (row < q) {
    *kind = w ? MXL_T_Q_W : MXL_T_Q_B;
  } else if (row < q + kv) {
    *kind = w ? MXL_T_K_W : MXL_T_K_B;
    *idx -= q * row_len;
  } else {
    *kind = w ? MXL_T_V_W : MXL_T_V_B;
    *idx -= (q + kv) * row_len;
  }
}

static mxl_status fill_bf16(void *self, mxl_tensor_kind kind, int layer, int64_t start,
                            int64_t count, uint16_t *out) {
  mxl_tiny_gen *g = self;
#pragma omp parallel for schedule(static) if (count > 65536)
  for (int64_t i = 0; i < count; i++) {
    mxl_tensor_kind k = kind;
    int64_t idx = start + i;
    if (k == MXL_T_QKV_W || k == MXL_T_QKV_B) unfuse(g->c, &k, &idx);
    init in = init_for(g->c, k);
    uint64_t h = mxl_splitmix64_hash(stream_key(g, (int)k, layer, 0) + (uint64_t)idx);
    out[i] = mxl_f32_to_bf16(in.mean + in.std * unit_uniform(h));
  }
  return MXL_OK;
}

/* ------------------------------------------------------------ MXFP4 */

typedef struct mx_shape {
  int64_t cols;   /* input features of one row */
  int64_t groups; /* cols / 32 */
  int blocks;     /* 1: the blocks tensor, 0: the scales tensor */
  mxl_tensor_kind weight; /* the blocks kind, which names the weight's stream */
} mx_shape;

static mx_shape mx_shape_of(const mxl_config *c, mxl_tensor_kind kind) {
  mx_shape s;
  int gate_up = kind == MXL_T_GU_BLOCKS || kind == MXL_T_GU_SCALES;
  s.cols = gate_up ? c->hidden : c->intermediate;
  s.groups = s.cols / MXL_MXFP4_BLOCK;
  s.blocks = kind == MXL_T_GU_BLOCKS || kind == MXL_T_DOWN_BLOCKS;
  s.weight = gate_up ? MXL_T_GU_BLOCKS : MXL_T_DOWN_BLOCKS;
  return s;
}

/* Codec mode: row `row` (flattened over [E, rows]) drawn as floats into
 * x[cols] and encoded; stats gathered if asked. */
static void encode_row(const mxl_tiny_gen *g, const mx_shape *s, int layer, int64_t row,
                       float *x, uint8_t *blocks, uint8_t *scales,
                       mxl_mxfp4_error_stats *stats) {
  init in = init_for(g->c, s->weight);
  uint64_t key = stream_key(g, (int)s->weight, layer, 1);
  for (int64_t j = 0; j < s->cols; j++)
    x[j] = in.std * unit_uniform(mxl_splitmix64_hash(key + (uint64_t)(row * s->cols + j)));
  mxl_mxfp4_encode_rows(x, 1, s->cols, blocks, scales, stats);
}

/* The E8M0 byte that gives uniformly drawn E2M1 codes (RMS 2.93) the
 * wanted standard deviation. */
static int direct_scale_base(const mxl_tiny_gen *g, const mx_shape *s) {
  float std = init_for(g->c, s->weight).std;
  return MXL_MXFP4_BIAS + (int)lrintf(log2f(std / 2.9261749f));
}

static void fill_direct(const mxl_tiny_gen *g, const mx_shape *s, int layer, int64_t start,
                        int64_t count, uint8_t *out) {
  if (s->blocks) {
    /* Random codes, 8 bytes per hash. */
    uint64_t key = stream_key(g, (int)s->weight, layer, 2);
    int64_t w0 = start >> 3, w1 = (start + count - 1) >> 3;
#pragma omp parallel for schedule(static) if (w1 - w0 > 65536)
    for (int64_t w = w0; w <= w1; w++) {
      uint64_t h = mxl_splitmix64_hash(key + (uint64_t)w);
      for (int b = 0; b < 8; b++) {
        int64_t pos = w * 8 + b - start;
        if (pos >= 0 && pos < count) out[pos] = (uint8_t)(h >> (8 * b));
      }
    }
    return;
  }
  uint64_t key = stream_key(g, (int)s->weight, layer, 3);
  int base = direct_scale_base(g, s);
  static const int jitter[4] = {-1, 0, 0, 1};
#pragma omp parallel for schedule(static) if (count > 65536)
  for (int64_t i = 0; i < count; i++)
    out[i] = (uint8_t)(base + jitter[mxl_splitmix64_hash(key + (uint64_t)(start + i)) & 3]);
}

/* Row by row, for tensors too large to keep (bounded memory). */
static mxl_status fill_rows(mxl_tiny_gen *g, const mx_shape *s, int layer, int64_t start,
                            int64_t count, uint8_t *out) {
  const int64_t row_bytes = s->blocks ? s->groups * MXL_MXFP4_BLOCK_BYTES : s->groups;
  const int64_t r0 = start / row_bytes, r1 = (start + count - 1) / row_bytes;
  const int stats_on = g->collect_stats && s->blocks;
  /* Per-thread scratch: the row's floats, blocks and scales. */
  const size_t scratch = (size_t)s->cols * sizeof(float) + (size_t)s->groups * 17;
  const int threads = omp_get_max_threads();
  uint8_t *mem = malloc(scratch * (size_t)threads);
  if (!mem) return mxl_errorf(MXL_ERR_MEMORY, "tiny: out of memory encoding experts");
#pragma omp parallel for schedule(dynamic, 16) if (r1 - r0 > 64)
  for (int64_t r = r0; r <= r1; r++) {
    uint8_t *mine = mem + scratch * (size_t)omp_get_thread_num();
    float *x = (float *)(void *)mine;
    uint8_t *blocks = mine + (size_t)s->cols * sizeof(float);
    uint8_t *scales = blocks + s->groups * MXL_MXFP4_BLOCK_BYTES;
    /* A row split across two calls is counted by the call holding its start. */
    const int count_row = stats_on && r * row_bytes >= start;
    mxl_mxfp4_error_stats st;
    encode_row(g, s, layer, r, x, blocks, scales, count_row ? &st : NULL);
    const uint8_t *src = s->blocks ? blocks : scales;
    int64_t lo = r * row_bytes, hi = lo + row_bytes;
    if (lo < start) lo = start;
    if (hi > start + count) hi = start + count;
    memcpy(out + (lo - start), src + (lo - r * row_bytes), (size_t)(hi - lo));
    if (count_row) {
#pragma omp critical(mxl_tiny_stats)
      mxl_mxfp4_error_stats_merge(&g->stats, &st);
    }
  }
  free(mem);
  return MXL_OK;
}

/* The whole tensor encoded once (NULL if it does not fit the budget). */
static const mxl_tiny_encoded *cached(mxl_tiny_gen *g, const mx_shape *s, int layer) {
  for (int i = 0; i < g->n_cache; i++)
    if (g->cache[i].kind == s->weight && g->cache[i].layer == layer) return &g->cache[i];
  const int64_t rows = (int64_t)g->c->n_experts *
                       (s->weight == MXL_T_GU_BLOCKS ? 2 * (int64_t)g->c->intermediate
                                                      : (int64_t)g->c->hidden);
  const size_t bytes = (size_t)(rows * s->groups * (MXL_MXFP4_BLOCK_BYTES + 1));
  if (g->cache_bytes + bytes > MXL_TINY_CACHE_BUDGET) return NULL;
  mxl_tiny_encoded *grown = realloc(g->cache, (size_t)(g->n_cache + 1) * sizeof *grown);
  uint8_t *mem = malloc(bytes);
  float *x = malloc((size_t)s->cols * sizeof(float) * (size_t)omp_get_max_threads());
  if (grown) g->cache = grown;
  if (!grown || !mem || !x) {
    free(mem);
    free(x);
    return NULL;
  }
  mxl_tiny_encoded *e = &g->cache[g->n_cache++];
  e->kind = s->weight, e->layer = layer, e->blocks = mem;
  e->scales = mem + rows * s->groups * MXL_MXFP4_BLOCK_BYTES;
  g->cache_bytes += bytes;
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t r = 0; r < rows; r++) {
    mxl_mxfp4_error_stats st;
    encode_row(g, s, layer, r, x + (size_t)s->cols * (size_t)omp_get_thread_num(),
               e->blocks + r * s->groups * MXL_MXFP4_BLOCK_BYTES, e->scales + r * s->groups, &st);
#pragma omp critical(mxl_tiny_stats)
    mxl_mxfp4_error_stats_merge(&g->stats, &st);
  }
  free(x);
  return e;
}

static mxl_status fill_u8(void *self, mxl_tensor_kind kind, int layer, int64_t start,
                          int64_t count, uint8_t *out) {
  mxl_tiny_gen *g = self;
  mx_shape s = mx_shape_of(g->c, kind);
  if (count <= 0) return MXL_OK;
  if (g->direct_mxfp4) {
    fill_direct(g, &s, layer, start, count, out);
    return MXL_OK;
  }
  const mxl_tiny_encoded *e = cached(g, &s, layer);
  if (!e) return fill_rows(g, &s, layer, start, count, out);
  memcpy(out, (s.blocks ? e->blocks : e->scales) + start, (size_t)count);
  return MXL_OK;
}

mxl_tensor_source mxl_tiny_source(mxl_tiny_gen *g) {
  mxl_tensor_source s = {g, fill_bf16, fill_u8};
  return s;
}

void mxl_tiny_gen_free(mxl_tiny_gen *g) {
  for (int i = 0; i < g->n_cache; i++) free(g->cache[i].blocks);
  free(g->cache);
  g->cache = NULL;
  g->n_cache = 0;
  g->cache_bytes = 0;
}
