/* The optimized CPU backend: creation, instruction-set choice, memory ops,
 * scratch buffers and the op table. See cpu_internal.h for the file map. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hugemem.h"
#include "core/status.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/cpu_internal.h"

/* ------------------------------------------------------------------ ISA choice */

/* The best instruction set this CPU runs (AMX tiles where the CPU has
 * AMX-BF16 and the kernel grants them), overridable with MXL_CPU_ISA=
 * generic|avx2|avx512bf16 (never above what the CPU supports), so that every
 * path can be tested on one machine. */
static const mxl_cpu_isa *pick_isa(void) {
  const mxl_cpu_isa *best = &mxl_cpu_isa_generic;
#ifdef MXL_CPU_X86
  __builtin_cpu_init();
  int has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  int has_avx512 = has_avx2 && __builtin_cpu_supports("avx512f") &&
                   __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                   __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vnni");
  if (has_avx2) best = &mxl_cpu_isa_avx2;
  if (has_avx512) best = &mxl_cpu_isa_avx512;
  const char *want = getenv("MXL_CPU_ISA");
  const mxl_cpu_isa *amx = has_avx512 ? mxl_cpu_isa_amx() : NULL;
  if (amx && !(want && !strcmp(want, "avx512bf16"))) best = amx;
  if (want && !strcmp(want, "generic")) best = &mxl_cpu_isa_generic;
  if (want && !strcmp(want, "avx2") && has_avx2) best = &mxl_cpu_isa_avx2;
#endif
  return best;
}

/* ------------------------------------------------------------------ scratch and errors */

void *mxl_cpu_scratch(mxl_backend *be, int slot, size_t bytes) {
  mxl_cpu *c = mxl_cpu_of(be);
  if (bytes <= c->scratch_bytes[slot]) return c->scratch[slot];
  free(c->scratch[slot]);
  c->scratch[slot] = NULL;
  c->scratch_bytes[slot] = 0;
  size_t rounded = (bytes + 4095) & ~(size_t)4095;
  void *p = mxl_work_alloc(rounded);
  if (!p) {
    mxl_cpu_fail(be, MXL_ERR_MEMORY, "scratch buffer");
    return NULL;
  }
  c->scratch[slot] = p;
  c->scratch_bytes[slot] = rounded;
  return p;
}

void mxl_cpu_fail(mxl_backend *be, mxl_status status, const char *what) {
  mxl_cpu *c = mxl_cpu_of(be);
  if (c->error != MXL_OK) return;
  c->error = status;
  snprintf(c->message, sizeof c->message, "cpu backend: %s: %s", what, mxl_status_name(status));
}

/* ------------------------------------------------------------------ memory */

static void cpu_destroy(mxl_backend *be) {
  if (!be) return;
  mxl_cpu *c = mxl_cpu_of(be);
  if (c) {
    for (int s = 0; s < MXL_CPU_SCRATCH_SLOTS; s++) free(c->scratch[s]);
    free(c->rope.cs_sn), free(c->rope.pos), free(c->rope.inv_freq);
    mxl_cpu_dnnl_destroy(c->dnnl);
  }
  free(c);
  free(be);
}

static void *cpu_alloc(mxl_backend *be, size_t bytes) {
  (void)be;
  size_t rounded = bytes ? (bytes + 63) & ~(size_t)63 : 64;
  void *p = mxl_work_alloc(rounded);
  if (p) memset(p, 0, rounded); /* each page's first touch here, not in an op */
  return p;
}

static void cpu_free(mxl_backend *be, void *ptr) {
  (void)be;
  free(ptr);
}

static void cpu_copy(mxl_backend *be, void *dst, const void *src, size_t bytes) {
  (void)be;
  if (bytes) memmove(dst, src, bytes);
}

/* Large clears (gradient buffers of a training step: 4-12 MB each on the
 * 20b shape, 3.6 % of a step on one thread) split over the threads by
 * pages, so that each thread also takes the first touch of its pages. */
static void cpu_zero(mxl_backend *be, void *dst, size_t bytes) {
  if (!bytes) return;
  int nt = mxl_cpu_threads_for(be, (double)bytes, MXL_CPU_MIN_BYTES);
  if (nt <= 1) {
    memset(dst, 0, bytes);
    return;
  }
  enum { PIECE = 1 << 16 };
  int64_t pieces = (int64_t)((bytes + PIECE - 1) / PIECE);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < pieces; i++) {
    size_t at = (size_t)i * PIECE, n = bytes - at < PIECE ? bytes - at : PIECE;
    memset((char *)dst + at, 0, n);
  }
}

