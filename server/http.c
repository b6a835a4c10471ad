/* The HTTP server on libmicrohttpd: one thread per connection (a
 * generation blocks its connection's thread while the engine thread
 * decodes), bounded bodies and connections, bearer keys off loopback,
 * routing, one log line per request, and a draining stop. */
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/status.h"
#include "server/http.h"

const int mxl_http_status_slots[N_STATUS_SLOTS - 1] = {200, 400, 401, 403, 404,
                                                       405, 413, 429, 500, 503};

double mxl_http_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void logf_line(mxl_server *srv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_line(mxl_server *srv, const char *fmt, ...) {
  if (!srv->log) return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  srv->log(srv->log_user, line);
}

/* ---------------------------------------------------------------- responses */

enum MHD_Result mxl_http_send(http_request *r, int status, const char *content_type,
                              const char *body, size_t n) {
  struct MHD_Response *resp =
      MHD_create_response_from_buffer(n, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (!resp) return MHD_NO;
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
  if (status == 405) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW,
                                             r->route <= ROUTE_MODELS || r->route == ROUTE_VERSION
                                                 ? "GET" : "POST");
  r->status = status;
  enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
  MHD_destroy_response(resp);
  return ret;
}

enum MHD_Result mxl_http_send_error(http_request *r, const mxl_api_error *e) {
  char *json = mxl_api_error_json(e);
  const char *fallback = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\"}}";
  enum MHD_Result ret = mxl_http_send(r, e->http_status, "application/json",
                                      json ? json : fallback, strlen(json ? json : fallback));
  free(json);
  return ret;
}

int mxl_http_client_gone(http_request *r) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
  if (!ci) return 1;
  struct pollfd p = {ci->connect_fd, POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return 0;
  if (p.revents & (POLLHUP | POLLERR | POLLRDHUP)) return 1;
  /* Readable: a closed socket reads 0 bytes; a pipelined request does not. */
  char c;
  return recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

int mxl_http_begin_active(http_request *r) {
  mxl_server *srv = r->srv;
  pthread_mutex_lock(&srv->mu);
  int ok = !atomic_load(&srv->draining);
  if (ok) srv->active++;
  pthread_mutex_unlock(&srv->mu);
  r->counted_active = ok;
  return ok;
}

static void end_active(http_request *r) {
  if (!r->counted_active) return;
  mxl_server *srv = r->srv;
  pthread_mutex_lock(&srv->mu);
  srv->active--;
  pthread_cond_broadcast(&srv->idle);
  pthread_mutex_unlock(&srv->mu);
  r->counted_active = 0;
}

/* ---------------------------------------------------------------- routing */

static const struct {
  const char *path;
  http_route route;
  int post;
} ROUTES[] = {
    {"/health", ROUTE_HEALTH, 0},
    {"/metrics", ROUTE_METRICS, 0},
    {"/v1/models", ROUTE_MODELS, 0},
    {"/v1/chat/completions", ROUTE_CHAT, 1},
    {"/v1/completions", ROUTE_COMPLETIONS, 1},
    {"/v1/load_lora_adapter", ROUTE_LOAD, 1},
    {"/v1/unload_lora_adapter", ROUTE_UNLOAD, 1},
    {"/v1/reload_lora_adapter", ROUTE_RELOAD, 1},
    {"/version", ROUTE_VERSION, 0},
};

static int route_of(const char *url, int *post) {
  for (size_t i = 0; i < sizeof ROUTES / sizeof ROUTES[0]; i++)
    if (!strcmp(url, ROUTES[i].path)) {
      *post = ROUTES[i].post;
      return ROUTES[i].route;
    }
  return ROUTE_OTHER;
}

static enum MHD_Result dispatch(http_request *r, const char *method) {
  mxl_server *srv = r->srv;
  mxl_api_error e = {0};
  int post = 0;
  r->route = route_of(r->path, &post);
  if (r->route == ROUTE_OTHER) {
    mxl_api_fail(&e, 404, NULL, "no route %s %s", method, r->path);
    return mxl_http_send_error(r, &e);
  }
  if (strcmp(method, post ? "POST" : "GET")) {
    mxl_api_fail(&e, 405, NULL, "%s takes %s, not %s", r->path, post ? "POST" : "GET", method);
    return mxl_http_send_error(r, &e);
  }
  if (srv->api_key && !strncmp(r->path, "/v1/", 4)) {
    const char *auth = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                   MHD_HTTP_HEADER_AUTHORIZATION);
    if (!mxl_api_bearer_ok(auth, srv->api_key)) {
      mxl_api_fail(&e, 401, NULL, "%s: a valid API key is required "
                   "(Authorization: Bearer KEY)", auth ? "wrong API key" : "no API key");
      return mxl_http_send_error(r, &e);
    }
  }
  if (r->too_large) {
    mxl_api_fail(&e, 413, NULL, "the request body is over the limit of %zu bytes",
                 srv->lim.max_body);
    return mxl_http_send_error(r, &e);
  }
  if (atomic_load(&srv->draining) && r->route != ROUTE_METRICS) {
    mxl_api_fail(&e, 503, NULL, "the server is shutting down");
    return mxl_http_send_error(r, &e);
  }
  switch (r->route) {
  case ROUTE_HEALTH: return mxl_http_send(r, 200, "application/json", "{\"status\":\"ok\"}", 15);
  case ROUTE_VERSION: {
    char v[64];
    int n = snprintf(v, sizeof v, "{\"version\":\"%s\"}", mxl_version_string());
    return mxl_http_send(r, 200, "application/json", v, (size_t)n);
  }
  case ROUTE_METRICS: return mxl_http_metrics(r);
  case ROUTE_MODELS: return mxl_http_models(r);
  case ROUTE_LOAD: return mxl_http_adapter(r, MXL_API_LOAD);
  case ROUTE_UNLOAD: return mxl_http_adapter(r, MXL_API_UNLOAD);
  case ROUTE_RELOAD: return mxl_http_adapter(r, MXL_API_RELOAD);
  default: return mxl_http_generate(r);
  }
}

/* A Content-Length over the limit is refused before the body is read. */
static int declared_too_large(struct MHD_Connection *conn, size_t max) {
  const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                               MHD_HTTP_HEADER_CONTENT_LENGTH);
  return cl && strtoull(cl, NULL, 10) > max;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **ctx) {
  (void)version;
  mxl_server *srv = cls;
  http_request *r = *ctx;
  if (!r) {
    r = calloc(1, sizeof *r);
    if (!r) return MHD_NO;
    r->srv = srv;
    r->conn = conn;
    r->t_start = mxl_http_now();
    r->route = ROUTE_OTHER;
    snprintf(r->method, sizeof r->method, "%s", method);
    snprintf(r->path, sizeof r->path, "%s", url);
    pthread_mutex_lock(&srv->mu);
    r->id = ++srv->next_id;
    pthread_mutex_unlock(&srv->mu);
    *ctx = r;
    if (declared_too_large(conn, srv->lim.max_body)) {
      r->too_large = 1;
      return dispatch(r, method);
    }
    return MHD_YES;
  }
  if (*upload_size) {
    if (r->body.len + *upload_size > srv->lim.max_body)
      r->too_large = 1;
    else
      mxl_strbuf_append(&r->body, upload_data, *upload_size);
    *upload_size = 0;
    return MHD_YES;
  }
  if (r->status) return MHD_YES; /* answered already (an early 413) */
  if (r->body.failed) {
    mxl_api_error e = {0};
    mxl_api_fail(&e, 503, NULL, "out of memory for the request body");
    return mxl_http_send_error(r, &e);
  }
  return dispatch(r, method);
}

