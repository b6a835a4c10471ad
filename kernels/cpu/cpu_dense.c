/* CPU backend, dense elementwise and row ops: embedding, RMSNorm, RoPE, add.
 * Shape legend as kernels/ops.h.
 * These are memory-bound or small; they use plain loops and OpenMP. */
#include <math.h>
#include <string.h>

#include "core/bf16.h"
#include "kernels/cpu/cpu_internal.h"

/* x[t] = table[ids[t]] — x [n, H], table bf16 [V, H], ids [n] */
void mxl_cpu_embed(mxl_backend *be, float *x, const uint16_t *table, const int32_t *ids, int n,
                   int H) {
  int nt = mxl_cpu_threads_for(be, (double)n * H * 6, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int t = 0; t < n; t++) {
    const uint16_t *row = table + (size_t)ids[t] * H; /* [H] */
    float *xt = x + (size_t)t * H;                      /* [H] */
    for (int j = 0; j < H; j++) xt[j] = mxl_bf16_to_f32(row[j]);
  }
}

/* y = x·r·g, r = 1/sqrt(mean(x²) + eps) — y, x [n, H], g bf16 [H], rstd [n] */
void mxl_cpu_rmsnorm(mxl_backend *be, float *y, float *rstd, const float *x, const uint16_t *g,
                     int n, int H, float eps) {
  int nt = mxl_cpu_threads_for(be, (double)n * H * 8, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int t = 0; t < n; t++) {
    const float *xt = x + (size_t)t * H; /* [H] */
    float *yt = y + (size_t)t * H;       /* [H] */
    double ss = 0;
    for (int j = 0; j < H; j++) ss += (double)xt[j] * xt[j];
    float r = (float)(1.0 / sqrt(ss / H + eps));
    for (int j = 0; j < H; j++) yt[j] = xt[j] * r * mxl_bf16_to_f32(g[j]);
    if (rstd) rstd[t] = r;
  }
}

/* dx_i += r·g_i·dy_i − x_i·r³/H·Σ_j dy_j·g_j·x_j — dx, dy, x [n, H], rstd [n] */
void mxl_cpu_rmsnorm_bwd(mxl_backend *be, float *dx, const float *dy, const float *x,
                         const float *rstd, const uint16_t *g, int n, int H, float eps) {
  (void)eps; /* the forward's rstd already holds it */
  int nt = mxl_cpu_threads_for(be, (double)n * H * 16, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int t = 0; t < n; t++) {
    const float *xt = x + (size_t)t * H, *dyt = dy + (size_t)t * H; /* [H] */
    float *dxt = dx + (size_t)t * H;                                  /* [H] */
    double r = rstd[t], dot = 0;
    for (int j = 0; j < H; j++) dot += (double)dyt[j] * mxl_bf16_to_f32(g[j]) * xt[j];
    float coef = (float)(r * r * r * dot / H), rf = (float)r;
    for (int i = 0; i < H; i++) dxt[i] += rf * mxl_bf16_to_f32(g[i]) * dyt[i] - xt[i] * coef;
  }
}

/* y += x — n elements */
void mxl_cpu_add(mxl_backend *be, float *y, const float *x, size_t n) {
  const size_t chunk = 1 << 14;
  size_t n_chunks = (n + chunk - 1) / chunk;
  int nt = mxl_cpu_threads_for(be, (double)n * 12, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (size_t c = 0; c < n_chunks; c++) {
    size_t end = (c + 1) * chunk < n ? (c + 1) * chunk : n;
    for (size_t i = c * chunk; i < end; i++) y[i] += x[i];
  }
}

/* In-place YaRN RoPE of x [n, heads, d] at positions pos [n]; see ops.h.
 * θ is rounded to fp32 as the references do; cos and sin in double. */
void mxl_cpu_rope(mxl_backend *be, float *x, int n, int heads, int d, const int32_t *pos,
                  const float *inv_freq, float concentration, int interleaved, int inverse) {
  int half = d / 2;
  /* cos and sin per pair cost about as much as moving a pair */
  int nt = mxl_cpu_threads_for(be, (double)n * (heads + 4) * d * 8, MXL_CPU_MIN_BYTES);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    float cs[512], sn[512]; /* [min(d/2, 512)]: one chunk of the pairs */
#pragma omp for schedule(static)
    for (int t = 0; t < n; t++) {
      for (int j0 = 0; j0 < half; j0 += 512) {
        int len = half - j0 < 512 ? half - j0 : 512;
        for (int j = 0; j < len; j++) {
          float theta = (float)pos[t] * inv_freq[j0 + j];
          cs[j] = (float)(concentration * cos((double)theta));
          sn[j] = (float)((inverse ? -1.0 : 1.0) * concentration * sin((double)theta));
        }
        for (int h = 0; h < heads; h++) {
          float *xh = x + ((size_t)t * heads + h) * d; /* [d] */
          for (int j = 0; j < len; j++) {
            int jj = j0 + j;
            int ia = interleaved ? 2 * jj : jj, ib = interleaved ? 2 * jj + 1 : jj + half;
            float a = xh[ia], b = xh[ib];
            xh[ia] = a * cs[j] - b * sn[j];
            xh[ib] = b * cs[j] + a * sn[j];
          }
        }
      }
    }
  }
}
