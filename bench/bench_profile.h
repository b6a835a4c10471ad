/* Where a pass spends its time, op by op: wraps a backend's op table so
 * that every call is timed, keyed by the op and (for matmuls) the weight it
 * uses, with the FLOPs and weight bytes it had to do. Only outermost calls
 * are timed (an op calling another through the table counts once).
 *
 *   bench_prof_install(be, cfg, vocab_rows);  (before mxl_engine_create)
 *   bench_prof_start(); ... run ... bench_prof_print(wall_seconds, &limits);
 *
 * The CPU backend runs synchronously, so wall time around each call is the
 * op's time; time outside any op (host work of the model code) is printed
 * as "(outside ops)". Each row's "cores" is the process's CPU time over
 * the op's wall time: an op near 1 on a 2-thread pass ran on one core
 * (serial, or its threads waited on each other). Several backends may be
 * wrapped when they share one op table (CPU backends of any thread count);
 * one profile runs at a time.
 * Header-only. */
#ifndef MXL_BENCH_PROFILE_H
#define MXL_BENCH_PROFILE_H

#include "bench/bench_common.h"
#include "kernels/ops.h"
#include "model/config.h"

typedef struct bench_prof_row {
  char name[48];
  long calls;
  double sec, cpu, flops, bytes;
} bench_prof_row;

enum { BENCH_PROF_ROWS = 96 };

static struct {
  const mxl_ops *orig;
  mxl_ops table;
  const mxl_config *cfg;
  int vocab_rows;
  int rank; /* LoRA rank: names the gemm_f32 calls */
  int depth, on;
  double cpu0; /* process CPU seconds when the outermost call began */
  bench_prof_row rows[BENCH_PROF_ROWS];
  int n_rows;
} bench_prof;

static inline bench_prof_row *bench_prof_row_of(const char *name) {
  for (int i = 0; i < bench_prof.n_rows; i++)
    if (!strcmp(bench_prof.rows[i].name, name)) return &bench_prof.rows[i];
  if (bench_prof.n_rows == BENCH_PROF_ROWS) return &bench_prof.rows[BENCH_PROF_ROWS - 1];
  bench_prof_row *r = &bench_prof.rows[bench_prof.n_rows++];
  memset(r, 0, sizeof *r);
  snprintf(r->name, sizeof r->name, "%s", name);
  return r;
}

/* CPU seconds of all the process's threads, to the nanosecond. */
static inline double bench_prof_cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline double bench_prof_enter(void) {
  if (bench_prof.depth++ != 0 || !bench_prof.on) return 0;
  bench_prof.cpu0 = bench_prof_cpu_now();
  return bench_now();
}

/* The op ran from t0 to t1. */
static inline void bench_prof_leave_at(double t0, double t1, const char *name, double flops,
                                       double bytes) {
  if (--bench_prof.depth != 0 || !bench_prof.on) return;
  double dt = t1 - t0;
  bench_prof_row *r = bench_prof_row_of(name);
  r->calls++;
  r->sec += dt;
  r->cpu += bench_prof_cpu_now() - bench_prof.cpu0;
  r->flops += flops;
  r->bytes += bytes;
}

static inline void bench_prof_leave(double t0, const char *name, double flops, double bytes) {
  bench_prof_leave_at(t0, bench_now(), name, flops, bytes);
}

/* 1 when the call being left is an outermost, recorded one. */
static inline int bench_prof_outer(void) { return bench_prof.depth == 1 && bench_prof.on; }

static inline double bench_mxfp4_weight_bytes(const mxl_mxfp4_weight *W) {
  return (double)W->rows * W->cols / 32 * 17 + (W->bias ? 2.0 * W->rows : 0);
}

