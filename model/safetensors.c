/* safetensors reader and writer.
 *
 * The reader is a list of validations, each a short function returning an
 * error that names the file and the problem; nothing from a file is used
 * before it has been checked. The writer streams tensor data through an
 * atomic file, so memory stays bounded and a failure leaves no file. */
#include "model/safetensors.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"
#include "core/json.h"
#include "core/status.h"
#include "core/strbuf.h"

/* Integers read from JSON are exact below 2^53 (cJSON holds doubles). */
#define MXL_ST_MAX_INT ((INT64_C(1) << 53) - 1)
/* An index of ~700 entries is ~60 KB; this bound only stops absurd files. */
#define MXL_ST_MAX_INDEX ((size_t)64 << 20)

/* ------------------------------------------------------------- dtypes */

static const struct {
  const char *name;
  size_t size;
} dtype_info[MXL_DT_COUNT] = {
    [MXL_DT_BOOL] = {"BOOL", 1},         [MXL_DT_U8] = {"U8", 1},
    [MXL_DT_I8] = {"I8", 1},             [MXL_DT_F8_E4M3] = {"F8_E4M3", 1},
    [MXL_DT_F8_E5M2] = {"F8_E5M2", 1},   [MXL_DT_I16] = {"I16", 2},
    [MXL_DT_U16] = {"U16", 2},           [MXL_DT_F16] = {"F16", 2},
    [MXL_DT_BF16] = {"BF16", 2},         [MXL_DT_I32] = {"I32", 4},
    [MXL_DT_U32] = {"U32", 4},           [MXL_DT_F32] = {"F32", 4},
    [MXL_DT_I64] = {"I64", 8},           [MXL_DT_U64] = {"U64", 8},
    [MXL_DT_F64] = {"F64", 8},
};

const char *mxl_dtype_name(mxl_dtype dt) {
  return (unsigned)dt < MXL_DT_COUNT ? dtype_info[dt].name : "invalid";
}

size_t mxl_dtype_size(mxl_dtype dt) {
  return (unsigned)dt < MXL_DT_COUNT ? dtype_info[dt].size : 0;
}

int mxl_dtype_parse(const char *name) {
  for (int i = 0; name && i < MXL_DT_COUNT; i++)
    if (!strcmp(name, dtype_info[i].name)) return i;
  return -1;
}

/* Bytes of a tensor; returns 0 if the product overflows 64 bits. */
static int tensor_nbytes(mxl_dtype dt, int ndim, const int64_t *shape, uint64_t *out) {
  uint64_t n = mxl_dtype_size(dt);
  for (int i = 0; i < ndim; i++) {
    uint64_t d = (uint64_t)shape[i];
    if (d != 0 && n > UINT64_MAX / d) return 0;
    n *= d;
  }
  *out = n;
  return 1;
}

static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
  size_t used = (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < ndim && used < cap; i++)
    used += (size_t)snprintf(buf + used, cap - used, "%s%" PRId64, i ? ", " : "", shape[i]);
  if (used < cap) snprintf(buf + used, cap - used, "]");
}

/* ------------------------------------------------------ reader state */

typedef struct st_impl {
  int borrowed;   /* files[] point into caller memory: never unmapped */
  char **meta;    /* key0, value0, key1, value1, ... of the first file */
  int n_meta;
  int cap_tensors;
} st_impl;

static mxl_status st_create(int n_files, const char *what, mxl_safetensors **out) {
  mxl_safetensors *st = calloc(1, sizeof *st);
  st_impl *impl = calloc(1, sizeof *impl);
  mxl_mapping *files = calloc((size_t)n_files, sizeof *files);
  if (!st || !impl || !files) {
    free(st);
    free(impl);
    free(files);
    return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", what);
  }
  st->files = files;
  st->n_files = n_files;
  st->impl = impl;
  *out = st;
  return MXL_OK;
}

void mxl_safetensors_close(mxl_safetensors *st) {
  if (!st) return;
  st_impl *impl = st->impl;
  for (int i = 0; i < st->n_tensors; i++) free((char *)st->tensors[i].name);
  free(st->tensors);
  for (int i = 0; impl && i < 2 * impl->n_meta; i++) free(impl->meta[i]);
  for (int i = 0; i < st->n_files; i++) {
    if (impl && impl->borrowed) {
      free(st->files[i].path);
    } else {
      mxl_mapping_close(&st->files[i]);
    }
  }
  if (impl) free(impl->meta);
  free(impl);
  free(st->files);
  free(st);
}

