#include "core/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/assert.h"

enum { MXL_ERROR_CAPACITY = 2048 };

static _Thread_local char error_text[MXL_ERROR_CAPACITY];

mxl_status mxl_errorf(mxl_status status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(error_text, sizeof error_text, fmt, ap);
  va_end(ap);
  return status;
}

mxl_status mxl_error_prefix(mxl_status status, const char *fmt, ...) {
  char prefix[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  /* Shift the message right and put the prefix in front, truncating the tail. */
  size_t plen = strlen(prefix), mlen = strlen(error_text);
  if (plen >= MXL_ERROR_CAPACITY) plen = MXL_ERROR_CAPACITY - 1;
  if (plen + mlen >= MXL_ERROR_CAPACITY) mlen = MXL_ERROR_CAPACITY - 1 - plen;
  memmove(error_text + plen, error_text, mlen);
  memcpy(error_text, prefix, plen);
  error_text[plen + mlen] = '\0';
  return status;
}

/* Set once by the program before it starts threads, read by any thread. */
static mxl_warning_fn warning_fn;
static void *warning_user;

void mxl_set_warning_handler(mxl_warning_fn fn, void *user) {
  warning_fn = fn;
  warning_user = user;
}

void mxl_warnf(const char *fmt, ...) {
  if (!warning_fn) return;
  char text[MXL_ERROR_CAPACITY];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  warning_fn(warning_user, text);
}

/* The one place the library writes to stderr: a bug in mxlora, about to
 * abort (core/assert.h). */
_Noreturn void mxl_assert_fail(const char *file, int line, const char *cond) {
  fprintf(stderr, "%s:%d: invariant failed: %s\n", file, line, cond);
  fflush(stderr);
  abort();
}

void mxl_error_clear(void) { error_text[0] = '\0'; }

const char *mxl_last_error(void) { return error_text; }

const char *mxl_status_name(mxl_status status) {
  switch (status) {
  case MXL_OK: return "ok";
  case MXL_ERR_ARGUMENT: return "invalid argument";
  case MXL_ERR_UNSUPPORTED: return "unsupported";
  case MXL_ERR_IO: return "I/O error";
  case MXL_ERR_FORMAT: return "malformed input";
  case MXL_ERR_MEMORY: return "out of memory";
  case MXL_ERR_STATE: return "invalid state";
  case MXL_ERR_NUMERIC: return "numeric error";
  case MXL_ERR_BACKEND: return "backend error";
  case MXL_ERR_INTERRUPTED: return "interrupted";
  case MXL_ERR_NOT_FOUND: return "not found";
  case MXL_ERR_BUSY: return "busy";
  }
  return "unknown status";
}
