/* CPU backend, dense elementwise and row ops: embedding, RMSNorm, RoPE, add.
 * Shape legend as kernels/ops.h.
 * These are memory-bound or small: rows through the ISA table (RMSNorm,
 * add as an axpy, RoPE's half-split pairs; the baseline build's -O2 leaves
 * plain loops scalar), OpenMP across rows. */
#include <math.h>
#include <stdlib.h>
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
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  int nt = mxl_cpu_threads_for(be, (double)n * H * 8, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int t = 0; t < n; t++) {
    float r = isa->rmsnorm_row(y + (size_t)t * H, x + (size_t)t * H, g, H, eps);
    if (rstd) rstd[t] = r;
  }
}

/* dx_i += r·g_i·dy_i − x_i·r³/H·Σ_j dy_j·g_j·x_j — dx, dy, x [n, H], rstd [n] */
void mxl_cpu_rmsnorm_bwd(mxl_backend *be, float *dx, const float *dy, const float *x,
                         const float *rstd, const uint16_t *g, int n, int H, float eps) {
  (void)eps; /* the forward's rstd already holds it */
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  int nt = mxl_cpu_threads_for(be, (double)n * H * 16, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int t = 0; t < n; t++) {
    size_t at = (size_t)t * H;
    isa->rmsnorm_bwd_row(dx + at, dy + at, x + at, g, rstd[t], H);
  }
}

/* y += x — n elements */
void mxl_cpu_add(mxl_backend *be, float *y, const float *x, size_t n) {
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  const size_t chunk = 1 << 14;
  size_t n_chunks = (n + chunk - 1) / chunk;
  int nt = mxl_cpu_threads_for(be, (double)n * 12, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (size_t c = 0; c < n_chunks; c++) {
    size_t i0 = c * chunk, len = n - i0 < chunk ? n - i0 : chunk;
    isa->axpy_f32(y + i0, 1.0f, x + i0, (int)len); /* exact: rounds once, as an add */
  }
}

int mxl_cpu_rope_reserve(mxl_backend *be, size_t rows, int half) {
  mxl_cpu_rope_table *rt = &mxl_cpu_of(be)->rope;
  rt->n = 0; /* invalid until filled */
  if (rows <= rt->cap_rows && half == rt->half) return 0;
  if (rows < rt->cap_rows) rows = rt->cap_rows;
  free(rt->cs_sn), free(rt->pos), free(rt->inv_freq);
  rt->cs_sn = rt->inv_freq = NULL, rt->pos = NULL, rt->cap_rows = 0, rt->half = 0;
  size_t per_row = 2 * (size_t)half * sizeof *rt->cs_sn;
  if (rows <= SIZE_MAX / per_row) {
    rt->cs_sn = malloc(rows * per_row);
    rt->pos = malloc(rows * sizeof *rt->pos);
    rt->inv_freq = malloc((size_t)half * sizeof *rt->inv_freq);
  }
  if (!rt->cs_sn || !rt->pos || !rt->inv_freq) {
    free(rt->cs_sn), free(rt->pos), free(rt->inv_freq);
    rt->cs_sn = rt->inv_freq = NULL, rt->pos = NULL;
    mxl_cpu_fail(be, MXL_ERR_MEMORY, "rope table");
    return -1;
  }
  rt->cap_rows = rows;
  rt->half = half;
  return 0;
}

/* The backend's cos/sin table filled for these positions (kept when the
 * last call had the same positions and frequencies). NULL on allocation
 * failure (recorded for sync). θ is rounded to fp32 as the references do;
 * cos and sin in double. */
static const float *rope_table(mxl_backend *be, const int32_t *pos, int n, const float *inv_freq,
                               int half, float concentration) {
  mxl_cpu_rope_table *rt = &mxl_cpu_of(be)->rope;
  if (rt->n == n && rt->half == half && rt->concentration == concentration &&
      !memcmp(rt->pos, pos, (size_t)n * sizeof *pos) &&
      !memcmp(rt->inv_freq, inv_freq, (size_t)half * sizeof *inv_freq))
    return rt->cs_sn;
  if (mxl_cpu_rope_reserve(be, (size_t)n, half) != 0) return NULL;
  /* a sin and a cos cost about as much as moving 16 bytes 20 times */
  int nt = mxl_cpu_threads_for(be, (double)n * half * 320, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int t = 0; t < n; t++) {
    float *cs = rt->cs_sn + (size_t)t * 2 * half, *sn = cs + half;
    for (int j = 0; j < half; j++) {
      float theta = (float)pos[t] * inv_freq[j];
      cs[j] = (float)(concentration * cos((double)theta));
      sn[j] = (float)(concentration * sin((double)theta));
    }
  }
  memcpy(rt->pos, pos, (size_t)n * sizeof *pos);
  memcpy(rt->inv_freq, inv_freq, (size_t)half * sizeof *inv_freq);
  rt->concentration = concentration;
  rt->n = n;
  return rt->cs_sn;
}

/* In-place YaRN RoPE of x [n, heads, d] at positions pos [n]; see ops.h.
 * The inverse rotation negates the sines (exactly: negation commutes with
 * rounding). */
void mxl_cpu_rope(mxl_backend *be, float *x, int n, int heads, int d, const int32_t *pos,
                  const float *inv_freq, float concentration, int interleaved, int inverse) {
  int half = d / 2;
  if (n <= 0 || half <= 0) return;
  const float *table = rope_table(be, pos, n, inv_freq, half, concentration);
  if (!table) return;
  const float sign = inverse ? -1.0f : 1.0f;
  const mxl_cpu_isa *isa = mxl_cpu_of(be)->isa;
  int nt = mxl_cpu_threads_for(be, (double)n * heads * d * 8, MXL_CPU_MIN_BYTES);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int t = 0; t < n; t++) {
    const float *cs = table + (size_t)t * 2 * half, *sn = cs + half;
    for (int h = 0; h < heads; h++) {
      float *xh = x + ((size_t)t * heads + h) * d; /* [d] */
      if (!interleaved) { /* gpt-oss: the pairs are the halves */
        isa->rope_halves_f32(xh, xh + half, cs, sn, half, sign);
        continue;
      }
      for (int j = 0; j < half; j++) {
        float a = xh[2 * j], b = xh[2 * j + 1], s = sign * sn[j];
        xh[2 * j] = a * cs[j] - b * s;
        xh[2 * j + 1] = b * cs[j] + a * s;
      }
    }
  }
}
