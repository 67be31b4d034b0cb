"""A virtual STM32: the AN3155 system bootloader, a flash array, BOOT0/RST, and the application it boots.

    with VirtualStm32("f103") as mcu:       # a pty; mcu.path is what stm32flash or the CCM opens
        mcu.reset(boot0=True)               # into the bootloader (a pty has no RTS/DTR: tests call this)
        ...
        mcu.reset(boot0=False)              # boots the flashed image

`Stm32Core` is the bootloader as a sans-I/O state machine (bytes in → bytes out, plus how long the chip
would be busy). `VirtualStm32` puts it on a pty with an optional timing model: every byte costs its
wire time (8E1: 11 bits), erase and program the datasheet times.

Booted with BOOT0 low, the chip **executes the firmware in its flash**: a Cortex-M3 core (`sim.cortexm`,
unicorn) with RCC, GPIO, USART1 on this same pty and SysTick — e.g. examples/stm32-lamp, built with
arm-none-eabi-gcc on host_lib/c. An image that does not boot (no vector table, a fault) is silent on
the UART, as a real chip is; the bootloader still recovers it.

Synthetic test images (`make_app_image`, by the thousand in the OTA tests and benches) carry a marker
instead, `CCMAPP1:` + a JSON object + NUL in their first 16 KiB, e.g.
`CCMAPP1:{"version":"2.0","app":"lamp","size":65536}\\0`; for those a host_lib stand-in answers
JSON-RPC at 8N1 (`Sys.Info` gives `fw_version` = version and `fw_id` = SHA-256 of the first `size`
bytes of flash; `RPC.List`; `Sum`; a `Shadow.Delta` is applied to a lamp state and reported back).
"""

from __future__ import annotations

import hashlib
import json
import queue
import struct
import threading
import time

from ccm.ota import an3155 as bl
from ccm.ota.stm32_chips import CHIPS, FLASH_BASE
from sim.ptydevice import PtyDevice

MARKER = b"CCMAPP1:"


class Profile:
    def __init__(self, pid, bl_version=None, erase=None, crc=False, erase_ms=(20.0,), prog_us=52.5, prog_unit=2):
        self.chip = CHIPS[pid]
        self.bl_version = bl_version or self.chip.bl_version
        self.erase = erase or self.chip.erase
        self.crc = crc
        self.erase_ms = erase_ms  # per page, or per sector size class (F4)
        self.prog_us = prog_us  # per programming unit
        self.prog_unit = prog_unit  # bytes programmed at once (F1: half-word)


# Datasheet figures: STM32F103x8/B DS5319 tERASE 20–40 ms per page, tPROG 52.5 µs typ per half-word;
# STM32F411 DS10314 sector erase 16 KiB 250 ms, 64 KiB 550 ms, 128 KiB 1 s (typ), x32 program 16 µs/word.
PROFILES = {
    "f103": Profile(0x410, 0x22, bl.ERASE, False, (20.0,), 52.5, 2),
    "f411": Profile(0x431, 0x31, bl.EXTENDED_ERASE, False, (250.0, 550.0, 1000.0), 16.0, 4),
    "g071": Profile(0x460, 0xB3, bl.EXTENDED_ERASE, True, (22.0,), 85.0, 8),
}


def make_app_image(version: str, size: int = 64 * 1024, app: str = "virtual_host", seed: int = 1) -> bytes:
    """A bootable test image: vector table, the app marker, and deterministic filler up to `size`."""
    vectors = struct.pack("<II", 0x20005000, FLASH_BASE + 0x101)
    marker = MARKER + json.dumps({"version": version, "app": app, "size": size}).encode() + b"\0"
    body = bytearray(vectors + marker)
    x = seed * 2654435761 & 0xFFFFFFFF
    while len(body) < size:
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        body += struct.pack("<I", x)
    return bytes(body[:size])


def read_marker(flash: bytes) -> dict | None:
    i = flash.find(MARKER, 0, 16 * 1024)
    if i < 0:
        return None
    end = flash.find(b"\0", i, i + 1024)
    try:
        return json.loads(flash[i + len(MARKER) : end])
    except ValueError:
        return None


