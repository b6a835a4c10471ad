/* gpt-oss model configuration, one struct for all three checkpoint layouts
 * (docs/gpt-oss.md §1). Parsed from config.json (HF root), original/config.json, or the
 * metal/model.bin header, then validated by mxl_config_validate. */
#ifndef MXL_MODEL_CONFIG_H
#define MXL_MODEL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "mxlora.h"

enum { MXL_MAX_LAYERS = 256, MXL_MAX_STOP_IDS = 8 };

/* Whose field names an error message uses (the file the value came from). */
typedef enum mxl_config_names {
  MXL_CONFIG_NAMES_HF = 0,   /* config.json: hidden_size, num_local_experts, ... */
  MXL_CONFIG_NAMES_ORIGINAL, /* original/config.json: num_experts, rope_ntk_beta, ... */
  MXL_CONFIG_NAMES_METAL,    /* metal/model.bin header: embedding_dim, num_blocks, ... */
} mxl_config_names;

typedef struct mxl_config {
  int n_layers;          /* num_hidden_layers: 24 (20b), 36 (120b) */
  int n_experts;         /* num_local_experts: 32, 128 */
  int experts_per_token; /* num_experts_per_tok: 4 */
  int vocab_size;        /* embedding / lm_head rows in config: 201088 (metal: rows stored) */
  int hidden;            /* hidden_size: 2880 */
  int intermediate;      /* intermediate_size (per expert): 2880 */
  int head_dim;          /* 64 */
  int n_heads;           /* num_attention_heads: 64 */
  int n_kv_heads;        /* num_key_value_heads: 8 */
  int sliding_window;    /* 128 */
  int initial_context;   /* rope_scaling.original_max_position_embeddings: 4096 */
  int max_context;       /* max_position_embeddings: 131072 */
  float rope_theta;      /* 150000 */
  float rope_factor;     /* rope_scaling.factor: 32 */
  float rope_beta_fast;  /* 32 */
  float rope_beta_slow;  /* 1 */
  float swiglu_limit;    /* 7.0 */
  float swiglu_alpha;    /* 1.702 (not stored in the files) */
  float rms_eps;         /* 1e-5 */
  uint8_t layer_sliding[MXL_MAX_LAYERS]; /* 1 = sliding-window layer (even index) */
  int bos_id, pad_id;                    /* 199998, 199999; -1 when unknown */
  int n_stop_ids;
  int stop_ids[MXL_MAX_STOP_IDS]; /* generation_config eos ids: 200002, 199999, 200012 */
  mxl_config_names names;         /* field names for error messages */
} mxl_config;

/* Fills the published gpt-oss-20b values (tests and `tiny --shape`). */
void mxl_config_gpt_oss_20b(mxl_config *c);
/* The published gpt-oss-120b values (36 layers, 128 experts). */
void mxl_config_gpt_oss_120b(mxl_config *c);

/* Checks every field for consistency; the error names the field and, in
 * `source`, the file it came from (e.g. "config.json: hidden_size ..."),
 * using the field names of c->names. */
mxl_status mxl_config_validate(const mxl_config *c, const char *source);

/* ---- parsing; `source` names the file in error messages ---- */

/* HF config.json (docs/gpt-oss.md §1.1): rope_scaling or transformers-v5
 * rope_parameters; layer_types honoured as given (default: even layers
 * slide); eos/bos/pad ids become the stop ids until a generation config
 * says otherwise. Validates. */
mxl_status mxl_config_parse_hf(const char *json, size_t len, const char *source,
                               mxl_config *c);
/* original/config.json (docs/gpt-oss.md §1.3). Validates. */
mxl_status mxl_config_parse_original(const char *json, size_t len, const char *source,
                                     mxl_config *c);
/* generation_config.json (docs/gpt-oss.md §1.2): replaces the stop ids and the
 * bos/pad ids of an already parsed config; checks them against vocab_size. */
mxl_status mxl_config_parse_generation(const char *json, size_t len, const char *source,
                                       mxl_config *c);
/* The same three, reading a file (its path names it in errors). */
mxl_status mxl_config_load_hf(const char *path, mxl_config *c);
mxl_status mxl_config_load_original(const char *path, mxl_config *c);
mxl_status mxl_config_load_generation(const char *path, mxl_config *c);

/* ---- metal/model.bin model header (docs/gpt-oss.md §4.1: 17 × 4 bytes at offset 32) ---- */
enum { MXL_METAL_MODEL_HEADER_BYTES = 68 };
/* Parses the header, deriving initial_context (= context_length ×
 * interpolation_scale), rope_factor (1/interpolation_scale) and the YaRN
 * betas from yarn_offset/yarn_scale, then checks that the header's
 * yarn_offset, yarn_scale and yarn_multiplier are what the derived config
 * gives. vocab_size is left 0 (the caller knows the tokenizer's rows);
 * layers alternate sliding/full as the Metal runtime does. Does not
 * validate (the caller does, once vocab_size is known). */
mxl_status mxl_config_parse_metal(const uint8_t header[MXL_METAL_MODEL_HEADER_BYTES],
                                  const char *source, mxl_config *c);
/* Writes the header for `c` (as create-local-model.py would). */
void mxl_config_write_metal(const mxl_config *c, uint8_t out[MXL_METAL_MODEL_HEADER_BYTES]);

/* ---- derived values ---- */

/* YaRN quantities (docs/gpt-oss.md §4.1, §5.3), computed in double like the
 * reference scripts. */
typedef struct mxl_yarn {
  double low, high;          /* ramp bounds in RoPE pair indices (8.0928, 17.398) */
  double concentration;      /* 0.1·ln(factor) + 1: multiplies cos and sin */
  float interpolation_scale; /* 1/factor */
  float offset, scale;       /* metal yarn_offset = -low/(high-low), yarn_scale = 1/(high-low) */
  float multiplier;          /* metal yarn_multiplier = concentration */
} mxl_yarn;
void mxl_config_yarn(const mxl_config *c, mxl_yarn *y);

/* Parameter counts (docs/gpt-oss.md §9.1). */
typedef struct mxl_param_counts {
  int64_t total;                 /* every weight and bias */
  int64_t mxfp4;                 /* expert weight matrices (stored MXFP4) */
  int64_t bf16;                  /* everything else */
  int64_t embedding;             /* = unembedding (untied) */
  int64_t attention_per_layer;   /* q,k,v,o weights + biases + sinks */
  int64_t router_per_layer;      /* weight + bias */
  int64_t expert;                /* one expert: gate_up + down weights + biases */
  int64_t norms;                 /* all RMSNorm gains */
  int64_t active;                /* per token: k experts, lm_head, no embedding */
  int64_t active_with_embedding; /* active + the embedding */
} mxl_param_counts;
void mxl_config_param_counts(const mxl_config *c, mxl_param_counts *out);

/* ---- writing (tiny checkpoints); malloc'd NUL-terminated JSON or NULL ---- */
char *mxl_config_to_hf_json(const mxl_config *c);
char *mxl_config_to_original_json(const mxl_config *c);
char *mxl_config_to_generation_json(const mxl_config *c);

#endif
