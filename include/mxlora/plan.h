/* Public API: GPU memory planning (`mxlora plan`). How much device memory a
 * LoRA training run of a gpt-oss model takes on the CUDA backend, whether
 * it fits a GPU, and the longest sequence that does. The accounting is the
 * code's own: the sizes model code and the CUDA backend allocate
 * (model/layers.c, model/train_step.c, kernels/cuda_memory.h), checked
 * against the bytes the emulated backend allocates (tests/cuda). */
#ifndef MXLORA_PLAN_H
#define MXLORA_PLAN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What to plan. Zero / NULL fields take the recipe's value when a recipe
 * is given, else the default. */
typedef struct mxl_plan_request {
  const char *model;  /* a checkpoint (config and weight files), or NULL */
  const char *shape;  /* with model NULL: "gpt-oss-20b" or "gpt-oss-120b" */
  const char *recipe; /* a training recipe (.json): seq_len, batch_size, lora.* */
  uint64_t gpu_bytes; /* device memory to fit in */
  int seq_len;        /* tokens per row (4096) */
  int batch;          /* rows per micro-batch (1) */
  int rank;           /* LoRA rank (8) */
  const char *targets;       /* "attn,experts" (any of q,k,v,o,gate_up,down,attn,experts,all) */
  const char *expert_layers; /* "0,6,12" or NULL: every layer */
  int moe_chunk;      /* tokens whose experts run at a time (0: the trainer's default, 1024) */
  int keep_inputs;    /* 1: every layer's input on the device (no offloading) */
  int unembed_on_host; /* 1: the unembedding stays in host memory (uploaded chunk by chunk) */
  const char *keep_activations; /* "auto", "true", "false": every layer's activations kept
                                   for the backward instead of recomputed (NULL: auto) */
} mxl_plan_request;

/* CUDA context and library code (cuBLASLt kernels), which the process
 * holds but mxlora does not allocate: an allowance, not measured here
 * (bench_cuda_ops, run by tools/gpu_suite.sh, prints the real figure). */
#define MXL_PLAN_RUNTIME_RESERVE ((uint64_t)768 << 20)

/* The plan, in bytes of device memory. */
typedef struct mxl_plan {
  char model[96];         /* what was planned ("gpt-oss-20b", or the checkpoint path) */
  int n_layers, n_experts, seq_len, batch, tokens, rank;
  int moe_chunk;          /* tokens whose experts run at a time (<= tokens) */
  char targets[64];       /* e.g. "q,k,v,o,gate_up,down" */
  int expert_layers;      /* layers whose experts are adapted */
  uint64_t lora_params;   /* trainable parameters */
  uint64_t weights;       /* the checkpoint's files, uploaded as they are (MXFP4 kept),
                             less the token embedding (and the unembedding when it stays
                             in host memory) */
  uint64_t host_embed;    /* the token embedding, left in host memory (a step uploads
                             the rows of its tokens) */
  uint64_t host_unembed;  /* the unembedding when left in host memory (unembed_on_host) */
  uint64_t lora_state;    /* parameters, gradients, AdamW m and v: fp32 */
  int offload;            /* 1: the layer inputs live in host memory, a ring of 2 on the device */
  uint64_t checkpoints;   /* layer inputs on the device: [L+1, n, H] fp32 (activation
                             checkpointing), or the ring [2, n, H] when offloaded */
  uint64_t host_inputs;   /* host memory of the offloaded layer inputs [L-1, n, H] */
  uint64_t pcie_bytes;    /* host <-> device bytes per step: the offloaded inputs out and
                             back, the embedding rows in */
  uint64_t layer_tape;    /* one layer's recomputed activations (routed rows: one chunk) */
  char keep_mode[8];      /* keep_activations as asked: "auto", "true", "false" */
  int keeps;              /* 1: the step keeps every layer's activations (no recompute):
                             true, or auto when they fit 3/4 of the memory left (as the
                             trainer decides on a device: never while offloading) */
  uint64_t kept_tapes;    /* what keeping adds: the other layers' tapes (in allocated when
                             keeps) */
  /* The same step on this host's CPU backend (experts all at once): the
   * tapes there, auto's budget from MemAvailable now (3/4 of it less the
   * mapped checkpoint and the step's other state), and the mode it gets. */
  uint64_t cpu_kept_tapes, cpu_keep_budget;
  int cpu_keeps;
  uint64_t grad_buffers;  /* one layer's activation gradients (routed rows: one chunk),
                             the batch */
  uint64_t scratch;       /* the backend's scratch: the largest op's need */
  uint64_t workspace;     /* cuBLASLt workspace */
  uint64_t dnn_workspace; /* cuDNN attention workspace */
  uint64_t reserve;       /* MXL_PLAN_RUNTIME_RESERVE */
  uint64_t allocated;     /* what mxlora allocates: all the above but the reserve */
  uint64_t total;         /* allocated + reserve */
  uint64_t gpu_bytes;
  int fits;               /* total <= gpu_bytes */
  int longest_seq;        /* the longest seq_len (a multiple of 256, batch as given) that
                             fits, up to the model's context; 0: none */
  uint64_t kv_cache_fp32; /* generation: the KV cache for one sequence of seq_len */
} mxl_plan;

mxl_status mxl_plan_compute(const mxl_plan_request *req, mxl_plan *out);

/* "16GB", "80 GiB", "96" (GiB: GPUs are labelled in binary units), "24000MiB". */
mxl_status mxl_plan_parse_bytes(const char *text, uint64_t *bytes_out);

#ifdef __cplusplus
}
#endif

#endif
