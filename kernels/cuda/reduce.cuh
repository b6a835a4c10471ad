/* Block-wide reductions through shared memory, in a fixed tree order: the
 * result does not depend on thread scheduling, so every run (and the
 * emulator in any thread order) gives the same bits.
 *
 * Every thread of the block must call them (they contain barriers), with
 * the block size THREADS, a power of two, and a shared array `red` of
 * THREADS elements that the caller does not touch meanwhile. They return
 * the result to every thread and leave `red` free for the next call. */
#ifndef MXL_KERNELS_CUDA_REDUCE_CUH
#define MXL_KERNELS_CUDA_REDUCE_CUH

#include "kernels/cuda/common.cuh"

template <int THREADS>
MXL_DEVICE float mxl_block_sum(float v, float *red) {
  static_assert((THREADS & (THREADS - 1)) == 0, "block size must be a power of two");
  int64_t t = MXL_THREAD_X;
  red[t] = v;
  MXL_SYNC();
  for (int half = THREADS / 2; half > 0; half /= 2) {
    if (t < half) red[t] += red[t + half];
    MXL_SYNC();
  }
  float sum = red[0];
  MXL_SYNC();
  return sum;
}

/* The maximum, by comparisons that keep a NaN (fmaxf would drop it). */
template <int THREADS>
MXL_DEVICE float mxl_block_max(float v, float *red) {
  static_assert((THREADS & (THREADS - 1)) == 0, "block size must be a power of two");
  int64_t t = MXL_THREAD_X;
  red[t] = v;
  MXL_SYNC();
  for (int half = THREADS / 2; half > 0; half /= 2) {
    if (t < half) {
      float a = red[t], b = red[t + half];
      red[t] = (b > a || b != b) ? b : a;
    }
    MXL_SYNC();
  }
  float mx = red[0];
  MXL_SYNC();
  return mx;
}

/* Exclusive prefix sum of one int per thread, in thread order; *total
 * receives the block's sum. `buf` holds THREADS ints. */
template <int THREADS>
MXL_DEVICE int mxl_block_exclusive_scan(int v, int *buf, int *total) {
  int64_t t = MXL_THREAD_X;
  buf[t] = v;
  MXL_SYNC();
  for (int offset = 1; offset < THREADS; offset *= 2) {
    int add = t >= offset ? buf[t - offset] : 0;
    MXL_SYNC();
    buf[t] += add;
    MXL_SYNC();
  }
  int inclusive = buf[t];
  *total = buf[THREADS - 1];
  MXL_SYNC();
  return inclusive - v;
}

/* ---- double-float: an unevaluated sum hi + lo of two floats ----
 * About 48 bits of precision without double instructions (the build
 * rejects those: consumer GPUs run them at 1/64 rate). Knuth's TwoSum and
 * an fma-based TwoProduct are exact, so a sum of squares accumulated this
 * way keeps about 2^-44 relative error. Written with explicit operations
 * the compiler may not reassociate (no fast-math in this build). */
struct mxl_f2 {
  float hi, lo;
};

MXL_HOST_DEVICE mxl_f2 mxl_f2_add(mxl_f2 a, mxl_f2 b) {
  float s = a.hi + b.hi;
  float bb = s - a.hi;
  float err = (a.hi - (s - bb)) + (b.hi - bb);
  float lo = err + a.lo + b.lo;
  float hi = s + lo;
  return mxl_f2{hi, lo - (hi - s)};
}

/* x² exactly, as hi + lo. */
MXL_HOST_DEVICE mxl_f2 mxl_f2_square(float x) {
  float p = x * x;
  return mxl_f2{p, fmaf(x, x, -p)};
}

template <int THREADS>
MXL_DEVICE mxl_f2 mxl_block_sum_f2(mxl_f2 v, float *red_hi, float *red_lo) {
  static_assert((THREADS & (THREADS - 1)) == 0, "block size must be a power of two");
  int64_t t = MXL_THREAD_X;
  red_hi[t] = v.hi;
  red_lo[t] = v.lo;
  MXL_SYNC();
  for (int half = THREADS / 2; half > 0; half /= 2) {
    if (t < half) {
      mxl_f2 s = mxl_f2_add(mxl_f2{red_hi[t], red_lo[t]},
                            mxl_f2{red_hi[t + half], red_lo[t + half]});
      red_hi[t] = s.hi;
      red_lo[t] = s.lo;
    }
    MXL_SYNC();
  }
  mxl_f2 sum{red_hi[0], red_lo[0]};
  MXL_SYNC();
  return sum;
}

#endif
