#include "model/layers.h"

#include <stdlib.h>
#include <string.h>

#include "core/status.h"

/* ---------------------------------------------------------------- sizing */

/* The attention part and the per-token routing hold n tokens; the routed
 * rows (order, slot, xs, h, act, ys and the expert LoRA products) hold the
 * tokens of one MoE chunk, moe_n (mxl_moe_half runs the experts chunk by
 * chunk: experts are per token, so chunks are independent).
 *
 * The fields carved from `shared` are those a kept tape (training without
 * recompute, mxl_layer_tape_reserve) does not hold: the backward needs none
 * of them (router_logits) or regenerates them exactly from what the tape
 * holds (mxl_layer_tape_restore: a from x, xs from mlp_in, act from h), or
 * regenerates them anyway (lora_in, from the dropout seed). A plain set of
 * activations passes its own carver twice. */
static void carve_acts(const mxl_config *cfg, mxl_layer_acts *a, int n, int moe_n, int rank,
                       int dropout, mxl_carver *c, mxl_carver *shared) {
  const size_t H = cfg->hidden, I = cfg->intermediate, E = cfg->n_experts;
  const size_t k = cfg->experts_per_token, m = (size_t)moe_n * k;
  const size_t qd = (size_t)cfg->n_heads * cfg->head_dim;
  const size_t kvd = (size_t)cfg->n_kv_heads * cfg->head_dim;
  a->a = mxl_carve(shared, n * H, 4);
  a->rstd_a = mxl_carve(c, n, 4);
  a->q = mxl_carve(c, n * qd, 4);
  a->k = mxl_carve(c, n * kvd, 4);
  a->v = mxl_carve(c, n * kvd, 4);
  a->ctx = mxl_carve(c, n * qd, 4);
  a->lse = mxl_carve(c, (size_t)n * cfg->n_heads, 4);
  a->x_mid = mxl_carve(c, n * H, 4);
  a->mlp_in = mxl_carve(c, n * H, 4);
  a->rstd_m = mxl_carve(c, n, 4);
  a->router_logits = mxl_carve(shared, n * E, 4);
  a->experts = mxl_carve(c, (size_t)n * k, 4);
  a->weights = mxl_carve(c, (size_t)n * k, 4);
  a->order = mxl_carve(c, m, 4);
  a->slot = mxl_carve(c, m, 4);
  a->offsets = mxl_carve(c, E + 1, 4);
  a->xs = mxl_carve(shared, m * H, 4);
  a->h = mxl_carve(c, m * 2 * I, 4);
  a->act = mxl_carve(shared, m * I, 4);
  a->ys = mxl_carve(c, m * H, 4);
  /* training with dropout: it applies to the attention targets' inputs
   * only (experts: none) */
  a->lora_in = rank && dropout ? mxl_carve(shared, n * (H > qd ? H : qd), 4) : NULL;
  for (int t = 0; t < MXL_LORA_N_TARGETS; t++) {
    size_t rows = (t == MXL_LORA_GATE_UP || t == MXL_LORA_DOWN) ? m : (size_t)n;
    a->lora_t[t] = rank ? mxl_carve(c, rows * rank, 4) : NULL;
  }
}

int mxl_moe_chunk_tokens(int n, int moe_chunk) {
  return moe_chunk > 0 && moe_chunk < n ? moe_chunk : n;
}

/* The bytes of a full set (tape = 0) or of a kept tape (tape = 1). */
static size_t acts_bytes(const mxl_config *cfg, int n, int moe_chunk, int lora_rank, int dropout,
                         int tape) {
  mxl_layer_acts a;
  mxl_carver sizing = {0}, elsewhere = {0};
  carve_acts(cfg, &a, n, mxl_moe_chunk_tokens(n, moe_chunk), lora_rank, dropout, &sizing,
             tape ? &elsewhere : &sizing);
  return sizing.used;
}

size_t mxl_layer_acts_bytes(const mxl_config *cfg, int n, int moe_chunk, int lora_rank,
                            int dropout) {
  return acts_bytes(cfg, n, moe_chunk, lora_rank, dropout, 0);
}

