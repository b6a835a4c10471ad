/* mxlora serve and mxlora chat end to end: a tiny model, two adapters
 * trained here, the server on a free loopback port (ref backend, so that
 * outputs are compared with `mxlora generate` bit for bit), every
 * endpoint through a small HTTP client (streaming included), malformed and
 * oversized requests answered 4xx while the server keeps serving,
 * concurrent clients with adapters loaded and unloaded meanwhile, client
 * disconnects, the API key, SIGTERM draining, and the chat command driven
 * through a pipe. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/fileio.h"
#include "http_client.h"
#include "server/api.h"
#include "test.h"

static char root[64];

/* ---------------------------------------------------------------- helpers */

/* tmpl with every `key` replaced by `value` (templates are not printf
 * formats: warnings forbid non-literal formats). */
static void fill(char *out, size_t cap, const char *tmpl, const char *key, const char *value) {
  size_t n = 0, kl = strlen(key), vl = strlen(value);
  for (const char *p = tmpl; *p && n + 1 < cap;) {
    if (!strncmp(p, key, kl) && n + vl + 1 < cap) {
      memcpy(out + n, value, vl);
      n += vl;
      p += kl;
    } else {
      out[n++] = *p++;
    }
  }
  out[n] = '\0';
}


/* Runs `mxlora <args>` through the shell; stdout (and stderr unless
 * `stderr_too` is 0) into *out. */
__attribute__((format(printf, 3, 4))) static int mxl(char **out, int stderr_too,
                                                     const char *fmt, ...) {
  char args[4096], cmd[8192], log[128];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  snprintf(log, sizeof log, "%s/out.txt", root);
  snprintf(cmd, sizeof cmd, "'%s' %s > '%s' %s", MXL_CLI_PATH, args, log,
           stderr_too ? "2>&1" : "2>/dev/null");
  int rc = system(cmd);
  rc = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  size_t n = 0;
  if (mxl_read_file(log, 1 << 24, out, &n) != MXL_OK) *out = strdup("");
  return rc;
}

/* What `mxlora generate --backend ref --temperature 0` prints (without
 * the newline it adds). */
__attribute__((format(printf, 1, 2))) static char *generate(const char *fmt, ...) {
  char args[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  char *out = NULL;
  int rc = mxl(&out, 0, "generate --model %s/m --backend ref --temperature 0 %s", root, args);
  MXL_CHECK_MSG(rc == 0, "generate %s failed", args);
  size_t n = strlen(out);
  if (n && out[n - 1] == '\n') out[n - 1] = '\0';
  return out;
}

typedef struct server {
  pid_t pid;
  int port;
  char log[128];
} server;

/* Starts `mxlora serve <args> --port 0` and waits for its banner. */
__attribute__((format(printf, 2, 3))) static int server_start(server *s, const char *fmt, ...) {
  char args[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  static int count;
  snprintf(s->log, sizeof s->log, "%s/serve%d.log", root, count++);
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "exec '%s' serve %s --port 0 > '%s' 2>&1", MXL_CLI_PATH, args, s->log);
  s->pid = fork();
  if (s->pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  s->port = 0;
  for (int i = 0; i < 1200 && !s->port; i++) { /* two minutes at most (ASan builds) */
    char *text = NULL;
    size_t n = 0;
    if (mxl_read_file(s->log, 1 << 20, &text, &n) == MXL_OK) {
      const char *at = strstr(text, "listening on http://127.0.0.1:");
      if (at) s->port = atoi(at + strlen("listening on http://127.0.0.1:"));
      free(text);
    }
    int status;
    if (!s->port && waitpid(s->pid, &status, WNOHANG) == s->pid) {
      s->pid = 0;
      return 0;
    }
    if (!s->port) usleep(100 * 1000);
  }
  return s->port > 0;
}

/* SIGTERM, then the exit status (-1: killed after 60 s). */
static int server_stop(server *s) {
  if (s->pid <= 0) return -1;
  kill(s->pid, SIGTERM);
  int status = 0;
  for (int i = 0; i < 600; i++) {
    if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
      s->pid = 0;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    usleep(100 * 1000);
  }
  kill(s->pid, SIGKILL);
  waitpid(s->pid, &status, 0);
  s->pid = 0;
  return -1;
}

static char *read_log(const server *s) {
  char *text = NULL;
  size_t n = 0;
  if (mxl_read_file(s->log, 1 << 24, &text, &n) != MXL_OK) text = strdup("");
  return text;
}

/* choices[0].message.content (chat) or choices[0].text; "" when absent.
 * *finish gets finish_reason. */
static char *answer_text(const char *json, char *finish, size_t cap) {
  cJSON *root_obj = cJSON_Parse(json);
  const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItem(root_obj, "choices"), 0);
  const cJSON *msg = cJSON_GetObjectItem(choice, "message");
  const cJSON *text = msg ? cJSON_GetObjectItem(msg, "content") : cJSON_GetObjectItem(choice, "text");
  const cJSON *fin = cJSON_GetObjectItem(choice, "finish_reason");
  if (finish) snprintf(finish, cap, "%s", cJSON_IsString(fin) ? fin->valuestring : "");
  char *out = strdup(cJSON_IsString(text) ? text->valuestring : "");
  cJSON_Delete(root_obj);
  return out;
}

/* The server's text against what `generate` printed: bytes that are not
 * UTF-8 reach JSON clients as U+FFFD; and raw generation that ended at a
 * stop token has the token's name printed by `generate` only. */
static int same_text(const char *server_text, const char *finish, const char *gen_raw) {
  char *gen = mxl_api_utf8_clean(gen_raw, strlen(gen_raw));
  size_t n = strlen(server_text);
  int same = !strcmp(server_text, gen) ||
             (!strcmp(finish, "stop") && !strncmp(gen, server_text, n) && gen[n] == '<' &&
              strstr(gen + n, "|>") && strlen(strstr(gen + n, "|>")) == 2);
  free(gen);
  return same;
}

static int error_status(const http_reply *r, int status, const char *needle) {
  cJSON *j = cJSON_Parse(r->body);
  const cJSON *msg = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "message");
  int ok = r->status == status && cJSON_IsString(msg) && strstr(msg->valuestring, needle);
  if (!ok) fprintf(stderr, "expected %d \"%s\", got %d: %s\n", status, needle, r->status, r->body);
  cJSON_Delete(j);
  return ok;
}

/* The server answers /health: it survived what came before. */
static int alive(int port) {
  http_reply r = http_get(port, "/health");
  int ok = r.status == 200;
  http_reply_free(&r);
  return ok;
}

/* ---------------------------------------------------------------- fixtures */

/* The function tool of the tool-calling adapter and its requests. */
#define WEATHER_TOOL                                                                          \
  "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": "     \
  "\"Current weather in a city\", \"parameters\": {\"type\": \"object\", \"properties\": "      \
  "{\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}"

