/* The checksummed file container (core/container.h). */
#include "core/container.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"
#include "core/status.h"

static uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

/* ------------------------------------------------------------ reading */

static mxl_status check_version(const mxl_container_format *fmt, uint32_t version,
                                const char *src) {
  if (version == fmt->version || (fmt->legacy_version && version == fmt->legacy_version))
    return MXL_OK;
  if (fmt->legacy_version)
    return mxl_errorf(MXL_ERR_UNSUPPORTED,
                      "%s: %s format version %u; this build of mxlora reads versions %u and %u",
                      src, fmt->kind, version, fmt->legacy_version, fmt->version);
  return mxl_errorf(MXL_ERR_UNSUPPORTED,
                    "%s: %s format version %u; this build of mxlora reads version %u", src,
                    fmt->kind, version, fmt->version);
}

mxl_status mxl_container_parse(const mxl_container_format *fmt, const uint8_t *data, size_t size,
                               const char *src, mxl_container *out) {
  memset(out, 0, sizeof *out);
  if (size < MXL_CONTAINER_LEGACY_PREFIX)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %zu bytes, shorter than any %s prefix (truncated?)",
                      src, size, fmt->kind);
  if (memcmp(data, fmt->magic, 8) != 0)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: not an mxlora %s (magic is not \"%.8s\")", src,
                      fmt->kind, fmt->magic);
  uint32_t version = mxl_get_le32(data + 8);
  MXL_TRY(check_version(fmt, version, src));
  if (mxl_get_le32(data + 12) != 0)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: reserved prefix field is %u, expected 0", src,
                      mxl_get_le32(data + 12));
  int checked = version == fmt->version;
  uint64_t prefix = checked ? MXL_CONTAINER_PREFIX : MXL_CONTAINER_LEGACY_PREFIX;
  if (size < prefix)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: %zu bytes, shorter than the %" PRIu64
                      "-byte %s prefix (truncated?)", src, size, prefix, fmt->kind);
  uint64_t n = mxl_get_le64(data + 16);
  if (n < 2 || n > fmt->max_header)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: header length %" PRIu64 " outside 2..%" PRIu64, src,
                      n, fmt->max_header);
  if (n > size - prefix)
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: header length %" PRIu64 " runs past the end of the %zu-byte file "
                      "(truncated?)",
                      src, n, size);
  uint64_t start = align_up(prefix + n, MXL_CONTAINER_ALIGN);
  if (start > size)
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: payloads would start at byte %" PRIu64 ", past the end of the "
                      "%zu-byte file (truncated?)",
                      src, start, size);
  if (checked) {
    uint8_t digest[MXL_SHA256_SIZE];
    mxl_sha256(data + prefix, (size_t)n, digest);
    if (memcmp(digest, data + 24, MXL_SHA256_SIZE) != 0)
      return mxl_errorf(MXL_ERR_FORMAT,
                        "%s: the header's SHA-256 does not match the one in the prefix: the "
                        "header was edited or corrupted",
                        src);
  }
  out->version = version;
  out->header_checked = checked;
  out->header = (const char *)data + prefix;
  out->header_bytes = n;
  out->data_start = start;
  out->payloads = data + start;
  out->payload_bytes = size - start;
  return MXL_OK;
}

mxl_status mxl_container_payload(const mxl_container *c, uint64_t offset, uint64_t size,
                                 const uint8_t *sha256, const char *what, const char *src,
                                 const uint8_t **out) {
  *out = NULL;
  if (offset > c->payload_bytes || size > c->payload_bytes - offset)
    return mxl_errorf(MXL_ERR_FORMAT,
                      "%s: %s (%" PRIu64 " bytes at %" PRIu64 ") lies outside the %" PRIu64
                      "-byte payload area (truncated?)",
                      src, what, size, offset, c->payload_bytes);
  const uint8_t *p = c->payloads + offset;
  if (sha256) {
    uint8_t digest[MXL_SHA256_SIZE];
    mxl_sha256(p, (size_t)size, digest);
    if (memcmp(digest, sha256, MXL_SHA256_SIZE) != 0)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: %s is corrupted (SHA-256 mismatch)", src, what);
  }
  *out = p;
  return MXL_OK;
}

