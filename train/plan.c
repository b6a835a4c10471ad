/* `mxlora plan`: the device memory of a LoRA training run on the CUDA
 * backend (include/mxlora/plan.h). Every figure comes from the function
 * that sizes the real allocation:
 *   weights       mxl_engine_device_bytes (the engine uploads every weight
 *                 file as it is but the token embedding, whose rows a step
 *                 gathers on the host), or for a bare shape the same files'
 *                 sizes from the parameter counts (MXFP4: 17/32 byte per
 *                 weight, bf16: 2);
 *   LoRA state    the trainer's four blocks of mxl_lora_layout_create's
 *                 n_floats (parameters, gradients, AdamW m, v);
 *   train state   mxl_train_state_bytes (checkpoints, one layer's tape,
 *                 gradient buffers; experts in chunks of the trainer's
 *                 mxl_train_moe_chunk tokens, layer inputs offloaded to
 *                 host memory as mxl_train_offloads says; the other
 *                 layers' tapes when the step keeps them, mxl_train_keeps);
 *   scratch       kernels/cuda_memory.h at the shapes of the step's ops,
 *                 rounded as the backend grows it;
 *   workspace     the cuBLASLt workspace, and cuDNN's for attention
 *                 (MXL_CUDA_DNN_WORKSPACE: the size the backend allocates).
 * tests/cuda/test_cuda_plan.c checks the sum against the bytes the emulated
 * CUDA backend allocates for the same step. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/lora.h"
#include "core/fileio.h"
#include "core/hugemem.h"
#include "core/status.h"
#include "kernels/cuda_memory.h"
#include "model/engine.h"
#include "model/forward.h"
#include "model/model.h"
#include "model/train_step.h"
#include "train/train_config.h"

/* The LoRA set of a plan: rank, targets, layers (as the trainer builds it). */
typedef struct plan_lora {
  int rank;
  int dropout; /* lora.dropout > 0 */
  unsigned attn_targets, expert_targets;
  int attn_layers[256], n_attn_layers;
  int expert_layers[256], n_expert_layers;
} plan_lora;

/* The fixed inputs of the accounting. */
typedef struct plan_inputs {
  mxl_config cfg;
  int vocab_rows;
  uint64_t weights, host_embed, host_unembed;
  uint64_t lora_floats;
  int moe_chunk; /* tokens per MoE chunk, as the trainer's state has it */
  int offload;   /* layer inputs in host memory, as the trainer's state has it */
  int dropout;   /* the recipe's LoRA dropout is on */
  int keep_mode; /* mxl_keep_mode */
  int cpu_moe_chunk; /* the chunk asked for (0: the CPU backend's default) */
} plan_inputs;

static uint64_t max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* The scratch the CUDA backend grows to over one training step of n tokens
 * in rows of seq_len: the largest request of its ops at those shapes. */