size_t mxl_layer_tape_bytes(const mxl_config *cfg, int n, int moe_chunk, int lora_rank,
                            int dropout) {
  return acts_bytes(cfg, n, moe_chunk, lora_rank, dropout, 1);
}

/* Points the fields a tape shares at those of `work`. */
static void share_fields(mxl_layer_acts *tape, const mxl_layer_acts *work) {
  tape->a = work->a;
  tape->router_logits = work->router_logits;
  tape->xs = work->xs;
  tape->act = work->act;
  tape->lora_in = work->lora_in;
}

/* mxl_layer_acts_reserve, or with `work` a tape whose shared fields are
 * work's. */
static mxl_status reserve_acts(mxl_engine *e, mxl_layer_acts *acts, int n, int moe_chunk,
                               int lora_rank, int dropout, const mxl_layer_acts *work) {
  const int moe_n = mxl_moe_chunk_tokens(n, moe_chunk);
  acts->moe_chunk = moe_n;
  dropout = dropout != 0;
  if (n <= acts->cap_n && moe_n <= acts->moe_cap && lora_rank <= acts->lora_rank_cap &&
      dropout <= acts->dropout_cap) {
    acts->n = n;
    if (work) share_fields(acts, work); /* work may have grown */
    return MXL_OK;
  }
  int cap = n > acts->cap_n ? n : acts->cap_n;
  int moe_cap = moe_n > acts->moe_cap ? moe_n : acts->moe_cap;
  int rank = lora_rank > acts->lora_rank_cap ? lora_rank : acts->lora_rank_cap;
  dropout = dropout > acts->dropout_cap ? dropout : acts->dropout_cap;
  mxl_carver sizing = {0}, elsewhere = {0};
  carve_acts(e->cfg, acts, cap, moe_cap, rank, dropout, &sizing, work ? &elsewhere : &sizing);
  MXL_TRY(mxl_buffer_reserve(e->be, &acts->block, sizing.used));
  /* host: offsets [E+1], order [m] of a chunk, row_run [n] */
  const size_t E1 = (size_t)e->cfg->n_experts + 1;
  const size_t m = (size_t)moe_cap * e->cfg->experts_per_token;
  int32_t *host = realloc(acts->host_block, (E1 + m + (size_t)cap) * sizeof(int32_t));
  if (!host) return mxl_errorf(MXL_ERR_MEMORY, "layer activations: out of memory");
  acts->host_block = host;
  mxl_carver c = {acts->block.ptr, 0};
  carve_acts(e->cfg, acts, cap, moe_cap, rank, dropout, &c, work ? &elsewhere : &c);
  if (work) share_fields(acts, work);
  acts->offsets_host = host;
  acts->order_host = host + E1;
  acts->row_run = host + E1 + m;
  acts->cap_n = cap;
  acts->moe_cap = moe_cap;
  acts->lora_rank_cap = rank;
  acts->dropout_cap = dropout;
  acts->n = n;
  return MXL_OK;
}

mxl_status mxl_layer_acts_reserve(mxl_engine *e, mxl_layer_acts *acts, int n, int moe_chunk,
                                  int lora_rank, int dropout) {
  return reserve_acts(e, acts, n, moe_chunk, lora_rank, dropout, NULL);
}

mxl_status mxl_layer_tape_reserve(mxl_engine *e, mxl_layer_acts *tape, int n, int moe_chunk,
                                  int lora_rank, int dropout, const mxl_layer_acts *work) {
  return reserve_acts(e, tape, n, moe_chunk, lora_rank, dropout, work);
}

