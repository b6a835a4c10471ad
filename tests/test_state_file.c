/* train/state_file: round trip and every rejection. */
#include <unistd.h>

#include "core/fileio.h"
#include "train/state_file.h"
#include "test.h"

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
  MXL_CHECK_FAILS(mxl_state_open(path, &f), MXL_ERR_FORMAT, "bad magic");
  corrupt(8, 1, 0);
  MXL_CHECK_FAILS(mxl_state_open(path, &f), MXL_ERR_UNSUPPORTED, "version 2");
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
  MXL_CHECK_FAILS(mxl_state_open(path, &f), MXL_ERR_FORMAT, "outside the file");
  corrupt(30, 1, 0); /* inside the JSON header */
  MXL_CHECK_FAILS(mxl_state_open(path, &f), MXL_ERR_FORMAT, path);
}

int main(void) {
  close(mkstemp(path));
  MXL_RUN(test_round_trip);
  MXL_RUN(test_rejections);
  unlink(path);
  return mxl_test_summary("state_file");
}
