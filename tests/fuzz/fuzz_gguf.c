/* libFuzzer target for the GGUF reader (adapters/gguf.c), which inspect and
 * `export --match BASE.gguf` run on files from anywhere: any input must be
 * refused with a message, or give tensors of known types that lie inside
 * the image, aligned and not overlapping, and keys that are NUL-terminated.
 *
 * Seeds (tests/fuzz/corpus/gguf): LoRA adapters written by mxlora export. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "adapters/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok) {
  if (!ok) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mxl_gguf *g = NULL;
  if (mxl_gguf_parse(data, size, "fuzz.gguf", 0, &g) != MXL_OK) {
    check(g == NULL);
    return 0;
  }
  for (int i = 0; i < g->n_kv; i++) {
    check(g->kv[i].key != NULL && strlen(g->kv[i].key) <= size);
    if (g->kv[i].type == MXL_GGUF_STRING) check(g->kv[i].str != NULL);
  }
  for (int i = 0; i < g->n_tensors; i++) {
    const mxl_gguf_tensor *t = &g->tensors[i];
    check(t->name != NULL && t->offset % g->alignment == 0);
    if (t->nbytes) {
      check(t->data >= data + g->data_start && t->data + t->nbytes <= data + size);
      volatile uint8_t sum = 0;
      for (uint64_t j = 0; j < t->nbytes; j += 97) sum ^= t->data[j];
      (void)sum;
    }
  }
  mxl_gguf_free(g);
  return 0;
}
