/* Public API: opening gpt-oss checkpoints, inspecting them, writing tiny ones. */
#ifndef MXLORA_MODEL_H
#define MXLORA_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mxl_model mxl_model;

/* Opens a gpt-oss checkpoint in place (mmap; nothing converted).
 * `path` may be a Hugging Face repo root (the root layout is chosen), its
 * original/ folder, its metal/ folder, metal/model.bin itself, or a single
 * .safetensors file of a complete model. */
mxl_status mxl_model_open(const char *path, mxl_model **model_out);
void mxl_model_close(mxl_model *model);

/* What an open model is, for banners and servers. The strings and the
 * stop ids stay owned by the model. */
typedef struct mxl_model_info {
  const char *layout;      /* the layout read: "hf", "original" or "metal" */
  const char *dir;         /* the folder holding it, where its tokenizer is found */
  int n_layers, n_experts, experts_per_token, hidden;
  const int *stop_ids;     /* generation_config.json's eos ids */
  int n_stop_ids;
} mxl_model_info;
void mxl_model_get_info(const mxl_model *model, mxl_model_info *out);

/* Explains what is at `path` (a repo, any folder or file of it, a single
 * .safetensors file): layouts, file roles, tensors by role, parameter
 * counts, config, tokenizer. `as_json` selects a JSON document instead of
 * plain text. The returned string is malloc'd; the caller frees it. */
mxl_status mxl_inspect(const char *path, int as_json, char **report_out);
/* The same, and *problems_out gets the number of things found unreadable
 * or inconsistent (a failed check, unreadable tensors, layouts that
 * disagree, a tokenizer file that does not load), each listed in the report
 * ("problems"); `mxlora inspect` exits non-zero when it is not 0. */
mxl_status mxl_inspect_checked(const char *path, int as_json, char **report_out,
                               int *problems_out);

/* What mxl_tiny_write made (optional output). */
typedef struct mxl_tiny_result {
  int64_t parameters;         /* total parameters of the model */
  int n_text_tokens;          /* ordinary tokens of the vocabulary written */
  int vocab_size;             /* embedding rows (config vocab_size) */
  uint64_t bytes_written;     /* all weight files together */
  int64_t mxfp4_encoded;      /* expert weights encoded by the MXFP4 codec (0 when the
                                 codes were drawn directly, as for the full-size shapes) */
  int64_t mxfp4_saturated;    /* of those, values clipped to ±6·scale */
  double mxfp4_rel_rms_error; /* sqrt(Σ(x-q)² / Σx²) of the codec over the experts */
  double mxfp4_max_abs_error;
} mxl_tiny_result;

/* Options of `mxlora tiny`. Zero-initialised options give the `test`
 * preset in every layout with seed 0. */
typedef struct mxl_tiny_options {
  const char *preset; /* "test" (~1M params, default), "bench" (~70M), or a full-size
                         random shape: "gpt-oss-20b", "gpt-oss-120b" */
  const char *layout; /* "hf" (OUT), "original" (OUT/original), "metal" (OUT/metal) or
                         "all" (all three, like the Hugging Face repo; default) */
  uint64_t seed;
  const char *vocab;        /* NULL: a small BPE vocabulary; or an o200k .tiktoken path */
  const char *vocab_corpus; /* text to learn the small vocabulary from (NULL: built-in
                               English and Russian text) */
  const char *const *set;   /* n_set config overrides "key=value": layers, experts,
                               experts_per_token, heads, kv_heads, head_dim, hidden,
                               intermediate, window, vocab, text_tokens, initial_context,
                               rope_theta, rope_factor, beta_fast, beta_slow,
                               swiglu_limit, rms_eps */
  int n_set;
  uint64_t shard_bytes; /* 0: HF root sharded above 4.8e9 bytes as published, original/
                           one file; else the greedy cap per shard for both */
  mxl_tiny_result *result; /* filled on success when not NULL */
} mxl_tiny_options;

typedef void (*mxl_progress_fn)(void *user, const char *what, double done, double total);

/* How inference holds the base weights. By default the forward reads the
 * mapped checkpoint files in place, from their page-cache pages (4 KB each).
 * With no_mmap (llama.cpp's --no-mmap) the weight files are copied once into
 * anonymous memory in 2 MB pages, which decode streams faster; the copy is
 * refused, with an error, when /proc/meminfo's MemAvailable cannot hold it.
 * `progress` (may be NULL) gets ("weights", bytes copied, bytes in all). */
typedef struct mxl_weight_options {
  int no_mmap;
  mxl_progress_fn progress;
  void *progress_user;
} mxl_weight_options;

/* Writes a deterministic gpt-oss-architecture checkpoint under `out_dir`
 * (HF layout at the root, original/ and metal/ beside it as asked), with
 * generation_config.json and the tokenizer files at the root. Every file is
 * written atomically; memory stays bounded whatever the shape. `progress`
 * (may be NULL) gets the file being written and bytes done / total. */
mxl_status mxl_tiny_write(const char *out_dir, const mxl_tiny_options *opt,
                          mxl_progress_fn progress, void *user);

#ifdef __cplusplus
}
#endif

#endif
