#include "model/train_step.h"

#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "kernels/backend_memory.h"

/* Gradient scratch of one layer's backward (n tokens; the MoE part holds
 * one chunk of c tokens, mc = c·k routed rows). The gradients that the
 * attention's backward accumulates lie in one span, those of the MoE's in
 * another, so that each backward clears its own with one op (a clear per
 * buffer was 75 single-threaded clears per step of the bench preset). */
typedef struct grad_bufs {
  float *dx;       /* [n, H] gradient of the residual stream, updated in place through a layer:
                      ∂loss/∂x_out, then ∂loss/∂x_mid, then ∂loss/∂x (the layer's input) */
  /* the attention span */
  float *da;       /* [n, H] gradient of the attention-norm output */
  float *dctx;     /* [n, nh·d] */
  float *dq;       /* [n, nh·d] */
  float *dk, *dv;  /* [n, nkv·d] */
  /* the MoE span */
  float *dmlp;     /* [c, H] gradient of the MoE-norm output */
  float *dys;      /* [mc, H] */
  float *dact;     /* [mc, I] */
  float *dh;       /* [mc, 2I] */
  float *dxs;      /* [mc, H] */
  float *dweights; /* [mc] */
  float *dlogits;  /* [c, E] */
  size_t attn_bytes, moe_bytes; /* the spans from da and from dmlp */
  float *ddrop;    /* [n, max(H, nh·d)] LoRA dx before the dropout backward (with dropout) */
} grad_bufs;

