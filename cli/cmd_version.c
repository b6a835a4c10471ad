#include <stdio.h>

#include "cli/cli.h"

MXL_DECLARE_COMMAND(version);

const char mxl_cmd_version_help[] = "print the version and build features";

int mxl_cmd_version(int argc, char **argv) {
  (void)argc;
  (void)argv;
  printf("mxlora %s\n%s\n", mxl_version_string(), mxl_build_features());
  return 0;
}