void mxl_layer_tape_restore(mxl_engine *e, int layer, mxl_layer_acts *tape, const float *x) {
  const mxl_ops *ops = e->ops;
  const mxl_config *c = e->cfg;
  const mxl_layer_weights *w = &e->w.layers[layer];
  ops->rmsnorm(e->be, tape->a, tape->rstd_a, x, w->attn_norm, tape->n, c->hidden, c->rms_eps);
  if (tape->moe_chunk < tape->n) return; /* the backward recomputes every chunk's rows */
  mxl_moe_plan plan = mxl_layer_plan(e, tape);
  ops->moe_gather(e->be, tape->xs, tape->mlp_in, &plan, c->hidden);
  ops->swiglu(e->be, tape->act, tape->h, tape->n * c->experts_per_token, c->intermediate,
              c->swiglu_alpha, c->swiglu_limit);
}

void mxl_layer_acts_release(mxl_engine *e, mxl_layer_acts *acts) {
  mxl_buffer_release(e->be, &acts->block);
  free(acts->host_block);
  free(acts->segs);
  memset(acts, 0, sizeof *acts);
}

/* ---------------------------------------------------------------- LoRA */

uint64_t mxl_lora_dropout_seed(uint64_t seed, int layer, int target) {
  return seed ^ ((uint64_t)(layer + 1) << 32) ^ ((uint64_t)(target + 1) << 56);
}

/* The stack as runs: the views form is one run over every row. */
static int n_runs(const mxl_lora_stack *lora) {
  if (!lora) return 0;
  return lora->runs ? lora->n_runs : (lora->n > 0);
}

static mxl_lora_run run_at(const mxl_lora_stack *lora, int r, int n_rows) {
  if (lora->runs) return lora->runs[r];
  mxl_lora_run all = {0, n_rows, NULL, lora->n};
  return all;
}

static void use_at(const mxl_lora_stack *lora, const mxl_lora_run *run, int u,
                   const mxl_lora_view **view, float *scale) {
  if (lora->runs) {
    *view = run->uses[u].view;
    *scale = run->uses[u].scale;
  } else {
    *view = lora->views[u];
    *scale = 1.0f;
  }
}

static int view_rank(const mxl_lora_view *v) {
  int r = 0;
  for (int l = 0; l < v->n_layers; l++)
    for (int t = 0; t < MXL_LORA_N_TARGETS; t++)
      if (v->layers[l].t[t].A && v->layers[l].t[t].rank > r) r = v->layers[l].t[t].rank;
  return r;
}

int mxl_lora_stack_rank(const mxl_lora_stack *lora) {
  int most = 0;
  for (int r = 0; r < n_runs(lora); r++) {
    mxl_lora_run run = run_at(lora, r, 0);
    int sum = 0;
    for (int u = 0; u < run.n_uses; u++) {
      const mxl_lora_view *v;
      float scale;
      use_at(lora, &run, u, &v, &scale);
      sum += view_rank(v);
    }
    if (sum > most) most = sum;
  }
  return most;
}

/* A growing segment list in acts->segs. */
typedef struct seg_list {
  mxl_layer_acts *acts;
  int n;
  int64_t t_floats;
  mxl_status status;
} seg_list;

static void seg_push(seg_list *l, int row0, int rows, const mxl_lora_mat *L, float scale,
                     size_t a_off, size_t b_off, const mxl_lora_mat *G) {
  mxl_layer_acts *a = l->acts;
  if (l->status != MXL_OK) return;
  if (l->n == a->segs_cap) {
    int cap = a->segs_cap ? 2 * a->segs_cap : 64;
    mxl_lora_seg *grown = realloc(a->segs, (size_t)cap * sizeof *grown);
    if (!grown) {
      l->status = mxl_errorf(MXL_ERR_MEMORY, "LoRA segments: out of memory");
      return;
    }
    a->segs = grown;
    a->segs_cap = cap;
  }
  mxl_lora_seg *g = &a->segs[l->n++];
  g->row0 = row0;
  g->rows = rows;
  g->rank = L->rank;
  g->scale = L->scale * scale;
  g->A = L->A + a_off;
  g->B = L->B + b_off;
  g->dA = G ? G->A + a_off : NULL;
  g->dB = G ? G->B + b_off : NULL;
  g->t_off = l->t_floats;
  l->t_floats += (int64_t)rows * L->rank;
}

