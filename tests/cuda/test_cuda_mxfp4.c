/* The CUDA backend on a device: memory ops, and the MXFP4 dequantization
 * and quantization kernels against the CPU codec (kernels/mxfp4.h). Without a device (or
 * driver) the backend reports MXL_ERR_UNSUPPORTED, which is checked, and
 * the device cases print SKIP. */
#include <stdint.h>

#include "core/bf16.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/mxfp4.h"
#include "kernels/ops.h"
#include "test.h"

static mxl_backend *be; /* NULL when no device */

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint64_t rng_next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static int same_f32(float a, float b) {
  return (isnan(a) && isnan(b)) || memcmp(&a, &b, sizeof a) == 0;
}

static int same_bf16(uint16_t a, uint16_t b) {
  int a_nan = (a & 0x7f80) == 0x7f80 && (a & 0x7f);
  int b_nan = (b & 0x7f80) == 0x7f80 && (b & 0x7f);
  return (a_nan && b_nan) || a == b;
}

/* Without a device, creation fails cleanly; with one, it succeeds. */
static void test_create(void) {
  mxl_backend *probe = (mxl_backend *)&rng; /* must be overwritten with NULL on failure */
  mxl_status st = mxl_backend_cuda_create(0, &probe);
  if (st == MXL_OK) {
    MXL_CHECK(probe && !strcmp(probe->ops->name, "cuda") && !probe->ops->host_memory);
    MXL_CHECK(probe->ops->alloc && probe->ops->sync);
    mxl_backend_destroy(probe);
    MXL_CHECK_FAILS(mxl_backend_cuda_create(1 << 20, &probe), MXL_ERR_ARGUMENT, "does not exist");
    MXL_CHECK(probe == NULL);
    return;
  }
  MXL_CHECK(st == MXL_ERR_UNSUPPORTED);
  MXL_CHECK(probe == NULL);
  MXL_CHECK_MSG(strstr(mxl_last_error(), "CUDA") != NULL, "%s", mxl_last_error());
  printf("no CUDA device: %s\n", mxl_last_error());
}

/* Argument errors are reported before the device is touched, so they are
 * checked with or without one. */
static void test_dequant_rejects_bad_arguments(void) {
  float out[64];
  uint8_t blocks[32] = {0}, scales[2] = {0};
  MXL_CHECK_FAILS(mxl_cuda_mxfp4_dequant_f32(be, out, blocks, scales, 127, 1, 48),
                  MXL_ERR_ARGUMENT, "multiple of 32");
  MXL_CHECK_FAILS(mxl_cuda_mxfp4_dequant_f32(be, out, blocks, scales, 127, -1, 32),
                  MXL_ERR_ARGUMENT, "shape");
  MXL_CHECK_FAILS(mxl_cuda_mxfp4_dequant_bf16(be, (uint16_t *)out, blocks, scales, 128, 1, 32),
                  MXL_ERR_ARGUMENT, "scale bias 128");
  MXL_CHECK_FAILS(mxl_cuda_mxfp4_dequant_f32(be, out + 1, blocks, scales, 127, 1, 32),
                  MXL_ERR_ARGUMENT, "aligned");
  MXL_CHECK_FAILS(mxl_cuda_mxfp4_quant(be, blocks, scales, (const float *)out, 1, 40),
                  MXL_ERR_ARGUMENT, "multiple of 32");
  mxl_backend *ref = NULL;
  MXL_CHECK_OK(mxl_backend_ref_create(&ref));
  MXL_CHECK_FAILS(mxl_cuda_mxfp4_dequant_f32(ref, out, blocks, scales, 127, 1, 32),
                  MXL_ERR_ARGUMENT, "not a CUDA backend");
  MXL_CHECK_FAILS(mxl_cuda_mxfp4_quant(ref, blocks, scales, (const float *)out, 1, 32),
                  MXL_ERR_ARGUMENT, "not a CUDA backend");
  mxl_backend_destroy(ref);
}

