/* bfloat16 <-> float conversion. Header-only so kernels inline it.
 * bf16 is the top half of an IEEE float32; conversion to bf16 rounds to
 * nearest, ties to even, and keeps NaNs quiet (never rounds a NaN into Inf). */
#ifndef MXL_CORE_BF16_H
#define MXL_CORE_BF16_H

#include <stdint.h>
#include <string.h>

static inline float mxl_bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

static inline uint16_t mxl_f32_to_bf16(float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u);
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return (uint16_t)((bits + rounding) >> 16);
}

#endif
