#include "model/train_step.h"

#include <stdlib.h>
#include <string.h>

#include "core/status.h"

/* Gradient scratch of one layer's backward (n tokens, m = n·k rows). */
typedef struct grad_bufs {
  float *dx;       /* [n, H] gradient of the residual stream entering the current layer's output */
  float *dxmid;    /* [n, H] */
  float *dmlp;     /* [n, H] gradient of the MoE-norm output */
  float *da;       /* [n, H] gradient of the attention-norm output */
  float *dys;      /* [m, H] */
  float *dact;     /* [m, I] */
  float *dh;       /* [m, 2I] */
  float *dxs;      /* [m, H] */
  float *dweights; /* [n, k] */
  float *dlogits;  /* [n, E] */
  float *dctx;     /* [n, nh·d] */
  float *dq;       /* [n, nh·d] */
  float *dk, *dv;  /* [n, nkv·d] */
  float *ddrop;    /* [n, max(H, nh·d)] LoRA dx before the dropout backward */
} grad_bufs;

static void carve_grads(const mxl_config *c, int n, grad_bufs *g, mxl_carver *cv) {
  const size_t H = c->hidden, I = c->intermediate, m = (size_t)n * c->experts_per_token;
  const size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
  g->dx = mxl_carve(cv, n * H, 4);
  g->dxmid = mxl_carve(cv, n * H, 4);
  g->dmlp = mxl_carve(cv, n * H, 4);
  g->da = mxl_carve(cv, n * H, 4);
  g->dys = mxl_carve(cv, m * H, 4);
  g->dact = mxl_carve(cv, m * I, 4);
  g->dh = mxl_carve(cv, m * 2 * I, 4);
  g->dxs = mxl_carve(cv, m * H, 4);
  g->dweights = mxl_carve(cv, m, 4);
  g->dlogits = mxl_carve(cv, (size_t)n * c->n_experts, 4);
  g->dctx = mxl_carve(cv, n * qd, 4);
  g->dq = mxl_carve(cv, n * qd, 4);
  g->dk = mxl_carve(cv, n * kvd, 4);
  g->dv = mxl_carve(cv, n * kvd, 4);
  g->ddrop = mxl_carve(cv, n * (qd > H ? qd : H), 4);
}

typedef struct batch_dev {
  int32_t *tokens, *targets, *pos, *seg; /* [n] */
  float *weights, *loss;                 /* [n] */
} batch_dev;

static batch_dev carve_batch(int n, mxl_carver *cv) {
  batch_dev b;
  b.tokens = mxl_carve(cv, n, 4);
  b.targets = mxl_carve(cv, n, 4);
  b.pos = mxl_carve(cv, n, 4);
  b.seg = mxl_carve(cv, n, 4);
  b.weights = mxl_carve(cv, n, 4);
  b.loss = mxl_carve(cv, n, 4);
  return b;
}

size_t mxl_train_state_bytes(const mxl_config *cfg, int n, int lora_rank) {
  const size_t H = cfg->hidden, L = cfg->n_layers;
  grad_bufs g;
  mxl_carver grads = {0}, batch = {0};
  carve_grads(cfg, n, &g, &grads);
  carve_batch(n, &batch);
  return mxl_layer_acts_bytes(cfg, n, lora_rank) + (L + 1) * n * H * sizeof(float) +
         n * H * sizeof(float) + n * sizeof(float) + grads.used + batch.used;
}

