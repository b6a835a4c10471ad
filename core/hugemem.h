/* Anonymous memory in 2 MB pages, for data read over and over at memory
 * speed (the base weights under --no-mmap): a mapped checkpoint sits in the
 * page cache on scattered 4 KB pages, which stream slower than 2 MB ones
 * (more TLB misses, no huge-page prefetch across page boundaries). */
#ifndef MXL_CORE_HUGEMEM_H
#define MXL_CORE_HUGEMEM_H

#include <stddef.h>
#include <stdint.h>

#include "mxlora.h"

enum { MXL_HUGE_PAGE = 2 << 20 };

/* Bytes rounded up to whole 2 MB pages. */
static inline size_t mxl_huge_round(size_t bytes) {
  return (bytes + MXL_HUGE_PAGE - 1) / MXL_HUGE_PAGE * MXL_HUGE_PAGE;
}

/* /proc/meminfo's MemAvailable in bytes: what can be allocated without
 * swapping (free memory plus reclaimable page cache). */
mxl_status mxl_mem_available(uint64_t *bytes);

/* Maps `bytes` (rounded up to 2 MB) of zeroed, writable memory aligned to
 * 2 MB, advised MADV_HUGEPAGE (used when transparent huge pages are
 * `madvise` or `always`) and populated up front (MADV_POPULATE_WRITE, Linux
 * 5.14), so a shortage shows here as an error rather than later as a fault.
 * `what` names the memory in the error. Free with mxl_huge_free. */
mxl_status mxl_huge_alloc(size_t bytes, const char *what, void **out);
void mxl_huge_free(void *p, size_t bytes);

#endif
