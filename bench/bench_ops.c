/* bench_ops: the CPU backend's heavy ops at gpt-oss-20b shapes, against the
 * machine's limits measured in the same run.
 *
 *   build-cpu/bench_ops [--quick] [--threads 1,2] [--reps N] [--only NAME] [--tokens N]
 *
 * First the limits, per thread count: read bandwidth (best of 16 sums of
 * 128 MB slices of a 1 GiB array), the fp32 FMA peak and the bf16
 * dot-product peak (register-only loops). Then each op: decode shapes (one token) as GB/s of weights
 * streamed and % of the read bandwidth; prefill shapes (512 tokens) as
 * GFLOP/s and % of the bf16 peak; the reference backend as a baseline
 * where it is cheap (decode shapes). Each figure is the best of --reps runs
 * (the machine is shared: best-of is the least noisy statistic). Exact
 * mode (MXL_CPU_EXACT=1) is measured for the MXFP4 ops as well.
 * The prefill products run on the hand-written kernels and, in rows marked
 * "onednn", with every product on oneDNN (when built in): the per-host
 * choice of kernels/cpu/cpu_dnnl.c is read off these pairs.
 * --quick shrinks the prefill token count to 128 and skips the slow rows;
 * --tokens N sets it (e.g. 1024: 128 rows per expert, a training step's);
 * --only A,B measures only the rows whose name contains A or B. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/bf16.h"
#include "core/hugemem.h"
#include "kernels/cpu/cpu.h"
#include "kernels/mxfp4.h"
#include "kernels/ops.h"

/* gpt-oss-20b */
enum { H = 2880, I = 2880, E = 32, TOPK = 4, V = 201088, NH = 64, NKV = 8, HD = 64 };

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU time of the whole process (all threads). */
static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The last-level cache's size from sysfs (32 MB where unknown). */
static size_t llc_bytes(void) {
  size_t best = 0;
  for (int i = 0; i < 8; i++) {
    char path[96], text[32] = {0};
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    if (fgets(text, sizeof text, f)) {
      char *end = NULL;
      size_t v = (size_t)strtoull(text, &end, 10);
      v *= end && *end == 'M' ? (1u << 20) : end && *end == 'K' ? 1024u : 1u;
      if (v > best) best = v;
    }
    fclose(f);
  }
  return best ? best : (size_t)32 << 20;
}

/* Copies of a weight of `bytes` that a decode row rotates through so that
 * each is read again only after twice the last-level cache's size of other
 * weights: 8 copies of q_proj were enough for a 32 MB L3, not for the
 * 480 MB one of an Intel Xeon host, where the rows ran from L3 (above the
 * measured memory bandwidth). At most 64. */
static int llc_copies(size_t bytes) {
  size_t want = 2 * llc_bytes();
  size_t n = (want + bytes - 1) / bytes;
  return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

/* Model weights: on 2 MB pages, as the engine loads them under --no-mmap
 * (core/hugemem.h; 4 KB pages stream slower), never freed. */
static void *weights_alloc(size_t bytes) {
  void *p = NULL;
  if (mxl_huge_alloc(bytes ? bytes : 64, "bench_ops weights", &p) != MXL_OK) {
    fprintf(stderr, "bench_ops: %s\n", mxl_last_error());
    exit(1);
  }
  return p;
}

static void *xmalloc(size_t bytes) {
  void *p = NULL;
  if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) {
    fprintf(stderr, "bench_ops: out of memory (%zu bytes)\n", bytes);
    exit(1);
  }
  return p;
}

/* ------------------------------------------------------------------ random data */

static uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Uniform in [-a, a), a pure function of (seed, i): parallel fills. */
static float rnd(uint64_t seed, size_t i, float a) {
  return a * ((float)(mix(seed * 0x9E3779B97F4A7C15ull + i) >> 40) * 0x1p-23f - 1.0f);
}

static void fill_f32(float *x, size_t n, uint64_t seed, float a) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) x[i] = rnd(seed, i, a);
}

static void fill_bf16(uint16_t *x, size_t n, uint64_t seed, float a) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) x[i] = mxl_f32_to_bf16(rnd(seed, i, a));
}

/* Random nibbles; scale bytes 127 - [3..6] keep weights O(0.01..0.1). */
static void fill_mxfp4(uint8_t *blocks, uint8_t *scales, size_t n_blocks, uint64_t seed) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n_blocks; i++) {
    uint64_t r = mix(seed + i * 0x9E3779B97F4A7C15ull), r2 = mix(r);
    memcpy(blocks + i * 16, &r, 8);
    memcpy(blocks + i * 16 + 8, &r2, 8);
    scales[i] = (uint8_t)(127 - 3 - (int)(r % 4));
  }
}

/* ------------------------------------------------------------------ limits */

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1

