/* core/: errors, warnings, assertions, bf16 conversion, atomic files,
 * UTF-8 repair. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

/* The invariant checks are on here whatever the build type. */
#undef MXL_ASSERTIONS
#define MXL_ASSERTIONS 1
#include "core/assert.h"

#include "core/bf16.h"
#include "core/fileio.h"
#include "core/status.h"
#include "core/utf8.h"
#include "test.h"

static void test_error_message(void) {
  mxl_status st = mxl_errorf(MXL_ERR_FORMAT, "%s: bad field %d", "x.json", 3);
  MXL_CHECK(st == MXL_ERR_FORMAT);
  MXL_CHECK(!strcmp(mxl_last_error(), "x.json: bad field 3"));
  mxl_error_prefix(st, "loading %s: ", "model");
  MXL_CHECK(!strcmp(mxl_last_error(), "loading model: x.json: bad field 3"));
}

static void test_bf16_rounding(void) {
  MXL_CHECK(mxl_f32_to_bf16(1.0f) == 0x3f80);
  MXL_CHECK(mxl_bf16_to_f32(0x3f80) == 1.0f);
  /* 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties to even (1). */
  MXL_CHECK(mxl_f32_to_bf16(1.00390625f) == 0x3f80);
  /* 1 + 3·2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6 (even). */
  MXL_CHECK(mxl_f32_to_bf16(1.01171875f) == 0x3f82);
  MXL_CHECK(mxl_f32_to_bf16(-2.5f) == 0xc020);
  uint16_t nan = mxl_f32_to_bf16(NAN);
  MXL_CHECK((nan & 0x7f80) == 0x7f80 && (nan & 0x7f) != 0);
  MXL_CHECK(mxl_f32_to_bf16(INFINITY) == 0x7f80);
}

/* A false invariant names file, line and condition on stderr, then aborts
 * (checked in a child process). */
static void test_assert(void) {
  int fds[2];
  MXL_CHECK(pipe(fds) == 0);
  int two = 2;
  MXL_ASSERT(two == 2); /* a true one does nothing */
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 2);
    MXL_ASSERT(two == 3);
    _exit(0);
  }
  close(fds[1]);
  char msg[256] = "";
  ssize_t n = read(fds[0], msg, sizeof msg - 1);
  msg[n > 0 ? n : 0] = '\0';
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  MXL_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
  MXL_CHECK_MSG(strstr(msg, "tests/test_core.c:") && strstr(msg, ": invariant failed: two == 3\n"),
                "%s", msg);
}

static char warned[256];
static void keep_warning(void *user, const char *message) {
  *(int *)user += 1;
  snprintf(warned, sizeof warned, "%s", message);
}

static void test_warnings(void) {
  mxl_warnf("dropped %d", 1); /* no handler: nothing happens */
  int calls = 0;
  mxl_set_warning_handler(keep_warning, &calls);
  mxl_warnf("%s: old format %u", "a.mxla", 1u);
  mxl_set_warning_handler(NULL, NULL);
  mxl_warnf("dropped again");
  MXL_CHECK(calls == 1 && !strcmp(warned, "a.mxla: old format 1"));
}

/* Expected outputs: the Unicode Standard's own example of maximal subparts
 * (chapter 3, Table 3-8) and cases that agree with Python's
 * bytes.decode("utf-8", "replace"). */
static void test_utf8_repair(void) {
  static const struct {
    const char *in, *out;
  } cases[] = {
      {"\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64",
       "a\uFFFD\uFFFD\uFFFDb\uFFFDc\uFFFD\uFFFDd"},
      {"\xe2\x82", "\uFFFD"},          /* a character cut short: one replacement */
      {"\xf0\x9f\x98", "\uFFFD"},
      {"x\xc3", "x\uFFFD"},
      {"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"}, /* a surrogate is no prefix at all */
      {"\xf4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"}, /* above U+10FFFF */
      {"\xc0\xaf", "\uFFFD\uFFFD"},             /* overlong */
      {"\xff", "\uFFFD"},
      {"\xf0\x9f\x98\x80 \xd0\x96", "\U0001F600 \u0416"}, /* well-formed: unchanged */
      {"", ""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t n = strlen(cases[i].in);
    char out[64];
    size_t m = mxl_utf8_repair((const uint8_t *)cases[i].in, n, out);
    MXL_CHECK_MSG(m == strlen(cases[i].out) && !memcmp(out, cases[i].out, m), "case %zu", i);
  }
  MXL_CHECK(mxl_utf8_char_len((const uint8_t *)"\xe2\x82\xac", 3) == 3);
  MXL_CHECK(mxl_utf8_char_len((const uint8_t *)"\xe2\x82\xac", 2) == 0);
  MXL_CHECK(mxl_utf8_char_len((const uint8_t *)"\xe0\x80\x80", 3) == 0);
}

static void test_atomic_write(void) {
  char path[] = "/tmp/mxl_core_XXXXXX";
  int fd = mkstemp(path);
  MXL_CHECK(fd >= 0);
  close(fd);
  MXL_CHECK_OK(mxl_write_file_atomic(path, "hello", 5));
  char *data = NULL;
  size_t n = 0;
  MXL_CHECK_OK(mxl_read_file(path, 1 << 20, &data, &n));
  MXL_CHECK(n == 5 && data && !memcmp(data, "hello", 5));
  free(data);
  /* An aborted write leaves the old content and no temporary file. */
  mxl_atomic_file f;
  MXL_CHECK_OK(mxl_atomic_file_begin(path, &f));
  MXL_CHECK_OK(mxl_atomic_file_write(&f, "torn", 4));
  char temp[256];
  snprintf(temp, sizeof temp, "%s", f.temp_path);
  mxl_atomic_file_abort(&f);
  MXL_CHECK(!mxl_path_exists(temp));
  MXL_CHECK_OK(mxl_read_file(path, 1 << 20, &data, &n));
  MXL_CHECK(n == 5 && !memcmp(data, "hello", 5));
  free(data);
  MXL_CHECK_FAILS(mxl_read_file(path, 2, &data, &n), MXL_ERR_FORMAT, "limit");
  unlink(path);
  MXL_CHECK_FAILS(mxl_read_file("/nonexistent/x", 10, &data, &n), MXL_ERR_IO,
                  "/nonexistent/x");
}

int main(void) {
  MXL_RUN(test_error_message);
  MXL_RUN(test_bf16_rounding);
  MXL_RUN(test_warnings);
  MXL_RUN(test_assert);
  MXL_RUN(test_utf8_repair);
  MXL_RUN(test_atomic_write);
  return mxl_test_summary("core");
}
