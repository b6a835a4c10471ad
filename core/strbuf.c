/* The growable text buffer: capacity doubles, so n appends cost O(total). */
#include "core/strbuf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Makes room for `extra` more bytes plus the NUL; 0 when that failed. */
static int reserve(mxl_strbuf *b, size_t extra) {
  if (b->failed) return 0;
  /* doubling below must not overflow: refuse sizes past half the address space */
  if (extra >= SIZE_MAX / 2 - b->len) {
    b->failed = 1;
    return 0;
  }
  size_t need = b->len + extra + 1;
  if (need <= b->cap) return 1;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need) cap *= 2;
  char *grown = realloc(b->data, cap);
  if (!grown) {
    b->failed = 1;
    return 0;
  }
  b->data = grown;
  b->cap = cap;
  return 1;
}

void mxl_strbuf_append(mxl_strbuf *b, const void *bytes, size_t n) {
  if (!reserve(b, n)) return;
  if (n) memcpy(b->data + b->len, bytes, n);
  b->len += n;
  b->data[b->len] = '\0';
}

void mxl_strbuf_puts(mxl_strbuf *b, const char *s) { mxl_strbuf_append(b, s, strlen(s)); }

void mxl_strbuf_printf(mxl_strbuf *b, const char *fmt, ...) {
  if (b->failed) return;
  /* First try the space already there; when the text is longer, vsnprintf
   * has told its length: grow once and format again. */
  va_list ap;
  va_start(ap, fmt);
  size_t room = b->data ? b->cap - b->len : 0;
  int need = vsnprintf(b->data ? b->data + b->len : NULL, room, fmt, ap);
  va_end(ap);
  if (need < 0 || ((size_t)need >= room && !reserve(b, (size_t)need))) {
    b->failed = 1;
    if (b->data) b->data[b->len] = '\0'; /* drop what a failed try wrote */
    return;
  }
  if ((size_t)need >= room) {
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
  }
  b->len += (size_t)need;
}

void mxl_strbuf_json_string(mxl_strbuf *b, const char *s, size_t n) {
  mxl_strbuf_append(b, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      char esc[2] = {'\\', (char)c};
      mxl_strbuf_append(b, esc, 2);
    } else if (c < 0x20) {
      mxl_strbuf_printf(b, "\\u%04x", c);
    } else {
      mxl_strbuf_append(b, &s[i], 1);
    }
  }
  mxl_strbuf_append(b, "\"", 1);
}

void mxl_strbuf_clear(mxl_strbuf *b) {
  b->len = 0;
  b->failed = 0;
  if (b->data) b->data[0] = '\0';
}

char *mxl_strbuf_take(mxl_strbuf *b) {
  if (!b->failed && !b->data) mxl_strbuf_append(b, "", 0);
  char *text = b->failed ? NULL : b->data;
  if (!text) free(b->data);
  *b = (mxl_strbuf){0};
  return text;
}

void mxl_strbuf_free(mxl_strbuf *b) {
  free(b->data);
  *b = (mxl_strbuf){0};
}
