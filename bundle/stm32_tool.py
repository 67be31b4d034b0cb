"""Bench flashing of an STM32 from a PC through a USB-UART, with the CCM's own flasher.

The same `ccm.ota.stm32.flash_image` the CCM runs drives a pyserial port here; BOOT0 and NRST come
from the adapter's RTS and DTR lines (stm32loader's wiring by default: DTR → NRST, RTS → BOOT0).
"""

from __future__ import annotations

import asyncio
import io

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

    def close(self) -> None:
        self.serial.close()


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
    drv = bl.AsyncDriver(port)
    info = bl.Info()
    await drv.run(bl.op_connect(info))
    return info


async def read(port, pins, address: int, size: int, progress=None) -> bytes:
    info = await connect(port, pins)
    drv = bl.AsyncDriver(port)
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
    drv = bl.AsyncDriver(port)
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
