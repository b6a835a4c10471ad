/* mxlora inspect: explains a gpt-oss download (or any folder or file of
 * it, or any .safetensors file) in plain words and numbers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

MXL_DECLARE_COMMAND(inspect);

const char mxl_cmd_inspect_help[] = "explain a gpt-oss checkpoint: layouts, files, tensors, config";

static const char usage_line[] =
    "PATH [--json]\n\n"
    "PATH is a downloaded gpt-oss repository, its original/ or metal/ folder, or any file\n"
    "of it (a .safetensors shard, model.bin, config.json, tokenizer.json). Prints which\n"
    "layouts are present and what each is for, every file's role, the tensors grouped by\n"
    "role with shapes, dtypes and bytes, the parameter counts (total and active per\n"
    "token), the config and the tokenizer, and whether mxlora can load each layout.\n"
    "An adapter file (.mxla) is described too: base fingerprint, targets, rank,\n"
    "provenance and tensors (payload checksums verified); so are PEFT adapter folders\n"
    "(config, expert layout, whether mxlora import reads it), model folders written by\n"
    "mxlora merge (the MXFP4 delta-survival summary) and GGUF files (metadata, tensors,\n"
    "LoRA pairs and scaling).\n"
    "--json prints the same as one JSON document.\n"
    "Exit status: 0 when everything found is readable and consistent, 1 when anything\n"
    "is not (the problems are listed at the end of the report), 2 for a bad command line.";

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && !strcmp(s + a - b, suffix);
}

/* The header's description, then the payloads' verification: a corrupted
 * payload still shows what the header says (and exits 1). */
static mxl_status describe_adapter(const char *path, int json, char **report) {
  mxl_adapter *a = NULL;
  mxl_status st = mxl_adapter_open(path, &a);
  if (st == MXL_OK) st = mxl_adapter_describe(a, json, report);
  if (st == MXL_OK) st = mxl_adapter_verify(a);
  mxl_adapter_close(a);
  return st;
}

int mxl_cmd_inspect(int argc, char **argv) {
  int json = 0;
  const mxl_opt opts[] = {{"--json", MXL_OPT_FLAG, &json, "print JSON instead of text"}};
  const char *pos[1];
  int npos = 0;
  int rc = mxl_cli_parse(argc, argv, usage_line, opts, 1, pos, 1, &npos);
  if (rc) return rc == 1 ? 0 : 2;
  if (npos != 1) {
    fprintf(stderr, "mxlora inspect: give a path (see mxlora inspect --help)\n");
    return 2;
  }
  /* Like fsck: the whole report, then exit 1 when anything in it was found
   * unreadable or inconsistent. */
  char *report = NULL;
  int problems = 0;
  mxl_status st = ends_with(pos[0], ".mxla") ? describe_adapter(pos[0], json, &report)
                                             : mxl_inspect_checked(pos[0], json, &report,
                                                                   &problems);
  if (report) {
    fputs(report, stdout);
    if (json) fputc('\n', stdout);
    free(report);
  }
  if (st != MXL_OK) return mxl_cli_fail("inspect", st);
  if (problems) {
    fprintf(stderr, "mxlora inspect: %d problem%s found (listed above)\n", problems,
            problems > 1 ? "s" : "");
    return 1;
  }
  return 0;
}
