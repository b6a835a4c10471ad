/* The tokenizer section of metal/model.bin (docs/gpt-oss.md §4.1-4.2): the special
 * token UUIDs and the section writer. The reader is in tokenizer_load.c. */
#include "datasets/tokenizer_metal.h"

#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "datasets/tokenizer_impl.h"

/* 7401aded-2a95-40cb-b782-9ccebaafe72b, RFC 4122 byte order. */
const uint8_t mxl_metal_tiktoken_uuid[16] = {0x74, 0x01, 0xad, 0xed, 0x2a, 0x95, 0x40, 0xcb,
                                             0xb7, 0x82, 0x9c, 0xce, 0xba, 0xaf, 0xe7, 0x2b};

static const struct {
  const char *name;
  uint8_t uuid[16];
} known[] = {
    {"<|start|>", {0x55, 0xa7, 0x7c, 0x2f, 0x8a, 0x01, 0x4c, 0x54, 0x8a, 0xc2, 0x31, 0x3b, 0xfc,
                   0x7e, 0x20, 0x8d}},
    {"<|message|>", {0x16, 0xe4, 0x04, 0x31, 0xf4, 0x7f, 0x4b, 0x22, 0xb5, 0x9b, 0x8b, 0x27,
                     0x8f, 0xc3, 0x0a, 0x54}},
    {"<|end|>", {0xfc, 0xac, 0x2f, 0x6d, 0x47, 0x05, 0x4f, 0x6b, 0xb2, 0x28, 0x64, 0x2a, 0xcc,
                 0xac, 0x72, 0x38}},
    {"<|return|>", {0xf7, 0x99, 0xff, 0x69, 0x19, 0x92, 0x43, 0xc4, 0xa3, 0xd8, 0xd8, 0x31,
                    0xf4, 0x75, 0xdc, 0x75}},
    {"<|refusal|>", {0xe1, 0x5b, 0xa7, 0x02, 0x28, 0xc4, 0x42, 0x92, 0xab, 0x8f, 0xff, 0xa4,
                     0x34, 0x70, 0x91, 0x28}},
    {"<|constrain|>", {0xc0, 0xbb, 0x14, 0xc7, 0x60, 0x22, 0x49, 0xda, 0xad, 0x08, 0x79, 0x2d,
                       0x67, 0xe8, 0xb4, 0x70}},
    {"<|channel|>", {0xfd, 0x3d, 0xda, 0x11, 0xc8, 0xab, 0x40, 0x33, 0x87, 0x6e, 0xd9, 0x3d,
                     0xeb, 0x17, 0x2c, 0x93}},
    {"<|call|>", {0x12, 0x20, 0xf7, 0x96, 0xe3, 0x88, 0x4d, 0xe5, 0xb4, 0x87, 0xfe, 0x2e, 0xb5,
                  0xfe, 0x03, 0xc0}},
    {"<|untrusted|>", {0x07, 0xd7, 0xda, 0x55, 0xb3, 0x46, 0x4c, 0xff, 0x8b, 0x37, 0x7c, 0xef,
                       0xac, 0xf8, 0xa3, 0xe8}},
    {"<|end_untrusted|>", {0xf2, 0x65, 0xbd, 0x9c, 0xc7, 0x17, 0x46, 0x9e, 0xa4, 0x47, 0x92,
                           0x06, 0x87, 0xd6, 0x5d, 0x90}},
};

const char *mxl_metal_special_name(const uint8_t uuid[16]) {
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    if (!memcmp(known[i].uuid, uuid, 16)) return known[i].name;
  return NULL;
}

const uint8_t *mxl_metal_special_uuid(const char *name) {
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    if (!strcmp(known[i].name, name)) return known[i].uuid;
  return NULL;
}

/* The slots create-local-model.py fills for o200k_harmony: its own token
 * table names ids 199998+t as below, and it writes a UUID only for names
 * in its include list ("<|endofuntrusted|>" is not, by a name mismatch;
 * "<|endoftext|>" is not either), so 16 slots with 9 UUIDs. */
enum { HARMONY_METAL_SLOTS = 16 };
static const char *const harmony_metal_slot[HARMONY_METAL_SLOTS] = {
    NULL,         NULL,        "<|untrusted|>", NULL,      "<|return|>",  "<|constrain|>",
    NULL,         "<|channel|>", "<|start|>",   "<|end|>", "<|message|>", NULL,
    NULL,         NULL,        "<|call|>",      "<|refusal|>",
};

static int is_harmony_table(const mxl_token_table *t) {
  int n = 0;
  const char *const *names = mxl_harmony_special_names(&n);
  if (t->n_special != n || t->special_base != t->n_text) return 0;
  for (int i = 0; i < n; i++)
    if (strcmp(t->special[i], names[i])) return 0;
  return 1;
}

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

mxl_status mxl_tokenizer_metal_section(const mxl_token_table *table, uint8_t **data_out,
                                       size_t *size_out) {
  *data_out = NULL;
  *size_out = 0;
  int harmony = is_harmony_table(table);
  if (!harmony && table->special_base != table->n_text)
    return mxl_errorf(MXL_ERR_UNSUPPORTED,
                      "metal tokenizer: special tokens must follow the ordinary ones");
  uint32_t n_special = harmony ? HARMONY_METAL_SLOTS : (uint32_t)table->n_special;
  const char *regex = table->regex ? table->regex : mxl_o200k_regex;
  size_t regex_size = strlen(regex) + 1, tokens_size = 0;
  for (int i = 0; i < table->n_text; i++) {
    if (table->text_len[i] == 0 || table->text_len[i] > 0xffff)
      return mxl_errorf(MXL_ERR_UNSUPPORTED,
                        "metal tokenizer: token %d has %u bytes (the format allows 1..65535)", i,
                        table->text_len[i]);
    tokens_size += 2 + table->text_len[i];
  }
  if (tokens_size > UINT32_MAX || regex_size > UINT32_MAX)
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "metal tokenizer: too large");
  size_t size = 16 + 16 * (size_t)n_special + regex_size + tokens_size;
  uint8_t *p = calloc(1, size);
  if (!p) return mxl_errorf(MXL_ERR_MEMORY, "metal tokenizer: out of memory");
  put32(p, n_special);
  put32(p + 4, (uint32_t)table->n_text);
  put32(p + 8, (uint32_t)regex_size);
  put32(p + 12, (uint32_t)tokens_size);
  for (uint32_t t = 0; t < n_special; t++) {
    const char *name = harmony ? harmony_metal_slot[t] : table->special[t];
    const uint8_t *uuid = name ? mxl_metal_special_uuid(name) : NULL;
    if (uuid) memcpy(p + 16 + 16 * (size_t)t, uuid, 16); /* else zero: unused */
  }
  uint8_t *q = p + 16 + 16 * (size_t)n_special;
  memcpy(q, regex, regex_size);
  q += regex_size;
  for (int i = 0; i < table->n_text; i++) {
    q[0] = (uint8_t)table->text_len[i];
    q[1] = (uint8_t)(table->text_len[i] >> 8);
    memcpy(q + 2, table->text[i], table->text_len[i]);
    q += 2 + table->text_len[i];
  }
  *data_out = p;
  *size_out = size;
  return MXL_OK;
}
