/* test_cuda_ops: every compute op of the CUDA backend, run on the CPU
 * emulator (tests/cuda/cuda_emu_backend.h: the kernels of kernels/cuda
 * compiled for the host), against the ref oracle. No GPU needed.
 *
 * Each case (an op and its shapes, random inputs from a per-case seed) runs
 * once on ref and three times on the emulator, with a block's threads run
 * forward, reversed and shuffled between barriers. Checks:
 *   - outputs that the op overwrites start as NaN (so an element it forgets
 *     shows up), "+=" outputs start random and are compared as deltas (so
 *     overwriting instead of adding fails), in-place tensors as totals;
 *   - NaN where ref has none fails, Inf must match, then the normalised MSE
 *     Σ(b − r)² / Σr² must be under the op's threshold; integer outputs
 *     and the exact ops must match ref bitwise;
 *   - every buffer sits between guard bytes that must come back unchanged,
 *     and inputs must come back unchanged;
 *   - the three thread orders must give the same bits: the kernels use no
 *     atomics and fixed reduction trees, so any difference is a race.
 *
 * Thresholds are tests/test_ops.c's for fp32-activation backends: exact for
 * embed, moe_gather, moe_plan, router experts, add, dropout; 1e-8 for the
 * elementwise ops and short reductions; 1e-7 attention; 1e-8 adamw; 1e-9
 * relative for sum_squares; and for the matmuls (bf16, MXFP4, gemm_f32,
 * unembed_xent) test_ops' exact-mode 1e-8, not the 5e-4 a bf16 fast path
 * may use: these kernels keep activations in fp32.
 *
 * Further: argument errors reported through sync, a few mutants the
 * harness must catch, and every op of both tables (emulated and device)
 * filled. Shapes are smaller than test_ops' where the emulator (a few µs
 * per thread switch) would be slow; test_ops runs the device on its own
 * shapes when a GPU is present. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/ops.h"
#include "ops_util.h"
#include "test.h"
#include "tests/cuda/cuda_emu_backend.h"

enum { MAX_TENSORS = 16, GUARD = 64, N_ORDERS = 3 };

typedef enum dtype { F32, I32, U16, U8 } dtype;

/* IN: read only. OUT: overwritten. ACC: "+=" (deltas). INOUT: in place. */
typedef enum role { IN, OUT, ACC, INOUT } role;

typedef struct tensor {
  const char *name;
  dtype type;
  role role;
  size_t count;   /* elements */
  void *data;     /* initial contents (host) */
  size_t nan_pad; /* NaN elements ref leaves on purpose (gemm row padding) */
} tensor;

/* Shape and variant parameters; each op reads the ones it needs. */
typedef struct shape {
  int n, H, V, E, k, rows, cols, I;
  int nq, nk, nh, nkv, d, window, segs;
  mask_kind mask;
  int M, N, K, tA, tB, pad;
  float alpha, beta;
  int bias, interleaved, inverse, scale_bias, metal, nulls, ties, inplace, step;
  float wd, p;
  int big;   /* attention: large scores and sinks */
  int chunk; /* unembed_xent vocabulary rows per chunk (0: automatic) */
} shape;

typedef struct op_case op_case;

typedef struct op_def {
  const char *name;
  double nmse; /* < 0: bitwise */
  void (*setup)(op_case *c, test_rng *r, mxl_backend *ref);
  void (*run)(mxl_backend *be, op_case *c, void *const *dev);
} op_def;

struct op_case {
  const op_def *op;
  shape s;
  tensor t[MAX_TENSORS];
  int nt;
  double scalar; /* a result returned by value (sum_squares) */
};

/* ------------------------------------------------------------ tensors */

static size_t dtype_size(dtype t) { return t == F32 || t == I32 ? 4 : t == U16 ? 2 : 1; }
static size_t tensor_bytes(const tensor *t) { return t->count * dtype_size(t->type); }

static void *add_tensor(op_case *c, const char *name, dtype type, role role, size_t count) {
  if (c->nt == MAX_TENSORS) abort();
  tensor *t = &c->t[c->nt++];
  *t = (tensor){name, type, role, count, calloc(count ? count : 1, dtype_size(type)), 0};
  if (!t->data) abort();
  if (role == OUT) {
    if (type == F32)
      for (size_t i = 0; i < count; i++) ((float *)t->data)[i] = NAN;
    else
      memset(t->data, 0xA5, tensor_bytes(t));
  }
  return t->data;
}

static float *add_f32(op_case *c, const char *name, role role, size_t count) {
  return add_tensor(c, name, F32, role, count);
}
static int32_t *add_i32(op_case *c, const char *name, role role, size_t count) {
  return add_tensor(c, name, I32, role, count);
}
static float *add_random(op_case *c, test_rng *r, const char *name, role role, size_t count,
                         double lo, double hi) {
  float *x = add_f32(c, name, role, count);
  rng_fill_f32(r, x, count, lo, hi);
  return x;
}
static uint16_t *add_bf16(op_case *c, test_rng *r, const char *name, size_t count, double lo,
                          double hi) {
  uint16_t *x = add_tensor(c, name, U16, IN, count);
  rng_fill_bf16(r, x, count, lo, hi);
  return x;
}

static int tensor_index(const op_case *c, const char *name) {
  for (int i = 0; i < c->nt; i++)
    if (strcmp(c->t[i].name, name) == 0) return i;
  return -1;
}

/* The backend pointer of a tensor, or NULL when the case has none. */
static void *dev_ptr(const op_case *c, void *const *dev, const char *name) {
  int i = tensor_index(c, name);
  return i < 0 ? NULL : dev[i];
}
static void *host_ptr(const op_case *c, const char *name) {
  int i = tensor_index(c, name);
  return i < 0 ? NULL : c->t[i].data;
}
#define D(name) dev_ptr(c, dev, name)

static void case_free(op_case *c) {
  for (int i = 0; i < c->nt; i++) free(c->t[i].data);
  c->nt = 0;
}

/* ------------------------------------------------------------ shared inputs */

/* experts, weights, order, slot, offsets of a plan (the tests' counting sort). */
static void add_plan(op_case *c, test_rng *r, int n, int k, int E) {
  size_t m = (size_t)n * k;
  int32_t *experts = add_i32(c, "experts", IN, m);
  rng_fill_f32(r, add_f32(c, "weights", IN, m), m, 0.05, 1);
  int32_t *order = add_i32(c, "order", IN, m), *slot = add_i32(c, "slot", IN, m);
  int32_t *offsets = add_i32(c, "offsets", IN, (size_t)E + 1);
  rng_experts(r, experts, n, k, E);
  host_moe_plan(order, slot, offsets, experts, n, k, E);
}

static mxl_moe_plan plan_of(const op_case *c, void *const *dev) {
  const shape *s = &c->s;
  return (mxl_moe_plan){s->n, s->k, s->E, D("experts"), D("weights"), D("order"),
                        D("slot"), D("offsets"), host_ptr(c, "offsets")};
}

/* w bf16 [rows, cols] and, with s->bias, b [rows]. */
static void add_bf16_weight(op_case *c, test_rng *r) {
  const shape *s = &c->s;
  add_bf16(c, r, "w", (size_t)s->rows * s->cols, -0.5, 0.5);
  if (s->bias) add_bf16(c, r, "b", (size_t)s->rows, -1, 1);
}

static mxl_bf16_weight bf16_weight_of(const op_case *c, void *const *dev) {
  return (mxl_bf16_weight){D("w"), D("b"), c->s.rows, c->s.cols};
}

/* MXFP4 experts [E, rows, cols]: HF layout (blocks, scales, bias tensors,
 * experts contiguous), or with s->metal one buffer where each expert's
 * blocks, scales and bias sit side by side in a region 48 bytes larger than
 * the data (strides larger than the data, junk between experts). */
static size_t mx_blocks_bytes(const shape *s) { return (size_t)s->rows * s->cols / 2; }
static size_t mx_scales_bytes(const shape *s) { return (size_t)s->rows * s->cols / 32; }
static size_t mx_bias_at(const shape *s) {
  return (mx_blocks_bytes(s) + mx_scales_bytes(s) + 1) & ~(size_t)1;
}
static size_t mx_region(const shape *s) { return mx_bias_at(s) + (size_t)s->rows * 2 + 48; }

