"""The lamp host firmware (examples/stm32-lamp) as images for the virtual STM32 and for bundles.

    image, how = lamp_image("2.0")      # built with arm-none-eabi-gcc when installed, else prebuilt

With Debian's gcc-arm-none-eabi on the PATH the image is built by the example's Makefile (any
version string); without it, the images shipped in examples/stm32-lamp/prebuilt/ (1.0 and 2.0, built
by `make prebuilt` from the same sources — the test suite rebuilds them and checks they match).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

LAMP_DIR = Path(__file__).resolve().parent.parent / "examples" / "stm32-lamp"
PREBUILT = LAMP_DIR / "prebuilt"


class FirmwareUnavailable(RuntimeError):
    pass


def toolchain() -> bool:
    return shutil.which("arm-none-eabi-gcc") is not None and shutil.which("make") is not None


def build(version: str, build_dir: str | Path) -> Path:
    """Build lamp-VERSION.bin into build_dir with the example's Makefile; its path."""
    out = subprocess.run(
        ["make", "-s", "-C", str(LAMP_DIR), f"VERSION={version}", f"BUILD={Path(build_dir).resolve()}"],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise FirmwareUnavailable(f"building the lamp firmware failed: {out.stderr.strip()[-500:]}")
    return Path(build_dir).resolve() / f"lamp-{version}.bin"


def lamp_image(version: str = "1.0") -> tuple[bytes, str]:
    """(image, how it was obtained)."""
    if toolchain():
        with tempfile.TemporaryDirectory(prefix="lamp-") as d:
            return build(version, d).read_bytes(), "built with arm-none-eabi-gcc"
    path = PREBUILT / f"lamp-{version}.bin"
    if not path.exists():
        have = ", ".join(sorted(p.stem.removeprefix("lamp-") for p in PREBUILT.glob("lamp-*.bin")))
        raise FirmwareUnavailable(
            f"no arm-none-eabi-gcc to build lamp {version}, and no prebuilt image of it (prebuilt: {have}). "
            "Install it: sudo apt-get install gcc-arm-none-eabi"
        )
    return path.read_bytes(), "prebuilt (no arm-none-eabi-gcc here)"
