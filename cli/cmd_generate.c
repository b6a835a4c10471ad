/* mxlora generate: text in, streamed text out, with adapters overlaid. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/progress.h"

MXL_DECLARE_COMMAND(generate);

const char mxl_cmd_generate_help[] = "generate text (optionally as a harmony chat, with adapters)";

typedef struct print_state {
  int show_analysis;
  int color;
  mxl_channel last;
  int final_chars;        /* characters of final-channel text printed */
  char hidden[4096];      /* the start of the analysis not shown */
  size_t hidden_len;
  int hidden_more;        /* more analysis than `hidden` holds */
  int calls;              /* function calls printed */
} print_state;

static void keep_hidden(print_state *p, const char *text, size_t len) {
  size_t room = sizeof p->hidden - 1 - p->hidden_len;
  if (len > room) {
    /* Cut at a character boundary: the text is well-formed UTF-8. */
    while (room > 0 && ((unsigned char)text[room] & 0xc0) == 0x80) room--;
    len = room;
    p->hidden_more = 1;
  }
  memcpy(p->hidden + p->hidden_len, text, len);
  p->hidden_len += len;
  p->hidden[p->hidden_len] = '\0';
}

static void on_text(void *user, mxl_channel ch, const char *text, size_t len) {
  print_state *p = user;
  if (ch == MXL_CHANNEL_FINAL) p->final_chars += len > 0;
  if (ch == MXL_CHANNEL_ANALYSIS && !p->show_analysis) {
    keep_hidden(p, text, len);
    return;
  }
  if (ch != p->last && p->show_analysis) {
    const char *name = ch == MXL_CHANNEL_ANALYSIS ? "analysis" : ch == MXL_CHANNEL_COMMENTARY
                                                                     ? "commentary"
                                                                     : "final";
    if (ch != MXL_CHANNEL_TEXT) printf("%s[%s]%s\n", p->color ? "\033[2m" : "", name,
                                       p->color ? "\033[0m" : "");
    p->last = ch;
  }
  int dim = p->color && ch == MXL_CHANNEL_ANALYSIS;
  if (dim) fputs("\033[2m", stdout);
  fwrite(text, 1, len, stdout);
  if (dim) fputs("\033[0m", stdout);
  fflush(stdout);
}

/* A message addressed to a function is a call: its name, then its
 * arguments as they arrive (on the commentary channel). */
static void on_message(void *user, mxl_channel ch, const char *recipient) {
  print_state *p = user;
  if (!recipient[0]) return;
  printf("%s%s[call %s]%s ", p->final_chars || p->calls ? "\n" : "", p->color ? "\033[1m" : "",
         recipient, p->color ? "\033[0m" : "");
  fflush(stdout);
  p->calls++;
  p->last = ch; /* the arguments follow without a channel line */
}

static void explain_no_answer(const print_state *p, const mxl_gen_result *res, int max_tokens) {
  fprintf(stderr, "mxlora generate: the model wrote no final answer (%d tokens generated, "
          "stopped by %s).\n", res->generated_tokens, res->stop_reason);
  if (!p->show_analysis && p->hidden_len)
    fprintf(stderr, "What it wrote in the analysis channel:\n%s%s\n", p->hidden,
            p->hidden_more ? " [...]" : "");
  else if (!p->show_analysis)
    fprintf(stderr, "It wrote no analysis either.\n");
  fprintf(stderr, "hint: %s--max-tokens (now %d) gives it room to finish.\n",
          p->show_analysis ? "" : "--show-analysis shows its reasoning as it is written; ",
          max_tokens);
}

