/* Options of the optimized CPU backend beyond the op table (kernels/ops.h),
 * for tests and benchmarks. */
#ifndef MXL_KERNELS_CPU_H
#define MXL_KERNELS_CPU_H

#include "kernels/ops.h"

/* Exact mode: 1 keeps fp32 activations inside the matmuls (each activation
 * is split into two bf16 halves, so products are exact and accumulate in
 * fp32: about fp32 accuracy, half the speed); 0 (the default) rounds
 * activations to bf16 (about 1e-3 relative error, full speed). The
 * environment variable MXL_CPU_EXACT=1 sets it at creation. `be` must be a
 * CPU backend. */
void mxl_backend_cpu_set_exact(mxl_backend *be, int exact);

/* The instruction set the backend chose: "avx512bf16+amx", "avx512bf16",
 * "avx2" or "generic". MXL_CPU_ISA=generic|avx2|avx512bf16 at creation
 * forces a lower one. */
const char *mxl_backend_cpu_isa(const mxl_backend *be);

/* oneDNN for the bf16 products: 0 off (hand-written kernels only), 1 for
 * products of at least 32 activation rows, 2 for every product it serves.
 * The default (also MXL_CPU_DNNL=0|1 at creation, 1 meaning "every") is
 * on only where oneDNN has AMX, where it wins. Returns the mode in effect
 * (0 when this build or machine has no oneDNN). */
int mxl_backend_cpu_set_dnnl(mxl_backend *be, int mode);

/* 1 when attention's block products take bf16 operands (fp32
 * accumulation) for prefill and training: on hosts whose native bf16 dot
 * products outrun their fp32 FMAs (measured once per process; also
 * MXL_CPU_BF16_ATTENTION=0|1), outside the exact mode. Decode (few
 * queries) stays fp32. */
int mxl_backend_cpu_bf16_attention(const mxl_backend *be);

/* Forces attention's bf16 operands on or off (on only where the ISA has
 * bf16 dot products); returns the setting in effect. */
int mxl_backend_cpu_set_bf16_attention(mxl_backend *be, int on);

/* 1 when the MXFP4 products of decode and of few rows (up to 12 per
 * expert) run on integer dot products, the bf16 activations written in
 * 24-bit fixed point per block of 32 (cpu_q8_avx512.c: exact but for
 * elements under 2^-15 of their block's largest), 0 when they decode the
 * weights to bf16: on where the ISA has the integer kernel (AVX-512 VNNI;
 * also MXL_CPU_INT_DECODE=0|1), outside the exact mode. The setter returns
 * the setting in effect (on only where the ISA has the kernel). */
int mxl_backend_cpu_int_decode(const mxl_backend *be);
int mxl_backend_cpu_set_int_decode(mxl_backend *be, int on);

/* One line naming the path each product family takes on this backend. */
const char *mxl_backend_cpu_paths(const mxl_backend *be);

#endif
