"""The virtual CCM board (CPython): its UART on a pseudo-terminal, a TCP port or a real serial device.

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


class FdUart:
    """A UART over a file descriptor (a pty or a serial device): `read`/`write`/`drain` like asyncio streams."""

    def __init__(self, fd, trace=None):
        self.fd = fd
        os.set_blocking(fd, False)
        self._out = bytearray()
        self.trace = trace  # trace(direction, bytes) sees every byte: "rx" host→CCM, "tx" CCM→host

    async def read(self, n):
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = os.read(self.fd, n)
            except BlockingIOError:
                data = None
            except OSError as e:  # EIO: the other side of a pty is closed; wait for a host
                if e.errno != errno.EIO:
                    raise
                await asyncio.sleep(0.05)
                continue
            if data:
                if self.trace:
                    self.trace("rx", data)
                return data
            fut = loop.create_future()
            loop.add_reader(self.fd, fut.set_result, None)
            try:
                await fut
            finally:
                loop.remove_reader(self.fd)

    def write(self, data):
        if self.trace:
            self.trace("tx", bytes(data))
        self._out += data

    async def drain(self):
        loop = asyncio.get_running_loop()
        while self._out:
            try:
                n = os.write(self.fd, self._out)
                del self._out[:n]
                continue
            except BlockingIOError:
                pass
            fut = loop.create_future()
            loop.add_writer(self.fd, fut.set_result, None)
            try:
                await fut
            finally:
                loop.remove_writer(self.fd)

    def close(self):
        try:
            os.close(self.fd)
        except OSError:
            pass


class PtyUart(FdUart):
    """The UART on a new pseudo-terminal: the host opens `path` as it would open /dev/ttyUSB0."""

    def __init__(self, trace=None):
        master, self._slave = pty.openpty()
        tty.setraw(self._slave, termios.TCSANOW)  # no echo, no CR/LF translation: a clean 8-bit wire
        self.path = os.ttyname(self._slave)
        FdUart.__init__(self, master, trace)

    def close(self):
        FdUart.close(self)
        try:
            os.close(self._slave)
        except OSError:
            pass


class SerialUart(FdUart):
    """The UART on an existing serial device (a USB-UART wired to a real host MCU, or a pty's path)."""

    def __init__(self, path, baudrate=115200, trace=None):
        import serial  # PC side only

        self.serial = serial.Serial(path, baudrate, timeout=0)
        self.path = path
        FdUart.__init__(self, self.serial.fileno(), trace)

    def close(self):
        self.serial.close()


class TcpUart:
    """The UART as a TCP port on 127.0.0.1: hosts connect with pyserial's `socket://127.0.0.1:PORT`.

    One host at a time; while none is connected, what the CCM sends is lost, as on an unwired UART.
    """

    def __init__(self, port=0, trace=None):
        self.port = port
        self.trace = trace
        self._server = None
        self._conn = None  # (reader, writer) of the connected host
        self._connected = None

    @property
    def path(self):
        return "socket://127.0.0.1:%d" % self.port

    async def start(self):
        if self._server is None:
            self._connected = asyncio.Event()
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader, writer):
        if self._conn is not None:
            self._conn[1].close()
        self._conn = (reader, writer)
        self._connected.set()

    async def read(self, n):
        while True:
            await self._connected.wait()
            reader, writer = self._conn
            try:
                data = await reader.read(n)
            except ConnectionError:
                data = b""
            if data:
                if self.trace:
                    self.trace("rx", data)
                return data
            if self._conn is not None and self._conn[0] is reader:  # the host hung up: wait for the next
                self._conn = None
                self._connected.clear()

    def write(self, data):
        if self.trace:
            self.trace("tx", bytes(data))
        if self._conn is not None:
            self._conn[1].write(data)

    async def drain(self):
        if self._conn is not None:
            try:
                await self._conn[1].drain()
            except ConnectionError:
                pass

    def close(self):
        if self._conn is not None:
            self._conn[1].close()
        if self._server is not None:
            self._server.close()


def open_uart(spec, trace=None):
    """`pty` (default): a new pseudo-terminal; `tcp:PORT`: a TCP port; anything else: a serial device path."""
    if not spec or spec == "pty":
        return PtyUart(trace)
    if spec.startswith("tcp:"):
        return TcpUart(int(spec[4:] or 0), trace)
    return SerialUart(spec, trace=trace)


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
        if hasattr(self.uart, "start"):
            await self.uart.start()
        return self.uart

    def heap_free(self):
        return None  # CPython has no fixed heap to report

    def reboot(self):
        """A virtual reboot boots again on the same UART: the host keeps its port open."""
        return True
