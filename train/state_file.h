/* Training checkpoints: one file holding a JSON document of trainer state
 * (step, RNG, data cursor, config) and named binary blobs (LoRA parameters,
 * AdamW moments), each with its SHA-256, in the checksummed container of
 * core/container.h (the adapter file's envelope): an edit to the header
 * (`"step":4` -> `3`) is refused like a flipped payload byte. The
 * envelope (JSON meta, checksummed blobs) is core/blob_file.h's, shared with
 * the prompt cache file; this is its training-checkpoint format.
 *
 * Layout (little-endian):
 *   "MXLSTATE" (8 bytes) | u32 version (2) | u32 reserved (0) |
 *   u64 header_len | 32-byte SHA-256 of the header | header_len bytes of
 *   JSON | blobs, each 64-byte aligned
 * JSON: {"meta": {...}, "blobs": [{"name", "offset", "size", "sha256"}]},
 * offsets from the start of the payload area. Version 1 (no header
 * checksum, offsets from the start of the file) is still read, with a
 * warning. */
#ifndef MXL_TRAIN_STATE_FILE_H
#define MXL_TRAIN_STATE_FILE_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "core/blob_file.h"

enum {
  MXL_STATE_VERSION = 2,
  MXL_STATE_LEGACY_VERSION = 1, /* no header checksum */
  MXL_STATE_MAX_HEADER = 64 << 20,
};

/* The training-state file's container: magic, versions, header bound. */
extern const mxl_container_format mxl_state_container;

typedef mxl_blob_file mxl_state_file;

/* core/blob_file.h's functions with the training-state format. */
mxl_status mxl_state_save(const char *path, const cJSON *meta, const mxl_blob *blobs, int n);
mxl_status mxl_state_open(const char *path, mxl_state_file *out);
mxl_status mxl_state_parse(const uint8_t *data, size_t size, const char *source,
                           mxl_state_file *out);
mxl_status mxl_state_blob(const mxl_state_file *f, const char *name, size_t size,
                          const void **data_out);
void mxl_state_close(mxl_state_file *f);

#endif
