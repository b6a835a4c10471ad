/* "Base model + adapter deltas" as a tensor source for the layout writer
 * (merge.h). Tensors no adapter touches are the base's bytes, unchanged. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/merge.h"
#include "core/bf16.h"
#include "core/fileio.h"
#include "core/status.h"
#include "kernels/mxfp4.h"

/* ------------------------------------------------------------ deltas */

static mxl_lora_target target_of(mxl_tensor_kind k) {
  switch (k) {
  case MXL_T_Q_W: return MXL_LORA_Q;
  case MXL_T_K_W: return MXL_LORA_K;
  case MXL_T_V_W: return MXL_LORA_V;
  case MXL_T_O_W: return MXL_LORA_O;
  case MXL_T_GU_BLOCKS:
  case MXL_T_GU_SCALES:
  case MXL_T_GU_W: return MXL_LORA_GATE_UP;
  case MXL_T_DOWN_BLOCKS:
  case MXL_T_DOWN_SCALES:
  case MXL_T_DOWN_W: return MXL_LORA_DOWN;
  default: return MXL_LORA_N_TARGETS;
  }
}

static int adapted(const mxl_merge_source *s, int layer, mxl_lora_target t) {
  mxl_lora_pair p;
  for (int a = 0; a < s->n_loras; a++)
    if (t < MXL_LORA_N_TARGETS &&
        mxl_lora_find(s->loras[a]->layout, s->loras[a]->params, layer, t, &p))
      return 1;
  return 0;
}

/* row[0..in) += Σ_a scale_a · B_a[e][o, :] · A_a[e] */
static void add_delta_row(const mxl_merge_source *s, int layer, mxl_lora_target t, int e,
                          int64_t o, float *row) {
  for (int a = 0; a < s->n_loras; a++) {
    mxl_lora_pair p;
    if (!mxl_lora_find(s->loras[a]->layout, s->loras[a]->params, layer, t, &p)) continue;
    const float *A = p.A + (size_t)e * p.rank * p.in;
    const float *B = p.B + ((size_t)e * p.out + (size_t)o) * p.rank;
    for (int k = 0; k < p.rank; k++) {
      const float b = s->scales[a] * B[k];
      const float *Ak = A + (size_t)k * p.in;
      for (int i = 0; i < p.in; i++) row[i] += b * Ak[i];
    }
  }
}

/* ------------------------------------------------------------ bf16 tensors */

/* The base's bf16 tensor (HF/original shape) of a kind other than the
 * fused qkv and the experts. */
static const uint16_t *base_bf16(const mxl_model *m, mxl_tensor_kind k, int layer,
                                 int64_t *cols) {
  const mxl_weights *w = &m->w;
  const mxl_layer_weights *l = layer >= 0 ? &w->layers[layer] : NULL;
  *cols = 1;
  switch (k) {
  case MXL_T_EMBED: *cols = w->embed.cols; return w->embed.w;
  case MXL_T_UNEMBED: *cols = w->unembed.cols; return w->unembed.w;
  case MXL_T_FINAL_NORM: return w->final_norm;
  case MXL_T_ATTN_NORM: return l->attn_norm;
  case MXL_T_MLP_NORM: return l->mlp_norm;
  case MXL_T_SINKS: return l->sinks;
  case MXL_T_Q_W: *cols = l->q.cols; return l->q.w;
  case MXL_T_K_W: *cols = l->k.cols; return l->k.w;
  case MXL_T_V_W: *cols = l->v.cols; return l->v.w;
  case MXL_T_O_W: *cols = l->o.cols; return l->o.w;
  case MXL_T_Q_B: return l->q.bias;
  case MXL_T_K_B: return l->k.bias;
  case MXL_T_V_B: return l->v.bias;
  case MXL_T_O_B: return l->o.bias;
  case MXL_T_ROUTER_W: *cols = l->router.cols; return l->router.w;
  case MXL_T_ROUTER_B: return l->router.bias;
  case MXL_T_GU_BIAS: return l->gate_up.bias; /* HF/original: experts contiguous */
  case MXL_T_DOWN_BIAS: return l->down.bias;
  default: return NULL;
  }
}

/* A fused qkv element: which of q, k, v and where. */
static mxl_tensor_kind unfuse(const mxl_config *c, mxl_tensor_kind k, int64_t *idx) {
  const int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
  const int w = k == MXL_T_QKV_W;
  const int64_t row_len = w ? c->hidden : 1, row = *idx / row_len;
  if (row < q) return w ? MXL_T_Q_W : MXL_T_Q_B;
  if (row < q + kv) {
    *idx -= q * row_len;
    return w ? MXL_T_K_W : MXL_T_K_B;
  }
  *idx -= (q + kv) * row_len;
  return w ? MXL_T_V_W : MXL_T_V_B;
}

