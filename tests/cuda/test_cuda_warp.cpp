// The emulator's warp-level instructions (kernels/cuda/warp.cuh on
// kernels/cuda/emulator.h): mma.sync m16n8k16 bf16, ldmatrix, cp.async, the
// xor shuffle. No GPU needed.
//
// The fragment layouts are checked against values worked out by hand from
// the PTX ISA's figures (the constants below), not against the emulator's
// own formulas; then whole products through ldmatrix + mma against a host
// product; then planted mistakes that the emulator must expose: a wrong
// lane mapping, a missing cp.async wait, a missing barrier after the wait,
// copies never waited for, a block barrier missing between the warp that
// stages a tile and the warp that reads it (before and after its use), a
// lane that leaves its warp at a collective, lanes at different warp
// instructions, a partial warp.
#include "kernels/cuda/emulator.h"  // first: it defines MXL_CUDA_EMULATE

#include <string.h>

#include "kernels/cuda/warp.cuh"
#include "test.h"

static const mxl_emu::order orders[3] = {mxl_emu::order::forward, mxl_emu::order::reverse,
                                         mxl_emu::order::shuffle};

static bool error_has(const char *needle) {
  return mxl_emu::last_error().find(needle) != std::string::npos;
}

// ---------------------------------------------------------------- ldmatrix

// Four 8x8 matrices of 16-bit values, element (q, r, c) = 64q + 8r + c.
struct alignas(16) four_matrices {
  uint16_t m[4][8][8];
};

// out[lane*4 + q] = register q of `lane` after ldmatrix x{count}{.trans}.
MXL_GLOBAL void ldmatrix_kernel(uint32_t *out, int count, int trans) {
  MXL_SHARED four_matrices s;
  int lane = (int)MXL_THREAD_X;
  for (int i = lane; i < 256; i += 32) s.m[i / 64][(i / 8) % 8][i % 8] = (uint16_t)i;
  MXL_SYNC();
  const uint16_t *row = &s.m[(lane / 8) % count][lane % 8][0];
  uint32_t r[4] = {0, 0, 0, 0};
  if (count == 1) trans ? mxl_ldmatrix_x1_trans(r, row) : mxl_ldmatrix_x1(r, row);
  if (count == 2) trans ? mxl_ldmatrix_x2_trans(r, row) : mxl_ldmatrix_x2(r, row);
  if (count == 4) trans ? mxl_ldmatrix_x4_trans(r, row) : mxl_ldmatrix_x4(r, row);
  for (int q = 0; q < 4; q++) out[lane * 4 + q] = r[q];
}

static uint32_t pair(unsigned lo, unsigned hi) { return lo | (hi << 16); }

