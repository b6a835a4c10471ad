/* Public API: serving — one base model, adapters by name, many concurrent
 * generation requests (mxlora serve, mxlora chat).
 *
 * A service owns the model, its tokenizer, the adapter registry, the
 * continuous-batching scheduler and the engine thread that drives it.
 * Jobs are generation requests in text form (a harmony conversation or a
 * raw prompt) whose output comes back as text per channel; any thread may
 * start jobs and read them. The HTTP server (OpenAI-compatible, on
 * libmicrohttpd) is a front end over one service. */
#ifndef MXLORA_SERVER_H
#define MXLORA_SERVER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mxl_service mxl_service;

typedef struct mxl_service_options {
  const char *model;       /* checkpoint path (any layout) */
  const char *model_id;    /* the base model's name in requests (NULL: the checkpoint
                              folder's name, e.g. "gpt-oss-20b") */
  mxl_scheduler_options scheduler;
  uint64_t max_adapter_memory; /* registry budget in bytes (0: no limit) */
  int default_max_tokens;  /* when a request names none (0: 1024); capped by the context
                              that the prompt leaves */
} mxl_service_options;

/* Opens the model and tokenizer, creates the registry and scheduler, and
 * starts the engine thread. */
mxl_status mxl_service_open(const mxl_service_options *opt, mxl_service **out);
/* Lets queued and running requests finish, stops the engine thread and
 * frees everything. Every job must have been freed. NULL is fine. */
void mxl_service_close(mxl_service *svc);

mxl_registry *mxl_service_registry(mxl_service *svc);
mxl_scheduler *mxl_service_scheduler(mxl_service *svc);
const char *mxl_service_model_id(const mxl_service *svc);
/* Positions per request (prompt + generated). */
int mxl_service_max_context(const mxl_service *svc);
/* One line for people: the model id, layout and folder, its shape and the
 * backend ("gpt-oss-20b (hf layout, /m/gpt-oss-20b): 24 layers, 32 experts,
 * 4 per token, hidden 2880, vocab 201088; cpu backend"). */
const char *mxl_service_summary(const mxl_service *svc);

/* Adapters by name, each with the scale used when a request names it as
 * its model. Reload keeps the scale and pin unless given (scale NaN,
 * pinned -1: keep); `path` NULL reloads the same file. Errors as the
 * registry's (mxlora/registry.h). */
mxl_status mxl_service_load_adapter(mxl_service *svc, const char *name, const char *path,
                                    float scale, int pinned);
mxl_status mxl_service_reload_adapter(mxl_service *svc, const char *name, const char *path,
                                      float scale, int pinned);
mxl_status mxl_service_unload_adapter(mxl_service *svc, const char *name);
/* The default scale of a loaded adapter (1 when it has none recorded). */
float mxl_service_adapter_scale(mxl_service *svc, const char *name);

/* ---------------------------------------------------------------- jobs */

typedef struct mxl_job mxl_job;

typedef struct mxl_job_adapter {
  const char *name;
  float scale;
} mxl_job_adapter;

/* Sampling, as mxl_request's (greedy at temperature 0). */
typedef struct mxl_job_sampling {
  float temperature, top_p, min_p, repetition_penalty;
  int top_k;
  uint64_t seed;
} mxl_job_sampling;

typedef struct mxl_job_request {
  /* The base model's id (or NULL), or an adapter's name: that adapter at
   * its default scale, before the `adapters` listed. */
  const char *model;
  const mxl_job_adapter *adapters;
  int n_adapters;
  int chat;                 /* 1: `conversation`; 0: `prompt` as raw text */
  const char *conversation; /* a sample as mxl_harmony_render_json reads it */
  const char *prompt;
  mxl_job_sampling sampling;
  int max_tokens;           /* 0: the service's default */
  const char *const *stop;  /* stop strings, matched on the answer (final channel or
                               raw text); the text before one is kept */
  int n_stop;
  int tools;                /* chat: the conversation offers function tools, so a
                               message to functions.NAME is a call (mxl_job_output) */
  const char *call;         /* chat with tools: the reply is a call, its header put in the
                               prompt: of this function (a name), or of one the model names
                               (""); NULL: the model chooses whether to call */
} mxl_job_request;

/* temperature 1, top_p 1, no top-k/min-p/penalty, seed 0, default tokens. */
void mxl_job_request_defaults(mxl_job_request *r);

/* Renders and tokenizes the prompt, takes references to the adapters and
 * queues the request. Fails with MXL_ERR_NOT_FOUND for an unknown model or
 * adapter, MXL_ERR_ARGUMENT/FORMAT for a conversation the renderer
 * refuses, a prompt + max_tokens beyond the context or bad parameters,
 * MXL_ERR_BUSY when the queue (or the adapter memory budget) is full, and
 * MXL_ERR_STATE after shutdown began. */
