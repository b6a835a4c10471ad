/* bench_roofline: the expected time of one LoRA training step of gpt-oss on
 * the CUDA backend, from a roofline model of every kernel the step runs,
 * until a GPU run replaces it (tools/gpu_suite.sh runs both). No GPU needed.
 *
 *   build/bench_roofline [--seq 2048] [--rank 8] [--chunk 1024] [--unembed-on-host] [--all]
 *
 * For gpt-oss-20b and -120b (attention + every expert adapted, rank R, one
 * row of --seq tokens per micro-batch) it lists the step's kernels as the
 * model code calls them (model/layers.c, model/train_step.c: a forward that
 * keeps each layer's input, then per layer, last to first, a recomputed
 * forward and the backward; the fused unembedding + cross-entropy; AdamW),
 * with FLOPs and bytes per call from their shapes, and prices each call on
 * two GPUs as
 *   time = max(FLOPs / (peak · efficiency), bytes / (bandwidth · efficiency),
 *              launch floor)
 * from published peaks and the efficiencies below, which are assumptions
 * (stated, so that a GPU run can correct them):
 *   mma      our MXFP4 grouped GEMM (mma.sync m16n8k16, 64 x 64 tiles, decode in
 *            shared memory): 30 % of the bf16 peak on H100 (no wgmma/TMA,
 *            which Hopper needs for its full rate), 45 % on sm_120; our
 *            attention forward and backward on mma.sync (head dim 64, one
 *            stage, fp32 loads converted while staging): 20 % and 30 %
 *            (cuDNN's graph, which a GPU build takes where it supports the
 *            shape, should do better: a GPU run says by how much);
 *   blas     cuBLASLt bf16 GEMMs: 70 %;  blas32: its fp32 GEMMs: 70 % of fp32;
 *   simt     the segmented LoRA op (fp32, one thread per output element):
 *            35 % of the fp32 peak;
 *   memory   elementwise kernels: 80 % of the DRAM bandwidth;
 *   launch   4 µs per kernel, 8 µs per cuBLASLt call (host setup + launch),
 *            20 µs per host sync (the MoE plan's offsets, once per chunk);
 *   pcie     host <-> device copies on the compute stream, not overlapped
 *            with compute: the offloaded layer inputs out after each
 *            layer's forward and back before its recompute, through pinned
 *            memory without a host wait (80 % of PCIe 5.0 x16, 63 GB/s each
 *            way); the embedding rows in and, when it stays in host memory,
 *            the unembedding in once per step, from pageable memory (40 %,
 *            and 20 µs of host wait per copy) (model/train_step.c,
 *            model/engine.c).
 * The experts run --chunk tokens at a time (the trainer's default on a GPU,
 * 1024): each chunk is a grouped product of its own.
 * Peaks ("H100": H100 SXM 80 GB; "PRO6000": RTX PRO 6000 Blackwell): H100
 * 989 TFLOP/s bf16 dense, 67 TFLOP/s fp32, 3.35 TB/s; PRO6000 125 TFLOP/s
 * fp32 and 1.79 TB/s published, bf16 dense 500 TFLOP/s = the published
 * 4000 TOPS FP4 (sparse) / 8 (if its bf16 products with fp32 accumulation
 * run at half that rate, as on GeForce parts, its mma/blas rows double).
 * The anchor: OpenAI's cookbook fine-tunes gpt-oss-20b on 1000 examples of
 * 2048 tokens in about 18 minutes on one H100 (Hugging Face TRL, LoRA
 * rank 8 on attention and three layers' experts); mxlora's CUDA goal is
 * 9 minutes or less for the same tokens. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/config.h"

typedef enum unit { U_MMA, U_AMMA, U_BLAS, U_BLAS32, U_SIMT, U_MEM, U_PCIE, N_UNITS } unit;
static const char *const unit_names[N_UNITS] = {"mma",  "mma",    "blas", "blas32",
                                                "simt", "memory", "pcie"};

typedef struct gpu {
  const char *name;
  double bf16, fp32, bw; /* FLOP/s, FLOP/s, bytes/s */
  double eff[N_UNITS];
  double pcie; /* bytes/s each way */
} gpu;