static int make_fixtures(void) {
  char *out = NULL;
  int ok = mxl(&out, 1, "tiny %s/m --layout hf --seed 2", root) == 0;
  free(out);
  char path[160];
  for (int a = 0; ok && a < 2; a++) {
    snprintf(path, sizeof path, "%s/d%d.jsonl", root, a);
    FILE *fp = fopen(path, "w");
    for (int i = 0; fp && i < 8; i++)
      fprintf(fp, a ? "{\"prompt\": \"Name %d\", \"completion\": \"Number %d is fine.\"}\n"
                    : "{\"prompt\": \"Say %d\", \"completion\": \"%d!\"}\n", i, i * 7);
    if (fp) fclose(fp);
    ok = mxl(&out, 1, "train --model %s/m --data %s --out %s/run%d --steps 1 --seq-len 192 "
             "--batch-size 2 --set eval_count=2 --rank 4 --seed %d", root, path, root, a, a + 3) == 0;
    if (!ok) fprintf(stderr, "%s\n", out);
    free(out);
  }
  /* An adapter that answers "Weather in Paris?" with a call of get_weather
   * when the tool is offered (60 steps of 4 copies: about three seconds). */
  snprintf(path, sizeof path, "%s/tools.jsonl", root);
  FILE *fp = fopen(path, "w");
  for (int i = 0; fp && i < 4; i++)
    fprintf(fp, "{\"tools\": [%s], \"messages\": [{\"role\": \"user\", \"content\": "
                "\"Weather in Paris?\"}, {\"role\": \"assistant\", \"tool_calls\": [{\"id\": "
                "\"call_1\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\", "
                "\"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}}]}]}\n", WEATHER_TOOL);
  if (fp) fclose(fp);
  if (ok) {
    ok = mxl(&out, 1, "train --model %s/m --data %s --out %s/run_tools --steps 60 --lr 1e-2 "
             "--seq-len 384 --rank 8 --warmup-steps 3 --set eval_fraction=0", root, path, root) == 0;
    if (!ok) fprintf(stderr, "%s\n", out);
    free(out);
  }
  /* The adapter directory: both adapters, a non-adapter file, and a link
   * that leads outside; and the tool-calling adapter. */
  char cmd[1024];
  fill(cmd, sizeof cmd,
       "mkdir -p @R/adapters/sub && cp @R/run0/adapter.mxla @R/adapters/a1.mxla && "
       "cp @R/run1/adapter.mxla @R/adapters/sub/a2.mxla && cp @R/d0.jsonl "
       "@R/adapters/notes.mxla && ln -s @R/run0/adapter.mxla @R/adapters/out.mxla && "
       "cp @R/run_tools/adapter.mxla @R/adapters/weather.mxla",
       "@R", root);
  return ok && system(cmd) == 0;
}

/* ---------------------------------------------------------------- endpoints */

static void test_models_and_health(int port) {
  http_reply r = http_get(port, "/health");
  MXL_CHECK(r.status == 200);
  http_reply_free(&r);
  r = http_get(port, "/version");
  MXL_CHECK(r.status == 200 && strstr(r.body, "\"version\""));
  http_reply_free(&r);
  r = http_get(port, "/v1/models");
  cJSON *j = cJSON_Parse(r.body);
  const cJSON *data = cJSON_GetObjectItem(j, "data");
  MXL_CHECK_MSG(r.status == 200 && cJSON_GetArraySize(data) == 3, "%d %s", r.status, r.body);
  const char *ids[] = {"m", "sql", "tone"};
  for (int i = 0; i < 3 && cJSON_GetArraySize(data) == 3; i++) {
    const cJSON *m = cJSON_GetArrayItem(data, i);
    MXL_CHECK(!strcmp(cJSON_GetObjectItem(m, "id")->valuestring, ids[i]));
    const cJSON *parent = cJSON_GetObjectItem(m, "parent");
    MXL_CHECK(i == 0 ? cJSON_IsNull(parent) : !strcmp(parent->valuestring, "m"));
  }
  cJSON_Delete(j);
  http_reply_free(&r);
}

/* Greedy answers equal `mxlora generate` with the same adapters and
 * scales: the model's own adapter at its default scale, listed adapters,
 * the same adapter twice. */
