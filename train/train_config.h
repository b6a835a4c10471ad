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
  int skip_bad_lines;       /* 1: bad samples are counted and skipped; 0: the first one fails */
  uint64_t seed;
  int eval_every, save_every;
  int keep_checkpoints;     /* numbered copies of the last K saves (0: none) */
  int threads;
  const char *backend;      /* "cpu", "ref", "cuda", "cuda:N", "auto" */
  int adapter_bf16;
  int resume, overwrite;
  const char *init_adapter; /* start from this adapter file (NULL: PEFT init) */
  const char *rescue_dir;   /* where a failed save is retried (NULL: the temp dir) */
  const char *dist;         /* "auto", "none", "mpi", "nccl" */
  double dist_timeout_s;    /* longest wait for the other ranks */
  int zero_stage;           /* 1: AdamW moments sharded across ranks (ZeRO-1) */
  int moe_chunk;            /* tokens whose experts run at a time (0: the backend's default) */
  int unembed_on_host;      /* 1: a GPU leaves the unembedding in host memory */
  int keep_activations;     /* every layer's activations kept for the backward instead of
                               recomputed: 0 "auto" (when they fit), 1 true, 2 false
                               (model/train_step.h mxl_keep_mode) */
} mxl_train_config;

/* Parses a recipe object: every key is checked against the recipe schema
 * (type and range) first. Strings point into `recipe`, which must outlive
 * cfg. */
mxl_status mxl_train_config_parse(const cJSON *recipe, const char *source,
                                  mxl_train_config *cfg);

/* Sets recipe key `key` (dotted for nested ones: "lora.rank") from the
 * text a user typed, typed by the schema: strings stay strings, numbers
 * are parsed strictly (no trailing text, no hex, no inf/nan), booleans are
 * true/false, layer lists are "all", "[0,2]" or "0,2". Out-of-range values
 * are refused. Errors name `flag` ("--steps") or, when NULL, the key.
 * Setting "steps" removes "epochs" and the reverse: the last one given
 * decides. */
mxl_status mxl_recipe_set(cJSON *recipe, const char *key, const char *text, const char *flag);

/* mxl_recipe_set from "key=value". */
mxl_status mxl_recipe_override(cJSON *recipe, const char *assignment);

#endif