static mxl_status cpu_sync(mxl_backend *be) {
  mxl_cpu *c = mxl_cpu_of(be);
  mxl_status st = c->error;
  c->error = MXL_OK;
  if (st != MXL_OK) return mxl_errorf(st, "%s (an op since the last sync)", c->message);
  return MXL_OK;
}

static const mxl_ops cpu_ops = {
    .name = "cpu",
    .host_memory = 1,
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .sync = cpu_sync,
    .embed = mxl_cpu_embed,
    .rmsnorm = mxl_cpu_rmsnorm,
    .matmul_bf16 = mxl_cpu_matmul_bf16,
    .gemm_f32 = mxl_cpu_gemm_f32,
    .rope = mxl_cpu_rope,
    .attention = mxl_cpu_attention,
    .router_topk = mxl_cpu_router_topk,
    .moe_plan = mxl_cpu_moe_plan,
    .moe_gather = mxl_cpu_moe_gather,
    .mxfp4_matmul = mxl_cpu_mxfp4_matmul,
    .swiglu = mxl_cpu_swiglu,
    .moe_combine = mxl_cpu_moe_combine,
    .add = mxl_cpu_add,
    .dropout = mxl_cpu_dropout,
    .unembed_xent = mxl_cpu_unembed_xent,
    .lora = mxl_cpu_lora,
    .lora_bwd = mxl_cpu_lora_bwd,
    .rmsnorm_bwd = mxl_cpu_rmsnorm_bwd,
    .matmul_bf16_dx = mxl_cpu_matmul_bf16_dx,
    .attention_bwd = mxl_cpu_attention_bwd,
    .router_bwd = mxl_cpu_router_bwd,
    .moe_gather_bwd = mxl_cpu_moe_gather_bwd,
    .mxfp4_matmul_dx = mxl_cpu_mxfp4_matmul_dx,
    .swiglu_bwd = mxl_cpu_swiglu_bwd,
    .moe_combine_bwd = mxl_cpu_moe_combine_bwd,
    .adamw = mxl_cpu_adamw,
    .sum_squares = mxl_cpu_sum_squares,
};

/* A path chosen by measuring it on this core: taken where `speedup` (the
 * path's speed over the alternative's, measured once per process) is above
 * 1, or where nothing measures it; the environment variable `var` (0|1)
 * decides instead when set. *measured keeps the figure for `mxlora
 * version`. */
static int chosen_by_speed(const char *var, double (*speedup)(void), double *measured) {
  const char *want = getenv(var);
  if (want && want[0]) return strcmp(want, "0") != 0;
  if (!speedup) return 1;
  *measured = speedup();
  return *measured > 1.0;
}

/* Attention's block products take bf16 operands where this core's bf16 dot
 * products outrun its fp32 FMAs (measured: bf16_dot_speedup), fp32 where
 * they do not (the bf16 path then only loses accuracy: on an Intel Xeon with
 * AMX, bench_ops' 512-token attention took 1.2-1.3x longer forward and
 * 1.5-1.6x backward on bf16 operands). */
static int bf16_attention_default(mxl_cpu *c) {
  return c->isa->bf16_dot &&
         chosen_by_speed("MXL_CPU_BF16_ATTENTION", c->isa->bf16_dot_speedup, &c->bf16_speedup);
}

/* The MXFP4 products of decode and few rows take the integer kernel where
 * it outruns the bf16 ones on this core (measured: int_decode_speedup;
 * about 1.35x on an Intel Xeon with AMX, 0.65x on AMD Zen 4). */
static int int_decode_default(mxl_cpu *c) {
  return c->isa->gemm_mxfp4_q8 &&
         chosen_by_speed("MXL_CPU_INT_DECODE", c->isa->int_decode_speedup, &c->int_speedup);
}

mxl_status mxl_backend_cpu_create(int n_threads, mxl_backend **out) {
  *out = NULL;
  mxl_backend *be = calloc(1, sizeof *be);
  mxl_cpu *c = calloc(1, sizeof *c);
  if (!be || !c) {
    free(be);
    free(c);
    return mxl_errorf(MXL_ERR_MEMORY, "cpu backend: out of memory creating the backend");
  }
  if (n_threads <= 0) n_threads = omp_get_num_procs();
  if (n_threads < 1) n_threads = 1;
  c->isa = pick_isa();
  c->n_threads = n_threads;
  const char *exact = getenv("MXL_CPU_EXACT");
  c->exact = exact && exact[0] && strcmp(exact, "0") != 0;
  c->bf16_attention = bf16_attention_default(c);
  c->int_decode = int_decode_default(c);
  be->ops = &cpu_ops;
  be->n_threads = n_threads;
  be->impl = c;
  mxl_backend_cpu_set_dnnl(be, mxl_cpu_dnnl_mode_default());
  *out = be;
  return MXL_OK;
}

