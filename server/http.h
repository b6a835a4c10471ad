/* The HTTP server's insides, shared by its files: http.c (daemon, body
 * reading, routing, auth, logs), http_generate.c (chat/completions, plain
 * and streamed), http_admin.c (health, models, adapters, metrics). */
#ifndef MXL_SERVER_HTTP_H
#define MXL_SERVER_HTTP_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

#include "core/strbuf.h"
#include "mxlora.h"
#include "server/api.h"

typedef enum http_route {
  ROUTE_HEALTH,
  ROUTE_METRICS,
  ROUTE_MODELS,
  ROUTE_CHAT,
  ROUTE_COMPLETIONS,
  ROUTE_LOAD,
  ROUTE_UNLOAD,
  ROUTE_RELOAD,
  ROUTE_VERSION,
  ROUTE_OTHER,
  N_ROUTES
} http_route;

/* Statuses counted per route in /metrics; the last slot counts others. */
enum { N_STATUS_SLOTS = 11 };
extern const int mxl_http_status_slots[N_STATUS_SLOTS - 1];

enum { RATE_SAMPLES = 32 };

struct mxl_server {
  mxl_service *svc;
  struct MHD_Daemon *daemon;
  char *host, *api_key, *adapter_dir;
  mxl_api_limits lim;
  int max_connections;
  int port;
  mxl_server_log_fn log;
  void *log_user;
  atomic_int draining; /* new requests get 503 */
  atomic_int aborting; /* requests in flight are cancelled */
  pthread_mutex_t mu;
  pthread_cond_t idle; /* signalled when `active` drops */
  int active;          /* generation requests in flight */
  uint64_t next_id;
  uint64_t requests[N_ROUTES][N_STATUS_SLOTS];
  uint64_t generations;           /* finished generation requests */
  double generation_seconds;      /* their total time */
  double rate_time[RATE_SAMPLES]; /* (time, generated tokens) samples for tokens/s */
  uint64_t rate_tokens[RATE_SAMPLES];
  int rate_next, rate_count;
  double started;
};

/* One HTTP request (MHD's per-request context). */
typedef struct http_request {
  mxl_server *srv;
  struct MHD_Connection *conn;
  uint64_t id;
  double t_start;
  http_route route;
  char method[8];
  char path[96];
  mxl_strbuf body;
  int too_large;
  int status;          /* sent */
  int counted_active;
  /* generation */
  mxl_api_generation gen;
  mxl_job *job;
  char adapters_desc[160]; /* for the log line */
  int prompt_tokens, generated_tokens, cached_tokens;
  const char *finish;
  /* streaming */
  mxl_api_reply reply;
  char reply_id[48];
  mxl_strbuf pending;
  size_t pending_off;
  int stream_state; /* 0: role chunk next, 1: streaming, 2: [DONE] queued */
  /* tool calls: ids given as they appear; streams: arguments bytes sent */
  char call_ids[MXL_JOB_MAX_CALLS][32];
  size_t call_sent[MXL_JOB_MAX_CALLS];
  int n_calls_seen;
} http_request;

double mxl_http_now(void);
/* Queues `body` (copied) with `status` and a content type. */
enum MHD_Result mxl_http_send(http_request *r, int status, const char *content_type,
                              const char *body, size_t n);
/* Queues the JSON error. */
enum MHD_Result mxl_http_send_error(http_request *r, const mxl_api_error *e);
/* 1 when the client closed its connection. */
int mxl_http_client_gone(http_request *r);
/* Counts a generation request as in flight (draining waits for it);
 * 0 when the server is draining (then answer 503). */
int mxl_http_begin_active(http_request *r);

enum MHD_Result mxl_http_generate(http_request *r);
enum MHD_Result mxl_http_models(http_request *r);
enum MHD_Result mxl_http_adapter(http_request *r, mxl_api_adapter_action action);
enum MHD_Result mxl_http_metrics(http_request *r);
/* Records a (time, generated tokens) sample for the tokens/s gauge. */
void mxl_http_rate_sample(mxl_server *srv);

#endif
