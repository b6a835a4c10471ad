/* bench_train: LoRA training speed and memory of the CPU backend on a
 * checkpoint, against the machine's limits measured in the same run.
 *
 *   build-bench/bench_train [--model DIR | --preset bench|test] [--batch 1] [--seq 512]
 *                           [--threads 2] [--steps 3] [--warmup 1] [--reps 3]
 *                           [--rank 16] [--alpha 32] [--targets all]
 *                           [--no-limits] [--no-prefill] [--profile] [--json]
 *                           [--resident auto|keep|drop] [--keep-activations auto|true|false|both]
 *
 * Without --model it writes the bench preset to a temporary folder (removed
 * at the end). A step is what the trainer does per optimizer step without
 * gradient accumulation: zero the LoRA gradients, mxl_train_step (forward
 * with per-layer checkpointing, fused unembedding + cross-entropy, backward
 * into the LoRA gradients) over --batch sequences of --seq random tokens,
 * then AdamW. LoRA: --targets (default all: q, k, v, o and every expert's
 * gate_up and down) on every layer, --rank, --alpha, PEFT initialisation.
 *
 * Each repetition measures, in this order: the limits (unless --no-limits),
 * a prefill of the same tokens (unless --no-prefill: one forward per
 * sequence with a KV cache, logits of the last position), and --steps timed
 * training steps (after --warmup untimed ones before the first repetition).
 * Reported: step seconds and training tokens/s (median and min–max over all
 * timed steps), the useful FLOPs per step (bench/bench_model.h: the layer
 * work three times, attention four, lm_head twice, LoRA four; with the
 * activations kept twice, three, twice, three) against the
 * bf16 peak, the ratio to prefill tokens/s, and the peak RSS of the training
 * steps (VmHWM reset after the prefill's buffers are released; mapped
 * weights count, as they are resident).
 *
 * --keep-activations: the trainer's setting (mxl_train_state.keep_activations;
 * auto by default: every layer's activations kept for the backward when
 * they fit the memory left, instead of recomputed); `both` times the
 * recompute (false) and the kept activations (true) in the same run, each
 * with its own state, alternating which goes first each repetition, and
 * reports each. Both states stay allocated (as the trainer's one does between
 * steps), so the peak RSS of `both` is that of the two: take each mode's
 * RSS from a run of that mode alone.
 *
 * --resident: the trainer's residency of the mapped weights
 * (mxl_train_state.resident; auto by default: kept when the checkpoint is at
 * most a quarter of the memory available, else each layer's pages dropped
 * when a step is done with them); keep and drop measure what dropping costs
 * and saves (--keep-resident: keep).
 *
 * --json prints one line of JSON at the end (bench/train_vs_peft.py reads it).
 * --profile times every op of one more step. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/lora.h"
#include "bench/bench_common.h"
#include "bench/bench_model.h"
#include "bench/bench_profile.h"
#include "core/status.h"
#include "model/forward.h"
#include "model/train_step.h"

enum { MAX_STEPS = 256 };

typedef struct options {
  const char *model, *preset, *targets;
  int batch, seq, threads, steps, warmup, reps, rank;
  float alpha;
  int limits, prefill, profile, json, resident;
  int keep; /* mxl_keep_mode, or KEEP_BOTH */
} options;

enum { KEEP_BOTH = 3, MAX_MODES = 2 };

static const char usage[] =
    "usage: bench_train [--model DIR | --preset bench|test] [--batch 1] [--seq 512] [--threads 2]\n"
    "                   [--steps 3] [--warmup 1] [--reps 3] [--rank 16] [--alpha 32]\n"
    "                   [--targets all] [--no-limits] [--no-prefill] [--profile] [--json]\n"
    "                   [--resident auto|keep|drop] [--keep-activations auto|true|false|both]\n";

