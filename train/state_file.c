#include "train/state_file.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/sha256.h"
#include "core/status.h"

static const char magic[8] = {'M', 'X', 'L', 'S', 'T', 'A', 'T', 'E'};
enum { PREFIX = 24, ALIGN = 64 };

static size_t align_up(size_t x) { return (x + ALIGN - 1) & ~(size_t)(ALIGN - 1); }

static void put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}
static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Offsets depend on the header's length, which depends on the offsets'
 * digits: iterate until the layout is stable (two rounds in practice). */
static char *build_header(const cJSON *meta, const mxl_blob *blobs, int n, size_t *data_start) {
  size_t guess = 0;
  for (int round = 0; round < 8; round++) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "meta", cJSON_Duplicate(meta, 1));
    cJSON *list = cJSON_AddArrayToObject(root, "blobs");
    size_t offset = align_up(PREFIX + guess);
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
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) return NULL;
    if (strlen(text) == guess) {
      *data_start = align_up(PREFIX + guess);
      return text;
    }
    guess = strlen(text);
    free(text);
  }
  return NULL;
}

mxl_status mxl_state_save(const char *path, const cJSON *meta, const mxl_blob *blobs, int n) {
  size_t data_start = 0;
  char *header = build_header(meta, blobs, n, &data_start);
  if (!header) return mxl_errorf(MXL_ERR_MEMORY, "%s: cannot build the header", path);
  size_t header_len = strlen(header);
  uint8_t prefix[PREFIX];
  memcpy(prefix, magic, 8);
  put_u32(prefix + 8, MXL_STATE_VERSION);
  put_u32(prefix + 12, 0);
  put_u64(prefix + 16, header_len);
  static const uint8_t zeros[ALIGN];
  mxl_atomic_file f;
  mxl_status st = mxl_atomic_file_begin(path, &f);
  if (st != MXL_OK) {
    free(header);
    return st;
  }
  size_t at = PREFIX + header_len;
  st = mxl_atomic_file_write(&f, prefix, PREFIX);
  if (st == MXL_OK) st = mxl_atomic_file_write(&f, header, header_len);
  for (int i = 0; st == MXL_OK && i < n; i++) {
    size_t pad = align_up(at) - at;
    st = mxl_atomic_file_write(&f, zeros, pad);
    if (st == MXL_OK) st = mxl_atomic_file_write(&f, blobs[i].data, blobs[i].size);
    at += pad + blobs[i].size;
  }
  free(header);
  if (st != MXL_OK) {
    mxl_atomic_file_abort(&f);
    return st;
  }
  return mxl_atomic_file_commit(&f);
}

static mxl_status check_blob_entry(const mxl_state_file *f, const cJSON *b, int i) {
  const char *path = f->map.path;
  const cJSON *name = cJSON_GetObjectItemCaseSensitive(b, "name");
  const cJSON *offset = cJSON_GetObjectItemCaseSensitive(b, "offset");
  const cJSON *size = cJSON_GetObjectItemCaseSensitive(b, "size");
  const cJSON *sha = cJSON_GetObjectItemCaseSensitive(b, "sha256");
  if (!cJSON_IsString(name) || !cJSON_IsNumber(offset) || !cJSON_IsNumber(size) ||
      !cJSON_IsString(sha) || strlen(sha->valuestring) != 64)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: blobs[%d]: needs name, offset, size and sha256", path,
                      i);
  double off = offset->valuedouble, sz = size->valuedouble;
  if (off < 0 || sz < 0 || off + sz > (double)f->map.size)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: blob '%s' (%.0f bytes at %.0f) lies outside the file",
                      path, name->valuestring, sz, off);
  uint8_t digest[MXL_SHA256_SIZE];
  char hex[MXL_SHA256_HEX_SIZE];
  mxl_sha256(f->map.data + (size_t)off, (size_t)sz, digest);
  mxl_sha256_hex(digest, hex);
  if (strcmp(hex, sha->valuestring) != 0)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: blob '%s' is corrupted (checksum mismatch)", path,
                      name->valuestring);
  return MXL_OK;
}

static mxl_status parse(mxl_state_file *f) {
  const char *path = f->map.path;
  const uint8_t *d = f->map.data;
  if (f->map.size < PREFIX || memcmp(d, magic, 8) != 0)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: not an mxlora training checkpoint (bad magic)", path);
  uint32_t version = get_u32(d + 8);
  if (version != MXL_STATE_VERSION)
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "%s: checkpoint version %u, this mxlora reads %d",
                      path, version, MXL_STATE_VERSION);
  uint64_t header_len = get_u64(d + 16);
  if (header_len > f->map.size - PREFIX)
    return mxl_errorf(MXL_ERR_FORMAT, "%s: header length %llu runs past the end (truncated?)",
                      path, (unsigned long long)header_len);
  MXL_TRY(mxl_json_parse((const char *)d + PREFIX, header_len, path, &f->header));
  f->meta = cJSON_GetObjectItemCaseSensitive(f->header, "meta");
  const cJSON *blobs = cJSON_GetObjectItemCaseSensitive(f->header, "blobs");
  if (!cJSON_IsObject(f->meta) || !cJSON_IsArray(blobs))
    return mxl_errorf(MXL_ERR_FORMAT, "%s: header needs \"meta\" and \"blobs\"", path);
  int i = 0;
  for (const cJSON *b = blobs->child; b; b = b->next, i++) MXL_TRY(check_blob_entry(f, b, i));
  return MXL_OK;
}

mxl_status mxl_state_open(const char *path, mxl_state_file *out) {
  memset(out, 0, sizeof *out);
  MXL_TRY(mxl_mapping_open(path, &out->map));
  mxl_status st = parse(out);
  if (st != MXL_OK) mxl_state_close(out);
  return st;
}

mxl_status mxl_state_blob(const mxl_state_file *f, const char *name, size_t size,
                          const void **data_out) {
  *data_out = NULL;
  const cJSON *blobs = cJSON_GetObjectItemCaseSensitive(f->header, "blobs");
  for (const cJSON *b = blobs->child; b; b = b->next) {
    if (strcmp(cJSON_GetObjectItemCaseSensitive(b, "name")->valuestring, name) != 0) continue;
    size_t have = (size_t)cJSON_GetObjectItemCaseSensitive(b, "size")->valuedouble;
    if (have != size)
      return mxl_errorf(MXL_ERR_FORMAT, "%s: blob '%s' has %zu bytes, expected %zu",
                        f->map.path, name, have, size);
    *data_out = f->map.data + (size_t)cJSON_GetObjectItemCaseSensitive(b, "offset")->valuedouble;
    return MXL_OK;
  }
  return mxl_errorf(MXL_ERR_FORMAT, "%s: no blob named '%s'", f->map.path, name);
}

void mxl_state_close(mxl_state_file *f) {
  cJSON_Delete(f->header);
  mxl_mapping_close(&f->map);
  memset(f, 0, sizeof *f);
}
