/* infer/chat_stream: what generation hands to the caller, token by token,
 * on a byte-level tokenizer (token id = byte value), so that a reply can
 * stop in the middle of a character. */
#include "core/utf8.h"
#include "mxlora.h"
#include "test.h"
#include "tests/byte_tokenizer.h"

typedef struct collected {
  char text[4][256]; /* per channel */
  size_t len[4];
  int calls;
} collected;

static void collect(void *user, mxl_channel ch, const char *text, size_t len) {
  collected *c = user;
  memcpy(c->text[ch] + c->len[ch], text, len);
  c->len[ch] += len;
  c->text[ch][c->len[ch]] = '\0';
  c->calls++;
}

static void push_bytes(mxl_chat_stream *s, const char *bytes) {
  for (const char *p = bytes; *p; p++) mxl_chat_stream_push(s, (uint8_t)*p);
}

/* Raw generation that stops mid-character used to flush the raw
 * bytes; now the tail is held back and becomes U+FFFD at the end. */
static mxl_tokenizer *tok;

static void test_raw_tails(void) {
  collected c = {0};
  mxl_chat_stream s;
  mxl_chat_stream_init(&s, tok, NULL, 0, collect, &c);
  push_bytes(&s, "a\xe2\x82");
  MXL_CHECK(!strcmp(c.text[MXL_CHANNEL_TEXT], "a")); /* the split character waits */
  push_bytes(&s, "\xac");
  MXL_CHECK(!strcmp(c.text[MXL_CHANNEL_TEXT], "a\xe2\x82\xac"));
  push_bytes(&s, "\xf0\x9f\x98");
  mxl_chat_stream_flush(&s);
  MXL_CHECK_MSG(!strcmp(c.text[MXL_CHANNEL_TEXT], "a\xe2\x82\xac" MXL_UTF8_REPLACEMENT), "%s",
                c.text[MXL_CHANNEL_TEXT]);
  /* A byte that can never complete is replaced at once, not passed on. */
  memset(&c, 0, sizeof c);
  mxl_chat_stream_init(&s, tok, NULL, 0, collect, &c);
  push_bytes(&s, "\xc3x\xff!");
  mxl_chat_stream_flush(&s);
  MXL_CHECK(!strcmp(c.text[MXL_CHANNEL_TEXT],
                    MXL_UTF8_REPLACEMENT "x" MXL_UTF8_REPLACEMENT "!"));
}

/* Harmony: headers are read, not shown; the answer arrives on the final
 * channel, the reasoning on the analysis channel. */
static void test_channels(void) {
  mxl_chat_ids ids;
  MXL_CHECK_OK(mxl_chat_ids_lookup(tok, &ids));
  collected c = {0};
  mxl_chat_stream s;
  mxl_chat_stream_init(&s, tok, &ids, 1, collect, &c);
  mxl_chat_stream_push(&s, ids.channel);
  push_bytes(&s, "analysis");
  mxl_chat_stream_push(&s, ids.message);
  push_bytes(&s, "think\xd0");
  mxl_chat_stream_push(&s, ids.end); /* ends the message mid-character */
  mxl_chat_stream_push(&s, ids.start);
  push_bytes(&s, "assistant");
  mxl_chat_stream_push(&s, ids.channel);
  push_bytes(&s, "final");
  mxl_chat_stream_push(&s, ids.message);
  push_bytes(&s, "42");
  mxl_chat_stream_push(&s, ids.ret);
  MXL_CHECK(!strcmp(c.text[MXL_CHANNEL_ANALYSIS], "think" MXL_UTF8_REPLACEMENT));
  MXL_CHECK(!strcmp(c.text[MXL_CHANNEL_FINAL], "42"));
  MXL_CHECK(c.len[MXL_CHANNEL_TEXT] == 0 && c.len[MXL_CHANNEL_COMMENTARY] == 0);
}

typedef struct messages_seen {
  int n;
  mxl_channel channel[4];
  char recipient[4][32];
} messages_seen;

