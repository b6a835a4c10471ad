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

/* Flags that are shorthands for recipe keys; their values are typed by the
 * recipe schema (strings stay strings, numbers are checked strictly). */
typedef struct flag_key {
  const char *flag, *key, *help;
} flag_key;

static const flag_key shorthands[] = {
    {"--model", "model", "DIR: the gpt-oss checkpoint"},
    {"--data", "data", "FILE: training samples (.jsonl or .json)"},
    {"--eval-data", "eval_data", "FILE: held-out samples"},
    {"--out", "out", "DIR: the run folder"},
    {"--steps", "steps", "N: optimizer steps (replaces the recipe's epochs)"},
    {"--epochs", "epochs", "X: passes over the data (replaces the recipe's steps)"},
    {"--lr", "lr", "X: peak learning rate, e.g. 2e-4"},
    {"--schedule", "schedule", "constant|linear|cosine"},
    {"--warmup-steps", "warmup_steps", "N: linear warm-up steps"},
    {"--batch-size", "batch_size", "N: rows per micro-batch (per rank)"},
    {"--seq-len", "seq_len", "N: tokens per row"},
    {"--grad-accum", "grad_accum", "N: micro-batches per step"},
    {"--rank", "lora.rank", "N: LoRA rank"},
    {"--alpha", "lora.alpha", "X: LoRA alpha (> 0)"},
    {"--targets", "lora.targets", "LIST: q,k,v,o,gate_up,down or attn, experts, all"},
    {"--layers", "lora.layers", "LIST: \"all\", \"[0,2]\" or \"0,2\""},
    {"--dropout", "lora.dropout", "X: LoRA dropout in [0, 1)"},
    {"--loss-mask", "loss_mask", "assistant|last-turn|final|all"},
    {"--eval-every", "eval_every", "N: steps between evaluations"},
    {"--save-every", "save_every", "N: steps between saves"},
    {"--keep-checkpoints", "keep_checkpoints", "K: keep the last K saves as numbered copies"},
    {"--init-adapter", "init_adapter", "FILE: start from this adapter (.mxla)"},
    {"--rescue-dir", "rescue_dir", "DIR: where a save that fails in OUT is retried"},
    {"--threads", "threads", "N: CPU threads (0: all cores, shared by the ranks of a node)"},
    {"--seed", "seed", "N: initialisation, data order and dropout"},
    {"--backend", "backend", "cpu|cuda|cuda:N|auto|ref"},
    {"--dist", "dist", "auto|none|mpi|nccl: data-parallel transport"},
    {"--on-bad-line", "on_bad_line", "error|skip"},
};
enum { N_SHORT = sizeof shorthands / sizeof shorthands[0], MAX_SETTINGS = 64 };

static void print_usage(void) {
  printf("usage: mxlora train [RECIPE.json] [options]\n"
         "       mpirun -np N mxlora train [RECIPE.json] [options]   (data parallel)\n\n"
         "Trains a LoRA adapter on a gpt-oss model kept in MXFP4. Settings come from the\n"
         "recipe (see recipes/README.md), then from these options, in order\n"
         "(--opt VALUE or --opt=VALUE):\n\n");
  for (int i = 0; i < N_SHORT; i++)
    printf("  %-20s %s  [%s]\n", shorthands[i].flag, shorthands[i].help, shorthands[i].key);
  printf("  %-20s continue the run in OUT from its checkpoint\n", "--resume");
  printf("  %-20s replace the run in OUT (its files are removed)\n", "--overwrite");
  printf("  %-20s sets any recipe key (dotted for nested: --set lora.rank=8)\n", "--set KEY=VALUE");
  printf("\nOutputs in OUT: adapter.mxla, checkpoint.mxstate, metrics.jsonl, loss.svg, "
         "summary.json.\nCtrl-C, SIGTERM or SIGHUP saves the adapter and checkpoint, then "
         "stops;\nthe same command with --resume continues.\n");
}

typedef struct args {
  const char *recipe;
  mxl_train_setting settings[MAX_SETTINGS];
  char keys[MAX_SETTINGS][128], flags[MAX_SETTINGS][160];
  int n;
} args;

static int add_setting(args *a, const char *key, const char *value, const char *flag) {
  if (a->n == MAX_SETTINGS) return fprintf(stderr, "mxlora train: too many options\n"), 2;
  snprintf(a->keys[a->n], sizeof a->keys[0], "%s", key);
  snprintf(a->flags[a->n], sizeof a->flags[0], "%s", flag);
  a->settings[a->n] = (mxl_train_setting){a->keys[a->n], value, a->flags[a->n]};
  a->n++;
  return 0;
}

/* A --set KEY=VALUE: the flag named in messages is "--set KEY". */
static int add_set(args *a, const char *kv) {
  const char *eq = strchr(kv, '=');
  if (!eq || eq == kv || (size_t)(eq - kv) >= sizeof a->keys[0])
    return fprintf(stderr, "mxlora train: --set '%s': expected KEY=VALUE\n", kv), 2;
  char key[128], flag[160];
  snprintf(key, sizeof key, "%.*s", (int)(eq - kv), kv);
  snprintf(flag, sizeof flag, "--set %s", key);
  return add_setting(a, key, eq + 1, flag);
}

/* Collects the recipe path and settings; returns 0, 1 (help) or 2 (error). */
static int parse_args(int argc, char **argv, args *a) {
  memset(a, 0, sizeof *a);
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) return print_usage(), 1;
    if (strncmp(arg, "--", 2) != 0) {
      if (a->recipe) return fprintf(stderr, "mxlora train: unexpected argument '%s'\n", arg), 2;
      a->recipe = arg;
      continue;
    }
    const char *eq = strchr(arg, '=');
    char name[64];
    snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - arg) : (int)strlen(arg), arg);
    if (!strcmp(name, "--resume") || !strcmp(name, "--overwrite")) {
      if (eq) return fprintf(stderr, "mxlora train: %s takes no value\n", name), 2;
      if (add_setting(a, name + 2, "true", name)) return 2;
      continue;
    }
    const char *key = NULL;
    for (int k = 0; k < N_SHORT && !key; k++)
      if (!strcmp(name, shorthands[k].flag)) key = shorthands[k].key;
    if (!key && strcmp(name, "--set"))
      return fprintf(stderr, "mxlora train: unknown option '%s' (see --help)\n", name), 2;
    const char *value = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
    if (!value) return fprintf(stderr, "mxlora train: %s needs a value\n", name), 2;
    if (key ? add_setting(a, key, value, name) : add_set(a, value)) return 2;
  }
  return 0;
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
  static args a;
  int rc = parse_args(argc, argv, &a);
  if (rc) return rc == 1 ? 0 : 2;
  catch_stop_signals();
  mxl_train_options o = {a.recipe, a.settings, a.n, on_event, NULL, &stop_requested};
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
