/* The work a gpt-oss pass must do, computed from the config alone: bytes of
 * weights a decode token reads, and the useful FLOPs of a prefill and of a
 * LoRA training step. These are the denominators of the roofline ratios
 * bench_forward and bench_train print. Legend as in kernels/ops.h.
 *
 * Bytes per decode token (weights as stored): for each layer, the k active
 * experts' MXFP4 (16 bytes of codes + 1 scale byte per 32 weights, plus the
 * bf16 biases), the bf16 attention projections with biases and sinks, the
 * router and the two norms; then the final norm, one embedding row and the
 * lm_head. The KV cache a token reads (fp32 keys and values of the positions
 * it sees) is counted apart.
 *
 * FLOPs count multiply-adds as 2: projections 2·rows·cols per token, the
 * experts k times per token, attention 4·d per (query, key) pair and head
 * (q·k and p·v), the lm_head only for rows whose logits are produced. */
#ifndef MXL_BENCH_MODEL_H
#define MXL_BENCH_MODEL_H

#include "model/config.h"

typedef struct bench_decode_bytes {
  double experts, attention, router, norms, lm_head, embed; /* weights */
  double total;                                             /* the sum */
} bench_decode_bytes;

static inline double bench_mxfp4_bytes(double rows, double cols) {
  return rows * cols / 32 * 17 + rows * 2; /* codes + scales + bf16 bias */
}

static inline bench_decode_bytes bench_decode_weight_bytes(const mxl_config *c, int vocab_rows) {
  const double H = c->hidden, I = c->intermediate, qd = (double)c->n_heads * c->head_dim,
               kvd = (double)c->n_kv_heads * c->head_dim, L = c->n_layers;
  bench_decode_bytes b;
  b.experts = L * c->experts_per_token * (bench_mxfp4_bytes(2 * I, H) + bench_mxfp4_bytes(H, I));
  b.attention = L * 2 * ((qd * H + qd) + 2 * (kvd * H + kvd) + (H * qd + H) + c->n_heads);
  b.router = L * 2 * ((double)c->n_experts * H + c->n_experts);
  b.norms = (2 * L + 1) * 2 * H;
  b.lm_head = 2.0 * vocab_rows * H;
  b.embed = 2 * H;
  b.total = b.experts + b.attention + b.router + b.norms + b.lm_head + b.embed;
  return b;
}

/* Keys a query at `position` sees in layer l (sliding layers: the window). */
static inline double bench_keys_seen(const mxl_config *c, int layer, double position) {
  double keys = position + 1;
  if (c->layer_sliding[layer] && keys > c->sliding_window) keys = c->sliding_window;
  return keys;
}

/* fp32 K and V bytes one decode token at `position` reads. */
static inline double bench_decode_kv_bytes(const mxl_config *c, double position) {
  double b = 0, kvd = (double)c->n_kv_heads * c->head_dim;
  for (int l = 0; l < c->n_layers; l++) b += bench_keys_seen(c, l, position) * kvd * 2 * 4;
  return b;
}

/* FLOPs of one layer's projections for one token: attention q/k/v/o, the
 * router, k experts (gate_up and down). */
static inline double bench_layer_matmul_flops(const mxl_config *c) {
  const double H = c->hidden, I = c->intermediate, qd = (double)c->n_heads * c->head_dim,
               kvd = (double)c->n_kv_heads * c->head_dim;
  double attn = qd * H + 2 * kvd * H + H * qd;
  double experts = c->experts_per_token * (2 * I * H + H * I);
  return 2 * (attn + (double)c->n_experts * H + experts);
}

/* Attention FLOPs (all layers) of queries at positions [p0, p0 + n) that see
 * every earlier position of their sequence (window-limited on sliding
 * layers). */
static inline double bench_attention_flops(const mxl_config *c, int p0, int n) {
  double pairs = 0;
  for (int l = 0; l < c->n_layers; l++)
    for (int i = 0; i < n; i++) pairs += bench_keys_seen(c, l, p0 + i);
  return 4.0 * c->head_dim * c->n_heads * pairs;
}

/* Useful FLOPs of a forward over n tokens at positions [p0, p0 + n) of one
 * sequence, producing logits for `logit_rows` rows. */
static inline double bench_forward_flops(const mxl_config *c, int vocab_rows, int p0, int n,
                                         int logit_rows) {
  return (double)n * c->n_layers * bench_layer_matmul_flops(c) + bench_attention_flops(c, p0, n) +
         2.0 * logit_rows * vocab_rows * c->hidden;
}

/* LoRA FLOPs per token for one forward: Σ over adapted targets of
 * 2·R·(in + out), per routed row for expert targets. `targets` is a bit
 * mask over mxl_lora_target, on every layer. */
static inline double bench_lora_flops(const mxl_config *c, unsigned targets, int rank) {
  const double H = c->hidden, I = c->intermediate, qd = (double)c->n_heads * c->head_dim,
               kvd = (double)c->n_kv_heads * c->head_dim, k = c->experts_per_token;
  const double io[6] = {H + qd, H + kvd, H + kvd, qd + H, k * (H + 2 * I), k * (I + H)};
  double f = 0;
  for (int t = 0; t < 6; t++)
    if (targets & (1u << t)) f += 2.0 * rank * io[t];
  return f * c->n_layers;
}

/* Useful FLOPs of one LoRA training step over B sequences of T tokens:
 * the layer work three times (forward, the checkpointed recompute, and the
 * backward's activation gradients; frozen weights get no weight gradient),
 * attention four times (its backward costs two forwards), the lm_head twice
 * per token (logits and dh), and the LoRA products four times (forward,
 * recompute, dx, and dA + dB). With the activations kept (`kept`) there is
 * no recompute: layers twice, attention and LoRA three times. */
static inline double bench_train_flops(const mxl_config *c, int vocab_rows, int B, int T,
                                       unsigned targets, int rank, int kept) {
  double n = (double)B * T, passes = kept ? 2 : 3;
  return passes * n * c->n_layers * bench_layer_matmul_flops(c) +
         (passes + 1) * B * bench_attention_flops(c, 0, T) +
         2 * n * 2.0 * vocab_rows * c->hidden +
         (passes + 1) * n * bench_lora_flops(c, targets, rank);
}

#endif