static void test_ldmatrix_fragments(void) {
  uint32_t out[128];
  // x1: lane 5 holds row 5/4 = 1, columns 2*(5%4) = 2 and 3: 8+2, 8+3.
  MXL_CHECK(MXL_LAUNCH(ldmatrix_kernel, 1, 32, 0, 0, out, 1, 0) == 0);
  MXL_CHECK_MSG(out[5 * 4] == pair(10, 11), "x1 lane 5: %08x", out[5 * 4]);
  MXL_CHECK_MSG(out[0] == pair(0, 1), "x1 lane 0: %08x", out[0]);
  MXL_CHECK_MSG(out[31 * 4] == pair(62, 63), "x1 lane 31: %08x", out[31 * 4]);
  // x1.trans: lane 5 holds column 1 of rows 2 and 3: 17, 25; lane 31: column
  // 7 of rows 6 and 7: 55, 63.
  MXL_CHECK(MXL_LAUNCH(ldmatrix_kernel, 1, 32, 0, 0, out, 1, 1) == 0);
  MXL_CHECK_MSG(out[5 * 4] == pair(17, 25), "x1.trans lane 5: %08x", out[5 * 4]);
  MXL_CHECK_MSG(out[31 * 4] == pair(55, 63), "x1.trans lane 31: %08x", out[31 * 4]);
  // x4: register 2 of lane 9 is matrix 2, row 2, columns 2, 3: 128+16+2.
  MXL_CHECK(MXL_LAUNCH(ldmatrix_kernel, 1, 32, 0, 0, out, 4, 0) == 0);
  MXL_CHECK_MSG(out[9 * 4 + 2] == pair(146, 147), "x4 lane 9 reg 2: %08x", out[9 * 4 + 2]);
  MXL_CHECK_MSG(out[30 * 4 + 3] == pair(252, 253), "x4 lane 30 reg 3: %08x", out[30 * 4 + 3]);
  // x4.trans: register 1 of lane 14 is matrix 1, column 3 of rows 4, 5:
  // 64+32+3, 64+40+3.
  MXL_CHECK(MXL_LAUNCH(ldmatrix_kernel, 1, 32, 0, 0, out, 4, 1) == 0);
  MXL_CHECK_MSG(out[14 * 4 + 1] == pair(99, 107), "x4.trans lane 14 reg 1: %08x", out[14 * 4 + 1]);
  // x2: register 1 of lane 22 is matrix 1, row 5, columns 4, 5.
  MXL_CHECK(MXL_LAUNCH(ldmatrix_kernel, 1, 32, 0, 0, out, 2, 0) == 0);
  MXL_CHECK_MSG(out[22 * 4 + 1] == pair(108, 109), "x2 lane 22 reg 1: %08x", out[22 * 4 + 1]);
  MXL_CHECK(MXL_LAUNCH(ldmatrix_kernel, 1, 32, 0, 0, out, 2, 1) == 0);
  MXL_CHECK_MSG(out[22 * 4 + 1] == pair(64 + 32 + 5, 64 + 40 + 5), "x2.trans lane 22 reg 1: %08x",
                out[22 * 4 + 1]);
}

// A row address that is not 16-byte aligned is refused.
MXL_GLOBAL void ldmatrix_misaligned_kernel(uint32_t *out) {
  MXL_SHARED four_matrices s;
  uint32_t r[1];
  mxl_ldmatrix_x1(r, &s.m[0][MXL_THREAD_X % 8][1]);
  out[MXL_THREAD_X] = r[0];
}

// ---------------------------------------------------------------- mma

// Fragments built straight from global memory with the layout of the PTX
// ISA's figures (restated here independently of the emulator), one mma,
// D stored back. A [16][16], B [16][8] (k, n), C, D [16][8]. With
// `wrong_lane_map` the kernel swaps registers a1 and a2 (rows g+8 / cols
// +8 confused): a planted mapping mistake.
MXL_GLOBAL void mma_kernel(float *D, const float *A, const float *B, const float *C,
                           int wrong_lane_map) {
  int lane = (int)MXL_THREAD_X, g = lane / 4, t = lane % 4;
  uint32_t a[4], b[2];
  a[0] = mxl_pack_bf16x2(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]);
  a[1] = mxl_pack_bf16x2(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]);
  a[2] = mxl_pack_bf16x2(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]);
  a[3] = mxl_pack_bf16x2(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9]);
  if (wrong_lane_map) {
    uint32_t x = a[1];
    a[1] = a[2];
    a[2] = x;
  }
  b[0] = mxl_pack_bf16x2(B[(2 * t) * 8 + g], B[(2 * t + 1) * 8 + g]);
  b[1] = mxl_pack_bf16x2(B[(2 * t + 8) * 8 + g], B[(2 * t + 9) * 8 + g]);
  float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t],
                C[(g + 8) * 8 + 2 * t + 1]};
  float d[4];
  mxl_mma_bf16_16816(d, a, b, c);
  D[g * 8 + 2 * t] = d[0];
  D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2];
  D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

