/* Named, checksummed binary blobs under a JSON document, in the container
 * of core/container.h: the envelope of the training checkpoint
 * (train/state_file.h, "MXLSTATE") and of the prompt cache file
 * (infer/prompt_file.h, "MXLPROMP"), each with its own container format
 * (magic, kind, versions). Written atomically; loading checks the magic,
 * the version, the header's checksum, every bound and every blob's
 * checksum before use.
 *
 * Header JSON: {"meta": {...}, "blobs": [{"name", "offset", "size",
 * "sha256"}]}, offsets from the start of the payload area, each blob
 * 64-byte aligned. A format's legacy version (no header checksum) counted
 * offsets from the start of the file; it is still read, with a warning. */
#ifndef MXL_CORE_BLOB_FILE_H
#define MXL_CORE_BLOB_FILE_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "core/container.h"
#include "core/fileio.h"

typedef struct mxl_blob {
  const char *name;
  const void *data;
  size_t size;
} mxl_blob;

typedef struct mxl_blob_file {
  mxl_mapping map;
  cJSON *header;
  const cJSON *meta; /* inside header */
  uint32_t version;
  int header_checked; /* 0: a legacy file, whose header has no checksum */
  mxl_blob *blobs;    /* checked: inside the file, checksums verified */
  int n_blobs;
  int borrowed;       /* map.data belongs to the caller (mxl_blobs_parse) */
} mxl_blob_file;

/* `meta` is copied into the header as is (not consumed). */
mxl_status mxl_blobs_save(const mxl_container_format *fmt, const char *path, const cJSON *meta,
                          const mxl_blob *blobs, int n);
mxl_status mxl_blobs_open(const mxl_container_format *fmt, const char *path, mxl_blob_file *out);
/* Parses a whole file held in memory (`source` names it in messages);
 * out->map borrows `data` and is not unmapped by mxl_blobs_close. */
mxl_status mxl_blobs_parse(const mxl_container_format *fmt, const uint8_t *data, size_t size,
                           const char *source, mxl_blob_file *out);
/* The named blob's bytes; size must match `size` exactly (errors name both). */
mxl_status mxl_blobs_get(const mxl_blob_file *f, const char *name, size_t size,
                         const void **data_out);
void mxl_blobs_close(mxl_blob_file *f);

#endif
