/* One training step's model work: the forward pass over a packed batch with
 * per-layer activation checkpointing, the fused unembedding + cross-entropy,
 * and the backward pass into the LoRA gradients. Frozen weights get no
 * gradient and no gradient memory; MXFP4 and bf16 weights are decoded on the
 * fly inside the backward kernels.
 *
 * Memory: the forward keeps only each layer's input x_l [n, H] (L·n·H
 * floats); the backward recomputes one layer at a time into a single
 * mxl_layer_acts tape. So activation memory grows linearly with tokens per
 * step n = batch × seq_len: about (L + c)·n·H floats plus one layer's tape,
 * whose largest parts are the routed rows (k·n rows of 2I, I and H floats). */
#ifndef MXL_MODEL_TRAIN_STEP_H
#define MXL_MODEL_TRAIN_STEP_H

#include "model/layers.h"

/* B sequences of T tokens, packed row-major: row = b·T + t. */
typedef struct mxl_train_batch {
  int n_seq, seq_len;
  const int32_t *tokens;  /* host [B·T] */
  const int32_t *targets; /* host [B·T] next-token ids; ignored where weight is 0 */
  const float *weights;   /* host [B·T] loss weight per token (0 = not trained) */
  const int32_t *pos;     /* host [B·T] position within its document (restarts at 0) */
  const int32_t *seg;     /* host [B·T] document id within its sequence */
  const float *inputs;    /* host [B·T, H] or NULL: used instead of the token embeddings */
  float *input_grads;     /* host [B·T, H] or NULL: receives ∂loss/∂inputs (the embeddings) */
} mxl_train_batch;

typedef struct mxl_train_state {
  mxl_layer_acts acts;
  mxl_buffer inputs;   /* [L+1, n, H] x_l of every layer, and x_L */
  mxl_buffer normed;   /* [n, H] final-norm output */
  mxl_buffer rstd;     /* [n] */
  mxl_buffer grads;    /* backward scratch, carved (see train_step.c) */
  mxl_buffer batch;    /* tokens, targets, pos, seg [n] int32; weights, loss [n] */
  float *host_loss;    /* [n] */
  int cap_n;
} mxl_train_state;

/* Forward (and, when grads != NULL, backward) over the batch. Without grads
 * (evaluation) `lora` may stack any number of adapters, or be NULL. With
 * grads, `lora` holds exactly the adapter being trained (its train flag and seed select dropout); `grads`
 * has the same shapes, and gradients are ADDED into it (gradient
 * accumulation: zero it between optimizer steps). Returns the weighted loss
 * Σ_t weight_t·loss_t in *loss_out. */
mxl_status mxl_train_step(mxl_engine *e, mxl_train_state *st, const mxl_train_batch *batch,
                          const mxl_lora_stack *lora, const mxl_lora_view *grads,
                          double *loss_out);

void mxl_train_state_release(mxl_engine *e, mxl_train_state *st);

/* The backend bytes a training step of n tokens with LoRA rank lora_rank
 * holds in its state (every buffer above; `mxlora plan`, model/plan.c). */
size_t mxl_train_state_bytes(const mxl_config *cfg, int n, int lora_rank);

#endif
