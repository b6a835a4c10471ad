/* Reference math, segmented LoRA (ops lora, lora_bwd): one segment at a
 * time; the op applies the segments in order. See ref_real.h for the
 * conventions (double accumulation, one rounding per stored value).
 *
 * A segment covers `rows` rows: x [rows, in] and y [rows, out] are its rows
 * (row stride in / out), A [R, in], B [out, R], t [rows, R]. */
#ifndef MXL_KERNELS_REF_LORA_H
#define MXL_KERNELS_REF_LORA_H

#include "kernels/ref/ref_real.h"

/* t = x·Aᵀ;  y += scale·t·Bᵀ (t rounded to mxl_real before the second
 * product, as it is stored). */
static inline void mxl_ref_lora_seg(mxl_real *y, mxl_real *t, const mxl_real *x,
                                    const mxl_real *A, const mxl_real *B, int rows, int R,
                                    int in, int out, mxl_acc scale) {
  for (int r = 0; r < rows; r++)
    for (int k = 0; k < R; k++) {
      mxl_acc acc = 0;
      for (int i = 0; i < in; i++) acc += (mxl_acc)x[(size_t)r * in + i] * A[(size_t)k * in + i];
      t[(size_t)r * R + k] = (mxl_real)acc;
    }
  for (int r = 0; r < rows; r++)
    for (int j = 0; j < out; j++) {
      mxl_acc acc = 0;
      for (int k = 0; k < R; k++) acc += (mxl_acc)t[(size_t)r * R + k] * B[(size_t)j * R + k];
      mxl_real *yj = &y[(size_t)r * out + j];
      *yj = (mxl_real)(scale * acc + (mxl_acc)*yj);
    }
}

/* The backward of one segment, dt [rows, R] scratch:
 *   dt = scale·dy·B;  dB += scale·dyᵀ·t;  dA += dtᵀ·x;  dx += dt·A
 * dA, dB, dx may be NULL. */
static inline void mxl_ref_lora_seg_bwd(mxl_real *dx, mxl_real *dA, mxl_real *dB,
                                        mxl_real *dt, const mxl_real *dy, const mxl_real *x,
                                        const mxl_real *t, const mxl_real *A,
                                        const mxl_real *B, int rows, int R, int in, int out,
                                        mxl_acc scale) {
  for (int r = 0; r < rows; r++)
    for (int k = 0; k < R; k++) {
      mxl_acc acc = 0;
      for (int j = 0; j < out; j++) acc += (mxl_acc)dy[(size_t)r * out + j] * B[(size_t)j * R + k];
      dt[(size_t)r * R + k] = (mxl_real)(scale * acc);
    }
  for (int j = 0; dB && j < out; j++)
    for (int k = 0; k < R; k++) {
      mxl_acc acc = 0;
      for (int r = 0; r < rows; r++) acc += (mxl_acc)dy[(size_t)r * out + j] * t[(size_t)r * R + k];
      mxl_real *g = &dB[(size_t)j * R + k];
      *g = (mxl_real)(scale * acc + (mxl_acc)*g);
    }
  for (int k = 0; dA && k < R; k++)
    for (int i = 0; i < in; i++) {
      mxl_acc acc = 0;
      for (int r = 0; r < rows; r++) acc += (mxl_acc)dt[(size_t)r * R + k] * x[(size_t)r * in + i];
      mxl_real *g = &dA[(size_t)k * in + i];
      *g = (mxl_real)(acc + (mxl_acc)*g);
    }
  for (int r = 0; dx && r < rows; r++)
    for (int i = 0; i < in; i++) {
      mxl_acc acc = 0;
      for (int k = 0; k < R; k++) acc += (mxl_acc)dt[(size_t)r * R + k] * A[(size_t)k * in + i];
      mxl_real *g = &dx[(size_t)r * in + i];
      *g = (mxl_real)(acc + (mxl_acc)*g);
    }
}

#endif
