/* mxlora chat: an interactive terminal chat on the serving registry, with
 * history, adapters loaded and mixed at runtime, and streamed replies.
 * Works through a pipe too (no prompt is printed then). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/serving.h"

MXL_DECLARE_COMMAND(chat);

const char mxl_cmd_chat_help[] = "interactive chat with adapters loaded and mixed at runtime";

static const char HELP[] =
    "commands:\n"
    "  /adapter load NAME FILE        load an adapter file under NAME\n"
    "  /adapter use NAME[:SCALE] ...  answer with these adapters (none: the base alone)\n"
    "  /adapter unload NAME           forget an adapter\n"
    "  /adapter list                  the adapters loaded\n"
    "  /reasoning low|medium|high     reasoning effort\n"
    "  /show-analysis                 show or hide the analysis channel\n"
    "  /tool RESULT                   answer the model's last function call (--tools)\n"
    "  /reset                         forget the conversation\n"
    "  /exit                          leave (or Ctrl-D)\n";

enum { MAX_USE = MXL_REQUEST_MAX_ADAPTERS };

typedef struct chat_state {
  mxl_service *svc;
  cJSON *history; /* the messages so far */
  const char *developer;
  char effort[8];
  int show_analysis, color;
  char use_names[MAX_USE][MXL_REGISTRY_NAME_MAX + 1];
  float use_scales[MAX_USE];
  int n_use;
  mxl_job_sampling sampling;
  int max_tokens;
  cJSON *tools;         /* --tools: function tools offered, or NULL */
  char call_id[32];     /* the model's last call, which /tool answers ("" when none) */
  int calls;            /* calls so far, for their ids */
} chat_state;

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) {
  (void)sig;
  interrupted = 1;
}

/* ---------------------------------------------------------------- commands */

static void list_adapters(chat_state *c) {
  mxl_registry_entry *list = NULL;
  int n = 0;
  if (mxl_registry_list(mxl_service_registry(c->svc), &list, &n) != MXL_OK) return;
  if (n == 0) printf("no adapters loaded\n");
  for (int i = 0; i < n; i++) {
    int used = 0;
    for (int k = 0; k < c->n_use; k++) used |= !strcmp(c->use_names[k], list[i].name);
    printf("%s %s (%s, rank %d)\n", used ? "*" : " ", list[i].name, list[i].path, list[i].rank);
  }
  mxl_registry_list_free(list);
}

static void use_adapters(chat_state *c, char **args, int n) {
  if (n > MAX_USE) {
    fprintf(stderr, "at most %d adapters at once\n", MAX_USE);
    return;
  }
  chat_state next = *c;
  next.n_use = 0;
  for (int i = 0; i < n; i++) {
    char *colon = strrchr(args[i], ':');
    float scale = 1.0f;
    if (colon) {
      char *end = NULL;
      scale = strtof(colon + 1, &end);
      if (!colon[1] || *end) {
        fprintf(stderr, "/adapter use %s: expected NAME[:SCALE]\n", args[i]);
        return;
      }
      *colon = '\0';
    }
    mxl_registry_entry e;
    char *buf = NULL;
    if (mxl_registry_get(mxl_service_registry(c->svc), args[i], &e, &buf) != MXL_OK) {
      fprintf(stderr, "/adapter use: %s\n", mxl_last_error());
      return;
    }
    free(buf);
    snprintf(next.use_names[next.n_use], sizeof next.use_names[0], "%s", args[i]);
    next.use_scales[next.n_use++] = scale;
  }
  *c = next;
  if (n == 0) printf("answering with the base model alone\n");
  for (int i = 0; i < c->n_use; i++)
    printf("using %s at scale %g\n", c->use_names[i], (double)c->use_scales[i]);
}

/* An adapter that is unloaded is no longer used. */
static void drop_use(chat_state *c, const char *name) {
  int k = 0;
  for (int i = 0; i < c->n_use; i++)
    if (strcmp(c->use_names[i], name)) {
      memmove(c->use_names[k], c->use_names[i], sizeof c->use_names[0]);
      c->use_scales[k++] = c->use_scales[i];
    }
  c->n_use = k;
}

static void adapter_command(chat_state *c, char **args, int n) {
  mxl_status st = MXL_OK;
  if (n >= 1 && !strcmp(args[0], "list")) {
    list_adapters(c);
  } else if (n >= 1 && !strcmp(args[0], "use")) {
    use_adapters(c, args + 1, n - 1);
  } else if (n == 3 && !strcmp(args[0], "load")) {
    st = mxl_service_load_adapter(c->svc, args[1], args[2], 1.0f, 0);
    if (st == MXL_OK) printf("adapter %s loaded from %s\n", args[1], args[2]);
  } else if (n == 2 && !strcmp(args[0], "unload")) {
    st = mxl_service_unload_adapter(c->svc, args[1]);
    if (st == MXL_OK) {
      drop_use(c, args[1]);
      printf("adapter %s unloaded\n", args[1]);
    }
  } else {
    fprintf(stderr, "usage: /adapter load NAME FILE | use NAME[:SCALE] ... | unload NAME | list\n");
  }
  if (st != MXL_OK) fprintf(stderr, "/adapter %s: %s\n", args[0], mxl_last_error());
}

