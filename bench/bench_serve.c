/* bench_serve: generated tokens/s of the continuous-batching scheduler
 * (include/mxlora/scheduler.h) with 1, 8 and 32 concurrent requests, every
 * request on the same adapter ("single") versus 4 distinct adapters spread
 * over the requests ("mixed"), on the bench preset (or --model).
 *
 * Each run submits C requests of --prompt random tokens at once (greedy,
 * --tokens new tokens each, no stop ids) and steps the scheduler on this
 * thread until all are done. Two rates per run:
 *   gen tok/s     all generated tokens ÷ wall time from submission to the
 *                 last token (prefill included, as a client sees it);
 *   decode tok/s  tokens generated after every request had its first token
 *                 ÷ the time since then (the batch at full width).
 *   by CPU time   generated tokens × threads ÷ the process's CPU seconds
 *                 of the run: what the run does on otherwise idle cores
 *                 (bench_common.h; this machine is shared, so the wall
 *                 figures mostly measure the other jobs).
 * Runs are interleaved (for each repetition: every C, single then mixed)
 * and reported as medians (min-max). The targets are ratios within
 * one run: mixed ≥ 0.9 × single at each C (mixed adapters within 10 %),
 * and single at 32 ≥ 8 × single at 1.
 *
 * Adapters: as recipes/gpt-oss-20b.json trains them — rank --rank (8),
 * alpha 2·rank, on q, k, v, o and both expert projections of every layer —
 * with B non-zero (trained-looking), written to the temp folder. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/lora.h"
#include "bench/bench_common.h"
#include "model/model.h"

enum { N_ADAPTERS = 4, MAX_CONC = 8, MAX_REPS = 16 };

typedef struct options {
  const char *model, *backend;
  int conc[MAX_CONC], n_conc;
  int tokens, prompt, reps, threads, rank;
  int prefix_cache; /* the scheduler's option: 0 default, -1 off */
} options;

typedef struct run_state {
  int pending;    /* requests not finished */
  int started;    /* requests with a first token */
  long generated; /* tokens so far */
  long at_full;   /* tokens when the last request started */
  double t_full;  /* when the last request got its first token */
  int failed;
} run_state;

typedef struct req_state {
  run_state *run;
  int got_first;
} req_state;

static int on_event(void *user, const mxl_request_event *ev) {
  req_state *q = user;
  run_state *r = q->run;
  if (ev->finish != MXL_FINISH_NONE) {
    r->pending--;
    if (ev->finish == MXL_FINISH_ERROR || ev->finish == MXL_FINISH_CANCELLED) r->failed = 1;
    return 0;
  }
  r->generated++;
  if (!q->got_first) {
    q->got_first = 1;
    r->started++;
  }
  return 0;
}

/* One run: C requests, adapters single (all adapter 0) or mixed (i % 4).
 * Returns 0 on failure. */
static int run_once(mxl_scheduler *s, mxl_adapter_ref **refs, const options *o, int C, int mixed,
                    uint64_t seed, double *gen_rate, double *decode_rate, double *cpu_rate) {
  run_state r = {0};
  req_state *qs = calloc((size_t)C, sizeof *qs);
  int32_t *prompt = malloc((size_t)o->prompt * sizeof *prompt);
  mxl_scheduler_stats st;
  mxl_scheduler_get_stats(s, &st);
  if (!qs || !prompt) return 0;
  double t0 = bench_now(), c0 = bench_cpu_seconds();
  for (int i = 0; i < C; i++) {
    for (int j = 0; j < o->prompt; j++) prompt[j] = (int32_t)(bench_rand(&seed) % 1000u);
    mxl_request_adapter ad = {refs[mixed ? i % N_ADAPTERS : 0], 1.0f};
    mxl_request q;
    mxl_request_defaults(&q);
    q.prompt = prompt;
    q.n_prompt = o->prompt;
    q.temperature = 0;
    q.max_tokens = o->tokens;
    q.adapters = &ad;
    q.n_adapters = 1;
    q.on_event = on_event;
    q.user = &qs[i];
    qs[i].run = &r;
    uint64_t id;
    if (mxl_scheduler_submit(s, &q, &id) != MXL_OK) {
      fprintf(stderr, "submit: %s\n", mxl_last_error());
      return 0;
    }
    r.pending++;
  }
  while (r.pending > 0) {
    int started_before = r.started;
    if (mxl_scheduler_step(s, NULL) != MXL_OK) {
      fprintf(stderr, "step: %s\n", mxl_last_error());
      return 0;
    }
    if (started_before < C && r.started == C) {
      r.t_full = bench_now();
      r.at_full = r.generated;
    }
  }
  double t1 = bench_now(), cpu = bench_cpu_seconds() - c0;
  *gen_rate = (double)r.generated / (t1 - t0);
  *cpu_rate = cpu > 0 ? (double)r.generated * st.threads / cpu : 0;
  *decode_rate = t1 > r.t_full ? (double)(r.generated - r.at_full) / (t1 - r.t_full) : 0;
  free(qs);
  free(prompt);
  return !r.failed && r.generated == (long)C * o->tokens;
}

