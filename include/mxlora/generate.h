/* Public API: text generation with the frozen MXFP4 base and LoRA adapters
 * overlaid at load time (unmerged). Adapters can be added, rescaled and
 * removed while the generator lives, without reloading the base. */
#ifndef MXLORA_GENERATE_H
#define MXLORA_GENERATE_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mxl_generator mxl_generator;

typedef struct mxl_generator_options {
  const char *backend; /* "cpu" (default), "cuda", "cuda:N", "auto" or "ref" */
  int threads;         /* 0: all cores */
  int max_context;     /* KV cache positions (0: 4096, capped by the model) */
} mxl_generator_options;

/* Opens the model at `path` (any layout) and its tokenizer. */
mxl_status mxl_generator_open(const char *path, const mxl_generator_options *opt,
                              mxl_generator **out);
void mxl_generator_close(mxl_generator *g);

/* Overlays an adapter file with a scale (1 = as trained). Refuses an
 * adapter made for another base model. Returns its handle index. */
mxl_status mxl_generator_add_adapter(mxl_generator *g, const char *path, float scale,
                                     int *index_out);
mxl_status mxl_generator_set_adapter_scale(mxl_generator *g, int index, float scale);
mxl_status mxl_generator_remove_adapter(mxl_generator *g, int index);

typedef enum mxl_channel {
  MXL_CHANNEL_TEXT = 0,   /* plain (non-chat) output */
  MXL_CHANNEL_FINAL,      /* harmony final channel: the answer */
  MXL_CHANNEL_ANALYSIS,   /* harmony analysis channel: the reasoning */
  MXL_CHANNEL_COMMENTARY, /* harmony commentary channel: tool calls, preambles */
} mxl_channel;

/* Streamed text: whole UTF-8 characters, in order, always well-formed: a
 * character split across tokens is held back until it completes, and bytes
 * that never form one (an ill-formed token, a reply that stops mid-character)
 * arrive as U+FFFD. */
typedef void (*mxl_text_fn)(void *user, mxl_channel channel, const char *text, size_t len);

typedef struct mxl_gen_request {
  const char *prompt;       /* user text (chat) or raw text */
  int chat;                 /* 1: render as a harmony conversation, stream the channels */
  const char *developer;    /* chat: developer instructions, or NULL */
  const char *effort;       /* chat: "low", "medium" (default) or "high" */
  int raw_special;          /* raw: parse special-token names in the prompt */
  float temperature, top_p, min_p, repetition_penalty;
  int top_k;
  uint64_t seed;
  int max_tokens;           /* 0: 256 */
  const char *dump_logits;  /* write every prompt position's logits (.npy), or NULL */
} mxl_gen_request;

/* temperature 1, top_p 1, no top-k/min-p/penalty, seed 0, 256 tokens. */
void mxl_gen_request_defaults(mxl_gen_request *r);

typedef struct mxl_gen_result {
  int prompt_tokens, generated_tokens;
  double prefill_seconds, decode_seconds;
  const char *stop_reason; /* "stop token <|return|>", "max tokens" */
} mxl_gen_result;

mxl_status mxl_generate(mxl_generator *g, const mxl_gen_request *req, mxl_text_fn on_text,
                        void *user, mxl_gen_result *result);

#ifdef __cplusplus
}
#endif

#endif
