/* The checksummed file container that the adapter file (adapters/
 * adapter_file.c) and the training-state file (train/state_file.c) both
 * use: a fixed prefix, a JSON header covered by a SHA-256, and a payload
 * area whose pieces the header lists with their own checksums. One module,
 * so that both files are protected the same way and parsed by the same
 * bounds checks (docs/adapter-format.md describes the bytes).
 *
 *   offset 0   8 bytes  magic (per format: "MXLADAPT", "MXLSTATE")
 *          8   u32 LE   format version
 *         12   u32 LE   reserved, 0
 *         16   u64 LE   header length N
 *         24   32 bytes SHA-256 of the N header bytes
 *         56   N bytes  JSON header, space-padded to exactly N
 *          D = round_up(56 + N, 64): the payload area, to the end of the file
 *
 * A format's legacy version (its version 1) has no header checksum: the
 * header starts at byte 24 and D = round_up(24 + N, 64). It is still read,
 * with header_checked = 0, so that callers can warn. */
#ifndef MXL_CORE_CONTAINER_H
#define MXL_CORE_CONTAINER_H

#include <stddef.h>
#include <stdint.h>

#include "core/fileio.h"
#include "core/sha256.h"
#include "mxlora.h"

enum {
  MXL_CONTAINER_PREFIX = 56,        /* bytes before the header */
  MXL_CONTAINER_LEGACY_PREFIX = 24, /* the same, in a legacy version */
  MXL_CONTAINER_ALIGN = 64,         /* the payload area starts at a multiple of this */
};

/* What distinguishes one file format from another. */
typedef struct mxl_container_format {
  const char *magic;       /* exactly 8 characters */
  const char *kind;        /* "adapter", "training checkpoint": used in messages */
  uint32_t version;        /* written; read with the header checksum */
  uint32_t legacy_version; /* read without a header checksum; 0 when none */
  uint64_t max_header;     /* largest header accepted, in bytes */
} mxl_container_format;

/* A parsed container: pointers into the caller's buffer. */
typedef struct mxl_container {
  uint32_t version;
  int header_checked;      /* 0 for the legacy version: the header has no checksum */
  const char *header;      /* N bytes of JSON text (not NUL-terminated) */
  uint64_t header_bytes;   /* N */
  uint64_t data_start;     /* D */
  const uint8_t *payloads; /* the payload area: data + D */
  uint64_t payload_bytes;  /* its length, to the end of the file */
} mxl_container;

/* Checks the prefix of `data` (`size` bytes: the whole file) and the
 * header's checksum. Errors name `source` and say "truncated?" when the
 * file is too short for what its prefix declares. */
mxl_status mxl_container_parse(const mxl_container_format *fmt, const uint8_t *data, size_t size,
                               const char *source, mxl_container *out);

/* Payload bytes [offset, offset + size) of the area, checked to lie inside
 * it and, when sha256 is not NULL, to have that digest. `what` names the
 * payload in messages ("blob 'lora'"). */
mxl_status mxl_container_payload(const mxl_container *c, uint64_t offset, uint64_t size,
                                 const uint8_t *sha256, const char *what, const char *source,
                                 const uint8_t **out);

/* The prefix of a current-version file whose header is the `n` bytes at
 * `header` (the writer uses it; tests and fuzz targets re-seal edited
 * headers with it). */
void mxl_container_prefix(const mxl_container_format *fmt, const char *header, uint64_t n,
                          uint8_t prefix[MXL_CONTAINER_PREFIX]);

/* Writing: payloads stream to the file before the header is final (their
 * compressed sizes and checksums go into it), so the header's length is
 * reserved first and its text written last, space-padded:
 *
 *   mxl_container_begin(fmt, path, reserved, &w);
 *   mxl_container_append(&w, bytes, n, 64, &offset);   // per payload
 *   mxl_container_commit(&w, header_json);              // or _abort
 *
 * The file is an mxl_atomic_file: nothing appears at `path` until commit. */
typedef struct mxl_container_writer {
  mxl_atomic_file file;
  const mxl_container_format *fmt;
  uint64_t header_bytes;  /* reserved N */
  uint64_t payload_bytes; /* written so far */
} mxl_container_writer;

mxl_status mxl_container_begin(const mxl_container_format *fmt, const char *path,
                               uint64_t header_bytes, mxl_container_writer *w);
/* Appends a payload at the next multiple of `align` (1 or a divisor of 64)
 * of the area; *offset_out (may be NULL) gets its offset in the area. */
mxl_status mxl_container_append(mxl_container_writer *w, const void *data, size_t n,
                                uint64_t align, uint64_t *offset_out);
/* Writes the header (at most the reserved length) and its checksum, then
 * commits the file. On failure the temporary file is removed. */
mxl_status mxl_container_commit(mxl_container_writer *w, const char *header_json);
void mxl_container_abort(mxl_container_writer *w);

#endif