int mxl_cmd_generate(int argc, char **argv) {
  const char *model = NULL, *prompt = NULL, *developer = NULL, *effort = NULL, *tools = NULL;
  const char *backend = "cpu", *dump = NULL;
  int chat = 0, show_analysis = 0, threads = 0, special = 0, max_context = 0, no_mmap = 0;
  mxl_opt_list adapters = {0};
  mxl_gen_request req;
  mxl_gen_request_defaults(&req);
  const mxl_opt opts[] = {
      {"--model", MXL_OPT_STRING, &model, "DIR: the gpt-oss checkpoint (any layout)"},
      {"--prompt", MXL_OPT_STRING, &prompt, "TEXT: the prompt (default: read stdin)"},
      {"--chat", MXL_OPT_FLAG, &chat, "render the prompt as a harmony chat; show the answer"},
      {"--show-analysis", MXL_OPT_FLAG, &show_analysis, "also show the analysis channel"},
      {"--reasoning", MXL_OPT_STRING, &effort, "low|medium|high: reasoning effort (chat)"},
      {"--developer", MXL_OPT_STRING, &developer, "TEXT: developer instructions (chat)"},
      {"--tools", MXL_OPT_STRING, &tools, "FILE: function tools offered (chat), a JSON list in "
       "OpenAI's shape; a call prints as [call functions.NAME] and its arguments"},
      {"--adapter", MXL_OPT_LIST, &adapters, "FILE[:SCALE]: overlay an adapter (repeatable)"},
      {"--temperature", MXL_OPT_FLOAT, &req.temperature, "T: sampling temperature (0 = greedy)",
       0, 100},
      {"--top-p", MXL_OPT_FLOAT, &req.top_p, "P: nucleus sampling, 0 < P <= 1", 0, 1,
       MXL_OPEN_MIN},
      {"--top-k", MXL_OPT_INT, &req.top_k, "K: keep the K likeliest tokens (0 = all)", 0,
       1 << 30},
      {"--min-p", MXL_OPT_FLOAT, &req.min_p, "P: drop tokens below P times the likeliest", 0, 1,
       MXL_OPEN_MAX},
      {"--repeat-penalty", MXL_OPT_FLOAT, &req.repetition_penalty, "R: repetition penalty (1 = "
       "none)", 0, 100, MXL_OPEN_MIN},
      {"--seed", MXL_OPT_UINT64, &req.seed, "S: sampling seed"},
      {"--max-tokens", MXL_OPT_INT, &req.max_tokens, "N: new tokens at most (default 256)", 1,
       1 << 20},
      {"--special", MXL_OPT_FLAG, &special, "parse special-token names in a raw prompt"},
      {"--dump-logits", MXL_OPT_STRING, &dump, "FILE.npy: logits of every prompt position"},
      {"--prompt-cache", MXL_OPT_STRING, &req.prompt_cache,
       "FILE: keep the KV cache after the prompt there; a later prompt that begins the same "
       "(same model, adapters, scales) skips that part"},
      {"--context", MXL_OPT_INT, &max_context, "N: KV cache positions (default 4096)", 1,
       1 << 20},
      {"--prefill-chunk", MXL_OPT_INT, &req.prefill_chunk,
       "N: prompt tokens per forward pass (default 1024; less memory, slower prefill)", 1,
       1 << 20},
      {"--threads", MXL_OPT_INT, &threads, "N: CPU threads (default 0: all cores)", 0, 4096},
      {"--backend", MXL_OPT_STRING, &backend, "cpu|cuda|cuda:N|auto|ref: compute backend"},
      {"--no-mmap", MXL_OPT_FLAG, &no_mmap,
       "copy the weights into 2 MB pages (faster decode; needs their size in free memory)"},
  };
  int rc = mxl_cli_parse(argc, argv, "--model DIR [--prompt TEXT] [options]", opts,
                         sizeof opts / sizeof opts[0], NULL, 0, NULL);
  if (rc) return rc == 1 ? 0 : 2;
  if (!model) {
    fprintf(stderr, "mxlora generate: --model DIR is required\n");
    return 2;
  }
  char paths[MXL_OPT_LIST_MAX][4096];
  float scales[MXL_OPT_LIST_MAX];
  for (int i = 0; i < adapters.n; i++)
    if (mxl_cli_adapter_spec("generate", adapters.items[i], paths[i], sizeof paths[i],
                             &scales[i]))
      return 2;
  char *tools_text = NULL;
  if (tools && !chat) {
    fprintf(stderr, "mxlora generate: --tools %s: tools are offered in a chat: add --chat\n", tools);
    return 2;
  }
  if (tools && (rc = mxl_cli_read_tools("generate", tools, &tools_text))) return rc;
  char *stdin_text = NULL;
  if (!prompt) prompt = stdin_text = mxl_cli_read_stream(stdin);
  double copy_clock = 0;
  mxl_generator_options gopt = {backend, threads, max_context,
                                mxl_cli_weight_options(no_mmap, &copy_clock)};
  mxl_generator *g = NULL;
  mxl_status st = mxl_generator_open(model, &gopt, &g);
  for (int i = 0; st == MXL_OK && i < adapters.n; i++) {
    int index;
    st = mxl_generator_add_adapter(g, paths[i], scales[i], &index);
  }
  req.prompt = prompt;
  req.chat = chat;
  req.developer = developer;
  req.tools = tools_text;
  req.on_message = on_message;
  req.effort = effort;
  req.raw_special = special;
  req.dump_logits = dump;
  print_state ps = {.show_analysis = show_analysis, .color = isatty(STDOUT_FILENO),
                    .last = MXL_CHANNEL_TEXT};
  mxl_gen_result res = {0};
  if (st == MXL_OK) st = mxl_generate(g, &req, on_text, &ps, &res);
  mxl_generator_close(g);
  free(stdin_text);
  free(tools_text);
  if (st != MXL_OK) return mxl_cli_fail("generate", st);
  printf("\n");
  fflush(stdout);
  if (chat && ps.final_chars == 0 && ps.calls == 0) explain_no_answer(&ps, &res, req.max_tokens);
  char cached[48] = "";
  if (req.prompt_cache) snprintf(cached, sizeof cached, " (%d cached)", res.cached_tokens);
  fprintf(stderr, "\n[%d prompt tokens%s in %.2fs (%.1f tok/s), %d generated in %.2fs (%.1f tok/s); %s]\n",
          res.prompt_tokens, cached, res.prefill_seconds,
          (res.prompt_tokens - res.cached_tokens) / (res.prefill_seconds + 1e-9),
          res.generated_tokens, res.decode_seconds,
          res.generated_tokens / (res.decode_seconds + 1e-9), res.stop_reason);
  return 0;
}
