/* Shared pieces of the command-line tool: command declaration and option
 * parsing. Only cli/ prints to the terminal. */
#ifndef MXL_CLI_CLI_H
#define MXL_CLI_CLI_H

#include <stdint.h>

#include "mxlora.h"

/* Each cli/cmd_<name>.c starts with MXL_DECLARE_COMMAND(<name>); then
 * defines the help string and the function. */
#define MXL_DECLARE_COMMAND(name)                                                         \
  int mxl_cmd_##name(int argc, char **argv);                                              \
  extern const char mxl_cmd_##name##_help[]

typedef enum mxl_opt_type {
  MXL_OPT_STRING, /* const char * */
  MXL_OPT_INT,    /* int */
  MXL_OPT_UINT64, /* uint64_t */
  MXL_OPT_FLOAT,  /* float */
  MXL_OPT_FLAG,   /* int, set to 1 */
  MXL_OPT_LIST,   /* mxl_opt_list: repeatable string option */
} mxl_opt_type;

enum { MXL_OPT_LIST_MAX = 16 };
typedef struct mxl_opt_list {
  const char *items[MXL_OPT_LIST_MAX];
  int n;
} mxl_opt_list;

typedef struct mxl_opt {
  const char *name; /* "--model" */
  mxl_opt_type type;
  void *dest;
  const char *help; /* one line; "VALUE: what it does" */
} mxl_opt;

/* Parses argv[1..] (argv[0] is the command name) as `--name value`,
 * `--name=value` and flags, collecting up to max_positional positional
 * arguments. Prints usage on --help. Returns 0 to go on, 1 when help was
 * printed (exit 0), 2 on a bad argument (message printed; exit 2). */
int mxl_cli_parse(int argc, char **argv, const char *usage_line, const mxl_opt *opts,
                  int n_opts, const char **positional, int max_positional,
                  int *n_positional);

/* Prints "mxlora <cmd>: <status name>: <last error>" to stderr; returns 1. */
int mxl_cli_fail(const char *cmd, mxl_status status);

#endif
