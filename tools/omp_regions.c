/* Counts the OpenMP parallel regions a program opens, per call site, for
 * tools/omp_regions.sh (LD_PRELOAD; GCC's libgomp entry points only).
 *
 * Every `#pragma omp parallel` compiles to a call of GOMP_parallel (or a
 * GOMP_parallel_loop_* variant for `parallel for` with a non-static
 * schedule); its third argument is the team size, 1 when an if() clause
 * was false. A team of one wakes nobody; a larger team wakes sleeping
 * threads. At exit, one line per call site goes to $OMP_REGIONS_OUT:
 *   <object> <offset in object> <teams of 1> <larger teams>
 * (the offset is the return address, for addr2line). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

enum { MAX_SITES = 4096 };

static struct site {
  void *pc;
  long serial, parallel;
} sites[MAX_SITES];
static int n_sites;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void count(void *pc, unsigned threads) {
  pthread_mutex_lock(&lock);
  int i = 0;
  while (i < n_sites && sites[i].pc != pc) i++;
  if (i == n_sites && n_sites < MAX_SITES) sites[n_sites++].pc = pc;
  if (i < n_sites) {
    if (threads == 1) sites[i].serial++;
    else sites[i].parallel++;
  }
  pthread_mutex_unlock(&lock);
}

static void *next(const char *name) {
  void *f = dlsym(RTLD_NEXT, name);
  if (!f) {
    fprintf(stderr, "omp_regions: no %s in the next library\n", name);
    abort();
  }
  return f;
}

typedef void (*parallel_fn)(void (*)(void *), void *, unsigned, unsigned);

void GOMP_parallel(void (*fn)(void *), void *data, unsigned threads, unsigned flags) {
  static parallel_fn real;
  if (!real) real = (parallel_fn)next("GOMP_parallel");
  count(__builtin_return_address(0), threads);
  real(fn, data, threads, flags);
}

typedef void (*loop_fn)(void (*)(void *), void *, unsigned, long, long, long, long, unsigned);

#define LOOP(name)                                                                            \
  void name(void (*fn)(void *), void *data, unsigned threads, long start, long end, long incr, \
            long chunk, unsigned flags) {                                                     \
    static loop_fn real;                                                                      \
    if (!real) real = (loop_fn)next(#name);                                                   \
    count(__builtin_return_address(0), threads);                                              \
    real(fn, data, threads, start, end, incr, chunk, flags);                                  \
  }
LOOP(GOMP_parallel_loop_static)
LOOP(GOMP_parallel_loop_dynamic)
LOOP(GOMP_parallel_loop_guided)
LOOP(GOMP_parallel_loop_runtime)
LOOP(GOMP_parallel_loop_nonmonotonic_dynamic)
LOOP(GOMP_parallel_loop_nonmonotonic_guided)

__attribute__((destructor)) static void report(void) {
  const char *path = getenv("OMP_REGIONS_OUT");
  FILE *out = path ? fopen(path, "w") : stderr;
  if (!out) return;
  for (int i = 0; i < n_sites; i++) {
    Dl_info info;
    if (!dladdr(sites[i].pc, &info) || !info.dli_fname) continue;
    fprintf(out, "%s %lx %ld %ld\n", info.dli_fname,
            (unsigned long)((char *)sites[i].pc - (char *)info.dli_fbase), sites[i].serial,
            sites[i].parallel);
  }
  if (out != stderr) fclose(out);
}