static void add_mxfp4_weight(op_case *c, test_rng *r) {
  const shape *s = &c->s;
  size_t nb = mx_blocks_bytes(s), ns = mx_scales_bytes(s);
  if (s->metal) {
    uint8_t *buf = add_tensor(c, "wbuf", U8, IN, mx_region(s) * s->E);
    for (int e = 0; e < s->E; e++) {
      uint8_t *base = buf + mx_region(s) * e;
      rng_fill_mxfp4(r, base, base + nb, s->rows, s->cols, s->scale_bias);
      rng_fill_bf16(r, (uint16_t *)(void *)(base + mx_bias_at(s)), (size_t)s->rows, -1, 1);
      memset(base + mx_region(s) - 48, 0xEE, 48);
    }
    return;
  }
  uint8_t *blocks = add_tensor(c, "blocks", U8, IN, nb * s->E);
  uint8_t *scales = add_tensor(c, "scales", U8, IN, ns * s->E);
  for (int e = 0; e < s->E; e++)
    rng_fill_mxfp4(r, blocks + nb * e, scales + ns * e, s->rows, s->cols, s->scale_bias);
  if (s->bias) add_bf16(c, r, "bias", (size_t)s->E * s->rows, -1, 1);
}

static mxl_mxfp4_weight mxfp4_weight_of(const op_case *c, void *const *dev) {
  const shape *s = &c->s;
  mxl_mxfp4_weight W = {0};
  W.rows = s->rows;
  W.cols = s->cols;
  W.n_experts = s->E;
  W.scale_bias = s->scale_bias;
  if (s->metal) {
    const uint8_t *buf = D("wbuf");
    W.blocks = buf;
    W.scales = buf + mx_blocks_bytes(s);
    W.bias = s->bias ? (const uint16_t *)(const void *)(buf + mx_bias_at(s)) : NULL;
    W.blocks_stride = W.scales_stride = mx_region(s);
    W.bias_stride = mx_region(s) / 2;
  } else {
    W.blocks = D("blocks");
    W.scales = D("scales");
    W.bias = D("bias");
    W.blocks_stride = mx_blocks_bytes(s);
    W.scales_stride = mx_scales_bytes(s);
    W.bias_stride = (size_t)s->rows;
  }
  return W;
}

/* q, k, v, sinks and the mask arrays. */
static void add_attention_inputs(op_case *c, test_rng *r) {
  const shape *s = &c->s;
  size_t nqd = (size_t)s->nq * s->nh * s->d, nkd = (size_t)s->nk * s->nkv * s->d;
  float *q = add_f32(c, "q", IN, nqd), *k = add_f32(c, "k", IN, nkd);
  float *v = add_f32(c, "v", IN, nkd);
  double qs = s->big ? 3.0 : 1.0;
  for (size_t i = 0; i < nqd; i++) q[i] = (float)(qs * rng_normal(r));
  for (size_t i = 0; i < nkd; i++) {
    k[i] = (float)rng_normal(r);
    v[i] = (float)rng_normal(r);
  }
  add_bf16(c, r, "sinks", (size_t)s->nh, s->big ? 2 : -2, s->big ? 6 : 2);
  build_mask(s->mask, s->segs, add_i32(c, "q_pos", IN, (size_t)s->nq),
             add_i32(c, "q_seg", IN, (size_t)s->nq), add_i32(c, "k_pos", IN, (size_t)s->nk),
             add_i32(c, "k_seg", IN, (size_t)s->nk), s->nq, s->nk);
}

static mxl_attn_mask mask_of(const op_case *c, void *const *dev) {
  return (mxl_attn_mask){D("q_pos"), D("q_seg"), D("k_pos"), D("k_seg"), c->s.window};
}

static float attn_scale(const shape *s) { return 1.0f / sqrtf((float)s->d); }

/* ------------------------------------------------------------ ops */

static void setup_embed(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  add_f32(c, "x", OUT, (size_t)s->n * s->H);
  add_bf16(c, r, "table", (size_t)s->V * s->H, -2, 2);
  int32_t *ids = add_i32(c, "ids", IN, (size_t)s->n);
  for (int t = 0; t < s->n; t++) ids[t] = t == 0 ? s->V - 1 : rng_int(r, s->V);
}
static void run_embed(mxl_backend *be, op_case *c, void *const *dev) {
  be->ops->embed(be, D("x"), D("table"), D("ids"), c->s.n, c->s.H);
}

static void setup_rmsnorm(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  add_f32(c, "y", OUT, (size_t)s->n * s->H);
  if (!(s->nulls & 1)) add_f32(c, "rstd", OUT, (size_t)s->n);
  add_random(c, r, "x", IN, (size_t)s->n * s->H, -3, 3);
  add_bf16(c, r, "g", (size_t)s->H, 0.5, 1.5);
}
static void run_rmsnorm(mxl_backend *be, op_case *c, void *const *dev) {
  be->ops->rmsnorm(be, D("y"), D("rstd"), D("x"), D("g"), c->s.n, c->s.H, 1e-5f);
}

static void setup_rmsnorm_bwd(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  size_t nH = (size_t)s->n * s->H;
  add_random(c, r, "dx", ACC, nH, -1, 1);
  add_random(c, r, "dy", IN, nH, -1, 1);
  float *x = add_random(c, r, "x", IN, nH, -3, 3), *rstd = add_f32(c, "rstd", IN, (size_t)s->n);
  for (int t = 0; t < s->n; t++) {
    double ss = 0;
    for (int j = 0; j < s->H; j++) ss += (double)x[t * s->H + j] * x[t * s->H + j];
    rstd[t] = (float)(1.0 / sqrt(ss / s->H + 1e-5));
  }
  add_bf16(c, r, "g", (size_t)s->H, 0.5, 1.5);
}
static void run_rmsnorm_bwd(mxl_backend *be, op_case *c, void *const *dev) {
  be->ops->rmsnorm_bwd(be, D("dx"), D("dy"), D("x"), D("rstd"), D("g"), c->s.n, c->s.H, 1e-5f);
}

static void setup_matmul_bf16(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  add_f32(c, "y", OUT, (size_t)s->n * s->rows);
  add_random(c, r, "x", IN, (size_t)s->n * s->cols, -1, 1);
  add_bf16_weight(c, r);
}
static void run_matmul_bf16(mxl_backend *be, op_case *c, void *const *dev) {
  mxl_bf16_weight W = bf16_weight_of(c, dev);
  be->ops->matmul_bf16(be, D("y"), D("x"), &W, c->s.n);
}

static void setup_matmul_bf16_dx(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  add_random(c, r, "dx", ACC, (size_t)s->n * s->cols, -1, 1);
  add_random(c, r, "dy", IN, (size_t)s->n * s->rows, -1, 1);
  add_bf16_weight(c, r);
}
static void run_matmul_bf16_dx(mxl_backend *be, op_case *c, void *const *dev) {
  mxl_bf16_weight W = bf16_weight_of(c, dev);
  be->ops->matmul_bf16_dx(be, D("dx"), D("dy"), &W, c->s.n);
}

/* gemm_f32 row strides: the natural width plus s->pad. */
static int gemm_lda(const shape *s) { return (s->tA ? s->M : s->K) + s->pad; }
static int gemm_ldb(const shape *s) { return (s->tB ? s->K : s->N) + s->pad; }
static int gemm_ldc(const shape *s) { return s->N + s->pad; }

static void setup_gemm_f32(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  size_t na = (size_t)(s->tA ? s->K : s->M) * gemm_lda(s);
  size_t nb = (size_t)(s->tB ? s->N : s->K) * gemm_ldb(s), nc = (size_t)s->M * gemm_ldc(s);
  add_random(c, r, "A", IN, na, -1, 1);
  add_random(c, r, "B", IN, nb, -1, 1);
  if (s->beta == 0) {
    add_f32(c, "C", OUT, nc); /* NaN: beta == 0 must not read C */
    c->t[c->nt - 1].nan_pad = (size_t)s->M * s->pad;
  } else {
    add_random(c, r, "C", INOUT, nc, -1, 1);
  }
}
static void run_gemm_f32(mxl_backend *be, op_case *c, void *const *dev) {
  const shape *s = &c->s;
  be->ops->gemm_f32(be, s->tA, s->tB, s->M, s->N, s->K, s->alpha, D("A"), gemm_lda(s), D("B"),
                    gemm_ldb(s), s->beta, D("C"), gemm_ldc(s));
}

