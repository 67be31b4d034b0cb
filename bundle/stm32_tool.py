"""Bench flashing of an STM32 from a PC through a USB-UART, with the CCM's own flasher.

The same `ccm.ota.stm32.flash_image` the CCM runs drives a pyserial port here; BOOT0 and NRST come
from the adapter's RTS and DTR lines (stm32loader's wiring by default: DTR → NRST, RTS → BOOT0).
"""

from __future__ import annotations

import asyncio
import io
import os
import select
import time

import serial

from ccm.ota import an3155 as bl
from ccm.ota.stm32 import PinSequence, flash_image
from ccm.ota.stm32_chips import chip as chip_for
from pc.uart import FdUart


class SerialPort(FdUart):
    """A pyserial port as the flasher's async stream; `set_mode` switches parity (8E1 ⇄ 8N1)."""

    def __init__(self, path: str, baud: int = 115200, parity: str = "E"):
        self.serial = serial.Serial(path, baud, parity=parity, timeout=0, exclusive=True)
        self.fixed_parity = None
        super().__init__(self.serial.fileno())

    def set_mode(self, parity: str) -> None:
        p = self.fixed_parity or parity
        if self.serial.parity != p:
            self.serial.parity = p

    def driver(self) -> PortDriver:
        return PortDriver(self.fd, self.serial.baudrate, 11 if self.serial.parity != "N" else 10)

    def close(self) -> None:
        self.serial.close()


class PortDriver:
    """Runs the bootloader's operations (ccm.ota.an3155) on a port the PC tool has to itself, blocking.

    A 64 KiB flash is ~1,500 turnarounds of one reply at a time, and how soon each reply is answered is
    all a tool adds to the wire and the chip's own time (bench/host_ota.py). So no event loop in the way
    (its reader callback, future, task step and timeout were half of our reaction), and a read polls
    rather than sleeps while its reply is due: a process woken from a sleep reacts several times slower
    than one already running. It sleeps while the reply is surely still far off (the bytes sent and
    awaited on the wire at `baud` take more than SLEEP_BEYOND_S: slow baud rates, an erase), and stops
    polling SPIN_S after the reply could first have come. The price is a busy core while a flash runs at
    115200 baud. `run` keeps the async signature flash_image awaits (it blocks the loop for one operation);
    `run_blocking` is the same without a loop.
    """

    SLEEP_BEYOND_S = 0.05
    SPIN_S = 0.03

    def __init__(self, fd: int, baud: int = 115200, bits_per_byte: int = 10):
        self.fd = fd
        self.byte_s = bits_per_byte / baud
        self.buf = bytearray()
        self.wire_free = 0.0  # when what we wrote will have left the wire

    async def run(self, op):
        return self.run_blocking(op)

    def run_blocking(self, op):
        value = error = None
        while True:
            more, step = bl.advance(op, value, error)
            if not more:
                return step
            value = error = None
            if step[0] == bl.WRITE:
                self._write(step[1])
            else:
                try:
                    value = self._read(step[1], step[2])
                except bl.Timeout as e:
                    error = e

    def _write(self, data) -> None:
        view = memoryview(data)
        self.wire_free = max(self.wire_free, time.monotonic()) + len(view) * self.byte_s
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                select.select([], [self.fd], [], 1)

    def _read(self, n: int, timeout_ms: int) -> bytes:
        now = time.monotonic()
        deadline = now + timeout_ms / 1000
        earliest = max(self.wire_free, now) + (n - len(self.buf)) * self.byte_s  # the reply cannot come sooner
        while len(self.buf) < n:
            now = time.monotonic()
            if now >= deadline:
                raise bl.Timeout(f"the bootloader sent {len(self.buf)} of {n} bytes within {timeout_ms} ms")
            if now < earliest - self.SLEEP_BEYOND_S:
                wait = earliest - self.SLEEP_BEYOND_S - now
            elif now < earliest + self.SPIN_S:
                wait = 0  # poll
            else:
                wait = deadline - now
            if wait == 0 or select.select([self.fd], [], [], wait)[0]:
                try:
                    self.buf += os.read(self.fd, n - len(self.buf))
                except BlockingIOError:
                    pass
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def discard_input(self, quiet_ms: int | None = None, limit_ms: int = 1000) -> None:
        """As AsyncDriver.discard_input: drop what a reset left on its way in, until the line has been quiet
        for 32 byte times (at least 2 ms) — the CCM's 20 ms is for any UART, this port knows its baud."""
        quiet = max(0.002, 32 * self.byte_s) if quiet_ms is None else quiet_ms / 1000
        self.buf.clear()
        end = time.monotonic() + limit_ms / 1000
        while time.monotonic() < end and select.select([self.fd], [], [], quiet)[0]:
            try:
                os.read(self.fd, 256)
            except BlockingIOError:
                pass


class RtsDtrLines:
    """BOOT0 and NRST on a USB-UART's modem lines. pyserial's `rts = True` drives the pin low."""

    def __init__(self, port: serial.Serial, reset_line: str = "dtr", boot0_line: str = "rts"):
        self.port = port
        self.reset_line = reset_line
        self.boot0_line = boot0_line

    def _set(self, line: str, level: bool) -> None:
        setattr(self.port, line, not level)

    def boot0(self, level: bool) -> None:
        self._set(self.boot0_line, level)

    def reset(self, level: bool) -> None:
        self._set(self.reset_line, level)


class NoLines:
    """Nothing wired: the user puts the chip into its bootloader by hand (BOOT0 jumper, reset button)."""

    wired = False

    def boot0(self, level: bool) -> None:
        pass

    def reset(self, level: bool) -> None:
        pass


def open_port(
    path: str, baud: int, parity: str, lines: str, reset_active_high: bool, boot0_active_low: bool, swap: bool
):
    port = SerialPort(path, baud, "E" if parity == "8e1" else "N")
    if parity == "8n1":
        port.fixed_parity = "N"  # e.g. a pty, which carries no parity bits
    if lines == "none":
        wiring = NoLines()
    else:
        wiring = RtsDtrLines(port.serial, "rts" if swap else "dtr", "dtr" if swap else "rts")
    pins = PinSequence(
        wiring, boot0_active_high=not boot0_active_low, reset_active_low=not reset_active_high, pulse_ms=50, boot_ms=100
    )
    return port, pins


async def flash(port, pins, image: bytes, address: int, progress=None) -> dict:
    return await flash_image(lambda: io.BytesIO(image), address, len(image), port, pins, progress)


async def connect(port, pins) -> bl.Info:
    port.set_mode("E")
    await pins.bootloader()
    drv = port.driver()
    info = bl.Info()
    await drv.run(bl.op_connect(info))
    return info


async def read(port, pins, address: int, size: int, progress=None) -> bytes:
    info = await connect(port, pins)
    drv = port.driver()
    out = bytearray()
    while len(out) < size:
        n = min(256, size - len(out))
        out += await drv.run(bl.op_read(address + len(out), n))
        if progress:
            progress("read", len(out), size)
    await pins.application()
    port.set_mode("N")
    del info
    return bytes(out)


async def erase(port, pins, pages: list[int] | None) -> tuple[bl.Info, int]:
    info = await connect(port, pins)
    drv = port.driver()
    if pages is None:
        await drv.run(bl.op_erase(info, None))
        count = chip_for(info.pid).page_count()
    else:
        for i in range(0, len(pages), 64):
            await drv.run(bl.op_erase(info, pages[i : i + 64]))
        count = len(pages)
    await pins.application()
    port.set_mode("N")
    return info, count


def run(coro):
    return asyncio.run(coro)