static void host_product(float *D, const float *A, const float *B, const float *C) {
  for (int i = 0; i < 16; i++)
    for (int j = 0; j < 8; j++) {
      float s = C[i * 8 + j];
      for (int k = 0; k < 16; k++) s += A[i * 16 + k] * B[k * 8 + j];
      D[i * 8 + j] = s;
    }
}

static void test_mma_fragments(void) {
  // Small integers: every product and sum is exact, so the emulator must
  // match the host bit for bit.
  float A[256], B[128], C[128], D[128], want[128];
  for (int i = 0; i < 256; i++) A[i] = (float)((i * 7) % 11 - 5);
  for (int i = 0; i < 128; i++) B[i] = (float)((i * 5) % 9 - 4);
  for (int i = 0; i < 128; i++) C[i] = (float)(i % 13);
  host_product(want, A, B, C);
  for (int o = 0; o < 3; o++) {
    mxl_emu::settings().run_order = orders[o];
    MXL_CHECK(MXL_LAUNCH(mma_kernel, 1, 32, 0, 0, D, A, B, C, 0) == 0);
    MXL_CHECK_MSG(memcmp(D, want, sizeof D) == 0, "order %d: D differs", o);
  }
  // With A the unit matrix and C = 0, every lane must return B's values at
  // its D positions (rows g, g+8, columns 2t, 2t+1).
  float I[256] = {0}, Z[128] = {0};
  for (int i = 0; i < 16; i++) I[i * 16 + i] = 1.0f;
  MXL_CHECK(MXL_LAUNCH(mma_kernel, 1, 32, 0, 0, D, I, B, Z, 0) == 0);
  MXL_CHECK(memcmp(D, B, sizeof D) == 0);
  // The planted lane-mapping mistake changes the product.
  MXL_CHECK(MXL_LAUNCH(mma_kernel, 1, 32, 0, 0, D, A, B, C, 1) == 0);
  MXL_CHECK_MSG(memcmp(D, want, sizeof D) != 0, "a wrong A mapping went unnoticed");
  mxl_emu::settings().run_order = mxl_emu::order::forward;
}

// The kernels' path: A [16][16] and B stored either as Bn[n][k] (read with
// ldmatrix) or as Bk[k][n] (read with ldmatrix.trans) in padded shared
// rows, then mma; D [16][8].
struct alignas(16) mma_tiles {
  uint16_t a[16][24];  // rows padded to 48 bytes: 16-byte aligned
  uint16_t bn[8][24];
  uint16_t bk[16][8];
};

MXL_GLOBAL void ldmatrix_mma_kernel(float *D, const float *A, const float *B, int trans) {
  MXL_SHARED mma_tiles s;
  int lane = (int)MXL_THREAD_X, g = lane / 4, t = lane % 4;
  for (int i = lane; i < 256; i += 32) s.a[i / 16][i % 16] = (uint16_t)mxl_pack_bf16x2(A[i], 0.0f);
  for (int i = lane; i < 128; i += 32) {  // B [k][n]
    uint16_t v = (uint16_t)mxl_pack_bf16x2(B[i], 0.0f);
    s.bn[i % 8][i / 8] = v;
    s.bk[i / 8][i % 8] = v;
  }
  MXL_SYNC();
  uint32_t a[4], b[2];
  int q = lane / 8, r = lane % 8;
  mxl_ldmatrix_x4(a, &s.a[(q & 1) * 8 + r][(q >> 1) * 8]);
  if (trans)
    mxl_ldmatrix_x2_trans(b, &s.bk[(q & 1) * 8 + r][0]);
  else
    mxl_ldmatrix_x2(b, &s.bn[r][(q & 1) * 8]);
  float c[4] = {0, 0, 0, 0}, d[4];
  mxl_mma_bf16_16816(d, a, b, c);
  D[g * 8 + 2 * t] = d[0];
  D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2];
  D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

