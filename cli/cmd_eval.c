/* mxlora eval: loss and perplexity over a dataset's trained tokens, with and
 * without adapters, so a user sees what a fine-tune changed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/progress.h"

MXL_DECLARE_COMMAND(eval);

const char mxl_cmd_eval_help[] = "loss and perplexity of a dataset, with and without adapters";

/* A loss as a number, or NaN/Inf spelled plainly ("-nan" is printf's). */
static const char *number(double v, int decimals, char buf[32]) {
  if (isfinite(v)) snprintf(buf, 32, "%.*f", decimals, v);
  else snprintf(buf, 32, "%s", isnan(v) ? "NaN" : v > 0 ? "Inf" : "-Inf");
  return buf;
}

int mxl_cmd_eval(int argc, char **argv) {
  const char *model = NULL, *data = NULL, *mask = NULL, *backend = NULL;
  int seq_len = 0, batch = 0, threads = 0, no_mmap = 0;
  mxl_opt_list adapters = {0};
  const mxl_opt opts[] = {
      {"--model", MXL_OPT_STRING, &model, "DIR: the gpt-oss checkpoint"},
      {"--data", MXL_OPT_STRING, &data, "FILE: .jsonl or .json samples"},
      {"--adapter", MXL_OPT_LIST, &adapters, "FILE[:SCALE]: overlay an adapter (repeatable)"},
      {"--seq-len", MXL_OPT_INT, &seq_len,
       "N: tokens per row (default 2048; longer samples skipped)", 1, 1 << 20},
      {"--batch-size", MXL_OPT_INT, &batch, "N: rows per batch (default 4)", 1, 1 << 16},
      {"--loss-mask", MXL_OPT_STRING, &mask, "assistant|last-turn|final|all (default assistant)"},
      {"--threads", MXL_OPT_INT, &threads, "N: CPU threads (default 0: all cores)", 0, 4096},
      {"--backend", MXL_OPT_STRING, &backend, "cpu|cuda|cuda:N|auto|ref"},
      {"--no-mmap", MXL_OPT_FLAG, &no_mmap,
       "copy the weights into 2 MB pages (faster decode; needs their size in free memory)"},
  };
  int rc = mxl_cli_parse(argc, argv, "--model DIR --data FILE [--adapter FILE] [options]", opts,
                         sizeof opts / sizeof opts[0], NULL, 0, NULL);
  if (rc) return rc == 1 ? 0 : 2;
  if (!model || !data) {
    fprintf(stderr, "mxlora eval: --model and --data are required\n");
    return 2;
  }
  const char *paths[MXL_OPT_LIST_MAX];
  float scales[MXL_OPT_LIST_MAX];
  static char buf[MXL_OPT_LIST_MAX][4096];
  for (int i = 0; i < adapters.n; i++) {
    if (mxl_cli_adapter_spec("eval", adapters.items[i], buf[i], sizeof buf[i], &scales[i]))
      return 2;
    paths[i] = buf[i];
  }
  mxl_eval_options o = {model, data, paths, scales, adapters.n, seq_len, batch, mask,
                        backend, threads, NULL, NULL, {0}};
  double copy_clock = 0;
  o.weights = mxl_cli_weight_options(no_mmap, &copy_clock);
  mxl_eval_result r;
  mxl_status st = mxl_eval(&o, &r);
  if (st != MXL_OK && st != MXL_ERR_NUMERIC) return mxl_cli_fail("eval", st);
  printf("%s: %zu samples, %lld trained tokens", data, r.samples, r.tokens);
  if (r.skipped_long) printf(" (%zu samples longer than the sequence length skipped)", r.skipped_long);
  char a[32], b[32];
  printf("\n  base model:     loss %s  perplexity %s\n", number(r.base_loss, 4, a),
         number(exp(r.base_loss), 3, b));
  if (adapters.n && isfinite(r.adapted_loss))
    printf("  with adapter%s:  loss %.4f  perplexity %.3f  (%+.4f loss, %+.1f%% perplexity)\n",
           adapters.n > 1 ? "s" : "", r.adapted_loss, exp(r.adapted_loss),
           r.adapted_loss - r.base_loss, 100.0 * (exp(r.adapted_loss - r.base_loss) - 1.0));
  else if (adapters.n)
    printf("  with adapter%s:  loss %s  (not a number: no comparison)\n",
           adapters.n > 1 ? "s" : "", number(r.adapted_loss, 4, a));
  /* A NaN/Inf loss is shown, but the evaluation failed. */
  return st == MXL_OK ? 0 : mxl_cli_fail("eval", st);
}