/* Names a weight by its shape in this model: q, k/v, o, router, lm_head. */
static inline void bench_prof_weight_name(char *out, size_t size, const char *op, int64_t rows,
                                          int64_t cols) {
  const mxl_config *c = bench_prof.cfg;
  const int64_t H = c->hidden, qd = (int64_t)c->n_heads * c->head_dim,
                kvd = (int64_t)c->n_kv_heads * c->head_dim;
  const char *parts[5];
  int n = 0;
  if (rows == qd && cols == H) parts[n++] = "q";
  if (rows == kvd && cols == H) parts[n++] = "k/v";
  if (rows == H && cols == qd) parts[n++] = "o";
  if (rows == c->n_experts && cols == H) parts[n++] = "router";
  if (rows == bench_prof.vocab_rows && cols == H) parts[n++] = "lm_head";
  char what[32] = "";
  for (int i = 0; i < n; i++)
    snprintf(what + strlen(what), sizeof what - strlen(what), "%s%s", i ? "|" : "", parts[i]);
  if (!n) snprintf(what, sizeof what, "%lldx%lld", (long long)rows, (long long)cols);
  snprintf(out, size, "%s %s", op, what);
}

static inline const char *bench_prof_expert_name(const mxl_mxfp4_weight *W) {
  return W->rows == 2 * (int64_t)bench_prof.cfg->intermediate ? "gate_up" : "down";
}

/* The LoRA product a gemm_f32 call is, told by its transposes and which
 * dimension equals the rank (y += s·(x·Aᵀ)·Bᵀ and its backward; A [R, in],
 * B [out, R]); other calls are named by their shape. */
static inline const char *bench_prof_gemm_name(int tA, int tB, int M, int N, int K) {
  const int R = bench_prof.rank;
  if (!tA && tB && N == R) return "lora x*A^T (gemm NT)";
  if (!tA && tB && K == R) return "lora z*B^T (gemm NT)";
  if (tA && !tB && M == R) return "lora dA=dz^T*x (TN)";
  if (tA && !tB && N == R) return "lora dB=dy^T*z (TN)";
  if (!tA && !tB && N == R) return "lora dz=dy*B (gemm NN)";
  if (!tA && !tB && K == R) return "lora dx+=dz*A (NN)";
  return tA ? (tB ? "gemm_f32 TT" : "gemm_f32 TN") : (tB ? "gemm_f32 NT" : "gemm_f32 NN");
}

/* Routed rows and experts used by a plan (host offsets). */
static inline void bench_prof_plan(const mxl_moe_plan *p, double *rows, double *used) {
  *rows = p->offsets_host[p->n_experts] - p->offsets_host[0];
  *used = 0;
  for (int e = 0; e < p->n_experts; e++) *used += p->offsets_host[e + 1] > p->offsets_host[e];
}

static inline double bench_prof_pairs(const mxl_attn_mask *m, int nq, int nk) {
  double pairs = 0;
  for (int i = 0; i < nq; i++)
    for (int j = 0; j < nk; j++) {
      int ok = m->k_seg[j] == m->q_seg[i] && m->k_pos[j] <= m->q_pos[i] &&
               (!m->window || m->q_pos[i] - m->k_pos[j] < m->window);
      pairs += ok;
    }
  return pairs;
}

/* ------------------------------------------------------------------ wrappers */

#define BENCH_PROF_SIMPLE(op, name, params, args)                                          \
  static void bench_prof_##op params {                                                     \
    double t0 = bench_prof_enter();                                                        \
    bench_prof.orig->op args;                                                              \
    bench_prof_leave(t0, name, 0, 0);                                                      \
  }

BENCH_PROF_SIMPLE(upload, "upload", (mxl_backend * be, void *d, const void *s, size_t b),
                  (be, d, s, b))
BENCH_PROF_SIMPLE(download, "download", (mxl_backend * be, void *d, const void *s, size_t b),
                  (be, d, s, b))
BENCH_PROF_SIMPLE(copy, "copy", (mxl_backend * be, void *d, const void *s, size_t b),
                  (be, d, s, b))
