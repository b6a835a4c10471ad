/* A small HTTP/1.1 client for the server tests: one request per
 * connection (Connection: close), chunked responses de-chunked, and raw
 * bytes for malformed requests. Plain sockets, loopback only. */
#ifndef MXL_TESTS_HTTP_CLIENT_H
#define MXL_TESTS_HTTP_CLIENT_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

typedef struct http_reply {
  int status;    /* 0: no HTTP answer (connection refused or closed) */
  char *headers; /* raw header block */
  char *body;    /* de-chunked, NUL-terminated */
  size_t body_len;
} http_reply;

static inline void http_reply_free(http_reply *r) {
  free(r->headers);
  free(r->body);
  memset(r, 0, sizeof *r);
}

static inline int http_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct timeval tv = {120, 0}; /* a stuck server fails the test instead of hanging it */
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static inline int http_send_all(int fd, const char *data, size_t n) {
  while (n) {
    ssize_t k = send(fd, data, n, MSG_NOSIGNAL);
    if (k <= 0) return -1;
    data += k;
    n -= (size_t)k;
  }
  return 0;
}

/* Reads everything until the server closes. */
static inline char *http_read_all(int fd, size_t *n_out) {
  size_t cap = 8192, n = 0;
  char *buf = malloc(cap);
  for (ssize_t k; buf && (k = recv(fd, buf + n, cap - n - 1, 0)) > 0;) {
    n += (size_t)k;
    if (cap - n < 4096) {
      char *grown = realloc(buf, cap *= 2);
      if (!grown) free(buf);
      buf = grown;
    }
  }
  if (buf) buf[n] = '\0';
  *n_out = n;
  return buf;
}

/* Splits a raw answer into status, headers and (de-chunked) body. */
static inline void http_parse(const char *raw, size_t n, http_reply *r) {
  memset(r, 0, sizeof *r);
  const char *end = raw ? strstr(raw, "\r\n\r\n") : NULL;
  if (!raw || n < 12 || strncmp(raw, "HTTP/1.", 7) || !end) {
    r->body = strdup("");
    return;
  }
  r->status = atoi(raw + 9);
  r->headers = strndup(raw, (size_t)(end - raw));
  const char *p = end + 4, *stop = raw + n;
  int chunked = strcasestr(r->headers, "transfer-encoding: chunked") != NULL;
  r->body = malloc((size_t)(stop - p) + 1);
  size_t len = 0;
  if (!chunked) {
    memcpy(r->body, p, (size_t)(stop - p));
    len = (size_t)(stop - p);
  } else {
    while (p < stop) {
      char *after = NULL;
      unsigned long size = strtoul(p, &after, 16);
      const char *data = strstr(after, "\r\n");
      if (!data || size == 0) break;
      data += 2;
      if (data + size > stop) size = (unsigned long)(stop - data);
      memcpy(r->body + len, data, size);
      len += size;
      p = data + size + 2;
    }
  }
  r->body[len] = '\0';
  r->body_len = len;
}

/* Sends bytes as they are and reads the answer. */
static inline http_reply http_raw(int port, const char *bytes, size_t n) {
  http_reply r = {0};
  int fd = http_connect(port);
  if (fd < 0) {
    r.body = strdup("");
    return r;
  }
  http_send_all(fd, bytes, n);
  size_t got = 0;
  char *raw = http_read_all(fd, &got);
  close(fd);
  http_parse(raw, got, &r);
  free(raw);
  return r;
}

/* METHOD PATH with an optional JSON body and extra header lines
 * ("Name: value\r\n" each). */
static inline http_reply http_request(int port, const char *method, const char *path,
                                      const char *extra_headers, const char *body) {
  size_t blen = body ? strlen(body) : 0;
  size_t cap = 512 + strlen(path) + (extra_headers ? strlen(extra_headers) : 0) + blen;
  char *req = malloc(cap);
  int h = snprintf(req, cap, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s",
                   method, path, extra_headers ? extra_headers : "");
  if (body)
    h += snprintf(req + h, cap - (size_t)h,
                  "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
  h += snprintf(req + h, cap - (size_t)h, "\r\n");
  if (body) memcpy(req + h, body, blen);
  http_reply r = http_raw(port, req, (size_t)h + blen);
  free(req);
  return r;
}

static inline http_reply http_post(int port, const char *path, const char *body) {
  return http_request(port, "POST", path, NULL, body);
}

static inline http_reply http_get(int port, const char *path) {
  return http_request(port, "GET", path, NULL, NULL);
}

#endif
