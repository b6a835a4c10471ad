/* model/safetensors: writer/reader round trips, sharded checkpoints through
 * an index, fixtures written by the Python `safetensors` package, and one
 * test per malformed input, each checking the status and that the message
 * names the file and the problem. */
#include <dirent.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fileio.h"
#include "model/safetensors.h"
#include "test.h"

static char dir[64]; /* a fresh temporary directory for this run */

static const char *tmp_path(const char *name) {
  static char paths[8][512];
  static int next;
  char *p = paths[next++ % 8];
  snprintf(p, 512, "%s/%s", dir, name);
  return p;
}

static int count_dir_entries(void) {
  DIR *d = opendir(dir);
  int n = 0;
  for (struct dirent *e; d && (e = readdir(d));)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  if (d) closedir(d);
  return n;
}

static void remove_dir_entries(void) {
  DIR *d = opendir(dir);
  for (struct dirent *e; d && (e = readdir(d));)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlink(tmp_path(e->d_name));
  if (d) closedir(d);
}

/* A hand-made file: u64 LE length of `header`, the header, `data_size`
 * bytes of data (a counting pattern). */
static void write_raw_len(const char *path, uint64_t header_len, const char *header,
                          size_t data_size) {
  size_t hn = strlen(header), n = 8 + hn + data_size;
  uint8_t *buf = malloc(n);
  if (!buf) return;
  for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(header_len >> (8 * i));
  memcpy(buf + 8, header, hn);
  for (size_t i = 0; i < data_size; i++) buf[8 + hn + i] = (uint8_t)i;
  MXL_CHECK_OK(mxl_write_file_atomic(path, buf, n));
  free(buf);
}

static void write_raw(const char *path, const char *header, size_t data_size) {
  write_raw_len(path, strlen(header), header, data_size);
}

static void write_text(const char *path, const char *text) {
  MXL_CHECK_OK(mxl_write_file_atomic(path, text, strlen(text)));
}

/* Opening `path` fails with `status` and a message holding "<path>: <needle>". */
static void check_open_fails(const char *path, mxl_status status, const char *needle) {
  char expected[512];
  snprintf(expected, sizeof expected, "%s: %s", path, needle);
  mxl_safetensors *st = (mxl_safetensors *)&st;
  MXL_CHECK_FAILS(mxl_safetensors_open(path, &st), status, expected);
  MXL_CHECK(st == NULL);
}

/* ------------------------------------------------------- round trips */

static void fill_pattern(uint8_t *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(seed * 31u + i * 7u + (i >> 8));
}

static void test_roundtrip_every_dtype(void) {
  mxl_st_spec specs[MXL_DT_COUNT + 2];
  uint8_t *data[MXL_DT_COUNT + 2];
  char names[MXL_DT_COUNT][32];
  int n = 0;
  for (int dt = 0; dt < MXL_DT_COUNT; dt++, n++) {
    /* Names in reverse alphabetical order of declaration: sorting matters. */
    snprintf(names[dt], sizeof names[dt], "t%02d.%s", MXL_DT_COUNT - dt, mxl_dtype_name(dt));
    specs[n] = (mxl_st_spec){names[dt], (mxl_dtype)dt, 3, {2, 3, 5}};
  }
  specs[n++] = (mxl_st_spec){"scalar", MXL_DT_F32, 0, {0}};
  specs[n++] = (mxl_st_spec){"empty", MXL_DT_BF16, 2, {0, 4}};
  for (int i = 0; i < n; i++) {
    size_t bytes = mxl_dtype_size(specs[i].dtype);
    for (int d = 0; d < specs[i].ndim; d++) bytes *= (size_t)specs[i].shape[d];
    data[i] = malloc(bytes ? bytes : 1);
    fill_pattern(data[i], bytes, (unsigned)i);
  }
  const char *path = tmp_path("all.safetensors");
  MXL_CHECK_OK(mxl_safetensors_write(path, specs, (const void *const *)data, n, NULL, 0));
  mxl_safetensors *st = NULL;
  MXL_CHECK_OK(mxl_safetensors_open(path, &st));
  if (st) {
    MXL_CHECK(st->n_tensors == n && st->n_files == 1);
    for (int i = 1; i < st->n_tensors; i++)
      MXL_CHECK(strcmp(st->tensors[i - 1].name, st->tensors[i].name) < 0);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = header_len << 8 | st->files[0].data[i];
    MXL_CHECK_MSG(header_len % 8 == 0, "header length %" PRIu64, header_len);
    /* Data is contiguous in declaration order, starting after the header. */
    const uint8_t *expect = st->files[0].data + 8 + header_len;
    for (int i = 0; i < n; i++) {
      const mxl_st_tensor *t = mxl_safetensors_find(st, specs[i].name);
      MXL_CHECK_MSG(t != NULL, "%s", specs[i].name);
      if (!t) continue;
      MXL_CHECK(t->dtype == specs[i].dtype && t->ndim == specs[i].ndim);
      MXL_CHECK(!memcmp(t->shape, specs[i].shape, sizeof(int64_t) * (size_t)t->ndim));
      MXL_CHECK(t->data == expect);
      MXL_CHECK(t->nbytes == 0 || !memcmp(t->data, data[i], t->nbytes));
      expect += t->nbytes;
    }
    MXL_CHECK(expect == st->files[0].data + st->files[0].size);
    const mxl_st_tensor *scalar = mxl_safetensors_find(st, "scalar");
    MXL_CHECK(scalar && scalar->ndim == 0 && scalar->nbytes == 4);
    const mxl_st_tensor *empty = mxl_safetensors_find(st, "empty");
    MXL_CHECK(empty && empty->ndim == 2 && empty->nbytes == 0);
    MXL_CHECK(mxl_safetensors_find(st, "absent") == NULL);
    MXL_CHECK(mxl_safetensors_metadata_count(st) == 0);
  }
  mxl_safetensors_close(st);
  for (int i = 0; i < n; i++) free(data[i]);
}

