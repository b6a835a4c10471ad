/* Shared by the adapter tests and the adapter fuzz target: a small
 * gpt-oss-shaped model made of just the tensors a fingerprint reads, and a
 * LoRA set filled with trained-looking numbers. */
#ifndef MXL_TESTS_ADAPTER_FIXTURE_H
#define MXL_TESTS_ADAPTER_FIXTURE_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/lora.h"
#include "core/bf16.h"
#include "model/model.h"

enum { FAKE_MAX_LAYERS = 8 };

typedef struct fake_model {
  mxl_model m;
  mxl_layer_weights layers[FAKE_MAX_LAYERS];
  uint16_t *store; /* every tensor, back to back */
} fake_model;

/* All dimensions differ so that swapped shapes show up. */
static inline void fake_config(mxl_config *c) {
  mxl_config_gpt_oss_20b(c);
  c->n_layers = 3;
  c->n_experts = 4;
  c->experts_per_token = 2;
  c->hidden = 24;
  c->intermediate = 20;
  c->head_dim = 8;
  c->n_heads = 4;
  c->n_kv_heads = 2;
  c->vocab_size = 100;
}

static inline uint16_t fake_value(uint64_t *s) {
  return mxl_f32_to_bf16(2.0f * mxl_splitmix_uniform(s) - 1.0f);
}

/* A model whose norm/sink/router tensors come from `seed`. */
static inline int fake_model_init(fake_model *f, const mxl_config *c, uint64_t seed) {
  memset(f, 0, sizeof *f);
  if (c->n_layers > FAKE_MAX_LAYERS) return 0;
  size_t H = (size_t)c->hidden, E = (size_t)c->n_experts, nh = (size_t)c->n_heads;
  size_t per_layer = 2 * H + nh + E * H + E, total = per_layer * (size_t)c->n_layers + H;
  f->store = malloc(total * sizeof *f->store);
  if (!f->store) return 0;
  for (size_t i = 0; i < total; i++) f->store[i] = fake_value(&seed);
  f->m.config = *c;
  f->m.layout = MXL_LAYOUT_HF;
  f->m.w.layers = f->layers;
  uint16_t *p = f->store;
  for (int l = 0; l < c->n_layers; l++) {
    mxl_layer_weights *lw = &f->layers[l];
    lw->attn_norm = p, p += H;
    lw->sinks = p, p += nh;
    lw->mlp_norm = p, p += H;
    lw->router.w = p, p += E * H;
    lw->router.bias = p, p += E;
    lw->router.rows = (int64_t)E;
    lw->router.cols = (int64_t)H;
  }
  f->m.w.final_norm = p;
  return 1;
}

static inline void fake_model_free(fake_model *f) { free(f->store); }

/* Standard normal from two uniforms (Box-Muller). */
static inline float fixture_normal(uint64_t *s) {
  float u1 = mxl_splitmix_uniform(s), u2 = mxl_splitmix_uniform(s);
  if (u1 < 1e-7f) u1 = 1e-7f;
  return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

/* Trained-looking numbers: A ~ N(0, 1/in), B ~ N(0, b_std²) (b_std 0: B
 * stays zero, as right after initialisation). Host sets only. */
static inline void fixture_fill(mxl_lora *lora, uint64_t seed, float b_std) {
  const mxl_lora_layout *lay = lora->layout;
  for (int i = 0; i < lay->n_tensors; i++) {
    const mxl_lora_tensor *x = &lay->tensors[i];
    float *v = lora->params + x->offset;
    float std = x->is_b ? b_std : 1.0f / sqrtf((float)x->cols);
    for (size_t j = 0; j < x->count; j++) v[j] = std == 0 ? 0.0f : std * fixture_normal(&seed);
  }
}

#endif
