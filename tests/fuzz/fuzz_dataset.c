/* libFuzzer target for the dataset sample mapping and the harmony renderer:
 * any bytes given as one sample (a {"messages"}, {"prompt","completion"} or
 * {"text"} object, or a bare message list) must be refused with a message or
 * rendered so that the tokens decode back to exactly the rendered text and
 * every token carries its mask flags. Rendered with a byte-level tokenizer
 * (id = byte) so that nothing depends on a vocabulary file. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/tokenizer.h"
#include "mxlora.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok) {
  if (!ok) __builtin_trap();
}

static const char *const specials[] = {
    "<|startoftext|>", "<|endoftext|>", "<|reserved_200000|>", "<|reserved_200001|>",
    "<|return|>",      "<|constrain|>", "<|reserved_200004|>", "<|channel|>",
    "<|start|>",       "<|end|>",       "<|message|>",         "<|reserved_200009|>",
    "<|reserved_200010|>", "<|reserved_200011|>", "<|call|>"};

static mxl_tokenizer *byte_tokenizer(void) {
  static mxl_tokenizer *tok;
  static uint8_t bytes[256];
  static const uint8_t *text[256];
  static uint32_t len[256];
  if (tok) return tok;
  for (int i = 0; i < 256; i++) bytes[i] = (uint8_t)i, text[i] = &bytes[i], len[i] = 1;
  mxl_token_table t = {.n_text = 256, .text = text, .text_len = len,
                       .n_special = (int)(sizeof specials / sizeof specials[0]),
                       .special_base = 256, .special = specials};
  check(mxl_tokenizer_from_table(&t, &tok) == MXL_OK);
  return tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const mxl_tokenizer *tok = byte_tokenizer();
  mxl_render_options opt = {0};
  opt.mode = size && (data[0] & 1) ? MXL_RENDER_PROMPT : MXL_RENDER_TRAIN;
  mxl_rendered r = {0};
  if (mxl_harmony_render_json(tok, (const char *)data, size, "fuzz.json", &opt, &r) == MXL_OK) {
    char *back = NULL;
    size_t len = 0;
    check(mxl_tokenizer_decode(tok, r.ids, r.n, &back, &len) == MXL_OK);
    check(len == r.text_len && !memcmp(back, r.text, len));
    free(back);
    check(mxl_rendered_trained(&r, MXL_MASK_ALL) == r.n);
  } else {
    check(mxl_last_error()[0] != '\0');
  }
  mxl_rendered_free(&r);
  return 0;
}
