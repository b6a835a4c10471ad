/* GGUF reader and writer (gguf.h). */
#include "adapters/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "core/status.h"
#include "core/strbuf.h"

/* ------------------------------------------------------------ reader */

enum { MAX_STRING = 1 << 20, MAX_ARRAY_DEPTH = 2 };

typedef struct cursor {
  const uint8_t *p;
  size_t size, pos;
  const char *source;
} cursor;

static uint64_t le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static mxl_status need(cursor *c, size_t n, const char *what) {
  if (c->size - c->pos < n)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: truncated at byte %zu reading %s", c->source, c->pos,
                      what);
  return MXL_OK;
}

static mxl_status rd(cursor *c, int n, uint64_t *v, const char *what) {
  MXL_TRY(need(c, (size_t)n, what));
  *v = le(c->p + c->pos, n);
  c->pos += (size_t)n;
  return MXL_OK;
}

/* A string as a pointer into the image and its length. */
static mxl_status rd_string(cursor *c, const uint8_t **s, size_t *len, const char *what) {
  uint64_t n;
  MXL_TRY(rd(c, 8, &n, what));
  if (n > MAX_STRING)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s is %llu bytes long (limit %d)", c->source, what,
                      (unsigned long long)n, MAX_STRING);
  MXL_TRY(need(c, (size_t)n, what));
  *s = c->p + c->pos;
  *len = (size_t)n;
  c->pos += (size_t)n;
  return MXL_OK;
}

static int scalar_size(uint32_t t) {
  static const int sizes[MXL_GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
  return t < MXL_GGUF_TYPE_COUNT ? sizes[t] : 0;
}

static double scalar_value(uint32_t t, uint64_t raw) {
  switch (t) {
  case MXL_GGUF_INT8: return (double)(int8_t)raw;
  case MXL_GGUF_INT16: return (double)(int16_t)raw;
  case MXL_GGUF_INT32: return (double)(int32_t)raw;
  case MXL_GGUF_INT64: return (double)(int64_t)raw;
  case MXL_GGUF_FLOAT32: {
    uint32_t u = (uint32_t)raw;
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
  case MXL_GGUF_FLOAT64: {
    double d;
    memcpy(&d, &raw, 8);
    return d;
  }
  default: return (double)raw;
  }
}

/* Skips (and checks) one value of type t; arrays nest at most twice. */
static mxl_status skip_value(cursor *c, uint32_t t, int depth, const char *key) {
  if (t == MXL_GGUF_STRING) {
    const uint8_t *s;
    size_t n;
    return rd_string(c, &s, &n, key);
  }
  if (t == MXL_GGUF_ARRAY) {
    uint64_t et, count;
    MXL_TRY(rd(c, 4, &et, key));
    MXL_TRY(rd(c, 8, &count, key));
    if (et >= MXL_GGUF_TYPE_COUNT || (et == MXL_GGUF_ARRAY && depth >= MAX_ARRAY_DEPTH))
      return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: array of unknown element type %llu", c->source,
                        key, (unsigned long long)et);
    int size = scalar_size((uint32_t)et);
    if (size) {
      if (count > (c->size - c->pos) / (uint64_t)size)
        return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: %llu elements run past the end of the file",
                          c->source, key, (unsigned long long)count);
      c->pos += (size_t)count * (size_t)size;
      return MXL_OK;
    }
    for (uint64_t i = 0; i < count; i++) MXL_TRY(skip_value(c, (uint32_t)et, depth + 1, key));
    return MXL_OK;
  }
  int size = scalar_size(t);
  if (!size)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: unknown value type %u", c->source, key, t);
  uint64_t v;
  return rd(c, size, &v, key);
}

/* Owned NUL-terminated copies of the names and strings. */
static void keep(mxl_strbuf *pool, const uint8_t *s, size_t n, size_t *offset) {
  *offset = pool->len;
  mxl_strbuf_append(pool, s, n);
  mxl_strbuf_append(pool, "", 1);
}

static size_t ggml_type_size(uint32_t type, int64_t ne0, int *known) {
  *known = 1;
  switch (type) {
  case MXL_GGML_F32: return 4 * (size_t)ne0;
  case MXL_GGML_F16:
  case MXL_GGML_BF16: return 2 * (size_t)ne0;
  case MXL_GGML_MXFP4: return ne0 % 32 ? 0 : 17 * (size_t)(ne0 / 32);
  default: *known = 0; return 0;
  }
}

