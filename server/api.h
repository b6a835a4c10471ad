/* The pure part of the HTTP API: request bodies (JSON) → validated request
 * structs, errors → OpenAI's JSON error shape, and the JSON of responses
 * and stream chunks. Nothing here touches sockets, models or threads, so it
 * is tested directly and fuzzed (tests/fuzz/fuzz_http_request.c).
 *
 * Request bodies follow OpenAI's chat.completions / completions and vLLM's
 * load_lora_adapter / unload_lora_adapter. Unknown fields are ignored (as
 * vLLM does); fields that would change the output in a way mxlora does not
 * implement (n > 1, logprobs, tools, penalties, logit_bias, a non-text
 * response_format) are refused with 400 naming the field, never silently
 * dropped. */
#ifndef MXL_SERVER_API_H
#define MXL_SERVER_API_H

#include <stddef.h>
#include <stdint.h>

#include "mxlora.h"

enum {
  MXL_API_NAME_MAX = 128,   /* adapter names (as the registry's) and model ids */
  MXL_API_MAX_ADAPTERS = 8, /* (adapter, scale) pairs per request */
  MXL_API_MAX_STOP = 4,     /* stop strings per request, as OpenAI allows */
  MXL_API_STOP_MAX_LEN = 256,
};

/* An error as the client sees it:
 *   {"error": {"message": ..., "type": ..., "param": ..., "code": ...}} */
typedef struct mxl_api_error {
  int http_status;  /* 400, 401, 404, 405, 413, 429, 500, 503 */
  const char *type; /* "invalid_request_error", ... (static) */
  const char *code; /* "model_not_found", ... or NULL (static) */
  char param[64];   /* the request field at fault, or "" */
  char message[1024];
} mxl_api_error;

/* Sets every field; `type` and `code` follow from the status (400
 * invalid_request_error, 401 authentication_error/invalid_api_key, 404
 * not_found_error, 413 request_too_large, 429 rate_limit_error, 503
 * service_unavailable, 5xx server_error). Returns -1, for `return
 * mxl_api_fail(...)` in parsers. */
