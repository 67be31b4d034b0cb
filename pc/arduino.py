"""The C host library as an Arduino library, and sketches built as the Arduino IDE builds them.

    .venv/bin/python -m pc.arduino CcmBridge.zip     # the library, for Sketch → Include Library → Add .ZIP Library

`library(dest)` assembles it: host_lib/arduino (library.properties, examples/) with host_lib/c's ccm.c and
ccm.h as its src/ — one copy of the C sources in the repository. `build(sketch, out)` compiles a sketch
for an Arduino Uno (ATmega328P) with the Arduino AVR core and arduino-builder, the IDE's own builder
(Debian: arduino-builder, arduino-core-avr, gcc-avr, avr-libc); `footprint(elf)` is what the IDE prints
after a build: flash (text + data) and RAM (data + bss).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARDUINO = ROOT / "host_lib" / "arduino"
C_LIB = ROOT / "host_lib" / "c"
NAME = "CcmBridge"
HARDWARE = Path("/usr/share/arduino/hardware")
BOARD = "arduino:avr:uno"
# Debian's arduino-core-avr 1.8.7 with its gcc-avr 5.4: WString.cpp wants DECIMAL_DIG, which that
# compiler's <float.h> defines for C99 only, not for C++11. Every sketch needs this to build there.
CORE_FIX = "compiler.cpp.extra_flags=-DDECIMAL_DIG=__DECIMAL_DIG__"


class ArduinoError(Exception):
    pass


def library(dest: Path) -> Path:
    """dest/CcmBridge: the Arduino library, assembled (what the zip holds)."""
    lib = Path(dest) / NAME
    if lib.exists():
        shutil.rmtree(lib)
    shutil.copytree(ARDUINO, lib)
    (lib / "src").mkdir()
    for name in ("ccm.c", "ccm.h"):
        shutil.copy(C_LIB / name, lib / "src" / name)
    return lib


def zip_library(out: Path) -> Path:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        lib = library(Path(d))
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(lib.rglob("*")):
                if f.is_file():
                    z.write(f, f.relative_to(lib.parent))
    return out


def missing() -> list[str]:
    """The Debian packages a sketch build needs that are not installed."""
    need = []
    if not shutil.which("arduino-builder"):
        need.append("arduino-builder")
    if not (HARDWARE / "arduino" / "avr" / "cores" / "arduino").is_dir():
        need.append("arduino-core-avr")
    if not shutil.which("avr-gcc"):
        need.append("gcc-avr")
    if not Path("/usr/lib/avr/include/avr/io.h").exists():
        need.append("avr-libc")
    return need


def build(sketch: Path, out: Path, libraries: Path | None = None) -> Path:
    """Compile `sketch` (a .ino in its folder) for an Uno with the library; returns the ELF."""
    need = missing()
    if need:
        raise ArduinoError("building Arduino sketches needs " + ", ".join(need) + " (apt-get install)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if libraries is None:
        libraries = library(out / "libraries").parent
    # the IDE's package (arduino) adds hardware/tools; arduino-core-avr alone has none and needs none
    # (its platform calls the avr-gcc on the PATH), but arduino-builder wants a -tools folder that exists
    tools = HARDWARE / "tools"
    if not tools.is_dir():
        tools = out / "no-tools"
        tools.mkdir(exist_ok=True)
    cmd = [
        "arduino-builder",
        "-compile",
        "-hardware",
        str(HARDWARE),
        "-hardware",  # arduino-builder's own platform.txt: how to call ctags (the IDE's package links it)
        "/usr/share/arduino-builder",
        "-tools",
        str(tools),
        "-libraries",
        str(libraries),
        "-fqbn",
        BOARD,
        "-build-path",
        str(out),
        "-warnings",
        "all",
        "-prefs=" + CORE_FIX,
        str(sketch),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise ArduinoError(f"{Path(sketch).name} did not build:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return out / (Path(sketch).name + ".elf")


def footprint(elf: Path) -> tuple[int, int]:
    """(flash, RAM) in bytes, as the Arduino IDE reports them: text + data, data + bss."""
    out = subprocess.run(["avr-size", "-A", str(elf)], capture_output=True, text=True, check=True).stdout
    sec = {p[0]: int(p[1]) for p in (ln.split() for ln in out.splitlines()) if len(p) >= 2 and p[1].isdigit()}
    return sec.get(".text", 0) + sec.get(".data", 0), sec.get(".data", 0) + sec.get(".bss", 0)


def main() -> None:
    if len(sys.argv) != 2 or not sys.argv[1].endswith(".zip"):
        sys.exit("usage: python -m pc.arduino OUT.zip   (the CcmBridge Arduino library)")
    try:
        out = zip_library(Path(sys.argv[1]))
    except OSError as e:
        sys.exit(f"Error: cannot write {sys.argv[1]}: {e.strerror} (a writable path ending in .zip)")
    print(f"{out}: add it in the Arduino IDE (Sketch → Include Library → Add .ZIP Library)")


if __name__ == "__main__":
    main()
