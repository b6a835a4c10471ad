/* core/sha256: the NIST FIPS 180-4 example vectors, streaming in uneven
 * pieces, and agreement with the system's sha256sum on a file. */
#include <unistd.h>

#include "core/sha256.h"
#include "test.h"

static void hex_of(const void *data, size_t n, char hex[MXL_SHA256_HEX_SIZE]) {
  uint8_t digest[MXL_SHA256_SIZE];
  mxl_sha256(data, n, digest);
  mxl_sha256_hex(digest, hex);
}

static void check_vector(const char *msg, const char *expected) {
  char hex[MXL_SHA256_HEX_SIZE];
  hex_of(msg, strlen(msg), hex);
  MXL_CHECK_MSG(!strcmp(hex, expected), "sha256(\"%s\") = %s, expected %s", msg, hex,
                expected);
}

/* NIST CSRC "SHA256.pdf" / FIPS 180-2 appendix B examples. */
static void test_nist_vectors(void) {
  check_vector("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  check_vector("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  check_vector("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
               "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  check_vector("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
               "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
               "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

static const char million_a[] =
    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";

static void test_million_a_one_shot(void) {
  size_t n = 1000000;
  char *buf = malloc(n);
  MXL_CHECK(buf != NULL);
  if (!buf) return;
  memset(buf, 'a', n);
  char hex[MXL_SHA256_HEX_SIZE];
  hex_of(buf, n, hex);
  MXL_CHECK_MSG(!strcmp(hex, million_a), "%s", hex);
  free(buf);
}

/* Uneven piece sizes cross every block-boundary case of update(). */
static void test_million_a_streamed(void) {
  static const size_t pieces[] = {1, 63, 64, 65, 127, 128, 7, 1000, 55, 56, 57};
  char buf[1000];
  memset(buf, 'a', sizeof buf);
  mxl_sha256_ctx ctx;
  mxl_sha256_init(&ctx);
  size_t left = 1000000;
  for (size_t i = 0; left > 0; i++) {
    size_t n = pieces[i % (sizeof pieces / sizeof pieces[0])];
    if (n > left) n = left;
    mxl_sha256_update(&ctx, buf, n);
    left -= n;
  }
  uint8_t digest[MXL_SHA256_SIZE];
  char hex[MXL_SHA256_HEX_SIZE];
  mxl_sha256_final(&ctx, digest);
  mxl_sha256_hex(digest, hex);
  MXL_CHECK_MSG(!strcmp(hex, million_a), "%s", hex);
}

/* Lengths around the 55/56/64-byte padding edges must match the one-shot
 * digest of the same bytes fed one byte at a time. */
static void test_padding_edges(void) {
  uint8_t msg[130];
  for (size_t i = 0; i < sizeof msg; i++) msg[i] = (uint8_t)(i * 7 + 3);
  for (size_t n = 0; n <= sizeof msg; n++) {
    uint8_t a[MXL_SHA256_SIZE], b[MXL_SHA256_SIZE];
    mxl_sha256(msg, n, a);
    mxl_sha256_ctx ctx;
    mxl_sha256_init(&ctx);
    for (size_t i = 0; i < n; i++) mxl_sha256_update(&ctx, msg + i, 1);
    mxl_sha256_final(&ctx, b);
    MXL_CHECK_MSG(!memcmp(a, b, sizeof a), "length %zu", n);
  }
}

/* The system's sha256sum is an independent oracle for a file digest. */
static void test_file_matches_sha256sum(void) {
  char path[] = "/tmp/mxl_sha256_XXXXXX";
  int fd = mkstemp(path);
  MXL_CHECK(fd >= 0);
  if (fd < 0) return;
  uint8_t data[200000];
  for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)((i * 2654435761u) >> 13);
  MXL_CHECK(write(fd, data, sizeof data) == (ssize_t)sizeof data);
  close(fd);
  uint8_t digest[MXL_SHA256_SIZE];
  char hex[MXL_SHA256_HEX_SIZE];
  MXL_CHECK_OK(mxl_sha256_file(path, digest));
  mxl_sha256_hex(digest, hex);
  char cmd[128], line[256] = "";
  snprintf(cmd, sizeof cmd, "sha256sum %s 2>/dev/null", path);
  FILE *p = popen(cmd, "r");
  int got = p && fgets(line, sizeof line, p) != NULL;
  if (p) pclose(p);
  unlink(path);
  if (!got || strlen(line) < 64) MXL_SKIP("sha256sum is not available");
  MXL_CHECK_MSG(!strncmp(hex, line, 64), "ours %s, sha256sum %.64s", hex, line);
}

static void test_file_missing(void) {
  uint8_t digest[MXL_SHA256_SIZE];
  MXL_CHECK_FAILS(mxl_sha256_file("/nonexistent/mxl.bin", digest), MXL_ERR_IO,
                  "/nonexistent/mxl.bin");
}

int main(void) {
  MXL_RUN(test_nist_vectors);
  MXL_RUN(test_million_a_one_shot);
  MXL_RUN(test_million_a_streamed);
  MXL_RUN(test_padding_edges);
  MXL_RUN(test_file_matches_sha256sum);
  MXL_RUN(test_file_missing);
  return mxl_test_summary("sha256");
}
