"""Re-flashing the host, owned here from the pins to the host's first answer (docs/architecture.md).

`HostUpdate` drives BOOT0/NRST through the board, lends the flasher the host UART (JSON-RPC pauses:
forwarded calls get -32004 busy), flashes through the STM32 ROM bootloader (ccm/ota/stm32.py), waits for
the host's `Sys.Info`, and keeps two files:

- `host_ota.json`, the one record of a flash under way: written before the first erase, removed after
  success. Found at boot, the flash was cut short and is done again (`pending()`, `resume()`); when it
  came from a bundle the record names it (`ota`), and the OTA receiver finishes and reports the update.
  A flash the heap has no room for beside the running firmware (`short_of_heap()`: a stock image on a
  plain ESP32) is left to the next boot the same way (`defer()`): that boot flashes before it starts
  the network and the cloud (ccm/parts.py).
- `host_image.json`, what was last flashed (its SHA-256 and per-page digests): when the host reports
  running exactly that (`fw_id` in Sys.Info), the next flash rewrites only the pages that differ.
"""

import asyncio

from ccm.compat import sleep_ms_async, unload
from ccm.files import read_json, remove, write_json

# The flasher (ccm/ota/stm32.py, an3155.py, the chip table: ~20 KB of heap with .mpy files) is imported
# only while the host is flashed: a boot holds only this module.


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


# free heap a flash beside the running firmware wants: its code (~18 KB as .mpy) and buffers, and as much
# again for fragmentation (measured on 32-bit: with 48 KiB free a flash failed on 1 KiB, 27 KiB still free)
FLASH_HEAP = 64 * 1024


class HostUpdate:
    def __init__(self, link, board, config, fs_root, spawn):
        self.link = link
        self.board = board
        self.config = config
        root = (fs_root.rstrip("/") if fs_root else "") + "/"
        self.record_path = root + "host_ota.json"
        self.image_path = root + "host_image.json"
        self.spawn = spawn  # runs work that belongs to this boot: a reboot cuts a flash short
        self.last = None  # the summary of the last flash this boot (with the host's Sys.Info)

    def wired(self):
        """False when this board cannot drive the host's BOOT0/NRST: nothing can be flashed."""
        return self.board.host_pins and self.link is not None

    def pins_idle(self):
        """BOOT0 low from boot on: whatever resets the host (its watchdog, a brown-out), it starts its
        application, not the ROM bootloader a floating pin might pick."""
        if self.board.host_pins:
            self.board.pin_write(self.config.get("host.ota.stm32.boot0_pin"), 0)

    def pending(self):
        """The record of a flash a reboot cut short (or left to the next boot: `deferred`), or None."""
        return read_json(self.record_path) or None

    def short_of_heap(self):
        """True when the flasher would not fit in the heap beside the running firmware."""
        return self.board.heap_short(FLASH_HEAP)

    def defer(self):
        """Leave a bundle's flash to the next boot (the OTA receiver resumes its job there): recorded as
        not started, so it may still be incremental."""
        write_json(self.record_path, {"deferred": True})

    async def flash(self, image, address, size, progress=None, ota=None):
        """Flash the staged image file onto the host and return the summary, `host` being its Sys.Info
        afterwards (None: the image does not boot). `ota`: the bundle this comes from, kept in the record."""
        job = self.spawn(self._flash(image, address, size, progress, ota))
        self.last = await job
        return self.last

    async def resume(self, progress=None):
        """At boot: finish the flash a reboot cut short. None when there was none."""
        r = self.pending()
        if r is None:
            return None
        if "image" not in r:  # a bundle's flash left to this boot, whose job is gone: nothing to flash
            remove(self.record_path)
            return None
        return await self.flash(r["image"], r["address"], r["size"], progress, r.get("ota"))

    async def _flash(self, image, address, size, progress, ota):
        from ccm.ota.stm32_chips import chip as chip_for

        only = None
        rec = self.pending()
        if rec is None or rec.get("deferred"):  # a flash cut short is done whole: the host may hold any mix
            only = await self._changed_pages(image, address, size)
        record = {"image": image, "address": address, "size": size}
        if ota is not None:
            record["ota"] = ota
        summary = await self._write(record, progress, only)
        unload("ccm.ota.stm32", "ccm.ota.an3155")  # the flasher's code goes before the record is made
        remove(self.record_path)
        chip = chip_for(summary["pid"])
        with open(image, "rb") as f:
            pages = page_digests(f, chip, address, size)
        flashed = {"fw_id": fw_id_of(image), "pid": summary["pid"], "address": address, "size": size}
        flashed["pages"] = pages
        write_json(self.image_path, flashed)
        summary["host"] = await wait_for_host(self.link)
        return summary

    async def _write(self, record, progress, only):
        """The chip written through its ROM bootloader (ccm/ota/stm32.py, loaded for this), the host UART
        borrowed from the link meanwhile; `record` is kept from just before the first erase: the summary."""
        from ccm.ota.stm32 import PinSequence, flash_image

        cfg = self.config.get("host.ota.stm32")
        pins = PinSequence(BoardLines(self.board, cfg["boot0_pin"], cfg["rst_pin"], cfg.get("rst_open_drain", True)))
        image, address, size = record["image"], record["address"], record["size"]
        write_json(self.record_path, record)
        port = self.link.borrow(RawPort(self.link))
        port.bauds = {"E": cfg["uart"]["baud_rate"], "N": self.config.get("host.rpc.uart.baud_rate")}
        try:
            return await flash_image(lambda: open(image, "rb"), address, size, port, pins, progress, 3, only)
        finally:
            self.link.give_back()

    async def _changed_pages(self, image, address, size):
        """The pages that differ from what the host runs, when it runs what we flashed last; else None."""
        prev = read_json(self.image_path)
        if not prev or prev.get("address") != address:
            return None
        from ccm.ota.stm32_chips import chip as chip_for

        running = await _host_fw_id(self.link)
        if not running or prev.get("fw_id") != running:
            return None
        with open(image, "rb") as f:
            now = page_digests(f, chip_for(prev["pid"]), address, size)
        return [int(p) for p, d in now.items() if prev["pages"].get(p) != d]