/* A plain bf16 range, deltas added row by row where an adapter targets it. */
static mxl_status fill_plain(mxl_merge_source *s, mxl_tensor_kind kind, int layer, int64_t start,
                             int64_t count, uint16_t *out) {
  int64_t cols;
  const uint16_t *base = base_bf16(s->model, kind, layer, &cols);
  if (!base)
    return mxl_errorf(MXL_ERR_STATE, "merge: the base has no tensor of kind %d", (int)kind);
  memcpy(out, base + start, (size_t)count * 2);
  mxl_mapping_drop_pages(base + start, (size_t)count * 2);
  mxl_lora_target t = target_of(kind);
  if (!adapted(s, layer, t)) return MXL_OK;
  for (int64_t r = start / cols; r * cols < start + count; r++) {
    memset(s->row, 0, (size_t)cols * sizeof *s->row);
    add_delta_row(s, layer, t, 0, r, s->row);
    int64_t lo = r * cols < start ? start : r * cols;
    int64_t hi = (r + 1) * cols < start + count ? (r + 1) * cols : start + count;
    for (int64_t i = lo; i < hi; i++)
      out[i - start] = mxl_f32_to_bf16(mxl_bf16_to_f32(out[i - start]) + s->row[i - r * cols]);
  }
  return MXL_OK;
}

/* ------------------------------------------------------------ experts */

static const mxl_mxfp4_weight *expert_weight(const mxl_merge_source *s, mxl_lora_target t,
                                             int layer) {
  const mxl_layer_weights *l = &s->model->w.layers[layer];
  return t == MXL_LORA_GATE_UP ? &l->gate_up : &l->down;
}

/* s->merged = W_e (decoded base) + ΔW_e, [rows, cols]; cached per expert. */
static void merge_expert(mxl_merge_source *s, mxl_lora_target t, int layer, int e) {
  if (s->cur_target == t && s->cur_layer == layer && s->cur_expert == e) return;
  const mxl_mxfp4_weight *w = expert_weight(s, t, layer);
  const int64_t rows = w->rows, cols = w->cols, groups = cols / MXL_MXFP4_BLOCK;
  const uint8_t *blocks = w->blocks + (size_t)e * w->blocks_stride;
  const uint8_t *scales = w->scales + (size_t)e * w->scales_stride;
  const int with_delta = adapted(s, layer, t);
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < rows; o++) {
    float *row = s->merged + o * cols;
    for (int64_t g = 0; g < groups; g++)
      mxl_mxfp4_decode_block(blocks + (o * groups + g) * MXL_MXFP4_BLOCK_BYTES,
                             scales[o * groups + g], w->scale_bias, row + g * MXL_MXFP4_BLOCK);
    if (with_delta) {
      float *d = s->delta + o * cols;
      memcpy(d, row, (size_t)cols * sizeof *d);
      add_delta_row(s, layer, t, e, o, row);
      for (int64_t i = 0; i < cols; i++) d[i] = row[i] - d[i]; /* ΔW, as added in fp32 */
    }
  }
  mxl_mapping_drop_pages(blocks, w->blocks_stride);
  mxl_mapping_drop_pages(scales, w->scales_stride);
  s->cur_target = t, s->cur_layer = layer, s->cur_expert = e;
}

/* Sums for the report of one expert: W merged M = W + ΔW, quantized Q. */
static void account(mxl_merge_source *s, mxl_lora_target t, int layer, int64_t n) {
  mxl_merge_stats *r = &s->stats[(size_t)layer * 2 + (t == MXL_LORA_DOWN)];
  double sq_m = 0, sq_err = 0, sq_d = 0, dot = 0, sq_qw = 0, sq_miss = 0;
#pragma omp parallel for reduction(+ : sq_m, sq_err, sq_d, dot, sq_qw, sq_miss) schedule(static)
  for (int64_t i = 0; i < n; i++) {
    const double m = s->merged[i], d = s->delta[i], q = s->quant[i], w = m - d;
    sq_m += m * m;
    sq_err += (q - m) * (q - m);
    sq_d += d * d;
    dot += (q - w) * d;
    sq_qw += (q - w) * (q - w);
    sq_miss += (q - w - d) * (q - w - d);
  }
  r->sq_merged += sq_m, r->sq_requant_error += sq_err, r->sq_delta += sq_d;
  r->dot_kept_delta += dot, r->sq_kept += sq_qw, r->sq_delta_error += sq_miss;
  r->values += n;
}