static int write_adapters(const char *dir, const mxl_model *model, int rank, char paths[][640]) {
  for (int a = 0; a < N_ADAPTERS; a++) {
    mxl_lora_config lc;
    mxl_lora_config_init(&lc, rank, 2.0f * rank);
    mxl_lora *lora = NULL;
    mxl_status st = mxl_lora_config_add(&lc, MXL_LORA_ATTN_BITS | MXL_LORA_EXPERT_BITS, NULL, 0,
                                        model->config.n_layers);
    if (st == MXL_OK) st = mxl_lora_create(&model->config, &lc, NULL, &lora);
    if (st == MXL_OK) {
      uint64_t seed = 1000 + (uint64_t)a;
      for (size_t i = 0; i < lora->layout->n_floats; i++)
        lora->params[i] = ((float)(bench_rand(&seed) >> 40) * 0x1p-24f - 0.5f) * 0.05f;
      snprintf(paths[a], 640, "%s/adapter%d.mxla", dir, a);
      mxl_adapter_save_options opt;
      mxl_adapter_save_options_default(&opt);
      st = mxl_adapter_save(paths[a], lora, model, &opt);
    }
    mxl_lora_destroy(lora);
    if (st != MXL_OK) {
      fprintf(stderr, "adapter %d: %s\n", a, mxl_last_error());
      return 0;
    }
  }
  return 1;
}

static void usage(void) {
  fprintf(stderr,
          "usage: bench_serve [--model DIR] [--backend cpu] [--threads N] [--conc 1,8,32]\n"
          "                   [--tokens 32] [--prompt 16] [--reps 3] [--rank 8]\n"
          "                   [--prefix-cache N (-1: off)]\n");
}

static int parse(int argc, char **argv, options *o) {
  o->model = NULL;
  o->backend = "cpu";
  o->n_conc = bench_parse_list("1,8,32", o->conc, MAX_CONC);
  o->tokens = 32, o->prompt = 16, o->reps = 3, o->threads = 0, o->rank = 8;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) return 0;
    if (!strcmp(a, "--model")) o->model = v;
    else if (!strcmp(a, "--backend")) o->backend = v;
    else if (!strcmp(a, "--threads")) o->threads = atoi(v);
    else if (!strcmp(a, "--conc")) o->n_conc = bench_parse_list(v, o->conc, MAX_CONC);
    else if (!strcmp(a, "--tokens")) o->tokens = atoi(v);
    else if (!strcmp(a, "--prompt")) o->prompt = atoi(v);
    else if (!strcmp(a, "--reps")) o->reps = atoi(v);
    else if (!strcmp(a, "--rank")) o->rank = atoi(v);
    else if (!strcmp(a, "--prefix-cache")) o->prefix_cache = atoi(v);
    else return 0;
    i++;
  }
  return o->n_conc > 0 && o->tokens > 0 && o->prompt > 0 && o->reps > 0 && o->reps <= MAX_REPS &&
         o->rank > 0;
}

static void print_cpu(void) {
  FILE *f = fopen("/proc/cpuinfo", "r");
  char line[256], model[256] = "?", family[32] = "?", number[32] = "?";
  while (f && fgets(line, sizeof line, f)) {
    char *colon = strchr(line, ':');
    if (!colon) continue;
    char *val = colon + 2;
    val[strcspn(val, "\n")] = 0;
    if (!strncmp(line, "model name", 10) && model[0] == '?') snprintf(model, sizeof model, "%s", val);
    else if (!strncmp(line, "cpu family", 10) && family[0] == '?') snprintf(family, sizeof family, "%s", val);
    else if (!strncmp(line, "model\t", 6) && number[0] == '?') snprintf(number, sizeof number, "%s", val);
  }
  if (f) fclose(f);
  printf("host: %s (cpu family %s, model %s), %d cores online\n", model, family, number,
         (int)sysconf(_SC_NPROCESSORS_ONLN));
}

