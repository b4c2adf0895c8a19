/*
 * Baseline for bench/rbd.ts: the same requests from C through librbd's C API, the API our rbd
 * driver calls (reads land in the caller's buffer, as ours must; `rbd bench` uses the C++ API
 * and reads into librbd's own buffers). It splits our gap to `rbd bench` into what the C API
 * costs and what our path costs.
 *
 * QD requests stay in flight, completed one of two ways:
 * - callback: each completion callback (on librbd's thread) starts the next request, so no
 *   thread hop or event loop sits between them (the fastest a C program can go);
 * - pipe: as our driver does, librbd signals completions on its event pipe
 *   (rbd_set_image_notification), and the main thread waits on the pipe with poll(), takes
 *   the completions with rbd_poll_io_events and starts the next requests: what an event loop
 *   costs, without JavaScript.
 * Prints one JSON line: requests done, seconds, and CPU seconds of the whole process (all
 * threads) over the timed part only.
 *
 * Debian ships no librbd headers without librbd-dev, so the few prototypes used are declared
 * here (librbd.h's signatures); it links against the runtime libraries librbd1 installs.
 *
 *   cc -O2 -o rbd-c-api rbd-c-api.c -l:librbd.so.1 -l:librados.so.2 -lpthread
 *   rbd-c-api CONF POOL IMAGE read|write rand|seq BLOCK_SIZE SECONDS QD callback|pipe
 */
#define _GNU_SOURCE /* pipe2 */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

typedef void *rados_t;
typedef void *rados_ioctx_t;
typedef void *rbd_image_t;
typedef void *rbd_completion_t;
typedef void (*rbd_callback_t)(rbd_completion_t c, void *arg);
int rados_create(rados_t *cluster, const char *id);
int rados_conf_read_file(rados_t cluster, const char *path);
int rados_connect(rados_t cluster);
int rados_ioctx_create(rados_t cluster, const char *pool, rados_ioctx_t *io);
void rados_ioctx_destroy(rados_ioctx_t io);
void rados_shutdown(rados_t cluster);
int rbd_open(rados_ioctx_t io, const char *name, rbd_image_t *image, const char *snap);
int rbd_get_size(rbd_image_t image, uint64_t *size);
int rbd_aio_create_completion(void *arg, rbd_callback_t cb, rbd_completion_t *c);
int rbd_aio_read(rbd_image_t image, uint64_t off, size_t len, char *buf, rbd_completion_t c);
int rbd_aio_write(rbd_image_t image, uint64_t off, size_t len, const char *buf, rbd_completion_t c);
ssize_t rbd_aio_get_return_value(rbd_completion_t c);
void rbd_aio_release(rbd_completion_t c);
void *rbd_aio_get_arg(rbd_completion_t c);
int rbd_flush(rbd_image_t image);
int rbd_set_image_notification(rbd_image_t image, int fd, int type);
int rbd_poll_io_events(rbd_image_t image, rbd_completion_t *comps, int numcomp);
#define EVENT_TYPE_PIPE 1
#define POLL_BATCH 32
int rbd_close(rbd_image_t image);

static rbd_image_t image;
static int writing, sequential;
static uint64_t block, slots, next_slot, rng = 0x9e3779b97f4a7c15ull;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t idle = PTHREAD_COND_INITIALIZER;
static long done, in_flight;
static int stopping;

/* Under `lock`: the next offset (xorshift64 for random slots). */
static uint64_t next_offset(void) {
  if (sequential) return (next_slot++ % slots) * block;
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (rng % slots) * block;
}

static void completed(rbd_completion_t c, void *buffer);
static int use_pipe;

static void start(char *buffer, uint64_t offset) {
  rbd_completion_t c;
  /* With the pipe, no callback: the completion waits in librbd's queue for rbd_poll_io_events. */
  int ret = rbd_aio_create_completion(buffer, use_pipe ? NULL : completed, &c);
  if (ret == 0) ret = writing ? rbd_aio_write(image, offset, block, buffer, c) : rbd_aio_read(image, offset, block, buffer, c);
  if (ret < 0) {
    fprintf(stderr, "rbd-c-api: could not start a request: %d\n", ret);
    exit(1);
  }
}

static void completed(rbd_completion_t c, void *buffer) {
  ssize_t ret = rbd_aio_get_return_value(c);
  rbd_aio_release(c);
  if (ret < 0) {
    fprintf(stderr, "rbd-c-api: request failed: %zd\n", ret);
    exit(1);
  }
  pthread_mutex_lock(&lock);
  done++;
  if (stopping) {
    if (--in_flight == 0) pthread_cond_signal(&idle);
    pthread_mutex_unlock(&lock);
    return;
  }
  uint64_t offset = next_offset();
  pthread_mutex_unlock(&lock);
  start(buffer, offset);
}

