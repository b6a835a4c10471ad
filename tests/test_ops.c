/* test_ops: every op of every available backend against the ref oracle.
 *
 * Modelled on ggml's test-backend-ops (ideas only): one case table; each
 * case names an op and its shapes; the inputs are random with a per-case
 * seed, identical for every backend. For each backend other than ref the
 * case runs on ref and on that backend, then:
 *   - outputs (overwritten by the op) are pre-filled with NaN, so an element
 *     the op forgets to write shows up as NaN;
 *   - "+=" outputs are pre-filled with random values and compared as deltas
 *     (result − prefill), so a backend that overwrites instead of adding fails;
 *   - NaN where ref has none fails, Inf must match in sign, then the
 *     normalised MSE  Σ(b − r)² / Σr²  must be under the op's threshold
 *     (below); integer outputs and the ops marked exact must match bitwise;
 *   - every buffer sits between GUARD sentinel bytes, which must come back
 *     unchanged, and every input must come back unchanged.
 * Ops a backend leaves NULL are reported as skipped.
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
 *                A backend in an exact mode (cpu-exact) gets 1e-8 here.
 *   1e-8         adamw (master weights are fp32 on every backend), compared
 *                on the update (param, m, v deltas).
 *   1e-9 rel.    sum_squares (double accumulation in any order).
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu.h"
#include "kernels/ops.h"
#include "ops_util.h"
#include "test.h"

enum { MAX_TENSORS = 16, GUARD = 256 };

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
  float big;       /* attention: large sinks / scores */
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

static size_t dtype_size(dtype t) {
  return t == F32 || t == I32 ? 4 : t == U16 ? 2 : 1;
}

static size_t tensor_bytes(const tensor *t) { return t->count * dtype_size(t->type); }

