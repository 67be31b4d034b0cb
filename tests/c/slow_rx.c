/* A host firmware whose receive handler is too slow for 115200 baud: it spends ~300 us on every byte in
 * the interrupt (as a handler that parses a frame there would), while a byte lasts 87 us on the wire at
 * 115200 and 1.04 ms at 9600. It echoes what it kept. On a chip the bytes that arrive while DR still
 * holds the last one are lost (ORE); tests/test_cortexm_timing.py checks the emulator loses them too.
 * Build: arm-none-eabi-gcc with -DBAUD=…, examples/stm32-lamp/startup.c, its registers and linker script. */
#include <stdint.h>

#include "stm32f103.h"

#ifndef BAUD
#define BAUD 115200u
#endif
#define SLOW_LOOPS 4000 /* ~20,000 instructions: ~300 us at 72 MHz */

static volatile uint8_t ring[256];
static volatile uint8_t head, tail;

void SysTick_Handler(void) {}

void USART1_IRQHandler(void) {
  if (USART1_SR & ((1u << 5) | (1u << 3))) { /* RXNE or ORE: reading DR clears both */
    volatile int i;
    ring[head++] = (uint8_t)USART1_DR;
    for (i = 0; i < SLOW_LOOPS; i++) { /* the slow part */
    }
  }
}

int main(void) {
  RCC_CR |= 1u << 16; /* HSE on, then PLL x9: 72 MHz */
  while (!(RCC_CR & (1u << 17))) {
  }
  FLASH_ACR = 0x12;
  RCC_CFGR = (7u << 18) | (1u << 16) | (4u << 8);
  RCC_CR |= 1u << 24;
  while (!(RCC_CR & (1u << 25))) {
  }
  RCC_CFGR |= 2u;
  while ((RCC_CFGR & 0xCu) != 0x8u) {
  }
  RCC_APB2ENR |= (1u << 14) | (1u << 2) | 1u;
  GPIOA_CRH = (GPIOA_CRH & ~0xFF0u) | 0x4B0u;
  USART1_BRR = 72000000u / BAUD;
  USART1_CR1 = (1u << 13) | (1u << 5) | (1u << 3) | (1u << 2); /* UE, RXNEIE, TE, RE */
  NVIC_ISER1 = 1u << (37 - 32);
  for (;;) {
    while (tail != head) {
      while (!(USART1_SR & (1u << 7))) {
      }
      USART1_DR = ring[tail++];
    }
    __asm volatile("wfi");
  }
}
