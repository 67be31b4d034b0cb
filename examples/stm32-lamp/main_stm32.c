/* The lamp on a bare-metal STM32F103: 72 MHz from the 8 MHz crystal, USART1 (PA9 TX, PA10 RX) at
 * 115200 8N1 to the CCM with an interrupt-fed receive ring, the LED on PC13 (active low, as on the
 * blue pill), and a 1 ms SysTick. Registers by address (RM0008): no vendor HAL. */
#include <stdint.h>

#include "ccm.h"
#include "lamp.h"
#include "stm32f103.h"

#ifndef FW_VERSION
#define FW_VERSION "1.0"
#endif

/* The version in an array of its own size: a literal would be merged with another string ending the same
 * way ("2.0" with "jsonrpc":"2.0"), so a new version would move the code after it and change every page
 * past that point; this way v1 and v2 differ in a few bytes, and an update rewrites one or two pages. */
static const char fw_version[12] = FW_VERSION;

static volatile uint32_t ticks;
static volatile uint8_t rx_ring[256];
static volatile uint8_t rx_head, rx_tail; /* 8-bit indices wrap with the ring */

void SysTick_Handler(void) { ticks++; }

void USART1_IRQHandler(void) {
  if (USART1_SR & (1u << 5)) { /* RXNE: reading DR clears it */
    uint8_t b = (uint8_t)USART1_DR;
    if ((uint8_t)(rx_head + 1) != rx_tail) rx_ring[rx_head++] = b; /* full: the byte is lost */
  }
}

static void clock_72mhz(void) {
  RCC_CR |= 1u << 16; /* HSEON */
  while (!(RCC_CR & (1u << 17))) {
  }
  FLASH_ACR = 0x12;                        /* two wait states, prefetch on */
  RCC_CFGR = (7u << 18) | (1u << 16) | (4u << 8); /* PLL = HSE x 9, APB1 = HCLK / 2 */
  RCC_CR |= 1u << 24;                      /* PLLON */
  while (!(RCC_CR & (1u << 25))) {
  }
  RCC_CFGR |= 2u; /* SYSCLK = PLL */
  while ((RCC_CFGR & 0xCu) != 0x8u) {
  }
}

static int uart_write(const char *buf, int len, void *ud) {
  int i;
  (void)ud;
  for (i = 0; i < len; i++) {
    while (!(USART1_SR & (1u << 7))) { /* TXE */
    }
    USART1_DR = (uint8_t)buf[i];
  }
  return len;
}

static void led(int on) { GPIOC_BSRR = on ? 1u << (13 + 16) : 1u << 13; /* active low */ }

int main(void) {
  static char frame[512];
  static struct ccm link;
  static const struct lamp_board board = {"stm32", led, 0};
  clock_72mhz();
  RCC_APB2ENR |= (1u << 14) | (1u << 4) | (1u << 2) | 1u; /* USART1, GPIOC, GPIOA, AFIO */
  GPIOA_CRH = (GPIOA_CRH & ~0xFF0u) | 0x4B0u;              /* PA9 AF push-pull 50 MHz, PA10 input */
  GPIOC_CRH = (GPIOC_CRH & ~(0xFu << 20)) | (0x2u << 20);  /* PC13 push-pull output */
  USART1_BRR = 72000000u / 115200u;
  USART1_CR1 = (1u << 13) | (1u << 5) | (1u << 3) | (1u << 2); /* UE, RXNEIE, TE, RE */
  NVIC_ISER1 = 1u << (37 - 32);
  SYST_RVR = 72000u - 1; /* 1 ms */
  SYST_CVR = 0;
  SYST_CSR = 7; /* processor clock, interrupt, enable */
  ccm_init(&link, frame, sizeof(frame), uart_write, 0);
  lamp_start(&link, &board, fw_version);
  for (;;) {
    char chunk[32];
    int n = 0;
    while (rx_tail != rx_head && n < (int)sizeof(chunk)) chunk[n++] = (char)rx_ring[rx_tail++];
    if (n > 0) ccm_feed(&link, chunk, n);
    ccm_poll(&link, ticks);
    if (rx_tail == rx_head) __asm volatile("wfi"); /* until the next byte or tick */
  }
}
