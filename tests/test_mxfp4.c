/* kernels/mxfp4.h: the MXFP4 codec, decode and encode.
 *
 * The expected values are built here, independently of the codec: the E2M1
 * table is spelled out from docs/gpt-oss.md (§2.3), scales come from ldexp, and the
 * reference rounding searches the table for the nearest value. */
#include <stdint.h>

#include "core/rng.h"
#include "kernels/mxfp4.h"
#include "test.h"

/* docs/gpt-oss.md §2.3: nibble → value, bit 3 the sign. */
static const float e2m1_table[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                     -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng_next(void) { return mxl_splitmix64(&rng_state); }

static double rng_uniform(void) { return (double)(rng_next() >> 11) * 0x1p-53; }

static double rng_gauss(void) {
  double u = rng_uniform(), v = rng_uniform();
  return sqrt(-2.0 * log(u + 0x1p-60)) * cos(6.283185307179586 * v);
}

static int same_bits(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

/* The expected decode of (code, scale byte, bias): table × 2^(byte - bias),
 * NaN for the E8M0 all-ones byte 255 of the bias-127 layout. */
static float expected_value(unsigned code, unsigned byte, int bias) {
  if (bias == 127 && byte == 255) return NAN;
  return (float)ldexp((double)e2m1_table[code], (int)byte - bias);
}

static int same_value(float got, float want) {
  return isnan(want) ? isnan(got) : same_bits(got, want);
}

/* Every code at every position of a block, for every scale byte and both
 * biases. Element t of block `c` holds code (t + c) % 16, which also pins
 * the nibble order: element 2j low nibble, 2j+1 high nibble. */
static void test_decode_all_codes_and_scales(void) {
  const int biases[2] = {MXL_MXFP4_BIAS, MXL_MXFP4_METAL_BIAS};
  int bad = 0;
  for (int b = 0; b < 2; b++) {
    for (unsigned byte = 0; byte < 256; byte++) {
      for (unsigned c = 0; c < 16; c++) {
        uint8_t block[16];
        for (int j = 0; j < 16; j++)
          block[j] = (uint8_t)(((2 * j + c) % 16) | (((2 * j + 1 + c) % 16) << 4));
        float out[32];
        mxl_mxfp4_decode_block(block, byte, biases[b], out);
        for (int t = 0; t < 32; t++) {
          float want = expected_value((t + c) % 16, byte, biases[b]);
          if (!same_value(out[t], want) && bad++ < 5)
            MXL_CHECK_MSG(0, "bias %d byte %u element %d: %a vs %a", biases[b], byte, t,
                          out[t], want);
          uint8_t scale = (uint8_t)byte;
          float at = mxl_mxfp4_decode_at(block, &scale, biases[b], t);
          if (!same_value(at, want) && bad++ < 5)
            MXL_CHECK_MSG(0, "decode_at: bias %d byte %u element %d", biases[b], byte, t);
        }
      }
    }
  }
  MXL_CHECK_MSG(bad == 0, "%d decoded values differ", bad);
}

static void test_decode_specials(void) {
  /* Nibble order by hand: 0x21 is element 0 = code 1 (0.5), element 1 =
   * code 2 (1.0); 0xF8 is -0 then -6. */
  uint8_t block[16] = {0x21, 0xF8};
  float out[32];
  mxl_mxfp4_decode_block(block, 127, MXL_MXFP4_BIAS, out);
  MXL_CHECK(out[0] == 0.5f && out[1] == 1.0f);
  MXL_CHECK(same_bits(out[2], -0.0f) && out[3] == -6.0f);
  MXL_CHECK(same_bits(out[4], 0.0f));
  /* Scale extremes at bias 127: 2^-127 is subnormal but exact; 255 is NaN. */
  mxl_mxfp4_decode_block(block, 0, MXL_MXFP4_BIAS, out);
  MXL_CHECK(out[1] == 0x1p-127f && out[0] == 0x1p-128f);
  mxl_mxfp4_decode_block(block, 255, MXL_MXFP4_BIAS, out);
  MXL_CHECK(isnan(out[0]) && isnan(out[2]));
  MXL_CHECK(isnan(mxl_e8m0_scale(255, MXL_MXFP4_BIAS)));
  /* metal stores scale + 14: byte 141 is 2^0, and byte 255 a plain 2^114. */
  MXL_CHECK(mxl_e8m0_scale(141, MXL_MXFP4_METAL_BIAS) == 1.0f);
  MXL_CHECK(mxl_e8m0_scale(255, MXL_MXFP4_METAL_BIAS) == 0x1p114f);
  MXL_CHECK(mxl_e8m0_scale(0, MXL_MXFP4_METAL_BIAS) == 0x1p-141f);
}

/* decode_at reads the same values as decode_block, across block boundaries. */
static void test_decode_at_matches_block(void) {
  enum { ROWS = 3, GROUPS = 5, COLS = GROUPS * 32 };
  uint8_t blocks[ROWS][GROUPS][16], scales[ROWS][GROUPS];
  for (int r = 0; r < ROWS; r++)
    for (int g = 0; g < GROUPS; g++) {
      for (int j = 0; j < 16; j++) blocks[r][g][j] = (uint8_t)rng_next();
      scales[r][g] = (uint8_t)(100 + rng_next() % 50);
    }
  int bad = 0;
  for (int r = 0; r < ROWS; r++)
    for (int g = 0; g < GROUPS; g++) {
      float out[32];
      mxl_mxfp4_decode_block(blocks[r][g], scales[r][g], MXL_MXFP4_BIAS, out);
      for (int t = 0; t < 32; t++) {
        float at = mxl_mxfp4_decode_at(&blocks[r][0][0], scales[r], MXL_MXFP4_BIAS, 32 * g + t);
        if (!same_bits(at, out[t])) bad++;
      }
    }
  MXL_CHECK_MSG(bad == 0, "%d of %d elements differ", bad, ROWS * COLS);
}

/* Reference rounding: the nearest table magnitude, ties to the even code
 * (mantissa bit 0), values past 6 land on 6 since it is the nearest; the
 * sign is kept, so negatives rounding to zero give code 8. */
static unsigned ref_round(double x) {
  double a = fabs(x);
  unsigned best = 0;
  for (unsigned c = 1; c < 8; c++) {
    double d = fabs(a - e2m1_table[c]), db = fabs(a - e2m1_table[best]);
    if (d < db || (d == db && (c & 1) == 0)) best = c;
  }
  return (signbit(x) ? 8u : 0u) | best;
}

static void test_round_ties_to_even(void) {
  const float in[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 7.0f, 1e30f, 0.2f, 0.3f};
  const float want[] = {0.0f, 1.0f, 1.0f, 2.0f, 2.0f, 4.0f, 4.0f, 6.0f, 6.0f, 0.0f, 0.5f};
  for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
    MXL_CHECK_MSG(e2m1_table[mxl_e2m1_encode(in[i])] == want[i], "%g", in[i]);
    MXL_CHECK_MSG(e2m1_table[mxl_e2m1_encode(-in[i])] == -want[i], "-%g", in[i]);
  }
  MXL_CHECK(mxl_e2m1_encode(-0.0f) == 8 && mxl_e2m1_encode(-0.1f) == 8);
  MXL_CHECK(mxl_e2m1_encode(0.0f) == 0);
  /* Every multiple of 1/256 in [-8, 8] plus the floats next to each tie. */
  int bad = 0;
  for (int k = -2048; k <= 2048; k++) {
    float x = (float)k / 256.0f;
    float xs[3] = {x, nextafterf(x, -INFINITY), nextafterf(x, INFINITY)};
    for (int i = 0; i < 3; i++)
      if (mxl_e2m1_encode(xs[i]) != ref_round(xs[i])) bad++;
  }
  MXL_CHECK_MSG(bad == 0, "%d values round differently from the reference", bad);
}

/* Decoding then encoding any block whose decoding is finite gives the same
 * values back, bit for bit (-0 included). */
static void test_representable_roundtrip(void) {
  int bad = 0, tried = 0;
  for (int it = 0; it < 20000; it++) {
    uint8_t block[16], back[16], s2 = 0;
    for (int j = 0; j < 16; j++) block[j] = (uint8_t)rng_next();
    if (it % 4 == 1) /* few distinct magnitudes: the encoder may pick a smaller scale */
      for (int j = 0; j < 16; j++) block[j] &= 0x99;
    if (it % 4 == 2) memset(block, 0x88, sizeof block);
    unsigned s = (unsigned)(rng_next() % 255); /* 0..254, not NaN */
    if (it < 255) s = (unsigned)it;
    float x[32], y[32];
    mxl_mxfp4_decode_block(block, s, MXL_MXFP4_BIAS, x);
    int finite = 1;
    for (int t = 0; t < 32; t++) finite &= isfinite(x[t]) != 0;
    if (!finite) continue; /* byte 254 with codes >= 2 overflows float */
    tried++;
    MXL_CHECK(mxl_mxfp4_encode_block(x, back, &s2) == 0);
    mxl_mxfp4_decode_block(back, s2, MXL_MXFP4_BIAS, y);
    for (int t = 0; t < 32; t++)
      if (!same_bits(x[t], y[t]) && bad++ < 3)
        MXL_CHECK_MSG(0, "byte %u element %d: %a came back as %a", s, t, x[t], y[t]);
  }
  MXL_CHECK_MSG(bad == 0, "%d values did not round-trip (of %d blocks)", bad, tried);
  MXL_CHECK(tried > 15000);
}

static void test_zero_blocks(void) {
  float x[32] = {0};
  uint8_t block[16], s = 0;
  MXL_CHECK(mxl_mxfp4_encode_block(x, block, &s) == 0);
  MXL_CHECK(s == 127);
  for (int j = 0; j < 16; j++) MXL_CHECK(block[j] == 0x00);
  for (int t = 0; t < 32; t++) x[t] = -0.0f;
  MXL_CHECK(mxl_mxfp4_encode_block(x, block, &s) == 0);
  MXL_CHECK(s == 127);
  for (int j = 0; j < 16; j++) MXL_CHECK(block[j] == 0x88);
}

/* The max-based exponent, found by search: the smallest e with
 * amax / 2^e <= 6. */
static int ref_max_exponent(double amax) {
  int e = -300;
  while (ldexp(amax, -e) > 6.0) e++;
  return e;
}

/* Squared error of the block at scale byte s, by the reference rounding. */
static double ref_sse(const float *x, int s) {
  double sse = 0.0;
  for (int t = 0; t < 32; t++) {
    double scaled = ldexp((double)x[t], -(s - 127));
    double q = ldexp((double)e2m1_table[ref_round(scaled)], s - 127);
    sse += (q - x[t]) * (q - x[t]);
  }
  return sse;
}

static double block_sse(const float *x, const uint8_t *block, unsigned s) {
  float y[32];
  mxl_mxfp4_decode_block(block, s, MXL_MXFP4_BIAS, y);
  double sse = 0.0;
  for (int t = 0; t < 32; t++) sse += ((double)y[t] - x[t]) * ((double)y[t] - x[t]);
  return sse;
}

static void random_block(float *x, int kind) {
  double scale = ldexp(1.0, (int)(rng_next() % 60) - 30);
  for (int t = 0; t < 32; t++) {
    double v = rng_gauss();
    if (kind == 1) v = v * v * v;                         /* heavy tails */
    if (kind == 2) v = (t == 0) ? 40.0 * v : 0.1 * v;     /* one outlier */
    if (kind == 3) v = rng_uniform() * 12.0 - 6.0;        /* uniform */
    x[t] = (float)(v * scale);
  }
}

/* The chosen scale is the best of e-1, e, e+1 (so never worse than the
 * max-based e), and its codes are the reference rounding at that scale.
 * Also counts how often it is the best of all 255 scales. */
static void test_scale_choice_optimal(void) {
  const int n = 4000;
  int global = 0, not_max_based = 0, bad_codes = 0;
  for (int it = 0; it < n; it++) {
    float x[32];
    random_block(x, it % 4);
    uint8_t block[16], s = 0;
    MXL_CHECK(mxl_mxfp4_encode_block(x, block, &s) == 0);
    double amax = 0.0;
    for (int t = 0; t < 32; t++) amax = fmax(amax, fabs(x[t]));
    int e = ref_max_exponent(amax) + 127;
    double best3 = INFINITY, best_all = INFINITY;
    for (int c = e - 1; c <= e + 1; c++)
      if (c >= 0 && c <= 254) best3 = fmin(best3, ref_sse(x, c));
    for (int c = 0; c <= 254; c++) best_all = fmin(best_all, ref_sse(x, c));
    double got = block_sse(x, block, s);
    MXL_CHECK_MSG(got <= best3 * (1.0 + 1e-5), "block %d: sse %g, best of e-1..e+1 %g", it,
                  got, best3);
    MXL_CHECK_MSG(got <= ref_sse(x, e) * (1.0 + 1e-5), "block %d worse than max-based", it);
    MXL_CHECK_MSG(abs((int)s - e) <= 1, "block %d: byte %u, max-based %d", it, s, e);
    if (got <= best_all * (1.0 + 1e-9)) global++;
    if ((int)s != e) not_max_based++;
    for (int t = 0; t < 32; t++) {
      unsigned code = (t & 1) ? block[t / 2] >> 4 : block[t / 2] & 15u;
      if (code != ref_round(ldexp((double)x[t], -((int)s - 127)))) bad_codes++;
    }
  }
  MXL_CHECK_MSG(bad_codes == 0, "%d codes differ from the reference rounding", bad_codes);
  printf("scale choice: %d/%d blocks at the global optimum of all 255 scales, "
         "%d/%d moved off the max-based scale\n",
         global, n, not_max_based, n);
}

static void test_rejects_nonfinite(void) {
  const float bad_values[3] = {NAN, INFINITY, -INFINITY};
  for (int k = 0; k < 3; k++) {
    for (int pos = 0; pos < 32; pos += 31) {
      float x[32];
      for (int t = 0; t < 32; t++) x[t] = (float)t;
      x[pos] = bad_values[k];
      uint8_t block[16], s = 0xAB;
      memset(block, 0xCD, sizeof block);
      MXL_CHECK(mxl_mxfp4_encode_block(x, block, &s) == -1);
      MXL_CHECK(s == 0xAB);
      for (int j = 0; j < 16; j++) MXL_CHECK(block[j] == 0xCD);
    }
  }
  /* Rows: first_bad names the value, nothing is written. */
  enum { ROWS = 4, COLS = 64 };
  static float x[ROWS * COLS];
  for (int i = 0; i < ROWS * COLS; i++) x[i] = (float)rng_gauss();
  x[2 * COLS + 37] = NAN;
  uint8_t blocks[ROWS * COLS / 2], scales[ROWS * COLS / 32];
  memset(blocks, 0xCD, sizeof blocks);
  memset(scales, 0xAB, sizeof scales);
  mxl_mxfp4_error_stats st;
  MXL_CHECK(mxl_mxfp4_encode_rows(x, ROWS, COLS, blocks, scales, &st) == -1);
  MXL_CHECK(st.first_bad == 2 * COLS + 37);
  for (size_t i = 0; i < sizeof blocks; i++) MXL_CHECK(blocks[i] == 0xCD);
  for (size_t i = 0; i < sizeof scales; i++) MXL_CHECK(scales[i] == 0xAB);
  x[2 * COLS + 37] = 1.0f;
  /* Shapes the layout cannot hold. */
  MXL_CHECK(mxl_mxfp4_encode_rows(x, ROWS, 48, blocks, scales, &st) == -2);
  MXL_CHECK(mxl_mxfp4_encode_rows(x, ROWS, 0, blocks, scales, &st) == -2);
  MXL_CHECK(mxl_mxfp4_encode_rows(x, -1, COLS, blocks, scales, NULL) == -2);
  for (size_t i = 0; i < sizeof scales; i++) MXL_CHECK(scales[i] == 0xAB);
  MXL_CHECK(mxl_mxfp4_encode_rows(x, ROWS, COLS, blocks, scales, NULL) == 0);
}

/* Encoding Gaussian rows: the blocks agree with encode_block, the statistics
 * with a recomputation here, and merging two halves gives the whole. */
static void test_rows_and_stats(void) {
  enum { ROWS = 64, COLS = 2880, G = COLS / 32 };
  float *x = malloc(sizeof(float) * ROWS * COLS);
  uint8_t *blocks = malloc((size_t)ROWS * G * 16), *scales = malloc((size_t)ROWS * G);
  MXL_CHECK(x && blocks && scales);
  if (!x || !blocks || !scales) return;
  for (int i = 0; i < ROWS * COLS; i++) x[i] = (float)(0.02 * rng_gauss());
  x[5] = 1.0f; /* an outlier that pulls the block's scale up */
  mxl_mxfp4_error_stats st, a, b;
  MXL_CHECK(mxl_mxfp4_encode_rows(x, ROWS, COLS, blocks, scales, &st) == 0);
  double sse = 0.0, ssx = 0.0, maxerr = 0.0;
  int64_t saturated = 0;
  int mismatched = 0;
  for (int64_t g = 0; g < (int64_t)ROWS * G; g++) {
    uint8_t blk[16], s = 0;
    mxl_mxfp4_encode_block(x + 32 * g, blk, &s);
    if (s != scales[g] || memcmp(blk, blocks + 16 * g, 16)) mismatched++;
    float y[32];
    mxl_mxfp4_decode_block(blocks + 16 * g, scales[g], MXL_MXFP4_BIAS, y);
    for (int t = 0; t < 32; t++) {
      double v = x[32 * g + t], err = fabs(v - y[t]);
      sse += err * err;
      ssx += v * v;
      maxerr = fmax(maxerr, err);
      if (fabs(v) > ldexp(6.0, scales[g] - 127)) saturated++;
    }
  }
  MXL_CHECK(mismatched == 0);
  MXL_CHECK(st.n_values == (int64_t)ROWS * COLS && st.first_bad == -1);
  MXL_CHECK(st.n_saturated == saturated);
  MXL_CHECK_NEAR(st.max_abs_error, maxerr, 1e-12);
  MXL_CHECK_NEAR(st.rms_error, sqrt(sse / (ROWS * COLS)), 1e-9 * sqrt(sse / (ROWS * COLS)));
  MXL_CHECK_NEAR(st.rel_rms_error, sqrt(sse / ssx), 1e-9);
  printf("gaussian %dx%d: relative RMS error %.4f, RMS error %.3g (sigma 0.02), "
         "max abs error %.3g, %lld saturated\n",
         ROWS, COLS, st.rel_rms_error, st.rms_error, st.max_abs_error,
         (long long)st.n_saturated);
  MXL_CHECK_MSG(st.rel_rms_error > 0.08 && st.rel_rms_error < 0.16, "%g", st.rel_rms_error);
  /* Two halves merged equal the whole. */
  MXL_CHECK(mxl_mxfp4_encode_rows(x, ROWS / 2, COLS, blocks, scales, &a) == 0);
  MXL_CHECK(mxl_mxfp4_encode_rows(x + ROWS / 2 * COLS, ROWS / 2, COLS, blocks, scales, &b) ==
            0);
  mxl_mxfp4_error_stats_merge(&a, &b);
  MXL_CHECK(a.n_values == st.n_values && a.n_saturated == st.n_saturated);
  MXL_CHECK(a.max_abs_error == st.max_abs_error);
  MXL_CHECK_NEAR(a.rel_rms_error, st.rel_rms_error, 1e-12);
  /* All-zero input: no error, and a defined relative error of 0. */
  memset(x, 0, sizeof(float) * COLS);
  MXL_CHECK(mxl_mxfp4_encode_rows(x, 1, COLS, blocks, scales, &st) == 0);
  MXL_CHECK(st.rel_rms_error == 0.0 && st.max_abs_error == 0.0 && scales[0] == 127);
  free(x);
  free(blocks);
  free(scales);
}

int main(void) {
  MXL_RUN(test_decode_all_codes_and_scales);
  MXL_RUN(test_decode_specials);
  MXL_RUN(test_decode_at_matches_block);
  MXL_RUN(test_round_ties_to_even);
  MXL_RUN(test_representable_roundtrip);
  MXL_RUN(test_zero_blocks);
  MXL_RUN(test_scale_choice_optimal);
  MXL_RUN(test_rejects_nonfinite);
  MXL_RUN(test_rows_and_stats);
  return mxl_test_summary("mxfp4");
}