/* Segments of a dense (attention) target over token rows: per run, per
 * adapter that adapts it. `grads` (training) receives dA/dB of the first
 * adapter. */
static mxl_status dense_segments(int layer, const mxl_lora_stack *lora, int target,
                                 const mxl_lora_view *grads, mxl_layer_acts *acts, int *n_out) {
  seg_list l = {acts, 0, 0, MXL_OK};
  for (int r = 0; r < n_runs(lora); r++) {
    mxl_lora_run run = run_at(lora, r, acts->n);
    for (int u = 0; u < run.n_uses; u++) {
      const mxl_lora_view *v;
      float scale;
      use_at(lora, &run, u, &v, &scale);
      const mxl_lora_mat *L = &v->layers[layer].t[target];
      if (!L->A || run.rows == 0) continue;
      const mxl_lora_mat *G = grads && u == 0 ? &grads->layers[layer].t[target] : NULL;
      seg_push(&l, run.row0, run.rows, L, scale, 0, 0, G);
    }
  }
  *n_out = l.n;
  return l.status;
}

/* Whether the rows of a run can be found from the expert offsets alone:
 * one run covering every token. */
static int one_run_for_all(const mxl_lora_stack *lora, int n_tokens) {
  if (n_runs(lora) != 1) return 0;
  mxl_lora_run run = run_at(lora, 0, n_tokens);
  return run.row0 == 0 && run.rows == n_tokens;
}

/* Segments of an expert target over grouped rows: per expert, per run of
 * its rows that belong to one run of tokens (stable grouping keeps each
 * expert's rows in token order), per adapter. */
static mxl_status expert_segments(const mxl_engine *e, int layer, const mxl_lora_stack *lora,
                                  int target, const mxl_lora_view *grads, mxl_layer_acts *acts,
                                  int *n_out) {
  seg_list l = {acts, 0, 0, MXL_OK};
  const int k = e->cfg->experts_per_token, n_tok = acts->n, t0 = acts->moe_row0;
  const size_t I = (size_t)e->cfg->intermediate, H = (size_t)e->cfg->hidden;
  const size_t in = target == MXL_LORA_GATE_UP ? H : I, out = target == MXL_LORA_GATE_UP ? 2 * I : H;
  const int32_t *off = acts->offsets_host;
  const int simple = one_run_for_all(lora, n_tok);
  for (int ex = 0; n_runs(lora) > 0 && ex < e->cfg->n_experts; ex++) {
    for (int i = off[ex]; i < off[ex + 1];) {
      int r = simple ? 0 : acts->row_run[t0 + acts->order_host[i] / k], j = i + 1;
      if (simple) j = off[ex + 1];
      else
        while (j < off[ex + 1] && acts->row_run[t0 + acts->order_host[j] / k] == r) j++;
      if (r < 0) {
        i = j;
        continue;
      }
      mxl_lora_run run = run_at(lora, r, n_tok);
      for (int u = 0; u < run.n_uses; u++) {
        const mxl_lora_view *v;
        float scale;
        use_at(lora, &run, u, &v, &scale);
        const mxl_lora_mat *L = &v->layers[layer].t[target];
        if (!L->A) continue;
        const mxl_lora_mat *G = grads && u == 0 ? &grads->layers[layer].t[target] : NULL;
        seg_push(&l, i, j - i, L, scale, (size_t)ex * L->rank * in, (size_t)ex * out * L->rank,
                 G);
      }
      i = j;
    }
  }
  *n_out = l.n;
  return l.status;
}

/* y[rows, out] += scale·(x·Aᵀ)·Bᵀ for one dense target, over every adapter
 * of every row. */
