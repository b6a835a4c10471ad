/* The avx512bf16 table with its bf16 block product (gemm_bf16_vnni) on
 * Intel AMX tiles, for CPUs with AMX-BF16 whose kernel lets this process
 * use the tile registers.
 *
 * Why: on an Intel Xeon with AMX, vdpbf16ps runs at half the rate of fp32
 * FMAs, so attention kept its block products in fp32 (bf16_dot_speedup).
 * One tdpbf16ps multiplies a 16×32 bf16 tile by a 32×16 one into a 16×16
 * fp32 tile: 8192 multiply-adds per instruction. The large products of
 * prefill and training go through oneDNN, which uses AMX itself; this
 * covers the block products that are too small for a library call
 * (attention's 128×64×64 blocks) and the hand-written product paths.
 *
 * Numerics are those of vdpbf16ps: bf16 products exact in fp32, fp32
 * sums rounded to nearest even, bf16 subnormal inputs read as zero and
 * subnormal results flushed (Intel SDM, TDPBF16PS). The order of the sums
 * differs: the two products of a pair are added one after the other into
 * the running fp32 sum, k-pair by k-pair.
 *
 * Tiles: tmm0-3 hold a 32×32 block of C (2×2 tiles of 16×16 fp32), tmm4-5
 * two 16×32 row tiles of A, tmm6-7 two 32×16 column tiles of B in the
 * pairs layout of pack_vnni_* (16 pair rows × 16 columns × 2), so every
 * tile is 16 rows of 64 bytes. The rows past the last 16 are computed by
 * the same tiles configured with fewer rows, so that every row's sums are
 * the same whatever rows share its call (a token's logits and gradients do
 * not depend on its batch: test_mixed_batch, test_dist). A reduction that
 * is not a multiple of 32 takes the avx512bf16 kernel, for every row. */
#include "core/clock.h"
#include "kernels/cpu/cpu_internal.h"

#ifdef MXL_CPU_X86
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define AMX_TARGET __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl")))

enum {
  ARCH_REQ_XCOMP_PERM = 0x1023, /* Linux 5.16: ask for an extended state component */
  XFEATURE_XTILEDATA = 18,      /* the tile registers' data */
  TILE_K = 32,                  /* bf16 reduction elements per tile */
};

/* LDTILECFG's 64-byte operand, palette 1. */
typedef struct tile_config {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} tile_config;

/* Every tile 64 bytes wide; the C and A tiles `rows` (1-16) high, the B
 * tiles 16 (pairs). A thread's configuration is its own state, and
 * oneDNN's AMX kernels load theirs on the same threads, so each product
 * loads it (and releases the tiles at the end, so that a context switch
 * has no tile data to save). */
AMX_TARGET static void tiles_configure(int rows) {
  tile_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int t = 0; t < 8; t++) cfg.colsb[t] = 64, cfg.rows[t] = (uint8_t)(t < 6 ? rows : 16);
  /* GCC 12's _tile_loadconfig tells the compiler it reads 8 bytes of its
   * operand, so stores to the rest could be dropped (an LDTILECFG of zero
   * widths with nonzero rows faults): all 64 bytes are read here first. */
  __asm__ volatile("" : : "m"(cfg) : "memory");
  _tile_loadconfig(&cfg);
}

/* C tiles in and out of a block of C with `cols` (1-16) valid columns:
 * straight from C when the tile is whole, else through tmp. */
static void tile_gather(float *tmp, const float *C, int64_t ldc, int rows, int cols) {
  for (int r = 0; r < rows; r++) {
    memset(tmp + r * 16, 0, 16 * sizeof(float));
    memcpy(tmp + r * 16, C + r * ldc, (size_t)cols * sizeof(float));
  }
}
static void tile_scatter(float *C, int64_t ldc, const float *tmp, int rows, int cols) {
  for (int r = 0; r < rows; r++) memcpy(C + r * ldc, tmp + r * 16, (size_t)cols * sizeof(float));
}