static mxl_status push_tensor(mxl_safetensors *st, const mxl_st_tensor *t, const char *path) {
  st_impl *impl = st->impl;
  if (st->n_tensors == impl->cap_tensors) {
    int cap = impl->cap_tensors ? 2 * impl->cap_tensors : 64;
    mxl_st_tensor *grown = realloc(st->tensors, (size_t)cap * sizeof *grown);
    if (!grown) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
    st->tensors = grown;
    impl->cap_tensors = cap;
  }
  st->tensors[st->n_tensors] = *t;
  st->tensors[st->n_tensors].name = strdup(t->name);
  if (!st->tensors[st->n_tensors].name)
    return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  st->n_tensors++;
  return MXL_OK;
}

static mxl_status push_metadata(st_impl *impl, const char *key, const char *value,
                                const char *path) {
  char **grown = realloc(impl->meta, (size_t)(impl->n_meta + 1) * 2 * sizeof *grown);
  if (!grown) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  impl->meta = grown;
  char *k = strdup(key), *v = strdup(value);
  if (!k || !v) {
    free(k);
    free(v);
    return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  }
  impl->meta[2 * impl->n_meta] = k;
  impl->meta[2 * impl->n_meta + 1] = v;
  impl->n_meta++;
  return MXL_OK;
}

/* malloc for n >= 0 elements; never malloc(0), whose result may be NULL. */
static void *malloc_array(int n, size_t elem) { return malloc((n > 0 ? (size_t)n : 1) * elem); }

static int compare_strings(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorts `names` and returns the first name present twice, or NULL. */
static const char *first_duplicate(const char **names, size_t n) {
  qsort(names, n, sizeof *names, compare_strings);
  for (size_t i = 1; i < n; i++)
    if (!strcmp(names[i - 1], names[i])) return names[i];
  return NULL;
}

/* -------------------------------------------------- one file's header */

/* The file holds the length prefix, and the header fits inside it. */
static mxl_status check_header_length(const mxl_mapping *m, uint64_t *header_len) {
  if (m->size < 8)
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: %zu bytes, too small for a safetensors file (an 8-byte header "
                      "length comes first)",
                      m->path, m->size);
  uint64_t n = mxl_get_le64(m->data);
  if (n > MXL_ST_MAX_HEADER)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: header length %" PRIu64
                      " exceeds the limit of %" PRIu64 " bytes",
                      m->path, n, MXL_ST_MAX_HEADER);
  if (n > m->size - 8)
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: header length %" PRIu64 " runs past the end of the file (%zu bytes)",
                      m->path, n, m->size);
  *header_len = n;
  return MXL_OK;
}

/* The header is one JSON object. */
static mxl_status parse_header_json(const mxl_mapping *m, uint64_t header_len, cJSON **root) {
  char source[1024];
  snprintf(source, sizeof source, "%s: header", m->path);
  MXL_TRY(mxl_json_parse((const char *)m->data + 8, (size_t)header_len, source, root));
  if (!cJSON_IsObject(*root)) {
    mxl_status st = mxl_errorf(MXL_ERR_FORMAT, "%s: expected a JSON object, got %s", source,
                               mxl_json_type_name(*root));
    cJSON_Delete(*root);
    *root = NULL;
    return st;
  }
  return MXL_OK;
}

/* "__metadata__" is an object whose values are strings and whose keys are
 * unique; it is kept only for the first file of a checkpoint. */
static mxl_status read_metadata(st_impl *impl, const cJSON *meta, int keep, const char *path) {
  if (!cJSON_IsObject(meta))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: __metadata__: expected an object, got %s", path,
                      mxl_json_type_name(meta));
  size_t n = 0;
  for (const cJSON *e = meta->child; e; e = e->next, n++)
    if (!cJSON_IsString(e))
      return mxl_errorf(MXL_ERR_FORMAT, "%s: __metadata__: %s: expected a string, got %s",
                        path, e->string, mxl_json_type_name(e));
  const char **keys = malloc((n ? n : 1) * sizeof *keys);
  if (!keys) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  n = 0;
  for (const cJSON *e = meta->child; e; e = e->next) keys[n++] = e->string;
  const char *dup = first_duplicate(keys, n);
  free(keys);
  if (dup) return mxl_errorf(MXL_ERR_FORMAT, "%s: __metadata__: %s: duplicate key", path, dup);
  for (const cJSON *e = meta->child; keep && e; e = e->next)
    MXL_TRY(push_metadata(impl, e->string, e->valuestring, path));
  return MXL_OK;
}