static mxl_status lora_dense(mxl_engine *e, int layer, const mxl_lora_stack *lora, int target,
                             const float *x, int in, int out, float *y, mxl_layer_acts *acts) {
  int n = 0;
  MXL_TRY(dense_segments(layer, lora, target, NULL, acts, &n));
  if (n == 0) return MXL_OK;
  const float *input = x;
  float p = lora->train ? lora->views[0]->dropout : 0.0f;
  if (p > 0) {
    e->ops->dropout(e->be, acts->lora_in, x, (size_t)acts->n * in, p,
                    mxl_lora_dropout_seed(lora->seed, layer, target));
    input = acts->lora_in;
  }
  e->ops->lora(e->be, y, acts->lora_t[target], input, acts->segs, n, in, out);
  return MXL_OK;
}

/* The same per expert over its grouped rows: A [E][R, in], B [E][out, R]. */
static mxl_status lora_experts(mxl_engine *e, int layer, const mxl_lora_stack *lora, int target,
                               const float *x, int in, int out, float *y, mxl_layer_acts *acts) {
  int n = 0;
  MXL_TRY(expert_segments(e, layer, lora, target, NULL, acts, &n));
  if (n > 0) e->ops->lora(e->be, y, acts->lora_t[target], x, acts->segs, n, in, out);
  return MXL_OK;
}

mxl_status mxl_lora_segments(const mxl_engine *e, int layer, const mxl_lora_stack *lora,
                             int target, const mxl_lora_view *grads, mxl_layer_acts *acts,
                             int *n_out) {
  if (target == MXL_LORA_GATE_UP || target == MXL_LORA_DOWN)
    return expert_segments(e, layer, lora, target, grads, acts, n_out);
  return dense_segments(layer, lora, target, grads, acts, n_out);
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
  MXL_TRY(lora_dense(e, layer, lora, MXL_LORA_Q, acts->a, H, qd, acts->q, acts));
  MXL_TRY(lora_dense(e, layer, lora, MXL_LORA_K, acts->a, H, kvd, acts->k, acts));
  MXL_TRY(lora_dense(e, layer, lora, MXL_LORA_V, acts->a, H, kvd, acts->v, acts));
  ops->rope(e->be, acts->q, n, c->n_heads, d, pos, e->inv_freq, e->concentration,
            e->w.qk_interleaved, 0);
  ops->rope(e->be, acts->k, n, c->n_kv_heads, d, pos, e->inv_freq, e->concentration,
            e->w.qk_interleaved, 0);
  MXL_TRY(attend(attend_user, e, layer, acts));
  /* o_proj (+LoRA) straight into x_mid, then the residual: proj + x is
   * x + proj in fp32, so no buffer for proj */
  ops->matmul_bf16(e->be, acts->x_mid, acts->ctx, &w->o, n);
  MXL_TRY(lora_dense(e, layer, lora, MXL_LORA_O, acts->ctx, qd, H, acts->x_mid, acts));
  ops->add(e->be, acts->x_mid, x, (size_t)n * H);
  return MXL_OK;
}

/* ---------------------------------------------------------------- MoE half */

/* Mixed batches: which run each token row belongs to, so that expert
 * segments can follow the runs (with the chunk's grouped order on the host,
 * chunk_order_host). */
static void prepare_row_runs(const mxl_lora_stack *lora, mxl_layer_acts *acts) {
  const int n = acts->n;
  if (n_runs(lora) == 0 || one_run_for_all(lora, n)) return;
  for (int t = 0; t < n; t++) acts->row_run[t] = -1;
  for (int r = 0; r < lora->n_runs; r++)
    for (int t = lora->runs[r].row0; t < lora->runs[r].row0 + lora->runs[r].rows; t++)
      acts->row_run[t] = r;
}

static mxl_status chunk_order_host(mxl_engine *e, const mxl_lora_stack *lora,
                                   mxl_layer_acts *acts) {
  const int m = acts->moe_n * e->cfg->experts_per_token;
  if (n_runs(lora) == 0 || one_run_for_all(lora, acts->n)) return MXL_OK;
  e->ops->download(e->be, acts->order_host, acts->order, (size_t)m * sizeof(int32_t));
  return e->ops->sync(e->be);
}