static mxl_status reserve(mxl_engine *e, mxl_train_state *st, int n, int rank, grad_bufs *g,
                          batch_dev *b) {
  const size_t H = e->cfg->hidden, L = e->cfg->n_layers;
  MXL_TRY(mxl_layer_acts_reserve(e, &st->acts, n, rank));
  MXL_TRY(mxl_buffer_reserve(e->be, &st->inputs, (L + 1) * n * H * sizeof(float)));
  MXL_TRY(mxl_buffer_reserve(e->be, &st->normed, n * H * sizeof(float)));
  MXL_TRY(mxl_buffer_reserve(e->be, &st->rstd, n * sizeof(float)));
  mxl_carver sizing = {0};
  carve_grads(e->cfg, n, g, &sizing);
  MXL_TRY(mxl_buffer_reserve(e->be, &st->grads, sizing.used));
  mxl_carver cv = {st->grads.ptr, 0};
  carve_grads(e->cfg, n, g, &cv);
  mxl_carver bsize = {0};
  carve_batch(n, &bsize);
  MXL_TRY(mxl_buffer_reserve(e->be, &st->batch, bsize.used));
  mxl_carver bc = {st->batch.ptr, 0};
  *b = carve_batch(n, &bc);
  if (st->cap_n < n) {
    float *loss = realloc(st->host_loss, n * sizeof(float));
    if (!loss) return mxl_errorf(MXL_ERR_MEMORY, "training step: out of memory");
    st->host_loss = loss;
    st->cap_n = n;
  }
  return MXL_OK;
}

/* ---------------------------------------------------------------- attention over the batch */

typedef struct batch_attend {
  const mxl_train_batch *batch;
  const batch_dev *dev;
} batch_attend;

static mxl_attn_group sequence_group(const mxl_engine *e, int layer, const mxl_layer_acts *a,
                                     const batch_attend *ba, int b) {
  const int T = ba->batch->seq_len, row0 = b * T;
  const size_t kvd = (size_t)e->cfg->n_kv_heads * e->cfg->head_dim;
  mxl_attn_group g = {
      .q_row0 = row0,
      .nq = T,
      .k = a->k + row0 * kvd,
      .v = a->v + row0 * kvd,
      .nk = T,
      .mask = {.q_pos = ba->dev->pos + row0,
               .q_seg = ba->dev->seg + row0,
               .k_pos = ba->dev->pos + row0,
               .k_seg = ba->dev->seg + row0,
               .window = e->cfg->layer_sliding[layer] ? e->cfg->sliding_window : 0},
  };
  return g;
}

static mxl_status attend_batch(void *user, mxl_engine *e, int layer, mxl_layer_acts *a) {
  const batch_attend *ba = user;
  for (int b = 0; b < ba->batch->n_seq; b++) {
    mxl_attn_group g = sequence_group(e, layer, a, ba, b);
    mxl_attend_group(e, layer, a, &g);
  }
  return MXL_OK;
}

/* ---------------------------------------------------------------- LoRA backward */

/* For y += s·(x'·Aᵀ)·Bᵀ with x' = dropout(x) (or x), given dy, the op
 * computes dB += s·dyᵀ·t, dA += dtᵀ·x' and dx' += dt·A with dt = s·dy·B;
 * through dropout, dx += dropout'(dx'). The segments are the forward's. */
static mxl_status lora_grad(mxl_engine *e, int layer, const mxl_lora_stack *lora,
                            const mxl_lora_view *grads, int target, const float *x, int in,
                            int out, const float *dy, float *dx, mxl_layer_acts *acts,
                            const grad_bufs *g) {
  const mxl_ops *ops = e->ops;
  int n_segs = 0;
  MXL_TRY(mxl_lora_segments(e, layer, lora, target, grads, acts, &n_segs));
  if (n_segs == 0) return MXL_OK;
  int expert = target == MXL_LORA_GATE_UP || target == MXL_LORA_DOWN;
  float p = expert ? 0.0f : lora->views[0]->dropout;
  if (p <= 0) {
    ops->lora_bwd(e->be, dx, dy, x, acts->lora_t[target], acts->segs, n_segs, in, out);
    return MXL_OK;
  }
  uint64_t seed = mxl_lora_dropout_seed(lora->seed, layer, target);
  size_t count = (size_t)acts->n * in;
  ops->dropout(e->be, acts->lora_in, x, count, p, seed);
  ops->zero(e->be, g->ddrop, count * sizeof(float));
  ops->lora_bwd(e->be, g->ddrop, dy, acts->lora_in, acts->lora_t[target], acts->segs, n_segs,
                in, out);
  ops->dropout(e->be, g->ddrop, g->ddrop, count, p, seed);
  ops->add(e->be, dx, g->ddrop, count);
  return MXL_OK;
}

