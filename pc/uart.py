"""The PC's UARTs as asyncio-style streams (`read`/`write`/`drain`): a pseudo-terminal, a TCP port or a
real serial device. The virtual CCM's UART is one of them; so is the port `ccm stm32 flash` drives.

A host program opens `PtyUart.path` exactly as it would open /dev/ttyUSB0. The pty's slave side is kept
open here, so the CCM can boot and write before a host attaches, and a host may close and reopen the
port at will (like unplugging a USB-UART).
"""

import asyncio
import errno
import os
import pty
import termios
import tty


class FdUart:
    """A UART over a file descriptor (a pty or a serial device): `read`/`write`/`drain` like asyncio streams."""

    def __init__(self, fd, trace=None):
        self.fd = fd
        os.set_blocking(fd, False)
        self._out = bytearray()
        self.trace = trace  # trace(direction, bytes) sees every byte: "rx" host→CCM, "tx" CCM→host

    async def start(self):
        """Ready to carry bytes (a TCP UART starts listening here; a file descriptor already is)."""

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


def open_raw_pty():
    """(master fd, slave fd, slave path) of a new pty in raw mode: no echo, no CR/LF translation, a clean
    8-bit wire. Keeping the slave open lets the master side run before and between hosts."""
    master, slave = pty.openpty()
    tty.setraw(slave, termios.TCSANOW)
    return master, slave, os.ttyname(slave)


class PtyUart(FdUart):
    """The UART on a new pseudo-terminal: the host opens `path` as it would open /dev/ttyUSB0."""

    def __init__(self, trace=None):
        master, self._slave, self.path = open_raw_pty()
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
