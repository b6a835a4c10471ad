/* LoRA parameter sets: which projections are adapted (targets × layers),
 * rank, alpha, scaling, PEFT-compatible initialisation, and the memory
 * layout shared by the parameters, their gradients and AdamW's m and v.
 *
 * Every LoRA parameter lives in ONE contiguous fp32 block, carved into named
 * tensors by one sizing function (mxl_lora_layout_create), as llm.c does for
 * its parameters. Gradients and optimizer moments are further blocks of the
 * same size with the same offsets, so the optimizer is one flat loop over
 * `n_floats` and a checkpoint is one write.
 *
 * Tensors, per adapted (layer, target); R rank, E experts (docs/gpt-oss.md §8):
 *   attention q/k/v/o   A [R, in]        B [out, R]           (PEFT orientation)
 *   experts gate_up/down A [E, R, in]    B [E, out, R]        (contiguous per expert)
 * q: in H, out nh·d;  k, v: in H, out nkv·d;  o: in nh·d, out H;
 * gate_up: in H, out 2I (interleaved gate/up rows like the base);
 * down: in I, out H.
 * Forward: y += scaling·(x·A_eᵀ)·B_eᵀ; scaling = alpha/R, or alpha/√R with
 * rsLoRA.
 *
 * PEFT keeps each expert parameter as one concatenated pair,
 *   A_peft [E·R, in]   row e·R + k  = our A[e, k, :]    (identical bytes)
 *   B_peft [out, R·E]  column k·E + e = our B[e, :, k]  (a transpose-like
 *                                                         re-indexing)
 * and mxl_lora_b_to_peft / mxl_lora_b_from_peft perform the B mapping.
 *
 * Naming: "layers.<l>.attn.<q|k|v|o>.lora_<A|B>" and
 *         "layers.<l>.experts.<gate_up|down>.lora_<A|B>". */
#ifndef MXL_ADAPTERS_LORA_H
#define MXL_ADAPTERS_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "core/rng.h"
#include "kernels/ops.h"
#include "model/config.h"
#include "model/lora_view.h"

enum {
  MXL_LORA_MAX_RANK = 4096,
  MXL_LORA_ALIGN = 16, /* floats: every tensor starts on a 64-byte boundary */
  MXL_LORA_NAME_SIZE = 48,
};

/* Bit masks over mxl_lora_target (model/lora_view.h). */
#define MXL_LORA_BIT(t) (1u << (t))
#define MXL_LORA_ATTN_BITS                                                                 \
  (MXL_LORA_BIT(MXL_LORA_Q) | MXL_LORA_BIT(MXL_LORA_K) | MXL_LORA_BIT(MXL_LORA_V) |       \
   MXL_LORA_BIT(MXL_LORA_O))
#define MXL_LORA_EXPERT_BITS (MXL_LORA_BIT(MXL_LORA_GATE_UP) | MXL_LORA_BIT(MXL_LORA_DOWN))

/* "q", "k", "v", "o", "gate_up", "down". */
const char *mxl_lora_target_name(mxl_lora_target t);
/* The inverse; -1 for an unknown name. */
int mxl_lora_target_parse(const char *name);
/* 1 for gate_up and down (per-expert pairs), 0 for attention. */
int mxl_lora_target_is_expert(mxl_lora_target t);

/* Parses a comma-separated target list: names from mxl_lora_target_name
 * plus the groups "attn" (q,k,v,o), "experts" (gate_up,down) and "all",
 * e.g. "q,v,experts". The error names the unknown item. */
mxl_status mxl_lora_targets_parse(const char *spec, unsigned *mask_out);

typedef struct mxl_lora_config {
  int rank;    /* R, 1..MXL_LORA_MAX_RANK */
  float alpha; /* lora_alpha */
  int rslora;  /* 1: scaling = alpha/√R (PEFT use_rslora), else alpha/R */
  /* layers[t][l] = 1 when target t is adapted in layer l (per target, so
   * attention can cover every layer while experts cover a few, as in the
   * cookbook recipe). */
  uint8_t layers[MXL_LORA_N_TARGETS][MXL_MAX_LAYERS];
} mxl_lora_config;

/* rank, alpha, no rsLoRA, nothing targeted. */
void mxl_lora_config_init(mxl_lora_config *lc, int rank, float alpha);

/* Adapts every target in `mask` on layers[0..n) (each in [0, n_model_layers)),
 * or on all n_model_layers layers when layers == NULL. */
mxl_status mxl_lora_config_add(mxl_lora_config *lc, unsigned mask, const int *layers, int n,
                               int n_model_layers);

float mxl_lora_scaling(const mxl_lora_config *lc);

/* Bit mask of the targets adapted in at least one layer. */
unsigned mxl_lora_config_targets(const mxl_lora_config *lc);

/* Shape of target t's base projection for config c (per expert). */
typedef struct mxl_lora_dims {
  int in, out;
  int n_experts; /* 1 for attention targets */
} mxl_lora_dims;