static int parse_options(int argc, char **argv, options *o) {
  *o = (options){NULL, "bench", "all", 1, 512, 2, 3, 1, 3, 16, -1, 1, 1, 0, 0, 0, MXL_KEEP_AUTO};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--no-limits")) o->limits = 0;
    else if (!strcmp(a, "--no-prefill")) o->prefill = 0;
    else if (!strcmp(a, "--profile")) o->profile = 1;
    else if (!strcmp(a, "--json")) o->json = 1;
    else if (!strcmp(a, "--keep-resident")) o->resident = MXL_RESIDENT_KEEP;
    else if (!v) return 0;
    else if (!strcmp(a, "--model")) o->model = v, i++;
    else if (!strcmp(a, "--preset")) o->preset = v, i++;
    else if (!strcmp(a, "--targets")) o->targets = v, i++;
    else if (!strcmp(a, "--batch")) o->batch = atoi(v), i++;
    else if (!strcmp(a, "--seq")) o->seq = atoi(v), i++;
    else if (!strcmp(a, "--threads")) o->threads = atoi(v), i++;
    else if (!strcmp(a, "--steps")) o->steps = atoi(v), i++;
    else if (!strcmp(a, "--warmup")) o->warmup = atoi(v), i++;
    else if (!strcmp(a, "--reps")) o->reps = atoi(v), i++;
    else if (!strcmp(a, "--rank")) o->rank = atoi(v), i++;
    else if (!strcmp(a, "--alpha")) o->alpha = (float)atof(v), i++;
    else if (!strcmp(a, "--resident")) {
      if (mxl_resident_mode_parse(v, &o->resident) != MXL_OK) return 0;
      i++;
    } else if (!strcmp(a, "--keep-activations") && !strcmp(v, "both")) o->keep = KEEP_BOTH, i++;
    else if (!strcmp(a, "--keep-activations")) {
      if (mxl_keep_mode_parse(v, &o->keep) != MXL_OK) return 0;
      i++;
    } else return 0;
  }
  if (o->alpha < 0) o->alpha = 2.0f * (float)o->rank;
  return o->batch > 0 && o->seq > 1 && o->threads > 0 && o->steps > 0 && o->warmup >= 0 &&
         o->reps > 0 && o->steps * o->reps <= MAX_STEPS && o->rank > 0;
}

/* ------------------------------------------------------------------ setup */

typedef struct bench {
  const options *o;
  mxl_model *model;
  mxl_backend *be;
  mxl_engine *e;
  unsigned targets;
  mxl_lora *params, *grads;
  float *m, *v;                 /* AdamW moments, backend [n_floats] */
  mxl_lora_layer *view_layers, *grad_layers;
  mxl_lora_view view, gview;
  int n_modes;
  mxl_train_state st[MAX_MODES]; /* one per timed mode (keep_activations) */
  int32_t *tokens, *targets_ids, *pos, *seg; /* host [B·T] */
  float *weights;                            /* host [B·T] */
  int n_step;                                /* AdamW steps taken */
} bench;

static mxl_status make_lora(bench *b) {
  const mxl_config *c = &b->model->config;
  const options *o = b->o;
  MXL_TRY(mxl_lora_targets_parse(o->targets, &b->targets));
  mxl_lora_config lc;
  mxl_lora_config_init(&lc, o->rank, o->alpha);
  MXL_TRY(mxl_lora_config_add(&lc, b->targets, NULL, 0, c->n_layers));
  MXL_TRY(mxl_lora_create(c, &lc, b->be, &b->params));
  MXL_TRY(mxl_lora_create(c, &lc, b->be, &b->grads));
  MXL_TRY(mxl_lora_init_peft(b->params, 1));
  size_t bytes = b->params->layout->n_floats * sizeof(float);
  b->m = b->be->ops->alloc(b->be, bytes);
  b->v = b->be->ops->alloc(b->be, bytes);
  b->view_layers = calloc(c->n_layers, sizeof *b->view_layers);
  b->grad_layers = calloc(c->n_layers, sizeof *b->grad_layers);
  if (!b->m || !b->v || !b->view_layers || !b->grad_layers)
    return mxl_errorf(MXL_ERR_MEMORY, "LoRA state: out of memory");
  b->view.layers = b->view_layers;
  b->gview.layers = b->grad_layers;
  mxl_lora_fill_view(b->params->layout, b->params->params, 1.0f, &b->view);
  mxl_lora_fill_view(b->grads->layout, b->grads->params, 1.0f, &b->gview);
  return MXL_OK;
}

