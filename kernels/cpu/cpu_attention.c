/* CPU backend attention with GQA, learned sinks and segment/sliding masks
 * (kernels/ops.h `attention`, `attention_bwd`).
 *
 * Work is split by (query row, KV head): the `group` = nh/nkv query heads
 * that read one KV head share the mask test and the key/value rows. The
 * softmax is online, its running max starting at the sink logit (which has
 * no value row), so every query costs one pass over its allowed keys.
 * The backward recomputes p from the forward's lse in two passes, queries
 * (dq) then keys (dk, dv), so that no two threads write the same row. */
#include <math.h>
#include <string.h>

#include "core/bf16.h"
#include "kernels/cpu/cpu_internal.h"

static inline int allowed(const mxl_attn_mask *mask, int i, int j) {
  if (mask->k_seg[j] != mask->q_seg[i]) return 0;
  if (mask->k_pos[j] > mask->q_pos[i]) return 0;
  return mask->window == 0 || mask->q_pos[i] - mask->k_pos[j] < mask->window;
}

enum { MAX_GROUP = 64 };

/* q [nq, nh, d], k, v [nk, nkv, d], out [nq, nh, d], sinks bf16 [nh],
 * lse [nq, nh] or NULL */
void mxl_cpu_attention(mxl_backend *be, float *out, float *lse, const float *q, const float *k,
                       const float *v, const uint16_t *sinks, const mxl_attn_mask *mask, int nq,
                       int nk, int nh, int nkv, int d, float scale) {
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  int group = nh / nkv;
  if (group > MAX_GROUP) {
    mxl_cpu_fail(be, MXL_ERR_UNSUPPORTED, "attention: more than 64 query heads per KV head");
    return;
  }
#pragma omp parallel for num_threads(be->n_threads) schedule(dynamic, 4) collapse(2)
  for (int i = 0; i < nq; i++)
    for (int g = 0; g < nkv; g++) {
      float mx[MAX_GROUP], den[MAX_GROUP];
      int h0 = g * group;
      for (int h = 0; h < group; h++) {
        mx[h] = mxl_bf16_to_f32(sinks[h0 + h]);
        den[h] = 1.0f;
        memset(out + ((size_t)i * nh + h0 + h) * d, 0, (size_t)d * sizeof *out);
      }
      for (int j = 0; j < nk; j++) {
        if (!allowed(mask, i, j)) continue;
        const float *kj = k + ((size_t)j * nkv + g) * d, *vj = v + ((size_t)j * nkv + g) * d;
        for (int h = 0; h < group; h++) {
          const float *qi = q + ((size_t)i * nh + h0 + h) * d; /* [d] */
          float *oi = out + ((size_t)i * nh + h0 + h) * d;     /* [d] running Σ p·v */
          float s = scale * isa->dot_f32(qi, kj, d);
          if (s > mx[h]) {
            float corr = expf(mx[h] - s);
            den[h] = den[h] * corr + 1.0f;
            for (int c = 0; c < d; c++) oi[c] = oi[c] * corr + vj[c];
            mx[h] = s;
          } else {
            float p = expf(s - mx[h]);
            den[h] += p;
            isa->axpy_f32(oi, p, vj, d);
          }
        }
      }
      for (int h = 0; h < group; h++) {
        float *oi = out + ((size_t)i * nh + h0 + h) * d;
        float inv = 1.0f / den[h];
        for (int c = 0; c < d; c++) oi[c] *= inv;
        if (lse) lse[(size_t)i * nh + h0 + h] = mx[h] + logf(den[h]);
      }
    }
}

/* D_i = dout_i·out_i for every (query, head) — D [nq, nh] */
static void attention_delta(mxl_backend *be, float *D, const float *dout, const float *out,
                            int nq, int nh, int d) {
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
#pragma omp parallel for num_threads(be->n_threads) schedule(static)
  for (int64_t r = 0; r < (int64_t)nq * nh; r++) D[r] = isa->dot_f32(dout + r * d, out + r * d, d);
}

void mxl_cpu_attention_bwd(mxl_backend *be, float *dq, float *dk, float *dv, const float *dout,
                           const float *out, const float *lse, const float *q, const float *k,
                           const float *v, const uint16_t *sinks, const mxl_attn_mask *mask,
                           int nq, int nk, int nh, int nkv, int d, float scale) {
  (void)sinks; /* frozen; their effect is inside lse */
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  int group = nh / nkv;
  float *D = mxl_cpu_scratch(be, MXL_CPU_SCRATCH_AUX, (size_t)nq * nh * sizeof *D); /* [nq, nh] */
  if (!D) return;
  attention_delta(be, D, dout, out, nq, nh, d);

  /* dq_i += scale·Σ_j p_ij·(dout_i·v_j − D_i)·k_j */
#pragma omp parallel for num_threads(be->n_threads) schedule(dynamic, 4) collapse(2)
  for (int i = 0; i < nq; i++)
    for (int h = 0; h < nh; h++) {
      size_t row = (size_t)i * nh + h;
      int g = h / group;
      const float *qi = q + row * d, *di = dout + row * d; /* [d] */
      float *dqi = dq + row * d;                            /* [d] */
      for (int j = 0; j < nk; j++) {
        if (!allowed(mask, i, j)) continue;
        const float *kj = k + ((size_t)j * nkv + g) * d, *vj = v + ((size_t)j * nkv + g) * d;
        float p = expf(scale * isa->dot_f32(qi, kj, d) - lse[row]);
        float ds = p * (isa->dot_f32(di, vj, d) - D[row]);
        isa->axpy_f32(dqi, scale * ds, kj, d);
      }
    }

  /* dk_j += scale·Σ_(i,h→g) ds_ij·q_i,  dv_j += Σ_(i,h→g) p_ij·dout_i */
#pragma omp parallel for num_threads(be->n_threads) schedule(dynamic, 4) collapse(2)
  for (int j = 0; j < nk; j++)
    for (int g = 0; g < nkv; g++) {
      size_t kv = (size_t)j * nkv + g;
      const float *kj = k + kv * d, *vj = v + kv * d; /* [d] */
      float *dkj = dk + kv * d, *dvj = dv + kv * d;   /* [d] */
      for (int i = 0; i < nq; i++) {
        if (!allowed(mask, i, j)) continue;
        for (int h = g * group; h < (g + 1) * group; h++) {
          size_t row = (size_t)i * nh + h;
          const float *qi = q + row * d, *di = dout + row * d;
          float p = expf(scale * isa->dot_f32(qi, kj, d) - lse[row]);
          float ds = p * (isa->dot_f32(di, vj, d) - D[row]);
          isa->axpy_f32(dkj, scale * ds, qi, d);
          isa->axpy_f32(dvj, p, di, d);
        }
      }
    }
}
