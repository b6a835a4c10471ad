/* Seconds on the monotonic clock, for timing (progress, rates, speed
 * probes). Header-only: one definition instead of a copy per file. */
#ifndef MXL_CORE_CLOCK_H
#define MXL_CORE_CLOCK_H

#include <time.h>

static inline double mxl_now_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#endif
