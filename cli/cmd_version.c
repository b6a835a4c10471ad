#include <stdio.h>

#include "cli/cli.h"

MXL_DECLARE_COMMAND(version);

const char mxl_cmd_version_help[] = "print the version and build features";

int mxl_cmd_version(int argc, char **argv) {
  (void)argc;
  (void)argv;
  printf("mxlora %s\n%s\ncpu products: %s\n", mxl_version_string(), mxl_build_features(),
         mxl_cpu_paths());
  return 0;
}
