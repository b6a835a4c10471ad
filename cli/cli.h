/* Shared pieces of the command-line tool: command declaration and option
 * parsing. Only cli/ prints to the terminal. */
#ifndef MXL_CLI_CLI_H
#define MXL_CLI_CLI_H

#include <stdio.h>
#include <stddef.h>
#include <stdint.h>

#include "mxlora.h"

/* Each cli/cmd_<name>.c starts with MXL_DECLARE_COMMAND(<name>); then
 * defines the help string and the function. */
#define MXL_DECLARE_COMMAND(name)                                                         \
  int mxl_cmd_##name(int argc, char **argv);                                              \
  extern const char mxl_cmd_##name##_help[]

typedef enum mxl_opt_type {
  MXL_OPT_STRING,  /* const char * */
  MXL_OPT_INT,     /* int: a decimal integer */
  MXL_OPT_UINT64,  /* uint64_t: a decimal integer >= 0 */
  MXL_OPT_FLOAT,   /* float: a finite decimal number */
  MXL_OPT_FLAG,    /* int, set to 1 */
  MXL_OPT_LIST,    /* mxl_opt_list: repeatable string option */
  MXL_OPT_SETTING, /* mxl_opt_settings: "key=VALUE" appended in order (key NULL: VALUE is K=V) */
} mxl_opt_type;

enum { MXL_OPT_LIST_MAX = 16, MXL_OPT_SETTINGS_MAX = 64, MXL_OPT_SETTING_SIZE = 512 };
typedef struct mxl_opt_list {
  const char *items[MXL_OPT_LIST_MAX];
  int n;
} mxl_opt_list;

/* Ordered recipe settings (train): later ones override earlier ones. */
typedef struct mxl_opt_settings {
  char items[MXL_OPT_SETTINGS_MAX][MXL_OPT_SETTING_SIZE];
  char flags[MXL_OPT_SETTINGS_MAX][64]; /* the option as written ("--rank", "--set lora.rank") */
  int n;
} mxl_opt_settings;

/* Which ends of a numeric option's range are excluded. */
enum { MXL_OPEN_MIN = 1, MXL_OPEN_MAX = 2 };

typedef struct mxl_opt {
  const char *name; /* "--model" */
  mxl_opt_type type;
  void *dest;
  const char *help; /* one line; "VALUE: what it does" */
  /* Numbers: the allowed range, both ends included unless `open` says
   * otherwise; min == max == 0 allows every value of the type. */
  double min, max;
  int open;
  const char *key; /* MXL_OPT_SETTING: the recipe key the value sets */
} mxl_opt;

/* Parses argv[1..] (argv[0] is the command name) as `--name value`,
 * `--name=value` and flags, collecting up to max_positional positional
 * arguments. Numbers are parsed strictly (the whole value, decimal, finite)
 * and checked against the option's range; a refusal names the option, the
 * value and what is allowed. Prints usage on --help. Returns 0 to go on, 1
 * when help was printed (exit 0), 2 on a bad argument (message printed;
 * exit 2). */
int mxl_cli_parse(int argc, char **argv, const char *usage_line, const mxl_opt *opts,
                  int n_opts, const char **positional, int max_positional,
                  int *n_positional);

/* Strict number syntax, shared with values inside other arguments: 1 when
 * all of `text` is a finite decimal number (no spaces, hex, inf or nan). */
int mxl_cli_parse_number(const char *text, double *out);

/* `--adapter FILE[:SCALE]`: a final ":SCALE" that is a finite number is the
 * scale (default 1); any other suffix is part of the file name unless that
 * file does not exist, in which case the scale is refused by name (":nan").
 * Returns 0, or 2 after printing why. */
int mxl_cli_adapter_spec(const char *cmd, const char *spec, char *path, size_t cap,
                         float *scale);

/* The rest of a stream as a NUL-terminated text (malloc'd; NULL when out
 * of memory). */
char *mxl_cli_read_stream(FILE *fp);

/* `--tools FILE`: the file's text (malloc'd into *out), a JSON list of
 * function tools in OpenAI's shape (the harmony renderer checks each
 * definition). Returns 0, or the exit status after printing why. */
int mxl_cli_read_tools(const char *cmd, const char *path, char **out);

/* Prints "mxlora <cmd>: <status name>: <last error>" to stderr; returns 1. */
int mxl_cli_fail(const char *cmd, mxl_status status);

#endif