static void setup_rope(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  add_random(c, r, "x", INOUT, (size_t)s->n * s->nh * s->d, -2, 2);
  int32_t *pos = add_i32(c, "pos", IN, (size_t)s->n);
  for (int t = 0; t < s->n; t++) pos[t] = t == 0 ? 0 : t == 1 ? 131071 : rng_int(r, 131072);
  rope_table(add_f32(c, "inv_freq", IN, (size_t)s->d / 2), s->d);
}
static void run_rope(mxl_backend *be, op_case *c, void *const *dev) {
  const shape *s = &c->s;
  be->ops->rope(be, D("x"), s->n, s->nh, s->d, D("pos"), D("inv_freq"), 1.3465736f,
                s->interleaved, s->inverse);
}

static void setup_attention(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  add_f32(c, "out", OUT, (size_t)s->nq * s->nh * s->d);
  if (!(s->nulls & 1)) add_f32(c, "lse", OUT, (size_t)s->nq * s->nh);
  add_attention_inputs(c, r);
}
static void run_attention(mxl_backend *be, op_case *c, void *const *dev) {
  const shape *s = &c->s;
  mxl_attn_mask mask = mask_of(c, dev);
  be->ops->attention(be, D("out"), D("lse"), D("q"), D("k"), D("v"), D("sinks"), &mask, s->nq,
                     s->nk, s->nh, s->nkv, s->d, attn_scale(s));
}

/* out and lse of the backward come from ref's forward: inputs, the same
 * for every backend. */
static void setup_attention_bwd(op_case *c, test_rng *r, mxl_backend *ref) {
  const shape *s = &c->s;
  size_t nqd = (size_t)s->nq * s->nh * s->d, nkd = (size_t)s->nk * s->nkv * s->d;
  add_random(c, r, "dq", ACC, nqd, -1, 1);
  add_random(c, r, "dk", ACC, nkd, -1, 1);
  add_random(c, r, "dv", ACC, nkd, -1, 1);
  add_random(c, r, "dout", IN, nqd, -1, 1);
  float *out = add_f32(c, "out", IN, nqd), *lse = add_f32(c, "lse", IN, (size_t)s->nq * s->nh);
  add_attention_inputs(c, r);
  void *host[MAX_TENSORS];
  for (int i = 0; i < c->nt; i++) host[i] = c->t[i].data;
  mxl_attn_mask mask = mask_of(c, host);
  ref->ops->attention(ref, out, lse, host_ptr(c, "q"), host_ptr(c, "k"), host_ptr(c, "v"),
                      host_ptr(c, "sinks"), &mask, s->nq, s->nk, s->nh, s->nkv, s->d,
                      attn_scale(s));
}
static void run_attention_bwd(mxl_backend *be, op_case *c, void *const *dev) {
  const shape *s = &c->s;
  mxl_attn_mask mask = mask_of(c, dev);
  be->ops->attention_bwd(be, D("dq"), D("dk"), D("dv"), D("dout"), D("out"), D("lse"), D("q"),
                         D("k"), D("v"), D("sinks"), &mask, s->nq, s->nk, s->nh, s->nkv, s->d,
                         attn_scale(s));
}

static void setup_router_topk(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  float *logits = add_f32(c, "logits", IN, (size_t)s->n * s->E);
  for (int i = 0; i < s->n * s->E; i++)
    logits[i] = s->ties ? (float)(rng_int(r, 5) - 2) * 0.5f : (float)(2 * rng_normal(r));
  add_i32(c, "experts", OUT, (size_t)s->n * s->k);
  add_f32(c, "weights", OUT, (size_t)s->n * s->k);
}
static void run_router_topk(mxl_backend *be, op_case *c, void *const *dev) {
  be->ops->router_topk(be, D("experts"), D("weights"), D("logits"), c->s.n, c->s.E, c->s.k);
}

static void setup_router_bwd(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  size_t nk = (size_t)s->n * s->k;
  add_random(c, r, "dlogits", ACC, (size_t)s->n * s->E, -1, 1);
  add_random(c, r, "dweights", IN, nk, -1, 1);
  add_random(c, r, "weights", IN, nk, 0.05, 1);
  rng_experts(r, add_i32(c, "experts", IN, nk), s->n, s->k, s->E);
}
static void run_router_bwd(mxl_backend *be, op_case *c, void *const *dev) {
  be->ops->router_bwd(be, D("dlogits"), D("dweights"), D("weights"), D("experts"), c->s.n,
                      c->s.E, c->s.k);
}

static void setup_moe_plan(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  size_t nk = (size_t)s->n * s->k;
  rng_experts(r, add_i32(c, "experts", IN, nk), s->n, s->k, s->E);
  add_i32(c, "order", OUT, nk);
  add_i32(c, "slot", OUT, nk);
  add_i32(c, "offsets", OUT, (size_t)s->E + 1);
}
static void run_moe_plan(mxl_backend *be, op_case *c, void *const *dev) {
  be->ops->moe_plan(be, D("order"), D("slot"), D("offsets"), D("experts"), c->s.n, c->s.k,
                    c->s.E);
}

static void setup_moe_gather(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  add_f32(c, "xs", OUT, (size_t)s->n * s->k * s->H);
  add_random(c, r, "x", IN, (size_t)s->n * s->H, -1, 1);
  add_plan(c, r, s->n, s->k, s->E);
}
static void run_moe_gather(mxl_backend *be, op_case *c, void *const *dev) {
  mxl_moe_plan plan = plan_of(c, dev);
  be->ops->moe_gather(be, D("xs"), D("x"), &plan, c->s.H);
}

static void setup_moe_gather_bwd(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  size_t m = (size_t)s->n * s->k;
  add_random(c, r, "dx", ACC, (size_t)s->n * s->H, -1, 1);
  add_random(c, r, "dxs", IN, m * s->H, -1, 1);
  add_plan(c, r, s->n, s->k, s->E);
}
static void run_moe_gather_bwd(mxl_backend *be, op_case *c, void *const *dev) {
  mxl_moe_plan plan = plan_of(c, dev);
  be->ops->moe_gather_bwd(be, D("dx"), D("dxs"), &plan, c->s.H);
}

static void setup_mxfp4_matmul(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  size_t m = (size_t)s->n * s->k;
  add_f32(c, "y", OUT, m * s->rows);
  add_random(c, r, "x", IN, m * s->cols, -1, 1);
  add_plan(c, r, s->n, s->k, s->E);
  add_mxfp4_weight(c, r);
}
static void run_mxfp4_matmul(mxl_backend *be, op_case *c, void *const *dev) {
  mxl_moe_plan plan = plan_of(c, dev);
  mxl_mxfp4_weight W = mxfp4_weight_of(c, dev);
  be->ops->mxfp4_matmul(be, D("y"), D("x"), &W, &plan);
}

static void setup_mxfp4_matmul_dx(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  size_t m = (size_t)s->n * s->k;
  add_random(c, r, "dx", ACC, m * s->cols, -1, 1);
  add_random(c, r, "dy", IN, m * s->rows, -1, 1);
  add_plan(c, r, s->n, s->k, s->E);
  add_mxfp4_weight(c, r);
}
static void run_mxfp4_matmul_dx(mxl_backend *be, op_case *c, void *const *dev) {
  mxl_moe_plan plan = plan_of(c, dev);
  mxl_mxfp4_weight W = mxfp4_weight_of(c, dev);
  be->ops->mxfp4_matmul_dx(be, D("dx"), D("dy"), &W, &plan);
}

/* h in [-10, 10] with lanes exactly at ±limit (7) and just beside it. */
static float *add_swiglu_h(op_case *c, test_rng *r, size_t n) {
  const float special[] = {7.0f, -7.0f, 7.0001f, -7.0001f, 6.9999f, 0.0f};
  float *h = add_f32(c, "h", IN, n);
  for (size_t i = 0; i < n; i++)
    h[i] = rng_int(r, 4) == 0 ? special[rng_int(r, 6)] : (float)rng_uniform(r, -10, 10);
  return h;
}

static void setup_swiglu(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  add_f32(c, "act", OUT, (size_t)c->s.n * c->s.I);
  add_swiglu_h(c, r, (size_t)c->s.n * 2 * c->s.I);
}
static void run_swiglu(mxl_backend *be, op_case *c, void *const *dev) {
  be->ops->swiglu(be, D("act"), D("h"), c->s.n, c->s.I, 1.702f, 7.0f);
}

