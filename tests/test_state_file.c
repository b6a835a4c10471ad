/* train/state_file: round trip and every rejection. */
#include <unistd.h>

#include "core/fileio.h"
#include "core/status.h"
#include "test.h"
#include "tests/container_edit.h"
#include "train/state_file.h"

static char path[] = "/tmp/mxl_state_XXXXXX";
static float params[1000], moments[333];

static void write_sample(void) {
  for (int i = 0; i < 1000; i++) params[i] = i * 0.5f;
  for (int i = 0; i < 333; i++) moments[i] = -i;
  cJSON *meta = cJSON_CreateObject();
  cJSON_AddNumberToObject(meta, "step", 42);
  cJSON_AddStringToObject(meta, "cursor", "epoch=1,index=17");
  mxl_blob blobs[] = {{"params", params, sizeof params}, {"m", moments, sizeof moments}};
  MXL_CHECK_OK(mxl_state_save(path, meta, blobs, 2));
  cJSON_Delete(meta);
}

static void test_round_trip(void) {
  write_sample();
  mxl_state_file f;
  MXL_CHECK_OK(mxl_state_open(path, &f));
  MXL_CHECK(cJSON_GetObjectItem(f.meta, "step")->valueint == 42);
  const void *p = NULL;
  MXL_CHECK_OK(mxl_state_blob(&f, "params", sizeof params, &p));
  MXL_CHECK(p && !memcmp(p, params, sizeof params));
  MXL_CHECK(((uintptr_t)p - (uintptr_t)f.map.data) % 64 == 0);
  MXL_CHECK_OK(mxl_state_blob(&f, "m", sizeof moments, &p));
  MXL_CHECK(p && !memcmp(p, moments, sizeof moments));
  MXL_CHECK_FAILS(mxl_state_blob(&f, "v", 4, &p), MXL_ERR_FORMAT, "no blob named 'v'");
  MXL_CHECK_FAILS(mxl_state_blob(&f, "m", 4, &p), MXL_ERR_FORMAT, "expected 4");
  mxl_state_close(&f);
}

/* Rewrites the sample with one change applied to its bytes. */
static void corrupt(size_t offset, int delta, size_t truncate_to) {
  write_sample();
  char *data = NULL;
  size_t n = 0;
  MXL_CHECK_OK(mxl_read_file(path, 1 << 20, &data, &n));
  if (offset < n) data[offset] = (char)(data[offset] + delta);
  MXL_CHECK_OK(mxl_write_file_atomic(path, data, truncate_to ? truncate_to : n));
  free(data);
}

static void test_rejections(void) {
  mxl_state_file f;
  corrupt(0, 1, 0);
  MXL_CHECK_FAILS(mxl_state_open(path, &f), MXL_ERR_FORMAT, "not an mxlora training checkpoint");
  corrupt(8, 1, 0);
  MXL_CHECK_FAILS(mxl_state_open(path, &f), MXL_ERR_UNSUPPORTED, "version 3");
  corrupt(0, 0, 30);
  MXL_CHECK_FAILS(mxl_state_open(path, &f), MXL_ERR_FORMAT, "truncated");
  write_sample();
  size_t full = 0;
  char *data = NULL;
  MXL_CHECK_OK(mxl_read_file(path, 1 << 20, &data, &full));
  free(data);
  corrupt(full - 5, 1, 0);
  MXL_CHECK_FAILS(mxl_state_open(path, &f), MXL_ERR_FORMAT, "blob 'm' is corrupted");
  corrupt(0, 0, full - 100);
  MXL_CHECK_FAILS(mxl_state_open(path, &f), MXL_ERR_FORMAT, "outside the");
  corrupt(60, 1, 0); /* inside the JSON header */
  MXL_CHECK_FAILS(mxl_state_open(path, &f), MXL_ERR_FORMAT, "header was edited");
  corrupt(30, 1, 0); /* inside the header's checksum */
  MXL_CHECK_FAILS(mxl_state_open(path, &f), MXL_ERR_FORMAT, path);
}

/* The file's bytes, with the first `from` of the header replaced by `to`
 * (re-sealed or not), written back. */
static int edit(const char *from, const char *to, int reseal) {
  write_sample();
  char *data = NULL;
  size_t n = 0, m = 0;
  MXL_CHECK_OK(mxl_read_file(path, 1 << 20, &data, &n));
  uint8_t *out = data ? container_edit(&mxl_state_container, (uint8_t *)data, n, from, to,
                                       reseal, &m)
                      : NULL;
  MXL_CHECK_MSG(out != NULL, "\"%s\" not in the header", from);
  if (out) MXL_CHECK_OK(mxl_write_file_atomic(path, out, m));
  free(out);
  free(data);
  return out != NULL;
}

/* A hand edit ("step":42 -> 41), which resumed silently before format
 * version 2, is refused by the header
 * checksum; re-sealed edits reach the field checks. */
