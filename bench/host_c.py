"""host_lib/c on a Cortex-M3: flash and RAM footprint, and the work per frame on the emulated core.

    .venv/bin/python bench/host_c.py [--mjson PATH/TO/mjson/src]

1. Footprint, `arm-none-eabi-size` at -Os for Cortex-M3: the library alone (all of it, and without
   double support), and what it adds to the linked lamp firmware (its functions after --gc-sections).
   With --mjson (a checkout of cesanta/mjson's src/), mjson.c built the same way, as the peer.
2. The same library on an Arduino Uno (ATmega328P): alone, and the CcmBridge Lamp sketch as the Arduino
   IDE reports it (pc/arduino.py builds it with arduino-builder and the Arduino AVR core).
3. Work per frame: the lamp firmware runs on sim.cortexm's Cortex-M3 with every instruction counted;
   for each frame, the instructions from its first byte received to the last byte of the answer written
   (USART and SysTick interrupts included) — against the frame's wire time in and out at 115200 baud
   (10 bits a byte) in 72 MHz cycles. Instructions are a lower bound of cycles (a Cortex-M3 runs most
   in one cycle; loads, branches and flash wait states add some), hence the ratio is printed for both
   1 and 1.5 cycles per instruction.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from sim import lamp_fw  # noqa: E402
from sim.cortexm import CortexM3  # noqa: E402

LIB = os.path.join(os.path.dirname(__file__), "..", "host_lib", "c")
# -ffreestanding: the library's own loops stay loops, not calls to a libc's memset/strlen left out of the count
ARM = [
    "arm-none-eabi-gcc",
    "-mcpu=cortex-m3",
    "-mthumb",
    "-Os",
    "-ffreestanding",
    "-ffunction-sections",
    "-fdata-sections",
    "-c",
]
HZ = 72_000_000
BAUD = 115200

FRAMES = [
    ("Sum (manual §7)", b'{"id":12,"method":"Sum","params":[2,3]}\n'),
    ("Sys.Info", b'{"id":13,"method":"Sys.Info"}\n'),
    ("Shadow.Delta -> Report", b'{"method":"Shadow.Delta","params":{"on":true,"brightness":40}}\n'),
    (
        "MQTT.Message -> Pub",
        b'{"method":"MQTT.Message","params":{"topic":"lamp/cmd","message":"toggle"}}\n',
    ),
    ("unknown method", b'{"id":14,"method":"This_Function_Does_Not_Exist","params":true}\n'),
    ("parse error", b'{"id":15,"method":"Sum","params":[1,}\n'),
]


def size(obj: str) -> tuple[int, int, int]:
    out = subprocess.run(["arm-none-eabi-size", obj], capture_output=True, text=True, check=True).stdout
    text, data, bss = out.splitlines()[1].split()[:3]
    return int(text), int(data), int(bss)


def footprint(mjson: str | None) -> None:
    print("== footprint on Cortex-M3 (arm-none-eabi-gcc -Os, bytes)")
    with tempfile.TemporaryDirectory() as d:
        rows = []
        for label, flags in (
            ("host_lib/c, all (its defaults)", []),
            ("host_lib/c, CCM_ENABLE_DOUBLE=1", ["-DCCM_ENABLE_DOUBLE=1"]),
        ):
            obj = os.path.join(d, "ccm.o")
            subprocess.run([*ARM, *flags, os.path.join(LIB, "ccm.c"), "-o", obj], check=True)
            rows.append((label, *size(obj)))
        if mjson:
            obj = os.path.join(d, "mjson.o")
            r = subprocess.run([*ARM, f"-I{mjson}", os.path.join(mjson, "mjson.c"), "-o", obj], capture_output=True)
            if r.returncode == 0:
                rows.append(("mjson.c (peer, its defaults)", *size(obj)))
            else:
                print(f"   (mjson did not build: {r.stderr.decode()[-200:]})")
        lib_flash, lib_ram, total = linked_share(d)
    print(f"   {'':38} {'flash':>7} {'RAM':>6}")
    for label, text, data, bss in rows:
        print(f"   {label:38} {text + data:7} {data + bss:6}")
    print(
        f"   {'of it, linked into the lamp firmware':38} {lib_flash:7} {lib_ram:6}  (+ the lamp's 512 B frame buffer)"
    )
    print(f"   {'the whole lamp firmware':38} {total[0] + total[1]:7} {total[1] + total[2]:6}")
    whole = rows[0][1] + rows[0][2]
    print(
        f"   goal: the whole library {whole} <= 6144 -> {whole / 6144:.3f}x (linked: {lib_flash / 6144:.2f}x); "
        f"RAM <= 1024 + frame buffer -> {lib_ram / 1024:.2f}x"
    )


def linked_share(d: str) -> tuple[int, int, tuple[int, int, int]]:
    """Link the lamp from separate objects with a map file: the bytes that come from ccm.o (flash: text,
    rodata, data; RAM: data, bss, and the lamp's `struct ccm`) and the whole image."""
    lamp = str(lamp_fw.LAMP_DIR)
    objs = []
    for src in ("startup.c", "main_stm32.c", "lamp.c", os.path.join(LIB, "ccm.c")):
        obj = os.path.join(d, os.path.basename(src) + ".o")
        path = src if os.path.isabs(src) else os.path.join(lamp, src)
        subprocess.run([*ARM, f"-I{LIB}", f"-I{lamp}", path, "-o", obj], check=True)
        objs.append(obj)
    elf, mapfile = os.path.join(d, "lamp.elf"), os.path.join(d, "lamp.map")
    subprocess.run(
        [
            "arm-none-eabi-gcc",
            "-mcpu=cortex-m3",
            "-mthumb",
            "-nostdlib",
            "-T",
            os.path.join(lamp, "stm32f103.ld"),
            "-Wl,--gc-sections",
            f"-Wl,-Map={mapfile}",
            *objs,
            "-lgcc",
            "-o",
            elf,
        ],
        check=True,
    )
    flash = ram = 0
    section = None
    for line in open(mapfile):
        if line.startswith("/DISCARD/") or line.startswith("Discarded input sections"):
            section = "skip"
        parts = line.split()
        if len(parts) == 1 and parts[0].startswith("."):  # a long section name: its numbers are on the next line
            section = parts[0]
            continue
        if len(parts) >= 4 and parts[0].startswith(".") and parts[1].startswith("0x"):
            section, parts = parts[0], parts[1:]
        elif section and len(parts) == 3 and parts[0].startswith("0x") and parts[1].startswith("0x"):
            pass
        else:
            continue
        if not parts[-1].endswith("ccm.c.o") or section == "skip" or int(parts[0], 16) == 0:
            continue
        n = int(parts[1], 16)
        if section.startswith((".text", ".rodata")):
            flash += n
        elif section.startswith(".data"):
            flash += n
            ram += n
        elif section.startswith(".bss"):
            ram += n
    nm = subprocess.run(["arm-none-eabi-nm", "-S", elf], capture_output=True, text=True).stdout
    ram += sum(int(p[1], 16) for p in (ln.split() for ln in nm.splitlines()) if len(p) == 4 and p[3].startswith("link"))
    return flash, ram, size(elf)


def per_frame() -> None:
    print("\n== work per frame on the emulated Cortex-M3 (lamp firmware, every instruction counted)")
    image, how = lamp_fw.lamp_image("1.0")
    out = bytearray()
    cpu = CortexM3(image, uart_tx=out.extend)
    cpu.count_instructions()
    cpu.start()
    time.sleep(0.3)
    cpu.uart_rx(b'{"id":1,"result":{"device_id":"ccm-bench"}}\n')
    time.sleep(0.3)
    print(
        f"   {'frame':24} {'bytes in+out':>12} {'instr.':>7} {'wire cycles':>11} {'x wire @1 CPI':>14} {'@1.5 CPI':>9}"
    )
    for label, frame in FRAMES:
        best = None
        for _ in range(5):
            out.clear()
            time.sleep(0.01)
            c0 = cpu.cycles
            cpu.uart_rx(frame)
            deadline = time.monotonic() + 5
            expect_answer = b'"id"' in frame or b"Delta" in frame or b"Message" in frame
            while time.monotonic() < deadline and (not out.endswith(b"\n") if expect_answer else False):
                time.sleep(0.001)
            time.sleep(0.05)  # the rest of the answer, and the firmware back to wfi
            n = cpu.cycles - c0
            ticks = 0.06 * 1000 * 12  # ~12 instructions per SysTick interrupt over that time: not the frame's
            best = min(best or n, n - ticks)
        wire = (len(frame) + len(out)) * 10 / BAUD * HZ
        print(
            f"   {label:24} {len(frame):5}+{len(out):<6} {best:7.0f} {wire:11.0f} {best / wire:14.3f} {1.5 * best / wire:9.3f}"
        )
    cpu.stop()
    assert not cpu.crashed, cpu.crashed
    print(f"   (firmware {how}; wire time = bytes x 10 bits / {BAUD} baud x {HZ / 1e6:.0f} MHz)")


def avr() -> None:
    """The library on an Arduino Uno (ATmega328P, avr-gcc -Os): alone, and the Lamp example as the Arduino
    IDE reports it after a build (arduino-builder, the Arduino AVR core's Serial included)."""
    from pc import arduino

    print("\n== footprint on an Arduino Uno (ATmega328P: 32 KiB flash, 2 KiB RAM; avr-gcc -Os, bytes)")
    need = arduino.missing()
    if need:
        print(f"   (skipped: needs {', '.join(need)})")
        return
    with tempfile.TemporaryDirectory() as d:
        obj = os.path.join(d, "ccm.o")
        flags = ["-mmcu=atmega328p", "-Os", "-ffunction-sections", "-fdata-sections", "-c"]
        subprocess.run(["avr-gcc", *flags, os.path.join(LIB, "ccm.c"), "-o", obj], check=True)
        out = subprocess.run(["avr-size", obj], capture_output=True, text=True, check=True).stdout
        text, data, bss = (int(x) for x in out.splitlines()[1].split()[:3])
        sketch = arduino.ARDUINO / "examples" / "Lamp" / "Lamp.ino"
        flash, ram = arduino.footprint(arduino.build(sketch, os.path.join(d, "build")))
    print(f"   {'':38} {'flash':>7} {'RAM':>6}")
    print(f"   {'host_lib/c, all (no double on AVR)':38} {text + data:7} {data + bss:6}")
    print(f"   {'the Lamp sketch, whole (core included)':38} {flash:7} {ram:6}  (its frame buffer: 160 B)")
    print(f"   goal: flash <= 8192 -> {flash / 8192:.2f}x; RAM <= 512 + frame buffer -> {ram / (512 + 160):.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mjson", help="cesanta/mjson's src/ directory, to size the peer the same way")
    args = ap.parse_args()
    if not lamp_fw.toolchain():
        sys.exit("Error: arm-none-eabi-gcc is needed (apt-get install gcc-arm-none-eabi)")
    footprint(args.mjson)
    avr()
    per_frame()


if __name__ == "__main__":
    main()