void mxl_backend_cpu_set_exact(mxl_backend *be, int exact) { mxl_cpu_of(be)->exact = exact != 0; }

int mxl_backend_cpu_set_dnnl(mxl_backend *be, int mode) {
  mxl_cpu *c = mxl_cpu_of(be);
  if (mode != MXL_CPU_DNNL_OFF && !c->dnnl) c->dnnl = mxl_cpu_dnnl_create(c->n_threads);
  c->dnnl_mode = c->dnnl ? mode : MXL_CPU_DNNL_OFF;
  return c->dnnl_mode;
}

const char *mxl_cpu_paths(void) {
  mxl_backend *be = NULL;
  if (mxl_backend_cpu_create(0, &be) != MXL_OK) return "cpu backend unavailable";
  const char *line = mxl_backend_cpu_paths(be);
  mxl_backend_destroy(be);
  return line;
}

int mxl_backend_cpu_bf16_attention(const mxl_backend *be) {
  const mxl_cpu *c = be->impl;
  return c->bf16_attention && !c->exact;
}

int mxl_backend_cpu_set_bf16_attention(mxl_backend *be, int on) {
  mxl_cpu *c = mxl_cpu_of(be);
  c->bf16_attention = on && c->isa->bf16_dot;
  return c->bf16_attention;
}

int mxl_backend_cpu_int_decode(const mxl_backend *be) {
  const mxl_cpu *c = be->impl;
  return c->int_decode && !c->exact;
}

int mxl_backend_cpu_set_int_decode(mxl_backend *be, int on) {
  mxl_cpu *c = mxl_cpu_of(be);
  c->int_decode = on && c->isa->gemm_mxfp4_q8;
  return c->int_decode;
}

/* Which path each product family takes here (`mxlora version`). */
const char *mxl_backend_cpu_paths(const mxl_backend *be) {
  const mxl_cpu *c = be->impl;
  static char line[768];
  const char *isa = c->isa->name;
  if (c->dnnl_mode == MXL_CPU_DNNL_OFF) {
    snprintf(line, sizeof line,
             "bf16 projections, MXFP4 experts, lm_head+loss: %s kernels (oneDNN: %s, off: it "
             "wins only with AMX); decode GEMV: %s; LoRA fp32: %s",
             isa, mxl_cpu_dnnl_isa_name(), isa, isa);
  } else {
    if (c->dnnl_mode == MXL_CPU_DNNL_ALL)
      snprintf(line, sizeof line,
               "bf16 projections and their dx, MXFP4 experts (bf16 panels), the loss's "
               "unembedding: oneDNN on %s for every product, decode included (forced); LoRA "
               "fp32: %s",
               mxl_cpu_dnnl_isa_name(), isa);
    else
      snprintf(line, sizeof line,
               "bf16 projections and their dx, MXFP4 experts (bf16 panels), the loss's "
               "unembedding: oneDNN on %s from %d rows; decode GEMV and smaller products: %s; "
               "LoRA fp32: %s",
               mxl_cpu_dnnl_isa_name(), MXL_CPU_DNNL_MIN_ROWS, isa, isa);
  }
  size_t used = strlen(line);
  if (c->bf16_speedup > 0) {
    snprintf(line + used, sizeof line - used,
             "; bf16 dot products %.2fx the fp32 FMA rate here (measured)", c->bf16_speedup);
    used = strlen(line);
  }
  snprintf(line + used, sizeof line - used, "; MXFP4 experts of 1-12 rows (decode): %s",
           mxl_backend_cpu_int_decode(be) ? "integer (VNNI; bf16 activations in 24-bit fixed point)"
                                          : "weights decoded to bf16");
  used = strlen(line);
  if (c->int_speedup > 0) {
    snprintf(line + used, sizeof line - used, " (integer kernel %.2fx the bf16 ones here, measured)",
             c->int_speedup);
    used = strlen(line);
  }
  snprintf(line + used, sizeof line - used, "; attention blocks: %s; decode attention: %s%s",
           mxl_backend_cpu_bf16_attention(be) ? "bf16 operands" : "fp32",
           c->isa->attn_decode_block ? "fp32, key blocks in memory order, " : "fp32 blocks",
           c->isa->attn_decode_block ? isa : "");
  return line;
}

const char *mxl_backend_cpu_isa(const mxl_backend *be) {
  return ((const mxl_cpu *)be->impl)->isa->name;
}
