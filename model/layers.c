#include "model/layers.h"

#include <stdlib.h>
#include <string.h>

#include "core/status.h"

/* ---------------------------------------------------------------- sizing */

static void carve_acts(const mxl_config *cfg, mxl_layer_acts *a, int n, int rank, mxl_carver *c) {
  const size_t H = cfg->hidden, I = cfg->intermediate, E = cfg->n_experts;
  const size_t k = cfg->experts_per_token, m = (size_t)n * k;
  const size_t qd = (size_t)cfg->n_heads * cfg->head_dim;
  const size_t kvd = (size_t)cfg->n_kv_heads * cfg->head_dim;
  size_t widest = H > qd ? H : qd;
  if (I > widest) widest = I;
  a->a = mxl_carve(c, n * H, 4);
  a->rstd_a = mxl_carve(c, n, 4);
  a->q = mxl_carve(c, n * qd, 4);
  a->k = mxl_carve(c, n * kvd, 4);
  a->v = mxl_carve(c, n * kvd, 4);
  a->ctx = mxl_carve(c, n * qd, 4);
  a->lse = mxl_carve(c, (size_t)n * cfg->n_heads, 4);
  a->x_mid = mxl_carve(c, n * H, 4);
  a->mlp_in = mxl_carve(c, n * H, 4);
  a->rstd_m = mxl_carve(c, n, 4);
  a->router_logits = mxl_carve(c, n * E, 4);
  a->experts = mxl_carve(c, m, 4);
  a->weights = mxl_carve(c, m, 4);
  a->order = mxl_carve(c, m, 4);
  a->slot = mxl_carve(c, m, 4);
  a->offsets = mxl_carve(c, E + 1, 4);
  a->xs = mxl_carve(c, m * H, 4);
  a->h = mxl_carve(c, m * 2 * I, 4);
  a->act = mxl_carve(c, m * I, 4);
  a->ys = mxl_carve(c, m * H, 4);
  a->proj = mxl_carve(c, n * H, 4);
  a->lora_in = rank ? mxl_carve(c, m * widest, 4) : NULL;
  for (int t = 0; t < MXL_LORA_N_TARGETS; t++) {
    size_t rows = (t == MXL_LORA_GATE_UP || t == MXL_LORA_DOWN) ? m : (size_t)n;
    a->lora_t[t] = rank ? mxl_carve(c, rows * rank, 4) : NULL;
  }
}

size_t mxl_layer_acts_bytes(const mxl_config *cfg, int n, int lora_rank) {
  mxl_layer_acts a;
  mxl_carver sizing = {0};
  carve_acts(cfg, &a, n, lora_rank, &sizing);
  return sizing.used;
}

mxl_status mxl_layer_acts_reserve(mxl_engine *e, mxl_layer_acts *acts, int n, int lora_rank) {
  if (n <= acts->cap_n && lora_rank <= acts->lora_rank_cap) {
    acts->n = n;
    return MXL_OK;
  }
  int cap = n > acts->cap_n ? n : acts->cap_n;
  int rank = lora_rank > acts->lora_rank_cap ? lora_rank : acts->lora_rank_cap;
  mxl_carver sizing = {0};
  carve_acts(e->cfg, acts, cap, rank, &sizing);
  MXL_TRY(mxl_buffer_reserve(e->be, &acts->block, sizing.used));
  int32_t *host = realloc(acts->host_block, (e->cfg->n_experts + 1) * sizeof(int32_t));
  if (!host) return mxl_errorf(MXL_ERR_MEMORY, "layer activations: out of memory");
  acts->host_block = host;
  mxl_carver c = {acts->block.ptr, 0};
  carve_acts(e->cfg, acts, cap, rank, &c);
  acts->offsets_host = host;
  acts->cap_n = cap;
  acts->lora_rank_cap = rank;
  acts->n = n;
  return MXL_OK;
}

void mxl_layer_acts_release(mxl_engine *e, mxl_layer_acts *acts) {
  mxl_buffer_release(e->be, &acts->block);
  free(acts->host_block);
  memset(acts, 0, sizeof *acts);
}

