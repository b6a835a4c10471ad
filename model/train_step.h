/* One training step's model work: the forward pass over a packed batch with
 * per-layer activation checkpointing, the fused unembedding + cross-entropy,
 * and the backward pass into the LoRA gradients. Frozen weights get no
 * gradient and no gradient memory; MXFP4 and bf16 weights are decoded on the
 * fly inside the backward kernels.
 *
 * Memory: the forward keeps only each layer's input x_l [n, H] (L·n·H
 * floats, in host memory on GPUs); the backward recomputes one layer at a
 * time into a single mxl_layer_acts tape. So activation memory grows linearly with tokens per
 * step n = batch × seq_len: about (L + c)·n·H floats plus one layer's tape,
 * whose largest parts are the routed rows (k·n rows of 2I, I and H floats).
 *
 * Where memory allows (keep_activations), the forward keeps a tape of every
 * layer (mxl_layer_tape_reserve) and the backward skips the recompute: a
 * step then does the layers' work twice instead of three times, for
 * (L-1) tapes more (mxl_train_keep_bytes). The arithmetic is the same: the
 * loss and gradients are the recompute's bits. */
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

/* mxl_train_state.keep_activations. */
typedef enum mxl_keep_mode {
  MXL_KEEP_AUTO = 0, /* keep when the tapes fit keep_budget (mxl_train_keeps) */
  MXL_KEEP_ON,       /* keep (an allocation failure is an error) */
  MXL_KEEP_OFF,      /* recompute */
} mxl_keep_mode;

/* mxl_train_state.resident: whether the mapped checkpoint's pages stay in
 * the process's resident set between a step's uses of them. */
typedef enum mxl_resident_mode {
  MXL_RESIDENT_AUTO = 0, /* decided at the first step (mxl_train_keeps_pages) */
  MXL_RESIDENT_KEEP,     /* leave them mapped */
  MXL_RESIDENT_DROP,     /* drop each layer's when a pass is done with it */
} mxl_resident_mode;

/* "auto", "true", "false" (the recipe's and the flags' words) and back. */
mxl_status mxl_keep_mode_parse(const char *text, int *mode);
const char *mxl_keep_mode_name(int mode);

typedef struct mxl_train_state {
  mxl_layer_acts acts; /* the working set; keeping: also the last layer's tape */
  mxl_buffer inputs;   /* [L+1, n, H] x_l of every layer, and x_L; offloading: [2, n, H] */
  mxl_buffer normed;   /* [n, H] final-norm output */
  mxl_buffer rstd;     /* [n] */
  mxl_buffer grads;    /* backward scratch, carved (see train_step.c) */
  mxl_buffer batch;    /* tokens, targets, pos, seg [n] int32; weights, loss [n] */
  float *host_loss;    /* [n] */
  int cap_n;
  /* mxl_resident_mode. Dropping: each layer's pages leave the resident set
   * when the step's passes are done with it (mxl_engine_drop_pages), so
   * gpt-oss-20b training does not hold all 13 GB of the checkpoint in its
   * RSS; they come back from the page cache through minor faults, which
   * cost 6 % of a 20b step and 2-3 % of the bench preset's (bench_train
   * --resident keep|drop measures both). Auto becomes KEEP or DROP at the
   * first step. */
  int resident;
  /* Tokens whose experts run at a time (0: the default below): the routed
   * rows of the layer tape and their gradients hold one chunk, not the
   * step (experts are per token, so chunks are independent; the loss and
   * gradients are those of the whole step, up to the order of fp32 sums). */
  int moe_chunk;
  /* Backends without host memory (GPUs) keep the layer inputs of a
   * training step in host memory (offloaded activation checkpointing):
   * x_l goes out after layer l's forward and comes back before its
   * recompute, and the device holds a ring of two; 1 keeps them all on the
   * backend (keep_inputs, tests). */
  int keep_inputs;
  int offloading;      /* set by the step: this step offloads */
  float *host_inputs;  /* host [L-1, n, H]: x_0 .. x_{L-2} (mxl_backend_host_alloc: pinned
                          on CUDA) */
  size_t host_inputs_bytes;
  /* Training without the recompute (mxl_keep_mode; zeroed state: auto). */
  int keep_activations;
  /* auto: the bytes kept tapes may take; 0 = measure it at the first
   * training step (mxl_train_keep_budget) and store it here, so that every
   * later step decides alike. */
  size_t keep_budget;
  int keeping;           /* set by a training step: it keeps its tapes */
  mxl_layer_acts *tapes; /* [L-1] layers 0 .. L-2 when keeping (L-1's is acts) */
} mxl_train_state;

