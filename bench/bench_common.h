/* Shared by the model-level benchmarks (bench_forward, bench_train): the
 * machine's limits measured in the same run, memory figures, statistics
 * over repeated runs, and a temporary `mxlora tiny` checkpoint.
 *
 * Limits (the approach of bench_ops.c): read bandwidth = a sum over a
 * 1 GiB array on nt threads; fp32 FMA and bf16 dot-product peaks =
 * register-only loops with 24 independent accumulators. Each is the best of
 * three tries (the machine is shared: best-of is the least noisy figure of
 * what the hardware can do). The array is mapped and unmapped around the
 * measurement, so it does not stay in the process's memory.
 *
 * Peak RSS is the kernel's VmHWM; bench_reset_peak() restarts it (writes 5
 * to /proc/self/clear_refs), so a phase's peak can be read on its own.
 *
 * Header-only: every function is static inline. */
#ifndef MXL_BENCH_COMMON_H
#define MXL_BENCH_COMMON_H

#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "mxlora.h"

static inline double bench_now(void) { return mxl_now_seconds(); }

/* CPU seconds (user + system) this process has used, all threads. On a
 * shared machine cpu / wall says how many cores a pass really had: work
 * rates from CPU time (n_threads·work / cpu) estimate what the pass would
 * do on otherwise idle cores (an underestimate: OpenMP threads that spin
 * while waiting for a descheduled sibling count as busy). */