/* The C tiles of a block: tile t covers rows 16·(t/2), columns 16·(t%2);
 * each tile has `rows` rows (the configuration's). */
typedef struct c_block {
  float *C;
  int64_t ldc;
  int rows, two_rows, cols; /* rows per tile (1-16); two row tiles or one; 1-32 columns */
} c_block;

static int tile_cols(const c_block *b, int t) {
  int c = b->cols - 16 * (t % 2);
  return c > 16 ? 16 : c;
}
static float *tile_at(const c_block *b, int t) { return b->C + 16 * (t / 2) * b->ldc + 16 * (t % 2); }
static int tile_used(const c_block *b, int t) { return (t < 2 || b->two_rows) && tile_cols(b, t) > 0; }

/* Loads (accumulate) or zeroes the block's tiles; partial ones go through tmp. */
#define C_TILE_IN(T)                                                                            \
  if (tile_used(b, T)) {                                                                        \
    if (!accumulate) {                                                                          \
      _tile_zero(T);                                                                            \
    } else if (tile_cols(b, T) == 16) {                                                         \
      _tile_loadd(T, tile_at(b, T), b->ldc * 4);                                                \
    } else {                                                                                    \
      tile_gather(tmp, tile_at(b, T), b->ldc, b->rows, tile_cols(b, T));                                 \
      _tile_loadd(T, tmp, 64);                                                                  \
    }                                                                                           \
  }
#define C_TILE_OUT(T)                                                                           \
  if (tile_used(b, T)) {                                                                        \
    if (tile_cols(b, T) == 16) {                                                                \
      _tile_stored(T, tile_at(b, T), b->ldc * 4);                                               \
    } else {                                                                                    \
      _tile_stored(T, tmp, 64);                                                                 \
      tile_scatter(tile_at(b, T), b->ldc, tmp, b->rows, tile_cols(b, T));                                \
    }                                                                                           \
  }

/* C block += A rows · Bp columns over P (a multiple of 32). A points at the
 * block's first row, Bp at its first column. */
AMX_TARGET static void block_product(const c_block *b, const uint16_t *A, int64_t lda,
                                     const uint16_t *Bp, int64_t ld_bp, int P, int accumulate) {
  float tmp[256] __attribute__((aligned(64)));
  const int two_cols = b->cols > 16;
  C_TILE_IN(0) C_TILE_IN(1) C_TILE_IN(2) C_TILE_IN(3)
  for (int p = 0; p < P; p += TILE_K) {
    const uint16_t *bp = Bp + (int64_t)(p / 2) * ld_bp * 2; /* pair row p/2 */
    _tile_loadd(6, bp, ld_bp * 4);
    if (two_cols) _tile_loadd(7, bp + 32, ld_bp * 4);
    _tile_loadd(4, A + p, lda * 2);
    _tile_dpbf16ps(0, 4, 6);
    if (two_cols) _tile_dpbf16ps(1, 4, 7);
    if (b->two_rows) {
      _tile_loadd(5, A + 16 * lda + p, lda * 2);
      _tile_dpbf16ps(2, 5, 6);
      if (two_cols) _tile_dpbf16ps(3, 5, 7);
    }
  }
  C_TILE_OUT(0) C_TILE_OUT(1) C_TILE_OUT(2) C_TILE_OUT(3)
}
#undef C_TILE_IN
#undef C_TILE_OUT

/* Rows [i0, i1) of the product, tiles of `rows` rows (configured). */
AMX_TARGET static void row_range(float *C, int64_t ldc, const uint16_t *A, const uint16_t *A_lo,
                                 int64_t lda, const uint16_t *Bp, int64_t ld_bp, int i0, int i1,
                                 int rows, int N, int P, int accumulate) {
  for (int i = i0; i < i1; i += 2 * rows) {
    for (int j = 0; j < N; j += 32) {
      c_block b = {C + (int64_t)i * ldc + j, ldc, rows, i1 - i >= 2 * rows, N - j < 32 ? N - j : 32};
      block_product(&b, A + (int64_t)i * lda, lda, Bp + (int64_t)j * 2, ld_bp, P, accumulate);
      if (A_lo) block_product(&b, A_lo + (int64_t)i * lda, lda, Bp + (int64_t)j * 2, ld_bp, P, 1);
    }
  }
}

