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

from ccm.config import Config
from ccm.parts import PASSWORD_CHARS  # the module's own alphabet (no 0/o, 1/l), for the passwords made here
from ccm.schema import DEFAULTS
from pc.fwimage import (
    FIRMWARE_OFFSET,
    FLASH_SIZE,
    FS_OFFSET,
    PARTITION_TABLE,
    BuildError,
    firmware_partitions,
    firmware_sources,
    fs_region,
    pack_littlefs,
    partition_table,
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


DEVICES_FILE = "ccm-devices.csv"  # what `ccm build`/`ccm flash` gave each module, for the vendor to keep


def own_password(config: dict) -> str | None:
    """Give the module its own /rpc password (16 characters, 80 bits) unless the config has one or opens
    /rpc knowingly (rpc.auth.open). Returns the password made, or None."""
    auth = config.setdefault("rpc", {}).setdefault("auth", {})
    if auth.get("password") or auth.get("open"):
        return None
    import secrets

    auth["password"] = "".join(secrets.choice(PASSWORD_CHARS) for _ in range(16))
    return auth["password"]


def own_ap_password(pairs) -> tuple[tuple[str, ...], str | None]:
    """--config wifi.ap.pass=auto: a WPA2 password of the module's own for its provisioning access point
    (12 characters), printed and kept like the /rpc one. Returns (the pairs with it in, it or None)."""
    if "wifi.ap.pass=auto" not in pairs:
        return tuple(pairs), None
    import secrets

    pw = "".join(secrets.choice(PASSWORD_CHARS) for _ in range(12))
    return tuple(("wifi.ap.pass=" + pw) if p == "wifi.ap.pass=auto" else p for p in pairs), pw


def record_password(config: dict, path: str = DEVICES_FILE) -> str:
    """Append the module's id and credentials to the vendor's file
    (CSV: device_id,user,password,made,ap_password)."""
    import csv
    import datetime
    import os

    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["device_id", "user", "password", "made", "ap_password"])
        auth = config.get("rpc", {}).get("auth", {})
        device = config.get("device", {}).get("id") or "(the MAC-derived id)"
        ap = config.get("wifi", {}).get("ap", {}).get("pass", "")
        when = datetime.datetime.now().isoformat(" ", "seconds")
        w.writerow([device, auth.get("user", "admin"), auth.get("password", ""), when, ap])
    return path


PUBKEY_FILE = "ota.pub.pem"  # on the module's filesystem: the key its updates must be signed with


def trust_signing_key(config: dict, key_path: str | None, unsigned: bool = False) -> tuple[dict, str]:
    """Signed updates by default (issue 22, item 3): the public half of `key_path` (default
    ./ccm-signing.pem, made on the spot when there is none) goes into the image and ota.require_signature
    is turned on. Returns (extra files for the image, what to tell the user); `unsigned`: nothing, loudly."""
    from pc import fwbundle

    if unsigned:
        return {}, (
            "WARNING: --unsigned: this module applies updates nobody signed — whoever reaches its OTA "
            "(the LAN, the broker, a bundle server) can flash it and its host"
        )
    made = ""
    path = key_path or fwbundle.SIGNING_KEY
    if key_path is None and not os.path.exists(path):
        fwbundle.new_signing_key(path)
        made = f"made the signing key {path} (keep it, and keep it secret: only bundles signed with it update this module). "
    key = fwbundle.load_signing_key(path)
    ota = config.setdefault("ota", {})
    ota["pubkey"] = PUBKEY_FILE
    ota["require_signature"] = True
    return {PUBKEY_FILE: fwbundle.public_pem(key)}, (
        f"{made}Updates must be signed with {path} (ccm create-fw-bundle --sign-key {path}; ccm build --bundle signs)"
    )


CA_FILE = "ca.pem"  # on the module's filesystem: the CA certificates TLS checks servers against


