/* stm32f103.h — the STM32F103 registers the lamp (and tests/c/slow_rx.c) touch, by address (RM0008):
 * no vendor headers needed. */
#ifndef STM32F103_H
#define STM32F103_H

#include <stdint.h>

#define REG(addr) (*(volatile uint32_t *)(addr))
#define RCC_CR REG(0x40021000)
#define RCC_CFGR REG(0x40021004)
#define RCC_APB2ENR REG(0x40021018)
#define FLASH_ACR REG(0x40022000)
#define GPIOA_CRH REG(0x40010804)
#define GPIOC_CRH REG(0x40011004)
#define GPIOC_BSRR REG(0x40011010)
#define USART1_SR REG(0x40013800)
#define USART1_DR REG(0x40013804)
#define USART1_BRR REG(0x40013808)
#define USART1_CR1 REG(0x4001380C)
#define SYST_CSR REG(0xE000E010)
#define SYST_RVR REG(0xE000E014)
#define SYST_CVR REG(0xE000E018)
#define NVIC_ISER1 REG(0xE000E104)

#endif