static const gpu gpus[] = {
    {"H100", 989e12, 67e12, 3.35e12, {0.30, 0.20, 0.70, 0.70, 0.35, 0.80, 0.80}, 63e9},
    {"PRO6000", 500e12, 125e12, 1.792e12, {0.45, 0.30, 0.70, 0.70, 0.35, 0.80, 0.80}, 63e9},
};
enum { N_GPUS = sizeof gpus / sizeof gpus[0] };

#define LAUNCH_S 4e-6
#define BLAS_CALL_S 8e-6
#define SYNC_S 20e-6

/* One kernel of the step, summed over its calls. */
typedef struct kernel {
  const char *name;
  unit u;
  double calls, flops, bytes, syncs;
  double seconds[N_GPUS];
} kernel;

enum { MAX_KERNELS = 64 };
static kernel kernels[MAX_KERNELS];
static int n_kernels;

/* Adds `calls` calls of `flops` and `bytes` each to kernel `name`. */
static void add(const char *name, unit u, double calls, double flops, double bytes) {
  kernel *k = NULL;
  for (int i = 0; i < n_kernels; i++)
    if (!strcmp(kernels[i].name, name)) k = &kernels[i];
  if (!k) {
    if (n_kernels == MAX_KERNELS) abort();
    k = &kernels[n_kernels++];
    memset(k, 0, sizeof *k);
    k->name = name;
    k->u = u;
  }
  k->calls += calls;
  k->flops += calls * flops;
  k->bytes += calls * bytes;
  for (int g = 0; g < N_GPUS; g++) {
    const gpu *d = &gpus[g];
    double peak = u == U_MMA || u == U_AMMA || u == U_BLAS ? d->bf16 : u == U_MEM ? 0 : d->fp32;
    double t_c = peak > 0 ? flops / (peak * d->eff[u]) : 0;
    double t_m = bytes / (d->bw * d->eff[U_MEM]);
    double floor = u == U_BLAS || u == U_BLAS32 ? BLAS_CALL_S : LAUNCH_S;
    double t = t_c > t_m ? t_c : t_m;
    k->seconds[g] += calls * (t > floor ? t : floor);
  }
}

static void add_sync(const char *name, double count) {
  add(name, U_MEM, 0, 0, 0);
  for (int i = 0; i < n_kernels; i++)
    if (!strcmp(kernels[i].name, name)) {
      kernels[i].syncs += count;
      for (int g = 0; g < N_GPUS; g++) kernels[i].seconds[g] += count * SYNC_S;
    }
}

/* `count` host <-> device copies of `bytes` each (a unit of their own:
 * PCIe), from pinned memory or from pageable memory (half the rate, and a
 * host wait). */
static void add_transfer(const char *name, double count, double bytes, int pinned) {
  add(name, U_PCIE, 0, 0, 0);
  for (int i = 0; i < n_kernels; i++)
    if (!strcmp(kernels[i].name, name)) {
      kernels[i].syncs += count;
      for (int g = 0; g < N_GPUS; g++) {
        double rate = gpus[g].pcie * gpus[g].eff[U_PCIE] * (pinned ? 1.0 : 0.5);
        kernels[i].seconds[g] += count * (bytes / rate + (pinned ? 0 : SYNC_S));
      }
    }
}

/* ---------------------------------------------------------------- the step */

typedef struct step {
  const mxl_config *c;
  double n, T, R, m, H, I, E, qd, kvd, V;
  double chunk; /* tokens whose experts run at a time */
} step;

/* The step's view of one MoE chunk of `tokens` tokens. */
static step chunk_of(const step *s, double tokens) {
  step c = *s;
  c.n = tokens;
  c.m = tokens * s->c->experts_per_token;
  return c;
}

