/* A training run's settings, read from a recipe (JSON) after command-line
 * overrides have been applied to it. Every field has a default except
 * model, data and out; errors name the recipe and the field
 * ("recipes/demo.json: lora.rank: ..."). The recipe keys are documented in
 * recipes/README.md. */
#ifndef MXL_TRAIN_TRAIN_CONFIG_H
#define MXL_TRAIN_TRAIN_CONFIG_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "mxlora.h"
#include "train/schedule.h"

typedef struct mxl_train_config {
  const char *name;         /* recipe name, for provenance */
  const char *model;        /* checkpoint path */
  const char *tiny_preset;  /* write a tiny model at `model` first if absent (demo) */
  uint64_t tiny_seed;
  const char *tiny_corpus;  /* vocabulary corpus for that tiny model */
  const char *tiny_set[16]; /* its config overrides "key=value" */
  int n_tiny_set;
  const char *data;         /* training data file */
  const char *eval_data;    /* NULL: split eval_fraction off `data` */
  double eval_fraction;
  int eval_count;
  const char *out;          /* run folder: adapter, checkpoint, metrics, curve */

  int rank;
  float alpha;
  int rslora;
  unsigned attn_targets, expert_targets; /* bit masks over mxl_lora_target */
  int attn_layers[256], n_attn_layers;   /* n = 0: every layer */
  int expert_layers[256], n_expert_layers;
  float dropout;

  int steps;                /* optimizer steps (0: from epochs) */
  double epochs;
  int batch_size, seq_len, grad_accum, pack;
  mxl_schedule schedule;    /* kind, lr, warmup (steps), min_ratio; total set later */
  double warmup_ratio;      /* used when warmup_steps is absent */
  float weight_decay, beta1, beta2, eps, max_grad_norm;
  int max_bad_steps;        /* stop after this many NaN/Inf steps in a row */
  const char *loss_mask, *analysis_rule;
  int truncate_cut;
  int skip_bad_lines;       /* 1: bad samples are counted and skipped; 0: the first one fails */         /* 1: long documents keep their first seq_len tokens; 0: dropped */
  uint64_t seed;
  int eval_every, save_every;
  int threads;
  const char *backend;      /* "cpu" or "ref" */
  int adapter_bf16;
  int resume;
} mxl_train_config;

/* Parses a recipe object. Strings point into `recipe`, which must outlive cfg. */
mxl_status mxl_train_config_parse(const cJSON *recipe, const char *source,
                                  mxl_train_config *cfg);

/* Applies an override "key=value" (dotted keys reach into objects: lora.rank=8)
 * to a recipe object. Values are parsed as JSON when they are valid JSON
 * (numbers, true/false, arrays), else taken as strings. */
mxl_status mxl_recipe_override(cJSON *recipe, const char *assignment);

#endif