__attribute__((target("avx512f"))) static float sum512(const float *p, size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i + 64 <= n; i += 64) {
    s0 = _mm512_add_ps(s0, _mm512_load_ps(p + i));
    s1 = _mm512_add_ps(s1, _mm512_load_ps(p + i + 16));
    s2 = _mm512_add_ps(s2, _mm512_load_ps(p + i + 32));
    s3 = _mm512_add_ps(s3, _mm512_load_ps(p + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

__attribute__((target("avx2"))) static float sum256(const float *p, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i + 32 <= n; i += 32) {
    s0 = _mm256_add_ps(s0, _mm256_load_ps(p + i));
    s1 = _mm256_add_ps(s1, _mm256_load_ps(p + i + 8));
    s2 = _mm256_add_ps(s2, _mm256_load_ps(p + i + 16));
    s3 = _mm256_add_ps(s3, _mm256_load_ps(p + i + 24));
  }
  float o[8];
  _mm256_storeu_ps(o, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  return o[0] + o[1] + o[2] + o[3] + o[4] + o[5] + o[6] + o[7];
}

/* Register-only loops: 24 independent accumulators cover the latency of
 * two instructions per cycle; the loops are unrolled explicitly (the build's
 * -O2 would otherwise keep the accumulator array in memory). */
#define UNROLL24 _Pragma("GCC unroll 24")
#define UNROLL12 _Pragma("GCC unroll 12") /* AVX2 has 16 registers */
__attribute__((target("avx512f,fma"))) static float fma512_loop(long iters) {
  __m512 a[24], x = _mm512_set1_ps(1.0000001f), y = _mm512_set1_ps(1e-7f);
  UNROLL24 for (int i = 0; i < 24; i++) a[i] = _mm512_set1_ps((float)i);
  for (long it = 0; it < iters; it++) {
    UNROLL24 for (int i = 0; i < 24; i++) a[i] = _mm512_fmadd_ps(a[i], x, y);
    __asm__ volatile("" : "+v"(x));
  }
  for (int i = 1; i < 24; i++) a[0] = _mm512_add_ps(a[0], a[i]);
  return _mm512_reduce_add_ps(a[0]);
}

__attribute__((target("avx2,fma"))) static float fma256_loop(long iters) {
  __m256 a[12], x = _mm256_set1_ps(1.0000001f), y = _mm256_set1_ps(1e-7f);
  UNROLL12 for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
  for (long it = 0; it < iters; it++) {
    UNROLL12 for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], x, y);
    __asm__ volatile("" : "+v"(x));
  }
  for (int i = 1; i < 12; i++) a[0] = _mm256_add_ps(a[0], a[i]);
  float o[8];
  _mm256_storeu_ps(o, a[0]);
  return o[0];
}

__attribute__((target("avx512f,avx512bf16"))) static float bf16_loop(long iters) {
  __m512 a[24];
  __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3400);
  UNROLL24 for (int i = 0; i < 24; i++) a[i] = _mm512_set1_ps((float)i);
  for (long it = 0; it < iters; it++) {
    UNROLL24 for (int i = 0; i < 24; i++) a[i] = _mm512_dpbf16_ps(a[i], x, y);
    __asm__ volatile("" : "+v"(x));
  }
  for (int i = 1; i < 24; i++) a[0] = _mm512_add_ps(a[0], a[i]);
  return _mm512_reduce_add_ps(a[0]);
}
#endif

static volatile float sink_f; /* keeps results alive */

/* A limit measured by wall time and by CPU time per thread (best of 3). */
typedef struct rate2 {
  double wall, cpu;
} rate2;

static void keep_best(rate2 *best, double work, double wall, double cpu) {
  if (work / wall > best->wall) best->wall = work / wall;
  if (cpu > 0 && work / cpu > best->cpu) best->cpu = work / cpu;
}

/* Best of many short sums (128 MB slices rotating through the 1 GiB array,
 * so none is in L3), on the time scale of the ops' own best-of runs: on a
 * shared machine a long measurement would average in other jobs' traffic
 * that the short op runs can escape. */
static rate2 read_bandwidth(int nt, const float *arr, size_t n) {
  rate2 best = {0, 0};
  size_t slice = (size_t)32 << 20; /* floats */
  if (slice > n) slice = n;
  size_t n_slices = n / slice;
  for (int rep = 0; rep < 16; rep++) {
    const float *base = arr + slice * ((size_t)rep % n_slices);
    double t = now(), c = cpu_now();
    float s = 0;
#pragma omp parallel num_threads(nt) reduction(+ : s)
    {
      int id = omp_get_thread_num();
      size_t chunk = slice / (size_t)nt / 64 * 64;
      const float *p = base + chunk * (size_t)id;
#ifdef HAVE_X86
      if (__builtin_cpu_supports("avx512f")) s += sum512(p, chunk);
      else if (__builtin_cpu_supports("avx2")) s += sum256(p, chunk);
      else
#endif
      {
        float acc[8] = {0};
        for (size_t i = 0; i + 8 <= chunk; i += 8)
          for (int l = 0; l < 8; l++) acc[l] += p[i + l];
        for (int l = 0; l < 8; l++) s += acc[l];
      }
    }
    t = now() - t, c = (cpu_now() - c) / nt;
    sink_f = s;
    keep_best(&best, (double)slice * sizeof(float) / 1e9, t, c);
  }
  return best;
}

/* GFLOP/s of `loop` on nt threads (flops_per_iter per thread-iteration). */
static rate2 peak(int nt, float (*loop)(long), double flops_per_iter) {
  long iters = 20000000;
  rate2 best = {0, 0};
  for (int rep = 0; rep < 3; rep++) {
    double t = now(), c = cpu_now();
    float s = 0;
#pragma omp parallel num_threads(nt) reduction(+ : s)
    s += loop(iters);
    t = now() - t, c = (cpu_now() - c) / nt;
    sink_f = s;
    keep_best(&best, (double)nt * (double)iters * flops_per_iter / 1e9, t, c);
  }
  return best;
}

typedef struct limits {
  double bw, fma, bf16;             /* GB/s, GFLOP/s, GFLOP/s (wall time) */
  double bw_cpu, fma_cpu, bf16_cpu; /* the same by CPU time per thread */
} limits;

static limits measure_limits(int nt, const float *arr, size_t n) {
  rate2 bw = read_bandwidth(nt, arr, n), fma = {0, 0}, bf = {0, 0};
#ifdef HAVE_X86
  if (__builtin_cpu_supports("avx512f")) fma = peak(nt, fma512_loop, 24 * 32);
  else if (__builtin_cpu_supports("avx2")) fma = peak(nt, fma256_loop, 12 * 16);
  if (__builtin_cpu_supports("avx512bf16")) bf = peak(nt, bf16_loop, 24 * 64);
#endif
  limits L = {bw.wall, fma.wall, bf.wall, bw.cpu, fma.cpu, bf.cpu};
  return L;
}

/* ------------------------------------------------------------------ op fixtures */

typedef struct mx_set {
  uint8_t *blocks, *scales;
  uint16_t *bias;
  mxl_mxfp4_weight w;
} mx_set;

static mx_set make_mx(int rows, int cols, uint64_t seed) {
  mx_set s;
  size_t nb = (size_t)E * rows * (cols / 32);
  s.blocks = weights_alloc(nb * 16);
  s.scales = weights_alloc(nb);
  s.bias = weights_alloc((size_t)E * rows * 2);
  fill_mxfp4(s.blocks, s.scales, nb, seed);
  fill_bf16(s.bias, (size_t)E * rows, seed + 1, 0.1f);
  s.w = (mxl_mxfp4_weight){s.blocks, s.scales, s.bias, (size_t)rows * (cols / 32) * 16,
                           (size_t)rows * (cols / 32), (size_t)rows, rows, cols, E,
                           MXL_MXFP4_BIAS};
  return s;
}