static mxl_status read_dtype(const cJSON *entry, const char *where, mxl_dtype *out) {
  const char *name = NULL;
  MXL_TRY(mxl_json_get_string(entry, "dtype", &name, where));
  int dt = mxl_dtype_parse(name);
  if (dt < 0) return mxl_errorf(MXL_ERR_FORMAT, "%s: dtype: unknown dtype \"%s\"", where, name);
  *out = (mxl_dtype)dt;
  return MXL_OK;
}

static mxl_status read_shape(const cJSON *entry, const char *where, mxl_st_tensor *t) {
  size_t ndim = 0;
  MXL_TRY(mxl_json_get_int_array(entry, "shape", 0, MXL_ST_MAX_INT, t->shape, MXL_ST_MAX_DIMS,
                                 &ndim, where));
  t->ndim = (int)ndim;
  return MXL_OK;
}

/* data_offsets is [begin, end] with begin <= end <= the data area size. */
static mxl_status read_offsets(const cJSON *entry, const char *where, uint64_t area_size,
                               uint64_t *begin, uint64_t *end) {
  int64_t offsets[2];
  size_t n = 0;
  MXL_TRY(mxl_json_get_int_array(entry, "data_offsets", 0, MXL_ST_MAX_INT, offsets, 2, &n,
                                 where));
  if (n != 2)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: data_offsets: expected [begin, end], got %zu values",
                      where, n);
  *begin = (uint64_t)offsets[0];
  *end = (uint64_t)offsets[1];
  if (*begin > *end)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: data_offsets: begin %" PRIu64 " is after end %" PRIu64,
                      where, *begin, *end);
  if (*end > area_size)
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: data_offsets: span [%" PRIu64 ", %" PRIu64
                      ") lies outside the data area (%" PRIu64 " bytes)",
                      where, *begin, *end, area_size);
  return MXL_OK;
}

/* shape x dtype size, without overflow, equals the span's length. */
static mxl_status check_span_size(const mxl_st_tensor *t, uint64_t span, const char *where) {
  char shape[256];
  format_shape(shape, sizeof shape, t->ndim, t->shape);
  uint64_t nbytes;
  if (!tensor_nbytes(t->dtype, t->ndim, t->shape, &nbytes))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: shape %s of %s overflows 64 bits", where, shape,
                      mxl_dtype_name(t->dtype));
  if (nbytes != span)
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: shape %s of %s needs %" PRIu64
                      " bytes but data_offsets span %" PRIu64,
                      where, shape, mxl_dtype_name(t->dtype), nbytes, span);
  return MXL_OK;
}

/* One tensor entry: {"dtype", "shape", "data_offsets"}, each once. */
static mxl_status read_tensor(mxl_safetensors *st, int file, const cJSON *entry,
                              const uint8_t *area, uint64_t area_size) {
  const char *path = st->files[file].path;
  char where[1024];
  snprintf(where, sizeof where, "%s: tensor %s", path, entry->string);
  if (!cJSON_IsObject(entry))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: expected an object, got %s", where,
                      mxl_json_type_name(entry));
  MXL_TRY(mxl_json_check_unique_keys(entry, where));
  mxl_st_tensor t = {.name = entry->string, .file = file};
  uint64_t begin = 0, end = 0;
  MXL_TRY(read_dtype(entry, where, &t.dtype));
  MXL_TRY(read_shape(entry, where, &t));
  MXL_TRY(read_offsets(entry, where, area_size, &begin, &end));
  MXL_TRY(check_span_size(&t, end - begin, where));
  t.data = area + begin;
  t.nbytes = (size_t)(end - begin);
  return push_tensor(st, &t, path);
}

/* Every member of the header: the metadata (at most once) or a tensor. */
static mxl_status read_entries(mxl_safetensors *st, int file, const cJSON *root,
                               uint64_t header_len) {
  const mxl_mapping *m = &st->files[file];
  const uint8_t *area = m->data + 8 + header_len;
  uint64_t area_size = m->size - 8 - header_len;
  int seen_metadata = 0;
  for (const cJSON *e = root->child; e; e = e->next) {
    if (strcmp(e->string, "__metadata__") != 0) {
      MXL_TRY(read_tensor(st, file, e, area, area_size));
      continue;
    }
    if (seen_metadata++)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: __metadata__: duplicate key", m->path);
    MXL_TRY(read_metadata(st->impl, e, file == 0, m->path));
  }
  return MXL_OK;
}

static int compare_spans(const void *a, const void *b) {
  const mxl_st_tensor *x = *(const mxl_st_tensor *const *)a;
  const mxl_st_tensor *y = *(const mxl_st_tensor *const *)b;
  if (x->data != y->data) return x->data < y->data ? -1 : 1;
  return (x->nbytes > y->nbytes) - (x->nbytes < y->nbytes);
}

