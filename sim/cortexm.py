"""A Cortex-M3 that runs real STM32F103 firmware: unicorn's ARM core plus the peripherals a small host
firmware touches (RM0008 register layout).

    mcu = CortexM3(flash_bytes, ram=(0x20000000, 0x20005000), uart_tx=send_bytes)
    mcu.start()                     # a thread: reset vector, then run; interrupts between slices
    mcu.uart_rx(b'{"id":1,...}\\n')  # bytes on USART1's RX line
    mcu.gpio["C"] & (1 << 13)       # the blue pill's LED pin (active low)
    mcu.stop()

Modelled: RCC (HSE/PLL ready flags, SWS follows SW, so clock set-up code runs), FLASH ACR, GPIO A–C
(CRL/CRH/IDR/ODR/BSRR/BRR), AFIO, USART1 (SR/DR/BRR/CR1–3; RXNE and TXE interrupts), SysTick (a 1 ms
or whatever-LOAD-says tick from the host's clock and the configured SYSCLK), NVIC enable registers,
SCB VTOR and AIRCR (SYSRESETREQ resets the chip). Exceptions are taken the way the core does: the
eight-word frame is pushed, LR = EXC_RETURN, and the return (the core's exception-exit trap) pops it.
`wfi` ends a slice and the thread sleeps until the next byte or tick, so an idle firmware costs
nothing. Anything else — an unmapped access, an undefined instruction, a HardFault — stops the core:
`crashed` says why, and the chip is silent, as a real one would be.

Time is the chip's own (`now`, seconds): executed instructions advance it at CPI cycles each at the
configured SYSCLK, and `wfi` lets it pass as wall time until the next event (a byte on the RX line, a
SysTick), so an idle firmware stays in step with the PC. SysTick fires on that clock. A byte put on the
RX line arrives one frame time after the one before it (start + data + stop bits at the baud USART1_BRR
sets); a byte that arrives while the last is still unread in DR is lost and sets ORE (SR bit 3, cleared
by reading DR; the RXNE interrupt fires for it too), as on an STM32 — so a receive handler too slow for
its baud rate loses bytes here first. Bytes that arrive while the receiver is off are lost too. TX takes
bytes at once (TXE and TC always set).

CPI = 1.25 is the Cortex-M3 running compiled C from flash at 72 MHz: single-cycle ALU instructions,
two-cycle loads and stores, branches refilling the pipeline, flash wait states mostly hidden by the
prefetch buffer. Real code measures 1.1-1.6, so this clock is within about 30 % of a chip's; for a
margin, test a handler at twice the load it must take. A slice that ends in `wfi` counts as run in full:
idling starts at most one slice (≤ 200,000 instructions, ≤ one byte time while bytes are due) late.
`cycles` counts instructions when `count_instructions()` is on (used by bench/host_c.py).
"""

from __future__ import annotations

import struct
import threading
import time
from collections import deque

from unicorn import UC_ARCH_ARM, UC_HOOK_CODE, UC_HOOK_INTR, UC_MODE_MCLASS, UC_MODE_THUMB, Uc, UcError
from unicorn import arm_const as A

FLASH_BASE = 0x08000000
HSE_HZ = 8_000_000
HSI_HZ = 8_000_000
EXC_RETURN_EXIT = 8  # unicorn's intno for the core's exception-return trap (QEMU EXCP_EXCEPTION_EXIT)
SYSTICK = 15
USART1_IRQ = 37
SLICE = 200_000  # instructions per run between interrupt checks, at most
MIN_SLICE = 16  # at least (an event due sooner is taken at the end of it)
CPI = 1.25  # cycles per instruction: see the module's docstring
_FRAME_REGS = (A.UC_ARM_REG_R0, A.UC_ARM_REG_R1, A.UC_ARM_REG_R2, A.UC_ARM_REG_R3, A.UC_ARM_REG_R12, A.UC_ARM_REG_LR)
WFI = 0xBF30


