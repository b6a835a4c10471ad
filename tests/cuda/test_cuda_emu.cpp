// CUDA kernels on the CPU emulator (kernels/cuda/emulator.h), against the
// plain C reference, in three thread orders. Runs without a GPU.
//
// First the emulator itself: a shared-memory block reduction must be right
// in every order, and the faults the emulator exists to catch (a missing
// barrier, a barrier after an early return, barriers at different call
// sites) must be caught. Then the project's kernels.
#include "kernels/cuda/emulator.h"  // first: it defines MXL_CUDA_EMULATE

#include <stdint.h>

#include "core/bf16.h"
#include "kernels/cuda/mxfp4_dequant.cuh"
#include "kernels/cuda/mxfp4_quant.cuh"
#include "kernels/cuda/runtime.cuh"
#include "kernels/mxfp4.h"
#include "test.h"

static const mxl_emu::order orders[3] = {mxl_emu::order::forward, mxl_emu::order::reverse,
                                         mxl_emu::order::shuffle};
static const char *const order_names[3] = {"forward", "reverse", "shuffle"};

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t rng_next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

// ---------------------------------------------------------------- emulator

enum { REDUCE_THREADS = 64 };

// out[block] = sum of in[block*64 .. +64), tree reduction in shared memory.
// With `barriers` false the tree steps run without their barriers (a planted
// race that only some thread orders expose).
MXL_GLOBAL void reduce_kernel(int *out, const int *in, bool barriers) {
  MXL_SHARED int partial[REDUCE_THREADS];
  int64_t t = MXL_THREAD_X;
  partial[t] = in[MXL_BLOCK_X * REDUCE_THREADS + t];
  MXL_SYNC();
  for (int half = REDUCE_THREADS / 2; half > 0; half /= 2) {
    if (t < half) partial[t] += partial[t + half];
    if (barriers) MXL_SYNC();
  }
  if (t == 0) out[MXL_BLOCK_X] = partial[0];
}

// Thread 0 returns before the barrier the others wait at.
MXL_GLOBAL void early_return_kernel(int *out) {
  if (MXL_THREAD_X == 0) return;
  MXL_SYNC();
  out[MXL_THREAD_X] = 1;
}

// Even and odd threads wait at two different barriers.
MXL_GLOBAL void split_barrier_kernel(int *out) {
  if (MXL_THREAD_X % 2)
    MXL_SYNC();
  else
    MXL_SYNC();
  out[MXL_THREAD_X] = 1;
}

static void test_emulator_reduction(void) {
  enum { BLOCKS = 3 };
  int in[BLOCKS * REDUCE_THREADS], out[BLOCKS], want[BLOCKS] = {0};
  for (int i = 0; i < BLOCKS * REDUCE_THREADS; i++) {
    in[i] = (int)(rng_next() % 1000);
    want[i / REDUCE_THREADS] += in[i];
  }
  bool racy_differs = false;
  for (int o = 0; o < 3; o++) {
    mxl_emu::settings().run_order = orders[o];
    MXL_CHECK(MXL_LAUNCH(reduce_kernel, BLOCKS, REDUCE_THREADS, 0, 0, out, in, true) == 0);
    for (int b = 0; b < BLOCKS; b++)
      MXL_CHECK_MSG(out[b] == want[b], "%s order, block %d: %d vs %d", order_names[o], b,
                    out[b], want[b]);
    MXL_CHECK(MXL_LAUNCH(reduce_kernel, BLOCKS, REDUCE_THREADS, 0, 0, out, in, false) == 0);
    for (int b = 0; b < BLOCKS; b++) racy_differs |= out[b] != want[b];
  }
  MXL_CHECK_MSG(racy_differs, "the planted missing barrier went unnoticed in every order");
  mxl_emu::settings().run_order = mxl_emu::order::forward;
}

static void test_emulator_catches_divergent_barriers(void) {
  int out[32] = {0};
  MXL_CHECK(MXL_LAUNCH(early_return_kernel, 2, 32, 0, 0, out) == -1);
  MXL_CHECK_MSG(mxl_emu::last_error().find("exited while") != std::string::npos, "%s",
                mxl_emu::last_error().c_str());
  MXL_CHECK(MXL_LAUNCH(split_barrier_kernel, 1, 32, 0, 0, out) == -1);
  MXL_CHECK_MSG(mxl_emu::last_error().find("different barriers") != std::string::npos, "%s",
                mxl_emu::last_error().c_str());
  MXL_CHECK(MXL_LAUNCH(early_return_kernel, 1, 2048, 0, 0, out) == -1); // too many threads
  MXL_CHECK(MXL_LAUNCH(early_return_kernel, 1, 32, 16, 0, out) == -1);  // dynamic smem
}