/* The segmented LoRA op (kernels/cuda/ops_lora.cuh) on `rows` rows, one call
 * per target (an attention projection: one segment; an expert projection: a
 * segment per expert over the routed rows): forward t = x·Aᵀ and y += s·t·Bᵀ
 * (two launches); backward dt, dB, dA, dx (four). fp32 on the SIMT units;
 * bytes: each operand once. */
static void lora_op(double rows, double in, double out, double R, int bwd) {
  const char *name = "LoRA, segmented op (fp32 SIMT)";
  if (!bwd) {
    add(name, U_SIMT, 1, 2 * rows * in * R, 4 * rows * (in + R));
    add(name, U_SIMT, 1, 2 * rows * R * out, 4 * rows * R + 8 * rows * out);
  } else {
    add(name, U_SIMT, 1, 2 * rows * out * R, 4 * rows * (out + R));  /* dt */
    add(name, U_SIMT, 1, 2 * rows * out * R, 4 * rows * (out + R));  /* dB */
    add(name, U_SIMT, 1, 2 * rows * in * R, 4 * rows * (in + R));    /* dA */
    add(name, U_SIMT, 1, 2 * rows * in * R, 4 * rows * R + 8 * rows * in); /* dx */
  }
}

/* A bf16-weight projection through matmul_bf16: x rounded to bf16, the
 * cuBLASLt product; its LoRA. */
static void projection(const step *s, const char *what, double in, double out, int lora) {
  add("to_bf16 (product operands)", U_MEM, 1, 0, 6 * s->n * in);
  add(what, U_BLAS, 1, 2 * s->n * in * out, 2 * s->n * in + 2 * in * out + 4 * s->n * out);
  if (lora) lora_op(s->n, in, out, s->R, 0);
}

static void projection_bwd(const step *s, const char *what, double in, double out, int lora) {
  add("to_bf16 (product operands)", U_MEM, 1, 0, 6 * s->n * out);
  add(what, U_BLAS, 1, 2 * s->n * in * out, 2 * s->n * out + 2 * in * out + 8 * s->n * in);
  if (lora) lora_op(s->n, in, out, s->R, 1);
}

/* The grouped MXFP4 product: weights re-read once per 64-row tile of each
 * expert's rows; activations in fp32; `out` columns; its LoRA. */
static void mxfp4(const step *s, const char *what, double in, double out, int dx) {
  double rows = s->m / s->E, tiles = rows > 0 ? (double)(long)((rows + 63) / 64) : 0;
  double w_bytes = s->E * in * out * 17.0 / 32.0 * tiles;
  add(what, U_MMA, 1, 2 * s->m * in * out, w_bytes + 4 * s->m * in + (dx ? 8 : 4) * s->m * out);
  if (dx)
    lora_op(s->m, out, in, s->R, 1); /* the dx product runs out -> in */
  else
    lora_op(s->m, in, out, s->R, 0);
}

/* Attention FLOPs of one layer's forward: QKᵀ and PV over the allowed keys
 * (causal: half the rows on average; sliding window: the window). */
static double attention_flops(const step *s, int sliding) {
  double keys =
      sliding ? (s->c->sliding_window < s->T ? s->c->sliding_window : s->T / 2) : s->T / 2;
  return 4 * s->n * keys * s->c->n_heads * s->c->head_dim;
}

static void attention_half(const step *s, int sliding) {
  const double n = s->n, H = s->H;
  add("rmsnorm", U_MEM, 1, 0, 8 * n * H);
  projection(s, "q, k, v, o projections (cuBLASLt)", H, s->qd, 1);
  projection(s, "q, k, v, o projections (cuBLASLt)", H, s->kvd, 1);
  projection(s, "q, k, v, o projections (cuBLASLt)", H, s->kvd, 1);
  add("rope", U_MEM, 1, 0, 8 * n * (s->qd + s->kvd));
  add("attention forward (mma.sync)", U_AMMA, 1, attention_flops(s, sliding),
      4 * n * (2 * s->qd + 2 * s->kvd));
  projection(s, "q, k, v, o projections (cuBLASLt)", s->qd, H, 1);
  add("residual add, combine, gather", U_MEM, 1, 0, 12 * n * H);
}