static void test_metadata_roundtrip(void) {
  const char *meta[] = {"format", "pt", "odd \"key\"\\", "line\nbreak\ttab é"};
  float x[3] = {1.0f, -2.5f, 3.25f};
  mxl_st_spec spec = {"x", MXL_DT_F32, 1, {3}};
  const void *data[] = {x};
  const char *path = tmp_path("meta.safetensors");
  MXL_CHECK_OK(mxl_safetensors_write(path, &spec, data, 1, meta, 2));
  mxl_safetensors *st = NULL;
  MXL_CHECK_OK(mxl_safetensors_open(path, &st));
  if (!st) return;
  MXL_CHECK(mxl_safetensors_metadata_count(st) == 2);
  const char *k = NULL, *v = NULL;
  mxl_safetensors_metadata_at(st, 1, &k, &v);
  MXL_CHECK(k && v && !strcmp(k, meta[2]) && !strcmp(v, meta[3]));
  MXL_CHECK(!strcmp(mxl_safetensors_metadata(st, "format"), "pt"));
  MXL_CHECK(mxl_safetensors_metadata(st, "absent") == NULL);
  mxl_safetensors_metadata_at(st, 2, &k, &v);
  MXL_CHECK(k == NULL && v == NULL);
  float back[3];
  const mxl_st_tensor *t = mxl_safetensors_find(st, "x");
  MXL_CHECK(t && t->nbytes == sizeof back);
  if (t) memcpy(back, t->data, sizeof back);
  MXL_CHECK(back[0] == 1.0f && back[1] == -2.5f && back[2] == 3.25f);
  mxl_safetensors_close(st);
}

/* Data streamed in uneven pieces lands where the header says. */
static void test_streaming_writer(void) {
  mxl_st_spec specs[2] = {{"a", MXL_DT_U8, 1, {1000}}, {"b", MXL_DT_I32, 2, {7, 3}}};
  uint8_t all[1000 + 84];
  fill_pattern(all, sizeof all, 9);
  const char *path = tmp_path("stream.safetensors");
  mxl_st_writer *w = NULL;
  MXL_CHECK_OK(mxl_st_writer_begin(path, specs, 2, NULL, 0, &w));
  if (!w) return;
  static const size_t pieces[] = {1, 13, 500, 0, 333, 200, 37};
  size_t at = 0;
  for (size_t i = 0; i < sizeof pieces / sizeof *pieces; i++) {
    MXL_CHECK_OK(mxl_st_writer_write(w, all + at, pieces[i]));
    at += pieces[i];
  }
  MXL_CHECK(at == sizeof all);
  MXL_CHECK(!mxl_path_exists(path)); /* nothing visible before commit */
  MXL_CHECK_OK(mxl_st_writer_commit(w));
  mxl_safetensors *st = NULL;
  MXL_CHECK_OK(mxl_safetensors_open(path, &st));
  const mxl_st_tensor *a = mxl_safetensors_find(st, "a"), *b = mxl_safetensors_find(st, "b");
  MXL_CHECK(a && b && a->nbytes == 1000 && b->nbytes == 84);
  if (a && b) MXL_CHECK(!memcmp(a->data, all, 1000) && !memcmp(b->data, all + 1000, 84));
  mxl_safetensors_close(st);
}

