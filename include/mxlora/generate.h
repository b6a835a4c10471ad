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
  mxl_weight_options weights; /* CPU: weights in 2 MB pages (--no-mmap) */
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
/* A harmony message of the reply begins (before its text): its channel and
 * the recipient its header names ("functions.get_weather" for a function
 * call; "" for none). */
typedef void (*mxl_message_fn)(void *user, mxl_channel channel, const char *recipient);

/* ------------------------------------------------------------ reply streams
 *
 * What mxl_generate does with the tokens it generates, for callers that
 * generate ids themselves (mxl_scheduler): follows a reply token by token
 * and hands its text to an mxl_text_fn, per channel. In a chat reply,
 * message headers (<|channel|>NAME<|message|>) are read, not shown;
 * <|end|> closes a message and <|start|>assistant opens the next one;
 * <|return|> and <|call|> end the reply. A plain stream shows every token. */

/* The harmony tokens a chat stream reads. */
typedef struct mxl_chat_ids {
  int32_t start, end, message, channel, ret, call, constrain;
} mxl_chat_ids;

/* Fails with MXL_ERR_FORMAT when the tokenizer lacks one of them (not a
 * harmony tokenizer). */
mxl_status mxl_chat_ids_lookup(const mxl_tokenizer *tok, mxl_chat_ids *out);

/* A stream's state: a plain value that needs no freeing (like
 * mxl_decode_stream); the tokenizer must outlive it. Read no field. */
typedef struct mxl_chat_stream {
  const mxl_tokenizer *tok;
  mxl_chat_ids ids;
  int chat;             /* 0: plain text, every token is shown */
  int in_header;        /* reading a message header */
  mxl_channel channel;  /* of the current message */
  char header[256];     /* header text seen so far (role, channel name, recipient) */
  size_t header_len;
  mxl_decode_stream decode;
  mxl_text_fn on_text;
  mxl_message_fn on_message; /* or NULL */
  void *user;
} mxl_chat_stream;

/* chat 1: `ids` from mxl_chat_ids_lookup, and the stream starts inside the
 * header of the assistant message that the prompt opened with
 * <|start|>assistant; chat 0: `ids` may be NULL. */
void mxl_chat_stream_init(mxl_chat_stream *s, const mxl_tokenizer *tok,
                          const mxl_chat_ids *ids, int chat, mxl_text_fn on_text, void *user);
/* Also tell `on_message` (with the same user) where each message begins. */
void mxl_chat_stream_on_message(mxl_chat_stream *s, mxl_message_fn on_message);
/* One generated token; text that completes reaches on_text at once. */
void mxl_chat_stream_push(mxl_chat_stream *s, int32_t token);
/* The end of the reply: a character left incomplete arrives as U+FFFD. */
void mxl_chat_stream_flush(mxl_chat_stream *s);
/* The recipient the current message's header names ("functions.get_weather"
 * from "<|channel|>commentary to=functions.get_weather <|constrain|>json"),
 * NUL-terminated into out (cap > 0; a longer name is cut). Returns its
 * length, 0 when the header names none. */
size_t mxl_chat_stream_recipient(const mxl_chat_stream *s, char *out, size_t cap);

/* Prompt tokens per forward pass when one conversation runs alone
 * (generate, chat): each pass decodes every routed expert's MXFP4 weights
 * once, so larger passes amortise that (infer/generate.c). */
#define MXL_PROMPT_PASS_TOKENS 1024

typedef struct mxl_gen_request {
  const char *prompt;       /* user text (chat) or raw text */
  int chat;                 /* 1: render as a harmony conversation, stream the channels */
  const char *developer;    /* chat: developer instructions, or NULL */
  const char *tools;        /* chat: function tools, a JSON list in OpenAI's shape
                               ([{"type": "function", "function": {"name", ...}}]), rendered
                               in the developer message as harmony does; or NULL */
  mxl_message_fn on_message; /* chat: told where each message of the reply begins (a
                               function call: its recipient), with on_text's user; or NULL */
  const char *effort;       /* chat: "low", "medium" (default) or "high" */
  int raw_special;          /* raw: parse special-token names in the prompt */
  float temperature, top_p, min_p, repetition_penalty;
  int top_k;
  uint64_t seed;
  int max_tokens;           /* 0: 256 */
  const char *dump_logits;  /* write every prompt position's logits (.npy), or NULL */
  int prefill_chunk;        /* prompt tokens per forward call (0: MXL_PROMPT_PASS_TOKENS,
                               256 with dump_logits; at most the prompt) */
  const char *prompt_cache; /* a file keeping the KV cache after the prompt, or NULL: when
                               it exists and was made with this model, these adapters and
                               scales, the prompt's longest prefix it holds is not run
                               again (not with dump_logits); then it is (re)written with
                               this prompt. A file that cannot serve (damaged, made for
                               another model) is reported through the warning handler
                               and replaced. */
} mxl_gen_request;

/* temperature 1, top_p 1, no top-k/min-p/penalty, seed 0, 256 tokens. */
void mxl_gen_request_defaults(mxl_gen_request *r);

typedef struct mxl_gen_result {
  int prompt_tokens, generated_tokens;
  int cached_tokens;        /* of prompt_tokens, read from the prompt cache */
  double prefill_seconds, decode_seconds;
  const char *stop_reason; /* "stop token <|return|>", "max tokens" */
} mxl_gen_result;

mxl_status mxl_generate(mxl_generator *g, const mxl_gen_request *req, mxl_text_fn on_text,
                        void *user, mxl_gen_result *result);

#ifdef __cplusplus
}
#endif

#endif
