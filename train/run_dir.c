#include "train/run_dir.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/status.h"

static const char LOCK_NAME[] = ".mxlora.lock";

/* The files a run writes: exact names, and numbered copies by prefix and
 * suffix (checkpoint-000100.mxstate, adapter-000100.mxla). */
static const char *const run_files[] = {"adapter.mxla", "checkpoint.mxstate", "metrics.jsonl",
                                        "loss.svg", "summary.json", NULL};

static int is_numbered_copy(const char *name) {
  static const char *const kinds[][2] = {{"checkpoint-", ".mxstate"}, {"adapter-", ".mxla"}};
  for (int k = 0; k < 2; k++) {
    size_t lp = strlen(kinds[k][0]), ls = strlen(kinds[k][1]), n = strlen(name);
    if (n <= lp + ls || strncmp(name, kinds[k][0], lp) || strcmp(name + n - ls, kinds[k][1]))
      continue;
    int digits = 1;
    for (size_t i = lp; i < n - ls; i++) digits &= isdigit((unsigned char)name[i]) != 0;
    if (digits) return 1;
  }
  return 0;
}

static int is_run_file(const char *name) {
  for (int i = 0; run_files[i]; i++)
    if (!strcmp(name, run_files[i])) return 1;
  return is_numbered_copy(name);
}

/* The pid of a save's temporary (NAME.tmp.PID, NAME.pending.PID), or 0. */
static long temp_owner(const char *name) {
  const char *dot = strrchr(name, '.');
  if (!dot || !dot[1] || dot == name) return 0;
  for (const char *p = dot + 1; *p; p++)
    if (!isdigit((unsigned char)*p)) return 0;
  size_t stem = (size_t)(dot - name);
  int tmp = stem >= 4 && !strncmp(dot - 4, ".tmp", 4);
  int pending = stem >= 8 && !strncmp(dot - 8, ".pending", 8);
  return tmp || pending ? strtol(dot + 1, NULL, 10) : 0;
}

static int process_gone(long pid) { return pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH; }

/* Walks the folder once: counts run files, removes stale temporaries (and,
 * when `remove_runs`, the run files). */
static mxl_status scan(const char *path, int remove_runs, int *runs, int *removed,
                       char *first, size_t cap) {
  DIR *d = opendir(path);
  if (!d) return mxl_errorf(MXL_ERR_IO, "%s: cannot list: %s", path, strerror(errno));
  *runs = 0;
  mxl_status st = MXL_OK;
  for (struct dirent *e; st == MXL_OK && (e = readdir(d));) {
    int run = is_run_file(e->d_name), stale = process_gone(temp_owner(e->d_name));
    if (!run && !stale) continue;
    if (run && !remove_runs) {
      if (!(*runs)++) snprintf(first, cap, "%s", e->d_name);
      continue;
    }
    char *file = mxl_path_join(path, e->d_name);
    if (!file) st = mxl_errorf(MXL_ERR_MEMORY, "out of memory");
    else if (unlink(file) != 0 && errno != ENOENT)
      st = mxl_errorf(MXL_ERR_IO, "%s: cannot remove: %s", file, strerror(errno));
    else if (stale)
      (*removed)++;
    free(file);
  }
  closedir(d);
  return st;
}

static mxl_status take_lock(mxl_run_dir *d) {
  char *lock = mxl_path_join(d->path, LOCK_NAME);
  if (!lock) return mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    mxl_status st = mxl_errorf(MXL_ERR_IO, "%s: cannot create: %s", lock, strerror(errno));
    free(lock);
    return st;
  }
  free(lock);
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = "";
    ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
    pid[n > 0 ? n : 0] = '\0';
    pid[strcspn(pid, "\n")] = '\0';
    close(fd);
    return mxl_errorf(MXL_ERR_STATE,
                      "%s: in use by another mxlora train (pid %s); wait for it to end or "
                      "choose another out folder", d->path, pid[0] ? pid : "unknown");
  }
  char pid[32];
  int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
    /* The pid is only for the message of a second trainer. */
  }
  d->lock_fd = fd;
  return MXL_OK;
}

mxl_status mxl_run_dir_open(const char *path, int resume, int overwrite, mxl_run_dir *out,
                            int *removed) {
  memset(out, 0, sizeof *out);
  out->lock_fd = -1;
  *removed = 0;
  MXL_TRY(mxl_make_dirs(path));
  out->path = strdup(path);
  if (!out->path) return mxl_errorf(MXL_ERR_MEMORY, "out of memory");
  mxl_status st = take_lock(out);
  int runs = 0;
  char first[256] = "";
  if (st == MXL_OK) st = scan(path, overwrite, &runs, removed, first, sizeof first);
  if (st == MXL_OK && runs && !resume)
    st = mxl_errorf(MXL_ERR_STATE,
                    "%s already holds a run (%s%s): continue it with --resume, replace it with "
                    "--overwrite, or choose another out folder",
                    path, first, runs > 1 ? " and more" : "");
  if (st != MXL_OK) mxl_run_dir_close(out);
  return st;
}

void mxl_run_dir_close(mxl_run_dir *d) {
  if (d->lock_fd >= 0) close(d->lock_fd); /* releases the flock */
  free(d->path);
  d->path = NULL;
  d->lock_fd = -1;
}

char *mxl_run_dir_pending(const char *dir, const char *name) {
  char leaf[256];
  snprintf(leaf, sizeof leaf, "%s.pending.%ld", name, (long)getpid());
  return mxl_path_join(dir, leaf);
}

mxl_status mxl_run_dir_check_space(const char *path, uint64_t bytes, uint64_t largest,
                                   const char *what) {
  struct rlimit lim;
  if (getrlimit(RLIMIT_FSIZE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY &&
      (uint64_t)lim.rlim_cur < largest)
    return mxl_errorf(MXL_ERR_IO,
                      "%s: the file size limit (ulimit -f) is %.1f MB, below the %.1f MB of the "
                      "largest file a save writes; raise it before training",
                      path, lim.rlim_cur / 1e6, largest / 1e6);
  struct statvfs fs;
  if (statvfs(path, &fs) != 0)
    return mxl_errorf(MXL_ERR_IO, "%s: cannot read the free space: %s", path, strerror(errno));
  uint64_t free_bytes = (uint64_t)fs.f_bavail * (uint64_t)fs.f_frsize;
  if (free_bytes < bytes)
    return mxl_errorf(MXL_ERR_IO,
                      "%s: not enough free space: saving needs about %.1f MB (%s), %.1f MB are "
                      "free; free some space or choose another out folder",
                      path, bytes / 1e6, what, free_bytes / 1e6);
  return MXL_OK;
}