static void test_greedy_equals_generate(int port) {
  struct {
    const char *path, *body, *gen_args;
  } cases[] = {
      {"/v1/chat/completions",
       "{\"model\": \"sql\", \"messages\": [{\"role\": \"user\", \"content\": \"Say 3\"}], "
       "\"temperature\": 0, \"max_tokens\": 24}",
       "--chat --prompt 'Say 3' --max-tokens 24 --adapter @R/run0/adapter.mxla:0.5"},
      {"/v1/completions",
       "{\"model\": \"m\", \"prompt\": \"Once upon\", \"temperature\": 0, \"max_tokens\": 16, "
       "\"adapters\": [{\"name\": \"sql\", \"scale\": 0.5}, {\"name\": \"tone\", \"scale\": 2}]}",
       "--prompt 'Once upon' --max-tokens 16 --adapter @R/run0/adapter.mxla:0.5 "
       "--adapter @R/run1/adapter.mxla:2"},
      {"/v1/completions",
       "{\"model\": \"tone\", \"prompt\": \"Number\", \"temperature\": 0, \"max_tokens\": 16, "
       "\"adapters\": [{\"name\": \"tone\", \"scale\": -0.5}]}",
       "--prompt 'Number' --max-tokens 16 --adapter @R/run1/adapter.mxla:1 "
       "--adapter @R/run1/adapter.mxla:-0.5"},
      {"/v1/completions",
       "{\"model\": \"m\", \"prompt\": \"Say 5\", \"temperature\": 0, \"max_tokens\": 12}",
       "--prompt 'Say 5' --max-tokens 12"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    http_reply r = http_post(port, cases[i].path, cases[i].body);
    MXL_CHECK_MSG(r.status == 200, "%s: %d %s", cases[i].body, r.status, r.body);
    char finish[16], args[1024];
    char *text = answer_text(r.body, finish, sizeof finish);
    fill(args, sizeof args, cases[i].gen_args, "@R", root);
    char *expected = generate("%s", args);
    MXL_CHECK_MSG(same_text(text, finish, expected), "case %zu: server \"%s\" (%s) vs generate \"%s\"",
                  i, text, finish, expected);
    MXL_CHECK(!strcmp(finish, "stop") || !strcmp(finish, "length"));
    MXL_CHECK(strstr(r.body, "\"usage\":{\"prompt_tokens\":"));
    free(text);
    free(expected);
    http_reply_free(&r);
  }
}

/* The SSE events of a streamed answer, joined; checks the framing. */
static char *stream_text(const char *sse_body, int chat, int want_usage, char *finish, size_t cap) {
  size_t total = strlen(sse_body);
  char *text = calloc(1, total + 1);
  int events = 0, done = 0, role = 0, usage_only = 0;
  finish[0] = '\0';
  for (const char *p = sse_body; (p = strstr(p, "data: ")) != NULL;) {
    p += 6;
    const char *end = strstr(p, "\n\n");
    if (!end) break;
    char *payload = strndup(p, (size_t)(end - p));
    p = end + 2;
    MXL_CHECK_MSG(!done, "event after [DONE]: %s", payload);
    if (!strcmp(payload, "[DONE]")) {
      done = 1;
      free(payload);
      continue;
    }
    cJSON *j = cJSON_Parse(payload);
    MXL_CHECK_MSG(j != NULL, "not JSON: %s", payload);
    const cJSON *obj = cJSON_GetObjectItem(j, "object");
    MXL_CHECK(cJSON_IsString(obj) && !strcmp(obj->valuestring, chat ? "chat.completion.chunk"
                                                                     : "text_completion"));
    const cJSON *choices = cJSON_GetObjectItem(j, "choices");
    const cJSON *c = cJSON_GetArrayItem(choices, 0);
    if (!c) usage_only += cJSON_GetObjectItem(j, "usage") != NULL;
    const cJSON *delta = chat ? cJSON_GetObjectItem(c, "delta") : c;
    const cJSON *t = cJSON_GetObjectItem(delta, chat ? "content" : "text");
    if (events == 0 && chat) role = cJSON_GetObjectItem(delta, "role") != NULL;
    if (cJSON_IsString(t)) strcat(text, t->valuestring);
    const cJSON *fin = cJSON_GetObjectItem(c, "finish_reason");
    if (cJSON_IsString(fin)) snprintf(finish, cap, "%s", fin->valuestring);
    events++;
    cJSON_Delete(j);
    free(payload);
  }
  MXL_CHECK_MSG(done && events >= 2 && finish[0], "%s", sse_body);
  if (chat) MXL_CHECK(role);
  MXL_CHECK(usage_only == want_usage);
  return text;
}

static void test_streaming(int port) {
  const char *chat = "{\"model\": \"sql\", \"messages\": [{\"role\": \"user\", \"content\": "
                     "\"Say 3\"}], \"temperature\": 0, \"max_tokens\": 24@X}";
  const char *raw = "{\"model\": \"m\", \"prompt\": \"Once upon\", \"temperature\": 0, "
                    "\"max_tokens\": 16, \"adapters\": [{\"name\": \"tone\"}]@X}";
  for (int k = 0; k < 2; k++) {
    const char *fmt = k ? raw : chat;
    const char *path = k ? "/v1/completions" : "/v1/chat/completions";
    char body[512], body_stream[512];
    fill(body, sizeof body, fmt, "@X", "");
    fill(body_stream, sizeof body_stream, fmt, "@X",
         k ? ", \"stream\": true"
           : ", \"stream\": true, \"stream_options\": {\"include_usage\": true}");
    http_reply whole = http_post(port, path, body);
    http_reply streamed = http_post(port, path, body_stream);
    MXL_CHECK(whole.status == 200 && streamed.status == 200);
    MXL_CHECK(streamed.headers && strcasestr(streamed.headers, "content-type: text/event-stream"));
    char finish_whole[16], finish_stream[16];
    char *a = answer_text(whole.body, finish_whole, sizeof finish_whole);
    char *b = stream_text(streamed.body, !k, !k, finish_stream, sizeof finish_stream);
    MXL_CHECK_MSG(!strcmp(a, b) && !strcmp(finish_whole, finish_stream),
                  "whole \"%s\" (%s) vs streamed \"%s\" (%s)", a, finish_whole, b, finish_stream);
    free(a);
    free(b);
    http_reply_free(&whole);
    http_reply_free(&streamed);
  }
}

/* Bad requests get 4xx in OpenAI's error shape; the server keeps serving. */
static void test_bad_requests(int port) {
  struct {
    const char *path, *body;
    int status;
    const char *needle;
  } cases[] = {
      {"/v1/chat/completions", "{\"model\": ", 400, "JSON syntax error"},
      {"/v1/chat/completions", "", 400, "empty"},
      {"/v1/chat/completions", "{\"model\": \"nope\", \"messages\": [{\"role\": \"user\", "
                               "\"content\": \"x\"}]}", 404, "`nope` does not exist"},
      {"/v1/chat/completions", "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", "
                               "\"content\": \"x\"}], \"adapters\": [{\"name\": \"zz\"}]}",
       404, "zz"},
      {"/v1/chat/completions", "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", "
                               "\"content\": \"x\"}], \"max_tokens\": 100000}", 400, "limit of 512"},
      {"/v1/chat/completions", "{\"model\": \"m\", \"messages\": [{\"role\": \"robot\", "
                               "\"content\": \"x\"}]}", 400, "robot"},
      {"/v1/completions", "{\"model\": \"m\", \"prompt\": \"x\", \"temperature\": -1}", 400,
       "temperature"},
      {"/v1/completions", "{\"model\": \"m\", \"prompt\": \"x\", \"n\": 3}", 400, "not supported"},
      {"/v1/load_lora_adapter", "{\"lora_name\": \"x\"}", 400, "lora_path is required"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    http_reply r = http_post(port, cases[i].path, cases[i].body);
    MXL_CHECK_MSG(error_status(&r, cases[i].status, cases[i].needle), "case %zu", i);
    http_reply_free(&r);
  }
  /* A prompt longer than the context (--ctx 1024). */
  size_t n = 40000;
  char *big = malloc(n + 100);
  int h = snprintf(big, n + 100, "{\"model\": \"m\", \"prompt\": \"");
  for (size_t i = 0; i < n - 200; i++) big[h + i] = "ab cd "[i % 6];
  snprintf(big + h + n - 200, 100, "\"}");
  http_reply r = http_post(port, "/v1/completions", big);
  MXL_CHECK(error_status(&r, 400, "exceed the context"));
  http_reply_free(&r);
  /* Bodies over --max-body 65536: declared, and chunked without a length. */
  char *huge = malloc(70001);
  memset(huge, 'a', 70000);
  huge[70000] = '\0';
  r = http_post(port, "/v1/completions", huge);
  MXL_CHECK(error_status(&r, 413, "over the limit"));
  http_reply_free(&r);
  char *chunked = malloc(80000);
  int k = snprintf(chunked, 80000, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n");
  for (int c = 0; c < 7; c++) {
    k += snprintf(chunked + k, 80000 - (size_t)k, "2710\r\n");
    memset(chunked + k, 'b', 10000);
    k += 10000;
    k += snprintf(chunked + k, 80000 - (size_t)k, "\r\n");
  }
  k += snprintf(chunked + k, 80000 - (size_t)k, "0\r\n\r\n");
  r = http_raw(port, chunked, (size_t)k);
  MXL_CHECK(error_status(&r, 413, "over the limit"));
  http_reply_free(&r);
  free(big);
  free(huge);
  free(chunked);
  /* Routes and methods. */
  r = http_get(port, "/v1/nothing");
  MXL_CHECK(error_status(&r, 404, "no route"));
  http_reply_free(&r);
  r = http_request(port, "DELETE", "/v1/models", NULL, NULL);
  MXL_CHECK(error_status(&r, 405, "takes GET"));
  http_reply_free(&r);
  r = http_get(port, "/v1/chat/completions");
  MXL_CHECK(error_status(&r, 405, "takes POST"));
  http_reply_free(&r);
  /* Not HTTP at all, and a request cut short: 4xx or a closed
   * connection, never a dead server. */
  static char long_header[70100];
  int lh = snprintf(long_header, sizeof long_header, "GET /health HTTP/1.1\r\nX: ");
  memset(long_header + lh, 'a', 70000);
  memcpy(long_header + lh + 70000, "\r\n\r\n", 5);
  const char *garbage[] = {"GARBAGE\r\n\r\n", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                           "POST /v1/completions HTTP/1.1\r\nContent-Length: 50\r\n\r\n{\"mo",
                           long_header};
  for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
    int fd = http_connect(port);
    if (fd < 0) continue;
    http_send_all(fd, garbage[i], strlen(garbage[i]));
    shutdown(fd, SHUT_WR);
    size_t got = 0;
    char *raw = http_read_all(fd, &got);
    close(fd);
    http_parse(raw, got, &r);
    MXL_CHECK_MSG(r.status == 0 || (r.status >= 400 && r.status < 500), "garbage %zu: %d", i,
                  r.status);
    http_reply_free(&r);
    free(raw);
  }
  MXL_CHECK(alive(port));
}

/* vLLM's adapter endpoints, confined to --adapter-dir. */
static void test_adapter_endpoints(int port) {
  struct {
    const char *path, *body;
    int status;
    const char *needle;
  } refused[] = {
      {"/v1/load_lora_adapter", "{\"lora_name\": \"x\", \"lora_path\": \"../run0/adapter.mxla\"}",
       403, "outside"},
      {"/v1/load_lora_adapter", "{\"lora_name\": \"x\", \"lora_path\": \"out.mxla\"}", 403,
       "outside"},
      {"/v1/load_lora_adapter", "{\"lora_name\": \"x\", \"lora_path\": \"/etc/passwd\"}", 403,
       "outside"},
      {"/v1/load_lora_adapter", "{\"lora_name\": \"x\", \"lora_path\": \"none.mxla\"}", 404,
       "no such file"},
      {"/v1/load_lora_adapter", "{\"lora_name\": \"x\", \"lora_path\": \"notes.mxla\"}", 400,
       "not an mxlora adapter"},
      {"/v1/load_lora_adapter", "{\"lora_name\": \"sql\", \"lora_path\": \"a1.mxla\"}", 400,
       "already loaded"},
      {"/v1/load_lora_adapter", "{\"lora_name\": \"m\", \"lora_path\": \"a1.mxla\"}", 400,
       "base model"},
      {"/v1/unload_lora_adapter", "{\"lora_name\": \"x\"}", 404, "x"},
  };
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    http_reply r = http_post(port, refused[i].path, refused[i].body);
    MXL_CHECK_MSG(error_status(&r, refused[i].status, refused[i].needle), "case %zu", i);
    http_reply_free(&r);
  }
  const char *ask = "{\"model\": \"fresh\", \"prompt\": \"Say 2\", \"temperature\": 0, "
                    "\"max_tokens\": 12}";
  http_reply r = http_post(port, "/v1/load_lora_adapter",
                           "{\"lora_name\": \"fresh\", \"lora_path\": \"a1.mxla\"}");
  MXL_CHECK_MSG(r.status == 200 && strstr(r.body, "Success"), "%d %s", r.status, r.body);
  http_reply_free(&r);
  r = http_get(port, "/v1/models");
  MXL_CHECK(strstr(r.body, "\"id\":\"fresh\""));
  http_reply_free(&r);
  /* Loaded, reloaded from another file, unloaded: each answer made with
   * the adapter version current at the time. */
  const char *files[] = {"run0", "run1"};
  for (int v = 0; v < 2; v++) {
    if (v == 1) {
      r = http_post(port, "/v1/reload_lora_adapter",
                    "{\"lora_name\": \"fresh\", \"lora_path\": \"sub/a2.mxla\"}");
      MXL_CHECK_MSG(r.status == 200, "%d %s", r.status, r.body);
      http_reply_free(&r);
    }
    r = http_post(port, "/v1/completions", ask);
    char finish[16];
    char *text = answer_text(r.body, finish, sizeof finish);
    char *expected = generate("--prompt 'Say 2' --max-tokens 12 --adapter %s/%s/adapter.mxla",
                              root, files[v]);
    MXL_CHECK_MSG(r.status == 200 && same_text(text, finish, expected),
                  "version %d: \"%s\" vs \"%s\"", v, text, expected);
    free(text);
    free(expected);
    http_reply_free(&r);
  }
  r = http_post(port, "/v1/unload_lora_adapter", "{\"lora_name\": \"fresh\"}");
  MXL_CHECK(r.status == 200);
  http_reply_free(&r);
  r = http_post(port, "/v1/completions", ask);
  MXL_CHECK(error_status(&r, 404, "fresh"));
  http_reply_free(&r);
}

static void test_metrics(int port) {
  http_reply r = http_get(port, "/metrics");
  MXL_CHECK(r.status == 200);
  const char *needles[] = {
      "mxlora_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"}",
      "mxlora_http_requests_total{route=\"/v1/completions\",status=\"413\"}",
      "mxlora_adapters_loaded 2", "mxlora_requests_waiting 0", "mxlora_kv_cache_bytes_total",
      "mxlora_generation_tokens_per_second", "mxlora_adapter_events_total{event=\"reload\"} 1",
      "# TYPE mxlora_generation_tokens_total counter", "mxlora_prefix_cache_hits_total",
      "mxlora_prefix_cache_tokens_total", "mxlora_prefix_cache_bytes",
      "# TYPE mxlora_prefix_cache_whole_prompt_heads_total counter"};
  for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++)
    MXL_CHECK_MSG(strstr(r.body, needles[i]), "metrics lack %s", needles[i]);
  http_reply_free(&r);
}