mxl_status mxl_job_start(mxl_service *svc, const mxl_job_request *req, mxl_job **out);

typedef enum mxl_job_finish {
  MXL_JOB_RUNNING = 0,
  MXL_JOB_STOP,      /* a stop token or stop string */
  MXL_JOB_LENGTH,    /* max_tokens, or the context is full */
  MXL_JOB_CANCELLED, /* mxl_job_cancel, or the service shut down */
  MXL_JOB_ERROR,     /* the backend failed: status and message say how */
  MXL_JOB_TOOL_CALLS, /* a stop token after a function call (request `tools`) */
} mxl_job_finish;

#define MXL_JOB_MAX_CALLS 8 /* calls kept per reply; later ones stay text, in content */

/* A function call of the reply so far: a commentary message the model
 * addressed to functions.NAME; its arguments as the model wrote them (JSON
 * by the harmony format, not checked), growing until the call's message
 * ends. */
typedef struct mxl_job_call {
  const char *name;
  const char *arguments;
  size_t arguments_len;
} mxl_job_call;

/* What a job produced since the last call: text per channel (whole UTF-8
 * characters in order; the text stays valid until the next call), and
 * once it is over, why and the counts. */
typedef struct mxl_job_output {
  const char *content;   /* final channel (chat) or the raw text; commentary too */
  size_t content_len;
  const char *reasoning; /* analysis channel */
  size_t reasoning_len;
  mxl_job_finish finish; /* MXL_JOB_RUNNING until the end */
  int prompt_tokens, generated_tokens;
  int cached_tokens;     /* of prompt_tokens, taken from the prefix cache (at the end) */
  double queued_seconds, first_token_seconds, total_seconds;
  mxl_status status;     /* MXL_JOB_ERROR: the failure */
  const char *message;
  const mxl_job_call *calls; /* every call so far (not only the new text), valid until
                                the next call; n_calls 0 without request `tools` */
  int n_calls;
} mxl_job_output;

/* Waits up to timeout_ms for output. Returns 1 with new text or the end in
 * *out, 0 when the time ran out with nothing new; after the end it keeps
 * returning the end (with no text). */
int mxl_job_next(mxl_job *job, int timeout_ms, mxl_job_output *out);
/* Stops the job at the scheduler's next step; its end comes through
 * mxl_job_next as MXL_JOB_CANCELLED. */
void mxl_job_cancel(mxl_job *job);
/* Cancels the job if it still runs, waits for the scheduler to let go of
 * it, and frees it. NULL is fine. */
void mxl_job_free(mxl_job *job);
/* Prompt tokens of a started job. */
int mxl_job_prompt_tokens(const mxl_job *job);
/* "stop", "length", "cancelled", "error", "tool_calls" (or "" while running). */
const char *mxl_job_finish_name(mxl_job_finish f);

/* ---------------------------------------------------------------- HTTP */

typedef struct mxl_server mxl_server;

/* One line per request and the server's own notices, without a newline. */
typedef void (*mxl_server_log_fn)(void *user, const char *line);

typedef struct mxl_server_options {
  const char *host;        /* address to bind (NULL: "127.0.0.1") */
  int port;                /* 0: a free port (see mxl_server_port) */
  const char *api_key;     /* Bearer key for /v1/; required unless host is loopback */
  const char *adapter_dir; /* load_lora_adapter paths must lie inside (NULL: refused) */
  size_t max_body;         /* request body bytes (0: 1 MiB) */
  int max_connections;     /* open connections at once (0: 256) */
  int max_messages;        /* chat messages per request (0: 256) */
  int max_tokens;          /* the largest max_tokens a request may ask (0: the context) */
  mxl_server_log_fn log;   /* may be NULL */
  void *log_user;
} mxl_server_options;

/* Starts serving `svc` (which must outlive the server) on its own threads:
 * GET /health, /metrics, /v1/models; POST /v1/chat/completions,
 * /v1/completions, /v1/load_lora_adapter, /v1/unload_lora_adapter,
 * /v1/reload_lora_adapter. */
mxl_status mxl_server_start(mxl_service *svc, const mxl_server_options *opt,
                            mxl_server **out);
/* The port bound (useful with port 0). */
int mxl_server_port(const mxl_server *srv);
/* Ends the requests in flight now (they finish as cancelled). From any
 * thread, e.g. on a second Ctrl-C while mxl_server_stop drains. */
void mxl_server_abort(mxl_server *srv);
/* Stops accepting connections, answers new requests on open connections
 * with 503, lets requests in flight finish (at most drain_seconds, then
 * cancels them) and closes every connection. */
void mxl_server_stop(mxl_server *srv, double drain_seconds);
/* Stops at once if still running (drain 0) and frees. NULL is fine. */
void mxl_server_destroy(mxl_server *srv);

#ifdef __cplusplus
}
#endif

#endif