/* ---------------------------------------------------------------- layer backward */

/* Given g->dx = ∂loss/∂x_out of layer l (x_out = x_mid + MoE(x_mid)), leaves
 * g->dxmid = ∂loss/∂x_mid. */
static mxl_status moe_backward(mxl_engine *e, int l, const mxl_lora_stack *lora,
                               const mxl_lora_view *grads, mxl_layer_acts *a,
                               const grad_bufs *g) {
  const mxl_ops *ops = e->ops;
  const mxl_config *c = e->cfg;
  const mxl_layer_weights *w = &e->w.layers[l];
  const int n = a->n, H = c->hidden, I = c->intermediate, E = c->n_experts;
  const int k = c->experts_per_token, m = n * k;
  mxl_moe_plan plan = mxl_layer_plan(e, a);

  ops->copy(e->be, g->dxmid, g->dx, (size_t)n * H * sizeof(float));
  ops->zero(e->be, g->dys, (size_t)m * H * sizeof(float));
  ops->zero(e->be, g->dweights, (size_t)m * sizeof(float));
  ops->moe_combine_bwd(e->be, g->dys, g->dweights, g->dx, a->ys, &plan, H);

  ops->zero(e->be, g->dact, (size_t)m * I * sizeof(float));
  MXL_TRY(lora_grad(e, l, lora, grads, MXL_LORA_DOWN, a->act, I, H, g->dys, g->dact, a, g));
  ops->mxfp4_matmul_dx(e->be, g->dact, g->dys, &w->down, &plan);

  ops->zero(e->be, g->dh, (size_t)m * 2 * I * sizeof(float));
  ops->swiglu_bwd(e->be, g->dh, g->dact, a->h, m, I, c->swiglu_alpha, c->swiglu_limit);

  ops->zero(e->be, g->dxs, (size_t)m * H * sizeof(float));
  MXL_TRY(lora_grad(e, l, lora, grads, MXL_LORA_GATE_UP, a->xs, H, 2 * I, g->dh, g->dxs, a, g));
  ops->mxfp4_matmul_dx(e->be, g->dxs, g->dh, &w->gate_up, &plan);

  ops->zero(e->be, g->dmlp, (size_t)n * H * sizeof(float));
  ops->moe_gather_bwd(e->be, g->dmlp, g->dxs, &plan, H);
  ops->zero(e->be, g->dlogits, (size_t)n * E * sizeof(float));
  ops->router_bwd(e->be, g->dlogits, g->dweights, a->weights, a->experts, n, E, k);
  ops->matmul_bf16_dx(e->be, g->dmlp, g->dlogits, &w->router, n);
  ops->rmsnorm_bwd(e->be, g->dxmid, g->dmlp, a->x_mid, a->rstd_m, w->mlp_norm, n, H,
                   c->rms_eps);
  return MXL_OK;
}