/* Non-empty spans of tensors [first, n) do not overlap (sorted by begin). */
static mxl_status check_overlaps(const mxl_safetensors *st, int first, const char *path) {
  int n = st->n_tensors - first;
  const mxl_st_tensor **order = malloc_array(n, sizeof *order);
  if (!order) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  int k = 0;
  for (int i = first; i < st->n_tensors; i++)
    if (st->tensors[i].nbytes > 0) order[k++] = &st->tensors[i];
  qsort(order, (size_t)k, sizeof *order, compare_spans);
  mxl_status status = MXL_OK;
  for (int i = 1; i < k && status == MXL_OK; i++)
    if (order[i]->data < order[i - 1]->data + order[i - 1]->nbytes)
      status = mxl_errorf(MXL_ERR_FORMAT, "%s: tensors %s and %s: data_offsets overlap", path,
                          order[i - 1]->name, order[i]->name);
  free(order);
  return status;
}

/* One file image, already in st->files[file]: every check but the name
 * uniqueness across files, which needs all of them. */
static mxl_status parse_file(mxl_safetensors *st, int file) {
  const mxl_mapping *m = &st->files[file];
  uint64_t header_len = 0;
  cJSON *root = NULL;
  MXL_TRY(check_header_length(m, &header_len));
  MXL_TRY(parse_header_json(m, header_len, &root));
  int first = st->n_tensors;
  mxl_status status = read_entries(st, file, root, header_len);
  cJSON_Delete(root);
  MXL_TRY(status);
  return check_overlaps(st, first, m->path);
}

static int compare_tensor_names(const void *a, const void *b) {
  return strcmp(((const mxl_st_tensor *)a)->name, ((const mxl_st_tensor *)b)->name);
}

/* Sorts all tensors by name and refuses a name seen twice. */
static mxl_status sort_and_check_names(mxl_safetensors *st) {
  if (st->n_tensors > 1)
    qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, compare_tensor_names);
  for (int i = 1; i < st->n_tensors; i++) {
    const mxl_st_tensor *a = &st->tensors[i - 1], *b = &st->tensors[i];
    if (strcmp(a->name, b->name) != 0) continue;
    if (a->file == b->file)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: tensor %s: duplicate name", st->files[a->file].path,
                        a->name);
    return mxl_errorf(MXL_ERR_FORMAT, "tensor %s is in both %s and %s", a->name,
                      st->files[a->file].path, st->files[b->file].path);
  }
  return MXL_OK;
}

/* Parses the one file of a fresh `st` (when `status` says it is in place)
 * and hands st out; on any failure st is closed. */
static mxl_status finish_single(mxl_safetensors *st, mxl_status status,
                                mxl_safetensors **out) {
  if (status == MXL_OK) status = parse_file(st, 0);
  if (status == MXL_OK) status = sort_and_check_names(st);
  if (status != MXL_OK) {
    mxl_safetensors_close(st);
    return status;
  }
  *out = st;
  return MXL_OK;
}

mxl_status mxl_safetensors_parse_buffer(const uint8_t *data, size_t size, const char *name,
                                        mxl_safetensors **out) {
  *out = NULL;
  mxl_safetensors *st = NULL;
  MXL_TRY(st_create(1, name, &st));
  ((st_impl *)st->impl)->borrowed = 1;
  st->files[0].data = data;
  st->files[0].size = size;
  st->files[0].path = strdup(name);
  mxl_status status = st->files[0].path
                          ? MXL_OK
                          : mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", name);
  return finish_single(st, status, out);
}

static mxl_status open_single(const char *path, mxl_safetensors **out) {
  mxl_safetensors *st = NULL;
  MXL_TRY(st_create(1, path, &st));
  return finish_single(st, mxl_mapping_open(path, &st->files[0]), out);
}

/* ------------------------------------------------ sharded checkpoints */

typedef struct map_entry {
  const char *name;  /* tensor name, owned by the index's cJSON tree */
  const char *shard; /* shard file name, idem */
} map_entry;

typedef struct index_state {
  const char *path;   /* the index file */
  cJSON *root;
  map_entry *map;     /* weight_map, sorted by name */
  int n_map;
  const char **shards; /* distinct shard names, sorted; file i is shards[i] */
  int n_shards;
} index_state;

static int compare_entries(const void *a, const void *b) {
  return strcmp(((const map_entry *)a)->name, ((const map_entry *)b)->name);
}