/* B sequences of T random tokens, one document each; every position but
 * the last of a sequence predicts the next token. */
static mxl_status make_batch(bench *b) {
  const int B = b->o->batch, T = b->o->seq, n = B * T, V = b->e->w.vocab_rows;
  b->tokens = malloc(n * sizeof(int32_t)), b->targets_ids = malloc(n * sizeof(int32_t));
  b->pos = malloc(n * sizeof(int32_t)), b->seg = malloc(n * sizeof(int32_t));
  b->weights = malloc(n * sizeof(float));
  if (!b->tokens || !b->targets_ids || !b->pos || !b->seg || !b->weights)
    return mxl_errorf(MXL_ERR_MEMORY, "batch: out of memory");
  uint64_t seed = 2;
  for (int i = 0; i < n; i++) b->tokens[i] = (int32_t)(bench_rand(&seed) % (uint64_t)V);
  for (int i = 0; i < n; i++) {
    int t = i % T, last = t == T - 1;
    b->targets_ids[i] = last ? -1 : b->tokens[i + 1];
    b->weights[i] = last ? 0.0f : 1.0f / (float)(B * (T - 1));
    b->pos[i] = t;
    b->seg[i] = 0;
  }
  return MXL_OK;
}

static mxl_status bench_open(bench *b, const char *path) {
  MXL_TRY(mxl_model_open(path, &b->model));
  MXL_TRY(mxl_backend_cpu_create(b->o->threads, &b->be));
  if (b->o->profile) {
    bench_prof_install(b->be, &b->model->config, b->model->w.vocab_rows);
    bench_prof_set_rank(b->o->rank);
  }
  MXL_TRY(mxl_engine_create(b->model, b->be, &b->e));
  MXL_TRY(make_lora(b));
  return make_batch(b);
}

static void bench_close(bench *b) {
  for (int i = 0; b->e && i < b->n_modes; i++) mxl_train_state_release(b->e, &b->st[i]);
  if (b->be) b->be->ops->free(b->be, b->m), b->be->ops->free(b->be, b->v);
  mxl_lora_destroy(b->params);
  mxl_lora_destroy(b->grads);
  free(b->view_layers), free(b->grad_layers);
  free(b->tokens), free(b->targets_ids), free(b->pos), free(b->seg), free(b->weights);
  mxl_engine_destroy(b->e);
  mxl_backend_destroy(b->be);
  mxl_model_close(b->model);
}

/* ------------------------------------------------------------------ passes */

/* One optimizer step with the state of mode `mode`: zero grads, forward +
 * backward, AdamW. */
static mxl_status train_step(bench *b, int mode, double *loss) {
  const mxl_ops *ops = b->be->ops;
  const size_t n = b->params->layout->n_floats;
  ops->zero(b->be, b->grads->params, n * sizeof(float));
  const mxl_lora_view *views[] = {&b->view};
  mxl_lora_stack stack = {views, 1, 1, (uint64_t)b->n_step};
  mxl_train_batch tb = {b->o->batch, b->o->seq, b->tokens, b->targets_ids, b->weights,
                        b->pos, b->seg, NULL, NULL};
  MXL_TRY(mxl_train_step(b->e, &b->st[mode], &tb, &stack, &b->gview, loss));
  b->n_step++;
  ops->adamw(b->be, b->params->params, b->grads->params, b->m, b->v, n, 1e-4f, 0.9f, 0.999f,
             1e-8f, 0.0f, b->n_step, 1.0f);
  return ops->sync(b->be);
}

/* Inference over the same tokens: each sequence through its own KV cache in
 * one chunk. Buffers are released afterwards (the training peak is
 * measured without them). */
