"""The virtual CCM booted from a virtual ESP32's flash: the LittleFS region is mounted (littlefs-python),
its files — the `.mpy` firmware `ccm build` made, and conf0.json — run on real MicroPython (the
WebAssembly port under Node, sim/mpy_ccm.mjs), and the UART is a pty whose path a host opens.

    with FlashBootedCcm("esp32-flash.bin") as ccm:
        Host(ccm.path).start().call("RPC.List")
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
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
        self.dir = Path(tempfile.mkdtemp(prefix="ccm-flash-"))
        for name, data in files.items():
            (self.dir / name).parent.mkdir(parents=True, exist_ok=True)
            (self.dir / name).write_bytes(data)
        self.master, self._slave, self.path = open_raw_pty()
        self.proc: subprocess.Popen | None = None
        self.mac = mac  # the virtual ESP32's eFuse MAC (sim/esp32_rom.py)

    def start(self) -> FlashBootedCcm:
        node = shutil.which("node")
        if not node:
            raise RuntimeError(
                "node not found: the flash-booted CCM runs on MicroPython's WebAssembly port under Node.js"
            )
        cmd = [node, str(HERE / "mpy_ccm.mjs"), "--fd", str(self.master), "--flash", str(self.dir), "--mac", self.mac]
        self.proc = subprocess.Popen(
            cmd, pass_fds=(self.master,), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        line = self.proc.stdout.readline()
        if "booting" not in line:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            raise RuntimeError(f"the MicroPython CCM did not boot: {line}{err}")
        return self