def trust_ca(config: dict, path: str | None) -> dict:
    """`ccm build --ca FILE`: the CA certificate(s) (PEM, a chain or a bundle: AWS IoT's root CAs, say)
    go into the image, and MQTT over TLS and HTTPS pulls check servers against them — unless the config
    names other files. Returns the extra files for the image."""
    if not path:
        return {}
    try:
        data = open(path, "rb").read()
    except OSError as e:
        raise BuildError(f"--ca {path}: {e.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise BuildError(f"--ca {path}: not a PEM certificate file (-----BEGIN CERTIFICATE-----)")
    config.setdefault("mqtt", {}).setdefault("ssl_ca_cert", CA_FILE)
    config.setdefault("ota", {}).setdefault("ssl_ca_cert", CA_FILE)
    return {CA_FILE: data}


def build_fs(
    config=(),
    fs_size: int = FLASH_SIZE - FS_OFFSET,
    mpy_cross: str | None = None,
    march: str | None = None,
    extra: dict | None = None,
) -> bytes:
    """The LittleFS image: the firmware files and the factory config (a dict, or KEY=VALUE pairs)."""
    if not isinstance(config, dict):
        config = parse_config(config)
    with tempfile.TemporaryDirectory(prefix="ccm-build-") as d:
        stage(Path(d), config, mpy_cross, march, extra=extra)
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
    sources = firmware_sources(("wasm.py", "unix.py", "otadata.py"))
    for p, rel in sources:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, src / rel)
    manifest = dest / "manifest.py"
    manifest.write_text(FROZEN_MANIFEST.format(board=board, manifest=manifest.resolve(), src=src.resolve()))
    with tempfile.TemporaryDirectory(prefix="ccm-build-") as d:
        stage(Path(d), {})
        (dest / "ccm.romfs").write_bytes(rom_image(Path(d)))
    return ["manifest.py", "ccm.romfs"] + [str(Path("src") / r) for _, r in sources]


def fs_bundle(
    output: str,
    version: str | None = None,
    mpy_cross: str | None = None,
    march: str | None = None,
    sign_key: str | None = None,
) -> dict:
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
    return fwbundle.create(output, "ccm", "esp32", [], version, parts=[part], sign_keys=[sign_key] if sign_key else [])


def check_firmware(path: str) -> bytes:
    """The MicroPython image's bytes, or a BuildError that says what is wrong with it."""
    if not os.path.exists(path):
        raise BuildError(f"{path}: no such file (download ESP32_GENERIC from micropython.org/download/ESP32_GENERIC)")
    data = open(path, "rb").read()
    if not data or data[0] != 0xE9:
        raise BuildError(f"{path} is not an ESP32 firmware image (no 0xE9 image header at its start)")
    if b"MicroPython" not in data:
        raise BuildError(f"{path} is an ESP32 image but not MicroPython")
    if not firmware_partitions(data):
        raise BuildError(
            f"{path} has no partition table at 0x8000: give the whole image micropython.org ships for 0x1000 "
            "(bootloader, partition table, app), not the app alone"
        )
    return data


def layout(firmware: bytes, flash_size: int) -> tuple[int, int]:
    """(offset, size) of the filesystem this MicroPython image mounts on a chip of `flash_size` bytes
    (pc.fwimage.fs_region); a BuildError when the image itself reaches into it."""
    offset, size = fs_region(firmware_partitions(firmware), flash_size)
    if FIRMWARE_OFFSET + len(firmware) > offset:
        raise BuildError(
            f"the image ({len(firmware)} bytes at {FIRMWARE_OFFSET:#x}) runs into the filesystem at {offset:#x}"
        )
    return offset, size


def parse_flash_size(text: str) -> int:
    """'4MB', '8MB', '16MB' (esptool's names) or a number of bytes."""
    t = str(text).strip().upper().removesuffix("B")
    try:
        return int(t[:-1]) << 20 if t.endswith("M") else int(t, 0)
    except ValueError:
        raise BuildError(f"--flash-size {text}: expected 4MB, 8MB, 16MB or a number of bytes") from None