/* Encodes expert e of an adapted projection (error-minimising codec),
 * keeps its blocks and its scales, and counts it in the report once. */
static mxl_status encode_expert(mxl_merge_source *s, mxl_lora_target t, int layer, int e) {
  if (s->enc_target == t && s->enc_layer == layer && s->enc_expert == e) return MXL_OK;
  merge_expert(s, t, layer, e);
  const mxl_mxfp4_weight *w = expert_weight(s, t, layer);
  const int64_t rows = w->rows, cols = w->cols, groups = cols / MXL_MXFP4_BLOCK;
  int bad = 0;
#pragma omp parallel for schedule(dynamic, 64) reduction(| : bad)
  for (int64_t o = 0; o < rows; o++) {
    uint8_t *bl = s->enc_blocks + o * groups * MXL_MXFP4_BLOCK_BYTES;
    uint8_t *sc = s->enc_scales + o * groups;
    if (mxl_mxfp4_encode_rows(s->merged + o * cols, 1, cols, bl, sc, NULL) != 0) {
      bad = 1;
      continue;
    }
    for (int64_t g = 0; g < groups; g++)
      mxl_mxfp4_decode_block(bl + g * MXL_MXFP4_BLOCK_BYTES, sc[g], MXL_MXFP4_BIAS,
                             s->quant + o * cols + g * MXL_MXFP4_BLOCK);
  }
  if (bad)
    return mxl_errorf(MXL_ERR_NUMERIC, "merge: layer %d %s expert %d: the merged weights are not "
                      "finite (an adapter holds NaN or Inf)", layer, mxl_lora_target_name(t), e);
  const size_t per_expert = (size_t)(rows * groups);
  if (s->scales_layer != layer || s->scales_target != t) {
    memset(s->scales_have, 0, (size_t)s->model->config.n_experts);
    s->scales_layer = layer, s->scales_target = t;
  }
  memcpy(s->all_scales + (size_t)e * per_expert, s->enc_scales, per_expert);
  if (!s->scales_have[e]) account(s, t, layer, rows * cols);
  s->scales_have[e] = 1;
  s->enc_target = t, s->enc_layer = layer, s->enc_expert = e;
  return MXL_OK;
}

static mxl_status fill_u8(void *self, mxl_tensor_kind kind, int layer, int64_t start,
                          int64_t count, uint8_t *out) {
  mxl_merge_source *s = self;
  const mxl_lora_target t = target_of(kind);
  const mxl_mxfp4_weight *w = expert_weight(s, t, layer);
  const int blocks = kind == MXL_T_GU_BLOCKS || kind == MXL_T_DOWN_BLOCKS;
  const size_t stride = blocks ? w->blocks_stride : w->scales_stride;
  const uint8_t *base = blocks ? w->blocks : w->scales;
  if (!adapted(s, layer, t)) {
    memcpy(out, base + start, (size_t)count);
    mxl_mapping_drop_pages(base + start, (size_t)count);
    return MXL_OK;
  }
  for (int64_t done = 0; done < count;) {
    const int64_t at = start + done, e = at / (int64_t)stride, in_e = at % (int64_t)stride;
    const int64_t n = count - done < (int64_t)stride - in_e ? count - done : (int64_t)stride - in_e;
    if (blocks) {
      MXL_TRY(encode_expert(s, t, layer, (int)e));
      memcpy(out + done, s->enc_blocks + in_e, (size_t)n);
    } else {
      /* the blocks tensor comes first and left every expert's scales */
      if (s->scales_layer != layer || s->scales_target != t || !s->scales_have[e])
        MXL_TRY(encode_expert(s, t, layer, (int)e));
      memcpy(out + done, s->all_scales + (size_t)e * stride + in_e, (size_t)n);
    }
    done += n;
  }
  return MXL_OK;
}

