/* Reference math, loss and optimizer: fused unembedding + cross-entropy,
 * dropout, AdamW, Σx². See ref_real.h for the shape legend and numerics. */
#ifndef MXL_KERNELS_REF_LOSS_H
#define MXL_KERNELS_REF_LOSS_H

#include <stdlib.h>

#include "core/rng.h"
#include "kernels/ops.h"
#include "kernels/ref/ref_real.h"

/* Logit v of token row h_t: h_t·W_vᵀ (+ b_v) — h_t [H], W [V, H]. */
static inline mxl_acc mxl_ref_logit(const mxl_real *ht, const mxl_bf16_weight *W, int64_t v) {
  mxl_acc z = mxl_ref_bias(W->bias, v);
  for (int64_t c = 0; c < W->cols; c++) z += (mxl_acc)ht[c] * mxl_ref_bf16(W->w[v * W->cols + c]);
  return z;
}

/* Fused unembedding + cross-entropy — h [n, H], W [V, H], targets, weight,
 * loss [n], dh [n, H]. For each token with weight[t] != 0, with z = h_t·Wᵀ:
 *   loss[t] = logsumexp(z) − z[target]
 *   dh[t]  += weight[t]·(softmax(z) − onehot(target))·W
 * The vocabulary is streamed one row at a time, twice: an online
 * log-sum-exp (running max and rescaled sum), then the gradient. Nothing of
 * size [n, V] or [V] exists; the only scratch is one double row [H], so that
 * dh accumulates over V in double. Masked tokens get loss 0 and no gradient.
 * Returns 0, or -1 when that scratch row cannot be allocated. */
static inline int mxl_ref_unembed_xent(mxl_real *loss, mxl_real *dh, const mxl_real *h,
                                       const mxl_bf16_weight *W, const int32_t *targets,
                                       const mxl_real *weight, int n) {
  int64_t H = W->cols;
  mxl_acc *acc = dh ? calloc((size_t)H, sizeof *acc) : NULL;
  if (dh && !acc) return -1;
  for (int t = 0; t < n; t++) {
    const mxl_real *ht = h + t * H;
    if (weight[t] == 0) {
      if (loss) loss[t] = 0;
      continue;
    }
    mxl_acc mx = -INFINITY, sum = 0, zt = 0;
    for (int64_t v = 0; v < W->rows; v++) {
      mxl_acc z = mxl_ref_logit(ht, W, v);
      if (v == targets[t]) zt = z;
      if (z > mx) {
        sum = sum * exp(mx - z) + 1.0;
        mx = z;
      } else {
        sum += exp(z - mx);
      }
    }
    mxl_acc lse = mx + log(sum);
    if (loss) loss[t] = (mxl_real)(lse - zt);
    if (!dh) continue;
    for (int64_t c = 0; c < H; c++) acc[c] = 0;
    for (int64_t v = 0; v < W->rows; v++) {
      mxl_acc p = exp(mxl_ref_logit(ht, W, v) - lse) - (v == targets[t] ? 1.0 : 0.0);
      for (int64_t c = 0; c < H; c++) acc[c] += p * mxl_ref_bf16(W->w[v * H + c]);
    }
    for (int64_t c = 0; c < H; c++) dh[t * H + c] += (mxl_real)((mxl_acc)weight[t] * acc[c]);
  }
  free(acc);
  return 0;
}


/* Inverted dropout: y[i] = keep_i ? x[i]·(1/(1−p)) : 0, the scale computed
 * in fp32 as 1.0f / (1.0f − p) — y, x [n] (y may be x). */
static inline void mxl_ref_dropout(mxl_real *y, const mxl_real *x, size_t n, float p,
                                   uint64_t seed) {
  float scale = 1.0f / (1.0f - p);
  for (size_t i = 0; i < n; i++) y[i] = mxl_dropout_keep(seed, i, p) ? x[i] * scale : 0;
}

/* AdamW (decoupled weight decay, bias correction with 1-based step):
 *   g = grad·grad_scale; m = b1·m + (1−b1)·g; v = b2·v + (1−b2)·g²
 *   param −= lr·(m/(1−b1^step) / (sqrt(v/(1−b2^step)) + eps) + wd·param)
 * — the update of torch.optim.AdamW. Computed in double; m and v are rounded
 * when stored and the update uses the stored values, as torch does. */
static inline void mxl_ref_adamw(mxl_real *param, const mxl_real *grad, mxl_real *m,
                                 mxl_real *v, size_t n, mxl_acc lr, mxl_acc beta1,
                                 mxl_acc beta2, mxl_acc eps, mxl_acc weight_decay, int step,
                                 mxl_acc grad_scale) {
  mxl_acc bc1 = 1.0 - pow(beta1, step), bc2 = 1.0 - pow(beta2, step);
  for (size_t i = 0; i < n; i++) {
    mxl_acc g = (mxl_acc)grad[i] * grad_scale;
    m[i] = (mxl_real)(beta1 * m[i] + (1.0 - beta1) * g);
    v[i] = (mxl_real)(beta2 * v[i] + (1.0 - beta2) * g * g);
    mxl_acc update = (m[i] / bc1) / (sqrt(v[i] / bc2) + eps) + weight_decay * param[i];
    param[i] = (mxl_real)(param[i] - lr * update);
  }
}

/* Σ x[i]² in double — x [n] */
static inline double mxl_ref_sum_squares(const mxl_real *x, size_t n) {
  mxl_acc s = 0;
  for (size_t i = 0; i < n; i++) s += (mxl_acc)x[i] * x[i];
  return s;
}

#endif