const char *mxl_ggml_type_name(uint32_t type, char buf[16]) {
  switch (type) {
  case MXL_GGML_F32: return "F32";
  case MXL_GGML_F16: return "F16";
  case MXL_GGML_BF16: return "BF16";
  case MXL_GGML_MXFP4: return "MXFP4";
  default: snprintf(buf, 16, "type %u", type); return buf;
  }
}

static mxl_status read_kvs(cursor *c, mxl_gguf *g, mxl_strbuf *pool, size_t *key_off,
                           size_t *str_off) {
  for (int i = 0; i < g->n_kv; i++) {
    const uint8_t *k;
    size_t klen;
    char what[48];
    snprintf(what, sizeof what, "metadata key %d", i);
    MXL_TRY(rd_string(c, &k, &klen, what));
    keep(pool, k, klen, &key_off[i]);
    char key[128];
    snprintf(key, sizeof key, "%.*s", (int)(klen < 100 ? klen : 100), (const char *)k);
    uint64_t t;
    MXL_TRY(rd(c, 4, &t, key));
    mxl_gguf_kv *kv = &g->kv[i];
    kv->type = (mxl_gguf_type)t;
    str_off[i] = SIZE_MAX;
    if (t == MXL_GGUF_STRING) {
      const uint8_t *s;
      size_t n;
      MXL_TRY(rd_string(c, &s, &n, key));
      keep(pool, s, n, &str_off[i]);
    } else if (t == MXL_GGUF_ARRAY) {
      MXL_TRY(need(c, 12, key));
      kv->array_type = (mxl_gguf_type)le(c->p + c->pos, 4);
      kv->array_count = le(c->p + c->pos + 4, 8);
      MXL_TRY(skip_value(c, (uint32_t)t, 0, key));
    } else {
      int size = scalar_size((uint32_t)t);
      if (!size)
        return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: unknown value type %llu", c->source, key,
                          (unsigned long long)t);
      uint64_t raw;
      MXL_TRY(rd(c, size, &raw, key));
      kv->number = scalar_value((uint32_t)t, raw);
    }
  }
  return MXL_OK;
}

static mxl_status read_tensor_info(cursor *c, mxl_gguf *g, int i, mxl_strbuf *pool,
                                   size_t *name_off) {
  const uint8_t *s;
  size_t n;
  char what[48];
  snprintf(what, sizeof what, "tensor %d's name", i);
  MXL_TRY(rd_string(c, &s, &n, what));
  keep(pool, s, n, &name_off[i]);
  char name[128];
  snprintf(name, sizeof name, "tensor %.*s", (int)(n < 100 ? n : 100), (const char *)s);
  mxl_gguf_tensor *t = &g->tensors[i];
  uint64_t v;
  MXL_TRY(rd(c, 4, &v, name));
  if (v < 1 || v > MXL_GGUF_MAX_DIMS)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %s has %llu dimensions (1 to %d)", c->source, name,
                      (unsigned long long)v, MXL_GGUF_MAX_DIMS);
  t->n_dims = (int)v;
  for (int d = 0; d < MXL_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
  for (int d = 0; d < t->n_dims; d++) {
    MXL_TRY(rd(c, 8, &v, name));
    if (v < 1 || v > (1ull << 40))
      return mxl_errorf(MXL_ERR_FORMAT, "%s: %s: dimension %d is %llu", c->source, name, d,
                        (unsigned long long)v);
    t->ne[d] = (int64_t)v;
  }
  MXL_TRY(rd(c, 4, &v, name));
  t->type = (uint32_t)v;
  MXL_TRY(rd(c, 8, &t->offset, name));
  return MXL_OK;
}

