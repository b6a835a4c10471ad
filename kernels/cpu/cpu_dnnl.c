/* bf16 products through oneDNN (MXL_HAVE_DNNL): C (+)= A·op(B) with bf16
 * inputs and fp32 accumulation and output, as the ISA's gemm kernels.
 *
 * Where it is used (mxl_cpu_dnnl_rows): oneDNN 2.6 multiplies bf16 with AMX
 * tiles where the CPU has them (brg:avx512_core_amx_bf16: ≈ 1,580 GFLOP/s
 * per core on an Intel Xeon host with AMX-BF16, ≈ 15× the
 * vdpbf16ps kernels there). Without AMX it brings nothing: on AMD Zen 4
 * (bench_ops, 1 thread, same run, rates by CPU time) its brgemm matched the
 * hand-written kernels on the dense projections (q_proj 128 rows: 188 vs
 * 178 GFLOP/s, dx 180 vs 172) and lost on the MXFP4 experts, decoded into
 * bf16 panels (gate_up 512 tokens: 99 vs 126, dx 52 vs 68). On 2 threads
 * (four alternating bench_ops runs) the dense forward tied (q_proj 512
 * rows: 376-428 vs 382-424 GFLOP/s) and oneDNN's dx led by 1-17 % (321-395
 * vs 375-405), while 20b prefill and the bench preset's training step
 * measured no difference beyond this VM's ±15 % (a "dense only" mode was
 * tried and dropped: it would also have compiled a primitive per new row
 * count under serving's varying batches). So the default
 * is oneDNN on AMX hosts for products of at least
 * MXL_CPU_DNNL_MIN_ROWS activation rows, the hand-written kernels
 * elsewhere; MXL_CPU_DNNL=0 turns it off, MXL_CPU_DNNL=1 forces it for
 * every product that has a oneDNN path (tests cover it on every host
 * where oneDNN multiplies bf16: not on CPUs without AVX-512, where oneDNN
 * 2.6 has no bf16 matmul and the backend keeps its own kernels).
 *
 * Primitives: one per shape (M, N, K, strides, transposition, accumulation,
 * threads), created once and kept in a small per-backend table; creation
 * (oneDNN generates code) happens only in serial code, so that parallel
 * regions only read the table. A call inside a parallel region runs on the
 * calling thread (oneDNN's OpenMP runtime never nests), with that thread's
 * stream and scratchpad; a call from serial code runs on `nt` threads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hugemem.h"
#include "kernels/cpu/cpu_internal.h"

#ifdef MXL_HAVE_DNNL
#include <dnnl.h>
#include <omp.h>

enum { CACHE_SLOTS = 256 };

typedef struct dnnl_key {
  int64_t M, N, K, lda, ldb, ldc;
  int b_trans, accumulate, nt, b_blocked;
} dnnl_key;

struct mxl_cpu_mm_prim {
  dnnl_key key;
  dnnl_primitive_desc_t pd;
  dnnl_primitive_t prim;
  size_t scratch_bytes;
  uint64_t used; /* the op (mxl_cpu_dnnl.op) that last fetched it */
};

struct mxl_cpu_dnnl {
  dnnl_engine_t engine;
  dnnl_stream_t *streams;  /* [n_threads] */
  void **scratch;          /* [n_threads] scratchpads, scratch_bytes each */
  size_t scratch_bytes;
  mxl_cpu_mm_prim *slots;  /* [CACHE_SLOTS] */
  int n_slots, next_victim, n_threads;
  uint64_t op;             /* counts mxl_cpu_dnnl_begin calls */
  uint64_t runs;           /* products run (tests check which path ran) */
  char impl[64];           /* implementation of the last primitive created */
};