static void test_writer_byte_count(void) {
  mxl_st_spec spec = {"a", MXL_DT_F32, 1, {4}};
  uint8_t buf[32] = {0};
  const char *path = tmp_path("count.safetensors");
  mxl_st_writer *w = NULL;
  /* Too few bytes: commit refuses and leaves nothing. */
  MXL_CHECK_OK(mxl_st_writer_begin(path, &spec, 1, NULL, 0, &w));
  MXL_CHECK_OK(mxl_st_writer_write(w, buf, 12));
  MXL_CHECK_FAILS(mxl_st_writer_commit(w), MXL_ERR_STATE, "12 data bytes written, 16 declared");
  MXL_CHECK(!mxl_path_exists(path));
  /* Too many: the write is refused, and so is the commit after it. */
  MXL_CHECK_OK(mxl_st_writer_begin(path, &spec, 1, NULL, 0, &w));
  MXL_CHECK_OK(mxl_st_writer_write(w, buf, 10));
  MXL_CHECK_FAILS(mxl_st_writer_write(w, buf, 7), MXL_ERR_ARGUMENT, "exceeds the 16 declared");
  MXL_CHECK_FAILS(mxl_st_writer_write(w, buf, 6), MXL_ERR_STATE, "an earlier write failed");
  MXL_CHECK_FAILS(mxl_st_writer_commit(w), MXL_ERR_STATE, path);
  MXL_CHECK(!mxl_path_exists(path));
  MXL_CHECK(count_dir_entries() == 0);
}

static void test_aborted_writer_leaves_no_file(void) {
  remove_dir_entries();
  mxl_st_spec spec = {"a", MXL_DT_BF16, 2, {8, 8}};
  uint8_t buf[128] = {0};
  const char *path = tmp_path("aborted.safetensors");
  mxl_st_writer *w = NULL;
  MXL_CHECK_OK(mxl_st_writer_begin(path, &spec, 1, NULL, 0, &w));
  MXL_CHECK_OK(mxl_st_writer_write(w, buf, 64));
  MXL_CHECK(count_dir_entries() == 1); /* the temporary file */
  mxl_st_writer_abort(w);
  MXL_CHECK(count_dir_entries() == 0);
  MXL_CHECK(!mxl_path_exists(path));
  mxl_st_writer_abort(NULL);
}

static void test_writer_rejects_bad_specs(void) {
  const char *path = tmp_path("bad.safetensors");
  mxl_st_writer *w = (mxl_st_writer *)&w;
  mxl_st_spec dup[2] = {{"w", MXL_DT_F32, 1, {1}}, {"w", MXL_DT_F32, 1, {2}}};
  MXL_CHECK_FAILS(mxl_st_writer_begin(path, dup, 2, NULL, 0, &w), MXL_ERR_ARGUMENT,
                  "tensor w: duplicate name");
  MXL_CHECK(w == NULL);
  mxl_st_spec reserved = {"__metadata__", MXL_DT_F32, 1, {1}};
  MXL_CHECK_FAILS(mxl_st_writer_begin(path, &reserved, 1, NULL, 0, &w), MXL_ERR_ARGUMENT,
                  "invalid name \"__metadata__\"");
  mxl_st_spec bad_dt = {"w", MXL_DT_COUNT, 1, {1}};
  MXL_CHECK_FAILS(mxl_st_writer_begin(path, &bad_dt, 1, NULL, 0, &w), MXL_ERR_ARGUMENT,
                  "tensor w: invalid dtype");
  mxl_st_spec neg = {"w", MXL_DT_F32, 2, {3, -1}};
  MXL_CHECK_FAILS(mxl_st_writer_begin(path, &neg, 1, NULL, 0, &w), MXL_ERR_ARGUMENT,
                  "tensor w: dimension 1 is -1");
  mxl_st_spec deep = {"w", MXL_DT_F32, 9, {1}};
  MXL_CHECK_FAILS(mxl_st_writer_begin(path, &deep, 1, NULL, 0, &w), MXL_ERR_ARGUMENT,
                  "ndim 9");
  mxl_st_spec huge = {"w", MXL_DT_F64, 3, {1 << 20, 1 << 20, 1 << 20}};
  MXL_CHECK_FAILS(mxl_st_writer_begin(path, &huge, 1, NULL, 0, &w), MXL_ERR_ARGUMENT,
                  "tensor w: too large");
  mxl_st_spec ok = {"w", MXL_DT_F32, 1, {1}};
  const char *meta_null[] = {"k", NULL};
  MXL_CHECK_FAILS(mxl_st_writer_begin(path, &ok, 1, meta_null, 1, &w), MXL_ERR_ARGUMENT,
                  "metadata pair 0 holds NULL");
  const char *meta_dup[] = {"k", "1", "k", "2"};
  MXL_CHECK_FAILS(mxl_st_writer_begin(path, &ok, 1, meta_dup, 2, &w), MXL_ERR_ARGUMENT,
                  "metadata key k: duplicate name");
  MXL_CHECK_FAILS(mxl_safetensors_write(path, &ok, NULL, 1, NULL, 0), MXL_ERR_ARGUMENT,
                  "tensor w: no data");
  MXL_CHECK_FAILS(mxl_st_writer_begin("/nonexistent/dir/x.safetensors", &ok, 1, NULL, 0, &w),
                  MXL_ERR_IO, "/nonexistent/dir/x.safetensors");
  MXL_CHECK(count_dir_entries() == 0);
}

/* ------------------------------------------------ malformed single files */

