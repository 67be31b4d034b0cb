"""Re-flashing the host STM32 through its ROM bootloader (DESIGN §6): the host-update step.

`flash_image(read, address, size, port, pins)` does one whole update from a stream of image bytes:
BOOT0 high and a reset pulse, the UART to 8E1, sync, Get/Get ID (a chip the image does not fit is
refused before anything is erased), erase only the pages the image covers, write 256-byte blocks
(blocks of 0xFF are skipped: erased flash already reads so), verify (Get Checksum 0xA1 when the
bootloader lists it, else each block read back as it is written), BOOT0 low, reset, UART back to 8N1.
Any failure (NACK, silence, a host reset mid-write) starts the whole update again, a bounded number of
times: the bootloader is in ROM, so the host is always recoverable.

`update_host(path, …)` wraps it with a marker file, so an update cut short by a CCM reboot is done
again at the next boot (`resume`), and with the wait for the host's `Sys.Info` afterwards.
"""

from ccm.compat import sleep_ms_async
from ccm.files import read_json, remove, write_json
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


class BoardLines:
    """BOOT0 and NRST on two GPIOs of the CCM (host.ota.stm32.boot0_pin / rst_pin)."""

    def __init__(self, board, boot0_pin, rst_pin, rst_open_drain=True):
        self.board = board
        self.boot0_pin = boot0_pin
        self.rst_pin = rst_pin
        self.rst_open_drain = rst_open_drain

    def boot0(self, level):
        self.board.pin_write(self.boot0_pin, 1 if level else 0)

    def reset(self, level):
        self.board.pin_write(self.rst_pin, 1 if level else 0, self.rst_open_drain)


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


def page_digests(stream, chip, address, size):
    """{page: digest} of the image's bytes in each page it covers: what tells changed pages apart."""
    import hashlib

    out = {}
    done = 0
    for page in chip.pages_covering(address, address + size):
        start, psize = chip.page_bounds(page)
        lo = max(start, address)
        hi = min(start + psize, address + size)
        h = hashlib.sha256()
        left = hi - lo
        while left:
            chunk = stream.read(min(BLOCK, left))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
            done += len(chunk)
        out[str(page)] = _hex(h.digest()[:12])
    return out


def _hex(b):
    import binascii

    return binascii.hexlify(b).decode()


async def _attempt(stream, address, size, port, pins, progress, only_pages=None):
    drv = bl.AsyncDriver(port)
    port.set_mode("E")  # AN3155: 8 data bits, even parity, 1 stop bit
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


class UpdateMarker:
    """The file that says a host update is under way: written before the first erase, removed after
    success. Found at boot, it means the last update was cut short and must be done again."""

    def __init__(self, path):
        self.path = path

    def set(self, image, address, size):
        self.set_record({"image": image, "address": address, "size": size})

    def set_record(self, record):
        write_json(self.path, record)

    def get(self):
        return read_json(self.path) or None

    def clear(self):
        remove(self.path)


class FlashedImage:
    """What the CCM last flashed onto the host: its SHA-256 and per-page digests. When the host reports
    running exactly that (`fw_id` in Sys.Info), the next update rewrites only the pages that differ."""

    def __init__(self, path):
        self.path = path

    def get(self):
        return UpdateMarker(self.path).get()

    def set(self, record):
        UpdateMarker(self.path).set_record(record)


def _sha256_file(path):
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1024)
            if not chunk:
                return _hex(h.digest())
            h.update(chunk)


async def update_host(link, board, config, image, address, size, progress=None, marker_path=None, retries=3):
    """Flash the staged image file onto the host, then wait for the host's Sys.Info (its answer is
    returned). The host link is paused meanwhile: forwarded calls get -32004 busy."""
    cfg = config.get("host.ota.stm32")
    pins = PinSequence(BoardLines(board, cfg["boot0_pin"], cfg["rst_pin"], cfg.get("rst_open_drain", True)))
    marker = UpdateMarker(marker_path) if marker_path else None
    record = FlashedImage(marker_path.replace("host_ota.json", "host_image.json")) if marker_path else None
    only = None
    if record and not (marker and marker.get()):  # never incremental when finishing an interrupted update
        prev = record.get()
        running = await _host_fw_id(link)
        if prev and running and prev.get("fw_id") == running and prev.get("address") == address:
            chip = chip_for(prev["pid"])
            with open(image, "rb") as f:
                now = page_digests(f, chip, address, size)
            only = [int(p) for p, d in now.items() if prev["pages"].get(p) != d]
    if marker:
        marker.set(image, address, size)
    port = link.borrow()
    port.bauds = {"E": cfg["uart"]["baud_rate"], "N": config.get("host.rpc.uart.baud_rate")}
    try:
        summary = await flash_image(lambda: open(image, "rb"), address, size, port, pins, progress, retries, only)
    finally:
        link.give_back()
    if marker:
        marker.clear()
    if record:
        chip = chip_for(summary["pid"])
        with open(image, "rb") as f:
            pages = page_digests(f, chip, address, size)
        record.set(
            {"fw_id": _sha256_file(image), "pid": summary["pid"], "address": address, "size": size, "pages": pages}
        )
    summary["host"] = await wait_for_host(link)
    return summary


async def _host_fw_id(link):
    from ccm.rpc import RpcError

    try:
        info = await link.call("Sys.Info", None, 1000)
    except RpcError:
        return None
    return info.get("fw_id") if type(info) is dict else None


async def wait_for_host(link, timeout_ms=10000):
    """The freshly booted host's Sys.Info; None if it stays silent (a garbage image)."""
    from ccm.compat import ticks_diff, ticks_ms
    from ccm.rpc import RpcError

    t0 = ticks_ms()
    while ticks_diff(ticks_ms(), t0) < timeout_ms:
        try:
            info = await link.call("Sys.Info", None, 500)
            link.info = info
            return info
        except RpcError:
            await sleep_ms_async(100)
    return None


async def resume(link, board, config, marker_path, progress=None):
    """At boot: finish an update a reboot interrupted. None when there was none."""
    m = UpdateMarker(marker_path).get()
    if not m:
        return None
    return await update_host(link, board, config, m["image"], m["address"], m["size"], progress, marker_path)
