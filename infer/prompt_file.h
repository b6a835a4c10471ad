/* Prompt caches on disk (`mxlora generate --prompt-cache FILE`, as
 * llama.cpp's --prompt-cache): the KV cache after a prompt, so that a later
 * run whose prompt begins with the same tokens, on the same model with the
 * same adapters at the same scales, prefills only the rest.
 *
 * The file is the checksummed envelope of core/blob_file.h (the training
 * checkpoint's too) under its own magic, "MXLPROMP": meta {"key",
 * "tokens", "layers", "kv_dim", "window", "layer_types", "sliding_from"}
 * and blobs "tokens" (int32), "k.L" and "v.L" (float32 rows; full-attention
 * layers: every position; sliding-window layers: positions [sliding_from,
 * tokens)). A run continues from the longest prefix it shares with the
 * file when the file holds the window before that point: at most
 * MXL_PROMPT_FILE_SLACK positions before the file's end. `key` names what
 * the keys and values depend on (model fingerprint, adapters, scales). */
#ifndef MXL_INFER_PROMPT_FILE_H
#define MXL_INFER_PROMPT_FILE_H

#include "core/container.h"
#include "core/sha256.h"
#include "model/forward.h"

enum { MXL_PROMPT_FILE_SLACK = 64 };

/* The envelope's format: magic "MXLPROMP", version 1 (the fuzz target
 * seals its inputs with it). */
extern const mxl_container_format mxl_prompt_container;

/* Writes c's positions (its tokens: tokens[0, c->n_past)) to `path`,
 * atomically. */
mxl_status mxl_prompt_file_save(mxl_engine *e, const mxl_kv_cache *c, const int32_t *tokens,
                                const uint8_t key[MXL_SHA256_SIZE], const char *path);

/* 1 when `path` exists and is not a prompt cache (its first bytes are not
 * the magic): such a file is neither read nor replaced. */
int mxl_prompt_file_foreign(const char *path);

/* Fills the empty cache `dst` from `path` with the longest prefix of
 * `prompt` it can serve, at most n_prompt - 1 positions (the last runs for
 * its logits); *reused gets how many (0 when the file does not exist or
 * shares nothing usable). Fails, leaving dst empty, for a damaged file or
 * one made for another key: the caller may warn and prefill all. */
mxl_status mxl_prompt_file_load(mxl_engine *e, const char *path,
                                const uint8_t key[MXL_SHA256_SIZE], const int32_t *prompt,
                                int n_prompt, mxl_kv_cache *dst, int *reused);

#endif
