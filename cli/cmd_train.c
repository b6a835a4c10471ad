/* mxlora train: a recipe plus flags in, an adapter out, with a progress bar
 * and a clean stop on Ctrl-C, SIGTERM and SIGHUP (save, then exit). Under
 * mpirun / srun every rank runs this; rank 0 alone prints progress. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/progress.h"

MXL_DECLARE_COMMAND(train);

const char mxl_cmd_train_help[] = "train a LoRA adapter (recipe JSON and/or flags)";

static volatile sig_atomic_t stop_signal;
static volatile int stop_requested;

/* The first signal asks for a save at the next step; the handler is then
 * reset, so a second one ends the process at once. */
static void on_stop_signal(int sig) {
  stop_signal = sig;
  stop_requested = 1;
}

static void catch_stop_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sa.sa_flags = SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL); /* kill, schedulers (Slurm before the time limit) */
  sigaction(SIGHUP, &sa, NULL);  /* a closed terminal or ssh session */
}

/* "%.4f", or NaN/Inf spelled plainly ("-nan" is printf's). */
static const char *number(double v, char buf[32]) {
  if (isfinite(v)) snprintf(buf, 32, "%.4f", v);
  else snprintf(buf, 32, "%s", isnan(v) ? "NaN" : v > 0 ? "Inf" : "-Inf");
  return buf;
}

static void on_event(void *user, const mxl_train_event *ev) {
  (void)user;
  char eta[32], suffix[256], label[48], a[32], b[32];
  switch (ev->kind) {
  case MXL_EVENT_INFO:
    mxl_progress_end();
    fprintf(stderr, "%s\n", ev->message);
    break;
  case MXL_EVENT_STEP:
    mxl_format_duration(ev->eta_s, eta, sizeof eta);
    snprintf(label, sizeof label, "step %d/%d", ev->step, ev->total_steps);
    snprintf(suffix, sizeof suffix, "loss %s  lr %.2e  gnorm %.3g  %.0f tok/s  ETA %s%s",
             number(ev->loss, a), ev->lr, ev->grad_norm, ev->tokens_per_s, eta,
             ev->skipped ? "  (skipped: NaN/Inf)" : "");
    mxl_progress_line(label, ev->step, ev->total_steps, suffix,
                      ev->step == 1 || ev->step % 10 == 0 || ev->step == ev->total_steps);
    break;
  case MXL_EVENT_EVAL:
    mxl_progress_end();
    fprintf(stderr, "eval at step %d: loss %s (perplexity %s) over %lld tokens\n", ev->step,
            number(ev->eval_loss, a), number(exp(ev->eval_loss), b), ev->tokens);
    break;
  case MXL_EVENT_SAVE:
    mxl_progress_end();
    fprintf(stderr, "saved adapter and checkpoint in %s (step %d)\n", ev->message, ev->step);
    break;
  }
}

static const char usage_line[] =
    "[RECIPE.json] [options]\n"
    "       mpirun -np N mxlora train [RECIPE.json] [options]   (data parallel)\n\n"
    "Trains a LoRA adapter on a gpt-oss model kept in MXFP4. Settings come from the\n"
    "recipe (recipes/README.md lists every key), then from these options, in order;\n"
    "their values are typed by the recipe schema (strings stay strings, numbers are\n"
    "checked strictly). Outputs in OUT: adapter.mxla, checkpoint.mxstate,\n"
    "metrics.jsonl, loss.svg, summary.json. Ctrl-C, SIGTERM or SIGHUP saves the\n"
    "adapter and checkpoint, then stops; the same command with --resume continues.";

#define SHORTHAND(flag, recipe_key, help) \
  {flag, MXL_OPT_SETTING, set, help, .key = recipe_key}

/* Collects the recipe path and the settings, in order; returns 0, 1 (help)
 * or 2 (error). Flags are shorthands for recipe keys. */
