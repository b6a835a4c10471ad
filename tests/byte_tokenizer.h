/* Shared by the dataset and batch tests: a byte-level tokenizer (token id =
 * byte value) with the harmony special tokens after the 256 bytes, so that
 * expected ids and lengths can be written by hand. */
#ifndef MXL_TESTS_BYTE_TOKENIZER_H
#define MXL_TESTS_BYTE_TOKENIZER_H

#include <stdint.h>

#include "datasets/tokenizer.h"
#include "test.h"

/* Ids 256.. in this order: <|return|> is 260, <|channel|> 263, <|start|>
 * 264, <|end|> 265, <|message|> 266. */
static const char *const byte_tokenizer_specials[] = {
    "<|startoftext|>", "<|endoftext|>", "<|reserved_200000|>", "<|reserved_200001|>",
    "<|return|>",      "<|constrain|>", "<|reserved_200004|>", "<|channel|>",
    "<|start|>",       "<|end|>",       "<|message|>",         "<|reserved_200009|>",
    "<|reserved_200010|>", "<|reserved_200011|>", "<|call|>"};

/* The caller frees it with mxl_tokenizer_free; NULL (and a failed check)
 * when it cannot be built. */
static inline mxl_tokenizer *byte_tokenizer(void) {
  static uint8_t bytes[256];
  static const uint8_t *text[256];
  static uint32_t len[256];
  for (int i = 0; i < 256; i++) {
    bytes[i] = (uint8_t)i;
    text[i] = &bytes[i];
    len[i] = 1;
  }
  mxl_token_table t = {.n_text = 256, .text = text, .text_len = len,
                       .n_special = (int)(sizeof byte_tokenizer_specials /
                                          sizeof byte_tokenizer_specials[0]),
                       .special_base = 256, .special = byte_tokenizer_specials};
  mxl_tokenizer *tok = NULL;
  MXL_CHECK_OK(mxl_tokenizer_from_table(&t, &tok));
  return tok;
}

#endif
