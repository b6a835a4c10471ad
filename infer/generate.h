/* Token generation on an engine: chunked prefill of the prompt, then
 * sampled decode with the KV cache until a stop id or the token budget. */
#ifndef MXL_INFER_GENERATE_H
#define MXL_INFER_GENERATE_H

#include "infer/sampler.h"
#include "model/forward.h"

typedef struct mxl_gen_params {
  mxl_sampling sampling;
  int max_tokens;         /* new tokens at most */
  const int32_t *stop_ids;/* generation ends after emitting one of these */
  int n_stop;
  int prefill_chunk;      /* prompt tokens per forward call (0: 1024, 256 with
                             prompt_logits, at most the prompt) */
  int max_context;        /* KV cache size (0: prompt + max_tokens) */
  float *prompt_logits;   /* host [n_prompt, vocab_rows] or NULL: logits of every prompt position */
  const char *prompt_cache; /* a prompt cache file (infer/prompt_file.h) or NULL: read
                               before the prompt (not with prompt_logits), written after */
  const uint8_t *cache_key; /* [32]: what the file's keys and values depend on */
} mxl_gen_params;

typedef struct mxl_gen_stats {
  int prompt_tokens, generated_tokens;
  int cached_tokens;      /* prompt tokens read from the prompt cache, not prefilled */
  double prefill_seconds, decode_seconds;
  int stopped_by; /* the stop id that ended generation, or -1 (budget or callback) */
} mxl_gen_stats;

/* Called with every generated token (stop ids included); return nonzero to stop. */
typedef int (*mxl_token_fn)(void *user, int32_t token);

/* mxl_generator_open on a backend the caller made (a test's emulated CUDA
 * backend), which the generator owns from then on, also on failure. */
mxl_status mxl_generator_open_on(const char *path, mxl_backend *be, int max_context,
                                 mxl_generator **out);

mxl_status mxl_generate_ids(mxl_engine *e, const mxl_lora_stack *lora, const int32_t *prompt,
                            int n_prompt, const mxl_gen_params *p, mxl_token_fn on_token,
                            void *user, mxl_gen_stats *stats);

#endif
