/* CUDA ops, loss and optimizer: fused unembedding + cross-entropy,
 * dropout, AdamW, Σx². CPU reference: kernels/ref/ref_loss.h
 * (mxl_ref_unembed_xent, mxl_ref_dropout, mxl_ref_adamw,
 * mxl_ref_sum_squares).
 *
 * unembed_xent streams the vocabulary in chunks of C rows, so that nothing
 * of size [n, V] exists: per chunk
 *   L = h·W_chunkᵀ (+ bias)                    [n, C] scratch, cuBLASLt;
 *   per token: m' = max(m, max L), rescale = exp(m − m'),
 *              s = s·rescale + Σ exp(L − m'),  P = exp(L − m') as bf16,
 *              z_target picked up when the target is in the chunk;
 *   acc = acc·rescale + P·W_chunk               [n, H] scratch (only for dh),
 *                                               cuBLASLt with beta = 1.
 * Then loss = m + log s − z_target and dh += weight·(acc / s − W_target): the
 * gradient Σ_v softmax_v·W_v accumulates in the same single pass as the
 * log-sum-exp (an online softmax over the vocabulary), so the vocabulary
 * is multiplied twice (logits, gradient), not three times. C is chosen so
 * that L stays within 2^24 floats (64 MiB; kernels/cuda_memory.h).
 * W in host memory (W->host: a training step's unembedding kept off the
 * GPU) is uploaded chunk by chunk into the scratch, on the op's stream, and
 * the rows of the targets are picked up from the chunks as they pass. */
#ifndef MXL_KERNELS_CUDA_OPS_LOSS_CUH
#define MXL_KERNELS_CUDA_OPS_LOSS_CUH

#include "core/rng.h"
#include "kernels/cuda/blas.cuh"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/runtime.cuh"

/* ---------------------------------------------------------------- dropout */

/* y[i] = keep_i ? x[i]·scale : 0 with ops.h's splitmix64 keep decision (core/rng.h),
 * bit-identical to the reference — y, x [n] (y may be x). */
MXL_GLOBAL void mxl_dropout_kernel(float *y, const float *x, int64_t n, float p, float scale,
                                   uint64_t seed) {
  MXL_FOR_EACH(i, n) {
    y[i] = mxl_dropout_keep(seed, (uint64_t)i, p) ? x[i] * scale : 0.0f;
  }
}

static void mxl_cu_dropout(mxl_backend *be, float *y, const float *x, size_t n, float p,
                           uint64_t seed) {
  if (n == 0) return;
  float scale = 1.0f / (1.0f - p); /* in fp32, as ops.h states */
  mxl_cu_launched(be, "dropout",
                  MXL_LAUNCH(mxl_dropout_kernel,
                             mxl_cu_grid((int64_t)n, MXL_CU_ELEMENTWISE_THREADS, MXL_CU_MAX_BLOCKS),
                             MXL_CU_ELEMENTWISE_THREADS, 0, mxl_cu_state(be)->stream, y, x,
                             (int64_t)n, p, scale, seed));
}

/* ---------------------------------------------------------------- AdamW */

/* torch.optim.AdamW's update in fp32 with the bias corrections bc1, bc2
 * computed on the host in double — param, grad, m, v [n]. */
MXL_GLOBAL void mxl_adamw_kernel(float *param, const float *grad, float *m, float *v, int64_t n,
                                 float lr, float beta1, float beta2, float eps, float wd,
                                 float bc1, float bc2, float grad_scale) {
  MXL_FOR_EACH(i, n) {
    float g = grad[i] * grad_scale;
    float mi = beta1 * m[i] + (1.0f - beta1) * g;
    float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float update = (mi / bc1) / (sqrtf(vi / bc2) + eps) + wd * param[i];
    param[i] = param[i] - lr * update;
  }
}

static void mxl_cu_adamw(mxl_backend *be, float *param, const float *grad, float *m, float *v,
                         size_t n, float lr, float beta1, float beta2, float eps,
                         float weight_decay, int step, float grad_scale) {
  if (n == 0) return;
  float bc1 = (float)(1.0 - pow((double)beta1, step));
  float bc2 = (float)(1.0 - pow((double)beta2, step));
  mxl_cu_launched(be, "adamw",
                  MXL_LAUNCH(mxl_adamw_kernel,
                             mxl_cu_grid((int64_t)n, MXL_CU_ELEMENTWISE_THREADS, MXL_CU_MAX_BLOCKS),
                             MXL_CU_ELEMENTWISE_THREADS, 0, mxl_cu_state(be)->stream, param, grad,
                             m, v, (int64_t)n, lr, beta1, beta2, eps, weight_decay, bc1, bc2,
                             grad_scale));
}