static void test_memory_ops(void) {
  if (!be) MXL_SKIP("no CUDA device");
  enum { N = 1000 };
  uint8_t host[N], back[N];
  for (int i = 0; i < N; i++) host[i] = (uint8_t)rng_next();
  uint8_t *a = be->ops->alloc(be, N), *b = be->ops->alloc(be, N);
  MXL_CHECK(a && b);
  be->ops->download(be, back, a, N);
  int zeroed = 1;
  for (int i = 0; i < N; i++) zeroed &= back[i] == 0;
  MXL_CHECK_MSG(zeroed, "alloc must return zeroed memory");
  be->ops->upload(be, a, host, N);
  be->ops->copy(be, b, a, N);
  be->ops->zero(be, a + 100, 50);
  be->ops->download(be, back, b, N);
  MXL_CHECK(!memcmp(back, host, N));
  be->ops->download(be, back, a, N);
  MXL_CHECK(!memcmp(back, host, 100) && !memcmp(back + 150, host + 150, N - 150));
  for (int i = 100; i < 150; i++) MXL_CHECK(back[i] == 0);
  MXL_CHECK_OK(be->ops->sync(be));
  be->ops->free(be, a);
  be->ops->free(be, b);
  be->ops->free(be, NULL);
  MXL_CHECK_OK(be->ops->sync(be));
}

/* rows x cols random codes and scales (all 256 scale bytes appear when
 * there are enough blocks), decoded on the device and on the CPU. */
static void check_dequant(int64_t rows, int64_t cols, int bias) {
  int64_t n = rows * cols, groups = n / 32;
  uint8_t *blocks = malloc((size_t)groups * 16), *scales = malloc((size_t)groups);
  float *want = malloc(sizeof(float) * (size_t)n), *got = malloc(sizeof(float) * (size_t)n);
  uint16_t *got16 = malloc(sizeof(uint16_t) * (size_t)n);
  MXL_CHECK(blocks && scales && want && got && got16);
  if (!blocks || !scales || !want || !got || !got16) goto done;
  for (int64_t i = 0; i < groups * 16; i++) blocks[i] = (uint8_t)rng_next();
  for (int64_t g = 0; g < groups; g++) scales[g] = (uint8_t)(g < 256 ? (uint64_t)g : rng_next());
  for (int64_t g = 0; g < groups; g++)
    mxl_mxfp4_decode_block(blocks + 16 * g, scales[g], bias, want + 32 * g);

  uint8_t *d_blocks = be->ops->alloc(be, (size_t)groups * 16);
  uint8_t *d_scales = be->ops->alloc(be, (size_t)groups);
  float *d_out = be->ops->alloc(be, sizeof(float) * (size_t)n);
  uint16_t *d_out16 = be->ops->alloc(be, sizeof(uint16_t) * (size_t)n);
  MXL_CHECK(d_blocks && d_scales && d_out && d_out16);
  be->ops->upload(be, d_blocks, blocks, (size_t)groups * 16);
  be->ops->upload(be, d_scales, scales, (size_t)groups);
  MXL_CHECK_OK(mxl_cuda_mxfp4_dequant_f32(be, d_out, d_blocks, d_scales, bias, rows, cols));
  MXL_CHECK_OK(mxl_cuda_mxfp4_dequant_bf16(be, d_out16, d_blocks, d_scales, bias, rows, cols));
  be->ops->download(be, got, d_out, sizeof(float) * (size_t)n);
  be->ops->download(be, got16, d_out16, sizeof(uint16_t) * (size_t)n);
  MXL_CHECK_OK(be->ops->sync(be));
  int64_t bad = 0, bad16 = 0;
  for (int64_t i = 0; i < n; i++) {
    if (!same_f32(got[i], want[i]) && bad++ < 3)
      MXL_CHECK_MSG(0, "[%lld x %lld] f32 element %lld: %a vs %a", (long long)rows,
                    (long long)cols, (long long)i, got[i], want[i]);
    if (!same_bf16(got16[i], mxl_f32_to_bf16(want[i])) && bad16++ < 3)
      MXL_CHECK_MSG(0, "bf16 element %lld: %04x vs %04x", (long long)i, got16[i],
                    mxl_f32_to_bf16(want[i]));
  }
  MXL_CHECK_MSG(bad == 0 && bad16 == 0, "bias %d [%lld x %lld]: %lld f32, %lld bf16 differ",
                bias, (long long)rows, (long long)cols, (long long)bad, (long long)bad16);
  be->ops->free(be, d_blocks);
  be->ops->free(be, d_scales);
  be->ops->free(be, d_out);
  be->ops->free(be, d_out16);
done:
  free(blocks);
  free(scales);
  free(want);
  free(got);
  free(got16);
}