/* A routing plan for n tokens: decode tokens rotate through the experts
 * (`first` picks the set; the decode rows also rotate through copies of
 * the weights, llc_copies) so repeated runs do not find the weights in L3;
 * prefill tokens route uniformly at random. */
typedef struct plan_set {
  int32_t experts[4096 * TOPK], order[4096 * TOPK], slot[4096 * TOPK], offsets[E + 1];
  float weights[4096 * TOPK];
  mxl_moe_plan p;
} plan_set;

static void make_plan(plan_set *ps, int n, int first, uint64_t seed) {
  for (int t = 0; t < n; t++)
    for (int r = 0; r < TOPK; r++) {
      int e;
      if (n == 1) e = (first * TOPK + r) % E;
      else {
        int dup;
        do {
          e = (int)(mix(seed++) % E);
          dup = 0;
          for (int q = 0; q < r; q++) dup |= ps->experts[t * TOPK + q] == e;
        } while (dup);
      }
      ps->experts[t * TOPK + r] = e;
      ps->weights[t * TOPK + r] = 0.25f;
    }
  int m = n * TOPK, fill[E] = {0};
  memset(ps->offsets, 0, sizeof ps->offsets);
  for (int a = 0; a < m; a++) ps->offsets[ps->experts[a] + 1]++;
  for (int e = 0; e < E; e++) ps->offsets[e + 1] += ps->offsets[e];
  for (int a = 0; a < m; a++) {
    int e = ps->experts[a], i = ps->offsets[e] + fill[e]++;
    ps->order[i] = a;
    ps->slot[a] = i;
  }
  ps->p = (mxl_moe_plan){n, TOPK, E, ps->experts, ps->weights, ps->order, ps->slot,
                         ps->offsets, ps->offsets};
}

/* ------------------------------------------------------------------ the table */

static int g_reps = 3;
static const char *g_only = NULL; /* --only: rows whose name contains one of its fragments */

typedef struct row_ctx {
  const char *name;
  const char *shape;
  double bytes; /* weight bytes streamed per call (decode rows) */
  double flops; /* per call (prefill rows) */
} row_ctx;

static void print_header(void) {
  printf("\n%-26s %-22s %3s %10s %9s %9s %8s %9s %8s %7s\n", "op", "shape", "thr", "ms",
         "GB/s", "GFLOP/s", "%limit", "rate/cpu", "%lim/cpu", "x ref");
}

/* Prints one measured row: decode rows (bytes > 0) against bandwidth,
 * prefill rows against the bf16 peak. `cpu_sec` is the best process CPU
 * time divided by the thread count: rate/cpu is the rate the threads
 * reach while they run, which on a shared, busy machine is the steadier
 * figure (spin-waits at barriers count as running). */
static void print_row(const row_ctx *r, int nt, double sec, double cpu_sec, const limits *L,
                      double ref_sec) {
  double work = r->bytes > 0 ? r->bytes : r->flops;
  double rate = work / sec / 1e9, rate_cpu = cpu_sec > 0 ? work / cpu_sec / 1e9 : 0;
  double limit = r->bytes > 0 ? L->bw : L->bf16;
  double limit_cpu = r->bytes > 0 ? L->bw_cpu : L->bf16_cpu;
  double pct = limit > 0 ? 100 * rate / limit : 0;
  double pct_cpu = limit_cpu > 0 ? 100 * rate_cpu / limit_cpu : 0;
  char gb[16] = "-", gf[16] = "-", rs[16] = "-";
  if (r->bytes > 0) snprintf(gb, sizeof gb, "%.1f", rate);
  else snprintf(gf, sizeof gf, "%.1f", rate);
  if (ref_sec > 0) snprintf(rs, sizeof rs, "%.0f", ref_sec / sec);
  printf("%-26s %-22s %3d %10.3f %9s %9s %7.1f%% %9.1f %7.1f%% %7s\n", r->name, r->shape, nt,
         sec * 1e3, gb, gf, pct, rate_cpu, pct_cpu, rs);
  fflush(stdout);
}

typedef void (*op_fn)(mxl_backend *be, void *arg, int rep);

typedef struct timing {
  double wall, cpu; /* best wall seconds; best CPU seconds per thread */
} timing;

static timing best_time(mxl_backend *be, op_fn fn, void *arg, int reps) {
  timing best = {1e30, 1e30};
  fn(be, arg, 0); /* warm-up: scratch buffers, page faults */
  for (int r = 0; r < reps; r++) {
    double t = now(), c = cpu_now();
    fn(be, arg, r + 1);
    be->ops->sync(be);
    t = now() - t;
    c = (cpu_now() - c) / be->n_threads;
    if (t < best.wall) best.wall = t;
    if (c < best.cpu) best.cpu = c;
  }
  return best;
}

/* Times `fn` on `be` and prints the row. */
static void measure(const row_ctx *r, mxl_backend *be, op_fn fn, void *arg, int reps,
                    const limits *L, double ref_sec) {
  if (g_only) { /* comma-separated name fragments */
    int hit = 0;
    for (const char *p = g_only; *p && !hit;) {
      const char *e = strchr(p, ',');
      size_t len = e ? (size_t)(e - p) : strlen(p);
      for (const char *q = r->name; *q && !hit; q++) hit = len && !strncmp(q, p, len);
      p += len + (e != NULL);
    }
    if (!hit) return;
  }
  timing t = best_time(be, fn, arg, reps);
  print_row(r, be->n_threads, t.wall, t.cpu, L, ref_sec);
}

/* ------------------------------------------------------------------ ops */

typedef struct mx_arg {
  mx_set *w;
  plan_set *plans; /* [8] rotating sets for decode, [1] for prefill */
  int n_plans;
  float *x, *y;
  int n_w; /* copies of the weights at w, rotating after the plans (decode); 0: one */
} mx_arg;

static void run_mx(mxl_backend *be, void *arg, int rep) {
  mx_arg *a = arg;
  plan_set *ps = &a->plans[rep % a->n_plans];
  mx_set *w = a->n_w > 1 ? &a->w[rep / a->n_plans % a->n_w] : a->w;
  be->ops->mxfp4_matmul(be, a->y, a->x, &w->w, &ps->p);
}

