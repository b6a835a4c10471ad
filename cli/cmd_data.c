/* mxlora data: look at a dataset the way training will see it.
 *
 *   mxlora data stats FILE --model DIR [--seq-len N]
 *   mxlora data show  FILE --model DIR [--limit N] [--start I] [--mask M]
 *
 * The library loads, renders and counts; this file only prints. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/progress.h"

MXL_DECLARE_COMMAND(data);

const char mxl_cmd_data_help[] = "dataset statistics and rendered samples with loss masks";

static const char usage_line[] =
    "stats|show FILE --model DIR [options]\n\n"
    "stats: samples, token lengths (histogram), trained tokens for every loss mask,\n"
    "       samples longer than --seq-len.\n"
    "show:  samples rendered in the harmony format with the trained tokens\n"
    "       highlighted (colour on a terminal, [[brackets]] otherwise).\n"
    "FILE is JSONL or a JSON array of {\"messages\"}, {\"prompt\",\"completion\"} or\n"
    "{\"text\"} samples; --model is the checkpoint folder (or tokenizer file).";

typedef struct data_args {
  const char *model, *mask, *analysis, *effort, *date, *bad_line, *color;
  int seq_len, limit, start;
} data_args;

static int parse_args(int argc, char **argv, data_args *a, const char **pos, int *npos) {
  *a = (data_args){.mask = "assistant", .analysis = "earlier-turns", .bad_line = "error",
                   .color = "auto", .seq_len = 2048, .limit = 3};
  const mxl_opt opts[] = {
      {"--model", MXL_OPT_STRING, &a->model, "DIR: checkpoint folder or tokenizer file (required)"},
      {"--seq-len", MXL_OPT_INT, &a->seq_len, "N: count samples longer than N tokens (2048)", 1,
       1 << 20},
      {"--mask", MXL_OPT_STRING, &a->mask, "M: show: assistant|last-turn|final|all (assistant)"},
      {"--limit", MXL_OPT_INT, &a->limit, "N: show: number of samples (3)", 1, 1 << 30},
      {"--start", MXL_OPT_INT, &a->start, "I: show: first sample, from 0 (0)", 0, 1 << 30},
      {"--color", MXL_OPT_STRING, &a->color, "WHEN: show: auto|always|never (auto)"},
      {"--analysis", MXL_OPT_STRING, &a->analysis,
       "R: earlier analysis: earlier-turns|harmony|hf|keep (earlier-turns)"},
      {"--effort", MXL_OPT_STRING, &a->effort, "E: reasoning effort low|medium|high (sample's)"},
      {"--date", MXL_OPT_STRING, &a->date, "YYYY-MM-DD: 'Current date' in the system message"},
      {"--on-bad-line", MXL_OPT_STRING, &a->bad_line, "error|skip: malformed samples (error)"},
  };
  int rc = mxl_cli_parse(argc, argv, usage_line, opts, (int)(sizeof opts / sizeof opts[0]),
                         pos, 2, npos);
  if (rc) return rc == 1 ? 0 : 2;
  if (*npos != 2 || (strcmp(pos[0], "stats") && strcmp(pos[0], "show"))) {
    fprintf(stderr, "mxlora data: expected 'stats FILE' or 'show FILE' (see mxlora data --help)\n");
    return 2;
  }
  if (!a->model) {
    fprintf(stderr, "mxlora data: --model DIR is required (the tokenizer comes from it)\n");
    return 2;
  }
  if (strcmp(a->bad_line, "error") && strcmp(a->bad_line, "skip")) {
    fprintf(stderr, "mxlora data: --on-bad-line must be error or skip\n");
    return 2;
  }
  if (strcmp(a->color, "auto") && strcmp(a->color, "always") && strcmp(a->color, "never")) {
    fprintf(stderr, "mxlora data: --color must be auto, always or never\n");
    return 2;
  }
  return -1; /* go on */
}

static void on_progress(void *user, uint64_t done, uint64_t total) {
  (void)user;
  mxl_progress_line("loading", (double)done, (double)(total ? total : 1), "", 0);
}

static mxl_status load(const data_args *a, const char *file, mxl_tokenizer **tok,
                       mxl_dataset **ds) {
  mxl_data_options o = {.on_bad_line = strcmp(a->bad_line, "skip") ? MXL_BAD_LINE_ERROR
                                                                    : MXL_BAD_LINE_SKIP,
                        .progress = on_progress};
  o.render.date = a->date;
  mxl_status st = mxl_analysis_rule_parse(a->analysis, &o.render.analysis);
  if (st == MXL_OK && a->effort) st = mxl_effort_parse(a->effort, &o.render.effort);
  if (st == MXL_OK) st = mxl_tokenizer_load(a->model, tok);
  if (st == MXL_OK) {
    st = mxl_dataset_load(file, *tok, &o, ds);
    mxl_progress_end();
  }
  return st;
}

/* ------------------------------------------------------------------ stats */

static void print_count(const char *label, size_t n, size_t of) {
  printf("  %-10s %10zu  (%5.1f%%)", label, n, of ? 100.0 * (double)n / (double)of : 0.0);
}