// The services of the op functions (kernels/cuda/runtime.cuh): a failed
// launch and a failed scratch allocation become the first error since the
// last sync, naming the op; the scratch buffer grows and is reused.
static void test_runtime_errors(void) {
  mxl_cuda_state st;
  memset(&st, 0, sizeof st);
  st.device = -1;
  mxl_backend be = {NULL, 1, &st};
  int out[32] = {0};
  MXL_CHECK(!mxl_cu_launched(&be, "someop",
                             MXL_LAUNCH(early_return_kernel, 1, 32, 0, st.stream, out)));
  MXL_CHECK(st.pending == MXL_ERR_BACKEND);
  MXL_CHECK_MSG(strstr(st.message, "CUDA emulator: someop: kernel launch failed") &&
                    strstr(st.message, "exited while"),
                "%s", st.message);
  mxl_cu_fail(&be, MXL_ERR_MEMORY, "other", "later error");
  MXL_CHECK_MSG(st.pending == MXL_ERR_BACKEND && !strstr(st.message, "later"), "%s", st.message);
  st.pending = MXL_OK;
  int in[REDUCE_THREADS] = {0}; /* one value per thread: `out` is too short */
  MXL_CHECK(mxl_cu_launched(&be, "someop", MXL_LAUNCH(reduce_kernel, 1, REDUCE_THREADS, 0,
                                                      st.stream, out, in, true)));
  MXL_CHECK(st.pending == MXL_OK);
#ifndef MXL_EMU_ASAN  // ASan aborts on impossible sizes instead of returning NULL
  MXL_CHECK(mxl_cu_scratch(&be, SIZE_MAX - 5, "bigop") == NULL);
  MXL_CHECK_MSG(st.pending == MXL_ERR_MEMORY && strstr(st.message, "bigop: cannot allocate"),
                "%s", st.message);
  st.pending = MXL_OK;
#endif
  void *first = mxl_cu_scratch(&be, 100, "op");
  MXL_CHECK(first != NULL && mxl_cu_scratch(&be, 1000, "op") == first);  // whole MiBs
  MXL_CHECK(mxl_cu_scratch(&be, (3 << 20) - 7, "op") != NULL && st.scratch_bytes == 3 << 20);
  MXL_CHECK(st.pending == MXL_OK);
  mxl_cu_scratch_release(&st);
  MXL_CHECK(st.scratch == NULL && st.scratch_bytes == 0);
}

// ---------------------------------------------------------------- kernels

static bool same_f32(float a, float b) {
  return (isnan(a) && isnan(b)) || memcmp(&a, &b, sizeof a) == 0;
}

static bool same_bf16(uint16_t a, uint16_t b) {
  bool a_nan = (a & 0x7f80) == 0x7f80 && (a & 0x7f), b_nan = (b & 0x7f80) == 0x7f80 && (b & 0x7f);
  return (a_nan && b_nan) || a == b;
}