static void run_mx_dx(mxl_backend *be, void *arg, int rep) {
  mx_arg *a = arg;
  plan_set *ps = &a->plans[rep % a->n_plans];
  be->ops->mxfp4_matmul_dx(be, a->x, a->y, &a->w->w, &ps->p);
}

typedef struct bf_arg {
  mxl_bf16_weight *w; /* [n_w] rotating copies */
  int n_w, n;
  float *x, *y;
} bf_arg;

static void run_bf(mxl_backend *be, void *arg, int rep) {
  bf_arg *a = arg;
  be->ops->matmul_bf16(be, a->y, a->x, &a->w[rep % a->n_w], a->n);
}

static void run_bf_dx(mxl_backend *be, void *arg, int rep) {
  bf_arg *a = arg;
  be->ops->matmul_bf16_dx(be, a->x, a->y, &a->w[rep % a->n_w], a->n);
}

typedef struct xent_arg {
  mxl_bf16_weight *w;
  int n;
  float *h, *loss, *dh, *weight;
  int32_t *targets;
} xent_arg;

static void run_xent(mxl_backend *be, void *arg, int rep) {
  (void)rep;
  xent_arg *a = arg;
  be->ops->unembed_xent(be, a->loss, a->dh, a->h, a->w, a->targets, a->weight, a->n);
}

typedef struct attn_arg {
  int n, window, bwd;
  float *q, *k, *v, *out, *lse, *dout, *dq, *dk, *dv;
  uint16_t *sinks;
  int32_t *pos, *seg;
} attn_arg;

static void run_attn(mxl_backend *be, void *arg, int rep) {
  (void)rep;
  attn_arg *a = arg;
  mxl_attn_mask m = {a->pos, a->seg, a->pos, a->seg, a->window};
  if (!a->bwd)
    be->ops->attention(be, a->out, a->lse, a->q, a->k, a->v, a->sinks, &m, a->n, a->n, NH, NKV,
                       HD, 0.125f);
  else
    be->ops->attention_bwd(be, a->dq, a->dk, a->dv, a->dout, a->out, a->lse, a->q, a->k, a->v,
                           a->sinks, &m, a->n, a->n, NH, NKV, HD, 0.125f);
}

/* One decoded token's attention over n_keys cached positions (full
 * causal: every key visible), the keys and values taken from one of
 * n_copies caches in turn (llc_copies, at most ATT_DECODE_COPIES) so that
 * they come from memory, as a decode step reads a layer's cache once per
 * token. */
enum { ATT_DECODE_COPIES = 64 };

typedef struct attn_decode_arg {
  int n_keys, n_copies;
  float *q, *out, *lse, *k[ATT_DECODE_COPIES], *v[ATT_DECODE_COPIES];
  uint16_t *sinks;
  int32_t *k_pos, *seg, q_pos;
} attn_decode_arg;

static void run_attn_decode(mxl_backend *be, void *arg, int rep) {
  attn_decode_arg *a = arg;
  mxl_attn_mask m = {&a->q_pos, a->seg, a->k_pos, a->seg, 0};
  int c = rep % a->n_copies;
  be->ops->attention(be, a->out, a->lse, a->q, a->k[c], a->v[c], a->sinks, &m, 1, a->n_keys, NH,
                     NKV, HD, 0.125f);
}

/* Allowed (query, key) pairs of a causal mask with a window. */
static double attn_pairs(int n, int window) {
  double s = 0;
  for (int i = 0; i < n; i++) s += window && i + 1 > window ? window : i + 1;
  return s;
}

typedef struct gemm_arg {
  int tA, tB, M, N, K;
  float *A, *B, *C;
} gemm_arg;

static void run_gemm(mxl_backend *be, void *arg, int rep) {
  (void)rep;
  gemm_arg *a = arg;
  be->ops->gemm_f32(be, a->tA, a->tB, a->M, a->N, a->K, 1.0f, a->A, a->tA ? a->M : a->K, a->B,
                    a->tB ? a->K : a->N, 0.0f, a->C, a->N);
}

/* The segmented LoRA op over every expert of a layer (one segment per
 * expert's rows), and the same products as per-expert gemm_f32 calls (what
 * the op replaces): forward y += s·(x·Aᵀ)·Bᵀ, backward dt, dB, dA, dx. */
typedef struct lora_arg {
  mxl_lora_seg segs[E];
  int in, out, bwd, per_call;
  float *x, *y, *t, *dx, *dt;
} lora_arg;

static void run_lora(mxl_backend *be, void *arg, int rep) {
  (void)rep;
  lora_arg *a = arg;
  if (!a->per_call) {
    if (!a->bwd) be->ops->lora(be, a->y, a->t, a->x, a->segs, E, a->in, a->out);
    else be->ops->lora_bwd(be, a->dx, a->y, a->x, a->t, a->segs, E, a->in, a->out);
    return;
  }
  for (int e = 0; e < E; e++) {
    const mxl_lora_seg *g = &a->segs[e];
    const float *x = a->x + (size_t)g->row0 * a->in;
    float *y = a->y + (size_t)g->row0 * a->out, *t = a->t + g->t_off, *dt = a->dt + g->t_off;
    int m = g->rows, R = g->rank, in = a->in, out = a->out;
    if (!a->bwd) {
      be->ops->gemm_f32(be, 0, 1, m, R, in, 1.0f, x, in, g->A, in, 0.0f, t, R);
      be->ops->gemm_f32(be, 0, 1, m, out, R, g->scale, t, R, g->B, R, 1.0f, y, out);
    } else { /* y holds dy here */
      be->ops->gemm_f32(be, 0, 0, m, R, out, g->scale, y, out, g->B, R, 0.0f, dt, R);
      be->ops->gemm_f32(be, 1, 0, out, R, m, g->scale, y, out, t, R, 1.0f, g->dB, R);
      be->ops->gemm_f32(be, 1, 0, R, in, m, 1.0f, dt, R, x, in, 1.0f, g->dA, in);
      be->ops->gemm_f32(be, 0, 0, m, in, R, 1.0f, dt, R, g->A, in, 1.0f,
                        a->dx + (size_t)g->row0 * in, in);
    }
  }
}

/* ------------------------------------------------------------------ main */