/* A value of the metrics text, or -1. */
static double metric_value(int port, const char *name) {
  http_reply r = http_get(port, "/metrics");
  const char *at = strstr(r.body, name);
  double v = -1;
  while (at && at[strlen(name)] != ' ') at = strstr(at + 1, name);
  if (at) v = atof(at + strlen(name) + 1);
  http_reply_free(&r);
  return v;
}

/* A client that goes away mid-stream cancels its request. */
static void test_disconnect(int port) {
  double before = metric_value(port, "mxlora_scheduler_requests_total{outcome=\"cancelled\"}");
  const char *body = "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}],"
                     " \"max_tokens\": 500, \"seed\": 9, \"stream\": true}";
  char req[512];
  int n = snprintf(req, sizeof req, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                   "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
  int fd = http_connect(port);
  MXL_CHECK(fd >= 0);
  http_send_all(fd, req, (size_t)n);
  char buf[256];
  MXL_CHECK(recv(fd, buf, sizeof buf, 0) > 0); /* the headers and the first chunk */
  close(fd);
  double after = before;
  for (int i = 0; i < 300 && after <= before; i++) {
    usleep(100 * 1000);
    after = metric_value(port, "mxlora_scheduler_requests_total{outcome=\"cancelled\"}");
  }
  MXL_CHECK_MSG(after == before + 1, "cancelled %g -> %g", before, after);
  MXL_CHECK(metric_value(port, "mxlora_http_generations_in_flight") == 0);
}

/* ---------------------------------------------------------------- concurrency */

typedef struct client_job {
  int port, id, requests;
  const char *body;
  const char *expected[2]; /* the answers allowed (an adapter's two versions) */
  int allow_404;
  int failures, answered, not_found;
} client_job;

static void *client_main(void *arg) {
  client_job *c = arg;
  for (int i = 0; i < c->requests; i++) {
    http_reply r = http_post(c->port, "/v1/completions", c->body);
    if (r.status == 404 && c->allow_404) {
      c->not_found++;
    } else {
      char finish[16];
      char *text = r.status == 200 ? answer_text(r.body, finish, sizeof finish) : NULL;
      int ok = text && ((c->expected[0] && !strcmp(text, c->expected[0])) ||
                        (c->expected[1] && !strcmp(text, c->expected[1])));
      if (!ok) {
        fprintf(stderr, "client %d: %d %s\n", c->id, r.status, r.body);
        c->failures++;
      }
      c->answered++;
      free(text);
    }
    http_reply_free(&r);
  }
  return NULL;
}

typedef struct churn_job {
  int port, rounds, failures;
} churn_job;

/* Loads, reloads (the other file) and unloads "churn" over and over. */
static void *churn_main(void *arg) {
  churn_job *c = arg;
  const char *steps[][2] = {
      {"/v1/load_lora_adapter", "{\"lora_name\": \"churn\", \"lora_path\": \"a1.mxla\"}"},
      {"/v1/reload_lora_adapter", "{\"lora_name\": \"churn\", \"lora_path\": \"sub/a2.mxla\"}"},
      {"/v1/reload_lora_adapter", "{\"lora_name\": \"churn\", \"lora_path\": \"a1.mxla\"}"},
      {"/v1/unload_lora_adapter", "{\"lora_name\": \"churn\"}"}};
  for (int i = 0; i < c->rounds; i++)
    for (int s = 0; s < 4; s++) {
      http_reply r = http_post(c->port, steps[s][0], steps[s][1]);
      if (r.status != 200) {
        fprintf(stderr, "churn %s: %d %s\n", steps[s][0], r.status, r.body);
        c->failures++;
      }
      http_reply_free(&r);
      usleep(20 * 1000);
    }
  return NULL;
}

/* Concurrent clients over three adapter sets (one of them loaded,
 * reloaded and unloaded all along) get exactly the answers they get
 * alone: no failure but the documented 404 of the unloaded adapter, no
 * answer made with another adapter. */
static void test_concurrent_clients(int port) {
  const char *bodies[] = {
      "{\"model\": \"sql\", \"prompt\": \"Say 1\", \"temperature\": 0, \"max_tokens\": 10}",
      ("{\"model\": \"m\", \"prompt\": \"Say 1\", \"temperature\": 0, \"max_tokens\": 10, "
       "\"adapters\": [{\"name\": \"tone\", \"scale\": 1.5}, {\"name\": \"sql\", \"scale\": 0.25}]}"),
      "{\"model\": \"m\", \"prompt\": \"Say 1\", \"temperature\": 0, \"max_tokens\": 10}",
      "{\"model\": \"churn\", \"prompt\": \"Say 1\", \"temperature\": 0, \"max_tokens\": 10}"};
  char *expected[5];
  for (int i = 0; i < 3; i++) {
    http_reply r = http_post(port, "/v1/completions", bodies[i]);
    expected[i] = answer_text(r.body, NULL, 0);
    MXL_CHECK(r.status == 200);
    http_reply_free(&r);
  }
  /* churn is a1 (as sql, but at scale 1) or a2. */
  const char *loads[] = {"{\"lora_name\": \"c1\", \"lora_path\": \"a1.mxla\"}",
                         "{\"lora_name\": \"c2\", \"lora_path\": \"sub/a2.mxla\"}"};
  for (int v = 0; v < 2; v++) {
    http_reply l = http_post(port, "/v1/load_lora_adapter", loads[v]);
    MXL_CHECK(l.status == 200);
    http_reply_free(&l);
    char body[256];
    snprintf(body, sizeof body, "{\"model\": \"c%d\", \"prompt\": \"Say 1\", \"temperature\": 0, "
             "\"max_tokens\": 10}", v + 1);
    http_reply r = http_post(port, "/v1/completions", body);
    expected[3 + v] = answer_text(r.body, NULL, 0);
    http_reply_free(&r);
    snprintf(body, sizeof body, "{\"lora_name\": \"c%d\"}", v + 1);
    r = http_post(port, "/v1/unload_lora_adapter", body);
    http_reply_free(&r);
  }
  enum { CLIENTS = 8, REQUESTS = 4 };
  client_job jobs[CLIENTS];
  pthread_t threads[CLIENTS + 1];
  churn_job churn = {port, 6, 0};
  for (int i = 0; i < CLIENTS; i++) {
    int kind = i % 4;
    jobs[i] = (client_job){port, i, REQUESTS, bodies[kind], {NULL, NULL}, kind == 3, 0, 0, 0};
    jobs[i].expected[0] = kind == 3 ? expected[3] : expected[kind];
    jobs[i].expected[1] = kind == 3 ? expected[4] : NULL;
    pthread_create(&threads[i], NULL, client_main, &jobs[i]);
  }
  pthread_create(&threads[CLIENTS], NULL, churn_main, &churn);
  for (int i = 0; i <= CLIENTS; i++) pthread_join(threads[i], NULL);
  int answered = 0;
  for (int i = 0; i < CLIENTS; i++) {
    MXL_CHECK_MSG(jobs[i].failures == 0, "client %d: %d failures", i, jobs[i].failures);
    answered += jobs[i].answered;
  }
  MXL_CHECK(churn.failures == 0);
  MXL_CHECK(answered >= CLIENTS / 4 * 3 * REQUESTS);
  for (int i = 0; i < 5; i++) free(expected[i]);
  MXL_CHECK(alive(port));
}

/* ---------------------------------------------------------------- the runs */

static const char *ADAPTERS = "--adapter sql=@R/run0/adapter.mxla:0.5 "
                              "--adapter tone=@R/run1/adapter.mxla";

/* usage.prompt_tokens of a whole answer, or -1. */
static int prompt_tokens_of(const char *body) {
  cJSON *j = cJSON_Parse(body);
  const cJSON *n = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "prompt_tokens");
  int v = cJSON_IsNumber(n) ? n->valueint : -1;
  cJSON_Delete(j);
  return v;
}

