/* The one argument parser of every mxlora command (cli/cli.h). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

static void print_usage(const char *cmd, const char *usage_line, const mxl_opt *opts,
                        int n_opts) {
  printf("usage: mxlora %s %s\n", cmd, usage_line);
  if (n_opts) printf("\noptions (--name VALUE or --name=VALUE):\n");
  for (int i = 0; i < n_opts; i++) printf("  %-22s %s\n", opts[i].name, opts[i].help);
}

/* ------------------------------------------------------------ numbers */

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* [+-]digits: nothing else, no spaces. */
static int integer_syntax(const char *s) {
  if (*s == '+' || *s == '-') s++;
  if (!is_digit(*s)) return 0;
  while (is_digit(*s)) s++;
  return *s == '\0';
}

/* [+-](digits[.digits*] | .digits)[(e|E)[+-]digits]: what strtod reads in
 * decimal, without hex, inf, nan or surrounding spaces. */
static int decimal_syntax(const char *s) {
  if (*s == '+' || *s == '-') s++;
  int digits = 0;
  while (is_digit(*s)) s++, digits++;
  if (*s == '.') {
    s++;
    while (is_digit(*s)) s++, digits++;
  }
  if (!digits) return 0;
  if (*s == 'e' || *s == 'E') {
    s++;
    if (*s == '+' || *s == '-') s++;
    if (!is_digit(*s)) return 0;
    while (is_digit(*s)) s++;
  }
  return *s == '\0';
}

int mxl_cli_parse_number(const char *text, double *out) {
  if (!decimal_syntax(text)) return 0;
  double v = strtod(text, NULL);
  if (!isfinite(v)) return 0;
  *out = v;
  return 1;
}

static int has_range(const mxl_opt *o) { return o->min != 0 || o->max != 0; }

static int in_range(const mxl_opt *o, double v) {
  if (!has_range(o)) return 1;
  int above = o->open & MXL_OPEN_MIN ? v > o->min : v >= o->min;
  int below = o->open & MXL_OPEN_MAX ? v < o->max : v <= o->max;
  return above && below;
}

static int out_of_range(const char *cmd, const mxl_opt *o, const char *value) {
  fprintf(stderr, "mxlora %s: %s %s is out of range: allowed %s%.10g, %.10g%s\n", cmd, o->name,
          value, o->open & MXL_OPEN_MIN ? "(" : "[", o->min, o->max,
          o->open & MXL_OPEN_MAX ? ")" : "]");
  return 2;
}

static int not_a_number(const char *cmd, const mxl_opt *o, const char *value, const char *what) {
  fprintf(stderr, "mxlora %s: %s: '%s' is not a valid number (expected %s)\n", cmd, o->name,
          value, what);
  return 2;
}

/* Integers: the type's own limits, then the option's range. */
static int set_integer(const char *cmd, const mxl_opt *o, const char *value) {
  int is_int = o->type == MXL_OPT_INT;
  if (!integer_syntax(value) || (!is_int && value[0] == '-'))
    return not_a_number(cmd, o, value, is_int ? "a whole number" : "a whole number >= 0");
  errno = 0;
  if (is_int) {
    long long v = strtoll(value, NULL, 10);
    if (errno || v < -2147483647LL - 1 || v > 2147483647LL || !in_range(o, (double)v))
      return has_range(o) ? out_of_range(cmd, o, value)
                          : not_a_number(cmd, o, value, "a 32-bit whole number");
    *(int *)o->dest = (int)v;
  } else {
    unsigned long long v = strtoull(value, NULL, 10);
    if (errno) return not_a_number(cmd, o, value, "a 64-bit whole number");
    if (!in_range(o, (double)v)) return out_of_range(cmd, o, value);
    *(uint64_t *)o->dest = (uint64_t)v;
  }
  return 0;
}

static int set_float(const char *cmd, const mxl_opt *o, const char *value) {
  double v;
  if (!mxl_cli_parse_number(value, &v) || !isfinite((float)v))
    return not_a_number(cmd, o, value, "a finite decimal number");
  if (!in_range(o, v)) return out_of_range(cmd, o, value);
  *(float *)o->dest = (float)v;
  return 0;
}

