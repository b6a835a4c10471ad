/* Adapter files named by clients stay inside --adapter-dir. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "server/api.h"

int mxl_api_resolve_adapter_path(const char *dir, const char *path, char **out,
                                 mxl_api_error *e) {
  *out = NULL;
  if (!dir)
    return mxl_api_fail(e, 403, "lora_path", "loading adapters by path is disabled: the server "
                        "was started without --adapter-dir");
  char *root = realpath(dir, NULL);
  if (!root)
    return mxl_api_fail(e, 500, NULL, "the adapter directory %s: %s", dir, strerror(errno));
  char *joined = path[0] == '/' ? strdup(path) : mxl_path_join(root, path);
  char *real = joined ? realpath(joined, NULL) : NULL;
  int err = errno;
  int rc = 0;
  size_t n = strlen(root);
  /* "/" as the directory: everything is inside. */
  int inside = real && !strncmp(real, root, n) && (real[n] == '/' || (n == 1 && root[0] == '/'));
  if (!joined) {
    rc = mxl_api_fail(e, 503, NULL, "out of memory");
  } else if (!real && path[0] == '/' && strncmp(path, root, n)) {
    /* Said before "no such file", so as not to tell what exists outside. */
    rc = mxl_api_fail(e, 403, "lora_path", "lora_path: %s is outside the adapter directory",
                      path);
  } else if (!real && (err == ENOENT || err == ENOTDIR)) {
    rc = mxl_api_fail(e, 404, "lora_path", "lora_path: %s: no such file", path);
  } else if (!real) {
    rc = mxl_api_fail(e, 400, "lora_path", "lora_path: %s: %s", path, strerror(err));
  } else if (!inside) {
    rc = mxl_api_fail(e, 403, "lora_path", "lora_path: %s is outside the adapter directory",
                      path);
  } else if (mxl_path_is_dir(real)) {
    rc = mxl_api_fail(e, 400, "lora_path", "lora_path: %s is a directory, not an adapter file",
                      path);
  }
  if (rc == 0) {
    *out = real;
    real = NULL;
  }
  free(real);
  free(joined);
  free(root);
  return rc;
}
