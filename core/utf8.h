/* UTF-8 well-formedness (Unicode 15, Table 3-7: no overlong forms, no
 * surrogates, nothing above U+10FFFF), and the standard repair of text that
 * is not: every maximal ill-formed subpart becomes one U+FFFD, as Python's
 * errors="replace" and the WHATWG decoder do. */
#ifndef MXL_CORE_UTF8_H
#define MXL_CORE_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* U+FFFD REPLACEMENT CHARACTER, encoded. */
#define MXL_UTF8_REPLACEMENT "\xef\xbf\xbd"

/* Length of the well-formed character at p (1..4), or 0 when p[0..avail)
 * does not start one (including when it stops before the character ends). */
int mxl_utf8_char_len(const uint8_t *p, size_t avail);

/* 1 when s[0..n) is well-formed UTF-8 (NUL bytes allowed); else 0 with
 * *bad (when not NULL) set to the offset of the first character that is
 * not. */
int mxl_utf8_valid(const char *s, size_t n, size_t *bad);

/* How many bytes at p (avail >= 1) one replacement stands for when p does
 * not start a well-formed character: the bytes that still begin one (a
 * "maximal subpart"), at least 1. */
size_t mxl_utf8_subpart_len(const uint8_t *p, size_t avail);

/* Copies in[0..n) to out with every maximal ill-formed subpart replaced by
 * U+FFFD; out must hold 3·n bytes. Returns the bytes written. */
size_t mxl_utf8_repair(const uint8_t *in, size_t n, char *out);

#endif
