/* The lamp as a Linux program: the same application on a serial port (a USB-UART, or the pty that
 * `ccm sim ccm` prints).
 *
 *   make linux && build/lamp-linux /dev/pts/5 [version]
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "ccm.h"
#include "lamp.h"

static int fd = -1;
static volatile sig_atomic_t stop;

static int uart_write(const char *buf, int len, void *ud) {
  int done = 0;
  (void)ud;
  while (done < len) {
    ssize_t n = write(fd, buf + done, (size_t)(len - done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      struct pollfd p = {fd, POLLOUT, 0};
      poll(&p, 1, 100);
      continue;
    }
    if (n <= 0) return done;
    done += (int)n;
  }
  return done;
}

static void led(int on) { printf("LED %s\n", on ? "on" : "off"); }
static void log_line(const char *line) { printf("%s\n", line); }

static uint32_t millis(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint32_t)(t.tv_sec * 1000u + t.tv_nsec / 1000000);
}

static void on_signal(int sig) { (void)sig, stop = 1; }

int main(int argc, char **argv) {
  static char frame[1024];
  static struct ccm link;
  static const struct lamp_board board = {"linux", led, log_line};
  struct termios tio;
  char rx[256];
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s PORT [VERSION]   (PORT: /dev/ttyUSB0, or what `ccm sim ccm` prints)\n", argv[0]);
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  fd = open(argv[1], O_RDWR | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    fprintf(stderr, "Error: cannot open %s: %s\n", argv[1], strerror(errno));
    return 1;
  }
  if (tcgetattr(fd, &tio) == 0) { /* 115200 8N1, raw */
    cfmakeraw(&tio);
    cfsetispeed(&tio, B115200);
    cfsetospeed(&tio, B115200);
    tcsetattr(fd, TCSANOW, &tio);
  }
  tcflush(fd, TCIFLUSH);
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  ccm_init(&link, frame, sizeof(frame), uart_write, NULL);
  ccm_poll(&link, millis());
  lamp_start(&link, &board, argc > 2 ? argv[2] : "1.0");
  while (!stop) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 20) > 0) {
      ssize_t n = read(fd, rx, sizeof(rx));
      if (n > 0) ccm_feed(&link, rx, (int)n);
      else if (n == 0 || (errno != EAGAIN && errno != EINTR)) break;
    }
    ccm_poll(&link, millis());
  }
  close(fd);
  return 0;
}