/* The experts of one chunk (s: chunk_of), forward. */
static void moe_chunk(const step *s) {
  const double n = s->n, H = s->H, m = s->m, I = s->I;
  add("router top-k, plan", U_MEM, 1, 0, 8 * n * s->E);
  add_sync("host sync (plan offsets)", 1);
  add("residual add, combine, gather", U_MEM, 1, 0, 4 * m * H + 4 * n * H);
  mxfp4(s, "MXFP4 gate_up (mma.sync)", H, 2 * I, 0);
  add("swiglu (+bwd)", U_MEM, 1, 0, 12 * m * I);
  mxfp4(s, "MXFP4 down (mma.sync)", I, H, 0);
  add("residual add, combine, gather", U_MEM, 1, 0, 4 * m * H + 8 * n * H);
}

/* Calls f on each MoE chunk of the step. */
static void for_each_chunk(const step *s, void (*f)(const step *)) {
  for (double t0 = 0; t0 < s->n; t0 += s->chunk) {
    step c = chunk_of(s, s->n - t0 < s->chunk ? s->n - t0 : s->chunk);
    f(&c);
  }
}

static void moe_half(const step *s) {
  const double n = s->n, H = s->H;
  add("rmsnorm", U_MEM, 1, 0, 8 * n * H);
  add("router (cuBLASLt fp32)", U_BLAS32, 1, 2 * n * H * s->E, 4 * n * H + 4 * s->E * H);
  add("router top-k, plan", U_MEM, 1, 0, 8 * n * s->E);
  for_each_chunk(s, moe_chunk);
}

/* The MoE backward of one chunk (its experts recomputed first unless the
 * whole step is one chunk: then the recomputed forward holds them). */
static void moe_chunk_backward(const step *s) {
  const double n = s->n, H = s->H, m = s->m, I = s->I;
  add("residual add, combine, gather", U_MEM, 1, 0, 12 * m * H); /* combine bwd */
  mxfp4(s, "MXFP4 down dx (mma.sync)", H, I, 1);
  add("swiglu (+bwd)", U_MEM, 1, 0, 16 * m * I);
  mxfp4(s, "MXFP4 gate_up dx (mma.sync)", 2 * I, H, 1);
  add("residual add, combine, gather", U_MEM, 1, 0, 4 * m * H + 8 * n * H); /* gather bwd */
  projection_bwd(s, "router dx (cuBLASLt)", H, s->E, 0);
  add("rmsnorm", U_MEM, 1, 0, 12 * n * H);
}

static void moe_chunk_recompute_backward(const step *s) {
  moe_chunk(s);
  moe_chunk_backward(s);
}

static void layer_backward(const step *s, int sliding) {
  const double n = s->n, H = s->H;
  for_each_chunk(s, s->chunk < s->n ? moe_chunk_recompute_backward : moe_chunk_backward);
  add("rmsnorm", U_MEM, 1, 0, 12 * n * H); /* the attention norm's backward */
  projection_bwd(s, "q, k, v, o dx (cuBLASLt)", s->qd, H, 1);
  /* dq: QKᵀ, dO·Vᵀ, dS·K; dk, dv: QKᵀ, dO·Vᵀ, dSᵀ·Q, Pᵀ·dO: 3.5 forwards */
  add("attention backward (mma.sync)", U_AMMA, 1, 3.5 * attention_flops(s, sliding),
      4 * n * (4 * s->qd + 4 * s->kvd));
  add("rope", U_MEM, 1, 0, 8 * n * (s->qd + s->kvd));
  projection_bwd(s, "q, k, v, o dx (cuBLASLt)", H, s->qd, 1);
  projection_bwd(s, "q, k, v, o dx (cuBLASLt)", H, s->kvd, 1);
  projection_bwd(s, "q, k, v, o dx (cuBLASLt)", H, s->kvd, 1);
}

