/* bench_mxfp4: the MXFP4 codec on the host, one thread, at one gpt-oss
 * expert matrix (2880 x 2880).
 *
 *   build/bench_mxfp4 [--reps N]
 *
 * Reports ns per value and the ratio to a baseline measured in the same run
 * (reading the fp32 input once, a sum), so figures from a shared, noisy
 * machine still compare. Encoding is what requantizing a checkpoint costs
 * (mxl_mxfp4_encode_rows, error statistics included; encode_block alone
 * without them); decode is
 * mxl_mxfp4_decode_block over the same blocks. Best of --reps runs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/mxfp4.h"

enum { ROWS = 2880, COLS = 2880, N = ROWS * COLS, GROUPS = N / 32 };

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts); /* CPU time: the machine is shared */
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double uniform(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (double)(rng >> 11) * 0x1p-53;
}

int main(int argc, char **argv) {
  int reps = 3;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
      reps = atoi(argv[++i]);
    } else {
      fprintf(stderr, "usage: bench_mxfp4 [--reps N]\n");
      return 2;
    }
  }
  if (reps < 1) reps = 1;
  float *x = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N);
  uint8_t *blocks = malloc((size_t)GROUPS * 16), *scales = malloc(GROUPS);
  if (!x || !y || !blocks || !scales) {
    fprintf(stderr, "bench_mxfp4: out of memory\n");
    return 1;
  }
  for (int i = 0; i < N; i++) /* Gaussian, sigma 0.02, like trained weights */
    x[i] = (float)(0.02 * sqrt(-2.0 * log(uniform() + 1e-300)) * cos(6.283185307 * uniform()));

  double t_base = 1e30, t_enc = 1e30, t_blk = 1e30, t_dec = 1e30, sink = 0.0;
  mxl_mxfp4_error_stats st;
  for (int r = 0; r < reps; r++) {
    double t0 = now();
    float sum = 0.0f;
    for (int i = 0; i < N; i++) sum += x[i];
    sink += sum;
    double t1 = now();
    if (mxl_mxfp4_encode_rows(x, ROWS, COLS, blocks, scales, &st) != 0) return 1;
    double t2 = now();
    for (int g = 0; g < GROUPS; g++)
      mxl_mxfp4_decode_block(blocks + 16 * g, scales[g], MXL_MXFP4_BIAS, y + 32 * g);
    double t3 = now();
    for (int g = 0; g < GROUPS; g++)
      mxl_mxfp4_encode_block(x + 32 * g, blocks + 16 * g, &scales[g]);
    double t4 = now();
    sink += y[N / 2];
    if (t4 - t3 < t_blk) t_blk = t4 - t3;
    if (t1 - t0 < t_base) t_base = t1 - t0;
    if (t2 - t1 < t_enc) t_enc = t2 - t1;
    if (t3 - t2 < t_dec) t_dec = t3 - t2;
  }
  printf("bench_mxfp4: %d x %d fp32, best of %d (sink %g)\n", ROWS, COLS, reps, sink);
  printf("  baseline read  %7.2f ns/value\n", 1e9 * t_base / N);
  printf("  encode_rows    %7.2f ns/value  (%.1fx baseline)  rel RMS error %.4f\n",
         1e9 * t_enc / N, t_enc / t_base, st.rel_rms_error);
  printf("  encode_block   %7.2f ns/value  (%.1fx baseline)  without statistics\n",
         1e9 * t_blk / N, t_blk / t_base);
  printf("  decode_block   %7.2f ns/value  (%.1fx baseline)\n", 1e9 * t_dec / N,
         t_dec / t_base);
  free(x);
  free(y);
  free(blocks);
  free(scales);
  return 0;
}