/* Runs one slash command; 1 when it asks to leave. */
static int command(chat_state *c, char *line) {
  char *args[2 + MAX_USE + 1];
  int n = 0;
  for (char *tok = strtok(line, " \t"); tok && n < (int)(sizeof args / sizeof args[0]);
       tok = strtok(NULL, " \t"))
    args[n++] = tok;
  if (n == 0) return 0;
  if (!strcmp(args[0], "/exit") || !strcmp(args[0], "/quit")) return 1;
  if (!strcmp(args[0], "/adapter")) {
    adapter_command(c, args + 1, n - 1);
  } else if (!strcmp(args[0], "/reasoning") && n == 2 &&
             (!strcmp(args[1], "low") || !strcmp(args[1], "medium") || !strcmp(args[1], "high"))) {
    snprintf(c->effort, sizeof c->effort, "%s", args[1]);
    printf("reasoning effort %s\n", c->effort);
  } else if (!strcmp(args[0], "/show-analysis")) {
    c->show_analysis = !c->show_analysis;
    printf("analysis %s\n", c->show_analysis ? "shown" : "hidden");
  } else if (!strcmp(args[0], "/reset")) {
    cJSON_Delete(c->history);
    c->history = cJSON_CreateArray();
    c->call_id[0] = '\0';
    printf("conversation cleared\n");
  } else if (!strcmp(args[0], "/help")) {
    fputs(HELP, stdout);
  } else {
    fprintf(stderr, "unknown command %s (/help lists them)\n", args[0]);
  }
  return 0;
}

/* ---------------------------------------------------------------- turns */

static char *conversation(const chat_state *c) {
  cJSON *root = cJSON_CreateObject(), *msgs = cJSON_AddArrayToObject(root, "messages");
  if (c->developer) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "developer");
    cJSON_AddStringToObject(m, "content", c->developer);
    cJSON_AddItemToArray(msgs, m);
  }
  for (const cJSON *m = c->history->child; m; m = m->next)
    cJSON_AddItemToArray(msgs, cJSON_Duplicate(m, 1));
  cJSON_AddStringToObject(root, "reasoning_effort", c->effort);
  if (c->tools) cJSON_AddItemToObject(root, "tools", cJSON_Duplicate(c->tools, 1));
  char *json = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  return json;
}

/* A message appended to the history (content NULL: none, as an assistant
 * message that only calls); returned for more fields. */
static cJSON *add_message(chat_state *c, const char *role, const char *content,
                          const char *thinking) {
  cJSON *m = cJSON_CreateObject();
  cJSON_AddStringToObject(m, "role", role);
  if (content) cJSON_AddStringToObject(m, "content", content);
  if (thinking && thinking[0]) cJSON_AddStringToObject(m, "thinking", thinking);
  cJSON_AddItemToArray(c->history, m);
  return m;
}

static void show(const chat_state *c, const mxl_job_output *o, int *in_analysis) {
  if (o->reasoning_len && c->show_analysis) {
    if (!*in_analysis) printf("%s[analysis]%s ", c->color ? "\033[2m" : "", c->color ? "" : "");
    *in_analysis = 1;
    fwrite(o->reasoning, 1, o->reasoning_len, stdout);
  }
  if (o->content_len) {
    if (*in_analysis) printf("%s\n", c->color ? "\033[0m" : "");
    *in_analysis = 0;
    fwrite(o->content, 1, o->content_len, stdout);
  }
  fflush(stdout);
}

/* A growing text (the reply, kept for the history). */
typedef struct text_buf {
  char *data;
  size_t len, cap;
} text_buf;

static void text_add(text_buf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = 2 * (b->len + n + 1) + 64;
    char *grown = realloc(b->data, cap);
    if (!grown) return; /* the history keeps what fitted */
    b->data = grown;
    b->cap = cap;
  }
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
}

/* The reply's function calls: shown, and kept in its history message
 * (with ids, so that /tool can answer the last one). */