/* The tool call of a streamed answer: id and name from the call's first
 * chunk, the arguments joined; the finish reason into `finish`. */
static void streamed_call(const char *sse_body, char *id, char *name, char *args, size_t cap,
                          char *finish) {
  id[0] = name[0] = args[0] = finish[0] = '\0';
  int firsts = 0;
  for (const char *p = sse_body; (p = strstr(p, "data: {")) != NULL;) {
    p += 6;
    const char *end = strstr(p, "\n\n");
    if (!end) break;
    char *payload = strndup(p, (size_t)(end - p));
    p = end;
    cJSON *j = cJSON_Parse(payload);
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    const cJSON *fin = cJSON_GetObjectItem(c, "finish_reason");
    if (cJSON_IsString(fin)) snprintf(finish, 16, "%s", fin->valuestring);
    const cJSON *calls = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "delta"), "tool_calls");
    for (const cJSON *call = calls ? calls->child : NULL; call; call = call->next) {
      MXL_CHECK(cJSON_GetObjectItem(call, "index")->valueint == 0);
      const cJSON *fn = cJSON_GetObjectItem(call, "function");
      const cJSON *cid = cJSON_GetObjectItem(call, "id");
      if (cJSON_IsString(cid)) {
        firsts++;
        snprintf(id, cap, "%s", cid->valuestring);
        snprintf(name, cap, "%s", cJSON_GetObjectItem(fn, "name")->valuestring);
      }
      const cJSON *a = cJSON_GetObjectItem(fn, "arguments");
      if (cJSON_IsString(a) && strlen(args) + strlen(a->valuestring) < cap)
        strcat(args, a->valuestring);
    }
    cJSON_Delete(j);
    free(payload);
  }
  MXL_CHECK_MSG(firsts == 1, "%d chunks opened a call: %s", firsts, sse_body);
}