static void test_ldmatrix_mma(void) {
  float A[256], B[128], Z[128] = {0}, D[128], want[128];
  for (int i = 0; i < 256; i++) A[i] = (float)((i * 3) % 7 - 3);
  for (int i = 0; i < 128; i++) B[i] = (float)((i * 11) % 5 - 2);
  host_product(want, A, B, Z);
  for (int trans = 0; trans < 2; trans++)
    for (int o = 0; o < 3; o++) {
      mxl_emu::settings().run_order = orders[o];
      MXL_CHECK(MXL_LAUNCH(ldmatrix_mma_kernel, 1, 32, 0, 0, D, A, B, trans) == 0);
      MXL_CHECK_MSG(memcmp(D, want, sizeof D) == 0, "trans %d, order %d", trans, o);
    }
  mxl_emu::settings().run_order = mxl_emu::order::forward;
  uint32_t out[32];
  MXL_CHECK(MXL_LAUNCH(ldmatrix_misaligned_kernel, 1, 32, 0, 0, out) == -1);
  MXL_CHECK_MSG(error_has("not 16-byte aligned"), "%s", mxl_emu::last_error().c_str());
}

// ---------------------------------------------------------------- cp.async

enum { CP_THREADS = 64 };

struct alignas(16) cp_tile {
  uint8_t b[CP_THREADS][16];
};

// Each thread copies its 16 bytes of src into shared memory, then reads its
// neighbour's 16 bytes (so the copies must be complete and visible).
// mode 0: correct (commit, wait, barrier); 1: reads before waiting (the
// wait comes later); 2: waits but no barrier; 3: never waits; 4: zero-fill
// of the last 6 bytes.
MXL_GLOBAL void cp_async_kernel(uint8_t *out, const uint8_t *src, int mode) {
  MXL_SHARED cp_tile s;
  int t = (int)MXL_THREAD_X, other = (t + 1) % CP_THREADS;
  mxl_cp_async16(s.b[t], src + 16 * t, mode == 4 ? 10 : 16);
  mxl_cp_async_commit();
  if (mode == 0 || mode == 2 || mode == 4) mxl_cp_async_wait<0>();
  if (mode != 2) MXL_SYNC();
  for (int i = 0; i < 16; i++) out[16 * t + i] = s.b[other][i];
  if (mode == 1) mxl_cp_async_wait<0>();
}

// Two groups; wait_group 1 completes only the older one.
MXL_GLOBAL void cp_async_groups_kernel(uint8_t *out, const uint8_t *src) {
  MXL_SHARED cp_tile s;
  int t = (int)MXL_THREAD_X;
  if (t == 0) {
    mxl_cp_async16(s.b[0], src, 16);
    mxl_cp_async_commit();
    mxl_cp_async16(s.b[1], src + 16, 16);
    mxl_cp_async_commit();
    mxl_cp_async_wait<1>();
    for (int i = 0; i < 32; i++) out[i] = s.b[i / 16][i % 16];
    mxl_cp_async_wait<0>();
    for (int i = 0; i < 32; i++) out[32 + i] = s.b[i / 16][i % 16];
  }
}

