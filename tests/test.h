/* A minimal test harness: checks that keep going after a failure, a
 * countable summary, and a non-zero exit status when anything failed.
 *
 *   static void test_roundtrip(void) { MXL_CHECK(x == 1); MXL_CHECK_NEAR(a, b, 1e-6); }
 *   int main(void) { MXL_RUN(test_roundtrip); return mxl_test_summary("safetensors"); }
 *
 * Every test executable is one ctest test; ctest prints the grand total. */
#ifndef MXL_TESTS_TEST_H
#define MXL_TESTS_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mxlora.h"

static int mxl_test_checks, mxl_test_failures, mxl_test_cases, mxl_test_failed_cases,
    mxl_test_skips;
static const char *mxl_test_current = "";

#define MXL_CHECK_MSG(cond, ...)                                                          \
  do {                                                                                    \
    mxl_test_checks++;                                                                    \
    if (!(cond)) {                                                                        \
      mxl_test_failures++;                                                                \
      fprintf(stderr, "%s:%d: %s: check failed: %s: ", __FILE__, __LINE__,                \
              mxl_test_current, #cond);                                                   \
      fprintf(stderr, __VA_ARGS__);                                                       \
      fputc('\n', stderr);                                                                \
    }                                                                                     \
  } while (0)

#define MXL_CHECK(cond) MXL_CHECK_MSG(cond, "%s", "")

/* Checks that a library call returned MXL_OK, printing its error otherwise. */
#define MXL_CHECK_OK(expr)                                                                \
  do {                                                                                    \
    mxl_status mxl_check_st_ = (expr);                                                    \
    MXL_CHECK_MSG(mxl_check_st_ == MXL_OK, "%s: %s", mxl_status_name(mxl_check_st_),      \
                  mxl_last_error());                                                      \
  } while (0)

/* Checks that a call failed with `status` and that its message contains
 * `needle` (the file, field or problem it must name). */
#define MXL_CHECK_FAILS(expr, status, needle)                                             \
  do {                                                                                    \
    mxl_status mxl_check_st_ = (expr);                                                    \
    MXL_CHECK_MSG(mxl_check_st_ == (status), "got %s (%s), expected %s",                  \
                  mxl_status_name(mxl_check_st_), mxl_last_error(),                       \
                  mxl_status_name(status));                                               \
    MXL_CHECK_MSG(strstr(mxl_last_error(), (needle)) != NULL,                             \
                  "message \"%s\" does not mention \"%s\"", mxl_last_error(), (needle));  \
  } while (0)

#define MXL_CHECK_NEAR(a, b, tol)                                                         \
  do {                                                                                    \
    double mxl_a_ = (double)(a), mxl_b_ = (double)(b);                                    \
    MXL_CHECK_MSG(fabs(mxl_a_ - mxl_b_) <= (tol), "%.9g vs %.9g (tolerance %.3g)",        \
                  mxl_a_, mxl_b_, (double)(tol));                                         \
  } while (0)

/* Marks the current test case as skipped, with the reason. */
#define MXL_SKIP(...)                                                                     \
  do {                                                                                    \
    mxl_test_skips++;                                                                     \
    fprintf(stderr, "SKIP %s: ", mxl_test_current);                                       \
    fprintf(stderr, __VA_ARGS__);                                                         \
    fputc('\n', stderr);                                                                  \
    return;                                                                               \
  } while (0)

#define MXL_RUN(fn)                                                                       \
  do {                                                                                    \
    int mxl_before_ = mxl_test_failures;                                                  \
    mxl_test_current = #fn;                                                               \
    fn();                                                                                 \
    mxl_test_cases++;                                                                     \
    if (mxl_test_failures != mxl_before_) mxl_test_failed_cases++;                        \
  } while (0)

static inline int mxl_test_summary(const char *suite) {
  printf("%s: %d cases (%d failed, %d skipped), %d checks, %d passed, %d failed\n", suite,
         mxl_test_cases, mxl_test_failed_cases, mxl_test_skips, mxl_test_checks,
         mxl_test_checks - mxl_test_failures, mxl_test_failures);
  return mxl_test_failures == 0 ? 0 : 1;
}

/* Source-tree paths baked in by CMake, for fixtures and the shared data. */
#ifndef MXL_SOURCE_DIR
#error "tests are built by CMake, which defines MXL_SOURCE_DIR"
#endif

#endif
