/* Training checkpoints: one file holding a JSON document of trainer state
 * (step, RNG, data cursor, config) and named binary blobs (LoRA parameters,
 * AdamW moments), each with its SHA-256, in the checksummed container of
 * core/container.h (the adapter file's envelope): an edit to the header
 * (`"step":4` -> `3`) is refused like a flipped payload byte. Written
 * atomically; loading checks the magic, the version, the header's checksum,
 * every bound and every blob's checksum before use.
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

#include "core/container.h"
#include "core/fileio.h"

enum {
  MXL_STATE_VERSION = 2,
  MXL_STATE_LEGACY_VERSION = 1, /* no header checksum */
  MXL_STATE_MAX_HEADER = 64 << 20,
};

/* The training-state file's container: magic, versions, header bound. */
extern const mxl_container_format mxl_state_container;

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
  uint32_t version;
  int header_checked; /* 0: a version-1 file, whose header has no checksum */
  mxl_blob *blobs;    /* checked: inside the file, checksums verified */
  int n_blobs;
  int borrowed;       /* map.data belongs to the caller (mxl_state_parse) */
} mxl_state_file;

mxl_status mxl_state_open(const char *path, mxl_state_file *out);

/* The same envelope ({"meta", "blobs"} and checksummed blobs) under another
 * container format (magic, kind, versions): the prompt cache file
 * (infer/prompt_file.c). */
mxl_status mxl_blobs_save(const mxl_container_format *fmt, const char *path, const cJSON *meta,
                          const mxl_blob *blobs, int n);
mxl_status mxl_blobs_open(const mxl_container_format *fmt, const char *path,
                          mxl_state_file *out);
/* Parses a whole file held in memory (`source` names it in messages);
 * f->map borrows `data` and is not unmapped by mxl_state_close. */
mxl_status mxl_state_parse(const uint8_t *data, size_t size, const char *source,
                           mxl_state_file *out);
/* The named blob's bytes; size must match `size` exactly (errors name both). */
mxl_status mxl_state_blob(const mxl_state_file *f, const char *name, size_t size,
                          const void **data_out);
void mxl_state_close(mxl_state_file *f);

#endif