BENCH_PROF_SIMPLE(zero, "zero", (mxl_backend * be, void *d, size_t b), (be, d, b))
BENCH_PROF_SIMPLE(embed, "embed",
                  (mxl_backend * be, float *x, const uint16_t *t, const int32_t *ids, int n, int H),
                  (be, x, t, ids, n, H))
BENCH_PROF_SIMPLE(rmsnorm, "rmsnorm",
                  (mxl_backend * be, float *y, float *r, const float *x, const uint16_t *g, int n,
                   int H, float eps),
                  (be, y, r, x, g, n, H, eps))
BENCH_PROF_SIMPLE(rope, "rope",
                  (mxl_backend * be, float *x, int n, int h, int d, const int32_t *pos,
                   const float *f, float c, int il, int inv),
                  (be, x, n, h, d, pos, f, c, il, inv))
BENCH_PROF_SIMPLE(router_topk, "router_topk",
                  (mxl_backend * be, int32_t *ex, float *w, const float *lg, int n, int E, int k),
                  (be, ex, w, lg, n, E, k))
BENCH_PROF_SIMPLE(moe_plan, "moe_plan",
                  (mxl_backend * be, int32_t *o, int32_t *s, int32_t *off, const int32_t *ex,
                   int n, int k, int E),
                  (be, o, s, off, ex, n, k, E))
BENCH_PROF_SIMPLE(moe_gather, "moe_gather",
                  (mxl_backend * be, float *xs, const float *x, const mxl_moe_plan *p, int H),
                  (be, xs, x, p, H))
BENCH_PROF_SIMPLE(swiglu, "swiglu",
                  (mxl_backend * be, float *a, const float *h, int m, int I, float al, float li),
                  (be, a, h, m, I, al, li))
BENCH_PROF_SIMPLE(moe_combine, "moe_combine",
                  (mxl_backend * be, float *o, const float *ys, const mxl_moe_plan *p, int H),
                  (be, o, ys, p, H))
BENCH_PROF_SIMPLE(add, "add", (mxl_backend * be, float *y, const float *x, size_t n), (be, y, x, n))
BENCH_PROF_SIMPLE(dropout, "dropout",
                  (mxl_backend * be, float *y, const float *x, size_t n, float p, uint64_t s),
                  (be, y, x, n, p, s))
BENCH_PROF_SIMPLE(rmsnorm_bwd, "rmsnorm_bwd",
                  (mxl_backend * be, float *dx, const float *dy, const float *x, const float *r,
                   const uint16_t *g, int n, int H, float eps),
                  (be, dx, dy, x, r, g, n, H, eps))
BENCH_PROF_SIMPLE(router_bwd, "router_bwd",
                  (mxl_backend * be, float *dl, const float *dw, const float *w,
                   const int32_t *ex, int n, int E, int k),
                  (be, dl, dw, w, ex, n, E, k))
BENCH_PROF_SIMPLE(moe_gather_bwd, "moe_gather_bwd",
                  (mxl_backend * be, float *dx, const float *dxs, const mxl_moe_plan *p, int H),
                  (be, dx, dxs, p, H))
BENCH_PROF_SIMPLE(swiglu_bwd, "swiglu_bwd",
                  (mxl_backend * be, float *dh, const float *da, const float *h, int m, int I,
                   float al, float li),
                  (be, dh, da, h, m, I, al, li))
BENCH_PROF_SIMPLE(moe_combine_bwd, "moe_combine_bwd",
                  (mxl_backend * be, float *dys, float *dw, const float *dout, const float *ys,
                   const mxl_moe_plan *p, int H),
                  (be, dys, dw, dout, ys, p, H))
BENCH_PROF_SIMPLE(adamw, "adamw",
                  (mxl_backend * be, float *p, const float *g, float *m, float *v, size_t n,
                   float lr, float b1, float b2, float eps, float wd, int step, float gs),
                  (be, p, g, m, v, n, lr, b1, b2, eps, wd, step, gs))

