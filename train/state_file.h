/* Training checkpoints: one file holding a JSON document of trainer state
 * (step, RNG, data cursor, config) and named binary blobs (LoRA parameters,
 * AdamW moments), each with its SHA-256. Written atomically; loading checks
 * the magic, the version, every bound and every checksum before use.
 *
 * Layout (little-endian):
 *   "MXLSTATE" (8 bytes) | u32 version (1) | u32 reserved (0) |
 *   u64 header_len | header_len bytes of JSON | blobs, each 64-byte aligned
 * JSON: {"meta": {...}, "blobs": [{"name", "offset", "size", "sha256"}]},
 * offsets from the start of the file. */
#ifndef MXL_TRAIN_STATE_FILE_H
#define MXL_TRAIN_STATE_FILE_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "core/fileio.h"

enum { MXL_STATE_VERSION = 1 };

typedef struct mxl_blob {
  const char *name;
  const void *data;
  size_t size;
} mxl_blob;

/* `meta` is copied into the header as is (not consumed). */
mxl_status mxl_state_save(const char *path, const cJSON *meta, const mxl_blob *blobs, int n);

typedef struct mxl_state_file {
  mxl_mapping map;
  cJSON *header;
  const cJSON *meta; /* inside header */
} mxl_state_file;

mxl_status mxl_state_open(const char *path, mxl_state_file *out);
/* The named blob's bytes; size must match `size` exactly (errors name both). */
mxl_status mxl_state_blob(const mxl_state_file *f, const char *name, size_t size,
                          const void **data_out);
void mxl_state_close(mxl_state_file *f);

#endif
