/* bench_forward: inference speed of the CPU backend on a checkpoint, against
 * the machine's limits measured in the same run.
 *
 *   build-bench/bench_forward [--model DIR | --preset bench|test] [--threads 1,2]
 *                             [--prompt 512] [--decode 64] [--chunk 512] [--reps 3]
 *                             [--profile] [--no-limits] [--no-mmap]
 *
 * Without --model it writes the bench preset (`mxlora tiny --preset bench`,
 * HF layout) to a temporary folder and removes it at the end; give
 * `--model DIR` for a checkpoint such as `mxlora tiny DIR --shape gpt-oss-20b`.
 *
 * Per repetition and thread count, interleaved (rep 1: 1 thread, 2 threads;
 * rep 2: ...): the limits (read bandwidth, fp32 and bf16 peaks), then a
 * prefill of --prompt random tokens (chunks of --chunk tokens, logits of the
 * last position only) and --decode greedy tokens after it, one at a time
 * with the KV cache. Reported: medians and (min-max) over the repetitions,
 * and per repetition the ratios
 *   decode  = tokens/s × weight bytes per token ÷ read bandwidth
 *             (the bandwidth roofline; bench/bench_model.h counts the bytes)
 *   prefill = useful FLOPs/s ÷ bf16 dot-product peak,
 * against the targets for the gpt-oss-20b shape (decode ≥ 85 %, prefill
 * ≥ 50 %). Also: model load time (mmap), RSS after load, the first
 * (page-faulting) prefill, and peak RSS of the timed passes (VmHWM reset
 * after the limits' array is unmapped).
 *
 * The limits' bandwidth is read from 2 MB pages; a mapped checkpoint sits on
 * the page cache's 4 KB pages, so each repetition also times the same sum
 * over the mapped unembedding in place, and decode is given as a % of that
 * too ("decode % mapped"): what is left to the kernels, apart from where
 * the pages lie. --no-mmap copies the weights into 2 MB pages instead
 * (mxl_weight_options; one copy per thread count, so give one thread count
 * when memory holds only one copy).
 *
 * --no-limits skips the limits (and so the ratios): for scripts that time
 * many short runs (bench/busy_machine.py, bench/vs_llamacpp.py).
 *
 * --profile adds, after the timed repetitions, one pass of each kind per
 * thread count with every op timed (bench/bench_profile.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_common.h"
#include "bench/bench_model.h"
#include "bench/bench_profile.h"
#include "core/hugemem.h"
#include "core/status.h"
#include "model/forward.h"

enum { MAX_THREADS = 4, MAX_REPS = 32 };

typedef struct options {
  const char *model, *preset;
  int threads[MAX_THREADS], n_threads;
  int prompt, decode, chunk, reps, profile, limits, no_mmap;
} options;

/* One thread count: a backend, an engine on it, a KV cache and scratch. */
typedef struct runner {
  int nt;
  mxl_backend *be;
  mxl_engine *e;
  mxl_kv_cache *cache;
  mxl_forward_state st;
} runner;

/* What one repetition measured on one runner. */
typedef struct sample {
  bench_limits L;
  double map_bw, map_bw_cpu; /* GB/s reading the mapped unembedding in place */
  double prefill_s, decode_s;     /* wall */
  double prefill_cpu, decode_cpu; /* CPU seconds of the process */
  double hwm;
} sample;

static const char usage[] =
    "usage: bench_forward [--model DIR | --preset bench|test] [--threads 1,2] [--prompt 512]\n"
    "                     [--decode 64] [--chunk 512] [--reps 3] [--profile] [--no-limits]\n"
    "                     [--no-mmap]\n";

