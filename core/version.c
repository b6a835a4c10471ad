#include "mxlora.h"

#define MXL_STR2(x) #x
#define MXL_STR(x) MXL_STR2(x)

const char *mxl_version_string(void) {
  return MXL_STR(MXL_VERSION_MAJOR) "." MXL_STR(MXL_VERSION_MINOR) "." MXL_STR(
      MXL_VERSION_PATCH);
}