/* ---------------------------------------------------------------- Σx² */

enum { MXL_SUMSQ_THREADS = 256, MXL_SUMSQ_MAX_BLOCKS = 1024 };

/* Each block's Σx² in double-float: partial [2·blocks] (hi, lo pairs). */
MXL_GLOBAL void mxl_sum_squares_kernel(float *partial, const float *x, int64_t n) {
  MXL_SHARED float red_hi[MXL_SUMSQ_THREADS], red_lo[MXL_SUMSQ_THREADS];
  mxl_f2 acc = {0.0f, 0.0f};
  MXL_FOR_EACH(i, n) acc = mxl_f2_add(acc, mxl_f2_square(x[i]));
  acc = mxl_block_sum_f2<MXL_SUMSQ_THREADS>(acc, red_hi, red_lo);
  if (MXL_THREAD_X == 0) {
    partial[2 * MXL_BLOCK_X] = acc.hi;
    partial[2 * MXL_BLOCK_X + 1] = acc.lo;
  }
}

/* The block partials are summed on the host in double; NaN when the
 * scratch cannot be had (the error is kept for sync). */
static double mxl_cu_sum_squares(mxl_backend *be, const float *x, size_t n) {
  if (n == 0) return 0.0;
  unsigned blocks = mxl_cu_grid((int64_t)n, MXL_SUMSQ_THREADS * 4, MXL_SUMSQ_MAX_BLOCKS);
  float *partial = static_cast<float *>(
      mxl_cu_scratch(be, 2 * (size_t)blocks * sizeof(float), "sum_squares"));
  if (!partial ||
      !mxl_cu_launched(be, "sum_squares",
                       MXL_LAUNCH(mxl_sum_squares_kernel, blocks, MXL_SUMSQ_THREADS, 0,
                                  mxl_cu_state(be)->stream, partial, x, (int64_t)n)))
    return NAN;
  float host[2 * MXL_SUMSQ_MAX_BLOCKS];
  be->ops->download(be, host, partial, 2 * (size_t)blocks * sizeof(float));
  double sum = 0.0;
  for (unsigned b = 0; b < 2 * blocks; b++) sum += (double)host[b];
  return sum;
}

/* ---------------------------------------------------------------- unembed_xent */

enum { MXL_XENT_THREADS = 256 };

/* Per-token running state of the streamed softmax, [n] each. */
struct mxl_xent_state {
  float *m;       /* running max of the logits */
  float *s;       /* running Σ exp(z − m) */
  float *z_tgt;   /* the target's logit (0 until its chunk) */
  float *rescale; /* exp(m_before − m_after) of the last chunk */
};

MXL_GLOBAL void mxl_xent_init_kernel(mxl_xent_state st, float *acc, int64_t n, int64_t H) {
  MXL_FOR_EACH(i, n) {
    st.m[i] = -INFINITY;
    st.s[i] = 0.0f;
    st.z_tgt[i] = 0.0f;
    st.rescale[i] = 0.0f;
  }
  if (acc) MXL_FOR_EACH(i, n * H) acc[i] = 0.0f;
}

/* One block per token: folds chunk logits L [n, ld] (first `rows` columns,
 * vocabulary rows v0..) into the running state; with pb (bf16 [n, ld]),
 * pb = exp(L − m'), the operand of the gradient product. Masked tokens
 * (weight 0) get pb = 0 and no state. */
MXL_GLOBAL void mxl_xent_stats_kernel(const float *L, int64_t ld, int64_t rows, int64_t v0,
                                      const int32_t *targets, const float *weight,
                                      mxl_xent_state st, uint16_t *pb) {
  MXL_SHARED float red[MXL_XENT_THREADS];
  const int64_t t = MXL_BLOCK_X;
  if (weight[t] == 0.0f) {
    if (pb)
      for (int64_t j = MXL_THREAD_X; j < rows; j += MXL_XENT_THREADS) pb[t * ld + j] = 0;
    return; /* the whole block */
  }
  const float *row = L + t * ld;
  int64_t tgt = (int64_t)targets[t] - v0;
  if (MXL_THREAD_X == 0 && tgt >= 0 && tgt < rows) st.z_tgt[t] = row[tgt];
  float m_old = st.m[t], mx = -INFINITY;
  for (int64_t j = MXL_THREAD_X; j < rows; j += MXL_XENT_THREADS) mx = row[j] > mx ? row[j] : mx;
  mx = mxl_block_max<MXL_XENT_THREADS>(mx, red);
  float m_new = mx > m_old ? mx : m_old, s = 0.0f;
  for (int64_t j = MXL_THREAD_X; j < rows; j += MXL_XENT_THREADS) {
    float p = expf(row[j] - m_new);
    if (pb) pb[t * ld + j] = (uint16_t)mxl_cu_bf16_bits(p);
    s += p;
  }
  s = mxl_block_sum<MXL_XENT_THREADS>(s, red);
  if (MXL_THREAD_X == 0) {
    float rescale = expf(m_old - m_new);
    st.rescale[t] = rescale;
    st.s[t] = st.s[t] * rescale + s;
    st.m[t] = m_new;
  }
}