static uint64_t step_scratch(const mxl_config *c, int vocab_rows, int n, int seq_len,
                             int moe_chunk, int rank, int host_unembed) {
  const int64_t H = c->hidden, E = c->n_experts;
  const int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
  uint64_t need = 0;
  /* matmul_bf16: q, k, v, o, the router (fp32 activations); their dx */
  need = max_u64(need, mxl_cuda_scratch_matmul_bf16(n, qd, H, 0));
  need = max_u64(need, mxl_cuda_scratch_matmul_bf16(n, kvd, H, 0));
  need = max_u64(need, mxl_cuda_scratch_matmul_bf16(n, H, qd, 0));
  need = max_u64(need, mxl_cuda_scratch_matmul_bf16(n, E, H, 1));
  need = max_u64(need, mxl_cuda_scratch_matmul_bf16_dx(n, qd));
  need = max_u64(need, mxl_cuda_scratch_matmul_bf16_dx(n, kvd));
  need = max_u64(need, mxl_cuda_scratch_matmul_bf16_dx(n, H));
  need = max_u64(need, mxl_cuda_scratch_matmul_bf16_dx(n, E));
  /* the loss with its gradient (gpt-oss's unembedding has no bias) */
  need = max_u64(need, mxl_cuda_scratch_unembed_xent(n, vocab_rows, H,
                                                     mxl_cuda_xent_chunk(n, vocab_rows, 0), 0, 1,
                                                     host_unembed));
  /* segmented LoRA: an attention target is one segment over the n rows; an
   * expert target a segment per expert over the m routed rows of a MoE
   * chunk, t [m, R] */
  const int64_t m = (int64_t)mxl_moe_chunk_tokens(n, moe_chunk) * c->experts_per_token;
  need = max_u64(need, mxl_cuda_scratch_lora(1, n, n, (int64_t)n * rank));
  need = max_u64(need, mxl_cuda_scratch_lora(E, m, m, m * rank));
  /* attention, one row (sequence) at a time: through cuDNN, forward and
   * backward (the own kernels' backward needs less) */
  need = max_u64(need, mxl_cuda_scratch_attention_bwd(seq_len, c->n_heads));
  need = max_u64(need, mxl_cuda_scratch_attention_cudnn(seq_len, seq_len, c->n_heads,
                                                        c->n_kv_heads, c->head_dim));
  need = max_u64(need, mxl_cuda_scratch_attention_cudnn_bwd(seq_len, seq_len, c->n_heads,
                                                            c->n_kv_heads, c->head_dim));
  return mxl_cuda_scratch_rounded(need);
}

/* Fills the per-step figures of `p` for rows of seq_len. */
static void account(const plan_inputs *in, int seq_len, int batch, mxl_plan *p) {
  const mxl_config *c = &in->cfg;
  const int n = seq_len * batch;
  const size_t H = c->hidden, L = c->n_layers;
  p->seq_len = seq_len;
  p->batch = batch;
  p->tokens = n;
  p->weights = in->weights;
  p->host_embed = in->host_embed;
  p->host_unembed = in->host_unembed;
  p->lora_state = 4 * in->lora_floats * sizeof(float);
  p->offload = in->offload;
  p->checkpoints = (in->offload ? 2 : L + 1) * (size_t)n * H * sizeof(float);
  p->host_inputs = in->offload ? mxl_train_offload_bytes(c, n) : 0;
  /* per step: the layer inputs out and back, the embedding rows in, the
   * unembedding in once (the loss and its gradient take one pass) */
  p->pcie_bytes = 2 * p->host_inputs + (in->host_embed ? (uint64_t)n * H * sizeof(float) : 0) +
                  in->host_unembed;
  p->moe_chunk = mxl_moe_chunk_tokens(n, in->moe_chunk);
  p->layer_tape = mxl_layer_acts_bytes(c, n, in->moe_chunk, p->rank, in->dropout);
  p->grad_buffers =
      mxl_train_state_bytes(c, n, in->moe_chunk, p->rank, in->dropout, in->offload, 0) -
      p->checkpoints - p->layer_tape;
  p->scratch =
      step_scratch(c, in->vocab_rows, n, seq_len, in->moe_chunk, p->rank, in->host_unembed != 0);
  p->workspace = MXL_CUDA_BLAS_WORKSPACE;
  p->dnn_workspace = MXL_CUDA_DNN_WORKSPACE;
  p->reserve = MXL_PLAN_RUNTIME_RESERVE;
  p->allocated = p->weights + p->lora_state + p->checkpoints + p->layer_tape + p->grad_buffers +
                 p->scratch + p->workspace + p->dnn_workspace;
  p->total = p->allocated + p->reserve;
  /* auto's budget on the device: 3/4 of what the GPU has left beside the
   * rest (mxl_train_keep_budget with the device's free memory) */
  p->kept_tapes = mxl_train_keep_bytes(c, n, in->moe_chunk, p->rank, in->dropout);
  mxl_train_state st = {.keep_activations = in->keep_mode, .keep_inputs = !in->offload};
  st.keep_budget = p->gpu_bytes > p->total ? (p->gpu_bytes - p->total) / 4 * 3 : 0;
  p->keeps = c->n_layers > 1 && mxl_train_keeps(&st, 0, p->kept_tapes);
  if (p->keeps) p->allocated += p->kept_tapes, p->total += p->kept_tapes;
  p->fits = p->total <= p->gpu_bytes;
  p->kv_cache_fp32 = mxl_kv_cache_bytes(c, seq_len < c->max_context ? seq_len : c->max_context, 1);
}