def bootable(flash: bytes, ram: tuple[int, int]) -> bool:
    """Does the image start with a vector table a Cortex-M could boot from (SP in RAM, a Thumb reset
    vector inside the image)?"""
    if len(flash) < 8:
        return False
    sp, pc = struct.unpack_from("<II", flash)
    return ram[0] < sp <= ram[1] and pc & 1 == 1 and FLASH_BASE <= pc & ~1 < FLASH_BASE + len(flash)


class CortexM3:
    def __init__(self, flash: bytes, ram=(0x20000000, 0x20005000), uart_tx=None, on_reset=None, on_gpio=None):
        self.flash = bytes(flash)
        self.ram = ram
        self.uart_tx = uart_tx or (lambda data: None)
        self.on_reset = on_reset  # SYSRESETREQ: the board decides (BOOT0) what boots next
        self.on_gpio = on_gpio  # (port letter, ODR) whenever an ODR changes
        self.crashed: str | None = None
        self.cycles = 0
        self._counting = None
        self.now = 0.0  # the chip's time, seconds
        self._rx_in = bytearray()  # bytes put on the RX line (any thread), not yet given arrival times
        self._rx_line: deque[tuple[float, int]] = deque()  # (arrival time, byte), in order
        self._rx_last = 0.0  # when the last byte on the line arrives
        self._rx_latched: int | None = None
        self._ore = False
        self.overruns = 0  # bytes lost to an unread DR (ORE)
        self.rx_lost = 0  # bytes lost while the receiver was off
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._running = False
        self._thread: threading.Thread | None = None
        self.gpio = {"A": 0, "B": 0, "C": 0}
        self._regs: dict[int, int] = {}  # plain read/write registers (RCC, AFIO, CRx, BRR, …)
        self.nvic_enabled = 0
        self.systick = {"ctrl": 0, "load": 0, "val": 0}
        self._tick_due = 0.0
        self._systick_pending = False
        self.vtor = 0
        self.uc = self._make_core()

    # -- the core -------------------------------------------------------------------------------
    def _make_core(self) -> Uc:
        uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
        size = (len(self.flash) + 0xFFFF) & ~0xFFFF or 0x10000
        uc.mem_map(FLASH_BASE, size)
        uc.mem_write(FLASH_BASE, self.flash)
        lo, hi = self.ram[0] & ~0xFFFF, self.ram[1]  # the whole SRAM (the bootloader's 512 B included)
        uc.mem_map(lo, (hi - lo + 0xFFF) & ~0xFFF)
        uc.mem_map(0x1FFFF000, 0x1000)  # system memory / option bytes: reads as erased
        uc.mem_write(0x1FFFF000, b"\xff" * 0x1000)
        uc.mmio_map(0x40000000, 0x30000, self._periph_read, None, self._periph_write, None)
        uc.mmio_map(0xE000E000, 0x1000, self._scs_read, None, self._scs_write, None)
        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        return uc

    def start(self) -> CortexM3:
        if not bootable(self.flash, self.ram):
            self.crashed = "no vector table at 0x08000000"
            return self
        sp, pc = struct.unpack_from("<II", self.flash)
        self.uc.reg_write(A.UC_ARM_REG_SP, sp)
        self.uc.reg_write(A.UC_ARM_REG_PC, pc)
        self._running = True
        self._thread = threading.Thread(target=self._run, name="cortex-m3", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._running = False
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        uc = self.uc
        while self._running:
            self._line()
            self._take_interrupt()
            pc = uc.reg_read(A.UC_ARM_REG_PC)
            budget = self._budget()
            try:
                uc.emu_start(pc | 1, 0xFFFFFFFF, count=budget)
            except UcError as e:
                self._crash(f"{e} at pc=0x{uc.reg_read(A.UC_ARM_REG_PC):08x}")
                return
            if self.crashed:
                return
            self.now += budget * CPI / self.sysclk()
            pc = uc.reg_read(A.UC_ARM_REG_PC)
            if self._last_was_wfi(pc):
                self._line()
                if not self._interrupt_ready():
                    self._idle()

    def _next_event(self) -> float | None:
        """When the next thing happens that the core would wake for: a byte arriving, a SysTick."""
        t = [self._rx_line[0][0]] if self._rx_line else []
        if self.systick["ctrl"] & 1:
            t.append(self._tick_due)
        return min(t) if t else None

    def _budget(self) -> int:
        """Instructions to run until the next event (so it is taken when it is due), within the bounds."""
        t = self._next_event()
        if t is None:
            return SLICE
        return max(MIN_SLICE, min(SLICE, int((t - self.now) * self.sysclk() / CPI)))

    def _idle(self) -> None:
        """wfi: time passes as the PC's, until the next event or a byte put on the line."""
        t = self._next_event()
        wait = 1.0 if t is None else max(0.0, t - self.now)
        t0 = time.monotonic()
        if wait > 0:
            self._wake.wait(min(wait, 1.0))
        self._wake.clear()
        self.now += min(time.monotonic() - t0, wait)

    def _crash(self, why: str) -> None:
        self.crashed = why
        self._running = False

    def _last_was_wfi(self, pc: int) -> bool:
        try:
            return struct.unpack("<H", self.uc.mem_read(pc - 2, 2))[0] == WFI
        except UcError:
            return False

    # -- exceptions -----------------------------------------------------------------------------
    def _pending(self) -> int | None:
        """The exception to take now, by priority (SysTick before IRQs, as their reset priorities tie
        and the lower number wins), or None."""
        st = self.systick
        if st["ctrl"] & 1:
            now = self.now
            if now >= self._tick_due:
                period = (st["load"] + 1) / self.sysclk()
                self._tick_due = max(self._tick_due + period, now - period)
                st["ctrl"] |= 1 << 16  # COUNTFLAG
                if st["ctrl"] & 2:
                    self._systick_pending = True
        if self._systick_pending:
            return SYSTICK
        if self._usart_irq() and self.nvic_enabled >> USART1_IRQ & 1:
            return 16 + USART1_IRQ
        return None

    def _interrupt_ready(self) -> bool:
        return self._pending() is not None

    def _take_interrupt(self) -> None:
        uc = self.uc
        if uc.reg_read(A.UC_ARM_REG_IPSR) or uc.reg_read(A.UC_ARM_REG_PRIMASK) & 1:
            return  # no nesting: the one running handler finishes first
        exc = self._pending()
        if exc is None:
            return
        if exc == SYSTICK:
            self._systick_pending = False
        handler = struct.unpack_from("<I", self._read_mem(self.vtor + 4 * exc, 4))[0]
        sp = uc.reg_read(A.UC_ARM_REG_SP)
        xpsr = uc.reg_read(A.UC_ARM_REG_XPSR)
        pc = uc.reg_read(A.UC_ARM_REG_PC)
        frame = [uc.reg_read(r) for r in _FRAME_REGS]
        align = sp & 4  # the frame is 8-byte aligned; xPSR bit 9 remembers the padding
        sp = (sp - 32) & ~7
        uc.mem_write(sp, struct.pack("<8I", *frame, pc & ~1, (xpsr & ~(1 << 9)) | (1 << 24) | (align << 7)))
        uc.reg_write(A.UC_ARM_REG_SP, sp)
        uc.reg_write(A.UC_ARM_REG_XPSR, (xpsr & ~0x1FF) | exc)
        uc.reg_write(A.UC_ARM_REG_LR, 0xFFFFFFF9)
        uc.reg_write(A.UC_ARM_REG_PC, handler | 1)

    def _on_intr(self, uc, intno, _ud) -> None:
        if intno != EXC_RETURN_EXIT:
            self._crash(f"CPU exception {intno} at pc=0x{uc.reg_read(A.UC_ARM_REG_PC):08x}")
            uc.emu_stop()
            return
        sp = uc.reg_read(A.UC_ARM_REG_SP)
        f = struct.unpack("<8I", uc.mem_read(sp, 32))
        for r, v in zip(_FRAME_REGS, f[:6], strict=True):
            uc.reg_write(r, v)
        uc.reg_write(A.UC_ARM_REG_XPSR, f[7] & ~0x1FF)
        uc.reg_write(A.UC_ARM_REG_SP, sp + 32 + (4 if f[7] & (1 << 9) else 0))
        uc.reg_write(A.UC_ARM_REG_PC, f[6] | 1)

    def _read_mem(self, address: int, n: int) -> bytes:
        if address < len(self.flash):  # the boot alias: address 0 is flash when booting from it
            address += FLASH_BASE
        return bytes(self.uc.mem_read(address, n))

    # -- clocks ---------------------------------------------------------------------------------
    def sysclk(self) -> float:
        cfgr = self._regs.get(0x40021004, 0)
        sw = cfgr & 3
        if sw == 1:
            return HSE_HZ
        if sw == 2:
            src = HSE_HZ if cfgr >> 16 & 1 else HSI_HZ / 2
            return src * min(((cfgr >> 18) & 0xF) + 2, 16)
        return HSI_HZ

    # -- peripherals (0x40000000–0x4002FFFF) ----------------------------------------------------
    def _rxne(self) -> bool:
        return self._rx_latched is not None

    def _frame_time(self) -> float:
        """Seconds one byte takes on USART1's line: start, 8 or 9 data bits (M), 1 or 2 stop bits, at
        SYSCLK / BRR (APB2 undivided); 0 before BRR is set."""
        brr = self._regs.get(0x40013808, 0)
        if not brr:
            return 0.0
        bits = 1 + (9 if self._regs.get(0x4001380C, 0) >> 12 & 1 else 8)
        bits += 2 if self._regs.get(0x40013810, 0) >> 12 & 3 == 2 else 1
        return bits * brr / self.sysclk()

    def _line(self) -> None:
        """The RX line, on the chip's clock: bytes put on it get their arrival times, one frame apart;
        those due now land in DR — or are lost: ORE when DR still holds an unread byte, or the receiver
        is off."""
        with self._lock:
            new = bytes(self._rx_in)
            self._rx_in.clear()
        if new:
            ft = self._frame_time()
            for b in new:
                self._rx_last = max(self.now, self._rx_last) + ft
                self._rx_line.append((self._rx_last, b))
        cr1 = self._regs.get(0x4001380C, 0)
        on = cr1 & (1 << 13) and cr1 & (1 << 2)
        while self._rx_line and self._rx_line[0][0] <= self.now:
            _, b = self._rx_line.popleft()
            if not on:
                self.rx_lost += 1
            elif self._rx_latched is not None:
                self._ore = True
                self.overruns += 1
            else:
                self._rx_latched = b

    def _usart_irq(self) -> bool:
        cr1 = self._regs.get(0x4001380C, 0)
        if not cr1 & (1 << 13):
            return False
        return bool((cr1 & (1 << 5) and (self._rxne() or self._ore)) or cr1 & (1 << 7) or cr1 & (1 << 6))

    def uart_rx(self, data: bytes) -> None:
        """Put bytes on USART1's RX line (any thread): they arrive one frame time apart."""
        with self._lock:
            self._rx_in += data
        self._wake.set()

    def _periph_read(self, uc, offset, size, _ud) -> int:
        a = 0x40000000 + offset
        if a == 0x40021000:  # RCC_CR: every oscillator that is switched on is ready
            cr = self._regs.get(a, 0x83)
            return cr | (cr & 1) << 1 | (cr >> 16 & 1) << 17 | (cr >> 24 & 1) << 25
        if a == 0x40021004:  # RCC_CFGR: SWS follows SW
            cfgr = self._regs.get(a, 0)
            return (cfgr & ~0xC) | (cfgr & 3) << 2
        if a == 0x40013800:  # USART1_SR: TXE and TC always (the wire takes bytes at once), RXNE, ORE
            return 0xC0 | (0x20 if self._rxne() else 0) | (0x08 if self._ore else 0)
        if a == 0x40013804:  # USART1_DR: the received byte; reading clears RXNE (and ORE, after SR)
            b, self._rx_latched, self._ore = self._rx_latched, None, False
            return b or 0
        port = self._gpio_port(a)
        if port is not None:
            reg = a & 0x3FF
            if reg in (0x08, 0x0C):  # IDR reads what ODR drives (no external inputs modelled)
                return self.gpio[port]
        return self._regs.get(a, 0)

    def _periph_write(self, uc, offset, size, value, _ud) -> None:
        a = 0x40000000 + offset
        if a == 0x40013804:
            self.uart_tx(bytes([value & 0xFF]))
            return
        port = self._gpio_port(a)
        if port is not None:
            reg = a & 0x3FF
            odr = self.gpio[port]
            if reg == 0x0C:
                odr = value & 0xFFFF
            elif reg == 0x10:  # BSRR: set low half, reset high half (set wins)
                odr = (odr & ~(value >> 16)) | (value & 0xFFFF)
            elif reg == 0x14:  # BRR
                odr &= ~value & 0xFFFF
            if reg in (0x0C, 0x10, 0x14):
                if odr != self.gpio[port]:
                    self.gpio[port] = odr
                    if self.on_gpio:
                        self.on_gpio(port, odr)
                return
        self._regs[a] = value

    @staticmethod
    def _gpio_port(a: int) -> str | None:
        for base, name in ((0x40010800, "A"), (0x40010C00, "B"), (0x40011000, "C")):
            if base <= a < base + 0x400:
                return name
        return None

    # -- system control space (0xE000E000) -------------------------------------------------------
    def _scs_read(self, uc, offset, size, _ud) -> int:
        st = self.systick
        if offset == 0x10:
            v = st["ctrl"]
            st["ctrl"] &= ~(1 << 16)  # COUNTFLAG clears on read
            return v
        if offset == 0x14:
            return st["load"]
        if offset == 0x18:  # VAL counts down with wall time
            if not st["ctrl"] & 1:
                return 0
            left = max(0.0, self._tick_due - self.now)
            return min(st["load"], int(left * self.sysclk()))
        if offset == 0x1C:
            return 9000  # CALIB: 1 ms at 9 MHz (HCLK/8)
        if 0x100 <= offset < 0x120:
            return self.nvic_enabled >> (8 * (offset - 0x100)) & 0xFFFFFFFF
        if offset == 0xD00:
            return 0x411FC231  # CPUID: Cortex-M3 r1p1
        if offset == 0xD08:
            return self.vtor
        return self._regs.get(0xE000E000 + offset, 0)

    def _scs_write(self, uc, offset, size, value, _ud) -> None:
        st = self.systick
        if offset == 0x10:
            if value & 1 and not st["ctrl"] & 1:
                self._tick_due = self.now + (st["load"] + 1) / self.sysclk()
            st["ctrl"] = value & 7
        elif offset == 0x14:
            st["load"] = value & 0xFFFFFF
        elif offset == 0x18:
            if st["ctrl"] & 1:
                self._tick_due = self.now + (st["load"] + 1) / self.sysclk()
        elif 0x100 <= offset < 0x120:
            self.nvic_enabled |= value << (8 * (offset - 0x100))
        elif 0x180 <= offset < 0x1A0:
            self.nvic_enabled &= ~(value << (8 * (offset - 0x180)))
        elif offset == 0xD08:
            self.vtor = value & ~0x7F
        elif offset == 0xD0C and value >> 16 == 0x05FA and value & 4:  # AIRCR SYSRESETREQ
            self._running = False
            uc.emu_stop()
            if self.on_reset:
                threading.Thread(target=self.on_reset, daemon=True).start()
        else:
            self._regs[0xE000E000 + offset] = value

    # -- measuring ------------------------------------------------------------------------------
    def count_instructions(self, on: bool = True) -> None:
        """Count executed instructions in `cycles` (slow: a hook per instruction)."""
        if on and self._counting is None:
            self._counting = self.uc.hook_add(UC_HOOK_CODE, self._count)
        elif not on and self._counting is not None:
            self.uc.hook_del(self._counting)
            self._counting = None

    def _count(self, uc, address, size, _ud) -> None:
        self.cycles += 1
