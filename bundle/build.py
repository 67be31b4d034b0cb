"""`ccm build` and `ccm flash`: firmware files compiled with mpy-cross, packed into a LittleFS image in
MicroPython's ESP32 geometry, and written with esptool's Python API.

The filesystem holds `boot.py`, `main.py` (which starts the CCM), `ccm/**.mpy`
and `conf0.json`, the factory configuration (`--config k=v`: device.id, mqtt.server, conf_acl, …)
that Config.Set/Save overlays and a factory reset returns to.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ccm.config import DEFAULTS, Config
from pc.fwimage import (
    FIRMWARE_OFFSET,
    FLASH_SIZE,
    FS_OFFSET,
    BuildError,
    firmware_sources,
    pack_littlefs,
    rom_image,
    stage,
)


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


def build_fs(
    config_pairs=(), fs_size: int = FLASH_SIZE - FS_OFFSET, mpy_cross: str | None = None, march: str | None = None
) -> bytes:
    config = parse_config(config_pairs)
    with tempfile.TemporaryDirectory(prefix="ccm-build-") as d:
        stage(Path(d), config, mpy_cross, march)
        return pack_littlefs(Path(d), fs_size)


FROZEN_MANIFEST = """# ccm-bridge frozen into a MicroPython image: its bytecode runs from flash, not the heap.
# Build (needs ESP-IDF; see the README, "Frozen image"):
#   make -C ports/esp32 BOARD={board} FROZEN_MANIFEST={manifest}
include("$(PORT_DIR)/boards/manifest.py")
package("ccm", base_path="{src}", opt=3)
"""


def frozen(dest: Path, board: str = "ESP32_GENERIC") -> list[str]:
    """A directory to freeze into a custom MicroPython image: manifest.py (MicroPython's manifest
    language: the port's own modules + ccm/), the sources it names, and ccm.romfs — the same
    code as a ROMFS image, for builds with a romfs partition (`mpremote romfs deploy ccm.romfs`)."""
    src = dest / "src"
    sources = firmware_sources(("wasm.py", "unix.py"))
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
    from ccm import FW_VERSION
    from ccm.ota import fsarchive
    from pc import fwbundle

    version = version or FW_VERSION
    with tempfile.TemporaryDirectory(prefix="ccm-build-") as d:
        names = stage(Path(d), {}, mpy_cross, march, version)  # the files say which version they are
        files = {n: (Path(d) / n).read_bytes() for n in names if n != "conf0.json"}
    part = fwbundle.Part("fs", {"type": "fs", "src": "fs.bin"}, fsarchive.pack(files))
    return fwbundle.create(output, "ccm", "esp32", [], version, parts=[part])


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