/* ---------------------------------------------------------------- inputs */

/* Weight files of a bare shape: what a download of it weighs (with the
 * embedding). */
static uint64_t shape_weights(const mxl_config *c) {
  mxl_param_counts pc;
  mxl_config_param_counts(c, &pc);
  return (uint64_t)pc.mxfp4 / 2 + (uint64_t)pc.mxfp4 / 32 + (uint64_t)pc.bf16 * 2 +
         (uint64_t)(c->head_dim / 2) * sizeof(float);
}

static mxl_status parse_layers(const char *list, int *layers, int *n, int n_model_layers) {
  *n = 0;
  const char *at = list;
  while (*at) {
    char *end = NULL;
    long v = strtol(at, &end, 10);
    if (end == at || v < 0 || v >= n_model_layers || *n == 256)
      return mxl_errorf(MXL_ERR_ARGUMENT,
                        "plan: expert layers \"%s\": expected numbers 0..%d separated by commas",
                        list, n_model_layers - 1);
    layers[(*n)++] = (int)v;
    at = *end == ',' ? end + 1 : end;
    if (*end && *end != ',')
      return mxl_errorf(MXL_ERR_ARGUMENT, "plan: expert layers \"%s\": unexpected '%c'", list,
                        *end);
  }
  return MXL_OK;
}

/* The recipe's settings (seq_len, batch_size, lora.*) as defaults. */
static mxl_status read_recipe(const char *path, mxl_plan_request *req, plan_lora *lora) {
  char *text = NULL;
  size_t len = 0;
  MXL_TRY(mxl_read_file(path, (size_t)1 << 20, &text, &len));
  cJSON *json = cJSON_ParseWithLength(text, len);
  free(text);
  if (!json) return mxl_errorf(MXL_ERR_FORMAT, "%s: not valid JSON", path);
  mxl_train_config tc;
  mxl_status st = mxl_train_config_parse(json, path, &tc);
  if (st == MXL_OK) {
    if (!req->seq_len) req->seq_len = tc.seq_len;
    if (!req->batch) req->batch = tc.batch_size;
    if (!req->rank) req->rank = tc.rank;
    if (!req->moe_chunk) req->moe_chunk = tc.moe_chunk;
    if (!req->unembed_on_host) req->unembed_on_host = tc.unembed_on_host;
    if (!req->keep_activations) req->keep_activations = mxl_keep_mode_name(tc.keep_activations);
    lora->attn_targets = tc.attn_targets;
    lora->expert_targets = tc.expert_targets;
    memcpy(lora->attn_layers, tc.attn_layers, sizeof lora->attn_layers);
    lora->n_attn_layers = tc.n_attn_layers;
    memcpy(lora->expert_layers, tc.expert_layers, sizeof lora->expert_layers);
    lora->n_expert_layers = tc.n_expert_layers;
    lora->dropout = tc.dropout > 0;
  }
  cJSON_Delete(json);
  return st;
}

static mxl_status lora_floats(const mxl_config *c, const plan_lora *pl, uint64_t *floats,
                              uint64_t *params, unsigned *targets) {
  mxl_lora_config lc;
  mxl_lora_config_init(&lc, pl->rank, 2.0f * pl->rank);
  if (pl->attn_targets)
    MXL_TRY(mxl_lora_config_add(&lc, pl->attn_targets, pl->n_attn_layers ? pl->attn_layers : NULL,
                                pl->n_attn_layers, c->n_layers));
  if (pl->expert_targets)
    MXL_TRY(mxl_lora_config_add(&lc, pl->expert_targets,
                                pl->n_expert_layers ? pl->expert_layers : NULL, pl->n_expert_layers,
                                c->n_layers));
  mxl_lora_layout *lay = NULL;
  MXL_TRY(mxl_lora_layout_create(c, &lc, &lay));
  *floats = lay->n_floats;
  *params = lay->n_params;
  *targets = mxl_lora_config_targets(&lc);
  mxl_lora_layout_destroy(lay);
  return MXL_OK;
}