static void test_header_edits(void) {
  mxl_state_file f;
  if (edit("\"step\":42", "\"step\":41", 0))
    MXL_CHECK_FAILS(mxl_state_open(path, &f), MXL_ERR_FORMAT, "header was edited");
  static const struct {
    const char *from, *to, *needle;
  } cases[] = {
      {"{\"meta\"", "[{\"meta\"", "JSON syntax error"},
      {"\"meta\":{", "\"meta\":7,\"x\":{", "meta"},
      {"\"blobs\":[", "\"blobs\":7,\"x\":[", "blobs"},
      {"\"step\":42", "\"step\":42,\"step\":41", "duplicate key"},
      {"\"name\":\"m\"", "\"name\":\"params\"", "used twice"},
      {"\"name\":\"m\"", "\"name\":7", "blobs[1]: name"},
      {"\"offset\":0", "\"offset\":-64", "blobs[0]: offset"},
      {"\"offset\":0", "\"offset\":64", "blob 'params' is corrupted"},
      {"\"offset\":0", "\"offset\":1e300", "offset"},
      {"\"size\":4000", "\"size\":4001", "blob 'params' is corrupted"},
      {"\"size\":4000", "\"size\":99999999", "outside the"},
      {"\"sha256\":\"", "\"sha256\":\"x", "sha256"},
      {"\"blobs\":[", "\"blobs\":[3,", "blobs[0]: expected an object"},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    if (!edit(cases[k].from, cases[k].to, 1)) continue;
    mxl_status st = mxl_state_open(path, &f);
    MXL_CHECK_MSG(st == MXL_ERR_FORMAT && strstr(mxl_last_error(), cases[k].needle),
                  "case %zu (%s): %s: %s", k, cases[k].to, mxl_status_name(st),
                  mxl_last_error());
    if (st == MXL_OK) mxl_state_close(&f);
  }
}

static char warned[1024];
static void capture_warning(void *user, const char *message) {
  (void)user;
  snprintf(warned, sizeof warned, "%s", message);
}

/* A version-1 file as the old writer made it: a 24-byte prefix, no header
 * checksum, blob offsets from the start of the file. */
static uint8_t *legacy_file(size_t *size) {
  const mxl_blob blobs[] = {{"params", params, sizeof params}, {"m", moments, sizeof moments}};
  char *text = NULL;
  size_t n = 0, start = 0, offsets[2];
  for (int round = 0; round < 4; round++) { /* offsets depend on the header's length */
    free(text);
    start = container_align(24 + n);
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(root, "meta");
    cJSON_AddNumberToObject(meta, "step", 42);
    cJSON *list = cJSON_AddArrayToObject(root, "blobs");
    size_t at = start;
    for (int i = 0; i < 2; i++) {
      uint8_t digest[MXL_SHA256_SIZE];
      char hex[MXL_SHA256_HEX_SIZE];
      mxl_sha256(blobs[i].data, blobs[i].size, digest);
      mxl_sha256_hex(digest, hex);
      cJSON *b = cJSON_CreateObject();
      cJSON_AddStringToObject(b, "name", blobs[i].name);
      cJSON_AddNumberToObject(b, "offset", (double)at);
      cJSON_AddNumberToObject(b, "size", (double)blobs[i].size);
      cJSON_AddStringToObject(b, "sha256", hex);
      cJSON_AddItemToArray(list, b);
      offsets[i] = at;
      at = container_align(at + blobs[i].size);
    }
    text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    n = strlen(text);
  }
  *size = offsets[1] + sizeof moments;
  uint8_t *out = calloc(1, *size);
  memcpy(out, "MXLSTATE", 8);
  mxl_put_le32(out + 8, 1);
  mxl_put_le64(out + 16, n);
  memcpy(out + 24, text, n);
  memcpy(out + offsets[0], params, sizeof params);
  memcpy(out + offsets[1], moments, sizeof moments);
  free(text);
  return out;
}

/* Version 1 is still read, with a warning. */
static void test_legacy_version(void) {
  for (int i = 0; i < 1000; i++) params[i] = i * 0.5f;
  for (int i = 0; i < 333; i++) moments[i] = -i;
  size_t n = 0;
  uint8_t *v1 = legacy_file(&n);
  MXL_CHECK_OK(mxl_write_file_atomic(path, v1, n));
  mxl_state_file f;
  warned[0] = '\0';
  mxl_set_warning_handler(capture_warning, NULL);
  MXL_CHECK_OK(mxl_state_open(path, &f));
  mxl_set_warning_handler(NULL, NULL);
  MXL_CHECK_MSG(strstr(warned, "version 1") && strstr(warned, "no checksum"), "%s", warned);
  if (f.header) {
    MXL_CHECK(f.version == 1 && f.header_checked == 0);
    MXL_CHECK(cJSON_GetObjectItem(f.meta, "step")->valueint == 42);
    const void *p = NULL;
    MXL_CHECK_OK(mxl_state_blob(&f, "params", sizeof params, &p));
    MXL_CHECK(p && !memcmp(p, params, sizeof params));
    MXL_CHECK_OK(mxl_state_blob(&f, "m", sizeof moments, &p));
    MXL_CHECK(p && !memcmp(p, moments, sizeof moments));
    mxl_state_close(&f);
  }
  /* Its blobs are still checked. */
  v1[n - 1] ^= 1;
  MXL_CHECK_OK(mxl_write_file_atomic(path, v1, n));
  MXL_CHECK_FAILS(mxl_state_open(path, &f), MXL_ERR_FORMAT, "blob 'm' is corrupted");
  free(v1);
}

/* The parser also serves memory buffers (the fuzz target). */
static void test_parse_memory(void) {
  write_sample();
  char *data = NULL;
  size_t n = 0;
  MXL_CHECK_OK(mxl_read_file(path, 1 << 20, &data, &n));
  mxl_state_file f;
  MXL_CHECK_OK(mxl_state_parse((uint8_t *)data, n, "mem", &f));
  MXL_CHECK(f.version == 2 && f.header_checked == 1 && f.n_blobs == 2);
  mxl_state_close(&f);
  MXL_CHECK_FAILS(mxl_state_parse((uint8_t *)data, n - 1, "mem", &f), MXL_ERR_FORMAT, "mem:");
  free(data);
}

int main(void) {
  close(mkstemp(path));
  MXL_RUN(test_round_trip);
  MXL_RUN(test_rejections);
  MXL_RUN(test_header_edits);
  MXL_RUN(test_legacy_version);
  MXL_RUN(test_parse_memory);
  unlink(path);
  return mxl_test_summary("state_file");
}
