/* bench_cuda_ops: the CUDA backend's heavy ops at gpt-oss-20b shapes,
 * against the device's copy bandwidth measured in the same run. Needs a
 * GPU; without one it says so and exits 0 (it is built in CI, run by
 * tools/gpu_suite.sh when a GPU is lent).
 *
 *   build/kernels/cuda/bench_cuda_ops [--quick] [--reps N] [--tokens 512]
 *
 * Rows: decode shapes (1 token) as GB/s of weights streamed and % of the
 * copy bandwidth (read + write of a 512 MiB buffer); prefill shapes
 * (--tokens tokens, 4 experts each) as GFLOP/s. Each figure is the best of
 * --reps timed runs after one warm-up; a run is the op then sync.
 * Shapes: H = I = 2880, E = 32, k = 4, V = 201088, nh = 64, nkv = 8, d = 64.
 * --quick: 128 prefill tokens, 2 reps.
 * --peak-bf16 T --peak-gbs G (TFLOP/s, GB/s: the GPU's published peaks,
 * which tools/gpu_suite.sh looks up by name) add each row's share of the
 * peak: bf16 for the products and for attention (at head dim 64 both
 * directions run on bf16 tensor cores: the own mma.sync kernels or cuDNN's
 * graph), bandwidth for the decode rows. No row runs on the fp32 units, so
 * there is no fp32 peak to compare with. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/bf16.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/ops.h"

enum { H = 2880, I = 2880, E = 32, TOPK = 4, V = 201088, NH = 64, NKV = 8, HD = 64 };

static mxl_backend *be;
static int reps = 5;
static double peak_bf16, peak_bw; /* FLOP/s, bytes/s; 0: unknown */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* A backend buffer of `bytes` filled on the host by `fill` (or left zero). */
typedef void (*fill_fn)(void *host, size_t bytes, uint64_t seed);

static void *dev_buffer(size_t bytes, fill_fn fill, uint64_t seed) {
  void *d = be->ops->alloc(be, bytes);
  if (!d) {
    fprintf(stderr, "bench_cuda_ops: cannot allocate %zu bytes on the device\n", bytes);
    exit(1);
  }
  if (fill) {
    void *h = malloc(bytes);
    if (!h) exit(1);
    fill(h, bytes, seed);
    be->ops->upload(be, d, h, bytes);
    if (be->ops->sync(be) != MXL_OK) exit(1);
    free(h);
  }
  return d;
}

/* Activations in [-1, 1). */
static void fill_f32(void *host, size_t bytes, uint64_t seed) {
  float *x = host;
  for (size_t i = 0; i < bytes / 4; i++)
    x[i] = (float)(mix(seed + i * 0x9E3779B97F4A7C15ull) >> 40) * 0x1p-23f - 1.0f;
}

/* bf16 weights in [-0.05, 0.05). */
static void fill_bf16(void *host, size_t bytes, uint64_t seed) {
  uint16_t *x = host;
  for (size_t i = 0; i < bytes / 2; i++)
    x[i] = mxl_f32_to_bf16(0.05f * ((float)(mix(seed + i) >> 40) * 0x1p-23f - 1.0f));
}

/* Random MXFP4 nibbles (scales are filled separately). */
static void fill_bytes(void *host, size_t bytes, uint64_t seed) {
  uint8_t *x = host;
  for (size_t i = 0; i < bytes; i++) x[i] = (uint8_t)mix(seed + i);
}

static void fill_scales(void *host, size_t bytes, uint64_t seed) {
  uint8_t *x = host;
  for (size_t i = 0; i < bytes; i++) x[i] = (uint8_t)(127 - 3 - (int)(mix(seed + i) % 4));
}

/* The best time of `reps` runs of `op` (after one warm-up). */
typedef void (*op_fn)(void *arg);

static double best_time(op_fn op, void *arg) {
  op(arg);
  if (be->ops->sync(be) != MXL_OK) {
    fprintf(stderr, "bench_cuda_ops: %s\n", mxl_last_error());
    exit(1);
  }
  double best = INFINITY;
  for (int r = 0; r < reps; r++) {
    double t0 = now();
    op(arg);
    if (be->ops->sync(be) != MXL_OK) exit(1);
    double t = now() - t0;
    best = t < best ? t : best;
  }
  return best;
}

/* ------------------------------------------------------------------ ops */

typedef struct copy_arg {
  void *a, *b;
  size_t bytes;
} copy_arg;
static void run_copy(void *arg) {
  copy_arg *c = arg;
  be->ops->copy(be, c->b, c->a, c->bytes);
}