mxl_lora_dims mxl_lora_target_dims(const mxl_config *c, mxl_lora_target t);

/* One named tensor of the block. */
typedef struct mxl_lora_tensor {
  char name[MXL_LORA_NAME_SIZE];
  int layer;
  mxl_lora_target target;
  int is_b;      /* 0: A, 1: B */
  int n_experts; /* 1 for attention; the tensor is then 2-D */
  int rows, cols; /* one expert's matrix: A [R, in], B [out, R] */
  size_t offset; /* floats from the block start; a multiple of MXL_LORA_ALIGN */
  size_t count;  /* n_experts·rows·cols */
} mxl_lora_tensor;

/* The sizing: every tensor's place in the block. Tensors are ordered by
 * layer, then target (q, k, v, o, gate_up, down), then A before B. */
typedef struct mxl_lora_layout {
  mxl_lora_config cfg;
  int n_layers;
  mxl_lora_dims dims[MXL_LORA_N_TARGETS];
  mxl_lora_tensor *tensors; /* [n_tensors] */
  int n_tensors;
  int *a_index;    /* [n_layers·MXL_LORA_N_TARGETS]: tensor index of A, or -1 */
  size_t n_params; /* Σ count: trainable parameters */
  size_t n_floats; /* block length including alignment padding */
  float scaling;
} mxl_lora_layout;

/* The one sizing function. Refuses a rank outside 1..MXL_LORA_MAX_RANK,
 * no target at all, or layers beyond c->n_layers. */
mxl_status mxl_lora_layout_create(const mxl_config *c, const mxl_lora_config *lc,
                                  mxl_lora_layout **out);
void mxl_lora_layout_destroy(mxl_lora_layout *lay);

/* A (layer, target) pair inside a block that uses the layout. */
typedef struct mxl_lora_pair {
  float *A; /* [E, R, in]: expert e's A_e [R, in] at A + e·R·in */
  float *B; /* [E, out, R]: expert e's B_e [out, R] at B + e·out·R */
  int rank, in, out, n_experts;
} mxl_lora_pair;

/* Finds (layer, t) in `block` (parameters, gradients, m or v): returns 1 and
 * fills *out, or 0 (and zeroes *out) when that pair is not adapted. */
int mxl_lora_find(const mxl_lora_layout *lay, float *block, int layer, mxl_lora_target t,
                  mxl_lora_pair *out);

/* Tensor index by exact name, or -1. */
int mxl_lora_tensor_index(const mxl_lora_layout *lay, const char *name);

/* Fills the model's view (model/lora_view.h) of `block`: view->layers must
 * have room for lay->n_layers entries; scale = scaling · overlay_scale. */
void mxl_lora_fill_view(const mxl_lora_layout *lay, float *block, float overlay_scale,
                        mxl_lora_view *view);

/* A LoRA parameter set: the layout plus its one parameter block, in host
 * memory (be == NULL) or in a backend's memory. */
typedef struct mxl_lora {
  mxl_lora_layout *layout;
  mxl_backend *be; /* NULL: params is host memory from aligned_alloc */
  float *params;   /* [layout->n_floats], zeroed at creation */
} mxl_lora;

/* Allocates a zeroed set for model config c. */
mxl_status mxl_lora_create(const mxl_config *c, const mxl_lora_config *lc, mxl_backend *be,
                           mxl_lora **out);
void mxl_lora_destroy(mxl_lora *lora);

/* PEFT's default initialisation (init_lora_weights=True): every A (each
 * expert's too) from kaiming_uniform_(a=√5), i.e. U(-1/√in, 1/√in) with
 * in = the projection's input width; every B zero. The numbers come from
 * SplitMix64 streams: tensor (layer, target) uses the stream seeded with
 * mxl_lora_stream_seed(seed, layer, target), so a tensor's initial values do
 * not depend on which other targets are selected. Padding stays zero. */
mxl_status mxl_lora_init_peft(mxl_lora *lora, uint64_t seed);

/* The bound PEFT's A initialisation uses: 1/√in. */
float mxl_lora_init_bound(int in);

uint64_t mxl_lora_stream_seed(uint64_t seed, int layer, mxl_lora_target t);

/* Copies tensor i of a set into host memory `dst` (count floats), or back;
 * works for host and backend sets alike. */
void mxl_lora_tensor_read(const mxl_lora *lora, int i, float *dst);
void mxl_lora_tensor_write(mxl_lora *lora, int i, const float *src);

/* PEFT re-indexing of an expert B: ours [E, out, R] <-> PEFT's [out, R·E]
 * (column k·E + e holds expert e's rank-k column). A needs no mapping. */
void mxl_lora_b_to_peft(float *dst, const float *src, int n_experts, int out, int rank);
void mxl_lora_b_from_peft(float *dst, const float *src, int n_experts, int out, int rank);

#endif
