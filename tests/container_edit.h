/* Test helpers for files in the checksummed container (core/container.h):
 * edit the JSON header of a whole file held in memory, with or without
 * re-sealing its checksum, and rebuild a file in the legacy (version 1)
 * layout, which has no checksum. Header-only; every function returns a
 * malloc'd buffer (NULL when `from` is not in the header). */
#ifndef MXL_TESTS_CONTAINER_EDIT_H
#define MXL_TESTS_CONTAINER_EDIT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"
#include "core/container.h"

static inline size_t container_align(size_t n) {
  return (n + MXL_CONTAINER_ALIGN - 1) / MXL_CONTAINER_ALIGN * MXL_CONTAINER_ALIGN;
}

/* The current-version file `data` with the first `from` of its header
 * replaced by `to`. The prefix's length follows; `reseal` recomputes the
 * header checksum (field checks behind it are reached), otherwise the old
 * checksum stays (what a hand edit leaves). */
static inline uint8_t *container_edit(const mxl_container_format *fmt, const uint8_t *data,
                                      size_t size, const char *from, const char *to, int reseal,
                                      size_t *out_size) {
  uint64_t n = mxl_get_le64(data + 16);
  char *json = malloc(n + 1);
  memcpy(json, data + MXL_CONTAINER_PREFIX, n);
  json[n] = '\0';
  char *hit = strstr(json, from);
  if (!hit) {
    free(json);
    return NULL;
  }
  size_t old_start = container_align(MXL_CONTAINER_PREFIX + n);
  size_t m = n - strlen(from) + strlen(to);
  size_t new_start = container_align(MXL_CONTAINER_PREFIX + m);
  *out_size = new_start + (size - old_start);
  uint8_t *out = calloc(1, *out_size + 1);
  char *header = (char *)out + MXL_CONTAINER_PREFIX;
  size_t head = (size_t)(hit - json);
  memcpy(header, json, head);
  memcpy(header + head, to, strlen(to));
  memcpy(header + head + strlen(to), hit + strlen(from), n - head - strlen(from));
  if (reseal) {
    mxl_container_prefix(fmt, header, m, out);
  } else {
    memcpy(out, data, MXL_CONTAINER_PREFIX);
    mxl_put_le64(out + 16, m);
  }
  memcpy(out + new_start, data + old_start, size - old_start);
  free(json);
  return out;
}

/* The same file in the legacy layout: a 24-byte prefix with version
 * `fmt->legacy_version`, the header as is, no checksum. The caller edits
 * what the header says about the version or offsets. */
static inline uint8_t *container_to_legacy(const mxl_container_format *fmt, const uint8_t *data,
                                           size_t size, size_t *out_size) {
  uint64_t n = mxl_get_le64(data + 16);
  size_t old_start = container_align(MXL_CONTAINER_PREFIX + n);
  size_t new_start = container_align(MXL_CONTAINER_LEGACY_PREFIX + n);
  *out_size = new_start + (size - old_start);
  uint8_t *out = calloc(1, *out_size + 1);
  memcpy(out, data, 24);
  mxl_put_le32(out + 8, fmt->legacy_version);
  memcpy(out + MXL_CONTAINER_LEGACY_PREFIX, data + MXL_CONTAINER_PREFIX, n);
  memcpy(out + new_start, data + old_start, size - old_start);
  return out;
}

#endif
