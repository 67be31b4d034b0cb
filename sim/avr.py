"""An Arduino Uno host in simavr (issue 24): an ATmega328P at 16 MHz running a sketch's ELF, its UART0 —
the pins Serial uses — on the virtual CCM's host UART, as a Uno's pins are wired to a module's.

    with VirtualUno(pc.arduino.build(sketch, out), ccm.path) as uno:
        uno.wait("LED on")        # the LED on pin 13, as lines the chip's bridge prints

sim/c/avr_uno.c does the work on libsimavr (Debian: simavr, libsimavr-dev): simavr times the UART by the
firmware's own UBRR in the chip's cycles, and the bridge keeps those cycles at wall-clock pace, so the
sketch's millis() and the PC's timeouts agree. It is compiled once per source version, next to the
virtual CCM's other builds.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent / "c" / "avr_uno.c"


class AvrError(Exception):
    pass


def bridge() -> str:
    """The compiled bridge (cached by the source's hash)."""
    if not Path("/usr/include/simavr/sim_avr.h").exists():
        raise AvrError("the Uno runs in simavr: apt-get install simavr libsimavr-dev")
    tag = hashlib.sha256(SRC.read_bytes()).hexdigest()[:12]
    exe = Path(tempfile.gettempdir()) / f"ccm-avr_uno-{tag}"
    if not exe.exists():
        tmp = exe.with_suffix(f".{os.getpid()}")
        cmd = [
            "gcc",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            str(SRC),
            "-I/usr/include/simavr",
            "-lsimavr",
            "-o",
            str(tmp),
        ]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise AvrError("sim/c/avr_uno.c did not build: " + r.stderr[-1500:])
        tmp.replace(exe)
    return str(exe)


class VirtualUno:
    """The sketch's ELF on a simulated Uno; its UART0 on `tty` (a path: the virtual CCM's host UART)."""

    def __init__(self, elf: Path | str, tty: str):
        self.elf = str(elf)
        self.tty = tty
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._seen = 0  # lines before this one were waited past
        self._cv = threading.Condition()

    def start(self) -> VirtualUno:
        self.proc = subprocess.Popen(
            [bridge(), self.elf, self.tty], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self):
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cv:
                self.lines.append(line.rstrip("\n"))
                self._cv.notify_all()

    def wait(self, text: str, timeout: float = 20) -> str:
        """The next line that contains `text`, after the one the last wait returned (the LED is "off" at
        boot too: a later "LED off" is another line), waiting for it."""
        end = time.monotonic() + timeout
        with self._cv:
            while True:
                for i in range(self._seen, len(self.lines)):
                    if text in self.lines[i]:
                        self._seen = i + 1
                        return self.lines[i]
                left = end - time.monotonic()
                if left <= 0 or (self.proc is not None and self.proc.poll() is not None):
                    raise TimeoutError(f"the Uno did not print {text!r}: {self.lines[-10:]}")
                self._cv.wait(min(left, 0.2))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> VirtualUno:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