/* Function tools end to end: the tools are rendered into the prompt, and
 * with the adapter trained to call get_weather the answer is that call,
 * whole (tool_calls, content null, finish_reason tool_calls) and streamed
 * (id and name first, then the arguments); without tools offered the same
 * adapter's call stays text. */
static void test_tools_request(int port) {
  const char *ask = "{\"model\": \"@M\", \"messages\": [{\"role\": \"user\", \"content\": "
                    "\"Weather in Paris?\"}], \"temperature\": 0, \"max_tokens\": 200@X}";
  char with[1024], without[1024], streamed[1024], plain[1024];
  fill(with, sizeof with, ask, "@X", ", \"tools\": [" WEATHER_TOOL "]");
  fill(without, sizeof without, ask, "@X", "");
  fill(streamed, sizeof streamed, ask, "@X", ", \"tools\": [" WEATHER_TOOL "], \"stream\": true");
  fill(plain, sizeof plain, with, "@M", "m");
  http_reply a = http_post(port, "/v1/chat/completions", plain);
  fill(plain, sizeof plain, without, "@M", "m");
  http_reply b = http_post(port, "/v1/chat/completions", plain);
  MXL_CHECK_MSG(a.status == 200 && b.status == 200, "%d %s / %d %s", a.status, a.body, b.status,
                b.body);
  int pa = prompt_tokens_of(a.body), pb = prompt_tokens_of(b.body);
  MXL_CHECK_MSG(pb > 0 && pa > pb + 20, "prompt tokens with tools %d, without %d", pa, pb);
  http_reply_free(&a);
  http_reply_free(&b);

  http_reply l = http_post(port, "/v1/load_lora_adapter",
                           "{\"lora_name\": \"weather\", \"lora_path\": \"weather.mxla\"}");
  MXL_CHECK_MSG(l.status == 200, "%d %s", l.status, l.body);
  http_reply_free(&l);
  fill(plain, sizeof plain, with, "@M", "weather");
  a = http_post(port, "/v1/chat/completions", plain);
  cJSON *j = cJSON_Parse(a.body);
  const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
  const cJSON *msg = cJSON_GetObjectItem(choice, "message");
  const cJSON *call = cJSON_GetArrayItem(cJSON_GetObjectItem(msg, "tool_calls"), 0);
  const cJSON *fn = cJSON_GetObjectItem(call, "function");
  const cJSON *id = cJSON_GetObjectItem(call, "id"), *args = cJSON_GetObjectItem(fn, "arguments");
  MXL_CHECK_MSG(a.status == 200 && cJSON_IsString(id) && !strncmp(id->valuestring, "call_", 5) &&
                    !strcmp(cJSON_GetObjectItem(call, "type")->valuestring, "function") &&
                    !strcmp(cJSON_GetObjectItem(fn, "name")->valuestring, "get_weather") &&
                    cJSON_IsNull(cJSON_GetObjectItem(msg, "content")) &&
                    !strcmp(cJSON_GetObjectItem(choice, "finish_reason")->valuestring, "tool_calls"),
                "%s", a.body);
  cJSON *parsed = cJSON_IsString(args) ? cJSON_Parse(args->valuestring) : NULL;
  const cJSON *city = cJSON_GetObjectItem(parsed, "city");
  MXL_CHECK_MSG(cJSON_IsString(city) && !strcmp(city->valuestring, "Paris"), "%s", a.body);

  fill(plain, sizeof plain, streamed, "@M", "weather");
  http_reply c = http_post(port, "/v1/chat/completions", plain);
  char sid[64], sname[64], sargs[256], finish[16];
  streamed_call(c.body, sid, sname, sargs, sizeof sargs, finish);
  MXL_CHECK_MSG(c.status == 200 && !strncmp(sid, "call_", 5) && strcmp(sid, id->valuestring) &&
                    !strcmp(sname, "get_weather") && cJSON_IsString(args) &&
                    !strcmp(sargs, args->valuestring) && !strcmp(finish, "tool_calls"),
                "%s", c.body);
  free(stream_text(c.body, 1, 0, finish, sizeof finish));

  /* tool_choice "required": the adapter names the function itself after
   * the forced "to=functions.", the same call */
  fill(plain, sizeof plain, ask, "@X", ", \"tools\": [" WEATHER_TOOL "], \"tool_choice\": \"required\"");
  char forced[1024];
  fill(forced, sizeof forced, plain, "@M", "weather");
  http_reply f = http_post(port, "/v1/chat/completions", forced);
  MXL_CHECK_MSG(f.status == 200 && cJSON_IsString(args) &&
                    strstr(f.body, "\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\": "
                                   "\\\"Paris\\\"}\"") && strstr(f.body, "\"finish_reason\":\"tool_calls\""),
                "%s", f.body);
  http_reply_free(&f);
  /* a named function: even the base model's reply is that call (its header
   * ends the prompt) */
  fill(plain, sizeof plain, ask, "@X", ", \"tools\": [" WEATHER_TOOL "], \"tool_choice\": "
       "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\"}}");
  fill(forced, sizeof forced, plain, "@M", "m");
  f = http_post(port, "/v1/chat/completions", forced);
  MXL_CHECK_MSG(f.status == 200 && strstr(f.body, "\"content\":null,\"tool_calls\":[{\"id\":\"call_") &&
                    strstr(f.body, "\"name\":\"get_weather\""),
                "%s", f.body);
  http_reply_free(&f);

  fill(plain, sizeof plain, without, "@M", "weather");
  b = http_post(port, "/v1/chat/completions", plain);
  MXL_CHECK_MSG(b.status == 200 && !strstr(b.body, "tool_calls") &&
                    strstr(b.body, "{\\\"city\\\": \\\"Paris\\\"}"),
                "%s", b.body);
  l = http_post(port, "/v1/unload_lora_adapter", "{\"lora_name\": \"weather\"}");
  MXL_CHECK(l.status == 200);
  cJSON_Delete(parsed);
  cJSON_Delete(j);
  http_reply_free(&l);
  http_reply_free(&a);
  http_reply_free(&b);
  http_reply_free(&c);
}

