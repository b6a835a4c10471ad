/* core/strbuf: growth, printf of long text, JSON strings, the sticky failure flag. */
#include <stdint.h>

#include "core/strbuf.h"
#include "test.h"

static void test_many_appends(void) {
  mxl_strbuf b = {0};
  /* 10,000 appends of varying length cross many capacity doublings; the
   * expected text is rebuilt independently with plain arrays */
  static char expect[10000 * 7 + 1];
  size_t n = 0;
  for (int i = 0; i < 10000; i++) {
    char piece[8];
    int k = 1 + i % 6;
    for (int j = 0; j < k; j++) piece[j] = (char)('a' + (i + j) % 26);
    mxl_strbuf_append(&b, piece, (size_t)k);
    memcpy(expect + n, piece, (size_t)k);
    n += (size_t)k;
  }
  expect[n] = '\0';
  MXL_CHECK(!b.failed);
  MXL_CHECK(b.len == n);
  MXL_CHECK(b.cap > b.len);
  MXL_CHECK(b.data && b.data[b.len] == '\0');
  MXL_CHECK(b.data && !memcmp(b.data, expect, n + 1));
  mxl_strbuf_free(&b);
  MXL_CHECK(!b.data && b.len == 0 && b.cap == 0);
}

static void test_append_keeps_nul_bytes(void) {
  mxl_strbuf b = {0};
  mxl_strbuf_append(&b, "a\0b", 3);
  mxl_strbuf_puts(&b, "cd");
  mxl_strbuf_append(&b, NULL, 0);
  MXL_CHECK(b.len == 5);
  MXL_CHECK(b.data && !memcmp(b.data, "a\0bcd", 6));
  mxl_strbuf_free(&b);
}

static void test_printf(void) {
  mxl_strbuf b = {0};
  mxl_strbuf_printf(&b, "%d-%s", 42, "x");
  MXL_CHECK(b.data && !strcmp(b.data, "42-x"));
  /* a piece far longer than the space left, twice (grows twice) */
  static char big[20001];
  memset(big, 'z', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  mxl_strbuf_printf(&b, "[%s]", big);
  mxl_strbuf_printf(&b, "%s|%05d", big, 7);
  MXL_CHECK(!b.failed);
  MXL_CHECK(b.len == 4 + 20002 + 20006);
  MXL_CHECK(b.data && strlen(b.data) == b.len);
  MXL_CHECK(b.data && !memcmp(b.data, "42-x[zz", 7));
  MXL_CHECK(b.data && !strcmp(b.data + 4 + 20002 + 20000, "|00007"));
  /* a piece that fits the space left is written in place */
  size_t cap = b.cap;
  mxl_strbuf_printf(&b, "%c", '!');
  MXL_CHECK(b.cap == cap);
  MXL_CHECK(b.data && b.data[b.len - 1] == '!' && b.data[b.len] == '\0');
  /* an empty format appends nothing but still gives a text */
  mxl_strbuf_free(&b);
  mxl_strbuf_printf(&b, "%s", "");
  MXL_CHECK(b.len == 0 && !b.failed && b.data && b.data[0] == '\0');
  mxl_strbuf_free(&b);
}

static void test_json_string(void) {
  mxl_strbuf b = {0};
  const char s[] = "a\"b\\c\n\x01\x1f\x7f\xc3\xa9";
  mxl_strbuf_json_string(&b, s, sizeof s - 1);
  MXL_CHECK(b.data && !strcmp(b.data, "\"a\\\"b\\\\c\\u000a\\u0001\\u001f\x7f\xc3\xa9\""));
  mxl_strbuf_clear(&b);
  mxl_strbuf_json_string(&b, "x\0y", 3); /* a NUL inside counts as a control byte */
  MXL_CHECK(b.data && !strcmp(b.data, "\"x\\u0000y\""));
  mxl_strbuf_free(&b);
}

static void test_take_and_clear(void) {
  mxl_strbuf b = {0};
  char *empty = mxl_strbuf_take(&b);
  MXL_CHECK(empty && !strcmp(empty, ""));
  free(empty);
  mxl_strbuf_puts(&b, "first");
  mxl_strbuf_clear(&b);
  MXL_CHECK(b.len == 0 && b.data && b.data[0] == '\0');
  mxl_strbuf_puts(&b, "second");
  char *text = mxl_strbuf_take(&b);
  MXL_CHECK(text && !strcmp(text, "second"));
  MXL_CHECK(!b.data && b.len == 0 && b.cap == 0 && !b.failed);
  free(text);
}

/* A size past half the address space can never be allocated: it sets the
 * flag without touching the text, and the flag sticks. */
static void test_failure_is_sticky(void) {
  mxl_strbuf b = {0};
  mxl_strbuf_puts(&b, "kept");
  mxl_strbuf_append(&b, "x", SIZE_MAX / 2);
  MXL_CHECK(b.failed);
  MXL_CHECK(b.len == 4 && b.data && !strcmp(b.data, "kept"));
  mxl_strbuf_puts(&b, "more");
  mxl_strbuf_printf(&b, "%d", 5);
  mxl_strbuf_json_string(&b, "j", 1);
  MXL_CHECK(b.len == 4 && b.data && !strcmp(b.data, "kept"));
  MXL_CHECK(mxl_strbuf_take(&b) == NULL);
  MXL_CHECK(!b.data && !b.failed);
  /* clear lifts the flag: the buffer is usable again */
  mxl_strbuf_append(&b, "x", SIZE_MAX / 2);
  MXL_CHECK(b.failed);
  mxl_strbuf_clear(&b);
  mxl_strbuf_puts(&b, "ok");
  MXL_CHECK(!b.failed && b.data && !strcmp(b.data, "ok"));
  mxl_strbuf_free(&b);
}

int main(void) {
  MXL_RUN(test_many_appends);
  MXL_RUN(test_append_keeps_nul_bytes);
  MXL_RUN(test_printf);
  MXL_RUN(test_json_string);
  MXL_RUN(test_take_and_clear);
  MXL_RUN(test_failure_is_sticky);
  return mxl_test_summary("strbuf");
}