static int parse_options(int argc, char **argv, options *o) {
  *o = (options){NULL, "bench", {1, 2}, 2, 512, 64, 512, 3, 0, 1, 0};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--profile")) o->profile = 1;
    else if (!strcmp(a, "--no-limits")) o->limits = 0;
    else if (!strcmp(a, "--no-mmap")) o->no_mmap = 1;
    else if (!v) return 0;
    else if (!strcmp(a, "--model")) o->model = v, i++;
    else if (!strcmp(a, "--preset")) o->preset = v, i++;
    else if (!strcmp(a, "--threads")) o->n_threads = bench_parse_list(v, o->threads, MAX_THREADS), i++;
    else if (!strcmp(a, "--prompt")) o->prompt = atoi(v), i++;
    else if (!strcmp(a, "--decode")) o->decode = atoi(v), i++;
    else if (!strcmp(a, "--chunk")) o->chunk = atoi(v), i++;
    else if (!strcmp(a, "--reps")) o->reps = atoi(v), i++;
    else return 0;
  }
  if (o->chunk > o->prompt) o->chunk = o->prompt;
  return o->n_threads > 0 && o->prompt > 0 && o->decode > 0 && o->chunk > 0 && o->reps > 0 &&
         o->reps <= MAX_REPS;
}

/* ------------------------------------------------------------------ passes */

static int32_t argmax(const float *x, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[best]) best = i;
  return best;
}

/* The prompt from an empty cache, in chunks; the last chunk's logits land in
 * `logits` [V]. */
static mxl_status prefill(runner *r, const int32_t *prompt, int n, int chunk, float *logits) {
  mxl_kv_cache_reset(r->e, r->cache);
  for (int done = 0; done < n; done += chunk) {
    int m = n - done < chunk ? n - done : chunk;
    mxl_fwd_seq seq = {r->cache, prompt + done, m};
    mxl_forward_out out = {0};
    if (done + m == n) out.logits = logits;
    MXL_TRY(mxl_forward(r->e, &r->st, &seq, 1, NULL, &out));
  }
  return MXL_OK;
}

/* `count` greedy tokens after the prefill, one forward each. */
static mxl_status decode(runner *r, float *logits, int count) {
  const int V = r->e->w.vocab_rows;
  for (int i = 0; i < count; i++) {
    int32_t t = argmax(logits, V);
    mxl_fwd_seq seq = {r->cache, &t, 1};
    mxl_forward_out out = {.logits = logits};
    MXL_TRY(mxl_forward(r->e, &r->st, &seq, 1, NULL, &out));
  }
  return MXL_OK;
}

static double gb(double bytes) { return bytes / 1e9; }

static mxl_status runner_open(runner *r, const mxl_model *m, int nt, const options *o,
                              int profile) {
  memset(r, 0, sizeof *r);
  r->nt = nt;
  MXL_TRY(mxl_backend_cpu_create(nt, &r->be));
  if (profile) bench_prof_install(r->be, &m->config, m->w.vocab_rows);
  mxl_weight_options w = {o->no_mmap, NULL, NULL};
  double t0 = bench_now();
  MXL_TRY(mxl_engine_create_with(m, r->be, &w, &r->e));
  if (o->no_mmap) {
    size_t bytes = 0;
    for (int i = 0; i < r->e->n_device_files; i++) bytes += r->e->huge_bytes[i];
    /* the rest of the copy fell back to 4 KB pages, which stream slower */
    printf("--no-mmap (%d thread%s): copied %.2f GB of weights in %.2f s, %.2f GB (%.1f %%) of it "
           "on 2 MB pages\n",
           nt, nt > 1 ? "s" : "", gb(bytes), bench_now() - t0, gb(r->e->huge_2mb),
           100.0 * (double)r->e->huge_2mb / (double)mxl_huge_round(bytes));
  }
  /* room for the warm-up's 2 decoded tokens too */
  return mxl_kv_cache_create(r->e, o->prompt + (o->decode > 2 ? o->decode : 2), o->chunk,
                             &r->cache);
}

static void runner_close(runner *r) {
  if (r->e) {
    mxl_forward_state_release(r->e, &r->st);
    mxl_kv_cache_destroy(r->e, r->cache);
  }
  mxl_engine_destroy(r->e);
  mxl_backend_destroy(r->be);
  int nt = r->nt; /* what print_results reads of a closed runner */
  memset(r, 0, sizeof *r);
  r->nt = nt;
}