typedef struct mx_arg {
  float *y, *x;
  mxl_mxfp4_weight W;
  mxl_moe_plan plan;
  int dx;
} mx_arg;
static void run_mx(void *arg) {
  mx_arg *a = arg;
  if (a->dx)
    be->ops->mxfp4_matmul_dx(be, a->x, a->y, &a->W, &a->plan);
  else
    be->ops->mxfp4_matmul(be, a->y, a->x, &a->W, &a->plan);
}

typedef struct bf_arg {
  float *y, *x;
  mxl_bf16_weight W;
  int n, dx;
} bf_arg;
static void run_bf(void *arg) {
  bf_arg *a = arg;
  if (a->dx)
    be->ops->matmul_bf16_dx(be, a->x, a->y, &a->W, a->n);
  else
    be->ops->matmul_bf16(be, a->y, a->x, &a->W, a->n);
}

typedef struct xent_arg {
  float *loss, *dh, *h, *weight;
  int32_t *targets;
  mxl_bf16_weight W;
  int n;
} xent_arg;
static void run_xent(void *arg) {
  xent_arg *a = arg;
  be->ops->unembed_xent(be, a->loss, a->dh, a->h, &a->W, a->targets, a->weight, a->n);
}

typedef struct attn_arg {
  float *q, *k, *v, *out, *lse, *dq, *dk, *dv;
  uint16_t *sinks;
  mxl_attn_mask mask;
  int n, bwd;
} attn_arg;
static void run_attn(void *arg) {
  attn_arg *a = arg;
  float scale = 0.125f;
  if (a->bwd)
    be->ops->attention_bwd(be, a->dq, a->dk, a->dv, a->out, a->out, a->lse, a->q, a->k, a->v,
                           a->sinks, &a->mask, a->n, a->n, NH, NKV, HD, scale);
  else
    be->ops->attention(be, a->out, a->lse, a->q, a->k, a->v, a->sinks, &a->mask, a->n, a->n, NH,
                       NKV, HD, scale);
}

/* A plan of n tokens whose k experts are t·k + r mod E (every expert hit
 * equally), built on the host and uploaded. */
static mxl_moe_plan make_plan(int n, int32_t **offsets_host) {
  int m = n * TOPK;
  int32_t *experts = malloc(sizeof *experts * (size_t)m);
  int32_t *order = malloc(sizeof *order * (size_t)m), *slot = malloc(sizeof *slot * (size_t)m);
  int32_t *offsets = calloc(E + 1, sizeof *offsets);
  float *weights = malloc(sizeof *weights * (size_t)m);
  if (!experts || !order || !slot || !offsets || !weights) exit(1);
  for (int a = 0; a < m; a++) {
    experts[a] = (a + a / TOPK) % E;
    weights[a] = 1.0f / TOPK;
    offsets[experts[a] + 1]++;
  }
  for (int e = 0; e < E; e++) offsets[e + 1] += offsets[e];
  int fill[E] = {0};
  for (int a = 0; a < m; a++) {
    int i = offsets[experts[a]] + fill[experts[a]]++;
    order[i] = a;
    slot[a] = i;
  }
  mxl_moe_plan p = {n, TOPK, E, NULL, NULL, NULL, NULL, NULL, offsets};
  int32_t *d_experts = dev_buffer(sizeof *experts * (size_t)m, NULL, 0);
  int32_t *d_order = dev_buffer(sizeof *order * (size_t)m, NULL, 0);
  int32_t *d_slot = dev_buffer(sizeof *slot * (size_t)m, NULL, 0);
  int32_t *d_offsets = dev_buffer(sizeof *offsets * (E + 1), NULL, 0);
  float *d_weights = dev_buffer(sizeof *weights * (size_t)m, NULL, 0);
  be->ops->upload(be, d_experts, experts, sizeof *experts * (size_t)m);
  be->ops->upload(be, d_order, order, sizeof *order * (size_t)m);
  be->ops->upload(be, d_slot, slot, sizeof *slot * (size_t)m);
  be->ops->upload(be, d_offsets, offsets, sizeof *offsets * (E + 1));
  be->ops->upload(be, d_weights, weights, sizeof *weights * (size_t)m);
  if (be->ops->sync(be) != MXL_OK) exit(1);
  p.experts = d_experts;
  p.order = d_order;
  p.slot = d_slot;
  p.offsets = d_offsets;
  p.weights = d_weights;
  *offsets_host = offsets;
  free(experts);
  free(order);
  free(slot);
  free(weights);
  return p;
}

