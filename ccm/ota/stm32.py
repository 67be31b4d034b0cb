"""Re-flashing the host STM32 through its ROM bootloader (docs/protocol.md, OTA): the host-update step.

`flash_image(read, address, size, port, pins)` does one whole update from a stream of image bytes:
BOOT0 high and a reset pulse, the UART to 8E1, sync, Get/Get ID (a chip the image does not fit is
refused before anything is erased), erase only the pages the image covers, write 256-byte blocks
(blocks of 0xFF are skipped: erased flash already reads so), verify (Get Checksum 0xA1 when the
bootloader lists it, else each block read back as it is written), BOOT0 low, reset, UART back to 8N1.
Any failure (NACK, silence, a host reset mid-write) starts the whole update again, a bounded number of
times: the bootloader is in ROM, so the host is always recoverable.

Who drives it — the pins, the UART lent by the link, the record that resumes a flash after a reboot —
is ccm/ota/host.py.
"""

from ccm.compat import sleep_ms_async
from ccm.ota import an3155 as bl
from ccm.ota.stm32_chips import chip as chip_for

BLOCK = 256


class FlashError(Exception):
    pass


class ImageDoesNotFit(FlashError):
    pass


class PinSequence:
    """How BOOT0 and NRST are driven: `lines.boot0(level)`, `lines.reset(level)` take electrical levels.

    Polarity and timing are data: BOOT0 active high and NRST active low on every STM32, but a level
    shifter or a USB-UART's inverted RTS/DTR may flip either.
    """

    def __init__(self, lines, boot0_active_high=True, reset_active_low=True, pulse_ms=20, boot_ms=50):
        self.lines = lines
        self.boot0_active_high = boot0_active_high
        self.reset_active_low = reset_active_low
        self.pulse_ms = pulse_ms
        self.boot_ms = boot_ms

    async def _reset_into(self, boot0):
        if not getattr(self.lines, "wired", True):
            return  # nothing to drive: someone put the chip where it has to be by hand
        self.lines.boot0(boot0 == self.boot0_active_high)
        self.lines.reset(not self.reset_active_low)  # asserted
        await sleep_ms_async(self.pulse_ms)
        self.lines.reset(self.reset_active_low)  # released: the chip samples BOOT0 and starts
        await sleep_ms_async(self.boot_ms)

    async def bootloader(self):
        await self._reset_into(True)

    async def application(self):
        await self._reset_into(False)


def _page_of(chip, addr):
    return chip.pages_covering(addr, addr + 1)[0]


def _all_ff(block):
    for b in block:
        if b != 0xFF:
            return False
    return True


async def flash_image(open_image, address, size, port, pins, progress=None, retries=3, only_pages=None):
    """One update. `open_image()` gives a fresh stream of the image (`read(n)`) for each attempt.

    `port`: read/write/drain and `set_mode(parity)`; `progress(stage, done, total)`. `only_pages`: erase
    and write just these pages (the rest of the chip already holds this image). Returns a summary.
    """
    last = None
    for attempt in range(retries):
        try:
            stream = open_image()
            return await _attempt(stream, address, size, port, pins, progress, only_pages)
        except ImageDoesNotFit:
            await _leave(port, pins)
            raise
        except (bl.BootloaderError, OSError) as e:
            last = e
            if progress:
                progress("retry", attempt + 1, retries)
    await _leave(port, pins)
    raise FlashError("host flash failed after %d attempts: %s" % (retries, last))


async def _leave(port, pins):
    port.set_mode("N")
    await pins.application()


async def _attempt(stream, address, size, port, pins, progress, only_pages=None):
    port.set_mode("E")  # AN3155: 8 data bits, even parity, 1 stop bit
    # a port may bring a driver of its own (the PC's, blocking); the CCM's UART uses the asyncio one
    drv = port.driver() if hasattr(port, "driver") else bl.AsyncDriver(port)
    await pins.bootloader()
    await drv.discard_input()
    info = bl.Info()
    await drv.run(bl.op_connect(info))
    chip = chip_for(info.pid)
    if not chip.fits(address, size):
        raise ImageDoesNotFit(
            "the image (%d bytes at 0x%08X) does not fit %s (flash 0x%08X-0x%08X): nothing was erased"
            % (size, address, chip.name, 0x08000000, chip.flash_end)
        )
    pages = chip.pages_covering(address, address + size)
    if only_pages is not None:
        pages = [p for p in pages if p in only_pages]
    if progress:
        progress("erase", 0, len(pages))
    for i in range(0, len(pages), 64):  # a few pages per command: each ACK comes within its timeout
        await drv.run(bl.op_erase(info, pages[i : i + 64]))
    if progress:
        progress("erase", len(pages), len(pages))
    use_crc = info.has(bl.GET_CHECKSUM)
    crc = 0xFFFFFFFF
    done = 0
    written = skipped = 0
    while done < size:
        block = stream.read(min(BLOCK, size - done))
        if not block:
            raise FlashError("the image ended at %d of %d bytes" % (done, size))
        if len(block) % 4:
            block = bytes(block) + b"\xff" * (4 - len(block) % 4)
        if use_crc:
            crc = bl.stm32_crc(block, crc)
        if only_pages is not None and _page_of(chip, address + done) not in only_pages:
            pass  # unchanged: the chip already holds these bytes
        elif _all_ff(block):
            skipped += 1
        else:
            await drv.run(bl.op_write(address + done, block))
            if not use_crc:
                back = await drv.run(bl.op_read(address + done, len(block)))
                if bytes(back) != bytes(block):
                    raise bl.BootloaderError("verify failed at 0x%08X" % (address + done))
            written += 1
        done += min(BLOCK, size - done)
        if progress:
            progress("write", done, size)
    if use_crc:
        padded = (size + 3) & ~3
        got = await drv.run(bl.op_checksum(address, padded))
        if got != crc:
            raise bl.BootloaderError("checksum 0x%08X from the chip, 0x%08X expected" % (got, crc))
    if progress:
        progress("verify", size, size)
    await _leave(port, pins)
    return {
        "pid": info.pid,
        "incremental": only_pages is not None,
        "chip": chip.name,
        "bootloader": info.version,
        "pages_erased": len(pages),
        "blocks_written": written,
        "blocks_skipped": skipped,
        "verified_by": "checksum" if use_crc else "read-back",
    }