/* The read bandwidth of the checkpoint's own pages: the same sum as the
 * limits' (bench_read_bandwidth) over the unembedding as mapped, where decode
 * reads it. The limits' array sits on 2 MB pages; a mapped checkpoint lives
 * in the page cache on 4 KB pages, which the hardware prefetchers do not
 * cross and which are scattered in physical memory, so this is the rate a
 * decode can reach without copying its weights (on Zen 4 about 2/3 of the
 * 2 MB-page figure). Skipped (0) when the unembedding is under
 * MAPPED_MIN_BYTES (the small presets). */
enum { MAPPED_MIN_BYTES = 256 << 20 }; /* well beyond the L3 */

static void mapped_bandwidth(const mxl_model *m, int nt, sample *x) {
  const mxl_bf16_weight *u = &m->w.unembed;
  uintptr_t p = ((uintptr_t)u->w + 63) & ~(uintptr_t)63; /* the sum's aligned loads */
  size_t bytes = (size_t)u->rows * (size_t)u->cols * 2 - (p - (uintptr_t)u->w);
  x->map_bw = x->map_bw_cpu = 0;
  if (bytes < MAPPED_MIN_BYTES) return; /* it would be read from the caches */
  x->map_bw = bench_read_bandwidth(nt, (const float *)p, bytes / 4 / 64 * 64, &x->map_bw_cpu);
}

/* ------------------------------------------------------------------ report */

static void print_work(const mxl_config *c, int V, const options *o) {
  bench_decode_bytes b = bench_decode_weight_bytes(c, V);
  double kv = bench_decode_kv_bytes(c, o->prompt + o->decode / 2.0);
  int chunks = (o->prompt + o->chunk - 1) / o->chunk;
  double pf = bench_forward_flops(c, V, 0, o->prompt, chunks);
  printf("model: %d layers, H %d, I %d, %d experts (k %d), heads %d/%d x %d, vocab %d\n",
         c->n_layers, c->hidden, c->intermediate, c->n_experts, c->experts_per_token,
         c->n_heads, c->n_kv_heads, c->head_dim, V);
  printf("decode reads per token: %.3f GB of weights (experts %.3f, attention %.3f, "
         "lm_head %.3f, router %.4f, norms+embed %.5f) + %.4f GB of KV cache (mean position)\n",
         gb(b.total), gb(b.experts), gb(b.attention), gb(b.lm_head), gb(b.router),
         gb(b.norms + b.embed), gb(kv));
  printf("prefill %d tokens: %.1f GFLOP useful (%.2f per token; lm_head on %d row%s)\n",
         o->prompt, pf / 1e9, pf / 1e9 / o->prompt, chunks, chunks > 1 ? "s" : "");
}