static void test_cp_async(void) {
  enum { BYTES = CP_THREADS * 16 };
  uint8_t src[BYTES], src2[BYTES], out[BYTES], want[BYTES], want2[BYTES];
  for (int i = 0; i < BYTES; i++) {
    src[i] = (uint8_t)(i * 37 + 1);
    src2[i] = (uint8_t)(i * 11 + 5);
  }
  for (int t = 0; t < CP_THREADS; t++) {
    memcpy(want + 16 * t, src + 16 * ((t + 1) % CP_THREADS), 16);
    memcpy(want2 + 16 * t, src2 + 16 * ((t + 1) % CP_THREADS), 16);
  }
  bool missing_wait_seen = true, missing_barrier_seen = false;
  for (int o = 0; o < 3; o++) {
    mxl_emu::settings().run_order = orders[o];
    MXL_CHECK(MXL_LAUNCH(cp_async_kernel, 2, CP_THREADS, 0, 0, out, src, 0) == 0);
    MXL_CHECK_MSG(memcmp(out, want, sizeof out) == 0, "order %d", o);
    MXL_CHECK(MXL_LAUNCH(cp_async_kernel, 1, CP_THREADS, 0, 0, out, src, 1) == 0);
    missing_wait_seen &= memcmp(out, want, sizeof out) != 0;
    // (src2: shared memory still holds src's bytes from the launch before)
    MXL_CHECK(MXL_LAUNCH(cp_async_kernel, 1, CP_THREADS, 0, 0, out, src2, 2) == 0);
    missing_barrier_seen |= memcmp(out, want2, sizeof out) != 0;
    MXL_CHECK(MXL_LAUNCH(cp_async_kernel, 1, CP_THREADS, 0, 0, out, src, 4) == 0);
    for (int t = 0; t < CP_THREADS; t++)
      MXL_CHECK(memcmp(out + 16 * t, want + 16 * t, 10) == 0 && out[16 * t + 10] == 0 &&
                out[16 * t + 15] == 0);
  }
  MXL_CHECK_MSG(missing_wait_seen, "a read before cp.async.wait_group went unnoticed");
  MXL_CHECK_MSG(missing_barrier_seen, "a missing barrier after the wait went unnoticed");
  MXL_CHECK(MXL_LAUNCH(cp_async_kernel, 1, CP_THREADS, 0, 0, out, src, 3) == -1);
  MXL_CHECK_MSG(error_has("never waited for"), "%s", mxl_emu::last_error().c_str());

  uint8_t two[64];
  MXL_CHECK(MXL_LAUNCH(cp_async_groups_kernel, 1, 32, 0, 0, two, src) == 0);
  MXL_CHECK(memcmp(two, src, 16) == 0);  // the older group landed
  bool poisoned = true;
  for (int i = 16; i < 32; i++) poisoned &= two[i] == 0xFF;
  MXL_CHECK_MSG(poisoned, "the newer group was complete before its wait");
  MXL_CHECK(memcmp(two + 32, src, 32) == 0);
  mxl_emu::settings().run_order = mxl_emu::order::forward;
}

// ---------------------------------------------------------------- barriers between warps

enum { BW_WARPS = 2, BW_THREADS = 32 * BW_WARPS, BW_TILES = 2, BW_BLOCKS = 2 };
enum { BW_K = 16 * BW_WARPS * 16, BW_Q = BW_TILES * 8 * 16, BW_D = 16 * BW_WARPS * 8 };

struct alignas(16) bw_tiles {
  uint16_t k[16 * BW_WARPS][24];  // rows padded to 48 bytes: 16-byte aligned
  uint16_t q[8][24];
};

enum bw_mistake { BW_CORRECT, BW_NO_STAGED_BARRIER, BW_NO_CONSUMED_BARRIER };