def page_digests(stream, chip, address, size):
    """{page: digest} of the image's bytes in each page it covers: what tells changed pages apart."""
    import binascii
    import hashlib

    out = {}
    for page in chip.pages_covering(address, address + size):
        start, psize = chip.page_bounds(page)
        left = min(start + psize, address + size) - max(start, address)
        h = hashlib.sha256()
        while left:
            chunk = stream.read(min(256, left))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
        out[str(page)] = binascii.hexlify(h.digest()[:12]).decode()
    return out


FW_ID_MARKER = b"CCMFWID1"  # host_lib/c's slot: the marker, then 16 hex digits the build stamped (pc/fwid.py)


def fw_id_of(path):
    """What the host will report as `fw_id` once it runs this image: the id the build stamped into it
    (host_lib/c), else — an image without the slot — its SHA-256 (what other hosts report)."""
    import binascii
    import hashlib

    h = hashlib.sha256()
    tail = b""
    stamped = None
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1024)
            if not chunk:
                return stamped or binascii.hexlify(h.digest()).decode()
            h.update(chunk)
            if stamped is None:
                window = tail + chunk  # a marker split across two reads is found too
                i = window.find(FW_ID_MARKER)
                if i >= 0 and len(window) >= i + 24:
                    digits = bytes(window[i + 8 : i + 24])
                    stamped = digits.decode() if digits != b"0" * 16 else ""
                tail = window[-23:]


async def call(link, method, params=None, timeout_ms=None):
    """A host method's result over the link, or RpcError (the host's error, -32000 timeout, -32002
    queue full): the flasher's asking after the host it flashed."""
    from ccm.compat import Waiter
    from ccm.rpc import result

    w = Waiter()
    link.call_cb(method, params, w.set, timeout_ms)
    return result(await w.wait())


async def _host_fw_id(link):
    from ccm.rpc import RpcError

    try:
        info = await call(link, "Sys.Info", None, 1000)
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
            info = await call(link, "Sys.Info", None, 500)
            link.info = info
            return info
        except RpcError:
            await sleep_ms_async(100)
    return None


class RawPort:
    """The host UART as a plain byte stream while the link lends it out (HostLink.borrow), for the flasher;
    bounded: a babbling host cannot fill RAM. Here, not in ccm/link.py: only a host flash needs it."""

    LIMIT = 4096

    def __init__(self, link):
        self.link = link
        self.buf = b""
        self.ev = asyncio.Event()

    def feed(self, data):
        self.buf = (self.buf + data)[-self.LIMIT :]
        self.ev.set()

    async def read(self, n):
        while not self.buf:
            self.ev.clear()
            await self.ev.wait()
        data = self.buf[:n]
        self.buf = self.buf[n:]
        return data

    def write(self, data):
        self.link.stream.write(data)

    async def drain(self):
        await self.link.stream.drain()

    bauds = {}  # parity -> baud rate ({"E": host.ota.stm32.uart.baud_rate, "N": host.rpc.uart.baud_rate})

    def set_mode(self, parity):
        """8E1 ("E") for the bootloader, 8N1 ("N") for JSON-RPC, through the board's UART, each at its
        own baud rate when `bauds` names one."""
        if self.link.set_parity is not None:
            baud = self.bauds.get(parity)
            if baud:
                self.link.set_parity(parity, baud)
            else:
                self.link.set_parity(parity)