static void test_server_end_to_end(void) {
  server s;
  char adapters[512];
  fill(adapters, sizeof adapters, ADAPTERS, "@R", root);
  if (!server_start(&s, "--model %s/m %s --adapter-dir %s/adapters --backend ref --threads 1 "
                    "--ctx 1024 --max-tokens 512 --max-body 65536", root, adapters, root)) {
    char *log = read_log(&s);
    MXL_CHECK_MSG(0, "the server did not start: %s", log);
    free(log);
    return;
  }
  test_models_and_health(s.port);
  test_greedy_equals_generate(s.port);
  test_streaming(s.port);
  test_tools_request(s.port);
  test_bad_requests(s.port);
  test_adapter_endpoints(s.port);
  test_metrics(s.port);
  test_disconnect(s.port);
  test_concurrent_clients(s.port);
  char *log = read_log(&s);
  MXL_CHECK(strstr(log, "model    m (hf layout"));
  MXL_CHECK(strstr(log, "adapter  sql ("));
  MXL_CHECK(strstr(log, "POST /v1/chat/completions 200 model=sql adapters=sql:0.5 prompt="));
  MXL_CHECK(strstr(log, "POST /v1/completions 413"));
  free(log);
  int rc = server_stop(&s);
  log = read_log(&s);
  MXL_CHECK_MSG(rc == 0, "exit %d: %s", rc, strlen(log) > 6000 ? log + strlen(log) - 6000 : log);
  free(log);
}

typedef struct burst_arg {
  int port;
  int status;
  char message[256];
} burst_arg;

static void *burst_one(void *arg) {
  burst_arg *b = arg;
  http_reply r = http_request(b->port, "POST", "/v1/chat/completions",
                              "Authorization: Bearer s3cret\r\n",
                              "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", "
                              "\"content\": \"Say 3\"}], \"max_tokens\": 40, \"seed\": 1}");
  b->status = r.status;
  snprintf(b->message, sizeof b->message, "%s", r.body);
  http_reply_free(&r);
  return NULL;
}

/* With one sequence running and one waiting (--max-batch 1 --max-queue 1),
 * a burst gets 429 for the rest, and the server goes on. (On the server
 * with an API key.) */
static void test_queue_full(int port) {
  enum { BURST = 8 };
  burst_arg b[BURST];
  pthread_t t[BURST];
  for (int i = 0; i < BURST; i++) {
    b[i] = (burst_arg){port, 0, ""};
    pthread_create(&t[i], NULL, burst_one, &b[i]);
  }
  int ok = 0, busy = 0;
  for (int i = 0; i < BURST; i++) {
    pthread_join(t[i], NULL);
    ok += b[i].status == 200;
    if (b[i].status == 429 && strstr(b[i].message, "queue")) busy++;
  }
  MXL_CHECK_MSG(ok >= 1 && busy >= 1 && ok + busy == BURST, "%d answered, %d refused", ok, busy);
  MXL_CHECK(alive(port));
}

/* An API key guards /v1/ (not /health); off loopback one is required. */
static void test_api_key(void) {
  char *out = NULL;
  MXL_CHECK(mxl(&out, 1, "serve --model %s/m --host 0.0.0.0 --port 0 --backend ref", root) == 1);
  MXL_CHECK_MSG(strstr(out, "needs --api-key"), "%s", out);
  free(out);
  server s;
  if (!server_start(&s, "--model %s/m --api-key s3cret --backend ref --threads 1 "
                    "--max-batch 1 --max-queue 1", root)) {
    MXL_CHECK_MSG(0, "the server did not start");
    return;
  }
  http_reply r = http_get(s.port, "/v1/models");
  MXL_CHECK(error_status(&r, 401, "no API key"));
  http_reply_free(&r);
  r = http_request(s.port, "GET", "/v1/models", "Authorization: Bearer wrong\r\n", NULL);
  MXL_CHECK(error_status(&r, 401, "wrong API key"));
  http_reply_free(&r);
  r = http_request(s.port, "GET", "/v1/models", "Authorization: Bearer s3cret\r\n", NULL);
  MXL_CHECK(r.status == 200);
  http_reply_free(&r);
  MXL_CHECK(alive(s.port));
  test_queue_full(s.port);
  MXL_CHECK(server_stop(&s) == 0);
}

typedef struct stream_arg {
  int port;
  http_reply reply;
} stream_arg;

static void *long_stream(void *arg) {
  stream_arg *a = arg;
  a->reply = http_post(a->port, "/v1/chat/completions",
                       "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}],"
                       " \"max_tokens\": 60, \"temperature\": 0, \"stream\": true}");
  return NULL;
}

/* SIGTERM lets the request in flight finish, then the server exits 0. */
static void test_sigterm_drains(void) {
  server s;
  if (!server_start(&s, "--model %s/m --backend ref --threads 1", root)) {
    MXL_CHECK_MSG(0, "the server did not start");
    return;
  }
  stream_arg a = {s.port, {0}};
  pthread_t t;
  pthread_create(&t, NULL, long_stream, &a);
  for (int i = 0; i < 200 && metric_value(s.port, "mxlora_http_generations_in_flight") < 1; i++)
    usleep(20 * 1000);
  int port = s.port;
  MXL_CHECK(server_stop(&s) == 0);
  pthread_join(t, NULL);
  char finish[16];
  char *text = stream_text(a.reply.body, 1, 0, finish, sizeof finish);
  MXL_CHECK_MSG(a.reply.status == 200 && (!strcmp(finish, "stop") || !strcmp(finish, "length")),
                "%d %s", a.reply.status, a.reply.body);
  free(text);
  http_reply_free(&a.reply);
  char *log = read_log(&s);
  MXL_CHECK_MSG(strstr(log, "SIGTERM: draining") && strstr(log, "stopped"), "%s", log);
  free(log);
  MXL_CHECK(http_connect(port) < 0);
}

/* ---------------------------------------------------------------- chat */

/* The number after `key` in text, or -1. */
static int number_after(const char *text, const char *key) {
  const char *at = strstr(text, key);
  return at ? atoi(at + strlen(key)) : -1;
}