static void print_results(const mxl_config *c, int V, const options *o, const runner *rs,
                          sample s[][MAX_THREADS]) {
  const double wbytes = bench_decode_weight_bytes(c, V).total;
  const double kv = bench_decode_kv_bytes(c, o->prompt + o->decode / 2.0);
  const int chunks = (o->prompt + o->chunk - 1) / o->chunk;
  const double pflops = bench_forward_flops(c, V, 0, o->prompt, chunks);
  printf("\nmedian (min-max) over %d repetitions\n", o->reps);
  printf("%3s %-20s %-20s %-20s %-24s %-16s %-22s %-16s\n", "thr", "bandwidth GB/s",
         "bf16 peak GFLOP/s", "fp32 peak GFLOP/s", "prefill tokens/s", "(cores used)",
         "decode tokens/s", "(cores used)");
  for (int ti = 0; ti < o->n_threads; ti++) {
    double bw[MAX_REPS], bf[MAX_REPS], fm[MAX_REPS], pt[MAX_REPS], dt[MAX_REPS];
    double pc[MAX_REPS], dc[MAX_REPS];
    for (int r = 0; r < o->reps; r++) {
      const sample *x = &s[r][ti];
      bw[r] = x->L.bw, bf[r] = x->L.bf16, fm[r] = x->L.fma;
      pt[r] = o->prompt / x->prefill_s, dt[r] = o->decode / x->decode_s;
      pc[r] = x->prefill_cpu / x->prefill_s, dc[r] = x->decode_cpu / x->decode_s;
    }
    char a[40], b[40], d[40], e[40], f[40], g[40], h[40];
    printf("%3d %-20s %-20s %-20s %-24s %-16s %-22s %-16s\n", rs[ti].nt,
           bench_fmt(a, sizeof a, bench_stats(bw, o->reps), 1),
           bench_fmt(b, sizeof b, bench_stats(bf, o->reps), 0),
           bench_fmt(d, sizeof d, bench_stats(fm, o->reps), 0),
           bench_fmt(e, sizeof e, bench_stats(pt, o->reps), 2),
           bench_fmt(g, sizeof g, bench_stats(pc, o->reps), 2),
           bench_fmt(f, sizeof f, bench_stats(dt, o->reps), 2),
           bench_fmt(h, sizeof h, bench_stats(dc, o->reps), 2));
  }
  if (!o->limits) return; /* no limits: no ratios */
  printf("\nratios per repetition (same repetition's limits), median (min-max); \"by cpu\": "
         "rates from CPU time (n_threads x work / process CPU seconds) against limits from each "
         "thread's CPU time\n");
  printf("%3s %-22s %-22s %-22s %-20s %-22s %-22s %-22s\n", "thr", "decode % bw roofline",
         "prefill % bf16 peak", "decode roofline tok/s", "prefill GFLOP/s", "decode % roof by cpu",
         "prefill % peak by cpu", "decode % mapped (cpu)");
  double dec_best = 0, pre_best = 0, dec_cpu = 0, pre_cpu = 0;
  for (int ti = 0; ti < o->n_threads; ti++) {
    double dr[MAX_REPS], pr[MAX_REPS], roof[MAX_REPS], gf[MAX_REPS], drc[MAX_REPS], prc[MAX_REPS];
    double dm[MAX_REPS]; /* decode against the mapped weights' bandwidth, by CPU time */
    for (int r = 0; r < o->reps; r++) {
      const sample *x = &s[r][ti];
      double tps = o->decode / x->decode_s, nt = rs[ti].nt;
      roof[r] = x->L.bw * 1e9 / (wbytes + kv);
      dr[r] = 100 * tps / roof[r];
      drc[r] = 100 * (o->decode * nt / x->decode_cpu) / (x->L.bw_cpu * 1e9 / (wbytes + kv));
      dm[r] = x->map_bw_cpu > 0
                  ? 100 * (o->decode * nt / x->decode_cpu) / (x->map_bw_cpu * 1e9 / (wbytes + kv))
                  : 0;
      gf[r] = pflops / x->prefill_s / 1e9;
      pr[r] = 100 * gf[r] / x->L.bf16;
      prc[r] = 100 * (pflops * nt / x->prefill_cpu / 1e9) / x->L.bf16_cpu;
    }
    bench_stat sd = bench_stats(dr, o->reps), sp = bench_stats(pr, o->reps);
    if (sd.med > dec_best) dec_best = sd.med;
    if (sp.med > pre_best) pre_best = sp.med;
    double dc = bench_stats(drc, o->reps).med, pc = bench_stats(prc, o->reps).med;
    if (dc > dec_cpu) dec_cpu = dc;
    if (pc > pre_cpu) pre_cpu = pc;
    char a[40], b[40], d[40], e[40], f[40], g[40], h[40];
    printf("%3d %-22s %-22s %-22s %-20s %-22s %-22s %-22s\n", rs[ti].nt,
           bench_fmt(a, sizeof a, sd, 1), bench_fmt(b, sizeof b, sp, 1),
           bench_fmt(d, sizeof d, bench_stats(roof, o->reps), 2),
           bench_fmt(e, sizeof e, bench_stats(gf, o->reps), 1),
           bench_fmt(f, sizeof f, bench_stats(drc, o->reps), 1),
           bench_fmt(g, sizeof g, bench_stats(prc, o->reps), 1),
           bench_fmt(h, sizeof h, bench_stats(dm, o->reps), 1));
  }
  double hwm = 0;
  for (int r = 0; r < o->reps; r++)
    for (int ti = 0; ti < o->n_threads; ti++)
      if (s[r][ti].hwm > hwm) hwm = s[r][ti].hwm;
  printf("\npeak RSS of the timed passes: %.2f GB\n", gb(hwm));
  printf("\ntargets (issue, gpt-oss-20b shape; best thread count's median):\n");
  printf("  decode  >= 85%% of the bandwidth roofline: measured %.1f%% (by cpu time %.1f%%)  %s\n",
         dec_best, dec_cpu, dec_best >= 85 ? "MET" : "not met");
  printf("  prefill >= 50%% of the bf16 peak:          measured %.1f%% (by cpu time %.1f%%)  %s\n",
         pre_best, pre_cpu, pre_best >= 50 ? "MET" : "not met");
}