class Stm32Core:
    """The bootloader and the flash. `feed(data)` returns (bytes to send, microseconds the chip is busy)."""

    def __init__(self, profile: Profile, readout_protected: bool = False):
        self.p = profile
        self.chip = profile.chip
        self.flash = bytearray(b"\xff" * self.chip.flash_size)
        self.ram = bytearray(self.chip.ram[1] - self.chip.ram[0])
        self.rdp = readout_protected
        cmds = [bl.GET, bl.GET_VERSION, bl.GET_ID, bl.READ_MEMORY, bl.GO, bl.WRITE_MEMORY, profile.erase]
        cmds += [bl.WRITE_PROTECT, bl.WRITE_UNPROTECT, bl.READOUT_PROTECT, bl.READOUT_UNPROTECT]
        if profile.crc:
            cmds.append(bl.GET_CHECKSUM)
        self.commands = bytes(cmds)
        self.out = bytearray()
        self.busy_us = 0.0
        self.events: list[str] = []  # what happened, for tests: "erase 0-3", "write 0x08000000+256", …
        self.go_address: int | None = None
        self.reset_requested = False
        self.restart()

    def restart(self):
        """Power-on or system reset into the bootloader: it waits for 0x7F again."""
        self._parser = self._session()
        next(self._parser)

    def feed(self, data: bytes) -> tuple[bytes, float]:
        for b in data:
            self._parser.send(b)
        out, busy = bytes(self.out), self.busy_us
        self.out.clear()
        self.busy_us = 0.0
        return out, busy

    # -- memory map -----------------------------------------------------------------------------
    def _system_bytes(self, address: int, n: int) -> bytes | None:
        c = self.chip
        mem = bytearray(b"\xff" * n)
        size = struct.pack("<H", c.flash_size // 1024)
        uid = hashlib.sha256(b"%x" % c.pid).digest()[:12]
        for base, blob in ((c.size_reg, size), (c.uid, uid)):
            for i in range(n):
                j = address + i - base
                if 0 <= j < len(blob):
                    mem[i] = blob[j]
        return bytes(mem)

    def _region(self, address: int, n: int):
        """('flash'|'ram'|'system', offset) when [address, address+n) is readable memory, else None."""
        c = self.chip
        if FLASH_BASE <= address and address + n <= c.flash_end:
            return "flash", address - FLASH_BASE
        if c.ram[0] <= address and address + n <= c.ram[1]:
            return "ram", address - c.ram[0]
        lo = min(c.sysmem[0], c.size_reg, c.uid) & ~0xFFF
        if lo <= address and address + n <= max(c.sysmem[1], c.size_reg + 2, c.uid + 12, c.sysmem[0] + 0x10000):
            return "system", address
        return None

    # -- the protocol ---------------------------------------------------------------------------
    def _take(self, n: int):
        buf = bytearray()
        while len(buf) < n:
            buf.append((yield))
        return bytes(buf)

    def _address(self):
        raw = yield from self._take(5)
        if raw[0] ^ raw[1] ^ raw[2] ^ raw[3] != raw[4]:
            return None
        return raw[0] << 24 | raw[1] << 16 | raw[2] << 8 | raw[3]

    def _session(self):
        while (yield) != bl.SYNC:  # AN3155 §2: the bootloader waits for 0x7F to measure the baud rate
            pass
        self.out.append(bl.ACK)
        handlers = {
            bl.GET: self._get,
            bl.GET_VERSION: self._get_version,
            bl.GET_ID: self._get_id,
            bl.READ_MEMORY: self._read,
            bl.WRITE_MEMORY: self._write,
            bl.ERASE: self._erase,
            bl.EXTENDED_ERASE: self._extended_erase,
            bl.GO: self._go,
            bl.GET_CHECKSUM: self._checksum,
            bl.READOUT_UNPROTECT: self._readout_unprotect,
            bl.READOUT_PROTECT: self._readout_protect,
            bl.WRITE_PROTECT: self._protect_noop,
            bl.WRITE_UNPROTECT: self._protect_noop,
        }
        while True:
            code = yield
            check = yield
            if code ^ check != 0xFF or code not in self.commands:
                self.out.append(bl.NACK)
                continue
            if self.rdp and code in (
                bl.READ_MEMORY,
                bl.WRITE_MEMORY,
                bl.ERASE,
                bl.EXTENDED_ERASE,
                bl.GO,
                bl.GET_CHECKSUM,
            ):
                self.out.append(bl.NACK)  # AN3155: refused while readout protection is active
                continue
            self.out.append(bl.ACK)
            yield from handlers[code]()

    def _get(self):
        self.out += bytes([len(self.commands), self.p.bl_version]) + self.commands + bytes([bl.ACK])
        return
        yield

    def _get_version(self):
        self.out += bytes([self.p.bl_version, 0, 0, bl.ACK])
        return
        yield

    def _get_id(self):
        self.out += bytes([1, self.chip.pid >> 8, self.chip.pid & 0xFF, bl.ACK])
        return
        yield

    def _read(self):
        address = yield from self._address()
        if address is None or self._region(address, 1) is None:
            self.out.append(bl.NACK)
            return
        self.out.append(bl.ACK)
        n, check = yield from self._take(2)
        where = self._region(address, n + 1)
        if n ^ check != 0xFF or where is None:
            self.out.append(bl.NACK)
            return
        kind, off = where
        data = {"flash": lambda: self.flash[off : off + n + 1], "ram": lambda: self.ram[off : off + n + 1]}.get(
            kind, lambda: self._system_bytes(address, n + 1)
        )()
        self.out.append(bl.ACK)
        self.out += data

    def _write(self):
        address = yield from self._address()
        where = self._region(address, 1) if address is not None else None
        if where is None or where[0] == "system" or address % 4:
            self.out.append(bl.NACK)
            return
        self.out.append(bl.ACK)
        n = yield
        data = yield from self._take(n + 1)
        check = yield
        x = n
        for b in data:
            x ^= b
        where = self._region(address, n + 1)
        if x != check or where is None:
            self.out.append(bl.NACK)
            return
        kind, off = where
        if kind == "ram":
            self.ram[off : off + n + 1] = data
        else:
            old = self.flash[off : off + n + 1]
            if any(o != 0xFF and o != d for o, d in zip(old, data, strict=True)):
                self.events.append("write refused 0x%08X: not erased" % address)
                self.out.append(bl.NACK)  # flash bits only go from 1 to 0 without an erase
                return
            self.flash[off : off + n + 1] = data
            self.busy_us += (n + 1) / self.p.prog_unit * self.p.prog_us
        self.events.append("write 0x%08X+%d" % (address, n + 1))
        self.out.append(bl.ACK)

    def _erase_pages(self, pages):
        for page in pages:
            start, size = self.chip.page_bounds(page)
            off = start - FLASH_BASE
            self.flash[off : off + size] = b"\xff" * size
            ms = self.p.erase_ms
            self.busy_us += 1000 * (
                ms[0] if len(ms) == 1 else ms[0] if size <= 16384 else ms[1] if size <= 65536 else ms[2]
            )
        self.events.append("erase %s" % (",".join(str(p) for p in pages)))

    def _mass_erase(self):
        self._erase_pages(range(self.chip.page_count()))
        self.events.append("mass erase")

    def _erase(self):
        n = yield
        if n == 0xFF:
            check = yield
            if check != 0x00:
                self.out.append(bl.NACK)
                return
            self._mass_erase()
            self.out.append(bl.ACK)
            return
        pages = yield from self._take(n + 1)
        check = yield
        x = n
        for p in pages:
            x ^= p
        if x != check or any(p >= self.chip.page_count() for p in pages):
            self.out.append(bl.NACK)
            return
        self._erase_pages(pages)
        self.out.append(bl.ACK)

    def _extended_erase(self):
        hi, lo = yield from self._take(2)
        n = hi << 8 | lo
        if n >= 0xFFF0:
            check = yield
            if check != hi ^ lo or n not in (0xFFFF, 0xFFFE, 0xFFFD):
                self.out.append(bl.NACK)
                return
            self._mass_erase()
            self.out.append(bl.ACK)
            return
        raw = yield from self._take(2 * (n + 1))
        check = yield
        x = hi ^ lo
        for b in raw:
            x ^= b
        pages = [raw[i] << 8 | raw[i + 1] for i in range(0, len(raw), 2)]
        if x != check or any(p >= self.chip.page_count() for p in pages):
            self.out.append(bl.NACK)
            return
        self._erase_pages(pages)
        self.out.append(bl.ACK)

    def _go(self):
        address = yield from self._address()
        if address is None or self._region(address, 4) is None:
            self.out.append(bl.NACK)
            return
        self.out.append(bl.ACK)
        self.go_address = address

    def _checksum(self):
        address = yield from self._address()
        if address is None or address % 4 or self._region(address, 4) is None:
            self.out.append(bl.NACK)
            return
        self.out.append(bl.ACK)
        size = yield from self._address()
        if size is None or size % 4 or self._region(address, size) is None:
            self.out.append(bl.NACK)
            return
        self.out.append(bl.ACK)
        kind, off = self._region(address, size)
        mem = self.flash if kind == "flash" else self.ram
        crc = bl.stm32_crc(mem[off : off + size])
        self.busy_us += size * 0.01
        r = bytes([crc >> 24, (crc >> 16) & 0xFF, (crc >> 8) & 0xFF, crc & 0xFF])
        self.out += bytes([bl.ACK]) + r + bytes([r[0] ^ r[1] ^ r[2] ^ r[3]])

    def _readout_unprotect(self):
        self._mass_erase()
        self.rdp = False
        self.out.append(bl.ACK)
        self.reset_requested = True
        self.restart_after = True
        while True:  # the chip resets: nothing more is heard until it has
            yield

    def _readout_protect(self):
        self.rdp = True
        self.out.append(bl.ACK)
        self.reset_requested = True
        while True:
            yield

    def _protect_noop(self):
        self.out.append(bl.ACK)
        self.reset_requested = True
        while True:
            yield


class AppPort:
    """What host_lib sees as its serial port while the virtual STM32 runs its application."""

    def __init__(self, write):
        self._write = write
        self._q: queue.Queue = queue.Queue()
        self._buf = b""
        self.is_open = True
        self.port = "virtual-stm32-usart"
        self.timeout = 0.05

    def feed(self, data: bytes) -> None:
        self._q.put(data)

    @property
    def in_waiting(self) -> int:
        return len(self._buf) + self._q.qsize()

    def read(self, n: int = 1) -> bytes:
        if not self._buf:
            try:
                self._buf = self._q.get(timeout=self.timeout)
            except queue.Empty:
                if not self.is_open:
                    raise OSError("the virtual STM32 was reset") from None
                return b""
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def write(self, data: bytes) -> int:
        if not self.is_open:
            raise OSError("the virtual STM32 was reset")
        self._write(bytes(data))
        return len(data)

    def open(self):
        self.is_open = True

    def close(self):
        self.is_open = False

    def reset_input_buffer(self):
        pass


class VirtualStm32(PtyDevice):
    """A virtual STM32 on a pty: bootloader or application, chosen by BOOT0 at reset."""

    name = "virtual STM32"

    def __init__(self, profile: str | Profile = "f103", baud: int | None = None, readout_protected: bool = False):
        super().__init__()
        self.profile = PROFILES[profile] if isinstance(profile, str) else profile
        self.core = Stm32Core(self.profile, readout_protected)
        self.baud = baud  # timing model on when set: 11 bits a byte (8E1) and datasheet busy times
        self.mode = "off"
        self.boot0 = True
        self.in_reset = False
        self.app = None
        self.app_port: AppPort | None = None
        self.cpu = None  # the Cortex-M3 running the flashed firmware
        self.boots: list[str] = []
        self.bytes_in = 0
        self.bytes_out = 0
        self._lock = threading.Lock()
        self._wire_free = 0.0
        # the host's turnarounds as the bootloader sees them: from the end of a reply on the wire to the
        # first byte of what the host sends next (its reaction, the pty both ways) — what a tool adds to the
        # wire and flash times, the same measure for every tool (bench/host_ota.py)
        self.turnarounds = 0
        self.host_wait = 0.0
        self._replied_at = None

    # -- pins -----------------------------------------------------------------------------------
    def set_boot0(self, level: bool) -> None:
        self.boot0 = bool(level)

    def set_reset(self, asserted: bool) -> None:
        """NRST: held (asserted) the chip is stopped; released it boots by BOOT0."""
        if asserted and not self.in_reset:
            self.in_reset = True
            self._stop_app()
            self.mode = "off"
        elif not asserted and self.in_reset:
            self.discard_input()  # what the previous session sent is not read by the restarted chip
            self.in_reset = False
            self._boot()

    def reset(self, boot0: bool) -> None:
        self.set_boot0(boot0)
        self.set_reset(True)
        self.set_reset(False)

    def _boot(self):
        if self.boot0:
            self.core.restart()
            self.mode = "bootloader"
        else:
            self._start_app()
        self.boots.append(self.mode)

    @property
    def led(self) -> bool | None:
        """The blue pill's LED (PC13, active low) while firmware runs; None otherwise."""
        if self.cpu is None or self.cpu.crashed:
            return None
        return not self.cpu.gpio["C"] >> 13 & 1

    def _start_app(self):
        from sim.cortexm import CortexM3, bootable

        flash = bytes(self.core.flash)
        info = read_marker(flash)
        if info is None:
            ram = self.core.chip.ram
            if not bootable(flash, ram):
                self.mode = "silent"  # erased or garbage: the core faults at once, nothing comes out
                return
            self.cpu = CortexM3(flash, ram, uart_tx=self._write, on_reset=self._system_reset).start()
            self.mode = "app"
            return
        from host_lib import Host

        size = int(info.get("size", len(self.core.flash)))
        fw_id = hashlib.sha256(bytes(self.core.flash[:size])).hexdigest()
        self.app_port = AppPort(self._write)
        host = Host(
            self.app_port, fw_version=str(info.get("version")), arch="stm32", fw_id=fw_id, app=str(info.get("app"))
        )
        host.export("Sum", lambda p: p[0] + p[1])
        host.export("Sys.Uptime", lambda p: time.monotonic())
        lamp: dict = {}

        def delta(state):  # the manual's lamp: apply the desired state, report it back
            if isinstance(state, dict):
                lamp.update(state)
                host.shadow_report(lamp)

        host.on("Shadow.Delta")(delta)
        self.app = host.start()
        self.mode = "app"

    def _system_reset(self):
        """The firmware asked for a reset (AIRCR SYSRESETREQ): the chip restarts by BOOT0."""
        self.set_reset(True)
        self.set_reset(False)

    def _stop_app(self):
        if self.cpu is not None:
            self.cpu.stop()
            self.cpu = None
        if self.app is not None:
            self.app_port.close()
            self.app.close()
            self.app = None
            self.app_port = None

    # -- wire ---------------------------------------------------------------------------------
    def _write(self, data: bytes):
        with self._lock:
            if self.baud:
                self._hold_until(self._wire_after(len(data)))
            self.send(data)
            self.bytes_out += len(data)
            self._replied_at = time.perf_counter()

    def _wire_after(self, n: int, now: float | None = None) -> float:
        """When n more bytes will have crossed an 8E1 wire at `baud`: the wire is taken from the end of
        what it carried last, or from `now` (they arrived; default: the present) when it was idle."""
        self._wire_free = max(self._wire_free, time.perf_counter() if now is None else now) + n * 11 / self.baud
        return self._wire_free

    def on_bytes(self, data: bytes) -> None:
        arrived = time.perf_counter()
        self.bytes_in += len(data)
        if self.mode == "bootloader":
            if self._replied_at is not None:
                self.turnarounds += 1
                self.host_wait += arrived - self._replied_at
                self._replied_at = None
            out, busy = self.core.feed(data)
            if self.baud:
                # one hold for the whole exchange — the host's bytes on the wire, the chip's erase or
                # program, its reply on the wire — to an absolute deadline from when they arrived: sleeping
                # per step would add each sleep's overshoot, and our own parsing time, to the chip's time
                with self._lock:
                    done = self._wire_after(len(data), arrived)
                    if busy:
                        done = self._wire_free = done + busy / 1e6
            if out:
                self._write(out)
            elif self.baud:
                self._hold_until(done)
            if self.core.reset_requested:
                self.core.reset_requested = False
                self._boot()  # the bootloader resets the chip itself (RDP changes)
            if self.core.go_address is not None:
                self.core.go_address = None
                self._stop_app()
                self._start_app()
        elif self.mode == "app" and self.cpu is not None:
            self.cpu.uart_rx(data)
        elif self.mode == "app" and self.app_port is not None:
            self.app_port.feed(data)
        # off or silent: the bytes fall on the floor

    @staticmethod
    def _hold_until(deadline: float) -> None:
        """Sleep to `deadline`, then spin its last 0.2 ms: a sleep overshoots by tens of µs (timer slack,
        the wake-up), and a turnaround-bound exchange (1,500 of them in a 64 KiB flash) would carry that."""
        delay = deadline - time.perf_counter() - 0.0002
        if delay > 0:
            time.sleep(delay)
        while time.perf_counter() < deadline:
            pass

    def stop(self) -> None:
        self._stop_app()  # the core first: it writes to the pty, whose fds go next (and may be reused)
        super().stop()
