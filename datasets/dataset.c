/* Dataset files → tokenized documents.
 *
 * JSONL is streamed: one line at a time is read (bounded at 64 MiB),
 * parsed, rendered and tokenized, and only the ids and flags are kept, so
 * the file itself is never held whole. A JSON array is read whole, up to
 * max_array_bytes. Every sample error names "file:line" (JSONL) or
 * "file: element N" (arrays) and the field. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/fileio.h"
#include "core/json.h"
#include "core/rng.h"
#include "core/status.h"
#include "core/utf8.h"
#include "datasets/dataset.h"

enum {
  MAX_LINE_BYTES = 64 << 20,
  DEFAULT_MAX_ARRAY_BYTES = 256 << 20,
};

/* ------------------------------------------------------------------ shuffle */

void mxl_shuffle_u32(uint32_t *idx, size_t n, uint64_t seed) {
  uint64_t state = seed;
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)mxl_splitmix64_below(&state, i);
    uint32_t t = idx[i - 1];
    idx[i - 1] = idx[j];
    idx[j] = t;
  }
}

/* ------------------------------------------------------------------ storage */

/* Token storage shared by a dataset and its splits (reference counted). */
typedef struct store {
  int refs;
  mxl_ids ids;       /* all documents' ids, back to back */
  uint8_t *flags;    /* [ids.n] */
  size_t flags_cap;
  size_t *start;     /* [n_docs + 1] offsets into ids */
  int64_t *line;     /* [n_docs] */
  uint8_t *kind;     /* [n_docs] mxl_sample_kind */
  size_t n_docs, cap_docs;
  size_t skipped;
  char first_skip[512];
} store;

struct mxl_dataset {
  store *s;
  uint32_t *idx; /* [n] documents of the store, in order */
  size_t n;
};

static void store_release(store *s) {
  if (!s || --s->refs > 0) return;
  mxl_ids_free(&s->ids);
  free(s->flags);
  free(s->start);
  free(s->line);
  free(s->kind);
  free(s);
}

static mxl_status store_add_doc(store *s, size_t begin, int64_t line, mxl_sample_kind kind) {
  if (s->n_docs + 1 >= s->cap_docs) {
    size_t cap = s->cap_docs ? s->cap_docs * 2 : 1024;
    size_t *start = realloc(s->start, (cap + 1) * sizeof *start);
    if (start) s->start = start;
    int64_t *ln = start ? realloc(s->line, cap * sizeof *ln) : NULL;
    if (ln) s->line = ln;
    uint8_t *k = ln ? realloc(s->kind, cap) : NULL;
    if (!k) return mxl_errorf(MXL_ERR_MEMORY, "dataset: out of memory");
    s->kind = k;
    s->cap_docs = cap;
  }
  if (s->n_docs >= UINT32_MAX - 1)
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "dataset: more than 2^32 samples");
  s->start[s->n_docs] = begin;
  s->line[s->n_docs] = line;
  s->kind[s->n_docs] = (uint8_t)kind;
  s->n_docs++;
  s->start[s->n_docs] = s->ids.n;
  return MXL_OK;
}

static mxl_dataset *dataset_over(store *s, size_t n) {
  mxl_dataset *ds = calloc(1, sizeof *ds);
  uint32_t *idx = malloc((n ? n : 1) * sizeof *idx);
  if (!ds || !idx) {
    free(ds);
    free(idx);
    return NULL;
  }
  ds->s = s;
  s->refs++;
  ds->idx = idx;
  ds->n = n;
  return ds;
}

void mxl_dataset_destroy(mxl_dataset *ds) {
  if (!ds) return;
  store_release(ds->s);
  free(ds->idx);
  free(ds);
}

size_t mxl_dataset_size(const mxl_dataset *ds) { return ds ? ds->n : 0; }
size_t mxl_dataset_skipped(const mxl_dataset *ds) { return ds ? ds->s->skipped : 0; }
const char *mxl_dataset_first_skip(const mxl_dataset *ds) {
  return ds ? ds->s->first_skip : "";
}

mxl_status mxl_dataset_sample(const mxl_dataset *ds, size_t i, mxl_sample_view *out) {
  memset(out, 0, sizeof *out);
  if (!ds || i >= ds->n)
    return mxl_errorf(MXL_ERR_ARGUMENT, "dataset: sample %zu out of range (%zu samples)", i,
                      ds ? ds->n : 0);
  const store *s = ds->s;
  uint32_t d = ds->idx[i];
  out->ids = s->ids.data + s->start[d];
  out->flags = s->flags + s->start[d];
  out->n = s->start[d + 1] - s->start[d];
  out->line = s->line[d];
  out->kind = (mxl_sample_kind)s->kind[d];
  return MXL_OK;
}