/* A shard is named by a plain file name beside the index. */
static mxl_status check_shard_name(const index_state *ix, const map_entry *e) {
  if (e->shard[0] == '\0' || strchr(e->shard, '/') || !strcmp(e->shard, "..") ||
      !strcmp(e->shard, "."))
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: weight_map: tensor %s: shard \"%s\" is not a plain file name", ix->path,
                      e->name, e->shard);
  return MXL_OK;
}

/* weight_map: tensor name -> shard file name, names unique. */
static mxl_status read_weight_map(index_state *ix) {
  const cJSON *wm = NULL;
  MXL_TRY(mxl_json_get_object(ix->root, "weight_map", &wm, ix->path));
  int n = 0;
  for (const cJSON *e = wm->child; e; e = e->next) n++;
  ix->map = malloc_array(n, sizeof *ix->map);
  if (!ix->map) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", ix->path);
  for (const cJSON *e = wm->child; e; e = e->next) {
    if (!cJSON_IsString(e))
      return mxl_errorf(MXL_ERR_FORMAT,
                        "%s: weight_map: tensor %s: expected a shard file name, got %s",
                        ix->path, e->string, mxl_json_type_name(e));
    map_entry *m = &ix->map[ix->n_map++];
    m->name = e->string;
    m->shard = e->valuestring;
    MXL_TRY(check_shard_name(ix, m));
  }
  qsort(ix->map, (size_t)ix->n_map, sizeof *ix->map, compare_entries);
  for (int i = 1; i < ix->n_map; i++)
    if (!strcmp(ix->map[i - 1].name, ix->map[i].name))
      return mxl_errorf(MXL_ERR_FORMAT, "%s: weight_map: tensor %s: duplicate name", ix->path,
                        ix->map[i].name);
  return MXL_OK;
}

/* The distinct shard names, each to be opened once. */
static mxl_status collect_shards(index_state *ix) {
  ix->shards = malloc_array(ix->n_map, sizeof *ix->shards);
  if (!ix->shards) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", ix->path);
  for (int i = 0; i < ix->n_map; i++) ix->shards[i] = ix->map[i].shard;
  qsort(ix->shards, (size_t)ix->n_map, sizeof *ix->shards, compare_strings);
  for (int i = 0; i < ix->n_map; i++)
    if (ix->n_shards == 0 || strcmp(ix->shards[ix->n_shards - 1], ix->shards[i]) != 0)
      ix->shards[ix->n_shards++] = ix->shards[i];
  if (ix->n_shards == 0)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: weight_map: names no tensor", ix->path);
  return MXL_OK;
}

static mxl_status open_shard(mxl_safetensors *st, const index_state *ix, int i) {
  char *dir = strdup(ix->path);
  if (!dir) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", ix->path);
  char *slash = strrchr(dir, '/');
  if (slash) {
    slash[1] = '\0';
  } else {
    dir[0] = '\0';
  }
  char *path = mxl_path_join(dir, ix->shards[i]);
  free(dir);
  if (!path) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", ix->path);
  mxl_status status = mxl_mapping_open(path, &st->files[i]);
  free(path);
  if (status != MXL_OK)
    return mxl_error_prefix(status, "%s: weight_map names shard %s: ", ix->path,
                            ix->shards[i]);
  return parse_file(st, i);
}

/* The map and the shards list the same tensors, each in the same shard.
 * Both lists are sorted by name, so one merge walk compares them. */
static mxl_status cross_check(const mxl_safetensors *st, const index_state *ix) {
  int i = 0, j = 0;
  while (i < ix->n_map || j < st->n_tensors) {
    const map_entry *m = i < ix->n_map ? &ix->map[i] : NULL;
    const mxl_st_tensor *t = j < st->n_tensors ? &st->tensors[j] : NULL;
    int c = !m ? 1 : !t ? -1 : strcmp(m->name, t->name);
    if (c < 0)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: weight_map: tensor %s: not found in shard %s",
                        ix->path, m->name, m->shard);
    if (c > 0)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: tensor %s is in shard %s but not in weight_map",
                        ix->path, t->name, ix->shards[t->file]);
    if (strcmp(m->shard, ix->shards[t->file]) != 0)
      return mxl_errorf(MXL_ERR_FORMAT,
                        "%s: weight_map: tensor %s: not found in shard %s (it is in %s)",
                        ix->path, m->name, m->shard, ix->shards[t->file]);
    i++;
    j++;
  }
  return MXL_OK;
}

