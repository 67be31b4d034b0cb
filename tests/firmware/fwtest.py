"""Helpers for the firmware's portable tests: they run under pytest (CPython) and tests/mpy (MicroPython)."""

import asyncio


def raises(exc, fn, *args):
    """Call fn(*args); return the exception it raised, which must be an `exc`."""
    try:
        fn(*args)
    except exc as e:
        return e
    raise AssertionError("%s not raised" % exc.__name__)


class Wire:
    """One direction of an in-memory UART."""

    def __init__(self):
        self.buf = b""
        self.ev = asyncio.Event()
        self.closed = False


class End:
    """One end of an in-memory UART, with the stream methods the link uses."""

    def __init__(self, rx, tx):
        self.rx = rx
        self.tx = tx

    async def read(self, n):
        while not self.rx.buf and not self.rx.closed:
            self.rx.ev.clear()
            await self.rx.ev.wait()
        data = self.rx.buf[:n]
        self.rx.buf = self.rx.buf[n:]
        return data

    def write(self, data):
        self.tx.buf += bytes(data)
        self.tx.ev.set()

    async def drain(self):
        pass

    def close(self):
        self.tx.closed = True
        self.tx.ev.set()


def uart_pair():
    """(ccm_end, host_end) of an in-memory UART."""
    a = Wire()
    b = Wire()
    return End(a, b), End(b, a)


def scratch_path(name):
    """A writable file path: a temp dir on CPython, the root of MicroPython's filesystem."""
    try:
        import tempfile

        return tempfile.mkdtemp() + "/" + name
    except ImportError:
        return "/" + name