static mxl_status plan_config(const mxl_plan_request *req, plan_inputs *in, char *label,
                              size_t label_size) {
  if (req->model) {
    mxl_model *m = NULL;
    MXL_TRY(mxl_model_open(req->model, &m));
    in->cfg = m->config;
    in->vocab_rows = m->w.vocab_rows;
    in->weights = mxl_engine_device_bytes(m, req->unembed_on_host);
    in->host_embed = mxl_engine_host_bytes(m, req->unembed_on_host, 0);
    in->host_unembed = mxl_engine_host_bytes(m, req->unembed_on_host, 1);
    mxl_model_close(m);
    snprintf(label, label_size, "%s", req->model);
    return MXL_OK;
  }
  const char *shape = req->shape ? req->shape : "";
  if (!strcmp(shape, "gpt-oss-20b"))
    mxl_config_gpt_oss_20b(&in->cfg);
  else if (!strcmp(shape, "gpt-oss-120b"))
    mxl_config_gpt_oss_120b(&in->cfg);
  else
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "plan: shape \"%s\": expected gpt-oss-20b or gpt-oss-120b (or a --model)",
                      shape);
  in->vocab_rows = in->cfg.vocab_size;
  in->host_embed = (uint64_t)in->cfg.vocab_size * in->cfg.hidden * 2;
  in->host_unembed = req->unembed_on_host ? in->host_embed : 0;
  in->weights = shape_weights(&in->cfg) - in->host_embed - in->host_unembed;
  snprintf(label, label_size, "%s", shape);
  return MXL_OK;
}

/* The CPU backend's side of the plan on this host: what auto decides for
 * the same step there (experts all at once unless a chunk is asked for),
 * as mxl_train_keep_budget would at the first step, with the LoRA state
 * not yet allocated. */
static mxl_status plan_cpu(const plan_inputs *in, int n, int rank, uint64_t lora_state,
                           mxl_plan *p) {
  const mxl_config *c = &in->cfg;
  mxl_train_state st = {.keep_activations = in->keep_mode, .moe_chunk = in->cpu_moe_chunk};
  const int chunk = mxl_train_moe_chunk(&st, 1);
  p->cpu_kept_tapes = mxl_train_keep_bytes(c, n, chunk, rank, in->dropout);
  uint64_t avail = 0;
  MXL_TRY(mxl_mem_available(&avail));
  uint64_t taken = in->weights + in->host_embed + in->host_unembed + lora_state +
                   mxl_train_state_bytes(c, n, chunk, rank, in->dropout, 0, 0);
  p->cpu_keep_budget = avail > taken ? (avail - taken) / 4 * 3 : 0;
  st.keep_budget = (size_t)p->cpu_keep_budget;
  p->cpu_keeps = c->n_layers > 1 && mxl_train_keeps(&st, 1, p->cpu_kept_tapes);
  return MXL_OK;
}

static void target_names(unsigned mask, char *out, size_t size) {
  out[0] = '\0';
  for (int t = 0; t < MXL_LORA_N_TARGETS; t++) {
    if (!(mask & MXL_LORA_BIT(t))) continue;
    size_t len = strlen(out);
    snprintf(out + len, size - len, "%s%s", len ? "," : "", mxl_lora_target_name(t));
  }
}

