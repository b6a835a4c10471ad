/* Adapters as a forward pass overlays them (adapters/adapter_file.h:
 * mxl_adapter_load_overlay): in the model's own layout, in the backend's
 * memory. One path for the generator, eval and the registry. */
#include <stdlib.h>
#include <string.h>

#include "adapters/adapter_file.h"
#include "core/status.h"
#include "model/model.h"

/* metal/model.bin keeps q and k rows in its own order and scale
 * (model/lora_view.h): rewrite the host copy's q/k B matrices in place,
 * while they are in host memory, so that the parameters need no side
 * copies whatever memory they end up in. */
static mxl_status to_model_layout(const mxl_model *model, mxl_lora *host) {
  const mxl_lora_layout *lay = host->layout;
  mxl_lora_layer *layers = calloc((size_t)lay->n_layers, sizeof *layers);
  float **orig = calloc((size_t)lay->n_layers * 2, sizeof *orig);
  mxl_status st = layers && orig ? MXL_OK : mxl_errorf(MXL_ERR_MEMORY, "adapter: out of memory");
  float *copies = NULL;
  mxl_lora_view view = {layers, lay->n_layers, 0};
  if (st == MXL_OK) {
    mxl_lora_fill_view(lay, host->params, 1.0f, &view);
    for (int l = 0; l < lay->n_layers; l++) {
      orig[2 * l] = layers[l].t[MXL_LORA_Q].B;
      orig[2 * l + 1] = layers[l].t[MXL_LORA_K].B;
    }
    st = mxl_lora_view_to_layout(&model->w, &model->config, &view, &copies);
  }
  const mxl_config *c = &model->config;
  for (int l = 0; st == MXL_OK && copies && l < lay->n_layers; l++) {
    const mxl_lora_mat *q = &layers[l].t[MXL_LORA_Q], *k = &layers[l].t[MXL_LORA_K];
    if (q->A) memcpy(orig[2 * l], q->B, sizeof(float) * c->n_heads * c->head_dim * q->rank);
    if (k->A) memcpy(orig[2 * l + 1], k->B, sizeof(float) * c->n_kv_heads * c->head_dim * k->rank);
  }
  free(copies);
  free(orig);
  free(layers);
  return st;
}

mxl_status mxl_adapter_load_overlay(const mxl_adapter *a, const mxl_model *model,
                                    mxl_backend *be, mxl_lora **out) {
  *out = NULL;
  mxl_lora *host = NULL;
  MXL_TRY(mxl_adapter_load_on(a, model, NULL, &host));
  mxl_status st = to_model_layout(model, host);
  if (st == MXL_OK && be && !be->ops->host_memory) {
    mxl_lora *dev = NULL;
    st = mxl_lora_create(&model->config, &host->layout->cfg, be, &dev);
    /* No sync here: the caller may share the backend with an engine
     * thread, which owns its error state. The upload is ordered before any
     * forward pass that can use the parameters. */
    if (st == MXL_OK)
      be->ops->upload(be, dev->params, host->params, host->layout->n_floats * sizeof(float));
    mxl_lora_destroy(host);
    host = dev;
  }
  if (st != MXL_OK) {
    mxl_lora_destroy(host);
    return st;
  }
  *out = host;
  return MXL_OK;
}