static void carve_grads(const mxl_config *c, int n, int moe_chunk, int dropout, grad_bufs *g,
                        mxl_carver *cv) {
  const size_t H = c->hidden, I = c->intermediate, chunk = mxl_moe_chunk_tokens(n, moe_chunk);
  const size_t m = chunk * c->experts_per_token;
  const size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
  g->dx = mxl_carve(cv, n * H, 4);
  size_t at = cv->used;
  g->da = mxl_carve(cv, n * H, 4);
  g->dctx = mxl_carve(cv, n * qd, 4);
  g->dq = mxl_carve(cv, n * qd, 4);
  g->dk = mxl_carve(cv, n * kvd, 4);
  g->dv = mxl_carve(cv, n * kvd, 4);
  g->attn_bytes = cv->used - at;
  at = cv->used;
  g->dmlp = mxl_carve(cv, chunk * H, 4);
  g->dys = mxl_carve(cv, m * H, 4);
  g->dact = mxl_carve(cv, m * I, 4);
  g->dh = mxl_carve(cv, m * 2 * I, 4);
  g->dxs = mxl_carve(cv, m * H, 4);
  g->dweights = mxl_carve(cv, m, 4);
  g->dlogits = mxl_carve(cv, chunk * c->n_experts, 4);
  g->moe_bytes = cv->used - at;
  g->ddrop = dropout ? mxl_carve(cv, n * (qd > H ? qd : H), 4) : NULL;
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

int mxl_train_moe_chunk(const mxl_train_state *st, int host_memory) {
  if (st->moe_chunk > 0) return st->moe_chunk;
  return host_memory ? 0 : MXL_TRAIN_MOE_CHUNK;
}

int mxl_train_offloads(const mxl_train_state *st, int host_memory) {
  return !host_memory && !st->keep_inputs;
}

/* Layer inputs x_0 .. x_{L-2} go to host memory when offloading: x_{L-1}
 * and x_L are still in the ring when the backward starts. */
static size_t offloaded_planes(const mxl_config *cfg) {
  return cfg->n_layers > 1 ? (size_t)cfg->n_layers - 1 : 0;
}

/* Planes of [n, H] that st->inputs holds on the backend. */
static size_t device_planes(const mxl_config *cfg, int offload) {
  return offload ? 2 : (size_t)cfg->n_layers + 1;
}

size_t mxl_train_offload_bytes(const mxl_config *cfg, int n) {
  return offloaded_planes(cfg) * (size_t)n * cfg->hidden * sizeof(float);
}

size_t mxl_train_keep_bytes(const mxl_config *cfg, int n, int moe_chunk, int lora_rank,
                            int dropout) {
  const size_t tapes = cfg->n_layers > 1 ? (size_t)cfg->n_layers - 1 : 0;
  return tapes * mxl_layer_tape_bytes(cfg, n, moe_chunk, lora_rank, dropout);
}

size_t mxl_train_state_bytes(const mxl_config *cfg, int n, int moe_chunk, int lora_rank,
                             int dropout, int offload, int keep) {
  const size_t H = cfg->hidden;
  grad_bufs g;
  mxl_carver grads = {0}, batch = {0};
  carve_grads(cfg, n, moe_chunk, dropout, &g, &grads);
  carve_batch(n, &batch);
  return mxl_layer_acts_bytes(cfg, n, moe_chunk, lora_rank, dropout) +
         (keep ? mxl_train_keep_bytes(cfg, n, moe_chunk, lora_rank, dropout) : 0) +
         device_planes(cfg, offload) * n * H * sizeof(float) + n * H * sizeof(float) +
         n * sizeof(float) + grads.used + batch.used;
}

/* A mode's index in its three words (-1: none); the word of an index. */
static int mode_index(const char *const names[3], const char *text) {
  for (int i = 0; i < 3; i++)
    if (!strcmp(text, names[i])) return i;
  return -1;
}

static const char *mode_word(const char *const names[3], int mode) {
  return names[mode >= 0 && mode < 3 ? mode : 0];
}

static const char *const keep_names[] = {"auto", "true", "false"};
static const char *const resident_names[] = {"auto", "keep", "drop"};

mxl_status mxl_keep_mode_parse(const char *text, int *mode) {
  int i = mode_index(keep_names, text);
  if (i < 0)
    return mxl_errorf(MXL_ERR_ARGUMENT, "keep_activations \"%s\": expected auto, true or false",
                      text);
  *mode = i;
  return MXL_OK;
}

const char *mxl_keep_mode_name(int mode) { return mode_word(keep_names, mode); }

mxl_status mxl_resident_mode_parse(const char *text, int *mode) {
  int i = mode_index(resident_names, text);
  if (i < 0)
    return mxl_errorf(MXL_ERR_ARGUMENT, "resident \"%s\": expected auto, keep or drop", text);
  *mode = i;
  return MXL_OK;
}

const char *mxl_resident_mode_name(int mode) { return mode_word(resident_names, mode); }

int mxl_train_keeps(const mxl_train_state *st, int host_memory, size_t keep_bytes) {
  if (st->keep_activations == MXL_KEEP_ON) return 1;
  if (st->keep_activations == MXL_KEEP_OFF || mxl_train_offloads(st, host_memory)) return 0;
  return keep_bytes <= st->keep_budget;
}

/* The checkpoint's bytes that the step reads in place from its mapped
 * files (copies are allocated memory, already out of what is left). */
static size_t mapped_bytes(const mxl_engine *e) {
  if (!e->ops->host_memory || e->device_files) return 0;
  return mxl_engine_device_bytes(e->model, 0) + mxl_engine_host_bytes(e->model, 0, 0);
}

size_t mxl_train_keep_budget(mxl_engine *e, size_t state_bytes) {
  size_t left = 0;
  if (mxl_backend_memory_left(e->be, &left) != MXL_OK) return 0;
  size_t taken = mapped_bytes(e) + state_bytes;
  return left > taken ? (left - taken) / 4 * 3 : 0;
}

int mxl_train_keeps_pages(size_t mapped, size_t mem_available) {
  return mem_available > 0 && mapped <= mem_available / 4;
}

/* Auto residency, decided once (at the first step, before its allocations). */
static void decide_residency(mxl_engine *e, mxl_train_state *st) {
  if (st->resident != MXL_RESIDENT_AUTO) return;
  size_t mapped = mapped_bytes(e), left = 0;
  int keep = !mapped || (mxl_backend_memory_left(e->be, &left) == MXL_OK &&
                         mxl_train_keeps_pages(mapped, left));
  st->resident = keep ? MXL_RESIDENT_KEEP : MXL_RESIDENT_DROP;
}

static int drops_pages(const mxl_train_state *st) { return st->resident == MXL_RESIDENT_DROP; }

/* Whether the step trains an adapter with LoRA dropout (on the attention
 * inputs: layers.c's forward when lora->train is set, lora_grad here). */
static int trains_dropout(const mxl_lora_stack *lora, int training) {
  return training && lora && !lora->runs && lora->n > 0 && lora->views[0]->dropout > 0;
}

static void release_tapes(mxl_engine *e, mxl_train_state *st) {
  for (int l = 0; st->tapes && l < e->cfg->n_layers - 1; l++)
    mxl_layer_acts_release(e, &st->tapes[l]);
  free(st->tapes);
  st->tapes = NULL;
}

/* Auto mode's budget, measured once: at the first training step, before
 * the step's own allocations. */
static void measure_budget(mxl_engine *e, mxl_train_state *st, int n, int chunk, int rank,
                           int dropout) {
  if (st->keep_activations != MXL_KEEP_AUTO || st->keep_budget != 0) return;
  size_t state = mxl_train_state_bytes(e->cfg, n, chunk, rank, dropout,
                                       mxl_train_offloads(st, e->ops->host_memory), 0);
  size_t budget = mxl_train_keep_budget(e, state);
  st->keep_budget = budget ? budget : 1; /* measured: nothing fits */
}

/* Decides whether a training step keeps its tapes and reserves them; a
 * training step that does not keep lets go of tapes an earlier step kept
 * (an evaluation step leaves them for the next training step). */
static mxl_status reserve_tapes(mxl_engine *e, mxl_train_state *st, int n, int chunk, int rank,
                                int training, int dropout) {
  const int host_memory = e->ops->host_memory;
  const size_t keep_bytes = mxl_train_keep_bytes(e->cfg, n, chunk, rank, dropout);
  st->keeping = training && e->cfg->n_layers > 1 && mxl_train_keeps(st, host_memory, keep_bytes);
  if (!st->keeping) {
    if (training) release_tapes(e, st);
    return MXL_OK;
  }
  if (!st->tapes) {
    st->tapes = calloc((size_t)e->cfg->n_layers - 1, sizeof *st->tapes);
    if (!st->tapes) return mxl_errorf(MXL_ERR_MEMORY, "training step: out of memory");
  }
  for (int l = 0; l < e->cfg->n_layers - 1; l++) {
    mxl_status s = mxl_layer_tape_reserve(e, &st->tapes[l], n, chunk, rank, dropout, &st->acts);
    if (s != MXL_OK)
      return mxl_error_prefix(s, "training step: keeping the activations of %d layers "
                              "(%.2f GB; keep_activations false recomputes them): ",
                              e->cfg->n_layers - 1, keep_bytes / 1e9);
  }
  return MXL_OK;
}

static mxl_status reserve(mxl_engine *e, mxl_train_state *st, int n, int rank, int training,
                          int dropout, grad_bufs *g, batch_dev *b) {
  const size_t H = e->cfg->hidden;
  const int chunk = mxl_train_moe_chunk(st, e->ops->host_memory);
  st->offloading = mxl_train_offloads(st, e->ops->host_memory);
  decide_residency(e, st);
  if (training) measure_budget(e, st, n, chunk, rank, dropout);
  MXL_TRY(mxl_layer_acts_reserve(e, &st->acts, n, chunk, rank, dropout));
  MXL_TRY(reserve_tapes(e, st, n, chunk, rank, training, dropout));
  MXL_TRY(mxl_buffer_reserve(e->be, &st->inputs,
                             device_planes(e->cfg, st->offloading) * n * H * sizeof(float)));
  const size_t offloaded = mxl_train_offload_bytes(e->cfg, n);
  if (training && st->offloading && st->host_inputs_bytes < offloaded) {
    mxl_backend_host_free(e->be, st->host_inputs); /* pinned on CUDA */
    st->host_inputs = mxl_backend_host_alloc(e->be, offloaded);
    st->host_inputs_bytes = st->host_inputs ? offloaded : 0;
    if (!st->host_inputs)
      return mxl_errorf(MXL_ERR_MEMORY,
                        "training step: cannot allocate %zu bytes of host memory for the "
                        "layer inputs",
                        offloaded);
  }
  MXL_TRY(mxl_buffer_reserve(e->be, &st->normed, n * H * sizeof(float)));
  MXL_TRY(mxl_buffer_reserve(e->be, &st->rstd, n * sizeof(float)));
  mxl_carver sizing = {0};
  carve_grads(e->cfg, n, chunk, dropout, g, &sizing);
  MXL_TRY(mxl_buffer_reserve(e->be, &st->grads, sizing.used));
  mxl_carver cv = {st->grads.ptr, 0};
  carve_grads(e->cfg, n, chunk, dropout, g, &cv);
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

/* ---------------------------------------------------------------- layer inputs */

/* Layer l's input x_l (x_L: the last layer's output) in backend memory:
 * st->inputs holds every one, or when offloading a ring of two, x_l in
 * slot l % 2 (layer l reads one slot and writes the other). */
static float *layer_input(const mxl_train_state *st, int l, size_t plane) {
  return (float *)st->inputs.ptr + (size_t)(st->offloading ? l % 2 : l) * plane;
}

/* Offloading: x_l to host memory after the forward wrote it, unless it is
 * one the backward finds in the ring (x_{L-1}, x_L). The host never reads
 * it: the copy need not be waited for (the next layers run behind it on the
 * stream, and restore_input's upload is ordered after it). */
static void save_input(mxl_engine *e, const mxl_train_state *st, int l, size_t plane) {
  if (st->offloading && (size_t)l < offloaded_planes(e->cfg))
    mxl_backend_download_async(e->be, st->host_inputs + (size_t)l * plane,
                               layer_input(st, l, plane), plane * sizeof(float));
}

/* Offloading: x_l back into its ring slot before the backward recomputes
 * layer l (the slot held x_{l+2}, which the backward is done with). */
static void restore_input(mxl_engine *e, const mxl_train_state *st, int l, size_t plane) {
  if (st->offloading && (size_t)l < offloaded_planes(e->cfg))
    e->ops->upload(e->be, layer_input(st, l, plane), st->host_inputs + (size_t)l * plane,
                   plane * sizeof(float));
}

/* Layer l's activations: its kept tape, or the working set (which is also
 * the last layer's tape when keeping). */
static mxl_layer_acts *layer_tape(mxl_train_state *st, int l, int n_layers) {
  return st->keeping && l < n_layers - 1 ? &st->tapes[l] : &st->acts;
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

/* The MoE backward of tokens [row0, row0 + rows), whose routed rows are in
 * the tape (mxl_moe_chunk): reads their rows of g->dx (∂loss/∂x_out), then
 * adds the MoE's part of ∂loss/∂x_mid to those rows. */
static mxl_status moe_chunk_backward(mxl_engine *e, int l, const mxl_lora_stack *lora,
                                     const mxl_lora_view *grads, mxl_layer_acts *a,
                                     const grad_bufs *g, int row0, int rows) {
  const mxl_ops *ops = e->ops;
  const mxl_config *c = e->cfg;
  const mxl_layer_weights *w = &e->w.layers[l];
  const int H = c->hidden, I = c->intermediate, E = c->n_experts;
  const int k = c->experts_per_token, m = rows * k;
  const size_t at = (size_t)row0 * H;
  mxl_moe_plan plan = mxl_layer_plan(e, a);

  ops->zero(e->be, g->dmlp, g->moe_bytes);
  ops->moe_combine_bwd(e->be, g->dys, g->dweights, g->dx + at, a->ys, &plan, H);

  MXL_TRY(lora_grad(e, l, lora, grads, MXL_LORA_DOWN, a->act, I, H, g->dys, g->dact, a, g));
  ops->mxfp4_matmul_dx(e->be, g->dact, g->dys, &w->down, &plan);

  ops->swiglu_bwd(e->be, g->dh, g->dact, a->h, m, I, c->swiglu_alpha, c->swiglu_limit);

  MXL_TRY(lora_grad(e, l, lora, grads, MXL_LORA_GATE_UP, a->xs, H, 2 * I, g->dh, g->dxs, a, g));
  ops->mxfp4_matmul_dx(e->be, g->dxs, g->dh, &w->gate_up, &plan);

  ops->moe_gather_bwd(e->be, g->dmlp, g->dxs, &plan, H);
  ops->router_bwd(e->be, g->dlogits, g->dweights, plan.weights, plan.experts, rows, E, k);
  ops->matmul_bf16_dx(e->be, g->dmlp, g->dlogits, &w->router, rows);
  ops->rmsnorm_bwd(e->be, g->dx + at, g->dmlp, a->x_mid + at, a->rstd_m + row0, w->mlp_norm,
                   rows, H, c->rms_eps);
  return MXL_OK;
}

/* Given g->dx = ∂loss/∂x_out of layer l (x_out = x_mid + MoE(x_mid)), leaves
 * g->dx = ∂loss/∂x_mid, chunk by chunk, in place: the residual passes its
 * gradient as is, and each chunk adds the MoE's part to its own rows after
 * reading them (no copy of the plane). The routing (mxl_moe_route) is in
 * the tape; each chunk's routed rows are recomputed first unless the tape
 * still holds them (`in_tape`: the forward's, and one chunk for the step:
 * the last layer's tape, or a kept one). */
static mxl_status moe_backward(mxl_engine *e, int l, const mxl_lora_stack *lora,
                               const mxl_lora_view *grads, mxl_layer_acts *a,
                               const grad_bufs *g, int in_tape) {
  const int n = a->n, chunk = a->moe_chunk;
  for (int row0 = 0; row0 < n; row0 += chunk) {
    const int rows = n - row0 < chunk ? n - row0 : chunk;
    if (!(in_tape && chunk == n)) MXL_TRY(mxl_moe_chunk(e, l, lora, a, row0, rows, NULL));
    MXL_TRY(moe_chunk_backward(e, l, lora, grads, a, g, row0, rows));
  }
  return MXL_OK;
}

/* Given g->dx = ∂loss/∂x_mid, leaves g->dx = ∂loss/∂x (the layer input), in
 * place: the attention-norm's part is added last, after the O projection's
 * backward has read g->dx. */
static mxl_status attention_backward(mxl_engine *e, int l, const mxl_lora_stack *lora,
                                     const mxl_lora_view *grads, const float *x,
                                     mxl_layer_acts *a, const grad_bufs *g,
                                     const batch_attend *ba) {
  const mxl_ops *ops = e->ops;
  const mxl_config *c = e->cfg;
  const mxl_layer_weights *w = &e->w.layers[l];
  const int n = a->n, H = c->hidden, d = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads;
  const int qd = nh * d, kvd = nkv * d;

  ops->zero(e->be, g->da, g->attn_bytes);
  MXL_TRY(lora_grad(e, l, lora, grads, MXL_LORA_O, a->ctx, qd, H, g->dx, g->dctx, a, g));
  ops->matmul_bf16_dx(e->be, g->dctx, g->dx, &w->o, n);

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
  MXL_TRY(reserve(e, st, n, mxl_lora_stack_rank(lora), grads != NULL,
                  trains_dropout(lora, grads != NULL), &g, &dev));
  upload_batch(e, batch, &dev, n);
  batch_attend ba = {batch, &dev};
  const size_t plane = (size_t)n * H;
  float *x_last = layer_input(st, L, plane);

  /* Forward: keep every layer's input (for training: offloaded to host
   * memory on a device backend), and when keeping every layer's tape;
   * otherwise the rest is recomputed. */
  if (batch->inputs)
    ops->upload(e->be, layer_input(st, 0, plane), batch->inputs, plane * sizeof(float));
  else
    MXL_TRY(mxl_engine_embed(e, layer_input(st, 0, plane), batch->tokens, dev.tokens, n));
  if (grads) save_input(e, st, 0, plane);
  /* Each layer's weights leave the resident set when a pass is done with
   * them (mxl_engine_drop_pages): the last layer's stay for the backward. */
  for (int l = 0; l < L; l++) {
    mxl_layer_acts *tape = layer_tape(st, l, L);
    if (drops_pages(st)) mxl_engine_map_pages(e, l);
    MXL_TRY(mxl_attention_half(e, l, lora, layer_input(st, l, plane), dev.pos, tape,
                               attend_batch, &ba));
    MXL_TRY(mxl_moe_half(e, l, lora, tape, layer_input(st, l + 1, plane)));
    if (grads) save_input(e, st, l + 1, plane);
    if (l != L - 1 && drops_pages(st)) mxl_engine_drop_pages(e, l);
  }
  ops->rmsnorm(e->be, st->normed.ptr, st->rstd.ptr, x_last, e->w.final_norm, n, H, c->rms_eps);
  ops->zero(e->be, g.da, plane * sizeof(float));
  if (drops_pages(st)) mxl_engine_map_pages(e, -1);
  ops->unembed_xent(e->be, dev.loss, grads ? g.da : NULL, st->normed.ptr, &e->w.unembed,
                    dev.targets, dev.weights, n);
  ops->download(e->be, st->host_loss, dev.loss, n * sizeof(float));
  MXL_TRY(ops->sync(e->be));
  if (drops_pages(st)) mxl_engine_drop_pages(e, -1);
  double loss = 0;
  for (int i = 0; i < n; i++) loss += (double)batch->weights[i] * st->host_loss[i];
  *loss_out = loss;
  if (!grads) return MXL_OK;

  /* Backward, one layer at a time, from its kept tape or recomputed. */
  ops->zero(e->be, g.dx, plane * sizeof(float));
  ops->rmsnorm_bwd(e->be, g.dx, g.da, x_last, st->rstd.ptr, e->w.final_norm, n, H, c->rms_eps);
  for (int l = L - 1; l >= 0; l--) {
    const float *x = layer_input(st, l, plane);
    mxl_layer_acts *tape = layer_tape(st, l, L);
    /* the last layer's attention half and routing are still in the tape */
    if (l != L - 1) {
      if (drops_pages(st)) mxl_engine_map_pages(e, l);
      restore_input(e, st, l, plane);
      if (st->keeping) {
        mxl_layer_tape_restore(e, l, tape, x);
      } else {
        MXL_TRY(mxl_attention_half(e, l, lora, x, dev.pos, tape, attend_batch, &ba));
        mxl_moe_route(e, l, lora, tape);
      }
    }
    MXL_TRY(moe_backward(e, l, lora, grads, tape, &g, st->keeping || l == L - 1));
    MXL_TRY(attention_backward(e, l, lora, grads, x, tape, &g, &ba));
    if (drops_pages(st)) mxl_engine_drop_pages(e, l);
  }
  if (batch->input_grads) ops->download(e->be, batch->input_grads, g.dx, plane * sizeof(float));
  return ops->sync(e->be);
}

void mxl_train_state_release(mxl_engine *e, mxl_train_state *st) {
  release_tapes(e, st);
  mxl_layer_acts_release(e, &st->acts);
  mxl_buffer *bufs[] = {&st->inputs, &st->normed, &st->rstd, &st->grads, &st->batch};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) mxl_buffer_release(e->be, bufs[i]);
  free(st->host_loss);
  mxl_backend_host_free(e->be, st->host_inputs);
  memset(st, 0, sizeof *st);
}
