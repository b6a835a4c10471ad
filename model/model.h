/* The in-memory view of a gpt-oss checkpoint, identical whichever of the
 * three published layouts it was read from (docs/gpt-oss.md §2–§4).
 *
 * Weights are pointers into read-only file mappings: nothing is expanded,
 * converted or copied on load. MXFP4 experts stay packed. Where a layout
 * stores a transformed tensor (metal/model.bin's permuted, pre-scaled q/k
 * rows and +14 scales) the view records the transform (qk_interleaved,
 * attn_scale, mxl_mxfp4_weight.scale_bias) so the math stays identical. */
#ifndef MXL_MODEL_MODEL_H
#define MXL_MODEL_MODEL_H

#include "core/fileio.h"
#include "kernels/ops.h"
#include "model/config.h"

typedef enum mxl_layout {
  MXL_LAYOUT_HF = 0,   /* repo root: config.json + model*.safetensors (transformers, vLLM) */
  MXL_LAYOUT_ORIGINAL, /* original/: block.N.* names, fused qkv (OpenAI reference code) */
  MXL_LAYOUT_METAL,    /* metal/model.bin (OpenAI's Apple Metal runtime) */
} mxl_layout;

const char *mxl_layout_name(mxl_layout layout); /* "hf", "original", "metal" */
#define MXL_LAYOUT_BIT(layout) (1u << (unsigned)(layout))

struct mxl_safetensors;

/* One transformer block. H hidden, I intermediate, E experts, nh/nkv heads,
 * d head dim; bf16 unless said. */
typedef struct mxl_layer_weights {
  const uint16_t *attn_norm; /* [H] input_layernorm */
  mxl_bf16_weight q;         /* [nh*d, H] + bias [nh*d] */
  mxl_bf16_weight k;         /* [nkv*d, H] + bias */
  mxl_bf16_weight v;         /* [nkv*d, H] + bias */
  mxl_bf16_weight o;         /* [H, nh*d] + bias [H] */
  const uint16_t *sinks;     /* [nh] */
  const uint16_t *mlp_norm;  /* [H] post_attention_layernorm */
  mxl_bf16_weight router;    /* [E, H] + bias [E] */
  mxl_mxfp4_weight gate_up;  /* E × [2I, H] + bias [2I]; rows interleaved gate (even), up (odd) */
  mxl_mxfp4_weight down;     /* E × [H, I] + bias [H] */
} mxl_layer_weights;

typedef struct mxl_weights {
  mxl_bf16_weight embed;       /* [vocab_rows, H], no bias */
  mxl_layer_weights *layers;   /* [n_layers] */
  const uint16_t *final_norm;  /* [H] */
  mxl_bf16_weight unembed;     /* [vocab_rows, H], no bias */
  int vocab_rows;              /* config vocab_size, or 200014-style cut in metal */
  int qk_interleaved;          /* 1: q/k rows in adjacent RoPE pairs (metal) */
  float attn_scale;            /* score = (q·k)·attn_scale: 1/sqrt(d); metal pre-scales q by
                                  0.5 and k by 0.25, so there it is 8/sqrt(d) (1 for d = 64) */
} mxl_weights;

/* The tokenizer section a metal/model.bin carries (docs/gpt-oss.md §4.1), from its
 * 16-byte tokenizer header (file offset 132) through the last token; parsed
 * by datasets/ (mxl_tokenizer_from_metal_section). */
typedef struct mxl_metal_tokenizer {
  const uint8_t *data;
  size_t size;
} mxl_metal_tokenizer;

struct mxl_model {
  mxl_config config;
  mxl_layout layout;
  mxl_weights w;
  char *path;     /* what the user named (folder or file) */
  char *dir;      /* the folder holding the chosen layout (tokenizer files live here or above) */
  int has_metal_tokenizer;
  mxl_metal_tokenizer metal_tokenizer;
  mxl_mapping *mappings; /* every mapped file; weights point into these */
  int n_mappings;
  struct mxl_safetensors *st; /* HF / original: the open checkpoint (owns its mappings) */
  unsigned layouts_present;   /* MXL_LAYOUT_BIT of every layout found in the same repo */
};

#endif
