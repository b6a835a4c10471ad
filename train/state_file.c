#include "train/state_file.h"

const mxl_container_format mxl_state_container = {
    .magic = "MXLSTATE",
    .kind = "training checkpoint",
    .version = MXL_STATE_VERSION,
    .legacy_version = MXL_STATE_LEGACY_VERSION,
    .max_header = MXL_STATE_MAX_HEADER,
};

mxl_status mxl_state_save(const char *path, const cJSON *meta, const mxl_blob *blobs, int n) {
  return mxl_blobs_save(&mxl_state_container, path, meta, blobs, n);
}

mxl_status mxl_state_open(const char *path, mxl_state_file *out) {
  return mxl_blobs_open(&mxl_state_container, path, out);
}

mxl_status mxl_state_parse(const uint8_t *data, size_t size, const char *source,
                           mxl_state_file *out) {
  return mxl_blobs_parse(&mxl_state_container, data, size, source, out);
}

mxl_status mxl_state_blob(const mxl_state_file *f, const char *name, size_t size,
                          const void **data_out) {
  return mxl_blobs_get(f, name, size, data_out);
}

void mxl_state_close(mxl_state_file *f) { mxl_blobs_close(f); }
