/* Stop strings: text is fed as it is generated and released only once it
 * can no longer be the start of a stop string, so a client never sees any
 * part of the stop string (as OpenAI's API behaves). */
#ifndef MXL_SERVER_STOP_H
#define MXL_SERVER_STOP_H

#include <stddef.h>

#include "core/strbuf.h"

typedef struct mxl_stop_matcher {
  const char *const *stops; /* borrowed; non-empty strings */
  int n_stops;
  mxl_strbuf held;          /* text that may still begin a stop string */
  int matched;              /* a stop string was found: later text is dropped */
} mxl_stop_matcher;

void mxl_stop_init(mxl_stop_matcher *m, const char *const *stops, int n_stops);
/* Appends to `out` the text that is now safe to show. Returns 1 when a
 * stop string has matched (`out` got the text before it), else 0. */
int mxl_stop_feed(mxl_stop_matcher *m, const char *text, size_t n, mxl_strbuf *out);
/* At the end of generation: releases the text still held. */
void mxl_stop_flush(mxl_stop_matcher *m, mxl_strbuf *out);
void mxl_stop_free(mxl_stop_matcher *m);

#endif