/* Adds a tensor; OUT tensors start as NaN (floats) or 0xA5 bytes. */
static void *add_tensor(op_case *c, const char *name, dtype type, role role, size_t count) {
  if (c->nt == MAX_TENSORS) abort();
  tensor *t = &c->t[c->nt++];
  *t = (tensor){name, type, role, count, NULL, 0};
  t->data = calloc(count ? count : 1, dtype_size(type));
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

/* Random values for ACC / INOUT tensors before the op adds to them. */
static float *add_prefilled(op_case *c, test_rng *r, const char *name, role role,
                            size_t count) {
  float *x = add_f32(c, name, role, count);
  rng_fill_f32(r, x, count, -1, 1);
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
  int32_t *experts = add_i32(c, "experts", IN, (size_t)n * k);
  float *weights = add_f32(c, "weights", IN, (size_t)n * k);
  int32_t *order = add_i32(c, "order", IN, (size_t)n * k);
  int32_t *slot = add_i32(c, "slot", IN, (size_t)n * k);
  int32_t *offsets = add_i32(c, "offsets", IN, (size_t)E + 1);
  rng_experts(r, experts, n, k, E);
  rng_fill_f32(r, weights, (size_t)n * k, 0.05, 1);
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
  rng_fill_bf16(r, add_tensor(c, "w", U16, IN, (size_t)s->rows * s->cols), (size_t)s->rows * s->cols,
                -0.5, 0.5);
  if (s->bias) rng_fill_bf16(r, add_tensor(c, "b", U16, IN, (size_t)s->rows), (size_t)s->rows, -1, 1);
}

static mxl_bf16_weight bf16_weight_of(const op_case *c, void *const *dev) {
  return (mxl_bf16_weight){D("w"), D("b"), c->s.rows, c->s.cols};
}

/* MXFP4 experts [E, rows, cols]. HF layout: tensors blocks, scales, bias
 * with experts contiguous. Metal layout (s->metal): one buffer "wbuf" where
 * each expert's blocks, scales and bias sit side by side in a region 48
 * bytes larger than the data, so the strides exceed the data. */
static size_t mx_blocks_bytes(const shape *s) { return (size_t)s->rows * s->cols / 2; }
static size_t mx_scales_bytes(const shape *s) { return (size_t)s->rows * s->cols / 32; }
static size_t mx_region(const shape *s) {
  size_t bytes = mx_blocks_bytes(s) + mx_scales_bytes(s);
  bytes = (bytes + 1) & ~(size_t)1; /* the bias is bf16-aligned */
  return bytes + (size_t)s->rows * 2 + 48;
}

static void add_mxfp4_weight(op_case *c, test_rng *r) {
  const shape *s = &c->s;
  size_t nb = mx_blocks_bytes(s), ns = mx_scales_bytes(s);
  if (s->metal) {
    size_t region = mx_region(s);
    uint8_t *buf = add_tensor(c, "wbuf", U8, IN, region * s->E);
    for (int e = 0; e < s->E; e++) {
      uint8_t *base = buf + region * e;
      rng_fill_mxfp4(r, base, base + nb, s->rows, s->cols, s->scale_bias);
      uint16_t *bias = (uint16_t *)(void *)(base + ((nb + ns + 1) & ~(size_t)1));
      rng_fill_bf16(r, bias, (size_t)s->rows, -1, 1);
      memset(base + region - 48, 0xEE, 48); /* junk between experts */
    }
    return;
  }
  uint8_t *blocks = add_tensor(c, "blocks", U8, IN, nb * s->E);
  uint8_t *scales = add_tensor(c, "scales", U8, IN, ns * s->E);
  for (int e = 0; e < s->E; e++)
    rng_fill_mxfp4(r, blocks + nb * e, scales + ns * e, s->rows, s->cols, s->scale_bias);
  if (s->bias)
    rng_fill_bf16(r, add_tensor(c, "bias", U16, IN, (size_t)s->E * s->rows),
                  (size_t)s->E * s->rows, -1, 1);
}

static mxl_mxfp4_weight mxfp4_weight_of(const op_case *c, void *const *dev) {
  const shape *s = &c->s;
  mxl_mxfp4_weight W = {0};
  W.rows = s->rows;
  W.cols = s->cols;
  W.n_experts = s->E;
  W.scale_bias = s->scale_bias;
  size_t nb = mx_blocks_bytes(s), ns = mx_scales_bytes(s);
  if (s->metal) {
    const uint8_t *buf = D("wbuf");
    size_t region = mx_region(s);
    W.blocks = buf;
    W.scales = buf + nb;
    W.bias = s->bias ? (const uint16_t *)(const void *)(buf + ((nb + ns + 1) & ~(size_t)1)) : NULL;
    W.blocks_stride = W.scales_stride = region;
    W.bias_stride = region / 2;
  } else {
    W.blocks = D("blocks");
    W.scales = D("scales");
    W.bias = D("bias");
    W.blocks_stride = nb;
    W.scales_stride = ns;
    W.bias_stride = (size_t)s->rows;
  }
  return W;
}

/* Attention inputs q, k, v, sinks and the mask arrays. */
static void add_attention_inputs(op_case *c, test_rng *r) {
  const shape *s = &c->s;
  float *q = add_f32(c, "q", IN, (size_t)s->nq * s->nh * s->d);
  float *k = add_f32(c, "k", IN, (size_t)s->nk * s->nkv * s->d);
  float *v = add_f32(c, "v", IN, (size_t)s->nk * s->nkv * s->d);
  uint16_t *sinks = add_tensor(c, "sinks", U16, IN, (size_t)s->nh);
  double qs = s->big ? 3.0 : 1.0;
  for (size_t i = 0; i < (size_t)s->nq * s->nh * s->d; i++) q[i] = (float)(qs * rng_normal(r));
  for (size_t i = 0; i < (size_t)s->nk * s->nkv * s->d; i++) {
    k[i] = (float)rng_normal(r);
    v[i] = (float)rng_normal(r);
  }
  rng_fill_bf16(r, sinks, (size_t)s->nh, s->big ? 2 : -2, s->big ? 6 : 2);
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
  rng_fill_bf16(r, add_tensor(c, "table", U16, IN, (size_t)s->V * s->H), (size_t)s->V * s->H, -2, 2);
  int32_t *ids = add_i32(c, "ids", IN, (size_t)s->n);
  for (int t = 0; t < s->n; t++) ids[t] = rng_int(r, s->V);
  ids[0] = s->V - 1;
}
static void run_embed(mxl_backend *be, op_case *c, void *const *dev) {
  be->ops->embed(be, D("x"), D("table"), D("ids"), c->s.n, c->s.H);
}

static void setup_rmsnorm(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  add_f32(c, "y", OUT, (size_t)s->n * s->H);
  if (!(s->nulls & 1)) add_f32(c, "rstd", OUT, (size_t)s->n);
  rng_fill_f32(r, add_f32(c, "x", IN, (size_t)s->n * s->H), (size_t)s->n * s->H, -3, 3);
  rng_fill_bf16(r, add_tensor(c, "g", U16, IN, (size_t)s->H), (size_t)s->H, 0.5, 1.5);
}
static void run_rmsnorm(mxl_backend *be, op_case *c, void *const *dev) {
  be->ops->rmsnorm(be, D("y"), D("rstd"), D("x"), D("g"), c->s.n, c->s.H, 1e-5f);
}

static void setup_rmsnorm_bwd(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  size_t nH = (size_t)s->n * s->H;
  add_prefilled(c, r, "dx", ACC, nH);
  rng_fill_f32(r, add_f32(c, "dy", IN, nH), nH, -1, 1);
  float *x = add_f32(c, "x", IN, nH), *rstd = add_f32(c, "rstd", IN, (size_t)s->n);
  rng_fill_f32(r, x, nH, -3, 3);
  for (int t = 0; t < s->n; t++) {
    double ss = 0;
    for (int j = 0; j < s->H; j++) ss += (double)x[t * s->H + j] * x[t * s->H + j];
    rstd[t] = (float)(1.0 / sqrt(ss / s->H + 1e-5));
  }
  rng_fill_bf16(r, add_tensor(c, "g", U16, IN, (size_t)s->H), (size_t)s->H, 0.5, 1.5);
}
static void run_rmsnorm_bwd(mxl_backend *be, op_case *c, void *const *dev) {
  be->ops->rmsnorm_bwd(be, D("dx"), D("dy"), D("x"), D("rstd"), D("g"), c->s.n, c->s.H, 1e-5f);
}

static void setup_matmul_bf16(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  add_f32(c, "y", OUT, (size_t)s->n * s->rows);
  rng_fill_f32(r, add_f32(c, "x", IN, (size_t)s->n * s->cols), (size_t)s->n * s->cols, -1, 1);
  add_bf16_weight(c, r);
}
static void run_matmul_bf16(mxl_backend *be, op_case *c, void *const *dev) {
  mxl_bf16_weight W = bf16_weight_of(c, dev);
  be->ops->matmul_bf16(be, D("y"), D("x"), &W, c->s.n);
}

static void setup_matmul_bf16_dx(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  add_prefilled(c, r, "dx", ACC, (size_t)s->n * s->cols);
  rng_fill_f32(r, add_f32(c, "dy", IN, (size_t)s->n * s->rows), (size_t)s->n * s->rows, -1, 1);
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

static void setup_gemm(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  size_t na = (size_t)(s->tA ? s->K : s->M) * gemm_lda(s);
  size_t nb = (size_t)(s->tB ? s->N : s->K) * gemm_ldb(s);
  size_t nc = (size_t)s->M * gemm_ldc(s);
  rng_fill_f32(r, add_f32(c, "A", IN, na), na, -1, 1);
  rng_fill_f32(r, add_f32(c, "B", IN, nb), nb, -1, 1);
  if (s->beta == 0) {
    add_f32(c, "C", OUT, nc); /* NaN: beta == 0 must not read C */
    c->t[c->nt - 1].nan_pad = (size_t)s->M * s->pad;
  } else {
    add_prefilled(c, r, "C", INOUT, nc);
  }
}
static void run_gemm(mxl_backend *be, op_case *c, void *const *dev) {
  const shape *s = &c->s;
  be->ops->gemm_f32(be, s->tA, s->tB, s->M, s->N, s->K, s->alpha, D("A"), gemm_lda(s), D("B"),
                    gemm_ldb(s), s->beta, D("C"), gemm_ldc(s));
}

static void setup_rope(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  size_t nx = (size_t)s->n * s->nh * s->d;
  rng_fill_f32(r, add_f32(c, "x", INOUT, nx), nx, -2, 2);
  int32_t *pos = add_i32(c, "pos", IN, (size_t)s->n);
  for (int t = 0; t < s->n; t++) pos[t] = t == 0 ? 0 : rng_int(r, 131072);
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
  size_t nqo = (size_t)s->nq * s->nh * s->d, nkv = (size_t)s->nk * s->nkv * s->d;
  add_prefilled(c, r, "dq", ACC, nqo);
  add_prefilled(c, r, "dk", ACC, nkv);
  add_prefilled(c, r, "dv", ACC, nkv);
  rng_fill_f32(r, add_f32(c, "dout", IN, nqo), nqo, -1, 1);
  float *out = add_f32(c, "out", IN, nqo), *lse = add_f32(c, "lse", IN, (size_t)s->nq * s->nh);
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
  add_prefilled(c, r, "dlogits", ACC, (size_t)s->n * s->E);
  rng_fill_f32(r, add_f32(c, "dweights", IN, nk), nk, -1, 1);
  rng_fill_f32(r, add_f32(c, "weights", IN, nk), nk, 0.05, 1);
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
  rng_fill_f32(r, add_f32(c, "x", IN, (size_t)s->n * s->H), (size_t)s->n * s->H, -1, 1);
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
  add_prefilled(c, r, "dx", ACC, (size_t)s->n * s->H);
  rng_fill_f32(r, add_f32(c, "dxs", IN, m * s->H), m * s->H, -1, 1);
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
  rng_fill_f32(r, add_f32(c, "x", IN, m * s->cols), m * s->cols, -1, 1);
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
  add_prefilled(c, r, "dx", ACC, m * s->cols);
  rng_fill_f32(r, add_f32(c, "dy", IN, m * s->rows), m * s->rows, -1, 1);
  add_plan(c, r, s->n, s->k, s->E);
  add_mxfp4_weight(c, r);
}
static void run_mxfp4_matmul_dx(mxl_backend *be, op_case *c, void *const *dev) {
  mxl_moe_plan plan = plan_of(c, dev);
  mxl_mxfp4_weight W = mxfp4_weight_of(c, dev);
  be->ops->mxfp4_matmul_dx(be, D("dx"), D("dy"), &W, &plan);
}

/* h in [-10, 10] with some lanes exactly at ±limit (7), so both clamps and
 * their boundaries are exercised. */
static void fill_swiglu_h(test_rng *r, float *h, size_t n) {
  const float special[] = {7.0f, -7.0f, 7.0001f, -7.0001f, 6.9999f, 0.0f};
  for (size_t i = 0; i < n; i++)
    h[i] = rng_int(r, 4) == 0 ? special[rng_int(r, 6)] : (float)rng_uniform(r, -10, 10);
}

static void setup_swiglu(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  add_f32(c, "act", OUT, (size_t)s->n * s->I);
  fill_swiglu_h(r, add_f32(c, "h", IN, (size_t)s->n * 2 * s->I), (size_t)s->n * 2 * s->I);
}
static void run_swiglu(mxl_backend *be, op_case *c, void *const *dev) {
  be->ops->swiglu(be, D("act"), D("h"), c->s.n, c->s.I, 1.702f, 7.0f);
}

static void setup_swiglu_bwd(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  add_prefilled(c, r, "dh", ACC, (size_t)s->n * 2 * s->I);
  rng_fill_f32(r, add_f32(c, "dact", IN, (size_t)s->n * s->I), (size_t)s->n * s->I, -1, 1);
  fill_swiglu_h(r, add_f32(c, "h", IN, (size_t)s->n * 2 * s->I), (size_t)s->n * 2 * s->I);
}
static void run_swiglu_bwd(mxl_backend *be, op_case *c, void *const *dev) {
  be->ops->swiglu_bwd(be, D("dh"), D("dact"), D("h"), c->s.n, c->s.I, 1.702f, 7.0f);
}

static void setup_moe_combine(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  size_t m = (size_t)s->n * s->k;
  add_prefilled(c, r, "out", ACC, (size_t)s->n * s->H);
  rng_fill_f32(r, add_f32(c, "ys", IN, m * s->H), m * s->H, -1, 1);
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
  add_prefilled(c, r, "dys", ACC, m * s->H);
  add_prefilled(c, r, "dweights", ACC, m);
  rng_fill_f32(r, add_f32(c, "dout", IN, (size_t)s->n * s->H), (size_t)s->n * s->H, -1, 1);
  rng_fill_f32(r, add_f32(c, "ys", IN, m * s->H), m * s->H, -1, 1);
  add_plan(c, r, s->n, s->k, s->E);
}
static void run_moe_combine_bwd(mxl_backend *be, op_case *c, void *const *dev) {
  mxl_moe_plan plan = plan_of(c, dev);
  be->ops->moe_combine_bwd(be, D("dys"), D("dweights"), D("dout"), D("ys"), &plan, c->s.H);
}

static void setup_add(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  add_prefilled(c, r, "y", ACC, (size_t)c->s.n);
  rng_fill_f32(r, add_f32(c, "x", IN, (size_t)c->s.n), (size_t)c->s.n, -1, 1);
}
static void run_add(mxl_backend *be, op_case *c, void *const *dev) {
  be->ops->add(be, D("y"), D("x"), (size_t)c->s.n);
}

static void setup_dropout(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  size_t n = (size_t)c->s.n;
  if (c->s.inplace) {
    rng_fill_f32(r, add_f32(c, "x", INOUT, n), n, -1, 1);
  } else {
    add_f32(c, "y", OUT, n);
    rng_fill_f32(r, add_f32(c, "x", IN, n), n, -1, 1);
  }
}
static void run_dropout(mxl_backend *be, op_case *c, void *const *dev) {
  float *x = D("x"), *y = c->s.inplace ? x : D("y");
  be->ops->dropout(be, y, x, (size_t)c->s.n, c->s.p, 0x5EEDull + (uint64_t)c->s.n);
}

static void setup_unembed_xent(op_case *c, test_rng *r, mxl_backend *ref) {
  (void)ref;
  const shape *s = &c->s;
  if (!(s->nulls & 1)) add_f32(c, "loss", OUT, (size_t)s->n);
  if (!(s->nulls & 2)) add_prefilled(c, r, "dh", ACC, (size_t)s->n * s->cols);
  rng_fill_f32(r, add_f32(c, "h", IN, (size_t)s->n * s->cols), (size_t)s->n * s->cols, -2, 2);
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
  add_prefilled(c, r, "param", ACC, n);
  rng_fill_f32(r, add_f32(c, "grad", IN, n), n, -1, 1);
  float *m = add_f32(c, "m", ACC, n), *v = add_f32(c, "v", ACC, n);
  rng_fill_f32(r, m, n, -0.1, 0.1);
  rng_fill_f32(r, v, n, 0, 0.01);
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
  rng_fill_f32(r, add_f32(c, "x", IN, (size_t)c->s.n), (size_t)c->s.n, -3, 3);
}
static void run_sum_squares(mxl_backend *be, op_case *c, void *const *dev) {
  c->scalar = be->ops->sum_squares(be, D("x"), (size_t)c->s.n);
}

/* ------------------------------------------------------------ op table */

enum {
  EMBED, RMSNORM, MATMUL_BF16, GEMM, ROPE, ATTENTION, ROUTER_TOPK, MOE_PLAN, MOE_GATHER,
  MXFP4_MATMUL, SWIGLU, MOE_COMBINE, ADD, DROPOUT, UNEMBED_XENT, RMSNORM_BWD, MATMUL_BF16_DX,
  ATTENTION_BWD, ROUTER_BWD, MOE_GATHER_BWD, MXFP4_MATMUL_DX, SWIGLU_BWD, MOE_COMBINE_BWD,
  ADAMW, SUM_SQUARES, N_OPS
};

/* The matmul threshold (see the file comment). */
#define MATMUL_NMSE 5e-4

#define OP(id, field, nmse, nmse_bf16) \
  [id] = {#field, offsetof(mxl_ops, field), nmse, nmse_bf16, setup_##field, run_##field}

static const op_def op_defs[N_OPS] = {
    OP(EMBED, embed, -1, -1),
    OP(RMSNORM, rmsnorm, 1e-8, 1e-4),
    OP(MATMUL_BF16, matmul_bf16, MATMUL_NMSE, MATMUL_NMSE),
    [GEMM] = {"gemm_f32", offsetof(mxl_ops, gemm_f32), MATMUL_NMSE, MATMUL_NMSE, setup_gemm, run_gemm},
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
    C(RMSNORM, .n = 5, .H = 64),
    C(RMSNORM, .n = 3, .H = 2880),
    C(RMSNORM, .n = 4, .H = 33, .nulls = 1),
    C(RMSNORM_BWD, .n = 1, .H = 7),
    C(RMSNORM_BWD, .n = 5, .H = 64),
    C(RMSNORM_BWD, .n = 3, .H = 2880),

    C(MATMUL_BF16, .n = 1, .rows = 5, .cols = 7),
    C(MATMUL_BF16, .n = 7, .rows = 33, .cols = 64, .bias = 1),
    C(MATMUL_BF16, .n = 16, .rows = 64, .cols = 2880, .bias = 1),
    C(MATMUL_BF16, .n = 3, .rows = 129, .cols = 31),
    C(MATMUL_BF16_DX, .n = 1, .rows = 5, .cols = 7),
    C(MATMUL_BF16_DX, .n = 7, .rows = 33, .cols = 64, .bias = 1),
    C(MATMUL_BF16_DX, .n = 16, .rows = 64, .cols = 2880),

    /* gemm_f32: the LoRA products (x·Aᵀ, t·Bᵀ, dyᵀ·t, dt·A) at odd sizes,
     * all four transposes, padded strides, beta 0 (C not read) and not */
    C(GEMM, .M = 9, .N = 4, .K = 64, .tB = 1, .alpha = 1, .beta = 0),
    C(GEMM, .M = 9, .N = 33, .K = 4, .tB = 1, .alpha = 2, .beta = 1),
    C(GEMM, .M = 33, .N = 4, .K = 9, .tA = 1, .alpha = 2, .beta = 1),
    C(GEMM, .M = 4, .N = 64, .K = 9, .tA = 1, .alpha = 1, .beta = 1),
    C(GEMM, .M = 9, .N = 64, .K = 4, .alpha = 1, .beta = 1),
    C(GEMM, .M = 7, .N = 5, .K = 3, .tA = 1, .tB = 1, .alpha = 0.5f, .beta = -0.5f),
    C(GEMM, .M = 1, .N = 1, .K = 1, .alpha = 1, .beta = 0),
    C(GEMM, .M = 13, .N = 11, .K = 17, .pad = 3, .alpha = 1, .beta = 0),
    C(GEMM, .M = 13, .N = 11, .K = 17, .tA = 1, .tB = 1, .pad = 5, .alpha = -1, .beta = 2),

    C(ROPE, .n = 1, .nh = 1, .d = 8),
    C(ROPE, .n = 9, .nh = 3, .d = 64),
    C(ROPE, .n = 9, .nh = 3, .d = 64, .inverse = 1),
    C(ROPE, .n = 5, .nh = 2, .d = 64, .interleaved = 1),
    C(ROPE, .n = 5, .nh = 2, .d = 16, .interleaved = 1, .inverse = 1),

    /* attention: 1 token; GQA 1, 2, 8; windows shorter than the sequence;
     * packed documents; KV-cache slots with empty entries; a query that
     * sees no key; dominant sinks */
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

    C(ROUTER_TOPK, .n = 1, .E = 1, .k = 1),
    C(ROUTER_TOPK, .n = 9, .E = 32, .k = 4),
    C(ROUTER_TOPK, .n = 9, .E = 32, .k = 4, .ties = 1),
    C(ROUTER_TOPK, .n = 5, .E = 128, .k = 4),
    C(ROUTER_TOPK, .n = 7, .E = 6, .k = 2, .ties = 1),
    C(ROUTER_TOPK, .n = 3, .E = 5, .k = 5, .ties = 1),
    C(ROUTER_TOPK, .n = 4, .E = 8, .k = 3),
    C(ROUTER_BWD, .n = 1, .E = 1, .k = 1),
    C(ROUTER_BWD, .n = 9, .E = 32, .k = 4),
    C(ROUTER_BWD, .n = 5, .E = 7, .k = 3),

    C(MOE_PLAN, .n = 1, .k = 1, .E = 1),
    C(MOE_PLAN, .n = 9, .k = 4, .E = 32),
    C(MOE_PLAN, .n = 17, .k = 2, .E = 3),
    C(MOE_PLAN, .n = 3, .k = 4, .E = 128),
    C(MOE_GATHER, .n = 1, .k = 1, .E = 1, .H = 7),
    C(MOE_GATHER, .n = 9, .k = 4, .E = 32, .H = 64),
    C(MOE_GATHER, .n = 5, .k = 3, .E = 4, .H = 33),
    C(MOE_GATHER_BWD, .n = 1, .k = 1, .E = 1, .H = 7),
    C(MOE_GATHER_BWD, .n = 9, .k = 4, .E = 32, .H = 64),
    C(MOE_GATHER_BWD, .n = 5, .k = 2, .E = 4, .H = 33),

    /* MXFP4: dense (E = 1), grouped with experts hit or not, scale biases
     * 127 and 141, metal-style strides larger than the data */
    C(MXFP4_MATMUL, .n = 5, .k = 1, .E = 1, .rows = 7, .cols = 32, .scale_bias = 127),
    C(MXFP4_MATMUL, .n = 6, .k = 2, .E = 5, .rows = 33, .cols = 64, .bias = 1,
      .scale_bias = 127),
    C(MXFP4_MATMUL, .n = 3, .k = 4, .E = 32, .rows = 64, .cols = 96, .bias = 1,
      .scale_bias = 141, .metal = 1),
    C(MXFP4_MATMUL, .n = 1, .k = 1, .E = 8, .rows = 17, .cols = 32, .scale_bias = 141,
      .metal = 1),
    C(MXFP4_MATMUL, .n = 4, .k = 4, .E = 4, .rows = 96, .cols = 2880, .bias = 1,
      .scale_bias = 127),
    C(MXFP4_MATMUL_DX, .n = 5, .k = 1, .E = 1, .rows = 7, .cols = 32, .scale_bias = 127),
    C(MXFP4_MATMUL_DX, .n = 6, .k = 2, .E = 5, .rows = 33, .cols = 64, .bias = 1,
      .scale_bias = 127),
    C(MXFP4_MATMUL_DX, .n = 3, .k = 4, .E = 32, .rows = 64, .cols = 96, .bias = 1,
      .scale_bias = 141, .metal = 1),
    C(MXFP4_MATMUL_DX, .n = 4, .k = 4, .E = 4, .rows = 2880, .cols = 64, .scale_bias = 127),

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

    C(ADD, .n = 1),
    C(ADD, .n = 12345),
    C(DROPOUT, .n = 1, .p = 0.5f),
    C(DROPOUT, .n = 1025, .p = 0),
    C(DROPOUT, .n = 4099, .p = 0.1f),
    C(DROPOUT, .n = 4099, .p = 0.5f, .inplace = 1),
    C(DROPOUT, .n = 333, .p = 0.999f),

    C(UNEMBED_XENT, .n = 1, .rows = 50, .cols = 32),
    C(UNEMBED_XENT, .n = 7, .rows = 1001, .cols = 64),
    C(UNEMBED_XENT, .n = 6, .rows = 300, .cols = 33, .nulls = 1),
    C(UNEMBED_XENT, .n = 6, .rows = 300, .cols = 33, .nulls = 2),
    C(UNEMBED_XENT, .n = 3, .rows = 201088, .cols = 32), /* gpt-oss's vocabulary */

    C(ADAMW, .n = 1, .step = 1),
    C(ADAMW, .n = 1000, .step = 1, .wd = 0.1f),
    C(ADAMW, .n = 777, .step = 10, .wd = 0.01f),
    C(ADAMW, .n = 5, .step = 1000),
    C(SUM_SQUARES, .n = 1),
    C(SUM_SQUARES, .n = 100003),
};

/* ------------------------------------------------------------ running */

/* One backend's results for one case. */
typedef struct results {
  void *data[MAX_TENSORS];
  double scalar;
} results;

static void results_free(results *res, int nt) {
  for (int i = 0; i < nt; i++) free(res->data[i]);
}

/* Runs the case on `be`: every tensor is uploaded between GUARD sentinel
 * bytes, the op runs, everything comes back. Returns 0, or -1 with `why`. */
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
    mxl_status st = be->ops->sync(be);
    if (st != MXL_OK) {
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
    if (isnan(b[i]) || (isinf(r[i]) || isinf(b[i])) ) {
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

typedef struct backend_entry {
  const char *label;
  mxl_status (*create)(mxl_backend **out);
  int bf16_activations; /* thresholds of the bf16 column */
  int exact_matmuls;    /* matmuls promise fp32 accuracy: EXACT_MATMUL_NMSE */
} backend_entry;

/* Matmuls of a backend in an exact (fp32-accuracy) mode: an activation
 * split into two bf16 halves leaves about 2^-16 relative, NMSE ≈ 1e-10. */
#define EXACT_MATMUL_NMSE 1e-8

static mxl_status create_cuda(mxl_backend **out) { return mxl_backend_cuda_create(0, out); }
static mxl_status create_cpu(mxl_backend **out) { return mxl_backend_cpu_create(0, out); }
static mxl_status create_cpu_exact(mxl_backend **out) {
  mxl_status st = mxl_backend_cpu_create(0, out);
  if (st == MXL_OK) mxl_backend_cpu_set_exact(*out, 1);
  return st;
}
/* The CPU backend reads MXL_CPU_ISA at creation (never above the CPU). */
static mxl_status create_cpu_isa(mxl_backend **out, const char *isa) {
  setenv("MXL_CPU_ISA", isa, 1);
  mxl_status st = mxl_backend_cpu_create(0, out);
  unsetenv("MXL_CPU_ISA");
  return st;
}
static mxl_status create_cpu_avx2(mxl_backend **out) { return create_cpu_isa(out, "avx2"); }
static mxl_status create_cpu_generic(mxl_backend **out) { return create_cpu_isa(out, "generic"); }

/* The backends compared with ref: the CPU backend in its default (bf16
 * fast path) and exact modes and on each lower instruction set, and CUDA
 * (MXL_ERR_UNSUPPORTED, hence skipped, when built without it). */
static const backend_entry backends[] = {
    {"cpu", create_cpu, 0, 0},
    {"cpu-exact", create_cpu_exact, 0, 1},
    {"cpu/avx2", create_cpu_avx2, 0, 0},
    {"cpu/generic", create_cpu_generic, 0, 0},
    {"cuda", create_cuda, 1, 0},
};
enum { N_BACKENDS = sizeof backends / sizeof backends[0] };

/* The threshold of op o on backend b. */
static double threshold(int o, int b) {
  if (backends[b].bf16_activations) return op_defs[o].nmse_bf16;
  if (backends[b].exact_matmuls && op_defs[o].nmse == MATMUL_NMSE) return EXACT_MATMUL_NMSE;
  return op_defs[o].nmse;
}

/* Worst NMSE per op and backend, for the summary. */
static double worst_nmse[N_OPS][N_BACKENDS];
static int ran[N_OPS][N_BACKENDS];

static void describe(const case_spec *cs, char *buf, size_t size) {
  const shape *s = &cs->s;
  static const char *mask_names[] = {"causal", "packed", "kvcache", "orphan"};
  size_t len = 0;
#define FIELD(name, fmt, ...)                                                        \
  if (len < size) len += (size_t)snprintf(buf + len, size - len, " " name "=" fmt, __VA_ARGS__)
  if (s->n) FIELD("n", "%d", s->n);
  if (s->H) FIELD("H", "%d", s->H);
  if (s->V) FIELD("V", "%d", s->V);
  if (s->rows) FIELD("rows", "%d", s->rows);
  if (s->cols) FIELD("cols", "%d", s->cols);
  if (s->I) FIELD("I", "%d", s->I);
  if (s->E) FIELD("E", "%d", s->E);
  if (s->k) FIELD("k", "%d", s->k);
  if (s->nq) FIELD("nq", "%d", s->nq);
  if (s->nk) FIELD("nk", "%d", s->nk);
  if (s->nh) FIELD("nh", "%d", s->nh);
  if (s->nkv) FIELD("nkv", "%d", s->nkv);
  if (s->d) FIELD("d", "%d", s->d);
  if (s->nq) FIELD("mask", "%s", mask_names[s->mask]);
  if (s->segs) FIELD("segs", "%d", s->segs);
  if (s->window) FIELD("window", "%d", s->window);
  if (s->M) FIELD("MNK", "%dx%dx%d", s->M, s->N, s->K);
  if (s->M) FIELD("t", "%d%d", s->tA, s->tB);
  if (s->pad) FIELD("pad", "%d", s->pad);
  if (s->M) FIELD("alpha", "%g", (double)s->alpha);
  if (s->M) FIELD("beta", "%g", (double)s->beta);
  if (s->bias) FIELD("bias", "%d", 1);
  if (s->interleaved) FIELD("interleaved", "%d", 1);
  if (s->inverse) FIELD("inverse", "%d", 1);
  if (s->scale_bias) FIELD("scale_bias", "%d", s->scale_bias);
  if (s->metal) FIELD("metal", "%d", 1);
  if (s->nulls) FIELD("nulls", "%d", s->nulls);
  if (s->ties) FIELD("ties", "%d", 1);
  if (s->inplace) FIELD("inplace", "%d", 1);
  if (s->step) FIELD("step", "%d", s->step);
  if (s->wd != 0) FIELD("wd", "%g", (double)s->wd);
  if (cs->op == DROPOUT) FIELD("p", "%g", (double)s->p);
  if (s->big) FIELD("big", "%d", 1);
#undef FIELD
}

/* Compares every output of `be_res` with `ref_res`; returns the worst
 * NMSE / threshold ratio (0 for exact matches), or +inf with `why`. */
static double compare_case(const op_case *c, const results *ref_res, const results *be_res,
                           double thr, char *why, size_t why_size, double *worst_val) {
  double ratio = 0;
  *worst_val = 0;
  if (c->op->run == run_sum_squares) {
    double rel = fabs(be_res->scalar - ref_res->scalar) / fmax(fabs(ref_res->scalar), 1e-300);
    *worst_val = rel;
    if (!(rel <= thr)) snprintf(why, why_size, "sum %.17g vs ref %.17g", be_res->scalar, ref_res->scalar);
    return rel <= thr ? rel / thr : INFINITY;
  }
  for (int i = 0; i < c->nt; i++) {
    const tensor *t = &c->t[i];
    if (t->role == IN) continue;
    size_t bytes = tensor_bytes(t);
    if (t->type != F32 || thr < 0) {
      if (memcmp(be_res->data[i], ref_res->data[i], bytes) != 0) {
        snprintf(why, why_size, "%s differs bitwise from ref", t->name);
        return INFINITY;
      }
      if (t->type != F32) continue;
    }
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
      if (isfinite(nmse))
        snprintf(why, why_size, "%s: nmse %.3g above %.3g", t->name, nmse, thr);
      return INFINITY;
    }
    if (nmse / thr > ratio) ratio = nmse / thr;
  }
  return ratio;
}

/* Sets the case up, runs it on ref and on `be`, compares. Returns the worst
 * NMSE / threshold ratio, or +inf with `why` on failure. */
static double check_case(const case_spec *cs, int ci, mxl_backend *ref, mxl_backend *be,
                         double thr, char *why, size_t why_size, double *worst_val) {
  op_case c = {.op = &op_defs[cs->op], .s = cs->s};
  test_rng rng = {0x1234567ull + 7919ull * (uint64_t)ci};
  c.op->setup(&c, &rng, ref);
  results rr, br;
  char ref_why[256] = "";
  int ref_rc = run_case(ref, &c, &rr, ref_why, sizeof ref_why);
  int be_rc = run_case(be, &c, &br, why, why_size);
  double ratio = INFINITY;
  *worst_val = 0;
  if (ref_rc != 0)
    snprintf(why, why_size, "ref: %s", ref_why);
  else if (be_rc == 0)
    ratio = compare_case(&c, &rr, &br, thr, why, why_size, worst_val);
  results_free(&rr, c.nt);
  results_free(&br, c.nt);
  case_free(&c);
  return ratio;
}

static int op_present(const mxl_backend *be, const op_def *op) {
  return *(void *const *)((const char *)be->ops + op->fn) != NULL;
}

static void test_case_on(const case_spec *cs, int ci, mxl_backend *ref, mxl_backend *be,
                         int bi) {
  const op_def *op = &op_defs[cs->op];
  char desc[256], why[256] = "";
  describe(cs, desc, sizeof desc);
  if (!op_present(be, op)) {
    printf("skip %-11s %-16s%s (op not implemented)\n", backends[bi].label, op->name, desc);
    mxl_test_skips++;
    return;
  }
  double thr = threshold(cs->op, bi), worst_val;
  double ratio = check_case(cs, ci, ref, be, thr, why, sizeof why, &worst_val);
  int ok = isfinite(ratio);
  mxl_test_checks++;
  mxl_test_cases++;
  if (!ok) {
    mxl_test_failures++;
    mxl_test_failed_cases++;
  }
  ran[cs->op][bi]++;
  if (worst_val > worst_nmse[cs->op][bi]) worst_nmse[cs->op][bi] = worst_val;
  printf("%s %-11s %-16s%s  err %.2e%s%s\n", ok ? "ok  " : "FAIL", backends[bi].label, op->name,
         desc, worst_val, ok ? "" : "  ", why);
}

/* ------------------------------------------------------------ mutants */

/* The harness must catch broken backends: each mutant is ref with one op
 * broken in a way a real kernel could be, run on one case of that op, and
 * must be reported as failing. */
static const mxl_ops *ref_table;

static void bad_rmsnorm_bwd(mxl_backend *be, float *dx, const float *dy, const float *x,
                            const float *rstd, const uint16_t *g, int n, int H, float eps) {
  memset(dx, 0, sizeof *dx * (size_t)n * H); /* overwrites instead of adding */
  ref_table->rmsnorm_bwd(be, dx, dy, x, rstd, g, n, H, eps);
}
static void bad_matmul_bf16(mxl_backend *be, float *y, const float *x, const mxl_bf16_weight *W,
                            int n) {
  ref_table->matmul_bf16(be, y, x, W, n);
  y[n * W->rows] = 0; /* one element past the end */
}
static void bad_add(mxl_backend *be, float *y, const float *x, size_t n) {
  ref_table->add(be, y, x, n);
  ((float *)x)[0] = 1; /* scribbles on an input */
}
static void bad_swiglu(mxl_backend *be, float *act, const float *h, int m, int I, float alpha,
                       float limit) {
  ref_table->swiglu(be, act, h, m - 1, I, alpha, limit); /* forgets the last row */
}
static void bad_gemm(mxl_backend *be, int tA, int tB, int M, int N, int K, float alpha,
                     const float *A, int lda, const float *B, int ldb, float beta, float *C,
                     int ldc) {
  ref_table->gemm_f32(be, tA, tB, M, N, K, alpha, A, lda, B, ldb, beta == 0 ? 1 : beta, C,
                      ldc); /* reads C although beta == 0 */
}
static void bad_attention(mxl_backend *be, float *out, float *lse, const float *q,
                          const float *k, const float *v, const uint16_t *sinks,
                          const mxl_attn_mask *mask, int nq, int nk, int nh, int nkv, int d,
                          float scale) {
  mxl_attn_mask wide = *mask;
  wide.window += 1; /* off by one at the window edge */
  ref_table->attention(be, out, lse, q, k, v, sinks, &wide, nq, nk, nh, nkv, d, scale);
}
static void bad_swiglu_bwd(mxl_backend *be, float *dh, const float *dact, const float *h, int m,
                           int I, float alpha, float limit) {
  /* blocks the gradient at the clamp boundaries (PyTorch passes it) */
  ref_table->swiglu_bwd(be, dh, dact, h, m, I, alpha, nextafterf(limit, 0));
}
static void bad_router_topk(mxl_backend *be, int32_t *experts, float *weights,
                            const float *logits, int n, int E, int k) {
  /* ties to the higher index: ref on the reversed logits, indices mapped back */
  float *rev = malloc(sizeof *rev * (size_t)n * E);
  for (int t = 0; t < n; t++)
    for (int e = 0; e < E; e++) rev[t * E + e] = logits[t * E + (E - 1 - e)];
  ref_table->router_topk(be, experts, weights, rev, n, E, k);
  for (int a = 0; a < n * k; a++) experts[a] = E - 1 - experts[a];
  free(rev);
}

typedef struct mutant {
  const char *what;
  int op;     /* the case table's first case of this op... */
  int nth;    /* ...or its nth (0-based) */
  size_t fn;  /* offsetof(mxl_ops, op) */
  void *impl; /* the broken function */
} mutant;

static void test_mutants(mxl_backend *ref) {
  const mutant mutants[] = {
      {"overwrites a += output", RMSNORM_BWD, 1, offsetof(mxl_ops, rmsnorm_bwd),
       (void *)bad_rmsnorm_bwd},
      {"writes past the end", MATMUL_BF16, 1, offsetof(mxl_ops, matmul_bf16),
       (void *)bad_matmul_bf16},
      {"modifies an input", ADD, 1, offsetof(mxl_ops, add), (void *)bad_add},
      {"leaves an output row unwritten", SWIGLU, 1, offsetof(mxl_ops, swiglu),
       (void *)bad_swiglu},
      {"reads C with beta 0", GEMM, 0, offsetof(mxl_ops, gemm_f32), (void *)bad_gemm},
      {"window off by one", ATTENTION, 2, offsetof(mxl_ops, attention), (void *)bad_attention},
      {"clamp boundary blocks gradient", SWIGLU_BWD, 2, offsetof(mxl_ops, swiglu_bwd),
       (void *)bad_swiglu_bwd},
      {"router ties to the higher index", ROUTER_TOPK, 2, offsetof(mxl_ops, router_topk),
       (void *)bad_router_topk},
  };
  ref_table = ref->ops;
  int n_cases = (int)(sizeof cases / sizeof cases[0]);
  for (size_t i = 0; i < sizeof mutants / sizeof mutants[0]; i++) {
    const mutant *mu = &mutants[i];
    mxl_ops table = *ref->ops;
    memcpy((char *)&table + mu->fn, &mu->impl, sizeof mu->impl);
    mxl_backend bad = *ref;
    bad.ops = &table;
    int ci = 0, seen = 0;
    while (ci < n_cases && !(cases[ci].op == mu->op && seen++ == mu->nth)) ci++;
    mxl_test_current = mu->what;
    MXL_CHECK_MSG(ci < n_cases, "no case for mutant");
    if (ci == n_cases) continue;
    char why[256] = "";
    double worst_val, thr = op_defs[mu->op].nmse;
    double ratio = check_case(&cases[ci], ci, ref, &bad, thr, why, sizeof why, &worst_val);
    MXL_CHECK_MSG(!isfinite(ratio), "the harness passed a broken %s", op_defs[mu->op].name);
    printf("%s mutant    %-16s %s: %s\n", isfinite(ratio) ? "FAIL" : "ok  ",
           op_defs[mu->op].name, mu->what, isfinite(ratio) ? "not caught" : why);
    mxl_test_cases++;
  }
}

static void print_summary(const mxl_backend *const *bes) {
  printf("\nworst error per op (nmse; sum_squares: relative) and its threshold:\n");
  for (int b = 0; b < N_BACKENDS; b++) {
    if (!bes[b]) continue;
    for (int o = 0; o < N_OPS; o++) {
      if (!ran[o][b]) continue;
      double thr = threshold(o, b);
      char thr_text[32] = "bitwise";
      if (thr >= 0) snprintf(thr_text, sizeof thr_text, "%.0e", thr);
      printf("  %-11s %-16s %3d cases  worst %.2e  threshold %s\n", backends[b].label,
             op_defs[o].name, ran[o][b], worst_nmse[o][b], thr_text);
    }
  }
}

int main(void) {
  mxl_backend *ref = NULL, *bes[N_BACKENDS] = {0};
  if (mxl_backend_ref_create(&ref) != MXL_OK) {
    fprintf(stderr, "ref backend: %s\n", mxl_last_error());
    return 1;
  }
  for (int b = 0; b < N_BACKENDS; b++) {
    mxl_status st = backends[b].create(&bes[b]);
    if (st != MXL_OK) {
      printf("skip %-11s all ops: %s\n", backends[b].label, mxl_last_error());
      mxl_test_skips++;
      bes[b] = NULL;
    } else if (strcmp(bes[b]->ops->name, "cpu") == 0) {
      printf("info %-11s isa %s, %d threads\n", backends[b].label, mxl_backend_cpu_isa(bes[b]),
             bes[b]->n_threads);
    }
  }
  int n_cases = (int)(sizeof cases / sizeof cases[0]);
  for (int b = 0; b < N_BACKENDS; b++)
    for (int ci = 0; bes[b] && ci < n_cases; ci++) {
      mxl_test_current = op_defs[cases[ci].op].name;
      test_case_on(&cases[ci], ci, ref, bes[b], b);
    }
  test_mutants(ref);
  print_summary((const mxl_backend *const *)bes);
  for (int b = 0; b < N_BACKENDS; b++) mxl_backend_destroy(bes[b]);
  mxl_backend_destroy(ref);
  return mxl_test_summary("ops");
}