static int amx_host(void) {
  dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  return ((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core_amx) ==
         (unsigned)dnnl_cpu_isa_avx512_core_amx;
}

int mxl_cpu_dnnl_mode_default(void) {
  const char *want = getenv("MXL_CPU_DNNL");
  if (want && !strcmp(want, "0")) return MXL_CPU_DNNL_OFF;
  if (want && !strcmp(want, "1")) return MXL_CPU_DNNL_ALL;
  return amx_host() ? MXL_CPU_DNNL_LARGE : MXL_CPU_DNNL_OFF;
}

static int bf16_matmul_here(dnnl_engine_t engine); /* below init_mds */

mxl_cpu_dnnl *mxl_cpu_dnnl_create(int n_threads) {
  mxl_cpu_dnnl *d = calloc(1, sizeof *d);
  if (!d) return NULL;
  d->n_threads = n_threads;
  d->streams = calloc((size_t)n_threads, sizeof *d->streams);
  d->scratch = calloc((size_t)n_threads, sizeof *d->scratch);
  d->slots = calloc(CACHE_SLOTS, sizeof *d->slots);
  if (!d->streams || !d->scratch || !d->slots ||
      dnnl_engine_create(&d->engine, dnnl_cpu, 0) != dnnl_success) {
    mxl_cpu_dnnl_destroy(d);
    return NULL;
  }
  for (int t = 0; t < n_threads; t++)
    if (dnnl_stream_create(&d->streams[t], d->engine, dnnl_stream_default_flags) != dnnl_success) {
      mxl_cpu_dnnl_destroy(d);
      return NULL;
    }
  if (!bf16_matmul_here(d->engine)) { /* nothing to offer: every product stays hand-written */
    mxl_cpu_dnnl_destroy(d);
    return NULL;
  }
  return d;
}

static void slot_clear(mxl_cpu_mm_prim *s) {
  if (s->prim) dnnl_primitive_destroy(s->prim);
  if (s->pd) dnnl_primitive_desc_destroy(s->pd);
  memset(s, 0, sizeof *s);
}

void mxl_cpu_dnnl_destroy(mxl_cpu_dnnl *d) {
  if (!d) return;
  for (int i = 0; d->slots && i < d->n_slots; i++) slot_clear(&d->slots[i]);
  for (int t = 0; t < d->n_threads; t++) {
    if (d->streams && d->streams[t]) dnnl_stream_destroy(d->streams[t]);
    if (d->scratch) free(d->scratch[t]);
  }
  if (d->engine) dnnl_engine_destroy(d->engine);
  free(d->streams), free(d->scratch), free(d->slots), free(d);
}

void mxl_cpu_dnnl_begin(mxl_cpu_dnnl *d) { d->op++; }

const char *mxl_cpu_dnnl_impl(const mxl_cpu_dnnl *d) { return d->impl[0] ? d->impl : "none yet"; }

uint64_t mxl_cpu_dnnl_runs(const mxl_cpu_dnnl *d) { return d ? d->runs : 0; }

const char *mxl_cpu_dnnl_isa_name(void) {
  dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  if (amx_host()) return "AMX";
  if (((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) ==
      (unsigned)dnnl_cpu_isa_avx512_core_bf16)
    return "AVX-512 BF16";
  return "no bf16 instructions";
}

/* Memory descriptors of the product's three operands (a blocked B as
 * BA16a64b2a, or as "any" when `choose`: oneDNN's own pick). */
static int init_mds_as(const dnnl_key *k, dnnl_memory_desc_t *a, dnnl_memory_desc_t *b,
                       dnnl_memory_desc_t *c, int choose) {
  dnnl_dims_t ad = {k->M, k->K}, as = {k->lda, 1};
  dnnl_dims_t bd = {k->K, k->N}, bs_t = {1, k->ldb}, bs_n = {k->ldb, 1};
  dnnl_dims_t cd = {k->M, k->N}, cs = {k->ldc, 1};
  int b_ok = k->b_blocked ? dnnl_memory_desc_init_by_tag(b, 2, bd, dnnl_bf16,
                                                          choose ? dnnl_format_tag_any
                                                                 : dnnl_BA16a64b2a) == dnnl_success
                          : dnnl_memory_desc_init_by_strides(b, 2, bd, dnnl_bf16,
                                                             k->b_trans ? bs_t : bs_n) ==
                                dnnl_success;
  return dnnl_memory_desc_init_by_strides(a, 2, ad, dnnl_bf16, as) == dnnl_success && b_ok &&
         dnnl_memory_desc_init_by_strides(c, 2, cd, dnnl_f32, cs) == dnnl_success;
}

static int init_mds(const dnnl_key *k, dnnl_memory_desc_t *a, dnnl_memory_desc_t *b,
                    dnnl_memory_desc_t *c) {
  return init_mds_as(k, a, b, c, 0);
}

/* For a blocked B: 1 when the primitive reads B as BA16a64b2a (its own
 * choice for "any"; oneDNN's AMX matmul), so that no reorder runs. */
static int weights_blocked_as_expected(const dnnl_key *k, dnnl_primitive_desc_t pd) {
  dnnl_memory_desc_t a, want, c;
  const dnnl_memory_desc_t *got = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
  return got && init_mds(k, &a, &want, &c) && dnnl_memory_desc_equal(got, &want);
}

/* 1 when oneDNN has a bf16 × bf16 → fp32 matmul on this CPU (a small one,
 * with the descriptors every product uses). oneDNN 2.6 implements bf16
 * only from AVX-512 on: on an AVX2 host (AMD Zen 1, seen here) creating
 * the primitive fails, and without this probe every product would try,
 * fail and fall back, paying a failed creation each time. */
static int bf16_matmul_here(dnnl_engine_t engine) {
  dnnl_key k;
  memset(&k, 0, sizeof k);
  k.M = 16, k.N = 16, k.K = 32, k.lda = 32, k.ldb = 16, k.ldc = 16;
  dnnl_memory_desc_t a, b, c;
  dnnl_matmul_desc_t md;
  dnnl_primitive_desc_t pd = NULL;
  int ok = init_mds(&k, &a, &b, &c) &&
           dnnl_matmul_desc_init(&md, &a, &b, NULL, &c) == dnnl_success &&
           dnnl_primitive_desc_create(&pd, &md, NULL, engine, NULL) == dnnl_success;
  if (pd) dnnl_primitive_desc_destroy(pd);
  return ok;
}

static int create_prim(mxl_cpu_dnnl *d, mxl_cpu_mm_prim *s, const dnnl_key *k) {
  dnnl_memory_desc_t a, b, c;
  dnnl_matmul_desc_t md;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  int ok = init_mds_as(k, &a, &b, &c, 1) &&
           dnnl_matmul_desc_init(&md, &a, &b, NULL, &c) == dnnl_success &&
           dnnl_primitive_attr_create(&attr) == dnnl_success &&
           dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success;
  if (ok && k->accumulate)
    ok = dnnl_post_ops_create(&po) == dnnl_success &&
         dnnl_post_ops_append_sum(po, 1.0f) == dnnl_success &&
         dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
  /* oneDNN sizes its blocking for the threads it will have: nt. */
  int saved = omp_get_max_threads();
  omp_set_num_threads(k->nt);
  ok = ok && dnnl_primitive_desc_create(&s->pd, &md, attr, d->engine, NULL) == dnnl_success &&
       (!k->b_blocked || weights_blocked_as_expected(k, s->pd)) &&
       dnnl_primitive_create(&s->prim, s->pd) == dnnl_success;
  omp_set_num_threads(saved);
  if (po) dnnl_post_ops_destroy(po);
  if (attr) dnnl_primitive_attr_destroy(attr);
  if (!ok) return 0;
  const dnnl_memory_desc_t *sp = dnnl_primitive_desc_query_md(s->pd, dnnl_query_scratchpad_md, 0);
  s->scratch_bytes = sp ? dnnl_memory_desc_get_size(sp) : 0;
  const char *impl = NULL;
  if (dnnl_primitive_desc_query(s->pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
    snprintf(d->impl, sizeof d->impl, "%s", impl);
  s->key = *k;
  return 1;
}

/* Grows every thread's scratchpad to `bytes` (serial code). */
static int grow_scratch(mxl_cpu_dnnl *d, size_t bytes) {
  if (bytes <= d->scratch_bytes) return 1;
  size_t rounded = (bytes + 4095) & ~(size_t)4095;
  for (int t = 0; t < d->n_threads; t++) {
    free(d->scratch[t]);
    d->scratch[t] = NULL;
    if (!(d->scratch[t] = mxl_work_alloc(rounded))) {
      d->scratch_bytes = 0;
      return 0;
    }
  }
  d->scratch_bytes = rounded;
  return 1;
}

const mxl_cpu_mm_prim *mxl_cpu_dnnl_prepare(mxl_cpu_dnnl *d, const mxl_cpu_mm *mm, int nt) {
  dnnl_key k;
  memset(&k, 0, sizeof k); /* keys are compared with memcmp, padding included */
  k.M = mm->M, k.N = mm->N, k.K = mm->K, k.lda = mm->lda, k.ldb = mm->ldb, k.ldc = mm->ldc;
  k.b_trans = mm->b_trans, k.accumulate = mm->accumulate, k.nt = nt, k.b_blocked = mm->b_blocked;
  if (k.b_blocked) k.ldb = 0, k.b_trans = 0;
  for (int i = 0; i < d->n_slots; i++)
    if (!memcmp(&d->slots[i].key, &k, sizeof k)) {
      d->slots[i].used = d->op;
      return d->slots[i].prim ? &d->slots[i] : NULL; /* NULL: refused before */
    }
  mxl_cpu_mm_prim *s = NULL;
  if (d->n_slots < CACHE_SLOTS) {
    s = &d->slots[d->n_slots++];
  } else { /* the next slot in turn that this op has not fetched */
    for (int tries = 0; tries < CACHE_SLOTS && !s; tries++) {
      mxl_cpu_mm_prim *v = &d->slots[d->next_victim];
      d->next_victim = (d->next_victim + 1) % CACHE_SLOTS;
      if (v->used != d->op) s = v;
    }
    if (!s) return NULL;
    slot_clear(s);
  }
  memset(&s->key, 0xff, sizeof s->key); /* matches nothing until created */
  if (!create_prim(d, s, &k) || !grow_scratch(d, s->scratch_bytes)) {
    /* kept as refused, so that the shape is not tried again (a blocked B
     * that oneDNN would read in another layout, a shape it has no
     * primitive for, scratch memory refused) */
    slot_clear(s);
    s->key = k;
    s->used = d->op;
    return NULL;
  }
  s->used = d->op;
  return s;
}

int mxl_cpu_dnnl_run(mxl_cpu_dnnl *d, const mxl_cpu_mm_prim *p, const mxl_cpu_mm *mm) {
  const dnnl_key *k = &p->key;
  dnnl_memory_desc_t a, b, c;
  if (!init_mds(k, &a, &b, &c)) return 0;
  int t = omp_in_parallel() ? omp_get_thread_num() : 0;
  dnnl_memory_t ma = NULL, mb = NULL, mc = NULL, ms = NULL;
  int ok = dnnl_memory_create(&ma, &a, d->engine, (void *)mm->A) == dnnl_success &&
           dnnl_memory_create(&mb, &b, d->engine, (void *)mm->B) == dnnl_success &&
           dnnl_memory_create(&mc, &c, d->engine, mm->C) == dnnl_success;
  int nargs = 3;
  dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
  if (ok && p->scratch_bytes) {
    const dnnl_memory_desc_t *sp = dnnl_primitive_desc_query_md(p->pd, dnnl_query_scratchpad_md, 0);
    ok = dnnl_memory_create(&ms, sp, d->engine, d->scratch[t]) == dnnl_success;
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, ms};
  }
  if (ok) {
    int saved = omp_get_max_threads();
    if (!omp_in_parallel()) omp_set_num_threads(k->nt);
    ok = dnnl_primitive_execute(p->prim, d->streams[t], nargs, args) == dnnl_success &&
         dnnl_stream_wait(d->streams[t]) == dnnl_success;
    if (!omp_in_parallel()) omp_set_num_threads(saved);
  }
#pragma omp atomic
  d->runs++;
  if (ma) dnnl_memory_destroy(ma);
  if (mb) dnnl_memory_destroy(mb);
  if (mc) dnnl_memory_destroy(mc);
  if (ms) dnnl_memory_destroy(ms);
  return ok;
}

#else /* no oneDNN in this build */

int mxl_cpu_dnnl_mode_default(void) { return MXL_CPU_DNNL_OFF; }
mxl_cpu_dnnl *mxl_cpu_dnnl_create(int n_threads) {
  (void)n_threads;
  return NULL;
}
void mxl_cpu_dnnl_destroy(mxl_cpu_dnnl *d) { (void)d; }
void mxl_cpu_dnnl_begin(mxl_cpu_dnnl *d) { (void)d; }
const char *mxl_cpu_dnnl_impl(const mxl_cpu_dnnl *d) {
  (void)d;
  return "not built";
}
const char *mxl_cpu_dnnl_isa_name(void) { return "not built"; }
uint64_t mxl_cpu_dnnl_runs(const mxl_cpu_dnnl *d) {
  (void)d;
  return 0;
}
const mxl_cpu_mm_prim *mxl_cpu_dnnl_prepare(mxl_cpu_dnnl *d, const mxl_cpu_mm *mm, int nt) {
  (void)d, (void)mm, (void)nt;
  return NULL;
}
int mxl_cpu_dnnl_run(mxl_cpu_dnnl *d, const mxl_cpu_mm_prim *p, const mxl_cpu_mm *mm) {
  (void)d, (void)p, (void)mm;
  return 0;
}

#endif
