/* mxlora train: a recipe plus flags in, an adapter out, with a progress bar
 * and clean Ctrl-C (save, then exit). */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/progress.h"

MXL_DECLARE_COMMAND(train);

const char mxl_cmd_train_help[] = "train a LoRA adapter (recipe JSON and/or flags)";

static volatile int stop_requested;

static void on_sigint(int sig) {
  (void)sig;
  stop_requested = 1;
  signal(SIGINT, SIG_DFL); /* a second Ctrl-C kills at once */
}

static void on_event(void *user, const mxl_train_event *ev) {
  (void)user;
  char eta[32], suffix[256], label[48];
  switch (ev->kind) {
  case MXL_EVENT_INFO:
    mxl_progress_end();
    fprintf(stderr, "%s\n", ev->message);
    break;
  case MXL_EVENT_STEP:
    mxl_format_duration(ev->eta_s, eta, sizeof eta);
    snprintf(label, sizeof label, "step %d/%d", ev->step, ev->total_steps);
    snprintf(suffix, sizeof suffix, "loss %.4f  lr %.2e  gnorm %.3g  %.0f tok/s  ETA %s%s",
             ev->loss, ev->lr, ev->grad_norm, ev->tokens_per_s, eta,
             ev->skipped ? "  (skipped: NaN/Inf)" : "");
    mxl_progress_line(label, ev->step, ev->total_steps, suffix,
                      ev->step == 1 || ev->step % 10 == 0 || ev->step == ev->total_steps);
    break;
  case MXL_EVENT_EVAL:
    mxl_progress_end();
    fprintf(stderr, "eval at step %d: loss %.4f (perplexity %.2f) over %lld tokens\n", ev->step,
            ev->eval_loss, exp(ev->eval_loss), ev->tokens);
    break;
  case MXL_EVENT_SAVE:
    mxl_progress_end();
    fprintf(stderr, "saved adapter and checkpoint in %s (step %d)\n", ev->message, ev->step);
    break;
  }
}

/* Flags that are shorthands for recipe keys. */
typedef struct flag_key {
  const char *flag, *key;
} flag_key;

static const flag_key shorthands[] = {
    {"--model", "model"},           {"--data", "data"},
    {"--eval-data", "eval_data"},   {"--out", "out"},
    {"--steps", "steps"},           {"--epochs", "epochs"},
    {"--lr", "lr"},                 {"--schedule", "schedule"},
    {"--warmup-steps", "warmup_steps"}, {"--batch-size", "batch_size"},
    {"--seq-len", "seq_len"},       {"--grad-accum", "grad_accum"},
    {"--rank", "lora.rank"},        {"--alpha", "lora.alpha"},
    {"--targets", "lora.targets"},  {"--layers", "lora.layers"},
    {"--dropout", "lora.dropout"},  {"--loss-mask", "loss_mask"},
    {"--eval-every", "eval_every"}, {"--save-every", "save_every"},
    {"--threads", "threads"},       {"--seed", "seed"},
    {"--backend", "backend"},       {"--on-bad-line", "on_bad_line"},
};
enum { N_SHORT = sizeof shorthands / sizeof shorthands[0], MAX_OVERRIDES = 64 };

static void print_usage(void) {
  printf("usage: mxlora train [RECIPE.json] [options]\n\n"
         "Trains a LoRA adapter on a gpt-oss model kept in MXFP4. Settings come from the\n"
         "recipe (see recipes/README.md), then from these options, in order:\n\n");
  for (int i = 0; i < N_SHORT; i++) printf("  %-16s VALUE  sets \"%s\"\n", shorthands[i].flag, shorthands[i].key);
  printf("  %-16s        continue from OUT/checkpoint.mxstate\n", "--resume");
  printf("  %-16s K=V    sets any recipe key (dotted for nested: lora.rank=8)\n", "--set");
  printf("\nOutputs in OUT: adapter.mxla, checkpoint.mxstate, metrics.jsonl, loss.svg, "
         "summary.json.\nCtrl-C saves the adapter and checkpoint, then stops.\n");
}

/* Collects recipe path and overrides; returns 0, 1 (help) or 2 (error). */
static int parse_args(int argc, char **argv, const char **recipe, char overrides[][512],
                      int *n) {
  *recipe = NULL;
  *n = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) return print_usage(), 1;
    if (*n == MAX_OVERRIDES) return fprintf(stderr, "mxlora train: too many options\n"), 2;
    if (!strcmp(a, "--resume")) {
      snprintf(overrides[(*n)++], 512, "resume=true");
      continue;
    }
    if (strncmp(a, "--", 2) != 0) {
      if (*recipe) return fprintf(stderr, "mxlora train: unexpected argument '%s'\n", a), 2;
      *recipe = a;
      continue;
    }
    const char *key = NULL;
    if (!strcmp(a, "--set")) key = "";
    for (int k = 0; k < N_SHORT && !key; k++)
      if (!strcmp(a, shorthands[k].flag)) key = shorthands[k].key;
    if (!key) return fprintf(stderr, "mxlora train: unknown option '%s' (see --help)\n", a), 2;
    if (i + 1 >= argc) return fprintf(stderr, "mxlora train: %s needs a value\n", a), 2;
    const char *value = argv[++i];
    if (*key)
      snprintf(overrides[(*n)++], 512, "%s=%s", key, value);
    else
      snprintf(overrides[(*n)++], 512, "%s", value);
  }
  return 0;
}

int mxl_cmd_train(int argc, char **argv) {
  static char overrides[MAX_OVERRIDES][512];
  const char *ptrs[MAX_OVERRIDES];
  const char *recipe;
  int n;
  int rc = parse_args(argc, argv, &recipe, overrides, &n);
  if (rc) return rc == 1 ? 0 : 2;
  for (int i = 0; i < n; i++) ptrs[i] = overrides[i];
  signal(SIGINT, on_sigint);
  mxl_train_summary s;
  mxl_status st = mxl_train(recipe, ptrs, n, on_event, NULL, &stop_requested, &s);
  mxl_progress_end();
  if (st == MXL_ERR_INTERRUPTED) {
    fprintf(stderr, "mxlora train: %s\n", mxl_last_error());
    return 130;
  }
  if (st != MXL_OK) return mxl_cli_fail("train", st);
  char took[32];
  mxl_format_duration(s.seconds, took, sizeof took);
  printf("trained %d steps in %s (%lld tokens): loss %.4f -> %.4f", s.steps, took, s.tokens,
         s.first_loss, s.final_loss);
  if (isfinite(s.final_eval_loss))
    printf(", eval loss %.4f -> %.4f", s.first_eval_loss, s.final_eval_loss);
  printf("\nadapter: %s/adapter.mxla   curve: %s/loss.svg   metrics: %s/metrics.jsonl\n",
         s.out_dir, s.out_dir, s.out_dir);
  return 0;
}
