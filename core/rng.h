/* SplitMix64 (Steele, Lea and Flood, 2014, with the constants of Vigna's
 * reference code), the one small generator of mxlora: data order, LoRA
 * initialisation, the tiny model's weights, and the dropout mask, which
 * every backend must draw bit for bit alike. Header-only; compiles as C, as
 * C++ (the CUDA emulator) and as CUDA host and device code. */
#ifndef MXL_CORE_RNG_H
#define MXL_CORE_RNG_H

#include <stdint.h>

#ifndef MXL_HD
#ifdef __CUDACC__
#define MXL_HD __host__ __device__ __forceinline__
#else
#define MXL_HD static inline
#endif
#endif

#define MXL_SPLITMIX64_GAMMA 0x9E3779B97F4A7C15ull

/* The output function: a bijective mix of all 64 bits. */
MXL_HD uint64_t mxl_splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* The next output of the generator whose state is *state (advanced). */
MXL_HD uint64_t mxl_splitmix64(uint64_t *state) {
  return mxl_splitmix64_mix(*state += MXL_SPLITMIX64_GAMMA);
}

/* The output of one step from state x (x itself unchanged): a well-mixed
 * 64-bit hash of x, for keys derived from several numbers. */
MXL_HD uint64_t mxl_splitmix64_hash(uint64_t x) {
  return mxl_splitmix64_mix(x + MXL_SPLITMIX64_GAMMA);
}

/* Output i+1 of the generator seeded with `seed`, without stepping through
 * the first i: counter-based, so parallel threads draw element i alike. */
MXL_HD uint64_t mxl_splitmix64_at(uint64_t seed, uint64_t i) {
  return mxl_splitmix64_mix(seed + (i + 1) * MXL_SPLITMIX64_GAMMA);
}

/* The top 24 bits as a float in [0, 1), exact. */
MXL_HD float mxl_splitmix_unit24(uint64_t x) { return (float)(x >> 40) * 0x1p-24f; }

/* The next output as a uniform float in [0, 1). */
MXL_HD float mxl_splitmix_uniform(uint64_t *state) {
  return mxl_splitmix_unit24(mxl_splitmix64(state));
}

/* An unbiased integer in [0, n), n >= 1: rejection of the few outputs below
 * 2^64 mod n, which would favour small results. */
MXL_HD uint64_t mxl_splitmix64_below(uint64_t *state, uint64_t n) {
  uint64_t threshold = (0 - n) % n, r;
  do r = mxl_splitmix64(state);
  while (r < threshold);
  return r % n;
}

/* The dropout keep decision of kernels/ops.h, identical on every backend:
 * element i is kept when the top 24 bits of output i+1 of the generator
 * seeded with `seed`, as u in [0, 1), reach p. */
MXL_HD int mxl_dropout_keep(uint64_t seed, uint64_t i, float p) {
  return mxl_splitmix_unit24(mxl_splitmix64_at(seed, i)) >= p;
}

#endif
