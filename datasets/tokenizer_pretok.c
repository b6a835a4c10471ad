/* Pre-tokenization: UTF-8 validation and the regex split (docs/gpt-oss.md §6.3).
 *
 * tiktoken runs the o200k pattern with Rust's fancy-regex: leftmost-first
 * alternation with backtracking, the same semantics as PCRE2. Two things
 * differ and are handled here:
 *   - \s: Rust means the Unicode White_Space property; PCRE2 with UCP also
 *     counts U+180E. The pattern is rewritten to spell White_Space out.
 *   - Unicode version: Debian 12's PCRE2 (10.42) has Unicode 14 tables,
 *     tiktoken's regex crate Unicode 16. \p{L}, \p{Lu}.. \p{M}, \p{N} are
 *     rewritten to add the code points assigned since (tokenizer_unicode.c,
 *     generated with tiktoken as the judge). The larger classes are about
 *     twice as slow, so that pattern only runs on valid runs that hold such
 *     a character. Characters that changed category between the two
 *     versions are not covered.
 *   - invalid UTF-8: PCRE2 needs valid UTF-8 and tiktoken only takes valid
 *     text, so invalid byte runs are cut out as pieces of their own. */
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "datasets/tokenizer_impl.h"

const char mxl_o200k_regex[] =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*"
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|\\p{N}{1,3}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*"
    "|\\s*[\\r\\n]+"
    "|\\s+(?!\\S)"
    "|\\s+";

/* Unicode White_Space (PropList.txt), as the body of a character class. */
static const char white_space[] =
    "\\t-\\r \\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}"
    "\\x{205f}\\x{3000}";

/* Appends n bytes to a growing string; returns 0 when out of memory. */
static int append(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
  if (*len + n + 1 > *cap) {
    size_t c = (*cap ? *cap * 2 : 256);
    while (c < *len + n + 1) c *= 2;
    char *grown = realloc(*buf, c);
    if (!grown) return 0;
    *buf = grown;
    *cap = c;
  }
  memcpy(*buf + *len, s, n);
  *len += n;
  (*buf)[*len] = '\0';
  return 1;
}

/* Rewrites \s (in and out of classes) and \S (outside classes) to
 * White_Space, and adds the newer code points to \p{..} categories; every
 * other character and escape is copied as is. */
static char *rewrite_pattern(const char *re, int add_newer, int *changed) {
  char *out = NULL;
  size_t len = 0, cap = 0;
  int in_class = 0, ok = 1;
  for (const char *p = re; *p && ok; p++) {
    const char *close = p[0] == '\\' && p[1] == 'p' && p[2] == '{' ? strchr(p + 3, '}') : NULL;
    const char *extra =
        close && add_newer ? mxl_unicode_extra(p + 3, (size_t)(close - p - 3)) : NULL;
    if (extra && *extra) *changed = 1;
    if (extra && *extra) {
      ok = (in_class || append(&out, &len, &cap, "[", 1)) &&
           append(&out, &len, &cap, p, (size_t)(close - p + 1)) &&
           append(&out, &len, &cap, extra, strlen(extra)) &&
           (in_class || append(&out, &len, &cap, "]", 1));
      p = close;
      continue;
    }
    if (*p == '\\' && p[1]) {
      if (p[1] == 's' && in_class) {
        ok = append(&out, &len, &cap, white_space, sizeof white_space - 1);
      } else if ((p[1] == 's' || p[1] == 'S') && !in_class) {
        ok = append(&out, &len, &cap, p[1] == 's' ? "[" : "[^", p[1] == 's' ? 1 : 2) &&
             append(&out, &len, &cap, white_space, sizeof white_space - 1) &&
             append(&out, &len, &cap, "]", 1);
      } else {
        ok = append(&out, &len, &cap, p, 2);
      }
      p++;
      continue;
    }
    if (!in_class && *p == '[') {
      in_class = 1;
      ok = append(&out, &len, &cap, p, 1);
      /* A ']' right after '[' or '[^' is a literal member. */
      if (ok && p[1] == '^') ok = append(&out, &len, &cap, ++p, 1);
      if (ok && p[1] == ']') ok = append(&out, &len, &cap, ++p, 1);
      continue;
    }
    if (in_class && *p == ']') in_class = 0;
    ok = append(&out, &len, &cap, p, 1);
  }
  if (!ok || !out) {
    free(out);
    return ok ? strdup("") : NULL;
  }
  return out;
}

static mxl_status compile(const char *regex, int add_newer, pcre2_code **re, int *jit) {
  int changed = 0;
  char *pattern = rewrite_pattern(regex, add_newer, &changed);
  if (!pattern) return mxl_errorf(MXL_ERR_MEMORY, "tokenizer regex: out of memory");
  if (add_newer && !changed) { /* no \p{..} to extend: the plain pattern does */
    free(pattern);
    return MXL_OK;
  }
  int err = 0;
  PCRE2_SIZE where = 0;
  *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err,
                      &where, NULL);
  free(pattern);
  if (!*re) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    return mxl_errorf(MXL_ERR_FORMAT, "tokenizer regex: %s (near offset %zu of the pattern)",
                      (const char *)msg, (size_t)where);
  }
  *jit = pcre2_jit_compile(*re, PCRE2_JIT_COMPLETE) == 0;
  return MXL_OK;
}

