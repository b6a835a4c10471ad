/* The op test driver: every op of a backend against the ref oracle. One
 * driver for every backend: tests/test_ops.c runs it on the CPU backend
 * (each mode and instruction set) and on the CUDA backend when a GPU is
 * present; tests/cuda/test_cuda_ops.c runs it on the CUDA kernels on the CPU
 * emulator, in three thread orders.
 *
 * Modelled on ggml's test-backend-ops (ideas only): one case table; each
 * case names an op and its shapes; the inputs are random with a per-case
 * seed, identical for every backend. Each case runs on ref and on the
 * backend under test, then:
 *   - outputs (overwritten by the op) are pre-filled with NaN, so an element
 *     the op forgets to write shows up as NaN;
 *   - "+=" outputs are pre-filled with random values and compared as deltas
 *     (result − prefill), so a backend that overwrites instead of adding
 *     fails; in-place tensors are compared as totals;
 *   - NaN where ref has none fails, Inf must match in sign, then the
 *     normalised MSE  Σ(b − r)² / Σr²  must be under the op's threshold
 *     (below); integer outputs and the ops marked exact must match bitwise;
 *   - every buffer sits between GUARD sentinel bytes, which must come back
 *     unchanged, and every input must come back unchanged;
 *   - a backend may run each case several times (the emulator: its thread
 *     orders, set by a hook before each run): every run is compared with
 *     ref and must give the same bits as the first.
 * Ops a backend leaves NULL are reported as skipped, and so are the cases
 * marked heavy on backends that ask for small cases only (the emulator
 * costs microseconds per CUDA thread).
 *
 * Thresholds (NMSE; fp32-activation backends / bf16-activation backends):
 *   exact        embed, moe_gather, moe_plan, router experts, add, dropout
 *                (copies, conversions, one IEEE op, or a bit-exact spec);
 *                on bf16 backends add gets 1e-4.
 *   1e-8 / 1e-4  elementwise and short reductions (rmsnorm(+bwd), rope,
 *                swiglu(+bwd), router weights and bwd, combine(+bwd),
 *                gather_bwd): fp32 with float accumulation and library
 *                exp/sigmoid lands near 1e-13; rounding an input to bf16
 *                costs about (2^-9)²/3 ≈ 1e-6, which fp32 backends must
 *                not do here but bf16 backends may.
 *   1e-7 / 5e-4  attention (+bwd): fp32 online softmax, long reductions.
 *   5e-4         matmuls (matmul_bf16(+dx), mxfp4_matmul(+dx), gemm_f32,
 *                unembed_xent): ops.h lets a matmul round activations to
 *                bf16 on a fast path (≈1e-6 per rounded input, more where
 *                outputs cancel); 5e-4 is ggml's mul_mat threshold.
 *                A backend whose matmuls keep fp32 activations (cpu-exact,
 *                the CUDA kernels) gets 1e-8 here.
 *   1e-8         adamw (master weights are fp32 on every backend), compared
 *                on the update (param, m, v deltas).
 *   1e-8 / 5e-4  lora and lora_bwd: fp32 products of fp32 LoRA parameters
 *                (no bf16 rounding on fp32 backends), compared as deltas.
 *   1e-9 rel.    sum_squares (double accumulation in any order).
 *
 * Mutants: the driver must catch broken backends. Each mutant is a backend
 * (ref, or the backend under test) with one op broken in a way a real
 * kernel could be, run on one case of that op; it must be reported as
 * failing. ops_shared_mutants are the driver's own; a test adds its own
 * backend-specific ones (tests/cuda: a result that depends on the order).
 *
 * Header-only (static functions, like test.h): the test executables are one
 * translation unit each, so that test.h's counters add up. */
#ifndef MXL_TESTS_OPS_DRIVER_H
#define MXL_TESTS_OPS_DRIVER_H

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/ops.h"
#include "ops_util.h"
#include "test.h"

enum { MAX_TENSORS = 16, GUARD = 256, OPS_MAX_RUNS = 4 };

typedef enum dtype { F32, I32, U16, U8 } dtype;

/* IN: read only. OUT: overwritten. ACC: "+=", compared as deltas.
 * INOUT: transformed in place, compared as totals. */
typedef enum role { IN, OUT, ACC, INOUT } role;

typedef struct tensor {
  const char *name;
  dtype type;
  role role;
  size_t count;   /* elements */
  void *data;     /* host: initial contents */
  size_t nan_pad; /* NaN elements ref leaves on purpose (gemm row padding) */
} tensor;

/* Shape and variant parameters; each op reads the ones it needs. */
typedef struct shape {
  int n, H, V;            /* tokens, hidden, vocabulary */
  int E, k;               /* experts, experts per token */
  int rows, cols;         /* weight matrix */
  int I;                  /* SwiGLU units */
  int nq, nk, nh, nkv, d; /* attention (nh doubles as rope heads) */
  int window, segs;
  mask_kind mask;
  int M, N, K, tA, tB, pad; /* gemm_f32, pad = extra row stride */
  float alpha, beta;
  int bias;        /* bf16 / MXFP4 bias present */
  int interleaved; /* rope pairing */
  int inverse;     /* rope direction */
  int scale_bias;  /* MXFP4 127 or 141 */
  int metal;       /* MXFP4 experts side by side with strides > data */
  int nulls;       /* optional outputs passed as NULL (bit mask) */
  int ties;        /* router logits with many ties */
  int inplace;     /* dropout y == x */
  int step;        /* adamw */
  float wd, p;     /* adamw weight decay, dropout rate */
  int big;         /* attention: large sinks / scores */
  int chunk;       /* unembed_xent vocabulary rows per chunk on backends that
                      chunk (the emulator's hook sets it; 0: automatic) */
  int rank;        /* lora: the largest rank of its segments (segs of them over n rows,
                      in = cols, out = rows) */
  int experts;     /* lora: segments one after the other, no row in two (as one
                      segment per expert in training), some rows in none */
} shape;

typedef struct op_case op_case;