static mxl_status prefill(bench *b, double *seconds, double *cpu_seconds) {
  const int B = b->o->batch, T = b->o->seq;
  mxl_kv_cache **caches = calloc(B, sizeof *caches);
  mxl_fwd_seq *seqs = calloc(B, sizeof *seqs);
  float *logits = malloc((size_t)B * b->e->w.vocab_rows * sizeof(float));
  mxl_forward_state st = {0};
  mxl_status s = caches && seqs && logits ? MXL_OK : mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  for (int i = 0; i < B && s == MXL_OK; i++) {
    s = mxl_kv_cache_create(b->e, T, T, &caches[i]);
    seqs[i] = (mxl_fwd_seq){caches[i], b->tokens + (size_t)i * T, T};
  }
  if (s == MXL_OK) {
    double t0 = bench_now(), c0 = bench_cpu_seconds();
    mxl_forward_out out = {.logits = logits};
    s = mxl_forward(b->e, &st, seqs, B, NULL, &out);
    *seconds = bench_now() - t0;
    *cpu_seconds = bench_cpu_seconds() - c0;
  }
  mxl_forward_state_release(b->e, &st);
  for (int i = 0; caches && i < B; i++) mxl_kv_cache_destroy(b->e, caches[i]);
  free(caches), free(seqs), free(logits);
  return s;
}

/* ------------------------------------------------------------------ report */

/* The timed steps of one mode. */
typedef struct mode_results {
  double step_s[MAX_STEPS], step_cpu[MAX_STEPS];
  int n_steps;
  double hwm;
  bench_mem after_steps; /* RSS split after the last timed step (anon: allocations; file:
                            the mapped weights, which the kernel can drop and re-read) */
} mode_results;

typedef struct results {
  mode_results m[MAX_MODES];
  double prefill_s[MAX_STEPS], prefill_cpu[MAX_STEPS];
  bench_limits L[MAX_STEPS]; /* per repetition */
  int n_reps;
  double first_loss, load_s;
  bench_mem after_load;
} results;

/* The setting of mode i and what the step made of it. */
static void mode_name(const bench *b, int i, char *buf, size_t size) {
  const mxl_train_state *st = &b->st[i];
  const int n = b->o->batch * b->o->seq;
  size_t tapes = mxl_train_keep_bytes(b->e->cfg, n, mxl_train_moe_chunk(st, 1), b->o->rank, 0);
  snprintf(buf, size, "keep_activations %s: %s (the other layers' tapes %.3f GB%s)",
           mxl_keep_mode_name(st->keep_activations), st->keeping ? "kept" : "recomputed",
           tapes / 1e9, st->keep_activations == MXL_KEEP_AUTO ? ", auto's budget" : "");
  if (st->keep_activations == MXL_KEEP_AUTO)
    snprintf(buf + strlen(buf) - 1, size - strlen(buf) + 1, " %.3f GB)", st->keep_budget / 1e9);
  size_t len = strlen(buf);
  snprintf(buf + len, size - len, "; resident %s: mapped weights %s",
           mxl_resident_mode_name(b->o->resident),
           st->resident == MXL_RESIDENT_DROP ? "dropped after each use" : "kept");
}

