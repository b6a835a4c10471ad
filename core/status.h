/* Status codes and the error message that goes with them.
 *
 * Library code never prints and never exits: a failing function records a
 * message naming the file, line or field at fault with mxl_errorf() and
 * returns the status. Only the CLI prints mxl_last_error(). The message lives
 * in thread-local storage, like errno, so worker threads do not clobber the
 * caller's message. */
#ifndef MXL_CORE_STATUS_H
#define MXL_CORE_STATUS_H

#include "mxlora.h" /* mxl_status */

/* Records a formatted message for the current thread and returns `status`,
 * so that call sites read `return mxl_errorf(MXL_ERR_FORMAT, "...", ...);`. */
mxl_status mxl_errorf(mxl_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prefixes the current message with context ("loading adapter x: ") and
 * returns `status` unchanged. Used when an error travels up a layer. */
mxl_status mxl_error_prefix(mxl_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void mxl_error_clear(void);

/* Passes a formatted warning to the handler installed with
 * mxl_set_warning_handler (mxlora.h), if any. */
void mxl_warnf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Propagates a failure: `MXL_TRY(f(x));` returns f's status if it failed. */
#define MXL_TRY(expr)                                                          \
  do {                                                                         \
    mxl_status mxl_try_status_ = (expr);                                       \
    if (mxl_try_status_ != MXL_OK) return mxl_try_status_;                     \
  } while (0)

#endif