static void log_request(mxl_server *srv, const http_request *r, double seconds,
                        enum MHD_RequestTerminationCode why) {
  const char *aborted = why == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection closed)";
  if (r->gen.model[0] && r->job) {
    double tps = seconds > 0 ? r->generated_tokens / seconds : 0;
    logf_line(srv, "req %llu %s %s %d model=%s adapters=%s prompt=%d cached=%d generated=%d "
              "finish=%s %.2fs %.1f tok/s%s", (unsigned long long)r->id, r->method, r->path,
              r->status, r->gen.model, r->adapters_desc[0] ? r->adapters_desc : "-",
              r->prompt_tokens, r->cached_tokens, r->generated_tokens, r->finish ? r->finish : "-",
              seconds, tps, aborted);
  } else {
    logf_line(srv, "req %llu %s %s %d %.3fs%s", (unsigned long long)r->id, r->method, r->path,
              r->status, seconds, aborted);
  }
}

static void count_request(mxl_server *srv, const http_request *r, double seconds) {
  int slot = N_STATUS_SLOTS - 1;
  for (int i = 0; i < N_STATUS_SLOTS - 1; i++)
    if (mxl_http_status_slots[i] == r->status) slot = i;
  pthread_mutex_lock(&srv->mu);
  srv->requests[r->route][slot]++;
  if (r->job) {
    srv->generations++;
    srv->generation_seconds += seconds;
  }
  pthread_mutex_unlock(&srv->mu);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **ctx,
                         enum MHD_RequestTerminationCode why) {
  (void)conn;
  mxl_server *srv = cls;
  http_request *r = *ctx;
  if (!r) return;
  mxl_job_free(r->job); /* cancels a stream whose client went away */
  double seconds = mxl_http_now() - r->t_start;
  log_request(srv, r, seconds, why);
  count_request(srv, r, seconds);
  if (r->job) mxl_http_rate_sample(srv);
  end_active(r);
  mxl_api_generation_free(&r->gen);
  mxl_strbuf_free(&r->body);
  mxl_strbuf_free(&r->pending);
  free(r);
  *ctx = NULL;
}

