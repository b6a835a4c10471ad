// kernels/mxfp4.h against NVIDIA's own conversions: the host-callable
// functions of cuda_fp4.h (E2M1 <-> half, float -> E2M1 round-to-nearest)
// and cuda_fp8.h (E8M0 -> bf16). Bit-exact, for every code and scale byte.
// Host C++ only: runs on machines without a GPU.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp4.h>
#include <cuda_fp8.h>

#include <stdint.h>

#include "kernels/mxfp4.h"
#include "test.h"

static uint32_t bits_of(float f) {
  uint32_t b;
  memcpy(&b, &f, sizeof b);
  return b;
}

static float nv_e2m1(unsigned code) {
  return __half2float(__half(__nv_cvt_fp4_to_halfraw((__nv_fp4_storage_t)code, __NV_E2M1)));
}

static float nv_e8m0(unsigned byte) {
  return __bfloat162float(__nv_bfloat16(__nv_cvt_e8m0_to_bf16raw((__nv_fp8_storage_t)byte)));
}

static unsigned nv_round(float x) {
  return __nv_cvt_float_to_fp4(x, __NV_E2M1, cudaRoundNearest);
}

static int same(float a, float b) { return (isnan(a) && isnan(b)) || bits_of(a) == bits_of(b); }

// All 16 E2M1 codes, and the packed pair order: NVIDIA's fp4x2 storage
// puts the first element in the low nibble, as gpt-oss does.
static void test_e2m1_values_and_nibble_order(void) {
  for (unsigned c = 0; c < 16; c++)
    MXL_CHECK_MSG(bits_of(mxl_e2m1_value(c)) == bits_of(nv_e2m1(c)), "code %u: %a vs %a", c,
                  mxl_e2m1_value(c), nv_e2m1(c));
  for (unsigned byte = 0; byte < 256; byte++) {
    uint8_t block[16] = {(uint8_t)byte};
    float out[32];
    mxl_mxfp4_decode_block(block, MXL_MXFP4_BIAS, MXL_MXFP4_BIAS, out);
    __half2_raw pair = __nv_cvt_fp4x2_to_halfraw2((__nv_fp4x2_storage_t)byte, __NV_E2M1);
    MXL_CHECK_MSG(same(out[0], __half2float(__half(__half_raw{pair.x}))) &&
                      same(out[1], __half2float(__half(__half_raw{pair.y}))),
                  "byte 0x%02x", byte);
  }
}

// Every E8M0 byte, NaN (255) included.
static void test_e8m0_scales(void) {
  int bad = 0;
  for (unsigned byte = 0; byte < 256; byte++) {
    float ours = mxl_e8m0_scale(byte, MXL_MXFP4_BIAS), nv = nv_e8m0(byte);
    if (!same(ours, nv) && bad++ < 5)
      MXL_CHECK_MSG(0, "byte %u: %a vs NVIDIA %a", byte, ours, nv);
  }
  MXL_CHECK(bad == 0);
  MXL_CHECK(isnan(nv_e8m0(255)));
}

// Every code x every scale byte: ours against NVIDIA's value x NVIDIA's
// scale (the float product of a 2-bit mantissa and a power of two is exact,
// or overflows to Inf on both sides). Metal's byte b is E8M0 byte b - 14.
static void test_decode_all_codes_and_scales(void) {
  int bad = 0, checked = 0;
  for (unsigned byte = 0; byte < 256; byte++) {
    for (unsigned c = 0; c < 16; c++) {
      uint8_t block[16];
      memset(block, (int)(c | (c << 4)), sizeof block);
      float out[32];
      mxl_mxfp4_decode_block(block, byte, MXL_MXFP4_BIAS, out);
      float want = nv_e2m1(c) * nv_e8m0(byte);
      checked++;
      if ((!same(out[0], want) || !same(out[31], want)) && bad++ < 5)
        MXL_CHECK_MSG(0, "code %u byte %u: %a vs %a", c, byte, out[0], want);
      if (byte >= 14) {
        mxl_mxfp4_decode_block(block, byte, MXL_MXFP4_METAL_BIAS, out);
        float metal = nv_e2m1(c) * nv_e8m0(byte - 14);
        checked++;
        if (!same(out[7], metal) && bad++ < 5)
          MXL_CHECK_MSG(0, "metal code %u byte %u: %a vs %a", c, byte, out[7], metal);
      }
    }
  }
  MXL_CHECK_MSG(bad == 0, "%d of %d decodes differ from NVIDIA's", bad, checked);
}

static uint64_t rng = 0x243F6A8885A308D3ull;
static uint64_t rng_next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

// Per-value rounding: mxl_e2m1_encode against cvt.rn.satfinite semantics.
static void test_round_matches_nvidia(void) {
  int bad = 0, checked = 0;
  for (int k = -4096; k <= 4096; k++) { // every multiple of 1/512 in [-8, 8] and neighbours
    float x = (float)k / 512.0f;
    float xs[3] = {x, nextafterf(x, -INFINITY), nextafterf(x, INFINITY)};
    for (float v : xs) {
      checked++;
      if (mxl_e2m1_encode(v) != nv_round(v) && bad++ < 5)
        MXL_CHECK_MSG(0, "%a: ours %u, NVIDIA %u", v, mxl_e2m1_encode(v), nv_round(v));
    }
  }
  for (int i = 0; i < 200000; i++) { // random finite floats of every magnitude
    uint32_t b = (uint32_t)rng_next();
    float v;
    memcpy(&v, &b, sizeof v);
    if (!isfinite(v)) continue;
    checked++;
    if (mxl_e2m1_encode(v) != nv_round(v) && bad++ < 5)
      MXL_CHECK_MSG(0, "%a: ours %u, NVIDIA %u", v, mxl_e2m1_encode(v), nv_round(v));
  }
  const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, 1e-45f, -1e-45f, 6.0f, 1e38f};
  for (float v : specials) {
    checked++;
    MXL_CHECK_MSG(mxl_e2m1_encode(v) == nv_round(v), "%a: ours %u, NVIDIA %u", v,
                  mxl_e2m1_encode(v), nv_round(v));
  }
  MXL_CHECK_MSG(bad == 0, "%d of %d values round differently", bad, checked);
  printf("rounding: %d values agree with __nv_cvt_float_to_fp4\n", checked - bad);
}

// Whole blocks: the encoder's codes are NVIDIA's rounding of the values
// pre-scaled by the chosen scale.
static void test_block_codes_match_nvidia(void) {
  int bad = 0;
  for (int it = 0; it < 5000; it++) {
    float x[32];
    int e = (int)(rng_next() % 40) - 20;
    for (int t = 0; t < 32; t++)
      x[t] = ldexpf((float)((int64_t)(rng_next() % 20001) - 10000) / 1000.0f, e);
    uint8_t block[16], s = 0;
    MXL_CHECK(mxl_mxfp4_encode_block(x, block, &s) == 0);
    float scale = nv_e8m0(s);
    for (int t = 0; t < 32; t++) {
      unsigned code = (t & 1) ? block[t / 2] >> 4 : block[t / 2] & 0x0Fu;
      if (code != nv_round(x[t] / scale)) bad++;
    }
  }
  MXL_CHECK_MSG(bad == 0, "%d codes differ from NVIDIA's rounding", bad);
}

int main(void) {
  MXL_RUN(test_e2m1_values_and_nibble_order);
  MXL_RUN(test_e8m0_scales);
  MXL_RUN(test_decode_all_codes_and_scales);
  MXL_RUN(test_round_matches_nvidia);
  MXL_RUN(test_block_codes_match_nvidia);
  return mxl_test_summary("cuda_codec");
}