/* One mode's figures (mode_results r->m[mode]). */
static void print_mode(const bench *b, const results *r, int mode) {
  const options *o = b->o;
  const mode_results *mr = &r->m[mode];
  const mxl_config *c = &b->model->config;
  const int V = b->e->w.vocab_rows;
  const double n = (double)o->batch * o->seq;
  const double flops = bench_train_flops(c, V, o->batch, o->seq, b->targets, o->rank,
                                         b->st[mode].keeping);
  const double pflops = o->batch * bench_forward_flops(c, V, 0, o->seq, 1);
  double tps[MAX_STEPS], pct[MAX_STEPS], ratio[MAX_STEPS], ptps[MAX_STEPS];
  double cores[MAX_STEPS], tps_cpu[MAX_STEPS], pct_cpu[MAX_STEPS], ratio_cpu[MAX_STEPS];
  double ptps_cpu[MAX_STEPS];
  const int n_steps = mr->n_steps;
  for (int i = 0; i < n_steps; i++) {
    int rep = i / o->steps;
    tps[i] = n / mr->step_s[i];
    cores[i] = mr->step_cpu[i] / mr->step_s[i];
    tps_cpu[i] = n * o->threads / mr->step_cpu[i];
    pct[i] = r->L[rep].bf16 > 0 ? 100 * flops / mr->step_s[i] / 1e9 / r->L[rep].bf16 : 0;
    pct_cpu[i] = r->L[rep].bf16_cpu > 0
                     ? 100 * flops * o->threads / mr->step_cpu[i] / 1e9 / r->L[rep].bf16_cpu : 0;
    ratio[i] = o->prefill ? r->prefill_s[rep] / mr->step_s[i] : 0;
    /* from CPU time: on a shared machine the wall ratio mostly says how
     * many cores each pass got */
    ratio_cpu[i] = o->prefill ? r->prefill_cpu[rep] / mr->step_cpu[i] : 0;
  }
  for (int i = 0; i < r->n_reps; i++)
    ptps[i] = n / r->prefill_s[i], ptps_cpu[i] = n * o->threads / r->prefill_cpu[i];
  char a[48], name[160];
  mode_name(b, mode, name, sizeof name);
  printf("\n%s\n", name);
  const int passes = b->st[mode].keeping ? 2 : 3; /* of the layers' work */
  printf("useful work per step: %.1f GFLOP, %.2f per token (%dx layers, %dx attention, "
         "2x lm_head, %dx LoRA; LoRA %.1f GFLOP of it)\n", flops / 1e9, flops / n / 1e9, passes,
         passes + 1, passes + 1, (passes + 1) * n * bench_lora_flops(c, b->targets, o->rank) / 1e9);
  printf("median (min-max) over %d timed steps (%d repetitions)\n", n_steps, r->n_reps);
  printf("  seconds per step          %s\n",
         bench_fmt(a, sizeof a, bench_stats(mr->step_s, n_steps), 3));
  printf("  training tokens/s         %s\n", bench_fmt(a, sizeof a, bench_stats(tps, n_steps), 2));
  printf("  cores used (cpu/wall)     %s\n", bench_fmt(a, sizeof a, bench_stats(cores, n_steps), 2));
  printf("  tokens/s by cpu time      %s  (threads x tokens / cpu seconds)\n",
         bench_fmt(a, sizeof a, bench_stats(tps_cpu, n_steps), 2));
  if (o->limits) {
    double bf[MAX_STEPS], bfc[MAX_STEPS], roof[MAX_STEPS];
    for (int i = 0; i < r->n_reps; i++)
      bf[i] = r->L[i].bf16, bfc[i] = r->L[i].bf16_cpu, roof[i] = r->L[i].bf16 * 1e9 / (flops / n);
    printf("  bf16 peak GFLOP/s         %s\n", bench_fmt(a, sizeof a, bench_stats(bf, r->n_reps), 0));
    printf("  bf16 peak by cpu time     %s\n", bench_fmt(a, sizeof a, bench_stats(bfc, r->n_reps), 0));
    printf("  compute roofline tokens/s %s\n", bench_fmt(a, sizeof a, bench_stats(roof, r->n_reps), 2));
    printf("  %% of the bf16 peak        %s\n", bench_fmt(a, sizeof a, bench_stats(pct, n_steps), 1));
    printf("  %% of the peak by cpu time %s\n", bench_fmt(a, sizeof a, bench_stats(pct_cpu, n_steps), 1));
  }
  if (o->prefill) {
    printf("  prefill tokens/s          %s\n", bench_fmt(a, sizeof a, bench_stats(ptps, r->n_reps), 2));
    printf("  prefill by cpu time       %s\n", bench_fmt(a, sizeof a, bench_stats(ptps_cpu, r->n_reps), 2));
    printf("  training / prefill tok/s  %s  (ideal ≈ %.2f: prefill does %.2f GFLOP/token)\n",
           bench_fmt(a, sizeof a, bench_stats(ratio, n_steps), 3), pflops / flops,
           pflops / n / 1e9);
    printf("  the same by cpu time      %s  (target >= 0.333)\n",
           bench_fmt(a, sizeof a, bench_stats(ratio_cpu, n_steps), 3));
  }
  printf("  peak RSS of the steps     %.3f GB  (target for gpt-oss-20b at seq 1024: <= 16 GB%s)\n",
         mr->hwm / 1e9, b->n_modes > 1 ? "; both modes' states allocated" : "");
  printf("  RSS after the steps       %.3f GB: anon %.3f (LoRA params, grads, AdamW m and v: "
         "%.3f), file %.3f (mapped weights)\n", mr->after_steps.rss / 1e9,
         mr->after_steps.anon / 1e9, 4.0 * b->params->layout->n_floats * sizeof(float) / 1e9,
         mr->after_steps.file / 1e9);
}

