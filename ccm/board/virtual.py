"""The virtual CCM board (CPython): its UART on a pseudo-terminal, so any serial tool can be the host.

A host program opens `PtyUart.path` exactly as it would open /dev/ttyUSB0. The board keeps the slave
side open itself, so the CCM can boot and write before a host attaches, and a host may close and
reopen the port at will (like unplugging a USB-UART).
"""

import asyncio
import errno
import hashlib
import os
import pty
import termios
import tty

FW_ID = "virtual"


class PtyUart:
    """A UART whose wire is a pty: `read`/`write`/`drain` like asyncio streams, `path` for the host."""

    def __init__(self, trace=None):
        self.master, self._slave = pty.openpty()
        tty.setraw(self._slave, termios.TCSANOW)  # no echo, no CR/LF translation: a clean 8-bit wire
        self.path = os.ttyname(self._slave)
        os.set_blocking(self.master, False)
        self._out = bytearray()
        self.trace = trace  # trace(direction, bytes) sees every byte on the wire: "rx" host→CCM, "tx" CCM→host

    async def read(self, n):
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = os.read(self.master, n)
            except BlockingIOError:
                data = None
            except OSError as e:  # EIO: no host has the port open; wait for one
                if e.errno != errno.EIO:
                    raise
                await asyncio.sleep(0.05)
                continue
            if data:
                if self.trace:
                    self.trace("rx", data)
                return data
            fut = loop.create_future()
            loop.add_reader(self.master, fut.set_result, None)
            try:
                await fut
            finally:
                loop.remove_reader(self.master)

    def write(self, data):
        if self.trace:
            self.trace("tx", bytes(data))
        self._out += data

    async def drain(self):
        loop = asyncio.get_running_loop()
        while self._out:
            try:
                n = os.write(self.master, self._out)
                del self._out[:n]
                continue
            except BlockingIOError:
                pass
            fut = loop.create_future()
            loop.add_writer(self.master, fut.set_result, None)
            try:
                await fut
            finally:
                loop.remove_writer(self.master)

    def close(self):
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


class VirtualBoard:
    """The CCM's hardware on a PC: a pty UART, a MAC derived from the device id, reboot = boot again."""

    arch = "virtual"
    fw_id = FW_ID

    def __init__(self, uart=None, device_id="ccm-000000"):
        self.uart = uart or PtyUart()
        self.mac = ":".join("%02X" % b for b in hashlib.sha256(device_id.encode()).digest()[:6])
        self.boots = 0

    async def open_uart(self, config):
        self.boots += 1
        return self.uart

    def heap_free(self):
        return None  # CPython has no fixed heap to report

    def reboot(self):
        """A virtual reboot boots again on the same UART: the host keeps its port open."""
        return True
