#include "core/hugemem.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "core/status.h"

mxl_status mxl_mem_available(uint64_t *bytes) {
  *bytes = 0;
  FILE *fp = fopen("/proc/meminfo", "r");
  if (!fp) return mxl_errorf(MXL_ERR_IO, "/proc/meminfo: cannot open: %s", strerror(errno));
  char line[256];
  unsigned long long kb = 0;
  int found = 0;
  while (!found && fgets(line, sizeof line, fp)) found = sscanf(line, "MemAvailable: %llu kB", &kb) == 1;
  fclose(fp);
  if (!found) return mxl_errorf(MXL_ERR_IO, "/proc/meminfo: no MemAvailable line");
  *bytes = (uint64_t)kb * 1024;
  return MXL_OK;
}

mxl_status mxl_huge_alloc(size_t bytes, const char *what, void **out) {
  *out = NULL;
  size_t size = mxl_huge_round(bytes ? bytes : 1);
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
#ifdef MADV_POPULATE_WRITE
  if (madvise(p, size, MADV_POPULATE_WRITE) != 0 && errno != EINVAL) {
    int e = errno;
    munmap(p, size);
    return mxl_errorf(MXL_ERR_MEMORY, "%s: cannot populate %zu bytes: %s", what, size,
                      strerror(e));
  }
#endif
  *out = p;
  return MXL_OK;
}

void mxl_huge_free(void *p, size_t bytes) {
  if (p) munmap(p, mxl_huge_round(bytes ? bytes : 1));
}