static void bench_prof_matmul_bf16(mxl_backend *be, float *y, const float *x,
                                   const mxl_bf16_weight *W, int n) {
  double t0 = bench_prof_enter();
  bench_prof.orig->matmul_bf16(be, y, x, W, n);
  char name[48];
  bench_prof_weight_name(name, sizeof name, "bf16", W->rows, W->cols);
  bench_prof_leave(t0, name, 2.0 * n * W->rows * W->cols, 2.0 * W->rows * W->cols);
}

static void bench_prof_matmul_bf16_dx(mxl_backend *be, float *dx, const float *dy,
                                      const mxl_bf16_weight *W, int n) {
  double t0 = bench_prof_enter();
  bench_prof.orig->matmul_bf16_dx(be, dx, dy, W, n);
  char name[48];
  bench_prof_weight_name(name, sizeof name, "bf16_dx", W->rows, W->cols);
  bench_prof_leave(t0, name, 2.0 * n * W->rows * W->cols, 2.0 * W->rows * W->cols);
}

static void bench_prof_gemm_f32(mxl_backend *be, int tA, int tB, int M, int N, int K, float al,
                                const float *A, int lda, const float *B, int ldb, float beta,
                                float *C, int ldc) {
  double t0 = bench_prof_enter();
  bench_prof.orig->gemm_f32(be, tA, tB, M, N, K, al, A, lda, B, ldb, beta, C, ldc);
  bench_prof_leave(t0, bench_prof_gemm_name(tA, tB, M, N, K), 2.0 * M * N * K, 0);
}

/* The segmented LoRA op, named by the projection it adapts (out x in). */
static inline double bench_prof_lora_flops(const mxl_lora_seg *segs, int n, int in, int out,
                                           int bwd) {
  double f = 0;
  for (int s = 0; s < n; s++) {
    double rr = (double)segs[s].rows * segs[s].rank;
    f += bwd ? 2.0 * rr * (2.0 * out + (segs[s].dA ? in : 0) + in) : 2.0 * rr * ((double)in + out);
  }
  return f;
}

static void bench_prof_lora(mxl_backend *be, float *y, float *t, const float *x,
                            const mxl_lora_seg *segs, int n, int in, int out) {
  double t0 = bench_prof_enter();
  bench_prof.orig->lora(be, y, t, x, segs, n, in, out);
  char name[48];
  bench_prof_weight_name(name, sizeof name, "lora", out, in);
  bench_prof_leave(t0, name, bench_prof_lora_flops(segs, n, in, out, 0), 0);
}

static void bench_prof_lora_bwd(mxl_backend *be, float *dx, const float *dy, const float *x,
                                const float *t, const mxl_lora_seg *segs, int n, int in,
                                int out) {
  double t0 = bench_prof_enter();
  bench_prof.orig->lora_bwd(be, dx, dy, x, t, segs, n, in, out);
  char name[48];
  bench_prof_weight_name(name, sizeof name, "lora_bwd", out, in);
  bench_prof_leave(t0, name, bench_prof_lora_flops(segs, n, in, out, 1), 0);
}

static void bench_prof_mxfp4_matmul(mxl_backend *be, float *y, const float *x,
                                    const mxl_mxfp4_weight *W, const mxl_moe_plan *p) {
  double t0 = bench_prof_enter();
  bench_prof.orig->mxfp4_matmul(be, y, x, W, p);
  double rows, used;
  bench_prof_plan(p, &rows, &used);
  char name[48];
  snprintf(name, sizeof name, "mxfp4 %s", bench_prof_expert_name(W));
  bench_prof_leave(t0, name, 2.0 * rows * W->rows * W->cols,
                   used * bench_mxfp4_weight_bytes(W));
}