/* acc [n, H] *= rescale[t] per row. */
MXL_GLOBAL void mxl_xent_rescale_kernel(float *acc, const float *rescale, int64_t n, int64_t H) {
  MXL_FOR_EACH(i, n * H) acc[i] *= rescale[i / H];
}

/* W in host memory: the target rows that lie in the chunk w_chunk [rows, H]
 * (vocabulary rows v0..) into wt [n, H], for the final kernel. */
MXL_GLOBAL void mxl_xent_target_rows_kernel(uint16_t *wt, const uint16_t *w_chunk, int64_t rows,
                                            int64_t v0, int64_t n, int64_t H,
                                            const int32_t *targets, const float *weight) {
  MXL_FOR_EACH(i, n * H) {
    const int64_t t = i / H, tgt = (int64_t)targets[t] - v0;
    if (weight[t] != 0.0f && tgt >= 0 && tgt < rows) wt[i] = w_chunk[tgt * H + i % H];
  }
}

/* One block per token: loss [n] and dh [n, H] from the final state and
 * acc [n, H] = Σ_v exp(z_v − m)·W_v (NULL when dh is). W bf16 [V, H], or
 * with wt (W in host memory) the target rows wt [n, H]. */
MXL_GLOBAL void mxl_xent_final_kernel(float *loss, float *dh, const float *acc,
                                      const uint16_t *W, const uint16_t *wt, int64_t V,
                                      int64_t H, const int32_t *targets, const float *weight,
                                      mxl_xent_state st) {
  const int64_t t = MXL_BLOCK_X;
  const float w = weight[t];
  if (w == 0.0f) {
    if (MXL_THREAD_X == 0 && loss) loss[t] = 0.0f;
    return;
  }
  const float s = st.s[t];
  if (MXL_THREAD_X == 0 && loss) loss[t] = (st.m[t] + logf(s)) - st.z_tgt[t];
  if (!dh) return;
  const int64_t tgt = targets[t];
  const bool hit = tgt >= 0 && tgt < V;
  for (int64_t c = MXL_THREAD_X; c < H; c += MXL_XENT_THREADS) {
    const uint16_t *w_tgt = wt ? wt + t * H : W + tgt * H;
    float g = acc[t * H + c] / s - (hit ? mxl_cu_bf16(w_tgt[c]) : 0.0f);
    dh[t * H + c] += w * g;
  }
}

/* The two products per chunk run on cuBLASLt with bf16 operands: h is
 * rounded once per call, the probabilities as the stats kernel writes them;
 * the scratch is carved as kernels/cuda_memory.h sizes it. */
