/* libFuzzer target for the metal/model.bin reader: any byte string must
 * either be refused with a message, or give a weights view whose every
 * pointer lies inside the buffer with the sizes the config implies.
 *
 * Seeds (tests/fuzz/corpus/model_bin): the smallest model `mxlora tiny`
 * writes (--layout metal --set layers=1 experts=1 experts_per_token=1
 * heads=1 kv_heads=1 head_dim=32 hidden=32 intermediate=32 vocab=340). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok) {
  if (!ok) __builtin_trap();
}

static void inside(const uint8_t *base, size_t size, const void *p, uint64_t bytes) {
  const uint8_t *q = p;
  check(q >= base && bytes <= size && (size_t)(q - base) <= size - bytes);
}

static void check_view(const mxl_model *m, const uint8_t *data, size_t size) {
  const mxl_config *c = &m->config;
  const uint64_t H = (uint64_t)c->hidden, rows = (uint64_t)m->w.vocab_rows;
  inside(data, size, m->w.embed.w, rows * H * 2);
  inside(data, size, m->w.unembed.w, rows * H * 2);
  inside(data, size, m->w.final_norm, H * 2);
  for (int l = 0; l < c->n_layers; l++) {
    const mxl_layer_weights *lw = &m->w.layers[l];
    inside(data, size, lw->q.w, (uint64_t)(lw->q.rows + lw->k.rows + lw->v.rows) * H * 2);
    inside(data, size, lw->o.w, (uint64_t)lw->o.rows * (uint64_t)lw->o.cols * 2);
    inside(data, size, lw->router.w, (uint64_t)c->n_experts * H * 2);
    const mxl_mxfp4_weight *ws[2] = {&lw->gate_up, &lw->down};
    for (int i = 0; i < 2; i++) {
      const mxl_mxfp4_weight *w = ws[i];
      uint64_t last = (uint64_t)(w->n_experts - 1);
      inside(data, size, w->blocks + last * w->blocks_stride, (uint64_t)(w->rows * w->cols / 2));
      inside(data, size, w->scales + last * w->scales_stride, (uint64_t)(w->rows * w->cols / 32));
      inside(data, size, w->bias + last * w->bias_stride, (uint64_t)w->rows * 2);
    }
  }
  inside(data, size, m->metal_tokenizer.data, m->metal_tokenizer.size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mxl_model *m = calloc(1, sizeof *m);
  if (!m) return 0;
  if (mxl_checkpoint_read_metal_buffer(m, data, size, "fuzz") == MXL_OK) check_view(m, data, size);
  mxl_model_close(m);
  return 0;
}