typedef struct op_def {
  const char *name;
  size_t fn;        /* offsetof(mxl_ops, op): NULL there = skipped */
  double nmse;      /* fp32 backends; < 0 = bitwise */
  double nmse_bf16; /* bf16-activation backends; < 0 = bitwise */
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

/* Adds a tensor; OUT tensors start as NaN (floats) or 0xA5 bytes. */
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
/* A float tensor uniform in [lo, hi): inputs, and the prefill of ACC and
 * INOUT tensors. */
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

/* ------------------------------------------------------------ shared setup */

/* A routing plan for n tokens, k experts each, among E: experts, weights,
 * order, slot, offsets (all inputs). Built by the tests' counting sort. */
static void add_plan(op_case *c, test_rng *r, int n, int k, int E) {
  size_t m = (size_t)n * k;
  int32_t *experts = add_i32(c, "experts", IN, m);
  add_random(c, r, "weights", IN, m, 0.05, 1);
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

/* bf16 weight w [rows, cols] and (if s->bias) bias b [rows]. */
static void add_bf16_weight(op_case *c, test_rng *r) {
  const shape *s = &c->s;
  add_bf16(c, r, "w", (size_t)s->rows * s->cols, -0.5, 0.5);
  if (s->bias) add_bf16(c, r, "b", (size_t)s->rows, -1, 1);
}

static mxl_bf16_weight bf16_weight_of(const op_case *c, void *const *dev) {
  return (mxl_bf16_weight){D("w"), D("b"), c->s.rows, c->s.cols};
}

/* MXFP4 experts [E, rows, cols]. HF layout: tensors blocks, scales, bias
 * with experts contiguous. Metal layout (s->metal): one buffer "wbuf" where
 * each expert's blocks, scales and bias sit side by side in a region 48
 * bytes larger than the data, so the strides exceed the data (junk between
 * experts). */
static size_t mx_blocks_bytes(const shape *s) { return (size_t)s->rows * s->cols / 2; }
static size_t mx_scales_bytes(const shape *s) { return (size_t)s->rows * s->cols / 32; }
static size_t mx_bias_at(const shape *s) { /* the bias is bf16-aligned */
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

/* Attention inputs q, k, v, sinks and the mask arrays. */
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

/* The backward's out and lse inputs come from ref's forward (they are
 * inputs: every backend gets the same values). */
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

/* h in [-10, 10] with some lanes exactly at ±limit (7) and just beside it,
 * so both clamps and their boundaries are exercised. */
static void add_swiglu_h(op_case *c, test_rng *r, size_t n) {
  const float special[] = {7.0f, -7.0f, 7.0001f, -7.0001f, 6.9999f, 0.0f};
  float *h = add_f32(c, "h", IN, n);
  for (size_t i = 0; i < n; i++)
    h[i] = rng_int(r, 4) == 0 ? special[rng_int(r, 6)] : (float)rng_uniform(r, -10, 10);
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
  /* big: a confident model (h along its target's row: softmax_target
   * about 0.8, its logit the largest) and dh starting at zero, so that the
   * error seen is the gradient's alone. (More confident, the loss lse − z
   * becomes a difference of two close fp32 numbers in the reference too.) */
  double dh_range = s->big ? 0 : 1;
  if (!(s->nulls & 2)) add_random(c, r, "dh", ACC, (size_t)s->n * s->cols, -dh_range, dh_range);
  float *h = add_random(c, r, "h", IN, (size_t)s->n * s->cols, -2, 2);
  add_bf16_weight(c, r);
  const uint16_t *w = host_ptr(c, "w");
  int32_t *targets = add_i32(c, "targets", IN, (size_t)s->n);
  float *weight = add_f32(c, "weight", IN, (size_t)s->n);
  for (int t = 0; t < s->n; t++) {
    targets[t] = t == 0 ? s->rows - 1 : rng_int(r, s->rows);
    weight[t] = (t % 3 == 2) ? 0.0f : (float)rng_uniform(r, 0.1, 2);
    if (s->big)
      for (int k = 0; k < s->cols; k++)
        h[(size_t)t * s->cols + k] = 1.5f * mxl_bf16_to_f32(w[(size_t)targets[t] * s->cols + k]);
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

/* Segmented LoRA: s->segs segments over s->n rows, in = cols, out = rows.
 * The table "segtab" [segs, 4] (row0, rows, rank, has_grads) and "scales"
 * are host inputs; A, B (and dA, dB) hold every segment's matrices back to
 * back. Row ranges are random: rows shared by several segments (a row with
 * several adapters), rows in none; ranks in 1..s->rank; t blocks in
 * segment order. s->nulls: 1 = t (forward) or dx (backward) NULL; 2 =
 * every third segment without gradients. */
static void add_lora_segments(op_case *c, test_rng *r, int with_grads) {
  const shape *s = &c->s;
  int32_t *tab = add_i32(c, "segtab", IN, (size_t)s->segs * 4);
  float *scales = add_f32(c, "scales", IN, (size_t)s->segs);
  size_t na = 0, nb = 0, nt = 0;
  int next_row = 0; /* s->experts: where the next segment may start */
  for (int g = 0; g < s->segs; g++) {
    int row0, rows;
    if (s->experts) { /* a gap of 0-2 rows, 1 to n/segs rows; the last to the end */
      row0 = next_row + rng_int(r, 3);
      if (row0 > s->n) row0 = s->n;
      rows = 1 + rng_int(r, s->n / s->segs);
      if (rows > s->n - row0 || g == s->segs - 1) rows = s->n - row0;
      next_row = row0 + rows;
    } else {
      row0 = rng_int(r, s->n), rows = 1 + rng_int(r, s->n - row0);
      if (g == 0) row0 = 0, rows = s->n; /* one segment over every row */
    }
    int rank = g == 1 ? s->rank : 1 + rng_int(r, s->rank);
    tab[4 * g] = row0;
    tab[4 * g + 1] = rows;
    tab[4 * g + 2] = rank;
    tab[4 * g + 3] = with_grads && !((s->nulls & 2) && g % 3 == 2);
    scales[g] = (float)rng_uniform(r, -2, 2);
    na += (size_t)rank * s->cols;
    nb += (size_t)s->rows * rank;
    nt += (size_t)rows * rank;
  }
  add_random(c, r, "A", IN, na, -1, 1);
  add_random(c, r, "B", IN, nb, -1, 1);
  if (with_grads) {
    add_random(c, r, "dA", ACC, na, -1, 1);
    add_random(c, r, "dB", ACC, nb, -1, 1);
  }
  c->scalar = (double)nt; /* t floats, for setup */
}

/* The segment table of a case, pointing into the backend's tensors. */
static int lora_segs_of(const op_case *c, void *const *dev, mxl_lora_seg *out) {
  const shape *s = &c->s;
  const int32_t *tab = host_ptr(c, "segtab");
  const float *scales = host_ptr(c, "scales");
  const float *A = D("A"), *B = D("B");
  float *dA = D("dA"), *dB = D("dB");
  size_t na = 0, nb = 0;
  int64_t t_off = 0;
  for (int g = 0; g < s->segs; g++) {
    int rows = tab[4 * g + 1], rank = tab[4 * g + 2], grads = tab[4 * g + 3];
    out[g] = (mxl_lora_seg){tab[4 * g], rows, rank, scales[g], A + na, B + nb,
                            grads && dA ? dA + na : NULL, grads && dB ? dB + nb : NULL, t_off};
    na += (size_t)rank * s->cols;
    nb += (size_t)s->rows * rank;
    t_off += (int64_t)rows * rank;
  }
  return s->segs;
}

enum { LORA_MAX_SEGS = 64 };

static void setup_lora(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  add_random(c, r, "y", ACC, (size_t)s->n * s->rows, -1, 1);
  add_random(c, r, "x", IN, (size_t)s->n * s->cols, -1, 1);
  add_lora_segments(c, r, 0);
  if (!(s->nulls & 1)) add_f32(c, "t", OUT, (size_t)c->scalar);
  c->scalar = 0;
}
static void run_lora(mxl_backend *be, op_case *c, void *const *dev) {
  mxl_lora_seg segs[LORA_MAX_SEGS];
  int n = lora_segs_of(c, dev, segs);
  be->ops->lora(be, D("y"), D("t"), D("x"), segs, n, c->s.cols, c->s.rows);
}

static void setup_lora_bwd(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  if (!(s->nulls & 1)) add_random(c, r, "dx", ACC, (size_t)s->n * s->cols, -1, 1);
  add_random(c, r, "dy", IN, (size_t)s->n * s->rows, -1, 1);
  add_random(c, r, "x", IN, (size_t)s->n * s->cols, -1, 1);
  add_lora_segments(c, r, 1);
  add_random(c, r, "t", IN, (size_t)c->scalar, -2, 2);
  c->scalar = 0;
}
static void run_lora_bwd(mxl_backend *be, op_case *c, void *const *dev) {
  mxl_lora_seg segs[LORA_MAX_SEGS];
  int n = lora_segs_of(c, dev, segs);
  be->ops->lora_bwd(be, D("dx"), D("dy"), D("x"), D("t"), segs, n, c->s.cols, c->s.rows);
}

/* ------------------------------------------------------------ op table */

enum {
  EMBED, RMSNORM, MATMUL_BF16, GEMM_F32, ROPE, ATTENTION, ROUTER_TOPK, MOE_PLAN, MOE_GATHER,
  MXFP4_MATMUL, SWIGLU, MOE_COMBINE, ADD, DROPOUT, UNEMBED_XENT, RMSNORM_BWD, MATMUL_BF16_DX,
  ATTENTION_BWD, ROUTER_BWD, MOE_GATHER_BWD, MXFP4_MATMUL_DX, SWIGLU_BWD, MOE_COMBINE_BWD,
  ADAMW, SUM_SQUARES, LORA, LORA_BWD, N_OPS
};

/* The matmul thresholds (see the file comment): a bf16 fast path, and
 * matmuls that keep fp32 activations (an activation split into two bf16
 * halves leaves about 2^-16 relative, NMSE ≈ 1e-10). */
#define MATMUL_NMSE 5e-4
#define EXACT_MATMUL_NMSE 1e-8

#define OP(id, field, nmse, nmse_bf16) \
  [id] = {#field, offsetof(mxl_ops, field), nmse, nmse_bf16, setup_##field, run_##field}

static const op_def op_defs[N_OPS] = {
    OP(EMBED, embed, -1, -1),
    OP(RMSNORM, rmsnorm, 1e-8, 1e-4),
    OP(MATMUL_BF16, matmul_bf16, MATMUL_NMSE, MATMUL_NMSE),
    OP(GEMM_F32, gemm_f32, MATMUL_NMSE, MATMUL_NMSE),
    OP(ROPE, rope, 1e-8, 1e-4),
    OP(ATTENTION, attention, 1e-7, 5e-4),
    OP(ROUTER_TOPK, router_topk, 1e-8, 1e-4),
    OP(MOE_PLAN, moe_plan, -1, -1),
    OP(MOE_GATHER, moe_gather, -1, -1),
    OP(MXFP4_MATMUL, mxfp4_matmul, MATMUL_NMSE, MATMUL_NMSE),
    OP(SWIGLU, swiglu, 1e-8, 1e-4),
    OP(MOE_COMBINE, moe_combine, 1e-8, 1e-4),
    OP(ADD, add, -1, 1e-4),
    OP(DROPOUT, dropout, -1, -1),
    OP(UNEMBED_XENT, unembed_xent, MATMUL_NMSE, MATMUL_NMSE),
    OP(RMSNORM_BWD, rmsnorm_bwd, 1e-8, 1e-4),
    OP(MATMUL_BF16_DX, matmul_bf16_dx, MATMUL_NMSE, MATMUL_NMSE),
    OP(ATTENTION_BWD, attention_bwd, 1e-7, 5e-4),
    OP(ROUTER_BWD, router_bwd, 1e-8, 1e-4),
    OP(MOE_GATHER_BWD, moe_gather_bwd, 1e-8, 1e-4),
    OP(MXFP4_MATMUL_DX, mxfp4_matmul_dx, MATMUL_NMSE, MATMUL_NMSE),
    OP(SWIGLU_BWD, swiglu_bwd, 1e-8, 1e-4),
    OP(MOE_COMBINE_BWD, moe_combine_bwd, 1e-8, 1e-4),
    OP(ADAMW, adamw, 1e-8, 1e-8),
    OP(SUM_SQUARES, sum_squares, 1e-9, 1e-9),
    OP(LORA, lora, 1e-8, MATMUL_NMSE),
    OP(LORA_BWD, lora_bwd, 1e-8, MATMUL_NMSE),
};

/* ------------------------------------------------------------ cases */

typedef struct case_spec {
  int op;
  shape s;
  int heavy; /* left out on backends that take small cases only */
} case_spec;

#define C(id, ...) {id, {__VA_ARGS__}, 0}
#define HEAVY(id, ...) {id, {__VA_ARGS__}, 1}

static const case_spec cases[] = {
    C(EMBED, .n = 1, .H = 7, .V = 5),
    C(EMBED, .n = 13, .H = 64, .V = 50),

    C(RMSNORM, .n = 1, .H = 7),
    C(RMSNORM, .n = 5, .H = 64),
    C(RMSNORM, .n = 3, .H = 2880),
    C(RMSNORM, .n = 4, .H = 33, .nulls = 1),
    C(RMSNORM, .n = 5, .H = 300), /* rows longer than a CUDA block */
    C(RMSNORM_BWD, .n = 1, .H = 7),
    C(RMSNORM_BWD, .n = 5, .H = 64),
    C(RMSNORM_BWD, .n = 3, .H = 2880),
    C(RMSNORM_BWD, .n = 5, .H = 300),

    /* matmuls: single elements, partial tiles, several tiles each way */
    C(MATMUL_BF16, .n = 1, .rows = 5, .cols = 7),
    C(MATMUL_BF16, .n = 7, .rows = 33, .cols = 64, .bias = 1),
    C(MATMUL_BF16, .n = 16, .rows = 64, .cols = 2880, .bias = 1),
    C(MATMUL_BF16, .n = 3, .rows = 129, .cols = 31),
    C(MATMUL_BF16, .n = 70, .rows = 129, .cols = 31),
    C(MATMUL_BF16, .n = 32, .rows = 70, .cols = 100, .bias = 1), /* rows in place, batched decode */
    C(MATMUL_BF16_DX, .n = 1, .rows = 5, .cols = 7),
    C(MATMUL_BF16_DX, .n = 7, .rows = 33, .cols = 64, .bias = 1),
    C(MATMUL_BF16_DX, .n = 16, .rows = 64, .cols = 2880),
    C(MATMUL_BF16_DX, .n = 70, .rows = 100, .cols = 130),

    /* gemm_f32: the LoRA products (x·Aᵀ, t·Bᵀ, dyᵀ·t, dt·A) at odd sizes,
     * all four transposes, padded strides, beta 0 (C not read) and not,
     * several tiles */
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

    /* attention: 1 token; GQA 1, 2, 8; windows shorter than the sequence;
     * packed documents; KV-cache slots with empty entries; a query that
     * sees no key; dominant sinks; the largest head dim; several query and
     * key tiles */
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
    /* several 64-query and 64-key tiles (tensor-core kernels), large scores */
    C(ATTENTION, .nq = 130, .nk = 130, .nh = 2, .nkv = 1, .d = 64, .mask = MASK_CAUSAL, .big = 1),
    /* gpt-oss's head dim on tensor cores: a window and packed documents
     * across tile borders; a ring over two key tiles; a query that sees no
     * key (out 0, lse the sink) */
    C(ATTENTION, .nq = 100, .nk = 100, .nh = 4, .nkv = 2, .d = 64, .window = 40,
      .mask = MASK_PACKED, .segs = 2),
    C(ATTENTION, .nq = 3, .nk = 70, .nh = 4, .nkv = 1, .d = 64, .window = 50,
      .mask = MASK_KVCACHE),
    C(ATTENTION, .nq = 6, .nk = 6, .nh = 2, .nkv = 1, .d = 64, .mask = MASK_ORPHAN),
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
    /* several 64-query and 64-key tiles at gpt-oss's head dim (tensor-core
     * kernels): large scores; a window and packed documents across tile
     * borders; a ring over two key tiles; a query that sees no key */
    C(ATTENTION_BWD, .nq = 130, .nk = 130, .nh = 2, .nkv = 1, .d = 64, .mask = MASK_CAUSAL,
      .big = 1),
    C(ATTENTION_BWD, .nq = 100, .nk = 100, .nh = 4, .nkv = 2, .d = 64, .window = 40,
      .mask = MASK_PACKED, .segs = 2),
    C(ATTENTION_BWD, .nq = 3, .nk = 70, .nh = 4, .nkv = 1, .d = 64, .window = 50,
      .mask = MASK_KVCACHE),
    C(ATTENTION_BWD, .nq = 6, .nk = 6, .nh = 2, .nkv = 1, .d = 64, .mask = MASK_ORPHAN),

    C(ROUTER_TOPK, .n = 1, .E = 1, .k = 1),
    C(ROUTER_TOPK, .n = 9, .E = 32, .k = 4),
    C(ROUTER_TOPK, .n = 9, .E = 32, .k = 4, .ties = 1),
    C(ROUTER_TOPK, .n = 5, .E = 128, .k = 4),
    C(ROUTER_TOPK, .n = 7, .E = 6, .k = 2, .ties = 1),
    C(ROUTER_TOPK, .n = 3, .E = 5, .k = 5, .ties = 1),
    C(ROUTER_TOPK, .n = 4, .E = 8, .k = 3),
    C(ROUTER_TOPK, .n = 100, .E = 8, .k = 3),
    C(ROUTER_BWD, .n = 1, .E = 1, .k = 1),
    C(ROUTER_BWD, .n = 9, .E = 32, .k = 4),
    C(ROUTER_BWD, .n = 5, .E = 7, .k = 3),
    C(ROUTER_BWD, .n = 100, .E = 7, .k = 3),

    C(MOE_PLAN, .n = 1, .k = 1, .E = 1),
    C(MOE_PLAN, .n = 9, .k = 4, .E = 32),
    C(MOE_PLAN, .n = 17, .k = 2, .E = 3),
    C(MOE_PLAN, .n = 3, .k = 4, .E = 128),
    C(MOE_PLAN, .n = 300, .k = 4, .E = 9), /* several assignments per CUDA thread */
    C(MOE_GATHER, .n = 1, .k = 1, .E = 1, .H = 7),
    C(MOE_GATHER, .n = 9, .k = 4, .E = 32, .H = 64),
    C(MOE_GATHER, .n = 5, .k = 3, .E = 4, .H = 33),
    C(MOE_GATHER_BWD, .n = 1, .k = 1, .E = 1, .H = 7),
    C(MOE_GATHER_BWD, .n = 9, .k = 4, .E = 32, .H = 64),
    C(MOE_GATHER_BWD, .n = 5, .k = 2, .E = 4, .H = 33),

    /* MXFP4: dense (E = 1), grouped with experts hit or not, scale biases
     * 127 and 141, metal-style strides larger than the data, an expert
     * with several row tiles */
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
    /* 14 rows: past the few-row kernels, short of a packed panel */
    C(MXFP4_MATMUL, .n = 14, .k = 1, .E = 1, .rows = 70, .cols = 96, .bias = 1,
      .scale_bias = 127),
    /* tiled (tensor-core) backends: several reduction steps with a partial
     * last one, cp.async-aligned and unaligned (metal) weights */
    C(MXFP4_MATMUL, .n = 40, .k = 2, .E = 3, .rows = 72, .cols = 160, .bias = 1,
      .scale_bias = 127),
    C(MXFP4_MATMUL, .n = 40, .k = 2, .E = 3, .rows = 72, .cols = 160, .bias = 1,
      .scale_bias = 141, .metal = 1),
    C(MXFP4_MATMUL_DX, .n = 5, .k = 1, .E = 1, .rows = 7, .cols = 32, .scale_bias = 127),
    C(MXFP4_MATMUL_DX, .n = 6, .k = 2, .E = 5, .rows = 33, .cols = 64, .bias = 1,
      .scale_bias = 127),
    C(MXFP4_MATMUL_DX, .n = 3, .k = 4, .E = 32, .rows = 64, .cols = 96, .bias = 1,
      .scale_bias = 141, .metal = 1),
    C(MXFP4_MATMUL_DX, .n = 4, .k = 4, .E = 4, .rows = 2880, .cols = 64, .scale_bias = 127),
    C(MXFP4_MATMUL_DX, .n = 150, .k = 2, .E = 3, .rows = 70, .cols = 96, .scale_bias = 141),
    C(MXFP4_MATMUL_DX, .n = 40, .k = 2, .E = 3, .rows = 130, .cols = 96, .scale_bias = 141,
      .metal = 1),

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
    C(MOE_COMBINE_BWD, .n = 5, .k = 2, .E = 3, .H = 33),
    C(MOE_COMBINE_BWD, .n = 5, .k = 2, .E = 3, .H = 300),

    C(ADD, .n = 1),
    C(ADD, .n = 12345),
    C(DROPOUT, .n = 1, .p = 0.5f),
    C(DROPOUT, .n = 1025, .p = 0),
    C(DROPOUT, .n = 4099, .p = 0.1f),
    C(DROPOUT, .n = 4099, .p = 0.5f, .inplace = 1),
    C(DROPOUT, .n = 333, .p = 0.999f),

    /* unembed_xent: one chunk and several (targets in every chunk, a short
     * last chunk), bias, loss or dh alone, masked tokens (every third),
     * gpt-oss's whole vocabulary */
    C(UNEMBED_XENT, .n = 1, .rows = 50, .cols = 32),
    C(UNEMBED_XENT, .n = 7, .rows = 1001, .cols = 64),
    C(UNEMBED_XENT, .n = 6, .rows = 300, .cols = 33, .nulls = 1),
    C(UNEMBED_XENT, .n = 6, .rows = 300, .cols = 33, .nulls = 2),
    HEAVY(UNEMBED_XENT, .n = 3, .rows = 201088, .cols = 32),
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

    /* segmented LoRA: one segment of rank 1 on one row (decode), dense
     * runs with shared and uncovered rows, t not kept, many small segments
     * (experts × adapters), wide products with long reductions */
    C(LORA, .n = 1, .segs = 1, .rank = 1, .cols = 7, .rows = 5),
    C(LORA, .n = 7, .segs = 3, .rank = 8, .cols = 64, .rows = 96),
    C(LORA, .n = 7, .segs = 3, .rank = 8, .cols = 64, .rows = 96, .nulls = 1),
    C(LORA, .n = 40, .segs = 24, .rank = 16, .cols = 33, .rows = 70),
    C(LORA, .n = 50, .segs = 4, .rank = 16, .cols = 300, .rows = 600),
    HEAVY(LORA, .n = 256, .segs = 40, .rank = 16, .cols = 512, .rows = 1024),
    C(LORA_BWD, .n = 1, .segs = 1, .rank = 1, .cols = 7, .rows = 5),
    C(LORA_BWD, .n = 7, .segs = 3, .rank = 8, .cols = 64, .rows = 96),
    C(LORA_BWD, .n = 9, .segs = 6, .rank = 4, .cols = 64, .rows = 48, .nulls = 3),
    C(LORA_BWD, .n = 40, .segs = 24, .rank = 16, .cols = 33, .rows = 70),
    C(LORA_BWD, .n = 50, .segs = 4, .rank = 16, .cols = 300, .rows = 600),
    HEAVY(LORA_BWD, .n = 256, .segs = 40, .rank = 16, .cols = 512, .rows = 1024, .nulls = 2),

    /* Cases added later go here: a case's data is seeded by its index, so
     * appending keeps every earlier case's data as it was. */
    /* unembed_xent of a confident model, dh from zero (setup_unembed_xent) */
    C(UNEMBED_XENT, .n = 6, .rows = 300, .cols = 64, .big = 1),
    C(UNEMBED_XENT, .n = 6, .rows = 300, .cols = 64, .big = 1, .chunk = 64),
    /* 5 query heads per KV head: CPU query blocks of 25 queries, 125 rows
     * (an odd count: bf16 operands pair rows within each block), big
     * scores, three query blocks and three key blocks */
    C(ATTENTION, .nq = 150, .nk = 150, .nh = 10, .nkv = 2, .d = 40, .mask = MASK_CAUSAL,
      .big = 1),
    C(ATTENTION_BWD, .nq = 150, .nk = 150, .nh = 10, .nkv = 2, .d = 40, .mask = MASK_CAUSAL,
      .big = 1),
    /* an odd head dim: bf16 operands pair the reduction over d (its last
     * pair half empty) and over the keys of a short last block */
    C(ATTENTION, .nq = 45, .nk = 45, .nh = 6, .nkv = 2, .d = 33, .window = 20,
      .mask = MASK_PACKED, .segs = 2),
    C(ATTENTION_BWD, .nq = 45, .nk = 45, .nh = 6, .nkv = 2, .d = 33, .window = 20,
      .mask = MASK_PACKED, .segs = 2),
    /* segments that share no row (experts): the CPU backend carries each
     * block of rows through the whole chain; segments of 1 to ~80 rows,
     * several row blocks each, and rows without an adapter */
    C(LORA, .n = 200, .segs = 5, .rank = 16, .cols = 96, .rows = 80, .experts = 1),
    C(LORA, .n = 200, .segs = 5, .rank = 16, .cols = 96, .rows = 80, .experts = 1, .nulls = 1),
    C(LORA, .n = 120, .segs = 30, .rank = 8, .cols = 40, .rows = 33, .experts = 1),
    C(LORA_BWD, .n = 200, .segs = 5, .rank = 16, .cols = 96, .rows = 80, .experts = 1),
    C(LORA_BWD, .n = 200, .segs = 5, .rank = 16, .cols = 96, .rows = 80, .experts = 1,
      .nulls = 3),
    C(LORA_BWD, .n = 120, .segs = 30, .rank = 8, .cols = 40, .rows = 33, .experts = 1),
    HEAVY(LORA, .n = 512, .segs = 8, .rank = 16, .cols = 256, .rows = 512, .experts = 1),
    HEAVY(LORA_BWD, .n = 512, .segs = 8, .rank = 16, .cols = 256, .rows = 512, .experts = 1),
    /* windows across several key blocks: blocks wholly before a query
     * block yet partly outside its window (the CPU backend's whole-block
     * mask shortcut must not take them), wholly inside, wholly outside */
    C(ATTENTION, .nq = 200, .nk = 200, .nh = 4, .nkv = 2, .d = 32, .window = 100,
      .mask = MASK_CAUSAL),
    C(ATTENTION_BWD, .nq = 200, .nk = 200, .nh = 4, .nkv = 2, .d = 32, .window = 100,
      .mask = MASK_CAUSAL),
    C(ATTENTION, .nq = 260, .nk = 260, .nh = 2, .nkv = 1, .d = 16, .window = 70,
      .mask = MASK_PACKED, .segs = 2),
    C(ATTENTION_BWD, .nq = 260, .nk = 260, .nh = 2, .nkv = 1, .d = 16, .window = 70,
      .mask = MASK_PACKED, .segs = 2),
};
enum { N_CASES = sizeof cases / sizeof cases[0] };

/* ------------------------------------------------------------ running */

/* One backend's results for one case. */
typedef struct results {
  void *data[MAX_TENSORS];
  double scalar;
} results;

static void results_free(results *res, int nt) {
  for (int i = 0; i < nt; i++) free(res->data[i]);
  memset(res, 0, sizeof *res);
}

/* Runs the case on `be`: every tensor is uploaded between GUARD sentinel
 * bytes, the op runs, sync, everything comes back; the guards and the
 * inputs must be unchanged. Returns 0, or -1 with `why`. */
static int run_case(mxl_backend *be, op_case *c, results *res, char *why, size_t why_size) {
  void *dev[MAX_TENSORS] = {0}, *base[MAX_TENSORS] = {0};
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
          snprintf(why, why_size, "guard bytes around %s overwritten (%s)", c->t[i].name,
                   back[b] != 0xA5 ? "before" : "after");
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
  for (int i = 0; i < c->nt && rc == 0; i++)
    if (!res->data[i]) {
      snprintf(why, why_size, "out of host memory");
      rc = -1;
    }
  return rc;
}

/* Compares one float tensor of backend b against ref r; for ACC tensors
 * both are first reduced to their deltas from the prefill. Returns the
 * NMSE, or +inf (with `why`) on a NaN/Inf mismatch. */
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

/* Compares every output of `be_res` with `ref_res`; returns the worst
 * NMSE / threshold ratio (0 for exact matches), or +inf with `why`.
 * `worst_val` gets the worst NMSE itself. */
static double compare_case(const op_case *c, const results *ref_res, const results *be_res,
                           double thr, char *why, size_t why_size, double *worst_val) {
  double ratio = 0;
  *worst_val = 0;
  if (c->op->run == run_sum_squares) {
    double rel = fabs(be_res->scalar - ref_res->scalar) / fmax(fabs(ref_res->scalar), 1e-300);
    *worst_val = rel;
    if (!(rel <= thr))
      snprintf(why, why_size, "sum %.17g vs ref %.17g", be_res->scalar, ref_res->scalar);
    return rel <= thr ? rel / thr : INFINITY;
  }
  for (int i = 0; i < c->nt; i++) {
    const tensor *t = &c->t[i];
    if (t->role == IN) continue;
    if ((t->type != F32 || thr < 0) &&
        memcmp(be_res->data[i], ref_res->data[i], tensor_bytes(t)) != 0) {
      snprintf(why, why_size, "%s differs bitwise from ref", t->name);
      return INFINITY;
    }
    if (t->type != F32) continue;
    size_t ref_nans;
    double nmse = compare_f32(t, be_res->data[i], ref_res->data[i], &ref_nans, why, why_size);
    if (ref_nans != t->nan_pad) {
      snprintf(why, why_size, "ref left %zu NaN in %s, expected %zu (case or ref bug)", ref_nans,
               t->name, t->nan_pad);
      return INFINITY;
    }
    if (nmse > *worst_val) *worst_val = nmse;
    if (thr < 0) continue;
    if (!(nmse <= thr)) {
      if (isfinite(nmse)) snprintf(why, why_size, "%s: nmse %.3g above %.3g", t->name, nmse, thr);
      return INFINITY;
    }
    if (nmse / thr > ratio) ratio = nmse / thr;
  }
  return ratio;
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

/* ------------------------------------------------------------ backends */

/* A backend under test. */
typedef struct ops_backend {
  const char *label; /* on every line; tools/gpu_suite.sh greps test_ops' "cuda" */
  mxl_status (*create)(mxl_backend **out);
  int bf16_activations; /* thresholds of the bf16 column */
  int exact_matmuls;    /* matmuls keep fp32 activations: EXACT_MATMUL_NMSE */
  int small_cases;      /* leaves out the heavy cases */
  int runs;             /* runs of every case (0: one), all bitwise equal */
  const char *const *run_names; /* [runs], for messages */
  /* Called before each run of each case (the emulator sets its thread
   * order and unembed_xent chunk); NULL: nothing to do. */
  void (*before_run)(mxl_backend *be, const case_spec *cs, int ci, int run);
  int bf16_attention; /* attention (+bwd) with bf16 operands: their bf16 thresholds */
} ops_backend;

/* Worst NMSE and case count per op, for the summary. */
typedef struct ops_stats {
  double worst[N_OPS];
  int ran[N_OPS];
} ops_stats;

/* The threshold of op o on backend b. */
static double threshold(int o, const ops_backend *b) {
  if (b->bf16_activations || (b->bf16_attention && (o == ATTENTION || o == ATTENTION_BWD)))
    return op_defs[o].nmse_bf16;
  if (b->exact_matmuls && op_defs[o].nmse == MATMUL_NMSE) return EXACT_MATMUL_NMSE;
  return op_defs[o].nmse;
}

static int backend_runs(const ops_backend *b) { return b->runs > 1 ? b->runs : 1; }

static const char *run_name(const ops_backend *b, int run) {
  return b->run_names ? b->run_names[run] : "run";
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
  FIELD(s->nq, "nq=%d nk=%d nh=%d nkv=%d d=%d mask=%s", s->nq, s->nk, s->nh, s->nkv, s->d,
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
  FIELD(s->rank, "rank<=%d", s->rank);
  FIELD(s->experts, "experts%s", "");
#undef FIELD
}

/* Sets case `ci` up, runs it on ref, then on `be` as many times as `b`
 * says: every run is compared with ref and must give the bits of the
 * first. Returns the worst NMSE / threshold ratio (`worst_val`: the worst
 * NMSE), or +inf with `why`. */
static double check_case(int ci, mxl_backend *ref, mxl_backend *be, const ops_backend *b,
                         double thr, char *why, size_t why_size, double *worst_val) {
  const case_spec *cs = &cases[ci];
  op_case c = {.op = &op_defs[cs->op], .s = cs->s};
  test_rng rng = {0x1234567ull + 7919ull * (uint64_t)ci};
  c.op->setup(&c, &rng, ref);
  int runs = backend_runs(b);
  results rr, br[OPS_MAX_RUNS];
  memset(br, 0, sizeof br);
  char sub[256] = "";
  double ratio = INFINITY;
  *worst_val = 0;
  if (runs > OPS_MAX_RUNS) abort();
  if (run_case(ref, &c, &rr, sub, sizeof sub) != 0) {
    snprintf(why, why_size, "ref: %s", sub);
  } else {
    ratio = 0;
    for (int k = 0; k < runs && isfinite(ratio); k++) {
      if (b->before_run) b->before_run(be, cs, ci, k);
      double r = INFINITY, val = 0;
      if (run_case(be, &c, &br[k], sub, sizeof sub) == 0)
        r = compare_case(&c, &rr, &br[k], thr, sub, sizeof sub, &val);
      if (isfinite(r) && k > 0 && !same_results(&c, &br[0], &br[k], sub, sizeof sub)) {
        r = INFINITY;
        snprintf(why, why_size, "%s differs from %s: %s", run_name(b, k), run_name(b, 0), sub);
      } else if (!isfinite(r)) {
        snprintf(why, why_size, "%s%s%s", runs > 1 ? run_name(b, k) : "", runs > 1 ? ": " : "",
                 sub);
      }
      ratio = fmax(ratio, r);
      *worst_val = fmax(*worst_val, val);
    }
  }
  results_free(&rr, c.nt);
  for (int k = 0; k < runs; k++) results_free(&br[k], c.nt);
  case_free(&c);
  return ratio;
}

static int op_present(const mxl_backend *be, const op_def *op) {
  return *(void *const *)((const char *)be->ops + op->fn) != NULL;
}

static double seconds_since(const struct timespec *t0) {
  struct timespec t1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

/* Runs every case on `be` (described by `b`) against `ref`, one line per
 * case: "ok   <label> <op> <shape>  err <nmse>  <seconds> s", or FAIL with
 * the reason, or skip. */
static void ops_test_backend(mxl_backend *ref, mxl_backend *be, const ops_backend *b,
                             ops_stats *stats) {
  for (int ci = 0; ci < N_CASES; ci++) {
    const case_spec *cs = &cases[ci];
    const op_def *op = &op_defs[cs->op];
    char desc[256] = "", why[300] = "";
    describe(cs, desc, sizeof desc);
    mxl_test_current = op->name;
    if (!op_present(be, op) || (cs->heavy && b->small_cases)) {
      printf("skip %-11s %-16s%s (%s)\n", b->label, op->name, desc,
             op_present(be, op) ? "a heavy case: small cases only" : "op not implemented");
      mxl_test_skips++;
      continue;
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double worst_val, ratio = check_case(ci, ref, be, b, threshold(cs->op, b), why, sizeof why,
                                         &worst_val);
    int ok = isfinite(ratio);
    MXL_CHECK_MSG(ok, "%s %s%s: %s", b->label, op->name, desc, why);
    mxl_test_cases++;
    if (!ok) mxl_test_failed_cases++;
    stats->ran[cs->op]++;
    if (worst_val > stats->worst[cs->op]) stats->worst[cs->op] = worst_val;
    printf("%s %-11s %-16s%s  err %.2e  %.2f s%s%s\n", ok ? "ok  " : "FAIL", b->label, op->name,
           desc, worst_val, seconds_since(&t0), ok ? "" : "  ", why);
  }
}

/* The summary lines of backend `b`: the worst error per op (NMSE;
 * sum_squares: relative; over every run) and its threshold. */
static void ops_print_summary(const ops_backend *b, const ops_stats *stats) {
  for (int o = 0; o < N_OPS; o++) {
    if (!stats->ran[o]) continue;
    double thr = threshold(o, b);
    char thr_text[32] = "bitwise";
    if (thr >= 0) snprintf(thr_text, sizeof thr_text, "%.0e", thr);
    printf("  %-11s %-16s %3d cases  worst %.2e  threshold %s\n", b->label, op_defs[o].name,
           stats->ran[o], stats->worst[o], thr_text);
  }
}

/* ------------------------------------------------------------ mutants */

/* A mutant: one op of the base backend's table replaced by a broken one. */
typedef struct ops_mutant {
  const char *what;
  int op;     /* the case table's first case of this op... */
  int nth;    /* ...or its nth (0-based) */
  size_t fn;  /* offsetof(mxl_ops, op) */
  void *impl; /* the broken function */
} ops_mutant;

/* The table the broken functions wrap (the base backend's). */
static const mxl_ops *mutant_base;

static void bad_rmsnorm_bwd(mxl_backend *be, float *dx, const float *dy, const float *x,
                            const float *rstd, const uint16_t *g, int n, int H, float eps) {
  memset(dx, 0, sizeof *dx * (size_t)n * H); /* overwrites instead of adding */
  mutant_base->rmsnorm_bwd(be, dx, dy, x, rstd, g, n, H, eps);
}
static void bad_matmul_bf16(mxl_backend *be, float *y, const float *x, const mxl_bf16_weight *W,
                            int n) {
  mutant_base->matmul_bf16(be, y, x, W, n);
  y[(size_t)n * W->rows] = 0; /* one element past the end */
}
static void bad_add(mxl_backend *be, float *y, const float *x, size_t n) {
  mutant_base->add(be, y, x, n);
  ((float *)x)[0] = 1; /* scribbles on an input */
}
static void bad_moe_combine(mxl_backend *be, float *out, const float *ys,
                            const mxl_moe_plan *plan, int H) {
  mutant_base->moe_combine(be, out, ys, plan, H);
  ((float *)ys)[0] += 1; /* scribbles on an input */
}
static void bad_swiglu(mxl_backend *be, float *act, const float *h, int m, int I, float alpha,
                       float limit) {
  mutant_base->swiglu(be, act, h, m - 1, I, alpha, limit); /* forgets the last row */
}
static void bad_gemm(mxl_backend *be, int tA, int tB, int M, int N, int K, float alpha,
                     const float *A, int lda, const float *B, int ldb, float beta, float *C,
                     int ldc) {
  mutant_base->gemm_f32(be, tA, tB, M, N, K, alpha, A, lda, B, ldb, beta == 0 ? 1 : beta, C,
                        ldc); /* reads C although beta == 0 */
}
static void bad_attention(mxl_backend *be, float *out, float *lse, const float *q,
                          const float *k, const float *v, const uint16_t *sinks,
                          const mxl_attn_mask *mask, int nq, int nk, int nh, int nkv, int d,
                          float scale) {
  mxl_attn_mask wide = *mask;
  wide.window += 1; /* off by one at the window edge */
  mutant_base->attention(be, out, lse, q, k, v, sinks, &wide, nq, nk, nh, nkv, d, scale);
}
static void bad_attention_bwd(mxl_backend *be, float *dq, float *dk, float *dv,
                              const float *dout, const float *out, const float *lse,
                              const float *q, const float *k, const float *v,
                              const uint16_t *sinks, const mxl_attn_mask *mask, int nq, int nk,
                              int nh, int nkv, int d, float scale) {
  mxl_attn_mask wide = *mask;
  wide.window += 1; /* off by one at the window edge */
  mutant_base->attention_bwd(be, dq, dk, dv, dout, out, lse, q, k, v, sinks, &wide, nq, nk, nh,
                             nkv, d, scale);
}
static void bad_swiglu_bwd(mxl_backend *be, float *dh, const float *dact, const float *h, int m,
                           int I, float alpha, float limit) {
  /* blocks the gradient at the clamp boundaries (PyTorch passes it) */
  mutant_base->swiglu_bwd(be, dh, dact, h, m, I, alpha, nextafterf(limit, 0));
}
static void bad_router_topk(mxl_backend *be, int32_t *experts, float *weights,
                            const float *logits, int n, int E, int k) {
  /* ties to the higher index: the base on the reversed logits, indices
   * mapped back (host memory: mutants wrap host-memory backends only) */
  float *rev = malloc(sizeof *rev * (size_t)n * E);
  if (!rev) abort();
  for (int t = 0; t < n; t++)
    for (int e = 0; e < E; e++) rev[t * E + e] = logits[t * E + (E - 1 - e)];
  mutant_base->router_topk(be, experts, weights, rev, n, E, k);
  for (int a = 0; a < n * k; a++) experts[a] = E - 1 - experts[a];
  free(rev);
}
static void bad_dropout(mxl_backend *be, float *y, const float *x, size_t n, float p,
                        uint64_t seed) {
  mutant_base->dropout(be, y, x, n, p, seed + 1); /* another mask */
}

static void bad_lora(mxl_backend *be, float *y, float *t, const float *x,
                     const mxl_lora_seg *segs, int n, int in, int out) {
  mutant_base->lora(be, y, t, x, segs, n - 1, in, out); /* forgets the last adapter */
}
static void bad_lora_bwd(mxl_backend *be, float *dx, const float *dy, const float *x,
                         const float *t, const mxl_lora_seg *segs, int n, int in, int out) {
  mxl_lora_seg swapped[LORA_MAX_SEGS];
  for (int i = 0; i < n; i++) {
    swapped[i] = segs[i];
    swapped[i].scale = segs[i].scale * 0.5f; /* a scale applied once instead of twice */
  }
  mutant_base->lora_bwd(be, dx, dy, x, t, swapped, n, in, out);
}

#define MUTANT(what, id, nth, field, impl) \
  {what, id, nth, offsetof(mxl_ops, field), (void *)impl}

/* The driver's own mutants, for any base backend with host memory. */
static const ops_mutant ops_shared_mutants[] = {
    MUTANT("overwrites a += output", RMSNORM_BWD, 1, rmsnorm_bwd, bad_rmsnorm_bwd),
    MUTANT("writes past the end", MATMUL_BF16, 1, matmul_bf16, bad_matmul_bf16),
    MUTANT("modifies an input", ADD, 1, add, bad_add),
    MUTANT("modifies a plan-indexed input", MOE_COMBINE, 1, moe_combine, bad_moe_combine),
    MUTANT("leaves an output row unwritten", SWIGLU, 1, swiglu, bad_swiglu),
    MUTANT("reads C with beta 0", GEMM_F32, 0, gemm_f32, bad_gemm),
    MUTANT("window off by one", ATTENTION, 2, attention, bad_attention),
    MUTANT("window off by one", ATTENTION_BWD, 10, attention_bwd, bad_attention_bwd),
    MUTANT("clamp boundary blocks gradient", SWIGLU_BWD, 2, swiglu_bwd, bad_swiglu_bwd),
    MUTANT("router ties to the higher index", ROUTER_TOPK, 2, router_topk, bad_router_topk),
    MUTANT("another dropout mask", DROPOUT, 2, dropout, bad_dropout),
    MUTANT("drops a row's last adapter", LORA, 1, lora, bad_lora),
    MUTANT("LoRA gradient scale off", LORA_BWD, 1, lora_bwd, bad_lora_bwd),
};
enum { N_SHARED_MUTANTS = sizeof ops_shared_mutants / sizeof ops_shared_mutants[0] };

/* Runs each mutant of `list` (built on `base`, described by `b`) on its
 * case; the driver must report every one as failing. */
static void ops_test_mutants(mxl_backend *ref, mxl_backend *base, const ops_backend *b,
                             const ops_mutant *list, int n) {
  mutant_base = base->ops;
  for (int i = 0; i < n; i++) {
    const ops_mutant *mu = &list[i];
    mxl_ops table = *base->ops;
    memcpy((char *)&table + mu->fn, &mu->impl, sizeof mu->impl);
    mxl_backend bad = *base;
    bad.ops = &table;
    int ci = 0, seen = 0;
    while (ci < N_CASES && !(cases[ci].op == mu->op && seen++ == mu->nth)) ci++;
    mxl_test_current = mu->what;
    MXL_CHECK_MSG(ci < N_CASES, "no case for the mutant");
    if (ci == N_CASES) continue;
    char why[300] = "";
    double worst_val;
    double ratio = check_case(ci, ref, &bad, b, threshold(mu->op, b), why, sizeof why, &worst_val);
    MXL_CHECK_MSG(!isfinite(ratio), "the driver passed a broken %s", op_defs[mu->op].name);
    printf("%s mutant %-11s %-16s %s: %s\n", isfinite(ratio) ? "FAIL" : "ok  ", b->label,
           op_defs[mu->op].name, mu->what, isfinite(ratio) ? "not caught" : why);
    mxl_test_cases++;
    if (isfinite(ratio)) mxl_test_failed_cases++;
  }
}

#undef D

#endif