static double lora_params(const step *s) {
  const mxl_config *c = s->c;
  double attn = s->R * ((s->H + s->qd) * 2 + (s->H + s->kvd) * 2);
  double experts = s->E * s->R * ((s->H + 2 * s->I) + (s->I + s->H));
  return c->n_layers * (attn + experts);
}

static void training_step(const mxl_config *c, double T, double R, double chunk,
                          int unembed_on_host) {
  step s = {c,
            T,
            T,
            R,
            T * c->experts_per_token,
            c->hidden,
            c->intermediate,
            c->n_experts,
            (double)c->n_heads * c->head_dim,
            (double)c->n_kv_heads * c->head_dim,
            c->vocab_size,
            chunk < T ? chunk : T};
  n_kernels = 0;
  const double plane = 4 * s.n * s.H, offloaded = c->n_layers - 1;
  add_transfer("PCIe: embedding rows in", 1, plane, 0);
  add_transfer("PCIe: layer inputs out and back", 2 * offloaded, plane, 1);
  if (unembed_on_host) add_transfer("PCIe: unembedding in", 1, 2 * s.V * s.H, 0);
  for (int l = 0; l < c->n_layers; l++) { /* the forward */
    attention_half(&s, c->layer_sliding[l]);
    moe_half(&s);
  }
  for (int l = 0; l < c->n_layers - 1; l++) { /* the backward's recomputation: the */
    attention_half(&s, c->layer_sliding[l]);  /* routing here, the experts chunk by */
    add("rmsnorm", U_MEM, 1, 0, 8 * s.n * s.H); /* chunk in layer_backward */
    add("router (cuBLASLt fp32)", U_BLAS32, 1, 2 * s.n * s.H * s.E, 4 * s.n * s.H + 4 * s.E * s.H);
    add("router top-k, plan", U_MEM, 1, 0, 8 * s.n * s.E);
    if (s.chunk >= s.n) moe_chunk(&s);
  }
  for (int l = c->n_layers - 1; l >= 0; l--) layer_backward(&s, c->layer_sliding[l]);
  /* the fused unembedding + cross-entropy: logits and gradient products,
   * the [n, chunk] logits written, read, rounded and read again */
  add("to_bf16 (product operands)", U_MEM, 1, 0, 6 * s.n * s.H);
  add("unembedding + xent (cuBLASLt)", U_BLAS, 2, 2 * s.n * s.V * s.H,
      2 * s.V * s.H + 2 * s.n * s.H + 4 * s.n * s.H);
  add("xent softmax pass", U_MEM, 1, 0, s.n * s.V * (4 + 4 + 2));
  add("AdamW", U_MEM, 1, 0, 28 * lora_params(&s));
}

/* ---------------------------------------------------------------- report */

static int by_time(const void *a, const void *b) {
  double x = ((const kernel *)a)->seconds[0], y = ((const kernel *)b)->seconds[0];
  return x < y ? 1 : x > y ? -1 : 0;
}