mxl_status mxl_plan_compute(const mxl_plan_request *request, mxl_plan *out) {
  memset(out, 0, sizeof *out);
  mxl_plan_request req = *request;
  plan_lora lora;
  memset(&lora, 0, sizeof lora);
  if (req.recipe) MXL_TRY(read_recipe(req.recipe, &req, &lora));
  plan_inputs in;
  memset(&in, 0, sizeof in);
  MXL_TRY(plan_config(&req, &in, out->model, sizeof out->model));
  if (req.moe_chunk < 0)
    return mxl_errorf(MXL_ERR_ARGUMENT, "plan: MoE chunk %d: expected a token count >= 1",
                      req.moe_chunk);
  mxl_train_state chunked = {.moe_chunk = req.moe_chunk};
  chunked.keep_inputs = req.keep_inputs;
  in.moe_chunk = mxl_train_moe_chunk(&chunked, 0); /* the CUDA backend's */
  in.offload = mxl_train_offloads(&chunked, 0);
  in.dropout = lora.dropout;
  in.cpu_moe_chunk = req.moe_chunk;
  const char *keep = req.keep_activations ? req.keep_activations : "auto";
  if (mxl_keep_mode_parse(keep, &in.keep_mode) != MXL_OK)
    return mxl_errorf(MXL_ERR_ARGUMENT, "plan: keep_activations \"%s\": expected auto, true or "
                      "false", keep);
  snprintf(out->keep_mode, sizeof out->keep_mode, "%s", mxl_keep_mode_name(in.keep_mode));
  if (!req.seq_len) req.seq_len = 4096;
  if (!req.batch) req.batch = 1;
  if (!req.rank) req.rank = 8;
  if (req.seq_len < 1 || req.seq_len > in.cfg.max_context || req.batch < 1 ||
      (int64_t)req.seq_len * req.batch > (1 << 30))
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "plan: seq %d x batch %d: the sequence must be 1..%d tokens and the "
                      "micro-batch below 2^30 tokens",
                      req.seq_len, req.batch, in.cfg.max_context);
  lora.rank = req.rank;
  if (req.targets || !req.recipe) {
    unsigned mask = 0;
    MXL_TRY(mxl_lora_targets_parse(req.targets ? req.targets : "attn,experts", &mask));
    lora.attn_targets = mask & MXL_LORA_ATTN_BITS;
    lora.expert_targets = mask & MXL_LORA_EXPERT_BITS;
  }
  if (req.expert_layers)
    MXL_TRY(parse_layers(req.expert_layers, lora.expert_layers, &lora.n_expert_layers,
                         in.cfg.n_layers));
  unsigned targets = 0;
  uint64_t params = 0;
  MXL_TRY(lora_floats(&in.cfg, &lora, &in.lora_floats, &params, &targets));
  out->n_layers = in.cfg.n_layers;
  out->n_experts = in.cfg.n_experts;
  out->rank = req.rank;
  out->lora_params = params;
  out->expert_layers =
      lora.expert_targets ? (lora.n_expert_layers ? lora.n_expert_layers : in.cfg.n_layers) : 0;
  target_names(targets, out->targets, sizeof out->targets);
  out->gpu_bytes = req.gpu_bytes;
  for (int seq = 256; seq <= in.cfg.max_context; seq += 256) {
    account(&in, seq, req.batch, out);
    if (!out->fits) break;
    out->longest_seq = seq;
  }
  account(&in, req.seq_len, req.batch, out);
  return plan_cpu(&in, req.seq_len * req.batch, req.rank, out->lora_state, out);
}

mxl_status mxl_plan_parse_bytes(const char *text, uint64_t *bytes_out) {
  *bytes_out = 0;
  char *end = NULL;
  double v = strtod(text, &end);
  while (end && *end == ' ') end++;
  double unit = 0;
  if (end && (!*end || !strcmp(end, "GB") || !strcmp(end, "GiB") || !strcmp(end, "G")))
    unit = 1073741824.0;
  else if (end && (!strcmp(end, "MB") || !strcmp(end, "MiB") || !strcmp(end, "M")))
    unit = 1048576.0;
  if (end == text || unit == 0 || !(v > 0) || v > 1e6)
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "plan: GPU memory \"%s\": expected a size such as 16GB, 80GB or 24000MiB",
                      text);
  *bytes_out = (uint64_t)(v * unit);
  return MXL_OK;
}