mxl_status mxl_pretok_init(mxl_pretok *pt, const char *regex) {
  memset(pt, 0, sizeof *pt);
  mxl_status st = compile(regex, 0, &pt->re, &pt->jit);
  if (st == MXL_OK) st = compile(regex, 1, &pt->re_new, &pt->jit_new);
  if (st != MXL_OK) mxl_pretok_free(pt);
  return st;
}

void mxl_pretok_free(mxl_pretok *pt) {
  if (!pt) return;
  if (pt->re) pcre2_code_free(pt->re);
  if (pt->re_new) pcre2_code_free(pt->re_new);
  memset(pt, 0, sizeof *pt);
}

/* End of the valid UTF-8 run starting at text[pos]; *newer is set when the
 * run holds a character newer than PCRE2's Unicode tables. */
static size_t valid_run_end(const uint8_t *text, size_t len, size_t pos, int *newer) {
  while (pos < len) {
    /* Skip ASCII eight bytes at a time. */
    while (pos + 8 <= len) {
      uint64_t v;
      memcpy(&v, text + pos, 8);
      if (v & 0x8080808080808080ull) break;
      pos += 8;
    }
    if (pos >= len) break;
    int n = mxl_utf8_char_len(text + pos, len - pos);
    if (!n) break;
    if (n >= 3 && !*newer) { /* all newer characters are above U+1C88 */
      const uint8_t *c = text + pos;
      uint32_t cp = n == 3 ? (uint32_t)(c[0] & 0x0f) << 12 | (uint32_t)(c[1] & 0x3f) << 6 | (c[2] & 0x3f)
                           : (uint32_t)(c[0] & 0x07) << 18 | (uint32_t)(c[1] & 0x3f) << 12 |
                                 (uint32_t)(c[2] & 0x3f) << 6 | (c[3] & 0x3f);
      *newer = mxl_unicode_is_newer(cp);
    }
    pos += (size_t)n;
  }
  return pos;
}

static mxl_status regex_failed(int rc) {
  PCRE2_UCHAR msg[256];
  pcre2_get_error_message(rc, msg, sizeof msg);
  return mxl_errorf(MXL_ERR_BACKEND, "tokenizer: regex match failed: %s", (const char *)msg);
}

/* Splits one valid UTF-8 run with the regex. Text the regex does not cover
 * (never, for o200k) becomes a piece of its own rather than being dropped. */
static mxl_status split_valid(const pcre2_code *re, int jit, pcre2_match_data *md,
                              const uint8_t *run, size_t n, mxl_piece_fn fn, void *user) {
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
  size_t pos = 0;
  while (pos < n) {
    int rc = jit ? pcre2_jit_match(re, run, n, pos, 0, md, NULL)
                 : pcre2_match(re, run, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return fn(user, run + pos, n - pos);
    if (rc < 0) return regex_failed(rc);
    size_t start = ov[0], end = ov[1];
    if (start > pos) MXL_TRY(fn(user, run + pos, start - pos));
    if (end == start) {
      /* An empty match: the next character goes on its own (as a gap). */
      if (start == n) break;
      size_t step = (size_t)mxl_utf8_char_len(run + start, n - start);
      MXL_TRY(fn(user, run + start, step));
      pos = start + step;
      continue;
    }
    MXL_TRY(fn(user, run + start, end - start));
    pos = end;
  }
  return MXL_OK;
}

mxl_status mxl_pretok_split(const mxl_pretok *pt, const uint8_t *text, size_t len,
                            mxl_piece_fn fn, void *user) {
  if (len == 0) return MXL_OK;
  pcre2_match_data *md = pcre2_match_data_create(1, NULL);
  if (!md) return mxl_errorf(MXL_ERR_MEMORY, "tokenizer: out of memory");
  mxl_status st = MXL_OK;
  size_t pos = 0;
  while (pos < len && st == MXL_OK) {
    int newer = 0;
    size_t end = valid_run_end(text, len, pos, &newer);
    if (end > pos) {
      st = newer && pt->re_new
               ? split_valid(pt->re_new, pt->jit_new, md, text + pos, end - pos, fn, user)
               : split_valid(pt->re, pt->jit, md, text + pos, end - pos, fn, user);
      pos = end;
      continue;
    }
    /* A maximal run of bytes that do not start a valid character. */
    while (end < len && mxl_utf8_char_len(text + end, len - end) == 0) end++;
    st = fn(user, text + pos, end - pos);
    pos = end;
  }
  pcre2_match_data_free(md);
  return st;
}
