"""Helpers for the firmware's portable tests: they run under pytest (CPython) and tests/mpy (MicroPython)."""

import asyncio

from ccm import rpc
from ccm.compat import sleep_ms_async
from ccm.config import Config
from ccm.link import HostLink
from ccm.router import Router


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
    """A writable file path: a temp dir on CPython; on MicroPython one relative to the working directory —
    the unix port runs in a directory of its own (its "/" is the PC's, which two suites running side by
    side would share), the WebAssembly port's is the root of its in-memory filesystem."""
    try:
        import tempfile

        return tempfile.mkdtemp() + "/" + name
    except ImportError:
        return name or "."


class FakeHost:
    """The test plays the host MCU: reads frames off the wire, writes bytes onto it."""

    def __init__(self, end):
        self.end = end
        self.framer = rpc.Framer()
        self.frames = []

    async def frame(self):
        while not self.frames:
            data = await self.end.read(256)
            self.frames.extend(self.framer.feed(data))
        return self.frames.pop(0)

    async def raw_frame(self):
        """The next frame's exact bytes (up to and including its newline)."""
        while b"\n" not in self.end.rx.buf:
            await sleep_ms_async(1)
        i = self.end.rx.buf.index(b"\n") + 1
        line = self.end.rx.buf[:i]
        self.end.rx.buf = self.end.rx.buf[i:]
        return line

    def write(self, data):
        self.end.write(data)

    async def nothing_more(self, ms=30):
        await sleep_ms_async(ms)
        return self.end.rx.buf == b"" and not self.frames


async def boot(overrides=None):
    ccm_end, host_end = uart_pair()
    config = Config(overrides)
    router = Router(config)
    link = HostLink(ccm_end, router, config)
    router.host = link
    task = asyncio.create_task(link.run(router.hello()))
    host = FakeHost(host_end)
    init = await host.frame()
    assert init["method"] == "Sys.Init" and "id" not in init
    assert init["params"]["device_id"] == config.get("device.id")
    return router, link, host, task
