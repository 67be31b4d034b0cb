/* avr_uno — an Arduino Uno (ATmega328P at 16 MHz) in simavr, its UART0 on a serial port.
 *
 *   avr_uno FIRMWARE.elf /dev/pts/N
 *
 * The sketch's Serial (UART0, pins 0/1) reads and writes the given tty raw — the virtual CCM's host
 * UART, as an Uno's pins would be wired to a module's. simavr times the UART by the firmware's UBRR,
 * in the chip's cycles; this program keeps those cycles at wall-clock pace (never ahead of it), so
 * millis() on the chip and timeouts on the PC agree. The LED on pin 13 (PB5) is printed as
 * "LED on"/"LED off" lines on stdout. Built by sim/avr.py with the C compiler and libsimavr. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <simavr/avr_ioport.h>
#include <simavr/avr_uart.h>
#include <simavr/sim_avr.h>
#include <simavr/sim_elf.h>

#define MHZ 16000000UL

static int tty = -1;
static int xon = 1;

static void uart_out(struct avr_irq_t *irq, uint32_t value, void *param) {
  uint8_t b = (uint8_t)value;
  (void)irq, (void)param;
  while (write(tty, &b, 1) < 0 && (errno == EAGAIN || errno == EINTR)) usleep(100);
}

static void uart_xon(struct avr_irq_t *irq, uint32_t value, void *param) {
  (void)irq, (void)value, (void)param;
  xon = 1;
}

static void uart_xoff(struct avr_irq_t *irq, uint32_t value, void *param) {
  (void)irq, (void)value, (void)param;
  xon = 0;
}

static void led(struct avr_irq_t *irq, uint32_t value, void *param) {
  (void)irq, (void)param;
  printf("LED %s\n", value ? "on" : "off");
  fflush(stdout);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  elf_firmware_t fw;
  struct termios tio;
  uint32_t flags = 0;
  uint8_t pending[256];
  int n_pending = 0, at = 0;
  if (argc != 3) {
    fprintf(stderr, "usage: %s FIRMWARE.elf TTY\n", argv[0]);
    return 2;
  }
  memset(&fw, 0, sizeof(fw));
  if (elf_read_firmware(argv[1], &fw) != 0) {
    fprintf(stderr, "avr_uno: cannot read %s as an AVR ELF image\n", argv[1]);
    return 1;
  }
  tty = open(argv[2], O_RDWR | O_NOCTTY | O_NONBLOCK);
  if (tty < 0 || tcgetattr(tty, &tio) != 0) {
    fprintf(stderr, "avr_uno: cannot open %s: %s\n", argv[2], strerror(errno));
    return 1;
  }
  cfmakeraw(&tio);
  tcsetattr(tty, TCSANOW, &tio);
  avr_t *avr = avr_make_mcu_by_name("atmega328p");
  if (!avr) return 1;
  avr_init(avr);
  fw.frequency = MHZ;
  avr_load_firmware(avr, &fw);
  avr->frequency = MHZ;
  avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
  flags &= ~(AVR_UART_FLAG_STDIO | AVR_UART_FLAG_POLL_SLEEP);
  avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
  avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT), uart_out, NULL);
  avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XON), uart_xon, NULL);
  avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF), uart_xoff, NULL);
  avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('B'), 5), led, NULL);
  avr_irq_t *rx = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);
  printf("avr_uno: %s on atmega328p at 16 MHz, UART0 on %s\n", argv[1], argv[2]);
  fflush(stdout);
  double t0 = now();
  for (;;) {
    for (int i = 0; i < 2000; i++) {
      int state = avr_run(avr);
      if (state == cpu_Done || state == cpu_Crashed) {
        printf("avr_uno: the firmware %s\n", state == cpu_Done ? "stopped" : "crashed");
        return state == cpu_Done ? 0 : 1;
      }
    }
    if (at == n_pending) {
      ssize_t r = read(tty, pending, sizeof(pending));
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR && errno != EIO)) return 0; /* the port went */
      n_pending = r > 0 ? (int)r : 0;
      at = 0;
    }
    while (xon && at < n_pending) avr_raise_irq(rx, pending[at++]);
    double ahead = (double)avr->cycle / MHZ - (now() - t0); /* never run ahead of the wall clock */
    if (ahead > 0.001) usleep((useconds_t)(ahead * 1e6));
  }
}
