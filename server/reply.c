#include "server/reply.h"

#include <stdio.h>
#include <string.h>

static void text_out(void *user, mxl_channel ch, const char *text, size_t len) {
  mxl_reply *r = user;
  if (r->in_call) {
    mxl_strbuf_append(&r->calls[r->n_calls - 1].arguments, text, len);
  } else if (ch == MXL_CHANNEL_ANALYSIS) {
    mxl_strbuf_append(&r->reasoning, text, len);
  } else if (!r->stop_matched && mxl_stop_feed(&r->stop, text, len, &r->content)) {
    r->stop_matched = 1;
    r->tokens_at_stop = r->n_seen;
  }
}

void mxl_reply_init(mxl_reply *r, const mxl_tokenizer *tok, const mxl_chat_ids *ids, int chat,
                    const char *const *stops, int n_stops, const int32_t *hidden, int n_hidden) {
  memset(r, 0, sizeof *r);
  mxl_stop_init(&r->stop, stops, n_stops);
  mxl_chat_stream_init(&r->stream, tok, ids, chat, text_out, r);
  r->hidden = chat ? NULL : hidden;
  r->n_hidden = chat ? 0 : n_hidden;
}

/* A message has begun: a call when it is addressed to functions.NAME (the
 * calls past MXL_JOB_MAX_CALLS stay text, in content). */
static void message_begun(void *user, mxl_channel channel, const char *recipient) {
  static const char prefix[] = "functions.";
  mxl_reply *r = user;
  (void)channel;
  r->in_call = 0;
  if (strncmp(recipient, prefix, sizeof prefix - 1) || !recipient[sizeof prefix - 1] ||
      r->n_calls == MXL_JOB_MAX_CALLS)
    return;
  mxl_reply_call *c = &r->calls[r->n_calls++];
  snprintf(c->name, sizeof c->name, "%s", recipient + sizeof prefix - 1);
  r->in_call = 1;
}

void mxl_reply_parse_calls(mxl_reply *r) { mxl_chat_stream_on_message(&r->stream, message_begun); }

void mxl_reply_seed(mxl_reply *r, const int32_t *tokens, int n) {
  for (int i = 0; i < n; i++) mxl_chat_stream_push(&r->stream, tokens[i]);
}

int mxl_reply_push(mxl_reply *r, int32_t token) {
  if (r->stop_matched) return 0;
  r->n_seen++;
  for (int i = 0; i < r->n_hidden; i++)
    if (r->hidden[i] == token) return 0;
  mxl_chat_stream_push(&r->stream, token);
  return r->stop_matched;
}

void mxl_reply_finish(mxl_reply *r) {
  mxl_chat_stream_flush(&r->stream);
  if (!r->stop_matched) mxl_stop_flush(&r->stop, &r->content);
}

void mxl_reply_clear(mxl_reply *r) {
  mxl_strbuf_clear(&r->content);
  mxl_strbuf_clear(&r->reasoning);
}

void mxl_reply_free(mxl_reply *r) {
  for (int i = 0; i < r->n_calls; i++) mxl_strbuf_free(&r->calls[i].arguments);
  mxl_stop_free(&r->stop);
  mxl_strbuf_free(&r->content);
  mxl_strbuf_free(&r->reasoning);
}