static void keep_calls(chat_state *c, cJSON *msg, const mxl_job_output *o) {
  cJSON *list = cJSON_AddArrayToObject(msg, "tool_calls");
  for (int i = 0; i < o->n_calls; i++) {
    const mxl_job_call *k = &o->calls[i];
    printf("%s[call functions.%s]%s %.*s\n", c->color ? "\033[1m" : "", k->name,
           c->color ? "\033[0m" : "", (int)k->arguments_len, k->arguments);
    snprintf(c->call_id, sizeof c->call_id, "call_%d", ++c->calls);
    cJSON *call = cJSON_CreateObject(), *fn = cJSON_CreateObject();
    cJSON_AddStringToObject(call, "id", c->call_id);
    cJSON_AddStringToObject(call, "type", "function");
    cJSON_AddStringToObject(fn, "name", k->name);
    char *args = strndup(k->arguments, k->arguments_len);
    cJSON_AddStringToObject(fn, "arguments", args ? args : "");
    free(args);
    cJSON_AddItemToObject(call, "function", fn);
    cJSON_AddItemToArray(list, call);
  }
}

/* One turn after the history's last message (the user's, or a tool's
 * result): the reply streamed, then kept in the history. */
static void turn(chat_state *c) {
  char *conv = conversation(c);
  mxl_job_adapter adapters[MAX_USE];
  for (int i = 0; i < c->n_use; i++) adapters[i] = (mxl_job_adapter){c->use_names[i], c->use_scales[i]};
  mxl_job_request req;
  mxl_job_request_defaults(&req);
  req.chat = 1;
  req.conversation = conv;
  req.adapters = adapters;
  req.n_adapters = c->n_use;
  req.sampling = c->sampling;
  req.max_tokens = c->max_tokens;
  req.tools = c->tools != NULL;
  mxl_job *job = NULL;
  mxl_status st = conv ? mxl_job_start(c->svc, &req, &job) : MXL_ERR_MEMORY;
  free(conv);
  if (st != MXL_OK) {
    fprintf(stderr, "error: %s\n", mxl_last_error());
    cJSON_DeleteItemFromArray(c->history, cJSON_GetArraySize(c->history) - 1);
    return;
  }
  interrupted = 0;
  text_buf answer = {0}, thinking = {0};
  mxl_job_output o;
  int in_analysis = 0;
  do {
    while (!mxl_job_next(job, 100, &o))
      if (interrupted) mxl_job_cancel(job);
    show(c, &o, &in_analysis);
    text_add(&answer, o.content, o.content_len);
    text_add(&thinking, o.reasoning, o.reasoning_len);
  } while (o.finish == MXL_JOB_RUNNING);
  if (in_analysis && c->color) printf("\033[0m");
  printf("\n");
  /* An empty reply (cancelled at once, or a model that said nothing) is
   * not kept: the renderer refuses an assistant message without text. */
  c->call_id[0] = '\0';
  if (o.n_calls) /* its message holds the calls, and text only where there is some */
    keep_calls(c, add_message(c, "assistant", answer.len ? answer.data : NULL, thinking.data), &o);
  else if (answer.len || thinking.len)
    add_message(c, "assistant", answer.data ? answer.data : "", thinking.data);
  fflush(stdout); /* before the summary on stderr, for pipes and files */
  double decode = o.total_seconds - o.first_token_seconds;
  fprintf(stderr, "[%d prompt tokens (%d cached), %d generated (%.1f tok/s), the first after "
          "%.2f s; %s]\n",
          o.prompt_tokens, o.cached_tokens, o.generated_tokens,
          decode > 0 ? (o.generated_tokens - 1) / decode : 0.0, o.first_token_seconds,
          o.finish == MXL_JOB_ERROR ? o.message : mxl_job_finish_name(o.finish));
  free(answer.data);
  free(thinking.data);
  mxl_job_free(job);
}

/* /tool RESULT: the function's answer to the model's last call, then the
 * model's next turn. */
static void tool_result(chat_state *c, const char *result) {
  if (!c->call_id[0]) {
    fprintf(stderr, "/tool: no function call to answer (the model's last reply made none)\n");
    return;
  }
  cJSON *m = cJSON_CreateObject();
  cJSON_AddStringToObject(m, "role", "tool");
  cJSON_AddStringToObject(m, "tool_call_id", c->call_id);
  cJSON_AddStringToObject(m, "content", result);
  cJSON_AddItemToArray(c->history, m);
  turn(c);
}

/* ---------------------------------------------------------------- main */