// The dequant kernel with the launcher's own grid, or with `grid` blocks
// when non-zero (to make the grid-stride loop run several rounds).
static void check_dequant(int64_t rows, int64_t cols, int bias, unsigned grid) {
  int64_t n = rows * cols, groups = n / 32, n_bytes = groups * 16;
  std::vector<uint8_t> blocks((size_t)n_bytes), scales((size_t)groups);
  std::vector<float> want((size_t)n), got((size_t)n);
  std::vector<uint16_t> got16((size_t)n);
  for (auto &b : blocks) b = (uint8_t)rng_next();
  for (int64_t g = 0; g < groups; g++) scales[g] = (uint8_t)(g < 256 ? (uint64_t)g : rng_next());
  for (int64_t g = 0; g < groups; g++)
    mxl_mxfp4_decode_block(&blocks[16 * g], scales[g], bias, &want[32 * g]);
  if (!grid) grid = mxl_mxfp4_dequant_grid(n_bytes);
  for (int o = 0; o < 3; o++) {
    mxl_emu::settings().run_order = orders[o];
    std::fill(got.begin(), got.end(), -1.0f);
    std::fill(got16.begin(), got16.end(), (uint16_t)0xdead);
    MXL_CHECK(MXL_LAUNCH(mxfp4_dequant_kernel<float>, grid, MXL_DEQUANT_THREADS, 0, 0,
                         got.data(), blocks.data(), scales.data(), bias, n_bytes) == 0);
    MXL_CHECK(MXL_LAUNCH(mxfp4_dequant_kernel<uint16_t>, grid, MXL_DEQUANT_THREADS, 0, 0,
                         got16.data(), blocks.data(), scales.data(), bias, n_bytes) == 0);
    int64_t bad = 0, bad16 = 0;
    for (int64_t i = 0; i < n; i++) {
      bad += !same_f32(got[i], want[i]);
      bad16 += !same_bf16(got16[i], mxl_f32_to_bf16(want[i]));
    }
    MXL_CHECK_MSG(bad == 0 && bad16 == 0,
                  "[%lld x %lld] bias %d grid %u, %s order: %lld f32 and %lld bf16 differ",
                  (long long)rows, (long long)cols, bias, grid, order_names[o], (long long)bad,
                  (long long)bad16);
  }
  mxl_emu::settings().run_order = mxl_emu::order::forward;
}

static void test_mxfp4_dequant(void) {
  check_dequant(1, 32, MXL_MXFP4_BIAS, 0);
  check_dequant(3, 96, MXL_MXFP4_BIAS, 0);
  check_dequant(7, 2880, MXL_MXFP4_BIAS, 0);       // every scale byte, partial last block
  check_dequant(7, 2880, MXL_MXFP4_METAL_BIAS, 0);
  check_dequant(5, 640, MXL_MXFP4_BIAS, 3);        // grid-stride: 3 blocks loop 9 times
}

// The quantization kernel against the host encoder, bit for bit, with the
// launcher's grid and with a small grid that loops; a block holding NaN or
// Inf becomes zero codes with scale byte 255.
static void check_quant(int64_t rows, int64_t cols, unsigned grid) {
  int64_t n = rows * cols, groups = n / 32;
  std::vector<float> x((size_t)n);
  for (int64_t i = 0; i < n; i++)
    x[i] = ldexpf((float)((int64_t)(rng_next() % 20001) - 10000) / 1000.0f,
                  (int)((i / 32) % 240) - 140);
  if (groups > 3) x[3 * 32 + 5] = NAN;
  std::vector<uint8_t> want((size_t)groups * 17), got((size_t)groups * 17);
  uint8_t *want_scales = want.data() + 16 * groups;
  for (int64_t g = 0; g < groups; g++) {
    if (mxl_mxfp4_encode_block(&x[32 * g], &want[16 * g], &want_scales[g]) != 0) {
      std::fill(&want[16 * g], &want[16 * g] + 16, (uint8_t)0);
      want_scales[g] = 255;
    }
  }
  if (!grid) grid = mxl_mxfp4_quant_grid(groups);
  for (int o = 0; o < 3; o++) {
    mxl_emu::settings().run_order = orders[o];
    std::fill(got.begin(), got.end(), (uint8_t)0xAB);
    MXL_CHECK(MXL_LAUNCH(mxfp4_quant_kernel, grid, MXL_QUANT_THREADS, 0, 0, got.data(),
                         got.data() + 16 * groups, x.data(), groups) == 0);
    MXL_CHECK_MSG(got == want, "[%lld x %lld] grid %u, %s order: blocks/scales differ",
                  (long long)rows, (long long)cols, grid, order_names[o]);
  }
  mxl_emu::settings().run_order = mxl_emu::order::forward;
}

static void test_mxfp4_quant(void) {
  check_quant(1, 32, 0);
  check_quant(9, 2880, 0);
  check_quant(10, 640, 1);  // grid-stride: one block of 128 threads covers 200 groups
}

int main(void) {
  MXL_RUN(test_emulator_reduction);
  MXL_RUN(test_emulator_catches_divergent_barriers);
  MXL_RUN(test_runtime_errors);
  MXL_RUN(test_mxfp4_dequant);
  MXL_RUN(test_mxfp4_quant);
  return mxl_test_summary("cuda_emu");
}