mxl_moe_plan mxl_layer_plan(const mxl_engine *e, const mxl_layer_acts *acts) {
  const int k = e->cfg->experts_per_token;
  mxl_moe_plan p = {
      .n_tokens = acts->moe_n,
      .k = k,
      .n_experts = e->cfg->n_experts,
      .experts = acts->experts + (size_t)acts->moe_row0 * k,
      .weights = acts->weights + (size_t)acts->moe_row0 * k,
      .order = acts->order,
      .slot = acts->slot,
      .offsets = acts->offsets,
      .offsets_host = acts->offsets_host,
  };
  return p;
}

void mxl_moe_route(mxl_engine *e, int layer, const mxl_lora_stack *lora, mxl_layer_acts *acts) {
  const mxl_ops *ops = e->ops;
  const mxl_config *c = e->cfg;
  const mxl_layer_weights *w = &e->w.layers[layer];
  const int n = acts->n;
  ops->rmsnorm(e->be, acts->mlp_in, acts->rstd_m, acts->x_mid, w->mlp_norm, n, c->hidden,
               c->rms_eps);
  mxl_bf16_weight router = w->router;
  router.fp32_act = 1; /* its logits choose experts (ops.h) */
  ops->matmul_bf16(e->be, acts->router_logits, acts->mlp_in, &router, n);
  ops->router_topk(e->be, acts->experts, acts->weights, acts->router_logits, n, c->n_experts,
                   c->experts_per_token);
  prepare_row_runs(lora, acts);
}

mxl_status mxl_moe_chunk(mxl_engine *e, int layer, const mxl_lora_stack *lora,
                         mxl_layer_acts *acts, int row0, int rows, float *x_out) {
  const mxl_ops *ops = e->ops;
  const mxl_config *c = e->cfg;
  const mxl_layer_weights *w = &e->w.layers[layer];
  const int H = c->hidden, I = c->intermediate, E = c->n_experts;
  const int k = c->experts_per_token;
  acts->moe_row0 = row0;
  acts->moe_n = rows;
  ops->moe_plan(e->be, acts->order, acts->slot, acts->offsets, acts->experts + (size_t)row0 * k,
                rows, k, E);
  ops->download(e->be, acts->offsets_host, acts->offsets, (E + 1) * sizeof(int32_t));
  MXL_TRY(ops->sync(e->be));
  MXL_TRY(chunk_order_host(e, lora, acts));
  mxl_moe_plan plan = mxl_layer_plan(e, acts);

  ops->moe_gather(e->be, acts->xs, acts->mlp_in + (size_t)row0 * H, &plan, H);
  ops->mxfp4_matmul(e->be, acts->h, acts->xs, &w->gate_up, &plan);
  MXL_TRY(lora_experts(e, layer, lora, MXL_LORA_GATE_UP, acts->xs, H, 2 * I, acts->h, acts));
  ops->swiglu(e->be, acts->act, acts->h, rows * k, I, c->swiglu_alpha, c->swiglu_limit);
  ops->mxfp4_matmul(e->be, acts->ys, acts->act, &w->down, &plan);
  MXL_TRY(lora_experts(e, layer, lora, MXL_LORA_DOWN, acts->act, I, H, acts->ys, acts));
  if (x_out) ops->moe_combine(e->be, x_out + (size_t)row0 * H, acts->ys, &plan, H);
  return MXL_OK;
}

mxl_status mxl_moe_half(mxl_engine *e, int layer, const mxl_lora_stack *lora,
                        mxl_layer_acts *acts, float *x_out) {
  const int n = acts->n;
  mxl_moe_route(e, layer, lora, acts);
  e->ops->copy(e->be, x_out, acts->x_mid, (size_t)n * e->cfg->hidden * sizeof(float));
  for (int row0 = 0; row0 < n; row0 += acts->moe_chunk) {
    int rows = n - row0 < acts->moe_chunk ? n - row0 : acts->moe_chunk;
    MXL_TRY(mxl_moe_chunk(e, layer, lora, acts, row0, rows, x_out));
  }
  return MXL_OK;
}
