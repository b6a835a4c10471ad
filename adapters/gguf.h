/* GGUF (version 3), the file format of llama.cpp / ggml: a validating
 * reader of the header (metadata and tensor directory) and a streaming
 * writer, enough for LoRA adapters and for checking a base model's tensor
 * names. docs/export.md describes what mxlora writes.
 *
 * Layout (little-endian):
 *   "GGUF", u32 version, u64 tensor count, u64 metadata count
 *   metadata: string key, u32 value type, value
 *     (string = u64 length + bytes; array = u32 element type, u64 count,
 *      elements)
 *   tensor infos: string name, u32 n_dims, u64 ne[n_dims] (ne[0] is the
 *     fastest-varying axis: a row-major [rows, cols] matrix has ne = {cols,
 *     rows}), u32 ggml type, u64 offset from the data area
 *   padding to `general.alignment` (default 32), then the data area; every
 *   tensor starts at a multiple of the alignment. */
#ifndef MXL_ADAPTERS_GGUF_H
#define MXL_ADAPTERS_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "mxlora.h"

enum {
  MXL_GGUF_VERSION = 3,
  MXL_GGUF_ALIGNMENT = 32,
  MXL_GGUF_MAX_DIMS = 4,
};

typedef enum mxl_gguf_type {
  MXL_GGUF_UINT8 = 0, MXL_GGUF_INT8 = 1, MXL_GGUF_UINT16 = 2, MXL_GGUF_INT16 = 3,
  MXL_GGUF_UINT32 = 4, MXL_GGUF_INT32 = 5, MXL_GGUF_FLOAT32 = 6, MXL_GGUF_BOOL = 7,
  MXL_GGUF_STRING = 8, MXL_GGUF_ARRAY = 9, MXL_GGUF_UINT64 = 10, MXL_GGUF_INT64 = 11,
  MXL_GGUF_FLOAT64 = 12, MXL_GGUF_TYPE_COUNT
} mxl_gguf_type;

/* ggml tensor types mxlora writes or names (others are kept as numbers). */
enum { MXL_GGML_F32 = 0, MXL_GGML_F16 = 1, MXL_GGML_BF16 = 30, MXL_GGML_MXFP4 = 39 };

typedef struct mxl_gguf_kv {
  const char *key;     /* NUL-terminated copy */
  mxl_gguf_type type;
  /* scalars: the value as a number (bools 0/1); strings: str */
  double number;
  const char *str;     /* NUL-terminated copy, for STRING */
  mxl_gguf_type array_type; /* ARRAY: element type and count */
  uint64_t array_count;
} mxl_gguf_kv;

typedef struct mxl_gguf_tensor {
  const char *name;
  int n_dims;
  int64_t ne[MXL_GGUF_MAX_DIMS]; /* unused dims are 1 */
  uint32_t type;
  uint64_t offset;     /* from the data area */
  uint64_t nbytes;     /* 0 when the type's size is unknown to mxlora */
  const uint8_t *data; /* NULL when nbytes is 0 */
} mxl_gguf_tensor;

typedef struct mxl_gguf {
  uint32_t version;
  uint32_t alignment;
  mxl_gguf_kv *kv;
  int n_kv;
  mxl_gguf_tensor *tensors;
  int n_tensors;
  uint64_t data_start;
  void *strings; /* owned copies */
} mxl_gguf;

/* Parses and validates a GGUF image (`size` bytes at `data`, which must
 * outlive the result). Tensors of known types must lie inside the image;
 * `header_only` skips that check (a base model read from its first bytes).
 * Errors name `source` and the key or tensor at fault. */
mxl_status mxl_gguf_parse(const uint8_t *data, size_t size, const char *source,
                          int header_only, mxl_gguf **out);
void mxl_gguf_free(mxl_gguf *g);

const mxl_gguf_kv *mxl_gguf_find_kv(const mxl_gguf *g, const char *key);
const mxl_gguf_tensor *mxl_gguf_find_tensor(const mxl_gguf *g, const char *name);
/* "F32", "BF16", "MXFP4", ... or "type N". */
const char *mxl_ggml_type_name(uint32_t type, char buf[16]);

/* ---- writer: declare everything, then stream tensor data in order ---- */

typedef struct mxl_gguf_writer mxl_gguf_writer;

mxl_status mxl_gguf_writer_create(const char *path, mxl_gguf_writer **out);
void mxl_gguf_add_string(mxl_gguf_writer *w, const char *key, const char *value);
void mxl_gguf_add_f32(mxl_gguf_writer *w, const char *key, float value);
void mxl_gguf_add_u32(mxl_gguf_writer *w, const char *key, uint32_t value);
void mxl_gguf_add_bool(mxl_gguf_writer *w, const char *key, int value);
/* ne as in the file (ne[0] fastest); type MXL_GGML_F32 or MXL_GGML_BF16. */
void mxl_gguf_add_tensor(mxl_gguf_writer *w, const char *name, int n_dims, const int64_t *ne,
                         uint32_t type);
/* Writes the header; then each tensor's bytes, in declaration order, in
 * one or more calls; commit checks the sizes and renames atomically. */
mxl_status mxl_gguf_writer_begin_data(mxl_gguf_writer *w);
mxl_status mxl_gguf_writer_write(mxl_gguf_writer *w, const void *data, size_t n);
mxl_status mxl_gguf_writer_commit(mxl_gguf_writer *w);
/* Frees the writer and removes its temporary file (after any failure). */
void mxl_gguf_writer_abort(mxl_gguf_writer *w);

#endif