static int parse_args(int argc, char **argv, const char **recipe, mxl_opt_settings *set) {
  int resume = 0, overwrite = 0, npos = 0;
  const mxl_opt opts[] = {
      SHORTHAND("--model", "model", "DIR: the gpt-oss checkpoint"),
      SHORTHAND("--data", "data", "FILE: training samples (.jsonl or .json)"),
      SHORTHAND("--eval-data", "eval_data", "FILE: held-out samples"),
      SHORTHAND("--out", "out", "DIR: the run folder"),
      SHORTHAND("--steps", "steps", "N: optimizer steps (replaces the recipe's epochs)"),
      SHORTHAND("--epochs", "epochs", "X: passes over the data (replaces the recipe's steps)"),
      SHORTHAND("--lr", "lr", "X: peak learning rate, e.g. 2e-4"),
      SHORTHAND("--schedule", "schedule", "constant|linear|cosine"),
      SHORTHAND("--warmup-steps", "warmup_steps", "N: linear warm-up steps"),
      SHORTHAND("--batch-size", "batch_size", "N: rows per micro-batch (per rank)"),
      SHORTHAND("--seq-len", "seq_len", "N: tokens per row"),
      SHORTHAND("--grad-accum", "grad_accum", "N: micro-batches per step"),
      SHORTHAND("--rank", "lora.rank", "N: LoRA rank"),
      SHORTHAND("--alpha", "lora.alpha", "X: LoRA alpha (> 0)"),
      SHORTHAND("--targets", "lora.targets", "LIST: q,k,v,o,gate_up,down or attn, experts, all"),
      SHORTHAND("--layers", "lora.layers", "LIST: \"all\", \"[0,2]\" or \"0,2\""),
      SHORTHAND("--dropout", "lora.dropout", "X: LoRA dropout in [0, 1)"),
      SHORTHAND("--loss-mask", "loss_mask", "assistant|last-turn|final|all"),
      SHORTHAND("--eval-every", "eval_every", "N: steps between evaluations"),
      SHORTHAND("--save-every", "save_every", "N: steps between saves"),
      SHORTHAND("--keep-checkpoints", "keep_checkpoints",
                "K: keep the last K saves as numbered copies"),
      SHORTHAND("--init-adapter", "init_adapter", "FILE: start from this adapter (.mxla)"),
      SHORTHAND("--rescue-dir", "rescue_dir", "DIR: where a save that fails in OUT is retried"),
      SHORTHAND("--threads", "threads",
                "N: CPU threads (0: all cores, shared by the ranks of a node)"),
      SHORTHAND("--seed", "seed", "N: initialisation, data order and dropout"),
      SHORTHAND("--backend", "backend", "cpu|cuda|cuda:N|auto|ref"),
      SHORTHAND("--dist", "dist", "auto|none|mpi|nccl: data-parallel transport"),
      SHORTHAND("--on-bad-line", "on_bad_line", "error|skip"),
      SHORTHAND("--keep-activations", "keep_activations",
                "auto|true|false: keep every layer's activations for the backward instead "
                "of recomputing them (auto: when they fit the memory left)"),
      {"--set", MXL_OPT_SETTING, set, "KEY=VALUE: any recipe key, dotted for nested ones "
       "(--set lora.rank=8)"},
      {"--resume", MXL_OPT_FLAG, &resume, "continue the run in OUT from its checkpoint"},
      {"--overwrite", MXL_OPT_FLAG, &overwrite, "replace the run in OUT (its files are removed)"},
  };
  *recipe = NULL;
  set->n = 0;
  int rc = mxl_cli_parse(argc, argv, usage_line, opts, (int)(sizeof opts / sizeof opts[0]),
                         recipe, 1, &npos);
  if (rc) return rc;
  const char *flags[2][2] = {{"--resume", "resume=true"}, {"--overwrite", "overwrite=true"}};
  for (int f = 0; f < 2; f++) {
    if (!(f == 0 ? resume : overwrite)) continue;
    if (set->n == MXL_OPT_SETTINGS_MAX)
      return fprintf(stderr, "mxlora train: more than %d settings\n", MXL_OPT_SETTINGS_MAX), 2;
    snprintf(set->items[set->n], MXL_OPT_SETTING_SIZE, "%s", flags[f][1]);
    snprintf(set->flags[set->n++], sizeof set->flags[0], "%s", flags[f][0]);
  }
  return 0;
}