/* ------------------------------------------------------------------ one sample */

typedef struct loader {
  const char *path;
  const mxl_tokenizer *tok;
  const mxl_data_options *opts;
  store *s;
} loader;

/* Applies on_bad_line to a failed sample: malformed input is counted and
 * skipped under MXL_BAD_LINE_SKIP; anything else (I/O, memory) fails. */
static mxl_status bad_sample(loader *L, mxl_status st) {
  if (st != MXL_ERR_FORMAT || L->opts->on_bad_line != MXL_BAD_LINE_SKIP) return st;
  if (L->s->skipped++ == 0)
    snprintf(L->s->first_skip, sizeof L->s->first_skip, "%s", mxl_last_error());
  return MXL_OK;
}

/* Renders and stores one parsed sample. */
static mxl_status load_item(loader *L, const cJSON *item, const char *where, int64_t line) {
  store *s = L->s;
  size_t begin = s->ids.n;
  mxl_sample_kind kind = MXL_SAMPLE_CHAT;
  mxl_status st = mxl_render_sample(item, where, L->tok, &L->opts->render, &s->ids, &s->flags,
                                    &s->flags_cap, NULL, &kind);
  if (st == MXL_OK && s->ids.n == begin)
    st = mxl_errorf(MXL_ERR_FORMAT, "%s: the sample renders to no tokens", where);
  if (st == MXL_OK) return store_add_doc(s, begin, line, kind);
  s->ids.n = begin;
  return bad_sample(L, st);
}

/* ------------------------------------------------------------------ JSONL */

/* Reads a file in large blocks and hands out lines (without '\n' or a
 * trailing '\r'); NUL bytes inside a line are kept, so they can be
 * reported. */
typedef struct line_reader {
  FILE *fp;
  char *buf;
  size_t cap, start, end, max_line;
  int eof;
} line_reader;

enum { LINE_OK = 1, LINE_END = 0, LINE_TOO_LONG = -1, LINE_READ_ERROR = -2 };

static int next_line(line_reader *r, const char **line, size_t *len) {
  for (;;) {
    char *nl = r->end > r->start ? memchr(r->buf + r->start, '\n', r->end - r->start) : NULL;
    if (nl || (r->eof && r->end > r->start)) {
      size_t n = nl ? (size_t)(nl - (r->buf + r->start)) : r->end - r->start;
      *line = r->buf + r->start;
      r->start += n + (nl ? 1 : 0);
      if (n > 0 && (*line)[n - 1] == '\r') n--;
      *len = n;
      return n > r->max_line ? LINE_TOO_LONG : LINE_OK;
    }
    if (r->eof) return LINE_END;
    if (r->end - r->start > r->max_line) {
      /* drop the long line's bytes up to its newline */
      r->start = r->end = 0;
      int c;
      while ((c = getc(r->fp)) != EOF && c != '\n') {}
      if (c == EOF) r->eof = 1;
      return LINE_TOO_LONG;
    }
    if (r->end > r->start) memmove(r->buf, r->buf + r->start, r->end - r->start);
    r->end -= r->start;
    r->start = 0;
    if (r->end == r->cap) {
      size_t cap = r->cap ? r->cap * 2 : 1 << 16;
      char *g = realloc(r->buf, cap);
      if (!g) return LINE_READ_ERROR;
      r->buf = g;
      r->cap = cap;
    }
    size_t got = fread(r->buf + r->end, 1, r->cap - r->end, r->fp);
    if (got == 0 && ferror(r->fp)) return LINE_READ_ERROR;
    if (got == 0) r->eof = 1;
    r->end += got;
  }
}

static int blank(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
  return 1;
}

static mxl_status load_line(loader *L, const char *text, size_t len, const char *where,
                            int64_t line) {
  if (memchr(text, '\0', len))
    return bad_sample(L, mxl_errorf(MXL_ERR_FORMAT, "%s: the line contains a NUL byte", where));
  cJSON *item = NULL;
  mxl_status st = mxl_parse_json_text(text, len, where, &item);
  if (st != MXL_OK) return bad_sample(L, st);
  st = load_item(L, item, where, line);
  cJSON_Delete(item);
  return st;
}