int mxl_api_fail(mxl_api_error *e, int http_status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The HTTP status of a library failure: bad input 400, a missing name 404,
 * a full queue or memory budget 429, shutting down 503, an I/O, backend or
 * numeric failure 500. */
int mxl_api_status_http(mxl_status st);
/* An error from a failed library call: its status mapped as above, with
 * mxl_last_error() as the message. Returns -1. */
int mxl_api_fail_status(mxl_api_error *e, mxl_status st, const char *param);
/* The error's JSON body (malloc'd; NULL when out of memory). */
char *mxl_api_error_json(const mxl_api_error *e);

/* Bounds on what one request may ask for. */
typedef struct mxl_api_limits {
  size_t max_body;        /* request body bytes (checked by the HTTP layer too) */
  int max_messages;       /* chat messages per request */
  int max_tokens;         /* the largest max_tokens accepted */
} mxl_api_limits;

/* 1 MiB bodies, 256 messages, 4096 tokens. */
void mxl_api_limits_default(mxl_api_limits *lim);

typedef struct mxl_api_adapter {
  char name[MXL_API_NAME_MAX + 1];
  float scale;
} mxl_api_adapter;

/* A chat.completions or completions request, validated. */
/* The longest function name a request may define (OpenAI's limit). */
#define MXL_API_FUNCTION_NAME_MAX 64

typedef struct mxl_api_generation {
  int chat;                         /* 1: chat.completions */
  char model[MXL_API_NAME_MAX + 1]; /* the base model's id or an adapter name */
  /* chat: the conversation as the harmony renderer reads it,
   * {"messages": [...], "reasoning_effort": ...} (malloc'd JSON text) */
  char *conversation;
  char *prompt;                     /* completions: the raw text (malloc'd) */
  mxl_api_adapter adapters[MXL_API_MAX_ADAPTERS]; /* extension "adapters" */
  int n_adapters;
  mxl_job_sampling sampling;        /* temperature 1, top_p 1, min_p 0, penalty 1, top_k 0 */
  int has_seed;                     /* 0: the server picks a seed */
  int max_tokens;                   /* 0: not given (the server's default) */
  char *stop[MXL_API_MAX_STOP];     /* stop strings (malloc'd) */
  int n_stop;
  int stream;
  int include_usage;                /* stream: send the final usage chunk */
  int tools;                        /* chat: function tools offered (and rendered) */
  int force_call;                   /* tool_choice "required" or a named function */
  char call[MXL_API_FUNCTION_NAME_MAX + 1]; /* ... that function's name, or "" (the model
                                               names it) */
} mxl_api_generation;

/* Parse and validate a body. On success return 0 and fill *out (free it
 * with mxl_api_generation_free); on failure return -1 with *err set and
 * *out empty. */
int mxl_api_parse_chat(const char *body, size_t n, const mxl_api_limits *lim,
                       mxl_api_generation *out, mxl_api_error *err);
int mxl_api_parse_completion(const char *body, size_t n, const mxl_api_limits *lim,
                             mxl_api_generation *out, mxl_api_error *err);
void mxl_api_generation_free(mxl_api_generation *g);

/* vLLM's adapter requests: load_lora_adapter {"lora_name", "lora_path",
 * "load_inplace"}, unload_lora_adapter {"lora_name"}, and mxlora's
 * reload_lora_adapter {"lora_name", "lora_path" (optional: the file it was
 * loaded from)}. Extensions: "scale" (the default scale when the adapter
 * is used as `model`) and "pinned" (never evicted). */
typedef enum mxl_api_adapter_action {
  MXL_API_LOAD,
  MXL_API_UNLOAD,
  MXL_API_RELOAD,
} mxl_api_adapter_action;

typedef struct mxl_api_adapter_op {
  mxl_api_adapter_action action; /* a load with load_inplace becomes a reload */
  char name[MXL_API_NAME_MAX + 1];
  char *path;      /* malloc'd; NULL when not given */
  float scale;     /* 1 unless given */
  int pinned;      /* -1: not given */
} mxl_api_adapter_op;

int mxl_api_parse_adapter_op(mxl_api_adapter_action action, const char *body, size_t n,
                             const mxl_api_limits *lim, mxl_api_adapter_op *out,
                             mxl_api_error *err);
void mxl_api_adapter_op_free(mxl_api_adapter_op *op);

/* 1 when `name` is a valid adapter name, as the registry's: 1 to
 * MXL_API_NAME_MAX printable ASCII bytes without spaces, double quotes or
 * backslashes. */
int mxl_api_name_valid(const char *name);

/* Resolves the lora_path of an adapter request: absolute, or relative to
 * `dir`, with every symlink and ".." resolved; refused (403) unless the
 * file lies inside `dir` (itself resolved), 404 when it does not exist,
 * 403 when `dir` is NULL (the server was started without --adapter-dir).
 * Returns 0 with *out malloc'd, or -1 with *err set. */
int mxl_api_resolve_adapter_path(const char *dir, const char *path, char **out,
                                 mxl_api_error *err);

/* Checks an "Authorization" header value against the key: "Bearer KEY"
 * (scheme case-insensitive), compared in time independent of where the
 * strings differ. 1 when it matches; never for an empty key. */
int mxl_api_bearer_ok(const char *header, const char *key);

/* ---------------------------------------------------------------- responses */

/* What every chunk of one response repeats. */
typedef struct mxl_api_reply {
  int chat;          /* 1: chat.completion(.chunk); 0: text_completion */
  const char *id;    /* "chatcmpl-..." or "cmpl-..." */
  const char *model; /* as the request named it */
  int64_t created;   /* Unix seconds */
} mxl_api_reply;

typedef struct mxl_api_usage {
  int prompt_tokens, completion_tokens;
  int cached_tokens; /* usage.prompt_tokens_details.cached_tokens, as OpenAI reports it */
} mxl_api_usage;

/* Text of one response or chunk. Texts may hold bytes that are not valid
 * UTF-8 (a model can generate them): those become U+FFFD. */
/* A function call in a response. A streamed call comes in pieces: its
 * first chunk has id and name, the next ones (id NULL) more arguments. */
typedef struct mxl_api_tool_call {
  int index;             /* the call's position in the message (chunks) */
  const char *id;        /* "call_..." */
  const char *name;
  const char *arguments; /* JSON text as the model wrote it, or the chunk's part */
  size_t arguments_len;
} mxl_api_tool_call;

typedef struct mxl_api_delta {
  int role;                /* chunks: announce "role": "assistant" */
  const char *content;     /* final channel / completion text, or NULL */
  size_t content_len;
  const char *reasoning;   /* analysis channel (reasoning_content), or NULL */
  size_t reasoning_len;
  const char *finish;      /* "stop", "length", "tool_calls", or NULL (null) */
  const mxl_api_tool_call *calls; /* chat: "tool_calls" (whole: content null when empty) */
  int n_calls;
  const mxl_api_usage *usage; /* attached as "usage" when not NULL */
  int usage_only;          /* chunks: "choices": [] (the final usage chunk) */
} mxl_api_delta;

/* The whole (non-streamed) response object. */
char *mxl_api_response_json(const mxl_api_reply *r, const mxl_api_delta *d);
/* One streamed chunk object (without the SSE framing). */
char *mxl_api_chunk_json(const mxl_api_reply *r, const mxl_api_delta *d);

/* One entry of GET /v1/models, as vLLM lists the base and its adapters. */
typedef struct mxl_api_model {
  const char *id;
  const char *root;   /* base: its id; adapter: its file */
  const char *parent; /* base: NULL; adapter: the base's id */
  int64_t created;
  int max_model_len;
} mxl_api_model;

char *mxl_api_models_json(const mxl_api_model *models, int n);

/* s[0..n) with what is not valid UTF-8 replaced by U+FFFD, one per
 * maximal ill-formed subsequence (as Python's decoder does), and NUL
 * bytes too (malloc'd, NUL-terminated; NULL when out of memory). */
char *mxl_api_utf8_clean(const char *s, size_t n);

#endif
