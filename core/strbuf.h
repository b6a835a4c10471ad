/* A growable text buffer for building reports, headers and files in memory.
 *
 *   mxl_strbuf b = {0};
 *   mxl_strbuf_puts(&b, "layers: ");
 *   mxl_strbuf_printf(&b, "%d\n", n);
 *   char *text = mxl_strbuf_take(&b);  // NULL when an allocation failed
 *
 * Appends never fail loudly: a failed allocation sets the sticky `failed`
 * flag, later appends do nothing, and the caller turns the flag into an
 * error once, at the end. The text is always NUL-terminated once anything
 * was appended. */
#ifndef MXL_CORE_STRBUF_H
#define MXL_CORE_STRBUF_H

#include <stddef.h>

typedef struct mxl_strbuf {
  char *data;  /* NUL-terminated text; NULL until the first append */
  size_t len;  /* bytes of text, not counting the NUL */
  size_t cap;  /* bytes allocated at data */
  int failed;  /* an allocation failed (or a size overflowed): appends stop */
} mxl_strbuf;

/* Appends `n` bytes (which may hold NULs). */
void mxl_strbuf_append(mxl_strbuf *b, const void *bytes, size_t n);
/* Appends a NUL-terminated string. */
void mxl_strbuf_puts(mxl_strbuf *b, const char *s);
/* Appends printf-formatted text of any length. */
void mxl_strbuf_printf(mxl_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends `n` bytes of UTF-8 as a JSON string literal: quotes around it,
 * '"' and '\\' backslash-escaped, bytes below 0x20 as \u00XX, all other
 * bytes copied as they are. */
void mxl_strbuf_json_string(mxl_strbuf *b, const char *s, size_t n);

/* Empties the buffer for reuse (keeps its memory) and clears `failed`. */
void mxl_strbuf_clear(mxl_strbuf *b);
/* Hands the text to the caller (free() it) and leaves the buffer empty.
 * Returns "" (allocated) when nothing was appended, NULL when `failed`. */
char *mxl_strbuf_take(mxl_strbuf *b);
/* Frees the text and leaves the buffer empty. */
void mxl_strbuf_free(mxl_strbuf *b);

#endif
