/* mxlora serve: the OpenAI-compatible HTTP server. Ctrl-C or SIGTERM
 * drains (requests in flight finish, new ones get 503); a second one
 * cancels what still runs. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/serving.h"

MXL_DECLARE_COMMAND(serve);

const char mxl_cmd_serve_help[] =
    "OpenAI-compatible HTTP server: one base, adapters by name, per-request scales";

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

static void log_line(void *user, const char *line) {
  (void)user;
  time_t now = time(NULL);
  struct tm tm;
  localtime_r(&now, &tm);
  char stamp[32];
  strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
  pthread_mutex_lock(&log_mu);
  fprintf(stderr, "[%s] %s\n", stamp, line);
  fflush(stderr);
  pthread_mutex_unlock(&log_mu);
}

static void banner(mxl_service *svc, const mxl_server_options *so, int port) {
  mxl_scheduler_stats ss;
  mxl_scheduler_get_stats(mxl_service_scheduler(svc), &ss);
  fprintf(stderr, "mxlora %s serve\n  model    %s\n", mxl_version_string(),
          mxl_service_summary(svc));
  fprintf(stderr, "  engine   %d positions per request, batch %d, queue %d, KV cache %.1f MiB\n",
          ss.max_context, ss.max_batch, ss.max_queue, (double)ss.kv_bytes_total / 1048576.0);
  if (ss.kv_bytes_default)
    fprintf(stderr,
            "  memory   KV cache lowered from the default %.1f MiB (batch x positions) to 3/4 of "
            "the memory left; --kv-memory sets it\n",
            (double)ss.kv_bytes_default / 1048576.0);
  if (ss.prefix_cache && ss.shared_prefix_auto)
    fprintf(stderr,
            "  prefix   up to %d finished requests' KV caches kept in its free part; prompts "
            "sharing another's start reuse up to its whole prompt while the budget has room "
            "(else %d tokens)\n",
            ss.prefix_cache, ss.shared_prefix);
  else if (ss.prefix_cache)
    fprintf(stderr,
            "  prefix   up to %d finished requests' KV caches kept in its free part; prompts "
            "sharing up to %d tokens of another's start reuse them\n",
            ss.prefix_cache, ss.shared_prefix);
  else
    fprintf(stderr, "  prefix   off: every prompt prefilled whole\n");
  mxl_registry_entry *list = NULL;
  int n = 0;
  if (mxl_registry_list(mxl_service_registry(svc), &list, &n) == MXL_OK) {
    for (int i = 0; i < n; i++)
      fprintf(stderr, "  adapter  %s (%s; rank %d, scale %g)\n", list[i].name, list[i].path,
              list[i].rank, (double)mxl_service_adapter_scale(svc, list[i].name));
    if (n == 0) fprintf(stderr, "  adapters none loaded\n");
    mxl_registry_list_free(list);
  }
  if (so->adapter_dir) fprintf(stderr, "  adapter-dir %s (load_lora_adapter paths)\n", so->adapter_dir);
  const char *host = so->host ? so->host : "127.0.0.1";
  int v6 = strchr(host, ':') != NULL;
  fprintf(stderr, "  listening on http://%s%s%s:%d (%s)\n", v6 ? "[" : "", host, v6 ? "]" : "",
          port, so->api_key ? "API key required on /v1/" : "no API key: loopback only");
  fflush(stderr);
}

/* A second Ctrl-C or SIGTERM while draining: cancel what still runs. */
static pthread_mutex_t stop_mu = PTHREAD_MUTEX_INITIALIZER;
static int stopped;

static void *second_signal(void *arg) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  int sig = 0;
  if (sigwait(&set, &sig) == 0) {
    pthread_mutex_lock(&stop_mu);
    if (!stopped) {
      log_line(NULL, "second signal: cancelling the requests still running");
      mxl_server_abort(arg);
    }
    pthread_mutex_unlock(&stop_mu);
  }
  return NULL;
}

int mxl_cmd_serve(int argc, char **argv) {
  mxl_serving_args a = {0};
  mxl_server_options so = {0};
  so.port = 8000;
  int max_body = 0;
  float drain = 30.0f;
  mxl_opt opts[MXL_SERVING_N_OPTS + 9];
  mxl_serving_opts(&a, opts);
  const mxl_opt more[] = {
      {"--host", MXL_OPT_STRING, &so.host, "ADDR: address to bind (default 127.0.0.1)"},
      {"--port", MXL_OPT_INT, &so.port, "N: port (default 8000; 0: any free port)"},
      {"--api-key", MXL_OPT_STRING, &so.api_key,
       "KEY: Bearer key for /v1/ (default: $MXLORA_API_KEY); needed off loopback"},
      {"--adapter-dir", MXL_OPT_STRING, &so.adapter_dir,
       "DIR: load_lora_adapter may load files inside DIR (default: refused)"},
      {"--max-tokens", MXL_OPT_INT, &so.max_tokens,
       "N: the largest max_tokens a request may ask (default: --ctx)"},
      {"--max-body", MXL_OPT_INT, &max_body, "BYTES: request body limit (default 1048576)"},
      {"--max-connections", MXL_OPT_INT, &so.max_connections,
       "N: open connections at once (default 256)"},
      {"--max-messages", MXL_OPT_INT, &so.max_messages, "N: chat messages per request (default 256)"},
      {"--drain-timeout", MXL_OPT_FLOAT, &drain,
       "SECONDS: on Ctrl-C, wait this long for requests in flight (default 30)"},
  };
  memcpy(opts + MXL_SERVING_N_OPTS, more, sizeof more);
  int rc = mxl_cli_parse(argc, argv, "--model DIR [--adapter NAME=FILE[:SCALE]]... [options]",
                         opts, MXL_SERVING_N_OPTS + 9, NULL, 0, NULL);
  if (rc) return rc == 1 ? 0 : 2;
  if (!so.api_key) so.api_key = getenv("MXLORA_API_KEY");
  if (max_body < 0) {
    fprintf(stderr, "mxlora serve: --max-body %d: expected a positive size\n", max_body);
    return 2;
  }
  so.max_body = (size_t)max_body;
  so.log = log_line;

  /* Every thread started from here on inherits the blocked signals; this
   * one takes them with sigwait. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  mxl_service *svc = NULL;
  rc = mxl_serving_open("serve", &a, &svc);
  if (rc) return rc;
  mxl_server *srv = NULL;
  mxl_status st = mxl_server_start(svc, &so, &srv);
  if (st != MXL_OK) {
    mxl_service_close(svc);
    return mxl_cli_fail("serve", st);
  }
  banner(svc, &so, mxl_server_port(srv));
  int sig = 0;
  sigwait(&set, &sig);
  log_line(NULL, sig == SIGTERM ? "SIGTERM: draining (again to cancel)"
                                : "Ctrl-C: draining (again to cancel)");
  pthread_t watcher;
  int watching = pthread_create(&watcher, NULL, second_signal, srv) == 0;
  if (watching) pthread_detach(watcher);
  mxl_server_stop(srv, drain);
  pthread_mutex_lock(&stop_mu);
  stopped = 1;
  pthread_mutex_unlock(&stop_mu);
  mxl_server_destroy(srv);
  mxl_service_close(svc);
  log_line(NULL, "stopped");
  return 0;
}
