/*
 * A cheap NBD load generator for bench/iothreads.ts: one connection, DEPTH reads of BS bytes
 * in flight at random BS-aligned offsets for SECONDS, then NBD_CMD_DISC. It spends as little CPU
 * per request as a client can: the requests a batch of replies frees are sent back in one
 * write(2), and replies are read in large chunks, so a request costs the client a fraction of a
 * syscall rather than two or three (fio's and nbdcopy's libnbd send and receive each request on
 * its own). Every reply is checked: its magic, a zero error, a handle that is in flight.
 *
 *   nbd-load HOST PORT EXPORT SECONDS DEPTH BS
 *
 * prints "requests seconds" on stdout. Built by the bench with the system's C compiler.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEPTH 256
#define REQ_LEN 28
#define REPLY_HEAD 16

static int sock;

static void die(const char *what) {
  fprintf(stderr, "nbd-load: %s%s%s\n", what, errno ? ": " : "", errno ? strerror(errno) : "");
  exit(1);
}

static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, v); }
static void put64(uint8_t *p, uint64_t v) { put32(p, v >> 32); put32(p + 4, v); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }

static void write_all(const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(sock, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) die("write");
    p += w;
    n -= (size_t)w;
  }
}

static void read_all(uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t r = read(sock, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) { errno = 0; die("the server closed the connection"); }
    if (r < 0) die("read");
    p += r;
    n -= (size_t)r;
  }
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Fixed-newstyle handshake with NBD_OPT_GO; the export's size. */
static uint64_t handshake(const char *name) {
  uint8_t b[64];
  read_all(b, 18);
  if (memcmp(b, "NBDMAGIC", 8) != 0 || get64(b + 8) != 0x49484156454F5054ULL) { errno = 0; die("not a newstyle NBD server"); }
  uint16_t hflags = (uint16_t)(b[16] << 8 | b[17]);
  if (!(hflags & 1)) { errno = 0; die("the server is not fixed-newstyle"); }
  uint32_t cflags = 1 | (hflags & 2); /* FIXED_NEWSTYLE, NO_ZEROES when offered */
  put32(b, cflags);
  write_all(b, 4);
  size_t len = strlen(name);
  uint8_t opt[16 + 4 + 256 + 2];
  if (len > 256) { errno = 0; die("export name too long"); }
  put64(opt, 0x49484156454F5054ULL);
  put32(opt + 8, 7); /* NBD_OPT_GO */
  put32(opt + 12, (uint32_t)(4 + len + 2));
  put32(opt + 16, (uint32_t)len);
  memcpy(opt + 20, name, len);
  put16(opt + 20 + len, 0);
  write_all(opt, 20 + len + 2);
  uint64_t size = 0;
  for (;;) {
    read_all(b, 20);
    if (get64(b) != 0x3e889045565a9ULL) { errno = 0; die("bad option reply magic"); }
    uint32_t type = get32(b + 12), rlen = get32(b + 16);
    uint8_t data[1024];
    if (rlen > sizeof data) { errno = 0; die("option reply too long"); }
    read_all(data, rlen);
    if (type & 0x80000000u) { errno = 0; die("the server refused NBD_OPT_GO"); }
    if (type == 3 && rlen >= 12 && data[0] == 0 && data[1] == 0) size = get64(data + 2); /* NBD_REP_INFO, NBD_INFO_EXPORT */
    if (type == 1) break; /* NBD_REP_ACK */
  }
  if (size == 0) { errno = 0; die("the server sent no export size"); }
  return size;
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: nbd-load HOST PORT EXPORT SECONDS DEPTH BS\n");
    return 2;
  }
  double seconds = atof(argv[4]);
  int depth = atoi(argv[5]);
  uint32_t bs = (uint32_t)atoi(argv[6]);
  if (depth < 1 || depth > MAX_DEPTH || bs == 0 || seconds <= 0) { errno = 0; die("bad arguments"); }

  struct addrinfo hints = {0}, *ai;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(argv[1], argv[2], &hints, &ai) != 0) { errno = 0; die("cannot resolve the host"); }
  sock = socket(ai->ai_family, SOCK_STREAM, 0);
  if (sock < 0 || connect(sock, ai->ai_addr, ai->ai_addrlen) < 0) die("connect");
  freeaddrinfo(ai);
  int one = 1;
  setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  uint64_t blocks = handshake(argv[3]) / bs;
  if (blocks == 0) { errno = 0; die("the export is smaller than one request"); }

  uint8_t busy[MAX_DEPTH] = {0};
  uint8_t out[MAX_DEPTH * REQ_LEN];
  size_t chunk = (size_t)depth * (REPLY_HEAD + bs);
  uint8_t *in = malloc(chunk);
  if (in == NULL) die("malloc");
  uint64_t rng = 0x9E3779B97F4A7C15ULL ^ (uint64_t)getpid();
  size_t nout = 0;
#define QUEUE(slot)                                                  \
  do {                                                               \
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;            \
    uint8_t *r = out + nout;                                         \
    put32(r, 0x25609513);                                            \
    put16(r + 4, 0);                                                 \
    put16(r + 6, 0); /* NBD_CMD_READ */                              \
    put64(r + 8, (uint64_t)(slot));                                  \
    put64(r + 16, (rng % blocks) * bs);                              \
    put32(r + 24, bs);                                               \
    nout += REQ_LEN;                                                 \
    busy[slot] = 1;                                                  \
  } while (0)

  double t0 = now(), end = t0 + seconds;
  for (int i = 0; i < depth; i++) QUEUE(i);
  write_all(out, nout);
  nout = 0;
  int inflight = depth, sending = 1;
  uint64_t done = 0;
  size_t have = 0; /* bytes in `in` */
  while (inflight > 0) {
    ssize_t r = read(sock, in + have, chunk - have);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) { errno = 0; die("the server closed the connection"); }
    if (r < 0) die("read");
    have += (size_t)r;
    size_t at = 0;
    if (sending && now() >= end) sending = 0;
    while (have - at >= REPLY_HEAD + bs) {
      const uint8_t *h = in + at;
      if (get32(h) != 0x67446698) { errno = 0; die("bad reply magic (structured replies are not negotiated)"); }
      if (get32(h + 4) != 0) { errno = 0; die("the server answered a read with an error"); }
      uint64_t slot = get64(h + 8);
      if (slot >= (uint64_t)depth || !busy[slot]) { errno = 0; die("a reply to no request in flight"); }
      busy[slot] = 0;
      done++;
      at += REPLY_HEAD + bs;
      if (sending) QUEUE(slot);
      else inflight--;
    }
    memmove(in, in + at, have - at);
    have -= at;
    if (nout > 0) {
      write_all(out, nout);
      nout = 0;
    }
  }
  double elapsed = now() - t0;
  uint8_t disc[REQ_LEN] = {0};
  put32(disc, 0x25609513);
  put16(disc + 6, 2); /* NBD_CMD_DISC */
  write_all(disc, REQ_LEN);
  close(sock);
  printf("%llu %.6f\n", (unsigned long long)done, elapsed);
  return 0;
}