/* The parsed "key=value" settings as the trainer takes them, each naming the
 * flag the user wrote. */
static int to_train_settings(mxl_opt_settings *set, mxl_train_setting *out) {
  for (int i = 0; i < set->n; i++) {
    char *eq = strchr(set->items[i], '=');
    *eq = 0; /* the parser guarantees KEY=VALUE */
    out[i] = (mxl_train_setting){set->items[i], eq + 1, set->flags[i]};
  }
  return set->n;
}

/* The rank an MPI launcher gave this process (for messages before the
 * trainer knows it), or -1. */
static int launcher_rank(void) {
  const char *vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"};
  for (int i = 0; i < 3; i++)
    if (getenv(vars[i])) return atoi(getenv(vars[i]));
  return -1;
}

/* Prints the error (naming the rank of a multi-process run) and ends every
 * rank of an MPI job, so none is left waiting for this one. A bad setting
 * exits 2, like a bad option; any other failure 1. */
static int fail(mxl_status st, int rank) {
  mxl_progress_end();
  if (rank > 0)
    fprintf(stderr, "mxlora train: rank %d: %s: %s\n", rank, mxl_status_name(st),
            mxl_last_error());
  else
    mxl_cli_fail("train", st);
  int code = st == MXL_ERR_ARGUMENT ? 2 : 1;
  mxl_dist_abort(code);
  return code;
}

static void print_summary(const mxl_train_summary *s) {
  char took[32];
  mxl_format_duration(s->seconds, took, sizeof took);
  printf("trained %d steps in %s (%lld tokens): loss %.4f -> %.4f", s->steps, took, s->tokens,
         s->first_loss, s->final_loss);
  if (isfinite(s->final_eval_loss))
    printf(", eval loss %.4f -> %.4f", s->first_eval_loss, s->final_eval_loss);
  if (s->world_size > 1)
    printf("\n%d ranks: %.0f tokens/s together, %.3f s in gradient all-reduces", s->world_size,
           s->tokens_per_s, s->allreduce_s);
  printf("\nadapter: %s/adapter.mxla   curve: %s/loss.svg   metrics: %s/metrics.jsonl\n",
         s->out_dir, s->out_dir, s->out_dir);
}

int mxl_cmd_train(int argc, char **argv) {
  static mxl_opt_settings set;
  static mxl_train_setting settings[MXL_OPT_SETTINGS_MAX];
  const char *recipe;
  int rc = parse_args(argc, argv, &recipe, &set);
  if (rc) return rc == 1 ? 0 : 2;
  int n = to_train_settings(&set, settings);
  catch_stop_signals();
  mxl_train_options o = {recipe, settings, n, on_event, NULL, &stop_requested};
  mxl_trainer *t = NULL;
  mxl_status st = mxl_trainer_create(&o, &t);
  if (st != MXL_OK) return fail(st, launcher_rank());
  const int rank = mxl_trainer_rank(t);
  for (mxl_train_progress p = MXL_TRAIN_RUNNING; st == MXL_OK && p == MXL_TRAIN_RUNNING;)
    st = mxl_trainer_step(t, &p);
  mxl_train_summary s;
  if (st == MXL_OK) st = mxl_trainer_finish(t, &s);
  if (st != MXL_OK && st != MXL_ERR_INTERRUPTED) {
    rc = fail(st, rank);
    mxl_trainer_destroy(t);
    return rc;
  }
  mxl_trainer_destroy(t);
  mxl_progress_end();
  if (rank != 0) return st == MXL_ERR_INTERRUPTED ? 130 : 0;
  if (st == MXL_ERR_INTERRUPTED) {
    fprintf(stderr, "mxlora train: %s (%s)\ncontinue with the same command and --resume\n",
            mxl_last_error(), stop_signal == SIGTERM ? "SIGTERM"
                              : stop_signal == SIGHUP ? "SIGHUP" : "interrupted");
    return 130;
  }
  print_summary(&s);
  return 0;
}