static mxl_status load_jsonl(loader *L, FILE *fp, uint64_t total) {
  size_t max_line = L->opts->max_line_bytes ? L->opts->max_line_bytes : (size_t)MAX_LINE_BYTES;
  line_reader r = {.fp = fp, .max_line = max_line};
  char where[600];
  mxl_status st = MXL_OK;
  for (int64_t line = 1; st == MXL_OK; line++) {
    const char *text = NULL;
    size_t len = 0;
    int got = next_line(&r, &text, &len);
    if (got == LINE_END) break;
    snprintf(where, sizeof where, "%s:%lld", L->path, (long long)line);
    if (got == LINE_READ_ERROR) {
      st = mxl_errorf(MXL_ERR_IO, "%s: read error: %s", where, strerror(errno));
    } else if (got == LINE_TOO_LONG) {
      st = bad_sample(L, mxl_errorf(MXL_ERR_FORMAT, "%s: line longer than %zu bytes", where,
                                    max_line));
    } else {
      if (line == 1 && len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) text += 3, len -= 3;
      if (!blank(text, len)) st = load_line(L, text, len, where, line);
    }
    if (L->opts->progress && (line & 1023) == 0)
      L->opts->progress(L->opts->progress_user, (uint64_t)ftello(fp), total);
  }
  free(r.buf);
  return st;
}

/* ------------------------------------------------------------------ JSON array */

static int64_t line_of(const char *s, size_t offset) {
  int64_t line = 1;
  for (size_t i = 0; i < offset; i++) line += s[i] == '\n';
  return line;
}

static mxl_status load_array(loader *L, size_t max_bytes) {
  char *data = NULL;
  size_t size = 0;
  mxl_status st = mxl_read_file(L->path, max_bytes, &data, &size);
  if (st != MXL_OK) {
    struct stat sb;
    if (stat(L->path, &sb) == 0 && (uint64_t)sb.st_size > max_bytes)
      return mxl_errorf(MXL_ERR_UNSUPPORTED,
                        "%s: a JSON array file is read whole and this one is over %zu MiB; "
                        "convert it to JSONL (one sample per line), which is streamed",
                        L->path, max_bytes >> 20);
    return st;
  }
  size_t bad = 0;
  if (!mxl_utf8_valid(data, size, &bad)) {
    st = mxl_errorf(MXL_ERR_FORMAT, "%s:%lld: invalid UTF-8", L->path,
                    (long long)line_of(data, bad));
    free(data);
    return st;
  }
  size_t nul = mxl_json_nul_escape(data, size);
  if (nul != SIZE_MAX) {
    st = mxl_errorf(MXL_ERR_FORMAT, "%s:%lld: a string contains \\u0000 (NUL is not allowed)",
                    L->path, (long long)line_of(data, nul));
    free(data);
    return st;
  }
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(data, size, &end, 0);
  const char *rest = end;
  while (root && rest && rest < data + size && *rest && strchr(" \t\r\n", *rest)) rest++;
  if (root && rest && rest < data + size) {
    st = mxl_errorf(MXL_ERR_FORMAT, "%s:%lld: unexpected text after the JSON array", L->path,
                    (long long)line_of(data, (size_t)(rest - data)));
    cJSON_Delete(root);
    free(data);
    return st;
  }
  if (!root || !cJSON_IsArray(root)) {
    size_t at = root ? 0 : (end && end >= data && end <= data + size ? (size_t)(end - data) : 0);
    st = root ? mxl_errorf(MXL_ERR_FORMAT, "%s: expected a JSON array of samples", L->path)
              : mxl_errorf(MXL_ERR_FORMAT, "%s:%lld: %s", L->path,
                           (long long)line_of(data, at), mxl_json_error_name(data, size, at));
    cJSON_Delete(root);
    free(data);
    return st;
  }
  free(data);
  char where[600];
  int64_t k = 1;
  for (const cJSON *item = root->child; item && st == MXL_OK; item = item->next, k++) {
    snprintf(where, sizeof where, "%s: element %lld", L->path, (long long)k);
    st = load_item(L, item, where, k);
  }
  cJSON_Delete(root);
  return st;
}

/* ------------------------------------------------------------------ load */

