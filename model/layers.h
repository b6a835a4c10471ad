/* The two halves of a gpt-oss block (docs/gpt-oss.md §5), shared by inference and
 * training:
 *   attention half:  x_mid = x + o_proj(Attn(RoPE(q), RoPE(k), v)),  q,k,v = proj(RMSNorm(x))
 *   MoE half:        x_out = x_mid + Σ_r w_r·Expert_r(RMSNorm(x_mid))
 * with LoRA deltas added after every adapted projection.
 *
 * All activations of one block live in mxl_layer_acts. Inference reuses one
 * set for every layer; training keeps one set as the tape of the layer being
 * back-propagated (recomputed from its saved input: activation checkpointing).
 * Legend: n tokens, m = n·k routed rows, H hidden, I intermediate, E experts,
 * nh/nkv heads, d head dim, R LoRA rank. */
#ifndef MXL_MODEL_LAYERS_H
#define MXL_MODEL_LAYERS_H

#include "model/engine.h"
#include "model/lora_view.h"

/* A run of queries that attend to one set of keys (one sequence). */
typedef struct mxl_attn_group {
  int q_row0, nq;       /* query rows [q_row0, q_row0 + nq) */
  const float *k, *v;   /* [nk, nkv·d] after RoPE */
  int nk;
  mxl_attn_mask mask;   /* backend arrays */
} mxl_attn_group;

typedef struct mxl_layer_acts {
  int n, cap_n;         /* tokens in use, capacity */
  float *a;             /* [n, H] attention-norm output */
  float *rstd_a;        /* [n] */
  float *q;             /* [n, nh·d] after RoPE */
  float *k, *v;         /* [n, nkv·d], k after RoPE */
  float *ctx;           /* [n, nh·d] attention output per head */
  float *lse;           /* [n, nh] attention log-sum-exp (with sink) */
  float *x_mid;         /* [n, H] residual after attention */
  float *mlp_in;        /* [n, H] MoE-norm output */
  float *rstd_m;        /* [n] */
  float *router_logits; /* [n, E] */
  int32_t *experts;     /* [n, k] */
  float *weights;       /* [n, k] */
  int32_t *order, *slot;/* [m] of the MoE chunk */
  int32_t *offsets;     /* [E+1] */
  int32_t *offsets_host;/* [E+1] host copy */
  /* The routed rows below hold one MoE chunk: tokens [moe_row0, moe_row0 +
   * moe_n), m = moe_n·k rows (mxl_moe_chunk). */
  int moe_row0, moe_n;
  int moe_chunk, moe_cap; /* tokens per chunk (<= n), capacity */
  float *xs;            /* [m, H] routed inputs, grouped by expert */
  float *h;             /* [m, 2I] gate_up output */
  float *act;           /* [m, I] SwiGLU output */
  float *ys;            /* [m, H] down output */
  float *lora_in;       /* [n, max(H, nh·d)] dropout'd LoRA input (attention targets),
                           when reserved with dropout (else NULL) */
  float *lora_t[MXL_LORA_N_TARGETS]; /* [rows, R] x·Aᵀ of every applied adapter, one
                                        [rows, rank] block per segment (lora_segs) */
  int lora_rank_cap, dropout_cap;
  int32_t *order_host;  /* [m] host copy of order (mixed batches) */
  int32_t *row_run;     /* [n] host: run index of each token row, -1 for none */
  mxl_lora_seg *segs;   /* host: the segments of the current LoRA product */
  int segs_cap;
  mxl_buffer block;     /* one backend allocation carved into the above */
  int32_t *host_block;
} mxl_layer_acts;

/* Sizes the activations for n tokens whose experts run moe_chunk tokens at a
 * time (0 or >= n: all at once), growing, never shrinking. lora_rank is the
 * largest rank of any adapter that will be applied (0: none); dropout says
 * whether a trained adapter has LoRA dropout (training only). */
mxl_status mxl_layer_acts_reserve(mxl_engine *e, mxl_layer_acts *acts, int n, int moe_chunk,
                                  int lora_rank, int dropout);
void mxl_layer_acts_release(mxl_engine *e, mxl_layer_acts *acts);

/* The tokens per MoE chunk of a step of n tokens: moe_chunk, or n. */
int mxl_moe_chunk_tokens(int n, int moe_chunk);

/* The bytes mxl_layer_acts_reserve allocates for these arguments (`mxlora
 * plan`'s accounting, train/plan.c). */
