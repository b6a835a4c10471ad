#include "model/lora_view.h"

#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "model/model.h"

/* B [out, R] of q or k in HF coordinates → metal's permuted, scaled rows. */
static void to_metal(float *dst, const float *src, int heads, int d, int rank, float scale) {
  const int half = d / 2;
  for (int h = 0; h < heads; h++)
    for (int j = 0; j < half; j++)
      for (int r = 0; r < rank; r++) {
        const float *lo = src + ((size_t)h * d + j) * rank;
        const float *hi = src + ((size_t)h * d + half + j) * rank;
        dst[((size_t)h * d + 2 * j) * rank + r] = lo[r] * scale;
        dst[((size_t)h * d + 2 * j + 1) * rank + r] = hi[r] * scale;
      }
}

mxl_status mxl_lora_view_to_layout(const struct mxl_weights *w, const struct mxl_config *c,
                                   mxl_lora_view *view, float **owned_out) {
  *owned_out = NULL;
  if (!w->qk_interleaved) return MXL_OK;
  size_t total = 0;
  for (int l = 0; l < view->n_layers; l++) {
    const mxl_lora_mat *q = &view->layers[l].t[MXL_LORA_Q], *k = &view->layers[l].t[MXL_LORA_K];
    if (q->A) total += (size_t)c->n_heads * c->head_dim * q->rank;
    if (k->A) total += (size_t)c->n_kv_heads * c->head_dim * k->rank;
  }
  if (total == 0) return MXL_OK;
  float *block = malloc(total * sizeof(float)), *next = block;
  if (!block) return mxl_errorf(MXL_ERR_MEMORY, "adapter: out of memory for metal q/k");
  for (int l = 0; l < view->n_layers; l++) {
    mxl_lora_mat *q = &view->layers[l].t[MXL_LORA_Q], *k = &view->layers[l].t[MXL_LORA_K];
    if (q->A) {
      to_metal(next, q->B, c->n_heads, c->head_dim, q->rank, 0.5f);
      q->B = next;
      next += (size_t)c->n_heads * c->head_dim * q->rank;
    }
    if (k->A) {
      to_metal(next, k->B, c->n_kv_heads, c->head_dim, k->rank, 0.25f);
      k->B = next;
      next += (size_t)c->n_kv_heads * c->head_dim * k->rank;
    }
  }
  *owned_out = block;
  return MXL_OK;
}