/* ---------------------------------------------------------------- LoRA */

uint64_t mxl_lora_dropout_seed(uint64_t seed, int layer, int target) {
  return seed ^ ((uint64_t)(layer + 1) << 32) ^ ((uint64_t)(target + 1) << 56);
}

/* y[rows, out] += scale·(x·Aᵀ)·Bᵀ for one dense target, over every adapter. */
static void lora_dense(mxl_engine *e, int layer, const mxl_lora_stack *lora, int target,
                       const float *x, int rows, int in, int out, float *y,
                       mxl_layer_acts *acts) {
  const mxl_ops *ops = e->ops;
  for (int i = 0; lora && i < lora->n; i++) {
    const mxl_lora_mat *L = &lora->views[i]->layers[layer].t[target];
    if (!L->A) continue;
    const float *input = x;
    float p = lora->views[i]->dropout;
    if (lora->train && i == 0 && p > 0) {
      ops->dropout(e->be, acts->lora_in, x, (size_t)rows * in, p,
                   mxl_lora_dropout_seed(lora->seed, layer, target));
      input = acts->lora_in;
    }
    float *t = acts->lora_t[target];
    ops->gemm_f32(e->be, 0, 1, rows, L->rank, in, 1.0f, input, in, L->A, in, 0.0f, t, L->rank);
    ops->gemm_f32(e->be, 0, 1, rows, out, L->rank, L->scale, t, L->rank, L->B, L->rank, 1.0f,
                  y, out);
  }
}

/* The same per expert over its grouped rows: A [E][R, in], B [E][out, R]. */
static void lora_experts(mxl_engine *e, int layer, const mxl_lora_stack *lora, int target,
                         const float *x, int in, int out, float *y, mxl_layer_acts *acts) {
  const mxl_ops *ops = e->ops;
  const int32_t *off = acts->offsets_host;
  for (int i = 0; lora && i < lora->n; i++) {
    const mxl_lora_mat *L = &lora->views[i]->layers[layer].t[target];
    if (!L->A) continue;
    const int R = L->rank;
    for (int ex = 0; ex < e->cfg->n_experts; ex++) {
      int r0 = off[ex], rows = off[ex + 1] - off[ex];
      if (rows == 0) continue;
      float *t = acts->lora_t[target] + (size_t)r0 * R;
      const float *A = L->A + (size_t)ex * R * in, *B = L->B + (size_t)ex * out * R;
      ops->gemm_f32(e->be, 0, 1, rows, R, in, 1.0f, x + (size_t)r0 * in, in, A, in, 0.0f, t, R);
      ops->gemm_f32(e->be, 0, 1, rows, out, R, L->scale, t, R, B, R, 1.0f,
                    y + (size_t)r0 * out, out);
    }
  }
}

/* ---------------------------------------------------------------- attention half */

void mxl_attend_group(mxl_engine *e, int layer, mxl_layer_acts *acts, const mxl_attn_group *g) {
  const mxl_config *c = e->cfg;
  const size_t qd = (size_t)c->n_heads * c->head_dim;
  e->ops->attention(e->be, acts->ctx + g->q_row0 * qd, acts->lse + (size_t)g->q_row0 * c->n_heads,
                    acts->q + g->q_row0 * qd, g->k, g->v, e->w.layers[layer].sinks, &g->mask,
                    g->nq, g->nk, c->n_heads, c->n_kv_heads, c->head_dim, e->w.attn_scale);
}

