/* safetensors: a validating, mmap-based reader (single files and sharded
 * checkpoints through model.safetensors.index.json) and a streaming writer
 * that commits atomically.
 *
 * File format: u64 LE header length N, N bytes of JSON
 *   {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]},
 *    "__metadata__": {"key": "string value", ...}}
 * then the data area; offsets are relative to its first byte.
 *
 * The reader checks, before anything is used: the file holds the 8-byte
 * length; the header lies inside the file and under MXL_ST_MAX_HEADER; it is
 * one JSON object; every dtype is known; shapes are non-negative integers,
 * at most 8 of them, whose product times the dtype size neither overflows
 * nor differs from end - begin; begin <= end <= data size; non-empty spans do
 * not overlap; names are unique; "__metadata__" is an object of strings.
 * Gaps between spans are allowed. Tensor data is only as aligned as its
 * offset: read elements with memcpy, not through a cast pointer.
 *
 * A sharded checkpoint is opened through its index: each shard named in
 * "weight_map" is opened once, every name in the map must be in the shard
 * it names, every tensor of a shard must be in the map, and
 * "metadata.total_size", when present, must equal the sum of tensor bytes. */
#ifndef MXL_MODEL_SAFETENSORS_H
#define MXL_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/fileio.h"

typedef enum mxl_dtype {
  MXL_DT_BOOL, MXL_DT_U8, MXL_DT_I8, MXL_DT_F8_E4M3, MXL_DT_F8_E5M2,
  MXL_DT_I16, MXL_DT_U16, MXL_DT_F16, MXL_DT_BF16,
  MXL_DT_I32, MXL_DT_U32, MXL_DT_F32,
  MXL_DT_I64, MXL_DT_U64, MXL_DT_F64,
  MXL_DT_COUNT
} mxl_dtype;

const char *mxl_dtype_name(mxl_dtype dt); /* the safetensors spelling: "BF16" */
size_t mxl_dtype_size(mxl_dtype dt);      /* bytes per element */
/* Parses a safetensors dtype string; returns -1 if unknown. */
int mxl_dtype_parse(const char *name);

enum { MXL_ST_MAX_DIMS = 8 };
#define MXL_ST_MAX_HEADER ((uint64_t)100000000) /* bytes, as the reference reader */

typedef struct mxl_st_tensor {
  const char *name;
  mxl_dtype dtype;
  int ndim;
  int64_t shape[MXL_ST_MAX_DIMS];
  const uint8_t *data; /* inside the mapping of its file */
  size_t nbytes;
  int file; /* index into mxl_safetensors.files */
} mxl_st_tensor;

typedef struct mxl_safetensors {
  mxl_mapping *files; /* one per shard */
  int n_files;
  mxl_st_tensor *tensors; /* sorted by name */
  int n_tensors;
  /* ... private bookkeeping may follow */
  void *impl;
} mxl_safetensors;

/* Opens one .safetensors file, or every shard named by a
 * model.safetensors.index.json (path to the index itself; a path ending in
 * ".json" is read as an index). Shards are looked up beside the index and
 * must be plain file names. Everything is validated before use; errors name
 * the file and the problem. */
mxl_status mxl_safetensors_open(const char *path, mxl_safetensors **out);
void mxl_safetensors_close(mxl_safetensors *st);

/* Binary search by exact name; NULL if absent. */
const mxl_st_tensor *mxl_safetensors_find(const mxl_safetensors *st, const char *name);

/* The "__metadata__" value for `key` in the first file, or NULL. */
const char *mxl_safetensors_metadata(const mxl_safetensors *st, const char *key);
/* The first file's metadata entries, in file order: i in [0, count). */
int mxl_safetensors_metadata_count(const mxl_safetensors *st);
void mxl_safetensors_metadata_at(const mxl_safetensors *st, int i, const char **key,
                                 const char **value);

/* Validates a whole safetensors file image already in memory (`size` bytes
 * at `data`, which must outlive the result; tensors point into it). `name`
 * is used in messages. This is the parser mxl_safetensors_open uses for
 * each file; the fuzz target calls it directly. */
mxl_status mxl_safetensors_parse_buffer(const uint8_t *data, size_t size, const char *name,
                                        mxl_safetensors **out);

/* ---- writer ---- */

typedef struct mxl_st_spec {
  const char *name;
  mxl_dtype dtype;
  int ndim;
  int64_t shape[MXL_ST_MAX_DIMS];
} mxl_st_spec;

typedef struct mxl_st_writer mxl_st_writer;

/* Starts a file with these tensors, in this order (data is laid out in the
 * same order, contiguously, after a header padded with spaces to a multiple
 * of 8 bytes). metadata is NULL or n_metadata key/value string pairs, i.e.
 * 2 * n_metadata strings: key0, value0, key1, value1, ... The
 * data is then streamed with mxl_st_writer_write in declaration order, in
 * pieces of any size; memory stays bounded whatever the file size. */
mxl_status mxl_st_writer_begin(const char *path, const mxl_st_spec *specs, int n_specs,
                               const char *const *metadata, int n_metadata,
                               mxl_st_writer **out);
mxl_status mxl_st_writer_write(mxl_st_writer *w, const void *data, size_t n);
/* Checks that exactly the declared bytes were written, then fsyncs and
 * renames into place. Frees the writer whatever the outcome. */
mxl_status mxl_st_writer_commit(mxl_st_writer *w);
void mxl_st_writer_abort(mxl_st_writer *w);

/* Convenience: one call for tensors already in memory (data[i] holds spec i). */
mxl_status mxl_safetensors_write(const char *path, const mxl_st_spec *specs,
                                 const void *const *data, int n,
                                 const char *const *metadata, int n_metadata);

#endif