/* metadata.total_size, when given, is the sum of the tensors' bytes. */
static mxl_status check_total_size(const mxl_safetensors *st, const index_state *ix) {
  const cJSON *meta = NULL;
  MXL_TRY(mxl_json_opt_object(ix->root, "metadata", &meta, ix->path));
  if (!meta) return MXL_OK;
  char source[1024];
  snprintf(source, sizeof source, "%s: metadata", ix->path);
  int64_t total = -1;
  MXL_TRY(mxl_json_opt_int_range(meta, "total_size", 0, MXL_ST_MAX_INT, -1, &total, source));
  if (total < 0) return MXL_OK;
  uint64_t sum = 0;
  for (int i = 0; i < st->n_tensors; i++) sum += st->tensors[i].nbytes;
  if ((uint64_t)total != sum)
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: metadata: total_size is %" PRId64 " but the tensors hold %" PRIu64
                      " bytes",
                      ix->path, total, sum);
  return MXL_OK;
}

static mxl_status open_index_shards(index_state *ix, mxl_safetensors **out) {
  MXL_TRY(mxl_json_parse_file(ix->path, MXL_ST_MAX_INDEX, &ix->root));
  if (!cJSON_IsObject(ix->root))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: expected a JSON object, got %s", ix->path,
                      mxl_json_type_name(ix->root));
  MXL_TRY(read_weight_map(ix));
  MXL_TRY(collect_shards(ix));
  MXL_TRY(st_create(ix->n_shards, ix->path, out));
  for (int i = 0; i < ix->n_shards; i++) MXL_TRY(open_shard(*out, ix, i));
  MXL_TRY(sort_and_check_names(*out));
  MXL_TRY(cross_check(*out, ix));
  return check_total_size(*out, ix);
}

static mxl_status open_index(const char *path, mxl_safetensors **out) {
  index_state ix = {.path = path};
  mxl_safetensors *st = NULL;
  mxl_status status = open_index_shards(&ix, &st);
  cJSON_Delete(ix.root);
  free(ix.map);
  free(ix.shards);
  if (status != MXL_OK) {
    mxl_safetensors_close(st);
    return status;
  }
  *out = st;
  return MXL_OK;
}

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && !strcmp(s + a - b, suffix);
}

mxl_status mxl_safetensors_open(const char *path, mxl_safetensors **out) {
  *out = NULL;
  if (ends_with(path, ".json")) return open_index(path, out);
  return open_single(path, out);
}

/* ------------------------------------------------------------ lookups */

const mxl_st_tensor *mxl_safetensors_find(const mxl_safetensors *st, const char *name) {
  if (!st || !name || st->n_tensors == 0) return NULL;
  mxl_st_tensor key = {.name = name};
  return bsearch(&key, st->tensors, (size_t)st->n_tensors, sizeof *st->tensors,
                 compare_tensor_names);
}

const char *mxl_safetensors_metadata(const mxl_safetensors *st, const char *key) {
  const st_impl *impl = st ? st->impl : NULL;
  for (int i = 0; impl && key && i < impl->n_meta; i++)
    if (!strcmp(impl->meta[2 * i], key)) return impl->meta[2 * i + 1];
  return NULL;
}

int mxl_safetensors_metadata_count(const mxl_safetensors *st) {
  return st && st->impl ? ((const st_impl *)st->impl)->n_meta : 0;
}

void mxl_safetensors_metadata_at(const mxl_safetensors *st, int i, const char **key,
                                 const char **value) {
  *key = *value = NULL;
  if (i < 0 || i >= mxl_safetensors_metadata_count(st)) return;
  const st_impl *impl = st->impl;
  *key = impl->meta[2 * i];
  *value = impl->meta[2 * i + 1];
}

/* ------------------------------------------------------------- writer */

struct mxl_st_writer {
  mxl_atomic_file file;
  uint64_t declared; /* data bytes the header promises */
  uint64_t written;
  int failed;        /* a write failed: commit must not publish the file */
};

/* Each spec is a valid, uniquely named tensor; sums the data bytes. */
static mxl_status check_specs(const char *path, const mxl_st_spec *specs, int n,
                              uint64_t *total) {
  *total = 0;
  for (int i = 0; i < n; i++) {
    const mxl_st_spec *s = &specs[i];
    if (!s->name || !strcmp(s->name, "__metadata__"))
      return mxl_errorf(MXL_ERR_ARGUMENT, "%s: tensor %d: invalid name \"%s\"", path, i,
                        s->name ? s->name : "(null)");
    if ((unsigned)s->dtype >= MXL_DT_COUNT || s->ndim < 0 || s->ndim > MXL_ST_MAX_DIMS)
      return mxl_errorf(MXL_ERR_ARGUMENT, "%s: tensor %s: invalid dtype %d or ndim %d", path,
                        s->name, (int)s->dtype, s->ndim);
    for (int d = 0; d < s->ndim; d++)
      if (s->shape[d] < 0 || s->shape[d] > MXL_ST_MAX_INT)
        return mxl_errorf(MXL_ERR_ARGUMENT, "%s: tensor %s: dimension %d is %" PRId64, path,
                          s->name, d, s->shape[d]);
    uint64_t nbytes;
    if (!tensor_nbytes(s->dtype, s->ndim, s->shape, &nbytes) || nbytes > MXL_ST_MAX_INT ||
        *total + nbytes > (uint64_t)MXL_ST_MAX_INT)
      return mxl_errorf(MXL_ERR_ARGUMENT, "%s: tensor %s: too large", path, s->name);
    *total += nbytes;
  }
  return MXL_OK;
}