/* Sizes, alignment and bounds of every tensor of a known type; no overlap. */
static mxl_status check_tensor_data(const cursor *c, mxl_gguf *g, int header_only) {
  for (int i = 0; i < g->n_tensors; i++) {
    mxl_gguf_tensor *t = &g->tensors[i];
    int known;
    size_t row = ggml_type_size(t->type, t->ne[0], &known);
    if (t->offset % g->alignment)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: tensor %s: offset %llu is not a multiple of the "
                        "alignment %u", c->source, t->name, (unsigned long long)t->offset,
                        g->alignment);
    if (!known) continue;
    if (!row)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: tensor %s: ne[0] = %lld does not fit its type",
                        c->source, t->name, (long long)t->ne[0]);
    uint64_t rows = (uint64_t)t->ne[1] * (uint64_t)t->ne[2] * (uint64_t)t->ne[3];
    t->nbytes = (uint64_t)row * rows;
    if (header_only) continue;
    if (t->offset > c->size - g->data_start || t->nbytes > c->size - g->data_start - t->offset)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: tensor %s: %llu bytes at offset %llu run past the "
                        "end of the file", c->source, t->name, (unsigned long long)t->nbytes,
                        (unsigned long long)t->offset);
    t->data = c->p + g->data_start + t->offset;
    for (int j = 0; j < i; j++) {
      const mxl_gguf_tensor *u = &g->tensors[j];
      if (u->nbytes && t->nbytes && t->offset < u->offset + u->nbytes &&
          u->offset < t->offset + t->nbytes)
        return mxl_errorf(MXL_ERR_FORMAT, "%s: tensors %s and %s overlap", c->source, u->name,
                          t->name);
    }
  }
  return MXL_OK;
}

static mxl_status parse(cursor *c, mxl_gguf *g, int header_only, mxl_strbuf *pool,
                        size_t **offsets) {
  uint64_t v, n_tensors, n_kv;
  MXL_TRY(need(c, 4, "the magic"));
  if (memcmp(c->p, "GGUF", 4))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: not a GGUF file (no \"GGUF\" magic)", c->source);
  c->pos = 4;
  MXL_TRY(rd(c, 4, &v, "the version"));
  if (v != 2 && v != 3)
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: GGUF version %llu (mxlora reads 2 and 3)",
                      c->source, (unsigned long long)v);
  g->version = (uint32_t)v;
  MXL_TRY(rd(c, 8, &n_tensors, "the tensor count"));
  MXL_TRY(rd(c, 8, &n_kv, "the metadata count"));
  /* every entry takes at least 8 bytes: the counts cannot exceed the file */
  if (n_tensors > c->size / 8 || n_kv > c->size / 8)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %llu tensors and %llu metadata entries cannot fit in "
                      "%zu bytes", c->source, (unsigned long long)n_tensors,
                      (unsigned long long)n_kv, c->size);
  g->n_kv = (int)n_kv;
  g->n_tensors = (int)n_tensors;
  g->kv = calloc(n_kv ? n_kv : 1, sizeof *g->kv);
  g->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *g->tensors);
  *offsets = malloc((2 * n_kv + n_tensors + 1) * sizeof **offsets);
  if (!g->kv || !g->tensors || !*offsets)
    return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", c->source);
  size_t *key_off = *offsets, *str_off = key_off + n_kv, *name_off = str_off + n_kv;
  MXL_TRY(read_kvs(c, g, pool, key_off, str_off));
  for (int i = 0; i < g->n_tensors; i++) MXL_TRY(read_tensor_info(c, g, i, pool, name_off));
  if (pool->failed) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", c->source);
  /* names and strings point into the pool from here on */
  g->strings = pool->data;
  for (int i = 0; i < g->n_kv; i++) {
    g->kv[i].key = pool->data + key_off[i];
    if (str_off[i] != SIZE_MAX) g->kv[i].str = pool->data + str_off[i];
  }
  for (int i = 0; i < g->n_tensors; i++) g->tensors[i].name = pool->data + name_off[i];
  g->alignment = MXL_GGUF_ALIGNMENT;
  const mxl_gguf_kv *a = mxl_gguf_find_kv(g, "general.alignment");
  if (a) {
    if (a->type != MXL_GGUF_UINT32 || a->number < 1 || ((uint32_t)a->number & ((uint32_t)a->number - 1)))
      return mxl_errorf(MXL_ERR_FORMAT, "%s: general.alignment must be a power of two (u32)",
                        c->source);
    g->alignment = (uint32_t)a->number;
  }
  g->data_start = (c->pos + g->alignment - 1) / g->alignment * g->alignment;
  if (!header_only && g->data_start > c->size && g->n_tensors)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: the data area starts past the end of the file",
                      c->source);
  for (int i = 0; i < g->n_tensors; i++)
    for (int j = 0; j < i; j++)
      if (!strcmp(g->tensors[i].name, g->tensors[j].name))
        return mxl_errorf(MXL_ERR_FORMAT, "%s: tensor %s appears twice", c->source,
                          g->tensors[i].name);
  return check_tensor_data(c, g, header_only);
}

