#include "core/status.h"
#include "kernels/ops.h"

void mxl_backend_destroy(mxl_backend *be) {
  if (be) be->ops->destroy(be);
}

#ifndef MXL_HAVE_CUDA
mxl_status mxl_backend_cuda_create(int device, mxl_backend **out) {
  (void)device;
  *out = NULL;
  return mxl_errorf(MXL_ERR_UNSUPPORTED,
                    "this mxlora was built without the CUDA backend (configure with nvcc "
                    "present, or -DMXL_CUDA=ON)");
}
#endif