static void test_chat_through_a_pipe(void) {
  char script[160];
  snprintf(script, sizeof script, "%s/chat.txt", root);
  FILE *fp = fopen(script, "w");
  fprintf(fp, "Say 3\n/adapter list\n/adapter load x %s/adapters/a1.mxla\n/adapter use sql:0.5 x:2\n"
              "/adapter use nope\n/reasoning high\n/show-analysis\nSay 4\n/adapter unload sql\n"
              "/adapter list\n/reset\n/bogus\n/help\n/exit\nnever sent\n", root);
  fclose(fp);
  char *out = NULL;
  int rc = mxl(&out, 1, "chat --model %s/m --adapter sql=%s/run0/adapter.mxla:0.5 --backend ref "
               "--temperature 0 --max-tokens 30 < '%s'", root, root, script);
  MXL_CHECK_MSG(rc == 0, "%s", out);
  const char *needles[] = {"* sql (", "using sql at scale 0.5", "using x at scale 2",
                           "adapter x loaded from", "no adapter named \"nope\" is loaded",
                           "reasoning effort high", "analysis shown", "adapter sql unloaded",
                           "* x (", "conversation cleared", "unknown command /bogus",
                           "/adapter use NAME[:SCALE]"};
  for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++)
    MXL_CHECK_MSG(strstr(out, needles[i]), "chat output lacks \"%s\": %s", needles[i], out);
  /* Two replies, none after /exit; the first is what `generate --chat`
   * makes with the same adapter. */
  const char *first = strstr(out, "cached), ");
  MXL_CHECK(first && strstr(first + 1, "cached), ") &&
            !strstr(strstr(first + 1, "cached), ") + 1, "cached), "));
  char *gen = NULL;
  MXL_CHECK(mxl(&gen, 1, "generate --model %s/m --backend ref --temperature 0 --chat --prompt "
                "'Say 3' --max-tokens 30 --adapter %s/run0/adapter.mxla:0.5", root, root) == 0);
  MXL_CHECK_MSG(number_after(out, "cached), ") == number_after(gen, "tok/s), "),
                "chat: %s\ngenerate: %s", out, gen);
  MXL_CHECK(number_after(out, "\n[") == number_after(gen, "\n["));
  free(gen);
  free(out);
}

/* Function tools in the terminal chat: the trained adapter's call is
 * shown, /tool answers it and the model's next turn follows (its prompt
 * continuing the first one's cache), and /tool without a call to answer
 * is refused. */
static void test_chat_tools_through_a_pipe(void) {
  char script[160], tools[160];
  snprintf(tools, sizeof tools, "%s/tools_defs.json", root);
  FILE *fp = fopen(tools, "w");
  if (fp) {
    fputs("[" WEATHER_TOOL "]", fp);
    fclose(fp);
  }
  snprintf(script, sizeof script, "%s/chat_tools.txt", root);
  fp = fopen(script, "w");
  if (fp) {
    fputs("Weather in Paris?\n/tool 20 C\n/reset\n/tool 21 C\n", fp);
    fclose(fp);
  }
  char *out = NULL;
  int rc = mxl(&out, 1, "chat --model %s/m --adapter weather=%s/run_tools/adapter.mxla --tools %s "
               "--backend ref --temperature 0 --max-tokens 60 < '%s'", root, root, tools, script);
  MXL_CHECK_MSG(rc == 0 && strstr(out, "[call functions.get_weather] {\"city\": \"Paris\"}") &&
                    strstr(out, "/tool: no function call to answer"),
                "%s", out);
  /* two turns (the second after the tool's result, most of its prompt
   * cached), none after /reset */
  const char *first = out ? strstr(out, "prompt tokens (") : NULL;
  const char *second = first ? strstr(first + 1, "prompt tokens (") : NULL;
  MXL_CHECK_MSG(second && !strstr(second + 1, "prompt tokens (") &&
                    number_after(second, "prompt tokens (") > 100,
                "%s", out);
  free(out);
}

/* Chat output without its summary lines ("[N prompt tokens ...]"). */
static void drop_summaries(char *text) {
  char *w = text;
  for (const char *r = text; *r;) {
    const char *eol = strchr(r, '\n');
    size_t n = eol ? (size_t)(eol - r) + 1 : strlen(r);
    if (*r != '[') memmove(w, r, n), w += n;
    r += n;
  }
  *w = '\0';
}

/* A conversation's second turn continues from the first one's KV cache
 * (its prompt repeats the first one; the test model's random replies
 * have no text, so the history holds the two user messages): the same
 * replies as without the prefix cache, most of the prompt not prefilled
 * again. */
static void test_chat_reuses_the_conversation(void) {
  char script[160];
  snprintf(script, sizeof script, "%s/chat2.txt", root);
  FILE *fp = fopen(script, "w");
  fprintf(fp, "Say 3\nSay 4 and more\n");
  fclose(fp);
  char *out[2] = {NULL, NULL};
  for (int i = 0; i < 2; i++)
    MXL_CHECK(mxl(&out[i], 1, "chat --model %s/m --backend ref --temperature 0 --max-tokens 24 %s "
                  "< '%s'", root, i ? "--no-prefix-cache" : "", script) == 0);
  if (!out[0] || !out[1]) return;
  const char *turn2[2];
  for (int i = 0; i < 2; i++) {
    const char *first = strstr(out[i], "\n[");
    turn2[i] = first ? strstr(first + 1, "\n[") : NULL;
  }
  MXL_CHECK_MSG(turn2[0] && turn2[1], "two turns expected:\n%s\n%s", out[0], out[1]);
  if (turn2[0] && turn2[1]) {
    int prompt1 = number_after(out[0], "\n["), prompt2 = number_after(turn2[0], "\n[");
    int cached = number_after(turn2[0], "prompt tokens (");
    MXL_CHECK_MSG(cached > prompt1 / 2 && cached < prompt1 && prompt2 > prompt1,
                  "turn 2: %d of %d prompt tokens cached (turn 1's prompt: %d)\n%s", cached,
                  prompt2, prompt1, out[0]);
    MXL_CHECK_MSG(number_after(turn2[1], "prompt tokens (") == 0, "%s", out[1]);
    drop_summaries(out[0]);
    drop_summaries(out[1]);
    MXL_CHECK_MSG(!strcmp(out[0], out[1]), "replies differ:\n%s\n---\n%s", out[0], out[1]);
  }
  free(out[0]);
  free(out[1]);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  snprintf(root, sizeof root, "/tmp/mxl_server_XXXXXX");
  if (!mkdtemp(root)) return 1;
  if (!make_fixtures()) {
    fprintf(stderr, "could not make the model and adapters\n");
    return 1;
  }
  MXL_RUN(test_server_end_to_end);
  MXL_RUN(test_api_key);
  MXL_RUN(test_sigterm_drains);
  MXL_RUN(test_chat_through_a_pipe);
  MXL_RUN(test_chat_tools_through_a_pipe);
  MXL_RUN(test_chat_reuses_the_conversation);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
  return mxl_test_summary("server");
}