/* ------------------------------------------------------------------ main */

static int fail(const char *what) {
  fprintf(stderr, "bench_forward: %s: %s\n", what, mxl_last_error());
  return 1;
}

/* Opens the model `reps` times (closing all but the last); prints the
 * median load time and the RSS after the load. */
static mxl_status load_model(const char *path, int reps, mxl_model **out) {
  double t[MAX_REPS];
  for (int r = 0; r < reps; r++) {
    if (r) mxl_model_close(*out);
    double t0 = bench_now();
    MXL_TRY(mxl_model_open(path, out));
    t[r] = bench_now() - t0;
  }
  bench_mem m = bench_memory();
  char a[48];
  for (int r = 0; r < reps; r++) t[r] *= 1e3;
  printf("load (mmap + validate): %s ms, RSS after load %.3f GB (anon %.3f, file %.3f)\n",
         bench_fmt(a, sizeof a, bench_stats(t, reps), 1), gb(m.rss), gb(m.anon), gb(m.file));
  return MXL_OK;
}

/* One prefill and one decode run with every op timed. */
static int profile(const options *o, runner *ru, const int32_t *prompt, float *logits) {
  bench_limits L;
  bench_measure_limits(ru->nt, &L);
  char title[96];
  bench_prof_start();
  double t0 = bench_now();
  if (prefill(ru, prompt, o->prompt, o->chunk, logits) != MXL_OK) return fail("prefill");
  snprintf(title, sizeof title, "profile: prefill %d tokens, %d thread%s", o->prompt, ru->nt,
           ru->nt > 1 ? "s" : "");
  bench_prof_print(title, bench_now() - t0, &L);
  bench_prof_start();
  t0 = bench_now();
  if (decode(ru, logits, o->decode) != MXL_OK) return fail("decode");
  snprintf(title, sizeof title, "profile: decode %d tokens, %d thread%s", o->decode, ru->nt,
           ru->nt > 1 ? "s" : "");
  bench_prof_print(title, bench_now() - t0, &L);
  return 0;
}

/* Opens thread count ti's runner and warms it up: maps the weights (page
 * faults) and sizes the scratch. */
static int open_warm(const options *o, mxl_model *model, runner *rs, int ti,
                     const int32_t *prompt, float *logits) {
  if (runner_open(&rs[ti], model, o->threads[ti], o, o->profile) != MXL_OK) return fail("engine");
  double t0 = bench_now();
  if (prefill(&rs[ti], prompt, o->prompt, o->chunk, logits) != MXL_OK ||
      decode(&rs[ti], logits, 2) != MXL_OK)
    return fail("warm-up");
  if (ti == 0) {
    bench_mem m = bench_memory();
    printf("first prefill + 2 tokens (%d thread%s, weights faulted in): %.2f s; RSS %.3f GB "
           "(anon %.3f, file %.3f)\n", rs[ti].nt, rs[ti].nt > 1 ? "s" : "",
           bench_now() - t0, gb(m.rss), gb(m.anon), gb(m.file));
  }
  return 0;
}

/* Repetition r at thread count ti: the limits (unless --no-limits), then a
 * timed prefill and decode. */