mxl_status mxl_gguf_parse(const uint8_t *data, size_t size, const char *source,
                          int header_only, mxl_gguf **out) {
  *out = NULL;
  mxl_gguf *g = calloc(1, sizeof *g);
  if (!g) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", source);
  cursor c = {data, size, 0, source};
  mxl_strbuf pool = {0};
  size_t *offsets = NULL;
  mxl_status st = parse(&c, g, header_only, &pool, &offsets);
  free(offsets);
  if (!g->strings) mxl_strbuf_free(&pool);
  if (st != MXL_OK) {
    mxl_gguf_free(g);
    return st;
  }
  *out = g;
  return MXL_OK;
}

void mxl_gguf_free(mxl_gguf *g) {
  if (!g) return;
  free(g->kv);
  free(g->tensors);
  free(g->strings);
  free(g);
}

const mxl_gguf_kv *mxl_gguf_find_kv(const mxl_gguf *g, const char *key) {
  for (int i = 0; i < g->n_kv; i++)
    if (g->kv[i].key && !strcmp(g->kv[i].key, key)) return &g->kv[i];
  return NULL;
}

const mxl_gguf_tensor *mxl_gguf_find_tensor(const mxl_gguf *g, const char *name) {
  for (int i = 0; i < g->n_tensors; i++)
    if (g->tensors[i].name && !strcmp(g->tensors[i].name, name)) return &g->tensors[i];
  return NULL;
}

/* ------------------------------------------------------------ writer */

typedef struct pending_tensor {
  char *name;
  int n_dims;
  int64_t ne[MXL_GGUF_MAX_DIMS];
  uint32_t type;
  uint64_t nbytes, offset;
} pending_tensor;

struct mxl_gguf_writer {
  char *path;
  mxl_strbuf kv; /* encoded metadata entries */
  int n_kv;
  pending_tensor *tensors;
  int n_tensors, cap;
  int failed;
  mxl_atomic_file f;
  int open;
  int cur;           /* tensor being written */
  uint64_t cur_done; /* its bytes so far */
};

static void put_le(mxl_strbuf *b, uint64_t v, int n) {
  uint8_t bytes[8];
  for (int i = 0; i < n; i++) bytes[i] = (uint8_t)(v >> (8 * i));
  mxl_strbuf_append(b, bytes, (size_t)n);
}

static void put_string(mxl_strbuf *b, const char *s) {
  size_t n = strlen(s);
  put_le(b, n, 8);
  mxl_strbuf_append(b, s, n);
}

mxl_status mxl_gguf_writer_create(const char *path, mxl_gguf_writer **out) {
  *out = calloc(1, sizeof **out);
  if (*out) (*out)->path = strdup(path);
  if (!*out || !(*out)->path) {
    free(*out);
    *out = NULL;
    return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  }
  return MXL_OK;
}

static void add_key(mxl_gguf_writer *w, const char *key, mxl_gguf_type t) {
  put_string(&w->kv, key);
  put_le(&w->kv, (uint64_t)t, 4);
  w->n_kv++;
}

void mxl_gguf_add_string(mxl_gguf_writer *w, const char *key, const char *value) {
  add_key(w, key, MXL_GGUF_STRING);
  put_string(&w->kv, value);
}

void mxl_gguf_add_f32(mxl_gguf_writer *w, const char *key, float value) {
  uint32_t u;
  memcpy(&u, &value, 4);
  add_key(w, key, MXL_GGUF_FLOAT32);
  put_le(&w->kv, u, 4);
}

void mxl_gguf_add_u32(mxl_gguf_writer *w, const char *key, uint32_t value) {
  add_key(w, key, MXL_GGUF_UINT32);
  put_le(&w->kv, value, 4);
}

void mxl_gguf_add_bool(mxl_gguf_writer *w, const char *key, int value) {
  add_key(w, key, MXL_GGUF_BOOL);
  put_le(&w->kv, value ? 1 : 0, 1);
}

