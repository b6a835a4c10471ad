/* The CPU stand-ins for the cuDNN graph-API calls of the CUDA backend
 * (tests/cuda/cudnn_standin.cpp), linked into the emulated backend, and
 * the knobs tests turn. Test code. */
#ifndef MXL_TESTS_CUDA_CUDNN_STANDIN_H
#define MXL_TESTS_CUDA_CUDNN_STANDIN_H

#ifdef __cplusplus
extern "C" {
#endif

/* Why the last refused call was refused ("" before any). */
const char *mxl_cudnn_standin_last_error(void);

/* 0: the heuristic offers no engine for any graph (a library that
 * supports nothing of ours); 1 (default): engines for every graph within
 * the documented limits. */
void mxl_cudnn_standin_offer_engines(int yes);

/* Heuristic queries answered so far (the support check's cache). */
long mxl_cudnn_standin_heuristic_queries(void);

/* Descriptors created and not yet destroyed (leak check). */
long mxl_cudnn_standin_live_descriptors(void);

#ifdef __cplusplus
}
#endif

#endif
