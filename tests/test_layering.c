/* The top floor of the architecture (ARCHITECTURE.md: server/ and cli/)
 * is written against the public API alone: every quoted #include of its
 * files names the public header (mxlora.h, mxlora/...), a core/ utility or
 * a file of the same folder. A missing function belongs in include/, so
 * that what the server needs is what any program can use. */
#include <dirent.h>
#include <stdio.h>
#include <string.h>

#include "test.h"

static int starts_with(const char *s, const char *prefix) {
  return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* 1 when a quoted include of a file in `folder` respects the floor. */
static int allowed(const char *folder, const char *inc) {
  char own[64];
  snprintf(own, sizeof own, "%s/", folder);
  return !strcmp(inc, "mxlora.h") || starts_with(inc, "mxlora/") || starts_with(inc, "core/") ||
         starts_with(inc, own) || (!strcmp(folder, "cli") && !strcmp(inc, "cli_commands.h"));
}

/* Checks one file; returns how many quoted includes it has. */
static int check_file(const char *folder, const char *path) {
  FILE *f = fopen(path, "r");
  MXL_CHECK_MSG(f != NULL, "%s: cannot be read", path);
  if (!f) return 0;
  char line[512];
  int n = 0, lineno = 0;
  while (fgets(line, sizeof line, f)) {
    lineno++;
    const char *p = line;
    while (*p == ' ' || *p == '\t') p++;
    if (!starts_with(p, "#include \"")) continue;
    char inc[256];
    if (sscanf(p + strlen("#include \""), "%255[^\"]", inc) != 1) continue;
    n++;
    MXL_CHECK_MSG(allowed(folder, inc), "%s:%d: includes \"%s\": %s/ uses the public API "
                  "(include/) and core/ only", path, lineno, inc, folder);
  }
  fclose(f);
  return n;
}

static void check_folder(const char *folder) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/%s", MXL_SOURCE_DIR, folder);
  DIR *d = opendir(dir);
  MXL_CHECK_MSG(d != NULL, "%s: cannot be listed", dir);
  if (!d) return;
  int files = 0, includes = 0;
  for (struct dirent *e; (e = readdir(d));) {
    size_t len = strlen(e->d_name);
    if (len < 3 || (strcmp(e->d_name + len - 2, ".c") && strcmp(e->d_name + len - 2, ".h")))
      continue;
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    includes += check_file(folder, path);
    files++;
  }
  closedir(d);
  printf("  %s/: %d files, %d quoted includes\n", folder, files, includes);
  MXL_CHECK_MSG(files > 0 && includes > 0, "%s: nothing was checked", dir);
}

static void test_server_uses_public_api(void) { check_folder("server"); }
static void test_cli_uses_public_api(void) { check_folder("cli"); }

int main(void) {
  MXL_RUN(test_server_uses_public_api);
  MXL_RUN(test_cli_uses_public_api);
  return mxl_test_summary("layering");
}
