#include "core/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/status.h"

mxl_status mxl_mapping_open(const char *path, mxl_mapping *out) {
  memset(out, 0, sizeof *out);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return mxl_errorf(MXL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return mxl_errorf(MXL_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return mxl_errorf(MXL_ERR_IO, "%s: not a regular file", path);
  }
  void *data = NULL;
  if (st.st_size > 0) {
    data = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data == MAP_FAILED) {
      int e = errno;
      close(fd);
      return mxl_errorf(MXL_ERR_IO, "%s: cannot map %lld bytes: %s", path,
                        (long long)st.st_size, strerror(e));
    }
  }
  close(fd);
  out->path = strdup(path);
  if (!out->path) {
    if (data) munmap(data, (size_t)st.st_size);
    return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  }
  out->data = data;
  out->size = (size_t)st.st_size;
  return MXL_OK;
}

void mxl_mapping_close(mxl_mapping *m) {
  if (!m) return;
  if (m->data) munmap((void *)m->data, m->size);
  free(m->path);
  memset(m, 0, sizeof *m);
}

void mxl_mapping_drop_pages(const void *p, size_t n) {
  static size_t page;
  if (!p || !n) return;
  if (!page) page = (size_t)sysconf(_SC_PAGESIZE);
  uintptr_t lo = ((uintptr_t)p + page - 1) / page * page, hi = ((uintptr_t)p + n) / page * page;
  if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

mxl_status mxl_read_file(const char *path, size_t max_bytes, char **data_out,
                         size_t *size_out) {
  *data_out = NULL;
  if (size_out) *size_out = 0;
  FILE *fp = fopen(path, "rb");
  if (!fp) return mxl_errorf(MXL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  /* Read up to one byte past the limit, so that a file of exactly
   * max_bytes passes and a larger one is caught. */
  size_t limit = max_bytes + 1, cap = limit < 4096 ? limit : 4096, n = 0;
  char *buf = malloc(cap + 1);
  mxl_status st = MXL_OK;
  while (buf) {
    if (n == cap) {
      if (cap == limit) break;
      cap = cap * 2 > limit ? limit : cap * 2;
      char *grown = realloc(buf, cap + 1);
      if (!grown) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = grown;
    }
    size_t got = fread(buf + n, 1, cap - n, fp);
    n += got;
    if (got == 0) {
      if (ferror(fp)) st = mxl_errorf(MXL_ERR_IO, "%s: read failed", path);
      break;
    }
  }
  if (buf && st == MXL_OK && n > max_bytes)
    st = mxl_errorf(MXL_ERR_FORMAT, "%s: larger than the limit of %zu bytes", path, max_bytes);
  fclose(fp);
  if (!buf) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  if (st != MXL_OK) {
    free(buf);
    return st;
  }
  buf[n] = '\0';
  *data_out = buf;
  if (size_out) *size_out = n;
  return MXL_OK;
}

mxl_status mxl_atomic_file_begin(const char *path, mxl_atomic_file *out) {
  memset(out, 0, sizeof *out);
  size_t len = strlen(path) + 32;
  out->final_path = strdup(path);
  out->temp_path = malloc(len);
  if (!out->final_path || !out->temp_path) {
    mxl_atomic_file_abort(out);
    return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  }
  snprintf(out->temp_path, len, "%s.tmp.%ld", path, (long)getpid());
  out->fp = fopen(out->temp_path, "wb");
  if (!out->fp) {
    mxl_status st =
        mxl_errorf(MXL_ERR_IO, "%s: cannot create: %s", out->temp_path, strerror(errno));
    mxl_atomic_file_abort(out);
    return st;
  }
  return MXL_OK;
}

mxl_status mxl_atomic_file_write(mxl_atomic_file *f, const void *data, size_t n) {
  if (n && fwrite(data, 1, n, f->fp) != n)
    return mxl_errorf(MXL_ERR_IO, "%s: write failed: %s", f->temp_path, strerror(errno));
  return MXL_OK;
}

static void fsync_parent_dir(const char *path) {
  char *copy = strdup(path);
  if (!copy) return;
  int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
  free(copy);
}

mxl_status mxl_atomic_file_commit(mxl_atomic_file *f) {
  mxl_status st = MXL_OK;
  if (fflush(f->fp) != 0 || fsync(fileno(f->fp)) != 0)
    st = mxl_errorf(MXL_ERR_IO, "%s: flush failed: %s", f->temp_path, strerror(errno));
  if (fclose(f->fp) != 0 && st == MXL_OK)
    st = mxl_errorf(MXL_ERR_IO, "%s: close failed: %s", f->temp_path, strerror(errno));
  f->fp = NULL;
  if (st == MXL_OK && rename(f->temp_path, f->final_path) != 0)
    st = mxl_errorf(MXL_ERR_IO, "%s: cannot rename into place: %s", f->final_path,
                    strerror(errno));
  if (st != MXL_OK) {
    mxl_atomic_file_abort(f);
    return st;
  }
  fsync_parent_dir(f->final_path);
  free(f->temp_path);
  free(f->final_path);
  memset(f, 0, sizeof *f);
  return MXL_OK;
}

void mxl_atomic_file_abort(mxl_atomic_file *f) {
  if (!f) return;
  if (f->fp) fclose(f->fp);
  if (f->temp_path) unlink(f->temp_path);
  free(f->temp_path);
  free(f->final_path);
  memset(f, 0, sizeof *f);
}

mxl_status mxl_write_file_atomic(const char *path, const void *data, size_t n) {
  mxl_atomic_file f;
  MXL_TRY(mxl_atomic_file_begin(path, &f));
  mxl_status st = mxl_atomic_file_write(&f, data, n);
  if (st != MXL_OK) {
    mxl_atomic_file_abort(&f);
    return st;
  }
  return mxl_atomic_file_commit(&f);
}

int mxl_path_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

int mxl_path_is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

mxl_status mxl_make_dirs(const char *path) {
  char *copy = strdup(path);
  if (!copy) return mxl_errorf(MXL_ERR_MEMORY, "%s: out of memory", path);
  for (char *p = copy + 1; ; p++) {
    char c = *p;
    if (c == '/' || c == '\0') {
      *p = '\0';
      if (mkdir(copy, 0755) != 0 && errno != EEXIST) {
        mxl_status st =
            mxl_errorf(MXL_ERR_IO, "%s: cannot create directory: %s", copy, strerror(errno));
        free(copy);
        return st;
      }
      *p = c;
      if (c == '\0') break;
    }
  }
  free(copy);
  if (!mxl_path_is_dir(path)) return mxl_errorf(MXL_ERR_IO, "%s: not a directory", path);
  return MXL_OK;
}

char *mxl_path_join(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  char *out = malloc(a + b + 2);
  if (!out) return NULL;
  memcpy(out, dir, a);
  size_t n = a;
  if (n > 0 && out[n - 1] != '/') out[n++] = '/';
  memcpy(out + n, name, b + 1);
  return out;
}