/* Dense experts, [E, rows, cols] (the writer transposes for HF). */
static mxl_status fill_dense(mxl_merge_source *s, mxl_tensor_kind kind, int layer, int64_t start,
                             int64_t count, uint16_t *out) {
  const mxl_lora_target t = target_of(kind);
  const mxl_mxfp4_weight *w = expert_weight(s, t, layer);
  const int64_t per = w->rows * w->cols;
  for (int64_t done = 0; done < count;) {
    const int64_t at = start + done, e = at / per, in_e = at % per;
    const int64_t n = count - done < per - in_e ? count - done : per - in_e;
    merge_expert(s, t, layer, (int)e);
    for (int64_t i = 0; i < n; i++) out[done + i] = mxl_f32_to_bf16(s->merged[in_e + i]);
    done += n;
  }
  return MXL_OK;
}

static mxl_status fill_bf16(void *self, mxl_tensor_kind kind, int layer, int64_t start,
                            int64_t count, uint16_t *out) {
  mxl_merge_source *s = self;
  if (kind == MXL_T_GU_W || kind == MXL_T_DOWN_W) return fill_dense(s, kind, layer, start, count, out);
  if (kind != MXL_T_QKV_W && kind != MXL_T_QKV_B) return fill_plain(s, kind, layer, start, count, out);
  /* original/'s fused qkv: q, k and v rows in turn */
  for (int64_t done = 0; done < count;) {
    int64_t idx = start + done;
    mxl_tensor_kind part = unfuse(&s->model->config, kind, &idx);
    int64_t cols, rows_left;
    base_bf16(s->model, part, layer, &cols);
    const mxl_bf16_weight *bw = part == MXL_T_Q_W || part == MXL_T_Q_B ? &s->model->w.layers[layer].q
                                : part == MXL_T_K_W || part == MXL_T_K_B ? &s->model->w.layers[layer].k
                                                                         : &s->model->w.layers[layer].v;
    rows_left = bw->rows * cols - idx;
    int64_t n = count - done < rows_left ? count - done : rows_left;
    MXL_TRY(fill_plain(s, part, layer, idx, n, out + done));
    done += n;
  }
  return MXL_OK;
}

/* ------------------------------------------------------------ lifetime */

mxl_status mxl_merge_source_init(mxl_merge_source *s, const mxl_model *model, mxl_lora **loras,
                                 const float *scales, int n_loras) {
  memset(s, 0, sizeof *s);
  s->model = model;
  s->loras = loras;
  s->n_loras = n_loras;
  s->cur_expert = s->enc_expert = s->scales_layer = -1;
  const mxl_config *c = &model->config;
  const int64_t H = c->hidden, I = c->intermediate, q = (int64_t)c->n_heads * c->head_dim;
  const int64_t big = 2 * I * H > H * I ? 2 * I * H : H * I; /* one expert's matrix */
  const int64_t groups = big / MXL_MXFP4_BLOCK;
  const int64_t widest = H > q ? H : q;
  s->scales = malloc((size_t)n_loras * sizeof *s->scales);
  s->row = malloc((size_t)widest * sizeof *s->row);
  s->merged = malloc((size_t)big * sizeof *s->merged);
  s->delta = malloc((size_t)big * sizeof *s->delta);
  s->quant = malloc((size_t)big * sizeof *s->quant);
  s->enc_blocks = malloc((size_t)groups * MXL_MXFP4_BLOCK_BYTES);
  s->enc_scales = malloc((size_t)groups);
  s->all_scales = malloc((size_t)groups * (size_t)c->n_experts);
  s->scales_have = calloc((size_t)c->n_experts, 1);
  s->stats = calloc((size_t)c->n_layers * 2, sizeof *s->stats);
  if (!s->scales || !s->row || !s->merged || !s->delta || !s->quant || !s->enc_blocks ||
      !s->enc_scales || !s->all_scales || !s->scales_have || !s->stats) {
    mxl_merge_source_free(s);
    return mxl_errorf(MXL_ERR_MEMORY, "merge: out of memory for one expert's buffers");
  }
  for (int a = 0; a < n_loras; a++) s->scales[a] = scales[a] * loras[a]->layout->scaling;
  return MXL_OK;
}

void mxl_merge_source_free(mxl_merge_source *s) {
  free(s->scales);
  free(s->row);
  free(s->merged);
  free(s->delta);
  free(s->quant);
  free(s->enc_blocks);
  free(s->enc_scales);
  free(s->all_scales);
  free(s->scales_have);
  free(s->stats);
  memset(s, 0, sizeof *s);
}

mxl_tensor_source mxl_merge_tensor_source(mxl_merge_source *s) {
  mxl_tensor_source src = {s, fill_bf16, fill_u8};
  return src;
}

int mxl_merge_adapts(const mxl_merge_source *s, int layer, mxl_lora_target t) {
  return adapted(s, layer, t);
}