static void test_truncated_file(void) {
  const char *path = tmp_path("short.safetensors");
  MXL_CHECK_OK(mxl_write_file_atomic(path, "\x10\0\0\0\0", 5));
  check_open_fails(path, MXL_ERR_FORMAT, "5 bytes, too small for a safetensors file");
  MXL_CHECK_OK(mxl_write_file_atomic(path, "", 0));
  check_open_fails(path, MXL_ERR_FORMAT, "0 bytes, too small");
}

static void test_header_beyond_file(void) {
  const char *path = tmp_path("beyond.safetensors");
  write_raw_len(path, 100, "{}", 4);
  check_open_fails(path, MXL_ERR_FORMAT,
                   "header length 100 runs past the end of the file (14 bytes)");
}

static void test_giant_header_length(void) {
  const char *path = tmp_path("giant.safetensors");
  write_raw_len(path, UINT64_C(1) << 40, "{}", 0);
  check_open_fails(path, MXL_ERR_FORMAT,
                   "header length 1099511627776 exceeds the limit of 100000000 bytes");
  write_raw_len(path, UINT64_MAX, "{}", 0);
  check_open_fails(path, MXL_ERR_FORMAT, "header length 18446744073709551615 exceeds the limit");
}

static void test_header_not_json(void) {
  const char *path = tmp_path("notjson.safetensors");
  write_raw(path, "{\"w\": {\"dtype\": \"F32\",,}}", 0);
  check_open_fails(path, MXL_ERR_FORMAT, "header: line 1, column");
  write_raw(path, "[1, 2]", 0);
  check_open_fails(path, MXL_ERR_FORMAT, "header: expected a JSON object, got array");
  write_raw(path, "{} {}", 0);
  check_open_fails(path, MXL_ERR_FORMAT,
                   "header: line 1, column 4 (byte 3): unexpected data after the JSON value");
  /* The header length cuts the JSON short. */
  write_raw_len(path, 4, "{\"a\":1}", 0);
  check_open_fails(path, MXL_ERR_FORMAT, "header: line 1");
}

static void test_header_padding_accepted(void) {
  const char *path = tmp_path("padded.safetensors");
  write_raw(path, "{\"w\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]}}     ", 3);
  mxl_safetensors *st = NULL;
  MXL_CHECK_OK(mxl_safetensors_open(path, &st));
  const mxl_st_tensor *t = mxl_safetensors_find(st, "w");
  MXL_CHECK(t && t->nbytes == 3 && t->data[2] == 2);
  mxl_safetensors_close(st);
}

