/* libFuzzer target for the GGUF reader (adapters/gguf.c): any byte string
 * must either be refused with a message or give metadata and tensors that
 * the accessors find again, with every known-size tensor inside the image
 * at the file's alignment. Tried in both modes: a whole file, and header
 * only (a base model read from its first bytes).
 *
 * Seeds (tests/fuzz/corpus/gguf): small LoRA adapters written by
 * mxl_gguf_export (split and fused gate/up). */
#include <stddef.h>
#include <stdint.h>

#include "adapters/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok) {
  if (!ok) __builtin_trap();
}

static void parse_and_check(const uint8_t *data, size_t size, int header_only) {
  mxl_gguf *g = NULL;
  if (mxl_gguf_parse(data, size, "fuzz", header_only, &g) != MXL_OK) {
    check(g == NULL && mxl_last_error()[0] != '\0');
    return;
  }
  check(g->alignment > 0 && g->data_start <= size + g->alignment);
  for (int i = 0; i < g->n_kv; i++) check(mxl_gguf_find_kv(g, g->kv[i].key) != NULL);
  for (int i = 0; i < g->n_tensors; i++) {
    const mxl_gguf_tensor *t = &g->tensors[i];
    check(t->n_dims >= 1 && t->n_dims <= MXL_GGUF_MAX_DIMS);
    check(mxl_gguf_find_tensor(g, t->name) != NULL);
    if (header_only || !t->nbytes) continue;
    check(t->data >= data && (size_t)(t->data - data) <= size && t->nbytes <= size &&
          (size_t)(t->data - data) + t->nbytes <= size);
    check(t->offset % g->alignment == 0);
  }
  mxl_gguf_free(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  parse_and_check(data, size, 0);
  parse_and_check(data, size, 1);
  return 0;
}
