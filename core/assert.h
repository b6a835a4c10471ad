/* Internal invariants. MXL_ASSERT(cond) states what holds unless mxlora
 * itself has a bug; it never checks outside input (bad files, flags and
 * requests get a status and a message). In debug, sanitizer and fuzz builds
 * (CMake defines MXL_ASSERTIONS=1 there) a false invariant prints
 *
 *   adapters/lora.c:198: invariant failed: offset % MXL_LORA_ALIGN == 0
 *
 * to stderr and aborts, so that tests and fuzzers stop at the cause; in
 * release builds the condition is not evaluated and costs nothing. */
#ifndef MXL_CORE_ASSERT_H
#define MXL_CORE_ASSERT_H

#ifndef MXL_ASSERTIONS
#define MXL_ASSERTIONS 0
#endif

_Noreturn void mxl_assert_fail(const char *file, int line, const char *cond);

#if MXL_ASSERTIONS
#define MXL_ASSERT(cond) ((cond) ? (void)0 : mxl_assert_fail(__FILE__, __LINE__, #cond))
#else
#define MXL_ASSERT(cond) ((void)sizeof(!(cond)))
#endif

#endif