/* The default MoE chunk on backends without host memory (GPUs, whose
 * memory is the limit): 1024 tokens, 4096 routed rows on gpt-oss. CPU
 * backends run the whole step at once by default (each chunk decodes the
 * experts' weights again). */
enum { MXL_TRAIN_MOE_CHUNK = 1024 };

/* The tokens per MoE chunk a step uses on a backend with or without host
 * memory: st->moe_chunk, or the default (0: the whole step). */
int mxl_train_moe_chunk(const mxl_train_state *st, int host_memory);

/* Whether a training step offloads its layer inputs on such a backend. */
int mxl_train_offloads(const mxl_train_state *st, int host_memory);

/* The host bytes of the offloaded layer inputs of n tokens; each training
 * step moves them out and back over PCIe (2x). */
size_t mxl_train_offload_bytes(const mxl_config *cfg, int n);

/* The bytes kept tapes add to a training step of n tokens (the other
 * arguments as mxl_train_state_bytes): L-1 tapes of mxl_layer_tape_bytes. */
size_t mxl_train_keep_bytes(const mxl_config *cfg, int n, int moe_chunk, int lora_rank,
                            int dropout);

/* Whether a training step with this state keeps its tapes, which take
 * keep_bytes, on a backend with or without host memory: on, or auto when
 * they fit st->keep_budget and the step does not offload its layer inputs
 * (offloading says the device is short of memory: the simplest correct
 * choice there is the recompute). */
int mxl_train_keeps(const mxl_train_state *st, int host_memory, size_t keep_bytes);

/* The budget of auto mode for an engine whose step state (without tapes)
 * takes state_bytes, from the memory left now (mxl_backend_memory_left):
 * 3/4 of what is left once the step state and, on backends that read the
 * mapped checkpoint in place, the checkpoint's pages are counted out. The
 * pages first: each step reads every weight, and the trainer lets them go
 * from its resident set between uses (mxl_engine_drop_pages) counting on
 * the page cache to hand them back; tapes that push them out of the cache
 * would turn every step into a read of the checkpoint from disk. The
 * quarter left is for what the process and its neighbours allocate later
 * (data, the optimizer's output, the other processes of a shared host).
 * 0 where the backend cannot say (then auto recomputes). */
size_t mxl_train_keep_budget(mxl_engine *e, size_t state_bytes);

/* Auto residency: 1 (keep the pages mapped) when the checkpoint's mapped
 * bytes are at most a quarter of the memory available (mem_available, read
 * before the step's allocations; 0: unknown, drop). Dropping saves the
 * RSS only: the pages stay in the page cache either way, so where they are
 * small beside the memory it is pure cost (gpt-oss-20b on a 24 GB host
 * drops, on a 64 GB host keeps, the bench preset keeps everywhere). */
int mxl_train_keeps_pages(size_t mapped_bytes, size_t mem_available);

/* "auto", "keep", "drop" and back. */
mxl_status mxl_resident_mode_parse(const char *text, int *mode);
const char *mxl_resident_mode_name(int mode);

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

/* The backend bytes a training step of n tokens, experts in chunks of
 * moe_chunk tokens (as mxl_train_moe_chunk gives), LoRA rank lora_rank,
 * with LoRA dropout or not, layer inputs offloaded or not, tapes kept or
 * not, holds in its state (every buffer above; `mxlora plan`, train/plan.c). */
size_t mxl_train_state_bytes(const mxl_config *cfg, int n, int moe_chunk, int lora_rank,
                             int dropout, int offload, int keep);

#endif