/* ------------------------------------------------------------ writing */

void mxl_container_prefix(const mxl_container_format *fmt, const char *header, uint64_t n,
                          uint8_t prefix[MXL_CONTAINER_PREFIX]) {
  memcpy(prefix, fmt->magic, 8);
  mxl_put_le32(prefix + 8, fmt->version);
  mxl_put_le32(prefix + 12, 0);
  mxl_put_le64(prefix + 16, n);
  mxl_sha256(header, (size_t)n, prefix + 24);
}

static mxl_status write_zeros(mxl_atomic_file *f, uint64_t n) {
  static const uint8_t zeros[MXL_CONTAINER_ALIGN];
  while (n) {
    size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
    MXL_TRY(mxl_atomic_file_write(f, zeros, k));
    n -= k;
  }
  return MXL_OK;
}

/* `text` then spaces up to exactly n bytes, into `out` (n bytes). */
static void pad_header(const char *text, uint64_t n, char *out) {
  size_t len = strlen(text);
  memcpy(out, text, len);
  memset(out + len, ' ', (size_t)(n - len));
}

mxl_status mxl_container_begin(const mxl_container_format *fmt, const char *path,
                               uint64_t header_bytes, mxl_container_writer *w) {
  memset(w, 0, sizeof *w);
  if (header_bytes < 2 || header_bytes > fmt->max_header)
    return mxl_errorf(MXL_ERR_ARGUMENT, "%s: a %" PRIu64 "-byte header is outside 2..%" PRIu64,
                      path, header_bytes, fmt->max_header);
  w->fmt = fmt;
  w->header_bytes = header_bytes;
  MXL_TRY(mxl_atomic_file_begin(path, &w->file));
  /* Placeholders: zeros for the prefix and the header, rewritten by commit. */
  mxl_status st = write_zeros(&w->file, align_up(MXL_CONTAINER_PREFIX + header_bytes,
                                                  MXL_CONTAINER_ALIGN));
  if (st != MXL_OK) mxl_container_abort(w);
  return st;
}

mxl_status mxl_container_append(mxl_container_writer *w, const void *data, size_t n,
                                uint64_t align, uint64_t *offset_out) {
  uint64_t at = align_up(w->payload_bytes, align ? align : 1);
  MXL_TRY(write_zeros(&w->file, at - w->payload_bytes));
  MXL_TRY(mxl_atomic_file_write(&w->file, data, n));
  w->payload_bytes = at + n;
  if (offset_out) *offset_out = at;
  return MXL_OK;
}

static mxl_status write_front(mxl_container_writer *w, const char *header_json) {
  const char *path = w->file.temp_path;
  if (strlen(header_json) > w->header_bytes)
    return mxl_errorf(MXL_ERR_STATE, "%s: the header grew past its reserved %" PRIu64 " bytes",
                      path, w->header_bytes);
  char *header = malloc((size_t)w->header_bytes);
  if (!header) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory for the header", path);
  pad_header(header_json, w->header_bytes, header);
  uint8_t prefix[MXL_CONTAINER_PREFIX];
  mxl_container_prefix(w->fmt, header, w->header_bytes, prefix);
  mxl_status st = MXL_OK;
  if (fseek(w->file.fp, 0, SEEK_SET) != 0)
    st = mxl_errorf(MXL_ERR_IO, "%s: seek failed: %s", path, strerror(errno));
  if (st == MXL_OK) st = mxl_atomic_file_write(&w->file, prefix, sizeof prefix);
  if (st == MXL_OK) st = mxl_atomic_file_write(&w->file, header, (size_t)w->header_bytes);
  free(header);
  return st;
}

mxl_status mxl_container_commit(mxl_container_writer *w, const char *header_json) {
  mxl_status st = write_front(w, header_json);
  if (st != MXL_OK) {
    mxl_container_abort(w);
    return st;
  }
  return mxl_atomic_file_commit(&w->file);
}

void mxl_container_abort(mxl_container_writer *w) { mxl_atomic_file_abort(&w->file); }