/* The first byte that is not whitespace or a byte-order mark, or EOF. */
static int first_byte(FILE *fp) {
  int c;
  long skipped = 0;
  while ((c = getc(fp)) != EOF) {
    if (skipped == 0 && c == 0xEF) { /* UTF-8 BOM */
      if (getc(fp) == 0xBB && getc(fp) == 0xBF) continue;
      return 0;
    }
    skipped++;
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') break;
  }
  return c;
}

mxl_status mxl_dataset_load(const char *path, const mxl_tokenizer *tok,
                            const mxl_data_options *opts, mxl_dataset **out) {
  static const mxl_data_options defaults = {0};
  *out = NULL;
  if (!tok) return mxl_errorf(MXL_ERR_ARGUMENT, "%s: loading a dataset needs a tokenizer", path);
  if (!opts) opts = &defaults;
  FILE *fp = fopen(path, "rb");
  if (!fp) return mxl_errorf(MXL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  int have_stat = fstat(fileno(fp), &sb) == 0;
  if (have_stat && S_ISDIR(sb.st_mode)) {
    fclose(fp);
    return mxl_errorf(MXL_ERR_IO, "%s: is a directory", path);
  }
  uint64_t total = have_stat ? (uint64_t)sb.st_size : 0;
  int c = first_byte(fp);
  rewind(fp);
  store *s = calloc(1, sizeof *s);
  if (!s) {
    fclose(fp);
    return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  }
  s->refs = 1;
  loader L = {path, tok, opts, s};
  mxl_status st = MXL_OK;
  if (c == '[') {
    fclose(fp);
    fp = NULL;
    st = load_array(&L, opts->max_array_bytes ? opts->max_array_bytes
                                              : (size_t)DEFAULT_MAX_ARRAY_BYTES);
  } else {
    st = load_jsonl(&L, fp, total);
  }
  if (fp) fclose(fp);
  if (st == MXL_OK && s->n_docs == 0)
    st = s->skipped ? mxl_errorf(MXL_ERR_FORMAT, "%s: no valid sample (%zu bad, first: %s)",
                                 path, s->skipped, s->first_skip)
                    : mxl_errorf(MXL_ERR_FORMAT, "%s: no samples", path);
  mxl_dataset *ds = st == MXL_OK ? dataset_over(s, s->n_docs) : NULL;
  if (st == MXL_OK && !ds) st = mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  store_release(s); /* the dataset holds its own reference */
  if (st != MXL_OK) return st;
  for (size_t i = 0; i < ds->n; i++) ds->idx[i] = (uint32_t)i;
  if (opts->progress) opts->progress(opts->progress_user, total, total);
  *out = ds;
  return MXL_OK;
}

/* ------------------------------------------------------------------ split */

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return (x > y) - (x < y);
}

mxl_status mxl_dataset_split(const mxl_dataset *ds, double eval_fraction, size_t eval_count,
                             uint64_t seed, mxl_dataset **train_out, mxl_dataset **eval_out) {
  *train_out = *eval_out = NULL;
  if (!(eval_fraction >= 0 && eval_fraction < 1))
    return mxl_errorf(MXL_ERR_ARGUMENT, "eval fraction %g: expected a number in [0, 1)",
                      eval_fraction);
  size_t n = ds->n, n_eval = eval_count;
  if (n_eval == 0 && eval_fraction > 0) {
    n_eval = (size_t)llround(eval_fraction * (double)n);
    if (n_eval == 0) n_eval = 1;
  }
  if (n_eval == 0 || n_eval >= n)
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "eval split: %zu of %zu samples leaves %s empty", n_eval, n,
                      n_eval == 0 ? "the eval part" : "nothing to train on");
  uint32_t *perm = malloc(n * sizeof *perm);
  mxl_dataset *train = dataset_over(ds->s, n - n_eval), *eval = dataset_over(ds->s, n_eval);
  if (!perm || !train || !eval) {
    free(perm);
    mxl_dataset_destroy(train);
    mxl_dataset_destroy(eval);
    return mxl_errorf(MXL_ERR_MEMORY, "eval split: out of memory");
  }
  memcpy(perm, ds->idx, n * sizeof *perm);
  mxl_shuffle_u32(perm, n, seed ^ 0x5EED5A17C0FFEEull);
  memcpy(eval->idx, perm, n_eval * sizeof *perm);
  memcpy(train->idx, perm + n_eval, (n - n_eval) * sizeof *perm);
  qsort(eval->idx, eval->n, sizeof *eval->idx, cmp_u32);
  qsort(train->idx, train->n, sizeof *train->idx, cmp_u32);
  free(perm);
  *train_out = train;
  *eval_out = eval;
  return MXL_OK;
}

