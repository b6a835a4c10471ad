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

static const char usage_line[] =
    "[RECIPE.json] [options]\n\n"
    "Trains a LoRA adapter on a gpt-oss model kept in MXFP4. Settings come from the\n"
    "recipe (recipes/README.md lists every key), then from these options, in order.\n"
    "Outputs in OUT: adapter.mxla, checkpoint.mxstate, metrics.jsonl, loss.svg,\n"
    "summary.json. Ctrl-C saves the adapter and checkpoint, then stops.";

/* Collects the recipe path and the settings, in order; returns 0, 1 (help)
 * or 2 (error). Flags are shorthands for recipe keys. */
static int parse_args(int argc, char **argv, const char **recipe, mxl_opt_settings *set) {
  int resume = 0, npos = 0;
  const mxl_opt opts[] = {
      {"--model", MXL_OPT_SETTING, set, "DIR: the checkpoint (sets model)", .key = "model"},
      {"--data", MXL_OPT_SETTING, set, "FILE: .jsonl or .json samples (data)", .key = "data"},
      {"--eval-data", MXL_OPT_SETTING, set, "FILE: held-out samples (eval_data)",
       .key = "eval_data"},
      {"--out", MXL_OPT_SETTING, set, "DIR: the run folder (out)", .key = "out"},
      {"--steps", MXL_OPT_SETTING, set, "N: optimizer steps (steps)", .key = "steps"},
      {"--epochs", MXL_OPT_SETTING, set, "N: passes over the data (epochs)", .key = "epochs"},
      {"--lr", MXL_OPT_SETTING, set, "X: learning rate, e.g. 2e-4 (lr)", .key = "lr"},
      {"--schedule", MXL_OPT_SETTING, set, "constant|linear|cosine (schedule)",
       .key = "schedule"},
      {"--warmup-steps", MXL_OPT_SETTING, set, "N: warm-up steps (warmup_steps)",
       .key = "warmup_steps"},
      {"--batch-size", MXL_OPT_SETTING, set, "N: rows per micro-batch (batch_size)",
       .key = "batch_size"},
      {"--seq-len", MXL_OPT_SETTING, set, "N: tokens per row (seq_len)", .key = "seq_len"},
      {"--grad-accum", MXL_OPT_SETTING, set, "N: micro-batches per step (grad_accum)",
       .key = "grad_accum"},
      {"--rank", MXL_OPT_SETTING, set, "R: LoRA rank (lora.rank)", .key = "lora.rank"},
      {"--alpha", MXL_OPT_SETTING, set, "A: LoRA alpha (lora.alpha)", .key = "lora.alpha"},
      {"--targets", MXL_OPT_SETTING, set, "q,k,v,o,gate_up,down|attn|experts|all "
       "(lora.targets)", .key = "lora.targets"},
      {"--layers", MXL_OPT_SETTING, set, "\"[0,2]\": layers to adapt, a JSON list; quote it "
       "(lora.layers)", .key = "lora.layers"},
      {"--dropout", MXL_OPT_SETTING, set, "P: LoRA dropout (lora.dropout)",
       .key = "lora.dropout"},
      {"--loss-mask", MXL_OPT_SETTING, set, "assistant|last-turn|final|all (loss_mask)",
       .key = "loss_mask"},
      {"--eval-every", MXL_OPT_SETTING, set, "N: steps between evaluations (eval_every)",
       .key = "eval_every"},
      {"--save-every", MXL_OPT_SETTING, set, "N: steps between saves (save_every)",
       .key = "save_every"},
      {"--threads", MXL_OPT_SETTING, set, "N: CPU threads (threads)", .key = "threads"},
      {"--seed", MXL_OPT_SETTING, set, "S: initialisation, data order, dropout (seed)",
       .key = "seed"},
      {"--backend", MXL_OPT_SETTING, set, "cpu|cuda|cuda:N|auto|ref (backend)",
       .key = "backend"},
      {"--on-bad-line", MXL_OPT_SETTING, set, "error|skip: malformed samples (on_bad_line)",
       .key = "on_bad_line"},
      {"--set", MXL_OPT_SETTING, set, "KEY=VALUE: any recipe key, dotted for nested ones "
       "(lora.rank=8)"},
      {"--resume", MXL_OPT_FLAG, &resume, "continue from OUT/checkpoint.mxstate"},
  };
  *recipe = NULL;
  set->n = 0;
  int rc = mxl_cli_parse(argc, argv, usage_line, opts, (int)(sizeof opts / sizeof opts[0]),
                         recipe, 1, &npos);
  if (rc) return rc;
  if (resume) {
    if (set->n == MXL_OPT_SETTINGS_MAX)
      return fprintf(stderr, "mxlora train: more than %d settings\n", MXL_OPT_SETTINGS_MAX), 2;
    snprintf(set->items[set->n++], MXL_OPT_SETTING_SIZE, "resume=true");
  }
  return 0;
}

int mxl_cmd_train(int argc, char **argv) {
  static mxl_opt_settings settings;
  const char *ptrs[MXL_OPT_SETTINGS_MAX];
  const char *recipe;
  int rc = parse_args(argc, argv, &recipe, &settings);
  if (rc) return rc == 1 ? 0 : 2;
  int n = settings.n;
  for (int i = 0; i < n; i++) ptrs[i] = settings.items[i];
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