static void setup_swiglu_bwd(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  add_random(c, r, "dh", ACC, (size_t)s->n * 2 * s->I, -1, 1);
  add_random(c, r, "dact", IN, (size_t)s->n * s->I, -1, 1);
  add_swiglu_h(c, r, (size_t)s->n * 2 * s->I);
}
static void run_swiglu_bwd(mxl_backend *be, op_case *c, void *const *dev) {
  be->ops->swiglu_bwd(be, D("dh"), D("dact"), D("h"), c->s.n, c->s.I, 1.702f, 7.0f);
}

static void setup_moe_combine(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  add_random(c, r, "out", ACC, (size_t)s->n * s->H, -1, 1);
  add_random(c, r, "ys", IN, (size_t)s->n * s->k * s->H, -1, 1);
  add_plan(c, r, s->n, s->k, s->E);
}
static void run_moe_combine(mxl_backend *be, op_case *c, void *const *dev) {
  mxl_moe_plan plan = plan_of(c, dev);
  be->ops->moe_combine(be, D("out"), D("ys"), &plan, c->s.H);
}

static void setup_moe_combine_bwd(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  size_t m = (size_t)s->n * s->k;
  add_random(c, r, "dys", ACC, m * s->H, -1, 1);
  add_random(c, r, "dweights", ACC, m, -1, 1);
  add_random(c, r, "dout", IN, (size_t)s->n * s->H, -1, 1);
  add_random(c, r, "ys", IN, m * s->H, -1, 1);
  add_plan(c, r, s->n, s->k, s->E);
}
static void run_moe_combine_bwd(mxl_backend *be, op_case *c, void *const *dev) {
  mxl_moe_plan plan = plan_of(c, dev);
  be->ops->moe_combine_bwd(be, D("dys"), D("dweights"), D("dout"), D("ys"), &plan, c->s.H);
}

static void setup_add(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  add_random(c, r, "y", ACC, (size_t)c->s.n, -1, 1);
  add_random(c, r, "x", IN, (size_t)c->s.n, -1, 1);
}
static void run_add(mxl_backend *be, op_case *c, void *const *dev) {
  be->ops->add(be, D("y"), D("x"), (size_t)c->s.n);
}

static void setup_dropout(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  size_t n = (size_t)c->s.n;
  if (!c->s.inplace) add_f32(c, "y", OUT, n);
  add_random(c, r, "x", c->s.inplace ? INOUT : IN, n, -1, 1);
}
static void run_dropout(mxl_backend *be, op_case *c, void *const *dev) {
  float *x = D("x"), *y = c->s.inplace ? x : D("y");
  be->ops->dropout(be, y, x, (size_t)c->s.n, c->s.p, 0x5EEDull + (uint64_t)c->s.n);
}

static void setup_unembed_xent(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  if (!(s->nulls & 1)) add_f32(c, "loss", OUT, (size_t)s->n);
  if (!(s->nulls & 2)) add_random(c, r, "dh", ACC, (size_t)s->n * s->cols, -1, 1);
  add_random(c, r, "h", IN, (size_t)s->n * s->cols, -2, 2);
  add_bf16_weight(c, r);
  int32_t *targets = add_i32(c, "targets", IN, (size_t)s->n);
  float *weight = add_f32(c, "weight", IN, (size_t)s->n);
  for (int t = 0; t < s->n; t++) {
    targets[t] = t == 0 ? s->rows - 1 : rng_int(r, s->rows);
    weight[t] = (t % 3 == 2) ? 0.0f : (float)rng_uniform(r, 0.1, 2);
  }
}
static void run_unembed_xent(mxl_backend *be, op_case *c, void *const *dev) {
  mxl_bf16_weight W = bf16_weight_of(c, dev);
  be->ops->unembed_xent(be, D("loss"), D("dh"), D("h"), &W, D("targets"), D("weight"), c->s.n);
}

static void setup_adamw(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  size_t n = (size_t)c->s.n;
  add_random(c, r, "param", ACC, n, -1, 1);
  add_random(c, r, "grad", IN, n, -1, 1);
  float *m = add_random(c, r, "m", ACC, n, -0.1, 0.1), *v = add_random(c, r, "v", ACC, n, 0, 0.01);
  if (c->s.step == 1) { /* the first step starts from zero moments */
    memset(m, 0, n * sizeof *m);
    memset(v, 0, n * sizeof *v);
  }
}
static void run_adamw(mxl_backend *be, op_case *c, void *const *dev) {
  be->ops->adamw(be, D("param"), D("grad"), D("m"), D("v"), (size_t)c->s.n, 1e-3f, 0.9f, 0.999f,
                 1e-8f, c->s.wd, c->s.step, 0.5f);
}

static void setup_sum_squares(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  add_random(c, r, "x", IN, (size_t)c->s.n, -3, 3);
}
static void run_sum_squares(mxl_backend *be, op_case *c, void *const *dev) {
  c->scalar = be->ops->sum_squares(be, D("x"), (size_t)c->s.n);
}

/* ------------------------------------------------------------ op table */

enum {
  EMBED, RMSNORM, MATMUL_BF16, GEMM_F32, ROPE, ATTENTION, ROUTER_TOPK, MOE_PLAN, MOE_GATHER,
  MXFP4_MATMUL, SWIGLU, MOE_COMBINE, ADD, DROPOUT, UNEMBED_XENT, RMSNORM_BWD, MATMUL_BF16_DX,
  ATTENTION_BWD, ROUTER_BWD, MOE_GATHER_BWD, MXFP4_MATMUL_DX, SWIGLU_BWD, MOE_COMBINE_BWD,
  ADAMW, SUM_SQUARES, N_OPS
};

#define EXACT -1.0
#define MATMUL 1e-8 /* test_ops' exact-mode matmul threshold (see the file comment) */
#define OP(id, field, nmse) [id] = {#field, nmse, setup_##field, run_##field}

static const op_def op_defs[N_OPS] = {
    OP(EMBED, embed, EXACT),
    OP(RMSNORM, rmsnorm, 1e-8),
    OP(MATMUL_BF16, matmul_bf16, MATMUL),
    OP(GEMM_F32, gemm_f32, MATMUL),
    OP(ROPE, rope, 1e-8),
    OP(ATTENTION, attention, 1e-7),
    OP(ROUTER_TOPK, router_topk, 1e-8),
    OP(MOE_PLAN, moe_plan, EXACT),
    OP(MOE_GATHER, moe_gather, EXACT),
    OP(MXFP4_MATMUL, mxfp4_matmul, MATMUL),
    OP(SWIGLU, swiglu, 1e-8),
    OP(MOE_COMBINE, moe_combine, 1e-8),
    OP(ADD, add, EXACT),
    OP(DROPOUT, dropout, EXACT),
    OP(UNEMBED_XENT, unembed_xent, MATMUL),
    OP(RMSNORM_BWD, rmsnorm_bwd, 1e-8),
    OP(MATMUL_BF16_DX, matmul_bf16_dx, MATMUL),
    OP(ATTENTION_BWD, attention_bwd, 1e-7),
    OP(ROUTER_BWD, router_bwd, 1e-8),
    OP(MOE_GATHER_BWD, moe_gather_bwd, 1e-8),
    OP(MXFP4_MATMUL_DX, mxfp4_matmul_dx, MATMUL),
    OP(SWIGLU_BWD, swiglu_bwd, 1e-8),
    OP(MOE_COMBINE_BWD, moe_combine_bwd, 1e-8),
    OP(ADAMW, adamw, 1e-8),
    OP(SUM_SQUARES, sum_squares, 1e-9),
};

/* ------------------------------------------------------------ cases */

typedef struct case_spec {
  int op;
  shape s;
} case_spec;

#define C(id, ...) {id, {__VA_ARGS__}}

