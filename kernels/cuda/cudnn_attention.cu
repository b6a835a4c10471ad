/* cuDNN attention for the device build: the graph-API code of
 * cudnn_attention.cuh (shared with the emulator build, where the calls go
 * to CPU stand-ins) behind the backend's C++ entry points. */
#include "kernels/cuda/backend_internal.cuh"
#include "kernels/cuda/cudnn_attention.cuh"

void mxl_cuda_dnn_init(mxl_cuda_state *st) {
  mxl_cu_dnn_init(st, st->dnn_off, sizeof st->dnn_off);
}

void mxl_cuda_dnn_release(mxl_cuda_state *st) { mxl_cu_dnn_release(st); }

void mxl_cuda_dnn_describe(const mxl_cuda_state *st, char *buf, size_t size) {
  mxl_cu_dnn_describe(st, buf, size, st ? st->dnn_off : "no device");
}