/* Given g->dxmid, leaves g->dx = ∂loss/∂x (the layer input). */
static mxl_status attention_backward(mxl_engine *e, int l, const mxl_lora_stack *lora,
                                     const mxl_lora_view *grads, const float *x,
                                     mxl_layer_acts *a, const grad_bufs *g,
                                     const batch_attend *ba) {
  const mxl_ops *ops = e->ops;
  const mxl_config *c = e->cfg;
  const mxl_layer_weights *w = &e->w.layers[l];
  const int n = a->n, H = c->hidden, d = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads;
  const int qd = nh * d, kvd = nkv * d;

  ops->copy(e->be, g->dx, g->dxmid, (size_t)n * H * sizeof(float));
  ops->zero(e->be, g->dctx, (size_t)n * qd * sizeof(float));
  MXL_TRY(lora_grad(e, l, lora, grads, MXL_LORA_O, a->ctx, qd, H, g->dxmid, g->dctx, a, g));
  ops->matmul_bf16_dx(e->be, g->dctx, g->dxmid, &w->o, n);

  ops->zero(e->be, g->dq, (size_t)n * qd * sizeof(float));
  ops->zero(e->be, g->dk, (size_t)n * kvd * sizeof(float));
  ops->zero(e->be, g->dv, (size_t)n * kvd * sizeof(float));
  for (int b = 0; b < ba->batch->n_seq; b++) {
    mxl_attn_group s = sequence_group(e, l, a, ba, b);
    size_t q0 = (size_t)s.q_row0 * qd, k0 = (size_t)s.q_row0 * kvd;
    ops->attention_bwd(e->be, g->dq + q0, g->dk + k0, g->dv + k0, g->dctx + q0, a->ctx + q0,
                       a->lse + (size_t)s.q_row0 * nh, a->q + q0, s.k, s.v, w->sinks, &s.mask,
                       s.nq, s.nk, nh, nkv, d, e->w.attn_scale);
  }
  ops->rope(e->be, g->dq, n, nh, d, ba->dev->pos, e->inv_freq, e->concentration,
            e->w.qk_interleaved, 1);
  ops->rope(e->be, g->dk, n, nkv, d, ba->dev->pos, e->inv_freq, e->concentration,
            e->w.qk_interleaved, 1);

  ops->zero(e->be, g->da, (size_t)n * H * sizeof(float));
  MXL_TRY(lora_grad(e, l, lora, grads, MXL_LORA_Q, a->a, H, qd, g->dq, g->da, a, g));
  MXL_TRY(lora_grad(e, l, lora, grads, MXL_LORA_K, a->a, H, kvd, g->dk, g->da, a, g));
  MXL_TRY(lora_grad(e, l, lora, grads, MXL_LORA_V, a->a, H, kvd, g->dv, g->da, a, g));
  ops->matmul_bf16_dx(e->be, g->da, g->dq, &w->q, n);
  ops->matmul_bf16_dx(e->be, g->da, g->dk, &w->k, n);
  ops->matmul_bf16_dx(e->be, g->da, g->dv, &w->v, n);
  ops->rmsnorm_bwd(e->be, g->dx, g->da, x, a->rstd_a, w->attn_norm, n, H, c->rms_eps);
  return MXL_OK;
}

/* ---------------------------------------------------------------- the step */

static mxl_status check_batch(const mxl_engine *e, const mxl_train_batch *b,
                              const mxl_lora_stack *lora, int training) {
  if (b->n_seq <= 0 || b->seq_len <= 0)
    return mxl_errorf(MXL_ERR_ARGUMENT, "training batch: %d sequences of %d tokens", b->n_seq,
                      b->seq_len);
  if (training && (!lora || lora->n != 1))
    return mxl_errorf(MXL_ERR_ARGUMENT, "training needs exactly one adapter (got %d)",
                      lora ? lora->n : 0);
  const int n = b->n_seq * b->seq_len;
  for (int i = 0; i < n; i++) {
    if (b->tokens[i] < 0 || b->tokens[i] >= e->w.vocab_rows)
      return mxl_errorf(MXL_ERR_ARGUMENT, "training batch, row %d: token id %d outside 0..%d",
                        i, b->tokens[i], e->w.vocab_rows - 1);
    if (b->weights[i] != 0 && (b->targets[i] < 0 || b->targets[i] >= e->w.vocab_rows))
      return mxl_errorf(MXL_ERR_ARGUMENT, "training batch, row %d: target id %d outside 0..%d",
                        i, b->targets[i], e->w.vocab_rows - 1);
  }
  return MXL_OK;
}

static void upload_batch(mxl_engine *e, const mxl_train_batch *b, const batch_dev *d, int n) {
  const mxl_ops *ops = e->ops;
  ops->upload(e->be, d->tokens, b->tokens, n * sizeof(int32_t));
  ops->upload(e->be, d->targets, b->targets, n * sizeof(int32_t));
  ops->upload(e->be, d->pos, b->pos, n * sizeof(int32_t));
  ops->upload(e->be, d->seg, b->seg, n * sizeof(int32_t));
  ops->upload(e->be, d->weights, b->weights, n * sizeof(float));
}

