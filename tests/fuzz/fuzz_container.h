/* Shared by the fuzz targets of files in the checksummed container
 * (core/container.h): builds a current-version file around fuzzer bytes
 * taken as header JSON up to the first NUL byte, the rest being the payload
 * area, with the header's checksum computed here, so that mutated JSON is
 * not refused at once for a stale length or checksum and the fuzzer reaches
 * the field checks. The caller frees the result (NULL when out of memory). */
#ifndef MXL_TESTS_FUZZ_CONTAINER_H
#define MXL_TESTS_FUZZ_CONTAINER_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/container.h"

static inline uint8_t *fuzz_sealed_file(const mxl_container_format *fmt, const uint8_t *data,
                                        size_t size, size_t *file_size) {
  const uint8_t *nul = memchr(data, 0, size);
  size_t n = nul ? (size_t)(nul - data) : size;
  size_t rest = nul ? size - n - 1 : 0;
  size_t start = (MXL_CONTAINER_PREFIX + n + MXL_CONTAINER_ALIGN - 1) / MXL_CONTAINER_ALIGN *
                 MXL_CONTAINER_ALIGN;
  uint8_t *file = calloc(1, start + rest + 1);
  if (!file) return NULL;
  memcpy(file + MXL_CONTAINER_PREFIX, data, n);
  mxl_container_prefix(fmt, (const char *)file + MXL_CONTAINER_PREFIX, n, file);
  if (rest) memcpy(file + start, nul + 1, rest);
  *file_size = start + rest;
  return file;
}

#endif