mxl_status mxl_attention_half(mxl_engine *e, int layer, const mxl_lora_stack *lora,
                              const float *x, const int32_t *pos, mxl_layer_acts *acts,
                              mxl_attend_fn attend, void *attend_user) {
  const mxl_ops *ops = e->ops;
  const mxl_config *c = e->cfg;
  const mxl_layer_weights *w = &e->w.layers[layer];
  const int n = acts->n, H = c->hidden, d = c->head_dim;
  const int qd = c->n_heads * d, kvd = c->n_kv_heads * d;

  ops->rmsnorm(e->be, acts->a, acts->rstd_a, x, w->attn_norm, n, H, c->rms_eps);
  ops->matmul_bf16(e->be, acts->q, acts->a, &w->q, n);
  ops->matmul_bf16(e->be, acts->k, acts->a, &w->k, n);
  ops->matmul_bf16(e->be, acts->v, acts->a, &w->v, n);
  lora_dense(e, layer, lora, MXL_LORA_Q, acts->a, n, H, qd, acts->q, acts);
  lora_dense(e, layer, lora, MXL_LORA_K, acts->a, n, H, kvd, acts->k, acts);
  lora_dense(e, layer, lora, MXL_LORA_V, acts->a, n, H, kvd, acts->v, acts);
  ops->rope(e->be, acts->q, n, c->n_heads, d, pos, e->inv_freq, e->concentration,
            e->w.qk_interleaved, 0);
  ops->rope(e->be, acts->k, n, c->n_kv_heads, d, pos, e->inv_freq, e->concentration,
            e->w.qk_interleaved, 0);
  MXL_TRY(attend(attend_user, e, layer, acts));
  ops->matmul_bf16(e->be, acts->proj, acts->ctx, &w->o, n);
  lora_dense(e, layer, lora, MXL_LORA_O, acts->ctx, n, qd, H, acts->proj, acts);
  ops->copy(e->be, acts->x_mid, x, (size_t)n * H * sizeof(float));
  ops->add(e->be, acts->x_mid, acts->proj, (size_t)n * H);
  return MXL_OK;
}

/* ---------------------------------------------------------------- MoE half */

mxl_moe_plan mxl_layer_plan(const mxl_engine *e, const mxl_layer_acts *acts) {
  mxl_moe_plan p = {
      .n_tokens = acts->n,
      .k = e->cfg->experts_per_token,
      .n_experts = e->cfg->n_experts,
      .experts = acts->experts,
      .weights = acts->weights,
      .order = acts->order,
      .slot = acts->slot,
      .offsets = acts->offsets,
      .offsets_host = acts->offsets_host,
  };
  return p;
}

mxl_status mxl_moe_half(mxl_engine *e, int layer, const mxl_lora_stack *lora,
                        mxl_layer_acts *acts, float *x_out) {
  const mxl_ops *ops = e->ops;
  const mxl_config *c = e->cfg;
  const mxl_layer_weights *w = &e->w.layers[layer];
  const int n = acts->n, H = c->hidden, I = c->intermediate, E = c->n_experts;
  const int k = c->experts_per_token;

  ops->rmsnorm(e->be, acts->mlp_in, acts->rstd_m, acts->x_mid, w->mlp_norm, n, H, c->rms_eps);
  mxl_bf16_weight router = w->router;
  router.fp32_act = 1; /* its logits choose experts (ops.h) */
  ops->matmul_bf16(e->be, acts->router_logits, acts->mlp_in, &router, n);
  ops->router_topk(e->be, acts->experts, acts->weights, acts->router_logits, n, E, k);
  ops->moe_plan(e->be, acts->order, acts->slot, acts->offsets, acts->experts, n, k, E);
  ops->download(e->be, acts->offsets_host, acts->offsets, (E + 1) * sizeof(int32_t));
  MXL_TRY(ops->sync(e->be));
  mxl_moe_plan plan = mxl_layer_plan(e, acts);

  ops->moe_gather(e->be, acts->xs, acts->mlp_in, &plan, H);
  ops->mxfp4_matmul(e->be, acts->h, acts->xs, &w->gate_up, &plan);
  lora_experts(e, layer, lora, MXL_LORA_GATE_UP, acts->xs, H, 2 * I, acts->h, acts);
  ops->swiglu(e->be, acts->act, acts->h, n * k, I, c->swiglu_alpha, c->swiglu_limit);
  ops->mxfp4_matmul(e->be, acts->ys, acts->act, &w->down, &plan);
  lora_experts(e, layer, lora, MXL_LORA_DOWN, acts->act, I, H, acts->ys, acts);
  ops->copy(e->be, x_out, acts->x_mid, (size_t)n * H * sizeof(float));
  ops->moe_combine(e->be, x_out, acts->ys, &plan, H);
  return MXL_OK;
}
