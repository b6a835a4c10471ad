#include "core/blob_file.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/assert.h"
#include "core/json.h"
#include "core/sha256.h"
#include "core/status.h"

enum { ALIGN = MXL_CONTAINER_ALIGN };
/* JSON numbers are doubles: integers are exact up to 2^53. */
#define MAX_JSON_INT ((int64_t)1 << 53)

static uint64_t align_up(uint64_t x) { return (x + ALIGN - 1) / ALIGN * ALIGN; }

/* ---------------------------------------------------------------- save */

/* The whole header: every blob's offset is known in advance (64-byte
 * aligned, back to back from the start of the payload area). */
static char *build_header(const cJSON *meta, const mxl_blob *blobs, int n) {
  cJSON *root = cJSON_CreateObject();
  cJSON_AddItemToObject(root, "meta", cJSON_Duplicate(meta, 1));
  cJSON *list = cJSON_AddArrayToObject(root, "blobs");
  uint64_t offset = 0;
  for (int i = 0; i < n; i++) {
    uint8_t digest[MXL_SHA256_SIZE];
    char hex[MXL_SHA256_HEX_SIZE];
    mxl_sha256(blobs[i].data, blobs[i].size, digest);
    mxl_sha256_hex(digest, hex);
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "name", blobs[i].name);
    cJSON_AddNumberToObject(b, "offset", (double)offset);
    cJSON_AddNumberToObject(b, "size", (double)blobs[i].size);
    cJSON_AddStringToObject(b, "sha256", hex);
    cJSON_AddItemToArray(list, b);
    offset = align_up(offset + blobs[i].size);
  }
  /* cJSON returns NULL from printing if any allocation above failed. */
  char *text = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  return text;
}

mxl_status mxl_blobs_save(const mxl_container_format *fmt, const char *path, const cJSON *meta,
                          const mxl_blob *blobs, int n) {
  char *header = build_header(meta, blobs, n);
  if (!header) return mxl_errorf(MXL_ERR_MEMORY, "%s: cannot build the header", path);
  mxl_container_writer w;
  mxl_status st = mxl_container_begin(fmt, path, strlen(header), &w);
  uint64_t expect = 0;
  for (int i = 0; st == MXL_OK && i < n; i++) {
    uint64_t offset = 0;
    st = mxl_container_append(&w, blobs[i].data, blobs[i].size, ALIGN, &offset);
    if (st != MXL_OK) mxl_container_abort(&w);
    MXL_ASSERT(st != MXL_OK || offset == expect); /* where the header says it is */
    expect = align_up(offset + blobs[i].size);
  }
  if (st == MXL_OK) st = mxl_container_commit(&w, header);
  free(header);
  return st;
}

/* ---------------------------------------------------------------- load */

static mxl_status parse_blob(mxl_blob_file *f, const mxl_container *c, const cJSON *b, int i,
                             const char *src) {
  char where[700];
  snprintf(where, sizeof where, "%.600s: blobs[%d]", src, i);
  if (!cJSON_IsObject(b))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: expected an object, got %s", where,
                      mxl_json_type_name(b));
  MXL_TRY(mxl_json_check_unique_keys(b, where));
  const char *name, *hex;
  int64_t offset, size;
  uint8_t digest[MXL_SHA256_SIZE];
  MXL_TRY(mxl_json_get_string(b, "name", &name, where));
  MXL_TRY(mxl_json_get_int_range(b, "offset", 0, MAX_JSON_INT, &offset, where));
  MXL_TRY(mxl_json_get_int_range(b, "size", 0, MAX_JSON_INT, &size, where));
  MXL_TRY(mxl_json_get_string(b, "sha256", &hex, where));
  if (!mxl_sha256_parse_hex(hex, digest))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: sha256: not 64 lowercase hex digits", where);
  for (int j = 0; j < i; j++)
    if (!strcmp(f->blobs[j].name, name))
      return mxl_errorf(MXL_ERR_FORMAT, "%s: name '%.80s' is used twice", where, name);
  /* Version 1 counted offsets from the start of the file. */
  if (!c->header_checked) {
    if ((uint64_t)offset < c->data_start)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: offset %" PRId64 " lies inside the header", where,
                        offset);
    offset -= (int64_t)c->data_start;
  }
  char what[200];
  snprintf(what, sizeof what, "blob '%.80s'", name);
  const uint8_t *bytes;
  MXL_TRY(mxl_container_payload(c, (uint64_t)offset, (uint64_t)size, digest, what, src, &bytes));
  f->blobs[i] = (mxl_blob){.name = name, .data = bytes, .size = (size_t)size};
  return MXL_OK;
}

