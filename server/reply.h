/* A reply as its tokens arrive: harmony channels parsed (chat) or every
 * token shown (raw text), decoded to whole UTF-8 characters, the answer
 * cut at the first stop string. Pure: no threads, no model. */
#ifndef MXL_SERVER_REPLY_H
#define MXL_SERVER_REPLY_H

#include "core/strbuf.h"
#include "mxlora.h"
#include "server/stop.h"

typedef struct mxl_reply {
  mxl_chat_stream stream;
  mxl_stop_matcher stop;
  const int32_t *hidden; /* raw text: stop ids, not shown */
  int n_hidden;
  int n_seen;            /* tokens pushed */
  int stop_matched;      /* a stop string ended the answer */
  int tokens_at_stop;    /* tokens pushed when it matched */
  mxl_strbuf content;    /* final channel (commentary too) or raw text, since the last take */
  mxl_strbuf reasoning;  /* analysis channel, since the last take */
} mxl_reply;

/* `stops` and `hidden` are borrowed and must outlive the reply. */
void mxl_reply_init(mxl_reply *r, const mxl_tokenizer *tok, const mxl_chat_ids *ids, int chat,
                    const char *const *stops, int n_stops, const int32_t *hidden, int n_hidden);
/* Pushes one generated token; tokens after a stop string are ignored.
 * Returns 1 when this token completed a stop string. */
int mxl_reply_push(mxl_reply *r, int32_t token);
/* The end of generation: releases held-back text. */
void mxl_reply_finish(mxl_reply *r);
/* Empties content and reasoning (after the caller took them). */
void mxl_reply_clear(mxl_reply *r);
void mxl_reply_free(mxl_reply *r);

#endif