static int timed_rep(const options *o, mxl_model *model, runner *ru, int r, sample *x,
                     const int32_t *prompt, float *logits) {
  if (o->limits) bench_measure_limits(ru->nt, &x->L), mapped_bandwidth(model, ru->nt, x);
  bench_reset_peak();
  double t0 = bench_now(), c0 = bench_cpu_seconds();
  if (prefill(ru, prompt, o->prompt, o->chunk, logits) != MXL_OK) return fail("prefill");
  double t1 = bench_now(), c1 = bench_cpu_seconds();
  if (decode(ru, logits, o->decode) != MXL_OK) return fail("decode");
  x->prefill_s = t1 - t0, x->prefill_cpu = c1 - c0;
  x->decode_s = bench_now() - t1, x->decode_cpu = bench_cpu_seconds() - c1;
  x->hwm = bench_memory().hwm;
  printf("rep %d, %d thr: bw %.1f (by cpu %.1f), mapped weights %.1f (%.1f) GB/s, bf16 %.0f "
         "(by cpu %.0f) GFLOP/s | prefill %.2f tok/s (%.2f cores), decode %.2f tok/s (%.2f "
         "cores)\n", r + 1, ru->nt, x->L.bw, x->L.bw_cpu, x->map_bw, x->map_bw_cpu, x->L.bf16,
         x->L.bf16_cpu, o->prompt / x->prefill_s, x->prefill_cpu / x->prefill_s,
         o->decode / x->decode_s, x->decode_cpu / x->decode_s);
  fflush(stdout);
  return 0;
}

static int measure(const options *o, mxl_model *model) {
  const mxl_config *c = &model->config;
  const int V = model->w.vocab_rows;
  runner rs[MAX_THREADS];
  memset(rs, 0, sizeof rs);
  int32_t *prompt = malloc((size_t)o->prompt * sizeof *prompt);
  float *logits = malloc((size_t)V * sizeof *logits);
  sample(*s)[MAX_THREADS] = calloc(MAX_REPS, sizeof *s);
  if (!prompt || !logits || !s) return fprintf(stderr, "bench_forward: out of memory\n"), 1;
  uint64_t seed = 1;
  for (int i = 0; i < o->prompt; i++) prompt[i] = (int32_t)(bench_rand(&seed) % (uint64_t)V);
  print_work(c, V, o);

  int rc = 0;
  if (o->no_mmap && o->n_threads > 1) {
    /* Each engine holds its own copy of the weights, and two copies of a
     * real checkpoint do not fit: one thread count after the other. */
    printf("--no-mmap: one thread count after the other (one copy of the weights at a time)\n");
    for (int ti = 0; ti < o->n_threads && !rc; ti++) {
      rc = open_warm(o, model, rs, ti, prompt, logits);
      for (int r = 0; r < o->reps && !rc; r++)
        rc = timed_rep(o, model, &rs[ti], r, &s[r][ti], prompt, logits);
      if (!rc && o->profile) rc = profile(o, &rs[ti], prompt, logits);
      runner_close(&rs[ti]);
    }
    if (!rc) print_results(c, V, o, rs, s);
  } else {
    for (int ti = 0; ti < o->n_threads && !rc; ti++)
      rc = open_warm(o, model, rs, ti, prompt, logits);
    /* repetitions alternate the thread counts: a slow moment hits all */
    for (int r = 0; r < o->reps && !rc; r++)
      for (int ti = 0; ti < o->n_threads && !rc; ti++)
        rc = timed_rep(o, model, &rs[ti], r, &s[r][ti], prompt, logits);
    if (!rc) print_results(c, V, o, rs, s);
    for (int ti = 0; ti < o->n_threads && !rc && o->profile; ti++)
      rc = profile(o, &rs[ti], prompt, logits);
  }
  for (int ti = 0; ti < o->n_threads; ti++) runner_close(&rs[ti]);
  free(prompt), free(logits), free(s);
  return rc;
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
  printf("bench_forward: %s, threads", path);
  for (int i = 0; i < o.n_threads; i++) printf("%s%d", i ? "," : " ", o.threads[i]);
  printf(", prompt %d (chunks of %d), decode %d, %d repetitions\n", o.prompt, o.chunk, o.decode,
         o.reps);
  mxl_model *model = NULL;
  int rc = load_model(path, o.reps, &model) == MXL_OK ? measure(&o, model) : fail("load");
  mxl_model_close(model);
  if (tmp[0]) bench_remove_dir(tmp);
  return rc;
}
