/* Private to model/: the tensor catalogue of each published layout, the
 * metal/model.bin offset arithmetic, and the per-layout readers that fill
 * struct mxl_model. The writer (tiny) and inspect use the same catalogue,
 * so names, shapes and offsets are defined once. */
#ifndef MXL_MODEL_CHECKPOINT_H
#define MXL_MODEL_CHECKPOINT_H

#include <stdint.h>

#include "model/config.h"
#include "model/model.h"
#include "model/safetensors.h"

/* ---- tensor catalogue (docs/gpt-oss.md §2.2, §3.2) ---- */

typedef enum mxl_tensor_kind {
  MXL_T_EMBED,       /* [V, H] */
  MXL_T_ATTN_NORM,   /* [H] */
  MXL_T_Q_W,         /* [nh*d, H] (HF) */
  MXL_T_Q_B,         /* [nh*d] */
  MXL_T_K_W,         /* [nkv*d, H] */
  MXL_T_K_B,         /* [nkv*d] */
  MXL_T_V_W,         /* [nkv*d, H] */
  MXL_T_V_B,         /* [nkv*d] */
  MXL_T_QKV_W,       /* [(nh+2nkv)*d, H] (original, metal): q, k, v rows */
  MXL_T_QKV_B,       /* [(nh+2nkv)*d] */
  MXL_T_SINKS,       /* [nh] */
  MXL_T_O_W,         /* [H, nh*d] */
  MXL_T_O_B,         /* [H] */
  MXL_T_MLP_NORM,    /* [H] */
  MXL_T_ROUTER_W,    /* [E, H] */
  MXL_T_ROUTER_B,    /* [E] */
  MXL_T_GU_BLOCKS,   /* [E, 2I, H/32, 16] u8 */
  MXL_T_GU_SCALES,   /* [E, 2I, H/32] u8 */
  MXL_T_GU_BIAS,     /* [E, 2I] */
  MXL_T_DOWN_BLOCKS, /* [E, H, I/32, 16] u8 */
  MXL_T_DOWN_SCALES, /* [E, H, I/32] u8 */
  MXL_T_DOWN_BIAS,   /* [E, H] */
  MXL_T_FINAL_NORM,  /* [H] */
  MXL_T_UNEMBED,     /* [V, H] */
  /* Experts stored dense (a merged bf16 export; published checkpoints use
   * the MXFP4 kinds above). HF keeps transformers' orientation, original/
   * the reference code's: */
  MXL_T_GU_W,        /* HF [E, H, 2I] gate_up_proj; original [E, 2I, H] mlp1_weight */
  MXL_T_DOWN_W,      /* HF [E, I, H] down_proj;     original [E, H, I] mlp2_weight */
  MXL_T_COUNT
} mxl_tensor_kind;

typedef enum mxl_tensor_role {
  MXL_ROLE_EMBEDDING,
  MXL_ROLE_ATTENTION,
  MXL_ROLE_NORM,
  MXL_ROLE_ROUTER,
  MXL_ROLE_EXPERTS,      /* MXFP4 blocks and scales */
  MXL_ROLE_EXPERT_BIAS,  /* bf16 expert biases */
  MXL_ROLE_UNEMBEDDING,
  MXL_ROLE_EXPERTS_DENSE, /* bf16 expert weights (merged exports) */
  MXL_ROLE_COUNT
} mxl_tensor_role;

enum { MXL_TENSOR_NAME_MAX = 96 };

typedef struct mxl_tensor_desc {
  char name[MXL_TENSOR_NAME_MAX];
  mxl_tensor_kind kind;
  int layer; /* -1 outside the blocks */
  mxl_dtype dtype;
  int ndim;
  int64_t shape[4];
} mxl_tensor_desc;

/* The tensors of the HF or original layout (in the order the layout writer
 * writes them); returns their count. `out` may be NULL to count only. */
int mxl_checkpoint_tensors(const mxl_config *c, mxl_layout layout, mxl_tensor_desc *out);
/* The same with dense bf16 experts (MXL_T_GU_W, MXL_T_DOWN_W) in place of
 * the MXFP4 blocks and scales when dense_experts is 1. */
int mxl_checkpoint_tensors_ex(const mxl_config *c, mxl_layout layout, int dense_experts,
                              mxl_tensor_desc *out);
