/* mxlora: one binary, one subcommand per cli/cmd_<name>.c. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

#define MXL_COMMAND(name) MXL_DECLARE_COMMAND(name);
#include "cli_commands.h"
#undef MXL_COMMAND

typedef struct command {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *help;
} command;

static const command commands[] = {
#define MXL_COMMAND(name) {#name, mxl_cmd_##name, mxl_cmd_##name##_help},
#include "cli_commands.h"
#undef MXL_COMMAND
};

static void usage(FILE *out) {
  fprintf(out,
          "mxlora %s — LoRA fine-tuning for gpt-oss on its MXFP4 weights\n\n"
          "usage: mxlora <command> [options]   (mxlora <command> --help for details)\n\n"
          "commands:\n",
          mxl_version_string());
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].help);
}

static void print_warning(void *user, const char *message) {
  (void)user;
  fprintf(stderr, "mxlora: warning: %s\n", message);
}

int main(int argc, char **argv) {
  mxl_wait_passively(argv); /* see mxlora.h: spinning threads stall a shared machine */
  mxl_set_warning_handler(print_warning, NULL);
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
      !strcmp(argv[1], "help")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("mxlora %s\n", mxl_version_string());
    return 0;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "mxlora: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}
