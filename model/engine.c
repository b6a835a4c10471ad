#include "model/engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

void mxl_yarn_table(const mxl_config *c, float *inv_freq, float *concentration) {
  const int half = c->head_dim / 2;
  const double theta = c->rope_theta, factor = c->rope_factor;
  const double two_pi = 2.0 * 3.14159265358979323846;
  /* Correction range (spec §5.3), without truncation. */
  double low = half * log(c->initial_context / (c->rope_beta_fast * two_pi)) / log(theta);
  double high = half * log(c->initial_context / (c->rope_beta_slow * two_pi)) / log(theta);
  if (low < 0) low = 0;
  if (high > c->head_dim - 1) high = c->head_dim - 1;
  if (high == low) high += 0.001;
  for (int i = 0; i < half; i++) {
    double base_freq = pow(theta, 2.0 * i / c->head_dim);
    double extrapolated = 1.0 / base_freq;
    double interpolated = factor > 1 ? 1.0 / (factor * base_freq) : extrapolated;
    double ramp = (i - low) / (high - low);
    ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
    inv_freq[i] = (float)(interpolated * ramp + extrapolated * (1.0 - ramp));
  }
  *concentration = factor > 1 ? (float)(0.1 * log(factor) + 1.0) : 1.0f;
}

mxl_status mxl_engine_create(const mxl_model *model, mxl_backend *be, mxl_engine **out) {
  *out = NULL;
  if (!be->ops->host_memory)
    return mxl_errorf(MXL_ERR_UNSUPPORTED,
                      "backend '%s': uploading weights to device memory is not built yet",
                      be->ops->name);
  mxl_engine *e = calloc(1, sizeof *e);
  if (!e) return mxl_errorf(MXL_ERR_MEMORY, "engine: out of memory");
  e->model = model;
  e->cfg = &model->config;
  e->be = be;
  e->ops = be->ops;
  e->w = model->w;
  int half = e->cfg->head_dim / 2;
  float table[512];
  if (half > (int)(sizeof table / sizeof table[0])) {
    free(e);
    return mxl_errorf(MXL_ERR_UNSUPPORTED, "head_dim %d is larger than supported (1024)",
                      model->config.head_dim);
  }
  mxl_yarn_table(e->cfg, table, &e->concentration);
  e->inv_freq = e->ops->alloc(be, half * sizeof(float));
  if (!e->inv_freq) {
    free(e);
    return mxl_errorf(MXL_ERR_MEMORY, "engine: cannot allocate the RoPE table");
  }
  e->ops->upload(be, e->inv_freq, table, half * sizeof(float));
  *out = e;
  return MXL_OK;
}

void mxl_engine_destroy(mxl_engine *e) {
  if (!e) return;
  e->ops->free(e->be, e->inv_freq);
  free(e);
}

mxl_status mxl_buffer_reserve(mxl_backend *be, mxl_buffer *buf, size_t bytes) {
  if (buf->bytes >= bytes) return MXL_OK;
  be->ops->free(be, buf->ptr);
  buf->ptr = be->ops->alloc(be, bytes);
  buf->bytes = buf->ptr ? bytes : 0;
  if (!buf->ptr) return mxl_errorf(MXL_ERR_MEMORY, "cannot allocate %zu bytes of scratch", bytes);
  return MXL_OK;
}

void mxl_buffer_release(mxl_backend *be, mxl_buffer *buf) {
  if (buf->ptr) be->ops->free(be, buf->ptr);
  buf->ptr = NULL;
  buf->bytes = 0;
}
