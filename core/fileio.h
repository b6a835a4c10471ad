/* Files: read-only memory maps, whole-file reads, and atomic writes.
 *
 * Every write that matters (checkpoints, adapters, exports) goes through
 * mxl_atomic_file: data is written to "<path>.tmp.<pid>", fsynced, renamed
 * over <path>, and the directory is fsynced, so a crash leaves either the old
 * file or the new one, never a torn one. */
#ifndef MXL_CORE_FILEIO_H
#define MXL_CORE_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mxlora.h"

typedef struct mxl_mapping {
  const uint8_t *data; /* NULL for an empty file */
  size_t size;
  char *path; /* owned copy, for error messages */
} mxl_mapping;

/* Maps `path` read-only (MAP_PRIVATE). An empty file maps to data == NULL. */
mxl_status mxl_mapping_open(const char *path, mxl_mapping *out);
void mxl_mapping_close(mxl_mapping *m);
/* Drops the whole pages of [p, p + n) of a read-only mapping from this
 * process's resident set (madvise MADV_DONTNEED): they stay in the page
 * cache and come back, unchanged, if touched again. For passes that read a
 * mapped model once, front to back (merge, training), whose pages would
 * otherwise all stay resident. */
void mxl_mapping_drop_pages(const void *p, size_t n);

/* Reads a whole file into a NUL-terminated malloc'd buffer (size excludes
 * the NUL). Refuses files larger than `max_bytes`. */
mxl_status mxl_read_file(const char *path, size_t max_bytes, char **data_out,
                         size_t *size_out);

typedef struct mxl_atomic_file {
  FILE *fp;
  char *final_path;
  char *temp_path;
} mxl_atomic_file;

mxl_status mxl_atomic_file_begin(const char *path, mxl_atomic_file *out);
mxl_status mxl_atomic_file_write(mxl_atomic_file *f, const void *data, size_t n);
/* Flushes, fsyncs, renames into place and fsyncs the directory. */
mxl_status mxl_atomic_file_commit(mxl_atomic_file *f);
/* Removes the temporary file; safe after a failed write or commit. */
void mxl_atomic_file_abort(mxl_atomic_file *f);

/* Convenience: writes one buffer atomically. */
mxl_status mxl_write_file_atomic(const char *path, const void *data, size_t n);

int mxl_path_exists(const char *path);
int mxl_path_is_dir(const char *path);
/* Creates a directory and its parents (like mkdir -p). */
mxl_status mxl_make_dirs(const char *path);
/* Joins two path parts with one '/'; returns a malloc'd string or NULL. */
char *mxl_path_join(const char *dir, const char *name);

#endif