static const case_spec cases[] = {
    C(EMBED, .n = 1, .H = 7, .V = 5),
    C(EMBED, .n = 13, .H = 64, .V = 50),

    C(RMSNORM, .n = 1, .H = 7),
    C(RMSNORM, .n = 5, .H = 300), /* rows longer than the block */
    C(RMSNORM, .n = 3, .H = 2880),
    C(RMSNORM, .n = 4, .H = 33, .nulls = 1),
    C(RMSNORM_BWD, .n = 1, .H = 7),
    C(RMSNORM_BWD, .n = 5, .H = 300),
    C(RMSNORM_BWD, .n = 3, .H = 2880),

    /* matmuls: single elements, partial tiles, several tiles each way */
    C(MATMUL_BF16, .n = 1, .rows = 5, .cols = 7),
    C(MATMUL_BF16, .n = 7, .rows = 33, .cols = 64, .bias = 1),
    C(MATMUL_BF16, .n = 16, .rows = 64, .cols = 2880, .bias = 1),
    C(MATMUL_BF16, .n = 70, .rows = 129, .cols = 31),
    C(MATMUL_BF16_DX, .n = 1, .rows = 5, .cols = 7),
    C(MATMUL_BF16_DX, .n = 7, .rows = 33, .cols = 64, .bias = 1),
    C(MATMUL_BF16_DX, .n = 16, .rows = 64, .cols = 2880),
    C(MATMUL_BF16_DX, .n = 70, .rows = 100, .cols = 130),

    /* gemm_f32: the LoRA products at odd sizes, all four transposes, padded
     * strides, beta 0 (C not read) and not, several tiles */
    C(GEMM_F32, .M = 9, .N = 4, .K = 64, .tB = 1, .alpha = 1, .beta = 0),
    C(GEMM_F32, .M = 9, .N = 33, .K = 4, .tB = 1, .alpha = 2, .beta = 1),
    C(GEMM_F32, .M = 33, .N = 4, .K = 9, .tA = 1, .alpha = 2, .beta = 1),
    C(GEMM_F32, .M = 4, .N = 64, .K = 9, .tA = 1, .alpha = 1, .beta = 1),
    C(GEMM_F32, .M = 9, .N = 64, .K = 4, .alpha = 1, .beta = 1),
    C(GEMM_F32, .M = 7, .N = 5, .K = 3, .tA = 1, .tB = 1, .alpha = 0.5f, .beta = -0.5f),
    C(GEMM_F32, .M = 1, .N = 1, .K = 1, .alpha = 1, .beta = 0),
    C(GEMM_F32, .M = 13, .N = 11, .K = 17, .pad = 3, .alpha = 1, .beta = 0),
    C(GEMM_F32, .M = 13, .N = 11, .K = 17, .tA = 1, .tB = 1, .pad = 5, .alpha = -1, .beta = 2),
    C(GEMM_F32, .M = 70, .N = 130, .K = 100, .tA = 1, .pad = 2, .alpha = 1, .beta = 0.5f),
    C(GEMM_F32, .M = 65, .N = 66, .K = 33, .tB = 1, .alpha = 1.5f, .beta = 0),

    C(ROPE, .n = 1, .nh = 1, .d = 8),
    C(ROPE, .n = 9, .nh = 3, .d = 64),
    C(ROPE, .n = 9, .nh = 3, .d = 64, .inverse = 1),
    C(ROPE, .n = 5, .nh = 2, .d = 64, .interleaved = 1),
    C(ROPE, .n = 5, .nh = 2, .d = 16, .interleaved = 1, .inverse = 1),
    C(ROPE, .n = 300, .nh = 1, .d = 128), /* 300 positions up to 131071 */

    /* attention: 1 token; GQA 1, 2, 8; windows; packed documents; KV-cache
     * slots with empty entries; a query that sees no key; dominant sinks;
     * the largest head dim; several query and key tiles */
    C(ATTENTION, .nq = 1, .nk = 1, .nh = 1, .nkv = 1, .d = 8, .mask = MASK_CAUSAL),
    C(ATTENTION, .nq = 17, .nk = 17, .nh = 4, .nkv = 4, .d = 16, .mask = MASK_CAUSAL),
    C(ATTENTION, .nq = 40, .nk = 40, .nh = 4, .nkv = 2, .d = 32, .window = 8,
      .mask = MASK_CAUSAL),
    C(ATTENTION, .nq = 30, .nk = 30, .nh = 8, .nkv = 1, .d = 64, .window = 5,
      .mask = MASK_PACKED, .segs = 3),
    C(ATTENTION, .nq = 1, .nk = 48, .nh = 8, .nkv = 2, .d = 64, .window = 16,
      .mask = MASK_KVCACHE),
    C(ATTENTION, .nq = 5, .nk = 33, .nh = 8, .nkv = 8, .d = 64, .mask = MASK_KVCACHE),
    C(ATTENTION, .nq = 6, .nk = 6, .nh = 2, .nkv = 1, .d = 8, .mask = MASK_ORPHAN, .nulls = 1),
    C(ATTENTION, .nq = 12, .nk = 12, .nh = 4, .nkv = 2, .d = 64, .mask = MASK_PACKED,
      .segs = 4, .big = 1),
    C(ATTENTION, .nq = 20, .nk = 20, .nh = 2, .nkv = 1, .d = 128, .mask = MASK_CAUSAL),
    C(ATTENTION, .nq = 70, .nk = 70, .nh = 2, .nkv = 2, .d = 24, .window = 40,
      .mask = MASK_PACKED, .segs = 2),
    C(ATTENTION_BWD, .nq = 1, .nk = 1, .nh = 1, .nkv = 1, .d = 8, .mask = MASK_CAUSAL),
    C(ATTENTION_BWD, .nq = 17, .nk = 17, .nh = 4, .nkv = 4, .d = 16, .mask = MASK_CAUSAL),
    C(ATTENTION_BWD, .nq = 40, .nk = 40, .nh = 4, .nkv = 2, .d = 32, .window = 8,
      .mask = MASK_CAUSAL),
    C(ATTENTION_BWD, .nq = 30, .nk = 30, .nh = 8, .nkv = 1, .d = 64, .window = 5,
      .mask = MASK_PACKED, .segs = 3),
    C(ATTENTION_BWD, .nq = 5, .nk = 33, .nh = 8, .nkv = 2, .d = 64, .window = 16,
      .mask = MASK_KVCACHE),
    C(ATTENTION_BWD, .nq = 6, .nk = 6, .nh = 2, .nkv = 1, .d = 8, .mask = MASK_ORPHAN),
    C(ATTENTION_BWD, .nq = 12, .nk = 12, .nh = 4, .nkv = 2, .d = 64, .mask = MASK_PACKED,
      .segs = 4, .big = 1),
    C(ATTENTION_BWD, .nq = 20, .nk = 20, .nh = 2, .nkv = 1, .d = 128, .mask = MASK_CAUSAL),
    C(ATTENTION_BWD, .nq = 70, .nk = 70, .nh = 2, .nkv = 2, .d = 24, .window = 40,
      .mask = MASK_PACKED, .segs = 2),

    C(ROUTER_TOPK, .n = 1, .E = 1, .k = 1),
    C(ROUTER_TOPK, .n = 9, .E = 32, .k = 4),
    C(ROUTER_TOPK, .n = 9, .E = 32, .k = 4, .ties = 1),
    C(ROUTER_TOPK, .n = 5, .E = 128, .k = 4),
    C(ROUTER_TOPK, .n = 7, .E = 6, .k = 2, .ties = 1),
    C(ROUTER_TOPK, .n = 3, .E = 5, .k = 5, .ties = 1),
    C(ROUTER_TOPK, .n = 100, .E = 8, .k = 3),
    C(ROUTER_BWD, .n = 1, .E = 1, .k = 1),
    C(ROUTER_BWD, .n = 9, .E = 32, .k = 4),
    C(ROUTER_BWD, .n = 100, .E = 7, .k = 3),

    C(MOE_PLAN, .n = 1, .k = 1, .E = 1),
    C(MOE_PLAN, .n = 9, .k = 4, .E = 32),
    C(MOE_PLAN, .n = 17, .k = 2, .E = 3),
    C(MOE_PLAN, .n = 3, .k = 4, .E = 128),
    C(MOE_PLAN, .n = 300, .k = 4, .E = 9), /* several assignments per thread */
    C(MOE_GATHER, .n = 1, .k = 1, .E = 1, .H = 7),
    C(MOE_GATHER, .n = 9, .k = 4, .E = 32, .H = 64),
    C(MOE_GATHER, .n = 5, .k = 3, .E = 4, .H = 33),
    C(MOE_GATHER_BWD, .n = 1, .k = 1, .E = 1, .H = 7),
    C(MOE_GATHER_BWD, .n = 9, .k = 4, .E = 32, .H = 64),
    C(MOE_GATHER_BWD, .n = 5, .k = 2, .E = 4, .H = 33),

    /* MXFP4: dense (E = 1), grouped with experts hit or not, scale biases
     * 127 and 141, metal-style strides, an expert with several row tiles */
    C(MXFP4_MATMUL, .n = 5, .k = 1, .E = 1, .rows = 7, .cols = 32, .scale_bias = 127),
    C(MXFP4_MATMUL, .n = 6, .k = 2, .E = 5, .rows = 33, .cols = 64, .bias = 1,
      .scale_bias = 127),
    C(MXFP4_MATMUL, .n = 3, .k = 4, .E = 32, .rows = 64, .cols = 96, .bias = 1,
      .scale_bias = 141, .metal = 1),
    C(MXFP4_MATMUL, .n = 1, .k = 1, .E = 8, .rows = 17, .cols = 32, .scale_bias = 141,
      .metal = 1),
    C(MXFP4_MATMUL, .n = 4, .k = 4, .E = 4, .rows = 96, .cols = 2880, .bias = 1,
      .scale_bias = 127),
    C(MXFP4_MATMUL, .n = 150, .k = 2, .E = 3, .rows = 70, .cols = 64, .bias = 1,
      .scale_bias = 127),
    C(MXFP4_MATMUL_DX, .n = 5, .k = 1, .E = 1, .rows = 7, .cols = 32, .scale_bias = 127),
    C(MXFP4_MATMUL_DX, .n = 6, .k = 2, .E = 5, .rows = 33, .cols = 64, .bias = 1,
      .scale_bias = 127),
    C(MXFP4_MATMUL_DX, .n = 3, .k = 4, .E = 32, .rows = 64, .cols = 96, .bias = 1,
      .scale_bias = 141, .metal = 1),
    C(MXFP4_MATMUL_DX, .n = 4, .k = 4, .E = 4, .rows = 2880, .cols = 64, .scale_bias = 127),
    C(MXFP4_MATMUL_DX, .n = 150, .k = 2, .E = 3, .rows = 70, .cols = 96, .scale_bias = 141),

    C(SWIGLU, .n = 1, .I = 1),
    C(SWIGLU, .n = 7, .I = 33),
    C(SWIGLU, .n = 4, .I = 2880),
    C(SWIGLU_BWD, .n = 1, .I = 1),
    C(SWIGLU_BWD, .n = 7, .I = 33),
    C(SWIGLU_BWD, .n = 4, .I = 2880),

    C(MOE_COMBINE, .n = 1, .k = 1, .E = 1, .H = 7),
    C(MOE_COMBINE, .n = 9, .k = 4, .E = 32, .H = 64),
    C(MOE_COMBINE, .n = 5, .k = 3, .E = 3, .H = 33),
    C(MOE_COMBINE_BWD, .n = 1, .k = 1, .E = 1, .H = 7),
    C(MOE_COMBINE_BWD, .n = 9, .k = 4, .E = 32, .H = 64),
    C(MOE_COMBINE_BWD, .n = 5, .k = 2, .E = 3, .H = 300),

    C(ADD, .n = 1),
    C(ADD, .n = 12345),
    C(DROPOUT, .n = 1, .p = 0.5f),
    C(DROPOUT, .n = 1025, .p = 0),
    C(DROPOUT, .n = 4099, .p = 0.1f),
    C(DROPOUT, .n = 4099, .p = 0.5f, .inplace = 1),
    C(DROPOUT, .n = 333, .p = 0.999f),

    /* unembed_xent: one chunk and several (targets in every chunk, a short
     * last chunk), bias, loss or dh alone, masked tokens (every third) */
    C(UNEMBED_XENT, .n = 1, .rows = 50, .cols = 32),
    C(UNEMBED_XENT, .n = 7, .rows = 1001, .cols = 64),
    C(UNEMBED_XENT, .n = 7, .rows = 1001, .cols = 64, .chunk = 128),
    C(UNEMBED_XENT, .n = 6, .rows = 300, .cols = 33, .nulls = 1, .chunk = 64),
    C(UNEMBED_XENT, .n = 6, .rows = 300, .cols = 33, .nulls = 2, .chunk = 64),
    C(UNEMBED_XENT, .n = 70, .rows = 200, .cols = 40, .bias = 1, .chunk = 64),

    C(ADAMW, .n = 1, .step = 1),
    C(ADAMW, .n = 1000, .step = 1, .wd = 0.1f),
    C(ADAMW, .n = 777, .step = 10, .wd = 0.01f),
    C(ADAMW, .n = 5, .step = 1000),
    C(SUM_SQUARES, .n = 1),
    C(SUM_SQUARES, .n = 100003),
    C(SUM_SQUARES, .n = 300001),
};
enum { N_CASES = sizeof cases / sizeof cases[0] };