/* The pipe mode's loop: wait for the pipe, take finished completions, start the next requests. */
static void pipe_loop(int fd, double seconds, struct timespec t0) {
  rbd_completion_t comps[POLL_BATCH];
  char bytes[64];
  long outstanding = in_flight;
  int stop = 0;
  while (outstanding > 0) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 100) < 0) continue;
    while (read(fd, bytes, sizeof bytes) > 0) {
    }
    if (!stop) {
      struct timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      stop = (now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9 >= seconds;
    }
    int n;
    while ((n = rbd_poll_io_events(image, comps, POLL_BATCH)) > 0) {
      for (int i = 0; i < n; i++) {
        char *buffer = rbd_aio_get_arg(comps[i]);
        ssize_t ret = rbd_aio_get_return_value(comps[i]);
        rbd_aio_release(comps[i]);
        if (ret < 0) {
          fprintf(stderr, "rbd-c-api: request failed: %zd\n", ret);
          exit(1);
        }
        done++;
        if (stop) outstanding--;
        else start(buffer, next_offset());
      }
      if (n < POLL_BATCH) break;
    }
  }
}

static double seconds_of(struct timespec t) { return t.tv_sec + t.tv_nsec / 1e9; }

static double cpu_seconds(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
  if (argc != 10) {
    fprintf(stderr, "usage: rbd-c-api CONF POOL IMAGE read|write rand|seq BLOCK_SIZE SECONDS QD callback|pipe\n");
    return 2;
  }
  writing = strcmp(argv[4], "write") == 0;
  sequential = strcmp(argv[5], "seq") == 0;
  block = strtoull(argv[6], NULL, 10);
  double seconds = atof(argv[7]);
  int qd = atoi(argv[8]);
  use_pipe = strcmp(argv[9], "pipe") == 0;
  if (block == 0 || seconds <= 0 || qd <= 0) {
    fprintf(stderr, "rbd-c-api: bad block size, seconds or queue depth\n");
    return 2;
  }
  rados_t cluster;
  rados_ioctx_t io;
  uint64_t size;
  if (rados_create(&cluster, NULL) < 0 || rados_conf_read_file(cluster, argv[1]) < 0 || rados_connect(cluster) < 0 ||
      rados_ioctx_create(cluster, argv[2], &io) < 0 || rbd_open(io, argv[3], &image, NULL) < 0 || rbd_get_size(image, &size) < 0) {
    fprintf(stderr, "rbd-c-api: could not open %s/%s\n", argv[2], argv[3]);
    return 1;
  }
  slots = size / block;
  int fds[2] = {-1, -1};
  if (use_pipe && (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0 || rbd_set_image_notification(image, fds[1], EVENT_TYPE_PIPE) < 0)) {
    fprintf(stderr, "rbd-c-api: could not set up the event pipe\n");
    return 1;
  }
  /* Like rbd bench and our driver's bench: one flush first (librbd's cache leaves writethrough mode). */
  rbd_flush(image);
  char **buffers = calloc(qd, sizeof *buffers);
  for (int i = 0; i < qd; i++) {
    if (posix_memalign((void **)&buffers[i], 4096, block) != 0) return 1;
    memset(buffers[i], 0x5a, block);
  }
  struct timespec t0, t1, pause = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
  double cpu0 = cpu_seconds();
  clock_gettime(CLOCK_MONOTONIC, &t0);
  in_flight = qd;
  for (int i = 0; i < qd; i++) {
    pthread_mutex_lock(&lock);
    uint64_t offset = next_offset();
    pthread_mutex_unlock(&lock);
    start(buffers[i], offset);
  }
  if (use_pipe) {
    pipe_loop(fds[0], seconds, t0);
  } else {
    nanosleep(&pause, NULL);
    pthread_mutex_lock(&lock);
    stopping = 1;
    while (in_flight > 0) pthread_cond_wait(&idle, &lock);
    pthread_mutex_unlock(&lock);
  }
  if (writing) rbd_flush(image);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double cpu = cpu_seconds() - cpu0;
  printf("{\"ops\":%ld,\"seconds\":%.6f,\"cpuSeconds\":%.6f}\n", done, seconds_of(t1) - seconds_of(t0), cpu);
  rbd_close(image);
  rados_ioctx_destroy(io);
  rados_shutdown(cluster);
  return 0;
}
