/* Tokenizer encode throughput, single thread.
 *
 *   bench_tokenizer [--vocab FILE] [--repeat N] [--ids-out FILE] [TEXT_FILE...]
 *
 * --vocab defaults to ../shared/data/o200k_base.tiktoken beside the source.
 * Without text files, encodes generated English- and Russian-like text (a
 * few MB each). Prints bytes, tokens and the best time of N runs per input.
 * bench/tokenizer_vs_tiktoken.py runs this and tiktoken on the same text
 * and prints the ratio. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/fileio.h"
#include "datasets/tokenizer.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng_next(uint64_t *s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return *s >> 33;
}

/* Sentences of words from `words` (space separated) with numbers and
 * punctuation, until `size` bytes. */
static char *generate(const char *words, size_t size, uint64_t seed) {
  const char *w[64];
  size_t wl[64], nw = 0;
  for (const char *p = words; *p && nw < 64;) {
    const char *e = strchr(p, ' ');
    if (!e) e = p + strlen(p);
    w[nw] = p, wl[nw++] = (size_t)(e - p);
    p = *e ? e + 1 : e;
  }
  char *out = malloc(size + 256);
  size_t n = 0;
  while (n < size) {
    int len = 4 + (int)(rng_next(&seed) % 14);
    for (int i = 0; i < len; i++) {
      size_t k = rng_next(&seed) % nw;
      if (rng_next(&seed) % 10 == 0) n += (size_t)sprintf(out + n, "%u ", (unsigned)(rng_next(&seed) % 100000));
      memcpy(out + n, w[k], wl[k]);
      n += wl[k];
      out[n++] = i + 1 < len ? ' ' : ".!?,;"[rng_next(&seed) % 5];
    }
    out[n++] = rng_next(&seed) % 5 ? ' ' : '\n';
  }
  out[n] = '\0';
  return out;
}

static const char english[] =
    "the of and to in is was he for it with as his on be at by had are but from or have an "
    "they which one you were all her she there would their we him been has when who will no "
    "river mountain village morning evening letter window garden question answer government "
    "history remember understand beautiful different important together nothing";
static const char russian[] =
    "и в не на я быть он с что а по это она этот к но они мы как из у который то за свой "
    "весь год от так о для ты же все тот река гора деревня утро вечер письмо окно сад вопрос "
    "ответ правительство история помнить понимать красивый разный важный вместе ничего";

static int bench(const mxl_tokenizer *tok, const char *name, const char *text, size_t len,
                 int repeat, const char *ids_out) {
  double best = 1e30;
  mxl_ids ids = {0};
  for (int r = 0; r < repeat; r++) {
    ids.n = 0;
    double t0 = now();
    if (mxl_tokenizer_encode(tok, text, len, 0, &ids) != MXL_OK) {
      fprintf(stderr, "encode: %s\n", mxl_last_error());
      return 1;
    }
    double dt = now() - t0;
    if (dt < best) best = dt;
  }
  printf("%s bytes=%zu tokens=%zu seconds=%.6f MB/s=%.2f\n", name, len, ids.n, best,
         (double)len / 1e6 / best);
  if (ids_out) {
    FILE *f = fopen(ids_out, "wb");
    if (!f || fwrite(ids.data, sizeof *ids.data, ids.n, f) != ids.n) return 1;
    fclose(f);
  }
  mxl_ids_free(&ids);
  return 0;
}

/* ../shared/data/o200k_base.tiktoken beside the source tree (CMake
 * compiles this file by its absolute path). */
static char *default_vocab(void) {
  const char *src = __FILE__, *cut = strstr(src, "bench/bench_tokenizer.c");
  size_t n = cut ? (size_t)(cut - src) : 0;
  char *path = malloc(n + 64);
  memcpy(path, src, n);
  strcpy(path + n, "../shared/data/o200k_base.tiktoken");
  return path;
}

int main(int argc, char **argv) {
  char *vocab_default = default_vocab();
  const char *vocab = vocab_default, *ids_out = NULL;
  int repeat = 5, rc = 0, nfiles = 0;
  const char *files[16];
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--vocab") && i + 1 < argc) vocab = argv[++i];
    else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--ids-out") && i + 1 < argc) ids_out = argv[++i];
    else if (nfiles < 16) files[nfiles++] = argv[i];
  }
  mxl_tokenizer *tok = NULL;
  double t0 = now();
  if (mxl_tokenizer_load(vocab, &tok) != MXL_OK) {
    fprintf(stderr, "bench_tokenizer: %s\n", mxl_last_error());
    return 1;
  }
  fprintf(stderr, "loaded %s in %.3f s\n", vocab, now() - t0);
  for (int i = 0; i < nfiles && !rc; i++) {
    char *data = NULL;
    size_t size = 0;
    if (mxl_read_file(files[i], (size_t)1 << 32, &data, &size) != MXL_OK) {
      fprintf(stderr, "bench_tokenizer: %s\n", mxl_last_error());
      rc = 1;
      break;
    }
    rc = bench(tok, files[i], data, size, repeat, ids_out);
    free(data);
  }
  if (nfiles == 0) {
    char *en = generate(english, 4u << 20, 1), *ru = generate(russian, 4u << 20, 2);
    rc = bench(tok, "english", en, strlen(en), repeat, NULL) ||
         bench(tok, "russian", ru, strlen(ru), repeat, NULL);
    free(en);
    free(ru);
  }
  mxl_tokenizer_free(tok);
  free(vocab_default);
  return rc;
}
