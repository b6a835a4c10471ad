#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static void print_usage(const char *cmd, const char *usage_line, const mxl_opt *opts,
                        int n_opts) {
  printf("usage: mxlora %s %s\n", cmd, usage_line);
  if (n_opts) printf("\noptions:\n");
  for (int i = 0; i < n_opts; i++) printf("  %-22s %s\n", opts[i].name, opts[i].help);
}

static int set_value(const char *cmd, const mxl_opt *o, const char *value) {
  char *end = NULL;
  errno = 0;
  switch (o->type) {
  case MXL_OPT_STRING: *(const char **)o->dest = value; return 0;
  case MXL_OPT_LIST: {
    mxl_opt_list *list = o->dest;
    if (list->n == MXL_OPT_LIST_MAX) {
      fprintf(stderr, "mxlora %s: %s given more than %d times\n", cmd, o->name,
              MXL_OPT_LIST_MAX);
      return 2;
    }
    list->items[list->n++] = value;
    return 0;
  }
  case MXL_OPT_INT: {
    long v = strtol(value, &end, 10);
    if (errno || !*value || *end || v < -2147483647L || v > 2147483647L) break;
    *(int *)o->dest = (int)v;
    return 0;
  }
  case MXL_OPT_UINT64: {
    unsigned long long v = strtoull(value, &end, 10);
    if (errno || !*value || *end || value[0] == '-') break;
    *(uint64_t *)o->dest = (uint64_t)v;
    return 0;
  }
  case MXL_OPT_FLOAT: {
    float v = strtof(value, &end);
    if (errno || !*value || *end) break;
    *(float *)o->dest = v;
    return 0;
  }
  case MXL_OPT_FLAG: return 0;
  }
  fprintf(stderr, "mxlora %s: %s: '%s' is not a valid number\n", cmd, o->name, value);
  return 2;
}

int mxl_cli_parse(int argc, char **argv, const char *usage_line, const mxl_opt *opts,
                  int n_opts, const char **positional, int max_positional,
                  int *n_positional) {
  const char *cmd = argv[0];
  int npos = 0;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
      print_usage(cmd, usage_line, opts, n_opts);
      return 1;
    }
    if (strncmp(arg, "--", 2) != 0 || !strcmp(arg, "-")) {
      if (npos == max_positional) {
        fprintf(stderr, "mxlora %s: unexpected argument '%s'\n", cmd, arg);
        return 2;
      }
      positional[npos++] = arg;
      continue;
    }
    const char *eq = strchr(arg, '=');
    size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
    const mxl_opt *o = NULL;
    for (int j = 0; j < n_opts; j++)
      if (strlen(opts[j].name) == name_len && !strncmp(opts[j].name, arg, name_len))
        o = &opts[j];
    if (!o) {
      fprintf(stderr, "mxlora %s: unknown option '%.*s' (see mxlora %s --help)\n", cmd,
              (int)name_len, arg, cmd);
      return 2;
    }
    if (o->type == MXL_OPT_FLAG) {
      if (eq) {
        fprintf(stderr, "mxlora %s: %s takes no value\n", cmd, o->name);
        return 2;
      }
      *(int *)o->dest = 1;
      continue;
    }
    const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
    if (!value) {
      fprintf(stderr, "mxlora %s: %s needs a value\n", cmd, o->name);
      return 2;
    }
    int rc = set_value(cmd, o, value);
    if (rc) return rc;
  }
  if (n_positional) *n_positional = npos;
  return 0;
}

int mxl_cli_fail(const char *cmd, mxl_status status) {
  fprintf(stderr, "mxlora %s: %s: %s\n", cmd, mxl_status_name(status), mxl_last_error());
  return 1;
}