/* No name twice among `n` strings taken every `stride`-th from `names`. */
static mxl_status check_unique(const char *path, const char *what, const char *const *names,
                               int n, int stride) {
  const char **sorted = malloc_array(n, sizeof *sorted);
  if (!sorted) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  for (int i = 0; i < n; i++) sorted[i] = names[(size_t)i * (size_t)stride];
  const char *dup = first_duplicate(sorted, (size_t)n);
  mxl_status status = MXL_OK;
  if (dup) status = mxl_errorf(MXL_ERR_ARGUMENT, "%s: %s %s: duplicate name", path, what, dup);
  free(sorted);
  return status;
}

static mxl_status check_metadata_args(const char *path, const char *const *metadata, int n) {
  if (n < 0 || (n > 0 && !metadata))
    return mxl_errorf(MXL_ERR_ARGUMENT, "%s: invalid metadata (%d pairs)", path, n);
  for (int i = 0; i < 2 * n; i++)
    if (!metadata[i])
      return mxl_errorf(MXL_ERR_ARGUMENT, "%s: metadata pair %d holds NULL", path, i / 2);
  return check_unique(path, "metadata key", metadata, n, 2);
}

static mxl_status check_names(const char *path, const mxl_st_spec *specs, int n) {
  const char **names = malloc_array(n, sizeof *names);
  if (!names) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  for (int i = 0; i < n; i++) names[i] = specs[i].name;
  mxl_status status = check_unique(path, "tensor", names, n, 1);
  free(names);
  return status;
}

/* The header JSON, in declaration order with contiguous data_offsets,
 * padded with spaces so that the data area starts 8-byte aligned. */
static void build_header(mxl_strbuf *b, const mxl_st_spec *specs, int n,
                         const char *const *metadata, int n_metadata) {
  mxl_strbuf_puts(b, "{");
  if (n_metadata > 0) {
    mxl_strbuf_puts(b, "\"__metadata__\":{");
    for (int i = 0; i < n_metadata; i++) {
      if (i) mxl_strbuf_puts(b, ",");
      mxl_strbuf_json_string(b, metadata[2 * i], strlen(metadata[2 * i]));
      mxl_strbuf_puts(b, ":");
      mxl_strbuf_json_string(b, metadata[2 * i + 1], strlen(metadata[2 * i + 1]));
    }
    mxl_strbuf_puts(b, "}");
  }
  uint64_t offset = 0;
  for (int i = 0; i < n; i++) {
    const mxl_st_spec *s = &specs[i];
    uint64_t nbytes = 0;
    tensor_nbytes(s->dtype, s->ndim, s->shape, &nbytes);
    if (i || n_metadata > 0) mxl_strbuf_puts(b, ",");
    mxl_strbuf_json_string(b, s->name, strlen(s->name));
    mxl_strbuf_puts(b, ":{\"dtype\":\"");
    mxl_strbuf_puts(b, mxl_dtype_name(s->dtype));
    mxl_strbuf_puts(b, "\",\"shape\":[");
    for (int d = 0; d < s->ndim; d++) {
      if (d) mxl_strbuf_puts(b, ",");
      mxl_strbuf_printf(b, "%" PRIu64, (uint64_t)s->shape[d]);
    }
    mxl_strbuf_puts(b, "],\"data_offsets\":[");
    mxl_strbuf_printf(b, "%" PRIu64, offset);
    mxl_strbuf_puts(b, ",");
    mxl_strbuf_printf(b, "%" PRIu64, offset + nbytes);
    mxl_strbuf_puts(b, "]}");
    offset += nbytes;
  }
  mxl_strbuf_puts(b, "}");
  while (!b->failed && b->len % 8 != 0) mxl_strbuf_puts(b, " ");
}

