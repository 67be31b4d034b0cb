"""The virtual CCM booted from a virtual ESP32's flash: the LittleFS region is mounted (littlefs-python),
its files — the `.mpy` firmware `ccm build` made, and conf0.json — run on real MicroPython (the
WebAssembly port under Node, sim/mpy_ccm.mjs), and the UART is a pty whose path a host opens.

    with FlashBootedCcm("esp32-flash.bin") as ccm:
        Host(ccm.path).start().call("RPC.List")
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from pc.fwimage import BuildError, fs_region, module_filesystem, partition_table
from pc.uart import open_raw_pty

HERE = Path(__file__).resolve().parent


class MicroPythonProcess:
    """The firmware in a MicroPython process of its own, its UART a pty (`master` its side, `path` the
    host's), its filesystem the directory `dir`: stopping ends the process and removes both."""

    master: int
    _slave: int
    dir: Path
    proc: subprocess.Popen | None = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.running():
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class FlashBootedCcm(MicroPythonProcess):
    def __init__(self, flash_path: str, mac: str = "24:0A:C4:12:34:56"):
        with open(flash_path, "rb") as f:
            image = f.read()
        try:  # where and how MicroPython >= 1.26 mounts it: the flashed partition table, the chip's size
            self.fs_offset, self.fs_size, files = module_filesystem(image)
        except BuildError as e:
            raise RuntimeError(f"{flash_path}: {e}") from None
        except Exception as e:  # littlefs refuses a region that is not a filesystem of exactly that size
            offset, size = fs_region(partition_table(image[0x8000:0x8C00]), len(image))
            raise RuntimeError(
                f"MicroPython cannot mount a filesystem at {offset:#x} in {flash_path} ({e}): it mounts "
                f"{size // 1024} KiB there on this {len(image) >> 20} MB chip, and LittleFS refuses any other "
                "size (a module then loops in inisetup's fs_corrupted()). Flash it with `ccm flash`"
            ) from None
        if "ccm/main.mpy" not in files:
            raise RuntimeError(f"the filesystem in {flash_path} holds no CCM firmware (ccm/main.mpy)")
        self.files = files
        self._app_partitions(image)
        self.dir = Path(tempfile.mkdtemp(prefix="ccm-flash-"))
        for name, data in files.items():
            (self.dir / name).parent.mkdir(parents=True, exist_ok=True)
            (self.dir / name).write_bytes(data)
        self.master, self._slave, self.path = open_raw_pty()
        self.proc: subprocess.Popen | None = None
        self.mac = mac  # the virtual ESP32's eFuse MAC (sim/esp32_rom.py)
        self.resets = 0  # boots after the first: a module's resets
        self.output: list[str] = []  # what it printed, the last lines
        self._stopping = False
        self._lock = threading.Lock()
        self._watcher = None

    RESET = "ccm: reset"  # what sim/mpy_ccm.mjs says before it ends the process for a reset

    def _app_partitions(self, image: bytes) -> None:
        """The image's OTA app slots and otadata, as files the firmware writes (ccm/board/wasm.py) and the
        bootloader here reads at each boot: which slot runs (`app`), ESP-IDF's rollback included."""
        parts = partition_table(image[0x8000:0x8C00])
        self.slots = [
            p.label for p in sorted(parts, key=lambda p: p.subtype) if p.type == 0 and 0x10 <= p.subtype < 0x20
        ]
        self.factory = any(p.type == 0 and p.subtype == 0 for p in parts)
        self.parts_dir = Path(tempfile.mkdtemp(prefix="ccm-parts-"))
        for p in parts:
            if p.type == 1 and p.subtype == 0:  # otadata: as flashed (erased after `ccm flash`)
                (self.parts_dir / "otadata.bin").write_bytes(image[p.offset : p.offset + p.size])
        self.app = "factory" if self.factory or not self.slots else self.slots[0]  # the slot that runs

    def _bootloader(self) -> None:
        """ESP-IDF's second stage, app rollback on: choose the slot from otadata (and update it)."""
        from ccm.board import otadata

        path = self.parts_dir / "otadata.bin"
        if self.slots and path.exists():
            blob = bytearray(path.read_bytes())
            slot = otadata.boot(blob, len(self.slots))
            path.write_bytes(bytes(blob))
            self.app = self.slots[slot] if slot is not None else ("factory" if self.factory else self.slots[0])
        (self.parts_dir / "table.json").write_text(json.dumps({"slots": self.slots, "running": self.app}))

    def otadata(self) -> list:
        """The two otadata entries as (seq, state) or None (ccm/board/otadata.py's states)."""
        from ccm.board import otadata

        path = self.parts_dir / "otadata.bin"
        return otadata.entries(path.read_bytes()) if path.exists() else []

    def start(self) -> FlashBootedCcm:
        node = shutil.which("node")
        if not node:
            raise RuntimeError(
                "node not found: the flash-booted CCM runs on MicroPython's WebAssembly port under Node.js"
            )
        self._cmd = [node, str(HERE / "mpy_ccm.mjs"), "--fd", str(self.master), "--flash", str(self.dir)]
        self._cmd += ["--parts", str(self.parts_dir)]
        self._cmd += ["--mac", self.mac]
        self._boot()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()
        return self

    def _boot(self) -> None:
        self._bootloader()
        self.proc = subprocess.Popen(
            self._cmd, pass_fds=(self.master,), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        line = self.proc.stdout.readline()
        if "booting" not in line:
            rest = self.proc.stdout.read() if self.proc.poll() is not None else ""
            raise RuntimeError(f"the MicroPython CCM did not boot: {line}{rest}")

    def _watch(self) -> None:
        """Its output, kept; and after a reset the next boot, a fresh interpreter on the same pty."""
        while True:
            reset = False
            for line in self.proc.stdout:
                reset = reset or line.startswith(self.RESET)
                self.output.append(line.rstrip("\n"))
                del self.output[:-200]
            self.proc.wait()
            with self._lock:
                if self._stopping or not reset:
                    return
                self.resets += 1
                try:
                    self._boot()
                except (RuntimeError, OSError):
                    return

    def stop(self) -> None:
        with self._lock:  # not while a reset boots the next process: that one is stopped too
            self._stopping = True
        super().stop()
        if self._watcher is not None:
            self._watcher.join(10)
        shutil.rmtree(self.parts_dir, ignore_errors=True)
