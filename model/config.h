/* gpt-oss model configuration, one struct for all three checkpoint layouts
 * (spec §1). Parsed from config.json (HF root), original/config.json, or the
 * metal/model.bin header, then validated by mxl_config_validate. */
#ifndef MXL_MODEL_CONFIG_H
#define MXL_MODEL_CONFIG_H

#include <stdint.h>

#include "mxlora.h"

enum { MXL_MAX_LAYERS = 256, MXL_MAX_STOP_IDS = 8 };

typedef struct mxl_config {
  int n_layers;          /* num_hidden_layers: 24 (20b), 36 (120b) */
  int n_experts;         /* num_local_experts: 32, 128 */
  int experts_per_token; /* num_experts_per_tok: 4 */
  int vocab_size;        /* embedding / lm_head rows in config: 201088 */
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
  int bos_id, pad_id;                    /* 199998, 199999 */
  int n_stop_ids;
  int stop_ids[MXL_MAX_STOP_IDS]; /* generation_config eos ids: 200002, 199999, 200012 */
} mxl_config;

/* Fills the published gpt-oss-20b values (tests and `tiny --shape`). */
void mxl_config_gpt_oss_20b(mxl_config *c);

/* Checks every field for consistency; the error names the field and, in
 * `source`, the file it came from (e.g. "config.json: hidden_size ..."). */
mxl_status mxl_config_validate(const mxl_config *c, const char *source);

#endif