static void test_dequant_matches_cpu(void) {
  if (!be) MXL_SKIP("no CUDA device");
  check_dequant(1, 32, MXL_MXFP4_BIAS);
  check_dequant(3, 96, MXL_MXFP4_BIAS);
  check_dequant(17, 2880, MXL_MXFP4_BIAS);
  check_dequant(17, 2880, MXL_MXFP4_METAL_BIAS);
  check_dequant(5760, 2880, MXL_MXFP4_BIAS); /* one gate_up expert: past the grid cap */
  /* Empty: nothing is launched, nothing is read. */
  MXL_CHECK_OK(mxl_cuda_mxfp4_dequant_f32(be, NULL, NULL, NULL, MXL_MXFP4_BIAS, 0, 64));
}

/* Device quantization equals the host encoder bit for bit; a block with a
 * NaN or Inf comes back as zero codes with scale byte 255. */
static void test_quant_matches_cpu(void) {
  if (!be) MXL_SKIP("no CUDA device");
  enum { ROWS = 33, COLS = 2880, N = ROWS * COLS, G = N / 32 };
  float *x = malloc(sizeof(float) * N);
  uint8_t *want = malloc((size_t)G * 17), *got = malloc((size_t)G * 17);
  MXL_CHECK(x && want && got);
  if (!x || !want || !got) goto done;
  for (int i = 0; i < N; i++) /* every magnitude from 2^-140 to 2^100 */
    x[i] = ldexpf((float)((int64_t)(rng_next() % 20001) - 10000) / 1000.0f,
                  (int)((i / 32) % 240) - 140);
  x[5 * 32 + 7] = NAN;
  x[9 * 32] = -INFINITY;
  for (int g = 0; g < G; g++) {
    if (mxl_mxfp4_encode_block(x + 32 * g, want + 16 * g, want + 16 * G + g) != 0) {
      memset(want + 16 * g, 0, 16);
      want[16 * G + g] = 255;
    }
  }
  float *d_x = be->ops->alloc(be, sizeof(float) * N);
  uint8_t *d_out = be->ops->alloc(be, (size_t)G * 17);
  MXL_CHECK(d_x && d_out);
  be->ops->upload(be, d_x, x, sizeof(float) * N);
  MXL_CHECK_OK(mxl_cuda_mxfp4_quant(be, d_out, d_out + 16 * G, d_x, ROWS, COLS));
  be->ops->download(be, got, d_out, (size_t)G * 17);
  MXL_CHECK_OK(be->ops->sync(be));
  MXL_CHECK_MSG(!memcmp(got, want, (size_t)G * 17), "%s", "device codes differ from the host's");
  MXL_CHECK(got[16 * G + 5] == 255 && got[16 * G + 9] == 255);
  be->ops->free(be, d_x);
  be->ops->free(be, d_out);
done:
  free(x);
  free(want);
  free(got);
}

int main(void) {
  MXL_RUN(test_create);
  if (mxl_backend_cuda_create(0, &be) != MXL_OK) be = NULL;
  MXL_RUN(test_dequant_rejects_bad_arguments);
  MXL_RUN(test_memory_ops);
  MXL_RUN(test_dequant_matches_cpu);
  MXL_RUN(test_quant_matches_cpu);
  mxl_backend_destroy(be);
  return mxl_test_summary("cuda_mxfp4");
}