/* ---------------------------------------------------------------- start / stop */

static int is_loopback(const struct sockaddr *sa) {
  if (sa->sa_family == AF_INET)
    return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
  if (sa->sa_family == AF_INET6) {
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) ||
           (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
  }
  return 0;
}

static mxl_status resolve(const char *host, int port, struct sockaddr_storage *out,
                          socklen_t *len) {
  char service[16];
  snprintf(service, sizeof service, "%d", port);
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  int rc = getaddrinfo(host, service, &hints, &res);
  if (rc != 0 || !res)
    return mxl_errorf(MXL_ERR_ARGUMENT, "--host %s: %s", host, gai_strerror(rc));
  memcpy(out, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  freeaddrinfo(res);
  return MXL_OK;
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static void server_free(mxl_server *srv) {
  free(srv->host);
  free(srv->api_key);
  free(srv->adapter_dir);
  pthread_cond_destroy(&srv->idle);
  pthread_mutex_destroy(&srv->mu);
  free(srv);
}

mxl_status mxl_server_start(mxl_service *svc, const mxl_server_options *opt, mxl_server **out) {
  *out = NULL;
  const char *host = opt->host ? opt->host : "127.0.0.1";
  if (opt->port < 0 || opt->port > 65535)
    return mxl_errorf(MXL_ERR_ARGUMENT, "--port %d: expected 0 to 65535", opt->port);
  struct sockaddr_storage addr;
  socklen_t addr_len = 0;
  MXL_TRY(resolve(host, opt->port, &addr, &addr_len));
  if (!is_loopback((struct sockaddr *)&addr) && !(opt->api_key && opt->api_key[0]))
    return mxl_errorf(MXL_ERR_ARGUMENT, "--host %s is not a loopback address: serving beyond "
                      "this machine needs --api-key KEY", host);
  mxl_server *srv = calloc(1, sizeof *srv);
  if (!srv) return mxl_errorf(MXL_ERR_MEMORY, "server: out of memory");
  srv->svc = svc;
  pthread_mutex_init(&srv->mu, NULL);
  pthread_cond_init(&srv->idle, NULL);
  srv->host = strdup(host);
  srv->api_key = opt->api_key && opt->api_key[0] ? strdup(opt->api_key) : NULL;
  srv->adapter_dir = dup_or_null(opt->adapter_dir);
  mxl_api_limits_default(&srv->lim);
  if (opt->max_body) srv->lim.max_body = opt->max_body;
  if (opt->max_messages > 0) srv->lim.max_messages = opt->max_messages;
  int ctx = mxl_service_max_context(svc);
  srv->lim.max_tokens = opt->max_tokens > 0 && opt->max_tokens < ctx ? opt->max_tokens : ctx;
  srv->max_connections = opt->max_connections > 0 ? opt->max_connections : 256;
  srv->log = opt->log;
  srv->log_user = opt->log_user;
  srv->started = mxl_http_now();
  unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC;
  if (addr.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
  srv->daemon = MHD_start_daemon(
      flags, (uint16_t)opt->port, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR,
      (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_LIMIT, (unsigned)srv->max_connections,
      MHD_OPTION_CONNECTION_TIMEOUT, 600u, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)65536,
      MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_END);
  if (!srv->daemon || !srv->host) {
    mxl_status st = mxl_errorf(MXL_ERR_IO, "could not listen on %s port %d (in use, or not an "
                               "address of this machine)", host, opt->port);
    if (srv->daemon) MHD_stop_daemon(srv->daemon);
    server_free(srv);
    return st;
  }
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
  srv->port = di ? di->port : opt->port;
  *out = srv;
  return MXL_OK;
}

int mxl_server_port(const mxl_server *srv) { return srv->port; }

void mxl_server_abort(mxl_server *srv) {
  if (srv) atomic_store(&srv->aborting, 1);
}

void mxl_server_stop(mxl_server *srv, double drain_seconds) {
  if (!srv || !srv->daemon) return;
  atomic_store(&srv->draining, 1);
  MHD_socket listen_fd = MHD_quiesce_daemon(srv->daemon);
  if (listen_fd != MHD_INVALID_SOCKET) close(listen_fd);
  double until = mxl_http_now() + drain_seconds;
  pthread_mutex_lock(&srv->mu);
  while (srv->active > 0) {
    if (mxl_http_now() >= until) atomic_store(&srv->aborting, 1);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&srv->idle, &srv->mu, &ts);
  }
  pthread_mutex_unlock(&srv->mu);
  MHD_stop_daemon(srv->daemon);
  srv->daemon = NULL;
}

void mxl_server_destroy(mxl_server *srv) {
  if (!srv) return;
  mxl_server_stop(srv, 0);
  server_free(srv);
}
