/* Public API: opening gpt-oss checkpoints, inspecting them, writing tiny ones. */
#ifndef MXLORA_MODEL_H
#define MXLORA_MODEL_H

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

/* Explains what is at `path` (a repo, any folder or file of it, a single
 * .safetensors file): layouts, file roles, tensors by role, parameter
 * counts, config, tokenizer. `as_json` selects a JSON document instead of
 * plain text. The returned string is malloc'd; the caller frees it. */
mxl_status mxl_inspect(const char *path, int as_json, char **report_out);

/* Options of `mxlora tiny`. */
typedef struct mxl_tiny_options {
  const char *preset; /* "test" (~1M params), "bench" (~50-100M), "gpt-oss-20b" */
  const char *layout; /* "hf", "original", "metal" or "all" */
  uint64_t seed;
  const char *vocab;  /* NULL: the small built-in vocabulary; or a .tiktoken path */
} mxl_tiny_options;

typedef void (*mxl_progress_fn)(void *user, const char *what, double done, double total);

/* Writes a deterministic gpt-oss-architecture checkpoint under `out_dir`
 * (HF layout at the root, original/ and metal/ beside it as asked). */
mxl_status mxl_tiny_write(const char *out_dir, const mxl_tiny_options *opt,
                          mxl_progress_fn progress, void *user);

#ifdef __cplusplus
}
#endif

#endif