static void mxl_cu_unembed_xent(mxl_backend *be, float *loss, float *dh, const float *h,
                                const mxl_bf16_weight *W, const int32_t *targets,
                                const float *weight, int n) {
  const char *name = "unembed_xent";
  const int64_t V = W->rows, H = W->cols;
  if (n <= 0 || V <= 0 || (!loss && !dh)) return;
  const int64_t chunk = mxl_cuda_xent_chunk(n, V, mxl_cu_state(be)->xent_chunk_rows);
  const bool host_w = W->host != 0;
  void *scratch = mxl_cu_scratch(
      be, mxl_cuda_scratch_unembed_xent(n, V, H, chunk, W->bias != NULL, dh != NULL, host_w),
      name);
  if (!scratch) return;
  const size_t nc = (size_t)n * (size_t)chunk, nH = (size_t)n * (size_t)H;
  mxl_cu_carve cv = {static_cast<char *>(scratch)};
  float *L = cv.take<float>(nc * 4);                        /* [n, chunk] logits */
  uint16_t *pb = dh ? cv.take<uint16_t>(nc * 2) : NULL;     /* [n, chunk] probabilities */
  mxl_xent_state st;
  st.m = cv.take<float>(4 * (size_t)n * 4);
  st.s = st.m + n;
  st.z_tgt = st.s + n;
  st.rescale = st.z_tgt + n;
  float *bias = W->bias ? cv.take<float>((size_t)V * 4) : NULL; /* [V] fp32 */
  uint16_t *hb = cv.take<uint16_t>(nH * 2);                 /* [n, H] bf16 */
  float *acc = dh ? cv.take<float>(nH * 4) : NULL;          /* [n, H] */
  /* W in host memory: the uploaded chunk, bias and target rows */
  uint16_t *staged = host_w ? cv.take<uint16_t>((size_t)chunk * H * 2) : NULL;
  const uint16_t *bias_bf16 = W->bias;
  if (host_w && W->bias) {
    uint16_t *b16 = cv.take<uint16_t>((size_t)V * 2);
    be->ops->upload(be, b16, W->bias, (size_t)V * 2);
    bias_bf16 = b16;
  }
  uint16_t *wt = host_w && dh ? cv.take<uint16_t>(nH * 2) : NULL; /* [n, H] */
  mxl_cu_stream stream = mxl_cu_state(be)->stream;
  int64_t init_items = dh ? (int64_t)nH : n;
  if (!mxl_cu_launched(be, name,
                       MXL_LAUNCH(mxl_xent_init_kernel,
                                  mxl_cu_grid(init_items, MXL_CU_ELEMENTWISE_THREADS,
                                              MXL_CU_MAX_BLOCKS),
                                  MXL_CU_ELEMENTWISE_THREADS, 0, stream, st, acc, (int64_t)n, H)) ||
      !mxl_cu_to_bf16(be, name, hb, h, (int64_t)nH) ||
      (bias && !mxl_cu_from_bf16(be, name, bias, bias_bf16, V)))
    return;
  for (int64_t v0 = 0; v0 < V; v0 += chunk) {
    const int64_t rows = V - v0 < chunk ? V - v0 : chunk;
    const uint16_t *w_chunk = W->w + v0 * H;
    if (host_w) { /* the stream runs the upload after the last chunk's products */
      be->ops->upload(be, staged, w_chunk, (size_t)rows * H * 2);
      w_chunk = staged;
      if (wt && !mxl_cu_launched(be, name,
                                 MXL_LAUNCH(mxl_xent_target_rows_kernel,
                                            mxl_cu_grid((int64_t)nH, MXL_CU_ELEMENTWISE_THREADS,
                                                        MXL_CU_MAX_BLOCKS),
                                            MXL_CU_ELEMENTWISE_THREADS, 0, stream, wt, w_chunk,
                                            rows, v0, (int64_t)n, H, targets, weight)))
        return;
    }
    mxl_blas_call logits = {};
    logits.M = n, logits.N = rows, logits.K = H, logits.precision = MXL_BLAS_BF16;
    logits.A = {hb, H, 0, 0};
    logits.B = {w_chunk, H, 1, 0}; /* W_chunk [rows, H]: op(B) = W_chunkᵀ */
    logits.C = L, logits.ldc = chunk;
    logits.alpha = 1.0f, logits.beta = 0.0f;
    logits.bias = bias ? bias + v0 : NULL;
    if (!mxl_cu_blas_gemm(be, name, logits) ||
        !mxl_cu_launched(be, name,
                         MXL_LAUNCH(mxl_xent_stats_kernel, (unsigned)n, MXL_XENT_THREADS, 0,
                                    stream, L, chunk, rows, v0, targets, weight, st, pb)))
      return;
    if (!dh) continue;
    if (!mxl_cu_launched(be, name,
                         MXL_LAUNCH(mxl_xent_rescale_kernel,
                                    mxl_cu_grid((int64_t)nH, MXL_CU_ELEMENTWISE_THREADS,
                                                MXL_CU_MAX_BLOCKS),
                                    MXL_CU_ELEMENTWISE_THREADS, 0, stream, acc, st.rescale,
                                    (int64_t)n, H)))
      return;
    mxl_blas_call grad = {};
    grad.M = n, grad.N = H, grad.K = rows, grad.precision = MXL_BLAS_BF16;
    grad.A = {pb, chunk, 0, 0};
    grad.B = {w_chunk, H, 0, 0}; /* W_chunk [rows, H] */
    grad.C = acc, grad.ldc = H;
    grad.alpha = 1.0f, grad.beta = 1.0f;
    if (!mxl_cu_blas_gemm(be, name, grad)) return;
  }
  mxl_cu_launched(be, name,
                  MXL_LAUNCH(mxl_xent_final_kernel, (unsigned)n, MXL_XENT_THREADS, 0, stream, loss,
                             dh, acc, host_w ? NULL : W->w, wt, V, H, targets, weight, st));
}

static inline void mxl_cu_fill_loss(mxl_ops *ops) {
  ops->unembed_xent = mxl_cu_unembed_xent;
  ops->dropout = mxl_cu_dropout;
  ops->adamw = mxl_cu_adamw;
  ops->sum_squares = mxl_cu_sum_squares;
}

#endif