static void on_message(void *user, mxl_channel ch, const char *recipient) {
  messages_seen *m = user;
  if (m->n < 4) {
    m->channel[m->n] = ch;
    snprintf(m->recipient[m->n], sizeof m->recipient[0], "%s", recipient);
  }
  m->n++;
}

static void ignore_text(void *user, mxl_channel ch, const char *text, size_t len) {
  (void)user, (void)ch, (void)text, (void)len;
}

/* The message callback: once per message, before its text, with its
 * channel and recipient. */
static void test_message_callback(void) {
  mxl_chat_ids ids;
  MXL_CHECK_OK(mxl_chat_ids_lookup(tok, &ids));
  messages_seen m = {0};
  mxl_chat_stream s;
  mxl_chat_stream_init(&s, tok, &ids, 1, ignore_text, &m);
  mxl_chat_stream_on_message(&s, on_message);
  mxl_chat_stream_push(&s, ids.channel);
  push_bytes(&s, "analysis");
  mxl_chat_stream_push(&s, ids.message);
  MXL_CHECK(m.n == 1 && m.channel[0] == MXL_CHANNEL_ANALYSIS && !m.recipient[0][0]);
  push_bytes(&s, "hmm");
  mxl_chat_stream_push(&s, ids.end);
  mxl_chat_stream_push(&s, ids.start);
  push_bytes(&s, "assistant to=functions.get_weather");
  mxl_chat_stream_push(&s, ids.channel);
  push_bytes(&s, "commentary json");
  MXL_CHECK(m.n == 1);
  mxl_chat_stream_push(&s, ids.message);
  MXL_CHECK(m.n == 2 && m.channel[1] == MXL_CHANNEL_COMMENTARY &&
            !strcmp(m.recipient[1], "functions.get_weather"));
  push_bytes(&s, "{}");
  mxl_chat_stream_push(&s, ids.call);
  MXL_CHECK(m.n == 2);
}

/* A message's recipient, read from its header wherever harmony puts it
 * (after the channel, or in the role part), until the next message; a
 * long name is cut to the buffer. */
static void test_recipient(void) {
  mxl_chat_ids ids;
  MXL_CHECK_OK(mxl_chat_ids_lookup(tok, &ids));
  collected c = {0};
  mxl_chat_stream s;
  mxl_chat_stream_init(&s, tok, &ids, 1, collect, &c);
  char to[16];
  mxl_chat_stream_push(&s, ids.channel);
  push_bytes(&s, "commentary to=functions.f ");
  mxl_chat_stream_push(&s, ids.constrain);
  push_bytes(&s, "json");
  mxl_chat_stream_push(&s, ids.message);
  MXL_CHECK(mxl_chat_stream_recipient(&s, to, sizeof to) == 11 && !strcmp(to, "functions.f"));
  push_bytes(&s, "{}");
  MXL_CHECK(!strcmp(to, "functions.f") && !strcmp(c.text[MXL_CHANNEL_COMMENTARY], "{}"));
  mxl_chat_stream_push(&s, ids.call);
  mxl_chat_stream_push(&s, ids.start);
  push_bytes(&s, "assistant to=functions.a_very_long_name");
  mxl_chat_stream_push(&s, ids.channel);
  push_bytes(&s, "commentary");
  mxl_chat_stream_push(&s, ids.message);
  MXL_CHECK(mxl_chat_stream_recipient(&s, to, sizeof to) == 15 && !strcmp(to, "functions.a_ver"));
  mxl_chat_stream_push(&s, ids.end);
  mxl_chat_stream_push(&s, ids.start);
  push_bytes(&s, "assistant");
  mxl_chat_stream_push(&s, ids.channel);
  push_bytes(&s, "final auto=1");
  mxl_chat_stream_push(&s, ids.message);
  MXL_CHECK(mxl_chat_stream_recipient(&s, to, sizeof to) == 0 && to[0] == '\0');
}

int main(void) {
  tok = byte_tokenizer();
  if (tok) {
    MXL_RUN(test_raw_tails);
    MXL_RUN(test_channels);
    MXL_RUN(test_recipient);
    MXL_RUN(test_message_callback);
  }
  mxl_tokenizer_free(tok);
  return mxl_test_summary("chat_stream");
}