void mxl_gguf_add_tensor(mxl_gguf_writer *w, const char *name, int n_dims, const int64_t *ne,
                         uint32_t type) {
  if (w->n_tensors == w->cap) {
    int cap = w->cap ? 2 * w->cap : 64;
    pending_tensor *grown = realloc(w->tensors, (size_t)cap * sizeof *grown);
    if (!grown) {
      w->failed = 1;
      return;
    }
    w->tensors = grown, w->cap = cap;
  }
  pending_tensor *t = &w->tensors[w->n_tensors++];
  memset(t, 0, sizeof *t);
  t->name = strdup(name);
  if (!t->name) w->failed = 1;
  t->n_dims = n_dims;
  t->type = type;
  t->nbytes = type == MXL_GGML_F32 ? 4 : 2;
  for (int d = 0; d < n_dims; d++) t->ne[d] = ne[d], t->nbytes *= (uint64_t)ne[d];
}

static uint64_t align_up(uint64_t v) {
  return (v + MXL_GGUF_ALIGNMENT - 1) / MXL_GGUF_ALIGNMENT * MXL_GGUF_ALIGNMENT;
}

static mxl_status pad(mxl_gguf_writer *w, uint64_t n) {
  static const uint8_t zeros[MXL_GGUF_ALIGNMENT];
  return n ? mxl_atomic_file_write(&w->f, zeros, (size_t)n) : MXL_OK;
}

mxl_status mxl_gguf_writer_begin_data(mxl_gguf_writer *w) {
  mxl_strbuf h = {0};
  mxl_strbuf_append(&h, "GGUF", 4);
  put_le(&h, MXL_GGUF_VERSION, 4);
  put_le(&h, (uint64_t)w->n_tensors, 8);
  put_le(&h, (uint64_t)w->n_kv, 8);
  if (w->kv.len) mxl_strbuf_append(&h, w->kv.data, w->kv.len);
  uint64_t offset = 0;
  for (int i = 0; i < w->n_tensors; i++) {
    pending_tensor *t = &w->tensors[i];
    put_string(&h, t->name);
    put_le(&h, (uint64_t)t->n_dims, 4);
    for (int d = 0; d < t->n_dims; d++) put_le(&h, (uint64_t)t->ne[d], 8);
    put_le(&h, t->type, 4);
    put_le(&h, offset, 8);
    t->offset = offset;
    offset = align_up(offset + t->nbytes);
  }
  mxl_status st = MXL_OK;
  if (w->failed || w->kv.failed || h.failed)
    st = mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", w->path);
  if (st == MXL_OK) st = mxl_atomic_file_begin(w->path, &w->f);
  if (st == MXL_OK) {
    w->open = 1;
    st = mxl_atomic_file_write(&w->f, h.data, h.len);
  }
  if (st == MXL_OK) st = pad(w, align_up(h.len) - h.len);
  mxl_strbuf_free(&h);
  return st;
}

mxl_status mxl_gguf_writer_write(mxl_gguf_writer *w, const void *data, size_t n) {
  const uint8_t *p = data;
  while (n > 0) {
    if (w->cur >= w->n_tensors)
      return mxl_errorf(MXL_ERR_STATE, "%s: more tensor data than declared", w->path);
    pending_tensor *t = &w->tensors[w->cur];
    uint64_t left = t->nbytes - w->cur_done;
    size_t take = n < left ? n : (size_t)left;
    MXL_TRY(mxl_atomic_file_write(&w->f, p, take));
    p += take, n -= take, w->cur_done += take;
    if (w->cur_done == t->nbytes) {
      if (w->cur + 1 < w->n_tensors) MXL_TRY(pad(w, align_up(t->nbytes) - t->nbytes));
      w->cur++, w->cur_done = 0;
    }
  }
  return MXL_OK;
}

static void writer_free(mxl_gguf_writer *w) {
  for (int i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
  free(w->tensors);
  mxl_strbuf_free(&w->kv);
  free(w->path);
  free(w);
}

mxl_status mxl_gguf_writer_commit(mxl_gguf_writer *w) {
  mxl_status st = MXL_OK;
  if (w->cur != w->n_tensors)
    st = mxl_errorf(MXL_ERR_STATE, "%s: tensor data for %d of %d tensors written", w->path,
                    w->cur, w->n_tensors);
  if (st == MXL_OK) st = mxl_atomic_file_commit(&w->f);
  if (st == MXL_OK) w->open = 0;
  if (st != MXL_OK) {
    mxl_gguf_writer_abort(w);
    return st;
  }
  writer_free(w);
  return MXL_OK;
}

void mxl_gguf_writer_abort(mxl_gguf_writer *w) {
  if (!w) return;
  if (w->open) mxl_atomic_file_abort(&w->f);
  writer_free(w);
}