static inline double bench_cpu_seconds(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
         (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

/* ------------------------------------------------------------------ limits */

#if defined(__x86_64__)
#include <immintrin.h>
#define BENCH_X86 1

__attribute__((target("avx512f"))) static inline float bench_sum512(const float *p, size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i + 64 <= n; i += 64) {
    s0 = _mm512_add_ps(s0, _mm512_load_ps(p + i));
    s1 = _mm512_add_ps(s1, _mm512_load_ps(p + i + 16));
    s2 = _mm512_add_ps(s2, _mm512_load_ps(p + i + 32));
    s3 = _mm512_add_ps(s3, _mm512_load_ps(p + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

__attribute__((target("avx2"))) static inline float bench_sum256(const float *p, size_t n) {
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

/* 24 accumulators cover the FMA latency at two instructions per cycle; the
 * empty asm keeps the compiler from folding the loop. */
#define BENCH_UNROLL24 _Pragma("GCC unroll 24")
#define BENCH_UNROLL12 _Pragma("GCC unroll 12")
__attribute__((target("avx512f,fma"))) static inline float bench_fma512(long iters) {
  __m512 a[24], x = _mm512_set1_ps(1.0000001f), y = _mm512_set1_ps(1e-7f);
  BENCH_UNROLL24 for (int i = 0; i < 24; i++) a[i] = _mm512_set1_ps((float)i);
  for (long it = 0; it < iters; it++) {
    BENCH_UNROLL24 for (int i = 0; i < 24; i++) a[i] = _mm512_fmadd_ps(a[i], x, y);
    __asm__ volatile("" : "+v"(x));
  }
  for (int i = 1; i < 24; i++) a[0] = _mm512_add_ps(a[0], a[i]);
  return _mm512_reduce_add_ps(a[0]);
}

__attribute__((target("avx2,fma"))) static inline float bench_fma256(long iters) {
  __m256 a[12], x = _mm256_set1_ps(1.0000001f), y = _mm256_set1_ps(1e-7f);
  BENCH_UNROLL12 for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
  for (long it = 0; it < iters; it++) {
    BENCH_UNROLL12 for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], x, y);
    __asm__ volatile("" : "+v"(x));
  }
  for (int i = 1; i < 12; i++) a[0] = _mm256_add_ps(a[0], a[i]);
  float o[8];
  _mm256_storeu_ps(o, a[0]);
  return o[0];
}

__attribute__((target("avx512f,avx512bf16"))) static inline float bench_bf16dot(long iters) {
  __m512 a[24];
  __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3400);
  BENCH_UNROLL24 for (int i = 0; i < 24; i++) a[i] = _mm512_set1_ps((float)i);
  for (long it = 0; it < iters; it++) {
    BENCH_UNROLL24 for (int i = 0; i < 24; i++) a[i] = _mm512_dpbf16_ps(a[i], x, y);
    __asm__ volatile("" : "+v"(x));
  }
  for (int i = 1; i < 24; i++) a[0] = _mm512_add_ps(a[0], a[i]);
  return _mm512_reduce_add_ps(a[0]);
}
#endif

static volatile float bench_sink; /* keeps results alive */

typedef struct bench_limits {
  double bw;   /* GB/s, read bandwidth */
  double fma;  /* GFLOP/s, fp32 FMA peak (0: not measured) */
  double bf16; /* GFLOP/s, bf16 dot-product peak; the fp32 peak where there is no bf16 */
  /* The peaks from each thread's CPU time (Σ over threads of its FLOPs ÷
   * its CPU seconds): what nt threads do when each has a core to itself,
   * whatever the machine's load. Compare CPU-time rates of the model with
   * these. */
  double fma_cpu, bf16_cpu;
  /* The bandwidth the same way (Σ over threads of its bytes ÷ its CPU
   * seconds): a thread's streaming rate while it runs; it overstates the
   * shared bus when threads that were descheduled at different times each
   * had it alone. */
  double bw_cpu;
} bench_limits;

static inline double bench_thread_cpu(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* GB/s of a sum over arr [n] on nt threads, from wall time and (*by_cpu)
 * from each thread's CPU time. */
static inline double bench_read_bandwidth(int nt, const float *arr, size_t n, double *by_cpu) {
  double best = 0;
  *by_cpu = 0;
  for (int rep = 0; rep < 3; rep++) {
    double t = bench_now(), rate_cpu = 0;
    float s = 0;
#pragma omp parallel num_threads(nt) reduction(+ : s) reduction(+ : rate_cpu)
    {
      double c = bench_thread_cpu();
      size_t chunk = n / (size_t)nt / 64 * 64;
      const float *p = arr + chunk * (size_t)omp_get_thread_num();
#ifdef BENCH_X86
      if (__builtin_cpu_supports("avx512f")) s += bench_sum512(p, chunk);
      else if (__builtin_cpu_supports("avx2")) s += bench_sum256(p, chunk);
      else
#endif
      {
        float acc[8] = {0};
        for (size_t i = 0; i + 8 <= chunk; i += 8)
          for (int l = 0; l < 8; l++) acc[l] += p[i + l];
        for (int l = 0; l < 8; l++) s += acc[l];
      }
      rate_cpu += (double)chunk * sizeof(float) / (bench_thread_cpu() - c) / 1e9;
    }
    t = bench_now() - t;
    bench_sink = s;
    double bw = (double)n * sizeof(float) / t / 1e9;
    if (bw > best) best = bw;
    if (rate_cpu > *by_cpu) *by_cpu = rate_cpu;
  }
  return best;
}

/* GFLOP/s of `loop` on nt threads (flops_per_iter per thread-iteration),
 * from wall time and (*by_cpu) from each thread's CPU time. */
static inline double bench_peak(int nt, float (*loop)(long), double flops_per_iter,
                                double *by_cpu) {
  const long iters = 10000000;
  double best = 0;
  *by_cpu = 0;
  for (int rep = 0; rep < 3; rep++) {
    double t = bench_now(), rate_cpu = 0;
    float s = 0;
#pragma omp parallel num_threads(nt) reduction(+ : s) reduction(+ : rate_cpu)
    {
      double c = bench_thread_cpu();
      s += loop(iters);
      rate_cpu += (double)iters * flops_per_iter / (bench_thread_cpu() - c) / 1e9;
    }
    t = bench_now() - t;
    bench_sink = s;
    double g = (double)nt * (double)iters * flops_per_iter / t / 1e9;
    if (g > best) best = g;
    if (rate_cpu > *by_cpu) *by_cpu = rate_cpu;
  }
  return best;
}

/* Measures the limits on nt threads. Returns 0 when the 1 GiB array cannot
 * be mapped. */
static inline int bench_measure_limits(int nt, bench_limits *L) {
  const size_t n = (size_t)1 << 28, bytes = n * sizeof(float);
  memset(L, 0, sizeof *L);
  float *arr = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (arr == MAP_FAILED) return 0;
  madvise(arr, bytes, MADV_HUGEPAGE); /* fewer page faults while filling (best effort) */
#pragma omp parallel for num_threads(nt) schedule(static)
  for (size_t i = 0; i < n; i++) arr[i] = (float)(i & 1023) * 1e-3f;
  L->bw = bench_read_bandwidth(nt, arr, n, &L->bw_cpu);
  munmap(arr, bytes);
#ifdef BENCH_X86
  if (__builtin_cpu_supports("avx512f"))
    L->fma = bench_peak(nt, bench_fma512, 24 * 32, &L->fma_cpu);
  else if (__builtin_cpu_supports("avx2"))
    L->fma = bench_peak(nt, bench_fma256, 12 * 16, &L->fma_cpu);
  if (__builtin_cpu_supports("avx512bf16"))
    L->bf16 = bench_peak(nt, bench_bf16dot, 24 * 64, &L->bf16_cpu);
#endif
  if (L->bf16 == 0) L->bf16 = L->fma, L->bf16_cpu = L->fma_cpu;
  return 1;
}

/* ------------------------------------------------------------------ memory */

typedef struct bench_mem {
  double hwm, rss, anon, file; /* bytes: VmHWM, VmRSS, RssAnon, RssFile */
} bench_mem;

static inline bench_mem bench_memory(void) {
  bench_mem m = {0, 0, 0, 0};
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return m;
  char line[256];
  while (fgets(line, sizeof line, f)) {
    double kb = 0;
    if (sscanf(line, "VmHWM: %lf", &kb) == 1) m.hwm = kb * 1024;
    else if (sscanf(line, "VmRSS: %lf", &kb) == 1) m.rss = kb * 1024;
    else if (sscanf(line, "RssAnon: %lf", &kb) == 1) m.anon = kb * 1024;
    else if (sscanf(line, "RssFile: %lf", &kb) == 1) m.file = kb * 1024;
  }
  fclose(f);
  return m;
}

/* Restarts VmHWM at the current RSS. Returns 0 when the kernel refuses. */
static inline int bench_reset_peak(void) {
  FILE *f = fopen("/proc/self/clear_refs", "w");
  if (!f) return 0;
  int ok = fputs("5", f) >= 0;
  return fclose(f) == 0 && ok;
}

/* ------------------------------------------------------------------ statistics */

typedef struct bench_stat {
  double med, lo, hi; /* median, minimum, maximum */
} bench_stat;

static inline int bench_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static inline bench_stat bench_stats(const double *v, int n) {
  bench_stat s = {0, 0, 0};
  if (n <= 0) return s;
  double *t = malloc((size_t)n * sizeof *t);
  if (!t) return s;
  memcpy(t, v, (size_t)n * sizeof *t);
  qsort(t, (size_t)n, sizeof *t, bench_cmp_double);
  s.med = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
  s.lo = t[0];
  s.hi = t[n - 1];
  free(t);
  return s;
}

/* "12.3 (11.8-12.9)" (ASCII: columns are padded by bytes) */
static inline const char *bench_fmt(char *buf, size_t size, bench_stat s, int decimals) {
  snprintf(buf, size, "%.*f (%.*f-%.*f)", decimals, s.med, decimals, s.lo, decimals, s.hi);
  return buf;
}

/* SplitMix64: deterministic random numbers for benchmark inputs. */
static inline uint64_t bench_rand(uint64_t *state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* "1,2" -> {1, 2}; returns the count (at most max). */
static inline int bench_parse_list(const char *s, int *out, int max) {
  int n = 0;
  while (*s && n < max) {
    out[n++] = atoi(s);
    while (*s && *s != ',') s++;
    if (*s == ',') s++;
  }
  return n;
}

/* ------------------------------------------------------------------ checkpoint */

/* Writes `preset` (HF layout only) into a fresh folder under $TMPDIR or
 * /tmp; dir receives its path. Returns 0 on failure (message on stderr). */
static inline int bench_write_preset(const char *preset, char *dir, size_t size) {
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, size, "%s/mxl_bench_XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 0;
  }
  mxl_tiny_options opt = {0};
  opt.preset = preset;
  opt.layout = "hf";
  if (mxl_tiny_write(dir, &opt, NULL, NULL) != MXL_OK) {
    fprintf(stderr, "writing the %s preset: %s\n", preset, mxl_last_error());
    return 0;
  }
  return 1;
}

static inline void bench_remove_dir(const char *dir) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

#endif