/* gemm_bf16_vnni's contract (cpu_internal.h). Exact mode's A_lo adds a
 * second pass over the same C block. */
AMX_TARGET static void amx_gemm_bf16_vnni(float *C, int64_t ldc, const uint16_t *A,
                                          const uint16_t *A_lo, int64_t lda, const uint16_t *Bp,
                                          int64_t ld_bp, int M, int N, int P, int accumulate) {
  if (P % TILE_K != 0 || M <= 0 || N <= 0) {
    mxl_cpu_isa_avx512.gemm_bf16_vnni(C, ldc, A, A_lo, lda, Bp, ld_bp, M, N, P, accumulate);
    return;
  }
  const int M16 = M & ~15;
  if (M16 > 0) {
    tiles_configure(16);
    row_range(C, ldc, A, A_lo, lda, Bp, ld_bp, 0, M16, 16, N, P, accumulate);
  }
  if (M16 < M) {
    tiles_configure(M - M16);
    row_range(C, ldc, A, A_lo, lda, Bp, ld_bp, M16, M, M - M16, N, P, accumulate);
  }
  _tile_release();
}

/* ------------------------------------------------------------------ speed probe */

/* Seconds for `iters` rounds of four independent tdpbf16ps on registers. */
AMX_TARGET __attribute__((noinline)) static double probe_tiles(long iters) {
  tiles_configure(16);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_zero(4);
  _tile_zero(5);
  _tile_zero(6);
  _tile_zero(7);
  double t0 = mxl_now_seconds();
  for (long i = 0; i < iters; i++) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  double dt = mxl_now_seconds() - t0;
  _tile_release();
  return dt;
}

/* The tiles' multiply-add rate over that of fp32 FMAs (measured once per
 * process, as the avx512bf16 table's: every backend of a process makes the
 * same choice). */
static double amx_bf16_dot_speedup(void) {
  static _Atomic double measured;
  double known = measured;
  if (known > 0) return known;
  enum { ITERS = 500 }; /* 2000 tdpbf16ps: about 30 µs */
  double best = 1e30;
  for (int rep = 0; rep < 3; rep++) {
    double t = probe_tiles(ITERS);
    best = t < best ? t : best;
  }
  double tile_rate = 4.0 * ITERS * 16 * 16 * 32 / best;
  double fma_rate = mxl_a5_fma_rate();
  known = fma_rate > 0 && best > 0 ? tile_rate / fma_rate : 1.0;
  measured = known;
  return known;
}

/* ------------------------------------------------------------------ the table */

static mxl_cpu_isa amx_table;
static int amx_usable;

/* CPUID says AMX-TILE and AMX-BF16, and XCR0 that the OS manages the tile
 * state (XTILECFG, XTILEDATA). Read directly: clang's __builtin_cpu_supports
 * knows no AMX feature names. */
static int cpu_has_amx_bf16(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; /* OSXSAVE */
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
  if (!(d & (1u << 24)) || !(d & (1u << 22))) return 0; /* AMX-TILE, AMX-BF16 */
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & (3u << 17)) == (3u << 17);
}

static void amx_init(void) {
  /* the CPU and the OS, then this process's permission */
  if (!cpu_has_amx_bf16()) return;
  if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) return;
  amx_table = mxl_cpu_isa_avx512;
  amx_table.name = "avx512bf16+amx";
  amx_table.bf16_dot_speedup = amx_bf16_dot_speedup;
  amx_table.gemm_bf16_vnni = amx_gemm_bf16_vnni;
  amx_table.tiles = 1;
  amx_usable = 1;
}

const mxl_cpu_isa *mxl_cpu_isa_amx(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, amx_init);
  return amx_usable ? &amx_table : NULL;
}

#else
typedef int mxl_cpu_amx_not_x86;
#endif