/* ------------------------------------------------------------ running */

typedef struct results {
  void *data[MAX_TENSORS];
  double scalar;
} results;

static void results_free(results *res, int nt) {
  for (int i = 0; i < nt; i++) free(res->data[i]);
  memset(res, 0, sizeof *res);
}

/* Uploads every tensor between guard bytes, runs the op, syncs, downloads,
 * checks guards and inputs. Returns 0, or -1 with `why`. */
static int run_case(mxl_backend *be, op_case *c, results *res, char *why, size_t why_size) {
  void *base[MAX_TENSORS] = {0}, *dev[MAX_TENSORS] = {0};
  int rc = 0;
  memset(res, 0, sizeof *res);
  for (int i = 0; i < c->nt && rc == 0; i++) {
    size_t bytes = tensor_bytes(&c->t[i]);
    uint8_t *stage = malloc(bytes + 2 * GUARD);
    base[i] = be->ops->alloc(be, bytes + 2 * GUARD);
    if (!stage || !base[i]) {
      snprintf(why, why_size, "allocation of %s failed", c->t[i].name);
      rc = -1;
    } else {
      memset(stage, 0xA5, bytes + 2 * GUARD);
      memcpy(stage + GUARD, c->t[i].data, bytes);
      be->ops->upload(be, base[i], stage, bytes + 2 * GUARD);
      dev[i] = (uint8_t *)base[i] + GUARD;
    }
    free(stage);
  }
  if (rc == 0) {
    c->op->run(be, c, dev);
    res->scalar = c->scalar;
    if (be->ops->sync(be) != MXL_OK) {
      snprintf(why, why_size, "sync: %s", mxl_last_error());
      rc = -1;
    }
  }
  for (int i = 0; i < c->nt; i++) {
    if (!base[i]) continue;
    size_t bytes = tensor_bytes(&c->t[i]);
    uint8_t *back = malloc(bytes + 2 * GUARD);
    if (rc == 0 && back) {
      be->ops->download(be, back, base[i], bytes + 2 * GUARD);
      for (size_t b = 0; b < GUARD && rc == 0; b++)
        if (back[b] != 0xA5 || back[GUARD + bytes + b] != 0xA5) {
          snprintf(why, why_size, "guard bytes %s %s overwritten",
                   back[b] != 0xA5 ? "before" : "after", c->t[i].name);
          rc = -1;
        }
      if (rc == 0 && c->t[i].role == IN && memcmp(back + GUARD, c->t[i].data, bytes) != 0) {
        snprintf(why, why_size, "input %s was modified", c->t[i].name);
        rc = -1;
      }
      res->data[i] = malloc(bytes ? bytes : 1);
      if (res->data[i]) memcpy(res->data[i], back + GUARD, bytes);
    }
    free(back);
    be->ops->free(be, base[i]);
  }
  if (rc == 0)
    for (int i = 0; i < c->nt; i++)
      if (!res->data[i]) {
        snprintf(why, why_size, "out of host memory");
        rc = -1;
      }
  return rc;
}

/* NMSE of float tensor b against ref r (deltas from the initial contents
 * for ACC tensors), or +inf with `why` on a NaN/Inf mismatch. */
