/* Cortex-M3 start-up for the STM32F103: the vector table, the reset handler (copy .data, zero .bss,
 * call main), and the few memory functions gcc may call on its own. No vendor files needed. */
#include <stddef.h>
#include <stdint.h>

extern uint32_t _estack, _sidata, _sdata, _edata, _sbss, _ebss;
int main(void);
void SysTick_Handler(void);
void USART1_IRQHandler(void);

void Reset_Handler(void) {
  uint32_t *src = &_sidata, *dst = &_sdata;
  while (dst < &_edata) *dst++ = *src++;
  for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
  main();
  for (;;) {
  }
}

static void Default_Handler(void) { /* an unexpected fault or interrupt: stop here */
  for (;;) {
  }
}

/* ARMv7-M: 16 system exceptions, then the F103's 60 interrupts (USART1 is IRQ 37). */
__attribute__((section(".isr_vector"), used)) static void (*const vectors[16 + 60])(void) = {
    (void (*)(void))&_estack, Reset_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, 0, 0, 0, 0, Default_Handler, Default_Handler, 0, Default_Handler,
    SysTick_Handler, [16 + 37] = USART1_IRQHandler,
};

void *memcpy(void *d, const void *s, size_t n) {
  uint8_t *a = d;
  const uint8_t *b = s;
  while (n--) *a++ = *b++;
  return d;
}

void *memmove(void *d, const void *s, size_t n) {
  uint8_t *a = d;
  const uint8_t *b = s;
  if (a < b) return memcpy(d, s, n);
  while (n--) a[n] = b[n];
  return d;
}

void *memset(void *d, int v, size_t n) {
  uint8_t *a = d;
  while (n--) *a++ = (uint8_t)v;
  return d;
}