// The pattern of the tensor-core attention kernels (the dk/dv kernel of
// attention_mma_bwd.cuh), small: K staged once; per tile, a barrier (K
// staged, the previous Q tile consumed), Q staged by the whole block
// (thread t stages elements t, t + 64: each warp's product reads Q rows the
// other warp wrote), a barrier (Q staged), then each warp's D += K_w·Qᵀ
// through ldmatrix + mma. Per block K [32][16], BW_TILES tiles Q [8][16]
// (n, k), D [32][8]. `mistake` leaves out the consumed barrier of the
// second tile or the staged barrier of every tile.
MXL_GLOBAL void barrier_mma_kernel(float *D, const float *K, const float *Q, int mistake) {
  MXL_SHARED bw_tiles s;
  int t = (int)MXL_THREAD_X, lane = t % 32, warp = t / 32, g = lane / 4, tig = lane % 4;
  K += MXL_BLOCK_X * BW_K;
  Q += MXL_BLOCK_X * BW_Q;
  D += MXL_BLOCK_X * BW_D;
  for (int i = t; i < BW_K; i += BW_THREADS)
    s.k[i / 16][i % 16] = (uint16_t)mxl_pack_bf16x2(K[i], 0.0f);
  float c[4] = {0, 0, 0, 0};
  for (int tile = 0; tile < BW_TILES; tile++) {
    if (tile == 0 || mistake != BW_NO_CONSUMED_BARRIER) MXL_SYNC();
    for (int i = t; i < 128; i += BW_THREADS)
      s.q[i / 16][i % 16] = (uint16_t)mxl_pack_bf16x2(Q[tile * 128 + i], 0.0f);
    if (mistake != BW_NO_STAGED_BARRIER) MXL_SYNC();
    uint32_t a[4], b[2];
    int q = lane / 8, r = lane % 8;
    mxl_ldmatrix_x4(a, &s.k[warp * 16 + (q & 1) * 8 + r][(q >> 1) * 8]);
    mxl_ldmatrix_x2(b, &s.q[r][(q & 1) * 8]);
    mxl_mma_bf16_16816(c, a, b, c);
  }
  float *d = D + warp * 16 * 8;
  d[g * 8 + 2 * tig] = c[0];
  d[g * 8 + 2 * tig + 1] = c[1];
  d[(g + 8) * 8 + 2 * tig] = c[2];
  d[(g + 8) * 8 + 2 * tig + 1] = c[3];
}

// A missing block barrier between a warp that stages shared memory and a
// warp that reads it. Under the old schedule (every thread of the block
// interleaved, as the shuffle order still does) neither planted mistake
// shows: a warp's first collective, the ldmatrix of K, fires when its last
// lane arrives, by when every thread of the block has staged its share of
// Q, and the warps then go on in lockstep. The forward and reverse orders
// run one warp at a time to the next barrier: the first warp reads Q rows
// the other has not staged yet (or already overwrote with the next tile).
static void test_barriers_between_warps(void) {
  static float K[BW_BLOCKS * BW_K], Q[BW_BLOCKS * BW_Q], D[BW_BLOCKS * BW_D],
      want[BW_BLOCKS * BW_D];
  for (int i = 0; i < BW_BLOCKS * BW_K; i++) K[i] = (float)((i * 7) % 11 - 5);
  for (int i = 0; i < BW_BLOCKS * BW_Q; i++) Q[i] = (float)((i * 5) % 9 - 4);
  for (int blk = 0; blk < BW_BLOCKS; blk++)  // small integers: exact
    for (int row = 0; row < 32; row++)
      for (int n = 0; n < 8; n++) {
        float sum = 0;
        for (int tile = 0; tile < BW_TILES; tile++)
          for (int k = 0; k < 16; k++)
            sum += K[blk * BW_K + row * 16 + k] * Q[blk * BW_Q + tile * 128 + n * 16 + k];
        want[blk * BW_D + row * 8 + n] = sum;
      }
  static const char *const names[] = {"", "staged", "consumed"};
  for (int o = 0; o < 3; o++) {
    mxl_emu::settings().run_order = orders[o];
    MXL_CHECK(MXL_LAUNCH(barrier_mma_kernel, BW_BLOCKS, BW_THREADS, 0, 0, D, K, Q,
                         (int)BW_CORRECT) == 0);
    MXL_CHECK_MSG(memcmp(D, want, sizeof D) == 0, "order %d", o);
    if (orders[o] == mxl_emu::order::shuffle) continue;
    for (int mistake = BW_NO_STAGED_BARRIER; mistake <= BW_NO_CONSUMED_BARRIER; mistake++) {
      MXL_CHECK(MXL_LAUNCH(barrier_mma_kernel, BW_BLOCKS, BW_THREADS, 0, 0, D, K, Q, mistake) ==
                0);
      MXL_CHECK_MSG(memcmp(D, want, sizeof D) != 0,
                    "order %d: the missing %s barrier went unnoticed", o, names[mistake]);
    }
  }
  mxl_emu::settings().run_order = mxl_emu::order::forward;
}

