/* The CPU stand-ins for the cuBLASLt calls of the CUDA backend
 * (tests/cuda/cublaslt_standin.cpp), linked into the emulated backend.
 * Test code. */
#ifndef MXL_TESTS_CUDA_CUBLASLT_STANDIN_H
#define MXL_TESTS_CUDA_CUBLASLT_STANDIN_H

#ifdef __cplusplus
extern "C" {
#endif

/* Why the last refused call was refused ("" before any). */
const char *mxl_lt_standin_last_error(void);

#ifdef __cplusplus
}
#endif

#endif