static double compare_f32(const tensor *t, const float *b, const float *r, size_t *ref_nans,
                          char *why, size_t why_size) {
  const float *pre = t->data;
  double err = 0, norm = 0;
  *ref_nans = 0;
  for (size_t i = 0; i < t->count; i++) {
    if (isnan(r[i])) {
      (*ref_nans)++;
      if (!isnan(b[i])) {
        snprintf(why, why_size, "%s[%zu] = %g where ref left NaN", t->name, i, (double)b[i]);
        return INFINITY;
      }
      continue;
    }
    if (isnan(b[i]) || isinf(r[i]) || isinf(b[i])) {
      if (isinf(r[i]) && b[i] == r[i]) continue;
      snprintf(why, why_size, "%s[%zu] = %g, ref %g", t->name, i, (double)b[i], (double)r[i]);
      return INFINITY;
    }
    double bi = b[i], ri = r[i];
    if (t->role == ACC) {
      bi -= pre[i];
      ri -= pre[i];
    }
    err += (bi - ri) * (bi - ri);
    norm += ri * ri;
  }
  return norm > 0 ? err / norm : err;
}

/* Worst NMSE of the case's outputs, or +inf with `why`. */
static double compare_case(const op_case *c, const results *ref, const results *got,
                           char *why, size_t why_size) {
  double thr = c->op->nmse, worst = 0;
  if (c->op->run == run_sum_squares) {
    double rel = fabs(got->scalar - ref->scalar) / fmax(fabs(ref->scalar), 1e-300);
    if (!(rel <= thr)) {
      snprintf(why, why_size, "sum %.17g vs ref %.17g", got->scalar, ref->scalar);
      return INFINITY;
    }
    return rel;
  }
  for (int i = 0; i < c->nt; i++) {
    const tensor *t = &c->t[i];
    if (t->role == IN) continue;
    if ((t->type != F32 || thr < 0) && memcmp(got->data[i], ref->data[i], tensor_bytes(t))) {
      snprintf(why, why_size, "%s differs bitwise from ref", t->name);
      return INFINITY;
    }
    if (t->type != F32) continue;
    size_t ref_nans;
    double nmse = compare_f32(t, got->data[i], ref->data[i], &ref_nans, why, why_size);
    if (ref_nans != t->nan_pad) {
      snprintf(why, why_size, "ref left %zu NaN in %s, expected %zu", ref_nans, t->name,
               t->nan_pad);
      return INFINITY;
    }
    if (thr >= 0 && !(nmse <= thr)) {
      if (isfinite(nmse)) snprintf(why, why_size, "%s: nmse %.3g above %.3g", t->name, nmse, thr);
      return INFINITY;
    }
    if (nmse > worst) worst = nmse;
  }
  return worst;
}

/* Whether two runs of the case produced the same bits. */
static int same_results(const op_case *c, const results *a, const results *b, char *why,
                        size_t why_size) {
  if (memcmp(&a->scalar, &b->scalar, sizeof a->scalar) != 0) {
    snprintf(why, why_size, "result %.17g vs %.17g", a->scalar, b->scalar);
    return 0;
  }
  for (int i = 0; i < c->nt; i++)
    if (c->t[i].role != IN && memcmp(a->data[i], b->data[i], tensor_bytes(&c->t[i])) != 0) {
      snprintf(why, why_size, "%s differs", c->t[i].name);
      return 0;
    }
  return 1;
}

static const char *const order_names[N_ORDERS] = {"forward", "reverse", "shuffle"};

/* Runs case `ci` on ref and on `be` in the three thread orders. Returns the
 * worst NMSE, or +inf with `why`. */
static double check_case(const case_spec *cs, int ci, mxl_backend *ref, mxl_backend *be,
                         char *why, size_t why_size) {
  op_case c = {.op = &op_defs[cs->op], .s = cs->s};
  test_rng rng = {0xC0DAull + 7919ull * (uint64_t)ci};
  c.op->setup(&c, &rng, ref);
  results rr, br[N_ORDERS];
  memset(br, 0, sizeof br);
  double worst = INFINITY;
  char sub[200] = "";
  if (run_case(ref, &c, &rr, sub, sizeof sub) != 0) {
    snprintf(why, why_size, "ref: %s", sub);
    goto done;
  }
  if (strcmp(be->ops->name, "cuda-emu") == 0) mxl_cuda_emu_set_xent_chunk(be, cs->s.chunk);
  worst = 0;
  for (int o = 0; o < N_ORDERS && isfinite(worst); o++) {
    mxl_cuda_emu_set_order((mxl_emu_order)o, 1 + (uint64_t)ci);
    double nmse = INFINITY;
    if (run_case(be, &c, &br[o], sub, sizeof sub) == 0)
      nmse = compare_case(&c, &rr, &br[o], sub, sizeof sub);
    if (isfinite(nmse) && o > 0 && !same_results(&c, &br[0], &br[o], sub, sizeof sub)) {
      nmse = INFINITY;
      snprintf(why, why_size, "%s order differs from forward: %s", order_names[o], sub);
    } else if (!isfinite(nmse)) {
      snprintf(why, why_size, "%s order: %s", order_names[o], sub);
    }
    worst = nmse > worst ? nmse : worst;
  }
  mxl_cuda_emu_set_order(MXL_EMU_FORWARD, 1);
  for (int o = 0; o < N_ORDERS; o++) results_free(&br[o], c.nt);
  results_free(&rr, c.nt);
done:
  case_free(&c);
  return worst;
}

static void describe(const case_spec *cs, char *buf, size_t size) {
  const shape *s = &cs->s;
  static const char *mask_names[] = {"causal", "packed", "kvcache", "orphan"};
  size_t len = 0;
#define FIELD(cond, fmt, ...) \
  if ((cond) && len < size) len += (size_t)snprintf(buf + len, size - len, " " fmt, __VA_ARGS__)
  FIELD(s->n, "n=%d", s->n);
  FIELD(s->H, "H=%d", s->H);
  FIELD(s->V, "V=%d", s->V);
  FIELD(s->rows, "rows=%d", s->rows);
  FIELD(s->cols, "cols=%d", s->cols);
  FIELD(s->I, "I=%d", s->I);
  FIELD(s->E, "E=%d k=%d", s->E, s->k);
  FIELD(s->nq, "nq=%d nk=%d nh=%d nkv=%d d=%d %s", s->nq, s->nk, s->nh, s->nkv, s->d,
        mask_names[s->mask]);
  FIELD(s->segs, "segs=%d", s->segs);
  FIELD(s->window, "window=%d", s->window);
  FIELD(s->M, "MNK=%dx%dx%d t=%d%d alpha=%g beta=%g", s->M, s->N, s->K, s->tA, s->tB,
        (double)s->alpha, (double)s->beta);
  FIELD(s->pad, "pad=%d", s->pad);
  FIELD(s->bias, "bias%s", "");
  FIELD(s->interleaved, "interleaved%s", "");
  FIELD(s->inverse, "inverse%s", "");
  FIELD(s->scale_bias, "scale_bias=%d", s->scale_bias);
  FIELD(s->metal, "metal%s", "");
  FIELD(s->nulls, "nulls=%d", s->nulls);
  FIELD(s->ties, "ties%s", "");
  FIELD(s->inplace, "inplace%s", "");
  FIELD(s->step, "step=%d", s->step);
  FIELD(s->wd != 0, "wd=%g", (double)s->wd);
  FIELD(cs->op == DROPOUT, "p=%g", (double)s->p);
  FIELD(s->big, "big%s", "");
  FIELD(s->chunk, "chunk=%d", s->chunk);
#undef FIELD
}

static double worst_nmse[N_OPS];
static int ran[N_OPS];

static mxl_backend *ref, *emu;

static void test_every_case(void) {
  for (int ci = 0; ci < N_CASES; ci++) {
    const case_spec *cs = &cases[ci];
    char desc[256] = "", why[300] = "";
    describe(cs, desc, sizeof desc);
    mxl_test_current = op_defs[cs->op].name;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double nmse = check_case(cs, ci, ref, emu, why, sizeof why);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    int ok = isfinite(nmse);
    MXL_CHECK_MSG(ok, "%s%s: %s", op_defs[cs->op].name, desc, why);
    mxl_test_cases++;
    if (!ok) mxl_test_failed_cases++;
    ran[cs->op]++;
    if (ok && nmse > worst_nmse[cs->op]) worst_nmse[cs->op] = nmse;
    printf("%s %-16s%s  err %.2e  %.2f s%s%s\n", ok ? "ok  " : "FAIL", op_defs[cs->op].name,
           desc, ok ? nmse : 0.0, seconds, ok ? "" : "  ", why);
  }
}

/* ------------------------------------------------------------ tables */