static void print_report(const bench *b, const results *r) {
  const options *o = b->o;
  const mxl_config *c = &b->model->config;
  const int V = b->e->w.vocab_rows;
  printf("\nmodel: %d layers, H %d, %d experts (k %d), vocab %d; LoRA %s rank %d alpha %g, "
         "%zu trainable parameters\n", c->n_layers, c->hidden, c->n_experts,
         c->experts_per_token, V, o->targets, o->rank, o->alpha, b->params->layout->n_params);
  printf("batch %d x seq %d = %d tokens per step, %d threads; first loss %.4f (ln V = %.4f)\n",
         o->batch, o->seq, o->batch * o->seq, o->threads, r->first_loss, log((double)V));
  for (int i = 0; i < b->n_modes; i++) print_mode(b, r, i);
  printf("\nload %.1f ms, RSS after load %.3f GB\n", r->load_s * 1e3, r->after_load.rss / 1e9);
}

/* The first mode's figures (bench/train_vs_peft.py runs one). */
static void print_json(const bench *b, const results *all) {
  const double n = (double)b->o->batch * b->o->seq;
  const mode_results *r = &all->m[0];
  bench_stat s = bench_stats(r->step_s, r->n_steps);
  printf("{\"tokens_per_step\": %.0f, \"step_s_median\": %.6f, \"tokens_per_s\": %.4f, "
         "\"peak_rss_bytes\": %.0f, \"anon_bytes\": %.0f, \"file_bytes\": %.0f, "
         "\"first_loss\": %.6f, \"trainable\": %zu, \"step_s\": [",
         n, s.med, n / s.med, r->hwm, r->after_steps.anon, r->after_steps.file, all->first_loss,
         b->params->layout->n_params);
  for (int i = 0; i < r->n_steps; i++) printf("%s%.6f", i ? ", " : "", r->step_s[i]);
  printf("], \"step_cpu_s\": [");
  for (int i = 0; i < r->n_steps; i++) printf("%s%.6f", i ? ", " : "", r->step_cpu[i]);
  printf("], \"kept_activations\": %s}\n", b->st[0].keeping ? "true" : "false");
}

/* ------------------------------------------------------------------ main */

static int fail(const char *what) {
  fprintf(stderr, "bench_train: %s: %s\n", what, mxl_last_error());
  return 1;
}

/* The timed steps of one repetition in one mode. */
static int timed_steps(bench *b, results *r, int rep, int mode) {
  const options *o = b->o;
  mode_results *mr = &r->m[mode];
  bench_reset_peak();
  for (int s = 0; s < o->steps; s++) {
    double loss, t0 = bench_now(), c0 = bench_cpu_seconds();
    if (train_step(b, mode, &loss) != MXL_OK) return fail("step");
    double dt = bench_now() - t0, dc = bench_cpu_seconds() - c0;
    if (o->warmup == 0 && rep == 0 && s == 0 && mode == 0) r->first_loss = loss;
    mr->step_cpu[mr->n_steps] = dc;
    mr->step_s[mr->n_steps++] = dt;
    if (!o->json)
      printf("rep %d step %d (%s): %.3f s, %.2f tokens/s (%.2f cores), loss %.4f\n", rep + 1,
             s + 1, b->st[mode].keeping ? "kept" : "recomputed", dt, o->batch * o->seq / dt,
             dc / dt, loss), fflush(stdout);
  }
  bench_mem m = bench_memory();
  if (m.hwm > mr->hwm) mr->hwm = m.hwm;
  mr->after_steps = m;
  return 0;
}