static void report(const char *model, const mxl_config *c, int T, int R, int chunk,
                   int unembed_on_host, int all) {
  training_step(c, T, R, chunk, unembed_on_host);
  qsort(kernels, n_kernels, sizeof kernels[0], by_time);
  double total[N_GPUS] = {0}, flops = 0, bytes = 0, calls = 0;
  for (int i = 0; i < n_kernels; i++) {
    for (int g = 0; g < N_GPUS; g++) total[g] += kernels[i].seconds[g];
    flops += kernels[i].flops, bytes += kernels[i].bytes, calls += kernels[i].calls;
  }
  printf("\n%s: one step of %d tokens, LoRA rank %d on attention and every expert; experts %d "
         "tokens at a time, unembedding %s\n",
         model, T, R, chunk < T ? chunk : T, unembed_on_host ? "in host memory" : "on the GPU");
  printf("  %-38s %-7s %8s %9s %9s", "kernel", "unit", "calls", "GFLOP", "GB");
  for (int g = 0; g < N_GPUS; g++) printf(" %10s ms", gpus[g].name);
  printf("\n");
  for (int i = 0; i < n_kernels; i++) {
    const kernel *k = &kernels[i];
    if (!all && k->seconds[0] < 0.01 * total[0]) continue;
    printf("  %-38s %-7s %8.0f %9.1f %9.2f", k->name, unit_names[k->u], k->calls + k->syncs,
           k->flops * 1e-9, k->bytes * 1e-9);
    for (int g = 0; g < N_GPUS; g++) printf(" %13.2f", 1e3 * k->seconds[g]);
    printf("\n");
  }
  if (!all) printf("  (kernels under 1 %% of the H100 time left out; --all lists them)\n");
  printf("  %-38s %-7s %8.0f %9.1f %9.2f", "step", "", calls, flops * 1e-9, bytes * 1e-9);
  for (int g = 0; g < N_GPUS; g++) printf(" %13.2f", 1e3 * total[g]);
  printf("\n");
  for (int g = 0; g < N_GPUS; g++) {
    double tps = T / total[g], anchor = 1000.0 * 2048.0 / tps / 60.0;
    printf("  %-14s %7.0f tokens/s; 1000 x 2048 tokens: %5.1f min", gpus[g].name, tps, anchor);
    if (!strcmp(model, "gpt-oss-20b") && g == 0)
      printf("  (cookbook, one H100: ~18 min; goal: <= 9 min)");
    printf("\n");
  }
}

int main(int argc, char **argv) {
  int T = 2048, R = 8, chunk = 1024, unembed_on_host = 0, all = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--seq") && i + 1 < argc)
      T = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--rank") && i + 1 < argc)
      R = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--chunk") && i + 1 < argc)
      chunk = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--unembed-on-host"))
      unembed_on_host = 1;
    else if (!strcmp(argv[i], "--all"))
      all = 1;
    else {
      fprintf(stderr,
              "usage: bench_roofline [--seq N] [--rank R] [--chunk N] [--unembed-on-host] "
              "[--all]\n");
      return 2;
    }
  }
  if (T < 1 || R < 1 || chunk < 1) {
    fprintf(stderr, "bench_roofline: --seq, --rank and --chunk must be positive\n");
    return 2;
  }
  printf(
      "bench_roofline: expected training-step time on the CUDA backend from a roofline\n"
      "model (bench/bench_roofline.c states the peaks and efficiencies assumed)\n");
  for (int g = 0; g < N_GPUS; g++)
    printf(
        "  %-14s bf16 %4.0f TFLOP/s, fp32 %4.0f TFLOP/s, %5.2f TB/s; efficiency mma %.0f %%, "
        "attention mma %.0f %%, cuBLASLt %.0f %%, SIMT %.0f %%, memory %.0f %%\n",
        gpus[g].name, gpus[g].bf16 * 1e-12, gpus[g].fp32 * 1e-12, gpus[g].bw * 1e-12,
        100 * gpus[g].eff[U_MMA], 100 * gpus[g].eff[U_AMMA], 100 * gpus[g].eff[U_BLAS],
        100 * gpus[g].eff[U_SIMT], 100 * gpus[g].eff[U_MEM]);
  mxl_config c;
  mxl_config_gpt_oss_20b(&c);
  report("gpt-oss-20b", &c, T, R, chunk, unembed_on_host, all);
  mxl_config_gpt_oss_120b(&c);
  report("gpt-oss-120b", &c, T, R, chunk, unembed_on_host, all);
  return 0;
}