int main(int argc, char **argv) {
  options o;
  if (!parse(argc, argv, &o)) {
    usage();
    return 2;
  }
  char dir[512];
  if (o.model) snprintf(dir, sizeof dir, "%s", o.model);
  else if (!bench_write_preset("bench", dir, sizeof dir)) return 1;
  char tmp[512];
  snprintf(tmp, sizeof tmp, "%s/mxl_serve_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  mxl_model *model = NULL;
  mxl_scheduler *s = NULL;
  mxl_registry *reg = NULL;
  mxl_adapter_ref *refs[N_ADAPTERS] = {0};
  char paths[N_ADAPTERS][640];
  int max_conc = 1;
  for (int i = 0; i < o.n_conc; i++) max_conc = o.conc[i] > max_conc ? o.conc[i] : max_conc;
  mxl_scheduler_options so = {0};
  so.backend = o.backend;
  so.threads = o.threads;
  so.max_context = o.prompt + o.tokens;
  so.max_batch = max_conc;
  so.prefill_chunk = o.prompt;
  so.prefix_cache = o.prefix_cache;
  so.max_step_tokens = max_conc * o.prompt;
  int ok = mkdtemp(tmp) && mxl_model_open(dir, &model) == MXL_OK &&
           write_adapters(tmp, model, o.rank, paths) &&
           mxl_scheduler_create(model, &so, &s) == MXL_OK &&
           mxl_registry_create(model, mxl_scheduler_backend(s), NULL, &reg) == MXL_OK;
  for (int a = 0; ok && a < N_ADAPTERS; a++) {
    char name[16];
    snprintf(name, sizeof name, "a%d", a);
    ok = mxl_registry_load(reg, name, paths[a]) == MXL_OK &&
         mxl_registry_acquire(reg, name, &refs[a]) == MXL_OK;
  }
  if (!ok) {
    fprintf(stderr, "setup: %s\n", mxl_last_error());
    return 1;
  }
  print_cpu();
  mxl_scheduler_stats st;
  mxl_scheduler_get_stats(s, &st);
  printf("model: %s (%d layers, hidden %d, %d experts, %d per token), backend %s, %s\n",
         o.model ? o.model : "bench preset", model->config.n_layers, model->config.hidden,
         model->config.n_experts, model->config.experts_per_token, st.backend,
         mxl_build_features());
  printf("requests: %d prompt tokens, %d generated each, greedy; adapters rank %d on every "
         "target of every layer; %d repetitions, interleaved\n\n",
         o.prompt, o.tokens, o.rank, o.reps);

  /* warm-up: page in the weights, grow every buffer */
  double g, d, cr;
  run_once(s, refs, &o, max_conc, 1, 1, &g, &d, &cr);

  static double gen[MAX_CONC][2][MAX_REPS], dec[MAX_CONC][2][MAX_REPS], cpu[MAX_CONC][2][MAX_REPS];
  for (int rep = 0; rep < o.reps; rep++)
    for (int c = 0; c < o.n_conc; c++)
      for (int mixed = 0; mixed < 2; mixed++)
        /* every run's prompts are new: none continues from the prefix cache */
        if (!run_once(s, refs, &o, o.conc[c], mixed,
                      7 + (uint64_t)rep * 1000 + (uint64_t)c * 10 + (uint64_t)mixed,
                      &gen[c][mixed][rep],
                      &dec[c][mixed][rep], &cpu[c][mixed][rep])) {
          fprintf(stderr, "run failed (C = %d, %s)\n", o.conc[c], mixed ? "mixed" : "single");
          return 1;
        }

  printf("%-5s %-20s %-20s %-20s %-20s %-20s %-20s %s\n", "conc", "single gen tok/s",
         "mixed gen tok/s", "single decode", "mixed decode", "single by CPU time",
         "mixed by CPU time", "mixed/single: wall, CPU time");
  double single1[2] = {0, 0}, single32[2] = {0, 0};
  for (int c = 0; c < o.n_conc; c++) {
    char b[6][64];
    bench_stat sg = bench_stats(gen[c][0], o.reps), mg = bench_stats(gen[c][1], o.reps);
    bench_stat sd = bench_stats(dec[c][0], o.reps), md = bench_stats(dec[c][1], o.reps);
    bench_stat sc = bench_stats(cpu[c][0], o.reps), mc = bench_stats(cpu[c][1], o.reps);
    double ratio_w[MAX_REPS], ratio_c[MAX_REPS];
    for (int r = 0; r < o.reps; r++) {
      ratio_w[r] = gen[c][1][r] / gen[c][0][r];
      ratio_c[r] = cpu[c][0][r] > 0 ? cpu[c][1][r] / cpu[c][0][r] : 0;
    }
    printf("%-5d %-20s %-20s %-20s %-20s %-20s %-20s %.3f, %.3f\n", o.conc[c],
           bench_fmt(b[0], 64, sg, 1), bench_fmt(b[1], 64, mg, 1), bench_fmt(b[2], 64, sd, 1),
           bench_fmt(b[3], 64, md, 1), bench_fmt(b[4], 64, sc, 1), bench_fmt(b[5], 64, mc, 1),
           bench_stats(ratio_w, o.reps).med, bench_stats(ratio_c, o.reps).med);
    if (o.conc[c] == 1) single1[0] = sg.med, single1[1] = sc.med;
    if (o.conc[c] == 32) single32[0] = sg.med, single32[1] = sc.med;
  }
  if (single1[0] > 0 && single32[0] > 0)
    printf("\nsingle adapter, 32 concurrent vs 1: %.2fx wall, %.2fx by CPU time (target >= 8x)\n",
           single32[0] / single1[0], single32[1] / single1[1]);
  printf("target: mixed/single >= 0.90 at every concurrency\n");

  for (int a = 0; a < N_ADAPTERS; a++) mxl_adapter_ref_release(refs[a]);
  mxl_scheduler_destroy(s);
  mxl_registry_destroy(reg);
  mxl_model_close(model);
  bench_remove_dir(tmp);
  if (!o.model) bench_remove_dir(dir);
  return 0;
}
