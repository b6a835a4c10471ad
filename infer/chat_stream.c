/* The harmony reply stream of include/mxlora/generate.h. */
#include "mxlora.h"

#include <string.h>

#include "core/assert.h"
#include "core/status.h"
#include "core/utf8.h"

mxl_status mxl_chat_ids_lookup(const mxl_tokenizer *tok, mxl_chat_ids *out) {
  const char *names[] = {"<|start|>", "<|end|>", "<|message|>", "<|channel|>",
                         "<|return|>", "<|call|>", "<|constrain|>"};
  int32_t *slots[] = {&out->start, &out->end, &out->message, &out->channel,
                      &out->ret, &out->call, &out->constrain};
  for (int i = 0; i < 7; i++) {
    *slots[i] = mxl_tokenizer_special(tok, names[i]);
    if (*slots[i] < 0)
      return mxl_errorf(MXL_ERR_FORMAT, "the tokenizer has no %s token: not a harmony tokenizer",
                        names[i]);
  }
  return MXL_OK;
}

void mxl_chat_stream_init(mxl_chat_stream *s, const mxl_tokenizer *tok,
                          const mxl_chat_ids *ids, int chat, mxl_text_fn on_text, void *user) {
  memset(s, 0, sizeof *s);
  s->tok = tok;
  if (ids) s->ids = *ids;
  s->chat = chat;
  s->in_header = chat;
  s->channel = chat ? MXL_CHANNEL_FINAL : MXL_CHANNEL_TEXT;
  s->on_text = on_text;
  s->user = user;
}

/* The channel named in a header like "assistant<|channel|>analysis". */
static mxl_channel header_channel(const char *header) {
  const char *c = strstr(header, "<|channel|>");
  const char *name = c ? c + strlen("<|channel|>") : header;
  if (!strncmp(name, "analysis", 8)) return MXL_CHANNEL_ANALYSIS;
  if (!strncmp(name, "commentary", 10)) return MXL_CHANNEL_COMMENTARY;
  return MXL_CHANNEL_FINAL;
}

/* What reaches the caller is always well-formed UTF-8: the decoder holds
 * back a character split across tokens, and what can never complete (an
 * ill-formed token, a model that stops mid-character) is shown as U+FFFD,
 * not passed on as bytes a terminal or a JSON encoder would choke on. */
static void send(mxl_chat_stream *s, const char *bytes, int n) {
  if (n <= 0 || !s->on_text) return;
  char out[3 * 512];
  MXL_ASSERT((size_t)n <= sizeof out / 3);
  size_t m = mxl_utf8_repair((const uint8_t *)bytes, (size_t)n, out);
  s->on_text(s->user, s->channel, out, m);
}

static void emit(mxl_chat_stream *s, int32_t token) {
  char buf[512];
  send(s, buf, mxl_decode_stream_push(s->tok, &s->decode, token, buf, sizeof buf));
}

static void header_append(mxl_chat_stream *s, int32_t token) {
  uint32_t len = 0;
  const uint8_t *bytes = mxl_tokenizer_token_bytes(s->tok, token, &len);
  if (!bytes) return;
  size_t room = sizeof s->header - 1 - s->header_len;
  if (len > room) len = (uint32_t)room;
  memcpy(s->header + s->header_len, bytes, len);
  s->header_len += len;
  s->header[s->header_len] = '\0';
}

void mxl_chat_stream_push(mxl_chat_stream *s, int32_t t) {
  if (!s->chat) {
    emit(s, t);
    return;
  }
  const mxl_chat_ids *id = &s->ids;
  if (t == id->ret || t == id->call || t == id->end) {
    mxl_chat_stream_flush(s);
    s->in_header = 1;
    s->header_len = 0;
    s->header[0] = '\0';
  } else if (t == id->start) {
    s->in_header = 1;
    s->header_len = 0;
    s->header[0] = '\0';
  } else if (t == id->message && s->in_header) {
    s->channel = header_channel(s->header);
    s->in_header = 0;
    if (s->on_message) {
      char to[sizeof s->header];
      mxl_chat_stream_recipient(s, to, sizeof to);
      s->on_message(s->user, s->channel, to);
    }
  } else if (s->in_header) {
    header_append(s, t);
  } else {
    emit(s, t);
  }
}

/* An incomplete character held back at the end becomes U+FFFD. */
void mxl_chat_stream_flush(mxl_chat_stream *s) {
  char buf[16];
  send(s, buf, mxl_decode_stream_flush(&s->decode, buf, sizeof buf));
}

void mxl_chat_stream_on_message(mxl_chat_stream *s, mxl_message_fn on_message) {
  s->on_message = on_message;
}

/* The recipient follows "to=" in the role part ("assistant to=functions.f")
 * or after the channel ("<|channel|>commentary to=functions.f"), and ends
 * at a space or the next special token. */
size_t mxl_chat_stream_recipient(const mxl_chat_stream *s, char *out, size_t cap) {
  const char *to = NULL;
  for (const char *p = strstr(s->header, "to="); p; p = strstr(p + 1, "to="))
    if (p == s->header || p[-1] == ' ' || p[-1] == '>') {
      to = p + 3;
      break;
    }
  size_t n = 0;
  while (to && to[n] && to[n] != ' ' && to[n] != '<' && to[n] != '\n') n++;
  if (n >= cap) n = cap - 1;
  if (n) memcpy(out, to, n);
  out[n] = '\0';
  return n;
}
