/* A reply as its tokens arrive: harmony channels parsed (chat) or every
 * token shown (raw text), decoded to whole UTF-8 characters, the answer
 * cut at the first stop string. Pure: no threads, no model. */
#ifndef MXL_SERVER_REPLY_H
#define MXL_SERVER_REPLY_H

#include "core/strbuf.h"
#include "mxlora.h"
#include "server/stop.h"

/* Bytes of a function's name: OpenAI's limit, which requests are held to
 * (MXL_API_FUNCTION_NAME_MAX); a longer name the model writes is cut. */
enum { MXL_REPLY_CALL_NAME_MAX = 64 };

/* A function call: a commentary message addressed "to=functions.NAME",
 * its text the arguments (JSON as the model wrote it). */
typedef struct mxl_reply_call {
  char name[MXL_REPLY_CALL_NAME_MAX + 1];
  mxl_strbuf arguments; /* whole, not reset by mxl_reply_clear */
} mxl_reply_call;

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
  int in_call;           /* the current message is calls[n_calls - 1] */
  int n_calls;
  mxl_reply_call calls[MXL_JOB_MAX_CALLS];
} mxl_reply;

/* `stops` and `hidden` are borrowed and must outlive the reply. */
void mxl_reply_init(mxl_reply *r, const mxl_tokenizer *tok, const mxl_chat_ids *ids, int chat,
                    const char *const *stops, int n_stops, const int32_t *hidden, int n_hidden);
/* Chat replies to a request that offered function tools: a message
 * addressed to functions.NAME becomes a call (its text leaves content);
 * without this, such text stays in content as before. */
void mxl_reply_parse_calls(mxl_reply *r);
/* Tokens of the reply's first message that the prompt already holds (a
 * call's header the request forced): read as the model's own, not counted
 * as generated. */
void mxl_reply_seed(mxl_reply *r, const int32_t *tokens, int n);
/* Pushes one generated token; tokens after a stop string are ignored.
 * Returns 1 when this token completed a stop string. */
int mxl_reply_push(mxl_reply *r, int32_t token);
/* The end of generation: releases held-back text. */
void mxl_reply_finish(mxl_reply *r);
/* Empties content and reasoning (after the caller took them). */
void mxl_reply_clear(mxl_reply *r);
void mxl_reply_free(mxl_reply *r);

#endif
