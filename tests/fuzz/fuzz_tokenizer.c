/* libFuzzer target for the three tokenizer parsers users feed with
 * downloaded files: the .tiktoken rank file, tokenizer.json and the metal
 * model.bin tokenizer section. The first byte picks the parser. A parse
 * that succeeds must give a tokenizer that encodes and decodes the input's
 * own text back to the same bytes (a lossless tokenizer, as BPE is). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "datasets/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok) {
  if (!ok) __builtin_trap();
}

static void round_trip(const mxl_tokenizer *tok, const uint8_t *text, size_t n) {
  mxl_ids ids = {0};
  if (n > 256) n = 256;
  if (mxl_tokenizer_encode(tok, (const char *)text, n, 0, &ids) == MXL_OK) {
    char *back = NULL;
    size_t len = 0;
    if (mxl_tokenizer_decode(tok, ids.data, ids.n, &back, &len) == MXL_OK)
      check(len == n && !memcmp(back, text, n));
    free(back);
  }
  mxl_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const uint8_t kind = data[0] % 3;
  const uint8_t *body = data + 1;
  size_t n = size - 1;
  mxl_tokenizer *tok = NULL;
  mxl_status st;
  if (kind == 0)
    st = mxl_tokenizer_from_tiktoken((const char *)body, n, "fuzz.tiktoken", &tok);
  else if (kind == 1)
    st = mxl_tokenizer_from_hf_json((const char *)body, n, "tokenizer.json", &tok);
  else
    st = mxl_tokenizer_from_metal_section(body, n, &tok);
  if (st == MXL_OK) {
    check(tok != NULL);
    round_trip(tok, body, n);
  } else {
    check(tok == NULL && mxl_last_error()[0] != '\0');
  }
  mxl_tokenizer_free(tok);
  return 0;
}