static void print_row(const char *what, double seconds, double bytes, double flops,
                      double bandwidth) {
  printf("  %-44s %9.3f ms", what, 1e3 * seconds);
  if (bytes > 0) {
    printf("  %8.1f GB/s  %5.1f %% of copy", bytes / seconds * 1e-9,
           100.0 * bytes / seconds / bandwidth);
    if (peak_bw > 0) printf("  %5.1f %% of peak", 100.0 * bytes / seconds / peak_bw);
  }
  if (flops > 0) {
    printf("  %9.1f GFLOP/s", flops / seconds * 1e-9);
    if (peak_bf16 > 0) printf("  %5.1f %% of bf16 peak", 100.0 * flops / seconds / peak_bf16);
  }
  printf("\n");
}

int main(int argc, char **argv) {
  int tokens = 512;
  setvbuf(stdout, NULL, _IOLBF, 0); /* rows appear as they are measured */
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--quick")) {
      tokens = 128;
      reps = 2;
    } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
      reps = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) {
      tokens = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--peak-bf16") && i + 1 < argc) {
      peak_bf16 = atof(argv[++i]) * 1e12;
    } else if (!strcmp(argv[i], "--peak-gbs") && i + 1 < argc) {
      peak_bw = atof(argv[++i]) * 1e9;
    } else {
      fprintf(stderr, "usage: bench_cuda_ops [--quick] [--reps N] [--tokens N] [--peak-bf16 T]"
                      " [--peak-gbs G]\n");
      return 2;
    }
  }
  if (reps < 1 || tokens < 1) return 2;
  if (mxl_backend_cuda_create(0, &be) != MXL_OK) {
    printf("bench_cuda_ops: skipped: %s\n", mxl_last_error());
    return 0;
  }
  size_t mem_free = 0, mem_total = 0;
  if (mxl_cuda_memory_info(be, &mem_free, &mem_total) == MXL_OK)
    printf("device memory in use with the backend created (CUDA context, cuBLASLt handle; "
           "mxlora plan allows 768 MiB): %.0f MiB of %.0f MiB\n",
           (double)(mem_total - mem_free) / 1048576.0, (double)mem_total / 1048576.0);

  /* the limit: device-to-device copy, bytes read + written */
  copy_arg cp = {NULL, NULL, (size_t)512 << 20};
  cp.a = dev_buffer(cp.bytes, NULL, 0);
  cp.b = dev_buffer(cp.bytes, NULL, 0);
  double bw = 2.0 * (double)cp.bytes / best_time(run_copy, &cp);
  printf("copy bandwidth %.1f GB/s (read + write of 512 MiB)\n", bw * 1e-9);
  be->ops->free(be, cp.a);
  be->ops->free(be, cp.b);

  /* MXFP4 experts: gate_up [2I, H] (the down projection [H, I] is the same
   * size), HF layout */
  size_t nb = (size_t)2 * I * H / 2, ns = (size_t)2 * I * H / 32;
  mxl_mxfp4_weight gu = {0};
  gu.blocks = dev_buffer(nb * E, fill_bytes, 1);
  gu.scales = dev_buffer(ns * E, fill_scales, 2);
  gu.bias = dev_buffer((size_t)E * 2 * I * 2, fill_bf16, 3);
  gu.blocks_stride = nb;
  gu.scales_stride = ns;
  gu.bias_stride = 2 * I;
  gu.rows = 2 * I;
  gu.cols = H;
  gu.n_experts = E;
  gu.scale_bias = 127;
  int m = tokens * TOPK;
  float *x = dev_buffer(sizeof(float) * (size_t)m * H, fill_f32, 4);
  float *y = dev_buffer(sizeof(float) * (size_t)m * 2 * I, fill_f32, 5);
  double mx_bytes_decode = (double)TOPK * (double)(nb + ns + 2 * 2 * I);

  printf("decode (1 token):\n");
  int32_t *off1, *offn;
  mx_arg mx = {y, x, gu, make_plan(1, &off1), 0};
  print_row("mxfp4_matmul gate_up, 4 experts", best_time(run_mx, &mx), mx_bytes_decode, 0, bw);
  mx.dx = 1;
  print_row("mxfp4_matmul_dx gate_up, 4 experts", best_time(run_mx, &mx), mx_bytes_decode, 0, bw);

  mxl_bf16_weight wq = {dev_buffer((size_t)NH * HD * H * 2, fill_bf16, 6),
                        dev_buffer((size_t)NH * HD * 2, fill_bf16, 7), NH * HD, H};
  bf_arg bq = {y, x, wq, 1, 0};
  print_row("matmul_bf16 q [4096, 2880]", best_time(run_bf, &bq), (double)NH * HD * H * 2, 0, bw);
  mxl_bf16_weight wu = {dev_buffer((size_t)V * H * 2, fill_bf16, 8), NULL, V, H};
  float *logits = dev_buffer(sizeof(float) * (size_t)V, NULL, 0);
  bf_arg bu = {logits, x, wu, 1, 0};
  print_row("matmul_bf16 lm_head [201088, 2880]", best_time(run_bf, &bu), (double)V * H * 2, 0,
            bw);
  be->ops->free(be, logits);

  printf("prefill (%d tokens, %d grouped expert rows):\n", tokens, m);
  mx = (mx_arg){y, x, gu, make_plan(tokens, &offn), 0};
  double mx_flops = 2.0 * m * 2 * I * H;
  print_row("mxfp4_matmul gate_up", best_time(run_mx, &mx), 0, mx_flops, bw);
  mx.dx = 1;
  print_row("mxfp4_matmul_dx gate_up", best_time(run_mx, &mx), 0, mx_flops, bw);
  bq.n = tokens;
  double bq_flops = 2.0 * tokens * NH * HD * H;
  print_row("matmul_bf16 q", best_time(run_bf, &bq), 0, bq_flops, bw);
  bq.dx = 1;
  print_row("matmul_bf16_dx q", best_time(run_bf, &bq), 0, bq_flops, bw);

  xent_arg xe = {dev_buffer(sizeof(float) * (size_t)tokens, NULL, 0),
                 dev_buffer(sizeof(float) * (size_t)tokens * H, NULL, 0),
                 x,
                 dev_buffer(sizeof(float) * (size_t)tokens, NULL, 0),
                 dev_buffer(sizeof(int32_t) * (size_t)tokens, NULL, 0),
                 wu,
                 tokens};
  {
    float *w = malloc(sizeof *w * (size_t)tokens);
    int32_t *t = malloc(sizeof *t * (size_t)tokens);
    if (!w || !t) exit(1);
    for (int i = 0; i < tokens; i++) {
      w[i] = 1.0f;
      t[i] = (int32_t)(mix((uint64_t)i) % V);
    }
    be->ops->upload(be, xe.weight, w, sizeof *w * (size_t)tokens);
    be->ops->upload(be, xe.targets, t, sizeof *t * (size_t)tokens);
    if (be->ops->sync(be) != MXL_OK) exit(1);
    free(w);
    free(t);
  }
  print_row("unembed_xent with dh (2 GEMMs over V)", best_time(run_xent, &xe), 0,
            2.0 * 2.0 * tokens * (double)V * H, bw);

  /* attention: one sequence, full causal and window 128 */
  size_t nq = (size_t)tokens * NH * HD, nk = (size_t)tokens * NKV * HD;
  int32_t *pos = malloc(sizeof *pos * (size_t)tokens), *seg = calloc((size_t)tokens, sizeof *seg);
  if (!pos || !seg) exit(1);
  for (int i = 0; i < tokens; i++) pos[i] = i;
  int32_t *d_pos = dev_buffer(sizeof *pos * (size_t)tokens, NULL, 0);
  int32_t *d_seg = dev_buffer(sizeof *seg * (size_t)tokens, NULL, 0);
  be->ops->upload(be, d_pos, pos, sizeof *pos * (size_t)tokens);
  be->ops->upload(be, d_seg, seg, sizeof *seg * (size_t)tokens);
  attn_arg at = {dev_buffer(nq * 4, fill_f32, 9), dev_buffer(nk * 4, fill_f32, 10),
                 dev_buffer(nk * 4, fill_f32, 11), dev_buffer(nq * 4, NULL, 0),
                 dev_buffer((size_t)tokens * NH * 4, NULL, 0), dev_buffer(nq * 4, NULL, 0),
                 dev_buffer(nk * 4, NULL, 0), dev_buffer(nk * 4, NULL, 0),
                 dev_buffer(NH * 2, fill_bf16, 12), {d_pos, d_seg, d_pos, d_seg, 0}, tokens, 0};
  double pairs = 0.5 * tokens * (tokens + 1.0);
  print_row("attention causal", best_time(run_attn, &at), 0, 4.0 * pairs * NH * HD, bw);
  at.bwd = 1;
  print_row("attention_bwd causal", best_time(run_attn, &at), 0, 10.0 * pairs * NH * HD, bw);
  at.bwd = 0;
  at.mask.window = 128;
  double wpairs = 0;
  for (int i = 0; i < tokens; i++) wpairs += i + 1 < 128 ? i + 1 : 128;
  print_row("attention window 128", best_time(run_attn, &at), 0, 4.0 * wpairs * NH * HD, bw);
  at.bwd = 1;
  print_row("attention_bwd window 128", best_time(run_attn, &at), 0, 10.0 * wpairs * NH * HD, bw);

  free(pos);
  free(seg);
  free(off1);
  free(offn);
  mxl_backend_destroy(be); /* device memory goes with the context at exit */
  return 0;
}
