/* test_grad: finite-difference checks of every backward op, and forward and
 * backward ops against PyTorch fixtures.
 *
 * Double precision: the ref math headers are written for a type `mxl_real`
 * (kernels/ref/ref_real.h). The library instantiates them for float (the ref
 * backend); this file instantiates the very same source for double by
 * defining MXL_REAL before including them. For each op, a scalar loss
 *   L = Σ w ⊙ forward(inputs)          (w random)
 * is differentiated two ways: the analytic gradient is the backward op with
 * dy = w, the numerical one central differences of L in double
 * (h = 1e-6·max(1, |x|); truncation O(h²) and rounding O(1e-16·|L|/h) stay
 * near 1e-9 relative). They must agree to 1e-6 relative (L2 norm) for the
 * double twin, and to 1e-5 for the float ref backend's own backward op (its
 * results are rounded to float once). Kinks (SwiGLU's clamps) are handled
 * explicitly: at a boundary the numerical derivative is taken one-sided from
 * inside the interval, where PyTorch's convention says the gradient passes.
 *
 * PyTorch as the independent oracle: tests/fixtures/ops_torch.bin, written
 * by tools/gen_op_fixtures.py from an eager implementation of the spec
 * (attention with sinks, SwiGLU, router, RMSNorm, RoPE, cross-entropy,
 * MXFP4 decode + matmul, AdamW, the dropout hash), holds inputs, outputs
 * and autograd gradients in float64; the ref backend must match them. */
#define MXL_REAL double

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "kernels/ref/ref_attention.h"
#include "kernels/ref/ref_dense.h"
#include "kernels/ref/ref_lora.h"
#include "kernels/ref/ref_loss.h"
#include "kernels/ref/ref_moe.h"
#include "ops_util.h"
#include "test.h"

enum { MAXN = 4096 }; /* the largest array a check uses */

static mxl_backend *g_ref; /* the float ref backend */
static mxl_backend *g_cpu; /* the CPU backend, for the LoRA ops */

/* ------------------------------------------------------------ helpers */

/* Uniform values that are exactly representable in float, so the double
 * twin and the float backend see identical inputs. */
static void fill_d(test_rng *r, double *x, size_t n, double lo, double hi) {
  for (size_t i = 0; i < n; i++) x[i] = (double)(float)rng_uniform(r, lo, hi);
}

static void to_f32(float *dst, const double *src, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = (float)src[i];
}