mxl_status mxl_train_step(mxl_engine *e, mxl_train_state *st, const mxl_train_batch *batch,
                          const mxl_lora_stack *lora, const mxl_lora_view *grads,
                          double *loss_out) {
  *loss_out = 0;
  MXL_TRY(check_batch(e, batch, lora, grads != NULL));
  const mxl_ops *ops = e->ops;
  const mxl_config *c = e->cfg;
  const int n = batch->n_seq * batch->seq_len, H = c->hidden, L = c->n_layers;
  grad_bufs g;
  batch_dev dev;
  MXL_TRY(reserve(e, st, n, mxl_lora_stack_rank(lora), &g, &dev));
  upload_batch(e, batch, &dev, n);
  batch_attend ba = {batch, &dev};
  float *inputs = st->inputs.ptr;
  const size_t plane = (size_t)n * H;

  /* Forward: keep every layer's input; everything else is recomputed. */
  if (batch->inputs)
    ops->upload(e->be, inputs, batch->inputs, plane * sizeof(float));
  else
    ops->embed(e->be, inputs, e->w.embed.w, dev.tokens, n, H);
  /* Each layer's weights leave the resident set when a pass is done with
   * them (mxl_engine_drop_pages): the last layer's stay for the backward. */
  for (int l = 0; l < L; l++) {
    MXL_TRY(mxl_attention_half(e, l, lora, inputs + l * plane, dev.pos, &st->acts, attend_batch,
                               &ba));
    MXL_TRY(mxl_moe_half(e, l, lora, &st->acts, inputs + (l + 1) * plane));
    if (l != L - 1) mxl_engine_drop_pages(e, l);
  }
  ops->rmsnorm(e->be, st->normed.ptr, st->rstd.ptr, inputs + L * plane, e->w.final_norm, n, H,
               c->rms_eps);
  ops->zero(e->be, g.da, plane * sizeof(float));
  ops->unembed_xent(e->be, dev.loss, grads ? g.da : NULL, st->normed.ptr, &e->w.unembed,
                    dev.targets, dev.weights, n);
  ops->download(e->be, st->host_loss, dev.loss, n * sizeof(float));
  MXL_TRY(ops->sync(e->be));
  mxl_engine_drop_pages(e, -1);
  double loss = 0;
  for (int i = 0; i < n; i++) loss += (double)batch->weights[i] * st->host_loss[i];
  *loss_out = loss;
  if (!grads) return MXL_OK;

  /* Backward, one recomputed layer at a time. */
  ops->zero(e->be, g.dx, plane * sizeof(float));
  ops->rmsnorm_bwd(e->be, g.dx, g.da, inputs + L * plane, st->rstd.ptr, e->w.final_norm, n, H,
                   c->rms_eps);
  for (int l = L - 1; l >= 0; l--) {
    const float *x = inputs + l * plane;
    if (l != L - 1) { /* the last layer's activations are still in the tape */
      MXL_TRY(mxl_attention_half(e, l, lora, x, dev.pos, &st->acts, attend_batch, &ba));
      MXL_TRY(mxl_moe_half(e, l, lora, &st->acts, inputs + (l + 1) * plane));
    }
    MXL_TRY(moe_backward(e, l, lora, grads, &st->acts, &g));
    MXL_TRY(attention_backward(e, l, lora, grads, x, &st->acts, &g, &ba));
    mxl_engine_drop_pages(e, l);
  }
  if (batch->input_grads) ops->download(e->be, batch->input_grads, g.dx, plane * sizeof(float));
  return ops->sync(e->be);
}

void mxl_train_state_release(mxl_engine *e, mxl_train_state *st) {
  mxl_layer_acts_release(e, &st->acts);
  mxl_buffer *bufs[] = {&st->inputs, &st->normed, &st->rstd, &st->grads, &st->batch};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) mxl_buffer_release(e->be, bufs[i]);
  free(st->host_loss);
  memset(st, 0, sizeof *st);
}
