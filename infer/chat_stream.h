/* Follows a harmony reply as it is generated, token by token, and turns it
 * into text per channel: headers (<|channel|>NAME<|message|>) are read, not
 * shown; <|end|> closes a message, <|start|>assistant opens the next one;
 * <|return|> and <|call|> end the reply. */
#ifndef MXL_INFER_CHAT_STREAM_H
#define MXL_INFER_CHAT_STREAM_H

#include "mxlora.h"

typedef struct mxl_chat_ids {
  int32_t start, end, message, channel, ret, call, constrain;
} mxl_chat_ids;

mxl_status mxl_chat_ids_lookup(const mxl_tokenizer *tok, mxl_chat_ids *out);

typedef struct mxl_chat_stream {
  const mxl_tokenizer *tok;
  mxl_chat_ids ids;
  int chat;             /* 0: plain text, every token is shown */
  int in_header;        /* reading a message header */
  mxl_channel channel;  /* of the current message */
  char header[128];     /* header text seen so far (role, channel name, recipient) */
  size_t header_len;
  mxl_decode_stream decode;
  mxl_text_fn on_text;
  void *user;
} mxl_chat_stream;

/* A chat stream starts inside the header of the assistant message that the
 * prompt opened with <|start|>assistant. */
void mxl_chat_stream_init(mxl_chat_stream *s, const mxl_tokenizer *tok,
                          const mxl_chat_ids *ids, int chat, mxl_text_fn on_text, void *user);
void mxl_chat_stream_push(mxl_chat_stream *s, int32_t token);
void mxl_chat_stream_flush(mxl_chat_stream *s);

#endif