static void bench_prof_mxfp4_matmul_dx(mxl_backend *be, float *dx, const float *dy,
                                       const mxl_mxfp4_weight *W, const mxl_moe_plan *p) {
  double t0 = bench_prof_enter();
  bench_prof.orig->mxfp4_matmul_dx(be, dx, dy, W, p);
  double rows, used;
  bench_prof_plan(p, &rows, &used);
  char name[48];
  snprintf(name, sizeof name, "mxfp4_dx %s", bench_prof_expert_name(W));
  bench_prof_leave(t0, name, 2.0 * rows * W->rows * W->cols,
                   used * bench_mxfp4_weight_bytes(W));
}

static void bench_prof_attention(mxl_backend *be, float *out, float *lse, const float *q,
                                 const float *k, const float *v, const uint16_t *sinks,
                                 const mxl_attn_mask *m, int nq, int nk, int nh, int nkv, int d,
                                 float scale) {
  double t0 = bench_prof_enter();
  bench_prof.orig->attention(be, out, lse, q, k, v, sinks, m, nq, nk, nh, nkv, d, scale);
  double t1 = bench_now(); /* counting the pairs is not the op's time */
  double flops = bench_prof_outer() ? 4.0 * d * nh * bench_prof_pairs(m, nq, nk) : 0;
  bench_prof_leave_at(t0, t1, "attention", flops, 2.0 * nk * nkv * d * 4);
}

static void bench_prof_attention_bwd(mxl_backend *be, float *dq, float *dk, float *dv,
                                     const float *dout, const float *out, const float *lse,
                                     const float *q, const float *k, const float *v,
                                     const uint16_t *sinks, const mxl_attn_mask *m, int nq, int nk,
                                     int nh, int nkv, int d, float scale) {
  double t0 = bench_prof_enter();
  bench_prof.orig->attention_bwd(be, dq, dk, dv, dout, out, lse, q, k, v, sinks, m, nq, nk, nh,
                                 nkv, d, scale);
  double t1 = bench_now();
  double flops = bench_prof_outer() ? 8.0 * d * nh * bench_prof_pairs(m, nq, nk) : 0;
  bench_prof_leave_at(t0, t1, "attention_bwd", flops, 0);
}

static void bench_prof_unembed_xent(mxl_backend *be, float *loss, float *dh, const float *h,
                                    const mxl_bf16_weight *W, const int32_t *targets,
                                    const float *weight, int n) {
  double t0 = bench_prof_enter();
  bench_prof.orig->unembed_xent(be, loss, dh, h, W, targets, weight, n);
  bench_prof_leave(t0, dh ? "unembed_xent (+dh)" : "unembed_xent",
                   (dh ? 2 : 1) * 2.0 * n * W->rows * W->cols, 2.0 * W->rows * W->cols);
}

static double bench_prof_sum_squares(mxl_backend *be, const float *x, size_t n) {
  double t0 = bench_prof_enter();
  double s = bench_prof.orig->sum_squares(be, x, n);
  bench_prof_leave(t0, "sum_squares", 0, 0);
  return s;
}

/* ------------------------------------------------------------------ API */

