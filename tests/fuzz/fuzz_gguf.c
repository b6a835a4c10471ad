/* libFuzzer target for the GGUF reader (adapters/gguf.c), which inspect and
 * `export --match BASE.gguf` run on files from anywhere: any input must be
 * refused with a message, or give NUL-terminated keys that the accessors
 * find again, and tensors of known types that lie inside the image,
 * aligned. Tried in both modes: a whole file, and header only (a base model
 * read from its first bytes).
 *
 * Seeds (tests/fuzz/corpus/gguf): LoRA adapters written by mxlora export /
 * mxl_gguf_export (split and fused gate/up). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "adapters/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok) {
  if (!ok) __builtin_trap();
}

static void parse_and_check(const uint8_t *data, size_t size, int header_only) {
  mxl_gguf *g = NULL;
  if (mxl_gguf_parse(data, size, "fuzz.gguf", header_only, &g) != MXL_OK) {
    check(g == NULL && mxl_last_error()[0] != '\0');
    return;
  }
  check(g->alignment > 0);
  for (int i = 0; i < g->n_kv; i++) {
    check(g->kv[i].key != NULL && strlen(g->kv[i].key) <= size);
    if (g->kv[i].type == MXL_GGUF_STRING) check(g->kv[i].str != NULL);
    check(mxl_gguf_find_kv(g, g->kv[i].key) != NULL);
  }
  for (int i = 0; i < g->n_tensors; i++) {
    const mxl_gguf_tensor *t = &g->tensors[i];
    check(t->name != NULL && t->offset % g->alignment == 0);
    check(t->n_dims >= 1 && t->n_dims <= MXL_GGUF_MAX_DIMS);
    check(mxl_gguf_find_tensor(g, t->name) != NULL);
    if (header_only || !t->nbytes) continue;
    check(t->data >= data + g->data_start && t->data + t->nbytes <= data + size);
    volatile uint8_t sum = 0; /* reads every page: ASan sees an overrun */
    for (uint64_t j = 0; j < t->nbytes; j += 97) sum ^= t->data[j];
    (void)sum;
  }
  mxl_gguf_free(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  parse_and_check(data, size, 0);
  parse_and_check(data, size, 1);
  return 0;
}