static int parse_threads(const char *s, int *out, int max) {
  int n = 0;
  while (*s && n < max) {
    out[n++] = atoi(s);
    while (*s && *s != ',') s++;
    if (*s == ',') s++;
  }
  return n;
}

int main(int argc, char **argv) {
  mxl_wait_passively(argv); /* as the mxlora binary does */
  int quick = 0, threads[4] = {1, 2}, n_threads = 2, tokens = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--quick")) quick = 1;
    else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) tokens = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      n_threads = parse_threads(argv[++i], threads, 4);
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc) g_reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--only") && i + 1 < argc) g_only = argv[++i];
    else {
      fprintf(stderr, "usage: bench_ops [--quick] [--threads 1,2] [--reps N] [--only NAME] "
                      "[--tokens N]\n");
      return 2;
    }
  }
  int n_pre = tokens > 0 ? tokens : quick ? 128 : 512;

  size_t n_arr = (size_t)1 << 28; /* 1 GiB of fp32 for the bandwidth test */
  float *arr = xmalloc(n_arr * sizeof *arr);
  fill_f32(arr, n_arr, 7, 1.0f);

  /* Weights: experts (20b layer), attention q projection, lm_head; the
   * decode rows rotate through enough copies (llc_copies) that they stream
   * from memory, not from the last-level cache. */
  size_t expert_bytes = (size_t)E * 2 * I * (H / 32) * 17;
  int n_up = llc_copies(expert_bytes), n_down = llc_copies(expert_bytes / 2);
  int NQ = llc_copies((size_t)NH * HD * H * 2);
  mx_set *gate_ups = xmalloc((size_t)n_up * sizeof *gate_ups);
  mx_set *downs = xmalloc((size_t)n_down * sizeof *downs);
  for (int c = 0; c < n_up; c++) gate_ups[c] = make_mx(2 * I, H, 11 + 100 * (uint64_t)c);
  for (int c = 0; c < n_down; c++) downs[c] = make_mx(H, I, 12 + 100 * (uint64_t)c);
  mx_set gate_up = gate_ups[0], down = downs[0];
  mxl_bf16_weight *wq = xmalloc((size_t)NQ * sizeof *wq), wo[1], lm;
  for (int c = 0; c < NQ; c++) {
    uint16_t *w = weights_alloc((size_t)NH * HD * H * 2), *b = xmalloc((size_t)NH * HD * 2);
    fill_bf16(w, (size_t)NH * HD * H, 20 + (uint64_t)c, 0.02f);
    fill_bf16(b, (size_t)NH * HD, 40 + (uint64_t)c, 0.1f);
    wq[c] = (mxl_bf16_weight){w, b, NH * HD, H};
  }
  {
    uint16_t *w = weights_alloc((size_t)H * NH * HD * 2);
    fill_bf16(w, (size_t)H * NH * HD, 60, 0.02f);
    wo[0] = (mxl_bf16_weight){w, NULL, H, NH * HD};
  }
  uint16_t *lm_w = weights_alloc((size_t)V * H * 2);
  fill_bf16(lm_w, (size_t)V * H, 70, 0.02f);
  lm = (mxl_bf16_weight){lm_w, NULL, V, H};

  plan_set *dec_plans = xmalloc(8 * sizeof *dec_plans), *pre_plan = xmalloc(sizeof *pre_plan);
  plan_set *few_plans = xmalloc(sizeof *few_plans);
  for (int s = 0; s < 8; s++) make_plan(&dec_plans[s], 1, s, 1);
  make_plan(pre_plan, n_pre, 0, 99);

  size_t act = (size_t)n_pre * TOPK * 2 * I; /* largest activation buffer */
  float *x = xmalloc(act * 4), *y = xmalloc(act * 4);
  fill_f32(x, act, 3, 1.0f);
  fill_f32(y, act, 4, 1.0f);

  mxl_backend *ref = NULL;
  if (mxl_backend_ref_create(&ref) != MXL_OK) ref = NULL;

  printf("bench_ops: gpt-oss-20b shapes (H=%d I=%d E=%d k=%d V=%d nh=%d nkv=%d d=%d), "
         "prefill n=%d, best of %d\n", H, I, E, TOPK, V, NH, NKV, HD, n_pre, g_reps);
  printf("decode rows rotate through copies of their weights, twice the %zu MB last-level "
         "cache: gate_up %d, down %d, q_proj %d\n", llc_bytes() >> 20, n_up, n_down, NQ);

  for (int ti = 0; ti < n_threads; ti++) {
    int nt = threads[ti];
    mxl_backend *be = NULL;
    if (mxl_backend_cpu_create(nt, &be) != MXL_OK) {
      fprintf(stderr, "bench_ops: %s\n", mxl_last_error());
      return 1;
    }
    int has_dnnl = mxl_backend_cpu_set_dnnl(be, 2) == 2;
    mxl_backend_cpu_set_dnnl(be, 0); /* rows name their path */
    limits L = measure_limits(nt, arr, n_arr);
    printf("\n== %d thread%s, isa %s: read bandwidth %.1f GB/s, fp32 FMA peak %.1f GFLOP/s, "
           "bf16 dot peak %.1f GFLOP/s\n   (by CPU time per thread: %.1f GB/s, %.1f, %.1f)\n", nt,
           nt > 1 ? "s" : "", mxl_backend_cpu_isa(be), L.bw, L.fma, L.bf16, L.bw_cpu, L.fma_cpu,
           L.bf16_cpu);
    /* A table without bf16 dot products (avx2, generic) widens bf16 operands
     * and multiplies them with fp32 FMAs: its products' limit is that peak.
     * (By the table's name: the attention query says 0 in exact mode too,
     * where avx512bf16 still multiplies with vdpbf16ps.) */
    if (strncmp(mxl_backend_cpu_isa(be), "avx512bf16", 10) != 0) {
      L.bf16 = L.fma, L.bf16_cpu = L.fma_cpu;
      printf("   (the %s table has no bf16 dot products: bf16 products against the fp32 FMA peak)\n",
             mxl_backend_cpu_isa(be));
    }
    print_header();
    char shape[64];

    /* -- MXFP4 experts, decode: one token, 4 experts */
    for (int which = 0; which < 2; which++) {
      mx_set *w = which ? downs : gate_ups;
      int N = (int)w->w.rows, K = (int)w->w.cols;
      double bytes = (double)TOPK * N * (K / 32) * 17;
      mx_arg a = {w, dec_plans, 8, x, y, which ? n_down : n_up};
      /* the host's GEMV, then exact mode, then the other GEMV (bf16 weights
       * where the integer kernel is the default) */
      int int_default = mxl_backend_cpu_int_decode(be);
      for (int v = 0; v < 3; v++) {
        if (v == 2 && mxl_backend_cpu_set_int_decode(be, !int_default) == int_default) break;
        mxl_backend_cpu_set_exact(be, v == 1);
        double ref_t = 0;
        if (ref && ti == 0 && v == 0 && !quick && !g_only) ref_t = best_time(ref, run_mx, &a, 1).wall;
        snprintf(shape, sizeof shape, "M=1x%d N=%d K=%d", TOPK, N, K);
        static const char *names[2][3] = {
            {"mxfp4 gate_up", "mxfp4 gate_up exact", NULL}, {"mxfp4 down", "mxfp4 down exact", NULL}};
        char other[48];
        snprintf(other, sizeof other, "mxfp4 %s %s", which ? "down" : "gate_up",
                 int_default ? "bf16" : "int");
        row_ctx r = {v == 2 ? other : names[which][v], shape, bytes, 0};
        measure(&r, be, run_mx, &a, g_reps * 3, &L, ref_t);
      }
      mxl_backend_cpu_set_exact(be, 0);
      mxl_backend_cpu_set_int_decode(be, int_default);
    }
    /* -- MXFP4 experts, few rows per expert (short prefills, batched
     * decode): 4, 16 and 64 tokens routed at random, about 0.5, 2 and 8
     * rows per expert; GB/s of the experts' weights the call touches */
    for (int which = 0; which < 2; which++) {
      mx_set *w = which ? &down : &gate_up;
      int N = (int)w->w.rows, K = (int)w->w.cols, toks[3] = {4, 16, 64};
      for (int t = 0; t < 3; t++) {
        make_plan(few_plans, toks[t], 0, 7 + (uint64_t)t);
        int used = 0;
        for (int e = 0; e < E; e++) used += few_plans->offsets[e + 1] > few_plans->offsets[e];
        mx_arg a = {w, few_plans, 1, x, y};
        snprintf(shape, sizeof shape, "M=%dx%d/%d N=%d", toks[t], TOPK, used, N);
        row_ctx r = {which ? "mxfp4 few down" : "mxfp4 few gate_up", shape,
                     (double)used * N * (K / 32) * 17, 0};
        measure(&r, be, run_mx, &a, g_reps, &L, 0);
      }
    }
    /* -- MXFP4 experts, prefill: n_pre tokens x 4 experts over 32 */
    for (int which = 0; which < 2; which++) {
      mx_set *w = which ? &down : &gate_up;
      int N = (int)w->w.rows, K = (int)w->w.cols, m = n_pre * TOPK;
      mx_arg a = {w, pre_plan, 1, x, y};
      snprintf(shape, sizeof shape, "M=%d N=%d K=%d", m, N, K);
      for (int exact = 0; exact < 2; exact++) {
        mxl_backend_cpu_set_exact(be, exact);
        row_ctx r = {which ? (exact ? "mxfp4 down exact" : "mxfp4 down")
                           : (exact ? "mxfp4 gate_up exact" : "mxfp4 gate_up"),
                     shape, 0, 2.0 * m * N * K};
        measure(&r, be, run_mx, &a, g_reps, &L, 0);
      }
      mxl_backend_cpu_set_exact(be, 0);
      row_ctx rd = {which ? "mxfp4_dx down" : "mxfp4_dx gate_up", shape, 0, 2.0 * m * N * K};
      measure(&rd, be, run_mx_dx, &a, g_reps, &L, 0);
      if (has_dnnl) {
        mxl_backend_cpu_set_dnnl(be, 2);
        row_ctx rn = {which ? "mxfp4 down onednn" : "mxfp4 gate_up onednn", shape, 0,
                      2.0 * m * N * K};
        measure(&rn, be, run_mx, &a, g_reps, &L, 0);
        row_ctx rnd = {which ? "mxfp4_dx down onednn" : "mxfp4_dx gate_up onednn", shape, 0,
                       2.0 * m * N * K};
        measure(&rnd, be, run_mx_dx, &a, g_reps, &L, 0);
        mxl_backend_cpu_set_dnnl(be, 0);
      }
    }
    /* -- bf16 matmuls */
    {
      bf_arg a = {wq, NQ, 1, x, y};
      double ref_t = ref && ti == 0 && !quick && !g_only ? best_time(ref, run_bf, &a, 1).wall : 0;
      row_ctx r = {"bf16 q_proj", "M=1 N=4096 K=2880", (double)NH * HD * H * 2, 0};
      measure(&r, be, run_bf, &a, g_reps * 3, &L, ref_t);
      bf_arg l = {&lm, 1, 1, x, y};
      row_ctx rl = {"bf16 lm_head", "M=1 N=201088 K=2880", (double)V * H * 2, 0};
      measure(&rl, be, run_bf, &l, g_reps, &L, 0);
      for (int f = 0; f < 5; f++) { /* few rows: short prefills, batched decode */
        int rows[5] = {2, 4, 16, 32, 64};
        bf_arg fa = {wq, NQ, rows[f], x, y};
        snprintf(shape, sizeof shape, "M=%d N=4096 K=2880", rows[f]);
        row_ctx rf = {"bf16 few q_proj", shape, (double)NH * HD * H * 2, 0};
        measure(&rf, be, run_bf, &fa, g_reps * 3, &L, 0);
      }
      bf_arg p = {wq, 1, n_pre, x, y};
      snprintf(shape, sizeof shape, "M=%d N=4096 K=2880", n_pre);
      row_ctx rp = {"bf16 q_proj", shape, 0, 2.0 * n_pre * NH * HD * H};
      measure(&rp, be, run_bf, &p, g_reps, &L, 0);
      row_ctx rpd = {"bf16_dx q_proj", shape, 0, 2.0 * n_pre * NH * HD * H};
      measure(&rpd, be, run_bf_dx, &p, g_reps, &L, 0);
      bf_arg o = {wo, 1, n_pre, x, y};
      snprintf(shape, sizeof shape, "M=%d N=2880 K=4096", n_pre);
      row_ctx ro = {"bf16 o_proj", shape, 0, 2.0 * n_pre * NH * HD * H};
      measure(&ro, be, run_bf, &o, g_reps, &L, 0);
      if (has_dnnl) {
        mxl_backend_cpu_set_dnnl(be, 2);
        snprintf(shape, sizeof shape, "M=%d N=4096 K=2880", n_pre);
        row_ctx rn = {"bf16 q_proj onednn", shape, 0, 2.0 * n_pre * NH * HD * H};
        measure(&rn, be, run_bf, &p, g_reps, &L, 0);
        row_ctx rnd = {"bf16_dx q_proj onednn", shape, 0, 2.0 * n_pre * NH * HD * H};
        measure(&rnd, be, run_bf_dx, &p, g_reps, &L, 0);
        bf_arg on = {wo, 1, n_pre, x, y};
        snprintf(shape, sizeof shape, "M=%d N=2880 K=4096", n_pre);
        row_ctx ron = {"bf16 o_proj onednn", shape, 0, 2.0 * n_pre * NH * HD * H};
        measure(&ron, be, run_bf, &on, g_reps, &L, 0);
        for (int f = 0; f < 2; f++) { /* where the dense mode starts (MXL_CPU_DNNL_MIN_ROWS) */
          int rows[2] = {32, 64};
          bf_arg fa = {wq, NQ, rows[f], x, y};
          snprintf(shape, sizeof shape, "M=%d N=4096 K=2880", rows[f]);
          row_ctx rf = {"bf16 few q_proj onednn", shape, (double)NH * HD * H * 2, 0};
          measure(&rf, be, run_bf, &fa, g_reps * 3, &L, 0);
        }
        mxl_backend_cpu_set_dnnl(be, 0);
      }
    }
    /* -- fused unembedding + cross-entropy: the work counted is the two
     *    products a loss with dh needs (logits, and softmax·W for dh) */
    {
      int n = quick ? 64 : 256;
      float *loss = xmalloc((size_t)n * 4), *dh = xmalloc((size_t)n * H * 4),
            *wt = xmalloc((size_t)n * 4);
      int32_t *tg = xmalloc((size_t)n * 4);
      for (int t = 0; t < n; t++) wt[t] = 1.0f, tg[t] = (int32_t)(mix((uint64_t)t) % V);
      xent_arg a = {&lm, n, x, loss, dh, wt, tg};
      snprintf(shape, sizeof shape, "n=%d V=%d H=%d", n, V, H);
      row_ctx r = {"unembed_xent (+dh)", shape, 0, 2 * 2.0 * n * (double)V * H};
      measure(&r, be, run_xent, &a, 1, &L, 0);
      if (has_dnnl) {
        mxl_backend_cpu_set_dnnl(be, 2);
        row_ctx rn = {"unembed_xent onednn", shape, 0, 2 * 2.0 * n * (double)V * H};
        measure(&rn, be, run_xent, &a, 1, &L, 0);
        mxl_backend_cpu_set_dnnl(be, 0);
      }
      free(loss), free(dh), free(wt), free(tg);
    }
    /* -- attention, prefill n_pre tokens, full causal and window 128 */
    {
      int n = n_pre;
      size_t nq = (size_t)n * NH * HD, nk = (size_t)n * NKV * HD;
      attn_arg a = {n, 0, 0, xmalloc(nq * 4), xmalloc(nk * 4), xmalloc(nk * 4), xmalloc(nq * 4),
                    xmalloc((size_t)n * NH * 4), xmalloc(nq * 4), xmalloc(nq * 4),
                    xmalloc(nk * 4), xmalloc(nk * 4), xmalloc(NH * 2), xmalloc((size_t)n * 4),
                    xmalloc((size_t)n * 4)};
      fill_f32(a.q, nq, 31, 1.0f), fill_f32(a.k, nk, 32, 1.0f), fill_f32(a.v, nk, 33, 1.0f);
      fill_f32(a.dout, nq, 34, 1.0f), fill_bf16(a.sinks, NH, 35, 1.0f);
      for (int i = 0; i < n; i++) a.pos[i] = i, a.seg[i] = 0;
      limits La = L;
      La.bf16 = L.fma, La.bf16_cpu = L.fma_cpu; /* fp32 op: against the FMA peak */
      /* the host's choice of operands (the plain rows), then the other
       * where there are bf16 dot products (rows named by their operands):
       * the pair behind the backend's measured choice */
      int host_bf16 = mxl_backend_cpu_bf16_attention(be);
      for (int other = 0; other < 2; other++) {
        if (other && mxl_backend_cpu_set_bf16_attention(be, !host_bf16) == host_bf16) break;
        for (int win = 0; win <= 128; win += 128) {
          a.window = win;
          double pairs = attn_pairs(n, win) * NH;
          snprintf(shape, sizeof shape, "n=%d window=%d", n, win);
          a.bwd = 0;
          row_ctx r = {!other ? "attention" : host_bf16 ? "attention fp32" : "attention bf16",
                       shape, 0, 4.0 * HD * pairs};
          measure(&r, be, run_attn, &a, g_reps, &La, 0);
          a.bwd = 1;
          memset(a.dq, 0, nq * 4), memset(a.dk, 0, nk * 4), memset(a.dv, 0, nk * 4);
          row_ctx rb = {!other      ? "attention_bwd"
                        : host_bf16 ? "attention_bwd fp32"
                                    : "attention_bwd bf16",
                        shape, 0, 8.0 * HD * pairs};
          measure(&rb, be, run_attn, &a, g_reps, &La, 0);
        }
      }
      mxl_backend_cpu_set_bf16_attention(be, host_bf16);
      free(a.q), free(a.k), free(a.v), free(a.out), free(a.lse), free(a.dout), free(a.dq);
      free(a.dk), free(a.dv), free(a.sinks), free(a.pos), free(a.seg);
    }
    /* -- attention of one decoded token over a 4096-position cache: the
     *    cache's bytes against the read bandwidth (a lever for long
     *    contexts: 12 of gpt-oss-20b's 24 layers read every position) */
    {
      enum { KEYS = 4096 };
      size_t kn = (size_t)KEYS * NKV * HD;
      attn_decode_arg a = {KEYS, llc_copies(2 * kn * 4), xmalloc(NH * HD * 4),
                           xmalloc(NH * HD * 4), xmalloc(NH * 4)};
      for (int c = 0; c < a.n_copies; c++) {
        a.k[c] = xmalloc(kn * 4), a.v[c] = xmalloc(kn * 4);
        fill_f32(a.k[c], kn, 40 + c, 1.0f), fill_f32(a.v[c], kn, 50 + c, 1.0f);
      }
      fill_f32(a.q, NH * HD, 36, 1.0f);
      a.sinks = xmalloc(NH * 2), fill_bf16(a.sinks, NH, 37, 1.0f);
      a.k_pos = xmalloc(KEYS * 4), a.seg = xmalloc(KEYS * 4), a.q_pos = KEYS - 1;
      for (int i = 0; i < KEYS; i++) a.k_pos[i] = i, a.seg[i] = 0;
      row_ctx r = {"attention decode", "nq=1 nk=4096", 2.0 * kn * 4, 0};
      measure(&r, be, run_attn_decode, &a, g_reps * 3, &L, 0);
      for (int c = 0; c < a.n_copies; c++) free(a.k[c]), free(a.v[c]);
      free(a.q), free(a.out), free(a.lse), free(a.sinks), free(a.k_pos), free(a.seg);
    }
    /* -- LoRA gemm_f32, rank 16: the six products of one adapted matrix
     * (forward x·Aᵀ, z·Bᵀ; backward dB = dyᵀ·z, dz = dy·B, dA = dzᵀ·x,
     * dx = dz·A) for one expert's rows (m = n·k/E, gate_up: in H, out 2I)
     * and for the q projection over all tokens */
    {
      int R = 16, sizes[2][3] = {{n_pre * TOPK / E, H, 2 * I}, {n_pre, H, NH * HD}};
      const char *what[2] = {"expert", "q"};
      for (int sz = 0; sz < 2; sz++) {
        int m = sizes[sz][0], in = sizes[sz][1], out = sizes[sz][2];
        gemm_arg shapes[6] = {
            {0, 1, m, R, in, x, y, x + (size_t)m * in},      /* z = x·Aᵀ */
            {0, 1, m, out, R, x, y, x + (size_t)m * in},     /* y += z·Bᵀ */
            {1, 0, out, R, m, x, y, x + (size_t)m * out},    /* dB = dyᵀ·z */
            {0, 0, m, R, out, x, y, x + (size_t)m * out},    /* dz = dy·B */
            {1, 0, R, in, m, x, y, x + (size_t)m * in},      /* dA = dzᵀ·x */
            {0, 0, m, in, R, x, y, x + (size_t)m * in},      /* dx = dz·A */
        };
        const char *names[6] = {"x*A^T", "z*B^T", "dB=dy^T*z", "dz=dy*B", "dA=dz^T*x", "dx=dz*A"};
        for (int s = 0; s < 6; s++) {
          char name[40];
          snprintf(name, sizeof name, "gemm_f32 %s %s", what[sz], names[s]);
          snprintf(shape, sizeof shape, "M=%d N=%d K=%d%s%s", shapes[s].M, shapes[s].N,
                   shapes[s].K, shapes[s].tA ? " tA" : "", shapes[s].tB ? " tB" : "");
          row_ctx r = {name, shape, 0, 2.0 * shapes[s].M * shapes[s].N * shapes[s].K};
          limits Lf = L;
          Lf.bf16 = L.fma, Lf.bf16_cpu = L.fma_cpu; /* fp32 op: against the FMA peak */
          measure(&r, be, run_gemm, &shapes[s], g_reps * (sz ? 1 : 4), &Lf, 0);
        }
      }
    }
    /* -- segmented LoRA, rank 16, one segment per expert (gate_up: in H,
     * out 2I) over n_pre·k grouped rows, against per-expert gemm_f32 calls */
    {
      int R = 16, in = H, out = 2 * I, m = n_pre * TOPK;
      lora_arg la;
      memset(&la, 0, sizeof la);
      la.in = in, la.out = out, la.x = x, la.y = y;
      la.t = xmalloc((size_t)m * R * 4), la.dt = xmalloc((size_t)m * R * 4);
      la.dx = xmalloc((size_t)m * in * 4);
      float *ab = xmalloc((size_t)E * R * (in + out) * 4 * 2);
      fill_f32(ab, (size_t)E * R * (in + out), 80, 0.02f);
      memset(ab + (size_t)E * R * (in + out), 0, (size_t)E * R * (in + out) * 4);
      for (int e = 0; e < E; e++) {
        float *A = ab + (size_t)e * R * (in + out), *dA = A + (size_t)E * R * (in + out);
        la.segs[e] = (mxl_lora_seg){e * (m / E), m / E, R, 2.0f, A, A + (size_t)R * in,
                                    dA, dA + (size_t)R * in, (int64_t)e * (m / E) * R};
      }
      snprintf(shape, sizeof shape, "M=%dx%d in=%d out=%d", E, m / E, in, out);
      limits Lf = L;
      Lf.bf16 = L.fma, Lf.bf16_cpu = L.fma_cpu; /* fp32 op: against the FMA peak */
      const char *names[2][2] = {{"lora expert op", "lora_bwd expert op"},
                                 {"lora expert gemm_f32s", "lora_bwd expert gemm_f32s"}};
      for (int bwd = 0; bwd < 2; bwd++)
        for (int per_call = 0; per_call < 2; per_call++) {
          la.bwd = bwd, la.per_call = per_call;
          row_ctx r = {names[per_call][bwd], shape, 0,
                       (bwd ? 4.0 : 2.0) * m * R * ((double)in + out)};
          measure(&r, be, run_lora, &la, g_reps, &Lf, 0);
        }
      free(la.t), free(la.dt), free(la.dx), free(ab);
    }
    mxl_backend_destroy(be);
  }
  printf("\n%%limit: decode rows (GB/s) against the read bandwidth, prefill rows against the "
         "bf16 dot peak (attention, gemm_f32 and tables without bf16 dot products: the fp32 "
         "FMA peak), both by wall time; rate/cpu and "
         "%%lim/cpu: the same from CPU time per thread (steadier on a shared machine); x ref: "
         "speed-up over the reference backend (1 thread table only).\n");
  if (ref) mxl_backend_destroy(ref);
  return 0;
}