static void test_bad_dtype(void) {
  const char *path = tmp_path("dtype.safetensors");
  write_raw(path, "{\"w\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
  check_open_fails(path, MXL_ERR_FORMAT, "tensor w: dtype: unknown dtype \"F33\"");
  write_raw(path, "{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
  check_open_fails(path, MXL_ERR_FORMAT, "tensor w: dtype: expected a string, got 4");
  write_raw(path, "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
  check_open_fails(path, MXL_ERR_FORMAT, "tensor w: dtype: missing required field");
}

static void test_bad_entry(void) {
  const char *path = tmp_path("entry.safetensors");
  write_raw(path, "{\"w\":\"F32\"}", 0);
  check_open_fails(path, MXL_ERR_FORMAT, "tensor w: expected an object, got string");
  write_raw(path,
            "{\"w\":{\"dtype\":\"U8\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1]}}",
            1);
  check_open_fails(path, MXL_ERR_FORMAT, "tensor w: dtype: duplicate key");
}

static void test_bad_shape(void) {
  const char *path = tmp_path("shape.safetensors");
  write_raw(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4);
  check_open_fails(path, MXL_ERR_FORMAT, "tensor w: shape[0]: -1 is out of range");
  write_raw(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1, 1.5],\"data_offsets\":[0,4]}}", 4);
  check_open_fails(path, MXL_ERR_FORMAT, "tensor w: shape[1]: expected an integer, got 1.5");
  write_raw(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":\"2x2\",\"data_offsets\":[0,4]}}", 4);
  check_open_fails(path, MXL_ERR_FORMAT, "tensor w: shape: expected an array of integers");
  write_raw(path,
            "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
            4);
  check_open_fails(path, MXL_ERR_FORMAT, "tensor w: shape: 9 elements, at most 8 allowed");
  write_raw(path,
            "{\"w\":{\"dtype\":\"F32\",\"shape\":[4503599627370496,4503599627370496],"
            "\"data_offsets\":[0,4]}}",
            4);
  check_open_fails(path, MXL_ERR_FORMAT,
                   "tensor w: shape [4503599627370496, 4503599627370496] of F32 overflows");
  write_raw(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4);
  check_open_fails(path, MXL_ERR_FORMAT, "tensor w: shape[0]: 1.0000000000000001e+300 is out");
}

static void test_shape_size_mismatch(void) {
  const char *path = tmp_path("mismatch.safetensors");
  write_raw(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24);
  check_open_fails(path, MXL_ERR_FORMAT,
                   "tensor w: shape [2, 3] of F32 needs 24 bytes but data_offsets span 20");
  write_raw(path, "{\"w\":{\"dtype\":\"BF16\",\"shape\":[0,3],\"data_offsets\":[0,2]}}", 2);
  check_open_fails(path, MXL_ERR_FORMAT, "tensor w: shape [0, 3] of BF16 needs 0 bytes");
}

static void test_bad_offsets(void) {
  const char *path = tmp_path("offsets.safetensors");
  write_raw(path, "{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8);
  check_open_fails(path, MXL_ERR_FORMAT, "tensor w: data_offsets: begin 8 is after end 4");
  write_raw(path, "{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4,8]}}", 8);
  check_open_fails(path, MXL_ERR_FORMAT, "tensor w: data_offsets: 3 elements, at most 2");
  write_raw(path, "{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4]}}", 8);
  check_open_fails(path, MXL_ERR_FORMAT, "tensor w: data_offsets: expected [begin, end], got 1");
  write_raw(path, "{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[-4,0]}}", 8);
  check_open_fails(path, MXL_ERR_FORMAT, "tensor w: data_offsets[0]: -4 is out of range");
}

static void test_span_outside_data(void) {
  const char *path = tmp_path("outside.safetensors");
  write_raw(path, "{\"w\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}", 10);
  check_open_fails(path, MXL_ERR_FORMAT,
                   "tensor w: data_offsets: span [4, 12) lies outside the data area (10 bytes)");
  /* Zero bytes just past the end is still outside. */
  write_raw(path, "{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[11,11]}}", 10);
  check_open_fails(path, MXL_ERR_FORMAT, "tensor w: data_offsets: span [11, 11) lies outside");
}

static void test_overlapping_spans(void) {
  const char *path = tmp_path("overlap.safetensors");
  write_raw(path,
            "{\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]},"
            "\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}",
            16);
  check_open_fails(path, MXL_ERR_FORMAT, "tensors a and b: data_offsets overlap");
  write_raw(path,
            "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
            "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
            16);
  check_open_fails(path, MXL_ERR_FORMAT, "tensors a and b: data_offsets overlap");
  /* Empty spans overlap nothing, and gaps are allowed. */
  write_raw(path,
            "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
            "\"z\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,4]},"
            "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[12,16]}}",
            16);
  mxl_safetensors *st = NULL;
  MXL_CHECK_OK(mxl_safetensors_open(path, &st));
  MXL_CHECK(st && st->n_tensors == 3);
  mxl_safetensors_close(st);
}

static void test_duplicate_name(void) {
  const char *path = tmp_path("dup.safetensors");
  write_raw(path,
            "{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
            "\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
            8);
  check_open_fails(path, MXL_ERR_FORMAT, "tensor w: duplicate name");
}

static void test_bad_metadata(void) {
  const char *path = tmp_path("meta_bad.safetensors");
  write_raw(path, "{\"__metadata__\":{\"format\":\"pt\",\"n\":3}}", 0);
  check_open_fails(path, MXL_ERR_FORMAT, "__metadata__: n: expected a string, got number");
  write_raw(path, "{\"__metadata__\":[\"pt\"]}", 0);
  check_open_fails(path, MXL_ERR_FORMAT, "__metadata__: expected an object, got array");
  write_raw(path, "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0);
  check_open_fails(path, MXL_ERR_FORMAT, "__metadata__: k: duplicate key");
  write_raw(path, "{\"__metadata__\":{},\"__metadata__\":{}}", 0);
  check_open_fails(path, MXL_ERR_FORMAT, "__metadata__: duplicate key");
}

static void test_missing_file(void) {
  const char *path = tmp_path("absent.safetensors");
  check_open_fails(path, MXL_ERR_IO, "cannot open");
}

/* The in-memory parser the fuzzer drives: same checks, no file. */
static void test_parse_buffer(void) {
  static const char header[] = "{\"w\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[0,4]}}";
  uint8_t buf[8 + sizeof header - 1 + 4];
  uint64_t n = sizeof header - 1;
  for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(n >> (8 * i));
  memcpy(buf + 8, header, n);
  memcpy(buf + 8 + n, "\x01\x02\x03\x04", 4);
  mxl_safetensors *st = NULL;
  MXL_CHECK_OK(mxl_safetensors_parse_buffer(buf, sizeof buf, "mem", &st));
  const mxl_st_tensor *t = mxl_safetensors_find(st, "w");
  MXL_CHECK(t && t->data == buf + 8 + n && t->nbytes == 4);
  mxl_safetensors_close(st);
  MXL_CHECK_FAILS(mxl_safetensors_parse_buffer(buf, sizeof buf - 1, "mem", &st),
                  MXL_ERR_FORMAT, "mem: tensor w: data_offsets: span [0, 4) lies outside");
  MXL_CHECK(st == NULL);
}

/* ------------------------------------------------------------- shards */

static const float shard_a0[4] = {1, 2, 3, 4};
static const float shard_a1[2] = {5, 6};
static const uint16_t shard_b0[3] = {7, 8, 9};

/* Shard A holds "a0", "a1"; shard B holds "b0". */
static void write_shards(void) {
  mxl_st_spec a[2] = {{"a0", MXL_DT_F32, 2, {2, 2}}, {"a1", MXL_DT_F32, 1, {2}}};
  const void *ad[2] = {shard_a0, shard_a1};
  const char *meta[] = {"format", "pt"};
  MXL_CHECK_OK(mxl_safetensors_write(tmp_path("model-00001-of-00002.safetensors"), a, ad, 2,
                                     meta, 1));
  mxl_st_spec b = {"b0", MXL_DT_BF16, 1, {3}};
  const void *bd[1] = {shard_b0};
  MXL_CHECK_OK(
      mxl_safetensors_write(tmp_path("model-00002-of-00002.safetensors"), &b, bd, 1, NULL, 0));
}

static const char *write_index(const char *weight_map, const char *metadata) {
  char text[2048];
  snprintf(text, sizeof text, "{%s%s\"weight_map\": {%s}}", metadata, metadata[0] ? "," : "",
           weight_map);
  const char *path = tmp_path("model.safetensors.index.json");
  write_text(path, text);
  return path;
}

#define MAP_A0 "\"a0\": \"model-00001-of-00002.safetensors\""
#define MAP_A1 "\"a1\": \"model-00001-of-00002.safetensors\""
#define MAP_B0 "\"b0\": \"model-00002-of-00002.safetensors\""

static void test_sharded_open(void) {
  remove_dir_entries();
  write_shards();
  const char *index = write_index(MAP_B0 "," MAP_A1 "," MAP_A0, "\"metadata\": {\"total_size\": 30}");
  mxl_safetensors *st = NULL;
  MXL_CHECK_OK(mxl_safetensors_open(index, &st));
  if (!st) return;
  MXL_CHECK(st->n_files == 2 && st->n_tensors == 3);
  const mxl_st_tensor *a0 = mxl_safetensors_find(st, "a0");
  const mxl_st_tensor *a1 = mxl_safetensors_find(st, "a1");
  const mxl_st_tensor *b0 = mxl_safetensors_find(st, "b0");
  MXL_CHECK(a0 && a1 && b0);
  if (a0 && a1 && b0) {
    MXL_CHECK(a0->file == a1->file && a0->file != b0->file);
    MXL_CHECK(strstr(st->files[a0->file].path, "model-00001-of-00002.safetensors") != NULL);
    MXL_CHECK(strstr(st->files[b0->file].path, "model-00002-of-00002.safetensors") != NULL);
    MXL_CHECK(!memcmp(a0->data, shard_a0, sizeof shard_a0));
    MXL_CHECK(!memcmp(a1->data, shard_a1, sizeof shard_a1));
    MXL_CHECK(!memcmp(b0->data, shard_b0, sizeof shard_b0));
    MXL_CHECK(b0->dtype == MXL_DT_BF16 && b0->shape[0] == 3);
  }
  const char *format = mxl_safetensors_metadata(st, "format");
  MXL_CHECK(format && !strcmp(format, "pt"));
  mxl_safetensors_close(st);
  /* total_size is optional. */
  index = write_index(MAP_A0 "," MAP_A1 "," MAP_B0, "");
  MXL_CHECK_OK(mxl_safetensors_open(index, &st));
  mxl_safetensors_close(st);
}

static void test_index_missing_shard(void) {
  write_shards();
  const char *index =
      write_index(MAP_A0 "," MAP_A1 "," MAP_B0 ", \"c\": \"model-00003.safetensors\"", "");
  check_open_fails(index, MXL_ERR_IO, "weight_map names shard model-00003.safetensors: ");
}

static void test_index_shard_disagree(void) {
  write_shards();
  /* A name in the map that its shard lacks. */
  const char *index = write_index(
      MAP_A0 "," MAP_A1 "," MAP_B0 ", \"zz\": \"model-00002-of-00002.safetensors\"", "");
  check_open_fails(index, MXL_ERR_FORMAT,
                   "weight_map: tensor zz: not found in shard model-00002-of-00002.safetensors");
  /* A tensor of a shard that the map lacks. */
  index = write_index(MAP_A0 "," MAP_B0, "");
  check_open_fails(index, MXL_ERR_FORMAT,
                   "tensor a1 is in shard model-00001-of-00002.safetensors but not in "
                   "weight_map");
  /* A name mapped to the wrong shard. */
  index = write_index(MAP_A0 "," MAP_B0 ", \"a1\": \"model-00002-of-00002.safetensors\"", "");
  check_open_fails(index, MXL_ERR_FORMAT,
                   "weight_map: tensor a1: not found in shard model-00002-of-00002.safetensors "
                   "(it is in model-00001-of-00002.safetensors)");
}

static void test_index_total_size(void) {
  write_shards();
  const char *index =
      write_index(MAP_A0 "," MAP_A1 "," MAP_B0, "\"metadata\": {\"total_size\": 31}");
  check_open_fails(index, MXL_ERR_FORMAT,
                   "metadata: total_size is 31 but the tensors hold 30 bytes");
  index = write_index(MAP_A0 "," MAP_A1 "," MAP_B0, "\"metadata\": {\"total_size\": \"30\"}");
  check_open_fails(index, MXL_ERR_FORMAT, "metadata: total_size: expected an integer");
}

static void test_index_malformed(void) {
  write_shards();
  const char *index = tmp_path("model.safetensors.index.json");
  write_text(index, "{\"metadata\": {}}");
  check_open_fails(index, MXL_ERR_FORMAT, "weight_map: missing required field");
  write_text(index, "{\"weight_map\": {\"a0\": 1}}");
  check_open_fails(index, MXL_ERR_FORMAT,
                   "weight_map: tensor a0: expected a shard file name, got number");
  write_text(index, "{\"weight_map\": {\"a0\": \"../x.safetensors\"}}");
  check_open_fails(index, MXL_ERR_FORMAT,
                   "weight_map: tensor a0: shard \"../x.safetensors\" is not a plain file name");
  write_text(index, "{\"weight_map\": {" MAP_A0 "," MAP_A0 "}}");
  check_open_fails(index, MXL_ERR_FORMAT, "weight_map: tensor a0: duplicate name");
  write_text(index, "{\"weight_map\": {}}");
  check_open_fails(index, MXL_ERR_FORMAT, "weight_map: names no tensor");
  write_text(index, "{\"weight_map\": {");
  check_open_fails(index, MXL_ERR_FORMAT, "line 1");
  write_text(index, "[]");
  check_open_fails(index, MXL_ERR_FORMAT, "expected a JSON object, got array");
}

static void test_index_bad_shard(void) {
  write_shards();
  /* The same tensor in two shards. */
  mxl_st_spec b = {"a0", MXL_DT_F32, 2, {2, 2}};
  const void *bd[1] = {shard_a0};
  MXL_CHECK_OK(
      mxl_safetensors_write(tmp_path("model-00002-of-00002.safetensors"), &b, bd, 1, NULL, 0));
  const char *index = write_index(MAP_A0 "," MAP_A1 "," MAP_B0, "");
  mxl_safetensors *st = NULL;
  MXL_CHECK_FAILS(mxl_safetensors_open(index, &st), MXL_ERR_FORMAT, "tensor a0 is in both ");
  /* A malformed shard is named in the message. */
  const char *shard = tmp_path("model-00002-of-00002.safetensors");
  write_raw(shard, "{\"b0\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,5]}}", 6);
  check_open_fails(shard, MXL_ERR_FORMAT, "tensor b0: shape [3] of BF16 needs 6 bytes");
  char needle[512];
  snprintf(needle, sizeof needle, "%s: tensor b0: shape [3]", shard);
  MXL_CHECK_FAILS(mxl_safetensors_open(index, &st), MXL_ERR_FORMAT, needle);
}

/* ------------------------------------------------ Python-written fixtures */

/* The .safetensors files in tests/fixtures/safetensors were written by the Python
 * `safetensors` package (tools/check_safetensors.py); the expected values
 * are the formulas that script used. */
static const char *fixture(const char *name) {
  static char path[512];
  snprintf(path, sizeof path, "%s/tests/fixtures/safetensors/%s", MXL_SOURCE_DIR, name);
  return path;
}

static float f32_at(const mxl_st_tensor *t, size_t i) {
  float v;
  memcpy(&v, t->data + 4 * i, 4);
  return v;
}

static void test_python_fixture_mixed(void) {
  mxl_safetensors *st = NULL;
  MXL_CHECK_OK(mxl_safetensors_open(fixture("py_mixed.safetensors"), &st));
  if (!st) return;
  MXL_CHECK(st->n_tensors == 5);
  const char *v = mxl_safetensors_metadata(st, "writer");
  MXL_CHECK(v && !strcmp(v, "python-safetensors"));
  /* "weight": F32 [3, 4], value 0.5 * i - 1 at flat index i. */
  const mxl_st_tensor *w = mxl_safetensors_find(st, "layer.weight");
  MXL_CHECK(w && w->dtype == MXL_DT_F32 && w->ndim == 2 && w->shape[0] == 3 && w->shape[1] == 4);
  for (size_t i = 0; w && i < 12; i++) MXL_CHECK_NEAR(f32_at(w, i), 0.5 * (double)i - 1, 0);
  /* "bias": F16 [4] = [1, -2, 0.25, 65504] as IEEE half bits. */
  const mxl_st_tensor *b = mxl_safetensors_find(st, "layer.bias");
  static const uint16_t half_bits[4] = {0x3c00, 0xc000, 0x3400, 0x7bff};
  MXL_CHECK(b && b->dtype == MXL_DT_F16 && b->nbytes == 8);
  if (b) MXL_CHECK(!memcmp(b->data, half_bits, 8));
  /* "ids": I64 [2, 3] = i * 1000000007 - 3. */
  const mxl_st_tensor *ids = mxl_safetensors_find(st, "ids");
  MXL_CHECK(ids && ids->dtype == MXL_DT_I64 && ids->shape[0] == 2 && ids->shape[1] == 3);
  for (size_t i = 0; ids && i < 6; i++) {
    int64_t x;
    memcpy(&x, ids->data + 8 * i, 8);
    MXL_CHECK(x == (int64_t)i * 1000000007 - 3);
  }
  /* "mask": BOOL [5] = i % 2 == 0. */
  const mxl_st_tensor *m = mxl_safetensors_find(st, "mask");
  MXL_CHECK(m && m->dtype == MXL_DT_BOOL && m->nbytes == 5);
  for (size_t i = 0; m && i < 5; i++) MXL_CHECK(m->data[i] == (i % 2 == 0));
  /* "scalar": F64 0-d = 3.5. */
  const mxl_st_tensor *s = mxl_safetensors_find(st, "scalar");
  MXL_CHECK(s && s->dtype == MXL_DT_F64 && s->ndim == 0 && s->nbytes == 8);
  double d = 0;
  if (s) memcpy(&d, s->data, 8);
  MXL_CHECK(d == 3.5);
  mxl_safetensors_close(st);
}

static void test_python_fixture_bf16_u8(void) {
  mxl_safetensors *st = NULL;
  MXL_CHECK_OK(mxl_safetensors_open(fixture("py_bf16_u8.safetensors"), &st));
  if (!st) return;
  MXL_CHECK(st->n_tensors == 3);
  /* "blocks": U8 [2, 3, 16] = (i * 37) % 256. */
  const mxl_st_tensor *blk = mxl_safetensors_find(st, "experts.gate_up_proj_blocks");
  MXL_CHECK(blk && blk->dtype == MXL_DT_U8 && blk->ndim == 3 && blk->shape[2] == 16);
  for (size_t i = 0; blk && i < blk->nbytes; i++) MXL_CHECK(blk->data[i] == (i * 37) % 256);
  /* "norm": BF16 [6], bits 0x3f80 + i (1.0 and its next five neighbours). */
  const mxl_st_tensor *n = mxl_safetensors_find(st, "norm.weight");
  MXL_CHECK(n && n->dtype == MXL_DT_BF16 && n->nbytes == 12);
  for (size_t i = 0; n && i < 6; i++) {
    uint16_t bits;
    memcpy(&bits, n->data + 2 * i, 2);
    MXL_CHECK(bits == 0x3f80 + i);
  }
  /* "empty": F32 [0, 3]. */
  const mxl_st_tensor *e = mxl_safetensors_find(st, "empty");
  MXL_CHECK(e && e->nbytes == 0 && e->ndim == 2 && e->shape[0] == 0 && e->shape[1] == 3);
  mxl_safetensors_close(st);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/mxl_st_XXXXXX");
  if (!mkdtemp(dir)) {
    fprintf(stderr, "cannot create a temporary directory\n");
    return 1;
  }
  MXL_RUN(test_roundtrip_every_dtype);
  MXL_RUN(test_metadata_roundtrip);
  MXL_RUN(test_streaming_writer);
  remove_dir_entries();
  MXL_RUN(test_writer_byte_count);
  MXL_RUN(test_aborted_writer_leaves_no_file);
  MXL_RUN(test_writer_rejects_bad_specs);
  MXL_RUN(test_truncated_file);
  MXL_RUN(test_header_beyond_file);
  MXL_RUN(test_giant_header_length);
  MXL_RUN(test_header_not_json);
  MXL_RUN(test_header_padding_accepted);
  MXL_RUN(test_bad_dtype);
  MXL_RUN(test_bad_entry);
  MXL_RUN(test_bad_shape);
  MXL_RUN(test_shape_size_mismatch);
  MXL_RUN(test_bad_offsets);
  MXL_RUN(test_span_outside_data);
  MXL_RUN(test_overlapping_spans);
  MXL_RUN(test_duplicate_name);
  MXL_RUN(test_bad_metadata);
  MXL_RUN(test_missing_file);
  MXL_RUN(test_parse_buffer);
  MXL_RUN(test_sharded_open);
  MXL_RUN(test_index_missing_shard);
  MXL_RUN(test_index_shard_disagree);
  MXL_RUN(test_index_total_size);
  MXL_RUN(test_index_malformed);
  MXL_RUN(test_index_bad_shard);
  MXL_RUN(test_python_fixture_mixed);
  MXL_RUN(test_python_fixture_bf16_u8);
  remove_dir_entries();
  rmdir(dir);
  return mxl_test_summary("safetensors");
}