static int add_setting(const char *cmd, const mxl_opt *o, const char *value) {
  mxl_opt_settings *s = o->dest;
  if (s->n == MXL_OPT_SETTINGS_MAX) {
    fprintf(stderr, "mxlora %s: more than %d settings\n", cmd, MXL_OPT_SETTINGS_MAX);
    return 2;
  }
  const char *eq = strchr(value, '=');
  if (!o->key && (!eq || eq == value)) {
    fprintf(stderr, "mxlora %s: %s '%s': expected KEY=VALUE\n", cmd, o->name, value);
    return 2;
  }
  int n = o->key ? snprintf(s->items[s->n], MXL_OPT_SETTING_SIZE, "%s=%s", o->key, value)
                 : snprintf(s->items[s->n], MXL_OPT_SETTING_SIZE, "%s", value);
  if (n < 0 || n >= MXL_OPT_SETTING_SIZE) {
    fprintf(stderr, "mxlora %s: %s: the value is longer than %d bytes\n", cmd, o->name,
            MXL_OPT_SETTING_SIZE - 16);
    return 2;
  }
  if (o->key) snprintf(s->flags[s->n], sizeof s->flags[0], "%s", o->name);
  else snprintf(s->flags[s->n], sizeof s->flags[0], "%s %.*s", o->name, (int)(eq - value), value);
  s->n++;
  return 0;
}

static int set_value(const char *cmd, const mxl_opt *o, const char *value) {
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
  case MXL_OPT_INT:
  case MXL_OPT_UINT64: return set_integer(cmd, o, value);
  case MXL_OPT_FLOAT: return set_float(cmd, o, value);
  case MXL_OPT_SETTING: return add_setting(cmd, o, value);
  case MXL_OPT_FLAG: return 0;
  }
  return 2;
}

/* ------------------------------------------------------------ argv */

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

/* ------------------------------------------------------------ --adapter */

int mxl_cli_adapter_spec(const char *cmd, const char *spec, char *path, size_t cap,
                         float *scale) {
  *scale = 1.0f;
  snprintf(path, cap, "%s", spec);
  const char *colon = strrchr(spec, ':');
  if (!colon || !colon[1] || strchr(colon, '/')) return 0;
  double v;
  if (mxl_cli_parse_number(colon + 1, &v) && isfinite((float)v)) {
    *scale = (float)v;
    snprintf(path, cap, "%.*s", (int)(colon - spec), spec);
    return 0;
  }
  if (access(spec, F_OK) == 0) return 0; /* a file name with a colon */
  fprintf(stderr,
          "mxlora %s: --adapter %s: '%s' is not a valid scale (expected FILE or FILE:SCALE "
          "with a finite decimal SCALE, e.g. %.*s:0.5)\n",
          cmd, spec, colon + 1, (int)(colon - spec), spec);
  return 2;
}

int mxl_cli_fail(const char *cmd, mxl_status status) {
  fprintf(stderr, "mxlora %s: %s: %s\n", cmd, mxl_status_name(status), mxl_last_error());
  return 1;
}

char *mxl_cli_read_stream(FILE *fp) {
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  for (size_t got; buf && (got = fread(buf + n, 1, cap - n - 1, fp)) > 0;) {
    n += got;
    if (cap - n < 2) {
      char *grown = realloc(buf, cap *= 2);
      if (!grown) free(buf);
      buf = grown;
    }
  }
  if (buf) buf[n] = '\0';
  return buf;
}

int mxl_cli_read_tools(const char *cmd, const char *path, char **out) {
  *out = NULL;
  FILE *fp = fopen(path, "rb");
  if (!fp) {
    fprintf(stderr, "mxlora %s: --tools %s: %s\n", cmd, path, strerror(errno));
    return 1;
  }
  char *text = mxl_cli_read_stream(fp);
  fclose(fp);
  cJSON *list = text ? cJSON_Parse(text) : NULL;
  int ok = cJSON_IsArray(list);
  cJSON_Delete(list);
  if (!ok) {
    fprintf(stderr, "mxlora %s: --tools %s: expected a JSON list of function tools ([{\"type\": "
            "\"function\", \"function\": {\"name\": ...}}])\n", cmd, path);
    free(text);
    return 2;
  }
  *out = text;
  return 0;
}