def merge(firmware: str, make_fs, output: str, flash_size: int = FLASH_SIZE) -> tuple[int, int]:
    """One full image (esptool merge-bin): MicroPython at 0x1000 and the filesystem `make_fs(size)` where
    that image mounts it on a `flash_size` chip. Returns the filesystem's (offset, size)."""
    from esptool.cmds import merge_bin

    offset, size = layout(check_firmware(firmware), flash_size)
    merge_bin([(FIRMWARE_OFFSET, firmware), (offset, make_fs(size))], "esp32", output)
    return offset, size


def flash(
    port: str,
    firmware: str | None,
    make_fs,
    *,
    reset: bool = True,
    stub: bool = True,
    erase: bool = False,
    baud: int = 460800,
    attempts: int = 3,
    progress=None,
) -> dict:
    """Write MicroPython and the filesystem with esptool's API; esptool verifies each by MD5. The
    filesystem, `make_fs(size)`, goes where the image being written (or, without one, the image already
    on the module) mounts it on this chip: its partition table at 0x8000 and the chip's flash size.
    esptool's own output is kept quiet: its warnings go to stderr, its progress to `progress(stage,
    done, total)` (a progress bar, not a line per block)."""
    from esp_pylib.logger import EspLog
    from esptool.logger import log

    previous = EspLog.instance
    log.set_logger(_esptool_quiet_class()(progress))
    try:
        return _flash(port, firmware, make_fs, reset, stub, erase, baud, attempts)
    finally:
        EspLog.instance = previous


def _esptool_quiet_class():
    """esptool's logger, quiet (a class made when esptool is imported: it subclasses esptool's)."""
    import sys

    from esptool.logger import TemplateLogger

    class Quiet(TemplateLogger):
        def __init__(self, progress):
            self.progress = progress

        def print(self, *args, **kwargs):
            pass

        def note(self, message):
            pass

        def warning(self, message):
            print("esptool: " + str(message).strip().splitlines()[0], file=sys.stderr)

        def error(self, message):
            print("esptool: " + str(message).strip().splitlines()[0], file=sys.stderr)

        def stage(self, finish=False):
            pass

        def progress_bar(self, cur_iter, total_iters, prefix="", suffix="", bar_length=30):
            if self.progress is not None:
                self.progress("writing", cur_iter, total_iters)

        def set_verbosity(self, verbosity):
            pass

    return Quiet


def _flash(port, firmware, make_fs, reset, stub, erase, baud, attempts) -> dict:
    from esptool.cmds import attach_flash, detect_chip, erase_flash, reset_chip, write_flash
    from esptool.util import FatalError

    fw = check_firmware(firmware) if firmware else None
    if erase and not stub:
        raise BuildError("--erase needs esptool's flasher stub (the ROM cannot erase the whole chip): drop --no-stub")
    try:
        esp = detect_chip(port, 115200, "default-reset" if reset else "no-reset", connect_attempts=attempts)
    except FatalError as e:
        why = str(e).strip().splitlines()[0].rstrip(".")  # esptool adds a blank line and its own hint
        raise BuildError(
            f"no ESP32 answers on {port}: {why}. Hold BOOT (IO0) while pressing EN, or check the port"
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
        if fw is not None:
            offset, fs_size = layout(fw, flash_bytes)
        else:
            table = esp.read_flash(PARTITION_TABLE, 0xC00)
            try:
                offset, fs_size = fs_region(partition_table(table), flash_bytes)
            except BuildError:
                raise BuildError(
                    f"no partition table on the module at {PARTITION_TABLE:#x}: MicroPython is not on it; "
                    "give --firmware MICROPYTHON.BIN"
                ) from None
        fs_image = make_fs(fs_size)
        if erase:
            erase_flash(esp)
        parts = []
        if fw is not None:
            parts.append((FIRMWARE_OFFSET, fw))
        parts.append((offset, fs_image))
        write_flash(esp, parts)
        if reset:
            reset_chip(esp, "hard-reset")
        mac = ":".join("%02x" % b for b in esp.read_mac())
        return {"chip": esp.CHIP_NAME, "mac": mac, "flash_bytes": flash_bytes, "fs_offset": offset, "fs_size": fs_size}
    except FatalError as e:
        raise BuildError(f"flashing failed: {e}") from None
    finally:
        esp._port.close()