/* Every op of a table is filled: what test_ops would compare on a device. */
static void check_table_filled(const mxl_ops *ops, const char *label) {
  /* After name and host_memory, mxl_ops is function pointers only. */
  size_t first = offsetof(mxl_ops, destroy), count = 0;
  for (size_t at = first; at + sizeof(void (*)(void)) <= sizeof *ops;
       at += sizeof(void (*)(void))) {
    void (*fn)(void);
    memcpy(&fn, (const char *)ops + at, sizeof fn);
    MXL_CHECK_MSG(fn != NULL, "%s: op table entry at byte %zu is NULL", label, at);
    count++;
  }
  MXL_CHECK_MSG(count == (sizeof *ops - first) / sizeof(void (*)(void)), "%s", label);
  printf("info %s: %zu of %zu op table entries filled\n", label, count, count);
}

static void test_tables(void) {
  check_table_filled(emu->ops, "cuda-emu");
  const mxl_ops *device = mxl_cuda_op_table();
  MXL_CHECK(strcmp(device->name, "cuda") == 0 && !device->host_memory);
  check_table_filled(device, "cuda (device build)");
}

/* ------------------------------------------------------------ errors */

/* Shapes the kernels refuse are reported by the next sync, with the op and
 * the reason; the backend keeps working afterwards. */
static void test_errors(void) {
  enum { NQ = 2, NH = 6, D = 160 };
  size_t count = (size_t)NQ * NH * D;
  float *q = calloc(count, sizeof *q), *out = calloc(count, sizeof *out);
  float *dq = calloc(count, sizeof *dq), lse[NQ * NH] = {0};
  uint16_t sinks[NH] = {0};
  int32_t pos[NQ] = {0, 1}, seg[NQ] = {0, 0};
  mxl_attn_mask mask = {pos, seg, pos, seg, 0};
  if (!q || !out || !dq) abort();
  emu->ops->attention(emu, out, lse, q, q, q, sinks, &mask, NQ, NQ, NH, NH, D, 1.0f);
  MXL_CHECK_FAILS(emu->ops->sync(emu), MXL_ERR_UNSUPPORTED, "attention: head dim 160");
  emu->ops->attention_bwd(emu, dq, dq, dq, q, q, lse, q, q, q, sinks, &mask, NQ, NQ, NH, NH, D,
                          1.0f);
  MXL_CHECK_FAILS(emu->ops->sync(emu), MXL_ERR_UNSUPPORTED, "attention_bwd: head dim 160");
  emu->ops->attention(emu, out, lse, q, q, q, sinks, &mask, NQ, NQ, NH, 4, 16, 1.0f);
  MXL_CHECK_FAILS(emu->ops->sync(emu), MXL_ERR_ARGUMENT, "6 query heads");
  /* only the first error since the last sync is kept */
  emu->ops->attention(emu, out, lse, q, q, q, sinks, &mask, NQ, NQ, NH, 4, 16, 1.0f);
  emu->ops->attention(emu, out, lse, q, q, q, sinks, &mask, NQ, NQ, NH, NH, D, 1.0f);
  MXL_CHECK_FAILS(emu->ops->sync(emu), MXL_ERR_ARGUMENT, "6 query heads");
  emu->ops->attention(emu, out, lse, q, q, q, sinks, &mask, NQ, NQ, NH, NH, 16, 1.0f);
  MXL_CHECK_OK(emu->ops->sync(emu));
  free(q);
  free(out);
  free(dq);
}

/* ------------------------------------------------------------ mutants */

/* The harness must catch broken kernels: each mutant is the emulated table
 * with one op wrapped to fail in a way a real kernel could. */
static const mxl_ops *emu_table;

static void bad_rmsnorm_bwd(mxl_backend *be, float *dx, const float *dy, const float *x,
                            const float *rstd, const uint16_t *g, int n, int H, float eps) {
  memset(dx, 0, sizeof *dx * (size_t)n * H); /* overwrites instead of adding */
  emu_table->rmsnorm_bwd(be, dx, dy, x, rstd, g, n, H, eps);
}
static void bad_matmul_bf16(mxl_backend *be, float *y, const float *x, const mxl_bf16_weight *W,
                            int n) {
  emu_table->matmul_bf16(be, y, x, W, n);
  y[(size_t)n * W->rows] = 0; /* one element past the end */
}
static int racy_calls;
static void bad_rmsnorm(mxl_backend *be, float *y, float *rstd, const float *x,
                        const uint16_t *g, int n, int H, float eps) {
  emu_table->rmsnorm(be, y, rstd, x, g, n, H, eps);
  if (racy_calls++ % 3 == 2) y[0] = nextafterf(y[0], INFINITY); /* 1 ulp, in one order only */
}
static void bad_moe_combine(mxl_backend *be, float *out, const float *ys,
                            const mxl_moe_plan *plan, int H) {
  emu_table->moe_combine(be, out, ys, plan, H);
  ((float *)ys)[0] += 1; /* scribbles on an input */
}
static void bad_dropout(mxl_backend *be, float *y, const float *x, size_t n, float p,
                        uint64_t seed) {
  emu_table->dropout(be, y, x, n, p, seed + 1); /* another mask */
}

typedef struct mutant {
  const char *what;
  int op, nth; /* runs on the nth (0-based) case of op */
  size_t fn;  /* offsetof(mxl_ops, op) */
  void *impl; /* the broken function */
} mutant;

static void test_mutants(void) {
  const mutant mutants[] = {
      {"overwrites a += output", RMSNORM_BWD, 1, offsetof(mxl_ops, rmsnorm_bwd),
       (void *)bad_rmsnorm_bwd},
      {"writes past the end", MATMUL_BF16, 1, offsetof(mxl_ops, matmul_bf16),
       (void *)bad_matmul_bf16},
      {"depends on the thread order", RMSNORM, 1, offsetof(mxl_ops, rmsnorm), (void *)bad_rmsnorm},
      {"modifies an input", MOE_COMBINE, 1, offsetof(mxl_ops, moe_combine),
       (void *)bad_moe_combine},
      {"another dropout mask", DROPOUT, 2, offsetof(mxl_ops, dropout), (void *)bad_dropout},
  };
  emu_table = emu->ops;
  for (size_t i = 0; i < sizeof mutants / sizeof mutants[0]; i++) {
    const mutant *mu = &mutants[i];
    mxl_ops table = *emu->ops;
    memcpy((char *)&table + mu->fn, &mu->impl, sizeof mu->impl);
    mxl_backend bad = *emu;
    bad.ops = &table;
    int ci = 0, seen = 0;
    while (ci < N_CASES && !(cases[ci].op == mu->op && seen++ == mu->nth)) ci++;
    mxl_test_current = mu->what;
    MXL_CHECK_MSG(ci < N_CASES, "no case for the mutant");
    if (ci == N_CASES) continue;
    char why[300] = "";
    racy_calls = 0;
    double nmse = check_case(&cases[ci], ci, ref, &bad, why, sizeof why);
    MXL_CHECK_MSG(!isfinite(nmse), "the harness passed a broken %s", op_defs[mu->op].name);
    printf("%s mutant %-16s %s: %s\n", isfinite(nmse) ? "FAIL" : "ok  ", op_defs[mu->op].name,
           mu->what, isfinite(nmse) ? "not caught" : why);
    mxl_test_cases++;
  }
}

int main(void) {
  if (mxl_backend_ref_create(&ref) != MXL_OK || mxl_backend_cuda_emu_create(0, &emu) != MXL_OK) {
    fprintf(stderr, "backend creation: %s\n", mxl_last_error());
    return 1;
  }
  MXL_RUN(test_tables);
  MXL_RUN(test_errors);
  test_every_case();
  test_mutants();
  printf("\nworst error per op over %d thread orders (nmse; sum_squares: relative):\n",
         N_ORDERS);
  for (int o = 0; o < N_OPS; o++) {
    char thr[24] = "bitwise";
    if (op_defs[o].nmse >= 0) snprintf(thr, sizeof thr, "%.0e", op_defs[o].nmse);
    printf("  %-16s %3d cases  worst %.2e  threshold %s\n", op_defs[o].name, ran[o],
           worst_nmse[o], thr);
  }
  mxl_backend_destroy(emu);
  mxl_backend_destroy(ref);
  return mxl_test_summary("cuda_ops");
}
