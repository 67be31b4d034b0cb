"""A virtual device at the far end of a pty: what a tool writes to `path` reaches `on_bytes` on a thread
of its own; `send` answers. The virtual STM32 and the virtual ESP32 ROM are both this."""

from __future__ import annotations

import os
import selectors
import threading
import time

from pc.uart import open_raw_pty


class PtyDevice:
    name = "virtual device"

    def __init__(self):
        self.master, self._slave, self.path = open_raw_pty()
        os.set_blocking(self.master, False)
        self._stop = threading.Event()
        self._rx_lock = threading.Lock()  # a read and its handling, against discard_input
        self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)

    def on_bytes(self, data: bytes) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.master, view) :]
            except BlockingIOError:
                time.sleep(0.0005)

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.master, selectors.EVENT_READ)
        while not self._stop.is_set():
            if not sel.select(0.05):
                continue
            with self._rx_lock:
                try:
                    data = os.read(self.master, 65536)
                except (BlockingIOError, OSError):
                    data = None
                if data:
                    self.on_bytes(data)
            if data is None:
                time.sleep(0.01)

    def discard_input(self) -> None:
        """Drop what was written to us and not handled yet: on a wire, bytes sent to a chip held in reset
        are lost; on a pty they would wait in the kernel and reach the chip after it starts again."""
        with self._rx_lock:
            while True:
                try:
                    if not os.read(self.master, 65536):
                        return
                except (BlockingIOError, OSError):
                    return

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
