#include "server/stop.h"

#include <string.h>

void mxl_stop_init(mxl_stop_matcher *m, const char *const *stops, int n_stops) {
  memset(m, 0, sizeof *m);
  m->stops = stops;
  m->n_stops = n_stops;
}

/* Length of the longest suffix of h[0..n) that is a proper prefix of a
 * stop string. */
static size_t partial_tail(const mxl_stop_matcher *m, const char *h, size_t n) {
  size_t best = 0;
  for (int i = 0; i < m->n_stops; i++) {
    size_t len = strlen(m->stops[i]);
    for (size_t k = len - 1 < n ? len - 1 : n; k > best; k--)
      if (!memcmp(h + n - k, m->stops[i], k)) {
        best = k;
        break;
      }
  }
  return best;
}

int mxl_stop_feed(mxl_stop_matcher *m, const char *text, size_t n, mxl_strbuf *out) {
  if (m->matched) return 1;
  if (m->n_stops == 0) {
    mxl_strbuf_append(out, text, n);
    return 0;
  }
  mxl_strbuf_append(&m->held, text, n);
  const char *h = m->held.data ? m->held.data : "";
  /* The stop that completes first wins (ties: the one that starts first):
   * that is what generation fed token by token would have hit, so text fed
   * whole and fed in pieces shows the same. */
  size_t hn = m->held.len, first = hn, first_end = (size_t)-1;
  for (int i = 0; i < m->n_stops; i++) {
    size_t len = strlen(m->stops[i]);
    const char *hit = memmem(h, hn, m->stops[i], len);
    if (!hit) continue;
    size_t at = (size_t)(hit - h);
    if (at + len < first_end || (at + len == first_end && at < first)) {
      first = at;
      first_end = at + len;
    }
  }
  if (first < hn) {
    mxl_strbuf_append(out, h, first);
    m->matched = 1;
    mxl_strbuf_clear(&m->held);
    return 1;
  }
  size_t keep = partial_tail(m, h, hn);
  mxl_strbuf_append(out, h, hn - keep);
  if (m->held.data) {
    memmove(m->held.data, h + hn - keep, keep);
    m->held.len = keep;
    m->held.data[keep] = '\0';
  }
  return 0;
}

void mxl_stop_flush(mxl_stop_matcher *m, mxl_strbuf *out) {
  if (!m->matched && m->held.len) mxl_strbuf_append(out, m->held.data, m->held.len);
  mxl_strbuf_clear(&m->held);
}

void mxl_stop_free(mxl_stop_matcher *m) { mxl_strbuf_free(&m->held); }
