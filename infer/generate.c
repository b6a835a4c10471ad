#include "infer/generate.h"

#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/status.h"
#include "infer/prompt_file.h"

static int is_stop(const mxl_gen_params *p, int32_t t) {
  for (int i = 0; i < p->n_stop; i++)
    if (p->stop_ids[i] == t) return 1;
  return 0;
}

/* Runs the prompt through the model in chunks; leaves the last position's
 * logits in `last`. */
static mxl_status prefill(mxl_engine *e, mxl_forward_state *st, mxl_kv_cache *cache,
                          const mxl_lora_stack *lora, const int32_t *prompt, int n_prompt,
                          int chunk, const mxl_gen_params *p, float *last) {
  const size_t V = e->w.vocab_rows;
  for (int done = 0; done < n_prompt; done += chunk) {
    int n = n_prompt - done < chunk ? n_prompt - done : chunk;
    mxl_fwd_seq seq = {cache, prompt + done, n};
    mxl_forward_out out = {0};
    if (p->prompt_logits) {
      out.logits = p->prompt_logits + (size_t)done * V;
      out.all_positions = 1;
    } else {
      out.logits = last;
    }
    MXL_TRY(mxl_forward(e, st, &seq, 1, lora, &out));
  }
  if (p->prompt_logits) memcpy(last, p->prompt_logits + (size_t)(n_prompt - 1) * V, V * 4);
  return MXL_OK;
}

typedef struct gen_run {
  mxl_forward_state st;
  mxl_kv_cache *cache;
  mxl_sampler sampler;
  float *logits;   /* [V] */
  int32_t *tokens; /* prompt then generated */
} gen_run;

static void gen_run_free(mxl_engine *e, gen_run *r) {
  mxl_forward_state_release(e, &r->st);
  mxl_kv_cache_destroy(e, r->cache);
  mxl_sampler_free(&r->sampler);
  free(r->logits);
  free(r->tokens);
}

static mxl_status decode_loop(mxl_engine *e, gen_run *r, const mxl_lora_stack *lora,
                              int n_prompt, const mxl_gen_params *p, mxl_token_fn on_token,
                              void *user, mxl_gen_stats *stats) {
  int n = n_prompt;
  for (int i = 0; i < p->max_tokens; i++) {
    int32_t t = mxl_sampler_next(&r->sampler, r->logits, r->tokens, n);
    r->tokens[n++] = t;
    stats->generated_tokens++;
    int stop = is_stop(p, t);
    if (stop) stats->stopped_by = t;
    if ((on_token && on_token(user, t)) || stop || i + 1 == p->max_tokens) break;
    mxl_fwd_seq seq = {r->cache, &r->tokens[n - 1], 1};
    mxl_forward_out out = {.logits = r->logits};
    MXL_TRY(mxl_forward(e, &r->st, &seq, 1, lora, &out));
  }
  return MXL_OK;
}

/* Prompt tokens per forward call when the caller names none. Each call
 * decodes every routed expert's MXFP4 weights once (the CPU backend's
 * packs), so larger chunks amortise that: 256 tokens leave each of
 * gpt-oss-20b's experts 32 rows. Zen 4, 2 threads, a 1024-token prompt
 * (bench_forward --chunk): 48.5-50.5 tokens/s at 256, 52.9-60.6 at 512,
 * 58.4-63.2 at 1024, for 0.29 GB more activations. When every position's
 * logits are wanted they dominate a chunk's memory (1024 rows of o200k's
 * vocabulary: 0.8 GB): 256 then. */
static int default_chunk(int n_prompt, int all_logits) {
  int chunk = all_logits ? 256 : MXL_PROMPT_PASS_TOKENS;
  return n_prompt < chunk ? n_prompt : chunk;
}

/* The positions the prompt cache file serves (0 when it does not exist);
 * a file that cannot serve this prompt is reported and the prompt runs
 * whole (the file is then rewritten). */
static int read_prompt_cache(mxl_engine *e, mxl_kv_cache *cache, const int32_t *prompt,
                             int n_prompt, const mxl_gen_params *p) {
  int reused = 0;
  if (mxl_prompt_file_load(e, p->prompt_cache, p->cache_key, prompt, n_prompt, cache, &reused) !=
      MXL_OK) {
    mxl_warnf("prompt cache not used: %s; the whole prompt runs", mxl_last_error());
    mxl_kv_cache_reset(e, cache);
    return 0;
  }
  return reused;
}

mxl_status mxl_generate_ids(mxl_engine *e, const mxl_lora_stack *lora, const int32_t *prompt,
                            int n_prompt, const mxl_gen_params *p, mxl_token_fn on_token,
                            void *user, mxl_gen_stats *stats) {
  memset(stats, 0, sizeof *stats);
  stats->stopped_by = -1;
  if (n_prompt <= 0) return mxl_errorf(MXL_ERR_ARGUMENT, "generate: the prompt is empty");
  if (p->max_tokens < 0) return mxl_errorf(MXL_ERR_ARGUMENT, "generate: negative token budget");
  int chunk = p->prefill_chunk > 0 ? p->prefill_chunk
                                   : default_chunk(n_prompt, p->prompt_logits != NULL);
  int context = p->max_context > 0 ? p->max_context : n_prompt + p->max_tokens;
  if (context < n_prompt + p->max_tokens)
    return mxl_errorf(MXL_ERR_ARGUMENT, "generate: %d prompt + %d new tokens exceed the %d context",
                      n_prompt, p->max_tokens, context);
  gen_run r = {0};
  mxl_status st = mxl_kv_cache_create(e, context, chunk, &r.cache);
  if (st == MXL_OK) st = mxl_sampler_init(&r.sampler, &p->sampling, e->w.vocab_rows);
  r.logits = malloc((size_t)e->w.vocab_rows * sizeof(float));
  r.tokens = malloc((size_t)(n_prompt + p->max_tokens + 1) * sizeof(int32_t));
  if (st == MXL_OK && (!r.logits || !r.tokens))
    st = mxl_errorf(MXL_ERR_MEMORY, "generate: out of memory");
  if (st == MXL_OK) {
    memcpy(r.tokens, prompt, n_prompt * sizeof(int32_t));
    double t0 = mxl_now_seconds();
    int cached = 0, keep = p->prompt_cache != NULL;
    if (keep && mxl_prompt_file_foreign(p->prompt_cache)) {
      mxl_warnf("%s is not a prompt cache: not read, not replaced", p->prompt_cache);
      keep = 0;
    }
    if (keep && !p->prompt_logits) cached = read_prompt_cache(e, r.cache, prompt, n_prompt, p);
    st = prefill(e, &r.st, r.cache, lora, prompt + cached, n_prompt - cached, chunk, p, r.logits);
    if (st == MXL_OK && keep && cached < n_prompt - 1) {
      mxl_status saved = mxl_prompt_file_save(e, r.cache, prompt, p->cache_key, p->prompt_cache);
      if (saved != MXL_OK) mxl_warnf("prompt cache not written: %s", mxl_last_error());
    }
    double t1 = mxl_now_seconds();
    stats->prompt_tokens = n_prompt;
    stats->cached_tokens = cached;
    stats->prefill_seconds = t1 - t0;
    if (st == MXL_OK) st = decode_loop(e, &r, lora, n_prompt, p, on_token, user, stats);
    stats->decode_seconds = mxl_now_seconds() - t1;
  }
  gen_run_free(e, &r);
  return st;
}
