#include "core/utf8.h"

#include <string.h>

/* The range the second byte of a character may take after lead byte c, and
 * the character's length; 0 when c cannot lead. */
static int lead(uint8_t c, uint8_t *lo, uint8_t *hi) {
  *lo = 0x80, *hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) return 2;
  if (c == 0xe0) return *lo = 0xa0, 3;
  if (c == 0xed) return *hi = 0x9f, 3; /* no surrogates */
  if (c >= 0xe1 && c <= 0xef) return 3;
  if (c == 0xf0) return *lo = 0x90, 4;
  if (c == 0xf4) return *hi = 0x8f, 4; /* nothing above U+10FFFF */
  if (c >= 0xf1 && c <= 0xf3) return 4;
  return 0;
}

/* Bytes at p that begin a well-formed character (up to its length). */
static size_t prefix_len(const uint8_t *p, size_t avail, int *need) {
  uint8_t lo, hi;
  *need = p[0] < 0x80 ? 1 : lead(p[0], &lo, &hi);
  if (*need <= 1) return (size_t)*need;
  size_t k = 1;
  if (k < avail && p[1] >= lo && p[1] <= hi) k++;
  else return k;
  while (k < avail && k < (size_t)*need && (p[k] & 0xc0) == 0x80) k++;
  return k;
}

int mxl_utf8_char_len(const uint8_t *p, size_t avail) {
  if (!avail) return 0;
  int need;
  size_t k = prefix_len(p, avail, &need);
  return need > 0 && k == (size_t)need ? need : 0;
}

int mxl_utf8_valid(const char *s, size_t n, size_t *bad) {
  const uint8_t *p = (const uint8_t *)s;
  for (size_t i = 0; i < n;) {
    int len = mxl_utf8_char_len(p + i, n - i);
    if (len == 0) {
      if (bad) *bad = i;
      return 0;
    }
    i += (size_t)len;
  }
  return 1;
}

size_t mxl_utf8_subpart_len(const uint8_t *p, size_t avail) {
  int need;
  size_t k = prefix_len(p, avail, &need);
  return k ? k : 1;
}

size_t mxl_utf8_repair(const uint8_t *in, size_t n, char *out) {
  size_t i = 0, o = 0;
  while (i < n) {
    int len = mxl_utf8_char_len(in + i, n - i);
    if (len > 0) {
      memcpy(out + o, in + i, (size_t)len);
      o += (size_t)len;
      i += (size_t)len;
    } else {
      memcpy(out + o, MXL_UTF8_REPLACEMENT, 3);
      o += 3;
      i += mxl_utf8_subpart_len(in + i, n - i);
    }
  }
  return o;
}
