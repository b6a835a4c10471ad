#include "core/hugemem.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/status.h"

static const char *meminfo_path = "/proc/meminfo";

void mxl_mem_available_path_for_tests(const char *path) {
  meminfo_path = path ? path : "/proc/meminfo";
}

/* The value in kB of the first line "<key> N kB" of `path`. */
static mxl_status read_kb_field(const char *path, const char *key, uint64_t *bytes) {
  *bytes = 0;
  FILE *fp = fopen(path, "r");
  if (!fp) return mxl_errorf(MXL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  char line[256];
  size_t key_len = strlen(key);
  unsigned long long kb = 0;
  int found = 0;
  while (!found && fgets(line, sizeof line, fp))
    found = strncmp(line, key, key_len) == 0 && line[key_len] == ':' &&
            sscanf(line + key_len + 1, " %llu kB", &kb) == 1;
  fclose(fp);
  if (!found) return mxl_errorf(MXL_ERR_IO, "%s: no %s line", path, key);
  *bytes = (uint64_t)kb * 1024;
  return MXL_OK;
}

mxl_status mxl_mem_available(uint64_t *bytes) {
  return read_kb_field(meminfo_path, "MemAvailable", bytes);
}

mxl_status mxl_anon_huge_bytes(uint64_t *bytes) {
  return read_kb_field("/proc/self/smaps_rollup", "AnonHugePages", bytes);
}

/* Maps `size` bytes (whole 2 MB pages) aligned to 2 MB and advised
 * MADV_HUGEPAGE, nothing faulted in yet. */
static mxl_status huge_map(size_t size, const char *what, uint8_t **out) {
  *out = NULL;
  /* Over-map by one page and trim, so the start lies on a 2 MB boundary. */
  uint8_t *raw = mmap(NULL, size + MXL_HUGE_PAGE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED)
    return mxl_errorf(MXL_ERR_MEMORY, "%s: cannot map %zu bytes: %s", what, size,
                      strerror(errno));
  uint8_t *p = (uint8_t *)(((uintptr_t)raw + MXL_HUGE_PAGE - 1) & ~(uintptr_t)(MXL_HUGE_PAGE - 1));
  if (p > raw) munmap(raw, (size_t)(p - raw));
  size_t tail = (size_t)(raw + size + MXL_HUGE_PAGE - (p + size));
  if (tail) munmap(p + size, tail);
#ifdef MADV_HUGEPAGE
  (void)madvise(p, size, MADV_HUGEPAGE); /* best effort: 4 KB pages where THP is off */
#endif
  *out = p;
  return MXL_OK;
}

/* Faults in [p, p + n) of a huge_map region (kernels before 5.14 lack
 * MADV_POPULATE_WRITE: there the first write faults each page in). */
static mxl_status huge_populate(uint8_t *p, size_t n, const char *what) {
#ifdef MADV_POPULATE_WRITE
  if (madvise(p, n, MADV_POPULATE_WRITE) != 0 && errno != EINVAL)
    return mxl_errorf(MXL_ERR_MEMORY, "%s: cannot populate %zu bytes: %s", what, n,
                      strerror(errno));
#else
  (void)p, (void)n, (void)what;
#endif
  return MXL_OK;
}

mxl_status mxl_huge_alloc(size_t bytes, const char *what, void **out) {
  *out = NULL;
  size_t size = mxl_huge_round(bytes ? bytes : 1);
  uint8_t *p;
  MXL_TRY(huge_map(size, what, &p));
  mxl_status st = huge_populate(p, size, what);
  if (st != MXL_OK) {
    munmap(p, size);
    return st;
  }
  *out = p;
  return MXL_OK;
}

void *mxl_work_alloc(size_t bytes) {
  size_t size = bytes ? (bytes + 63) & ~(size_t)63 : 64;
  size_t align = size >= MXL_HUGE_PAGE ? MXL_HUGE_PAGE : 64;
  void *p = NULL;
  if (size < bytes || posix_memalign(&p, align, size) != 0) return NULL;
#ifdef MADV_HUGEPAGE
  /* best effort: the whole 2 MB pages inside [p, p + size) are eligible */
  if (align == MXL_HUGE_PAGE) (void)madvise(p, size & ~(size_t)4095, MADV_HUGEPAGE);
#endif
  return p;
}

void mxl_huge_free(void *p, size_t bytes) {
  if (p) munmap(p, mxl_huge_round(bytes ? bytes : 1));
}

/* Reads [at, at + n) of fd into dst, whole (pread may return less). */
static mxl_status read_span(int fd, const char *path, uint8_t *dst, size_t at, size_t n) {
  for (size_t done = 0; done < n;) {
    ssize_t got = pread(fd, dst + done, n - done, (off_t)(at + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0)
      return mxl_errorf(MXL_ERR_IO, "%s: read failed at byte %zu: %s", path, at + done,
                        got < 0 ? strerror(errno) : "unexpected end of file");
    done += (size_t)got;
  }
  return MXL_OK;
}

static mxl_status read_chunks(int fd, const char *path, size_t size, const mxl_huge_read *how,
                              uint8_t *p) {
  size_t chunk = how && how->chunk ? how->chunk : (size_t)64 << 20;
  if (chunk % MXL_HUGE_PAGE)
    return mxl_errorf(MXL_ERR_ARGUMENT, "%s: copy step %zu is not a multiple of 2 MB", path,
                      chunk);
  for (size_t at = 0; at < size; at += chunk) {
    size_t n = size - at < chunk ? size - at : chunk;
    MXL_TRY(huge_populate(p + at, mxl_huge_round(n), path));
    MXL_TRY(read_span(fd, path, p + at, at, n));
    /* advice only: a page cache that keeps the pages costs speed, not data */
    if (how && how->drop_cache) (void)posix_fadvise(fd, (off_t)at, (off_t)n, POSIX_FADV_DONTNEED);
    if (how && how->progress) how->progress(how->user, n);
  }
  return MXL_OK;
}

mxl_status mxl_huge_read_file(const char *path, size_t size, const mxl_huge_read *how,
                              void **out) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return mxl_errorf(MXL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0 || (uint64_t)sb.st_size != (uint64_t)size) {
    close(fd);
    return mxl_errorf(MXL_ERR_IO, "%s: changed since it was opened (size)", path);
  }
  uint8_t *p = NULL;
  size_t mapped = mxl_huge_round(size ? size : 1);
  mxl_status st = huge_map(mapped, path, &p);
  if (st == MXL_OK) st = read_chunks(fd, path, size, how, p);
  close(fd);
  if (st != MXL_OK) {
    if (p) munmap(p, mapped);
    return st;
  }
  *out = p;
  return MXL_OK;
}