static void print_histogram(const mxl_data_stats *s) {
  int lo = MXL_STATS_BINS, hi = -1;
  size_t most = 0;
  for (int b = 0; b < MXL_STATS_BINS; b++)
    if (s->bin_count[b]) {
      if (b < lo) lo = b;
      hi = b;
      if (s->bin_count[b] > most) most = s->bin_count[b];
    }
  printf("length histogram (tokens per sample):\n");
  for (int b = lo; b <= hi; b++) {
    char range[32];
    if (b == MXL_STATS_BINS - 1) snprintf(range, sizeof range, "> %zu", s->bin_upper[b - 1]);
    else snprintf(range, sizeof range, "%zu..%zu", b ? s->bin_upper[b - 1] + 1 : 1, s->bin_upper[b]);
    int bar = most ? (int)((40 * s->bin_count[b] + most - 1) / most) : 0;
    printf("  %-14s %8zu  %.*s\n", range, s->bin_count[b], bar,
           "########################################");
  }
}

static int run_stats(const data_args *a, const char *file) {
  mxl_tokenizer *tok = NULL;
  mxl_dataset *ds = NULL;
  mxl_status st = load(a, file, &tok, &ds);
  mxl_data_stats s;
  if (st == MXL_OK) st = mxl_dataset_stats(ds, (size_t)a->seq_len, &s);
  if (st != MXL_OK) {
    mxl_tokenizer_free(tok);
    mxl_dataset_destroy(ds);
    return mxl_cli_fail("data stats", st);
  }
  printf("%s: %zu samples (%zu chat, %zu text)", file, s.samples, s.chat_samples, s.text_samples);
  if (s.skipped) printf(", %zu bad lines skipped (first: %s)", s.skipped, mxl_dataset_first_skip(ds));
  printf("\ntokens: %zu; per sample min %zu, median %zu, mean %.1f, p95 %zu, max %zu\n",
         s.tokens, s.min_len, s.median_len, s.mean_len, s.p95_len, s.max_len);
  print_histogram(&s);
  printf("trained tokens by loss mask (--analysis %s):\n", a->analysis);
  for (int m = 0; m < MXL_MASK_COUNT; m++) {
    print_count(mxl_loss_mask_name((mxl_loss_mask)m), s.trained[m], s.tokens);
    if (s.untrained_samples[m]) printf("  %zu samples train nothing", s.untrained_samples[m]);
    printf("\n");
  }
  if (s.seq_len)
    printf("seq-len %zu: %zu samples longer (%zu tokens past the limit: dropped or cut)\n",
           s.seq_len, s.over_seq_len, s.over_seq_len_tokens);
  mxl_dataset_destroy(ds);
  mxl_tokenizer_free(tok);
  return 0;
}

/* ------------------------------------------------------------------ show */

static int run_show(const data_args *a, const char *file) {
  mxl_loss_mask mask;
  mxl_status st = mxl_loss_mask_parse(a->mask, &mask);
  if (st != MXL_OK) return mxl_cli_fail("data show", st);
  mxl_tokenizer *tok = NULL;
  mxl_dataset *ds = NULL;
  st = load(a, file, &tok, &ds);
  if (st != MXL_OK) {
    mxl_tokenizer_free(tok);
    return mxl_cli_fail("data show", st);
  }
  int color = !strcmp(a->color, "always") || (!strcmp(a->color, "auto") && isatty(STDOUT_FILENO));
  const char *on = color ? "\033[1;32m" : "[[", *off = color ? "\033[0m" : "]]";
  size_t n = mxl_dataset_size(ds);
  if ((size_t)a->start >= n)
    fprintf(stderr, "mxlora data show: --start %d: the dataset has %zu samples\n", a->start, n);
  printf("trained tokens under --mask %s are shown %s\n", a->mask,
         color ? "\033[1;32min green\033[0m" : "in [[double brackets]]");
  for (size_t i = (size_t)a->start; i < n && i < (size_t)a->start + (size_t)a->limit; i++) {
    mxl_sample_view v;
    mxl_text_run *runs = NULL;
    size_t n_runs = 0, trained = 0;
    mxl_dataset_sample(ds, i, &v);
    for (size_t t = 0; t < v.n; t++) trained += (v.flags[t] & MXL_MASK_BIT(mask)) != 0;
    st = mxl_dataset_show(ds, tok, i, mask, &runs, &n_runs);
    if (st != MXL_OK) break;
    printf("\n--- sample %zu (line %lld, %s, %zu tokens, %zu trained) ---\n", i,
           (long long)v.line, v.kind == MXL_SAMPLE_TEXT ? "text" : "chat", v.n, trained);
    for (size_t r = 0; r < n_runs; r++) {
      if (runs[r].trained) fputs(on, stdout);
      fwrite(runs[r].text, 1, runs[r].len, stdout);
      if (runs[r].trained) fputs(off, stdout);
    }
    fputc('\n', stdout);
    mxl_text_runs_free(runs, n_runs);
  }
  mxl_dataset_destroy(ds);
  mxl_tokenizer_free(tok);
  return st == MXL_OK ? 0 : mxl_cli_fail("data show", st);
}

int mxl_cmd_data(int argc, char **argv) {
  data_args a;
  const char *pos[2] = {0};
  int npos = 0;
  int rc = parse_args(argc, argv, &a, pos, &npos);
  if (rc >= 0) return rc;
  return !strcmp(pos[0], "stats") ? run_stats(&a, pos[1]) : run_show(&a, pos[1]);
}
