/* core/hugemem: files copied into 2 MB pages step by step (with and without
 * dropping the page cache behind), MemAvailable read from /proc/meminfo. */
#include <fcntl.h>
#include <unistd.h>

#include "core/hugemem.h"
#include "core/rng.h"
#include "test.h"

static char dir[64];

/* dir/name with `size` pseudo-random bytes (seed); the bytes in *out. */
static void write_file(const char *name, size_t size, uint64_t seed, char *path, size_t cap,
                       uint8_t **out) {
  snprintf(path, cap, "%s/%s", dir, name);
  uint8_t *b = malloc(size ? size : 1);
  for (size_t i = 0; i < size; i++) b[i] = (uint8_t)(mxl_splitmix64_at(seed, i) >> 56);
  FILE *fp = fopen(path, "wb");
  MXL_CHECK(fp && fwrite(b, 1, size, fp) == size);
  if (fp) fclose(fp);
  *out = b;
}

static size_t progressed;
static void on_step(void *user, size_t bytes) {
  (void)user;
  progressed += bytes;
}

/* The copy equals the file byte for byte, whatever the step and whether the
 * cache is dropped behind it (the last step ends inside a 2 MB page; the rest
 * of that page is zeros), and starts on a 2 MB boundary. */
static void test_copy_equals_file(void) {
  const size_t size = 5 * (size_t)MXL_HUGE_PAGE + 12345;
  char path[128];
  uint8_t *want;
  write_file("w.bin", size, 7, path, sizeof path, &want);
  const size_t steps[] = {0, MXL_HUGE_PAGE, 2 * MXL_HUGE_PAGE};
  for (int s = 0; s < 3; s++)
    for (int drop = 0; drop <= 1; drop++) {
      progressed = 0;
      mxl_huge_read how = {steps[s], drop, on_step, NULL};
      void *p = NULL;
      MXL_CHECK_OK(mxl_huge_read_file(path, size, &how, &p));
      MXL_CHECK(p && (uintptr_t)p % MXL_HUGE_PAGE == 0);
      MXL_CHECK_MSG(p && memcmp(p, want, size) == 0, "step %zu, drop %d", steps[s], drop);
      int zeros = 1;
      for (size_t i = size; p && i < mxl_huge_round(size); i++) zeros &= ((uint8_t *)p)[i] == 0;
      MXL_CHECK(zeros);
      MXL_CHECK(progressed == size);
      mxl_huge_free(p, size);
    }
  /* an empty file: one zeroed page, no step */
  char empty[128];
  uint8_t *none;
  write_file("empty.bin", 0, 1, empty, sizeof empty, &none);
  void *p = NULL;
  MXL_CHECK_OK(mxl_huge_read_file(empty, 0, NULL, &p));
  MXL_CHECK(p != NULL);
  mxl_huge_free(p, 0);
  free(none), free(want);
  unlink(empty), unlink(path);
}

/* A file of another size than expected, a missing file and a step that is
 * not whole 2 MB pages are refused, naming the file; nothing is returned. */
static void test_copy_refusals(void) {
  char path[128];
  uint8_t *b;
  write_file("short.bin", 1000, 3, path, sizeof path, &b);
  void *p = (void *)1;
  MXL_CHECK_FAILS(mxl_huge_read_file(path, 1001, NULL, &p), MXL_ERR_IO, "short.bin: changed");
  MXL_CHECK(p == NULL);
  mxl_huge_read odd = {MXL_HUGE_PAGE + 4096, 0, NULL, NULL};
  MXL_CHECK_FAILS(mxl_huge_read_file(path, 1000, &odd, &p), MXL_ERR_ARGUMENT, "short.bin");
  MXL_CHECK(p == NULL);
  unlink(path);
  MXL_CHECK_FAILS(mxl_huge_read_file(path, 1000, NULL, &p), MXL_ERR_IO, "short.bin: cannot open");
  free(b);
}

/* MemAvailable comes from its own line of the file in kB; a file without it
 * is an error naming the file. */
static void test_mem_available(void) {
  char path[128];
  snprintf(path, sizeof path, "%s/meminfo", dir);
  FILE *fp = fopen(path, "w");
  MXL_CHECK(fp != NULL);
  if (!fp) return;
  fputs("MemTotal:       24683784 kB\nMemFree:  100 kB\nMemAvailableX: 5 kB\n"
        "MemAvailable:   2048 kB\n", fp);
  fclose(fp);
  mxl_mem_available_path_for_tests(path);
  uint64_t bytes = 0;
  MXL_CHECK_OK(mxl_mem_available(&bytes));
  MXL_CHECK(bytes == 2048 * 1024);
  fp = fopen(path, "w");
  if (fp) fputs("MemTotal:       24683784 kB\n", fp), fclose(fp);
  MXL_CHECK_FAILS(mxl_mem_available(&bytes), MXL_ERR_IO, "no MemAvailable line");
  mxl_mem_available_path_for_tests(NULL);
  MXL_CHECK_OK(mxl_mem_available(&bytes));
  MXL_CHECK(bytes > 0);
  uint64_t huge = 0;
  MXL_CHECK_OK(mxl_anon_huge_bytes(&huge)); /* the line exists on Linux 4.14+ */
  unlink(path);
}

/* Working memory: 64-byte aligned below 2 MB, 2 MB aligned from there up,
 * every byte writable and kept, freed with free(). Whether the kernel backs
 * it with huge pages is its choice (THP may be off), so only the alignment
 * that makes them possible is checked. */
static void test_work_alloc(void) {
  const size_t sizes[] = {0, 1, 100, 4096, MXL_HUGE_PAGE - 1, MXL_HUGE_PAGE,
                          3 * (size_t)MXL_HUGE_PAGE + 17};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    uint8_t *p = mxl_work_alloc(sizes[i]);
    MXL_CHECK_MSG(p != NULL, "%zu bytes", sizes[i]);
    if (!p) continue;
    size_t align = sizes[i] >= MXL_HUGE_PAGE ? MXL_HUGE_PAGE : 64;
    MXL_CHECK_MSG((uintptr_t)p % align == 0, "%zu bytes at %p", sizes[i], (void *)p);
    for (size_t j = 0; j < sizes[i]; j++) p[j] = (uint8_t)(j * 131 + i);
    int kept = 1;
    for (size_t j = 0; j < sizes[i]; j++) kept &= p[j] == (uint8_t)(j * 131 + i);
    MXL_CHECK_MSG(kept, "%zu bytes", sizes[i]);
    free(p);
  }
  MXL_CHECK(mxl_work_alloc(SIZE_MAX - 8) == NULL); /* overflow of the rounding */
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/mxl_hugemem_XXXXXX");
  if (!mkdtemp(dir)) return 1;
  MXL_RUN(test_copy_equals_file);
  MXL_RUN(test_copy_refusals);
  MXL_RUN(test_mem_available);
  MXL_RUN(test_work_alloc);
  rmdir(dir);
  return mxl_test_summary("hugemem");
}