size_t mxl_layer_acts_bytes(const mxl_config *cfg, int n, int moe_chunk, int lora_rank,
                            int dropout);

/* One adapter applied to some rows; its delta is multiplied by `scale`
 * (on top of the view's own alpha/r scale). */
typedef struct mxl_lora_use {
  const mxl_lora_view *view;
  float scale;
} mxl_lora_use;

/* Token rows [row0, row0 + rows) that share one adapter set (one sequence,
 * or consecutive sequences with the same adapters and scales). */
typedef struct mxl_lora_run {
  int row0, rows;
  const mxl_lora_use *uses;
  int n_uses;
} mxl_lora_run;

/* Adapters applied on top of the frozen base, in one of two forms:
 *   - `views`: the same adapters on every row (generate, training, eval);
 *   - `runs` (mixed batches): each run of rows its own adapters; rows in no
 *     run get none. Runs are ordered by row0 and do not overlap.
 * A row's adapters are applied in list order. When `train` is set (views
 * form, one adapter), that adapter is the one being trained: its x·Aᵀ
 * products are kept in acts->lora_t and attention-input dropout
 * (view->dropout) is applied with `seed`. */
typedef struct mxl_lora_stack {
  const mxl_lora_view *const *views;
  int n;
  int train;
  uint64_t seed;
  const mxl_lora_run *runs;
  int n_runs;
} mxl_lora_stack;

/* The largest Σ rank of the adapters any one row gets: the columns of
 * acts->lora_t to reserve (0: no adapter). */
int mxl_lora_stack_rank(const mxl_lora_stack *lora);

/* The segments (kernels/ops.h mxl_lora_seg) of one (layer, target) into
 * acts->segs, t offsets into acts->lora_t[target]: dense targets per run of
 * token rows and adapter, expert targets per expert, run and adapter over
 * the grouped rows of mxl_moe_half's plan. With `grads` (training) the
 * first adapter's segments carry dA/dB pointers into it. The forward and
 * the backward build the same list, so t offsets agree. */
mxl_status mxl_lora_segments(const mxl_engine *e, int layer, const mxl_lora_stack *lora,
                             int target, const mxl_lora_view *grads, mxl_layer_acts *acts,
                             int *n_out);

/* The dropout seed of one (layer, target): every draw is independent and the
 * backward regenerates each mask from the same seed. */
uint64_t mxl_lora_dropout_seed(uint64_t seed, int layer, int target);

/* x_mid = x + attention(x): computes q, k, v (+LoRA), RoPE at positions
 * pos [n] (backend), then calls `attend` to run attention per group: the
 * caller decides where keys live (KV cache or the batch itself). */
typedef mxl_status (*mxl_attend_fn)(void *user, mxl_engine *e, int layer, mxl_layer_acts *acts);

mxl_status mxl_attention_half(mxl_engine *e, int layer, const mxl_lora_stack *lora,
                              const float *x, const int32_t *pos, mxl_layer_acts *acts,
                              mxl_attend_fn attend, void *attend_user);

/* Runs attention for one group into acts->ctx / acts->lse. */
void mxl_attend_group(mxl_engine *e, int layer, mxl_layer_acts *acts, const mxl_attn_group *g);

/* x_out = x_mid + MoE(x_mid) (x_out may equal nothing else; it is written):
 * mxl_moe_route, then mxl_moe_chunk over the chunks of acts->moe_chunk. */
mxl_status mxl_moe_half(mxl_engine *e, int layer, const mxl_lora_stack *lora,
                        mxl_layer_acts *acts, float *x_out);

/* The MoE half's per-token part over all n tokens: MoE norm, router, top-k
 * (acts->mlp_in, rstd_m, router_logits, experts, weights). */
void mxl_moe_route(mxl_engine *e, int layer, const mxl_lora_stack *lora, mxl_layer_acts *acts);

/* The experts of tokens [row0, row0 + rows) (rows <= acts->moe_chunk) into
 * the routed rows of acts; with x_out, their weighted sum is added to those
 * rows of x_out. */
mxl_status mxl_moe_chunk(mxl_engine *e, int layer, const mxl_lora_stack *lora,
                         mxl_layer_acts *acts, int row0, int rows, float *x_out);

/* The plan view of acts' current chunk (after mxl_moe_chunk's grouping). */
mxl_moe_plan mxl_layer_plan(const mxl_engine *e, const mxl_layer_acts *acts);

#endif