/* Bytes of one tensor. */
int64_t mxl_tensor_desc_bytes(const mxl_tensor_desc *d);
mxl_tensor_role mxl_tensor_kind_role(mxl_tensor_kind kind);
/* "embedding", "attention", "norms", "router", "experts (MXFP4)", ... */
const char *mxl_tensor_role_name(mxl_tensor_role role);
/* original/dtypes.json label of a tensor: "BF16", "FP4" (blocks), "UE8" (scales). */
const char *mxl_tensor_kind_original_label(mxl_tensor_kind kind);
/* Classifies a tensor name of either layout; returns 0 if it is not a
 * gpt-oss tensor name, else 1 with *kind and *layer set. */
int mxl_tensor_name_parse(const char *name, mxl_tensor_kind *kind, int *layer);

/* ---- metal/model.bin (docs/gpt-oss.md §4) ---- */

enum {
  MXL_METAL_PAGE = 16384,
  MXL_METAL_ALIGN = 16,
  MXL_METAL_HEADER_BYTES = 148, /* through the 16-byte tokenizer header */
  MXL_METAL_SCALE_OFFSET = 14,  /* stored scale = original + 14 */
};

extern const uint8_t mxl_mbin_magic[16];       /* "GPT-OSS v1.0" + u32 0 */
extern const uint8_t mxl_mbin_model_uuid[16];  /* df52dc86-1789-4ed0-a295-66f10508145b */
extern const uint8_t mxl_mbin_layout_uuid[16]; /* 229177a8-... "Apple GPU layout" */
extern const uint8_t mxl_mbin_tokenizer_uuid[16];
extern const uint8_t mxl_mbin_return_uuid[16]; /* <|return|> */
extern const uint8_t mxl_mbin_call_uuid[16];   /* <|call|> */

/* Every absolute file offset of a model.bin, computed as the reader in
 * OpenAI's gpt_oss/metal does (each item rounded up to 16 bytes, the weight
 * regions page-aligned). */
typedef struct mxl_metal_layout {
  uint32_t num_special, num_text, regex_size, tokens_size;
  uint64_t tokenizer_end;  /* first byte after the tokens */
  uint64_t vocab_rows;     /* num_text + num_special */
  uint64_t embedding;      /* [vocab_rows, H] bf16 */
  uint64_t block0;         /* first block's shared weights */
  uint64_t block_stride;   /* per_block_shared_weights_size */
  /* offsets inside a block's shared weights */
  uint64_t attn_norm, qkv_w, qkv_b, sinks, out_w, out_b, mlp_norm, gate_w, gate_b;
  uint64_t final_norm, unembedding;
  uint64_t moe0;             /* first block's expert region */
  uint64_t moe_block_stride; /* page-rounded experts of one block */
  uint64_t expert_stride;    /* per_expert_block_weight_size */
  /* offsets inside one expert */
  uint64_t mlp1_blocks, mlp1_scales, mlp1_bias, mlp2_blocks, mlp2_scales, mlp2_bias;
  uint64_t file_size; /* the file ends right after the last expert */
} mxl_metal_layout;

/* Fails (naming `source`) if the sizes overflow. */
mxl_status mxl_metal_layout_compute(const mxl_config *c, uint32_t num_special,
                                    uint32_t num_text, uint32_t regex_size,
                                    uint32_t tokens_size, const char *source,
                                    mxl_metal_layout *out);

/* ---- readers: fill m->config, m->w, m->st/mappings, m->dir ---- */

/* HF names from `weights` (a .safetensors file or a model.safetensors.index.json)
 * with m->config already parsed. */
mxl_status mxl_checkpoint_read_hf(mxl_model *m, const char *weights);
/* original/ names; checks `dtypes_json` (may be NULL when absent). */
mxl_status mxl_checkpoint_read_original(mxl_model *m, const char *weights,
                                        const char *dtypes_json);
/* metal/model.bin: everything from the file itself. */
mxl_status mxl_checkpoint_read_metal(mxl_model *m, const char *path);
/* The same over a file image in memory (which must outlive m); `name` is
 * used in messages. The fuzz target calls it directly. */
mxl_status mxl_checkpoint_read_metal_buffer(mxl_model *m, const uint8_t *data, size_t size,
                                            const char *name);

/* The tensors of original/ without the dtypes.json check (used by
 * mxl_checkpoint_read_original). */
mxl_status mxl_checkpoint_read_original_tensors(mxl_model *m, const char *weights);
/* Sets every rows/cols/n_experts of the view from m->config and
 * m->w.vocab_rows. */
void mxl_model_set_dims(mxl_model *m);

/* Finds the weights of a folder: model.safetensors.index.json, else
 * model.safetensors, else the only *.safetensors file. malloc'd path or
 * NULL (error set, naming the folder). */
char *mxl_checkpoint_find_weights(const char *dir);

#endif