static mxl_status parse(const mxl_container_format *fmt, mxl_blob_file *f) {
  const char *path = f->map.path;
  mxl_container c;
  MXL_TRY(mxl_container_parse(fmt, f->map.data, f->map.size, path, &c));
  f->version = c.version;
  f->header_checked = c.header_checked;
  char src[600];
  snprintf(src, sizeof src, "%.500s: header", path);
  MXL_TRY(mxl_json_parse(c.header, c.header_bytes, src, &f->header));
  if (!cJSON_IsObject(f->header))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: expected a JSON object, got %s", src,
                      mxl_json_type_name(f->header));
  MXL_TRY(mxl_json_check_unique_keys(f->header, src));
  const cJSON *meta, *blobs = cJSON_GetObjectItemCaseSensitive(f->header, "blobs");
  MXL_TRY(mxl_json_get_object(f->header, "meta", &meta, src));
  if (!cJSON_IsArray(blobs))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: blobs: expected an array, got %s", src,
                      mxl_json_type_name(blobs));
  char where[700];
  snprintf(where, sizeof where, "%.600s: meta", src);
  MXL_TRY(mxl_json_check_unique_keys(meta, where));
  f->meta = meta;
  int n = cJSON_GetArraySize(blobs);
  f->blobs = calloc(n ? (size_t)n : 1, sizeof *f->blobs);
  if (!f->blobs) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  for (const cJSON *b = blobs->child; b; b = b->next, f->n_blobs++)
    MXL_TRY(parse_blob(f, &c, b, f->n_blobs, src));
  if (!c.header_checked)
    mxl_warnf("%s: %s format version %u: its header has no checksum, so an edit to it would "
              "go unnoticed; the next save writes version %u",
              path, fmt->kind, c.version, fmt->version);
  return MXL_OK;
}

mxl_status mxl_blobs_open(const mxl_container_format *fmt, const char *path,
                          mxl_blob_file *out) {
  memset(out, 0, sizeof *out);
  MXL_TRY(mxl_mapping_open(path, &out->map));
  mxl_status st = parse(fmt, out);
  if (st != MXL_OK) mxl_blobs_close(out);
  return st;
}

mxl_status mxl_blobs_parse(const mxl_container_format *fmt, const uint8_t *data, size_t size,
                           const char *source, mxl_blob_file *out) {
  memset(out, 0, sizeof *out);
  out->borrowed = 1;
  out->map.data = data;
  out->map.size = size;
  out->map.path = strdup(source);
  if (!out->map.path) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", source);
  mxl_status st = parse(fmt, out);
  if (st != MXL_OK) mxl_blobs_close(out);
  return st;
}

mxl_status mxl_blobs_get(const mxl_blob_file *f, const char *name, size_t size,
                          const void **data_out) {
  *data_out = NULL;
  for (int i = 0; i < f->n_blobs; i++) {
    const mxl_blob *b = &f->blobs[i];
    if (strcmp(b->name, name) != 0) continue;
    if (b->size != size)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: blob '%s' has %zu bytes, expected %zu",
                        f->map.path, name, b->size, size);
    *data_out = b->data;
    return MXL_OK;
  }
  return mxl_errorf(MXL_ERR_FORMAT, "%s: no blob named '%s'", f->map.path, name);
}

void mxl_blobs_close(mxl_blob_file *f) {
  cJSON_Delete(f->header);
  free(f->blobs);
  if (f->borrowed) {
    free(f->map.path);
    memset(&f->map, 0, sizeof f->map);
  }
  mxl_mapping_close(&f->map);
  memset(f, 0, sizeof *f);
}