/* ------------------------------------------------------------------ stats */

static int cmp_size(const void *a, const void *b) {
  size_t x = *(const size_t *)a, y = *(const size_t *)b;
  return (x > y) - (x < y);
}

mxl_status mxl_dataset_stats(const mxl_dataset *ds, size_t seq_len, mxl_data_stats *out) {
  memset(out, 0, sizeof *out);
  size_t n = ds->n;
  size_t *len = malloc((n ? n : 1) * sizeof *len);
  if (!len) return mxl_errorf(MXL_ERR_MEMORY, "stats: out of memory");
  for (int b = 0; b < MXL_STATS_BINS; b++)
    out->bin_upper[b] = b == MXL_STATS_BINS - 1 ? SIZE_MAX : (size_t)16 << b;
  out->samples = n;
  out->skipped = ds->s->skipped;
  out->seq_len = seq_len;
  out->min_len = n ? SIZE_MAX : 0;
  for (size_t i = 0; i < n; i++) {
    mxl_sample_view v;
    mxl_dataset_sample(ds, i, &v);
    len[i] = v.n;
    out->tokens += v.n;
    if (v.n < out->min_len) out->min_len = v.n;
    if (v.n > out->max_len) out->max_len = v.n;
    if (v.kind == MXL_SAMPLE_TEXT) out->text_samples++;
    else out->chat_samples++;
    int b = 0;
    while (v.n > out->bin_upper[b]) b++;
    out->bin_count[b]++;
    if (seq_len && v.n > seq_len) {
      out->over_seq_len++;
      out->over_seq_len_tokens += v.n - seq_len;
    }
    size_t trained[MXL_MASK_COUNT] = {0};
    for (size_t t = 0; t < v.n; t++)
      for (int m = 0; m < MXL_MASK_COUNT; m++) trained[m] += (v.flags[t] >> m) & 1;
    for (int m = 0; m < MXL_MASK_COUNT; m++) {
      out->trained[m] += trained[m];
      out->untrained_samples[m] += trained[m] == 0;
    }
  }
  if (n) {
    qsort(len, n, sizeof *len, cmp_size);
    out->mean_len = (double)out->tokens / (double)n;
    out->median_len = len[(n - 1) / 2];
    out->p95_len = len[(size_t)ceil(0.95 * (double)n) - 1];
  }
  free(len);
  return MXL_OK;
}

/* ------------------------------------------------------------------ show */

void mxl_text_runs_free(mxl_text_run *runs, size_t n) {
  for (size_t i = 0; runs && i < n; i++) free(runs[i].text);
  free(runs);
}

mxl_status mxl_dataset_show(const mxl_dataset *ds, const mxl_tokenizer *tok, size_t i,
                            mxl_loss_mask mode, mxl_text_run **runs_out, size_t *n_out) {
  *runs_out = NULL;
  *n_out = 0;
  mxl_sample_view v;
  MXL_TRY(mxl_dataset_sample(ds, i, &v));
  if ((unsigned)mode >= MXL_MASK_COUNT)
    return mxl_errorf(MXL_ERR_ARGUMENT, "show: unknown loss mask %d", (int)mode);
  mxl_text_run *runs = NULL;
  size_t n = 0, cap = 0;
  mxl_status st = MXL_OK;
  for (size_t t = 0; t < v.n && st == MXL_OK;) {
    int trained = (v.flags[t] & MXL_MASK_BIT(mode)) != 0;
    size_t e = t;
    while (e < v.n && ((v.flags[e] & MXL_MASK_BIT(mode)) != 0) == trained) e++;
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      mxl_text_run *g = realloc(runs, cap * sizeof *g);
      if (!g) {
        st = mxl_errorf(MXL_ERR_MEMORY, "show: out of memory");
        break;
      }
      runs = g;
    }
    mxl_text_run *r = &runs[n];
    r->trained = trained;
    st = mxl_tokenizer_decode(tok, v.ids + t, e - t, &r->text, &r->len);
    if (st == MXL_OK) n++;
    t = e;
  }
  if (st != MXL_OK) {
    mxl_text_runs_free(runs, n);
    return st;
  }
  *runs_out = runs;
  *n_out = n;
  return MXL_OK;
}
