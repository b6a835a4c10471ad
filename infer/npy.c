#include "infer/npy.h"

#include <stdio.h>
#include <string.h>

#include "core/fileio.h"
#include "core/status.h"

mxl_status mxl_npy_write_f32(const char *path, const float *data, size_t rows, size_t cols) {
  char header[256];
  int n = snprintf(header + 10, sizeof header - 10,
                   "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu, %zu), }", rows,
                   cols);
  size_t total = 10 + (size_t)n + 1;
  size_t padded = (total + 63) & ~(size_t)63;
  memset(header + 10 + n, ' ', padded - total);
  header[padded - 1] = '\n';
  memcpy(header, "\x93NUMPY\x01\x00", 8);
  header[8] = (char)((padded - 10) & 0xff);
  header[9] = (char)((padded - 10) >> 8);
  mxl_atomic_file f;
  MXL_TRY(mxl_atomic_file_begin(path, &f));
  mxl_status st = mxl_atomic_file_write(&f, header, padded);
  if (st == MXL_OK) st = mxl_atomic_file_write(&f, data, rows * cols * sizeof(float));
  if (st != MXL_OK) {
    mxl_atomic_file_abort(&f);
    return st;
  }
  return mxl_atomic_file_commit(&f);
}