/* Replaces be's op table with the timing one. */
static inline void bench_prof_install(mxl_backend *be, const mxl_config *cfg, int vocab_rows) {
  if (bench_prof.orig == be->ops || be->ops == &bench_prof.table) {
    be->ops = &bench_prof.table; /* the same table is already wrapped */
    return;
  }
  bench_prof.orig = be->ops;
  bench_prof.table = *be->ops;
  bench_prof.cfg = cfg;
  bench_prof.vocab_rows = vocab_rows;
  mxl_ops *t = &bench_prof.table;
#define BENCH_PROF_SET(op) t->op = bench_prof_##op
  BENCH_PROF_SET(upload), BENCH_PROF_SET(download), BENCH_PROF_SET(copy), BENCH_PROF_SET(zero);
  BENCH_PROF_SET(embed), BENCH_PROF_SET(rmsnorm), BENCH_PROF_SET(matmul_bf16);
  BENCH_PROF_SET(gemm_f32), BENCH_PROF_SET(rope), BENCH_PROF_SET(attention);
  BENCH_PROF_SET(router_topk), BENCH_PROF_SET(moe_plan), BENCH_PROF_SET(moe_gather);
  BENCH_PROF_SET(mxfp4_matmul), BENCH_PROF_SET(swiglu), BENCH_PROF_SET(moe_combine);
  BENCH_PROF_SET(add), BENCH_PROF_SET(dropout), BENCH_PROF_SET(unembed_xent);
  BENCH_PROF_SET(rmsnorm_bwd), BENCH_PROF_SET(matmul_bf16_dx), BENCH_PROF_SET(attention_bwd);
  BENCH_PROF_SET(router_bwd), BENCH_PROF_SET(moe_gather_bwd), BENCH_PROF_SET(mxfp4_matmul_dx);
  BENCH_PROF_SET(swiglu_bwd), BENCH_PROF_SET(moe_combine_bwd), BENCH_PROF_SET(adamw);
  BENCH_PROF_SET(sum_squares), BENCH_PROF_SET(lora), BENCH_PROF_SET(lora_bwd);
#undef BENCH_PROF_SET
  be->ops = &bench_prof.table;
}

static inline void bench_prof_set_rank(int rank) { bench_prof.rank = rank; }

static inline void bench_prof_start(void) {
  bench_prof.n_rows = 0;
  bench_prof.on = 1;
}

static inline int bench_prof_cmp(const void *a, const void *b) {
  double x = ((const bench_prof_row *)a)->sec, y = ((const bench_prof_row *)b)->sec;
  return (x < y) - (x > y);
}

/* Prints the rows by time, against `wall` seconds of the profiled region:
 * GFLOP/s against the bf16 peak, GB/s of weights against the bandwidth. */
static inline void bench_prof_print(const char *title, double wall, const bench_limits *L) {
  bench_prof.on = 0;
  qsort(bench_prof.rows, (size_t)bench_prof.n_rows, sizeof bench_prof.rows[0], bench_prof_cmp);
  printf("\n%s: %.3f s\n%-24s %7s %10s %7s %6s %9s %7s %9s %7s\n", title, wall, "op", "calls",
         "ms", "%time", "cores", "GFLOP/s", "%bf16", "GB/s", "%bw");
  double in_ops = 0;
  for (int i = 0; i < bench_prof.n_rows; i++) {
    const bench_prof_row *r = &bench_prof.rows[i];
    in_ops += r->sec;
    char gf[16] = "-", pf[16] = "-", gb[16] = "-", pb[16] = "-";
    if (r->flops > 0) {
      snprintf(gf, sizeof gf, "%.1f", r->flops / r->sec / 1e9);
      snprintf(pf, sizeof pf, "%.1f", 100 * r->flops / r->sec / 1e9 / L->bf16);
    }
    if (r->bytes > 0) {
      snprintf(gb, sizeof gb, "%.1f", r->bytes / r->sec / 1e9);
      snprintf(pb, sizeof pb, "%.1f", 100 * r->bytes / r->sec / 1e9 / L->bw);
    }
    printf("%-24s %7ld %10.2f %6.1f%% %6.2f %9s %7s %9s %7s\n", r->name, r->calls, r->sec * 1e3,
           100 * r->sec / wall, r->sec > 0 ? r->cpu / r->sec : 0, gf, pf, gb, pb);
  }
  printf("%-24s %7s %10.2f %6.1f%%\n", "(outside ops)", "", (wall - in_ops) * 1e3,
         100 * (wall - in_ops) / wall);
  printf("(GB/s: weight bytes the op had to read, once per call; meaningful for decode. "
         "limits: %.1f GB/s, bf16 %.1f GFLOP/s)\n", L->bw, L->bf16);
}

#endif