/* The u64 little-endian header length, then the header. */
static mxl_status write_header(mxl_st_writer *w, const mxl_strbuf *b) {
  uint8_t len[8];
  mxl_put_le64(len, (uint64_t)b->len);
  MXL_TRY(mxl_atomic_file_write(&w->file, len, sizeof len));
  return mxl_atomic_file_write(&w->file, b->data, b->len);
}

mxl_status mxl_st_writer_begin(const char *path, const mxl_st_spec *specs, int n_specs,
                               const char *const *metadata, int n_metadata,
                               mxl_st_writer **out) {
  *out = NULL;
  if (n_specs < 0 || (n_specs > 0 && !specs))
    return mxl_errorf(MXL_ERR_ARGUMENT, "%s: invalid tensor list (%d tensors)", path, n_specs);
  uint64_t total = 0;
  MXL_TRY(check_specs(path, specs, n_specs, &total));
  MXL_TRY(check_names(path, specs, n_specs));
  MXL_TRY(check_metadata_args(path, metadata, n_metadata));
  mxl_strbuf header = {0};
  build_header(&header, specs, n_specs, metadata, n_metadata);
  if (header.failed || header.len > MXL_ST_MAX_HEADER) {
    free(header.data);
    return mxl_errorf(header.failed ? MXL_ERR_MEMORY : MXL_ERR_ARGUMENT,
                      "%s: cannot build a header of %zu bytes", path, header.len);
  }
  mxl_st_writer *w = calloc(1, sizeof *w);
  mxl_status status = w ? mxl_atomic_file_begin(path, &w->file)
                        : mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  if (status == MXL_OK) status = write_header(w, &header);
  free(header.data);
  if (status != MXL_OK) {
    if (w && w->file.fp) mxl_atomic_file_abort(&w->file);
    free(w);
    return status;
  }
  w->declared = total;
  *out = w;
  return MXL_OK;
}

mxl_status mxl_st_writer_write(mxl_st_writer *w, const void *data, size_t n) {
  if (!w) return mxl_errorf(MXL_ERR_ARGUMENT, "safetensors writer: NULL writer");
  if (w->failed)
    return mxl_errorf(MXL_ERR_STATE, "%s: an earlier write failed", w->file.final_path);
  if (n > w->declared - w->written) {
    w->failed = 1;
    return mxl_errorf(MXL_ERR_ARGUMENT,
                      "%s: writing %zu more bytes exceeds the %" PRIu64 " declared (%" PRIu64
                      " written)",
                      w->file.final_path, n, w->declared, w->written);
  }
  mxl_status status = mxl_atomic_file_write(&w->file, data, n);
  if (status != MXL_OK) {
    w->failed = 1;
    return status;
  }
  w->written += n;
  return MXL_OK;
}

mxl_status mxl_st_writer_commit(mxl_st_writer *w) {
  if (!w) return mxl_errorf(MXL_ERR_ARGUMENT, "safetensors writer: NULL writer");
  mxl_status status = MXL_OK;
  if (w->failed)
    status = mxl_errorf(MXL_ERR_STATE, "%s: an earlier write failed; nothing was written",
                        w->file.final_path);
  else if (w->written != w->declared)
    status = mxl_errorf(MXL_ERR_STATE,
                        "%s: %" PRIu64 " data bytes written, %" PRIu64
                        " declared; nothing was written",
                        w->file.final_path, w->written, w->declared);
  if (status == MXL_OK) {
    status = mxl_atomic_file_commit(&w->file);
  } else {
    mxl_atomic_file_abort(&w->file);
  }
  free(w);
  return status;
}

void mxl_st_writer_abort(mxl_st_writer *w) {
  if (!w) return;
  mxl_atomic_file_abort(&w->file);
  free(w);
}

mxl_status mxl_safetensors_write(const char *path, const mxl_st_spec *specs,
                                 const void *const *data, int n, const char *const *metadata,
                                 int n_metadata) {
  mxl_st_writer *w = NULL;
  MXL_TRY(mxl_st_writer_begin(path, specs, n, metadata, n_metadata, &w));
  for (int i = 0; i < n; i++) {
    uint64_t nbytes = 0;
    tensor_nbytes(specs[i].dtype, specs[i].ndim, specs[i].shape, &nbytes);
    if (nbytes > 0 && (!data || !data[i])) {
      mxl_st_writer_abort(w);
      return mxl_errorf(MXL_ERR_ARGUMENT, "%s: tensor %s: no data", path, specs[i].name);
    }
    mxl_status status = mxl_st_writer_write(w, nbytes ? data[i] : NULL, (size_t)nbytes);
    if (status != MXL_OK) {
      mxl_st_writer_abort(w);
      return status;
    }
  }
  return mxl_st_writer_commit(w);
}
