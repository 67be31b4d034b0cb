"""The emulated Cortex-M3 keeps time like a chip (issue 24, item 4): its clock runs on executed instructions
(sim/cortexm.py, CPI 1.25), bytes arrive on USART1's RX line one frame time apart at the baud the
firmware set, and one that arrives before the last was read is lost with ORE. A host firmware whose
receive handler is too slow for 115200 baud loses bytes here, as it would on an STM32 — and keeps them
all at 9600."""

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from sim.cortexm import CortexM3

ROOT = Path(__file__).resolve().parent.parent
LAMP = ROOT / "examples/stm32-lamp"


def build(tmp_path: Path, baud: int) -> bytes:
    assert shutil.which("arm-none-eabi-gcc"), "arm-none-eabi-gcc is missing: apt-get install gcc-arm-none-eabi"
    elf = tmp_path / f"slow-{baud}.elf"
    subprocess.run(
        [
            "arm-none-eabi-gcc",
            "-mcpu=cortex-m3",
            "-mthumb",
            "-Os",
            "-std=c99",
            "-ffreestanding",
            "-nostdlib",
            f"-DBAUD={baud}u",
            f"-I{LAMP}",
            "-T",
            str(LAMP / "stm32f103.ld"),
            "-Wl,--gc-sections",
            str(LAMP / "startup.c"),
            str(ROOT / "tests/c/slow_rx.c"),
            "-lgcc",
            "-o",
            str(elf),
        ],
        check=True,
    )
    binary = elf.with_suffix(".bin")
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", str(elf), str(binary)], check=True)
    return binary.read_bytes()


def echo(image: bytes, data: bytes) -> tuple[bytes, CortexM3]:
    out = bytearray()
    cpu = CortexM3(image, uart_tx=out.extend).start()
    try:
        time.sleep(0.2)  # clocks and the USART set up
        cpu.uart_rx(data)
        last, still = -1, 0
        while still < 10:  # until the echo has stopped for a while
            time.sleep(0.1)
            still = still + 1 if len(out) == last else 0
            last = len(out)
        assert cpu.crashed is None, cpu.crashed
        return bytes(out), cpu
    finally:
        cpu.stop()


@pytest.mark.parametrize("baud", [115200, 9600])
def test_a_receive_handler_too_slow_for_115200_loses_bytes_and_keeps_them_at_9600(tmp_path, baud):
    data = bytes(range(0x30, 0x70))  # 64 bytes sent at once: back to back on the wire
    out, cpu = echo(build(tmp_path, baud), data)
    if baud == 115200:
        # a byte every 87 us, the handler takes ~300: about three in four are lost
        assert cpu.overruns > 0 and len(out) < len(data) // 2, (len(out), cpu.overruns)
        assert len(out) + cpu.overruns == len(data)  # each one kept or counted lost, none made up
        assert set(out) <= set(data)
    else:
        assert out == data and cpu.overruns == 0  # a byte every 1.04 ms: time to spare
