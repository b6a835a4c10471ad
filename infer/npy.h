/* Writes a float32 matrix as a NumPy .npy file (format 1.0), atomically:
 * magic "\x93NUMPY", version 1.0, u16 header length, a Python dict literal
 * {'descr': '<f4', 'fortran_order': False, 'shape': (rows, cols), }
 * padded with spaces to a 64-byte boundary and ended by '\n', then the
 * data in C order. np.load reads it. */
#ifndef MXL_INFER_NPY_H
#define MXL_INFER_NPY_H

#include <stddef.h>

#include "mxlora.h"

mxl_status mxl_npy_write_f32(const char *path, const float *data, size_t rows, size_t cols);

#endif
