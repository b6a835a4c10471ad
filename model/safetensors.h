/* safetensors: a validating, mmap-based reader (single files and sharded
 * checkpoints through model.safetensors.index.json) and a streaming writer
 * that commits atomically.
 *
 * File format: u64 LE header length N, N bytes of JSON
 *   {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]},
 *    "__metadata__": {"key": "string value", ...}}
 * then the data area; offsets are relative to its first byte. */
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
 * model.safetensors.index.json (path to the index itself). Everything is
 * validated before use; errors name the file and the problem. */
mxl_status mxl_safetensors_open(const char *path, mxl_safetensors **out);
void mxl_safetensors_close(mxl_safetensors *st);

/* Binary search by exact name; NULL if absent. */
const mxl_st_tensor *mxl_safetensors_find(const mxl_safetensors *st, const char *name);

/* The "__metadata__" value for `key` in the first file, or NULL. */
const char *mxl_safetensors_metadata(const mxl_safetensors *st, const char *key);

/* ---- writer ---- */

typedef struct mxl_st_spec {
  const char *name;
  mxl_dtype dtype;
  int ndim;
  int64_t shape[MXL_ST_MAX_DIMS];
} mxl_st_spec;

typedef struct mxl_st_writer mxl_st_writer;

/* Starts a file with these tensors, in this order (data is laid out in the
 * same order). metadata is NULL or n_metadata key/value string pairs. The
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