static int run(bench *b, results *r) {
  const options *o = b->o;
  for (int i = 0; i < o->warmup; i++) {
    for (int mode = 0; mode < b->n_modes; mode++) {
      double loss;
      if (train_step(b, mode, &loss) != MXL_OK) return fail("warm-up step");
      if (i == 0 && mode == 0) r->first_loss = loss;
      if (!o->json) printf("warm-up step %d: loss %.4f\n", i + 1, loss), fflush(stdout);
    }
  }
  for (int rep = 0; rep < o->reps; rep++) {
    if (o->limits) bench_measure_limits(o->threads, &r->L[rep]);
    if (o->prefill && prefill(b, &r->prefill_s[rep], &r->prefill_cpu[rep]) != MXL_OK)
      return fail("prefill");
    /* A B, then B A: neither mode always runs right after the prefill */
    for (int i = 0; i < b->n_modes; i++)
      if (timed_steps(b, r, rep, (i + rep) % b->n_modes)) return 1;
    r->n_reps++;
    if (!o->json && o->limits)
      printf("rep %d: bw %.1f GB/s, bf16 %.0f (by cpu %.0f) GFLOP/s, prefill %.2f tokens/s\n",
             rep + 1, r->L[rep].bw, r->L[rep].bf16, r->L[rep].bf16_cpu,
             o->prefill ? o->batch * o->seq / r->prefill_s[rep] : 0.0);
  }
  if (o->profile) {
    bench_limits L;
    bench_measure_limits(o->threads, &L);
    double loss;
    bench_prof_start();
    double t0 = bench_now();
    if (train_step(b, 0, &loss) != MXL_OK) return fail("step");
    char title[96];
    snprintf(title, sizeof title, "profile: one training step, %d x %d tokens, %d threads",
             o->batch, o->seq, o->threads);
    bench_prof_print(title, bench_now() - t0, &L);
  }
  return 0;
}

int main(int argc, char **argv) {
  mxl_wait_passively(argv); /* as the mxlora binary does */
  options o;
  if (!parse_options(argc, argv, &o)) {
    fputs(usage, stderr);
    return 2;
  }
  char tmp[256] = "";
  const char *path = o.model;
  if (!path) {
    if (!bench_write_preset(o.preset, tmp, sizeof tmp)) return 1;
    path = tmp;
  }
  bench b = {&o};
  b.n_modes = o.keep == KEEP_BOTH ? 2 : 1;
  for (int i = 0; i < b.n_modes; i++) {
    b.st[i].resident = o.resident;
    b.st[i].keep_activations = o.keep == KEEP_BOTH ? (i ? MXL_KEEP_ON : MXL_KEEP_OFF) : o.keep;
  }
  results *r = calloc(1, sizeof *r);
  if (!r) return 1;
  if (!o.json)
    printf("bench_train: %s, batch %d x seq %d, %d threads, %d warm-up + %d x %d timed steps\n",
           path, o.batch, o.seq, o.threads, o.warmup, o.reps, o.steps);
  double t0 = bench_now();
  int rc = 0;
  if (mxl_model_open(path, &b.model) != MXL_OK) rc = fail("load");
  r->load_s = bench_now() - t0;
  r->after_load = bench_memory();
  if (!rc) {
    mxl_model_close(b.model);
    b.model = NULL;
    if (bench_open(&b, path) != MXL_OK) rc = fail("setup");
  }
  if (!rc) rc = run(&b, r);
  if (!rc) o.json ? print_json(&b, r) : print_report(&b, r);
  bench_close(&b);
  free(r);
  if (tmp[0]) bench_remove_dir(tmp);
  return rc;
}
