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

/* Test hook: mxl_mem_available reads `path` instead of /proc/meminfo (NULL
 * restores it), so a test can show how a small MemAvailable is handled. */
void mxl_mem_available_path_for_tests(const char *path);

/* The process's anonymous memory on 2 MB pages (AnonHugePages of
 * /proc/self/smaps_rollup), in bytes. */
mxl_status mxl_anon_huge_bytes(uint64_t *bytes);

/* Maps `bytes` (rounded up to 2 MB) of zeroed, writable memory aligned to
 * 2 MB, advised MADV_HUGEPAGE (used when transparent huge pages are
 * `madvise` or `always`) and populated up front (MADV_POPULATE_WRITE, Linux
 * 5.14), so a shortage shows here as an error rather than later as a fault.
 * `what` names the memory in the error. Free with mxl_huge_free. */
mxl_status mxl_huge_alloc(size_t bytes, const char *what, void **out);
void mxl_huge_free(void *p, size_t bytes);

/* Working memory freed with free(): `bytes` (0: 64) aligned to 64 bytes,
 * or, from 2 MB up, to 2 MB and advised MADV_HUGEPAGE, not faulted in.
 * Activations, gradients and scratch of a step are streamed op after op;
 * on 4 KB pages (the default where transparent huge pages are in `madvise`
 * mode) each TLB miss costs a page walk, two-level under a hypervisor.
 * NULL when out of memory. */
void *mxl_work_alloc(size_t bytes);

/* How mxl_huge_read_file reads. */
typedef struct mxl_huge_read {
  size_t chunk;   /* bytes per step, a multiple of 2 MB; 0: 64 MB */
  int drop_cache; /* drop the file's page cache behind the copy */
  void (*progress)(void *user, size_t bytes); /* after each step (may be NULL) */
  void *user;
} mxl_huge_read;

/* Copies the file at `path`, which must be `size` bytes, into new memory
 * as mxl_huge_alloc's (free with mxl_huge_free(*out, size)). Step by step:
 * the next chunk's 2 MB pages are faulted in (a shortage is an error),
 * filled with pread (the kernel copies from the page cache) and, with
 * drop_cache, the file's cached pages of that chunk are dropped
 * (POSIX_FADV_DONTNEED; pages other processes map stay), so that a copy
 * which cannot stay in memory beside the file's page cache takes its 2 MB
 * pages from the cache it has read rather than from fragmented leftovers. */
mxl_status mxl_huge_read_file(const char *path, size_t size, const mxl_huge_read *how,
                              void **out);

#endif