static double dot_d(const double *a, const double *b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

/* ‖a − b‖ / ‖b‖ (or ‖a − b‖ when b = 0). */
static double rel_err(const double *a, const double *b, size_t n) {
  double e = 0, nb = 0;
  for (size_t i = 0; i < n; i++) {
    e += (a[i] - b[i]) * (a[i] - b[i]);
    nb += b[i] * b[i];
  }
  return nb > 0 ? sqrt(e / nb) : sqrt(e);
}

static double rel_err_f(const float *a, const double *b, size_t n) {
  static double ad[MAXN];
  for (size_t i = 0; i < n; i++) ad[i] = a[i];
  return rel_err(ad, b, n);
}

/* Checks one gradient and prints a line: `label` names op and input. */
static void expect_close(const char *label, const char *kind, double err, double tol) {
  MXL_CHECK_MSG(err <= tol, "%s (%s): relative error %.3g above %.3g", label, kind, err, tol);
  printf("%s %-34s %-7s rel %.2e (tol %.0e)\n", err <= tol ? "ok  " : "FAIL", label, kind, err,
         tol);
}

enum { TOL_DOUBLE = 0, TOL_FLOAT = 1 };
static const double grad_tol[2] = {1e-6, 1e-5};

/* Central differences of loss() with respect to x[0..n). */
typedef double (*loss_fn)(void *ctx);
static void numeric_grad(loss_fn loss, void *ctx, double *x, size_t n, double *g) {
  for (size_t i = 0; i < n; i++) {
    double x0 = x[i], h = 1e-6 * fmax(1.0, fabs(x0));
    double xp = x0 + h, xm = x0 - h;
    x[i] = xp;
    double lp = loss(ctx);
    x[i] = xm;
    double lm = loss(ctx);
    x[i] = x0;
    g[i] = (lp - lm) / (xp - xm);
  }
}

/* ------------------------------------------------------------ rmsnorm */

enum { RN_N = 3, RN_H = 19 };
typedef struct rn_ctx {
  double x[RN_N * RN_H], w[RN_N * RN_H], y[RN_N * RN_H];
  uint16_t g[RN_H];
} rn_ctx;

static double rn_loss(void *p) {
  rn_ctx *c = p;
  mxl_ref_rmsnorm(c->y, NULL, c->x, c->g, RN_N, RN_H, 1e-5);
  return dot_d(c->w, c->y, RN_N * RN_H);
}

static void test_grad_rmsnorm(void) {
  static rn_ctx c;
  test_rng r = {101};
  fill_d(&r, c.x, RN_N * RN_H, -2, 2);
  fill_d(&r, c.w, RN_N * RN_H, -1, 1);
  rng_fill_bf16(&r, c.g, RN_H, 0.5, 1.5);
  double num[RN_N * RN_H], dx[RN_N * RN_H] = {0}, rstd[RN_N];
  numeric_grad(rn_loss, &c, c.x, RN_N * RN_H, num);
  mxl_ref_rmsnorm(c.y, rstd, c.x, c.g, RN_N, RN_H, 1e-5);
  mxl_ref_rmsnorm_bwd(dx, c.w, c.x, rstd, c.g, RN_N, RN_H);
  expect_close("rmsnorm dx", "double", rel_err(dx, num, RN_N * RN_H), grad_tol[TOL_DOUBLE]);

  float xf[RN_N * RN_H], wf[RN_N * RN_H], yf[RN_N * RN_H], rf[RN_N], dxf[RN_N * RN_H] = {0};
  to_f32(xf, c.x, RN_N * RN_H);
  to_f32(wf, c.w, RN_N * RN_H);
  g_ref->ops->rmsnorm(g_ref, yf, rf, xf, c.g, RN_N, RN_H, 1e-5f);
  g_ref->ops->rmsnorm_bwd(g_ref, dxf, wf, xf, rf, c.g, RN_N, RN_H, 1e-5f);
  expect_close("rmsnorm dx", "float", rel_err_f(dxf, num, RN_N * RN_H), grad_tol[TOL_FLOAT]);
}

/* ------------------------------------------------------------ matmul_bf16 */

enum { MM_N = 3, MM_R = 7, MM_C = 11 };
typedef struct mm_ctx {
  double x[MM_N * MM_C], w[MM_N * MM_R], y[MM_N * MM_R];
  uint16_t wt[MM_R * MM_C], b[MM_R];
  mxl_bf16_weight W;
} mm_ctx;

static double mm_loss(void *p) {
  mm_ctx *c = p;
  mxl_ref_matmul_bf16(c->y, c->x, &c->W, MM_N);
  return dot_d(c->w, c->y, MM_N * MM_R);
}

static void test_grad_matmul_bf16(void) {
  static mm_ctx c;
  test_rng r = {102};
  fill_d(&r, c.x, MM_N * MM_C, -1, 1);
  fill_d(&r, c.w, MM_N * MM_R, -1, 1);
  rng_fill_bf16(&r, c.wt, MM_R * MM_C, -1, 1);
  rng_fill_bf16(&r, c.b, MM_R, -1, 1);
  c.W = (mxl_bf16_weight){c.wt, c.b, MM_R, MM_C};
  double num[MM_N * MM_C], dx[MM_N * MM_C] = {0};
  numeric_grad(mm_loss, &c, c.x, MM_N * MM_C, num);
  mxl_ref_matmul_bf16_dx(dx, c.w, &c.W, MM_N);
  expect_close("matmul_bf16 dx", "double", rel_err(dx, num, MM_N * MM_C), grad_tol[TOL_DOUBLE]);
  float wf[MM_N * MM_R], dxf[MM_N * MM_C] = {0};
  to_f32(wf, c.w, MM_N * MM_R);
  g_ref->ops->matmul_bf16_dx(g_ref, dxf, wf, &c.W, MM_N);
  expect_close("matmul_bf16 dx", "float", rel_err_f(dxf, num, MM_N * MM_C), grad_tol[TOL_FLOAT]);
}

/* ------------------------------------------------------------ mxfp4_matmul */

enum { MX_N = 4, MX_K = 2, MX_E = 3, MX_R = 6, MX_C = 64, MX_M = MX_N * MX_K };
typedef struct mx_ctx {
  double x[MX_M * MX_C], w[MX_M * MX_R], y[MX_M * MX_R];
  uint8_t blocks[MX_E * MX_R * MX_C / 2], scales[MX_E * MX_R * MX_C / 32];
  uint16_t bias[MX_E * MX_R];
  int32_t experts[MX_M], order[MX_M], slot[MX_M], offsets[MX_E + 1];
  mxl_mxfp4_weight W;
} mx_ctx;

static double mx_loss(void *p) {
  mx_ctx *c = p;
  mxl_ref_mxfp4_matmul(c->y, c->x, &c->W, c->offsets, MX_E);
  return dot_d(c->w, c->y, MX_M * MX_R);
}

static void test_grad_mxfp4_matmul(void) {
  static mx_ctx c;
  test_rng r = {103};
  fill_d(&r, c.x, MX_M * MX_C, -1, 1);
  fill_d(&r, c.w, MX_M * MX_R, -1, 1);
  rng_fill_mxfp4(&r, c.blocks, c.scales, (int64_t)MX_E * MX_R, MX_C, MXL_MXFP4_METAL_BIAS);
  rng_fill_bf16(&r, c.bias, MX_E * MX_R, -1, 1);
  rng_experts(&r, c.experts, MX_N, MX_K, MX_E);
  host_moe_plan(c.order, c.slot, c.offsets, c.experts, MX_N, MX_K, MX_E);
  c.W = (mxl_mxfp4_weight){.blocks = c.blocks, .scales = c.scales, .bias = c.bias,
                           .blocks_stride = MX_R * MX_C / 2, .scales_stride = MX_R * MX_C / 32,
                           .bias_stride = MX_R, .rows = MX_R, .cols = MX_C, .n_experts = MX_E,
                           .scale_bias = MXL_MXFP4_METAL_BIAS};
  double num[MX_M * MX_C], dx[MX_M * MX_C] = {0};
  numeric_grad(mx_loss, &c, c.x, MX_M * MX_C, num);
  mxl_ref_mxfp4_matmul_dx(dx, c.w, &c.W, c.offsets, MX_E);
  expect_close("mxfp4_matmul dx", "double", rel_err(dx, num, MX_M * MX_C), grad_tol[TOL_DOUBLE]);
  float wf[MX_M * MX_R], dxf[MX_M * MX_C] = {0}, rw[MX_M] = {0};
  to_f32(wf, c.w, MX_M * MX_R);
  mxl_moe_plan plan = {MX_N, MX_K, MX_E, c.experts, rw, c.order, c.slot, c.offsets, c.offsets};
  g_ref->ops->mxfp4_matmul_dx(g_ref, dxf, wf, &c.W, &plan);
  expect_close("mxfp4_matmul dx", "float", rel_err_f(dxf, num, MX_M * MX_C), grad_tol[TOL_FLOAT]);
}

/* ------------------------------------------------------------ rope */

enum { RO_N = 3, RO_HEADS = 2, RO_D = 8, RO_SIZE = RO_N * RO_HEADS * RO_D };
typedef struct ro_ctx {
  double x[RO_SIZE], w[RO_SIZE], y[RO_SIZE];
  int32_t pos[RO_N];
  float inv_freq[RO_D / 2];
  int interleaved;
} ro_ctx;

static double ro_loss(void *p) {
  ro_ctx *c = p;
  memcpy(c->y, c->x, sizeof c->y);
  mxl_ref_rope(c->y, RO_N, RO_HEADS, RO_D, c->pos, c->inv_freq, 1.3465736, c->interleaved, 0);
  return dot_d(c->w, c->y, RO_SIZE);
}

static void test_grad_rope(void) {
  static ro_ctx c;
  for (int interleaved = 0; interleaved < 2; interleaved++) {
    test_rng r = {104};
    fill_d(&r, c.x, RO_SIZE, -2, 2);
    fill_d(&r, c.w, RO_SIZE, -1, 1);
    c.pos[0] = 0, c.pos[1] = 5, c.pos[2] = 100000;
    rope_table(c.inv_freq, RO_D);
    c.interleaved = interleaved;
    double num[RO_SIZE], dx[RO_SIZE];
    numeric_grad(ro_loss, &c, c.x, RO_SIZE, num);
    memcpy(dx, c.w, sizeof dx); /* the backward is the inverse rotation of w */
    mxl_ref_rope(dx, RO_N, RO_HEADS, RO_D, c.pos, c.inv_freq, 1.3465736, interleaved, 1);
    const char *label = interleaved ? "rope dx (interleaved)" : "rope dx (half-split)";
    expect_close(label, "double", rel_err(dx, num, RO_SIZE), grad_tol[TOL_DOUBLE]);
    float dxf[RO_SIZE];
    to_f32(dxf, c.w, RO_SIZE);
    g_ref->ops->rope(g_ref, dxf, RO_N, RO_HEADS, RO_D, c.pos, c.inv_freq, 1.3465736f,
                     interleaved, 1);
    expect_close(label, "float", rel_err_f(dxf, num, RO_SIZE), grad_tol[TOL_FLOAT]);
  }
}

/* ------------------------------------------------------------ attention */

enum { AT_MAXQ = 12, AT_MAXK = 12, AT_MAXH = 4, AT_D = 8 };
typedef struct at_ctx {
  int nq, nk, nh, nkv, window;
  mask_kind kind;
  int segs;
  double q[AT_MAXQ * AT_MAXH * AT_D], k[AT_MAXK * AT_MAXH * AT_D], v[AT_MAXK * AT_MAXH * AT_D];
  double w[AT_MAXQ * AT_MAXH * AT_D], out[AT_MAXQ * AT_MAXH * AT_D], lse[AT_MAXQ * AT_MAXH];
  uint16_t sinks[AT_MAXH];
  int32_t q_pos[AT_MAXQ], q_seg[AT_MAXQ], k_pos[AT_MAXK], k_seg[AT_MAXK];
  mxl_attn_mask mask;
} at_ctx;

static double at_scale(void) { return 1.0 / sqrt((double)AT_D); }

static double at_loss(void *p) {
  at_ctx *c = p;
  mxl_ref_attention(c->out, NULL, c->q, c->k, c->v, c->sinks, &c->mask, c->nq, c->nk, c->nh,
                    c->nkv, AT_D, at_scale());
  return dot_d(c->w, c->out, (size_t)c->nq * c->nh * AT_D);
}

static void attention_case(const char *name, int nq, int nk, int nh, int nkv, int window,
                           mask_kind kind, int segs) {
  static at_ctx c;
  memset(&c, 0, sizeof c);
  c.nq = nq, c.nk = nk, c.nh = nh, c.nkv = nkv, c.window = window, c.kind = kind, c.segs = segs;
  test_rng r = {105 + (uint64_t)nq * 31 + (uint64_t)nk};
  size_t nqo = (size_t)nq * nh * AT_D, nkvd = (size_t)nk * nkv * AT_D;
  fill_d(&r, c.q, nqo, -2, 2);
  fill_d(&r, c.k, nkvd, -2, 2);
  fill_d(&r, c.v, nkvd, -2, 2);
  fill_d(&r, c.w, nqo, -1, 1);
  rng_fill_bf16(&r, c.sinks, (size_t)nh, -1, 2);
  build_mask(kind, segs, c.q_pos, c.q_seg, c.k_pos, c.k_seg, nq, nk);
  c.mask = (mxl_attn_mask){c.q_pos, c.q_seg, c.k_pos, c.k_seg, window};

  static double nq_[AT_MAXQ * AT_MAXH * AT_D], nk_[AT_MAXK * AT_MAXH * AT_D],
      nv_[AT_MAXK * AT_MAXH * AT_D];
  numeric_grad(at_loss, &c, c.q, nqo, nq_);
  numeric_grad(at_loss, &c, c.k, nkvd, nk_);
  numeric_grad(at_loss, &c, c.v, nkvd, nv_);

  static double dq[AT_MAXQ * AT_MAXH * AT_D], dk[AT_MAXK * AT_MAXH * AT_D],
      dv[AT_MAXK * AT_MAXH * AT_D];
  memset(dq, 0, sizeof dq), memset(dk, 0, sizeof dk), memset(dv, 0, sizeof dv);
  mxl_ref_attention(c.out, c.lse, c.q, c.k, c.v, c.sinks, &c.mask, nq, nk, nh, nkv, AT_D,
                    at_scale());
  mxl_ref_attention_bwd(dq, dk, dv, c.w, c.out, c.lse, c.q, c.k, c.v, &c.mask, nq, nk, nh, nkv,
                        AT_D, at_scale());
  char label[96];
  snprintf(label, sizeof label, "attention %s dq", name);
  expect_close(label, "double", rel_err(dq, nq_, nqo), grad_tol[TOL_DOUBLE]);
  snprintf(label, sizeof label, "attention %s dk", name);
  expect_close(label, "double", rel_err(dk, nk_, nkvd), grad_tol[TOL_DOUBLE]);
  snprintf(label, sizeof label, "attention %s dv", name);
  expect_close(label, "double", rel_err(dv, nv_, nkvd), grad_tol[TOL_DOUBLE]);

  static float qf[AT_MAXQ * AT_MAXH * AT_D], kf[AT_MAXK * AT_MAXH * AT_D],
      vf[AT_MAXK * AT_MAXH * AT_D], wf[AT_MAXQ * AT_MAXH * AT_D], of[AT_MAXQ * AT_MAXH * AT_D],
      lf[AT_MAXQ * AT_MAXH], dqf[AT_MAXQ * AT_MAXH * AT_D], dkf[AT_MAXK * AT_MAXH * AT_D],
      dvf[AT_MAXK * AT_MAXH * AT_D];
  to_f32(qf, c.q, nqo), to_f32(kf, c.k, nkvd), to_f32(vf, c.v, nkvd), to_f32(wf, c.w, nqo);
  memset(dqf, 0, sizeof dqf), memset(dkf, 0, sizeof dkf), memset(dvf, 0, sizeof dvf);
  float scale = (float)at_scale();
  g_ref->ops->attention(g_ref, of, lf, qf, kf, vf, c.sinks, &c.mask, nq, nk, nh, nkv, AT_D, scale);
  g_ref->ops->attention_bwd(g_ref, dqf, dkf, dvf, wf, of, lf, qf, kf, vf, c.sinks, &c.mask, nq,
                            nk, nh, nkv, AT_D, scale);
  snprintf(label, sizeof label, "attention %s dq", name);
  expect_close(label, "float", rel_err_f(dqf, nq_, nqo), grad_tol[TOL_FLOAT]);
  snprintf(label, sizeof label, "attention %s dk", name);
  expect_close(label, "float", rel_err_f(dkf, nk_, nkvd), grad_tol[TOL_FLOAT]);
  snprintf(label, sizeof label, "attention %s dv", name);
  expect_close(label, "float", rel_err_f(dvf, nv_, nkvd), grad_tol[TOL_FLOAT]);
}

static void test_grad_attention(void) {
  /* sinks everywhere; GQA 2, a window shorter than the documents, 2 packed
   * documents */
  attention_case("packed+window+gqa2", 12, 12, 4, 2, 3, MASK_PACKED, 2);
  /* KV-cache slots with empty entries, GQA 4, queries at the newest slots */
  attention_case("kvcache+gqa4", 3, 11, 4, 1, 5, MASK_KVCACHE, 1);
  /* GQA 1, causal, one query that sees no key */
  attention_case("orphan+gqa1", 5, 5, 2, 2, 0, MASK_ORPHAN, 1);
}

/* ------------------------------------------------------------ router */

enum { RT_N = 4, RT_E = 6 };
typedef struct rt_ctx {
  int k;
  double logits[RT_N * RT_E], w[RT_N * RT_E], weights[RT_N * RT_E];
  int32_t experts[RT_N * RT_E];
} rt_ctx;

static double rt_loss(void *p) {
  rt_ctx *c = p;
  mxl_ref_router_topk(c->experts, c->weights, c->logits, RT_N, RT_E, c->k);
  return dot_d(c->w, c->weights, (size_t)RT_N * c->k);
}

static void test_grad_router(void) {
  static rt_ctx c;
  for (int k = 1; k <= 4; k++) {
    test_rng r = {106 + (uint64_t)k};
    c.k = k;
    fill_d(&r, c.logits, RT_N * RT_E, -3, 3);
    fill_d(&r, c.w, (size_t)RT_N * k, -1, 1);
    double num[RT_N * RT_E], dl[RT_N * RT_E] = {0};
    numeric_grad(rt_loss, &c, c.logits, RT_N * RT_E, num);
    mxl_ref_router_topk(c.experts, c.weights, c.logits, RT_N, RT_E, k);
    mxl_ref_router_bwd(dl, c.w, c.weights, c.experts, RT_N, RT_E, k);
    char label[64];
    snprintf(label, sizeof label, "router dlogits k=%d", k);
    /* k = 1: the weight is identically 1, both gradients are exactly 0 */
    expect_close(label, "double", rel_err(dl, num, RT_N * RT_E), grad_tol[TOL_DOUBLE]);
    float lf[RT_N * RT_E], wf[RT_N * RT_E], dwf[RT_N * RT_E], dlf[RT_N * RT_E] = {0};
    int32_t ef[RT_N * RT_E];
    to_f32(lf, c.logits, RT_N * RT_E);
    to_f32(dwf, c.w, (size_t)RT_N * k);
    g_ref->ops->router_topk(g_ref, ef, wf, lf, RT_N, RT_E, k);
    g_ref->ops->router_bwd(g_ref, dlf, dwf, wf, ef, RT_N, RT_E, k);
    expect_close(label, "float", rel_err_f(dlf, num, RT_N * RT_E), grad_tol[TOL_FLOAT]);
  }
}

/* ------------------------------------------------------------ moe gather / combine */

enum { MO_N = 4, MO_K = 3, MO_E = 5, MO_H = 6, MO_M = MO_N * MO_K };
typedef struct mo_ctx {
  double x[MO_N * MO_H], xs[MO_M * MO_H], ys[MO_M * MO_H], rw[MO_M];
  double w_xs[MO_M * MO_H], w_out[MO_N * MO_H], out[MO_N * MO_H];
  int32_t experts[MO_M], order[MO_M], slot[MO_M], offsets[MO_E + 1];
} mo_ctx;

static double gather_loss(void *p) {
  mo_ctx *c = p;
  mxl_ref_moe_gather(c->xs, c->x, c->order, MO_M, MO_K, MO_H);
  return dot_d(c->w_xs, c->xs, MO_M * MO_H);
}

static double combine_loss(void *p) {
  mo_ctx *c = p;
  memset(c->out, 0, sizeof c->out);
  mxl_ref_moe_combine(c->out, c->ys, c->slot, c->rw, MO_N, MO_K, MO_H);
  return dot_d(c->w_out, c->out, MO_N * MO_H);
}

static void test_grad_moe(void) {
  static mo_ctx c;
  test_rng r = {107};
  fill_d(&r, c.x, MO_N * MO_H, -1, 1);
  fill_d(&r, c.ys, MO_M * MO_H, -1, 1);
  fill_d(&r, c.rw, MO_M, 0.1, 1);
  fill_d(&r, c.w_xs, MO_M * MO_H, -1, 1);
  fill_d(&r, c.w_out, MO_N * MO_H, -1, 1);
  rng_experts(&r, c.experts, MO_N, MO_K, MO_E);
  host_moe_plan(c.order, c.slot, c.offsets, c.experts, MO_N, MO_K, MO_E);
  float rwf[MO_M];
  to_f32(rwf, c.rw, MO_M);
  mxl_moe_plan plan = {MO_N, MO_K, MO_E, c.experts, rwf, c.order, c.slot, c.offsets, c.offsets};

  double num_x[MO_N * MO_H], dx[MO_N * MO_H] = {0};
  numeric_grad(gather_loss, &c, c.x, MO_N * MO_H, num_x);
  mxl_ref_moe_gather_bwd(dx, c.w_xs, c.slot, MO_N, MO_K, MO_H);
  expect_close("moe_gather dx", "double", rel_err(dx, num_x, MO_N * MO_H), grad_tol[TOL_DOUBLE]);
  float wxsf[MO_M * MO_H], dxf[MO_N * MO_H] = {0};
  to_f32(wxsf, c.w_xs, MO_M * MO_H);
  g_ref->ops->moe_gather_bwd(g_ref, dxf, wxsf, &plan, MO_H);
  expect_close("moe_gather dx", "float", rel_err_f(dxf, num_x, MO_N * MO_H), grad_tol[TOL_FLOAT]);

  double num_ys[MO_M * MO_H], num_rw[MO_M], dys[MO_M * MO_H] = {0}, drw[MO_M] = {0};
  numeric_grad(combine_loss, &c, c.ys, MO_M * MO_H, num_ys);
  numeric_grad(combine_loss, &c, c.rw, MO_M, num_rw);
  mxl_ref_moe_combine_bwd(dys, drw, c.w_out, c.ys, c.slot, c.rw, MO_N, MO_K, MO_H);
  expect_close("moe_combine dys", "double", rel_err(dys, num_ys, MO_M * MO_H), grad_tol[TOL_DOUBLE]);
  expect_close("moe_combine dweights", "double", rel_err(drw, num_rw, MO_M), grad_tol[TOL_DOUBLE]);
  float woutf[MO_N * MO_H], ysf[MO_M * MO_H], dysf[MO_M * MO_H] = {0}, drwf[MO_M] = {0};
  to_f32(woutf, c.w_out, MO_N * MO_H);
  to_f32(ysf, c.ys, MO_M * MO_H);
  g_ref->ops->moe_combine_bwd(g_ref, dysf, drwf, woutf, ysf, &plan, MO_H);
  expect_close("moe_combine dys", "float", rel_err_f(dysf, num_ys, MO_M * MO_H), grad_tol[TOL_FLOAT]);
  expect_close("moe_combine dweights", "float", rel_err_f(drwf, num_rw, MO_M), grad_tol[TOL_FLOAT]);
}

/* ------------------------------------------------------------ swiglu */

enum { SW_M = 3, SW_I = 12 };
static const double SW_ALPHA = 1.702, SW_LIMIT = 7.0;
typedef struct sw_ctx {
  double h[SW_M * 2 * SW_I], w[SW_M * SW_I], act[SW_M * SW_I];
} sw_ctx;

static double sw_loss(void *p) {
  sw_ctx *c = p;
  mxl_ref_swiglu(c->act, c->h, SW_M, SW_I, SW_ALPHA, SW_LIMIT);
  return dot_d(c->w, c->act, SW_M * SW_I);
}

/* One-sided second-order difference of L in x[i], from the side `dir`
 * (-1: left, +1: right): (−3L(x) + 4L(x+dir·h) − L(x+2·dir·h)) / (2·dir·h). */
static double one_sided(loss_fn loss, void *ctx, double *x, size_t i, int dir) {
  double x0 = x[i], h = 1e-6 * dir;
  double l0 = loss(ctx);
  x[i] = x0 + h;
  double l1 = loss(ctx);
  x[i] = x0 + 2 * h;
  double l2 = loss(ctx);
  x[i] = x0;
  return (-3 * l0 + 4 * l1 - l2) / (2 * h);
}

static void test_grad_swiglu(void) {
  static sw_ctx c;
  test_rng r = {108};
  fill_d(&r, c.h, SW_M * 2 * SW_I, -10, 10);
  fill_d(&r, c.w, SW_M * SW_I, -1, 1);
  /* lanes exactly at the clamps, just inside and outside, both gate and up */
  const double special[] = {7.0, -7.0, 6.5, 7.5, -7.5, -6.5, 0.0, 7.0};
  for (int i = 0; i < 8; i++) {
    c.h[2 * i] = special[i];                         /* gate */
    c.h[2 * (i + SW_I) + 1] = special[(i + 3) % 8]; /* up of row 1 */
  }
  c.h[2 * 2 * SW_I + 1] = -7.0; /* an up lane exactly at the lower clamp */
  size_t nh = SW_M * 2 * SW_I;
  double num[SW_M * 2 * SW_I], dh[SW_M * 2 * SW_I] = {0};
  numeric_grad(sw_loss, &c, c.h, nh, num);
  /* At a kink, PyTorch's clamp passes the gradient of the unclamped side:
   * the gate clamp is min(g, 7) (pass from the left at 7), the up clamp is
   * clamp(u, -7, 7) (from the left at 7, from the right at -7). */
  int boundary = 0;
  for (size_t i = 0; i < nh; i++) {
    int gate = (i % 2) == 0;
    if (c.h[i] == SW_LIMIT) num[i] = one_sided(sw_loss, &c, c.h, i, -1), boundary++;
    if (!gate && c.h[i] == -SW_LIMIT) num[i] = one_sided(sw_loss, &c, c.h, i, +1), boundary++;
  }
  mxl_ref_swiglu_bwd(dh, c.w, c.h, SW_M, SW_I, SW_ALPHA, SW_LIMIT);
  expect_close("swiglu dh (clamps, boundaries)", "double", rel_err(dh, num, nh),
               grad_tol[TOL_DOUBLE]);
  /* the boundaries really pass a (non-zero) gradient and outside is zero */
  int passed = 0, blocked = 0, outside = 0;
  for (size_t i = 0; i < nh; i++) {
    int gate = (i % 2) == 0;
    if (c.h[i] == SW_LIMIT || (!gate && c.h[i] == -SW_LIMIT)) passed += dh[i] != 0;
    if (c.h[i] > SW_LIMIT || (!gate && c.h[i] < -SW_LIMIT)) outside++, blocked += dh[i] == 0;
  }
  MXL_CHECK_MSG(boundary >= 4 && passed == boundary, "%d of %d boundary lanes pass", passed,
                boundary);
  MXL_CHECK_MSG(outside > 0 && blocked == outside, "%d of %d clamped lanes blocked", blocked,
                outside);
  printf("%s swiglu: %d boundary lanes pass, %d clamped lanes blocked\n",
         passed == boundary && blocked == outside ? "ok  " : "FAIL", passed, blocked);
  float hf[SW_M * 2 * SW_I], wf[SW_M * SW_I], dhf[SW_M * 2 * SW_I] = {0};
  to_f32(hf, c.h, nh);
  to_f32(wf, c.w, SW_M * SW_I);
  g_ref->ops->swiglu_bwd(g_ref, dhf, wf, hf, SW_M, SW_I, (float)SW_ALPHA, (float)SW_LIMIT);
  expect_close("swiglu dh (clamps, boundaries)", "float", rel_err_f(dhf, num, nh),
               grad_tol[TOL_FLOAT]);
}

/* ------------------------------------------------------------ unembed_xent */

enum { UX_N = 4, UX_H = 16, UX_V = 37 };
typedef struct ux_ctx {
  double h[UX_N * UX_H], weight[UX_N], loss[UX_N];
  uint16_t wt[UX_V * UX_H];
  int32_t targets[UX_N];
  mxl_bf16_weight W;
} ux_ctx;

static double ux_loss(void *p) {
  ux_ctx *c = p;
  mxl_ref_unembed_xent(c->loss, NULL, c->h, &c->W, c->targets, c->weight, UX_N);
  return dot_d(c->weight, c->loss, UX_N);
}

static void test_grad_unembed_xent(void) {
  static ux_ctx c;
  test_rng r = {109};
  fill_d(&r, c.h, UX_N * UX_H, -2, 2);
  rng_fill_bf16(&r, c.wt, UX_V * UX_H, -1, 1);
  c.W = (mxl_bf16_weight){c.wt, NULL, UX_V, UX_H};
  for (int t = 0; t < UX_N; t++) c.targets[t] = rng_int(&r, UX_V);
  c.weight[0] = 1, c.weight[1] = 0.25, c.weight[2] = 0, c.weight[3] = 2; /* token 2 masked */
  double num[UX_N * UX_H], dh[UX_N * UX_H] = {0};
  numeric_grad(ux_loss, &c, c.h, UX_N * UX_H, num);
  MXL_CHECK(mxl_ref_unembed_xent(c.loss, dh, c.h, &c.W, c.targets, c.weight, UX_N) == 0);
  expect_close("unembed_xent dh", "double", rel_err(dh, num, UX_N * UX_H), grad_tol[TOL_DOUBLE]);
  float hf[UX_N * UX_H], wf[UX_N], lf[UX_N], dhf[UX_N * UX_H] = {0};
  to_f32(hf, c.h, UX_N * UX_H);
  to_f32(wf, c.weight, UX_N);
  g_ref->ops->unembed_xent(g_ref, lf, dhf, hf, &c.W, c.targets, wf, UX_N);
  expect_close("unembed_xent dh", "float", rel_err_f(dhf, num, UX_N * UX_H), grad_tol[TOL_FLOAT]);
  MXL_CHECK(lf[2] == 0);
}

/* ------------------------------------------------------------ gemm_f32 */

enum { GM_M = 3, GM_N = 4, GM_K = 5 };
typedef struct gm_ctx {
  int tA, tB;
  double A[GM_M * GM_K], B[GM_K * GM_N], C0[GM_M * GM_N], C[GM_M * GM_N], w[GM_M * GM_N];
} gm_ctx;

static const double GM_ALPHA = 0.7, GM_BETA = 0.3;
static int gm_lda(const gm_ctx *c) { return c->tA ? GM_M : GM_K; }
static int gm_ldb(const gm_ctx *c) { return c->tB ? GM_K : GM_N; }

static double gm_loss(void *p) {
  gm_ctx *c = p;
  memcpy(c->C, c->C0, sizeof c->C);
  mxl_ref_gemm(c->tA, c->tB, GM_M, GM_N, GM_K, GM_ALPHA, c->A, gm_lda(c), c->B, gm_ldb(c),
               GM_BETA, c->C, GM_N);
  return dot_d(c->w, c->C, GM_M * GM_N);
}

/* dA, dB of L = Σ w ⊙ (α·op(A)·op(B) + β·C), each one gemm:
 *   d op(A) = α·W·op(B)ᵀ,   d op(B) = α·op(A)ᵀ·W
 * stored transposed when the input is. `gemm` is the double twin or a
 * backend's gemm_f32 through `gemm_on`. */
typedef void (*gemm_fn)(void *be, int tA, int tB, int M, int N, int K, double alpha,
                        const void *A, int lda, const void *B, int ldb, double beta, void *C,
                        int ldc);

static void gemm_d(void *be, int tA, int tB, int M, int N, int K, double alpha, const void *A,
                   int lda, const void *B, int ldb, double beta, void *C, int ldc) {
  (void)be;
  mxl_ref_gemm(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
static void gemm_f(void *be, int tA, int tB, int M, int N, int K, double alpha, const void *A,
                   int lda, const void *B, int ldb, double beta, void *C, int ldc) {
  mxl_backend *b = be;
  b->ops->gemm_f32(b, tA, tB, M, N, K, (float)alpha, A, lda, B, ldb, (float)beta, C, ldc);
}

static void gemm_grads(gemm_fn gemm, void *be, int tA, int tB, const void *A, int lda,
                       const void *B, int ldb, const void *W, void *dA, void *dB) {
  if (!tA) gemm(be, 0, !tB, GM_M, GM_K, GM_N, GM_ALPHA, W, GM_N, B, ldb, 0, dA, GM_K);
  else gemm(be, tB, 1, GM_K, GM_M, GM_N, GM_ALPHA, B, ldb, W, GM_N, 0, dA, GM_M);
  if (!tB) gemm(be, !tA, 0, GM_K, GM_N, GM_M, GM_ALPHA, A, lda, W, GM_N, 0, dB, GM_N);
  else gemm(be, 1, tA, GM_N, GM_K, GM_M, GM_ALPHA, W, GM_N, A, lda, 0, dB, GM_K);
}

static void test_grad_gemm(void) {
  static gm_ctx c;
  for (int t = 0; t < 4; t++) {
    c.tA = t & 1, c.tB = t >> 1;
    test_rng r = {110 + (uint64_t)t};
    fill_d(&r, c.A, GM_M * GM_K, -1, 1);
    fill_d(&r, c.B, GM_K * GM_N, -1, 1);
    fill_d(&r, c.C0, GM_M * GM_N, -1, 1);
    fill_d(&r, c.w, GM_M * GM_N, -1, 1);
    double numA[GM_M * GM_K], numB[GM_K * GM_N], dA[GM_M * GM_K], dB[GM_K * GM_N];
    numeric_grad(gm_loss, &c, c.A, GM_M * GM_K, numA);
    numeric_grad(gm_loss, &c, c.B, GM_K * GM_N, numB);
    gemm_grads(gemm_d, NULL, c.tA, c.tB, c.A, gm_lda(&c), c.B, gm_ldb(&c), c.w, dA, dB);
    char la[64], lb[64];
    snprintf(la, sizeof la, "gemm_f32 tA=%d tB=%d dA", c.tA, c.tB);
    snprintf(lb, sizeof lb, "gemm_f32 tA=%d tB=%d dB", c.tA, c.tB);
    expect_close(la, "double", rel_err(dA, numA, GM_M * GM_K), grad_tol[TOL_DOUBLE]);
    expect_close(lb, "double", rel_err(dB, numB, GM_K * GM_N), grad_tol[TOL_DOUBLE]);
    float Af[GM_M * GM_K], Bf[GM_K * GM_N], Wf[GM_M * GM_N], dAf[GM_M * GM_K], dBf[GM_K * GM_N];
    to_f32(Af, c.A, GM_M * GM_K), to_f32(Bf, c.B, GM_K * GM_N), to_f32(Wf, c.w, GM_M * GM_N);
    for (size_t i = 0; i < GM_M * GM_K; i++) dAf[i] = NAN; /* beta 0: not read */
    for (size_t i = 0; i < GM_K * GM_N; i++) dBf[i] = NAN;
    gemm_grads(gemm_f, g_ref, c.tA, c.tB, Af, gm_lda(&c), Bf, gm_ldb(&c), Wf, dAf, dBf);
    expect_close(la, "float", rel_err_f(dAf, numA, GM_M * GM_K), grad_tol[TOL_FLOAT]);
    expect_close(lb, "float", rel_err_f(dBf, numB, GM_K * GM_N), grad_tol[TOL_FLOAT]);
  }
}

/* ------------------------------------------------------------ LoRA */

/* The segmented LoRA op (kernels/ops.h lora, lora_bwd) as the forward and
 * the trainer use it: two adapters on overlapping rows —
 *   y = y0 + Σ_s scale_s·(x[rows_s]·A_sᵀ)·B_sᵀ
 * segment 0 over every row (rank 2, scale 2), segment 1 over rows 1..2
 * (rank 3, scale -0.7) — x [n, H], A_s [R_s, H], B_s [O, R_s], y [n, O].
 * Gradients of x, A_s and B_s from lora_bwd against central differences:
 * the double twin of the ref math, then each host backend's ops. */
enum { LO_N = 4, LO_H = 6, LO_O = 5, LO_SEGS = 2, LO_T = LO_N * 2 + 2 * 3 };
static const int lo_row0[LO_SEGS] = {0, 1}, lo_rows[LO_SEGS] = {LO_N, 2}, lo_rank[LO_SEGS] = {2, 3};
static const double lo_scale[LO_SEGS] = {2.0, -0.7};
static const int lo_t_off[LO_SEGS] = {0, LO_N * 2};

typedef struct lo_ctx {
  double x[LO_N * LO_H], A[LO_SEGS][3 * LO_H], B[LO_SEGS][LO_O * 3], y0[LO_N * LO_O];
  double w[LO_N * LO_O], t[LO_T], y[LO_N * LO_O];
} lo_ctx;

static double lo_loss(void *p) {
  lo_ctx *c = p;
  memcpy(c->y, c->y0, sizeof c->y);
  for (int g = 0; g < LO_SEGS; g++)
    mxl_ref_lora_seg(c->y + lo_row0[g] * LO_O, c->t + lo_t_off[g], c->x + lo_row0[g] * LO_H,
                     c->A[g], c->B[g], lo_rows[g], lo_rank[g], LO_H, LO_O, lo_scale[g]);
  return dot_d(c->w, c->y, LO_N * LO_O);
}

static void test_grad_lora(void) {
  static lo_ctx c;
  test_rng r = {120};
  fill_d(&r, c.x, LO_N * LO_H, -1, 1);
  for (int g = 0; g < LO_SEGS; g++) {
    fill_d(&r, c.A[g], (size_t)lo_rank[g] * LO_H, -1, 1);
    fill_d(&r, c.B[g], (size_t)LO_O * lo_rank[g], -1, 1);
  }
  fill_d(&r, c.y0, LO_N * LO_O, -1, 1);
  fill_d(&r, c.w, LO_N * LO_O, -1, 1);
  double nx[LO_N * LO_H], nA[LO_SEGS][3 * LO_H], nB[LO_SEGS][LO_O * 3];
  numeric_grad(lo_loss, &c, c.x, LO_N * LO_H, nx);
  for (int g = 0; g < LO_SEGS; g++) {
    numeric_grad(lo_loss, &c, c.A[g], (size_t)lo_rank[g] * LO_H, nA[g]);
    numeric_grad(lo_loss, &c, c.B[g], (size_t)LO_O * lo_rank[g], nB[g]);
  }
  double dt[LO_N * 3], dx[LO_N * LO_H] = {0}, dA[LO_SEGS][3 * LO_H] = {{0}},
                       dB[LO_SEGS][LO_O * 3] = {{0}};
  lo_loss(&c); /* leaves t */
  for (int g = 0; g < LO_SEGS; g++)
    mxl_ref_lora_seg_bwd(dx + lo_row0[g] * LO_H, dA[g], dB[g], dt, c.w + lo_row0[g] * LO_O,
                         c.x + lo_row0[g] * LO_H, c.t + lo_t_off[g], c.A[g], c.B[g], lo_rows[g],
                         lo_rank[g], LO_H, LO_O, lo_scale[g]);
  expect_close("lora dx", "double", rel_err(dx, nx, LO_N * LO_H), grad_tol[TOL_DOUBLE]);
  for (int g = 0; g < LO_SEGS; g++) {
    expect_close(g ? "lora dA (segment 1)" : "lora dA (segment 0)", "double",
                 rel_err(dA[g], nA[g], (size_t)lo_rank[g] * LO_H), grad_tol[TOL_DOUBLE]);
    expect_close(g ? "lora dB (segment 1)" : "lora dB (segment 0)", "double",
                 rel_err(dB[g], nB[g], (size_t)LO_O * lo_rank[g]), grad_tol[TOL_DOUBLE]);
  }

  /* Each host backend's lora and lora_bwd ops (fp32 products). */
  mxl_backend *bes[2] = {g_ref, g_cpu};
  for (int b = 0; b < 2; b++) {
    if (!bes[b] || !bes[b]->ops->host_memory) continue;
    float xf[LO_N * LO_H], Af[LO_SEGS][3 * LO_H], Bf[LO_SEGS][LO_O * 3], yf[LO_N * LO_O];
    float wf[LO_N * LO_O], tf[LO_T], dxf[LO_N * LO_H] = {0}, dAf[LO_SEGS][3 * LO_H] = {{0}},
                                      dBf[LO_SEGS][LO_O * 3] = {{0}};
    mxl_lora_seg segs[LO_SEGS];
    to_f32(xf, c.x, LO_N * LO_H), to_f32(yf, c.y0, LO_N * LO_O), to_f32(wf, c.w, LO_N * LO_O);
    for (int g = 0; g < LO_SEGS; g++) {
      to_f32(Af[g], c.A[g], (size_t)lo_rank[g] * LO_H);
      to_f32(Bf[g], c.B[g], (size_t)LO_O * lo_rank[g]);
      segs[g] = (mxl_lora_seg){lo_row0[g], lo_rows[g], lo_rank[g], (float)lo_scale[g], Af[g],
                               Bf[g], dAf[g], dBf[g], lo_t_off[g]};
    }
    bes[b]->ops->lora(bes[b], yf, tf, xf, segs, LO_SEGS, LO_H, LO_O);
    bes[b]->ops->lora_bwd(bes[b], dxf, wf, xf, tf, segs, LO_SEGS, LO_H, LO_O);
    MXL_CHECK_OK(bes[b]->ops->sync(bes[b]));
    const char *kind = bes[b]->ops->name;
    expect_close("lora dx", kind, rel_err_f(dxf, nx, LO_N * LO_H), grad_tol[TOL_FLOAT]);
    for (int g = 0; g < LO_SEGS; g++) {
      expect_close(g ? "lora dA (segment 1)" : "lora dA (segment 0)", kind,
                   rel_err_f(dAf[g], nA[g], (size_t)lo_rank[g] * LO_H), grad_tol[TOL_FLOAT]);
      expect_close(g ? "lora dB (segment 1)" : "lora dB (segment 0)", kind,
                   rel_err_f(dBf[g], nB[g], (size_t)LO_O * lo_rank[g]), grad_tol[TOL_FLOAT]);
    }
  }
}

/* ------------------------------------------------------------ dropout */

enum { DR_N = 64 };
typedef struct dr_ctx {
  double x[DR_N], w[DR_N], y[DR_N];
} dr_ctx;

static double dr_loss(void *p) {
  dr_ctx *c = p;
  mxl_ref_dropout(c->y, c->x, DR_N, 0.3f, 42);
  return dot_d(c->w, c->y, DR_N);
}

static void test_grad_dropout(void) {
  static dr_ctx c;
  test_rng r = {121};
  fill_d(&r, c.x, DR_N, -1, 1);
  fill_d(&r, c.w, DR_N, -1, 1);
  double num[DR_N], dx[DR_N];
  numeric_grad(dr_loss, &c, c.x, DR_N, num);
  mxl_ref_dropout(dx, c.w, DR_N, 0.3f, 42); /* the backward: the same mask on dy */
  expect_close("dropout dx", "double", rel_err(dx, num, DR_N), grad_tol[TOL_DOUBLE]);
}

/* ------------------------------------------------------------ PyTorch fixtures */

/* tests/fixtures/ops_torch.bin: "MXLOPFX1", u32 version (1), u32 count,
 * then per record: u32 name length, name, u32 dtype (0 f32, 1 f64, 2 i32,
 * 3 u16, 4 u8), u64 element count, the elements (little-endian). */
typedef struct fx_record {
  char name[64];
  uint32_t dtype;
  uint64_t count;
  void *data;
} fx_record;

typedef struct fixture {
  fx_record *rec;
  uint32_t n;
} fixture;

static size_t fx_elem_size(uint32_t dtype) {
  static const size_t sizes[] = {4, 8, 4, 2, 1};
  return dtype < 5 ? sizes[dtype] : 0;
}

static void fixture_free(fixture *fx) {
  for (uint32_t i = 0; fx->rec && i < fx->n; i++) free(fx->rec[i].data);
  free(fx->rec);
  fx->rec = NULL;
  fx->n = 0;
}

/* Returns 0, or -1 (with a message on stderr) on a missing or bad file. */
static int fixture_load(fixture *fx, const char *path) {
  memset(fx, 0, sizeof *fx);
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "%s: cannot open\n", path);
    return -1;
  }
  char magic[8];
  uint32_t version = 0, count = 0;
  int ok = fread(magic, 1, 8, f) == 8 && memcmp(magic, "MXLOPFX1", 8) == 0 &&
           fread(&version, 4, 1, f) == 1 && version == 1 && fread(&count, 4, 1, f) == 1 &&
           count < 10000;
  if (ok) fx->rec = calloc(count, sizeof *fx->rec);
  ok = ok && fx->rec;
  for (uint32_t i = 0; ok && i < count; i++) {
    fx_record *r = &fx->rec[i];
    uint32_t len = 0;
    ok = fread(&len, 4, 1, f) == 1 && len < sizeof r->name && fread(r->name, 1, len, f) == len &&
         fread(&r->dtype, 4, 1, f) == 1 && fx_elem_size(r->dtype) &&
         fread(&r->count, 8, 1, f) == 1 && r->count < (1u << 24);
    if (!ok) break;
    size_t bytes = (size_t)r->count * fx_elem_size(r->dtype);
    r->data = malloc(bytes ? bytes : 1);
    ok = r->data && fread(r->data, 1, bytes, f) == bytes;
    fx->n = i + 1;
  }
  fclose(f);
  if (!ok) {
    fprintf(stderr, "%s: malformed fixture (regenerate with tools/gen_op_fixtures.py)\n", path);
    fixture_free(fx);
    return -1;
  }
  return 0;
}

/* The record `name` with `dtype`, or NULL (a failed check) when absent. */
static const fx_record *fx_get(const fixture *fx, const char *name, uint32_t dtype) {
  for (uint32_t i = 0; i < fx->n; i++)
    if (strcmp(fx->rec[i].name, name) == 0 && fx->rec[i].dtype == dtype) return &fx->rec[i];
  MXL_CHECK_MSG(0, "fixture record %s (dtype %u) missing", name, dtype);
  return NULL;
}

enum { FX_F32, FX_F64, FX_I32, FX_U16, FX_U8 };
static const float *fx_f32(const fixture *fx, const char *name) {
  const fx_record *r = fx_get(fx, name, FX_F32);
  return r ? r->data : NULL;
}
static const double *fx_f64(const fixture *fx, const char *name) {
  const fx_record *r = fx_get(fx, name, FX_F64);
  return r ? r->data : NULL;
}
static const int32_t *fx_i32(const fixture *fx, const char *name) {
  const fx_record *r = fx_get(fx, name, FX_I32);
  return r ? r->data : NULL;
}
static const void *fx_raw(const fixture *fx, const char *name, uint32_t dtype) {
  const fx_record *r = fx_get(fx, name, dtype);
  return r ? r->data : NULL;
}
static int fx_int(const fixture *fx, const char *name) {
  const int32_t *v = fx_i32(fx, name);
  return v ? v[0] : 0;
}
static size_t fx_count(const fixture *fx, const char *name) {
  for (uint32_t i = 0; i < fx->n; i++)
    if (strcmp(fx->rec[i].name, name) == 0) return (size_t)fx->rec[i].count;
  return 0;
}

/* The float ref result against the torch float64 result. */
static const double FX_TOL = 2e-6;
static void expect_torch(const fixture *fx, const char *label, const float *got,
                         const char *expected_name) {
  const double *want = fx_f64(fx, expected_name);
  size_t n = fx_count(fx, expected_name);
  if (!want) return;
  double e = 0, nb = 0;
  for (size_t i = 0; i < n; i++) {
    e += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
    nb += want[i] * want[i];
  }
  double err = nb > 0 ? sqrt(e / nb) : sqrt(e);
  expect_close(label, "torch", err, FX_TOL);
}

static float *zeros_f(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static void fx_attention(const fixture *fx) {
  int nq = fx_int(fx, "attn.nq"), nk = fx_int(fx, "attn.nk"), nh = fx_int(fx, "attn.nh");
  int nkv = fx_int(fx, "attn.nkv"), d = fx_int(fx, "attn.d");
  const float *q = fx_f32(fx, "attn.q"), *k = fx_f32(fx, "attn.k"), *v = fx_f32(fx, "attn.v");
  const float *dout = fx_f32(fx, "attn.dout"), *scale = fx_f32(fx, "attn.scale");
  const uint16_t *sinks = fx_raw(fx, "attn.sinks", FX_U16);
  mxl_attn_mask mask = {fx_i32(fx, "attn.q_pos"), fx_i32(fx, "attn.q_seg"),
                        fx_i32(fx, "attn.k_pos"), fx_i32(fx, "attn.k_seg"),
                        fx_int(fx, "attn.window")};
  if (!q || !k || !v || !dout || !scale || !sinks || !mask.q_pos || !mask.q_seg || !mask.k_pos ||
      !mask.k_seg)
    return;
  size_t nqo = (size_t)nq * nh * d, nkvd = (size_t)nk * nkv * d;
  float *out = zeros_f(nqo), *lse = zeros_f((size_t)nq * nh), *dq = zeros_f(nqo),
        *dk = zeros_f(nkvd), *dv = zeros_f(nkvd);
  g_ref->ops->attention(g_ref, out, lse, q, k, v, sinks, &mask, nq, nk, nh, nkv, d, *scale);
  g_ref->ops->attention_bwd(g_ref, dq, dk, dv, dout, out, lse, q, k, v, sinks, &mask, nq, nk, nh,
                            nkv, d, *scale);
  expect_torch(fx, "attention out", out, "attn.out");
  expect_torch(fx, "attention lse", lse, "attn.lse");
  expect_torch(fx, "attention dq", dq, "attn.dq");
  expect_torch(fx, "attention dk", dk, "attn.dk");
  expect_torch(fx, "attention dv", dv, "attn.dv");
  free(out), free(lse), free(dq), free(dk), free(dv);
}

static void fx_swiglu(const fixture *fx) {
  int m = fx_int(fx, "swiglu.m"), I = fx_int(fx, "swiglu.I");
  const float *h = fx_f32(fx, "swiglu.h"), *dact = fx_f32(fx, "swiglu.dact");
  if (!h || !dact) return;
  float *act = zeros_f((size_t)m * I), *dh = zeros_f((size_t)m * 2 * I);
  g_ref->ops->swiglu(g_ref, act, h, m, I, 1.702f, 7.0f);
  g_ref->ops->swiglu_bwd(g_ref, dh, dact, h, m, I, 1.702f, 7.0f);
  expect_torch(fx, "swiglu act", act, "swiglu.act");
  expect_torch(fx, "swiglu dh (boundaries pass)", dh, "swiglu.dh");
  free(act), free(dh);
}

static void fx_router(const fixture *fx) {
  int n = fx_int(fx, "router.n"), E = fx_int(fx, "router.E"), k = fx_int(fx, "router.k");
  const float *logits = fx_f32(fx, "router.logits"), *dw = fx_f32(fx, "router.dweights");
  const int32_t *want_e = fx_i32(fx, "router.experts");
  if (!logits || !dw || !want_e) return;
  int32_t *experts = calloc((size_t)n * k, sizeof *experts);
  float *w = zeros_f((size_t)n * k), *dl = zeros_f((size_t)n * E);
  g_ref->ops->router_topk(g_ref, experts, w, logits, n, E, k);
  g_ref->ops->router_bwd(g_ref, dl, dw, w, experts, n, E, k);
  MXL_CHECK_MSG(memcmp(experts, want_e, sizeof *experts * (size_t)n * k) == 0,
                "router experts differ from torch.topk");
  expect_torch(fx, "router weights", w, "router.weights");
  expect_torch(fx, "router dlogits", dl, "router.dlogits");
  free(experts), free(w), free(dl);
}

static void fx_rmsnorm(const fixture *fx) {
  int n = fx_int(fx, "rmsnorm.n"), H = fx_int(fx, "rmsnorm.H");
  const float *x = fx_f32(fx, "rmsnorm.x"), *dy = fx_f32(fx, "rmsnorm.dy");
  const uint16_t *g = fx_raw(fx, "rmsnorm.g", FX_U16);
  if (!x || !dy || !g) return;
  float *y = zeros_f((size_t)n * H), *rstd = zeros_f((size_t)n), *dx = zeros_f((size_t)n * H);
  g_ref->ops->rmsnorm(g_ref, y, rstd, x, g, n, H, 1e-5f);
  g_ref->ops->rmsnorm_bwd(g_ref, dx, dy, x, rstd, g, n, H, 1e-5f);
  expect_torch(fx, "rmsnorm y", y, "rmsnorm.y");
  expect_torch(fx, "rmsnorm dx", dx, "rmsnorm.dx");
  free(y), free(rstd), free(dx);
}

static void fx_rope(const fixture *fx) {
  int n = fx_int(fx, "rope.n"), heads = fx_int(fx, "rope.heads"), d = fx_int(fx, "rope.d");
  const float *x = fx_f32(fx, "rope.x"), *inv = fx_f32(fx, "rope.inv_freq");
  const float *conc = fx_f32(fx, "rope.concentration");
  const int32_t *pos = fx_i32(fx, "rope.pos");
  if (!x || !inv || !conc || !pos) return;
  size_t nx = (size_t)n * heads * d;
  float *y = zeros_f(nx);
  for (int interleaved = 0; interleaved < 2; interleaved++) {
    memcpy(y, x, nx * sizeof *y);
    g_ref->ops->rope(g_ref, y, n, heads, d, pos, inv, *conc, interleaved, 0);
    expect_torch(fx, interleaved ? "rope interleaved" : "rope half-split", y,
                 interleaved ? "rope.y_interleaved" : "rope.y_halfsplit");
  }
  free(y);
}

static void fx_xent(const fixture *fx) {
  int n = fx_int(fx, "xent.n"), H = fx_int(fx, "xent.H"), V = fx_int(fx, "xent.V");
  const float *h = fx_f32(fx, "xent.h"), *weight = fx_f32(fx, "xent.weight");
  const uint16_t *w = fx_raw(fx, "xent.w", FX_U16);
  const int32_t *targets = fx_i32(fx, "xent.targets");
  if (!h || !weight || !w || !targets) return;
  mxl_bf16_weight W = {w, NULL, V, H};
  float *loss = zeros_f((size_t)n), *dh = zeros_f((size_t)n * H);
  g_ref->ops->unembed_xent(g_ref, loss, dh, h, &W, targets, weight, n);
  expect_torch(fx, "unembed_xent loss", loss, "xent.loss");
  expect_torch(fx, "unembed_xent dh", dh, "xent.dh");
  free(loss), free(dh);
}

static void fx_mxfp4(const fixture *fx) {
  int n = fx_int(fx, "mx.n"), k = fx_int(fx, "mx.k"), E = fx_int(fx, "mx.E");
  int rows = fx_int(fx, "mx.rows"), cols = fx_int(fx, "mx.cols");
  const float *x = fx_f32(fx, "mx.x"), *dy = fx_f32(fx, "mx.dy");
  const uint8_t *blocks = fx_raw(fx, "mx.blocks", FX_U8), *scales = fx_raw(fx, "mx.scales", FX_U8);
  const uint16_t *bias = fx_raw(fx, "mx.bias", FX_U16);
  const int32_t *experts = fx_i32(fx, "mx.experts");
  if (!x || !dy || !blocks || !scales || !bias || !experts) return;
  int m = n * k;
  int32_t *order = calloc((size_t)m, 4), *slot = calloc((size_t)m, 4),
          *offsets = calloc((size_t)E + 1, 4);
  host_moe_plan(order, slot, offsets, experts, n, k, E);
  mxl_mxfp4_weight W = {.blocks = blocks, .scales = scales, .bias = bias,
                        .blocks_stride = (size_t)rows * cols / 2,
                        .scales_stride = (size_t)rows * cols / 32, .bias_stride = (size_t)rows,
                        .rows = rows, .cols = cols, .n_experts = E,
                        .scale_bias = fx_int(fx, "mx.scale_bias")};
  mxl_moe_plan plan = {n, k, E, experts, NULL, order, slot, offsets, offsets};
  /* grouped rows: x_grouped[i] = x[order[i]] (x is per assignment) */
  float *xg = zeros_f((size_t)m * cols), *dyg = zeros_f((size_t)m * rows);
  for (int i = 0; i < m; i++) {
    memcpy(xg + (size_t)i * cols, x + (size_t)order[i] * cols, sizeof(float) * (size_t)cols);
    memcpy(dyg + (size_t)i * rows, dy + (size_t)order[i] * rows, sizeof(float) * (size_t)rows);
  }
  float *yg = zeros_f((size_t)m * rows), *dxg = zeros_f((size_t)m * cols);
  g_ref->ops->mxfp4_matmul(g_ref, yg, xg, &W, &plan);
  g_ref->ops->mxfp4_matmul_dx(g_ref, dxg, dyg, &W, &plan);
  float *y = zeros_f((size_t)m * rows), *dx = zeros_f((size_t)m * cols);
  for (int i = 0; i < m; i++) {
    memcpy(y + (size_t)order[i] * rows, yg + (size_t)i * rows, sizeof(float) * (size_t)rows);
    memcpy(dx + (size_t)order[i] * cols, dxg + (size_t)i * cols, sizeof(float) * (size_t)cols);
  }
  expect_torch(fx, "mxfp4_matmul y (torch dequant)", y, "mx.y");
  expect_torch(fx, "mxfp4_matmul dx", dx, "mx.dx");
  free(order), free(slot), free(offsets), free(xg), free(dyg), free(yg), free(dxg), free(y),
      free(dx);
}

static void fx_adamw(const fixture *fx) {
  int n = fx_int(fx, "adamw.n"), steps = fx_int(fx, "adamw.steps");
  const float *p0 = fx_f32(fx, "adamw.param0"), *grads = fx_f32(fx, "adamw.grads");
  const float *hp = fx_f32(fx, "adamw.hparams"); /* lr, b1, b2, eps, wd, grad_scale */
  if (!p0 || !grads || !hp) return;
  float *p = zeros_f((size_t)n), *m = zeros_f((size_t)n), *v = zeros_f((size_t)n);
  memcpy(p, p0, sizeof *p * (size_t)n);
  for (int s = 1; s <= steps; s++)
    g_ref->ops->adamw(g_ref, p, grads + (size_t)(s - 1) * n, m, v, (size_t)n, hp[0], hp[1],
                      hp[2], hp[3], hp[4], s, hp[5]);
  expect_torch(fx, "adamw param (torch.optim.AdamW)", p, "adamw.param");
  expect_torch(fx, "adamw exp_avg", m, "adamw.m");
  expect_torch(fx, "adamw exp_avg_sq", v, "adamw.v");
  free(p), free(m), free(v);
}

static void fx_dropout(const fixture *fx) {
  int n = fx_int(fx, "dropout.n");
  const float *x = fx_f32(fx, "dropout.x"), *p = fx_f32(fx, "dropout.p");
  const int32_t *seed = fx_i32(fx, "dropout.seed"); /* two u32 halves, low first */
  const float *want = fx_f32(fx, "dropout.y");
  if (!x || !p || !seed || !want) return;
  float *y = zeros_f((size_t)n);
  uint64_t s = (uint64_t)(uint32_t)seed[0] | (uint64_t)(uint32_t)seed[1] << 32;
  g_ref->ops->dropout(g_ref, y, x, (size_t)n, *p, s);
  MXL_CHECK_MSG(memcmp(y, want, sizeof *y * (size_t)n) == 0,
                "dropout differs bitwise from the Python splitmix64 mask");
  printf("%s %-34s %-7s bitwise\n", memcmp(y, want, sizeof *y * (size_t)n) == 0 ? "ok  " : "FAIL",
         "dropout mask (python splitmix64)", "torch");
  free(y);
}

static void test_torch_fixtures(void) {
  fixture fx;
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/fixtures/ops_torch.bin", MXL_SOURCE_DIR);
  MXL_CHECK_MSG(fixture_load(&fx, path) == 0, "%s", path);
  if (!fx.rec) return;
  fx_attention(&fx);
  fx_swiglu(&fx);
  fx_router(&fx);
  fx_rmsnorm(&fx);
  fx_rope(&fx);
  fx_xent(&fx);
  fx_mxfp4(&fx);
  fx_adamw(&fx);
  fx_dropout(&fx);
  fixture_free(&fx);
}

/* A truncated fixture is refused, not read past its end. */
static void test_fixture_truncated(void) {
  char src[1024], dst[] = "test_grad_truncated.bin";
  snprintf(src, sizeof src, "%s/tests/fixtures/ops_torch.bin", MXL_SOURCE_DIR);
  FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
  MXL_CHECK(in && out);
  if (in && out) {
    char buf[100];
    size_t got = fread(buf, 1, sizeof buf, in);
    fwrite(buf, 1, got, out);
  }
  if (in) fclose(in);
  if (out) fclose(out);
  fixture fx;
  fprintf(stderr, "(expected) ");
  MXL_CHECK(fixture_load(&fx, dst) == -1);
  remove(dst);
}

int main(void) {
  if (mxl_backend_ref_create(&g_ref) != MXL_OK) {
    fprintf(stderr, "ref backend: %s\n", mxl_last_error());
    return 1;
  }
  if (mxl_backend_cpu_create(0, &g_cpu) != MXL_OK) g_cpu = NULL;
  MXL_RUN(test_grad_rmsnorm);
  MXL_RUN(test_grad_matmul_bf16);
  MXL_RUN(test_grad_mxfp4_matmul);
  MXL_RUN(test_grad_rope);
  MXL_RUN(test_grad_attention);
  MXL_RUN(test_grad_router);
  MXL_RUN(test_grad_moe);
  MXL_RUN(test_grad_swiglu);
  MXL_RUN(test_grad_unembed_xent);
  MXL_RUN(test_grad_gemm);
  MXL_RUN(test_grad_lora);
  MXL_RUN(test_grad_dropout);
  MXL_RUN(test_torch_fixtures);
  MXL_RUN(test_fixture_truncated);
  MXL_CHECK_OK(g_ref->ops->sync(g_ref));
  mxl_backend_destroy(g_cpu);
  mxl_backend_destroy(g_ref);
  return mxl_test_summary("grad");
}