// ---------------------------------------------------------------- shuffles, deadlocks

// out[thread] = the sum over its warp by an xor butterfly.
MXL_GLOBAL void warp_sum_kernel(float *out, const float *in) {
  float v = in[MXL_THREAD_X];
  for (int mask = 16; mask > 0; mask /= 2) v += mxl_shfl_xor(v, mask);
  out[MXL_THREAD_X] = v;
}

// Lane 3 of each warp leaves before the shuffle.
MXL_GLOBAL void warp_exit_kernel(float *out) {
  if (MXL_THREAD_X % 32 == 3) return;
  out[MXL_THREAD_X] = mxl_shfl_xor(1.0f, 1);
}

// Lane 0 waits at a barrier while the rest of its warp shuffles.
MXL_GLOBAL void warp_barrier_kernel(float *out) {
  if (MXL_THREAD_X == 0) {
    MXL_SYNC();
  } else {
    out[MXL_THREAD_X] = mxl_shfl_xor(1.0f, 1);
    MXL_SYNC();
  }
}

// Half the warp at an mma, half at an ldmatrix.
MXL_GLOBAL void warp_mixed_kernel(float *out) {
  MXL_SHARED four_matrices s;
  uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  float c[4] = {0, 0, 0, 0}, d[4] = {0, 0, 0, 0};
  if (MXL_THREAD_X < 16)
    mxl_mma_bf16_16816(d, a, b, c);
  else
    mxl_ldmatrix_x1(a, &s.m[0][MXL_THREAD_X % 8][0]);
  out[MXL_THREAD_X] = d[0];
}

static void test_warp_collectives(void) {
  float in[64], out[64];
  for (int i = 0; i < 64; i++) in[i] = (float)i;
  for (int o = 0; o < 3; o++) {
    mxl_emu::settings().run_order = orders[o];
    MXL_CHECK(MXL_LAUNCH(warp_sum_kernel, 2, 64, 0, 0, out, in) == 0);
    for (int i = 0; i < 64; i++) MXL_CHECK(out[i] == (i < 32 ? 496.0f : 1520.0f));
  }
  mxl_emu::settings().run_order = mxl_emu::order::forward;
  MXL_CHECK(MXL_LAUNCH(warp_exit_kernel, 1, 64, 0, 0, out) == -1);
  MXL_CHECK_MSG(error_has("lane 3 of warp 0 exited"), "%s", mxl_emu::last_error().c_str());
  MXL_CHECK(MXL_LAUNCH(warp_barrier_kernel, 1, 32, 0, 0, out) == -1);
  MXL_CHECK_MSG(error_has("lane 0 of warp 0 waits at the barrier"), "%s",
                mxl_emu::last_error().c_str());
  MXL_CHECK(MXL_LAUNCH(warp_mixed_kernel, 1, 32, 0, 0, out) == -1);
  MXL_CHECK_MSG(error_has("different warp instructions"), "%s", mxl_emu::last_error().c_str());
  MXL_CHECK(MXL_LAUNCH(warp_sum_kernel, 1, 48, 0, 0, out, in) == -1);
  MXL_CHECK_MSG(error_has("needs a full warp"), "%s", mxl_emu::last_error().c_str());
  // The emulator is usable after each failure.
  MXL_CHECK(MXL_LAUNCH(warp_sum_kernel, 1, 32, 0, 0, out, in) == 0 && out[7] == 496.0f);
}

int main(void) {
  MXL_RUN(test_ldmatrix_fragments);
  MXL_RUN(test_mma_fragments);
  MXL_RUN(test_ldmatrix_mma);
  MXL_RUN(test_cp_async);
  MXL_RUN(test_barriers_between_warps);
  MXL_RUN(test_warp_collectives);
  return mxl_test_summary("cuda_warp");
}