int mxl_cmd_chat(int argc, char **argv) {
  mxl_serving_args a = {0};
  chat_state c = {0};
  c.sampling.temperature = 1.0f;
  c.sampling.top_p = 1.0f;
  c.sampling.repetition_penalty = 1.0f;
  c.max_tokens = 0;
  const char *effort = "medium";
  const char *tools_path = NULL;
  mxl_opt opts[MXL_SERVING_N_OPTS + 9];
  mxl_serving_opts(&a, opts);
  mxl_opt_list use = {0};
  const mxl_opt more[] = {
      {"--use", MXL_OPT_LIST, &use, "NAME[:SCALE]: start with this adapter in use (repeatable)"},
      {"--reasoning", MXL_OPT_STRING, &effort, "low|medium|high: reasoning effort (default medium)"},
      {"--show-analysis", MXL_OPT_FLAG, &c.show_analysis, "show the analysis channel"},
      {"--developer", MXL_OPT_STRING, &c.developer, "TEXT: developer instructions"},
      {"--temperature", MXL_OPT_FLOAT, &c.sampling.temperature, "T: sampling temperature (0 = greedy)"},
      {"--top-p", MXL_OPT_FLOAT, &c.sampling.top_p, "P: nucleus sampling"},
      {"--seed", MXL_OPT_UINT64, &c.sampling.seed, "S: sampling seed"},
      {"--max-tokens", MXL_OPT_INT, &c.max_tokens, "N: reply tokens at most (default 1024)"},
      {"--tools", MXL_OPT_STRING, &tools_path, "FILE: function tools offered, a JSON list in "
       "OpenAI's shape; /tool answers a call"},
  };
  memcpy(opts + MXL_SERVING_N_OPTS, more, sizeof more);
  int rc = mxl_cli_parse(argc, argv, "--model DIR [--adapter NAME=FILE[:SCALE]]... [options]",
                         opts, MXL_SERVING_N_OPTS + 9, NULL, 0, NULL);
  if (rc) return rc == 1 ? 0 : 2;
  if (tools_path) {
    char *text = NULL;
    if ((rc = mxl_cli_read_tools("chat", tools_path, &text))) return rc;
    c.tools = cJSON_Parse(text);
    free(text);
  }
  if (strcmp(effort, "low") && strcmp(effort, "medium") && strcmp(effort, "high")) {
    fprintf(stderr, "mxlora chat: --reasoning %s: expected low, medium or high\n", effort);
    return 2;
  }
  snprintf(c.effort, sizeof c.effort, "%s", effort);
  /* One conversation at a time: no other sequence's decode waits on a
   * step, so the prompt runs in the passes `generate` uses. */
  if (a.prefill_chunk == 0) a.prefill_chunk = MXL_PROMPT_PASS_TOKENS;
  rc = mxl_serving_open("chat", &a, &c.svc);
  if (rc) return rc;
  c.history = cJSON_CreateArray();
  c.color = isatty(STDOUT_FILENO);
  /* Every --adapter is used (at its scale) unless --use names others. */
  char *use_args[MXL_OPT_LIST_MAX];
  char use_copy[MXL_OPT_LIST_MAX][MXL_REGISTRY_NAME_MAX + 32];
  for (int i = 0; i < use.n; i++) {
    snprintf(use_copy[i], sizeof use_copy[i], "%s", use.items[i]);
    use_args[i] = use_copy[i];
  }
  if (use.n) {
    use_adapters(&c, use_args, use.n);
  } else {
    mxl_registry_entry *list = NULL;
    int n = 0;
    if (mxl_registry_list(mxl_service_registry(c.svc), &list, &n) == MXL_OK)
      for (int i = 0; i < n && c.n_use < MAX_USE; i++) {
        snprintf(c.use_names[c.n_use], sizeof c.use_names[0], "%s", list[i].name);
        c.use_scales[c.n_use++] = mxl_service_adapter_scale(c.svc, list[i].name);
      }
    mxl_registry_list_free(list);
  }
  struct sigaction sa = {0};
  sa.sa_handler = on_sigint;
  sigaction(SIGINT, &sa, NULL); /* no SA_RESTART: Ctrl-C at the prompt ends getline */
  int tty = isatty(STDIN_FILENO);
  if (tty) fprintf(stderr, "%s\n/help lists the commands; Ctrl-C stops a reply, Ctrl-D leaves.\n",
                   mxl_service_summary(c.svc));
  char *line = NULL;
  size_t cap = 0;
  for (;;) {
    if (tty) {
      printf("> ");
      fflush(stdout);
    }
    errno = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) break;
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    if (n == 0) continue;
    if (!strncmp(line, "/tool ", 6) || !strcmp(line, "/tool")) {
      tool_result(&c, line[5] ? line + 6 : "");
    } else if (line[0] == '/') {
      if (command(&c, line)) break;
    } else {
      add_message(&c, "user", line, NULL);
      turn(&c);
    }
  }
  free(line);
  cJSON_Delete(c.history);
  cJSON_Delete(c.tools);
  mxl_service_close(c.svc);
  return 0;
}
